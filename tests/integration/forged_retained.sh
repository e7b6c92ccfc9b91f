#!/usr/bin/env bash
# Forged retained messages on an open broker: after the coordinator has
# published its configuration, an attacker without keys replaces the job's
# retained configuration and retained model (and sends a forged "done"
# model). Agents started afterwards find only the forgeries: they ignore
# them (bad signature), wait, and get the real configuration and model when
# the coordinator, seeing round 0 make no progress, publishes them again.
# The job finishes with exactly the simulator's model.
source "$(dirname "$0")/common.sh" "$1"
command -v mosquitto_pub >/dev/null || { echo "SKIP: mosquitto_pub (mosquitto-clients) not installed"; exit 77; }
job=it-forged
settings=(--job "$job" --agents 3 --rounds 30 --method esgd --drop 0.9 --seed 41 --model mlp --eval-every 1000)
"$sim_bin" --data "$data" --json "${settings[@]}" >"$work/sim.json" 2>"$work/sim.log" || fail "esgd-sim failed"
start_broker
start_coordinator "$job" "${settings[@]}" --quorum 3 --republish-after 2
wait_for_line "job $job run" "$work/coordinator.log" 30
sleep 0.5

# The forgeries: well-formed bodies of every kind, each with 64 bytes of
# "signature" that no key made.
forge() { printf '%s' "$1"; head -c 64 /dev/urandom; }
forged_config=$(mktemp "$work/config.XXXXXX")
forge "$(printf '\x84\xa1v\x02\xa4type\xa6config\xa3job\xa9it-forged\xa3run\x01')" >"$forged_config"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -r -t "esgd/$job/config" -f "$forged_config" ||
    fail "could not publish the forged configuration"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -r -t "esgd/$job/model" -f "$forged_config" ||
    fail "could not publish the forged retained model"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "esgd/$job/round/0/model" -f "$forged_config" ||
    fail "could not publish the forged round model"

start_agents "$job" 3
finish_job
for id in 0 1 2; do
    grep -q "ignoring a configuration .*(signature)" "$work/agent-$id.log" ||
        fail "agent $id did not report the forged configuration"
done
grep -q "publishing the model again" "$work/coordinator.log" || fail "the coordinator never published again"
same_values "$work/sim.json" "$work/coordinator.json" model_fnv1a64 accepted
echo PASS
