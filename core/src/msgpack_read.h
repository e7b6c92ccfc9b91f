/* Reading a received message, internal to core/src: a structural scan
 * that makes msgpack-c safe on hostile bytes, then typed getters over the
 * flat map it unpacks, each reporting a missing key, a wrong type or an
 * out-of-range value with the key's name:
 *
 *   msgpack_object root;
 *   st = mp_parse(&zone, data, size, &root, err);
 *   st = mp_check_map(&root, MP_MAX_KEYS, err);   map, str keys, no duplicates
 *   st = mp_check_keys(&root, known_keys, err);   nothing unknown
 *   st = mp_get_u32(&root, "round", &round, err);
 *
 * Objects point into the zone (and strings and bins into the input bytes):
 * valid until the zone is cleared by the next mp_parse. Nothing here knows
 * which keys a message has; codec.c does. */
#ifndef ESGD_MSGPACK_READ_H
#define ESGD_MSGPACK_READ_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/error.h"

/* No message has more keys than this; bigger maps are rejected before the
 * quadratic duplicate-key check can be made expensive by a hostile sender. */
#define MP_MAX_KEYS 64

/* Checks that exactly one well-formed msgpack object fills data[0..size)
 * (see scan() in msgpack_read.c), then unpacks it into zone, cleared first.
 * Errors: ESGD_ERR_ARG (data NULL), ESGD_ERR_FORMAT (not msgpack, trailing
 * bytes, nested too deeply), ESGD_ERR_TRUNCATED, ESGD_ERR_NOMEM. */
esgd_status mp_parse(msgpack_zone *zone, const uint8_t *data, size_t size, msgpack_object *root, esgd_error *err);

/* The root is a map of at most max_keys pairs whose keys are distinct
 * strings. Errors: ESGD_ERR_TYPE (not a map), ESGD_ERR_FORMAT. */
esgd_status mp_check_map(const msgpack_object *root, uint32_t max_keys, esgd_error *err);

/* Every key of the map is one of names (NULL-terminated), else
 * ESGD_ERR_FORMAT "unknown key '...'". */
esgd_status mp_check_keys(const msgpack_object *map, const char *const *names, esgd_error *err);

/* Whether the str object key (or any str) holds exactly name. */
bool mp_key_is(const msgpack_object *key, const char *name);

/* The value of key name in map (a map whose keys are strings), or NULL. */
const msgpack_object *mp_find(const msgpack_object *map, const char *name);

/* Up to 40 bytes of a received string for an error message, with anything
 * unprintable replaced by '?' so hostile bytes cannot forge log lines. */
typedef struct mp_quoted {
    char text[41];
} mp_quoted;
mp_quoted mp_quote(const msgpack_object *str);

/* The getters: ESGD_ERR_MISSING "missing field KEY" when key is absent,
 * ESGD_ERR_TYPE on a wrong type, ESGD_ERR_RANGE out of range; *out is
 * written only on success unless said otherwise. */

/* An unsigned integer <= max (a negative integer is RANGE). */
esgd_status mp_get_uint(const msgpack_object *map, const char *key, uint64_t max, uint64_t *out, esgd_error *err);
/* mp_get_uint up to UINT32_MAX; *out is written (0) on failure too. */
esgd_status mp_get_u32(const msgpack_object *map, const char *key, uint32_t *out, esgd_error *err);
/* A finite (as float32, else ESGD_ERR_NONFINITE), non-negative float32 or
 * float64. With nil_ok, nil is accepted and gives NaN. */
esgd_status mp_get_float(const msgpack_object *map, const char *key, bool nil_ok, float *out, esgd_error *err);
/* A bool as 1 or 0, or with nil_ok nil as -1. */
esgd_status mp_get_bool(const msgpack_object *map, const char *key, bool nil_ok, int *out, esgd_error *err);
/* A str that is one of names (NULL-terminated): *out is its position. */
esgd_status mp_get_enum(const msgpack_object *map, const char *key, const char *const *names, int *out,
                        esgd_error *err);
/* A bin: *data points into the received bytes. */
esgd_status mp_get_bin(const msgpack_object *map, const char *key, const uint8_t **data, size_t *size,
                       esgd_error *err);

#endif
