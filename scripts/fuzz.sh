#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz) with clang in build-fuzz,
# writes their seed corpora with the project's own encoders and runs every
# harness for SECONDS_PER_HARNESS (default 60) from its seeds and what
# earlier runs found. Prints per harness the inputs executed, the size of
# its working corpus (BUILD_DIR/fuzz-corpus/NAME: inputs kept for new
# coverage, seeds not counted) and any crash; exits non-zero if a harness
# crashed, leaked, timed out or broke an invariant.
# Usage: scripts/fuzz.sh [SECONDS_PER_HARNESS [BUILD_DIR]]
# Crashing inputs are kept in BUILD_DIR/fuzz-artifacts; replay one with
#   BUILD_DIR/tests/fuzz/fuzz_<name> FILE
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-60}
build=${2:-$root/build-fuzz}
cc=${CC:-$(command -v clang-14 || command -v clang || true)}
if [ -z "$cc" ]; then
    echo "fuzz: clang not found (apt-get install clang-14 libclang-rt-14-dev)" >&2
    exit 1
fi

cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESGD_FUZZ=ON \
    -DESGD_BUILD_TESTS=OFF -DESGD_WERROR=ON >/dev/null
cmake --build "$build" --target esgd_fuzzers -j"$(nproc)" >/dev/null

seeds=$build/fuzz-seeds
rm -rf "$seeds"
"$build/tests/fuzz/esgd_fuzz_make_seeds" "$seeds"
mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"

failed=()
printf '%-8s %8s %10s %10s %7s  %s\n' harness seconds execs exec/s corpus result
for harness in "$build"/tests/fuzz/fuzz_*; do
    name=${harness##*/fuzz_}
    corpus=$build/fuzz-corpus/$name
    log=$build/fuzz-logs/$name.log
    mkdir -p "$corpus"
    status=0
    # New inputs go to the first folder; the seeds are read, not changed.
    "$harness" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$build/fuzz-artifacts/$name-" "$corpus" "$seeds/$name" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    result=ok
    if [ "$status" -ne 0 ]; then
        result="CRASH (exit $status, see $log)"
        failed+=("$name")
    fi
    printf '%-8s %8s %10s %10s %7s  %s\n' "$name" "$seconds" "${execs:-?}" "${rate:-?}" \
        "$(find "$corpus" -type f | wc -l)" "$result"
    if [ "$status" -ne 0 ]; then
        grep -E -m8 'ERROR|invariant failed|deadly signal|SUMMARY|Test unit written' "$log" | sed 's/^/    /' >&2 || true
    fi
done
if ((${#failed[@]})); then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
