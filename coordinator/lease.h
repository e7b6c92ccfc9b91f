/* The coordinator's lease on its job: a retained, signed message on
 * esgd/<job>/lease naming the coordinator that runs the job, so that a
 * second one refuses to start instead of knocking the first off the broker
 * (both use the job's client id) and starting a run of its own.
 *
 * At start (lease_claim) the coordinator reads the retained lease. One that
 * names another holder (other host or state folder: the state-folder lock
 * already rules out a live holder of our own folder) makes it wait a few
 * seconds: a live holder takes its connection back at once (its link
 * reconnects and the broker drops ours) or publishes its lease again, and
 * the newcomer then stops with a clear error. Otherwise it publishes its
 * own lease, with "released" as its Last Will. While running, a live lease
 * of another holder that claimed later is answered by publishing ours again
 * (that one stops); one that claimed earlier makes this one stop. */
#ifndef ESGD_COORDINATOR_LEASE_H
#define ESGD_COORDINATOR_LEASE_H

#include <stdbool.h>

#include "esgd/codec.h"
#include "esgd/envelope.h"
#include "esgd/mqtt_link.h"
#include "esgd/topics.h"

#define LEASE_BYTES_MAX 512

typedef struct job_lease {
    char topic[TOPIC_MAX];
    lease_msg own;
    uint8_t live[LEASE_BYTES_MAX], released[LEASE_BYTES_MAX]; /* signed */
    size_t live_size, released_size;
    verify_key coordinator; /* leases are signed with the coordinator key */
    codec_decoder *decoder;
    uint64_t published_bytes; /* every lease this start published (the coordinator's published_bytes) */
} job_lease;

/* Our lease for this start: holder "<host> pid <pid> state <dir>" (dir "-"
 * without --state-dir). The released form is the link's Last Will. */
esgd_status lease_init(job_lease *l, const char *job, uint64_t run, uint32_t generation, const char *state_dir,
                       const signing_key *key, esgd_error *err);
void lease_destroy(job_lease *l);

/* Reads the retained lease and decides, as above; messages of other topics
 * that arrive meanwhile go to other(ctx, m). ESGD_ERR_ARG (with the
 * holder named in err) when another coordinator runs the job. */
esgd_status lease_claim(job_lease *l, mqtt_link *link, void (*other)(void *ctx, const mqtt_message *m), void *ctx,
                        esgd_error *err);

/* Publishes our lease (again: after a reconnection). */
esgd_status lease_publish(job_lease *l, mqtt_link *link, esgd_error *err);

/* A message on the lease topic while running: true when this coordinator
 * must stop (err names the other holder); publishes ours again when the
 * other one must. */
bool lease_lost(job_lease *l, mqtt_link *link, const mqtt_message *m, esgd_error *err);

#endif
