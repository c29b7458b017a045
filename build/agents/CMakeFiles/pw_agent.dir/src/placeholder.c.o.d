agents/CMakeFiles/pw_agent.dir/src/placeholder.c.o: \
 /work/main/agents/src/placeholder.c /usr/include/stdc-predef.h
