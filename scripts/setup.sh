#!/usr/bin/env bash
# Brings a fresh Debian machine to a working state: installs the Debian
# packages that are missing (apt-get, as root), fetches MNIST and builds.
# Usage: scripts/setup.sh [BUILD_DIR [extra cmake args...]]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${1:-$root/build}
shift || true

# Why each package is needed is in README.md ("Dependencies").
packages=(build-essential cmake pkg-config libmsgpack-dev libopenblas-dev libpaho-mqtt-dev mosquitto mosquitto-clients
          libcmocka-dev gnuplot-nox ca-certificates)
# The metrics server of the coordinator, and Prometheus for the dashboard test.
packages+=(libmicrohttpd-dev prometheus python3 curl)
# The libFuzzer harnesses (scripts/fuzz.sh, run by scripts/test.sh).
packages+=(clang-14 libclang-rt-14-dev)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages: ${missing[*]}; run this script as root (or apt-get install them)" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$root/scripts/fetch-mnist.sh" "$root/data/mnist"

cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)" >&2
