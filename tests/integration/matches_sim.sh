#!/usr/bin/env bash
# Same seed and settings, every agent reporting every round: the MQTT run
# ends with exactly the model esgd-sim produces (same round functions, and
# updates summed in agent order), and the same update bytes.
source "$(dirname "$0")/common.sh" "$1"
job=it-matches
settings=(--job "$job" --agents 3 --rounds 40 --method esgd --drop 0.95 --seed 11 --model lenet --eval-every 1000)
"$sim_bin" --data "$data" --json "${settings[@]}" >"$work/sim.json" 2>"$work/sim.log" || fail "esgd-sim failed"

start_broker
start_coordinator "$job" "${settings[@]}" --quorum 3
agent_pids=()
for id in 0 1 2; do
    start_agent "$job" "$id"
    agent_pids+=("$last_pid")
done
wait_pid "$coordinator_pid" 600 || fail "coordinator exited with $?"
for pid in "${agent_pids[@]}"; do wait_pid "$pid" 60 || fail "an agent exited with $?"; done

for key in model_fnv1a64 uplink_bytes broadcast_bytes final_loss test_accuracy accepted; do
    sim=$(json_get "$key" "$work/sim.json")
    mqtt=$(json_get "$key" "$work/coordinator.json")
    echo "$key: esgd-sim $sim, MQTT $mqtt"
    [ -n "$sim" ] && [ "$sim" = "$mqtt" ] || fail "$key differs between esgd-sim and the MQTT run"
done
echo PASS
