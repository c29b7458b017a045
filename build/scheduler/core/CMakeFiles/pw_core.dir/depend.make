# Empty dependencies file for pw_core.
# This may be replaced when dependencies are built.
