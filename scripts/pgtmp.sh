#!/usr/bin/env bash
# pgtmp.sh — a throwaway PostgreSQL cluster for tests (recipe: TOOLING.md).
#
#   pgtmp.sh start          creates and starts a cluster; prints its directory (use it as PGHOST,
#                           user postgres, trust auth, unix socket only) and nothing else on stdout
#   pgtmp.sh halt DIR       stops the server (-m fast) and keeps the data directory
#   pgtmp.sh restart DIR    starts the server again on DIR's data (restarts it if running)
#   pgtmp.sh stop DIR       stops the server (-m immediate) and removes DIR
#
# initdb refuses root, so as root the cluster runs as the unprivileged user pgtest (created if
# missing). fsync is off unless PW_PG_FSYNC=on. Binaries: PW_PG_BIN or PostgreSQL 15's.
set -euo pipefail

B=${PW_PG_BIN:-/usr/lib/postgresql/15/bin}
PGUSER_OS=pgtest

die() {
  echo "pgtmp: $*" >&2
  exit 1
}

# as_pg runs a command as the cluster's owner.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$PGUSER_OS" -- "$@"
  else
    "$@"
  fi
}

check_dir() {
  [ -n "${1:-}" ] || die "missing DIR"
  [ -d "$1/data" ] || die "$1 is not a pgtmp directory"
}

pg_start() {
  local d=$1 fsync=off
  [ "${PW_PG_FSYNC:-off}" = on ] && fsync=on
  if ! as_pg "$B/pg_ctl" -D "$d/data" -l "$d/log" -w -t 30 \
      -o "-k $d -c listen_addresses='' -c fsync=$fsync" start >"$d/pg_ctl.out" 2>&1; then
    cat "$d/pg_ctl.out" "$d/log" >&2 2>/dev/null || true
    return 1
  fi
}

cmd_start() {
  [ -x "$B/initdb" ] || die "no PostgreSQL binaries in $B (install postgresql-15)"
  if [ "$(id -u)" -eq 0 ]; then
    id "$PGUSER_OS" >/dev/null 2>&1 || useradd -M -r -s /usr/sbin/nologin "$PGUSER_OS" >&2
  fi
  local d
  d=$(mktemp -d "${TMPDIR:-/tmp}/pwpg.XXXXXX")
  [ "$(id -u)" -eq 0 ] && chown "$PGUSER_OS" "$d"
  if ! as_pg "$B/initdb" -D "$d/data" -U postgres --auth=trust --no-sync -E UTF8 \
      --locale=C.UTF-8 >"$d/initdb.out" 2>&1; then
    cat "$d/initdb.out" >&2
    rm -rf "$d"
    die "initdb failed"
  fi
  if ! pg_start "$d"; then
    rm -rf "$d"
    die "server did not start"
  fi
  echo "$d"
}

cmd_halt() {
  check_dir "${1:-}"
  as_pg "$B/pg_ctl" -D "$1/data" -m fast -w stop >&2
}

cmd_restart() {
  check_dir "${1:-}"
  if as_pg "$B/pg_ctl" -D "$1/data" status >/dev/null 2>&1; then
    as_pg "$B/pg_ctl" -D "$1/data" -m fast -w stop >&2
  fi
  pg_start "$1" || die "server did not restart"
}

cmd_stop() {
  check_dir "${1:-}"
  as_pg "$B/pg_ctl" -D "$1/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$1"
}

case "${1:-}" in
  start) cmd_start ;;
  halt) cmd_halt "${2:-}" ;;
  restart) cmd_restart "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  *) die "usage: pgtmp.sh start | halt DIR | restart DIR | stop DIR" ;;
esac
