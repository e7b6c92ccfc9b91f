#!/usr/bin/env bash
# The coordinator is killed (SIGKILL) mid-run and restarted with the same
# --state-dir: it resumes from its checkpoint, the agents re-send what the
# dead coordinator had not aggregated, and the job ends with exactly the
# model of an uninterrupted esgd-sim run, and the CSV holds every round's
# row exactly once.
source "$(dirname "$0")/common.sh" "$1"
job=it-restart
# --down-drop: the checkpoint also holds the coordinator's downlink residual,
# which the resumed run must continue from for the bits to match.
settings=(--job "$job" --agents 3 --rounds 120 --method esgd --drop 0.9 --down-drop 0.99 --seed 21 --model mlp
    --eval-every 1000)
"$sim_bin" --data "$data" --json "${settings[@]}" >"$work/sim.json" 2>"$work/sim.log" || fail "esgd-sim failed"

start_broker
start_coordinator "$job" "${settings[@]}" --quorum 3 --state-dir "$work/coordinator-state" --csv "$work/rounds.csv"
start_agents "$job" 3
wait_for_line "^round 40/" "$work/coordinator.log" 120
kill -9 "$coordinator_pid"
wait "$coordinator_pid" 2>/dev/null || true
mv "$work/coordinator.log" "$work/coordinator-first.log"
echo "killed the coordinator after $(grep -c '^round' "$work/coordinator-first.log") closed rounds"
sleep 0.5
# A kill after a round's row is written but before its checkpoint leaves a
# row (here also a half-written one) the restarted coordinator runs again:
# it must cut them, not keep them twice.
printf '999,1.0,3,0.1,,,1,1,1\n77,0.5' >>"$work/rounds.csv"
# A damaged checkpoint is refused with a clear message and left as it is:
# the coordinator never replaces it with a fresh start.
mkdir -p "$work/damaged-state"
damaged=$work/damaged-state/coordinator-$job.ckpt
cp "$work/coordinator-state/coordinator-$job.ckpt" "$damaged"
printf '\x5a' | dd of="$damaged" bs=1 seek=200 conv=notrunc 2>/dev/null
cp "$damaged" "$work/damaged-copy"
rc=0
"$coordinator_bin" --broker "$BROKER_URL" --data "$data" "${settings[@]}" --state-dir "$work/damaged-state" \
    >/dev/null 2>"$work/damaged.log" || rc=$?
[ "$rc" = 2 ] || fail "a damaged checkpoint should stop the coordinator with status 2, permanent (got $rc)"
grep -q "checksum" "$work/damaged.log" || fail "no clear message for the damaged checkpoint: $(cat "$work/damaged.log")"
cmp -s "$damaged" "$work/damaged-copy" || fail "the damaged checkpoint was overwritten"
echo "damaged checkpoint refused: $(grep -o 'state .*' "$work/damaged.log" | head -n 1)"
start_coordinator "$job" "${settings[@]}" --quorum 3 --state-dir "$work/coordinator-state" --csv "$work/rounds.csv"
finish_job

grep -q "resumed run [0-9a-f]* from .* at round" "$work/coordinator.log" || fail "the coordinator did not resume from its checkpoint"
grep -o "resumed run [0-9a-f]* from .* at round [0-9]*" "$work/coordinator.log"
[ "$(json_get rounds "$work/coordinator.json")" = 120 ] || fail "the job did not end at round 120"
same_values "$work/sim.json" "$work/coordinator.json" model_fnv1a64 final_loss
rows=$(tail -n +2 "$work/rounds.csv" | cut -d, -f1 | tr '\n' ' ')
[ "$rows" = "$(seq -s ' ' 1 120) " ] || fail "rounds.csv should hold rounds 1..120 once each, in order; it holds: $rows"
echo "rounds.csv: rounds 1..120 once each"
echo PASS
