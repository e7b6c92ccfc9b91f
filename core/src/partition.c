/* Splitting a training set among agents: IID (a seeded shuffle cut into
 * near-equal parts) or label-skewed (each class split by Dirichlet(alpha)
 * proportions). The same (labels, agents, kind, alpha, seed) always gives
 * the same shards. */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "esgd/dataset.h"
#include "esgd/rng.h"

/* The partition's own stream, so it does not share draws with model
 * initialisation or batch sampling that use the same seed. */
#define PARTITION_STREAM 0x5eed

static void shuffle(uint32_t *v, uint32_t n, esgd_rng *rng)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = rng_below(rng, i);
        uint32_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

static void partition_iid(esgd_shards *s, uint32_t count, esgd_rng *rng)
{
    for (uint32_t i = 0; i < count; i++)
        s->indices[i] = i;
    shuffle(s->indices, count, rng);
    for (uint32_t a = 0; a <= s->agents; a++)
        s->offsets[a] = (uint32_t)((uint64_t)a * count / s->agents);
}

/* Gives the n examples of one class (owner[0..n)) to agents in proportions
 * drawn from Dir(alpha), as Gamma(alpha) draws normalised by their sum.
 * Cutting at the rounded-down cumulative proportions assigns every example
 * exactly once. */
static void split_class(uint32_t *owner, uint32_t n, uint32_t agents, double alpha, double *weights,
                        uint32_t *sizes, esgd_rng *rng)
{
    double total = 0;
    for (uint32_t a = 0; a < agents; a++) {
        weights[a] = rng_gamma(rng, alpha);
        total += weights[a];
    }
    if (!(total > 0) || !isfinite(total)) {
        /* Every draw underflowed (alpha far below 1). As alpha -> 0, Dir(alpha)
         * tends to all mass on one agent chosen uniformly: use exactly that. */
        uint32_t a = rng_below(rng, agents);
        for (uint32_t k = 0; k < n; k++)
            owner[k] = a;
        sizes[a] += n;
        return;
    }
    double cumulative = 0;
    uint32_t start = 0;
    for (uint32_t a = 0; a < agents; a++) {
        cumulative += weights[a];
        double cut = floor((double)n * (cumulative / total));
        uint32_t end = a + 1 == agents || cut >= n ? n : (uint32_t)cut;
        assert(end >= start); /* cumulative only grows */
        for (uint32_t k = start; k < end; k++)
            owner[k] = a;
        sizes[a] += end - start;
        start = end;
    }
}

/* Max-heap of agents by shard size, ties to the lower id. */
static bool heap_above(const uint32_t *sizes, uint32_t a, uint32_t b)
{
    return sizes[a] > sizes[b] || (sizes[a] == sizes[b] && a < b);
}

static void heap_sift_down(uint32_t *heap, uint32_t n, uint32_t i, const uint32_t *sizes)
{
    for (;;) {
        uint32_t top = i;
        uint64_t left = 2 * (uint64_t)i + 1, right = left + 1;
        if (left < n && heap_above(sizes, heap[left], heap[top]))
            top = (uint32_t)left;
        if (right < n && heap_above(sizes, heap[right], heap[top]))
            top = (uint32_t)right;
        if (top == i)
            return;
        uint32_t t = heap[i];
        heap[i] = heap[top];
        heap[top] = t;
        i = top;
    }
}

/* A small alpha leaves some agents without examples, yet every agent must be
 * able to train. Each empty agent takes one example from the largest shard
 * at that moment (which holds at least two, since agents <= count); the
 * example given is the donor's first in owner order. */
static bool fill_empty_shards(uint32_t *owner, uint32_t count, uint32_t *sizes, uint32_t agents)
{
    uint32_t *heap = malloc((size_t)agents * sizeof *heap);
    uint32_t *recipients = malloc((size_t)agents * sizeof *recipients);
    uint32_t *gives = calloc(agents, sizeof *gives);
    if (!heap || !recipients || !gives) {
        free(heap);
        free(recipients);
        free(gives);
        return false;
    }
    uint32_t filled = 0, empty = 0;
    for (uint32_t a = 0; a < agents; a++) {
        if (sizes[a] == 0)
            recipients[empty++] = a;
        else
            heap[filled++] = a;
    }
    for (uint32_t i = filled / 2; i-- > 0;)
        heap_sift_down(heap, filled, i, sizes);
    for (uint32_t e = 0; e < empty; e++) {
        uint32_t donor = heap[0];
        assert(sizes[donor] >= 2);
        sizes[donor]--;
        gives[donor]++;
        sizes[recipients[e]] = 1;
        heap_sift_down(heap, filled, 0, sizes);
    }
    for (uint32_t k = 0, next = 0; k < count && next < empty; k++) {
        if (gives[owner[k]] > 0) {
            gives[owner[k]]--;
            owner[k] = recipients[next++];
        }
    }
    free(heap);
    free(recipients);
    free(gives);
    return true;
}

static bool partition_dirichlet(esgd_shards *s, const uint8_t *labels, uint32_t count, double alpha, esgd_rng *rng)
{
    uint32_t agents = s->agents;
    uint32_t *by_class = malloc((size_t)count * sizeof *by_class); /* example numbers grouped by label */
    uint32_t *owner = malloc((size_t)count * sizeof *owner);       /* agent of by_class[k] */
    uint32_t *sizes = calloc(agents, sizeof *sizes);
    double *weights = malloc((size_t)agents * sizeof *weights);
    bool ok = by_class && owner && sizes && weights;
    if (!ok)
        goto done;

    uint32_t class_start[DATASET_MAX_CLASSES + 1] = {0};
    for (uint32_t i = 0; i < count; i++)
        class_start[labels[i] + 1]++;
    for (int c = 0; c < DATASET_MAX_CLASSES; c++)
        class_start[c + 1] += class_start[c];
    uint32_t cursor[DATASET_MAX_CLASSES];
    for (int c = 0; c < DATASET_MAX_CLASSES; c++)
        cursor[c] = class_start[c];
    for (uint32_t i = 0; i < count; i++)
        by_class[cursor[labels[i]]++] = i;

    for (int c = 0; c < DATASET_MAX_CLASSES; c++) {
        uint32_t n = class_start[c + 1] - class_start[c];
        if (n == 0)
            continue;
        shuffle(by_class + class_start[c], n, rng);
        split_class(owner + class_start[c], n, agents, alpha, weights, sizes, rng);
    }
    if (!(ok = fill_empty_shards(owner, count, sizes, agents)))
        goto done;

    /* Group by owner; sizes becomes each agent's write cursor. */
    s->offsets[0] = 0;
    for (uint32_t a = 0; a < agents; a++) {
        s->offsets[a + 1] = s->offsets[a] + sizes[a];
        sizes[a] = s->offsets[a];
    }
    for (uint32_t k = 0; k < count; k++)
        s->indices[sizes[owner[k]]++] = by_class[k];
    /* Examples were grouped by class: mix them so every batch does not hold
     * a single class. */
    for (uint32_t a = 0; a < agents; a++)
        shuffle(s->indices + s->offsets[a], s->offsets[a + 1] - s->offsets[a], rng);
done:
    free(by_class);
    free(owner);
    free(sizes);
    free(weights);
    return ok;
}

esgd_status shards_make(esgd_shards *shards, const uint8_t *labels, uint32_t count, uint32_t agents,
                        partition_kind kind, double alpha, uint64_t seed, esgd_error *err)
{
    if (!shards)
        return esgd_error_set(err, ESGD_ERR_ARG, "shards_make: NULL shards");
    *shards = (esgd_shards){0};
    if (!labels)
        return esgd_error_set(err, ESGD_ERR_ARG, "shards_make: NULL labels");
    if (agents == 0 || agents > count)
        return esgd_error_set(err, ESGD_ERR_ARG, "cannot split %u examples among %u agents (need 1..%u agents)",
                              count, agents, count);
    if (kind != PARTITION_IID && kind != PARTITION_DIRICHLET)
        return esgd_error_set(err, ESGD_ERR_ARG, "unknown partition kind %d", (int)kind);
    if (kind == PARTITION_DIRICHLET && !(alpha > 0 && isfinite(alpha)))
        return esgd_error_set(err, ESGD_ERR_ARG, "Dirichlet alpha must be finite and > 0, got %g", alpha);

    esgd_shards s = {.agents = agents};
    s.offsets = malloc(((size_t)agents + 1) * sizeof *s.offsets);
    s.indices = malloc((size_t)count * sizeof *s.indices);
    esgd_rng rng;
    rng_seed(&rng, seed, PARTITION_STREAM);
    bool ok = s.offsets && s.indices;
    if (ok && kind == PARTITION_IID)
        partition_iid(&s, count, &rng);
    else if (ok)
        ok = partition_dirichlet(&s, labels, count, alpha, &rng);
    if (!ok) {
        shards_destroy(&s);
        return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory splitting %u examples among %u agents", count,
                              agents);
    }
    *shards = s;
    return ESGD_OK;
}

void shards_destroy(esgd_shards *shards)
{
    if (!shards)
        return;
    free(shards->offsets);
    free(shards->indices);
    *shards = (esgd_shards){0};
}
