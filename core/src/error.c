/* Status names, descriptions and the error-with-context helpers. */
#include "esgd/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    const char *text;
} status_table[ESGD_STATUS_COUNT] = {
    [ESGD_OK] = {"ok", "success"},
    [ESGD_ERR_ARG] = {"argument", "invalid argument or configuration"},
    [ESGD_ERR_NOMEM] = {"nomem", "out of memory"},
    [ESGD_ERR_IO] = {"io", "input/output error"},
    [ESGD_ERR_FORMAT] = {"format", "malformed data"},
    [ESGD_ERR_TRUNCATED] = {"truncated", "data ends before its declared length"},
    [ESGD_ERR_VERSION] = {"version", "unsupported version"},
    [ESGD_ERR_TYPE] = {"type", "field has the wrong type"},
    [ESGD_ERR_MISSING] = {"missing", "required field missing"},
    [ESGD_ERR_RANGE] = {"range", "value out of range"},
    [ESGD_ERR_ORDER] = {"order", "indices unsorted or duplicated"},
    [ESGD_ERR_NONFINITE] = {"nonfinite", "NaN or infinite value"},
    [ESGD_ERR_DIMENSION] = {"dimension", "dimension mismatch"},
    [ESGD_ERR_TOO_LARGE] = {"too_large", "over the size limit"},
    [ESGD_ERR_MISMATCH] = {"mismatch", "wrong job, agent or round"},
    [ESGD_ERR_SIGNATURE] = {"signature", "missing or bad signature"},
    [ESGD_ERR_STALE] = {"stale", "message of another run of the job"},
};

const char *esgd_status_name(esgd_status status)
{
    if ((unsigned)status >= ESGD_STATUS_COUNT)
        return "unknown";
    return status_table[status].name;
}

const char *esgd_strerror(esgd_status status)
{
    if ((unsigned)status >= ESGD_STATUS_COUNT)
        return "unknown status";
    return status_table[status].text;
}

esgd_status esgd_error_set(esgd_error *err, esgd_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->status = status;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return status;
}

void esgd_error_prefix(esgd_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Joined by hand: snprintf("%s: %s") into a same-sized buffer trips
     * -Wformat-truncation, and truncation is the intended behaviour. */
    char joined[sizeof err->message];
    size_t cap = sizeof joined - 1;
    size_t used = strlen(prefix); /* vsnprintf terminated it within cap */
    memcpy(joined, prefix, used);
    const char *separator = ": ";
    for (const char *c = separator; *c && used < cap; c++)
        joined[used++] = *c;
    err->message[sizeof err->message - 1] = '\0';
    size_t tail = strlen(err->message);
    if (tail > cap - used)
        tail = cap - used;
    memcpy(joined + used, err->message, tail);
    joined[used + tail] = '\0';
    memcpy(err->message, joined, sizeof joined);
}
