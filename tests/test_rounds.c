/* The round functions both programs share: aggregation arithmetic, the
 * coordinator's handling of every kind of update, agents that stay in exact
 * agreement with the coordinator through full and delta broadcasts, and the
 * signed wire format: what a message with a bad or borrowed signature, the
 * wrong topic, another run or version 1 gets. */
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
#include "esgd/envelope.h"
#include "esgd/rng.h"
#include "esgd/state_file.h"
#include <msgpack.h>

/* Every message is signed, with the test keys (test_keys.h). */
#define MAX_TEST_AGENTS 8
#define TEST_KEY_AGENTS MAX_TEST_AGENTS
#include "test_keys.h"
#include "test_shard.h"

/* Encodes u (f32 values) and signs the body with signer's key. */
static void encode_signed_update(esgd_buffer *buf, const update_msg *u, const signing_key *signer)
{
    esgd_error err = {0};
    if (codec_encode_update(buf, u, VALUE_FORMAT_F32, &err) != ESGD_OK || envelope_sign(buf, signer, &err) != ESGD_OK)
        fail_msg("signed update: %s", err.message);
}

/* A message on agent's topic for the coordinator's open round. */
static update_outcome receive_in_open_round(esgd_coordinator *c, const uint8_t *data, size_t size, uint32_t agent,
                                            esgd_error *err)
{
    return coordinator_receive_update(c, data, size, agent, coordinator_round(c), err);
}

/* The body of a signed message: everything before the signature. */
static size_t body_of(size_t size)
{
    assert_true(size > ENVELOPE_SIGNATURE_BYTES);
    return size - ENVELOPE_SIGNATURE_BYTES;
}

static sparse_vector vec(uint32_t dim, uint32_t count, uint32_t *idx, float *val)
{
    return (sparse_vector){.dim = dim, .count = count, .capacity = count, .indices = idx, .values = val};
}

static void test_aggregate_is_the_mean_step_and_median_loss(void **state)
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
    assert_true(r.loss == 2.5); /* the median of 1 and 4, whatever the sample counts */
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

/* The compressed downlink applies the `keep` largest coordinates of step +
 * residual, ties to the lower index, and holds the rest back: over rounds,
 * what the model took plus what is still held is every step exactly. */
static void test_downlink_applies_the_largest_and_holds_the_rest(void **state)
{
    (void)state;
    aggregator *agg = aggregator_new(8, 1, 8, NULL);
    esgd_error err = {0};
    assert_int_equal(aggregator_set_downlink(agg, 8, &err), ESGD_ERR_ARG); /* keeps everything: not compressed */
    assert_int_equal(aggregator_set_downlink(agg, 2, &err), ESGD_OK);
    assert_int_equal(aggregator_set_downlink(agg, 3, &err), ESGD_ERR_ARG); /* once */
    const float *residual = aggregator_downlink_residual(agg);
    uint32_t all[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    float first[8] = {1, -5, 2, 0.5f, 3, 0, 0, -4};
    sparse_vector u = vec(8, 8, all, first);
    float x[8] = {0};
    uint32_t changed[8];
    aggregate_result r;
    assert_int_equal(aggregator_add(agg, 0, &u, 32, 1.0f, NULL), ESGD_OK);
    aggregator_apply(agg, x, 1.0, &r, changed); /* step = the update itself */
    assert_memory_equal(x, ((float[]){0, 5, 0, 0, 0, 0, 0, 4}), sizeof x);
    assert_int_equal(r.changed, 2);
    assert_int_equal(changed[0], 1);
    assert_int_equal(changed[1], 7);
    assert_memory_equal(residual, ((float[]){1, 0, 2, 0.5f, 3, 0, 0, 0}), 8 * sizeof(float));

    /* Next round: a step only at 5, but the held-back 3 and 2 are larger. */
    uint32_t at5[1] = {5};
    float small[1] = {0.25f};
    u = vec(8, 1, at5, small);
    assert_int_equal(aggregator_add(agg, 0, &u, 32, 1.0f, NULL), ESGD_OK);
    aggregator_apply(agg, x, 1.0, &r, changed);
    assert_memory_equal(x, ((float[]){0, 5, -2, 0, -3, 0, 0, 4}), sizeof x);
    assert_memory_equal(residual, ((float[]){1, 0, 0, 0.5f, 0, 0.25f, 0, 0}), 8 * sizeof(float));
    float taken_plus_held = 0, steps = 0;
    for (int j = 0; j < 8; j++) {
        taken_plus_held += -x[j] + residual[j];
        steps += first[j];
    }
    assert_true(taken_plus_held == steps + small[0]);

    /* Equal magnitudes: the lower indices win. */
    float equal[3] = {2, -2, 2};
    uint32_t idx3[3] = {3, 5, 6};
    u = vec(8, 3, idx3, equal);
    assert_int_equal(aggregator_add(agg, 0, &u, 32, 1.0f, NULL), ESGD_OK);
    aggregator_apply(agg, x, 1.0, &r, changed); /* v at 3: 2.5, at 5: -1.75, at 6: 2, at 0: 1 */
    assert_int_equal(changed[0], 3);
    assert_int_equal(changed[1], 6);
    float tie[2] = {1, 1};
    uint32_t idx2[2] = {2, 4};
    u = vec(8, 2, idx2, tie);
    assert_int_equal(aggregator_add(agg, 0, &u, 32, 1.0f, NULL), ESGD_OK);
    aggregator_apply(agg, x, 1.0, &r, changed); /* |v| = 1.75 at 5; 1 at 0, 2 and 4: 0 wins the tie */
    assert_int_equal(r.changed, 2);
    assert_int_equal(changed[0], 0);
    assert_int_equal(changed[1], 5);
    aggregator_free(agg);
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


static int setup_job(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    job_config_defaults(&f->cfg);
    strcpy(f->cfg.job, "unit");
    strcpy(f->cfg.model, "mlp");
    f->cfg.agents = 2;
    f->cfg.batch = 8;
    f->cfg.train_samples = 64;
    f->cfg.rounds = 12;
    f->cfg.sparsify.method = SPARSIFY_ESGD;
    f->cfg.sparsify.drop_ratio = 0.9;
    f->cfg.run = TEST_RUN;
    esgd_error err = {0};
    for (uint32_t a = 0; a < 2; a++) {
        make_shard(&f->shard[a], 32, 100 + a);
        f->agent[a] = agent_new(&f->cfg, a, &f->shard[a], &err);
        assert_non_null(f->agent[a]);
        agent_set_keys(f->agent[a], &agent_secret[a], &coordinator_public);
    }
    f->coordinator = coordinator_new(&f->cfg, &err);
    assert_non_null(f->coordinator);
    coordinator_set_keys(f->coordinator, &coordinator_secret, agent_public);
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
            assert_int_equal(receive_in_open_round(f->coordinator, msg, size, (uint32_t)a, &err), UPDATE_ACCEPTED);
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

/* Expects coordinator_receive_update to refuse the message for `reason`. */
static void expect_rejected(esgd_coordinator *c, const uint8_t *data, size_t size, uint32_t agent, uint32_t round,
                            esgd_status reason)
{
    esgd_error err = {0};
    update_outcome got = coordinator_receive_update(c, data, size, agent, round, &err);
    if (got != UPDATE_REJECTED || err.status != reason)
        fail_msg("agent %u round %u, %zu bytes: %s (%s), expected rejected (%s)", agent, round, size,
                 update_outcome_name(got), err.message, esgd_status_name(reason));
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

    assert_int_equal(coordinator_receive_update(f->coordinator, round0, round0_size, 0, 0, &err), UPDATE_ACCEPTED);
    assert_int_equal(coordinator_receive_update(f->coordinator, round0, round0_size, 0, 0, &err), UPDATE_DUPLICATE);
    /* Bytes without their sender's signature never reach the decoder ... */
    static const uint8_t garbage[] = {0xc1, 0x00, 0xff};
    expect_rejected(f->coordinator, garbage, sizeof garbage, 0, 0, ESGD_ERR_SIGNATURE);
    expect_rejected(f->coordinator, round0, round0_size / 2, 0, 0, ESGD_ERR_SIGNATURE);
    expect_rejected(f->coordinator, NULL, 0, 0, 0, ESGD_ERR_SIGNATURE);
    /* ... signed by the topic's agent, the same bytes fail where they are
     * wrong: not msgpack, and a body cut in half. */
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, codec_update_bound(job_dimension(&f->cfg)), &err), ESGD_OK);
    memcpy(buf.data, garbage, sizeof garbage);
    buf.size = sizeof garbage;
    assert_int_equal(envelope_sign(&buf, &agent_secret[1], &err), ESGD_OK);
    expect_rejected(f->coordinator, buf.data, buf.size, 1, 0, ESGD_ERR_FORMAT);
    size_t signed_rejected = buf.size;
    memcpy(buf.data, round0, body_of(round0_size) / 2);
    buf.size = body_of(round0_size) / 2;
    assert_int_equal(envelope_sign(&buf, &agent_secret[1], &err), ESGD_OK);
    expect_rejected(f->coordinator, buf.data, buf.size, 1, 0, ESGD_ERR_TRUNCATED);
    signed_rejected += buf.size;

    /* Hand-made updates, each signed by its topic's agent: wrong job, an
     * agent the job does not have, a future round. */
    uint32_t idx[] = {0};
    float val[] = {0.5f};
    update_msg u = {.run = TEST_RUN, .round = 0, .agent = 1, .samples = 8, .loss = 1.0f,
                    .grad = vec(101770, 1, idx, val)};
    size_t hand_made_rejected = 0;
    strcpy(u.job, "other");
    encode_signed_update(&buf, &u, &agent_secret[1]);
    expect_rejected(f->coordinator, buf.data, buf.size, 1, 0, ESGD_ERR_MISMATCH);
    hand_made_rejected += buf.size;
    strcpy(u.job, "unit");
    u.agent = 7;
    encode_signed_update(&buf, &u, &agent_secret[7]);
    expect_rejected(f->coordinator, buf.data, buf.size, 7, 0, ESGD_ERR_RANGE);
    hand_made_rejected += buf.size;
    u.agent = 1;
    u.round = 5;
    encode_signed_update(&buf, &u, &agent_secret[1]);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, 1, 5, &err), UPDATE_EARLY);
    size_t early_bytes = buf.size;

    round_summary s;
    coordinator_close_round(f->coordinator, &s);
    assert_int_equal(s.result.participants, 1); /* only agent 0 reported */
    assert_int_equal(coordinator_receive_update(f->coordinator, round0, round0_size, 0, 0, &err), UPDATE_LATE);

    const coordinator_counters *c = coordinator_get_counters(f->coordinator);
    assert_int_equal(c->accepted, 1);
    assert_int_equal(c->duplicate, 1);
    assert_int_equal(c->early, 1);
    assert_int_equal(c->late, 1);
    assert_int_equal(c->rejected[ESGD_ERR_SIGNATURE], 3);
    assert_int_equal(c->rejected[ESGD_ERR_FORMAT], 1);
    assert_int_equal(c->rejected[ESGD_ERR_TRUNCATED], 1);
    assert_int_equal(c->rejected[ESGD_ERR_MISMATCH], 1);
    assert_int_equal(c->rejected[ESGD_ERR_RANGE], 1);
    uint64_t rejected = 0;
    for (int i = 0; i < ESGD_STATUS_COUNT; i++)
        rejected += c->rejected[i];
    assert_int_equal(rejected, 7);
    /* round0 arrived whole three times: accepted, duplicate, late. Only the
     * accepted copy is uplink; what was refused or not used is apart. */
    assert_int_equal(c->uplink_bytes, round0_size);
    assert_int_equal(c->accepted_uplink_bytes, round0_size);
    assert_int_equal(c->rejected_bytes, round0_size / 2 + sizeof garbage + signed_rejected + hand_made_rejected);
    assert_int_equal(c->unused_uplink_bytes, 2 * round0_size + early_bytes);
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
    assert_int_equal(coordinator_receive_update(f->coordinator, msg, size, 0, 0, &err), UPDATE_ACCEPTED);
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
    agent_set_keys(twin, &agent_secret[0], &coordinator_public);
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
    assert_int_equal(err.status, ESGD_ERR_DIMENSION);
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
        assert_int_equal(receive_in_open_round(f->coordinator, msg, size, (uint32_t)a, &err), UPDATE_ACCEPTED);
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
    coordinator_set_keys(restored, &coordinator_secret, agent_public);
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
    agent_set_keys(fresh, &agent_secret[0], &coordinator_public);
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
    agent_set_keys(restarted, &agent_secret[0], &coordinator_public);
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
    agent_set_keys(other, &agent_secret[1], &coordinator_public);
    assert_int_equal(agent_restore(other, path, &err), ESGD_ERR_MISMATCH);
    assert_false(agent_answered_round(other, NULL));
    FILE *file = fopen(path, "r+b");
    fseek(file, -20, SEEK_END);
    fputc(0x5a, file);
    fclose(file);
    esgd_agent *third = agent_new(&f->cfg, 0, &f->shard[0], &err);
    agent_set_keys(third, &agent_secret[0], &coordinator_public);
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
    update_msg u = {.run = TEST_RUN, .round = 0, .agent = 0, .samples = 8, .loss = 1.0f,
                    .grad = vec(101770, 2, idx, val)};
    strcpy(u.job, "unit");
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, &err), ESGD_OK);
    encode_signed_update(&buf, &u, &agent_secret[0]);

    assert_int_equal(coordinator_set_norm_bound(f->coordinator, NAN, NORM_ACTION_CLIP, &err), ESGD_ERR_ARG);
    assert_int_equal(coordinator_set_norm_bound(f->coordinator, INFINITY, NORM_ACTION_CLIP, &err), ESGD_ERR_ARG);
    assert_int_equal(coordinator_set_norm_bound(f->coordinator, 10, NORM_ACTION_REJECT, &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, 0, 0, &err), UPDATE_REJECTED);
    assert_int_equal(err.status, ESGD_ERR_RANGE);
    assert_int_equal(coordinator_get_counters(f->coordinator)->rejected[ESGD_ERR_RANGE], 1);

    /* Clipped to norm 10: the step moves x by lr * (6, 8) / N, N = 1. */
    assert_int_equal(coordinator_set_norm_bound(f->coordinator, 10, NORM_ACTION_CLIP, &err), ESGD_OK);
    float before3 = coordinator_params(f->coordinator)[3], before7 = coordinator_params(f->coordinator)[7];
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, 0, 0, &err), UPDATE_ACCEPTED);
    assert_int_equal(coordinator_get_counters(f->coordinator)->clipped, 1);
    round_summary s;
    coordinator_close_round(f->coordinator, &s);
    assert_true(fabsf(before3 - coordinator_params(f->coordinator)[3] - (float)(s.lr * 6.0)) < 1e-5f);
    assert_true(fabsf(before7 - coordinator_params(f->coordinator)[7] - (float)(s.lr * 8.0)) < 1e-5f);

    /* Under the bound, nothing changes. */
    u.round = 1;
    assert_int_equal(coordinator_set_norm_bound(f->coordinator, 100, NORM_ACTION_REJECT, &err), ESGD_OK);
    encode_signed_update(&buf, &u, &agent_secret[0]);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, 0, 1, &err), UPDATE_ACCEPTED);
    assert_int_equal(coordinator_get_counters(f->coordinator)->clipped, 1);
    buffer_destroy(&buf);
}

/* A coordinator of the unit job with `agents` agents, for hand-made updates. */
static esgd_coordinator *unit_coordinator(uint32_t agents, double lr)
{
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    strcpy(cfg.job, "unit");
    strcpy(cfg.model, "mlp");
    cfg.agents = agents;
    cfg.batch = 8;
    cfg.train_samples = 64;
    cfg.rounds = 12;
    cfg.lr = lr;
    cfg.lr_decay = 1;
    cfg.sparsify.method = SPARSIFY_ESGD;
    cfg.sparsify.drop_ratio = 0.9;
    cfg.run = TEST_RUN;
    assert_true(agents <= MAX_TEST_AGENTS);
    esgd_error err = {0};
    esgd_coordinator *c = coordinator_new(&cfg, &err);
    if (!c)
        fail_msg("coordinator_new: %s", err.message);
    coordinator_set_keys(c, &coordinator_secret, agent_public);
    return c;
}

/* Encodes a hand-made update for the coordinator's open round, signs it
 * with the agent's key and sends it on the agent's topic; *size receives the
 * message size. */
static update_outcome send_hand_made(esgd_coordinator *c, uint32_t agent, uint32_t samples, float loss,
                                     uint32_t count, uint32_t *idx, float *val, size_t *size, esgd_error *err)
{
    update_msg u = {.run = coordinator_config(c)->run, .round = coordinator_round(c), .agent = agent,
                    .samples = samples, .loss = loss,
                    .grad = vec(job_dimension(coordinator_config(c)), count, idx, val)};
    strcpy(u.job, coordinator_config(c)->job);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, err), ESGD_OK);
    encode_signed_update(&buf, &u, &agent_secret[agent]);
    update_outcome got = receive_in_open_round(c, buf.data, buf.size, agent, err);
    *size = buf.size;
    buffer_destroy(&buf);
    return got;
}

/* The same, checking the outcome; returns the message size. */
static size_t send_update(esgd_coordinator *c, uint32_t agent, uint32_t samples, float loss, uint32_t count,
                          uint32_t *idx, float *val, update_outcome expected)
{
    esgd_error err = {0};
    size_t size;
    update_outcome got = send_hand_made(c, agent, samples, loss, count, idx, val, &size, &err);
    if (got != expected)
        fail_msg("agent %u: %s, expected %s (%s)", agent, update_outcome_name(got), update_outcome_name(expected),
                 err.message);
    return size;
}

static void assert_params_finite(const esgd_coordinator *c)
{
    const float *x = coordinator_params(c);
    for (uint32_t j = 0; j < job_dimension(coordinator_config(c)); j++)
        if (!isfinite(x[j]))
            fail_msg("parameter %u is %g", j, (double)x[j]);
}

static void test_aggregate_drops_updates_until_finite(void **state)
{
    (void)state;
    aggregator *agg = aggregator_new(4, 3, 2, NULL);
    uint32_t idx[] = {0, 1};
    float huge[] = {-3e38f, -3e38f}, bigger[] = {-3e38f, -3.1e38f}, small[] = {-1, -2};
    sparse_vector a = vec(4, 2, idx, huge), b = vec(4, 2, idx, bigger), h = vec(4, 2, idx, small);
    assert_int_equal(aggregator_add(agg, 0, &a, 8, 1.0f, NULL), ESGD_OK);
    assert_int_equal(aggregator_add(agg, 1, &h, 8, 1.0f, NULL), ESGD_OK);
    assert_int_equal(aggregator_add(agg, 2, &b, 8, 1.0f, NULL), ESGD_OK);
    /* x + (6.1e38 + 3) / 3 is finite in double but not in float, as is x + 6.1e38 / 2. */
    float x[4] = {2e38f, 2e38f, 1, 1};
    aggregate_result r;
    aggregator_apply(agg, x, 1.0, &r, NULL);
    assert_int_equal(r.dropped, 2);
    assert_int_equal(aggregator_dropped(agg)[0], 2); /* the largest norm first */
    assert_int_equal(aggregator_dropped(agg)[1], 0);
    assert_int_equal(r.participants, 1);
    float expected[4] = {2e38f + 1, 2e38f + 2, 1, 1};
    assert_memory_equal(x, expected, sizeof x);
    aggregator_free(agg);
}

/* The attack of the security review: agents send huge finite values. The
 * float sum of two 3e38 is Inf; the model must never become non-finite, and
 * what was left out is counted. Two of three agents attack, so in round 0
 * they are the median and pass the norm bound. */
static void test_huge_finite_updates_leave_the_model_finite(void **state)
{
    (void)state;
    esgd_coordinator *c = unit_coordinator(3, 1.0);
    esgd_error err = {0};
    uint32_t idx[] = {5, 9};
    float huge[] = {-3e38f, 3e38f}, honest[] = {0.01f, -0.02f};
    uint64_t excluded = 0, huge_bytes = 0, refused_on_arrival = 0;
    for (int round = 0; round < 4; round++) {
        uint32_t held = 3;
        for (uint32_t a = 0; a < 3; a += 2) {
            size_t size;
            update_outcome o = send_hand_made(c, a, 8, 1.0f, 2, idx, huge, &size, &err);
            /* Once the honest norms are half of the history, the bound refuses them on arrival. */
            assert_true(o == UPDATE_ACCEPTED || (o == UPDATE_REJECTED && err.status == ESGD_ERR_RANGE));
            refused_on_arrival += o == UPDATE_REJECTED;
            held -= o == UPDATE_REJECTED;
            huge_bytes += size;
        }
        send_update(c, 1, 8, 1.0f, 2, idx, honest, UPDATE_ACCEPTED);
        round_summary s;
        coordinator_close_round(c, &s);
        assert_params_finite(c);
        for (uint32_t i = 0; i < s.excluded_count; i++) {
            assert_int_equal(s.excluded[i].reason, ESGD_ERR_NONFINITE);
            assert_int_not_equal(s.excluded[i].agent, 1); /* the honest update stays */
        }
        assert_int_equal(s.result.dropped, s.excluded_count);
        assert_int_equal(s.result.participants, held - s.excluded_count);
        excluded += s.excluded_count;
    }
    assert_true(excluded >= 2);
    const coordinator_counters *k = coordinator_get_counters(c);
    assert_int_equal(k->dropped_nonfinite, excluded);
    assert_int_equal(k->rejected[ESGD_ERR_NONFINITE], excluded);
    assert_int_equal(k->rejected[ESGD_ERR_RANGE], refused_on_arrival);
    assert_int_equal(k->accepted, 12 - excluded - refused_on_arrival);
    assert_true(k->rejected_bytes > 0 && k->rejected_bytes <= huge_bytes);
    /* The checkpoint of such a job restores. */
    char path[128];
    temp_path(path, sizeof path, "attacked.ckpt");
    assert_int_equal(coordinator_save(c, path, &err), ESGD_OK);
    esgd_coordinator *restored = unit_coordinator(3, 1.0);
    if (coordinator_restore(restored, path, &err) != ESGD_OK)
        fail_msg("restore: %s", err.message);
    assert_int_equal(coordinator_round(restored), 4);
    coordinator_free(restored);
    coordinator_free(c);
    unlink(path);
}

/* Agent 0's real update for the open round, values scaled by `factor` and
 * signed again with agent 0's key. */
static size_t scaled_update(fixture *f, uint32_t agent, float factor, esgd_buffer *out)
{
    esgd_error err = {0};
    const uint8_t *msg;
    size_t size;
    assert_int_equal(agent_compute_update(f->agent[agent], &msg, &size, &err), ESGD_OK);
    codec_decoder *dec = codec_decoder_new(&err);
    uint32_t d = job_dimension(&f->cfg);
    update_msg u = {.grad = {.capacity = d, .indices = malloc(d * sizeof(uint32_t)), .values = malloc(d * sizeof(float))}};
    assert_int_equal(codec_decode_update(dec, msg, body_of(size), d, &u, &err), ESGD_OK);
    for (uint32_t i = 0; i < u.grad.count; i++)
        u.grad.values[i] *= factor;
    encode_signed_update(out, &u, &agent_secret[agent]);
    free(u.grad.indices);
    free(u.grad.values);
    codec_decoder_free(dec);
    return out->size;
}

static void send_agent(fixture *f, uint32_t agent, update_outcome expected)
{
    esgd_error err = {0};
    const uint8_t *msg;
    size_t size;
    assert_int_equal(agent_compute_update(f->agent[agent], &msg, &size, &err), ESGD_OK);
    assert_int_equal(receive_in_open_round(f->coordinator, msg, size, agent, &err), expected);
}

static void test_default_bound_rejects_a_1000x_update(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 1 << 20, &err), ESGD_OK);
    /* Round 0 has no history: the bound comes from the round's own updates at close. */
    broadcast(f);
    size_t attack = scaled_update(f, 0, 1000, &buf);
    assert_int_equal(receive_in_open_round(f->coordinator, buf.data, buf.size, 0, &err), UPDATE_ACCEPTED);
    send_agent(f, 1, UPDATE_ACCEPTED);
    const coordinator_counters *k = coordinator_get_counters(f->coordinator);
    uint64_t honest = k->uplink_bytes - attack;
    round_summary s;
    coordinator_close_round(f->coordinator, &s);
    assert_int_equal(s.result.participants, 1);
    assert_int_equal(s.excluded_count, 1);
    assert_int_equal(s.excluded[0].agent, 0);
    assert_int_equal(s.excluded[0].reason, ESGD_ERR_RANGE);
    assert_true(s.excluded[0].norm > s.norm_bound && s.norm_bound > 0);
    assert_int_equal(k->accepted, 1);
    assert_int_equal(k->rejected[ESGD_ERR_RANGE], 1);
    assert_int_equal(k->uplink_bytes, honest);
    assert_int_equal(k->rejected_bytes, attack);

    /* Later rounds: 10 x the larger of the history's median and the
     * round's, at close (the whole round is needed for its median). */
    run_round(f);
    broadcast(f);
    scaled_update(f, 0, 1000, &buf);
    assert_int_equal(receive_in_open_round(f->coordinator, buf.data, buf.size, 0, &err), UPDATE_ACCEPTED);
    send_agent(f, 1, UPDATE_ACCEPTED);
    coordinator_close_round(f->coordinator, &s);
    assert_int_equal(s.result.participants, 1);
    assert_int_equal(s.excluded_count, 1);
    assert_int_equal(s.excluded[0].agent, 0);
    assert_int_equal(k->rejected[ESGD_ERR_RANGE], 2);
    /* Honest updates pass, the same agent's included. */
    run_round(f);
    assert_int_equal(k->rejected[ESGD_ERR_RANGE], 2);
    assert_int_equal(k->rejected_bytes, attack + buf.size);
    buffer_destroy(&buf);
}

/* When every honest gradient grows together (a loss spike at a high
 * learning rate), the round's own median grows with it: the bound follows
 * them instead of refusing them round after round against a history of
 * small norms, which once stopped a run's training for good. */
static void test_relative_bound_follows_honest_growth(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    esgd_buffer buf[2];
    for (int r = 0; r < 3; r++)
        run_round(f);
    const coordinator_counters *k = coordinator_get_counters(f->coordinator);
    for (int round = 0; round < 2; round++) {
        broadcast(f);
        for (uint32_t a = 0; a < 2; a++) {
            assert_int_equal(buffer_init(&buf[a], 1 << 20, &err), ESGD_OK);
            scaled_update(f, a, 50, &buf[a]); /* 5 x the bound the history alone would set */
            assert_int_equal(receive_in_open_round(f->coordinator, buf[a].data, buf[a].size, a, &err),
                             UPDATE_ACCEPTED);
        }
        round_summary s;
        coordinator_close_round(f->coordinator, &s);
        assert_int_equal(s.result.participants, 2);
        assert_int_equal(s.excluded_count, 0);
        buffer_destroy(&buf[0]);
        buffer_destroy(&buf[1]);
    }
    assert_int_equal(k->rejected[ESGD_ERR_RANGE], 0);
}

static void test_relative_bound_can_clip_or_be_off(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 1 << 20, &err), ESGD_OK);
    assert_int_equal(coordinator_set_norm_bound(f->coordinator, 0, NORM_ACTION_CLIP, &err), ESGD_OK);
    broadcast(f);
    scaled_update(f, 0, 1000, &buf);
    assert_int_equal(receive_in_open_round(f->coordinator, buf.data, buf.size, 0, &err), UPDATE_ACCEPTED);
    send_agent(f, 1, UPDATE_ACCEPTED);
    round_summary s;
    coordinator_close_round(f->coordinator, &s);
    assert_int_equal(s.result.participants, 2);
    assert_int_equal(coordinator_get_counters(f->coordinator)->clipped, 1);
    /* Off: a 1000x update goes in as it is. */
    assert_int_equal(coordinator_set_norm_bound(f->coordinator, -1, NORM_ACTION_REJECT, &err), ESGD_OK);
    broadcast(f);
    scaled_update(f, 0, 1000, &buf);
    assert_int_equal(receive_in_open_round(f->coordinator, buf.data, buf.size, 0, &err), UPDATE_ACCEPTED);
    coordinator_close_round(f->coordinator, &s);
    assert_int_equal(s.result.participants, 1);
    assert_int_equal(s.norm_bound, 0);
    buffer_destroy(&buf);
}

static void test_samples_must_equal_the_batch(void **state)
{
    (void)state;
    esgd_coordinator *c = unit_coordinator(2, 0.1);
    uint32_t idx[] = {1};
    float val[] = {0.5f};
    send_update(c, 0, 4000000000u, 1.0f, 1, idx, val, UPDATE_REJECTED);
    send_update(c, 0, 7, 1.0f, 1, idx, val, UPDATE_REJECTED);
    assert_int_equal(coordinator_get_counters(c)->rejected[ESGD_ERR_RANGE], 2);
    send_update(c, 0, 8, 1.0f, 1, idx, val, UPDATE_ACCEPTED);
    coordinator_free(c);
}

static void test_loss_signal_is_the_median(void **state)
{
    (void)state;
    esgd_coordinator *c = unit_coordinator(4, 0.1);
    uint32_t idx[] = {1};
    float val[] = {0.5f};
    /* One absurd loss does not decide L_t. */
    send_update(c, 0, 8, 2.0f, 1, idx, val, UPDATE_ACCEPTED);
    send_update(c, 1, 8, 1e30f, 1, idx, val, UPDATE_ACCEPTED);
    send_update(c, 2, 8, 1.0f, 1, idx, val, UPDATE_ACCEPTED);
    round_summary s;
    coordinator_close_round(c, &s);
    assert_true(s.result.loss == 2.0);
    /* An even count: the mean of the two middle values. */
    send_update(c, 0, 8, 2.0f, 1, idx, val, UPDATE_ACCEPTED);
    send_update(c, 1, 8, 1e30f, 1, idx, val, UPDATE_ACCEPTED);
    send_update(c, 2, 8, 1.0f, 1, idx, val, UPDATE_ACCEPTED);
    send_update(c, 3, 8, 3.0f, 1, idx, val, UPDATE_ACCEPTED);
    coordinator_close_round(c, &s);
    assert_true(s.result.loss == 2.5);
    assert_true(coordinator_loss_history(c)[0] == 2.0f);
    assert_true(coordinator_loss_history(c)[1] == 2.5f);
    coordinator_free(c);
}

static void test_checkpoint_keeps_the_norm_history(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    char path[128];
    temp_path(path, sizeof path, "history.ckpt");
    for (int r = 0; r < 3; r++)
        run_round(f);
    assert_int_equal(coordinator_save(f->coordinator, path, &err), ESGD_OK);
    esgd_coordinator *restored = coordinator_new(&f->cfg, &err);
    coordinator_set_keys(restored, &coordinator_secret, agent_public);
    assert_int_equal(coordinator_restore(restored, path, &err), ESGD_OK);
    /* With the history back, a 1000x update alone in its round (no round
     * median to go by) is left out at close, as the coordinator that wrote
     * the checkpoint does; without a history it would set the scale. */
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 1 << 20, &err), ESGD_OK);
    broadcast(f);
    scaled_update(f, 0, 1000, &buf);
    round_summary s;
    assert_int_equal(coordinator_receive_update(restored, buf.data, buf.size, 0, 3, &err), UPDATE_ACCEPTED);
    coordinator_close_round(restored, &s);
    assert_int_equal(s.excluded_count, 1);
    assert_int_equal(s.result.participants, 0);
    assert_int_equal(receive_in_open_round(f->coordinator, buf.data, buf.size, 0, &err), UPDATE_ACCEPTED);
    coordinator_close_round(f->coordinator, &s);
    assert_int_equal(s.excluded_count, 1);

    /* A checkpoint from before the history and the byte counters' split:
     * every update message was in uplink_bytes. Its configuration is the
     * unsigned body, as coordinator_save writes it. */
    esgd_buffer config;
    assert_int_equal(buffer_init(&config, CODEC_CONFIG_BOUND, &err), ESGD_OK);
    assert_int_equal(codec_encode_config(&config, coordinator_config(restored), &err), ESGD_OK);
    state_writer w;
    state_writer_init(&w);
    state_put_bytes(&w, config.data, config.size);
    buffer_destroy(&config);
    state_put_u32(&w, 3);
    state_put_bytes(&w, coordinator_loss_history(f->coordinator), 3 * sizeof(float));
    const uint64_t old_counters[10] = {6, 1, 0, 0, 1000, 600, 0, 0, 0, 0}; /* accepted, duplicate, ..., uplink, accepted uplink */
    state_put_u32(&w, 10);
    for (int i = 0; i < 10; i++)
        state_put_u64(&w, old_counters[i]);
    state_put_u32(&w, ESGD_STATUS_COUNT);
    for (int i = 0; i < ESGD_STATUS_COUNT; i++)
        state_put_u64(&w, 0);
    state_put_bytes(&w, coordinator_params(f->coordinator), job_dimension(&f->cfg) * sizeof(float));
    assert_int_equal(state_file_write(path, STATE_KIND_COORDINATOR, &w, &err), ESGD_OK);
    state_writer_destroy(&w);
    esgd_coordinator *old = coordinator_new(&f->cfg, &err);
    coordinator_set_keys(old, &coordinator_secret, agent_public);
    if (coordinator_restore(old, path, &err) != ESGD_OK)
        fail_msg("older checkpoint: %s", err.message);
    assert_int_equal(coordinator_get_counters(old)->uplink_bytes, 600);
    assert_int_equal(coordinator_get_counters(old)->unused_uplink_bytes, 400);
    /* No history: the bound comes from the round's own updates, at close. */
    assert_int_equal(coordinator_receive_update(old, buf.data, buf.size, 0, 3, &err), UPDATE_ACCEPTED);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(agent_compute_update(f->agent[1], &msg, &size, &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(old, msg, size, 1, 3, &err), UPDATE_ACCEPTED);
    coordinator_close_round(old, &s);
    assert_int_equal(s.excluded_count, 1);
    assert_int_equal(s.excluded[0].agent, 0);
    buffer_destroy(&buf);
    coordinator_free(old);
    coordinator_free(restored);
    unlink(path);
}

/* ------------------------------------------------- signed messages, runs */

/* A copy of what an agent holds, to show a refused model changed nothing. */
typedef struct agent_snapshot {
    float *params;
    uint32_t round;
    bool has_model, done;
} agent_snapshot;

static agent_snapshot snapshot_agent(const esgd_agent *a, uint32_t d)
{
    agent_snapshot s = {.params = malloc((size_t)d * sizeof(float)), .round = agent_current_round(a),
                        .has_model = agent_has_model(a), .done = agent_job_done(a)};
    assert_non_null(s.params);
    memcpy(s.params, agent_params(a), (size_t)d * sizeof(float));
    return s;
}

static void assert_agent_unchanged(agent_snapshot *s, const esgd_agent *a, uint32_t d)
{
    assert_memory_equal(agent_params(a), s->params, (size_t)d * sizeof(float));
    assert_int_equal(agent_current_round(a), s->round);
    assert_int_equal(agent_has_model(a), s->has_model);
    assert_int_equal(agent_job_done(a), s->done);
    free(s->params);
}

/* A hand-made update of the unit job (one entry), signed by signer. */
static void hand_made_update(esgd_buffer *buf, uint64_t run, uint32_t agent, uint32_t round, const signing_key *signer)
{
    static uint32_t idx[] = {3};
    static float val[] = {0.25f};
    update_msg u = {.run = run, .round = round, .agent = agent, .samples = 8, .loss = 1.0f,
                    .grad = vec(101770, 1, idx, val)};
    strcpy(u.job, "unit");
    encode_signed_update(buf, &u, signer);
}

/* A full model of the unit job: every parameter `value`, signed by signer. */
static void hand_made_full_model(esgd_buffer *buf, uint32_t d, uint64_t run, uint32_t round, bool done, float value,
                                 const signing_key *signer)
{
    float *values = malloc((size_t)d * sizeof(float));
    assert_non_null(values);
    for (uint32_t i = 0; i < d; i++)
        values[i] = value;
    model_msg m = {.run = run, .round = round, .base_round = round, .lr = 0.1f, .prev_loss = NAN, .loss_fell = -1,
                   .done = done, .form = MODEL_FORM_FULL,
                   .params = {.dim = d, .count = d, .capacity = d, .values = values}};
    strcpy(m.job, "unit");
    esgd_error err = {0};
    if (codec_encode_model(buf, &m, &err) != ESGD_OK || envelope_sign(buf, signer, &err) != ESGD_OK)
        fail_msg("signed model: %s", err.message);
    free(values);
}

static void test_update_signed_by_another_agent_is_refused(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    broadcast(f);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(agent_compute_update(f->agent[1], &msg, &size, &err), ESGD_OK);
    /* Agent 1's own update published on agent 0's topic: the bytes are not agent 0's. */
    expect_rejected(f->coordinator, msg, size, 0, 0, ESGD_ERR_SIGNATURE);
    /* Agent 1 posing as agent 0: the payload says agent 0, the key is agent 1's. */
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, &err), ESGD_OK);
    hand_made_update(&buf, TEST_RUN, 0, 0, &agent_secret[1]);
    expect_rejected(f->coordinator, buf.data, buf.size, 0, 0, ESGD_ERR_SIGNATURE);
    /* Nor does the coordinator's own key make an update (only the topic's agent's does). */
    hand_made_update(&buf, TEST_RUN, 0, 0, &coordinator_secret);
    expect_rejected(f->coordinator, buf.data, buf.size, 0, 0, ESGD_ERR_SIGNATURE);
    assert_false(coordinator_has_update(f->coordinator, 0));
    assert_false(coordinator_has_update(f->coordinator, 1));
    /* On their own topics, with their own keys, both are accepted. */
    assert_int_equal(coordinator_receive_update(f->coordinator, msg, size, 1, 0, &err), UPDATE_ACCEPTED);
    hand_made_update(&buf, TEST_RUN, 0, 0, &agent_secret[0]);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, 0, 0, &err), UPDATE_ACCEPTED);
    const coordinator_counters *k = coordinator_get_counters(f->coordinator);
    assert_int_equal(k->rejected[ESGD_ERR_SIGNATURE], 3);
    assert_int_equal(k->accepted, 2);
    buffer_destroy(&buf);
}

/* A single flipped bit anywhere in a real update, body or signature, makes
 * it a message nobody signed; the original is still accepted after. */
static void test_update_with_a_flipped_bit_is_refused(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    broadcast(f);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(agent_compute_update(f->agent[0], &msg, &size, &err), ESGD_OK);
    uint8_t *copy = malloc(size);
    memcpy(copy, msg, size);
    uint64_t flipped = 0;
    for (size_t bit = 0; bit < 8 * size; bit += bit >= 8 * body_of(size) ? 1 : 251) {
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        expect_rejected(f->coordinator, copy, size, 0, 0, ESGD_ERR_SIGNATURE);
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        flipped++;
    }
    assert_true(flipped > 8 * ENVELOPE_SIGNATURE_BYTES);
    assert_int_equal(coordinator_get_counters(f->coordinator)->rejected[ESGD_ERR_SIGNATURE], flipped);
    /* One byte more or less is no better. */
    expect_rejected(f->coordinator, copy, size - 1, 0, 0, ESGD_ERR_SIGNATURE);
    expect_rejected(f->coordinator, copy + 1, size - 1, 0, 0, ESGD_ERR_SIGNATURE);
    assert_int_equal(coordinator_receive_update(f->coordinator, copy, size, 0, 0, &err), UPDATE_ACCEPTED);
    free(copy);
}

/* Signed by the topic's agent, but the payload names another agent or round
 * than the topic it came on. */
static void test_update_must_name_its_topic(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, &err), ESGD_OK);
    hand_made_update(&buf, TEST_RUN, 1, 0, &agent_secret[0]); /* says agent 1, on agent 0's topic */
    expect_rejected(f->coordinator, buf.data, buf.size, 0, 0, ESGD_ERR_MISMATCH);
    hand_made_update(&buf, TEST_RUN, 0, 1, &agent_secret[0]); /* says round 1, on round 0's topic */
    expect_rejected(f->coordinator, buf.data, buf.size, 0, 0, ESGD_ERR_MISMATCH);
    hand_made_update(&buf, TEST_RUN, 0, 0, &agent_secret[0]); /* says round 0, on round 1's topic */
    expect_rejected(f->coordinator, buf.data, buf.size, 0, 1, ESGD_ERR_MISMATCH);
    assert_int_equal(coordinator_get_counters(f->coordinator)->rejected[ESGD_ERR_MISMATCH], 3);
    assert_false(coordinator_has_update(f->coordinator, 0));
    assert_false(coordinator_has_update(f->coordinator, 1));
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, 0, 0, &err), UPDATE_ACCEPTED);
    buffer_destroy(&buf);
}

/* Two processes signing as agent 0 (one id given to two gateways): a
 * second, different update for the round is a conflict, while or after the
 * round is open; a redelivery of the same bytes is not. */
static void test_two_agents_with_one_id_are_noticed(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    broadcast(f);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(agent_compute_update(f->agent[0], &msg, &size, &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(f->coordinator, msg, size, 0, 0, &err), UPDATE_ACCEPTED);
    assert_int_equal(coordinator_receive_update(f->coordinator, msg, size, 0, 0, &err), UPDATE_DUPLICATE);
    assert_int_equal(coordinator_get_counters(f->coordinator)->conflicting, 0);
    esgd_buffer twin;
    assert_int_equal(buffer_init(&twin, 4096, &err), ESGD_OK);
    hand_made_update(&twin, TEST_RUN, 0, 0, &agent_secret[0]);
    assert_int_equal(coordinator_receive_update(f->coordinator, twin.data, twin.size, 0, 0, &err), UPDATE_DUPLICATE);
    assert_int_equal(coordinator_get_counters(f->coordinator)->conflicting, 1);
    assert_non_null(strstr(err.message, "two agents running with id 0"));
    round_summary s;
    coordinator_close_round(f->coordinator, &s);
    assert_int_equal(coordinator_receive_update(f->coordinator, twin.data, twin.size, 0, 0, &err), UPDATE_LATE);
    assert_int_equal(coordinator_get_counters(f->coordinator)->conflicting, 2);
    assert_int_equal(coordinator_receive_update(f->coordinator, msg, size, 0, 0, &err), UPDATE_LATE);
    assert_int_equal(coordinator_get_counters(f->coordinator)->conflicting, 2);
    buffer_destroy(&twin);
}

/* An eavesdropper replays agent 0's update of round 0 in round 1. As it is,
 * the payload gives it away; with its round rewritten to 1 the signature no
 * longer verifies, and it cannot be signed again without agent 0's key. */
static void test_replayed_update_with_a_rewritten_round_is_refused(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    uint32_t d = job_dimension(&f->cfg);
    broadcast(f);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(agent_compute_update(f->agent[0], &msg, &size, &err), ESGD_OK);
    uint8_t *round0 = malloc(size);
    memcpy(round0, msg, size);
    size_t round0_size = size;
    assert_int_equal(coordinator_receive_update(f->coordinator, round0, round0_size, 0, 0, &err), UPDATE_ACCEPTED);
    round_summary s;
    coordinator_close_round(f->coordinator, &s);
    assert_int_equal(coordinator_round(f->coordinator), 1);

    expect_rejected(f->coordinator, round0, round0_size, 0, 1, ESGD_ERR_MISMATCH);
    assert_int_equal(coordinator_receive_update(f->coordinator, round0, round0_size, 0, 0, &err), UPDATE_LATE);

    /* The body decoded, its round set to 1, encoded again, the old signature appended. */
    codec_decoder *dec = codec_decoder_new(&err);
    update_msg u = {.grad = {.capacity = d, .indices = malloc(d * sizeof(uint32_t)),
                             .values = malloc(d * sizeof(float))}};
    assert_int_equal(codec_decode_update(dec, round0, body_of(round0_size), d, &u, &err), ESGD_OK);
    u.round = 1;
    esgd_buffer forged;
    assert_int_equal(buffer_init(&forged, codec_update_bound(d), &err), ESGD_OK);
    assert_int_equal(codec_encode_update(&forged, &u, f->cfg.values, &err), ESGD_OK);
    memcpy(forged.data + forged.size, round0 + body_of(round0_size), ENVELOPE_SIGNATURE_BYTES);
    forged.size += ENVELOPE_SIGNATURE_BYTES;
    expect_rejected(f->coordinator, forged.data, forged.size, 0, 1, ESGD_ERR_SIGNATURE);
    assert_false(coordinator_has_update(f->coordinator, 0));
    /* The signature is all that stops it: signed with agent 0's key it would pass. */
    forged.size -= ENVELOPE_SIGNATURE_BYTES;
    assert_int_equal(envelope_sign(&forged, &agent_secret[0], &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(f->coordinator, forged.data, forged.size, 0, 1, &err), UPDATE_ACCEPTED);
    buffer_destroy(&forged);
    free(u.grad.indices);
    free(u.grad.values);
    codec_decoder_free(dec);
    free(round0);
}

/* The previous run of the job (same configuration, same keys, another run
 * id) still has messages on the broker. */
static void test_update_of_another_run_is_stale(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, &err), ESGD_OK);
    hand_made_update(&buf, TEST_RUN ^ 1, 0, 0, &agent_secret[0]);
    expect_rejected(f->coordinator, buf.data, buf.size, 0, 0, ESGD_ERR_STALE);

    /* A real agent still in the previous run, answering that run's model. */
    esgd_job_config previous = f->cfg;
    previous.run = TEST_RUN - 1;
    esgd_coordinator *old = coordinator_new(&previous, &err);
    coordinator_set_keys(old, &coordinator_secret, agent_public);
    esgd_agent *behind = agent_new(&previous, 1, &f->shard[1], &err);
    agent_set_keys(behind, &agent_secret[1], &coordinator_public);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(coordinator_round_model(old, &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(behind, msg, size, &err), ESGD_OK);
    assert_int_equal(agent_compute_update(behind, &msg, &size, &err), ESGD_OK);
    expect_rejected(f->coordinator, msg, size, 1, 0, ESGD_ERR_STALE);
    assert_int_equal(coordinator_receive_update(old, msg, size, 1, 0, &err), UPDATE_ACCEPTED);
    assert_int_equal(coordinator_get_counters(f->coordinator)->rejected[ESGD_ERR_STALE], 2);
    assert_int_equal(coordinator_participants(f->coordinator), 0);
    hand_made_update(&buf, TEST_RUN, 0, 0, &agent_secret[0]);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, 0, 0, &err), UPDATE_ACCEPTED);
    agent_free(behind);
    coordinator_free(old);
    buffer_destroy(&buf);
}

static void test_agent_ignores_a_model_of_another_run(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    uint32_t d = job_dimension(&f->cfg);
    esgd_job_config previous = f->cfg;
    previous.run = TEST_RUN + 1;
    previous.seed = f->cfg.seed + 1; /* so its models differ from this run's */
    esgd_coordinator *old = coordinator_new(&previous, &err);
    coordinator_set_keys(old, &coordinator_secret, agent_public);
    const uint8_t *msg;
    size_t size;
    /* An agent with no model yet, and the retained model of the previous run. */
    agent_snapshot before = snapshot_agent(f->agent[1], d);
    assert_int_equal(coordinator_full_model(old, &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(f->agent[1], msg, size, &err), ESGD_ERR_STALE);
    assert_agent_unchanged(&before, f->agent[1], d);
    assert_false(agent_has_model(f->agent[1]));

    /* An agent at round 0 of this run, and round 1 of the other (a delta on
     * round 0 and a full model, both newer than what the agent holds). */
    broadcast(f);
    round_summary s;
    coordinator_close_round(old, &s);
    before = snapshot_agent(f->agent[0], d);
    assert_int_equal(coordinator_round_model(old, &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(f->agent[0], msg, size, &err), ESGD_ERR_STALE);
    assert_int_equal(coordinator_full_model(old, &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(f->agent[0], msg, size, &err), ESGD_ERR_STALE);
    assert_agent_unchanged(&before, f->agent[0], d);
    assert_int_equal(agent_current_round(f->agent[0]), 0);
    assert_memory_equal(agent_params(f->agent[0]), coordinator_params(f->coordinator), d * sizeof(float));
    coordinator_free(old);
}

static void test_agent_refuses_a_forged_model(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    uint32_t d = job_dimension(&f->cfg);
    broadcast(f);
    signing_key forger;
    verify_key forger_public;
    keys_derive(TEST_KEY_SEED + 1, "coordinator", &forger, &forger_public);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, codec_model_bound(d), &err), ESGD_OK);
    /* A newer round, every parameter 0.5: signed by a stranger, or by an agent. */
    agent_snapshot before = snapshot_agent(f->agent[0], d);
    hand_made_full_model(&buf, d, TEST_RUN, 1, false, 0.5f, &forger);
    assert_int_equal(agent_apply_model(f->agent[0], buf.data, buf.size, &err), ESGD_ERR_SIGNATURE);
    hand_made_full_model(&buf, d, TEST_RUN, 1, false, 0.5f, &agent_secret[1]);
    assert_int_equal(agent_apply_model(f->agent[0], buf.data, buf.size, &err), ESGD_ERR_SIGNATURE);
    assert_agent_unchanged(&before, f->agent[0], d);
    /* The coordinator's real next model with one bit flipped, in the body and in the signature. */
    run_round(f);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(coordinator_round_model(f->coordinator, &msg, &size, &err), ESGD_OK);
    uint8_t *copy = malloc(size);
    memcpy(copy, msg, size);
    before = snapshot_agent(f->agent[0], d);
    const size_t bits[] = {0, 8 * body_of(size) / 2 + 3, 8 * body_of(size) - 1, 8 * body_of(size), 8 * size - 1};
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
        copy[bits[i] / 8] ^= (uint8_t)(1u << (bits[i] % 8));
        assert_int_equal(agent_apply_model(f->agent[0], copy, size, &err), ESGD_ERR_SIGNATURE);
        copy[bits[i] / 8] ^= (uint8_t)(1u << (bits[i] % 8));
    }
    assert_agent_unchanged(&before, f->agent[0], d);
    assert_int_equal(agent_apply_model(f->agent[0], copy, size, &err), ESGD_OK);
    assert_int_equal(agent_current_round(f->agent[0]), 1);
    free(copy);
    buffer_destroy(&buf);
}

/* A forged "done" would stop every agent of the job. */
static void test_forged_done_model_does_not_end_the_agent(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    uint32_t d = job_dimension(&f->cfg);
    broadcast(f);
    signing_key forger;
    verify_key forger_public;
    keys_derive(TEST_KEY_SEED + 1, "coordinator", &forger, &forger_public);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, codec_model_bound(d), &err), ESGD_OK);
    hand_made_full_model(&buf, d, TEST_RUN, job_total_rounds(&f->cfg), true, 0.0f, &forger);
    agent_snapshot before = snapshot_agent(f->agent[0], d);
    assert_int_equal(agent_apply_model(f->agent[0], buf.data, buf.size, &err), ESGD_ERR_SIGNATURE);
    assert_agent_unchanged(&before, f->agent[0], d);
    assert_false(agent_job_done(f->agent[0]));
    assert_true(agent_has_model(f->agent[0]));
    const uint8_t *msg;
    size_t size;
    assert_int_equal(agent_compute_update(f->agent[0], &msg, &size, &err), ESGD_OK);
    /* The same message signed by the coordinator would end it. */
    hand_made_full_model(&buf, d, TEST_RUN, job_total_rounds(&f->cfg), true, 0.0f, &coordinator_secret);
    assert_int_equal(agent_apply_model(f->agent[0], buf.data, buf.size, &err), ESGD_OK);
    assert_true(agent_job_done(f->agent[0]));
    buffer_destroy(&buf);
}

/* Packs a version 1 message (no run; the layout before signing) from
 * key/value pairs: 'u' uint, 's' str, 'f' float32, 'n' nil, 'b' bool, 'x' bin. */
typedef struct v1_field {
    const char *key;
    char type;
    uint64_t u;
    const char *s;
    double f;
    const uint8_t *bin;
    size_t len;
} v1_field;

static void pack_v1(esgd_buffer *buf, const v1_field *fields, size_t n)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n);
    for (size_t i = 0; i < n; i++) {
        const v1_field *x = &fields[i];
        msgpack_pack_str_with_body(&pk, x->key, strlen(x->key));
        switch (x->type) {
        case 'u': msgpack_pack_uint64(&pk, x->u); break;
        case 's': msgpack_pack_str_with_body(&pk, x->s, strlen(x->s)); break;
        case 'f': msgpack_pack_float(&pk, (float)x->f); break;
        case 'n': msgpack_pack_nil(&pk); break;
        case 'b': x->u ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk); break;
        case 'x': msgpack_pack_bin_with_body(&pk, x->bin, x->len); break;
        }
    }
    assert_true(sb.size <= buf->capacity);
    memcpy(buf->data, sb.data, sb.size);
    buf->size = sb.size;
    msgpack_sbuffer_destroy(&sb);
}

/* Version 1 bodies, correctly signed (as a coordinator or agent that was not
 * upgraded would, once given a key): refused as "version" on both sides. */
static void test_version_1_is_refused(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    uint32_t d = job_dimension(&f->cfg);
    broadcast(f);
    uint8_t *bitmap = calloc((d + 7) / 8, 1);
    bitmap[0] = 0x08; /* index 3 */
    static const uint8_t value[4] = {0, 0, 0x80, 0x3e}; /* 0.25f */
#define U(k, v) {.key = k, .type = 'u', .u = v}
#define S(k, v) {.key = k, .type = 's', .s = v}
#define X(k, b, l) {.key = k, .type = 'x', .bin = b, .len = l}
    const v1_field update[] = {
        U("v", 1),     S("type", "update"), S("job", "unit"), U("round", 0), U("agent", 0), U("samples", 8),
        {.key = "loss", .type = 'f', .f = 1.0}, U("dim", d), U("count", 1), S("idx_enc", "bitmap"),
        X("idx", bitmap, (d + 7) / 8), S("val_fmt", "f32"), X("val", value, 4),
    };
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, codec_model_bound(d), &err), ESGD_OK);
    pack_v1(&buf, update, sizeof update / sizeof update[0]);
    assert_int_equal(envelope_sign(&buf, &agent_secret[0], &err), ESGD_OK);
    expect_rejected(f->coordinator, buf.data, buf.size, 0, 0, ESGD_ERR_VERSION);
    assert_int_equal(coordinator_get_counters(f->coordinator)->rejected[ESGD_ERR_VERSION], 1);
    /* The version is all that is wrong with it: as version 2, with a run, it is accepted. */
    v1_field as_v2[sizeof update / sizeof update[0] + 1];
    memcpy(as_v2, update, sizeof update);
    as_v2[0].u = CODEC_VERSION;
    as_v2[sizeof update / sizeof update[0]] = (v1_field){.key = "run", .type = 'u', .u = TEST_RUN};
    pack_v1(&buf, as_v2, sizeof as_v2 / sizeof as_v2[0]);
    assert_int_equal(envelope_sign(&buf, &agent_secret[0], &err), ESGD_OK);
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, 0, 0, &err), UPDATE_ACCEPTED);

    const v1_field model[] = {
        U("v", 1),     S("type", "model"), S("job", "unit"), U("round", 1), U("base_round", 0),
        {.key = "lr", .type = 'f', .f = 0.1}, {.key = "prev_loss", .type = 'n'}, {.key = "loss_fell", .type = 'n'},
        {.key = "done", .type = 'b', .u = 0}, S("form", "delta"), U("dim", d), U("count", 1), S("idx_enc", "bitmap"),
        X("idx", bitmap, (d + 7) / 8), X("val", value, 4),
    };
#undef U
#undef S
#undef X
    pack_v1(&buf, model, sizeof model / sizeof model[0]);
    assert_int_equal(envelope_sign(&buf, &coordinator_secret, &err), ESGD_OK);
    agent_snapshot before = snapshot_agent(f->agent[0], d);
    assert_int_equal(agent_apply_model(f->agent[0], buf.data, buf.size, &err), ESGD_ERR_VERSION);
    assert_agent_unchanged(&before, f->agent[0], d);
    v1_field model_v2[sizeof model / sizeof model[0] + 2];
    memcpy(model_v2, model, sizeof model);
    model_v2[0].u = CODEC_VERSION;
    model_v2[sizeof model / sizeof model[0]] = (v1_field){.key = "run", .type = 'u', .u = TEST_RUN};
    model_v2[sizeof model / sizeof model[0] + 1] = (v1_field){.key = "gen", .type = 'u', .u = 0};
    pack_v1(&buf, model_v2, sizeof model_v2 / sizeof model_v2[0]);
    assert_int_equal(envelope_sign(&buf, &coordinator_secret, &err), ESGD_OK);
    assert_int_equal(agent_apply_model(f->agent[0], buf.data, buf.size, &err), ESGD_OK);
    assert_int_equal(agent_current_round(f->agent[0]), 1);
    assert_true(agent_params(f->agent[0])[3] == 0.25f);
    free(bitmap);
    buffer_destroy(&buf);
}

/* Without keys nothing can be signed or checked, so nothing is made or accepted. */
static void test_without_keys_nothing_is_made_or_accepted(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    uint32_t d = job_dimension(&f->cfg);
    esgd_coordinator *keyless = coordinator_new(&f->cfg, &err);
    assert_non_null(keyless);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(coordinator_config_message(keyless, &msg, &size, &err), ESGD_ERR_SIGNATURE);
    assert_int_equal(coordinator_round_model(keyless, &msg, &size, &err), ESGD_ERR_SIGNATURE);
    assert_int_equal(coordinator_full_model(keyless, &msg, &size, &err), ESGD_ERR_SIGNATURE);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, &err), ESGD_OK);
    hand_made_update(&buf, TEST_RUN, 0, 0, &agent_secret[0]);
    expect_rejected(keyless, buf.data, buf.size, 0, 0, ESGD_ERR_SIGNATURE);
    assert_int_equal(coordinator_get_counters(keyless)->rejected[ESGD_ERR_SIGNATURE], 1);
    assert_int_equal(coordinator_participants(keyless), 0);
    /* The same update is fine for a coordinator with keys. */
    assert_int_equal(coordinator_receive_update(f->coordinator, buf.data, buf.size, 0, 0, &err), UPDATE_ACCEPTED);
    coordinator_free(keyless);

    /* An agent without keys applies no model, not even a correctly signed one ... */
    esgd_agent *agent = agent_new(&f->cfg, 0, &f->shard[0], &err);
    assert_int_equal(coordinator_round_model(f->coordinator, &msg, &size, &err), ESGD_OK);
    agent_snapshot before = snapshot_agent(agent, d);
    assert_int_equal(agent_apply_model(agent, msg, size, &err), ESGD_ERR_SIGNATURE);
    assert_agent_unchanged(&before, agent, d);
    /* ... and cannot check the update in a saved state, so does not restore it. */
    char path[128];
    temp_path(path, sizeof path, "keyless.state");
    assert_int_equal(agent_apply_model(f->agent[0], msg, size, &err), ESGD_OK);
    assert_int_equal(agent_compute_update(f->agent[0], &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_save(f->agent[0], path, &err), ESGD_OK);
    assert_int_equal(agent_restore(agent, path, &err), ESGD_ERR_SIGNATURE);
    assert_false(agent_answered_round(agent, NULL));
    agent_set_keys(agent, &agent_secret[0], &coordinator_public);
    assert_int_equal(agent_restore(agent, path, &err), ESGD_OK);
    agent_free(agent);
    unlink(path);
    buffer_destroy(&buf);
}

/* Offset of needle in hay (the first), or SIZE_MAX. */
static size_t find_bytes(const uint8_t *hay, size_t hay_size, const uint8_t *needle, size_t size)
{
    for (size_t i = 0; size <= hay_size && i <= hay_size - size; i++)
        if (memcmp(hay + i, needle, size) == 0)
            return i;
    return SIZE_MAX;
}

/* A restarted agent re-sends the update its state file stores, so it must
 * carry the agent's own signature: a stored update with a flipped bit, or
 * signed by another agent, is refused (the file's checksum is made right). */
static void test_agent_restore_checks_the_stored_signature(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    char path[128];
    temp_path(path, sizeof path, "signed.state");
    broadcast(f);
    const uint8_t *msg;
    size_t size;
    assert_int_equal(agent_compute_update(f->agent[0], &msg, &size, &err), ESGD_OK);
    assert_int_equal(agent_save(f->agent[0], path, &err), ESGD_OK);
    state_reader r;
    assert_int_equal(state_file_read(path, STATE_KIND_AGENT, &r, &err), ESGD_OK);
    size_t at = find_bytes(r.data, r.size, msg, size);
    assert_true(at != SIZE_MAX);
    esgd_buffer resigned;
    assert_int_equal(buffer_init(&resigned, size, &err), ESGD_OK);
    memcpy(resigned.data, msg, body_of(size));
    resigned.size = body_of(size);
    assert_int_equal(envelope_sign(&resigned, &agent_secret[1], &err), ESGD_OK);
    for (int variant = 0; variant < 3; variant++) {
        state_writer w;
        state_writer_init(&w);
        w.data = malloc(r.size);
        w.size = w.capacity = r.size;
        memcpy(w.data, r.data, r.size);
        if (variant == 1)
            w.data[at + size - 1] ^= 0x10; /* in the signature */
        else if (variant == 2)
            memcpy(w.data + at, resigned.data, size); /* agent 1's signature */
        assert_int_equal(state_file_write(path, STATE_KIND_AGENT, &w, &err), ESGD_OK);
        state_writer_destroy(&w);
        esgd_agent *restarted = agent_new(&f->cfg, 0, &f->shard[0], &err);
        agent_set_keys(restarted, &agent_secret[0], &coordinator_public);
        memset(&err, 0, sizeof err);
        esgd_status st = agent_restore(restarted, path, &err);
        if (st != (variant == 0 ? ESGD_OK : ESGD_ERR_SIGNATURE))
            fail_msg("variant %d: %s (%s)", variant, esgd_status_name(st), err.message);
        assert_int_equal(agent_answered_round(restarted, NULL), variant == 0);
        agent_free(restarted);
    }
    buffer_destroy(&resigned);
    state_reader_destroy(&r);
    unlink(path);
}

/* A restarted coordinator draws a new run id, but resuming a checkpoint
 * continues the checkpoint's run: the agents of that run go on with it. */
static void test_restore_continues_the_checkpoint_run(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    char path[128];
    temp_path(path, sizeof path, "run.ckpt");
    for (int r = 0; r < 2; r++)
        run_round(f);
    assert_int_equal(coordinator_save(f->coordinator, path, &err), ESGD_OK);

    esgd_job_config restart = f->cfg;
    restart.run = 0x8000000012345678ull; /* the new start's own id */
    /* The checkpoint holds the configuration unsigned: it outlives a key. */
    signing_key new_secret;
    verify_key new_public;
    keys_derive(TEST_KEY_SEED + 2, "coordinator", &new_secret, &new_public);
    esgd_coordinator *restored = coordinator_new(&restart, &err);
    coordinator_set_keys(restored, &new_secret, agent_public);
    if (coordinator_restore(restored, path, &err) != ESGD_OK)
        fail_msg("restore: %s", err.message);
    assert_true(coordinator_config(restored)->run == TEST_RUN);

    /* Its config and model carry the run; the run's agents take them. */
    const uint8_t *msg;
    size_t size;
    assert_int_equal(coordinator_config_message(restored, &msg, &size, &err), ESGD_OK);
    size_t body = 0;
    assert_int_equal(envelope_open(msg, size, &new_public, &body, &err), ESGD_OK);
    codec_decoder *dec = codec_decoder_new(&err);
    esgd_job_config announced;
    assert_int_equal(codec_decode_config(dec, msg, body, &announced, &err), ESGD_OK);
    assert_true(announced.run == TEST_RUN);
    codec_decoder_free(dec);
    for (int a = 0; a < 2; a++)
        agent_set_keys(f->agent[a], &agent_secret[a], &new_public);
    assert_int_equal(coordinator_round_model(restored, &msg, &size, &err), ESGD_OK);
    for (int a = 0; a < 2; a++)
        assert_int_equal(agent_apply_model(f->agent[a], msg, size, &err), ESGD_OK);
    assert_int_equal(agent_current_round(f->agent[0]), 2);
    for (uint32_t a = 0; a < 2; a++) {
        assert_int_equal(agent_compute_update(f->agent[a], &msg, &size, &err), ESGD_OK);
        assert_int_equal(coordinator_receive_update(restored, msg, size, a, 2, &err), UPDATE_ACCEPTED);
    }
    /* An update of the id the restart drew belongs to no run it continues. */
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, &err), ESGD_OK);
    hand_made_update(&buf, restart.run, 0, 2, &agent_secret[0]);
    expect_rejected(restored, buf.data, buf.size, 0, 2, ESGD_ERR_STALE);
    buffer_destroy(&buf);

    /* A refused restore keeps the coordinator's own run. */
    esgd_job_config other = restart;
    other.seed = 99;
    esgd_coordinator *stranger = coordinator_new(&other, &err);
    coordinator_set_keys(stranger, &new_secret, agent_public);
    assert_int_equal(coordinator_restore(stranger, path, &err), ESGD_ERR_MISMATCH);
    assert_true(coordinator_config(stranger)->run == restart.run);
    coordinator_free(stranger);
    coordinator_free(restored);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aggregate_is_the_mean_step_and_median_loss),
        cmocka_unit_test(test_aggregate_does_not_depend_on_arrival_order),
        cmocka_unit_test(test_downlink_applies_the_largest_and_holds_the_rest),
        cmocka_unit_test(test_aggregate_refuses_bad_updates),
        cmocka_unit_test_setup_teardown(test_agents_track_the_coordinator_bit_for_bit, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_every_kind_of_update_is_counted, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_agent_refuses_a_delta_it_cannot_apply, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_same_round_same_update, setup_job, teardown_job),
        cmocka_unit_test(test_bad_construction_is_an_error),
        cmocka_unit_test_setup_teardown(test_coordinator_checkpoint_resumes_exactly, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_agent_state_resumes_exactly, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_norm_bound_rejects_or_clips, setup_job, teardown_job),
        cmocka_unit_test(test_aggregate_drops_updates_until_finite),
        cmocka_unit_test(test_huge_finite_updates_leave_the_model_finite),
        cmocka_unit_test_setup_teardown(test_relative_bound_follows_honest_growth, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_default_bound_rejects_a_1000x_update, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_relative_bound_can_clip_or_be_off, setup_job, teardown_job),
        cmocka_unit_test(test_samples_must_equal_the_batch),
        cmocka_unit_test(test_loss_signal_is_the_median),
        cmocka_unit_test_setup_teardown(test_checkpoint_keeps_the_norm_history, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_update_signed_by_another_agent_is_refused, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_update_with_a_flipped_bit_is_refused, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_two_agents_with_one_id_are_noticed, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_update_must_name_its_topic, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_replayed_update_with_a_rewritten_round_is_refused, setup_job,
                                        teardown_job),
        cmocka_unit_test_setup_teardown(test_update_of_another_run_is_stale, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_agent_ignores_a_model_of_another_run, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_agent_refuses_a_forged_model, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_forged_done_model_does_not_end_the_agent, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_version_1_is_refused, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_without_keys_nothing_is_made_or_accepted, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_restore_continues_the_checkpoint_run, setup_job, teardown_job),
        cmocka_unit_test_setup_teardown(test_agent_restore_checks_the_stored_signature, setup_job, teardown_job),
    };
    return cmocka_run_group_tests(tests, setup_keys, NULL);
}
