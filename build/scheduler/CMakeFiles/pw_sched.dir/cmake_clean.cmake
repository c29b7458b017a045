file(REMOVE_RECURSE
  "CMakeFiles/pw_sched.dir/src/placeholder.c.o"
  "CMakeFiles/pw_sched.dir/src/placeholder.c.o.d"
  "libpw_sched.a"
  "libpw_sched.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/pw_sched.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
