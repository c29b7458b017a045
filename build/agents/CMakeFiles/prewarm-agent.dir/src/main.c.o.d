agents/CMakeFiles/prewarm-agent.dir/src/main.c.o: \
 /work/main/agents/src/main.c /usr/include/stdc-predef.h
