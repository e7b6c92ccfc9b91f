/* IDX image and label files (MNIST and its kin): header checks against the
 * file size, whole-file or subset loading that reads only the chosen rows
 * (a gateway holds only its shard), and conversion of a batch to floats. */
#include "esgd/dataset.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "esgd/fingerprint.h"

#define IDX_TYPE_UBYTE 0x08
#define IDX_MAX_DIMS 3
#define IDX_MAX_COUNT 100000000u /* examples per file */
#define IDX_MAX_SIDE 1024u       /* image rows or columns */

/* An open IDX file whose header has been checked against the file size. */
typedef struct idx_file {
    FILE *f;
    const char *path;
    uint32_t dims[IDX_MAX_DIMS]; /* count, then rows and cols for images */
    off_t header_bytes;
    size_t row_bytes;            /* bytes per example: 1 for labels, rows*cols for images */
} idx_file;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* A short read is TRUNCATED at end of file and IO otherwise; what names the
 * part being read. */
static esgd_status idx_read(idx_file *idx, void *buf, size_t bytes, const char *what, esgd_error *err)
{
    if (fread(buf, 1, bytes, idx->f) == bytes)
        return ESGD_OK;
    if (ferror(idx->f))
        return esgd_error_set(err, ESGD_ERR_IO, "reading %s of %s: %s", what, idx->path, strerror(errno));
    return esgd_error_set(err, ESGD_ERR_TRUNCATED, "%s: file ends inside its %s", idx->path, what);
}

static esgd_status idx_check_header(idx_file *idx, unsigned ndims, esgd_error *err)
{
    struct stat sb;
    if (fstat(fileno(idx->f), &sb) != 0)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot stat %s: %s", idx->path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return esgd_error_set(err, ESGD_ERR_IO, "%s is not a regular file", idx->path);

    uint8_t magic[4], dims[4 * IDX_MAX_DIMS];
    esgd_status st = idx_read(idx, magic, sizeof magic, "IDX magic number", err);
    if (st != ESGD_OK)
        return st;
    if (magic[0] != 0 || magic[1] != 0)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "%s: not an IDX file (magic 0x%08x)", idx->path, be32(magic));
    if (magic[2] != IDX_TYPE_UBYTE)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "%s: IDX element type 0x%02x, expected 0x%02x (unsigned byte)",
                              idx->path, magic[2], IDX_TYPE_UBYTE);
    if (magic[3] != ndims)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "%s: IDX file has %u dimensions, expected %u", idx->path,
                              magic[3], ndims);
    if ((st = idx_read(idx, dims, 4 * (size_t)ndims, "IDX header", err)) != ESGD_OK)
        return st;

    uint64_t row_bytes = 1;
    for (unsigned i = 0; i < ndims; i++) {
        uint32_t limit = i == 0 ? IDX_MAX_COUNT : IDX_MAX_SIDE;
        idx->dims[i] = be32(dims + 4 * i);
        if (idx->dims[i] == 0 || idx->dims[i] > limit)
            return esgd_error_set(err, ESGD_ERR_RANGE, "%s: IDX dimension %u is %u, allowed 1..%u", idx->path, i,
                                  idx->dims[i], limit);
        if (i > 0)
            row_bytes *= idx->dims[i];
    }
    idx->header_bytes = 4 + 4 * (off_t)ndims;
    idx->row_bytes = (size_t)row_bytes;

    /* The limits above keep this below 2^47, so it cannot overflow. */
    uint64_t expected = (uint64_t)idx->header_bytes + (uint64_t)idx->dims[0] * row_bytes;
    uint64_t actual = (uint64_t)sb.st_size;
    if (actual < expected)
        return esgd_error_set(err, ESGD_ERR_TRUNCATED,
                              "%s: truncated: its header (%u examples) needs %llu bytes, the file has %llu", idx->path,
                              idx->dims[0], (unsigned long long)expected, (unsigned long long)actual);
    if (actual > expected)
        return esgd_error_set(err, ESGD_ERR_FORMAT,
                              "%s: %llu bytes, %llu more than its header (%u examples) accounts for", idx->path,
                              (unsigned long long)actual, (unsigned long long)(actual - expected), idx->dims[0]);
    return ESGD_OK;
}

static void idx_close(idx_file *idx)
{
    if (idx->f)
        fclose(idx->f);
    idx->f = NULL;
}

static esgd_status idx_open(idx_file *idx, const char *path, unsigned ndims, esgd_error *err)
{
    *idx = (idx_file){.path = path};
    if (!path)
        return esgd_error_set(err, ESGD_ERR_ARG, "IDX file path is NULL");
    idx->f = fopen(path, "rb");
    if (!idx->f)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    esgd_status st = idx_check_header(idx, ndims, err);
    if (st != ESGD_OK)
        idx_close(idx);
    return st;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The subset as (file row << 32 | position in subset), sorted: reading rows
 * in this order moves through the file forwards only, and adjacent rows come
 * from one buffered read. */
static esgd_status subset_order(const uint32_t *subset, uint32_t n, uint32_t count, const char *path,
                                uint64_t **order, esgd_error *err)
{
    *order = NULL;
    for (uint32_t i = 0; i < n; i++)
        if (subset[i] >= count)
            return esgd_error_set(err, ESGD_ERR_RANGE, "subset[%u] = %u is out of range: %s holds %u examples", i,
                                  subset[i], path, count);
    uint64_t *keys = malloc((size_t)n * sizeof *keys);
    if (!keys)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for a subset of %u examples", n);
    for (uint32_t i = 0; i < n; i++)
        keys[i] = (uint64_t)subset[i] << 32 | i;
    qsort(keys, n, sizeof *keys, compare_u64);
    *order = keys;
    return ESGD_OK;
}

/* Allocates *out (n rows) and reads into row i the file row order names for
 * it, or file row i when order is NULL (then n is the file's count). */
static esgd_status idx_load_rows(idx_file *idx, const uint64_t *order, uint32_t n, uint8_t **out, esgd_error *err)
{
    *out = NULL;
    if (n > SIZE_MAX / idx->row_bytes)
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "%s: %u examples do not fit in memory", idx->path, n);
    uint8_t *rows = malloc((size_t)n * idx->row_bytes);
    if (!rows)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "%s: out of memory for %u examples", idx->path, n);

    esgd_status st = ESGD_OK;
    if (!order) {
        st = idx_read(idx, rows, (size_t)n * idx->row_bytes, "data", err);
    } else {
        uint64_t next_row = 0; /* the stream sits just after the header */
        for (uint32_t k = 0; k < n && st == ESGD_OK; k++) {
            uint32_t row = (uint32_t)(order[k] >> 32), position = (uint32_t)order[k];
            off_t offset = idx->header_bytes + (off_t)row * (off_t)idx->row_bytes;
            if (row != next_row && fseeko(idx->f, offset, SEEK_SET) != 0)
                st = esgd_error_set(err, ESGD_ERR_IO, "seeking in %s: %s", idx->path, strerror(errno));
            else
                st = idx_read(idx, rows + (size_t)position * idx->row_bytes, idx->row_bytes, "data", err);
            next_row = (uint64_t)row + 1;
        }
    }
    if (st != ESGD_OK) {
        free(rows);
        return st;
    }
    *out = rows;
    return ESGD_OK;
}

esgd_status idx_read_labels(const char *path, uint8_t **labels, uint32_t *count, esgd_error *err)
{
    if (!labels || !count)
        return esgd_error_set(err, ESGD_ERR_ARG, "idx_read_labels: NULL output");
    *labels = NULL;
    *count = 0;
    idx_file idx;
    esgd_status st = idx_open(&idx, path, 1, err);
    if (st != ESGD_OK)
        return st;
    st = idx_load_rows(&idx, NULL, idx.dims[0], labels, err);
    idx_close(&idx);
    if (st == ESGD_OK)
        *count = idx.dims[0];
    return st;
}

esgd_status dataset_load_idx(esgd_dataset *ds, const char *images_path, const char *labels_path,
                             const uint32_t *subset, uint32_t subset_count, esgd_error *err)
{
    if (!ds)
        return esgd_error_set(err, ESGD_ERR_ARG, "dataset_load_idx: NULL dataset");
    *ds = (esgd_dataset){0};
    if (subset && subset_count == 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "dataset_load_idx: empty subset");

    idx_file images = {0}, labels = {0};
    uint64_t *order = NULL;
    esgd_dataset out = {0};
    esgd_status st;
    if ((st = idx_open(&images, images_path, 3, err)) != ESGD_OK ||
        (st = idx_open(&labels, labels_path, 1, err)) != ESGD_OK)
        goto done;
    if (images.dims[0] != labels.dims[0]) {
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "%s holds %u images but %s holds %u labels", images_path,
                            images.dims[0], labels_path, labels.dims[0]);
        goto done;
    }
    out.count = subset ? subset_count : images.dims[0];
    out.rows = images.dims[1];
    out.cols = images.dims[2];
    if ((subset && (st = subset_order(subset, subset_count, images.dims[0], images_path, &order, err)) != ESGD_OK) ||
        (st = idx_load_rows(&images, order, out.count, &out.pixels, err)) != ESGD_OK ||
        (st = idx_load_rows(&labels, order, out.count, &out.labels, err)) != ESGD_OK)
        goto done;
    *ds = out;
done:
    free(order);
    idx_close(&images);
    idx_close(&labels);
    if (st != ESGD_OK) {
        free(out.pixels);
        free(out.labels);
    }
    return st;
}

static int split_path(char *out, size_t out_size, const char *dir, const char *split, const char *kind)
{
    return snprintf(out, out_size, "%s/%s-%s-ubyte", dir, split, kind);
}

void dataset_labels_path(char *out, unsigned long out_size, const char *dir, const char *split)
{
    split_path(out, out_size, dir, split, "labels-idx1");
}

esgd_status dataset_load_split(esgd_dataset *ds, const char *dir, const char *split, const uint32_t *subset,
                               uint32_t subset_count, esgd_error *err)
{
    if (ds)
        *ds = (esgd_dataset){0};
    if (!dir || !split)
        return esgd_error_set(err, ESGD_ERR_ARG, "dataset_load_split: NULL directory or split name");
    char images[4096], labels[4096];
    int n_images = split_path(images, sizeof images, dir, split, "images-idx3");
    int n_labels = split_path(labels, sizeof labels, dir, split, "labels-idx1");
    if (n_images < 0 || (size_t)n_images >= sizeof images || n_labels < 0 || (size_t)n_labels >= sizeof labels)
        return esgd_error_set(err, ESGD_ERR_ARG, "data directory path too long: %.64s...", dir);
    return dataset_load_idx(ds, images, labels, subset, subset_count, err);
}

void dataset_destroy(esgd_dataset *ds)
{
    if (!ds)
        return;
    free(ds->pixels);
    free(ds->labels);
    *ds = (esgd_dataset){0};
}

void dataset_fill_batch(const esgd_dataset *ds, const uint32_t *idx, uint32_t n, float *x, uint8_t *y)
{
    size_t dim = (size_t)ds->rows * ds->cols;
    for (uint32_t i = 0; i < n; i++) {
        assert(idx[i] < ds->count);
        const uint8_t *pixels = ds->pixels + (size_t)idx[i] * dim;
        float *xi = x + (size_t)i * dim;
        for (size_t p = 0; p < dim; p++)
            xi[p] = pixels[p] / 255.0f;
        y[i] = ds->labels[idx[i]];
    }
}

uint64_t dataset_fingerprint(const esgd_dataset *d)
{
    size_t pixels = (size_t)d->count * d->rows * d->cols;
    uint64_t h = fnv1a64(d->pixels, d->pixels ? pixels : 0);
    return fnv1a64_continue(h, d->labels, d->labels ? d->count : 0);
}
