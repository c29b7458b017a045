#!/usr/bin/env bash
# test.sh — the whole test suite: unit + integration tests in a warnings-as-errors build,
# the same again under AddressSanitizer/UBSan, and the fuzz targets briefly (clang only).
#
#   bash scripts/test.sh           everything
#   bash scripts/test.sh --quick   build/ only (skip the sanitizer, fuzz, Helm/systemd suites)
#
# Exits non-zero on any failure. The last line is "all suites: N passed, M failed" (tests
# counted from ctest's summaries; a failed configure or build counts as one failure).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h | --help)
      sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "test.sh: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

# The microVM tests run real QEMU guests; install-deps.sh installs QEMU, so here a missing
# QEMU is a failure, not a skip.
export PREWARM_REQUIRE_QEMU=${PREWARM_REQUIRE_QEMU:-1}

JOBS=$(nproc 2>/dev/null || echo 2)
total_pass=0
total_fail=0
failed_steps=()

summary() {
  local rc=0
  if [ ${#failed_steps[@]} -gt 0 ] || [ "$total_fail" -gt 0 ]; then rc=1; fi
  if [ ${#failed_steps[@]} -gt 0 ]; then
    echo "test.sh: failed steps: ${failed_steps[*]}"
  fi
  echo "all suites: $total_pass passed, $total_fail failed"
  exit "$rc"
}

# configure_build DIR ARGS... — configure (if needed, or if the options changed) and build.
configure_build() {
  local dir=$1
  shift
  echo "== configure $dir: $*"
  if ! cmake -S . -B "$dir" "$@"; then
    failed_steps+=("configure:$dir")
    total_fail=$((total_fail + 1))
    return 1
  fi
  echo "== build $dir"
  if ! cmake --build "$dir" -j "$JOBS"; then
    failed_steps+=("build:$dir")
    total_fail=$((total_fail + 1))
    return 1
  fi
}

# run_ctest NAME DIR [ctest args...] — run ctest, add its counts to the totals.
run_ctest() {
  local name=$1 dir=$2
  shift 2
  local out rc line total failed
  out=$(mktemp)
  echo "== ctest $name ($dir)"
  set +e
  ctest --test-dir "$dir" --output-on-failure -j2 "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  # "100% tests passed, 0 tests failed out of 12"
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$out" | tail -n 1 || true)
  rm -f "$out"
  if [ -n "$line" ]; then
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    total_pass=$((total_pass + total - failed))
    total_fail=$((total_fail + failed))
  elif [ "$rc" -ne 0 ]; then
    total_fail=$((total_fail + 1))
  fi
  if [ "$rc" -ne 0 ]; then
    failed_steps+=("ctest:$name")
  fi
}

# lsan_works — LeakSanitizer needs ptrace-like access that some containers forbid.
lsan_works() {
  local t
  t=$(mktemp -d)
  printf 'int main(void){return 0;}\n' >"$t/t.c"
  if ! cc -fsanitize=address -o "$t/t" "$t/t.c" 2>/dev/null; then
    rm -rf "$t"
    return 1
  fi
  if ASAN_OPTIONS=detect_leaks=1 "$t/t" >"$t/out" 2>&1; then
    rm -rf "$t"
    return 0
  fi
  rm -rf "$t"
  return 1
}

echo "== install dependencies"
bash scripts/install-deps.sh || {
  failed_steps+=("install-deps")
  total_fail=$((total_fail + 1))
  summary
}

# 1. The default build: optimised with debug info, warnings are errors.
if configure_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPW_WERROR=ON -DPW_SANITIZE=OFF -DPW_FUZZ=OFF; then
  run_ctest default build
fi

if [ "$quick" -eq 0 ]; then
  # 2. AddressSanitizer + UndefinedBehaviorSanitizer: unit and integration tests.
  if lsan_works; then
    asan_opts=detect_leaks=1:abort_on_error=1:strict_string_checks=1
  else
    echo "test.sh: LeakSanitizer does not work here; running ASan without leak detection"
    asan_opts=detect_leaks=0:abort_on_error=1:strict_string_checks=1
  fi
  if configure_build build-asan -DCMAKE_BUILD_TYPE=Debug -DPW_WERROR=ON -DPW_SANITIZE=ON -DPW_FUZZ=OFF; then
    ASAN_OPTIONS=$asan_opts UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      LSAN_OPTIONS=suppressions=$REPO/tests/lsan.supp:print_suppressions=0 \
      run_ctest asan build-asan
  fi

  # 3. libFuzzer targets, briefly (each ctest fuzz test is time-bounded).
  if command -v clang >/dev/null 2>&1; then
    if configure_build build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DPW_FUZZ=ON \
        -DPW_SANITIZE=OFF; then
      ASAN_OPTIONS=$asan_opts UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_ctest fuzz build-fuzz -L fuzz
    fi
  else
    echo "test.sh: clang not found; skipping the fuzz suite"
  fi

  # 4. The Helm chart and systemd units (lint, render, schema-validate, run the rendered
  #    settings with build/'s binaries, systemd-analyze verify): counted as one test.
  echo "== check-helm"
  if PREWARM_BUILD_DIR="$REPO/build" bash scripts/check-helm.sh; then
    total_pass=$((total_pass + 1))
  else
    total_fail=$((total_fail + 1))
    failed_steps+=("check-helm")
  fi
fi

summary
