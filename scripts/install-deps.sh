#!/usr/bin/env bash
# Installs the Debian packages Prewarm needs to build and test. Idempotent: installs only
# what is missing, so a second run on a ready machine does no network I/O.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git ca-certificates curl procps iproute2
  libuv1-dev libnng-dev libmbedtls-dev libpq-dev libcjson-dev libxgboost-dev libcmocka-dev openssl
  node-llhttp postgresql-15 postgresql-client-15
  clang-14 libclang-rt-14-dev python3 gnuplot-nox
  qemu-system-x86 busybox-static cpio lz4
  nodejs unzip systemd
  prometheus
)
# npm (scripts/check-helm.sh): Debian's package, unless the installed nodejs already brings the
# command (NodeSource's nodejs bundles npm and conflicts with Debian's npm package).
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
