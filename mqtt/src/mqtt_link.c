/* The broker link's connection: Paho's asynchronous client underneath,
 * opened with the program's options, connected again after every loss, and
 * closed. Paho runs callbacks on its own threads; the ones here only record
 * connection events, under the link's lock, for the program's thread and the
 * reconnecting one. What goes over the connection (the queue of arrived
 * messages, publishing, topic filters) is mqtt_link_messages.c's.
 *
 * The link reconnects by itself (reconnect_loop) instead of using Paho's
 * automatic reconnect, which in Paho 1.3 reports neither why an attempt
 * failed nor that one was made. Every timed wait is on CLOCK_MONOTONIC: a
 * deadline on the wall clock is frozen or cut short when the clock is
 * stepped (NTP at boot on a gateway), and with it the program's loop and
 * its response to SIGTERM. */
#include "esgd/mqtt_link.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/runtime.h"
#include "mqtt_link_impl.h"

#define CONNECT_WAIT_MS 6000    /* Paho gives up on a connect after co.connectTimeout = 5 s */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 16000
/* A connection lost within QUICK_LOSS_S of its CONNACK, QUICK_LOSSES_MAX
 * times in a row, makes the link replace its Paho client (reset_client).
 * 0.5 s was too short: on a loaded 2-core machine under ASan mosquitto took
 * longer than that to read the corrupt packet and drop the client, so the
 * loop went on for good. A healthy link stays up far longer than 5 s, and a
 * needless reset only costs a republish. */
#define QUICK_LOSS_S 5.0
#define QUICK_LOSSES_MAX 2

/* ---- time ---- */

struct timespec link_deadline_after(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* A condition variable whose timed waits take CLOCK_MONOTONIC deadlines. */
static void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* relative, so a wall-clock step does not affect it */
}

/* ---- callbacks (Paho's threads) ---- */

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

static void on_connection_lost(void *context, char *cause)
{
    mqtt_link *l = context;
    double now = monotonic_seconds(), up = 0;
    pthread_mutex_lock(&l->lock);
    l->counters.disconnects++;
    if (now - l->connack_at < QUICK_LOSS_S)
        l->quick_losses++;
    else
        l->quick_losses = 0;
    if (l->connected) {
        l->connected = false;
        l->down_since = now;
        up = now - l->up_since;
    }
    pthread_cond_broadcast(&l->state);
    pthread_mutex_unlock(&l->lock);
    /* Paho 1.3 always passes NULL here; the failed attempts that follow say more. */
    log_warn("mqtt: connection to %s lost after %.1f s (%s); reconnecting", l->url, up,
             cause && *cause ? cause : "the MQTT library gives no reason");
}

static void on_connect_success(void *context, MQTTAsync_successData *response)
{
    (void)response;
    mqtt_link *l = context;
    double now = monotonic_seconds();
    pthread_mutex_lock(&l->lock);
    l->connect_result = 1;
    l->connack_at = now;
    pthread_cond_broadcast(&l->state);
    pthread_mutex_unlock(&l->lock);
}

/* The CONNACK return codes of MQTT 3.1.1, which Paho passes as the code. */
static const char *connack_reason(int code)
{
    static const char *const reasons[] = {
        NULL, "unacceptable protocol version", "client identifier rejected", "server unavailable",
        "bad user name or password", "not authorized",
    };
    return code >= 1 && code <= 5 ? reasons[code] : NULL;
}

static void on_connect_failure(void *context, MQTTAsync_failureData *response)
{
    mqtt_link *l = context;
    int code = response ? response->code : 0;
    const char *why = connack_reason(code);
    if (!why)
        why = response && response->message ? response->message : "connection refused or unreachable";
    pthread_mutex_lock(&l->lock);
    l->connect_result = -1;
    snprintf(l->connect_failure, sizeof l->connect_failure, "%s (code %d)", why, code);
    pthread_cond_broadcast(&l->state);
    pthread_mutex_unlock(&l->lock);
}

static void on_disconnect_done(void *context, MQTTAsync_successData *response)
{
    (void)response;
    mqtt_link *l = context;
    pthread_mutex_lock(&l->lock);
    l->disconnected = true;
    pthread_cond_broadcast(&l->state);
    pthread_mutex_unlock(&l->lock);
}

static void on_disconnect_failed(void *context, MQTTAsync_failureData *response)
{
    (void)response;
    on_disconnect_done(context, NULL);
}

/* ---- connecting (the opening thread, then the reconnecting thread) ---- */

/* One connection attempt; waits for its outcome, the reason of a failure in
 * l->connect_failure. */
static bool try_connect(mqtt_link *l)
{
    pthread_mutex_lock(&l->lock);
    l->connect_result = 0;
    pthread_mutex_unlock(&l->lock);
    pthread_rwlock_rdlock(&l->client_lock);
    int rc = MQTTAsync_connect(l->client, &l->co);
    pthread_rwlock_unlock(&l->client_lock);
    pthread_mutex_lock(&l->lock);
    if (rc != MQTTASYNC_SUCCESS) {
        snprintf(l->connect_failure, sizeof l->connect_failure, "connect call failed: %s (code %d)",
                 MQTTAsync_strerror(rc), rc);
        l->connect_result = -1;
    }
    struct timespec until = link_deadline_after(CONNECT_WAIT_MS);
    while (l->connect_result == 0 && !l->closing)
        if (pthread_cond_timedwait(&l->state, &l->lock, &until) != 0)
            break;
    if (l->connect_result == 0)
        snprintf(l->connect_failure, sizeof l->connect_failure, "%s",
                 l->closing ? "closing" : "no answer from the broker in time");
    bool ok = l->connect_result == 1;
    pthread_mutex_unlock(&l->lock);
    if (ok)
        disable_nagle();
    return ok;
}

/* Waits up to ms unless the link is closing; returns with l->lock held. */
static void wait_unless_closing(mqtt_link *l, long ms)
{
    struct timespec until = link_deadline_after(ms);
    while (!l->closing)
        if (pthread_cond_timedwait(&l->state, &l->lock, &until) != 0)
            break;
}

/* One attempt; on success sends the subscriptions again and only then
 * reports the link connected, so that what the program publishes after
 * seeing it connected follows the re-sent (un)subscriptions. False also when
 * the new connection was lost meanwhile (then connect_result is 1). *down:
 * how long the link was down, for a reconnection. */
static bool connect_and_resubscribe(mqtt_link *l, double *down)
{
    pthread_mutex_lock(&l->lock);
    uint64_t losses = l->counters.disconnects;
    pthread_mutex_unlock(&l->lock);
    if (!try_connect(l))
        return false;
    link_resend_filters(l);
    pthread_mutex_lock(&l->lock);
    bool ok = l->counters.disconnects == losses;
    if (ok) {
        double now = monotonic_seconds();
        *down = l->counters.connects ? now - l->down_since : 0;
        if (l->counters.connects) {
            l->counters.reconnects++;
            l->counters.disconnected_seconds += *down;
        }
        l->counters.connects++;
        l->connected = true;
        l->up_since = now;
        pthread_cond_broadcast(&l->state);
    }
    pthread_mutex_unlock(&l->lock);
    return ok;
}

/* Replaces Paho's client by a fresh one with the same options. Seen with
 * Paho 1.3.12 after the broker was killed while the coordinator had ~400 KB
 * QoS 1 publishes in flight and buffered: on every later connection the
 * client sent something mosquitto rejects at once ("disconnected due to
 * malformed packet"), so the link never came back. Paho's state for the
 * old session (in-flight and buffered publishes) is what it keeps across
 * connections, so a fresh client drops it; the program publishes what
 * matters again after a reconnection (the coordinator its configuration
 * and model, the agents their answers when they see the model again).
 * Only on the reconnecting thread, with no lock of the link held. */
static void reset_client(mqtt_link *l, unsigned losses)
{
    MQTTAsync fresh = NULL;
    int rc = MQTTAsync_createWithOptions(&fresh, l->url, l->client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &l->cro);
    if (rc != MQTTASYNC_SUCCESS) {
        log_warn("mqtt: cannot make a fresh MQTT client for %s (code %d); keeping the old one", l->url, rc);
        return;
    }
    MQTTAsync_setCallbacks(fresh, l, on_connection_lost, link_on_message, NULL);
    pthread_rwlock_wrlock(&l->client_lock);
    MQTTAsync old = l->client;
    l->client = fresh;
    pthread_rwlock_unlock(&l->client_lock);
    /* Nobody else can reach the old client any more: every other use
     * fetches l->client under client_lock. */
    MQTTAsync_destroy(&old);
    pthread_mutex_lock(&l->lock);
    l->counters.client_resets++;
    l->quick_losses = 0;
    uint64_t resets = l->counters.client_resets;
    pthread_mutex_unlock(&l->lock);
    log_warn("mqtt: the connection to %s was lost right after connecting %u times in a row; replaced the MQTT "
             "client (reset %llu), dropping what it had in flight or buffered, which the program sends again",
             l->url, losses, (unsigned long long)resets);
}

/* The reconnecting thread: after a loss, waits (1 s, doubling to 16 s after
 * each failure) and connects again. */
static void *reconnect_loop(void *arg)
{
    mqtt_link *l = arg;
    long backoff_ms = BACKOFF_MIN_MS;
    unsigned failures = 0;
    pthread_mutex_lock(&l->lock);
    while (!l->closing) {
        if (l->connected) {
            pthread_cond_wait(&l->state, &l->lock);
            continue;
        }
        wait_unless_closing(l, backoff_ms);
        if (l->closing)
            break;
        unsigned quick = l->quick_losses;
        pthread_mutex_unlock(&l->lock);
        if (quick >= QUICK_LOSSES_MAX)
            reset_client(l, quick);
        double down = 0;
        bool ok = connect_and_resubscribe(l, &down);
        if (ok) {
            log_info("mqtt: reconnected to %s after %.1f s and %u failed attempts", l->url, down, failures);
            failures = 0;
            backoff_ms = BACKOFF_MIN_MS;
        }
        pthread_mutex_lock(&l->lock);
        if (!ok && l->connect_result != 1 && !l->closing) {
            /* (connect_result 1: connected but lost again at once, which
             * on_connection_lost has logged; the loop tries again.) */
            char why[sizeof l->connect_failure];
            snprintf(why, sizeof why, "%s", l->connect_failure);
            failures++;
            pthread_mutex_unlock(&l->lock);
            log_warn_limited(&l->reconnect_failures, "mqtt: reconnecting to %s failed: %s", l->url, why);
            pthread_mutex_lock(&l->lock);
            backoff_ms = backoff_ms * 2 < BACKOFF_MAX_MS ? backoff_ms * 2 : BACKOFF_MAX_MS;
        }
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

/* ---- opening and closing ---- */

esgd_status mqtt_read_password(const char *path, char *out, size_t cap, esgd_error *err)
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

/* strdup that keeps NULL, setting *failed when out of memory. */
static char *copy(const char *s, bool *failed)
{
    if (!s)
        return NULL;
    char *c = strdup(s);
    *failed = *failed || !c;
    return c;
}

/* Frees the link after its client, if any, was destroyed or never made. */
static void link_free(mqtt_link *l)
{
    link_queue_free(l);
    if (l->password)
        memset(l->password, 0, strlen(l->password));
    free(l->url);
    free(l->client_id);
    free(l->username);
    free(l->password);
    free(l->will_topic);
    free(l->will_payload);
    free(l->ca_file);
    free(l->cert_file);
    free(l->key_file);
    pthread_cond_destroy(&l->arrived);
    pthread_cond_destroy(&l->state);
    pthread_mutex_destroy(&l->lock);
    pthread_mutex_destroy(&l->sub_lock);
    pthread_rwlock_destroy(&l->client_lock);
    free(l);
}

/* Paho initialises OpenSSL (library, error strings, configuration, every
 * algorithm) when the first client is made, which touches about 3 MB of
 * libcrypto: more than a gateway's model. A process whose broker is not
 * TLS has Paho leave it alone; OpenSSL 1.1 and later initialise
 * themselves anyway when a TLS connection is made. */
static void openssl_init_once(const char *url)
{
    static bool done;
    if (done)
        return;
    done = true;
    bool tls = url && (strncmp(url, "ssl://", 6) == 0 || strncmp(url, "mqtts://", 8) == 0 ||
                       strncmp(url, "wss://", 6) == 0);
    MQTTAsync_init_options inits = MQTTAsync_init_options_initializer;
    inits.do_openssl_init = tls;
    MQTTAsync_global_init(&inits);
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
        if (mqtt_read_password(o->password_file, password, sizeof password, err) != ESGD_OK)
            return NULL;
        use_password = password;
    }
    mqtt_link *l = calloc(1, sizeof *l);
    if (!l) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "mqtt: out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->lock, NULL);
    pthread_mutex_init(&l->sub_lock, NULL);
    pthread_rwlock_init(&l->client_lock, NULL);
    cond_init_monotonic(&l->arrived);
    cond_init_monotonic(&l->state);
    l->max_queued_bytes = o->max_queued_bytes ? o->max_queued_bytes : (size_t)256 << 20;
    l->reconnect_failures = (log_limiter)LOG_LIMITER(60);
    bool nomem = false;
    l->url = copy(o->broker_url, &nomem);
    l->client_id = copy(o->client_id, &nomem);
    l->username = copy(o->username, &nomem);
    l->password = copy(use_password, &nomem);
    memset(password, 0, sizeof password);
    l->will_topic = copy(o->will_topic, &nomem);
    l->ca_file = copy(o->ca_file, &nomem);
    l->cert_file = copy(o->cert_file, &nomem);
    l->key_file = copy(o->key_file, &nomem);
    if (o->will_topic && o->will_size) {
        l->will_payload = malloc(o->will_size);
        nomem = nomem || !l->will_payload;
        if (l->will_payload)
            memcpy(l->will_payload, o->will_payload, o->will_size);
    }
    if (nomem) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "mqtt: out of memory");
        link_free(l);
        return NULL;
    }

    openssl_init_once(o->broker_url);
    MQTTAsync_createOptions cro = MQTTAsync_createOptions_initializer;
    cro.sendWhileDisconnected = 1; /* buffer publishes while reconnecting */
    cro.maxBufferedMessages = 10000;
    /* Buffer also before a client's first connection: a client made by
     * reset_client is handed to the program before it has connected. */
    cro.allowDisconnectedSendAtAnyTime = 1;
    l->cro = cro;
    int rc = MQTTAsync_createWithOptions(&l->client, o->broker_url, o->client_id, MQTTCLIENT_PERSISTENCE_NONE,
                                         NULL, &l->cro);
    if (rc != MQTTASYNC_SUCCESS) {
        esgd_error_set(err, ESGD_ERR_ARG, "mqtt: cannot use broker URL '%s' (code %d; expected tcp://host:port)",
                       o->broker_url, rc);
        link_free(l);
        return NULL;
    }
    MQTTAsync_setCallbacks(l->client, l, on_connection_lost, link_on_message, NULL);

    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = o->keepalive_seconds > 0 ? o->keepalive_seconds : 20;
    /* A persistent session: the broker keeps QoS 1 messages for us while we
     * are away, so a short outage loses no update and no model. */
    co.cleansession = o->clean_session ? 1 : 0;
    co.automaticReconnect = 0; /* reconnect_loop does it */
    co.connectTimeout = 5;
    co.onSuccess = on_connect_success;
    co.onFailure = on_connect_failure;
    co.context = l;
    co.username = l->username;
    co.password = l->password;
    if (l->will_topic) {
        MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
        l->will = will;
        l->will.topicName = l->will_topic;
        l->will.payload.data = l->will_payload;
        l->will.payload.len = (int)o->will_size;
        l->will.retained = 1;
        l->will.qos = 1;
        co.will = &l->will;
    }
    if (tls) {
        MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
        l->ssl = ssl;
        l->ssl.trustStore = l->ca_file;
        l->ssl.keyStore = l->cert_file;
        l->ssl.privateKey = l->key_file;
        l->ssl.enableServerCertAuth = 1;
        co.ssl = &l->ssl;
    }
    l->co = co;

    /* The broker may come up after us (boot order on a gateway): retry the
     * first connection until the timeout; afterwards reconnect_loop does. */
    long timeout_ms = (o->connect_timeout_seconds > 0 ? (long)o->connect_timeout_seconds : 10) * 1000;
    double start = monotonic_seconds();
    for (;;) {
        double down;
        if (connect_and_resubscribe(l, &down)) {
            rc = pthread_create(&l->reconnector, NULL, reconnect_loop, l);
            if (rc == 0) {
                l->reconnector_started = true;
                return l;
            }
            esgd_error_set(err, ESGD_ERR_IO, "mqtt: cannot start the reconnecting thread: %s", strerror(rc));
            MQTTAsync_disconnectOptions dopts = MQTTAsync_disconnectOptions_initializer;
            MQTTAsync_disconnect(l->client, &dopts);
            break;
        }
        if ((monotonic_seconds() - start) * 1000 >= (double)timeout_ms) {
            esgd_error_set(err, ESGD_ERR_IO, "mqtt: cannot connect to %s within %ld s: %s", o->broker_url,
                           timeout_ms / 1000, l->connect_failure);
            break;
        }
        sleep_ms(500);
    }
    MQTTAsync_destroy(&l->client);
    link_free(l);
    return NULL;
}

bool mqtt_link_flush(mqtt_link *l, int timeout_ms)
{
    double start = monotonic_seconds();
    for (;;) {
        MQTTAsync_token *tokens = NULL;
        pthread_rwlock_rdlock(&l->client_lock);
        int rc = MQTTAsync_getPendingTokens(l->client, &tokens);
        pthread_rwlock_unlock(&l->client_lock);
        if (rc != MQTTASYNC_SUCCESS)
            return false;
        bool pending = tokens && tokens[0] != -1;
        MQTTAsync_free(tokens);
        if (!pending)
            return true;
        if ((monotonic_seconds() - start) * 1000 >= timeout_ms)
            return false;
        sleep_ms(5);
    }
}

void mqtt_link_close(mqtt_link *l)
{
    if (!l)
        return;
    /* Before stopping the reconnecting thread, so that a link that is down
     * can still come back and deliver what was buffered. */
    mqtt_link_flush(l, 5000);
    pthread_mutex_lock(&l->lock);
    l->closing = true;
    pthread_cond_broadcast(&l->state);
    pthread_mutex_unlock(&l->lock);
    if (l->reconnector_started)
        pthread_join(l->reconnector, NULL);
    MQTTAsync_disconnectOptions dopts = MQTTAsync_disconnectOptions_initializer;
    dopts.timeout = 2000;
    dopts.onSuccess = on_disconnect_done;
    dopts.onFailure = on_disconnect_failed;
    dopts.context = l;
    if (MQTTAsync_disconnect(l->client, &dopts) == MQTTASYNC_SUCCESS) {
        struct timespec until = link_deadline_after(3000);
        pthread_mutex_lock(&l->lock);
        while (!l->disconnected)
            if (pthread_cond_timedwait(&l->state, &l->lock, &until) != 0)
                break;
        pthread_mutex_unlock(&l->lock);
    }
    MQTTAsync_destroy(&l->client);
    link_free(l);
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
    double now = monotonic_seconds();
    pthread_mutex_lock(&l->lock);
    mqtt_link_counters c = l->counters;
    if (!l->connected)
        c.disconnected_seconds += now - l->down_since;
    pthread_mutex_unlock(&l->lock);
    return c;
}
