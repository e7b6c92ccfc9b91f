/* The state files: state_file_read and the state_get_* walk, and the two
 * real readers on top of them, agent_restore and coordinator_restore.
 *
 * The first input byte picks what the rest is:
 *   0  a whole file, header and checksum included (fuzzes the framing);
 *   1  an agent state payload, framed with a valid header and checksum so
 *      the fuzzer gets past the checksum into agent_restore;
 *   2  the same for a coordinator checkpoint and coordinator_restore;
 *   3  [op count][ops][payload]: the payload framed, then read with the
 *      getters the ops name.
 * A reader that fails must leave its object as it was. The agent and the
 * coordinator hold the job's keys (fuzz_common.h), as the programs do, so
 * the agent can check the signed update a state file stores. */
#include "esgd/state_file.h"
#include "fuzz_common.h"

enum { MODE_RAW, MODE_AGENT, MODE_COORDINATOR, MODE_GETTERS, MODE_COUNT };

static char path[256];
static fuzz_job job;
static esgd_agent *agent;
static esgd_coordinator *coordinator;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_temp_file(path, sizeof path, "state");
    /* The agent only borrows the job's shard; restore never reads it. */
    fuzz_job_init(&job);
    agent = fuzz_job_agent(&job, 0);
    coordinator = fuzz_job_coordinator(&job);
    return 0;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The framing state_file_write produces, without its fsyncs. */
static void write_framed(uint32_t kind, const uint8_t *payload, size_t size)
{
    uint8_t header[24], trailer[8];
    memcpy(header, "ESGDSTAT", 8);
    put_le(header + 8, 1, 4);
    put_le(header + 12, kind, 4);
    put_le(header + 16, size, 8);
    put_le(trailer, state_checksum(payload, size), 8);
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(fwrite(header, 1, sizeof header, f) == sizeof header);
    FUZZ_CHECK(size == 0 || fwrite(payload, 1, size, f) == size);
    FUZZ_CHECK(fwrite(trailer, 1, sizeof trailer, f) == sizeof trailer);
    FUZZ_CHECK(fclose(f) == 0);
}

static void check_read(uint32_t kind)
{
    state_reader r;
    esgd_error err = {0};
    esgd_status st = state_file_read(path, kind, &r, &err);
    FUZZ_CHECK(st == err.status);
    if (st != ESGD_OK) {
        FUZZ_CHECK(r.data == NULL && r.size == 0);
        return;
    }
    FUZZ_CHECK(state_reader_left(&r) == r.size);
    const uint8_t *block;
    size_t block_size;
    while (state_get_bytes(&r, &block, &block_size, &err) == ESGD_OK)
        FUZZ_CHECK(block >= r.data && block + block_size <= r.data + r.size && state_reader_left(&r) <= r.size);
    FUZZ_CHECK(state_reader_left(&r) <= r.size);
    state_reader_destroy(&r);
}

/* What a failed restore must leave alone, copied before each attempt and
 * compared only after a failure (copies beat hashing through instrumented
 * code by far). */
typedef struct snapshot {
    float *importance, *residual, *params, *losses;
    uint32_t agent_round, coordinator_round;
    bool answered;
} snapshot;

static snapshot saved;

static void copy_floats(float **to, const float *from, size_t count)
{
    if (!from)
        return;
    if (!*to)
        *to = malloc(count * sizeof(float));
    FUZZ_CHECK(*to != NULL);
    memcpy(*to, from, count * sizeof(float));
}

static int same_floats(const float *copy, const float *now, size_t count)
{
    return !now || memcmp(copy, now, count * sizeof(float)) == 0;
}

static void check_agent_restore(void)
{
    sparsifier *s = agent_sparsifier(agent);
    uint32_t d = job_dimension(&job.config);
    copy_floats(&saved.importance, sparsifier_importance(s), d);
    copy_floats(&saved.residual, sparsifier_residual(s), d);
    saved.agent_round = 0;
    saved.answered = agent_answered_round(agent, &saved.agent_round);
    esgd_error err = {0};
    esgd_status st = agent_restore(agent, path, &err);
    FUZZ_CHECK(st == err.status);
    if (st == ESGD_OK)
        return;
    uint32_t round = 0;
    FUZZ_CHECK(agent_answered_round(agent, &round) == saved.answered && round == saved.agent_round);
    FUZZ_CHECK(same_floats(saved.importance, sparsifier_importance(s), d));
    FUZZ_CHECK(same_floats(saved.residual, sparsifier_residual(s), d));
}

static void check_coordinator_restore(void)
{
    uint32_t d = job_dimension(&job.config), total = job_total_rounds(&job.config);
    saved.coordinator_round = coordinator_round(coordinator);
    copy_floats(&saved.params, coordinator_params(coordinator), d);
    copy_floats(&saved.losses, coordinator_loss_history(coordinator), total);
    esgd_error err = {0};
    esgd_status st = coordinator_restore(coordinator, path, &err);
    FUZZ_CHECK(st == err.status);
    if (st == ESGD_OK) {
        FUZZ_CHECK(coordinator_round(coordinator) <= total);
        return;
    }
    FUZZ_CHECK(coordinator_round(coordinator) == saved.coordinator_round);
    FUZZ_CHECK(same_floats(saved.params, coordinator_params(coordinator), d));
    FUZZ_CHECK(same_floats(saved.losses, coordinator_loss_history(coordinator), saved.coordinator_round));
}

static void check_getters(const uint8_t *ops, size_t nops)
{
    state_reader r;
    esgd_error err = {0};
    FUZZ_CHECK(state_file_read(path, STATE_KIND_AGENT, &r, &err) == ESGD_OK);
    for (size_t i = 0; i < nops; i++) {
        uint32_t u32;
        uint64_t u64;
        double f64;
        const uint8_t *block = NULL;
        size_t block_size = 0;
        uint8_t exact[64];
        esgd_status st = ESGD_OK;
        switch (ops[i] & 7) {
        case 0: st = state_get_u32(&r, &u32, &err); break;
        case 1: st = state_get_u64(&r, &u64, &err); break;
        case 2: st = state_get_f64(&r, &f64, &err); break;
        case 3:
            st = state_get_bytes(&r, &block, &block_size, &err);
            if (st == ESGD_OK)
                FUZZ_CHECK(block >= r.data && block + block_size <= r.data + r.size);
            break;
        default: st = state_get_exact(&r, exact, ops[i] >> 2, &err); break;
        }
        FUZZ_CHECK(st == ESGD_OK || st == err.status);
        FUZZ_CHECK(state_reader_left(&r) <= r.size);
    }
    state_reader_destroy(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *rest = data + 1;
    size_t rest_size = size - 1;
    switch (data[0] % MODE_COUNT) {
    case MODE_RAW:
        fuzz_write_file(path, rest, rest_size);
        check_read(STATE_KIND_AGENT);
        check_read(STATE_KIND_COORDINATOR);
        check_agent_restore();
        check_coordinator_restore();
        break;
    case MODE_AGENT:
        write_framed(STATE_KIND_AGENT, rest, rest_size);
        check_read(STATE_KIND_AGENT);
        check_agent_restore();
        break;
    case MODE_COORDINATOR:
        write_framed(STATE_KIND_COORDINATOR, rest, rest_size);
        check_coordinator_restore();
        break;
    case MODE_GETTERS: {
        size_t nops = rest_size ? rest[0] : 0;
        if (nops + 1 > rest_size)
            nops = rest_size ? rest_size - 1 : 0;
        size_t skip = rest_size ? 1 + nops : 0;
        write_framed(STATE_KIND_AGENT, rest + skip, rest_size - skip);
        check_getters(rest + (rest_size ? 1 : 0), nops);
        break;
    }
    }
    return 0;
}
