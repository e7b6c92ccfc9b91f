/* The top-m selection engine, internal to core/src: the positions of the m
 * largest of n uint32 keys, ascending, ties to the smaller position, in a
 * few O(n) passes and no sort (radix select, a band of keys guessed from a
 * sample, byte flags collected with a table or AVX-512). It knows nothing of
 * gradients: callers turn what they rank into order-preserving keys. The
 * sparsifiers use it for top-k, DGC and the two eSGD selections.
 *
 *   top_m *t = top_m_new(n);
 *   top_m_select_keys(t, keys, n, m, out);        keys stored in an array
 *
 * or, when the keys are cheaper to compute than to store:
 *
 *   fill t->sample[i] with the key of t->sample_at[i], i < TOP_M_SAMPLE;
 *   banded = top_m_guess_band(t, n, m, &lo, &hi);
 *   one pass over all n: flags[j] = top_m_band_flag(key_j, lo, hi, ...);
 *   top_m_select_flagged(t, &source, n, m, banded, counts, out);
 *
 * top_m_select_flagged computes again only the keys inside the band, through
 * the source, and an exact pass over all n decides when the guess missed, so
 * the result never depends on the guess. */
#ifndef ESGD_TOP_M_H
#define ESGD_TOP_M_H

#include <stdbool.h>
#include <stdint.h>

/* TOP_M_SAMPLE: the band guess's sample size; TOP_M_MIN_N: the n from which
 * the guess pays. A bigger sample leaves a narrower band (its width goes as
 * n / sqrt(sample)) but costs more to draw (strided reads miss the cache);
 * 1024 to 8192 measured about the same at n = 61,706 and 10^6.
 * TOP_M_SLACK: flags are collected in whole groups of up to 16, so every
 * array of positions the engine writes needs this much room past its
 * count. */
enum { TOP_M_SAMPLE = 2048, TOP_M_MIN_N = 8192, TOP_M_SLACK = 16 };

/* GCC vector extension: eight positions, stored with one or two vector
 * moves. Its 32-byte alignment is why top_m_new uses aligned_alloc. */
typedef uint32_t position_row __attribute__((vector_size(32)));

typedef struct top_m {
    uint32_t n;                         /* the largest n it was made for */
    uint32_t *words;                    /* (4 n + 2 TOP_M_SLACK) scratch, free between calls */
    uint8_t *flags;                     /* (n rounded up to 16) byte flags, zero padded */
    bool wide_collect;                  /* the CPU has AVX-512 for collecting flags */
    uint32_t sample[TOP_M_SAMPLE];      /* the caller's sampled keys, for top_m_guess_band */
    uint32_t sample_at[TOP_M_SAMPLE];   /* their positions, evenly strided over n */
    position_row positions[256];        /* positions[b]: the set bits of b, ascending */
} top_m;

/* An engine for up to n keys (n > 0); NULL when out of memory. */
top_m *top_m_new(uint32_t n);
void top_m_free(top_m *t); /* NULL is a no-op */

/* Where the m largest of n keys end: the key at position i is in when it is
 * above `threshold`, or equal to it and i < `limit`. */
typedef struct key_cut {
    uint32_t threshold;
    uint32_t limit;
} key_cut;

/* Radix select of the m largest of keys[0..n), 0 < m <= n. boundary: room
 * for 2 n words. */
key_cut top_m_radix_cut(const uint32_t *keys, uint32_t n, uint32_t m, uint32_t *boundary);

/* 1 if the key at position i is among those the cut selects. */
static inline uint32_t top_m_cut_take(key_cut cut, uint32_t key, uint32_t i)
{
    return (uint32_t)(key > cut.threshold) | ((uint32_t)(key == cut.threshold) & (uint32_t)(i < cut.limit));
}

/* A flag pass writes, per key, 2 = surely among the m largest, 1 = maybe (in
 * the band (lo, hi] still to resolve), 0 = out, and counts the keys above the
 * band's low end (flags 1 or 2) and above its high end (flags 2). The band
 * guess holds when above_hi <= m <= above_lo. */
typedef struct flag_counts {
    uint32_t above_lo;
    uint32_t above_hi;
    uint32_t lo, hi; /* the band */
} flag_counts;

/* One key's flag, for the callers' own flag passes; branch-free so those
 * vectorize. */
static inline uint8_t top_m_band_flag(uint32_t key, uint32_t lo, uint32_t hi, uint32_t *above_lo, uint32_t *above_hi)
{
    uint32_t a = key > lo, b = key > hi;
    *above_lo += a;
    *above_hi += b;
    return (uint8_t)(a + b);
}

/* Guesses keys lo <= hi with, almost surely, fewer than m of the n keys
 * above hi and at least m above lo, from the TOP_M_SAMPLE keys the caller
 * put in t->sample (taken at t->sample_at, or drawn like the keys). False
 * when no useful band exists (n < TOP_M_MIN_N, m = 0, or m too close to n). */
bool top_m_guess_band(top_m *t, uint32_t n, uint32_t m, uint32_t *lo, uint32_t *hi);

/* Where the keys of a flag pass come from: a stored array, or a function
 * that computes the key of each position in at[0..n) into keys. */
typedef struct top_m_source {
    const uint32_t *keys; /* (n) stored keys; NULL to use keys_at */
    void (*keys_at)(const void *context, const uint32_t *at, uint32_t n, uint32_t *keys);
    const void *context;
} top_m_source;

/* The positions of the m largest keys (0 < m <= n), ascending, into out
 * (room m + TOP_M_SLACK). `banded`: t->flags and fc hold a flag pass over
 * all n whose band is to be checked; otherwise, or when the band missed, an
 * exact radix cut over all n keys decides. */
void top_m_select_flagged(top_m *t, const top_m_source *src, uint32_t n, uint32_t m, bool banded, flag_counts fc,
                          uint32_t *out);

/* The whole selection for keys stored in an array: sample, guess, flag
 * pass, select. out: room m + TOP_M_SLACK. */
void top_m_select_keys(top_m *t, const uint32_t *keys, uint32_t n, uint32_t m, uint32_t *out);

#endif
