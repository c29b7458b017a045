
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/scheduler/src/placeholder.c" "scheduler/CMakeFiles/pw_sched.dir/src/placeholder.c.o" "gcc" "scheduler/CMakeFiles/pw_sched.dir/src/placeholder.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build/scheduler/CMakeFiles/pw_store.dir/DependInfo.cmake"
  "/work/main/build/scheduler/core/CMakeFiles/pw_core.dir/DependInfo.cmake"
  "/work/main/build/predictor/CMakeFiles/pw_predictor.dir/DependInfo.cmake"
  "/work/main/build/common/CMakeFiles/pw_common.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
