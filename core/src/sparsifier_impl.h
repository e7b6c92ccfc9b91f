/* What the sparsifier's files share, internal to core/src: the state of one
 * agent's sparsifier, the float/key helpers, and one select function per
 * method. sparsifier.c owns the lifecycle, the dispatch and persistence;
 * esgd_rule.c the eSGD rule; sparsifier_baselines.c dense, threshold, top-k,
 * random-k and DGC; top_m.c the top-m selection they rank with. */
#ifndef ESGD_SPARSIFIER_IMPL_H
#define ESGD_SPARSIFIER_IMPL_H

#include "esgd/rng.h"
#include "esgd/sparsifier.h"
#include "top_m.h"

struct sparsifier {
    sparsifier_config cfg;
    uint32_t dim;      /* d */
    uint32_t keep;     /* k */
    uint32_t capacity; /* k, DGC's round-0 k, or d for dense/threshold */
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

    uint8_t *picked;       /* (d) 1 for members of the step-2.2 selection / random-k draw */
    uint32_t *permutation; /* (d) persistent permutation for uniform draws */
    uint32_t *keys;        /* (d) top-m keys, top-k and DGC */
    uint32_t *candidates;  /* (k + TOP_M_SLACK) swapped-in coordinates, ascending (eSGD) */
    uint32_t *members;     /* (k + TOP_M_SLACK) step-2.2 selection, ascending (eSGD) */
    top_m *top;            /* the top-m engine over d keys: eSGD, top-k, DGC */

    uint32_t *out_indices; /* (capacity + TOP_M_SLACK) */
    float *out_values;     /* (capacity + 1) */
};

/* Union punning (defined in C11) rather than memcpy: GCC 12 vectorizes
 * loops through it. A float's bits are its top-m key: for x >= 0 they are
 * ordered as x is. */
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

/* k distinct uniform coordinates into picks[0..k) from the persistent
 * permutation (sparsifier.c): eSGD's rounds 0 and 1, and random-k. */
void sparsifier_draw_uniform(sparsifier *s, uint32_t *picks, uint32_t k);

/* One round of each method: writes the entries to send, indices
 * ascending, to out_indices / out_values and returns their count. g is
 * finite (sparsifier_select has checked). */
uint32_t sparsifier_select_dense(sparsifier *s, const float *g);
uint32_t sparsifier_select_threshold(sparsifier *s, const float *g);
uint32_t sparsifier_select_topk(sparsifier *s, const float *g);
uint32_t sparsifier_select_randk(sparsifier *s, const float *g);
uint32_t sparsifier_select_dgc(sparsifier *s, const float *g, uint32_t round);
uint32_t sparsifier_select_esgd(sparsifier *s, const float *g, uint32_t round, bool loss_fell, float local_loss,
                                float tau);

#endif
