#!/usr/bin/env bash
# frontier.sh — the cold-start vs wasted-memory frontier on a trace, in one command.
#
# Runs prewarm-replay (pool mode) with keep-alive swept over 1..120 minutes, hybrid, predictive
# swept over its quantile and over its keep-one cost (when a model is available) and oracle, writes the merged results to
# docs/results/frontier.json and plots per-function p75 cold-start % against wasted memory
# (keepalive:10m = 100) to docs/results/frontier.png with gnuplot (Debian: gnuplot-nox).
#
#   bash scripts/frontier.sh                 # the shared Azure 2019 trace, seed 1
#   PW_TRACE_DIR=/some/trace bash scripts/frontier.sh --seed 2 --minutes 0:720
#
# `--plot-only` re-plots docs/results/frontier.json without replaying. Extra arguments go to
# every prewarm-replay run. Environment: PW_TRACE_DIR (default
# <repo>/../shared/data/azure2019), PW_BINARY_DIR (default <repo>/build), PW_MODEL (default
# models/default.json), PW_QUANTILES (default "0.95 0.99 0.995 0.999"), PW_KEEP_ONE (keep-one
# costs swept at quantile 0.99, default "0.001 0.0005 0.0001 0.00005"), PW_OUT (default
# docs/results). Two replays run at a time.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
BUILD=${PW_BINARY_DIR:-$REPO/build}
REPLAY=$BUILD/bench/replay/prewarm-replay
TRACE=${PW_TRACE_DIR:-../shared/data/azure2019} # relative to the repository (the working directory)
MODEL=${PW_MODEL:-$REPO/models/default.json}
QUANTILES=${PW_QUANTILES:-0.95 0.99 0.995 0.999}
KEEP_ONE=${PW_KEEP_ONE:-0.001 0.0005 0.0001 0.00005}
OUT=${PW_OUT:-$REPO/docs/results}

if [[ ! -x $REPLAY ]]; then
  echo "frontier.sh: $REPLAY not found: cmake --build $BUILD --target prewarm-replay" >&2
  exit 1
fi
command -v gnuplot >/dev/null || { echo "frontier.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Two groups of similar cost, run side by side (2 cores).
a=(--policy keepalive:1m --policy keepalive:2m --policy keepalive:5m --policy keepalive:10m
   --policy keepalive:20m --policy keepalive:30m --policy keepalive:60m --policy keepalive:120m
   --policy hybrid --policy oracle)
b=()
if [[ -r $MODEL ]]; then
  for q in $QUANTILES; do b+=(--policy "predictive:$q"); done
  for k in $KEEP_ONE; do b+=(--policy "predictive:0.99:1m:$k"); done
  b+=(--model "$MODEL")
else
  echo "frontier.sh: no model at $MODEL: predictive left out" >&2
fi
if [[ ${1:-} == --plot-only ]]; then
  # Re-plot an earlier run's results without replaying.
  shift
  python3 - "$OUT/frontier.json" "$TMP" <<'PY'
import json, sys
src, tmp = sys.argv[1:3]
j = json.load(open(src))
json.dump({k: v for k, v in j.items() if k != "policies"} | {"policies": []}, open(f"{tmp}/a.json", "w"))
json.dump({"reference_waste_gbs": j["reference_waste_gbs"], "policies": j["policies"]}, open(f"{tmp}/b.json", "w"))
PY
else
  "$REPLAY" --trace "$TRACE" "${a[@]}" --json "$TMP/a.json" "$@" > "$TMP/a.txt" &
  pa=$!
  if [[ ${#b[@]} -gt 0 ]]; then
    "$REPLAY" --trace "$TRACE" "${b[@]}" --json "$TMP/b.json" "$@" > "$TMP/b.txt" &
    pb=$!
    wait $pb
  else
    echo '{"policies": []}' > "$TMP/b.json"
  fi
  wait $pa
fi

python3 - "$TMP/a.json" "$TMP/b.json" "$OUT/frontier.json" "$TMP" <<'PY'
import json, sys
a, b, out, tmp = sys.argv[1:5]
ja, jb = json.load(open(a)), json.load(open(b))
ref = ja["reference_waste_gbs"]
pols = ja["policies"] + jb["policies"]
for p in pols:  # both runs normalise to the same keepalive:10m (same trace, seed, window)
    p["waste_norm"] = 100.0 * p["waste_gb_s"] / ref
merged = {k: v for k, v in ja.items() if k != "policies"}
merged["policies"] = pols
json.dump(merged, open(out, "w"), indent=1)
fam = {}
for p in pols:
    f = p["policy"].split(":")[0]
    if f == "predictive":  # two sweeps: the quantile, and the keep-one cost at 0.99
        f = "predictive_k" if p["policy"].count(":") >= 3 else "predictive_q"
    fam.setdefault(f, []).append(p)
for f, ps in fam.items():
    ps.sort(key=lambda p: p["waste_norm"])
    with open(f"{tmp}/{f}.dat", "w") as fh:
        for p in ps:
            lab = p["policy"].split(":", 1)[1] if ":" in p["policy"] else ""
            fh.write(f'{p["waste_norm"]:.3f} {p["fn_cold_pct_p75"]:.3f} "{lab}"\n')
print("%-22s %8s %8s %8s" % ("policy", "waste%", "fn_p75", "cold%"))
for p in pols:
    print("%-22s %8.1f %8.2f %8.3f" % (p["policy"], p["waste_norm"], p["fn_cold_pct_p75"], p["cold_pct"]))
PY

for f in keepalive hybrid predictive_q predictive_k oracle; do [[ -f $TMP/$f.dat ]] || echo "" > "$TMP/$f.dat"; done
gnuplot -e "dir='$TMP'; out='$OUT/frontier.png'" "$REPO/scripts/frontier.gp"
echo "frontier.sh: wrote $OUT/frontier.json and $OUT/frontier.png"
