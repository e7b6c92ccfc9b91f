#!/usr/bin/env bash
# Through mosquitto on loopback: round overhead and what the broker carried,
# for 4, 16, 64 and 256 agents (each its own esgd-agent process).
#
# Each size runs the load test (tests/integration/load.sh: MLP, batch 8, eSGD
# drop 0.99, every agent every round, QoS 1) and then esgd-sim with the same
# job. Round overhead: per round, the least time any agent waited from
# sending its update to receiving the next model (that agent reported last,
# so the wait is broker, coordinator and broker again, with no compute in it);
# median and p90 over rounds. For comparison, round_minus_sim_ms is the
# coordinator's median round time (open to close) minus esgd-sim's (every
# agent's compute one after another, no broker). Broker figures come from
# mosquitto's own $SYS counters (PUBLISH packets in and out, all bytes) over
# the whole run, start-up included.
#
# usage: bench/broker-bench.sh [--build DIR] [--agents "4 16 64 256"] [--rounds R] [--out FILE]
# Prints one JSON object per size on stdout (and into FILE, default
# results/broker-bench.jsonl); the load test's output goes to FILE.log.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build" sizes="4 16 64 256" rounds=120 out="$root/results/broker-bench.jsonl"
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --agents) sizes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --help | -h) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "broker-bench: unknown option $1" >&2; exit 2 ;;
    esac
done
build=$(cd "$build" && pwd)
export OPENBLAS_NUM_THREADS=1
: >"$out"
: >"$out.log"

for agents in $sizes; do
    echo "broker-bench: $agents agents, $rounds rounds" >&2
    log=$(ESGD_LOAD_AGENTS=$agents ESGD_TEST_KEY_AGENTS=$agents ESGD_LOAD_ROUNDS=$rounds bash "$root/tests/integration/load.sh" "$build" 2>&1) || {
        echo "$log" >>"$out.log"
        echo "broker-bench: the run with $agents agents failed; see $out.log" >&2
        exit 1
    }
    echo "$log" >>"$out.log"
    sim=$("$build/core/esgd-sim" --data "$root/data/mnist" --json --agents "$agents" --rounds "$rounds" \
        --model mlp --batch 8 --method esgd --drop 0.99 --seed 5 --eval-every 100000 2>/dev/null)
    python3 - "$agents" "$rounds" "$sim" "$log" <<'PY' | tee -a "$out"
import json, re, sys
agents, rounds, sim, log = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
def grab(pattern, cast=float):
    m = re.search(pattern, log)
    if not m:
        sys.exit(f"broker-bench: no '{pattern}' in the load test's output")
    return cast(m.group(1))
wall = grab(r"wall ([0-9.]+) s")
median = grab(r"round seconds \(open to close\): median ([0-9.]+)")
p90 = grab(r"round seconds \(open to close\): median [0-9.]+, p90 ([0-9.]+)")
overhead = grab(r"round overhead \(last update sent to next model received\): median ([0-9.]+) ms")
overhead_p90 = grab(r"round overhead \(last update sent to next model received\): median [0-9.]+ ms, p90 ([0-9.]+) ms")
pub_in = grab(r"broker publish/messages/received (\d+)", int)
pub_out = grab(r"broker publish/messages/sent (\d+)", int)
bytes_in = grab(r"broker bytes/received (\d+)", int)
bytes_out = grab(r"broker bytes/sent (\d+)", int)
sim_median = sim["round_seconds_median"]
print(json.dumps({
    "agents": agents, "rounds": rounds, "wall_seconds": wall,
    "round_ms_median": round(median * 1e3, 3), "round_ms_p90": round(p90 * 1e3, 3),
    "sim_round_ms_median": round(sim_median * 1e3, 3),
    "round_overhead_ms_median": overhead, "round_overhead_ms_p90": overhead_p90,
    "round_minus_sim_ms": round((median - sim_median) * 1e3, 3),
    "broker_publish_in": pub_in, "broker_publish_out": pub_out,
    "broker_messages_per_second": round((pub_in + pub_out) / wall),
    "broker_MB_in": round(bytes_in / 1e6, 2), "broker_MB_out": round(bytes_out / 1e6, 2),
    "broker_MBps": round((bytes_in + bytes_out) / wall / 1e6, 2),
}))
PY
done
