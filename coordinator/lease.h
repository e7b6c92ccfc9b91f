/* The coordinator's lease on its job: a signed message on esgd/<job>/lease
 * naming the coordinator that runs the job, so that a second one refuses to
 * start instead of knocking the first off the broker (both use the job's
 * client id) and starting a run of its own.
 *
 * The holder publishes its lease retained when it claims the job (and after
 * every reconnection), and again every LEASE_REFRESH_SECONDS not retained
 * (lease_refresh_start): a broker that keeps retained messages per node
 * (a RabbitMQ 3.10 cluster) delivers live messages on every node, so a
 * newcomer connected to another node sees the refreshes even where the
 * retained lease is not.
 *
 * Before connecting under the job's client id, a starting coordinator
 * listens on the lease topic for LEASE_PROBE_SECONDS under a connection of
 * its own (lease_probe: another client id, a clean session, optionally
 * another broker user that may only read the lease topic), so that looking
 * cannot take the holder's connection over: a refresh of another holder
 * going by makes it stop with a clear error. Then (lease_claim) it reads
 * the retained lease. One that names another holder (other host or state
 * folder: the state-folder lock already rules out a live holder of our own
 * folder) makes it wait a few seconds: a live holder that does not refresh
 * takes its connection back at once (its link reconnects and the broker
 * drops ours) or publishes its lease again, and the newcomer then stops with
 * a clear error. Otherwise it publishes its own lease, with "released" as
 * its Last Will. While running, a live lease of another holder that claimed
 * later is answered by publishing ours again (that one stops); one that
 * claimed earlier makes this one stop. */
#ifndef ESGD_COORDINATOR_LEASE_H
#define ESGD_COORDINATOR_LEASE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "esgd/codec.h"
#include "esgd/envelope.h"
#include "esgd/mqtt_link.h"
#include "esgd/topics.h"

#define LEASE_BYTES_MAX 512
/* The holder's live lease goes out this often, not retained. */
#define LEASE_REFRESH_SECONDS 1.0
/* A starting coordinator listens this long for another holder's refresh. */
#define LEASE_PROBE_SECONDS 2.5

typedef struct job_lease {
    char topic[TOPIC_MAX];
    lease_msg own;
    uint8_t live[LEASE_BYTES_MAX], released[LEASE_BYTES_MAX]; /* signed */
    size_t live_size, released_size;
    verify_key coordinator; /* leases are signed with the coordinator key */
    codec_decoder *decoder;
    _Atomic uint64_t published_bytes; /* every lease this start published (the coordinator's published_bytes) */
    /* The refresh thread (lease_refresh_start) */
    mqtt_link *refresh_link;
    pthread_t refresher;
    pthread_mutex_t refresh_lock;
    pthread_cond_t refresh_wake;
    bool refreshing, refresh_stop;
} job_lease;

/* Our lease for this start: holder "<host> pid <pid> state <dir>" (dir "-"
 * without --state-dir). The released form is the link's Last Will. */
esgd_status lease_init(job_lease *l, const char *job, uint64_t run, uint32_t generation, const char *state_dir,
                       const signing_key *key, esgd_error *err);
void lease_destroy(job_lease *l);

/* Before the job's connection: connects with `options` (their client id,
 * user and password; no Will, clean session), subscribes to the lease topic
 * and listens for LEASE_PROBE_SECONDS. ESGD_ERR_ARG (with the holder named
 * in err) when another holder's live lease arrives not retained: a live
 * holder's refresh. A retained lease alone decides nothing here (it may be
 * stale): lease_claim looks at it. ESGD_ERR_IO when the broker cannot be
 * reached. */
esgd_status lease_probe(job_lease *l, const mqtt_link_options *options, esgd_error *err);

/* Reads the retained lease and decides, as above; messages of other topics
 * that arrive meanwhile go to other(ctx, m). ESGD_ERR_ARG (with the
 * holder named in err) when another coordinator runs the job. */
esgd_status lease_claim(job_lease *l, mqtt_link *link, void (*other)(void *ctx, const mqtt_message *m), void *ctx,
                        esgd_error *err);

/* Publishes our lease (again: after a reconnection). */
esgd_status lease_publish(job_lease *l, mqtt_link *link, esgd_error *err);

/* Publishes the live lease, not retained, every LEASE_REFRESH_SECONDS
 * while the link is connected, from a thread of its own (so that a long
 * evaluation or checkpoint does not hold it up). The bytes count in
 * published_bytes. lease_refresh_stop stops it (no-op when not running;
 * lease_destroy stops it too). */
esgd_status lease_refresh_start(job_lease *l, mqtt_link *link, esgd_error *err);
void lease_refresh_stop(job_lease *l);

/* A message on the lease topic while running: true when this coordinator
 * must stop (err names the other holder); publishes ours again when the
 * other one must. */
bool lease_lost(job_lease *l, mqtt_link *link, const mqtt_message *m, esgd_error *err);

#endif
