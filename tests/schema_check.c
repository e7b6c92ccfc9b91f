/* schema_check: runs the C decoder (core/src/codec.c) for one message type on
 * encoded messages, for tests/schema_examples.py, which holds the examples of
 * schemas/messages.md against it and against schemas/decode.py.
 *
 * usage: schema_check [--expected-dim N] update|model|config|status FILE...
 * One line per FILE on stdout:
 *   FILE: accepted                    and the C encoder writes the same bytes
 *   FILE: accepted noncanonical: ...  valid, but the C encoder writes others
 *   FILE: rejected STATUS: REASON     STATUS as in messages.md section 10
 * Exit status: 0 when every file was read (whatever the verdicts), 2 on bad
 * usage or a file that cannot be read. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/codec.h"

/* Room for the decoded vectors: a larger count (or, without --expected-dim, a
 * larger dim) is rejected as too_large. The examples are far smaller. */
#define CAPACITY (1u << 20)

typedef struct checker {
    const char *type;
    uint32_t expected_dim;
    codec_decoder *decoder;
    update_msg update;
    model_msg model;
    esgd_buffer out; /* the C encoder's bytes for the decoded message */
} checker;

static int read_file(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "schema_check: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int failed = ferror(f) || !buf;
    fclose(f);
    if (failed) {
        fprintf(stderr, "schema_check: cannot read %s%s\n", path, buf ? "" : ": out of memory");
        free(buf);
        return -1;
    }
    *data = buf;
    *size = n;
    return 0;
}

/* The decoder for c->type. */
static esgd_status decode(checker *c, const uint8_t *data, size_t size, esgd_job_config *cfg, status_msg *status,
                          esgd_error *err)
{
    if (strcmp(c->type, "update") == 0)
        return codec_decode_update(c->decoder, data, size, c->expected_dim, &c->update, err);
    if (strcmp(c->type, "model") == 0)
        return codec_decode_model(c->decoder, data, size, c->expected_dim, &c->model, err);
    if (strcmp(c->type, "config") == 0)
        return codec_decode_config(c->decoder, data, size, cfg, err);
    return codec_decode_status(c->decoder, data, size, status, err);
}

/* The C encoder's bytes for what decode() produced, into c->out. An update
 * does not record its value format: f16 is tried when f32 gives other bytes. */
static esgd_status encode(checker *c, const uint8_t *data, size_t size, const esgd_job_config *cfg,
                          const status_msg *status, esgd_error *err)
{
    if (strcmp(c->type, "update") == 0) {
        esgd_status st = codec_encode_update(&c->out, &c->update, VALUE_FORMAT_F32, err);
        if (st == ESGD_OK && c->out.size == size && memcmp(c->out.data, data, size) == 0)
            return st;
        return codec_encode_update(&c->out, &c->update, VALUE_FORMAT_F16, err);
    }
    if (strcmp(c->type, "model") == 0)
        return codec_encode_model(&c->out, &c->model, err);
    if (strcmp(c->type, "config") == 0)
        return codec_encode_config(&c->out, cfg, err);
    return codec_encode_status(&c->out, status, err);
}

static void check(checker *c, const char *path, const uint8_t *data, size_t size)
{
    esgd_error err = {0};
    esgd_job_config cfg;
    status_msg status;
    esgd_status st = decode(c, data, size, &cfg, &status, &err);
    if (st != ESGD_OK) {
        printf("%s: rejected %s: %s\n", path, esgd_status_name(st), err.message);
        return;
    }
    if (encode(c, data, size, &cfg, &status, &err) != ESGD_OK) {
        printf("%s: accepted noncanonical: the C encoder refuses the decoded message: %s\n", path, err.message);
        return;
    }
    if (c->out.size == size && memcmp(c->out.data, data, size) == 0) {
        printf("%s: accepted\n", path);
        return;
    }
    size_t at = 0;
    while (at < size && at < c->out.size && c->out.data[at] == data[at])
        at++;
    printf("%s: accepted noncanonical: the C encoder writes %zu bytes, not %zu, differing from offset %zu\n", path,
           c->out.size, size, at);
}

int main(int argc, char **argv)
{
    checker c = {0};
    int arg = 1;
    if (arg + 1 < argc && strcmp(argv[arg], "--expected-dim") == 0) {
        char *end = NULL;
        errno = 0;
        unsigned long long d = strtoull(argv[arg + 1], &end, 10);
        if (errno || *end || argv[arg + 1][0] == '-' || d > UINT32_MAX) {
            fprintf(stderr, "schema_check: --expected-dim needs an integer in 0..%u, got '%s'\n", UINT32_MAX,
                    argv[arg + 1]);
            return 2;
        }
        c.expected_dim = (uint32_t)d;
        arg += 2;
    }
    static const char *const types[] = {"update", "model", "config", "status"};
    for (int i = 0; arg < argc && i < 4; i++)
        if (strcmp(argv[arg], types[i]) == 0)
            c.type = types[i];
    if (!c.type || arg + 1 >= argc) {
        fprintf(stderr, "usage: schema_check [--expected-dim N] update|model|config|status FILE...\n");
        return 2;
    }
    esgd_error err = {0};
    uint32_t capacity = CAPACITY;
    uint32_t *indices[2] = {malloc(capacity * sizeof(uint32_t)), malloc(capacity * sizeof(uint32_t))};
    float *values[2] = {malloc(capacity * sizeof(float)), malloc(capacity * sizeof(float))};
    c.update.grad = (sparse_vector){.capacity = capacity, .indices = indices[0], .values = values[0]};
    c.model.params = (sparse_vector){.capacity = capacity, .indices = indices[1], .values = values[1]};
    c.decoder = codec_decoder_new(&err);
    int rc = 0;
    if (!indices[0] || !indices[1] || !values[0] || !values[1] || !c.decoder ||
        buffer_init(&c.out, codec_model_bound(capacity) + CODEC_CONFIG_BOUND, &err) != ESGD_OK) {
        fprintf(stderr, "schema_check: setting up for %u parameters: out of memory\n", capacity);
        rc = 2;
    }
    for (arg++; rc == 0 && arg < argc; arg++) {
        uint8_t *data = NULL;
        size_t size = 0;
        if (read_file(argv[arg], &data, &size) != 0) {
            rc = 2;
            break;
        }
        check(&c, argv[arg], data, size);
        free(data);
    }
    buffer_destroy(&c.out);
    codec_decoder_free(c.decoder);
    for (int i = 0; i < 2; i++) {
        free(indices[i]);
        free(values[i]);
    }
    return rc;
}
