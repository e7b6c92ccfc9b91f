#!/usr/bin/env bash
# The benchmarks (never part of the tests): the core's speed (esgd-bench:
# training, sparsifier cost at d = 61,706 / 1e6 / 1e7, wire bytes per
# coordinate, codec, aggregation, memory bandwidth) and the system through
# mosquitto on loopback (bench/broker-bench.sh: 4, 8, 16, 64, 256 agents), the
# peak resident set of an agent training LeNet (bench/agent-memory.sh), and
# many agents in one process (bench/load-scale.sh: 4 to 1,000 agents, with the
# downlink uncompressed and at --down-drop 0.99: round overhead, close time,
# bytes per agent, retained-model share).
# Installs what is missing and builds first, like scripts/run.sh. Prints one
# JSON object, with the machine it ran on, and writes it to results/bench.json.
#
# usage: scripts/bench.sh [--quick]   (--quick: fewer repeats, 4 and 16 agents,
#                                      16 and 256 simulated agents)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
quick=()
sizes="4 8 16 64 256" rounds=120 load_sizes="4 16 64 256 1000"
case ${1:-} in
"") ;;
--quick) quick=(--quick) sizes="4 16" rounds=40 load_sizes="16 256" ;;
--help | -h) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
esac
"$root/scripts/setup.sh" "$root/build" >&2
export OPENBLAS_NUM_THREADS=1
echo "bench: esgd-bench ${quick[*]}" >&2
"$root/build/core/esgd-bench" "${quick[@]}" >"$root/results/esgd-bench.json"
"$root/bench/broker-bench.sh" --build "$root/build" --agents "$sizes" --rounds "$rounds" \
    --out "$root/results/broker-bench.jsonl" >/dev/null
echo "bench: agent memory" >&2
"$root/bench/agent-memory.sh" --build "$root/build" >"$root/results/agent-memory.json"
# LeNet training beside PyTorch 1.13 (skipped when python3-torch is missing)
echo "bench: LeNet vs PyTorch" >&2
"$root/bench/vs-pytorch.sh" --build "$root/build" --repeats "$([ ${#quick[@]} -gt 0 ] && echo 1 || echo 3)" \
    >"$root/results/vs-pytorch.json" || echo "bench: vs-pytorch skipped or failed (exit $?)" >&2
for down_drop in 0 0.99; do
    echo "bench: esgd-load, $load_sizes agents, --down-drop $down_drop" >&2
    "$root/bench/load-scale.sh" --build "$root/build" --agents "$load_sizes" --rounds 40 \
        --out "$root/results/load-scale-dd$down_drop.jsonl" -- --down-drop "$down_drop" >/dev/null
done

python3 - "$root" <<'PY' | tee "$root/results/bench.json"
import datetime, json, os, platform, subprocess, sys
root = sys.argv[1]
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
cpu = next((l.split(":", 1)[1].strip() for l in run("lscpu").splitlines() if l.startswith("Model name")), "?")
mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
load = os.getloadavg()[0]
machine = {"cpu": cpu, "cores": os.cpu_count(), "memory_MiB": mem, "kernel": platform.release(),
           "compiler": (run("cc", "--version").splitlines() or ["?"])[0],
           "load_average_1min_at_end": round(load, 2),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
core = json.load(open(os.path.join(root, "results/esgd-bench.json")))
broker = [json.loads(l) for l in open(os.path.join(root, "results/broker-bench.jsonl"))]
memory = json.load(open(os.path.join(root, "results/agent-memory.json")))
load = [json.loads(l) for dd in ("0", "0.99") for l in open(os.path.join(root, f"results/load-scale-dd{dd}.jsonl"))
        if l.strip()]
vs_path = os.path.join(root, "results/vs-pytorch.json")
try:
    vs_pytorch = json.load(open(vs_path))
except (OSError, ValueError):
    vs_pytorch = None  # python3-torch missing: the run was skipped
print(json.dumps({"machine": machine, "core": core, "broker": broker, "memory": memory, "load": load,
                  "vs_pytorch": vs_pytorch}, indent=1))
PY
"$root/bench/bench-report.py" "$root/results/bench.json" >"$root/results/bench.md"
echo "bench: tables in results/bench.md" >&2
