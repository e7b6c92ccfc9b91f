/* Reading CSV files line by line and splitting them into fields (see
 * csv_reader.h). */
#include "csv_reader.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


esgd_status csv_reader_open(csv_reader *r, const char *path, esgd_error *err)
{
    *r = (csv_reader){.path = path};
    r->f = fopen(path, "r");
    if (!r->f)
        return esgd_error_set(err, ESGD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    return ESGD_OK;
}

void csv_reader_close(csv_reader *r)
{
    if (r->f)
        fclose(r->f);
    free(r->buf);
    free(r->fields);
    *r = (csv_reader){0};
}

static esgd_status reader_push(csv_reader *r, char *field, esgd_error *err)
{
    if (r->count == r->fields_cap) {
        size_t cap = r->fields_cap ? 2 * r->fields_cap : 16;
        char **grown = realloc(r->fields, cap * sizeof *grown);
        if (!grown)
            return esgd_error_set(err, ESGD_ERR_NOMEM, "%s:%lu: out of memory", r->path, r->line);
        r->fields = grown;
        r->fields_cap = cap;
    }
    r->fields[r->count++] = field;
    return ESGD_OK;
}

bool csv_is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Splits r->buf into r->fields. Unquoted fields are trimmed of blanks. */
static esgd_status reader_split(csv_reader *r, esgd_error *err)
{
    r->count = 0;
    char *p = r->buf;
    for (;;) {
        while (csv_is_blank(*p))
            p++;
        char *start = p, *w = p;
        if (*p == '"') {
            start = w = ++p;
            for (;;) {
                if (!*p)
                    return esgd_error_set(err, ESGD_ERR_FORMAT, "%s:%lu: column %zu: unterminated quote", r->path,
                                          r->line, r->count + 1);
                if (*p == '"') {
                    if (p[1] != '"') {
                        p++;
                        break;
                    }
                    p++;
                }
                *w++ = *p++;
            }
            while (csv_is_blank(*p))
                p++;
            if (*p && *p != ',')
                return esgd_error_set(err, ESGD_ERR_FORMAT, "%s:%lu: column %zu: text after a closing quote",
                                      r->path, r->line, r->count + 1);
        } else {
            while (*p && *p != ',')
                p++;
            w = p;
            while (w > start && csv_is_blank(w[-1]))
                w--;
        }
        char end = *p; /* read before *w = 0, which may overwrite it */
        *w = '\0';
        esgd_status st = reader_push(r, start, err);
        if (st != ESGD_OK)
            return st;
        if (!end)
            return ESGD_OK;
        p++;
    }
}

/* The next non-blank line, split; *got = false at end of file. */
esgd_status csv_reader_next(csv_reader *r, bool *got, esgd_error *err)
{
    *got = false;
    for (;;) {
        errno = 0;
        ssize_t len = getline(&r->buf, &r->buf_cap, r->f);
        if (len < 0) {
            if (ferror(r->f))
                return esgd_error_set(err, ESGD_ERR_IO, "reading %s: %s", r->path, strerror(errno));
            return ESGD_OK;
        }
        r->line++;
        while (len > 0 && (r->buf[len - 1] == '\n' || r->buf[len - 1] == '\r'))
            r->buf[--len] = '\0';
        if (r->line == 1 && len >= 3 && memcmp(r->buf, "\xEF\xBB\xBF", 3) == 0)
            memmove(r->buf, r->buf + 3, (size_t)len - 2); /* a UTF-8 byte order mark */
        const char *q = r->buf;
        while (csv_is_blank(*q))
            q++;
        if (!*q)
            continue;
        *got = true;
        return reader_split(r, err);
    }
}

/* A finite number, the whole field. */
bool csv_parse_number(const char *s, double *v)
{
    char *end;
    double d = strtod(s, &end);
    if (end == s || *end || !isfinite(d))
        return false;
    *v = d;
    return true;
}

esgd_status csv_reader_open_header(csv_reader *r, const char *path, esgd_error *err)
{
    bool got = false;
    esgd_status st = csv_reader_open(r, path, err);
    if (st != ESGD_OK)
        return st;
    if ((st = csv_reader_next(r, &got, err)) == ESGD_OK && !got)
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "%s: empty file (no header row)", path);
    if (st != ESGD_OK)
        csv_reader_close(r);
    return st;
}

