#!/usr/bin/env bash
# bench-fleet.sh — the agent fleet benchmark (docs/fleet-bench.md): many SIMULATED agents (real
# NNG connections, real wire protocol, no VMs) report to one prewarmd every second while pools
# churn. Each step runs on a fresh throwaway cluster: PostgreSQL (scripts/pgtmp.sh), prewarmd
# (--heartbeat-ms 1000), PW_FLEET_FUNCTIONS keepalive functions whose pool `min` flips every few
# seconds plus a small acquire/release loop (so prewarm, destroy, lease and unlease commands flow),
# and ceil(agents / PW_FLEET_PER_PROCESS) bench-fleet processes. prewarmd's CPU (utime+stime) and
# memory (VmRSS, VmHWM) and its /metrics are sampled every second. Writes PW_FLEET_JSON and prints
# a table. Exits non-zero if any report or hello is lost, any agent gets `rehello`, any agent is
# declared dead during the window, or GET /v1/hosts (3 s before the end) shows an agent not alive.
#
#   scripts/bench-fleet.sh [BUILD_DIR]    (default build-fleet; needs prewarmd and bench-fleet)
#
# Environment: PW_FLEET_AGENTS (1000), PW_FLEET_SECONDS (300), PW_FLEET_BASELINE_AGENTS (100; 0
# skips the baseline step), PW_FLEET_BASELINE_SECONDS (60), PW_FLEET_PER_PROCESS (250 agents per
# bench-fleet process), PW_FLEET_FUNCTIONS (8), PW_FLEET_JSON (docs/results/fleet.json),
# PW_FLEET_ACQUIRES (acquire+release pairs per second, 5), PW_KEEP_LOGS=1 keeps the logs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-fleet}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
AGENTS=${PW_FLEET_AGENTS:-1000}
SECS=${PW_FLEET_SECONDS:-300}
BASE_AGENTS=${PW_FLEET_BASELINE_AGENTS:-100}
BASE_SECS=${PW_FLEET_BASELINE_SECONDS:-60}
PER_PROC=${PW_FLEET_PER_PROCESS:-250}
NFN=${PW_FLEET_FUNCTIONS:-8}
ACQ=${PW_FLEET_ACQUIRES:-5}
JSON=${PW_FLEET_JSON:-$ROOT/docs/results/fleet.json}
HB=1000

for b in scheduler/prewarmd bench/fleet/bench-fleet; do
  [ -x "$BUILD/$b" ] || { echo "bench-fleet: $BUILD/$b not built" >&2; exit 1; }
done
[ "$SECS" -ge 8 ] || { echo "bench-fleet: PW_FLEET_SECONDS must be >= 8" >&2; exit 2; }

# Every agent is one TCP connection at prewarmd and one in a bench-fleet process.
want=$((AGENTS + BASE_AGENTS + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$want" ] ||
    echo "bench-fleet: warning: ulimit -n is $(ulimit -n), below $want" >&2
fi

TMP=$(mktemp -d /tmp/pw-bench-fleet.XXXX)
PGDIR=
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true # never leave a process behind to skew the next step
    wait "$p" 2>/dev/null || true
  done
  PIDS=()
  [ -n "$PGDIR" ] && bash "$ROOT/scripts/pgtmp.sh" stop "$PGDIR" >/dev/null 2>&1 || true
  PGDIR=
}
cleanup() {
  stop_all
  if [ "${PW_KEEP_LOGS:-}" = 1 ]; then echo "logs in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# sampler.py: every second, prewarmd's CPU ticks and memory from /proc and a few /metrics
# counters, one JSON line each, until the stop file exists.
cat >"$TMP/sampler.py" <<'EOF'
import json, os, sys, time, urllib.request
pid, api, out, stop = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
hz = os.sysconf("SC_CLK_TCK")
keys = ("prewarm_agent_messages_total", "prewarm_agent_deaths_total", "prewarm_agent_wakeups_total",
        "prewarm_agent_protocol_errors_total", "prewarm_agent_polls_held", "prewarm_agent_messages_malformed_total")
with open(out, "w") as f:
    while not os.path.exists(stop):
        t = time.time()
        try:
            st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            cpu = (int(st[11]) + int(st[12])) / hz
            mem = {}
            for line in open(f"/proc/{pid}/status"):
                if line.startswith(("VmRSS:", "VmHWM:")):
                    mem[line.split(":")[0]] = int(line.split()[1])
        except OSError:
            break
        s = {"t": t, "cpu_s": cpu, "rss_kb": mem.get("VmRSS", 0), "hwm_kb": mem.get("VmHWM", 0)}
        f0 = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        s["machine_busy_s"] = (sum(f0) - f0[3] - f0[4]) / hz  # all CPUs, everything but idle and iowait
        try:
            for line in urllib.request.urlopen(api + "/metrics", timeout=5).read().decode().splitlines():
                name = line.split("{")[0].split(" ")[0]
                if name in keys:
                    s[name] = float(line.split()[-1])
                elif line.startswith('prewarm_agents{state="alive"}'):
                    s["agents_alive"] = float(line.split()[-1])
                elif line.startswith('prewarm_agents{state="dead"}'):
                    s["agents_dead"] = float(line.split()[-1])
        except Exception as e:
            s["metrics_error"] = str(e)
        f.write(json.dumps(s) + "\n")
        f.flush()
        time.sleep(max(0.0, 1.0 - (time.time() - t)))
EOF

# churn.py: pool churn so commands flow to the agents. Every second one function's pool `min`
# flips between LO and HI (raising it sends prewarms; lowering it lets VMs expire after the 2 s
# keep-alive: destroys), and ACQ acquire+release pairs a second send lease/unlease notes.
cat >"$TMP/churn.py" <<'EOF'
import http.client, json, os, random, sys, time
host, port, nfn, lo, hi, acq, stop, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], sys.argv[8]
c = http.client.HTTPConnection(host, port, timeout=10)
def req(method, path, body=None):
    global c
    try:
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    except Exception:
        c.close()
        c = http.client.HTTPConnection(host, port, timeout=10)
        return 0, b""
st = {"pool_flips": 0, "pool_flip_errors": 0, "acquires": 0, "acquired": 0, "acquire_errors": 0, "released": 0}
high = [False] * nfn
rng = random.Random(7)
i = 0
while not os.path.exists(stop):
    t = time.time()
    fn = i % nfn
    high[fn] = not high[fn]
    s, _ = req("PUT", f"/v1/functions/fl-{fn}/pool", {"min": hi if high[fn] else lo})
    st["pool_flips" if s == 200 else "pool_flip_errors"] += 1
    for _ in range(acq):
        st["acquires"] += 1
        s, b = req("POST", f"/v1/functions/fl-{rng.randrange(nfn)}/acquire", {"timeout_ms": 500})
        if s == 200:
            st["acquired"] += 1
            lid = json.loads(b)["lease_id"]
            s, _ = req("POST", f"/v1/leases/{lid}/release", {"duration_ms": 5, "outcome": "ok"})
            st["released"] += s == 200
        else:
            st["acquire_errors"] += 1
    i += 1
    time.sleep(max(0.0, 1.0 - (time.time() - t)))
json.dump(st, open(out, "w"))
EOF

# run_step NAME AGENTS SECONDS: one fresh cluster, one measurement; leaves $TMP/step-NAME.json.
run_step() {
  local name=$1 n=$2 secs=$3
  local nproc=$(((n + PER_PROC - 1) / PER_PROC))
  echo "== step $name: $n SIMULATED agents in $nproc process(es), $secs s" >&2
  PGDIR=$(bash "$ROOT/scripts/pgtmp.sh" start | tail -n1)
  local http_port agent_port
  http_port=$(free_port)
  agent_port=$(free_port)
  "$BUILD/scheduler/prewarmd" --http "127.0.0.1:$http_port" --agents "tcp://127.0.0.1:$agent_port" \
    --pg "host=$PGDIR user=postgres dbname=postgres" --heartbeat-ms "$HB" --max-agents $((n * 2 + 64)) \
    --log-level warn >"$TMP/prewarmd-$name.log" 2>&1 &
  local sched=$!
  PIDS+=("$sched")
  local api=http://127.0.0.1:$http_port
  for _ in $(seq 100); do curl -fs "$api/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "$api/readyz" >/dev/null || { echo "bench-fleet: prewarmd not ready" >&2; tail "$TMP/prewarmd-$name.log" >&2; return 1; }

  # Pools: LO..HI (= 4 LO) VMs per function: the fleet holds about n/16..n/4 VMs, and each flip
  # of one pool moves 3 LO VMs (prewarms up, keep-alive expiry and destroys down).
  local lo=$(((n + 16 * NFN - 1) / (16 * NFN))) hi
  hi=$((4 * lo))
  for i in $(seq 0 $((NFN - 1))); do
    curl -fs -X PUT "$api/v1/functions/fl-$i" -H 'Content-Type: application/json' \
      -d "{\"image\":\"sim\",\"memory_mb\":128,\"vcpus\":1,\"pool\":{\"policy\":\"keepalive\",\"min\":$lo,\"max\":$((hi * 4)),\"keepalive_ms\":2000}}" >/dev/null
  done

  rm -f "$TMP/stop-$name"
  python3 "$TMP/sampler.py" "$sched" "$api" "$TMP/samples-$name.jsonl" "$TMP/stop-$name" &
  local sampler=$!
  PIDS+=("$sampler")
  local fleet=() k first count
  for k in $(seq 0 $((nproc - 1))); do
    first=$((k * PER_PROC))
    count=$((n - first < PER_PROC ? n - first : PER_PROC))
    "$BUILD/bench/fleet/bench-fleet" --scheduler "tcp://127.0.0.1:$agent_port" --agents "$count" \
      --first "$first" --prefix "$name" --seconds "$secs" --seed $((k + 1)) \
      --json "$TMP/fleet-$name-$k.json" 2>"$TMP/fleet-$name-$k.log" &
    fleet+=("$!")
    PIDS+=("$!")
  done
  sleep 3 # the agents say hello (spread over 2 s) before the pools start to churn
  python3 "$TMP/churn.py" 127.0.0.1 "$http_port" "$NFN" "$lo" "$hi" "$ACQ" "$TMP/stop-$name" "$TMP/churn-$name.json" &
  local churn=$!
  PIDS+=("$churn")
  sleep $((secs - 6))
  # Every agent must be alive while the fleet still reports (it stops at the window's end).
  curl -fs "$api/v1/hosts" >"$TMP/hosts-$name.json" || echo '{"hosts":[]}' >"$TMP/hosts-$name.json"
  local rcs=()
  for p in "${fleet[@]}"; do
    if wait "$p"; then rcs+=(0); else rcs+=($?); fi
  done
  touch "$TMP/stop-$name"
  wait "$churn" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  cp "$TMP/prewarmd-$name.log" "$TMP/prewarmd-$name.kept.log"
  stop_all

  python3 - "$TMP" "$name" "$n" "$secs" "$nproc" "$HB" "${rcs[*]}" <<'EOF'
import glob, json, sys
tmp, name, n, secs, nproc, hb, rcs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), [int(x) for x in sys.argv[7].split()]
procs = [json.load(open(f)) for f in sorted(glob.glob(f"{tmp}/fleet-{name}-*.json"))]
samples = [json.loads(l) for l in open(f"{tmp}/samples-{name}.jsonl") if l.strip()]
hosts = json.load(open(f"{tmp}/hosts-{name}.json"))["hosts"]
churn = json.load(open(f"{tmp}/churn-{name}.json")) if glob.glob(f"{tmp}/churn-{name}.json") else {}

# The histogram's bucket -> value mapping, as hist_value() in bench/fleet/main.c.
def value(i):
    if i < 128:
        return float(i)
    k = i - 128
    shift = k // 64 + 1
    return float((64 + k % 64) << shift) + (1 << shift) / 2.0
def merge(key):
    b, cnt, mx, tot = {}, 0, 0, 0
    for p in procs:
        h = p["latency"][key]
        cnt += h["count"]; tot += h["sum_us"]; mx = max(mx, h["max_us"])
        for i, c in h["buckets"]:
            b[int(i)] = b.get(int(i), 0) + c
    def pct(q):
        if cnt == 0:
            return 0
        rank, seen = max(1, int(q * cnt + 0.999999)), 0
        for i in sorted(b):
            seen += b[i]
            if seen >= rank:
                return round(min(value(i), mx))
        return mx
    return {"count": cnt, "mean_us": round(tot / cnt) if cnt else 0, "p50_us": pct(0.5), "p99_us": pct(0.99),
            "p999_us": pct(0.999), "max_us": mx}
def tot(path):
    s = 0
    for p in procs:
        v = p
        for k in path.split("."):
            v = v[k]
        s += v
    return s

w0 = min(p["window_start_wall_ms"] for p in procs) / 1000 if procs else 0
w1 = max(p["window_end_wall_ms"] for p in procs) / 1000 if procs else 0
warm = min(10.0, secs / 5)  # the hello burst and first pool fill are not steady state
win = [s for s in samples if w0 + warm <= s["t"] <= w1 - 0.5]
whole = [s for s in samples if w0 - 1 <= s["t"] <= w1 - 0.5]
def delta(ss, k):
    return (ss[-1].get(k, 0) - ss[0].get(k, 0)) if len(ss) >= 2 else 0
cpu_s = delta(win, "cpu_s"); dur = (win[-1]["t"] - win[0]["t"]) if len(win) >= 2 else 0
msgs = delta(win, "prewarm_agent_messages_total")
answered_rate = tot("reports.answered") / secs
alive = sum(1 for h in hosts if h.get("host", h.get("id", "")).startswith(name + "-") and h.get("state") == "alive") \
    if hosts and ("host" in hosts[0] or "id" in hosts[0]) else sum(1 for h in hosts if h.get("state") == "alive")
deaths = delta(whole, "prewarm_agent_deaths_total")
step = {
    "step": name, "agents": n, "simulated": True, "processes": nproc, "seconds": secs, "heartbeat_ms": hb,
    "reports_offered_per_s": round(n * 1000 / hb, 1),
    "reports_sent_per_s": round(tot("reports.sent") / secs, 1),
    "reports_answered_per_s": round(answered_rate, 1),
    "reports": {k: tot("reports." + k) for k in ("sent", "answered", "superseded", "timed_out", "failed", "unanswered_at_end", "lost")},
    "hellos": {k: tot("hellos." + k) for k in ("sent", "answered", "superseded", "lost")},
    "errors": {k: tot("errors." + k) for k in ("rehello", "error_replies", "bad_replies", "stale_epoch_replies", "outbox_overflows")},
    "agents_connected": tot("agents_connected"),
    "agents_alive_at_end": alive, "agents_declared_dead": deaths,
    "commands": {k: tot("commands." + k) for k in ("prewarm", "destroy", "lease", "unlease", "snapshot", "total")},
    "vm_events": {k: tot("vm_events." + k) for k in ("running", "gone", "failed", "total", "acked", "unacked_at_end")},
    "latency": {"heartbeat_overshoot": merge("heartbeat_overshoot"), "report_rtt": merge("report_rtt"),
                "cmd_reply_rtt": merge("cmd_reply_rtt"), "hello_rtt": merge("hello_rtt")},
    "prewarmd": {
        "steady_window_s": round(dur, 1),
        "cpu_pct_of_one_core": round(100 * cpu_s / dur, 1) if dur else None,
        "agent_messages_per_s": round(msgs / dur, 1) if dur else None,
        "cpu_us_per_agent_message": round(1e6 * cpu_s / msgs, 1) if msgs else None,
        "rss_mb_start": round(whole[0]["rss_kb"] / 1024, 1) if whole else None,
        "rss_mb_end": round(whole[-1]["rss_kb"] / 1024, 1) if whole else None,
        "rss_mb_peak": round(max(s["hwm_kb"] for s in whole) / 1024, 1) if whole else None,
        "polls_held_end": whole[-1].get("prewarm_agent_polls_held") if whole else None,
        "protocol_errors": delta(whole, "prewarm_agent_protocol_errors_total"),
        "wakeups": delta(whole, "prewarm_agent_wakeups_total"),
    },
    # Everything the machine ran in the steady window, in cores (prewarmd, the fleet, PostgreSQL
    # and whatever else shared the machine).
    "machine_busy_cores": round(delta(win, "machine_busy_s") / dur, 2) if dur else None,
    "fleet_processes_cpu_s": round(sum(p["process_cpu_s"] for p in procs), 1),
    "churn": churn,
    "process_exit_codes": rcs,
}
fails = []
if len(procs) != nproc: fails.append(f"{nproc - len(procs)} bench-fleet process(es) wrote no summary")
if step["reports"]["lost"]: fails.append(f"{step['reports']['lost']} report(s) lost")
if step["hellos"]["lost"]: fails.append(f"{step['hellos']['lost']} hello(s) lost")
if step["errors"]["rehello"]: fails.append(f"{step['errors']['rehello']} rehello answer(s): sessions were lost")
if step["agents_connected"] != n: fails.append(f"only {step['agents_connected']} of {n} agents connected")
if deaths: fails.append(f"prewarmd declared {int(deaths)} agent(s) dead during the window")
if alive != n: fails.append(f"GET /v1/hosts: {alive} of {n} agents alive near the end")
if any(rcs): fails.append(f"bench-fleet exit codes {rcs}")
step["failures"] = fails
step["ok"] = not fails
json.dump(step, open(f"{tmp}/step-{name}.json", "w"), indent=1)
EOF
}

STEPS=()
if [ "$BASE_AGENTS" -gt 0 ]; then
  run_step "b$BASE_AGENTS" "$BASE_AGENTS" "$BASE_SECS"
  STEPS+=("b$BASE_AGENTS")
fi
run_step "f$AGENTS" "$AGENTS" "$SECS"
STEPS+=("f$AGENTS")

mkdir -p "$(dirname "$JSON")"
python3 - "$TMP" "$JSON" "$(nproc)" "${STEPS[@]}" <<'EOF'
import json, platform, sys, time
tmp, out, ncpu, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
steps = [json.load(open(f"{tmp}/step-{n}.json")) for n in names]
doc = {"benchmark": "bench-fleet", "note": "agents are SIMULATED (no VMs) in a few processes; every agent has its own real "
       "NNG connection to prewarmd and speaks the real wire protocol (docs/fleet-bench.md)",
       "machine": {"cpus": ncpu, "kernel": platform.release()}, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "steps": steps, "ok": all(s["ok"] for s in steps)}
json.dump(doc, open(out, "w"), indent=1)
json.load(open(out))  # well-formed
rows = [("agents", lambda s: s["agents"]), ("processes", lambda s: s["processes"]), ("seconds", lambda s: s["seconds"]),
        ("reports offered/s", lambda s: s["reports_offered_per_s"]), ("reports answered/s", lambda s: s["reports_answered_per_s"]),
        ("reports sent/s", lambda s: s["reports_sent_per_s"]),
        ("reports sent", lambda s: s["reports"]["sent"]), ("answered", lambda s: s["reports"]["answered"]),
        ("superseded (news)", lambda s: s["reports"]["superseded"]), ("lost", lambda s: s["reports"]["lost"]),
        ("agents alive / dead", lambda s: f'{s["agents_alive_at_end"]} / {int(s["agents_declared_dead"])}'),
        ("heartbeat overshoot p50/p99/p99.9/max ms", lambda s: "/".join(f'{s["latency"]["heartbeat_overshoot"][k]/1000:.1f}' for k in ("p50_us", "p99_us", "p999_us", "max_us"))),
        ("cmd reply rtt p50/p99/p99.9/max ms", lambda s: "/".join(f'{s["latency"]["cmd_reply_rtt"][k]/1000:.1f}' for k in ("p50_us", "p99_us", "p999_us", "max_us"))),
        ("prewarmd CPU % of one core", lambda s: s["prewarmd"]["cpu_pct_of_one_core"]),
        ("prewarmd CPU us / agent message", lambda s: s["prewarmd"]["cpu_us_per_agent_message"]),
        ("prewarmd RSS start/end/peak MB", lambda s: f'{s["prewarmd"]["rss_mb_start"]}/{s["prewarmd"]["rss_mb_end"]}/{s["prewarmd"]["rss_mb_peak"]}'),
        ("commands to agents", lambda s: s["commands"]["total"]), ("VM state changes reported", lambda s: s["vm_events"]["total"]),
        ("bench-fleet CPU s (all processes)", lambda s: s["fleet_processes_cpu_s"]),
        ("machine busy (cores, of %d)" % ncpu, lambda s: s["machine_busy_cores"])]
print("| measurement | " + " | ".join(s["step"] for s in steps) + " |")
print("|---|" + "---|" * len(steps))
for label, f in rows:
    print(f"| {label} | " + " | ".join(str(f(s)) for s in steps) + " |")
for s in steps:
    for f in s["failures"]:
        print(f"FAIL {s['step']}: {f}", file=sys.stderr)
print(f"results: {out}", file=sys.stderr)
sys.exit(0 if doc["ok"] else 1)
EOF
