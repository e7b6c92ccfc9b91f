/* The signed messages of a real round and a half of the fuzzers' job
 * (fuzz_common.h), made with the project's own agents and coordinator and
 * the job's keys: the config, the round 0 full model, agents 0 and 1's round
 * 0 updates, the round 1 delta and full models and the two agents' round 1
 * updates. make_seeds writes them as fuzz_envelope's seeds; fuzz_envelope
 * makes them again as the list of everything that is signed, so it can tell
 * that no other input ever passes a signature check. Deterministic: the same
 * bytes every time (Ed25519 signatures are). */
#ifndef ESGD_FUZZ_SIGNED_H
#define ESGD_FUZZ_SIGNED_H

#include <stdbool.h>

#include "fuzz_common.h"

/* fuzz_envelope's inputs: [mode][topic agent][topic round][message]. */
enum {
    FUZZ_ENVELOPE_OPEN,          /* envelope_open with the coordinator's and the topic agent's keys */
    FUZZ_ENVELOPE_UPDATE,        /* coordinator_receive_update of the message as it is */
    FUZZ_ENVELOPE_MODEL,         /* agent_apply_model of the message as it is */
    FUZZ_ENVELOPE_SIGNED_UPDATE, /* the message is a body: signed by the topic's agent (and by another) */
    FUZZ_ENVELOPE_SIGNED_MODEL,  /* the message is a body: signed by the coordinator (and by an agent) */
    FUZZ_ENVELOPE_MODES
};
#define FUZZ_ENVELOPE_HEADER 3

#define FUZZ_SIGNED_MAX 8
#define FUZZ_BY_COORDINATOR UINT32_MAX

typedef struct fuzz_signed_message {
    uint8_t *data;
    size_t size;
    uint32_t signer; /* agent id, or FUZZ_BY_COORDINATOR */
    uint32_t round;  /* an update's round (its topic's), a model's round */
    bool model;      /* a model message (else config or update) */
} fuzz_signed_message;

typedef struct fuzz_signed_set {
    fuzz_signed_message message[FUZZ_SIGNED_MAX];
    int count;
} fuzz_signed_set;

static inline void fuzz_signed_keep(fuzz_signed_set *set, const uint8_t *data, size_t size, uint32_t signer,
                                    uint32_t round, bool model)
{
    FUZZ_CHECK(set->count < FUZZ_SIGNED_MAX);
    fuzz_signed_message *m = &set->message[set->count++];
    m->data = malloc(size);
    FUZZ_CHECK(m->data != NULL);
    memcpy(m->data, data, size);
    m->size = size;
    m->signer = signer;
    m->round = round;
    m->model = model;
}

static inline void fuzz_signed_messages(fuzz_signed_set *set, const fuzz_job *job)
{
    esgd_error err = {0};
    esgd_coordinator *c = fuzz_job_coordinator(job);
    esgd_agent *agents[2];
    for (uint32_t a = 0; a < 2; a++)
        agents[a] = fuzz_job_agent(job, a);
    set->count = 0;
    const uint8_t *msg;
    size_t size;
    FUZZ_CHECK(coordinator_config_message(c, &msg, &size, &err) == ESGD_OK);
    fuzz_signed_keep(set, msg, size, FUZZ_BY_COORDINATOR, 0, false);
    for (uint32_t round = 0; round < 2; round++) {
        FUZZ_CHECK(coordinator_round_model(c, &msg, &size, &err) == ESGD_OK);
        fuzz_signed_keep(set, msg, size, FUZZ_BY_COORDINATOR, round, true);
        for (uint32_t a = 0; a < 2; a++)
            FUZZ_CHECK(agent_apply_model(agents[a], msg, size, &err) == ESGD_OK);
        if (round == 1) {
            FUZZ_CHECK(coordinator_full_model(c, &msg, &size, &err) == ESGD_OK);
            fuzz_signed_keep(set, msg, size, FUZZ_BY_COORDINATOR, round, true);
        }
        for (uint32_t a = 0; a < 2; a++) {
            FUZZ_CHECK(agent_compute_update(agents[a], &msg, &size, &err) == ESGD_OK);
            fuzz_signed_keep(set, msg, size, a, round, false);
            FUZZ_CHECK(coordinator_receive_update(c, msg, size, a, round, &err) == UPDATE_ACCEPTED);
        }
        round_summary summary;
        coordinator_close_round(c, &summary);
    }
    for (uint32_t a = 0; a < 2; a++)
        agent_free(agents[a]);
    coordinator_free(c);
}

static inline void fuzz_signed_free(fuzz_signed_set *set)
{
    for (int i = 0; i < set->count; i++)
        free(set->message[i].data);
    set->count = 0;
}

#endif
