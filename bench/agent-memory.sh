#!/usr/bin/env bash
# What a gateway must hold: the peak resident set of each esgd-agent (and of
# the coordinator) in a testbed run through a private mosquitto. Every program
# logs its own peak (getrusage) when the job finishes; this script runs the
# testbed and collects those lines.
#
# usage: bench/agent-memory.sh [--build DIR] [--model lenet|mlp] [--rounds T]
#          [--agents N] [--method M] [--drop R]
# Prints one JSON object.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build" model=lenet rounds=300 agents=4 method=esgd drop=0.875
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --agents) agents=$2; shift 2 ;;
    --method) method=$2; shift 2 ;;
    --drop) drop=$2; shift 2 ;;
    --help | -h) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "agent-memory: unknown option $1" >&2; exit 2 ;;
    esac
done
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
"$root/deploy/testbed.sh" --build "$build" --model "$model" --rounds "$rounds" --agents "$agents" \
    --method "$method" --drop "$drop" --results "$run" >/dev/null 2>"$run/testbed.err" ||
    { cat "$run/testbed.err" >&2; exit 1; }

peak() { # peak LOG: the MiB figure of the log's "peak resident set" line
    grep -o 'peak resident set [0-9.]* MiB' "$1" | grep -o '[0-9.]*' || { echo "agent-memory: no peak in $1" >&2; exit 1; }
}
agent_peaks=()
for ((i = 0; i < agents; i++)); do agent_peaks+=("$(peak "$run/logs/agent-$i.log")"); done
printf '{"model": "%s", "method": "%s", "drop": %s, "agents": %s, "rounds": %s, "agent_peak_rss_MiB": [%s], "coordinator_peak_rss_MiB": %s}\n' \
    "$model" "$method" "$drop" "$agents" "$rounds" "$(IFS=,; echo "${agent_peaks[*]}" | sed 's/,/, /g')" \
    "$(peak "$run/logs/coordinator.log")"
