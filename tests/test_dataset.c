/* IDX loading (whole file, subsets, every malformed-file error; u8 and f32
 * examples of rank 1 to 3; both namings of a split), batch scaling,
 * fingerprints, the IID and Dirichlet partitions, and, when $ESGD_DATA_DIR holds
 * it, the real MNIST files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "test_skip.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "esgd/dataset.h"
#include "esgd/fingerprint.h"
#include "esgd/rng.h"

/* ---- IDX files in a temporary directory ---- */

#define TEST_COUNT 5
#define TEST_ROWS 2
#define TEST_COLS 3
#define TEST_DIM (TEST_ROWS * TEST_COLS)

static char tmp_dir[64];

/* How to write one IDX file; a zero byte0/extra/cut is the valid file. */
typedef struct idx_spec {
    int missing;        /* do not write the file at all */
    int empty;          /* write a file of 0 bytes */
    uint8_t byte0;      /* first magic byte, 0 in a valid file */
    uint8_t type;       /* element type, 0x08 (u8 data is written whatever it says) */
    uint8_t ndims;
    uint32_t dims[4];
    long data_delta;    /* bytes added to (> 0) or cut from (< 0) the data */
    size_t header_only; /* when non-zero, write only this many header bytes */
} idx_spec;

#define IMAGES_SPEC {.type = 0x08, .ndims = 3, .dims = {TEST_COUNT, TEST_ROWS, TEST_COLS}}
#define LABELS_SPEC {.type = 0x08, .ndims = 1, .dims = {TEST_COUNT}}

static const uint8_t test_labels[TEST_COUNT] = {3, 1, 4, 1, 5};

/* Pixel p of example i: distinct per example, and covering 0 and 255. */
static uint8_t test_pixel(uint32_t i, uint32_t p)
{
    if (i == 0 && p == 0)
        return 255;
    return (uint8_t)(i * 40 + p * 3);
}

/* Two buffers in turn, so a test can hold the images and the labels path. */
static const char *tmp_path(const char *name)
{
    static char path[2][512];
    static int turn;
    turn ^= 1;
    snprintf(path[turn], sizeof path[turn], "%s/%s", tmp_dir, name);
    return path[turn];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Writes the file spec describes (data: labels for 1 dim, test_pixel bytes
 * for more) and returns its path. */
static const char *write_idx(const char *name, const idx_spec *spec)
{
    const char *path = tmp_path(name);
    unlink(path);
    if (spec->missing)
        return path;
    if (spec->empty) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fclose(f), 0);
        return path;
    }
    uint8_t header[20] = {spec->byte0, 0, spec->type, spec->ndims};
    size_t header_bytes = 4;
    size_t data_bytes = 1;
    for (unsigned i = 0; i < spec->ndims && i < 4; i++) {
        put_be32(header + header_bytes, spec->dims[i]);
        header_bytes += 4;
        data_bytes *= spec->dims[i];
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (spec->header_only) {
        assert_int_equal(fwrite(header, 1, spec->header_only, f), spec->header_only);
        assert_int_equal(fclose(f), 0);
        return path;
    }
    assert_int_equal(fwrite(header, 1, header_bytes, f), header_bytes);
    size_t row_bytes = 1;
    for (unsigned i = 1; i < spec->ndims && i < 4; i++)
        row_bytes *= spec->dims[i];
    long total = (long)data_bytes + spec->data_delta;
    for (long b = 0; b < total; b++) {
        uint32_t i = (uint32_t)((size_t)b / row_bytes), p = (uint32_t)((size_t)b % row_bytes);
        uint8_t v = spec->ndims == 1 ? test_labels[i % TEST_COUNT] : test_pixel(i, p);
        assert_int_equal(fputc(v, f), v);
    }
    assert_int_equal(fclose(f), 0);
    return path;
}

static int make_tmp_dir(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/esgd-test-dataset-XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int remove_tmp_dir(void **state)
{
    (void)state;
    DIR *dir = opendir(tmp_dir);
    if (!dir)
        return -1;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            const char *path = tmp_path(e->d_name);
            if (unlink(path) != 0)
                rmdir(path);
        }
    }
    closedir(dir);
    return rmdir(tmp_dir);
}

static void assert_dataset_empty(const esgd_dataset *ds)
{
    assert_int_equal(ds->count, 0);
    assert_int_equal(ds->rank, 0);
    assert_int_equal(ds->example_size, 0);
    assert_null(ds->u8);
    assert_null(ds->f32);
    assert_null(ds->labels);
    assert_null(ds->stream);
}

/* u8 examples of rank 2, rows x cols, as MNIST's. */
static void assert_mnist_like(const esgd_dataset *ds, uint32_t rows, uint32_t cols)
{
    assert_int_equal(ds->type, DATASET_U8);
    assert_int_equal(ds->rank, 2);
    assert_int_equal(ds->dims[0], rows);
    assert_int_equal(ds->dims[1], cols);
    assert_int_equal(ds->dims[2], 0);
    assert_int_equal(ds->example_size, rows * cols);
    assert_non_null(ds->u8);
    assert_null(ds->f32);
}

/* ---- loading ---- */

static void test_load_whole_file(void **state)
{
    (void)state;
    const idx_spec images = IMAGES_SPEC, labels = LABELS_SPEC;
    const char *images_path = write_idx("whole-images", &images);
    const char *labels_path = write_idx("whole-labels", &labels);
    esgd_dataset ds;
    esgd_error err = {0};
    assert_int_equal(dataset_load_idx(&ds, images_path, labels_path, NULL, 0, &err), ESGD_OK);
    assert_int_equal(ds.count, TEST_COUNT);
    assert_mnist_like(&ds, TEST_ROWS, TEST_COLS);
    for (uint32_t i = 0; i < TEST_COUNT; i++) {
        assert_int_equal(ds.labels[i], test_labels[i]);
        for (uint32_t p = 0; p < TEST_DIM; p++)
            assert_int_equal(ds.u8[i * TEST_DIM + p], test_pixel(i, p));
    }
    dataset_destroy(&ds);
    assert_dataset_empty(&ds);
    dataset_destroy(&ds); /* safe twice */
}

static void test_load_subset_keeps_the_given_order(void **state)
{
    (void)state;
    const idx_spec images = IMAGES_SPEC, labels = LABELS_SPEC;
    const char *images_path = write_idx("subset-images", &images);
    const char *labels_path = write_idx("subset-labels", &labels);
    /* Unsorted, with a repeat: the reader must seek backwards too. */
    const uint32_t subset[] = {4, 0, 3, 3, 1};
    const uint32_t n = sizeof subset / sizeof subset[0];
    esgd_dataset ds;
    esgd_error err = {0};
    assert_int_equal(dataset_load_idx(&ds, images_path, labels_path, subset, n, &err), ESGD_OK);
    assert_int_equal(ds.count, n);
    assert_mnist_like(&ds, TEST_ROWS, TEST_COLS);
    for (uint32_t k = 0; k < n; k++) {
        assert_int_equal(ds.labels[k], test_labels[subset[k]]);
        for (uint32_t p = 0; p < TEST_DIM; p++)
            assert_int_equal(ds.u8[k * TEST_DIM + p], test_pixel(subset[k], p));
    }
    dataset_destroy(&ds);
}

static void test_load_split_and_labels_path(void **state)
{
    (void)state;
    const idx_spec images = IMAGES_SPEC, labels = LABELS_SPEC;
    write_idx("train-images-idx3-ubyte", &images);
    const char *labels_path = write_idx("train-labels-idx1-ubyte", &labels);
    char path[256];
    dataset_labels_path(path, sizeof path, tmp_dir, "train");
    assert_string_equal(path, labels_path);

    uint8_t *read = NULL;
    uint32_t count = 0;
    esgd_error err = {0};
    assert_int_equal(idx_read_labels(path, &read, &count, &err), ESGD_OK);
    assert_int_equal(count, TEST_COUNT);
    assert_memory_equal(read, test_labels, TEST_COUNT);
    free(read);

    const uint32_t subset[] = {2};
    esgd_dataset ds;
    assert_int_equal(dataset_load_split(&ds, tmp_dir, "train", subset, 1, &err), ESGD_OK);
    assert_int_equal(ds.count, 1);
    assert_int_equal(ds.labels[0], test_labels[2]);
    dataset_destroy(&ds);

    assert_int_equal(dataset_load_split(&ds, tmp_dir, "t10k", NULL, 0, &err), ESGD_ERR_IO);
    assert_non_null(strstr(err.message, "t10k-images-idx3-ubyte"));
    assert_non_null(strstr(err.message, "t10k-features.idx"));
    assert_dataset_empty(&ds);
}

static void test_fill_batch_scales_to_unit_range(void **state)
{
    (void)state;
    const idx_spec images = IMAGES_SPEC, labels = LABELS_SPEC;
    const char *images_path = write_idx("batch-images", &images);
    const char *labels_path = write_idx("batch-labels", &labels);
    esgd_dataset ds;
    assert_int_equal(dataset_load_idx(&ds, images_path, labels_path, NULL, 0, NULL), ESGD_OK);
    const uint32_t idx[] = {2, 0};
    float x[2 * TEST_DIM];
    uint8_t y[2];
    dataset_fill_batch(&ds, idx, 2, x, y);
    assert_int_equal(y[0], test_labels[2]);
    assert_int_equal(y[1], test_labels[0]);
    for (uint32_t p = 0; p < TEST_DIM; p++) {
        assert_true(x[p] == test_pixel(2, p) / 255.0f);
        assert_true(x[TEST_DIM + p] == test_pixel(0, p) / 255.0f);
    }
    assert_true(x[TEST_DIM] == 1.0f);  /* pixel 255 */
    assert_true(x[TEST_DIM + 1] == 3.0f / 255.0f);
    assert_true(x[0] == 80.0f / 255.0f);
    dataset_destroy(&ds);
}

/* ---- malformed files ---- */

typedef struct load_case {
    const char *name;
    idx_spec images, labels;
    const uint32_t *subset;
    uint32_t subset_count;
    esgd_status expected;
    const char *in_message; /* a piece the error message must contain */
} load_case;

static const uint32_t subset_out_of_range[] = {0, TEST_COUNT};
static const uint32_t subset_valid[] = {1};

static const load_case load_cases[] = {
    {"missing images", {.missing = 1}, LABELS_SPEC, NULL, 0, ESGD_ERR_IO, "No such file or directory"},
    {"missing labels", IMAGES_SPEC, {.missing = 1}, NULL, 0, ESGD_ERR_IO, "labels"},
    {"bad magic", {.byte0 = 1, .type = 0x08, .ndims = 3, .dims = {TEST_COUNT, TEST_ROWS, TEST_COLS}}, LABELS_SPEC,
     NULL, 0, ESGD_ERR_FORMAT, "magic 0x01000803"},
    {"short element type", {.type = 0x0b, .ndims = 3, .dims = {TEST_COUNT, TEST_ROWS, TEST_COLS}}, LABELS_SPEC, NULL,
     0, ESGD_ERR_FORMAT, "0x0b"},
    {"float labels", IMAGES_SPEC, {.type = 0x0d, .ndims = 1, .dims = {TEST_COUNT}}, NULL, 0, ESGD_ERR_FORMAT,
     "0x0d"},
    /* A float header over byte-sized data: 4 bytes a value are missing. */
    {"float header, byte data", {.type = 0x0d, .ndims = 3, .dims = {TEST_COUNT, TEST_ROWS, TEST_COLS}}, LABELS_SPEC,
     NULL, 0, ESGD_ERR_TRUNCATED, "needs 136 bytes, the file has 46"},
    {"labels with 3 dims", IMAGES_SPEC, {.type = 0x08, .ndims = 3, .dims = {TEST_COUNT, 1, 1}}, NULL, 0,
     ESGD_ERR_FORMAT, "3 dimensions, expected 1"},
    {"images with 1 dim", {.type = 0x08, .ndims = 1, .dims = {TEST_COUNT}}, LABELS_SPEC, NULL, 0, ESGD_ERR_FORMAT,
     "1 dimensions, expected 2 to 4"},
    {"images with 5 dims", {.type = 0x08, .ndims = 5, .header_only = 4}, LABELS_SPEC, NULL, 0, ESGD_ERR_FORMAT,
     "5 dimensions, expected 2 to 4"},
    {"empty file", {.empty = 1}, LABELS_SPEC, NULL, 0, ESGD_ERR_TRUNCATED, "magic"},
    {"header cut in the magic",
     {.type = 0x08, .ndims = 3, .dims = {TEST_COUNT, TEST_ROWS, TEST_COLS}, .header_only = 3}, LABELS_SPEC, NULL, 0,
     ESGD_ERR_TRUNCATED, "magic"},
    {"header cut in the dims",
     {.type = 0x08, .ndims = 3, .dims = {TEST_COUNT, TEST_ROWS, TEST_COLS}, .header_only = 10}, LABELS_SPEC, NULL, 0,
     ESGD_ERR_TRUNCATED, "header"},
    {"data one byte short", {.type = 0x08, .ndims = 3, .dims = {TEST_COUNT, TEST_ROWS, TEST_COLS}, .data_delta = -1},
     LABELS_SPEC, NULL, 0, ESGD_ERR_TRUNCATED, "needs 46 bytes, the file has 45"},
    {"labels one byte short", IMAGES_SPEC, {.type = 0x08, .ndims = 1, .dims = {TEST_COUNT}, .data_delta = -1}, NULL,
     0, ESGD_ERR_TRUNCATED, "needs 13 bytes, the file has 12"},
    {"trailing bytes", {.type = 0x08, .ndims = 3, .dims = {TEST_COUNT, TEST_ROWS, TEST_COLS}, .data_delta = 2},
     LABELS_SPEC, NULL, 0, ESGD_ERR_FORMAT, "2 more"},
    {"count mismatch", IMAGES_SPEC, {.type = 0x08, .ndims = 1, .dims = {TEST_COUNT - 1}}, NULL, 0, ESGD_ERR_FORMAT,
     "5 images"},
    {"subset out of range", IMAGES_SPEC, LABELS_SPEC, subset_out_of_range, 2, ESGD_ERR_RANGE, "subset[1] = 5"},
    {"empty subset", IMAGES_SPEC, LABELS_SPEC, subset_valid, 0, ESGD_ERR_ARG, "empty subset"},
    {"zero rows", {.type = 0x08, .ndims = 3, .dims = {TEST_COUNT, 0, TEST_COLS}}, LABELS_SPEC, NULL, 0,
     ESGD_ERR_RANGE, "dimension 1 is 0"},
    {"zero count", {.type = 0x08, .ndims = 3, .dims = {0, TEST_ROWS, TEST_COLS}},
     {.type = 0x08, .ndims = 1, .dims = {0}}, NULL, 0, ESGD_ERR_RANGE, "dimension 0 is 0"},
    {"a dimension over 2^24", {.type = 0x08, .ndims = 3, .dims = {1, 1, 16777217}, .header_only = 16}, LABELS_SPEC,
     NULL, 0, ESGD_ERR_RANGE, "1..16777216"},
    /* 4097^2 values in one example: the header alone must not make the reader
     * allocate (or a size computation wrap); the cap stops it. */
    {"an example over 2^24 values", {.type = 0x0d, .ndims = 3, .dims = {1, 4097, 4097}, .header_only = 16},
     LABELS_SPEC, NULL, 0, ESGD_ERR_RANGE, "over 16777216 values"},
    {"rank 3 over 2^24 values", {.type = 0x08, .ndims = 4, .dims = {1, 256, 256, 257}, .header_only = 20},
     LABELS_SPEC, NULL, 0, ESGD_ERR_RANGE, "over 16777216 values"},
    {"count over the limit", {.type = 0x08, .ndims = 3, .dims = {100000001, 1, 1}, .header_only = 16}, LABELS_SPEC,
     NULL, 0, ESGD_ERR_RANGE, "1..100000000"},
};

static void test_load_rejects_malformed_files(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof load_cases / sizeof load_cases[0]; c++) {
        const load_case *lc = &load_cases[c];
        const char *images_path = write_idx("bad-images", &lc->images);
        const char *labels_path = write_idx("bad-labels", &lc->labels);
        esgd_dataset ds = {.count = 99}; /* must come back zeroed */
        esgd_error err = {0};
        esgd_status st = dataset_load_idx(&ds, images_path, labels_path, lc->subset, lc->subset_count, &err);
        if (st != lc->expected || err.status != lc->expected)
            fail_msg("case %s: status %s, expected %s (%s)", lc->name, esgd_status_name(st),
                     esgd_status_name(lc->expected), err.message);
        if (!strstr(err.message, lc->in_message))
            fail_msg("case %s: message \"%s\" lacks \"%s\"", lc->name, err.message, lc->in_message);
        assert_dataset_empty(&ds);
    }
}

static void test_errors_name_the_file(void **state)
{
    (void)state;
    const idx_spec images = {.type = 0x08, .ndims = 3, .dims = {TEST_COUNT, TEST_ROWS, TEST_COLS}, .data_delta = -1};
    const idx_spec labels = LABELS_SPEC;
    const char *images_path = write_idx("named-images", &images);
    const char *labels_path = write_idx("named-labels", &labels);
    esgd_dataset ds;
    esgd_error err = {0};
    assert_int_equal(dataset_load_idx(&ds, images_path, labels_path, NULL, 0, &err), ESGD_ERR_TRUNCATED);
    assert_non_null(strstr(err.message, images_path));
}

static void test_read_labels_errors(void **state)
{
    (void)state;
    static uint8_t sentinel[1];
    uint8_t *labels = sentinel;
    uint32_t count = 7;
    esgd_error err = {0};
    assert_int_equal(idx_read_labels(tmp_path("no-such-labels"), &labels, &count, &err), ESGD_ERR_IO);
    assert_null(labels);
    assert_int_equal(count, 0);
    assert_non_null(strstr(err.message, "no-such-labels"));

    const idx_spec images = IMAGES_SPEC;
    const char *images_path = write_idx("labels-from-images", &images);
    assert_int_equal(idx_read_labels(images_path, &labels, &count, &err), ESGD_ERR_FORMAT);
    assert_null(labels);

    assert_int_equal(idx_read_labels(tmp_dir, &labels, &count, &err), ESGD_ERR_IO);
    assert_non_null(strstr(err.message, "not a regular file"));
    assert_int_equal(idx_read_labels(images_path, NULL, &count, &err), ESGD_ERR_ARG);
}

/* ---- f32 examples (esgd-import's files) and examples of any rank ---- */

/* Value v of example i: distinct, negative and positive, with a fraction
 * that is not exact in binary (the reader must keep the bits). */
static float test_value(uint32_t i, uint32_t v)
{
    if (i == 0 && v == 0)
        return -0.1f;
    return ((float)(i * 100 + v) - 50.0f) / 7.0f;
}

/* Writes an f32 IDX file: dims[0] examples of rank dims[1..rank]; when
 * poisoned, value `poison` of example `poison_example` becomes
 * `poison_value`; cut bytes are left off the end. */
typedef struct f32_spec {
    unsigned rank;
    uint32_t dims[4];
    int poisoned;
    uint32_t poison_example, poison;
    float poison_value;
    size_t cut;
} f32_spec;

static uint32_t f32_example_size(const f32_spec *spec)
{
    uint32_t size = 1;
    for (unsigned i = 1; i <= spec->rank; i++)
        size *= spec->dims[i];
    return size;
}

static const char *write_f32(const char *name, const f32_spec *spec)
{
    const char *path = tmp_path(name);
    uint32_t size = f32_example_size(spec), count = spec->dims[0];
    size_t bytes = 4 + 4 * (size_t)(spec->rank + 1) + 4 * (size_t)count * size;
    uint8_t *buf = malloc(bytes), *p = buf;
    assert_non_null(buf);
    put_be32(p, 0x00000D00u | (spec->rank + 1));
    p += 4;
    for (unsigned i = 0; i <= spec->rank; i++, p += 4)
        put_be32(p, spec->dims[i]);
    for (uint32_t i = 0; i < count; i++)
        for (uint32_t v = 0; v < size; v++, p += 4) {
            float f = spec->poisoned && i == spec->poison_example && v == spec->poison ? spec->poison_value
                                                                                       : test_value(i, v);
            uint32_t bits;
            memcpy(&bits, &f, sizeof bits);
            put_be32(p, bits);
        }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, bytes - spec->cut, f), bytes - spec->cut);
    assert_int_equal(fclose(f), 0);
    free(buf);
    return path;
}

/* The old (u8-only) fingerprint, and the f32 one by its definition: FNV-1a
 * of the values' little-endian bytes, then of the labels. */
static uint64_t f32_fingerprint(const float *values, size_t n, const uint8_t *labels, uint32_t count)
{
    uint64_t h = FNV1A64_START;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, values + i, sizeof bits);
        const uint8_t le[4] = {(uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16), (uint8_t)(bits >> 24)};
        h = fnv1a64_continue(h, le, 4);
    }
    return fnv1a64_continue(h, labels, count);
}

static void assert_f32_examples(const esgd_dataset *ds, const f32_spec *spec, const uint32_t *rows)
{
    uint32_t size = f32_example_size(spec);
    assert_int_equal(ds->type, DATASET_F32);
    assert_int_equal(ds->rank, spec->rank);
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(ds->dims[i], i < spec->rank ? spec->dims[1 + i] : 0);
    assert_int_equal(ds->example_size, size);
    assert_null(ds->u8);
    assert_non_null(ds->f32);
    for (uint32_t k = 0; k < ds->count; k++) {
        uint32_t row = rows ? rows[k] : k;
        assert_int_equal(ds->labels[k], test_labels[row]);
        for (uint32_t v = 0; v < size; v++) {
            float expected = test_value(row, v);
            assert_memory_equal(&ds->f32[(size_t)k * size + v], &expected, sizeof expected);
        }
    }
}

static void test_f32_of_every_rank(void **state)
{
    (void)state;
    const f32_spec specs[] = {
        {.rank = 1, .dims = {TEST_COUNT, 7}},
        {.rank = 2, .dims = {TEST_COUNT, 3, 4}},
        {.rank = 3, .dims = {TEST_COUNT, 2, 3, 4}},
    };
    const idx_spec labels = LABELS_SPEC;
    for (size_t c = 0; c < sizeof specs / sizeof specs[0]; c++) {
        const char *features_path = write_f32("f32-features", &specs[c]);
        const char *labels_path = write_idx("f32-labels", &labels);
        esgd_dataset ds;
        esgd_error err = {0};
        if (dataset_load_idx(&ds, features_path, labels_path, NULL, 0, &err) != ESGD_OK)
            fail_msg("rank %u: %s", specs[c].rank, err.message);
        assert_int_equal(ds.count, TEST_COUNT);
        assert_f32_examples(&ds, &specs[c], NULL);

        /* fill_batch copies floats as they are. */
        uint32_t size = ds.example_size;
        const uint32_t idx[] = {3, 0};
        float *x = malloc(2 * sizeof *x * size);
        assert_non_null(x);
        uint8_t y[2];
        dataset_fill_batch(&ds, idx, 2, x, y);
        assert_memory_equal(x, ds.f32 + 3 * (size_t)size, size * sizeof *x);
        assert_memory_equal(x + size, ds.f32, size * sizeof *x);
        assert_int_equal(y[0], test_labels[3]);
        assert_int_equal(y[1], test_labels[0]);
        free(x);

        assert_true(dataset_fingerprint(&ds) ==
                    f32_fingerprint(ds.f32, (size_t)TEST_COUNT * size, ds.labels, TEST_COUNT));
        dataset_destroy(&ds);
        assert_dataset_empty(&ds);
    }
}

static void test_u8_of_rank_1_and_3(void **state)
{
    (void)state;
    const idx_spec labels = LABELS_SPEC;
    const idx_spec rank3 = {.type = 0x08, .ndims = 4, .dims = {TEST_COUNT, 3, 4, 5}};
    const idx_spec rank1 = {.type = 0x08, .ndims = 2, .dims = {TEST_COUNT, 9}};
    const idx_spec *specs[] = {&rank3, &rank1};
    for (size_t c = 0; c < 2; c++) {
        const idx_spec *spec = specs[c];
        const char *images_path = write_idx("u8-examples", spec);
        const char *labels_path = write_idx("u8-labels", &labels);
        const uint32_t subset[] = {4, 1, 1};
        esgd_dataset ds;
        esgd_error err = {0};
        assert_int_equal(dataset_load_idx(&ds, images_path, labels_path, subset, 3, &err), ESGD_OK);
        uint32_t size = 1;
        for (unsigned i = 1; i < spec->ndims; i++)
            size *= spec->dims[i];
        assert_int_equal(ds.count, 3);
        assert_int_equal(ds.type, DATASET_U8);
        assert_int_equal(ds.rank, spec->ndims - 1u);
        for (unsigned i = 0; i < 3; i++)
            assert_int_equal(ds.dims[i], i + 1 < spec->ndims ? spec->dims[1 + i] : 0);
        assert_int_equal(ds.example_size, size);
        assert_null(ds.f32);
        float *x = malloc(3 * sizeof *x * size);
        assert_non_null(x);
        uint8_t y[3];
        dataset_fill_batch(&ds, (const uint32_t[]){0, 1, 2}, 3, x, y);
        for (uint32_t k = 0; k < 3; k++) {
            assert_int_equal(y[k], test_labels[subset[k]]);
            for (uint32_t p = 0; p < size; p++) {
                assert_int_equal(ds.u8[k * size + p], test_pixel(subset[k], p));
                assert_true(x[k * size + p] == test_pixel(subset[k], p) / 255.0f);
            }
        }
        free(x);
        dataset_destroy(&ds);
    }
}

static void test_f32_subset(void **state)
{
    (void)state;
    const f32_spec spec = {.rank = 2, .dims = {TEST_COUNT, 2, 3}};
    const idx_spec labels = LABELS_SPEC;
    const char *features_path = write_f32("f32-subset-features", &spec);
    const char *labels_path = write_idx("f32-subset-labels", &labels);
    const uint32_t subset[] = {4, 0, 3, 3, 1};
    esgd_dataset ds;
    esgd_error err = {0};
    assert_int_equal(dataset_load_idx(&ds, features_path, labels_path, subset, 5, &err), ESGD_OK);
    assert_int_equal(ds.count, 5);
    assert_f32_examples(&ds, &spec, subset);
    dataset_destroy(&ds);
}

/* Floats must be finite; the error names the example. Only examples read
 * are checked: a subset without the bad one loads. */
static void test_f32_rejects_nan_and_infinity(void **state)
{
    (void)state;
    const idx_spec labels = LABELS_SPEC;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t c = 0; c < 3; c++) {
        const f32_spec spec = {.rank = 1, .dims = {TEST_COUNT, 4}, .poisoned = 1, .poison_example = 3, .poison = 2,
                               .poison_value = bad[c]};
        const char *features_path = write_f32("f32-bad-features", &spec);
        const char *labels_path = write_idx("f32-bad-labels", &labels);
        esgd_dataset ds = {.count = 99};
        esgd_error err = {0};
        assert_int_equal(dataset_load_idx(&ds, features_path, labels_path, NULL, 0, &err), ESGD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "example 3"));
        assert_non_null(strstr(err.message, features_path));
        assert_non_null(strstr(err.message, c == 0 ? "NaN" : "infinity"));
        assert_dataset_empty(&ds);

        assert_int_equal(dataset_load_idx(&ds, features_path, labels_path, (const uint32_t[]){1, 3}, 2, &err),
                         ESGD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "example 3"));
        assert_dataset_empty(&ds);

        assert_int_equal(dataset_load_idx(&ds, features_path, labels_path, (const uint32_t[]){4, 0}, 2, &err),
                         ESGD_OK);
        assert_int_equal(ds.count, 2);
        dataset_destroy(&ds);
    }
}

static void test_f32_truncated(void **state)
{
    (void)state;
    const idx_spec labels = LABELS_SPEC;
    const char *labels_path = write_idx("f32-cut-labels", &labels);
    /* header 4 + 3 * 4, data 5 * 2 * 3 * 4 = 120: 136 bytes. */
    const f32_spec cut_value = {.rank = 2, .dims = {TEST_COUNT, 2, 3}, .cut = 1};
    const char *features_path = write_f32("f32-cut-features", &cut_value);
    esgd_dataset ds;
    esgd_error err = {0};
    assert_int_equal(dataset_load_idx(&ds, features_path, labels_path, NULL, 0, &err), ESGD_ERR_TRUNCATED);
    assert_non_null(strstr(err.message, "needs 136 bytes, the file has 135"));
    assert_dataset_empty(&ds);

    const f32_spec cut_header = {.rank = 2, .dims = {TEST_COUNT, 2, 3}, .cut = 120 + 2};
    features_path = write_f32("f32-cut-features", &cut_header);
    assert_int_equal(dataset_load_idx(&ds, features_path, labels_path, NULL, 0, &err), ESGD_ERR_TRUNCATED);
    assert_non_null(strstr(err.message, "header"));
    assert_dataset_empty(&ds);
}

/* Batch idx[0..n) of a and of b hold the same bits. */
static void assert_same_batches(const esgd_dataset *a, const esgd_dataset *b, const uint32_t *idx, uint32_t n)
{
    size_t size = a->example_size;
    float *xa = calloc(n * size, sizeof *xa), *xb = calloc(n * size, sizeof *xb);
    uint8_t ya[8], yb[8];
    assert_true(xa && xb && n <= 8);
    esgd_error err = {0};
    assert_int_equal(dataset_read_batch(a, idx, n, xa, ya, &err), ESGD_OK);
    if (dataset_read_batch(b, idx, n, xb, yb, &err) != ESGD_OK)
        fail_msg("%s", err.message);
    assert_memory_equal(xa, xb, n * size * sizeof *xa);
    assert_memory_equal(ya, yb, n);
    free(xa);
    free(xb);
}

/* Overwrites the first example byte of path in place and gives the file
 * another modification time. */
static void change_in_place(const char *path, long header_bytes)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, header_bytes, SEEK_SET), 0);
    assert_int_equal(fputc(7, f), 7);
    assert_int_equal(fclose(f), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    struct timespec times[2] = {sb.st_atim, sb.st_mtim};
    times[1].tv_sec += 1;
    assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
}

/* A streamed dataset gives the bits, labels and fingerprint of the same
 * examples held in memory, holds none of them itself, and a file cut
 * short or changed while it is open is an error when a batch is read. */
static void test_streamed_matches_in_memory(void **state)
{
    (void)state;
    const idx_spec images = IMAGES_SPEC, labels = LABELS_SPEC;
    const f32_spec features = {.rank = 2, .dims = {TEST_COUNT, 2, 3}};
    for (int floats = 0; floats < 2; floats++) {
        const char *examples_path = floats ? write_f32("stream-f32", &features) : write_idx("stream-u8", &images);
        char examples[512];
        snprintf(examples, sizeof examples, "%s", examples_path);
        const char *labels_path = write_idx("stream-labels", &labels);
        const uint32_t subset[] = {4, 1, 1, 0, 3};
        for (int sub = 0; sub < 2; sub++) {
            esgd_dataset held, streamed;
            esgd_error err = {0};
            const uint32_t *rows = sub ? subset : NULL;
            assert_int_equal(dataset_load_idx(&held, examples, labels_path, rows, 5, &err), ESGD_OK);
            if (dataset_open_idx(&streamed, examples, labels_path, rows, 5, DATASET_STREAMED, &err) != ESGD_OK)
                fail_msg("%s", err.message);
            assert_true(dataset_streamed(&streamed));
            assert_false(dataset_streamed(&held));
            assert_null(streamed.u8);
            assert_null(streamed.f32);
            assert_int_equal(streamed.count, held.count);
            assert_int_equal(streamed.example_size, held.example_size);
            assert_int_equal(streamed.type, held.type);
            assert_memory_equal(streamed.labels, held.labels, held.count);
            assert_true(dataset_fingerprint(&streamed) == dataset_fingerprint(&held));
            assert_same_batches(&held, &streamed, (const uint32_t[]){2, 0, 4, 2}, 4);
            float x[4 * TEST_DIM];
            uint8_t y[4];
            assert_int_equal(dataset_read_batch(&streamed, (const uint32_t[]){5}, 1, x, y, &err), ESGD_ERR_RANGE);
            dataset_destroy(&held);
            dataset_destroy(&streamed);
            assert_dataset_empty(&streamed);
        }
        /* Cut short while open. */
        esgd_dataset ds;
        esgd_error err = {0};
        assert_int_equal(dataset_open_idx(&ds, examples, labels_path, NULL, 0, DATASET_STREAMED, &err), ESGD_OK);
        struct stat sb;
        assert_int_equal(stat(examples, &sb), 0);
        assert_int_equal(truncate(examples, sb.st_size - 1), 0);
        float x[TEST_DIM];
        uint8_t y[1];
        assert_int_equal(dataset_read_batch(&ds, (const uint32_t[]){0}, 1, x, y, &err), ESGD_ERR_TRUNCATED);
        assert_non_null(strstr(err.message, examples));
        assert_non_null(strstr(err.message, "cut short"));
        dataset_destroy(&ds);
        /* Changed in place while open. */
        examples_path = floats ? write_f32("stream-f32", &features) : write_idx("stream-u8", &images);
        assert_int_equal(dataset_open_idx(&ds, examples, labels_path, NULL, 0, DATASET_STREAMED, &err), ESGD_OK);
        change_in_place(examples, 16);
        assert_int_equal(dataset_read_batch(&ds, (const uint32_t[]){0}, 1, x, y, &err), ESGD_ERR_FORMAT);
        assert_non_null(strstr(err.message, "changed while in use"));
        dataset_destroy(&ds);
    }
    /* A float that is not finite: refused when opened, naming the example. */
    const f32_spec poisoned = {.rank = 1, .dims = {TEST_COUNT, 4}, .poisoned = 1, .poison_example = 3, .poison = 2,
                               .poison_value = NAN};
    const char *bad = write_f32("stream-bad", &poisoned);
    char bad_path[512];
    snprintf(bad_path, sizeof bad_path, "%s", bad);
    const char *labels_path = write_idx("stream-labels", &labels);
    esgd_dataset ds = {.count = 9};
    esgd_error err = {0};
    assert_int_equal(dataset_open_idx(&ds, bad_path, labels_path, NULL, 0, DATASET_STREAMED, &err), ESGD_ERR_FORMAT);
    assert_non_null(strstr(err.message, "example 3"));
    assert_dataset_empty(&ds);
    assert_int_equal(dataset_open_idx(&ds, bad_path, labels_path, (const uint32_t[]){4, 0}, 2, DATASET_STREAMED, &err),
                     ESGD_OK);
    dataset_destroy(&ds);
}

/* MNIST's names and esgd-import's in one folder; MNIST's win when both are. */
static void test_both_namings(void **state)
{
    (void)state;
    const idx_spec images = IMAGES_SPEC, labels = LABELS_SPEC;
    const f32_spec features = {.rank = 1, .dims = {TEST_COUNT, 6}};
    char path[512];
    esgd_dataset ds;
    esgd_error err = {0};

    assert_false(dataset_split_exists(tmp_dir, "imported"));
    write_f32("imported-features.idx", &features);
    const char *labels_path = write_idx("imported-labels.idx", &labels);
    assert_true(dataset_split_exists(tmp_dir, "imported"));
    dataset_labels_path(path, sizeof path, tmp_dir, "imported");
    assert_string_equal(path, labels_path);
    assert_int_equal(dataset_load_split(&ds, tmp_dir, "imported", (const uint32_t[]){2}, 1, &err), ESGD_OK);
    assert_f32_examples(&ds, &features, (const uint32_t[]){2});
    dataset_destroy(&ds);

    write_f32("both-features.idx", &features);
    write_idx("both-labels.idx", &labels);
    assert_int_equal(dataset_load_split(&ds, tmp_dir, "both", NULL, 0, &err), ESGD_OK);
    assert_int_equal(ds.type, DATASET_F32);
    dataset_destroy(&ds);
    write_idx("both-images-idx3-ubyte", &images);
    labels_path = write_idx("both-labels-idx1-ubyte", &labels);
    dataset_labels_path(path, sizeof path, tmp_dir, "both");
    assert_string_equal(path, labels_path);
    assert_int_equal(dataset_load_split(&ds, tmp_dir, "both", NULL, 0, &err), ESGD_OK);
    assert_mnist_like(&ds, TEST_ROWS, TEST_COLS);
    dataset_destroy(&ds);
    assert_true(dataset_split_exists(tmp_dir, "both"));

    /* Neither: MNIST's labels name, and an error naming both examples files. */
    assert_false(dataset_split_exists(tmp_dir, "none"));
    dataset_labels_path(path, sizeof path, tmp_dir, "none");
    assert_non_null(strstr(path, "/none-labels-idx1-ubyte"));
    assert_int_equal(dataset_load_split(&ds, tmp_dir, "none", NULL, 0, &err), ESGD_ERR_IO);
    assert_non_null(strstr(err.message, "none-images-idx3-ubyte"));
    assert_non_null(strstr(err.message, "none-features.idx"));
}

/* The fingerprint of u8 data is what it was before f32 data existed: FNV-1a
 * of the bytes, then of the labels (pinned too, for 784-byte examples). */
static void test_u8_fingerprint_unchanged(void **state)
{
    (void)state;
    enum { COUNT = 3, SIZE = 28 * 28 };
    static uint8_t pixels[COUNT * SIZE];
    uint8_t labels[COUNT] = {7, 2, 1};
    for (uint32_t i = 0; i < COUNT * SIZE; i++)
        pixels[i] = (uint8_t)(i * 37 + i / 5);
    esgd_dataset ds = {.count = COUNT, .rank = 2, .dims = {28, 28}, .example_size = SIZE, .type = DATASET_U8,
                       .u8 = pixels, .labels = labels};
    /* The old code: size_t pixels = count * rows * cols; fnv1a64(pixels), then labels. */
    size_t old_pixels = (size_t)ds.count * 28 * 28;
    uint64_t old = fnv1a64_continue(fnv1a64(pixels, old_pixels), labels, ds.count);
    assert_true(dataset_fingerprint(&ds) == old);
    assert_true(old == 0xa9ae9976154b9388ull);
    /* Empty (zeroed) datasets hash nothing, of either type. */
    esgd_dataset empty = {0};
    assert_true(dataset_fingerprint(&empty) == FNV1A64_START);
    empty.type = DATASET_F32;
    assert_true(dataset_fingerprint(&empty) == FNV1A64_START);
}

/* ---- partitions ---- */

#define PART_CLASSES 10

static uint8_t *random_labels(uint32_t count, uint64_t seed)
{
    uint8_t *labels = malloc(count);
    assert_non_null(labels);
    esgd_rng rng;
    rng_seed(&rng, seed, 1);
    for (uint32_t i = 0; i < count; i++)
        labels[i] = (uint8_t)rng_below(&rng, PART_CLASSES);
    return labels;
}

static uint32_t shard_size(const esgd_shards *s, uint32_t a)
{
    return s->offsets[a + 1] - s->offsets[a];
}

/* Every example exactly once, offsets consistent, no empty shard. */
static void assert_valid_partition(const esgd_shards *s, uint32_t count, uint32_t agents)
{
    assert_int_equal(s->agents, agents);
    assert_int_equal(s->offsets[0], 0);
    assert_int_equal(s->offsets[agents], count);
    for (uint32_t a = 0; a < agents; a++)
        assert_true(s->offsets[a + 1] > s->offsets[a]); /* ordered, none empty */
    uint8_t *seen = calloc(count, 1);
    assert_non_null(seen);
    for (uint32_t k = 0; k < count; k++) {
        assert_true(s->indices[k] < count);
        assert_int_equal(seen[s->indices[k]], 0);
        seen[s->indices[k]] = 1;
    }
    free(seen);
}

static void test_iid_shards_are_near_equal(void **state)
{
    (void)state;
    const uint32_t count = 1003, agents = 7;
    uint8_t *labels = random_labels(count, 1);
    esgd_shards s;
    assert_int_equal(shards_make(&s, labels, count, agents, PARTITION_IID, 0, 42, NULL), ESGD_OK);
    assert_valid_partition(&s, count, agents);
    uint32_t min = count, max = 0;
    for (uint32_t a = 0; a < agents; a++) {
        min = shard_size(&s, a) < min ? shard_size(&s, a) : min;
        max = shard_size(&s, a) > max ? shard_size(&s, a) : max;
    }
    assert_int_equal(min, 143);
    assert_int_equal(max, 144);
    /* A shuffle, not the identity: fewer than 1% of examples keep their place. */
    uint32_t fixed = 0;
    for (uint32_t k = 0; k < count; k++)
        fixed += s.indices[k] == k;
    assert_true(fixed < 10);
    shards_destroy(&s);

    assert_int_equal(shards_make(&s, labels, count, 1, PARTITION_IID, 0, 42, NULL), ESGD_OK);
    assert_valid_partition(&s, count, 1);
    shards_destroy(&s);
    free(labels);
}

static void assert_same_shards(const esgd_shards *a, const esgd_shards *b, uint32_t count, int expect_same)
{
    int same = memcmp(a->offsets, b->offsets, (a->agents + 1) * sizeof *a->offsets) == 0 &&
               memcmp(a->indices, b->indices, count * sizeof *a->indices) == 0;
    assert_int_equal(same, expect_same);
}

static void test_partitions_are_deterministic_per_seed(void **state)
{
    (void)state;
    const uint32_t count = 2000, agents = 5;
    uint8_t *labels = random_labels(count, 2);
    const partition_kind kinds[] = {PARTITION_IID, PARTITION_DIRICHLET};
    for (size_t k = 0; k < 2; k++) {
        esgd_shards first, again, other;
        assert_int_equal(shards_make(&first, labels, count, agents, kinds[k], 0.5, 7, NULL), ESGD_OK);
        assert_int_equal(shards_make(&again, labels, count, agents, kinds[k], 0.5, 7, NULL), ESGD_OK);
        assert_int_equal(shards_make(&other, labels, count, agents, kinds[k], 0.5, 8, NULL), ESGD_OK);
        assert_valid_partition(&first, count, agents);
        assert_valid_partition(&other, count, agents);
        assert_same_shards(&first, &again, count, 1);
        assert_same_shards(&first, &other, count, 0);
        shards_destroy(&first);
        shards_destroy(&again);
        shards_destroy(&other);
    }
    free(labels);
}

/* Fraction of agent a's examples in its most common class. */
static double dominant_fraction(const esgd_shards *s, const uint8_t *labels, uint32_t a)
{
    uint32_t hist[PART_CLASSES] = {0}, top = 0;
    for (uint32_t k = s->offsets[a]; k < s->offsets[a + 1]; k++)
        hist[labels[s->indices[k]]]++;
    for (int c = 0; c < PART_CLASSES; c++)
        top = hist[c] > top ? hist[c] : top;
    return (double)top / shard_size(s, a);
}

static void test_dirichlet_alpha_controls_skew(void **state)
{
    (void)state;
    const uint32_t count = 5000, agents = 10;
    uint8_t *labels = random_labels(count, 3);
    esgd_shards s;

    assert_int_equal(shards_make(&s, labels, count, agents, PARTITION_DIRICHLET, 0.1, 11, NULL), ESGD_OK);
    assert_valid_partition(&s, count, agents);
    double mean_dominant = 0;
    for (uint32_t a = 0; a < agents; a++)
        mean_dominant += dominant_fraction(&s, labels, a) / agents;
    print_message("alpha 0.1: mean dominant-class fraction %.3f\n", mean_dominant);
    assert_true(mean_dominant > 0.5);
    shards_destroy(&s);

    assert_int_equal(shards_make(&s, labels, count, agents, PARTITION_DIRICHLET, 100, 11, NULL), ESGD_OK);
    assert_valid_partition(&s, count, agents);
    double max_dominant = 0;
    for (uint32_t a = 0; a < agents; a++) {
        double f = dominant_fraction(&s, labels, a);
        max_dominant = f > max_dominant ? f : max_dominant;
        /* Near-equal shards as well: 500 expected each. */
        assert_true(shard_size(&s, a) > 400 && shard_size(&s, a) < 600);
    }
    print_message("alpha 100: max dominant-class fraction %.3f\n", max_dominant);
    assert_true(max_dominant < 0.2);
    shards_destroy(&s);

    /* Within a shard classes are mixed, not left in runs: with one class
     * per run the label would change only a few times. */
    assert_int_equal(shards_make(&s, labels, count, 2, PARTITION_DIRICHLET, 100, 11, NULL), ESGD_OK);
    uint32_t changes = 0;
    for (uint32_t k = s.offsets[0] + 1; k < s.offsets[1]; k++)
        changes += labels[s.indices[k]] != labels[s.indices[k - 1]];
    assert_true(changes > shard_size(&s, 0) / 2);
    shards_destroy(&s);
    free(labels);
}

static void test_dirichlet_leaves_no_shard_empty(void **state)
{
    (void)state;
    const uint32_t count = 1000;
    uint8_t *labels = random_labels(count, 4);
    const uint32_t agent_counts[] = {300, 999, 1000};
    const double alphas[] = {0.01, 0.001, 1e-6};
    for (size_t i = 0; i < 3; i++) {
        esgd_shards s;
        assert_int_equal(shards_make(&s, labels, count, agent_counts[i], PARTITION_DIRICHLET, alphas[i], 5, NULL),
                         ESGD_OK);
        assert_valid_partition(&s, count, agent_counts[i]);
        if (agent_counts[i] == count)
            for (uint32_t a = 0; a < count; a++)
                assert_int_equal(shard_size(&s, a), 1);
        shards_destroy(&s);
    }
    free(labels);
}

static void test_shards_reject_bad_arguments(void **state)
{
    (void)state;
    static const uint8_t labels[4] = {0, 1, 2, 3};
    static const struct {
        const uint8_t *labels;
        uint32_t count, agents;
        partition_kind kind;
        double alpha;
    } cases[] = {
        {labels, 4, 0, PARTITION_IID, 1},         {labels, 4, 5, PARTITION_IID, 1},
        {labels, 0, 1, PARTITION_IID, 1},         {NULL, 4, 2, PARTITION_IID, 1},
        {labels, 4, 2, PARTITION_DIRICHLET, 0},   {labels, 4, 2, PARTITION_DIRICHLET, -1},
        {labels, 4, 2, PARTITION_DIRICHLET, NAN}, {labels, 4, 2, PARTITION_DIRICHLET, INFINITY},
        {labels, 4, 2, (partition_kind)7, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        esgd_shards s = {.agents = 99};
        esgd_error err = {0};
        assert_int_equal(shards_make(&s, cases[c].labels, cases[c].count, cases[c].agents, cases[c].kind,
                                     cases[c].alpha, 1, &err),
                         ESGD_ERR_ARG);
        assert_true(err.message[0] != '\0');
        assert_int_equal(s.agents, 0);
        assert_null(s.offsets);
        assert_null(s.indices);
    }
    /* alpha is only read by the Dirichlet partition. */
    esgd_shards s;
    assert_int_equal(shards_make(&s, labels, 4, 4, PARTITION_IID, 0, 1, NULL), ESGD_OK);
    shards_destroy(&s);
    shards_destroy(&s);
}

/* ---- MNIST, when it has been fetched ---- */

static const char *mnist_dir(void)
{
    const char *dir = getenv("ESGD_DATA_DIR");
    if (!dir || !*dir) {
        print_message("ESGD_DATA_DIR is not set: skipping the MNIST checks\n");
        return NULL;
    }
    char path[4096];
    dataset_labels_path(path, sizeof path, dir, "train");
    if (access(path, R_OK) != 0) {
        print_message("%s: %s; run scripts/fetch-mnist.sh: skipping the MNIST checks\n", path, strerror(errno));
        return NULL;
    }
    return dir;
}

static void assert_histogram(const esgd_dataset *ds, const uint32_t expected[10])
{
    uint32_t hist[DATASET_MAX_CLASSES] = {0};
    for (uint32_t i = 0; i < ds->count; i++)
        hist[ds->labels[i]]++;
    assert_memory_equal(hist, expected, 10 * sizeof *expected);
    for (int c = 10; c < DATASET_MAX_CLASSES; c++)
        assert_int_equal(hist[c], 0);
}

static void test_mnist_files(void **state)
{
    (void)state;
    const char *dir = mnist_dir();
    if (!dir)
        test_skip();
    static const uint32_t train_hist[10] = {5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949};
    static const uint32_t test_hist[10] = {980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
    esgd_error err = {0};
    esgd_dataset train, test;
    assert_int_equal(dataset_load_split(&train, dir, "train", NULL, 0, &err), ESGD_OK);
    assert_int_equal(train.count, 60000);
    assert_mnist_like(&train, 28, 28);
    assert_histogram(&train, train_hist);
    assert_int_equal(dataset_load_split(&test, dir, "t10k", NULL, 0, &err), ESGD_OK);
    assert_int_equal(test.count, 10000);
    assert_mnist_like(&test, 28, 28);
    assert_histogram(&test, test_hist);

    /* A gateway's shard, read row by row, equals the same rows of the whole file. */
    char path[4096];
    uint8_t *labels = NULL;
    uint32_t count = 0;
    dataset_labels_path(path, sizeof path, dir, "train");
    assert_int_equal(idx_read_labels(path, &labels, &count, &err), ESGD_OK);
    assert_int_equal(count, 60000);
    assert_memory_equal(labels, train.labels, count);
    esgd_shards shards;
    assert_int_equal(shards_make(&shards, labels, count, 4, PARTITION_DIRICHLET, 0.5, 3, &err), ESGD_OK);
    const uint32_t a = 2, *idx = shards.indices + shards.offsets[a], n = shard_size(&shards, a);
    esgd_dataset shard;
    assert_int_equal(dataset_load_split(&shard, dir, "train", idx, n, &err), ESGD_OK);
    assert_int_equal(shard.count, n);
    const size_t dim = 28 * 28;
    for (uint32_t k = 0; k < n; k++) {
        assert_int_equal(shard.labels[k], train.labels[idx[k]]);
        assert_memory_equal(shard.u8 + k * dim, train.u8 + (size_t)idx[k] * dim, dim);
    }
    /* Streamed from the file, the same shard. */
    esgd_dataset streamed;
    assert_int_equal(dataset_open_split(&streamed, dir, "train", idx, n, DATASET_STREAMED, &err), ESGD_OK);
    assert_true(dataset_fingerprint(&streamed) == dataset_fingerprint(&shard));
    assert_same_batches(&shard, &streamed, (const uint32_t[]){0, n - 1, n / 2, 7}, 4);
    dataset_destroy(&streamed);
    dataset_destroy(&shard);
    shards_destroy(&shards);
    free(labels);
    dataset_destroy(&train);
    dataset_destroy(&test);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_whole_file),
        cmocka_unit_test(test_load_subset_keeps_the_given_order),
        cmocka_unit_test(test_load_split_and_labels_path),
        cmocka_unit_test(test_fill_batch_scales_to_unit_range),
        cmocka_unit_test(test_load_rejects_malformed_files),
        cmocka_unit_test(test_errors_name_the_file),
        cmocka_unit_test(test_read_labels_errors),
        cmocka_unit_test(test_f32_of_every_rank),
        cmocka_unit_test(test_u8_of_rank_1_and_3),
        cmocka_unit_test(test_f32_subset),
        cmocka_unit_test(test_f32_rejects_nan_and_infinity),
        cmocka_unit_test(test_f32_truncated),
        cmocka_unit_test(test_both_namings),
        cmocka_unit_test(test_streamed_matches_in_memory),
        cmocka_unit_test(test_u8_fingerprint_unchanged),
        cmocka_unit_test(test_iid_shards_are_near_equal),
        cmocka_unit_test(test_partitions_are_deterministic_per_seed),
        cmocka_unit_test(test_dirichlet_alpha_controls_skew),
        cmocka_unit_test(test_dirichlet_leaves_no_shard_empty),
        cmocka_unit_test(test_shards_reject_bad_arguments),
        cmocka_unit_test(test_mnist_files),
    };
    return test_exit_status(cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir));
}
