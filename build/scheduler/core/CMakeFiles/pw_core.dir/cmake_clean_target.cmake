file(REMOVE_RECURSE
  "libpw_core.a"
)
