/* The fused LeNet's own matrix products (model_impl.h), in place of
 * OpenBLAS sgemm for its small shapes. Two reasons: speed (no packing, and
 * no dependence on the kernel OpenBLAS picks for the CPU: Debian's 0.3.21
 * falls back to its SSE3 "Prescott" kernels on CPUs it does not know, such
 * as this project's Xeon, where sgemm was 70% of a LeNet step), and results
 * that do not depend on the machine.
 *
 * The summation order is fixed by the code, not by the vector width or
 * the blocking: gemm_rows sums every output over k in ascending order into
 * one running value that starts at zero, and vectorises across outputs:
 * tiles of R rows by up to 64 columns in AVX-512 registers (x86-64-v4,
 * picked at run time), 6 x 16 in AVX2 ones (v3), 4 x 8 or, on aarch64,
 * 4 x 16 in 4-float vectors elsewhere (gemm_rows_portable). The
 * x86-64-v3 and v4 code and any target with a fused multiply-add (aarch64,
 * armhf with VFPv4) fuse every a*b+c (SIMD_KERNEL_FMA, simd.h), so on all
 * of those the results are the same bits; x86-64 CPUs without FMA and
 * armhf without VFPv4 round the product separately and get
 * other (equally valid) bits.
 *
 * Any tiling that keeps that per-output chain keeps the bits: the outputs
 * are independent, so which of them share a register, a tile or a pass
 * over B, and whether the columns past the last full 16 are padded or
 * masked, changes nothing. The accumulators must never have their address
 * taken inside the k loop (a variable-length memcpy out of them did that
 * once and put every one of them on the stack, a load and a store per
 * multiply-add). */
#include <stdint.h>
#include <string.h>

#include "model_impl.h"
#include "simd.h"

/* ---- portable: GCC vector extensions, every target ---- */

/* Vectors of a width every target has registers for (SSE, NEON; VFP-only
 * armhf splits them into scalars), and AVX2's for the x86-64-v3 code. An
 * array of vectors wider than the target's registers (a 64-byte vec16 on
 * AVX2 or NEON) is kept in memory by GCC, every multiply-add a load and a
 * store: tiles are built of native vectors only. */
typedef float vec4 __attribute__((vector_size(16)));
typedef float vec8 __attribute__((vector_size(32)));

/* The first w < 16 floats at p into the zero-padded float t[16], in pieces
 * of fixed size: a variable-length memcpy is a library call, and the
 * accumulators live across it would go to the stack. */
#define LOAD_TAIL(t, p, w)                                                                                         \
    do {                                                                                                           \
        uint32_t o_ = 0;                                                                                           \
        if ((w) & 8)                                                                                               \
            memcpy((t), (p), 8 * sizeof(float)), o_ = 8;                                                           \
        if ((w) & 4)                                                                                               \
            memcpy((t) + o_, (p) + o_, 4 * sizeof(float)), o_ += 4;                                                \
        if ((w) & 2)                                                                                               \
            memcpy((t) + o_, (p) + o_, 2 * sizeof(float)), o_ += 2;                                                \
        if ((w) & 1)                                                                                               \
            (t)[o_] = (p)[o_];                                                                                     \
    } while (0)

/* One tile: R rows m by V vectors of type VT (L floats each) of columns
 * from n, R x V accumulators over all of K. FULL: the tile's V * L
 * columns are all in the matrix; else the N - n < V * L left are loaded
 * zero-padded and stored through a copy (never the accumulators' own
 * address, so they stay in registers). Constant-size memcpy is a plain
 * unaligned load or store. */
#define PORTABLE_TILE(VT, L, V, R, FULL)                                                                           \
    do {                                                                                                           \
        VT s[R][V];                                                                                                \
        _Pragma("GCC unroll 8") for (int r = 0; r < (R); r++)                                                      \
            _Pragma("GCC unroll 4") for (int v = 0; v < (V); v++) s[r][v] = (VT){0};                               \
        const float *b = B + n, *a = A + m * sam;                                                                  \
        for (uint32_t k = 0; k < K; k++, b += ldb, a += sak) {                                                     \
            VT bv[V];                                                                                              \
            if (FULL) {                                                                                            \
                _Pragma("GCC unroll 4") for (int v = 0; v < (V); v++) memcpy(&bv[v], b + v * (L), sizeof(VT));    \
            } else {                                                                                               \
                float t_[16] = {0};                                                                                \
                LOAD_TAIL(t_, b, N - n);                                                                           \
                _Pragma("GCC unroll 4") for (int v = 0; v < (V); v++) memcpy(&bv[v], t_ + v * (L), sizeof(VT));   \
            }                                                                                                      \
            _Pragma("GCC unroll 8") for (int r = 0; r < (R); r++)                                                  \
            {                                                                                                      \
                float ar = a[r * sam];                                                                             \
                _Pragma("GCC unroll 4") for (int v = 0; v < (V); v++) s[r][v] += ar * bv[v];                       \
            }                                                                                                      \
        }                                                                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < (R); r++)                                                      \
        {                                                                                                          \
            float *c = C + (m + r) * ldc + n;                                                                      \
            if (FULL) {                                                                                            \
                _Pragma("GCC unroll 4") for (int v = 0; v < (V); v++) memcpy(c + v * (L), &s[r][v], sizeof(VT));  \
            } else {                                                                                               \
                float t_[16];                                                                                      \
                _Pragma("GCC unroll 4") for (int v = 0; v < (V); v++) memcpy(t_ + v * (L), &s[r][v], sizeof(VT)); \
                memcpy(c, t_, (N - n) * sizeof(float));                                                            \
            }                                                                                                      \
        }                                                                                                          \
    } while (0)

/* The body of a gemm_rows on R x (V vectors of L floats) tiles, the last
 * M mod R rows one at a time, the last N mod (V L) columns padded. */
#define PORTABLE_BODY(VT, L, V, R)                                                                                 \
    do {                                                                                                           \
        const uint32_t cols = (V) * (L), full = N / cols * cols;                                                   \
        for (uint32_t n = 0; n < full; n += cols) {                                                                \
            uint32_t m = 0;                                                                                        \
            for (; m + (R) <= M; m += (R))                                                                         \
                PORTABLE_TILE(VT, L, V, R, 1);                                                                     \
            for (; m < M; m++)                                                                                     \
                PORTABLE_TILE(VT, L, V, 1, 1);                                                                     \
        }                                                                                                          \
        if (full < N) {                                                                                            \
            uint32_t n = full, m = 0;                                                                              \
            for (; m + (R) <= M; m += (R))                                                                         \
                PORTABLE_TILE(VT, L, V, R, 0);                                                                     \
            for (; m < M; m++)                                                                                     \
                PORTABLE_TILE(VT, L, V, 1, 0);                                                                     \
        }                                                                                                          \
    } while (0)

/* Four rows by 16 columns on aarch64 (16 of its 32 NEON registers), by 8
 * elsewhere (8 of the 16 registers of armhf NEON or SSE). */
#if defined(__aarch64__)
#define PORTABLE_VECTORS 4
#else
#define PORTABLE_VECTORS 2
#endif

SIMD_KERNEL_FMA
void gemm_rows_portable(uint32_t M, uint32_t N, uint32_t K, const float *A, size_t sam, size_t sak, const float *B,
                        size_t ldb, float *C, size_t ldc)
{
    PORTABLE_BODY(vec4, 4, PORTABLE_VECTORS, 4);
}

/* ---- x86-64-v4 (AVX-512 masked loads and stores) and v3 ---- */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define GEMM_V4 1

/* The multiply-adds are written a*b+c and fused by the compiler
 * (fp-contract), as in the portable code, not with _mm512_fmadd_ps: so the
 * two fuse under the same optimisation levels (GCC fuses nothing at -O0
 * or -O1) and always agree. */
#define V4_FN static __attribute__((target("arch=x86-64-v4"), optimize("fp-contract=fast"), noinline))

/* One tile: R rows by V vectors of 16 columns, R x V accumulators in
 * registers over all of K (V + R loads per R x V multiply-adds: the A
 * values are broadcast from memory). The last vector is loaded and stored
 * under the mask last (all ones when the tile's columns are whole
 * vectors), so partial tiles cost what full ones do and never read or
 * write past a row. SAM is A's row stride, a constant 1 in the transposed
 * instance so the R broadcasts are fixed offsets from one pointer. */
#define TILE_BODY(R, V, SAM)                                                                                       \
    do {                                                                                                           \
        __m512 s[R][V];                                                                                            \
        _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++)                                                     \
            _Pragma("GCC unroll 4") for (int v = 0; v < (V); v++) s[r][v] = _mm512_setzero_ps();                   \
        for (uint32_t k = 0; k < K; k++, a += sak, b += ldb) {                                                     \
            __m512 bv[V];                                                                                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < (V); v++) bv[v] =                                          \
                v + 1 < (V) ? _mm512_loadu_ps(b + 16 * v) : _mm512_maskz_loadu_ps(last, b + 16 * v);               \
            _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++)                                                 \
            {                                                                                                      \
                __m512 ar = _mm512_set1_ps(a[r * (SAM)]);                                                          \
                _Pragma("GCC unroll 4") for (int v = 0; v < (V); v++) s[r][v] += ar * bv[v];                       \
            }                                                                                                      \
        }                                                                                                          \
        _Pragma("GCC unroll 16") for (int r = 0; r < (R); r++)                                                     \
            _Pragma("GCC unroll 4") for (int v = 0; v < (V); v++)                                                  \
        {                                                                                                          \
            if (v + 1 < (V))                                                                                       \
                _mm512_storeu_ps(c + r * ldc + 16 * v, s[r][v]);                                                   \
            else                                                                                                   \
                _mm512_mask_storeu_ps(c + r * ldc + 16 * v, last, s[r][v]);                                        \
        }                                                                                                          \
    } while (0)

typedef void tile_fn(uint32_t K, const float *a, size_t sam, size_t sak, const float *b, size_t ldb, float *c,
                     size_t ldc, __mmask16 last);

#define TILE(R, V)                                                                                                 \
    V4_FN void tile_##R##x##V(uint32_t K, const float *a, size_t sam, size_t sak, const float *b, size_t ldb,      \
                              float *c, size_t ldc, __mmask16 last)                                                \
    {                                                                                                              \
        if (sam == 1)                                                                                              \
            TILE_BODY(R, V, 1);                                                                                    \
        else                                                                                                       \
            TILE_BODY(R, V, sam);                                                                                  \
    }
#define TILE_PTR(R, V) tile_##R##x##V,

/* Tiles of up to 24 accumulators (of AVX-512's 32 registers; the rest
 * hold B and the broadcast), every row count up to that for the last
 * rows: 6 x 4, 8 x 3, 12 x 2 and 16 x 1 vectors. */
#define ROWS6(X, V) X(1, V) X(2, V) X(3, V) X(4, V) X(5, V) X(6, V)
#define ROWS8(X, V) ROWS6(X, V) X(7, V) X(8, V)
#define ROWS12(X, V) ROWS8(X, V) X(9, V) X(10, V) X(11, V) X(12, V)
#define ROWS16(X, V) ROWS12(X, V) X(13, V) X(14, V) X(15, V) X(16, V)

ROWS16(TILE, 1)
ROWS12(TILE, 2)
ROWS8(TILE, 3)
ROWS6(TILE, 4)

static tile_fn *const tiles1[] = {ROWS16(TILE_PTR, 1)};
static tile_fn *const tiles2[] = {ROWS12(TILE_PTR, 2)};
static tile_fn *const tiles3[] = {ROWS8(TILE_PTR, 3)};
static tile_fn *const tiles4[] = {ROWS6(TILE_PTR, 4)};
static tile_fn *const *const tiles[5] = {NULL, tiles1, tiles2, tiles3, tiles4};
static const uint32_t tile_rows[5] = {0, 16, 12, 8, 6};

/* Column panels of up to 64 (4 vectors) outer, row tiles inner, so a
 * panel of B (K x 64 floats) is read from L1 by every row tile after the
 * first. Panels of 48 when 8-row tiles cover M and 6-row ones do not
 * (conv2's 16 filters: 8 + 8 rather than 6 + 6 + 4, some 10% faster). */
V4_FN void gemm_rows_v4(uint32_t M, uint32_t N, uint32_t K, const float *A, size_t sam, size_t sak, const float *B,
                        size_t ldb, float *C, size_t ldc)
{
    uint32_t panel = M % 6 != 0 && M % 8 == 0 ? 48 : 64;
    for (uint32_t n = 0; n < N; n += panel) {
        uint32_t width = N - n < panel ? N - n : panel, vectors = (width + 15) / 16, rows = tile_rows[vectors];
        __mmask16 last = width % 16 ? (__mmask16)((1u << (width % 16)) - 1) : (__mmask16)0xFFFF;
        for (uint32_t m = 0; m < M; m += rows) {
            uint32_t r = M - m < rows ? M - m : rows;
            tiles[vectors][r - 1](K, A + m * sam, sam, sak, B + n, ldb, C + m * ldc + n, ldc, last);
        }
    }
}

/* x86-64-v3 (AVX2, FMA): six rows by two 8-float vectors, 12 of its 16
 * registers. */
#define GEMM_V3 1
static __attribute__((target("arch=x86-64-v3"), optimize("fp-contract=fast"), noinline)) void
gemm_rows_v3(uint32_t M, uint32_t N, uint32_t K, const float *A, size_t sam, size_t sak, const float *B, size_t ldb,
             float *C, size_t ldc)
{
    PORTABLE_BODY(vec8, 8, 2, 6);
}
#endif

void gemm_rows(uint32_t M, uint32_t N, uint32_t K, const float *A, size_t sam, size_t sak, const float *B, size_t ldb,
               float *C, size_t ldc)
{
#ifdef GEMM_V4
    if (__builtin_cpu_supports("x86-64-v4")) {
        gemm_rows_v4(M, N, K, A, sam, sak, B, ldb, C, ldc);
        return;
    }
#endif
#ifdef GEMM_V3
    if (__builtin_cpu_supports("x86-64-v3")) {
        gemm_rows_v3(M, N, K, A, sam, sak, B, ldb, C, ldc);
        return;
    }
#endif
    gemm_rows_portable(M, N, K, A, sam, sak, B, ldb, C, ldc);
}
