/* Inside the model (model.h), shared by its two files: the LeNet geometry,
 * a layer's views into the flat parameter and gradient buffers, the
 * activation workspace, and the passes model_layers.c runs on them for
 * model.c. Internal to core/src. */
#ifndef ESGD_MODEL_IMPL_H
#define ESGD_MODEL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "esgd/model.h"

#define MAX_LAYERS 5

/* LeNet geometry: 28x28 input, 5x5 kernels, 2x2 max pooling. */
#define KERNEL 5
#define CONV1_PAD 2
#define CONV1_SIDE 28 /* input and output (padding keeps the size) */
#define POOL1_SIDE 14
#define CONV2_SIDE 10
#define POOL2_SIDE 5
#define CONV1_OUT 6
#define CONV2_OUT 16
#define FLAT_SIZE (CONV2_OUT * POOL2_SIDE * POOL2_SIDE) /* 400 */
/* conv1's padded input and "wide" output planes (see conv1_forward, model_layers.c) */
#define PAD_W 32                        /* 2 + 28 + 2 */
#define PAD_PLANE (33 * PAD_W)          /* one spare row keeps the junk columns' reads in bounds */
#define WIDE_PLANE (CONV1_SIDE * PAD_W) /* 896 outputs per plane, 28 rows of 32 */
#define CONV1_TAPS (KERNEL * KERNEL)

typedef struct layer {
    uint32_t in, out, k;
    uint32_t fan_in;  /* in * k * k: a weight row's length */
    float *w, *b;     /* (out, in, k, k), (out): views into params */
    float *dw, *db;   /* same shapes, views into grads */
} layer;

struct model_impl {
    uint32_t num_layers;
    layer layers[MAX_LAYERS]; /* MLP: fc1 fc2; LeNet: conv1 conv2 fc1 fc2 fc3 */

    /* Workspace, B = max_batch; conv planes are (channel, example) major. */
    float *xpad;    /* (B, 33, 32) zero-padded input, border always zero */
    float *conv1;   /* (6, B, 28, 32) conv1 output before bias, rows 32 wide */
    float *dconv1;  /* (6, B, 28, 32) its gradient; columns 28..31 stay zero */
    uint8_t *arg1;  /* (6, B, 14, 14) which cell of each 2x2 window was the max */
    float *pool1;   /* (6, B, 14, 14) relu(maxpool(conv1) + bias) */
    float *dpool1;  /* (6, B, 14, 14) */
    float *col2;    /* (150, B*100) conv2 im2col of pool1; in backward, its gradient */
    float *conv2;   /* (16, B, 10, 10) conv2 output before bias */
    float *dconv2;  /* (16, B, 10, 10) */
    float *dw2_t;   /* (150, 16) conv2's weight gradient, transposed */
    uint8_t *arg2;  /* (16, B, 5, 5) */
    float *flat;    /* (B, 400) relu(maxpool(conv2) + bias), per example (c, row, col) */
    float *dflat;   /* (B, 400) */
    float *hidden1; /* (B, 128) MLP, (B, 120) LeNet: after ReLU */
    float *dhidden1;
    float *hidden2; /* (B, 84) LeNet: after ReLU */
    float *dhidden2;
    float *logits;  /* (B, 10) */
    float *dlogits; /* (B, 10) */

    /* model_evaluate's chunk of the dataset */
    float *eval_x;      /* (B, 784) */
    uint8_t *eval_y;    /* (B) */
    uint32_t *eval_idx; /* (B) */
};

/* The forward pass of model->kind on x (batch, 784), up to impl->logits. */
void model_network_forward(esgd_model *model, const float *x, uint32_t batch);
/* The backward pass from impl->dlogits into model->grads; needs the
 * activations of the forward pass just run on the same x. */
void model_network_backward(esgd_model *model, const float *x, uint32_t batch);

/* Mean cross-entropy of softmax(logits) against y, computed through
 * log-sum-exp so large logits cannot overflow. With dlogits != NULL also
 * writes the gradient of the mean, (softmax - onehot) / batch; with correct
 * != NULL counts the rows whose first largest logit is the label. */
float model_softmax_cross_entropy(const float *logits, const uint8_t *y, uint32_t batch, float *dlogits,
                                  uint32_t *correct);

#endif
