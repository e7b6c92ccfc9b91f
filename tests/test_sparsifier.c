/* The sparsifiers against the contract (shared/docs/esgd-algorithm.md):
 * k, config checks, each eSGD step on hand-built gradients, the baselines
 * against brute-force references, and the output invariants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "esgd/rng.h"
#include "esgd/sparsifier.h"
#include "esgd/state_file.h"

#define HUGE_TAU 1e30f /* fixed tau nothing exceeds: no swaps */

static sparsifier *make(sparsifier_config cfg, uint32_t dim, uint32_t agent)
{
    esgd_error err = {0};
    sparsifier *s = sparsifier_new(&cfg, dim, agent, &err);
    if (!s)
        fail_msg("sparsifier_new: %s", err.message);
    return s;
}

static sparsifier_config esgd_config(double drop)
{
    sparsifier_config cfg = SPARSIFIER_CONFIG_DEFAULT;
    cfg.method = SPARSIFY_ESGD;
    cfg.drop_ratio = drop;
    return cfg;
}

static sparse_vector run(sparsifier *s, const float *g, uint32_t round, bool fell)
{
    sparse_vector out;
    esgd_error err = {0};
    esgd_status st = sparsifier_select(s, g, round, fell, 1.0f, &out, &err);
    if (st != ESGD_OK)
        fail_msg("sparsifier_select: %s", err.message);
    return out;
}

static bool contains(const sparse_vector *v, uint32_t j)
{
    for (uint32_t i = 0; i < v->count; i++)
        if (v->indices[i] == j)
            return true;
    return false;
}

static float value_of(const sparse_vector *v, uint32_t j)
{
    for (uint32_t i = 0; i < v->count; i++)
        if (v->indices[i] == j)
            return v->values[i];
    fail_msg("coordinate %u not sent", j);
    return 0;
}

static void assert_well_formed(const sparse_vector *v, uint32_t dim)
{
    assert_int_equal(v->dim, dim);
    assert_true(v->count <= v->capacity);
    for (uint32_t i = 0; i < v->count; i++) {
        assert_true(v->indices[i] < dim);
        if (i > 0)
            assert_true(v->indices[i - 1] < v->indices[i]);
        assert_true(isfinite(v->values[i]));
    }
}

static void fill_normal(esgd_rng *rng, float *g, uint32_t d, double scale)
{
    for (uint32_t j = 0; j < d; j++)
        g[j] = (float)(rng_normal(rng) * scale);
}

static void test_keep_count(void **state)
{
    (void)state;
    assert_int_equal(sparsifier_keep_count(61706, 0.5), 30853);
    assert_int_equal(sparsifier_keep_count(61706, 0.75), 15427);
    assert_int_equal(sparsifier_keep_count(61706, 0.875), 7714);
    assert_int_equal(sparsifier_keep_count(61706, 0.99), 618);
    assert_int_equal(sparsifier_keep_count(61706, 0.999), 62);
    assert_int_equal(sparsifier_keep_count(61706, 0.0), 61706);
    assert_int_equal(sparsifier_keep_count(100, 0.9), 10); /* 0.1 * 100 is not exact in binary */
    assert_int_equal(sparsifier_keep_count(1000, 0.7), 300);
    assert_int_equal(sparsifier_keep_count(10, 0.9999), 1);
    assert_int_equal(sparsifier_keep_count(1, 0.5), 1);
    assert_int_equal(sparsifier_keep_count(1000000, 0.99), 10000);
}

static void test_config_validation(void **state)
{
    (void)state;
    sparsifier_config good = esgd_config(0.875);
    esgd_error err = {0};
    sparsifier *s = sparsifier_new(&good, 100, 0, &err);
    assert_non_null(s);
    sparsifier_free(s);
    sparsifier_free(NULL);

    struct {
        const char *option;
        sparsifier_config cfg;
        uint32_t dim;
    } bad[32];
    int n = 0;
#define BAD(name, field, value)                                                                              \
    do {                                                                                                     \
        bad[n].option = name;                                                                                \
        bad[n].cfg = good;                                                                                   \
        bad[n].cfg.field = value;                                                                            \
        bad[n].dim = 100;                                                                                    \
        n++;                                                                                                 \
    } while (0)
    BAD("method", method, (sparsify_method)7);
    BAD("drop_ratio", drop_ratio, 1.0);
    BAD("drop_ratio", drop_ratio, -0.1);
    BAD("drop_ratio", drop_ratio, NAN);
    BAD("eps", eps, 0.0f);
    BAD("eps", eps, INFINITY);
    BAD("beta", beta, -0.5f);
    BAD("beta", beta, 1.5f);
    BAD("loss_signal", loss_signal, (esgd_loss_signal)9);
    BAD("h_increment", h_increment, (esgd_h_increment)9);
    BAD("value_mode", value_mode, (esgd_value_mode)9);
    BAD("tau_mode", tau_mode, (esgd_tau_mode)9);
    BAD("dgc_momentum", dgc_momentum, 1.0f);
    BAD("dgc_momentum", dgc_momentum, -0.1f);
    BAD("dgc_momentum", dgc_momentum, NAN);
    BAD("dgc_clip", dgc_clip, -1.0f);
    BAD("dgc_clip", dgc_clip, INFINITY);
    BAD("dim", method, SPARSIFY_ESGD);
    bad[n - 1].dim = 0;
#undef BAD
    bad[n].option = "threshold";
    bad[n].cfg = good;
    bad[n].cfg.method = SPARSIFY_THRESHOLD;
    bad[n].cfg.threshold = 0.0f;
    bad[n].dim = 100;
    n++;
    bad[n].option = "tau";
    bad[n].cfg = good;
    bad[n].cfg.tau_mode = ESGD_TAU_FIXED;
    bad[n].cfg.tau = -1.0f;
    bad[n].dim = 100;
    n++;
    bad[n].option = "tau";
    bad[n].cfg = good;
    bad[n].cfg.tau_mode = ESGD_TAU_FIXED;
    bad[n].cfg.tau = NAN;
    bad[n].dim = 100;
    n++;
    for (int i = 0; i < n; i++) {
        memset(&err, 0, sizeof err);
        s = sparsifier_new(&bad[i].cfg, bad[i].dim, 0, &err);
        if (s || err.status != ESGD_ERR_ARG || !strstr(err.message, bad[i].option))
            fail_msg("case %d (%s): got %p, status %d, message '%s'", i, bad[i].option, (void *)s, err.status,
                     err.message);
    }
    assert_null(sparsifier_new(NULL, 100, 0, &err));
    assert_int_equal(err.status, ESGD_ERR_ARG);

    /* A threshold of 0 is fine when the method does not use it. */
    good.threshold = 0.0f;
    s = sparsifier_new(&good, 100, 0, &err);
    assert_non_null(s);
    sparsifier_free(s);
}

static void test_dense_sends_everything(void **state)
{
    (void)state;
    sparsifier_config cfg = SPARSIFIER_CONFIG_DEFAULT;
    cfg.method = SPARSIFY_DENSE;
    const uint32_t d = 37;
    sparsifier *s = make(cfg, d, 0);
    assert_int_equal(sparsifier_capacity(s), d);
    assert_null(sparsifier_importance(s));
    assert_null(sparsifier_residual(s));
    float g[37];
    for (uint32_t round = 0; round < 3; round++) {
        for (uint32_t j = 0; j < d; j++)
            g[j] = (float)j * 0.25f - (float)round;
        sparse_vector v = run(s, g, round, false);
        assert_int_equal(v.count, d);
        assert_int_equal(v.capacity, d);
        for (uint32_t j = 0; j < d; j++) {
            assert_int_equal(v.indices[j], j);
            assert_true(v.values[j] == g[j]);
        }
    }
    sparsifier_free(s);
}

/* Rounds 0 and 1 with a zero gradient and no swaps; returns S_1. */
static void prime(sparsifier *s, uint32_t d, uint32_t *s1, uint32_t k)
{
    float *zero = calloc(d, sizeof *zero);
    run(s, zero, 0, false);
    sparse_vector v = run(s, zero, 1, false);
    assert_int_equal(v.count, k);
    memcpy(s1, v.indices, k * sizeof *s1);
    free(zero);
}

static void test_first_rounds_are_uniform_random(void **state)
{
    (void)state;
    const uint32_t d = 1000;
    sparsifier_config cfg = esgd_config(0.9);
    cfg.tau_mode = ESGD_TAU_FIXED;
    cfg.tau = HUGE_TAU;
    float *g = calloc(d, sizeof *g);
    uint32_t sets[4][2][100];
    const struct {
        uint64_t seed;
        uint32_t agent;
    } who[4] = {{1, 0}, {1, 0}, {1, 1}, {2, 0}};
    for (int w = 0; w < 4; w++) {
        cfg.seed = who[w].seed;
        sparsifier *s = make(cfg, d, who[w].agent);
        assert_int_equal(sparsifier_capacity(s), 100);
        for (uint32_t round = 0; round < 2; round++) {
            sparse_vector v = run(s, g, round, true); /* loss_fell is ignored in rounds 0, 1 */
            assert_int_equal(v.count, 100);
            assert_well_formed(&v, d);
            memcpy(sets[w][round], v.indices, sizeof sets[w][round]);
        }
        /* Random selection does not touch H. */
        for (uint32_t j = 0; j < d; j++)
            assert_true(sparsifier_importance(s)[j] == 0.0f);
        sparsifier_free(s);
    }
    assert_memory_equal(sets[0], sets[1], sizeof sets[0]);
    assert_memory_not_equal(sets[0][0], sets[0][1], sizeof sets[0][0]); /* round 1 redraws */
    assert_memory_not_equal(sets[0][0], sets[2][0], sizeof sets[0][0]); /* other agent */
    assert_memory_not_equal(sets[0][0], sets[3][0], sizeof sets[0][0]); /* other seed */
    /* Spread over the whole range, not clustered at the start. */
    assert_true(sets[0][0][99] > 800 && sets[0][0][0] < 200);
    free(g);
}

static void test_loss_fell_keeps_selection_and_raises_importance(void **state)
{
    (void)state;
    const uint32_t d = 200, k = 20;
    for (int mode = 0; mode < 2; mode++) {
        sparsifier_config cfg = esgd_config(0.9);
        cfg.tau_mode = ESGD_TAU_FIXED;
        cfg.tau = HUGE_TAU;
        cfg.h_increment = mode == 0 ? ESGD_H_INCREMENT_ONE : ESGD_H_INCREMENT_ABSGRAD;
        sparsifier *s = make(cfg, d, 3);
        uint32_t s1[20];
        prime(s, d, s1, k);
        float g[200];
        float expected_h[200] = {0};
        for (uint32_t round = 2; round < 5; round++) {
            for (uint32_t j = 0; j < d; j++)
                g[j] = (j % 2 ? -1.0f : 1.0f) * (0.01f * (float)(j % 7) + 0.001f * (float)round);
            sparse_vector v = run(s, g, round, true);
            assert_int_equal(v.count, k);
            assert_memory_equal(v.indices, s1, sizeof s1);
            for (uint32_t i = 0; i < k; i++) {
                uint32_t j = s1[i];
                expected_h[j] += mode == 0 ? 1.0f : fabsf(g[j]);
                assert_true(v.values[i] == g[j]);
            }
            const float *h = sparsifier_importance(s);
            for (uint32_t j = 0; j < d; j++)
                assert_float_equal(h[j], expected_h[j], 1e-6);
        }
        if (mode == 0)
            assert_true(sparsifier_importance(s)[s1[0]] == 3.0f);
        sparsifier_free(s);
    }
}

/* d = 2, k = 1: H = (0, 3) or (3, 0) after three loss-fell rounds, eps = 1,
 * so a weighted draw picks the heavy coordinate with probability 4/5. */
static void test_weighted_sampling_probability(void **state)
{
    (void)state;
    sparsifier_config cfg = esgd_config(0.5);
    cfg.tau_mode = ESGD_TAU_FIXED;
    cfg.tau = HUGE_TAU;
    cfg.eps = 1.0f;
    sparsifier *s = make(cfg, 2, 0);
    uint32_t s1[1];
    prime(s, 2, s1, 1);
    float g[2] = {0.5f, -0.5f};
    uint32_t round = 2;
    for (; round < 5; round++)
        run(s, g, round, true);
    assert_true(sparsifier_importance(s)[s1[0]] == 3.0f);
    assert_true(sparsifier_importance(s)[1 - s1[0]] == 0.0f);
    const int trials = 20000;
    int heavy = 0;
    for (int t = 0; t < trials; t++, round++) {
        sparse_vector v = run(s, g, round, false);
        heavy += v.indices[0] == s1[0];
    }
    /* Mean 16000, standard deviation about 57. */
    assert_true(abs(heavy - 16000) < 300);
    assert_true(sparsifier_importance(s)[s1[0]] == 3.0f); /* rose: H unchanged */
    sparsifier_free(s);
}

static void test_loss_rose_samples_by_importance(void **state)
{
    (void)state;
    const uint32_t d = 100, k = 10;
    sparsifier_config cfg = esgd_config(0.9);
    cfg.tau_mode = ESGD_TAU_FIXED;
    cfg.tau = HUGE_TAU;
    cfg.eps = 1.0f;
    sparsifier *s = make(cfg, d, 0);
    uint32_t s1[10];
    prime(s, d, s1, k);
    float *g = calloc(d, sizeof *g);
    uint32_t round = 2;
    for (; round < 32; round++)
        run(s, g, round, true); /* H = 30 on S_1 */
    bool heavy[100] = {false};
    for (uint32_t i = 0; i < k; i++)
        heavy[s1[i]] = true;
    int counts[100] = {0};
    const int trials = 2000;
    for (int t = 0; t < trials; t++, round++) {
        sparse_vector v = run(s, g, round, false);
        assert_int_equal(v.count, k);
        assert_well_formed(&v, d);
        for (uint32_t i = 0; i < k; i++)
            counts[v.indices[i]]++;
    }
    double heavy_rate = 0, light_rate = 0;
    int light_drawn = 0;
    for (uint32_t j = 0; j < d; j++) {
        if (heavy[j]) {
            heavy_rate += counts[j] / (double)trials / k;
        } else {
            light_rate += counts[j] / (double)trials / (d - k);
            light_drawn += counts[j] > 0;
        }
    }
    /* Weights 11 vs 1: heavy coordinates are picked most rounds, light ones
     * rarely but (thanks to eps) not never. */
    assert_true(heavy_rate > 0.5);
    assert_true(light_rate < 0.06);
    assert_true(heavy_rate > 8 * light_rate);
    assert_true(light_drawn > 80);
    free(g);
    sparsifier_free(s);
}

static void test_residual_decays_on_unselected(void **state)
{
    (void)state;
    const uint32_t d = 50, k = 5;
    const float betas[3] = {0.5f, 0.0f, 1.0f};
    for (int b = 0; b < 3; b++) {
        sparsifier_config cfg = esgd_config(0.9);
        cfg.tau_mode = ESGD_TAU_FIXED;
        cfg.tau = HUGE_TAU;
        cfg.beta = betas[b];
        sparsifier *s = make(cfg, d, 1);
        float r[50] = {0}, g[50];
        esgd_rng rng;
        rng_seed(&rng, 42, 0);
        for (uint32_t round = 0; round < 6; round++) {
            fill_normal(&rng, g, d, 1.0);
            sparse_vector v = run(s, g, round, round % 2 == 0);
            assert_int_equal(v.count, k);
            for (uint32_t j = 0; j < d; j++) {
                if (contains(&v, j)) {
                    assert_true(value_of(&v, j) == g[j]);
                    r[j] = 0.0f;
                } else {
                    r[j] = betas[b] * r[j] + g[j];
                }
                assert_float_equal(sparsifier_residual(s)[j], r[j], 1e-5);
            }
        }
        if (b == 1) { /* beta 0: only this round's gradient */
            for (uint32_t j = 0; j < d; j++)
                assert_true(sparsifier_residual(s)[j] == 0.0f || sparsifier_residual(s)[j] == g[j]);
        }
        sparsifier_free(s);
    }
}

/* tau = mean |g|: of four unselected coordinates 20, 20, 2.7 and 2.6 with
 * everything else 0.5, mean |g| = 2.665, so exactly the first three are
 * swapped in, evicting the three members with smallest (H, index). */
static void test_tau_is_mean_abs_gradient(void **state)
{
    (void)state;
    const uint32_t d = 20, k = 5;
    sparsifier_config cfg = esgd_config(0.75);
    sparsifier *s = make(cfg, d, 0);
    assert_int_equal(sparsifier_capacity(s), k);
    uint32_t s1[5];
    prime(s, d, s1, k);
    uint32_t outside[4], n = 0;
    bool in_s1[20] = {false};
    for (uint32_t i = 0; i < k; i++)
        in_s1[s1[i]] = true;
    for (uint32_t j = d; j-- > 0 && n < 4;)
        if (!in_s1[j])
            outside[n++] = j;
    float g[20];
    for (uint32_t j = 0; j < d; j++)
        g[j] = (j % 3 ? 0.5f : -0.5f);
    g[outside[0]] = 20.0f;
    g[outside[1]] = -20.0f;
    g[outside[2]] = 2.7f;
    g[outside[3]] = -2.6f;
    sparse_vector v = run(s, g, 2, true);
    assert_int_equal(v.count, k);
    assert_well_formed(&v, d);
    assert_true(value_of(&v, outside[0]) == 20.0f);
    assert_true(value_of(&v, outside[1]) == -20.0f);
    assert_true(value_of(&v, outside[2]) == 2.7f);
    assert_false(contains(&v, outside[3]));
    /* All members have H = 1: the three smallest indices go. */
    assert_false(contains(&v, s1[0]) || contains(&v, s1[1]) || contains(&v, s1[2]));
    assert_true(value_of(&v, s1[3]) == g[s1[3]] && value_of(&v, s1[4]) == g[s1[4]]);
    const float *r = sparsifier_residual(s);
    assert_true(r[outside[3]] == -2.6f);
    for (int i = 0; i < 3; i++)
        assert_true(r[s1[i]] == g[s1[i]]); /* evicted: beta * 0 + g */
    for (uint32_t i = 0; i < v.count; i++)
        assert_true(r[v.indices[i]] == 0.0f);
    const float *h = sparsifier_importance(s);
    for (uint32_t i = 0; i < k; i++)
        assert_true(h[s1[i]] == 1.0f);
    sparsifier_free(s);
}

static void test_swaps_take_largest_residual_and_evict_smallest_importance(void **state)
{
    (void)state;
    const uint32_t d = 30, k = 5;
    sparsifier_config cfg = esgd_config(1.0 - 5.0 / 30.0);
    cfg.tau_mode = ESGD_TAU_FIXED;
    cfg.tau = 1.0f;
    cfg.beta = 0.5f;
    sparsifier *s = make(cfg, d, 2);
    assert_int_equal(sparsifier_capacity(s), k);
    uint32_t p[5];
    prime(s, d, p, k);
    bool in_p[30] = {false};
    for (uint32_t i = 0; i < k; i++)
        in_p[p[i]] = true;
    uint32_t free_j[25], nf = 0;
    for (uint32_t j = 0; j < d; j++)
        if (!in_p[j])
            free_j[nf++] = j;
    assert_int_equal(nf, 25);

    /* Round 2, fell: S = P, H[P] = 1. One candidate c evicts p0 (all H tie,
     * smallest index goes). */
    float g[30] = {0};
    uint32_t c = free_j[0];
    g[c] = 5.0f;
    sparse_vector v = run(s, g, 2, true);
    assert_false(contains(&v, p[0]));
    assert_true(value_of(&v, c) == 5.0f);
    for (uint32_t i = 1; i < k; i++)
        assert_true(contains(&v, p[i]));

    /* Round 3, fell: S = {p1..p4, c} (the final set), H: p1..p4 = 2, c = 1.
     * Two candidates evict c first (smallest H), then p1 (smallest index
     * among H = 2). */
    memset(g, 0, sizeof g);
    uint32_t x = free_j[1], y = free_j[2];
    g[x] = 3.0f;
    g[y] = -4.0f;
    for (uint32_t i = 1; i < k; i++)
        g[p[i]] = 0.25f;
    g[c] = 0.25f;
    v = run(s, g, 3, true);
    const float *h = sparsifier_importance(s);
    assert_true(h[p[0]] == 1.0f && h[p[1]] == 2.0f && h[c] == 1.0f);
    assert_int_equal(v.count, k);
    assert_false(contains(&v, c));
    assert_false(contains(&v, p[1]));
    assert_true(value_of(&v, x) == 3.0f && value_of(&v, y) == -4.0f);
    for (uint32_t i = 2; i < k; i++)
        assert_true(value_of(&v, p[i]) == 0.25f);
    const float *r = sparsifier_residual(s);
    assert_true(r[c] == 0.25f && r[p[1]] == 0.25f); /* evicted: 0.5 * 0 + g */

    /* Round 4, fell: S = {p2, p3, p4, x, y}. Seven candidates for five
     * places: |r| 8, 7, 6, 5, 4, 4, 2 (the tie for the last place goes to
     * the smaller index). Residual of z6 builds from round 3's zero. */
    memset(g, 0, sizeof g);
    const float mags[7] = {-8.0f, 7.0f, 6.0f, -5.0f, 4.0f, -4.0f, 2.0f};
    uint32_t z[7];
    for (int i = 0; i < 7; i++) {
        z[i] = free_j[3 + i];
        g[z[i]] = mags[i];
    }
    /* z[4] < z[5] tie at |r| = 4 for the fifth place: z[4] must win, whatever
     * the signs. */
    g[z[4]] = -4.0f;
    g[z[5]] = 4.0f;
    g[c] = 0.75f; /* not a candidate: r = 0.5 * 0.25 + 0.75 = 0.875 < 1 */
    for (uint32_t i = 2; i < k; i++)
        g[p[i]] = 0.125f;
    v = run(s, g, 4, true);
    assert_int_equal(v.count, k);
    assert_well_formed(&v, d);
    for (int i = 0; i < 5; i++)
        assert_true(value_of(&v, z[i]) == g[z[i]]);
    assert_false(contains(&v, z[5]) || contains(&v, z[6]));
    assert_true(r[z[5]] == 4.0f && r[z[6]] == 2.0f);
    assert_true(r[c] == 0.875f);
    /* All five members evicted; their residual is beta * 0 + g. */
    for (uint32_t i = 2; i < k; i++)
        assert_true(!contains(&v, p[i]) && r[p[i]] == 0.125f);
    assert_true(r[x] == 0.0f && r[y] == 0.0f);

    /* Round 5, fell: S = z[0..4], all H = 1. z[5]'s residual 0.5 * 4 + 1.5
     * = 3.5 is sent as such (not its g); z[6]'s 0.5 * 2 = 1 is not above
     * tau. One swap evicts z[0]. */
    memset(g, 0, sizeof g);
    g[z[5]] = 1.5f;
    for (int i = 0; i < 5; i++)
        g[z[i]] = 0.5f;
    v = run(s, g, 5, true);
    assert_int_equal(v.count, k);
    assert_true(value_of(&v, z[5]) == 3.5f);
    assert_false(contains(&v, z[0]) || contains(&v, z[6]));
    for (int i = 1; i < 5; i++)
        assert_true(value_of(&v, z[i]) == 0.5f);
    assert_true(r[z[6]] == 1.0f && r[z[0]] == 0.5f && r[z[5]] == 0.0f);
    sparsifier_free(s);
}

/* Round 0 leaves r = 1 outside S_0; in round 1 a member of S_1 sends g + r
 * in GRAD_PLUS_RESIDUAL mode and g in GRAD mode, and r is reset either way. */
static void test_selected_values_grad_or_grad_plus_residual(void **state)
{
    (void)state;
    const uint32_t d = 40, k = 10;
    for (int mode = 0; mode < 2; mode++) {
        sparsifier_config cfg = esgd_config(0.75);
        cfg.tau_mode = ESGD_TAU_FIXED;
        cfg.tau = HUGE_TAU;
        cfg.value_mode = mode ? ESGD_VALUE_GRAD_PLUS_RESIDUAL : ESGD_VALUE_GRAD;
        sparsifier *s = make(cfg, d, 5);
        float g[40];
        for (uint32_t j = 0; j < d; j++)
            g[j] = 1.0f;
        sparse_vector v0 = run(s, g, 0, false);
        bool in_s0[40] = {false};
        for (uint32_t i = 0; i < k; i++)
            in_s0[v0.indices[i]] = true;
        for (uint32_t j = 0; j < d; j++)
            g[j] = 2.0f;
        sparse_vector v1 = run(s, g, 1, false);
        int carried = 0;
        for (uint32_t i = 0; i < k; i++) {
            uint32_t j = v1.indices[i];
            float expected = (mode && !in_s0[j]) ? 3.0f : 2.0f;
            assert_true(v1.values[i] == expected);
            assert_true(sparsifier_residual(s)[j] == 0.0f);
            carried += !in_s0[j];
        }
        assert_true(carried > 0);
        sparsifier_free(s);
    }
}

static void test_nonfinite_gradient_leaves_state_unchanged(void **state)
{
    (void)state;
    const uint32_t d = 300;
    const sparsify_method methods[6] = {SPARSIFY_ESGD, SPARSIFY_TOPK, SPARSIFY_RANDK, SPARSIFY_THRESHOLD,
                                        SPARSIFY_DENSE, SPARSIFY_DGC};
    for (int m = 0; m < 6; m++) {
        sparsifier_config cfg = esgd_config(0.9);
        cfg.method = methods[m];
        sparsifier *a = make(cfg, d, 0), *b = make(cfg, d, 0);
        float *g = malloc(d * sizeof *g), *bad = malloc(d * sizeof *bad);
        float *h_before = malloc(d * sizeof *h_before), *r_before = malloc(d * sizeof *r_before);
        esgd_rng rng;
        rng_seed(&rng, 9, 0);
        for (uint32_t round = 0; round < 8; round++) {
            fill_normal(&rng, g, d, 0.1);
            if (round == 4) {
                if (sparsifier_importance(a))
                    memcpy(h_before, sparsifier_importance(a), d * sizeof *h_before);
                if (sparsifier_residual(a))
                    memcpy(r_before, sparsifier_residual(a), d * sizeof *r_before);
                for (int which = 0; which < 3; which++) {
                    memcpy(bad, g, d * sizeof *bad);
                    bad[d / 2 + (uint32_t)which] = which == 0 ? NAN : which == 1 ? INFINITY : -INFINITY;
                    sparse_vector out;
                    esgd_error err = {0};
                    assert_int_equal(sparsifier_select(a, bad, round, false, 1.0f, &out, &err), ESGD_ERR_NONFINITE);
                    assert_int_equal(err.status, ESGD_ERR_NONFINITE);
                }
                if (sparsifier_importance(a))
                    assert_memory_equal(h_before, sparsifier_importance(a), d * sizeof *h_before);
                if (sparsifier_residual(a))
                    assert_memory_equal(r_before, sparsifier_residual(a), d * sizeof *r_before);
                if (sparsifier_momentum(a)) /* the twin has the same momentum after 4 good rounds */
                    assert_memory_equal(sparsifier_momentum(b), sparsifier_momentum(a), d * sizeof(float));
            }
            /* The twin that never saw the bad gradient gives the same output,
             * so the random stream and the round memory were not touched. */
            sparse_vector va = run(a, g, round, round % 3 == 0);
            sparse_vector vb = run(b, g, round, round % 3 == 0);
            assert_int_equal(va.count, vb.count);
            assert_memory_equal(va.indices, vb.indices, va.count * sizeof *va.indices);
            assert_memory_equal(va.values, vb.values, va.count * sizeof *va.values);
        }
        free(g);
        free(bad);
        free(h_before);
        free(r_before);
        sparsifier_free(a);
        sparsifier_free(b);
    }
}

static void test_invariants_over_many_rounds(void **state)
{
    (void)state;
    const sparsify_method methods[6] = {SPARSIFY_ESGD, SPARSIFY_TOPK, SPARSIFY_RANDK, SPARSIFY_THRESHOLD,
                                        SPARSIFY_DENSE, SPARSIFY_DGC};
    const uint32_t dims[3] = {1, 97, 2053};
    const double drops[3] = {0.0, 0.5, 0.97};
    esgd_rng rng;
    rng_seed(&rng, 5, 0);
    float *g = malloc(2053 * sizeof *g);
    for (int m = 0; m < 6; m++) {
        for (int di = 0; di < 3; di++) {
            for (int dr = 0; dr < 3; dr++) {
                uint32_t d = dims[di];
                sparsifier_config cfg = esgd_config(drops[dr]);
                cfg.method = methods[m];
                cfg.beta = dr == 0 ? 1.0f : 0.9f;
                cfg.value_mode = (ESGD_VALUE_GRAD + dr) % 2 ? ESGD_VALUE_GRAD_PLUS_RESIDUAL : ESGD_VALUE_GRAD;
                cfg.dgc_warmup_rounds = 20; /* DGC: k shrinks over the first rounds */
                sparsifier *s = make(cfg, d, (uint32_t)dr);
                uint32_t k = sparsifier_keep_count(d, drops[dr]);
                bool full = methods[m] == SPARSIFY_DENSE || methods[m] == SPARSIFY_THRESHOLD;
                uint32_t cap = sparsifier_keep_at(&cfg, d, 0);
                uint32_t want_cap = full ? d : k;
                if (methods[m] == SPARSIFY_DGC && drops[dr] > DGC_WARMUP_DROP)
                    want_cap = sparsifier_keep_count(d, DGC_WARMUP_DROP);
                assert_int_equal(cap, want_cap);
                assert_int_equal(sparsifier_capacity(s), cap);
                uint32_t round = 0;
                for (int t = 0; t < 40; t++) {
                    fill_normal(&rng, g, d, 0.01);
                    if (t % 5 == 0) /* a few coordinates stand out */
                        g[rng_below(&rng, d)] = 1.0f;
                    if (t % 13 == 12)
                        memset(g, 0, d * sizeof *g);
                    round += rng_below(&rng, 10) == 0 ? 2 : 1; /* sometimes skip a round */
                    sparse_vector v = run(s, g, round, rng_below(&rng, 2));
                    assert_well_formed(&v, d);
                    assert_int_equal(v.capacity, cap);
                    if (!full || methods[m] == SPARSIFY_DENSE)
                        assert_int_equal(v.count, sparsifier_keep_at(&cfg, d, round));
                    const float *r = sparsifier_residual(s);
                    if (r)
                        for (uint32_t i = 0; i < v.count; i++)
                            assert_true(r[v.indices[i]] == 0.0f);
                }
                sparsifier_free(s);
            }
        }
    }
    free(g);
}

static void test_same_seed_same_sequence(void **state)
{
    (void)state;
    const uint32_t d = 3001;
    const sparsify_method methods[4] = {SPARSIFY_ESGD, SPARSIFY_RANDK, SPARSIFY_TOPK, SPARSIFY_DGC};
    float *g = malloc(d * sizeof *g);
    for (int m = 0; m < 4; m++) {
        sparsifier_config cfg = esgd_config(0.95);
        cfg.method = methods[m];
        cfg.seed = 77;
        sparsifier *a = make(cfg, d, 4), *b = make(cfg, d, 4), *other = make(cfg, d, 5);
        esgd_rng rng;
        rng_seed(&rng, 8, 0);
        int differ = 0;
        for (uint32_t round = 0; round < 30; round++) {
            fill_normal(&rng, g, d, 0.05);
            bool fell = round % 4 != 3;
            sparse_vector va = run(a, g, round, fell);
            sparse_vector vb = run(b, g, round, fell);
            sparse_vector vo = run(other, g, round, fell);
            assert_int_equal(va.count, vb.count);
            assert_memory_equal(va.indices, vb.indices, va.count * sizeof *va.indices);
            assert_memory_equal(va.values, vb.values, va.count * sizeof *va.values);
            differ += memcmp(va.indices, vo.indices, va.count * sizeof *va.indices) != 0;
        }
        if (methods[m] == SPARSIFY_TOPK || methods[m] == SPARSIFY_DGC)
            assert_int_equal(differ, 0); /* deterministic: no randomness at all */
        else
            assert_true(differ > 0);
        sparsifier_free(a);
        sparsifier_free(b);
        sparsifier_free(other);
    }
    free(g);
}

static const float *sort_magnitudes;

static int by_magnitude_then_index(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    float ma = fabsf(sort_magnitudes[a]), mb = fabsf(sort_magnitudes[b]);
    if (ma != mb)
        return ma > mb ? -1 : 1;
    return a < b ? -1 : a > b;
}

static int by_index(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    return a < b ? -1 : a > b;
}

static void test_topk_matches_brute_force(void **state)
{
    (void)state;
    const uint32_t d = 500;
    sparsifier_config cfg = SPARSIFIER_CONFIG_DEFAULT;
    cfg.method = SPARSIFY_TOPK;
    cfg.drop_ratio = 0.9;
    sparsifier *s = make(cfg, d, 0);
    const uint32_t k = 50;
    assert_int_equal(sparsifier_capacity(s), k);
    assert_null(sparsifier_importance(s));
    float g[500], r[500] = {0}, acc[500];
    uint32_t order[500];
    esgd_rng rng;
    rng_seed(&rng, 11, 0);
    for (uint32_t round = 0; round < 25; round++) {
        /* Quarter steps so ties in |g + r| are common. */
        for (uint32_t j = 0; j < d; j++)
            g[j] = (float)((int)rng_below(&rng, 9) - 4) * 0.25f;
        for (uint32_t j = 0; j < d; j++) {
            acc[j] = g[j] + r[j];
            order[j] = j;
        }
        sort_magnitudes = acc;
        qsort(order, d, sizeof order[0], by_magnitude_then_index);
        qsort(order, k, sizeof order[0], by_index);
        sparse_vector v = run(s, g, round, false);
        assert_int_equal(v.count, k);
        assert_memory_equal(v.indices, order, k * sizeof order[0]);
        for (uint32_t i = 0; i < k; i++) {
            assert_true(v.values[i] == acc[order[i]]);
            acc[order[i]] = 0.0f;
        }
        memcpy(r, acc, sizeof r);
        assert_memory_equal(sparsifier_residual(s), r, sizeof r);
    }
    sparsifier_free(s);
}

static void test_threshold_matches_reference(void **state)
{
    (void)state;
    const uint32_t d = 400;
    sparsifier_config cfg = SPARSIFIER_CONFIG_DEFAULT;
    cfg.method = SPARSIFY_THRESHOLD;
    cfg.threshold = 0.3f;
    sparsifier *s = make(cfg, d, 0);
    assert_int_equal(sparsifier_capacity(s), d);
    assert_null(sparsifier_importance(s));
    float g[400], r[400] = {0};
    esgd_rng rng;
    rng_seed(&rng, 12, 0);
    uint32_t total = 0;
    for (uint32_t round = 0; round < 20; round++) {
        fill_normal(&rng, g, d, 0.15);
        sparse_vector v = run(s, g, round, false);
        assert_well_formed(&v, d);
        uint32_t n = 0;
        for (uint32_t j = 0; j < d; j++) {
            float acc = g[j] + r[j];
            if (fabsf(acc) > 0.3f) {
                assert_true(n < v.count);
                assert_int_equal(v.indices[n], j);
                assert_true(v.values[n] == acc);
                n++;
                r[j] = 0.0f;
            } else {
                r[j] = acc;
            }
        }
        assert_int_equal(v.count, n);
        assert_memory_equal(sparsifier_residual(s), r, sizeof r);
        total += n;
    }
    assert_true(total > 100 && total < 20 * d); /* some but not all sent */
    sparsifier_free(s);
}

static void test_randk_is_roughly_uniform(void **state)
{
    (void)state;
    const uint32_t d = 20;
    sparsifier_config cfg = SPARSIFIER_CONFIG_DEFAULT;
    cfg.method = SPARSIFY_RANDK;
    cfg.drop_ratio = 0.75;
    sparsifier *s = make(cfg, d, 0);
    assert_int_equal(sparsifier_capacity(s), 5);
    assert_null(sparsifier_importance(s));
    assert_null(sparsifier_residual(s));
    float g[20];
    for (uint32_t j = 0; j < d; j++)
        g[j] = (float)j + 0.5f;
    int counts[20] = {0};
    const int rounds = 4000;
    for (int t = 0; t < rounds; t++) {
        sparse_vector v = run(s, g, (uint32_t)t, false);
        assert_int_equal(v.count, 5);
        assert_well_formed(&v, d);
        for (uint32_t i = 0; i < v.count; i++) {
            assert_true(v.values[i] == g[v.indices[i]]);
            counts[v.indices[i]]++;
        }
    }
    /* Each coordinate: mean 1000, standard deviation about 27. */
    for (uint32_t j = 0; j < d; j++)
        assert_true(abs(counts[j] - 1000) < 150);
    sparsifier_free(s);
}

static void test_local_loss_signal(void **state)
{
    (void)state;
    const uint32_t d = 100, k = 10;
    sparsifier_config cfg = esgd_config(0.9);
    cfg.loss_signal = ESGD_LOSS_SIGNAL_LOCAL;
    cfg.tau_mode = ESGD_TAU_FIXED;
    cfg.tau = HUGE_TAU;
    cfg.eps = 1.0f; /* weights 2 vs 1 after one fell round: a redraw is a different set */
    sparsifier *s = make(cfg, d, 0);
    float g[100] = {0};
    sparse_vector out;
    esgd_error err = {0};
    assert_int_equal(sparsifier_select(s, g, 0, false, 5.0f, &out, &err), ESGD_OK);
    assert_int_equal(sparsifier_select(s, g, 1, false, 4.0f, &out, &err), ESGD_OK);
    uint32_t s1[10];
    memcpy(s1, out.indices, sizeof s1);
    /* Local loss fell (4 -> 3) while the global flag says rose: kept. */
    assert_int_equal(sparsifier_select(s, g, 2, false, 3.0f, &out, &err), ESGD_OK);
    assert_memory_equal(out.indices, s1, sizeof s1);
    assert_true(sparsifier_importance(s)[s1[0]] == 1.0f);
    /* Local loss rose (3 -> 3.5) while the global flag says fell: resampled,
     * H untouched. */
    assert_int_equal(sparsifier_select(s, g, 3, true, 3.5f, &out, &err), ESGD_OK);
    assert_memory_not_equal(out.indices, s1, sizeof s1);
    float total = 0;
    for (uint32_t j = 0; j < d; j++)
        total += sparsifier_importance(s)[j];
    assert_true(total == (float)k);
    sparsifier_free(s);
}

/* After a skipped round there is no S_{t-1}: even with loss_fell the
 * selection is a weighted draw and H does not move. */
static void test_skipped_round_counts_as_not_fell(void **state)
{
    (void)state;
    const uint32_t d = 100;
    sparsifier_config cfg = esgd_config(0.9);
    cfg.tau_mode = ESGD_TAU_FIXED;
    cfg.tau = HUGE_TAU;
    sparsifier *s = make(cfg, d, 0);
    uint32_t s1[10];
    prime(s, d, s1, 10);
    float g[100] = {0};
    sparse_vector v = run(s, g, 3, true); /* round 2 skipped */
    assert_memory_not_equal(v.indices, s1, sizeof s1);
    for (uint32_t j = 0; j < d; j++)
        assert_true(sparsifier_importance(s)[j] == 0.0f);
    uint32_t s3[10];
    memcpy(s3, v.indices, sizeof s3);
    v = run(s, g, 4, true); /* consecutive again */
    assert_memory_equal(v.indices, s3, sizeof s3);
    sparsifier_free(s);

    /* An agent whose first call is round 7 has nothing to keep either. */
    s = make(cfg, d, 0);
    v = run(s, g, 7, true);
    assert_int_equal(v.count, 10);
    for (uint32_t j = 0; j < d; j++)
        assert_true(sparsifier_importance(s)[j] == 0.0f);
    sparsifier_free(s);
}

static void test_esgd_drop_zero_sends_everything(void **state)
{
    (void)state;
    const uint32_t d = 64;
    sparsifier_config cfg = esgd_config(0.0);
    sparsifier *s = make(cfg, d, 0);
    assert_int_equal(sparsifier_capacity(s), d);
    float g[64];
    esgd_rng rng;
    rng_seed(&rng, 2, 0);
    for (uint32_t round = 0; round < 5; round++) {
        fill_normal(&rng, g, d, 1.0);
        sparse_vector v = run(s, g, round, round == 3);
        assert_int_equal(v.count, d);
        for (uint32_t j = 0; j < d; j++) {
            assert_int_equal(v.indices[j], j);
            assert_true(v.values[j] == g[j]);
        }
    }
    sparsifier_free(s);
}

/* ---- large d: the sampled-band selection against a reference -------- */

/* Order for the reference: |r| descending, then index ascending. */
static const float *ref_r;
static int by_residual_then_index(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    float ma = fabsf(ref_r[a]), mb = fabsf(ref_r[b]);
    if (ma != mb)
        return ma > mb ? -1 : 1;
    return a < b ? -1 : 1;
}

/* Order for the reference: H ascending, then index ascending. */
static const float *ref_h;
static int by_importance_then_index(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    if (ref_h[a] != ref_h[b])
        return ref_h[a] < ref_h[b] ? -1 : 1;
    return a < b ? -1 : 1;
}

/* One "loss fell" round of the contract, written plainly: S = S_{t-1},
 * H += 1 on S, r aged outside S, the largest candidates (ties to the smaller
 * index) evict the members with the smallest (H, index). Fills want[d]
 * with 1 (sent as g), 2 (sent as r) or 0, and updates h and r. */
static void reference_fell_round(uint32_t d, uint32_t k, const uint32_t *prev, const float *g, float beta,
                                 float *h, float *r, uint8_t *want, float *want_value)
{
    uint8_t *in = calloc(d, 1);
    uint32_t *cand = malloc(d * sizeof *cand), *members = malloc(k * sizeof *members);
    double sum = 0;
    for (uint32_t j = 0; j < d; j++)
        sum += fabsf(g[j]);
    float tau = (float)(sum / d);
    for (uint32_t i = 0; i < k; i++) {
        in[prev[i]] = 1;
        h[prev[i]] += 1.0f;
        members[i] = prev[i];
    }
    uint32_t nc = 0;
    for (uint32_t j = 0; j < d; j++) {
        if (in[j])
            continue;
        r[j] = beta * r[j] + g[j];
        if (fabsf(r[j]) > tau)
            cand[nc++] = j;
    }
    ref_r = r;
    qsort(cand, nc, sizeof *cand, by_residual_then_index);
    uint32_t swaps = nc < k ? nc : k;
    ref_h = h;
    qsort(members, k, sizeof *members, by_importance_then_index);
    memset(want, 0, d);
    for (uint32_t i = 0; i < k; i++) {
        uint32_t j = members[i];
        if (i < swaps) {
            r[j] = beta * r[j] + g[j];
        } else {
            want[j] = 1;
            want_value[j] = g[j];
            r[j] = 0.0f;
        }
    }
    for (uint32_t i = 0; i < swaps; i++) {
        want[cand[i]] = 2;
        want_value[cand[i]] = r[cand[i]];
        r[cand[i]] = 0.0f;
    }
    free(in);
    free(cand);
    free(members);
}

/* At LeNet-like d the selection guesses a band from a sample and resolves
 * only that band. Every kind of round must still give exactly the
 * contract's result: many candidates (swaps = k), few (swaps < k, members
 * evicted by H), and heavy ties at the boundary (the smaller index wins). */
static void test_large_dim_fell_rounds_match_reference(void **state)
{
    (void)state;
    const uint32_t d = 30011;
    sparsifier_config cfg = esgd_config(0.875);
    cfg.beta = 0.5f;
    sparsifier *s = make(cfg, d, 4);
    uint32_t k = sparsifier_capacity(s);
    float *g = malloc(d * sizeof *g), *h = malloc(d * sizeof *h), *r = malloc(d * sizeof *r);
    float *want_value = malloc(d * sizeof *want_value);
    uint8_t *want = malloc(d);
    uint32_t *prev = malloc(k * sizeof *prev);
    esgd_rng rng;
    rng_seed(&rng, 11, 0);
    fill_normal(&rng, g, d, 1.0);
    run(s, g, 0, false);
    sparse_vector v = run(s, g, 1, false);
    for (uint32_t round = 2; round < 14; round++) {
        memcpy(prev, v.indices, k * sizeof *prev);
        memcpy(h, sparsifier_importance(s), d * sizeof *h);
        memcpy(r, sparsifier_residual(s), d * sizeof *r);
        int kind = round % 3;
        if (kind == 0) {
            fill_normal(&rng, g, d, 1.0); /* many candidates */
        } else if (kind == 1) {
            /* Few candidates: a few hundred huge entries raise tau above
             * every other residual. */
            for (uint32_t j = 0; j < d; j++)
                g[j] = (float)(rng_normal(&rng) * 1e-3);
            for (uint32_t i = 0; i < k / 10; i++)
                g[rng_below(&rng, d)] = 1000.0f + 100.0f * (float)rng_below(&rng, 4);
        } else {
            /* Ties: magnitudes from a handful of values. */
            for (uint32_t j = 0; j < d; j++)
                g[j] = (float)(int)rng_below(&rng, 9) - 4.0f;
        }
        reference_fell_round(d, k, prev, g, cfg.beta, h, r, want, want_value);
        v = run(s, g, round, true);
        assert_int_equal(v.count, k);
        assert_well_formed(&v, d);
        for (uint32_t i = 0; i < k; i++) {
            uint32_t j = v.indices[i];
            assert_true(want[j] != 0);
            assert_true(v.values[i] == want_value[j]);
        }
        assert_memory_equal(sparsifier_importance(s), h, d * sizeof *h);
        assert_memory_equal(sparsifier_residual(s), r, d * sizeof *r);
    }
    free(g);
    free(h);
    free(r);
    free(want_value);
    free(want);
    free(prev);
    sparsifier_free(s);
}

/* Weighted sampling at large d (the per-coordinate clocks and the band):
 * S_1 gets H = 3, the rest 0, eps = 1, so weights 4 and 1. For exponential
 * clocks the inclusion probability of weight w is close to 1 - exp(-w T)
 * with T solving sum_j (1 - exp(-w_j T)) = k; the heavy coordinates' mean
 * rate over many rounds must match it. */
static void test_large_dim_weighted_sampling_rates(void **state)
{
    (void)state;
    const uint32_t d = 16384;
    sparsifier_config cfg = esgd_config(0.875);
    cfg.tau_mode = ESGD_TAU_FIXED;
    cfg.tau = HUGE_TAU;
    cfg.eps = 1.0f;
    sparsifier *s = make(cfg, d, 5);
    uint32_t k = sparsifier_capacity(s);
    uint32_t *s1 = malloc(k * sizeof *s1);
    prime(s, d, s1, k);
    float *g = calloc(d, sizeof *g);
    uint32_t round = 2;
    for (; round < 5; round++)
        run(s, g, round, true);
    uint8_t *heavy = calloc(d, 1);
    for (uint32_t i = 0; i < k; i++)
        heavy[s1[i]] = 1;
    double lo = 0, hi = 10;
    for (int it = 0; it < 100; it++) {
        double t = (lo + hi) / 2;
        double expect = k * (1 - exp(-4 * t)) + (d - k) * (1 - exp(-t));
        if (expect < k)
            lo = t;
        else
            hi = t;
    }
    double predicted = 1 - exp(-4 * lo);
    const int trials = 60;
    uint64_t heavy_hits = 0;
    for (int t = 0; t < trials; t++, round++) {
        sparse_vector v = run(s, g, round, false);
        assert_int_equal(v.count, k);
        assert_well_formed(&v, d);
        for (uint32_t i = 0; i < k; i++)
            heavy_hits += heavy[v.indices[i]];
    }
    double rate = heavy_hits / ((double)trials * k);
    /* About 0.37 here; the standard error of the mean rate is below 0.003. */
    assert_true(fabs(rate - predicted) < 0.015);
    free(s1);
    free(g);
    free(heavy);
    sparsifier_free(s);
}

/* ---- Deep Gradient Compression ---------------------------------------- */

static sparsifier_config dgc_config(double drop, float momentum, float clip, uint32_t warmup)
{
    sparsifier_config cfg = SPARSIFIER_CONFIG_DEFAULT;
    cfg.method = SPARSIFY_DGC;
    cfg.drop_ratio = drop;
    cfg.dgc_momentum = momentum;
    cfg.dgc_clip = clip;
    cfg.dgc_warmup_rounds = warmup;
    return cfg;
}

/* d = 3, k = 1, m = 0.5, worked by hand: u = m u + g, v += u, the largest
 * |v| is sent and its u and v restart from 0. Round 1 shows the momentum
 * (coordinate 0 sends 1 + 1.5), round 2 the masking (coordinate 1's u was
 * zeroed when it was sent in round 0, so it now carries only round 1's g). */
static void test_dgc_momentum_and_masking_by_hand(void **state)
{
    (void)state;
    sparsifier *s = make(dgc_config(0.7, 0.5f, 0.0f, 0), 3, 0);
    assert_int_equal(sparsifier_capacity(s), 1);
    assert_null(sparsifier_importance(s));
    const float g[4][3] = {{1, 2, 0}, {1, 1, 0}, {0, 0, 1}, {0, 0, 0}};
    const uint32_t sent[4] = {1, 0, 1, 2};
    const float value[4] = {2.0f, 2.5f, 1.5f, 1.5f};
    const float u_after[4][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0, 0, 0}};
    const float v_after[4][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0, 0, 0}};
    for (uint32_t t = 0; t < 4; t++) {
        sparse_vector v = run(s, g[t], t, false);
        assert_int_equal(v.count, 1);
        assert_int_equal(v.indices[0], sent[t]);
        assert_true(v.values[0] == value[t]);
        assert_memory_equal(sparsifier_momentum(s), u_after[t], sizeof u_after[t]);
        assert_memory_equal(sparsifier_residual(s), v_after[t], sizeof v_after[t]);
    }
    sparsifier_free(s);
}

/* Many rounds at d = 500 against a brute-force reference of the same float
 * arithmetic: values, selection (largest |v|, ties to the smaller index)
 * and both state arrays, bit for bit. */
static void test_dgc_matches_reference(void **state)
{
    (void)state;
    const uint32_t d = 500;
    sparsifier_config cfg = dgc_config(0.95, 0.9f, 0.0f, 0);
    sparsifier *s = make(cfg, d, 0);
    uint32_t k = sparsifier_keep_count(d, 0.95);
    float *g = malloc(d * sizeof *g), *u = calloc(d, sizeof *u), *v = calloc(d, sizeof *v);
    uint32_t *order = malloc(d * sizeof *order);
    esgd_rng rng;
    rng_seed(&rng, 21, 0);
    for (uint32_t t = 0; t < 25; t++) {
        fill_normal(&rng, g, d, 0.1);
        if (t % 7 == 6) /* ties at zero */
            for (uint32_t j = 0; j < d; j += 2)
                g[j] = 0.0f;
        for (uint32_t j = 0; j < d; j++) {
            u[j] = 0.9f * u[j] + 1.0f * g[j];
            v[j] += u[j];
            order[j] = j;
        }
        sort_magnitudes = v;
        qsort(order, d, sizeof *order, by_magnitude_then_index);
        qsort(order, k, sizeof *order, by_index);
        sparse_vector out = run(s, g, t, false);
        assert_int_equal(out.count, k);
        assert_well_formed(&out, d);
        for (uint32_t i = 0; i < k; i++) {
            uint32_t j = order[i];
            assert_int_equal(out.indices[i], j);
            assert_true(out.values[i] == v[j]);
            u[j] = 0.0f;
            v[j] = 0.0f;
        }
        assert_memory_equal(sparsifier_momentum(s), u, d * sizeof *u);
        assert_memory_equal(sparsifier_residual(s), v, d * sizeof *v);
    }
    free(g);
    free(u);
    free(v);
    free(order);
    sparsifier_free(s);
}

/* ||g|| = 5 over a bound of 1 is scaled to norm 1 before it enters u; a
 * gradient under the bound, or any with clipping off, enters unchanged. */
static void test_dgc_clipping(void **state)
{
    (void)state;
    const float big[4] = {3, 4, 0, 0}, small[4] = {0, 0, 0.3f, 0.4f};
    sparsifier *s = make(dgc_config(0.5, 0.0f, 1.0f, 0), 4, 0);
    sparse_vector v = run(s, big, 0, false);
    assert_int_equal(v.count, 2);
    assert_int_equal(v.indices[0], 0);
    assert_int_equal(v.indices[1], 1);
    assert_float_equal(v.values[0], 0.6f, 1e-6f);
    assert_float_equal(v.values[1], 0.8f, 1e-6f);
    v = run(s, small, 1, false);
    assert_int_equal(v.indices[0], 2);
    assert_true(v.values[0] == 0.3f && v.values[1] == 0.4f);
    sparsifier_free(s);

    s = make(dgc_config(0.5, 0.0f, 0.0f, 0), 4, 0);
    v = run(s, big, 0, false);
    assert_true(v.values[0] == 3.0f && v.values[1] == 4.0f);
    sparsifier_free(s);
}

/* Warm-up: k starts at the 0.75 drop, falls geometrically to the target's
 * k at round W and stays there; the count sent each round is that k. */
static void test_dgc_warmup_schedule(void **state)
{
    (void)state;
    const uint32_t d = 10000, w = 10;
    sparsifier_config cfg = dgc_config(0.99, 0.9f, 0.0f, w);
    assert_int_equal(sparsifier_keep_at(&cfg, d, 0), 2500);
    assert_int_equal(sparsifier_keep_at(&cfg, d, 5), 500); /* 0.25 * (0.04)^(1/2) = 0.05 */
    assert_int_equal(sparsifier_keep_at(&cfg, d, 10), 100);
    assert_int_equal(sparsifier_keep_at(&cfg, d, 1000), 100);
    sparsifier *s = make(cfg, d, 0);
    assert_int_equal(sparsifier_capacity(s), 2500);
    float *g = malloc(d * sizeof *g);
    esgd_rng rng;
    rng_seed(&rng, 3, 0);
    uint32_t before = UINT32_MAX;
    for (uint32_t t = 0; t < 14; t++) {
        fill_normal(&rng, g, d, 1.0);
        uint32_t k = sparsifier_keep_at(&cfg, d, t);
        assert_true(k <= before && k >= 100);
        assert_true(t < w ? k > 100 : k == 100);
        sparse_vector v = run(s, g, t, false);
        assert_int_equal(v.count, k);
        assert_well_formed(&v, d);
        before = k;
    }
    sparsifier_free(s);
    free(g);

    cfg.dgc_warmup_rounds = 0; /* off */
    assert_int_equal(sparsifier_keep_at(&cfg, d, 0), 100);
    cfg.dgc_warmup_rounds = w;
    cfg.drop_ratio = 0.5; /* below the warm-up's start: nothing to ramp */
    assert_int_equal(sparsifier_keep_at(&cfg, d, 0), 5000);
    cfg.drop_ratio = 0.99;
    cfg.method = SPARSIFY_TOPK; /* only DGC warms up */
    assert_int_equal(sparsifier_keep_at(&cfg, d, 0), 100);
    cfg.method = SPARSIFY_DENSE;
    assert_int_equal(sparsifier_keep_at(&cfg, d, 0), d);
}

/* Saved after a few rounds and loaded into a fresh sparsifier, every
 * method carries on exactly (DGC: u and v both restored; the methods
 * without some array have an empty block there, which must read as absent);
 * a non-finite DGC momentum is refused and leaves the target untouched. */
static void test_state_round_trip_every_method(void **state)
{
    (void)state;
    const uint32_t d = 200;
    const sparsify_method methods[6] = {SPARSIFY_DGC, SPARSIFY_TOPK, SPARSIFY_RANDK, SPARSIFY_THRESHOLD,
                                        SPARSIFY_DENSE, SPARSIFY_ESGD};
    float *g = malloc(d * sizeof *g);
    for (int m = 0; m < 6; m++) {
        sparsifier_config cfg = dgc_config(0.9, 0.9f, 2.0f, 5);
        cfg.method = methods[m];
        sparsifier *a = make(cfg, d, 0), *b = make(cfg, d, 0);
        esgd_rng rng;
        rng_seed(&rng, 4, 0);
        for (uint32_t t = 0; t < 3; t++) {
            fill_normal(&rng, g, d, 1.0);
            run(a, g, t, t == 2);
        }
        state_writer w;
        state_writer_init(&w);
        sparsifier_save_state(a, &w);
        assert_false(w.failed);
        esgd_error err = {0};
        state_reader r;
        if (methods[m] == SPARSIFY_DGC) {
            /* The momentum block is the last d floats: poison one. */
            r = (state_reader){malloc(w.size), w.size, 0};
            memcpy(r.data, w.data, w.size);
            float nan = NAN;
            memcpy(r.data + w.size - sizeof nan, &nan, sizeof nan);
            esgd_status poisoned = sparsifier_load_state(b, &r, &err);
            if (poisoned != ESGD_ERR_NONFINITE)
                fail_msg("poisoned momentum: %s", err.message);
            state_reader_destroy(&r);
            for (uint32_t j = 0; j < d; j++)
                assert_true(sparsifier_momentum(b)[j] == 0.0f && sparsifier_residual(b)[j] == 0.0f);
        }
        r = (state_reader){malloc(w.size), w.size, 0};
        memcpy(r.data, w.data, w.size);
        esgd_status st = sparsifier_load_state(b, &r, &err);
        if (st != ESGD_OK)
            fail_msg("%s: %s", esgd_status_name(st), err.message);
        assert_int_equal(state_reader_left(&r), 0);
        state_reader_destroy(&r);
        state_writer_destroy(&w);
        if (sparsifier_momentum(a))
            assert_memory_equal(sparsifier_momentum(a), sparsifier_momentum(b), d * sizeof(float));
        for (uint32_t t = 3; t < 8; t++) {
            fill_normal(&rng, g, d, 1.0);
            sparse_vector va = run(a, g, t, t % 2), vb = run(b, g, t, t % 2);
            assert_int_equal(va.count, vb.count);
            assert_memory_equal(va.indices, vb.indices, va.count * sizeof *va.indices);
            assert_memory_equal(va.values, vb.values, va.count * sizeof *va.values);
        }
        sparsifier_free(a);
        sparsifier_free(b);
    }
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_count),
        cmocka_unit_test(test_config_validation),
        cmocka_unit_test(test_dense_sends_everything),
        cmocka_unit_test(test_first_rounds_are_uniform_random),
        cmocka_unit_test(test_loss_fell_keeps_selection_and_raises_importance),
        cmocka_unit_test(test_weighted_sampling_probability),
        cmocka_unit_test(test_loss_rose_samples_by_importance),
        cmocka_unit_test(test_residual_decays_on_unselected),
        cmocka_unit_test(test_tau_is_mean_abs_gradient),
        cmocka_unit_test(test_swaps_take_largest_residual_and_evict_smallest_importance),
        cmocka_unit_test(test_selected_values_grad_or_grad_plus_residual),
        cmocka_unit_test(test_nonfinite_gradient_leaves_state_unchanged),
        cmocka_unit_test(test_invariants_over_many_rounds),
        cmocka_unit_test(test_same_seed_same_sequence),
        cmocka_unit_test(test_topk_matches_brute_force),
        cmocka_unit_test(test_threshold_matches_reference),
        cmocka_unit_test(test_randk_is_roughly_uniform),
        cmocka_unit_test(test_local_loss_signal),
        cmocka_unit_test(test_skipped_round_counts_as_not_fell),
        cmocka_unit_test(test_esgd_drop_zero_sends_everything),
        cmocka_unit_test(test_large_dim_fell_rounds_match_reference),
        cmocka_unit_test(test_large_dim_weighted_sampling_rates),
        cmocka_unit_test(test_dgc_momentum_and_masking_by_hand),
        cmocka_unit_test(test_dgc_matches_reference),
        cmocka_unit_test(test_dgc_clipping),
        cmocka_unit_test(test_dgc_warmup_schedule),
        cmocka_unit_test(test_state_round_trip_every_method),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
