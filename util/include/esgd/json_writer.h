/* A small streaming JSON writer for the programs' result objects (esgd-sim,
 * esgd-coordinator --json, esgd-watch, esgd-bench): it writes as it goes,
 * puts the commas and the ": " in, escapes every string and writes null
 * for a number that is not finite. Containers are laid out on one line
 * ({"a": 1, "b": 2}) or one member per line, indented by two spaces a level.
 *
 *   json_writer w;
 *   json_writer_init(&w, stdout);
 *   json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
 *   json_writer_string(&w, "job", job);
 *   json_writer_fixed(&w, "test_accuracy", accuracy, 4);
 *   json_writer_object_end(&w);
 *   fputc('\n', stdout);
 *
 * prints {"job": "mnist", "test_accuracy": 0.9812}. Write errors are the
 * stream's (ferror). Nesting deeper than JSON_WRITER_MAX_DEPTH, a member
 * without a key in an object or with one in an array, and an end that
 * does not match its begin are bugs and assert.
 */
#ifndef ESGD_JSON_WRITER_H
#define ESGD_JSON_WRITER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_WRITER_MAX_DEPTH 8

typedef enum json_writer_layout {
    JSON_WRITER_INLINE, /* {"a": 1, "b": 2} */
    JSON_WRITER_LINES   /* {\n  "a": 1,\n  "b": 2\n}: each member on a line of its own */
} json_writer_layout;

typedef struct json_writer_level {
    bool array;     /* else an object */
    bool lines;     /* JSON_WRITER_LINES */
    bool has_items; /* a member was written, so the next one needs a comma */
} json_writer_level;

typedef struct json_writer {
    FILE *out;
    int depth; /* open containers */
    json_writer_level open[JSON_WRITER_MAX_DEPTH];
} json_writer;

void json_writer_init(json_writer *w, FILE *out);

/* key: the member's name inside an object, NULL inside an array or at the
 * top level. */
void json_writer_object_begin(json_writer *w, const char *key, json_writer_layout layout);
void json_writer_object_end(json_writer *w);
void json_writer_array_begin(json_writer *w, const char *key, json_writer_layout layout);
void json_writer_array_end(json_writer *w);

/* s escaped: '"', '\\' and control characters (\n, \t, ... or \u00XX);
 * valid UTF-8 passes through as it is, and each byte that is not part of
 * valid UTF-8 becomes U+FFFD, so the output is always valid JSON. NULL
 * writes null. */
void json_writer_string(json_writer *w, const char *key, const char *s);
void json_writer_uint(json_writer *w, const char *key, uint64_t value);
void json_writer_bool(json_writer *w, const char *key, bool value);
void json_writer_null(json_writer *w, const char *key);
/* printf's %g; null when not finite (JSON has no NaN or infinity). */
void json_writer_real(json_writer *w, const char *key, double value);
/* printf's %.<digits>f; null when not finite. */
void json_writer_fixed(json_writer *w, const char *key, double value, int digits);

/* Writes s as a JSON string, quotes included, escaped as above. */
void json_writer_quote(FILE *out, const char *s);

#endif
