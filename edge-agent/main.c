/* esgd-agent: one edge gateway's side of an eSGD job over MQTT. It needs
 * only the broker, the job name, its id, its data and its shard; the rest
 * comes from the coordinator's retained job configuration. This file owns
 * the I/O: the broker link and the topics, loading the data, the state
 * folder, logging and signals. What to do when (answer or re-send a round,
 * fetch the retained model, publish status, join a new run, stop) is the
 * core's agent session (agent_session.h), whose actions this file carries
 * out; the round itself (model in, update out) is agent.h's. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "esgd/agent.h"
#include "esgd/agent_session.h"
#include "esgd/cli.h"
#include "esgd/codec.h"
#include "esgd/envelope.h"
#include "esgd/job_data.h"
#include "esgd/log.h"
#include "esgd/mqtt_link.h"
#include "esgd/mqtt_link_cli.h"
#include "esgd/state_file.h"
#include "esgd/topics.h"
#include "esgd/runtime.h"

#define AGENT_CONTINUE (-1) /* carry_out: go on with the loop (else an agent_exit) */

typedef struct settings {
    mqtt_link_options link; /* broker settings; client id and Last Will set at connect */
    const char *job, *data_dir, *shard, *state_dir, *keys_dir;
    uint32_t id, config_timeout;
    uint32_t save_every; /* rounds between state saves */
    double save_interval; /* or seconds */
} settings;

typedef struct agent_run {
    settings set;
    mqtt_link *link;
    agent_session *session;
    signing_key key;        /* ours: updates and status */
    verify_key coordinator; /* every configuration and model must carry its signature */
    esgd_dataset shard;     /* the current run's examples (the session's agent borrows them) */
    char state_path[4096];
} agent_run;

static double session_clock(void *ctx)
{
    (void)ctx;
    return monotonic_seconds();
}

static esgd_status publish_status(agent_run *r, agent_state state, esgd_error *err)
{
    const uint8_t *msg;
    size_t size;
    char topic[TOPIC_MAX];
    topic_status(topic, r->set.job, r->set.id);
    esgd_status st = agent_session_status_message(r->session, state, &msg, &size, err);
    if (st == ESGD_OK)
        st = mqtt_link_publish(r->link, topic, msg, size, 1, true, err);
    return st;
}

/* A state file this agent cannot continue from (another run or job, or
 * damaged) is kept for a look, under a new name, and the agent starts
 * afresh from the retained model: refusing to start would only loop. */
static void move_state_aside(agent_run *r, const char *why)
{
    char aside[4200];
    snprintf(aside, sizeof aside, "%s.unusable-%lld", r->state_path, (long long)time(NULL));
    if (rename(r->state_path, aside) == 0)
        log_warn("state %s not used (%s); moved to %s, starting afresh", r->state_path, why, aside);
    else
        log_warn("state %s not used (%s), and it cannot be moved aside: %s", r->state_path, why, strerror(errno));
}

/* "i/N": this agent trains on shard i of N (default: id/agents). */
static int parse_shard(const char *text, uint32_t *index, uint32_t *parts)
{
    char *end;
    errno = 0;
    unsigned long i = strtoul(text, &end, 10);
    if (errno || end == text || *end != '/')
        return -1;
    const char *second = end + 1;
    unsigned long n = strtoul(second, &end, 10);
    if (errno || end == second || *end != '\0' || n == 0 || i >= n || n > UINT32_MAX)
        return -1;
    *index = (uint32_t)i;
    *parts = (uint32_t)n;
    return 0;
}

/* AGENT_ACTION_START_RUN: loads our shard of the run's data, has the
 * session build the agent on it, and continues from the state folder. */
static int start_run(agent_run *r, esgd_error *err)
{
    const esgd_job_config *cfg = agent_session_config(r->session);
    dataset_destroy(&r->shard); /* the previous run's, whose agent is gone */
    uint32_t index = r->set.id, parts = cfg->agents, train_samples = 0;
    /* Own data announces our id as the shard, so only the data's
     * fingerprint can match another agent's. */
    bool own = r->set.shard && strcmp(r->set.shard, "all") == 0;
    if (r->set.shard && !own && parse_shard(r->set.shard, &index, &parts) != 0) {
        esgd_error_set(err, ESGD_ERR_ARG, "--shard '%s': expected i/N with i < N, or all", r->set.shard);
        return AGENT_EXIT_USAGE;
    }
    /* Streamed: the examples stay in the IDX file and each round reads its
     * minibatch, so memory does not grow with the data. */
    if (own) {
        if (job_load_own(cfg, r->set.data_dir, DATASET_STREAMED, &r->shard, err) != ESGD_OK)
            return AGENT_EXIT_RUNTIME;
    } else {
        if (job_load_shard(cfg, r->set.data_dir, index, parts, DATASET_STREAMED, &r->shard, &train_samples, err) !=
            ESGD_OK)
            return AGENT_EXIT_RUNTIME;
        if (train_samples != cfg->train_samples)
            log_warn("local training set has %u examples, the job assumes %u", train_samples, cfg->train_samples);
    }
    if (agent_session_join(r->session, &r->shard, index, parts, err) != ESGD_OK)
        return AGENT_EXIT_USAGE;
    esgd_agent *agent = agent_session_agent(r->session);
    if (r->set.state_dir) {
        if (mkdir(r->set.state_dir, 0755) != 0 && errno != EEXIST) {
            esgd_error_set(err, ESGD_ERR_IO, "cannot create state dir %s: %s", r->set.state_dir, strerror(errno));
            return AGENT_EXIT_RUNTIME;
        }
        snprintf(r->state_path, sizeof r->state_path, "%s/agent-%s-%u.state", r->set.state_dir, cfg->job, r->set.id);
        if (state_file_exists(r->state_path)) {
            uint32_t answered = 0;
            if (agent_restore(agent, r->state_path, err) != ESGD_OK)
                move_state_aside(r, err->message);
            else if (agent_answered_round(agent, &answered))
                log_info("restored eSGD state from %s (last answered round %u)", r->state_path, answered);
        }
    }
    log_info("job %s run %016llx: %s %s drop %g, %s %u/%u with %u examples", cfg->job,
             (unsigned long long)cfg->run, cfg->model, sparsify_method_name(cfg->sparsify.method),
             cfg->sparsify.drop_ratio, own ? "own data, id" : "shard", index, parts, r->shard.count);
    return AGENT_EXIT_DONE;
}

static void channel_topic(const agent_run *r, agent_channel channel, char out[TOPIC_MAX])
{
    switch (channel) {
    case AGENT_CHANNEL_CONFIG:
        topic_config(out, r->set.job);
        break;
    case AGENT_CHANNEL_ROUND_MODELS:
        topic_filter_round_models(out, r->set.job);
        break;
    case AGENT_CHANNEL_LATEST_MODEL:
        topic_latest_model(out, r->set.job);
        break;
    case AGENT_CHANNEL_OWN_MODEL:
        topic_agent_model(out, r->set.job, r->set.id);
        break;
    case AGENT_CHANNEL_OWN_CONFIG:
        topic_agent_config(out, r->set.job, r->set.id);
        break;
    }
}

static agent_message_kind message_kind(const agent_run *r, const char *topic)
{
    topic_info t = topic_parse(topic, r->set.job);
    switch (t.kind) {
    case TOPIC_CONFIG:
        return AGENT_MESSAGE_CONFIG;
    case TOPIC_ROUND_MODEL:
        return AGENT_MESSAGE_ROUND_MODEL;
    case TOPIC_LATEST_MODEL:
        return AGENT_MESSAGE_LATEST_MODEL;
    case TOPIC_AGENT_MODEL: /* only ours is subscribed; another id's is not for us */
        return t.agent == r->set.id ? AGENT_MESSAGE_OWN_MODEL : AGENT_MESSAGE_OTHER;
    case TOPIC_AGENT_CONFIG:
        return t.agent == r->set.id ? AGENT_MESSAGE_CONFIG : AGENT_MESSAGE_OTHER;
    default:
        return AGENT_MESSAGE_OTHER;
    }
}

/* Floods of forged or stale messages cost one log line per 10 s each. */
static log_limiter model_ignored_log = LOG_LIMITER(10), config_ignored_log = LOG_LIMITER(10);

static void log_line(agent_log_level level, const char *text)
{
    if (level == AGENT_LOG_ERROR)
        log_error("%s", text);
    else if (level == AGENT_LOG_WARN)
        log_warn("%s", text);
    else
        log_info("%s", text);
}

/* One line a save: the round it holds and its size. */
static void log_state_saved(agent_run *r)
{
    esgd_agent *agent = agent_session_agent(r->session);
    uint64_t bytes = 0, saves = agent_saves(agent, &bytes);
    uint32_t round = 0;
    bool answered = agent_answered_round(agent, &round);
    log_info("state saved to %s (%s %u, save %llu, %llu bytes so far)", r->state_path,
             answered ? "last answered round" : "no round answered, round", round, (unsigned long long)saves,
             (unsigned long long)bytes);
}

/* The bytes this process has caused to be written to storage (Linux's
 * /proc/self/io write_bytes), or -1 where it cannot be read. */
static long long storage_write_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    long long bytes = -1;
    char line[128];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "write_bytes: %lld", &bytes) == 1)
            break;
    if (f)
        fclose(f);
    return bytes;
}

/* What the state cost the storage in this run: files, bytes, bytes a round,
 * and what the kernel counted as written to storage. */
static void log_state_written(agent_run *r)
{
    esgd_agent *agent = agent_session_agent(r->session);
    if (!agent)
        return;
    uint64_t bytes = 0, saves = agent_saves(agent, &bytes), rounds = agent_updates_computed(agent);
    log_info("state: %llu saves, %llu bytes written for %llu rounds computed (%.0f bytes a round); "
             "storage write_bytes %lld (/proc/self/io)",
             (unsigned long long)saves, (unsigned long long)bytes, (unsigned long long)rounds,
             rounds ? (double)bytes / (double)rounds : 0.0, storage_write_bytes());
}

/* Carries out the session's actions in order; topic: of the message they
 * answer (NULL for other events). AGENT_CONTINUE, or the exit status. */
static int carry_out(agent_run *r, agent_actions todo, const char *topic)
{
    for (uint32_t i = 0; i < todo.count; i++) {
        const agent_action *a = &todo.list[i];
        esgd_error err = {0};
        esgd_status st = ESGD_OK;
        char name[TOPIC_MAX];
        int rc;
        switch (a->kind) {
        case AGENT_ACTION_SUBSCRIBE:
        case AGENT_ACTION_UNSUBSCRIBE:
            channel_topic(r, a->channel, name);
            st = a->kind == AGENT_ACTION_SUBSCRIBE ? mqtt_link_subscribe(r->link, name, &err)
                                                   : mqtt_link_unsubscribe(r->link, name, &err);
            break;
        case AGENT_ACTION_START_RUN:
            if ((rc = start_run(r, &err)) != AGENT_EXIT_DONE) {
                log_error("%s", err.message);
                return rc;
            }
            break;
        case AGENT_ACTION_SAVE_STATE:
            if (r->set.state_dir && (st = agent_save(agent_session_agent(r->session), r->state_path, &err)) == ESGD_OK)
                log_state_saved(r);
            break;
        case AGENT_ACTION_PUBLISH_UPDATE:
            topic_round_grad(name, r->set.job, a->round, r->set.id);
            if (mqtt_link_publish(r->link, name, a->data, a->size, 1, false, &err) != ESGD_OK) {
                log_error("round %u: %s", a->round, err.message);
                return AGENT_EXIT_RUNTIME;
            }
            break;
        case AGENT_ACTION_PUBLISH_STATUS:
            st = publish_status(r, a->state, &err);
            break;
        case AGENT_ACTION_LOG:
            log_line(a->level, a->text);
            break;
        case AGENT_ACTION_IGNORED:
            if (a->message == AGENT_MESSAGE_CONFIG)
                log_warn_limited(&config_ignored_log, "ignoring a configuration on %s (%s): %s", topic,
                                 esgd_status_name(a->reason), a->text);
            else
                log_warn_limited(&model_ignored_log, "ignoring a model on %s (%s): %s", topic,
                                 esgd_status_name(a->reason), a->text);
            break;
        case AGENT_ACTION_FINISHED:
            log_info("job finished at round %u; peak resident set %.1f MiB", a->round, peak_resident_mib());
            log_state_written(r);
            break;
        case AGENT_ACTION_STOP:
            return a->exit_code;
        }
        if (st == ESGD_OK)
            continue;
        if (a->on_failure == AGENT_ON_FAILURE_WARN) {
            log_warn("%s", err.message);
            continue;
        }
        if (a->on_failure == AGENT_ON_FAILURE_STOP)
            log_error("%s", err.message);
        return AGENT_EXIT_RUNTIME;
    }
    return AGENT_CONTINUE;
}

static int run_loop(agent_run *r)
{
    int rc = carry_out(r, agent_session_start(r->session), NULL);
    uint64_t connects_seen = mqtt_link_get_counters(r->link).connects;
    while (rc == AGENT_CONTINUE && !stop_requested()) {
        uint64_t connects = mqtt_link_get_counters(r->link).connects;
        if (connects != connects_seen) {
            connects_seen = connects;
            if ((rc = carry_out(r, agent_session_on_reconnect(r->session), NULL)) != AGENT_CONTINUE)
                break;
        }
        mqtt_message m;
        if (!mqtt_link_next(r->link, 200, &m)) {
            rc = carry_out(r, agent_session_on_idle(r->session), NULL);
        } else if (topic_splits_job_name(m.topic, r->set.job)) {
            log_error("the broker delivered %s for job %s: it turns the '.' of job names into topic levels "
                      "(RabbitMQ's MQTT plugin does); use a job name without '.'", m.topic, r->set.job);
            rc = AGENT_EXIT_USAGE;
        } else {
            rc = carry_out(r, agent_session_on_message(r->session, message_kind(r, m.topic), m.data, m.size),
                           m.topic);
        }
    }
    return rc == AGENT_CONTINUE ? AGENT_EXIT_INTERRUPTED : rc;
}

int main(int argc, char **argv)
{
    agent_run r;
    memset(&r, 0, sizeof r);
    settings *set = &r.set;
    set->link.broker_url = "tcp://127.0.0.1:1883";
    set->link.connect_timeout_seconds = 30;
    set->job = "mnist";
    set->data_dir = "data/mnist";
    /* LeNet's state is 0.8 MB: 100 rounds make 8 KB a round (a crash loses
     * about the same eSGD state after 20 rounds as after 100, the residual
     * decaying by beta = 0.9 a round; docs/algorithm.md section 6). */
    set->save_every = 100;
    set->save_interval = 600;
    cli_option broker_options[MQTT_LINK_CLI_OPTION_COUNT];
    mqtt_link_cli_options(&set->link, broker_options);
    const cli_option options[] = {
        {"job", CLI_STRING, &set->job, "job name (the coordinator's --job)"},
        {"id", CLI_UINT, &set->id, "this agent's id, 0..agents-1"},
        {"data", CLI_STRING, &set->data_dir, "IDX data folder with the train split (MNIST or esgd-import names)"},
        {"shard", CLI_STRING, &set->shard, "train on shard i of N, as i/N (default: id/agents); all: every example "
                                           "in --data, this gateway's own data"},
        {"state-dir", CLI_STRING, &set->state_dir, "folder for the eSGD state; a restart continues from it"},
        {"save-every", CLI_UINT, &set->save_every, "save the state every N new rounds (1: every round, before its "
                                                   "update leaves), and at a stop and the job's end"},
        {"save-interval", CLI_DOUBLE, &set->save_interval, "... or when S seconds have passed since the last save, "
                                                           "whichever comes first (0: by rounds only)"},
        {"config-timeout", CLI_UINT, &set->config_timeout, "seconds to wait for the job configuration (0: forever)"},
        {"keys", CLI_STRING, &set->keys_dir, "folder with agent-<id>.key (ours) and coordinator.pub (esgd-keygen)"},
    };
    const cli_program program = {
        .name = "esgd-agent",
        .summary = "usage: esgd-agent --id N [options]\n"
                   "Trains on this gateway's shard and sends eSGD sparse updates over MQTT; every\n"
                   "training setting comes from the coordinator's retained job configuration.",
        CLI_OPTIONS(options),
        CLI_SHARED_OPTIONS(broker_options),
        .epilogue = "exit status: 0 job finished, 1 runtime error (broker, data), 2 bad usage, keys or job\n"
                    "             configuration (restarting cannot help), 3 stopped by SIGINT/SIGTERM",
    };
    int rc = cli_parse(&program, argc, argv, NULL);
    if (rc != CLI_CONTINUE)
        return rc == CLI_HELP ? AGENT_EXIT_DONE : AGENT_EXIT_USAGE;
    if (set->save_every == 0 || !(set->save_interval >= 0)) {
        fprintf(stderr, "esgd-agent: --save-every must be at least 1 and --save-interval at least 0\n");
        return AGENT_EXIT_USAGE;
    }
    char subject[64];
    snprintf(subject, sizeof subject, "esgd-agent[%u]", set->id);
    log_set_subject(subject);
    stop_signals_install();
    blas_threads_default();

    esgd_error err = {0};
    char own_name[KEY_NAME_MAX];
    keys_agent_name(own_name, set->id);
    if (!set->keys_dir) {
        fprintf(stderr, "esgd-agent: --keys DIR is required: every message is signed (make keys with esgd-keygen)\n");
        return AGENT_EXIT_USAGE;
    }
    if (envelope_init(&err) != ESGD_OK || keys_load_secret(set->keys_dir, own_name, &r.key, &err) != ESGD_OK ||
        keys_load_public(set->keys_dir, "coordinator", &r.coordinator, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-agent: %s\n", err.message);
        return AGENT_EXIT_USAGE;
    }
    const agent_session_options session_options = {
        .job = set->job, .id = set->id, .key = &r.key, .coordinator = &r.coordinator,
        .config_timeout = set->config_timeout, .clock = session_clock,
        .save_every = set->save_every, .save_interval = set->save_interval,
    };
    if (!(r.session = agent_session_new(&session_options, &err))) {
        log_error("%s", err.message);
        return AGENT_EXIT_RUNTIME;
    }
    /* The Last Will is signed now, before any run is known (run 0). */
    const uint8_t *will;
    size_t will_size;
    if (agent_session_status_message(r.session, AGENT_STATE_OFFLINE, &will, &will_size, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-agent: %s\n", err.message); /* an invalid job name */
        agent_session_free(r.session);
        return AGENT_EXIT_USAGE;
    }
    uint8_t will_bytes[CODEC_STATUS_BOUND];
    memcpy(will_bytes, will, will_size);
    char will_topic[TOPIC_MAX], client_id[128];
    topic_status(will_topic, set->job, set->id);
    snprintf(client_id, sizeof client_id, "esgd-agent-%s-%u", set->job, set->id);
    mqtt_link_options mo = set->link;
    mo.client_id = client_id;
    mo.will_topic = will_topic;
    mo.will_payload = will_bytes;
    mo.will_size = will_size;
    if (!(r.link = mqtt_link_open(&mo, &err))) {
        log_error("%s", err.message);
        agent_session_free(r.session);
        return AGENT_EXIT_RUNTIME;
    }
    rc = run_loop(&r);
    /* A stop (signal, error) keeps the rounds answered since the last save. */
    if (rc != AGENT_EXIT_DONE) {
        carry_out(&r, agent_session_on_stop(r.session), NULL);
        log_state_written(&r);
    }
    char summary[512] = "";
    size_t used = 0;
    const uint64_t *ignored = agent_session_ignored(r.session);
    for (int s = 0; s < ESGD_STATUS_COUNT; s++)
        if (ignored[s] && used < sizeof summary)
            used += (size_t)snprintf(summary + used, sizeof summary - used, " %s %llu", esgd_status_name((esgd_status)s),
                                     (unsigned long long)ignored[s]);
    log_limiter_flush(&model_ignored_log, "ignored models");
    log_limiter_flush(&config_ignored_log, "ignored configurations");
    if (used)
        log_info("ignored messages by reason:%s", summary);
    mqtt_link_counters link = mqtt_link_get_counters(r.link);
    log_info("broker link: %llu reconnects, %.1f s disconnected, %llu QoS 0 messages dropped",
             (unsigned long long)link.reconnects, link.disconnected_seconds, (unsigned long long)link.dropped);
    if (rc == AGENT_EXIT_INTERRUPTED || rc == AGENT_EXIT_RUNTIME) {
        if (agent_session_agent(r.session) && r.set.state_dir)
            log_info("state kept in %s", r.state_path);
        if (publish_status(&r, AGENT_STATE_OFFLINE, &err) != ESGD_OK)
            log_warn("%s", err.message);
    }
    mqtt_link_close(r.link);
    agent_session_free(r.session); /* the agent first: it borrows the shard */
    dataset_destroy(&r.shard);
    return rc;
}
