/* Sparse update aggregation on the coordinator: per-agent slots, a dense
 * accumulator, and the SGD step on the flat parameter vector. */
#include "esgd/aggregator.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct update_slot {
    bool filled;
    uint32_t samples;
    float loss;
    sparse_vector update; /* indices/values own slot_capacity entries */
} update_slot;

struct aggregator {
    uint32_t dim;
    uint32_t agents;
    uint32_t slot_capacity;
    uint32_t filled;
    update_slot *slots;  /* (agents) */
    float *sum;          /* (dim) accumulator, all zero between rounds */
    uint64_t *touched;   /* (dim / 64 rounded up) bit j set where sum[j] may be non-zero; a bitmap so that
                          * closing a sparse round skips untouched words instead of testing every j */
};

aggregator *aggregator_new(uint32_t dim, uint32_t agents, uint32_t slot_capacity, esgd_error *err)
{
    if (dim == 0 || agents == 0 || slot_capacity == 0 || slot_capacity > dim) {
        esgd_error_set(err, ESGD_ERR_ARG, "aggregator: dim %u, agents %u, slot capacity %u", dim, agents,
                       slot_capacity);
        return NULL;
    }
    aggregator *agg = calloc(1, sizeof *agg);
    if (!agg)
        goto nomem;
    agg->dim = dim;
    agg->agents = agents;
    agg->slot_capacity = slot_capacity;
    agg->slots = calloc(agents, sizeof *agg->slots);
    agg->sum = calloc(dim, sizeof *agg->sum);
    agg->touched = calloc(((size_t)dim + 63) / 64, sizeof *agg->touched);
    if (!agg->slots || !agg->sum || !agg->touched)
        goto nomem;
    for (uint32_t a = 0; a < agents; a++) {
        sparse_vector *v = &agg->slots[a].update;
        v->dim = dim;
        v->capacity = slot_capacity;
        v->indices = malloc((size_t)slot_capacity * sizeof *v->indices);
        v->values = malloc((size_t)slot_capacity * sizeof *v->values);
        if (!v->indices || !v->values)
            goto nomem;
    }
    return agg;
nomem:
    aggregator_free(agg);
    esgd_error_set(err, ESGD_ERR_NOMEM, "aggregator: out of memory for %u agents x %u entries", agents,
                   slot_capacity);
    return NULL;
}

void aggregator_free(aggregator *agg)
{
    if (!agg)
        return;
    if (agg->slots) {
        for (uint32_t a = 0; a < agg->agents; a++) {
            free(agg->slots[a].update.indices);
            free(agg->slots[a].update.values);
        }
    }
    free(agg->slots);
    free(agg->sum);
    free(agg->touched);
    free(agg);
}

void aggregator_reset(aggregator *agg)
{
    for (uint32_t a = 0; a < agg->agents; a++)
        agg->slots[a].filled = false;
    agg->filled = 0;
}

bool aggregator_has(const aggregator *agg, uint32_t agent)
{
    return agent < agg->agents && agg->slots[agent].filled;
}

uint32_t aggregator_count(const aggregator *agg)
{
    return agg->filled;
}

esgd_status aggregator_add(aggregator *agg, uint32_t agent, const sparse_vector *update, uint32_t samples,
                           float loss, esgd_error *err)
{
    if (agent >= agg->agents)
        return esgd_error_set(err, ESGD_ERR_RANGE, "agent %u not in job (agents 0..%u)", agent, agg->agents - 1);
    if (agg->slots[agent].filled)
        return esgd_error_set(err, ESGD_ERR_MISMATCH, "agent %u already sent an update this round", agent);
    if (update->dim != agg->dim)
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "update dim %u, model dim %u", update->dim, agg->dim);
    if (update->count > agg->slot_capacity)
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "update has %u entries, limit %u", update->count,
                              agg->slot_capacity);
    if (!isfinite(loss) || loss < 0)
        return esgd_error_set(err, ESGD_ERR_NONFINITE, "agent %u loss %g is not a finite non-negative number",
                              agent, (double)loss);
    uint32_t prev = 0;
    for (uint32_t i = 0; i < update->count; i++) {
        uint32_t j = update->indices[i];
        if (j >= agg->dim || (i > 0 && j <= prev))
            return esgd_error_set(err, j >= agg->dim ? ESGD_ERR_RANGE : ESGD_ERR_ORDER,
                                  "update index %u at position %u", j, i);
        if (!isfinite(update->values[i]))
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "update value at index %u is not finite", j);
        prev = j;
    }
    update_slot *slot = &agg->slots[agent];
    memcpy(slot->update.indices, update->indices, (size_t)update->count * sizeof *update->indices);
    memcpy(slot->update.values, update->values, (size_t)update->count * sizeof *update->values);
    slot->update.count = update->count;
    slot->samples = samples;
    slot->loss = loss;
    slot->filled = true;
    agg->filled++;
    return ESGD_OK;
}

void aggregator_apply(aggregator *agg, float *params, double lr, aggregate_result *result, uint32_t *changed)
{
    memset(result, 0, sizeof *result);
    result->loss = NAN;
    if (agg->filled == 0)
        return;

    double weighted_loss = 0;
    for (uint32_t a = 0; a < agg->agents; a++) {
        const update_slot *slot = &agg->slots[a];
        if (!slot->filled)
            continue;
        for (uint32_t i = 0; i < slot->update.count; i++) {
            uint32_t j = slot->update.indices[i];
            agg->sum[j] += slot->update.values[i];
            agg->touched[j >> 6] |= 1ull << (j & 63);
        }
        weighted_loss += (double)slot->loss * slot->samples;
        result->samples += slot->samples;
        result->participants++;
    }
    result->loss = result->samples ? weighted_loss / (double)result->samples : NAN;

    const float step = (float)(lr / result->participants);
    uint32_t n_changed = 0;
    uint32_t words = (uint32_t)(((uint64_t)agg->dim + 63) / 64);
    for (uint32_t w = 0; w < words; w++) {
        /* Set bits in ascending order, so the changed list comes out sorted. */
        for (uint64_t bits = agg->touched[w]; bits; bits &= bits - 1) {
            uint32_t j = w * 64 + (uint32_t)__builtin_ctzll(bits);
            float before = params[j];
            params[j] = before - step * agg->sum[j];
            /* Only coordinates whose value really changed go into a delta. */
            if (params[j] != before && changed)
                changed[n_changed] = j;
            n_changed += params[j] != before;
            agg->sum[j] = 0;
        }
        agg->touched[w] = 0;
    }
    result->changed = n_changed;
    aggregator_reset(agg);
}
