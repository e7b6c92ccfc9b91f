#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, fetches
# MNIST, then builds with warnings as errors and runs every CTest test, once
# in a plain build and once under AddressSanitizer + UBSan.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPENBLAS_NUM_THREADS=1

"$root/scripts/setup.sh" "$root/build-ci" -DESGD_WERROR=ON
(cd "$root/build-ci" && ctest --output-on-failure -j2)

cmake -S "$root" -B "$root/build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DESGD_WERROR=ON -DESGD_SANITIZE=ON \
    >/dev/null
cmake --build "$root/build-asan" -j"$(nproc)"
(cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --output-on-failure -j2)

# libFuzzer harnesses (tests/fuzz, clang, build-fuzz): 10 s each from seeds
# made by the encoders, about a minute in all; a crash fails the run.
"$root/scripts/fuzz.sh" 10 "$root/build-fuzz"
