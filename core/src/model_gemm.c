/* The fused LeNet's own matrix products (model_impl.h), in place of
 * OpenBLAS sgemm for its small shapes. Two reasons: speed (no packing, and
 * no dependence on the kernel OpenBLAS picks for the CPU: Debian's 0.3.21
 * falls back to its SSE3 "Prescott" kernels on CPUs it does not know, such
 * as this project's Xeon, where sgemm was 70% of a LeNet step), and results
 * that do not depend on the machine.
 *
 * The summation order is fixed by the code, not by the vector width or
 * the blocking: gemm_rows sums every output over k in ascending order into
 * one running value that starts at zero, and vectorises across outputs (a
 * vec16 is one AVX-512 register, two AVX2 or four SSE/NEON ones). The
 * x86-64-v3 and v4 code and any target with a fused multiply-add (aarch64,
 * armhf with VFPv4) fuse every a*b+c (SIMD_KERNEL_FMA, simd.h), so on all
 * of those the results are the same bits; x86-64 CPUs without FMA and
 * armhf without VFPv4 round the product separately and get
 * other (equally valid) bits. */
#include <stdint.h>
#include <string.h>

#include "model_impl.h"
#include "simd.h"

typedef float vec16 __attribute__((vector_size(64)));

/* Unaligned loads and stores of 16 floats (macros: a function returning a
 * vec16 would change the ABI between the clones). */
#define LOAD16(v, p) memcpy(&(v), (p), sizeof(vec16))

/* gemm_rows' body for blocks of R outputs m (R accumulators of 16 floats
 * in registers), the last M mod R rows one at a time; the columns past the
 * last full 16 in the same vector code, zero-padded (scalar code might be
 * contracted differently). A macro, instantiated per register file below. */
#define GEMM_ROWS_BODY(R)                                                                                          \
    uint32_t m = 0;                                                                                                \
    for (; m + (R) <= M; m += (R))                                                                                 \
        for (uint32_t n = 0; n < N; n += 16) {                                                                     \
            size_t width = (N - n < 16 ? N - n : 16) * sizeof(float);                                            \
            vec16 s[R];                                                                                            \
            _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++) s[r] = (vec16){0};                              \
            const float *b = B + n;                                                                                \
            for (uint32_t k = 0; k < K; k++, b += ldb) {                                                           \
                vec16 bv = {0};                                                                                    \
                if (width == sizeof bv)                                                                            \
                    LOAD16(bv, b);                                                                                 \
                else                                                                                               \
                    memcpy(&bv, b, width);                                                                         \
                const float *a = A + m * sam + k * sak;                                                            \
                _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++) s[r] += a[r * sam] * bv;                    \
            }                                                                                                      \
            _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++) memcpy(C + (m + r) * ldc + n, &s[r], width);   \
        }                                                                                                          \
    for (; m < M; m++)                                                                                             \
        for (uint32_t n = 0; n < N; n += 16) {                                                                     \
            size_t width = (N - n < 16 ? N - n : 16) * sizeof(float);                                            \
            vec16 s0 = {0};                                                                                        \
            const float *b = B + n, *a = A + m * sam;                                                              \
            for (uint32_t k = 0; k < K; k++, b += ldb) {                                                           \
                vec16 bv = {0};                                                                                    \
                memcpy(&bv, b, width);                                                                             \
                s0 += a[k * sak] * bv;                                                                             \
            }                                                                                                      \
            memcpy(C + m * ldc + n, &s0, width);                                                                   \
        }

/* Four rows: 4 (AVX-512) or 8 (AVX2) accumulator registers, the portable
 * version everywhere. */
SIMD_KERNEL_FMA
void gemm_rows_portable(uint32_t M, uint32_t N, uint32_t K, const float *A, size_t sam, size_t sak, const float *B,
                       size_t ldb, float *C, size_t ldc)
{
    GEMM_ROWS_BODY(4)
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__has_attribute)
#if __has_attribute(target_clones)
/* Eight rows for AVX-512's 32 registers: eight independent sums keep both
 * FMA units busy (four left half of them waiting on latency). */
#define GEMM_ROWS8 1
__attribute__((target("arch=x86-64-v4"), optimize("fp-contract=fast"))) static void
gemm_rows8(uint32_t M, uint32_t N, uint32_t K, const float *A, size_t sam, size_t sak, const float *B, size_t ldb,
           float *C, size_t ldc)
{
    GEMM_ROWS_BODY(8)
}
#endif
#endif

void gemm_rows(uint32_t M, uint32_t N, uint32_t K, const float *A, size_t sam, size_t sak, const float *B, size_t ldb,
               float *C, size_t ldc)
{
#ifdef GEMM_ROWS8
    if (__builtin_cpu_supports("x86-64-v4")) {
        gemm_rows8(M, N, K, A, sam, sak, B, ldb, C, ldc);
        return;
    }
#endif
    gemm_rows_portable(M, N, K, A, sam, sak, B, ldb, C, ldc);
}
