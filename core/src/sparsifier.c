/* The sparsifier's lifecycle, dispatch and persistence: sparsifier_new
 * checks the configuration and sizes every buffer the chosen method needs
 * (a round allocates nothing), sparsifier_select checks the gradient and
 * hands the round to the method (esgd_rule.c for eSGD,
 * sparsifier_baselines.c for the others), and save/load carry the state
 * from one run to the next. Also k and its DGC warm-up, which the
 * coordinator uses to size its buffers. */
#include <assert.h>
#include <math.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"
#include "sparsifier_impl.h"

/* calloc promises max_align_t's alignment only: the over-aligned tables
 * live in the top-m engine, which top_m_new allocates aligned. */
_Static_assert(alignof(sparsifier) <= alignof(max_align_t), "sparsifier_new's calloc must honour the alignment");

/* ---- k ------------------------------------------------------------------ */

uint32_t sparsifier_keep_count(uint32_t dim, double drop_ratio)
{
    if (dim == 0)
        return 0;
    /* (1 - drop) * d carries rounding error of about 1e-16 * d: subtract a
     * little more than that so 0.875 * 61706 = 7713.25 style products and
     * exact ones like 0.5 * 61706 = 30853 both land on the intended ceil. */
    double keep = ceil((1.0 - drop_ratio) * (double)dim - (1e-9 + 1e-15 * (double)dim));
    if (!(keep >= 1.0)) /* also NaN */
        return 1;
    if (keep > (double)dim)
        return dim;
    return (uint32_t)keep;
}

uint32_t sparsifier_keep_at(const sparsifier_config *config, uint32_t dim, uint32_t round)
{
    sparsify_method m = config->method;
    if (m == SPARSIFY_DENSE || m == SPARSIFY_THRESHOLD)
        return dim;
    uint32_t keep = sparsifier_keep_count(dim, config->drop_ratio);
    uint32_t warmup = config->dgc_warmup_rounds;
    if (m != SPARSIFY_DGC || round >= warmup || !(config->drop_ratio > DGC_WARMUP_DROP))
        return keep;
    double start = 1.0 - DGC_WARMUP_DROP;
    double ratio = start * pow((1.0 - config->drop_ratio) / start, (double)round / warmup);
    uint32_t k = sparsifier_keep_count(dim, 1.0 - ratio);
    uint32_t first = sparsifier_keep_count(dim, DGC_WARMUP_DROP);
    /* pow's rounding must not step outside [keep, k of round 0]. */
    return k < keep ? keep : k > first ? first : k;
}

/* Round 0 is DGC's widest: its warm-up only narrows k (sparsifier_keep_at). */
uint32_t sparsifier_max_count(const sparsifier_config *config, uint32_t dim)
{
    return sparsifier_keep_at(config, dim, 0);
}

/* ---- lifecycle ---------------------------------------------------------- */

static esgd_status validate(const sparsifier_config *c, uint32_t dim, esgd_error *err)
{
    if (!c)
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: config is NULL");
    if (dim == 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: dim must be > 0");
    if ((unsigned)c->method > SPARSIFY_DGC)
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: method %d unknown", (int)c->method);
    if (!(c->drop_ratio >= 0.0 && c->drop_ratio < 1.0))
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: drop_ratio %g must be in [0, 1)", c->drop_ratio);
    if (!(c->eps > 0.0f && isfinite(c->eps)))
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: eps %g must be finite and > 0", (double)c->eps);
    if (!(c->beta >= 0.0f && c->beta <= 1.0f))
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: beta %g must be in [0, 1]", (double)c->beta);
    if ((unsigned)c->loss_signal > ESGD_LOSS_SIGNAL_LOCAL)
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: loss_signal %d unknown", (int)c->loss_signal);
    if ((unsigned)c->h_increment > ESGD_H_INCREMENT_ABSGRAD)
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: h_increment %d unknown", (int)c->h_increment);
    if ((unsigned)c->value_mode > ESGD_VALUE_GRAD_PLUS_RESIDUAL)
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: value_mode %d unknown", (int)c->value_mode);
    if ((unsigned)c->tau_mode > ESGD_TAU_FIXED)
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: tau_mode %d unknown", (int)c->tau_mode);
    if (!(c->dgc_momentum >= 0.0f && c->dgc_momentum < 1.0f))
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: dgc_momentum %g must be in [0, 1)",
                              (double)c->dgc_momentum);
    if (!(c->dgc_clip >= 0.0f && isfinite(c->dgc_clip)))
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: dgc_clip %g must be finite and >= 0 (0: off)",
                              (double)c->dgc_clip);
    if (c->method == SPARSIFY_THRESHOLD && !(c->threshold > 0.0f && isfinite(c->threshold)))
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: threshold %g must be finite and > 0",
                              (double)c->threshold);
    if (c->method == SPARSIFY_ESGD && c->tau_mode == ESGD_TAU_FIXED && !(c->tau >= 0.0f && isfinite(c->tau)))
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: tau %g must be finite and >= 0", (double)c->tau);
    return ESGD_OK;
}

sparsifier *sparsifier_new(const sparsifier_config *config, uint32_t dim, uint32_t agent_id, esgd_error *err)
{
    if (validate(config, dim, err) != ESGD_OK)
        return NULL;
    sparsifier *s = calloc(1, sizeof *s);
    if (!s) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "sparsifier: out of memory");
        return NULL;
    }
    s->cfg = *config;
    s->dim = dim;
    sparsify_method m = config->method;
    bool full = m == SPARSIFY_DENSE || m == SPARSIFY_THRESHOLD;
    s->keep = full ? dim : sparsifier_keep_count(dim, config->drop_ratio);
    s->capacity = sparsifier_max_count(config, dim);
    rng_seed(&s->rng, config->seed, (uint64_t)agent_id + 1);
    for (int l = 0; l < 4; l++)
        for (int i = 0; i < 4; i++)
            s->lanes[l].s[i] = rng_next(&s->rng);

    size_t d = dim, k = s->keep, cap = s->capacity;
    bool ok = (s->out_indices = malloc((cap + TOP_M_SLACK) * sizeof *s->out_indices)) &&
              (s->out_values = malloc((cap + 1) * sizeof *s->out_values));
    bool ranked = m == SPARSIFY_TOPK || m == SPARSIFY_DGC; /* k largest of a key array */
    if (ok && (m == SPARSIFY_ESGD || ranked || m == SPARSIFY_THRESHOLD))
        ok = (s->residual = calloc(d, sizeof *s->residual)) != NULL;
    if (ok && m == SPARSIFY_DGC)
        ok = (s->momentum = calloc(d, sizeof *s->momentum)) != NULL;
    if (ok && (m == SPARSIFY_ESGD || m == SPARSIFY_RANDK))
        ok = (s->picked = calloc(d, sizeof *s->picked)) && (s->permutation = malloc(d * sizeof *s->permutation));
    if (ok && (m == SPARSIFY_ESGD || ranked))
        ok = (s->top = top_m_new(dim)) != NULL;
    if (ok && ranked)
        ok = (s->keys = malloc(d * sizeof *s->keys)) != NULL;
    if (ok && m == SPARSIFY_ESGD)
        ok = (s->importance = calloc(d, sizeof *s->importance)) &&
             (s->previous = malloc(k * sizeof *s->previous)) &&
             (s->candidates = malloc((k + TOP_M_SLACK) * sizeof *s->candidates)) &&
             (s->members = malloc((k + TOP_M_SLACK) * sizeof *s->members));
    if (!ok) {
        sparsifier_free(s);
        esgd_error_set(err, ESGD_ERR_NOMEM, "sparsifier: out of memory for dim %u", dim);
        return NULL;
    }
    if (s->permutation)
        for (uint32_t j = 0; j < dim; j++)
            s->permutation[j] = j;
    if (m == SPARSIFY_DENSE)
        for (uint32_t j = 0; j < dim; j++)
            s->out_indices[j] = j;
    return s;
}

void sparsifier_free(sparsifier *s)
{
    if (!s)
        return;
    free(s->importance);
    free(s->residual);
    free(s->momentum);
    free(s->previous);
    free(s->picked);
    free(s->permutation);
    free(s->keys);
    free(s->candidates);
    free(s->members);
    top_m_free(s->top);
    free(s->out_indices);
    free(s->out_values);
    free(s);
}

uint32_t sparsifier_capacity(const sparsifier *s)
{
    return s->capacity;
}

const float *sparsifier_importance(const sparsifier *s)
{
    return s->importance;
}

const float *sparsifier_residual(const sparsifier *s)
{
    return s->residual;
}

const float *sparsifier_momentum(const sparsifier *s)
{
    return s->momentum;
}

/* ---- one round ---------------------------------------------------------- */

/* k distinct uniform coordinates into picks[0..k): partial Fisher-Yates on
 * a permutation that persists across rounds (it stays a permutation, so
 * each draw is uniform whatever order earlier rounds left it in). */
void sparsifier_draw_uniform(sparsifier *s, uint32_t *picks, uint32_t k)
{
    uint32_t *p = s->permutation;
    uint32_t d = s->dim;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = i + rng_below(&s->rng, d - i);
        uint32_t t = p[i];
        p[i] = p[j];
        p[j] = t;
        picks[i] = p[i];
    }
}

/* Sum of |g| in double: finite exactly when every g_j is finite (a float
 * sum of d < 2^32 finite floats cannot overflow a double). In vectors of
 * four doubles, since GCC will not reorder a scalar floating-point sum. */
typedef float float4 __attribute__((vector_size(16)));
typedef uint32_t uint4 __attribute__((vector_size(16)));
typedef double double4 __attribute__((vector_size(32)));

SIMD_KERNEL static double abs_sum(const float *g, uint32_t d)
{
    double4 a0 = {0, 0, 0, 0}, a1 = {0, 0, 0, 0};
    const uint4 magnitude = {0x7fffffffu, 0x7fffffffu, 0x7fffffffu, 0x7fffffffu};
    uint32_t j = 0;
    for (; j + 8 <= d; j += 8) {
        uint4 x, y;
        memcpy(&x, g + j, sizeof x);
        memcpy(&y, g + j + 4, sizeof y);
        a0 += __builtin_convertvector((float4)(x & magnitude), double4);
        a1 += __builtin_convertvector((float4)(y & magnitude), double4);
    }
    double sum = 0;
    for (; j < d; j++)
        sum += fabsf(g[j]);
    a0 += a1;
    return sum + ((a0[0] + a0[1]) + (a0[2] + a0[3]));
}

esgd_status sparsifier_select(sparsifier *s, const float *grad, uint32_t round, bool loss_fell, float local_loss,
                              sparse_vector *out, esgd_error *err)
{
    if (!s || !grad || !out)
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier_select: NULL argument");
    /* Checked before any state changes, so a bad gradient leaves the
     * sparsifier exactly as it was. */
    double sum = abs_sum(grad, s->dim);
    if (!isfinite(sum))
        return esgd_error_set(err, ESGD_ERR_NONFINITE, "sparsifier: round %u gradient has NaN or Inf", round);

    uint32_t n = 0;
    switch (s->cfg.method) {
    case SPARSIFY_DENSE:
        n = sparsifier_select_dense(s, grad);
        break;
    case SPARSIFY_THRESHOLD:
        n = sparsifier_select_threshold(s, grad);
        break;
    case SPARSIFY_TOPK:
        n = sparsifier_select_topk(s, grad);
        break;
    case SPARSIFY_RANDK:
        n = sparsifier_select_randk(s, grad);
        break;
    case SPARSIFY_DGC:
        n = sparsifier_select_dgc(s, grad, round);
        break;
    case SPARSIFY_ESGD: {
        float tau = s->cfg.tau_mode == ESGD_TAU_FIXED ? s->cfg.tau : (float)(sum / s->dim);
        n = sparsifier_select_esgd(s, grad, round, loss_fell, local_loss, tau);
        break;
    }
    }
    out->dim = s->dim;
    out->count = n;
    out->capacity = s->capacity;
    out->indices = s->out_indices;
    out->values = s->out_values;
    return ESGD_OK;
}

/* ---- persistence ------------------------------------------------------ */

static void put_rng(state_writer *w, const esgd_rng *rng)
{
    for (int i = 0; i < 4; i++)
        state_put_u64(w, rng->s[i]);
}

static esgd_status get_rng(state_reader *r, esgd_rng *rng, esgd_error *err)
{
    esgd_status st = ESGD_OK;
    for (int i = 0; i < 4 && st == ESGD_OK; i++)
        st = state_get_u64(r, &rng->s[i], err);
    return st;
}

void sparsifier_save_state(const sparsifier *s, state_writer *w)
{
    state_put_u32(w, (uint32_t)s->cfg.method);
    state_put_u32(w, s->dim);
    state_put_u32(w, s->keep);
    put_rng(w, &s->rng);
    for (int i = 0; i < 4; i++)
        put_rng(w, &s->lanes[i]);
    state_put_bytes(w, s->importance, s->importance ? (size_t)s->dim * sizeof(float) : 0);
    state_put_bytes(w, s->residual, s->residual ? (size_t)s->dim * sizeof(float) : 0);
    state_put_bytes(w, s->permutation, s->permutation ? (size_t)s->dim * sizeof(uint32_t) : 0);
    state_put_bytes(w, s->previous, s->previous ? (size_t)s->keep * sizeof(uint32_t) : 0);
    state_put_u32(w, s->has_previous);
    state_put_u32(w, s->previous_round);
    state_put_u32(w, s->has_previous_loss);
    state_put_f64(w, s->previous_loss);
    /* Only DGC has the block, so the other methods' format is unchanged. */
    if (s->cfg.method == SPARSIFY_DGC)
        state_put_bytes(w, s->momentum, (size_t)s->dim * sizeof(float));
}

/* A block that is either absent (size 0, array NULL) or exactly `size`. */
static esgd_status get_block(state_reader *r, const void *array, size_t size, const uint8_t **data,
                             esgd_error *err)
{
    size_t got = 0;
    esgd_status st = state_get_bytes(r, data, &got, err);
    if (st == ESGD_OK && got != (array ? size : 0))
        st = esgd_error_set(err, ESGD_ERR_DIMENSION, "sparsifier state: block of %zu bytes, expected %zu", got,
                            array ? size : 0);
    /* An empty block still points into the reader: NULL it, since the
     * callers read "data != NULL" as "this method has the array". */
    if (!array)
        *data = NULL;
    return st;
}

esgd_status sparsifier_load_state(sparsifier *s, state_reader *r, esgd_error *err)
{
    uint32_t method = 0, dim = 0, keep = 0, has_previous = 0, previous_round = 0, has_previous_loss = 0;
    double previous_loss = 0;
    esgd_rng rng, lanes[4];
    const uint8_t *importance = NULL, *residual = NULL, *permutation = NULL, *previous = NULL, *momentum = NULL;
    esgd_status st;
    if ((st = state_get_u32(r, &method, err)) != ESGD_OK || (st = state_get_u32(r, &dim, err)) != ESGD_OK ||
        (st = state_get_u32(r, &keep, err)) != ESGD_OK)
        return st;
    if (method != (uint32_t)s->cfg.method || dim != s->dim || keep != s->keep)
        return esgd_error_set(err, ESGD_ERR_MISMATCH,
                              "sparsifier state is for method %u, d = %u, k = %u; this one is %u, %u, %u", method,
                              dim, keep, (unsigned)s->cfg.method, s->dim, s->keep);
    st = get_rng(r, &rng, err);
    for (int i = 0; i < 4 && st == ESGD_OK; i++)
        st = get_rng(r, &lanes[i], err);
    if (st == ESGD_OK)
        st = get_block(r, s->importance, (size_t)dim * sizeof(float), &importance, err);
    if (st == ESGD_OK)
        st = get_block(r, s->residual, (size_t)dim * sizeof(float), &residual, err);
    if (st == ESGD_OK)
        st = get_block(r, s->permutation, (size_t)dim * sizeof(uint32_t), &permutation, err);
    if (st == ESGD_OK)
        st = get_block(r, s->previous, (size_t)keep * sizeof(uint32_t), &previous, err);
    if (st == ESGD_OK)
        st = state_get_u32(r, &has_previous, err);
    if (st == ESGD_OK)
        st = state_get_u32(r, &previous_round, err);
    if (st == ESGD_OK)
        st = state_get_u32(r, &has_previous_loss, err);
    if (st == ESGD_OK)
        st = state_get_f64(r, &previous_loss, err);
    if (st == ESGD_OK && s->momentum)
        st = get_block(r, s->momentum, (size_t)dim * sizeof(float), &momentum, err);
    if (st != ESGD_OK)
        return st;
    /* Check what the selection code relies on before taking any of it. */
    for (uint32_t i = 0; importance && i < dim; i++) {
        float h;
        memcpy(&h, importance + (size_t)i * sizeof h, sizeof h);
        if (!isfinite(h) || h < 0)
            return esgd_error_set(err, ESGD_ERR_RANGE, "sparsifier state: importance %u is %g", i, (double)h);
    }
    for (uint32_t i = 0; residual && i < dim; i++) {
        float v;
        memcpy(&v, residual + (size_t)i * sizeof v, sizeof v);
        if (!isfinite(v))
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "sparsifier state: residual %u is not finite", i);
    }
    for (uint32_t i = 0; momentum && i < dim; i++) {
        float v;
        memcpy(&v, momentum + (size_t)i * sizeof v, sizeof v);
        if (!isfinite(v))
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "sparsifier state: momentum %u is not finite", i);
    }
    if (permutation) {
        memset(s->picked, 0, dim);
        for (uint32_t i = 0; i < dim; i++) {
            uint32_t v;
            memcpy(&v, permutation + (size_t)i * sizeof v, sizeof v);
            if (v >= dim || s->picked[v]) {
                memset(s->picked, 0, dim);
                return esgd_error_set(err, ESGD_ERR_RANGE, "sparsifier state: permutation is not one");
            }
            s->picked[v] = 1;
        }
        memset(s->picked, 0, dim);
    }
    for (uint32_t i = 0; previous && has_previous && i < keep; i++) {
        uint32_t v, before = 0;
        memcpy(&v, previous + (size_t)i * sizeof v, sizeof v);
        if (i > 0)
            memcpy(&before, previous + (size_t)(i - 1) * sizeof v, sizeof v);
        if (v >= dim || (i > 0 && v <= before))
            return esgd_error_set(err, ESGD_ERR_ORDER, "sparsifier state: previous selection is not ascending in d");
    }
    s->rng = rng;
    memcpy(s->lanes, lanes, sizeof lanes);
    if (importance)
        memcpy(s->importance, importance, (size_t)dim * sizeof(float));
    if (residual)
        memcpy(s->residual, residual, (size_t)dim * sizeof(float));
    if (momentum)
        memcpy(s->momentum, momentum, (size_t)dim * sizeof(float));
    if (permutation)
        memcpy(s->permutation, permutation, (size_t)dim * sizeof(uint32_t));
    if (previous)
        memcpy(s->previous, previous, (size_t)keep * sizeof(uint32_t));
    s->has_previous = has_previous != 0;
    s->previous_round = previous_round;
    s->has_previous_loss = has_previous_loss != 0;
    s->previous_loss = (float)previous_loss;
    return ESGD_OK;
}
