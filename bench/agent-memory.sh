#!/usr/bin/env bash
# What a gateway must hold: the peak resident set of each esgd-agent (and of
# the coordinator) in a testbed run through a private mosquitto. Every program
# logs its own peak (getrusage) when the job finishes; this script runs the
# testbed and collects those lines.
#
# usage: bench/agent-memory.sh [--shard full|I/N] [--state] [--save-every N] [deploy/testbed.sh options]
# The defaults are the testbed's (4 agents, LeNet, eSGD drop 0.875), with
# --rounds 300, each agent on its own shard (a quarter of MNIST). --shard
# full gives every agent all 60,000 training images (--shard I/N: that
# shard); --state gives the programs a state folder (ESGD_STATE_DIR), and
# --save-every N the agents' save period. Prints one JSON object: the job
# (from the run's result.json), the peaks in MiB and, with --state, each
# agent's state bytes a round and what the kernel counted it writing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case ${1:-} in --help | -h) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
shard=own
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
while [ $# -gt 0 ]; do
    case $1 in
    --shard) shard=$2; [ "$shard" = full ] && export ESGD_SHARD=0/1 || export ESGD_SHARD=$shard; shift 2 ;;
    --state) export ESGD_STATE_DIR=$run/state; shift ;;
    --save-every) export ESGD_SAVE_EVERY=$2; shift 2 ;;
    *) break ;;
    esac
done
"$root/deploy/testbed.sh" --rounds 300 --results "$run" "$@" >/dev/null 2>"$run/testbed.err" ||
    { cat "$run/testbed.err" >&2; exit 1; }

python3 - "$run" "$shard" <<'PY'
import json, re, sys
run, shard = sys.argv[1], sys.argv[2]
result = json.load(open(f"{run}/result.json"))
def peak(log):
    m = re.search(r"peak resident set ([0-9.]+) MiB", open(log).read())
    if not m:
        sys.exit(f"agent-memory: no peak resident set in {log}")
    return float(m.group(1))
def state(log):
    m = re.search(r"state: .*\(([0-9]+) bytes a round\); storage write_bytes (-?[0-9]+)", open(log).read())
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)
job = {key: result[key] for key in ("model", "method", "drop", "agents", "rounds")}
job["shard"] = shard
job["agent_peak_rss_MiB"] = [peak(f"{run}/logs/agent-{i}.log") for i in range(result["agents"])]
job["coordinator_peak_rss_MiB"] = peak(f"{run}/logs/coordinator.log")
states = [state(f"{run}/logs/agent-{i}.log") for i in range(result["agents"])]
if any(s[0] is not None for s in states):
    job["agent_state_bytes_per_round"] = [s[0] for s in states]
    job["agent_storage_write_bytes"] = [s[1] for s in states]
print(json.dumps(job))
PY
