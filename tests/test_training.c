/* End-to-end training on real MNIST through the in-process simulation (the
 * agents' and coordinator's real round functions and messages), with a small
 * budget and an accuracy floor. Skipped when data/mnist is not fetched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "test_skip.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "esgd/simulation.h"

static const char *data_dir(void)
{
    const char *dir = getenv("ESGD_DATA_DIR");
    return dir ? dir : "data/mnist";
}

static int have_mnist(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte", data_dir());
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    return f != NULL;
}

/* Trains for `rounds` rounds and returns the test accuracy on the first
 * `eval` test examples; checks that every agent ends on the coordinator's
 * model and that the uplink is what the method promises. */
static float train(sparsify_method method, double drop, uint32_t rounds, uint32_t eval, double *compression)
{
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    cfg.sparsify.method = method;
    cfg.sparsify.drop_ratio = drop;
    cfg.rounds = rounds;
    esgd_error err = {0};
    esgd_simulation *sim = simulation_new(&cfg, data_dir(), &err);
    if (!sim)
        fail_msg("simulation_new: %s", err.message);
    esgd_coordinator *c = simulation_coordinator(sim);
    while (!coordinator_done(c)) {
        round_summary s;
        if (simulation_round(sim, &s, &err) != ESGD_OK)
            fail_msg("round: %s", err.message);
        assert_int_equal(s.result.participants, 4);
    }
    uint32_t d = job_dimension(&cfg);
    for (uint32_t a = 0; a < 4; a++)
        assert_memory_equal(agent_params(simulation_agent(sim, a)), coordinator_params(c), d * sizeof(float));
    float accuracy = 0, loss = 0;
    assert_int_equal(coordinator_evaluate(c, simulation_test_set(sim), eval, &accuracy, &loss, &err), ESGD_OK);
    const coordinator_counters *counters = coordinator_get_counters(c);
    *compression = (double)rounds * 4 * d * 4 / (double)counters->uplink_bytes;
    print_message("%s drop %.3f: %u rounds, test accuracy %.4f, compression %.1fx\n", sparsify_method_name(method),
                  drop, rounds, accuracy, *compression);
    simulation_free(sim);
    return accuracy;
}

static void test_dense_lenet_learns_mnist(void **state)
{
    (void)state;
    if (!have_mnist())
        test_skip();
    double compression;
    float accuracy = train(SPARSIFY_DENSE, 0.0, 150, 2000, &compression);
    assert_true(accuracy > 0.85f);
    assert_true(compression > 0.99 && compression <= 1.0);
}

static void test_esgd_lenet_learns_mnist_with_an_eighth_of_the_bytes(void **state)
{
    (void)state;
    if (!have_mnist())
        test_skip();
    double compression;
    float accuracy = train(SPARSIFY_ESGD, 0.875, 150, 2000, &compression);
    assert_true(accuracy > 0.70f);
    /* k = d/8 values of 4 bytes plus compact indices: well over 4x. */
    assert_true(compression > 4.0);
}

/* An honest update over the coordinator's norm bound (a gradient spike) is
 * refused and counted, and the round closes without it, as over MQTT: the
 * simulation goes on rather than stopping the run. Here a bound of 1e-9
 * refuses every update of the first round; lifted, the next round takes
 * them all again. */
static void test_updates_over_the_norm_bound_are_left_out(void **state)
{
    (void)state;
    if (!have_mnist())
        test_skip();
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    cfg.rounds = 3;
    esgd_error err = {0};
    esgd_simulation *sim = simulation_new(&cfg, data_dir(), &err);
    if (!sim)
        fail_msg("simulation_new: %s", err.message);
    esgd_coordinator *c = simulation_coordinator(sim);
    assert_int_equal(coordinator_set_norm_bound(c, 1e-9, NORM_ACTION_REJECT, &err), ESGD_OK);
    round_summary s;
    assert_int_equal(simulation_round(sim, &s, &err), ESGD_OK);
    assert_int_equal(s.result.participants, 0);
    assert_int_equal(coordinator_get_counters(c)->rejected[ESGD_ERR_RANGE], 4);
    assert_int_equal(coordinator_set_norm_bound(c, -1, NORM_ACTION_REJECT, &err), ESGD_OK);
    assert_int_equal(simulation_round(sim, &s, &err), ESGD_OK);
    assert_int_equal(s.result.participants, 4);
    assert_int_equal(coordinator_get_counters(c)->accepted, 4);
    simulation_free(sim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_lenet_learns_mnist),
        cmocka_unit_test(test_esgd_lenet_learns_mnist_with_an_eighth_of_the_bytes),
        cmocka_unit_test(test_updates_over_the_norm_bound_are_left_out),
    };
    return test_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
