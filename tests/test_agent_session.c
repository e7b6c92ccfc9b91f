/* The agent's protocol state machine (agent_session.h), one transition at a
 * time, fed real signed messages of the core's coordinator: which actions
 * each event asks for, in which order, and what the session then holds. No
 * broker: the actions are read, and the updates handed to the coordinator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "esgd/agent_session.h"
#include "esgd/codec.h"
#include "esgd/coordinator.h"
#include "esgd/envelope.h"
#include "esgd/rng.h"

/* Signed with the test keys (test_keys.h); the jobs run TEST_RUN. */
#define TEST_AGENTS 2
#define TEST_KEY_AGENTS TEST_AGENTS
#include "test_keys.h"
#include "test_shard.h"

/* Agent 0 of a tiny MLP job on synthetic 28x28 images, a coordinator for
 * it, and a clock the test moves by hand. */
typedef struct fixture {
    esgd_job_config cfg;
    esgd_dataset shard;
    esgd_coordinator *coordinator;
    agent_session *session;
    double now;
} fixture;

static double fixture_clock(void *ctx)
{
    return ((fixture *)ctx)->now;
}


static agent_session *new_session(fixture *f, uint32_t id, uint32_t config_timeout)
{
    const agent_session_options o = {.job = "unit", .id = id, .key = &agent_secret[id % TEST_AGENTS],
                                     .coordinator = &coordinator_public, .config_timeout = config_timeout,
                                     .clock = fixture_clock, .clock_ctx = f};
    esgd_error err = {0};
    agent_session *s = agent_session_new(&o, &err);
    if (!s)
        fail_msg("agent_session_new: %s", err.message);
    return s;
}

static esgd_coordinator *new_coordinator(const esgd_job_config *cfg, uint32_t generation)
{
    esgd_error err = {0};
    esgd_coordinator *c = coordinator_new(cfg, &err);
    if (!c)
        fail_msg("coordinator_new: %s", err.message);
    coordinator_set_keys(c, &coordinator_secret, agent_public);
    coordinator_set_generation(c, generation);
    return c;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    job_config_defaults(&f->cfg);
    strcpy(f->cfg.job, "unit");
    strcpy(f->cfg.model, "mlp");
    f->cfg.agents = TEST_AGENTS;
    f->cfg.batch = 8;
    f->cfg.train_samples = 64;
    f->cfg.rounds = 12;
    f->cfg.sparsify.method = SPARSIFY_ESGD;
    f->cfg.sparsify.drop_ratio = 0.9;
    f->cfg.run = TEST_RUN;
    f->now = 1000;
    make_shard(&f->shard, 32, 100);
    f->coordinator = new_coordinator(&f->cfg, 1);
    f->session = new_session(f, 0, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    agent_session_free(f->session);
    coordinator_free(f->coordinator);
    dataset_destroy(&f->shard);
    free(f);
    return 0;
}

/* ---- reading actions ---- */

static const char *kind_name(agent_action_kind k)
{
    static const char *const names[] = {"subscribe", "unsubscribe", "start-run", "save-state", "publish-update",
                                        "publish-status", "log", "ignored", "finished", "stop"};
    return names[k];
}

/* Fails unless the actions are exactly these kinds, in this order (the
 * list ends with -1). */
static void expect_kinds(agent_actions todo, ...)
{
    char got[512] = "", want[512] = "";
    size_t g = 0, w = 0;
    for (uint32_t i = 0; i < todo.count; i++)
        g += (size_t)snprintf(got + g, sizeof got - g, " %s", kind_name(todo.list[i].kind));
    va_list ap;
    va_start(ap, todo);
    bool same = true;
    uint32_t n = 0;
    for (int k; (k = va_arg(ap, int)) >= 0; n++) {
        w += (size_t)snprintf(want + w, sizeof want - w, " %s", kind_name((agent_action_kind)k));
        same = same && n < todo.count && todo.list[n].kind == (agent_action_kind)k;
    }
    va_end(ap);
    if (!same || n != todo.count)
        fail_msg("actions:%s\nexpected:%s", got, want);
}

/* The only action of this kind (fails if there is none or more). */
static const agent_action *the(agent_actions todo, agent_action_kind kind)
{
    const agent_action *found = NULL;
    for (uint32_t i = 0; i < todo.count; i++)
        if (todo.list[i].kind == kind) {
            if (found)
                fail_msg("more than one %s action", kind_name(kind));
            found = &todo.list[i];
        }
    if (!found)
        fail_msg("no %s action", kind_name(kind));
    return found;
}

static void expect_text(const agent_action *a, const char *part)
{
    if (!a->text || !strstr(a->text, part))
        fail_msg("'%s' does not say '%s'", a->text ? a->text : "(none)", part);
}

/* ---- driving the session ---- */

static agent_actions deliver(fixture *f, agent_message_kind kind, const uint8_t *data, size_t size)
{
    return agent_session_on_message(f->session, kind, data, size);
}

static agent_actions deliver_config(fixture *f, esgd_coordinator *c)
{
    const uint8_t *msg;
    size_t size;
    esgd_error err = {0};
    assert_int_equal(coordinator_config_message(c, &msg, &size, &err), ESGD_OK);
    return deliver(f, AGENT_MESSAGE_CONFIG, msg, size);
}

/* The program's side of START_RUN: the session builds its agent on our shard. */
static void join(fixture *f)
{
    esgd_error err = {0};
    if (agent_session_join(f->session, &f->shard, 0, TEST_AGENTS, &err) != ESGD_OK)
        fail_msg("join: %s", err.message);
}

/* The coordinator's configuration arrives and the run is joined. */
static void start_and_join(fixture *f)
{
    agent_session_start(f->session);
    agent_actions todo = deliver_config(f, f->coordinator);
    assert_int_equal(todo.list[0].kind, AGENT_ACTION_START_RUN);
    join(f);
}

static agent_actions deliver_round_model(fixture *f, esgd_coordinator *c)
{
    const uint8_t *msg;
    size_t size;
    esgd_error err = {0};
    assert_int_equal(coordinator_round_model(c, &msg, &size, &err), ESGD_OK);
    return deliver(f, AGENT_MESSAGE_ROUND_MODEL, msg, size);
}

static agent_actions deliver_latest_model(fixture *f, esgd_coordinator *c)
{
    const uint8_t *msg;
    size_t size;
    esgd_error err = {0};
    assert_int_equal(coordinator_full_model(c, &msg, &size, &err), ESGD_OK);
    return deliver(f, AGENT_MESSAGE_LATEST_MODEL, msg, size);
}

/* Hands the update of these actions to the coordinator; its outcome. */
static update_outcome hand_over(fixture *f, agent_actions todo)
{
    const agent_action *u = the(todo, AGENT_ACTION_PUBLISH_UPDATE);
    esgd_error err = {0};
    return coordinator_receive_update(f->coordinator, u->data, u->size, 0, u->round, &err);
}

static void close_round(fixture *f)
{
    round_summary s;
    coordinator_close_round(f->coordinator, &s);
}

/* Our status now, decoded. */
static status_msg our_status(fixture *f, agent_state state)
{
    const uint8_t *msg;
    size_t size, body = 0;
    esgd_error err = {0};
    status_msg s;
    codec_decoder *dec = codec_decoder_new(&err);
    if (agent_session_status_message(f->session, state, &msg, &size, &err) != ESGD_OK ||
        envelope_open(msg, size, &agent_public[0], &body, &err) != ESGD_OK ||
        codec_decode_status(dec, msg, body, &s, &err) != ESGD_OK)
        fail_msg("status: %s", err.message);
    codec_decoder_free(dec);
    return s;
}

/* ---- the transitions ---- */

static void test_start_asks_for_the_configuration(void **state)
{
    fixture *f = *state;
    agent_actions todo = agent_session_start(f->session);
    expect_kinds(todo, AGENT_ACTION_SUBSCRIBE, AGENT_ACTION_UNSUBSCRIBE, AGENT_ACTION_SUBSCRIBE,
                 AGENT_ACTION_SUBSCRIBE, AGENT_ACTION_PUBLISH_STATUS, AGENT_ACTION_LOG, -1);
    assert_int_equal(todo.list[0].channel, AGENT_CHANNEL_CONFIG);
    assert_int_equal(todo.list[0].on_failure, AGENT_ON_FAILURE_STOP);
    /* A fetch left in the broker's session by a crash is undone. */
    assert_int_equal(todo.list[1].channel, AGENT_CHANNEL_LATEST_MODEL);
    /* The model and the configuration the coordinator sends to us alone, when we ask. */
    assert_int_equal(todo.list[2].channel, AGENT_CHANNEL_OWN_MODEL);
    assert_int_equal(todo.list[3].channel, AGENT_CHANNEL_OWN_CONFIG);
    assert_int_equal(todo.list[4].state, AGENT_STATE_ONLINE);
    assert_int_equal(todo.list[4].on_failure, AGENT_ON_FAILURE_WARN);
    expect_text(&todo.list[5], "waiting for the configuration of job unit");
    /* Before a run: run 0, no data, the same bytes as the Last Will. */
    status_msg s = our_status(f, AGENT_STATE_OFFLINE);
    assert_int_equal(s.run, 0);
    assert_false(s.has_data);
    assert_int_equal(s.agent, 0);
    assert_null(agent_session_agent(f->session));
}

static void test_configuration_starts_a_run(void **state)
{
    fixture *f = *state;
    agent_session_start(f->session);
    agent_actions todo = deliver_config(f, f->coordinator);
    expect_kinds(todo, AGENT_ACTION_START_RUN, AGENT_ACTION_SUBSCRIBE, AGENT_ACTION_SUBSCRIBE,
                 AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(todo.list[1].channel, AGENT_CHANNEL_ROUND_MODELS);
    assert_int_equal(todo.list[2].channel, AGENT_CHANNEL_LATEST_MODEL);
    assert_int_equal(todo.list[1].on_failure, AGENT_ON_FAILURE_STOP);
    assert_int_equal(todo.list[2].on_failure, AGENT_ON_FAILURE_STOP);
    assert_int_equal(agent_session_config(f->session)->run, TEST_RUN);
    assert_int_equal(agent_session_config(f->session)->agents, TEST_AGENTS);
    join(f);
    assert_non_null(agent_session_agent(f->session));
    /* The status that follows carries the run and our data. */
    status_msg s = our_status(f, AGENT_STATE_ONLINE);
    assert_int_equal(s.run, TEST_RUN);
    assert_true(s.has_data);
    assert_int_equal(s.shard, 0);
    assert_int_equal(s.shards, TEST_AGENTS);
    assert_int_equal(s.data_fp, dataset_fingerprint(&f->shard));
    /* The same bytes again (a retained copy), or a cleared topic: nothing. */
    expect_kinds(deliver_config(f, f->coordinator), -1);
    expect_kinds(deliver(f, AGENT_MESSAGE_CONFIG, NULL, 0), -1);
}

static void test_forged_and_foreign_configurations_are_ignored(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    agent_session_start(f->session);
    /* The coordinator's configuration signed by an agent. */
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, CODEC_CONFIG_BOUND + ENVELOPE_SIGNATURE_BYTES, &err), ESGD_OK);
    assert_int_equal(codec_encode_config(&buf, &f->cfg, &err), ESGD_OK);
    assert_int_equal(envelope_sign(&buf, &agent_secret[1], &err), ESGD_OK);
    agent_actions todo = deliver(f, AGENT_MESSAGE_CONFIG, buf.data, buf.size);
    expect_kinds(todo, AGENT_ACTION_IGNORED, -1);
    assert_int_equal(todo.list[0].message, AGENT_MESSAGE_CONFIG);
    assert_int_equal(todo.list[0].reason, ESGD_ERR_SIGNATURE);
    /* Another job's, signed by the coordinator. */
    esgd_job_config other = f->cfg;
    strcpy(other.job, "other");
    esgd_coordinator *c = new_coordinator(&other, 1);
    todo = deliver_config(f, c);
    expect_kinds(todo, AGENT_ACTION_IGNORED, -1);
    assert_int_equal(todo.list[0].reason, ESGD_ERR_MISMATCH);
    expect_text(&todo.list[0], "configuration of job 'other'");
    const uint64_t *ignored = agent_session_ignored(f->session);
    assert_int_equal(ignored[ESGD_ERR_SIGNATURE], 1);
    assert_int_equal(ignored[ESGD_ERR_MISMATCH], 1);
    assert_null(agent_session_agent(f->session));
    coordinator_free(c);
    buffer_destroy(&buf);
}

/* Signed by our coordinator but not a configuration this build can use:
 * before a run that stops the agent for good (exit 2); during one it is
 * only ignored. */
static void test_unusable_configuration_stops_before_a_run(void **state)
{
    fixture *f = *state;
    esgd_error err = {0};
    uint8_t bytes[128] = {0xc1};
    esgd_buffer buf = {bytes, 1, sizeof bytes};
    assert_int_equal(envelope_sign(&buf, &coordinator_secret, &err), ESGD_OK);
    agent_session_start(f->session);
    agent_actions todo = deliver(f, AGENT_MESSAGE_CONFIG, buf.data, buf.size);
    expect_kinds(todo, AGENT_ACTION_LOG, AGENT_ACTION_STOP, -1);
    assert_int_equal(todo.list[0].level, AGENT_LOG_ERROR);
    expect_text(&todo.list[0], "job configuration on the broker is unusable: ");
    assert_int_equal(todo.list[1].exit_code, AGENT_EXIT_USAGE);

    agent_session_free(f->session);
    f->session = new_session(f, 0, 0);
    start_and_join(f);
    todo = deliver(f, AGENT_MESSAGE_CONFIG, buf.data, buf.size);
    expect_kinds(todo, AGENT_ACTION_IGNORED, -1);
    assert_int_equal(todo.list[0].reason, ESGD_ERR_FORMAT);
}

static void test_agent_outside_the_job_stops(void **state)
{
    fixture *f = *state;
    agent_session_free(f->session);
    f->session = new_session(f, 5, 0);
    agent_session_start(f->session);
    agent_actions todo = deliver_config(f, f->coordinator);
    expect_kinds(todo, AGENT_ACTION_LOG, AGENT_ACTION_STOP, -1);
    expect_text(&todo.list[0], "agent id 5, but job unit has agents 0..1");
    assert_int_equal(todo.list[1].exit_code, AGENT_EXIT_USAGE);
}

/* A new round: the state is saved before the update leaves, the update is
 * one the coordinator accepts, and round 0 (like every 50th) brings a status. */
static void test_round_is_answered_after_saving_the_state(void **state)
{
    fixture *f = *state;
    start_and_join(f);
    agent_actions todo = deliver_round_model(f, f->coordinator);
    expect_kinds(todo, AGENT_ACTION_SAVE_STATE, AGENT_ACTION_PUBLISH_UPDATE, AGENT_ACTION_LOG,
                 AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(todo.list[0].on_failure, AGENT_ON_FAILURE_STOP);
    assert_int_equal(todo.list[1].round, 0);
    expect_text(&todo.list[2], "round 0: loss ");
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
    assert_int_equal(our_status(f, AGENT_STATE_ONLINE).round, 0);
    close_round(f);
    /* Round 1 comes as a delta on the round topic: no status this time.
     * The first update was the last one sent, so the log says how long ago. */
    f->now += 0.25;
    todo = deliver_round_model(f, f->coordinator);
    expect_kinds(todo, AGENT_ACTION_SAVE_STATE, AGENT_ACTION_PUBLISH_UPDATE, AGENT_ACTION_LOG, -1);
    expect_text(&todo.list[2], "round 1: loss ");
    expect_text(&todo.list[2], "model 250.000 ms after our last update");
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
}

/* The model of a round answered already (QoS 1 redelivery, the retained
 * model after a reconnection): the same bytes go out again, unsaved. */
static void test_repeated_round_resends_the_stored_update(void **state)
{
    fixture *f = *state;
    start_and_join(f);
    agent_actions todo = deliver_round_model(f, f->coordinator);
    const agent_action *first = the(todo, AGENT_ACTION_PUBLISH_UPDATE);
    size_t size = first->size;
    uint8_t *sent = malloc(size);
    memcpy(sent, first->data, size);
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);

    todo = deliver_latest_model(f, f->coordinator);
    expect_kinds(todo, AGENT_ACTION_UNSUBSCRIBE, AGENT_ACTION_PUBLISH_UPDATE, AGENT_ACTION_LOG, -1);
    assert_int_equal(todo.list[0].channel, AGENT_CHANNEL_LATEST_MODEL);
    assert_int_equal(todo.list[1].size, size);
    assert_memory_equal(todo.list[1].data, sent, size);
    char line[64];
    snprintf(line, sizeof line, "round 0: re-sent the update (%zu bytes)", size);
    expect_text(&todo.list[2], line);
    assert_int_equal(hand_over(f, todo), UPDATE_DUPLICATE);
    free(sent);
}

/* A delta whose base we do not hold means a round was missed: the retained
 * full model is fetched (once), and brings the agent back into the rounds. */
static void test_missed_round_fetches_the_retained_model(void **state)
{
    fixture *f = *state;
    start_and_join(f);
    agent_actions todo = deliver_latest_model(f, f->coordinator); /* round 0, and the fetch ends */
    assert_int_equal(todo.list[0].kind, AGENT_ACTION_UNSUBSCRIBE);
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
    close_round(f);
    const uint8_t *msg;
    size_t size;
    esgd_error err = {0};
    assert_int_equal(coordinator_round_model(f->coordinator, &msg, &size, &err), ESGD_OK); /* round 1: lost */
    close_round(f);
    todo = deliver_round_model(f, f->coordinator); /* round 2, a delta on round 1 */
    expect_kinds(todo, AGENT_ACTION_LOG, AGENT_ACTION_SUBSCRIBE, AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(todo.list[0].level, AGENT_LOG_WARN);
    expect_text(&todo.list[0], "; asking for the current model");
    assert_int_equal(todo.list[1].channel, AGENT_CHANNEL_LATEST_MODEL);
    assert_int_equal(todo.list[1].on_failure, AGENT_ON_FAILURE_STOP_QUIETLY);
    /* The retained model may be rounds old: status "syncing" asks the
     * coordinator for the current one. */
    assert_int_equal(todo.list[2].state, AGENT_STATE_SYNCING);
    assert_int_equal(our_status(f, AGENT_STATE_SYNCING).state, AGENT_STATE_SYNCING);
    /* Another such delta asks again (the coordinator answers once a round). */
    todo = deliver_round_model(f, f->coordinator);
    expect_kinds(todo, AGENT_ACTION_LOG, AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(agent_session_ignored(f->session)[ESGD_ERR_MISMATCH], 0); /* a miss, not a bad message */

    /* The coordinator's answer, on our own topic: round 2 is answered, the
     * fetch ends and "online" goes out again. */
    const uint8_t *own;
    size_t own_size;
    assert_int_equal(coordinator_sync_model(f->coordinator, &own, &own_size, &err), ESGD_OK);
    todo = deliver(f, AGENT_MESSAGE_OWN_MODEL, own, own_size);
    expect_kinds(todo, AGENT_ACTION_UNSUBSCRIBE, AGENT_ACTION_SAVE_STATE, AGENT_ACTION_PUBLISH_UPDATE,
                 AGENT_ACTION_LOG, AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(todo.list[2].round, 2);
    assert_int_equal(todo.list[4].state, AGENT_STATE_ONLINE);
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
    assert_int_equal(coordinator_get_counters(f->coordinator)->sync_bytes, own_size);
}

/* Back from a lost connection: the retained model is fetched (it makes us
 * re-send our answer), and the next new round publishes the status again,
 * which the broker replaced with our Last Will. */
static void test_reconnection_fetches_and_republishes_status(void **state)
{
    fixture *f = *state;
    start_and_join(f);
    deliver_latest_model(f, f->coordinator);
    agent_actions todo = agent_session_on_reconnect(f->session);
    expect_kinds(todo, AGENT_ACTION_SUBSCRIBE, AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(todo.list[0].channel, AGENT_CHANNEL_LATEST_MODEL);
    assert_int_equal(todo.list[0].on_failure, AGENT_ON_FAILURE_WARN);
    assert_int_equal(todo.list[1].state, AGENT_STATE_SYNCING); /* replaces the Last Will, asks for the model */
    todo = deliver_latest_model(f, f->coordinator); /* round 0 again: a re-send, no status */
    expect_kinds(todo, AGENT_ACTION_UNSUBSCRIBE, AGENT_ACTION_PUBLISH_UPDATE, AGENT_ACTION_LOG, -1);
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
    close_round(f);
    todo = deliver_round_model(f, f->coordinator); /* round 1: status, once */
    expect_kinds(todo, AGENT_ACTION_SAVE_STATE, AGENT_ACTION_PUBLISH_UPDATE, AGENT_ACTION_LOG,
                 AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
    close_round(f);
    expect_kinds(deliver_round_model(f, f->coordinator), AGENT_ACTION_SAVE_STATE, AGENT_ACTION_PUBLISH_UPDATE,
                 AGENT_ACTION_LOG, -1);
}

static void test_reconnection_without_a_model_fetches_nothing(void **state)
{
    fixture *f = *state;
    agent_session_start(f->session);
    expect_kinds(agent_session_on_reconnect(f->session), -1);
    deliver_config(f, f->coordinator);
    join(f);
    /* Joined, fetching already, no model yet: still nothing to ask for. */
    expect_kinds(agent_session_on_reconnect(f->session), -1);
}

/* A minute without any message: before a run, a line; with a model, the
 * retained model is asked for (a model may have been lost unnoticed). */
static void test_quiet_minute_fetches_the_retained_model(void **state)
{
    fixture *f = *state;
    agent_session_start(f->session);
    /* Without a configuration, status "syncing" (run 0) asks for one every 2 s. */
    f->now += 1.9;
    expect_kinds(agent_session_on_idle(f->session), -1);
    f->now += 0.1;
    agent_actions todo = agent_session_on_idle(f->session);
    expect_kinds(todo, AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(todo.list[0].state, AGENT_STATE_SYNCING);
    assert_int_equal(our_status(f, AGENT_STATE_SYNCING).run, 0);
    expect_kinds(agent_session_on_idle(f->session), -1);
    for (int k = 0; k < 28; k++) {
        f->now += 2;
        expect_kinds(agent_session_on_idle(f->session), AGENT_ACTION_PUBLISH_STATUS, -1);
    }
    f->now += 1.5; /* 59.5 s in all */
    expect_kinds(agent_session_on_idle(f->session), -1);
    f->now += 0.5;
    todo = agent_session_on_idle(f->session);
    expect_kinds(todo, AGENT_ACTION_PUBLISH_STATUS, AGENT_ACTION_LOG, -1);
    expect_text(&todo.list[1], "still waiting for the configuration of job unit");
    expect_kinds(agent_session_on_idle(f->session), -1); /* the next line a minute later */

    deliver_config(f, f->coordinator);
    join(f);
    deliver_latest_model(f, f->coordinator);
    f->now += 30;
    expect_kinds(deliver(f, AGENT_MESSAGE_OTHER, NULL, 0), -1); /* any message counts as life */
    f->now += 59;
    expect_kinds(agent_session_on_idle(f->session), -1);
    f->now += 1;
    todo = agent_session_on_idle(f->session);
    expect_kinds(todo, AGENT_ACTION_SUBSCRIBE, AGENT_ACTION_PUBLISH_STATUS, AGENT_ACTION_LOG, -1);
    assert_int_equal(todo.list[0].channel, AGENT_CHANNEL_LATEST_MODEL);
    assert_int_equal(todo.list[0].on_failure, AGENT_ON_FAILURE_WARN);
    assert_int_equal(todo.list[1].state, AGENT_STATE_SYNCING);
    expect_text(&todo.list[2], "waiting for the model after round 0; asked for the current one");
    /* Still fetching a minute later: asks the coordinator again. */
    f->now += 60;
    expect_kinds(agent_session_on_idle(f->session), AGENT_ACTION_PUBLISH_STATUS, AGENT_ACTION_LOG, -1);
}

static void test_configuration_timeout_stops(void **state)
{
    fixture *f = *state;
    agent_session_free(f->session);
    f->session = new_session(f, 0, 30);
    agent_session_start(f->session);
    f->now += 29;
    expect_kinds(agent_session_on_idle(f->session), AGENT_ACTION_PUBLISH_STATUS, -1); /* asks for it */
    f->now += 1;
    agent_actions todo = agent_session_on_idle(f->session);
    expect_kinds(todo, AGENT_ACTION_LOG, AGENT_ACTION_STOP, -1);
    assert_int_equal(todo.list[0].level, AGENT_LOG_ERROR);
    expect_text(&todo.list[0], "no configuration for job unit after 30 s");
    assert_int_equal(todo.list[1].exit_code, AGENT_EXIT_RUNTIME);
    /* Once a run is joined, the timeout no longer applies; without a model
     * the agent asks for one (status "syncing") every 2 s. */
    deliver_config(f, f->coordinator);
    join(f);
    f->now += 1.9;
    expect_kinds(agent_session_on_idle(f->session), -1);
    f->now += 43.1;
    agent_actions asked = agent_session_on_idle(f->session);
    expect_kinds(asked, AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(asked.list[0].state, AGENT_STATE_SYNCING);
    expect_kinds(deliver_latest_model(f, f->coordinator), AGENT_ACTION_UNSUBSCRIBE, AGENT_ACTION_SAVE_STATE,
                 AGENT_ACTION_PUBLISH_UPDATE, AGENT_ACTION_LOG, AGENT_ACTION_PUBLISH_STATUS, -1);
    f->now += 45;
    expect_kinds(agent_session_on_idle(f->session), -1);
}

/* The retained status is refreshed every 50 rounds (and at round 0). */
static void test_status_every_50_rounds(void **state)
{
    fixture *f = *state;
    f->cfg.rounds = 52;
    coordinator_free(f->coordinator);
    f->coordinator = new_coordinator(&f->cfg, 1);
    start_and_join(f);
    for (uint32_t round = 0; round <= 51; round++) {
        agent_actions todo = deliver_round_model(f, f->coordinator);
        bool status = false;
        for (uint32_t i = 0; i < todo.count; i++)
            status = status || todo.list[i].kind == AGENT_ACTION_PUBLISH_STATUS;
        if (status != (round % 50 == 0))
            fail_msg("round %u: status %s", round, status ? "published" : "not published");
        assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
        close_round(f);
    }
    assert_int_equal(our_status(f, AGENT_STATE_ONLINE).round, 51);
}

/* A coordinator restored from an older checkpoint starts a newer
 * generation; a model of an older one is refused, and our status (with the
 * generation we follow) tells the coordinator, at most every 5 s. */
static void test_older_generation_is_refused_and_told(void **state)
{
    fixture *f = *state;
    start_and_join(f);
    esgd_coordinator *newer = new_coordinator(&f->cfg, 3);
    agent_actions todo = deliver_round_model(f, newer);
    the(todo, AGENT_ACTION_PUBLISH_UPDATE);
    assert_int_equal(our_status(f, AGENT_STATE_ONLINE).generation, 3);

    todo = deliver_round_model(f, f->coordinator); /* generation 1 */
    expect_kinds(todo, AGENT_ACTION_LOG, AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(todo.list[0].level, AGENT_LOG_WARN);
    expect_text(&todo.list[0], "model of coordinator generation 1, agent follows 3; telling the coordinator");
    assert_int_equal(todo.list[1].state, AGENT_STATE_ONLINE);
    f->now += 4.5;
    expect_kinds(deliver_latest_model(f, f->coordinator), -1);
    f->now += 0.5;
    expect_kinds(deliver_latest_model(f, f->coordinator), AGENT_ACTION_LOG, AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(agent_session_ignored(f->session)[ESGD_ERR_STALE], 3);
    coordinator_free(newer);
}

/* A model of another run (a retained one at a re-run) is counted, quietly. */
static void test_model_of_another_run_is_counted_quietly(void **state)
{
    fixture *f = *state;
    start_and_join(f);
    esgd_job_config previous = f->cfg;
    previous.run = TEST_RUN + 1;
    esgd_coordinator *old = new_coordinator(&previous, 7);
    f->now += 10;
    expect_kinds(deliver_latest_model(f, old), -1);
    assert_int_equal(agent_session_ignored(f->session)[ESGD_ERR_STALE], 1);
    coordinator_free(old);
}

static void test_forged_model_is_ignored(void **state)
{
    fixture *f = *state;
    start_and_join(f);
    const uint8_t *msg;
    size_t size;
    esgd_error err = {0};
    assert_int_equal(coordinator_round_model(f->coordinator, &msg, &size, &err), ESGD_OK);
    uint8_t *copy = malloc(size);
    memcpy(copy, msg, size);
    copy[size / 2] ^= 0x10;
    agent_actions todo = deliver(f, AGENT_MESSAGE_ROUND_MODEL, copy, size);
    expect_kinds(todo, AGENT_ACTION_IGNORED, -1);
    assert_int_equal(todo.list[0].message, AGENT_MESSAGE_ROUND_MODEL);
    assert_int_equal(todo.list[0].reason, ESGD_ERR_SIGNATURE);
    assert_int_equal(agent_session_ignored(f->session)[ESGD_ERR_SIGNATURE], 1);
    expect_kinds(deliver(f, AGENT_MESSAGE_ROUND_MODEL, NULL, 0), -1); /* a cleared topic */
    free(copy);
}

/* Models before a run is joined are not looked at. */
static void test_model_before_a_run_is_not_looked_at(void **state)
{
    fixture *f = *state;
    agent_session_start(f->session);
    expect_kinds(deliver_round_model(f, f->coordinator), -1);
    expect_kinds(deliver_latest_model(f, f->coordinator), -1);
    for (int s = 0; s < ESGD_STATUS_COUNT; s++)
        assert_int_equal(agent_session_ignored(f->session)[s], 0);
}

/* Runs the coordinator's rounds to the end with no updates. */
static void finish_job(fixture *f)
{
    const uint8_t *msg;
    size_t size;
    esgd_error err = {0};
    while (!coordinator_done(f->coordinator)) {
        assert_int_equal(coordinator_round_model(f->coordinator, &msg, &size, &err), ESGD_OK);
        close_round(f);
    }
}

/* A run that ended before we took part: its retained final model says so,
 * and the agent waits for a new run, which it then joins in-process. */
static void test_finished_run_waits_for_a_new_one(void **state)
{
    fixture *f = *state;
    finish_job(f);
    start_and_join(f);
    agent_actions todo = deliver_latest_model(f, f->coordinator);
    expect_kinds(todo, AGENT_ACTION_UNSUBSCRIBE, AGENT_ACTION_LOG, -1);
    char line[128];
    snprintf(line, sizeof line, "run %016llx of job unit has already finished; waiting for a new run",
             (unsigned long long)TEST_RUN);
    expect_text(&todo.list[1], line);
    assert_int_equal(agent_session_finished_run(f->session), TEST_RUN);
    expect_kinds(agent_session_on_reconnect(f->session), -1); /* nothing to fetch: the run is over */

    esgd_job_config next = f->cfg;
    next.run = TEST_RUN + 2;
    esgd_coordinator *c = new_coordinator(&next, 1);
    todo = deliver_config(f, c);
    expect_kinds(todo, AGENT_ACTION_LOG, AGENT_ACTION_START_RUN, AGENT_ACTION_SUBSCRIBE, AGENT_ACTION_SUBSCRIBE,
                 AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(todo.list[0].level, AGENT_LOG_INFO);
    snprintf(line, sizeof line, "job unit has a new run %016llx (was %016llx); joining it",
             (unsigned long long)next.run, (unsigned long long)TEST_RUN);
    expect_text(&todo.list[0], line);
    assert_null(agent_session_agent(f->session)); /* left: the program may free the old shard */
    join(f);
    assert_int_equal(our_status(f, AGENT_STATE_ONLINE).run, next.run);
    coordinator_free(f->coordinator);
    f->coordinator = c;
    todo = deliver_round_model(f, c);
    the(todo, AGENT_ACTION_PUBLISH_UPDATE);
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
}

/* The final model of a run we took part in ends the agent: status "done", exit 0. */
static void test_final_model_stops_the_agent(void **state)
{
    fixture *f = *state;
    start_and_join(f);
    agent_actions todo = deliver_round_model(f, f->coordinator);
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
    close_round(f);
    finish_job(f);
    todo = deliver_latest_model(f, f->coordinator);
    expect_kinds(todo, AGENT_ACTION_UNSUBSCRIBE, AGENT_ACTION_FINISHED, AGENT_ACTION_PUBLISH_STATUS,
                 AGENT_ACTION_STOP, -1);
    assert_int_equal(todo.list[1].round, job_total_rounds(&f->cfg));
    assert_int_equal(todo.list[2].state, AGENT_STATE_DONE);
    assert_int_equal(todo.list[3].exit_code, AGENT_EXIT_DONE);
    assert_int_equal(our_status(f, AGENT_STATE_DONE).round, 0);
}

/* Position of the first action of kind in todo, or -1. */
static int position_of(agent_actions todo, agent_action_kind kind)
{
    for (uint32_t i = 0; i < todo.count; i++)
        if (todo.list[i].kind == kind)
            return (int)i;
    return -1;
}

/* Answers the next round; whether the state was saved (before the update). */
static bool answer_and_close(fixture *f)
{
    agent_actions todo = deliver_round_model(f, f->coordinator);
    int save = position_of(todo, AGENT_ACTION_SAVE_STATE), update = position_of(todo, AGENT_ACTION_PUBLISH_UPDATE);
    assert_true(update >= 0);
    assert_true(save < update);
    if (save >= 0)
        assert_int_equal(todo.list[save].on_failure, AGENT_ON_FAILURE_STOP);
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
    close_round(f);
    return save >= 0;
}

/* With save_every 3 and save_interval 10 s: the state is saved before
 * every third new round's update, or at the first one 10 s after the last
 * save; at a stop and at the job's end if rounds are unsaved, never twice. */
static void test_state_is_saved_every_n_rounds_or_seconds(void **state)
{
    fixture *f = *state;
    agent_session_free(f->session);
    const agent_session_options o = {.job = "unit", .id = 0, .key = &agent_secret[0],
                                     .coordinator = &coordinator_public, .clock = fixture_clock, .clock_ctx = f,
                                     .save_every = 3, .save_interval = 10};
    esgd_error err = {0};
    assert_non_null(f->session = agent_session_new(&o, &err));
    start_and_join(f);
    assert_int_equal(agent_session_on_stop(f->session).count, 0); /* nothing answered: nothing to save */
    for (uint32_t round = 0; round < 7; round++) {
        f->now += 1;
        assert_int_equal(answer_and_close(f), round == 2 || round == 5);
    }
    f->now += 11; /* round 7: 2 rounds unsaved, but 12 s since the save */
    assert_true(answer_and_close(f));
    assert_int_equal(agent_session_on_stop(f->session).count, 0);
    f->now += 1;
    assert_false(answer_and_close(f)); /* round 8 */
    agent_actions todo = agent_session_on_stop(f->session);
    expect_kinds(todo, AGENT_ACTION_SAVE_STATE, -1);
    assert_int_equal(todo.list[0].on_failure, AGENT_ON_FAILURE_WARN);
    assert_int_equal(agent_session_on_stop(f->session).count, 0);
    /* Rounds 9 to 11 (the job has 12): saved at 11, so the end saves nothing. */
    for (uint32_t round = 9; round < 12; round++)
        assert_int_equal(answer_and_close(f), round == 11);
    finish_job(f);
    todo = deliver_latest_model(f, f->coordinator);
    assert_int_equal(position_of(todo, AGENT_ACTION_SAVE_STATE), -1);
}

/* The job ends with rounds unsaved: they are saved before it finishes. */
static void test_job_end_saves_unsaved_rounds(void **state)
{
    fixture *f = *state;
    agent_session_free(f->session);
    const agent_session_options o = {.job = "unit", .id = 0, .key = &agent_secret[0],
                                     .coordinator = &coordinator_public, .clock = fixture_clock, .clock_ctx = f,
                                     .save_every = 100};
    esgd_error err = {0};
    assert_non_null(f->session = agent_session_new(&o, &err));
    start_and_join(f);
    assert_false(answer_and_close(f));
    finish_job(f);
    agent_actions todo = deliver_latest_model(f, f->coordinator);
    expect_kinds(todo, AGENT_ACTION_UNSUBSCRIBE, AGENT_ACTION_SAVE_STATE, AGENT_ACTION_FINISHED,
                 AGENT_ACTION_PUBLISH_STATUS, AGENT_ACTION_STOP, -1);
    assert_int_equal(todo.list[1].on_failure, AGENT_ON_FAILURE_WARN);
    assert_int_equal(agent_session_on_stop(f->session).count, 0);
}

/* A new run while ours is unfinished: a warning, and the agent joins it. */
static void test_new_run_while_unfinished_is_joined(void **state)
{
    fixture *f = *state;
    start_and_join(f);
    agent_actions todo = deliver_round_model(f, f->coordinator);
    assert_int_equal(hand_over(f, todo), UPDATE_ACCEPTED);
    esgd_job_config next = f->cfg;
    next.run = TEST_RUN + 3;
    esgd_coordinator *c = new_coordinator(&next, 1);
    todo = deliver_config(f, c);
    expect_kinds(todo, AGENT_ACTION_LOG, AGENT_ACTION_START_RUN, AGENT_ACTION_SUBSCRIBE, AGENT_ACTION_SUBSCRIBE,
                 AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(todo.list[0].level, AGENT_LOG_WARN);
    expect_text(&todo.list[0], ", unfinished); joining it");
    join(f);
    status_msg s = our_status(f, AGENT_STATE_ONLINE);
    assert_int_equal(s.run, next.run);
    assert_int_equal(s.round, 0); /* nothing answered in this run */
    /* A configuration of the same run in other bytes changes nothing. */
    esgd_job_config same_run = next;
    same_run.lr = next.lr * 2;
    esgd_coordinator *again = new_coordinator(&same_run, 1);
    expect_kinds(deliver_config(f, again), -1);
    assert_int_equal(agent_session_config(f->session)->lr, next.lr);
    coordinator_free(again);
    coordinator_free(c);
}

/* An f16 value over 65504 goes out as the largest half, once reported per
 * round with the total so far. A full model with every parameter 10^4
 * makes the output layer's gradients that large. */
static void test_clamped_f16_values_are_reported(void **state)
{
    fixture *f = *state;
    f->cfg.values = VALUE_FORMAT_F16;
    coordinator_free(f->coordinator);
    f->coordinator = new_coordinator(&f->cfg, 1);
    start_and_join(f);
    uint32_t d = job_dimension(&f->cfg);
    float *values = malloc((size_t)d * sizeof(float));
    for (uint32_t i = 0; i < d; i++)
        values[i] = 1e4f;
    model_msg m = {.run = TEST_RUN, .generation = 1, .round = 0, .base_round = 0, .lr = 0.1f, .prev_loss = NAN,
                   .loss_fell = -1, .form = MODEL_FORM_FULL,
                   .params = {.dim = d, .count = d, .capacity = d, .values = values}};
    strcpy(m.job, "unit");
    esgd_error err = {0};
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, codec_model_bound(d), &err), ESGD_OK);
    if (codec_encode_model(&buf, &m, &err) != ESGD_OK || envelope_sign(&buf, &coordinator_secret, &err) != ESGD_OK)
        fail_msg("signed model: %s", err.message);
    agent_actions todo = deliver(f, AGENT_MESSAGE_LATEST_MODEL, buf.data, buf.size);
    expect_kinds(todo, AGENT_ACTION_UNSUBSCRIBE, AGENT_ACTION_LOG, AGENT_ACTION_SAVE_STATE,
                 AGENT_ACTION_PUBLISH_UPDATE, AGENT_ACTION_LOG, AGENT_ACTION_PUBLISH_STATUS, -1);
    assert_int_equal(todo.list[1].level, AGENT_LOG_WARN);
    uint64_t clamped = agent_clamped_values(agent_session_agent(f->session));
    assert_true(clamped > 0);
    char line[128];
    snprintf(line, sizeof line, "round 0: %llu update values over 65504 sent as the largest half (%llu in all)",
             (unsigned long long)clamped, (unsigned long long)clamped);
    expect_text(&todo.list[1], line);
    /* Re-sent, nothing new is clamped: no second warning. */
    todo = deliver(f, AGENT_MESSAGE_ROUND_MODEL, buf.data, buf.size);
    expect_kinds(todo, AGENT_ACTION_PUBLISH_UPDATE, AGENT_ACTION_LOG, -1);
    buffer_destroy(&buf);
    free(values);
}

static void test_options_are_checked(void **state)
{
    (void)state;
    esgd_error err = {0};
    const agent_session_options o = {.job = "unit", .key = &agent_secret[0], .coordinator = &coordinator_public};
    assert_null(agent_session_new(&o, &err)); /* no clock */
    assert_int_equal(err.status, ESGD_ERR_ARG);
    assert_null(agent_session_new(NULL, &err));
    agent_session_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options_are_checked),
        cmocka_unit_test_setup_teardown(test_start_asks_for_the_configuration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_configuration_starts_a_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_and_foreign_configurations_are_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unusable_configuration_stops_before_a_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_outside_the_job_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_is_answered_after_saving_the_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repeated_round_resends_the_stored_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missed_round_fetches_the_retained_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnection_fetches_and_republishes_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnection_without_a_model_fetches_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quiet_minute_fetches_the_retained_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_configuration_timeout_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_every_50_rounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_older_generation_is_refused_and_told, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_of_another_run_is_counted_quietly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_model_is_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_before_a_run_is_not_looked_at, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finished_run_waits_for_a_new_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_final_model_stops_the_agent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_run_while_unfinished_is_joined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_is_saved_every_n_rounds_or_seconds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_end_saves_unsaved_rounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clamped_f16_values_are_reported, setup, teardown),
    };
    return cmocka_run_group_tests(tests, setup_keys, NULL);
}
