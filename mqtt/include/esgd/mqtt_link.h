/* A connection to the broker for the agent, the coordinator and esgd-watch,
 * on Eclipse Paho's asynchronous client. The library's threads only queue
 * what arrives; the program's one thread takes messages with
 * mqtt_link_next, computes, and publishes, so no training state is ever
 * touched from a callback.
 *
 * After a lost connection a thread of the link connects again (1 s, doubling
 * to 16 s between attempts), logging the loss, each failed attempt's reason
 * (at most once a minute) and the reconnection. The session is persistent
 * (the broker keeps our subscriptions and QoS 1 messages while we are away);
 * on every reconnection the link subscribes again to the filters wanted, in
 * case the broker lost the session, and unsubscribes again from the ones
 * removed, in case an UNSUBSCRIBE made while the link was down never reached
 * it. Publishes made while disconnected are buffered and sent after
 * reconnecting. Every timed wait is on the monotonic clock.
 *
 *   mqtt_link *l = mqtt_link_open(&options, &err);
 *   mqtt_link_subscribe(l, "esgd/mnist/config", &err);
 *   while (mqtt_link_next(l, 1000, &msg)) ... mqtt_link_publish(l, ...);
 *   mqtt_link_close(l);
 */
#ifndef ESGD_MQTT_LINK_H
#define ESGD_MQTT_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/error.h"

typedef struct mqtt_link_options {
    const char *broker_url;        /* tcp://host:port, or ssl://host:port */
    const char *client_id;         /* stable per program instance */
    int keepalive_seconds;         /* 0: 20 */
    uint32_t connect_timeout_seconds; /* mqtt_link_open waits this long for the first connection; 0: 10 */
    /* Last Will, published retained at QoS 1 by the broker if we vanish. */
    const char *will_topic;        /* NULL: none */
    const void *will_payload;
    size_t will_size;
    const char *username, *password; /* NULL: none */
    const char *password_file;     /* read the password from this file's first line instead */
    const char *ca_file;           /* ssl://: CA bundle to verify the broker; NULL: system default */
    const char *cert_file;         /* ssl://: client certificate (PEM), for brokers that require one */
    const char *key_file;          /* ssl://: its private key (PEM); NULL: in cert_file */
    /* Incoming messages waiting for mqtt_link_next; 0: 256 MiB. Past it QoS 0
     * messages are dropped (counted in dropped), QoS 1 and 2 ones are still
     * queued (counted in over_limit): Paho acknowledges a message to the
     * broker when it arrives, before handing it to the link, so one dropped
     * here would be lost for good. */
    size_t max_queued_bytes;
    /* false (the programs): a persistent session, the broker keeps QoS 1
     * messages while we are away. true (a monitor): nothing is kept, and a
     * broker that makes the user name the client id cannot hand one
     * monitor's queued messages to the next. */
    bool clean_session;
} mqtt_link_options;

/* The same settings as command-line options: mqtt_link_cli.h. */

typedef struct mqtt_message {
    const char *topic;   /* NUL-terminated */
    const uint8_t *data;
    size_t size;
    bool retained;
} mqtt_message;

typedef struct mqtt_link_counters {
    uint64_t received, received_bytes;   /* payloads that arrived */
    uint64_t published, published_bytes; /* payloads handed to the library */
    uint64_t dropped;                    /* QoS 0 payloads that arrived while the queue was full */
    uint64_t over_limit;                 /* QoS 1/2 payloads queued past max_queued_bytes (never dropped) */
    uint64_t connects;                   /* successful connections, first included */
    uint64_t reconnects;                 /* successful connections after a loss */
    uint64_t disconnects;                /* connections lost (not counting mqtt_link_close) */
    double disconnected_seconds;         /* time spent reconnecting after losses, the current outage included */
    uint64_t client_resets;              /* MQTT library clients replaced after repeated instant losses */
} mqtt_link_counters;

typedef struct mqtt_link mqtt_link;

/* Connects, waiting up to connect_timeout_seconds for the first CONNACK.
 * Errors: ESGD_ERR_ARG (bad URL or options, TLS files given for a tcp://
 * URL), ESGD_ERR_IO (broker not reachable in time, with the reason; an
 * unreadable password file or TLS file). */
mqtt_link *mqtt_link_open(const mqtt_link_options *options, esgd_error *err);
/* The first line of a password file (--password-file), without its newline,
 * into out (cap bytes). ESGD_ERR_IO: unreadable or empty. */
esgd_status mqtt_read_password(const char *path, char *out, size_t cap, esgd_error *err);

/* Waits up to 5 s for in-flight publishes, disconnects cleanly (no Will) and frees. NULL is a no-op. */
void mqtt_link_close(mqtt_link *link);

/* Adds a topic filter (QoS 1) to the set wanted, and subscribes now if
 * connected, else on reconnection. Retained messages arrive like any other.
 * Errors: ESGD_ERR_ARG (filter of 256 bytes or more), ESGD_ERR_TOO_LARGE
 * (more than 32 filters subscribed or unsubscribed over the link's life),
 * ESGD_ERR_IO (Paho refused the request). */
esgd_status mqtt_link_subscribe(mqtt_link *link, const char *filter, esgd_error *err);
/* Removes a filter from the set wanted and unsubscribes now if connected;
 * the UNSUBSCRIBE is sent again on every reconnection. Errors as above. */
esgd_status mqtt_link_unsubscribe(mqtt_link *link, const char *filter, esgd_error *err);

/* Copies the payload into the library's queue; with the link down it is
 * buffered (up to 10000 messages, then ESGD_ERR_IO) and sent on
 * reconnection. qos 0 or 1. An empty retained payload clears a retained
 * message. Not kept across a restart of this process (Paho runs without
 * persistence). */
esgd_status mqtt_link_publish(mqtt_link *link, const char *topic, const void *data, size_t size, int qos,
                              bool retained, esgd_error *err);

/* Takes the oldest arrived message, waiting up to timeout_ms (0: do not
 * wait). *msg stays valid until the next call. False on timeout. */
bool mqtt_link_next(mqtt_link *link, int timeout_ms, mqtt_message *msg);

/* Waits up to timeout_ms until every publish so far has been acknowledged
 * (QoS 1) or written (QoS 0), including those buffered while the link is
 * down, which needs it to reconnect within the time. False on timeout. */
bool mqtt_link_flush(mqtt_link *link, int timeout_ms);

/* Connected, with the subscriptions sent again after a reconnection. */
bool mqtt_link_connected(mqtt_link *link);
/* A consistent snapshot; safe from any thread (e.g. a metrics server's). */
mqtt_link_counters mqtt_link_get_counters(mqtt_link *link);

#endif
