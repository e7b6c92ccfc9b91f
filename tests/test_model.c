/* The MLP and LeNet: parameter counts and layout, deterministic He
 * initialisation, finite-difference gradient checks of every layer of both
 * networks, loss and batch invariants, argument checks and evaluation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "esgd/model.h"
#include "esgd/rng.h"

#include "../core/src/model_impl.h" /* gemm_rows */

/* The layer table of model.h, written out independently of model.c. */
typedef struct test_layer {
    const char *name;
    uint32_t in, out, k; /* fc: k = 1 */
} test_layer;

static const test_layer mlp_layers[] = {{"fc1", 784, 128, 1}, {"fc2", 128, 10, 1}};
static const test_layer lenet_layers[] = {
    {"conv1", 1, 6, 5}, {"conv2", 6, 16, 5}, {"fc1", 400, 120, 1}, {"fc2", 120, 84, 1}, {"fc3", 84, 10, 1}};

typedef enum test_net { NET_MLP, NET_LENET } test_net;
#define MODEL_INPUT_SIZE 784
#define MODEL_CLASSES 10

static const test_layer *layers_of(test_net kind, size_t *count)
{
    *count = kind == NET_MLP ? 2 : 5;
    return kind == NET_MLP ? mlp_layers : lenet_layers;
}

static model_spec spec_of(test_net kind)
{
    model_spec spec;
    assert_int_equal(model_spec_parse(&spec, kind == NET_MLP ? "mlp" : "lenet", (const uint32_t[]){28, 28}, 2, 10,
                                      NULL),
                     ESGD_OK);
    return spec;
}

static size_t weight_count(const test_layer *l)
{
    return (size_t)l->out * l->in * l->k * l->k;
}

static esgd_model *new_model(test_net kind, uint32_t max_batch)
{
    esgd_error err = {0};
    model_spec spec = spec_of(kind);
    esgd_model *m = model_new(&spec, max_batch, &err);
    assert_non_null(m);
    assert_int_equal(err.status, ESGD_OK);
    return m;
}

static void random_batch(esgd_rng *rng, float *x, uint8_t *y, uint32_t batch)
{
    for (uint32_t i = 0; i < batch * MODEL_INPUT_SIZE; i++)
        x[i] = (float)rng_uniform(rng);
    for (uint32_t i = 0; i < batch; i++)
        y[i] = (uint8_t)rng_below(rng, MODEL_CLASSES);
}

/* ---- sizes and initialisation ---- */

static void test_num_params(void **state)
{
    (void)state;
    assert_int_equal(spec_of(NET_LENET).num_params, 61706);
    assert_int_equal(spec_of(NET_MLP).num_params, 101770);
    for (int kind = NET_MLP; kind <= NET_LENET; kind++) {
        size_t count, total = 0;
        const test_layer *layers = layers_of((test_net)kind, &count);
        for (size_t i = 0; i < count; i++)
            total += weight_count(&layers[i]) + layers[i].out;
        esgd_model *m = new_model((test_net)kind, 7);
        assert_int_equal(m->num_params, total);
        assert_int_equal(m->max_batch, 7);
        for (uint32_t j = 0; j < m->num_params; j++) /* parameters start at zero */
            assert_true(m->params[j] == 0.0f);
        model_free(m);
    }
}

static void check_init_layout(test_net kind)
{
    esgd_model *a = new_model(kind, 2), *b = new_model(kind, 5), *c = new_model(kind, 2);
    model_init_params(a, 42);
    model_init_params(b, 42);
    model_init_params(c, 43);
    size_t bytes = a->num_params * sizeof(float);
    assert_memory_equal(a->params, b->params, bytes);
    assert_memory_not_equal(a->params, c->params, bytes);

    size_t count, offset = 0;
    const test_layer *layers = layers_of(kind, &count);
    for (size_t i = 0; i < count; i++) {
        const test_layer *l = &layers[i];
        float limit = sqrtf(6.0f / (float)(l->in * l->k * l->k)), largest = 0.0f;
        double sum = 0.0;
        size_t n = weight_count(l);
        for (size_t j = 0; j < n; j++) {
            float w = a->params[offset + j];
            assert_true(fabsf(w) <= limit);
            largest = fmaxf(largest, fabsf(w));
            sum += w;
        }
        /* The draws fill the whole He range (so fan_in is not too large)
         * and are centred. */
        assert_true(largest > 0.9f * limit);
        assert_true(fabs(sum / (double)n) < 0.2 * limit);
        offset += n;
        for (uint32_t j = 0; j < l->out; j++)
            assert_true(a->params[offset + j] == 0.0f);
        offset += l->out;
    }
    assert_int_equal(offset, a->num_params);
    model_free(a);
    model_free(b);
    model_free(c);
}

static void test_init(void **state)
{
    (void)state;
    check_init_layout(NET_MLP);
    check_init_layout(NET_LENET);
}

/* ---- a plain double-precision reference of both networks ---- */

/* Loops written straight from the definitions in model.h, sharing nothing
 * with model.c: conv + bias, ReLU, 2x2 max-pool, flatten (c, row, col). */
static void ref_conv(const double *in, int in_ch, int side, const double *w, const double *b, int out_ch, int pad,
                     double *out, int out_side)
{
    for (int o = 0; o < out_ch; o++)
        for (int oy = 0; oy < out_side; oy++)
            for (int ox = 0; ox < out_side; ox++) {
                double sum = b[o];
                for (int c = 0; c < in_ch; c++)
                    for (int ki = 0; ki < 5; ki++)
                        for (int kj = 0; kj < 5; kj++) {
                            int iy = oy + ki - pad, ix = ox + kj - pad;
                            if (iy >= 0 && iy < side && ix >= 0 && ix < side)
                                sum += w[((o * in_ch + c) * 5 + ki) * 5 + kj] * in[(c * side + iy) * side + ix];
                        }
                out[(o * out_side + oy) * out_side + ox] = sum;
            }
}

static void ref_relu(double *v, int n)
{
    for (int i = 0; i < n; i++)
        v[i] = v[i] > 0.0 ? v[i] : 0.0;
}

static void ref_pool(const double *in, int channels, int side, double *out)
{
    int half = side / 2;
    for (int c = 0; c < channels; c++)
        for (int py = 0; py < half; py++)
            for (int px = 0; px < half; px++) {
                const double *p = in + (c * side + 2 * py) * side + 2 * px;
                out[(c * half + py) * half + px] = fmax(fmax(p[0], p[1]), fmax(p[side], p[side + 1]));
            }
}

static void ref_fc(const double *in, int n_in, const double *w, const double *b, int n_out, double *out)
{
    for (int o = 0; o < n_out; o++) {
        double sum = b[o];
        for (int i = 0; i < n_in; i++)
            sum += w[o * n_in + i] * in[i];
        out[o] = sum;
    }
}

/* Mean softmax cross-entropy of the batch under params p. */
static double ref_loss(test_net kind, const double *p, const float *x, const uint8_t *y, uint32_t batch)
{
    static double in[784], a[6 * 28 * 28], b[6 * 14 * 14], c[16 * 10 * 10], d[400], e[128], f[84], z[10];
    double total = 0.0;
    for (uint32_t n = 0; n < batch; n++) {
        for (int i = 0; i < 784; i++)
            in[i] = x[n * 784 + i];
        if (kind == NET_MLP) {
            ref_fc(in, 784, p, p + 100352, 128, e);
            ref_relu(e, 128);
            ref_fc(e, 128, p + 100480, p + 101760, 10, z);
        } else {
            ref_conv(in, 1, 28, p, p + 150, 6, 2, a, 28);
            ref_relu(a, 6 * 28 * 28);
            ref_pool(a, 6, 28, b);
            ref_conv(b, 6, 14, p + 156, p + 2556, 16, 0, c, 10);
            ref_relu(c, 1600);
            ref_pool(c, 16, 10, d);
            ref_fc(d, 400, p + 2572, p + 50572, 120, e);
            ref_relu(e, 120);
            ref_fc(e, 120, p + 50692, p + 60772, 84, f);
            ref_relu(f, 84);
            ref_fc(f, 84, p + 60856, p + 61696, 10, z);
        }
        double max = z[0], sum = 0.0;
        for (int j = 1; j < 10; j++)
            max = fmax(max, z[j]);
        for (int j = 0; j < 10; j++)
            sum += exp(z[j] - max);
        total += max + log(sum) - z[y[n]];
    }
    return total / batch;
}

/* ---- gradient checks ---- */

#define CHECK_BATCH 3

typedef struct grad_check {
    int checked, failed, large; /* large: coordinates with |gradient| > 1e-2 */
} grad_check;

/* Compares the model's fp32 gradient grads[j] with the double-sided
 * difference of the double-precision reference loss. In double, eps = 1e-6
 * leaves ~1e-9 of rounding and almost never straddles a ReLU or max-pool
 * kink, so what remains is the model's own fp32 rounding: a tolerance of
 * 1e-5 + 1e-3 relative is tight enough that a dropped term, a wrong sign
 * or a misplaced index fails. */
static void check_coordinate(test_net kind, double *p, const float *grads, const float *x, const uint8_t *y,
                             size_t j, const char *what, grad_check *gc)
{
    const double eps = 1e-6;
    double saved = p[j];
    p[j] = saved + eps;
    double plus = ref_loss(kind, p, x, y, CHECK_BATCH);
    p[j] = saved - eps;
    double minus = ref_loss(kind, p, x, y, CHECK_BATCH);
    p[j] = saved;
    double numeric = (plus - minus) / (2.0 * eps), analytic = grads[j];
    double scale = fmax(fabs(numeric), fabs(analytic));
    gc->checked++;
    if (scale > 1e-2)
        gc->large++;
    if (fabs(numeric - analytic) > 1e-5 + 1e-3 * scale) {
        gc->failed++;
        print_message("%s coordinate %zu: analytic %.6g numeric %.6g\n", what, j, analytic, numeric);
    }
}

/* Checks `samples` weights and biases of each layer (all when there are
 * fewer) against one forward/backward on a random batch. */
static void check_gradients(test_net kind, uint32_t samples, uint64_t seed)
{
    esgd_model *m = new_model(kind, CHECK_BATCH);
    model_init_params(m, seed);
    esgd_rng rng;
    rng_seed(&rng, seed, 9);
    size_t count, offset = 0;
    const test_layer *layers = layers_of(kind, &count);
    /* Non-zero biases, so the bias paths through ReLU and pooling matter. */
    for (size_t i = 0; i < count; i++) {
        offset += weight_count(&layers[i]);
        for (uint32_t j = 0; j < layers[i].out; j++)
            m->params[offset + j] = (float)(0.2 * rng_uniform(&rng) - 0.1);
        offset += layers[i].out;
    }
    float x[CHECK_BATCH * MODEL_INPUT_SIZE];
    uint8_t y[CHECK_BATCH];
    random_batch(&rng, x, y, CHECK_BATCH);
    float loss;
    assert_int_equal(model_forward_backward(m, x, y, CHECK_BATCH, &loss), ESGD_OK);
    double *p = malloc(m->num_params * sizeof(double));
    assert_non_null(p);
    for (uint32_t j = 0; j < m->num_params; j++)
        p[j] = m->params[j];
    /* The forward pass itself agrees with the reference. */
    assert_float_equal(loss, ref_loss(kind, p, x, y, CHECK_BATCH), 1e-5);

    offset = 0;
    for (size_t i = 0; i < count; i++) {
        const test_layer *l = &layers[i];
        size_t n = weight_count(l);
        grad_check weights = {0}, biases = {0};
        if (n <= samples)
            for (size_t j = 0; j < n; j++)
                check_coordinate(kind, p, m->grads, x, y, offset + j, l->name, &weights);
        else
            for (uint32_t s = 0; s < samples; s++)
                check_coordinate(kind, p, m->grads, x, y, offset + rng_below(&rng, (uint32_t)n), l->name, &weights);
        offset += n;
        if (l->out <= samples)
            for (uint32_t j = 0; j < l->out; j++)
                check_coordinate(kind, p, m->grads, x, y, offset + j, l->name, &biases);
        else
            for (uint32_t s = 0; s < samples; s++)
                check_coordinate(kind, p, m->grads, x, y, offset + rng_below(&rng, l->out), l->name, &biases);
        offset += l->out;
        print_message("%s %s: weights %d checked, %d large, %d bad; biases %d checked, %d large, %d bad\n",
                      kind == NET_MLP ? "mlp" : "lenet", l->name, weights.checked, weights.large,
                      weights.failed, biases.checked, biases.large, biases.failed);
        assert_int_equal(weights.failed, 0);
        assert_int_equal(biases.failed, 0);
        /* A check of only near-zero gradients would prove nothing (many
         * are exactly zero behind dead ReLUs and losing pool cells). */
        assert_true(weights.large >= weights.checked / 8);
        assert_true(biases.large >= 1);
    }
    free(p);
    model_free(m);
}

static void test_gradients_mlp(void **state)
{
    (void)state;
    check_gradients(NET_MLP, 40, 3);
}

/* conv1 (padded), conv2 (unpadded), both max-pools, every ReLU, the three
 * fc layers and softmax cross-entropy all lie on the path to conv1's
 * weights, and each layer's own parameters are checked too. */
static void test_gradients_lenet(void **state)
{
    (void)state;
    check_gradients(NET_LENET, 40, 4);
}

/* ---- loss and batch invariants ---- */

/* With all parameters zero every logit is 0, so the loss is log(10) and
 * the last bias's gradient is the mean of softmax - onehot. */
static void check_uniform(test_net kind)
{
    esgd_model *m = new_model(kind, 4);
    esgd_rng rng;
    rng_seed(&rng, 17, 0);
    float x[4 * MODEL_INPUT_SIZE];
    uint8_t y[4];
    random_batch(&rng, x, y, 4);
    memcpy(y, (uint8_t[4]){2, 2, 7, 0}, sizeof y);
    float loss = 0.0f;
    assert_int_equal(model_forward_backward(m, x, y, 4, &loss), ESGD_OK);
    assert_float_equal(loss, logf(10.0f), 1e-6);
    const float *db = m->grads + m->num_params - MODEL_CLASSES;
    for (int c = 0; c < MODEL_CLASSES; c++) {
        float expected = 0.1f - (c == 2 ? 0.5f : c == 7 || c == 0 ? 0.25f : 0.0f);
        assert_float_equal(db[c], expected, 1e-6);
    }
    uint32_t correct = 99;
    assert_int_equal(model_forward(m, x, y, 4, &loss, &correct), ESGD_OK);
    assert_float_equal(loss, logf(10.0f), 1e-6);
    assert_int_equal(correct, 1); /* ties go to class 0: only the last example */
    model_free(m);
}

static void test_uniform_loss(void **state)
{
    (void)state;
    check_uniform(NET_MLP);
    check_uniform(NET_LENET);
}

/* The loss and gradient of a batch are the means of the single-example
 * ones; a second identical call gives bit-identical gradients (they are
 * overwritten, not accumulated). */
static void check_batch_invariance(test_net kind)
{
    enum { batch = 5 };
    esgd_model *m = new_model(kind, batch);
    model_init_params(m, 8);
    esgd_rng rng;
    rng_seed(&rng, 8, 1);
    float x[batch * MODEL_INPUT_SIZE];
    uint8_t y[batch];
    random_batch(&rng, x, y, batch);
    size_t d = m->num_params, bytes = d * sizeof(float);
    float *whole = malloc(bytes);
    double *mean = calloc(d, sizeof(double));
    assert_non_null(whole);
    assert_non_null(mean);

    float loss_whole, loss;
    assert_int_equal(model_forward_backward(m, x, y, batch, &loss_whole), ESGD_OK);
    memcpy(whole, m->grads, bytes);
    double loss_mean = 0.0;
    for (uint32_t i = 0; i < batch; i++) {
        assert_int_equal(model_forward_backward(m, x + i * MODEL_INPUT_SIZE, y + i, 1, &loss), ESGD_OK);
        loss_mean += loss / (double)batch;
        for (size_t j = 0; j < d; j++)
            mean[j] += m->grads[j] / (double)batch;
    }
    assert_float_equal(loss_whole, loss_mean, 1e-5);
    double largest = 0.0;
    for (size_t j = 0; j < d; j++)
        largest = fmax(largest, fabs(mean[j]));
    assert_true(largest > 1e-3);
    for (size_t j = 0; j < d; j++)
        if (fabs(whole[j] - mean[j]) > 1e-6 + 1e-4 * fabs(mean[j]))
            fail_msg("coordinate %zu: batch %.8g, mean of singles %.8g", j, (double)whole[j], mean[j]);

    assert_int_equal(model_forward_backward(m, x, y, batch, &loss), ESGD_OK);
    assert_true(loss == loss_whole);
    assert_memory_equal(m->grads, whole, bytes);
    free(whole);
    free(mean);
    model_free(m);
}

static void test_batch_invariance(void **state)
{
    (void)state;
    check_batch_invariance(NET_MLP);
    check_batch_invariance(NET_LENET);
}

/* Plain SGD on one fixed batch must drive its loss down. */
static void check_sgd_reduces_loss(test_net kind)
{
    enum { batch = 8 };
    esgd_model *m = new_model(kind, batch);
    model_init_params(m, 21);
    esgd_rng rng;
    rng_seed(&rng, 21, 1);
    float x[batch * MODEL_INPUT_SIZE];
    uint8_t y[batch];
    random_batch(&rng, x, y, batch);
    float first = 0.0f, loss = 0.0f;
    for (int step = 0; step < 20; step++) {
        assert_int_equal(model_forward_backward(m, x, y, batch, &loss), ESGD_OK);
        if (step == 0)
            first = loss;
        for (uint32_t j = 0; j < m->num_params; j++)
            m->params[j] -= 0.05f * m->grads[j];
    }
    assert_int_equal(model_forward(m, x, y, batch, &loss, NULL), ESGD_OK);
    print_message("%s: loss %.4f -> %.4f after 20 steps\n", kind == NET_MLP ? "mlp" : "lenet", first, loss);
    assert_true(loss < 0.5f * first);
    model_free(m);
}

static void test_sgd_reduces_loss(void **state)
{
    (void)state;
    check_sgd_reduces_loss(NET_MLP);
    check_sgd_reduces_loss(NET_LENET);
}

/* ---- arguments ---- */

static void test_bad_args(void **state)
{
    (void)state;
    esgd_error err = {0};
    model_spec lenet = spec_of(NET_LENET), mlp = spec_of(NET_MLP), unparsed = {0};
    assert_null(model_new(&lenet, 0, &err));
    assert_int_equal(err.status, ESGD_ERR_ARG);
    assert_true(strlen(err.message) > 0);
    err = (esgd_error){0};
    assert_null(model_new(&unparsed, 4, &err));
    assert_int_equal(err.status, ESGD_ERR_ARG);
    assert_null(model_new(NULL, 4, &err));
    assert_null(model_new(&mlp, 0, NULL));
    model_free(NULL);
    model_init_params(NULL, 1);

    for (int kind = NET_MLP; kind <= NET_LENET; kind++) {
        esgd_model *m = new_model((test_net)kind, 4);
        model_init_params(m, 1);
        float x[5 * MODEL_INPUT_SIZE] = {0};
        uint8_t y[5] = {1, 2, 3, 4, 5}, bad[4] = {1, 2, 10, 3};
        float loss = -1.0f;
        uint32_t correct = 99;
        assert_int_equal(model_forward_backward(m, x, y, 0, &loss), ESGD_ERR_ARG);
        assert_int_equal(model_forward_backward(m, x, y, 5, &loss), ESGD_ERR_ARG);
        assert_int_equal(model_forward_backward(m, x, bad, 4, &loss), ESGD_ERR_ARG);
        assert_int_equal(model_forward_backward(m, NULL, y, 4, &loss), ESGD_ERR_ARG);
        assert_int_equal(model_forward_backward(m, x, NULL, 4, &loss), ESGD_ERR_ARG);
        assert_int_equal(model_forward_backward(NULL, x, y, 4, &loss), ESGD_ERR_ARG);
        assert_int_equal(model_forward(m, x, y, 0, &loss, &correct), ESGD_ERR_ARG);
        assert_int_equal(model_forward(m, x, y, 5, &loss, &correct), ESGD_ERR_ARG);
        assert_int_equal(model_forward(m, x, bad, 4, &loss, &correct), ESGD_ERR_ARG);
        assert_int_equal(model_forward(m, NULL, y, 4, &loss, &correct), ESGD_ERR_ARG);
        assert_int_equal(model_forward(NULL, x, y, 4, &loss, &correct), ESGD_ERR_ARG);
        /* Rejected calls change nothing. */
        assert_true(loss == -1.0f);
        assert_int_equal(correct, 99);
        for (uint32_t j = 0; j < m->num_params; j++)
            assert_true(m->grads[j] == 0.0f);
        /* NULL outputs are allowed; the full batch works. */
        assert_int_equal(model_forward_backward(m, x, y, 4, NULL), ESGD_OK);
        assert_int_equal(model_forward(m, x, y, 4, NULL, NULL), ESGD_OK);
        model_free(m);
    }
}

/* ---- evaluation ---- */

#define EVAL_COUNT 10

static void fill_dataset(esgd_dataset *ds, uint8_t *pixels, uint8_t *labels, uint64_t seed)
{
    esgd_rng rng;
    rng_seed(&rng, seed, 0);
    for (uint32_t i = 0; i < EVAL_COUNT * MODEL_INPUT_SIZE; i++)
        pixels[i] = (uint8_t)rng_below(&rng, 256);
    for (uint32_t i = 0; i < EVAL_COUNT; i++)
        labels[i] = (uint8_t)rng_below(&rng, MODEL_CLASSES);
    *ds = (esgd_dataset){.count = EVAL_COUNT,
                         .rank = 2,
                         .dims = {28, 28},
                         .example_size = 28 * 28,
                         .type = DATASET_U8,
                         .u8 = pixels,
                         .labels = labels};
}

/* A model whose only non-zero parameter is the last bias of class 3 says
 * "3" for every input: accuracy is the share of 3s, and the loss is known. */
static void check_evaluate_counts(test_net kind)
{
    static uint8_t pixels[EVAL_COUNT * MODEL_INPUT_SIZE];
    uint8_t labels[EVAL_COUNT];
    esgd_dataset ds;
    fill_dataset(&ds, pixels, labels, 2);
    memcpy(labels, (uint8_t[EVAL_COUNT]){3, 0, 3, 1, 9, 3, 3, 5, 2, 8}, EVAL_COUNT); /* 3s at 0, 2, 5, 6 */
    esgd_model *m = new_model(kind, 3); /* chunks of 3, 3, 3, 1 */
    m->params[m->num_params - MODEL_CLASSES + 3] = 5.0f;
    double lse = log(9.0 + exp(5.0));
    esgd_error err = {0};
    float accuracy = -1.0f, loss = -1.0f;

    assert_int_equal(model_evaluate(m, &ds, 0, &accuracy, &loss, &err), ESGD_OK);
    assert_float_equal(accuracy, 0.4f, 1e-6);
    assert_float_equal(loss, (4 * (lse - 5.0) + 6 * lse) / 10.0, 1e-5);

    assert_int_equal(model_evaluate(m, &ds, 5, &accuracy, &loss, &err), ESGD_OK); /* 3s at 0, 2 */
    assert_float_equal(accuracy, 0.4f, 1e-6);
    assert_int_equal(model_evaluate(m, &ds, 4, &accuracy, &loss, &err), ESGD_OK);
    assert_float_equal(accuracy, 0.5f, 1e-6);
    assert_float_equal(loss, (2 * (lse - 5.0) + 2 * lse) / 4.0, 1e-5);
    assert_int_equal(model_evaluate(m, &ds, 1000, &accuracy, &loss, &err), ESGD_OK);
    assert_float_equal(accuracy, 0.4f, 1e-6);
    model_free(m);
}

/* With a random model, evaluate agrees with model_forward on the pixels
 * scaled by hand: loss to rounding, hits exactly. */
static void check_evaluate_matches_forward(test_net kind)
{
    static uint8_t pixels[EVAL_COUNT * MODEL_INPUT_SIZE];
    static float x[EVAL_COUNT * MODEL_INPUT_SIZE];
    uint8_t labels[EVAL_COUNT];
    esgd_dataset ds;
    fill_dataset(&ds, pixels, labels, 6);
    for (uint32_t i = 0; i < EVAL_COUNT * MODEL_INPUT_SIZE; i++)
        x[i] = pixels[i] / 255.0f;
    esgd_model *whole = new_model(kind, EVAL_COUNT), *chunked = new_model(kind, 4);
    model_init_params(whole, 12);
    model_init_params(chunked, 12);
    /* A bias towards the most common label makes some predictions right. */
    for (uint32_t c = 0; c < MODEL_CLASSES; c++) {
        whole->params[whole->num_params - MODEL_CLASSES + c] = labels[c] == labels[0] ? 0.5f : 0.0f;
        chunked->params[chunked->num_params - MODEL_CLASSES + c] = labels[c] == labels[0] ? 0.5f : 0.0f;
    }
    float loss, accuracy, eval_loss;
    uint32_t correct;
    assert_int_equal(model_forward(whole, x, labels, EVAL_COUNT, &loss, &correct), ESGD_OK);
    esgd_error err = {0};
    assert_int_equal(model_evaluate(chunked, &ds, 0, &accuracy, &eval_loss, &err), ESGD_OK);
    assert_float_equal(eval_loss, loss, 1e-5);
    assert_float_equal(accuracy, correct / (float)EVAL_COUNT, 1e-6);
    model_free(whole);
    model_free(chunked);
}

static void test_evaluate(void **state)
{
    (void)state;
    check_evaluate_counts(NET_MLP);
    check_evaluate_counts(NET_LENET);
    check_evaluate_matches_forward(NET_MLP);
    check_evaluate_matches_forward(NET_LENET);
}

static void test_evaluate_bad_args(void **state)
{
    (void)state;
    static uint8_t pixels[EVAL_COUNT * MODEL_INPUT_SIZE];
    uint8_t labels[EVAL_COUNT];
    esgd_dataset ds;
    fill_dataset(&ds, pixels, labels, 1);
    esgd_model *m = new_model(NET_MLP, 4);
    float accuracy, loss;
    esgd_error err = {0};
    assert_int_equal(model_evaluate(NULL, &ds, 0, &accuracy, &loss, &err), ESGD_ERR_ARG);
    assert_int_equal(err.status, ESGD_ERR_ARG);
    assert_int_equal(model_evaluate(m, NULL, 0, &accuracy, &loss, &err), ESGD_ERR_ARG);
    esgd_dataset empty = ds;
    empty.count = 0;
    assert_int_equal(model_evaluate(m, &empty, 0, &accuracy, &loss, &err), ESGD_ERR_ARG);
    esgd_dataset small = ds;
    small.dims[0] = 14;
    small.example_size = 14 * 28;
    err = (esgd_error){0};
    assert_int_equal(model_evaluate(m, &small, 0, &accuracy, &loss, &err), ESGD_ERR_DIMENSION);
    assert_true(strlen(err.message) > 0);
    labels[7] = 10;
    err = (esgd_error){0};
    assert_int_equal(model_evaluate(m, &ds, 0, &accuracy, &loss, &err), ESGD_ERR_ARG);
    assert_non_null(strstr(err.message, "label"));
    /* The bad label lies past the limit, so it is never read. */
    assert_int_equal(model_evaluate(m, &ds, 7, &accuracy, &loss, &err), ESGD_OK);
    model_free(m);
}

/* True when this CPU fuses multiply-adds in the kernels (model_gemm.c):
 * x86-64 with FMA (the v3 and v4 code), any target whose compiler says
 * fmaf is fast (aarch64, armhf with VFPv4). */
static bool cpu_fuses(void)
{
#if !defined(__OPTIMIZE__)
    return false; /* GCC forms FMAs only when optimising: an -O0 build rounds products apart */
#elif defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#elif defined(__FP_FAST_FMAF)
    return true;
#else
    return false;
#endif
}

/* gemm_rows and its portable form against a plain loop with the
 * order the header promises (k ascending, one running sum from zero),
 * fused with fmaf where the CPU fuses: bit for bit, at shapes with row and
 * column tails and both strides of A, which is what keeps LeNet's results
 * the same on every CPU with FMA whatever its vector width. */
static void test_gemm_fixed_order(void **state)
{
    (void)state;
    bool fused = cpu_fuses();
    print_message("gemm_rows reference: %s\n", fused ? "fmaf (this CPU fuses)" : "multiply, then add");
    static const uint32_t shapes[][3] = {{16, 3200, 150}, {150, 16, 3200}, {120, 32, 400}, {10, 84, 32},
                                         {13, 37, 7},     {1, 5, 3},       {9, 17, 1},    {150, 3200, 16}};
    esgd_rng rng;
    rng_seed(&rng, 99, 0);
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        uint32_t M = shapes[t][0], N = shapes[t][1], K = shapes[t][2];
        float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * K * N);
        float *c = malloc(sizeof(float) * M * N), *c4 = malloc(sizeof(float) * M * N);
        assert_non_null(a);
        assert_non_null(b);
        assert_non_null(c);
        assert_non_null(c4);
        for (size_t i = 0; i < (size_t)M * K; i++)
            a[i] = (float)rng_normal(&rng);
        for (size_t i = 0; i < (size_t)K * N; i++)
            b[i] = (float)rng_normal(&rng);
        for (int transposed = 0; transposed < 2; transposed++) {
            size_t sam = transposed ? 1 : K, sak = transposed ? M : 1;
            gemm_rows(M, N, K, a, sam, sak, b, N, c, N);
            gemm_rows_portable(M, N, K, a, sam, sak, b, N, c4, N);
            for (uint32_t m = 0; m < M; m++)
                for (uint32_t n = 0; n < N; n++) {
                    float want = 0.0f;
                    for (uint32_t k = 0; k < K; k++) {
                        float x = a[m * sam + k * sak], y = b[(size_t)k * N + n];
                        if (fused) {
                            want = fmaf(x, y, want);
                        } else {
                            volatile float p = x * y; /* rounded on its own */
                            want = want + p;
                        }
                    }
                    float got = c[(size_t)m * N + n], got4 = c4[(size_t)m * N + n];
                    if (memcmp(&got, &want, sizeof want) != 0 || memcmp(&got4, &want, sizeof want) != 0)
                        fail_msg("%ux%ux%u%s C[%u][%u]: gemm_rows %a, 4-row %a, reference %a", M, N, K,
                                 transposed ? " (A transposed)" : "", m, n, (double)got, (double)got4,
                                 (double)want);
                }
        }
        free(a);
        free(b);
        free(c);
        free(c4);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_num_params),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_gradients_mlp),
        cmocka_unit_test(test_gradients_lenet),
        cmocka_unit_test(test_uniform_loss),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_sgd_reduces_loss),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_evaluate),
        cmocka_unit_test(test_evaluate_bad_args),
        cmocka_unit_test(test_gemm_fixed_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
