/* esgd-bench: the core's speed, as JSON on stdout. Training throughput,
 * sparsifier cost per round and codec throughput, single thread (set
 * OPENBLAS_NUM_THREADS=1). Timings live here, never in tests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esgd/codec.h"
#include "esgd/model.h"
#include "esgd/rng.h"
#include "esgd/sparsifier.h"
#include "esgd/runtime.h"

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define REPEATS 9

/* Samples/s of forward + backward + SGD step at batch 32 on random data. */
static double bench_training(model_kind kind, int steps)
{
    const uint32_t batch = 32;
    esgd_error err = {0};
    esgd_model *m = model_new(kind, batch, &err);
    if (!m) {
        fprintf(stderr, "esgd-bench: %s\n", err.message);
        exit(1);
    }
    model_init_params(m, 1);
    float *x = malloc(sizeof(float) * batch * MODEL_INPUT_SIZE);
    uint8_t y[32];
    esgd_rng rng;
    rng_seed(&rng, 7, 0);
    for (uint32_t i = 0; i < batch * MODEL_INPUT_SIZE; i++)
        x[i] = (float)rng_uniform(&rng);
    for (uint32_t i = 0; i < batch; i++)
        y[i] = (uint8_t)rng_below(&rng, 10);
    double runs[REPEATS];
    for (int r = -1; r < REPEATS; r++) { /* r = -1 warms up */
        double t0 = monotonic_seconds();
        for (int s = 0; s < steps; s++) {
            float loss;
            model_forward_backward(m, x, y, batch, &loss);
            for (uint32_t j = 0; j < m->num_params; j++)
                m->params[j] -= 0.01f * m->grads[j];
        }
        if (r >= 0)
            runs[r] = (monotonic_seconds() - t0) / steps;
    }
    free(x);
    model_free(m);
    return batch / median(runs, REPEATS);
}

/* Median seconds per sparsifier_select at dimension d, over `rounds`
 * rounds after the two random ones, alternating loss fell / rose. */
static double bench_select(sparsify_method method, uint32_t d, double drop, int rounds, int loss_fell)
{
    esgd_error err = {0};
    sparsifier_config cfg = SPARSIFIER_CONFIG_DEFAULT;
    cfg.method = method;
    cfg.drop_ratio = drop;
    sparsifier *s = sparsifier_new(&cfg, d, 0, &err);
    float *g = malloc(sizeof(float) * d);
    if (!s || !g) {
        fprintf(stderr, "esgd-bench: %s\n", err.message);
        exit(1);
    }
    esgd_rng rng;
    rng_seed(&rng, 3, 0);
    for (uint32_t j = 0; j < d; j++)
        g[j] = (float)(rng_normal(&rng) * 0.01);
    sparse_vector out;
    double *t = malloc(sizeof(double) * (size_t)rounds);
    for (int r = 0; r < rounds + 2; r++) {
        double t0 = monotonic_seconds();
        sparsifier_select(s, g, (uint32_t)r, loss_fell, 1.0f, &out, &err);
        if (r >= 2)
            t[r - 2] = monotonic_seconds() - t0;
        /* Perturb so top-k/threshold see a moving gradient. */
        g[rng_below(&rng, d)] += 0.05f;
    }
    double med = median(t, rounds);
    free(t);
    free(g);
    sparsifier_free(s);
    return med;
}

/* Encode and decode MB/s (of encoded bytes) for an update of k of d. */
static void bench_codec(uint32_t d, double drop, value_format fmt, double *enc_mbs, double *dec_mbs, size_t *bytes)
{
    esgd_error err = {0};
    uint32_t k = sparsifier_keep_count(d, drop);
    update_msg u = {.round = 5, .agent = 1, .samples = 32, .loss = 0.5f};
    strcpy(u.job, "bench");
    u.grad.dim = d;
    u.grad.count = k;
    u.grad.capacity = k;
    u.grad.indices = malloc(sizeof(uint32_t) * k);
    u.grad.values = malloc(sizeof(float) * k);
    esgd_rng rng;
    rng_seed(&rng, 5, 0);
    /* Evenly spread random indices: pick k of d by selection sampling. */
    uint32_t chosen = 0;
    for (uint32_t j = 0; j < d && chosen < k; j++)
        if (rng_uniform(&rng) * (d - j) < (k - chosen))
            u.grad.indices[chosen++] = j;
    for (uint32_t i = 0; i < k; i++)
        u.grad.values[i] = (float)rng_normal(&rng) * 0.01f;
    esgd_buffer buf;
    buffer_init(&buf, codec_update_bound(d), &err);
    codec_decoder *dec = codec_decoder_new(&err);
    update_msg out = {0};
    out.grad.capacity = k;
    out.grad.indices = malloc(sizeof(uint32_t) * k);
    out.grad.values = malloc(sizeof(float) * k);
    double enc[REPEATS], decd[REPEATS];
    const int iters = 50;
    for (int r = 0; r < REPEATS; r++) {
        double t0 = monotonic_seconds();
        for (int i = 0; i < iters; i++)
            if (codec_encode_update(&buf, &u, fmt, &err) != ESGD_OK) {
                fprintf(stderr, "esgd-bench: encode: %s\n", err.message);
                exit(1);
            }
        enc[r] = (monotonic_seconds() - t0) / iters;
        t0 = monotonic_seconds();
        for (int i = 0; i < iters; i++)
            if (codec_decode_update(dec, buf.data, buf.size, d, &out, &err) != ESGD_OK) {
                fprintf(stderr, "esgd-bench: decode: %s\n", err.message);
                exit(1);
            }
        decd[r] = (monotonic_seconds() - t0) / iters;
    }
    *bytes = buf.size;
    *enc_mbs = (double)buf.size / median(enc, REPEATS) / 1e6;
    *dec_mbs = (double)buf.size / median(decd, REPEATS) / 1e6;
    free(u.grad.indices);
    free(u.grad.values);
    free(out.grad.indices);
    free(out.grad.values);
    buffer_destroy(&buf);
    codec_decoder_free(dec);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int steps = quick ? 20 : 200;
    printf("{\n  \"training_samples_per_second\": {\"batch\": 32, \"lenet\": %.0f, \"mlp\": %.0f},\n",
           bench_training(MODEL_KIND_LENET, steps), bench_training(MODEL_KIND_MLP, steps * 4));

    static const sparsify_method methods[] = {SPARSIFY_ESGD, SPARSIFY_TOPK, SPARSIFY_RANDK, SPARSIFY_THRESHOLD,
                                              SPARSIFY_DENSE};
    static const char *const method_names[] = {"esgd", "topk", "randk", "threshold", "dense"};
    static const uint32_t dims[] = {61706, 1000000};
    static const double drops[] = {0.875, 0.99};
    printf("  \"select_ms_per_round\": [\n");
    int first = 1;
    for (size_t mi = 0; mi < sizeof methods / sizeof methods[0]; mi++)
        for (size_t di = 0; di < 2; di++)
            for (size_t ri = 0; ri < 2; ri++) {
                int rounds = dims[di] > 100000 ? (quick ? 5 : 21) : (quick ? 11 : 101);
                double fell = bench_select(methods[mi], dims[di], drops[ri], rounds, 1) * 1e3;
                double rose = bench_select(methods[mi], dims[di], drops[ri], rounds, 0) * 1e3;
                printf("%s    {\"method\": \"%s\", \"dim\": %u, \"drop\": %g, \"loss_fell\": %.4f, "
                       "\"loss_rose\": %.4f}",
                       first ? "" : ",\n", method_names[mi], dims[di], drops[ri], fell, rose);
                first = 0;
            }
    printf("\n  ],\n  \"codec\": [\n");
    first = 1;
    static const double codec_drops[] = {0.0, 0.875, 0.99};
    for (size_t i = 0; i < 3; i++)
        for (int f = 0; f < 2; f++) {
            double enc, dec;
            size_t bytes;
            bench_codec(61706, codec_drops[i], f ? VALUE_FORMAT_F16 : VALUE_FORMAT_F32, &enc, &dec, &bytes);
            printf("%s    {\"dim\": 61706, \"drop\": %g, \"values\": \"%s\", \"bytes\": %zu, "
                   "\"encode_MBps\": %.0f, \"decode_MBps\": %.0f}",
                   first ? "" : ",\n", codec_drops[i], f ? "f16" : "f32", bytes, enc, dec);
            first = 0;
        }
    printf("\n  ]\n}\n");
    return 0;
}
