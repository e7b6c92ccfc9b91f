/* The one place that says how the core's hot O(d) loops get CPU-specific
 * code: target_clones, with the clone picked by the loader on x86-64 and
 * plain C elsewhere. Internal to core/src.
 *
 * SIMD_KERNEL: AVX-512 and AVX2 clones, no floating-point contraction, so a
 * value a vector loop computed equals, bit for bit, the same expression
 * computed again in scalar code (the sparsifier recomputes keys it once
 * compared). Out of line, so GCC keeps the loops' restrict guarantees; clang
 * rejects noinline beside target_clones, and its clones cannot be inlined
 * anyway, so it goes without.
 *
 * SIMD_KERNEL_FMA: AVX-512 and AVX2 clones (both with FMA) that fuse a*b+c
 * (GCC in ISO C mode does not unless told to), and fusing on other targets
 * with a hardware FMA, for kernels whose results need not match any scalar
 * code path, such as model_layers.c's direct convolution and model_gemm.c:
 * with the summation order fixed in the code, every CPU with FMA gets the
 * same bits; x86-64's default clone (no FMA) rounds products separately,
 * and so does an unoptimised (-O0) build, where GCC forms no FMAs. */
#ifndef ESGD_SIMD_H
#define ESGD_SIMD_H

#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones) && defined(__clang__)
#define SIMD_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define SIMD_KERNEL_FMA __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif __has_attribute(target_clones)
#define SIMD_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), noinline))
#define SIMD_KERNEL_FMA                                                                                        \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), optimize("fp-contract=fast")))
#endif
#elif defined(__GNUC__) && !defined(__clang__) && defined(__FP_FAST_FMAF)
/* aarch64, armhf with VFPv4: fuse as the x86-64-v3/v4 clones do, so that
 * model_gemm.c's products give the same bits there (clang contracts a*b+c
 * within an expression by default). */
#define SIMD_KERNEL_FMA __attribute__((optimize("fp-contract=fast")))
#endif
#ifndef SIMD_KERNEL
#define SIMD_KERNEL __attribute__((noinline))
#endif
#ifndef SIMD_KERNEL_FMA
#define SIMD_KERNEL_FMA
#endif

#endif
