#!/usr/bin/env bash
# An agent killed (SIGKILL) at random moments, again and again, restarted
# each time with its state folder: with --save-every 1 it saves its state
# (with the encoded update) before publishing every update, so whatever the
# moment of the kill it resumes on the right round and re-sends the same
# bytes. With quorum = all, the job must end with exactly the simulator's
# model. (The default, a save every 100 rounds: agent_periodic_save.sh.)
source "$(dirname "$0")/common.sh" "$1"
job=it-agent-crash
rounds=150
kills=${ESGD_AGENT_KILLS:-6}
settings=(--job "$job" --agents 3 --rounds "$rounds" --method esgd --drop 0.9 --seed 29 --model mlp --eval-every 1000)
"$sim_bin" --data "$data" --json "${settings[@]}" >"$work/sim.json" 2>"$work/sim.log" || fail "esgd-sim failed"
start_broker
start_coordinator "$job" "${settings[@]}" --quorum 3 --round-timeout 600 --republish-after 2
start_agent "$job" 0; a0=$last_pid
start_agent "$job" 2; a2=$last_pid
start_agent "$job" 1 --state-dir "$work/state-1" --save-every 1; a1=$last_pid
for ((k = 1; k <= kills; k++)); do
    wait_for_line "^round $((k * rounds / (kills + 2)))/" "$work/coordinator.log" 120
    sleep "0.00$((RANDOM % 10))" # somewhere inside a round: before, during or after the save
    kill -9 "$a1"
    wait "$a1" 2>/dev/null || true
    start_agent "$job" 1 --state-dir "$work/state-1" --save-every 1; a1=$last_pid
done
agent_pids=("$a0" "$a1" "$a2")
finish_job
restored=$(grep -c "restored eSGD state" "$work/agent-1.log" || true)
echo "agent 1 killed $kills times, restored its state $restored times"
[ "$restored" -ge 1 ] || fail "agent 1 never restored its state"
same_values "$work/sim.json" "$work/coordinator.json" model_fnv1a64 accepted
echo PASS
