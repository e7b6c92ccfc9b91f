/* The in-process testbed: data loading and sharding for N agents, and the
 * message loop between them and the coordinator, all in memory. */
#include "esgd/simulation.h"

#include <stdlib.h>

struct esgd_simulation {
    esgd_dataset test;
    esgd_dataset *shards;  /* (agents) */
    esgd_agent **agents;   /* (agents) */
    esgd_coordinator *coordinator;
    uint32_t agent_count;
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
    if ((st = job_config_validate(cfg, err)) != ESGD_OK ||
        (st = dataset_load_split(&s->test, dir, "t10k", NULL, 0, err)) != ESGD_OK)
        return st;
    s->shards = calloc(cfg->agents, sizeof *s->shards);
    s->agents = calloc(cfg->agents, sizeof *s->agents);
    if (!s->shards || !s->agents)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for %u agents", cfg->agents);
    s->agent_count = cfg->agents;
    for (uint32_t a = 0; a < cfg->agents; a++) {
        if ((st = job_load_shard(cfg, dir, a, cfg->agents, &s->shards[a], NULL, err)) != ESGD_OK)
            return st;
        if (!(s->agents[a] = agent_new(cfg, a, &s->shards[a], err)))
            return err ? err->status : ESGD_ERR_ARG;
    }
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
    if (load_data(s, data_dir, cfg, err) != ESGD_OK || !(s->coordinator = coordinator_new(cfg, err)) ||
        broadcast(s, err) != ESGD_OK) {
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
        update_outcome outcome = coordinator_receive_update(s->coordinator, msg, size, err);
        if (outcome != UPDATE_ACCEPTED)
            st = esgd_error_set(err, ESGD_ERR_MISMATCH, "agent %u update %s: %s", a, update_outcome_name(outcome),
                                err ? err->message : "");
    }
    if (st != ESGD_OK)
        return st;
    coordinator_close_round(s->coordinator, summary);
    return broadcast(s, err);
}
