# Sourced by the fault tests after common.sh: the fault-free reference run
# and the accuracy comparison every fault test prints.

# reference_run [settings...]: esgd-sim with the same settings, i.e. the
# fault-free run (it equals an MQTT run with every agent in every round,
# see matches_sim.sh); its JSON in $work/reference.json.
reference_run() {
    "$sim_bin" --data "$data" --json "$@" >"$work/reference.json" 2>"$work/reference.log" ||
        fail "the reference esgd-sim run failed"
}

# expect_accuracy_close: the faulty run's test accuracy is within 0.5
# points of the reference; prints both.
expect_accuracy_close() {
    local faulty reference
    faulty=$(json_get test_accuracy "$work/coordinator.json")
    reference=$(json_get test_accuracy "$work/reference.json")
    echo "test accuracy: fault-free $reference, with the fault $faulty"
    awk -v a="$faulty" -v b="$reference" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.005) }' ||
        fail "accuracy $faulty is more than 0.5 points from the fault-free $reference"
    if [ "$(json_get model_fnv1a64 "$work/coordinator.json")" = "$(json_get model_fnv1a64 "$work/reference.json")" ]; then
        echo "the final model equals the fault-free one bit for bit"
    else
        echo "the final model differs from the fault-free one (rounds closed without every agent)"
    fi
}
