file(REMOVE_RECURSE
  "CMakeFiles/pw_core.dir/src/placeholder.c.o"
  "CMakeFiles/pw_core.dir/src/placeholder.c.o.d"
  "libpw_core.a"
  "libpw_core.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/pw_core.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
