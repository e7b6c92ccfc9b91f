#!/usr/bin/env bash
# The local broker-based testbed: a private mosquitto on a free 127.0.0.1
# port, esgd-coordinator and N esgd-agent processes, progress on the
# terminal, and the run's results in a folder:
#   result.json   the coordinator's final JSON (same keys as esgd-sim --json)
#   rounds.csv    round, loss, participants, lr, test accuracy, bytes
#   loss.png      loss and test accuracy against round (gnuplot)
#   logs/         coordinator, agents and broker logs
# Every process it started is stopped on exit, error or Ctrl-C.
#
# usage: deploy/testbed.sh [--agents N] [--method M] [--drop R] [--epochs E] [--rounds T]
#          [--partition iid|noniid] [--seed S] [--model lenet|mlp] [--results DIR]
#          [--build DIR] [--data DIR] [-- more coordinator options]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/deploy/lib/broker.sh"

agents=4 method=esgd drop=0.875 epochs=2 rounds=0 partition=iid seed=1 model=lenet
build="$root/build" data="$root/data/mnist" results=""
extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --agents) agents=$2; shift 2 ;;
    --method) method=$2; shift 2 ;;
    --drop) drop=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --partition) partition=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --help|-h) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "testbed: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$results" ] || results="$root/results/runs/$(date -u +%Y%m%dT%H%M%SZ)-$method-$drop-${agents}a"
mkdir -p "$results/logs"
for bin in esgd-coordinator esgd-agent; do
    [ -x "$build/$( [ $bin = esgd-agent ] && echo edge-agent || echo coordinator)/$bin" ] ||
        { echo "testbed: $bin not built in $build (run scripts/setup.sh)" >&2; exit 1; }
done
coordinator_bin="$build/coordinator/esgd-coordinator"
agent_bin="$build/edge-agent/esgd-agent"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    broker_stop
}
trap cleanup EXIT
trap 'echo "testbed: interrupted" >&2; exit 130' INT TERM

broker_start "$results/logs/broker"
job="testbed-$$"
echo "testbed: mosquitto on $BROKER_URL (pid $BROKER_PID); job $job; results in $results" >&2

"$coordinator_bin" --broker "$BROKER_URL" --job "$job" --data "$data" --model "$model" --agents "$agents" \
    --method "$method" --drop "$drop" --epochs "$epochs" --rounds "$rounds" --partition "$partition" \
    --seed "$seed" --quorum "$agents" --round-timeout 30 --eval-every 50 --eval-limit 2000 \
    --csv "$results/rounds.csv" --json "${extra[@]}" \
    >"$results/result.json" 2> >(tee "$results/logs/coordinator.log" | grep --line-buffered -E "test_accuracy|error|warning" >&2) &
coordinator_pid=$!
pids+=("$coordinator_pid")
for ((i = 0; i < agents; i++)); do
    "$agent_bin" --broker "$BROKER_URL" --job "$job" --id "$i" --data "$data" \
        2>"$results/logs/agent-$i.log" &
    pids+=("$!")
done

status=0
wait "$coordinator_pid" || status=$?
if [ "$status" -ne 0 ]; then
    echo "testbed: the coordinator failed (exit $status); see $results/logs/" >&2
    exit "$status"
fi
# Agents stop by themselves on the final model; give them a moment.
for pid in "${pids[@]:1}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done

if command -v gnuplot >/dev/null; then
    gnuplot <<PLOT || echo "testbed: gnuplot failed; the CSV is still there" >&2
set terminal pngcairo size 1000,600 noenhanced
set output "$results/loss.png"
set datafile separator ","
set key autotitle columnhead
set title "$model, $agents agents, $method drop $drop ($partition)"
set xlabel "round"
set ylabel "global training loss"
set y2label "test accuracy"
set y2range [0:1]
set ytics nomirror
set y2tics
plot "$results/rounds.csv" using 1:2 with lines title "loss L_t", \
     "" using 1:5 axes x1y2 with linespoints pointtype 7 title "test accuracy"
PLOT
fi
cat "$results/result.json"
echo "testbed: results in $results" >&2
