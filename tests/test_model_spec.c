/* Model specs: parsing every layer and shape rule, each kind of bad spec
 * with its message, finite-difference checks of every layer's backward pass
 * on the layer-by-layer path, and the fused LeNet kernels against that path
 * on the same network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "esgd/model.h"
#include "esgd/model_spec.h"
#include "esgd/rng.h"

static model_spec parse_ok(const char *text, const uint32_t *dims, uint32_t rank, uint32_t classes)
{
    model_spec spec;
    esgd_error err = {0};
    esgd_status st = model_spec_parse(&spec, text, dims, rank, classes, &err);
    if (st != ESGD_OK)
        print_message("%s: %s\n", text, err.message);
    assert_int_equal(st, ESGD_OK);
    return spec;
}

static const uint32_t mnist[] = {28, 28};

static void test_presets(void **state)
{
    (void)state;
    model_spec lenet = parse_ok("lenet", mnist, 2, 10), mlp = parse_ok("mlp", mnist, 2, 10);
    assert_int_equal(lenet.num_params, 61706);
    assert_int_equal(mlp.num_params, 101770);
    assert_string_equal(lenet.text, "lenet");
    /* The preset is its layer list. */
    model_spec spelled = parse_ok(model_spec_preset("lenet"), mnist, 2, 10);
    assert_int_equal(spelled.num_params, 61706);
    assert_int_equal(spelled.num_layers, lenet.num_layers);
    assert_null(model_spec_preset("resnet"));
}

static void test_shapes(void **state)
{
    (void)state;
    /* 2-D: same keeps the size, valid shrinks it, pooling floors. */
    model_spec s = parse_ok("conv 4 3 same, relu, maxpool 2, conv 8 3, tanh, maxpool 2, flatten, dense 5", mnist, 2, 5);
    assert_int_equal(s.layers[0].out.c, 4);
    assert_int_equal(s.layers[0].out.h, 28);
    assert_int_equal(s.layers[2].out.h, 14);
    assert_int_equal(s.layers[3].out.h, 12);
    assert_int_equal(s.layers[5].out.w, 6);
    assert_int_equal(s.layers[6].out.c, 8 * 6 * 6);
    assert_int_equal(s.num_params, (4 * 9 + 4) + (8 * 4 * 9 + 8) + (5 * 288 + 5));
    /* rank 3 is (C, H, W) */
    const uint32_t rgb[] = {3, 9, 7};
    s = parse_ok("conv2d 2 2 same, maxpool 3, dense 4", rgb, 3, 4);
    assert_int_equal(s.layers[0].in.c, 3);
    assert_int_equal(s.layers[0].out.h, 9);
    assert_int_equal(s.layers[0].out.w, 7);
    assert_int_equal(s.layers[1].out.h, 3);
    assert_int_equal(s.layers[1].out.w, 2);
    /* with conv1d, rank 2 is (channels, length) and pooling is 1-D */
    const uint32_t signal[] = {3, 50};
    s = parse_ok("conv1d 8 5, relu, maxpool 2, conv1d 4 3 same, flatten, dense 6", signal, 2, 6);
    assert_int_equal(s.layers[0].in.c, 3);
    assert_int_equal(s.layers[0].out.w, 46);
    assert_int_equal(s.layers[0].num_params, 8 * 3 * 5 + 8);
    assert_int_equal(s.layers[2].out.w, 23);
    assert_int_equal(s.layers[2].out.h, 1);
    assert_int_equal(s.layers[3].out.w, 23);
    /* rank 1 is a vector; case and spacing do not matter */
    const uint32_t vec[] = {12};
    s = parse_ok("  Dense 7 ,RELU,dense   3  ", vec, 1, 3);
    assert_int_equal(s.num_params, 12 * 7 + 7 + 7 * 3 + 3);
    char text[512];
    assert_true(model_spec_describe(&s, text, sizeof text) > 0);
    assert_non_null(strstr(text, "dense 7: 12 -> 7, 91 params"));
}

static void expect_error(const char *text, const uint32_t *dims, uint32_t rank, uint32_t classes, const char *part)
{
    model_spec spec;
    esgd_error err = {0};
    assert_int_equal(model_spec_parse(&spec, text, dims, rank, classes, &err), ESGD_ERR_ARG);
    if (!strstr(err.message, part)) {
        print_message("spec \"%s\": message \"%s\" lacks \"%s\"\n", text, err.message, part);
        fail();
    }
}

static void test_errors(void **state)
{
    (void)state;
    const uint32_t vec[] = {12}, rgb[] = {3, 9, 9};
    expect_error("dense 10, pool 2", mnist, 2, 10, "layer 2 (\"pool 2\", at character 11): unknown layer");
    expect_error("dense", mnist, 2, 10, "expected \"dense N\"");
    expect_error("dense ten", mnist, 2, 10, "\"ten\" is not a positive whole number");
    expect_error("dense -3", mnist, 2, 10, "is not a positive whole number");
    expect_error("dense 0", mnist, 2, 10, "not a whole number in 1..65536");
    expect_error("dense 10x", mnist, 2, 10, "not a whole number in 1..");
    expect_error("dense 99999999999999999999", mnist, 2, 10, "not a whole number in 1..");
    expect_error("dense 10 20", mnist, 2, 10, "unexpected words");
    expect_error("conv 6", mnist, 2, 10, "filters and kernel size");
    expect_error("conv 6 5 full, dense 10", mnist, 2, 10, "\"same\" or \"valid\"");
    expect_error("conv 6 65, dense 10", mnist, 2, 10, "kernel size \"65\" is not a whole number in 1..64");
    expect_error("conv 6 29, dense 10", mnist, 2, 10, "does not fit the 1x28x28 input");
    expect_error("conv 6 3, dense 10", vec, 1, 10, "conv needs a (channels, height, width) input, this one is 12");
    expect_error("conv1d 6 3, dense 10", rgb, 3, 10, "conv1d needs examples of (channels, length)");
    expect_error("dense 5, conv1d 2 3, dense 10", vec, 1, 10, "conv1d needs a (channels, length) input");
    expect_error("maxpool 2, dense 10", vec, 1, 10, "maxpool needs a 1-D or 2-D input");
    expect_error("maxpool 30, dense 10", mnist, 2, 10, "larger than the 1x28x28 input");
    expect_error("dense 10,", mnist, 2, 10, "empty layer");
    expect_error(",dense 10", mnist, 2, 10, "layer 1");
    expect_error("dense 20", mnist, 2, 10, "ends in 20 values but the job has 10 classes");
    expect_error("conv 10 28", mnist, 2, 10, "ends in 10x1x1 values");
    expect_error("relu", vec, 1, 12, "no dense or conv layer");
    expect_error("", mnist, 2, 10, "empty");
    expect_error("dense 60000, dense 60000, dense 10", mnist, 2, 10, "parameters; a model may have at most");
    expect_error("conv 65536 3 same, dense 10", mnist, 2, 10, "values per example; at most");
    expect_error("dense 10", mnist, 2, 1, "classes; 2..256");
    const uint32_t zero[] = {0, 5};
    expect_error("dense 10", zero, 2, 10, "dimension 1 is 0");
    expect_error("dense 10", mnist, 4, 10, "ranks 1 to 3");
    char many[400] = "";
    for (int i = 0; i < 40; i++)
        strcat(many, "relu, ");
    strcat(many, "dense 10");
    expect_error(many, mnist, 2, 10, "more than 32 layers");
    char *huge = malloc(MODEL_SPEC_TEXT_MAX + 10);
    assert_non_null(huge);
    memset(huge, ' ', MODEL_SPEC_TEXT_MAX + 5);
    huge[MODEL_SPEC_TEXT_MAX + 5] = '\0';
    expect_error(huge, mnist, 2, 10, "characters; at most");
    free(huge);
}

/* ---- finite differences on the layer-by-layer path ---- */

static esgd_model *build(const char *text, const uint32_t *dims, uint32_t rank, uint32_t classes, uint32_t batch,
                         bool layerwise)
{
    model_spec spec = parse_ok(text, dims, rank, classes);
    esgd_error err = {0};
    esgd_model *m = layerwise ? model_new_layerwise(&spec, batch, &err) : model_new(&spec, batch, &err);
    assert_non_null(m);
    return m;
}

static void random_inputs(esgd_rng *rng, const esgd_model *m, float *x, uint8_t *y, uint32_t batch)
{
    for (uint32_t i = 0; i < batch * m->input_size; i++)
        x[i] = (float)(2.0 * rng_uniform(rng) - 1.0);
    for (uint32_t i = 0; i < batch; i++)
        y[i] = (uint8_t)rng_below(rng, m->spec.classes);
}

/* Every parameter's gradient against the central difference of the fp32
 * loss. With eps = 1e-2 the float loss's rounding (~1e-7 of ~1) gives
 * ~1e-5 of noise; a ReLU or max cell that switches within eps spoils a few
 * coordinates, so 97% must agree within 2e-3 + 3% and at least a quarter
 * of them must be large enough to mean something. A dropped term, wrong
 * sign or index fails far more. */
static void check_all_gradients(const char *text, const uint32_t *dims, uint32_t rank, uint32_t classes,
                                uint64_t seed)
{
    const uint32_t batch = 3;
    esgd_model *m = build(text, dims, rank, classes, batch, true);
    model_init_params(m, seed);
    esgd_rng rng;
    rng_seed(&rng, seed, 5);
    for (uint32_t j = 0; j < m->num_params; j++) /* non-zero biases too */
        if (m->params[j] == 0.0f)
            m->params[j] = (float)(0.2 * rng_uniform(&rng) - 0.1);
    float *x = malloc((size_t)batch * m->input_size * sizeof(float));
    uint8_t y[3];
    assert_non_null(x);
    random_inputs(&rng, m, x, y, batch);
    float loss;
    assert_int_equal(model_forward_backward(m, x, y, batch, &loss), ESGD_OK);
    float *analytic = malloc(m->num_params * sizeof(float));
    assert_non_null(analytic);
    memcpy(analytic, m->grads, m->num_params * sizeof(float));
    const float eps = 1e-2f;
    uint32_t agree = 0, large = 0;
    for (uint32_t j = 0; j < m->num_params; j++) {
        float saved = m->params[j], plus, minus;
        m->params[j] = saved + eps;
        assert_int_equal(model_forward(m, x, y, batch, &plus, NULL), ESGD_OK);
        m->params[j] = saved - eps;
        assert_int_equal(model_forward(m, x, y, batch, &minus, NULL), ESGD_OK);
        m->params[j] = saved;
        double numeric = ((double)plus - minus) / (2.0 * eps), scale = fmax(fabs(numeric), fabs(analytic[j]));
        large += scale > 1e-2;
        if (fabs(numeric - analytic[j]) <= 2e-3 + 3e-2 * scale)
            agree++;
        else
            print_message("%s: coordinate %u analytic %.6g numeric %.6g\n", text, j, analytic[j], numeric);
    }
    print_message("%s: %u of %u agree, %u large\n", text, agree, m->num_params, large);
    assert_true(agree >= m->num_params - m->num_params * 3 / 100);
    assert_true(large >= m->num_params / 4);
    free(analytic);
    free(x);
    model_free(m);
}

static void test_gradients_dense_tanh(void **state)
{
    (void)state;
    const uint32_t vec[] = {6};
    check_all_gradients("dense 5, tanh, dense 4, relu, dense 3", vec, 1, 3, 1);
}

static void test_gradients_conv2d_valid_maxpool(void **state)
{
    (void)state;
    const uint32_t img[] = {2, 7, 6};
    check_all_gradients("conv 3 3, relu, maxpool 2, dense 4", img, 3, 4, 2);
}

static void test_gradients_conv2d_same(void **state)
{
    (void)state;
    const uint32_t img[] = {5, 5};
    /* an even kernel pads unevenly: 1 before, 2 after */
    check_all_gradients("conv 2 4 same, tanh, conv 2 3 same, flatten, dense 3", img, 2, 3, 3);
}

static void test_gradients_conv1d_maxpool1d(void **state)
{
    (void)state;
    const uint32_t signal[] = {3, 11};
    check_all_gradients("conv1d 4 3 same, relu, maxpool 2, conv1d 2 3, tanh, dense 3", signal, 2, 3, 4);
}

/* ---- the fused LeNet kernels compute the layer-by-layer network ---- */

static void test_fused_lenet_matches_layerwise(void **state)
{
    (void)state;
    const uint32_t batch = 5;
    esgd_model *fused = build("lenet", mnist, 2, 10, batch, false);
    esgd_model *plain = build("lenet", mnist, 2, 10, batch, true);
    model_init_params(fused, 7);
    model_init_params(plain, 7);
    assert_memory_equal(fused->params, plain->params, fused->num_params * sizeof(float));
    esgd_rng rng;
    rng_seed(&rng, 7, 1);
    float *x = malloc(batch * 784 * sizeof(float));
    uint8_t y[5];
    assert_non_null(x);
    for (uint32_t i = 0; i < batch * 784; i++)
        x[i] = (float)rng_uniform(&rng);
    for (uint32_t i = 0; i < batch; i++)
        y[i] = (uint8_t)rng_below(&rng, 10);
    float loss_fused, loss_plain;
    assert_int_equal(model_forward_backward(fused, x, y, batch, &loss_fused), ESGD_OK);
    assert_int_equal(model_forward_backward(plain, x, y, batch, &loss_plain), ESGD_OK);
    assert_float_equal(loss_fused, loss_plain, 1e-5);
    double largest = 0.0;
    /* Not fmax(largest, fabs(float)): Debian 12's aarch64 GCC 12.2 stops with
     * an internal compiler error vectorising that reduction at -O3. */
    for (uint32_t j = 0; j < fused->num_params; j++)
        if (fabs(fused->grads[j]) > largest)
            largest = fabs(fused->grads[j]);
    uint32_t differ = 0;
    for (uint32_t j = 0; j < fused->num_params; j++)
        differ += fabs(fused->grads[j] - plain->grads[j]) > 1e-5 * largest + 1e-4 * fabs(fused->grads[j]);
    assert_int_equal(differ, 0);
    free(x);
    model_free(fused);
    model_free(plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_gradients_dense_tanh),
        cmocka_unit_test(test_gradients_conv2d_valid_maxpool),
        cmocka_unit_test(test_gradients_conv2d_same),
        cmocka_unit_test(test_gradients_conv1d_maxpool1d),
        cmocka_unit_test(test_fused_lenet_matches_layerwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
