/* Importing tabular and time-series CSV data into IDX files (esgd-import).
 *
 *   import_csv_options o = {.train = "train.csv", .tests = tests, .test_count = 1,
 *                           .label = "class", .out_dir = "data/mine"};
 *   esgd_error err = {0};
 *   if (import_csv(&o, &err) != ESGD_OK) fprintf(stderr, "%s\n", err.message);
 *
 * CSV: a header row, then one row per example; fields separated by ',',
 * optionally double-quoted ("" inside quotes is one quote); CRLF or LF line
 * ends; blank lines are skipped; lines of any length. Every column but the
 * label is a feature and must hold a finite number; the label must be an
 * integer 0..255. The label column is named, or given as a 0-based index
 * (a header name wins over an index).
 *
 * Error messages name the file, the line (from 1) and the column (from 1,
 * with its header name): "a.csv:3: column 2 (\"b\"): \"x\" is not a number".
 *
 * Output (IDX, big-endian; magic 0x00000D<rank> for f32, 0x00000801 for u8):
 *   <split>-features.idx  f32 (rows, features), or (windows, channels, W)
 *   <split>-labels.idx    u8 (rows) or (windows)
 *   normalisation.csv     feature,mean,std: x' = (x - mean) / std, std is the
 *                         population standard deviation (divide by n) of the
 *                         training data, 1 where that is 0. */
#ifndef ESGD_CSV_IMPORT_H
#define ESGD_CSV_IMPORT_H

#include <stdint.h>

#include "esgd/error.h"

/* A CSV file's features and labels. */
typedef struct import_table {
    uint32_t rows;     /* data rows */
    uint32_t features; /* columns without the label */
    char **names;      /* (features) header names */
    float *x;          /* (rows, features) */
    uint8_t *y;        /* (rows) */
} import_table;

/* Errors: ESGD_ERR_IO (cannot open/read), ESGD_ERR_FORMAT (empty file, no
 * data rows, wrong number of fields, not a number, bad quoting),
 * ESGD_ERR_MISSING (no such label column), ESGD_ERR_RANGE (label not an
 * integer 0..255, a feature beyond float range), ESGD_ERR_NOMEM,
 * ESGD_ERR_TOO_LARGE (2^32-1 rows or more). On error t is left empty. */
esgd_status import_table_read(import_table *t, const char *path, const char *label, esgd_error *err);
void import_table_destroy(import_table *t); /* frees and zeroes; safe on a zeroed t */

/* Per-feature (or per-channel) normalisation. */
typedef struct import_norm {
    uint32_t count;
    char **names; /* (count) */
    double *mean; /* (count) */
    double *std;  /* (count), > 0 */
} import_norm;

/* Mean and population std of each column of t (std 0 -> 1). Errors: NOMEM. */
esgd_status import_norm_compute(import_norm *n, const import_table *t, esgd_error *err);
/* Reads a normalisation.csv. Errors: IO, FORMAT (header, fields, numbers),
 * RANGE (std <= 0). */
esgd_status import_norm_read(import_norm *n, const char *path, esgd_error *err);
/* Errors: IO. */
esgd_status import_norm_write(const import_norm *n, const char *path, esgd_error *err);
/* Checks that n has t's features in t's order (ESGD_ERR_MISMATCH naming
 * norm_path and t_path), then normalises t->x in place. */
esgd_status import_norm_apply(const import_norm *n, const char *norm_path, import_table *t, const char *t_path,
                              esgd_error *err);
void import_norm_destroy(import_norm *n); /* frees and zeroes; safe on a zeroed n */

/* IDX writers. dims (rank of them, 1..255) are the shape; data is row-major.
 * Errors: IO. */
esgd_status import_write_idx_f32(const char *path, const float *data, unsigned rank, const uint32_t *dims,
                                 esgd_error *err);
esgd_status import_write_idx_u8(const char *path, const uint8_t *data, uint32_t count, esgd_error *err);

/* esgd-import csv: train (and test) files to <out_dir>/train-*, test-* (one
 * test file) or test1-*, test2-*, ... (several). With norm_path the stored
 * normalisation is applied, otherwise the training file's is computed; either
 * way it is written to <out_dir>/normalisation.csv. Without a training file
 * (train NULL) only test files are imported, with norm_path's normalisation:
 * a coordinator's test set. out_dir is created if
 * missing. Errors: those of the functions above, ESGD_ERR_MISMATCH (a test
 * file's header differs from the training file's), ESGD_ERR_ARG. */
typedef struct import_csv_options {
    const char *train;        /* NULL: test files only, norm_path required */
    const char *const *tests; /* (test_count) */
    uint32_t test_count;
    const char *label;     /* name or 0-based index */
    const char *out_dir;
    const char *norm_path; /* NULL: compute from train */
} import_csv_options;
esgd_status import_csv(const import_csv_options *o, esgd_error *err);

/* esgd-import windows: one time series (row = time step, columns = channels
 * plus the label) cut into windows of `window` steps starting every `stride`
 * steps (0: stride = window); a trailing part shorter than a window is
 * dropped. Writes <out_dir>/<split>-features.idx (windows, channels, window),
 * channel-major, <out_dir>/<split>-labels.idx (the label of each window's last
 * step) and normalisation.csv (per channel, over the whole series, or
 * norm_path's: a test series takes the training series' normalisation).
 * Errors: as import_csv, plus ESGD_ERR_RANGE (window longer than the
 * series), ESGD_ERR_ARG (window 0), ESGD_ERR_TOO_LARGE. */
typedef struct import_windows_options {
    const char *input;
    uint32_t window;
    uint32_t stride;
    const char *label;
    const char *out_dir;
    const char *norm_path; /* NULL: compute */
    const char *split;     /* "train" (NULL) or "test" */
} import_windows_options;
esgd_status import_windows(const import_windows_options *o, esgd_error *err);

#endif
