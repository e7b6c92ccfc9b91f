/* The trained model as a self-describing file (schemas/model-file.md): the
 * job, run and round it comes from, the network's spec text with the
 * example shape and class count it was parsed for, the parameters, the
 * final test accuracy and optionally the input normalisation, in one
 * msgpack map followed by a BLAKE2b-256 checksum of that map's bytes.
 *
 *   model_file f = {.run = run, .round = last_closed, .classes = 10,
 *                   .num_params = d, .params = params, .test_accuracy = acc};
 *   snprintf(f.job, ...); snprintf(f.model, ...); snprintf(f.input, ...);
 *   st = model_file_write("model.esgd", &f, &err);   // atomic: PATH.tmp, fsync, rename
 *
 *   model_file g;
 *   st = model_file_read("model.esgd", &g, &err);    // g.spec parsed, g.params owned
 *   model_file_destroy(&g);
 *
 * Reading checks everything before anything is used: the checksum, the
 * format name and version, no unknown or missing keys, the spec parsing for
 * its input and classes, num_params equal to the spec's, the lengths of the
 * bins, every number finite, and nothing after the checksum. Every error
 * message names the file. */
#ifndef ESGD_MODEL_FILE_H
#define ESGD_MODEL_FILE_H

#include <stdint.h>

#include "esgd/error.h"
#include "esgd/job.h"
#include "esgd/model_spec.h"

#define MODEL_FILE_FORMAT "esgd-model"
#define MODEL_FILE_VERSION 1
#define MODEL_FILE_CHECKSUM_BYTES 32 /* BLAKE2b-256 (libsodium crypto_generichash) */

typedef struct model_file {
    char job[JOB_NAME_MAX + 1];
    uint64_t run;                        /* the run of the job (esgd_job_config.run) */
    uint32_t round;                      /* the last closed round */
    char model[MODEL_SPEC_TEXT_MAX + 1]; /* the spec text, as the job gave it */
    char input[32];                      /* one example's shape, "28x28" */
    uint32_t classes;
    uint32_t num_params;
    float *params;        /* (num_params); owned after model_file_read */
    float test_accuracy;  /* 0..1, NaN when the job had no test evaluation (stored as nil) */
    uint32_t norm_count;  /* normalisation pairs, 0: none (stored as nil) */
    float *norm;          /* (norm_count, 2): mean, std; owned after model_file_read */
    model_spec spec;      /* filled by model_file_read (ignored by model_file_write) */
} model_file;

/* Checks f as model_file_read would (spec, num_params, finite params,
 * accuracy in 0..1, normalisation shape) and writes it atomically: PATH.tmp,
 * fsync, rename over PATH, fsync of the folder. Errors: ESGD_ERR_ARG,
 * ESGD_ERR_DIMENSION, ESGD_ERR_NONFINITE, ESGD_ERR_RANGE (a bad f),
 * ESGD_ERR_NOMEM, ESGD_ERR_IO. */
esgd_status model_file_write(const char *path, const model_file *f, esgd_error *err);

/* Reads and checks a model file into f (zeroed first; on error left empty).
 * Errors: ESGD_ERR_IO (cannot open or read), ESGD_ERR_TOO_LARGE,
 * ESGD_ERR_TRUNCATED / ESGD_ERR_FORMAT (no checksum at the end, checksum
 * mismatch, not msgpack, unknown key, wrong format name),
 * ESGD_ERR_VERSION, ESGD_ERR_MISSING, ESGD_ERR_TYPE, ESGD_ERR_ARG (spec or
 * input does not parse), ESGD_ERR_DIMENSION (num_params, bin lengths),
 * ESGD_ERR_NONFINITE, ESGD_ERR_RANGE. */
esgd_status model_file_read(const char *path, model_file *f, esgd_error *err);

/* Frees what model_file_read allocated and zeroes f; safe on a zeroed f. */
void model_file_destroy(model_file *f);

/* Reads a normalisation.csv (feature,mean,std, as esgd-import writes it)
 * into *norm (malloc'd, (count, 2) mean, std), checked against the
 * network's input: one pair per input value, or, for inputs of rank 2 or 3,
 * one per entry of the first axis (the channels of a window). Errors: those
 * of import_norm_read, ESGD_ERR_DIMENSION, ESGD_ERR_NONFINITE. */
esgd_status model_file_read_normalisation(const char *csv_path, const model_spec *spec, float **norm,
                                          uint32_t *count, esgd_error *err);

/* Checks that norm (count pairs) fits spec's input as above (count 0: no
 * normalisation, always fits) with finite means and stds > 0. */
esgd_status model_file_check_normalisation(const model_spec *spec, const float *norm, uint32_t count,
                                           esgd_error *err);

/* Applies norm (count pairs that passed the check above) to one example of
 * spec's input: out[i] = (raw[i] - mean) / std. raw and out may be equal. */
void model_file_normalise(const model_spec *spec, const float *norm, uint32_t count, const float *raw, float *out);

#endif
