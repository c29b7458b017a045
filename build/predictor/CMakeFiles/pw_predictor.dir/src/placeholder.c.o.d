predictor/CMakeFiles/pw_predictor.dir/src/placeholder.c.o: \
 /work/main/predictor/src/placeholder.c /usr/include/stdc-predef.h
