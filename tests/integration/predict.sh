#!/usr/bin/env bash
# The trained model, used: a short job over a real broker (3 agents, a small
# user spec) exports its model to the state folder's default path, and
# esgd-predict on that file and the test set finds exactly the coordinator's
# final test accuracy: the same hits as its JSON (test_correct) and the very
# float stored in the file. A damaged
# copy of the file is refused.
source "$(dirname "$0")/common.sh" "$1"
predict_bin="$build/core/esgd-predict"
[ -x "$predict_bin" ] || { echo "SKIP: $predict_bin is not built"; exit 77; }
start_broker
job=it-predict
# A normalisation as esgd-import writes it, one pair per image row (the
# input's first axis), stored in the file as it is.
{
    echo feature,mean,std
    for ((i = 0; i < 28; i++)); do echo "row$i,0.1307,0.3081"; done
} >"$work/normalisation.csv"
start_coordinator "$job" --agents 3 --quorum 3 --rounds 30 --method esgd --drop 0.9 --seed 5 --eval-every 1000 \
    --model "conv 4 5, relu, maxpool 2, dense 10" --state-dir "$work/state" --normalisation "$work/normalisation.csv"
start_agents "$job" 3
finish_job

model=$work/state/model-$job.esgd
[ -f "$model" ] || fail "no model file at $model"
grep -q "job $job finished: .* model $model;" "$work/coordinator.log" ||
    fail "the final log line does not name $model: $(grep finished "$work/coordinator.log")"
predict_matches "$model" "$data" --predictions "$work/predictions.csv"
cat "$work/predict.log"
json=$work/coordinator.json
coordinator_accuracy=$(json_get test_accuracy "$json")
[ "$(json_get examples "$out")" = 10000 ] || fail "esgd-predict read $(json_get examples "$out") test examples, expected 10000"
echo "accuracy stored in the file: $(json_get file_test_accuracy "$out")"
[ "$(json_get test_accuracy "$out")" = "$(json_get file_test_accuracy "$out")" ] &&
    [ "$(json_get equals_file_accuracy "$out")" = true ] ||
    fail "esgd-predict's accuracy differs from the coordinator's float in the file"
[ "$(awk -v a="$(json_get test_accuracy "$out")" 'BEGIN { printf "%.4f", a }')" = "$coordinator_accuracy" ] ||
    fail "esgd-predict's accuracy does not round to the coordinator's"
[ "$(json_get normalisation_features "$out")" = 28 ] || fail "the file does not carry the 28 normalisation pairs"
[ "$(json_get round "$out")" = 29 ] || fail "the file holds round $(json_get round "$out"), expected 29 (the last closed)"
echo "latency per example: $(json_get latency_batch_us "$out") us in batches of $(json_get batch "$out")," \
    "$(json_get latency_single_us "$out") us one at a time ($(json_get single_examples "$out") examples)"

# The predictions CSV: a header, one row per example, the same hits.
head -n 1 "$work/predictions.csv" | grep -qx 'index,label,predicted,p_0,p_1,p_2,p_3,p_4,p_5,p_6,p_7,p_8,p_9' ||
    fail "predictions CSV header: $(head -n 1 "$work/predictions.csv")"
[ "$(($(wc -l <"$work/predictions.csv") - 1))" = 10000 ] || fail "the predictions CSV does not hold 10000 rows"
csv_correct=$(awk -F, 'NR > 1 && $2 == $3 { n++ } END { print n + 0 }' "$work/predictions.csv")
[ "$csv_correct" = "$correct" ] || fail "the predictions CSV has $csv_correct hits, the JSON $correct"

# A damaged copy: one byte changed in the middle.
cp "$model" "$work/damaged.esgd"
size=$(stat -c %s "$model")
byte=$(od -An -tu1 -j $((size / 2)) -N 1 "$model" | tr -d ' ')
printf "\\x$(printf %02x $((byte ^ 0xff)))" | dd of="$work/damaged.esgd" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
cmp -s "$model" "$work/damaged.esgd" && fail "the copy was not damaged"
rc=0
"$predict_bin" --model "$work/damaged.esgd" --data "$data" >/dev/null 2>"$work/damaged.log" || rc=$?
[ "$rc" = 1 ] && grep -q "damaged.esgd.*checksum" "$work/damaged.log" ||
    fail "a damaged model file gave exit $rc: $(cat "$work/damaged.log")"
echo PASS
