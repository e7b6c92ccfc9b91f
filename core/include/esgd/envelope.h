/* Signed messages: every message on the broker is its msgpack body followed
 * by the 64-byte Ed25519 signature of the body (libsodium, detached). The
 * signer is fixed by the topic (the coordinator for config and models, agent
 * i for its updates and status), so the verifier picks the key from the
 * topic and checks the signature before decoding a byte of the body.
 *
 * Keys live in a folder, one file per key, named for their owner:
 * coordinator.key / coordinator.pub, agent-<id>.key / agent-<id>.pub. A .key
 * file holds one line "esgd-ed25519-secret <128 hex digits>" (libsodium's
 * seed + public key) and is private to its owner; a .pub file holds
 * "esgd-ed25519-public <64 hex digits>". esgd-keygen writes them.
 *
 *   signing_key me;  keys_load_secret(dir, "agent-3", &me, &err);
 *   codec_encode_update(&buf, ...);  envelope_sign(&buf, &me, &err);   // body || sig
 *   envelope_open(data, size, &coordinator_pub, &body_size, &err);     // then decode body
 */
#ifndef ESGD_ENVELOPE_H
#define ESGD_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "esgd/codec.h"
#include "esgd/error.h"

#define ENVELOPE_SIGNATURE_BYTES 64
#define KEY_NAME_MAX 32 /* "coordinator", "agent-4294967295" */

typedef struct signing_key {
    uint8_t secret[64]; /* libsodium's Ed25519 secret key: seed || public key */
} signing_key;

typedef struct verify_key {
    uint8_t bytes[32];
} verify_key;

/* Once per process before any other call (libsodium's sodium_init);
 * ESGD_ERR_ARG if the library cannot start. Safe to call again. */
esgd_status envelope_init(esgd_error *err);

/* Appends the signature of buf's current bytes (the body) to buf.
 * ESGD_ERR_TOO_LARGE if the buffer has no room for it. */
esgd_status envelope_sign(esgd_buffer *buf, const signing_key *key, esgd_error *err);

/* Checks that data is a body followed by a valid signature of it by key and
 * sets *body_size. ESGD_ERR_SIGNATURE for a message too short to hold a
 * signature or a signature that does not verify. */
esgd_status envelope_open(const uint8_t *data, size_t size, const verify_key *key, size_t *body_size,
                          esgd_error *err);

/* The owner names: "coordinator" and "agent-<id>". */
void keys_agent_name(char name[KEY_NAME_MAX], uint32_t agent);

/* DIR/NAME.key and DIR/NAME.pub. ESGD_ERR_IO when missing or unreadable,
 * ESGD_ERR_FORMAT when not a key file of the right kind. The secret file
 * must not be readable by group or others (ESGD_ERR_ARG otherwise). */
esgd_status keys_load_secret(const char *dir, const char *name, signing_key *key, esgd_error *err);
esgd_status keys_load_public(const char *dir, const char *name, verify_key *key, esgd_error *err);

/* A new random key pair written as DIR/NAME.key (mode 0600) and
 * DIR/NAME.pub; refuses to overwrite an existing .key (ESGD_ERR_IO). */
esgd_status keys_generate(const char *dir, const char *name, esgd_error *err);

/* A key pair derived from (seed, name): for the in-process simulator, whose
 * runs must repeat exactly. Never for a deployment. */
void keys_derive(uint64_t seed, const char *name, signing_key *secret, verify_key *public_key);

#endif
