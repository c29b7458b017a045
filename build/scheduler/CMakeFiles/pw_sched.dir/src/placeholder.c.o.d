scheduler/CMakeFiles/pw_sched.dir/src/placeholder.c.o: \
 /work/main/scheduler/src/placeholder.c /usr/include/stdc-predef.h
