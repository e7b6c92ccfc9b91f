/* The methods eSGD is measured against (shared/docs/esgd-algorithm.md,
 * "Baselines"): dense SGD, threshold SGD, top-k with error feedback,
 * random-k and Deep Gradient Compression, one select function each, called
 * by sparsifier_select. Each is a few O(d) passes over state sized in
 * sparsifier_new; top-k and DGC rank with the top-m engine (top_m.c). */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "sparsifier_impl.h"

/* ---- dense and threshold SGD -------------------------------------------- */

uint32_t sparsifier_select_dense(sparsifier *s, const float *g)
{
    memcpy(s->out_values, g, (size_t)s->dim * sizeof *g);
    return s->dim;
}

uint32_t sparsifier_select_threshold(sparsifier *s, const float *g)
{
    float *r = s->residual;
    float threshold = s->cfg.threshold;
    uint32_t n = 0;
    for (uint32_t j = 0; j < s->dim; j++) {
        float acc = g[j] + r[j];
        uint32_t send = fabsf(acc) > threshold;
        /* Written unconditionally, kept when sent: n <= j, so in bounds. */
        s->out_indices[n] = j;
        s->out_values[n] = acc;
        n += send;
        /* r = send ? +0 : acc, without a branch: whether a coordinate is
         * sent is a coin flip to the predictor, and the branch made this
         * loop 2.5x slower. */
        r[j] = bits_float(float_bits(acc) & (send - 1u));
    }
    return n;
}

/* ---- top-k with error feedback ------------------------------------------ */

/* Top-k's r += g with keys |r|; restrict (r and g are both float) and a
 * multiple-of-16 trip count let it vectorize. Kept out of line: inlined,
 * GCC 12 drops the restrict guarantee. */
__attribute__((noinline)) static void accumulate_residual(uint32_t d, float *restrict r, const float *restrict g,
                                                          uint32_t *restrict keys)
{
    uint32_t d16 = d & ~15u;
    uint32_t j = 0;
    for (; j < d16; j++) {
        r[j] += g[j];
        keys[j] = float_bits(fabsf(r[j]));
    }
    for (; j < d; j++) {
        r[j] += g[j];
        keys[j] = float_bits(fabsf(r[j]));
    }
}

uint32_t sparsifier_select_topk(sparsifier *s, const float *g)
{
    float *r = s->residual;
    uint32_t *keys = s->keys;
    uint32_t d = s->dim;
    accumulate_residual(d, r, g, keys);
    top_m_select_keys(s->top, keys, d, s->keep, s->out_indices);
    for (uint32_t i = 0; i < s->keep; i++) {
        uint32_t j = s->out_indices[i];
        s->out_values[i] = r[j];
        r[j] = 0.0f;
    }
    return s->keep;
}

/* ---- random-k ------------------------------------------------------------ */

/* Writes the marked coordinates, ascending, into out_indices and clears
 * the marks. Branch-free: n <= k at every write and out has room k + 1. */
static uint32_t collect_picked(sparsifier *s)
{
    uint8_t *picked = s->picked;
    uint32_t n = 0;
    for (uint32_t j = 0; j < s->dim; j++) {
        s->out_indices[n] = j;
        n += picked[j];
    }
    for (uint32_t i = 0; i < n; i++)
        picked[s->out_indices[i]] = 0;
    return n;
}

uint32_t sparsifier_select_randk(sparsifier *s, const float *g)
{
    /* out_indices doubles as the draw buffer before it is filled in order. */
    sparsifier_draw_uniform(s, s->out_indices, s->keep);
    for (uint32_t i = 0; i < s->keep; i++)
        s->picked[s->out_indices[i]] = 1;
    uint32_t n = collect_picked(s);
    assert(n == s->keep);
    for (uint32_t i = 0; i < n; i++)
        s->out_values[i] = g[s->out_indices[i]];
    return n;
}

/* ---- Deep Gradient Compression ------------------------------------------ */

/* ||g||^2 in double (finite: the caller has checked g). */
static double square_sum(const float *g, uint32_t d)
{
    double sum = 0;
    for (uint32_t j = 0; j < d; j++)
        sum += (double)g[j] * g[j];
    return sum;
}

/* Momentum correction: u = m u + c g, v += u, keys |v|. As
 * accumulate_residual: restrict and out of line so it vectorizes. */
__attribute__((noinline)) static void accumulate_momentum(uint32_t d, float *restrict u, float *restrict v,
                                                          const float *restrict g, float m, float c,
                                                          uint32_t *restrict keys)
{
    for (uint32_t j = 0; j < d; j++) {
        u[j] = m * u[j] + c * g[j];
        v[j] += u[j];
        keys[j] = float_bits(fabsf(v[j]));
    }
}

/* The momentum lives on the agent: v, not g, is what is sparsified, so the
 * coordinator's plain x -= lr * mean(sent) applies momentum SGD to every
 * coordinate, late for the ones held back. Sent coordinates restart both
 * their accumulation and their momentum (momentum factor masking), so a
 * stale u does not keep pushing a coordinate that was just applied. */
uint32_t sparsifier_select_dgc(sparsifier *s, const float *g, uint32_t round)
{
    uint32_t d = s->dim, k = sparsifier_keep_at(&s->cfg, d, round);
    float *u = s->momentum, *v = s->residual;
    float c = 1.0f;
    if (s->cfg.dgc_clip > 0.0f) {
        double norm = sqrt(square_sum(g, d));
        if (norm > s->cfg.dgc_clip)
            c = (float)(s->cfg.dgc_clip / norm);
    }
    accumulate_momentum(d, u, v, g, s->cfg.dgc_momentum, c, s->keys);
    top_m_select_keys(s->top, s->keys, d, k, s->out_indices);
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = s->out_indices[i];
        s->out_values[i] = v[j];
        v[j] = 0.0f;
        u[j] = 0.0f;
    }
    return k;
}
