/* Flags and environment variables from one option table per program. */
#include "esgd/cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
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

int cli_parse(const cli_program *p, int argc, char **argv, esgd_job_config *cfg)
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
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cli_print_help(p, cfg, stdout);
            return CLI_HELP;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", p->name, arg);
            return CLI_USAGE_ERROR;
        }
        const char *name = arg + 2;
        const cli_option *o = find_option(p, name);
        if (o && o->type == CLI_FLAG) {
            *(int *)o->target = 1;
            continue;
        }
        if (!o && !(cfg && job_option_find(name))) {
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", p->name, arg);
            return CLI_USAGE_ERROR;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: option '%s' needs a value\n", p->name, arg);
            return CLI_USAGE_ERROR;
        }
        const char *value = argv[++i];
        if (o) {
            if (set_option(p, o, value, "command line") != 0)
                return CLI_USAGE_ERROR;
        } else if (job_config_set(cfg, name, value, &err) != ESGD_OK) {
            fprintf(stderr, "%s: %s\n", p->name, err.message);
            return CLI_USAGE_ERROR;
        }
    }
    return CLI_CONTINUE;
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
