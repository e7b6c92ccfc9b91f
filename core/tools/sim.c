/* esgd-sim: N agents and the coordinator in one process, exchanging the same
 * encoded messages the MQTT programs exchange, so accuracy and byte counts
 * are those of a real deployment minus the network. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esgd/cli.h"
#include "esgd/job.h"
#include "esgd/report.h"
#include "esgd/simulation.h"
#include "esgd/runtime.h"

int main(int argc, char **argv)
{
    const char *data_dir = "data/mnist", *loss_csv = NULL;
    int json = 0;
    uint32_t eval_limit = 0;
    const cli_option options[] = {
        {"data", CLI_STRING, &data_dir, "IDX data folder: the train split and a t10k or test split (MNIST or esgd-import names)"},
        {"json", CLI_FLAG, &json, "print one JSON object with the results on stdout"},
        {"loss-csv", CLI_STRING, &loss_csv, "write one CSV row per round (loss, participants, bytes)"},
        {"eval-limit", CLI_UINT, &eval_limit, "test examples per periodic evaluation (the final one uses all)"},
    };
    const cli_program program = {
        .name = "esgd-sim",
        .summary = "usage: esgd-sim [options] [job options]\n"
                   "Runs N eSGD agents and the coordinator in one process on MNIST-format IDX data,\n"
                   "exchanging the same encoded messages the MQTT programs exchange.",
        CLI_OPTIONS(options),
        .epilogue = "exit status: 0 done, 1 runtime error (data, training), 2 bad usage",
    };
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    int rc = cli_parse(&program, argc, argv, &cfg);
    if (rc != CLI_CONTINUE)
        return rc == CLI_HELP ? 0 : 2;

    blas_threads_default();
    esgd_error err = {0};
    FILE *csv = NULL;
    double started = monotonic_seconds();
    esgd_simulation *sim = simulation_new(&cfg, data_dir, &err);
    if (!sim) {
        fprintf(stderr, "esgd-sim: %s\n", err.message);
        return err.status == ESGD_ERR_ARG ? 2 : 1;
    }
    esgd_coordinator *coordinator = simulation_coordinator(sim);
    if (loss_csv) {
        if (!(csv = fopen(loss_csv, "w"))) {
            perror(loss_csv);
            simulation_free(sim);
            return 1;
        }
        report_csv_header(csv);
    }
    /* Rows unsynced, and progress only with a test accuracy: a simulation
     * is rerun rather than resumed, and its rounds are fast. */
    report_rounds report = {.test = simulation_test_set(sim),
                            .eval_limit = eval_limit,
                            .csv = csv,
                            .csv_path = loss_csv,
                            .accuracy = NAN,
                            .test_loss = NAN};

    uint32_t total = job_total_rounds(&cfg), per_epoch = job_rounds_per_epoch(&cfg);
    fprintf(stderr, "esgd-sim: %s %s drop %g, %u agents (%s), batch %u, %u rounds (%u per epoch), d = %u\n",
            cfg.model, sparsify_method_name(cfg.sparsify.method), cfg.sparsify.drop_ratio,
            cfg.agents, partition_kind_name(cfg.partition), cfg.batch, total, per_epoch, job_dimension(&cfg));
    round_times times = {0};
    report_clock_start(&report.clock, coordinator);
    while (!coordinator_done(coordinator)) {
        round_summary summary;
        double opened = monotonic_seconds();
        esgd_status st = simulation_round(sim, &summary, &err);
        round_times_add(&times, monotonic_seconds() - opened);
        if (st != ESGD_OK) {
            fprintf(stderr, "esgd-sim: round %u: %s\n", coordinator_round(coordinator), err.message);
            rc = 1;
            break;
        }
        if (report_round(&report, coordinator, &summary, NULL, &err) != ESGD_OK) {
            fprintf(stderr, "esgd-sim: %s\n", err.message);
            rc = 1;
            break;
        }
    }
    if (csv)
        fclose(csv);
    if (rc == 0 && json)
        report_json(stdout, coordinator, &report, &times, monotonic_seconds() - started);
    round_times_destroy(&times);
    simulation_free(sim);
    return rc;
}
