/* Reading CSV files for esgd-import: line by line (getline, so a line of
 * any length), each split in place into fields (quotes with "" inside, CRLF,
 * blank lines skipped), with the line number kept for error messages.
 * Internal to the core. */
#ifndef ESGD_CSV_READER_H
#define ESGD_CSV_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "esgd/error.h"

/* Reads a CSV file line by line (getline, so any length) and splits each
 * line in place into fields. */
typedef struct csv_reader {
    FILE *f;
    const char *path;
    unsigned long line; /* of the fields now held, from 1 */
    char *buf;
    size_t buf_cap;
    char **fields;
    size_t count;
    size_t fields_cap;
} csv_reader;

esgd_status csv_reader_open(csv_reader *r, const char *path, esgd_error *err);
void csv_reader_close(csv_reader *r);
/* Opens path and reads its header row into r->fields; an empty file is an
 * error, and on any error the reader is closed. */
esgd_status csv_reader_open_header(csv_reader *r, const char *path, esgd_error *err);
/* The next non-blank line's fields in r->fields[0..r->count); *got false at the end. */
esgd_status csv_reader_next(csv_reader *r, bool *got, esgd_error *err);
/* A finite number that is the whole field. */
bool csv_parse_number(const char *s, double *v);
/* A space or tab (what is trimmed around a field). */
bool csv_is_blank(char c);

#endif
