/* Shared by the libFuzzer harnesses: the entry points' prototypes, an
 * invariant check that traps (so libFuzzer records the input as a crash),
 * the state and envelope fuzzers' job, its run and keys, and per-process
 * temporary files for the readers that take a path. */
#ifndef ESGD_FUZZ_COMMON_H
#define ESGD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "esgd/dataset.h"
#include "esgd/envelope.h"
#include "esgd/job.h"

/* The largest model's d (LeNet-5): the capacity every agent and the
 * coordinator decode into. */
#define FUZZ_DIM 61706u

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            __builtin_trap();                                                                \
        }                                                                                    \
    } while (0)

/* The run id and key seed of that job; FUZZ_AGENTS is its agent count
 * (job_config_defaults). */
#define FUZZ_RUN 0x80000000f0220001ull
#define FUZZ_KEY_SEED 1234u
#define FUZZ_AGENTS 4u

/* The job fuzz_state.c restores into, fuzz_envelope.c receives for and
 * make_seeds makes their seeds with:
 * the MLP, whose hidden layer the fuzz build narrows to one unit
 * (CMakeLists.txt), so a whole agent state is 10 KB instead of LeNet's
 * 800 KB and the readers' every path is cheap to reach. */
static inline void fuzz_state_config(esgd_job_config *cfg)
{
    job_config_defaults(cfg);
    cfg->model = MODEL_KIND_MLP;
    cfg->rounds = 20;
    cfg->run = FUZZ_RUN;
}

/* Its keys, derived as esgd-sim derives them (envelope.h), so the harnesses
 * and make_seeds sign and check with the same ones. */
typedef struct fuzz_keys {
    signing_key coordinator;
    verify_key coordinator_public;
    signing_key agent[FUZZ_AGENTS];
    verify_key agent_public[FUZZ_AGENTS];
} fuzz_keys;

static inline void fuzz_make_keys(fuzz_keys *k)
{
    FUZZ_CHECK(envelope_init(NULL) == ESGD_OK);
    keys_derive(FUZZ_KEY_SEED, "coordinator", &k->coordinator, &k->coordinator_public);
    for (uint32_t a = 0; a < FUZZ_AGENTS; a++) {
        char name[KEY_NAME_MAX];
        keys_agent_name(name, a);
        keys_derive(FUZZ_KEY_SEED, name, &k->agent[a], &k->agent_public[a]);
    }
}

/* A shard of four synthetic examples: agent_new borrows it, and it is
 * enough to compute real updates. */
static inline void fuzz_shard(esgd_dataset *shard)
{
    *shard = (esgd_dataset){.count = 4, .rows = 28, .cols = 28};
    shard->pixels = calloc((size_t)shard->count * 28 * 28, 1);
    shard->labels = calloc(shard->count, 1);
    FUZZ_CHECK(shard->pixels && shard->labels);
    for (uint32_t i = 0; i < shard->count * 28 * 28; i++)
        shard->pixels[i] = (uint8_t)(i * 37);
    for (uint32_t i = 0; i < shard->count; i++)
        shard->labels[i] = (uint8_t)i;
}

/* A name decoders accept: 1..JOB_NAME_MAX of [A-Za-z0-9_.-]. */
static inline int fuzz_job_name_ok(const char *job)
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

/* /dev/shm keeps the per-input file writes off the disk; the pid keeps
 * parallel fuzzers (-jobs, -fork) apart. */
static inline void fuzz_temp_path(char *out, size_t out_size, const char *name)
{
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(out, out_size, "%s/esgd-fuzz-%ld-%s", dir, (long)getpid(), name);
}

static inline void fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(size == 0 || fwrite(data, 1, size, f) == size);
    FUZZ_CHECK(fclose(f) == 0);
}

#endif
