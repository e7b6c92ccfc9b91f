#!/usr/bin/env bash
# The broker loses everything, several times in one job: mosquitto is
# killed (SIGKILL) at random rounds and started again on the same port with
# persistence off, so every retained message, session and queued message is
# gone each time. The coordinator publishes its configuration and model
# again when it reconnects (and whenever a round makes no progress), agents
# ask for the model again and re-send their answers; with quorum = all, the
# job must end with exactly the simulator's model.
# (A Paho client that keeps sending a malformed packet after such a kill is
# replaced by the link: mqtt_link.c, reset_client.)
source "$(dirname "$0")/common.sh" "$1"
job=it-broker-loss
rounds=240
kills=${ESGD_BROKER_KILLS:-4}
settings=(--job "$job" --agents 3 --rounds "$rounds" --method esgd --drop 0.9 --seed 13 --model mlp --eval-every 1000)
"$sim_bin" --data "$data" --json "${settings[@]}" >"$work/sim.json" 2>"$work/sim.log" || fail "esgd-sim failed"

start_broker
start_coordinator "$job" "${settings[@]}" --quorum 3 --round-timeout 600 --republish-after 2
start_agents "$job" 3
# Kill rounds: random, increasing, well inside the job.
at=0
for ((k = 1; k <= kills; k++)); do
    at=$((at + 20 + RANDOM % (rounds / (kills + 1) - 20)))
    wait_for_line "^round $at/" "$work/coordinator.log" 180
    kill -9 "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
    echo "kill $k: broker killed after round $at"
    sleep 0.$((RANDOM % 9 + 1))
    broker_restart || fail "the broker did not come back"
done
finish_job
echo "accepted $(json_get accepted "$work/coordinator.json"), duplicates $(json_get duplicate "$work/coordinator.json"), late $(json_get late "$work/coordinator.json")"
same_values "$work/sim.json" "$work/coordinator.json" model_fnv1a64 accepted
grep -q "publishing the model again\|reconnected" "$work/coordinator.log" || fail "the coordinator logged no reconnection"
echo PASS
