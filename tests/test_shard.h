/* A synthetic shard of 28x28 images for unit tests that train: label
 * i % 10, and a class-dependent band of bright pixels over noise, so the
 * task is learnable in a few rounds. The caller frees u8 and labels. */
#ifndef ESGD_TEST_SHARD_H
#define ESGD_TEST_SHARD_H

#include <stdlib.h>

#include "esgd/dataset.h"
#include "esgd/rng.h"

static void make_shard(esgd_dataset *ds, uint32_t count, uint64_t seed)
{
    esgd_rng rng;
    rng_seed(&rng, seed, 0);
    /* Every other field zero: callers pass uninitialised stack structs, and
     * dataset_destroy frees what it finds (garbage there crashed under
     * qemu-aarch64, where the stack was not zero by chance as on x86-64). */
    *ds = (esgd_dataset){0};
    ds->count = count;
    ds->rank = 2;
    ds->dims[0] = ds->dims[1] = 28;
    ds->example_size = 784;
    ds->type = DATASET_U8;
    ds->f32 = NULL;
    ds->u8 = malloc((size_t)count * 784);
    ds->labels = malloc(count);
    for (uint32_t i = 0; i < count; i++) {
        ds->labels[i] = (uint8_t)(i % 10);
        for (uint32_t p = 0; p < 784; p++)
            ds->u8[(size_t)i * 784 + p] = (uint8_t)((p / 78 == ds->labels[i] ? 200 : 0) + rng_below(&rng, 50));
    }
}

#endif
