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
start_agents "$job" 3
finish_job
same_values "$work/sim.json" "$work/coordinator.json" model_fnv1a64 uplink_bytes broadcast_bytes final_loss \
    test_accuracy accepted
echo PASS
