/* The signed receive paths on arbitrary bytes: envelope_open with a fixed
 * key, coordinator_receive_update on a topic's agent and round, and
 * agent_apply_model, for the fuzzers' job (fuzz_common.h: the narrowed MLP,
 * d = 805, four agents, derived keys).
 *
 * An input is [mode][topic agent][topic round][message] (fuzz_signed.h):
 *   OPEN, UPDATE, MODEL: the message goes in as it is. Only the eight
 *     messages the job's real agents and coordinator signed
 *     (fuzz_signed_messages) may pass a signature check, each only under its
 *     signer's key: anything else must be refused as "signature" (or, for an
 *     update, "too_large" or a topic agent out of range), leaving the agent
 *     and the coordinator as they were.
 *   SIGNED_UPDATE, SIGNED_MODEL: the message is a body, signed here first
 *     with a key that is not the signer's (must be refused as "signature"),
 *     then with the right one, so the fuzzer reaches what lies behind the
 *     signature. The outcome must be what the body says, decoded here
 *     independently: the decoder's status, "mismatch" for another job or a
 *     payload that does not name its topic, "stale" for another run; a
 *     refused model leaves the agent as it was, an accepted update is the
 *     topic agent's for the open round and the model stays finite.
 * Whatever changed the agent or the coordinator is undone (both are made
 * again), so every input starts from the same state: the coordinator at
 * round 0 with nothing held, agent 0 holding the round 0 model. */
#include <math.h>

#include "esgd/codec.h"
#include "esgd/sparsifier.h"
#include "fuzz_signed.h"

static fuzz_job job;
static fuzz_signed_set known;
static esgd_coordinator *coordinator;
static esgd_agent *agent;
static float *baseline;      /* agent 0's parameters at round 0 */
static uint32_t dim;
static uint32_t slot;        /* the most entries an update may hold: the coordinator decodes into that many */
static codec_decoder *decoder;
static uint32_t *scratch_indices;
static float *scratch_values;
static esgd_buffer signing;  /* a body and its signature */

static void reset_coordinator(void)
{
    coordinator_free(coordinator);
    coordinator = fuzz_job_coordinator(&job);
}

static void reset_agent(void)
{
    esgd_error err = {0};
    agent_free(agent);
    agent = fuzz_job_agent(&job, 0);
    const fuzz_signed_message *round0 = &known.message[1];
    FUZZ_CHECK(round0->model && round0->round == 0);
    FUZZ_CHECK(agent_apply_model(agent, round0->data, round0->size, &err) == ESGD_OK);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    esgd_error err = {0};
    fuzz_job_init(&job);
    fuzz_signed_messages(&known, &job);
    dim = job_dimension(&job.config);
    FUZZ_CHECK(job.config.sparsify.method == SPARSIFY_ESGD); /* coordinator_new's rule for its decode capacity */
    slot = sparsifier_keep_count(dim, job.config.sparsify.drop_ratio);
    reset_coordinator();
    reset_agent();
    baseline = malloc((size_t)dim * sizeof(float));
    scratch_indices = malloc((size_t)dim * sizeof(uint32_t));
    scratch_values = malloc((size_t)dim * sizeof(float));
    FUZZ_CHECK(baseline && scratch_indices && scratch_values);
    memcpy(baseline, agent_params(agent), (size_t)dim * sizeof(float));
    decoder = codec_decoder_new(&err);
    FUZZ_CHECK(decoder != NULL);
    FUZZ_CHECK(buffer_init(&signing, 1u << 20, &err) == ESGD_OK);
    return 0;
}

/* The signed message data is, if its signer is `signer`. */
static const fuzz_signed_message *find_known(const uint8_t *data, size_t size, uint32_t signer)
{
    for (int i = 0; i < known.count; i++) {
        const fuzz_signed_message *m = &known.message[i];
        if (m->signer == signer && m->size == size && memcmp(m->data, data, size) == 0)
            return m;
    }
    return NULL;
}

static void check_agent_unchanged(void)
{
    FUZZ_CHECK(agent_current_round(agent) == 0);
    FUZZ_CHECK(agent_has_model(agent) && !agent_job_done(agent));
    FUZZ_CHECK(memcmp(agent_params(agent), baseline, (size_t)dim * sizeof(float)) == 0);
}

static void check_coordinator_unchanged(void)
{
    FUZZ_CHECK(coordinator_round(coordinator) == 0);
    FUZZ_CHECK(coordinator_participants(coordinator) == 0);
}

static void check_open(const uint8_t *msg, size_t size, uint32_t topic_agent)
{
    const verify_key *keys_tried[2] = {&job.keys.coordinator_public, &job.keys.agent_public[topic_agent % FUZZ_AGENTS]};
    const uint32_t signers[2] = {FUZZ_BY_COORDINATOR, topic_agent % FUZZ_AGENTS};
    for (int i = 0; i < 2; i++) {
        size_t body = SIZE_MAX;
        esgd_error err = {0};
        esgd_status st = envelope_open(msg, size, keys_tried[i], &body, &err);
        FUZZ_CHECK(st == ESGD_OK || st == ESGD_ERR_SIGNATURE);
        FUZZ_CHECK(st == err.status);
        FUZZ_CHECK((st == ESGD_OK) == (find_known(msg, size, signers[i]) != NULL));
        FUZZ_CHECK(st == ESGD_OK ? body == size - ENVELOPE_SIGNATURE_BYTES : body == SIZE_MAX);
    }
}

/* Receives and checks what every outcome promises; undoes an accepted one. */
static update_outcome receive(const uint8_t *msg, size_t size, uint32_t topic_agent, uint32_t topic_round,
                              esgd_error *err)
{
    coordinator_counters before = *coordinator_get_counters(coordinator);
    memset(err, 0, sizeof *err);
    update_outcome outcome = coordinator_receive_update(coordinator, msg, size, topic_agent, topic_round, err);
    const coordinator_counters *after = coordinator_get_counters(coordinator);
    if (outcome == UPDATE_REJECTED) {
        FUZZ_CHECK(err->status != ESGD_OK && err->message[0] != '\0');
        FUZZ_CHECK(after->rejected[err->status] == before.rejected[err->status] + 1);
        FUZZ_CHECK(after->accepted == before.accepted);
        check_coordinator_unchanged();
        return outcome;
    }
    /* Past the signature and every check: the topic agent's message. */
    const update_msg *u = coordinator_last_update(coordinator);
    FUZZ_CHECK(topic_agent < job.config.agents);
    FUZZ_CHECK(u->agent == topic_agent && u->round == topic_round);
    FUZZ_CHECK(u->run == FUZZ_RUN && strcmp(u->job, job.config.job) == 0);
    if (outcome == UPDATE_ACCEPTED) {
        FUZZ_CHECK(topic_round == 0);
        FUZZ_CHECK(after->accepted == before.accepted + 1);
        FUZZ_CHECK(coordinator_has_update(coordinator, topic_agent) && coordinator_participants(coordinator) == 1);
        FUZZ_CHECK(u->samples == job.config.batch && isfinite(u->loss));
        round_summary summary;
        coordinator_close_round(coordinator, &summary);
        const float *x = coordinator_params(coordinator);
        for (uint32_t j = 0; j < dim; j++)
            FUZZ_CHECK(isfinite(x[j]));
    } else {
        FUZZ_CHECK(outcome == UPDATE_EARLY && topic_round > 0); /* nothing is held, no round closed */
        FUZZ_CHECK(err->status == ESGD_ERR_MISMATCH);
    }
    reset_coordinator();
    return outcome;
}

static void check_update(const uint8_t *msg, size_t size, uint32_t topic_agent, uint32_t topic_round)
{
    esgd_error err;
    update_outcome outcome = receive(msg, size, topic_agent, topic_round, &err);
    const fuzz_signed_message *k = topic_agent < job.config.agents ? find_known(msg, size, topic_agent) : NULL;
    if (!k) {
        FUZZ_CHECK(outcome == UPDATE_REJECTED);
        FUZZ_CHECK(err.status == ESGD_ERR_SIGNATURE || err.status == ESGD_ERR_TOO_LARGE ||
                   (err.status == ESGD_ERR_RANGE && topic_agent >= job.config.agents));
    } else if (k->round != topic_round) {
        FUZZ_CHECK(outcome == UPDATE_REJECTED && err.status == ESGD_ERR_MISMATCH);
    } else {
        FUZZ_CHECK(outcome == (topic_round == 0 ? UPDATE_ACCEPTED : UPDATE_EARLY));
    }
}

/* Applies and checks; a refused model must leave the agent as it was. */
static esgd_status apply(const uint8_t *msg, size_t size)
{
    esgd_error err = {0};
    esgd_status st = agent_apply_model(agent, msg, size, &err);
    FUZZ_CHECK(st == err.status);
    if (st != ESGD_OK) {
        FUZZ_CHECK(err.message[0] != '\0');
        check_agent_unchanged();
        return st;
    }
    FUZZ_CHECK(agent_current_round(agent) <= job_total_rounds(&job.config));
    const float *x = agent_params(agent);
    for (uint32_t j = 0; j < dim; j++)
        FUZZ_CHECK(isfinite(x[j]));
    reset_agent();
    return st;
}

static void check_model(const uint8_t *msg, size_t size)
{
    esgd_status st = apply(msg, size);
    const fuzz_signed_message *k = find_known(msg, size, FUZZ_BY_COORDINATOR);
    if (!k)
        FUZZ_CHECK(st == ESGD_ERR_SIGNATURE);
    else /* every model of the run applies at round 0; the config is no model */
        FUZZ_CHECK(st == (k->model ? ESGD_OK : ESGD_ERR_MISMATCH));
}

/* body signed with key into the signing buffer; false if it does not fit. */
static bool sign(const uint8_t *body, size_t size, const signing_key *key)
{
    if (size > signing.capacity - ENVELOPE_SIGNATURE_BYTES)
        return false;
    memcpy(signing.data, body, size);
    signing.size = size;
    esgd_error err = {0};
    FUZZ_CHECK(envelope_sign(&signing, key, &err) == ESGD_OK);
    return true;
}

static void check_signed_update(const uint8_t *body, size_t size, uint32_t topic_agent, uint32_t topic_round)
{
    bool in_job = topic_agent < job.config.agents;
    uint32_t signer = in_job ? topic_agent : 0;
    esgd_error err;
    /* Another agent's signature, or the coordinator's, is no signature. */
    if (!sign(body, size, &job.keys.agent[(signer + 1) % job.config.agents]))
        return;
    FUZZ_CHECK(receive(signing.data, signing.size, topic_agent, topic_round, &err) == UPDATE_REJECTED);
    FUZZ_CHECK(err.status == ESGD_ERR_SIGNATURE || err.status == ESGD_ERR_TOO_LARGE || !in_job);
    sign(body, size, &job.keys.coordinator);
    FUZZ_CHECK(receive(signing.data, signing.size, topic_agent, topic_round, &err) == UPDATE_REJECTED);
    FUZZ_CHECK(err.status == ESGD_ERR_SIGNATURE || err.status == ESGD_ERR_TOO_LARGE || !in_job);

    sign(body, size, &job.keys.agent[signer]);
    update_outcome outcome = receive(signing.data, signing.size, topic_agent, topic_round, &err);
    if (signing.size > codec_update_bound(dim)) {
        FUZZ_CHECK(outcome == UPDATE_REJECTED && err.status == ESGD_ERR_TOO_LARGE);
        return;
    }
    if (!in_job) {
        FUZZ_CHECK(outcome == UPDATE_REJECTED && err.status == ESGD_ERR_RANGE);
        return;
    }
    if (size == 0) { /* a signature alone is no message */
        FUZZ_CHECK(outcome == UPDATE_REJECTED && err.status == ESGD_ERR_SIGNATURE);
        return;
    }
    /* What the body says, decoded here. */
    update_msg u = {.grad = {.capacity = slot, .indices = scratch_indices, .values = scratch_values}};
    esgd_error decoded = {0};
    esgd_status st = codec_decode_update(decoder, body, size, dim, &u, &decoded);
    if (st == ESGD_OK && strcmp(u.job, job.config.job) != 0)
        st = ESGD_ERR_MISMATCH;
    else if (st == ESGD_OK && (u.agent != topic_agent || u.round != topic_round))
        st = ESGD_ERR_MISMATCH;
    else if (st == ESGD_OK && u.run != FUZZ_RUN)
        st = ESGD_ERR_STALE;
    if (st != ESGD_OK) {
        FUZZ_CHECK(outcome == UPDATE_REJECTED && err.status == st);
        return;
    }
    if (topic_round > 0)
        FUZZ_CHECK(outcome == UPDATE_EARLY);
    else /* the aggregator may still refuse it (samples, norm, ...) */
        FUZZ_CHECK(outcome == UPDATE_ACCEPTED || outcome == UPDATE_REJECTED);
}

static void check_signed_model(const uint8_t *body, size_t size)
{
    /* An agent's signature is not the coordinator's. */
    if (!sign(body, size, &job.keys.agent[0]))
        return;
    FUZZ_CHECK(apply(signing.data, signing.size) == ESGD_ERR_SIGNATURE);

    sign(body, size, &job.keys.coordinator);
    esgd_status st = apply(signing.data, signing.size);
    model_msg m = {.params = {.capacity = dim, .indices = scratch_indices, .values = scratch_values}};
    esgd_error decoded = {0};
    esgd_status want = codec_decode_model(decoder, body, size, dim, &m, &decoded);
    if (want == ESGD_OK && strcmp(m.job, job.config.job) != 0)
        want = ESGD_ERR_MISMATCH;
    else if (want == ESGD_OK && m.run != FUZZ_RUN)
        want = ESGD_ERR_STALE;
    else if (want == ESGD_OK && m.round > job_total_rounds(&job.config))
        want = ESGD_ERR_RANGE;
    if (size == 0) /* a signature alone is no message */
        FUZZ_CHECK(st == ESGD_ERR_SIGNATURE);
    else if (want != ESGD_OK)
        FUZZ_CHECK(st == want);
    else /* a delta on another round than 0, or from a newer coordinator generation than the agent's 0, is a
          * mismatch (only a full model may switch generation) */
        FUZZ_CHECK(st == ESGD_OK || (st == ESGD_ERR_MISMATCH && m.form == MODEL_FORM_DELTA &&
                                     (m.base_round != 0 || m.generation > 0)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < FUZZ_ENVELOPE_HEADER)
        return 0;
    uint32_t topic_agent = data[1] % (FUZZ_AGENTS + 1); /* FUZZ_AGENTS: not an agent of the job */
    uint32_t topic_round = data[2] % 4;
    const uint8_t *msg = data + FUZZ_ENVELOPE_HEADER;
    size_t msg_size = size - FUZZ_ENVELOPE_HEADER;
    switch (data[0] % FUZZ_ENVELOPE_MODES) {
    case FUZZ_ENVELOPE_OPEN: check_open(msg, msg_size, topic_agent); break;
    case FUZZ_ENVELOPE_UPDATE: check_update(msg, msg_size, topic_agent, topic_round); break;
    case FUZZ_ENVELOPE_MODEL: check_model(msg, msg_size); break;
    case FUZZ_ENVELOPE_SIGNED_UPDATE: check_signed_update(msg, msg_size, topic_agent, topic_round); break;
    case FUZZ_ENVELOPE_SIGNED_MODEL: check_signed_model(msg, msg_size); break;
    }
    return 0;
}
