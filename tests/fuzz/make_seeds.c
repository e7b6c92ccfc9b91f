/* Writes the fuzzers' seed corpora: valid messages of every kind and form,
 * valid state files and IDX files, all made with the project's own encoders
 * and writers, so the corpora follow the formats as they change; and for
 * fuzz_envelope the signed messages of a real round and a half
 * (fuzz_signed.h), whole and as bodies, each with its topic.
 *
 *   make_seeds OUTDIR   ->  OUTDIR/{update,model,config,status,state,idx,envelope}/seed-NNN */
#include <errno.h>
#include <math.h>
#include <sys/stat.h>

#include "esgd/agent.h"
#include "esgd/codec.h"
#include "esgd/coordinator.h"
#include "esgd/rng.h"
#include "esgd/state_file.h"
#include "fuzz_signed.h"

static const char *out_dir;

static void die(const char *what, const esgd_error *err)
{
    fprintf(stderr, "make_seeds: %s: %s\n", what, err ? err->message : strerror(errno));
    exit(1);
}

static void make_dir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        die(path, NULL);
}

/* OUTDIR/<corpus>/seed-NNN, numbered per corpus in call order. */
static void write_seed(const char *corpus, const uint8_t *a, size_t a_size, const uint8_t *b, size_t b_size)
{
    static char last[32];
    static int counter;
    if (strcmp(last, corpus) != 0) {
        snprintf(last, sizeof last, "%s", corpus);
        counter = 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, corpus);
    make_dir(path);
    snprintf(path, sizeof path, "%s/%s/seed-%03d", out_dir, corpus, counter++);
    FILE *f = fopen(path, "wb");
    if (!f || (a_size && fwrite(a, 1, a_size, f) != a_size) || (b_size && fwrite(b, 1, b_size, f) != b_size) ||
        fclose(f) != 0)
        die(path, NULL);
}

static uint8_t *read_whole(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path, NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *data = malloc(n > 0 ? (size_t)n : 1);
    if (!data || n < 0 || fread(data, 1, (size_t)n, f) != (size_t)n)
        die(path, NULL);
    fclose(f);
    *size = (size_t)n;
    return data;
}

/* k of dim indices at random, sorted, with small normal values. */
static void random_sparse(sparse_vector *v, uint32_t dim, uint32_t k, uint64_t seed)
{
    esgd_rng rng;
    rng_seed(&rng, seed, 1);
    v->dim = dim;
    v->count = 0;
    for (uint32_t j = 0; j < dim && v->count < k; j++)
        if (rng_uniform(&rng) * (dim - j) < (k - v->count))
            v->indices[v->count++] = j;
    for (uint32_t i = 0; i < v->count; i++)
        v->values[i] = (float)rng_normal(&rng) * 0.01f;
}

static uint32_t indices[FUZZ_DIM];
static float values[FUZZ_DIM];

static void update_seeds(esgd_buffer *buf)
{
    /* (dim, k): all, bitmap and rice forms, small ones first so the fuzzer
     * has cheap inputs to mutate, then the real LeNet size. */
    static const uint32_t shapes[][2] = {{1, 1},   {8, 0},     {100, 100},  {100, 60},   {100, 3},
                                         {1000, 0}, {FUZZ_DIM, 7714}, {FUZZ_DIM, 40000}, {FUZZ_DIM, FUZZ_DIM}};
    esgd_error err;
    for (int f = 0; f < 2; f++) {
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            update_msg m = {.run = f ? UINT64_MAX : FUZZ_RUN, .round = (uint32_t)i, .agent = (uint32_t)f,
                            .samples = 32, .loss = 2.3f};
            snprintf(m.job, sizeof m.job, "mnist");
            m.grad = (sparse_vector){.capacity = FUZZ_DIM, .indices = indices, .values = values};
            random_sparse(&m.grad, shapes[i][0], shapes[i][1], i + 1);
            if (codec_encode_update(buf, &m, f ? VALUE_FORMAT_F16 : VALUE_FORMAT_F32, &err) != ESGD_OK)
                die("encoding an update", &err);
            write_seed("update", buf->data, buf->size, NULL, 0);
        }
    }
}

static void model_seeds(esgd_buffer *buf)
{
    static const uint32_t shapes[][3] = {/* dim, k (0 = full), round */
                                         {1, 0, 0},      {100, 0, 3},       {100, 2, 4},
                                         {100, 70, 5},   {1000, 0, 1},      {FUZZ_DIM, 0, 7},
                                         {FUZZ_DIM, 900, 8}, {FUZZ_DIM, 30000, 9}};
    esgd_error err;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        bool full = shapes[i][1] == 0;
        model_msg m = {.run = FUZZ_RUN + i, .round = shapes[i][2], .lr = 0.1f, .prev_loss = i % 3 ? 1.5f : NAN,
                       .loss_fell = (int8_t)((int)(i % 3) - 1), .done = i == 4,
                       .form = full ? MODEL_FORM_FULL : MODEL_FORM_DELTA};
        m.base_round = full ? m.round : m.round - 1;
        snprintf(m.job, sizeof m.job, "mnist-%zu", i);
        m.params = (sparse_vector){.capacity = FUZZ_DIM, .indices = indices, .values = values};
        random_sparse(&m.params, shapes[i][0], full ? shapes[i][0] : shapes[i][1], 100 + i);
        if (codec_encode_model(buf, &m, &err) != ESGD_OK)
            die("encoding a model", &err);
        write_seed("model", buf->data, buf->size, NULL, 0);
    }
}

static void config_seeds(esgd_buffer *buf)
{
    /* Each line: option=value pairs applied to the defaults. */
    static const char *const variants[][2] = {
        {NULL, NULL},          {"model", "mlp"},     {"values", "f16"},       {"method", "topk"},
        {"method", "threshold"}, {"partition", "noniid"}, {"loss-signal", "local"}, {"tau-mode", "fixed"},
        {"rounds", "100"},     {"method", "dense"}};
    esgd_error err;
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        esgd_job_config cfg;
        job_config_defaults(&cfg);
        if (variants[i][0] && job_config_set(&cfg, variants[i][0], variants[i][1], &err) != ESGD_OK)
            die("setting a config option", &err);
        cfg.run = i % 2 ? FUZZ_RUN : 0;
        if (codec_encode_config(buf, &cfg, &err) != ESGD_OK)
            die("encoding a config", &err);
        write_seed("config", buf->data, buf->size, NULL, 0);
    }
}

static void status_seeds(esgd_buffer *buf)
{
    esgd_error err;
    for (int s = 0; s < 3; s++) {
        status_msg m = {.run = s ? FUZZ_RUN : 0, .agent = (uint32_t)s * 7, .state = (agent_state)s,
                        .round = (uint32_t)s * 1000};
        snprintf(m.job, sizeof m.job, "mnist");
        if (codec_encode_status(buf, &m, &err) != ESGD_OK)
            die("encoding a status", &err);
        write_seed("status", buf->data, buf->size, NULL, 0);
    }
}

/* The same configuration the state fuzzer restores into, after one real
 * round: the agent answered a model and the coordinator closed the round.
 * Both hold the job's keys, so the stored update is signed. */
static void state_seeds(const fuzz_job *job)
{
    esgd_error err;
    esgd_agent *agent = fuzz_job_agent(job, 0);
    esgd_coordinator *c = fuzz_job_coordinator(job);
    const uint8_t *msg;
    size_t size;
    round_summary summary;
    if (coordinator_round_model(c, &msg, &size, &err) != ESGD_OK || agent_apply_model(agent, msg, size, &err) ||
        agent_compute_update(agent, &msg, &size, &err) != ESGD_OK)
        die("running a round", &err);
    if (coordinator_receive_update(c, msg, size, 0, 0, &err) != UPDATE_ACCEPTED)
        die("accepting the update", &err);
    coordinator_close_round(c, &summary);

    char agent_path[4096], coordinator_path[4096];
    snprintf(agent_path, sizeof agent_path, "%s/agent.state", out_dir);
    snprintf(coordinator_path, sizeof coordinator_path, "%s/coordinator.state", out_dir);
    if (agent_save(agent, agent_path, &err) != ESGD_OK || coordinator_save(c, coordinator_path, &err) != ESGD_OK)
        die("saving state", &err);

    /* Modes of fuzz_state.c: 0 raw file, 1 agent payload, 2 coordinator
     * payload, 3 getter ops + payload. Payloads skip the 24-byte header
     * and the 8-byte checksum. */
    size_t agent_size, coordinator_size;
    uint8_t *agent_file = read_whole(agent_path, &agent_size);
    uint8_t *coordinator_file = read_whole(coordinator_path, &coordinator_size);
    uint8_t mode[2] = {0, 0};
    write_seed("state", mode, 1, agent_file, agent_size);
    write_seed("state", mode, 1, coordinator_file, coordinator_size);
    mode[0] = 1;
    write_seed("state", mode, 1, agent_file + 24, agent_size - 32);
    mode[0] = 2;
    write_seed("state", mode, 1, coordinator_file + 24, coordinator_size - 32);
    static const uint8_t ops[] = {3, 6, 0, 0, 0, 3, 4 | (8 << 2), 1, 2};
    uint8_t getters[2 + sizeof ops];
    getters[0] = 3;
    getters[1] = sizeof ops;
    memcpy(getters + 2, ops, sizeof ops);
    write_seed("state", getters, sizeof getters, agent_file + 24, agent_size - 32);

    remove(agent_path);
    remove(coordinator_path);
    free(agent_file);
    free(coordinator_file);
    agent_free(agent);
    coordinator_free(c);
}

/* fuzz_envelope.c: [mode][topic agent][topic round][message]. Every signed
 * message whole (to open, or to receive on its topic), each body to be
 * signed by the harness, and a few on the wrong topic. */
static void envelope_seeds(const fuzz_job *job)
{
    fuzz_signed_set set;
    fuzz_signed_messages(&set, job);
    for (int i = 0; i < set.count; i++) {
        const fuzz_signed_message *m = &set.message[i];
        size_t body = m->size - ENVELOPE_SIGNATURE_BYTES;
        bool by_agent = m->signer != FUZZ_BY_COORDINATOR;
        uint8_t agent = by_agent ? (uint8_t)m->signer : 0, round = (uint8_t)m->round;
        uint8_t head[FUZZ_ENVELOPE_HEADER] = {FUZZ_ENVELOPE_OPEN, agent, round};
        write_seed("envelope", head, sizeof head, m->data, m->size);
        if (by_agent) {
            head[0] = FUZZ_ENVELOPE_UPDATE;
            write_seed("envelope", head, sizeof head, m->data, m->size);
            head[0] = FUZZ_ENVELOPE_SIGNED_UPDATE;
            write_seed("envelope", head, sizeof head, m->data, body);
            head[0] = FUZZ_ENVELOPE_UPDATE; /* another agent's topic, another round's */
            head[1] = (uint8_t)(agent + 1);
            write_seed("envelope", head, sizeof head, m->data, m->size);
            head[1] = agent;
            head[2] = (uint8_t)(round + 1);
            write_seed("envelope", head, sizeof head, m->data, m->size);
        } else {
            head[0] = FUZZ_ENVELOPE_MODEL;
            write_seed("envelope", head, sizeof head, m->data, m->size);
            if (m->model) {
                head[0] = FUZZ_ENVELOPE_SIGNED_MODEL;
                write_seed("envelope", head, sizeof head, m->data, body);
            }
        }
    }
    fuzz_signed_free(&set);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* fuzz_idx.c's layout: [n][n x u16 subset][u16 labels size][labels][examples].
 * Examples of rank dims (1..3) values dims[0..rank), u8 or (f32) big-endian
 * floats as esgd-import writes them. */
static void idx_seed(bool f32, uint32_t count, unsigned rank, const uint32_t *dims, const uint16_t *subset,
                     uint8_t n)
{
    size_t example = 1;
    for (unsigned i = 0; i < rank; i++)
        example *= dims[i];
    size_t value_bytes = f32 ? 4 : 1, header = 8 + 4 * (size_t)rank;
    size_t labels_size = 8 + count, images_size = header + (size_t)count * example * value_bytes;
    size_t head = 1 + 2 * (size_t)n + 2;
    uint8_t *seed = malloc(head + labels_size + images_size);
    if (!seed)
        die("idx seed", NULL);
    uint8_t *p = seed;
    *p++ = n;
    for (uint8_t i = 0; i < n; i++, p += 2) {
        p[0] = (uint8_t)subset[i];
        p[1] = (uint8_t)(subset[i] >> 8);
    }
    p[0] = (uint8_t)labels_size;
    p[1] = (uint8_t)(labels_size >> 8);
    p += 2;
    put_be32(p, 0x00000801);
    put_be32(p + 4, count);
    for (uint32_t i = 0; i < count; i++)
        p[8 + i] = (uint8_t)(i % 10);
    p += labels_size;
    put_be32(p, (f32 ? 0x00000D00u : 0x00000800u) | (rank + 1));
    put_be32(p + 4, count);
    for (unsigned i = 0; i < rank; i++)
        put_be32(p + 8 + 4 * i, dims[i]);
    for (size_t i = 0; i < (size_t)count * example; i++) {
        if (f32) {
            float v = ((float)(i % 97) - 48.0f) / 16.0f;
            uint32_t bits;
            memcpy(&bits, &v, sizeof bits);
            put_be32(p + header + 4 * i, bits);
        } else {
            p[header + i] = (uint8_t)(i * 13);
        }
    }
    write_seed("idx", seed, head + labels_size + images_size, NULL, 0);
    free(seed);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    make_dir(out_dir);
    esgd_buffer buf;
    esgd_error err;
    if (buffer_init(&buf, codec_model_bound(FUZZ_DIM) + codec_update_bound(FUZZ_DIM), &err) != ESGD_OK)
        die("buffer", &err);
    update_seeds(&buf);
    model_seeds(&buf);
    config_seeds(&buf);
    status_seeds(&buf);
    buffer_destroy(&buf);
    fuzz_job job;
    fuzz_job_init(&job);
    state_seeds(&job);
    envelope_seeds(&job);
    fuzz_job_destroy(&job);
    static const uint16_t subset[] = {2, 0, 2, 1};
    idx_seed(false, 1, 2, (const uint32_t[]){1, 1}, NULL, 0);
    idx_seed(false, 3, 2, (const uint32_t[]){4, 5}, NULL, 0);
    idx_seed(false, 3, 2, (const uint32_t[]){28, 28}, subset, 4);
    idx_seed(false, 10, 2, (const uint32_t[]){2, 3}, subset, 2);
    idx_seed(false, 3, 3, (const uint32_t[]){3, 4, 5}, subset, 4);
    idx_seed(false, 4, 1, (const uint32_t[]){7}, NULL, 0);
    idx_seed(true, 5, 1, (const uint32_t[]){6}, NULL, 0);
    idx_seed(true, 3, 2, (const uint32_t[]){4, 5}, subset, 4);
    idx_seed(true, 3, 3, (const uint32_t[]){2, 3, 4}, subset, 2);
    return 0;
}
