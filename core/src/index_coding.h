/* Index sets as the update and model messages carry them (the "idx" bin of
 * schemas/messages.md), internal to core/src: strictly ascending uint32
 * indices below a dimension d, in one of two codings.
 *
 *   bitmap  ceil(d / 8) bytes; index j sets bit (j & 7), least significant
 *           first, of byte j >> 3.
 *   Rice    each gap (the index minus one past the previous index; for the
 *           first, the index itself) as (gap >> b) one-bits, a zero bit and the b low
 *           bits of gap, most significant bit first, b in 0..31; the last
 *           byte is padded with zero bits.
 *
 * Writers assume valid input (the codec checks it first); readers check
 * everything (lengths, range, order, padding, the count) and stop on the
 * first error without reading past the data they are given:
 *
 *   uint64_t bits;
 *   unsigned b = index_rice_best_param(indices, count, &bits);
 *   index_rice_write(out, (bits + 7) / 8, indices, count, b);
 *   index_rice_read(out, (bits + 7) / 8, b, dim, count, decoded, &err);
 *
 * Which coding a message uses (or "all", no idx at all) is the codec's
 * choice, by message size (codec_vector.c). */
#ifndef ESGD_INDEX_CODING_H
#define ESGD_INDEX_CODING_H

#include <stddef.h>
#include <stdint.h>

#include "esgd/error.h"

#define INDEX_RICE_MAX_PARAM 31

/* Bits of the Rice code of indices[0..count) with parameter b: count (1 + b)
 * plus the sum of (gap >> b). */
uint64_t index_rice_bits(const uint32_t *indices, uint32_t count, unsigned b);

/* The b in 0..INDEX_RICE_MAX_PARAM with the fewest bits (the smallest such
 * b); *bits receives that size. count 0: b = 0, no bits. */
unsigned index_rice_best_param(const uint32_t *indices, uint32_t count, uint64_t *bits);

/* Writes the Rice code with parameter b into out, exactly
 * bytes = ceil(index_rice_bits(indices, count, b) / 8) bytes (asserted). */
void index_rice_write(uint8_t *out, size_t bytes, const uint32_t *indices, uint32_t count, unsigned b);

/* Decodes exactly count indices, each < dim, from the bytes bytes at data
 * with parameter b (<= INDEX_RICE_MAX_PARAM) into indices[0..count).
 * Errors: ESGD_ERR_RANGE (an index at or past dim), ESGD_ERR_FORMAT (the
 * data ends inside a code, has bytes left over, or non-zero padding). */
esgd_status index_rice_read(const uint8_t *data, size_t bytes, unsigned b, uint32_t dim, uint32_t count,
                            uint32_t *indices, esgd_error *err);

/* ceil(dim / 8): the bytes of a bitmap over dim indices. */
size_t index_bitmap_bytes(uint32_t dim);

/* Writes the bitmap of indices[0..count) into out, bytes =
 * index_bitmap_bytes(dim) bytes (every index < dim). */
void index_bitmap_write(uint8_t *out, size_t bytes, const uint32_t *indices, uint32_t count);

/* Decodes a bitmap of exactly index_bitmap_bytes(dim) bytes holding exactly
 * count set bits into indices[0..count), ascending. Errors: ESGD_ERR_FORMAT
 * (wrong length, more or fewer than count bits), ESGD_ERR_RANGE (a bit at
 * or past dim in the last byte). */
esgd_status index_bitmap_read(const uint8_t *data, size_t bytes, uint32_t dim, uint32_t count, uint32_t *indices,
                              esgd_error *err);

#endif
