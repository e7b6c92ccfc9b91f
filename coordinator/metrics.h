/* Prometheus metrics of the coordinator, served over HTTP by libmicrohttpd
 * (GET /metrics, text format 0.0.4). The main thread records; the server's
 * thread renders a snapshot under a lock, so a scrape never sees a half
 * updated round. */
#ifndef ESGD_COORDINATOR_METRICS_H
#define ESGD_COORDINATOR_METRICS_H

#include <stdint.h>

#include "esgd/coordinator.h"
#include "esgd/mqtt_link.h"

typedef struct metrics metrics;

/* Listens on address:port (address "0.0.0.0" for all interfaces).
 * Per-agent series are kept for the first max_agents agents only, so the
 * label cardinality stays bounded. */
metrics *metrics_start(const char *address, uint16_t port, const esgd_job_config *cfg, uint32_t max_agents,
                       esgd_error *err);
void metrics_stop(metrics *m); /* NULL is a no-op */

/* An update that the coordinator accepted: the agent's loss and round. */
void metrics_agent_update(metrics *m, uint32_t agent, uint32_t round, float loss);
/* A closed round and how long it was open; the counters come from c. */
void metrics_round_closed(metrics *m, const esgd_coordinator *c, const round_summary *s, double seconds);
void metrics_evaluated(metrics *m, float accuracy, float loss);
/* The open round and the coordinator's counters (after every message). */
void metrics_progress(metrics *m, const esgd_coordinator *c);
/* The broker link's health: reconnects, disconnects, time disconnected. */
void metrics_link(metrics *m, const mqtt_link_counters *k);

#endif
