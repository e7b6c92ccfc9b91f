/* The coordinator's arithmetic for one round: hold each accepted sparse
 * update, then x_{t+1} = x_t - lr_t * (1/N_t) * sum_i u_i and the global loss
 * L_t = median of the agents' reported losses.
 *
 * Updates are summed in agent-id order at close, not in arrival order, so the
 * result does not depend on network timing: a broker run and the in-process
 * simulator produce the same model bit for bit. The sum is in double and the
 * new model is checked before it replaces the old one: a round whose result
 * would not be finite drops held updates (largest L2 norm first) until it is,
 * so one agent's huge but finite values can never make the model Inf. */
#ifndef ESGD_AGGREGATOR_H
#define ESGD_AGGREGATOR_H

#include <stdbool.h>
#include <stdint.h>

#include "esgd/error.h"
#include "esgd/sparse.h"

typedef struct aggregator aggregator;

typedef struct aggregate_result {
    uint32_t participants; /* N_t: updates that went into the model */
    uint64_t samples;      /* sum of their sample counts */
    double loss;           /* L_t: median of their losses (mean of the two middle ones for an even N_t);
                            * NaN when there was none */
    uint32_t changed;      /* coordinates of x that the round changed */
    uint32_t dropped;      /* held updates dropped because the model would not have been finite;
                            * which agents: aggregator_dropped */
} aggregate_result;

/* Room for `agents` updates of up to `slot_capacity` entries over dimension
 * dim, all allocated here. */
aggregator *aggregator_new(uint32_t dim, uint32_t agents, uint32_t slot_capacity, esgd_error *err);
void aggregator_free(aggregator *agg); /* NULL is a no-op */

/* Every update must then report exactly `samples` samples (the job's
 * batch), so that no agent can claim more weight; 0 (the default) accepts
 * any count. */
void aggregator_require_samples(aggregator *agg, uint32_t samples);

/* Forgets the held updates. */
void aggregator_reset(aggregator *agg);

bool aggregator_has(const aggregator *agg, uint32_t agent);
uint32_t aggregator_count(const aggregator *agg);

/* Copies an update into agent's slot. Errors: ESGD_ERR_RANGE (agent id, an
 * index, or samples other than the required count), ESGD_ERR_MISMATCH
 * (agent already has an update this round), ESGD_ERR_DIMENSION,
 * ESGD_ERR_TOO_LARGE (over slot_capacity), ESGD_ERR_ORDER,
 * ESGD_ERR_NONFINITE (a value, or the loss). */
esgd_status aggregator_add(aggregator *agg, uint32_t agent, const sparse_vector *update, uint32_t samples,
                           float loss, esgd_error *err);

/* L2 norm (in double) of agent's held values; 0 when it holds none. */
double aggregator_norm(const aggregator *agg, uint32_t agent);
/* Multiplies agent's held values by (float)factor, as a norm clip does. */
void aggregator_scale(aggregator *agg, uint32_t agent, double factor);
/* Forgets agent's held update (no-op when there is none). */
void aggregator_remove(aggregator *agg, uint32_t agent);

/* The compressed downlink: from now on each apply takes v = the round's
 * step + the residual (what earlier rounds held back), applies only the
 * `keep` coordinates of largest |v_j| (ties to the lower j) and keeps the
 * rest of v as the residual (server-side error feedback). The model then
 * changes in at most keep coordinates a round, so the broadcast delta stays
 * that small however many agents' coordinates the round's sum covers.
 * ESGD_ERR_ARG unless 0 < keep < dim (once), ESGD_ERR_NOMEM. */
esgd_status aggregator_set_downlink(aggregator *agg, uint32_t keep, esgd_error *err);
/* The residual (dim floats, for a checkpoint to save and restore), or NULL
 * without a compressed downlink. */
float *aggregator_downlink_residual(aggregator *agg);

/* Applies the held updates to params (dim) with learning rate lr and fills
 * *result; changed (may be NULL) receives the ascending indices of the
 * changed coordinates (capacity dim). Then resets. params stays finite:
 * while the new model would have a non-finite coordinate, the held update
 * with the largest norm (ties: the lowest agent id) is dropped and the
 * round recomputed. */
void aggregator_apply(aggregator *agg, float *params, double lr, aggregate_result *result, uint32_t *changed);

/* The agents the last aggregator_apply dropped, in the order dropped
 * (result.dropped of them); valid until the next apply. */
const uint32_t *aggregator_dropped(const aggregator *agg);

#endif
