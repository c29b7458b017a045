file(REMOVE_RECURSE
  "CMakeFiles/pw_predictor.dir/src/placeholder.c.o"
  "CMakeFiles/pw_predictor.dir/src/placeholder.c.o.d"
  "libpw_predictor.a"
  "libpw_predictor.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/pw_predictor.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
