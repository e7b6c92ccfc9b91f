/* esgd-load: many simulated edge agents in one process, each its own MQTT
 * client, so that one small machine can load a real broker and a real
 * esgd-coordinator with thousands of agents (issue 14, item 5). This file
 * owns the whole program: its options, the agents' keys, one Paho
 * asynchronous client per agent, the agents' protocol behaviour, the
 * updates they send, and what it measures and reports.
 *
 * What a simulated agent does is what esgd-agent's session does
 * (core/src/agent_session.c, agent_apply_model in core/src/agent.c), minus
 * the model and the data: it takes the coordinator's signed retained
 * configuration, joins its run and says so in its status, follows every
 * model (run, generation, round, and whether a delta applies to the round
 * it holds), and when it lacks the current model (a delta that does not
 * apply, its link came back, a quiet minute) asks for it as the agent does:
 * the retained full model and status "syncing", which makes the coordinator
 * send the current one on the agent's own topic (and, every 2 s, "syncing"
 * for the configuration while it has none, or for the model while it has
 * joined without one). It answers each new round
 * with one update and re-sends the same bytes when a model of the round it
 * answered comes again, publishes its status as the real agent does (at
 * start, on joining, every 50 rounds, "syncing" when asking, "done" at the
 * end, "offline" as its Last Will) and stops at the final model. It
 * holds no parameters: an update is a fresh sparse vector of the job's k =
 * ceil((1 - drop) d) entries with small finite values, drawn from a seed
 * and (agent, round), so a re-send is the same bytes without storing them;
 * it is encoded by the project's codec and signed with the agent's key
 * from esgd-keygen, so the coordinator checks and aggregates it like any
 * other.
 *
 * Why Paho directly and not mqtt_link: mqtt_link_open waits for its
 * CONNACK, and in a process that has clients already Paho's receive thread
 * sees a new socket only when its poll times out (1 s): opening links one
 * after another took 2 s each here (40 in 80 s; 4,000 would take two
 * hours). A link also runs a reconnecting thread of its own (~140 KiB of
 * resident memory a link, measured), copies every arrived payload into a
 * queue that one blocking mqtt_link_next per link empties, and sets
 * TCP_NODELAY by scanning descriptors 0..1023 on every connection. Here the
 * agents' Paho asynchronous clients share Paho's one receive and one send
 * thread, up to --connect-burst connections are opened at once, the
 * callbacks only note what arrived, and one main thread runs every agent's
 * state, encodes, signs and publishes.
 *
 * Every model copy is checked only by its size and signature bytes against
 * the few distinct messages seen last: the first copy of each message is
 * verified with the coordinator's key and decoded, every other copy of the
 * same bytes reuses that. A real agent verifies each copy; here that would
 * cost the load process a signature check over ~400 kB per agent per round
 * that belongs to the edge devices, not to the system under test. */
#include <MQTTAsync.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "esgd/cli.h"
#include "esgd/codec.h"
#include "esgd/envelope.h"
#include "esgd/fingerprint.h"
#include "esgd/job.h"
#include "esgd/json_writer.h"
#include "esgd/log.h"
#include "esgd/mqtt_link_cli.h"
#include "esgd/rng.h"
#include "esgd/runtime.h"
#include "esgd/sparsifier.h"
#include "esgd/topics.h"

enum { EXIT_DONE = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 3 };

#define MAX_CONFIGS 16          /* distinct runs followed in one process */
#define SEEN_MAX 16             /* distinct signed messages remembered for their copies */
#define STATUS_ROUNDS 50        /* as the agent session: a status every 50 rounds keeps its round fresh */
#define QUIET_SECONDS 60.0      /* as the agent session: no message this long, ask for the current model */
#define OLDER_STATUS_SECONDS 5.0 /* at most one status per this long for models of an older generation */
#define ASK_SECONDS 2.0         /* as the agent session: without a configuration, or joined without a model,
                                 * "syncing" asks the coordinator again after this long */
#define EVENT_BATCH 4096
#define MAX_ROUND_STATS 10000000u

/* ---- what the receive thread learns from a message, once per distinct message ---- */

typedef struct model_info {
    uint64_t run;
    uint32_t generation, round, base_round, total_rounds;
    bool full, done;
} model_info;

typedef struct known_config {
    esgd_job_config cfg;
    uint32_t dim;
} known_config;

typedef struct seen_message {
    size_t size;                      /* 0: unused slot */
    uint8_t signature[ENVELOPE_SIGNATURE_BYTES];
    esgd_status status;               /* ESGD_OK, or why every copy is ignored */
    int config;                       /* a config: its index in configs */
    model_info model;                 /* a model */
} seen_message;

/* ---- events: from Paho's threads to the main thread ---- */

typedef enum event_kind {
    EV_CONNECTED,      /* a connect call succeeded */
    EV_CONNECT_FAILED, /* a connect call failed (Paho's code) */
    EV_LOST,           /* the connection was lost */
    EV_CONFIG,         /* a configuration (config index, or status) */
    EV_MODEL,          /* a model (info, or status) */
    EV_OTHER,          /* a message on a topic we do not use */
    EV_UPDATE_ACKED,   /* the broker acknowledged a new update (round) */
    EV_RESEND_ACKED,   /* ... or a re-sent one */
    EV_STATUS_ACKED,
    EV_PUBLISH_FAILED, /* code */
    EV_SUBSCRIBE_FAILED,
    EV_DISCONNECTED
} event_kind;

typedef struct event {
    double at;        /* monotonic seconds when it happened */
    uint32_t agent;   /* index into the agents */
    uint8_t kind;     /* event_kind */
    bool latest;      /* EV_MODEL: a full model it asked for (the retained one, or on its own topic) */
    uint8_t status;   /* EV_CONFIG, EV_MODEL: esgd_status of the message */
    int code;         /* EV_CONNECT_FAILED, EV_PUBLISH_FAILED, EV_SUBSCRIBE_FAILED: Paho's code */
    uint32_t round;   /* EV_UPDATE_ACKED; EV_CONFIG: config index */
    model_info model; /* EV_MODEL */
} event;

/* ---- one simulated agent: what it must remember, and nothing more ---- */

typedef struct sim_agent {
    MQTTAsync client;
    struct load *load;
    signing_key key;
    uint32_t id;
    uint32_t held;       /* the round of the model it would hold (has_model) */
    uint32_t answered;   /* the last round it answered (has_answered) */
    uint32_t generation; /* of the coordinator start it follows */
    float last_heard;    /* seconds since start of its last message */
    float retry_at;      /* seconds since start of its next connect attempt; 0: none due */
    float older_status_at;
    float asked_at;      /* seconds since start it last asked for the configuration or, joined, the model */
    uint8_t config;      /* 1 + index of the run joined; 0: none */
    uint8_t connect_failures; /* in a row, for the back-off */
    bool connecting, connected, started, has_model, has_answered, fetching_latest, status_due;
    bool finished;       /* saw the final model (or refused the job): no longer waited for */
    bool finished_job;   /* ... having taken part in it */
} sim_agent;

/* ---- per-round timeline, as the agents of this process saw it ---- */

typedef struct round_stats {
    double first_model, last_model; /* first and last agent here to get this round's model (first copy each) */
    double last_sent, last_acked;   /* our last new update of the round handed to Paho, and its PUBACK */
    uint32_t answered, acked;
} round_stats;

typedef struct settings {
    mqtt_link_options link;
    const char *job, *keys_dir, *timeline_path;
    uint32_t first_id, count, connect_burst, keepalive, config_timeout, progress_every, load_seed;
    double timeout, hot_fraction, cold_share, value_scale;
    int json;
} settings;

/* What the main thread keeps for a run it answers in: the index sampler. */
typedef struct run_sampler {
    bool ready;
    uint32_t *hot;   /* coordinates most updates are drawn from (eSGD's selections overlap) */
    uint32_t hot_count;
} run_sampler;

typedef struct load {
    settings set;
    sim_agent *agents;
    verify_key coordinator;
    double started;

    /* Event queue: Paho's threads push, the main thread pops. */
    pthread_mutex_t queue_lock;
    pthread_cond_t queue_ready;
    event *queue;
    size_t queue_cap, queue_head, queue_count, queue_peak;
    bool main_waiting;
    uint64_t events_lost;

    /* Messages seen, learnt on Paho's receive thread; the counters are read
     * by the main thread under the lock. Entries of configs are written
     * once, before any event names them. */
    pthread_mutex_t seen_lock;
    seen_message seen[SEEN_MAX];
    unsigned seen_next;
    known_config configs[MAX_CONFIGS];
    int config_count;
    codec_decoder *decoder;
    model_msg scratch;     /* decoding room for one model */
    uint32_t scratch_capacity;
    uint64_t model_copies, model_bytes, config_copies, verified; /* under seen_lock */

    /* Main thread only below. */
    run_sampler samplers[MAX_CONFIGS];
    uint64_t *bits;        /* (max dim / 64) index set being drawn */
    uint32_t bits_words;
    uint32_t *indices;
    float *values;
    uint32_t vector_capacity;
    esgd_buffer out;       /* the update being encoded and signed */
    uint8_t status_bytes[CODEC_STATUS_BOUND];
    MQTTAsync_connectOptions co; /* the connect options every agent shares */
    MQTTAsync_SSLOptions ssl;
    char password[256];

    round_stats *rounds;
    uint32_t rounds_cap;
    uint32_t highest_round;   /* + 1; 0: none answered */

    uint32_t next_to_connect, connecting, connected, ever_connected, finished, finished_job;
    double all_connected_at;  /* seconds since start; 0: not yet */
    uint64_t updates_new, updates_resent, updates_acked, statuses, statuses_acked, publish_failures,
        subscribe_failures, connect_failures, losses, other_messages, models_used, fetches, syncs, outstanding,
        refused_agents;
    uint64_t ignored[ESGD_STATUS_COUNT]; /* model and config copies ignored, by reason */
    double rss_before_mib, rss_created_mib, rss_connected_mib;
    bool config_seen;
} load;

static log_limiter lost_log = LOG_LIMITER(10), connect_log = LOG_LIMITER(10), publish_log = LOG_LIMITER(10),
                   subscribe_log = LOG_LIMITER(10), ignored_log = LOG_LIMITER(10), fetch_log = LOG_LIMITER(10);

static double since_start(const load *L)
{
    return monotonic_seconds() - L->started;
}

/* The resident set now (MiB), from /proc/self/statm. */
static double resident_mib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (!f)
        return 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0) : 0;
}

/* CPU seconds of this process's threads by name (main, Paho's
 * MQTTAsync_rcv and MQTTAsync_send, ...), from /proc/self/task: where
 * the load generator's own time goes. */
typedef struct thread_cpu {
    char name[32];
    double seconds;
} thread_cpu;

static int thread_times(thread_cpu *out, int max)
{
    int n = 0;
    long ticks = sysconf(_SC_CLK_TCK);
    char path[64];
    DIR *dir = ticks > 0 ? opendir("/proc/self/task") : NULL;
    if (!dir)
        return 0;
    struct dirent *entry;
    while (n < max && (entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", entry->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        char line[1024];
        bool ok = fgets(line, sizeof line, f) != NULL;
        fclose(f);
        char *open = ok ? strchr(line, '(') : NULL, *close = ok ? strrchr(line, ')') : NULL;
        unsigned long utime = 0, stime = 0;
        /* After "(name) " come state and 10 fields, then utime and stime. */
        if (!open || !close || close < open ||
            sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
            continue;
        size_t len = (size_t)(close - open - 1);
        if (len >= sizeof out[n].name)
            len = sizeof out[n].name - 1;
        char name[32];
        memcpy(name, open + 1, len);
        name[len] = '\0';
        double seconds = (double)(utime + stime) / (double)ticks;
        int i = 0;
        while (i < n && strcmp(out[i].name, name) != 0)
            i++;
        if (i == n) {
            snprintf(out[n].name, sizeof out[n].name, "%s", name);
            out[n++].seconds = 0;
        }
        out[i].seconds += seconds;
    }
    closedir(dir);
    return n;
}

/* ---- the event queue ---- */

static void push_event(load *L, const event *e)
{
    pthread_mutex_lock(&L->queue_lock);
    if (L->queue_count == L->queue_cap) {
        /* Grow by doubling, unwrapping the ring into the new array. */
        size_t cap = L->queue_cap ? L->queue_cap * 2 : 4096;
        event *grown = malloc(cap * sizeof *grown);
        if (!grown) {
            L->events_lost++;
            pthread_mutex_unlock(&L->queue_lock);
            return;
        }
        for (size_t i = 0; i < L->queue_count; i++)
            grown[i] = L->queue[(L->queue_head + i) % L->queue_cap];
        free(L->queue);
        L->queue = grown;
        L->queue_cap = cap;
        L->queue_head = 0;
    }
    L->queue[(L->queue_head + L->queue_count) % L->queue_cap] = *e;
    L->queue_count++;
    if (L->queue_count > L->queue_peak)
        L->queue_peak = L->queue_count;
    if (L->main_waiting)
        pthread_cond_signal(&L->queue_ready);
    pthread_mutex_unlock(&L->queue_lock);
}

static void note(sim_agent *a, event_kind kind, int code)
{
    event e = {.at = monotonic_seconds(), .agent = (uint32_t)(a - a->load->agents), .kind = (uint8_t)kind,
               .code = code};
    push_event(a->load, &e);
}

/* Takes up to max events, waiting up to timeout_ms for the first. */
static size_t pop_events(load *L, event *out, size_t max, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&L->queue_lock);
    while (L->queue_count == 0 && timeout_ms > 0) {
        L->main_waiting = true;
        int rc = pthread_cond_timedwait(&L->queue_ready, &L->queue_lock, &until);
        L->main_waiting = false;
        if (rc != 0)
            break;
    }
    size_t n = L->queue_count < max ? L->queue_count : max;
    for (size_t i = 0; i < n; i++)
        out[i] = L->queue[(L->queue_head + i) % L->queue_cap];
    if (n) {
        L->queue_head = (L->queue_head + n) % L->queue_cap;
        L->queue_count -= n;
    }
    pthread_mutex_unlock(&L->queue_lock);
    return n;
}

/* ---- what arrives (Paho's receive thread, holding Paho's lock: be quick, never call Paho) ---- */

static int config_by_run(const load *L, uint64_t run)
{
    for (int i = 0; i < L->config_count; i++)
        if (L->configs[i].cfg.run == run)
            return i;
    return -1;
}

/* The first copy of a configuration: verify, decode, check the job, keep. */
static void learn_config(load *L, seen_message *s, const uint8_t *data, size_t size, const char *topic)
{
    esgd_error err = {0};
    size_t body = 0;
    esgd_job_config cfg;
    esgd_status st = envelope_open(data, size, &L->coordinator, &body, &err);
    if (st == ESGD_OK)
        st = codec_decode_config(L->decoder, data, body, &cfg, &err);
    if (st == ESGD_OK && strcmp(cfg.job, L->set.job) != 0)
        st = esgd_error_set(&err, ESGD_ERR_MISMATCH, "configuration of job '%s'", cfg.job);
    uint32_t dim = st == ESGD_OK ? job_dimension(&cfg) : 0;
    if (st == ESGD_OK && dim == 0)
        st = esgd_error_set(&err, ESGD_ERR_ARG, "model '%s' does not build for input %s", cfg.model, cfg.input);
    int index = st == ESGD_OK ? config_by_run(L, cfg.run) : -1;
    if (st == ESGD_OK && index < 0) {
        if (L->config_count == MAX_CONFIGS) {
            st = esgd_error_set(&err, ESGD_ERR_TOO_LARGE, "more than %d runs of job %s in one load process",
                                MAX_CONFIGS, L->set.job);
        } else if (dim > L->scratch_capacity) {
            /* Room to decode this run's models, grown before any of them arrives. */
            uint32_t *indices = realloc(L->scratch.params.indices, (size_t)dim * sizeof *indices);
            if (indices)
                L->scratch.params.indices = indices;
            float *values = indices ? realloc(L->scratch.params.values, (size_t)dim * sizeof *values) : NULL;
            if (values) {
                L->scratch.params.values = values;
                L->scratch.params.capacity = L->scratch_capacity = dim;
            } else {
                st = esgd_error_set(&err, ESGD_ERR_NOMEM, "out of memory for a model of %u parameters", dim);
            }
        }
        if (st == ESGD_OK) {
            index = L->config_count;
            L->configs[index] = (known_config){.cfg = cfg, .dim = dim};
            L->config_count++;
        }
    }
    s->status = st;
    s->config = index;
    L->verified++;
    if (st != ESGD_OK)
        log_warn_limited(&ignored_log, "ignoring a configuration on %s (%s): %s", topic, esgd_status_name(st),
                         err.message);
}

/* The first copy of a model: verify, decode, check against its run. */
static void learn_model(load *L, seen_message *s, const uint8_t *data, size_t size, const char *topic)
{
    esgd_error err = {0};
    size_t body = 0;
    model_msg *m = &L->scratch;
    esgd_status st = L->scratch_capacity ? ESGD_OK
                                         : esgd_error_set(&err, ESGD_ERR_STALE, "a model before any configuration");
    if (st == ESGD_OK)
        st = envelope_open(data, size, &L->coordinator, &body, &err);
    if (st == ESGD_OK)
        st = codec_decode_model(L->decoder, data, body, 0, m, &err);
    if (st == ESGD_OK && strcmp(m->job, L->set.job) != 0)
        st = esgd_error_set(&err, ESGD_ERR_MISMATCH, "model for job '%s'", m->job);
    int index = st == ESGD_OK ? config_by_run(L, m->run) : -1;
    if (st == ESGD_OK && index < 0)
        st = esgd_error_set(&err, ESGD_ERR_STALE, "model of run %016llx, of no configuration seen",
                            (unsigned long long)m->run);
    if (st == ESGD_OK && m->params.dim != L->configs[index].dim)
        st = esgd_error_set(&err, ESGD_ERR_DIMENSION, "model of %u parameters, the run's model has %u",
                            m->params.dim, L->configs[index].dim);
    s->status = st;
    L->verified++;
    if (st == ESGD_OK)
        s->model = (model_info){.run = m->run, .generation = m->generation, .round = m->round,
                                .base_round = m->base_round, .full = m->form == MODEL_FORM_FULL,
                                .done = m->done != 0, .total_rounds = job_total_rounds(&L->configs[index].cfg)};
    else if (st != ESGD_ERR_STALE) /* a retained model of an earlier run is normal at a new run */
        log_warn_limited(&ignored_log, "ignoring a model on %s (%s): %s", topic, esgd_status_name(st), err.message);
}

/* The message this copy repeats, learning it on its first copy. */
static const seen_message *recognise(load *L, bool config, const uint8_t *data, size_t size, const char *topic)
{
    if (size <= ENVELOPE_SIGNATURE_BYTES)
        return NULL;
    const uint8_t *signature = data + size - ENVELOPE_SIGNATURE_BYTES;
    for (unsigned i = 0; i < SEEN_MAX; i++) {
        const seen_message *s = &L->seen[i];
        if (s->size == size && memcmp(s->signature, signature, ENVELOPE_SIGNATURE_BYTES) == 0)
            return s;
    }
    seen_message *s = &L->seen[L->seen_next];
    L->seen_next = (L->seen_next + 1) % SEEN_MAX;
    memset(s, 0, sizeof *s);
    s->size = size;
    memcpy(s->signature, signature, ENVELOPE_SIGNATURE_BYTES);
    if (config)
        learn_config(L, s, data, size, topic);
    else
        learn_model(L, s, data, size, topic);
    return s;
}

static int on_message(void *context, char *topic, int topic_len, MQTTAsync_message *m)
{
    sim_agent *a = context;
    load *L = a->load;
    (void)topic_len; /* Paho NUL-terminates the topic */
    event e = {.at = monotonic_seconds(), .agent = (uint32_t)(a - L->agents), .kind = EV_OTHER};
    size_t size = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
    topic_info t = topic_parse(topic, L->set.job);
    topic_kind kind = t.kind;
    /* Sent to this agent alone: its model, its configuration. */
    bool own_model = kind == TOPIC_AGENT_MODEL && t.agent == a->id;
    bool config = kind == TOPIC_CONFIG || (kind == TOPIC_AGENT_CONFIG && t.agent == a->id);
    bool model = kind == TOPIC_ROUND_MODEL || kind == TOPIC_LATEST_MODEL || own_model;
    if ((config || model) && size == 0) {
        /* A cleared retained message is not a message. */
    } else if (config || model) {
        pthread_mutex_lock(&L->seen_lock);
        if (model) {
            L->model_copies++;
            L->model_bytes += size;
        } else {
            L->config_copies++;
        }
        const seen_message *s = recognise(L, config, m->payload, size, topic);
        e.kind = config ? EV_CONFIG : EV_MODEL;
        e.latest = kind != TOPIC_ROUND_MODEL;
        e.status = s ? (uint8_t)s->status : (uint8_t)ESGD_ERR_SIGNATURE;
        if (s && config)
            e.round = (uint32_t)s->config;
        if (s && model)
            e.model = s->model;
        pthread_mutex_unlock(&L->seen_lock);
    }
    if (!((config || model) && size == 0))
        push_event(L, &e);
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void on_connection_lost(void *context, char *cause)
{
    (void)cause; /* Paho 1.3 passes NULL */
    note(context, EV_LOST, 0);
}

static void on_connect_success(void *context, MQTTAsync_successData *response)
{
    (void)response;
    note(context, EV_CONNECTED, 0);
}

static void on_connect_failure(void *context, MQTTAsync_failureData *response)
{
    note(context, EV_CONNECT_FAILED, response ? response->code : 0);
}

/* A new update's PUBACK times the round; a re-sent one's only counts. */
static void on_resend_acked(void *context, MQTTAsync_successData *response)
{
    (void)response;
    note(context, EV_RESEND_ACKED, 0);
}

static void on_update_acked(void *context, MQTTAsync_successData *response)
{
    sim_agent *a = context;
    event e = {.at = monotonic_seconds(), .agent = (uint32_t)(a - a->load->agents), .kind = EV_UPDATE_ACKED};
    topic_info t = {TOPIC_UNKNOWN, 0, 0};
    if (response && response->alt.pub.destinationName)
        t = topic_parse(response->alt.pub.destinationName, a->load->set.job);
    e.round = t.kind == TOPIC_ROUND_GRAD ? t.round : UINT32_MAX;
    push_event(a->load, &e);
}

static void on_status_acked(void *context, MQTTAsync_successData *response)
{
    (void)response;
    note(context, EV_STATUS_ACKED, 0);
}

static void on_publish_failure(void *context, MQTTAsync_failureData *response)
{
    note(context, EV_PUBLISH_FAILED, response ? response->code : 0);
}

static void on_subscribe_failure(void *context, MQTTAsync_failureData *response)
{
    note(context, EV_SUBSCRIBE_FAILED, response ? response->code : 0);
}

static void on_disconnected(void *context, MQTTAsync_successData *response)
{
    (void)response;
    note(context, EV_DISCONNECTED, 0);
}

static void on_disconnect_failure(void *context, MQTTAsync_failureData *response)
{
    (void)response;
    note(context, EV_DISCONNECTED, 0);
}

/* ---- the main thread: publishing and subscribing for an agent ---- */

static void publish_failed(load *L, const sim_agent *a, const char *what, const char *topic, int rc)
{
    L->publish_failures++;
    log_warn_limited(&publish_log, "agent %u: cannot publish %s on %s: %s (code %d)", a->id, what, topic,
                     MQTTAsync_strerror(rc), rc);
}

typedef enum publish_kind { PUBLISH_UPDATE, PUBLISH_RESEND, PUBLISH_STATUS } publish_kind;

static void publish(load *L, sim_agent *a, const char *what, const char *topic, const uint8_t *data, size_t size,
                    bool retained, publish_kind kind)
{
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)data;
    m.payloadlen = (int)size;
    m.qos = 1;
    m.retained = retained ? 1 : 0;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = kind == PUBLISH_UPDATE   ? on_update_acked
                   : kind == PUBLISH_RESEND ? on_resend_acked
                                            : on_status_acked;
    ro.onFailure = on_publish_failure;
    ro.context = a;
    int rc = MQTTAsync_sendMessage(a->client, topic, &m, &ro); /* Paho copies topic and payload */
    if (rc != MQTTASYNC_SUCCESS)
        publish_failed(L, a, what, topic, rc);
    else
        L->outstanding++;
}

static void subscription(load *L, sim_agent *a, bool on, const char *filter)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onFailure = on_subscribe_failure;
    ro.context = a;
    int rc = on ? MQTTAsync_subscribe(a->client, filter, 1, &ro) : MQTTAsync_unsubscribe(a->client, filter, &ro);
    /* Disconnected: the reconnection subscribes again. */
    if (rc != MQTTASYNC_SUCCESS && rc != MQTTASYNC_DISCONNECTED) {
        L->subscribe_failures++;
        log_warn_limited(&subscribe_log, "agent %u: cannot %s %s: %s (code %d)", a->id,
                         on ? "subscribe to" : "unsubscribe from", filter, MQTTAsync_strerror(rc), rc);
    }
}

static void fetch_latest(load *L, sim_agent *a, bool on)
{
    if (a->fetching_latest == on)
        return;
    a->fetching_latest = on;
    char topic[TOPIC_MAX];
    topic_latest_model(topic, L->set.job);
    subscription(L, a, on, topic);
    if (on)
        L->fetches++;
}

static void publish_status(load *L, sim_agent *a, agent_state state);

/* ask_for_model of the agent session: we lack the current model. The
 * retained one may be rounds old (the coordinator retains one only now and
 * then), so status "syncing" also asks the coordinator, which sends the
 * current model on our own topic; "online" follows with the next answer. */
static void ask_for_model(load *L, sim_agent *a)
{
    fetch_latest(L, a, true);
    publish_status(L, a, AGENT_STATE_SYNCING);
    a->status_due = true;
    L->syncs++;
}

static const known_config *joined(const load *L, const sim_agent *a)
{
    return a->config ? &L->configs[a->config - 1] : NULL;
}

/* Our status, as agent_session_status_message makes it: run 0 and no data
 * before joining a run, and in the Last Will, which is signed before any
 * run is known. */
static esgd_status encode_status(load *L, const sim_agent *a, agent_state state, bool will, esgd_buffer *buf,
                                 esgd_error *err)
{
    const known_config *c = will ? NULL : joined(L, a);
    status_msg m;
    memset(&m, 0, sizeof m);
    snprintf(m.job, sizeof m.job, "%s", L->set.job);
    m.agent = a->id;
    m.state = state;
    if (c) {
        m.run = c->cfg.run;
        m.round = a->has_answered ? a->answered : 0;
        m.generation = a->generation;
        /* Our "data": the agent's own shard of the job, and a fingerprint
         * that differs per agent, so the coordinator sees no overlap. */
        m.has_data = true;
        m.shard = a->id;
        m.shards = c->cfg.agents;
        char name[64];
        int n = snprintf(name, sizeof name, "esgd-load simulated agent %u", a->id);
        m.data_fp = fnv1a64(name, (size_t)n);
    }
    buf->size = 0;
    esgd_status st = codec_encode_status(buf, &m, err);
    return st == ESGD_OK ? envelope_sign(buf, &a->key, err) : st;
}

static void publish_status(load *L, sim_agent *a, agent_state state)
{
    esgd_error err = {0};
    esgd_buffer buf = {L->status_bytes, 0, sizeof L->status_bytes};
    char topic[TOPIC_MAX];
    topic_status(topic, L->set.job, a->id);
    if (encode_status(L, a, state, false, &buf, &err) != ESGD_OK) {
        L->publish_failures++;
        log_warn_limited(&publish_log, "agent %u: cannot encode its status: %s", a->id, err.message);
        return;
    }
    publish(L, a, "its status", topic, buf.data, buf.size, true, PUBLISH_STATUS);
    L->statuses++;
}

/* ---- updates ---- */

/* The coordinates every update of a run is mostly drawn from: eSGD's
 * selections of different agents overlap (importance is driven by the
 * shared global loss), so the model's delta grows more slowly with the
 * agents than with independent uniform picks. A fixed pseudo-random subset
 * of hot_fraction of the d coordinates takes 1 - cold_share of the picks,
 * the rest are uniform; the defaults (0.18 and 0.05) give about the
 * measured delta sizes of real eSGD agents at drop 0.99 (results/load.md:
 * 92 kB at 64 agents, 127 kB at 256). */
static esgd_status prepare_sampler(load *L, int index, esgd_error *err)
{
    run_sampler *s = &L->samplers[index];
    if (s->ready)
        return ESGD_OK;
    const known_config *c = &L->configs[index];
    uint32_t dim = c->dim, max_count = sparsifier_max_count(&c->cfg.sparsify, dim);
    if (max_count > dim || max_count == 0)
        max_count = dim;
    uint32_t words = (dim + 63) / 64;
    if (words > L->bits_words) {
        uint64_t *bits = calloc(words, sizeof *bits);
        if (!bits)
            return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for the index set of d = %u", dim);
        free(L->bits);
        L->bits = bits;
        L->bits_words = words;
    }
    if (max_count > L->vector_capacity) {
        uint32_t *indices = malloc((size_t)max_count * sizeof *indices);
        float *values = malloc((size_t)max_count * sizeof *values);
        if (!indices || !values) {
            free(indices);
            free(values);
            return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for updates of %u entries", max_count);
        }
        free(L->indices);
        free(L->values);
        L->indices = indices;
        L->values = values;
        L->vector_capacity = max_count;
    }
    size_t bound = codec_update_bound(dim);
    if (bound > L->out.capacity) {
        buffer_destroy(&L->out);
        if (buffer_init(&L->out, bound, err) != ESGD_OK)
            return err->status;
    }
    uint32_t hot = 0;
    uint32_t *list = malloc((size_t)dim * sizeof *list);
    if (!list)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for the hot coordinates of d = %u", dim);
    esgd_rng rng;
    rng_seed(&rng, L->set.load_seed ^ c->cfg.run, 0);
    for (uint32_t j = 0; j < dim; j++)
        if (rng_uniform(&rng) < L->set.hot_fraction)
            list[hot++] = j;
    s->hot = list;
    s->hot_count = hot;
    s->ready = true;
    return ESGD_OK;
}

static inline bool bit_test_set(uint64_t *bits, uint32_t j)
{
    uint64_t mask = 1ull << (j & 63);
    bool was = (bits[j >> 6] & mask) != 0;
    bits[j >> 6] |= mask;
    return was;
}

/* k distinct coordinates in ascending order into L->indices. */
static void draw_indices(load *L, const run_sampler *s, uint32_t dim, uint32_t k, esgd_rng *rng)
{
    uint64_t *bits = L->bits;
    uint32_t words = (dim + 63) / 64;
    if ((uint64_t)k * 2 > dim) {
        /* Most of them: start from all and leave d - k out. */
        for (uint32_t w = 0; w < words; w++)
            bits[w] = ~0ull;
        if (dim & 63)
            bits[words - 1] = (1ull << (dim & 63)) - 1;
        for (uint32_t left = dim - k; left > 0;) {
            uint32_t j = rng_below(rng, dim);
            uint64_t mask = 1ull << (j & 63);
            if (bits[j >> 6] & mask) {
                bits[j >> 6] &= ~mask;
                left--;
            }
        }
    } else {
        /* From the hot set while it has room to spare, else uniformly. */
        bool hot = s->hot_count > 0 && (double)k * (1.0 - L->set.cold_share) * 2 <= (double)s->hot_count;
        for (uint32_t chosen = 0; chosen < k;) {
            uint32_t j = hot && rng_uniform(rng) >= L->set.cold_share ? s->hot[rng_below(rng, s->hot_count)]
                                                                       : rng_below(rng, dim);
            if (!bit_test_set(bits, j))
                chosen++;
        }
    }
    uint32_t n = 0;
    for (uint32_t w = 0; w < words; w++) {
        uint64_t word = bits[w];
        bits[w] = 0;
        while (word) {
            L->indices[n++] = w * 64 + (uint32_t)__builtin_ctzll(word);
            word &= word - 1;
        }
    }
}

/* Agent a's update for round, into L->out: the same bytes every time for
 * the same run, agent and round. */
static esgd_status make_update(load *L, const sim_agent *a, uint32_t round, esgd_error *err)
{
    int index = a->config - 1;
    const known_config *c = &L->configs[index];
    esgd_status st = prepare_sampler(L, index, err);
    if (st != ESGD_OK)
        return st;
    uint32_t k = sparsifier_keep_at(&c->cfg.sparsify, c->dim, round);
    if (k == 0)
        k = 1;
    if (k > L->vector_capacity)
        k = L->vector_capacity;
    esgd_rng rng;
    rng_seed(&rng, L->set.load_seed ^ c->cfg.run, ((uint64_t)a->id << 32 | round) + 1);
    draw_indices(L, &L->samplers[index], c->dim, k, &rng);
    /* Gradient-sized values of one scale, so every update's norm is alike
     * and none trips the coordinator's relative norm bound. */
    for (uint32_t i = 0; i < k; i++) {
        double u = rng_uniform(&rng);
        float v = (float)(L->set.value_scale * (0.25 + 0.75 * u));
        L->values[i] = rng_next(&rng) & 1 ? v : -v;
    }
    update_msg m;
    memset(&m, 0, sizeof m);
    snprintf(m.job, sizeof m.job, "%s", c->cfg.job);
    m.run = c->cfg.run;
    m.round = round;
    m.agent = a->id;
    m.samples = c->cfg.batch;
    /* A training loss that falls over the rounds, as a real one would. */
    m.loss = (float)(2.3 * (0.3 + 0.7 * exp(-(double)round / 200.0)) * (0.9 + 0.2 * rng_uniform(&rng)));
    m.grad = (sparse_vector){.dim = c->dim, .count = k, .capacity = L->vector_capacity, .indices = L->indices,
                             .values = L->values};
    L->out.size = 0;
    st = codec_encode_update(&L->out, &m, c->cfg.values, err);
    if (st == ESGD_OK)
        st = envelope_sign(&L->out, &a->key, err);
    if (st != ESGD_OK)
        esgd_error_prefix(err, "agent %u round %u: cannot encode the update", a->id, round);
    return st;
}

static round_stats *stats_of(load *L, uint32_t round)
{
    if (round >= MAX_ROUND_STATS)
        return NULL;
    if (round >= L->rounds_cap) {
        uint32_t cap = L->rounds_cap ? L->rounds_cap : 256;
        while (cap <= round)
            cap *= 2;
        round_stats *grown = realloc(L->rounds, (size_t)cap * sizeof *grown);
        if (!grown)
            return NULL;
        memset(grown + L->rounds_cap, 0, (size_t)(cap - L->rounds_cap) * sizeof *grown);
        L->rounds = grown;
        L->rounds_cap = cap;
    }
    return &L->rounds[round];
}

/* answer_round of the agent session: a new round's update, or the same
 * bytes again for the round already answered. */
static void answer_round(load *L, sim_agent *a, double model_at)
{
    uint32_t round = a->held;
    bool repeat = a->has_answered && a->answered == round;
    esgd_error err = {0};
    if (make_update(L, a, round, &err) != ESGD_OK) {
        L->publish_failures++;
        log_warn_limited(&publish_log, "%s", err.message);
        return;
    }
    char topic[TOPIC_MAX];
    topic_round_grad(topic, L->set.job, round, a->id);
    publish(L, a, "its update", topic, L->out.data, L->out.size, false, repeat ? PUBLISH_RESEND : PUBLISH_UPDATE);
    if (repeat) {
        L->updates_resent++;
        return;
    }
    a->has_answered = true;
    a->answered = round;
    L->updates_new++;
    round_stats *r = stats_of(L, round);
    if (r) {
        double at = model_at - L->started, now = since_start(L);
        if (r->answered == 0 || at < r->first_model)
            r->first_model = at;
        if (at > r->last_model)
            r->last_model = at;
        r->last_sent = now;
        r->answered++;
    }
    if (round + 1 > L->highest_round)
        L->highest_round = round + 1;
    if (a->status_due || round % STATUS_ROUNDS == 0) {
        publish_status(L, a, AGENT_STATE_ONLINE);
        a->status_due = false;
    }
}

/* ---- the main thread: an agent's protocol, event by event ---- */

static void agent_finished(load *L, sim_agent *a, bool took_part)
{
    if (a->finished)
        return;
    a->finished = true;
    L->finished++;
    if (took_part) {
        a->finished_job = true;
        L->finished_job++;
    }
}

/* agent_session_start: the configuration's topic, no retained model left
 * from an earlier session, our own model and configuration topics, and our
 * status (no run yet). */
static void agent_start(load *L, sim_agent *a)
{
    char topic[TOPIC_MAX];
    a->started = true;
    a->asked_at = (float)since_start(L);
    topic_config(topic, L->set.job);
    subscription(L, a, true, topic);
    topic_latest_model(topic, L->set.job);
    subscription(L, a, false, topic);
    topic_agent_model(topic, L->set.job, a->id);
    subscription(L, a, true, topic);
    topic_agent_config(topic, L->set.job, a->id);
    subscription(L, a, true, topic);
    publish_status(L, a, AGENT_STATE_ONLINE);
}

/* agent_session_on_reconnect, and what mqtt_link does on every connection:
 * the subscriptions again, and the current model asked for if we held one
 * (what was published meanwhile may be gone). */
static void agent_reconnected(load *L, sim_agent *a)
{
    char topic[TOPIC_MAX];
    topic_config(topic, L->set.job);
    subscription(L, a, true, topic);
    topic_agent_model(topic, L->set.job, a->id);
    subscription(L, a, true, topic);
    topic_agent_config(topic, L->set.job, a->id);
    subscription(L, a, true, topic);
    if (a->config) {
        topic_filter_round_models(topic, L->set.job);
        subscription(L, a, true, topic);
    }
    if (a->fetching_latest) {
        topic_latest_model(topic, L->set.job);
        subscription(L, a, true, topic);
    }
    if (a->has_model && !a->finished)
        ask_for_model(L, a);
    a->status_due = true;
}

static void on_config(load *L, sim_agent *a, const event *e)
{
    if (e->status != ESGD_OK) {
        L->ignored[e->status]++;
        return;
    }
    int index = (int)e->round;
    const known_config *c = &L->configs[index];
    L->config_seen = true;
    if (a->config && joined(L, a)->cfg.run == c->cfg.run)
        return; /* the same run again */
    if (a->id >= c->cfg.agents) {
        if (!a->finished && ++L->refused_agents == 1)
            log_error("agent id %u, but job %s has agents 0..%u: this simulated agent stops (the summary counts "
                      "every one)", a->id, c->cfg.job, c->cfg.agents - 1);
        agent_finished(L, a, false);
        return;
    }
    if (a->config && !a->finished)
        log_info("agent %u: job %s has a new run %016llx; joining it", a->id, c->cfg.job,
                 (unsigned long long)c->cfg.run);
    if (a->finished) {
        /* A new run after the one it finished: it takes part again. */
        a->finished = false;
        L->finished--;
        if (a->finished_job) {
            a->finished_job = false;
            L->finished_job--;
        }
    }
    a->config = (uint8_t)(index + 1);
    a->asked_at = (float)since_start(L); /* the model's turn: asked for 2 s from now if none comes */
    a->has_model = a->has_answered = false;
    a->generation = 0;
    a->fetching_latest = false;
    char topic[TOPIC_MAX];
    topic_filter_round_models(topic, L->set.job);
    subscription(L, a, true, topic);
    fetch_latest(L, a, true);
    publish_status(L, a, AGENT_STATE_ONLINE);
}

/* agent_apply_model and the session's on_model, on what the model says. */
static void on_model(load *L, sim_agent *a, const event *e)
{
    const known_config *c = joined(L, a);
    if (!c)
        return; /* no run yet: nothing to apply a model to */
    const model_info *m = &e->model;
    esgd_status st = (esgd_status)e->status;
    if (st == ESGD_OK && m->run != c->cfg.run)
        st = ESGD_ERR_STALE;
    if (st == ESGD_OK && m->round > m->total_rounds)
        st = ESGD_ERR_RANGE;
    if (st != ESGD_OK) {
        L->ignored[st]++;
        return;
    }
    if (a->finished)
        return;
    if (m->generation < a->generation) {
        /* An older coordinator start: our status lets the newer one move above it. */
        L->ignored[ESGD_ERR_STALE]++;
        float now = (float)since_start(L);
        if (now - a->older_status_at >= OLDER_STATUS_SECONDS) {
            a->older_status_at = now;
            publish_status(L, a, AGENT_STATE_ONLINE);
        }
        return;
    }
    bool newer = m->generation > a->generation;
    bool unchanged = a->has_model && !newer && (m->round < a->held || (m->round == a->held && !m->full));
    if (!unchanged && !m->full && (newer || !a->has_model || m->base_round != a->held)) {
        /* A delta for a model we do not hold: we missed a round. */
        L->ignored[ESGD_ERR_MISMATCH]++;
        log_info_limited(&fetch_log, "agent %u: model delta for round %u does not apply to %s%u; asking for the "
                         "current model", a->id, m->round, a->has_model ? "round " : "no model, ", a->held);
        ask_for_model(L, a);
        return;
    }
    L->models_used++;
    if (!unchanged) {
        a->has_model = true;
        a->generation = m->generation;
        a->held = m->round;
        if (newer && a->has_answered && a->answered > m->round)
            a->has_answered = false; /* the newer start resumed an older round: answer it again */
    }
    if (e->latest)
        fetch_latest(L, a, false);
    if (m->done && !unchanged) {
        fetch_latest(L, a, false);
        if (!a->has_answered) {
            /* The run ended before we took part in it. */
            agent_finished(L, a, false);
            return;
        }
        publish_status(L, a, AGENT_STATE_DONE);
        agent_finished(L, a, true);
        return;
    }
    answer_round(L, a, e->at);
}

/* ---- connecting ---- */

static void start_connect(load *L, sim_agent *a)
{
    esgd_error err = {0};
    uint8_t will[CODEC_STATUS_BOUND];
    esgd_buffer buf = {will, 0, sizeof will};
    esgd_status st = encode_status(L, a, AGENT_STATE_OFFLINE, true, &buf, &err);
    char will_topic[TOPIC_MAX];
    topic_status(will_topic, L->set.job, a->id);
    MQTTAsync_connectOptions co = L->co;
    MQTTAsync_willOptions wo = MQTTAsync_willOptions_initializer;
    if (st == ESGD_OK) {
        wo.topicName = will_topic;
        wo.payload.data = buf.data; /* Paho copies the Will at connect */
        wo.payload.len = (int)buf.size;
        wo.retained = 1;
        wo.qos = 1;
        co.will = &wo;
    } else {
        log_warn_limited(&connect_log, "agent %u: no Last Will: %s", a->id, err.message);
    }
    co.context = a;
    int rc = MQTTAsync_connect(a->client, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        L->connect_failures++;
        log_warn_limited(&connect_log, "agent %u: cannot start connecting: %s (code %d)", a->id,
                         MQTTAsync_strerror(rc), rc);
        a->retry_at = (float)since_start(L) + 1.0f;
        return;
    }
    a->connecting = true;
    a->retry_at = 0;
    L->connecting++;
}

/* Nagle's algorithm plus delayed ACKs hold a small packet (a PUBACK, a
 * status) back ~40 ms when the socket has unacknowledged data; Paho does
 * not expose its sockets, so every TCP socket of the process (they are all
 * broker connections) gets TCP_NODELAY, as mqtt_link does, but over every
 * descriptor in use. */
static void disable_nagle(void)
{
    /* The open descriptors only: the limit may be a million. */
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        char *end;
        long n = strtol(entry->d_name, &end, 10);
        if (end == entry->d_name || *end != '\0' || n < 0 || n == dirfd(dir))
            continue;
        int fd = (int)n, type = 0, on = 1;
        socklen_t len = sizeof type;
        struct sockaddr_storage addr;
        socklen_t alen = sizeof addr;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
            continue;
        if (getsockname(fd, (struct sockaddr *)&addr, &alen) != 0 ||
            (addr.ss_family != AF_INET && addr.ss_family != AF_INET6))
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    }
    closedir(dir);
}

/* Why a connection attempt failed, from Paho's code: the CONNACK return
 * codes of MQTT 3.1.1, else the TCP connection itself. */
static const char *connect_reason(int code)
{
    static const char *const connack[] = {
        NULL, "unacceptable protocol version", "client identifier rejected", "server unavailable",
        "bad user name or password", "not authorized",
    };
    if (code >= 1 && code <= 5)
        return connack[code];
    return "no connection (nothing listening, refused, or dropped before the CONNACK)";
}

static void handle_event(load *L, const event *e)
{
    sim_agent *a = &L->agents[e->agent];
    switch ((event_kind)e->kind) {
    case EV_CONNECTED:
        if (a->connecting) {
            a->connecting = false;
            L->connecting--;
        }
        a->connected = true;
        a->connect_failures = 0;
        a->last_heard = (float)since_start(L);
        L->connected++;
        if (!a->started) {
            L->ever_connected++;
            agent_start(L, a);
        } else {
            agent_reconnected(L, a);
        }
        break;
    case EV_CONNECT_FAILED: {
        if (a->connecting) {
            a->connecting = false;
            L->connecting--;
        }
        L->connect_failures++;
        unsigned shift = a->connect_failures < 4 ? a->connect_failures : 4;
        a->connect_failures++;
        a->retry_at = (float)since_start(L) + (float)(1u << shift); /* 1 s, doubling to 16 s */
        log_warn_limited(&connect_log, "agent %u: connecting to %s failed: %s (Paho code %d); trying again in %u s",
                         a->id, L->set.link.broker_url, connect_reason(e->code), e->code, 1u << shift);
        break;
    }
    case EV_LOST:
        if (a->connected) {
            a->connected = false;
            L->connected--;
        }
        L->losses++;
        a->retry_at = (float)since_start(L) + 1.0f;
        log_warn_limited(&lost_log, "agent %u: connection to %s lost; reconnecting", a->id, L->set.link.broker_url);
        break;
    case EV_CONFIG:
        a->last_heard = (float)(e->at - L->started);
        on_config(L, a, e);
        break;
    case EV_MODEL:
        a->last_heard = (float)(e->at - L->started);
        on_model(L, a, e);
        break;
    case EV_OTHER:
        L->other_messages++;
        break;
    case EV_UPDATE_ACKED: {
        L->outstanding--;
        L->updates_acked++;
        round_stats *r = e->round != UINT32_MAX ? stats_of(L, e->round) : NULL;
        if (r) {
            r->acked++;
            if (e->at - L->started > r->last_acked)
                r->last_acked = e->at - L->started;
        }
        break;
    }
    case EV_RESEND_ACKED:
        L->outstanding--;
        L->updates_acked++;
        break;
    case EV_STATUS_ACKED:
        L->outstanding--;
        L->statuses_acked++;
        break;
    case EV_PUBLISH_FAILED:
        L->outstanding--;
        L->publish_failures++;
        log_warn_limited(&publish_log, "agent %u: a publish failed (Paho code %d)", a->id, e->code);
        break;
    case EV_SUBSCRIBE_FAILED:
        L->subscribe_failures++;
        log_warn_limited(&subscribe_log, "agent %u: a subscription failed (Paho code %d)", a->id, e->code);
        break;
    case EV_DISCONNECTED:
        if (a->connected) {
            a->connected = false;
            L->connected--;
        }
        break;
    }
}

/* Processes what arrived, waiting up to timeout_ms for it. */
static size_t drain(load *L, event *batch, int timeout_ms)
{
    size_t n = pop_events(L, batch, EVENT_BATCH, timeout_ms), total = n;
    for (size_t i = 0; i < n; i++)
        handle_event(L, &batch[i]);
    while (n == EVENT_BATCH) {
        n = pop_events(L, batch, EVENT_BATCH, 0);
        for (size_t i = 0; i < n; i++)
            handle_event(L, &batch[i]);
        total += n;
    }
    return total;
}

/* Once a second: connections due again, and what agent_session_on_idle
 * does: ask for the configuration, or joined for the model, every 2 s
 * until it comes, and for the current model after a quiet minute. */
static void sweep(load *L, double now)
{
    for (uint32_t i = 0; i < L->next_to_connect; i++) {
        sim_agent *a = &L->agents[i];
        if (!a->connected && !a->connecting && a->retry_at > 0 && a->retry_at <= now &&
            L->connecting < L->set.connect_burst)
            start_connect(L, a);
        if (a->connected && a->started && !a->finished && !a->has_model && now - a->asked_at >= ASK_SECONDS) {
            a->asked_at = (float)now;
            if (a->config) {
                ask_for_model(L, a);
            } else {
                publish_status(L, a, AGENT_STATE_SYNCING); /* run 0: the configuration, please */
                L->syncs++;
            }
        }
        if (a->connected && a->has_model && !a->finished && now - a->last_heard >= QUIET_SECONDS) {
            a->last_heard = (float)now;
            ask_for_model(L, a);
        }
    }
}

static void progress(load *L, double now)
{
    uint32_t round = L->highest_round ? L->highest_round - 1 : 0;
    const round_stats *r = L->highest_round ? stats_of(L, round) : NULL;
    pthread_mutex_lock(&L->seen_lock);
    uint64_t copies = L->model_copies, bytes = L->model_bytes;
    pthread_mutex_unlock(&L->seen_lock);
    log_info("%.0f s: %u of %u agents connected; round %u answered by %u; updates %llu sent, %llu re-sent, %llu "
             "acknowledged; models %llu (%.1f MB) received; %u finished",
             now, L->connected, L->set.count, round, r ? r->answered : 0, (unsigned long long)L->updates_new,
             (unsigned long long)L->updates_resent, (unsigned long long)L->updates_acked,
             (unsigned long long)copies, (double)bytes / 1e6, L->finished);
}

/* ---- summary ---- */

static int compare_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

typedef struct spread {
    double median, p90;
    uint32_t n;
} spread;

static spread spread_of(double *v, uint32_t n)
{
    spread s = {NAN, NAN, n};
    if (!n)
        return s;
    qsort(v, n, sizeof *v, compare_double);
    s.median = v[(n - 1) / 2];
    uint32_t p = (uint32_t)ceil(0.9 * n);
    s.p90 = v[(p ? p : 1) - 1];
    return s;
}

/* Over the rounds every agent here answered and whose next model came:
 * how long the model took to reach all of them, how long until the last
 * update was out and acknowledged, and from that acknowledgement to the
 * next round's model (broker to coordinator, its close, its publishing,
 * broker back: the round's overhead with no agent compute in it). */
typedef struct timeline {
    spread fanout, answer, ack, turnaround, period;
    uint32_t complete_rounds;
} timeline;

static timeline summarise_rounds(load *L)
{
    timeline t;
    memset(&t, 0, sizeof t);
    uint32_t n = L->highest_round < L->rounds_cap ? L->highest_round : L->rounds_cap;
    double *v[5];
    for (int i = 0; i < 5; i++)
        v[i] = malloc((size_t)(n ? n : 1) * sizeof(double));
    uint32_t m = 0;
    for (uint32_t r = 0; v[0] && v[1] && v[2] && v[3] && v[4] && r + 1 < n; r++) {
        const round_stats *s = &L->rounds[r], *next = &L->rounds[r + 1];
        if (s->answered != L->set.count || s->acked < s->answered || next->answered == 0)
            continue;
        v[0][m] = s->last_model - s->first_model;
        v[1][m] = s->last_sent - s->first_model;
        v[2][m] = s->last_acked - s->first_model;
        v[3][m] = next->first_model - s->last_acked;
        v[4][m] = next->first_model - s->first_model;
        m++;
    }
    if (v[0] && v[1] && v[2] && v[3] && v[4]) {
        t.fanout = spread_of(v[0], m);
        t.answer = spread_of(v[1], m);
        t.ack = spread_of(v[2], m);
        t.turnaround = spread_of(v[3], m);
        t.period = spread_of(v[4], m);
        t.complete_rounds = m;
    }
    for (int i = 0; i < 5; i++)
        free(v[i]);
    return t;
}

static void json_spread(json_writer *w, const char *key, spread s)
{
    char name[64];
    snprintf(name, sizeof name, "%s_ms_median", key);
    json_writer_fixed(w, name, s.median * 1e3, 3);
    snprintf(name, sizeof name, "%s_ms_p90", key);
    json_writer_fixed(w, name, s.p90 * 1e3, 3);
}

static void report(load *L, int rc, double wall)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    double sys = (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    double peak = peak_resident_mib();
    timeline t = summarise_rounds(L);
    pthread_mutex_lock(&L->seen_lock);
    uint64_t model_copies = L->model_copies, model_bytes = L->model_bytes, verified = L->verified;
    pthread_mutex_unlock(&L->seen_lock);
    uint32_t rounds = 0;
    for (uint32_t r = 0; r < L->highest_round && r < L->rounds_cap; r++)
        rounds += L->rounds[r].answered > 0;
    uint64_t ignored = 0;
    for (int s = 0; s < ESGD_STATUS_COUNT; s++)
        ignored += L->ignored[s];
    thread_cpu threads[16];
    int thread_count = thread_times(threads, 16);
    char by_thread[400] = "";
    size_t at = 0;
    for (int i = 0; i < thread_count && at < sizeof by_thread; i++)
        at += (size_t)snprintf(by_thread + at, sizeof by_thread - at, "%s%s %.1f s", i ? ", " : "", threads[i].name,
                               threads[i].seconds);
    /* Never all connected: no steady per-agent figure. */
    double per_agent_kib = L->set.count && L->all_connected_at
                               ? (L->rss_connected_mib - L->rss_before_mib) * 1024.0 / L->set.count
                               : NAN;
    double peak_per_agent_kib = L->set.count ? (peak - L->rss_before_mib) * 1024.0 / L->set.count : 0;
    log_info("summary: agents %u..%u (%u), %u finished the job, %u ever connected; %u rounds answered (highest %u); "
             "updates %llu sent, %llu re-sent, %llu acknowledged; %llu status messages; failures: %llu publish, "
             "%llu subscribe, %llu connect attempts, %llu connections lost, %llu agents refused",
             L->set.first_id, L->set.first_id + L->set.count - 1, L->set.count, L->finished_job, L->ever_connected,
             rounds, L->highest_round ? L->highest_round - 1 : 0, (unsigned long long)L->updates_new,
             (unsigned long long)L->updates_resent, (unsigned long long)L->updates_acked,
             (unsigned long long)L->statuses, (unsigned long long)L->publish_failures,
             (unsigned long long)L->subscribe_failures, (unsigned long long)L->connect_failures,
             (unsigned long long)L->losses, (unsigned long long)L->refused_agents);
    char reasons[512] = "";
    size_t used = 0;
    for (int s = 0; s < ESGD_STATUS_COUNT; s++)
        if (L->ignored[s] && used < sizeof reasons)
            used += (size_t)snprintf(reasons + used, sizeof reasons - used, " %s %llu",
                                     esgd_status_name((esgd_status)s), (unsigned long long)L->ignored[s]);
    log_info("summary: models %llu copies (%.1f MB), %llu distinct messages verified, %llu ignored%s%s; %llu "
             "fetches of the retained model, %llu \"syncing\" asks for the current one",
             (unsigned long long)model_copies, (double)model_bytes / 1e6, (unsigned long long)verified,
             (unsigned long long)ignored, used ? " by reason:" : "", reasons, (unsigned long long)L->fetches,
             (unsigned long long)L->syncs);
    log_info("summary: per round over %u complete rounds (median / p90, ms): model to every agent %.1f / %.1f, "
             "to the last update sent %.1f / %.1f, acknowledged %.1f / %.1f; last acknowledgement to the next model "
             "%.1f / %.1f; round period %.1f / %.1f",
             t.complete_rounds, t.fanout.median * 1e3, t.fanout.p90 * 1e3, t.answer.median * 1e3, t.answer.p90 * 1e3,
             t.ack.median * 1e3, t.ack.p90 * 1e3, t.turnaround.median * 1e3, t.turnaround.p90 * 1e3,
             t.period.median * 1e3, t.period.p90 * 1e3);
    log_info("summary: CPU by thread: %s", by_thread);
    char connected[96] = "never all agents connected";
    if (L->all_connected_at)
        snprintf(connected, sizeof connected, "%.1f MiB with every agent connected (%.1f KiB per agent)",
                 L->rss_connected_mib, per_agent_kib);
    log_info("summary: %.1f s, CPU %.1f s user + %.1f s system; resident set %.1f MiB before the clients, %s, peak "
             "%.1f MiB (%.1f KiB per agent); event queue peak %zu",
             wall, user, sys, L->rss_before_mib, connected, peak, peak_per_agent_kib, L->queue_peak);
    if (!L->set.json)
        return;
    json_writer w;
    json_writer_init(&w, stdout);
    json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
    json_writer_string(&w, "status", rc == EXIT_DONE ? "finished" : rc == EXIT_INTERRUPTED ? "interrupted" : "failed");
    json_writer_string(&w, "job", L->set.job);
    json_writer_uint(&w, "first_id", L->set.first_id);
    json_writer_uint(&w, "agents", L->set.count);
    json_writer_uint(&w, "finished", L->finished_job);
    json_writer_uint(&w, "rounds", rounds);
    json_writer_uint(&w, "complete_rounds", t.complete_rounds);
    json_writer_uint(&w, "updates_sent", L->updates_new);
    json_writer_uint(&w, "updates_resent", L->updates_resent);
    json_writer_uint(&w, "updates_acked", L->updates_acked);
    json_writer_uint(&w, "status_sent", L->statuses);
    json_writer_uint(&w, "status_acked", L->statuses_acked);
    json_writer_uint(&w, "publish_failures", L->publish_failures);
    json_writer_uint(&w, "subscribe_failures", L->subscribe_failures);
    json_writer_uint(&w, "connect_failures", L->connect_failures);
    json_writer_uint(&w, "connections_lost", L->losses);
    json_writer_uint(&w, "agents_refused", L->refused_agents);
    json_writer_uint(&w, "model_copies", model_copies);
    json_writer_uint(&w, "model_bytes", model_bytes);
    json_writer_uint(&w, "models_ignored", ignored);
    json_writer_uint(&w, "retained_fetches", L->fetches);
    json_writer_uint(&w, "syncing_sent", L->syncs);
    json_writer_uint(&w, "events_lost", L->events_lost);
    json_writer_uint(&w, "other_messages", L->other_messages);
    json_spread(&w, "fanout", t.fanout);
    json_spread(&w, "answer", t.answer);
    json_spread(&w, "acked", t.ack);
    json_spread(&w, "turnaround", t.turnaround);
    json_spread(&w, "period", t.period);
    json_writer_fixed(&w, "connect_seconds", L->all_connected_at, 3);
    json_writer_fixed(&w, "cpu_user_seconds", user, 2);
    json_writer_fixed(&w, "cpu_system_seconds", sys, 2);
    json_writer_object_begin(&w, "thread_cpu_seconds", JSON_WRITER_INLINE);
    for (int i = 0; i < thread_count; i++)
        json_writer_fixed(&w, threads[i].name, threads[i].seconds, 2);
    json_writer_object_end(&w);
    json_writer_fixed(&w, "rss_before_mib", L->rss_before_mib, 1);
    json_writer_fixed(&w, "rss_clients_mib", L->rss_created_mib, 1);
    json_writer_fixed(&w, "rss_connected_mib", L->all_connected_at ? L->rss_connected_mib : NAN, 1);
    json_writer_fixed(&w, "peak_rss_mib", peak, 1);
    json_writer_fixed(&w, "kib_per_agent", per_agent_kib, 1);
    json_writer_fixed(&w, "peak_kib_per_agent", peak_per_agent_kib, 1);
    json_writer_fixed(&w, "seconds", wall, 2);
    json_writer_object_end(&w);
    fputc('\n', stdout);
    fflush(stdout);
}

/* One row per round: when the first and the last agent here got its
 * model, when the last new update left and was acknowledged, on
 * CLOCK_MONOTONIC (system-wide), so that the rows of several load
 * processes of one job can be merged (bench/load-scale.sh). */
static esgd_status write_timeline(const load *L, const char *path, esgd_error *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    fprintf(f, "round,answered,acked,first_model,last_model,last_sent,last_acked\n");
    uint32_t n = L->highest_round < L->rounds_cap ? L->highest_round : L->rounds_cap;
    for (uint32_t r = 0; r < n; r++) {
        const round_stats *s = &L->rounds[r];
        if (!s->answered)
            continue;
        fprintf(f, "%u,%u,%u,%.6f,%.6f,%.6f,%.6f\n", r, s->answered, s->acked, L->started + s->first_model,
                L->started + s->last_model, L->started + s->last_sent,
                s->acked ? L->started + s->last_acked : NAN);
    }
    bool failed = ferror(f) != 0;
    if (fclose(f) != 0 || failed)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return ESGD_OK;
}

/* ---- start-up and shutdown ---- */

/* One descriptor per agent, plus a few: raise the soft limit to the hard
 * one if that is needed, and say how many are missing otherwise. */
static esgd_status ensure_descriptors(uint32_t agents, esgd_error *err)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot read the descriptor limit: %s", strerror(errno));
    rlim_t want = (rlim_t)agents + 64;
    if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
        if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < want)
            return esgd_error_set(err, ESGD_ERR_ARG,
                                  "%u agents need %llu file descriptors, and the hard limit is %llu: raise it "
                                  "(ulimit -Hn, as root) or split the agents over several esgd-load processes "
                                  "with --first-id and --count",
                                  agents, (unsigned long long)want, (unsigned long long)lim.rlim_max);
        lim.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
            return esgd_error_set(err, ESGD_ERR_IO, "cannot raise the descriptor limit to %llu: %s",
                                  (unsigned long long)want, strerror(errno));
    }
    return ESGD_OK;
}

/* The connect options every agent shares: mqtt_link's choices (MQTT 3.1.1,
 * a persistent session, 5 s TCP connect timeout there; 30 s here, since
 * thousands of clients connect at once). */
static esgd_status connect_options(load *L, esgd_error *err)
{
    const mqtt_link_options *o = &L->set.link;
    bool tls = strncmp(o->broker_url, "ssl://", 6) == 0 || strncmp(o->broker_url, "mqtts://", 8) == 0;
    if (!tls && (o->ca_file || o->cert_file || o->key_file))
        return esgd_error_set(err, ESGD_ERR_ARG, "TLS files given but %s is not an ssl:// URL", o->broker_url);
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = (int)L->set.keepalive;
    co.cleansession = 0;
    co.automaticReconnect = 0; /* the main thread reconnects, and knows when */
    co.connectTimeout = 30;
    co.MQTTVersion = MQTTVERSION_3_1_1;
    co.onSuccess = on_connect_success;
    co.onFailure = on_connect_failure;
    co.username = o->username;
    co.password = o->password;
    if (o->password_file) {
        if (mqtt_read_password(o->password_file, L->password, sizeof L->password, err) != ESGD_OK)
            return err->status;
        co.password = L->password;
    }
    if (tls) {
        MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
        L->ssl = ssl;
        L->ssl.trustStore = o->ca_file;
        L->ssl.keyStore = o->cert_file;
        L->ssl.privateKey = o->key_file;
        L->ssl.enableServerCertAuth = 1;
        co.ssl = &L->ssl;
    }
    L->co = co;
    return ESGD_OK;
}

/* Keys, and one Paho client per agent (not connected yet). */
static int create_agents(load *L, esgd_error *err)
{
    const settings *set = &L->set;
    if (!(L->agents = calloc(set->count, sizeof *L->agents))) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for %u agents", set->count);
        return EXIT_RUNTIME;
    }
    MQTTAsync_createOptions cro = MQTTAsync_createOptions_initializer;
    cro.sendWhileDisconnected = 1; /* an answer made while reconnecting goes out after it */
    cro.maxBufferedMessages = 64;
    cro.allowDisconnectedSendAtAnyTime = 1;
    cro.MQTTVersion = MQTTVERSION_3_1_1;
    for (uint32_t i = 0; i < set->count; i++) {
        sim_agent *a = &L->agents[i];
        a->load = L;
        a->id = set->first_id + i;
        char name[KEY_NAME_MAX], client_id[128];
        keys_agent_name(name, a->id);
        if (keys_load_secret(set->keys_dir, name, &a->key, err) != ESGD_OK) {
            esgd_error_prefix(err, "agent %u", a->id);
            return EXIT_USAGE;
        }
        /* esgd-agent's client id: a real agent of the same id would be
         * knocked off the broker, as two agents with one id should be. */
        snprintf(client_id, sizeof client_id, "esgd-agent-%s-%u", set->job, a->id);
        int rc = MQTTAsync_createWithOptions(&a->client, set->link.broker_url, client_id,
                                             MQTTCLIENT_PERSISTENCE_NONE, NULL, &cro);
        if (rc != MQTTASYNC_SUCCESS) {
            a->client = NULL;
            esgd_error_set(err, rc == MQTTASYNC_BAD_PROTOCOL ? ESGD_ERR_ARG : ESGD_ERR_IO,
                           "agent %u: cannot make an MQTT client for %s: %s (code %d; expected tcp://host:port)",
                           a->id, set->link.broker_url, MQTTAsync_strerror(rc), rc);
            return rc == MQTTASYNC_BAD_PROTOCOL ? EXIT_USAGE : EXIT_RUNTIME;
        }
        rc = MQTTAsync_setCallbacks(a->client, a, on_connection_lost, on_message, NULL);
        if (rc != MQTTASYNC_SUCCESS) {
            esgd_error_set(err, ESGD_ERR_IO, "agent %u: cannot set the MQTT client's callbacks: %s (code %d)", a->id,
                           MQTTAsync_strerror(rc), rc);
            return EXIT_RUNTIME;
        }
    }
    return EXIT_DONE;
}

/* Waits up to seconds for every publish to be acknowledged. */
static void wait_outstanding(load *L, event *batch, double seconds)
{
    double until = monotonic_seconds() + seconds;
    while (L->outstanding > 0 && monotonic_seconds() < until)
        drain(L, batch, 100);
    if (L->outstanding > 0)
        log_warn("%llu publishes not acknowledged by the broker at the end", (unsigned long long)L->outstanding);
}

/* A clean DISCONNECT for every agent (the broker then keeps its Last Will
 * to itself), waiting up to 10 s for them. */
static void disconnect_all(load *L, event *batch)
{
    for (uint32_t i = 0; i < L->set.count; i++) {
        sim_agent *a = &L->agents[i];
        if (!a->client || (!a->connected && !a->connecting))
            continue;
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        d.timeout = 2000;
        d.onSuccess = on_disconnected;
        d.onFailure = on_disconnect_failure;
        d.context = a;
        if (MQTTAsync_disconnect(a->client, &d) != MQTTASYNC_SUCCESS && a->connected) {
            a->connected = false; /* no callback will come: Paho has it down already */
            L->connected--;
        }
    }
    double until = monotonic_seconds() + 10;
    while (L->connected > 0 && monotonic_seconds() < until)
        drain(L, batch, 100);
    if (L->connected > 0)
        log_warn("%u agents had not disconnected after 10 s", L->connected);
}

static int run_agents(load *L, event *batch)
{
    const settings *set = &L->set;
    double last_progress = 0, last_sweep = 0, last_nagle = 0;
    uint32_t nagle_connected = 0;
    for (;;) {
        double now = since_start(L);
        /* New connections, at most connect_burst in flight: a burst of
         * thousands overflows the broker's listen backlog, and each lost
         * SYN costs a second. */
        while (L->next_to_connect < set->count && L->connecting < set->connect_burst)
            start_connect(L, &L->agents[L->next_to_connect++]);
        drain(L, batch, 50);
        now = since_start(L);
        if (L->ever_connected != nagle_connected && (now - last_nagle >= 1 || L->ever_connected == set->count)) {
            disable_nagle();
            nagle_connected = L->ever_connected;
            last_nagle = now;
        }
        if (!L->all_connected_at && L->ever_connected == set->count) {
            L->all_connected_at = now;
            L->rss_connected_mib = resident_mib();
            log_info("all %u agents connected in %.1f s; resident set %.1f MiB", set->count, now,
                     L->rss_connected_mib);
        }
        if (now - last_sweep >= 1) {
            sweep(L, now);
            last_sweep = now;
        }
        if (set->progress_every && now - last_progress >= set->progress_every) {
            progress(L, now);
            last_progress = now;
        }
        if (L->finished == set->count)
            return L->finished_job == set->count ? EXIT_DONE : EXIT_RUNTIME;
        if (stop_requested())
            return EXIT_INTERRUPTED;
        if (!L->all_connected_at && set->link.connect_timeout_seconds && now >= set->link.connect_timeout_seconds) {
            log_error("only %u of %u agents connected to %s within %u s (--connect-timeout); %llu attempts "
                      "failed",
                      L->ever_connected, set->count, set->link.broker_url, set->link.connect_timeout_seconds,
                      (unsigned long long)L->connect_failures);
            return EXIT_RUNTIME;
        }
        if (!L->config_seen && set->config_timeout && now >= set->config_timeout) {
            log_error("no configuration of job %s after %u s (--config-timeout)", set->job, set->config_timeout);
            return EXIT_RUNTIME;
        }
        if (set->timeout > 0 && now >= set->timeout) {
            log_error("stopped after %.0f s (--timeout): %u of %u agents finished, highest round answered %u",
                      set->timeout, L->finished, set->count, L->highest_round ? L->highest_round - 1 : 0);
            return EXIT_RUNTIME;
        }
    }
}

static int check_settings(const settings *s, esgd_error *err)
{
    if (!s->keys_dir) {
        esgd_error_set(err, ESGD_ERR_ARG, "--keys DIR is required: every message is signed (make keys with "
                                          "esgd-keygen --agents N)");
        return EXIT_USAGE;
    }
    if (job_name_check(s->job, strlen(s->job), ESGD_ERR_ARG, err) != ESGD_OK) {
        esgd_error_prefix(err, "--job '%s'", s->job);
        return EXIT_USAGE;
    }
    if (s->count == 0) {
        esgd_error_set(err, ESGD_ERR_ARG, "--count N: how many agents to simulate (at least 1)");
        return EXIT_USAGE;
    }
    if ((uint64_t)s->first_id + s->count - 1 > UINT32_MAX) {
        esgd_error_set(err, ESGD_ERR_ARG, "--first-id %u with --count %u runs past agent id %u", s->first_id,
                       s->count, UINT32_MAX);
        return EXIT_USAGE;
    }
    if (s->connect_burst == 0) {
        esgd_error_set(err, ESGD_ERR_ARG, "--connect-burst must be at least 1");
        return EXIT_USAGE;
    }
    if (s->keepalive < 5 || s->keepalive > 65535) {
        esgd_error_set(err, ESGD_ERR_ARG, "--keepalive %u: expected 5..65535 seconds", s->keepalive);
        return EXIT_USAGE;
    }
    if (!(s->hot_fraction > 0 && s->hot_fraction <= 1)) {
        esgd_error_set(err, ESGD_ERR_ARG, "--hot-fraction %g: expected a fraction in (0, 1]", s->hot_fraction);
        return EXIT_USAGE;
    }
    if (!(s->cold_share >= 0 && s->cold_share <= 1)) {
        esgd_error_set(err, ESGD_ERR_ARG, "--cold-share %g: expected a fraction in [0, 1]", s->cold_share);
        return EXIT_USAGE;
    }
    if (!(s->value_scale > 0 && s->value_scale <= 1e3)) {
        esgd_error_set(err, ESGD_ERR_ARG, "--value-scale %g: expected a magnitude in (0, 1000]", s->value_scale);
        return EXIT_USAGE;
    }
    if (!(s->timeout >= 0) || !isfinite(s->timeout)) {
        esgd_error_set(err, ESGD_ERR_ARG, "--timeout %g: expected seconds >= 0", s->timeout);
        return EXIT_USAGE;
    }
    if (s->timeline_path) {
        /* Found out now rather than after the whole run. */
        FILE *f = fopen(s->timeline_path, "w");
        if (!f) {
            esgd_error_set(err, ESGD_ERR_IO, "--timeline: cannot write %s: %s", s->timeline_path, strerror(errno));
            return EXIT_USAGE;
        }
        fclose(f);
    }
    return EXIT_DONE;
}

int main(int argc, char **argv)
{
    static load L; /* large (the message cache, the configurations): not on the stack */
    settings *set = &L.set;
    set->link.broker_url = "tcp://127.0.0.1:1883";
    set->link.connect_timeout_seconds = 120;
    set->job = "mnist";
    set->connect_burst = 64;
    set->keepalive = 20;
    set->progress_every = 10;
    set->load_seed = 1;
    set->hot_fraction = 0.18;
    set->cold_share = 0.05;
    set->value_scale = 0.01;
    cli_option broker_options[MQTT_LINK_CLI_OPTION_COUNT];
    mqtt_link_cli_options(&set->link, broker_options);
    const cli_option options[] = {
        {"job", CLI_STRING, &set->job, "job name (the coordinator's --job)"},
        {"keys", CLI_STRING, &set->keys_dir, "folder with agent-<id>.key of every simulated agent and coordinator.pub"},
        {"first-id", CLI_UINT, &set->first_id, "id of the first simulated agent"},
        {"count", CLI_UINT, &set->count, "agents to simulate: ids first-id .. first-id + count - 1"},
        {"connect-burst", CLI_UINT, &set->connect_burst, "connections being opened at once, at most"},
        {"keepalive", CLI_UINT, &set->keepalive, "MQTT keepalive of each agent, seconds (esgd-agent's is 20)"},
        {"config-timeout", CLI_UINT, &set->config_timeout, "seconds to wait for the job configuration (0: forever)"},
        {"timeout", CLI_DOUBLE, &set->timeout, "give up after this many seconds (0: never)"},
        {"progress-every", CLI_UINT, &set->progress_every, "seconds between progress lines (0: none)"},
        {"load-seed", CLI_UINT, &set->load_seed, "seed of the simulated updates' coordinates and values"},
        {"hot-fraction", CLI_DOUBLE, &set->hot_fraction,
         "fraction of the coordinates most updates are drawn from (eSGD selections overlap)"},
        {"cold-share", CLI_DOUBLE, &set->cold_share, "share of each update's coordinates drawn from all d instead"},
        {"value-scale", CLI_DOUBLE, &set->value_scale, "largest magnitude of an update value"},
        {"timeline", CLI_STRING, &set->timeline_path,
         "write per-round times (CSV, monotonic seconds, comparable across processes) to this file at the end"},
        {"json", CLI_FLAG, &set->json, "print one JSON object with the results on stdout at the end"},
    };
    const cli_program program = {
        .name = "esgd-load",
        .summary = "usage: esgd-load --keys DIR --count N [--first-id F] [options]\n"
                   "Simulates N edge agents in one process, each its own MQTT client: each takes the\n"
                   "job's retained configuration, follows the coordinator's models and answers every\n"
                   "round with a signed sparse update of the job's size (k = ceil((1 - drop) d) small\n"
                   "values), and publishes its status as esgd-agent does. For load tests of the broker\n"
                   "and the coordinator; several processes can split the agents with --first-id.",
        CLI_OPTIONS(options),
        CLI_SHARED_OPTIONS(broker_options),
        .epilogue = "exit status: 0 every simulated agent saw the job finish, 1 runtime error (broker,\n"
                    "             timeout, an agent that could not take part), 2 bad usage or keys,\n"
                    "             3 stopped by SIGINT/SIGTERM",
    };
    int rc = cli_parse(&program, argc, argv, NULL);
    if (rc != CLI_CONTINUE)
        return rc == CLI_HELP ? EXIT_DONE : EXIT_USAGE;
    log_set_subject("esgd-load");
    esgd_error err = {0};
    if ((rc = check_settings(set, &err)) != EXIT_DONE) {
        fprintf(stderr, "esgd-load: %s\n", err.message);
        return rc;
    }
    if (envelope_init(&err) != ESGD_OK ||
        keys_load_public(set->keys_dir, "coordinator", &L.coordinator, &err) != ESGD_OK ||
        ensure_descriptors(set->count, &err) != ESGD_OK || connect_options(&L, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-load: %s\n", err.message);
        return EXIT_USAGE;
    }
    stop_signals_install();
    pthread_mutex_init(&L.queue_lock, NULL);
    pthread_mutex_init(&L.seen_lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&L.queue_ready, &attr);
    pthread_condattr_destroy(&attr);
    event *batch = malloc(EVENT_BATCH * sizeof *batch);
    if (!batch || !(L.decoder = codec_decoder_new(&err))) {
        fprintf(stderr, "esgd-load: %s\n", batch ? err.message : "out of memory");
        free(batch);
        return EXIT_RUNTIME;
    }
    L.started = monotonic_seconds();
    L.rss_before_mib = resident_mib();
    rc = create_agents(&L, &err);
    L.rss_created_mib = resident_mib();
    if (rc == EXIT_DONE) {
        log_info("job %s: %u simulated agents (ids %u..%u) connecting to %s", set->job, set->count, set->first_id,
                 set->first_id + set->count - 1, set->link.broker_url);
        rc = run_agents(&L, batch);
    } else {
        log_error("%s", err.message);
    }
    if (rc == EXIT_INTERRUPTED) {
        /* As esgd-agent on SIGTERM: say we are going. */
        for (uint32_t i = 0; i < set->count; i++)
            if (L.agents[i].connected && !L.agents[i].finished)
                publish_status(&L, &L.agents[i], AGENT_STATE_OFFLINE);
    }
    if (L.agents) {
        wait_outstanding(&L, batch, 10);
        disconnect_all(&L, batch);
    }
    double wall = since_start(&L);
    log_limiter_flush(&lost_log, "lost connections");
    log_limiter_flush(&connect_log, "connection failures");
    log_limiter_flush(&publish_log, "publish failures");
    log_limiter_flush(&subscribe_log, "subscription failures");
    log_limiter_flush(&ignored_log, "ignored messages");
    log_limiter_flush(&fetch_log, "missed rounds");
    if (L.agents && rc != EXIT_USAGE)
        report(&L, rc, wall);
    if (L.agents && set->timeline_path && write_timeline(&L, set->timeline_path, &err) != ESGD_OK) {
        log_error("%s", err.message);
        if (rc == EXIT_DONE)
            rc = EXIT_RUNTIME;
    }
    for (uint32_t i = 0; L.agents && i < set->count; i++)
        if (L.agents[i].client)
            MQTTAsync_destroy(&L.agents[i].client);
    free(L.agents);
    for (int i = 0; i < MAX_CONFIGS; i++)
        free(L.samplers[i].hot);
    free(L.bits);
    free(L.indices);
    free(L.values);
    buffer_destroy(&L.out);
    free(L.scratch.params.indices);
    free(L.scratch.params.values);
    codec_decoder_free(L.decoder);
    free(L.queue);
    free(batch);
    return rc;
}
