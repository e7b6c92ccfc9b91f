/* The in-process testbed: data loading and sharding for N agents, and the
 * message loop between them and the coordinator, all in memory. */
#include "esgd/simulation.h"

#include <stdlib.h>

#include "esgd/envelope.h"
#include "esgd/job_data.h"

struct esgd_simulation {
    esgd_dataset test;
    esgd_dataset *shards;  /* (agents) */
    esgd_agent **agents;   /* (agents) */
    esgd_coordinator *coordinator;
    uint32_t agent_count;
    verify_key *agent_keys; /* (agents) */
    signing_key coordinator_key;
};

void simulation_free(esgd_simulation *s)
{
    if (!s)
        return;
    for (uint32_t a = 0; a < s->agent_count; a++) {
        agent_free(s->agents[a]);
        dataset_destroy(&s->shards[a]);
    }
    free(s->agents);
    free(s->shards);
    free(s->agent_keys);
    coordinator_free(s->coordinator);
    dataset_destroy(&s->test);
    free(s);
}

static esgd_status load_data(esgd_simulation *s, const char *dir, esgd_job_config *cfg, esgd_error *err)
{
    char path[4096];
    uint8_t *labels = NULL;
    uint32_t count = 0;
    dataset_labels_path(path, sizeof path, dir, "train");
    esgd_status st = idx_read_labels(path, &labels, &count, err);
    free(labels);
    if (st != ESGD_OK)
        return st;
    cfg->train_samples = count;
    if ((st = job_config_validate(cfg, err)) != ESGD_OK)
        return st;
    const char *test_split = dataset_test_split(dir);
    if (!test_split)
        return esgd_error_set(err, ESGD_ERR_IO, "no test split in %s: t10k (MNIST's names) or test (esgd-import's)",
                              dir);
    if ((st = dataset_load_split(&s->test, dir, test_split, NULL, 0, err)) != ESGD_OK)
        return st;
    s->shards = calloc(cfg->agents, sizeof *s->shards);
    s->agents = calloc(cfg->agents, sizeof *s->agents);
    s->agent_keys = calloc(cfg->agents, sizeof *s->agent_keys);
    if (!s->shards || !s->agents || !s->agent_keys)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for %u agents", cfg->agents);
    s->agent_count = cfg->agents;
    /* One fixed run id per seed (top bit set, as the coordinator's random
     * ones, so the messages have the same size). */
    if (!cfg->run)
        cfg->run = (cfg->seed * 0x9e3779b97f4a7c15ull) | (1ull << 63);
    /* Every message is signed as over MQTT, with keys derived from the seed
     * so that runs repeat exactly (and byte counts include signatures). */
    signing_key coordinator_secret, agent_secret;
    verify_key coordinator_public;
    keys_derive(cfg->seed, "coordinator", &coordinator_secret, &coordinator_public);
    for (uint32_t a = 0; a < cfg->agents; a++) {
        char name[KEY_NAME_MAX];
        keys_agent_name(name, a);
        keys_derive(cfg->seed, name, &agent_secret, &s->agent_keys[a]);
        if ((st = job_load_shard(cfg, dir, a, cfg->agents, DATASET_IN_MEMORY, &s->shards[a], NULL, err)) != ESGD_OK)
            return st;
        if (!(s->agents[a] = agent_new(cfg, a, &s->shards[a], err)))
            return err ? err->status : ESGD_ERR_ARG;
        agent_set_keys(s->agents[a], &agent_secret, &coordinator_public);
    }
    s->coordinator_key = coordinator_secret;
    return ESGD_OK;
}

/* Delivers the coordinator's current broadcast to every agent. */
static esgd_status broadcast(esgd_simulation *s, esgd_error *err)
{
    const uint8_t *msg;
    size_t size;
    esgd_status st = coordinator_round_model(s->coordinator, &msg, &size, err);
    for (uint32_t a = 0; st == ESGD_OK && a < s->agent_count; a++)
        st = agent_apply_model(s->agents[a], msg, size, err);
    return st;
}

esgd_simulation *simulation_new(esgd_job_config *cfg, const char *data_dir, esgd_error *err)
{
    esgd_simulation *s = calloc(1, sizeof *s);
    if (!s) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "simulation: out of memory");
        return NULL;
    }
    if (envelope_init(err) != ESGD_OK || load_data(s, data_dir, cfg, err) != ESGD_OK ||
        !(s->coordinator = coordinator_new(cfg, err)) ||
        (coordinator_set_keys(s->coordinator, &s->coordinator_key, s->agent_keys), broadcast(s, err)) != ESGD_OK) {
        simulation_free(s);
        return NULL;
    }
    return s;
}

esgd_coordinator *simulation_coordinator(esgd_simulation *s)
{
    return s->coordinator;
}

esgd_agent *simulation_agent(esgd_simulation *s, uint32_t agent)
{
    return agent < s->agent_count ? s->agents[agent] : NULL;
}

const esgd_dataset *simulation_test_set(const esgd_simulation *s)
{
    return &s->test;
}

esgd_status simulation_round(esgd_simulation *s, round_summary *summary, esgd_error *err)
{
    if (coordinator_done(s->coordinator))
        return esgd_error_set(err, ESGD_ERR_ARG, "simulation: all rounds are done");
    esgd_status st = ESGD_OK;
    for (uint32_t a = 0; st == ESGD_OK && a < s->agent_count; a++) {
        const uint8_t *msg;
        size_t size;
        if ((st = agent_compute_update(s->agents[a], &msg, &size, err)) != ESGD_OK)
            break;
        update_outcome outcome =
            coordinator_receive_update(s->coordinator, msg, size, a, coordinator_round(s->coordinator), err);
        /* An update over the norm bound is the coordinator's policy at work
         * on an honest agent (a gradient spike): over MQTT it is refused,
         * counted (rejected_range) and the round closes without it, and so
         * here. Any other refusal of our own agents' messages is a bug. */
        if (outcome == UPDATE_REJECTED && err && err->status == ESGD_ERR_RANGE)
            continue;
        if (outcome != UPDATE_ACCEPTED) {
            /* The coordinator's reason stays, with ours put before it:
             * formatting err->message into itself would overlap. */
            st = ESGD_ERR_MISMATCH;
            if (err)
                err->status = st;
            esgd_error_prefix(err, "agent %u update %s", a, update_outcome_name(outcome));
        }
    }
    if (st != ESGD_OK)
        return st;
    coordinator_close_round(s->coordinator, summary);
    return broadcast(s, err);
}
