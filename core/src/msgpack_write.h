/* Packing a message, internal to core/src: a writer over a caller-owned
 * esgd_buffer (codec.h) that writes one flat msgpack map, key by key, and
 * remembers instead of failing when a write does not fit, so an encoder
 * makes all its writes and checks once at the end:
 *
 *   mp_writer w;
 *   mp_writer_start(&w, buf, 3);          map of 3 keys
 *   mp_put_uint(&w, "v", CODEC_VERSION);
 *   mp_put_str(&w, "type", "status");
 *   uint8_t *p = mp_put_bin(&w, "val", n); fill p[0..n) unless NULL
 *   return mp_writer_finish(&w, "status", err);
 *
 * Every put writes its key then its value; nothing is allocated. */
#ifndef ESGD_MSGPACK_WRITE_H
#define ESGD_MSGPACK_WRITE_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/codec.h"
#include "esgd/error.h"

typedef struct mp_writer {
    msgpack_packer pk;
    esgd_buffer *buf;
    bool full; /* some write did not fit */
} mp_writer;

/* Empties buf and writes the header of a map of `keys` pairs. */
void mp_writer_start(mp_writer *w, esgd_buffer *buf, size_t keys);

void mp_put_uint(mp_writer *w, const char *key, uint64_t value);    /* smallest uint form */
void mp_put_u32_fixed(mp_writer *w, const char *key, uint32_t value); /* always uint32, 5 bytes */
void mp_put_f32(mp_writer *w, const char *key, float value);        /* float 32 */
void mp_put_f64(mp_writer *w, const char *key, double value);       /* float 64 */
void mp_put_bool(mp_writer *w, const char *key, bool value);
void mp_put_nil(mp_writer *w, const char *key);
void mp_put_str(mp_writer *w, const char *key, const char *value);

/* The header of a bin of len bytes, then room for its body: the caller
 * fills the len bytes returned, or gets NULL when they do not fit. */
uint8_t *mp_put_bin(mp_writer *w, const char *key, size_t len);

/* ESGD_OK, or ESGD_ERR_TOO_LARGE ("<what> message does not fit in N
 * bytes") with the buffer emptied when any write did not fit. */
esgd_status mp_writer_finish(mp_writer *w, const char *what, esgd_error *err);

#endif
