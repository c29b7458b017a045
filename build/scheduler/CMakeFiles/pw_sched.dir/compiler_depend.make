# Empty compiler generated dependencies file for pw_sched.
# This may be replaced when dependencies are built.
