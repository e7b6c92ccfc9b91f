/* One edge agent's side of a round, transport-free: apply the model message
 * the coordinator broadcast, compute the minibatch gradient on its shard,
 * sparsify it and encode the update message. esgd-sim and esgd-agent (MQTT)
 * both call exactly these functions; they only move the bytes.
 *
 *   esgd_agent *a = agent_new(&cfg, id, &shard, &err);
 *   agent_apply_model(a, model_bytes, n, &err);      // x_t, loss signal
 *   agent_compute_update(a, &msg, &msg_size, &err);  // update for round t
 */
#ifndef ESGD_AGENT_H
#define ESGD_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/dataset.h"
#include "esgd/envelope.h"
#include "esgd/error.h"
#include "esgd/job.h"
#include "esgd/sparsifier.h"

typedef struct esgd_agent esgd_agent;

/* shard: the agent's examples (borrowed; must outlive the agent). */
esgd_agent *agent_new(const esgd_job_config *cfg, uint32_t agent_id, const esgd_dataset *shard, esgd_error *err);
void agent_free(esgd_agent *agent); /* NULL is a no-op */

/* The agent's own signing key (its updates) and the coordinator's public
 * key (every model must carry its signature). Call once after agent_new;
 * without keys every model is refused and no update can be made
 * (ESGD_ERR_SIGNATURE). */
void agent_set_keys(esgd_agent *agent, const signing_key *own, const verify_key *coordinator);

/* Checks the model message's signature (ESGD_ERR_SIGNATURE), then decodes
 * and applies it (full, or delta on the model the agent holds). A model for
 * a round older than the one held, or, holding none after a restore, older
 * than the round answered, is ignored (ESGD_OK; agent_has_model tells): QoS 1
 * redelivery and retained copies make that normal. Errors leave the
 * agent's model as it was: ESGD_ERR_MISMATCH (other job, or a delta whose
 * base is not the agent's round: the caller should fetch the retained full
 * model), ESGD_ERR_STALE (a model of another run of the job), plus every
 * codec error. */
esgd_status agent_apply_model(esgd_agent *agent, const uint8_t *data, size_t size, esgd_error *err);

/* True once a model has been applied and the job is not done. */
bool agent_has_model(const esgd_agent *agent);
bool agent_job_done(const esgd_agent *agent);
uint32_t agent_current_round(const esgd_agent *agent);
/* The coordinator generation whose models the agent follows (see
 * coordinator_generation); models of older ones are refused as stale and
 * counted, so the program can tell the coordinator (in its status). */
uint32_t agent_generation(const esgd_agent *agent);
uint64_t agent_older_generation_models(const esgd_agent *agent);
const float *agent_params(const esgd_agent *agent);

/* Round t = the round of the last applied model: gradient on the round's
 * minibatch, sparsify, encode. *msg points into the agent's buffer, valid
 * until the next call. The minibatch is a pure function of (seed, agent,
 * round), so a restarted agent draws the same data for the same round. A
 * streamed shard is read now: its errors (a data file cut short or changed
 * since it was opened, dataset_read_batch) leave the agent as it was.
 * Idempotent per round: asked again for the round it last answered, it
 * returns the same message without touching its state (for re-sending). */
esgd_status agent_compute_update(esgd_agent *agent, const uint8_t **msg, size_t *size, esgd_error *err);

/* Loss and entries of the last computed update (for logs). */
float agent_last_loss(const esgd_agent *agent);
uint32_t agent_last_count(const esgd_agent *agent);
/* f16 values clamped to +-65504 so far (values format f16 only). */
uint64_t agent_clamped_values(const esgd_agent *agent);

/* Updates computed since agent_new (a re-sent one counts once). */
uint64_t agent_updates_computed(const esgd_agent *agent);

/* The last round answered (false if none yet). */
bool agent_answered_round(const esgd_agent *agent, uint32_t *round);

/* What a restarted gateway needs to continue where it was: the
 * sparsifier's state (importance, residual, previous selection, random
 * stream), the last answered round and its encoded update. The model is not
 * saved; it comes back from the retained model. Written atomically
 * (state_file.h). agent_restore refuses a file of another job configuration
 * or agent (ESGD_ERR_MISMATCH) and leaves the agent unchanged on any error. */
esgd_status agent_save(esgd_agent *agent, const char *path, esgd_error *err);
esgd_status agent_restore(esgd_agent *agent, const char *path, esgd_error *err);
/* State files agent_save has written, and (bytes != NULL) their bytes in
 * all; it builds every one in the same buffer, kept by the agent. */
uint64_t agent_saves(const esgd_agent *agent, uint64_t *bytes);

/* The agent's sparsifier, for tests. */
sparsifier *agent_sparsifier(esgd_agent *agent);

#endif
