/* Round durations and their quantiles (round_times.h). */
#include "esgd/round_times.h"

#include <math.h>
#include <stdlib.h>

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double quantile_of(double *values, size_t n, double q)
{
    if (n == 0)
        return NAN;
    qsort(values, n, sizeof *values, compare_double);
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)pos;
    if (lo + 1 >= n)
        return values[n - 1];
    double frac = pos - (double)lo;
    return values[lo] + frac * (values[lo + 1] - values[lo]);
}

void round_times_add(round_times *t, double seconds)
{
    if (t->count == t->capacity) {
        size_t capacity = t->capacity ? 2 * t->capacity : 256;
        double *grown = realloc(t->seconds, capacity * sizeof *grown);
        if (!grown)
            return;
        t->seconds = grown;
        t->capacity = capacity;
    }
    t->seconds[t->count++] = seconds;
}

double round_times_quantile(round_times *t, double q)
{
    return quantile_of(t->seconds, t->count, q);
}

void round_times_destroy(round_times *t)
{
    free(t->seconds);
    *t = (round_times){0};
}
