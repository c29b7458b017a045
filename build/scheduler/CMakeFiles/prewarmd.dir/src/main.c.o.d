scheduler/CMakeFiles/prewarmd.dir/src/main.c.o: \
 /work/main/scheduler/src/main.c /usr/include/stdc-predef.h
