#!/usr/bin/env bash
# A conv1d model learns a signal classification task that came in through
# the real import path: make_signals.py writes 3-channel time series with a
# label column (4 classes: slow sine, fast sine, square wave, noise; each
# channel with its own amplitude, phase and noise), esgd-import windows
# cuts them into 3x64 windows, and esgd-sim trains "conv1d 8 5, relu,
# maxpool 2, conv1d 16 5, relu, maxpool 2, dense 4" with eSGD on 4 agents.
# The test accuracy must reach 0.85, where chance is 0.25 (correct runs
# give 0.95 to 0.99 across data and training seeds). Needs no broker and
# no MNIST.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
needs_mnist=0
source "$here/common.sh" "$1"
import_bin=$build/core/esgd-import
for tool in "$import_bin" "$sim_bin"; do
    [ -x "$tool" ] || { echo "SKIP: $tool is not built"; exit 77; }
done
command -v python3 >/dev/null || { echo "SKIP: python3 not found"; exit 77; }

window=64 seed=1 bound=0.85
# Segments are whole multiples of the window, so test windows at a stride
# of one window never straddle two classes and every test label is honest;
# training windows overlap (stride 16) and some straddle, as real data would.
python3 "$here/make_signals.py" "$work/train.csv" 40960 "$window" 1 || fail "make_signals.py (train) exited with $?"
python3 "$here/make_signals.py" "$work/test.csv" 25600 "$window" 2 || fail "make_signals.py (test) exited with $?"

"$import_bin" windows --input "$work/train.csv" --window "$window" --stride 16 --label label --out "$work/data" \
    2>>"$work/import.log" || fail "esgd-import windows (train) exited with $?"
# The test series, normalised as the training series was, as the test split.
cp "$work/data/normalisation.csv" "$work/train-normalisation.csv"
"$import_bin" windows --input "$work/test.csv" --window "$window" --label label --out "$work/data" --split test \
    --norm "$work/train-normalisation.csv" 2>>"$work/import.log" || fail "esgd-import windows (test) exited with $?"
cmp -s "$work/data/normalisation.csv" "$work/train-normalisation.csv" ||
    fail "the test import did not keep the training normalisation"

# A labels IDX is an 8-byte header and one byte a window: (steps - W) / S + 1.
train_n=$(($(stat -c %s "$work/data/train-labels.idx") - 8))
test_n=$(($(stat -c %s "$work/data/test-labels.idx") - 8))
echo "windows: $train_n train, $test_n test"
[ "$train_n" -eq $(((40960 - window) / 16 + 1)) ] || fail "$train_n training windows, expected $(((40960 - window) / 16 + 1))"
[ "$test_n" -eq $((25600 / window)) ] || fail "$test_n test windows, expected $((25600 / window))"
# The bound means something only if no single class comes near it.
majority=$(python3 -c 'import sys, collections
d = open(sys.argv[1], "rb").read()[8:]
print("%.4f" % (max(collections.Counter(d).values()) / len(d)))' "$work/data/test-labels.idx")
echo "largest test class: $majority of the windows"
awk -v m="$majority" 'BEGIN { exit !(m < 0.5) }' || fail "one class is $majority of the test set"

"$sim_bin" --data "$work/data" --model "conv1d 8 5, relu, maxpool 2, conv1d 16 5, relu, maxpool 2, dense 4" \
    --input "3x$window" --classes 4 --agents 4 --batch 16 --lr 0.1 --lr-schedule cosine --epochs 20 \
    --seed "$seed" --json >"$work/sim.json" 2>"$work/sim.log" || fail "esgd-sim exited with $?"
accuracy=$(grep -o '"test_accuracy": *[^,}]*' "$work/sim.json" | sed 's/^[^:]*: *//')
echo "test accuracy $accuracy (bound $bound, chance 0.25)"
[ -n "$accuracy" ] || fail "no test_accuracy in esgd-sim's JSON"
awk -v a="$accuracy" -v b="$bound" 'BEGIN { exit !(a >= b) }' || fail "test accuracy $accuracy < $bound"
echo "PASS"
