/* Parsing a model spec (model_spec.h): words to layers, then the shape of
 * every layer's input and output from the example's shape, with the limits
 * that keep a spec from a config message from asking for absurd memory. */
#include "esgd/model_spec.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MLP_HIDDEN /* the fuzzers' copy of the core narrows it (tests/fuzz) */
#define MLP_HIDDEN 128
#endif
#define STR_(x) #x
#define STR(x) STR_(x)

static const char lenet_layers[] = "conv 6 5 same, relu, maxpool 2, conv 16 5, relu, maxpool 2, flatten, "
                                   "dense 120, relu, dense 84, relu, dense 10";
static const char mlp_layers[] = "dense " STR(MLP_HIDDEN) ", relu, dense 10";

const char *model_spec_preset(const char *name)
{
    if (strcmp(name, "lenet") == 0)
        return lenet_layers;
    if (strcmp(name, "mlp") == 0)
        return mlp_layers;
    return NULL;
}

/* Where the parser is: layer number (from 1), its text and offset. */
typedef struct cursor {
    uint32_t layer;
    const char *start; /* of this layer's text */
    size_t length;
    size_t offset;     /* of start in the whole spec */
} cursor;

static esgd_status layer_error(const cursor *at, esgd_error *err, const char *why)
{
    return esgd_error_set(err, ESGD_ERR_ARG, "model spec layer %u (\"%.*s\", at character %zu): %s", at->layer,
                          (int)(at->length > 60 ? 60 : at->length), at->start, at->offset + 1, why);
}

#define MAX_WORDS 5
#define WORD_MAX 24

/* Splits a layer's text on blanks into at most MAX_WORDS words. */
static esgd_status split_words(const cursor *at, char words[MAX_WORDS][WORD_MAX + 1], uint32_t *count,
                               esgd_error *err)
{
    *count = 0;
    size_t i = 0;
    while (i < at->length) {
        while (i < at->length && isspace((unsigned char)at->start[i]))
            i++;
        if (i == at->length)
            break;
        size_t begin = i;
        while (i < at->length && !isspace((unsigned char)at->start[i]))
            i++;
        if (*count == MAX_WORDS)
            return layer_error(at, err, "too many words");
        if (i - begin > WORD_MAX)
            return layer_error(at, err, "a word is too long");
        memcpy(words[*count], at->start + begin, i - begin);
        for (size_t k = 0; k < i - begin; k++)
            words[*count][k] = (char)tolower((unsigned char)words[*count][k]);
        words[*count][i - begin] = '\0';
        (*count)++;
    }
    return ESGD_OK;
}

static esgd_status parse_count(const cursor *at, const char *word, const char *what, uint32_t max, uint32_t *out,
                               esgd_error *err)
{
    char why[160];
    if (!isdigit((unsigned char)word[0])) {
        snprintf(why, sizeof why, "%s \"%s\" is not a positive whole number", what, word);
        return layer_error(at, err, why);
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(word, &end, 10);
    if (*end != '\0' || errno != 0 || v == 0 || v > max) {
        snprintf(why, sizeof why, "%s \"%s\" is not a whole number in 1..%u", what, word, max);
        return layer_error(at, err, why);
    }
    *out = (uint32_t)v;
    return ESGD_OK;
}

/* The words of one layer to its kind and numbers; shapes come later. */
static esgd_status parse_layer(const cursor *at, layer_spec *l, bool *is_1d, esgd_error *err)
{
    char words[MAX_WORDS][WORD_MAX + 1];
    uint32_t n;
    esgd_status st = split_words(at, words, &n, err);
    if (st != ESGD_OK)
        return st;
    if (n == 0)
        return layer_error(at, err, "empty layer (two commas in a row, or a comma at the end?)");
    memset(l, 0, sizeof *l);
    const char *name = words[0];
    uint32_t want_words;
    *is_1d = false;
    if (strcmp(name, "dense") == 0) {
        l->kind = LAYER_DENSE;
        want_words = 2;
        if (n >= 2 && (st = parse_count(at, words[1], "the output count", MODEL_SPEC_MAX_UNITS, &l->units, err)))
            return st;
    } else if (strcmp(name, "conv") == 0 || strcmp(name, "conv2d") == 0 || strcmp(name, "conv1d") == 0) {
        l->kind = LAYER_CONV;
        *is_1d = strcmp(name, "conv1d") == 0;
        want_words = 3;
        if (n >= 2 && (st = parse_count(at, words[1], "the filter count", MODEL_SPEC_MAX_UNITS, &l->units, err)))
            return st;
        if (n >= 3 && (st = parse_count(at, words[2], "the kernel size", MODEL_SPEC_MAX_KERNEL, &l->kw, err)))
            return st;
        l->kh = *is_1d ? 1 : l->kw;
        if (n == 4) {
            if (strcmp(words[3], "same") == 0) {
                l->same = true;
                l->pad_top = (l->kh - 1) / 2;
                l->pad_left = (l->kw - 1) / 2;
            } else if (strcmp(words[3], "valid") != 0) {
                return layer_error(at, err, "padding must be \"same\" or \"valid\"");
            }
            want_words = 4;
        }
    } else if (strcmp(name, "maxpool") == 0) {
        l->kind = LAYER_MAXPOOL;
        want_words = 2;
        if (n >= 2 && (st = parse_count(at, words[1], "the window", MODEL_SPEC_MAX_KERNEL, &l->units, err)))
            return st;
    } else if (strcmp(name, "relu") == 0 || strcmp(name, "tanh") == 0 || strcmp(name, "flatten") == 0) {
        l->kind = name[0] == 'r' ? LAYER_RELU : name[0] == 't' ? LAYER_TANH : LAYER_FLATTEN;
        want_words = 1;
    } else {
        return layer_error(at, err,
                           "unknown layer (expected dense, conv, conv2d, conv1d, maxpool, relu, tanh or flatten)");
    }
    if (n < want_words)
        return layer_error(at, err,
                           l->kind == LAYER_CONV  ? "expected \"conv F K [same|valid]\": filters and kernel size"
                           : l->kind == LAYER_DENSE ? "expected \"dense N\": the number of outputs"
                                                    : "expected \"maxpool K\": the window size");
    if (n > want_words)
        return layer_error(at, err, "unexpected words after the layer");
    return ESGD_OK;
}

/* The input tensor for the example dims: see model_spec.h. */
static esgd_status input_shape(const uint32_t *dims, uint32_t rank, bool signal, tensor_shape *s, esgd_error *err)
{
    if (rank < 1 || rank > 3)
        return esgd_error_set(err, ESGD_ERR_ARG, "model spec: examples of rank %u; ranks 1 to 3 are supported",
                              rank);
    for (uint32_t i = 0; i < rank; i++)
        if (dims[i] == 0)
            return esgd_error_set(err, ESGD_ERR_ARG, "model spec: the example's dimension %u is 0", i + 1);
    if (signal) {
        if (rank == 3)
            return esgd_error_set(err, ESGD_ERR_ARG,
                                  "model spec: conv1d needs examples of (channels, length) or (length); these have "
                                  "rank 3");
        *s = (tensor_shape){.c = rank == 2 ? dims[0] : 1, .h = 1, .w = dims[rank - 1], .spatial = 1};
    } else if (rank == 1) {
        *s = (tensor_shape){.c = dims[0], .h = 1, .w = 1, .spatial = 0};
    } else {
        *s = (tensor_shape){.c = rank == 3 ? dims[0] : 1, .h = dims[rank - 2], .w = dims[rank - 1], .spatial = 2};
    }
    if ((uint64_t)s->c * s->h * s->w > MODEL_SPEC_MAX_VALUES)
        return esgd_error_set(err, ESGD_ERR_ARG, "model spec: examples of %llu values; at most %u are supported",
                              (unsigned long long)s->c * s->h * s->w, MODEL_SPEC_MAX_VALUES);
    return ESGD_OK;
}

static void shape_text(const tensor_shape *s, char *out, size_t size)
{
    if (s->spatial == 2)
        snprintf(out, size, "%ux%ux%u", s->c, s->h, s->w);
    else if (s->spatial == 1)
        snprintf(out, size, "%ux%u", s->c, s->w);
    else
        snprintf(out, size, "%u", s->c);
}

/* l->out and l->num_params from l->in, or an error when they do not fit. */
static esgd_status infer_shape(const cursor *at, layer_spec *l, bool is_1d, esgd_error *err)
{
    const tensor_shape *in = &l->in;
    char why[200], shape[48];
    shape_text(in, shape, sizeof shape);
    uint64_t values = tensor_size(in), params = 0;
    tensor_shape out = *in;
    switch (l->kind) {
    case LAYER_DENSE:
        out = (tensor_shape){.c = l->units, .h = 1, .w = 1, .spatial = 0};
        params = values * l->units + l->units;
        break;
    case LAYER_CONV: {
        uint32_t want = is_1d ? 1 : 2;
        if (in->spatial != want) {
            snprintf(why, sizeof why, "%s needs a %s input, this one is %s", is_1d ? "conv1d" : "conv",
                     is_1d ? "(channels, length)" : "(channels, height, width)", shape);
            return layer_error(at, err, why);
        }
        bool same = l->same;
        if (!same && (l->kh > in->h || l->kw > in->w)) {
            snprintf(why, sizeof why, "a %ux%u kernel does not fit the %s input without \"same\" padding", l->kh,
                     l->kw, shape);
            return layer_error(at, err, why);
        }
        out.c = l->units;
        out.h = same ? in->h : in->h - l->kh + 1;
        out.w = same ? in->w : in->w - l->kw + 1;
        params = (uint64_t)l->units * in->c * l->kh * l->kw + l->units;
        break;
    }
    case LAYER_MAXPOOL: {
        if (in->spatial == 0) {
            snprintf(why, sizeof why, "maxpool needs a 1-D or 2-D input, this one is a vector of %s", shape);
            return layer_error(at, err, why);
        }
        uint32_t kh = in->spatial == 2 ? l->units : 1;
        if (kh > in->h || l->units > in->w) {
            snprintf(why, sizeof why, "the window %u is larger than the %s input", l->units, shape);
            return layer_error(at, err, why);
        }
        l->kh = kh;
        l->kw = l->units;
        out.h = in->h / kh;
        out.w = in->w / l->units;
        break;
    }
    case LAYER_FLATTEN:
        out = (tensor_shape){.c = (uint32_t)values, .h = 1, .w = 1, .spatial = 0};
        break;
    case LAYER_RELU:
    case LAYER_TANH:
        break;
    }
    if ((uint64_t)out.c * out.h * out.w > MODEL_SPEC_MAX_VALUES) {
        snprintf(why, sizeof why, "its output has %llu values per example; at most %u are supported",
                 (unsigned long long)out.c * out.h * out.w, MODEL_SPEC_MAX_VALUES);
        return layer_error(at, err, why);
    }
    if (params > MODEL_SPEC_MAX_PARAMS) {
        snprintf(why, sizeof why, "%llu parameters; a model may have at most %u", (unsigned long long)params,
                 MODEL_SPEC_MAX_PARAMS);
        return layer_error(at, err, why);
    }
    l->out = out;
    l->num_params = (uint32_t)params;
    return ESGD_OK;
}

/* Cuts text at commas into cursors; also tells whether a conv1d appears. */
static esgd_status split_layers(const char *text, cursor *cuts, uint32_t *count, esgd_error *err)
{
    *count = 0;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t length = comma ? (size_t)(comma - p) : strlen(p);
        while (length && isspace((unsigned char)*p)) { /* messages show the layer's own words */
            p++;
            length--;
        }
        while (length && isspace((unsigned char)p[length - 1]))
            length--;
        if (*count == MODEL_SPEC_MAX_LAYERS)
            return esgd_error_set(err, ESGD_ERR_ARG, "model spec: more than %u layers", MODEL_SPEC_MAX_LAYERS);
        cuts[*count] = (cursor){.layer = *count + 1, .start = p, .length = length, .offset = (size_t)(p - text)};
        (*count)++;
        if (!comma)
            return ESGD_OK;
        p = comma + 1;
    }
}

esgd_status model_spec_parse(model_spec *spec, const char *text, const uint32_t *input_dims, uint32_t input_rank,
                             uint32_t classes, esgd_error *err)
{
    if (!spec || !text || (!input_dims && input_rank))
        return esgd_error_set(err, ESGD_ERR_ARG, "model_spec_parse: NULL argument");
    memset(spec, 0, sizeof *spec);
    size_t length = strlen(text);
    if (length == 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "model spec: empty (give a layer list, \"lenet\" or \"mlp\")");
    if (length > MODEL_SPEC_TEXT_MAX)
        return esgd_error_set(err, ESGD_ERR_ARG, "model spec: %zu characters; at most %u", length,
                              MODEL_SPEC_TEXT_MAX);
    if (classes < 2 || classes > MODEL_SPEC_MAX_CLASSES)
        return esgd_error_set(err, ESGD_ERR_ARG, "model spec: %u classes; 2..%u are supported", classes,
                              MODEL_SPEC_MAX_CLASSES);
    memcpy(spec->text, text, length + 1);
    const char *preset = model_spec_preset(text);
    const char *layers = preset ? preset : text;

    cursor cuts[MODEL_SPEC_MAX_LAYERS];
    uint32_t count;
    esgd_status st = split_layers(layers, cuts, &count, err);
    if (st != ESGD_OK)
        return st;
    bool is_1d[MODEL_SPEC_MAX_LAYERS], signal = false;
    for (uint32_t i = 0; i < count; i++) {
        if ((st = parse_layer(&cuts[i], &spec->layers[i], &is_1d[i], err)) != ESGD_OK)
            return st;
        signal |= is_1d[i];
    }
    tensor_shape shape;
    if ((st = input_shape(input_dims, input_rank, signal, &shape, err)) != ESGD_OK)
        return st;
    spec->input_rank = input_rank;
    memcpy(spec->input_dims, input_dims, input_rank * sizeof *input_dims);
    spec->classes = classes;
    spec->num_layers = count;
    spec->max_values = tensor_size(&shape);
    uint64_t params = 0;
    for (uint32_t i = 0; i < count; i++) {
        layer_spec *l = &spec->layers[i];
        l->in = shape;
        if ((st = infer_shape(&cuts[i], l, is_1d[i], err)) != ESGD_OK)
            return st;
        shape = l->out;
        params += l->num_params;
        if (tensor_size(&shape) > spec->max_values)
            spec->max_values = tensor_size(&shape);
    }
    if (params > MODEL_SPEC_MAX_PARAMS)
        return esgd_error_set(err, ESGD_ERR_ARG, "model spec: %llu parameters; a model may have at most %u",
                              (unsigned long long)params, MODEL_SPEC_MAX_PARAMS);
    if (shape.spatial != 0 || shape.c != classes) {
        char out[48];
        shape_text(&shape, out, sizeof out);
        return esgd_error_set(err, ESGD_ERR_ARG,
                              "model spec: the network ends in %s values but the job has %u classes (end with "
                              "\"dense %u\")",
                              out, classes, classes);
    }
    if (params == 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "model spec: the network has no dense or conv layer to train");
    spec->num_params = (uint32_t)params;
    return ESGD_OK;
}

static const char *kind_name(const layer_spec *l)
{
    switch (l->kind) {
    case LAYER_DENSE:
        return "dense";
    case LAYER_CONV:
        return l->in.spatial == 1 ? "conv1d" : "conv";
    case LAYER_MAXPOOL:
        return "maxpool";
    case LAYER_RELU:
        return "relu";
    case LAYER_TANH:
        return "tanh";
    case LAYER_FLATTEN:
        return "flatten";
    }
    return "?";
}

int model_spec_describe(const model_spec *spec, char *out, size_t size)
{
    size_t used = 0;
    int total = 0;
    for (uint32_t i = 0; i < spec->num_layers; i++) {
        const layer_spec *l = &spec->layers[i];
        char in[48], o[48], args[48] = "";
        shape_text(&l->in, in, sizeof in);
        shape_text(&l->out, o, sizeof o);
        if (l->kind == LAYER_DENSE || l->kind == LAYER_MAXPOOL)
            snprintf(args, sizeof args, " %u", l->units);
        else if (l->kind == LAYER_CONV)
            snprintf(args, sizeof args, " %u %u%s", l->units, l->kw,
                     l->same ? " same" : "");
        int n = snprintf(out + used, used < size ? size - used : 0, "%s%s: %s -> %s, %u params\n", kind_name(l),
                         args, in, o, l->num_params);
        if (n < 0)
            return n;
        total += n;
        used = used + (size_t)n < size ? used + (size_t)n : size;
    }
    return total;
}
