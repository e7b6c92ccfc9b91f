/* How long the rounds of a run took, for the median and the tail in the
 * final report (the broker benchmark compares them with the simulator's). */
#ifndef ESGD_ROUND_TIMES_H
#define ESGD_ROUND_TIMES_H

#include <stddef.h>

typedef struct round_times {
    double *seconds;
    size_t count, capacity;
} round_times; /* zero-initialised is empty */

/* Records one round. Timing is informational: if memory runs out the sample
 * is dropped, never the run. */
void round_times_add(round_times *t, double seconds);

/* The q-quantile (0..1, linear between ranks) of the recorded rounds; NaN
 * when none. Reorders the samples. */
double round_times_quantile(round_times *t, double q);

void round_times_destroy(round_times *t);

/* The q-quantile of values[0..n), which it sorts; NaN when n = 0. */
double quantile_of(double *values, size_t n, double q);

#endif
