#!/usr/bin/env bash
# What a gateway must hold: the peak resident set of each esgd-agent (and of
# the coordinator) in a testbed run through a private mosquitto. Every program
# logs its own peak (getrusage) when the job finishes; this script runs the
# testbed and collects those lines.
#
# usage: bench/agent-memory.sh [deploy/testbed.sh options]
# The defaults are the testbed's (4 agents, LeNet, eSGD drop 0.875), with
# --rounds 300. Prints one JSON object: the job (from the run's result.json)
# and the peaks in MiB.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case ${1:-} in --help | -h) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
"$root/deploy/testbed.sh" --rounds 300 --results "$run" "$@" >/dev/null 2>"$run/testbed.err" ||
    { cat "$run/testbed.err" >&2; exit 1; }

python3 - "$run" <<'PY'
import json, re, sys
run = sys.argv[1]
result = json.load(open(f"{run}/result.json"))
def peak(log):
    m = re.search(r"peak resident set ([0-9.]+) MiB", open(log).read())
    if not m:
        sys.exit(f"agent-memory: no peak resident set in {log}")
    return float(m.group(1))
job = {key: result[key] for key in ("model", "method", "drop", "agents", "rounds")}
job["agent_peak_rss_MiB"] = [peak(f"{run}/logs/agent-{i}.log") for i in range(result["agents"])]
job["coordinator_peak_rss_MiB"] = peak(f"{run}/logs/coordinator.log")
print(json.dumps(job))
PY
