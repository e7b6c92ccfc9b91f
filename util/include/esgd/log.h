/* Timestamped log lines on stderr for the long-running programs:
 *   2026-11-25T10:04:05.123Z esgd-agent[2] round 17: published 7714 entries
 * The subject ("esgd-agent[2]", "esgd-coordinator") is set once per process. */
#ifndef ESGD_LOG_H
#define ESGD_LOG_H

void log_set_subject(const char *subject);
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A repeated event (a flood of status messages, rejected updates, failed
 * reconnections) logged at most once per interval; the next line that goes
 * out says how many were left out since the previous one:
 *
 *   static log_limiter rejected = LOG_LIMITER(10);
 *   log_warn_limited(&rejected, "update from agent %u rejected: %s", id, why);
 *   -> warning: update from agent 3 rejected: stale round (and 1234 more like it in the last 10 s)
 *
 * One limiter per kind of event (a static, or an array indexed by agent for
 * one per agent). It is the caller's storage: nothing is allocated, and it
 * may be shared between threads (one lock in log.c). The interval is
 * measured on the monotonic clock. */
typedef struct log_limiter {
    double interval;               /* seconds between lines */
    double last;                   /* monotonic time of the last line out */
    unsigned long long suppressed; /* left out since that line */
    const char *level;             /* of the last call, for log_limiter_flush */
    int started;
} log_limiter;
#define LOG_LIMITER(seconds) {(seconds), 0.0, 0, "", 0}

void log_info_limited(log_limiter *limiter, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_warn_limited(log_limiter *limiter, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reports what was left out since the last line, if anything, as
 * "N more <what> in the last S s" (e.g. when the flood ends or at exit, so
 * a burst's tail is not silently lost). */
void log_limiter_flush(log_limiter *limiter, const char *what);

#endif
