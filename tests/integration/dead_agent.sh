#!/usr/bin/env bash
# An agent dies for good (SIGKILL at round 10) under the default majority
# quorum and a 30 s round timeout: once its Last Will says offline (or it
# has missed 3 rounds in a row) rounds stop waiting for it, so the other
# 100 rounds take seconds, not 30 s each. The job must end well inside
# 120 s (waiting out every timeout would take about 50 minutes).
source "$(dirname "$0")/common.sh" "$1"
job=it-dead
start_broker
start_coordinator "$job" --agents 3 --rounds 110 --method esgd --drop 0.9 --seed 23 --model mlp --eval-every 1000 \
    --round-timeout 30
start_agents "$job" 3
wait_for_line "^round 10/" "$work/coordinator.log" 120
kill -9 "${agent_pids[2]}"
wait "${agent_pids[2]}" 2>/dev/null || true
agent_pids=("${agent_pids[@]:0:2}")
started=$SECONDS
wait_pid "$coordinator_pid" 120 || fail "coordinator exited with $?"
echo "the job finished $((SECONDS - started)) s after agent 2 died"
for pid in "${agent_pids[@]}"; do wait_pid "$pid" 60 || fail "an agent exited with $?"; done
grep -qE "agent 2 is offline|agent 2 missed 3 rounds" "$work/coordinator.log" ||
    fail "the coordinator did not notice that agent 2 was gone"
[ "$(json_get rounds "$work/coordinator.json")" = 110 ] || fail "the job did not run all 110 rounds"
echo PASS
