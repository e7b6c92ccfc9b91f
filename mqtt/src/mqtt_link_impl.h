/* Inside the broker link (mqtt_link.h), shared by its two files: the link's
 * state and locks, and the few functions one file calls in the other.
 * mqtt_link.c owns the connection (opening, reconnecting, closing);
 * mqtt_link_messages.c what goes over it (the queue of arrived messages,
 * publishing, the topic filters). Internal to mqtt/src. */
#ifndef ESGD_MQTT_LINK_IMPL_H
#define ESGD_MQTT_LINK_IMPL_H

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "esgd/log.h"
#include "esgd/mqtt_link.h"

#define MAX_FILTERS 32
#define FILTER_MAX 256

typedef struct queued_message {
    struct queued_message *next;
    size_t size;
    bool retained;
    char *topic;    /* points into the same allocation, after the payload */
    uint8_t data[]; /* payload, then the NUL-terminated topic */
} queued_message;

typedef struct link_filter {
    char name[FILTER_MAX];
    bool wanted;    /* false: removed, UNSUBSCRIBE sent again on every connection */
} link_filter;

struct mqtt_link {
    /* Paho's client. The reconnecting thread may replace it (reset_client),
     * so every other use holds client_lock for reading. client_lock is never
     * taken in a Paho callback, nor with l->lock held: a thread holding it
     * may be waiting for Paho's lock, held by a callback waiting for
     * l->lock. */
    MQTTAsync client;
    pthread_rwlock_t client_lock;
    char *client_id;
    MQTTAsync_createOptions cro;
    /* What each connection attempt needs, owned here because the link
     * connects again after every loss (Paho copies it on each connect). */
    char *url, *username, *password, *will_topic, *ca_file, *cert_file, *key_file;
    void *will_payload;
    MQTTAsync_connectOptions co;
    MQTTAsync_willOptions will;
    MQTTAsync_SSLOptions ssl;

    pthread_mutex_t lock;       /* everything below up to the filters */
    pthread_cond_t arrived;     /* the queue grew */
    pthread_cond_t state;       /* a connect finished, the connection was lost, closing began */

    queued_message *head, *tail;
    size_t queued_bytes, max_queued_bytes;
    queued_message *current;    /* handed out by mqtt_link_next, freed on the next call */

    bool connected;             /* and the subscriptions sent again */
    bool closing;
    int connect_result;         /* of the attempt in progress: 0 pending, 1 ok, -1 failed */
    char connect_failure[200];
    double up_since, down_since; /* monotonic seconds */
    double connack_at;          /* monotonic seconds of the last CONNACK */
    unsigned quick_losses;      /* connections lost within QUICK_LOSS_S of their CONNACK, in a row */
    bool disconnected;          /* mqtt_link_close: disconnect finished */
    mqtt_link_counters counters;
    pthread_t reconnector;
    bool reconnector_started;
    log_limiter reconnect_failures;

    /* The subscriptions. Wanted filters are subscribed again on every
     * connection (the broker may have lost the session); removed ones are
     * unsubscribed again, because the session is persistent: an UNSUBSCRIBE
     * made while the link was down never reached the broker, which would go
     * on sending. sub_lock orders the program's changes against that
     * re-sending; it is only taken on the program's and the reconnecting
     * thread, never in a Paho callback, which runs holding Paho's lock and
     * would deadlock against a thread calling Paho with sub_lock held. */
    pthread_mutex_t sub_lock;
    link_filter filters[MAX_FILTERS];
    int filter_count;
};

/* The CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait on the
 * link's condition variables (made with that clock: a deadline on the wall
 * clock is frozen or cut short when the clock is stepped). */
struct timespec link_deadline_after(long ms);

/* Paho's message-arrived callback: queues a copy for mqtt_link_next. */
int link_on_message(void *context, char *topic, int topic_len, MQTTAsync_message *m);
/* Frees the queued messages and the one mqtt_link_next last handed out. */
void link_queue_free(mqtt_link *l);
/* Sends every filter's SUBSCRIBE or UNSUBSCRIBE again (after a connect). */
void link_resend_filters(mqtt_link *l);

#endif
