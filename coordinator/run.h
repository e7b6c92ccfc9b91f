/* The state of one esgd-coordinator process, shared by its files: main.c
 * (start-up, the job loop, what follows each round) and round.c (a round
 * over MQTT: the model out, agents' updates and statuses in, until the round
 * may close). */
#ifndef ESGD_COORDINATOR_RUN_H
#define ESGD_COORDINATOR_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "esgd/codec.h"
#include "esgd/coordinator.h"
#include "esgd/dataset.h"
#include "esgd/envelope.h"
#include "esgd/mqtt_link.h"
#include "esgd/report.h"
#include "esgd/round_times.h"
#include "lease.h"
#include "metrics.h"

enum { EXIT_DONE = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 3 };

typedef struct settings {
    mqtt_link_options link; /* broker settings; client id set at connect */
    const char *data_dir, *state_dir, *csv_path, *metrics_address, *keys_dir;
    const char *lease_username, *lease_password_file; /* the lease check's broker user; NULL: --username's */
    uint32_t metrics_port;    /* 0: no metrics server */
    double max_update_norm;   /* 0: no bound */
    const char *norm_action;  /* "reject" or "clip" */
    uint32_t quorum;          /* 0: majority of the expected agents */
    double round_timeout;     /* seconds */
    double start_timeout;     /* seconds the first round of a start waits for every agent to come online */
    double republish_after;   /* seconds without a new update before the model goes out again (0: never) */
    uint32_t full_model_every; /* rounds between retained full models; 0: when they would be 5% of the traffic */
    uint32_t eval_limit;
    int json;
} settings;

typedef struct run {
    settings set;
    esgd_job_config cfg;
    esgd_coordinator *coordinator;
    mqtt_link *link;
    esgd_dataset test;
    char checkpoint[4096];
    uint8_t *agent_online;    /* (agents) last status seen + 1: 0 unknown, 1 offline or done, 2 online */
    uint32_t *missed;         /* (agents) rounds closed in a row without its update */
    uint32_t *synced_round;   /* (agents) + 1 of the round whose model we last sent the agent alone; 0 none */
    double *config_sent_at;   /* (agents) monotonic time we last sent the agent the configuration alone */
    verify_key *agent_keys;   /* (agents) their status messages must carry these signatures */
    uint64_t status_rejected; /* status messages that failed the checks */
    codec_decoder *status_decoder;
    metrics *metrics;
    report_rounds report; /* evaluation, CSV and progress after each round (report_round) */
    bool resumed;       /* from a checkpoint: the same run goes on */
    uint64_t connects_seen; /* broker connections when last checked, to republish after a reconnection */
    round_times times;  /* open to close, for the final report */
    esgd_buffer retained, broadcast; /* the next model, full and as broadcast, between encoding and publishing */
    bool retained_due;       /* this round's end publishes the retained full model too */
    uint64_t traffic_at_retained; /* run_traffic when the retained model last went out */
    uint64_t lease_bytes_counted; /* of lease.published_bytes, in the coordinator's counters */
    job_lease lease;
    uint32_t rounds_run; /* closed by this start */
    double last_round_seconds; /* the last closed round, opened to closed; 0 when it published again */
    bool republished;          /* the open round published its model again (a stall) */
    double came_online_at; /* monotonic time an agent last said it is online */
    bool lease_claimed; /* until then nothing is published */
    bool must_stop;     /* stop with exit status 2: another coordinator claimed the job first, or the
                         * broker cannot carry this job's topics */
} run;

/* Rounds an agent may miss in a row before it is no longer waited for. */
#define DEAD_AFTER_MISSED 3

/* Publishes at QoS 1, logging a failure; counts the bytes (published_bytes). */
esgd_status run_publish(run *r, const char *topic, const uint8_t *msg, size_t size, bool retained);
/* The job's broker traffic so far (bytes into and out of the broker) as
 * the coordinator counts it: every update in and out, every message
 * published, every model delivered to agents (broadcast x agents, answers
 * to one agent). Retained copies sent to late subscribers are not known. */
uint64_t run_traffic(const run *r);
/* Adds the leases published since the last call to published_bytes (the
 * lease code publishes on its own). */
void run_count_lease_bytes(run *r);
/* The model on the retained topic in full (so a late or restarted agent
 * starts at once; at the end of rounds only every --full-model-every) and
 * on the round's topic: the broadcast that opens the
 * round, or, publishing again (`again`), the configuration first and the
 * full model on the round's topic too, for agents whose session or
 * messages the broker lost (a repeat answer is counted once). */
esgd_status run_publish_model(run *r, bool again);
/* One message from the broker: an agent's status, a lease, an update. */
void run_handle_message(run *r, const mqtt_message *m);
/* Collects updates until every expected agent has reported, or the quorum
 * has and round_timeout has passed. False when a stop was requested. */
bool run_collect_round(run *r, uint32_t quorum);
/* Says how many log lines the floods of bad messages left out at the end. */
void run_flush_logs(void);

#endif
