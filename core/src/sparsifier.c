/* The sparsifiers: what an agent sends each round (dense, threshold SGD,
 * eSGD as fixed by shared/docs/esgd-algorithm.md, top-k with error feedback,
 * random-k). All buffers are sized in sparsifier_new; a round allocates
 * nothing and costs a few O(d) passes. */
#include "esgd/sparsifier.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/rng.h"

struct sparsifier {
    sparsifier_config cfg;
    uint32_t dim;      /* d */
    uint32_t keep;     /* k */
    uint32_t capacity; /* k, or d for dense/threshold */
    esgd_rng rng;      /* uniform draws */
    esgd_rng lanes[4]; /* eSGD weighted sampling, seeded from rng */

    float *importance; /* (d) H, eSGD only */
    float *residual;   /* (d) r: eSGD, top-k, threshold */

    /* eSGD memory of the previous round. */
    uint32_t *previous; /* (k) final S_{t-1}, ascending */
    bool has_previous;
    uint32_t previous_round;
    bool has_previous_loss;
    float previous_loss;

    uint8_t *picked;       /* (d) 1 for members of the step-2 selection / random-k draw */
    uint32_t *permutation; /* (d) persistent permutation for uniform draws */
    uint32_t *keys;        /* (d) radix-select keys */
    uint32_t *candidates;  /* (k + 1) swapped-in coordinates, ascending (eSGD) */
    uint32_t *members;     /* (k + 1) step-2 selection, ascending (eSGD) */
    uint32_t *boundary;    /* (2 d) radix-select scratch */

    uint32_t *out_indices; /* (capacity + 1) */
    float *out_values;     /* (capacity + 1) */
};

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

/* ---- small helpers ---------------------------------------------------- */

/* Union punning (defined in C11) rather than memcpy: GCC 12 vectorizes
 * loops through it. */
typedef union float_word {
    float f;
    uint32_t u;
} float_word;

static inline uint32_t float_bits(float x)
{
    return (float_word){.f = x}.u;
}

static inline float bits_float(uint32_t b)
{
    return (float_word){.u = b}.f;
}

/* log2(u) for u in (0, 1): u = 2^e * m with m in [sqrt(1/2), sqrt(2)), and
 * log2(m) = 2/ln 2 * atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its odd
 * series to s^7 (next term < 2e-8). Branch-free so the sampling loop
 * vectorizes: libm's logf per coordinate would dominate a round. */
static inline float log2_unit(float u)
{
    uint32_t b = float_bits(u);
    uint32_t mb = (b & 0x007fffffu) | 0x3f800000u; /* m in [1, 2) */
    uint32_t big = mb > 0x3fb504f3u;               /* m > sqrt(2): halve m, raise e */
    int32_t e = (int32_t)(b >> 23) - 127 + (int32_t)big;
    float m = bits_float(mb - (big << 23));
    float s = (m - 1.0f) / (m + 1.0f);
    float s2 = s * s;
    const float c1 = 2.8853900817779268f; /* 2 / ln 2 */
    const float c3 = c1 / 3.0f, c5 = c1 / 5.0f, c7 = c1 / 7.0f;
    return (float)e + s * (c1 + s2 * (c3 + s2 * (c5 + s2 * c7)));
}

/* Where the m largest of n keys end (0 < m <= n): the key at position i is
 * in when it is above `threshold`, or equal to it and i < `limit` (so ties
 * go to earlier positions; arrays are in coordinate order, so to the
 * smaller index).
 *
 * Radix select: one counting pass over all keys on the top 11 bits finds the
 * bucket holding the boundary; that bucket's keys and positions are copied
 * to `boundary` (room 2 n) and the remaining 11 + 10 bits are resolved on
 * that small set. No sorting. */
typedef struct key_cut {
    uint32_t threshold;
    uint32_t limit;
} key_cut;

/* From the top bucket down, the bucket holding the `*remaining`-th largest
 * key; *remaining becomes its rank inside that bucket. */
static uint32_t find_bucket(const uint32_t *counts, uint32_t buckets, uint32_t *remaining)
{
    uint32_t b = buckets - 1;
    while (counts[b] < *remaining) {
        *remaining -= counts[b];
        assert(b > 0);
        b--;
    }
    return b;
}

static key_cut radix_cut(const uint32_t *keys, uint32_t n, uint32_t m, uint32_t *boundary)
{
    assert(m > 0 && m <= n);
    /* Four interleaved histograms: runs of keys in one bucket (common, as
     * magnitudes cluster) would otherwise serialise on one counter. */
    uint32_t counts[4][2048];
    memset(counts, 0, sizeof counts);
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        counts[0][keys[i] >> 21]++;
        counts[1][keys[i + 1] >> 21]++;
        counts[2][keys[i + 2] >> 21]++;
        counts[3][keys[i + 3] >> 21]++;
    }
    for (; i < n; i++)
        counts[0][keys[i] >> 21]++;
    for (uint32_t b = 0; b < 2048; b++)
        counts[0][b] += counts[1][b] + counts[2][b] + counts[3][b];
    uint32_t remaining = m;
    uint32_t top = find_bucket(counts[0], 2048, &remaining);

    uint32_t *bkeys = boundary, *bpos = boundary + n;
    /* A branch, not a branch-free append: few keys share the top bucket,
     * so it is well predicted, and measured faster. */
    uint32_t nb = 0;
    for (i = 0; i < n; i++) {
        if ((keys[i] >> 21) == top) {
            bkeys[nb] = keys[i];
            bpos[nb] = i;
            nb++;
        }
    }

    uint32_t prefix = top << 21, mask = 0xffe00000u;
    static const unsigned shifts[2] = {10, 0};
    static const unsigned widths[2] = {11, 10};
    for (int pass = 0; pass < 2; pass++) {
        unsigned shift = shifts[pass];
        uint32_t buckets = 1u << widths[pass];
        memset(counts[0], 0, buckets * sizeof counts[0][0]);
        for (i = 0; i < nb; i++)
            if ((bkeys[i] & mask) == prefix)
                counts[0][(bkeys[i] >> shift) & (buckets - 1)]++;
        prefix |= find_bucket(counts[0], buckets, &remaining) << shift;
        mask |= (buckets - 1) << shift;
    }
    /* `remaining` keys equal to the threshold are in: the limit is just
     * past the position of the last of them. */
    uint32_t limit = 0;
    for (i = 0; i < nb && remaining > 0; i++) {
        if (bkeys[i] == prefix) {
            remaining--;
            limit = bpos[i] + 1;
        }
    }
    assert(remaining == 0);
    return (key_cut){prefix, limit};
}

/* 1 if the key at position i is among the selected. */
static inline uint32_t cut_take(key_cut cut, uint32_t key, uint32_t i)
{
    return (uint32_t)(key > cut.threshold) | ((uint32_t)(key == cut.threshold) & (uint32_t)(i < cut.limit));
}

/* The positions of the m selected keys, ascending, into out (room m + 1).
 * A branch per key is fastest when few are selected (it is well
 * predicted); when many are, the branch is a coin flip and a branch-free
 * append wins. */
static void cut_collect(key_cut cut, const uint32_t *keys, uint32_t n, uint32_t m, uint32_t *out)
{
    uint32_t count = 0;
    if (m < n / 4) {
        for (uint32_t i = 0; i < n; i++)
            if (cut_take(cut, keys[i], i))
                out[count++] = i;
    } else {
        for (uint32_t i = 0; i < n; i++) {
            uint32_t take = cut_take(cut, keys[i], i);
            out[count] = i; /* count <= m */
            count += take;
        }
    }
    assert(count == m);
}

/* Sum of |g| in double: finite exactly when every g_j is finite (a float
 * sum of d < 2^32 finite floats cannot overflow a double). Several
 * accumulators keep the add latency off the critical path. */
static double abs_sum(const float *g, uint32_t d)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    uint32_t j = 0;
    for (; j + 8 <= d; j += 8) {
        a0 += fabsf(g[j]);
        a1 += fabsf(g[j + 1]);
        a2 += fabsf(g[j + 2]);
        a3 += fabsf(g[j + 3]);
        a4 += fabsf(g[j + 4]);
        a5 += fabsf(g[j + 5]);
        a6 += fabsf(g[j + 6]);
        a7 += fabsf(g[j + 7]);
    }
    for (; j < d; j++)
        a0 += fabsf(g[j]);
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}

/* k distinct uniform coordinates into picks[0..k): partial Fisher-Yates on
 * a permutation that persists across rounds (it stays a permutation, so
 * each draw is uniform whatever order earlier rounds left it in). */
static void draw_uniform(sparsifier *s, uint32_t *picks, uint32_t k)
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

/* ---- lifecycle ---------------------------------------------------------- */

static esgd_status validate(const sparsifier_config *c, uint32_t dim, esgd_error *err)
{
    if (!c)
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: config is NULL");
    if (dim == 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "sparsifier: dim must be > 0");
    if ((unsigned)c->method > SPARSIFY_RANDK)
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
    s->capacity = s->keep;
    rng_seed(&s->rng, config->seed, (uint64_t)agent_id + 1);
    for (int l = 0; l < 4; l++)
        for (int i = 0; i < 4; i++)
            s->lanes[l].s[i] = rng_next(&s->rng);

    size_t d = dim, k = s->keep;
    bool ok = (s->out_indices = malloc((k + 1) * sizeof *s->out_indices)) &&
              (s->out_values = malloc((k + 1) * sizeof *s->out_values));
    if (ok && (m == SPARSIFY_ESGD || m == SPARSIFY_TOPK || m == SPARSIFY_THRESHOLD))
        ok = (s->residual = calloc(d, sizeof *s->residual)) != NULL;
    if (ok && (m == SPARSIFY_ESGD || m == SPARSIFY_RANDK))
        ok = (s->picked = calloc(d, sizeof *s->picked)) && (s->permutation = malloc(d * sizeof *s->permutation));
    if (ok && (m == SPARSIFY_ESGD || m == SPARSIFY_TOPK))
        ok = (s->keys = malloc(d * sizeof *s->keys)) && (s->boundary = malloc(2 * d * sizeof *s->boundary));
    if (ok && m == SPARSIFY_ESGD)
        ok = (s->importance = calloc(d, sizeof *s->importance)) &&
             (s->previous = malloc(k * sizeof *s->previous)) &&
             (s->candidates = malloc((k + 1) * sizeof *s->candidates)) &&
             (s->members = malloc((k + 1) * sizeof *s->members));
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
    free(s->previous);
    free(s->picked);
    free(s->permutation);
    free(s->keys);
    free(s->candidates);
    free(s->members);
    free(s->boundary);
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

/* ---- the baselines ------------------------------------------------------ */

static uint32_t select_dense(sparsifier *s, const float *g)
{
    memcpy(s->out_values, g, (size_t)s->dim * sizeof *g);
    return s->dim;
}

static uint32_t select_threshold(sparsifier *s, const float *g)
{
    float *r = s->residual;
    float threshold = s->cfg.threshold;
    uint32_t n = 0;
    for (uint32_t j = 0; j < s->dim; j++) {
        float acc = g[j] + r[j];
        int send = fabsf(acc) > threshold;
        /* Written unconditionally, kept when sent: n <= j, so in bounds. */
        s->out_indices[n] = j;
        s->out_values[n] = acc;
        n += (uint32_t)send;
        r[j] = send ? 0.0f : acc;
    }
    return n;
}

/* Top-k's r += g with keys |r|; restrict (r and g are both float) and a
 * multiple-of-16 trip count (see sample_weighted) let it vectorize. Kept
 * out of line: inlined, GCC 12 drops the restrict guarantee. */
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

static uint32_t select_topk(sparsifier *s, const float *g)
{
    float *r = s->residual;
    uint32_t *keys = s->keys;
    uint32_t d = s->dim;
    accumulate_residual(d, r, g, keys);
    key_cut cut = radix_cut(keys, d, s->keep, s->boundary);
    cut_collect(cut, keys, d, s->keep, s->out_indices);
    for (uint32_t i = 0; i < s->keep; i++) {
        uint32_t j = s->out_indices[i];
        s->out_values[i] = r[j];
        r[j] = 0.0f;
    }
    return s->keep;
}

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

static uint32_t select_randk(sparsifier *s, const float *g)
{
    /* out_indices doubles as the draw buffer before it is filled in order. */
    draw_uniform(s, s->out_indices, s->keep);
    for (uint32_t i = 0; i < s->keep; i++)
        s->picked[s->out_indices[i]] = 1;
    uint32_t n = collect_picked(s);
    assert(n == s->keep);
    for (uint32_t i = 0; i < n; i++)
        s->out_values[i] = g[s->out_indices[i]];
    return n;
}

/* ---- eSGD ------------------------------------------------------------- */

/* Exponential clock of a coordinate with weight w from 32 random bits:
 * E / w with E = -log2(u) (an Exp(ln 2) variable: the common scale does not
 * change the ranking). Returned as a key where the earliest clock is the
 * largest. */
static inline uint32_t sampling_key(uint32_t random_bits, float w)
{
    float u = ((float)(int32_t)(random_bits >> 8) + 0.5f) * 0x1p-24f; /* in (0, 1) */
    float clock = -log2_unit(u) / w;                                   /* >= 0 */
    return ~float_bits(clock);
}

/* Step 2, loss rose: k distinct coordinates drawn with probability
 * proportional to H[j] + eps without replacement (Efraimidis-Spirakis as
 * exponential clocks: coordinate j rings at E_j / w_j, E_j ~ Exp(1), and the
 * k earliest win). Writes the winners, ascending, to `members`. */
static void sample_weighted(sparsifier *s)
{
    uint32_t d = s->dim;
    uint32_t *keys = s->keys;
    /* Four generators in turn: their state updates are independent, so the
     * CPU overlaps them instead of waiting on one chain. */
    esgd_rng *lane = s->lanes;
    uint32_t j = 0;
    for (; j + 8 <= d; j += 8) {
        for (int l = 0; l < 4; l++) {
            uint64_t x = rng_next(&lane[l]);
            keys[j + 2 * l] = (uint32_t)x;
            keys[j + 2 * l + 1] = (uint32_t)(x >> 32);
        }
    }
    for (; j < d; j++)
        keys[j] = (uint32_t)rng_next(&lane[0]);
    const float *h = s->importance;
    float eps = s->cfg.eps;
    /* A trip count that is a known multiple of 16 lets GCC's -O2 cost model
     * vectorize the body (no epilogue); the last d % 16 go through the
     * scalar loop. */
    uint32_t d16 = d & ~15u;
    for (j = 0; j < d16; j++)
        keys[j] = sampling_key(keys[j], h[j] + eps);
    for (; j < d; j++)
        keys[j] = sampling_key(keys[j], h[j] + eps);
    key_cut cut = radix_cut(keys, d, s->keep, s->boundary);
    cut_collect(cut, keys, d, s->keep, s->members);
}

static bool esgd_loss_fell(const sparsifier *s, bool loss_fell, float local_loss)
{
    if (s->cfg.loss_signal == ESGD_LOSS_SIGNAL_GLOBAL)
        return loss_fell;
    return s->has_previous_loss && local_loss < s->previous_loss;
}

/* Step 3, first half, as one map over all coordinates: age the residual of
 * everything outside S_t and give each candidate (outside S_t, |r| > tau)
 * its radix key; everything else gets key 0. A candidate's |r| > tau >= 0
 * makes its key nonzero, so the top `swaps` keys are all candidates.
 * Returns the number of candidates. A map with restrict pointers and mask
 * selects (no ?:, no appends) so GCC vectorizes it at -O2. */
static inline uint32_t age_one(uint32_t in, float *r, float g, float beta, float tau, uint32_t *key)
{
    uint32_t keep_mask = 0u - in; /* all ones for a member of S_t */
    float aged = beta * *r + g;
    float rj = bits_float((float_bits(*r) & keep_mask) | (float_bits(aged) & ~keep_mask));
    *r = rj;
    float a = fabsf(rj);
    uint32_t candidate = (uint32_t)(in == 0) & (uint32_t)(a > tau);
    *key = float_bits(a) & (0u - candidate);
    return candidate;
}

/* noinline: inlined, GCC 12 drops the restrict guarantee and does not
 * vectorize. */
__attribute__((noinline)) static uint32_t age_residuals(uint32_t d, const uint8_t *restrict picked,
                                                        float *restrict r, const float *restrict g, float beta,
                                                        float tau, uint32_t *restrict keys)
{
    uint32_t ncand = 0;
    uint32_t d16 = d & ~15u; /* see sample_weighted */
    uint32_t j = 0;
    for (; j < d16; j++)
        ncand += age_one(picked[j], &r[j], g[j], beta, tau, &keys[j]);
    for (; j < d; j++)
        ncand += age_one(picked[j], &r[j], g[j], beta, tau, &keys[j]);
    return ncand;
}

static uint32_t select_esgd(sparsifier *s, const float *g, uint32_t round, bool loss_fell, float local_loss,
                            float tau)
{
    uint32_t d = s->dim, k = s->keep;
    float *h = s->importance, *r = s->residual;
    uint8_t *picked = s->picked;
    float beta = s->cfg.beta;

    /* Step 2: the selection S_t, as `members` in ascending order plus
     * marks in `picked`. After a skipped round (or a first call later than
     * round 1) there is no S_{t-1} to keep and the loss signal does not
     * compare consecutive rounds, so it counts as "not fell". */
    uint32_t *keys = s->keys, *cand = s->candidates, *members = s->members;
    bool consecutive = s->has_previous && round == s->previous_round + 1;
    if (round <= 1) {
        draw_uniform(s, members, k);
        for (uint32_t i = 0; i < k; i++)
            picked[members[i]] = 1;
        uint32_t n = 0;
        for (uint32_t j = 0; j < d; j++) {
            members[n] = j; /* n <= k */
            n += picked[j];
        }
        assert(n == k);
    } else if (consecutive && esgd_loss_fell(s, loss_fell, local_loss)) {
        bool absgrad = s->cfg.h_increment == ESGD_H_INCREMENT_ABSGRAD;
        memcpy(members, s->previous, (size_t)k * sizeof *members);
        for (uint32_t i = 0; i < k; i++) {
            uint32_t j = members[i];
            picked[j] = 1;
            h[j] += absgrad ? fabsf(g[j]) : 1.0f;
        }
    } else {
        sample_weighted(s);
        for (uint32_t i = 0; i < k; i++)
            picked[members[i]] = 1;
    }

    /* Step 3, first half: residuals and candidates (see age_residuals). */
    uint32_t ncand = age_residuals(d, picked, r, g, beta, tau, keys);
    for (uint32_t i = 0; i < k; i++)
        picked[members[i]] = 0;

    /* Step 3, second half: the `swaps` largest candidates come in, and as
     * many members with the smallest (H, index) go out. Which candidate
     * evicts which member changes nothing that is sent, so only the two sets
     * are computed. Both stay in ascending coordinate order. */
    uint32_t swaps = ncand < k ? ncand : k;
    uint32_t kept = k;
    if (swaps > 0) {
        key_cut cut = radix_cut(keys, d, swaps, s->boundary);
        cut_collect(cut, keys, d, swaps, cand);

        if (swaps == k) {
            for (uint32_t i = 0; i < k; i++)
                r[members[i]] = beta * r[members[i]] + g[members[i]];
            kept = 0;
        } else {
            for (uint32_t i = 0; i < k; i++)
                keys[i] = ~float_bits(h[members[i]]); /* H >= 0: smallest H = largest key */
            key_cut out = radix_cut(keys, k, swaps, s->boundary);
            kept = 0;
            for (uint32_t i = 0; i < k; i++) {
                uint32_t j = members[i];
                uint32_t evict = cut_take(out, keys[i], i);
                r[j] = evict ? beta * r[j] + g[j] : r[j];
                members[kept] = j; /* kept <= i */
                kept += !evict;
            }
            assert(kept == k - swaps);
        }
    }

    /* Step 4: merge the kept members and the swapped-in candidates. */
    bool plus_residual = s->cfg.value_mode == ESGD_VALUE_GRAD_PLUS_RESIDUAL;
    uint32_t a = 0, b = 0, n = 0;
    while (a < kept || b < swaps) {
        uint32_t j;
        float v;
        if (b == swaps || (a < kept && members[a] < cand[b])) {
            j = members[a++];
            v = plus_residual ? g[j] + r[j] : g[j];
        } else {
            j = cand[b++];
            v = r[j];
        }
        r[j] = 0.0f;
        s->out_indices[n] = j;
        s->out_values[n] = v;
        n++;
    }
    assert(n == k);
    memcpy(s->previous, s->out_indices, (size_t)k * sizeof *s->previous);
    s->has_previous = true;
    s->previous_round = round;
    s->has_previous_loss = true;
    s->previous_loss = local_loss;
    return n;
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
        n = select_dense(s, grad);
        break;
    case SPARSIFY_THRESHOLD:
        n = select_threshold(s, grad);
        break;
    case SPARSIFY_TOPK:
        n = select_topk(s, grad);
        break;
    case SPARSIFY_RANDK:
        n = select_randk(s, grad);
        break;
    case SPARSIFY_ESGD: {
        float tau = s->cfg.tau_mode == ESGD_TAU_FIXED ? s->cfg.tau : (float)(sum / s->dim);
        n = select_esgd(s, grad, round, loss_fell, local_loss, tau);
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
    return st;
}

esgd_status sparsifier_load_state(sparsifier *s, state_reader *r, esgd_error *err)
{
    uint32_t method = 0, dim = 0, keep = 0, has_previous = 0, previous_round = 0, has_previous_loss = 0;
    double previous_loss = 0;
    esgd_rng rng, lanes[4];
    const uint8_t *importance = NULL, *residual = NULL, *permutation = NULL, *previous = NULL;
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
