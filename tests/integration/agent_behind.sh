#!/usr/bin/env bash
# An agent comes back from older state than the rounds it had answered
# (its last saves lost: a restored backup, a flash card written back; it
# saves every round here, so the older state is 20 rounds older): the
# job still ends, and the coordinator says so with a warning and counts the
# rounds in rounds_lost, instead of letting the model differ silently.
source "$(dirname "$0")/common.sh" "$1"
job=it-behind
start_broker
start_coordinator "$job" --agents 3 --rounds 80 --method esgd --drop 0.9 --seed 43 --model mlp --eval-every 1000 \
    --quorum 3
start_agents "$job" 3 --state-dir "$work/agent-state" --save-every 1
state=$work/agent-state/agent-$job-1.state
wait_for_line "^round 20/" "$work/coordinator.log" 120
cp "$state" "$work/older.state"
wait_for_line "^round 40/" "$work/coordinator.log" 120
kill -9 "${agent_pids[1]}"
wait "${agent_pids[1]}" 2>/dev/null || true
cp "$work/older.state" "$state"
start_agent "$job" 1 --state-dir "$work/agent-state" --save-every 1
agent_pids[1]=$last_pid
finish_job
grep "agent 1 is back from older state" "$work/coordinator.log" || fail "the coordinator did not report agent 1 behind"
lost=$(json_get rounds_lost "$work/coordinator.json")
[ -n "$lost" ] && [ "$lost" -ge 10 ] || fail "rounds_lost should count about 20 rounds (got '$lost')"
echo "rounds_lost $lost"
echo PASS
