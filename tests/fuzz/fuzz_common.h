/* Shared by the libFuzzer harnesses and make_seeds (fuzz_common.c): the
 * entry points' prototypes, an invariant check that traps (so libFuzzer
 * records the input as a crash), the codec harnesses' decoder and checks,
 * the state and envelope fuzzers' job with its keys, agents and coordinator,
 * and per-process temporary files for the readers that take a path. */
#ifndef ESGD_FUZZ_COMMON_H
#define ESGD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/agent.h"
#include "esgd/codec.h"
#include "esgd/coordinator.h"
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

/* ---- the codec harnesses ---- */

/* A decoder, and a buffer to encode an accepted message again. */
typedef struct fuzz_codec {
    codec_decoder *decoder;
    esgd_buffer encoded;
} fuzz_codec;

/* The process's one fuzz_codec, made on the first call with an encode
 * buffer of encode_bound bytes (later calls return it as it is). */
fuzz_codec *fuzz_codec_once(size_t encode_bound);

/* A reader's outcome: the status it returned is the one in err, and a
 * refusal says why. */
void fuzz_check_outcome(esgd_status st, const esgd_error *err);

/* An empty vector of capacity FUZZ_DIM on storage of its own: slot 0 or 1,
 * so a message and its re-decoding can be held side by side. */
sparse_vector fuzz_sparse_slot(int slot);

/* A name decoders accept: 1..JOB_NAME_MAX of [A-Za-z0-9_.-]. */
int fuzz_job_name_ok(const char *job);

/* ---- the state and envelope fuzzers' job ---- */

/* The run id and key seed of that job; FUZZ_AGENTS is its agent count
 * (job_config_defaults). */
#define FUZZ_RUN 0x80000000f0220001ull
#define FUZZ_KEY_SEED 1234u
#define FUZZ_AGENTS 4u

/* Its keys, derived as esgd-sim derives them (envelope.h), so the harnesses
 * and make_seeds sign and check with the same ones. */
typedef struct fuzz_keys {
    signing_key coordinator;
    verify_key coordinator_public;
    signing_key agent[FUZZ_AGENTS];
    verify_key agent_public[FUZZ_AGENTS];
} fuzz_keys;

/* The job fuzz_state.c restores into, fuzz_envelope.c receives for and
 * make_seeds makes their seeds with: the MLP, whose hidden layer the fuzz
 * build narrows to one unit (CMakeLists.txt), so a whole agent state is
 * 10 KB instead of LeNet's 800 KB and the readers' every path is cheap to
 * reach; its keys; and a shard of four synthetic examples, enough to
 * compute real updates (agents borrow it). */
typedef struct fuzz_job {
    esgd_job_config config;
    fuzz_keys keys;
    esgd_dataset shard;
} fuzz_job;

void fuzz_job_init(fuzz_job *job);
void fuzz_job_destroy(fuzz_job *job);
/* Agent `id` of the job, and its coordinator, each holding the job's keys
 * as the programs do. */
esgd_agent *fuzz_job_agent(const fuzz_job *job, uint32_t id);
esgd_coordinator *fuzz_job_coordinator(const fuzz_job *job);

/* ---- files ---- */

/* A per-process temporary file for the readers that take a path: on
 * /dev/shm, which keeps the per-input writes off the disk, named with the
 * pid, which keeps parallel fuzzers (-jobs, -fork) apart, and removed at
 * exit. Up to four per process. */
void fuzz_temp_file(char *path, size_t path_size, const char *name);
void fuzz_write_file(const char *path, const uint8_t *data, size_t size);

#endif
