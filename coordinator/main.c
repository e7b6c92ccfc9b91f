/* esgd-coordinator: the parameter server of an eSGD job over MQTT. It
 * publishes the job configuration, opens each round by publishing the model,
 * collects the agents' updates, closes the round when every agent has
 * reported (or a quorum has and the deadline has passed), and checkpoints.
 * All training arithmetic is the core's (coordinator.h); this file only
 * moves bytes and keeps time. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include <sodium.h>

#include "esgd/cli.h"
#include "esgd/codec.h"
#include "esgd/coordinator.h"
#include "esgd/envelope.h"
#include "esgd/log.h"
#include "esgd/mqtt_link.h"
#include "esgd/mqtt_link_cli.h"
#include "esgd/report.h"
#include "esgd/state_file.h"
#include "esgd/topics.h"
#include "lease.h"
#include "metrics.h"
#include "esgd/runtime.h"

enum { EXIT_DONE = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 3 };

typedef struct settings {
    mqtt_link_options link; /* broker settings; client id set at connect */
    const char *data_dir, *state_dir, *csv_path, *metrics_address, *keys_dir;
    uint32_t metrics_port;    /* 0: no metrics server */
    double max_update_norm;   /* 0: no bound */
    const char *norm_action;  /* "reject" or "clip" */
    uint32_t quorum;          /* 0: majority of the expected agents */
    double round_timeout;     /* seconds */
    double start_timeout;     /* seconds the first round of a start waits for every agent to come online */
    double republish_after;   /* seconds without a new update before the model goes out again (0: never) */
    uint32_t eval_limit;
    int json;
} settings;

typedef struct run {
    settings set;
    esgd_job_config cfg;
    esgd_coordinator *coordinator;
    mqtt_link *link;
    esgd_dataset test;
    FILE *csv;
    char checkpoint[4096];
    uint8_t *agent_online;    /* (agents) last status seen + 1: 0 unknown, 1 offline or done, 2 online */
    uint32_t *missed;         /* (agents) rounds closed in a row without its update */
    verify_key *agent_keys;   /* (agents) their status messages must carry these signatures */
    uint64_t status_rejected; /* status messages that failed the checks */
    codec_decoder *status_decoder;
    metrics *metrics;
    float accuracy, test_loss;
    bool resumed;       /* from a checkpoint: the same run goes on */
    uint64_t connects_seen; /* broker connections when last checked, to republish after a reconnection */
    round_times times;  /* open to close, for the final report */
    report_clock clock; /* for the progress line's rate and time left */
    esgd_buffer retained, broadcast; /* the next model, full and as broadcast, between encoding and publishing */
    job_lease lease;
    uint32_t rounds_run; /* closed by this start */
    double came_online_at; /* monotonic time an agent last said it is online */
    bool lease_claimed; /* until then nothing is published */
    bool lease_lost;    /* another coordinator runs the job and claimed it first: stop */
} run;

static esgd_status publish(run *r, const char *topic, const uint8_t *msg, size_t size, bool retained)
{
    esgd_error err = {0};
    esgd_status st = mqtt_link_publish(r->link, topic, msg, size, 1, retained, &err);
    if (st != ESGD_OK)
        log_error("%s", err.message);
    return st;
}

/* The model on the retained topic in full (so a late or restarted agent
 * starts at once) and on the round's topic: the broadcast that opens the
 * round, or, publishing again (`again`), the configuration first and the
 * full model on the round's topic too, for agents whose session or
 * messages the broker lost (a repeat answer is counted once). */
static esgd_status publish_model(run *r, bool again)
{
    esgd_error err = {0};
    const uint8_t *msg;
    size_t size;
    char topic[TOPIC_MAX];
    uint32_t round = coordinator_round(r->coordinator);
    esgd_status st = ESGD_OK;
    if (again && (st = lease_publish(&r->lease, r->link, &err)) != ESGD_OK)
        log_warn("%s", err.message); /* the job goes on without it */
    st = ESGD_OK;
    if (again && (st = coordinator_config_message(r->coordinator, &msg, &size, &err)) == ESGD_OK) {
        topic_config(topic, r->cfg.job);
        st = publish(r, topic, msg, size, true);
    }
    if (st == ESGD_OK && (st = coordinator_full_model(r->coordinator, &msg, &size, &err)) == ESGD_OK) {
        topic_latest_model(topic, r->cfg.job);
        st = publish(r, topic, msg, size, true);
    }
    if (st == ESGD_OK && (again || (st = coordinator_round_model(r->coordinator, &msg, &size, &err)) == ESGD_OK)) {
        topic_round_model(topic, r->cfg.job, round);
        st = publish(r, topic, msg, size, false);
    }
    if (st != ESGD_OK && err.message[0])
        log_error("round %u: cannot publish the model%s: %s", round, again ? " again" : "", err.message);
    return st;
}

/* Floods of bad messages cost one log line per 10 s each, with a count. */
static log_limiter csv_write_log = LOG_LIMITER(60), data_conflict_log = LOG_LIMITER(10), status_refused_log = LOG_LIMITER(10), update_rejected_log = LOG_LIMITER(10),
                   update_unused_log = LOG_LIMITER(10), conflict_log = LOG_LIMITER(10);

static void handle_status(run *r, uint32_t agent, const mqtt_message *m)
{
    esgd_error err = {0};
    status_msg s;
    size_t body = 0;
    if (m->size == 0 || agent >= r->cfg.agents)
        return; /* an empty payload clears a retained status */
    esgd_status st = envelope_open(m->data, m->size, &r->agent_keys[agent], &body, &err);
    if (st == ESGD_OK)
        st = codec_decode_status(r->status_decoder, m->data, body, &s, &err);
    if (st == ESGD_OK && s.agent != agent)
        st = esgd_error_set(&err, ESGD_ERR_MISMATCH, "status names agent %u", s.agent);
    if (st != ESGD_OK) {
        r->status_rejected++;
        log_warn_limited(&status_refused_log, "agent %u: status message refused (%s): %s", agent,
                         esgd_status_name(st), err.message);
        return;
    }
    if (s.run != 0 && s.run != r->cfg.run)
        return; /* a retained status of an earlier run */
    status_note note = coordinator_note_status(r->coordinator, &s);
    if (note.overlaps_with == (int64_t)agent)
        log_warn_limited(&data_conflict_log, "agent %u now trains on shard %u/%u (data %016llx), not what it announced "
                         "before: two agents with one id?", agent, s.shard, s.shards, (unsigned long long)s.data_fp);
    else if (note.overlaps_with >= 0)
        log_warn_limited(&data_conflict_log, "agent %u trains on the same %s as agent %u (shard %u/%u, data %016llx): "
                         "their updates count twice", agent, note.same_shard ? "shard" : "data",
                         (unsigned)note.overlaps_with, s.shard, s.shards, (unsigned long long)s.data_fp);
    if (note.rounds_lost)
        log_warn("agent %u is back from older state: it last answered round %u, %u rounds after it had gone to us; "
                 "its residuals lack them", agent, s.round, note.rounds_lost);
    if (note.generation_raised && r->lease_claimed) {
        log_warn("agent %u follows a newer coordinator generation than ours; this one is now generation %u",
                 agent, coordinator_generation(r->coordinator));
        publish_model(r, true);
    }
    uint8_t online = s.state == AGENT_STATE_ONLINE;
    /* An "offline" not preceded by an "online" in this run may be an old
     * retained Last Will: it does not mark the agent dead. */
    if (!online && r->agent_online[agent] == 0)
        return;
    if (online)
        r->missed[agent] = 0; /* it says it is back: wait for it again */
    if (online && r->agent_online[agent] != 2)
        r->came_online_at = monotonic_seconds();
    if (r->agent_online[agent] != online + 1) {
        log_info("agent %u is %s (last answered round %u)", agent, agent_state_name(s.state), s.round);
        r->agent_online[agent] = (uint8_t)(online + 1);
    }
}

static void handle_message(run *r, const mqtt_message *m)
{
    topic_info t = topic_parse(m->topic, r->cfg.job);
    esgd_error err = {0};
    if (t.kind == TOPIC_STATUS) {
        handle_status(r, t.agent, m);
        return;
    }
    if (t.kind == TOPIC_LEASE) {
        if (lease_lost(&r->lease, r->link, m, &err)) {
            log_error("%s; stopping", err.message);
            r->lease_lost = true;
        }
        return;
    }
    if (t.kind != TOPIC_ROUND_GRAD)
        return;
    uint64_t conflicting = coordinator_get_counters(r->coordinator)->conflicting;
    update_outcome outcome = coordinator_receive_update(r->coordinator, m->data, m->size, t.agent, t.round, &err);
    if (coordinator_get_counters(r->coordinator)->conflicting != conflicting)
        log_warn_limited(&conflict_log, "round %u: %s", coordinator_round(r->coordinator), err.message);
    /* Any genuine update, even a late one, shows the agent is alive. */
    if (outcome != UPDATE_REJECTED && t.agent < r->cfg.agents)
        r->missed[t.agent] = 0;
    if (outcome == UPDATE_ACCEPTED) {
        const update_msg *u = coordinator_last_update(r->coordinator);
        metrics_agent_update(r->metrics, u->agent, u->round, u->loss);
    }
    metrics_progress(r->metrics, r->coordinator);
    if (outcome == UPDATE_REJECTED)
        log_warn_limited(&update_rejected_log, "round %u: rejected update on %s (%s): %s",
                         coordinator_round(r->coordinator), m->topic, esgd_status_name(err.status), err.message);
    else if (outcome != UPDATE_ACCEPTED)
        log_info_limited(&update_unused_log, "round %u: %s update on %s", coordinator_round(r->coordinator),
                         update_outcome_name(outcome), m->topic);
}

/* Rounds an agent may miss in a row before it is no longer waited for. */
#define DEAD_AFTER_MISSED 3

/* Every agent that may still answer has: the others are offline by their
 * Last Will or missed DEAD_AFTER_MISSED rounds in a row. A dead agent is
 * waited for again as soon as an update of it arrives. */
static bool all_live_answered(const run *r)
{
    for (uint32_t a = 0; a < r->cfg.agents; a++)
        if (!coordinator_has_update(r->coordinator, a) && r->agent_online[a] != 1 &&
            r->missed[a] < DEAD_AFTER_MISSED)
            return false;
    return true;
}

/* Every agent has said it is online (or offline) or sent an update since this start. */
static bool all_came_online(const run *r)
{
    for (uint32_t a = 0; a < r->cfg.agents; a++)
        if (r->agent_online[a] == 0 && !coordinator_has_update(r->coordinator, a))
            return false;
    return true;
}

/* Collects updates until every expected agent has reported, or the quorum
 * has and round_timeout has passed. False when a stop was requested. */
static bool collect_round(run *r, uint32_t quorum)
{
    double opened = monotonic_seconds(), last_notice = opened, last_progress = opened;
    uint32_t agents = r->cfg.agents, seen = coordinator_participants(r->coordinator);
    for (;;) {
        uint32_t have = coordinator_participants(r->coordinator);
        double now = monotonic_seconds(), waited = now - opened;
        /* Back from a lost connection: the broker may have lost everything
         * (retained configuration and model, queued messages), so it all
         * goes out again half a second later, once the link has settled. */
        uint64_t connects = mqtt_link_get_counters(r->link).connects;
        if (connects != r->connects_seen) {
            if (r->connects_seen)
                last_progress = now - r->set.republish_after + 0.5;
            r->connects_seen = connects;
        }
        /* The first round also waits for agents still starting up (a
         * gateway boots, loads its data): they are not late yet, and the
         * round timeout runs from when the last of them came online. */
        double timeout = r->set.round_timeout;
        if (!r->rounds_run && !all_came_online(r))
            timeout = r->set.start_timeout > timeout ? r->set.start_timeout : timeout;
        else if (!r->rounds_run && r->came_online_at > opened)
            waited = now - r->came_online_at;
        if (have == agents || (have >= quorum && (waited >= timeout || all_live_answered(r))))
            return true;
        if (stop_requested() || r->lease_lost)
            return false;
        if (have != seen) {
            seen = have;
            last_progress = now;
        }
        /* Only while connected: what the link buffers offline goes out on
         * reconnection anyway, and a stall right after it republishes. */
        if (r->set.republish_after > 0 && now - last_progress >= r->set.republish_after &&
            mqtt_link_connected(r->link)) {
            log_info("round %u: no new update for %.0f s (%u of %u agents); publishing the model again",
                     coordinator_round(r->coordinator), now - last_progress, have, agents);
            if (publish_model(r, true) != ESGD_OK)
                return true; /* the error is logged; the round closes with what it has */
            last_progress = now;
        }
        if (monotonic_seconds() - last_notice >= 30) {
            log_warn("round %u: %u of %u agents after %.0f s (quorum %u); waiting",
                     coordinator_round(r->coordinator), have, agents, waited, quorum);
            last_notice = monotonic_seconds();
        }
        mqtt_message m;
        if (mqtt_link_next(r->link, 50, &m))
            handle_message(r, &m);
        if (r->metrics) {
            mqtt_link_counters k = mqtt_link_get_counters(r->link);
            metrics_link(r->metrics, &k);
        }
    }
}

/* Encodes a model message with `encode` into a buffer of our own. */
static esgd_status keep_copy(run *r, esgd_buffer *copy,
                             esgd_status (*encode)(esgd_coordinator *, const uint8_t **, size_t *, esgd_error *))
{
    esgd_error err = {0};
    const uint8_t *msg;
    size_t size;
    esgd_status st = encode(r->coordinator, &msg, &size, &err);
    if (st == ESGD_OK && size > copy->capacity) {
        buffer_destroy(copy);
        st = buffer_init(copy, size, &err);
    }
    if (st != ESGD_OK) {
        log_error("round %u: cannot encode the model: %s", coordinator_round(r->coordinator), err.message);
        return st;
    }
    memcpy(copy->data, msg, size);
    copy->size = size;
    return ESGD_OK;
}

/* Evaluates, writes the round's CSV row, checkpoints, then publishes the
 * model the round produced (the final one after the last round). The model
 * is encoded before the row, whose byte counts include it; the row is on
 * disk before the checkpoint, and a restore cuts rows past the checkpoint
 * (setup), so a kill at any point leaves each round's row exactly once. */
static int after_round(run *r, const round_summary *s)
{
    esgd_error err = {0};
    uint32_t images;
    if (coordinator_evaluate_round(r->coordinator, &r->test, s, r->set.eval_limit, &r->accuracy, &r->test_loss,
                                   &images, &err) != ESGD_OK) {
        log_error("evaluation: %s", err.message);
        return EXIT_RUNTIME;
    }
    if (images)
        metrics_evaluated(r->metrics, r->accuracy, r->test_loss);
    /* Copies: the checkpoint reuses the coordinator's output buffer. */
    if (keep_copy(r, &r->retained, coordinator_full_model) != ESGD_OK ||
        keep_copy(r, &r->broadcast, coordinator_round_model) != ESGD_OK)
        return EXIT_RUNTIME;
    float accuracy = images ? r->accuracy : NAN;
    if (r->csv) {
        report_csv_row(r->csv, r->coordinator, s, accuracy, images);
        if (fflush(r->csv) != 0 || fsync(fileno(r->csv)) != 0)
            log_warn_limited(&csv_write_log, "cannot write %s: %s", r->set.csv_path, strerror(errno));
    }
    /* The checkpoint is written before the next model goes out, so agents
     * can never be ahead of what a restarted coordinator remembers. */
    if (r->set.state_dir && coordinator_save(r->coordinator, r->checkpoint, &err) != ESGD_OK) {
        log_error("checkpoint: %s", err.message);
        return EXIT_RUNTIME;
    }
    char topic[TOPIC_MAX];
    topic_latest_model(topic, r->cfg.job);
    if (publish(r, topic, r->retained.data, r->retained.size, true) != ESGD_OK)
        return EXIT_RUNTIME;
    topic_round_model(topic, r->cfg.job, coordinator_round(r->coordinator));
    if (publish(r, topic, r->broadcast.data, r->broadcast.size, false) != ESGD_OK)
        return EXIT_RUNTIME;
    report_progress(stderr, r->coordinator, s, accuracy, &r->clock);
    return EXIT_DONE;
}

static int train(run *r)
{
    esgd_error err = {0};
    char topic[TOPIC_MAX];
    const uint8_t *msg;
    size_t size;
    uint32_t quorum = r->set.quorum ? r->set.quorum : r->cfg.agents / 2 + 1;
    if (quorum > r->cfg.agents)
        quorum = r->cfg.agents;

    topic_filter_grads(topic, r->cfg.job);
    if (mqtt_link_subscribe(r->link, topic, &err) != ESGD_OK)
        goto io_error;
    topic_filter_status(topic, r->cfg.job);
    if (mqtt_link_subscribe(r->link, topic, &err) != ESGD_OK)
        goto io_error;
    /* A new run first clears what an earlier run of the job left retained,
     * so nothing of it is taken for this one's. */
    if (!r->resumed) {
        topic_latest_model(topic, r->cfg.job);
        if (publish(r, topic, (const uint8_t *)"", 0, true) != ESGD_OK)
            return EXIT_RUNTIME;
    }
    if (coordinator_config_message(r->coordinator, &msg, &size, &err) != ESGD_OK)
        goto io_error;
    topic_config(topic, r->cfg.job);
    if (publish(r, topic, msg, size, true) != ESGD_OK)
        return EXIT_RUNTIME;
    log_info("job %s run %016llx generation %u: %s %s drop %g, %u agents (quorum %u, round timeout %g s), %u rounds "
             "from round %u", r->cfg.job, (unsigned long long)r->cfg.run, coordinator_generation(r->coordinator), model_kind_name(r->cfg.model), sparsify_method_name(r->cfg.sparsify.method),
             r->cfg.sparsify.drop_ratio,
             r->cfg.agents, quorum, r->set.round_timeout, job_total_rounds(&r->cfg), coordinator_round(r->coordinator));

    report_clock_start(&r->clock, r->coordinator);
    /* Each round's end publishes the next round's model (after_round). */
    if (publish_model(r, false) != ESGD_OK)
        return EXIT_RUNTIME;
    while (!coordinator_done(r->coordinator)) {
        double opened = monotonic_seconds();
        metrics_progress(r->metrics, r->coordinator);
        if (!collect_round(r, quorum))
            return r->lease_lost ? EXIT_USAGE : EXIT_INTERRUPTED;
        for (uint32_t a = 0; a < r->cfg.agents; a++) {
            bool answered = coordinator_has_update(r->coordinator, a);
            if (!answered && ++r->missed[a] == DEAD_AFTER_MISSED)
                log_warn("agent %u missed %u rounds in a row: rounds no longer wait for it", a, DEAD_AFTER_MISSED);
            if (answered)
                r->missed[a] = 0;
        }
        round_summary s;
        coordinator_close_round(r->coordinator, &s);
        for (uint32_t i = 0; i < s.excluded_count; i++)
            log_warn("round %u: agent %u's update left out at close (%s, norm %g, bound %g)", s.round,
                     s.excluded[i].agent, esgd_status_name(s.excluded[i].reason), s.excluded[i].norm, s.norm_bound);
        double took = monotonic_seconds() - opened;
        metrics_round_closed(r->metrics, r->coordinator, &s, took);
        round_times_add(&r->times, took);
        r->rounds_run++;
        int rc = after_round(r, &s);
        if (rc != EXIT_DONE)
            return rc;
    }
    /* The last after_round published the final model, done = 1: agents stop
     * when they see it. */
    if (!mqtt_link_flush(r->link, 10000))
        log_warn("some final messages were not acknowledged by the broker");
    return EXIT_DONE;
io_error:
    log_error("%s", err.message);
    return EXIT_RUNTIME;
}

/* Messages that arrive while the lease is claimed are handled as usual. */
static void on_other_message(void *ctx, const mqtt_message *m)
{
    handle_message(ctx, m);
}

static int setup(run *r, esgd_error *err)
{
    char path[4096];
    uint8_t *labels = NULL;
    uint32_t count = 0;
    /* The training-set size fixes the rounds per epoch; read it from the
     * data the agents train on, as the simulator does. */
    dataset_labels_path(path, sizeof path, r->set.data_dir, "train");
    if (idx_read_labels(path, &labels, &count, err) != ESGD_OK)
        return EXIT_RUNTIME;
    free(labels);
    r->cfg.train_samples = count;
    if (job_config_validate(&r->cfg, err) != ESGD_OK)
        return EXIT_USAGE;
    if (!r->set.keys_dir) {
        esgd_error_set(err, ESGD_ERR_ARG, "--keys DIR is required: every message is signed (make keys with esgd-keygen)");
        return EXIT_USAGE;
    }
    signing_key own;
    if (envelope_init(err) != ESGD_OK || keys_load_secret(r->set.keys_dir, "coordinator", &own, err) != ESGD_OK)
        return EXIT_USAGE;
    if (!(r->agent_keys = calloc(r->cfg.agents, sizeof *r->agent_keys))) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory");
        return EXIT_RUNTIME;
    }
    for (uint32_t a = 0; a < r->cfg.agents; a++) {
        char name[KEY_NAME_MAX];
        keys_agent_name(name, a);
        if (keys_load_public(r->set.keys_dir, name, &r->agent_keys[a], err) != ESGD_OK)
            return EXIT_USAGE;
    }
    if (dataset_load_split(&r->test, r->set.data_dir, "t10k", NULL, 0, err) != ESGD_OK)
        return EXIT_RUNTIME;
    /* A fresh start is a new run; a resume below takes the checkpoint's.
     * The top bit keeps its encoding one size (see esgd_job_config.run). */
    randombytes_buf(&r->cfg.run, sizeof r->cfg.run);
    r->cfg.run |= 1ull << 63;
    if (!(r->coordinator = coordinator_new(&r->cfg, err)))
        return EXIT_RUNTIME;
    coordinator_set_keys(r->coordinator, &own, r->agent_keys);
    bool clip = strcmp(r->set.norm_action, "clip") == 0;
    if (!clip && strcmp(r->set.norm_action, "reject") != 0) {
        esgd_error_set(err, ESGD_ERR_ARG, "--norm-action must be reject or clip, not '%s'", r->set.norm_action);
        return EXIT_USAGE;
    }
    if (coordinator_set_norm_bound(r->coordinator, r->set.max_update_norm, clip ? NORM_ACTION_CLIP : NORM_ACTION_REJECT,
                                   err) != ESGD_OK)
        return EXIT_USAGE;
    if (!(r->agent_online = calloc(r->cfg.agents, 1)) || !(r->missed = calloc(r->cfg.agents, sizeof *r->missed))) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory");
        return EXIT_RUNTIME;
    }
    if (!(r->status_decoder = codec_decoder_new(err)))
        return EXIT_RUNTIME;
    if (r->set.state_dir) {
        if (mkdir(r->set.state_dir, 0755) != 0 && errno != EEXIST) {
            esgd_error_set(err, ESGD_ERR_IO, "cannot create state dir %s: %s", r->set.state_dir, strerror(errno));
            return EXIT_RUNTIME;
        }
        /* One coordinator per job and state folder: a second one would knock
         * the first off the broker and interleave checkpoints. The lock goes
         * with the process, however it ends. */
        char lock_path[4200];
        snprintf(lock_path, sizeof lock_path, "%s/coordinator-%s.lock", r->set.state_dir, r->cfg.job);
        int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lock_fd < 0) {
            esgd_error_set(err, ESGD_ERR_IO, "cannot open %s: %s", lock_path, strerror(errno));
            return EXIT_RUNTIME;
        }
        if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
            esgd_error_set(err, ESGD_ERR_ARG, "another coordinator of job %s is running on %s (%s is locked)",
                           r->cfg.job, r->set.state_dir, lock_path);
            close(lock_fd);
            return EXIT_USAGE;
        }
        snprintf(r->checkpoint, sizeof r->checkpoint, "%s/coordinator-%s.ckpt", r->set.state_dir, r->cfg.job);
        if (state_file_exists(r->checkpoint)) {
            /* Restarting cannot mend a checkpoint: say so and stay down. */
            if (coordinator_restore(r->coordinator, r->checkpoint, err) != ESGD_OK) {
                esgd_error_prefix(err, "cannot resume (move the checkpoint away to start a new run)");
                return EXIT_USAGE;
            }
            r->cfg.run = coordinator_config(r->coordinator)->run;
            r->resumed = true;
            log_info("resumed run %016llx from %s at round %u", (unsigned long long)r->cfg.run, r->checkpoint,
                     coordinator_round(r->coordinator));
        }
    }
    /* This start's generation: above the checkpoint's, and the start time
     * in seconds keeps it above any earlier start's even when restored from
     * an older checkpoint (agents tell us if not: handle_status). */
    uint32_t generation = coordinator_generation(r->coordinator) + 1, now = (uint32_t)time(NULL);
    coordinator_set_generation(r->coordinator, now > generation ? now : generation);
    if (r->set.csv_path) {
        bool fresh = coordinator_round(r->coordinator) == 0;
        /* Rows past the checkpoint are of rounds about to be run again. */
        if (!fresh && report_csv_cut(r->set.csv_path, coordinator_round(r->coordinator), err) != ESGD_OK)
            return EXIT_RUNTIME;
        if (!(r->csv = fopen(r->set.csv_path, fresh ? "w" : "a"))) {
            esgd_error_set(err, ESGD_ERR_IO, "cannot write %s: %s", r->set.csv_path, strerror(errno));
            return EXIT_RUNTIME;
        }
        if (fresh)
            report_csv_header(r->csv);
    }
    if (r->set.metrics_port) {
        if (r->set.metrics_port > 65535) {
            esgd_error_set(err, ESGD_ERR_ARG, "--metrics-port %u is not a TCP port", r->set.metrics_port);
            return EXIT_USAGE;
        }
        if (!(r->metrics = metrics_start(r->set.metrics_address, (uint16_t)r->set.metrics_port, &r->cfg, 1024, err)))
            return EXIT_RUNTIME;
        metrics_progress(r->metrics, r->coordinator);
        log_info("metrics at http://%s:%u/metrics", r->set.metrics_address, r->set.metrics_port);
    }
    char client_id[128];
    snprintf(client_id, sizeof client_id, "esgd-coordinator-%s", r->cfg.job);
    if (lease_init(&r->lease, r->cfg.job, r->cfg.run, coordinator_generation(r->coordinator), r->set.state_dir, &own,
                   err) != ESGD_OK)
        return EXIT_RUNTIME;
    mqtt_link_options mo = r->set.link;
    mo.client_id = client_id;
    mo.will_topic = r->lease.topic;
    mo.will_payload = r->lease.released;
    mo.will_size = r->lease.released_size;
    if (!(r->link = mqtt_link_open(&mo, err)))
        return EXIT_RUNTIME;
    esgd_status st = lease_claim(&r->lease, r->link, on_other_message, r, err);
    if (st != ESGD_OK)
        return st == ESGD_ERR_ARG ? EXIT_USAGE : EXIT_RUNTIME;
    r->lease_claimed = true;
    return EXIT_DONE;
}

int main(int argc, char **argv)
{
    run r;
    memset(&r, 0, sizeof r);
    r.accuracy = r.test_loss = NAN;
    settings *set = &r.set;
    set->link.broker_url = "tcp://127.0.0.1:1883";
    set->link.connect_timeout_seconds = 30;
    set->data_dir = "data/mnist";
    set->metrics_address = "127.0.0.1";
    set->norm_action = "reject";
    set->round_timeout = 30;
    set->start_timeout = 120;
    set->republish_after = 5;
    cli_option broker_options[MQTT_LINK_CLI_OPTION_COUNT];
    mqtt_link_cli_options(&set->link, broker_options);
    const cli_option options[] = {
        {"data", CLI_STRING, &set->data_dir, "IDX data folder: train labels (epoch length) and t10k test set"},
        {"quorum", CLI_UINT, &set->quorum, "fewest updates that may close a round after the timeout (0: majority)"},
        {"round-timeout", CLI_DOUBLE, &set->round_timeout, "seconds to wait for all agents before a quorum suffices"},
        {"start-timeout", CLI_DOUBLE, &set->start_timeout,
         "seconds the first round after a start waits for agents still coming online (then --round-timeout)"},
        {"republish-after", CLI_DOUBLE, &set->republish_after,
         "seconds without a new update before the round's model is published again (0: never)"},
        {"state-dir", CLI_STRING, &set->state_dir, "folder for the checkpoint; resumes from it on restart"},
        {"csv", CLI_STRING, &set->csv_path, "per-round CSV: round,loss,participants,lr,test_accuracy,bytes"},
        {"json", CLI_FLAG, &set->json, "print one JSON object with the results on stdout at the end"},
        {"metrics-port", CLI_UINT, &set->metrics_port, "serve Prometheus metrics at http://ADDRESS:PORT/metrics (0: off)"},
        {"metrics-address", CLI_STRING, &set->metrics_address, "IPv4 address the metrics server listens on"},
        {"max-update-norm", CLI_DOUBLE, &set->max_update_norm,
         "L2 norm bound on one agent's update (0: 10 x the median of recent updates; < 0: none)"},
        {"keys", CLI_STRING, &set->keys_dir, "folder with coordinator.key (ours) and agent-<id>.pub (esgd-keygen)"},
        {"norm-action", CLI_STRING, &set->norm_action, "what to do with an update over the bound: reject | clip"},
        {"eval-limit", CLI_UINT, &set->eval_limit, "test examples per periodic evaluation (the final one uses all)"},
    };
    const cli_program program = {
        .name = "esgd-coordinator",
        .summary = "usage: esgd-coordinator [options] [job options]\n"
                   "Runs an eSGD job over MQTT: publishes the configuration and each round's model,\n"
                   "aggregates the agents' sparse updates and tracks the global loss.",
        .options = options,
        .option_count = sizeof options / sizeof options[0],
        .shared_options = broker_options,
        .shared_option_count = MQTT_LINK_CLI_OPTION_COUNT,
        .epilogue = "exit status: 0 job finished, 1 runtime error (broker, data, checkpoint),\n"
                    "             2 bad usage or configuration, 3 stopped by SIGINT/SIGTERM (checkpoint kept)",
    };
    job_config_defaults(&r.cfg);
    int rc = cli_parse(&program, argc, argv, &r.cfg);
    if (rc != CLI_CONTINUE)
        return rc == CLI_HELP ? EXIT_DONE : EXIT_USAGE;
    if (!(set->round_timeout >= 0) || !(set->start_timeout >= 0) || !(set->republish_after >= 0)) {
        fprintf(stderr, "esgd-coordinator: --round-timeout, --start-timeout and --republish-after must be >= 0\n");
        return EXIT_USAGE;
    }
    log_set_subject("esgd-coordinator");
    stop_signals_install();
    blas_threads_default();

    esgd_error err = {0};
    double started = monotonic_seconds();
    rc = setup(&r, &err);
    if (rc != EXIT_DONE)
        log_error("%s", err.message);
    else
        rc = train(&r);
    if (rc == EXIT_INTERRUPTED)
        log_info("stopped at round %u%s", coordinator_round(r.coordinator),
                 r.set.state_dir ? "; the checkpoint holds the last closed round" : "");
    if (rc == EXIT_DONE) {
        mqtt_link_counters k = mqtt_link_get_counters(r.link);
        log_info("job %s finished: %u rounds, test accuracy %.4f; broker link: %llu messages in, %llu out; "
                 "peak resident set %.1f MiB",
                 r.cfg.job, coordinator_round(r.coordinator), r.accuracy, (unsigned long long)k.received,
                 (unsigned long long)k.published, peak_resident_mib());
        if (set->json)
            report_json(stdout, r.coordinator, r.accuracy, r.test_loss, &r.times, monotonic_seconds() - started);
    }
    log_limiter_flush(&status_refused_log, "refused status messages");
    log_limiter_flush(&update_rejected_log, "rejected updates");
    log_limiter_flush(&update_unused_log, "duplicate, late or early updates");
    log_limiter_flush(&conflict_log, "conflicting updates");
    metrics_stop(r.metrics);
    r.metrics = NULL;
    mqtt_link_close(r.link);
    if (r.csv)
        fclose(r.csv);
    coordinator_free(r.coordinator);
    dataset_destroy(&r.test);
    free(r.agent_online);
    buffer_destroy(&r.retained);
    lease_destroy(&r.lease);
    buffer_destroy(&r.broadcast);
    free(r.missed);
    free(r.agent_keys);
    codec_decoder_free(r.status_decoder);
    metrics_stop(r.metrics);
    round_times_destroy(&r.times);
    return rc;
}
