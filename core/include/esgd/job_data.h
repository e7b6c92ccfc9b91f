/* Loading the data a job trains on: one agent's shard of the training set,
 * cut as the job configuration says, or a gateway's own data. Kept out of job.h so that the job's
 * settings do not bring the dataset module to everyone who reads them. */
#ifndef ESGD_JOB_DATA_H
#define ESGD_JOB_DATA_H

#include <stdint.h>

#include "esgd/dataset.h"
#include "esgd/error.h"
#include "esgd/job.h"

/* The training examples of shard `index` of `parts`: reads DIR's training
 * labels, cuts them as the job says (partition, alpha, seed) and loads that
 * shard's images into memory or opens them streamed (dataset_storage).
 * *train_samples (may be NULL) receives the training-set size. Errors:
 * every dataset error, ESGD_ERR_ARG (index >= parts). */
esgd_status job_load_shard(const esgd_job_config *cfg, const char *dir, uint32_t index, uint32_t parts,
                           dataset_storage storage, esgd_dataset *out, uint32_t *train_samples, esgd_error *err);

/* All of DIR's training split: a gateway's own data rather than a shard of
 * a shared set. Checks that every label is below the job's classes.
 * Errors: every dataset error, ESGD_ERR_RANGE (a label). */
esgd_status job_load_own(const esgd_job_config *cfg, const char *dir, dataset_storage storage, esgd_dataset *out,
                         esgd_error *err);

#endif
