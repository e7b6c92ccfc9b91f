/* A reference cblas_sgemm for scripts/arm-check.sh: built as a shared
 * object and preloaded (LD_PRELOAD) into esgd-sim, it replaces OpenBLAS's
 * sgemm with one fixed summation order, the same on every CPU. OpenBLAS's
 * kernels sum in an order of their own per architecture (and per x86 CPU
 * type), so a model trained with them ends on different bits on x86-64,
 * arm64 and armhf; with this one, the rest of the program (sparsifiers,
 * codec, aggregation, random numbers, libm) can be compared bit for bit.
 *
 * Row-major only, as the core calls it. Build with -ffp-contract=off (no
 * fused multiply-add) so every CPU rounds each product and sum alike. Each
 * C[i][j] = alpha * (sum over p in order of A(i,p) * B(p,j)) + beta * C[i][j],
 * C not read when beta is 0, as BLAS specifies. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

void cblas_sgemm(OPENBLAS_CONST enum CBLAS_ORDER order, OPENBLAS_CONST enum CBLAS_TRANSPOSE trans_a,
                 OPENBLAS_CONST enum CBLAS_TRANSPOSE trans_b, OPENBLAS_CONST blasint m, OPENBLAS_CONST blasint n,
                 OPENBLAS_CONST blasint k, OPENBLAS_CONST float alpha, OPENBLAS_CONST float *a,
                 OPENBLAS_CONST blasint lda, OPENBLAS_CONST float *b, OPENBLAS_CONST blasint ldb,
                 OPENBLAS_CONST float beta, float *c, OPENBLAS_CONST blasint ldc)
{
    if (order != CblasRowMajor) {
        fprintf(stderr, "ref_sgemm: only CblasRowMajor is implemented\n");
        abort();
    }
    /* A(i,p) = a[i*ia + p*pa], B(p,j) = b[p*pb + j*jb] */
    size_t ia = trans_a == CblasNoTrans ? (size_t)lda : 1, pa = trans_a == CblasNoTrans ? 1 : (size_t)lda;
    size_t pb = trans_b == CblasNoTrans ? (size_t)ldb : 1, jb = trans_b == CblasNoTrans ? 1 : (size_t)ldb;
    for (blasint i = 0; i < m; i++) {
        const float *row = a + (size_t)i * ia;
        float *out = c + (size_t)i * (size_t)ldc;
        for (blasint j = 0; j < n; j++) {
            const float *col = b + (size_t)j * jb;
            float sum = 0.0f;
            for (blasint p = 0; p < k; p++)
                sum += row[(size_t)p * pa] * col[(size_t)p * pb];
            out[j] = beta == 0.0f ? alpha * sum : alpha * sum + beta * out[j];
        }
    }
}
