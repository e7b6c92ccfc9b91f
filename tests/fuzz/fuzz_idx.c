/* The IDX readers, idx_read_labels and dataset_load_idx, on arbitrary
 * files. Input: [n][n x u16 LE subset][u16 LE L][labels file, L bytes]
 * [examples file, the rest]; n % 5 == 0 loads everything, else the subset of
 * n % 5 rows (indices may be out of range on purpose). The examples file may
 * be u8 or f32 of any rank; what loads must be exactly the file's values (and
 * floats finite), then batches and the fingerprint are taken from it. */
#include <math.h>

#include "fuzz_common.h"

static char labels_path[256], images_path[256];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_temp_file(labels_path, sizeof labels_path, "labels");
    fuzz_temp_file(images_path, sizeof images_path, "images");
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint32_t le16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t n = data[0] % 5, subset[4];
    size_t pos = 1;
    if (size < pos + 2 * (size_t)n + 2)
        return 0;
    for (uint32_t i = 0; i < n; i++, pos += 2)
        subset[i] = le16(data + pos);
    size_t labels_size = le16(data + pos);
    pos += 2;
    if (labels_size > size - pos)
        labels_size = size - pos;
    fuzz_write_file(labels_path, data + pos, labels_size);
    fuzz_write_file(images_path, data + pos + labels_size, size - pos - labels_size);

    uint8_t *labels = NULL;
    uint32_t count = 0;
    esgd_error err = {0};
    esgd_status st = idx_read_labels(labels_path, &labels, &count, &err);
    FUZZ_CHECK(st == err.status);
    if (st == ESGD_OK) {
        /* The header's count, and the file holds exactly that many. */
        FUZZ_CHECK(labels != NULL && count > 0 && (size_t)count + 8 == labels_size);
        FUZZ_CHECK(labels[count - 1] == data[pos + labels_size - 1]);
    } else {
        FUZZ_CHECK(labels == NULL && count == 0);
    }
    free(labels);

    esgd_dataset ds;
    st = dataset_load_idx(&ds, images_path, labels_path, n ? subset : NULL, n, &err);
    FUZZ_CHECK(st == err.status);
    if (st != ESGD_OK) {
        FUZZ_CHECK(ds.count == 0 && ds.rank == 0 && ds.example_size == 0 && ds.u8 == NULL && ds.f32 == NULL &&
                   ds.labels == NULL);
        return 0;
    }
    FUZZ_CHECK(ds.count == (n ? n : count));
    FUZZ_CHECK(ds.rank >= 1 && ds.rank <= DATASET_MAX_RANK && ds.labels != NULL);
    bool f32 = ds.type == DATASET_F32;
    FUZZ_CHECK(f32 || ds.type == DATASET_U8);
    FUZZ_CHECK(f32 ? ds.f32 != NULL && ds.u8 == NULL : ds.u8 != NULL && ds.f32 == NULL);
    const uint8_t *file = data + pos + labels_size;
    size_t file_size = size - pos - labels_size, header = 8 + 4 * (size_t)ds.rank;
    FUZZ_CHECK(file_size >= header && file[2] == (f32 ? 0x0d : 0x08) && file[3] == ds.rank + 1);
    FUZZ_CHECK(be32(file + 4) == count);
    size_t example = 1;
    for (uint32_t d = 0; d < DATASET_MAX_RANK; d++) {
        FUZZ_CHECK(d < ds.rank ? ds.dims[d] == be32(file + 8 + 4 * d) : ds.dims[d] == 0);
        if (d < ds.rank)
            example *= ds.dims[d];
    }
    FUZZ_CHECK(example == ds.example_size && example <= DATASET_MAX_EXAMPLE_SIZE);
    size_t value_bytes = f32 ? 4 : 1, row_bytes = example * value_bytes;
    FUZZ_CHECK(header + (size_t)count * row_bytes == file_size);
    const uint8_t *rows = file + header;
    for (uint32_t i = 0; i < ds.count; i++) {
        uint32_t row = n ? subset[i] : i;
        FUZZ_CHECK(row < count);
        FUZZ_CHECK(ds.labels[i] == data[pos + 8 + row]);
        if (!f32) {
            FUZZ_CHECK(memcmp(ds.u8 + i * example, rows + row * row_bytes, example) == 0);
            continue;
        }
        for (size_t v = 0; v < example; v++) {
            uint32_t bits = be32(rows + row * row_bytes + 4 * v);
            float expected;
            memcpy(&expected, &bits, sizeof expected);
            FUZZ_CHECK(isfinite(expected));
            FUZZ_CHECK(memcmp(&ds.f32[i * example + v], &expected, sizeof expected) == 0);
        }
    }
    /* A batch of the last and the first example, and the fingerprint. */
    float *x = malloc(2 * example * sizeof *x);
    FUZZ_CHECK(x != NULL);
    uint8_t y[2];
    uint32_t idx[2] = {ds.count - 1, 0};
    dataset_fill_batch(&ds, idx, 2, x, y);
    for (size_t v = 0; v < example; v++) {
        float expected = f32 ? ds.f32[v] : ds.u8[v] / 255.0f;
        FUZZ_CHECK(memcmp(&x[example + v], &expected, sizeof expected) == 0);
        FUZZ_CHECK(isfinite(x[v]));
    }
    FUZZ_CHECK(y[0] == ds.labels[ds.count - 1] && y[1] == ds.labels[0]);
    free(x);
    (void)dataset_fingerprint(&ds);
    dataset_destroy(&ds);
    return 0;
}
