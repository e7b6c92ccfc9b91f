/* esgd-bench: the core's speed, as JSON on stdout. Training throughput,
 * sparsifier cost per round, wire size per sent coordinate against the
 * information bound, codec throughput, the cost of signing and checking a
 * message, and aggregation throughput next to the memory bandwidth; single thread (set OPENBLAS_NUM_THREADS=1). Timings
 * live here, never in tests. */
#include <cblas.h>
#include <math.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "esgd/aggregator.h"
#include "esgd/codec.h"
#include "esgd/dataset.h"
#include "esgd/envelope.h"
#include "esgd/job.h"
#include "esgd/json_writer.h"
#include "esgd/model.h"
#include "esgd/rng.h"
#include "esgd/round_times.h"
#include "esgd/sparsifier.h"
#include "esgd/runtime.h"

static double median(double *v, int n)
{
    return quantile_of(v, (size_t)n, 0.5);
}

#define REPEATS 9

/* Samples/s of forward + backward + SGD step at batch 32 on random
 * MNIST-shaped data; layerwise runs even LeNet layer by layer. */
static double bench_training(const char *spec_text, bool layerwise, int steps)
{
    const uint32_t batch = 32;
    esgd_error err = {0};
    model_spec spec;
    esgd_model *m = NULL;
    if (model_spec_parse(&spec, spec_text, (const uint32_t[]){28, 28}, 2, 10, &err) == ESGD_OK)
        m = layerwise ? model_new_layerwise(&spec, batch, &err) : model_new(&spec, batch, &err);
    if (!m) {
        fprintf(stderr, "esgd-bench: %s\n", err.message);
        exit(1);
    }
    model_init_params(m, 1);
    float *x = malloc(sizeof(float) * batch * m->input_size);
    uint8_t y[32];
    esgd_rng rng;
    rng_seed(&rng, 7, 0);
    for (uint32_t i = 0; i < batch * m->input_size; i++)
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

static void *alloc_or_die(size_t bytes)
{
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "esgd-bench: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static double user_cpu_seconds(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec * 1e-6;
}

/* esgd-bench --train DIR: LeNet on DIR's MNIST train split as a plain
 * single-process training loop, the work bench/vs-pytorch.sh times on
 * PyTorch too. Each epoch draws a fresh permutation; each batch of 32 is
 * gathered and scaled (dataset_fill_batch), then forward, softmax
 * cross-entropy, backward and the SGD step params -= lr * grads, lr 0.1
 * in epoch 0 and halved each epoch. Only that loop is timed (loading the
 * data and the final test evaluation are not). One JSON line on stdout. */
static int bench_train_mnist(const char *dir, uint32_t epochs, const char *model_text)
{
    const uint32_t batch = 32;
    esgd_error err = {0};
    esgd_dataset train = {0}, test = {0};
    model_spec spec;
    esgd_model *m = NULL;
    if (dataset_load_split(&train, dir, "train", NULL, 0, &err) != ESGD_OK ||
        dataset_load_split(&test, dir, "t10k", NULL, 0, &err) != ESGD_OK ||
        model_spec_parse(&spec, model_text, train.dims, train.rank, 10, &err) != ESGD_OK ||
        !(m = model_new(&spec, batch, &err))) {
        fprintf(stderr, "esgd-bench: %s\n", err.message);
        return 1;
    }
    blas_threads_default();
    model_init_params(m, 1);
    uint32_t n = train.count, steps = n / batch;
    uint32_t *perm = alloc_or_die(sizeof *perm * n);
    float *x = alloc_or_die(sizeof *x * batch * m->input_size);
    uint8_t y[32];
    esgd_rng rng;
    rng_seed(&rng, 11, 0);
    double loss_sum = 0;
    double t0 = monotonic_seconds(), u0 = user_cpu_seconds();
    for (uint32_t e = 0; e < epochs; e++) {
        float lr = 0.1f * powf(0.5f, (float)e);
        for (uint32_t i = 0; i < n; i++)
            perm[i] = i;
        for (uint32_t i = n; i > 1; i--) {
            uint32_t j = rng_below(&rng, i), t = perm[i - 1];
            perm[i - 1] = perm[j];
            perm[j] = t;
        }
        loss_sum = 0;
        for (uint32_t s = 0; s < steps; s++) {
            dataset_fill_batch(&train, perm + (size_t)s * batch, batch, x, y);
            float loss;
            model_forward_backward(m, x, y, batch, &loss);
            for (uint32_t j = 0; j < m->num_params; j++)
                m->params[j] -= lr * m->grads[j];
            loss_sum += loss;
        }
    }
    double wall = monotonic_seconds() - t0, user = user_cpu_seconds() - u0;
    float accuracy = 0;
    if (model_evaluate(m, &test, 0, &accuracy, NULL, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-bench: %s\n", err.message);
        return 1;
    }
    double samples = (double)epochs * steps * batch;
    printf("{\"impl\": \"esgd\", \"model\": \"%s\", \"batch\": %u, \"epochs\": %u, \"samples\": %.0f, "
           "\"seconds\": %.3f, \"user_seconds\": %.3f, \"samples_per_second\": %.0f, "
           "\"samples_per_user_second\": %.0f, \"last_epoch_loss\": %.4f, \"test_accuracy\": %.4f, "
           "\"blas_core\": \"%s\"}\n",
           model_text, batch, epochs, samples, wall, user, samples / wall, samples / user, loss_sum / steps,
           accuracy, openblas_get_corename());
    free(perm);
    free(x);
    model_free(m);
    dataset_destroy(&train);
    dataset_destroy(&test);
    return 0;
}

/* Median seconds per sparsifier_select at dimension d, over `rounds`
 * rounds after the two random ones, alternating loss fell / rose. */
static double bench_select(sparsify_method method, uint32_t d, double drop, int rounds, int loss_fell)
{
    esgd_error err = {0};
    sparsifier_config cfg = SPARSIFIER_CONFIG_DEFAULT;
    cfg.method = method;
    cfg.drop_ratio = drop;
    cfg.dgc_warmup_rounds = 0; /* DGC at its steady-state k */
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

/* An update of k of d coordinates, chosen uniformly (selection sampling),
 * with small normal values. */
static update_msg random_update(uint32_t d, uint32_t k, uint64_t seed)
{
    update_msg u = {.round = 5, .agent = 1, .samples = 32, .loss = 0.5f};
    strcpy(u.job, "bench");
    u.grad.dim = d;
    u.grad.count = k;
    u.grad.capacity = k;
    u.grad.indices = alloc_or_die(sizeof(uint32_t) * (k ? k : 1));
    u.grad.values = alloc_or_die(sizeof(float) * (k ? k : 1));
    esgd_rng rng;
    rng_seed(&rng, seed, 0);
    uint32_t chosen = 0;
    for (uint32_t j = 0; j < d && chosen < k; j++)
        if (rng_uniform(&rng) * (d - j) < (k - chosen))
            u.grad.indices[chosen++] = j;
    for (uint32_t i = 0; i < k; i++)
        u.grad.values[i] = (float)rng_normal(&rng) * 0.01f;
    return u;
}

static void free_update(update_msg *u)
{
    free(u->grad.indices);
    free(u->grad.values);
}

static void encode_or_die(esgd_buffer *buf, const update_msg *u, value_format fmt)
{
    esgd_error err = {0};
    if (codec_encode_update(buf, u, fmt, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-bench: encode: %s\n", err.message);
        exit(1);
    }
}

/* Encode and decode MB/s (of encoded bytes) for an update of k of d. */
static void bench_codec(uint32_t d, double drop, value_format fmt, double *enc_mbs, double *dec_mbs, size_t *bytes)
{
    esgd_error err = {0};
    uint32_t k = sparsifier_keep_count(d, drop);
    update_msg u = random_update(d, k, 5);
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
            encode_or_die(&buf, &u, fmt);
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
    free_update(&u);
    free(out.grad.indices);
    free(out.grad.values);
    buffer_destroy(&buf);
    codec_decoder_free(dec);
}

/* Microseconds to sign and to check one message: an update of k of d at
 * drop (drop < 0: a full model of d values instead). */
static void bench_signing(uint32_t d, double drop, size_t *bytes, double *sign_us, double *verify_us)
{
    esgd_error err = {0};
    esgd_buffer buf;
    buffer_init(&buf, codec_model_bound(d), &err);
    if (drop >= 0) {
        update_msg u = random_update(d, sparsifier_keep_count(d, drop), 9);
        encode_or_die(&buf, &u, VALUE_FORMAT_F32);
        free_update(&u);
    } else {
        model_msg m = {.job = "bench", .run = 1ull << 63, .form = MODEL_FORM_FULL, .lr = 0.1f, .prev_loss = NAN,
                       .loss_fell = -1};
        float *values = calloc(d, sizeof *values);
        m.params = (sparse_vector){.dim = d, .count = d, .capacity = d, .values = values};
        if (!values || codec_encode_model(&buf, &m, &err) != ESGD_OK) {
            fprintf(stderr, "esgd-bench: model: %s\n", err.message[0] ? err.message : "out of memory");
            exit(1);
        }
        free(values);
    }
    signing_key secret;
    verify_key public_key;
    keys_derive(1, "bench", &secret, &public_key);
    size_t body = buf.size, opened = 0;
    double sign[REPEATS], verify[REPEATS];
    const int iters = drop >= 0 && drop > 0.9 ? 400 : 100;
    for (int r = 0; r < REPEATS; r++) {
        double t0 = monotonic_seconds();
        for (int i = 0; i < iters; i++) {
            buf.size = body;
            envelope_sign(&buf, &secret, &err);
        }
        sign[r] = (monotonic_seconds() - t0) / iters;
        t0 = monotonic_seconds();
        for (int i = 0; i < iters; i++)
            if (envelope_open(buf.data, buf.size, &public_key, &opened, &err) != ESGD_OK) {
                fprintf(stderr, "esgd-bench: %s\n", err.message);
                exit(1);
            }
        verify[r] = (monotonic_seconds() - t0) / iters;
    }
    *bytes = body;
    *sign_us = median(sign, REPEATS) * 1e6;
    *verify_us = median(verify, REPEATS) * 1e6;
    buffer_destroy(&buf);
}

static double log2_binomial(double n, double k)
{
    return (lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)) / log(2.0);
}

/* Sizes of the "idx" and "val" fields of an encoded update and its index
 * coding name, read back with msgpack-c. */
static void field_sizes(const esgd_buffer *buf, size_t *idx, size_t *val, char *coding, size_t coding_size)
{
    *idx = *val = 0;
    snprintf(coding, coding_size, "?");
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    if (msgpack_unpack_next(&msg, (const char *)buf->data, buf->size, NULL) == MSGPACK_UNPACK_SUCCESS &&
        msg.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < msg.data.via.map.size; i++) {
            const msgpack_object *key = &msg.data.via.map.ptr[i].key, *v = &msg.data.via.map.ptr[i].val;
            if (key->type != MSGPACK_OBJECT_STR)
                continue;
            int n = (int)key->via.str.size;
            if (n == 3 && memcmp(key->via.str.ptr, "idx", 3) == 0 && v->type == MSGPACK_OBJECT_BIN)
                *idx = v->via.bin.size;
            else if (n == 3 && memcmp(key->via.str.ptr, "val", 3) == 0 && v->type == MSGPACK_OBJECT_BIN)
                *val = v->via.bin.size;
            else if (n == 7 && memcmp(key->via.str.ptr, "idx_enc", 7) == 0 && v->type == MSGPACK_OBJECT_STR)
                snprintf(coding, coding_size, "%.*s", (int)v->via.str.size, v->via.str.ptr);
        }
    }
    msgpack_unpacked_destroy(&msg);
}

/* Bytes per sent coordinate of an update of k uniformly chosen of d: the
 * index field against log2 C(d, k) bits, the value field in f32 and f16,
 * and the rest of the message. */
static void bench_wire(uint32_t d, double drop, json_writer *w)
{
    esgd_error err = {0};
    uint32_t k = sparsifier_keep_count(d, drop);
    update_msg u = random_update(d, k, 11);
    esgd_buffer buf;
    if (buffer_init(&buf, codec_update_bound(d), &err) != ESGD_OK) {
        fprintf(stderr, "esgd-bench: %s\n", err.message);
        exit(1);
    }
    size_t idx, val32, val16, size32;
    char coding[16];
    encode_or_die(&buf, &u, VALUE_FORMAT_F32);
    size32 = buf.size;
    field_sizes(&buf, &idx, &val32, coding, sizeof coding);
    encode_or_die(&buf, &u, VALUE_FORMAT_F16);
    size_t size16 = buf.size, idx16;
    field_sizes(&buf, &idx16, &val16, coding, sizeof coding);
    double bound_bits = log2_binomial(d, k);
    json_writer_object_begin(w, NULL, JSON_WRITER_INLINE);
    json_writer_uint(w, "dim", d);
    json_writer_real(w, "drop", drop);
    json_writer_uint(w, "k", k);
    json_writer_string(w, "idx_enc", coding);
    json_writer_uint(w, "index_bytes", idx);
    json_writer_fixed(w, "bound_bytes", bound_bits / 8, 0);
    json_writer_fixed(w, "index_over_bound", idx / (bound_bits / 8), 3);
    json_writer_fixed(w, "index_bits_per_coord", 8.0 * idx / k, 2);
    json_writer_fixed(w, "bound_bits_per_coord", bound_bits / k, 2);
    json_writer_fixed(w, "value_bytes_per_coord_f32", (double)val32 / k, 2);
    json_writer_fixed(w, "value_bytes_per_coord_f16", (double)val16 / k, 2);
    json_writer_uint(w, "other_bytes", size32 - idx - val32);
    json_writer_uint(w, "message_bytes_f32", size32);
    json_writer_uint(w, "message_bytes_f16", size16);
    json_writer_fixed(w, "bytes_per_coord_f32", (double)size32 / k, 2);
    json_writer_fixed(w, "bytes_per_coord_f16", (double)size16 / k, 2);
    json_writer_uint(w, "raw_bytes_per_coord", 8);
    json_writer_object_end(w);
    buffer_destroy(&buf);
    free_update(&u);
}

/* Median seconds of one coordinator round: `agents` updates of k of d added
 * (checked and copied) and applied to the parameters. */
static double bench_aggregate(uint32_t d, double drop, uint32_t agents, int rounds)
{
    esgd_error err = {0};
    uint32_t k = sparsifier_keep_count(d, drop);
    aggregator *agg = aggregator_new(d, agents, k, &err);
    if (!agg) {
        fprintf(stderr, "esgd-bench: %s\n", err.message);
        exit(1);
    }
    update_msg *updates = alloc_or_die(sizeof *updates * agents);
    for (uint32_t a = 0; a < agents; a++)
        updates[a] = random_update(d, k, 100 + a);
    float *params = calloc(d, sizeof *params);
    uint32_t *changed = alloc_or_die(sizeof *changed * d);
    double *t = alloc_or_die(sizeof *t * (size_t)rounds);
    if (!params) {
        fprintf(stderr, "esgd-bench: out of memory\n");
        exit(1);
    }
    for (int r = -1; r < rounds; r++) { /* r = -1 warms up */
        double t0 = monotonic_seconds();
        for (uint32_t a = 0; a < agents; a++)
            if (aggregator_add(agg, a, &updates[a].grad, 32, 0.5f, &err) != ESGD_OK) {
                fprintf(stderr, "esgd-bench: aggregate: %s\n", err.message);
                exit(1);
            }
        aggregate_result result;
        aggregator_apply(agg, params, 0.1, &result, changed);
        if (r >= 0)
            t[r] = monotonic_seconds() - t0;
    }
    double med = median(t, rounds);
    for (uint32_t a = 0; a < agents; a++)
        free_update(&updates[a]);
    free(updates);
    free(params);
    free(changed);
    free(t);
    aggregator_free(agg);
    return med;
}

/* Memory bandwidth as STREAM's triad a = b + s c over three arrays of
 * `bytes` each (24 bytes moved per element), median of 5. */
static double bench_triad_gbps(size_t bytes)
{
    size_t n = bytes / sizeof(double);
    double *a = alloc_or_die(bytes), *b = alloc_or_die(bytes), *c = alloc_or_die(bytes);
    for (size_t i = 0; i < n; i++) {
        a[i] = 0;
        b[i] = 1;
        c[i] = 2;
    }
    double t[5];
    for (int r = 0; r < 5; r++) {
        double t0 = monotonic_seconds();
        for (size_t i = 0; i < n; i++)
            a[i] = b[i] + 3.0 * c[i];
        t[r] = monotonic_seconds() - t0;
    }
    volatile double sink = a[n / 2];
    (void)sink;
    free(a);
    free(b);
    free(c);
    return 3.0 * (double)bytes / median(t, 5) / 1e9;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--train") == 0)
        return bench_train_mnist(argv[2], argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10) : 2,
                                 argc > 4 ? argv[4] : "lenet");
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    if (argc > 1 && !quick) {
        fprintf(stderr, "usage: esgd-bench [--quick]\n"
                        "       esgd-bench --train DATA_DIR [EPOCHS [MODEL]]   (LeNet on MNIST, see bench/vs-pytorch.sh)\n"
                        "Prints the core's speed as JSON on stdout (set OPENBLAS_NUM_THREADS=1).\n");
        return strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    int steps = quick ? 20 : 200;
    double lenet = bench_training("lenet", false, steps), mlp = bench_training("mlp", false, steps * 4);
    double lenet_layerwise = bench_training("lenet", true, steps / 2);
    json_writer w;
    json_writer_init(&w, stdout);
    json_writer_object_begin(&w, NULL, JSON_WRITER_LINES);
    json_writer_object_begin(&w, "training_samples_per_second", JSON_WRITER_INLINE);
    json_writer_uint(&w, "batch", 32);
    json_writer_fixed(&w, "lenet", lenet, 0);
    json_writer_fixed(&w, "mlp", mlp, 0);
    json_writer_fixed(&w, "lenet_layerwise", lenet_layerwise, 0);
    json_writer_object_end(&w);

    static const sparsify_method methods[] = {SPARSIFY_ESGD, SPARSIFY_TOPK,      SPARSIFY_RANDK,
                                              SPARSIFY_DGC,  SPARSIFY_THRESHOLD, SPARSIFY_DENSE};
    static const uint32_t dims[] = {61706, 1000000, 10000000};
    static const double drops[] = {0.875, 0.99};
    json_writer_array_begin(&w, "select_ms_per_round", JSON_WRITER_LINES);
    for (size_t mi = 0; mi < sizeof methods / sizeof methods[0]; mi++)
        for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
            for (size_t ri = 0; ri < sizeof drops / sizeof drops[0]; ri++) {
                int rounds = dims[di] >= 10000000 ? (quick ? 3 : 7) : dims[di] > 100000 ? (quick ? 5 : 21)
                                                                                          : (quick ? 11 : 101);
                double fell = bench_select(methods[mi], dims[di], drops[ri], rounds, 1) * 1e3;
                double rose = bench_select(methods[mi], dims[di], drops[ri], rounds, 0) * 1e3;
                json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
                json_writer_string(&w, "method", sparsify_method_name(methods[mi]));
                json_writer_uint(&w, "dim", dims[di]);
                json_writer_real(&w, "drop", drops[ri]);
                json_writer_fixed(&w, "loss_fell", fell, 4);
                json_writer_fixed(&w, "loss_rose", rose, 4);
                json_writer_fixed(&w, "ns_per_coord", 0.5 * (fell + rose) * 1e6 / dims[di], 3);
                json_writer_object_end(&w);
            }
    json_writer_array_end(&w);

    json_writer_array_begin(&w, "wire", JSON_WRITER_LINES);
    static const double wire_drops[] = {0.5, 0.75, 0.875, 0.99, 0.999};
    for (size_t i = 0; i < sizeof wire_drops / sizeof wire_drops[0]; i++)
        bench_wire(61706, wire_drops[i], &w);
    json_writer_array_end(&w);

    json_writer_array_begin(&w, "codec", JSON_WRITER_LINES);
    static const double codec_drops[] = {0.0, 0.875, 0.99};
    for (size_t i = 0; i < sizeof codec_drops / sizeof codec_drops[0]; i++)
        for (int f = 0; f < 2; f++) {
            double enc, dec;
            size_t bytes;
            bench_codec(61706, codec_drops[i], f ? VALUE_FORMAT_F16 : VALUE_FORMAT_F32, &enc, &dec, &bytes);
            json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
            json_writer_uint(&w, "dim", 61706);
            json_writer_real(&w, "drop", codec_drops[i]);
            json_writer_string(&w, "values", f ? "f16" : "f32");
            json_writer_uint(&w, "bytes", bytes);
            json_writer_fixed(&w, "encode_MBps", enc, 0);
            json_writer_fixed(&w, "decode_MBps", dec, 0);
            json_writer_object_end(&w);
        }
    json_writer_array_end(&w);

    if (envelope_init(NULL) != ESGD_OK)
        return 1;
    json_writer_array_begin(&w, "signing", JSON_WRITER_LINES);
    static const double sign_drops[] = {0.99, 0.875, -1};
    for (size_t i = 0; i < sizeof sign_drops / sizeof sign_drops[0]; i++) {
        size_t bytes;
        double sign_us, verify_us;
        bench_signing(61706, sign_drops[i], &bytes, &sign_us, &verify_us);
        json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
        json_writer_string(&w, "message", sign_drops[i] < 0 ? "full model" : "update");
        json_writer_real(&w, "drop", sign_drops[i] < 0 ? 0.0 : sign_drops[i]);
        json_writer_uint(&w, "body_bytes", bytes);
        json_writer_uint(&w, "signature_bytes", ENVELOPE_SIGNATURE_BYTES);
        json_writer_fixed(&w, "sign_us", sign_us, 1);
        json_writer_fixed(&w, "verify_us", verify_us, 1);
        json_writer_object_end(&w);
    }
    json_writer_array_end(&w);

    /* Update bytes are the in-memory payload the coordinator reads: a 4-byte
     * index and a 4-byte value per entry. */
    json_writer_array_begin(&w, "aggregation", JSON_WRITER_LINES);
    static const uint32_t agg_dims[] = {61706, 10000000};
    static const double agg_drops[] = {0.0, 0.875, 0.99};
    const uint32_t agents = 4;
    for (size_t di = 0; di < sizeof agg_dims / sizeof agg_dims[0]; di++)
        for (size_t ri = 0; ri < sizeof agg_drops / sizeof agg_drops[0]; ri++) {
            uint32_t d = agg_dims[di], k = sparsifier_keep_count(d, agg_drops[ri]);
            int rounds = d > 1000000 ? (quick ? 3 : 9) : (quick ? 21 : 201);
            double t = bench_aggregate(d, agg_drops[ri], agents, rounds);
            json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
            json_writer_uint(&w, "dim", d);
            json_writer_real(&w, "drop", agg_drops[ri]);
            json_writer_uint(&w, "agents", agents);
            json_writer_fixed(&w, "round_ms", t * 1e3, 4);
            json_writer_fixed(&w, "updates_per_second", agents / t, 0);
            json_writer_fixed(&w, "update_MBps", agents * (double)k * 8 / t / 1e6, 0);
            json_writer_object_end(&w);
        }
    json_writer_array_end(&w);
    json_writer_fixed(&w, "memory_triad_GBps", bench_triad_gbps(quick ? (32u << 20) : (256u << 20)), 1);
    json_writer_object_end(&w);
    putchar('\n');
    return 0;
}
