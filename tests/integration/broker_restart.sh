#!/usr/bin/env bash
# The broker restarts mid-run (persistence on): agents and coordinator
# reconnect with backoff and continue; QoS 1 messages published while it
# was down are delivered after reconnection; the job finishes, and its
# accuracy matches the fault-free run.
source "$(dirname "$0")/common.sh" "$1"
source "$(dirname "$0")/faults_common.sh"
job=it-broker
settings=(--job "$job" --agents 3 --rounds 200 --method esgd --drop 0.9 --seed 9 --model mlp --eval-every 1000)
reference_run "${settings[@]}"

BROKER_PERSISTENCE=1 start_broker
start_coordinator "$job" "${settings[@]}" --quorum 3 --round-timeout 60
start_agents "$job" 3
wait_for_line "^round 60/" "$work/coordinator.log" 120
broker_stop
echo "broker stopped after $(grep -c '^round' "$work/coordinator.log") closed rounds"
sleep 2
broker_restart || fail "the broker did not come back"
echo "broker restarted on port $BROKER_PORT"
finish_job
[ "$(json_get rounds "$work/coordinator.json")" = 200 ] || fail "the job did not run all 200 rounds"
[ "$(json_get rejected "$work/coordinator.json")" = 0 ] || fail "updates were rejected"
echo "accepted $(json_get accepted "$work/coordinator.json"), duplicates $(json_get duplicate "$work/coordinator.json"), late $(json_get late "$work/coordinator.json")"
grep -h "connection\|reconnect" "$work"/agent-0.log | head -3 || true
expect_accuracy_close
echo PASS
