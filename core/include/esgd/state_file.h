/* Small binary state files that survive a crash at any moment: the
 * coordinator's checkpoint and the agent's eSGD state.
 *
 * A file is "ESGDSTAT", u32 format version, u32 kind, u64 payload size, the
 * payload, and an FNV-1a 64 checksum of the payload (all little-endian).
 * Writes go to PATH.tmp, are fsync'd and renamed over PATH, then the folder
 * is fsync'd, so PATH always holds either the old or the new state whole.
 *
 * The payload is built and read with state_writer / state_reader, which
 * check every length: a short or corrupt file is an error, never an
 * out-of-bounds read. A writer either builds the whole payload in memory
 * (state_file_write) or streams it (state_stream_begin .. state_stream_end):
 * its fields then go through one small buffer, kept for the next file, and
 * large blocks straight to the file, so saving a large state needs no
 * memory of its size. */
#ifndef ESGD_STATE_FILE_H
#define ESGD_STATE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esgd/error.h"

enum { STATE_KIND_COORDINATOR = 1, STATE_KIND_AGENT = 2 };

typedef struct state_writer {
    uint8_t *data;
    size_t size, capacity;
    bool failed; /* out of memory (or a failed write when streaming); reported at the end */
    /* Streaming: data is a buffer of capacity flushed to fd. */
    bool streaming;
    int fd, error;       /* error: errno of the failed write */
    uint64_t streamed;   /* payload bytes flushed so far */
    uint64_t hash;       /* their checksum so far */
    char *path, *tmp;    /* the file and PATH.tmp */
} state_writer;

void state_writer_init(state_writer *w);
void state_writer_destroy(state_writer *w);
void state_put_u32(state_writer *w, uint32_t v);
void state_put_u64(state_writer *w, uint64_t v);
void state_put_f64(state_writer *w, double v);
/* u64 length, then the bytes */
void state_put_bytes(state_writer *w, const void *data, size_t size);

/* The files' checksum: FNV-1a 64 of the payload (fnv1a64, fingerprint.h). */
uint64_t state_checksum(const void *data, size_t size);

esgd_status state_file_write(const char *path, uint32_t kind, const state_writer *w, esgd_error *err);

/* A state file written as its fields are put: state_stream_begin creates
 * PATH.tmp with the header, the state_put_* calls go to it, and
 * state_stream_end writes the checksum and the size, fsyncs, renames it
 * over PATH and fsyncs the folder (file_write_atomic's guarantee). *bytes
 * (may be NULL): the file's size. Every error (IO, NOMEM, a failed write
 * on the way) comes from state_stream_end, which removes PATH.tmp and
 * leaves PATH as it was; begin fails only when PATH.tmp cannot be made. */
esgd_status state_stream_begin(state_writer *w, const char *path, uint32_t kind, esgd_error *err);
esgd_status state_stream_end(state_writer *w, uint64_t *bytes, esgd_error *err);
/* Writes parts[0..count) in order to PATH.tmp, fsyncs it, renames it over
 * PATH and fsyncs the folder: a crash leaves the old file or the new one,
 * never a mix. Used for state files and exported models. */
esgd_status file_write_atomic(const char *path, const void *const *parts, const size_t *sizes, size_t count,
                              esgd_error *err);

typedef struct state_reader {
    uint8_t *data; /* owned; freed by state_reader_destroy */
    size_t size, pos; /* read through state_get_* and state_reader_left */
} state_reader;

/* Errors: ESGD_ERR_IO (missing: check with state_file_exists first),
 * ESGD_ERR_FORMAT (magic, checksum), ESGD_ERR_VERSION, ESGD_ERR_MISMATCH
 * (another kind), ESGD_ERR_TRUNCATED. */
esgd_status state_file_read(const char *path, uint32_t kind, state_reader *r, esgd_error *err);
bool state_file_exists(const char *path);
void state_reader_destroy(state_reader *r);
/* Payload bytes not read yet (0 once every field is). A format that grew
 * fields at its end reads them only while some are left, so an older file
 * still loads; and a reader ends by checking that none are. */
size_t state_reader_left(const state_reader *r);

esgd_status state_get_u32(state_reader *r, uint32_t *v, esgd_error *err);
esgd_status state_get_u64(state_reader *r, uint64_t *v, esgd_error *err);
esgd_status state_get_f64(state_reader *r, double *v, esgd_error *err);
/* A length-prefixed block; *data points into the reader. */
esgd_status state_get_bytes(state_reader *r, const uint8_t **data, size_t *size, esgd_error *err);
/* A block that must be exactly `size` bytes, copied to out. */
esgd_status state_get_exact(state_reader *r, void *out, size_t size, esgd_error *err);

#endif
