file(REMOVE_RECURSE
  "CMakeFiles/pw_agent.dir/src/placeholder.c.o"
  "CMakeFiles/pw_agent.dir/src/placeholder.c.o.d"
  "libpw_agent.a"
  "libpw_agent.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/pw_agent.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
