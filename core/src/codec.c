/* The msgpack wire format of schemas/messages.md: encoders that pack into a
 * fixed-capacity buffer and decoders that check every field, length, index
 * and value before reporting success. Index sets travel as "all", a bitmap
 * or Rice-coded gaps, whichever is smallest. */
#include "esgd/codec.h"

#include <assert.h>
#include <math.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* No message has more keys than this; bigger maps are rejected before the
 * quadratic duplicate-key check can be made expensive by a hostile sender. */
#define CODEC_MAX_KEYS 64
/* Messages are flat maps; deeper nesting is malformed long before
 * msgpack-c's own parser stack (32) would give up with a misleading NOMEM. */
#define SCAN_MAX_DEPTH 16

struct codec_decoder {
    msgpack_zone zone;
};

static const char *const index_coding_names[] = {"all", "bitmap", "rice"};
typedef enum index_coding { INDEX_ALL, INDEX_BITMAP, INDEX_RICE } index_coding;

static const char *const state_names[] = {"online", "offline", "done"};
static const char *const form_names[] = {"full", "delta"};
static const char *const format_names[] = {"f32", "f16"};

/* ------------------------------------------------------------------ buffers */

esgd_status buffer_init(esgd_buffer *buf, size_t capacity, esgd_error *err)
{
    buf->size = 0;
    buf->capacity = 0;
    buf->data = malloc(capacity ? capacity : 1);
    if (!buf->data)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "message buffer of %zu bytes", capacity);
    buf->capacity = capacity;
    return ESGD_OK;
}

void buffer_destroy(esgd_buffer *buf)
{
    if (!buf)
        return;
    free(buf->data);
    buf->data = NULL;
    buf->size = 0;
    buf->capacity = 0;
}

/* Room for len more bytes, or NULL when the buffer is full. */
static uint8_t *buffer_reserve(esgd_buffer *buf, size_t len)
{
    if (len > buf->capacity - buf->size)
        return NULL;
    uint8_t *p = buf->data + buf->size;
    buf->size += len;
    return p;
}

static int buffer_write(void *data, const char *bytes, size_t len)
{
    uint8_t *p = buffer_reserve(data, len);
    if (!p)
        return -1;
    memcpy(p, bytes, len);
    return 0;
}

const char *agent_state_name(agent_state s)
{
    return (unsigned)s < 3 ? state_names[s] : "unknown";
}

/* ---------------------------------------------------------------- binary16 */

/* Round to nearest even without a data-dependent branch in the common case:
 * a rounding branch mispredicts on half the values of a gradient, which made
 * fp16 encoding 3x slower than fp32. */
uint16_t codec_f32_to_f16(float value)
{
    uint32_t x;
    memcpy(&x, &value, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x47800000u) /* |value| >= 2^16, Inf or NaN; NaN stays a quiet NaN */
        return (uint16_t)(sign | (x > 0x7f800000u ? 0x7e00u | ((x >> 13) & 0x3ffu) : 0x7c00u));
    if (x < 0x38800000u) {
        /* Below 2^-14 the half is subnormal, in steps of 2^-24. Adding 0.5,
         * whose ulp is 2^-24, lets the FPU round to that step (nearest even);
         * the sum's low mantissa bits are the half's. */
        float magnitude;
        memcpy(&magnitude, &x, sizeof magnitude);
        float sum = magnitude + 0.5f;
        uint32_t bits;
        memcpy(&bits, &sum, sizeof bits);
        return (uint16_t)(sign | (bits - 0x3f000000u));
    }
    /* Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits;
     * a carry goes into the exponent, up to 0x7c00 (Inf) above 65504. */
    uint32_t odd = (x >> 13) & 1u;
    x = x - (112u << 23) + 0xfffu + odd;
    return (uint16_t)(sign | (x >> 13));
}

uint32_t codec_clamp_f16(float *values, uint32_t count)
{
    uint32_t clamped = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (fabsf(values[i]) > CODEC_F16_MAX) {
            values[i] = copysignf(CODEC_F16_MAX, values[i]);
            clamped++;
        }
    }
    return clamped;
}

float codec_f16_to_f32(uint16_t half)
{
    uint32_t sign = (uint32_t)(half & 0x8000u) << 16;
    uint32_t exp = (half >> 10) & 0x1fu;
    uint32_t man = half & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        float v = (float)man * 0x1p-24f; /* exact: man < 2^10 */
        return sign ? -v : v;
    }
    if (exp == 31)
        x = sign | 0x7f800000u | (man << 13);
    else
        x = sign | ((exp + 112) << 23) | (man << 13);
    float v;
    memcpy(&v, &x, sizeof v);
    return v;
}

static bool half_is_finite(uint16_t h)
{
    return (h & 0x7c00u) != 0x7c00u;
}

/* --------------------------------------------------------- shared checks */

static bool valid_job_name(const char *s, size_t len)
{
    if (len == 0 || len > JOB_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '.' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static esgd_status check_job_name(const char *job, esgd_error *err)
{
    const char *end = memchr(job, '\0', JOB_NAME_MAX + 1);
    if (!end || !valid_job_name(job, (size_t)(end - job)))
        return esgd_error_set(err, ESGD_ERR_RANGE, "job name must be 1..%d of [A-Za-z0-9_.-]", JOB_NAME_MAX);
    return ESGD_OK;
}

/* Sorted, unique, in range and finite: what both directions require of a
 * sparse vector. Indices are not checked when NULL (a full model). */
static esgd_status check_vector(const sparse_vector *v, bool check_indices, value_format fmt, esgd_error *err)
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

/* ------------------------------------------------------- index coding sizes */

/* Bits of the Rice code of all gaps with parameter b: each gap costs
 * (gap >> b) one-bits, a zero bit and b low bits. */
static uint64_t rice_bits(const uint32_t *indices, uint32_t count, unsigned b)
{
    uint64_t bits = (uint64_t)count * (1 + b);
    uint32_t next = 0; /* smallest index the next one may take */
    for (uint32_t i = 0; i < count; i++) {
        bits += (indices[i] - next) >> b;
        next = indices[i] + 1;
    }
    return bits;
}

/* The cost k(1+b) + sum(gap >> b) is convex in b (its step k - sum
 * ceil((gap >> b) / 2) never decreases), so walking downhill from the b
 * near log2(mean gap) finds the exact optimum in a few passes. */
static unsigned rice_best_b(const uint32_t *indices, uint32_t count, uint64_t *best_bits)
{
    if (count == 0) {
        *best_bits = 0;
        return 0;
    }
    uint64_t gap_sum = (uint64_t)indices[count - 1] + 1 - count;
    uint64_t mean = gap_sum / count;
    unsigned b = 0;
    while (b < 31 && (2ull << b) <= mean)
        b++;
    uint64_t cost = rice_bits(indices, count, b);
    while (b > 0) {
        uint64_t lower = rice_bits(indices, count, b - 1);
        if (lower > cost)
            break;
        b--;
        cost = lower;
    }
    while (b < 31) {
        uint64_t higher = rice_bits(indices, count, b + 1);
        if (higher >= cost)
            break;
        b++;
        cost = higher;
    }
    *best_bits = cost;
    return b;
}

static size_t str_size(size_t len)
{
    return len + (len < 32 ? 1 : len < 256 ? 2 : len < 65536 ? 3 : 5);
}

static size_t bin_size(size_t len)
{
    return len + (len < 256 ? 2 : len < 65536 ? 3 : 5);
}

typedef struct index_plan {
    index_coding coding;
    unsigned rice_b;
    size_t idx_bytes; /* length of the "idx" bin */
} index_plan;

/* Encoded bytes the index part adds (the idx_enc value, "idx", "rice_b"),
 * so the choice is by exact message size. */
static size_t plan_cost(const index_plan *p)
{
    size_t cost = str_size(strlen(index_coding_names[p->coding]));
    if (p->coding != INDEX_ALL)
        cost += str_size(3) + bin_size(p->idx_bytes);
    if (p->coding == INDEX_RICE)
        cost += str_size(6) + 1; /* rice_b is a positive fixint */
    return cost;
}

static index_plan plan_indices(const sparse_vector *v)
{
    uint64_t bits;
    unsigned b = rice_best_b(v->indices, v->count, &bits);
    index_plan rice = {INDEX_RICE, b, (size_t)((bits + 7) / 8)};
    index_plan bitmap = {INDEX_BITMAP, 0, ((size_t)v->dim + 7) / 8};
    index_plan best = bitmap;
    if (plan_cost(&rice) < plan_cost(&best))
        best = rice;
    if (v->count == v->dim) {
        index_plan all = {INDEX_ALL, 0, 0};
        if (plan_cost(&all) <= plan_cost(&best))
            best = all;
    }
    return best;
}

/* ------------------------------------------------------------ bit packing */

typedef struct bit_writer {
    uint8_t *out;
    size_t pos;    /* bytes written */
    uint64_t acc;  /* pending bits in the low nacc bits */
    unsigned nacc; /* < 8 between calls */
} bit_writer;

/* Appends the n (<= 32) low bits of value, most significant first. */
static void put_bits(bit_writer *w, uint32_t value, unsigned n)
{
    w->acc = (w->acc << n) | value;
    w->nacc += n;
    while (w->nacc >= 8) {
        w->nacc -= 8;
        w->out[w->pos++] = (uint8_t)(w->acc >> w->nacc);
    }
}

static void rice_write(uint8_t *out, size_t bytes, const uint32_t *indices, uint32_t count, unsigned b)
{
    bit_writer w = {out, 0, 0, 0};
    uint32_t next = 0;
    uint32_t low_mask = b ? (uint32_t)((1ull << b) - 1) : 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t gap = indices[i] - next;
        uint32_t q = gap >> b;
        for (; q >= 31; q -= 31)
            put_bits(&w, 0x7fffffffu, 31);
        put_bits(&w, ((1u << q) - 1) << 1, q + 1); /* q ones, then the zero */
        if (b)
            put_bits(&w, gap & low_mask, b);
        next = indices[i] + 1;
    }
    if (w.nacc)
        w.out[w.pos++] = (uint8_t)(w.acc << (8 - w.nacc)); /* zero padding */
    assert(w.pos == bytes);
    (void)bytes;
}

static void bitmap_write(uint8_t *out, size_t bytes, const uint32_t *indices, uint32_t count)
{
    memset(out, 0, bytes);
    for (uint32_t i = 0; i < count; i++)
        out[indices[i] >> 3] |= (uint8_t)(1u << (indices[i] & 7));
}

typedef struct bit_reader {
    const uint8_t *data;
    size_t nbits; /* a multiple of 8 */
    size_t pos;
} bit_reader;

/* Reads a unary run of one-bits and its terminating zero. Stops as soon as
 * the run exceeds limit (RANGE) or the bits run out (FORMAT): the loop is
 * bounded by the data, never by a value the sender chose. */
static esgd_status read_unary(bit_reader *r, uint64_t limit, uint64_t *run_out, esgd_error *err)
{
    uint64_t run = 0;
    while (r->pos < r->nbits) {
        unsigned offset = (unsigned)(r->pos & 7);
        unsigned avail = 8 - offset;
        unsigned inverted = (~((unsigned)r->data[r->pos >> 3] << offset)) & 0xffu;
        unsigned ones = inverted ? (unsigned)__builtin_clz(inverted) - 24 : 8;
        if (ones >= avail) {
            run += avail;
            r->pos += avail;
        } else {
            run += ones;
            r->pos += ones + 1;
        }
        if (run > limit)
            return esgd_error_set(err, ESGD_ERR_RANGE, "rice unary run of %llu or more goes past dim",
                                  (unsigned long long)run);
        if (ones < avail) {
            *run_out = run;
            return ESGD_OK;
        }
    }
    return esgd_error_set(err, ESGD_ERR_FORMAT, "rice idx ends inside a unary run");
}

static esgd_status read_bits(bit_reader *r, unsigned n, uint32_t *out, esgd_error *err)
{
    if (n > r->nbits - r->pos)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "rice idx ends inside a remainder");
    uint32_t v = 0;
    for (unsigned i = 0; i < n; i++, r->pos++)
        v = (v << 1) | ((r->data[r->pos >> 3] >> (7 - (r->pos & 7))) & 1u);
    *out = v;
    return ESGD_OK;
}

static esgd_status rice_read(const uint8_t *data, size_t bytes, unsigned b, uint32_t dim, uint32_t count,
                             uint32_t *indices, esgd_error *err)
{
    bit_reader r = {data, bytes * 8, 0};
    uint64_t next = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (next >= dim)
            return esgd_error_set(err, ESGD_ERR_RANGE, "rice index %u past dim %u", i, dim);
        uint64_t q = 0;
        uint32_t low = 0;
        esgd_status st = read_unary(&r, (dim - 1 - next) >> b, &q, err);
        if (st == ESGD_OK)
            st = read_bits(&r, b, &low, err);
        if (st != ESGD_OK)
            return st;
        uint64_t index = next + (q << b) + low;
        if (index >= dim)
            return esgd_error_set(err, ESGD_ERR_RANGE, "rice index %u = %llu >= dim %u", i,
                                  (unsigned long long)index, dim);
        indices[i] = (uint32_t)index;
        next = index + 1;
    }
    size_t used = (r.pos + 7) / 8;
    if (used != bytes)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "rice idx has %zu bytes, its codes fill %zu", bytes, used);
    if (r.pos & 7) {
        unsigned pad = 8 - (unsigned)(r.pos & 7);
        if (data[bytes - 1] & ((1u << pad) - 1))
            return esgd_error_set(err, ESGD_ERR_FORMAT, "rice idx padding bits are not zero");
    }
    return ESGD_OK;
}

static esgd_status bitmap_read(const uint8_t *data, size_t bytes, uint32_t dim, uint32_t count, uint32_t *indices,
                               esgd_error *err)
{
    if (bytes != ((size_t)dim + 7) / 8)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "bitmap idx has %zu bytes, dim %u needs %zu", bytes, dim,
                              ((size_t)dim + 7) / 8);
    uint32_t found = 0;
    for (size_t i = 0; i < bytes; i++) {
        unsigned v = data[i];
        while (v) {
            uint32_t j = (uint32_t)(i * 8) + (uint32_t)__builtin_ctz(v);
            if (j >= dim)
                return esgd_error_set(err, ESGD_ERR_RANGE, "bitmap bit %u >= dim %u", j, dim);
            if (found == count)
                return esgd_error_set(err, ESGD_ERR_FORMAT, "bitmap has more than count = %u bits set", count);
            indices[found++] = j;
            v &= v - 1;
        }
    }
    if (found != count)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "bitmap has %u bits set, count = %u", found, count);
    return ESGD_OK;
}

/* ------------------------------------------------------------ value bytes */

static void values_write(uint8_t *out, const float *values, uint32_t count, value_format fmt)
{
    if (fmt == VALUE_FORMAT_F16) {
        for (uint32_t i = 0; i < count; i++) {
            uint16_t h = codec_f32_to_f16(values[i]);
            out[2 * i] = (uint8_t)h;
            out[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint32_t x;
        memcpy(&x, &values[i], sizeof x);
        uint8_t *p = out + 4 * (size_t)i;
        p[0] = (uint8_t)x;
        p[1] = (uint8_t)(x >> 8);
        p[2] = (uint8_t)(x >> 16);
        p[3] = (uint8_t)(x >> 24);
    }
}

static esgd_status values_read(const uint8_t *in, uint32_t count, value_format fmt, float *values, esgd_error *err)
{
    if (fmt == VALUE_FORMAT_F16) {
        for (uint32_t i = 0; i < count; i++) {
            uint16_t h = (uint16_t)(in[2 * i] | (in[2 * i + 1] << 8));
            if (!half_is_finite(h))
                return esgd_error_set(err, ESGD_ERR_NONFINITE, "value %u is not finite", i);
            values[i] = codec_f16_to_f32(h);
        }
        return ESGD_OK;
    }
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *p = in + 4 * (size_t)i;
        uint32_t x = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if ((x & 0x7f800000u) == 0x7f800000u)
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "value %u is not finite", i);
        memcpy(&values[i], &x, sizeof x);
    }
    return ESGD_OK;
}

/* --------------------------------------------------------------- encoding */

typedef struct encoder {
    msgpack_packer pk;
    esgd_buffer *buf;
    bool full; /* some write did not fit */
} encoder;

static void encoder_start(encoder *e, esgd_buffer *buf, size_t keys)
{
    buf->size = 0;
    e->buf = buf;
    e->full = false;
    msgpack_packer_init(&e->pk, buf, buffer_write);
    e->full |= msgpack_pack_map(&e->pk, keys) != 0;
}

static void put_str(encoder *e, const char *s)
{
    e->full |= msgpack_pack_str_with_body(&e->pk, s, strlen(s)) != 0;
}

static void put_uint(encoder *e, const char *key, uint64_t v)
{
    put_str(e, key);
    e->full |= msgpack_pack_uint64(&e->pk, v) != 0;
}

/* Always 5 bytes: a model's size must not depend on when its coordinator
 * started, so that the simulator and the broker run count the same bytes. */
static void put_u32_fixed(encoder *e, const char *key, uint32_t v)
{
    put_str(e, key);
    e->full |= msgpack_pack_fix_uint32(&e->pk, v) != 0;
}

static void put_f32(encoder *e, const char *key, float v)
{
    put_str(e, key);
    e->full |= msgpack_pack_float(&e->pk, v) != 0;
}

static void put_kv_str(encoder *e, const char *key, const char *value)
{
    put_str(e, key);
    put_str(e, value);
}

/* The header of a bin of len bytes, then room for its body. */
static uint8_t *put_bin(encoder *e, const char *key, size_t len)
{
    put_str(e, key);
    e->full |= msgpack_pack_bin(&e->pk, len) != 0;
    if (e->full)
        return NULL;
    uint8_t *p = buffer_reserve(e->buf, len);
    e->full |= p == NULL;
    return p;
}

static void put_common(encoder *e, const char *type, const char *job, uint64_t run)
{
    put_uint(e, "v", CODEC_VERSION);
    put_kv_str(e, "type", type);
    put_kv_str(e, "job", job);
    put_uint(e, "run", run);
}

/* Writes idx_enc, idx and rice_b for a planned index coding. */
static void put_indices(encoder *e, const sparse_vector *v, const index_plan *plan)
{
    put_kv_str(e, "idx_enc", index_coding_names[plan->coding]);
    if (plan->coding == INDEX_ALL)
        return;
    uint8_t *p = put_bin(e, "idx", plan->idx_bytes);
    if (p && plan->coding == INDEX_BITMAP)
        bitmap_write(p, plan->idx_bytes, v->indices, v->count);
    if (p && plan->coding == INDEX_RICE)
        rice_write(p, plan->idx_bytes, v->indices, v->count, plan->rice_b);
    if (plan->coding == INDEX_RICE)
        put_uint(e, "rice_b", plan->rice_b);
}

static void put_values(encoder *e, const sparse_vector *v, value_format fmt)
{
    size_t width = fmt == VALUE_FORMAT_F16 ? 2 : 4;
    uint8_t *p = put_bin(e, "val", width * v->count);
    if (p)
        values_write(p, v->values, v->count, fmt);
}

static esgd_status encoder_finish(encoder *e, const char *what, esgd_error *err)
{
    if (!e->full)
        return ESGD_OK;
    size_t capacity = e->buf->capacity;
    e->buf->size = 0;
    return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "%s message does not fit in %zu bytes", what, capacity);
}

static size_t index_keys(const index_plan *plan)
{
    return 1 + (plan->coding != INDEX_ALL) + (plan->coding == INDEX_RICE);
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
    if ((st = check_vector(&msg->grad, true, fmt, err)) != ESGD_OK)
        return st;

    index_plan plan = plan_indices(&msg->grad);
    encoder e;
    encoder_start(&e, out, 12 + index_keys(&plan));
    put_common(&e, "update", msg->job, msg->run);
    put_uint(&e, "round", msg->round);
    put_uint(&e, "agent", msg->agent);
    put_uint(&e, "samples", msg->samples);
    put_f32(&e, "loss", msg->loss);
    put_uint(&e, "dim", msg->grad.dim);
    put_uint(&e, "count", msg->grad.count);
    put_indices(&e, &msg->grad, &plan);
    put_kv_str(&e, "val_fmt", format_names[fmt]);
    put_values(&e, &msg->grad, fmt);
    return encoder_finish(&e, "update", err);
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
    if ((st = check_vector(v, !full, VALUE_FORMAT_F32, err)) != ESGD_OK)
        return st;

    index_plan plan = {INDEX_ALL, 0, 0};
    if (!full)
        plan = plan_indices(v);
    encoder e;
    encoder_start(&e, out, 15 + (full ? 0 : index_keys(&plan)));
    put_common(&e, "model", msg->job, msg->run);
    put_u32_fixed(&e, "gen", msg->generation);
    put_uint(&e, "round", msg->round);
    put_uint(&e, "base_round", msg->base_round);
    put_f32(&e, "lr", msg->lr);
    put_str(&e, "prev_loss");
    if (isfinite(msg->prev_loss))
        e.full |= msgpack_pack_float(&e.pk, msg->prev_loss) != 0;
    else
        e.full |= msgpack_pack_nil(&e.pk) != 0;
    put_str(&e, "loss_fell");
    if (msg->loss_fell < 0)
        e.full |= msgpack_pack_nil(&e.pk) != 0;
    else
        e.full |= (msg->loss_fell ? msgpack_pack_true(&e.pk) : msgpack_pack_false(&e.pk)) != 0;
    put_str(&e, "done");
    e.full |= (msg->done ? msgpack_pack_true(&e.pk) : msgpack_pack_false(&e.pk)) != 0;
    put_kv_str(&e, "form", form_names[msg->form]);
    put_uint(&e, "dim", v->dim);
    put_uint(&e, "count", v->count);
    if (!full)
        put_indices(&e, v, &plan);
    put_values(&e, v, VALUE_FORMAT_F32);
    return encoder_finish(&e, "model", err);
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
    encoder e;
    encoder_start(&e, out, n + 4);
    put_uint(&e, "v", CODEC_VERSION);
    put_kv_str(&e, "type", "config");
    put_uint(&e, "run", cfg->run);
    for (size_t i = 0; i < n; i++) {
        const job_option *opt = job_option_at(i);
        put_str(&e, opt->name);
        switch (opt->type) {
        case JOB_OPTION_UINT:
            e.full |= msgpack_pack_uint64(&e.pk, job_config_get_uint(cfg, opt)) != 0;
            break;
        case JOB_OPTION_FLOAT:
            e.full |= msgpack_pack_double(&e.pk, job_config_get_float(cfg, opt)) != 0;
            break;
        case JOB_OPTION_STRING:
            put_str(&e, job_config_get_string(cfg, opt));
            break;
        }
    }
    put_uint(&e, "dim", job_dimension(cfg));
    return encoder_finish(&e, "config", err);
}

esgd_status codec_encode_status(esgd_buffer *out, const status_msg *msg, esgd_error *err)
{
    out->size = 0;
    esgd_status st = check_job_name(msg->job, err);
    if (st != ESGD_OK)
        return st;
    if ((unsigned)msg->state > AGENT_STATE_DONE)
        return esgd_error_set(err, ESGD_ERR_RANGE, "unknown agent state %d", (int)msg->state);
    if (msg->has_data && msg->shard >= msg->shards)
        return esgd_error_set(err, ESGD_ERR_RANGE, "shard %u of %u", msg->shard, msg->shards);
    encoder e;
    encoder_start(&e, out, msg->has_data ? 11 : 8);
    put_common(&e, "status", msg->job, msg->run);
    put_uint(&e, "agent", msg->agent);
    put_kv_str(&e, "state", state_names[msg->state]);
    put_uint(&e, "round", msg->round);
    put_uint(&e, "gen", msg->generation);
    if (msg->has_data) {
        put_uint(&e, "shard", msg->shard);
        put_uint(&e, "shards", msg->shards);
        put_uint(&e, "data_fp", msg->data_fp);
    }
    return encoder_finish(&e, "status", err);
}

esgd_status codec_encode_lease(esgd_buffer *out, const lease_msg *msg, esgd_error *err)
{
    out->size = 0;
    esgd_status st = check_job_name(msg->job, err);
    if (st != ESGD_OK)
        return st;
    if (strlen(msg->holder) > LEASE_HOLDER_MAX)
        return esgd_error_set(err, ESGD_ERR_RANGE, "lease holder longer than %d bytes", LEASE_HOLDER_MAX);
    encoder e;
    encoder_start(&e, out, 7);
    put_common(&e, "lease", msg->job, msg->run);
    put_uint(&e, "gen", msg->generation);
    put_kv_str(&e, "state", msg->live ? "live" : "released");
    put_kv_str(&e, "holder", msg->holder);
    return encoder_finish(&e, "lease", err);
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

/* --------------------------------------------------------------- decoding */

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

static uint64_t read_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Walks the msgpack bytes without building anything: checks that exactly
 * one complete object fills the input, that nesting stays shallow, and that
 * no container declares more elements than bytes remain. msgpack_unpack
 * allocates a container's element array from its header alone, so without
 * this a 5-byte map32 header would make it ask for tens of gigabytes. */
static esgd_status scan_msgpack(const uint8_t *p, size_t size, esgd_error *err)
{
    if (size == 0)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "empty message");
    size_t pos = 0;
    uint64_t pending = 1; /* objects still to read; each needs >= 1 byte */
    uint64_t remaining[SCAN_MAX_DEPTH + 1] = {1}; /* objects left in each open container */
    int depth = 0;
    while (pending > 0) {
        if (pos >= size)
            return esgd_error_set(err, ESGD_ERR_TRUNCATED, "message ends after %zu bytes, %llu objects missing",
                                  size, (unsigned long long)pending);
        while (remaining[depth] == 0)
            depth--;
        remaining[depth]--;
        uint8_t b = p[pos++];
        pending--;
        size_t left = size - pos;
        uint64_t skip = 0;      /* payload bytes after the header */
        uint64_t children = 0;  /* elements of a container */
        unsigned lenbytes = 0;  /* big-endian length field that follows */
        unsigned per_item = 0;  /* container: objects per declared element (1 array, 2 map) */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool: the tag is the object */
        } else if (b <= 0x8f) {
            children = 2u * (b & 0x0fu);
        } else if (b <= 0x9f) {
            children = b & 0x0fu;
        } else if (b <= 0xbf) {
            skip = b & 0x1fu;
        } else {
            switch (b) {
            case 0xc4: case 0xd9: lenbytes = 1; break;                /* bin8, str8 */
            case 0xc5: case 0xda: lenbytes = 2; break;                /* bin16, str16 */
            case 0xc6: case 0xdb: lenbytes = 4; break;                /* bin32, str32 */
            case 0xc7: lenbytes = 1; skip = 1; break;                 /* ext8 + type */
            case 0xc8: lenbytes = 2; skip = 1; break;
            case 0xc9: lenbytes = 4; skip = 1; break;
            case 0xca: skip = 4; break;                               /* float32 */
            case 0xcb: skip = 8; break;                               /* float64 */
            case 0xcc: case 0xd0: skip = 1; break;                    /* (u)int8 */
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;                               /* fixext 1 */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: lenbytes = 2; per_item = 1; break;             /* array16 */
            case 0xdd: lenbytes = 4; per_item = 1; break;             /* array32 */
            case 0xde: lenbytes = 2; per_item = 2; break;             /* map16 */
            case 0xdf: lenbytes = 4; per_item = 2; break;             /* map32 */
            default:
                return esgd_error_set(err, ESGD_ERR_FORMAT, "byte 0x%02x at offset %zu is not msgpack", b, pos - 1);
            }
        }
        if (lenbytes) {
            if (lenbytes > left)
                return esgd_error_set(err, ESGD_ERR_TRUNCATED, "message ends inside a length at offset %zu", pos);
            uint64_t len = read_be(p + pos, lenbytes);
            pos += lenbytes;
            left -= lenbytes;
            if (per_item)
                children = len * per_item;
            else
                skip += len;
        }
        if (skip > left)
            return esgd_error_set(err, ESGD_ERR_TRUNCATED, "message ends %llu bytes early",
                                  (unsigned long long)(skip - left));
        pos += (size_t)skip;
        left -= (size_t)skip;
        pending += children;
        if (pending > left)
            return esgd_error_set(err, ESGD_ERR_TRUNCATED, "container needs %llu more objects, %zu bytes remain",
                                  (unsigned long long)pending, left);
        if (children > 0) {
            if (depth == SCAN_MAX_DEPTH)
                return esgd_error_set(err, ESGD_ERR_FORMAT, "containers nested deeper than %d", SCAN_MAX_DEPTH);
            remaining[++depth] = children;
        }
    }
    if (pos != size)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "%zu trailing bytes after the message", size - pos);
    return ESGD_OK;
}

static esgd_status parse(codec_decoder *dec, const uint8_t *data, size_t size, msgpack_object *root,
                         esgd_error *err)
{
    if (!data && size > 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "no data");
    esgd_status st = scan_msgpack(data, size, err);
    if (st != ESGD_OK)
        return st;
    msgpack_zone_clear(&dec->zone);
    size_t off = 0;
    switch (msgpack_unpack((const char *)data, size, &off, &dec->zone, root)) {
    case MSGPACK_UNPACK_SUCCESS:
        return ESGD_OK;
    case MSGPACK_UNPACK_EXTRA_BYTES:
        return esgd_error_set(err, ESGD_ERR_FORMAT, "trailing bytes after the message");
    case MSGPACK_UNPACK_CONTINUE:
        return esgd_error_set(err, ESGD_ERR_TRUNCATED, "message is truncated");
    case MSGPACK_UNPACK_NOMEM_ERROR:
        return esgd_error_set(err, ESGD_ERR_NOMEM, "decoding message");
    default:
        return esgd_error_set(err, ESGD_ERR_FORMAT, "message is not valid msgpack (or nested too deeply)");
    }
}

static bool key_is(const msgpack_object *key, const char *name)
{
    size_t len = strlen(name);
    return key->via.str.size == len && memcmp(key->via.str.ptr, name, len) == 0;
}

static const msgpack_object *find(const msgpack_object *map, const char *name)
{
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (key_is(&map->via.map.ptr[i].key, name))
            return &map->via.map.ptr[i].val;
    return NULL;
}

static bool str_equals(const msgpack_object *o, const char *s)
{
    return o->type == MSGPACK_OBJECT_STR && key_is(o, s);
}

/* Up to 40 bytes of a received string for an error message, with anything
 * unprintable replaced so hostile bytes cannot forge log lines. */
typedef struct quoted {
    char text[41];
} quoted;

static quoted quote(const msgpack_object *str)
{
    quoted q;
    size_t n = str->via.str.size < 40 ? str->via.str.size : 40;
    for (size_t i = 0; i < n; i++) {
        char c = str->via.str.ptr[i];
        q.text[i] = c >= 0x20 && c < 0x7f ? c : '?';
    }
    q.text[n] = '\0';
    return q;
}

/* Map shape, string keys without duplicates, version and type: checked in
 * this order, before unknown keys, so a newer or different message is
 * reported as such rather than as malformed. */
static esgd_status check_header(const msgpack_object *root, const char *type, esgd_error *err)
{
    if (root->type != MSGPACK_OBJECT_MAP)
        return esgd_error_set(err, ESGD_ERR_TYPE, "message is not a msgpack map");
    uint32_t n = root->via.map.size;
    if (n > CODEC_MAX_KEYS)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "map has %u keys, at most %d allowed", n, CODEC_MAX_KEYS);
    const msgpack_object_kv *kv = root->via.map.ptr;
    for (uint32_t i = 0; i < n; i++) {
        if (kv[i].key.type != MSGPACK_OBJECT_STR)
            return esgd_error_set(err, ESGD_ERR_FORMAT, "map key %u is not a string", i);
        for (uint32_t j = 0; j < i; j++)
            /* msgpack-c gives an empty str a NULL ptr, which memcmp must not get. */
            if (kv[j].key.via.str.size == kv[i].key.via.str.size &&
                (kv[i].key.via.str.size == 0 ||
                 memcmp(kv[j].key.via.str.ptr, kv[i].key.via.str.ptr, kv[i].key.via.str.size) == 0))
                return esgd_error_set(err, ESGD_ERR_FORMAT, "duplicate key '%s'", quote(&kv[i].key).text);
    }
    const msgpack_object *v = find(root, "v");
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
    const msgpack_object *t = find(root, "type");
    if (!t)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field type");
    if (t->type != MSGPACK_OBJECT_STR)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field type is not a string");
    if (!key_is(t, type))
        return esgd_error_set(err, ESGD_ERR_MISMATCH, "message type '%s', expected '%s'", quote(t).text, type);
    return ESGD_OK;
}

/* Every key must be one of names (NULL-terminated). */
static esgd_status check_keys(const msgpack_object *root, const char *const *names, esgd_error *err)
{
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *key = &root->via.map.ptr[i].key;
        bool known = false;
        for (const char *const *n = names; *n && !known; n++)
            known = key_is(key, *n);
        if (!known)
            return esgd_error_set(err, ESGD_ERR_FORMAT, "unknown key '%s'", quote(key).text);
    }
    return ESGD_OK;
}

static esgd_status get_uint(const msgpack_object *map, const char *key, uint64_t max, uint64_t *out,
                            esgd_error *err)
{
    const msgpack_object *o = find(map, key);
    if (!o)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field %s", key);
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return esgd_error_set(err, ESGD_ERR_RANGE, "field %s = %lld is negative", key, (long long)o->via.i64);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field %s is not an unsigned integer", key);
    if (o->via.u64 > max)
        return esgd_error_set(err, ESGD_ERR_RANGE, "field %s = %llu > %llu", key, (unsigned long long)o->via.u64,
                              (unsigned long long)max);
    *out = o->via.u64;
    return ESGD_OK;
}

static esgd_status get_u32(const msgpack_object *map, const char *key, uint32_t *out, esgd_error *err)
{
    uint64_t v = 0;
    esgd_status st = get_uint(map, key, UINT32_MAX, &v, err);
    *out = (uint32_t)v;
    return st;
}

/* A finite, non-negative float32 or float64 (stored as float). With
 * nil_ok, nil is accepted and gives NaN. */
static esgd_status get_float(const msgpack_object *map, const char *key, bool nil_ok, float *out, esgd_error *err)
{
    const msgpack_object *o = find(map, key);
    if (!o)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field %s", key);
    if (nil_ok && o->type == MSGPACK_OBJECT_NIL) {
        *out = NAN;
        return ESGD_OK;
    }
    if (o->type != MSGPACK_OBJECT_FLOAT32 && o->type != MSGPACK_OBJECT_FLOAT64)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field %s is not a float", key);
    float v = (float)o->via.f64;
    if (!isfinite(v))
        return esgd_error_set(err, ESGD_ERR_NONFINITE, "field %s is not finite (as float32)", key);
    if (v < 0)
        return esgd_error_set(err, ESGD_ERR_RANGE, "field %s = %g < 0", key, (double)v);
    *out = v;
    return ESGD_OK;
}

/* A bool, or with nil_ok nil (-1). */
static esgd_status get_bool(const msgpack_object *map, const char *key, bool nil_ok, int *out, esgd_error *err)
{
    const msgpack_object *o = find(map, key);
    if (!o)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field %s", key);
    if (nil_ok && o->type == MSGPACK_OBJECT_NIL) {
        *out = -1;
        return ESGD_OK;
    }
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field %s is not a bool", key);
    *out = o->via.boolean ? 1 : 0;
    return ESGD_OK;
}

/* A str that must be one of names[0..count). */
static esgd_status get_enum(const msgpack_object *map, const char *key, const char *const *names, int count, int *out,
                            esgd_error *err)
{
    const msgpack_object *o = find(map, key);
    if (!o)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field %s", key);
    if (o->type != MSGPACK_OBJECT_STR)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field %s is not a string", key);
    for (int i = 0; i < count; i++) {
        if (str_equals(o, names[i])) {
            *out = i;
            return ESGD_OK;
        }
    }
    return esgd_error_set(err, ESGD_ERR_RANGE, "field %s = '%s' is not an allowed value", key, quote(o).text);
}

static esgd_status get_bin(const msgpack_object *map, const char *key, const uint8_t **data, size_t *size,
                           esgd_error *err)
{
    const msgpack_object *o = find(map, key);
    if (!o)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field %s", key);
    if (o->type != MSGPACK_OBJECT_BIN)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field %s is not a bin", key);
    *data = (const uint8_t *)o->via.bin.ptr;
    *size = o->via.bin.size;
    return ESGD_OK;
}

static esgd_status get_job(const msgpack_object *map, char job[JOB_NAME_MAX + 1], esgd_error *err)
{
    const msgpack_object *o = find(map, "job");
    if (!o)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field job");
    if (o->type != MSGPACK_OBJECT_STR)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field job is not a string");
    if (!valid_job_name(o->via.str.ptr, o->via.str.size))
        return esgd_error_set(err, ESGD_ERR_RANGE, "job name must be 1..%d of [A-Za-z0-9_.-]", JOB_NAME_MAX);
    memcpy(job, o->via.str.ptr, o->via.str.size);
    job[o->via.str.size] = '\0';
    return ESGD_OK;
}

/* dim and count against the expected dimension and the caller's capacity. */
static esgd_status get_dims(const msgpack_object *map, uint32_t expected_dim, uint32_t capacity, uint32_t *dim,
                            uint32_t *count, esgd_error *err)
{
    esgd_status st = get_u32(map, "dim", dim, err);
    if (st == ESGD_OK)
        st = get_u32(map, "count", count, err);
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

/* idx_enc, idx and rice_b into indices[0..count). */
static esgd_status get_indices(const msgpack_object *map, uint32_t dim, uint32_t count, uint32_t *indices,
                               esgd_error *err)
{
    int coding;
    esgd_status st = get_enum(map, "idx_enc", index_coding_names, 3, &coding, err);
    if (st != ESGD_OK)
        return st;
    if (coding != INDEX_RICE && find(map, "rice_b"))
        return esgd_error_set(err, ESGD_ERR_FORMAT, "rice_b present with idx_enc %s", index_coding_names[coding]);
    if (coding == INDEX_ALL) {
        if (find(map, "idx"))
            return esgd_error_set(err, ESGD_ERR_FORMAT, "idx present with idx_enc all");
        if (count != dim)
            return esgd_error_set(err, ESGD_ERR_FORMAT, "idx_enc all with count %u != dim %u", count, dim);
        for (uint32_t i = 0; i < count; i++)
            indices[i] = i;
        return ESGD_OK;
    }
    const uint8_t *idx = NULL;
    size_t size = 0;
    if ((st = get_bin(map, "idx", &idx, &size, err)) != ESGD_OK)
        return st;
    if (coding == INDEX_BITMAP)
        return bitmap_read(idx, size, dim, count, indices, err);
    uint64_t b;
    if ((st = get_uint(map, "rice_b", 31, &b, err)) != ESGD_OK)
        return st;
    return rice_read(idx, size, (unsigned)b, dim, count, indices, err);
}

static esgd_status get_values(const msgpack_object *map, uint32_t count, value_format fmt, float *values,
                              esgd_error *err)
{
    const uint8_t *val = NULL;
    size_t size = 0;
    esgd_status st = get_bin(map, "val", &val, &size, err);
    if (st != ESGD_OK)
        return st;
    size_t width = fmt == VALUE_FORMAT_F16 ? 2 : 4;
    if (size != width * count)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "val has %zu bytes, count %u of %s needs %zu", size, count,
                              format_names[fmt], width * count);
    return values_read(val, count, fmt, values, err);
}

static esgd_status decode_update(const msgpack_object *root, uint32_t expected_dim, update_msg *out,
                                 esgd_error *err)
{
    static const char *const keys[] = {"v",     "type",    "job", "run",    "round",   "agent", "samples", "loss",
                                       "dim",   "count",   "idx", "rice_b", "val_fmt", "val",   "idx_enc", NULL};
    esgd_status st = check_header(root, "update", err);
    if (st == ESGD_OK)
        st = check_keys(root, keys, err);
    if (st != ESGD_OK)
        return st;
    update_msg m = {0};
    int fmt = 0;
    uint32_t dim, count;
    if ((st = get_job(root, m.job, err)) != ESGD_OK || (st = get_uint(root, "run", UINT64_MAX, &m.run, err)) != ESGD_OK ||
        (st = get_u32(root, "round", &m.round, err)) != ESGD_OK ||
        (st = get_u32(root, "agent", &m.agent, err)) != ESGD_OK ||
        (st = get_u32(root, "samples", &m.samples, err)) != ESGD_OK ||
        (st = get_float(root, "loss", false, &m.loss, err)) != ESGD_OK ||
        (st = get_enum(root, "val_fmt", format_names, 2, &fmt, err)) != ESGD_OK ||
        (st = get_dims(root, expected_dim, out->grad.capacity, &dim, &count, err)) != ESGD_OK)
        return st;
    if (m.samples == 0)
        return esgd_error_set(err, ESGD_ERR_RANGE, "samples must be > 0");
    if (count > 0 && (!out->grad.indices || !out->grad.values))
        return esgd_error_set(err, ESGD_ERR_ARG, "no storage for the decoded update");
    if ((st = get_indices(root, dim, count, out->grad.indices, err)) != ESGD_OK ||
        (st = get_values(root, count, (value_format)fmt, out->grad.values, err)) != ESGD_OK)
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
    esgd_status st = parse(dec, data, size, &root, err);
    if (st == ESGD_OK)
        st = decode_update(&root, expected_dim, out, err);
    if (st != ESGD_OK)
        out->grad.count = 0;
    return st;
}

static esgd_status decode_model(const msgpack_object *root, uint32_t expected_dim, model_msg *out, esgd_error *err)
{
    static const char *const keys[] = {"v",    "type", "job", "run",   "gen", "round",   "base_round", "lr",     "prev_loss",
                                       "loss_fell", "done", "form", "dim", "count", "idx_enc", "idx", "rice_b", "val",
                                       NULL};
    esgd_status st = check_header(root, "model", err);
    if (st == ESGD_OK)
        st = check_keys(root, keys, err);
    if (st != ESGD_OK)
        return st;
    model_msg m = {0};
    int form = 0, loss_fell = 0, done = 0;
    uint32_t dim, count;
    if ((st = get_job(root, m.job, err)) != ESGD_OK || (st = get_uint(root, "run", UINT64_MAX, &m.run, err)) != ESGD_OK ||
        (st = get_u32(root, "gen", &m.generation, err)) != ESGD_OK ||
        (st = get_u32(root, "round", &m.round, err)) != ESGD_OK ||
        (st = get_u32(root, "base_round", &m.base_round, err)) != ESGD_OK ||
        (st = get_float(root, "lr", false, &m.lr, err)) != ESGD_OK ||
        (st = get_float(root, "prev_loss", true, &m.prev_loss, err)) != ESGD_OK ||
        (st = get_bool(root, "loss_fell", true, &loss_fell, err)) != ESGD_OK ||
        (st = get_bool(root, "done", false, &done, err)) != ESGD_OK ||
        (st = get_enum(root, "form", form_names, 2, &form, err)) != ESGD_OK ||
        (st = get_dims(root, expected_dim, out->params.capacity, &dim, &count, err)) != ESGD_OK)
        return st;
    if (form == MODEL_FORM_FULL) {
        if (m.base_round != m.round)
            return esgd_error_set(err, ESGD_ERR_RANGE, "full model base_round %u != round %u", m.base_round,
                                  m.round);
        if (count != dim)
            return esgd_error_set(err, ESGD_ERR_RANGE, "full model count %u != dim %u", count, dim);
        if (find(root, "idx_enc") || find(root, "idx") || find(root, "rice_b"))
            return esgd_error_set(err, ESGD_ERR_FORMAT, "full model carries index fields");
    } else if (m.round == 0 || m.base_round != m.round - 1) {
        return esgd_error_set(err, ESGD_ERR_RANGE, "model delta round %u on base_round %u", m.round, m.base_round);
    }
    if (count > 0 && (!out->params.values || (form == MODEL_FORM_DELTA && !out->params.indices)))
        return esgd_error_set(err, ESGD_ERR_ARG, "no storage for the decoded model");
    if (form == MODEL_FORM_DELTA && (st = get_indices(root, dim, count, out->params.indices, err)) != ESGD_OK)
        return st;
    if ((st = get_values(root, count, VALUE_FORMAT_F32, out->params.values, err)) != ESGD_OK)
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
    esgd_status st = parse(dec, data, size, &root, err);
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
        if (key_is(key, "v") || key_is(key, "type") || key_is(key, "run") || key_is(key, "dim"))
            continue;
        char name[64];
        bool known = false;
        if (key->via.str.size > 0 && key->via.str.size < sizeof name) { /* "" may have a NULL ptr */
            memcpy(name, key->via.str.ptr, key->via.str.size);
            name[key->via.str.size] = '\0';
            known = strlen(name) == key->via.str.size && job_option_find(name) != NULL;
        }
        if (!known)
            return esgd_error_set(err, ESGD_ERR_FORMAT, "unknown key '%s'", quote(key).text);
    }
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    for (size_t i = 0; i < job_option_count(); i++) {
        const job_option *opt = job_option_at(i);
        const msgpack_object *o = find(root, opt->name);
        if (!o)
            return esgd_error_set(err, ESGD_ERR_MISSING, "missing field %s", opt->name);
        if ((st = set_option(&cfg, opt, o, err)) != ESGD_OK)
            return st;
    }
    uint32_t dim;
    if ((st = get_u32(root, "dim", &dim, err)) != ESGD_OK || (st = get_uint(root, "run", UINT64_MAX, &cfg.run, err)) != ESGD_OK)
        return st;
    if ((st = job_config_validate(&cfg, err)) != ESGD_OK) {
        esgd_error_prefix(err, "config message");
        return st;
    }
    if (dim != job_dimension(&cfg))
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "config dim %u, model %s has %u", dim,
                              model_kind_name(cfg.model), job_dimension(&cfg));
    *out = cfg;
    return ESGD_OK;
}

esgd_status codec_decode_config(codec_decoder *dec, const uint8_t *data, size_t size, esgd_job_config *out,
                                esgd_error *err)
{
    msgpack_object root;
    esgd_status st = parse(dec, data, size, &root, err);
    return st == ESGD_OK ? decode_config(&root, out, err) : st;
}

static esgd_status decode_status(const msgpack_object *root, status_msg *out, esgd_error *err)
{
    static const char *const keys[] = {"v",   "type",  "job",    "run",     "agent", "state",
                                       "round", "gen", "shard", "shards", "data_fp", NULL};
    esgd_status st = check_header(root, "status", err);
    if (st == ESGD_OK)
        st = check_keys(root, keys, err);
    if (st != ESGD_OK)
        return st;
    status_msg m = {0};
    int state;
    if ((st = get_job(root, m.job, err)) != ESGD_OK || (st = get_uint(root, "run", UINT64_MAX, &m.run, err)) != ESGD_OK ||
        (st = get_u32(root, "agent", &m.agent, err)) != ESGD_OK ||
        (st = get_enum(root, "state", state_names, 3, &state, err)) != ESGD_OK ||
        (st = get_u32(root, "round", &m.round, err)) != ESGD_OK ||
        (st = get_u32(root, "gen", &m.generation, err)) != ESGD_OK)
        return st;
    /* What it trains on: all three fields or none. */
    m.has_data = find(root, "shard") || find(root, "shards") || find(root, "data_fp");
    if (m.has_data) {
        if ((st = get_u32(root, "shard", &m.shard, err)) != ESGD_OK ||
            (st = get_u32(root, "shards", &m.shards, err)) != ESGD_OK ||
            (st = get_uint(root, "data_fp", UINT64_MAX, &m.data_fp, err)) != ESGD_OK)
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
    esgd_status st = parse(dec, data, size, &root, err);
    return st == ESGD_OK ? decode_status(&root, out, err) : st;
}

static esgd_status decode_lease(const msgpack_object *root, lease_msg *out, esgd_error *err)
{
    static const char *const keys[] = {"v", "type", "job", "run", "gen", "state", "holder", NULL};
    static const char *const lease_states[] = {"released", "live"};
    esgd_status st = check_header(root, "lease", err);
    if (st == ESGD_OK)
        st = check_keys(root, keys, err);
    if (st != ESGD_OK)
        return st;
    lease_msg m = {0};
    int live = 0;
    if ((st = get_job(root, m.job, err)) != ESGD_OK || (st = get_uint(root, "run", UINT64_MAX, &m.run, err)) != ESGD_OK ||
        (st = get_u32(root, "gen", &m.generation, err)) != ESGD_OK ||
        (st = get_enum(root, "state", lease_states, 2, &live, err)) != ESGD_OK)
        return st;
    const msgpack_object *h = find(root, "holder");
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
    esgd_status st = parse(dec, data, size, &root, err);
    return st == ESGD_OK ? decode_lease(&root, out, err) : st;
}
