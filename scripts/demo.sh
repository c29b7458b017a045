#!/usr/bin/env bash
# demo.sh — a local Prewarm cluster running real microVMs, replaying a slice of a real
# serverless trace.
#
# Installs the dependencies, builds build/ (incremental), starts a throwaway PostgreSQL,
# prewarmd and two agents with the qemu driver (host-a zone=a, host-b zone=b; QEMU microvm
# guests restored from golden snapshots, KVM when it proves to work, else TCG) on free
# 127.0.0.1 ports, then runs scripts/demo_traffic.py: it builds a guest image per function
# (agents/guest/build-guest.sh), and every invocation acquires a VM, sends it an HTTP request
# and releases it. Everything it started is stopped on exit, also on Ctrl-C; the agents
# destroy their VMs. Arguments are passed to demo_traffic.py, e.g.
#
#   bash scripts/demo.sh                       # 30 trace minutes at 30x, real VMs (~1.5 min)
#   bash scripts/demo.sh --minutes 10 --speed 60
#   bash scripts/demo.sh --sim                 # simulated agents, no VMs: 60x (~40 s)
#
# With real VMs the replay runs at 30x by default (60x with --sim): under TCG on a small
# machine the emulated CPUs of the VMs would otherwise fall behind the sped-up trace.
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

SIM=0
ARGS=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
      echo
      exec python3 "$REPO/scripts/demo_traffic.py" --help
      ;;
    --sim) SIM=1 ;;
    *) ARGS+=("$arg") ;;
  esac
done

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/prewarm-demo.XXXXXX")
PGDIR=
PIDS=()
RUNBASE= # real VMs: the agents' run directories (short: they hold unix sockets)
MEMDIRS=()

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
  if [ -n "$RUNBASE" ]; then
    # The agents destroyed their VMs at SIGTERM; an agent that had to be killed may not have.
    local left
    left=$(qemu_pids)
    if [ -n "$left" ]; then
      echo "demo: killing QEMU processes left behind: $left"
      # shellcheck disable=SC2086
      kill -KILL $left 2>/dev/null || true
    else
      echo "demo: the agents destroyed their microVMs; no QEMU process left"
    fi
    rm -rf "$RUNBASE" "${MEMDIRS[@]}"
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

qemu_pids() { # PIDs of QEMU processes whose sockets live under RUNBASE
  local d
  for d in /proc/[0-9]*; do
    { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | grep -q -- "-name prewarm-.*unix:$RUNBASE/" &&
      echo -n "${d#/proc/} "
  done
  true
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
BUILDER=$REPO/agents/guest/build-guest.sh
if [ "$SIM" = 0 ]; then
  command -v qemu-system-x86_64 >/dev/null ||
    fail "qemu-system-x86_64 not found (apt-get install qemu-system-x86), or run with --sim"
  echo "demo: building the guest image the agents prove KVM with (the first build downloads a kernel)"
  PROBE_IMG=$(bash "$BUILDER" function demo-probe --static ok 2>"$LOGDIR/guest-build.log") ||
    fail "the guest image builder failed (see $LOGDIR/guest-build.log)"
  RUNBASE=$(mktemp -d /tmp/pwdemo.XXXXXX)
fi

echo "demo: starting PostgreSQL"
PGDIR=$(bash scripts/pgtmp.sh start) || fail "could not start PostgreSQL"

read -r HTTP_PORT AGENT_PORT < <(free_ports 2)
AGENTS_URL=tcp://127.0.0.1:$AGENT_PORT

echo "demo: starting prewarmd on http://127.0.0.1:$HTTP_PORT (agents $AGENTS_URL)"
"$PREWARMD" --http "127.0.0.1:$HTTP_PORT" --agents "$AGENTS_URL" \
  --pg "host=$PGDIR user=postgres dbname=postgres" --heartbeat-ms "$HEARTBEAT_MS" \
  --log-level "$LOG_LEVEL" --model-dir "$LOGDIR/models" </dev/null >"$LOGDIR/prewarmd.log" 2>&1 &
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
  if [ "$SIM" = 1 ]; then
    "$AGENT" --id "$1" --scheduler "$AGENTS_URL" --driver sim --topology-root "$FIXTURES/$2" \
      --label "zone=$3" --sim-restore-ms "$RESTORE_MS" --log-level "$LOG_LEVEL" \
      </dev/null >"$LOGDIR/agent-$1.log" 2>&1 &
  else
    # This machine's real topology; warm VMs mostly idle, so 16 vCPU slots per CPU.
    MEMDIRS+=("/dev/shm/prewarm-demo-$$-$1")
    "$AGENT" --id "$1" --scheduler "$AGENTS_URL" --driver qemu --label "zone=$3" \
      --qemu-accel auto --qemu-probe-image "$PROBE_IMG" --qemu-run-dir "$RUNBASE/$1" \
      --qemu-mem-dir "/dev/shm/prewarm-demo-$$-$1" --vcpu-overcommit 16 \
      --log-level "$LOG_LEVEL" </dev/null >"$LOGDIR/agent-$1.log" 2>&1 &
  fi
  PIDS+=("$!")
}
if [ "$SIM" = 1 ]; then
  echo "demo: starting SIMULATED agents host-a (2 NUMA nodes, zone=a) and host-b (4 NUMA nodes, zone=b)"
  start_agent host-a 2node a
  start_agent host-b 4node b
else
  echo "demo: starting agents host-a (zone=a) and host-b (zone=b) with real microVMs (qemu driver)"
  start_agent host-a - a
  start_agent host-b - b
fi

alive=0
for _ in $(seq 1 600); do # up to ~60 s: a qemu agent first proves whether KVM works
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
[ "$alive" = 1 ] || fail "the agents did not come alive within 60 s"

echo "demo: cluster up — try: curl -s http://127.0.0.1:$HTTP_PORT/v1/hosts"
TRAFFIC=()
if [ "$SIM" = 0 ]; then
  for f in "$LOGDIR"/agent-*.log; do
    python3 -c 'import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line).get("msg", "")
    except ValueError:
        continue
    if m.startswith("accelerator "):
        print("demo: %s: %s" % (sys.argv[2], m))' "$f" "$(basename "$f" .log)"
  done
  TRAFFIC=(--guest-builder "$BUILDER" --memory-mb 128 --speed 30 --max-runtime 80)
fi
set +e
python3 scripts/demo_traffic.py --url "http://127.0.0.1:$HTTP_PORT" "${TRAFFIC[@]}" "${ARGS[@]}"
rc=$?
set -e
echo "demo: hosts at the end:"
curl -s --max-time 2 "http://127.0.0.1:$HTTP_PORT/v1/hosts" | python3 -c 'import json,sys
try:
    for h in json.load(sys.stdin).get("hosts", []):
        print("  %-8s %-5s driver %-4s vms %-3s snapshots %-2s load %s labels %s" % (h.get("id"), h.get("state"), h.get("driver"), h.get("vms"), h.get("snapshots"), h.get("load"), h.get("labels")))
except Exception as e: print("  (no answer: %s)" % e)'
if [ "$SIM" = 0 ]; then
  n=$(qemu_pids | wc -w)
  echo "demo: $n QEMU microVM processes running; stopping the agents destroys them"
fi
exit "$rc"
