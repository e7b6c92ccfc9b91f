/* A sparse vector over the d model coordinates: the unit every sparsifier
 * produces, every update message carries and the aggregator sums. */
#ifndef ESGD_SPARSE_H
#define ESGD_SPARSE_H

#include <stdint.h>

typedef struct sparse_vector {
    uint32_t dim;       /* d, the full dimension */
    uint32_t count;     /* number of entries */
    uint32_t capacity;  /* room in indices/values */
    uint32_t *indices;  /* (count) strictly ascending, each < dim */
    float *values;      /* (count) */
} sparse_vector;

#endif
