/* The wire codec: round trips of all four messages, the index coding the
 * encoder picks against independently built alternatives, the Rice size
 * bound, binary16 conversion, a table of malformed inputs with the status
 * each must produce, truncation at every byte and a mutation fuzz loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "test_skip.h"
#include <math.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "esgd/codec.h"
#include "esgd/rng.h"

#include "../core/src/half.h" /* the hardware and portable array conversions */

/* ------------------------------------------------------------- helpers */

typedef struct vec_storage {
    uint32_t *indices;
    float *values;
    sparse_vector v;
} vec_storage;

static vec_storage vec_alloc(uint32_t dim, uint32_t capacity)
{
    vec_storage s;
    s.indices = calloc(capacity ? capacity : 1, sizeof(uint32_t));
    s.values = calloc(capacity ? capacity : 1, sizeof(float));
    assert_non_null(s.indices);
    assert_non_null(s.values);
    s.v = (sparse_vector){.dim = dim, .count = 0, .capacity = capacity, .indices = s.indices, .values = s.values};
    return s;
}

static void vec_free(vec_storage *s)
{
    free(s->indices);
    free(s->values);
}

/* k of d indices, uniformly at random, sorted (selection sampling). */
static void random_vector(vec_storage *s, uint32_t dim, uint32_t k, uint64_t seed)
{
    esgd_rng rng;
    rng_seed(&rng, seed, 7);
    uint32_t chosen = 0;
    for (uint32_t j = 0; j < dim && chosen < k; j++)
        if (rng_uniform(&rng) * (dim - j) < (k - chosen))
            s->indices[chosen++] = j;
    assert_int_equal(chosen, k);
    for (uint32_t i = 0; i < k; i++)
        s->values[i] = (float)rng_normal(&rng) * 0.01f;
    s->v.dim = dim;
    s->v.count = k;
}

/* The value of key in a message, found with msgpack directly. */
typedef struct inspected {
    msgpack_zone zone;
    msgpack_object root;
} inspected;

static const msgpack_object *inspect(inspected *in, const esgd_buffer *buf, const char *key)
{
    msgpack_zone_init(&in->zone, 4096);
    size_t off = 0;
    assert_int_equal(msgpack_unpack((const char *)buf->data, buf->size, &off, &in->zone, &in->root),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(in->root.type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < in->root.via.map.size; i++) {
        const msgpack_object_kv *kv = &in->root.via.map.ptr[i];
        if (kv->key.via.str.size == strlen(key) && memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0)
            return &kv->val;
    }
    return NULL;
}

/* The idx_enc of an encoded message, as "all", "bitmap" or "rice". */
static const char *idx_enc_of(const esgd_buffer *buf, size_t *idx_bytes)
{
    static char name[16];
    inspected in;
    const msgpack_object *o = inspect(&in, buf, "idx_enc");
    assert_non_null(o);
    assert_true(o->via.str.size < sizeof name);
    memcpy(name, o->via.str.ptr, o->via.str.size);
    name[o->via.str.size] = '\0';
    const msgpack_object *idx = NULL;
    for (uint32_t i = 0; i < in.root.via.map.size; i++) {
        const msgpack_object *key = &in.root.via.map.ptr[i].key;
        if (key->via.str.size == 3 && memcmp(key->via.str.ptr, "idx", 3) == 0)
            idx = &in.root.via.map.ptr[i].val;
    }
    if (idx_bytes)
        *idx_bytes = idx ? idx->via.bin.size : 0;
    msgpack_zone_destroy(&in.zone);
    return name;
}

/* ------------------------------------------- a message builder for tests
 * Independent of the codec: a list of keys and values packed with msgpack,
 * so tests can build alternatives and break one field at a time. */

typedef enum ftype { F_UINT, F_NEG, F_F32, F_F64, F_STR, F_BIN, F_NIL, F_BOOL, F_ARRAY } ftype;

typedef struct field {
    const char *key;
    ftype type;
    uint64_t u;
    double f;
    const char *s;
    const uint8_t *bin;
    size_t len;
} field;

typedef struct spec {
    field f[80];
    int n;
} spec;

static field fu(uint64_t u) { return (field){.type = F_UINT, .u = u}; }
static field ff32(double f) { return (field){.type = F_F32, .f = f}; }
static field ff64(double f) { return (field){.type = F_F64, .f = f}; }
static field fstr(const char *s) { return (field){.type = F_STR, .s = s}; }
static field fbin(const uint8_t *b, size_t len) { return (field){.type = F_BIN, .bin = b, .len = len}; }
static field fnil(void) { return (field){.type = F_NIL}; }
static field fbool(bool b) { return (field){.type = F_BOOL, .u = b}; }

static void spec_set(spec *s, const char *key, field value)
{
    value.key = key;
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->f[i].key, key) == 0) {
            s->f[i] = value;
            return;
        }
    }
    assert_true(s->n < 80);
    s->f[s->n++] = value;
}

static void spec_remove(spec *s, const char *key)
{
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->f[i].key, key) == 0) {
            s->f[i] = s->f[--s->n];
            return;
        }
    }
    fail_msg("no key %s to remove", key);
}

static void spec_duplicate(spec *s, const char *key)
{
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->f[i].key, key) == 0) {
            s->f[s->n++] = s->f[i];
            return;
        }
    }
    fail_msg("no key %s to duplicate", key);
}

/* Packs into buf (replacing its contents). */
static void spec_pack(const spec *s, esgd_buffer *buf)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)s->n);
    for (int i = 0; i < s->n; i++) {
        const field *f = &s->f[i];
        msgpack_pack_str_with_body(&pk, f->key, strlen(f->key));
        switch (f->type) {
        case F_UINT: msgpack_pack_uint64(&pk, f->u); break;
        case F_NEG: msgpack_pack_int64(&pk, (int64_t)f->u); break;
        case F_F32: msgpack_pack_float(&pk, (float)f->f); break;
        case F_F64: msgpack_pack_double(&pk, f->f); break;
        case F_STR: msgpack_pack_str_with_body(&pk, f->s, strlen(f->s)); break;
        case F_BIN: msgpack_pack_bin_with_body(&pk, f->bin, f->len); break;
        case F_NIL: msgpack_pack_nil(&pk); break;
        case F_BOOL: f->u ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk); break;
        case F_ARRAY: msgpack_pack_array(&pk, 1); msgpack_pack_uint8(&pk, 1); break;
        }
    }
    assert_true(sb.size <= buf->capacity);
    memcpy(buf->data, sb.data, sb.size);
    buf->size = sb.size;
    msgpack_sbuffer_destroy(&sb);
}

/* The Rice code of sorted indices, written bit by bit (a second,
 * deliberately naive implementation of the rule in messages.md). */
static size_t naive_rice(const uint32_t *idx, uint32_t count, unsigned b, uint8_t *out, size_t cap)
{
    size_t bit = 0;
    memset(out, 0, cap);
#define PUT(x)                                                                                                    \
    do {                                                                                                          \
        assert_true(bit / 8 < cap);                                                                               \
        if (x)                                                                                                    \
            out[bit / 8] |= (uint8_t)(0x80u >> (bit % 8));                                                        \
        bit++;                                                                                                    \
    } while (0)
    uint32_t next = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t gap = idx[i] - next;
        for (uint32_t q = gap >> b; q > 0; q--)
            PUT(1);
        PUT(0);
        for (int j = (int)b - 1; j >= 0; j--)
            PUT((gap >> j) & 1);
        next = idx[i] + 1;
    }
#undef PUT
    return (bit + 7) / 8;
}

static size_t naive_bitmap(const uint32_t *idx, uint32_t count, uint32_t dim, uint8_t *out)
{
    size_t bytes = (dim + 7) / 8;
    memset(out, 0, bytes);
    for (uint32_t i = 0; i < count; i++)
        out[idx[i] / 8] |= (uint8_t)(1u << (idx[i] % 8));
    return bytes;
}

static void f32_le(const float *v, uint32_t count, uint8_t *out)
{
    for (uint32_t i = 0; i < count; i++) {
        uint32_t x;
        memcpy(&x, &v[i], 4);
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(x >> (8 * j));
    }
}

/* The run id of the hand-built messages: top bit set, as the coordinator's. */
#define BASE_RUN 0x8badf00ddeadbeefull

/* A valid update: dim 20, indices {2, 5, 11} Rice-coded with b = 1. */
static const uint32_t base_idx[] = {2, 5, 11};
static const float base_val[] = {0.5f, -1.25f, 3.0f};
static uint8_t base_rice[8], base_val_bytes[12];

static spec base_update(void)
{
    size_t n = naive_rice(base_idx, 3, 1, base_rice, sizeof base_rice);
    f32_le(base_val, 3, base_val_bytes);
    spec s = {.n = 0};
    spec_set(&s, "v", fu(CODEC_VERSION));
    spec_set(&s, "type", fstr("update"));
    spec_set(&s, "job", fstr("unit"));
    spec_set(&s, "run", fu(BASE_RUN));
    spec_set(&s, "round", fu(3));
    spec_set(&s, "agent", fu(1));
    spec_set(&s, "samples", fu(8));
    spec_set(&s, "loss", ff32(0.5));
    spec_set(&s, "dim", fu(20));
    spec_set(&s, "count", fu(3));
    spec_set(&s, "idx_enc", fstr("rice"));
    spec_set(&s, "idx", fbin(base_rice, n));
    spec_set(&s, "rice_b", fu(1));
    spec_set(&s, "val_fmt", fstr("f32"));
    spec_set(&s, "val", fbin(base_val_bytes, 12));
    return s;
}

static spec base_model(void)
{
    spec s = base_update();
    spec_set(&s, "type", fstr("model"));
    spec_remove(&s, "agent");
    spec_remove(&s, "samples");
    spec_remove(&s, "loss");
    spec_remove(&s, "val_fmt");
    spec_set(&s, "gen", fu(7));
    spec_set(&s, "base_round", fu(2));
    spec_set(&s, "lr", ff32(0.1));
    spec_set(&s, "prev_loss", fnil());
    spec_set(&s, "loss_fell", fnil());
    spec_set(&s, "done", fbool(false));
    spec_set(&s, "form", fstr("delta"));
    return s;
}

static spec base_status(void)
{
    spec s = {.n = 0};
    spec_set(&s, "v", fu(CODEC_VERSION));
    spec_set(&s, "type", fstr("status"));
    spec_set(&s, "job", fstr("unit"));
    spec_set(&s, "run", fu(BASE_RUN));
    spec_set(&s, "agent", fu(2));
    spec_set(&s, "state", fstr("online"));
    spec_set(&s, "round", fu(9));
    spec_set(&s, "gen", fu(7));
    return s;
}

/* The default config, built from the option table like the codec does. */
static spec base_config(void)
{
    static esgd_job_config cfg;
    job_config_defaults(&cfg);
    spec s = {.n = 0};
    spec_set(&s, "v", fu(CODEC_VERSION));
    spec_set(&s, "type", fstr("config"));
    spec_set(&s, "run", fu(BASE_RUN));
    for (size_t i = 0; i < job_option_count(); i++) {
        const job_option *opt = job_option_at(i);
        if (opt->type == JOB_OPTION_UINT)
            spec_set(&s, opt->name, fu(job_config_get_uint(&cfg, opt)));
        else if (opt->type == JOB_OPTION_FLOAT)
            spec_set(&s, opt->name, ff64(job_config_get_float(&cfg, opt)));
        else
            spec_set(&s, opt->name, fstr(job_config_get_string(&cfg, opt)));
    }
    spec_set(&s, "dim", fu(job_dimension(&cfg)));
    return s;
}

typedef enum msg_kind { MSG_UPDATE, MSG_MODEL, MSG_STATUS, MSG_CONFIG } msg_kind;

/* Decodes with the decoder for kind into fresh storage of capacity 32. */
static esgd_status decode_as(codec_decoder *dec, msg_kind kind, const uint8_t *data, size_t size,
                             uint32_t expected_dim, esgd_error *err)
{
    uint32_t idx[32];
    float val[32];
    switch (kind) {
    case MSG_UPDATE: {
        update_msg u = {.grad = {.capacity = 32, .indices = idx, .values = val}};
        esgd_status st = codec_decode_update(dec, data, size, expected_dim, &u, err);
        if (st == ESGD_OK) {
            for (uint32_t i = 0; i < u.grad.count; i++) {
                assert_true(idx[i] < u.grad.dim && isfinite(val[i]));
                assert_true(i == 0 || idx[i] > idx[i - 1]);
            }
        } else {
            assert_int_equal(u.grad.count, 0);
        }
        return st;
    }
    case MSG_MODEL: {
        model_msg m = {.params = {.capacity = 32, .indices = idx, .values = val}};
        esgd_status st = codec_decode_model(dec, data, size, expected_dim, &m, err);
        if (st == ESGD_OK)
            for (uint32_t i = 0; i < m.params.count; i++)
                assert_true(isfinite(val[i]));
        return st;
    }
    case MSG_STATUS: {
        status_msg s;
        return codec_decode_status(dec, data, size, &s, err);
    }
    case MSG_CONFIG: {
        esgd_job_config cfg;
        return codec_decode_config(dec, data, size, &cfg, err);
    }
    }
    return ESGD_ERR_ARG;
}

/* ------------------------------------------------------------ round trips */

static void check_update_round_trip(codec_decoder *dec, uint32_t dim, uint32_t count, value_format fmt,
                                    const char *expected_coding, uint64_t seed)
{
    vec_storage in = vec_alloc(dim, count), out = vec_alloc(dim, count);
    random_vector(&in, dim, count, seed);
    update_msg u = {.run = 0x8000000000000000ull | seed, .round = 17, .agent = 3, .samples = 32, .loss = 2.25f,
                    .grad = in.v};
    strcpy(u.job, "mnist-1");
    esgd_buffer buf;
    esgd_error err = {0};
    assert_int_equal(buffer_init(&buf, codec_update_bound(dim), &err), ESGD_OK);
    assert_int_equal(codec_encode_update(&buf, &u, fmt, &err), ESGD_OK);
    if (expected_coding)
        assert_string_equal(idx_enc_of(&buf, NULL), expected_coding);

    update_msg got = {.grad = out.v};
    assert_int_equal(codec_decode_update(dec, buf.data, buf.size, dim, &got, &err), ESGD_OK);
    assert_string_equal(got.job, "mnist-1");
    assert_true(got.run == (0x8000000000000000ull | seed));
    assert_int_equal(got.round, 17);
    assert_int_equal(got.agent, 3);
    assert_int_equal(got.samples, 32);
    assert_true(got.loss == 2.25f);
    assert_int_equal(got.grad.dim, dim);
    assert_int_equal(got.grad.count, count);
    for (uint32_t i = 0; i < count; i++) {
        assert_int_equal(out.indices[i], in.indices[i]);
        float want = fmt == VALUE_FORMAT_F16 ? codec_f16_to_f32(codec_f32_to_f16(in.values[i])) : in.values[i];
        assert_true(out.values[i] == want);
    }
    buffer_destroy(&buf);
    vec_free(&in);
    vec_free(&out);
}

static void test_update_round_trips(void **state)
{
    (void)state;
    codec_decoder *dec = codec_decoder_new(NULL);
    assert_non_null(dec);
    for (int f = 0; f < 2; f++) {
        value_format fmt = f ? VALUE_FORMAT_F16 : VALUE_FORMAT_F32;
        check_update_round_trip(dec, 1, 1, fmt, "all", 1);
        check_update_round_trip(dec, 1, 0, fmt, "bitmap", 2);
        check_update_round_trip(dec, 1000, 0, fmt, "rice", 3);
        check_update_round_trip(dec, 1000, 1000, fmt, "all", 4);
        check_update_round_trip(dec, 1000, 999, fmt, "bitmap", 5);
        check_update_round_trip(dec, 1000, 750, fmt, "bitmap", 6);
        check_update_round_trip(dec, 61706, 7714, fmt, "rice", 7);
        check_update_round_trip(dec, 61706, 618, fmt, "rice", 8);
        check_update_round_trip(dec, 101770, 1, fmt, "rice", 9);
        check_update_round_trip(dec, 9, 5, fmt, NULL, 10);
    }
    /* Extreme gaps: the first and the last coordinate of a large d. */
    vec_storage in = vec_alloc(4000000000u, 2), out = vec_alloc(4000000000u, 2);
    in.indices[0] = 0;
    in.indices[1] = 3999999999u;
    in.values[0] = 1;
    in.values[1] = -1;
    in.v.count = 2;
    update_msg u = {.samples = 1, .grad = in.v};
    strcpy(u.job, "x");
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 1024, NULL), ESGD_OK);
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, NULL), ESGD_OK);
    assert_string_equal(idx_enc_of(&buf, NULL), "rice");
    update_msg got = {.grad = out.v};
    assert_int_equal(codec_decode_update(dec, buf.data, buf.size, 4000000000u, &got, NULL), ESGD_OK);
    assert_int_equal(out.indices[1], 3999999999u);
    buffer_destroy(&buf);
    vec_free(&in);
    vec_free(&out);
    codec_decoder_free(dec);
}

static void test_model_round_trips(void **state)
{
    (void)state;
    codec_decoder *dec = codec_decoder_new(NULL);
    const uint32_t d = 5000;
    vec_storage full = vec_alloc(d, d), out = vec_alloc(d, d);
    for (uint32_t i = 0; i < d; i++)
        full.values[i] = (float)i * 0.25f - 100.0f;
    full.v.count = d;
    esgd_buffer buf;
    esgd_error err = {0};
    assert_int_equal(buffer_init(&buf, codec_model_bound(d), &err), ESGD_OK);

    model_msg m = {.run = UINT64_MAX, .round = 4, .base_round = 4, .lr = 0.05f, .prev_loss = NAN, .loss_fell = -1,
                   .done = 0, .form = MODEL_FORM_FULL, .params = full.v};
    m.params.indices = NULL; /* a full model needs no indices */
    strcpy(m.job, "mnist");
    assert_int_equal(codec_encode_model(&buf, &m, &err), ESGD_OK);
    model_msg got = {.params = out.v};
    assert_int_equal(codec_decode_model(dec, buf.data, buf.size, d, &got, &err), ESGD_OK);
    assert_int_equal(got.form, MODEL_FORM_FULL);
    assert_true(got.run == UINT64_MAX);
    assert_int_equal(got.round, 4);
    assert_int_equal(got.base_round, 4);
    assert_true(got.lr == 0.05f);
    assert_true(isnan(got.prev_loss));
    assert_int_equal(got.loss_fell, -1);
    assert_int_equal(got.done, 0);
    assert_int_equal(got.params.count, d);
    assert_memory_equal(out.values, full.values, d * sizeof(float));

    /* Delta with known loss signal, done. */
    vec_storage delta = vec_alloc(d, d);
    random_vector(&delta, d, 300, 11);
    model_msg md = {.run = 0x8000000000000007ull, .round = 9, .base_round = 8, .lr = 0.0f, .prev_loss = 0.75f,
                    .loss_fell = 1, .done = 1, .form = MODEL_FORM_DELTA, .params = delta.v};
    strcpy(md.job, "mnist");
    assert_int_equal(codec_encode_model(&buf, &md, &err), ESGD_OK);
    assert_int_equal(codec_decode_model(dec, buf.data, buf.size, d, &got, &err), ESGD_OK);
    assert_int_equal(got.form, MODEL_FORM_DELTA);
    assert_true(got.run == 0x8000000000000007ull);
    assert_int_equal(got.base_round, 8);
    assert_true(got.prev_loss == 0.75f);
    assert_int_equal(got.loss_fell, 1);
    assert_int_equal(got.done, 1);
    assert_int_equal(got.params.count, 300);
    assert_memory_equal(out.indices, delta.indices, 300 * sizeof(uint32_t));
    assert_memory_equal(out.values, delta.values, 300 * sizeof(float));
    md.loss_fell = 0;
    md.params.count = 0;
    assert_int_equal(codec_encode_model(&buf, &md, &err), ESGD_OK);
    assert_int_equal(codec_decode_model(dec, buf.data, buf.size, 0, &got, &err), ESGD_OK);
    assert_int_equal(got.loss_fell, 0);
    assert_int_equal(got.params.count, 0);

    /* Encoder-side rules. */
    md.params.count = 300;
    md.base_round = 9;
    assert_int_equal(codec_encode_model(&buf, &md, &err), ESGD_ERR_RANGE);
    md.base_round = 8;
    md.loss_fell = 2;
    assert_int_equal(codec_encode_model(&buf, &md, &err), ESGD_ERR_RANGE);
    md.loss_fell = 1;
    md.lr = INFINITY;
    assert_int_equal(codec_encode_model(&buf, &md, &err), ESGD_ERR_NONFINITE);
    m.params.count = d - 1;
    assert_int_equal(codec_encode_model(&buf, &m, &err), ESGD_ERR_RANGE);
    buffer_destroy(&buf);
    vec_free(&full);
    vec_free(&out);
    vec_free(&delta);
    codec_decoder_free(dec);
}

static void test_config_round_trips(void **state)
{
    (void)state;
    codec_decoder *dec = codec_decoder_new(NULL);
    esgd_buffer buf;
    esgd_error err = {0};
    assert_int_equal(buffer_init(&buf, CODEC_CONFIG_BOUND, &err), ESGD_OK);
    esgd_job_config cfg, got;
    job_config_defaults(&cfg);
    assert_int_equal(codec_encode_config(&buf, &cfg, &err), ESGD_OK);
    memset(&got, 0xab, sizeof got);
    assert_int_equal(codec_decode_config(dec, buf.data, buf.size, &got, &err), ESGD_OK);
    /* Every option, through the table, must come back identical. */
    for (size_t i = 0; i < job_option_count(); i++) {
        const job_option *opt = job_option_at(i);
        assert_true(job_config_get_uint(&got, opt) == job_config_get_uint(&cfg, opt));
        assert_true(job_config_get_float(&got, opt) == job_config_get_float(&cfg, opt));
        assert_string_equal(job_config_get_string(&got, opt), job_config_get_string(&cfg, opt));
    }
    assert_true(got.run == 0); /* the defaults have no run yet */
    /* The message has exactly one key per option plus v, type, run and dim. */
    inspected in;
    assert_non_null(inspect(&in, &buf, "dim"));
    assert_int_equal(in.root.via.map.size, job_option_count() + 4);
    msgpack_zone_destroy(&in.zone);
    cfg.run = UINT64_MAX; /* the whole uint64 range travels */
    assert_int_equal(codec_encode_config(&buf, &cfg, &err), ESGD_OK);
    assert_int_equal(codec_decode_config(dec, buf.data, buf.size, &got, &err), ESGD_OK);
    assert_true(got.run == UINT64_MAX);
    cfg.run = 0x8000000000000001ull;

    static const char *const changes[][2] = {
        {"job", "lab-7.run_2"}, {"model", "mlp"},     {"method", "topk"}, {"drop", "0.99"},
        {"threshold", "0.003"}, {"beta", "0.3"},      {"agents", "16"},   {"batch", "64"},
        {"lr", "0.0125"},       {"rounds", "5000"},   {"seed", "18446744073709551615"},
        {"partition", "noniid"}, {"alpha", "0.1"},    {"values", "f16"},  {"eval-every", "25"},
        {"lr-schedule", "cosine"}, {"warmup-rounds", "50"},
    };
    for (size_t i = 0; i < sizeof changes / sizeof changes[0]; i++)
        assert_int_equal(job_config_set(&cfg, changes[i][0], changes[i][1], &err), ESGD_OK);
    assert_int_equal(codec_encode_config(&buf, &cfg, &err), ESGD_OK);
    assert_true(buf.size < CODEC_CONFIG_BOUND);
    assert_int_equal(codec_decode_config(dec, buf.data, buf.size, &got, &err), ESGD_OK);
    for (size_t i = 0; i < job_option_count(); i++) {
        const job_option *opt = job_option_at(i);
        assert_true(job_config_get_uint(&got, opt) == job_config_get_uint(&cfg, opt));
        assert_true(job_config_get_float(&got, opt) == job_config_get_float(&cfg, opt));
        assert_string_equal(job_config_get_string(&got, opt), job_config_get_string(&cfg, opt));
    }
    assert_string_equal(got.job, "lab-7.run_2");
    assert_string_equal(got.model, "mlp");
    assert_true(got.seed == UINT64_MAX);
    assert_true(got.run == 0x8000000000000001ull);
    assert_true(got.sparsify.threshold == 0.003f);
    assert_int_equal(got.lr_schedule, LR_SCHEDULE_COSINE);
    assert_int_equal(got.warmup_rounds, 50);

    cfg.batch = 0; /* the encoder validates too */
    assert_int_equal(codec_encode_config(&buf, &cfg, &err), ESGD_ERR_ARG);
    buffer_destroy(&buf);
    codec_decoder_free(dec);
}

static void test_status_round_trips(void **state)
{
    (void)state;
    codec_decoder *dec = codec_decoder_new(NULL);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, CODEC_STATUS_BOUND, NULL), ESGD_OK);
    for (int s = AGENT_STATE_ONLINE; s <= AGENT_STATE_DONE; s++) {
        status_msg m = {.run = s == AGENT_STATE_ONLINE ? 0 : UINT64_MAX - (uint64_t)s, .agent = 4294967295u,
                        .state = (agent_state)s, .round = 77};
        memset(m.job, 'j', JOB_NAME_MAX);
        m.job[JOB_NAME_MAX] = '\0';
        assert_int_equal(codec_encode_status(&buf, &m, NULL), ESGD_OK);
        assert_true(buf.size <= CODEC_STATUS_BOUND);
        status_msg got;
        assert_int_equal(codec_decode_status(dec, buf.data, buf.size, &got, NULL), ESGD_OK);
        assert_string_equal(got.job, m.job);
        assert_int_equal(got.agent, 4294967295u);
        assert_int_equal(got.state, s);
        assert_int_equal(got.round, 77);
        assert_true(got.run == m.run);
    }
    assert_string_equal(agent_state_name(AGENT_STATE_OFFLINE), "offline");
    status_msg bad = {.state = AGENT_STATE_DONE};
    strcpy(bad.job, "a b");
    assert_int_equal(codec_encode_status(&buf, &bad, NULL), ESGD_ERR_RANGE);
    buffer_destroy(&buf);
    codec_decoder_free(dec);
}

/* ------------------------------------------------- choosing the coding */

/* The encoder's message must be no larger than the same update coded as a
 * bitmap, as "all", or as Rice with any b, each built independently here;
 * and each alternative must decode to the same vector. */
static void check_smallest(codec_decoder *dec, uint32_t dim, uint32_t count, uint64_t seed)
{
    vec_storage in = vec_alloc(dim, count), out = vec_alloc(dim, count);
    random_vector(&in, dim, count, seed);
    update_msg u = {.run = UINT64_MAX - seed, .round = 1, .agent = 0, .samples = 4, .loss = 1.0f, .grad = in.v};
    strcpy(u.job, "unit");
    esgd_buffer mine, alt;
    assert_int_equal(buffer_init(&mine, codec_update_bound(dim), NULL), ESGD_OK);
    assert_int_equal(buffer_init(&alt, codec_update_bound(dim) * 2 + 4 * (size_t)dim, NULL), ESGD_OK);
    assert_int_equal(codec_encode_update(&mine, &u, VALUE_FORMAT_F32, NULL), ESGD_OK);

    size_t idx_cap = 4 * (size_t)dim + 64;
    uint8_t *idx = malloc(idx_cap);
    uint8_t *val = malloc(4 * (size_t)count + 1);
    f32_le(in.values, count, val);
    spec s = {.n = 0};
    spec_set(&s, "v", fu(CODEC_VERSION));
    spec_set(&s, "type", fstr("update"));
    spec_set(&s, "job", fstr("unit"));
    spec_set(&s, "run", fu(u.run));
    spec_set(&s, "round", fu(1));
    spec_set(&s, "agent", fu(0));
    spec_set(&s, "samples", fu(4));
    spec_set(&s, "loss", ff32(1.0));
    spec_set(&s, "dim", fu(dim));
    spec_set(&s, "count", fu(count));
    spec_set(&s, "val_fmt", fstr("f32"));
    spec_set(&s, "val", fbin(val, 4 * (size_t)count));
    size_t best = SIZE_MAX;
    for (int alternative = 0; alternative < 34; alternative++) {
        spec t = s;
        if (alternative == 0) {
            spec_set(&t, "idx_enc", fstr("bitmap"));
            spec_set(&t, "idx", fbin(idx, naive_bitmap(in.indices, count, dim, idx)));
        } else if (alternative == 1) {
            if (count != dim)
                continue;
            spec_set(&t, "idx_enc", fstr("all"));
        } else {
            unsigned b = (unsigned)alternative - 2;
            uint64_t bits = 0; /* skip codes too big for the scratch */
            for (uint32_t i = 0, next = 0; i < count; next = in.indices[i] + 1, i++)
                bits += ((in.indices[i] - next) >> b) + 1 + b;
            if (bits / 8 + 1 > idx_cap)
                continue;
            spec_set(&t, "idx_enc", fstr("rice"));
            spec_set(&t, "idx", fbin(idx, naive_rice(in.indices, count, b, idx, idx_cap)));
            spec_set(&t, "rice_b", fu(b));
        }
        spec_pack(&t, &alt);
        if (alt.size < best)
            best = alt.size;
        update_msg got = {.grad = out.v};
        esgd_error err = {0};
        assert_int_equal(codec_decode_update(dec, alt.data, alt.size, dim, &got, &err), ESGD_OK);
        assert_int_equal(got.grad.count, count);
        assert_memory_equal(out.indices, in.indices, count * sizeof(uint32_t));
    }
    assert_true(mine.size <= best);
    assert_true(mine.size == best);
    free(idx);
    free(val);
    buffer_destroy(&mine);
    buffer_destroy(&alt);
    vec_free(&in);
    vec_free(&out);
}

static void test_encoder_picks_the_smallest_coding(void **state)
{
    (void)state;
    codec_decoder *dec = codec_decoder_new(NULL);
    static const struct {
        uint32_t dim, count;
    } cases[] = {{1, 1}, {8, 8}, {8, 7}, {100, 50}, {1000, 10}, {1000, 400}, {1000, 600}, {1000, 1000},
                 {61706, 30853}, {61706, 7714}, {61706, 618}, {61706, 62}, {70000, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_smallest(dec, cases[i].dim, cases[i].count, 100 + i);
    codec_decoder_free(dec);
}

static double log2_binomial(double n, double k)
{
    return (lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)) / log(2.0);
}

static void test_rice_near_the_bound(void **state)
{
    (void)state;
    static const struct {
        double drop;
        double slack;
    } cases[] = {{0.99, 1.15}, {0.999, 1.15}, {0.875, 1.15}};
    const uint32_t d = 61706;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint32_t k = (uint32_t)ceil((1.0 - cases[c].drop) * d);
        for (uint64_t seed = 1; seed <= 5; seed++) {
            vec_storage v = vec_alloc(d, k);
            random_vector(&v, d, k, seed);
            update_msg u = {.samples = 1, .grad = v.v};
            strcpy(u.job, "unit");
            esgd_buffer buf;
            assert_int_equal(buffer_init(&buf, codec_update_bound(d), NULL), ESGD_OK);
            assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, NULL), ESGD_OK);
            size_t idx_bytes;
            assert_string_equal(idx_enc_of(&buf, &idx_bytes), "rice");
            double bound = log2_binomial(d, k) / 8;
            if (seed == 1)
                print_message("drop %.3f k %u: rice idx %zu bytes, bound %.0f bytes, ratio %.3f\n", cases[c].drop, k,
                              idx_bytes, bound, idx_bytes / bound);
            assert_true(idx_bytes <= cases[c].slack * bound);
            buffer_destroy(&buf);
            vec_free(&v);
        }
    }
}

/* The bound holds for the worst layouts of every size class. */
static void test_bounds_fit_the_worst_cases(void **state)
{
    (void)state;
    static const uint32_t dims[] = {1, 7, 8, 9, 255, 256, 1000, 61706};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        uint32_t d = dims[i];
        vec_storage v = vec_alloc(d, d);
        esgd_buffer buf;
        assert_int_equal(buffer_init(&buf, codec_update_bound(d), NULL), ESGD_OK);
        uint32_t counts[] = {0, 1, d / 2, d > 1 ? d - 1 : 1, d};
        for (size_t c = 0; c < 5; c++) {
            random_vector(&v, d, counts[c], c + 1);
            update_msg u = {.round = UINT32_MAX, .agent = UINT32_MAX, .samples = UINT32_MAX, .loss = 1e30f,
                            .grad = v.v};
            memset(u.job, 'z', JOB_NAME_MAX);
            u.job[JOB_NAME_MAX] = '\0';
            assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, NULL), ESGD_OK);
            model_msg m = {.round = UINT32_MAX, .base_round = UINT32_MAX - 1, .lr = 1e30f, .prev_loss = 1e30f,
                           .loss_fell = 1, .done = 1, .form = MODEL_FORM_DELTA, .params = v.v};
            memcpy(m.job, u.job, sizeof m.job);
            esgd_buffer mb;
            assert_int_equal(buffer_init(&mb, codec_model_bound(d), NULL), ESGD_OK);
            assert_int_equal(codec_encode_model(&mb, &m, NULL), ESGD_OK);
            if (counts[c] == d) {
                m.form = MODEL_FORM_FULL;
                m.base_round = m.round;
                assert_int_equal(codec_encode_model(&mb, &m, NULL), ESGD_OK);
            }
            buffer_destroy(&mb);
        }
        buffer_destroy(&buf);
        vec_free(&v);
    }
}

static void test_encoder_rejects_bad_updates(void **state)
{
    (void)state;
    uint32_t idx[] = {1, 4, 9};
    float val[] = {1, 2, 3};
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 4096, NULL), ESGD_OK);
    update_msg u = {.samples = 1, .grad = {.dim = 10, .count = 3, .capacity = 3, .indices = idx, .values = val}};
    strcpy(u.job, "unit");
    esgd_error err = {0};
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_OK);

    idx[1] = 1; /* duplicate */
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_ORDER);
    idx[1] = 0; /* unsorted */
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_ORDER);
    idx[1] = 4;
    idx[2] = 10; /* out of range */
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_RANGE);
    idx[2] = 9;
    val[1] = NAN;
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_NONFINITE);
    val[1] = 70000.0f; /* fine as f32, overflows f16 */
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_OK);
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F16, &err), ESGD_ERR_RANGE);
    assert_int_equal(buf.size, 0);
    val[1] = 65504.0f; /* the largest half */
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F16, &err), ESGD_OK);
    val[1] = -65520.0f; /* rounds to -Inf */
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F16, &err), ESGD_ERR_RANGE);
    val[1] = 2;
    u.grad.count = 11;
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_RANGE);
    u.grad.count = 3;
    u.samples = 0;
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_RANGE);
    u.samples = 1;
    u.loss = -1;
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_RANGE);
    u.loss = INFINITY;
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_NONFINITE);
    u.loss = 1;
    strcpy(u.job, "");
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_RANGE);
    strcpy(u.job, "has/slash");
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_RANGE);
    strcpy(u.job, "unit");
    assert_int_equal(codec_encode_update(&buf, &u, (value_format)7, &err), ESGD_ERR_ARG);
    buffer_destroy(&buf);

    /* A buffer one byte short of the message. */
    assert_int_equal(buffer_init(&buf, 4096, NULL), ESGD_OK);
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_OK);
    size_t need = buf.size;
    buffer_destroy(&buf);
    for (size_t cap = 0; cap < need; cap++) {
        assert_int_equal(buffer_init(&buf, cap, NULL), ESGD_OK);
        assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_ERR_TOO_LARGE);
        assert_int_equal(buf.size, 0);
        buffer_destroy(&buf);
    }
    assert_int_equal(buffer_init(&buf, need, NULL), ESGD_OK);
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F32, &err), ESGD_OK);
    buffer_destroy(&buf);
}

/* --------------------------------------------------------------- binary16 */

static float bits_f32(uint32_t x)
{
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static void test_f16_conversion_table(void **state)
{
    (void)state;
    static const struct {
        float in;
        uint16_t out;
    } table[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {0.5f, 0x3800},
        {65504.0f, 0x7bff},           /* largest finite half */
        {65519.0f, 0x7bff},           /* below the midpoint to 65536 */
        {65520.0f, 0x7c00},           /* the midpoint ties to even: Inf */
        {1e6f, 0x7c00},               /* overflow */
        {-1e6f, 0xfc00},
        {0x1p-14f, 0x0400},           /* smallest normal */
        {0x1p-24f, 0x0001},           /* smallest subnormal */
        {0x3p-25f, 0x0002},           /* 1.5 ulp: ties to even (2) */
        {0x1p-25f, 0x0000},           /* half the smallest: ties to even (0) */
        {0x1.8p-25f, 0x0001},         /* above the tie */
        {0x1p-26f, 0x0000},
        {-0x1p-24f, 0x8001},
        {0x3ffp-24f, 0x03ff},         /* largest subnormal */
        {0x1.ffcp-15f, 0x0400},       /* rounds up from subnormal into the smallest normal */
        {1.0f + 0x1p-11f, 0x3c00},    /* tie, even is down */
        {1.0f + 0x3p-11f, 0x3c02},    /* tie, even is up */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01},
        {2049.0f, 0x6800},            /* tie between 2048 and 2050: 2048 */
        {2051.0f, 0x6802},            /* tie between 2050 and 2052: 2052 */
        {0.1f, 0x2e66},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        uint16_t got = codec_f32_to_f16(table[i].in);
        if (got != table[i].out)
            fail_msg("f32_to_f16(%a) = 0x%04x, expected 0x%04x", (double)table[i].in, got, table[i].out);
    }
    assert_int_equal(codec_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(codec_f32_to_f16(-INFINITY), 0xfc00);
    uint16_t nan = codec_f32_to_f16(NAN);
    assert_true((nan & 0x7c00) == 0x7c00 && (nan & 0x03ff) != 0);
    assert_true(codec_f32_to_f16(bits_f32(0x00000001)) == 0x0000); /* f32 subnormal */

    assert_true(codec_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(codec_f16_to_f32(0x03ff) == 0x3ffp-24f);
    assert_true(codec_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(codec_f16_to_f32(0xc000) == -2.0f);
    assert_true(signbit(codec_f16_to_f32(0x8000)) && codec_f16_to_f32(0x8000) == 0.0f);
    assert_true(isinf(codec_f16_to_f32(0x7c00)));
    assert_true(isnan(codec_f16_to_f32(0x7e00)));
    /* f16 -> f32 is exact, so every finite half survives the round trip. */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = codec_f16_to_f32((uint16_t)h);
        if ((h & 0x7c00) == 0x7c00) {
            assert_true(((h & 0x3ff) == 0) ? isinf(f) : isnan(f));
            continue;
        }
        if (codec_f32_to_f16(f) != h)
            fail_msg("half 0x%04x -> %a -> 0x%04x", h, (double)f, codec_f32_to_f16(f));
    }
}

/* The compiler's own float -> _Float16 conversion (IEEE, nearest even) as
 * the oracle: every finite half, the exact midpoint above each, one ulp
 * either side of it, and a stride through all 2^32 bit patterns. */
static void test_f16_matches_compiler(void **state)
{
    (void)state;
#ifdef __FLT16_MAX__
    uint64_t checked = 0;
    for (uint64_t x = 0; x <= 0xffffffffu; x += 65521) { /* a prime stride: every exponent and low-bit mix */
        float f = bits_f32((uint32_t)x);
        if (isnan(f))
            continue;
        _Float16 h = (_Float16)f;
        uint16_t want;
        memcpy(&want, &h, sizeof want);
        if (codec_f32_to_f16(f) != want)
            fail_msg("f32_to_f16(%a) = 0x%04x, the compiler says 0x%04x", (double)f, codec_f32_to_f16(f), want);
        checked++;
    }
    for (uint32_t half = 0; half < 0x7c00; half++) {
        float lo = codec_f16_to_f32((uint16_t)half), hi = codec_f16_to_f32((uint16_t)(half + 1));
        float mid = lo + (hi - lo) / 2; /* exact in f32 */
        const float probes[] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY), -mid};
        for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
            _Float16 h = (_Float16)probes[i];
            uint16_t want;
            memcpy(&want, &h, sizeof want);
            if (codec_f32_to_f16(probes[i]) != want)
                fail_msg("f32_to_f16(%a) = 0x%04x, the compiler says 0x%04x", (double)probes[i],
                         codec_f32_to_f16(probes[i]), want);
            checked++;
        }
    }
    assert_true(checked > 60000);
#else
    test_skip();
#endif
}

/* half_write_le / half_read_le (the CPU's conversion instructions where
 * it has them) against the portable code, bit for bit: every sign and
 * exponent with every top-10 mantissa pattern and 16 choices of the 13 bits
 * rounding drops (ties, one either side, ...), which is every rounding case
 * of every half including the subnormal and overflow ranges, NaNs with
 * every kept payload, Infs and zeros; then a prime stride through all 2^32
 * bit patterns, and with ESGD_F16_EXHAUSTIVE=1 all of them; then every
 * half back to float, and the first Inf/NaN named at the same index. */
static void test_f16_hardware_matches_portable(void **state)
{
    (void)state;
    const char *hw = half_hardware();
    print_message("f16 conversion: %s\n", hw ? hw : "portable only (no hardware path on this CPU or target)");
    enum { CHUNK = 1 << 16 };
    uint32_t *bits = malloc(sizeof(uint32_t) * CHUNK);
    uint8_t *a = malloc(2 * CHUNK), *b = malloc(2 * CHUNK);
    float *fa = malloc(sizeof(float) * CHUNK), *fb = malloc(sizeof(float) * CHUNK);
    assert_true(bits && a && b && fa && fb);
    static const uint32_t low[16] = {0, 1, 2, 0x7ff, 0xfff, 0x1000, 0x1001, 0x17ff, 0x1800, 0x1801, 0x1ffe, 0x1fff,
                                     0x0800, 0x0801, 0x0555, 0x1aaa};
    uint64_t checked = 0;
    uint32_t n = 0;
    /* ~8.4M floats: 2 signs x 256 exponents x 1024 kept mantissas x 16 dropped patterns */
    for (uint32_t top = 0; top < (1u << 19); top++)
        for (uint32_t l = 0; l < 16; l++) {
            bits[n++] = (top << 13) | low[l];
            if (n == CHUNK || (top == (1u << 19) - 1 && l == 15)) {
                half_write_le(a, (const float *)(const void *)bits, n);
                half_write_le_portable(b, (const float *)(const void *)bits, n);
                if (memcmp(a, b, 2 * (size_t)n) != 0)
                    for (uint32_t i = 0; i < n; i++)
                        if (a[2 * i] != b[2 * i] || a[2 * i + 1] != b[2 * i + 1])
                            fail_msg("f32 0x%08x -> half 0x%02x%02x, portable 0x%02x%02x", bits[i], a[2 * i + 1],
                                     a[2 * i], b[2 * i + 1], b[2 * i]);
                checked += n;
                n = 0;
            }
        }
    const char *env = getenv("ESGD_F16_EXHAUSTIVE");
    uint64_t stride = env && strcmp(env, "1") == 0 ? 1 : 65521;
    for (uint64_t x = 0; x <= 0xffffffffu;) {
        for (n = 0; n < CHUNK && x <= 0xffffffffu; x += stride)
            bits[n++] = (uint32_t)x;
        half_write_le(a, (const float *)(const void *)bits, n);
        half_write_le_portable(b, (const float *)(const void *)bits, n);
        if (memcmp(a, b, 2 * (size_t)n) != 0)
            for (uint32_t i = 0; i < n; i++)
                if (a[2 * i] != b[2 * i] || a[2 * i + 1] != b[2 * i + 1])
                    fail_msg("f32 0x%08x -> half 0x%02x%02x, portable 0x%02x%02x", bits[i], a[2 * i + 1], a[2 * i],
                             b[2 * i + 1], b[2 * i]);
        checked += n;
    }
    print_message("f16 conversion: %llu floats gave the same halves%s\n", (unsigned long long)checked,
                  stride == 1 ? " (all 2^32 bit patterns)" : "");
    /* every finite half back to float: same bits */
    uint32_t finite = 0;
    for (uint32_t h = 0; h < 0x10000; h++)
        if ((h & 0x7c00u) != 0x7c00u) {
            a[2 * finite] = (uint8_t)h;
            a[2 * finite + 1] = (uint8_t)(h >> 8);
            finite++;
        }
    esgd_error e1 = {0}, e2 = {0};
    assert_int_equal(half_read_le(a, finite, fa, &e1), ESGD_OK);
    assert_int_equal(half_read_le_portable(a, finite, fb, &e2), ESGD_OK);
    assert_memory_equal(fa, fb, sizeof(float) * finite);
    /* an Inf or NaN at every position of a 37-value run is named at it */
    static const uint16_t bad[] = {0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xffff};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        for (uint32_t at = 0; at < 37; at++) {
            for (uint32_t i = 0; i < 37; i++) {
                uint16_t h = i == at ? bad[k] : (uint16_t)(0x3c00 + i);
                a[2 * i] = (uint8_t)h;
                a[2 * i + 1] = (uint8_t)(h >> 8);
            }
            e1 = (esgd_error){0};
            e2 = (esgd_error){0};
            assert_int_equal(half_read_le(a, 37, fa, &e1), ESGD_ERR_NONFINITE);
            assert_int_equal(half_read_le_portable(a, 37, fb, &e2), ESGD_ERR_NONFINITE);
            assert_string_equal(e1.message, e2.message);
            assert_memory_equal(fa, fb, sizeof(float) * at);
        }
    free(bits);
    free(a);
    free(b);
    free(fa);
    free(fb);
}

/* Values binary16 cannot hold go out as the largest finite half instead of
 * making the whole update unsendable; the count says how many. */
static void test_f16_clamp(void **state)
{
    (void)state;
    float v[] = {65504.0f, 65505.0f, -70000.0f, 1e30f, -3.0f, 0.0f, -65504.0f};
    assert_int_equal(codec_clamp_f16(v, 7), 3);
    const float want[] = {65504.0f, 65504.0f, -65504.0f, 65504.0f, -3.0f, 0.0f, -65504.0f};
    assert_memory_equal(v, want, sizeof want);
    assert_int_equal(codec_clamp_f16(v, 7), 0);
    uint32_t idx[] = {0, 1, 2, 3, 4, 5, 6};
    update_msg u = {.job = "clamp", .run = 1, .samples = 1, .loss = 0.5f,
                    .grad = {.dim = 7, .count = 7, .capacity = 7, .indices = idx, .values = v}};
    esgd_buffer buf;
    esgd_error err = {0};
    assert_int_equal(buffer_init(&buf, codec_update_bound(7), &err), ESGD_OK);
    assert_int_equal(codec_encode_update(&buf, &u, VALUE_FORMAT_F16, &err), ESGD_OK);
    buffer_destroy(&buf);
}

/* --------------------------------------------------------- malformed table */

typedef enum op { OP_SET, OP_REMOVE, OP_DUPLICATE } op;

typedef struct bad_case {
    const char *name;
    msg_kind kind;
    op op;
    const char *key;
    field value;
    uint32_t expected_dim;
    esgd_status expected;
} bad_case;

static const uint8_t nan_val[12] = {0, 0, 0, 0x3f, 0, 0, 0xc0, 0x7f, 0, 0, 0, 0};   /* 0.5, NaN, 0 */
static const uint8_t inf_val[12] = {0, 0, 0x80, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0};      /* +Inf first */
static const uint8_t f16_inf[6] = {0, 0x7c, 0, 0, 0, 0};
static const uint8_t f16_ok[6] = {0, 0x3c, 0, 0xc0, 0, 0x38};
static const uint8_t f16_nan[6] = {0, 0x3c, 0x01, 0x7e, 0, 0x38};
/* Rice, b = 1, of {2, 5, 11} is 10 0 | 10 0 | 110 1 -> 1001 0011 01(00 0000): 0x93 0x40. */
static const uint8_t rice_extra[3] = {0x93, 0x40, 0x00};  /* one byte too many */
static const uint8_t rice_pad[2] = {0x93, 0x41};          /* non-zero padding */
static const uint8_t rice_short[1] = {0x93};              /* ends inside the third code */
static const uint8_t rice_unary[4] = {0xff, 0xff, 0xff, 0xfe};  /* run of 31 past dim 20 */
static const uint8_t rice_big[2] = {0x93, 0xf8};          /* third gap 14: index 20 >= dim */
/* Bitmaps of 3 bytes for dim 20. */
static const uint8_t bm_ok[3] = {0x24, 0x08, 0x00};       /* {2, 5, 11} */
static const uint8_t bm_four[3] = {0x24, 0x09, 0x00};     /* {2, 5, 8, 11}: popcount 4 != count */
static const uint8_t bm_two[3] = {0x24, 0x00, 0x00};      /* popcount 2 != count */
static const uint8_t bm_high[3] = {0x24, 0x00, 0x10};     /* bit 20 >= dim */
static const uint8_t bm_long[4] = {0x24, 0x08, 0x00, 0x00};

#define SET(k, ...) OP_SET, k, __VA_ARGS__
#define DEL(k) OP_REMOVE, k, {0}
#define DUP(k) OP_DUPLICATE, k, {0}

static const bad_case bad_cases[] = {
    /* Header rules, every message. */
    {"wrong version", MSG_UPDATE, SET("v", {.type = F_UINT, .u = 3}), 20, ESGD_ERR_VERSION},
    /* Version 1 (unsigned, no run) is refused whatever else the message holds. */
    {"version 1 update", MSG_UPDATE, SET("v", {.type = F_UINT, .u = 1}), 20, ESGD_ERR_VERSION},
    {"version 1 model", MSG_MODEL, SET("v", {.type = F_UINT, .u = 1}), 20, ESGD_ERR_VERSION},
    {"version 1 status", MSG_STATUS, SET("v", {.type = F_UINT, .u = 1}), 0, ESGD_ERR_VERSION},
    {"version 1 config", MSG_CONFIG, SET("v", {.type = F_UINT, .u = 1}), 0, ESGD_ERR_VERSION},
    {"version 0", MSG_STATUS, SET("v", {.type = F_UINT, .u = 0}), 0, ESGD_ERR_VERSION},
    {"negative version", MSG_MODEL, SET("v", {.type = F_NEG, .u = (uint64_t)-1}), 20, ESGD_ERR_VERSION},
    {"version as str", MSG_UPDATE, SET("v", {.type = F_STR, .s = "1"}), 20, ESGD_ERR_TYPE},
    {"missing version", MSG_CONFIG, DEL("v"), 0, ESGD_ERR_MISSING},
    {"missing type", MSG_UPDATE, DEL("type"), 20, ESGD_ERR_MISSING},
    {"type not str", MSG_UPDATE, SET("type", {.type = F_UINT, .u = 1}), 20, ESGD_ERR_TYPE},
    {"model fed to update", MSG_UPDATE, SET("type", {.type = F_STR, .s = "model"}), 20, ESGD_ERR_MISMATCH},
    {"update fed to status", MSG_STATUS, SET("type", {.type = F_STR, .s = "update"}), 0, ESGD_ERR_MISMATCH},
    {"unknown type", MSG_CONFIG, SET("type", {.type = F_STR, .s = "hello"}), 0, ESGD_ERR_MISMATCH},
    {"duplicate key", MSG_UPDATE, DUP("round"), 20, ESGD_ERR_FORMAT},
    {"duplicate v", MSG_STATUS, DUP("v"), 0, ESGD_ERR_FORMAT},
    {"duplicate config key", MSG_CONFIG, DUP("lr"), 0, ESGD_ERR_FORMAT},
    {"unknown key update", MSG_UPDATE, SET("colour", {.type = F_STR, .s = "red"}), 20, ESGD_ERR_FORMAT},
    {"unknown key model", MSG_MODEL, SET("val_fmt", {.type = F_STR, .s = "f32"}), 20, ESGD_ERR_FORMAT},
    {"unknown key status", MSG_STATUS, SET("extra", {.type = F_NIL}), 0, ESGD_ERR_FORMAT},
    {"unknown key config", MSG_CONFIG, SET("colour", {.type = F_UINT, .u = 1}), 0, ESGD_ERR_FORMAT},
    {"missing job", MSG_UPDATE, DEL("job"), 20, ESGD_ERR_MISSING},
    {"empty job", MSG_UPDATE, SET("job", {.type = F_STR, .s = ""}), 20, ESGD_ERR_RANGE},
    {"job with slash", MSG_STATUS, SET("job", {.type = F_STR, .s = "a/b"}), 0, ESGD_ERR_RANGE},
    {"job too long", MSG_MODEL,
     SET("job", {.type = F_STR, .s = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}), 20,
     ESGD_ERR_RANGE},
    {"job as bin", MSG_UPDATE, SET("job", {.type = F_BIN, .bin = bm_ok, .len = 3}), 20, ESGD_ERR_TYPE},
    /* The run: required in every message, any uint64. */
    {"missing run update", MSG_UPDATE, DEL("run"), 20, ESGD_ERR_MISSING},
    {"missing run model", MSG_MODEL, DEL("run"), 20, ESGD_ERR_MISSING},
    {"missing run status", MSG_STATUS, DEL("run"), 0, ESGD_ERR_MISSING},
    {"missing run config", MSG_CONFIG, DEL("run"), 0, ESGD_ERR_MISSING},
    {"missing gen model", MSG_MODEL, DEL("gen"), 20, ESGD_ERR_MISSING},
    {"missing gen status", MSG_STATUS, DEL("gen"), 0, ESGD_ERR_MISSING},
    {"gen as str", MSG_MODEL, SET("gen", {.type = F_STR, .s = "1"}), 20, ESGD_ERR_TYPE},
    {"gen over u32", MSG_STATUS, SET("gen", {.type = F_UINT, .u = 1ull << 32}), 0, ESGD_ERR_RANGE},
    {"shard without the rest", MSG_STATUS, SET("shard", {.type = F_UINT, .u = 1}), 0, ESGD_ERR_MISSING},
    {"data_fp as str", MSG_STATUS, SET("data_fp", {.type = F_STR, .s = "x"}), 0, ESGD_ERR_MISSING},
    {"negative run", MSG_UPDATE, SET("run", {.type = F_NEG, .u = (uint64_t)-1}), 20, ESGD_ERR_RANGE},
    {"run as str", MSG_MODEL, SET("run", {.type = F_STR, .s = "1"}), 20, ESGD_ERR_TYPE},
    {"run as float", MSG_STATUS, SET("run", {.type = F_F64, .f = 1.0}), 0, ESGD_ERR_TYPE},
    {"run as bin", MSG_CONFIG, SET("run", {.type = F_BIN, .bin = bm_ok, .len = 3}), 0, ESGD_ERR_TYPE},
    {"duplicate run", MSG_UPDATE, DUP("run"), 20, ESGD_ERR_FORMAT},
    /* Integers. */
    {"missing round", MSG_UPDATE, DEL("round"), 20, ESGD_ERR_MISSING},
    {"negative round", MSG_UPDATE, SET("round", {.type = F_NEG, .u = (uint64_t)-3}), 20, ESGD_ERR_RANGE},
    {"round > u32", MSG_UPDATE, SET("round", {.type = F_UINT, .u = 4294967296ull}), 20, ESGD_ERR_RANGE},
    {"round as float", MSG_UPDATE, SET("round", {.type = F_F64, .f = 3.0}), 20, ESGD_ERR_TYPE},
    {"round as str", MSG_UPDATE, SET("round", {.type = F_STR, .s = "3"}), 20, ESGD_ERR_TYPE},
    {"agent as array", MSG_UPDATE, SET("agent", {.type = F_ARRAY}), 20, ESGD_ERR_TYPE},
    {"missing agent", MSG_STATUS, DEL("agent"), 0, ESGD_ERR_MISSING},
    {"negative agent", MSG_STATUS, SET("agent", {.type = F_NEG, .u = (uint64_t)-1}), 0, ESGD_ERR_RANGE},
    {"samples 0", MSG_UPDATE, SET("samples", {.type = F_UINT, .u = 0}), 20, ESGD_ERR_RANGE},
    /* Floats. */
    {"loss negative", MSG_UPDATE, SET("loss", {.type = F_F32, .f = -1.0}), 20, ESGD_ERR_RANGE},
    {"loss NaN", MSG_UPDATE, SET("loss", {.type = F_F32, .f = NAN}), 20, ESGD_ERR_NONFINITE},
    {"loss Inf", MSG_UPDATE, SET("loss", {.type = F_F64, .f = INFINITY}), 20, ESGD_ERR_NONFINITE},
    {"loss beyond float32", MSG_UPDATE, SET("loss", {.type = F_F64, .f = 1e300}), 20, ESGD_ERR_NONFINITE},
    {"loss as int", MSG_UPDATE, SET("loss", {.type = F_UINT, .u = 1}), 20, ESGD_ERR_TYPE},
    {"loss nil", MSG_UPDATE, SET("loss", {.type = F_NIL}), 20, ESGD_ERR_TYPE},
    {"lr negative", MSG_MODEL, SET("lr", {.type = F_F32, .f = -0.1}), 20, ESGD_ERR_RANGE},
    {"prev_loss as str", MSG_MODEL, SET("prev_loss", {.type = F_STR, .s = "x"}), 20, ESGD_ERR_TYPE},
    {"prev_loss NaN float", MSG_MODEL, SET("prev_loss", {.type = F_F32, .f = NAN}), 20, ESGD_ERR_NONFINITE},
    {"loss_fell as int", MSG_MODEL, SET("loss_fell", {.type = F_UINT, .u = 1}), 20, ESGD_ERR_TYPE},
    {"done nil", MSG_MODEL, SET("done", {.type = F_NIL}), 20, ESGD_ERR_TYPE},
    {"missing done", MSG_MODEL, DEL("done"), 20, ESGD_ERR_MISSING},
    /* Dimensions and counts. */
    {"dim 0", MSG_UPDATE, SET("dim", {.type = F_UINT, .u = 0}), 0, ESGD_ERR_RANGE},
    {"dim mismatch", MSG_UPDATE, SET("dim", {.type = F_UINT, .u = 21}), 20, ESGD_ERR_DIMENSION},
    {"dim over capacity", MSG_UPDATE, SET("dim", {.type = F_UINT, .u = 33}), 0, ESGD_ERR_TOO_LARGE},
    {"count > dim", MSG_UPDATE, SET("count", {.type = F_UINT, .u = 21}), 20, ESGD_ERR_RANGE},
    {"model dim mismatch", MSG_MODEL, SET("dim", {.type = F_UINT, .u = 19}), 20, ESGD_ERR_DIMENSION},
    /* Index coding. */
    {"unknown idx_enc", MSG_UPDATE, SET("idx_enc", {.type = F_STR, .s = "zip"}), 20, ESGD_ERR_RANGE},
    {"missing idx_enc", MSG_UPDATE, DEL("idx_enc"), 20, ESGD_ERR_MISSING},
    {"missing idx", MSG_UPDATE, DEL("idx"), 20, ESGD_ERR_MISSING},
    {"idx as str", MSG_UPDATE, SET("idx", {.type = F_STR, .s = "ab"}), 20, ESGD_ERR_TYPE},
    {"missing rice_b", MSG_UPDATE, DEL("rice_b"), 20, ESGD_ERR_MISSING},
    {"rice_b 32", MSG_UPDATE, SET("rice_b", {.type = F_UINT, .u = 32}), 20, ESGD_ERR_RANGE},
    {"all with count != dim", MSG_UPDATE, SET("idx_enc", {.type = F_STR, .s = "all"}), 20, ESGD_ERR_FORMAT},
    {"rice extra byte", MSG_UPDATE, SET("idx", {.type = F_BIN, .bin = rice_extra, .len = 3}), 20, ESGD_ERR_FORMAT},
    {"rice padding", MSG_UPDATE, SET("idx", {.type = F_BIN, .bin = rice_pad, .len = 2}), 20, ESGD_ERR_FORMAT},
    {"rice short", MSG_UPDATE, SET("idx", {.type = F_BIN, .bin = rice_short, .len = 1}), 20, ESGD_ERR_FORMAT},
    {"rice empty", MSG_UPDATE, SET("idx", {.type = F_BIN, .bin = rice_short, .len = 0}), 20, ESGD_ERR_FORMAT},
    {"rice overlong unary", MSG_UPDATE, SET("idx", {.type = F_BIN, .bin = rice_unary, .len = 4}), 20,
     ESGD_ERR_RANGE},
    {"rice index >= dim", MSG_UPDATE, SET("idx", {.type = F_BIN, .bin = rice_big, .len = 2}), 20, ESGD_ERR_RANGE},
    {"rice count too big", MSG_UPDATE, SET("count", {.type = F_UINT, .u = 4}), 20, ESGD_ERR_FORMAT},
    {"model rice index >= dim", MSG_MODEL, SET("idx", {.type = F_BIN, .bin = rice_big, .len = 2}), 20,
     ESGD_ERR_RANGE},
    /* Values. */
    {"val short", MSG_UPDATE, SET("val", {.type = F_BIN, .bin = nan_val, .len = 11}), 20, ESGD_ERR_FORMAT},
    {"val long", MSG_UPDATE, SET("val", {.type = F_BIN, .bin = rice_unary, .len = 4}), 20, ESGD_ERR_FORMAT},
    {"val NaN", MSG_UPDATE, SET("val", {.type = F_BIN, .bin = nan_val, .len = 12}), 20, ESGD_ERR_NONFINITE},
    {"val Inf", MSG_UPDATE, SET("val", {.type = F_BIN, .bin = inf_val, .len = 12}), 20, ESGD_ERR_NONFINITE},
    {"model val NaN", MSG_MODEL, SET("val", {.type = F_BIN, .bin = nan_val, .len = 12}), 20, ESGD_ERR_NONFINITE},
    {"unknown val_fmt", MSG_UPDATE, SET("val_fmt", {.type = F_STR, .s = "f64"}), 20, ESGD_ERR_RANGE},
    {"f16 with f32 length", MSG_UPDATE, SET("val_fmt", {.type = F_STR, .s = "f16"}), 20, ESGD_ERR_FORMAT},
    {"missing val", MSG_MODEL, DEL("val"), 20, ESGD_ERR_MISSING},
    /* Model rules. */
    {"unknown form", MSG_MODEL, SET("form", {.type = F_STR, .s = "half"}), 20, ESGD_ERR_RANGE},
    {"delta base_round == round", MSG_MODEL, SET("base_round", {.type = F_UINT, .u = 3}), 20, ESGD_ERR_RANGE},
    {"full with count != dim", MSG_MODEL, SET("form", {.type = F_STR, .s = "full"}), 20, ESGD_ERR_RANGE},
    /* Status rules. */
    {"unknown state", MSG_STATUS, SET("state", {.type = F_STR, .s = "asleep"}), 0, ESGD_ERR_RANGE},
    {"missing state", MSG_STATUS, DEL("state"), 0, ESGD_ERR_MISSING},
    {"round > u32 status", MSG_STATUS, SET("round", {.type = F_UINT, .u = UINT64_MAX}), 0, ESGD_ERR_RANGE},
    /* Config rules: through the option setters, then job_config_validate. */
    {"missing option", MSG_CONFIG, DEL("batch"), 0, ESGD_ERR_MISSING},
    {"missing dim", MSG_CONFIG, DEL("dim"), 0, ESGD_ERR_MISSING},
    {"option out of range", MSG_CONFIG, SET("batch", {.type = F_UINT, .u = 0}), 0, ESGD_ERR_RANGE},
    {"negative option", MSG_CONFIG, SET("agents", {.type = F_NEG, .u = (uint64_t)-4}), 0, ESGD_ERR_RANGE},
    {"float option as str", MSG_CONFIG, SET("drop", {.type = F_STR, .s = "0.9"}), 0, ESGD_ERR_TYPE},
    {"float option as int", MSG_CONFIG, SET("lr", {.type = F_UINT, .u = 1}), 0, ESGD_ERR_TYPE},
    {"float option NaN", MSG_CONFIG, SET("lr", {.type = F_F64, .f = NAN}), 0, ESGD_ERR_NONFINITE},
    {"uint option as float", MSG_CONFIG, SET("agents", {.type = F_F64, .f = 4}), 0, ESGD_ERR_TYPE},
    {"unknown enum name", MSG_CONFIG, SET("method", {.type = F_STR, .s = "adam"}), 0, ESGD_ERR_RANGE},
    {"unbuildable model spec", MSG_CONFIG, SET("model", {.type = F_STR, .s = "resnet"}), 0, ESGD_ERR_ARG},
    {"model spec shape mismatch", MSG_CONFIG, SET("model", {.type = F_STR, .s = "dense 7"}), 0, ESGD_ERR_ARG},
    {"model spec with a control character", MSG_CONFIG, SET("model", {.type = F_STR, .s = "dense 10\n"}), 0,
     ESGD_ERR_RANGE},
    {"bad input shape", MSG_CONFIG, SET("input", {.type = F_STR, .s = "28by28"}), 0, ESGD_ERR_ARG},
    {"bad config job", MSG_CONFIG, SET("job", {.type = F_STR, .s = "a b"}), 0, ESGD_ERR_RANGE},
    {"config dim mismatch", MSG_CONFIG, SET("dim", {.type = F_UINT, .u = 101770}), 0, ESGD_ERR_DIMENSION},
    {"invalid combination", MSG_CONFIG, SET("agents", {.type = F_UINT, .u = 70000}), 0, ESGD_ERR_ARG},
};

static spec base_of(msg_kind kind)
{
    switch (kind) {
    case MSG_UPDATE: return base_update();
    case MSG_MODEL: return base_model();
    case MSG_STATUS: return base_status();
    case MSG_CONFIG: return base_config();
    }
    return base_update();
}

static void test_malformed_table(void **state)
{
    (void)state;
    codec_decoder *dec = codec_decoder_new(NULL);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 8192, NULL), ESGD_OK);
    esgd_error err;
    /* Every base message is valid as built. */
    for (int k = MSG_UPDATE; k <= MSG_CONFIG; k++) {
        spec s = base_of((msg_kind)k);
        spec_pack(&s, &buf);
        esgd_status st = decode_as(dec, (msg_kind)k, buf.data, buf.size, k <= MSG_MODEL ? 20 : 0, &err);
        if (st != ESGD_OK)
            fail_msg("base message %d: %s", k, err.message);
    }
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        spec s = base_of(c->kind);
        if (c->op == OP_SET)
            spec_set(&s, c->key, c->value);
        else if (c->op == OP_REMOVE)
            spec_remove(&s, c->key);
        else
            spec_duplicate(&s, c->key);
        spec_pack(&s, &buf);
        memset(&err, 0, sizeof err);
        esgd_status st = decode_as(dec, c->kind, buf.data, buf.size, c->expected_dim, &err);
        if (st != c->expected)
            fail_msg("case '%s': got %s (%s), expected %s", c->name, esgd_status_name(st), err.message,
                     esgd_status_name(c->expected));
        assert_true(err.message[0] != '\0');
    }
    buffer_destroy(&buf);
    codec_decoder_free(dec);
}

/* Cases that need more than one field changed or raw bytes. */
static void test_malformed_specials(void **state)
{
    (void)state;
    codec_decoder *dec = codec_decoder_new(NULL);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 8192, NULL), ESGD_OK);
    esgd_error err;
    spec s;

    /* Bitmap variants of the base update. */
    static const struct {
        const uint8_t *bitmap;
        size_t len;
        esgd_status expected;
    } bitmaps[] = {{bm_ok, 3, ESGD_OK},           {bm_four, 3, ESGD_ERR_FORMAT}, {bm_two, 3, ESGD_ERR_FORMAT},
                   {bm_high, 3, ESGD_ERR_RANGE},  {bm_long, 4, ESGD_ERR_FORMAT}, {bm_ok, 2, ESGD_ERR_FORMAT}};
    for (size_t i = 0; i < sizeof bitmaps / sizeof bitmaps[0]; i++) {
        s = base_update();
        spec_remove(&s, "rice_b");
        spec_set(&s, "idx_enc", fstr("bitmap"));
        spec_set(&s, "idx", fbin(bitmaps[i].bitmap, bitmaps[i].len));
        spec_pack(&s, &buf);
        assert_int_equal(decode_as(dec, MSG_UPDATE, buf.data, buf.size, 20, &err), bitmaps[i].expected);
    }
    s = base_update(); /* rice_b with a bitmap */
    spec_set(&s, "idx_enc", fstr("bitmap"));
    spec_set(&s, "idx", fbin(bm_ok, 3));
    spec_pack(&s, &buf);
    assert_int_equal(decode_as(dec, MSG_UPDATE, buf.data, buf.size, 20, &err), ESGD_ERR_FORMAT);

    /* "all": idx must be absent; f16 values. */
    s = base_update();
    spec_remove(&s, "rice_b");
    spec_remove(&s, "idx");
    spec_set(&s, "idx_enc", fstr("all"));
    spec_set(&s, "dim", fu(3));
    spec_set(&s, "val_fmt", fstr("f16"));
    spec_set(&s, "val", fbin(f16_ok, 6));
    spec_pack(&s, &buf);
    {
        uint32_t idx[3];
        float val[3];
        update_msg u = {.grad = {.capacity = 3, .indices = idx, .values = val}};
        assert_int_equal(codec_decode_update(dec, buf.data, buf.size, 3, &u, &err), ESGD_OK);
        assert_true(idx[0] == 0 && idx[2] == 2 && val[0] == 1.0f && val[1] == -2.0f && val[2] == 0.5f);
        /* count over the caller's capacity */
        u.grad.capacity = 2;
        assert_int_equal(codec_decode_update(dec, buf.data, buf.size, 3, &u, &err), ESGD_ERR_TOO_LARGE);
        assert_int_equal(u.grad.count, 0);
    }
    spec_set(&s, "val", fbin(f16_inf, 6));
    spec_pack(&s, &buf);
    assert_int_equal(decode_as(dec, MSG_UPDATE, buf.data, buf.size, 3, &err), ESGD_ERR_NONFINITE);
    spec_set(&s, "val", fbin(f16_nan, 6));
    spec_pack(&s, &buf);
    assert_int_equal(decode_as(dec, MSG_UPDATE, buf.data, buf.size, 3, &err), ESGD_ERR_NONFINITE);
    spec_set(&s, "val", fbin(f16_ok, 6));
    spec_set(&s, "idx", fbin(bm_ok, 1));
    spec_pack(&s, &buf);
    assert_int_equal(decode_as(dec, MSG_UPDATE, buf.data, buf.size, 3, &err), ESGD_ERR_FORMAT);

    /* Full model: valid, then with index fields or base_round != round. */
    s = base_model();
    spec_remove(&s, "idx_enc");
    spec_remove(&s, "idx");
    spec_remove(&s, "rice_b");
    spec_set(&s, "form", fstr("full"));
    spec_set(&s, "dim", fu(3));
    spec_set(&s, "base_round", fu(3));
    spec_pack(&s, &buf);
    assert_int_equal(decode_as(dec, MSG_MODEL, buf.data, buf.size, 3, &err), ESGD_OK);
    spec_set(&s, "base_round", fu(2));
    spec_pack(&s, &buf);
    assert_int_equal(decode_as(dec, MSG_MODEL, buf.data, buf.size, 3, &err), ESGD_ERR_RANGE);
    spec_set(&s, "base_round", fu(3));
    spec_set(&s, "idx_enc", fstr("all"));
    spec_pack(&s, &buf);
    assert_int_equal(decode_as(dec, MSG_MODEL, buf.data, buf.size, 3, &err), ESGD_ERR_FORMAT);
    /* Delta from round 0 has no base. */
    s = base_model();
    spec_set(&s, "round", fu(0));
    spec_set(&s, "base_round", fu(0));
    spec_pack(&s, &buf);
    assert_int_equal(decode_as(dec, MSG_MODEL, buf.data, buf.size, 20, &err), ESGD_ERR_RANGE);

    /* Raw bytes. */
    static const uint8_t array_msg[] = {0x91, 0x01};
    static const uint8_t int_msg[] = {0x05};
    static const uint8_t int_key[] = {0x81, 0x01, 0x02};
    static const uint8_t reserved[] = {0xc1};
    static const uint8_t garbage[] = {0xc1, 0x00, 0xff};
    static const uint8_t map_bomb[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t array_bomb[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
    static const uint8_t bin_bomb[] = {0x81, 0xa1, 'x', 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00};
    static const struct {
        const char *name;
        const uint8_t *data;
        size_t size;
        esgd_status expected;
    } raw[] = {
        {"empty", (const uint8_t *)"", 0, ESGD_ERR_FORMAT},
        {"null", NULL, 0, ESGD_ERR_FORMAT},
        {"array", array_msg, sizeof array_msg, ESGD_ERR_TYPE},
        {"integer", int_msg, sizeof int_msg, ESGD_ERR_TYPE},
        {"integer key", int_key, sizeof int_key, ESGD_ERR_FORMAT},
        {"reserved byte", reserved, sizeof reserved, ESGD_ERR_FORMAT},
        {"garbage", garbage, sizeof garbage, ESGD_ERR_FORMAT},
        {"map32 header only", map_bomb, sizeof map_bomb, ESGD_ERR_TRUNCATED},
        {"array32 header", array_bomb, sizeof array_bomb, ESGD_ERR_TRUNCATED},
        {"bin32 header", bin_bomb, sizeof bin_bomb, ESGD_ERR_TRUNCATED},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++)
        for (int k = MSG_UPDATE; k <= MSG_CONFIG; k++) {
            esgd_status st = decode_as(dec, (msg_kind)k, raw[i].data, raw[i].size, 20, &err);
            if (st != raw[i].expected)
                fail_msg("raw '%s' as %d: %s (%s)", raw[i].name, k, esgd_status_name(st), err.message);
        }

    /* Nesting deeper than msgpack-c's parser stack. */
    uint8_t deep[300];
    memset(deep, 0x91, sizeof deep - 1);
    deep[sizeof deep - 1] = 0x01;
    assert_int_equal(decode_as(dec, MSG_UPDATE, deep, sizeof deep, 20, &err), ESGD_ERR_FORMAT);

    /* A map with more keys than any message has. */
    s = base_status();
    char names[70][8];
    for (int i = 0; i < 60; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        spec_set(&s, names[i], fnil());
    }
    spec_pack(&s, &buf);
    assert_int_equal(decode_as(dec, MSG_STATUS, buf.data, buf.size, 0, &err), ESGD_ERR_FORMAT);

    /* Trailing bytes after a valid message. */
    s = base_status();
    spec_pack(&s, &buf);
    buf.data[buf.size++] = 0xc0;
    assert_int_equal(decode_as(dec, MSG_STATUS, buf.data, buf.size, 0, &err), ESGD_ERR_FORMAT);
    buffer_destroy(&buf);
    codec_decoder_free(dec);
}

/* Every strict prefix of a valid message fails: empty with FORMAT, the rest
 * with TRUNCATED. Run under ASan, reads past the prefix would be caught. */
static void test_truncated_at_every_offset(void **state)
{
    (void)state;
    codec_decoder *dec = codec_decoder_new(NULL);
    esgd_buffer buf;
    assert_int_equal(buffer_init(&buf, 8192, NULL), ESGD_OK);
    for (int k = MSG_UPDATE; k <= MSG_CONFIG; k++) {
        spec s = base_of((msg_kind)k);
        spec_pack(&s, &buf);
        for (size_t len = 0; len < buf.size; len++) {
            uint8_t *copy = malloc(len ? len : 1); /* exact size, for ASan */
            memcpy(copy, buf.data, len);
            esgd_error err;
            esgd_status st = decode_as(dec, (msg_kind)k, copy, len, 20, &err);
            esgd_status want = len == 0 ? ESGD_ERR_FORMAT : ESGD_ERR_TRUNCATED;
            if (st != want)
                fail_msg("kind %d prefix %zu of %zu: %s (%s)", k, len, buf.size, esgd_status_name(st), err.message);
            free(copy);
        }
    }
    buffer_destroy(&buf);
    codec_decoder_free(dec);
}

/* Random mutations of valid messages: whatever the bytes, decoding returns
 * a status, and a success carries a valid vector (decode_as checks). */
static void test_mutation_fuzz(void **state)
{
    (void)state;
    codec_decoder *dec = codec_decoder_new(NULL);
    esgd_rng rng;
    rng_seed(&rng, 2024, 1);
    esgd_buffer seeds[6];
    for (int i = 0; i < 6; i++)
        assert_int_equal(buffer_init(&seeds[i], 8192, NULL), ESGD_OK);
    /* Codec-encoded seeds: a rice and a bitmap update, a delta and a full model. */
    uint32_t idx[32];
    float val[32];
    vec_storage v = {idx, val, {.dim = 32, .capacity = 32, .indices = idx, .values = val}};
    random_vector(&v, 32, 5, 3);
    update_msg u = {.round = 2, .agent = 1, .samples = 3, .loss = 0.25f, .grad = v.v};
    strcpy(u.job, "fuzz");
    assert_int_equal(codec_encode_update(&seeds[0], &u, VALUE_FORMAT_F16, NULL), ESGD_OK);
    random_vector(&v, 32, 28, 4);
    u.grad = v.v;
    assert_int_equal(codec_encode_update(&seeds[1], &u, VALUE_FORMAT_F32, NULL), ESGD_OK);
    assert_string_equal(idx_enc_of(&seeds[1], NULL), "bitmap");
    random_vector(&v, 32, 6, 5);
    model_msg m = {.round = 5, .base_round = 4, .lr = 0.1f, .prev_loss = 1.5f, .loss_fell = 0, .form = MODEL_FORM_DELTA,
                   .params = v.v};
    strcpy(m.job, "fuzz");
    assert_int_equal(codec_encode_model(&seeds[2], &m, NULL), ESGD_OK);
    m.form = MODEL_FORM_FULL;
    m.base_round = 5;
    m.params.count = 32;
    assert_int_equal(codec_encode_model(&seeds[3], &m, NULL), ESGD_OK);
    spec s = base_status();
    spec_pack(&s, &seeds[4]);
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    assert_int_equal(codec_encode_config(&seeds[5], &cfg, NULL), ESGD_OK);

    uint8_t *work = malloc(8192);
    int accepted = 0, rejected = 0;
    for (int iter = 0; iter < 6000; iter++) {
        int which = (int)rng_below(&rng, 6);
        const esgd_buffer *seed = &seeds[which];
        size_t size = seed->size;
        memcpy(work, seed->data, size);
        int edits = 1 + (int)rng_below(&rng, 4);
        for (int e = 0; e < edits; e++) {
            size_t at = rng_below(&rng, (uint32_t)size);
            switch (rng_below(&rng, 5)) {
            case 0: work[at] ^= (uint8_t)(1u << rng_below(&rng, 8)); break;
            case 1: work[at] = (uint8_t)rng_below(&rng, 256); break;
            case 2: work[at] = (uint8_t)(work[at] + 1); break;
            case 3: size = at + 1; break; /* truncate */
            case 4:
                if (size < 8000) { /* insert a byte */
                    memmove(work + at + 1, work + at, size - at);
                    work[at] = (uint8_t)rng_below(&rng, 256);
                    size++;
                }
                break;
            }
        }
        /* An exact-size copy so ASan sees any read past the end. */
        uint8_t *exact = malloc(size);
        memcpy(exact, work, size);
        for (int k = MSG_UPDATE; k <= MSG_CONFIG; k++) {
            esgd_error err;
            esgd_status st = decode_as(dec, (msg_kind)k, exact, size, 0, &err);
            assert_true(st >= ESGD_OK && st < ESGD_STATUS_COUNT);
            if (st == ESGD_OK)
                accepted++;
            else
                rejected++;
        }
        free(exact);
    }
    print_message("fuzz: %d decodes accepted, %d rejected\n", accepted, rejected);
    assert_true(rejected > accepted);
    free(work);
    for (int i = 0; i < 6; i++)
        buffer_destroy(&seeds[i]);
    codec_decoder_free(dec);
}

/* Inputs libFuzzer found (tests/fuzz). msgpack-c gives an empty str a NULL
 * ptr; comparing or copying it was undefined behaviour (UBSan: "null pointer
 * passed as argument 1"), so these also guard the ASan/UBSan build. */
static void test_fuzz_regressions(void **state)
{
    (void)state;
    codec_decoder *dec = codec_decoder_new(NULL);
    esgd_error err;
    status_msg st;
    esgd_job_config cfg;
    /* fuzz_status crash: a map of six keys, several of them "". */
    static const uint8_t empty_keys[] = {0x86, 0xa0, 0x01, 0xa0, 0xa0, 0x8d, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0,
                                         0xa0, 0xa0, 0xa0, 0x41, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0,
                                         0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0xa0, 0x01, 0x00, 0xa0,
                                         0xa0, 0xa0, 0xa0};
    assert_int_equal(codec_decode_status(dec, empty_keys, sizeof empty_keys, &st, &err), ESGD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "duplicate key ''"));
    static const uint8_t two_empty[] = {0x82, 0xa0, 0x01, 0xa0, 0x02}; /* {"": 1, "": 2} */
    assert_int_equal(codec_decode_status(dec, two_empty, sizeof two_empty, &st, &err), ESGD_ERR_FORMAT);
    /* {"v": 2, "type": "config", "": 1}: an empty key among the options. */
    static const uint8_t config_empty_key[] = {0x83, 0xa1, 'v', CODEC_VERSION, 0xa4, 't', 'y', 'p', 'e', 0xa6,
                                               'c',  'o',  'n', 'f',  'i',  'g', 0xa0, 0x01};
    assert_int_equal(codec_decode_config(dec, config_empty_key, sizeof config_empty_key, &cfg, &err), ESGD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "unknown key ''"));
    codec_decoder_free(dec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_update_round_trips),
        cmocka_unit_test(test_model_round_trips),
        cmocka_unit_test(test_config_round_trips),
        cmocka_unit_test(test_status_round_trips),
        cmocka_unit_test(test_encoder_picks_the_smallest_coding),
        cmocka_unit_test(test_rice_near_the_bound),
        cmocka_unit_test(test_bounds_fit_the_worst_cases),
        cmocka_unit_test(test_encoder_rejects_bad_updates),
        cmocka_unit_test(test_f16_clamp),
        cmocka_unit_test(test_f16_conversion_table),
        cmocka_unit_test(test_f16_matches_compiler),
        cmocka_unit_test(test_f16_hardware_matches_portable),
        cmocka_unit_test(test_malformed_table),
        cmocka_unit_test(test_malformed_specials),
        cmocka_unit_test(test_truncated_at_every_offset),
        cmocka_unit_test(test_mutation_fuzz),
        cmocka_unit_test(test_fuzz_regressions),
    };
    return test_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
