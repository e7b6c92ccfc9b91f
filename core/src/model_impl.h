/* Inside the model (model.h), shared by its files: a layer's views into the
 * flat parameter and gradient buffers, the activation workspace of the
 * layer-by-layer path (model_generic.c) and of the fused LeNet kernels
 * (model_layers.c) with their geometry, and the passes model.c calls.
 * Internal to core/src. */
#ifndef ESGD_MODEL_IMPL_H
#define ESGD_MODEL_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/model.h"
#include "esgd/model_spec.h"

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

/* A dense or conv layer's parameters. */
typedef struct layer {
    uint32_t in, out; /* dense: inputs, outputs; conv: input channels, filters */
    uint32_t fan_in;  /* a weight row's length: dense in, conv in * kh * kw */
    float *w, *b;     /* (out, fan_in), (out): views into params */
    float *dw, *db;   /* same shapes, views into grads */
} layer;

struct model_impl {
    bool fused_lenet;  /* the LeNet kernels below run this spec */
    uint32_t num_layers;                    /* dense and conv layers, in order */
    layer layers[MODEL_SPEC_MAX_LAYERS];    /* LeNet: conv1 conv2 fc1 fc2 fc3 */
    int32_t param_layer[MODEL_SPEC_MAX_LAYERS]; /* spec layer -> layers[], -1 without parameters */

    /* Layer-by-layer path, B = max_batch, every tensor (example, c, h, w):
     * act[i + 1] is spec layer i's output, act[0] the input of this pass
     * (borrowed); dact[i] is the gradient of act[i] (dact[0] unused).
     * flatten shares its input's buffers. */
    float *act[MODEL_SPEC_MAX_LAYERS + 1];
    float *dact[MODEL_SPEC_MAX_LAYERS + 1];
    uint32_t *pool_arg[MODEL_SPEC_MAX_LAYERS]; /* maxpool: input offset of each output's max */
    float *col;                                /* one example's conv im2col, the largest */

    /* Fused LeNet path; conv planes are (channel, example) major. */
    float *xpad;    /* (B, 33, 32) zero-padded input, border always zero */
    float *conv1;   /* (6, B, 28, 32) conv1 output before bias, rows 32 wide */
    float *dconv1;  /* (6, B, 28, 32) its gradient; columns 28..31 stay zero */
    uint8_t *arg1;  /* (6, B, 14, 14) which cell of each 2x2 window was the max */
    float *pool1;   /* (6, B, 14, 14) relu(maxpool(conv1) + bias) */
    float *dpool1;  /* (6, B, 14, 14) */
    float *col2;    /* (150, B*100) conv2 im2col of pool1; in backward, its gradient */
    float *conv2;   /* (16, B, 10, 10) conv2 output before bias */
    float *dconv2;  /* (16, B, 10, 10) */
    float *dconv2_t; /* (B*100, 16) dconv2 transposed */
    float *dw2_t;   /* (150, 16) conv2's weight gradient, transposed */
    float *fc_t;    /* the dense layers' inputs and outputs feature-major: (400 + 120 + 84 + 10, B) */
    uint8_t *arg2;  /* (16, B, 5, 5) */
    float *flat;    /* (B, 400) relu(maxpool(conv2) + bias), per example (c, row, col) */
    float *dflat;   /* (B, 400) */
    float *hidden1; /* (B, 120) after ReLU */
    float *dhidden1;
    float *hidden2; /* (B, 84) after ReLU */
    float *dhidden2;

    float *logits;  /* (B, classes): the fused path's own, or the last act */
    float *dlogits; /* (B, classes) */

    /* model_evaluate's chunk of the dataset */
    float *eval_x;      /* (B, input size) */
    uint8_t *eval_y;    /* (B) */
    uint32_t *eval_idx; /* (B) */
};

/* True when spec is LeNet-5 on 28 x 28 images with 10 classes, the network
 * the fused kernels compute (a flatten anywhere is allowed). */
bool model_spec_is_lenet(const model_spec *spec);

/* Fused LeNet passes (model_layers.c). */
void lenet_forward(model_impl *m, const float *x, uint32_t batch);
void lenet_backward(model_impl *m, uint32_t batch);
/* Layer-by-layer passes (model_generic.c) over spec's layers. */
void generic_forward(const model_spec *spec, model_impl *m, const float *x, uint32_t batch);
void generic_backward(const model_spec *spec, model_impl *m, uint32_t batch);

/* A dense layer, shared by both paths: out (batch, out) = x W^T + b, then
 * ReLU if asked; and from dout: dW, db and, when dx != NULL, dx. */
void fc_forward(const layer *l, const float *x, uint32_t batch, float *out, bool relu);
void fc_backward(const layer *l, const float *x, const float *dout, uint32_t batch, float *dx);

/* The fused LeNet's matrix product (model_gemm.c), with a summation order
 * fixed by the code (the same bits on every CPU with a fused multiply-add):
 * C[m][n] = sum over k = 0, 1, .. K-1 of A[m*sam + k*sak] * B[k*ldb + n],
 * one running sum per output, for m < M, n < N; C's rows are ldc apart and
 * overwritten. A's elements are read one at a time, so either of its
 * strides may be 1 (A or its transpose); B's rows are contiguous. */
void gemm_rows(uint32_t M, uint32_t N, uint32_t K, const float *A, size_t sam, size_t sak, const float *B, size_t ldb,
               float *C, size_t ldc);
/* The same in portable vector code (gemm_rows may pick an AVX-512 or
 * AVX2 one at run time), for the test that holds both to the same bits. */
void gemm_rows_portable(uint32_t M, uint32_t N, uint32_t K, const float *A, size_t sam, size_t sak, const float *B,
                        size_t ldb, float *C, size_t ldc);

/* Mean cross-entropy of softmax(logits) against y, computed through
 * log-sum-exp so large logits cannot overflow. With dlogits != NULL also
 * writes the gradient of the mean, (softmax - onehot) / batch; with correct
 * != NULL counts the rows whose first largest logit is the label. */
float model_softmax_cross_entropy(const float *logits, const uint8_t *y, uint32_t batch, uint32_t classes,
                                  float *dlogits, uint32_t *correct);

#endif
