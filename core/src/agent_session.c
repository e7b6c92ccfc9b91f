/* The agent's protocol state machine (agent_session.h): configurations in,
 * runs joined or left, models applied and rounds answered, the retained
 * model fetched when one was missed, status published when the coordinator
 * needs it. Transport-free: it returns actions and never touches a broker,
 * a topic name, a data folder or a state file. */
#include "esgd/agent_session.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SESSION_MAX_ACTIONS 8 /* the most one event asks for is 6 (a model: fetch off, clamp, save, ...) */
#define SESSION_TEXT_MAX 400  /* a line with an esgd_error message in it */

/* Re-fetch the retained model after this long without a message. */
#define SESSION_QUIET_SECONDS 60.0
/* At most one status per this long for models of an older coordinator generation. */
#define SESSION_OLDER_STATUS_SECONDS 5.0
/* A status every this many rounds keeps its round fresh. */
#define SESSION_STATUS_ROUNDS 50
/* Without a configuration this long, status "syncing" asks the coordinator
 * for one, and again every this long: a broker that keeps retained messages
 * per node (a RabbitMQ cluster) may never deliver the retained one. */
#define SESSION_CONFIG_ASK_SECONDS 2.0

struct agent_session {
    const char *job;
    uint32_t id;
    uint32_t config_timeout;
    uint32_t save_every;   /* rounds between state saves (at least 1) */
    double save_interval;  /* or seconds, whichever comes first; 0: rounds only */
    double (*clock)(void *ctx);
    void *clock_ctx;
    signing_key key;
    verify_key coordinator;
    codec_decoder *decoder;

    esgd_job_config cfg;   /* the run joined, or the one START_RUN asked for */
    uint8_t *config_bytes; /* its signed message, to notice a change */
    size_t config_size;
    esgd_agent *agent;     /* NULL until agent_session_join */
    bool joining;          /* START_RUN handed out, not joined yet */
    uint32_t shard_index, shard_parts; /* announced in our status with ... */
    uint64_t data_fp;                  /* ... a fingerprint of the shard's examples */

    bool fetching_latest;  /* subscribed to the retained full model */
    bool status_due;       /* reconnected since the status last went out with a new round */
    uint64_t clamped_seen; /* f16 clamps already reported */
    uint64_t finished_run; /* a run found already finished before we took part; 0 none */
    uint64_t ignored[ESGD_STATUS_COUNT];
    double waiting_since;         /* start: the configuration timeout counts from here */
    double last_notice;           /* last message, or last "still waiting" line */
    double older_model_status_at; /* we last told of a model of an older generation */
    double last_sent_at;          /* our last new update, 0 before the first */
    double config_asked_at;       /* we last asked for the configuration, or joined without a model, for it */
    uint32_t unsaved_rounds;      /* new rounds answered since the state was last saved (or restored) */
    double saved_at;              /* when it was, or when we joined */

    uint8_t status_bytes[CODEC_STATUS_BOUND];
    agent_action actions[SESSION_MAX_ACTIONS];
    char text[SESSION_MAX_ACTIONS][SESSION_TEXT_MAX];
    uint32_t count;
};

/* ---- the action list ---- */

static agent_action *push(agent_session *s, agent_action_kind kind)
{
    assert(s->count < SESSION_MAX_ACTIONS);
    agent_action *a = &s->actions[s->count++];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    return a;
}

static void vtext(agent_session *s, agent_action *a, const char *fmt, va_list ap)
{
    char *text = s->text[a - s->actions];
    vsnprintf(text, SESSION_TEXT_MAX, fmt, ap);
    a->text = text;
}

static void say(agent_session *s, agent_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(agent_session *s, agent_log_level level, const char *fmt, ...)
{
    agent_action *a = push(s, AGENT_ACTION_LOG);
    a->level = level;
    va_list ap;
    va_start(ap, fmt);
    vtext(s, a, fmt, ap);
    va_end(ap);
}

static void ignored(agent_session *s, agent_message_kind message, esgd_status reason, const char *why)
{
    agent_action *a = push(s, AGENT_ACTION_IGNORED);
    a->message = message;
    a->reason = reason;
    snprintf(s->text[a - s->actions], SESSION_TEXT_MAX, "%s", why);
    a->text = s->text[a - s->actions];
}

static void stop(agent_session *s, agent_exit code)
{
    push(s, AGENT_ACTION_STOP)->exit_code = (int)code;
}

static void subscription(agent_session *s, bool on, agent_channel channel, agent_on_failure on_failure)
{
    agent_action *a = push(s, on ? AGENT_ACTION_SUBSCRIBE : AGENT_ACTION_UNSUBSCRIBE);
    a->channel = channel;
    a->on_failure = on_failure;
}

static void publish_status(agent_session *s, agent_state state)
{
    push(s, AGENT_ACTION_PUBLISH_STATUS)->state = state; /* a failed status only warns */
}

/* Subscribed to the retained full model only while we need it: it brings
 * a missed round (or a round answered again) and costs a full model. */
static void fetch_latest(agent_session *s, bool on, agent_on_failure on_failure)
{
    if (s->fetching_latest == on)
        return;
    s->fetching_latest = on;
    subscription(s, on, AGENT_CHANNEL_LATEST_MODEL, on_failure);
}

/* We lack the current model (we missed a round, the link was down, or
 * nothing came for a while): the retained one may be some rounds old (the
 * coordinator publishes it every few rounds), so our status "syncing" also
 * asks the coordinator, which sends the current one to us alone. Whichever
 * comes, the newer round wins; "online" goes out again with our next
 * answer. */
static void ask_for_model(agent_session *s, agent_on_failure on_failure)
{
    fetch_latest(s, true, on_failure);
    publish_status(s, AGENT_STATE_SYNCING);
    s->status_due = true;
}

static agent_actions done(agent_session *s)
{
    return (agent_actions){s->actions, s->count};
}

static double now(const agent_session *s)
{
    return s->clock(s->clock_ctx);
}

/* Saves the state (the program keeps it, or does nothing without a state
 * folder); rounds answered from now on count toward the next save. */
static void save_state(agent_session *s, agent_on_failure on_failure)
{
    push(s, AGENT_ACTION_SAVE_STATE)->on_failure = on_failure;
    s->unsaved_rounds = 0;
    s->saved_at = now(s);
}

/* ---- lifecycle ---- */

agent_session *agent_session_new(const agent_session_options *o, esgd_error *err)
{
    if (!o || !o->job || !o->key || !o->coordinator || !o->clock) {
        esgd_error_set(err, ESGD_ERR_ARG, "agent session: job, keys and clock are required");
        return NULL;
    }
    agent_session *s = calloc(1, sizeof *s);
    if (!s) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->job = o->job;
    s->id = o->id;
    s->config_timeout = o->config_timeout;
    s->save_every = o->save_every ? o->save_every : 1;
    s->save_interval = o->save_interval > 0 ? o->save_interval : 0;
    s->clock = o->clock;
    s->clock_ctx = o->clock_ctx;
    s->key = *o->key;
    s->coordinator = *o->coordinator;
    if (!(s->decoder = codec_decoder_new(err))) {
        free(s);
        return NULL;
    }
    return s;
}

/* Leaves the run (to take another run of the job). */
static void leave_run(agent_session *s)
{
    s->clamped_seen = 0;
    s->unsaved_rounds = 0;
    agent_free(s->agent);
    s->agent = NULL;
    free(s->config_bytes);
    s->config_bytes = NULL;
    s->config_size = 0;
    s->fetching_latest = false;
}

void agent_session_free(agent_session *s)
{
    if (!s)
        return;
    leave_run(s);
    codec_decoder_free(s->decoder);
    free(s);
}

/* ---- events ---- */

agent_actions agent_session_start(agent_session *s)
{
    s->count = 0;
    /* A restart can leave the retained model's subscription in the broker's
     * session for us (we were fetching it); we ask for it when we need it. */
    subscription(s, true, AGENT_CHANNEL_CONFIG, AGENT_ON_FAILURE_STOP);
    subscription(s, false, AGENT_CHANNEL_LATEST_MODEL, AGENT_ON_FAILURE_STOP);
    subscription(s, true, AGENT_CHANNEL_OWN_MODEL, AGENT_ON_FAILURE_STOP);
    subscription(s, true, AGENT_CHANNEL_OWN_CONFIG, AGENT_ON_FAILURE_STOP);
    publish_status(s, AGENT_STATE_ONLINE);
    say(s, AGENT_LOG_INFO, "waiting for the configuration of job %s", s->job);
    s->waiting_since = s->last_notice = s->config_asked_at = now(s);
    return done(s);
}

agent_actions agent_session_on_reconnect(agent_session *s)
{
    s->count = 0;
    /* What was published meanwhile may be gone with the broker's state, so
     * ask for the current model (a model of the round we answered makes us
     * send the answer again). The broker replaced our retained status with
     * the Last Will: "syncing" replaces it, "online" follows with the next
     * new round. */
    if (s->agent && agent_has_model(s->agent))
        ask_for_model(s, AGENT_ON_FAILURE_WARN);
    s->status_due = true;
    return done(s);
}

agent_actions agent_session_on_idle(agent_session *s)
{
    s->count = 0;
    double t = now(s);
    if (!s->agent && s->config_timeout && t - s->waiting_since >= s->config_timeout) {
        say(s, AGENT_LOG_ERROR, "no configuration for job %s after %u s", s->job, s->config_timeout);
        stop(s, AGENT_EXIT_RUNTIME);
        return done(s);
    }
    if (!s->agent && t - s->config_asked_at >= SESSION_CONFIG_ASK_SECONDS) {
        publish_status(s, AGENT_STATE_SYNCING); /* run 0: the configuration, please */
        s->config_asked_at = t;
    }
    /* Joined, but no model came (the retained one is on another node, or
     * the round's was sent before we subscribed): ask, as often. */
    if (s->agent && !agent_has_model(s->agent) && !agent_job_done(s->agent) &&
        t - s->config_asked_at >= SESSION_CONFIG_ASK_SECONDS) {
        ask_for_model(s, AGENT_ON_FAILURE_WARN);
        s->config_asked_at = t;
    }
    if (t - s->last_notice >= SESSION_QUIET_SECONDS) {
        /* A model can be lost on the way without our link noticing (a
         * broker restart between two keepalives): ask for the retained one,
         * which also makes us re-send our answer. */
        if (s->agent)
            ask_for_model(s, AGENT_ON_FAILURE_WARN);
        if (s->agent)
            say(s, AGENT_LOG_INFO, "waiting for the model after round %u; asked for the current one",
                agent_current_round(s->agent));
        else
            say(s, AGENT_LOG_INFO, "still waiting for the configuration of job %s", s->job);
        s->last_notice = t;
    }
    return done(s);
}

/* A configuration: the first one starts a run, a changed one of another
 * run makes us leave ours and join it. */
static void on_config(agent_session *s, const uint8_t *data, size_t size)
{
    if (size == 0)
        return; /* retained configuration cleared */
    if (s->agent && size == s->config_size && memcmp(data, s->config_bytes, size) == 0)
        return;
    /* Only the coordinator's signature makes a configuration count; a
     * forged one is ignored, never obeyed. */
    esgd_error err = {0};
    esgd_job_config cfg;
    size_t body = 0;
    esgd_status st = envelope_open(data, size, &s->coordinator, &body, &err);
    if (st == ESGD_OK)
        st = codec_decode_config(s->decoder, data, body, &cfg, &err);
    if (st == ESGD_OK && strcmp(cfg.job, s->job) != 0)
        st = esgd_error_set(&err, ESGD_ERR_MISMATCH, "configuration of job '%s'", cfg.job);
    if (st != ESGD_OK) {
        s->ignored[st]++;
        if (s->agent || st == ESGD_ERR_SIGNATURE || st == ESGD_ERR_MISMATCH) {
            ignored(s, AGENT_MESSAGE_CONFIG, st, err.message);
            return;
        }
        /* Signed by our coordinator, yet unusable here: a newer version or
         * a setting this build lacks. */
        say(s, AGENT_LOG_ERROR, "job configuration on the broker is unusable: %s", err.message);
        stop(s, AGENT_EXIT_USAGE);
        return;
    }
    if (s->agent) {
        if (cfg.run == s->cfg.run)
            return;
        bool unfinished = agent_answered_round(s->agent, NULL) && !agent_job_done(s->agent);
        say(s, unfinished ? AGENT_LOG_WARN : AGENT_LOG_INFO, "job %s has a new run %016llx (was %016llx%s); joining it",
            s->job, (unsigned long long)cfg.run, (unsigned long long)s->cfg.run, unfinished ? ", unfinished" : "");
        leave_run(s);
    }
    s->cfg = cfg;
    if (s->id >= cfg.agents) {
        say(s, AGENT_LOG_ERROR, "agent id %u, but job %s has agents 0..%u", s->id, cfg.job, cfg.agents - 1);
        stop(s, AGENT_EXIT_USAGE);
        return;
    }
    if (!(s->config_bytes = malloc(size))) {
        say(s, AGENT_LOG_ERROR, "out of memory");
        stop(s, AGENT_EXIT_RUNTIME);
        return;
    }
    memcpy(s->config_bytes, data, size);
    s->config_size = size;
    s->joining = true;
    s->config_asked_at = now(s); /* the model's turn: asked for 2 s from now if none comes */
    push(s, AGENT_ACTION_START_RUN);
    subscription(s, true, AGENT_CHANNEL_ROUND_MODELS, AGENT_ON_FAILURE_STOP);
    /* The retained model first: at the start of a run it is the current one.
     * If it is some rounds old, the next round's delta will not apply and
     * we ask the coordinator then (ask_for_model): one round at most. */
    fetch_latest(s, true, AGENT_ON_FAILURE_STOP);
    /* Now with the run, our data and the round our state last answered,
     * which the coordinator checks. */
    publish_status(s, AGENT_STATE_ONLINE);
}

/* A model of another run, or of an older start of our coordinator: a newer
 * one was restored to less than we have seen. Our status (with our
 * generation) lets it move above ours; at most every 5 s. */
static void on_stale_model(agent_session *s, uint64_t older_before, const char *why)
{
    s->ignored[ESGD_ERR_STALE]++; /* a retained model of an earlier run, normal at a re-run */
    double t = now(s);
    if (agent_older_generation_models(s->agent) != older_before &&
        t - s->older_model_status_at >= SESSION_OLDER_STATUS_SECONDS) {
        say(s, AGENT_LOG_WARN, "%s; telling the coordinator", why);
        s->older_model_status_at = t;
        publish_status(s, AGENT_STATE_ONLINE);
    }
}

/* The model of a round we have to answer: compute (or take the answer we
 * sent), keep it durable, send it. */
static void answer_round(agent_session *s)
{
    esgd_agent *agent = s->agent;
    uint32_t round = agent_current_round(agent), answered = 0;
    bool repeat = agent_answered_round(agent, &answered) && answered == round;
    const uint8_t *msg;
    size_t size;
    esgd_error err = {0};
    double started = now(s);
    if (agent_compute_update(agent, &msg, &size, &err) != ESGD_OK) {
        say(s, AGENT_LOG_ERROR, "round %u: %s", round, err.message);
        stop(s, AGENT_EXIT_RUNTIME);
        return;
    }
    double seconds = now(s) - started;
    uint64_t clamped = agent_clamped_values(agent);
    if (clamped != s->clamped_seen) {
        say(s, AGENT_LOG_WARN, "round %u: %llu update values over 65504 sent as the largest half (%llu in all)", round,
            (unsigned long long)(clamped - s->clamped_seen), (unsigned long long)clamped);
        s->clamped_seen = clamped;
    }
    /* Every save_every new rounds, or save_interval seconds, the state (with
     * this very update in it) is made durable before the update leaves. A
     * crash restarts from the last save: on its round, re-sending the same
     * bytes, if no newer round was answered since (save_every 1 makes that
     * always so); otherwise on whatever round the coordinator opens then,
     * with the older eSGD state (docs/algorithm.md section 6). */
    if (!repeat) {
        s->unsaved_rounds++;
        if (s->unsaved_rounds >= s->save_every || (s->save_interval > 0 && started - s->saved_at >= s->save_interval))
            save_state(s, AGENT_ON_FAILURE_STOP);
    }
    agent_action *a = push(s, AGENT_ACTION_PUBLISH_UPDATE);
    a->on_failure = AGENT_ON_FAILURE_STOP;
    a->round = round;
    a->data = msg;
    a->size = size;
    if (repeat) {
        say(s, AGENT_LOG_INFO, "round %u: re-sent the update (%zu bytes)", round, size);
        return;
    }
    /* From our last update to this model: for the agent that reported last,
     * that is the round's whole overhead (broker, coordinator, broker), with
     * no compute in it; bench/broker-bench.sh takes the minimum over agents. */
    char waited[64] = "";
    if (s->last_sent_at > 0)
        snprintf(waited, sizeof waited, ", model %.3f ms after our last update", (started - s->last_sent_at) * 1e3);
    s->last_sent_at = now(s);
    say(s, AGENT_LOG_INFO, "round %u: loss %.4f, sent %u entries in %zu bytes (%.1f ms compute%s)", round,
        (double)agent_last_loss(agent), agent_last_count(agent), size, seconds * 1e3, waited);
    /* The status is retained and the broker replaces it with our "offline"
     * Last Will if the connection drops, so it is published again after a
     * reconnection, and otherwise only now and then to keep its round fresh. */
    if (s->status_due || round % SESSION_STATUS_ROUNDS == 0) {
        publish_status(s, AGENT_STATE_ONLINE);
        s->status_due = false;
    }
}

/* A model arrived: apply it, then answer its round (or re-send the answer:
 * the coordinator counts a repeat once). */
static void on_model(agent_session *s, agent_message_kind kind, const uint8_t *data, size_t size)
{
    bool latest = kind != AGENT_MESSAGE_ROUND_MODEL; /* a full model we asked for */
    if (!s->agent || size == 0)
        return;
    esgd_error err = {0};
    uint64_t older = agent_older_generation_models(s->agent);
    esgd_status st = agent_apply_model(s->agent, data, size, &err);
    if (st == ESGD_ERR_STALE) {
        on_stale_model(s, older, err.message);
        return;
    }
    if (st == ESGD_ERR_MISMATCH) {
        /* A delta for a model we do not hold: we missed a round. */
        say(s, AGENT_LOG_WARN, "%s; asking for the current model", err.message);
        ask_for_model(s, AGENT_ON_FAILURE_STOP_QUIETLY);
        return;
    }
    if (st != ESGD_OK) {
        s->ignored[st]++;
        ignored(s, kind, st, err.message);
        return;
    }
    if (!agent_has_model(s->agent) && !agent_job_done(s->agent)) {
        /* Older than the round our restored state answered: ask for the
         * current one (the retained model may be rounds old). */
        ask_for_model(s, AGENT_ON_FAILURE_WARN);
        return;
    }
    if (latest)
        fetch_latest(s, false, AGENT_ON_FAILURE_WARN);
    if (agent_job_done(s->agent) && !agent_answered_round(s->agent, NULL)) {
        /* The run ended before we took part in it: the retained final model
         * of an earlier run of this job. Wait for the next run. */
        say(s, AGENT_LOG_INFO, "run %016llx of job %s has already finished; waiting for a new run",
            (unsigned long long)s->cfg.run, s->cfg.job);
        s->finished_run = s->cfg.run;
        fetch_latest(s, false, AGENT_ON_FAILURE_WARN);
        return;
    }
    if (agent_job_done(s->agent)) {
        if (s->unsaved_rounds) /* the last rounds' state, for a restart to find the job done */
            save_state(s, AGENT_ON_FAILURE_WARN);
        push(s, AGENT_ACTION_FINISHED)->round = agent_current_round(s->agent);
        publish_status(s, AGENT_STATE_DONE);
        stop(s, AGENT_EXIT_DONE);
        return;
    }
    if (agent_has_model(s->agent))
        answer_round(s);
}

agent_actions agent_session_on_message(agent_session *s, agent_message_kind kind, const uint8_t *data, size_t size)
{
    assert(!s->joining); /* START_RUN is followed by agent_session_join */
    s->count = 0;
    s->last_notice = now(s);
    if (kind == AGENT_MESSAGE_CONFIG)
        on_config(s, data, size);
    else if (kind == AGENT_MESSAGE_ROUND_MODEL || kind == AGENT_MESSAGE_LATEST_MODEL ||
             kind == AGENT_MESSAGE_OWN_MODEL)
        on_model(s, kind, data, size);
    return done(s);
}

agent_actions agent_session_on_stop(agent_session *s)
{
    s->count = 0;
    if (s->agent && s->unsaved_rounds)
        save_state(s, AGENT_ON_FAILURE_WARN);
    return done(s);
}

esgd_status agent_session_join(agent_session *s, const esgd_dataset *shard, uint32_t shard_index,
                               uint32_t shard_parts, esgd_error *err)
{
    assert(s->joining && !s->agent);
    s->joining = false;
    s->unsaved_rounds = 0;
    s->saved_at = now(s);
    s->shard_index = shard_index;
    s->shard_parts = shard_parts;
    s->data_fp = dataset_fingerprint(shard);
    if (!(s->agent = agent_new(&s->cfg, s->id, shard, err)))
        return err ? err->status : ESGD_ERR_ARG;
    agent_set_keys(s->agent, &s->key, &s->coordinator);
    return ESGD_OK;
}

/* ---- what the program reads ---- */

const esgd_job_config *agent_session_config(const agent_session *s)
{
    return &s->cfg;
}

esgd_agent *agent_session_agent(agent_session *s)
{
    return s->agent;
}

uint64_t agent_session_finished_run(const agent_session *s)
{
    return s->finished_run;
}

const uint64_t *agent_session_ignored(const agent_session *s)
{
    return s->ignored;
}

esgd_status agent_session_status_message(agent_session *s, agent_state state, const uint8_t **msg, size_t *size,
                                         esgd_error *err)
{
    esgd_buffer buf = {s->status_bytes, 0, sizeof s->status_bytes};
    status_msg m;
    memset(&m, 0, sizeof m);
    snprintf(m.job, sizeof m.job, "%s", s->job);
    m.run = s->agent ? s->cfg.run : 0;
    m.agent = s->id;
    m.state = state;
    uint32_t round = 0;
    if (s->agent) {
        agent_answered_round(s->agent, &round);
        m.generation = agent_generation(s->agent);
        m.has_data = true;
        m.shard = s->shard_index;
        m.shards = s->shard_parts;
        m.data_fp = s->data_fp;
    }
    m.round = round;
    esgd_status st = codec_encode_status(&buf, &m, err);
    if (st == ESGD_OK)
        st = envelope_sign(&buf, &s->key, err);
    if (st == ESGD_OK) {
        *msg = buf.data;
        *size = buf.size;
    }
    return st;
}
