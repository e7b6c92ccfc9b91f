#!/usr/bin/env bash
# The ARM check (scripts/test.sh runs it as its own stage): cross-builds for
# arm64 and armhf with Debian's cross compilers and multiarch libraries
# (warnings are errors), runs the unit tests under qemu-user-static, runs
# two short fixed-seed esgd-sim jobs under qemu and compares them with
# x86-64, and builds and checks the .deb of each architecture. As root it
# installs what is missing itself (dpkg --add-architecture arm64 armhf,
# then apt-get). Results and why: results/gateway/arm.md.
#
# The comparisons with x86-64 (same job, data and seed; fingerprint is the
# final model_fnv1a64):
#  - LeNet (the project's own fixed-order kernels, no BLAS): the fingerprint
#    equals x86-64's bit for bit, against the x86-64 code with a fused
#    multiply-add where the target fuses (arm64) and without (the x86-64
#    default code, run under qemu-x86_64 -cpu qemu64) where it does not
#    (armhf: Debian's VFPv3-D16 baseline has no FMA);
#  - MLP with a reference sgemm preloaded (tests/arm/ref_sgemm.c, one fixed
#    summation order): equal bit for bit; so everything but OpenBLAS
#    (sparsifiers, f16 values, codec, aggregation, random numbers, libm)
#    computes the same bits on all three;
#  - MLP with OpenBLAS, as deployed: the fingerprints differ (its sgemm
#    kernels sum in another order per architecture); the final test
#    accuracy must be within 0.01 and the final loss within 2% of x86-64's.
# test_training (two 150-round LeNet trainings on MNIST, about 10 minutes
# per architecture under qemu) is the one unit test left out; the esgd-sim
# jobs train on ARM instead.
#
# Usage: scripts/arm-check.sh [--x86-build DIR] [--prefix PATH]
#   --x86-build DIR  an x86-64 build with core/esgd-sim (default: build one
#                    in PATHx86)
#   --prefix PATH    build folders are PATHarm64, PATHarmhf (default
#                    <repo>/build-); the packages land in PATH<arch>/packages
# Exit status: 0 all passed, 1 something failed, 77 skipped (not an amd64
# machine, or the packages are missing and cannot be installed). The last
# line is "arm-check: N passed, N failed, N skipped".
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "arm-check: $*"; }
skip_all() {
    say "SKIP: $*"
    say "0 passed, 0 failed, 1 skipped"
    exit 77
}
prefix=$root/build- x86_build=
while [ $# -gt 0 ]; do
    case $1 in
    --x86-build) x86_build=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    -h | --help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown option $1 (see --help)"; exit 2 ;;
    esac
done
started=$SECONDS
export OPENBLAS_NUM_THREADS=1 LC_ALL=C

# ---- packages ----
[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || skip_all "the cross build runs on an amd64 Debian machine"
arches=(arm64 armhf)
declare -A triplet=([arm64]=aarch64-linux-gnu [armhf]=arm-linux-gnueabihf)
declare -A qemu=([arm64]=qemu-aarch64-static [armhf]=qemu-arm-static)
declare -A machine=([arm64]="ARM aarch64" [armhf]="ARM, EABI5")
# The cross C compilers (crossbuild-essential-* would add C++ and
# dpkg-cross, which a C project does not need), qemu-user-static, and the
# target's -dev packages of everything the build links (README.md,
# "Dependencies").
packages=(qemu-user-static gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf)
for arch in "${arches[@]}"; do
    for lib in libmsgpack-dev libopenblas-dev libpaho-mqtt-dev libssl-dev libsodium-dev libmicrohttpd-dev \
        libcmocka-dev; do
        packages+=("$lib:$arch")
    done
done
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    [ "$(id -u)" = 0 ] || skip_all "missing packages (${missing[*]}); run as root to install them"
    say "installing ${#missing[@]} packages and what they depend on: ${missing[*]}"
    for arch in "${arches[@]}"; do
        dpkg --print-foreign-architectures | grep -qx "$arch" || dpkg --add-architecture "$arch"
    done
    if ! apt-get update || ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
        skip_all "apt-get could not install the cross packages (${missing[*]})"
    fi
else
    say "all ${#packages[@]} packages installed"
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/esgd-arm.XXXXXX")
trap 'rm -rf "$out"' EXIT

# ---- the jobs and their data: the first 8,000 training and 1,000 test images of MNIST ----
# MLP: its dense layers are OpenBLAS sgemm calls. LeNet: the project's own
# fixed-order kernels (core/src/model_gemm.c), which fuse a*b+c where the
# CPU has a fused multiply-add (core/src/simd.h).
mlp_job=(--agents 4 --model mlp --method esgd --drop 0.875 --values f16 --rounds 10 --seed 5)
lenet_job=(--agents 4 --model lenet --method esgd --drop 0.875 --values f16 --rounds 3 --seed 5)
data=$out/data
mnist=${ESGD_DATA_DIR:-$root/data/mnist}
have_data=0
if [ -f "$mnist/train-images-idx3-ubyte" ] && [ -f "$mnist/t10k-images-idx3-ubyte" ] &&
    python3 - "$mnist" "$data" <<'PY'; then
import os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name, n in (("train-images-idx3-ubyte", 8000), ("train-labels-idx1-ubyte", 8000),
                ("t10k-images-idx3-ubyte", 1000), ("t10k-labels-idx1-ubyte", 1000)):
    with open(os.path.join(src, name), "rb") as f:
        head = f.read(4)
        rank = head[3]
        dims = struct.unpack(">%dI" % rank, f.read(4 * rank))
        row = 1
        for d in dims[1:]:
            row *= d
        body = f.read(n * row)
    with open(os.path.join(dst, name), "wb") as f:
        f.write(head + struct.pack(">%dI" % rank, n, *dims[1:]) + body)
PY
    have_data=1
else
    say "no MNIST in $mnist (scripts/fetch-mnist.sh): the esgd-sim comparisons are skipped"
fi

# json_get KEY FILE: a top-level value of esgd-sim's one-line JSON
json_get() { grep -o "\"$1\": *[^,}]*" "$2" | head -n 1 | sed 's/^[^:]*: *//; s/"//g'; }

# sim NAME mlp|lenet [LAUNCHER...] ESGD_SIM: runs the job, JSON in $out/NAME.json
sim() {
    local name=$1 which=$2
    shift 2
    local -n sim_job=${which}_job
    "$@" --data "$data" --json "${sim_job[@]}" >"$out/$name.json" 2>"$out/$name.log" ||
        { echo "$name: esgd-sim failed:"; tail -n 5 "$out/$name.log"; return 1; }
}

# ref_sgemm CC OUT [pkg-config dir]: the reference sgemm as a shared object
ref_sgemm() {
    local cflags
    # shellcheck disable=SC2086 # pkg-config's flags are separate words
    cflags=$(env ${3:+PKG_CONFIG_LIBDIR=$3} pkg-config --cflags openblas) &&
        "$1" -std=c11 -O2 -Wall -Wextra -Werror -ffp-contract=off -fPIC -shared $cflags \
            "$root/tests/arm/ref_sgemm.c" -o "$2"
}

# ---- x86-64: the reference runs ----
# LeNet here takes the x86-64-v3/v4 code, which fuses multiply-adds when the
# CPU has FMA; the same binary under qemu-x86_64 with its plain "qemu64" CPU
# (no AVX2, no FMA) takes the default code, which does not. That run goes
# on in the background: only a lane without FMA needs it.
x86_ok=0 host_fma=0
grep -qw fma /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo && host_fma=1
if ((have_data)); then
    if [ -z "$x86_build" ]; then
        x86_build=${prefix}x86
        if ! { cmake -S "$root" -B "$x86_build" -DCMAKE_BUILD_TYPE=Release -DESGD_WERROR=ON &&
            cmake --build "$x86_build" -j2 --target esgd-sim; } >"$out/x86-build.log" 2>&1; then
            tail -n 40 "$out/x86-build.log"
            say "the x86-64 build failed"
        fi
    fi
    x86_sim=$x86_build/core/esgd-sim
    if ((host_fma)); then lenet_x86=x86-lenet-fma; else lenet_x86=x86-lenet-nofma; fi
    if [ -x "$x86_sim" ] && ref_sgemm gcc "$out/ref-x86.so" "" && sim x86-mlp-blas mlp "$x86_sim" &&
        sim x86-mlp-ref mlp env "LD_PRELOAD=$out/ref-x86.so" "$x86_sim" && sim "$lenet_x86" lenet "$x86_sim"; then
        x86_ok=1
        if ((host_fma)); then
            (
                sim x86-lenet-nofma lenet qemu-x86_64-static -cpu qemu64 "$x86_sim"
                echo $? >"$out/x86-lenet-nofma.status"
            ) >"$out/x86-lenet-nofma.out" 2>&1 &
        else
            echo 0 >"$out/x86-lenet-nofma.status"
        fi
    else
        say "no x86-64 reference run (esgd-sim in $x86_build)"
    fi
fi

# ---- one lane per architecture: build, unit tests, esgd-sim, package ----
# Each lane writes "PASS|FAIL|SKIP <arch> <check>: <detail>" lines to
# $out/ARCH.results and facts for the report to $out/ARCH.facts. The two
# lanes run side by side, each on one core.
lane() {
    local arch=$1 dir=$prefix$1 res=$out/$1.results facts=$out/$1.facts log=$out/$1.log t0=$SECONDS
    local q=${qemu[$1]} trip=${triplet[$1]}
    result() { echo "$1 $arch $2" >>"$res"; }
    fact() { echo "$*" >>"$facts"; }
    : >"$res"
    : >"$facts"
    local tests
    tests=$(cd "$root/tests" && find . -maxdepth 1 -name 'test_*.c' | sed 's|^\./||; s/\.c$//' | grep -vx test_training)
    # CMAKE_SKIP_INSTALL_ALL_DEPENDENCY: cpack installs these targets without building all the others.
    # shellcheck disable=SC2086 # one target a word
    if ! { cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DESGD_WERROR=ON \
        -DCMAKE_TOOLCHAIN_FILE="$root/deploy/cmake/$trip.cmake" -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON &&
        cmake --build "$dir" -j1 --target $tests esgd-sim esgd-agent esgd-coordinator esgd-watch esgd-keygen; } \
        >"$log" 2>&1; then
        tail -n 40 "$log"
        result FAIL "build: the cross build failed (above)"
        return
    fi
    result PASS "build: cross-compiled with -Werror"
    fact build_seconds $((SECONDS - t0))
    grep -q "$q" "$dir/tests/CTestTestfile.cmake" ||
        { result FAIL "unit tests: CTest does not run them under $q (deploy/cmake/debian-multiarch.cmake)"; return; }

    # Unit tests: CTest runs each through qemu (CMAKE_CROSSCOMPILING_EMULATOR).
    t0=$SECONDS
    (cd "$dir" && ctest -R '^test_' -E '^test_training$' -j1 --output-on-failure) >"$out/$arch-ctest.log" 2>&1
    local line name
    while read -r line; do
        name=$(sed -E 's/.*Test +#[0-9]+: ([^ ]+) .*/\1/' <<<"$line")
        case $line in
        *" Passed "*) result PASS "unit test $name: passed under qemu" ;;
        *Skipped*) result SKIP "unit test $name: skipped" ;;
        *) result FAIL "unit test $name: $(sed -E 's/.*\.\.\. *//' <<<"$line")" ;;
        esac
    done < <(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$out/$arch-ctest.log")
    grep -qE '^ *[0-9]+/[0-9]+ Test +#' "$out/$arch-ctest.log" || result FAIL "unit tests: ctest ran none"
    fact unit_seconds $((SECONDS - t0))
    grep -q "^FAIL $arch unit test" "$res" && tail -n 80 "$out/$arch-ctest.log"

    # esgd-sim: LeNet and the reference-sgemm MLP bit for bit, the OpenBLAS MLP within the bound.
    t0=$SECONDS
    local ours=("$q" "$dir/core/esgd-sim") want got
    if ((!x86_ok)); then
        result SKIP "esgd-sim: no x86-64 reference run (no MNIST, or the x86-64 esgd-sim failed)"
    else
        # LeNet, against the x86-64 code that fuses as this target does.
        local ref=x86-lenet-fma fuses=FMA
        local macros
        macros=$("$trip-gcc" -O2 -dM -E - </dev/null)
        if ! grep -q __FP_FAST_FMAF <<<"$macros"; then
            ref=x86-lenet-nofma fuses="no FMA"
            local i=0
            while [ ! -f "$out/x86-lenet-nofma.status" ] && ((i++ < 900)); do sleep 1; done
        fi
        if [ ! -s "$out/$ref.json" ] && [ "$ref" = x86-lenet-fma ] && ((!host_fma)); then
            result SKIP "esgd-sim LeNet: this x86-64 CPU has no FMA (AVX2) to compare $arch's fused results with"
        elif [ ! -s "$out/$ref.json" ]; then
            result FAIL "esgd-sim LeNet: no x86-64 run with $fuses to compare with ($(cat "$out/x86-lenet-nofma.out" 2>/dev/null))"
        elif sim "$arch-lenet" lenet "${ours[@]}"; then
            want=$(json_get model_fnv1a64 "$out/$ref.json") got=$(json_get model_fnv1a64 "$out/$arch-lenet.json")
            fact lenet_fnv "$got"
            fact lenet_fuses "$fuses"
            fact lenet_median "$(json_get round_seconds_median "$out/$arch-lenet.json")"
            if [ -n "$got" ] && [ "$got" = "$want" ]; then
                result PASS "esgd-sim LeNet (no BLAS, $fuses): model_fnv1a64 $got equals x86-64's ($fuses), bit for bit"
            else
                result FAIL "esgd-sim LeNet (no BLAS, $fuses): model_fnv1a64 $got, x86-64 ($fuses) $want"
            fi
        else
            result FAIL "esgd-sim LeNet: exited with an error (above)"
        fi
        # MLP with the reference sgemm.
        if ! ref_sgemm "$trip-gcc" "$out/ref-$arch.so" "/usr/lib/$trip/pkgconfig:/usr/share/pkgconfig"; then
            result FAIL "esgd-sim MLP, reference sgemm: it did not build for $arch"
        elif sim "$arch-mlp-ref" mlp "$q" -E "LD_PRELOAD=$out/ref-$arch.so" "$dir/core/esgd-sim"; then
            want=$(json_get model_fnv1a64 "$out/x86-mlp-ref.json") got=$(json_get model_fnv1a64 "$out/$arch-mlp-ref.json")
            fact ref_fnv "$got"
            if [ -n "$got" ] && [ "$got" = "$want" ]; then
                result PASS "esgd-sim MLP, reference sgemm: model_fnv1a64 $got equals x86-64's, bit for bit"
            else
                result FAIL "esgd-sim MLP, reference sgemm: model_fnv1a64 $got, x86-64 $want"
            fi
        else
            result FAIL "esgd-sim MLP, reference sgemm: exited with an error (above)"
        fi
        # MLP with OpenBLAS.
        if sim "$arch-mlp-blas" mlp "${ours[@]}"; then
            local x=$out/x86-mlp-blas.json a=$out/$arch-mlp-blas.json acc acc86 loss loss86
            acc=$(json_get test_accuracy "$a") acc86=$(json_get test_accuracy "$x")
            loss=$(json_get final_loss "$a") loss86=$(json_get final_loss "$x")
            fact blas_fnv "$(json_get model_fnv1a64 "$a")"
            fact blas_core "$(json_get blas_core "$a")"
            fact accuracy "$acc"
            fact loss "$loss"
            fact mlp_median "$(json_get round_seconds_median "$a")"
            if awk -v a="$acc" -v b="$acc86" -v l="$loss" -v m="$loss86" 'BEGIN {
                    d = a - b; e = l - m
                    exit !(a != "" && l != "" && d <= 0.01 && -d <= 0.01 && e <= 0.02 * m && -e <= 0.02 * m) }'; then
                result PASS "esgd-sim MLP, OpenBLAS ($(json_get blas_core "$a")): accuracy $acc (x86-64 $acc86), loss $loss (x86-64 $loss86): within 0.01 and 2%"
            else
                result FAIL "esgd-sim MLP, OpenBLAS: accuracy $acc (x86-64 $acc86), loss $loss (x86-64 $loss86): beyond 0.01 or 2%"
            fi
        else
            result FAIL "esgd-sim MLP, OpenBLAS: exited with an error (above)"
        fi
    fi
    fact sim_seconds $((SECONDS - t0))

    # The package: architecture, dependencies, programs of the right machine that run.
    t0=$SECONDS
    rm -rf "$dir/packages"
    if ! (cd "$dir" && cpack -G DEB -B "$dir/packages") >"$out/$arch-cpack.log" 2>&1; then
        tail -n 20 "$out/$arch-cpack.log"
        result FAIL "package: cpack failed (above)"
        return
    fi
    local deb problems=() depends dep f
    deb=$(find "$dir/packages" -maxdepth 1 -name "esgd_*_$arch.deb" | head -n 1)
    if [ -z "$deb" ]; then
        result FAIL "package: no esgd_*_$arch.deb in $dir/packages"
        return
    fi
    fact deb "$deb" "$(stat -c %s "$deb")"
    [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || problems+=("Architecture $(dpkg-deb -f "$deb" Architecture)")
    depends=$(dpkg-deb -f "$deb" Depends)
    for dep in adduser libc6 libpaho-mqtt1.3 libmsgpackc2 libopenblas0 libsodium23 libmicrohttpd12; do
        # shellcheck disable=SC2020 # commas and bars both become line breaks
        grep -qx -- "$dep" <<<"$(tr ',|' '\n\n' <<<"$depends" | sed 's/(.*//; s/ //g')" || problems+=("Depends lacks $dep")
    done
    mkdir -p "$out/$arch-root"
    dpkg-deb -x "$deb" "$out/$arch-root"
    for f in esgd-agent esgd-coordinator esgd-watch esgd-sim esgd-keygen; do
        f=$out/$arch-root/usr/bin/$f
        if [ ! -x "$f" ]; then
            problems+=("no /usr/bin/${f##*/}")
        elif ! grep -q "${machine[$arch]}" <<<"$(file -b "$f")"; then
            problems+=("/usr/bin/${f##*/} is $(file -b "$f" | cut -d, -f1-2)")
        elif ! "$q" "$f" --help >"$out/$arch-help.log" 2>&1 || ! grep -q "^usage: ${f##*/}" "$out/$arch-help.log"; then
            problems+=("/usr/bin/${f##*/} --help fails under $q")
        fi
    done
    if ((${#problems[@]})); then
        result FAIL "package $(basename "$deb"): $(IFS=';'; echo "${problems[*]}")"
    else
        result PASS "package $(basename "$deb") ($(stat -c %s "$deb") bytes): Architecture $arch, Depends $depends; its 5 programs are ${machine[$arch]} and run under qemu"
    fi
    fact package_seconds $((SECONDS - t0))
}

for arch in "${arches[@]}"; do
    lane "$arch" >"$out/$arch.out" 2>&1 &
done
wait
for arch in "${arches[@]}"; do
    if [ -s "$out/$arch.out" ]; then
        echo "---- $arch: output of the failed steps ----"
        cat "$out/$arch.out"
    fi
done

# ---- the report ----
echo
pass=0 fail=0 skip=0
for arch in "${arches[@]}"; do
    while read -r status rest; do
        printf '%-4s %s\n' "$status" "$rest"
        case $status in PASS) pass=$((pass + 1)) ;; FAIL) fail=$((fail + 1)) ;; *) skip=$((skip + 1)) ;; esac
    done <"$out/$arch.results"
done
fact() { awk -v k="$2" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$out/$1.facts"; }
echo
if ((x86_ok)); then
    echo "jobs (esgd-sim, first 8,000/1,000 MNIST training/test images): LeNet ${lenet_job[*]}; MLP ${mlp_job[*]}"
    printf '%-7s %-17s %-17s %-17s %-17s %-10s %-6s %-7s %-9s %s\n' target "LeNet fnv" "LeNet fnv no FMA" \
        "MLP fnv OpenBLAS" "MLP fnv ref sgemm" blas_core "MLP acc" "loss" "LeNet round" "MLP round (s, 4 agents)"
    printf '%-7s %-17s %-17s %-17s %-17s %-10s %-6s %-7s %-9s %s\n' x86-64 \
        "$(json_get model_fnv1a64 "$out/x86-lenet-fma.json" 2>/dev/null)" \
        "$(json_get model_fnv1a64 "$out/x86-lenet-nofma.json" 2>/dev/null)" \
        "$(json_get model_fnv1a64 "$out/x86-mlp-blas.json")" "$(json_get model_fnv1a64 "$out/x86-mlp-ref.json")" \
        "$(json_get blas_core "$out/x86-mlp-blas.json")" "$(json_get test_accuracy "$out/x86-mlp-blas.json")" \
        "$(json_get final_loss "$out/x86-mlp-blas.json")" "$(json_get round_seconds_median "$out/$lenet_x86.json")" \
        "$(json_get round_seconds_median "$out/x86-mlp-blas.json")"
    for arch in "${arches[@]}"; do
        lenet=$(fact "$arch" lenet_fnv) nofma=
        [ "$(fact "$arch" lenet_fuses)" = "no FMA" ] && nofma=$lenet lenet=
        printf '%-7s %-17s %-17s %-17s %-17s %-10s %-6s %-7s %-9s %s (qemu)\n' "$arch" "$lenet" "$nofma" \
            "$(fact "$arch" blas_fnv)" "$(fact "$arch" ref_fnv)" "$(fact "$arch" blas_core)" "$(fact "$arch" accuracy)" \
            "$(fact "$arch" loss)" "$(fact "$arch" lenet_median)" "$(fact "$arch" mlp_median)"
    done
fi
for arch in "${arches[@]}"; do
    deb=$(fact "$arch" deb)
    [ -n "$deb" ] && echo "package: ${deb% *} (${deb##* } bytes)"
    echo "$arch lane: build $(fact "$arch" build_seconds) s, unit tests $(fact "$arch" unit_seconds) s," \
        "esgd-sim $(fact "$arch" sim_seconds) s, package $(fact "$arch" package_seconds) s"
done
say "took $((SECONDS - started)) s"
say "$pass passed, $fail failed, $skip skipped"
((fail == 0))
