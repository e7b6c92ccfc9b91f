#!/usr/bin/env bash
# Gateways on their own data: 3 agents, each with a local folder of its own
# size (2000, 5000 and 9000 examples: disjoint slices of MNIST's training
# set, written here), train with --shard all over a real broker; the
# coordinator holds only a test set and learns the training-set size from
# --train-samples, and trains a user-written model spec. Shown:
# - each agent loaded all of its own folder and nothing else: its log gives
#   its folder's example count, and the data fingerprint in its retained
#   status is that of its folder's bytes (computed here independently);
# - the coordinator took its epoch from --train-samples (no train split to
#   read): 1 epoch of 16000 examples is ceil(16000 / (3 x 32)) = 167 rounds;
# - the exported model, run by esgd-predict on the test folder, gives
#   exactly the coordinator's final test accuracy, well above chance.
source "$(dirname "$0")/common.sh" "$1"
predict_bin="$build/core/esgd-predict"
[ -x "$predict_bin" ] || { echo "SKIP: $predict_bin is not built"; exit 77; }
for tool in python3 mosquitto_sub; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
job=it-own-data
sizes=(2000 5000 9000)
train_samples=16000 # the sum of sizes
rounds=167          # ceil(16000 / (3 agents x batch 32)), one epoch

# Each agent's folder: a disjoint slice of the training files, in MNIST's
# names (the agent reads the train split of --data). The script prints per
# agent its example count and the fingerprint the agent must announce:
# FNV-1a 64 over the slice's pixels, then its labels (schemas/messages.md
# section 7).
python3 - "$data" "$work" "${sizes[@]}" >"$work/slices.txt" <<'PY'
import os, struct, sys
src, work, sizes = sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3:]]
with open(f"{src}/train-images-idx3-ubyte", "rb") as f:
    images = f.read()
with open(f"{src}/train-labels-idx1-ubyte", "rb") as f:
    labels = f.read()
start = 0
for agent, n in enumerate(sizes):
    pixels = images[16 + start * 784:16 + (start + n) * 784]
    classes = labels[8 + start:8 + start + n]
    folder = f"{work}/own-{agent}"
    os.mkdir(folder)
    with open(f"{folder}/train-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + pixels)
    with open(f"{folder}/train-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + classes)
    h = 0xcbf29ce484222325
    for b in pixels + classes:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    print(agent, n, h)
    start += n
PY
# The coordinator's folder holds the test split only: no train labels to
# take the epoch length from.
mkdir "$work/test-only"
ln -s "$data/t10k-images-idx3-ubyte" "$data/t10k-labels-idx1-ubyte" "$work/test-only/"
data=$work/test-only # start_coordinator's --data

start_broker
start_coordinator "$job" --agents 3 --quorum 3 --epochs 1 --train-samples "$train_samples" --method esgd \
    --drop 0.9 --seed 7 --model "conv 4 5, relu, maxpool 2, dense 32, relu, dense 10" --state-dir "$work/state"
agent_pids=()
for id in 0 1 2; do
    "$agent_bin" --broker "$BROKER_URL" --job "$job" --id "$id" --shard all --data "$work/own-$id" \
        >"$work/agent-$id.log" 2>&1 &
    agent_pids+=("$!")
    started_pids+=("$!")
done
finish_job

# Each agent trained on all of its own folder: its log names its count.
while read -r id count fingerprint; do
    grep "own data, id $id/3 with $count examples" "$work/agent-$id.log" ||
        fail "agent $id does not report its own $count examples: $(grep -m 1 'examples' "$work/agent-$id.log")"
done <"$work/slices.txt"
# ... and the data it announced is its folder's bytes: the retained status
# (state done) carries the fingerprint, decoded by the reference decoder.
while read -r id count fingerprint; do
    mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -t "esgd/$job/status/$id" -C 1 -W 5 -N >"$work/status-$id.bin" ||
        fail "no retained status of agent $id"
    # (no --public-key: PyNaCl is not needed; the coordinator checked the signatures)
    python3 "$root/schemas/decode.py" --type status "$work/status-$id.bin" >"$work/status-$id.json" \
        2>"$work/status-$id.err" || fail "the status of agent $id does not decode: $(cat "$work/status-$id.err")"
    announced=$(json_get data_fp "$work/status-$id.json")
    echo "agent $id: $count examples, data fingerprint $announced (its folder: $fingerprint)," \
        "state $(json_get state "$work/status-$id.json")"
    [ "$announced" = "$fingerprint" ] || fail "agent $id announces data $announced, its folder is $fingerprint"
done <"$work/slices.txt"
json=$work/coordinator.json
[ "$(json_get data_conflicts "$json")" = 0 ] || fail "the coordinator counted $(json_get data_conflicts "$json") data conflicts"

# The epoch came from --train-samples, and every round took all 3 agents'
# updates (quorum 3), so each folder shaped the model throughout.
[ "$(json_get rounds "$json")" = "$rounds" ] ||
    fail "the job ran $(json_get rounds "$json") rounds, expected $rounds (1 epoch of $train_samples)"
[ "$(json_get accepted "$json")" = $((3 * rounds)) ] ||
    fail "$(json_get accepted "$json") updates accepted, expected $((3 * rounds))"

# The exported model gives the coordinator's accuracy exactly: the same hits
# on the same 10000 test examples (as predict.sh).
model=$work/state/model-$job.esgd
[ -f "$model" ] || fail "no model file at $model"
predict_matches "$model" "$work/test-only"
[ "$(json_get examples "$out")" = 10000 ] || fail "esgd-predict read $(json_get examples "$out") test examples, expected 10000"
coordinator_accuracy=$(json_get test_accuracy "$json")
# Chance is 0.1; this job reaches 0.89 (seeds 1 to 5: 0.90 to 0.91).
awk -v a="$coordinator_accuracy" 'BEGIN { exit !(a > 0.8) }' ||
    fail "test accuracy $coordinator_accuracy is not above 0.8"
echo PASS
