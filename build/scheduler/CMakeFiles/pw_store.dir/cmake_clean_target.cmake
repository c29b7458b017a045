file(REMOVE_RECURSE
  "libpw_store.a"
)
