/* Process-level helpers the programs share: a monotonic clock, a
 * SIGINT/SIGTERM flag, so a long run can stop at a clean point, and the peak
 * resident set, which a gateway operator sizes the device by.
 *
 * monotonic_seconds is the one clock durations are measured with. The core
 * reads no clock (what needs time gets it from its caller); the MQTT link's
 * only other use of CLOCK_MONOTONIC is an absolute deadline for its
 * condition variables' timed waits (link_deadline_after). */
#ifndef ESGD_RUNTIME_H
#define ESGD_RUNTIME_H

#include <stdbool.h>

/* Seconds on a monotonic clock (only differences mean anything). */
double monotonic_seconds(void);

/* After this, SIGINT and SIGTERM set a flag instead of killing the process. */
void stop_signals_install(void);
bool stop_requested(void);

/* The process's peak resident set so far, in MiB (0 if unknown). */
double peak_resident_mib(void);

/* One OpenBLAS thread unless OPENBLAS_NUM_THREADS says otherwise: the
 * summation order of a threaded sgemm depends on the thread count, and the
 * simulator and the broker run agree bit for bit only with the same count. */
void blas_threads_default(void);

#endif
