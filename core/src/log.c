/* One line per event, written with a single fprintf so that lines from the
 * MQTT library's threads and the main thread do not interleave. */
#include "esgd/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static char log_subject[64] = "esgd";

void log_set_subject(const char *subject)
{
    snprintf(log_subject, sizeof log_subject, "%s", subject);
}

static void log_line(const char *level, const char *fmt, va_list ap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm utc;
    gmtime_r(&ts.tv_sec, &utc);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    fprintf(stderr, "%s.%03ldZ %s %s%s\n", stamp, ts.tv_nsec / 1000000, log_subject, level, text);
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
