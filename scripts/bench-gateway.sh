#!/usr/bin/env bash
# bench-gateway.sh — the gateway load benchmark on a throwaway cluster: PostgreSQL
# (scripts/pgtmp.sh), prewarmd and several sim agents with large capacity; registers the
# functions bench-gateway-load maps the Azure trace onto, waits for their pools to be warm, then
# runs bench-gateway-load (floor GET /livez and acquire/release at each rate) and writes
# docs/results/gateway-load.json. Everything it starts is stopped on exit.
#
#   scripts/bench-gateway.sh [BUILD_DIR]         (default build-gw; needs bench-gateway-load,
#                                                 prewarmd and prewarm-agent built there)
# Environment: PW_BENCH_RATES (default 1000,5000,10000), PW_BENCH_SECONDS (5),
# PW_BENCH_MAX_OFFER (400000: the saturation search's cap; 0 skips it), PW_BENCH_MAX_START (the
# highest rate), PW_BENCH_MAX_FACTOR (1.4), PW_BENCH_MAX_REFINE (2) — the 'max' row of each
# path is the highest rate it sustains (>= 99% achieved, no errors; bench-gateway-load --help),
# PW_BENCH_FUNCTIONS (16), PW_BENCH_MIN (128 warm VMs per function),
# PW_BENCH_MAX_HOLD_MS (100: cap on a lease's hold time, so the warm pools suffice),
# PW_BENCH_AGENTS (4), PW_BENCH_CONNS (256 for acquires, a quarter of that for releases), PW_BENCH_LEASE_TTL_MS (5000),
# PW_BENCH_JSON (docs/results/gateway-load.json).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-gw}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
RATES=${PW_BENCH_RATES:-1000,5000,10000}
SECONDS_PER_STEP=${PW_BENCH_SECONDS:-5}
MAX_OFFER=${PW_BENCH_MAX_OFFER:-400000}
MAX_START=${PW_BENCH_MAX_START:-0}
MAX_FACTOR=${PW_BENCH_MAX_FACTOR:-1.4}
MAX_REFINE=${PW_BENCH_MAX_REFINE:-2}
NFN=${PW_BENCH_FUNCTIONS:-16}
MIN=${PW_BENCH_MIN:-128}
NAGENTS=${PW_BENCH_AGENTS:-4}
CONNS=${PW_BENCH_CONNS:-256}
MAX_HOLD_MS=${PW_BENCH_MAX_HOLD_MS:-100}
# A lease whose acquire answer an overloaded step lost ends with its TTL: short, so that the
# generator's recovery after such a step (bench-gateway-load --recover-s) is quick.
LEASE_TTL_MS=${PW_BENCH_LEASE_TTL_MS:-5000}
JSON=${PW_BENCH_JSON:-$ROOT/docs/results/gateway-load.json}
TRACE=${PW_BENCH_TRACE:-$ROOT/../shared/data/azure2019}

for b in scheduler/prewarmd agents/prewarm-agent bench/loadgen/bench-gateway-load; do
  [ -x "$BUILD/$b" ] || { echo "bench-gateway: $BUILD/$b not built" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/pw-bench-gw.XXXX)
PGDIR=
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true # never leave a process behind to skew the next run
    wait "$p" 2>/dev/null || true
  done
  [ -n "$PGDIR" ] && bash "$ROOT/scripts/pgtmp.sh" stop "$PGDIR" >/dev/null 2>&1 || true
  if [ "${PW_KEEP_LOGS:-}" = 1 ]; then echo "logs in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PGDIR=$(bash "$ROOT/scripts/pgtmp.sh" start | tail -n1)
HTTP_PORT=$(free_port)
AGENT_PORT=$(free_port)
export PGHOST=$PGDIR PGUSER=postgres PGDATABASE=postgres
"$BUILD/scheduler/prewarmd" --http "127.0.0.1:$HTTP_PORT" --agents "tcp://127.0.0.1:$AGENT_PORT" \
  --pg "host=$PGDIR user=postgres dbname=postgres" --heartbeat-ms 500 --lease-ttl-ms "$LEASE_TTL_MS" --log-level warn \
  >"$TMP/prewarmd.log" 2>&1 &
SCHED_PID=$!
PIDS+=("$SCHED_PID")
API=http://127.0.0.1:$HTTP_PORT
for _ in $(seq 100); do curl -fs "$API/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$API/readyz" >/dev/null || { echo "bench-gateway: prewarmd not ready" >&2; tail "$TMP/prewarmd.log" >&2; exit 1; }

for i in $(seq 1 "$NAGENTS"); do
  "$BUILD/agents/prewarm-agent" --id "bench-$i" --scheduler "tcp://127.0.0.1:$AGENT_PORT" --driver sim \
    --topology-root "$ROOT/tests/fixtures/topology/4node" --vcpu-overcommit 64 --sim-restore-ms 20 \
    --log-level warn >"$TMP/agent-$i.log" 2>&1 &
  PIDS+=("$!")
done
for _ in $(seq 100); do
  n=$(curl -fs "$API/v1/hosts" | python3 -c 'import json,sys; print(sum(h["state"]=="alive" for h in json.load(sys.stdin)["hosts"]))')
  [ "$n" -ge "$NAGENTS" ] && break
  sleep 0.1
done
sleep 2 # past the adoption grace (3 heartbeats)

for i in $(seq 0 $((NFN - 1))); do
  curl -fs -X PUT "$API/v1/functions/lg-$i" -H 'Content-Type: application/json' \
    -d "{\"image\":\"sim\",\"memory_mb\":16,\"vcpus\":1,\"pool\":{\"policy\":\"fixed\",\"min\":$MIN,\"max\":$((MIN * 8))}}" >/dev/null
done
for _ in $(seq 600); do
  idle=$(for i in $(seq 0 $((NFN - 1))); do curl -fs "$API/v1/functions/lg-$i/pool"; echo; done |
    python3 -c 'import json,sys; print(sum(json.loads(l)["idle"] for l in sys.stdin if l.strip()))')
  [ "$idle" -ge $((NFN * MIN)) ] && break
  sleep 0.2
done
echo "cluster: prewarmd pid $SCHED_PID, $NAGENTS sim agents, $NFN functions x $MIN warm VMs ($idle idle)" >&2

mkdir -p "$(dirname "$JSON")"
"$BUILD/bench/loadgen/bench-gateway-load" --scheduler "127.0.0.1:$HTTP_PORT" --pid "$SCHED_PID" \
  --trace "$TRACE" --functions "$NFN" --conns "$CONNS" --seconds "$SECONDS_PER_STEP" \
  --spread --rates "$RATES" --max-offer "$MAX_OFFER" --max-start "$MAX_START" --max-factor "$MAX_FACTOR" \
  --max-refine "$MAX_REFINE" --max-hold-ms "$MAX_HOLD_MS" --json "$JSON"
echo "results: $JSON" >&2
# What the pools went through (cold starts and timeouts show pool exhaustion, not overhead).
for i in $(seq 0 $((NFN - 1))); do curl -fs "$API/v1/functions/lg-$i/pool"; echo; done |
  python3 -c 'import json,sys
ps=[json.loads(l) for l in sys.stdin if l.strip()]
print("pools: acquires %d warm %d cold %d timeouts %d; now idle %d leased %d restoring %d" % tuple(
  sum(p[k] for p in ps) for k in ("acquires","warm","cold","timeouts","idle","leased","restoring")))' >&2
