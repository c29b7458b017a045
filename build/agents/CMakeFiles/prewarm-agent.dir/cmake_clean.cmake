file(REMOVE_RECURSE
  "CMakeFiles/prewarm-agent.dir/src/main.c.o"
  "CMakeFiles/prewarm-agent.dir/src/main.c.o.d"
  "prewarm-agent"
  "prewarm-agent.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/prewarm-agent.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
