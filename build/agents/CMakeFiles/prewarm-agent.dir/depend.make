# Empty dependencies file for prewarm-agent.
# This may be replaced when dependencies are built.
