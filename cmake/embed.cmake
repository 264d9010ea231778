# Writes every DIR/*.EXT into OUT as `const char PREFIX<name>SUFFIX[]` (NUL-terminated) and
# `const size_t PREFIX<name>SUFFIX_len`, so that files ship inside the binary: the Redis scripts
# (src/lua/*.lua), the dashboard page (src/web/*.html), the order book's schema (src/sql/*.sql) and
# the API description (docs/openapi.yaml). Run by the build; see CMakeLists.txt.
file(GLOB files ${DIR}/*.${EXT})
list(SORT files)
set(out "/* generated from ${DIR} by cmake/embed.cmake: do not edit */\n#include <stddef.h>\n")
foreach(f ${files})
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} hex HEX)
  string(LENGTH "${hex}" n)
  math(EXPR n "${n} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(APPEND out "const char ${PREFIX}${name}${SUFFIX}[] = {${hex}0x00};\n")
  string(APPEND out "const size_t ${PREFIX}${name}${SUFFIX}_len = ${n};\n")
endforeach()
file(WRITE ${OUT} "${out}")
