/* IEEE 754 binary16 ("half") for VALUE_FORMAT_F16, internal to core/src.
 * The scalar conversions and the clamp are public (codec.h:
 * codec_f32_to_f16, codec_f16_to_f32, codec_clamp_f16); this adds the
 * array forms the codec writes and reads an update's "val" bin with, kept
 * in half.c beside the conversions so that the per-value call inlines. */
#ifndef ESGD_HALF_H
#define ESGD_HALF_H

#include <stdint.h>

#include "esgd/codec.h"
#include "esgd/error.h"

/* out[2i], out[2i+1] = codec_f32_to_f16(values[i]), little-endian, for
 * i < count. out holds 2 * count bytes. */
void half_write_le(uint8_t *out, const float *values, uint32_t count);

/* The inverse: count little-endian halves from in (2 * count bytes) into
 * values. Errors: ESGD_ERR_NONFINITE at the first Inf or NaN ("value i is
 * not finite"); values before it are written. */
esgd_status half_read_le(const uint8_t *in, uint32_t count, float *values, esgd_error *err);

/* Both use the CPU's conversion instructions where there are any (F16C on
 * x86-64, checked at run time; fcvt on aarch64), with the same bits as the
 * portable code below, which runs elsewhere. half_hardware() names the
 * instructions in use, NULL when none. The portable forms are exported for
 * the tests that compare the two. */
const char *half_hardware(void);
void half_write_le_portable(uint8_t *out, const float *values, uint32_t count);
esgd_status half_read_le_portable(const uint8_t *in, uint32_t count, float *values, esgd_error *err);

#endif
