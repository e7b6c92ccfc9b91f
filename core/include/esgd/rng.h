/* Deterministic pseudo-random numbers (xoshiro256**, seeded by splitmix64).
 * Every random choice in the project draws from one of these, so a run is
 * reproducible from its seed on any machine. */
#ifndef ESGD_RNG_H
#define ESGD_RNG_H

#include <stdint.h>

typedef struct esgd_rng {
    uint64_t s[4];
} esgd_rng;

/* Independent streams from one seed: e.g. stream = agent id + 1. */
void rng_seed(esgd_rng *rng, uint64_t seed, uint64_t stream);
uint64_t rng_next(esgd_rng *rng);
/* Uniform in [0, 1) with 53 random bits. */
double rng_uniform(esgd_rng *rng);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint32_t rng_below(esgd_rng *rng, uint32_t n);
/* Standard normal (Box-Muller). */
double rng_normal(esgd_rng *rng);
/* Gamma(shape, 1) for shape > 0 (Marsaglia-Tsang). */
double rng_gamma(esgd_rng *rng, double shape);

#endif
