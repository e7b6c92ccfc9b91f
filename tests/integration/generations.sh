#!/usr/bin/env bash
# The coordinator is restored from an older checkpoint (round ~30) after
# its agents have gone on to round ~60: the restarted coordinator is a new
# generation, the agents follow it back to the older round, and the job
# runs to its end instead of stalling (agents used to ignore "older"
# models for good). Its CSV then holds every round once. The model is not
# the simulator's (the agents' residuals went on), so only the ending, the
# rounds and the generation are checked.
source "$(dirname "$0")/common.sh" "$1"
job=it-generations
settings=(--job "$job" --agents 3 --rounds 120 --method esgd --drop 0.9 --seed 31 --model mlp --eval-every 1000)
state=$work/coordinator-state
start_broker
start_coordinator "$job" "${settings[@]}" --quorum 3 --state-dir "$state" --csv "$work/rounds.csv"
start_agents "$job" 3 --state-dir "$work/agent-state"
wait_for_line "^round 30/" "$work/coordinator.log" 120
cp "$state/coordinator-$job.ckpt" "$work/older.ckpt"
wait_for_line "^round 60/" "$work/coordinator.log" 120
kill -9 "$coordinator_pid"
wait "$coordinator_pid" 2>/dev/null || true
mv "$work/coordinator.log" "$work/coordinator-first.log"
cp "$work/older.ckpt" "$state/coordinator-$job.ckpt"
started=$SECONDS
start_coordinator "$job" "${settings[@]}" --quorum 3 --state-dir "$state" --csv "$work/rounds.csv"
finish_job
echo "the job finished $((SECONDS - started)) s after the restore"
resumed=$(grep -o "resumed run [0-9a-f]* from .* at round [0-9]*" "$work/coordinator.log") ||
    fail "the coordinator did not resume"
echo "$resumed"
from=${resumed##* }
[ "$from" -lt 60 ] || fail "the restored checkpoint should be older than round 60 (it is at round $from)"
[ "$(json_get rounds "$work/coordinator.json")" = 120 ] || fail "the job did not end at round 120"
rows=$(tail -n +2 "$work/rounds.csv" | cut -d, -f1 | tr '\n' ' ')
[ "$rows" = "$(seq -s ' ' 1 120) " ] || fail "rounds.csv should hold rounds 1..120 once each; it holds: $rows"
grep -q "generation" "$work/coordinator.log" || fail "the coordinator did not log its generation"
echo PASS
