/* esgd-sim: N agents and the coordinator in one process, exchanging the same
 * encoded messages the MQTT programs exchange, so accuracy and byte counts
 * are those of a real deployment minus the network. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "esgd/job.h"
#include "esgd/simulation.h"

typedef struct sim_options {
    const char *data_dir;
    const char *loss_csv; /* per-round CSV, optional */
    int json;
    uint32_t eval_limit;  /* test examples per periodic evaluation, 0 = all */
} sim_options;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: esgd-sim [--data DIR] [--json] [--loss-csv FILE] [--eval-limit N] [job options]\n"
            "Runs N eSGD agents and the coordinator in one process on MNIST-format IDX data.\n\n"
            "  --data DIR        directory with {train,t10k}-{images-idx3,labels-idx1}-ubyte [data/mnist]\n"
            "  --json            print one JSON object with the results on stdout\n"
            "  --loss-csv FILE   write round,loss,participants,uplink_bytes,downlink_bytes per round\n"
            "  --eval-limit N    test examples for the per-epoch evaluation (final one uses all) [0 = all]\n"
            "job options (also from the environment as ESGD_<NAME>):\n");
    job_config_print_help(out);
    fprintf(out, "\nexit status: 0 done, 1 runtime error (data, training), 2 bad usage\n");
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_args(int argc, char **argv, sim_options *opt, esgd_job_config *cfg)
{
    esgd_error err = {0};
    if (job_config_from_env(cfg, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-sim: %s\n", err.message);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(arg, "--json") == 0) {
            opt->json = 1;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "esgd-sim: expected --option VALUE, got '%s' (see --help)\n", arg);
            return 2;
        }
        const char *value = argv[++i];
        if (strcmp(arg, "--data") == 0) {
            opt->data_dir = value;
        } else if (strcmp(arg, "--loss-csv") == 0) {
            opt->loss_csv = value;
        } else if (strcmp(arg, "--eval-limit") == 0) {
            opt->eval_limit = (uint32_t)strtoul(value, NULL, 10);
        } else if (job_config_set(cfg, arg + 2, value, &err) != ESGD_OK) {
            fprintf(stderr, "esgd-sim: %s\n", err.message);
            return 2;
        }
    }
    return 0;
}

static double mean_tail(const float *values, uint32_t n, uint32_t tail)
{
    if (n == 0)
        return NAN;
    uint32_t from = n > tail ? n - tail : 0;
    double sum = 0;
    for (uint32_t i = from; i < n; i++)
        sum += values[i];
    return sum / (n - from);
}

int main(int argc, char **argv)
{
    sim_options opt = {.data_dir = "data/mnist"};
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    int rc = parse_args(argc, argv, &opt, &cfg);
    if (rc)
        return rc;

    esgd_error err = {0};
    FILE *csv = NULL;
    double started = now_seconds();
    esgd_simulation *sim = simulation_new(&cfg, opt.data_dir, &err);
    if (!sim) {
        fprintf(stderr, "esgd-sim: %s\n", err.message);
        return err.status == ESGD_ERR_ARG ? 2 : 1;
    }
    esgd_coordinator *coordinator = simulation_coordinator(sim);
    if (opt.loss_csv) {
        if (!(csv = fopen(opt.loss_csv, "w"))) {
            perror(opt.loss_csv);
            simulation_free(sim);
            return 1;
        }
        fprintf(csv, "round,loss,participants,uplink_bytes,downlink_bytes\n");
    }

    uint32_t total = job_total_rounds(&cfg), per_epoch = job_rounds_per_epoch(&cfg);
    uint32_t eval_every = cfg.eval_every ? cfg.eval_every : per_epoch;
    const coordinator_counters *counters = coordinator_get_counters(coordinator);
    fprintf(stderr, "esgd-sim: %s %s drop %g, %u agents (%s), batch %u, %u rounds (%u per epoch), d = %u\n",
            model_kind_name(cfg.model), sparsify_method_name(cfg.sparsify.method), cfg.sparsify.drop_ratio,
            cfg.agents, partition_kind_name(cfg.partition), cfg.batch, total, per_epoch, job_dimension(&cfg));
    float accuracy = 0, test_loss = 0;
    while (!coordinator_done(coordinator)) {
        round_summary summary;
        if (simulation_round(sim, &summary, &err) != ESGD_OK) {
            fprintf(stderr, "esgd-sim: round %u: %s\n", coordinator_round(coordinator), err.message);
            rc = 1;
            break;
        }
        if (csv)
            fprintf(csv, "%u,%.6f,%u,%llu,%llu\n", summary.round, summary.result.loss, summary.result.participants,
                    (unsigned long long)counters->uplink_bytes, (unsigned long long)counters->downlink_bytes);
        uint32_t done_rounds = summary.round + 1;
        if (done_rounds % eval_every == 0 || done_rounds == total) {
            uint32_t limit = done_rounds == total ? 0 : opt.eval_limit;
            if (coordinator_evaluate(coordinator, simulation_test_set(sim), limit, &accuracy, &test_loss, &err) != ESGD_OK) {
                fprintf(stderr, "esgd-sim: evaluation: %s\n", err.message);
                rc = 1;
                break;
            }
            fprintf(stderr,
                    "epoch %.2f round %u loss %.4f test_accuracy %.4f test_loss %.4f uplink %.2f MB downlink "
                    "%.2f MB\n",
                    (double)done_rounds / per_epoch, done_rounds,
                    mean_tail(coordinator_loss_history(coordinator), done_rounds, 100), accuracy, test_loss,
                    counters->uplink_bytes / 1e6, counters->downlink_bytes / 1e6);
        }
    }
    /* The final model goes out with done = 1, as over MQTT. */
    if (rc == 0 && simulation_finish(sim, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-sim: final broadcast: %s\n", err.message);
        rc = 1;
    }
    double seconds = now_seconds() - started;
    if (csv)
        fclose(csv);

    if (rc == 0 && opt.json) {
        uint64_t dense = (uint64_t)total * cfg.agents * job_dimension(&cfg) * 4;
        printf("{\"method\": \"%s\", \"drop\": %g, \"model\": \"%s\", \"agents\": %u, \"partition\": \"%s\", "
               "\"epochs\": %u, \"rounds\": %u, \"batch\": %u, \"lr\": %g, \"seed\": %llu, \"values\": \"%s\", "
               "\"test_accuracy\": %.4f, \"test_loss\": %.4f, \"final_loss\": %.4f, "
               "\"uplink_bytes\": %llu, \"dense_uplink_bytes\": %llu, \"compression\": %.2f, "
               "\"downlink_bytes\": %llu, \"seconds\": %.2f}\n",
               sparsify_method_name(cfg.sparsify.method), cfg.sparsify.drop_ratio, model_kind_name(cfg.model),
               cfg.agents, partition_kind_name(cfg.partition), cfg.rounds ? 0 : cfg.epochs, total, cfg.batch,
               cfg.lr, (unsigned long long)cfg.seed, value_format_name(cfg.values), accuracy, test_loss,
               mean_tail(coordinator_loss_history(coordinator), total, 100),
               (unsigned long long)counters->uplink_bytes, (unsigned long long)dense,
               (double)dense / (double)(counters->uplink_bytes ? counters->uplink_bytes : 1),
               (unsigned long long)counters->downlink_bytes, seconds);
    }
    simulation_free(sim);
    return rc;
}
