/* FNV-1a 64 (see fingerprint.h). */
#include "esgd/fingerprint.h"

uint64_t fnv1a64_continue(uint64_t h, const void *data, size_t size)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < size; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
