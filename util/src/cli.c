/* Flags and environment variables from one option table per program. The
 * command line goes through getopt_long, built from the table at each call,
 * so "--name value" and "--name=value" both work; everything getopt would
 * print or permute is turned off and reported here instead. */
#include "esgd/cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void env_name(const char *name, char *var, size_t cap)
{
    size_t n = 0;
    const char *prefix = "ESGD_";
    while (*prefix && n + 1 < cap)
        var[n++] = *prefix++;
    for (; *name && n + 1 < cap; name++)
        var[n++] = *name == '-' ? '_' : (char)toupper((unsigned char)*name);
    var[n] = '\0';
}

/* Option i across the program's own table and the shared one. */
static const cli_option *option_at(const cli_program *p, size_t i)
{
    if (i < p->option_count)
        return &p->options[i];
    i -= p->option_count;
    return p->shared_options && i < p->shared_option_count ? &p->shared_options[i] : NULL;
}

static size_t option_total(const cli_program *p)
{
    return p->option_count + (p->shared_options ? p->shared_option_count : 0);
}

static const cli_option *find_option(const cli_program *p, const char *name)
{
    for (size_t i = 0; i < option_total(p); i++)
        if (strcmp(option_at(p, i)->name, name) == 0)
            return option_at(p, i);
    return NULL;
}

static int set_option(const cli_program *p, const cli_option *o, const char *value, const char *origin)
{
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case CLI_STRING:
        *(const char **)o->target = value;
        return 0;
    case CLI_FLAG:
        if (strcmp(value, "1") == 0 || strcmp(value, "true") == 0 || strcmp(value, "yes") == 0) {
            *(int *)o->target = 1;
            return 0;
        }
        if (strcmp(value, "0") == 0 || strcmp(value, "false") == 0 || strcmp(value, "no") == 0) {
            *(int *)o->target = 0;
            return 0;
        }
        break;
    case CLI_UINT: {
        unsigned long long v = strtoull(value, &end, 10);
        if (errno == 0 && end != value && *end == '\0' && value[0] != '-' && v <= UINT32_MAX) {
            *(uint32_t *)o->target = (uint32_t)v;
            return 0;
        }
        break;
    }
    case CLI_DOUBLE: {
        double v = strtod(value, &end);
        if (errno == 0 && end != value && *end == '\0' && isfinite(v)) {
            *(double *)o->target = v;
            return 0;
        }
        break;
    }
    }
    fprintf(stderr, "%s: %s: invalid value '%s' for --%s\n", p->name, origin, value, o->name);
    return CLI_USAGE_ERROR;
}

static int parse_environment(const cli_program *p, esgd_job_config *cfg)
{
    esgd_error err = {0};
    if (cfg && job_config_from_env(cfg, &err) != ESGD_OK) {
        fprintf(stderr, "%s: %s\n", p->name, err.message);
        return CLI_USAGE_ERROR;
    }
    for (size_t i = 0; i < option_total(p); i++) {
        char var[80];
        env_name(option_at(p, i)->name, var, sizeof var);
        const char *value = getenv(var);
        if (value && set_option(p, option_at(p, i), value, var) != 0)
            return CLI_USAGE_ERROR;
    }
    return CLI_CONTINUE;
}

/* getopt_long returns val for a long option and a character (or '?', ':')
 * otherwise; ours start past every character: --help is HELP_VAL, option i
 * of the program's tables OPTION_VAL + i, and job option j OPTION_VAL +
 * option_total + j. */
enum { HELP_VAL = 0x100, OPTION_VAL = 0x101 };

/* The getopt_long table: the program's options, then the job options whose
 * names the program does not already use (its own win, as getopt_long
 * takes the first exact match anyway), then --help. NULL when out of
 * memory. Free it with free(). */
static struct option *long_options_new(const cli_program *p, const esgd_job_config *cfg)
{
    size_t own = option_total(p), jobs = cfg ? job_option_count() : 0, n = 0;
    struct option *table = calloc(own + jobs + 2, sizeof *table);
    if (!table)
        return NULL;
    for (size_t i = 0; i < own; i++) {
        const cli_option *o = option_at(p, i);
        table[n++] = (struct option){o->name, o->type == CLI_FLAG ? no_argument : required_argument, NULL,
                                     OPTION_VAL + (int)i};
    }
    for (size_t j = 0; j < jobs; j++) {
        const char *name = job_option_at(j)->name;
        if (!find_option(p, name))
            table[n++] = (struct option){name, required_argument, NULL, OPTION_VAL + (int)(own + j)};
    }
    table[n] = (struct option){"help", no_argument, NULL, HELP_VAL};
    return table;
}

/* The name of option val (a getopt_long val of ours), without "--". */
static const char *option_name(const cli_program *p, int val)
{
    if (val == HELP_VAL)
        return "help";
    size_t i = (size_t)(val - OPTION_VAL);
    return i < option_total(p) ? option_at(p, i)->name : job_option_at(i - option_total(p))->name;
}

/* getopt_long also takes any unambiguous prefix of a name ("--brok"); the
 * programs never did, and a prefix that works today would break once an
 * option sharing it is added, so only whole names count. */
static bool typed_in_full(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return strncmp(arg, "--", 2) == 0 && strncmp(arg + 2, name, n) == 0 && (arg[2 + n] == '\0' || arg[2 + n] == '=');
}

/* Option val, which getopt_long found with its value (NULL for a flag). */
static int apply_option(const cli_program *p, esgd_job_config *cfg, int val, const char *value)
{
    size_t i = (size_t)(val - OPTION_VAL);
    if (i < option_total(p)) {
        const cli_option *o = option_at(p, i);
        if (o->type == CLI_FLAG) {
            *(int *)o->target = 1;
            return CLI_CONTINUE;
        }
        return set_option(p, o, value, "command line");
    }
    esgd_error err = {0};
    if (job_config_set(cfg, option_name(p, val), value, &err) != ESGD_OK) {
        fprintf(stderr, "%s: %s\n", p->name, err.message);
        return CLI_USAGE_ERROR;
    }
    return CLI_CONTINUE;
}

static int parse_arguments(const cli_program *p, int argc, char **argv, esgd_job_config *cfg,
                           const struct option *table)
{
    /* Not reentrant: getopt_long keeps its place in globals. optind = 0
     * makes glibc and musl start over, for a program (or a test) that
     * parses more than once. "+" stops at the first non-option instead of
     * permuting argv; ":" returns ':' for a missing value. There are no
     * short options: "-h" and every other single dash come back as '?'. */
    opterr = 0;
    optind = 0;
    for (;;) {
        int at = optind > 0 ? optind : 1; /* the element getopt_long reads next */
        int c = getopt_long(argc, argv, "+:", table, NULL);
        if (c == -1) {
            if (at < argc && strcmp(argv[at], "--") == 0) {
                fprintf(stderr, "%s: unknown option '--' (see --help)\n", p->name);
                return CLI_USAGE_ERROR;
            }
            if (optind < argc) {
                fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", p->name, argv[optind]);
                return CLI_USAGE_ERROR;
            }
            return CLI_CONTINUE;
        }
        const char *arg = argv[at];
        if (strncmp(arg, "--", 2) != 0) {
            if (strcmp(arg, "-h") == 0)
                return CLI_HELP;
            fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", p->name, arg);
            return CLI_USAGE_ERROR;
        }
        /* The option getopt_long matched, if any: on '?' and ':' it is in optopt. */
        int val = c == '?' || c == ':' ? optopt : c;
        if (val < HELP_VAL || !typed_in_full(arg, option_name(p, val))) {
            fprintf(stderr, "%s: unknown option '%.*s' (see --help)\n", p->name, (int)strcspn(arg, "="), arg);
            return CLI_USAGE_ERROR;
        }
        if (c == ':') {
            fprintf(stderr, "%s: option '--%s' needs a value\n", p->name, option_name(p, val));
            return CLI_USAGE_ERROR;
        }
        if (c == '?') { /* "--json=1" */
            fprintf(stderr, "%s: option '--%s' takes no value\n", p->name, option_name(p, val));
            return CLI_USAGE_ERROR;
        }
        if (val == HELP_VAL)
            return CLI_HELP;
        int rc = apply_option(p, cfg, val, optarg);
        if (rc != CLI_CONTINUE)
            return rc;
    }
}

int cli_parse(const cli_program *p, int argc, char **argv, esgd_job_config *cfg)
{
    int rc = parse_environment(p, cfg);
    if (rc != CLI_CONTINUE)
        return rc;
    struct option *table = long_options_new(p, cfg);
    if (!table) {
        fprintf(stderr, "%s: out of memory\n", p->name);
        return CLI_USAGE_ERROR;
    }
    rc = parse_arguments(p, argc, argv, cfg, table);
    free(table);
    if (rc == CLI_HELP)
        cli_print_help(p, cfg, stdout);
    return rc;
}

static void print_default(const cli_option *o, FILE *out)
{
    switch (o->type) {
    case CLI_STRING: {
        const char *v = *(const char *const *)o->target;
        if (v)
            fprintf(out, " [%s]", v);
        break;
    }
    case CLI_UINT:
        fprintf(out, " [%u]", *(const uint32_t *)o->target);
        break;
    case CLI_DOUBLE:
        fprintf(out, " [%g]", *(const double *)o->target);
        break;
    case CLI_FLAG:
        break;
    }
}

void cli_print_help(const cli_program *p, const esgd_job_config *cfg, FILE *out)
{
    fprintf(out, "%s\n\noptions (each also from the environment as ESGD_<NAME>):\n", p->summary);
    for (size_t i = 0; i < option_total(p); i++) {
        const cli_option *o = option_at(p, i);
        char flag[64];
        snprintf(flag, sizeof flag, "--%s%s", o->name, o->type == CLI_FLAG ? "" : " V");
        fprintf(out, "  %-22s %s", flag, o->help);
        print_default(o, out);
        fputc('\n', out);
    }
    if (cfg) {
        fprintf(out, "\njob options (also ESGD_<NAME>):\n");
        job_config_print_help(out);
    }
    if (p->epilogue)
        fprintf(out, "\n%s\n", p->epilogue);
}
