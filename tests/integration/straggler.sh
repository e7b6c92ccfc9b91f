#!/usr/bin/env bash
# One agent is frozen (SIGSTOP) for a while, then thawed (SIGCONT): rounds
# close at quorum + deadline without it; the updates it sends for rounds
# that closed meanwhile are dropped and counted as late; the job finishes
# with accuracy within 0.5 points of the fault-free run.
source "$(dirname "$0")/common.sh" "$1"
source "$(dirname "$0")/faults_common.sh"
job=it-straggler
settings=(--job "$job" --agents 3 --rounds 200 --method esgd --drop 0.9 --seed 13 --model mlp --eval-every 1000)
reference_run "${settings[@]}"

start_broker
start_coordinator "$job" "${settings[@]}" --quorum 2 --round-timeout 0.3
start_agents "$job" 3
straggler=${agent_pids[2]}
wait_for_line "round 30:" "$work/agent-2.log" 120
kill -STOP "$straggler"
echo "froze agent 2 after its round 30"
wait_for_line "^round 60/" "$work/coordinator.log" 120
kill -CONT "$straggler"
echo "thawed agent 2 at round 60"
finish_job
json=$work/coordinator.json
late=$(json_get late "$json")
echo "rounds $(json_get rounds "$json"), accepted $(json_get accepted "$json"), late $late"
[ "$(json_get rounds "$json")" = 200 ] || fail "the job did not run all 200 rounds"
[ "$late" -gt 0 ] || fail "the straggler's stale updates were not counted as late"
grep -q "late update" "$work/coordinator.log" || fail "no late update was logged"
expect_accuracy_close
echo PASS
