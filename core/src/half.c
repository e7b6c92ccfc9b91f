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

/* The portable array forms; half_write_le and half_read_le use them where
 * the CPU has no conversion instructions, and the tests hold the hardware
 * path to them. */
void half_write_le_portable(uint8_t *out, const float *values, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        uint16_t h = codec_f32_to_f16(values[i]);
        out[2 * i] = (uint8_t)h;
        out[2 * i + 1] = (uint8_t)(h >> 8);
    }
}

esgd_status half_read_le_portable(const uint8_t *in, uint32_t count, float *values, esgd_error *err)
{
    for (uint32_t i = 0; i < count; i++) {
        uint16_t h = (uint16_t)(in[2 * i] | (in[2 * i + 1] << 8));
        if (!half_is_finite(h))
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "value %u is not finite", i);
        values[i] = codec_f16_to_f32(h);
    }
    return ESGD_OK;
}

/* Hardware conversions: x86-64's F16C (vcvtps2ph with round to nearest
 * even, whatever MXCSR says; vcvtph2ps), picked at run time, or aarch64's
 * fcvt through the compiler's _Float16. Both give the portable code's bits
 * for every float (a NaN keeps its sign and top 10 payload bits and comes
 * out quiet, as codec_f32_to_f16 does); halves are only converted back
 * once known finite, where both are exact. armhf and other targets use the
 * portable code. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target)
#include <cpuid.h>
#include <immintrin.h>
#define HALF_F16C 1

__attribute__((target("avx,f16c"))) static void write_f16c(uint8_t *out, const float *values, uint32_t count)
{
    uint32_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(values + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(void *)(out + 2 * i), h); /* x86 is little-endian */
    }
    half_write_le_portable(out + 2 * i, values + i, count - i);
}

/* Blocks of 8 with no Inf or NaN convert at once; a block with one goes to
 * the portable loop, which names the first. */
__attribute__((target("avx,f16c"))) static esgd_status read_f16c(const uint8_t *in, uint32_t count, float *values,
                                                                  esgd_error *err)
{
    const __m128i exp_mask = _mm_set1_epi16(0x7c00);
    uint32_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(in + 2 * i));
        if (_mm_movemask_epi8(_mm_cmpeq_epi16(_mm_and_si128(h, exp_mask), exp_mask)))
            break;
        _mm256_storeu_ps(values + i, _mm256_cvtph_ps(h));
    }
    for (; i < count; i++) {
        uint16_t h = (uint16_t)(in[2 * i] | (in[2 * i + 1] << 8));
        if (!half_is_finite(h))
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "value %u is not finite", i);
        values[i] = codec_f16_to_f32(h);
    }
    return ESGD_OK;
}

/* F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports
 * does not know "f16c"; "avx" also says the OS saves the YMM registers. */
static bool have_f16c(void)
{
    static int cached = -1;
    if (cached < 0) {
        unsigned eax, ebx, ecx, edx;
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx") && __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
    }
    return cached;
}
#endif
#elif defined(__aarch64__) && defined(__FLT16_MAX__)
#define HALF_FCVT 1
#endif

const char *half_hardware(void)
{
#if defined(HALF_F16C)
    return have_f16c() ? "F16C" : NULL;
#elif defined(HALF_FCVT)
    return "aarch64 fcvt";
#else
    return NULL;
#endif
}

void half_write_le(uint8_t *out, const float *values, uint32_t count)
{
#if defined(HALF_F16C)
    if (have_f16c()) {
        write_f16c(out, values, count);
        return;
    }
#elif defined(HALF_FCVT)
    for (uint32_t i = 0; i < count; i++) {
        _Float16 h = (_Float16)values[i];
        memcpy(out + 2 * i, &h, sizeof h); /* aarch64 Linux is little-endian */
    }
    return;
#endif
    half_write_le_portable(out, values, count);
}

esgd_status half_read_le(const uint8_t *in, uint32_t count, float *values, esgd_error *err)
{
#if defined(HALF_F16C)
    if (have_f16c())
        return read_f16c(in, count, values, err);
#elif defined(HALF_FCVT)
    for (uint32_t i = 0; i < count; i++) {
        uint16_t bits = (uint16_t)(in[2 * i] | (in[2 * i + 1] << 8));
        if (!half_is_finite(bits))
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "value %u is not finite", i);
        _Float16 h;
        memcpy(&h, &bits, sizeof h);
        values[i] = (float)h;
    }
    return ESGD_OK;
#endif
    return half_read_le_portable(in, count, values, err);
}
