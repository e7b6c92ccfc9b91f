/* Rice and bitmap coding of sorted index sets (index_coding.h): the choice
 * of the Rice parameter, an MSB-first bit writer and reader, and decoders
 * whose loops are bounded by the bytes received, never by a value the
 * sender chose. It knows nothing of msgpack or of the messages around the
 * bytes. */
#include "index_coding.h"

#include <assert.h>
#include <string.h>

/* ------------------------------------------------------- Rice parameter */

uint64_t index_rice_bits(const uint32_t *indices, uint32_t count, unsigned b)
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
unsigned index_rice_best_param(const uint32_t *indices, uint32_t count, uint64_t *best_bits)
{
    if (count == 0) {
        *best_bits = 0;
        return 0;
    }
    uint64_t gap_sum = (uint64_t)indices[count - 1] + 1 - count;
    uint64_t mean = gap_sum / count;
    unsigned b = 0;
    while (b < INDEX_RICE_MAX_PARAM && (2ull << b) <= mean)
        b++;
    uint64_t cost = index_rice_bits(indices, count, b);
    while (b > 0) {
        uint64_t lower = index_rice_bits(indices, count, b - 1);
        if (lower > cost)
            break;
        b--;
        cost = lower;
    }
    while (b < INDEX_RICE_MAX_PARAM) {
        uint64_t higher = index_rice_bits(indices, count, b + 1);
        if (higher >= cost)
            break;
        b++;
        cost = higher;
    }
    *best_bits = cost;
    return b;
}

/* ------------------------------------------------------------- writing */

typedef struct bit_writer {
    uint8_t *out;
    size_t pos;    /* bytes written */
    uint64_t acc;  /* pending bits in the low nacc bits */
    unsigned nacc; /* < 8 between calls */
} bit_writer;

/* Appends the n (<= 32) low bits of value, most significant first. */
static void bit_writer_put(bit_writer *w, uint32_t value, unsigned n)
{
    w->acc = (w->acc << n) | value;
    w->nacc += n;
    while (w->nacc >= 8) {
        w->nacc -= 8;
        w->out[w->pos++] = (uint8_t)(w->acc >> w->nacc);
    }
}

void index_rice_write(uint8_t *out, size_t bytes, const uint32_t *indices, uint32_t count, unsigned b)
{
    bit_writer w = {out, 0, 0, 0};
    uint32_t next = 0;
    uint32_t low_mask = b ? (uint32_t)((1ull << b) - 1) : 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t gap = indices[i] - next;
        uint32_t q = gap >> b;
        for (; q >= 31; q -= 31)
            bit_writer_put(&w, 0x7fffffffu, 31);
        bit_writer_put(&w, ((1u << q) - 1) << 1, q + 1); /* q ones, then the zero */
        if (b)
            bit_writer_put(&w, gap & low_mask, b);
        next = indices[i] + 1;
    }
    if (w.nacc)
        w.out[w.pos++] = (uint8_t)(w.acc << (8 - w.nacc)); /* zero padding */
    assert(w.pos == bytes);
    (void)bytes;
}

size_t index_bitmap_bytes(uint32_t dim)
{
    return ((size_t)dim + 7) / 8;
}

void index_bitmap_write(uint8_t *out, size_t bytes, const uint32_t *indices, uint32_t count)
{
    memset(out, 0, bytes);
    for (uint32_t i = 0; i < count; i++)
        out[indices[i] >> 3] |= (uint8_t)(1u << (indices[i] & 7));
}

/* ------------------------------------------------------------- reading */

typedef struct bit_reader {
    const uint8_t *data;
    size_t nbits; /* a multiple of 8 */
    size_t pos;
} bit_reader;

/* Reads a unary run of one-bits and its terminating zero. Stops as soon as
 * the run exceeds limit (RANGE) or the bits run out (FORMAT): the loop is
 * bounded by the data, never by a value the sender chose. */
static esgd_status bit_reader_unary(bit_reader *r, uint64_t limit, uint64_t *run_out, esgd_error *err)
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

static esgd_status bit_reader_bits(bit_reader *r, unsigned n, uint32_t *out, esgd_error *err)
{
    if (n > r->nbits - r->pos)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "rice idx ends inside a remainder");
    uint32_t v = 0;
    for (unsigned i = 0; i < n; i++, r->pos++)
        v = (v << 1) | ((r->data[r->pos >> 3] >> (7 - (r->pos & 7))) & 1u);
    *out = v;
    return ESGD_OK;
}

esgd_status index_rice_read(const uint8_t *data, size_t bytes, unsigned b, uint32_t dim, uint32_t count,
                            uint32_t *indices, esgd_error *err)
{
    bit_reader r = {data, bytes * 8, 0};
    uint64_t next = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (next >= dim)
            return esgd_error_set(err, ESGD_ERR_RANGE, "rice index %u past dim %u", i, dim);
        uint64_t q = 0;
        uint32_t low = 0;
        esgd_status st = bit_reader_unary(&r, (dim - 1 - next) >> b, &q, err);
        if (st == ESGD_OK)
            st = bit_reader_bits(&r, b, &low, err);
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

esgd_status index_bitmap_read(const uint8_t *data, size_t bytes, uint32_t dim, uint32_t count, uint32_t *indices,
                              esgd_error *err)
{
    if (bytes != index_bitmap_bytes(dim))
        return esgd_error_set(err, ESGD_ERR_FORMAT, "bitmap idx has %zu bytes, dim %u needs %zu", bytes, dim,
                              index_bitmap_bytes(dim));
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
