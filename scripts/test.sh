#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, fetches
# MNIST, builds with warnings as errors and runs every CTest test, once in a
# plain build and once under AddressSanitizer + UBSan, then the libFuzzer
# harnesses, then the ARM check (scripts/arm-check.sh: cross builds for
# arm64 and armhf, their unit tests and esgd-sim jobs under qemu, their
# .deb packages). Every stage runs even when an earlier one failed; the end is a
# table (stage, passed, failed, skipped, time) and one closing line, and the
# exit status is non-zero when anything failed.
# Usage: scripts/test.sh [--no-skips]
#   --no-skips   a skipped test counts as failed (a machine set up by
#                scripts/setup.sh has everything every test needs)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPENBLAS_NUM_THREADS=1
no_skips=0
for arg in "$@"; do
    case $arg in
    --no-skips) no_skips=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done
logs=$root/build-logs
mkdir -p "$logs"

rows=() total_pass=0 total_fail=0 total_skip=0
# record STAGE PASSED FAILED SKIPPED SECONDS
record() {
    rows+=("$(printf '%-22s %7s %7s %8s %8s' "$1" "$2" "$3" "$4" "$(date -u -d "@$5" +%M:%S)")")
    total_pass=$((total_pass + $2)) total_fail=$((total_fail + $3)) total_skip=$((total_skip + $4))
}
banner() { printf '\n===== %s =====\n' "$*"; }

# step NAME COMMAND...: a stage that is one pass or one fail.
step() {
    local name=$1 started=$SECONDS
    shift
    banner "$name"
    if "$@"; then record "$name" 1 0 0 $((SECONDS - started)); else record "$name" 0 1 0 $((SECONDS - started)); fi
}

# tests NAME BUILD_DIR [ENV...]: ctest in BUILD_DIR, counted per test from
# ctest's own per-test lines ("Passed", "***Skipped", anything else failed).
tests() {
    local name=$1 dir=$2 started=$SECONDS log="$logs/${1// /-}.log"
    shift 2
    banner "$name"
    if [ ! -f "$dir/CTestTestfile.cmake" ]; then
        echo "no build in $dir: its tests cannot run"
        record "$name" 0 1 0 $((SECONDS - started))
        return
    fi
    (cd "$dir" && env "$@" ctest --output-on-failure -j2) 2>&1 | tee "$log"
    local pass skip fail
    pass=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed ' "$log")
    skip=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*\*\*\*Skipped' "$log")
    fail=$(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$log" | grep -vcE ' Passed |\*\*\*Skipped')
    if ((pass + skip + fail == 0)); then fail=1; echo "ctest ran no test"; fi
    if ((no_skips && skip)); then
        echo "--no-skips: $skip skipped test(s) count as failed:"
        grep -E '\*\*\*Skipped' "$log"
        fail=$((fail + skip)) skip=0
    fi
    record "$name" "$pass" "$fail" "$skip" $((SECONDS - started))
}

# fuzz: one pass or fail per harness, from scripts/fuzz.sh's table.
fuzz() {
    local started=$SECONDS log="$logs/fuzz.log"
    banner "fuzz (10 s per harness)"
    "$root/scripts/fuzz.sh" 10 "$root/build-fuzz" 2>&1 | tee "$log"
    local status=${PIPESTATUS[0]} pass fail
    pass=$(awk '$6 == "ok"' "$log" | wc -l)
    fail=$(grep -c 'CRASH' "$log")
    ((status == 0 || fail > 0)) || fail=1
    record "fuzz harnesses" "$pass" "$fail" 0 $((SECONDS - started))
}

# arm: scripts/arm-check.sh's checks, counted from its closing line; its
# exit 77 (qemu or the cross packages cannot be installed) is one skip.
arm() {
    local started=$SECONDS log="$logs/arm.log" line pass=0 fail=1 skip=0
    banner "ARM: cross builds, unit tests and esgd-sim under qemu, .deb packages"
    "$root/scripts/arm-check.sh" --x86-build "$root/build-ci" 2>&1 | tee "$log"
    local status=${PIPESTATUS[0]}
    line=$(grep -E '^arm-check: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$log" | tail -n 1)
    [ -n "$line" ] && read -r pass fail skip < <(sed -E 's/[^0-9]+([0-9]+)[^0-9]+([0-9]+)[^0-9]+([0-9]+).*/\1 \2 \3/' <<<"$line")
    ((status == 0 || status == 77 || fail > 0)) || fail=1
    ((no_skips && skip)) && fail=$((fail + skip)) skip=0
    record "ARM under qemu" "$pass" "$fail" "$skip" $((SECONDS - started))
}

asan_build() {
    cmake -S "$root" -B "$root/build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESGD_WERROR=ON \
        -DESGD_SANITIZE=ON >/dev/null && cmake --build "$root/build-asan" -j"$(nproc)"
}

step "setup and build" "$root/scripts/setup.sh" "$root/build-ci" -DESGD_WERROR=ON
tests "tests" "$root/build-ci"
step "ASan+UBSan build" asan_build
tests "tests under ASan+UBSan" "$root/build-asan" ASAN_OPTIONS=detect_leaks=1:suppressions=$root/tests/asan.supp \
    UBSAN_OPTIONS=print_stacktrace=1
fuzz
arm

banner "summary"
printf '%-22s %7s %7s %8s %8s\n' stage passed failed skipped time
printf '%s\n' "${rows[@]}"
echo "logs: $logs"
echo "summary: $total_pass passed, $total_fail failed, $total_skip skipped"
((total_fail == 0))
