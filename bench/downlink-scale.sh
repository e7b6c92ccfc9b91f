#!/usr/bin/env bash
# The compressed downlink against agents: esgd-sim runs of LeNet or the MLP
# (eSGD and DGC uplink at drop 0.99) with the coordinator's --down-drop 0 (off), 0.9
# and 0.99, at 4, 16 and 64 agents, over seeds, through
# bench/paper-experiment.sh (one results folder per agents and down-drop).
# Then one table: test accuracy (mean ± sd), uplink and downlink bytes per
# agent per round, their ratio, and the accuracy change against down-drop 0.
#
# usage: bench/downlink-scale.sh [--out DIR] [--seeds "1 2 3"] [--epochs 2] [--agents "4 16 64"]
#          [--down-drops "0 0.9 0.99"] [--model lenet|mlp] [--build DIR] [--resume] [--report-only]
# Writes DIR/a<N>-dd<R>/ (paper-experiment's files) and DIR/report.md;
# default DIR results/scale/downlink-<model>.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="" seeds="1 2 3" epochs=2 agent_counts="4 16 64" down_drops="0 0.9 0.99" model=lenet
build=$root/build pass=()
while [ $# -gt 0 ]; do
    case $1 in
    --out) out=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --agents) agent_counts=$2; shift 2 ;;
    --down-drops) down_drops=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --resume | --report-only) pass+=("$1"); shift ;;
    --help | -h) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "downlink-scale: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$out" ] || out=$root/results/scale/downlink-$model
for n in $agent_counts; do
    for dd in $down_drops; do
        echo "downlink-scale: $n agents, down-drop $dd" >&2
        "$root/bench/paper-experiment.sh" --out "$out/a$n-dd$dd" --build "$build" --model "$model" --agents "$n" --epochs "$epochs" \
            --seeds "$seeds" --methods "esgd dgc" --drops 0.99 ${pass[@]+"${pass[@]}"} -- --down-drop "$dd" >/dev/null
    done
done

python3 - "$out" "$agent_counts" "$down_drops" <<'PY'
import json, math, os, sys
out, agent_counts, down_drops = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def stats(vals):
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd
rows, base = [], {}
for n in agent_counts:
    for dd in down_drops:
        runs = [json.loads(l) for l in open(os.path.join(out, f"a{n}-dd{dd}", "runs.jsonl"))]
        for method in ("esgd", "dgc"):
            rs = [r for r in runs if r["method"] == method]
            if not rs:
                continue
            acc = stats([100 * r["test_accuracy"] for r in rs])
            up = stats([r["uplink_bytes"] / (r["rounds"] * r["agents"]) for r in rs])
            down = stats([r["downlink_bytes"] / (r["rounds"] * r["agents"]) for r in rs])
            if float(dd) == 0:
                base[(n, method)] = acc[0]
            delta = acc[0] - base[(n, method)] if (n, method) in base else float("nan")
            rows.append((int(n), method, float(dd), acc, up[0], down[0], rs[0]["rounds"], len(rs), delta))
first = rows[0]
model = json.loads(open(os.path.join(out, f"a{agent_counts[0]}-dd{down_drops[0]}", "runs.jsonl")).readline())["model"]
lines = [f"# Compressed downlink: {model}, uplink drop 0.99, {first[6]} rounds at {first[0]} agents "
         f"(one epoch is 60,000 examples over all agents), {first[7]} seeds", "",
         "| agents | uplink | down-drop | test accuracy % | Δ vs down-drop 0 | uplink B/agent/round | "
         "downlink B/agent/round | down / up |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
for n, method, dd, acc, up, down, rounds, seeds, delta in rows:
    lines.append(f"| {n} | {method} | {dd:g} | {acc[0]:.2f} ± {acc[1]:.2f} | {delta:+.2f} | {up:,.0f} | {down:,.0f} | "
                 f"{down / up:.2f} |")
open(os.path.join(out, "report.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
