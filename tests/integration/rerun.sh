#!/usr/bin/env bash
# A job name run again on the same broker, whose retained messages (the
# finished run's configuration and final "done" model) are still there:
#   - agents started before the new coordinator see the old run's retained
#     final model, do not take it for theirs, and wait for a new run;
#   - the new coordinator clears the old retained model and starts a new run
#     (a new run id) that every agent joins;
#   - a second re-run with the coordinator first works as well;
# each run ends with exactly the model of the simulator with the same seed.
source "$(dirname "$0")/common.sh" "$1"
job=it-rerun
settings=(--job "$job" --agents 3 --rounds 25 --method esgd --drop 0.9 --seed 31 --model mlp --eval-every 1000)
"$sim_bin" --data "$data" --json "${settings[@]}" >"$work/sim.json" 2>"$work/sim.log" || fail "esgd-sim failed"
start_broker

run_id() { grep -oE "job $job run [0-9a-f]{16}" "$work/coordinator.log" | head -n 1 | awk '{print $4}'; }
# check_run N: the run just finished equals the simulator's; keeps its logs.
check_run() {
    same_values "$work/sim.json" "$work/coordinator.json" model_fnv1a64 accepted
    runs+=("$(run_id)")
    for f in "$work"/coordinator.log "$work"/coordinator.json "$work"/agent-*.log; do mv "$f" "$f.run$1"; done
}
runs=()

# 1. The first run, in the usual order.
start_coordinator "$job" "${settings[@]}" --quorum 3
start_agents "$job" 3
finish_job
check_run 1

# 2. Agents first: all they find is run 1's retained configuration and
# final model.
start_agents "$job" 3
for id in 0 1 2; do wait_for_line "has already finished; waiting for a new run" "$work/agent-$id.log" 60; done
for pid in "${agent_pids[@]}"; do kill -0 "$pid" 2>/dev/null || fail "an agent exited on the old run's final model"; done
start_coordinator "$job" "${settings[@]}" --quorum 3
finish_job
for id in 0 1 2; do grep -q "new run" "$work/agent-$id.log" || fail "agent $id did not say it joined the new run"; done
check_run 2

# 3. Coordinator first, agents after it.
start_coordinator "$job" "${settings[@]}" --quorum 3
wait_for_line "job $job run" "$work/coordinator.log" 30
start_agents "$job" 3
finish_job
check_run 3

echo "runs: ${runs[*]}"
[ "${#runs[@]}" = 3 ] && [ -n "${runs[0]}" ] || fail "a run id is missing"
[ "${runs[0]}" != "${runs[1]}" ] && [ "${runs[1]}" != "${runs[2]}" ] && [ "${runs[0]}" != "${runs[2]}" ] ||
    fail "a re-run did not get a new run id"
echo PASS
