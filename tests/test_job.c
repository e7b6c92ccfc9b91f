/* The job options table: parsing from flags and the environment, ranges,
 * enum names, validation and the round/epoch/lr arithmetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "esgd/job.h"
#include "esgd/sparsifier.h"

static void test_defaults_match_the_paper_setup(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    assert_int_equal(cfg.model, MODEL_KIND_LENET);
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
    assert_int_equal(cfg.model, MODEL_KIND_MLP);
    assert_int_equal(cfg.sparsify.method, SPARSIFY_TOPK);
    assert_true(cfg.sparsify.drop_ratio == 0.99);
    assert_int_equal(cfg.sparsify.value_mode, ESGD_VALUE_GRAD_PLUS_RESIDUAL);
    assert_true(cfg.seed == UINT64_MAX);
    assert_string_equal(cfg.job, "lab-7.run_2");
    assert_string_equal(sparsify_method_name(cfg.sparsify.method), "topk");
    assert_string_equal(model_kind_name(cfg.model), "mlp");
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
        cmocka_unit_test(test_rounds_epochs_and_learning_rate),
        cmocka_unit_test(test_validate_catches_combinations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
