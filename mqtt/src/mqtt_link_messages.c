/* What goes over the broker link (mqtt_link.h): the queue of arrived
 * messages, filled on Paho's callback threads and emptied on the program's
 * thread by mqtt_link_next; publishing; and the topic filters wanted or
 * removed, which the connection sends again on every reconnection. The
 * connection itself is mqtt_link.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt_link_impl.h"

/* ---- arrived messages (Paho's threads in, the program's thread out) ---- */

int link_on_message(void *context, char *topic, int topic_len, MQTTAsync_message *m)
{
    mqtt_link *l = context;
    size_t tlen = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    size_t size = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
    pthread_mutex_lock(&l->lock);
    bool full = l->queued_bytes + size > l->max_queued_bytes;
    /* Paho has already sent the PUBACK for a QoS 1 message when it calls
     * this, so one not queued here is lost for good. Returning 0 would not
     * help: Paho only parks the message at the head of its own queue, goes
     * on reading (so memory is not bounded either) and offers it again when
     * the next packet arrives, up to a keepalive interval later on a quiet
     * link. Nor does waiting here for room: this runs holding Paho's lock,
     * so every QoS 1 publish of the program stalls until it returns. So
     * only QoS 0 messages are dropped on a full queue. */
    if (full && m->qos == 0) {
        l->counters.received++;
        l->counters.received_bytes += size;
        l->counters.dropped++;
        pthread_mutex_unlock(&l->lock);
        MQTTAsync_freeMessage(&m);
        MQTTAsync_free(topic);
        return 1;
    }
    queued_message *q = malloc(sizeof *q + size + tlen + 1);
    if (!q) {
        /* Out of memory: this is what returning 0 is for; Paho keeps the
         * message and offers it again later. */
        pthread_mutex_unlock(&l->lock);
        return 0;
    }
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
    l->counters.received++;
    l->counters.received_bytes += size;
    if (full)
        l->counters.over_limit++;
    pthread_cond_broadcast(&l->arrived);
    pthread_mutex_unlock(&l->lock);
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

void link_queue_free(mqtt_link *l)
{
    free(l->current);
    for (queued_message *q = l->head; q;) {
        queued_message *next = q->next;
        free(q);
        q = next;
    }
}

bool mqtt_link_next(mqtt_link *l, int timeout_ms, mqtt_message *msg)
{
    free(l->current);
    l->current = NULL;
    struct timespec until = link_deadline_after(timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&l->lock);
    while (!l->head && timeout_ms > 0)
        if (pthread_cond_timedwait(&l->arrived, &l->lock, &until) != 0)
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

/* ---- subscriptions and publishing (the program's thread) ---- */

/* Sends the filter's SUBSCRIBE or UNSUBSCRIBE. While the link is down Paho
 * refuses it (MQTTASYNC_DISCONNECTED) and the reconnection sends it. */
static int send_filter(mqtt_link *l, const link_filter *f)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    pthread_rwlock_rdlock(&l->client_lock);
    int rc = f->wanted ? MQTTAsync_subscribe(l->client, f->name, 1, &ro)
                       : MQTTAsync_unsubscribe(l->client, f->name, &ro);
    pthread_rwlock_unlock(&l->client_lock);
    return rc;
}

void link_resend_filters(mqtt_link *l)
{
    pthread_mutex_lock(&l->sub_lock);
    for (int i = 0; i < l->filter_count; i++)
        send_filter(l, &l->filters[i]);
    pthread_mutex_unlock(&l->sub_lock);
}

static esgd_status set_filter(mqtt_link *l, const char *name, bool wanted, esgd_error *err)
{
    const char *verb = wanted ? "subscribe" : "unsubscribe";
    if (strlen(name) >= FILTER_MAX)
        return esgd_error_set(err, ESGD_ERR_ARG, "mqtt: cannot %s: topic filter of %zu bytes (at most %d): %s", verb,
                              strlen(name), FILTER_MAX - 1, name);
    pthread_mutex_lock(&l->sub_lock);
    int i = 0;
    while (i < l->filter_count && strcmp(l->filters[i].name, name) != 0)
        i++;
    if (i == MAX_FILTERS) {
        pthread_mutex_unlock(&l->sub_lock);
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "mqtt: cannot %s %s: the link keeps at most %d topic filters",
                              verb, name, MAX_FILTERS);
    }
    if (i == l->filter_count) {
        snprintf(l->filters[i].name, FILTER_MAX, "%s", name);
        l->filter_count++;
    }
    l->filters[i].wanted = wanted;
    int rc = send_filter(l, &l->filters[i]);
    pthread_mutex_unlock(&l->sub_lock);
    if (rc != MQTTASYNC_SUCCESS && rc != MQTTASYNC_DISCONNECTED)
        return esgd_error_set(err, ESGD_ERR_IO, "mqtt: %s %s failed: %s (code %d)", verb, name,
                              MQTTAsync_strerror(rc), rc);
    return ESGD_OK;
}

esgd_status mqtt_link_subscribe(mqtt_link *l, const char *filter, esgd_error *err)
{
    return set_filter(l, filter, true, err);
}

esgd_status mqtt_link_unsubscribe(mqtt_link *l, const char *filter, esgd_error *err)
{
    return set_filter(l, filter, false, err);
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
    pthread_rwlock_rdlock(&l->client_lock);
    int rc = MQTTAsync_sendMessage(l->client, topic, &m, &ro);
    pthread_rwlock_unlock(&l->client_lock);
    if (rc != MQTTASYNC_SUCCESS)
        return esgd_error_set(err, ESGD_ERR_IO, "mqtt: publish to %s failed: %s (code %d%s)", topic,
                              MQTTAsync_strerror(rc), rc,
                              rc == MQTTASYNC_MAX_BUFFERED_MESSAGES ? ", offline buffer full" : "");
    pthread_mutex_lock(&l->lock);
    l->counters.published++;
    l->counters.published_bytes += size;
    pthread_mutex_unlock(&l->lock);
    return ESGD_OK;
}
