/* Image classification data in IDX format (MNIST, Fashion-MNIST, ...) and its
 * partition into per-agent shards.
 *
 * Pixels stay as bytes (one quarter of the memory of floats) so a gateway can
 * hold its shard in a few MB; dataset_fill_batch scales them to [0, 1]. */
#ifndef ESGD_DATASET_H
#define ESGD_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "esgd/error.h"
#include "esgd/job_types.h" /* partition_kind */

#define DATASET_MAX_CLASSES 256

typedef struct esgd_dataset {
    uint32_t count;   /* number of examples held */
    uint32_t rows;    /* image height (28 for MNIST) */
    uint32_t cols;    /* image width (28 for MNIST) */
    uint8_t *pixels;  /* (count, rows*cols) raw bytes, 0..255 */
    uint8_t *labels;  /* (count) class labels */
} esgd_dataset;

/* Reads the labels of an IDX1 file (magic 0x00000801). *labels is malloc'd.
 * Errors: ESGD_ERR_IO (missing/unreadable), ESGD_ERR_FORMAT (bad magic),
 * ESGD_ERR_TRUNCATED (file shorter than its header says), ESGD_ERR_RANGE. */
/* A fingerprint of the examples (pixels, then labels): agents announce it so
 * that two on the same data are noticed. */
uint64_t dataset_fingerprint(const esgd_dataset *d);

esgd_status idx_read_labels(const char *path, uint8_t **labels, uint32_t *count, esgd_error *err);

/* Loads images (IDX3, magic 0x00000803) and labels (IDX1) into ds. With
 * subset != NULL only the examples subset[0..subset_count) are read, in that
 * order (the rest of the file is never loaded); with subset == NULL all are.
 * Checks magic numbers, dimensions, that both files hold the same count, that
 * the file sizes match the headers and that subset indices are in range.
 * On error ds is left empty. */
esgd_status dataset_load_idx(esgd_dataset *ds, const char *images_path, const char *labels_path,
                             const uint32_t *subset, uint32_t subset_count, esgd_error *err);

/* dataset_load_idx on DIR/<split>-images-idx3-ubyte and
 * DIR/<split>-labels-idx1-ubyte, split = "train" or "t10k" (MNIST names). */
esgd_status dataset_load_split(esgd_dataset *ds, const char *dir, const char *split,
                               const uint32_t *subset, uint32_t subset_count, esgd_error *err);

/* Path of a split's labels file, for idx_read_labels. */
void dataset_labels_path(char *out, unsigned long out_size, const char *dir, const char *split);

void dataset_destroy(esgd_dataset *ds); /* frees and zeroes; safe on a zeroed ds */

/* Copies examples idx[0..n) as floats in [0, 1] into x (n, rows*cols) and
 * their labels into y (n). */
void dataset_fill_batch(const esgd_dataset *ds, const uint32_t *idx, uint32_t n, float *x, uint8_t *y);

/* Agent a's examples are indices[offsets[a] .. offsets[a+1]). */
typedef struct esgd_shards {
    uint32_t agents;
    uint32_t *offsets; /* (agents + 1) */
    uint32_t *indices; /* (total) example numbers, each used exactly once */
} esgd_shards;

/* Splits examples 0..count-1 among agents. Deterministic for a seed. IID:
 * a seeded shuffle cut into near-equal parts. Dirichlet: for every class,
 * proportions ~ Dir(alpha) over agents; no agent is left with no example.
 * Errors: ESGD_ERR_ARG (agents == 0, agents > count, alpha <= 0). */
esgd_status shards_make(esgd_shards *shards, const uint8_t *labels, uint32_t count, uint32_t agents,
                        partition_kind kind, double alpha, uint64_t seed, esgd_error *err);
void shards_destroy(esgd_shards *shards);

#endif
