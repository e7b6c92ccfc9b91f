/* CSV to IDX import (esgd-import): a small CSV line splitter, feature and
 * label parsing with file:line:column errors, normalisation statistics, IDX
 * writers, and the two commands (tables, and windows of a time series). */
#include "esgd/csv_import.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#define IDX_TYPE_U8 0x08
#define IDX_TYPE_F32 0x0D

#include "csv_reader.h"

static void free_names(char **names, uint32_t count)
{
    if (names)
        for (uint32_t i = 0; i < count; i++)
            free(names[i]);
    free(names);
}

void import_table_destroy(import_table *t)
{
    free_names(t->names, t->features);
    free(t->x);
    free(t->y);
    *t = (import_table){0};
}

/* The label's column in the header: by name, else by 0-based index. */
static esgd_status find_label(const csv_reader *r, const char *label, size_t *col, esgd_error *err)
{
    for (size_t c = 0; c < r->count; c++)
        if (strcmp(r->fields[c], label) == 0) {
            *col = c;
            return ESGD_OK;
        }
    char *end;
    errno = 0;
    unsigned long i = *label && isdigit((unsigned char)*label) ? strtoul(label, &end, 10) : 0;
    if (*label && isdigit((unsigned char)*label) && !*end && errno == 0 && i < r->count) {
        *col = i;
        return ESGD_OK;
    }
    return esgd_error_set(err, ESGD_ERR_MISSING, "%s:%lu: no label column \"%s\" in the header (nor an index 0..%zu)",
                          r->path, r->line, label, r->count - 1);
}

static esgd_status table_grow(import_table *t, size_t *cap, const csv_reader *r, esgd_error *err)
{
    if (t->rows < *cap)
        return ESGD_OK;
    if (t->rows == UINT32_MAX - 1)
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "%s:%lu: too many rows", r->path, r->line);
    size_t n = *cap ? 2 * *cap : 256;
    if (n > UINT32_MAX - 1)
        n = UINT32_MAX - 1;
    if (t->features && n > SIZE_MAX / sizeof(float) / t->features)
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "%s:%lu: too large for memory", r->path, r->line);
    float *x = realloc(t->x, (n * t->features + 1) * sizeof *x); /* +1: no realloc(p, 0) */
    if (x)
        t->x = x;
    uint8_t *y = realloc(t->y, n);
    if (y)
        t->y = y;
    if (!x || !y)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "%s:%lu: out of memory", r->path, r->line);
    *cap = n;
    return ESGD_OK;
}

/* One data row of r into row t->rows of t. */
static esgd_status table_parse_row(import_table *t, const csv_reader *r, char *const *header, size_t label_col,
                                   esgd_error *err)
{
    size_t ncols = (size_t)t->features + 1;
    if (r->count != ncols)
        return esgd_error_set(err, ESGD_ERR_FORMAT, "%s:%lu: %zu fields, the header has %zu", r->path, r->line,
                              r->count, ncols);
    float *x = t->x + (size_t)t->rows * t->features;
    for (size_t c = 0; c < ncols; c++) {
        double v;
        const char *s = r->fields[c];
        bool ok = csv_parse_number(s, &v);
        if (c == label_col) {
            if (!ok || v != floor(v) || v < 0 || v > 255)
                return esgd_error_set(err, ESGD_ERR_RANGE,
                                      "%s:%lu: column %zu (\"%s\"): label \"%s\" is not an integer 0..255", r->path,
                                      r->line, c + 1, header[c], s);
            t->y[t->rows] = (uint8_t)v;
            continue;
        }
        if (!ok)
            return esgd_error_set(err, ESGD_ERR_FORMAT, "%s:%lu: column %zu (\"%s\"): \"%s\" is not a number",
                                  r->path, r->line, c + 1, header[c], s);
        if (fabs(v) > FLT_MAX)
            return esgd_error_set(err, ESGD_ERR_RANGE, "%s:%lu: column %zu (\"%s\"): %s is beyond float range",
                                  r->path, r->line, c + 1, header[c], s);
        *x++ = (float)v;
    }
    t->rows++;
    return ESGD_OK;
}

esgd_status import_table_read(import_table *t, const char *path, const char *label, esgd_error *err)
{
    *t = (import_table){0};
    csv_reader r;
    char **header = NULL;
    size_t ncols = 0, label_col = 0, cap = 0;
    bool got;
    esgd_status st = csv_reader_open_header(&r, path, err);
    if (st != ESGD_OK)
        return st;
    if ((st = find_label(&r, label, &label_col, err)) != ESGD_OK)
        goto err;
    ncols = r.count;
    /* The header's strings live in r.buf, which the next line overwrites. */
    header = calloc(ncols, sizeof *header);
    t->names = calloc(ncols, sizeof *t->names);
    if (!header || !t->names)
        goto nomem;
    for (size_t c = 0; c < ncols; c++) {
        if (!(header[c] = strdup(r.fields[c])))
            goto nomem;
        if (c != label_col && !(t->names[t->features++] = strdup(r.fields[c])))
            goto nomem;
    }
    for (;;) {
        if ((st = csv_reader_next(&r, &got, err)) != ESGD_OK)
            goto err;
        if (!got)
            break;
        if ((st = table_grow(t, &cap, &r, err)) != ESGD_OK)
            goto err;
        if ((st = table_parse_row(t, &r, header, label_col, err)) != ESGD_OK)
            goto err;
    }
    if (t->rows == 0) {
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "%s: no data rows after the header", path);
        goto err;
    }
    free_names(header, (uint32_t)ncols);
    csv_reader_close(&r);
    return ESGD_OK;

nomem:
    st = esgd_error_set(err, ESGD_ERR_NOMEM, "%s: out of memory for the header", path);
err:
    free_names(header, (uint32_t)ncols);
    csv_reader_close(&r);
    import_table_destroy(t);
    return st;
}

void import_norm_destroy(import_norm *n)
{
    free_names(n->names, n->count);
    free(n->mean);
    free(n->std);
    *n = (import_norm){0};
}

static esgd_status norm_alloc(import_norm *n, uint32_t count, esgd_error *err)
{
    *n = (import_norm){0};
    n->names = calloc(count ? count : 1, sizeof *n->names);
    n->mean = calloc(count ? count : 1, sizeof *n->mean);
    n->std = calloc(count ? count : 1, sizeof *n->std);
    n->count = count;
    if (!n->names || !n->mean || !n->std) {
        import_norm_destroy(n);
        return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for %u features", count);
    }
    return ESGD_OK;
}

esgd_status import_norm_compute(import_norm *n, const import_table *t, esgd_error *err)
{
    esgd_status st = norm_alloc(n, t->features, err);
    if (st != ESGD_OK)
        return st;
    for (uint32_t c = 0; c < t->features; c++) {
        if (!(n->names[c] = strdup(t->names[c]))) {
            import_norm_destroy(n);
            return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for feature names");
        }
        /* Two passes in double: the one-pass formula loses the variance of
         * features with a large mean. */
        double sum = 0, sq = 0;
        for (uint32_t i = 0; i < t->rows; i++)
            sum += t->x[(size_t)i * t->features + c];
        double mean = sum / t->rows;
        for (uint32_t i = 0; i < t->rows; i++) {
            double d = t->x[(size_t)i * t->features + c] - mean;
            sq += d * d;
        }
        double std = sqrt(sq / t->rows);
        n->mean[c] = mean;
        n->std[c] = std > 0 ? std : 1.0;
    }
    return ESGD_OK;
}

static void write_csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n") && !csv_is_blank(s[0]) && !(s[0] && csv_is_blank(s[strlen(s) - 1]))) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

esgd_status import_norm_write(const import_norm *n, const char *path, esgd_error *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    fputs("feature,mean,std\n", f);
    for (uint32_t c = 0; c < n->count; c++) {
        write_csv_field(f, n->names[c]);
        fprintf(f, ",%.17g,%.17g\n", n->mean[c], n->std[c]);
    }
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad)
        return esgd_error_set(err, ESGD_ERR_IO, "writing %s failed", path);
    return ESGD_OK;
}

esgd_status import_norm_read(import_norm *n, const char *path, esgd_error *err)
{
    *n = (import_norm){0};
    csv_reader r;
    bool got;
    uint32_t cap = 0;
    esgd_status st = csv_reader_open_header(&r, path, err);
    if (st != ESGD_OK)
        return st;
    if (r.count != 3 || strcmp(r.fields[0], "feature") || strcmp(r.fields[1], "mean") || strcmp(r.fields[2], "std")) {
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "%s:%lu: header is not feature,mean,std", path, r.line);
        goto err;
    }
    for (;;) {
        if ((st = csv_reader_next(&r, &got, err)) != ESGD_OK)
            goto err;
        if (!got)
            break;
        if (r.count != 3) {
            st = esgd_error_set(err, ESGD_ERR_FORMAT, "%s:%lu: %zu fields, the header has 3", path, r.line, r.count);
            goto err;
        }
        if (n->count == cap) {
            uint32_t grown = cap ? 2 * cap : 64;
            char **names = realloc(n->names, grown * sizeof *names);
            if (names)
                n->names = names;
            double *mean = realloc(n->mean, grown * sizeof *mean);
            if (mean)
                n->mean = mean;
            double *std = realloc(n->std, grown * sizeof *std);
            if (std)
                n->std = std;
            if (!names || !mean || !std)
                goto nomem;
            cap = grown;
        }
        uint32_t i = n->count;
        for (int c = 1; c <= 2; c++) {
            double v;
            if (!csv_parse_number(r.fields[c], &v)) {
                st = esgd_error_set(err, ESGD_ERR_FORMAT, "%s:%lu: column %d (\"%s\"): \"%s\" is not a number", path,
                                    r.line, c + 1, c == 1 ? "mean" : "std", r.fields[c]);
                goto err;
            }
            if (c == 2 && !(v > 0)) {
                st = esgd_error_set(err, ESGD_ERR_RANGE, "%s:%lu: column 3 (\"std\"): %s is not positive", path,
                                    r.line, r.fields[c]);
                goto err;
            }
            (c == 1 ? n->mean : n->std)[i] = v;
        }
        if (!(n->names[i] = strdup(r.fields[0])))
            goto nomem;
        n->count++;
    }
    if (n->count == 0) {
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "%s: no features after the header", path);
        goto err;
    }
    csv_reader_close(&r);
    return ESGD_OK;

nomem:
    st = esgd_error_set(err, ESGD_ERR_NOMEM, "%s:%lu: out of memory", path, r.line);
err:
    csv_reader_close(&r);
    import_norm_destroy(n);
    return st;
}

esgd_status import_norm_apply(const import_norm *n, const char *norm_path, import_table *t, const char *t_path,
                              esgd_error *err)
{
    if (n->count != t->features)
        return esgd_error_set(err, ESGD_ERR_MISMATCH, "%s has %u features, %s has %u", norm_path, n->count, t_path,
                              t->features);
    for (uint32_t c = 0; c < n->count; c++)
        if (strcmp(n->names[c], t->names[c]) != 0)
            return esgd_error_set(err, ESGD_ERR_MISMATCH, "feature %u is \"%s\" in %s but \"%s\" in %s", c + 1,
                                  n->names[c], norm_path, t->names[c], t_path);
    for (uint32_t i = 0; i < t->rows; i++) {
        float *x = t->x + (size_t)i * t->features;
        for (uint32_t c = 0; c < t->features; c++)
            x[c] = (float)((x[c] - n->mean[c]) / n->std[c]);
    }
    return ESGD_OK;
}

/* Writes the IDX header and then `count` elements of `size` bytes, each
 * byte-swapped to big-endian. */
static esgd_status write_idx(const char *path, uint8_t type, unsigned rank, const uint32_t *dims, const void *data,
                             size_t size, esgd_error *err)
{
    if (rank == 0 || rank > 255)
        return esgd_error_set(err, ESGD_ERR_ARG, "%s: IDX rank %u outside 1..255", path, rank);
    FILE *f = fopen(path, "wb");
    if (!f)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    uint8_t head[4] = {0, 0, type, (uint8_t)rank};
    fwrite(head, 1, 4, f);
    size_t count = 1;
    for (unsigned i = 0; i < rank; i++) {
        uint8_t d[4] = {(uint8_t)(dims[i] >> 24), (uint8_t)(dims[i] >> 16), (uint8_t)(dims[i] >> 8), (uint8_t)dims[i]};
        fwrite(d, 1, 4, f);
        count *= dims[i];
    }
    const uint8_t *src = data;
    uint8_t buf[4096];
    size_t per = sizeof buf / size;
    for (size_t done = 0; done < count;) {
        size_t k = count - done < per ? count - done : per;
        for (size_t i = 0; i < k; i++)
            for (size_t b = 0; b < size; b++) {
                /* Values are in host order; IDX is big-endian. */
                size_t from = (done + i) * size;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                buf[i * size + b] = src[from + size - 1 - b];
#else
                buf[i * size + b] = src[from + b];
#endif
            }
        fwrite(buf, size, k, f);
        done += k;
    }
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad)
        return esgd_error_set(err, ESGD_ERR_IO, "writing %s failed", path);
    return ESGD_OK;
}

esgd_status import_write_idx_f32(const char *path, const float *data, unsigned rank, const uint32_t *dims,
                                 esgd_error *err)
{
    return write_idx(path, IDX_TYPE_F32, rank, dims, data, sizeof(float), err);
}

esgd_status import_write_idx_u8(const char *path, const uint8_t *data, uint32_t count, esgd_error *err)
{
    return write_idx(path, IDX_TYPE_U8, 1, &count, data, 1, err);
}

static esgd_status make_dir(const char *dir, esgd_error *err)
{
    if (!dir || !*dir)
        return esgd_error_set(err, ESGD_ERR_ARG, "no output folder");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    return ESGD_OK;
}

/* Writes <dir>/<split>-features.idx (rows, features) and -labels.idx. */
static esgd_status write_split(const char *dir, const char *split, const import_table *t, esgd_error *err)
{
    char path[4096];
    uint32_t dims[2] = {t->rows, t->features};
    snprintf(path, sizeof path, "%s/%s-features.idx", dir, split);
    esgd_status st = import_write_idx_f32(path, t->x, 2, dims, err);
    if (st != ESGD_OK)
        return st;
    snprintf(path, sizeof path, "%s/%s-labels.idx", dir, split);
    return import_write_idx_u8(path, t->y, t->rows, err);
}

/* The normalisation for train: read from norm_path or computed, applied to
 * train (when there is one) and written to <out_dir>/normalisation.csv. */
static esgd_status prepare_norm(import_norm *n, const char *norm_path, const char *out_dir, import_table *train,
                                const char *train_path, esgd_error *err)
{
    esgd_status st = norm_path ? import_norm_read(n, norm_path, err) : import_norm_compute(n, train, err);
    if (st != ESGD_OK)
        return st;
    if (train && (st = import_norm_apply(n, norm_path ? norm_path : train_path, train, train_path, err)) != ESGD_OK)
        return st;
    char path[4096];
    snprintf(path, sizeof path, "%s/normalisation.csv", out_dir);
    return import_norm_write(n, path, err);
}

esgd_status import_csv(const import_csv_options *o, esgd_error *err)
{
    if (!o->label)
        return esgd_error_set(err, ESGD_ERR_ARG, "a label column is required");
    if (!o->train && (!o->norm_path || o->test_count == 0))
        return esgd_error_set(err, ESGD_ERR_ARG,
                              "without a training file, give test files and the stored normalisation to apply");
    import_table train = {0}, test = {0};
    import_norm norm = {0};
    esgd_status st = make_dir(o->out_dir, err);
    if (st != ESGD_OK)
        return st;
    if (o->train && (st = import_table_read(&train, o->train, o->label, err)) != ESGD_OK)
        goto done;
    if ((st = prepare_norm(&norm, o->norm_path, o->out_dir, o->train ? &train : NULL, o->train, err)) != ESGD_OK)
        goto done;
    if (o->train && (st = write_split(o->out_dir, "train", &train, err)) != ESGD_OK)
        goto done;
    for (uint32_t i = 0; i < o->test_count; i++) {
        const char *path = o->tests[i];
        if ((st = import_table_read(&test, path, o->label, err)) != ESGD_OK)
            goto done;
        /* The same features in the same order, or the normalisation and the
         * model's inputs would silently mean something else. Without a
         * training file the stored normalisation's names are the reference
         * (import_norm_apply checks them). */
        if (o->train && test.features != train.features) {
            st = esgd_error_set(err, ESGD_ERR_MISMATCH, "%s:1: %u features, %s has %u", path, test.features,
                                o->train, train.features);
            goto done;
        }
        for (uint32_t c = 0; o->train && c < train.features; c++)
            if (strcmp(test.names[c], train.names[c]) != 0) {
                st = esgd_error_set(err, ESGD_ERR_MISMATCH, "%s:1: feature %u is \"%s\", in %s it is \"%s\"", path,
                                    c + 1, test.names[c], o->train, train.names[c]);
                goto done;
            }
        if ((st = import_norm_apply(&norm, o->train ? o->train : o->norm_path, &test, path, err)) != ESGD_OK)
            goto done;
        char split[32];
        if (o->test_count == 1)
            snprintf(split, sizeof split, "test");
        else
            snprintf(split, sizeof split, "test%u", i + 1);
        if ((st = write_split(o->out_dir, split, &test, err)) != ESGD_OK)
            goto done;
        import_table_destroy(&test);
    }
done:
    import_table_destroy(&train);
    import_table_destroy(&test);
    import_norm_destroy(&norm);
    return st;
}

esgd_status import_windows(const import_windows_options *o, esgd_error *err)
{
    if (!o->input || !o->label)
        return esgd_error_set(err, ESGD_ERR_ARG, "an input file and a label column are required");
    if (o->window == 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "the window must be at least 1 step");
    const char *split = o->split ? o->split : "train";
    if (strcmp(split, "train") != 0 && strcmp(split, "test") != 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "the split is train or test, not \"%s\"", split);
    uint32_t w = o->window, stride = o->stride ? o->stride : o->window;
    import_table t = {0};
    import_norm norm = {0};
    float *x = NULL;
    uint8_t *y = NULL;
    esgd_status st = make_dir(o->out_dir, err);
    if (st != ESGD_OK)
        return st;
    if ((st = import_table_read(&t, o->input, o->label, err)) != ESGD_OK)
        goto done;
    if (w > t.rows) {
        st = esgd_error_set(err, ESGD_ERR_RANGE, "%s: a window of %u steps is longer than the series (%u steps)",
                            o->input, w, t.rows);
        goto done;
    }
    if ((st = prepare_norm(&norm, o->norm_path, o->out_dir, &t, o->input, err)) != ESGD_OK)
        goto done;
    uint32_t n = (t.rows - w) / stride + 1, ch = t.features;
    uint64_t total = (uint64_t)n * ch * w;
    if (total > SIZE_MAX / sizeof(float) || total > UINT32_MAX * 4ull) {
        st = esgd_error_set(err, ESGD_ERR_TOO_LARGE, "%s: %u windows of %u x %u values are too many", o->input, n,
                            ch, w);
        goto done;
    }
    x = malloc((size_t)total * sizeof *x + 1);
    y = malloc(n);
    if (!x || !y) {
        st = esgd_error_set(err, ESGD_ERR_NOMEM, "%s: out of memory for %u windows", o->input, n);
        goto done;
    }
    for (uint32_t k = 0; k < n; k++) {
        size_t start = (size_t)k * stride;
        float *out = x + (size_t)k * ch * w; /* (ch, w) */
        for (uint32_t c = 0; c < ch; c++)
            for (uint32_t s = 0; s < w; s++)
                out[(size_t)c * w + s] = t.x[(start + s) * ch + c];
        y[k] = t.y[start + w - 1];
    }
    char path[4096];
    uint32_t dims[3] = {n, ch, w};
    snprintf(path, sizeof path, "%s/%s-features.idx", o->out_dir, split);
    if ((st = import_write_idx_f32(path, x, 3, dims, err)) != ESGD_OK)
        goto done;
    snprintf(path, sizeof path, "%s/%s-labels.idx", o->out_dir, split);
    st = import_write_idx_u8(path, y, n, err);
done:
    free(x);
    free(y);
    import_table_destroy(&t);
    import_norm_destroy(&norm);
    return st;
}
