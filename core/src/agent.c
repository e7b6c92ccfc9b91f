/* The agent's round function shared by the simulator and the MQTT agent:
 * model message in, update message out, with the minibatch schedule, the
 * model and the sparsifier state in between. */
#include "esgd/agent.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/codec.h"
#include "esgd/envelope.h"
#include "esgd/model.h"
#include "esgd/rng.h"
#include "esgd/state_file.h"

struct esgd_agent {
    esgd_job_config cfg;
    uint32_t id;
    const esgd_dataset *shard;
    esgd_model *model;
    sparsifier *sparsify;
    codec_decoder *decoder;
    signing_key key;       /* signs the updates */
    verify_key own_public; /* checks a stored update on restore */
    verify_key coordinator;/* checks every model */
    bool has_keys;
    esgd_buffer out;       /* encoded, signed update */
    model_msg incoming;    /* decode target; params arrays sized d */

    bool has_model;
    bool done;
    uint32_t round;        /* round of the model held */
    uint32_t generation;   /* of the coordinator whose models we follow */
    uint64_t older_generation_models; /* refused: from a coordinator start older than ours */
    int8_t loss_fell;      /* signal that came with it */

    uint32_t *order;       /* (shard count) example order of the current pass */
    int64_t order_pass;    /* which pass `order` holds, -1 none */
    uint32_t *batch_idx;   /* (batch) */
    float *batch_x;        /* (batch, input size) */
    uint8_t *batch_y;      /* (batch) */

    float last_loss;
    uint32_t last_count;
    uint64_t clamped;      /* f16 values clamped to the largest finite half */
    bool answered;         /* out holds the update for answered_round */
    uint32_t answered_round;

    esgd_buffer config_bytes; /* the job configuration's encoding, stored in the state */
    state_writer saved;       /* streams every save through its one small buffer */
    uint64_t saves, saved_bytes; /* state files written and their bytes (header and checksum too) */
    uint64_t computed;        /* updates computed (not counting re-sends) */
};

esgd_agent *agent_new(const esgd_job_config *cfg, uint32_t agent_id, const esgd_dataset *shard, esgd_error *err)
{
    if (job_config_validate(cfg, err) != ESGD_OK)
        return NULL;
    if (agent_id >= cfg->agents) {
        esgd_error_set(err, ESGD_ERR_ARG, "agent id %u not in 0..%u", agent_id, cfg->agents - 1);
        return NULL;
    }
    model_spec spec;
    if (job_model_spec(cfg, &spec, err) != ESGD_OK)
        return NULL;
    uint32_t input_size = tensor_size(&spec.layers[0].in);
    if (!shard || shard->count == 0 || shard->example_size != input_size) {
        esgd_error_set(err, ESGD_ERR_DIMENSION,
                       "agent %u: the job's examples are %s (%u values) but this agent's data has %u examples of %u "
                       "values",
                       agent_id, cfg->input, input_size, shard ? shard->count : 0, shard ? shard->example_size : 0);
        return NULL;
    }
    esgd_agent *a = calloc(1, sizeof *a);
    if (!a) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "agent: out of memory");
        return NULL;
    }
    a->cfg = *cfg;
    a->id = agent_id;
    a->shard = shard;
    a->order_pass = -1;
    a->loss_fell = -1;
    uint32_t d = job_dimension(cfg);
    sparsifier_config sc = cfg->sparsify;
    sc.seed = cfg->seed;
    if (!(a->model = model_new(&spec, cfg->batch, err)) ||
        !(a->sparsify = sparsifier_new(&sc, d, agent_id, err)) || !(a->decoder = codec_decoder_new(err)) ||
        buffer_init(&a->out, codec_update_bound(d), err) != ESGD_OK ||
        buffer_init(&a->config_bytes, CODEC_CONFIG_BOUND, err) != ESGD_OK ||
        codec_encode_config(&a->config_bytes, &a->cfg, err) != ESGD_OK)
        goto fail;
    state_writer_init(&a->saved);
    a->incoming.params.capacity = d;
    a->incoming.params.indices = malloc((size_t)d * sizeof(uint32_t));
    a->incoming.params.values = malloc((size_t)d * sizeof(float));
    a->order = malloc((size_t)shard->count * sizeof(uint32_t));
    a->batch_idx = malloc((size_t)cfg->batch * sizeof(uint32_t));
    a->batch_x = malloc((size_t)cfg->batch * input_size * sizeof(float));
    a->batch_y = malloc(cfg->batch);
    if (!a->incoming.params.indices || !a->incoming.params.values || !a->order || !a->batch_idx ||
        !a->batch_x || !a->batch_y) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "agent: out of memory");
        goto fail;
    }
    return a;
fail:
    agent_free(a);
    return NULL;
}

void agent_free(esgd_agent *a)
{
    if (!a)
        return;
    model_free(a->model);
    sparsifier_free(a->sparsify);
    codec_decoder_free(a->decoder);
    buffer_destroy(&a->out);
    buffer_destroy(&a->config_bytes);
    state_writer_destroy(&a->saved);
    free(a->incoming.params.indices);
    free(a->incoming.params.values);
    free(a->order);
    free(a->batch_idx);
    free(a->batch_x);
    free(a->batch_y);
    free(a);
}

void agent_set_keys(esgd_agent *a, const signing_key *own, const verify_key *coordinator)
{
    a->key = *own;
    memcpy(a->own_public.bytes, own->secret + 32, sizeof a->own_public.bytes);
    a->coordinator = *coordinator;
    a->has_keys = true;
}

esgd_status agent_apply_model(esgd_agent *a, const uint8_t *data, size_t size, esgd_error *err)
{
    uint32_t d = a->model->num_params;
    model_msg *m = &a->incoming;
    size_t body = 0;
    if (!a->has_keys)
        return esgd_error_set(err, ESGD_ERR_SIGNATURE, "agent %u has no coordinator key", a->id);
    esgd_status st = envelope_open(data, size, &a->coordinator, &body, err);
    if (st == ESGD_OK)
        st = codec_decode_model(a->decoder, data, body, d, m, err);
    if (st != ESGD_OK)
        return st;
    if (strcmp(m->job, a->cfg.job) != 0)
        return esgd_error_set(err, ESGD_ERR_MISMATCH, "model for job '%s', agent is in job '%s'", m->job,
                              a->cfg.job);
    if (m->run != a->cfg.run)
        return esgd_error_set(err, ESGD_ERR_STALE, "model of run %016llx, agent is in run %016llx",
                              (unsigned long long)m->run, (unsigned long long)a->cfg.run);
    if (m->round > job_total_rounds(&a->cfg))
        return esgd_error_set(err, ESGD_ERR_RANGE, "model for round %u, the job has %u rounds", m->round,
                              job_total_rounds(&a->cfg));
    if (m->generation < a->generation) {
        a->older_generation_models++;
        return esgd_error_set(err, ESGD_ERR_STALE, "model of coordinator generation %u, agent follows %u",
                              m->generation, a->generation);
    }
    /* A newer coordinator start leads, even back to an earlier round (it
     * was restored from an older checkpoint); only its full model will do. */
    bool newer = m->generation > a->generation;
    if (newer && m->form != MODEL_FORM_FULL)
        return esgd_error_set(err, ESGD_ERR_MISMATCH, "model delta from coordinator generation %u, agent follows %u",
                              m->generation, a->generation);
    if (a->has_model && !newer && m->round < a->round)
        return ESGD_OK;
    /* Restored from its state, the agent holds no model but has answered a
     * round: an older model (the retained one may be rounds old) would make
     * it compute a round it has gone past, and its residuals would differ
     * from the run's. It waits for its round or a later one. */
    if (!a->has_model && a->answered && !newer && m->round < a->answered_round)
        return ESGD_OK;
    if (a->has_model && m->round == a->round && m->form == MODEL_FORM_DELTA)
        return ESGD_OK; /* already applied; its base is no longer what we hold */
    if (m->form == MODEL_FORM_DELTA && (!a->has_model || m->base_round != a->round))
        return esgd_error_set(err, ESGD_ERR_MISMATCH,
                              "model delta for round %u applies to round %u, agent holds %s%u", m->round,
                              m->base_round, a->has_model ? "round " : "no model, ", a->round);
    if (m->form == MODEL_FORM_FULL) {
        memcpy(a->model->params, m->params.values, (size_t)d * sizeof(float));
    } else {
        for (uint32_t i = 0; i < m->params.count; i++)
            a->model->params[m->params.indices[i]] = m->params.values[i];
    }
    a->has_model = true;
    a->generation = m->generation;
    a->round = m->round;
    a->loss_fell = m->loss_fell;
    a->done = m->done != 0;
    return ESGD_OK;
}

bool agent_has_model(const esgd_agent *a)
{
    return a->has_model && !a->done;
}

bool agent_job_done(const esgd_agent *a)
{
    return a->done;
}

uint32_t agent_current_round(const esgd_agent *a)
{
    return a->round;
}

uint32_t agent_generation(const esgd_agent *a)
{
    return a->generation;
}

uint64_t agent_older_generation_models(const esgd_agent *a)
{
    return a->older_generation_models;
}

const float *agent_params(const esgd_agent *a)
{
    return a->model->params;
}

float agent_last_loss(const esgd_agent *a)
{
    return a->last_loss;
}

uint32_t agent_last_count(const esgd_agent *a)
{
    return a->last_count;
}

uint64_t agent_clamped_values(const esgd_agent *a)
{
    return a->clamped;
}

bool agent_answered_round(const esgd_agent *a, uint32_t *round)
{
    if (a->answered && round)
        *round = a->answered_round;
    return a->answered;
}

sparsifier *agent_sparsifier(esgd_agent *a)
{
    return a->sparsify;
}

/* Pass p over the shard is a fresh shuffle seeded by (seed, agent, p), so
 * the batch of round t depends only on t. The examples are read now, from
 * memory or (a streamed shard) from the file. */
static esgd_status fill_round_batch(esgd_agent *a, uint32_t round, esgd_error *err)
{
    uint32_t n = a->shard->count;
    uint64_t first = (uint64_t)round * a->cfg.batch;
    for (uint32_t i = 0; i < a->cfg.batch; i++) {
        uint64_t pos = first + i;
        int64_t pass = (int64_t)(pos / n);
        if (pass != a->order_pass) {
            esgd_rng rng;
            rng_seed(&rng, a->cfg.seed ^ ((uint64_t)pass << 32), 0x1000 + a->id);
            for (uint32_t k = 0; k < n; k++)
                a->order[k] = k;
            for (uint32_t k = n - 1; k > 0; k--) {
                uint32_t j = rng_below(&rng, k + 1);
                uint32_t t = a->order[k];
                a->order[k] = a->order[j];
                a->order[j] = t;
            }
            a->order_pass = pass;
        }
        a->batch_idx[i] = a->order[pos % n];
    }
    return dataset_read_batch(a->shard, a->batch_idx, a->cfg.batch, a->batch_x, a->batch_y, err);
}

esgd_status agent_compute_update(esgd_agent *a, const uint8_t **msg, size_t *size, esgd_error *err)
{
    if (!a->has_model)
        return esgd_error_set(err, ESGD_ERR_ARG, "agent %u has no model yet", a->id);
    if (a->done)
        return esgd_error_set(err, ESGD_ERR_ARG, "agent %u: job is done", a->id);
    if (!a->has_keys)
        return esgd_error_set(err, ESGD_ERR_SIGNATURE, "agent %u has no signing key", a->id);
    if (a->answered && a->answered_round == a->round) {
        *msg = a->out.data;
        *size = a->out.size;
        return ESGD_OK;
    }
    esgd_status st = fill_round_batch(a, a->round, err);
    if (st != ESGD_OK) {
        esgd_error_prefix(err, "agent %u round %u: reading its minibatch", a->id, a->round);
        return st;
    }
    float loss = 0;
    st = model_forward_backward(a->model, a->batch_x, a->batch_y, a->cfg.batch, &loss);
    if (st != ESGD_OK)
        return esgd_error_set(err, st, "agent %u round %u: forward/backward failed", a->id, a->round);
    if (!isfinite(loss))
        return esgd_error_set(err, ESGD_ERR_NONFINITE, "agent %u round %u: training diverged (loss %g)", a->id,
                              a->round, (double)loss);
    update_msg u;
    memset(&u, 0, sizeof u);
    strcpy(u.job, a->cfg.job);
    u.run = a->cfg.run;
    u.round = a->round;
    u.agent = a->id;
    u.samples = a->cfg.batch;
    u.loss = loss;
    st = sparsifier_select(a->sparsify, a->model->grads, a->round, a->loss_fell == 1, loss, &u.grad, err);
    if (st != ESGD_OK)
        return st;
    /* A value binary16 cannot hold would make the whole update unsendable
     * (and the agent stop for good): it goes out as the largest finite half
     * instead, counted; what the clamp cut off is not fed back. */
    if (a->cfg.values == VALUE_FORMAT_F16)
        a->clamped += codec_clamp_f16(u.grad.values, u.grad.count);
    st = codec_encode_update(&a->out, &u, a->cfg.values, err);
    if (st == ESGD_OK)
        st = envelope_sign(&a->out, &a->key, err);
    if (st != ESGD_OK)
        return st;
    a->last_loss = loss;
    a->last_count = u.grad.count;
    a->answered = true;
    a->answered_round = a->round;
    a->computed++;
    *msg = a->out.data;
    *size = a->out.size;
    return ESGD_OK;
}

/* The job configuration is stored as its wire encoding (a->config_bytes),
 * so any setting that differs makes the state file refuse to load. */
esgd_status agent_save(esgd_agent *a, const char *path, esgd_error *err)
{
    state_writer *w = &a->saved;
    esgd_status st = state_stream_begin(w, path, STATE_KIND_AGENT, err);
    if (st != ESGD_OK)
        return st;
    state_put_bytes(w, a->config_bytes.data, a->config_bytes.size);
    state_put_u32(w, a->id);
    state_put_u32(w, a->answered ? 1 : 0);
    state_put_u32(w, a->answered_round);
    state_put_bytes(w, a->out.data, a->answered ? a->out.size : 0);
    sparsifier_save_state(a->sparsify, w);
    state_put_u32(w, a->generation); /* added later: older files end before it */
    uint64_t bytes = 0;
    if ((st = state_stream_end(w, &bytes, err)) == ESGD_OK) {
        a->saves++;
        a->saved_bytes += bytes;
    }
    return st;
}

uint64_t agent_updates_computed(const esgd_agent *a)
{
    return a->computed;
}

uint64_t agent_saves(const esgd_agent *a, uint64_t *bytes)
{
    if (bytes)
        *bytes = a->saved_bytes;
    return a->saves;
}

esgd_status agent_restore(esgd_agent *a, const char *path, esgd_error *err)
{
    const esgd_buffer config = a->config_bytes;
    state_reader r;
    esgd_status st = state_file_read(path, STATE_KIND_AGENT, &r, err);
    if (st != ESGD_OK)
        return st;
    const uint8_t *saved_config = NULL, *update = NULL;
    size_t saved_size = 0, update_size = 0;
    uint32_t id = 0, answered = 0, answered_round = 0;
    if ((st = state_get_bytes(&r, &saved_config, &saved_size, err)) != ESGD_OK ||
        (st = state_get_u32(&r, &id, err)) != ESGD_OK || (st = state_get_u32(&r, &answered, err)) != ESGD_OK ||
        (st = state_get_u32(&r, &answered_round, err)) != ESGD_OK ||
        (st = state_get_bytes(&r, &update, &update_size, err)) != ESGD_OK)
        goto out;
    if (saved_size != config.size || memcmp(saved_config, config.data, config.size) != 0 || id != a->id) {
        st = esgd_error_set(err, ESGD_ERR_MISMATCH,
                            "state %s belongs to another job configuration or agent (saved agent %u, this is %u)",
                            path, id, a->id);
        goto out;
    }
    if (update_size > a->out.capacity || (answered && update_size == 0)) {
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "state %s: stored update of %zu bytes is invalid", path,
                            update_size);
        goto out;
    }
    if (answered) {
        /* The stored update is re-sent as it is, so it must be one this
         * agent could have sent for that round. */
        update_msg check;
        memset(&check, 0, sizeof check);
        check.grad.capacity = a->model->num_params;
        check.grad.indices = a->incoming.params.indices;
        check.grad.values = a->incoming.params.values;
        size_t body = 0;
        if (!a->has_keys)
            st = esgd_error_set(err, ESGD_ERR_SIGNATURE, "no key to check the stored update with");
        else if ((st = envelope_open(update, update_size, &a->own_public, &body, err)) == ESGD_OK)
            st = codec_decode_update(a->decoder, update, body, a->model->num_params, &check, err);
        if (st != ESGD_OK)
            goto out;
        if (check.agent != a->id || check.round != answered_round || strcmp(check.job, a->cfg.job) != 0 ||
            check.run != a->cfg.run) {
            st = esgd_error_set(err, ESGD_ERR_MISMATCH, "state %s: stored update is agent %u round %u of job '%s'",
                                path, check.agent, check.round, check.job);
            goto out;
        }
    }
    /* The sparsifier restores all or nothing, so it goes last. */
    if ((st = sparsifier_load_state(a->sparsify, &r, err)) != ESGD_OK)
        goto out;
    uint32_t generation = 0;
    if (state_reader_left(&r) && (st = state_get_u32(&r, &generation, err)) != ESGD_OK)
        goto out;
    a->generation = generation;
    memcpy(a->out.data, update, update_size);
    a->out.size = update_size;
    a->answered = answered != 0;
    a->answered_round = answered_round;
out:
    if (st != ESGD_OK)
        esgd_error_prefix(err, "agent %u restoring %s", a->id, path);
    state_reader_destroy(&r);
    return st;
}
