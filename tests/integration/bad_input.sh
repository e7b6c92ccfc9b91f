#!/usr/bin/env bash
# Hostile and malformed messages published to the real broker on the real
# topics while a job runs (tests/integration/make_bad_corpus.py builds them
# from the schema): unsigned, forged and replayed ones from an attacker
# without keys, and malformed ones signed by a rogue agent's own key. The coordinator and the agents survive every one, the
# coordinator counts each under its reason (rejected_<reason> in its JSON), and
# the job's result is unchanged: the final model equals the fault-free run.
# (Unsorted or duplicated indices cannot be written in this format: bitmap
# and Rice-coded gaps are ascending by construction; test_codec.c covers the
# decoder's side.)
source "$(dirname "$0")/common.sh" "$1"
source "$(dirname "$0")/faults_common.sh"
command -v mosquitto_pub >/dev/null || { echo "SKIP: mosquitto_pub (mosquitto-clients) not installed"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
# PyNaCl is Debian's python3-nacl: a python3 earlier on PATH (pyenv) may lack it.
py=python3
$py -c 'import nacl.signing' 2>/dev/null || py=/usr/bin/python3
$py -c 'import nacl.signing' 2>/dev/null || { echo "SKIP: PyNaCl (python3-nacl) not installed"; exit 77; }
job=it-bad
rounds=600 # long enough to still be running while the corpus goes out
settings=(--job "$job" --agents 3 --rounds "$rounds" --method esgd --drop 0.9 --seed 17 --model mlp --eval-every 1000)
reference_run "${settings[@]}"

start_broker
start_coordinator "$job" "${settings[@]}" --quorum 3 --round-timeout 60
start_agents "$job" 3
wait_for_line "^round 20/" "$work/coordinator.log" 120
run=$(grep -oE "job $job run [0-9a-f]{16}" "$work/coordinator.log" | head -n 1 | awk '{print $4}')
[ -n "$run" ] || fail "no run id in the coordinator's log"
$py "$root/tests/integration/make_bad_corpus.py" "$work/corpus" "$job" 101770 3 20 "$rounds" "$run" "$ESGD_KEYS"

declare -A expected
sent=0
while IFS=$'\t' read -r name topic expect; do
    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "$topic" -f "$work/corpus/$name.bin" ||
        fail "could not publish $name"
    expected[$expect]=$((${expected[$expect]:-0} + 1))
    sent=$((sent + 1))
done <"$work/corpus/cases.tsv"
echo "published $sent hostile messages"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "esgd/$job/status/1" -f "$work/corpus/status_beyond_generation.bin" ||
    fail "could not publish the status with a generation beyond any start"
wait_for_line "generation 4294967295 is beyond any coordinator start" "$work/coordinator.log" 30
# A flood: 20,000 status messages for agent 1 (mosquitto_pub -l sends a line each).
log_lines() { grep -vc '^round ' "$work/coordinator.log"; } # all but the progress lines
lines_before=$(log_lines)
seq 1 20000 | mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 0 -t "esgd/$job/status/1" -l ||
    fail "could not publish the status flood"
finish_job
flood_lines=$(($(log_lines) - lines_before))
echo "20,000 bad status messages added $flood_lines lines to the coordinator's log"
[ "$flood_lines" -lt 50 ] || fail "the status flood was logged line by line ($flood_lines lines)"
grep -qE "more (like it|refused status messages)" "$work/coordinator.log" || fail "the status flood's count was not logged"
json=$work/coordinator.json
status=0
for r in format type truncated version missing nonfinite range dimension mismatch too_large signature stale late early; do
    key=rejected_$r
    [ "$r" = late ] || [ "$r" = early ] && key=$r
    got=$(json_get "$key" "$json")
    echo "  $r: expected ${expected[$r]:-0}, counted $got"
    [ "$got" = "${expected[$r]:-0}" ] || status=1
done
[ "$status" = 0 ] || fail "the coordinator's counts by reason do not match the corpus"
grep -h "ignored messages by reason" "$work"/agent-*.log || fail "the agents did not count what they ignored"
same_values "$work/reference.json" "$work/coordinator.json" model_fnv1a64 uplink_bytes accepted
expect_accuracy_close
echo PASS
