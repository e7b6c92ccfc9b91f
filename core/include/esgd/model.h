/* The networks trained on the agents: an MLP and a LeNet-5-style CNN, with
 * softmax cross-entropy, forward and backward on OpenBLAS sgemm.
 *
 * All parameters live in one flat buffer and all gradients in another, with
 * per-layer views into them. Parameter j is "coordinate j" of eSGD: layers in
 * order, each layer's weights first (row-major: fc (out, in), conv
 * (out_ch, in_ch, kh, kw)) then its bias.
 *
 *   MLP   784-128-10: fc1 W(128,784) b(128), ReLU, fc2 W(10,128) b(10)     d = 101,770
 *   LeNet conv1 5x5 1->6 pad 2, ReLU, maxpool 2, conv2 5x5 6->16, ReLU,
 *         maxpool 2, fc 400->120, ReLU, fc 120->84, ReLU, fc 84->10        d = 61,706
 *
 * Example:
 *   esgd_model *m = model_new(MODEL_KIND_LENET, 32, &err);
 *   model_init_params(m, seed);
 *   model_forward_backward(m, x, y, 32, &loss);  // m->grads = mean gradient
 */
#ifndef ESGD_MODEL_H
#define ESGD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "esgd/dataset.h"
#include "esgd/error.h"
#include "esgd/job_types.h" /* model_kind */

#define MODEL_INPUT_SIZE 784 /* 28x28, one channel */
#define MODEL_CLASSES 10

typedef struct model_impl model_impl;

typedef struct esgd_model {
    model_kind kind;
    uint32_t num_params; /* d */
    uint32_t max_batch;  /* largest batch forward/backward accept */
    float *params;       /* (num_params) */
    float *grads;        /* (num_params) */
    model_impl *impl;    /* layer views and activation workspace */
} esgd_model;

uint32_t model_kind_num_params(model_kind kind);

/* Allocates parameters, gradients and all workspace for batches up to
 * max_batch; nothing is allocated afterwards. Parameters start at zero. */
esgd_model *model_new(model_kind kind, uint32_t max_batch, esgd_error *err);
void model_free(esgd_model *model); /* NULL is a no-op */

/* Deterministic initialisation for a seed (He-uniform weights, zero biases). */
void model_init_params(esgd_model *model, uint64_t seed);

/* x: (batch, 784) in [0, 1]; y: (batch) labels < 10. Writes the mean
 * cross-entropy over the batch to *loss and its gradient with respect to
 * every parameter to model->grads (overwritten, not accumulated).
 * Errors: ESGD_ERR_ARG (batch 0 or > max_batch, label >= 10). */
esgd_status model_forward_backward(esgd_model *model, const float *x, const uint8_t *y, uint32_t batch,
                                   float *loss);

/* Forward only. Writes the mean loss to *loss (may be NULL) and, if
 * correct != NULL, the number of argmax hits. */
esgd_status model_forward(esgd_model *model, const float *x, const uint8_t *y, uint32_t batch, float *loss,
                          uint32_t *correct);

/* Accuracy (0..1) and mean loss over the first `limit` examples of ds (all if
 * limit == 0 or limit > ds->count), in chunks of max_batch. */
esgd_status model_evaluate(esgd_model *model, const esgd_dataset *ds, uint32_t limit, float *accuracy,
                           float *loss, esgd_error *err);

#endif
