file(REMOVE_RECURSE
  "CMakeFiles/pw_store.dir/migrations_embedded.c.o"
  "CMakeFiles/pw_store.dir/migrations_embedded.c.o.d"
  "CMakeFiles/pw_store.dir/src/store.c.o"
  "CMakeFiles/pw_store.dir/src/store.c.o.d"
  "libpw_store.a"
  "libpw_store.pdb"
  "migrations_embedded.c"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/pw_store.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
