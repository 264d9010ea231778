# Writes every DIR/*.lua into OUT as `const char sk_lua_<name>[]`, so the scripts ship inside
# the binary. Run by the build; see CMakeLists.txt.
file(GLOB files ${DIR}/*.lua)
list(SORT files)
set(out "/* generated from src/lua by cmake/embed.cmake: do not edit */\n")
foreach(f ${files})
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(APPEND out "const char sk_lua_${name}[] = {${hex}0x00};\n")
endforeach()
file(WRITE ${OUT} "${out}")
