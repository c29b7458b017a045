#!/usr/bin/env bash
# verify-systemd.sh — systemd-analyze verify (and an offline security score) of
# deploy/systemd/*.service, in a scratch --root that has the units systemd ships and stand-in
# executables at the ExecStart paths (verify checks that they exist). Any warning fails.
# Prints "SKIP ..." and exits 1 when systemd-analyze cannot run here.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "SKIP systemd-analyze not installed"
  exit 1
fi
sysunits=
for d in /usr/lib/systemd/system /lib/systemd/system; do
  [ -f "$d/sysinit.target" ] && sysunits=$d && break
done
if [ -z "$sysunits" ]; then
  echo "SKIP no systemd unit directory with sysinit.target"
  exit 1
fi
R=$(mktemp -d)
trap 'rm -rf "$R"' EXIT
mkdir -p "$R/usr/local/bin" "$R/etc/systemd/system" "$R/usr/lib/systemd"
cp -r "$sysunits" "$R/usr/lib/systemd/system"
units=()
for u in "$REPO"/deploy/systemd/*.service; do
  cp "$u" "$R/etc/systemd/system/"
  units+=("$(basename "$u")")
  # stand-ins for the ExecStart binaries
  sed -n 's/^ExecStart=[-@:+!]*\([^ ]*\).*/\1/p' "$u" | while read -r bin; do
    mkdir -p "$R$(dirname "$bin")"
    printf '#!/bin/sh\nexit 0\n' >"$R$bin"
    chmod +x "$R$bin"
  done
done
out=$(systemd-analyze verify --root="$R" "${units[@]}" 2>&1) || {
  echo "$out"
  echo "verify-systemd: systemd-analyze verify failed"
  exit 2
}
if [ -n "$out" ]; then
  echo "$out"
  echo "verify-systemd: systemd-analyze verify printed warnings"
  exit 2
fi
echo "verify-systemd: systemd-analyze verify: ${units[*]}: clean"
for u in "${units[@]}"; do
  systemd-analyze security --offline=yes --root="$R" "$u" 2>/dev/null | grep 'Overall exposure' || true
done
