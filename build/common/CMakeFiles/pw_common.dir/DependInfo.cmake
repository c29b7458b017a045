
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/common/src/error.c" "common/CMakeFiles/pw_common.dir/src/error.c.o" "gcc" "common/CMakeFiles/pw_common.dir/src/error.c.o.d"
  "/work/main/common/src/log.c" "common/CMakeFiles/pw_common.dir/src/log.c.o" "gcc" "common/CMakeFiles/pw_common.dir/src/log.c.o.d"
  "/work/main/common/src/util.c" "common/CMakeFiles/pw_common.dir/src/util.c.o" "gcc" "common/CMakeFiles/pw_common.dir/src/util.c.o.d"
  "/usr/share/llhttp/api.c" "common/CMakeFiles/pw_common.dir/usr/share/llhttp/api.c.o" "gcc" "common/CMakeFiles/pw_common.dir/usr/share/llhttp/api.c.o.d"
  "/usr/share/llhttp/http.c" "common/CMakeFiles/pw_common.dir/usr/share/llhttp/http.c.o" "gcc" "common/CMakeFiles/pw_common.dir/usr/share/llhttp/http.c.o.d"
  "/usr/share/llhttp/llhttp.c" "common/CMakeFiles/pw_common.dir/usr/share/llhttp/llhttp.c.o" "gcc" "common/CMakeFiles/pw_common.dir/usr/share/llhttp/llhttp.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
