/* The coordinator's arithmetic for one round: hold each accepted sparse
 * update, then x_{t+1} = x_t - lr_t * (1/N_t) * sum_i u_i and the global loss
 * L_t = sample-weighted mean of the agents' losses.
 *
 * Updates are summed in agent-id order at close, not in arrival order, so the
 * result does not depend on network timing: a broker run and the in-process
 * simulator produce the same model bit for bit. */
#ifndef ESGD_AGGREGATOR_H
#define ESGD_AGGREGATOR_H

#include <stdbool.h>
#include <stdint.h>

#include "esgd/error.h"
#include "esgd/sparse.h"

typedef struct aggregator aggregator;

typedef struct aggregate_result {
    uint32_t participants; /* N_t */
    uint64_t samples;      /* sum of the agents' sample counts */
    double loss;           /* L_t; NaN when no update was accepted */
    uint32_t changed;      /* coordinates of x that the round changed */
} aggregate_result;

/* Room for `agents` updates of up to `slot_capacity` entries over dimension
 * dim, all allocated here. */
aggregator *aggregator_new(uint32_t dim, uint32_t agents, uint32_t slot_capacity, esgd_error *err);
void aggregator_free(aggregator *agg); /* NULL is a no-op */

/* Forgets the held updates. */
void aggregator_reset(aggregator *agg);

bool aggregator_has(const aggregator *agg, uint32_t agent);
uint32_t aggregator_count(const aggregator *agg);

/* Copies an update into agent's slot. Errors: ESGD_ERR_RANGE (agent id),
 * ESGD_ERR_MISMATCH (agent already has an update this round),
 * ESGD_ERR_DIMENSION, ESGD_ERR_TOO_LARGE (over slot_capacity),
 * ESGD_ERR_NONFINITE (a value, or the loss). */
esgd_status aggregator_add(aggregator *agg, uint32_t agent, const sparse_vector *update, uint32_t samples,
                           float loss, esgd_error *err);

/* Applies the held updates to params (dim) with learning rate lr and fills
 * *result; changed (may be NULL) receives the ascending indices of the
 * changed coordinates (capacity dim). Then resets. */
void aggregator_apply(aggregator *agg, float *params, double lr, aggregate_result *result, uint32_t *changed);

#endif
