# Writes OUT, a C file with every migration DIR/*.sql (sorted by name) as a string literal:
#   const struct pw_migration pw_migrations[]; const size_t pw_migrations_count;
file(GLOB FILES ${DIR}/*.sql)
list(SORT FILES)
set(body "/* Generated from the migrations directory by cmake/EmbedMigrations.cmake. Do not edit. */\n")
string(APPEND body "#include <stddef.h>\n#include \"store.h\"\n\nconst struct pw_migration pw_migrations[] = {\n")
set(n 0)
foreach(f IN LISTS FILES)
  get_filename_component(name ${f} NAME_WE)
  file(READ ${f} sql HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" sql "${sql}")
  # Split the literal every 400 hex escapes so no line is very long.
  string(REGEX REPLACE "((\\\\x[0-9a-f][0-9a-f]){200})" "\\1\"\n    \"" sql "${sql}")
  string(APPEND body "  {\"${name}\",\n    \"${sql}\"},\n")
  math(EXPR n "${n} + 1")
endforeach()
string(APPEND body "};\nconst size_t pw_migrations_count = ${n};\n")
file(WRITE ${OUT} "${body}")
