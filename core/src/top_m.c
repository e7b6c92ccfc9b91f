/* The top-m selection engine (see top_m.h): which m of n uint32 keys are
 * the largest, as ascending positions, ties to the smaller position. It
 * owns the radix select, the band guessed from a sample, the flag passes and
 * the collection of flagged positions (a table of set bits, or AVX-512
 * compress picked at run time), and the scratch they use; it knows nothing
 * of gradients or of the sparsifier that calls it. */
#include "top_m.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

/* ---- radix select ------------------------------------------------------ */

/* One counting pass over all keys on the top digit finds the bucket holding
 * the boundary; that bucket's keys and positions are copied to `boundary`
 * (room 2 n) and the remaining digits are resolved on that shrinking set.
 * No sorting. */

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

key_cut top_m_radix_cut(const uint32_t *keys, uint32_t n, uint32_t m, uint32_t *boundary)
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

/* ---- collecting flagged positions -------------------------------------- */

/* The positions, ascending, of flags[0..n) equal to 1 (bit 0) or to 2
 * (bit 1) into out (room: their count + TOP_M_SLACK). Eight flags at a
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

static uint32_t collect_flags(const top_m *t, uint32_t n, unsigned bit, uint32_t *out)
{
#ifdef HAVE_WIDE_COLLECT
    if (t->wide_collect)
        return collect_flags_avx512(t->flags, n, bit, out);
#endif
    return collect_flags_table(t->positions, t->flags, n, bit, out);
}

/* ---- the band ------------------------------------------------------------ */

/* The heavy O(n) loop gets AVX2 and AVX-512 clones (simd.h). */
SIMD_KERNEL static flag_counts flag_keys(const uint32_t *restrict keys, uint32_t n, uint32_t lo, uint32_t hi,
                                         uint8_t *restrict flags)
{
    uint32_t nlo = 0, nhi = 0;
    for (uint32_t i = 0; i < n; i++)
        flags[i] = top_m_band_flag(keys[i], lo, hi, &nlo, &nhi);
    return (flag_counts){nlo, nhi, lo, hi};
}

/* The key of rank `rank` (1 = largest) among n. */
static uint32_t key_of_rank(const uint32_t *keys, uint32_t n, uint32_t rank, uint32_t *boundary)
{
    return top_m_radix_cut(keys, n, rank, boundary).threshold;
}

/* The margin is 3 binomial standard deviations each way (a miss, about one
 * call in 300, costs one exact pass). A rank past the sample's nonzero keys
 * gives lo = 0: "every nonzero key". */
bool top_m_guess_band(top_m *t, uint32_t n, uint32_t m, uint32_t *lo, uint32_t *hi)
{
    uint32_t ns = TOP_M_SAMPLE;
    if (n < TOP_M_MIN_N || m == 0)
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

/* ---- selection ----------------------------------------------------------- */

/* keys[i] = the key of position at[i], i < n. */
static void keys_at(const top_m_source *src, const uint32_t *at, uint32_t n, uint32_t *keys)
{
    if (src->keys) {
        for (uint32_t i = 0; i < n; i++)
            keys[i] = src->keys[at[i]];
    } else {
        src->keys_at(src->context, at, n, keys);
    }
}

/* Only the band's keys are recomputed and radix-selected, so the common
 * case makes no histogram over all n. */
void top_m_select_flagged(top_m *t, const top_m_source *src, uint32_t n, uint32_t m, bool banded, flag_counts fc,
                          uint32_t *out)
{
    assert(m > 0 && m <= n && n <= t->n);
    uint8_t *flags = t->flags;
    uint32_t *list = t->words;                            /* (n + TOP_M_SLACK) */
    uint32_t *keys = t->words + n + TOP_M_SLACK;          /* (n) */
    uint32_t *boundary = t->words + 2 * n + TOP_M_SLACK;  /* (2 n) */
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
            key_cut cut = top_m_radix_cut(keys, nb, need, boundary);
            for (uint32_t i = 0; i < nb; i++)
                flags[list[i]] = (uint8_t)(1 + top_m_cut_take(cut, keys[i], i));
        }
    } else {
        const uint32_t *all = src->keys ? src->keys : keys;
        if (!src->keys) {
            for (uint32_t j = 0; j < n; j++)
                list[j] = j;
            keys_at(src, list, n, keys);
        }
        key_cut cut = top_m_radix_cut(all, n, m, boundary);
        for (uint32_t j = 0; j < n; j++)
            flags[j] = (uint8_t)(2 * top_m_cut_take(cut, all[j], j));
    }
    uint32_t count = collect_flags(t, n, 1, out);
    assert(count == m);
    (void)count;
}

void top_m_select_keys(top_m *t, const uint32_t *keys, uint32_t n, uint32_t m, uint32_t *out)
{
    assert(n == t->n); /* t->sample_at is strided over t->n */
    uint32_t lo = 0, hi = 0;
    flag_counts fc = {0};
    if (n >= TOP_M_MIN_N)
        for (uint32_t i = 0; i < TOP_M_SAMPLE; i++)
            t->sample[i] = keys[t->sample_at[i]];
    bool banded = top_m_guess_band(t, n, m, &lo, &hi);
    if (banded)
        fc = flag_keys(keys, n, lo, hi, t->flags);
    top_m_source src = {.keys = keys};
    top_m_select_flagged(t, &src, n, m, banded, fc, out);
}

/* ---- lifecycle ----------------------------------------------------------- */

top_m *top_m_new(uint32_t n)
{
    assert(n > 0);
    /* position_row makes the struct 32-byte aligned, more than malloc
     * promises; aligned_alloc wants a multiple of the alignment. */
    size_t align = _Alignof(top_m);
    size_t size = (sizeof(top_m) + align - 1) / align * align;
    top_m *t = aligned_alloc(align, size);
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    t->n = n;
    t->words = malloc((4 * (size_t)n + 2 * TOP_M_SLACK) * sizeof *t->words);
    t->flags = calloc(((size_t)n + 15) & ~(size_t)15, 1);
    if (!t->words || !t->flags) {
        top_m_free(t);
        return NULL;
    }
    for (uint32_t b = 0; b < 256; b++) {
        int count = 0;
        for (uint32_t i = 0; i < 8; i++)
            if (b >> i & 1)
                t->positions[b][count++] = i;
    }
    for (uint32_t i = 0; i < TOP_M_SAMPLE; i++)
        t->sample_at[i] = (uint32_t)((uint64_t)i * n / TOP_M_SAMPLE);
#ifdef HAVE_WIDE_COLLECT
    t->wide_collect = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("popcnt");
#endif
    return t;
}

void top_m_free(top_m *t)
{
    if (!t)
        return;
    free(t->words);
    free(t->flags);
    free(t);
}
