#!/usr/bin/env bash
# Pinned model fingerprints: esgd-sim with fixed seeds must end on exactly
# these models (model_fnv1a64), one-thread OpenBLAS on x86-64. A change that
# moves them must say so in its commit and closing note and update the
# values here; matches_sim.sh separately checks that the broker run equals
# the simulator. Last code move: double-precision aggregation and the
# median loss signal (robust aggregation, 2026-12-02); on 2026-12-03 the
# pins moved from Haswell's kernels to Prescott's (same code). On 2026-12-03
# the three LeNet pins moved (54509c27043ff159 -> dde47eed36dcaf83,
# 8a25363d0bf86e9b -> 6166870c29c13263, c71be179f2758b38 -> b967814f4caa6452):
# the fused LeNet's conv2 and dense layers left OpenBLAS for model_gemm.c,
# whose fixed summation order (k ascending, fused multiply-adds) makes LeNet's
# bits the same whatever OpenBLAS kernel runs, on every CPU with FMA; the MLP
# pin (still sgemm) did not move.
source "$(dirname "$0")/common.sh" "$1"
[ "$(uname -m)" = x86_64 ] || { echo "SKIP: fingerprints are pinned for x86-64"; exit 77; }
# LeNet's own kernels (core/src/model_gemm.c, conv1) fuse multiply-adds on
# x86-64-v3 and up; a CPU without AVX2 and FMA rounds them apart: other bits.
grep -qw fma /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo ||
    { echo "SKIP: the pins are for x86-64 CPUs with AVX2 and FMA (x86-64-v3)"; exit 77; }
# The OpenBLAS kernel (OPENBLAS_CORETYPE, or what OpenBLAS picks for the
# CPU) decides the float results, so the test chooses it: Prescott's SSE3
# kernels run on every x86-64 CPU, so the pins hold on any machine (without
# it, CI's CPU and this project's dev VM get other kernels than a laptop).
pinned_core=Prescott
export OPENBLAS_CORETYPE=$pinned_core
check() {
    local want=$1 got core
    shift
    OPENBLAS_NUM_THREADS=1 "$sim_bin" --data "$data" --agents 4 --json "$@" >"$work/run.json" 2>>"$work/sim.log" ||
        fail "esgd-sim failed: $*"
    core=$(json_get blas_core "$work/run.json")
    [ "$core" = "$pinned_core" ] ||
        fail "OPENBLAS_CORETYPE=$pinned_core was set but OpenBLAS used $core kernels (not a DYNAMIC_ARCH build?)"
    got=$(json_get model_fnv1a64 "$work/run.json")
    echo "$* -> $got"
    [ "$got" = "$want" ] || fail "model $got, pinned $want, for: $*"
}
check dde47eed36dcaf83 --model lenet --method esgd --drop 0.875 --rounds 60 --seed 1
check 64900cfb28170682 --model mlp --method dgc --drop 0.99 --rounds 60 --seed 2
check 6166870c29c13263 --model lenet --method topk --drop 0.99 --values f16 --rounds 40 --seed 3 --partition noniid
# The compressed downlink (added 2026-12-03; the three pins above did not move then).
check b967814f4caa6452 --model lenet --method dgc --drop 0.99 --down-drop 0.99 --rounds 40 --seed 4
echo PASS
