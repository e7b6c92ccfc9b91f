/* Sparse update aggregation on the coordinator: per-agent slots, a dense
 * accumulator, the SGD step on the flat parameter vector, and the
 * compressed downlink's server-side error feedback. */
#include "esgd/aggregator.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "top_m.h"

/* The compressed downlink (aggregator_set_downlink): of the round's step
 * plus what earlier rounds held back, only the `keep` largest coordinates
 * are applied (and so broadcast); the rest is held back in `residual`. */
typedef struct downlink {
    uint32_t keep;    /* 0: off, every coordinate of the step is applied */
    float *residual;  /* (dim) the step not applied yet */
    uint32_t *keys;   /* (dim) |v_j| as order-preserving keys */
    uint32_t *chosen; /* (keep + TOP_M_SLACK) positions of the applied coordinates */
    top_m *top;
} downlink;

typedef struct update_slot {
    bool filled;
    uint32_t samples;
    float loss;
    double norm;          /* L2 norm of the held values */
    sparse_vector update; /* indices/values own slot_capacity entries */
} update_slot;

struct aggregator {
    uint32_t dim;
    uint32_t agents;
    uint32_t slot_capacity;
    uint32_t filled;
    uint32_t required_samples; /* 0: any */
    update_slot *slots;  /* (agents) */
    double *sum;         /* (dim) accumulator, all zero between rounds; in double so that no sum of
                          * finite floats overflows */
    uint64_t *touched;   /* (dim / 64 rounded up) bit j set where sum[j] may be non-zero; a bitmap so that
                          * closing a sparse round skips untouched words instead of testing every j */
    double *losses;      /* (agents) scratch for the median loss */
    uint32_t *dropped;   /* (agents) agents the last apply dropped */
    uint32_t dropped_count;
    downlink down;
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
    agg->losses = calloc(agents, sizeof *agg->losses);
    agg->dropped = calloc(agents, sizeof *agg->dropped);
    if (!agg->slots || !agg->sum || !agg->touched || !agg->losses || !agg->dropped)
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
    free(agg->losses);
    free(agg->dropped);
    free(agg->down.residual);
    free(agg->down.keys);
    free(agg->down.chosen);
    top_m_free(agg->down.top);
    free(agg);
}

esgd_status aggregator_set_downlink(aggregator *agg, uint32_t keep, esgd_error *err)
{
    if (keep == 0 || keep >= agg->dim || agg->down.keep)
        return esgd_error_set(err, ESGD_ERR_ARG, "aggregator: downlink keeps %u of %u coordinates%s", keep, agg->dim,
                              agg->down.keep ? ", set twice" : "");
    downlink *dl = &agg->down;
    dl->residual = calloc(agg->dim, sizeof *dl->residual);
    dl->keys = malloc((size_t)agg->dim * sizeof *dl->keys);
    dl->chosen = malloc(((size_t)keep + TOP_M_SLACK) * sizeof *dl->chosen);
    dl->top = top_m_new(agg->dim);
    if (!dl->residual || !dl->keys || !dl->chosen || !dl->top) {
        free(dl->residual);
        free(dl->keys);
        free(dl->chosen);
        top_m_free(dl->top);
        memset(dl, 0, sizeof *dl);
        return esgd_error_set(err, ESGD_ERR_NOMEM, "aggregator: out of memory for the downlink residual of %u",
                              agg->dim);
    }
    dl->keep = keep;
    return ESGD_OK;
}

float *aggregator_downlink_residual(aggregator *agg)
{
    return agg->down.residual;
}

void aggregator_require_samples(aggregator *agg, uint32_t samples)
{
    agg->required_samples = samples;
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

static double l2_norm(const sparse_vector *v)
{
    double sum = 0;
    for (uint32_t i = 0; i < v->count; i++)
        sum += (double)v->values[i] * v->values[i];
    return sqrt(sum);
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
    /* Checked after the form of the message, so a malformed one is counted
     * under what is wrong with it. */
    if (agg->required_samples && samples != agg->required_samples)
        return esgd_error_set(err, ESGD_ERR_RANGE, "agent %u reports %u samples, the job's batch is %u", agent,
                              samples, agg->required_samples);
    update_slot *slot = &agg->slots[agent];
    memcpy(slot->update.indices, update->indices, (size_t)update->count * sizeof *update->indices);
    memcpy(slot->update.values, update->values, (size_t)update->count * sizeof *update->values);
    slot->update.count = update->count;
    slot->samples = samples;
    slot->loss = loss;
    slot->norm = l2_norm(&slot->update);
    slot->filled = true;
    agg->filled++;
    return ESGD_OK;
}

double aggregator_norm(const aggregator *agg, uint32_t agent)
{
    return aggregator_has(agg, agent) ? agg->slots[agent].norm : 0;
}

void aggregator_scale(aggregator *agg, uint32_t agent, double factor)
{
    if (!aggregator_has(agg, agent))
        return;
    update_slot *slot = &agg->slots[agent];
    float f = (float)factor;
    for (uint32_t i = 0; i < slot->update.count; i++)
        slot->update.values[i] *= f;
    slot->norm = l2_norm(&slot->update);
}

void aggregator_remove(aggregator *agg, uint32_t agent)
{
    if (!aggregator_has(agg, agent))
        return;
    agg->slots[agent].filled = false;
    agg->filled--;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of the held updates' losses: one agent's absurd loss cannot move
 * it past the other agents' values, unlike a (sample-weighted) mean. */
static double median_loss(aggregator *agg)
{
    uint32_t n = 0;
    for (uint32_t a = 0; a < agg->agents; a++)
        if (agg->slots[a].filled)
            agg->losses[n++] = agg->slots[a].loss;
    if (n == 0)
        return NAN;
    qsort(agg->losses, n, sizeof *agg->losses, compare_double);
    return n % 2 ? agg->losses[n / 2] : (agg->losses[n / 2 - 1] + agg->losses[n / 2]) / 2;
}

/* Zeroes the accumulator where it was touched. */
static void clear_sum(aggregator *agg)
{
    uint32_t words = (uint32_t)(((uint64_t)agg->dim + 63) / 64);
    for (uint32_t w = 0; w < words; w++) {
        for (uint64_t bits = agg->touched[w]; bits; bits &= bits - 1)
            agg->sum[w * 64 + (uint32_t)__builtin_ctzll(bits)] = 0;
        agg->touched[w] = 0;
    }
}

/* The compressed downlink's form of compute_next: sum[j] becomes
 * v_j = step * sum_j + residual_j for every j (the residual reaches
 * coordinates no update touched). False (and the accumulator cleared) if
 * some v_j or x_j - v_j is beyond float range: then no choice of applied
 * coordinates could leave both the model and the residual finite. */
static bool compute_steps(aggregator *agg, const float *params, double step)
{
    const float *residual = agg->down.residual;
    for (uint32_t j = 0; j < agg->dim; j++) {
        double v = step * agg->sum[j] + residual[j];
        if (!(fabs(v) <= FLT_MAX && fabs(params[j] - v) <= FLT_MAX)) {
            memset(agg->sum, 0, (size_t)agg->dim * sizeof *agg->sum);
            memset(agg->touched, 0, ((size_t)agg->dim + 63) / 64 * sizeof *agg->touched);
            return false;
        }
        agg->sum[j] = v;
    }
    return true;
}

/* Applies the `keep` largest |v_j| (ties to the lower j) of compute_steps'
 * sum[] to params, the rest goes to the residual; returns how many x_j
 * changed, listed ascending in changed. An applied coordinate keeps in the
 * residual what float rounding of x_j - v_j lost, and one whose step is too
 * small to change x_j keeps all of it, so no part of any step is lost. */
static uint32_t apply_largest(aggregator *agg, float *params, uint32_t *changed)
{
    downlink *dl = &agg->down;
    for (uint32_t j = 0; j < agg->dim; j++) {
        float magnitude = fabsf((float)agg->sum[j]);
        memcpy(&dl->keys[j], &magnitude, sizeof magnitude); /* non-negative floats order as their bits */
        dl->residual[j] = (float)agg->sum[j];
    }
    top_m_select_keys(dl->top, dl->keys, agg->dim, dl->keep, dl->chosen);
    uint32_t n_changed = 0;
    for (uint32_t i = 0; i < dl->keep; i++) {
        uint32_t j = dl->chosen[i];
        double v = agg->sum[j];
        float next = (float)(params[j] - v);
        dl->residual[j] = (float)(v - ((double)params[j] - next));
        if (next != params[j]) {
            params[j] = next;
            if (changed)
                changed[n_changed] = j;
            n_changed++;
        }
    }
    memset(agg->sum, 0, (size_t)agg->dim * sizeof *agg->sum);
    memset(agg->touched, 0, ((size_t)agg->dim + 63) / 64 * sizeof *agg->touched);
    return n_changed;
}

/* Sums the held updates in agent-id order, then turns sum[j] into the new
 * value of every touched x_j, rounded to float once. False (and the
 * accumulator cleared) if any new value is not finite. */
static bool compute_next(aggregator *agg, const float *params, double lr)
{
    for (uint32_t a = 0; a < agg->agents; a++) {
        const update_slot *slot = &agg->slots[a];
        if (!slot->filled)
            continue;
        for (uint32_t i = 0; i < slot->update.count; i++) {
            uint32_t j = slot->update.indices[i];
            agg->sum[j] += slot->update.values[i];
            agg->touched[j >> 6] |= 1ull << (j & 63);
        }
    }
    const double step = lr / agg->filled;
    if (agg->down.keep)
        return compute_steps(agg, params, step);
    uint32_t words = (uint32_t)(((uint64_t)agg->dim + 63) / 64);
    for (uint32_t w = 0; w < words; w++) {
        for (uint64_t bits = agg->touched[w]; bits; bits &= bits - 1) {
            uint32_t j = w * 64 + (uint32_t)__builtin_ctzll(bits);
            double next = params[j] - step * agg->sum[j];
            if (!(fabs(next) <= FLT_MAX)) { /* checked in double: a float cast out of range is undefined */
                clear_sum(agg);
                return false;
            }
            agg->sum[j] = (float)next;
        }
    }
    return true;
}

/* The held update with the largest norm; ties go to the lowest agent id. */
static uint32_t largest_norm(const aggregator *agg)
{
    uint32_t worst = agg->agents;
    for (uint32_t a = 0; a < agg->agents; a++)
        if (agg->slots[a].filled && (worst == agg->agents || agg->slots[a].norm > agg->slots[worst].norm))
            worst = a;
    return worst;
}

void aggregator_apply(aggregator *agg, float *params, double lr, aggregate_result *result, uint32_t *changed)
{
    memset(result, 0, sizeof *result);
    result->loss = NAN;
    agg->dropped_count = 0;
    while (agg->filled > 0 && !compute_next(agg, params, lr)) {
        uint32_t worst = largest_norm(agg);
        agg->dropped[agg->dropped_count++] = worst;
        aggregator_remove(agg, worst);
    }
    result->dropped = agg->dropped_count;
    if (agg->filled == 0)
        return;

    for (uint32_t a = 0; a < agg->agents; a++) {
        if (agg->slots[a].filled) {
            result->samples += agg->slots[a].samples;
            result->participants++;
        }
    }
    result->loss = median_loss(agg);
    if (agg->down.keep) {
        result->changed = apply_largest(agg, params, changed);
        aggregator_reset(agg);
        return;
    }

    uint32_t n_changed = 0;
    uint32_t words = (uint32_t)(((uint64_t)agg->dim + 63) / 64);
    for (uint32_t w = 0; w < words; w++) {
        /* Set bits in ascending order, so the changed list comes out sorted. */
        for (uint64_t bits = agg->touched[w]; bits; bits &= bits - 1) {
            uint32_t j = w * 64 + (uint32_t)__builtin_ctzll(bits);
            float next = (float)agg->sum[j];
            /* Only coordinates whose value really changed are written and go
             * into a delta, so agents that apply the delta hold the same bits. */
            if (next != params[j]) {
                params[j] = next;
                if (changed)
                    changed[n_changed] = j;
                n_changed++;
            }
            agg->sum[j] = 0;
        }
        agg->touched[w] = 0;
    }
    result->changed = n_changed;
    aggregator_reset(agg);
}

const uint32_t *aggregator_dropped(const aggregator *agg)
{
    return agg->dropped;
}
