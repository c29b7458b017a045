scheduler/core/CMakeFiles/pw_core.dir/src/placeholder.c.o: \
 /work/main/scheduler/core/src/placeholder.c /usr/include/stdc-predef.h
