/* The coordinator's /metrics endpoint. Names follow Prometheus conventions:
 * an esgd_ prefix, base units in the name (_bytes, _seconds, _ratio),
 * _total for counters, and labels only where their values are bounded
 * (agent ids up to max_agents, rejection reasons from the status names). */
#include "metrics.h"

#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

static const double duration_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
#define BUCKETS (sizeof duration_buckets / sizeof duration_buckets[0])

typedef struct agent_series {
    float last_loss;
    int64_t last_round; /* -1: never heard from */
} agent_series;

struct metrics {
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock;
    esgd_job_config cfg;
    uint32_t dim;
    uint32_t tracked_agents;
    agent_series *agents;

    /* Everything below is guarded by lock. */
    uint32_t open_round, total_rounds;
    double last_loss;
    uint32_t last_participants;
    double test_accuracy, test_loss; /* NaN until evaluated */
    coordinator_counters counters;
    mqtt_link_counters link;
    uint64_t duration_counts[BUCKETS];
    uint64_t duration_count;
    double duration_sum;
};

/* A growing text buffer; on allocation failure the scrape gets a 500. */
typedef struct text {
    char *data;
    size_t size, cap;
    int failed;
} text;

static void emit(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(text *t, const char *fmt, ...)
{
    for (;;) {
        if (t->failed)
            return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->data ? t->data + t->size : NULL, t->data ? t->cap - t->size : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if (t->data && t->size + (size_t)n < t->cap) {
            t->size += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap * 2 : 16384;
        while (cap < t->size + (size_t)n + 1)
            cap *= 2;
        char *grown = realloc(t->data, cap);
        if (!grown) {
            t->failed = 1;
            return;
        }
        t->data = grown;
        t->cap = cap;
    }
}

static void emit_value(text *t, const char *name, const char *labels, double v)
{
    if (isnan(v))
        emit(t, "%s%s NaN\n", name, labels);
    else
        emit(t, "%s%s %.17g\n", name, labels, v);
}

static void emit_header(text *t, const char *name, const char *type, const char *help)
{
    emit(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A metric of one unlabelled value. */
typedef struct metric {
    const char *name, *type, *help;
    double value;
} metric;

static void emit_metrics(text *t, const metric *rows, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        emit_header(t, rows[i].name, rows[i].type, rows[i].help);
        emit_value(t, rows[i].name, "", rows[i].value);
    }
}

static void render(metrics *m, text *t)
{
    const coordinator_counters *k = &m->counters;
    char labels[160];
    /* A layer list is free text: the label names only presets. */
    snprintf(labels, sizeof labels, "{job=\"%s\",model=\"%.16s\",method=\"%s\"}", m->cfg.job,
             model_spec_preset(m->cfg.model) ? m->cfg.model : "custom", sparsify_method_name(m->cfg.sparsify.method));
    emit_header(t, "esgd_job_info", "gauge", "The job this coordinator runs (value 1).");
    emit_value(t, "esgd_job_info", labels, 1);
    double dense = (double)k->accepted * m->dim * 4.0;
    const metric scalars[] = {
        {"esgd_drop_ratio", "gauge", "Configured gradient drop ratio.", m->cfg.sparsify.drop_ratio},
        {"esgd_expected_agents", "gauge", "Agents the job expects.", m->cfg.agents},
        {"esgd_round", "gauge", "The open round (rounds closed so far).", m->open_round},
        {"esgd_rounds", "gauge", "Rounds in the whole job.", m->total_rounds},
        {"esgd_training_loss", "gauge", "Global training loss L_t of the last closed round.", m->last_loss},
        {"esgd_test_accuracy_ratio", "gauge", "Test accuracy (0..1) at the last evaluation.", m->test_accuracy},
        {"esgd_test_loss", "gauge", "Test loss at the last evaluation.", m->test_loss},
        {"esgd_round_participants", "gauge", "Agents whose update the last closed round applied.",
         m->last_participants},
        {"esgd_uplink_bytes_total", "counter", "Bytes of the accepted update messages.", (double)k->uplink_bytes},
        {"esgd_mqtt_reconnects_total", "counter", "Connections to the broker made again after a loss.",
         (double)m->link.reconnects},
        {"esgd_mqtt_disconnects_total", "counter", "Connections to the broker lost.", (double)m->link.disconnects},
        {"esgd_mqtt_disconnected_seconds_total", "counter", "Time spent without the broker after losses.",
         m->link.disconnected_seconds},
        {"esgd_mqtt_dropped_messages_total", "counter", "QoS 0 messages dropped on a full receive queue.",
         (double)m->link.dropped},
        {"esgd_rejected_bytes_total", "counter", "Bytes of the update messages rejected.", (double)k->rejected_bytes},
        {"esgd_unused_uplink_bytes_total", "counter",
         "Bytes of valid updates not used: duplicates, late and early ones.",
         (double)k->unused_uplink_bytes},
        {"esgd_dense_uplink_bytes_total", "counter",
         "Bytes the accepted updates would have cost as dense fp32 gradients.",
         dense},
        {"esgd_downlink_bytes_total", "counter", "Model bytes delivered: broadcasts times agents.",
         (double)k->downlink_bytes},
        {"esgd_broadcast_bytes_total", "counter", "Bytes of the model messages published.", (double)k->broadcast_bytes},
        {"esgd_retained_model_bytes_total", "counter", "Bytes of the full models published retained.",
         (double)k->retained_bytes},
        {"esgd_sync_model_bytes_total", "counter", "Bytes of the full models sent to single agents that asked.",
         (double)k->sync_bytes},
        {"esgd_published_bytes_total", "counter",
         "Every byte the coordinator published: models, retained models, answers, configuration, lease.",
         (double)k->published_bytes},
        {"esgd_compression_ratio", "gauge", "Dense fp32 uplink bytes over the encoded uplink bytes.",
         k->accepted_uplink_bytes ? dense / (double)k->accepted_uplink_bytes : NAN},
    };
    emit_metrics(t, scalars, sizeof scalars / sizeof scalars[0]);

    emit_header(t, "esgd_updates_total", "counter", "Update messages by outcome.");
    emit_value(t, "esgd_updates_total", "{outcome=\"accepted\"}", (double)k->accepted);
    emit_value(t, "esgd_updates_total", "{outcome=\"duplicate\"}", (double)k->duplicate);
    emit_value(t, "esgd_updates_total", "{outcome=\"late\"}", (double)k->late);
    emit_value(t, "esgd_updates_total", "{outcome=\"early\"}", (double)k->early);
    const metric update_scalars[] = {
        {"esgd_data_conflicts_total", "counter",
         "Agent statuses announcing another agent's shard or data, or one id announcing two.",
         (double)k->data_conflicts},
        {"esgd_agent_rounds_lost_total", "counter",
         "Rounds agents had answered, then came back without (restored from older state).",
         (double)k->rounds_lost},
        {"esgd_updates_clipped_total", "counter", "Accepted updates scaled down to the norm bound.",
         (double)k->clipped},
    };
    emit_metrics(t, update_scalars, sizeof update_scalars / sizeof update_scalars[0]);
    emit_header(t, "esgd_updates_rejected_total", "counter", "Update messages refused, by reason.");
    for (int s = 1; s < ESGD_STATUS_COUNT; s++) {
        snprintf(labels, sizeof labels, "{reason=\"%s\"}", esgd_status_name((esgd_status)s));
        emit_value(t, "esgd_updates_rejected_total", labels, (double)k->rejected[s]);
    }

    emit_header(t, "esgd_agent_last_loss", "gauge", "Minibatch loss of the agent's last accepted update.");
    for (uint32_t a = 0; a < m->tracked_agents; a++)
        if (m->agents[a].last_round >= 0) {
            snprintf(labels, sizeof labels, "{agent=\"%u\"}", a);
            emit_value(t, "esgd_agent_last_loss", labels, m->agents[a].last_loss);
        }
    emit_header(t, "esgd_agent_last_seen_round", "gauge", "Round of the agent's last accepted update.");
    for (uint32_t a = 0; a < m->tracked_agents; a++)
        if (m->agents[a].last_round >= 0) {
            snprintf(labels, sizeof labels, "{agent=\"%u\"}", a);
            emit_value(t, "esgd_agent_last_seen_round", labels, (double)m->agents[a].last_round);
        }

    emit_header(t, "esgd_round_duration_seconds", "histogram", "Time from opening a round to closing it.");
    for (size_t b = 0; b < BUCKETS; b++) {
        snprintf(labels, sizeof labels, "{le=\"%g\"}", duration_buckets[b]);
        emit_value(t, "esgd_round_duration_seconds_bucket", labels, (double)m->duration_counts[b]);
    }
    emit_value(t, "esgd_round_duration_seconds_bucket", "{le=\"+Inf\"}", (double)m->duration_count);
    emit_value(t, "esgd_round_duration_seconds_sum", "", m->duration_sum);
    emit_value(t, "esgd_round_duration_seconds_count", "", (double)m->duration_count);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *connection, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **request_state)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)request_state;
    metrics *m = cls;
    text t = {0};
    unsigned status = MHD_HTTP_OK;
    const char *type = "text/plain; version=0.0.4; charset=utf-8";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        emit(&t, "only GET\n");
    } else if (strcmp(url, "/metrics") == 0) {
        pthread_mutex_lock(&m->lock);
        render(m, &t);
        pthread_mutex_unlock(&m->lock);
    } else if (strcmp(url, "/") == 0 || strcmp(url, "/healthz") == 0) {
        emit(&t, "esgd-coordinator: metrics at /metrics\n");
    } else {
        status = MHD_HTTP_NOT_FOUND;
        emit(&t, "not found; metrics are at /metrics\n");
    }
    if (t.failed) {
        free(t.data);
        return MHD_NO; /* out of memory: drop the connection */
    }
    struct MHD_Response *response =
        MHD_create_response_from_buffer(t.size, t.data ? t.data : (char *)"", MHD_RESPMEM_MUST_COPY);
    free(t.data);
    if (!response)
        return MHD_NO;
    MHD_add_response_header(response, "Content-Type", type);
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

metrics *metrics_start(const char *address, uint16_t port, const esgd_job_config *cfg, uint32_t max_agents,
                       esgd_error *err)
{
    struct sockaddr_in bind_addr;
    memset(&bind_addr, 0, sizeof bind_addr);
    bind_addr.sin_family = AF_INET;
    bind_addr.sin_port = htons(port);
    if (inet_pton(AF_INET, address, &bind_addr.sin_addr) != 1) {
        esgd_error_set(err, ESGD_ERR_ARG, "metrics: '%s' is not an IPv4 address", address);
        return NULL;
    }
    metrics *m = calloc(1, sizeof *m);
    uint32_t tracked = cfg->agents < max_agents ? cfg->agents : max_agents;
    if (!m || !(m->agents = calloc(tracked ? tracked : 1, sizeof *m->agents))) {
        free(m);
        esgd_error_set(err, ESGD_ERR_NOMEM, "metrics: out of memory");
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    m->cfg = *cfg;
    m->dim = job_dimension(cfg);
    m->tracked_agents = tracked;
    for (uint32_t a = 0; a < tracked; a++)
        m->agents[a].last_round = -1;
    m->total_rounds = job_total_rounds(cfg);
    m->last_loss = m->test_accuracy = m->test_loss = NAN;
    m->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, port, NULL, NULL, handle, m,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&bind_addr, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!m->daemon) {
        esgd_error_set(err, ESGD_ERR_IO, "metrics: cannot listen on %s:%u (in use?)", address, port);
        metrics_stop(m);
        return NULL;
    }
    return m;
}

void metrics_stop(metrics *m)
{
    if (!m)
        return;
    if (m->daemon)
        MHD_stop_daemon(m->daemon);
    pthread_mutex_destroy(&m->lock);
    free(m->agents);
    free(m);
}

void metrics_agent_update(metrics *m, uint32_t agent, uint32_t round, float loss)
{
    if (!m || agent >= m->tracked_agents)
        return;
    pthread_mutex_lock(&m->lock);
    m->agents[agent].last_loss = loss;
    m->agents[agent].last_round = round;
    pthread_mutex_unlock(&m->lock);
}

void metrics_progress(metrics *m, const esgd_coordinator *c)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->open_round = coordinator_round(c);
    m->counters = *coordinator_get_counters(c);
    pthread_mutex_unlock(&m->lock);
}

void metrics_round_closed(metrics *m, const esgd_coordinator *c, const round_summary *s, double seconds)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->open_round = coordinator_round(c);
    m->counters = *coordinator_get_counters(c);
    m->last_loss = s->result.loss;
    m->last_participants = s->result.participants;
    for (size_t b = 0; b < BUCKETS; b++)
        if (seconds <= duration_buckets[b])
            m->duration_counts[b]++;
    m->duration_count++;
    m->duration_sum += seconds;
    pthread_mutex_unlock(&m->lock);
}

void metrics_link(metrics *m, const mqtt_link_counters *k)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->link = *k;
    pthread_mutex_unlock(&m->lock);
}

void metrics_evaluated(metrics *m, float accuracy, float loss)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->test_accuracy = accuracy;
    m->test_loss = loss;
    pthread_mutex_unlock(&m->lock);
}
