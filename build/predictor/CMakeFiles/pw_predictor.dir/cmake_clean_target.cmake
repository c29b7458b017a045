file(REMOVE_RECURSE
  "libpw_predictor.a"
)
