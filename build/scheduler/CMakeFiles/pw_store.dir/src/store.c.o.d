scheduler/CMakeFiles/pw_store.dir/src/store.c.o: \
 /work/main/scheduler/src/store.c /usr/include/stdc-predef.h
