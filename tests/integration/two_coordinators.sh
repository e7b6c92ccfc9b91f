#!/usr/bin/env bash
# A second coordinator for a running job refuses to start, with a clear
# error and exit status 2: with the same state folder (its lock), and with
# another folder (the lease on the broker naming the live coordinator, whose
# refresh the second one sees before it connects as the job's coordinator:
# the first one is never knocked off the broker).
# The first one carries on and, with quorum = all, ends with exactly the
# simulator's model.
source "$(dirname "$0")/common.sh" "$1"
job=it-two-coordinators
settings=(--job "$job" --agents 3 --rounds 150 --method esgd --drop 0.9 --seed 37 --model mlp --eval-every 1000)
"$sim_bin" --data "$data" --json "${settings[@]}" >"$work/sim.json" 2>"$work/sim.log" || fail "esgd-sim failed"
start_broker
start_coordinator "$job" "${settings[@]}" --quorum 3 --state-dir "$work/state-a"
start_agents "$job" 3
wait_for_line "^round 30/" "$work/coordinator.log" 120
second() {
    local rc=0
    timeout 60 "$coordinator_bin" --broker "$BROKER_URL" --data "$data" "${settings[@]}" --quorum 3 \
        --state-dir "$1" >/dev/null 2>"$2" || rc=$?
    echo "$rc"
}
rc=$(second "$work/state-a" "$work/second-same.log")
[ "$rc" = 2 ] || fail "a second coordinator on the same state folder should exit 2 (got $rc): $(tail -n 3 "$work/second-same.log")"
grep -q "another coordinator" "$work/second-same.log" || fail "no clear error: $(tail -n 3 "$work/second-same.log")"
echo "same folder: $(grep -o 'another coordinator.*' "$work/second-same.log" | head -n 1)"
rc=$(second "$work/state-b" "$work/second-other.log")
[ "$rc" = 2 ] || fail "a second coordinator on another state folder should exit 2 (got $rc): $(tail -n 3 "$work/second-other.log")"
grep -q "another coordinator is running job $job" "$work/second-other.log" ||
    fail "no clear error: $(tail -n 3 "$work/second-other.log")"
echo "other folder: $(grep -o 'another coordinator.*' "$work/second-other.log" | head -n 1)"
# The second one looked at the lease under a client id of its own (the
# holder's refresh told it), so the first one kept its connection.
! grep -q 'connection to .* lost' "$work/coordinator.log" ||
    fail "the first coordinator lost its connection while the second one checked the lease: $(grep -m1 'connection to .* lost' "$work/coordinator.log")"
finish_job
same_values "$work/sim.json" "$work/coordinator.json" model_fnv1a64 accepted
echo PASS
