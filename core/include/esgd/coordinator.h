/* The coordinator's side of the rounds, transport-free: the config and model
 * messages it publishes, the update messages it accepts (decoded, checked,
 * counted by outcome and reason), and closing a round with the aggregator.
 * esgd-sim and esgd-coordinator (MQTT) both call exactly these functions.
 *
 *   c = coordinator_new(&cfg, &err);
 *   while (!coordinator_done(c)) {
 *       coordinator_round_model(c, &msg, &n);        // publish x_t
 *       coordinator_receive_update(c, bytes, n, &err); // for each message
 *       coordinator_close_round(c, &summary);          // x_{t+1}, L_t
 *   }
 *   coordinator_round_model(c, &msg, &n);            // final model, done=1
 */
#ifndef ESGD_COORDINATOR_H
#define ESGD_COORDINATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/aggregator.h"
#include "esgd/codec.h"
#include "esgd/dataset.h"
#include "esgd/error.h"
#include "esgd/job.h"

typedef struct esgd_coordinator esgd_coordinator;

typedef enum update_outcome {
    UPDATE_ACCEPTED,
    UPDATE_DUPLICATE, /* the agent's update for this round is already held (QoS 1 redelivery) */
    UPDATE_LATE,      /* for a round already closed */
    UPDATE_EARLY,     /* for a round not open yet */
    UPDATE_REJECTED   /* failed to decode or to pass checks: see err, counted by reason */
} update_outcome;

typedef struct coordinator_counters {
    uint64_t accepted;
    uint64_t duplicate;
    uint64_t late;
    uint64_t early;
    uint64_t rejected[ESGD_STATUS_COUNT]; /* by reason (esgd_status_name) */
    uint64_t uplink_bytes;                /* every update message received */
    uint64_t accepted_uplink_bytes;       /* accepted update messages */
    uint64_t broadcast_bytes;             /* model messages published (once each) */
    uint64_t downlink_bytes;              /* model bytes delivered: broadcast x agents */
    uint64_t clipped;                     /* accepted after scaling down to the norm bound */
    uint64_t retained_bytes;              /* full models published for the retained topic */
} coordinator_counters;

typedef enum norm_action {
    NORM_ACTION_REJECT, /* refuse an update whose L2 norm is over the bound (reason "range") */
    NORM_ACTION_CLIP    /* scale it down to the bound and accept it */
} norm_action;

typedef struct round_summary {
    uint32_t round;           /* the round that closed */
    double lr;                /* learning rate applied */
    aggregate_result result;  /* participants, samples, L_t, changed */
    int8_t loss_fell;         /* L_t < L_{t-1}: 1, 0, or -1 when unknown */
} round_summary;

esgd_coordinator *coordinator_new(const esgd_job_config *cfg, esgd_error *err);

/* Limits what one bad agent can do: updates whose values have an L2 norm
 * above max_norm are rejected or clipped. max_norm 0 (the default) turns
 * the check off. ESGD_ERR_ARG for a negative or non-finite bound. */
esgd_status coordinator_set_norm_bound(esgd_coordinator *c, double max_norm, norm_action action, esgd_error *err);
void coordinator_free(esgd_coordinator *c); /* NULL is a no-op */

const esgd_job_config *coordinator_config(const esgd_coordinator *c);
uint32_t coordinator_round(const esgd_coordinator *c); /* the open round t */
bool coordinator_done(const esgd_coordinator *c);      /* all rounds closed */
const float *coordinator_params(const esgd_coordinator *c);
const coordinator_counters *coordinator_get_counters(const esgd_coordinator *c);
uint32_t coordinator_participants(const esgd_coordinator *c); /* updates held for the open round */
bool coordinator_has_update(const esgd_coordinator *c, uint32_t agent);

/* Loss L_t of every closed round (count = coordinator_round). */
const float *coordinator_loss_history(const esgd_coordinator *c);

/* Encoded messages; *msg stays valid until the next call that encodes. */
esgd_status coordinator_config_message(esgd_coordinator *c, const uint8_t **msg, size_t *size, esgd_error *err);
/* The broadcast that opens the current round: the smaller of a delta
 * against the previous round's model and the full model (always full for
 * the first round after start or restore). Adds its bytes to the counters
 * (broadcast once, delivered to every agent). */
esgd_status coordinator_round_model(esgd_coordinator *c, const uint8_t **msg, size_t *size, esgd_error *err);
/* The current model in full form, for the retained topic; its bytes are
 * counted as retained_bytes. */
esgd_status coordinator_full_model(esgd_coordinator *c, const uint8_t **msg, size_t *size, esgd_error *err);

/* Decodes and checks an update message and holds it for the open round. */
update_outcome coordinator_receive_update(esgd_coordinator *c, const uint8_t *data, size_t size,
                                          esgd_error *err);
/* The message the last coordinator_receive_update decoded (agent, round,
 * loss...); meaningful after UPDATE_ACCEPTED, DUPLICATE, LATE or EARLY. */
const update_msg *coordinator_last_update(const esgd_coordinator *c);

/* Applies the held updates (N_t may be 0: the model stays), records L_t,
 * advances to the next round. */
void coordinator_close_round(esgd_coordinator *c, round_summary *summary);

/* Test accuracy and loss of the current model. */
esgd_status coordinator_evaluate(esgd_coordinator *c, const esgd_dataset *test, uint32_t limit, float *accuracy,
                                 float *loss, esgd_error *err);
/* The evaluation after closing round s->round, on the job's evaluation
 * rounds only: on the first `limit` test examples (0: all), and on all of
 * them after the last round. *images: how many were used, 0 when this round
 * is not an evaluation round (accuracy and loss are then left as they were). */
esgd_status coordinator_evaluate_round(esgd_coordinator *c, const esgd_dataset *test, const round_summary *s,
                                       uint32_t limit, float *accuracy, float *loss, uint32_t *images,
                                       esgd_error *err);

/* Checkpoint between rounds (after a close, before the next round's
 * updates): the job configuration, the open round, the loss history, the
 * counters and x_round, written atomically (state_file.h). */
esgd_status coordinator_save(esgd_coordinator *c, const char *path, esgd_error *err);
/* Restores a checkpoint of the same job configuration; ESGD_ERR_MISMATCH if
 * it was written for another one, any state_file error if it is damaged
 * (the coordinator is unchanged then). The next round model is full. */
esgd_status coordinator_restore(esgd_coordinator *c, const char *path, esgd_error *err);

const char *update_outcome_name(update_outcome o); /* "accepted", "duplicate", "late", "early", "rejected" */

#endif
