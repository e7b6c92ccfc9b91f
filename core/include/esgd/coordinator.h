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
#include "esgd/envelope.h"
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
    uint64_t accepted;                    /* updates that went into a model */
    uint64_t duplicate;
    uint64_t late;
    uint64_t early;
    uint64_t rejected[ESGD_STATUS_COUNT]; /* by reason (esgd_status_name), at receipt or at close */
    uint64_t uplink_bytes;                /* accepted update messages only, so compression is what the
                                           * model was trained with, not what a hostile sender adds */
    uint64_t accepted_uplink_bytes;       /* the same as uplink_bytes (kept for its readers and the checkpoint) */
    uint64_t broadcast_bytes;             /* model messages published (once each) */
    uint64_t downlink_bytes;              /* model bytes delivered: broadcast x agents */
    uint64_t clipped;                     /* accepted after scaling down to the norm bound */
    uint64_t retained_bytes;              /* full models published for the retained topic */
    uint64_t rejected_bytes;              /* rejected update messages */
    uint64_t unused_uplink_bytes;         /* duplicate, late and early update messages */
    uint64_t dropped_nonfinite;           /* held updates dropped at close because the new model would not
                                           * have been finite; also counted in rejected[ESGD_ERR_NONFINITE] */
    uint64_t conflicting;                 /* a second, different update for an agent and round already held:
                                           * two live agents with one id (also counted in duplicate) */
    uint64_t data_conflicts;              /* statuses announcing another agent's shard or data, or other data
                                           * than the same id announced before (coordinator_note_status) */
    uint64_t rounds_lost;                 /* rounds agents answered, then came back without (older state) */
    uint64_t sync_bytes;                  /* full models sent to one agent that asked (status "syncing") */
    uint64_t published_bytes;             /* every message the program handed to the broker: models, retained
                                           * models, answers to agents, configuration, lease, publishes again
                                           * (coordinator_note_published); 0 in the simulator */
} coordinator_counters;

typedef enum norm_action {
    NORM_ACTION_REJECT, /* refuse an update whose L2 norm is over the bound (reason "range") */
    NORM_ACTION_CLIP    /* scale it down to the bound and accept it */
} norm_action;

/* The default (relative) norm bound, applied at close: NORM_BOUND_FACTOR x
 * the larger of the median L2 norm of the last NORM_BOUND_WINDOW accepted
 * non-empty updates of earlier rounds and, when the round holds two or
 * more, the median of the round's own (in a round with no history, the
 * round's own alone). The median of an even count is the lower middle
 * value: while at least half of the norms are honest, the others cannot
 * raise it above the largest honest one; and when honest gradients grow
 * together (a loss spike), the round's median grows with them. After
 * NORM_BOUND_STUCK_ROUNDS rounds in a row with every update over the bound
 * (a lone agent whose scale changed), the history starts again. */
#define NORM_BOUND_FACTOR 10.0
#define NORM_BOUND_WINDOW 64
#define NORM_BOUND_STUCK_ROUNDS 3

/* A held update the round left out at close. */
typedef struct round_exclusion {
    uint32_t agent;
    esgd_status reason; /* ESGD_ERR_RANGE: over the norm bound; ESGD_ERR_NONFINITE: the model would not
                         * have been finite with it */
    double norm;        /* its L2 norm */
} round_exclusion;

typedef struct round_summary {
    uint32_t round;           /* the round that closed */
    double lr;                /* learning rate applied */
    aggregate_result result;  /* participants, samples, L_t, changed, dropped */
    int8_t loss_fell;         /* L_t < L_{t-1}: 1, 0, or -1 when unknown */
    double norm_bound;        /* the bound this round's updates were held to; 0: none */
    uint32_t excluded_count;  /* held updates left out at close (each counted as rejected) ... */
    const round_exclusion *excluded; /* ... which, in the order decided; valid until the next close */
} round_summary;

esgd_coordinator *coordinator_new(const esgd_job_config *cfg, esgd_error *err);

/* Limits what one bad agent can do with the size of its update:
 *   max_norm > 0: updates whose values have an L2 norm above max_norm are
 *                 rejected or clipped at receipt (an absolute bound);
 *   max_norm = 0: the default, the relative bound above;
 *   max_norm < 0: no bound.
 * ESGD_ERR_ARG for a non-finite bound or an unknown action. Whatever the
 * bound, a round never makes the model non-finite (aggregator_apply). */
esgd_status coordinator_set_norm_bound(esgd_coordinator *c, double max_norm, norm_action action, esgd_error *err);
void coordinator_free(esgd_coordinator *c); /* NULL is a no-op */

const esgd_job_config *coordinator_config(const esgd_coordinator *c);
uint32_t coordinator_round(const esgd_coordinator *c); /* the open round t */
/* Each start of a run's coordinator is a new generation, carried by every
 * model message; agents follow the newest one of the run even to an
 * earlier round (a restore from an older checkpoint). A checkpoint keeps
 * the generation that wrote it (0 in older ones); the program sets the new
 * one above everything it has seen. */
uint32_t coordinator_generation(const esgd_coordinator *c);
void coordinator_set_generation(esgd_coordinator *c, uint32_t generation);

/* What an agent's status (verified, of this run) tells the coordinator. */
typedef struct status_note {
    bool generation_raised; /* the agent follows a newer generation than ours (it ignores our models):
                             * ours is now above it; publish the model again */
    int64_t overlaps_with;  /* -1, or the agent whose shard or data this agent announced (itself: the
                             * same id announced other data before, two agents with one id) */
    bool same_shard;        /* the overlap is by shard index (else by data fingerprint) */
    uint32_t rounds_lost;   /* the agent came back behind rounds we took from it (its state was older) */
} status_note;
status_note coordinator_note_status(esgd_coordinator *c, const status_msg *s);
bool coordinator_done(const esgd_coordinator *c);      /* all rounds closed */
const float *coordinator_params(const esgd_coordinator *c);
const coordinator_counters *coordinator_get_counters(const esgd_coordinator *c);
uint32_t coordinator_participants(const esgd_coordinator *c); /* updates held for the open round */
bool coordinator_has_update(const esgd_coordinator *c, uint32_t agent);
/* After a genuine update of agent's for `round` came late: true when the
 * agent is behind, holding a model the open round's delta cannot apply to
 * (round is before the last closed one) and nothing of it was accepted
 * after that round (else the late copy is a redelivery or a replay). */
bool coordinator_agent_behind(const esgd_coordinator *c, uint32_t agent, uint32_t round);

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
/* The same message for one agent that asked for it (its status "syncing"):
 * counted as sync_bytes. */
esgd_status coordinator_sync_model(esgd_coordinator *c, const uint8_t **msg, size_t *size, esgd_error *err);
/* The program handed `bytes` to the broker (any message): published_bytes. */
void coordinator_note_published(esgd_coordinator *c, size_t bytes);

/* The coordinator's signing key (config and models) and every agent's
 * public key (agents[0..agents-1]) for its updates. Without them no message
 * can be made or accepted (ESGD_ERR_SIGNATURE). */
void coordinator_set_keys(esgd_coordinator *c, const signing_key *own, const verify_key *agents);

/* Checks an update message that arrived on agent from_agent's topic for
 * round from_round: size, then that agent's signature (before any
 * decoding), then the body; the agent and round it names must equal the
 * topic's (else ESGD_ERR_MISMATCH) and its run this run (else
 * ESGD_ERR_STALE). Holds it for the open round. */
update_outcome coordinator_receive_update(esgd_coordinator *c, const uint8_t *data, size_t size, uint32_t from_agent,
                                          uint32_t from_round, esgd_error *err);
/* The message the last coordinator_receive_update decoded (agent, round,
 * loss...); meaningful after UPDATE_ACCEPTED, DUPLICATE, LATE or EARLY. */
const update_msg *coordinator_last_update(const esgd_coordinator *c);

/* Applies the held updates (N_t may be 0: the model stays), records L_t,
 * advances to the next round. In a round with no norm history the relative
 * bound is applied here first; updates it refuses, and any the aggregator
 * drops to keep the model finite, move from accepted to rejected and are
 * listed in summary->excluded. */
void coordinator_close_round(esgd_coordinator *c, round_summary *summary);

/* Test accuracy and loss of the current model. */
esgd_status coordinator_evaluate(esgd_coordinator *c, const esgd_dataset *test, uint32_t limit, float *accuracy,
                                 float *loss, esgd_error *err);
/* The evaluation after closing round s->round, on the job's evaluation
 * rounds only: on the first `limit` test examples (0: all), and on all of
 * them after the last round. *images: how many were used, 0 when this round
 * is not an evaluation round or test is NULL, a job without a test set
 * (accuracy and loss are then left as they were). */
esgd_status coordinator_evaluate_round(esgd_coordinator *c, const esgd_dataset *test, const round_summary *s,
                                       uint32_t limit, float *accuracy, float *loss, uint32_t *images,
                                       esgd_error *err);

/* Checkpoint between rounds (after a close, before the next round's
 * updates): the job configuration, the open round, the loss history, the
 * counters and x_round, written atomically (state_file.h). */
esgd_status coordinator_save(esgd_coordinator *c, const char *path, esgd_error *err);
/* Restores a checkpoint of the same job configuration, continuing its run
 * (the run id comes from the checkpoint); ESGD_ERR_MISMATCH if it was
 * written for another configuration, any state_file error if it is damaged
 * (the coordinator is unchanged then). The next round model is full. */
esgd_status coordinator_restore(esgd_coordinator *c, const char *path, esgd_error *err);

const char *update_outcome_name(update_outcome o); /* "accepted", "duplicate", "late", "early", "rejected" */

#endif
