/* The harnesses' shared set-up and checks (fuzz_common.h), built once with
 * the same instrumentation as the core copy they fuzz and linked into every
 * harness and make_seeds. */
#include "fuzz_common.h"

#include <string.h>
#include <unistd.h>

fuzz_codec *fuzz_codec_once(size_t encode_bound)
{
    static fuzz_codec codec;
    if (!codec.decoder) {
        esgd_error err = {0};
        codec.decoder = codec_decoder_new(&err);
        FUZZ_CHECK(codec.decoder != NULL);
        FUZZ_CHECK(buffer_init(&codec.encoded, encode_bound, &err) == ESGD_OK);
    }
    return &codec;
}

void fuzz_check_outcome(esgd_status st, const esgd_error *err)
{
    FUZZ_CHECK(st == err->status);
    if (st != ESGD_OK)
        FUZZ_CHECK(err->message[0] != '\0');
}

sparse_vector fuzz_sparse_slot(int slot)
{
    static uint32_t indices[2][FUZZ_DIM];
    static float values[2][FUZZ_DIM];
    FUZZ_CHECK(slot == 0 || slot == 1);
    return (sparse_vector){.capacity = FUZZ_DIM, .indices = indices[slot], .values = values[slot]};
}

int fuzz_job_name_ok(const char *job)
{
    size_t n = strnlen(job, JOB_NAME_MAX + 1);
    if (n == 0 || n > JOB_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = job[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

void fuzz_job_init(fuzz_job *job)
{
    job_config_defaults(&job->config);
    strcpy(job->config.model, "mlp");
    job->config.rounds = 20;
    job->config.run = FUZZ_RUN;
    FUZZ_CHECK(job->config.agents <= FUZZ_AGENTS);

    fuzz_keys *k = &job->keys;
    FUZZ_CHECK(envelope_init(NULL) == ESGD_OK);
    keys_derive(FUZZ_KEY_SEED, "coordinator", &k->coordinator, &k->coordinator_public);
    for (uint32_t a = 0; a < FUZZ_AGENTS; a++) {
        char name[KEY_NAME_MAX];
        keys_agent_name(name, a);
        keys_derive(FUZZ_KEY_SEED, name, &k->agent[a], &k->agent_public[a]);
    }

    esgd_dataset *shard = &job->shard;
    *shard = (esgd_dataset){.count = 4, .rank = 2, .dims = {28, 28}, .example_size = 28 * 28, .type = DATASET_U8};
    shard->u8 = calloc((size_t)shard->count * 28 * 28, 1);
    shard->labels = calloc(shard->count, 1);
    FUZZ_CHECK(shard->u8 && shard->labels);
    for (uint32_t i = 0; i < shard->count * 28 * 28; i++)
        shard->u8[i] = (uint8_t)(i * 37);
    for (uint32_t i = 0; i < shard->count; i++)
        shard->labels[i] = (uint8_t)i;
}

void fuzz_job_destroy(fuzz_job *job)
{
    dataset_destroy(&job->shard);
}

esgd_agent *fuzz_job_agent(const fuzz_job *job, uint32_t id)
{
    esgd_error err = {0};
    esgd_agent *agent = agent_new(&job->config, id, &job->shard, &err);
    FUZZ_CHECK(agent != NULL);
    agent_set_keys(agent, &job->keys.agent[id], &job->keys.coordinator_public);
    return agent;
}

esgd_coordinator *fuzz_job_coordinator(const fuzz_job *job)
{
    esgd_error err = {0};
    esgd_coordinator *c = coordinator_new(&job->config, &err);
    FUZZ_CHECK(c != NULL);
    coordinator_set_keys(c, &job->keys.coordinator, job->keys.agent_public);
    return c;
}

/* Removes the files fuzz_temp_file named, at exit. */
static char temp_paths[4][256];
static int temp_count;

static void remove_temp_files(void)
{
    for (int i = 0; i < temp_count; i++)
        remove(temp_paths[i]);
}

void fuzz_temp_file(char *path, size_t path_size, const char *name)
{
    FUZZ_CHECK(temp_count < 4);
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(temp_paths[temp_count], sizeof temp_paths[temp_count], "%s/esgd-fuzz-%ld-%s", dir, (long)getpid(),
             name);
    snprintf(path, path_size, "%s", temp_paths[temp_count]);
    if (temp_count++ == 0)
        atexit(remove_temp_files);
}

void fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    FUZZ_CHECK(fclose(f) == 0);
}
