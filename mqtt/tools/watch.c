/* esgd-watch: a read-only observer of a job on the broker. It subscribes to
 * everything under esgd/<job>/, checks every message's signature (with
 * --keys, the public keys of the job; else it only splits the signature
 * off), decodes it with the codec by its topic, and counts messages, bytes
 * and failures per kind. It stops
 * when the final model (done = 1) has gone by, after --timeout seconds, or
 * on SIGINT/SIGTERM, and prints one JSON object. The integration tests use
 * it to check that everything on the wire follows the schema. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esgd/cli.h"
#include "esgd/codec.h"
#include "esgd/envelope.h"
#include "esgd/json_writer.h"
#include "esgd/log.h"
#include "esgd/mqtt_link.h"
#include "esgd/mqtt_link_cli.h"
#include "esgd/topics.h"
#include "esgd/runtime.h"

typedef struct kind_count {
    const char *name;
    uint64_t messages, bytes, invalid;
} kind_count;

enum { K_CONFIG, K_LATEST, K_ROUND_MODEL, K_AGENT_MODEL, K_AGENT_CONFIG, K_GRAD, K_STATUS, K_LEASE, K_OTHER, K_COUNT };

typedef struct watch {
    codec_decoder *decoder;
    update_msg update;
    model_msg model;
    esgd_job_config cfg;
    kind_count kinds[K_COUNT];
    uint64_t cleared;  /* empty payloads (retained messages being cleared) */
    int done;
    uint32_t last_round;
    uint32_t dim;
    const char *keys_dir; /* NULL: signatures not checked */
    char first_error[sizeof(((esgd_error *)0)->message)];
} watch;

static void count_invalid(watch *w, kind_count *k, const char *topic, const esgd_error *err)
{
    k->invalid++;
    if (w->first_error[0])
        return;
    esgd_error copy = *err;
    esgd_error_prefix(&copy, "%s", topic);
    memcpy(w->first_error, copy.message, sizeof w->first_error);
}

/* The body of a message: its signer's signature checked (with --keys) or
 * only split off. The signer follows from the topic. */
static esgd_status open_envelope(const watch *w, const topic_info *t, const mqtt_message *m, size_t *body,
                                 esgd_error *err)
{
    if (!w->keys_dir) {
        if (m->size <= ENVELOPE_SIGNATURE_BYTES)
            return esgd_error_set(err, ESGD_ERR_SIGNATURE, "%zu bytes: no room for a signature", m->size);
        *body = m->size - ENVELOPE_SIGNATURE_BYTES;
        return ESGD_OK;
    }
    char name[KEY_NAME_MAX] = "coordinator";
    if (t->kind == TOPIC_ROUND_GRAD || t->kind == TOPIC_STATUS)
        keys_agent_name(name, t->agent);
    verify_key key;
    esgd_status st = keys_load_public(w->keys_dir, name, &key, err);
    return st == ESGD_OK ? envelope_open(m->data, m->size, &key, body, err) : st;
}

static void observe(watch *w, const char *job, const mqtt_message *m)
{
    topic_info t = topic_parse(m->topic, job);
    static const int kind_of[] = {[TOPIC_UNKNOWN] = K_OTHER, [TOPIC_CONFIG] = K_CONFIG,
                                  [TOPIC_LATEST_MODEL] = K_LATEST, [TOPIC_ROUND_MODEL] = K_ROUND_MODEL,
                                  [TOPIC_ROUND_GRAD] = K_GRAD, [TOPIC_STATUS] = K_STATUS,
                                  [TOPIC_LEASE] = K_LEASE, [TOPIC_AGENT_MODEL] = K_AGENT_MODEL,
                                  [TOPIC_AGENT_CONFIG] = K_AGENT_CONFIG};
    kind_count *k = &w->kinds[kind_of[t.kind]];
    if (m->size == 0) {
        w->cleared++;
        return;
    }
    k->messages++;
    k->bytes += m->size;
    esgd_error err = {0};
    size_t size = 0;
    if (t.kind != TOPIC_UNKNOWN && open_envelope(w, &t, m, &size, &err) != ESGD_OK) {
        count_invalid(w, k, m->topic, &err);
        return;
    }
    switch (t.kind) {
    case TOPIC_CONFIG:
    case TOPIC_AGENT_CONFIG:
        if (codec_decode_config(w->decoder, m->data, size, &w->cfg, &err) != ESGD_OK)
            count_invalid(w, k, m->topic, &err);
        else
            w->dim = job_dimension(&w->cfg);
        break;
    case TOPIC_LATEST_MODEL:
    case TOPIC_ROUND_MODEL:
    case TOPIC_AGENT_MODEL:
        if (codec_decode_model(w->decoder, m->data, size, w->dim, &w->model, &err) != ESGD_OK) {
            count_invalid(w, k, m->topic, &err);
        } else if (t.kind == TOPIC_ROUND_MODEL && w->model.round != t.round) {
            esgd_error_set(&err, ESGD_ERR_MISMATCH, "model for round %u on the topic of round %u", w->model.round,
                           t.round);
            count_invalid(w, k, m->topic, &err);
        } else {
            w->last_round = w->model.round;
            if (w->model.done && t.kind == TOPIC_ROUND_MODEL)
                w->done = 1;
        }
        break;
    case TOPIC_ROUND_GRAD:
        if (codec_decode_update(w->decoder, m->data, size, w->dim, &w->update, &err) != ESGD_OK) {
            count_invalid(w, k, m->topic, &err);
        } else if (w->update.round != t.round || w->update.agent != t.agent) {
            esgd_error_set(&err, ESGD_ERR_MISMATCH, "update of agent %u round %u on the wrong topic",
                           w->update.agent, w->update.round);
            count_invalid(w, k, m->topic, &err);
        }
        break;
    case TOPIC_STATUS: {
        status_msg s;
        if (codec_decode_status(w->decoder, m->data, size, &s, &err) != ESGD_OK)
            count_invalid(w, k, m->topic, &err);
        break;
    }
    case TOPIC_LEASE: {
        lease_msg l;
        if (codec_decode_lease(w->decoder, m->data, size, &l, &err) != ESGD_OK)
            count_invalid(w, k, m->topic, &err);
        break;
    }
    case TOPIC_UNKNOWN:
        break;
    }
}

int main(int argc, char **argv)
{
    const char *job = "mnist";
    mqtt_link_options mo = {.broker_url = "tcp://127.0.0.1:1883"};
    cli_option broker_options[MQTT_LINK_CLI_OPTION_COUNT];
    mqtt_link_cli_options(&mo, broker_options);
    double timeout = 0;
    const char *keys_dir = NULL;
    const cli_option options[] = {
        {"job", CLI_STRING, &job, "job name"},
        {"timeout", CLI_DOUBLE, &timeout, "stop after this many seconds (0: when the job is done)"},
        {"keys", CLI_STRING, &keys_dir, "folder with coordinator.pub and agent-<id>.pub: check every signature"},
    };
    const cli_program program = {
        .name = "esgd-watch",
        .summary = "usage: esgd-watch [--broker URL] [--job NAME] [--timeout S]\n"
                   "Decodes every message of a job on the broker and prints counts as JSON.",
        CLI_OPTIONS(options),
        CLI_SHARED_OPTIONS(broker_options),
        .epilogue = "exit status: 0 every message decoded, 1 some did not or the broker failed, 2 bad usage",
    };
    int rc = cli_parse(&program, argc, argv, NULL);
    if (rc != CLI_CONTINUE)
        return rc == CLI_HELP ? 0 : 2;
    log_set_subject("esgd-watch");
    stop_signals_install();

    static watch w;
    w.keys_dir = keys_dir;
    esgd_error err = {0};
    if (envelope_init(&err) != ESGD_OK) {
        log_error("%s", err.message);
        return 1;
    }
    const char *names[K_COUNT] = {"config", "latest_model", "round_model", "agent_model", "agent_config", "update",
                                  "status", "lease", "other"};
    for (int i = 0; i < K_COUNT; i++)
        w.kinds[i].name = names[i];
    uint32_t cap = 1u << 21; /* larger than any model this build trains */
    w.update.grad.capacity = w.model.params.capacity = cap;
    w.update.grad.indices = malloc(cap * sizeof(uint32_t));
    w.update.grad.values = malloc(cap * sizeof(float));
    w.model.params.indices = malloc(cap * sizeof(uint32_t));
    w.model.params.values = malloc(cap * sizeof(float));
    char client_id[128], filter[TOPIC_MAX];
    snprintf(client_id, sizeof client_id, "esgd-watch-%s-%ld", job, (long)time(NULL));
    mo.client_id = client_id;
    mo.clean_session = true; /* it counts what it sees from now on */
    mqtt_link *link = NULL;
    if (!w.update.grad.indices || !w.update.grad.values || !w.model.params.indices || !w.model.params.values ||
        !(w.decoder = codec_decoder_new(&err)) || !(link = mqtt_link_open(&mo, &err))) {
        log_error("%s", err.message[0] ? err.message : "out of memory");
        rc = 1;
        goto out;
    }
    topic_filter_all(filter, job);
    if (mqtt_link_subscribe(link, filter, &err) != ESGD_OK) {
        log_error("%s", err.message);
        rc = 1;
        goto out;
    }
    double start = monotonic_seconds();
    while (!stop_requested() && !w.done) {
        if (timeout > 0 && monotonic_seconds() - start >= timeout)
            break;
        mqtt_message m;
        if (mqtt_link_next(link, 100, &m))
            observe(&w, job, &m);
    }
    uint64_t invalid = 0;
    json_writer out;
    json_writer_init(&out, stdout);
    json_writer_object_begin(&out, NULL, JSON_WRITER_INLINE);
    json_writer_string(&out, "job", job);
    json_writer_bool(&out, "done", w.done);
    json_writer_uint(&out, "last_round", w.last_round);
    json_writer_bool(&out, "signatures_checked", keys_dir != NULL);
    for (int i = 0; i < K_COUNT; i++) {
        json_writer_object_begin(&out, w.kinds[i].name, JSON_WRITER_INLINE);
        json_writer_uint(&out, "messages", w.kinds[i].messages);
        json_writer_uint(&out, "bytes", w.kinds[i].bytes);
        json_writer_uint(&out, "invalid", w.kinds[i].invalid);
        json_writer_object_end(&out);
        invalid += w.kinds[i].invalid;
    }
    json_writer_uint(&out, "cleared", w.cleared);
    json_writer_uint(&out, "invalid", invalid);
    json_writer_uint(&out, "dropped", mqtt_link_get_counters(link).dropped);
    json_writer_string(&out, "first_error", w.first_error);
    json_writer_object_end(&out);
    putchar('\n');
    rc = invalid == 0 && mqtt_link_get_counters(link).dropped == 0 ? 0 : 1;
out:
    mqtt_link_close(link);
    codec_decoder_free(w.decoder);
    free(w.update.grad.indices);
    free(w.update.grad.values);
    free(w.model.params.indices);
    free(w.model.params.values);
    return rc;
}
