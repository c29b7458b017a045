file(REMOVE_RECURSE
  "libpw_agent.a"
)
