/* The coordinator's round functions shared by the simulator and the MQTT
 * coordinator: publishes x_t, checks and holds updates, closes rounds with
 * the aggregator and keeps the loss signal and the counters. Saving and
 * restoring all of it is coordinator_state.c's. */
#include "esgd/coordinator.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator_impl.h"
#include "esgd/fingerprint.h"
#include "esgd/predictor.h"
#include "esgd/sparsifier.h"

/* Largest batch used when evaluating the test set. */
#define EVAL_BATCH 500
/* The predictor (esgd-predict) chunks as the evaluation does, so the
 * classes it gives are the ones the test accuracy counted. */
_Static_assert(EVAL_BATCH == ESGD_PREDICT_CHUNK, "the predictor's chunk must be the evaluation batch");

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
    uint32_t slot = sparsifier_max_count(&cfg->sparsify, c->dim);
    model_spec spec;
    if (job_model_spec(cfg, &spec, err) != ESGD_OK || !(c->model = model_new(&spec, EVAL_BATCH, err)) ||
        !(c->agg = aggregator_new(c->dim, cfg->agents, slot, err)) || !(c->decoder = codec_decoder_new(err)) ||
        buffer_init(&c->out, codec_model_bound(c->dim), err) != ESGD_OK)
        goto fail;
    c->incoming.grad.capacity = slot;
    c->incoming.grad.indices = malloc((size_t)slot * sizeof(uint32_t));
    c->incoming.grad.values = malloc((size_t)slot * sizeof(float));
    c->changed = malloc((size_t)c->dim * sizeof(uint32_t));
    c->delta_values = malloc((size_t)c->dim * sizeof(float));
    c->loss_history = malloc((size_t)(c->total_rounds ? c->total_rounds : 1) * sizeof(float));
    c->norm_scratch = malloc((size_t)(cfg->agents > NORM_BOUND_WINDOW ? cfg->agents : NORM_BOUND_WINDOW) * sizeof(double));
    c->held_norm = malloc((size_t)cfg->agents * sizeof(double));
    c->held_bytes = calloc(cfg->agents, sizeof(uint64_t));
    c->held_hash = calloc(cfg->agents, sizeof(uint64_t));
    c->held_round = calloc(cfg->agents, sizeof(uint32_t));
    c->held_clipped = calloc(cfg->agents, sizeof(bool));
    c->excluded = malloc((size_t)cfg->agents * sizeof(round_exclusion));
    c->agent_keys = calloc(cfg->agents, sizeof *c->agent_keys);
    c->announced = calloc(cfg->agents, sizeof *c->announced);
    if (!c->agent_keys || !c->announced || !c->incoming.grad.indices || !c->incoming.grad.values || !c->changed || !c->delta_values || !c->loss_history ||
        !c->norm_scratch || !c->held_norm || !c->held_bytes || !c->held_hash || !c->held_round || !c->held_clipped || !c->excluded) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "coordinator: out of memory");
        goto fail;
    }
    /* Every agent trains on exactly one batch a round: a larger claim is a lie. */
    aggregator_require_samples(c->agg, cfg->batch);
    double down_drop = job_down_drop(cfg);
    uint32_t keep = sparsifier_keep_count(c->dim, down_drop);
    if (down_drop > 0 && keep < c->dim && aggregator_set_downlink(c->agg, keep, err) != ESGD_OK)
        goto fail;
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
    free(c->norm_scratch);
    free(c->held_norm);
    free(c->announced);
    free(c->held_bytes);
    free(c->held_hash);
    free(c->held_round);
    free(c->held_clipped);
    free(c->excluded);
    free(c->agent_keys);
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

bool coordinator_agent_behind(const esgd_coordinator *c, uint32_t agent, uint32_t round)
{
    return agent < c->cfg.agents && (uint64_t)round + 1 < c->round && c->held_round[agent] <= round + 1;
}

bool coordinator_has_update(const esgd_coordinator *c, uint32_t agent)
{
    return aggregator_has(c->agg, agent);
}

const float *coordinator_loss_history(const esgd_coordinator *c)
{
    return c->loss_history;
}

void coordinator_set_keys(esgd_coordinator *c, const signing_key *own, const verify_key *agents)
{
    c->key = *own;
    memcpy(c->agent_keys, agents, (size_t)c->cfg.agents * sizeof *agents);
    c->has_keys = true;
}

/* Every outgoing message is signed; without a key none can be made. */
static esgd_status sign_out(esgd_coordinator *c, esgd_error *err)
{
    if (!c->has_keys) {
        c->out.size = 0;
        return esgd_error_set(err, ESGD_ERR_SIGNATURE, "the coordinator has no signing key");
    }
    return envelope_sign(&c->out, &c->key, err);
}

esgd_status coordinator_config_message(esgd_coordinator *c, const uint8_t **msg, size_t *size, esgd_error *err)
{
    esgd_status st = codec_encode_config(&c->out, &c->cfg, err);
    if (st == ESGD_OK)
        st = sign_out(c, err);
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
    m->run = c->cfg.run;
    m->generation = c->generation;
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
    esgd_status st = codec_encode_model(&c->out, &m, err);
    return st == ESGD_OK ? sign_out(c, err) : st;
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

esgd_status coordinator_sync_model(esgd_coordinator *c, const uint8_t **msg, size_t *size, esgd_error *err)
{
    esgd_status st = encode_full(c, err);
    if (st == ESGD_OK) {
        *msg = c->out.data;
        *size = c->out.size;
        c->counters.sync_bytes += c->out.size;
    }
    return st;
}

void coordinator_note_published(esgd_coordinator *c, size_t bytes)
{
    c->counters.published_bytes += bytes;
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
        if (st == ESGD_OK)
            st = sign_out(c, err);
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
    if (!isfinite(max_norm) || (action != NORM_ACTION_REJECT && action != NORM_ACTION_CLIP))
        return esgd_error_set(err, ESGD_ERR_ARG,
                              "update norm bound %g must be finite (> 0: absolute, 0: relative, < 0: none)", max_norm);
    c->max_norm = max_norm;
    c->norm_action = action;
    return ESGD_OK;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The lower middle value of v[0..n), n > 0 (sorts v): while at least half
 * of the values are honest, the others cannot raise it. */
static double lower_median(double *v, uint32_t n)
{
    qsort(v, n, sizeof *v, compare_double);
    return v[(n - 1) / 2];
}

/* The bound an update of the open round is held to when it arrives: the
 * absolute one; 0 for none or the relative one, which needs the whole
 * round (bound_at_close). */
static double receipt_bound(const esgd_coordinator *c)
{
    return c->max_norm > 0 ? c->max_norm : 0;
}

/* Holds agent's update, just added to the aggregator, to the bound: ESGD_OK
 * (possibly scaled down, *clipped set) or ESGD_ERR_RANGE with the update
 * removed again. */
static esgd_status bound_norm(esgd_coordinator *c, uint32_t agent, double bound, bool *clipped, esgd_error *err)
{
    *clipped = false;
    double norm = aggregator_norm(c->agg, agent);
    if (bound <= 0 || norm <= bound)
        return ESGD_OK;
    if (c->norm_action == NORM_ACTION_REJECT) {
        aggregator_remove(c->agg, agent);
        return esgd_error_set(err, ESGD_ERR_RANGE, "agent %u round %u: update norm %g over the bound %g (%s)", agent,
                              c->round, norm, bound,
                              c->max_norm > 0 ? "--max-update-norm" : "the relative bound");
    }
    aggregator_scale(c->agg, agent, bound / norm);
    *clipped = true;
    return ESGD_OK;
}

/* What tells two update messages apart: Ed25519 signatures are
 * deterministic, so the signature (the message's last bytes, checked before
 * anything is held) stands for the signed bytes; hashing it instead of the
 * whole update saves a pass over every accepted message. */
static uint64_t message_id(const uint8_t *data, size_t size)
{
    return fnv1a64(data + size - ENVELOPE_SIGNATURE_BYTES, ENVELOPE_SIGNATURE_BYTES);
}

/* A redelivery has the same bytes (signatures are deterministic) and an
 * agent's update for a round is a pure function of its state, so other
 * bytes for the round of its last accepted update mean another process
 * signing as this agent. Counts and describes it. */
static bool is_conflicting(esgd_coordinator *c, const update_msg *u, const uint8_t *data, size_t size,
                           esgd_error *err)
{
    if (c->held_round[u->agent] != u->round + 1 || message_id(data, size) == c->held_hash[u->agent])
        return false;
    c->counters.conflicting++;
    esgd_error_set(err, ESGD_ERR_MISMATCH,
                   "agent %u round %u: a second, different update (two agents running with id %u?)", u->agent,
                   u->round, u->agent);
    return true;
}

update_outcome coordinator_receive_update(esgd_coordinator *c, const uint8_t *data, size_t size, uint32_t from_agent,
                                          uint32_t from_round, esgd_error *err)
{
    update_msg *u = &c->incoming;
    esgd_status st = ESGD_OK;
    size_t body = 0;
    memset(u->job, 0, sizeof u->job);
    u->agent = from_agent;
    u->round = from_round;
    /* Nothing an agent may send is larger: refuse before decoding. */
    if (size > codec_update_bound(c->dim))
        st = esgd_error_set(err, ESGD_ERR_TOO_LARGE, "update of %zu bytes, the largest possible is %zu", size,
                            codec_update_bound(c->dim));
    if (st == ESGD_OK && from_agent >= c->cfg.agents)
        st = esgd_error_set(err, ESGD_ERR_RANGE, "update from agent %u, job has agents 0..%u", from_agent,
                            c->cfg.agents - 1);
    /* The channel names the sender; only its signature makes the bytes its. */
    if (st == ESGD_OK && !c->has_keys)
        st = esgd_error_set(err, ESGD_ERR_SIGNATURE, "the coordinator has no agent keys");
    if (st == ESGD_OK)
        st = envelope_open(data, size, &c->agent_keys[from_agent], &body, err);
    if (st == ESGD_OK)
        st = codec_decode_update(c->decoder, data, body, c->dim, u, err);
    if (st == ESGD_OK && strcmp(u->job, c->cfg.job) != 0)
        st = esgd_error_set(err, ESGD_ERR_MISMATCH, "update for job '%s', this job is '%s'", u->job, c->cfg.job);
    if (st == ESGD_OK && (u->agent != from_agent || u->round != from_round))
        st = esgd_error_set(err, ESGD_ERR_MISMATCH, "update says agent %u round %u, its topic agent %u round %u",
                            u->agent, u->round, from_agent, from_round);
    if (st == ESGD_OK && u->run != c->cfg.run)
        st = esgd_error_set(err, ESGD_ERR_STALE, "agent %u update of run %016llx, this run is %016llx", u->agent,
                            (unsigned long long)u->run, (unsigned long long)c->cfg.run);
    if (st != ESGD_OK) {
        c->counters.rejected[st]++;
        c->counters.rejected_bytes += size;
        return UPDATE_REJECTED;
    }
    if (u->round < c->round) {
        c->counters.late++;
        c->counters.unused_uplink_bytes += size;
        if (is_conflicting(c, u, data, size, err))
            return UPDATE_LATE;
        esgd_error_set(err, ESGD_ERR_MISMATCH, "agent %u update for closed round %u (open: %u)", u->agent,
                       u->round, c->round);
        return UPDATE_LATE;
    }
    if (u->round > c->round || coordinator_done(c)) {
        c->counters.early++;
        c->counters.unused_uplink_bytes += size;
        esgd_error_set(err, ESGD_ERR_MISMATCH, "agent %u update for round %u, open round is %u", u->agent,
                       u->round, c->round);
        return UPDATE_EARLY;
    }
    if (aggregator_has(c->agg, u->agent)) {
        c->counters.duplicate++;
        c->counters.unused_uplink_bytes += size;
        if (!is_conflicting(c, u, data, size, err))
            esgd_error_set(err, ESGD_ERR_MISMATCH, "agent %u round %u: duplicate update ignored", u->agent,
                           u->round);
        return UPDATE_DUPLICATE;
    }
    /* The aggregator checks the form first, so a malformed update is counted
     * under what is wrong with it, then the norm of what it holds. */
    bool clipped = false;
    st = aggregator_add(c->agg, u->agent, &u->grad, u->samples, u->loss, err);
    if (st == ESGD_OK)
        st = bound_norm(c, u->agent, receipt_bound(c), &clipped, err);
    if (st != ESGD_OK) {
        c->counters.rejected[st]++;
        c->counters.rejected_bytes += size;
        return UPDATE_REJECTED;
    }
    c->counters.clipped += clipped;
    c->counters.accepted++;
    c->counters.uplink_bytes += size;
    c->counters.accepted_uplink_bytes += size;
    c->held_bytes[u->agent] = size;
    c->held_hash[u->agent] = message_id(data, size);
    c->held_round[u->agent] = u->round + 1; /* 0: none yet */
    c->held_clipped[u->agent] = clipped;
    return UPDATE_ACCEPTED;
}

const update_msg *coordinator_last_update(const esgd_coordinator *c)
{
    return &c->incoming;
}

/* Moves a held update the round leaves out from accepted to rejected, and
 * lists it in the summary. */
static void exclude(esgd_coordinator *c, uint32_t agent, esgd_status reason, double norm, round_summary *s)
{
    coordinator_counters *k = &c->counters;
    k->accepted--;
    k->clipped -= c->held_clipped[agent];
    k->uplink_bytes -= c->held_bytes[agent];
    k->accepted_uplink_bytes -= c->held_bytes[agent];
    k->rejected[reason]++;
    k->rejected_bytes += c->held_bytes[agent];
    c->excluded[s->excluded_count++] = (round_exclusion){.agent = agent, .reason = reason, .norm = norm};
}

/* The relative bound, applied at close when the round's updates are all
 * in: NORM_BOUND_FACTOR x the larger of the history's median and, with two
 * updates or more, the round's own (both lower medians, so a minority
 * cannot raise them). The round's median follows honest agents when their
 * gradients grow together (a loss spike at a high learning rate), which a
 * history of smaller norms alone would refuse round after round. Returns
 * the bound (0: none, no update held). */
static double bound_at_close(esgd_coordinator *c, round_summary *s)
{
    uint32_t n = 0, held = 0;
    for (uint32_t a = 0; a < c->cfg.agents; a++)
        if (aggregator_norm(c->agg, a) > 0)
            c->norm_scratch[n++] = aggregator_norm(c->agg, a);
    if (n == 0)
        return 0;
    double reference = n >= 2 || c->norm_count == 0 ? lower_median(c->norm_scratch, n) : 0;
    if (c->norm_count > 0) {
        memcpy(c->norm_scratch, c->norm_history, (size_t)c->norm_count * sizeof(double));
        double history = lower_median(c->norm_scratch, c->norm_count);
        reference = history > reference ? history : reference;
    }
    double bound = NORM_BOUND_FACTOR * reference;
    for (uint32_t a = 0; a < c->cfg.agents; a++) {
        double norm = aggregator_norm(c->agg, a);
        held += norm > 0;
        if (norm <= bound)
            continue;
        if (c->norm_action == NORM_ACTION_CLIP) {
            aggregator_scale(c->agg, a, bound / norm);
            c->counters.clipped += !c->held_clipped[a];
            c->held_clipped[a] = true;
        } else {
            exclude(c, a, ESGD_ERR_RANGE, norm, s);
            aggregator_remove(c->agg, a);
        }
    }
    /* A lone agent (a round of one) cannot move the round's median: after
     * NORM_BOUND_STUCK_ROUNDS rounds in a row whose every update was over
     * the bound, the history is dropped and the next round sets the scale. */
    c->refused_rounds = held > 0 && aggregator_count(c->agg) == 0 ? c->refused_rounds + 1 : 0;
    if (c->refused_rounds >= NORM_BOUND_STUCK_ROUNDS) {
        c->norm_count = c->norm_next = 0;
        c->refused_rounds = 0;
    }
    return bound;
}

/* Adds an accepted update's norm to the history of the relative bound; an
 * empty update says nothing about the scale of the others. */
static void remember_norm(esgd_coordinator *c, double norm)
{
    if (!(norm > 0))
        return;
    c->norm_history[c->norm_next] = norm;
    c->norm_next = (c->norm_next + 1) % NORM_BOUND_WINDOW;
    if (c->norm_count < NORM_BOUND_WINDOW)
        c->norm_count++;
}

void coordinator_close_round(esgd_coordinator *c, round_summary *summary)
{
    memset(summary, 0, sizeof *summary);
    summary->excluded = c->excluded;
    if (coordinator_done(c))
        return;
    summary->round = c->round;
    summary->lr = job_lr_at_round(&c->cfg, c->round);
    summary->norm_bound = c->max_norm == 0 ? bound_at_close(c, summary) : receipt_bound(c);
    /* The aggregator forgets the updates: keep their norms for the history. */
    for (uint32_t a = 0; a < c->cfg.agents; a++)
        c->held_norm[a] = aggregator_has(c->agg, a) ? aggregator_norm(c->agg, a) : -1;
    aggregator_apply(c->agg, c->model->params, summary->lr, &summary->result, c->changed);
    const uint32_t *dropped = aggregator_dropped(c->agg);
    for (uint32_t i = 0; i < summary->result.dropped; i++) {
        exclude(c, dropped[i], ESGD_ERR_NONFINITE, c->held_norm[dropped[i]], summary);
        c->counters.dropped_nonfinite++;
        c->held_norm[dropped[i]] = -1;
    }
    /* In agent-id order, so the history, and every later bound, does not
     * depend on arrival order. */
    for (uint32_t a = 0; a < c->cfg.agents; a++)
        remember_norm(c, c->held_norm[a]);
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
    if (!test || !job_is_eval_round(&c->cfg, s->round))
        return ESGD_OK;
    if (s->round + 1 == c->total_rounds || limit > test->count)
        limit = 0;
    esgd_status st = model_evaluate(c->model, test, limit, accuracy, loss, err);
    if (st == ESGD_OK)
        *images = limit ? limit : test->count;
    return st;
}

uint32_t coordinator_generation(const esgd_coordinator *c)
{
    return c->generation;
}

void coordinator_set_generation(esgd_coordinator *c, uint32_t generation)
{
    c->generation = generation;
    c->delta_valid = false; /* agents of another generation hold other bases */
}

status_note coordinator_note_status(esgd_coordinator *c, const status_msg *s)
{
    status_note note = {false, -1, false, 0};
    if (s->agent >= c->cfg.agents || s->run != c->cfg.run)
        return note;
    if (s->generation > c->generation && s->generation < UINT32_MAX) {
        coordinator_set_generation(c, s->generation + 1);
        note.generation_raised = true;
    }
    /* An agent that says it last answered an earlier round than we took
     * from it came back from older state (its last saves were lost). */
    uint32_t taken = c->held_round[s->agent]; /* last accepted round + 1 */
    if ((s->state == AGENT_STATE_ONLINE || s->state == AGENT_STATE_SYNCING) && taken > 0 && s->round + 1 < taken) {
        note.rounds_lost = taken - 1 - s->round;
        c->counters.rounds_lost += note.rounds_lost;
        c->held_round[s->agent] = s->round + 1;
    }
    status_msg *had = &c->announced[s->agent];
    if (!s->has_data ||
        (had->has_data && had->shard == s->shard && had->shards == s->shards && had->data_fp == s->data_fp))
        return note;
    /* New word of what this agent trains on: the same as another agent's,
     * or different from what the same id said before (two agents, one id). */
    if (had->has_data) {
        note.overlaps_with = (int64_t)s->agent;
    } else {
        for (uint32_t a = 0; a < c->cfg.agents && note.overlaps_with < 0; a++) {
            const status_msg *o = &c->announced[a];
            if (a == s->agent || !o->has_data)
                continue;
            note.same_shard = o->shard == s->shard && o->shards == s->shards;
            if (note.same_shard || o->data_fp == s->data_fp)
                note.overlaps_with = a;
        }
    }
    if (note.overlaps_with >= 0)
        c->counters.data_conflicts++;
    *had = *s;
    return note;
}

const char *update_outcome_name(update_outcome o)
{
    static const char *const names[] = {"accepted", "duplicate", "late", "early", "rejected"};
    return (unsigned)o < sizeof names / sizeof names[0] ? names[o] : "unknown";
}
