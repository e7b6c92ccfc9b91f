#!/usr/bin/env bash
# The local broker-based testbed: a private mosquitto on a free 127.0.0.1
# port, esgd-coordinator and N esgd-agent processes, progress on the
# terminal, and the run's results in a folder:
#   result.json   "status": "finished" and the coordinator's final JSON (same
#                 keys as esgd-sim --json)
#   rounds.csv    per round (from 1): loss, participants, lr, test accuracy
#                 and how many test images it used, cumulative bytes
#   loss.png      loss (raw and smoothed) and test accuracy against round,
#                 and the cumulative bytes up and down (gnuplot)
#   model.esgd    the trained model (schemas/model-file.md), for esgd-predict
#   logs/         coordinator, agents and broker logs
# Every error and warning of the coordinator and the agents, and a progress
# line at each evaluation (with elapsed time, rounds/s and ETA), show on the
# terminal. Every process it started is stopped on exit, error or Ctrl-C. A
# run that fails or is interrupted before its first round closes leaves no
# folder; a later failure leaves result.json with "status": "failed" and the
# reason, beside the logs and the rounds it did.
#
# usage: deploy/testbed.sh [--agents N] [--method M] [--drop R] [--epochs E] [--rounds T]
#          [--partition iid|noniid] [--seed S] [--model lenet|mlp|"layer list"] [--results DIR]
#          [--build DIR] [--dataset mnist|fashion] [--data DIR] [-- more coordinator options]
# --dataset names the data set (default mnist) in result.json ("dataset"),
# the plot title and, when not mnist, the results folder
# (results/runs/<time>-<dataset>-<method>-<drop>-<N>a); its default --data is
# data/mnist, data/fashion-mnist (scripts/setup.sh --dataset fashion) or
# data/<dataset>.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/deploy/lib/broker.sh"

agents=4 method=esgd drop=0.875 epochs=2 rounds=0 partition=iid seed=1 model=lenet
build="$root/build" dataset=mnist data="" results=""
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
    --dataset) dataset=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --help|-h) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "testbed: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $dataset =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "testbed: bad --dataset '$dataset' (letters, digits, _ . -)" >&2; exit 2; }
if [ -z "$data" ]; then
    case $dataset in
    fashion) data="$root/data/fashion-mnist" ;;
    *) data="$root/data/$dataset" ;;
    esac
fi
if [ -z "$results" ]; then
    label=$method-$drop-${agents}a
    [ "$dataset" = mnist ] || label=$dataset-$label
    results="$root/results/runs/$(date -u +%Y%m%dT%H%M%SZ)-$label"
fi
for bin in coordinator/esgd-coordinator edge-agent/esgd-agent core/esgd-keygen; do
    [ -x "$build/$bin" ] || { echo "testbed: ${bin#*/} not built in $build (run scripts/setup.sh)" >&2; exit 1; }
done
[ -e "$results/result.json" ] && { echo "testbed: $results already holds a run; give another --results" >&2; exit 2; }
mkdir -p "$results/logs"
coordinator_bin="$build/coordinator/esgd-coordinator"
agent_bin="$build/edge-agent/esgd-agent"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

pids=()
finished=0 keys=""
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    broker_stop
    rm -rf "$keys"
    ((finished)) || record_failure
}
# What a failed or interrupted run leaves: nothing when no round closed,
# else the logs and rounds.csv with a result.json that says why it stopped.
reason="the testbed stopped before the coordinator finished"
record_failure() {
    if [ ! -f "$results/rounds.csv" ] || [ "$(wc -l <"$results/rounds.csv")" -le 1 ]; then
        rm -rf "$results"
        echo "testbed: no round completed; removed $results" >&2
    else
        printf '{"status": "failed", "dataset": "%s", "reason": "%s", "rounds_done": %s}\n' "$dataset" \
            "$(sed 's/\\/\\\\/g; s/"/\\"/g' <<<"$reason")" \
            "$(tail -n 1 "$results/rounds.csv" | cut -d, -f1)" >"$results/result.json"
        echo "testbed: failed; logs, rounds.csv and result.json (status failed) in $results" >&2
    fi
}
trap cleanup EXIT
trap 'reason="interrupted"; echo "testbed: interrupted" >&2; exit 130' INT TERM

# shown FILE PREFIX: keeps FILE and shows its errors, warnings, usage
# messages and evaluation progress on the terminal.
shown() {
    tee "$1" | grep --line-buffered -E "error: |warning: |^esgd-[a-z]+: |^round .*test_accuracy" |
        sed -u "s/^/$2/" >&2
}

# Every message is signed: a fresh key pair per process, for this run only.
keys=$(mktemp -d "${TMPDIR:-/tmp}/esgd-testbed-keys.XXXXXX")
"$build/core/esgd-keygen" --dir "$keys" --agents "$agents" 2>/dev/null ||
    { echo "testbed: esgd-keygen failed" >&2; exit 1; }
broker_start "$results/logs/broker"
job="testbed-$$"
echo "testbed: mosquitto on $BROKER_URL (pid $BROKER_PID); job $job; data set $dataset ($data); results in $results" >&2

"$coordinator_bin" --broker "$BROKER_URL" --job "$job" --data "$data" --model "$model" --agents "$agents" \
    --method "$method" --drop "$drop" --epochs "$epochs" --rounds "$rounds" --partition "$partition" \
    --seed "$seed" --keys "$keys" --quorum "$agents" --round-timeout 30 --eval-every 50 --eval-limit 2000 \
    --csv "$results/rounds.csv" --export "$results/model.esgd" --json "${extra[@]}" \
    >"$results/logs/coordinator.json" 2> >(shown "$results/logs/coordinator.log" "") &
coordinator_pid=$!
pids+=("$coordinator_pid")
for ((i = 0; i < agents; i++)); do
    "$agent_bin" --broker "$BROKER_URL" --job "$job" --id "$i" --data "$data" --keys "$keys" \
        2> >(shown "$results/logs/agent-$i.log" "agent $i: ") &
    pids+=("$!")
done

status=0
wait "$coordinator_pid" || status=$?
if [ "$status" -ne 0 ]; then
    sleep 0.3 # lets the log's tee take the coordinator's last lines
    reason="the coordinator failed (exit $status): $(grep -E 'error: |^esgd-coordinator: ' \
        "$results/logs/coordinator.log" | tail -n 1 | sed 's/^.*error: //; s/^esgd-coordinator: //')"
    echo "testbed: $reason" >&2
    exit "$status"
fi
sed "s/^{/{\"status\": \"finished\", \"dataset\": \"$dataset\", /" "$results/logs/coordinator.json" >"$results/result.json"
finished=1
# Agents stop by themselves on the final model; give them a moment.
for pid in "${pids[@]:1}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done

if command -v gnuplot >/dev/null; then
    # How many test images the periodic and the final accuracy used (the
    # CSV's test_images column), for the axis label.
    images=$(awk -F, 'NR > 1 && $6 != "" { n[$6]++; order[++k] = $6 }
        END { if (k) printf "%s", order[1]; if (k && order[k] != order[1]) printf ", last %s", order[k] }' \
        "$results/rounds.csv")
    # The loss is smoothed over about a fiftieth of the run (at least 5 rounds).
    span=$(awk 'END { n = int((NR - 1) / 50); print n < 5 ? 5 : n }' "$results/rounds.csv")
    gnuplot <<PLOT || echo "testbed: gnuplot failed; the CSV is still there" >&2
set terminal pngcairo size 1100,800 noenhanced
set output "$results/loss.png"
set datafile separator ","
set datafile missing ""
set multiplot layout 2,1 title "$dataset, $model, $agents agents, $method drop $drop ($partition), seed $seed"
set key outside right top
set grid
set xlabel "round"
set ylabel "global training loss L_t"
set y2label "test accuracy ($images test images)"
set ytics nomirror
set y2tics
set y2range [*:*]
ema = NaN
alpha = 2.0 / ($span + 1)
smooth(x) = (ema = (ema == ema) ? (1 - alpha) * ema + alpha * x : x)
plot "$results/rounds.csv" using 1:2 with lines linecolor rgb "#b0c4de" title "loss", \
     "" using 1:(valid(2) ? smooth(\$2) : ema) with lines linewidth 2 linecolor rgb "#1f4e9c" title "loss (EMA, $span rounds)", \
     "" using 1:5 axes x1y2 with linespoints pointtype 7 linecolor rgb "#c0392b" title "test accuracy"
set ylabel "cumulative MB"
unset y2label
unset y2tics
plot "$results/rounds.csv" using 1:(\$7 / 1e6) with lines linewidth 2 title "up (updates)", \
     "" using 1:(\$8 / 1e6) with lines linewidth 2 title "down (model to agents)", \
     "" using 1:(\$9 / 1e6) with lines linewidth 2 dashtype 2 title "retained full model"
unset multiplot
PLOT
fi
cat "$results/result.json"
echo "testbed: results in $results; the model: $build/core/esgd-predict --model $results/model.esgd --data $data" >&2
