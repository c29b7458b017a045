# Empty dependencies file for pw_store.
# This may be replaced when dependencies are built.
