# Writes every DIR/*.html into OUT as `const unsigned char sk_web_<name>_html[]` (NUL-terminated) and
# `const size_t sk_web_<name>_html_len`, so the dashboard page ships inside the binary, as
# cmake/embed.cmake does for the Lua scripts. Run by the build; see CMakeLists.txt.
file(GLOB files ${DIR}/*.html)
list(SORT files)
set(out "/* generated from src/web by src/web/embed.cmake: do not edit */\n#include <stddef.h>\n")
foreach(f ${files})
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} hex HEX)
  string(LENGTH "${hex}" n)
  math(EXPR n "${n} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(APPEND out "const unsigned char sk_web_${name}_html[] = {${hex}0x00};\n")
  string(APPEND out "const size_t sk_web_${name}_html_len = ${n};\n")
endforeach()
file(WRITE ${OUT} "${out}")
