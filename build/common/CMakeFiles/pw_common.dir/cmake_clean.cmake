file(REMOVE_RECURSE
  "CMakeFiles/pw_common.dir/src/error.c.o"
  "CMakeFiles/pw_common.dir/src/error.c.o.d"
  "CMakeFiles/pw_common.dir/src/log.c.o"
  "CMakeFiles/pw_common.dir/src/log.c.o.d"
  "CMakeFiles/pw_common.dir/src/util.c.o"
  "CMakeFiles/pw_common.dir/src/util.c.o.d"
  "CMakeFiles/pw_common.dir/usr/share/llhttp/api.c.o"
  "CMakeFiles/pw_common.dir/usr/share/llhttp/api.c.o.d"
  "CMakeFiles/pw_common.dir/usr/share/llhttp/http.c.o"
  "CMakeFiles/pw_common.dir/usr/share/llhttp/http.c.o.d"
  "CMakeFiles/pw_common.dir/usr/share/llhttp/llhttp.c.o"
  "CMakeFiles/pw_common.dir/usr/share/llhttp/llhttp.c.o.d"
  "libpw_common.a"
  "libpw_common.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/pw_common.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
