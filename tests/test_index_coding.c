/* Index coding (core/src/index_coding.h) on its own, without msgpack: round
 * trips of random sorted index sets in both codings and every Rice
 * parameter, the optimal parameter against a brute-force search, the bit
 * layouts against hand-worked bytes, the edges (empty, all, first and last
 * index, parameters 0 and 31 at the extremes of uint32) and rejection of
 * truncated, overlong, padded and out-of-range input. Decoders get
 * exact-size heap copies so that ASan sees any read past the data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include <stdint.h>
#include <string.h>

#include "../core/src/index_coding.h"
#include "esgd/rng.h"

/* ------------------------------------------------------------- helpers */

/* k of dim indices, uniformly at random, ascending (selection sampling). */
static void random_indices(uint32_t *out, uint32_t dim, uint32_t k, esgd_rng *rng)
{
    uint32_t chosen = 0;
    for (uint32_t j = 0; j < dim && chosen < k; j++)
        if (rng_uniform(rng) * (dim - j) < (k - chosen))
            out[chosen++] = j;
    assert_int_equal(chosen, k);
}

static size_t rice_bytes(const uint32_t *indices, uint32_t count, unsigned b)
{
    return (size_t)((index_rice_bits(indices, count, b) + 7) / 8);
}

/* The Rice code of indices with parameter b in an exact-size heap block. */
static uint8_t *rice_encode(const uint32_t *indices, uint32_t count, unsigned b, size_t *bytes)
{
    *bytes = rice_bytes(indices, count, b);
    uint8_t *out = malloc(*bytes ? *bytes : 1);
    assert_non_null(out);
    index_rice_write(out, *bytes, indices, count, b);
    return out;
}

static uint8_t *bitmap_encode(const uint32_t *indices, uint32_t count, uint32_t dim, size_t *bytes)
{
    *bytes = index_bitmap_bytes(dim);
    uint8_t *out = malloc(*bytes ? *bytes : 1);
    assert_non_null(out);
    index_bitmap_write(out, *bytes, indices, count);
    return out;
}

/* A copy of data[0..n) in a block of exactly n bytes. */
static uint8_t *exact_copy(const uint8_t *data, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n)
        memcpy(p, data, n);
    return p;
}

static void assert_rice_round_trip(const uint32_t *indices, uint32_t count, uint32_t dim, unsigned b)
{
    size_t bytes;
    uint8_t *code = rice_encode(indices, count, b, &bytes);
    uint32_t *back = calloc(count ? count : 1, sizeof *back);
    assert_non_null(back);
    esgd_error err = {0};
    esgd_status st = index_rice_read(code, bytes, b, dim, count, back, &err);
    if (st != ESGD_OK)
        fail_msg("rice b=%u dim=%u count=%u: %s", b, dim, count, err.message);
    if (count > 0)
        assert_memory_equal(back, indices, (size_t)count * sizeof *back);
    free(back);
    free(code);
}

static void assert_bitmap_round_trip(const uint32_t *indices, uint32_t count, uint32_t dim)
{
    size_t bytes;
    uint8_t *code = bitmap_encode(indices, count, dim, &bytes);
    uint32_t *back = calloc(count ? count : 1, sizeof *back);
    assert_non_null(back);
    esgd_error err = {0};
    esgd_status st = index_bitmap_read(code, bytes, dim, count, back, &err);
    if (st != ESGD_OK)
        fail_msg("bitmap dim=%u count=%u: %s", dim, count, err.message);
    if (count > 0)
        assert_memory_equal(back, indices, (size_t)count * sizeof *back);
    free(back);
    free(code);
}

/* The smallest b of least size, by trying all 32. */
static unsigned brute_best_param(const uint32_t *indices, uint32_t count, uint64_t *bits)
{
    unsigned best = 0;
    *bits = index_rice_bits(indices, count, 0);
    for (unsigned b = 1; b <= INDEX_RICE_MAX_PARAM; b++) {
        uint64_t n = index_rice_bits(indices, count, b);
        if (n < *bits) {
            *bits = n;
            best = b;
        }
    }
    return best;
}

/* --------------------------------------------------------------- tests */

static void test_random_sets_round_trip(void **state)
{
    (void)state;
    static const uint32_t dims[] = {1, 2, 7, 8, 9, 63, 64, 65, 1000, 4099, 61706};
    static const double keep[] = {0.0, 0.001, 0.01, 0.1, 0.3, 0.5, 0.9, 1.0};
    esgd_rng rng;
    rng_seed(&rng, 42, 1);
    uint32_t *indices = malloc(61706 * sizeof *indices);
    assert_non_null(indices);
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        for (size_t f = 0; f < sizeof keep / sizeof keep[0]; f++) {
            uint32_t dim = dims[d];
            uint32_t k = (uint32_t)(keep[f] * dim);
            random_indices(indices, dim, k, &rng);
            uint64_t bits;
            unsigned best = index_rice_best_param(indices, k, &bits);
            assert_int_equal(bits, index_rice_bits(indices, k, best));
            assert_rice_round_trip(indices, k, dim, best);
            assert_rice_round_trip(indices, k, dim, 0);
            assert_rice_round_trip(indices, k, dim, 5);
            assert_rice_round_trip(indices, k, dim, INDEX_RICE_MAX_PARAM);
            assert_bitmap_round_trip(indices, k, dim);
        }
    }
    free(indices);
}

static void test_best_param_is_optimal(void **state)
{
    (void)state;
    esgd_rng rng;
    rng_seed(&rng, 7, 2);
    uint32_t *indices = malloc(20000 * sizeof *indices);
    assert_non_null(indices);
    for (int trial = 0; trial < 300; trial++) {
        uint32_t dim = 1 + rng_below(&rng, 20000);
        uint32_t k = rng_below(&rng, dim + 1);
        if (trial % 3 == 0) /* clustered: the indices of one random window */
            k = k < 50 ? k : 50;
        random_indices(indices, dim, k, &rng);
        if (trial % 3 == 0 && k > 0) {
            uint32_t shift = rng_below(&rng, dim - indices[k - 1]);
            for (uint32_t i = 0; i < k; i++)
                indices[i] += shift;
        }
        uint64_t bits, want_bits;
        unsigned b = index_rice_best_param(indices, k, &bits);
        unsigned want = brute_best_param(indices, k, &want_bits);
        if (bits != want_bits || b != want)
            fail_msg("dim %u k %u: b %u (%llu bits), brute force b %u (%llu bits)", dim, k, b,
                     (unsigned long long)bits, want, (unsigned long long)want_bits);
    }
    free(indices);
}

/* Bit layouts worked by hand, so a change of convention cannot round-trip
 * unnoticed. */
static void test_known_bytes(void **state)
{
    (void)state;
    /* Rice b = 1 of {0, 1, 5}: gaps 0, 0, 3 -> "0 0", "0 0", "10 1" = 0000101, padded: 0x0a. */
    const uint32_t rice_set[] = {0, 1, 5};
    assert_int_equal(index_rice_bits(rice_set, 3, 1), 7);
    uint8_t out[4] = {0xee, 0xee, 0xee, 0xee};
    index_rice_write(out, 1, rice_set, 3, 1);
    assert_int_equal(out[0], 0x0a);
    assert_int_equal(out[1], 0xee); /* nothing past the code */

    /* Rice b = 0 of {3}: "1110" then padding: 0xe0. */
    const uint32_t three[] = {3};
    index_rice_write(out, 1, three, 1, 0);
    assert_int_equal(out[0], 0xe0);

    /* Bitmap: index j is bit (j & 7) of byte j >> 3, least significant first. */
    const uint32_t bitmap_set[] = {0, 9, 15, 16};
    uint8_t map[3] = {0xff, 0xff, 0xff};
    index_bitmap_write(map, 3, bitmap_set, 4);
    assert_int_equal(map[0], 0x01);
    assert_int_equal(map[1], 0x82);
    assert_int_equal(map[2], 0x01);
    assert_int_equal(index_bitmap_bytes(17), 3);
    assert_int_equal(index_bitmap_bytes(16), 2);
    assert_int_equal(index_bitmap_bytes(1), 1);
}

static void test_edges(void **state)
{
    (void)state;
    /* Empty: no Rice bytes, an all-zero bitmap. */
    uint64_t bits = 99;
    assert_int_equal(index_rice_best_param(NULL, 0, &bits), 0);
    assert_int_equal(bits, 0);
    esgd_error err = {0};
    uint32_t none;
    assert_int_equal(index_rice_read((const uint8_t *)"", 0, 0, 10, 0, &none, &err), ESGD_OK);
    assert_bitmap_round_trip(NULL, 0, 10);

    /* All of dim, the first only, the last only, both ends. */
    enum { DIM = 1001 };
    static uint32_t all[DIM];
    for (uint32_t i = 0; i < DIM; i++)
        all[i] = i;
    const uint32_t first[] = {0}, last[] = {DIM - 1}, ends[] = {0, DIM - 1};
    for (unsigned b = 0; b <= INDEX_RICE_MAX_PARAM; b++) {
        assert_rice_round_trip(all, DIM, DIM, b);
        assert_rice_round_trip(first, 1, DIM, b);
        assert_rice_round_trip(last, 1, DIM, b);
        assert_rice_round_trip(ends, 2, DIM, b);
    }
    assert_int_equal(index_rice_best_param(all, DIM, &bits), 0); /* every gap 0: one bit each */
    assert_int_equal(bits, DIM);
    assert_bitmap_round_trip(all, DIM, DIM);
    assert_bitmap_round_trip(first, 1, DIM);
    assert_bitmap_round_trip(last, 1, DIM);
    assert_bitmap_round_trip(ends, 2, DIM);
    const uint32_t one[] = {0};
    assert_rice_round_trip(one, 1, 1, 0);
    assert_bitmap_round_trip(one, 1, 1);
}

/* The extremes of the parameter on the largest dimension: b = 0 with a
 * unary run of billions of bits is too big to write, so b = 0 runs long
 * (longer than the writer's 31-bit chunks) on a moderate gap, and b = 31,
 * the largest, is the best choice for one index near 2^32. */
static void test_extreme_params(void **state)
{
    (void)state;
    const uint32_t far[] = {4000000000u};
    uint64_t bits;
    assert_int_equal(index_rice_best_param(far, 1, &bits), INDEX_RICE_MAX_PARAM);
    assert_int_equal(bits, 1 + 31 + (4000000000u >> 31));
    assert_rice_round_trip(far, 1, UINT32_MAX, INDEX_RICE_MAX_PARAM);
    const uint32_t top[] = {0, 1, UINT32_MAX - 1};
    assert_rice_round_trip(top, 3, UINT32_MAX, INDEX_RICE_MAX_PARAM);

    const uint32_t runs[] = {30, 31, 62, 63, 1000, 5000};
    for (unsigned b = 0; b < 3; b++)
        assert_rice_round_trip(runs, 6, 5001, b);
    assert_int_equal(index_rice_bits(runs, 6, 0), 6 + 5000 - 5);
}

static void test_rice_rejects_bad_input(void **state)
{
    (void)state;
    esgd_rng rng;
    rng_seed(&rng, 3, 3);
    enum { DIM = 5000, K = 300 };
    uint32_t indices[K], back[K + 10];
    random_indices(indices, DIM, K, &rng);
    uint64_t bits;
    unsigned b = index_rice_best_param(indices, K, &bits);
    size_t bytes;
    uint8_t *code = rice_encode(indices, K, b, &bytes);
    esgd_error err = {0};

    /* Truncated at every length: never OK, never a read past the copy. */
    for (size_t n = 0; n < bytes; n++) {
        uint8_t *cut = exact_copy(code, n);
        esgd_status st = index_rice_read(cut, n, b, DIM, K, back, &err);
        if (st != ESGD_ERR_FORMAT && st != ESGD_ERR_RANGE)
            fail_msg("truncated to %zu of %zu bytes: status %d", n, bytes, (int)st);
        free(cut);
    }
    /* One byte too many. */
    uint8_t *longer = malloc(bytes + 1);
    assert_non_null(longer);
    memcpy(longer, code, bytes);
    longer[bytes] = 0;
    assert_int_equal(index_rice_read(longer, bytes + 1, b, DIM, K, back, &err), ESGD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "its codes fill"));
    free(longer);
    /* Fewer codes asked for than the data holds: bytes left over. */
    assert_int_equal(index_rice_read(code, bytes, b, DIM, K - 40, back, &err), ESGD_ERR_FORMAT);
    /* More asked for than it holds (ten more codes cannot hide in the
     * padding, which holds at most 7 bits). */
    esgd_status st = index_rice_read(code, bytes, b, DIM, K + 10, back, &err);
    assert_true(st == ESGD_ERR_FORMAT || st == ESGD_ERR_RANGE);
    /* A dimension below the last index. */
    assert_int_equal(index_rice_read(code, bytes, b, indices[K - 1], K, back, &err), ESGD_ERR_RANGE);
    free(code);

    /* Non-zero padding: {0, 1, 5} with b = 1 is 7 bits, 0x0a; its last bit set. */
    const uint8_t padded[] = {0x0b};
    assert_int_equal(index_rice_read(padded, 1, 1, 10, 3, back, &err), ESGD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "padding"));
    const uint8_t clean[] = {0x0a};
    assert_int_equal(index_rice_read(clean, 1, 1, 10, 3, back, &err), ESGD_OK);
    assert_int_equal(back[2], 5);

    /* All one-bits: the unary run passes dim after a few bits, however many
     * bytes follow. */
    uint8_t *ones = malloc(1 << 20);
    assert_non_null(ones);
    memset(ones, 0xff, 1 << 20);
    assert_int_equal(index_rice_read(ones, 1 << 20, 0, 100, 1, back, &err), ESGD_ERR_RANGE);
    assert_non_null(strstr(err.message, "past dim"));
    /* Ends inside a unary run that stays within dim. */
    assert_int_equal(index_rice_read(ones, 1, 0, 100, 1, back, &err), ESGD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "unary"));
    free(ones);
    /* Ends inside a remainder: "0" then 7 of b = 8 low bits. */
    const uint8_t short_low[] = {0x00};
    assert_int_equal(index_rice_read(short_low, 1, 8, 1000, 1, back, &err), ESGD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "remainder"));
    /* A remainder that lands past dim: b = 3, q = 0, low = 7 with dim 5. */
    const uint8_t low_past[] = {0x70};
    assert_int_equal(index_rice_read(low_past, 1, 3, 5, 1, back, &err), ESGD_ERR_RANGE);
    /* Indices after the last possible one. */
    const uint8_t zeros[] = {0x00};
    assert_int_equal(index_rice_read(zeros, 1, 0, 2, 3, back, &err), ESGD_ERR_RANGE);
}

static void test_bitmap_rejects_bad_input(void **state)
{
    (void)state;
    const uint32_t set[] = {1, 4, 12};
    enum { DIM = 13 };
    size_t bytes;
    uint8_t *code = bitmap_encode(set, 3, DIM, &bytes);
    assert_int_equal(bytes, 2);
    uint32_t back[4];
    esgd_error err = {0};

    uint8_t *cut = exact_copy(code, bytes - 1);
    assert_int_equal(index_bitmap_read(cut, bytes - 1, DIM, 3, back, &err), ESGD_ERR_FORMAT);
    free(cut);
    uint8_t longer[3] = {code[0], code[1], 0};
    assert_int_equal(index_bitmap_read(longer, 3, DIM, 3, back, &err), ESGD_ERR_FORMAT);
    assert_int_equal(index_bitmap_read(code, bytes, DIM, 2, back, &err), ESGD_ERR_FORMAT); /* more bits than count */
    assert_int_equal(index_bitmap_read(code, bytes, DIM, 4, back, &err), ESGD_ERR_FORMAT); /* fewer */
    /* A bit at dim or past it, in the last byte's spare bits. */
    uint8_t past[2] = {code[0], (uint8_t)(code[1] | 0x20)};
    assert_int_equal(index_bitmap_read(past, 2, DIM, 4, back, &err), ESGD_ERR_RANGE);
    assert_int_equal(index_bitmap_read(code, bytes, DIM, 3, back, &err), ESGD_OK);
    assert_memory_equal(back, set, sizeof set);
    free(code);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_sets_round_trip),
        cmocka_unit_test(test_best_param_is_optimal),
        cmocka_unit_test(test_known_bytes),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_extreme_params),
        cmocka_unit_test(test_rice_rejects_bad_input),
        cmocka_unit_test(test_bitmap_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
