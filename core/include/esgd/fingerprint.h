/* Fingerprints of bytes: FNV-1a 64. It names a model in reports
 * (model_fnv1a64), checks state files and tells agents' data apart; it is
 * not a cryptographic hash (signatures are in envelope.h). */
#ifndef ESGD_FINGERPRINT_H
#define ESGD_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

#define FNV1A64_START 0xcbf29ce484222325ull

/* The hash of `size` bytes continued from h (FNV1A64_START for a fresh one). */
uint64_t fnv1a64_continue(uint64_t h, const void *data, size_t size);

static inline uint64_t fnv1a64(const void *data, size_t size)
{
    return fnv1a64_continue(FNV1A64_START, data, size);
}

#endif
