/* Crash-safe state files: checksummed payload, written atomically. */
#include "esgd/state_file.h"

#include "esgd/fingerprint.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAGIC "ESGDSTAT"
#define STATE_FORMAT_VERSION 1
#define HEADER_SIZE 24 /* magic 8, version 4, kind 4, size 8 */
#define STREAM_BUFFER (64 * 1024) /* a streaming writer's buffer; larger blocks go straight to the file */

uint64_t state_checksum(const void *data, size_t n)
{
    return fnv1a64(data, n);
}

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void state_writer_init(state_writer *w)
{
    memset(w, 0, sizeof *w);
    w->fd = -1;
}

static void stream_close(state_writer *w);

void state_writer_destroy(state_writer *w)
{
    stream_close(w);
    free(w->data);
    memset(w, 0, sizeof *w);
}

static bool write_all(int fd, const void *data, size_t n);

/* Streaming: n bytes of payload to the file, into the checksum. */
static void stream_write(state_writer *w, const void *data, size_t n)
{
    if (w->failed || n == 0)
        return;
    w->hash = fnv1a64_continue(w->hash, data, n);
    if (!write_all(w->fd, data, n)) {
        w->failed = true;
        w->error = errno ? errno : EIO;
        return;
    }
    w->streamed += n;
}

static void stream_flush(state_writer *w)
{
    stream_write(w, w->data, w->size);
    w->size = 0;
}

static uint8_t *reserve(state_writer *w, size_t n)
{
    if (w->failed)
        return NULL;
    if (w->streaming && w->size + n > w->capacity) {
        stream_flush(w); /* n is at most the buffer: state_put_bytes sends more straight to the file */
        if (w->failed)
            return NULL;
    }
    if (w->size + n > w->capacity) {
        size_t cap = w->capacity ? w->capacity : 4096;
        while (cap < w->size + n)
            cap *= 2;
        uint8_t *grown = realloc(w->data, cap);
        if (!grown) {
            w->failed = true;
            return NULL;
        }
        w->data = grown;
        w->capacity = cap;
    }
    uint8_t *p = w->data + w->size;
    w->size += n;
    return p;
}

void state_put_u32(state_writer *w, uint32_t v)
{
    uint8_t *p = reserve(w, 4);
    if (p)
        put_le(p, v, 4);
}

void state_put_u64(state_writer *w, uint64_t v)
{
    uint8_t *p = reserve(w, 8);
    if (p)
        put_le(p, v, 8);
}

void state_put_f64(state_writer *w, double v)
{
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof bits);
    state_put_u64(w, bits);
}

void state_put_bytes(state_writer *w, const void *data, size_t size)
{
    state_put_u64(w, size);
    if (w->streaming && size > w->capacity / 2) {
        stream_flush(w);
        stream_write(w, data, size);
        return;
    }
    uint8_t *p = reserve(w, size);
    if (p && size)
        memcpy(p, data, size);
}

static bool write_all(int fd, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

/* The end of an atomic write to tmp (fd open on it): fsync, close, rename
 * over path, fsync the folder. ok false (saved: its errno): a write
 * failed; tmp is removed. */
static esgd_status atomic_commit(int fd, const char *tmp, const char *path, bool ok, int saved, esgd_error *err)
{
    if (ok && fsync(fd) != 0) {
        ok = false;
        saved = errno;
    }
    if (close(fd) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok || rename(tmp, path) != 0) {
        saved = ok ? errno : saved;
        unlink(tmp);
        return esgd_error_set(err, ESGD_ERR_IO, "%s: write failed: %s", path, strerror(saved));
    }
    /* The rename itself is only durable once the folder is synced. */
    char folder[4096];
    snprintf(folder, sizeof folder, "%s", path);
    int dfd = open(dirname(folder), O_RDONLY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return ESGD_OK;
}

esgd_status file_write_atomic(const char *path, const void *const *parts, const size_t *sizes, size_t count,
                              esgd_error *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return esgd_error_set(err, ESGD_ERR_ARG, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return esgd_error_set(err, ESGD_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    bool ok = true;
    for (size_t i = 0; ok && i < count; i++)
        ok = sizes[i] == 0 || write_all(fd, parts[i], sizes[i]);
    return atomic_commit(fd, tmp, path, ok, errno, err);
}

static void put_header(uint8_t header[HEADER_SIZE], uint32_t kind, uint64_t size)
{
    memcpy(header, STATE_MAGIC, 8);
    put_le(header + 8, STATE_FORMAT_VERSION, 4);
    put_le(header + 12, kind, 4);
    put_le(header + 16, size, 8);
}

/* Leaves streaming: the open file (if any) closed and removed. */
static void stream_close(state_writer *w)
{
    if (w->streaming && w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp);
    }
    w->streaming = false;
    w->fd = -1;
    free(w->path);
    free(w->tmp);
    w->path = w->tmp = NULL;
}

esgd_status state_stream_begin(state_writer *w, const char *path, uint32_t kind, esgd_error *err)
{
    stream_close(w);
    w->size = 0;
    w->failed = false;
    w->error = 0;
    w->streamed = 0;
    w->hash = FNV1A64_START;
    if (w->capacity < STREAM_BUFFER) {
        uint8_t *grown = realloc(w->data, STREAM_BUFFER);
        if (!grown)
            return esgd_error_set(err, ESGD_ERR_NOMEM, "state %s: out of memory", path);
        w->data = grown;
        w->capacity = STREAM_BUFFER;
    }
    size_t n = strlen(path);
    w->path = strdup(path);
    w->tmp = malloc(n + 5);
    if (!w->path || !w->tmp) {
        stream_close(w);
        return esgd_error_set(err, ESGD_ERR_NOMEM, "state %s: out of memory", path);
    }
    memcpy(w->tmp, path, n);
    memcpy(w->tmp + n, ".tmp", 5);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        esgd_error_set(err, ESGD_ERR_IO, "state %s: cannot create: %s", w->tmp, strerror(errno));
        stream_close(w);
        return ESGD_ERR_IO;
    }
    w->streaming = true;
    /* The size is not known yet: state_stream_end writes it. */
    uint8_t header[HEADER_SIZE];
    put_header(header, kind, 0);
    if (!write_all(w->fd, header, sizeof header)) {
        w->failed = true;
        w->error = errno ? errno : EIO;
    }
    return ESGD_OK;
}

esgd_status state_stream_end(state_writer *w, uint64_t *bytes, esgd_error *err)
{
    if (!w->streaming)
        return esgd_error_set(err, ESGD_ERR_ARG, "state: no file is being written");
    stream_flush(w);
    uint8_t size[8], trailer[8];
    put_le(size, w->streamed, 8);
    put_le(trailer, w->hash, 8);
    bool ok = !w->failed && write_all(w->fd, trailer, sizeof trailer) &&
              pwrite(w->fd, size, sizeof size, 16) == (ssize_t)sizeof size;
    int saved = w->failed ? w->error : errno;
    int fd = w->fd;
    w->fd = -1; /* atomic_commit closes it, and removes the file on failure */
    w->streaming = false;
    esgd_status st = atomic_commit(fd, w->tmp, w->path, ok, saved ? saved : EIO, err);
    if (st != ESGD_OK)
        esgd_error_prefix(err, "state");
    else if (bytes)
        *bytes = HEADER_SIZE + w->streamed + 8;
    stream_close(w);
    w->size = 0;
    return st;
}

esgd_status state_file_write(const char *path, uint32_t kind, const state_writer *w, esgd_error *err)
{
    if (w->failed)
        return esgd_error_set(err, ESGD_ERR_NOMEM, "state %s: out of memory building it", path);
    if (w->streaming)
        return esgd_error_set(err, ESGD_ERR_ARG, "state %s: the writer is streaming (state_stream_end)", path);
    uint8_t header[HEADER_SIZE], trailer[8];
    put_header(header, kind, w->size);
    put_le(trailer, state_checksum(w->data, w->size), 8);
    const void *parts[] = {header, w->data, trailer};
    const size_t sizes[] = {sizeof header, w->size, sizeof trailer};
    esgd_status st = file_write_atomic(path, parts, sizes, 3, err);
    if (st != ESGD_OK)
        esgd_error_prefix(err, "state");
    return st;
}

bool state_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

esgd_status state_file_read(const char *path, uint32_t kind, state_reader *r, esgd_error *err)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f)
        return esgd_error_set(err, ESGD_ERR_IO, "state %s: cannot open: %s", path, strerror(errno));
    uint8_t header[HEADER_SIZE], trailer[8];
    esgd_status st = ESGD_OK;
    if (fread(header, 1, sizeof header, f) != sizeof header) {
        st = esgd_error_set(err, ESGD_ERR_TRUNCATED, "state %s: shorter than its header", path);
    } else if (memcmp(header, STATE_MAGIC, 8) != 0) {
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "state %s: not an eSGD state file", path);
    } else if (get_le(header + 8, 4) != STATE_FORMAT_VERSION) {
        st = esgd_error_set(err, ESGD_ERR_VERSION, "state %s: format version %u, this build reads %u", path,
                            (unsigned)get_le(header + 8, 4), STATE_FORMAT_VERSION);
    } else if (get_le(header + 12, 4) != kind) {
        st = esgd_error_set(err, ESGD_ERR_MISMATCH, "state %s: holds kind %u, expected %u", path,
                            (unsigned)get_le(header + 12, 4), kind);
    }
    uint64_t size = st == ESGD_OK ? get_le(header + 16, 8) : 0;
    if (st == ESGD_OK) {
        struct stat info;
        if (fstat(fileno(f), &info) != 0 || (uint64_t)info.st_size != HEADER_SIZE + size + 8)
            st = esgd_error_set(err, ESGD_ERR_TRUNCATED, "state %s: size does not match its header", path);
    }
    if (st == ESGD_OK && !(r->data = malloc(size ? size : 1)))
        st = esgd_error_set(err, ESGD_ERR_NOMEM, "state %s: out of memory", path);
    if (st == ESGD_OK && (fread(r->data, 1, size, f) != size || fread(trailer, 1, 8, f) != 8))
        st = esgd_error_set(err, ESGD_ERR_TRUNCATED, "state %s: short read", path);
    if (st == ESGD_OK && get_le(trailer, 8) != state_checksum(r->data, size))
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "state %s: checksum mismatch (corrupt file)", path);
    fclose(f);
    if (st != ESGD_OK) {
        state_reader_destroy(r);
        return st;
    }
    r->size = size;
    return ESGD_OK;
}

void state_reader_destroy(state_reader *r)
{
    free(r->data);
    memset(r, 0, sizeof *r);
}

size_t state_reader_left(const state_reader *r)
{
    return r->size - r->pos;
}

static esgd_status take(state_reader *r, size_t n, const uint8_t **p, esgd_error *err)
{
    if (r->size - r->pos < n)
        return esgd_error_set(err, ESGD_ERR_TRUNCATED, "state: field of %zu bytes at offset %zu runs past the end",
                              n, r->pos);
    *p = r->data + r->pos;
    r->pos += n;
    return ESGD_OK;
}

esgd_status state_get_u32(state_reader *r, uint32_t *v, esgd_error *err)
{
    const uint8_t *p = NULL;
    esgd_status st = take(r, 4, &p, err);
    if (st == ESGD_OK)
        *v = (uint32_t)get_le(p, 4);
    return st;
}

esgd_status state_get_u64(state_reader *r, uint64_t *v, esgd_error *err)
{
    const uint8_t *p = NULL;
    esgd_status st = take(r, 8, &p, err);
    if (st == ESGD_OK)
        *v = get_le(p, 8);
    return st;
}

esgd_status state_get_f64(state_reader *r, double *v, esgd_error *err)
{
    uint64_t bits = 0;
    esgd_status st = state_get_u64(r, &bits, err);
    if (st == ESGD_OK)
        memcpy(v, &bits, sizeof *v);
    return st;
}

esgd_status state_get_bytes(state_reader *r, const uint8_t **data, size_t *size, esgd_error *err)
{
    uint64_t n = 0;
    esgd_status st = state_get_u64(r, &n, err);
    if (st != ESGD_OK)
        return st;
    if (n > r->size - r->pos)
        return esgd_error_set(err, ESGD_ERR_TRUNCATED, "state: block of %llu bytes runs past the end",
                              (unsigned long long)n);
    *size = (size_t)n;
    return take(r, (size_t)n, data, err);
}

esgd_status state_get_exact(state_reader *r, void *out, size_t size, esgd_error *err)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    esgd_status st = state_get_bytes(r, &p, &n, err);
    if (st != ESGD_OK)
        return st;
    if (n != size)
        return esgd_error_set(err, ESGD_ERR_DIMENSION, "state: block of %zu bytes, expected %zu", n, size);
    if (size)
        memcpy(out, p, size);
    return ESGD_OK;
}
