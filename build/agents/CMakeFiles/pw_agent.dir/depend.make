# Empty dependencies file for pw_agent.
# This may be replaced when dependencies are built.
