/* A network built from a model spec (model_spec.h) with softmax
 * cross-entropy, forward and backward on OpenBLAS sgemm.
 *
 * All parameters live in one flat buffer and all gradients in another, with
 * per-layer views into them. Parameter j is "coordinate j" of eSGD: layers in
 * order, each layer's weights first (row-major: dense (out, in), conv
 * (out_ch, in_ch, kh, kw)) then its bias. The presets:
 *
 *   mlp   784-128-10: dense 128, relu, dense 10                        d = 101,770
 *   lenet conv 6 5 same, relu, maxpool 2, conv 16 5, relu, maxpool 2,
 *         dense 120, relu, dense 84, relu, dense 10                    d = 61,706
 *
 * LeNet runs on fused kernels written for its shapes; every other network
 * layer by layer. Both give the same function; the fused one is faster.
 *
 * Example:
 *   model_spec spec;
 *   model_spec_parse(&spec, "lenet", (uint32_t[]){28, 28}, 2, 10, &err);
 *   esgd_model *m = model_new(&spec, 32, &err);
 *   model_init_params(m, seed);
 *   model_forward_backward(m, x, y, 32, &loss);  // m->grads = mean gradient
 */
#ifndef ESGD_MODEL_H
#define ESGD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "esgd/dataset.h"
#include "esgd/error.h"
#include "esgd/model_spec.h"

typedef struct model_impl model_impl;

typedef struct esgd_model {
    model_spec spec;
    uint32_t input_size; /* floats of one example */
    uint32_t num_params; /* d */
    uint32_t max_batch;  /* largest batch forward/backward accept */
    float *params;       /* (num_params) */
    float *grads;        /* (num_params) */
    model_impl *impl;    /* layer views and activation workspace */
} esgd_model;

/* Allocates parameters, gradients and all workspace for batches up to
 * max_batch; nothing is allocated afterwards. Parameters start at zero.
 * Errors: ESGD_ERR_ARG (max_batch), ESGD_ERR_NOMEM. */
esgd_model *model_new(const model_spec *spec, uint32_t max_batch, esgd_error *err);
/* The same, always layer by layer even for LeNet: for comparing the paths. */
esgd_model *model_new_layerwise(const model_spec *spec, uint32_t max_batch, esgd_error *err);
void model_free(esgd_model *model); /* NULL is a no-op */

/* Deterministic initialisation for a seed (He-uniform weights, zero biases). */
void model_init_params(esgd_model *model, uint64_t seed);

/* x: (batch, input_size); y: (batch) labels < classes. Writes the mean
 * cross-entropy over the batch to *loss and its gradient with respect to
 * every parameter to model->grads (overwritten, not accumulated).
 * Errors: ESGD_ERR_ARG (batch 0 or > max_batch, label >= classes). */
esgd_status model_forward_backward(esgd_model *model, const float *x, const uint8_t *y, uint32_t batch,
                                   float *loss);

/* Forward only. Writes the mean loss to *loss (may be NULL) and, if
 * correct != NULL, the number of argmax hits. */
esgd_status model_forward(esgd_model *model, const float *x, const uint8_t *y, uint32_t batch, float *loss,
                          uint32_t *correct);

/* Forward only, without labels: classes[i] = the argmax of example i's
 * logits (the first on ties), and when probs != NULL its softmax
 * probabilities (batch, classes). Errors: ESGD_ERR_ARG. */
esgd_status model_predict(esgd_model *model, const float *x, uint32_t batch, uint8_t *classes, float *probs);

/* Accuracy (0..1) and mean loss over the first `limit` examples of ds (all if
 * limit == 0 or limit > ds->count), in chunks of max_batch. */
esgd_status model_evaluate(esgd_model *model, const esgd_dataset *ds, uint32_t limit, float *accuracy,
                           float *loss, esgd_error *err);

#endif
