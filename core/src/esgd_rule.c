/* The eSGD rule (shared/docs/esgd-algorithm.md, the contract; docs/algorithm.md
 * section 2, how it is implemented here): one agent's round, as
 * sparsifier_select_esgd reads it, in the steps of docs/algorithm.md: 2.1 the
 * loss signal, 2.2 importance updating (the selection S_t), 2.3 momentum
 * residual accumulation and swaps, 2.4 what is sent. It owns the random keys
 * of the weighted sampling and the O(d) passes of each step; the ranking
 * itself is the top-m engine's (top_m.c), and the state is the sparsifier's
 * (sparsifier.c). */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "simd.h"
#include "sparsifier_impl.h"

/* ---- random keys and candidate keys ------------------------------------ */

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

/* 32 random bits for coordinate j in one round: a counter-based generator
 * (two rounds of the "lowbias32" integer mixer, constants from Wellons'
 * hash prospector, keyed by 64 bits drawn from the agent's stream each
 * round). Counter-based so that the flag pass can draw every coordinate in
 * vector lanes and the band's few keys can be drawn again later instead of
 * storing all d. */
static inline uint32_t mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* Exponential clock of coordinate j with weight w: E / w with
 * E = -log2(u), u uniform in (0, 1) (an Exp(ln 2) variable: the common
 * scale does not change the ranking). Returned as a key where the earliest
 * clock is the largest. */
static inline uint32_t clock_key(uint32_t j, uint32_t seed_a, uint32_t seed_b, float w)
{
    uint32_t random_bits = mix32(mix32(j + seed_a) ^ seed_b);
    float u = ((float)(int32_t)(random_bits >> 8) + 0.5f) * 0x1p-24f; /* in (0, 1) */
    float clock = -log2_unit(u) / w;                                   /* >= 0 */
    return ~float_bits(clock);
}

/* A swap candidate's key: |r_j| for j outside S_t with |r_j| > tau (strict),
 * else 0. */
static inline uint32_t candidate_key(uint32_t in, float r, float tau)
{
    float a = fabsf(r);
    uint32_t candidate = (uint32_t)(in == 0) & (uint32_t)(a > tau);
    return float_bits(a) & (0u - candidate);
}

/* The O(d) loops below get AVX2 and AVX-512 clones (simd.h), with no
 * floating-point contraction: a key recomputed in scalar code must equal,
 * bit for bit, the one the vector loop compared. */

SIMD_KERNEL static void clock_keys(const uint32_t *restrict at, uint32_t n, const float *restrict h, float eps,
                                   uint32_t seed_a, uint32_t seed_b, uint32_t *restrict keys)
{
    for (uint32_t i = 0; i < n; i++)
        keys[i] = clock_key(at[i], seed_a, seed_b, h[at[i]] + eps);
}

/* The keys of a step as a top_m_source, so the engine can compute again the
 * few that fall in its band. */
typedef struct clock_source {
    const float *h;
    float eps;
    uint32_t seed_a, seed_b;
} clock_source;

static void clock_keys_at(const void *context, const uint32_t *at, uint32_t n, uint32_t *keys)
{
    const clock_source *c = context;
    clock_keys(at, n, c->h, c->eps, c->seed_a, c->seed_b, keys);
}

typedef struct candidate_source {
    const float *r;
    const uint8_t *picked;
    float tau;
} candidate_source;

static void candidate_keys_at(const void *context, const uint32_t *at, uint32_t n, uint32_t *keys)
{
    const candidate_source *c = context;
    for (uint32_t i = 0; i < n; i++)
        keys[i] = candidate_key(c->picked[at[i]], c->r[at[i]], c->tau);
}

/* ---- 2.1 Loss signal --------------------------------------------------- */

/* Did the loss fall: the coordinator's global signal, or in local mode this
 * round's minibatch loss against the one this sparsifier saw last call. */
static bool esgd_loss_fell(const sparsifier *s, bool loss_fell, float local_loss)
{
    if (s->cfg.loss_signal == ESGD_LOSS_SIGNAL_GLOBAL)
        return loss_fell;
    return s->has_previous_loss && local_loss < s->previous_loss;
}

/* ---- 2.2 Importance updating: the selection S_t ------------------------ */

/* Loss rose, the one pass over all coordinates: each one's clock key,
 * flagged against the guessed band (lo, hi]. */
SIMD_KERNEL static flag_counts flag_clocks(uint32_t d, const float *restrict h, float eps, uint32_t seed_a,
                                           uint32_t seed_b, uint32_t lo, uint32_t hi, uint8_t *restrict flags)
{
    uint32_t nlo = 0, nhi = 0;
    for (uint32_t j = 0; j < d; j++)
        flags[j] = top_m_band_flag(clock_key(j, seed_a, seed_b, h[j] + eps), lo, hi, &nlo, &nhi);
    return (flag_counts){nlo, nhi, lo, hi};
}

/* Loss rose: k distinct coordinates drawn with probability proportional to
 * H[j] + eps without replacement (Efraimidis-Spirakis as exponential clocks:
 * coordinate j rings at E_j / w_j, E_j ~ Exp(1), and the k earliest win).
 * Writes the winners, ascending, to `members`. The band is guessed from
 * TOP_M_SAMPLE clocks drawn for evenly strided coordinates with their own
 * random bits: they are distributed like the real keys, which is all the
 * guess needs. */
static void sample_weighted(sparsifier *s)
{
    uint32_t d = s->dim;
    top_m *t = s->top;
    const float *h = s->importance;
    float eps = s->cfg.eps;
    uint64_t seed = rng_next(&s->lanes[0]);
    clock_source clocks = {.h = h, .eps = eps, .seed_a = (uint32_t)seed, .seed_b = (uint32_t)(seed >> 32)};
    uint32_t lo = 0, hi = 0;
    flag_counts fc = {0};
    if (d >= TOP_M_MIN_N) {
        uint64_t guess_seed = rng_next(&s->lanes[0]);
        clock_keys(t->sample_at, TOP_M_SAMPLE, h, eps, (uint32_t)guess_seed, (uint32_t)(guess_seed >> 32), t->sample);
    }
    bool banded = top_m_guess_band(t, d, s->keep, &lo, &hi);
    if (banded)
        fc = flag_clocks(d, h, eps, clocks.seed_a, clocks.seed_b, lo, hi, t->flags);
    top_m_source src = {.keys_at = clock_keys_at, .context = &clocks};
    top_m_select_flagged(t, &src, d, s->keep, banded, fc, s->members);
}

/* S_t as `members` in ascending order plus marks in `picked`: uniform in
 * rounds 0 and 1; S_{t-1} with its importance raised if the loss fell;
 * weighted sampling otherwise. After a skipped round (or a first call later
 * than round 1) there is no S_{t-1} to keep and the loss signal does not
 * compare consecutive rounds, so it counts as "not fell". */
static void update_importance(sparsifier *s, const float *g, uint32_t round, bool fell)
{
    uint32_t d = s->dim, k = s->keep;
    float *h = s->importance;
    uint8_t *picked = s->picked;
    uint32_t *members = s->members;
    bool consecutive = s->has_previous && round == s->previous_round + 1;
    if (round <= 1) {
        sparsifier_draw_uniform(s, members, k);
        for (uint32_t i = 0; i < k; i++)
            picked[members[i]] = 1;
        uint32_t n = 0;
        for (uint32_t j = 0; j < d; j++) {
            members[n] = j; /* n <= k */
            n += picked[j];
        }
        assert(n == k);
    } else if (consecutive && fell) {
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
}

/* ---- 2.3 Momentum residual accumulation and swaps ---------------------- */

/* One pass over all coordinates: age the residual of everything outside S_t
 * (members keep theirs for now), and flag each candidate (outside S_t,
 * |r| > tau) by its key |r| against the guessed band (lo, hi]; everything
 * else has key 0, so with lo >= 0 it is never flagged. Also counts the
 * candidates. Mask selects rather than ?: so it vectorizes. */
SIMD_KERNEL static flag_counts age_residuals(uint32_t d, const uint8_t *restrict picked, float *restrict r,
                                             const float *restrict g, float beta, float tau, uint32_t lo,
                                             uint32_t hi, uint8_t *restrict flags, uint32_t *ncand)
{
    uint32_t nlo = 0, nhi = 0, n = 0;
    for (uint32_t j = 0; j < d; j++) {
        uint32_t in = picked[j];
        uint32_t keep_mask = 0u - in; /* all ones for a member of S_t */
        float aged = beta * r[j] + g[j];
        float rj = bits_float((float_bits(r[j]) & keep_mask) | (float_bits(aged) & ~keep_mask));
        r[j] = rj;
        uint32_t key = candidate_key(in, rj, tau);
        n += key != 0;
        flags[j] = top_m_band_flag(key, lo, hi, &nlo, &nhi);
    }
    *ncand = n;
    return (flag_counts){nlo, nhi, lo, hi};
}

/* The band guess from the keys the evenly strided sample coordinates are
 * about to get. */
SIMD_KERNEL static void sample_candidates(const uint32_t *restrict at, uint32_t n, const uint8_t *restrict picked,
                                          const float *restrict r, const float *restrict g, float beta, float tau,
                                          uint32_t *restrict sample)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = at[i];
        uint32_t in = picked[j];
        float aged = beta * r[j] + g[j];
        sample[i] = candidate_key(in, in ? r[j] : aged, tau);
    }
}

/* The residual pass: how many candidates, and the flag pass over their
 * keys against a band guessed for k swaps. When fewer candidates come, the
 * guess holds only if it flagged them all (lo = 0); else the selection
 * falls back to an exact pass. */
typedef struct residual_pass {
    uint32_t candidates;
    bool banded;
    flag_counts fc;
} residual_pass;

static residual_pass accumulate_residuals(sparsifier *s, const float *g, float tau)
{
    uint32_t d = s->dim;
    top_m *t = s->top;
    float beta = s->cfg.beta;
    residual_pass pass = {0};
    uint32_t lo = 0, hi = 0;
    if (d >= TOP_M_MIN_N)
        sample_candidates(t->sample_at, TOP_M_SAMPLE, s->picked, s->residual, g, beta, tau, t->sample);
    pass.banded = top_m_guess_band(t, d, s->keep, &lo, &hi);
    pass.fc = age_residuals(d, s->picked, s->residual, g, beta, tau, pass.banded ? lo : 0, pass.banded ? hi : 0,
                            t->flags, &pass.candidates);
    return pass;
}

/* After the swaps: members[0..kept) stay, candidates[0..swaps) come in,
 * kept + swaps = k, both ascending. */
typedef struct swap_sets {
    uint32_t kept;
    uint32_t swaps;
} swap_sets;

/* The `swaps` = min(candidates, k) largest candidates come in (ties to the
 * lower index), and as many members with the smallest (H, index) go out,
 * their residual aged like any unselected coordinate's. Which candidate
 * evicts which member changes nothing that is sent, so only the two sets
 * are computed. Clears the marks in `picked`. */
static swap_sets swap_candidates(sparsifier *s, const float *g, float tau, const residual_pass *pass)
{
    uint32_t d = s->dim, k = s->keep;
    const float *h = s->importance;
    float *r = s->residual;
    uint8_t *picked = s->picked;
    uint32_t *members = s->members;
    float beta = s->cfg.beta;
    swap_sets sets = {.kept = k, .swaps = pass->candidates < k ? pass->candidates : k};
    if (sets.swaps > 0) {
        candidate_source candidates = {.r = r, .picked = picked, .tau = tau};
        top_m_source src = {.keys_at = candidate_keys_at, .context = &candidates};
        top_m_select_flagged(s->top, &src, d, sets.swaps, pass->banded, pass->fc, s->candidates);
    }
    for (uint32_t i = 0; i < k; i++)
        picked[members[i]] = 0;
    if (sets.swaps == 0)
        return sets;
    if (sets.swaps == k) {
        for (uint32_t i = 0; i < k; i++)
            r[members[i]] = beta * r[members[i]] + g[members[i]];
        sets.kept = 0;
        return sets;
    }
    uint32_t *keys = s->top->words; /* (k), then the radix cut's boundary (2 k) */
    for (uint32_t i = 0; i < k; i++)
        keys[i] = ~float_bits(h[members[i]]); /* H >= 0: smallest H = largest key */
    key_cut out = top_m_radix_cut(keys, k, sets.swaps, s->top->words + d);
    sets.kept = 0;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = members[i];
        uint32_t evict = top_m_cut_take(out, keys[i], i);
        r[j] = evict ? beta * r[j] + g[j] : r[j];
        members[sets.kept] = j; /* kept <= i */
        sets.kept += !evict;
    }
    assert(sets.kept == k - sets.swaps);
    return sets;
}

/* ---- 2.4 What is sent, and what stays local ---------------------------- */

/* Merges the kept members (value g_j, or g_j + r_j) and the swapped-in
 * candidates (value r_j) into one ascending list of k entries, zeroes their
 * residuals, and remembers the list as S_t for the next round. */
static uint32_t send_selection(sparsifier *s, const float *g, uint32_t round, float local_loss, swap_sets sets)
{
    float *r = s->residual;
    const uint32_t *members = s->members, *cand = s->candidates;
    bool plus_residual = s->cfg.value_mode == ESGD_VALUE_GRAD_PLUS_RESIDUAL;
    uint32_t a = 0, b = 0, n = 0;
    while (a < sets.kept || b < sets.swaps) {
        uint32_t j;
        float v;
        if (b == sets.swaps || (a < sets.kept && members[a] < cand[b])) {
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
    assert(n == s->keep);
    memcpy(s->previous, s->out_indices, (size_t)n * sizeof *s->previous);
    s->has_previous = true;
    s->previous_round = round;
    s->has_previous_loss = true;
    s->previous_loss = local_loss;
    return n;
}

/* ---- the round ---------------------------------------------------------- */

/* tau: this round's swap threshold (mean |g| or the fixed one), computed by
 * sparsifier_select. */
uint32_t sparsifier_select_esgd(sparsifier *s, const float *g, uint32_t round, bool loss_fell, float local_loss,
                                float tau)
{
    /* 2.1 Loss signal. */
    bool fell = esgd_loss_fell(s, loss_fell, local_loss);
    /* 2.2 Importance updating: the selection S_t. */
    update_importance(s, g, round, fell);
    /* 2.3 Momentum residual accumulation and swaps. */
    residual_pass pass = accumulate_residuals(s, g, tau);
    swap_sets sets = swap_candidates(s, g, tau, &pass);
    /* 2.4 What is sent, and what stays local. */
    return send_selection(s, g, round, local_loss, sets);
}
