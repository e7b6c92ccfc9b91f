/* The message buffer (buffer_init/destroy, public in codec.h) and the
 * msgpack writer over it (msgpack_write.h): msgpack-c's packer with this
 * buffer as its sink, and one put per key/value pair. */
#include "msgpack_write.h"

#include <stdlib.h>
#include <string.h>

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

/* msgpack-c's write callback. */
static int buffer_write(void *data, const char *bytes, size_t len)
{
    uint8_t *p = buffer_reserve(data, len);
    if (!p)
        return -1;
    memcpy(p, bytes, len);
    return 0;
}

void mp_writer_start(mp_writer *w, esgd_buffer *buf, size_t keys)
{
    buf->size = 0;
    w->buf = buf;
    w->full = false;
    msgpack_packer_init(&w->pk, buf, buffer_write);
    w->full |= msgpack_pack_map(&w->pk, keys) != 0;
}

static void put_key(mp_writer *w, const char *key)
{
    w->full |= msgpack_pack_str_with_body(&w->pk, key, strlen(key)) != 0;
}

void mp_put_uint(mp_writer *w, const char *key, uint64_t value)
{
    put_key(w, key);
    w->full |= msgpack_pack_uint64(&w->pk, value) != 0;
}

void mp_put_u32_fixed(mp_writer *w, const char *key, uint32_t value)
{
    put_key(w, key);
    w->full |= msgpack_pack_fix_uint32(&w->pk, value) != 0;
}

void mp_put_f32(mp_writer *w, const char *key, float value)
{
    put_key(w, key);
    w->full |= msgpack_pack_float(&w->pk, value) != 0;
}

void mp_put_f64(mp_writer *w, const char *key, double value)
{
    put_key(w, key);
    w->full |= msgpack_pack_double(&w->pk, value) != 0;
}

void mp_put_bool(mp_writer *w, const char *key, bool value)
{
    put_key(w, key);
    w->full |= (value ? msgpack_pack_true(&w->pk) : msgpack_pack_false(&w->pk)) != 0;
}

void mp_put_nil(mp_writer *w, const char *key)
{
    put_key(w, key);
    w->full |= msgpack_pack_nil(&w->pk) != 0;
}

void mp_put_str(mp_writer *w, const char *key, const char *value)
{
    put_key(w, key);
    w->full |= msgpack_pack_str_with_body(&w->pk, value, strlen(value)) != 0;
}

uint8_t *mp_put_bin(mp_writer *w, const char *key, size_t len)
{
    put_key(w, key);
    w->full |= msgpack_pack_bin(&w->pk, len) != 0;
    if (w->full)
        return NULL;
    uint8_t *p = buffer_reserve(w->buf, len);
    w->full |= p == NULL;
    return p;
}

esgd_status mp_writer_finish(mp_writer *w, const char *what, esgd_error *err)
{
    if (!w->full)
        return ESGD_OK;
    size_t capacity = w->buf->capacity;
    w->buf->size = 0;
    return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "%s message does not fit in %zu bytes", what, capacity);
}
