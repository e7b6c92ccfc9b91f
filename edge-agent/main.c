/* esgd-agent: one edge gateway's side of an eSGD job over MQTT. It needs
 * only the broker, the job name, its id, its data and its shard; the rest
 * comes from the coordinator's retained job configuration. Each round it
 * takes the model, computes, sparsifies and publishes its update (the
 * core's agent.h does all of that; this file moves bytes). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "esgd/agent.h"
#include "esgd/cli.h"
#include "esgd/codec.h"
#include "esgd/envelope.h"
#include "esgd/log.h"
#include "esgd/mqtt_link.h"
#include "esgd/mqtt_link_cli.h"
#include "esgd/state_file.h"
#include "esgd/topics.h"
#include "esgd/runtime.h"

enum { EXIT_DONE = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 3 };

typedef struct settings {
    mqtt_link_options link; /* broker settings; client id and Last Will set at connect */
    const char *job, *data_dir, *shard, *state_dir, *keys_dir;
    uint32_t id, config_timeout;
} settings;

typedef struct agent_run {
    settings set;
    mqtt_link *link;
    codec_decoder *decoder;
    esgd_job_config cfg;
    signing_key key;       /* ours: updates and status */
    verify_key coordinator;/* every configuration and model must carry its signature */
    uint8_t *config_bytes; /* the configuration we run (signed), to notice a change */
    size_t config_size;
    uint64_t finished_run; /* a run found already finished before we took part; 0 none */
    uint64_t clamped_seen; /* f16 clamps already reported */
    esgd_dataset shard;
    uint32_t shard_index, shard_parts; /* announced in our status with ... */
    uint64_t data_fp;                  /* ... a fingerprint of the shard's examples */
    double older_model_status_at;      /* monotonic time we last told of a model of an older generation */
    esgd_agent *agent;
    char state_path[4096];
    char latest_topic[TOPIC_MAX];
    bool fetching_latest;  /* subscribed to the retained full model */
    uint64_t ignored[ESGD_STATUS_COUNT]; /* messages refused, by reason */
    uint64_t status_connects; /* connection count when "online" was last published */
    double last_sent_at;      /* monotonic time of our last new update, 0 before the first */
} agent_run;

static esgd_status publish_status(agent_run *r, agent_state state, esgd_error *err)
{
    uint8_t bytes[CODEC_STATUS_BOUND];
    esgd_buffer buf = {bytes, 0, sizeof bytes};
    status_msg s;
    memset(&s, 0, sizeof s);
    snprintf(s.job, sizeof s.job, "%s", r->set.job);
    s.run = r->agent ? r->cfg.run : 0;
    s.agent = r->set.id;
    s.state = state;
    uint32_t round = 0;
    if (r->agent) {
        agent_answered_round(r->agent, &round);
        s.generation = agent_generation(r->agent);
        s.has_data = true;
        s.shard = r->shard_index;
        s.shards = r->shard_parts;
        s.data_fp = r->data_fp;
    }
    s.round = round;
    char topic[TOPIC_MAX];
    topic_status(topic, r->set.job, r->set.id);
    esgd_status st = codec_encode_status(&buf, &s, err);
    if (st == ESGD_OK)
        st = envelope_sign(&buf, &r->key, err);
    if (st == ESGD_OK)
        st = mqtt_link_publish(r->link, topic, buf.data, buf.size, 1, true, err);
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

/* Leaves the current job configuration (to take a new run of the job). */
static void leave_job(agent_run *r)
{
    r->clamped_seen = 0;
    agent_free(r->agent);
    r->agent = NULL;
    dataset_destroy(&r->shard);
    memset(&r->shard, 0, sizeof r->shard);
    free(r->config_bytes);
    r->config_bytes = NULL;
    r->config_size = 0;
    r->fetching_latest = false;
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

/* Waits for the retained job configuration and builds the agent from it. */
static int start_from_config(agent_run *r, const uint8_t *data, size_t size, const esgd_job_config *cfg,
                             esgd_error *err)
{
    r->cfg = *cfg;
    if (r->set.id >= r->cfg.agents) {
        esgd_error_set(err, ESGD_ERR_ARG, "agent id %u, but job %s has agents 0..%u", r->set.id, r->cfg.job,
                       r->cfg.agents - 1);
        return EXIT_USAGE;
    }
    uint32_t index = r->set.id, parts = r->cfg.agents, train_samples = 0;
    if (r->set.shard && parse_shard(r->set.shard, &index, &parts) != 0) {
        esgd_error_set(err, ESGD_ERR_ARG, "--shard '%s': expected i/N with i < N", r->set.shard);
        return EXIT_USAGE;
    }
    if (job_load_shard(&r->cfg, r->set.data_dir, index, parts, &r->shard, &train_samples, err) != ESGD_OK)
        return EXIT_RUNTIME;
    r->shard_index = index;
    r->shard_parts = parts;
    r->data_fp = dataset_fingerprint(&r->shard);
    if (train_samples != r->cfg.train_samples)
        log_warn("local training set has %u examples, the job assumes %u", train_samples, r->cfg.train_samples);
    if (!(r->agent = agent_new(&r->cfg, r->set.id, &r->shard, err)))
        return EXIT_USAGE;
    agent_set_keys(r->agent, &r->key, &r->coordinator);
    if (!(r->config_bytes = malloc(size))) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory");
        return EXIT_RUNTIME;
    }
    memcpy(r->config_bytes, data, size);
    r->config_size = size;
    if (r->set.state_dir) {
        if (mkdir(r->set.state_dir, 0755) != 0 && errno != EEXIST) {
            esgd_error_set(err, ESGD_ERR_IO, "cannot create state dir %s: %s", r->set.state_dir, strerror(errno));
            return EXIT_RUNTIME;
        }
        snprintf(r->state_path, sizeof r->state_path, "%s/agent-%s-%u.state", r->set.state_dir, r->cfg.job,
                 r->set.id);
        if (state_file_exists(r->state_path)) {
            uint32_t answered = 0;
            if (agent_restore(r->agent, r->state_path, err) != ESGD_OK)
                move_state_aside(r, err->message);
            else if (agent_answered_round(r->agent, &answered))
                log_info("restored eSGD state from %s (last answered round %u)", r->state_path, answered);
        }
    }
    log_info("job %s run %016llx: %s %s drop %g, shard %u/%u with %u examples", r->cfg.job,
             (unsigned long long)r->cfg.run, model_kind_name(r->cfg.model), sparsify_method_name(r->cfg.sparsify.method),
             r->cfg.sparsify.drop_ratio, index, parts, r->shard.count);
    return EXIT_DONE;
}

static esgd_status fetch_latest_model(agent_run *r, bool on, esgd_error *err)
{
    if (r->fetching_latest == on)
        return ESGD_OK;
    r->fetching_latest = on;
    return on ? mqtt_link_subscribe(r->link, r->latest_topic, err)
              : mqtt_link_unsubscribe(r->link, r->latest_topic, err);
}

/* Floods of forged or stale messages cost one log line per 10 s each. */
static log_limiter model_ignored_log = LOG_LIMITER(10), config_ignored_log = LOG_LIMITER(10);

/* A model arrived: apply it, then answer its round (or re-send the answer:
 * the coordinator counts a repeat once). */
static int handle_model(agent_run *r, const mqtt_message *m, bool latest)
{
    esgd_error err = {0};
    uint64_t older = agent_older_generation_models(r->agent);
    esgd_status st = agent_apply_model(r->agent, m->data, m->size, &err);
    if (st == ESGD_ERR_STALE) {
        r->ignored[st]++; /* a retained model of an earlier run, normal at a re-run */
        /* From an older start of our coordinator: a newer one was restored
         * to less than we have seen. Our status (with our generation) lets
         * it move above ours; at most every 5 s. */
        double now = monotonic_seconds();
        if (agent_older_generation_models(r->agent) != older && now - r->older_model_status_at >= 5) {
            log_warn("%s; telling the coordinator", err.message);
            r->older_model_status_at = now;
            if (publish_status(r, AGENT_STATE_ONLINE, &err) != ESGD_OK)
                log_warn("%s", err.message);
        }
        return EXIT_DONE;
    }
    if (st == ESGD_ERR_MISMATCH) {
        /* A delta for a model we do not hold: we missed a round. */
        log_warn("%s; fetching the retained full model", err.message);
        return fetch_latest_model(r, true, &err) == ESGD_OK ? EXIT_DONE : EXIT_RUNTIME;
    }
    if (st != ESGD_OK) {
        r->ignored[st]++;
        log_warn_limited(&model_ignored_log, "ignoring a model on %s (%s): %s", m->topic, esgd_status_name(st),
                         err.message);
        return EXIT_DONE;
    }
    if (latest && fetch_latest_model(r, false, &err) != ESGD_OK)
        log_warn("%s", err.message);
    if (agent_job_done(r->agent) && !agent_answered_round(r->agent, NULL)) {
        /* The run ended before we took part in it: the retained final model
         * of an earlier run of this job. Wait for the next run. */
        log_info("run %016llx of job %s has already finished; waiting for a new run",
                 (unsigned long long)r->cfg.run, r->cfg.job);
        r->finished_run = r->cfg.run;
        if (fetch_latest_model(r, false, &err) != ESGD_OK)
            log_warn("%s", err.message);
        return EXIT_DONE;
    }
    if (agent_job_done(r->agent)) {
        log_info("job finished at round %u; peak resident set %.1f MiB", agent_current_round(r->agent),
                 peak_resident_mib());
        if (publish_status(r, AGENT_STATE_DONE, &err) != ESGD_OK)
            log_warn("%s", err.message);
        return -1; /* finished */
    }
    if (!agent_has_model(r->agent))
        return EXIT_DONE;
    uint32_t round = agent_current_round(r->agent), answered = 0;
    bool repeat = agent_answered_round(r->agent, &answered) && answered == round;
    const uint8_t *msg;
    size_t size;
    double started = monotonic_seconds();
    if (agent_compute_update(r->agent, &msg, &size, &err) != ESGD_OK) {
        log_error("round %u: %s", round, err.message);
        return EXIT_RUNTIME;
    }
    double seconds = monotonic_seconds() - started;
    uint64_t clamped = agent_clamped_values(r->agent);
    if (clamped != r->clamped_seen) {
        log_warn("round %u: %llu update values over 65504 sent as the largest half (%llu in all)", round,
                 (unsigned long long)(clamped - r->clamped_seen), (unsigned long long)clamped);
        r->clamped_seen = clamped;
    }
    /* The state (with this very update in it) is durable before the update
     * leaves: a crash at any point restarts on this round and re-sends the
     * same bytes, so no round is answered twice or computed twice. */
    if (!repeat && r->set.state_dir && agent_save(r->agent, r->state_path, &err) != ESGD_OK) {
        log_error("%s", err.message);
        return EXIT_RUNTIME;
    }
    char topic[TOPIC_MAX];
    topic_round_grad(topic, r->cfg.job, round, r->set.id);
    if (mqtt_link_publish(r->link, topic, msg, size, 1, false, &err) != ESGD_OK) {
        log_error("round %u: %s", round, err.message);
        return EXIT_RUNTIME;
    }
    if (repeat) {
        log_info("round %u: re-sent the update (%zu bytes)", round, size);
        return EXIT_DONE;
    }
    /* From our last update to this model: for the agent that reported last,
     * that is the round's whole overhead (broker, coordinator, broker), with
     * no compute in it; bench/broker-bench.sh takes the minimum over agents. */
    char waited[64] = "";
    if (r->last_sent_at > 0)
        snprintf(waited, sizeof waited, ", model %.3f ms after our last update", (started - r->last_sent_at) * 1e3);
    r->last_sent_at = monotonic_seconds();
    log_info("round %u: loss %.4f, sent %u entries in %zu bytes (%.1f ms compute%s)", round,
             (double)agent_last_loss(r->agent), agent_last_count(r->agent), size, seconds * 1e3, waited);
    /* The status is retained and the broker replaces it with our "offline"
     * Last Will if the connection drops, so it is published again after a
     * reconnection, and otherwise only now and then to keep its round fresh. */
    uint64_t connects = mqtt_link_get_counters(r->link).connects;
    if (connects != r->status_connects || round % 50 == 0) {
        if (publish_status(r, AGENT_STATE_ONLINE, &err) != ESGD_OK)
            log_warn("%s", err.message);
        r->status_connects = connects;
    }
    return EXIT_DONE;
}

static int run_loop(agent_run *r)
{
    esgd_error err = {0};
    char topic[TOPIC_MAX];
    topic_config(topic, r->set.job);
    topic_latest_model(r->latest_topic, r->set.job);
    /* A restart can leave the retained model's subscription in the broker's
     * session for us (we were fetching it); we ask for it when we need it. */
    if (mqtt_link_subscribe(r->link, topic, &err) != ESGD_OK ||
        mqtt_link_unsubscribe(r->link, r->latest_topic, &err) != ESGD_OK) {
        log_error("%s", err.message);
        return EXIT_RUNTIME;
    }
    if (publish_status(r, AGENT_STATE_ONLINE, &err) != ESGD_OK)
        log_warn("%s", err.message);
    r->status_connects = mqtt_link_get_counters(r->link).connects;
    log_info("waiting for the configuration of job %s", r->set.job);
    double waiting_since = monotonic_seconds(), last_notice = waiting_since;
    uint64_t connects_seen = mqtt_link_get_counters(r->link).connects;
    while (!stop_requested()) {
        /* Back from a lost connection: what was published meanwhile may be
         * gone with the broker's state, so ask for the current model (a
         * model of the round we answered makes us send the answer again). */
        uint64_t connects = mqtt_link_get_counters(r->link).connects;
        if (connects != connects_seen) {
            connects_seen = connects;
            if (r->agent && agent_has_model(r->agent) && fetch_latest_model(r, true, &err) != ESGD_OK)
                log_warn("%s", err.message);
        }
        mqtt_message m;
        if (!mqtt_link_next(r->link, 200, &m)) {
            double now = monotonic_seconds();
            if (!r->agent && r->set.config_timeout && now - waiting_since >= r->set.config_timeout) {
                log_error("no configuration for job %s after %u s", r->set.job, r->set.config_timeout);
                return EXIT_RUNTIME;
            }
            if (now - last_notice >= 60) {
                /* A model can be lost on the way without our link noticing
                 * (a broker restart between two keepalives): ask for the
                 * retained one, which also makes us re-send our answer. */
                if (r->agent && agent_has_model(r->agent) && fetch_latest_model(r, true, &err) != ESGD_OK)
                    log_warn("%s", err.message);
                if (r->agent)
                    log_info("waiting for the model after round %u; asked for the latest one",
                             agent_current_round(r->agent));
                else
                    log_info("still waiting for the configuration of job %s", r->set.job);
                last_notice = now;
            }
            continue;
        }
        last_notice = monotonic_seconds();
        topic_info t = topic_parse(m.topic, r->set.job);
        if (t.kind == TOPIC_CONFIG) {
            if (m.size == 0)
                continue; /* retained configuration cleared */
            if (r->agent && m.size == r->config_size && memcmp(m.data, r->config_bytes, m.size) == 0)
                continue;
            /* Only the coordinator's signature makes a configuration count;
             * a forged one is ignored, never obeyed. */
            esgd_job_config cfg;
            size_t body = 0;
            esgd_status st = envelope_open(m.data, m.size, &r->coordinator, &body, &err);
            if (st == ESGD_OK)
                st = codec_decode_config(r->decoder, m.data, body, &cfg, &err);
            if (st == ESGD_OK && strcmp(cfg.job, r->set.job) != 0)
                st = esgd_error_set(&err, ESGD_ERR_MISMATCH, "configuration of job '%s'", cfg.job);
            if (st != ESGD_OK) {
                r->ignored[st]++;
                if (r->agent || st == ESGD_ERR_SIGNATURE || st == ESGD_ERR_MISMATCH) {
                    log_warn_limited(&config_ignored_log, "ignoring a configuration on %s (%s): %s", m.topic,
                                     esgd_status_name(st), err.message);
                    continue;
                }
                /* Signed by our coordinator, yet unusable here: a newer
                 * version or a setting this build lacks. */
                log_error("job configuration on the broker is unusable: %s", err.message);
                return EXIT_USAGE;
            }
            if (r->agent) {
                if (cfg.run == r->cfg.run)
                    continue;
                bool unfinished = agent_answered_round(r->agent, NULL) && !agent_job_done(r->agent);
                (unfinished ? log_warn : log_info)("job %s has a new run %016llx (was %016llx%s); joining it", r->set.job,
                                                   (unsigned long long)cfg.run, (unsigned long long)r->cfg.run,
                                                   unfinished ? ", unfinished" : "");
                leave_job(r);
            }
            int rc = start_from_config(r, m.data, m.size, &cfg, &err);
            if (rc != EXIT_DONE) {
                log_error("%s", err.message);
                return rc;
            }
            char filter[TOPIC_MAX];
            topic_filter_round_models(filter, r->set.job);
            if (mqtt_link_subscribe(r->link, filter, &err) != ESGD_OK ||
                fetch_latest_model(r, true, &err) != ESGD_OK) {
                log_error("%s", err.message);
                return EXIT_RUNTIME;
            }
            /* Now with the run, our data and the round our state last
             * answered, which the coordinator checks. */
            if (publish_status(r, AGENT_STATE_ONLINE, &err) != ESGD_OK)
                log_warn("%s", err.message);
        } else if (r->agent && (t.kind == TOPIC_ROUND_MODEL || t.kind == TOPIC_LATEST_MODEL)) {
            if (m.size == 0)
                continue;
            int rc = handle_model(r, &m, t.kind == TOPIC_LATEST_MODEL);
            if (rc < 0)
                return EXIT_DONE;
            if (rc != EXIT_DONE)
                return rc;
        }
    }
    return EXIT_INTERRUPTED;
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
    cli_option broker_options[MQTT_LINK_CLI_OPTION_COUNT];
    mqtt_link_cli_options(&set->link, broker_options);
    const cli_option options[] = {
        {"job", CLI_STRING, &set->job, "job name (the coordinator's --job)"},
        {"id", CLI_UINT, &set->id, "this agent's id, 0..agents-1"},
        {"data", CLI_STRING, &set->data_dir, "IDX data folder with train-images/labels"},
        {"shard", CLI_STRING, &set->shard, "train on shard i of N, as i/N (default: id/agents)"},
        {"state-dir", CLI_STRING, &set->state_dir, "folder for the eSGD state; a restart continues from it"},
        {"config-timeout", CLI_UINT, &set->config_timeout, "seconds to wait for the job configuration (0: forever)"},
        {"keys", CLI_STRING, &set->keys_dir, "folder with agent-<id>.key (ours) and coordinator.pub (esgd-keygen)"},
    };
    const cli_program program = {
        .name = "esgd-agent",
        .summary = "usage: esgd-agent --id N [options]\n"
                   "Trains on this gateway's shard and sends eSGD sparse updates over MQTT; every\n"
                   "training setting comes from the coordinator's retained job configuration.",
        .options = options,
        .option_count = sizeof options / sizeof options[0],
        .shared_options = broker_options,
        .shared_option_count = MQTT_LINK_CLI_OPTION_COUNT,
        .epilogue = "exit status: 0 job finished, 1 runtime error (broker, data), 2 bad usage, keys or job\n"
                    "             configuration (restarting cannot help), 3 stopped by SIGINT/SIGTERM",
    };
    int rc = cli_parse(&program, argc, argv, NULL);
    if (rc != CLI_CONTINUE)
        return rc == CLI_HELP ? EXIT_DONE : EXIT_USAGE;
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
        return EXIT_USAGE;
    }
    if (envelope_init(&err) != ESGD_OK || keys_load_secret(set->keys_dir, own_name, &r.key, &err) != ESGD_OK ||
        keys_load_public(set->keys_dir, "coordinator", &r.coordinator, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-agent: %s\n", err.message);
        return EXIT_USAGE;
    }
    /* The Last Will is signed now, before any run is known (run 0). */
    uint8_t will[CODEC_STATUS_BOUND];
    esgd_buffer will_buf = {will, 0, sizeof will};
    status_msg offline = {.agent = set->id, .state = AGENT_STATE_OFFLINE};
    snprintf(offline.job, sizeof offline.job, "%s", set->job);
    if (codec_encode_status(&will_buf, &offline, &err) != ESGD_OK || envelope_sign(&will_buf, &r.key, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-agent: %s\n", err.message); /* an invalid job name */
        return EXIT_USAGE;
    }
    char will_topic[TOPIC_MAX], client_id[128];
    topic_status(will_topic, set->job, set->id);
    snprintf(client_id, sizeof client_id, "esgd-agent-%s-%u", set->job, set->id);
    mqtt_link_options mo = set->link;
    mo.client_id = client_id;
    mo.will_topic = will_topic;
    mo.will_payload = will_buf.data;
    mo.will_size = will_buf.size;
    if (!(r.decoder = codec_decoder_new(&err)) || !(r.link = mqtt_link_open(&mo, &err))) {
        log_error("%s", err.message);
        codec_decoder_free(r.decoder);
        return EXIT_RUNTIME;
    }
    rc = run_loop(&r);
    char summary[512] = "";
    size_t used = 0;
    for (int s = 0; s < ESGD_STATUS_COUNT; s++)
        if (r.ignored[s] && used < sizeof summary)
            used += (size_t)snprintf(summary + used, sizeof summary - used, " %s %llu", esgd_status_name((esgd_status)s),
                                     (unsigned long long)r.ignored[s]);
    log_limiter_flush(&model_ignored_log, "ignored models");
    log_limiter_flush(&config_ignored_log, "ignored configurations");
    if (used)
        log_info("ignored messages by reason:%s", summary);
    mqtt_link_counters link = mqtt_link_get_counters(r.link);
    log_info("broker link: %llu reconnects, %.1f s disconnected, %llu QoS 0 messages dropped",
             (unsigned long long)link.reconnects, link.disconnected_seconds, (unsigned long long)link.dropped);
    if (rc == EXIT_INTERRUPTED || rc == EXIT_RUNTIME) {
        if (r.agent && r.set.state_dir)
            log_info("state kept in %s", r.state_path);
        if (publish_status(&r, AGENT_STATE_OFFLINE, &err) != ESGD_OK)
            log_warn("%s", err.message);
    }
    mqtt_link_close(r.link);
    agent_free(r.agent);
    dataset_destroy(&r.shard);
    codec_decoder_free(r.decoder);
    free(r.config_bytes);
    return rc;
}
