/* esgd-coordinator: the parameter server of an eSGD job over MQTT. It
 * publishes the job configuration, opens each round by publishing the model,
 * collects the agents' updates, closes the round when every agent has
 * reported (or a quorum has and the deadline has passed), and checkpoints.
 * All training arithmetic is the core's (coordinator.h); the program only
 * moves bytes and keeps time. This file holds its options, its start-up
 * (data, keys, checkpoint, lease, broker link), the job loop and what
 * follows each round; a round's messages are round.c's. */
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
#include "esgd/model_file.h"
#include "esgd/mqtt_link.h"
#include "esgd/mqtt_link_cli.h"
#include "esgd/report.h"
#include "esgd/state_file.h"
#include "esgd/topics.h"
#include "lease.h"
#include "metrics.h"
#include "esgd/runtime.h"
#include "run.h"

/* Encodes a model message with `encode` into a buffer of our own. */
static esgd_status keep_copy(run *r, esgd_buffer *copy,
                             esgd_status (*encode)(esgd_coordinator *, const uint8_t **, size_t *, esgd_error *),
                             esgd_error *err)
{
    const uint8_t *msg;
    size_t size;
    esgd_status st = encode(r->coordinator, &msg, &size, err);
    if (st == ESGD_OK && size > copy->capacity) {
        buffer_destroy(copy);
        st = buffer_init(copy, size, err);
    }
    if (st != ESGD_OK) {
        esgd_error_prefix(err, "round %u: cannot encode the model", coordinator_round(r->coordinator));
        return st;
    }
    memcpy(copy->data, msg, size);
    copy->size = size;
    return ESGD_OK;
}

/* report_round's first step: the next model, encoded before the round's
 * CSV row, whose byte counts include it. */
static esgd_status encode_next_model(void *ctx, const round_summary *s, esgd_error *err)
{
    (void)s;
    run *r = ctx;
    if (r->report.test_images)
        metrics_evaluated(r->metrics, r->report.accuracy, r->report.test_loss);
    /* The retained full model serves agents that start late or lost their
     * link; each also asks for the current model (status "syncing"), so it
     * need not be fresh: every --full-model-every rounds, or by default once
     * the traffic since the last one is 19 times its size (then it is at
     * most 5% of the job's traffic), and always the final one. */
    uint32_t every = r->set.full_model_every, closed = coordinator_round(r->coordinator);
    uint64_t full_size = (uint64_t)job_dimension(&r->cfg) * sizeof(float);
    r->retained_due = coordinator_done(r->coordinator) ||
                      (every ? closed % every == 0 : run_traffic(r) - r->traffic_at_retained >= 19 * full_size);
    /* Copies: the checkpoint reuses the coordinator's output buffer. */
    esgd_status st = r->retained_due ? keep_copy(r, &r->retained, coordinator_full_model, err) : ESGD_OK;
    if (st == ESGD_OK)
        st = keep_copy(r, &r->broadcast, coordinator_round_model, err);
    if (st != ESGD_OK)
        return st;
    /* The final model ends the lease refreshes: every lease published is
     * counted in the last row, and goes out before the final model. */
    if (coordinator_done(r->coordinator))
        lease_refresh_stop(&r->lease);
    /* Counted now, with what they will be published as (checkpoint_and_publish:
     * a failure there ends the job), so that the row includes them. */
    run_count_lease_bytes(r);
    coordinator_note_published(r->coordinator, (r->retained_due ? r->retained.size : 0) + r->broadcast.size);
    if (r->retained_due)
        r->traffic_at_retained = run_traffic(r);
    return ESGD_OK;
}

/* Its second, once the row is on disk: the checkpoint, then the model. The
 * checkpoint is written before the next model goes out, so agents can
 * never be ahead of what a restarted coordinator remembers. */
static esgd_status checkpoint_and_publish(void *ctx, const round_summary *s, esgd_error *err)
{
    (void)s;
    run *r = ctx;
    if (r->set.state_dir && coordinator_save(r->coordinator, r->checkpoint, err) != ESGD_OK) {
        esgd_error_prefix(err, "checkpoint");
        return err->status;
    }
    char topic[TOPIC_MAX];
    esgd_status st = ESGD_OK;
    if (r->retained_due) {
        topic_latest_model(topic, r->cfg.job);
        if ((st = mqtt_link_publish(r->link, topic, r->retained.data, r->retained.size, 1, true, err)) != ESGD_OK)
            return st;
    }
    topic_round_model(topic, r->cfg.job, coordinator_round(r->coordinator));
    return mqtt_link_publish(r->link, topic, r->broadcast.data, r->broadcast.size, 1, false, err);
}

/* Evaluates, writes the round's CSV row, checkpoints, then publishes the
 * model the round produced (the final one after the last round) and prints
 * the progress line. The row is on disk before the checkpoint, and a
 * restore cuts rows past the checkpoint (setup), so a kill at any point
 * leaves each round's row exactly once. */
static int after_round(run *r, const round_summary *s)
{
    esgd_error err = {0};
    const report_round_steps steps = {encode_next_model, checkpoint_and_publish, r};
    if (report_round(&r->report, r->coordinator, s, &steps, &err) == ESGD_OK)
        return EXIT_DONE;
    log_error("%s", err.message);
    return EXIT_RUNTIME;
}

/* Connections lost or clients replaced so far: what may have dropped
 * publishes handed over before. */
static uint64_t link_losses(mqtt_link *link)
{
    mqtt_link_counters k = mqtt_link_get_counters(link);
    return k.disconnects + k.client_resets;
}

static int train(run *r)
{
    uint64_t final_losses = 0;
    esgd_error err = {0};
    char topic[TOPIC_MAX];
    const uint8_t *msg;
    size_t size;
    uint32_t quorum = r->set.quorum ? r->set.quorum : r->cfg.agents / 2 + 1;
    if (quorum > r->cfg.agents)
        quorum = r->cfg.agents;

    run_count_lease_bytes(r); /* the claim */
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
        if (run_publish(r, topic, (const uint8_t *)"", 0, true) != ESGD_OK)
            return EXIT_RUNTIME;
    }
    if (coordinator_config_message(r->coordinator, &msg, &size, &err) != ESGD_OK)
        goto io_error;
    topic_config(topic, r->cfg.job);
    if (run_publish(r, topic, msg, size, true) != ESGD_OK)
        return EXIT_RUNTIME;
    log_info("job %s run %016llx generation %u: %s %s drop %g, %u agents (quorum %u, round timeout %g s), %u rounds "
             "from round %u", r->cfg.job, (unsigned long long)r->cfg.run, coordinator_generation(r->coordinator), r->cfg.model, sparsify_method_name(r->cfg.sparsify.method),
             r->cfg.sparsify.drop_ratio,
             r->cfg.agents, quorum, r->set.round_timeout, job_total_rounds(&r->cfg), coordinator_round(r->coordinator));

    report_clock_start(&r->report.clock, r->coordinator);
    /* Each round's end publishes the next round's model (after_round). */
    if (run_publish_model(r, false) != ESGD_OK)
        return EXIT_RUNTIME;
    while (!coordinator_done(r->coordinator)) {
        double opened = monotonic_seconds();
        metrics_progress(r->metrics, r->coordinator);
        if (!run_collect_round(r, quorum))
            return r->must_stop ? EXIT_USAGE : EXIT_INTERRUPTED;
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
        r->last_round_seconds = r->republished ? 0 : took;
        metrics_round_closed(r->metrics, r->coordinator, &s, took);
        round_times_add(&r->times, took);
        r->rounds_run++;
        final_losses = link_losses(r->link);
        int rc = after_round(r, &s);
        if (rc != EXIT_DONE)
            return rc;
    }
    /* The last after_round published the final model, done = 1: agents stop
     * when they see it, and nothing else will come for them. A connection
     * lost since (a client reset drops what was buffered) or publishes not
     * acknowledged could leave them waiting for good: publish it again. */
    for (int attempt = 0; attempt < 3; attempt++) {
        bool flushed = mqtt_link_flush(r->link, 10000);
        if (flushed && link_losses(r->link) == final_losses)
            break;
        log_warn("the final model may not have reached the broker (%s): publishing it again",
                 flushed ? "the connection was lost meanwhile" : "not acknowledged");
        final_losses = link_losses(r->link);
        run_publish_model(r, true);
    }
    return EXIT_DONE;
io_error:
    log_error("%s", err.message);
    return EXIT_RUNTIME;
}

/* --export and --normalisation: where the trained model is written at the
 * end of the job, and the input normalisation stored with it. */
typedef struct model_export {
    const char *path; /* NULL: not written */
    const char *norm_path;
    char default_path[4200];
    float *norm; /* (norm_count, 2) mean, std */
    uint32_t norm_count;
} model_export;

/* Before training: the default path, and the normalisation read and checked
 * against the network now rather than at the end of the job. */
static int export_setup(const run *r, model_export *ex, esgd_error *err)
{
    if (!ex->path && r->set.state_dir) {
        snprintf(ex->default_path, sizeof ex->default_path, "%s/model-%s.esgd", r->set.state_dir, r->cfg.job);
        ex->path = ex->default_path;
    }
    if (!ex->norm_path)
        return EXIT_DONE;
    if (!ex->path) {
        esgd_error_set(err, ESGD_ERR_ARG, "--normalisation is stored in the exported model: give --export or --state-dir");
        return EXIT_USAGE;
    }
    model_spec spec;
    if (job_model_spec(&r->cfg, &spec, err) != ESGD_OK ||
        model_file_read_normalisation(ex->norm_path, &spec, &ex->norm, &ex->norm_count, err) != ESGD_OK)
        return EXIT_USAGE;
    return EXIT_DONE;
}

/* After the final evaluation: the model of the last closed round with the
 * final test accuracy (NaN, stored as nil, when there was none). */
static esgd_status export_model(const run *r, const model_export *ex, esgd_error *err)
{
    const esgd_job_config *cfg = coordinator_config(r->coordinator);
    model_file f = {.run = cfg->run,
                    .round = coordinator_round(r->coordinator) - 1,
                    .classes = cfg->classes,
                    .num_params = job_dimension(cfg),
                    .params = (float *)coordinator_params(r->coordinator),
                    .test_accuracy = r->report.accuracy,
                    .norm_count = ex->norm_count,
                    .norm = ex->norm};
    snprintf(f.job, sizeof f.job, "%s", cfg->job);
    snprintf(f.model, sizeof f.model, "%s", cfg->model);
    snprintf(f.input, sizeof f.input, "%s", cfg->input);
    return model_file_write(ex->path, &f, err);
}

/* Messages that arrive while the lease is claimed are handled as usual. */
static void on_other_message(void *ctx, const mqtt_message *m)
{
    run_handle_message(ctx, m);
}

/* The test set must fit the job's network: its example shape and labels. */
static esgd_status check_test_set(const esgd_job_config *cfg, const esgd_dataset *test, esgd_error *err)
{
    uint32_t dims[3], rank;
    esgd_status st = job_input_dims(cfg, dims, &rank, err);
    if (st != ESGD_OK)
        return st;
    bool same = rank == test->rank;
    for (uint32_t i = 0; same && i < rank; i++)
        same = dims[i] == test->dims[i];
    if (!same) {
        char shape[48] = "";
        for (uint32_t i = 0; i < test->rank; i++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%u", i ? "x" : "", test->dims[i]);
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "the test set's examples are %s, not --input %s (set --input %s)",
                              shape, cfg->input, shape);
    }
    for (uint32_t i = 0; i < test->count; i++)
        if (test->labels[i] >= cfg->classes)
            return esgd_error_set(err, ESGD_ERR_RANGE, "test example %u has label %u; --classes is %u", i,
                                  test->labels[i], cfg->classes);
    return ESGD_OK;
}

static int setup(run *r, esgd_error *err)
{
    char path[4096];
    uint8_t *labels = NULL;
    uint32_t count = 0;
    /* The training-set size fixes the rounds per epoch: read from the data
     * the agents are cut from when --data holds a train split, as the
     * simulator does; on agents' own data --train-samples says it. */
    if (dataset_split_exists(r->set.data_dir, "train")) {
        dataset_labels_path(path, sizeof path, r->set.data_dir, "train");
        if (idx_read_labels(path, &labels, &count, err) != ESGD_OK)
            return EXIT_RUNTIME;
        free(labels);
        r->cfg.train_samples = count;
    }
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
    const char *test_split = dataset_test_split(r->set.data_dir);
    if (test_split) {
        if (dataset_load_split(&r->test, r->set.data_dir, test_split, NULL, 0, err) != ESGD_OK)
            return EXIT_RUNTIME;
        if (check_test_set(&r->cfg, &r->test, err) != ESGD_OK)
            return EXIT_USAGE;
        r->report.test = &r->test;
    } else {
        log_warn("no test split (t10k or test) in %s: no test accuracy, only the agents' training loss is reported",
                 r->set.data_dir);
    }
    r->report.eval_limit = r->set.eval_limit;
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
    if (!(r->agent_online = calloc(r->cfg.agents, 1)) || !(r->missed = calloc(r->cfg.agents, sizeof *r->missed)) ||
        !(r->synced_round = calloc(r->cfg.agents, sizeof *r->synced_round)) ||
        !(r->config_sent_at = calloc(r->cfg.agents, sizeof *r->config_sent_at))) {
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
    uint32_t saved = coordinator_generation(r->coordinator), now = (uint32_t)time(NULL);
    uint32_t generation = saved < UINT32_MAX ? saved + 1 : saved;
    coordinator_set_generation(r->coordinator, now > generation ? now : generation);
    if (r->set.csv_path) {
        bool fresh = coordinator_round(r->coordinator) == 0;
        /* Rows past the checkpoint are of rounds about to be run again. */
        if (!fresh && report_csv_cut(r->set.csv_path, coordinator_round(r->coordinator), err) != ESGD_OK)
            return EXIT_RUNTIME;
        if (!(r->report.csv = fopen(r->set.csv_path, fresh ? "w" : "a"))) {
            esgd_error_set(err, ESGD_ERR_IO, "cannot write %s: %s", r->set.csv_path, strerror(errno));
            return EXIT_RUNTIME;
        }
        if (fresh)
            report_csv_header(r->report.csv);
        r->report.csv_path = r->set.csv_path;
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
    /* First a look at the lease under a client id of our own, so that a
     * live holder's connection is not taken over by looking (lease.h). */
    char probe_id[160];
    snprintf(probe_id, sizeof probe_id, "esgd-lease-%s-%08x", r->cfg.job, (unsigned)randombytes_random());
    mqtt_link_options po = r->set.link;
    po.client_id = probe_id;
    if (r->set.lease_username) {
        /* Its own user, which may only read the lease topic; not the
         * coordinator's password or client certificate. */
        po.username = r->set.lease_username;
        po.password = NULL;
        po.password_file = r->set.lease_password_file;
        po.cert_file = po.key_file = NULL;
    } else if (r->set.lease_password_file) {
        esgd_error_set(err, ESGD_ERR_ARG, "--lease-password-file needs --lease-username");
        return EXIT_USAGE;
    }
    esgd_status st = lease_probe(&r->lease, &po, err);
    if (st != ESGD_OK)
        return st == ESGD_ERR_ARG ? EXIT_USAGE : EXIT_RUNTIME;
    mqtt_link_options mo = r->set.link;
    mo.client_id = client_id;
    mo.will_topic = r->lease.topic;
    mo.will_payload = r->lease.released;
    mo.will_size = r->lease.released_size;
    if (!(r->link = mqtt_link_open(&mo, err)))
        return EXIT_RUNTIME;
    st = lease_claim(&r->lease, r->link, on_other_message, r, err);
    if (st != ESGD_OK)
        return st == ESGD_ERR_ARG ? EXIT_USAGE : EXIT_RUNTIME;
    if (lease_refresh_start(&r->lease, r->link, err) != ESGD_OK)
        return EXIT_RUNTIME;
    r->lease_claimed = true;
    return EXIT_DONE;
}

int main(int argc, char **argv)
{
    run r;
    memset(&r, 0, sizeof r);
    r.report = (report_rounds){.csv_sync = true, .progress_every_round = true, .accuracy = NAN, .test_loss = NAN};
    settings *set = &r.set;
    model_export ex = {0};
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
        {"data", CLI_STRING, &set->data_dir, "IDX data folder: train labels (epoch length, when present) and the t10k or test split"},
        {"quorum", CLI_UINT, &set->quorum, "fewest updates that may close a round after the timeout (0: majority)"},
        {"round-timeout", CLI_DOUBLE, &set->round_timeout, "seconds to wait for all agents before a quorum suffices"},
        {"start-timeout", CLI_DOUBLE, &set->start_timeout,
         "seconds the first round after a start waits for agents still coming online (then --round-timeout)"},
        {"republish-after", CLI_DOUBLE, &set->republish_after,
         "seconds without a new update before the round's model is published again, at least twice the last "
         "round's length (0: never)"},
        {"full-model-every", CLI_UINT, &set->full_model_every,
         "rounds between retained full models for late agents (0: when the traffic since the last is 19 times "
         "its size, so at most 5%); always the final one"},
        {"state-dir", CLI_STRING, &set->state_dir, "folder for the checkpoint; resumes from it on restart"},
        {"csv", CLI_STRING, &set->csv_path, "per-round CSV: round,loss,participants,lr,test_accuracy,bytes"},
        {"json", CLI_FLAG, &set->json, "print one JSON object with the results on stdout at the end"},
        {"metrics-port", CLI_UINT, &set->metrics_port, "serve Prometheus metrics at http://ADDRESS:PORT/metrics (0: off)"},
        {"metrics-address", CLI_STRING, &set->metrics_address, "IPv4 address the metrics server listens on"},
        {"max-update-norm", CLI_DOUBLE, &set->max_update_norm,
         "L2 norm bound on one agent's update (0: 10 x the median of recent updates; < 0: none)"},
        {"lease-username", CLI_STRING, &set->lease_username,
         "broker user for the lease check at start, which only reads esgd/<job>/lease (default: --username; give one "
         "where the broker makes the user name the client id)"},
        {"lease-password-file", CLI_STRING, &set->lease_password_file,
         "file whose first line is --lease-username's password"},
        {"keys", CLI_STRING, &set->keys_dir, "folder with coordinator.key (ours) and agent-<id>.pub (esgd-keygen)"},
        {"norm-action", CLI_STRING, &set->norm_action, "what to do with an update over the bound: reject | clip"},
        {"eval-limit", CLI_UINT, &set->eval_limit, "test examples per periodic evaluation (the final one uses all)"},
        {"export", CLI_STRING, &ex.path,
         "write the trained model file here at the end (default: STATE-DIR/model-JOB.esgd with --state-dir, else none)"},
        {"normalisation", CLI_STRING, &ex.norm_path, "normalisation.csv (esgd-import) to store in the exported model"},
    };
    const cli_program program = {
        .name = "esgd-coordinator",
        .summary = "usage: esgd-coordinator [options] [job options]\n"
                   "Runs an eSGD job over MQTT: publishes the configuration and each round's model,\n"
                   "aggregates the agents' sparse updates and tracks the global loss.",
        CLI_OPTIONS(options),
        CLI_SHARED_OPTIONS(broker_options),
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
    if (rc == EXIT_DONE)
        rc = export_setup(&r, &ex, &err);
    if (rc != EXIT_DONE)
        log_error("%s", err.message);
    else
        rc = train(&r);
    if (rc == EXIT_INTERRUPTED)
        log_info("stopped at round %u%s", coordinator_round(r.coordinator),
                 r.set.state_dir ? "; the checkpoint holds the last closed round" : "");
    if (rc == EXIT_DONE && ex.path && export_model(&r, &ex, &err) != ESGD_OK) {
        log_error("%s", err.message);
        rc = EXIT_RUNTIME;
    }
    if (rc == EXIT_DONE) {
        mqtt_link_counters k = mqtt_link_get_counters(r.link);
        log_info("job %s finished: %u rounds, test accuracy %.4f; model %s; broker link: %llu messages in, %llu out; "
                 "peak resident set %.1f MiB",
                 r.cfg.job, coordinator_round(r.coordinator), r.report.accuracy, ex.path ? ex.path : "not exported",
                 (unsigned long long)k.received,
                 (unsigned long long)k.published, peak_resident_mib());
        if (set->json)
            report_json(stdout, r.coordinator, &r.report, &r.times, monotonic_seconds() - started);
    }
    run_flush_logs();
    metrics_stop(r.metrics);
    r.metrics = NULL;
    lease_refresh_stop(&r.lease); /* it publishes on the link */
    mqtt_link_close(r.link);
    if (r.report.csv)
        fclose(r.report.csv);
    coordinator_free(r.coordinator);
    dataset_destroy(&r.test);
    free(r.agent_online);
    buffer_destroy(&r.retained);
    lease_destroy(&r.lease);
    buffer_destroy(&r.broadcast);
    free(r.missed);
    free(r.synced_round);
    free(r.config_sent_at);
    free(r.agent_keys);
    codec_decoder_free(r.status_decoder);
    metrics_stop(r.metrics);
    round_times_destroy(&r.times);
    free(ex.norm);
    return rc;
}
