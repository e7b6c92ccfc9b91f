/* The sparsifiers: what an agent sends each round (dense, threshold SGD,
 * eSGD as fixed by shared/docs/esgd-algorithm.md, top-k with error feedback,
 * random-k, Deep Gradient Compression). All buffers are sized in sparsifier_new; a round allocates
 * nothing and costs a few O(d) passes. */
#include "esgd/sparsifier.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/rng.h"

/* Band guessing (see guess_band): the sample size, and the n from which
 * the guess pays. A bigger sample leaves a narrower band (its width goes
 * as n / sqrt(sample)) but costs more to draw (strided reads miss the
 * cache); 1024 to 8192 measured about the same at d = 61,706 and 10^6. */
enum { TOP_SAMPLE = 2048, TOP_MIN_N = 8192 };

/* collect_flags reads flags and writes positions in whole groups of up to
 * 16: flags are zero-padded to a multiple of 16 and every array it writes
 * has this much room past its count. */
enum { COLLECT_SLACK = 16 };

/* GCC vector extension: eight positions, stored with one or two vector
 * moves. */
typedef uint32_t position_row __attribute__((vector_size(32)));

struct sparsifier {
    sparsifier_config cfg;
    uint32_t dim;      /* d */
    uint32_t keep;     /* k */
    uint32_t capacity; /* k, or d for dense/threshold */
    esgd_rng rng;      /* uniform draws */
    esgd_rng lanes[4]; /* eSGD weighted sampling, seeded from rng */

    float *importance; /* (d) H, eSGD only */
    float *residual;   /* (d) r: eSGD, top-k, threshold; DGC's accumulation v */
    float *momentum;   /* (d) DGC's local momentum u */

    /* eSGD memory of the previous round. */
    uint32_t *previous; /* (k) final S_{t-1}, ascending */
    bool has_previous;
    uint32_t previous_round;
    bool has_previous_loss;
    float previous_loss;

    uint8_t *picked;       /* (d) 1 for members of the step-2 selection / random-k draw */
    uint32_t *permutation; /* (d) persistent permutation for uniform draws */
    uint32_t *keys;        /* (d) radix-select keys, top-k and DGC */
    uint32_t *candidates;  /* (k + COLLECT_SLACK) swapped-in coordinates, ascending (eSGD) */
    uint32_t *members;     /* (k + COLLECT_SLACK) step-2 selection, ascending (eSGD) */
    uint32_t *words;       /* (4 d + 2 COLLECT_SLACK) selection scratch */
    uint8_t *flags;        /* (d rounded up to 16) selection flags, zero padded */
    bool wide_collect;     /* the CPU has AVX-512 for collect_flags */
    uint32_t sample[TOP_SAMPLE];    /* keys sampled to guess a band */
    uint32_t sample_at[TOP_SAMPLE]; /* their coordinates, evenly strided over d */
    position_row positions[256]; /* positions[b]: the set bits of b, ascending */

    uint32_t *out_indices; /* (capacity + COLLECT_SLACK) */
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
 * Radix select: one counting pass over all keys on the top digit finds the
 * bucket holding the boundary; that bucket's keys and positions are copied
 * to `boundary` (room 2 n) and the remaining digits are resolved on that
 * shrinking set. No sorting. */
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

/* The boundary set (keys and positions, in order) narrowed digit by
 * digit, from bit `high` down: histogram the set on the digit, find the
 * boundary bucket, keep only its keys. Returns the cut. */
static key_cut radix_narrow(uint32_t *bkeys, uint32_t *bpos, uint32_t nb, uint32_t remaining, uint32_t prefix,
                            unsigned high, unsigned width)
{
    uint32_t counts[2048];
    while (high > 0) {
        unsigned w = high < width ? high : width;
        unsigned shift = high - w;
        uint32_t digit_mask = (1u << w) - 1;
        memset(counts, 0, ((size_t)digit_mask + 1) * sizeof counts[0]);
        for (uint32_t i = 0; i < nb; i++)
            counts[(bkeys[i] >> shift) & digit_mask]++;
        uint32_t digit = find_bucket(counts, digit_mask + 1, &remaining);
        prefix |= digit << shift;
        uint32_t kept = 0;
        for (uint32_t i = 0; i < nb; i++) {
            bkeys[kept] = bkeys[i]; /* kept <= i */
            bpos[kept] = bpos[i];
            kept += ((bkeys[i] >> shift) & digit_mask) == digit;
        }
        nb = kept;
        high = shift;
    }
    /* All nb keys left equal the threshold; the first `remaining` of them
     * are in: the limit is just past the position of the last of those. */
    assert(remaining > 0 && remaining <= nb);
    return (key_cut){prefix, bpos[remaining - 1] + 1};
}

static key_cut radix_cut(const uint32_t *keys, uint32_t n, uint32_t m, uint32_t *boundary)
{
    assert(m > 0 && m <= n);
    uint32_t *bkeys = boundary, *bpos = boundary + n;
    if (n < 16384) {
        /* A few thousand keys (a band, a sample): 8 bits at a time, whose
         * tables are cheap to clear and scan, and a branch-free copy of
         * the boundary bucket (in a narrow range of keys, many share it). */
        uint32_t counts[256] = {0};
        for (uint32_t i = 0; i < n; i++)
            counts[keys[i] >> 24]++;
        uint32_t remaining = m;
        uint32_t top = find_bucket(counts, 256, &remaining);
        uint32_t nb = 0;
        for (uint32_t i = 0; i < n; i++) {
            bkeys[nb] = keys[i]; /* nb <= i */
            bpos[nb] = i;
            nb += (keys[i] >> 24) == top;
        }
        return radix_narrow(bkeys, bpos, nb, remaining, top << 24, 24, 8);
    }
    /* Many keys: the top 11 bits counted in four interleaved histograms
     * (runs of keys in one bucket, common as magnitudes cluster, would
     * otherwise serialise on one counter); the boundary bucket's keys are
     * copied out with a branch (few share it: well predicted) and narrowed
     * on the remaining 21 bits. */
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
    uint32_t nb = 0;
    for (i = 0; i < n; i++) {
        if ((keys[i] >> 21) == top) {
            bkeys[nb] = keys[i];
            bpos[nb] = i;
            nb++;
        }
    }
    return radix_narrow(bkeys, bpos, nb, remaining, top << 21, 21, 11);
}

/* 1 if the key at position i is among the selected. */
static inline uint32_t cut_take(key_cut cut, uint32_t key, uint32_t i)
{
    return (uint32_t)(key > cut.threshold) | ((uint32_t)(key == cut.threshold) & (uint32_t)(i < cut.limit));
}

/* ---- top m of n keys, positions ascending ---------------------------- */

/* The heavy O(d) loops get AVX2 and AVX-512 clones picked at load time, as
 * in model.c. No fp-contract here: a key recomputed in scalar code must equal,
 * bit for bit, the one the vector loop compared. */
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define SIMD_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), noinline))
#endif
#endif
#ifndef SIMD_KERNEL
#define SIMD_KERNEL __attribute__((noinline))
#endif

/* Selection runs on byte flags: 2 = surely among the m largest, 1 = maybe
 * (in the band still to resolve), 0 = out. A flag pass writes them with the
 * counts of keys above the band's low end (flags 1 or 2) and above its high
 * end (flags 2); the band guess holds when above_hi <= m <= above_lo. */
typedef struct flag_counts {
    uint32_t above_lo;
    uint32_t above_hi;
    uint32_t lo, hi; /* the band */
} flag_counts;

/* The positions, ascending, of flags[0..n) equal to 1 (bit 0) or to 2
 * (bit 1) into out (room: their count + COLLECT_SLACK). Eight flags at a
 * time: the chosen bits packed into a byte
 * by one multiply, a table of that byte's set positions stored whole, and
 * the count advanced by the bits' sum. No data-dependent branch, so it
 * costs the same at any density (a branch per flag mispredicts on every
 * selected coordinate). */
static uint32_t collect_flags_table(const position_row *positions, const uint8_t *flags, uint32_t n, unsigned bit,
                                    uint32_t *out)
{
    uint32_t count = 0;
    for (uint32_t at = 0; at < n; at += 8) {
        uint64_t w;
        memcpy(&w, flags + at, sizeof w);
        w = (w >> bit) & 0x0101010101010101u;
        uint32_t bits = (uint32_t)((w * 0x0102040810204080u) >> 56);
        position_row row = positions[bits] + at;
        memcpy(out + count, &row, sizeof row);
        count += (uint32_t)((w * 0x0101010101010101u) >> 56); /* bytes summed */
    }
    return count;
}

/* The same with AVX-512: sixteen flags to a mask, and the positions under
 * the mask packed by one compress instruction. Picked at run time;
 * -DESGD_NO_WIDE_COLLECT builds without it (to test the table version). */
#if defined(__x86_64__) && defined(__has_attribute) && !defined(ESGD_NO_WIDE_COLLECT)
#if __has_attribute(target)
#define HAVE_WIDE_COLLECT 1
#include <immintrin.h>
__attribute__((target("avx512f,popcnt"))) static uint32_t collect_flags_avx512(const uint8_t *flags, uint32_t n,
                                                                              unsigned bit, uint32_t *out)
{
    uint32_t count = 0;
    const __m512i chosen = _mm512_set1_epi32(1 << bit), step = _mm512_set1_epi32(16);
    __m512i at = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (uint32_t base = 0; base < n; base += 16) {
        __m128i f = _mm_loadu_si128((const __m128i *)(const void *)(flags + base));
        __mmask16 m = _mm512_test_epi32_mask(_mm512_cvtepu8_epi32(f), chosen);
        _mm512_storeu_si512((void *)(out + count), _mm512_maskz_compress_epi32(m, at));
        count += (uint32_t)__builtin_popcount(m);
        at = _mm512_add_epi32(at, step);
    }
    return count;
}
#endif
#endif

static uint32_t collect_flags(const sparsifier *t, uint32_t n, unsigned bit, uint32_t *out)
{
#ifdef HAVE_WIDE_COLLECT
    if (t->wide_collect)
        return collect_flags_avx512(t->flags, n, bit, out);
#endif
    return collect_flags_table(t->positions, t->flags, n, bit, out);
}

static inline uint8_t band_flag(uint32_t key, uint32_t lo, uint32_t hi, uint32_t *above_lo, uint32_t *above_hi)
{
    uint32_t a = key > lo, b = key > hi;
    *above_lo += a;
    *above_hi += b;
    return (uint8_t)(a + b);
}

SIMD_KERNEL static flag_counts flag_keys(const uint32_t *restrict keys, uint32_t n, uint32_t lo, uint32_t hi,
                                         uint8_t *restrict flags)
{
    uint32_t nlo = 0, nhi = 0;
    for (uint32_t i = 0; i < n; i++)
        flags[i] = band_flag(keys[i], lo, hi, &nlo, &nhi);
    return (flag_counts){nlo, nhi, lo, hi};
}

/* The key of rank `rank` (1 = largest) among n. */
static uint32_t key_of_rank(const uint32_t *keys, uint32_t n, uint32_t rank, uint32_t *boundary)
{
    return radix_cut(keys, n, rank, boundary).threshold;
}

/* Guesses keys lo <= hi with, almost surely, fewer than m of the n keys
 * above hi and at least m above lo, from a sample of TOP_SAMPLE keys that
 * the caller put in t->sample, taken evenly strided or drawn like the keys.
 * The margin is 3 binomial standard deviations each way (a miss, about
 * one call in 300, costs one exact pass); the caller checks
 * the guess and falls back to an exact full pass when it misses. Returns
 * false when no useful band exists. A rank past the sample's nonzero keys
 * gives lo = 0: "every nonzero key". */
static bool guess_band(sparsifier *t, uint32_t n, uint32_t m, uint32_t *lo, uint32_t *hi)
{
    uint32_t ns = TOP_SAMPLE;
    if (n < TOP_MIN_N || m == 0)
        return false;
    double p = (double)m / n, mean = p * ns;
    double margin = 3.0 * sqrt(ns * p * (1.0 - p)) + 2.0;
    double rank_lo = ceil(mean + margin), rank_hi = floor(mean - margin);
    if (rank_lo > ns)
        return false;
    *lo = key_of_rank(t->sample, ns, (uint32_t)rank_lo, t->words);
    *hi = rank_hi >= 1.0 ? key_of_rank(t->sample, ns, (uint32_t)rank_hi, t->words) : UINT32_MAX;
    return true;
}

/* Where the keys of a flag pass come from, to recompute them for the band
 * (a few percent of n) instead of storing all n. */
typedef enum key_kind {
    KEY_ARRAY,     /* keys[j] */
    KEY_CANDIDATE, /* eSGD step 3: |r_j| for j outside S_t with |r_j| > tau, else 0 */
    KEY_CLOCK      /* eSGD step 2: the exponential clock of j (clock_key) */
} key_kind;

typedef struct key_source {
    key_kind kind;
    const uint32_t *keys;
    const float *r;
    const uint8_t *picked;
    float tau;
    const float *h;
    float eps;
    uint32_t seed_a, seed_b;
} key_source;

static inline uint32_t clock_key(uint32_t j, uint32_t seed_a, uint32_t seed_b, float w);

static inline uint32_t candidate_key(uint32_t in, float r, float tau)
{
    float a = fabsf(r);
    uint32_t candidate = (uint32_t)(in == 0) & (uint32_t)(a > tau);
    return float_bits(a) & (0u - candidate);
}

SIMD_KERNEL static void clock_keys(const uint32_t *restrict at, uint32_t n, const float *restrict h, float eps,
                                   uint32_t seed_a, uint32_t seed_b, uint32_t *restrict keys)
{
    for (uint32_t i = 0; i < n; i++)
        keys[i] = clock_key(at[i], seed_a, seed_b, h[at[i]] + eps);
}

/* keys[i] = the key of coordinate at[i], i < n. */
static void keys_at(const key_source *src, const uint32_t *at, uint32_t n, uint32_t *keys)
{
    switch (src->kind) {
    case KEY_CANDIDATE:
        for (uint32_t i = 0; i < n; i++)
            keys[i] = candidate_key(src->picked[at[i]], src->r[at[i]], src->tau);
        break;
    case KEY_CLOCK:
        clock_keys(at, n, src->h, src->eps, src->seed_a, src->seed_b, keys);
        break;
    case KEY_ARRAY:
        for (uint32_t i = 0; i < n; i++)
            keys[i] = src->keys[at[i]];
        break;
    }
}

/* The positions of the m largest keys (0 < m <= n, ties to the smaller
 * position), ascending, into out (room m + 8). `banded`: flags and counts
 * hold a flag pass whose band guess is to be checked; otherwise (or when
 * the guess missed) an exact radix cut over all n keys decides. Only the
 * band's keys are recomputed and radix-selected, so the common case makes
 * no histogram over all n. */
static void select_flagged(sparsifier *t, const key_source *src, uint32_t n, uint32_t m, bool banded,
                           flag_counts fc, uint32_t *out)
{
    assert(m > 0 && m <= n);
    uint8_t *flags = t->flags;
    uint32_t *list = t->words;                           /* (n + COLLECT_SLACK) */
    uint32_t *keys = t->words + n + COLLECT_SLACK;       /* (n) */
    uint32_t *boundary = t->words + 2 * n + COLLECT_SLACK; /* (2 n) */
    for (uint32_t i = n; i % 16 != 0; i++)
        flags[i] = 0; /* collect_flags reads whole groups */
    if (banded && fc.above_hi <= m && m <= fc.above_lo) {
        uint32_t need = m - fc.above_hi;
        if (need > 0) {
            uint32_t nb = collect_flags(t, n, 0, list);
            assert(nb == fc.above_lo - fc.above_hi);
            keys_at(src, list, nb, keys);
            /* The band's keys share their leading bits, so a radix pass on
             * them as they are would pile into one bucket (one counter, a
             * serial chain of increments). key - (lo + 1), shifted up, is
             * an order-preserving map that spreads them over all buckets. */
            uint32_t span = fc.hi - fc.lo - 1; /* keys - (lo + 1) <= span */
            unsigned shift = span ? (unsigned)__builtin_clz(span) : 0;
            for (uint32_t i = 0; i < nb; i++)
                keys[i] = (keys[i] - fc.lo - 1) << shift;
            key_cut cut = radix_cut(keys, nb, need, boundary);
            for (uint32_t i = 0; i < nb; i++)
                flags[list[i]] = (uint8_t)(1 + cut_take(cut, keys[i], i));
        }
    } else {
        const uint32_t *all = src->kind == KEY_ARRAY ? src->keys : keys;
        if (src->kind != KEY_ARRAY) {
            for (uint32_t j = 0; j < n; j++)
                list[j] = j;
            keys_at(src, list, n, keys);
        }
        key_cut cut = radix_cut(all, n, m, boundary);
        for (uint32_t j = 0; j < n; j++)
            flags[j] = (uint8_t)(2 * cut_take(cut, all[j], j));
    }
    uint32_t count = collect_flags(t, n, 1, out);
    assert(count == m);
    (void)count;
}

/* Top m of a stored key array (top-k). */
static void top_keys(const uint32_t *keys, uint32_t n, uint32_t m, sparsifier *t, uint32_t *out)
{
    uint32_t lo = 0, hi = 0;
    flag_counts fc = {0};
    if (n >= TOP_MIN_N)
        for (uint32_t i = 0; i < TOP_SAMPLE; i++)
            t->sample[i] = keys[t->sample_at[i]];
    bool banded = guess_band(t, n, m, &lo, &hi);
    if (banded)
        fc = flag_keys(keys, n, lo, hi, t->flags);
    key_source src = {.kind = KEY_ARRAY, .keys = keys};
    select_flagged(t, &src, n, m, banded, fc, out);
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
    s->capacity = sparsifier_keep_at(config, dim, 0); /* DGC's warm-up starts widest */
    rng_seed(&s->rng, config->seed, (uint64_t)agent_id + 1);
    for (int l = 0; l < 4; l++)
        for (int i = 0; i < 4; i++)
            s->lanes[l].s[i] = rng_next(&s->rng);

    size_t d = dim, k = s->keep, cap = s->capacity;
    bool ok = (s->out_indices = malloc((cap + COLLECT_SLACK) * sizeof *s->out_indices)) &&
              (s->out_values = malloc((cap + 1) * sizeof *s->out_values));
    bool ranked = m == SPARSIFY_TOPK || m == SPARSIFY_DGC; /* k largest of a key array */
    if (ok && (m == SPARSIFY_ESGD || ranked || m == SPARSIFY_THRESHOLD))
        ok = (s->residual = calloc(d, sizeof *s->residual)) != NULL;
    if (ok && m == SPARSIFY_DGC)
        ok = (s->momentum = calloc(d, sizeof *s->momentum)) != NULL;
    if (ok && (m == SPARSIFY_ESGD || m == SPARSIFY_RANDK))
        ok = (s->picked = calloc(d, sizeof *s->picked)) && (s->permutation = malloc(d * sizeof *s->permutation));
    if (ok && (m == SPARSIFY_ESGD || ranked))
        ok = (s->words = malloc((4 * d + 2 * COLLECT_SLACK) * sizeof *s->words)) &&
             (s->flags = calloc((d + 15) & ~(size_t)15, 1));
    if (ok && ranked)
        ok = (s->keys = malloc(d * sizeof *s->keys)) != NULL;
    if (ok && m == SPARSIFY_ESGD)
        ok = (s->importance = calloc(d, sizeof *s->importance)) &&
             (s->previous = malloc(k * sizeof *s->previous)) &&
             (s->candidates = malloc((k + COLLECT_SLACK) * sizeof *s->candidates)) &&
             (s->members = malloc((k + COLLECT_SLACK) * sizeof *s->members));
    if (!ok) {
        sparsifier_free(s);
        esgd_error_set(err, ESGD_ERR_NOMEM, "sparsifier: out of memory for dim %u", dim);
        return NULL;
    }
    for (uint32_t b = 0; b < 256; b++) {
        int n = 0;
        for (uint32_t i = 0; i < 8; i++)
            if (b >> i & 1)
                s->positions[b][n++] = i;
    }
    for (uint32_t i = 0; i < TOP_SAMPLE; i++)
        s->sample_at[i] = (uint32_t)((uint64_t)i * dim / TOP_SAMPLE);
#ifdef HAVE_WIDE_COLLECT
    s->wide_collect = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("popcnt");
#endif
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
    free(s->words);
    free(s->flags);
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
    top_keys(keys, d, s->keep, s, s->out_indices);
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
static uint32_t select_dgc(sparsifier *s, const float *g, uint32_t round)
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
    top_keys(s->keys, d, k, s, s->out_indices);
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = s->out_indices[i];
        s->out_values[i] = v[j];
        v[j] = 0.0f;
        u[j] = 0.0f;
    }
    return k;
}

/* ---- eSGD ------------------------------------------------------------- */

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

/* Step 2, loss rose, the one pass over all coordinates: each one's clock
 * key, flagged against the guessed band (lo, hi]. */
SIMD_KERNEL static flag_counts flag_clocks(uint32_t d, const float *restrict h, float eps, uint32_t seed_a,
                                           uint32_t seed_b, uint32_t lo, uint32_t hi, uint8_t *restrict flags)
{
    uint32_t nlo = 0, nhi = 0;
    for (uint32_t j = 0; j < d; j++)
        flags[j] = band_flag(clock_key(j, seed_a, seed_b, h[j] + eps), lo, hi, &nlo, &nhi);
    return (flag_counts){nlo, nhi, lo, hi};
}

/* Step 2, loss rose: k distinct coordinates drawn with probability
 * proportional to H[j] + eps without replacement (Efraimidis-Spirakis as
 * exponential clocks: coordinate j rings at E_j / w_j, E_j ~ Exp(1), and the
 * k earliest win). Writes the winners, ascending, to `members`. The band
 * is guessed from TOP_SAMPLE clocks drawn for evenly strided coordinates
 * with their own random bits: they are distributed like the real keys,
 * which is all the guess needs. */
static void sample_weighted(sparsifier *s)
{
    uint32_t d = s->dim;
    const float *h = s->importance;
    float eps = s->cfg.eps;
    uint64_t seed = rng_next(&s->lanes[0]);
    key_source src = {.kind = KEY_CLOCK, .h = h, .eps = eps, .seed_a = (uint32_t)seed,
                      .seed_b = (uint32_t)(seed >> 32)};
    uint32_t lo = 0, hi = 0;
    flag_counts fc = {0};
    if (d >= TOP_MIN_N) {
        uint64_t guess_seed = rng_next(&s->lanes[0]);
        clock_keys(s->sample_at, TOP_SAMPLE, h, eps, (uint32_t)guess_seed, (uint32_t)(guess_seed >> 32), s->sample);
    }
    bool banded = guess_band(s, d, s->keep, &lo, &hi);
    if (banded)
        fc = flag_clocks(d, h, eps, src.seed_a, src.seed_b, lo, hi, s->flags);
    select_flagged(s, &src, d, s->keep, banded, fc, s->members);
}

static bool esgd_loss_fell(const sparsifier *s, bool loss_fell, float local_loss)
{
    if (s->cfg.loss_signal == ESGD_LOSS_SIGNAL_GLOBAL)
        return loss_fell;
    return s->has_previous_loss && local_loss < s->previous_loss;
}

/* Step 3, first half, as one pass over all coordinates: age the residual
 * of everything outside S_t (members keep theirs for now), and flag each
 * candidate (outside S_t, |r| > tau) by its key |r| against the guessed
 * band (lo, hi]; everything else has key 0, so with lo >= 0 it is never
 * flagged. Also counts the candidates. Mask selects rather than ?: so it
 * vectorizes. */
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
        flags[j] = band_flag(key, lo, hi, &nlo, &nhi);
    }
    *ncand = n;
    return (flag_counts){nlo, nhi, lo, hi};
}

/* The band guess for step 3 from the keys the evenly strided sample
 * coordinates are about to get. */
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
    uint32_t *keys = s->words, *cand = s->candidates, *members = s->members;
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

    /* Step 3, first half: residuals and candidates (see age_residuals). A
     * band guessed for k swaps; when fewer candidates come, the guess holds
     * only if it flagged them all (lo = 0), else select_flagged falls back. */
    uint32_t lo = 0, hi = 0, ncand = 0;
    if (d >= TOP_MIN_N)
        sample_candidates(s->sample_at, TOP_SAMPLE, picked, r, g, beta, tau, s->sample);
    bool banded = guess_band(s, d, k, &lo, &hi);
    flag_counts fc = age_residuals(d, picked, r, g, beta, tau, banded ? lo : 0, banded ? hi : 0, s->flags, &ncand);

    /* Step 3, second half: the `swaps` largest candidates come in, and as
     * many members with the smallest (H, index) go out. Which candidate
     * evicts which member changes nothing that is sent, so only the two sets
     * are computed. Both stay in ascending coordinate order. */
    uint32_t swaps = ncand < k ? ncand : k;
    uint32_t kept = k;
    if (swaps > 0) {
        key_source src = {.kind = KEY_CANDIDATE, .r = r, .picked = picked, .tau = tau};
        select_flagged(s, &src, d, swaps, banded, fc, cand);
    }
    for (uint32_t i = 0; i < k; i++)
        picked[members[i]] = 0;
    if (swaps > 0) {

        if (swaps == k) {
            for (uint32_t i = 0; i < k; i++)
                r[members[i]] = beta * r[members[i]] + g[members[i]];
            kept = 0;
        } else {
            for (uint32_t i = 0; i < k; i++)
                keys[i] = ~float_bits(h[members[i]]); /* H >= 0: smallest H = largest key */
            key_cut out = radix_cut(keys, k, swaps, s->words + d);
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
    case SPARSIFY_DGC:
        n = select_dgc(s, grad, round);
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
