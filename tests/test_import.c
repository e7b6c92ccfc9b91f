/* esgd-import's logic (csv_import.h): CSV files written to a temporary
 * folder are imported, and the IDX files read back byte by byte are held
 * against hand-computed shapes, normalised values and windows; every input
 * error is checked for its file, line and column. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "esgd/csv_import.h"

static char dir[64];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/esgd-import-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static const char *path_of(const char *name)
{
    static char paths[64][256]; /* a ring: each test uses fewer than 64 */
    static int next;
    char *p = paths[next++ % 64];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    return p;
}

static const char *write_file(const char *name, const char *text)
{
    const char *path = path_of(name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* An IDX file read back: its type, shape and elements (floats or bytes). */
typedef struct idx_back {
    unsigned type, rank;
    uint32_t dims[4];
    size_t count;
    float *f;
    uint8_t *u;
} idx_back;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static idx_back read_idx(const char *name)
{
    idx_back b = {0};
    FILE *f = fopen(path_of(name), "rb");
    assert_non_null(f);
    uint8_t head[4 + 16];
    assert_int_equal(fread(head, 1, 4, f), 4);
    assert_int_equal(head[0], 0);
    assert_int_equal(head[1], 0);
    b.type = head[2];
    b.rank = head[3];
    assert_true(b.rank >= 1 && b.rank <= 4);
    assert_int_equal(fread(head + 4, 4, b.rank, f), b.rank);
    b.count = 1;
    for (unsigned i = 0; i < b.rank; i++)
        b.count *= b.dims[i] = be32(head + 4 + 4 * i);
    size_t size = b.type == 0x0D ? 4 : 1;
    uint8_t *raw = malloc(b.count * size + 1);
    assert_non_null(raw);
    assert_int_equal(fread(raw, size, b.count, f), b.count);
    assert_int_equal(fgetc(f), EOF); /* nothing after the data */
    fclose(f);
    if (size == 1) {
        b.u = raw;
        return b;
    }
    b.f = malloc(b.count * sizeof *b.f);
    assert_non_null(b.f);
    for (size_t i = 0; i < b.count; i++) {
        uint32_t bits = be32(raw + 4 * i);
        memcpy(&b.f[i], &bits, 4);
    }
    free(raw);
    return b;
}

static void idx_back_free(idx_back *b)
{
    free(b->f);
    free(b->u);
}

/* Column a: 1,2,3,6 -> mean 3, population std sqrt((4+1+0+9)/4) = sqrt(3.5).
 * Column b: constant 5 -> std 0, stored as 1. Label in the middle, quoted
 * header names, CRLF line ends, a blank line. */
static const char train_csv[] = "\"a\",label,\"b\"\r\n1,0,5\r\n2,1,5\r\n\r\n3,2,5\r\n6,255,5\r\n";

static void test_csv_train_and_tests(void **state)
{
    (void)state;
    const char *train = write_file("train.csv", train_csv);
    const char *t1 = write_file("t1.csv", "a,label,b\n4,7,6\n");
    const char *t2 = write_file("t2.csv", "a,label,b\n3,9,5\n0,3,4\n");
    const char *tests[] = {t1, t2};
    import_csv_options o = {.train = train, .tests = tests, .test_count = 2, .label = "label", .out_dir = path_of("out")};
    esgd_error err = {0};
    assert_int_equal(import_csv(&o, &err), ESGD_OK);

    double s = sqrt(3.5);
    idx_back x = read_idx("out/train-features.idx");
    assert_int_equal(x.type, 0x0D);
    assert_int_equal(x.rank, 2);
    assert_int_equal(x.dims[0], 4);
    assert_int_equal(x.dims[1], 2);
    const double want[8] = {-2 / s, 0, -1 / s, 0, 0, 0, 3 / s, 0};
    for (int i = 0; i < 8; i++)
        assert_float_equal(x.f[i], want[i], 1e-6);
    idx_back y = read_idx("out/train-labels.idx");
    assert_int_equal(y.type, 0x08);
    assert_int_equal(y.rank, 1);
    assert_int_equal(y.dims[0], 4);
    assert_memory_equal(y.u, ((uint8_t[]){0, 1, 2, 255}), 4);
    idx_back_free(&x);
    idx_back_free(&y);

    /* Test files with the training statistics: (4-3)/s, (6-5)/1 ... */
    x = read_idx("out/test1-features.idx");
    assert_int_equal(x.dims[0], 1);
    assert_float_equal(x.f[0], 1 / s, 1e-6);
    assert_float_equal(x.f[1], 1.0, 1e-6);
    idx_back_free(&x);
    x = read_idx("out/test2-features.idx");
    assert_int_equal(x.dims[0], 2);
    assert_float_equal(x.f[2], -3 / s, 1e-6);
    assert_float_equal(x.f[3], -1.0, 1e-6);
    idx_back_free(&x);
    y = read_idx("out/test2-labels.idx");
    assert_memory_equal(y.u, ((uint8_t[]){9, 3}), 2);
    idx_back_free(&y);

    /* The stored normalisation, read back and applied to a fresh import by
     * index (column 1 is the label), gives the same file. */
    import_norm n = {0};
    assert_int_equal(import_norm_read(&n, path_of("out/normalisation.csv"), &err), ESGD_OK);
    assert_int_equal(n.count, 2);
    assert_string_equal(n.names[0], "a");
    assert_string_equal(n.names[1], "b");
    assert_float_equal(n.mean[0], 3.0, 1e-12);
    assert_float_equal(n.std[0], s, 1e-12);
    assert_float_equal(n.mean[1], 5.0, 1e-12);
    assert_float_equal(n.std[1], 1.0, 0);
    import_norm_destroy(&n);

    import_csv_options o2 = {.train = t1, .tests = tests, .test_count = 1, .label = "1",
                             .out_dir = path_of("out2"), .norm_path = path_of("out/normalisation.csv")};
    assert_int_equal(import_csv(&o2, &err), ESGD_OK);
    x = read_idx("out2/train-features.idx");
    assert_float_equal(x.f[0], 1 / s, 1e-6);
    idx_back_free(&x);
    x = read_idx("out2/test-features.idx"); /* one test file: no number */
    assert_int_equal(x.dims[0], 1);
    idx_back_free(&x);

    /* A test set alone (a coordinator's): no training file, the stored
     * normalisation applied, no train split written. */
    import_csv_options o3 = {.tests = tests + 1, .test_count = 1, .label = "label", .out_dir = path_of("out3"),
                             .norm_path = path_of("out/normalisation.csv")};
    assert_int_equal(import_csv(&o3, &err), ESGD_OK);
    x = read_idx("out3/test-features.idx");
    assert_int_equal(x.dims[0], 2);
    assert_float_equal(x.f[2], -3 / s, 1e-6);
    idx_back_free(&x);
    assert_null(fopen(path_of("out3/train-features.idx"), "rb"));
    /* ... which needs the normalisation and a test file, and checks the
     * test file's features against the normalisation's names. */
    o3.norm_path = NULL;
    assert_int_equal(import_csv(&o3, &err), ESGD_ERR_ARG);
    o3.norm_path = path_of("out/normalisation.csv");
    o3.test_count = 0;
    assert_int_equal(import_csv(&o3, &err), ESGD_ERR_ARG);
    const char *renamed[] = {write_file("t3.csv", "a,label,c\n4,7,6\n")};
    o3.tests = renamed;
    o3.test_count = 1;
    assert_int_not_equal(import_csv(&o3, &err), ESGD_OK);
    assert_non_null(strstr(err.message, "t3.csv"));
}

static void test_windows(void **state)
{
    (void)state;
    /* Channel x: 0..6 (mean 3, std 2), channel z: 10*x (mean 30, std 20),
     * label = step. W = 3, S = 2: windows start at 0, 2, 4 (step 6 alone
     * makes no window). */
    const char *in = write_file("series.csv", "x,z,y\n0,0,0\n1,10,1\n2,20,2\n3,30,3\n4,40,4\n5,50,5\n6,60,6\n");
    import_windows_options o = {.input = in, .window = 3, .stride = 2, .label = "y", .out_dir = path_of("win")};
    esgd_error err = {0};
    assert_int_equal(import_windows(&o, &err), ESGD_OK);
    idx_back x = read_idx("win/train-features.idx");
    assert_int_equal(x.type, 0x0D);
    assert_int_equal(x.rank, 3);
    assert_int_equal(x.dims[0], 3);
    assert_int_equal(x.dims[1], 2);
    assert_int_equal(x.dims[2], 3);
    for (int k = 0; k < 3; k++)
        for (int c = 0; c < 2; c++)
            for (int t = 0; t < 3; t++) {
                double v = 2 * k + t; /* the step; both channels normalise to (v - 3) / 2 */
                assert_float_equal(x.f[(k * 2 + c) * 3 + t], (v - 3) / 2, 1e-6);
            }
    idx_back_free(&x);
    idx_back y = read_idx("win/train-labels.idx");
    assert_int_equal(y.dims[0], 3);
    assert_memory_equal(y.u, ((uint8_t[]){2, 4, 6}), 3);
    idx_back_free(&y);

    /* Default stride = window; W = series length gives one window. */
    import_windows_options o2 = {.input = in, .window = 7, .label = "2", .out_dir = path_of("win2")};
    assert_int_equal(import_windows(&o2, &err), ESGD_OK);
    y = read_idx("win2/train-labels.idx");
    assert_int_equal(y.dims[0], 1);
    assert_int_equal(y.u[0], 6);
    idx_back_free(&y);

    /* A test series: the training series' normalisation, the test split. */
    const char *test_in = write_file("test-series.csv", "x,z,y\n5,10,1\n7,70,3\n");
    import_windows_options o3 = {.input = test_in, .window = 2, .label = "y", .out_dir = path_of("win"),
                                 .norm_path = path_of("win/normalisation.csv"), .split = "test"};
    assert_int_equal(import_windows(&o3, &err), ESGD_OK);
    x = read_idx("win/test-features.idx");
    assert_int_equal(x.dims[0], 1);
    assert_float_equal(x.f[0], 1.0, 1e-6);  /* (5 - 3) / 2 */
    assert_float_equal(x.f[3], 2.0, 1e-6);  /* (70 - 30) / 20 */
    idx_back_free(&x);
    y = read_idx("win/test-labels.idx");
    assert_int_equal(y.u[0], 3);
    idx_back_free(&y);
    o3.split = "validation";
    assert_int_equal(import_windows(&o3, &err), ESGD_ERR_ARG);
    assert_non_null(strstr(err.message, "\"validation\""));

    o2.window = 8;
    assert_int_equal(import_windows(&o2, &err), ESGD_ERR_RANGE);
    assert_non_null(strstr(err.message, "series.csv: a window of 8 steps is longer than the series (7 steps)"));
}

/* Imports text as a training file and expects status and a message that
 * ends with `tail` (after the folder). */
static void expect_error(const char *text, const char *label, esgd_status status, const char *tail)
{
    const char *path = text ? write_file("bad.csv", text) : path_of("missing.csv");
    import_table t = {0};
    esgd_error err = {0};
    assert_int_equal(import_table_read(&t, path, label, &err), status);
    assert_null(t.x);
    const char *m = strstr(err.message, "/bad.csv");
    if (!m)
        m = strstr(err.message, "/missing.csv");
    assert_non_null(m);
    if (strcmp(m + 1, tail) != 0)
        fail_msg("got \"%s\", expected \"%s\"", m + 1, tail);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("a,b,label\n1,2,0\n1,x,1\n", "label", ESGD_ERR_FORMAT,
                 "bad.csv:3: column 2 (\"b\"): \"x\" is not a number");
    expect_error("a,b,label\n1,2,0\n1,,1\n", "label", ESGD_ERR_FORMAT,
                 "bad.csv:3: column 2 (\"b\"): \"\" is not a number");
    expect_error("a,b,label\r\n1,2,0\r\n1,2\r\n", "label", ESGD_ERR_FORMAT, "bad.csv:3: 2 fields, the header has 3");
    expect_error("a,b,label\n1,2,0\n1,2,3,4\n", "label", ESGD_ERR_FORMAT, "bad.csv:3: 4 fields, the header has 3");
    expect_error("a,b,label\n1,2,0\n\n1,2,256\n", "label", ESGD_ERR_RANGE,
                 "bad.csv:4: column 3 (\"label\"): label \"256\" is not an integer 0..255");
    expect_error("a,b,label\n1,2,-1\n", "label", ESGD_ERR_RANGE,
                 "bad.csv:2: column 3 (\"label\"): label \"-1\" is not an integer 0..255");
    expect_error("label,a\n1.5,2\n", "0", ESGD_ERR_RANGE,
                 "bad.csv:2: column 1 (\"label\"): label \"1.5\" is not an integer 0..255");
    expect_error("a,b,c\n1,2,0\n", "label", ESGD_ERR_MISSING,
                 "bad.csv:1: no label column \"label\" in the header (nor an index 0..2)");
    expect_error("a,b,c\n1,2,0\n", "3", ESGD_ERR_MISSING,
                 "bad.csv:1: no label column \"3\" in the header (nor an index 0..2)");
    expect_error("", "label", ESGD_ERR_FORMAT, "bad.csv: empty file (no header row)");
    expect_error("\r\n\r\n", "label", ESGD_ERR_FORMAT, "bad.csv: empty file (no header row)");
    expect_error("a,label\n", "label", ESGD_ERR_FORMAT, "bad.csv: no data rows after the header");
    expect_error("a,label\n1,0\n\"2,0\n", "label", ESGD_ERR_FORMAT, "bad.csv:3: column 1: unterminated quote");
    expect_error("a,label\n1,0\nnan,0\n", "label", ESGD_ERR_FORMAT,
                 "bad.csv:3: column 1 (\"a\"): \"nan\" is not a number");
    expect_error("a,label\n1e39,0\n", "label", ESGD_ERR_RANGE, "bad.csv:2: column 1 (\"a\"): 1e39 is beyond float range");
    expect_error(NULL, "label", ESGD_ERR_IO, "missing.csv: No such file or directory");

    /* A test file with other columns than the training file. */
    const char *train = write_file("train.csv", train_csv);
    const char *test = write_file("other.csv", "a,label,c\n1,0,2\n");
    const char *tests[] = {test};
    import_csv_options o = {.train = train, .tests = tests, .test_count = 1, .label = "label", .out_dir = path_of("o3")};
    esgd_error err = {0};
    assert_int_equal(import_csv(&o, &err), ESGD_ERR_MISMATCH);
    assert_non_null(strstr(err.message, "other.csv:1: feature 2 is \"c\", in "));

    /* A stored normalisation with a bad std. */
    const char *norm = write_file("norm.csv", "feature,mean,std\na,0,1\nb,0,0\n");
    import_csv_options o2 = {.train = train, .label = "label", .out_dir = path_of("o4"), .norm_path = norm};
    assert_int_equal(import_csv(&o2, &err), ESGD_ERR_RANGE);
    assert_non_null(strstr(err.message, "norm.csv:3: column 3 (\"std\"): 0 is not positive"));
}

/* A line far longer than any fixed buffer: 5000 features. */
static void test_long_line(void **state)
{
    (void)state;
    enum { N = 5000 };
    FILE *f = fopen(path_of("wide.csv"), "wb");
    assert_non_null(f);
    for (int c = 0; c < N; c++)
        fprintf(f, "feature_with_a_long_name_%d,", c);
    fputs("label\r\n", f);
    for (int r = 0; r < 2; r++) {
        for (int c = 0; c < N; c++)
            fprintf(f, "%d.25,", r * c);
        fprintf(f, "%d\r\n", r);
    }
    fclose(f);
    import_table t = {0};
    esgd_error err = {0};
    assert_int_equal(import_table_read(&t, path_of("wide.csv"), "label", &err), ESGD_OK);
    assert_int_equal(t.rows, 2);
    assert_int_equal(t.features, N);
    assert_string_equal(t.names[N - 1], "feature_with_a_long_name_4999");
    assert_float_equal(t.x[N + N - 1], 4999.25, 1e-3);
    assert_int_equal(t.y[1], 1);
    import_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_csv_train_and_tests, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_windows, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_errors, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_long_line, make_dir, remove_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
