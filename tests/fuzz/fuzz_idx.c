/* The IDX readers, idx_read_labels and dataset_load_idx, on arbitrary
 * files. Input: [n][n x u16 LE subset][u16 LE L][labels file, L bytes]
 * [images file, the rest]; n % 5 == 0 loads everything, else the subset of
 * n % 5 rows (indices may be out of range on purpose). */
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
        FUZZ_CHECK(ds.count == 0 && ds.pixels == NULL && ds.labels == NULL);
        return 0;
    }
    FUZZ_CHECK(ds.count == (n ? n : count));
    FUZZ_CHECK(ds.rows > 0 && ds.cols > 0 && ds.pixels != NULL && ds.labels != NULL);
    size_t image = (size_t)ds.rows * ds.cols;
    FUZZ_CHECK(16 + (size_t)count * image == size - pos - labels_size);
    const uint8_t *images = data + pos + labels_size + 16;
    for (uint32_t i = 0; i < ds.count; i++) {
        uint32_t row = n ? subset[i] : i;
        FUZZ_CHECK(row < count);
        FUZZ_CHECK(ds.labels[i] == data[pos + 8 + row]);
        FUZZ_CHECK(memcmp(ds.pixels + i * image, images + row * image, image) == 0);
    }
    dataset_destroy(&ds);
    return 0;
}
