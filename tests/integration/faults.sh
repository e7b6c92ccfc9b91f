#!/usr/bin/env bash
# An agent killed mid-run does not stop the job (quorum + deadline); its
# retained Last Will marks it offline; restarted late with its state folder
# (saved every 4 rounds, so the kill loses some), it rejoins from the
# retained configuration and model and answers again.
source "$(dirname "$0")/common.sh" "$1"
source "$(dirname "$0")/faults_common.sh"
job=it-faults
rounds=120
settings=(--job "$job" --agents 3 --rounds "$rounds" --method esgd --drop 0.9 --seed 5 --model mlp --eval-every 1000)
reference_run "${settings[@]}"
start_broker
start_coordinator "$job" "${settings[@]}" --quorum 2 --round-timeout 0.3
start_agent "$job" 0; a0=$last_pid
start_agent "$job" 1; a1=$last_pid
start_agent "$job" 2 --state-dir "$work/state-2" --save-every 4; a2=$last_pid

wait_for_line "round 10:" "$work/agent-2.log" 120
kill -9 "$a2"
wait "$a2" 2>/dev/null || true
echo "killed agent 2 after round 10"
wait_for_line "agent 2 is offline" "$work/coordinator.log" 30
# The job goes on with two agents; then agent 2 comes back late.
before=$(grep -c "participants 2" "$work/coordinator.log" || true)
wait_for_line "^round 40/" "$work/coordinator.log" 120
echo "restarting agent 2 (rounds closed with 2 agents so far: $(grep -c 'participants 2' "$work/coordinator.log"))"
start_agent "$job" 2 --state-dir "$work/state-2" --save-every 4; a2=$last_pid
wait_pid "$coordinator_pid" 600 || fail "coordinator exited with $?"
for pid in "$a0" "$a1" "$a2"; do wait_pid "$pid" 60 || fail "an agent exited with $?"; done

json=$work/coordinator.json
accepted=$(json_get accepted "$json")
echo "rounds $(json_get rounds "$json"), accepted updates $accepted"
[ "$(json_get rounds "$json")" = "$rounds" ] || fail "the job did not run all $rounds rounds"
[ "$accepted" -gt $((2 * rounds)) ] && [ "$accepted" -lt $((3 * rounds)) ] ||
    fail "accepted $accepted: expected agent 2 to miss some rounds and answer others"
grep -q "restored eSGD state" "$work/agent-2.log" || fail "agent 2 did not restore its state"
late_round=$(grep -o "round [0-9]*: loss" "$work/agent-2.log" | tail -n 1 | grep -o "[0-9]*")
[ "$late_round" -ge 40 ] || fail "agent 2 did not answer after rejoining (last round $late_round)"
grep -q "participants 3" <(tail -n 20 "$work/coordinator.log") || fail "agent 2's updates did not count after rejoining"
echo "agent 2 answered up to round $late_round after rejoining"
expect_accuracy_close
echo PASS
