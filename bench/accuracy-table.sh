#!/usr/bin/env bash
# The accuracy table of issue 2: LeNet, 4 agents, IID, batch 32, 2 epochs,
# lr 0.1 halved per epoch, for dense, eSGD, top-k and random-k at drop 0.5,
# 0.75, 0.875, 0.99, 0.999, and threshold SGD at a few fixed thresholds
# (its drop ratio is whatever the threshold gives). Runs esgd-sim; writes
# one JSON line per run to OUT.jsonl and a markdown table to stdout.
# usage: bench/accuracy-table.sh [BUILD_DIR] [OUT_PREFIX] [extra esgd-sim flags]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
out=${2:-$root/results/accuracy}
shift 2 || true
export OPENBLAS_NUM_THREADS=1
sim="$build/core/esgd-sim"
common=(--data "$root/data/mnist" --model lenet --agents 4 --partition iid --batch 32 --epochs 2 --lr 0.1
        --lr-decay 0.5 --seed 1 --json "$@")
drops=(0.5 0.75 0.875 0.99 0.999)
: >"$out.jsonl"
run() { "$sim" "${common[@]}" "$@" 2>/dev/null | tee -a "$out.jsonl"; }
get() { grep -o "\"$1\": *[^,}]*" | sed 's/^[^:]*: *//; s/"//g'; }

dense=$(run --method dense)
printf '| method | %s |\n| --- |%s\n' "$(printf '%s | ' "${drops[@]}" | sed 's/ | $//')" \
    "$(printf ' --- |%.0s' "${drops[@]}")"
acc=$(echo "$dense" | get test_accuracy)
row="| dense (std SGD) |"
for drop in "${drops[@]}"; do row+=" $acc (x1, drop 0) |"; done
echo "$row"
for method in esgd topk randk; do
    row="| $method |"
    for drop in "${drops[@]}"; do
        line=$(run --method "$method" --drop "$drop")
        row+=" $(echo "$line" | get test_accuracy) (x$(echo "$line" | get compression)) |"
    done
    echo "$row"
done
echo
echo "| threshold SGD, threshold | test accuracy | compression |"
echo "| --- | --- | --- |"
for threshold in 0.001 0.003 0.01 0.03; do
    line=$(run --method threshold --threshold "$threshold")
    echo "| $threshold | $(echo "$line" | get test_accuracy) | x$(echo "$line" | get compression) |"
done
