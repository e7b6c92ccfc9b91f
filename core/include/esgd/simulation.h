/* N agents and the coordinator in one process, passing each other the same
 * encoded messages they would pass through a broker. Used by esgd-sim and
 * by the tests; the round functions are agent.h's and coordinator.h's. */
#ifndef ESGD_SIMULATION_H
#define ESGD_SIMULATION_H

#include "esgd/agent.h"
#include "esgd/coordinator.h"
#include "esgd/dataset.h"
#include "esgd/job.h"

typedef struct esgd_simulation esgd_simulation;

/* Loads DIR's training labels (cfg->train_samples is set from them), cuts
 * the shards, loads each agent's shard and the test set (t10k or test), and delivers
 * the first model x_0 to every agent. */
esgd_simulation *simulation_new(esgd_job_config *cfg, const char *data_dir, esgd_error *err);
void simulation_free(esgd_simulation *sim); /* NULL is a no-op */

/* Collects every agent's update for x_t, closes the round and delivers the
 * model it produced, x_{t+1}, to every agent (after the last round, the
 * final model with done = 1), as the MQTT coordinator does. An update over
 * the coordinator's norm bound is left out and counted (rejected_range), as
 * over MQTT; any other refused update is an error. */
esgd_status simulation_round(esgd_simulation *sim, round_summary *summary, esgd_error *err);

esgd_coordinator *simulation_coordinator(esgd_simulation *sim);
esgd_agent *simulation_agent(esgd_simulation *sim, uint32_t agent);
const esgd_dataset *simulation_test_set(const esgd_simulation *sim);

#endif
