# Empty dependencies file for pw_predictor.
# This may be replaced when dependencies are built.
