/* The sparse-vector fields of the update and model messages, internal to
 * core/src: "dim", "count", the index part ("idx_enc", "idx", "rice_b";
 * schemas/messages.md) and the values ("val", in f32 or f16). codec.c
 * writes and reads the rest of each message and calls these for the
 * vector, so both messages carry a vector the same way:
 *
 *   encode: codec_vector_check, then plan = codec_vector_plan(v) and
 *           codec_vector_plan_keys(&plan) more map keys, then
 *           codec_vector_put_indices and codec_vector_put_values;
 *   decode: codec_vector_get_dims, codec_vector_get_indices,
 *           codec_vector_get_values. */
#ifndef ESGD_CODEC_VECTOR_H
#define ESGD_CODEC_VECTOR_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/error.h"
#include "esgd/job_types.h"
#include "esgd/sparse.h"
#include "msgpack_write.h"

/* The values of "idx_enc": every index (no "idx"), a bitmap, or Rice-coded
 * gaps with parameter "rice_b" (index_coding.h). */
typedef enum idx_enc {
    IDX_ENC_ALL,
    IDX_ENC_BITMAP,
    IDX_ENC_RICE
} idx_enc;

typedef struct idx_plan {
    idx_enc enc;
    unsigned rice_b;
    size_t idx_bytes; /* length of the "idx" bin */
} idx_plan;

/* A full model's: no index fields at all. */
#define IDX_PLAN_NONE ((idx_plan){IDX_ENC_ALL, 0, 0})

/* Before encoding: dim > 0, count <= dim, storage present, indices (when
 * check_indices) ascending, unique and < dim, values finite and, for f16,
 * below 65520 (which rounds to Inf). Errors: ESGD_ERR_RANGE, ESGD_ERR_ARG,
 * ESGD_ERR_ORDER, ESGD_ERR_NONFINITE, with the entry's position. */
esgd_status codec_vector_check(const sparse_vector *v, bool check_indices, value_format fmt, esgd_error *err);

/* The index coding that makes the message smallest (exact encoded bytes):
 * Rice with its best parameter or the bitmap, or "all" when every index
 * is present and it is no larger. */
idx_plan codec_vector_plan(const sparse_vector *v);

/* How many map keys the plan's index part takes: idx_enc, idx, rice_b. */
size_t codec_vector_plan_keys(const idx_plan *plan);

/* Writes idx_enc, idx and rice_b as planned. */
void codec_vector_put_indices(mp_writer *w, const sparse_vector *v, const idx_plan *plan);

/* Writes val: count values in fmt, little-endian. */
void codec_vector_put_values(mp_writer *w, const sparse_vector *v, value_format fmt);

/* Reads dim and count and checks them: dim > 0, dim == expected_dim (or,
 * with expected_dim 0, dim <= capacity), count <= dim and <= capacity.
 * Errors: the getters', ESGD_ERR_RANGE, ESGD_ERR_DIMENSION,
 * ESGD_ERR_TOO_LARGE. */
esgd_status codec_vector_get_dims(const msgpack_object *map, uint32_t expected_dim, uint32_t capacity, uint32_t *dim,
                                  uint32_t *count, esgd_error *err);

/* Reads idx_enc, idx and rice_b into indices[0..count): exactly the fields
 * the coding has, the coding's own checks (index_coding.h). */
esgd_status codec_vector_get_indices(const msgpack_object *map, uint32_t dim, uint32_t count, uint32_t *indices,
                                     esgd_error *err);

/* Reads val: exactly count values of fmt, each finite, into values. */
esgd_status codec_vector_get_values(const msgpack_object *map, uint32_t count, value_format fmt, float *values,
                                    esgd_error *err);

#endif
