/* The messages of schemas/messages.md (codec.h): for update, model,
 * config, status and lease, the encoder that checks a message and packs
 * its keys in the documented order, and the decoder that checks version,
 * type, every key, type and range before writing the caller's storage.
 * The pieces they share live apart: msgpack_write.c (buffers, packing),
 * msgpack_read.c (the hostile-input scan and typed getters),
 * codec_vector.c (a sparse vector's fields), index_coding.c (Rice and
 * bitmap indices) and half.c (binary16). */
#include "esgd/codec.h"

#include <assert.h>
#include <math.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "codec_vector.h"
#include "esgd/job.h"
#include "msgpack_read.h"
#include "msgpack_write.h"

struct codec_decoder {
    msgpack_zone zone;
};

static const char *const state_names[] = {"online", "offline", "done", "syncing", NULL};
static const char *const form_names[] = {"full", "delta", NULL};

const char *agent_state_name(agent_state s)
{
    return (unsigned)s <= AGENT_STATE_SYNCING ? state_names[s] : "unknown";
}

/* ---------------------------------------------------------------- encoding */

/* A job name that may fill the whole array unterminated (then too long). */
static esgd_status check_job_name(const char *job, esgd_error *err)
{
    const char *end = memchr(job, '\0', JOB_NAME_MAX + 1);
    size_t len = end ? (size_t)(end - job) : JOB_NAME_MAX + 1;
    return job_name_check(job, len, ESGD_ERR_RANGE, err);
}

/* The keys every message but config starts with. */
static void put_common(mp_writer *w, const char *type, const char *job, uint64_t run)
{
    mp_put_uint(w, "v", CODEC_VERSION);
    mp_put_str(w, "type", type);
    mp_put_str(w, "job", job);
    mp_put_uint(w, "run", run);
}

esgd_status codec_encode_update(esgd_buffer *out, const update_msg *msg, value_format fmt, esgd_error *err)
{
    out->size = 0;
    esgd_status st = check_job_name(msg->job, err);
    if (st != ESGD_OK)
        return st;
    if (fmt != VALUE_FORMAT_F32 && fmt != VALUE_FORMAT_F16)
        return esgd_error_set(err, ESGD_ERR_ARG, "unknown value format %d", (int)fmt);
    if (msg->samples == 0)
        return esgd_error_set(err, ESGD_ERR_RANGE, "samples must be > 0");
    if (!isfinite(msg->loss))
        return esgd_error_set(err, ESGD_ERR_NONFINITE, "loss is not finite");
    if (msg->loss < 0)
        return esgd_error_set(err, ESGD_ERR_RANGE, "loss %g < 0", (double)msg->loss);
    if ((st = codec_vector_check(&msg->grad, true, fmt, err)) != ESGD_OK)
        return st;

    idx_plan plan = codec_vector_plan(&msg->grad);
    mp_writer w;
    mp_writer_start(&w, out, 12 + codec_vector_plan_keys(&plan));
    put_common(&w, "update", msg->job, msg->run);
    mp_put_uint(&w, "round", msg->round);
    mp_put_uint(&w, "agent", msg->agent);
    mp_put_uint(&w, "samples", msg->samples);
    mp_put_f32(&w, "loss", msg->loss);
    mp_put_uint(&w, "dim", msg->grad.dim);
    mp_put_uint(&w, "count", msg->grad.count);
    codec_vector_put_indices(&w, &msg->grad, &plan);
    mp_put_str(&w, "val_fmt", value_format_name(fmt));
    codec_vector_put_values(&w, &msg->grad, fmt);
    return mp_writer_finish(&w, "update", err);
}

esgd_status codec_encode_model(esgd_buffer *out, const model_msg *msg, esgd_error *err)
{
    out->size = 0;
    esgd_status st = check_job_name(msg->job, err);
    if (st != ESGD_OK)
        return st;
    const sparse_vector *v = &msg->params;
    bool full = msg->form == MODEL_FORM_FULL;
    if (!full && msg->form != MODEL_FORM_DELTA)
        return esgd_error_set(err, ESGD_ERR_ARG, "unknown model form %d", (int)msg->form);
    if (full && (v->count != v->dim || msg->base_round != msg->round))
        return esgd_error_set(err, ESGD_ERR_RANGE, "full model needs count == dim and base_round == round");
    if (!full && (msg->round == 0 || msg->base_round != msg->round - 1))
        return esgd_error_set(err, ESGD_ERR_RANGE, "model delta needs round >= 1 and base_round == round - 1");
    if (!isfinite(msg->lr))
        return esgd_error_set(err, ESGD_ERR_NONFINITE, "lr is not finite");
    if (msg->lr < 0)
        return esgd_error_set(err, ESGD_ERR_RANGE, "lr %g < 0", (double)msg->lr);
    if (isfinite(msg->prev_loss) && msg->prev_loss < 0)
        return esgd_error_set(err, ESGD_ERR_RANGE, "prev_loss %g < 0", (double)msg->prev_loss);
    if (msg->loss_fell < -1 || msg->loss_fell > 1)
        return esgd_error_set(err, ESGD_ERR_RANGE, "loss_fell = %d is not -1, 0 or 1", msg->loss_fell);
    if ((st = codec_vector_check(v, !full, VALUE_FORMAT_F32, err)) != ESGD_OK)
        return st;

    idx_plan plan = full ? IDX_PLAN_NONE : codec_vector_plan(v);
    mp_writer w;
    mp_writer_start(&w, out, 15 + (full ? 0 : codec_vector_plan_keys(&plan)));
    put_common(&w, "model", msg->job, msg->run);
    mp_put_u32_fixed(&w, "gen", msg->generation);
    mp_put_uint(&w, "round", msg->round);
    mp_put_uint(&w, "base_round", msg->base_round);
    mp_put_f32(&w, "lr", msg->lr);
    if (isfinite(msg->prev_loss))
        mp_put_f32(&w, "prev_loss", msg->prev_loss);
    else
        mp_put_nil(&w, "prev_loss");
    if (msg->loss_fell < 0)
        mp_put_nil(&w, "loss_fell");
    else
        mp_put_bool(&w, "loss_fell", msg->loss_fell != 0);
    mp_put_bool(&w, "done", msg->done != 0);
    mp_put_str(&w, "form", form_names[msg->form]);
    mp_put_uint(&w, "dim", v->dim);
    mp_put_uint(&w, "count", v->count);
    if (!full)
        codec_vector_put_indices(&w, v, &plan);
    codec_vector_put_values(&w, v, VALUE_FORMAT_F32);
    return mp_writer_finish(&w, "model", err);
}

esgd_status codec_encode_config(esgd_buffer *out, const esgd_job_config *cfg, esgd_error *err)
{
    out->size = 0;
    esgd_status st = job_config_validate(cfg, err);
    if (st != ESGD_OK)
        return st;
    /* "job" is itself a job option, so the table supplies the common key. */
    assert(job_option_find("job") && job_option_find("job")->type == JOB_OPTION_STRING);
    size_t n = job_option_count();
    mp_writer w;
    mp_writer_start(&w, out, n + 4);
    mp_put_uint(&w, "v", CODEC_VERSION);
    mp_put_str(&w, "type", "config");
    mp_put_uint(&w, "run", cfg->run);
    for (size_t i = 0; i < n; i++) {
        const job_option *opt = job_option_at(i);
        switch (opt->type) {
        case JOB_OPTION_UINT:
            mp_put_uint(&w, opt->name, job_config_get_uint(cfg, opt));
            break;
        case JOB_OPTION_FLOAT:
            mp_put_f64(&w, opt->name, job_config_get_float(cfg, opt));
            break;
        case JOB_OPTION_STRING:
            mp_put_str(&w, opt->name, job_config_get_string(cfg, opt));
            break;
        }
    }
    mp_put_uint(&w, "dim", job_dimension(cfg));
    return mp_writer_finish(&w, "config", err);
}

esgd_status codec_encode_status(esgd_buffer *out, const status_msg *msg, esgd_error *err)
{
    out->size = 0;
    esgd_status st = check_job_name(msg->job, err);
    if (st != ESGD_OK)
        return st;
    if ((unsigned)msg->state > AGENT_STATE_SYNCING)
        return esgd_error_set(err, ESGD_ERR_RANGE, "unknown agent state %d", (int)msg->state);
    if (msg->has_data && msg->shard >= msg->shards)
        return esgd_error_set(err, ESGD_ERR_RANGE, "shard %u of %u", msg->shard, msg->shards);
    mp_writer w;
    mp_writer_start(&w, out, msg->has_data ? 11 : 8);
    put_common(&w, "status", msg->job, msg->run);
    mp_put_uint(&w, "agent", msg->agent);
    mp_put_str(&w, "state", state_names[msg->state]);
    mp_put_uint(&w, "round", msg->round);
    mp_put_uint(&w, "gen", msg->generation);
    if (msg->has_data) {
        mp_put_uint(&w, "shard", msg->shard);
        mp_put_uint(&w, "shards", msg->shards);
        mp_put_uint(&w, "data_fp", msg->data_fp);
    }
    return mp_writer_finish(&w, "status", err);
}

esgd_status codec_encode_lease(esgd_buffer *out, const lease_msg *msg, esgd_error *err)
{
    out->size = 0;
    esgd_status st = check_job_name(msg->job, err);
    if (st != ESGD_OK)
        return st;
    if (strlen(msg->holder) > LEASE_HOLDER_MAX)
        return esgd_error_set(err, ESGD_ERR_RANGE, "lease holder longer than %d bytes", LEASE_HOLDER_MAX);
    mp_writer w;
    mp_writer_start(&w, out, 7);
    put_common(&w, "lease", msg->job, msg->run);
    mp_put_uint(&w, "gen", msg->generation);
    mp_put_str(&w, "state", msg->live ? "live" : "released");
    mp_put_str(&w, "holder", msg->holder);
    return mp_writer_finish(&w, "lease", err);
}

size_t codec_update_bound(uint32_t dim)
{
    /* Keys and scalars take under 250 bytes and the signature 64; the index part is never larger
     * than the bitmap's, and values at most 4 bytes each. */
    return 320 + ((size_t)dim + 7) / 8 + 4 * (size_t)dim;
}

size_t codec_model_bound(uint32_t dim)
{
    return 320 + ((size_t)dim + 7) / 8 + 4 * (size_t)dim;
}

/* ---------------------------------------------------------------- decoding */

codec_decoder *codec_decoder_new(esgd_error *err)
{
    codec_decoder *dec = malloc(sizeof *dec);
    if (!dec || !msgpack_zone_init(&dec->zone, MSGPACK_ZONE_CHUNK_SIZE)) {
        free(dec);
        esgd_error_set(err, ESGD_ERR_NOMEM, "codec decoder");
        return NULL;
    }
    return dec;
}

void codec_decoder_free(codec_decoder *dec)
{
    if (!dec)
        return;
    msgpack_zone_destroy(&dec->zone);
    free(dec);
}

/* Map shape, string keys without duplicates, version and type: checked in
 * this order, before unknown keys, so a newer or different message is
 * reported as such rather than as malformed. */
static esgd_status check_header(const msgpack_object *root, const char *type, esgd_error *err)
{
    esgd_status st = mp_check_map(root, MP_MAX_KEYS, err);
    if (st != ESGD_OK)
        return st;
    const msgpack_object *v = mp_find(root, "v");
    if (!v)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field v (version)");
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return esgd_error_set(err, ESGD_ERR_VERSION, "version %lld, expected %d", (long long)v->via.i64,
                              CODEC_VERSION);
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field v is not an integer");
    if (v->via.u64 == 1)
        return esgd_error_set(err, ESGD_ERR_VERSION,
                              "version 1 (unsigned, no run id) is no longer accepted: upgrade the coordinator and "
                              "every agent to version %d together", CODEC_VERSION);
    if (v->via.u64 != CODEC_VERSION)
        return esgd_error_set(err, ESGD_ERR_VERSION, "version %llu, expected %d", (unsigned long long)v->via.u64,
                              CODEC_VERSION);
    const msgpack_object *t = mp_find(root, "type");
    if (!t)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field type");
    if (t->type != MSGPACK_OBJECT_STR)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field type is not a string");
    if (!mp_key_is(t, type))
        return esgd_error_set(err, ESGD_ERR_MISMATCH, "message type '%s', expected '%s'", mp_quote(t).text, type);
    return ESGD_OK;
}

static esgd_status get_job(const msgpack_object *map, char job[JOB_NAME_MAX + 1], esgd_error *err)
{
    const msgpack_object *o = mp_find(map, "job");
    if (!o)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field job");
    if (o->type != MSGPACK_OBJECT_STR)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field job is not a string");
    esgd_status st = job_name_check(o->via.str.ptr, o->via.str.size, ESGD_ERR_RANGE, err);
    if (st != ESGD_OK)
        return st;
    memcpy(job, o->via.str.ptr, o->via.str.size);
    job[o->via.str.size] = '\0';
    return ESGD_OK;
}

static esgd_status decode_update(const msgpack_object *root, uint32_t expected_dim, update_msg *out,
                                 esgd_error *err)
{
    static const char *const keys[] = {"v",     "type",    "job", "run",    "round",   "agent", "samples", "loss",
                                       "dim",   "count",   "idx", "rice_b", "val_fmt", "val",   "idx_enc", NULL};
    esgd_status st = check_header(root, "update", err);
    if (st == ESGD_OK)
        st = mp_check_keys(root, keys, err);
    if (st != ESGD_OK)
        return st;
    update_msg m = {0};
    int fmt = 0;
    uint32_t dim, count;
    if ((st = get_job(root, m.job, err)) != ESGD_OK ||
        (st = mp_get_uint(root, "run", UINT64_MAX, &m.run, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "round", &m.round, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "agent", &m.agent, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "samples", &m.samples, err)) != ESGD_OK ||
        (st = mp_get_float(root, "loss", false, &m.loss, err)) != ESGD_OK ||
        (st = mp_get_enum(root, "val_fmt", value_format_names, &fmt, err)) != ESGD_OK ||
        (st = codec_vector_get_dims(root, expected_dim, out->grad.capacity, &dim, &count, err)) != ESGD_OK)
        return st;
    if (m.samples == 0)
        return esgd_error_set(err, ESGD_ERR_RANGE, "samples must be > 0");
    if (count > 0 && (!out->grad.indices || !out->grad.values))
        return esgd_error_set(err, ESGD_ERR_ARG, "no storage for the decoded update");
    if ((st = codec_vector_get_indices(root, dim, count, out->grad.indices, err)) != ESGD_OK ||
        (st = codec_vector_get_values(root, count, (value_format)fmt, out->grad.values, err)) != ESGD_OK)
        return st;
    memcpy(out->job, m.job, sizeof m.job);
    out->run = m.run;
    out->round = m.round;
    out->agent = m.agent;
    out->samples = m.samples;
    out->loss = m.loss;
    out->grad.dim = dim;
    out->grad.count = count;
    return ESGD_OK;
}

esgd_status codec_decode_update(codec_decoder *dec, const uint8_t *data, size_t size, uint32_t expected_dim,
                                update_msg *out, esgd_error *err)
{
    out->grad.count = 0;
    msgpack_object root;
    esgd_status st = mp_parse(&dec->zone, data, size, &root, err);
    if (st == ESGD_OK)
        st = decode_update(&root, expected_dim, out, err);
    if (st != ESGD_OK)
        out->grad.count = 0;
    return st;
}

static esgd_status decode_model(const msgpack_object *root, uint32_t expected_dim, model_msg *out, esgd_error *err)
{
    static const char *const keys[] = {"v", "type", "job", "run", "gen", "round", "base_round", "lr", "prev_loss",
                                       "loss_fell", "done", "form", "dim", "count", "idx_enc", "idx", "rice_b",
                                       "val", NULL};
    esgd_status st = check_header(root, "model", err);
    if (st == ESGD_OK)
        st = mp_check_keys(root, keys, err);
    if (st != ESGD_OK)
        return st;
    model_msg m = {0};
    int form = 0, loss_fell = 0, done = 0;
    uint32_t dim, count;
    if ((st = get_job(root, m.job, err)) != ESGD_OK ||
        (st = mp_get_uint(root, "run", UINT64_MAX, &m.run, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "gen", &m.generation, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "round", &m.round, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "base_round", &m.base_round, err)) != ESGD_OK ||
        (st = mp_get_float(root, "lr", false, &m.lr, err)) != ESGD_OK ||
        (st = mp_get_float(root, "prev_loss", true, &m.prev_loss, err)) != ESGD_OK ||
        (st = mp_get_bool(root, "loss_fell", true, &loss_fell, err)) != ESGD_OK ||
        (st = mp_get_bool(root, "done", false, &done, err)) != ESGD_OK ||
        (st = mp_get_enum(root, "form", form_names, &form, err)) != ESGD_OK ||
        (st = codec_vector_get_dims(root, expected_dim, out->params.capacity, &dim, &count, err)) != ESGD_OK)
        return st;
    if (form == MODEL_FORM_FULL) {
        if (m.base_round != m.round)
            return esgd_error_set(err, ESGD_ERR_RANGE, "full model base_round %u != round %u", m.base_round,
                                  m.round);
        if (count != dim)
            return esgd_error_set(err, ESGD_ERR_RANGE, "full model count %u != dim %u", count, dim);
        if (mp_find(root, "idx_enc") || mp_find(root, "idx") || mp_find(root, "rice_b"))
            return esgd_error_set(err, ESGD_ERR_FORMAT, "full model carries index fields");
    } else if (m.round == 0 || m.base_round != m.round - 1) {
        return esgd_error_set(err, ESGD_ERR_RANGE, "model delta round %u on base_round %u", m.round, m.base_round);
    }
    if (count > 0 && (!out->params.values || (form == MODEL_FORM_DELTA && !out->params.indices)))
        return esgd_error_set(err, ESGD_ERR_ARG, "no storage for the decoded model");
    if (form == MODEL_FORM_DELTA &&
        (st = codec_vector_get_indices(root, dim, count, out->params.indices, err)) != ESGD_OK)
        return st;
    if ((st = codec_vector_get_values(root, count, VALUE_FORMAT_F32, out->params.values, err)) != ESGD_OK)
        return st;
    memcpy(out->job, m.job, sizeof m.job);
    out->run = m.run;
    out->generation = m.generation;
    out->round = m.round;
    out->base_round = m.base_round;
    out->lr = m.lr;
    out->prev_loss = m.prev_loss;
    out->loss_fell = (int8_t)loss_fell;
    out->done = (uint8_t)done;
    out->form = (model_form)form;
    out->params.dim = dim;
    out->params.count = count;
    return ESGD_OK;
}

esgd_status codec_decode_model(codec_decoder *dec, const uint8_t *data, size_t size, uint32_t expected_dim,
                               model_msg *out, esgd_error *err)
{
    out->params.count = 0;
    msgpack_object root;
    esgd_status st = mp_parse(&dec->zone, data, size, &root, err);
    if (st == ESGD_OK)
        st = decode_model(&root, expected_dim, out, err);
    if (st != ESGD_OK)
        out->params.count = 0;
    return st;
}

/* One job option from its msgpack value through the typed setter. */
static esgd_status set_option(esgd_job_config *cfg, const job_option *opt, const msgpack_object *o, esgd_error *err)
{
    switch (opt->type) {
    case JOB_OPTION_UINT:
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            return esgd_error_set(err, ESGD_ERR_RANGE, "option %s is negative", opt->name);
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return esgd_error_set(err, ESGD_ERR_TYPE, "option %s is not an unsigned integer", opt->name);
        return job_config_set_uint(cfg, opt, o->via.u64, err);
    case JOB_OPTION_FLOAT:
        if (o->type != MSGPACK_OBJECT_FLOAT32 && o->type != MSGPACK_OBJECT_FLOAT64)
            return esgd_error_set(err, ESGD_ERR_TYPE, "option %s is not a float", opt->name);
        return job_config_set_float(cfg, opt, o->via.f64, err);
    case JOB_OPTION_STRING:
        if (o->type != MSGPACK_OBJECT_STR)
            return esgd_error_set(err, ESGD_ERR_TYPE, "option %s is not a string", opt->name);
        return job_config_set_string(cfg, opt, o->via.str.ptr, o->via.str.size, err);
    }
    return esgd_error_set(err, ESGD_ERR_TYPE, "option %s has an unknown type", opt->name);
}

static esgd_status decode_config(const msgpack_object *root, esgd_job_config *out, esgd_error *err)
{
    esgd_status st = check_header(root, "config", err);
    if (st != ESGD_OK)
        return st;
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *key = &root->via.map.ptr[i].key;
        if (mp_key_is(key, "v") || mp_key_is(key, "type") || mp_key_is(key, "run") || mp_key_is(key, "dim"))
            continue;
        char name[64];
        bool known = false;
        if (key->via.str.size > 0 && key->via.str.size < sizeof name) { /* "" may have a NULL ptr */
            memcpy(name, key->via.str.ptr, key->via.str.size);
            name[key->via.str.size] = '\0';
            known = strlen(name) == key->via.str.size && job_option_find(name) != NULL;
        }
        if (!known)
            return esgd_error_set(err, ESGD_ERR_FORMAT, "unknown key '%s'", mp_quote(key).text);
    }
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    for (size_t i = 0; i < job_option_count(); i++) {
        const job_option *opt = job_option_at(i);
        const msgpack_object *o = mp_find(root, opt->name);
        if (!o)
            return esgd_error_set(err, ESGD_ERR_MISSING, "missing field %s", opt->name);
        if ((st = set_option(&cfg, opt, o, err)) != ESGD_OK)
            return st;
    }
    uint32_t dim;
    if ((st = mp_get_u32(root, "dim", &dim, err)) != ESGD_OK ||
        (st = mp_get_uint(root, "run", UINT64_MAX, &cfg.run, err)) != ESGD_OK)
        return st;
    if ((st = job_config_validate(&cfg, err)) != ESGD_OK) {
        esgd_error_prefix(err, "config message");
        return st;
    }
    if (dim != job_dimension(&cfg))
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "config dim %u, model \"%.60s\" has %u", dim, cfg.model,
                              job_dimension(&cfg));
    *out = cfg;
    return ESGD_OK;
}

esgd_status codec_decode_config(codec_decoder *dec, const uint8_t *data, size_t size, esgd_job_config *out,
                                esgd_error *err)
{
    msgpack_object root;
    esgd_status st = mp_parse(&dec->zone, data, size, &root, err);
    return st == ESGD_OK ? decode_config(&root, out, err) : st;
}

static esgd_status decode_status(const msgpack_object *root, status_msg *out, esgd_error *err)
{
    static const char *const keys[] = {"v",   "type",  "job",    "run",     "agent", "state",
                                       "round", "gen", "shard", "shards", "data_fp", NULL};
    esgd_status st = check_header(root, "status", err);
    if (st == ESGD_OK)
        st = mp_check_keys(root, keys, err);
    if (st != ESGD_OK)
        return st;
    status_msg m = {0};
    int state;
    if ((st = get_job(root, m.job, err)) != ESGD_OK ||
        (st = mp_get_uint(root, "run", UINT64_MAX, &m.run, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "agent", &m.agent, err)) != ESGD_OK ||
        (st = mp_get_enum(root, "state", state_names, &state, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "round", &m.round, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "gen", &m.generation, err)) != ESGD_OK)
        return st;
    /* What it trains on: all three fields or none. */
    m.has_data = mp_find(root, "shard") || mp_find(root, "shards") || mp_find(root, "data_fp");
    if (m.has_data) {
        if ((st = mp_get_u32(root, "shard", &m.shard, err)) != ESGD_OK ||
            (st = mp_get_u32(root, "shards", &m.shards, err)) != ESGD_OK ||
            (st = mp_get_uint(root, "data_fp", UINT64_MAX, &m.data_fp, err)) != ESGD_OK)
            return st;
        if (m.shard >= m.shards)
            return esgd_error_set(err, ESGD_ERR_RANGE, "shard %u of %u", m.shard, m.shards);
    }
    m.state = (agent_state)state;
    *out = m;
    return ESGD_OK;
}

esgd_status codec_decode_status(codec_decoder *dec, const uint8_t *data, size_t size, status_msg *out,
                                esgd_error *err)
{
    msgpack_object root;
    esgd_status st = mp_parse(&dec->zone, data, size, &root, err);
    return st == ESGD_OK ? decode_status(&root, out, err) : st;
}

static esgd_status decode_lease(const msgpack_object *root, lease_msg *out, esgd_error *err)
{
    static const char *const keys[] = {"v", "type", "job", "run", "gen", "state", "holder", NULL};
    static const char *const lease_states[] = {"released", "live", NULL};
    esgd_status st = check_header(root, "lease", err);
    if (st == ESGD_OK)
        st = mp_check_keys(root, keys, err);
    if (st != ESGD_OK)
        return st;
    lease_msg m = {0};
    int live = 0;
    if ((st = get_job(root, m.job, err)) != ESGD_OK ||
        (st = mp_get_uint(root, "run", UINT64_MAX, &m.run, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "gen", &m.generation, err)) != ESGD_OK ||
        (st = mp_get_enum(root, "state", lease_states, &live, err)) != ESGD_OK)
        return st;
    const msgpack_object *h = mp_find(root, "holder");
    if (!h)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field holder");
    if (h->type != MSGPACK_OBJECT_STR)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field holder is not a string");
    if (h->via.str.size > LEASE_HOLDER_MAX)
        return esgd_error_set(err, ESGD_ERR_RANGE, "field holder is over %d bytes", LEASE_HOLDER_MAX);
    memcpy(m.holder, h->via.str.ptr, h->via.str.size);
    m.holder[h->via.str.size] = '\0';
    m.live = live == 1;
    *out = m;
    return ESGD_OK;
}

esgd_status codec_decode_lease(codec_decoder *dec, const uint8_t *data, size_t size, lease_msg *out, esgd_error *err)
{
    msgpack_object root;
    esgd_status st = mp_parse(&dec->zone, data, size, &root, err);
    return st == ESGD_OK ? decode_lease(&root, out, err) : st;
}
