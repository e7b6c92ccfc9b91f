/* The coordinator's lease on its job (see lease.h). */
#define _DEFAULT_SOURCE /* realpath */
#include "lease.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "esgd/log.h"
#include "esgd/runtime.h"

/* Long enough for a live holder's link to reconnect (1 s back-off, then
 * the connection) and take its session back. */
#define HOLDER_CHECK_SECONDS 6.0
/* How long the retained lease may take to arrive after subscribing. */
#define RETAINED_WAIT_SECONDS 1.0

static esgd_status encode_signed(const lease_msg *m, const signing_key *key, uint8_t *out, size_t *size,
                                 esgd_error *err)
{
    esgd_buffer buf = {out, 0, LEASE_BYTES_MAX};
    esgd_status st = codec_encode_lease(&buf, m, err);
    if (st == ESGD_OK)
        st = envelope_sign(&buf, key, err);
    *size = buf.size;
    return st;
}

esgd_status lease_init(job_lease *l, const char *job, uint64_t run, uint32_t generation, const char *state_dir,
                       const signing_key *key, esgd_error *err)
{
    memset(l, 0, sizeof *l);
    topic_lease(l->topic, job);
    memcpy(l->coordinator.bytes, key->secret + 32, sizeof l->coordinator.bytes);
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    char dir[4096] = "-";
    if (state_dir && !realpath(state_dir, dir))
        snprintf(dir, sizeof dir, "%s", state_dir);
    lease_msg *m = &l->own;
    snprintf(m->job, sizeof m->job, "%s", job);
    m->run = run;
    m->generation = generation;
    int n = snprintf(m->holder, sizeof m->holder, "%s pid %ld state %s", host, (long)getpid(), dir);
    if (n < 0 || (size_t)n >= sizeof m->holder)
        return esgd_error_set(err, ESGD_ERR_RANGE, "state folder path too long for the lease (%s)", dir);
    m->live = false;
    esgd_status st = encode_signed(m, key, l->released, &l->released_size, err);
    m->live = true;
    if (st == ESGD_OK)
        st = encode_signed(m, key, l->live, &l->live_size, err);
    if (st == ESGD_OK && !(l->decoder = codec_decoder_new(err)))
        st = err->status;
    return st;
}

void lease_destroy(job_lease *l)
{
    lease_refresh_stop(l);
    codec_decoder_free(l->decoder);
    l->decoder = NULL;
}

/* The holder with its pid cut out: "host ... state dir". */
static void without_pid(const char *holder, char *out, size_t cap)
{
    const char *pid = strstr(holder, " pid ");
    const char *rest = pid ? strstr(pid + 5, " state ") : NULL;
    if (pid && rest)
        snprintf(out, cap, "%.*s%s", (int)(pid - holder), holder, rest);
    else
        snprintf(out, cap, "%s", holder);
}

/* A verified lease of our job and run from another holder, into *out. */
static bool others_lease(job_lease *l, const mqtt_message *m, lease_msg *out)
{
    esgd_error err = {0};
    size_t body = 0;
    if (m->size == 0 || envelope_open(m->data, m->size, &l->coordinator, &body, &err) != ESGD_OK ||
        codec_decode_lease(l->decoder, m->data, body, out, &err) != ESGD_OK) {
        if (m->size)
            log_warn("ignoring a lease on %s: %s", m->topic, err.message);
        return false;
    }
    return strcmp(out->job, l->own.job) == 0 && strcmp(out->holder, l->own.holder) != 0;
}

esgd_status lease_publish(job_lease *l, mqtt_link *link, esgd_error *err)
{
    esgd_status st = mqtt_link_publish(link, l->topic, l->live, l->live_size, 1, true, err);
    if (st == ESGD_OK)
        atomic_fetch_add(&l->published_bytes, l->live_size);
    return st;
}

/* Another holder, named in err: the same words for every way of finding one. */
static esgd_status holder_found(const job_lease *l, const lease_msg *seen, esgd_error *err)
{
    return esgd_error_set(err, ESGD_ERR_ARG,
                          "another coordinator is running job %s: %s (generation %u); stop it first, or give this "
                          "job another name",
                          l->own.job, seen->holder, seen->generation);
}

esgd_status lease_probe(job_lease *l, const mqtt_link_options *options, esgd_error *err)
{
    mqtt_link_options o = *options;
    o.will_topic = NULL;
    o.will_payload = NULL;
    o.will_size = 0;
    o.clean_session = true;
    o.max_queued_bytes = 1 << 20;
    mqtt_link *probe = mqtt_link_open(&o, err);
    if (!probe) {
        esgd_error_prefix(err, "checking the lease of job %s", l->own.job);
        return err->status;
    }
    esgd_status st = mqtt_link_subscribe(probe, l->topic, err);
    double until = monotonic_seconds() + LEASE_PROBE_SECONDS;
    while (st == ESGD_OK && monotonic_seconds() < until && !stop_requested()) {
        mqtt_message m;
        if (!mqtt_link_next(probe, 50, &m) || strcmp(m.topic, l->topic) != 0)
            continue;
        lease_msg found;
        /* Retained: perhaps of a coordinator long gone; lease_claim looks at it. */
        if (!m.retained && others_lease(l, &m, &found) && found.live)
            st = holder_found(l, &found, err);
    }
    mqtt_link_close(probe);
    return st;
}

/* The refresh thread: the live lease every LEASE_REFRESH_SECONDS while
 * connected (nothing piles up in the offline buffer while it is not). */
static void *refresh_main(void *arg)
{
    job_lease *l = arg;
    pthread_mutex_lock(&l->refresh_lock);
    while (!l->refresh_stop) {
        struct timespec at;
        clock_gettime(CLOCK_MONOTONIC, &at);
        at.tv_sec += (time_t)LEASE_REFRESH_SECONDS;
        at.tv_nsec += (long)((LEASE_REFRESH_SECONDS - (double)(time_t)LEASE_REFRESH_SECONDS) * 1e9);
        if (at.tv_nsec >= 1000000000L) {
            at.tv_sec++;
            at.tv_nsec -= 1000000000L;
        }
        while (!l->refresh_stop && pthread_cond_timedwait(&l->refresh_wake, &l->refresh_lock, &at) != ETIMEDOUT) {
        }
        if (l->refresh_stop)
            break;
        pthread_mutex_unlock(&l->refresh_lock);
        esgd_error err = {0};
        if (mqtt_link_connected(l->refresh_link)) {
            if (mqtt_link_publish(l->refresh_link, l->topic, l->live, l->live_size, 1, false, &err) == ESGD_OK)
                atomic_fetch_add(&l->published_bytes, l->live_size);
            else
                log_warn("lease refresh: %s", err.message);
        }
        pthread_mutex_lock(&l->refresh_lock);
    }
    pthread_mutex_unlock(&l->refresh_lock);
    return NULL;
}

esgd_status lease_refresh_start(job_lease *l, mqtt_link *link, esgd_error *err)
{
    if (l->refreshing)
        return ESGD_OK;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&l->refresh_wake, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "lease refresh: %s", strerror(rc));
    pthread_mutex_init(&l->refresh_lock, NULL);
    l->refresh_link = link;
    l->refresh_stop = false;
    if ((rc = pthread_create(&l->refresher, NULL, refresh_main, l)) != 0) {
        pthread_cond_destroy(&l->refresh_wake);
        pthread_mutex_destroy(&l->refresh_lock);
        return esgd_error_set(err, ESGD_ERR_NOMEM, "lease refresh: cannot start its thread: %s", strerror(rc));
    }
    l->refreshing = true;
    return ESGD_OK;
}

void lease_refresh_stop(job_lease *l)
{
    if (!l->refreshing)
        return;
    pthread_mutex_lock(&l->refresh_lock);
    l->refresh_stop = true;
    pthread_cond_signal(&l->refresh_wake);
    pthread_mutex_unlock(&l->refresh_lock);
    pthread_join(l->refresher, NULL);
    pthread_cond_destroy(&l->refresh_wake);
    pthread_mutex_destroy(&l->refresh_lock);
    l->refreshing = false;
}

/* Passes messages on until `seconds` have passed; true as soon as the
 * connection is lost or another holder's live lease arrives. */
static bool watch_for_holder(job_lease *l, mqtt_link *link, double seconds, lease_msg *seen,
                             void (*other)(void *, const mqtt_message *), void *ctx)
{
    uint64_t losses = mqtt_link_get_counters(link).disconnects;
    double until = monotonic_seconds() + seconds;
    while (monotonic_seconds() < until && !stop_requested()) {
        if (mqtt_link_get_counters(link).disconnects != losses)
            return true;
        mqtt_message m;
        if (!mqtt_link_next(link, 50, &m))
            continue;
        if (strcmp(m.topic, l->topic) != 0) {
            other(ctx, &m);
            continue;
        }
        lease_msg found;
        if (others_lease(l, &m, &found) && found.live) {
            *seen = found;
            return true;
        }
    }
    return false;
}

esgd_status lease_claim(job_lease *l, mqtt_link *link, void (*other)(void *ctx, const mqtt_message *m), void *ctx,
                        esgd_error *err)
{
    esgd_status st = mqtt_link_subscribe(link, l->topic, err);
    if (st != ESGD_OK)
        return st;
    /* The retained lease, if any, arrives right after the subscription. */
    lease_msg found = {0};
    bool any = false;
    double until = monotonic_seconds() + RETAINED_WAIT_SECONDS;
    while (monotonic_seconds() < until && !stop_requested()) {
        mqtt_message m;
        if (!mqtt_link_next(link, 50, &m))
            continue;
        if (strcmp(m.topic, l->topic) != 0)
            other(ctx, &m);
        else if (others_lease(l, &m, &found))
            any = true;
    }
    if (any) {
        char theirs[sizeof found.holder], ours[sizeof found.holder];
        without_pid(found.holder, theirs, sizeof theirs);
        without_pid(l->own.holder, ours, sizeof ours);
        /* Our state folder's lock is ours, so a holder of the same folder
         * on this host is gone. */
        if (strcmp(theirs, ours) != 0 || strstr(ours, " state -")) {
            log_info("job %s was last run by %s (lease %s); checking for %.0f s that it is gone", l->own.job,
                     found.holder, found.live ? "live" : "released", HOLDER_CHECK_SECONDS);
            lease_msg seen = found;
            if (watch_for_holder(l, link, HOLDER_CHECK_SECONDS, &seen, other, ctx))
                return holder_found(l, &seen, err);
        }
    }
    return lease_publish(l, link, err);
}

bool lease_lost(job_lease *l, mqtt_link *link, const mqtt_message *m, esgd_error *err)
{
    lease_msg found;
    if (!others_lease(l, m, &found) || !found.live)
        return false;
    /* The one that claimed first keeps the job. */
    bool they_were_first = found.generation < l->own.generation ||
                           (found.generation == l->own.generation && strcmp(found.holder, l->own.holder) < 0);
    if (they_were_first) {
        esgd_error_set(err, ESGD_ERR_ARG, "another coordinator runs job %s and claimed it first: %s (generation %u)",
                       l->own.job, found.holder, found.generation);
        return true;
    }
    log_warn("coordinator %s claims job %s too; it claimed later, so it stops: publishing our lease again",
             found.holder, l->own.job);
    esgd_error e = {0};
    if (lease_publish(l, link, &e) != ESGD_OK)
        log_warn("%s", e.message);
    return false;
}
