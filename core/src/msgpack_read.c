/* The msgpack side of decoding (msgpack_read.h): a structural scan that
 * bounds what msgpack-c will allocate, the unpack into a reusable zone, the
 * checks every message map passes (shape, keys) and typed getters that
 * check type and range before a value is used. */
#include "msgpack_read.h"

#include <math.h>
#include <string.h>

/* Messages are flat maps; deeper nesting is malformed long before
 * msgpack-c's own parser stack (32) would give up with a misleading NOMEM. */
#define SCAN_MAX_DEPTH 16

/* ---------------------------------------------------------------- parsing */

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
static esgd_status scan(const uint8_t *p, size_t size, esgd_error *err)
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

esgd_status mp_parse(msgpack_zone *zone, const uint8_t *data, size_t size, msgpack_object *root, esgd_error *err)
{
    if (!data && size > 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "no data");
    esgd_status st = scan(data, size, err);
    if (st != ESGD_OK)
        return st;
    msgpack_zone_clear(zone);
    size_t off = 0;
    switch (msgpack_unpack((const char *)data, size, &off, zone, root)) {
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

/* ------------------------------------------------------------- the map */

bool mp_key_is(const msgpack_object *key, const char *name)
{
    size_t len = strlen(name);
    return key->via.str.size == len && memcmp(key->via.str.ptr, name, len) == 0;
}

const msgpack_object *mp_find(const msgpack_object *map, const char *name)
{
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (mp_key_is(&map->via.map.ptr[i].key, name))
            return &map->via.map.ptr[i].val;
    return NULL;
}

mp_quoted mp_quote(const msgpack_object *str)
{
    mp_quoted q;
    size_t n = str->via.str.size < 40 ? str->via.str.size : 40;
    for (size_t i = 0; i < n; i++) {
        char c = str->via.str.ptr[i];
        q.text[i] = c >= 0x20 && c < 0x7f ? c : '?';
    }
    q.text[n] = '\0';
    return q;
}

esgd_status mp_check_map(const msgpack_object *root, uint32_t max_keys, esgd_error *err)
{
    if (root->type != MSGPACK_OBJECT_MAP)
        return esgd_error_set(err, ESGD_ERR_TYPE, "message is not a msgpack map");
    uint32_t n = root->via.map.size;
    if (n > max_keys)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "map has %u keys, at most %u allowed", n, max_keys);
    const msgpack_object_kv *kv = root->via.map.ptr;
    for (uint32_t i = 0; i < n; i++) {
        if (kv[i].key.type != MSGPACK_OBJECT_STR)
            return esgd_error_set(err, ESGD_ERR_FORMAT, "map key %u is not a string", i);
        for (uint32_t j = 0; j < i; j++)
            /* msgpack-c gives an empty str a NULL ptr, which memcmp must not get. */
            if (kv[j].key.via.str.size == kv[i].key.via.str.size &&
                (kv[i].key.via.str.size == 0 ||
                 memcmp(kv[j].key.via.str.ptr, kv[i].key.via.str.ptr, kv[i].key.via.str.size) == 0))
                return esgd_error_set(err, ESGD_ERR_FORMAT, "duplicate key '%s'", mp_quote(&kv[i].key).text);
    }
    return ESGD_OK;
}

esgd_status mp_check_keys(const msgpack_object *map, const char *const *names, esgd_error *err)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *key = &map->via.map.ptr[i].key;
        bool known = false;
        for (const char *const *n = names; *n && !known; n++)
            known = mp_key_is(key, *n);
        if (!known)
            return esgd_error_set(err, ESGD_ERR_FORMAT, "unknown key '%s'", mp_quote(key).text);
    }
    return ESGD_OK;
}

/* ------------------------------------------------------------- getters */

esgd_status mp_get_uint(const msgpack_object *map, const char *key, uint64_t max, uint64_t *out, esgd_error *err)
{
    const msgpack_object *o = mp_find(map, key);
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

esgd_status mp_get_u32(const msgpack_object *map, const char *key, uint32_t *out, esgd_error *err)
{
    uint64_t v = 0;
    esgd_status st = mp_get_uint(map, key, UINT32_MAX, &v, err);
    *out = (uint32_t)v;
    return st;
}

esgd_status mp_get_float(const msgpack_object *map, const char *key, bool nil_ok, float *out, esgd_error *err)
{
    const msgpack_object *o = mp_find(map, key);
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

esgd_status mp_get_bool(const msgpack_object *map, const char *key, bool nil_ok, int *out, esgd_error *err)
{
    const msgpack_object *o = mp_find(map, key);
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

esgd_status mp_get_enum(const msgpack_object *map, const char *key, const char *const *names, int *out,
                        esgd_error *err)
{
    const msgpack_object *o = mp_find(map, key);
    if (!o)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field %s", key);
    if (o->type != MSGPACK_OBJECT_STR)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field %s is not a string", key);
    for (int i = 0; names[i]; i++) {
        if (mp_key_is(o, names[i])) {
            *out = i;
            return ESGD_OK;
        }
    }
    return esgd_error_set(err, ESGD_ERR_RANGE, "field %s = '%s' is not an allowed value", key, mp_quote(o).text);
}

esgd_status mp_get_bin(const msgpack_object *map, const char *key, const uint8_t **data, size_t *size,
                       esgd_error *err)
{
    const msgpack_object *o = mp_find(map, key);
    if (!o)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field %s", key);
    if (o->type != MSGPACK_OBJECT_BIN)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field %s is not a bin", key);
    *data = (const uint8_t *)o->via.bin.ptr;
    *size = o->via.bin.size;
    return ESGD_OK;
}
