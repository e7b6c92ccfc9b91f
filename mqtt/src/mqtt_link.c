/* The broker connection: Paho's asynchronous client underneath, a queue of
 * arrived messages on top. Paho runs callbacks on its own threads; they only
 * copy what arrived into the queue and record connection events, so the
 * program's state is only ever touched by its own thread. */
#include "esgd/mqtt_link.h"

#include <MQTTAsync.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_FILTERS 16
#define FILTER_MAX 256

typedef struct queued_message {
    struct queued_message *next;
    size_t size;
    bool retained;
    char *topic;    /* points into the same allocation, after the payload */
    uint8_t data[]; /* payload, then the NUL-terminated topic */
} queued_message;

struct mqtt_link {
    MQTTAsync client;
    pthread_mutex_t lock;
    pthread_cond_t changed;     /* queue grew, or a connect/disconnect finished */

    queued_message *head, *tail;
    size_t queued_bytes, max_queued_bytes;
    queued_message *current;    /* handed out by mqtt_link_next, freed on the next call */

    char filters[MAX_FILTERS][FILTER_MAX];
    int filter_count;

    bool connected;
    int connect_result;         /* 0 pending, 1 ok, -1 failed (first connect) */
    char connect_failure[160];
    bool disconnected;          /* mqtt_link_close: disconnect finished */
    mqtt_link_counters counters;
};

/* ---- callbacks (Paho's threads) ---- */

static void subscribe_all(mqtt_link *l)
{
    char copy[MAX_FILTERS][FILTER_MAX];
    pthread_mutex_lock(&l->lock);
    int n = l->filter_count;
    memcpy(copy, l->filters, sizeof copy);
    pthread_mutex_unlock(&l->lock);
    for (int i = 0; i < n; i++) {
        MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
        MQTTAsync_subscribe(l->client, copy[i], 1, &ro);
    }
}

/* Paho leaves Nagle's algorithm on and does not expose its socket. Each
 * round is a short request/response exchange of small messages, where Nagle
 * plus delayed ACKs cost ~40 ms per round trip (measured: 90 ms rounds
 * instead of a few ms), so TCP_NODELAY is set on the process's TCP sockets,
 * which are its broker connections. */
static void disable_nagle(void)
{
    for (int fd = 0; fd < 1024; fd++) {
        int type = 0;
        socklen_t len = sizeof type;
        struct sockaddr_storage addr;
        socklen_t alen = sizeof addr;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
            continue;
        if (getsockname(fd, (struct sockaddr *)&addr, &alen) != 0 ||
            (addr.ss_family != AF_INET && addr.ss_family != AF_INET6))
            continue;
        int on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    }
}

static void on_connected(void *context, char *cause)
{
    (void)cause;
    mqtt_link *l = context;
    pthread_mutex_lock(&l->lock);
    l->connected = true;
    l->counters.connects++;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
    disable_nagle();
    /* The session may be new (broker restarted without persistence), so the
     * filters are subscribed again on every connection. */
    subscribe_all(l);
}

static void on_connection_lost(void *context, char *cause)
{
    mqtt_link *l = context;
    (void)cause;
    pthread_mutex_lock(&l->lock);
    l->connected = false;
    l->counters.connection_losses++;
    pthread_mutex_unlock(&l->lock);
}

static int on_message(void *context, char *topic, int topic_len, MQTTAsync_message *m)
{
    mqtt_link *l = context;
    size_t tlen = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    size_t size = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
    pthread_mutex_lock(&l->lock);
    l->counters.received++;
    l->counters.received_bytes += size;
    queued_message *q = NULL;
    if (l->queued_bytes + size <= l->max_queued_bytes)
        q = malloc(sizeof *q + size + tlen + 1);
    if (q) {
        q->next = NULL;
        q->size = size;
        q->retained = m->retained != 0;
        if (size)
            memcpy(q->data, m->payload, size);
        q->topic = (char *)q->data + size;
        memcpy(q->topic, topic, tlen);
        q->topic[tlen] = '\0';
        if (l->tail)
            l->tail->next = q;
        else
            l->head = q;
        l->tail = q;
        l->queued_bytes += size;
        pthread_cond_broadcast(&l->changed);
    } else {
        l->counters.dropped++;
    }
    pthread_mutex_unlock(&l->lock);
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void on_connect_success(void *context, MQTTAsync_successData *response)
{
    (void)response;
    mqtt_link *l = context;
    pthread_mutex_lock(&l->lock);
    l->connect_result = 1;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
}

static void on_connect_failure(void *context, MQTTAsync_failureData *response)
{
    mqtt_link *l = context;
    pthread_mutex_lock(&l->lock);
    l->connect_result = -1;
    snprintf(l->connect_failure, sizeof l->connect_failure, "%s (code %d)",
             response && response->message ? response->message : "connection refused or unreachable",
             response ? response->code : 0);
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
}

static void on_disconnect_done(void *context, MQTTAsync_successData *response)
{
    (void)response;
    mqtt_link *l = context;
    pthread_mutex_lock(&l->lock);
    l->disconnected = true;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
}

static void on_disconnect_failed(void *context, MQTTAsync_failureData *response)
{
    (void)response;
    on_disconnect_done(context, NULL);
}

/* ---- the program's thread ---- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long ms_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000L + (now.tv_nsec - start->tv_nsec) / 1000000L;
}

static struct timespec deadline_after(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* One connection attempt; waits for its outcome. */
static bool try_connect(mqtt_link *l, MQTTAsync_connectOptions *co, int wait_ms)
{
    pthread_mutex_lock(&l->lock);
    l->connect_result = 0;
    pthread_mutex_unlock(&l->lock);
    int rc = MQTTAsync_connect(l->client, co);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(l->connect_failure, sizeof l->connect_failure, "connect call failed (code %d)", rc);
        return false;
    }
    struct timespec until = deadline_after(wait_ms);
    pthread_mutex_lock(&l->lock);
    while (l->connect_result == 0)
        if (pthread_cond_timedwait(&l->changed, &l->lock, &until) != 0)
            break;
    bool ok = l->connect_result == 1;
    pthread_mutex_unlock(&l->lock);
    return ok;
}

/* The first line of a password file, without its newline. */
static esgd_status read_password(const char *path, char *out, size_t cap, esgd_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return esgd_error_set(err, ESGD_ERR_IO, "mqtt: cannot read password file %s: %s", path, strerror(errno));
    bool ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    if (!ok)
        return esgd_error_set(err, ESGD_ERR_IO, "mqtt: password file %s is empty", path);
    out[strcspn(out, "\r\n")] = '\0';
    return ESGD_OK;
}

static esgd_status check_readable(const char *what, const char *path, esgd_error *err)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    if (path && !f)
        return esgd_error_set(err, ESGD_ERR_IO, "mqtt: cannot read %s %s: %s", what, path, strerror(errno));
    if (f)
        fclose(f);
    return ESGD_OK;
}

mqtt_link *mqtt_link_open(const mqtt_link_options *o, esgd_error *err)
{
    if (!o || !o->broker_url || !o->client_id || !*o->client_id) {
        esgd_error_set(err, ESGD_ERR_ARG, "mqtt: broker URL and client id are required");
        return NULL;
    }
    bool tls = strncmp(o->broker_url, "ssl://", 6) == 0 || strncmp(o->broker_url, "mqtts://", 8) == 0;
    if (!tls && (o->ca_file || o->cert_file || o->key_file)) {
        esgd_error_set(err, ESGD_ERR_ARG, "mqtt: TLS files given but %s is not an ssl:// URL", o->broker_url);
        return NULL;
    }
    if (check_readable("CA file", o->ca_file, err) != ESGD_OK ||
        check_readable("certificate", o->cert_file, err) != ESGD_OK ||
        check_readable("key", o->key_file, err) != ESGD_OK)
        return NULL;
    char password[256];
    const char *use_password = o->password;
    if (o->password_file) {
        if (read_password(o->password_file, password, sizeof password, err) != ESGD_OK)
            return NULL;
        use_password = password;
    }
    mqtt_link *l = calloc(1, sizeof *l);
    if (!l) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "mqtt: out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->changed, NULL);
    l->max_queued_bytes = o->max_queued_bytes ? o->max_queued_bytes : (size_t)256 << 20;

    MQTTAsync_createOptions cro = MQTTAsync_createOptions_initializer;
    cro.sendWhileDisconnected = 1; /* buffer publishes while reconnecting */
    cro.maxBufferedMessages = 10000;
    int rc = MQTTAsync_createWithOptions(&l->client, o->broker_url, o->client_id, MQTTCLIENT_PERSISTENCE_NONE,
                                         NULL, &cro);
    if (rc != MQTTASYNC_SUCCESS) {
        esgd_error_set(err, ESGD_ERR_ARG, "mqtt: cannot use broker URL '%s' (code %d; expected tcp://host:port)",
                       o->broker_url, rc);
        pthread_cond_destroy(&l->changed);
        pthread_mutex_destroy(&l->lock);
        free(l);
        return NULL;
    }
    MQTTAsync_setCallbacks(l->client, l, on_connection_lost, on_message, NULL);
    MQTTAsync_setConnected(l->client, l, on_connected);

    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = o->keepalive_seconds > 0 ? o->keepalive_seconds : 20;
    /* A persistent session: the broker keeps QoS 1 messages for us while we
     * are away, so a short outage loses no update and no model. */
    co.cleansession = 0;
    co.automaticReconnect = 1;
    co.minRetryInterval = 1;
    co.maxRetryInterval = 16;
    co.connectTimeout = 5;
    co.onSuccess = on_connect_success;
    co.onFailure = on_connect_failure;
    co.context = l;
    co.username = o->username;
    co.password = use_password;
    MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
    if (o->will_topic) {
        will.topicName = o->will_topic;
        will.payload.data = o->will_payload;
        will.payload.len = (int)o->will_size;
        will.retained = 1;
        will.qos = 1;
        co.will = &will;
    }
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    if (tls) {
        ssl.trustStore = o->ca_file;
        ssl.keyStore = o->cert_file;
        ssl.privateKey = o->key_file;
        ssl.enableServerCertAuth = 1;
        co.ssl = &ssl;
    }

    /* The broker may come up after us (boot order on a gateway): retry the
     * first connection until the timeout; afterwards Paho reconnects itself. */
    long timeout_ms = (o->connect_timeout_seconds > 0 ? (long)o->connect_timeout_seconds : 10) * 1000;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (try_connect(l, &co, 6000))
            return l;
        if (ms_since(&start) >= timeout_ms)
            break;
        sleep_ms(500);
    }
    esgd_error_set(err, ESGD_ERR_IO, "mqtt: cannot connect to %s within %ld s: %s", o->broker_url, timeout_ms / 1000,
                   l->connect_failure);
    MQTTAsync_destroy(&l->client);
    pthread_cond_destroy(&l->changed);
    pthread_mutex_destroy(&l->lock);
    free(l);
    return NULL;
}

void mqtt_link_cli_options(mqtt_link_options *o, cli_option out[MQTT_LINK_CLI_OPTION_COUNT])
{
    const cli_option options[MQTT_LINK_CLI_OPTION_COUNT] = {
        {"broker", CLI_STRING, &o->broker_url, "broker URL, tcp://host:port or ssl://host:port"},
        {"connect-timeout", CLI_UINT, &o->connect_timeout_seconds, "seconds to keep trying the first connection"},
        {"username", CLI_STRING, &o->username, "broker user name"},
        {"password", CLI_STRING, &o->password, "broker password (prefer --password-file)"},
        {"password-file", CLI_STRING, &o->password_file, "file whose first line is the broker password"},
        {"ca-file", CLI_STRING, &o->ca_file, "CA bundle to verify an ssl:// broker"},
        {"cert-file", CLI_STRING, &o->cert_file, "client certificate (PEM) for an ssl:// broker"},
        {"key-file", CLI_STRING, &o->key_file, "client private key (PEM) for --cert-file"},
    };
    memcpy(out, options, sizeof options);
}

bool mqtt_link_flush(mqtt_link *l, int timeout_ms)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        MQTTAsync_token *tokens = NULL;
        if (MQTTAsync_getPendingTokens(l->client, &tokens) != MQTTASYNC_SUCCESS)
            return false;
        bool pending = tokens && tokens[0] != -1;
        MQTTAsync_free(tokens);
        if (!pending)
            return true;
        if (ms_since(&start) >= timeout_ms)
            return false;
        sleep_ms(5);
    }
}

void mqtt_link_close(mqtt_link *l)
{
    if (!l)
        return;
    mqtt_link_flush(l, 5000);
    MQTTAsync_disconnectOptions dopts = MQTTAsync_disconnectOptions_initializer;
    dopts.timeout = 2000;
    dopts.onSuccess = on_disconnect_done;
    dopts.onFailure = on_disconnect_failed;
    dopts.context = l;
    if (MQTTAsync_disconnect(l->client, &dopts) == MQTTASYNC_SUCCESS) {
        struct timespec until = deadline_after(3000);
        pthread_mutex_lock(&l->lock);
        while (!l->disconnected)
            if (pthread_cond_timedwait(&l->changed, &l->lock, &until) != 0)
                break;
        pthread_mutex_unlock(&l->lock);
    }
    MQTTAsync_destroy(&l->client);
    free(l->current);
    for (queued_message *q = l->head; q;) {
        queued_message *next = q->next;
        free(q);
        q = next;
    }
    pthread_cond_destroy(&l->changed);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

esgd_status mqtt_link_subscribe(mqtt_link *l, const char *filter, esgd_error *err)
{
    if (strlen(filter) >= FILTER_MAX)
        return esgd_error_set(err, ESGD_ERR_ARG, "mqtt: topic filter too long: %s", filter);
    pthread_mutex_lock(&l->lock);
    bool known = false;
    for (int i = 0; i < l->filter_count; i++)
        known = known || strcmp(l->filters[i], filter) == 0;
    if (!known && l->filter_count == MAX_FILTERS) {
        pthread_mutex_unlock(&l->lock);
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "mqtt: more than %d subscriptions", MAX_FILTERS);
    }
    if (!known)
        snprintf(l->filters[l->filter_count++], FILTER_MAX, "%s", filter);
    pthread_mutex_unlock(&l->lock);
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    int rc = MQTTAsync_subscribe(l->client, filter, 1, &ro);
    /* Not connected: on_connected subscribes when the link is back. */
    if (rc != MQTTASYNC_SUCCESS && rc != MQTTASYNC_DISCONNECTED)
        return esgd_error_set(err, ESGD_ERR_IO, "mqtt: subscribe %s failed (code %d)", filter, rc);
    return ESGD_OK;
}

esgd_status mqtt_link_unsubscribe(mqtt_link *l, const char *filter, esgd_error *err)
{
    pthread_mutex_lock(&l->lock);
    for (int i = 0; i < l->filter_count; i++) {
        if (strcmp(l->filters[i], filter) == 0) {
            memmove(l->filters[i], l->filters[i + 1], (size_t)(l->filter_count - i - 1) * FILTER_MAX);
            l->filter_count--;
            break;
        }
    }
    pthread_mutex_unlock(&l->lock);
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    int rc = MQTTAsync_unsubscribe(l->client, filter, &ro);
    if (rc != MQTTASYNC_SUCCESS && rc != MQTTASYNC_DISCONNECTED)
        return esgd_error_set(err, ESGD_ERR_IO, "mqtt: unsubscribe %s failed (code %d)", filter, rc);
    return ESGD_OK;
}

esgd_status mqtt_link_publish(mqtt_link *l, const char *topic, const void *data, size_t size, int qos,
                              bool retained, esgd_error *err)
{
    if (size > (size_t)256 << 20)
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "mqtt: payload of %zu bytes for %s is over 256 MiB", size,
                              topic);
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)data;
    m.payloadlen = (int)size;
    m.qos = qos;
    m.retained = retained ? 1 : 0;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    int rc = MQTTAsync_sendMessage(l->client, topic, &m, &ro);
    if (rc != MQTTASYNC_SUCCESS)
        return esgd_error_set(err, ESGD_ERR_IO, "mqtt: publish to %s failed (code %d%s)", topic, rc,
                              rc == MQTTASYNC_MAX_BUFFERED_MESSAGES ? ", offline buffer full" : "");
    pthread_mutex_lock(&l->lock);
    l->counters.published++;
    l->counters.published_bytes += size;
    pthread_mutex_unlock(&l->lock);
    return ESGD_OK;
}

bool mqtt_link_next(mqtt_link *l, int timeout_ms, mqtt_message *msg)
{
    free(l->current);
    l->current = NULL;
    struct timespec until = deadline_after(timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&l->lock);
    while (!l->head && timeout_ms > 0)
        if (pthread_cond_timedwait(&l->changed, &l->lock, &until) != 0)
            break;
    queued_message *q = l->head;
    if (q) {
        l->head = q->next;
        if (!l->head)
            l->tail = NULL;
        l->queued_bytes -= q->size;
    }
    pthread_mutex_unlock(&l->lock);
    if (!q)
        return false;
    l->current = q;
    msg->topic = q->topic;
    msg->data = q->data;
    msg->size = q->size;
    msg->retained = q->retained;
    return true;
}

bool mqtt_link_connected(mqtt_link *l)
{
    pthread_mutex_lock(&l->lock);
    bool c = l->connected;
    pthread_mutex_unlock(&l->lock);
    return c;
}

mqtt_link_counters mqtt_link_get_counters(mqtt_link *l)
{
    pthread_mutex_lock(&l->lock);
    mqtt_link_counters c = l->counters;
    pthread_mutex_unlock(&l->lock);
    return c;
}
