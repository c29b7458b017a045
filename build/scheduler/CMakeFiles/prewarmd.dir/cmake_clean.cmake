file(REMOVE_RECURSE
  "CMakeFiles/prewarmd.dir/src/main.c.o"
  "CMakeFiles/prewarmd.dir/src/main.c.o.d"
  "prewarmd"
  "prewarmd.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/prewarmd.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
