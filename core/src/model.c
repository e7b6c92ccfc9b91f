/* The model's memory and entry points (model.h): one flat buffer of
 * parameters and one of gradients with per-layer views in the coordinate
 * order eSGD numbers, the activation workspace sized once in model_new for
 * the fused LeNet kernels or the layer-by-layer path, the seeded
 * initialisation, and the checked calls that run the passes and evaluate
 * on a dataset. */
#include "esgd/model.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/rng.h"
#include "model_impl.h"

/* Keeps every GEMM dimension (up to batch * an example's values) inside an
 * int, together with the spec's MODEL_SPEC_MAX_VALUES. */
#define MODEL_MAX_BATCH 65536u
#define MODEL_MAX_BATCH_VALUES (1u << 30)
/* The initialisation's own rng stream, so it shares no draws with the
 * partition or the agents' batch sampling under the same seed. */
#define MODEL_INIT_STREAM 0x1417u

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
                       m->col2,    m->conv2,    m->dconv2,  m->dconv2_t, m->dw2_t, m->fc_t, m->arg2,
                       m->flat,    m->dflat,    m->hidden1, m->dhidden1, m->hidden2, m->dhidden2,
                       m->eval_x,  m->eval_y,   m->eval_idx, m->col};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++)
        free(buffers[i]);
    if (m->fused_lenet) {
        free(m->logits);
        free(m->dlogits);
    }
    /* flatten layers share their input's buffers: free each once */
    for (uint32_t i = 1; i <= MODEL_SPEC_MAX_LAYERS; i++) {
        if (m->act[i] != m->act[i - 1])
            free(m->act[i]);
        if (m->dact[i] != m->dact[i - 1])
            free(m->dact[i]);
    }
    for (uint32_t i = 0; i < MODEL_SPEC_MAX_LAYERS; i++)
        free(m->pool_arg[i]);
    free(m);
}

bool model_spec_is_lenet(const model_spec *spec)
{
    static const struct {
        layer_kind kind;
        uint32_t units, kernel, same;
    } lenet[] = {{LAYER_CONV, 6, 5, 1},    {LAYER_RELU, 0, 0, 0},  {LAYER_MAXPOOL, 2, 0, 0}, {LAYER_CONV, 16, 5, 0},
                 {LAYER_RELU, 0, 0, 0},    {LAYER_MAXPOOL, 2, 0, 0}, {LAYER_DENSE, 120, 0, 0}, {LAYER_RELU, 0, 0, 0},
                 {LAYER_DENSE, 84, 0, 0},  {LAYER_RELU, 0, 0, 0},  {LAYER_DENSE, 10, 0, 0}};
    const uint32_t count = sizeof lenet / sizeof lenet[0];
    if (spec->layers[0].in.c != 1 || spec->layers[0].in.h != 28 || spec->layers[0].in.w != 28 ||
        spec->layers[0].in.spatial != 2 || spec->classes != 10)
        return false;
    uint32_t k = 0;
    for (uint32_t i = 0; i < spec->num_layers; i++) {
        const layer_spec *l = &spec->layers[i];
        if (l->kind == LAYER_FLATTEN)
            continue;
        if (k == count || l->kind != lenet[k].kind || (lenet[k].units && l->units != lenet[k].units) ||
            (l->kind == LAYER_CONV && (l->kw != lenet[k].kernel || l->kh != lenet[k].kernel || l->same != lenet[k].same)))
            return false;
        k++;
    }
    return k == count;
}

/* Points each dense and conv layer's views at its slice of params and
 * grads, in the coordinate order of model.h. */
static void point_layers(esgd_model *model)
{
    model_impl *m = model->impl;
    size_t offset = 0;
    m->num_layers = 0;
    for (uint32_t i = 0; i < model->spec.num_layers; i++) {
        const layer_spec *ls = &model->spec.layers[i];
        m->param_layer[i] = -1;
        if (ls->kind != LAYER_DENSE && ls->kind != LAYER_CONV)
            continue;
        m->param_layer[i] = (int32_t)m->num_layers;
        layer *l = &m->layers[m->num_layers++];
        l->out = ls->units;
        l->in = ls->kind == LAYER_DENSE ? tensor_size(&ls->in) : ls->in.c;
        l->fan_in = ls->kind == LAYER_DENSE ? l->in : l->in * ls->kh * ls->kw;
        l->w = model->params + offset;
        l->dw = model->grads + offset;
        offset += (size_t)l->out * l->fan_in;
        l->b = model->params + offset;
        l->db = model->grads + offset;
        offset += l->out;
    }
    assert(offset == model->num_params);
}

static bool alloc_lenet_workspace(model_impl *m, size_t batch)
{
    bool ok = true;
    size_t f = sizeof(float);
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
    m->dconv2_t = alloc_zeroed(conv2, f, &ok);
    m->dw2_t = alloc_zeroed((size_t)CONV2_OUT * CONV1_OUT * KERNEL * KERNEL, f, &ok);
    m->fc_t = alloc_zeroed(batch * (FLAT_SIZE + m->layers[2].out + m->layers[3].out + m->layers[4].out), f, &ok);
    m->arg2 = alloc_zeroed(batch * FLAT_SIZE, 1, &ok);
    m->flat = alloc_zeroed(batch * FLAT_SIZE, f, &ok);
    m->dflat = alloc_zeroed(batch * FLAT_SIZE, f, &ok);
    m->hidden1 = alloc_zeroed(batch * m->layers[2].out, f, &ok);
    m->dhidden1 = alloc_zeroed(batch * m->layers[2].out, f, &ok);
    m->hidden2 = alloc_zeroed(batch * m->layers[3].out, f, &ok);
    m->dhidden2 = alloc_zeroed(batch * m->layers[3].out, f, &ok);
    m->logits = alloc_zeroed(batch * 10, f, &ok);
    m->dlogits = alloc_zeroed(batch * 10, f, &ok);
    return ok;
}

/* act/dact for every layer output (flatten shares its input's), the
 * maxpool arg buffers and one example's largest im2col. */
static bool alloc_layerwise_workspace(const model_spec *spec, model_impl *m, size_t batch)
{
    bool ok = true;
    size_t col = 0;
    for (uint32_t i = 0; i < spec->num_layers; i++) {
        const layer_spec *l = &spec->layers[i];
        size_t n = batch * tensor_size(&l->out);
        if (l->kind == LAYER_FLATTEN) {
            m->act[i + 1] = m->act[i];
            m->dact[i + 1] = m->dact[i];
            continue;
        }
        m->act[i + 1] = alloc_zeroed(n, sizeof(float), &ok);
        m->dact[i + 1] = alloc_zeroed(n, sizeof(float), &ok);
        if (l->kind == LAYER_MAXPOOL)
            m->pool_arg[i] = alloc_zeroed(n, sizeof(uint32_t), &ok);
        if (l->kind == LAYER_CONV) {
            size_t c = (size_t)l->in.c * l->kh * l->kw * l->out.h * l->out.w;
            col = c > col ? c : col;
        }
    }
    if (col)
        m->col = alloc_zeroed(col, sizeof(float), &ok);
    m->logits = m->act[spec->num_layers];
    m->dlogits = m->dact[spec->num_layers];
    return ok;
}

static esgd_model *new_model(const model_spec *spec, uint32_t max_batch, bool allow_fused, esgd_error *err)
{
    if (!spec || spec->num_layers == 0 || spec->num_params == 0) {
        esgd_error_set(err, ESGD_ERR_ARG, "model_new: no parsed model spec");
        return NULL;
    }
    uint64_t batch_values = (uint64_t)max_batch * spec->max_values;
    if (max_batch == 0 || max_batch > MODEL_MAX_BATCH || batch_values > MODEL_MAX_BATCH_VALUES) {
        esgd_error_set(err, ESGD_ERR_ARG,
                       "model_new: batch %u is outside 1..%u, or batch x %u values per example is over %u", max_batch,
                       MODEL_MAX_BATCH, spec->max_values, MODEL_MAX_BATCH_VALUES);
        return NULL;
    }
    esgd_model *model = calloc(1, sizeof *model);
    if (!model) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "model_new: out of memory");
        return NULL;
    }
    model->spec = *spec;
    model->input_size = tensor_size(&spec->layers[0].in);
    model->num_params = spec->num_params;
    model->max_batch = max_batch;
    bool ok = true;
    model->params = alloc_zeroed(model->num_params, sizeof(float), &ok);
    model->grads = alloc_zeroed(model->num_params, sizeof(float), &ok);
    model->impl = alloc_zeroed(1, sizeof *model->impl, &ok);
    if (ok) {
        model_impl *m = model->impl;
        point_layers(model);
        m->fused_lenet = allow_fused && model_spec_is_lenet(spec);
        ok = m->fused_lenet ? alloc_lenet_workspace(m, max_batch)
                            : alloc_layerwise_workspace(&model->spec, m, max_batch);
        m->eval_x = alloc_zeroed((size_t)max_batch * model->input_size, sizeof(float), &ok);
        m->eval_y = alloc_zeroed(max_batch, 1, &ok);
        m->eval_idx = alloc_zeroed(max_batch, sizeof(uint32_t), &ok);
    }
    if (!ok) {
        model_free(model);
        esgd_error_set(err, ESGD_ERR_NOMEM, "model_new: out of memory for %u parameters and batch %u",
                       spec->num_params, max_batch);
        return NULL;
    }
    return model;
}

esgd_model *model_new(const model_spec *spec, uint32_t max_batch, esgd_error *err)
{
    return new_model(spec, max_batch, true, err);
}

esgd_model *model_new_layerwise(const model_spec *spec, uint32_t max_batch, esgd_error *err)
{
    return new_model(spec, max_batch, false, err);
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
        if (y[i] >= model->spec.classes)
            return ESGD_ERR_ARG;
    return ESGD_OK;
}

static void network_forward(esgd_model *model, const float *x, uint32_t batch)
{
    if (model->impl->fused_lenet)
        lenet_forward(model->impl, x, batch);
    else
        generic_forward(&model->spec, model->impl, x, batch);
}

esgd_status model_forward_backward(esgd_model *model, const float *x, const uint8_t *y, uint32_t batch, float *loss)
{
    esgd_status st = check_batch(model, x, y, batch);
    if (st != ESGD_OK)
        return st;
    model_impl *m = model->impl;
    network_forward(model, x, batch);
    float mean = model_softmax_cross_entropy(m->logits, y, batch, model->spec.classes, m->dlogits, NULL);
    if (m->fused_lenet)
        lenet_backward(m, batch);
    else
        generic_backward(&model->spec, m, batch);
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
    network_forward(model, x, batch);
    float mean = model_softmax_cross_entropy(model->impl->logits, y, batch, model->spec.classes, NULL, correct);
    if (loss)
        *loss = mean;
    return ESGD_OK;
}

esgd_status model_predict(esgd_model *model, const float *x, uint32_t batch, uint8_t *classes, float *probs)
{
    if (!model || !model->impl || !x || !classes || batch == 0 || batch > model->max_batch)
        return ESGD_ERR_ARG;
    network_forward(model, x, batch);
    uint32_t n = model->spec.classes;
    for (uint32_t i = 0; i < batch; i++) {
        const float *z = model->impl->logits + (size_t)i * n;
        uint32_t top = 0;
        for (uint32_t j = 1; j < n; j++)
            if (z[j] > z[top])
                top = j;
        classes[i] = (uint8_t)top;
        if (probs) {
            double sum = 0.0;
            for (uint32_t j = 0; j < n; j++)
                sum += exp((double)z[j] - z[top]);
            for (uint32_t j = 0; j < n; j++)
                probs[(size_t)i * n + j] = (float)(exp((double)z[j] - z[top]) / sum);
        }
    }
    return ESGD_OK;
}

esgd_status model_evaluate(esgd_model *model, const esgd_dataset *ds, uint32_t limit, float *accuracy, float *loss,
                           esgd_error *err)
{
    if (!model || !model->impl || !ds)
        return esgd_error_set(err, ESGD_ERR_ARG, "model_evaluate: NULL model or dataset");
    if (ds->count == 0 || (!ds->u8 && !ds->f32) || !ds->labels)
        return esgd_error_set(err, ESGD_ERR_ARG, "model_evaluate: empty dataset");
    if (ds->example_size != model->input_size)
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "model_evaluate: examples of %u values, the model takes %u",
                              ds->example_size, model->input_size);
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
                                  start, start + n - 1, model->spec.classes);
        loss_sum += (double)chunk_loss * n;
        hits += chunk_hits;
    }
    if (accuracy)
        *accuracy = (float)((double)hits / total);
    if (loss)
        *loss = (float)(loss_sum / total);
    return ESGD_OK;
}
