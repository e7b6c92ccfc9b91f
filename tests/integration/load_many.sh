#!/usr/bin/env bash
# Many agents in one process: 200 simulated agents in one esgd-load process,
# each its own MQTT client, against one mosquitto and a real coordinator for
# 10 rounds (MLP, eSGD drop 0.99, quorum = every agent). Checks that the
# coordinator accepted every agent's update of every round (accepted =
# agents x rounds) and rejected none, that every round closed with all 200,
# that esgd-load saw the job finish for every agent without a failure, and
# that its re-sent updates are exactly the repeats the coordinator counted
# (duplicate or late). bench/load-scale.sh measures the same at 64 to 4,000.
export ESGD_TEST_KEY_AGENTS=200 # before common.sh, which makes the keys
source "$(dirname "$0")/common.sh" "$1"
agents=200
rounds=10
job=it-load-many
load_bin="$build/mqtt/esgd-load"
[ -x "$load_bin" ] || fail "$load_bin is missing"

start_broker
# Every agent connected before the coordinator starts, as bench/load-scale.sh
# does: the first round then carries no connections.
"$load_bin" --broker "$BROKER_URL" --job "$job" --count "$agents" --json --timeout 120 \
    >"$work/load.json" 2>"$work/load.log" &
load_pid=$!
started_pids+=("$load_pid")
wait_for_line "all $agents agents connected" "$work/load.log" 60
start_coordinator "$job" --agents "$agents" --quorum "$agents" --round-timeout 120 --rounds "$rounds" \
    --model mlp --batch 8 --method esgd --drop 0.99 --seed 5 --eval-every 100000
wait_pid "$coordinator_pid" 120 || fail "coordinator exited with $?"
wait_pid "$load_pid" 60 || fail "esgd-load exited with $?"

json=$work/coordinator.json
load=$work/load.json
for key in rounds accepted rejected duplicate late early conflicting data_conflicts; do
    echo "coordinator $key: $(json_get "$key" "$json")"
done
[ "$(json_get rounds "$json")" = "$rounds" ] || fail "ran $(json_get rounds "$json") rounds, expected $rounds"
[ "$(json_get accepted "$json")" = $((agents * rounds)) ] ||
    fail "accepted $(json_get accepted "$json") updates, expected $((agents * rounds))"
for key in rejected early conflicting data_conflicts; do
    [ "$(json_get "$key" "$json")" = 0 ] || fail "coordinator $key: $(json_get "$key" "$json")"
done
! grep -q "are being dropped" "$work/broker/mosquitto.log" ||
    fail "the broker dropped messages: $(grep -m 1 "are being dropped" "$work/broker/mosquitto.log")"
closed=$(grep -c "^round [0-9]*/$rounds .* participants $agents " "$work/coordinator.log" || true)
[ "$closed" = "$rounds" ] || fail "$closed of $rounds rounds closed with all $agents agents"

# esgd-load's own account: every agent finished, one new update per agent
# and round, nothing failed or refused.
for key in finished updates_sent updates_resent publish_failures subscribe_failures connect_failures \
    connections_lost agents_refused events_lost; do
    echo "esgd-load $key: $(json_get "$key" "$load")"
done
[ "$(json_get status "$load")" = finished ] || fail "esgd-load status $(json_get status "$load")"
[ "$(json_get finished "$load")" = "$agents" ] || fail "$(json_get finished "$load") of $agents agents finished"
[ "$(json_get updates_sent "$load")" = $((agents * rounds)) ] ||
    fail "esgd-load sent $(json_get updates_sent "$load") new updates, expected $((agents * rounds))"
for key in publish_failures subscribe_failures connect_failures connections_lost agents_refused events_lost; do
    [ "$(json_get "$key" "$load")" = 0 ] || fail "esgd-load $key: $(json_get "$key" "$load")"
done
! grep -q "warning:\|error:" "$work/load.log" || fail "esgd-load: $(grep -m 3 "warning:\|error:" "$work/load.log")"
# A simulated agent re-sends the same bytes when a model of the round it
# answered comes again (the retained and the round's copy at the start);
# the coordinator counts each once, as duplicate or as late.
resent=$(json_get updates_resent "$load")
repeats=$(($(json_get duplicate "$json") + $(json_get late "$json")))
[ "$resent" = "$repeats" ] || fail "esgd-load re-sent $resent updates, the coordinator counted $repeats repeats"
grep "summary" "$work/load.log" | sed 's/^[^ ]* esgd-load //'
echo PASS
