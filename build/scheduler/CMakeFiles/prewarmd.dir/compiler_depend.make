# Empty compiler generated dependencies file for prewarmd.
# This may be replaced when dependencies are built.
