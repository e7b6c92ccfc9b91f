/* IEEE 754 binary16 conversion: float to half with round to nearest even
 * (branch-light, it is on the hot path of every fp16 update), half to float,
 * the clamp agents apply before fp16 encoding, and the little-endian array
 * forms the codec packs an update's values with. Nothing here knows
 * msgpack or the messages. */
#include "half.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* Round to nearest even without a data-dependent branch in the common case:
 * a rounding branch mispredicts on half the values of a gradient, which made
 * fp16 encoding 3x slower than fp32. */
uint16_t codec_f32_to_f16(float value)
{
    uint32_t x;
    memcpy(&x, &value, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x47800000u) /* |value| >= 2^16, Inf or NaN; NaN stays a quiet NaN */
        return (uint16_t)(sign | (x > 0x7f800000u ? 0x7e00u | ((x >> 13) & 0x3ffu) : 0x7c00u));
    if (x < 0x38800000u) {
        /* Below 2^-14 the half is subnormal, in steps of 2^-24. Adding 0.5,
         * whose ulp is 2^-24, lets the FPU round to that step (nearest even);
         * the sum's low mantissa bits are the half's. */
        float magnitude;
        memcpy(&magnitude, &x, sizeof magnitude);
        float sum = magnitude + 0.5f;
        uint32_t bits;
        memcpy(&bits, &sum, sizeof bits);
        return (uint16_t)(sign | (bits - 0x3f000000u));
    }
    /* Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits;
     * a carry goes into the exponent, up to 0x7c00 (Inf) above 65504. */
    uint32_t odd = (x >> 13) & 1u;
    x = x - (112u << 23) + 0xfffu + odd;
    return (uint16_t)(sign | (x >> 13));
}

uint32_t codec_clamp_f16(float *values, uint32_t count)
{
    uint32_t clamped = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (fabsf(values[i]) > CODEC_F16_MAX) {
            values[i] = copysignf(CODEC_F16_MAX, values[i]);
            clamped++;
        }
    }
    return clamped;
}

float codec_f16_to_f32(uint16_t half)
{
    uint32_t sign = (uint32_t)(half & 0x8000u) << 16;
    uint32_t exp = (half >> 10) & 0x1fu;
    uint32_t man = half & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        float v = (float)man * 0x1p-24f; /* exact: man < 2^10 */
        return sign ? -v : v;
    }
    if (exp == 31)
        x = sign | 0x7f800000u | (man << 13);
    else
        x = sign | ((exp + 112) << 23) | (man << 13);
    float v;
    memcpy(&v, &x, sizeof v);
    return v;
}

static bool half_is_finite(uint16_t h)
{
    return (h & 0x7c00u) != 0x7c00u;
}

void half_write_le(uint8_t *out, const float *values, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        uint16_t h = codec_f32_to_f16(values[i]);
        out[2 * i] = (uint8_t)h;
        out[2 * i + 1] = (uint8_t)(h >> 8);
    }
}

esgd_status half_read_le(const uint8_t *in, uint32_t count, float *values, esgd_error *err)
{
    for (uint32_t i = 0; i < count; i++) {
        uint16_t h = (uint16_t)(in[2 * i] | (in[2 * i + 1] << 8));
        if (!half_is_finite(h))
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "value %u is not finite", i);
        values[i] = codec_f16_to_f32(h);
    }
    return ESGD_OK;
}
