#!/usr/bin/env bash
# demo.sh — a local Prewarm cluster replaying a slice of a real serverless trace.
#
# Installs the dependencies, builds build/ (incremental), starts a throwaway PostgreSQL,
# prewarmd and two simulated agents (topology fixtures 2node and 4node, labels zone=a and
# zone=b) on free 127.0.0.1 ports, then runs scripts/demo_traffic.py against it. Everything it
# started is stopped on exit, also on Ctrl-C. Arguments are passed to demo_traffic.py, e.g.
#
#   bash scripts/demo.sh                       # 30 trace minutes at 60x (~40 s)
#   bash scripts/demo.sh --minutes 10 --speed 120
#
# Environment: PW_TRACE_DIR (trace directory, default <repo>/../shared/data/azure2019),
# PW_BINARY_DIR (build directory, default <repo>/build), PW_DEMO_LOG_LEVEL (default info).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
BUILD=${PW_BINARY_DIR:-$REPO/build}
PREWARMD=$BUILD/scheduler/prewarmd
AGENT=$BUILD/agents/prewarm-agent
FIXTURES=$REPO/tests/fixtures/topology
LOG_LEVEL=${PW_DEMO_LOG_LEVEL:-info}
HEARTBEAT_MS=1000
RESTORE_MS=200

case "${1:-}" in
  -h | --help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    echo
    exec python3 "$REPO/scripts/demo_traffic.py" --help
    ;;
esac

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/prewarm-demo.XXXXXX")
PGDIR=
PIDS=()

# shellcheck disable=SC2317  # invoked through the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$PGDIR" ]; then
    bash "$REPO/scripts/pgtmp.sh" stop "$PGDIR" || true
  fi
  echo "demo: stopped; logs in $LOGDIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "demo: $*" >&2
  local f
  for f in "$LOGDIR"/*.log; do
    [ -e "$f" ] || continue
    echo "---- last lines of $(basename "$f") ----" >&2
    tail -n 20 "$f" >&2 || true
  done
  exit 1
}

free_ports() { # free_ports N — N distinct free TCP ports on 127.0.0.1
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

http_status() { # http_status PATH — HTTP status of GET PATH, 000 if no answer
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$HTTP_PORT$1" || true
}

echo "demo: installing dependencies (if missing)"
bash scripts/install-deps.sh

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  echo "demo: configuring $BUILD"
  cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$LOGDIR/cmake.log" 2>&1 ||
    fail "cmake configure failed (see $LOGDIR/cmake.log)"
fi
echo "demo: building (incremental)"
cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" >"$LOGDIR/build.log" 2>&1 ||
  { tail -n 30 "$LOGDIR/build.log" >&2; fail "build failed (see $LOGDIR/build.log)"; }
[ -x "$PREWARMD" ] || fail "no $PREWARMD after the build"
[ -x "$AGENT" ] || fail "no $AGENT after the build"
for fx in 2node 4node; do
  [ -d "$FIXTURES/$fx" ] || fail "topology fixture missing: $FIXTURES/$fx"
done

echo "demo: starting PostgreSQL"
PGDIR=$(bash scripts/pgtmp.sh start) || fail "could not start PostgreSQL"

read -r HTTP_PORT AGENT_PORT < <(free_ports 2)
AGENTS_URL=tcp://127.0.0.1:$AGENT_PORT

echo "demo: starting prewarmd on http://127.0.0.1:$HTTP_PORT (agents $AGENTS_URL)"
"$PREWARMD" --http "127.0.0.1:$HTTP_PORT" --agents "$AGENTS_URL" \
  --pg "host=$PGDIR user=postgres dbname=postgres" --heartbeat-ms "$HEARTBEAT_MS" \
  --log-level "$LOG_LEVEL" </dev/null >"$LOGDIR/prewarmd.log" 2>&1 &
SCHED_PID=$!
PIDS+=("$SCHED_PID")

ready=0
for _ in $(seq 1 150); do # up to ~15 s
  kill -0 "$SCHED_PID" 2>/dev/null || fail "prewarmd exited at start"
  if [ "$(http_status /readyz)" = 200 ]; then
    ready=1
    break
  fi
  sleep 0.1
done
[ "$ready" = 1 ] || fail "prewarmd not ready after 15 s"

start_agent() { # start_agent ID FIXTURE ZONE
  "$AGENT" --id "$1" --scheduler "$AGENTS_URL" --driver sim --topology-root "$FIXTURES/$2" \
    --label "zone=$3" --sim-restore-ms "$RESTORE_MS" --log-level "$LOG_LEVEL" \
    </dev/null >"$LOGDIR/agent-$1.log" 2>&1 &
  PIDS+=("$!")
}
echo "demo: starting agents host-a (2 NUMA nodes, zone=a) and host-b (4 NUMA nodes, zone=b)"
start_agent host-a 2node a
start_agent host-b 4node b

alive=0
for _ in $(seq 1 100); do # up to ~10 s
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || fail "a process exited at start"
  done
  n=$(curl -s --max-time 2 "http://127.0.0.1:$HTTP_PORT/v1/hosts" |
    python3 -c 'import json,sys
try: print(sum(1 for h in json.load(sys.stdin).get("hosts", []) if h.get("state") == "alive"))
except Exception: print(0)')
  if [ "$n" -ge 2 ]; then
    alive=1
    break
  fi
  sleep 0.1
done
[ "$alive" = 1 ] || fail "the agents did not come alive within 10 s"

echo "demo: cluster up — try: curl -s http://127.0.0.1:$HTTP_PORT/v1/hosts"
set +e
python3 scripts/demo_traffic.py --url "http://127.0.0.1:$HTTP_PORT" "$@"
rc=$?
set -e
echo "demo: hosts at the end:"
curl -s --max-time 2 "http://127.0.0.1:$HTTP_PORT/v1/hosts" | python3 -c 'import json,sys
try:
    for h in json.load(sys.stdin).get("hosts", []):
        print("  %-8s %-5s vms %-3s load %s labels %s" % (h.get("id"), h.get("state"), h.get("vms"), h.get("load"), h.get("labels")))
except Exception as e: print("  (no answer: %s)" % e)'
exit "$rc"
