/* The round functions both programs share: aggregation arithmetic, the
 * coordinator's handling of every kind of update, and agents that stay in
 * exact agreement with the coordinator through full and delta broadcasts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "esgd/agent.h"
#include "esgd/aggregator.h"
#include "esgd/codec.h"
#include "esgd/coordinator.h"
#include "esgd/rng.h"

static sparse_vector vec(uint32_t dim, uint32_t count, uint32_t *idx, float *val)
{
    return (sparse_vector){.dim = dim, .count = count, .capacity = count, .indices = idx, .values = val};
}

static void test_aggregate_is_the_mean_step_and_weighted_loss(void **state)
{
    (void)state;
    aggregator *agg = aggregator_new(8, 2, 4, NULL);
    assert_non_null(agg);
    uint32_t ia[] = {1, 3}, ib[] = {3, 5};
    float va[] = {1, 2}, vb[] = {4, 8};
    sparse_vector a = vec(8, 2, ia, va), b = vec(8, 2, ib, vb);
    assert_int_equal(aggregator_add(agg, 0, &a, 10, 1.0f, NULL), ESGD_OK);
    assert_int_equal(aggregator_add(agg, 1, &b, 30, 4.0f, NULL), ESGD_OK);
    float x[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    uint32_t changed[8];
    aggregate_result r;
    aggregator_apply(agg, x, 0.5, &r, changed); /* step lr / N = 0.25 */
    float expected[8] = {1, 0.75f, 1, -0.5f, 1, -1.0f, 1, 1};
    assert_memory_equal(x, expected, sizeof x);
    assert_int_equal(r.participants, 2);
    assert_int_equal(r.samples, 40);
    assert_true(fabs(r.loss - 3.25) < 1e-12); /* (1*10 + 4*30) / 40 */
    assert_int_equal(r.changed, 3);
    assert_int_equal(changed[0], 1);
    assert_int_equal(changed[1], 3);
    assert_int_equal(changed[2], 5);
    /* The slots are empty again: a round with no update changes nothing. */
    aggregator_apply(agg, x, 0.5, &r, changed);
    assert_int_equal(r.participants, 0);
    assert_true(isnan(r.loss));
    assert_memory_equal(x, expected, sizeof x);
    aggregator_free(agg);
}

static void test_aggregate_does_not_depend_on_arrival_order(void **state)
{
    (void)state;
    enum { D = 1000, AGENTS = 5, K = 300 };
    aggregator *first = aggregator_new(D, AGENTS, K, NULL), *second = aggregator_new(D, AGENTS, K, NULL);
    static uint32_t idx[AGENTS][K];
    static float val[AGENTS][K];
    esgd_rng rng;
    rng_seed(&rng, 11, 0);
    for (int a = 0; a < AGENTS; a++)
        for (int i = 0; i < K; i++) {
            idx[a][i] = (uint32_t)(i * 3 + a % 3);
            val[a][i] = (float)rng_normal(&rng) * 1e-3f * (float)(1 + a * 1000);
        }
    for (int a = 0; a < AGENTS; a++) {
        sparse_vector v = vec(D, K, idx[a], val[a]);
        sparse_vector w = vec(D, K, idx[AGENTS - 1 - a], val[AGENTS - 1 - a]);
        assert_int_equal(aggregator_add(first, (uint32_t)a, &v, 32, 1.0f, NULL), ESGD_OK);
        assert_int_equal(aggregator_add(second, (uint32_t)(AGENTS - 1 - a), &w, 32, 1.0f, NULL), ESGD_OK);
    }
    static float x1[D], x2[D];
    aggregate_result r;
    aggregator_apply(first, x1, 0.1, &r, NULL);
    aggregator_apply(second, x2, 0.1, &r, NULL);
    assert_memory_equal(x1, x2, sizeof x1);
    aggregator_free(first);
    aggregator_free(second);
}

static void test_aggregate_refuses_bad_updates(void **state)
{
    (void)state;
    aggregator *agg = aggregator_new(8, 2, 3, NULL);
    esgd_error err = {0};
    uint32_t ok_idx[] = {0, 7}, unsorted[] = {5, 2}, out_of_range[] = {1, 8}, four[] = {0, 1, 2, 3};
    float ok_val[] = {1, 2}, nan_val[] = {1, NAN}, four_val[] = {1, 2, 3, 4};
    sparse_vector v = vec(8, 2, ok_idx, ok_val);
    assert_int_equal(aggregator_add(agg, 2, &v, 1, 1.0f, &err), ESGD_ERR_RANGE);
    v = vec(8, 2, unsorted, ok_val);
    assert_int_equal(aggregator_add(agg, 0, &v, 1, 1.0f, &err), ESGD_ERR_ORDER);
    v = vec(8, 2, out_of_range, ok_val);
    assert_int_equal(aggregator_add(agg, 0, &v, 1, 1.0f, &err), ESGD_ERR_RANGE);
    v = vec(8, 2, ok_idx, nan_val);
    assert_int_equal(aggregator_add(agg, 0, &v, 1, 1.0f, &err), ESGD_ERR_NONFINITE);
    v = vec(8, 2, ok_idx, ok_val);
    assert_int_equal(aggregator_add(agg, 0, &v, 1, INFINITY, &err), ESGD_ERR_NONFINITE);
    v = vec(9, 2, ok_idx, ok_val);
    assert_int_equal(aggregator_add(agg, 0, &v, 1, 1.0f, &err), ESGD_ERR_DIMENSION);
    v = vec(8, 4, four, four_val);
    assert_int_equal(aggregator_add(agg, 0, &v, 1, 1.0f, &err), ESGD_ERR_TOO_LARGE);
    assert_int_equal(aggregator_count(agg), 0); /* nothing refused was held */
    v = vec(8, 2, ok_idx, ok_val);
    assert_int_equal(aggregator_add(agg, 0, &v, 1, 1.0f, &err), ESGD_OK);
    assert_int_equal(aggregator_add(agg, 0, &v, 1, 1.0f, &err), ESGD_ERR_MISMATCH);
    aggregator_free(agg);
}

/* A tiny job on synthetic 28x28 images, small enough to check every round. */
typedef struct fixture {
    esgd_job_config cfg;
    esgd_dataset shard[2];
    esgd_agent *agent[2];
    esgd_coordinator *coordinator;
} fixture;

static void make_shard(esgd_dataset *ds, uint32_t count, uint64_t seed)
{
    esgd_rng rng;
    rng_seed(&rng, seed, 0);
    ds->count = count;
    ds->rows = ds->cols = 28;
    ds->pixels = malloc((size_t)count * 784);
    ds->labels = malloc(count);
    for (uint32_t i = 0; i < count; i++) {
        ds->labels[i] = (uint8_t)(i % 10);
        for (uint32_t p = 0; p < 784; p++) /* a class-dependent band makes the task learnable */
            ds->pixels[(size_t)i * 784 + p] =
                (uint8_t)((p / 78 == ds->labels[i] ? 200 : 0) + rng_below(&rng, 50));
    }
}

static int setup_job(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    job_config_defaults(&f->cfg);
    strcpy(f->cfg.job, "unit");
    f->cfg.model = MODEL_KIND_MLP;
    f->cfg.agents = 2;
    f->cfg.batch = 8;
    f->cfg.train_samples = 64;
    f->cfg.rounds = 12;
    f->cfg.sparsify.method = SPARSIFY_ESGD;
    f->cfg.sparsify.drop_ratio = 0.9;
    esgd_error err = {0};
    for (uint32_t a = 0; a < 2; a++) {
        make_shard(&f->shard[a], 32, 100 + a);
        f->agent[a] = agent_new(&f->cfg, a, &f->shard[a], &err);
        assert_non_null(f->agent[a]);
    }
    f->coordinator = coordinator_new(&f->cfg, &err);
    assert_non_null(f->coordinator);
    *state = f;
    return 0;
}

static int teardown_job(void **state)
{
    fixture *f = *state;
    coordinator_free(f->coordinator);
    for (int a = 0; a < 2; a++) {
        agent_free(f->agent[a]);
        dataset_destroy(&f->shard[a]);
    }
    free(f);
    return 0;
}

static void broadcast(fixture *f)
{
    const uint8_t *msg;
    size_t size;
    esgd_error err = {0};
    assert_int_equal(coordinator_round_model(f->coordinator, &msg, &size, &err), ESGD_OK);
    for (int a = 0; a < 2; a++)
        if (agent_apply_model(f->agent[a], msg, size, &err) != ESGD_OK)
            fail_msg("agent %d: %s", a, err.message);
}

static void test_agents_track_the_coordinator_bit_for_bit(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    uint32_t d = job_dimension(&f->cfg);
    float first_loss = 0, last_loss = 0;
    while (!coordinator_done(f->coordinator)) {
        broadcast(f);
        for (int a = 0; a < 2; a++) {
            assert_memory_equal(agent_params(f->agent[a]), coordinator_params(f->coordinator), d * sizeof(float));
            assert_int_equal(agent_current_round(f->agent[a]), coordinator_round(f->coordinator));
            const uint8_t *msg;
            size_t size;
            assert_int_equal(agent_compute_update(f->agent[a], &msg, &size, &err), ESGD_OK);
            assert_int_equal(agent_last_count(f->agent[a]), 10177); /* ceil(0.1 * 101,770) */
            assert_int_equal(coordinator_receive_update(f->coordinator, msg, size, &err), UPDATE_ACCEPTED);
        }
        round_summary s;
        coordinator_close_round(f->coordinator, &s);
        assert_int_equal(s.result.participants, 2);
        const float *history = coordinator_loss_history(f->coordinator);
        if (s.round >= 1)
            assert_int_equal(s.loss_fell, history[s.round] < history[s.round - 1]);
        if (s.round == 0)
            first_loss = (float)s.result.loss;
        last_loss = (float)s.result.loss;
    }
    broadcast(f); /* the final model, done = 1 */
    for (int a = 0; a < 2; a++) {
        assert_true(agent_job_done(f->agent[a]));
        assert_memory_equal(agent_params(f->agent[a]), coordinator_params(f->coordinator), d * sizeof(float));
    }
    assert_true(last_loss < first_loss);
    const coordinator_counters *c = coordinator_get_counters(f->coordinator);
    assert_int_equal(c->accepted, 24);
    /* After round 0 the broadcasts were deltas, far smaller than full models. */
    assert_true(c->broadcast_bytes < 13ull * d * 4 / 2);
}

static void test_every_kind_of_update_is_counted(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    const uint8_t *msg;
    size_t size;
    broadcast(f);
    assert_int_equal(agent_compute_update(f->agent[0], &msg, &size, &err), ESGD_OK);
    uint8_t *round0 = malloc(size);
    memcpy(round0, msg, size);
    size_t round0_size = size;

    assert_int_equal(coordinator_receive_update(f->coordinator, round0, round0_size, &err), UPDATE_ACCEPTED);
    assert_int_equal(coordinator_receive_update(f->coordinator, round0, round0_size, &err), UPDATE_DUPLICATE);
    static const uint8_t garbage[] = {0xc1, 0x00, 0xff};
    assert_int_equal(coordinator_receive_update(f->coordinator, garbage, sizeof garbage, &err), UPDATE_REJECTED);
    assert_int_equal(coordinator_receive_update(f->coordinator, round0, round0_size / 2, &err), UPDATE_REJECTED);
    assert_int_equal(coordinator_receive_update(f->coordinator, NULL, 0, &err), UPDATE_REJECTED);

    /* Hand-made updates: wrong job, unknown agent, a future round. */
    uint32_t idx[] = {0};
    float val[] = {0.5f};
    update_msg u = {.round = 0, .agent = 1, .samples = 8, .loss = 1.0f, .grad = vec(101770, 1, idx, val)};
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, &err), ESGD_OK);
    size_t hand_made_bytes = 0;
    strcpy(u.job, "other");
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, &err), UPDATE_REJECTED);
    hand_made_bytes += buf.size;
    strcpy(u.job, "unit");
    u.agent = 7;
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, &err), UPDATE_REJECTED);
    hand_made_bytes += buf.size;
    u.agent = 1;
    u.round = 5;
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, &err), UPDATE_EARLY);
    hand_made_bytes += buf.size;

    round_summary s;
    coordinator_close_round(f->coordinator, &s);
    assert_int_equal(s.result.participants, 1); /* only agent 0 reported */
    assert_int_equal(coordinator_receive_update(f->coordinator, round0, round0_size, &err), UPDATE_LATE);

    const coordinator_counters *c = coordinator_get_counters(f->coordinator);
    assert_int_equal(c->accepted, 1);
    assert_int_equal(c->duplicate, 1);
    assert_int_equal(c->early, 1);
    assert_int_equal(c->late, 1);
    assert_int_equal(c->rejected[ESGD_ERR_MISMATCH], 1);
    assert_int_equal(c->rejected[ESGD_ERR_RANGE], 1);
    uint64_t rejected = 0;
    for (int i = 0; i < ESGD_STATUS_COUNT; i++)
        rejected += c->rejected[i];
    assert_int_equal(rejected, 5);
    /* round0 arrived whole three times: accepted, duplicate, late. */
    assert_int_equal(c->uplink_bytes, 3 * round0_size + round0_size / 2 + sizeof garbage + hand_made_bytes);
    buffer_destroy(&buf);
    free(round0);
}

static void test_agent_refuses_a_delta_it_cannot_apply(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    const uint8_t *msg;
    size_t size;
    uint32_t d = job_dimension(&f->cfg);
    /* Round 0 (full) reaches agent 0 only; round 1 (delta) then refers to a
     * model agent 1 never had. */
    assert_int_equal(coordinator_round_model(f->coordinator, &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(f->agent[0], msg, size, &err), ESGD_OK);
    assert_int_equal(agent_compute_update(f->agent[0], &msg, &size, &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(f->coordinator, msg, size, &err), UPDATE_ACCEPTED);
    round_summary s;
    coordinator_close_round(f->coordinator, &s);
    assert_int_equal(coordinator_round_model(f->coordinator, &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(f->agent[1], msg, size, &err), ESGD_ERR_MISMATCH);
    assert_false(agent_has_model(f->agent[1]));
    /* The retained full model brings it up to date. */
    assert_int_equal(coordinator_full_model(f->coordinator, &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(f->agent[1], msg, size, &err), ESGD_OK);
    assert_memory_equal(agent_params(f->agent[1]), coordinator_params(f->coordinator), d * sizeof(float));
    assert_int_equal(agent_current_round(f->agent[1]), 1);
}

static void test_same_round_same_update(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    /* A second agent 0, as after a restart: same model, same round, same data
     * and same random stream give the same bytes. */
    esgd_agent *twin = agent_new(&f->cfg, 0, &f->shard[0], &err);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(coordinator_round_model(f->coordinator, &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(f->agent[0], msg, size, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(twin, msg, size, &err), ESGD_OK);
    const uint8_t *m1, *m2;
    size_t s1, s2;
    assert_int_equal(agent_compute_update(f->agent[0], &m1, &s1, &err), ESGD_OK);
    assert_int_equal(agent_compute_update(twin, &m2, &s2, &err), ESGD_OK);
    assert_int_equal(s1, s2);
    assert_memory_equal(m1, m2, s1);
    agent_free(twin);
}

static void test_bad_construction_is_an_error(void **state)
{
    (void)state;
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    esgd_error err = {0};
    esgd_dataset empty = {0};
    assert_null(agent_new(&cfg, 0, &empty, &err));
    assert_int_equal(err.status, ESGD_ERR_ARG);
    esgd_dataset shard;
    make_shard(&shard, 4, 1);
    assert_null(agent_new(&cfg, 4, &shard, &err)); /* ids are 0..3 */
    cfg.batch = 0;
    assert_null(agent_new(&cfg, 0, &shard, &err));
    assert_null(coordinator_new(&cfg, &err));
    dataset_destroy(&shard);
}

/* One full round: broadcast, every agent answers, close. */
static void run_round(fixture *f)
{
    esgd_error err = {0};
    broadcast(f);
    for (int a = 0; a < 2; a++) {
        const uint8_t *msg;
        size_t size;
        assert_int_equal(agent_compute_update(f->agent[a], &msg, &size, &err), ESGD_OK);
        assert_int_equal(coordinator_receive_update(f->coordinator, msg, size, &err), UPDATE_ACCEPTED);
    }
    round_summary s;
    coordinator_close_round(f->coordinator, &s);
}

static void temp_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "/tmp/esgd-rounds-%ld-%s", (long)getpid(), name);
}

static void test_coordinator_checkpoint_resumes_exactly(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    char path[128];
    temp_path(path, sizeof path, "coordinator.ckpt");
    uint32_t d = job_dimension(&f->cfg);
    for (int r = 0; r < 5; r++)
        run_round(f);
    assert_int_equal(coordinator_save(f->coordinator, path, &err), ESGD_OK);

    esgd_coordinator *restored = coordinator_new(&f->cfg, &err);
    assert_non_null(restored);
    assert_int_equal(coordinator_restore(restored, path, &err), ESGD_OK);
    assert_int_equal(coordinator_round(restored), 5);
    assert_memory_equal(coordinator_params(restored), coordinator_params(f->coordinator), d * sizeof(float));
    assert_memory_equal(coordinator_loss_history(restored), coordinator_loss_history(f->coordinator),
                        5 * sizeof(float));
    assert_memory_equal(coordinator_get_counters(restored), coordinator_get_counters(f->coordinator),
                        sizeof(coordinator_counters));
    /* The first broadcast after a restore is full, so any agent can apply it. */
    const uint8_t *msg;
    size_t size;
    assert_int_equal(coordinator_round_model(restored, &msg, &size, &err), ESGD_OK);
    esgd_agent *fresh = agent_new(&f->cfg, 0, &f->shard[0], &err);
    assert_int_equal(agent_apply_model(fresh, msg, size, &err), ESGD_OK);
    assert_memory_equal(agent_params(fresh), coordinator_params(f->coordinator), d * sizeof(float));
    agent_free(fresh);

    /* A checkpoint of another configuration is refused and changes nothing. */
    esgd_job_config other = f->cfg;
    other.seed = 99;
    esgd_coordinator *stranger = coordinator_new(&other, &err);
    assert_int_equal(coordinator_restore(stranger, path, &err), ESGD_ERR_MISMATCH);
    assert_int_equal(coordinator_round(stranger), 0);
    /* A damaged checkpoint is refused too. */
    FILE *file = fopen(path, "r+b");
    fseek(file, 100, SEEK_SET);
    fputc(0x5a, file);
    fclose(file);
    assert_int_not_equal(coordinator_restore(stranger, path, &err), ESGD_OK);
    assert_int_equal(coordinator_round(stranger), 0);
    assert_int_equal(coordinator_restore(stranger, "/nonexistent/x.ckpt", &err), ESGD_ERR_IO);
    coordinator_free(stranger);
    coordinator_free(restored);
    unlink(path);
}

static void test_agent_state_resumes_exactly(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    char path[128];
    temp_path(path, sizeof path, "agent.state");
    for (int r = 0; r < 4; r++)
        run_round(f);
    assert_int_equal(agent_save(f->agent[0], path, &err), ESGD_OK);

    /* A restarted agent 0: restores its state, gets the retained full model. */
    esgd_agent *restarted = agent_new(&f->cfg, 0, &f->shard[0], &err);
    assert_int_equal(agent_restore(restarted, path, &err), ESGD_OK);
    uint32_t answered = 0;
    assert_true(agent_answered_round(restarted, &answered));
    assert_int_equal(answered, 3);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(coordinator_full_model(f->coordinator, &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(restarted, msg, size, &err), ESGD_OK);
    uint8_t *round4_full = malloc(size); /* msg is reused by the next broadcast */
    memcpy(round4_full, msg, size);
    size_t round4_size = size;
    broadcast(f);
    const uint8_t *m1, *m2;
    size_t s1, s2;
    assert_int_equal(agent_compute_update(f->agent[0], &m1, &s1, &err), ESGD_OK);
    assert_int_equal(agent_compute_update(restarted, &m2, &s2, &err), ESGD_OK);
    assert_int_equal(s1, s2);
    assert_memory_equal(m1, m2, s1);
    /* Asked again for the same round, an agent returns the same bytes. */
    const uint8_t *again;
    size_t again_size;
    assert_int_equal(agent_compute_update(restarted, &again, &again_size, &err), ESGD_OK);
    assert_int_equal(again_size, s2);
    assert_memory_equal(again, m1, s1);
    /* The same round's model again changes nothing. */
    assert_int_equal(agent_apply_model(restarted, round4_full, round4_size, &err), ESGD_OK);
    assert_int_equal(agent_current_round(restarted), 4);
    free(round4_full);

    /* Another agent's state, or a damaged file, is refused and changes nothing. */
    esgd_agent *other = agent_new(&f->cfg, 1, &f->shard[1], &err);
    assert_int_equal(agent_restore(other, path, &err), ESGD_ERR_MISMATCH);
    assert_false(agent_answered_round(other, NULL));
    FILE *file = fopen(path, "r+b");
    fseek(file, -20, SEEK_END);
    fputc(0x5a, file);
    fclose(file);
    esgd_agent *third = agent_new(&f->cfg, 0, &f->shard[0], &err);
    assert_int_not_equal(agent_restore(third, path, &err), ESGD_OK);
    assert_false(agent_answered_round(third, NULL));
    agent_free(third);
    agent_free(other);
    agent_free(restarted);
    unlink(path);
}

static void test_norm_bound_rejects_or_clips(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    uint32_t idx[] = {3, 7};
    float val[] = {30.0f, 40.0f}; /* norm 50 */
    update_msg u = {.round = 0, .agent = 0, .samples = 8, .loss = 1.0f, .grad = vec(101770, 2, idx, val)};
    strcpy(u.job, "unit");
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, &err), ESGD_OK);
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_OK);

    assert_int_equal(coordinator_set_norm_bound(f->coordinator, -1, NORM_ACTION_CLIP, &err), ESGD_ERR_ARG);
    assert_int_equal(coordinator_set_norm_bound(f->coordinator, 10, NORM_ACTION_REJECT, &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, &err), UPDATE_REJECTED);
    assert_int_equal(err.status, ESGD_ERR_RANGE);
    assert_int_equal(coordinator_get_counters(f->coordinator)->rejected[ESGD_ERR_RANGE], 1);

    /* Clipped to norm 10: the step moves x by lr * (6, 8) / N, N = 1. */
    assert_int_equal(coordinator_set_norm_bound(f->coordinator, 10, NORM_ACTION_CLIP, &err), ESGD_OK);
    float before3 = coordinator_params(f->coordinator)[3], before7 = coordinator_params(f->coordinator)[7];
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, &err), UPDATE_ACCEPTED);
    assert_int_equal(coordinator_get_counters(f->coordinator)->clipped, 1);
    round_summary s;
    coordinator_close_round(f->coordinator, &s);
    assert_true(fabsf(before3 - coordinator_params(f->coordinator)[3] - (float)(s.lr * 6.0)) < 1e-5f);
    assert_true(fabsf(before7 - coordinator_params(f->coordinator)[7] - (float)(s.lr * 8.0)) < 1e-5f);

    /* Under the bound, nothing changes. */
    u.round = 1;
    assert_int_equal(coordinator_set_norm_bound(f->coordinator, 100, NORM_ACTION_REJECT, &err), ESGD_OK);
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, &err), UPDATE_ACCEPTED);
    assert_int_equal(coordinator_get_counters(f->coordinator)->clipped, 1);
    buffer_destroy(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aggregate_is_the_mean_step_and_weighted_loss),
        cmocka_unit_test(test_aggregate_does_not_depend_on_arrival_order),
        cmocka_unit_test(test_aggregate_refuses_bad_updates),
        cmocka_unit_test_setup_teardown(test_agents_track_the_coordinator_bit_for_bit, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_every_kind_of_update_is_counted, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_agent_refuses_a_delta_it_cannot_apply, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_same_round_same_update, setup_job, teardown_job),
        cmocka_unit_test(test_bad_construction_is_an_error),
        cmocka_unit_test_setup_teardown(test_coordinator_checkpoint_resumes_exactly, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_agent_state_resumes_exactly, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_norm_bound_rejects_or_clips, setup_job, teardown_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
