/* esgd-import: CSV data to the IDX files the trainers read. `csv` imports
 * a table (train and test files, one example a row); `windows` cuts one
 * multichannel time series into fixed-length windows (csv_import.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/cli.h"
#include "esgd/csv_import.h"

#define EPILOGUE "exit status: 0 done, 1 cannot read or write a file, 2 bad usage or bad input data"

/* I/O and memory failures are 1; everything about the input itself is 2. */
static int exit_code(esgd_status st)
{
    return st == ESGD_ERR_IO || st == ESGD_ERR_NOMEM ? 1 : 2;
}

static int run_csv(int argc, char **argv)
{
    const char *train = NULL, *label = NULL, *out = NULL, *norm = NULL, *test_env = NULL;
    const cli_option options[] = {
        {"train", CLI_STRING, &train, "training CSV (header row; mean and std are computed on it unless --norm)"},
        {"test", CLI_STRING, &test_env, "a test CSV, normalised like the training file (may be repeated)"},
        {"label", CLI_STRING, &label, "label column: header name or 0-based index (integers 0..255)"},
        {"out", CLI_STRING, &out, "output folder (created if missing)"},
        {"norm", CLI_STRING, &norm, "apply this normalisation.csv instead of computing one"},
    };
    const cli_program program = {
        .name = "esgd-import csv",
        .summary = "usage: esgd-import csv --train FILE [--test FILE ...] --label COL --out DIR [--norm FILE]\n"
                   "       esgd-import csv --test FILE [--test FILE ...] --norm FILE --label COL --out DIR\n"
                   "Writes DIR/train-features.idx (f32, rows x features, normalised), DIR/train-labels.idx (u8),\n"
                   "the same as test-* (one test file) or test1-*, test2-*, ... and DIR/normalisation.csv.\n"
                   "Without --train only the test files are written, normalised with --norm (a test set).",
        CLI_OPTIONS(options),
        .epilogue = EPILOGUE,
    };
    /* The option parser keeps the last of a repeated flag, so the --test
     * flags are taken out of argv here, in order. */
    const char **tests = calloc((size_t)argc + 1, sizeof *tests);
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!tests || !rest) {
        free(tests);
        free(rest);
        fprintf(stderr, "esgd-import: out of memory\n");
        return 1;
    }
    int nrest = 0;
    uint32_t ntests = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "--") == 0) {
            while (i < argc)
                rest[nrest++] = argv[i++];
            break;
        }
        if (i > 0 && strcmp(argv[i], "--test") == 0 && i + 1 < argc)
            tests[ntests++] = argv[++i];
        else if (i > 0 && strncmp(argv[i], "--test=", 7) == 0)
            tests[ntests++] = argv[i] + 7;
        else
            rest[nrest++] = argv[i];
    }
    int rc = cli_parse(&program, nrest, rest, NULL);
    if (rc != CLI_CONTINUE) {
        free(tests);
        free(rest);
        return rc == CLI_HELP ? 0 : 2;
    }
    if (ntests == 0 && test_env && *test_env)
        tests[ntests++] = test_env;
    if (!(train || (ntests > 0 && norm)) || !label || !out) {
        fprintf(stderr, "esgd-import csv: --label, --out and either --train or --test with --norm are required "
                        "(see --help)\n");
        free(tests);
        free(rest);
        return 2;
    }
    import_csv_options o = {
        .train = train, .tests = tests, .test_count = ntests, .label = label, .out_dir = out, .norm_path = norm};
    esgd_error err = {0};
    esgd_status st = import_csv(&o, &err);
    free(tests);
    free(rest);
    if (st != ESGD_OK) {
        fprintf(stderr, "esgd-import: %s\n", err.message);
        return exit_code(st);
    }
    fprintf(stderr, "esgd-import: wrote %s (%s%u test file(s))\n", out, train ? "train and " : "", ntests);
    return 0;
}

static int run_windows(int argc, char **argv)
{
    const char *input = NULL, *label = NULL, *out = NULL, *norm = NULL, *split = "train";
    uint32_t window = 0, stride = 0;
    const cli_option options[] = {
        {"input", CLI_STRING, &input, "time-series CSV: header, one row per step, channels and a label column"},
        {"window", CLI_UINT, &window, "steps per window"},
        {"stride", CLI_UINT, &stride, "steps between window starts (0: the window length)"},
        {"label", CLI_STRING, &label, "label column: header name or 0-based index (integers 0..255)"},
        {"out", CLI_STRING, &out, "output folder (created if missing)"},
        {"norm", CLI_STRING, &norm, "apply this normalisation.csv instead of computing one"},
        {"split", CLI_STRING, &split, "split to write: train, or test (a test series, with the training --norm)"},
    };
    const cli_program program = {
        .name = "esgd-import windows",
        .summary = "usage: esgd-import windows --input FILE --window W [--stride S] --label COL --out DIR [--norm FILE]\n"
                   "                           [--split train|test]\n"
                   "Writes DIR/<split>-features.idx (f32, windows x channels x W), DIR/<split>-labels.idx (u8, the\n"
                   "label of each window's last step) and DIR/normalisation.csv (per channel).",
        CLI_OPTIONS(options),
        .epilogue = EPILOGUE,
    };
    int rc = cli_parse(&program, argc, argv, NULL);
    if (rc != CLI_CONTINUE)
        return rc == CLI_HELP ? 0 : 2;
    if (!input || !label || !out || window == 0) {
        fprintf(stderr, "esgd-import windows: --input, --window (> 0), --label and --out are required (see --help)\n");
        return 2;
    }
    import_windows_options o = {
        .input = input, .window = window, .stride = stride, .label = label, .out_dir = out, .norm_path = norm,
        .split = split};
    esgd_error err = {0};
    esgd_status st = import_windows(&o, &err);
    if (st != ESGD_OK) {
        fprintf(stderr, "esgd-import: %s\n", err.message);
        return exit_code(st);
    }
    fprintf(stderr, "esgd-import: wrote %s\n", out);
    return 0;
}

int main(int argc, char **argv)
{
    const char *usage = "usage: esgd-import csv --train FILE [--test FILE ...] --label COL --out DIR [--norm FILE]\n"
                        "       esgd-import csv --test FILE [--test FILE ...] --norm FILE --label COL --out DIR\n"
                        "       esgd-import windows --input FILE --window W [--stride S] --label COL --out DIR "
                        "[--norm FILE] [--split train|test]\n"
                        "esgd-import <command> --help for details. " EPILOGUE "\n";
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    /* The sub-command stands in for argv[0], which the parser skips. */
    if (strcmp(argv[1], "csv") == 0)
        return run_csv(argc - 1, argv + 1);
    if (strcmp(argv[1], "windows") == 0)
        return run_windows(argc - 1, argv + 1);
    fprintf(stderr, "esgd-import: unknown command \"%s\"\n%s", argv[1], usage);
    return 2;
}
