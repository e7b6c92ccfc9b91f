/* Ed25519 signatures around every wire message (libsodium), and the key
 * files that hold the keys. See envelope.h for the layout. */
#include "esgd/envelope.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(crypto_sign_BYTES == ENVELOPE_SIGNATURE_BYTES, "Ed25519 signature size");
_Static_assert(crypto_sign_SECRETKEYBYTES == sizeof(((signing_key *)0)->secret), "Ed25519 secret key size");
_Static_assert(crypto_sign_PUBLICKEYBYTES == sizeof(((verify_key *)0)->bytes), "Ed25519 public key size");

static const char SECRET_TAG[] = "esgd-ed25519-secret ";
static const char PUBLIC_TAG[] = "esgd-ed25519-public ";

esgd_status envelope_init(esgd_error *err)
{
    if (sodium_init() < 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "libsodium cannot start");
    return ESGD_OK;
}

esgd_status envelope_sign(esgd_buffer *buf, const signing_key *key, esgd_error *err)
{
    if (buf->capacity - buf->size < ENVELOPE_SIGNATURE_BYTES)
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "no room for the signature after a %zu-byte message",
                              buf->size);
    crypto_sign_detached(buf->data + buf->size, NULL, buf->data, buf->size, key->secret);
    buf->size += ENVELOPE_SIGNATURE_BYTES;
    return ESGD_OK;
}

esgd_status envelope_open(const uint8_t *data, size_t size, const verify_key *key, size_t *body_size,
                          esgd_error *err)
{
    if (size <= ENVELOPE_SIGNATURE_BYTES)
        return esgd_error_set(err, ESGD_ERR_SIGNATURE, "%zu bytes: too short to hold a message and its signature",
                              size);
    size_t body = size - ENVELOPE_SIGNATURE_BYTES;
    if (crypto_sign_verify_detached(data + body, data, body, key->bytes) != 0)
        return esgd_error_set(err, ESGD_ERR_SIGNATURE, "the signature does not verify");
    *body_size = body;
    return ESGD_OK;
}

void keys_agent_name(char name[KEY_NAME_MAX], uint32_t agent)
{
    snprintf(name, KEY_NAME_MAX, "agent-%u", agent);
}

/* Reads DIR/NAME.EXT into line (NUL-terminated, trailing newline removed). */
static esgd_status read_key_file(const char *dir, const char *name, const char *ext, bool secret, char *line,
                                 size_t capacity, esgd_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return esgd_error_set(err, ESGD_ERR_IO, "key file %s: %s", path, strerror(errno));
    struct stat info;
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
        close(fd);
        return esgd_error_set(err, ESGD_ERR_IO, "key file %s is not a regular file", path);
    }
    if (secret && (info.st_mode & 077)) {
        close(fd);
        return esgd_error_set(err, ESGD_ERR_ARG, "secret key file %s is readable by others (mode %03o); chmod 600 it",
                              path, (unsigned)(info.st_mode & 0777));
    }
    ssize_t got = read(fd, line, capacity - 1);
    close(fd);
    if (got < 0)
        return esgd_error_set(err, ESGD_ERR_IO, "key file %s: %s", path, strerror(errno));
    line[got] = '\0';
    if (got > 0 && line[got - 1] == '\n')
        line[got - 1] = '\0';
    return ESGD_OK;
}

/* "TAG <hex of out_size bytes>" into out. */
static esgd_status parse_key(const char *line, const char *tag, uint8_t *out, size_t out_size, const char *what,
                             esgd_error *err)
{
    size_t tag_size = strlen(tag), hex_size = strlen(line) - (strlen(line) >= tag_size ? tag_size : 0);
    size_t decoded = 0;
    if (strncmp(line, tag, tag_size) != 0 || hex_size != 2 * out_size ||
        sodium_hex2bin(out, out_size, line + tag_size, hex_size, NULL, &decoded, NULL) != 0 || decoded != out_size)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "%s is not a line '%s<%zu hex digits>'", what, tag,
                              2 * out_size);
    return ESGD_OK;
}

esgd_status keys_load_secret(const char *dir, const char *name, signing_key *key, esgd_error *err)
{
    char line[256], what[4200];
    esgd_status st = read_key_file(dir, name, "key", true, line, sizeof line, err);
    snprintf(what, sizeof what, "key file %s/%s.key", dir, name);
    if (st == ESGD_OK)
        st = parse_key(line, SECRET_TAG, key->secret, sizeof key->secret, what, err);
    /* The public half stored in the file must be the one its seed makes. */
    uint8_t public_key[crypto_sign_PUBLICKEYBYTES], secret[crypto_sign_SECRETKEYBYTES];
    if (st == ESGD_OK && (crypto_sign_seed_keypair(public_key, secret, key->secret) != 0 ||
                          sodium_memcmp(secret, key->secret, sizeof secret) != 0))
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "%s: its public half does not match its seed", what);
    sodium_memzero(line, sizeof line);
    sodium_memzero(secret, sizeof secret);
    return st;
}

esgd_status keys_load_public(const char *dir, const char *name, verify_key *key, esgd_error *err)
{
    char line[256], what[4200];
    esgd_status st = read_key_file(dir, name, "pub", false, line, sizeof line, err);
    snprintf(what, sizeof what, "key file %s/%s.pub", dir, name);
    return st == ESGD_OK ? parse_key(line, PUBLIC_TAG, key->bytes, sizeof key->bytes, what, err) : st;
}

/* Writes "TAG hex\n" to path with O_EXCL (exclusive) or O_TRUNC. */
static esgd_status write_key_file(const char *path, const char *tag, const uint8_t *bytes, size_t size, bool exclusive,
                                  mode_t mode, esgd_error *err)
{
    char hex[2 * crypto_sign_SECRETKEYBYTES + 1];
    sodium_bin2hex(hex, sizeof hex, bytes, size);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC), mode);
    if (fd < 0)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    char line[sizeof hex + 64];
    int n = snprintf(line, sizeof line, "%s%s\n", tag, hex);
    bool ok = write(fd, line, (size_t)n) == n && fsync(fd) == 0;
    int saved = errno;
    ok = close(fd) == 0 && ok;
    sodium_memzero(hex, sizeof hex);
    sodium_memzero(line, sizeof line);
    if (!ok)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot write %s: %s", path, strerror(saved));
    return ESGD_OK;
}

esgd_status keys_generate(const char *dir, const char *name, esgd_error *err)
{
    uint8_t public_key[crypto_sign_PUBLICKEYBYTES], secret[crypto_sign_SECRETKEYBYTES];
    char path[4096];
    crypto_sign_keypair(public_key, secret);
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    esgd_status st = write_key_file(path, SECRET_TAG, secret, sizeof secret, true, 0600, err);
    sodium_memzero(secret, sizeof secret);
    if (st != ESGD_OK)
        return st;
    snprintf(path, sizeof path, "%s/%s.pub", dir, name);
    return write_key_file(path, PUBLIC_TAG, public_key, sizeof public_key, false, 0644, err);
}

void keys_derive(uint64_t seed, const char *name, signing_key *secret, verify_key *public_key)
{
    uint8_t material[8 + KEY_NAME_MAX] = {0}, key_seed[crypto_sign_SEEDBYTES];
    for (int i = 0; i < 8; i++)
        material[i] = (uint8_t)(seed >> (8 * i));
    snprintf((char *)material + 8, KEY_NAME_MAX, "%s", name);
    crypto_generichash(key_seed, sizeof key_seed, material, sizeof material, NULL, 0);
    crypto_sign_seed_keypair(public_key->bytes, secret->secret, key_seed);
}
