/* How a sparse vector travels in the update and model messages
 * (codec_vector.h): the checks before encoding, the choice of index coding
 * by exact message size, and writing and reading the dim, count, index and
 * value fields. The codings themselves are in index_coding.c, binary16 in
 * half.c. */
#include "codec_vector.h"

#include <math.h>
#include <string.h>

#include "esgd/job.h"
#include "half.h"
#include "index_coding.h"
#include "msgpack_read.h"

static const char *const idx_enc_names[] = {"all", "bitmap", "rice", NULL};

/* ---------------------------------------------------------------- checks */

esgd_status codec_vector_check(const sparse_vector *v, bool check_indices, value_format fmt, esgd_error *err)
{
    if (v->dim == 0)
        return esgd_error_set(err, ESGD_ERR_RANGE, "dim must be > 0");
    if (v->count > v->dim)
        return esgd_error_set(err, ESGD_ERR_RANGE, "count %u > dim %u", v->count, v->dim);
    if (v->count > 0 && (!v->values || (check_indices && !v->indices)))
        return esgd_error_set(err, ESGD_ERR_ARG, "vector with %u entries has no storage", v->count);
    if (check_indices) {
        for (uint32_t i = 0; i < v->count; i++) {
            if (v->indices[i] >= v->dim)
                return esgd_error_set(err, ESGD_ERR_RANGE, "index %u = %u >= dim %u", i, v->indices[i], v->dim);
            if (i > 0 && v->indices[i] <= v->indices[i - 1])
                return esgd_error_set(err, ESGD_ERR_ORDER, "index %u = %u not above the previous %u", i,
                                      v->indices[i], v->indices[i - 1]);
        }
    }
    for (uint32_t i = 0; i < v->count; i++) {
        if (!isfinite(v->values[i]))
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "value %u is not finite", i);
        /* 65520 is the midpoint between 65504, the largest half, and 2^16:
         * it and everything above round to Inf. */
        if (fmt == VALUE_FORMAT_F16 && fabsf(v->values[i]) >= 65520.0f)
            return esgd_error_set(err, ESGD_ERR_RANGE, "value %u = %g overflows binary16", i, (double)v->values[i]);
    }
    return ESGD_OK;
}

/* ------------------------------------------------------ choosing a coding */

static size_t str_size(size_t len)
{
    return len + (len < 32 ? 1 : len < 256 ? 2 : len < 65536 ? 3 : 5);
}

static size_t bin_size(size_t len)
{
    return len + (len < 256 ? 2 : len < 65536 ? 3 : 5);
}

/* Encoded bytes the index part adds (the idx_enc value, "idx", "rice_b"),
 * so the choice is by exact message size. */
static size_t plan_cost(const idx_plan *p)
{
    size_t cost = str_size(strlen(idx_enc_names[p->enc]));
    if (p->enc != IDX_ENC_ALL)
        cost += str_size(3) + bin_size(p->idx_bytes);
    if (p->enc == IDX_ENC_RICE)
        cost += str_size(6) + 1; /* rice_b is a positive fixint */
    return cost;
}

idx_plan codec_vector_plan(const sparse_vector *v)
{
    uint64_t bits;
    unsigned b = index_rice_best_param(v->indices, v->count, &bits);
    idx_plan rice = {IDX_ENC_RICE, b, (size_t)((bits + 7) / 8)};
    idx_plan bitmap = {IDX_ENC_BITMAP, 0, index_bitmap_bytes(v->dim)};
    idx_plan best = bitmap;
    if (plan_cost(&rice) < plan_cost(&best))
        best = rice;
    if (v->count == v->dim) {
        idx_plan all = {IDX_ENC_ALL, 0, 0};
        if (plan_cost(&all) <= plan_cost(&best))
            best = all;
    }
    return best;
}

size_t codec_vector_plan_keys(const idx_plan *plan)
{
    return 1 + (plan->enc != IDX_ENC_ALL) + (plan->enc == IDX_ENC_RICE);
}

/* --------------------------------------------------------------- writing */

void codec_vector_put_indices(mp_writer *w, const sparse_vector *v, const idx_plan *plan)
{
    mp_put_str(w, "idx_enc", idx_enc_names[plan->enc]);
    if (plan->enc == IDX_ENC_ALL)
        return;
    uint8_t *p = mp_put_bin(w, "idx", plan->idx_bytes);
    if (p && plan->enc == IDX_ENC_BITMAP)
        index_bitmap_write(p, plan->idx_bytes, v->indices, v->count);
    if (p && plan->enc == IDX_ENC_RICE)
        index_rice_write(p, plan->idx_bytes, v->indices, v->count, plan->rice_b);
    if (plan->enc == IDX_ENC_RICE)
        mp_put_uint(w, "rice_b", plan->rice_b);
}

void codec_vector_put_values(mp_writer *w, const sparse_vector *v, value_format fmt)
{
    size_t width = fmt == VALUE_FORMAT_F16 ? 2 : 4;
    uint8_t *out = mp_put_bin(w, "val", width * v->count);
    if (!out)
        return;
    if (fmt == VALUE_FORMAT_F16) {
        half_write_le(out, v->values, v->count);
        return;
    }
    for (uint32_t i = 0; i < v->count; i++) {
        uint32_t x;
        memcpy(&x, &v->values[i], sizeof x);
        uint8_t *p = out + 4 * (size_t)i;
        p[0] = (uint8_t)x;
        p[1] = (uint8_t)(x >> 8);
        p[2] = (uint8_t)(x >> 16);
        p[3] = (uint8_t)(x >> 24);
    }
}

/* --------------------------------------------------------------- reading */

esgd_status codec_vector_get_dims(const msgpack_object *map, uint32_t expected_dim, uint32_t capacity, uint32_t *dim,
                                  uint32_t *count, esgd_error *err)
{
    esgd_status st = mp_get_u32(map, "dim", dim, err);
    if (st == ESGD_OK)
        st = mp_get_u32(map, "count", count, err);
    if (st != ESGD_OK)
        return st;
    if (*dim == 0)
        return esgd_error_set(err, ESGD_ERR_RANGE, "dim must be > 0");
    if (expected_dim && *dim != expected_dim)
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "dim %u, expected %u", *dim, expected_dim);
    if (!expected_dim && *dim > capacity)
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "dim %u exceeds capacity %u", *dim, capacity);
    if (*count > *dim)
        return esgd_error_set(err, ESGD_ERR_RANGE, "count %u > dim %u", *count, *dim);
    if (*count > capacity)
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "count %u exceeds capacity %u", *count, capacity);
    return ESGD_OK;
}

esgd_status codec_vector_get_indices(const msgpack_object *map, uint32_t dim, uint32_t count, uint32_t *indices,
                                     esgd_error *err)
{
    int enc;
    esgd_status st = mp_get_enum(map, "idx_enc", idx_enc_names, &enc, err);
    if (st != ESGD_OK)
        return st;
    if (enc != IDX_ENC_RICE && mp_find(map, "rice_b"))
        return esgd_error_set(err, ESGD_ERR_FORMAT, "rice_b present with idx_enc %s", idx_enc_names[enc]);
    if (enc == IDX_ENC_ALL) {
        if (mp_find(map, "idx"))
            return esgd_error_set(err, ESGD_ERR_FORMAT, "idx present with idx_enc all");
        if (count != dim)
            return esgd_error_set(err, ESGD_ERR_FORMAT, "idx_enc all with count %u != dim %u", count, dim);
        for (uint32_t i = 0; i < count; i++)
            indices[i] = i;
        return ESGD_OK;
    }
    const uint8_t *idx = NULL;
    size_t size = 0;
    if ((st = mp_get_bin(map, "idx", &idx, &size, err)) != ESGD_OK)
        return st;
    if (enc == IDX_ENC_BITMAP)
        return index_bitmap_read(idx, size, dim, count, indices, err);
    uint64_t b;
    if ((st = mp_get_uint(map, "rice_b", INDEX_RICE_MAX_PARAM, &b, err)) != ESGD_OK)
        return st;
    return index_rice_read(idx, size, (unsigned)b, dim, count, indices, err);
}

esgd_status codec_vector_get_values(const msgpack_object *map, uint32_t count, value_format fmt, float *values,
                                    esgd_error *err)
{
    const uint8_t *val = NULL;
    size_t size = 0;
    esgd_status st = mp_get_bin(map, "val", &val, &size, err);
    if (st != ESGD_OK)
        return st;
    size_t width = fmt == VALUE_FORMAT_F16 ? 2 : 4;
    if (size != width * count)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "val has %zu bytes, count %u of %s needs %zu", size, count,
                              value_format_name(fmt), width * count);
    if (fmt == VALUE_FORMAT_F16)
        return half_read_le(val, count, values, err);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *p = val + 4 * (size_t)i;
        uint32_t x = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if ((x & 0x7f800000u) == 0x7f800000u)
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "value %u is not finite", i);
        memcpy(&values[i], &x, sizeof x);
    }
    return ESGD_OK;
}
