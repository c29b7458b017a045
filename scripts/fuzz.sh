#!/usr/bin/env bash
# fuzz.sh — runs the libFuzzer targets (tests/fuzz/fuzz_*.c) for longer than CI does.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 600 s, every target)
#
# Builds build-fuzz with clang (-DPW_FUZZ=ON: ASan + UBSan + libFuzzer) if needed, then runs each
# target over its seed corpus (tests/fuzz/corpus/<target>/) plus a growing corpus kept in
# build-fuzz/tests/corpus_<target>/. A crash leaves crash-* in build-fuzz/tests/ and stops
# the script with exit 1; reproduce with build-fuzz/tests/<target> <crash file>.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-600}
shift || true
B=$ROOT/build-fuzz
if [ ! -f "$B/CMakeCache.txt" ]; then
  cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DPW_FUZZ=ON >/dev/null
fi
cmake --build "$B" -j"$(nproc)" >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$ROOT"/tests/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
fi
cd "$B/tests"
for t in "${targets[@]}"; do
  [ -x "./$t" ] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
  mkdir -p "corpus_$t"
  echo "fuzz.sh: $t for $SECS s"
  if ! "./$t" -max_total_time="$SECS" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
      "corpus_$t" "$ROOT/tests/fuzz/corpus/$t" 2>"fuzz-$t.log"; then
    tail -n 30 "fuzz-$t.log"
    echo "fuzz.sh: $t failed; see $B/tests/fuzz-$t.log and crash-* there" >&2
    exit 1
  fi
  grep -E "^stat::number_of_executed_units|^Done" "fuzz-$t.log" | tail -n 2
done
echo "fuzz.sh: ${#targets[@]} target(s) clean"
