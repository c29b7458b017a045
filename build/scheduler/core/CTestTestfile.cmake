# CMake generated Testfile for 
# Source directory: /work/main/scheduler/core
# Build directory: /work/main/build/scheduler/core
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
