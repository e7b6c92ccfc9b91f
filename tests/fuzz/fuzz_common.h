/* Shared by the libFuzzer harnesses: the entry points' prototypes, an
 * invariant check that traps (so libFuzzer records the input as a crash),
 * the state fuzzer's job, and per-process temporary files for the readers
 * that take a path. */
#ifndef ESGD_FUZZ_COMMON_H
#define ESGD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* The job fuzz_state.c restores into and make_seeds saves its seeds from:
 * the MLP, whose hidden layer the fuzz build narrows to one unit
 * (CMakeLists.txt), so a whole agent state is 10 KB instead of LeNet's
 * 800 KB and the readers' every path is cheap to reach. */
static inline void fuzz_state_config(esgd_job_config *cfg)
{
    job_config_defaults(cfg);
    cfg->model = MODEL_KIND_MLP;
    cfg->rounds = 20;
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
