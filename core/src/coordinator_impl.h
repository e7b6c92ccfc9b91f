/* Inside the coordinator (coordinator.h), shared by its two files: the
 * state the round functions keep (coordinator.c) and a checkpoint saves and
 * restores (coordinator_state.c). Internal to core/src. */
#ifndef ESGD_COORDINATOR_IMPL_H
#define ESGD_COORDINATOR_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "esgd/codec.h"
#include "esgd/coordinator.h"
#include "esgd/envelope.h"
#include "esgd/model.h"

struct esgd_coordinator {
    esgd_job_config cfg;
    uint32_t dim;
    uint32_t total_rounds;
    uint32_t round;            /* the open round */
    uint32_t generation;       /* this start of the run (model messages carry it) */
    esgd_model *model;         /* params = x_t; also used for evaluation */
    aggregator *agg;
    codec_decoder *decoder;
    esgd_buffer out;           /* last encoded message */
    update_msg incoming;       /* decode target, capacity = slot capacity */
    uint32_t *changed;         /* (dim) coordinates changed by the last close */
    float *delta_values;       /* (dim) their new values, for the delta message */
    uint32_t changed_count;
    bool delta_valid;          /* changed[] describes x_round - x_{round-1} */
    float *loss_history;       /* (total_rounds) L_t */
    double max_norm;           /* > 0: absolute bound; 0: relative bound (default); < 0: none */
    norm_action norm_action;
    double norm_history[NORM_BOUND_WINDOW]; /* L2 norms of the last accepted non-empty updates, a ring */
    uint32_t norm_count;       /* entries in norm_history */
    uint32_t norm_next;        /* where the next one goes */
    uint32_t refused_rounds;   /* rounds in a row whose every held update was over the relative bound */
    double *norm_scratch;      /* (max(agents, window)) for medians */
    double *held_norm;         /* (agents) at close: norm of each held update, -1 if none */
    uint64_t *held_hash;       /* (agents) message_id (its signature hashed) of each agent's last accepted update and */
    uint32_t *held_round;      /* (agents) its round, to tell a redelivery from a different update under
                                * the same id (also after the round closed) */
    uint64_t *held_bytes;      /* (agents) message size of each held update and whether it */
    bool *held_clipped;        /* (agents) was clipped, to undo its counts if the round leaves it out */
    status_msg *announced;     /* (agents) the last status that said what the agent trains on */
    round_exclusion *excluded; /* (agents) the updates the last close left out */
    signing_key key;           /* signs config and models */
    verify_key *agent_keys;    /* (agents) checks each agent's updates */
    bool has_keys;
    coordinator_counters counters;
};

#endif
