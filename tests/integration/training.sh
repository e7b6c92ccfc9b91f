#!/usr/bin/env bash
# A short job over a real broker: 3 agents train LeNet with eSGD above a
# floor; every message on the broker decodes with the schema (esgd-watch
# subscribes to the whole job); the bytes the broker carried equal what the
# coordinator counted; the last CSV row and the last progress line carry
# the same round and byte counts as the final JSON. Every byte the
# coordinator put on the broker (models, retained models, the
# configuration, the lease, models sent to one agent) is in its
# published_bytes.
source "$(dirname "$0")/common.sh" "$1"
start_broker
job=it-training
start_watch "$job"
start_coordinator "$job" --agents 3 --quorum 3 --rounds 150 --method esgd --drop 0.9 --seed 3 --eval-every 1000 \
    --csv "$work/rounds.csv"
start_agents "$job" 3
finish_job
wait_pid "$watch_pid" 60 || fail "esgd-watch found invalid messages: $(cat "$work/watch.json")"

json=$work/coordinator.json
accuracy=$(json_get test_accuracy "$json")
echo "test accuracy after 150 rounds: $accuracy"
awk -v a="$accuracy" 'BEGIN { exit !(a >= 0.80) }' || fail "accuracy $accuracy below the floor 0.80"
[ "$(json_get rounds "$json")" = 150 ] || fail "ran $(json_get rounds "$json") rounds, expected 150"
[ "$(json_get accepted "$json")" = 450 ] || fail "accepted $(json_get accepted "$json") updates, expected 450"
[ "$(json_get rejected "$json")" = 0 ] || fail "some updates were rejected"

# esgd-watch saw exactly the bytes the coordinator counted.
watched_update_bytes=$(grep -o '"update": {[^}]*}' "$work/watch.json" | grep -o '"bytes": [0-9]*' | grep -o '[0-9]*$')
watched_model_bytes=$(grep -o '"round_model": {[^}]*}' "$work/watch.json" | grep -o '"bytes": [0-9]*' | grep -o '[0-9]*$')
watched_retained_bytes=$(grep -o '"latest_model": {[^}]*}' "$work/watch.json" | grep -o '"bytes": [0-9]*' | grep -o '[0-9]*$')
echo "uplink: coordinator $(json_get uplink_bytes "$json"), broker $watched_update_bytes"
echo "broadcast: coordinator $(json_get broadcast_bytes "$json"), broker $watched_model_bytes"
[ "$watched_update_bytes" = "$(json_get uplink_bytes "$json")" ] || fail "update bytes differ"
[ "$watched_model_bytes" = "$(json_get broadcast_bytes "$json")" ] || fail "model bytes differ"
echo "retained full models: coordinator $(json_get retained_model_bytes "$json"), broker $watched_retained_bytes"
[ "$watched_retained_bytes" = "$(json_get retained_model_bytes "$json")" ] || fail "retained model bytes differ"
watched_bytes() { # watched_bytes KIND: bytes esgd-watch saw on the topics of KIND
    grep -o "\"$1\": {[^}]*}" "$work/watch.json" | grep -o '"bytes": [0-9]*' | grep -o '[0-9]*$'
}
watched_published=$(($(watched_bytes config) + $(watched_bytes latest_model) + $(watched_bytes round_model) +
    $(watched_bytes agent_model) + $(watched_bytes agent_config) + $(watched_bytes lease)))
echo "published by the coordinator: counted $(json_get published_bytes "$json"), broker $watched_published" \
    "(of which to single agents: counted $(json_get sync_model_bytes "$json"), broker $(watched_bytes agent_model))"
[ "$watched_published" = "$(json_get published_bytes "$json")" ] || fail "published bytes differ"
[ "$(watched_bytes agent_model)" = "$(json_get sync_model_bytes "$json")" ] || fail "bytes sent to single agents differ"
[ "$(json_get invalid "$work/watch.json")" = 0 ] || fail "invalid messages on the broker"

head -n 1 "$work/rounds.csv" | grep -qx \
    'round,loss,participants,lr,test_accuracy,test_images,uplink_bytes,downlink_bytes,retained_bytes,sync_bytes,published_bytes' ||
    fail "CSV header: $(head -n 1 "$work/rounds.csv")"
[ "$(sed -n 2p "$work/rounds.csv" | cut -d, -f1)" = 1 ] || fail "the CSV does not number rounds from 1"
IFS=, read -r round _ _ _ accuracy images up down retained sync published <<<"$(tail -n 1 "$work/rounds.csv")"
echo "last CSV row: round $round accuracy $accuracy on $images images, up $up down $down retained $retained"
[ "$round" = 150 ] && [ "$images" = 10000 ] || fail "last CSV row: round $round, $images test images"
[ "$accuracy" = "$(json_get test_accuracy "$json")" ] || fail "CSV accuracy $accuracy differs from the JSON's"
[ "$up" = "$(json_get uplink_bytes "$json")" ] && [ "$down" = "$(json_get downlink_bytes "$json")" ] &&
    [ "$retained" = "$(json_get retained_model_bytes "$json")" ] && [ "$sync" = "$(json_get sync_model_bytes "$json")" ] &&
    [ "$published" = "$(json_get published_bytes "$json")" ] || fail "last CSV row's bytes differ from the JSON's"
progress=$(grep '^round ' "$work/coordinator.log" | tail -n 1)
echo "last progress line: $progress"
mb() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e6 }'; }
grep -q "^round 150/150 .* up $(mb "$up") MB down $(mb "$down") MB elapsed [0-9:]* [0-9.]* rounds/s eta 0:00$" \
    <<<"$progress" || fail "the last progress line does not match the JSON"
echo PASS
