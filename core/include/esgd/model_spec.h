/* The network a job trains, described as text: a sequential list of layers
 * separated by commas, parsed against the shape of one example and the
 * number of classes, with every shape inferred and checked.
 *
 *   dense N                  fully connected, N outputs (flattens its input)
 *   conv F K [same|valid]    2-D convolution, F filters of K x K, stride 1
 *   conv2d F K [same|valid]  the same
 *   conv1d F K [same|valid]  1-D convolution over (channels, length)
 *   maxpool K                K x K max pooling (1 x K after conv1d), stride K
 *   relu, tanh, flatten
 *
 * "valid" (the default) keeps only full windows; "same" zero-pads so the
 * output has the input's size ((K - 1) / 2 before, the rest after). The
 * network must end in `classes` values, the logits of a softmax
 * cross-entropy loss. Two names stand for presets: "lenet" (LeNet-5 on
 * 28 x 28 images) and "mlp" (one hidden layer of 128).
 *
 * An example's shape comes from its data file: rank 3 (C, H, W) and rank 2
 * (H, W, one channel) are images, rank 1 a feature vector; when the spec
 * has a conv1d layer, rank 2 is (channels, length) and rank 1 one channel.
 *
 * Parameters are laid out in layer order, each layer's weights (dense
 * (out, in), conv (out, in, kh, kw)) then its bias: coordinate j of eSGD.
 *
 *   model_spec spec;
 *   uint32_t dims[] = {28, 28};
 *   if (model_spec_parse(&spec, "conv 6 5, relu, maxpool 2, dense 10", dims, 2, 10, &err) != ESGD_OK)
 *       fprintf(stderr, "%s\n", err.message);  // names the layer, where it starts and why */
#ifndef ESGD_MODEL_SPEC_H
#define ESGD_MODEL_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/error.h"

#define MODEL_SPEC_TEXT_MAX 1024      /* characters of spec text */
#define MODEL_SPEC_MAX_LAYERS 32
#define MODEL_SPEC_MAX_PARAMS (1u << 24) /* 64 MB of float parameters */
#define MODEL_SPEC_MAX_VALUES (1u << 22) /* floats of one example's largest activation */
#define MODEL_SPEC_MAX_UNITS 65536u   /* dense outputs or conv filters */
#define MODEL_SPEC_MAX_KERNEL 64u
#define MODEL_SPEC_MAX_CLASSES 256u

typedef enum layer_kind {
    LAYER_DENSE,
    LAYER_CONV,    /* 2-D or 1-D, by its input */
    LAYER_MAXPOOL, /* 2-D or 1-D, by its input */
    LAYER_RELU,
    LAYER_TANH,
    LAYER_FLATTEN
} layer_kind;

/* A tensor of one example: c channels of h x w. spatial says how many of
 * h, w are image axes: 2 (C, H, W), 1 (C, 1, W) a signal, 0 a vector of c. */
typedef struct tensor_shape {
    uint32_t c, h, w;
    uint32_t spatial;
} tensor_shape;

typedef struct layer_spec {
    layer_kind kind;
    uint32_t units;  /* dense outputs, conv filters; pool window K */
    uint32_t kh, kw; /* conv kernel (kh = 1 for conv1d) */
    bool same;       /* conv: "same" padding */
    uint32_t pad_top, pad_left; /* conv "same" padding before the data */
    tensor_shape in, out;
    uint32_t num_params; /* weights + biases, 0 for the others */
} layer_spec;

typedef struct model_spec {
    char text[MODEL_SPEC_TEXT_MAX + 1]; /* as given (a preset's name stays its name) */
    uint32_t input_rank, input_dims[3];
    uint32_t classes;
    uint32_t num_layers;
    layer_spec layers[MODEL_SPEC_MAX_LAYERS];
    uint32_t num_params;  /* d */
    uint32_t max_values;  /* the largest per-example tensor, input included */
} model_spec;

/* Parses text (a preset name or a layer list) for examples of the given
 * dims and classes. Errors (ESGD_ERR_ARG, message naming layer n, the
 * character it starts at and why): unknown layer, bad or out-of-range
 * number, extra words, a layer that does not fit its input's shape, a
 * network that does not end in `classes` values, too many layers,
 * parameters or values. */
esgd_status model_spec_parse(model_spec *spec, const char *text, const uint32_t *input_dims, uint32_t input_rank,
                             uint32_t classes, esgd_error *err);

/* The layer list a preset name stands for, or NULL when name is none. */
const char *model_spec_preset(const char *name);

/* One line per layer, "conv 6 5 same: 1x28x28 -> 6x28x28, 156 params", for
 * logs and --help. Returns the characters written (snprintf rules). */
int model_spec_describe(const model_spec *spec, char *out, size_t size);

/* Values in one example's tensor of this shape. */
static inline uint32_t tensor_size(const tensor_shape *s)
{
    return s->c * s->h * s->w;
}

#endif
