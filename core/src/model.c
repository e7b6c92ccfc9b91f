/* The model's memory and entry points (model.h): the layer table, one flat
 * buffer of parameters and one of gradients with per-layer views in the
 * coordinate order eSGD numbers, the activation workspace sized once in
 * model_new, the seeded initialisation, and the checked calls that run the
 * passes of model_layers.c and evaluate on a dataset. */
#include "esgd/model.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/rng.h"
#include "model_impl.h"

/* Keeps every GEMM dimension (up to batch * 784) well inside an int. */
#define MODEL_MAX_BATCH 65536u
/* The initialisation's own rng stream, so it shares no draws with the
 * partition or the agents' batch sampling under the same seed. */
#define MODEL_INIT_STREAM 0x1417u
/* The fuzzers' copy of the core narrows it (tests/fuzz/CMakeLists.txt), so
 * the MLP's state files are kilobytes there. */
#ifndef MLP_HIDDEN
#define MLP_HIDDEN 128
#endif

/* A layer's shape: fc has k = 1, conv has in/out channels and a k x k kernel. */
typedef struct layer_shape {
    uint32_t in, out, k;
} layer_shape;

static const layer_shape mlp_shapes[] = {{MODEL_INPUT_SIZE, MLP_HIDDEN, 1}, {MLP_HIDDEN, MODEL_CLASSES, 1}};
static const layer_shape lenet_shapes[] = {
    {1, CONV1_OUT, KERNEL}, {CONV1_OUT, CONV2_OUT, KERNEL}, {FLAT_SIZE, 120, 1}, {120, 84, 1}, {84, MODEL_CLASSES, 1}};

static const layer_shape *kind_shapes(model_kind kind, uint32_t *count)
{
    switch (kind) {
    case MODEL_KIND_MLP:
        *count = sizeof mlp_shapes / sizeof mlp_shapes[0];
        return mlp_shapes;
    case MODEL_KIND_LENET:
        *count = sizeof lenet_shapes / sizeof lenet_shapes[0];
        return lenet_shapes;
    }
    *count = 0;
    return NULL;
}

uint32_t model_kind_num_params(model_kind kind)
{
    uint32_t count, total = 0;
    const layer_shape *shapes = kind_shapes(kind, &count);
    for (uint32_t i = 0; i < count; i++)
        total += shapes[i].out * shapes[i].in * shapes[i].k * shapes[i].k + shapes[i].out;
    return total;
}

/* ---- allocation ---- */

static void *alloc_zeroed(size_t count, size_t size, bool *ok)
{
    void *p = calloc(count, size);
    if (!p)
        *ok = false;
    return p;
}

static void impl_free(model_impl *m)
{
    if (!m)
        return;
    void *buffers[] = {m->xpad,    m->conv1,    m->dconv1,  m->arg1,     m->pool1,   m->dpool1,
                       m->col2,    m->conv2,    m->dconv2,  m->dw2_t,    m->arg2,
                       m->flat,    m->dflat,    m->hidden1, m->dhidden1, m->hidden2, m->dhidden2,
                       m->logits,  m->dlogits,  m->eval_x,  m->eval_y,   m->eval_idx};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++)
        free(buffers[i]);
    free(m);
}

/* Points each layer's views at its slice of params and grads, in the
 * coordinate order of model.h. */
static void point_layers(esgd_model *model, const layer_shape *shapes, uint32_t count)
{
    model_impl *m = model->impl;
    size_t offset = 0;
    m->num_layers = count;
    for (uint32_t i = 0; i < count; i++) {
        layer *l = &m->layers[i];
        l->in = shapes[i].in;
        l->out = shapes[i].out;
        l->k = shapes[i].k;
        l->fan_in = l->in * l->k * l->k;
        l->w = model->params + offset;
        l->dw = model->grads + offset;
        offset += (size_t)l->out * l->fan_in;
        l->b = model->params + offset;
        l->db = model->grads + offset;
        offset += l->out;
    }
    assert(offset == model->num_params);
}

static bool impl_alloc_workspace(model_impl *m, model_kind kind, size_t batch)
{
    bool ok = true;
    size_t f = sizeof(float);
    if (kind == MODEL_KIND_LENET) {
        size_t wide1 = batch * CONV1_OUT * WIDE_PLANE;
        size_t pool1 = batch * CONV1_OUT * POOL1_SIDE * POOL1_SIDE;
        size_t col2 = batch * CONV1_OUT * KERNEL * KERNEL * CONV2_SIDE * CONV2_SIDE;
        size_t conv2 = batch * CONV2_OUT * CONV2_SIDE * CONV2_SIDE;
        m->xpad = alloc_zeroed(batch * PAD_PLANE, f, &ok);
        m->conv1 = alloc_zeroed(wide1, f, &ok);
        m->dconv1 = alloc_zeroed(wide1, f, &ok);
        m->arg1 = alloc_zeroed(pool1, 1, &ok);
        m->pool1 = alloc_zeroed(pool1, f, &ok);
        m->dpool1 = alloc_zeroed(pool1, f, &ok);
        m->col2 = alloc_zeroed(col2, f, &ok);
        m->conv2 = alloc_zeroed(conv2, f, &ok);
        m->dconv2 = alloc_zeroed(conv2, f, &ok);
        m->dw2_t = alloc_zeroed((size_t)CONV2_OUT * CONV1_OUT * KERNEL * KERNEL, f, &ok);
        m->arg2 = alloc_zeroed(batch * FLAT_SIZE, 1, &ok);
        m->flat = alloc_zeroed(batch * FLAT_SIZE, f, &ok);
        m->dflat = alloc_zeroed(batch * FLAT_SIZE, f, &ok);
    }
    size_t hidden1 = m->layers[kind == MODEL_KIND_LENET ? 2 : 0].out;
    m->hidden1 = alloc_zeroed(batch * hidden1, f, &ok);
    m->dhidden1 = alloc_zeroed(batch * hidden1, f, &ok);
    if (kind == MODEL_KIND_LENET) {
        m->hidden2 = alloc_zeroed(batch * m->layers[3].out, f, &ok);
        m->dhidden2 = alloc_zeroed(batch * m->layers[3].out, f, &ok);
    }
    m->logits = alloc_zeroed(batch * MODEL_CLASSES, f, &ok);
    m->dlogits = alloc_zeroed(batch * MODEL_CLASSES, f, &ok);
    m->eval_x = alloc_zeroed(batch * MODEL_INPUT_SIZE, f, &ok);
    m->eval_y = alloc_zeroed(batch, 1, &ok);
    m->eval_idx = alloc_zeroed(batch, sizeof(uint32_t), &ok);
    return ok;
}

esgd_model *model_new(model_kind kind, uint32_t max_batch, esgd_error *err)
{
    uint32_t count;
    const layer_shape *shapes = kind_shapes(kind, &count);
    if (!shapes) {
        esgd_error_set(err, ESGD_ERR_ARG, "model_new: unknown model kind %d", (int)kind);
        return NULL;
    }
    if (max_batch == 0 || max_batch > MODEL_MAX_BATCH) {
        esgd_error_set(err, ESGD_ERR_ARG, "model_new: max_batch %u is outside 1..%u", max_batch, MODEL_MAX_BATCH);
        return NULL;
    }
    esgd_model *model = calloc(1, sizeof *model);
    if (!model) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "model_new: out of memory");
        return NULL;
    }
    model->kind = kind;
    model->num_params = model_kind_num_params(kind);
    model->max_batch = max_batch;
    bool ok = true;
    model->params = alloc_zeroed(model->num_params, sizeof(float), &ok);
    model->grads = alloc_zeroed(model->num_params, sizeof(float), &ok);
    model->impl = alloc_zeroed(1, sizeof *model->impl, &ok);
    if (ok) {
        point_layers(model, shapes, count);
        ok = impl_alloc_workspace(model->impl, kind, max_batch);
    }
    if (!ok) {
        model_free(model);
        esgd_error_set(err, ESGD_ERR_NOMEM, "model_new: out of memory for %u parameters and batch %u",
                       model_kind_num_params(kind), max_batch);
        return NULL;
    }
    return model;
}

void model_free(esgd_model *model)
{
    if (!model)
        return;
    impl_free(model->impl);
    free(model->params);
    free(model->grads);
    free(model);
}

void model_init_params(esgd_model *model, uint64_t seed)
{
    if (!model)
        return;
    esgd_rng rng;
    rng_seed(&rng, seed, MODEL_INIT_STREAM);
    for (uint32_t i = 0; i < model->impl->num_layers; i++) {
        layer *l = &model->impl->layers[i];
        double limit = sqrt(6.0 / l->fan_in);
        size_t weights = (size_t)l->out * l->fan_in;
        for (size_t j = 0; j < weights; j++)
            l->w[j] = (float)((2.0 * rng_uniform(&rng) - 1.0) * limit);
        memset(l->b, 0, l->out * sizeof(float));
    }
}

/* Every check happens before any compute, so a rejected call leaves the
 * model's activations and gradients as they were. */
static esgd_status check_batch(const esgd_model *model, const float *x, const uint8_t *y, uint32_t batch)
{
    if (!model || !model->impl || !x || !y || batch == 0 || batch > model->max_batch)
        return ESGD_ERR_ARG;
    for (uint32_t i = 0; i < batch; i++)
        if (y[i] >= MODEL_CLASSES)
            return ESGD_ERR_ARG;
    return ESGD_OK;
}

esgd_status model_forward_backward(esgd_model *model, const float *x, const uint8_t *y, uint32_t batch, float *loss)
{
    esgd_status st = check_batch(model, x, y, batch);
    if (st != ESGD_OK)
        return st;
    model_impl *m = model->impl;
    model_network_forward(model, x, batch);
    float mean = model_softmax_cross_entropy(m->logits, y, batch, m->dlogits, NULL);
    model_network_backward(model, x, batch);
    if (loss)
        *loss = mean;
    return ESGD_OK;
}

esgd_status model_forward(esgd_model *model, const float *x, const uint8_t *y, uint32_t batch, float *loss,
                          uint32_t *correct)
{
    esgd_status st = check_batch(model, x, y, batch);
    if (st != ESGD_OK)
        return st;
    model_network_forward(model, x, batch);
    float mean = model_softmax_cross_entropy(model->impl->logits, y, batch, NULL, correct);
    if (loss)
        *loss = mean;
    return ESGD_OK;
}

esgd_status model_evaluate(esgd_model *model, const esgd_dataset *ds, uint32_t limit, float *accuracy, float *loss,
                           esgd_error *err)
{
    if (!model || !model->impl || !ds)
        return esgd_error_set(err, ESGD_ERR_ARG, "model_evaluate: NULL model or dataset");
    if (ds->count == 0 || !ds->pixels || !ds->labels)
        return esgd_error_set(err, ESGD_ERR_ARG, "model_evaluate: empty dataset");
    if ((uint64_t)ds->rows * ds->cols != MODEL_INPUT_SIZE)
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "model_evaluate: images are %ux%u, the model takes %u pixels",
                              ds->rows, ds->cols, MODEL_INPUT_SIZE);
    uint32_t total = limit == 0 || limit > ds->count ? ds->count : limit;
    model_impl *m = model->impl;
    double loss_sum = 0.0;
    uint64_t hits = 0;
    for (uint32_t start = 0; start < total; start += model->max_batch) {
        uint32_t n = total - start < model->max_batch ? total - start : model->max_batch;
        for (uint32_t i = 0; i < n; i++)
            m->eval_idx[i] = start + i;
        dataset_fill_batch(ds, m->eval_idx, n, m->eval_x, m->eval_y);
        float chunk_loss;
        uint32_t chunk_hits;
        if (model_forward(model, m->eval_x, m->eval_y, n, &chunk_loss, &chunk_hits) != ESGD_OK)
            return esgd_error_set(err, ESGD_ERR_ARG, "model_evaluate: a label in examples %u..%u is not below %u",
                                  start, start + n - 1, MODEL_CLASSES);
        loss_sum += (double)chunk_loss * n;
        hits += chunk_hits;
    }
    if (accuracy)
        *accuracy = (float)((double)hits / total);
    if (loss)
        *loss = (float)(loss_sum / total);
    return ESGD_OK;
}
