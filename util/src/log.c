/* One line per event, written with a single fprintf so that lines from the
 * MQTT library's threads and the main thread do not interleave. */
#include "esgd/log.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "esgd/runtime.h"

static char log_subject[64] = "esgd";

/* Guards every log_limiter: the MQTT link logs from its own and Paho's threads. */
static pthread_mutex_t limiter_lock = PTHREAD_MUTEX_INITIALIZER;

void log_set_subject(const char *subject)
{
    snprintf(log_subject, sizeof log_subject, "%s", subject);
}

static void log_text(const char *level, const char *text)
{
    /* The wall clock is right here: the stamp is for matching lines with
     * other logs, not for measuring time. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm utc;
    gmtime_r(&ts.tv_sec, &utc);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
    fprintf(stderr, "%s.%03ldZ %s %s%s\n", stamp, ts.tv_nsec / 1000000, log_subject, level, text);
}

static void log_line(const char *level, const char *fmt, va_list ap)
{
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    log_text(level, text);
}

void log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line("", fmt, ap);
    va_end(ap);
}

void log_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line("warning: ", fmt, ap);
    va_end(ap);
}

void log_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line("error: ", fmt, ap);
    va_end(ap);
}

/* "10" for whole-second spans, "0.3" below ten seconds. */
static void format_span(char *out, size_t cap, double seconds)
{
    snprintf(out, cap, seconds < 10 ? "%.1f" : "%.0f", seconds);
}

static void log_limited(log_limiter *lim, const char *level, const char *fmt, va_list ap)
{
    double now = monotonic_seconds();
    pthread_mutex_lock(&limiter_lock);
    bool out = !lim->started || now - lim->last >= lim->interval;
    unsigned long long left_out = lim->suppressed;
    double span = now - lim->last;
    lim->level = level;
    if (out) {
        lim->started = 1;
        lim->last = now;
        lim->suppressed = 0;
    } else {
        lim->suppressed++;
    }
    pthread_mutex_unlock(&limiter_lock);
    if (!out)
        return;
    char text[1024];
    int n = vsnprintf(text, sizeof text, fmt, ap);
    if (left_out && n >= 0 && (size_t)n < sizeof text) {
        char s[32];
        format_span(s, sizeof s, span);
        snprintf(text + n, sizeof text - (size_t)n, " (and %llu more like it in the last %s s)", left_out, s);
    }
    log_text(level, text);
}

void log_info_limited(log_limiter *limiter, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_limited(limiter, "", fmt, ap);
    va_end(ap);
}

void log_warn_limited(log_limiter *limiter, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_limited(limiter, "warning: ", fmt, ap);
    va_end(ap);
}

void log_limiter_flush(log_limiter *lim, const char *what)
{
    double now = monotonic_seconds();
    pthread_mutex_lock(&limiter_lock);
    unsigned long long left_out = lim->suppressed;
    double span = now - lim->last;
    const char *level = lim->level;
    lim->suppressed = 0;
    pthread_mutex_unlock(&limiter_lock);
    if (!left_out)
        return;
    char s[32], text[512];
    format_span(s, sizeof s, span);
    snprintf(text, sizeof text, "%llu more %s in the last %s s", left_out, what, s);
    log_text(level, text);
}
