/* Command-line and environment settings for the programs (esgd-sim,
 * esgd-agent, esgd-coordinator, esgd-watch, esgd-keygen): one table of a
 * program's own options, plus optionally every job option (job.h). Each
 * option NAME is the flag --NAME (its value as "--NAME V" or "--NAME=V",
 * whole names only, the last of a repeated flag winning) and the
 * environment variable ESGD_NAME (upper case, '-' -> '_'); flags win over
 * the environment. -h is --help; anything else not an option is an error.
 *
 *   cli_option opts[] = {{"broker", CLI_STRING, &broker, "broker URL"}, ...};
 *   cli_program program = {.name = "esgd-x", .summary = "usage: ...", CLI_OPTIONS(opts)};
 *   int rc = cli_parse(&program, argc, argv, &cfg);
 *   if (rc != CLI_CONTINUE) return rc == CLI_HELP ? 0 : 2;
 */
#ifndef ESGD_CLI_H
#define ESGD_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "esgd/job.h"

typedef enum cli_type {
    CLI_STRING, /* target: const char ** (points into argv or environ) */
    CLI_UINT,   /* target: uint32_t * */
    CLI_DOUBLE, /* target: double * */
    CLI_FLAG    /* target: int *, set to 1; no value (env: 1/0/true/false) */
} cli_type;

typedef struct cli_option {
    const char *name;
    cli_type type;
    void *target;
    const char *help; /* one line; the default is printed after it */
} cli_option;

typedef struct cli_program {
    const char *name;        /* "esgd-agent", prefix of every message */
    const char *summary;     /* usage line(s) printed first by --help */
    const cli_option *options; /* set both with CLI_OPTIONS(array) */
    size_t option_count;
    const cli_option *shared_options; /* a second table, e.g. the broker settings; may be NULL;
                                       * set both with CLI_SHARED_OPTIONS(array) */
    size_t shared_option_count;
    const char *epilogue;    /* printed last by --help (exit codes), may be NULL */
} cli_program;

/* A cli_program's tables with their counts, from arrays of cli_option:
 *   const cli_program program = {.name = "esgd-sim", CLI_OPTIONS(options), ...}; */
#define CLI_OPTIONS(table) .options = (table), .option_count = sizeof(table) / sizeof((table)[0])
#define CLI_SHARED_OPTIONS(table) \
    .shared_options = (table), .shared_option_count = sizeof(table) / sizeof((table)[0])

enum { CLI_CONTINUE = 0, CLI_HELP = 1, CLI_USAGE_ERROR = 2 };

/* Environment first, then argv (parsed with getopt_long, so not
 * reentrant: it uses getopt's globals). cfg may be NULL for programs that
 * take no job options (the agent reads them from the broker). Prints --help
 * to stdout and errors (with the program name) to stderr. Returns
 * CLI_CONTINUE, CLI_HELP (help printed) or CLI_USAGE_ERROR (message
 * printed). */
int cli_parse(const cli_program *program, int argc, char **argv, esgd_job_config *cfg);

void cli_print_help(const cli_program *program, const esgd_job_config *cfg, FILE *out);

#endif
