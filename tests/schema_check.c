/* schema_check: runs the C decoder (core/src/codec.c) for one message type on
 * encoded messages, for tests/schema_examples.py, which holds the examples of
 * schemas/messages.md against it and against schemas/decode.py.
 *
 * usage: schema_check [--expected-dim N] [--signed SEED NAME [--public-key HEX]]
 *                     update|model|config|status|lease FILE...
 *        schema_check --print-public SEED NAME
 * Each FILE is a bare body, or with --signed a whole broker message (body ||
 * Ed25519 signature, core/src/envelope.c) signed by the test key pair
 * keys_derive(SEED, NAME): envelope_open checks it with the public key HEX
 * (64 hex digits, as printed in messages.md; default the pair's public
 * half) before the body is decoded, and the pair's secret half signs the
 * re-encoded body. One line per FILE on stdout:
 *   FILE: accepted                    and the C encoder (and signer) write the same bytes
 *   FILE: accepted noncanonical: ...  valid, but the C encoder writes others
 *   FILE: rejected STATUS: REASON     STATUS as in messages.md section 10
 * --print-public prints that key pair's .pub line ("esgd-ed25519-public <hex>").
 * Exit status: 0 when every file was read (whatever the verdicts), 2 on bad
 * usage or a file that cannot be read. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "esgd/codec.h"
#include "esgd/envelope.h"

/* Room for the decoded vectors: a larger count (or, without --expected-dim, a
 * larger dim) is rejected as too_large. The examples are far smaller. */
#define CAPACITY (1u << 20)

typedef struct checker {
    const char *type;
    uint32_t expected_dim;
    codec_decoder *decoder;
    update_msg update;
    model_msg model;
    lease_msg lease;
    esgd_buffer out; /* the C encoder's bytes for the decoded message */
    bool signed_messages;
    signing_key secret; /* --signed: keys_derive(SEED, NAME) */
    verify_key public_key;
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
    if (strcmp(c->type, "lease") == 0)
        return codec_decode_lease(c->decoder, data, size, &c->lease, err);
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
    if (strcmp(c->type, "lease") == 0)
        return codec_encode_lease(&c->out, &c->lease, err);
    return codec_encode_status(&c->out, status, err);
}

static void check(checker *c, const char *path, const uint8_t *data, size_t size)
{
    esgd_error err = {0};
    esgd_job_config cfg;
    status_msg status;
    size_t body = size;
    esgd_status st = ESGD_OK;
    if (c->signed_messages) /* the signature first: nothing of the body is read before it verifies */
        st = envelope_open(data, size, &c->public_key, &body, &err);
    if (st == ESGD_OK)
        st = decode(c, data, body, &cfg, &status, &err);
    if (st != ESGD_OK) {
        printf("%s: rejected %s: %s\n", path, esgd_status_name(st), err.message);
        return;
    }
    if (encode(c, data, body, &cfg, &status, &err) != ESGD_OK ||
        (c->signed_messages && envelope_sign(&c->out, &c->secret, &err) != ESGD_OK)) {
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

/* SEED (decimal uint64) and NAME of a test key pair, into c. */
static int derive_keys(checker *c, const char *seed_text, const char *name)
{
    char *end = NULL;
    errno = 0;
    unsigned long long seed = strtoull(seed_text, &end, 10);
    if (errno || *end || !*seed_text || seed_text[0] == '-' || !*name || strlen(name) >= KEY_NAME_MAX) {
        fprintf(stderr, "schema_check: a key needs SEED (0..2^64-1) and NAME (1..%d bytes), got '%s' '%s'\n",
                KEY_NAME_MAX - 1, seed_text, name);
        return -1;
    }
    esgd_error err = {0};
    if (envelope_init(&err) != ESGD_OK) {
        fprintf(stderr, "schema_check: %s\n", err.message);
        return -1;
    }
    keys_derive((uint64_t)seed, name, &c->secret, &c->public_key);
    return 0;
}

int main(int argc, char **argv)
{
    checker c = {0};
    int arg = 1;
    if (argc == 4 && strcmp(argv[1], "--print-public") == 0) {
        if (derive_keys(&c, argv[2], argv[3]) != 0)
            return 2;
        printf("esgd-ed25519-public ");
        for (size_t i = 0; i < sizeof c.public_key.bytes; i++)
            printf("%02x", c.public_key.bytes[i]);
        printf("\n");
        return 0;
    }
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
    if (arg + 2 < argc && strcmp(argv[arg], "--signed") == 0) {
        if (derive_keys(&c, argv[arg + 1], argv[arg + 2]) != 0)
            return 2;
        c.signed_messages = true;
        arg += 3;
        if (arg + 1 < argc && strcmp(argv[arg], "--public-key") == 0) {
            const char *hex = argv[arg + 1];
            size_t n = 0;
            if (strlen(hex) != 2 * sizeof c.public_key.bytes ||
                sodium_hex2bin(c.public_key.bytes, sizeof c.public_key.bytes, hex, strlen(hex), NULL, &n, NULL) != 0 ||
                n != sizeof c.public_key.bytes) {
                fprintf(stderr, "schema_check: --public-key needs 64 hex digits, got '%s'\n", hex);
                return 2;
            }
            arg += 2;
        }
    }
    static const char *const types[] = {"update", "model", "config", "status", "lease"};
    for (int i = 0; arg < argc && i < 5; i++)
        if (strcmp(argv[arg], types[i]) == 0)
            c.type = types[i];
    if (!c.type || arg + 1 >= argc) {
        fprintf(stderr, "usage: schema_check [--expected-dim N] [--signed SEED NAME [--public-key HEX]] "
                        "update|model|config|status|lease FILE...\n"
                        "       schema_check --print-public SEED NAME\n");
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
        buffer_init(&c.out, codec_model_bound(capacity) + CODEC_CONFIG_BOUND + ENVELOPE_SIGNATURE_BYTES, &err) !=
            ESGD_OK) {
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
