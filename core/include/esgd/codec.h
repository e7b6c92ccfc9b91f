/* The wire format: msgpack messages for gradient updates, model broadcasts,
 * the job configuration and agent status. schemas/messages.md is the
 * normative description; this is its C implementation.
 *
 * Encoders write into a caller-owned esgd_buffer of fixed capacity (no
 * allocation; ESGD_ERR_TOO_LARGE if it does not fit). Decoders check version,
 * types, lengths, index range and order, finiteness and dimensions before any
 * value is used, write only into caller-provided storage within its stated
 * capacity, and return a status plus a message; they never read out of
 * bounds, whatever the input. */
#ifndef ESGD_CODEC_H
#define ESGD_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/error.h"
#include "esgd/job.h" /* JOB_NAME_MAX, esgd_job_config, value_format */
#include "esgd/sparse.h"

/* Version 2: every message carries the run id and travels signed
 * (envelope.h). Version 1 messages are refused as "version". */
#define CODEC_VERSION 2

typedef struct esgd_buffer {
    uint8_t *data;
    size_t size;     /* bytes written */
    size_t capacity; /* fixed at init */
} esgd_buffer;

esgd_status buffer_init(esgd_buffer *buf, size_t capacity, esgd_error *err);
void buffer_destroy(esgd_buffer *buf);

/* Agent -> coordinator, topic esgd/<job>/round/<t>/grad/<agent>. */
typedef struct update_msg {
    char job[JOB_NAME_MAX + 1];
    uint64_t run;       /* the run the agent takes part in (esgd_job_config.run) */
    uint32_t round;     /* t: the model x_t the gradient was computed at */
    uint32_t agent;     /* agent id, 0..agents-1 */
    uint32_t samples;   /* minibatch size used */
    float loss;         /* l_i(x_t), mean minibatch loss */
    sparse_vector grad; /* decode: caller provides indices/values with capacity */
} update_msg;

typedef enum model_form {
    MODEL_FORM_FULL, /* all d parameters */
    MODEL_FORM_DELTA /* new values of the parameters that changed since base_round */
} model_form;

/* Coordinator -> agents, topic esgd/<job>/round/<t>/model and retained
 * esgd/<job>/model (full form only). */
typedef struct model_msg {
    char job[JOB_NAME_MAX + 1];
    uint64_t run;         /* the run that made this model */
    uint32_t generation;  /* which start of the run's coordinator: agents follow the newest */
    uint32_t round;       /* this is x_round; agents answer with round `round` */
    uint32_t base_round;  /* delta: applies to x_base_round (== round - 1); full: == round */
    float lr;             /* learning rate that produced x_round (information) */
    float prev_loss;      /* L_{round-1}; NaN when no round has closed yet */
    int8_t loss_fell;     /* 1 if L_{round-1} < L_{round-2}, 0 if not, -1 unknown */
    uint8_t done;         /* 1 when the job has ended and x_round is final */
    model_form form;
    /* Full: count == dim, values (dim) in order; indices are neither written
     * nor read. Delta: sorted indices and their new values. Values are always
     * fp32 so every agent holds exactly the coordinator's model. */
    sparse_vector params;
} model_msg;

typedef enum agent_state {
    AGENT_STATE_ONLINE,
    AGENT_STATE_OFFLINE, /* also the agent's retained Last Will */
    AGENT_STATE_DONE,
    AGENT_STATE_SYNCING  /* online, but without the current model: asks the coordinator for it */
} agent_state;

/* Agent -> everyone, retained, topic esgd/<job>/status/<agent>. */
typedef struct status_msg {
    char job[JOB_NAME_MAX + 1];
    uint64_t run;    /* the run the agent takes part in; 0 before it has seen a configuration */
    uint32_t agent;
    agent_state state;
    uint32_t round;  /* last round the agent answered (0 if none) */
    uint32_t generation; /* the coordinator generation the agent follows (0: none yet) */
    /* What the agent trains on, once it has loaded it (has_data): shard
     * index of shards, and a fingerprint of its examples, so the
     * coordinator can tell two agents on the same data. */
    bool has_data;
    uint32_t shard, shards;
    uint64_t data_fp;
} status_msg;

const char *agent_state_name(agent_state s); /* "online", "offline", "done", "syncing" */

#define LEASE_HOLDER_MAX 200

/* Coordinator -> everyone, retained, topic esgd/<job>/lease: which
 * coordinator runs the job, so a second one refuses to start. "released"
 * is the holder's Last Will. */
typedef struct lease_msg {
    char job[JOB_NAME_MAX + 1];
    uint64_t run;
    uint32_t generation;
    bool live;                            /* false: released */
    char holder[LEASE_HOLDER_MAX + 1];    /* "host pid state-dir", for the operator and to tell a dead holder */
} lease_msg;

/* Upper bounds on encoded size for a dimension, to size buffers once. */
size_t codec_update_bound(uint32_t dim);
size_t codec_model_bound(uint32_t dim);
#define CODEC_CONFIG_BOUND 4096
#define CODEC_STATUS_BOUND 256

/* Decoding scratch (a msgpack zone), reused across messages so decoding does
 * not allocate per message once warm. One per thread. */
typedef struct codec_decoder codec_decoder;
codec_decoder *codec_decoder_new(esgd_error *err);
void codec_decoder_free(codec_decoder *dec); /* NULL is a no-op */

/* Indices are coded in the smallest of three forms (all / bitmap / Rice-coded
 * gaps); values in fmt. */
esgd_status codec_encode_update(esgd_buffer *out, const update_msg *msg, value_format fmt, esgd_error *err);
/* expected_dim: the job's d (0 accepts any dim up to out->grad.capacity);
 * out->grad.indices/values/capacity must be set by the caller. */
esgd_status codec_decode_update(codec_decoder *dec, const uint8_t *data, size_t size, uint32_t expected_dim,
                                update_msg *out, esgd_error *err);

esgd_status codec_encode_model(esgd_buffer *out, const model_msg *msg, esgd_error *err);
esgd_status codec_decode_model(codec_decoder *dec, const uint8_t *data, size_t size, uint32_t expected_dim,
                               model_msg *out, esgd_error *err);

/* The whole esgd_job_config, one msgpack key per job option (job.h). Unknown
 * keys are rejected so a newer coordinator cannot be half-understood. */
esgd_status codec_encode_config(esgd_buffer *out, const esgd_job_config *cfg, esgd_error *err);
esgd_status codec_decode_config(codec_decoder *dec, const uint8_t *data, size_t size, esgd_job_config *out,
                                esgd_error *err);

esgd_status codec_encode_status(esgd_buffer *out, const status_msg *msg, esgd_error *err);
esgd_status codec_encode_lease(esgd_buffer *out, const lease_msg *msg, esgd_error *err);
esgd_status codec_decode_lease(codec_decoder *dec, const uint8_t *data, size_t size, lease_msg *out, esgd_error *err);
esgd_status codec_decode_status(codec_decoder *dec, const uint8_t *data, size_t size, status_msg *out,
                                esgd_error *err);

/* IEEE binary16 conversions used for VALUE_FORMAT_F16 (core/src/half.c). */
#define CODEC_F16_MAX 65504.0f /* the largest finite half */
/* Clamps values[0..count) to [-CODEC_F16_MAX, CODEC_F16_MAX] in place (NaN
 * stays NaN) and returns how many it changed. */
uint32_t codec_clamp_f16(float *values, uint32_t count);
uint16_t codec_f32_to_f16(float value);
float codec_f16_to_f32(uint16_t half);

#endif
