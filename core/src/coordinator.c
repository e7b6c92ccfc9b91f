/* The coordinator's round function shared by the simulator and the MQTT
 * coordinator: publishes x_t, checks and holds updates, closes rounds with
 * the aggregator and keeps the loss signal and the counters. */
#include "esgd/coordinator.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/codec.h"
#include "esgd/model.h"
#include "esgd/state_file.h"

/* Largest batch used when evaluating the test set. */
#define EVAL_BATCH 500

struct esgd_coordinator {
    esgd_job_config cfg;
    uint32_t dim;
    uint32_t total_rounds;
    uint32_t round;            /* the open round */
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
    double max_norm;           /* 0: no bound */
    norm_action norm_action;
    coordinator_counters counters;
};

esgd_coordinator *coordinator_new(const esgd_job_config *cfg, esgd_error *err)
{
    if (job_config_validate(cfg, err) != ESGD_OK)
        return NULL;
    esgd_coordinator *c = calloc(1, sizeof *c);
    if (!c) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "coordinator: out of memory");
        return NULL;
    }
    c->cfg = *cfg;
    c->dim = job_dimension(cfg);
    c->total_rounds = job_total_rounds(cfg);
    /* An update can never hold more entries than its method sends. */
    uint32_t slot = c->dim;
    if (cfg->sparsify.method == SPARSIFY_ESGD || cfg->sparsify.method == SPARSIFY_TOPK ||
        cfg->sparsify.method == SPARSIFY_RANDK)
        slot = sparsifier_keep_count(c->dim, cfg->sparsify.drop_ratio);
    if (cfg->sparsify.method == SPARSIFY_DGC) /* its warm-up sends the most in round 0 */
        slot = sparsifier_keep_at(&cfg->sparsify, c->dim, 0);
    if (!(c->model = model_new(cfg->model, EVAL_BATCH, err)) ||
        !(c->agg = aggregator_new(c->dim, cfg->agents, slot, err)) || !(c->decoder = codec_decoder_new(err)) ||
        buffer_init(&c->out, codec_model_bound(c->dim), err) != ESGD_OK)
        goto fail;
    c->incoming.grad.capacity = slot;
    c->incoming.grad.indices = malloc((size_t)slot * sizeof(uint32_t));
    c->incoming.grad.values = malloc((size_t)slot * sizeof(float));
    c->changed = malloc((size_t)c->dim * sizeof(uint32_t));
    c->delta_values = malloc((size_t)c->dim * sizeof(float));
    c->loss_history = malloc((size_t)(c->total_rounds ? c->total_rounds : 1) * sizeof(float));
    if (!c->incoming.grad.indices || !c->incoming.grad.values || !c->changed || !c->delta_values || !c->loss_history) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "coordinator: out of memory");
        goto fail;
    }
    model_init_params(c->model, cfg->seed);
    return c;
fail:
    coordinator_free(c);
    return NULL;
}

void coordinator_free(esgd_coordinator *c)
{
    if (!c)
        return;
    model_free(c->model);
    aggregator_free(c->agg);
    codec_decoder_free(c->decoder);
    buffer_destroy(&c->out);
    free(c->incoming.grad.indices);
    free(c->incoming.grad.values);
    free(c->changed);
    free(c->delta_values);
    free(c->loss_history);
    free(c);
}

const esgd_job_config *coordinator_config(const esgd_coordinator *c)
{
    return &c->cfg;
}

uint32_t coordinator_round(const esgd_coordinator *c)
{
    return c->round;
}

bool coordinator_done(const esgd_coordinator *c)
{
    return c->round >= c->total_rounds;
}

const float *coordinator_params(const esgd_coordinator *c)
{
    return c->model->params;
}

const coordinator_counters *coordinator_get_counters(const esgd_coordinator *c)
{
    return &c->counters;
}

uint32_t coordinator_participants(const esgd_coordinator *c)
{
    return aggregator_count(c->agg);
}

bool coordinator_has_update(const esgd_coordinator *c, uint32_t agent)
{
    return aggregator_has(c->agg, agent);
}

const float *coordinator_loss_history(const esgd_coordinator *c)
{
    return c->loss_history;
}

esgd_status coordinator_config_message(esgd_coordinator *c, const uint8_t **msg, size_t *size, esgd_error *err)
{
    esgd_status st = codec_encode_config(&c->out, &c->cfg, err);
    if (st == ESGD_OK) {
        *msg = c->out.data;
        *size = c->out.size;
    }
    return st;
}

/* The loss signal after round t closed: L_t < L_{t-1} as 1 or 0, -1 when
 * either is unknown (t < 1, or a round closed with no update). */
static int8_t loss_fell_after(const esgd_coordinator *c, uint32_t t)
{
    if (t < 1 || t >= c->round + 1)
        return -1;
    float now = c->loss_history[t], before = c->loss_history[t - 1];
    if (!isfinite(now) || !isfinite(before))
        return -1;
    return now < before;
}

/* Header fields of the model message for the open round. */
static void model_header(const esgd_coordinator *c, model_msg *m)
{
    memset(m, 0, sizeof *m);
    strcpy(m->job, c->cfg.job);
    m->round = c->round;
    m->base_round = c->round;
    m->lr = (float)job_lr_at_round(&c->cfg, coordinator_done(c) ? c->total_rounds - 1 : c->round);
    m->prev_loss = c->round > 0 ? c->loss_history[c->round - 1] : NAN;
    m->loss_fell = c->round >= 1 ? loss_fell_after(c, c->round - 1) : -1;
    m->done = coordinator_done(c);
    m->params.dim = c->dim;
}

static esgd_status encode_full(esgd_coordinator *c, esgd_error *err)
{
    model_msg m;
    model_header(c, &m);
    m.form = MODEL_FORM_FULL;
    m.params.count = c->dim;
    m.params.capacity = c->dim;
    m.params.values = c->model->params;
    return codec_encode_model(&c->out, &m, err);
}

esgd_status coordinator_full_model(esgd_coordinator *c, const uint8_t **msg, size_t *size, esgd_error *err)
{
    esgd_status st = encode_full(c, err);
    if (st == ESGD_OK) {
        *msg = c->out.data;
        *size = c->out.size;
        c->counters.retained_bytes += c->out.size;
    }
    return st;
}

esgd_status coordinator_round_model(esgd_coordinator *c, const uint8_t **msg, size_t *size, esgd_error *err)
{
    esgd_status st;
    /* A delta costs 4 bytes a value plus its indices; above about half the
     * coordinates the full form is smaller, so only try the delta below. */
    if (c->delta_valid && (uint64_t)c->changed_count * 2 < c->dim) {
        model_msg m;
        model_header(c, &m);
        m.form = MODEL_FORM_DELTA;
        m.base_round = c->round - 1;
        m.params.count = c->changed_count;
        m.params.capacity = c->dim;
        m.params.indices = c->changed;
        for (uint32_t i = 0; i < c->changed_count; i++)
            c->delta_values[i] = c->model->params[c->changed[i]];
        m.params.values = c->delta_values;
        st = codec_encode_model(&c->out, &m, err);
    } else {
        st = encode_full(c, err);
    }
    if (st != ESGD_OK)
        return st;
    c->counters.broadcast_bytes += c->out.size;
    c->counters.downlink_bytes += (uint64_t)c->out.size * c->cfg.agents;
    *msg = c->out.data;
    *size = c->out.size;
    return ESGD_OK;
}

esgd_status coordinator_set_norm_bound(esgd_coordinator *c, double max_norm, norm_action action, esgd_error *err)
{
    if (!(max_norm >= 0) || !isfinite(max_norm) || (action != NORM_ACTION_REJECT && action != NORM_ACTION_CLIP))
        return esgd_error_set(err, ESGD_ERR_ARG, "update norm bound %g must be finite and >= 0", max_norm);
    c->max_norm = max_norm;
    c->norm_action = action;
    return ESGD_OK;
}

/* Applies the norm bound to a decoded update: ESGD_OK (possibly scaled
 * down, *clipped set) or ESGD_ERR_RANGE. */
static esgd_status bound_norm(const esgd_coordinator *c, update_msg *u, bool *clipped, esgd_error *err)
{
    *clipped = false;
    if (c->max_norm <= 0)
        return ESGD_OK;
    double sum = 0;
    for (uint32_t i = 0; i < u->grad.count; i++)
        sum += (double)u->grad.values[i] * u->grad.values[i];
    double norm = sqrt(sum);
    if (norm <= c->max_norm)
        return ESGD_OK;
    if (c->norm_action == NORM_ACTION_REJECT)
        return esgd_error_set(err, ESGD_ERR_RANGE, "agent %u round %u: update norm %g over the bound %g", u->agent,
                              u->round, norm, c->max_norm);
    float scale = (float)(c->max_norm / norm);
    for (uint32_t i = 0; i < u->grad.count; i++)
        u->grad.values[i] *= scale;
    *clipped = true;
    return ESGD_OK;
}

update_outcome coordinator_receive_update(esgd_coordinator *c, const uint8_t *data, size_t size, esgd_error *err)
{
    c->counters.uplink_bytes += size;
    update_msg *u = &c->incoming;
    esgd_status st = ESGD_OK;
    /* Nothing an agent may send is larger: refuse before decoding. */
    if (size > codec_update_bound(c->dim))
        st = esgd_error_set(err, ESGD_ERR_TOO_LARGE, "update of %zu bytes, the largest possible is %zu", size,
                            codec_update_bound(c->dim));
    if (st == ESGD_OK)
        st = codec_decode_update(c->decoder, data, size, c->dim, u, err);
    if (st == ESGD_OK && strcmp(u->job, c->cfg.job) != 0)
        st = esgd_error_set(err, ESGD_ERR_MISMATCH, "update for job '%s', this job is '%s'", u->job, c->cfg.job);
    if (st == ESGD_OK && u->agent >= c->cfg.agents)
        st = esgd_error_set(err, ESGD_ERR_RANGE, "update from agent %u, job has agents 0..%u", u->agent,
                            c->cfg.agents - 1);
    if (st != ESGD_OK) {
        c->counters.rejected[st]++;
        return UPDATE_REJECTED;
    }
    if (u->round < c->round) {
        c->counters.late++;
        esgd_error_set(err, ESGD_ERR_MISMATCH, "agent %u update for closed round %u (open: %u)", u->agent,
                       u->round, c->round);
        return UPDATE_LATE;
    }
    if (u->round > c->round || coordinator_done(c)) {
        c->counters.early++;
        esgd_error_set(err, ESGD_ERR_MISMATCH, "agent %u update for round %u, open round is %u", u->agent,
                       u->round, c->round);
        return UPDATE_EARLY;
    }
    if (aggregator_has(c->agg, u->agent)) {
        c->counters.duplicate++;
        esgd_error_set(err, ESGD_ERR_MISMATCH, "agent %u round %u: duplicate update ignored", u->agent, u->round);
        return UPDATE_DUPLICATE;
    }
    bool clipped = false;
    st = bound_norm(c, u, &clipped, err);
    if (st == ESGD_OK)
        st = aggregator_add(c->agg, u->agent, &u->grad, u->samples, u->loss, err);
    if (st != ESGD_OK) {
        c->counters.rejected[st]++;
        return UPDATE_REJECTED;
    }
    c->counters.clipped += clipped;
    c->counters.accepted++;
    c->counters.accepted_uplink_bytes += size;
    return UPDATE_ACCEPTED;
}

const update_msg *coordinator_last_update(const esgd_coordinator *c)
{
    return &c->incoming;
}

void coordinator_close_round(esgd_coordinator *c, round_summary *summary)
{
    memset(summary, 0, sizeof *summary);
    if (coordinator_done(c))
        return;
    summary->round = c->round;
    summary->lr = job_lr_at_round(&c->cfg, c->round);
    aggregator_apply(c->agg, c->model->params, summary->lr, &summary->result, c->changed);
    c->changed_count = summary->result.changed;
    c->delta_valid = true;
    c->loss_history[c->round] = (float)summary->result.loss;
    summary->loss_fell = loss_fell_after(c, c->round);
    c->round++;
}

esgd_status coordinator_evaluate(esgd_coordinator *c, const esgd_dataset *test, uint32_t limit, float *accuracy,
                                 float *loss, esgd_error *err)
{
    return model_evaluate(c->model, test, limit, accuracy, loss, err);
}

esgd_status coordinator_evaluate_round(esgd_coordinator *c, const esgd_dataset *test, const round_summary *s,
                                       uint32_t limit, float *accuracy, float *loss, uint32_t *images,
                                       esgd_error *err)
{
    *images = 0;
    if (!job_is_eval_round(&c->cfg, s->round))
        return ESGD_OK;
    if (s->round + 1 == c->total_rounds || limit > test->count)
        limit = 0;
    esgd_status st = model_evaluate(c->model, test, limit, accuracy, loss, err);
    if (st == ESGD_OK)
        *images = limit ? limit : test->count;
    return st;
}

/* The counters in a fixed order, so the file does not depend on struct layout. */
static const size_t counter_offsets[] = {
    offsetof(coordinator_counters, accepted),        offsetof(coordinator_counters, duplicate),
    offsetof(coordinator_counters, late),            offsetof(coordinator_counters, early),
    offsetof(coordinator_counters, uplink_bytes),    offsetof(coordinator_counters, accepted_uplink_bytes),
    offsetof(coordinator_counters, broadcast_bytes), offsetof(coordinator_counters, downlink_bytes),
    offsetof(coordinator_counters, clipped),         offsetof(coordinator_counters, retained_bytes),
};
#define COUNTER_COUNT (sizeof counter_offsets / sizeof counter_offsets[0])

static uint64_t *counter_at(coordinator_counters *k, size_t i)
{
    return (uint64_t *)((char *)k + counter_offsets[i]);
}

esgd_status coordinator_save(esgd_coordinator *c, const char *path, esgd_error *err)
{
    const uint8_t *config;
    size_t config_size;
    esgd_status st = coordinator_config_message(c, &config, &config_size, err);
    if (st != ESGD_OK)
        return st;
    state_writer w;
    state_writer_init(&w);
    state_put_bytes(&w, config, config_size);
    state_put_u32(&w, c->round);
    state_put_bytes(&w, c->loss_history, (size_t)c->round * sizeof(float));
    state_put_u32(&w, (uint32_t)COUNTER_COUNT);
    for (size_t i = 0; i < COUNTER_COUNT; i++)
        state_put_u64(&w, *counter_at(&c->counters, i));
    state_put_u32(&w, ESGD_STATUS_COUNT);
    for (int i = 0; i < ESGD_STATUS_COUNT; i++)
        state_put_u64(&w, c->counters.rejected[i]);
    state_put_bytes(&w, c->model->params, (size_t)c->dim * sizeof(float));
    st = state_file_write(path, STATE_KIND_COORDINATOR, &w, err);
    state_writer_destroy(&w);
    return st;
}

esgd_status coordinator_restore(esgd_coordinator *c, const char *path, esgd_error *err)
{
    state_reader r;
    esgd_status st = state_file_read(path, STATE_KIND_COORDINATOR, &r, err);
    if (st != ESGD_OK)
        return st;
    const uint8_t *saved_config = NULL, *own_config = NULL;
    size_t saved_size = 0, own_size = 0;
    uint32_t round = 0, counter_count = 0, status_count = 0;
    coordinator_counters counters;
    memset(&counters, 0, sizeof counters);
    if ((st = state_get_bytes(&r, &saved_config, &saved_size, err)) != ESGD_OK ||
        (st = coordinator_config_message(c, &own_config, &own_size, err)) != ESGD_OK)
        goto out;
    if (saved_size != own_size || memcmp(saved_config, own_config, own_size) != 0) {
        st = esgd_error_set(err, ESGD_ERR_MISMATCH,
                            "checkpoint %s was written for another job configuration (remove it or use the same "
                            "settings)", path);
        goto out;
    }
    if ((st = state_get_u32(&r, &round, err)) != ESGD_OK)
        goto out;
    if (round > c->total_rounds) {
        st = esgd_error_set(err, ESGD_ERR_RANGE, "checkpoint %s: round %u beyond the job's %u", path, round,
                            c->total_rounds);
        goto out;
    }
    /* Read everything into temporaries first: a damaged file must leave the
     * coordinator as it was. */
    const uint8_t *losses = NULL, *params = NULL;
    size_t losses_size = 0, params_size = 0;
    if ((st = state_get_bytes(&r, &losses, &losses_size, err)) != ESGD_OK)
        goto out;
    if (losses_size != (size_t)round * sizeof(float)) {
        st = esgd_error_set(err, ESGD_ERR_DIMENSION, "checkpoint %s: loss history does not match round %u", path,
                            round);
        goto out;
    }
    if ((st = state_get_u32(&r, &counter_count, err)) != ESGD_OK)
        goto out;
    /* Counters added later come last: an older checkpoint has fewer, and
     * the missing ones start at zero. */
    if (counter_count > COUNTER_COUNT) {
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "checkpoint %s: %u counters, at most %zu expected", path,
                            counter_count, COUNTER_COUNT);
        goto out;
    }
    for (size_t i = 0; i < counter_count && st == ESGD_OK; i++)
        st = state_get_u64(&r, counter_at(&counters, i), err);
    if (st == ESGD_OK)
        st = state_get_u32(&r, &status_count, err);
    if (st == ESGD_OK && status_count != ESGD_STATUS_COUNT)
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "checkpoint %s: %u rejection reasons, expected %d", path,
                            status_count, ESGD_STATUS_COUNT);
    for (int i = 0; i < ESGD_STATUS_COUNT && st == ESGD_OK; i++)
        st = state_get_u64(&r, &counters.rejected[i], err);
    if (st == ESGD_OK)
        st = state_get_bytes(&r, &params, &params_size, err);
    if (st == ESGD_OK && params_size != (size_t)c->dim * sizeof(float))
        st = esgd_error_set(err, ESGD_ERR_DIMENSION, "checkpoint %s: %zu parameter bytes, model has %u parameters",
                            path, params_size, c->dim);
    if (st == ESGD_OK && r.pos != r.size)
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "checkpoint %s: %zu unexpected bytes after the last field", path,
                            r.size - r.pos);
    /* A checksum only says the file is what was written: the values must
     * still be a usable model (a round with no update has a NaN loss). */
    for (uint32_t i = 0; st == ESGD_OK && i < c->dim; i++) {
        float v;
        memcpy(&v, params + (size_t)i * sizeof v, sizeof v);
        if (!isfinite(v))
            st = esgd_error_set(err, ESGD_ERR_NONFINITE, "checkpoint %s: parameter %u is not finite", path, i);
    }
    for (uint32_t i = 0; st == ESGD_OK && i < round; i++) {
        float v;
        memcpy(&v, losses + (size_t)i * sizeof v, sizeof v);
        if (isinf(v) || v < 0)
            st = esgd_error_set(err, ESGD_ERR_RANGE, "checkpoint %s: loss of round %u is %g", path, i, (double)v);
    }
    if (st != ESGD_OK)
        goto out;
    memcpy(c->loss_history, losses, losses_size);
    memcpy(c->model->params, params, params_size);
    c->counters = counters;
    c->round = round;
    c->delta_valid = false;
    aggregator_reset(c->agg);
out:
    state_reader_destroy(&r);
    return st;
}

const char *update_outcome_name(update_outcome o)
{
    static const char *const names[] = {"accepted", "duplicate", "late", "early", "rejected"};
    return (unsigned)o < sizeof names / sizeof names[0] ? names[o] : "unknown";
}
