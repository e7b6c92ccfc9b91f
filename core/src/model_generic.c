/* The layer-by-layer path: forward and backward passes for any model spec
 * (model_spec.h), one layer at a time, every tensor stored per example as
 * (channel, height, width). Dense layers and convolutions run on OpenBLAS
 * sgemm (a convolution as im2col of one example times the filters), so a
 * user's network gets the same BLAS kernels as the fused LeNet. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "model_impl.h"

/* col (in_c * kh * kw, out_h * out_w) of one example x (in_c, h, w):
 * col[(c, ki, kj)][(oy, ox)] = x[c][oy + ki - pad_top][ox + kj - pad_left],
 * zero outside the input. */
static void im2col(const layer_spec *l, const float *x, float *col)
{
    const tensor_shape *in = &l->in, *out = &l->out;
    for (uint32_t c = 0; c < in->c; c++)
        for (uint32_t ki = 0; ki < l->kh; ki++)
            for (uint32_t kj = 0; kj < l->kw; kj++)
                for (uint32_t oy = 0; oy < out->h; oy++) {
                    long y = (long)oy + ki - l->pad_top;
                    float *dst = col + (((size_t)(c * l->kh + ki) * l->kw + kj) * out->h + oy) * out->w;
                    if (y < 0 || y >= (long)in->h) {
                        memset(dst, 0, out->w * sizeof(float));
                        continue;
                    }
                    const float *row = x + ((size_t)c * in->h + (size_t)y) * in->w;
                    for (uint32_t ox = 0; ox < out->w; ox++) {
                        long xx = (long)ox + kj - l->pad_left;
                        dst[ox] = xx < 0 || xx >= (long)in->w ? 0.0f : row[xx];
                    }
                }
}

/* The adjoint of im2col: dx (in_c, h, w) = the sum of the col entries
 * copied from each input cell. */
static void col2im(const layer_spec *l, const float *col, float *dx)
{
    const tensor_shape *in = &l->in, *out = &l->out;
    memset(dx, 0, (size_t)tensor_size(in) * sizeof(float));
    for (uint32_t c = 0; c < in->c; c++)
        for (uint32_t ki = 0; ki < l->kh; ki++)
            for (uint32_t kj = 0; kj < l->kw; kj++)
                for (uint32_t oy = 0; oy < out->h; oy++) {
                    long y = (long)oy + ki - l->pad_top;
                    if (y < 0 || y >= (long)in->h)
                        continue;
                    const float *src = col + (((size_t)(c * l->kh + ki) * l->kw + kj) * out->h + oy) * out->w;
                    float *row = dx + ((size_t)c * in->h + (size_t)y) * in->w;
                    for (uint32_t ox = 0; ox < out->w; ox++) {
                        long xx = (long)ox + kj - l->pad_left;
                        if (xx >= 0 && xx < (long)in->w)
                            row[xx] += src[ox];
                    }
                }
}

static void conv_forward(const layer_spec *ls, const layer *l, const float *x, uint32_t batch, float *col,
                         float *out)
{
    size_t in_size = tensor_size(&ls->in), out_size = tensor_size(&ls->out);
    int pixels = (int)(ls->out.h * ls->out.w);
    for (uint32_t b = 0; b < batch; b++) {
        float *o = out + b * out_size;
        im2col(ls, x + b * in_size, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)l->out, pixels, (int)l->fan_in, 1.0f, l->w,
                    (int)l->fan_in, col, pixels, 0.0f, o, pixels);
        for (uint32_t f = 0; f < l->out; f++)
            for (int p = 0; p < pixels; p++)
                o[(size_t)f * pixels + p] += l->b[f];
    }
}

/* dW = sum over examples of dout col^T, db = sums of dout per filter, and
 * when dx != NULL dx = col2im(W^T dout), im2col recomputed per example
 * rather than kept for the whole batch. */
static void conv_backward(const layer_spec *ls, const layer *l, const float *x, const float *dout, uint32_t batch,
                          float *col, float *dx)
{
    size_t in_size = tensor_size(&ls->in), out_size = tensor_size(&ls->out);
    int pixels = (int)(ls->out.h * ls->out.w);
    memset(l->db, 0, l->out * sizeof(float));
    for (uint32_t b = 0; b < batch; b++) {
        const float *d = dout + b * out_size;
        im2col(ls, x + b * in_size, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)l->out, (int)l->fan_in, pixels, 1.0f, d, pixels,
                    col, pixels, b == 0 ? 0.0f : 1.0f, l->dw, (int)l->fan_in);
        for (uint32_t f = 0; f < l->out; f++)
            for (int p = 0; p < pixels; p++)
                l->db[f] += d[(size_t)f * pixels + p];
        if (dx) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)l->fan_in, pixels, (int)l->out, 1.0f, l->w,
                        (int)l->fan_in, d, pixels, 0.0f, col, pixels);
            col2im(ls, col, dx + b * in_size);
        }
    }
}

/* Non-overlapping kh x kw windows (stride = window); rows and columns past
 * the last full window are left out. arg keeps where each max came from. */
static void maxpool_forward(const layer_spec *l, const float *x, uint32_t batch, float *out, uint32_t *arg)
{
    const tensor_shape *in = &l->in, *o = &l->out;
    size_t in_size = tensor_size(in), out_size = tensor_size(o);
    for (uint32_t b = 0; b < batch; b++)
        for (uint32_t c = 0; c < o->c; c++)
            for (uint32_t oy = 0; oy < o->h; oy++)
                for (uint32_t ox = 0; ox < o->w; ox++) {
                    size_t best = (size_t)c * in->h * in->w + (size_t)oy * l->kh * in->w + (size_t)ox * l->kw;
                    const float *xb = x + b * in_size;
                    for (uint32_t i = 0; i < l->kh; i++)
                        for (uint32_t j = 0; j < l->kw; j++) {
                            size_t at = (size_t)c * in->h * in->w + ((size_t)oy * l->kh + i) * in->w +
                                        (size_t)ox * l->kw + j;
                            if (xb[at] > xb[best])
                                best = at;
                        }
                    size_t k = b * out_size + ((size_t)c * o->h + oy) * o->w + ox;
                    out[k] = xb[best];
                    arg[k] = (uint32_t)best;
                }
}

static void maxpool_backward(const layer_spec *l, const float *dout, const uint32_t *arg, uint32_t batch, float *dx)
{
    size_t in_size = tensor_size(&l->in), out_size = tensor_size(&l->out);
    memset(dx, 0, batch * in_size * sizeof(float));
    for (uint32_t b = 0; b < batch; b++)
        for (size_t k = 0; k < out_size; k++)
            dx[b * in_size + arg[b * out_size + k]] += dout[b * out_size + k];
}

void generic_forward(const model_spec *spec, model_impl *m, const float *x, uint32_t batch)
{
    m->act[0] = (float *)x; /* read only: no layer writes its input */
    for (uint32_t i = 0; i < spec->num_layers; i++) {
        const layer_spec *ls = &spec->layers[i];
        const float *in = m->act[i];
        float *out = m->act[i + 1];
        size_t n = (size_t)batch * tensor_size(&ls->out);
        switch (ls->kind) {
        case LAYER_DENSE:
            fc_forward(&m->layers[m->param_layer[i]], in, batch, out, false);
            break;
        case LAYER_CONV:
            conv_forward(ls, &m->layers[m->param_layer[i]], in, batch, m->col, out);
            break;
        case LAYER_MAXPOOL:
            maxpool_forward(ls, in, batch, out, m->pool_arg[i]);
            break;
        case LAYER_RELU: /* the same test as fc_forward's fused ReLU, so presets keep their bits */
            for (size_t k = 0; k < n; k++)
                out[k] = in[k] < 0.0f ? 0.0f : in[k];
            break;
        case LAYER_TANH:
            for (size_t k = 0; k < n; k++)
                out[k] = tanhf(in[k]);
            break;
        case LAYER_FLATTEN: /* the same values in the same order: share them */
            m->act[i + 1] = m->act[i];
            break;
        }
    }
}

void generic_backward(const model_spec *spec, model_impl *m, uint32_t batch)
{
    for (uint32_t i = spec->num_layers; i-- > 0;) {
        const layer_spec *ls = &spec->layers[i];
        const float *in = m->act[i], *out = m->act[i + 1], *dout = m->dact[i + 1];
        float *dx = i > 0 ? m->dact[i] : NULL; /* the input needs no gradient */
        size_t n = (size_t)batch * tensor_size(&ls->out);
        switch (ls->kind) {
        case LAYER_DENSE:
            fc_backward(&m->layers[m->param_layer[i]], in, dout, batch, dx);
            break;
        case LAYER_CONV:
            conv_backward(ls, &m->layers[m->param_layer[i]], in, dout, batch, m->col, dx);
            break;
        case LAYER_MAXPOOL:
            if (dx)
                maxpool_backward(ls, dout, m->pool_arg[i], batch, dx);
            break;
        case LAYER_RELU:
            if (dx)
                for (size_t k = 0; k < n; k++)
                    dx[k] = out[k] <= 0.0f ? 0.0f : dout[k];
            break;
        case LAYER_TANH:
            if (dx)
                for (size_t k = 0; k < n; k++)
                    dx[k] = dout[k] * (1.0f - out[k] * out[k]);
            break;
        case LAYER_FLATTEN:
            break;
        }
    }
}
