/* Classification data in IDX format and its partition into per-agent shards.
 *
 * An example is a tensor of rank 1..3 (a feature vector, an image, channels
 * x a window of a time series, ...), stored as unsigned bytes (MNIST,
 * Fashion-MNIST: magic 0x0000080R, R = rank + 1) or as big-endian 32-bit
 * floats (esgd-import: magic 0x00000D0R); labels are an IDX1 u8 file.
 *
 * Bytes stay bytes (one quarter of the memory of floats) so a gateway can
 * hold its shard in a few MB; dataset_fill_batch scales them to [0, 1].
 * Floats are used as they are (esgd-import has normalised them).
 *
 * A dataset is held in memory (DATASET_IN_MEMORY: the simulator, the
 * evaluation) or streamed (DATASET_STREAMED: esgd-agent): its labels are in
 * memory (one byte an example) but its examples stay in the file, and
 * dataset_read_batch reads each batch's rows with pread, so the memory used
 * does not grow with the data (the file's pages go to the kernel's page
 * cache, which is not the process's resident set). */
#ifndef ESGD_DATASET_H
#define ESGD_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "esgd/error.h"
#include "esgd/job_types.h" /* partition_kind */

#define DATASET_MAX_CLASSES 256
#define DATASET_MAX_RANK 3
#define DATASET_MAX_EXAMPLE_SIZE (1u << 24) /* values in one example (16M) */

typedef enum dataset_type { DATASET_U8, DATASET_F32 } dataset_type;

typedef enum dataset_storage {
    DATASET_IN_MEMORY, /* every example read into u8 or f32 when loaded */
    DATASET_STREAMED   /* examples read from the file a batch at a time (u8 and f32 stay NULL) */
} dataset_storage;

typedef struct dataset_stream dataset_stream; /* a streamed dataset's open file */

typedef struct esgd_dataset {
    uint32_t count;        /* examples held */
    uint32_t rank;         /* dims of one example, 1..3 */
    uint32_t dims[3];      /* one example's dims, outermost first; MNIST: rank 2, {28, 28} */
    uint32_t example_size; /* product of dims */
    dataset_type type;
    uint8_t *u8;           /* (count, example_size) raw bytes when DATASET_U8; fill_batch scales to [0,1] */
    float *f32;            /* (count, example_size) when DATASET_F32, used as is */
    uint8_t *labels;       /* (count), also when streamed */
    dataset_stream *stream; /* streamed: the examples' file (u8, f32 NULL); NULL in memory */
} esgd_dataset;

/* A fingerprint of the examples (their values, then the labels): agents
 * announce it so that two on the same data are noticed. u8 data hashes its
 * bytes; f32 data the little-endian bytes of its values. */
uint64_t dataset_fingerprint(const esgd_dataset *d);

/* Reads the labels of an IDX1 file (magic 0x00000801). *labels is malloc'd.
 * Errors: ESGD_ERR_IO (missing/unreadable), ESGD_ERR_FORMAT (bad magic),
 * ESGD_ERR_TRUNCATED (file shorter than its header says), ESGD_ERR_RANGE. */
esgd_status idx_read_labels(const char *path, uint8_t **labels, uint32_t *count, esgd_error *err);

/* Loads examples (IDX u8 or f32 of 2..4 dimensions: the count, then 1..3 per
 * example) and labels (IDX1 u8) into ds. With subset != NULL only the
 * examples subset[0..subset_count) are read, in that order (the rest of the
 * file is never loaded); with subset == NULL all are. Checks magic numbers,
 * dimensions (each 1.., an example at most DATASET_MAX_EXAMPLE_SIZE values),
 * that both files hold the same count, that the file sizes match the headers,
 * that subset indices are in range and that every float read is finite
 * (ESGD_ERR_FORMAT naming the example otherwise). On error ds is left empty. */
esgd_status dataset_load_idx(esgd_dataset *ds, const char *images_path, const char *labels_path,
                             const uint32_t *subset, uint32_t subset_count, esgd_error *err);

/* dataset_load_idx with a choice of storage. DATASET_STREAMED keeps the
 * examples file open (one descriptor) and reads it once through, in subset
 * order, to check every float and take the fingerprint; memory: the labels
 * of the file while opening, then count bytes of labels, 4 bytes an example
 * for the subset's rows, and one example's bytes. Same checks and errors. */
esgd_status dataset_open_idx(esgd_dataset *ds, const char *images_path, const char *labels_path,
                             const uint32_t *subset, uint32_t subset_count, dataset_storage storage, esgd_error *err);
bool dataset_streamed(const esgd_dataset *ds);

/* dataset_load_idx on a split of a data folder, split = "train", "t10k",
 * "test", ... Two namings are accepted: MNIST's DIR/<split>-images-idx3-ubyte
 * with DIR/<split>-labels-idx1-ubyte, and esgd-import's
 * DIR/<split>-features.idx with DIR/<split>-labels.idx; the first whose
 * examples file exists is used (ESGD_ERR_IO naming both when neither does). */
esgd_status dataset_load_split(esgd_dataset *ds, const char *dir, const char *split,
                               const uint32_t *subset, uint32_t subset_count, esgd_error *err);
/* dataset_load_split with a choice of storage (dataset_open_idx). */
esgd_status dataset_open_split(esgd_dataset *ds, const char *dir, const char *split, const uint32_t *subset,
                               uint32_t subset_count, dataset_storage storage, esgd_error *err);

/* Whether DIR holds an examples file of the split in either naming. */
bool dataset_split_exists(const char *dir, const char *split);

/* DIR's test split: "t10k" (MNIST's name) if it exists, else "test"
 * (esgd-import's) if it exists, else NULL. */
const char *dataset_test_split(const char *dir);

/* Path of a split's labels file, for idx_read_labels: the one that goes with
 * the examples file dataset_load_split would use (MNIST's name when there is
 * none). */
void dataset_labels_path(char *out, unsigned long out_size, const char *dir, const char *split);

void dataset_destroy(esgd_dataset *ds); /* frees and zeroes; safe on a zeroed ds */

/* Copies examples idx[0..n) as floats into x (n, example_size): u8 values
 * scaled to [0, 1] (v / 255.0f), f32 values as they are; their labels into
 * y (n). In-memory datasets only; the caller checks idx < count. */
void dataset_fill_batch(const esgd_dataset *ds, const uint32_t *idx, uint32_t n, float *x, uint8_t *y);

/* dataset_fill_batch for either storage, with the same bits: a streamed
 * dataset reads the n rows from its file. Errors: ESGD_ERR_RANGE (an idx >=
 * count), and for a streamed one ESGD_ERR_TRUNCATED (the file was cut
 * short since it was opened), ESGD_ERR_FORMAT (it changed size or
 * modification time since, or a float read is not finite), ESGD_ERR_IO.
 * On error x and y are partly written. */
esgd_status dataset_read_batch(const esgd_dataset *ds, const uint32_t *idx, uint32_t n, float *x, uint8_t *y,
                               esgd_error *err);

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
