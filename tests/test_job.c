/* The job options table: parsing from flags and the environment, ranges,
 * enum names, validation and the round/epoch/lr arithmetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "esgd/codec.h"
#include "esgd/job.h"
#include "esgd/sparsifier.h"

static void test_defaults_match_the_paper_setup(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    assert_string_equal(cfg.model, "lenet");
    assert_string_equal(cfg.input, "28x28");
    assert_int_equal(cfg.classes, 10);
    assert_int_equal(cfg.sparsify.method, SPARSIFY_ESGD);
    assert_true(cfg.sparsify.drop_ratio == 0.875);
    assert_true(cfg.sparsify.beta == 0.9f);
    assert_int_equal(cfg.agents, 4);
    assert_int_equal(cfg.batch, 32);
    assert_true(cfg.lr == 0.1 && cfg.lr_decay == 0.5);
    assert_int_equal(job_config_validate(&cfg, NULL), ESGD_OK);
}

static void test_set_parses_every_type(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    esgd_error err = {0};
    assert_int_equal(job_config_set(&cfg, "model", "mlp", &err), ESGD_OK);
    assert_int_equal(job_config_set(&cfg, "method", "topk", &err), ESGD_OK);
    assert_int_equal(job_config_set(&cfg, "drop", "0.99", &err), ESGD_OK);
    assert_int_equal(job_config_set(&cfg, "value-mode", "grad+residual", &err), ESGD_OK);
    assert_int_equal(job_config_set(&cfg, "seed", "18446744073709551615", &err), ESGD_OK);
    assert_int_equal(job_config_set(&cfg, "job", "lab-7.run_2", &err), ESGD_OK);
    assert_string_equal(cfg.model, "mlp");
    assert_int_equal(cfg.sparsify.method, SPARSIFY_TOPK);
    assert_true(cfg.sparsify.drop_ratio == 0.99);
    assert_int_equal(cfg.sparsify.value_mode, ESGD_VALUE_GRAD_PLUS_RESIDUAL);
    assert_true(cfg.seed == UINT64_MAX);
    assert_string_equal(cfg.job, "lab-7.run_2");
    assert_string_equal(sparsify_method_name(cfg.sparsify.method), "topk");
}

static void test_set_rejects_bad_values_with_a_reason(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    esgd_error err = {0};
    static const struct {
        const char *name, *value;
        esgd_status expected;
    } cases[] = {
        {"method", "sparse", ESGD_ERR_RANGE}, {"drop", "1", ESGD_ERR_RANGE},     {"drop", "-0.1", ESGD_ERR_RANGE},
        {"drop", "abc", ESGD_ERR_ARG},        {"drop", "nan", ESGD_ERR_NONFINITE}, {"agents", "0", ESGD_ERR_RANGE},
        {"agents", "-3", ESGD_ERR_ARG},       {"batch", "12x", ESGD_ERR_ARG},     {"eps", "0", ESGD_ERR_RANGE},
        {"beta", "1.5", ESGD_ERR_RANGE},      {"job", "a/b", ESGD_ERR_RANGE},     {"job", "", ESGD_ERR_RANGE},
        {"colour", "red", ESGD_ERR_ARG},      {"seed", "99999999999999999999", ESGD_ERR_ARG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        esgd_job_config before = cfg;
        esgd_status st = job_config_set(&cfg, cases[i].name, cases[i].value, &err);
        if (st != cases[i].expected)
            fail_msg("--%s %s: got %s, expected %s", cases[i].name, cases[i].value, esgd_status_name(st),
                     esgd_status_name(cases[i].expected));
        assert_true(strlen(err.message) > 0);
        assert_memory_equal(&before, &cfg, sizeof cfg); /* a refused value changes nothing */
    }
}

static void test_environment_sets_options(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    esgd_error err = {0};
    setenv("ESGD_LR_DECAY", "0.25", 1);
    setenv("ESGD_H_INCREMENT", "absgrad", 1);
    assert_int_equal(job_config_from_env(&cfg, &err), ESGD_OK);
    assert_true(cfg.lr_decay == 0.25);
    assert_int_equal(cfg.sparsify.h_increment, ESGD_H_INCREMENT_ABSGRAD);
    setenv("ESGD_AGENTS", "many", 1);
    assert_int_equal(job_config_from_env(&cfg, &err), ESGD_ERR_ARG);
    assert_non_null(strstr(err.message, "ESGD_AGENTS"));
    unsetenv("ESGD_AGENTS");
    unsetenv("ESGD_LR_DECAY");
    unsetenv("ESGD_H_INCREMENT");
}

static void test_dgc_options(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    esgd_error err = {0};
    assert_true(cfg.sparsify.dgc_momentum == 0.9f);
    assert_true(cfg.sparsify.dgc_clip == SPARSIFIER_CONFIG_DGC_CLIP);
    assert_int_equal(cfg.sparsify.dgc_warmup_rounds, SPARSIFIER_CONFIG_DGC_WARMUP);
    assert_int_equal(job_config_set(&cfg, "method", "dgc", &err), ESGD_OK);
    assert_int_equal(job_config_set(&cfg, "dgc-momentum", "0.5", &err), ESGD_OK);
    assert_int_equal(job_config_set(&cfg, "dgc-clip", "2.5", &err), ESGD_OK);
    assert_int_equal(job_config_set(&cfg, "dgc-warmup-rounds", "0", &err), ESGD_OK);
    assert_int_equal(cfg.sparsify.method, SPARSIFY_DGC);
    assert_string_equal(sparsify_method_name(cfg.sparsify.method), "dgc");
    assert_true(cfg.sparsify.dgc_momentum == 0.5f && cfg.sparsify.dgc_clip == 2.5f);
    assert_int_equal(cfg.sparsify.dgc_warmup_rounds, 0);
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_OK);
    esgd_job_config before = cfg;
    assert_int_equal(job_config_set(&cfg, "dgc-momentum", "1", &err), ESGD_ERR_RANGE); /* m < 1 */
    assert_int_equal(job_config_set(&cfg, "dgc-clip", "-1", &err), ESGD_ERR_RANGE);
    assert_int_equal(job_config_set(&cfg, "dgc-warmup-rounds", "-5", &err), ESGD_ERR_ARG);
    assert_memory_equal(&before, &cfg, sizeof cfg);
    cfg.sparsify.dgc_momentum = 1.0f; /* set behind the table's back (the codec path checks too) */
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_ERR_ARG);
}

/* down-drop auto: twice the coordinates of one agent's update, off where
 * agents send no fixed count; the configuration message carries the number. */
static void test_down_drop_auto(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    esgd_error err = {0};
    const job_option *opt = job_option_find("down-drop");
    assert_non_null(opt);
    assert_true(job_down_drop(&cfg) == 0.0); /* the default is off */
    assert_int_equal(job_config_set(&cfg, "down-drop", "auto", &err), ESGD_OK);
    assert_true(cfg.down_drop == JOB_DOWN_DROP_AUTO);
    assert_int_equal(job_config_set(&cfg, "drop", "0.99", &err), ESGD_OK);
    assert_true(job_down_drop(&cfg) == 1.0 - 2.0 * (1.0 - 0.99));
    assert_true(job_config_get_float(&cfg, opt) == job_down_drop(&cfg));
    uint32_t up = sparsifier_keep_count(61706, 0.99), down = sparsifier_keep_count(61706, job_down_drop(&cfg));
    assert_in_range(down, 2 * up - 1, 2 * up); /* twice, up to rounding */
    assert_int_equal(job_config_set(&cfg, "drop", "0.4", &err), ESGD_OK);
    assert_true(job_down_drop(&cfg) == 0.0); /* 1 - 2 (1 - 0.4) < 0 */
    assert_int_equal(job_config_set(&cfg, "drop", "0.99", &err), ESGD_OK);
    assert_int_equal(job_config_set(&cfg, "method", "dense", &err), ESGD_OK);
    assert_true(job_down_drop(&cfg) == 0.0);
    assert_int_equal(job_config_set(&cfg, "method", "threshold", &err), ESGD_OK);
    assert_true(job_down_drop(&cfg) == 0.0);
    assert_int_equal(job_config_set(&cfg, "method", "dgc", &err), ESGD_OK);
    /* -1 is only auto's marker: as a number it is out of range. */
    assert_int_equal(job_config_set(&cfg, "down-drop", "-1", &err), ESGD_ERR_RANGE);
    assert_true(cfg.down_drop == JOB_DOWN_DROP_AUTO);

    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, &err), ESGD_OK);
    assert_int_equal(codec_encode_config(&buf, &cfg, &err), ESGD_OK);
    codec_decoder *dec = codec_decoder_new(NULL);
    assert_non_null(dec);
    esgd_job_config got;
    assert_int_equal(codec_decode_config(dec, buf.data, buf.size, &got, &err), ESGD_OK);
    assert_true(got.down_drop == 1.0 - 2.0 * (1.0 - 0.99));
    codec_decoder_free(dec);
    buffer_destroy(&buf);
}

static void test_rounds_epochs_and_learning_rate(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    /* 60,000 examples, 4 agents x 32: ceil(60000 / 128) = 469 rounds an epoch. */
    assert_int_equal(job_rounds_per_epoch(&cfg), 469);
    assert_int_equal(job_total_rounds(&cfg), 938);
    assert_int_equal(job_epoch_of_round(&cfg, 468), 0);
    assert_int_equal(job_epoch_of_round(&cfg, 469), 1);
    assert_true(job_lr_at_round(&cfg, 0) == 0.1);
    assert_true(job_lr_at_round(&cfg, 469) == 0.05);
    cfg.rounds = 10;
    assert_int_equal(job_total_rounds(&cfg), 10);
    assert_int_equal(job_dimension(&cfg), 61706);
}

/* |a - b| <= eps, naming both values (this cmocka has no assert_double_equal). */
#define assert_close(a, b, eps)                                                                           \
    do {                                                                                                   \
        double a_ = (a), b_ = (b);                                                                         \
        if (!(fabs(a_ - b_) <= (eps)))                                                                     \
            fail_msg("%s = %.17g, expected %.17g (within %g)", #a, a_, b_, (double)(eps));                 \
    } while (0)

/* The learning rate of before the schedules existed: lr * lr_decay^epoch. */
static double old_lr_at_round(const esgd_job_config *cfg, uint32_t round)
{
    return cfg->lr * pow(cfg->lr_decay, (double)job_epoch_of_round(cfg, round));
}

static void test_default_schedule_is_the_old_step_rule_bit_for_bit(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    assert_int_equal(cfg.lr_schedule, LR_SCHEDULE_STEP);
    assert_int_equal(cfg.warmup_rounds, 0);
    assert_string_equal(lr_schedule_name(cfg.lr_schedule), "step");
    static const struct {
        double lr, decay;
        uint32_t batch, epochs;
    } setups[] = {{0.1, 0.5, 32, 2}, {0.037, 0.7, 10, 5}, {1e-3, 1.0, 64, 3}, {0.3, 0.9, 7, 4}};
    for (size_t s = 0; s < sizeof setups / sizeof setups[0]; s++) {
        cfg.lr = setups[s].lr;
        cfg.lr_decay = setups[s].decay;
        cfg.batch = setups[s].batch;
        cfg.epochs = setups[s].epochs;
        uint32_t total = job_total_rounds(&cfg);
        for (uint32_t t = 0; t <= total; t++) {
            double now = job_lr_at_round(&cfg, t), old = old_lr_at_round(&cfg, t);
            if (memcmp(&now, &old, sizeof now) != 0)
                fail_msg("setup %zu round %u: %.17g, the old rule gives %.17g", s, t, now, old);
        }
    }
}

static void test_each_schedule_at_chosen_rounds(void **state)
{
    (void)state;
    esgd_job_config cfg;
    esgd_error err = {0};
    job_config_defaults(&cfg); /* lr 0.1, 469 rounds an epoch, 938 in all */
    const double pi = 3.14159265358979323846;

    /* step: first round, inside epoch 0, first and last round of epoch 1. */
    assert_int_equal(job_config_set(&cfg, "lr-schedule", "step", &err), ESGD_OK);
    assert_true(job_lr_at_round(&cfg, 0) == 0.1);
    assert_true(job_lr_at_round(&cfg, 468) == 0.1);
    assert_true(job_lr_at_round(&cfg, 469) == 0.05);
    assert_true(job_lr_at_round(&cfg, 937) == 0.05);

    /* constant: lr everywhere, lr_decay ignored. */
    assert_int_equal(job_config_set(&cfg, "lr-schedule", "constant", &err), ESGD_OK);
    assert_string_equal(lr_schedule_name(cfg.lr_schedule), "constant");
    assert_true(job_lr_at_round(&cfg, 0) == 0.1);
    assert_true(job_lr_at_round(&cfg, 469) == 0.1);
    assert_true(job_lr_at_round(&cfg, 937) == 0.1);

    /* cosine over T = 938: lr at 0, lr/2 half-way, just above 0 at the end, decreasing. */
    assert_int_equal(job_config_set(&cfg, "lr-schedule", "cosine", &err), ESGD_OK);
    assert_string_equal(lr_schedule_name(cfg.lr_schedule), "cosine");
    assert_true(job_lr_at_round(&cfg, 0) == 0.1);
    assert_close(job_lr_at_round(&cfg, 469), 0.05, 1e-15);
    double last = job_lr_at_round(&cfg, 937);
    assert_close(last, 0.1 * 0.5 * (1.0 + cos(pi * 937.0 / 938.0)), 1e-18);
    assert_true(last > 0.0 && last < 1e-6);
    for (uint32_t t = 1; t < 938; t++)
        assert_true(job_lr_at_round(&cfg, t) < job_lr_at_round(&cfg, t - 1));

    /* cosine with a 38-round warm-up: ramps to lr, then the cosine over U = 900. */
    assert_int_equal(job_config_set(&cfg, "warmup-rounds", "38", &err), ESGD_OK);
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_OK);
    assert_close(job_lr_at_round(&cfg, 0), 0.1 / 38.0, 1e-15);
    assert_close(job_lr_at_round(&cfg, 18), 0.1 * 19.0 / 38.0, 1e-15);
    assert_true(job_lr_at_round(&cfg, 37) == 0.1); /* (37 + 1) / 38 = 1 */
    assert_true(job_lr_at_round(&cfg, 38) == 0.1); /* u = 0: the cosine starts at lr */
    assert_close(job_lr_at_round(&cfg, 38 + 450), 0.05, 1e-15);
    assert_close(job_lr_at_round(&cfg, 937), 0.1 * 0.5 * (1.0 + cos(pi * 899.0 / 900.0)), 1e-18);
    for (uint32_t t = 1; t < 38; t++)
        assert_true(job_lr_at_round(&cfg, t) > job_lr_at_round(&cfg, t - 1));

    /* The warm-up applies to step and constant as well. */
    cfg.lr_schedule = LR_SCHEDULE_STEP;
    cfg.warmup_rounds = 100;
    assert_close(job_lr_at_round(&cfg, 0), 0.001, 1e-17);
    assert_close(job_lr_at_round(&cfg, 49), 0.05, 1e-15);
    assert_true(job_lr_at_round(&cfg, 99) == 0.1);
    assert_true(job_lr_at_round(&cfg, 100) == 0.1);
    assert_true(job_lr_at_round(&cfg, 469) == 0.05);
    cfg.lr_schedule = LR_SCHEDULE_CONSTANT;
    cfg.rounds = 10; /* rounds instead of epochs: T = 10 */
    cfg.warmup_rounds = 4;
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_OK);
    assert_close(job_lr_at_round(&cfg, 0), 0.025, 1e-17);
    assert_close(job_lr_at_round(&cfg, 2), 0.075, 1e-16);
    assert_true(job_lr_at_round(&cfg, 3) == 0.1 && job_lr_at_round(&cfg, 9) == 0.1);
    cfg.lr_schedule = LR_SCHEDULE_COSINE; /* U = 6: u = 3 is half-way */
    assert_close(job_lr_at_round(&cfg, 7), 0.05, 1e-15);
    assert_close(job_lr_at_round(&cfg, 9), 0.1 * 0.5 * (1.0 + cos(pi * 5.0 / 6.0)), 1e-17);
}

static void test_schedule_options_reject_bad_values(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    esgd_error err = {0};
    esgd_job_config before = cfg;
    assert_int_equal(job_config_set(&cfg, "lr-schedule", "linear", &err), ESGD_ERR_RANGE);
    assert_non_null(strstr(err.message, "step | constant | cosine"));
    assert_int_equal(job_config_set(&cfg, "lr-schedule", "", &err), ESGD_ERR_RANGE);
    assert_int_equal(job_config_set(&cfg, "warmup-rounds", "-1", &err), ESGD_ERR_ARG);
    assert_int_equal(job_config_set(&cfg, "warmup-rounds", "ten", &err), ESGD_ERR_ARG);
    assert_memory_equal(&before, &cfg, sizeof cfg);

    /* The warm-up must end before the job does: 938 rounds by default. */
    assert_int_equal(job_config_set(&cfg, "warmup-rounds", "938", &err), ESGD_OK); /* in range, ... */
    err.message[0] = '\0';
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_ERR_ARG); /* ... but not with this job */
    assert_non_null(strstr(err.message, "warmup-rounds = 938"));
    assert_non_null(strstr(err.message, "938 rounds"));
    cfg.warmup_rounds = 937;
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_OK);
    cfg.rounds = 20; /* --rounds sets the length instead */
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_ERR_ARG);
    cfg.warmup_rounds = 20;
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_ERR_ARG);
    cfg.warmup_rounds = 19;
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_OK);
    cfg.lr_schedule = (lr_schedule_kind)7; /* set behind the table's back */
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_ERR_ARG);

    /* The environment reaches them like any option. */
    job_config_defaults(&cfg);
    setenv("ESGD_LR_SCHEDULE", "cosine", 1);
    setenv("ESGD_WARMUP_ROUNDS", "50", 1);
    assert_int_equal(job_config_from_env(&cfg, &err), ESGD_OK);
    assert_int_equal(cfg.lr_schedule, LR_SCHEDULE_COSINE);
    assert_int_equal(cfg.warmup_rounds, 50);
    setenv("ESGD_LR_SCHEDULE", "exp", 1);
    assert_int_equal(job_config_from_env(&cfg, &err), ESGD_ERR_RANGE);
    assert_non_null(strstr(err.message, "ESGD_LR_SCHEDULE"));
    unsetenv("ESGD_LR_SCHEDULE");
    unsetenv("ESGD_WARMUP_ROUNDS");
}

static void test_validate_catches_combinations(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    esgd_error err = {0};
    cfg.train_samples = 3;
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_ERR_ARG);
    job_config_defaults(&cfg);
    cfg.epochs = 0;
    assert_int_equal(job_config_validate(&cfg, &err), ESGD_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_match_the_paper_setup),
        cmocka_unit_test(test_set_parses_every_type),
        cmocka_unit_test(test_set_rejects_bad_values_with_a_reason),
        cmocka_unit_test(test_environment_sets_options),
        cmocka_unit_test(test_dgc_options),
        cmocka_unit_test(test_down_drop_auto),
        cmocka_unit_test(test_rounds_epochs_and_learning_rate),
        cmocka_unit_test(test_validate_catches_combinations),
        cmocka_unit_test(test_default_schedule_is_the_old_step_rule_bit_for_bit),
        cmocka_unit_test(test_each_schedule_at_chosen_rounds),
        cmocka_unit_test(test_schedule_options_reject_bad_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
