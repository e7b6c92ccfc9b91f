/* The trained-model file and the predictor: bit-identical round trips, every
 * kind of damage reported (checked against files packed here independently
 * of the writer, from schemas/model-file.md), predictions equal to
 * model_predict's, and the input normalisation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include <math.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "esgd/model.h"
#include "esgd/model_file.h"
#include "esgd/predictor.h"

static char dir[64];
static char path[128];
static char other[128];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/esgd-model-file-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.esgd", dir);
    snprintf(other, sizeof other, "%s/other.esgd", dir);
    return 0;
}

static int remove_dir(void **state)
{
    (void)state;
    char tmp[160];
    unlink(path);
    unlink(other);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    snprintf(tmp, sizeof tmp, "%s/norm.csv", dir);
    unlink(tmp);
    rmdir(dir);
    return 0;
}

static model_spec parse(const char *text, const char *input, uint32_t classes)
{
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    snprintf(cfg.model, sizeof cfg.model, "%s", text);
    snprintf(cfg.input, sizeof cfg.input, "%s", input);
    cfg.classes = classes;
    model_spec spec;
    esgd_error err = {0};
    assert_int_equal(job_model_spec(&cfg, &spec, &err), ESGD_OK);
    return spec;
}

/* A file description with seeded parameters (biases nudged off zero, so
 * every parameter's bits matter); params is malloc'd. */
static model_file sample(const char *text, const char *input, uint32_t classes, uint64_t seed)
{
    model_spec spec = parse(text, input, classes);
    esgd_error err = {0};
    esgd_model *m = model_new(&spec, 1, &err);
    assert_non_null(m);
    model_init_params(m, seed);
    model_file f = {.run = 0x8000000000000001ull | seed << 8, .round = 29, .classes = classes,
                    .num_params = spec.num_params, .test_accuracy = 0.9123f};
    snprintf(f.job, sizeof f.job, "test-job");
    snprintf(f.model, sizeof f.model, "%s", text);
    snprintf(f.input, sizeof f.input, "%s", input);
    f.params = malloc((size_t)f.num_params * sizeof *f.params);
    assert_non_null(f.params);
    for (uint32_t i = 0; i < f.num_params; i++)
        f.params[i] = m->params[i] + (float)i * 1e-7f;
    model_free(m);
    return f;
}

static uint8_t *slurp(const char *p, size_t *size)
{
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = malloc((size_t)n + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return data;
}

static void spill(const char *p, const uint8_t *data, size_t size)
{
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, size, f), size);
    fclose(f);
}

/* Reading p fails with status (any when 0), and the message names p and
 * holds `words` (when not NULL). */
static void expect_error(const char *p, esgd_status status, const char *words)
{
    model_file g;
    esgd_error err = {0};
    esgd_status st = model_file_read(p, &g, &err);
    if (st == ESGD_OK || (status && st != status) || !strstr(err.message, p) || (words && !strstr(err.message, words)))
        fail_msg("%s: expected %s%s%s, got %s: %s", p, status ? esgd_status_name(status) : "an error",
                 words ? " about " : "", words ? words : "", esgd_status_name(st), err.message);
    assert_null(g.params);
}

static void round_trip(const char *text, const char *input, uint32_t classes, bool with_accuracy)
{
    model_file f = sample(text, input, classes, 7);
    if (!with_accuracy)
        f.test_accuracy = NAN;
    esgd_error err = {0};
    assert_int_equal(model_file_write(path, &f, &err), ESGD_OK);
    model_file g;
    if (model_file_read(path, &g, &err) != ESGD_OK)
        fail_msg("%s", err.message);
    assert_string_equal(g.job, f.job);
    assert_true(g.run == f.run);
    assert_int_equal(g.round, f.round);
    assert_string_equal(g.model, f.model);
    assert_string_equal(g.input, f.input);
    assert_int_equal(g.classes, classes);
    assert_int_equal(g.num_params, f.num_params);
    assert_int_equal(g.spec.num_params, f.num_params);
    assert_memory_equal(g.params, f.params, (size_t)f.num_params * sizeof(float));
    if (with_accuracy)
        assert_memory_equal(&g.test_accuracy, &f.test_accuracy, sizeof(float));
    else
        assert_true(isnan(g.test_accuracy));
    assert_int_equal(g.norm_count, 0);
    assert_null(g.norm);
    model_file_destroy(&g);
    free(f.params);
}

static void test_round_trip_lenet_and_a_user_spec(void **state)
{
    (void)state;
    round_trip("lenet", "28x28", 10, true);
    round_trip("conv 4 5, relu, maxpool 2, dense 10", "28x28", 10, false);
    round_trip("conv1d 3 5 same, tanh, maxpool 2, dense 4", "2x16", 4, true);
    /* Nothing is left behind but the file. */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);
}

static void test_every_damage_is_reported(void **state)
{
    (void)state;
    model_file f = sample("dense 3", "4", 3, 1);
    esgd_error err = {0};
    assert_int_equal(model_file_write(path, &f, &err), ESGD_OK);
    free(f.params);
    size_t size;
    uint8_t *good = slurp(path, &size);
    uint8_t *bad = malloc(size + 40);
    assert_non_null(bad);
    /* A changed byte anywhere, the checksum included. */
    for (size_t i = 0; i < size; i++) {
        memcpy(bad, good, size);
        bad[i] ^= 0x5a;
        spill(other, bad, size);
        expect_error(other, 0, "checksum");
    }
    /* Cut anywhere. */
    for (size_t n = 0; n < size; n++) {
        spill(other, good, n);
        expect_error(other, 0, NULL);
    }
    /* Anything after the checksum: a byte, or a second checksum object. */
    memcpy(bad, good, size);
    bad[size] = 0;
    spill(other, bad, size + 1);
    expect_error(other, 0, "checksum");
    memcpy(bad + size, good + size - 34, 34);
    spill(other, bad, size + 34);
    expect_error(other, 0, NULL);
    /* Missing or a folder. */
    expect_error("/nonexistent/m.esgd", ESGD_ERR_IO, "cannot open");
    expect_error(dir, ESGD_ERR_IO, "regular");
    free(good);
    free(bad);
}

/* ------------------------------------------------ files packed by hand */

typedef struct craft {
    const char *format;
    uint32_t version;
    const char *model;
    int64_t num_params; /* < 0: the spec's */
    uint32_t params_len; /* floats in the bin; 0: num_params */
    int nan_at;         /* -1: none */
    const char *extra_key;
    const char *drop_key;
    bool accuracy_as_string;
} craft;

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* A model file of "dense 3" on input 4, 3 classes, with c's changes, its
 * checksum computed here (BLAKE2b-256, libsodium), written to `other`. */
static void write_crafted(const craft *c)
{
    const char *model = c->model ? c->model : "dense 3";
    uint32_t n = c->num_params < 0 ? 15 : (uint32_t)c->num_params;
    uint32_t len = c->params_len ? c->params_len : n;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    const char *keys[] = {"format", "version", "job", "run", "round", "model", "input", "classes",
                          "num_params", "params", "test_accuracy", "normalisation"};
    uint32_t count = 12 - (c->drop_key ? 1 : 0) + (c->extra_key ? 1 : 0);
    msgpack_pack_map(&pk, count);
    for (size_t k = 0; k < 12; k++) {
        if (c->drop_key && strcmp(keys[k], c->drop_key) == 0)
            continue;
        pack_str(&pk, keys[k]);
        switch (k) {
        case 0: pack_str(&pk, c->format ? c->format : "esgd-model"); break;
        case 1: msgpack_pack_uint32(&pk, c->version ? c->version : 1); break;
        case 2: pack_str(&pk, "crafted"); break;
        case 3: msgpack_pack_uint64(&pk, 42); break;
        case 4: msgpack_pack_uint32(&pk, 3); break;
        case 5: pack_str(&pk, model); break;
        case 6: pack_str(&pk, "4"); break;
        case 7: msgpack_pack_uint32(&pk, 3); break;
        case 8: msgpack_pack_uint32(&pk, n); break;
        case 9:
            msgpack_pack_bin(&pk, (size_t)len * 4);
            for (uint32_t i = 0; i < len; i++) {
                float v = (int)i == c->nan_at ? NAN : 0.25f * (float)i - 1.0f;
                uint32_t bits;
                memcpy(&bits, &v, 4);
                uint8_t le[4] = {(uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16), (uint8_t)(bits >> 24)};
                msgpack_pack_bin_body(&pk, le, 4);
            }
            break;
        case 10:
            if (c->accuracy_as_string)
                pack_str(&pk, "0.5");
            else
                msgpack_pack_double(&pk, 0.5);
            break;
        case 11: msgpack_pack_nil(&pk); break;
        }
    }
    if (c->extra_key) {
        pack_str(&pk, c->extra_key);
        msgpack_pack_uint8(&pk, 1);
    }
    uint8_t sum[32];
    assert_true(sodium_init() >= 0);
    crypto_generichash(sum, sizeof sum, (const uint8_t *)sb.data, sb.size, NULL, 0);
    msgpack_pack_bin(&pk, sizeof sum);
    msgpack_pack_bin_body(&pk, sum, sizeof sum);
    spill(other, (const uint8_t *)sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void test_crafted_files(void **state)
{
    (void)state;
    /* The hand-packed baseline reads: the format is what the document says. */
    write_crafted(&(craft){.num_params = -1, .nan_at = -1});
    model_file g;
    esgd_error err = {0};
    if (model_file_read(other, &g, &err) != ESGD_OK)
        fail_msg("%s", err.message);
    assert_string_equal(g.job, "crafted");
    assert_int_equal(g.num_params, 15);
    assert_true(g.params[4] == 0.0f && g.params[14] == 2.5f);
    assert_true(g.test_accuracy == 0.5f);
    model_file_destroy(&g);

    write_crafted(&(craft){.num_params = 16, .params_len = 16, .nan_at = -1});
    expect_error(other, ESGD_ERR_DIMENSION, "num_params 16");
    write_crafted(&(craft){.num_params = -1, .params_len = 14, .nan_at = -1});
    expect_error(other, ESGD_ERR_DIMENSION, "params holds 56 bytes");
    write_crafted(&(craft){.num_params = -1, .nan_at = -1, .extra_key = "bias"});
    expect_error(other, ESGD_ERR_FORMAT, "unknown key 'bias'");
    write_crafted(&(craft){.num_params = -1, .nan_at = -1, .drop_key = "round"});
    expect_error(other, ESGD_ERR_MISSING, "round");
    write_crafted(&(craft){.num_params = -1, .nan_at = -1, .model = "dense 3, dropout"});
    expect_error(other, ESGD_ERR_ARG, "dropout");
    write_crafted(&(craft){.num_params = -1, .nan_at = -1, .model = "dense 5"});
    expect_error(other, ESGD_ERR_ARG, NULL); /* ends in 5 values, not 3 classes */
    write_crafted(&(craft){.num_params = -1, .nan_at = 7});
    expect_error(other, ESGD_ERR_NONFINITE, "parameter 7");
    write_crafted(&(craft){.num_params = -1, .nan_at = -1, .version = 2});
    expect_error(other, ESGD_ERR_VERSION, "version 2");
    write_crafted(&(craft){.num_params = -1, .nan_at = -1, .format = "esgd-state"});
    expect_error(other, ESGD_ERR_FORMAT, "not an eSGD model file");
    write_crafted(&(craft){.num_params = -1, .nan_at = -1, .accuracy_as_string = true});
    expect_error(other, ESGD_ERR_TYPE, "test_accuracy");
}

static void test_write_refuses_what_read_would(void **state)
{
    (void)state;
    model_file f = sample("dense 3", "4", 3, 2);
    esgd_error err = {0};
    f.params[3] = NAN;
    assert_int_equal(model_file_write(path, &f, &err), ESGD_ERR_NONFINITE);
    assert_non_null(strstr(err.message, path));
    f.params[3] = 0;
    f.num_params = 14;
    assert_int_equal(model_file_write(path, &f, &err), ESGD_ERR_DIMENSION);
    f.num_params = 15;
    snprintf(f.job, sizeof f.job, "bad job/name");
    assert_int_equal(model_file_write(path, &f, &err), ESGD_ERR_ARG);
    snprintf(f.job, sizeof f.job, "ok");
    assert_int_equal(model_file_write("/nonexistent/dir/m.esgd", &f, &err), ESGD_ERR_IO);
    assert_int_not_equal(access(path, F_OK), 0); /* nothing written by the refusals */
    free(f.params);
}

static void test_predictions_equal_model_predict(void **state)
{
    (void)state;
    const char *specs[][2] = {{"lenet", "28x28"}, {"conv 4 5, relu, maxpool 2, dense 10", "28x28"}};
    for (size_t s = 0; s < 2; s++) {
        model_file f = sample(specs[s][0], specs[s][1], 10, 11 + s);
        esgd_error err = {0};
        assert_int_equal(model_file_write(path, &f, &err), ESGD_OK);
        esgd_predictor *p = esgd_predictor_load(path, &err);
        if (!p)
            fail_msg("%s", err.message);
        assert_int_equal(esgd_predictor_input_size(p), 784);
        assert_int_equal(esgd_predictor_classes(p), 10);
        uint32_t dims[3];
        assert_int_equal(esgd_predictor_input_dims(p, dims), 2);
        assert_true(dims[0] == 28 && dims[1] == 28);

        const uint32_t count = 1234; /* chunks of 500, 500, 234 */
        float *x = malloc((size_t)count * 784 * sizeof *x);
        float *probs = malloc((size_t)count * 10 * sizeof *probs), *want_probs = malloc((size_t)count * 10 * sizeof *probs);
        uint8_t *cls = malloc(count), *want = malloc(count);
        assert_true(x && probs && want_probs && cls && want);
        for (size_t i = 0; i < (size_t)count * 784; i++)
            x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
        assert_int_equal(esgd_predictor_predict(p, x, count, cls, probs, &err), ESGD_OK);

        model_spec spec = parse(specs[s][0], specs[s][1], 10);
        esgd_model *m = model_new(&spec, ESGD_PREDICT_CHUNK, &err);
        assert_non_null(m);
        memcpy(m->params, f.params, (size_t)f.num_params * sizeof(float));
        for (uint32_t start = 0; start < count; start += ESGD_PREDICT_CHUNK) {
            uint32_t n = count - start < ESGD_PREDICT_CHUNK ? count - start : ESGD_PREDICT_CHUNK;
            assert_int_equal(model_predict(m, x + (size_t)start * 784, n, want + start, want_probs + (size_t)start * 10),
                             ESGD_OK);
        }
        assert_memory_equal(cls, want, count);
        assert_memory_equal(probs, want_probs, (size_t)count * 10 * sizeof(float));
        /* Without probabilities, the same classes. */
        memset(cls, 0xff, count);
        assert_int_equal(esgd_predictor_predict(p, x, count, cls, NULL, &err), ESGD_OK);
        assert_memory_equal(cls, want, count);
        assert_int_equal(esgd_predictor_predict(p, x, 0, cls, NULL, &err), ESGD_ERR_ARG);

        model_free(m);
        esgd_predictor_free(p);
        free(x);
        free(probs);
        free(want_probs);
        free(cls);
        free(want);
        free(f.params);
    }
    esgd_error err = {0};
    assert_null(esgd_predictor_load("/nonexistent/m.esgd", &err));
    assert_non_null(strstr(err.message, "/nonexistent/m.esgd"));
}

static void test_normalisation(void **state)
{
    (void)state;
    /* Per value: input 4, pairs stored and applied. */
    model_file f = sample("dense 3", "4", 3, 3);
    float pairs[8] = {1, 2, -1, 0.5f, 0, 1, 10, 4};
    f.norm = pairs;
    f.norm_count = 4;
    esgd_error err = {0};
    assert_int_equal(model_file_write(path, &f, &err), ESGD_OK);
    esgd_predictor *p = esgd_predictor_load(path, &err);
    if (!p)
        fail_msg("%s", err.message);
    assert_int_equal(esgd_predictor_file(p)->norm_count, 4);
    assert_memory_equal(esgd_predictor_file(p)->norm, pairs, sizeof pairs);
    float raw[4] = {3, 0, 5, 2}, out[4];
    assert_int_equal(esgd_predictor_normalise(p, raw, out), ESGD_OK);
    assert_true(out[0] == 1.0f && out[1] == 2.0f && out[2] == 5.0f && out[3] == -2.0f);
    esgd_predictor_free(p);

    /* None: the identity. */
    f.norm = NULL;
    f.norm_count = 0;
    assert_int_equal(model_file_write(path, &f, &err), ESGD_OK);
    assert_non_null(p = esgd_predictor_load(path, &err));
    assert_int_equal(esgd_predictor_normalise(p, raw, out), ESGD_OK);
    assert_memory_equal(out, raw, sizeof raw);
    esgd_predictor_free(p);

    /* Wrong count or a std of 0: refused. */
    f.norm = pairs;
    f.norm_count = 3;
    assert_int_equal(model_file_write(path, &f, &err), ESGD_ERR_DIMENSION);
    f.norm_count = 4;
    pairs[3] = 0;
    assert_int_equal(model_file_write(path, &f, &err), ESGD_ERR_RANGE);
    free(f.params);

    /* Per channel of a window (2 channels x 3 steps), read from a CSV as esgd-import writes it. */
    model_spec spec = parse("conv1d 2 3, dense 2", "2x3", 2);
    char csv[160];
    snprintf(csv, sizeof csv, "%s/norm.csv", dir);
    FILE *c = fopen(csv, "w");
    assert_non_null(c);
    fputs("feature,mean,std\nacc_x,1,2\nacc_y,-3,0.5\n", c);
    fclose(c);
    float *norm = NULL;
    uint32_t count = 0;
    if (model_file_read_normalisation(csv, &spec, &norm, &count, &err) != ESGD_OK)
        fail_msg("%s", err.message);
    assert_int_equal(count, 2);
    float window[6] = {1, 3, 5, -3, -2, -4}, scaled[6];
    model_file_normalise(&spec, norm, count, window, scaled);
    const float expected[6] = {0, 1, 2, 0, 2, -2};
    assert_memory_equal(scaled, expected, sizeof expected);
    free(norm);
    model_spec flat = parse("dense 2", "5", 2);
    assert_int_equal(model_file_read_normalisation(csv, &flat, &norm, &count, &err), ESGD_ERR_DIMENSION);
    assert_non_null(strstr(err.message, csv));
    assert_null(norm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip_lenet_and_a_user_spec, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_every_damage_is_reported, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_crafted_files, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_write_refuses_what_read_would, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_predictions_equal_model_predict, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_normalisation, make_dir, remove_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
