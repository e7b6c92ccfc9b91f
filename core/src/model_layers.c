/* The fused LeNet-5 kernels, which run the "lenet" spec (and any spec that
 * is the same network), the dense layer both paths share, and softmax
 * cross-entropy: the fused path's fc layers and conv2 on model_gemm.c's
 * products (the shared dense layer, for other specs, on OpenBLAS sgemm),
 * conv1 as a direct vectorised loop, ReLU fused with 2x2 max pooling. They read the
 * parameters through the layer views and write only into the workspace
 * model.c sized once (model_impl.h), so a step never allocates. Other
 * specs run layer by layer (model_generic.c).
 *
 * Convolution activations use the CNHW layout (channel, example, row, col):
 * then conv2's batch-wide im2col matrix has one row per (in channel, ki, kj)
 * and one column per (example, output pixel), conv2 is the single GEMM
 * W (16, 150) x col, and its output is again CNHW with no transpose
 * anywhere. The last pooling writes straight into the per-example
 * (channel, row, col) order the first fc layer reads. */
#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "model_impl.h"
#include "simd.h"

/* ---- layers ---- */

/* out (batch, out) = x (batch, in) W^T + b, then ReLU if asked. */
void fc_forward(const layer *l, const float *x, uint32_t batch, float *out, bool relu)
{
    int in = (int)l->in, n_out = (int)l->out;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)batch, n_out, in, 1.0f, x, in, l->w, in, 0.0f, out,
                n_out);
    for (uint32_t i = 0; i < batch; i++) {
        float *row = out + (size_t)i * l->out;
        for (uint32_t o = 0; o < l->out; o++) {
            float v = row[o] + l->b[o];
            row[o] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* From dout (batch, out): dW = dout^T x, db = column sums of dout, and
 * dx (batch, in) = dout W when dx != NULL. */
void fc_backward(const layer *l, const float *x, const float *dout, uint32_t batch, float *dx)
{
    int in = (int)l->in, n_out = (int)l->out;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, in, (int)batch, 1.0f, dout, n_out, x, in, 0.0f, l->dw,
                in);
    memset(l->db, 0, l->out * sizeof(float));
    for (uint32_t i = 0; i < batch; i++)
        for (uint32_t o = 0; o < l->out; o++)
            l->db[o] += dout[(size_t)i * l->out + o];
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)batch, in, n_out, 1.0f, dout, n_out, l->w, in,
                    0.0f, dx, in);
}

/* a holds ReLU outputs: the gradient passes only where the unit was on. */
static void relu_backward(const float *a, float *da, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] <= 0.0f)
            da[i] = 0.0f;
}

/* conv1 runs directly rather than as an im2col GEMM: with one input channel
 * and six outputs that GEMM is 6 x 25 x (batch*784), a shape where sgemm
 * spends its time packing, and the weight gradient (K = batch*784) ran at a
 * fifth of sgemm's usual speed. Each example is zero-padded into a 32-wide
 * plane; the output is computed on "wide" rows of 32 (the last 4 columns
 * are junk and ignored), so every kernel tap is one shift of a contiguous
 * vector and the loops below vectorise without gathers. */
/* GCC vector extension: eight floats, one AVX register where available. */
typedef float vec8 __attribute__((vector_size(32)));

/* The direct conv1 kernels get an AVX2/FMA clone picked at load time, since
 * the default x86-64 target has neither (SIMD_KERNEL_FMA, simd.h); elsewhere
 * they build as plain C. */

/* x (batch, 28, 28) into the interior of xpad (batch, 33, 32); the border
 * was zeroed at allocation and is never written. */
static void conv1_pad_input(const float *x, uint32_t batch, float *xpad)
{
    for (uint32_t b = 0; b < batch; b++)
        for (uint32_t row = 0; row < CONV1_SIDE; row++)
            memcpy(xpad + (size_t)b * PAD_PLANE + (row + CONV1_PAD) * PAD_W + CONV1_PAD,
                   x + ((size_t)b * CONV1_SIDE + row) * CONV1_SIDE, CONV1_SIDE * sizeof(float));
}

/* out (6, batch, 28, 32 wide) = conv1 weights * xpad, without bias. Blocks
 * of 16 outputs for all six channels stay in registers across the 25 taps. */
SIMD_KERNEL_FMA
static void conv1_forward(const float *w, const float *xpad, uint32_t batch, float *out)
{
    for (uint32_t b = 0; b < batch; b++) {
        const float *in = xpad + (size_t)b * PAD_PLANE;
        for (uint32_t p = 0; p < WIDE_PLANE; p += 16) {
            vec8 acc[CONV1_OUT][2] = {{{0}}};
            for (uint32_t ki = 0; ki < KERNEL; ki++)
                for (uint32_t kj = 0; kj < KERNEL; kj++) {
                    vec8 x0, x1;
                    memcpy(&x0, in + p + ki * PAD_W + kj, sizeof x0);
                    memcpy(&x1, in + p + ki * PAD_W + kj + 8, sizeof x1);
#pragma GCC unroll 6
                    for (uint32_t c = 0; c < CONV1_OUT; c++) {
                        float wc = w[c * CONV1_TAPS + ki * KERNEL + kj];
                        acc[c][0] += wc * x0;
                        acc[c][1] += wc * x1;
                    }
                }
#pragma GCC unroll 6
            for (uint32_t c = 0; c < CONV1_OUT; c++) {
                float *o = out + ((size_t)c * batch + b) * WIDE_PLANE + p;
                memcpy(o, &acc[c][0], sizeof acc[c][0]);
                memcpy(o + 8, &acc[c][1], sizeof acc[c][1]);
            }
        }
    }
}

/* dw (6, 25) = sum over examples and positions of dout * the shifted input.
 * dout's junk columns are zero, so they add nothing. Two channels times one
 * kernel row (5 taps) of accumulators stay in registers. */
SIMD_KERNEL_FMA
static void conv1_backward_weights(const float *dout, const float *xpad, uint32_t batch, float *dw)
{
    for (uint32_t c = 0; c < CONV1_OUT; c += 2)
        for (uint32_t ki = 0; ki < KERNEL; ki++) {
            vec8 acc[2][KERNEL] = {{{0}}};
            for (uint32_t b = 0; b < batch; b++) {
                const float *in = xpad + (size_t)b * PAD_PLANE + ki * PAD_W;
                const float *d0 = dout + ((size_t)c * batch + b) * WIDE_PLANE;
                const float *d1 = d0 + (size_t)batch * WIDE_PLANE;
                for (uint32_t p = 0; p < WIDE_PLANE; p += 8) {
                    vec8 g0, g1;
                    memcpy(&g0, d0 + p, sizeof g0);
                    memcpy(&g1, d1 + p, sizeof g1);
#pragma GCC unroll 5
                    for (uint32_t kj = 0; kj < KERNEL; kj++) {
                        vec8 x;
                        memcpy(&x, in + p + kj, sizeof x);
                        acc[0][kj] += g0 * x;
                        acc[1][kj] += g1 * x;
                    }
                }
            }
#pragma GCC unroll 2
            for (uint32_t i = 0; i < 2; i++)
#pragma GCC unroll 5
                for (uint32_t kj = 0; kj < KERNEL; kj++) {
                    float sum = 0.0f;
                    for (uint32_t lane = 0; lane < 8; lane++)
                        sum += acc[i][kj][lane];
                    dw[(c + i) * CONV1_TAPS + ki * KERNEL + kj] = sum;
                }
        }
}

/* conv2's batch-wide im2col: pool1 (6, batch, 14, 14) to col
 * (6*5*5, batch*10*10), col[(c, ki, kj)][(b, oy, ox)] =
 * pool1[c][b][oy + ki][ox + kj]. No padding, so every row is a plain copy. */
static void conv2_im2col(const float *in, uint32_t batch, float *col)
{
    const size_t plane = POOL1_SIDE * POOL1_SIDE, out_plane = CONV2_SIDE * CONV2_SIDE;
    float *dst = col;
    for (uint32_t c = 0; c < CONV1_OUT; c++)
        for (uint32_t ki = 0; ki < KERNEL; ki++)
            for (uint32_t kj = 0; kj < KERNEL; kj++)
                for (uint32_t b = 0; b < batch; b++, dst += out_plane) {
                    const float *src = in + ((size_t)c * batch + b) * plane + ki * POOL1_SIDE + kj;
                    for (uint32_t oy = 0; oy < CONV2_SIDE; oy++)
                        memcpy(dst + oy * CONV2_SIDE, src + oy * POOL1_SIDE, CONV2_SIDE * sizeof(float));
                }
}

/* The adjoint of conv2_im2col: din[c][b][y][x] sums every col entry that
 * was copied from that pixel. */
static void conv2_col2im(const float *col, uint32_t batch, float *din)
{
    const size_t plane = POOL1_SIDE * POOL1_SIDE, out_plane = CONV2_SIDE * CONV2_SIDE;
    memset(din, 0, (size_t)CONV1_OUT * batch * plane * sizeof(float));
    const float *src = col;
    for (uint32_t c = 0; c < CONV1_OUT; c++)
        for (uint32_t ki = 0; ki < KERNEL; ki++)
            for (uint32_t kj = 0; kj < KERNEL; kj++)
                for (uint32_t b = 0; b < batch; b++, src += out_plane) {
                    float *dst = din + ((size_t)c * batch + b) * plane + ki * POOL1_SIDE + kj;
                    for (uint32_t oy = 0; oy < CONV2_SIDE; oy++) {
                        /* 8 + 2 by hand: -O2 does not vectorise a 10-trip loop */
                        float *d = dst + oy * POOL1_SIDE;
                        const float *c2 = src + oy * CONV2_SIDE;
                        vec8 head, add;
                        memcpy(&head, d, sizeof head);
                        memcpy(&add, c2, sizeof add);
                        head += add;
                        memcpy(d, &head, sizeof head);
                        d[8] += c2[8];
                        d[9] += c2[9];
                    }
                }
}

/* Input planes (channels, batch) of side x side values in rows of
 * row_stride floats, and where each pooled (c, b) plane goes in the output. */
typedef struct pool_geometry {
    uint32_t channels, batch, side, row_stride;
    size_t in_plane;
    size_t channel_stride, example_stride;
} pool_geometry;

/* out = relu(maxpool2x2(conv) + bias[c]). The bias is constant over a
 * window, so adding it after the max gives the same result at a quarter of
 * the cost; arg records the winning cell (the first on ties) for the
 * backward. The maxima and the arg are computed apart, as plain max
 * patterns and integer arithmetic, so the compiler emits no branches: on
 * real data these comparisons are coin flips and mispredicted branches cost
 * several times the arithmetic. */
static void relu_pool_forward(const float *conv, const float *bias, const pool_geometry *g, float *out, uint8_t *arg)
{
    uint32_t half = g->side / 2;
    for (uint32_t c = 0; c < g->channels; c++)
        for (uint32_t b = 0; b < g->batch; b++) {
            size_t plane = (size_t)c * g->batch + b;
            const float *in = conv + plane * g->in_plane;
            uint8_t *a = arg + plane * half * half;
            float *o = out + c * g->channel_stride + b * g->example_stride;
            for (uint32_t py = 0; py < half; py++) {
                const float *r0 = in + (size_t)2 * py * g->row_stride, *r1 = r0 + g->row_stride;
                for (uint32_t px = 0; px < half; px++) {
                    float v0 = r0[2 * px], v1 = r0[2 * px + 1], v2 = r1[2 * px], v3 = r1[2 * px + 1];
                    float top = v1 > v0 ? v1 : v0;
                    float bottom = v3 > v2 ? v3 : v2;
                    float best = (bottom > top ? bottom : top) + bias[c];
                    int lower = bottom > top;
                    int right = (lower & (v3 > v2)) | (!lower & (v1 > v0));
                    o[py * half + px] = best > 0.0f ? best : 0.0f;
                    a[py * half + px] = (uint8_t)(2 * lower + right);
                }
            }
        }
}

/* From dout (laid out like out): dconv gets each window's gradient at its
 * max cell and zero at the other three (every cell of the side x side
 * planes is written, so no memset), and db[c] sums what reached channel c.
 * The ReLU mask is a multiply and the max cell an address, again so that
 * nothing branches on the data. */
static void relu_pool_backward(const float *out, const float *dout, const uint8_t *arg, const pool_geometry *g,
                               float *dconv, float *db)
{
    uint32_t half = g->side / 2;
    for (uint32_t c = 0; c < g->channels; c++) {
        float sum = 0.0f;
        for (uint32_t b = 0; b < g->batch; b++) {
            size_t plane = (size_t)c * g->batch + b;
            float *d = dconv + plane * g->in_plane;
            const uint8_t *a = arg + plane * half * half;
            size_t start = c * g->channel_stride + b * g->example_stride;
            const float *o = out + start, *dout_plane = dout + start;
            for (uint32_t py = 0; py < half; py++) {
                float *r0 = d + (size_t)2 * py * g->row_stride, *r1 = r0 + g->row_stride;
                for (uint32_t px = 0; px < half; px++) {
                    uint32_t p = py * half + px;
                    float grad = dout_plane[p] * (float)(o[p] > 0.0f);
                    sum += grad;
                    r0[2 * px] = r0[2 * px + 1] = r1[2 * px] = r1[2 * px + 1] = 0.0f;
                    r0[2 * px + (a[p] >> 1) * g->row_stride + (a[p] & 1)] = grad;
                }
            }
        }
        db[c] = sum;
    }
}

/* conv2 as one product over the batch: out (16, batch*100) = W (16, 150) x
 * col, each output summed over the 150 taps in order (model_gemm.c). */
static void conv2_forward(const layer *l, const float *col, size_t columns, float *out)
{
    gemm_rows(l->out, (uint32_t)columns, l->fan_in, l->w, l->fan_in, 1, col, columns, out, columns);
}

/* dW (16, 150) = dout col^T, computed as its transpose col dout^T
 * (150, 16) in dw_t, a product whose 16 outputs per row are one vector,
 * each summed over the batch*100 columns in order; dout_t holds dout
 * transposed. Then dcol (150, batch*100) = W^T dout goes into col itself,
 * which dW no longer needs: one buffer instead of two (1.9 MB less
 * resident in an agent at batch 32). Bias gradients come from
 * relu_pool_backward. */
static void conv2_backward(const layer *l, float *col, size_t columns, const float *dout, float *dout_t, float *dw_t)
{
    for (uint32_t o = 0; o < l->out; o++)
        for (size_t n = 0; n < columns; n++)
            dout_t[n * l->out + o] = dout[o * columns + n];
    gemm_rows(l->fan_in, l->out, (uint32_t)columns, col, columns, 1, dout_t, l->out, dw_t, l->out);
    for (uint32_t o = 0; o < l->out; o++)
        for (uint32_t i = 0; i < l->fan_in; i++)
            l->dw[(size_t)o * l->fan_in + i] = dw_t[(size_t)i * l->out + o];
    gemm_rows(l->fan_in, (uint32_t)columns, l->out, l->w, 1, l->fan_in, dout, columns, col, columns);
}

/* The fused path's dense layers, on model_gemm.c rather than sgemm. The
 * forward reads its input feature-major, xt (in, batch), and writes its
 * output both ways: out_t (out, batch) for the next layer's forward and
 * out (batch, out) for the backward. out = x W^T + b, then ReLU if asked:
 * the bias is added to the finished sum, as fc_forward does. */
static void lenet_fc_forward(const layer *l, const float *xt, uint32_t batch, float *out_t, float *out, bool relu)
{
    gemm_rows(l->out, batch, l->in, l->w, l->in, 1, xt, batch, out_t, batch);
    for (uint32_t o = 0; o < l->out; o++)
        for (uint32_t b = 0; b < batch; b++) {
            float v = out_t[(size_t)o * batch + b] + l->b[o];
            v = relu && v < 0.0f ? 0.0f : v;
            out_t[(size_t)o * batch + b] = v;
            out[(size_t)b * l->out + o] = v;
        }
}

/* From dout (batch, out): dW[o][i] = the sum over examples in order of
 * dout[b][o] x[b][i], db as fc_backward, dx (batch, in) = dout W. */
static void lenet_fc_backward(const layer *l, const float *x, const float *dout, uint32_t batch, float *dx)
{
    gemm_rows(l->out, l->in, batch, dout, 1, l->out, x, l->in, l->dw, l->in);
    memset(l->db, 0, l->out * sizeof(float));
    for (uint32_t i = 0; i < batch; i++)
        for (uint32_t o = 0; o < l->out; o++)
            l->db[o] += dout[(size_t)i * l->out + o];
    if (dx)
        gemm_rows(batch, l->in, l->out, dout, l->out, 1, l->w, l->in, dx, l->in);
}

/* xt (cols, rows) = x (rows, cols) transposed. */
static void transpose(const float *x, uint32_t rows, uint32_t cols, float *xt)
{
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t c = 0; c < cols; c++)
            xt[(size_t)c * rows + r] = x[(size_t)r * cols + c];
}

/* Mean cross-entropy of softmax(logits) against y, computed through
 * log-sum-exp so large logits cannot overflow. With dlogits != NULL also
 * writes the gradient of the mean, (softmax - onehot) / batch; with correct
 * != NULL counts the rows whose first largest logit is the label. */
float model_softmax_cross_entropy(const float *logits, const uint8_t *y, uint32_t batch, uint32_t classes,
                                  float *dlogits, uint32_t *correct)
{
    double total = 0.0;
    uint32_t hits = 0;
    for (uint32_t i = 0; i < batch; i++) {
        const float *z = logits + (size_t)i * classes;
        uint32_t top = 0;
        for (uint32_t j = 1; j < classes; j++)
            if (z[j] > z[top])
                top = j;
        hits += top == y[i];
        float max = z[top], sum = 0.0f;
        for (uint32_t j = 0; j < classes; j++)
            sum += expf(z[j] - max);
        total += (double)max + log((double)sum) - (double)z[y[i]];
        if (dlogits) {
            float *dz = dlogits + (size_t)i * classes;
            float scale = 1.0f / (sum * (float)batch);
            for (uint32_t j = 0; j < classes; j++)
                dz[j] = expf(z[j] - max) * scale;
            dz[y[i]] -= 1.0f / (float)batch;
        }
    }
    if (correct)
        *correct = hits;
    return (float)(total / batch);
}

/* ---- whole networks ---- */

static pool_geometry pool1_geometry(uint32_t batch)
{
    return (pool_geometry){.channels = CONV1_OUT,
                           .batch = batch,
                           .side = CONV1_SIDE,
                           .row_stride = PAD_W,
                           .in_plane = WIDE_PLANE,
                           .channel_stride = (size_t)batch * POOL1_SIDE * POOL1_SIDE,
                           .example_stride = POOL1_SIDE * POOL1_SIDE};
}

/* The second pooling writes example-major, the fc layer's (batch, 400). */
static pool_geometry pool2_geometry(uint32_t batch)
{
    return (pool_geometry){.channels = CONV2_OUT,
                           .batch = batch,
                           .side = CONV2_SIDE,
                           .row_stride = CONV2_SIDE,
                           .in_plane = CONV2_SIDE * CONV2_SIDE,
                           .channel_stride = POOL2_SIDE * POOL2_SIDE,
                           .example_stride = FLAT_SIZE};
}

void lenet_forward(model_impl *m, const float *x, uint32_t batch)
{
    const layer *conv1 = &m->layers[0], *conv2 = &m->layers[1];
    pool_geometry g1 = pool1_geometry(batch), g2 = pool2_geometry(batch);

    conv1_pad_input(x, batch, m->xpad);
    conv1_forward(conv1->w, m->xpad, batch, m->conv1);
    relu_pool_forward(m->conv1, conv1->b, &g1, m->pool1, m->arg1);
    conv2_im2col(m->pool1, batch, m->col2);
    conv2_forward(conv2, m->col2, (size_t)batch * CONV2_SIDE * CONV2_SIDE, m->conv2);
    relu_pool_forward(m->conv2, conv2->b, &g2, m->flat, m->arg2);
    /* feature-major copies for the dense layers' forward */
    float *flat_t = m->fc_t, *hidden1_t = flat_t + (size_t)batch * FLAT_SIZE;
    float *hidden2_t = hidden1_t + (size_t)batch * m->layers[2].out;
    float *logits_t = hidden2_t + (size_t)batch * m->layers[3].out;
    transpose(m->flat, batch, FLAT_SIZE, flat_t);
    lenet_fc_forward(&m->layers[2], flat_t, batch, hidden1_t, m->hidden1, true);
    lenet_fc_forward(&m->layers[3], hidden1_t, batch, hidden2_t, m->hidden2, true);
    lenet_fc_forward(&m->layers[4], hidden2_t, batch, logits_t, m->logits, false);
}

/* Needs m->dlogits and the activations of the forward pass just run. */
void lenet_backward(model_impl *m, uint32_t batch)
{
    const layer *conv1 = &m->layers[0], *conv2 = &m->layers[1];
    pool_geometry g1 = pool1_geometry(batch), g2 = pool2_geometry(batch);

    lenet_fc_backward(&m->layers[4], m->hidden2, m->dlogits, batch, m->dhidden2);
    relu_backward(m->hidden2, m->dhidden2, (size_t)batch * m->layers[4].in);
    lenet_fc_backward(&m->layers[3], m->hidden1, m->dhidden2, batch, m->dhidden1);
    relu_backward(m->hidden1, m->dhidden1, (size_t)batch * m->layers[3].in);
    lenet_fc_backward(&m->layers[2], m->flat, m->dhidden1, batch, m->dflat);
    relu_pool_backward(m->flat, m->dflat, m->arg2, &g2, m->dconv2, conv2->db);
    conv2_backward(conv2, m->col2, (size_t)batch * CONV2_SIDE * CONV2_SIDE, m->dconv2, m->dconv2_t, m->dw2_t);
    conv2_col2im(m->col2, batch, m->dpool1);
    relu_pool_backward(m->pool1, m->dpool1, m->arg1, &g1, m->dconv1, conv1->db);
    /* The input needs no gradient, so conv1 stops at its weights. */
    conv1_backward_weights(m->dconv1, m->xpad, batch, conv1->dw);
}
