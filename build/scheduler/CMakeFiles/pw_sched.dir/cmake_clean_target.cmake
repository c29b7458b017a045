file(REMOVE_RECURSE
  "libpw_sched.a"
)
