/* The trained-model file (model_file.h, schemas/model-file.md): encoding it
 * with the msgpack writer, the checksum, the atomic write, and the checked
 * read; plus the input normalisation it may carry. */
#include "esgd/model_file.h"

#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "esgd/csv_import.h"
#include "esgd/state_file.h" /* file_write_atomic */
#include "msgpack_read.h"
#include "msgpack_write.h"

#define MODEL_FILE_KEYS 12
/* The checksum object: bin8 header (0xc4, 32) and the 32 bytes. */
#define CHECKSUM_OBJECT_BYTES (2 + MODEL_FILE_CHECKSUM_BYTES)
/* Room for everything but the two bins (keys, names, spec text). */
#define MODEL_FILE_HEADROOM (MODEL_SPEC_TEXT_MAX + 1024)
#define MODEL_FILE_MAX_BYTES \
    ((size_t)MODEL_SPEC_MAX_PARAMS * 4 + (size_t)MODEL_SPEC_MAX_VALUES * 8 + MODEL_FILE_HEADROOM + CHECKSUM_OBJECT_BYTES)

static const char *const model_file_keys[] = {"format", "version", "job",        "run",           "round",
                                              "model",  "input",   "classes",    "num_params",    "params",
                                              "test_accuracy",     "normalisation", NULL};

/* ------------------------------------------------------------ helpers */

static void put_f32_le(uint8_t *p, const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        for (int b = 0; b < 4; b++)
            p[4 * i + (size_t)b] = (uint8_t)(bits >> (8 * b));
    }
}

static void get_f32_le(float *v, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
                        (uint32_t)p[4 * i + 3] << 24;
        memcpy(&v[i], &bits, sizeof bits);
    }
}

static esgd_status checksum(uint8_t out[MODEL_FILE_CHECKSUM_BYTES], const uint8_t *data, size_t size,
                            esgd_error *err)
{
    if (sodium_init() < 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "libsodium failed to initialise");
    crypto_generichash(out, MODEL_FILE_CHECKSUM_BYTES, data, size, NULL, 0);
    return ESGD_OK;
}

static uint32_t input_size(const model_spec *spec)
{
    uint32_t n = 1;
    for (uint32_t i = 0; i < spec->input_rank; i++)
        n *= spec->input_dims[i];
    return n;
}

/* The network f describes, parsed as job_model_spec parses a job's. */
static esgd_status parse_spec(const model_file *f, model_spec *spec, esgd_error *err)
{
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    snprintf(cfg.model, sizeof cfg.model, "%s", f->model);
    snprintf(cfg.input, sizeof cfg.input, "%s", f->input);
    cfg.classes = f->classes;
    return job_model_spec(&cfg, spec, err);
}

/* What write and read both require of f once its spec has parsed. */
static esgd_status check_contents(const model_file *f, const model_spec *spec, esgd_error *err)
{
    if (f->num_params != spec->num_params)
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "num_params %u, but model '%s' on %s has %u", f->num_params,
                              f->model, f->input, spec->num_params);
    for (uint32_t i = 0; i < f->num_params; i++)
        if (!isfinite(f->params[i]))
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "parameter %u is not finite", i);
    if (!isnan(f->test_accuracy) && !(f->test_accuracy >= 0 && f->test_accuracy <= 1))
        return esgd_error_set(err, ESGD_ERR_RANGE, "test_accuracy %g is not in 0..1", (double)f->test_accuracy);
    return model_file_check_normalisation(spec, f->norm, f->norm_count, err);
}

/* ------------------------------------------------------- normalisation */

esgd_status model_file_check_normalisation(const model_spec *spec, const float *norm, uint32_t count,
                                           esgd_error *err)
{
    if (count == 0)
        return ESGD_OK;
    uint32_t size = input_size(spec);
    if (count != size && !(spec->input_rank >= 2 && count == spec->input_dims[0]))
        return esgd_error_set(err, ESGD_ERR_DIMENSION,
                              "normalisation has %u features, the input (%u values of shape %u%s) takes %u%s", count,
                              size, spec->input_dims[0], spec->input_rank >= 2 ? "x..." : "", size,
                              spec->input_rank >= 2 ? " or one per entry of its first axis" : "");
    for (uint32_t i = 0; i < count; i++) {
        if (!isfinite(norm[2 * i]) || !isfinite(norm[2 * i + 1]))
            return esgd_error_set(err, ESGD_ERR_NONFINITE, "normalisation of feature %u is not finite", i);
        if (!(norm[2 * i + 1] > 0))
            return esgd_error_set(err, ESGD_ERR_RANGE, "normalisation of feature %u has std %g, not > 0", i,
                                  (double)norm[2 * i + 1]);
    }
    return ESGD_OK;
}

void model_file_normalise(const model_spec *spec, const float *norm, uint32_t count, const float *raw, float *out)
{
    uint32_t size = input_size(spec);
    if (count == 0) {
        if (out != raw)
            memmove(out, raw, (size_t)size * sizeof *out);
        return;
    }
    uint32_t per = size / count; /* 1 per value, or the values of one first-axis entry */
    for (uint32_t i = 0; i < size; i++) {
        const float *p = norm + 2 * (i / per);
        out[i] = (raw[i] - p[0]) / p[1];
    }
}

esgd_status model_file_read_normalisation(const char *csv_path, const model_spec *spec, float **norm,
                                          uint32_t *count, esgd_error *err)
{
    *norm = NULL;
    *count = 0;
    import_norm n = {0};
    esgd_status st = import_norm_read(&n, csv_path, err);
    if (st != ESGD_OK)
        return st;
    float *pairs = malloc((size_t)(n.count ? n.count : 1) * 2 * sizeof *pairs);
    if (!pairs) {
        import_norm_destroy(&n);
        return esgd_error_set(err, ESGD_ERR_NOMEM, "%s: out of memory for %u features", csv_path, n.count);
    }
    for (uint32_t i = 0; i < n.count; i++) {
        pairs[2 * i] = (float)n.mean[i];
        pairs[2 * i + 1] = (float)n.std[i];
    }
    uint32_t features = n.count;
    import_norm_destroy(&n);
    if (features == 0)
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "no features");
    else
        st = model_file_check_normalisation(spec, pairs, features, err);
    if (st != ESGD_OK) {
        free(pairs);
        esgd_error_prefix(err, "%s", csv_path);
        return st;
    }
    *norm = pairs;
    *count = features;
    return ESGD_OK;
}

/* ------------------------------------------------------------- writing */

static esgd_status encode(const model_file *f, esgd_buffer *buf, esgd_error *err)
{
    mp_writer w;
    mp_writer_start(&w, buf, MODEL_FILE_KEYS);
    mp_put_str(&w, "format", MODEL_FILE_FORMAT);
    mp_put_uint(&w, "version", MODEL_FILE_VERSION);
    mp_put_str(&w, "job", f->job);
    mp_put_uint(&w, "run", f->run);
    mp_put_uint(&w, "round", f->round);
    mp_put_str(&w, "model", f->model);
    mp_put_str(&w, "input", f->input);
    mp_put_uint(&w, "classes", f->classes);
    mp_put_uint(&w, "num_params", f->num_params);
    uint8_t *p = mp_put_bin(&w, "params", (size_t)f->num_params * 4);
    if (p)
        put_f32_le(p, f->params, f->num_params);
    if (isnan(f->test_accuracy))
        mp_put_nil(&w, "test_accuracy");
    else
        mp_put_f32(&w, "test_accuracy", f->test_accuracy);
    if (f->norm_count == 0) {
        mp_put_nil(&w, "normalisation");
    } else if ((p = mp_put_bin(&w, "normalisation", (size_t)f->norm_count * 8))) {
        put_f32_le(p, f->norm, 2 * (size_t)f->norm_count);
    }
    esgd_status st = mp_writer_finish(&w, "model file", err);
    if (st != ESGD_OK)
        return st;
    /* The second object: the checksum of the map's bytes. */
    uint8_t sum[MODEL_FILE_CHECKSUM_BYTES];
    if ((st = checksum(sum, buf->data, buf->size, err)) != ESGD_OK)
        return st;
    if (msgpack_pack_bin(&w.pk, sizeof sum) != 0 || msgpack_pack_bin_body(&w.pk, sum, sizeof sum) != 0)
        return esgd_error_set(err, ESGD_ERR_TOO_LARGE, "no room for the checksum");
    return ESGD_OK;
}

esgd_status model_file_write(const char *path, const model_file *f, esgd_error *err)
{
    if (!path || !f || (f->num_params && !f->params) || (f->norm_count && !f->norm))
        return esgd_error_set(err, ESGD_ERR_ARG, "model_file_write: NULL argument");
    model_spec *spec = malloc(sizeof *spec);
    if (!spec)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "model file %s: out of memory", path);
    esgd_buffer buf = {0};
    esgd_status st = job_name_check(f->job, strlen(f->job), ESGD_ERR_ARG, err);
    if (st == ESGD_OK)
        st = parse_spec(f, spec, err);
    if (st == ESGD_OK)
        st = check_contents(f, spec, err);
    if (st == ESGD_OK)
        st = buffer_init(&buf,
                         (size_t)f->num_params * 4 + (size_t)f->norm_count * 8 + MODEL_FILE_HEADROOM +
                             CHECKSUM_OBJECT_BYTES,
                         err);
    if (st == ESGD_OK)
        st = encode(f, &buf, err);
    if (st == ESGD_OK)
        st = file_write_atomic(path, (const void *const[]){buf.data}, (const size_t[]){buf.size}, 1, err);
    buffer_destroy(&buf);
    free(spec);
    if (st != ESGD_OK)
        esgd_error_prefix(err, "model file %s", path);
    return st;
}

/* ------------------------------------------------------------- reading */

static esgd_status read_whole(const char *path, uint8_t **data, size_t *size, esgd_error *err)
{
    *data = NULL;
    *size = 0;
    FILE *file = fopen(path, "rb");
    if (!file)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot open: %s", strerror(errno));
    struct stat sb;
    esgd_status st = ESGD_OK;
    if (fstat(fileno(file), &sb) != 0)
        st = esgd_error_set(err, ESGD_ERR_IO, "cannot stat: %s", strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = esgd_error_set(err, ESGD_ERR_IO, "not a regular file");
    else if ((uint64_t)sb.st_size > MODEL_FILE_MAX_BYTES)
        st = esgd_error_set(err, ESGD_ERR_TOO_LARGE, "%llu bytes, more than a model file can hold (%zu)",
                            (unsigned long long)sb.st_size, (size_t)MODEL_FILE_MAX_BYTES);
    else if (!(*data = malloc(sb.st_size ? (size_t)sb.st_size : 1)))
        st = esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for %llu bytes", (unsigned long long)sb.st_size);
    else if (fread(*data, 1, (size_t)sb.st_size, file) != (size_t)sb.st_size || fgetc(file) != EOF)
        st = esgd_error_set(err, ESGD_ERR_IO, "short read (file changed while read?)");
    fclose(file);
    if (st != ESGD_OK) {
        free(*data);
        *data = NULL;
        return st;
    }
    *size = (size_t)sb.st_size;
    return ESGD_OK;
}

/* A str field of at most cap - 1 bytes without NUL bytes, copied to out. */
static esgd_status get_str(const msgpack_object *map, const char *key, char *out, size_t cap, esgd_error *err)
{
    const msgpack_object *o = mp_find(map, key);
    if (!o)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field %s", key);
    if (o->type != MSGPACK_OBJECT_STR)
        return esgd_error_set(err, ESGD_ERR_TYPE, "field %s is not a string", key);
    size_t n = o->via.str.size;
    if (n >= cap)
        return esgd_error_set(err, ESGD_ERR_RANGE, "field %s is %zu bytes long, at most %zu allowed", key, n,
                              cap - 1);
    if (n && memchr(o->via.str.ptr, '\0', n))
        return esgd_error_set(err, ESGD_ERR_FORMAT, "field %s holds a NUL byte", key);
    if (n)
        memcpy(out, o->via.str.ptr, n);
    out[n] = '\0';
    return ESGD_OK;
}

/* The map's fields into f; f->params and f->norm are allocated here. */
static esgd_status decode(const msgpack_object *root, model_file *f, esgd_error *err)
{
    esgd_status st = mp_check_map(root, MP_MAX_KEYS, err);
    if (st != ESGD_OK)
        return st;
    const msgpack_object *format = mp_find(root, "format");
    if (!format || format->type != MSGPACK_OBJECT_STR || !mp_key_is(format, MODEL_FILE_FORMAT))
        return esgd_error_set(err, ESGD_ERR_FORMAT, "not an eSGD model file (no format \"%s\")", MODEL_FILE_FORMAT);
    uint32_t version = 0;
    if ((st = mp_get_u32(root, "version", &version, err)) != ESGD_OK)
        return st;
    if (version != MODEL_FILE_VERSION)
        return esgd_error_set(err, ESGD_ERR_VERSION, "format version %u, this build reads %u", version,
                              MODEL_FILE_VERSION);
    if ((st = mp_check_keys(root, model_file_keys, err)) != ESGD_OK)
        return st;
    uint64_t run = 0;
    const uint8_t *params = NULL, *norm = NULL;
    size_t params_size = 0, norm_size = 0;
    if ((st = get_str(root, "job", f->job, sizeof f->job, err)) != ESGD_OK ||
        (st = job_name_check(f->job, strlen(f->job), ESGD_ERR_FORMAT, err)) != ESGD_OK ||
        (st = mp_get_uint(root, "run", UINT64_MAX, &run, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "round", &f->round, err)) != ESGD_OK ||
        (st = get_str(root, "model", f->model, sizeof f->model, err)) != ESGD_OK ||
        (st = get_str(root, "input", f->input, sizeof f->input, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "classes", &f->classes, err)) != ESGD_OK ||
        (st = mp_get_u32(root, "num_params", &f->num_params, err)) != ESGD_OK ||
        (st = mp_get_bin(root, "params", &params, &params_size, err)) != ESGD_OK ||
        (st = mp_get_float(root, "test_accuracy", true, &f->test_accuracy, err)) != ESGD_OK)
        return st;
    f->run = run;
    const msgpack_object *n = mp_find(root, "normalisation");
    if (!n)
        return esgd_error_set(err, ESGD_ERR_MISSING, "missing field normalisation");
    if (n->type != MSGPACK_OBJECT_NIL && (st = mp_get_bin(root, "normalisation", &norm, &norm_size, err)) != ESGD_OK)
        return st;

    if ((st = parse_spec(f, &f->spec, err)) != ESGD_OK)
        return st;
    if (f->num_params != f->spec.num_params)
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "num_params %u, but model '%s' on %s has %u", f->num_params,
                              f->model, f->input, f->spec.num_params);
    if (params_size != (size_t)f->num_params * 4)
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "params holds %zu bytes, %u parameters need %zu",
                              params_size, f->num_params, (size_t)f->num_params * 4);
    if (norm && (norm_size == 0 || norm_size % 8 != 0))
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "normalisation holds %zu bytes, not a positive multiple of 8",
                              norm_size);
    f->norm_count = (uint32_t)(norm_size / 8);
    if (!(f->params = malloc((size_t)(f->num_params ? f->num_params : 1) * sizeof *f->params)) ||
        (f->norm_count && !(f->norm = malloc((size_t)f->norm_count * 2 * sizeof *f->norm))))
        return esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory for %u parameters", f->num_params);
    get_f32_le(f->params, params, f->num_params);
    if (f->norm_count)
        get_f32_le(f->norm, norm, 2 * (size_t)f->norm_count);
    return check_contents(f, &f->spec, err);
}

esgd_status model_file_read(const char *path, model_file *f, esgd_error *err)
{
    memset(f, 0, sizeof *f);
    if (!path)
        return esgd_error_set(err, ESGD_ERR_ARG, "model file path is NULL");
    uint8_t *data = NULL;
    size_t size = 0;
    esgd_status st = read_whole(path, &data, &size, err);
    size_t body = size >= CHECKSUM_OBJECT_BYTES ? size - CHECKSUM_OBJECT_BYTES : 0;
    uint8_t sum[MODEL_FILE_CHECKSUM_BYTES];
    if (st != ESGD_OK) {
        /* reported below */
    } else if (body == 0 || data[body] != 0xc4 || data[body + 1] != MODEL_FILE_CHECKSUM_BYTES) {
        st = esgd_error_set(err, ESGD_ERR_TRUNCATED,
                            "does not end in its %d-byte checksum (truncated, or bytes after the checksum)",
                            MODEL_FILE_CHECKSUM_BYTES);
    } else if ((st = checksum(sum, data, body, err)) == ESGD_OK &&
               memcmp(sum, data + body + 2, sizeof sum) != 0) {
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "checksum mismatch: the file is corrupt");
    }
    if (st == ESGD_OK) {
        msgpack_zone zone;
        msgpack_object root;
        if (!msgpack_zone_init(&zone, 4096)) {
            st = esgd_error_set(err, ESGD_ERR_NOMEM, "out of memory");
        } else {
            /* mp_parse checks that exactly one object fills the bytes before the checksum. */
            if ((st = mp_parse(&zone, data, body, &root, err)) == ESGD_OK)
                st = decode(&root, f, err);
            msgpack_zone_destroy(&zone);
        }
    }
    free(data);
    if (st != ESGD_OK) {
        model_file_destroy(f);
        esgd_error_prefix(err, "model file %s", path);
    }
    return st;
}

void model_file_destroy(model_file *f)
{
    if (!f)
        return;
    free(f->params);
    free(f->norm);
    memset(f, 0, sizeof *f);
}
