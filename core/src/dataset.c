/* IDX example and label files (MNIST and its kin, and esgd-import's f32
 * files): header checks against the file size, whole-file or subset loading
 * that reads only the chosen rows (a gateway holds only its shard), or
 * streaming that keeps the examples in the file and reads each batch's rows
 * (a gateway's memory does not grow with its data), and conversion of a
 * batch to floats. */
#include "esgd/dataset.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "esgd/fingerprint.h"

#define IDX_TYPE_UBYTE 0x08
#define IDX_TYPE_FLOAT 0x0d
#define IDX_MAX_DIMS (1 + DATASET_MAX_RANK)
#define IDX_MAX_COUNT 100000000u /* examples per file */

/* What a file must hold: labels (u8, count only) or examples (u8 or f32,
 * count and 1..DATASET_MAX_RANK dims). */
typedef enum idx_kind { IDX_LABELS, IDX_EXAMPLES } idx_kind;

/* An open IDX file whose header has been checked against the file size. */
typedef struct idx_file {
    FILE *f;
    const char *path;
    unsigned ndims;
    uint32_t dims[IDX_MAX_DIMS]; /* count, then one example's dims */
    uint8_t type;                /* IDX_TYPE_UBYTE or IDX_TYPE_FLOAT */
    size_t value_bytes;          /* 1 or 4 */
    uint32_t example_size;       /* values per example: 1 for labels */
    off_t header_bytes;
    size_t row_bytes;            /* bytes per example: example_size * value_bytes */
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

static esgd_status idx_check_header(idx_file *idx, idx_kind kind, esgd_error *err)
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
    if (kind == IDX_LABELS) {
        if (magic[2] != IDX_TYPE_UBYTE)
            return esgd_error_set(err, ESGD_ERR_FORMAT,
                                  "%s: IDX element type 0x%02x, expected 0x%02x (unsigned byte)", idx->path, magic[2],
                                  IDX_TYPE_UBYTE);
        if (magic[3] != 1)
            return esgd_error_set(err, ESGD_ERR_FORMAT, "%s: IDX file has %u dimensions, expected 1", idx->path,
                                  magic[3]);
    } else {
        if (magic[2] != IDX_TYPE_UBYTE && magic[2] != IDX_TYPE_FLOAT)
            return esgd_error_set(err, ESGD_ERR_FORMAT,
                                  "%s: IDX element type 0x%02x, expected 0x%02x (unsigned byte) or 0x%02x (float)",
                                  idx->path, magic[2], IDX_TYPE_UBYTE, IDX_TYPE_FLOAT);
        if (magic[3] < 2 || magic[3] > IDX_MAX_DIMS)
            return esgd_error_set(err, ESGD_ERR_FORMAT,
                                  "%s: IDX file has %u dimensions, expected 2 to %u (the count, then 1 to %u per "
                                  "example)",
                                  idx->path, magic[3], IDX_MAX_DIMS, DATASET_MAX_RANK);
    }
    idx->type = magic[2];
    idx->value_bytes = magic[2] == IDX_TYPE_FLOAT ? 4 : 1;
    idx->ndims = magic[3];
    if ((st = idx_read(idx, dims, 4 * (size_t)idx->ndims, "IDX header", err)) != ESGD_OK)
        return st;

    uint64_t example_size = 1;
    for (unsigned i = 0; i < idx->ndims; i++) {
        uint32_t limit = i == 0 ? IDX_MAX_COUNT : DATASET_MAX_EXAMPLE_SIZE;
        idx->dims[i] = be32(dims + 4 * i);
        if (idx->dims[i] == 0 || idx->dims[i] > limit)
            return esgd_error_set(err, ESGD_ERR_RANGE, "%s: IDX dimension %u is %u, allowed 1..%u", idx->path, i,
                                  idx->dims[i], limit);
        if (i > 0) {
            example_size *= idx->dims[i]; /* each factor <= 2^24 and the product is checked at every step */
            if (example_size > DATASET_MAX_EXAMPLE_SIZE)
                return esgd_error_set(err, ESGD_ERR_RANGE,
                                      "%s: one example holds over %u values (dimensions 1..%u multiply to %llu so "
                                      "far)",
                                      idx->path, DATASET_MAX_EXAMPLE_SIZE, i, (unsigned long long)example_size);
        }
    }
    idx->header_bytes = 4 + 4 * (off_t)idx->ndims;
    idx->example_size = (uint32_t)example_size;
    idx->row_bytes = (size_t)example_size * idx->value_bytes;

    /* count <= 10^8, row bytes <= 2^26: below 2^53, so this cannot overflow. */
    uint64_t expected = (uint64_t)idx->header_bytes + (uint64_t)idx->dims[0] * (uint64_t)idx->row_bytes;
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

static esgd_status idx_open(idx_file *idx, const char *path, idx_kind kind, esgd_error *err)
{
    *idx = (idx_file){.path = path};
    if (!path)
        return esgd_error_set(err, ESGD_ERR_ARG, "IDX file path is NULL");
    idx->f = fopen(path, "rb");
    if (!idx->f)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    esgd_status st = idx_check_header(idx, kind, err);
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
static esgd_status check_subset(const uint32_t *subset, uint32_t n, uint32_t count, const char *path,
                                esgd_error *err)
{
    for (uint32_t i = 0; i < n; i++)
        if (subset[i] >= count)
            return esgd_error_set(err, ESGD_ERR_RANGE, "subset[%u] = %u is out of range: %s holds %u examples", i,
                                  subset[i], path, count);
    return ESGD_OK;
}

static esgd_status subset_order(const uint32_t *subset, uint32_t n, uint32_t count, const char *path,
                                uint64_t **order, esgd_error *err)
{
    *order = NULL;
    esgd_status st = check_subset(subset, n, count, path, err);
    if (st != ESGD_OK)
        return st;
    uint64_t *keys = malloc((size_t)n * sizeof *keys);
    if (!keys)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for a subset of %u examples", n);
    for (uint32_t i = 0; i < n; i++)
        keys[i] = (uint64_t)subset[i] << 32 | i;
    qsort(keys, n, sizeof *keys, compare_u64);
    *order = keys;
    return ESGD_OK;
}

/* Turns the big-endian floats of row position (file row `row`) into native
 * floats in place; a NaN or infinity is a FORMAT error naming the example. */
static esgd_status idx_floats_in_place(const idx_file *idx, uint8_t *rows, uint32_t position, uint32_t row,
                                       esgd_error *err)
{
    uint8_t *p = rows + (size_t)position * idx->row_bytes;
    for (uint32_t v = 0; v < idx->example_size; v++, p += 4) {
        uint32_t bits = be32(p);
        float f;
        memcpy(&f, &bits, sizeof f);
        if (!isfinite(f))
            return esgd_error_set(err, ESGD_ERR_FORMAT, "%s: example %u holds %s at value %u (floats must be finite)",
                                  idx->path, row, isnan(f) ? "NaN" : "an infinity", v);
        memcpy(p, &f, sizeof f);
    }
    return ESGD_OK;
}

/* Allocates *out (n rows) and reads into row i the file row order names for
 * it, or file row i when order is NULL (then n is the file's count). Floats
 * come out native and checked finite. */
static esgd_status idx_load_rows(idx_file *idx, const uint64_t *order, uint32_t n, uint8_t **out, esgd_error *err)
{
    *out = NULL;
    if (n > SIZE_MAX / idx->row_bytes)
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "%s: %u examples do not fit in memory", idx->path, n);
    uint8_t *rows = malloc((size_t)n * idx->row_bytes);
    if (!rows)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "%s: out of memory for %u examples", idx->path, n);

    bool floats = idx->type == IDX_TYPE_FLOAT;
    esgd_status st = ESGD_OK;
    if (!order) {
        st = idx_read(idx, rows, (size_t)n * idx->row_bytes, "data", err);
        for (uint32_t i = 0; i < n && st == ESGD_OK && floats; i++)
            st = idx_floats_in_place(idx, rows, i, i, err);
    } else {
        uint64_t next_row = 0; /* the stream sits just after the header */
        for (uint32_t k = 0; k < n && st == ESGD_OK; k++) {
            uint32_t row = (uint32_t)(order[k] >> 32), position = (uint32_t)order[k];
            off_t offset = idx->header_bytes + (off_t)row * (off_t)idx->row_bytes;
            if (row != next_row && fseeko(idx->f, offset, SEEK_SET) != 0)
                st = esgd_error_set(err, ESGD_ERR_IO, "seeking in %s: %s", idx->path, strerror(errno));
            else
                st = idx_read(idx, rows + (size_t)position * idx->row_bytes, idx->row_bytes, "data", err);
            if (st == ESGD_OK && floats)
                st = idx_floats_in_place(idx, rows, position, row, err);
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
    esgd_status st = idx_open(&idx, path, IDX_LABELS, err);
    if (st != ESGD_OK)
        return st;
    st = idx_load_rows(&idx, NULL, idx.dims[0], labels, err);
    idx_close(&idx);
    if (st == ESGD_OK)
        *count = idx.dims[0];
    return st;
}

/* ---- streamed examples ---- */

/* A streamed dataset's examples: its open file, from which each batch reads
 * its rows into one row buffer. */
struct dataset_stream {
    int fd;
    char *path;            /* for messages */
    bool floats;           /* big-endian f32 values, else u8 */
    uint32_t example_size; /* values per example */
    size_t row_bytes;
    off_t header_bytes;
    uint32_t *rows;        /* file row of each position; NULL: position = row */
    uint8_t *row;          /* (row_bytes) the example being read */
    off_t size;            /* the file's size and modification time when opened: */
    struct timespec mtime; /* a later other one means it changed under us */
    uint64_t fingerprint;  /* dataset_fingerprint, computed once when opened */
};

static void stream_free(dataset_stream *s)
{
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s->path);
    free(s->rows);
    free(s->row);
    free(s);
}

/* Reads file row `row` into s->row. */
static esgd_status stream_row(dataset_stream *s, uint32_t row, esgd_error *err)
{
    off_t offset = s->header_bytes + (off_t)row * (off_t)s->row_bytes;
    size_t done = 0;
    while (done < s->row_bytes) {
        ssize_t k = pread(s->fd, s->row + done, s->row_bytes - done, offset + (off_t)done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return esgd_error_set(err, ESGD_ERR_IO, "reading example %u of %s: %s", row, s->path, strerror(errno));
        if (k == 0)
            return esgd_error_set(err, ESGD_ERR_TRUNCATED, "%s: file ends inside example %u (cut short while in use)",
                                  s->path, row);
        done += (size_t)k;
    }
    return ESGD_OK;
}

/* The value of f32 row value v, native, or a FORMAT error naming it. */
static esgd_status stream_float(const dataset_stream *s, uint32_t row, uint32_t v, float *out, esgd_error *err)
{
    uint32_t bits = be32(s->row + 4 * (size_t)v);
    memcpy(out, &bits, sizeof *out);
    if (!isfinite(*out))
        return esgd_error_set(err, ESGD_ERR_FORMAT, "%s: example %u holds %s at value %u (floats must be finite)",
                              s->path, row, isnan(*out) ? "NaN" : "an infinity", v);
    return ESGD_OK;
}

/* The file must still be the one opened: same size, same modification time. */
static esgd_status stream_unchanged(const dataset_stream *s, esgd_error *err)
{
    struct stat sb;
    if (fstat(s->fd, &sb) != 0)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot stat %s: %s", s->path, strerror(errno));
    if (sb.st_size < s->size)
        return esgd_error_set(err, ESGD_ERR_TRUNCATED, "%s was cut short while in use: %lld bytes, %lld when opened",
                              s->path, (long long)sb.st_size, (long long)s->size);
    if (sb.st_size != s->size || sb.st_mtim.tv_sec != s->mtime.tv_sec || sb.st_mtim.tv_nsec != s->mtime.tv_nsec)
        return esgd_error_set(err, ESGD_ERR_FORMAT,
                              "%s was changed while in use (%lld bytes, %lld when opened; modified since): its "
                              "examples are no longer those opened",
                              s->path, (long long)sb.st_size, (long long)s->size);
    return ESGD_OK;
}

/* Keeps images open as out's stream: rows (owned, NULL: every row in file
 * order), and one pass over the rows in position order that checks every
 * float and computes the fingerprint with labels (out->labels, out->count). */
static esgd_status stream_open(esgd_dataset *out, const idx_file *images, uint32_t *rows, esgd_error *err)
{
    dataset_stream *s = calloc(1, sizeof *s);
    if (!s) {
        free(rows);
        return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory");
    }
    s->fd = -1;
    s->rows = rows;
    s->floats = images->type == IDX_TYPE_FLOAT;
    s->example_size = images->example_size;
    s->row_bytes = images->row_bytes;
    s->header_bytes = images->header_bytes;
    struct stat sb;
    esgd_status st = ESGD_OK;
    if (!(s->path = strdup(images->path)) || !(s->row = malloc(s->row_bytes)))
        st = esgd_error_set(err, ESGD_ERR_NOMEM, "%s: out of memory", images->path);
    else if ((s->fd = fcntl(fileno(images->f), F_DUPFD_CLOEXEC, 0)) < 0 || fstat(s->fd, &sb) != 0)
        st = esgd_error_set(err, ESGD_ERR_IO, "%s: %s", images->path, strerror(errno));
    if (st == ESGD_OK) {
        s->size = sb.st_size;
        s->mtime = sb.st_mtim;
    }
    uint64_t h = FNV1A64_START;
    for (uint32_t i = 0; i < out->count && st == ESGD_OK; i++) {
        uint32_t row = rows ? rows[i] : i;
        st = stream_row(s, row, err);
        for (uint32_t v = 0; s->floats && v < s->example_size && st == ESGD_OK; v++) {
            /* Hashed as dataset_fingerprint hashes floats: little-endian. */
            float f;
            if ((st = stream_float(s, row, v, &f, err)) == ESGD_OK) {
                uint32_t bits;
                memcpy(&bits, &f, sizeof bits);
                uint8_t *p = s->row + 4 * (size_t)v;
                p[0] = (uint8_t)bits, p[1] = (uint8_t)(bits >> 8), p[2] = (uint8_t)(bits >> 16);
                p[3] = (uint8_t)(bits >> 24);
            }
        }
        if (st == ESGD_OK)
            h = fnv1a64_continue(h, s->row, s->row_bytes);
    }
    if (st != ESGD_OK) {
        stream_free(s);
        return st;
    }
    s->fingerprint = fnv1a64_continue(h, out->labels, out->count);
    out->stream = s;
    return ESGD_OK;
}

/* The streamed form of dataset_open_idx: every label (they are small) and
 * the rows of the subset's examples, kept in memory; the examples stay in
 * the file. */
static esgd_status open_streamed(esgd_dataset *out, idx_file *images, idx_file *labels, const uint32_t *subset,
                                 esgd_error *err)
{
    uint8_t *all = NULL;
    uint32_t *rows = NULL;
    esgd_status st = ESGD_OK;
    if (subset && (st = check_subset(subset, out->count, images->dims[0], images->path, err)) != ESGD_OK)
        return st;
    if ((st = idx_load_rows(labels, NULL, labels->dims[0], &all, err)) != ESGD_OK)
        return st;
    if (!subset) {
        out->labels = all;
        return stream_open(out, images, NULL, err);
    }
    out->labels = malloc(out->count);
    rows = malloc((size_t)out->count * sizeof *rows);
    if (!out->labels || !rows) {
        free(all);
        free(rows);
        return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for a subset of %u examples", out->count);
    }
    for (uint32_t i = 0; i < out->count; i++) {
        rows[i] = subset[i];
        out->labels[i] = all[subset[i]];
    }
    free(all);
    return stream_open(out, images, rows, err);
}

esgd_status dataset_open_idx(esgd_dataset *ds, const char *images_path, const char *labels_path,
                             const uint32_t *subset, uint32_t subset_count, dataset_storage storage, esgd_error *err)
{
    if (!ds)
        return esgd_error_set(err, ESGD_ERR_ARG, "dataset_load_idx: NULL dataset");
    *ds = (esgd_dataset){0};
    if (subset && subset_count == 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "dataset_load_idx: empty subset");
    if (storage != DATASET_IN_MEMORY && storage != DATASET_STREAMED)
        return esgd_error_set(err, ESGD_ERR_ARG, "dataset_open_idx: unknown storage %d", (int)storage);

    idx_file images = {0}, labels = {0};
    uint64_t *order = NULL;
    uint8_t *values = NULL;
    esgd_dataset out = {0};
    esgd_status st;
    if ((st = idx_open(&images, images_path, IDX_EXAMPLES, err)) != ESGD_OK ||
        (st = idx_open(&labels, labels_path, IDX_LABELS, err)) != ESGD_OK)
        goto done;
    if (images.dims[0] != labels.dims[0]) {
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "%s holds %u images but %s holds %u labels", images_path,
                            images.dims[0], labels_path, labels.dims[0]);
        goto done;
    }
    out.count = subset ? subset_count : images.dims[0];
    out.rank = images.ndims - 1;
    for (uint32_t i = 0; i < out.rank; i++)
        out.dims[i] = images.dims[1 + i];
    out.example_size = images.example_size;
    out.type = images.type == IDX_TYPE_FLOAT ? DATASET_F32 : DATASET_U8;
    if (storage == DATASET_STREAMED) {
        if ((st = open_streamed(&out, &images, &labels, subset, err)) == ESGD_OK)
            *ds = out;
        goto done;
    }
    if ((subset && (st = subset_order(subset, subset_count, images.dims[0], images_path, &order, err)) != ESGD_OK) ||
        (st = idx_load_rows(&images, order, out.count, &values, err)) != ESGD_OK ||
        (st = idx_load_rows(&labels, order, out.count, &out.labels, err)) != ESGD_OK)
        goto done;
    if (out.type == DATASET_F32)
        out.f32 = (float *)(void *)values; /* malloc'd, so aligned for floats */
    else
        out.u8 = values;
    values = NULL;
    *ds = out;
done:
    free(order);
    idx_close(&images);
    idx_close(&labels);
    if (st != ESGD_OK) {
        free(values);
        free(out.labels);
    }
    return st;
}

esgd_status dataset_load_idx(esgd_dataset *ds, const char *images_path, const char *labels_path,
                             const uint32_t *subset, uint32_t subset_count, esgd_error *err)
{
    return dataset_open_idx(ds, images_path, labels_path, subset, subset_count, DATASET_IN_MEMORY, err);
}

bool dataset_streamed(const esgd_dataset *ds)
{
    return ds && ds->stream;
}

/* A split's file names in the two namings: MNIST's and esgd-import's. */
static const struct split_naming {
    const char *examples, *labels;
} split_namings[] = {
    {"images-idx3-ubyte", "labels-idx1-ubyte"},
    {"features.idx", "labels.idx"},
};
#define SPLIT_NAMINGS (sizeof split_namings / sizeof split_namings[0])

static bool split_path(char *out, size_t out_size, const char *dir, const char *split, const char *suffix)
{
    int n = snprintf(out, out_size, "%s/%s-%s", dir, split, suffix);
    return n >= 0 && (size_t)n < out_size;
}

static bool file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* The naming whose examples file DIR holds for the split, or -1. */
static int split_naming(const char *dir, const char *split)
{
    char path[4096];
    for (size_t i = 0; i < SPLIT_NAMINGS; i++)
        if (split_path(path, sizeof path, dir, split, split_namings[i].examples) && file_exists(path))
            return (int)i;
    return -1;
}

bool dataset_split_exists(const char *dir, const char *split)
{
    return dir && split && split_naming(dir, split) >= 0;
}

const char *dataset_test_split(const char *dir)
{
    return dataset_split_exists(dir, "t10k") ? "t10k" : dataset_split_exists(dir, "test") ? "test" : NULL;
}

void dataset_labels_path(char *out, unsigned long out_size, const char *dir, const char *split)
{
    int naming = split_naming(dir, split);
    split_path(out, out_size, dir, split, split_namings[naming < 0 ? 0 : naming].labels);
}

esgd_status dataset_load_split(esgd_dataset *ds, const char *dir, const char *split, const uint32_t *subset,
                               uint32_t subset_count, esgd_error *err)
{
    return dataset_open_split(ds, dir, split, subset, subset_count, DATASET_IN_MEMORY, err);
}

esgd_status dataset_open_split(esgd_dataset *ds, const char *dir, const char *split, const uint32_t *subset,
                               uint32_t subset_count, dataset_storage storage, esgd_error *err)
{
    if (ds)
        *ds = (esgd_dataset){0};
    if (!dir || !split)
        return esgd_error_set(err, ESGD_ERR_ARG, "dataset_load_split: NULL directory or split name");
    char images[4096], labels[4096];
    if (!split_path(images, sizeof images, dir, split, split_namings[0].examples) ||
        !split_path(labels, sizeof labels, dir, split, split_namings[1].examples))
        return esgd_error_set(err, ESGD_ERR_ARG, "data directory path too long: %.64s...", dir);
    int naming = split_naming(dir, split);
    if (naming < 0) /* images and labels hold the two examples file names tried */
        return esgd_error_set(err, ESGD_ERR_IO, "no %s data in %s: neither %s nor %s exists", split, dir, images,
                              labels);
    split_path(images, sizeof images, dir, split, split_namings[naming].examples);
    split_path(labels, sizeof labels, dir, split, split_namings[naming].labels);
    return dataset_open_idx(ds, images, labels, subset, subset_count, storage, err);
}

void dataset_destroy(esgd_dataset *ds)
{
    if (!ds)
        return;
    free(ds->u8);
    free(ds->f32);
    free(ds->labels);
    stream_free(ds->stream);
    *ds = (esgd_dataset){0};
}

void dataset_fill_batch(const esgd_dataset *ds, const uint32_t *idx, uint32_t n, float *x, uint8_t *y)
{
    assert(!ds->stream); /* dataset_read_batch reads a streamed one */
    size_t dim = ds->example_size;
    for (uint32_t i = 0; i < n; i++) {
        assert(idx[i] < ds->count);
        float *xi = x + (size_t)i * dim;
        if (ds->type == DATASET_F32) {
            memcpy(xi, ds->f32 + (size_t)idx[i] * dim, dim * sizeof *xi);
        } else {
            const uint8_t *pixels = ds->u8 + (size_t)idx[i] * dim;
            for (size_t p = 0; p < dim; p++)
                xi[p] = pixels[p] / 255.0f;
        }
        y[i] = ds->labels[idx[i]];
    }
}

esgd_status dataset_read_batch(const esgd_dataset *ds, const uint32_t *idx, uint32_t n, float *x, uint8_t *y,
                               esgd_error *err)
{
    for (uint32_t i = 0; i < n; i++)
        if (idx[i] >= ds->count)
            return esgd_error_set(err, ESGD_ERR_RANGE, "batch example %u is number %u, the data holds %u", i, idx[i],
                                  ds->count);
    dataset_stream *s = ds->stream;
    if (!s) {
        dataset_fill_batch(ds, idx, n, x, y);
        return ESGD_OK;
    }
    esgd_status st = stream_unchanged(s, err);
    size_t dim = ds->example_size;
    for (uint32_t i = 0; i < n && st == ESGD_OK; i++) {
        uint32_t row = s->rows ? s->rows[idx[i]] : idx[i];
        float *xi = x + (size_t)i * dim;
        if ((st = stream_row(s, row, err)) != ESGD_OK)
            break;
        if (s->floats) {
            for (uint32_t v = 0; v < dim && st == ESGD_OK; v++)
                st = stream_float(s, row, v, &xi[v], err);
        } else {
            for (size_t p = 0; p < dim; p++)
                xi[p] = s->row[p] / 255.0f; /* as dataset_fill_batch: the same bits */
        }
        y[i] = ds->labels[idx[i]];
    }
    return st;
}

uint64_t dataset_fingerprint(const esgd_dataset *d)
{
    if (d->stream)
        return d->stream->fingerprint;
    size_t values = (size_t)d->count * d->example_size;
    uint64_t h = FNV1A64_START;
    if (d->type == DATASET_F32) {
        for (size_t i = 0; d->f32 && i < values; i++) {
            uint32_t bits;
            memcpy(&bits, d->f32 + i, sizeof bits);
            const uint8_t le[4] = {(uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16), (uint8_t)(bits >> 24)};
            h = fnv1a64_continue(h, le, sizeof le);
        }
    } else {
        h = fnv1a64(d->u8, d->u8 ? values : 0);
    }
    return fnv1a64_continue(h, d->labels, d->labels ? d->count : 0);
}
