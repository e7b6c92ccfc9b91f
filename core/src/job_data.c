/* Loading one agent's shard of the training set, as the job cuts it (used
 * by the simulator for every agent and by esgd-agent for its own), or all
 * of a gateway's own training data. */
#include "esgd/job_data.h"

#include <stdlib.h>

esgd_status job_load_shard(const esgd_job_config *cfg, const char *dir, uint32_t index, uint32_t parts,
                           dataset_storage storage, esgd_dataset *out, uint32_t *train_samples, esgd_error *err)
{
    if (parts == 0 || index >= parts)
        return esgd_error_set(err, ESGD_ERR_ARG, "shard %u/%u: index must be below the shard count", index, parts);
    char path[4096];
    uint8_t *labels = NULL;
    uint32_t count = 0;
    esgd_shards shards = {0};
    dataset_labels_path(path, sizeof path, dir, "train");
    esgd_status st = idx_read_labels(path, &labels, &count, err);
    if (st == ESGD_OK)
        st = shards_make(&shards, labels, count, parts, cfg->partition, cfg->alpha, cfg->seed, err);
    if (st == ESGD_OK) {
        const uint32_t *subset = shards.indices + shards.offsets[index];
        uint32_t n = shards.offsets[index + 1] - shards.offsets[index];
        st = dataset_open_split(out, dir, "train", subset, n, storage, err);
    }
    if (st == ESGD_OK && train_samples)
        *train_samples = count;
    if (st != ESGD_OK)
        esgd_error_prefix(err, "loading shard %u/%u from %s", index, parts, dir);
    free(labels);
    shards_destroy(&shards);
    return st;
}

esgd_status job_load_own(const esgd_job_config *cfg, const char *dir, dataset_storage storage, esgd_dataset *out,
                         esgd_error *err)
{
    esgd_status st = dataset_open_split(out, dir, "train", NULL, 0, storage, err);
    for (uint32_t i = 0; st == ESGD_OK && i < out->count; i++)
        if (out->labels[i] >= cfg->classes)
            st = esgd_error_set(err, ESGD_ERR_RANGE, "example %u has label %u; the job has %u classes (0..%u)", i,
                                out->labels[i], cfg->classes, cfg->classes - 1);
    if (st != ESGD_OK) {
        esgd_error_prefix(err, "loading this gateway's own data from %s", dir);
        dataset_destroy(out);
    }
    return st;
}
