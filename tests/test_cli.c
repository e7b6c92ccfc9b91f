/* The command-line parser (cli.h): "--name value" and "--name=value" alike,
 * for the program's own table, the shared one and the job options; the
 * exact message and exit code of each kind of bad input; the last of a
 * repeated option winning; the environment under the command line; --help;
 * and parsing more than once in one process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "test_skip.h"
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "esgd/cli.h"

/* ---- a small program: its own table, a shared one, the job options ---- */

typedef struct settings {
    const char *broker, *username;
    uint32_t quorum;
    double timeout;
    int json;
} settings;

static settings set;
static esgd_job_config cfg;

static const cli_option own_options[] = {
    {"broker", CLI_STRING, &set.broker, "broker URL"},
    {"quorum", CLI_UINT, &set.quorum, "fewest updates"},
    {"round-timeout", CLI_DOUBLE, &set.timeout, "seconds"},
    {"json", CLI_FLAG, &set.json, "print JSON"},
};
static const cli_option shared_options[] = {
    {"username", CLI_STRING, &set.username, "broker user name"},
};
static const cli_program program = {
    .name = "test",
    .summary = "usage: test [options]",
    .options = own_options,
    .option_count = sizeof own_options / sizeof own_options[0],
    .shared_options = shared_options,
    .shared_option_count = 1,
    .epilogue = "exit status: 0 done, 2 bad usage",
};

static const char *const env_used[] = {"ESGD_BROKER", "ESGD_QUORUM", "ESGD_ROUND_TIMEOUT", "ESGD_JSON",
                                       "ESGD_USERNAME", "ESGD_AGENTS", "ESGD_DROP"};

static int reset(void **state)
{
    (void)state;
    set = (settings){.broker = "tcp://default:1", .timeout = 30};
    job_config_defaults(&cfg);
    for (size_t i = 0; i < sizeof env_used / sizeof env_used[0]; i++)
        unsetenv(env_used[i]);
    return 0;
}

/* ---- one parse with stdout and stderr caught ---- */

typedef struct parsed {
    int rc;
    char out[16384]; /* what went to stdout (--help) */
    char err[1024];  /* what went to stderr (the error) */
} parsed;

static void read_all(FILE *f, char *text, size_t cap)
{
    fflush(f);
    rewind(f);
    size_t n = fread(text, 1, cap - 1, f);
    text[n] = '\0';
    fclose(f);
}

/* argv is NULL-terminated; its first element is the program's name. c may be NULL. */
static parsed *parse(const cli_program *p, esgd_job_config *c, char **argv)
{
    static parsed r;
    int argc = 0;
    while (argv[argc])
        argc++;
    FILE *out = tmpfile(), *err = tmpfile();
    assert_non_null(out);
    assert_non_null(err);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    dup2(fileno(out), 1);
    dup2(fileno(err), 2);
    r.rc = cli_parse(p, argc, argv, c);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    read_all(out, r.out, sizeof r.out);
    read_all(err, r.err, sizeof r.err);
    return &r;
}

/* A usage error with exactly this message and nothing on stdout. */
static void assert_usage_error(esgd_job_config *c, char **argv, const char *message)
{
    parsed *r = parse(&program, c, argv);
    assert_int_equal(r->rc, CLI_USAGE_ERROR);
    assert_string_equal(r->err, message);
    assert_string_equal(r->out, "");
}

/* ---- the checks ---- */

static void test_separate_and_joined_values(void **state)
{
    (void)state;
    char *separate[] = {"test", "--broker", "tcp://a:1", "--quorum", "3", "--round-timeout", "2.5", "--json",
                        "--username", "ann", "--agents", "7", "--method", "topk", NULL};
    parsed *r = parse(&program, &cfg, separate);
    assert_int_equal(r->rc, CLI_CONTINUE);
    assert_string_equal(r->err, "");
    assert_string_equal(set.broker, "tcp://a:1");
    assert_int_equal(set.quorum, 3);
    assert_true(set.timeout == 2.5);
    assert_int_equal(set.json, 1);
    assert_string_equal(set.username, "ann");
    assert_int_equal(cfg.agents, 7);
    assert_int_equal(cfg.sparsify.method, SPARSIFY_TOPK);

    reset(NULL);
    char *joined[] = {"test", "--broker=tcp://a:1", "--quorum=3", "--round-timeout=2.5", "--json",
                      "--username=ann", "--agents=7", "--method=topk", NULL};
    r = parse(&program, &cfg, joined);
    assert_int_equal(r->rc, CLI_CONTINUE);
    assert_string_equal(r->err, "");
    assert_string_equal(set.broker, "tcp://a:1");
    assert_int_equal(set.quorum, 3);
    assert_true(set.timeout == 2.5);
    assert_int_equal(set.json, 1);
    assert_string_equal(set.username, "ann");
    assert_int_equal(cfg.agents, 7);
    assert_int_equal(cfg.sparsify.method, SPARSIFY_TOPK);
}

static void test_values_that_look_odd(void **state)
{
    (void)state;
    /* Only the first '=' splits; a separate value is taken whatever it
     * looks like, a dash or "--json" included; "--name=" is empty. */
    char *argv[] = {"test", "--broker=ssl://h:1?a=b", "--round-timeout", "-1", "--username", "--json",
                    "--drop=0.99", NULL};
    parsed *r = parse(&program, &cfg, argv);
    assert_int_equal(r->rc, CLI_CONTINUE);
    assert_string_equal(set.broker, "ssl://h:1?a=b");
    assert_true(set.timeout == -1);
    assert_string_equal(set.username, "--json");
    assert_int_equal(set.json, 0);
    assert_true(cfg.sparsify.drop_ratio == 0.99);

    char *empty[] = {"test", "--broker=", "--round-timeout=-0.5", NULL};
    r = parse(&program, &cfg, empty);
    assert_int_equal(r->rc, CLI_CONTINUE);
    assert_string_equal(set.broker, "");
    assert_true(set.timeout == -0.5);
}

static void test_unknown_options(void **state)
{
    (void)state;
    char *unknown[] = {"test", "--frobnicate", "1", NULL};
    assert_usage_error(&cfg, unknown, "test: unknown option '--frobnicate' (see --help)\n");
    char *unknown_joined[] = {"test", "--frobnicate=1", NULL};
    assert_usage_error(&cfg, unknown_joined, "test: unknown option '--frobnicate' (see --help)\n");
    /* getopt_long's unambiguous prefixes are not taken. */
    char *prefix[] = {"test", "--brok", "tcp://a:1", NULL};
    assert_usage_error(&cfg, prefix, "test: unknown option '--brok' (see --help)\n");
    char *prefix_joined[] = {"test", "--quor=3", NULL};
    assert_usage_error(&cfg, prefix_joined, "test: unknown option '--quor' (see --help)\n");
    char *prefix_of_help[] = {"test", "--he", NULL};
    assert_usage_error(&cfg, prefix_of_help, "test: unknown option '--he' (see --help)\n");
    /* Job options exist only for a program that takes them. */
    char *job_option_without_cfg[] = {"test", "--agents", "3", NULL};
    assert_usage_error(NULL, job_option_without_cfg, "test: unknown option '--agents' (see --help)\n");
    char *positional[] = {"test", "--json", "extra", NULL};
    assert_usage_error(&cfg, positional, "test: unexpected argument 'extra' (see --help)\n");
    char *single_dash[] = {"test", "-x", NULL};
    assert_usage_error(&cfg, single_dash, "test: unexpected argument '-x' (see --help)\n");
    char *help_and_more[] = {"test", "-hx", NULL};
    assert_usage_error(&cfg, help_and_more, "test: unexpected argument '-hx' (see --help)\n");
    char *lone_dash[] = {"test", "-", NULL};
    assert_usage_error(&cfg, lone_dash, "test: unexpected argument '-' (see --help)\n");
    set.json = 0;
    char *end_of_options[] = {"test", "--", "--json", NULL};
    assert_usage_error(&cfg, end_of_options, "test: unknown option '--' (see --help)\n");
    assert_int_equal(set.json, 0);
}

static void test_missing_and_unwanted_values(void **state)
{
    (void)state;
    char *missing[] = {"test", "--json", "--broker", NULL};
    assert_usage_error(&cfg, missing, "test: option '--broker' needs a value\n");
    char *missing_shared[] = {"test", "--username", NULL};
    assert_usage_error(&cfg, missing_shared, "test: option '--username' needs a value\n");
    char *missing_job[] = {"test", "--agents", NULL};
    assert_usage_error(&cfg, missing_job, "test: option '--agents' needs a value\n");
    char *prefix_missing[] = {"test", "--brok", NULL};
    assert_usage_error(&cfg, prefix_missing, "test: unknown option '--brok' (see --help)\n");
    char *flag_value[] = {"test", "--json=1", NULL};
    assert_usage_error(&cfg, flag_value, "test: option '--json' takes no value\n");
    char *help_value[] = {"test", "--help=all", NULL};
    assert_usage_error(&cfg, help_value, "test: option '--help' takes no value\n");
}

static void test_bad_numbers(void **state)
{
    (void)state;
    char *negative[] = {"test", "--quorum", "-1", NULL};
    assert_usage_error(&cfg, negative, "test: command line: invalid value '-1' for --quorum\n");
    char *text[] = {"test", "--quorum=abc", NULL};
    assert_usage_error(&cfg, text, "test: command line: invalid value 'abc' for --quorum\n");
    char *too_big[] = {"test", "--quorum", "4294967296", NULL};
    assert_usage_error(&cfg, too_big, "test: command line: invalid value '4294967296' for --quorum\n");
    char *trailing[] = {"test", "--quorum=3x", NULL};
    assert_usage_error(&cfg, trailing, "test: command line: invalid value '3x' for --quorum\n");
    char *empty[] = {"test", "--quorum=", NULL};
    assert_usage_error(&cfg, empty, "test: command line: invalid value '' for --quorum\n");
    char *not_finite[] = {"test", "--round-timeout=nan", NULL};
    assert_usage_error(&cfg, not_finite, "test: command line: invalid value 'nan' for --round-timeout\n");
    char *infinite[] = {"test", "--round-timeout", "inf", NULL};
    assert_usage_error(&cfg, infinite, "test: command line: invalid value 'inf' for --round-timeout\n");
    /* Job options are checked by job_config_set, with its message. */
    char *bad_job_number[] = {"test", "--agents=x", NULL};
    assert_usage_error(&cfg, bad_job_number, "test: --agents needs a non-negative integer, got 'x'\n");
    char *bad_job_name[] = {"test", "--method", "magic", NULL};
    parsed *r = parse(&program, &cfg, bad_job_name);
    assert_int_equal(r->rc, CLI_USAGE_ERROR);
    assert_non_null(strstr(r->err, "test: "));
    assert_non_null(strstr(r->err, "magic"));
    /* From the environment the message names the variable. */
    setenv("ESGD_QUORUM", "lots", 1);
    char *none[] = {"test", NULL};
    assert_usage_error(&cfg, none, "test: ESGD_QUORUM: invalid value 'lots' for --quorum\n");
    unsetenv("ESGD_QUORUM");
    setenv("ESGD_JSON", "maybe", 1);
    assert_usage_error(&cfg, none, "test: ESGD_JSON: invalid value 'maybe' for --json\n");
}

static void test_repeated_options_and_environment(void **state)
{
    (void)state;
    setenv("ESGD_QUORUM", "9", 1);
    setenv("ESGD_JSON", "true", 1);
    setenv("ESGD_AGENTS", "2", 1);
    setenv("ESGD_USERNAME", "env-user", 1);
    char *none[] = {"test", NULL};
    assert_int_equal(parse(&program, &cfg, none)->rc, CLI_CONTINUE);
    assert_int_equal(set.quorum, 9);
    assert_int_equal(set.json, 1);
    assert_int_equal(cfg.agents, 2);
    assert_string_equal(set.username, "env-user");

    /* The command line beats the environment, and the last of a repeated
     * option wins, whichever form each one takes. */
    char *repeated[] = {"test", "--quorum", "1", "--quorum=4", "--broker=a", "--broker", "b", "--agents=3",
                        "--agents", "5", "--json", "--json", NULL};
    assert_int_equal(parse(&program, &cfg, repeated)->rc, CLI_CONTINUE);
    assert_int_equal(set.quorum, 4);
    assert_string_equal(set.broker, "b");
    assert_int_equal(cfg.agents, 5);
    assert_int_equal(set.json, 1);
    assert_string_equal(set.username, "env-user");
}

static void test_help(void **state)
{
    (void)state;
    char *help[] = {"test", "--quorum=5", "--help", "--frobnicate", NULL};
    parsed *r = parse(&program, NULL, help);
    /* Options before --help are applied (their values show as the
     * defaults); nothing after it is looked at. */
    assert_int_equal(r->rc, CLI_HELP);
    assert_string_equal(r->err, "");
    assert_string_equal(r->out, "usage: test [options]\n"
                                "\n"
                                "options (each also from the environment as ESGD_<NAME>):\n"
                                "  --broker V             broker URL [tcp://default:1]\n"
                                "  --quorum V             fewest updates [5]\n"
                                "  --round-timeout V      seconds [30]\n"
                                "  --json                 print JSON\n"
                                "  --username V           broker user name\n"
                                "\n"
                                "exit status: 0 done, 2 bad usage\n");

    char *short_help[] = {"test", "-h", NULL};
    parsed copy = *r;
    r = parse(&program, NULL, short_help);
    assert_int_equal(r->rc, CLI_HELP);
    assert_string_equal(r->out, copy.out);

    /* With job options, their section follows. */
    char *help_with_jobs[] = {"test", "--help", NULL};
    r = parse(&program, &cfg, help_with_jobs);
    assert_int_equal(r->rc, CLI_HELP);
    assert_non_null(strstr(r->out, "\njob options (also ESGD_<NAME>):\n"));
    assert_non_null(strstr(r->out, "  --agents "));
    assert_non_null(strstr(r->out, "\nexit status: 0 done, 2 bad usage\n"));
}

static void test_parses_again_from_the_start(void **state)
{
    (void)state;
    /* getopt_long keeps its place in globals: a parse that stopped half way
     * must not leave the next one starting there. */
    char *stops_early[] = {"test", "--quorum", "1", "--frobnicate", "--quorum", "2", NULL};
    assert_int_equal(parse(&program, &cfg, stops_early)->rc, CLI_USAGE_ERROR);
    assert_int_equal(set.quorum, 1);
    char *fresh[] = {"test", "--quorum=7", NULL};
    assert_int_equal(parse(&program, &cfg, fresh)->rc, CLI_CONTINUE);
    assert_int_equal(set.quorum, 7);
    char *none[] = {"test", NULL};
    set.quorum = 0;
    assert_int_equal(parse(&program, &cfg, none)->rc, CLI_CONTINUE);
    assert_int_equal(set.quorum, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_separate_and_joined_values, reset),
        cmocka_unit_test_setup(test_values_that_look_odd, reset),
        cmocka_unit_test_setup(test_unknown_options, reset),
        cmocka_unit_test_setup(test_missing_and_unwanted_values, reset),
        cmocka_unit_test_setup(test_bad_numbers, reset),
        cmocka_unit_test_setup(test_repeated_options_and_environment, reset),
        cmocka_unit_test_setup(test_help, reset),
        cmocka_unit_test_setup(test_parses_again_from_the_start, reset),
    };
    return test_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
