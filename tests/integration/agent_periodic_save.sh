#!/usr/bin/env bash
# The agent saves its state every --save-every rounds (default 100), not
# after every round. One agent of a LeNet job is killed (SIGKILL) between
# two saves and restarted: it resumes from the older save (the coordinator
# reports it back from older state and counts rounds_lost), answers the
# round open at its return, and the job finishes with a test accuracy
# within 0.5 points of the uninterrupted run (esgd-sim, which an MQTT run
# with every agent in every round equals bit for bit). Then it is stopped
# with SIGTERM, which saves what it answered since, and restarted again: it
# resumes on the round it had answered, nothing lost. Every agent writes
# less than 10 KB of state a round on average.
source "$(dirname "$0")/common.sh" "$1"
source "$(dirname "$0")/faults_common.sh"
job=it-periodic-save
settings=(--job "$job" --agents 4 --epochs 1 --method esgd --drop 0.875 --seed 3 --model lenet --eval-every 1000)
reference_run "${settings[@]}"
start_broker
start_coordinator "$job" "${settings[@]}" --quorum 4 --round-timeout 600
start_agents "$job" 4 --state-dir "$work/state"
log1=$work/agent-1.log

# SIGKILL between the saves of rounds 200 and 300.
wait_for_line "^round 250/" "$work/coordinator.log" 300
kill -9 "${agent_pids[1]}"
wait "${agent_pids[1]}" 2>/dev/null || true
saved=$(grep -o "state saved to .* (last answered round [0-9]*" "$log1" | tail -n 1 | grep -o "[0-9]*$") ||
    fail "agent 1 saved no state before round 250"
answered=$(grep -o "round [0-9]*: loss" "$log1" | tail -n 1 | grep -o "[0-9]*")
echo "killed agent 1 (SIGKILL) after answering round $answered; its last save holds round $saved"
[ "$saved" -lt "$answered" ] || fail "the kill was not between two saves (saved $saved, answered $answered)"
mv "$log1" "$work/agent-1-first.log"
start_agent "$job" 1 --state-dir "$work/state"
agent_pids[1]=$last_pid
wait_for_line "restored eSGD state from .* (last answered round $saved)" "$log1" 60
wait_for_line "agent 1 is back from older state" "$work/coordinator.log" 60
wait_for_line "round [0-9]*: loss" "$log1" 60
resumed=$(grep -o "round [0-9]*: loss" "$log1" | head -n 1 | grep -o "[0-9]*")
echo "agent 1 restored round $saved and answered round $resumed first"

# SIGTERM: a clean stop saves the rounds answered since the last save.
wait_for_line "^round 350/" "$work/coordinator.log" 300
kill -TERM "${agent_pids[1]}"
rc=0
wait "${agent_pids[1]}" || rc=$?
[ "$rc" = 3 ] || fail "agent 1 exited with $rc on SIGTERM (expected 3)"
answered=$(grep -o "round [0-9]*: loss" "$log1" | tail -n 1 | grep -o "[0-9]*")
grep -q "state saved to .* (last answered round $answered," "$log1" ||
    fail "agent 1 did not save its state (round $answered) when stopped"
mv "$log1" "$work/agent-1-second.log"
start_agent "$job" 1 --state-dir "$work/state"
agent_pids[1]=$last_pid
wait_for_line "restored eSGD state from .* (last answered round $answered)" "$log1" 60
echo "stopped agent 1 (SIGTERM) after round $answered; restarted on its state of that round"
finish_job

json=$work/coordinator.json
lost=$(json_get rounds_lost "$json")
echo "rounds $(json_get rounds "$json"), accepted $(json_get accepted "$json"), rounds_lost $lost"
[ "$(json_get rounds "$json")" = "$(json_get rounds "$work/reference.json")" ] || fail "the job did not run all its rounds"
[ -n "$lost" ] && [ "$lost" -ge 1 ] && [ "$lost" -le 100 ] || fail "rounds_lost $lost: expected the 1..100 rounds since the save"
expect_accuracy_close
for id in 0 2 3; do
    line=$(grep -o "state: .*" "$work/agent-$id.log") || fail "agent $id did not report its state writes"
    echo "agent $id $line"
    per_round=$(echo "$line" | grep -o "([0-9]* bytes a round" | grep -o "[0-9]*")
    [ "$per_round" -lt 10240 ] || fail "agent $id wrote $per_round bytes of state a round (limit 10 KB)"
done
echo PASS
