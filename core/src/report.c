/* The progress line, CSV row and result object shared by the simulator and
 * the MQTT coordinator, so both report the same numbers the same way. */
#include "esgd/report.h"

#include <cblas.h>
#include <math.h>

#include "esgd/runtime.h"
#include "esgd/state_file.h"

double report_mean_tail(const float *values, uint32_t n, uint32_t tail)
{
    uint32_t from = n > tail ? n - tail : 0, used = 0;
    double sum = 0;
    for (uint32_t i = from; i < n; i++) {
        if (isnan(values[i]))
            continue;
        sum += values[i];
        used++;
    }
    return used ? sum / used : NAN;
}

void report_clock_start(report_clock *clock, const esgd_coordinator *c)
{
    clock->started = monotonic_seconds();
    clock->first_round = coordinator_round(c);
}

/* h:mm:ss, or m:ss under an hour. */
static void print_duration(FILE *out, double seconds)
{
    unsigned long s = seconds > 0 && seconds < 1e9 ? (unsigned long)(seconds + 0.5) : 0;
    if (s >= 3600)
        fprintf(out, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
    else
        fprintf(out, "%lu:%02lu", s / 60, s % 60);
}

void report_progress(FILE *out, const esgd_coordinator *c, const round_summary *s, float accuracy,
                     const report_clock *clock)
{
    const esgd_job_config *cfg = coordinator_config(c);
    const coordinator_counters *k = coordinator_get_counters(c);
    uint32_t done = s->round + 1, total = job_total_rounds(cfg);
    fprintf(out, "round %u/%u epoch %.2f participants %u loss %.4f", done, total,
            (double)done / job_rounds_per_epoch(cfg), s->result.participants, s->result.loss);
    if (!isnan(accuracy))
        fprintf(out, " test_accuracy %.4f", accuracy);
    fprintf(out, " up %.2f MB down %.2f MB", (double)k->uplink_bytes / 1e6, (double)k->downlink_bytes / 1e6);
    double elapsed = monotonic_seconds() - clock->started;
    double rate = done > clock->first_round && elapsed > 0 ? (done - clock->first_round) / elapsed : 0;
    fprintf(out, " elapsed ");
    print_duration(out, elapsed);
    fprintf(out, " %.1f rounds/s eta ", rate);
    if (rate > 0)
        print_duration(out, (total - done) / rate);
    else
        fprintf(out, "?");
    fprintf(out, "\n");
}

void report_csv_header(FILE *out)
{
    fprintf(out,
            "round,loss,participants,lr,test_accuracy,test_images,uplink_bytes,downlink_bytes,retained_bytes\n");
}

void report_csv_row(FILE *out, const esgd_coordinator *c, const round_summary *s, float accuracy,
                    uint32_t test_images)
{
    const coordinator_counters *k = coordinator_get_counters(c);
    fprintf(out, "%u,%.6f,%u,%g,", s->round + 1, s->result.loss, s->result.participants, s->lr);
    if (test_images)
        fprintf(out, "%.4f,%u", accuracy, test_images);
    else
        fprintf(out, ",");
    fprintf(out, ",%llu,%llu,%llu\n", (unsigned long long)k->uplink_bytes, (unsigned long long)k->downlink_bytes,
            (unsigned long long)k->retained_bytes);
}

/* JSON has no NaN: a value that was never measured is null. */
static void json_real(FILE *out, const char *key, double value, int digits)
{
    if (isfinite(value))
        fprintf(out, ", \"%s\": %.*f", key, digits, value);
    else
        fprintf(out, ", \"%s\": null", key);
}

void report_json(FILE *out, const esgd_coordinator *c, float test_accuracy, float test_loss, round_times *times,
                 double seconds)
{
    const esgd_job_config *cfg = coordinator_config(c);
    const coordinator_counters *k = coordinator_get_counters(c);
    uint32_t rounds = coordinator_round(c);
    uint64_t dense = k->accepted * job_dimension(cfg) * 4ull;
    uint64_t rejected = 0;
    for (int i = 0; i < ESGD_STATUS_COUNT; i++)
        rejected += k->rejected[i];
    fprintf(out,
            "{\"method\": \"%s\", \"drop\": %g, \"model\": \"%s\", \"agents\": %u, \"partition\": \"%s\", "
            "\"epochs\": %u, \"rounds\": %u, \"batch\": %u, \"lr\": %g, \"seed\": %llu, \"values\": \"%s\"",
            sparsify_method_name(cfg->sparsify.method), cfg->sparsify.drop_ratio, model_kind_name(cfg->model),
            cfg->agents, partition_kind_name(cfg->partition), cfg->rounds ? 0 : cfg->epochs, rounds, cfg->batch,
            cfg->lr, (unsigned long long)cfg->seed, value_format_name(cfg->values));
    json_real(out, "test_accuracy", test_accuracy, 4);
    json_real(out, "test_loss", test_loss, 4);
    json_real(out, "final_loss", report_mean_tail(coordinator_loss_history(c), rounds, 100), 4);
    fprintf(out,
            ", \"uplink_bytes\": %llu, \"dense_uplink_bytes\": %llu, \"compression\": %.2f, "
            "\"downlink_bytes\": %llu, \"broadcast_bytes\": %llu, \"retained_model_bytes\": %llu, "
            "\"accepted\": %llu, \"late\": %llu, "
            "\"duplicate\": %llu, \"conflicting\": %llu, \"early\": %llu, \"rejected\": %llu, \"clipped\": %llu, "
            "\"dropped_nonfinite\": %llu, \"rejected_bytes\": %llu, \"unused_uplink_bytes\": %llu, "
            "\"model_fnv1a64\": \"%016llx\"",
            (unsigned long long)k->uplink_bytes, (unsigned long long)dense,
            (double)dense / (double)(k->uplink_bytes ? k->uplink_bytes : 1), (unsigned long long)k->downlink_bytes,
            (unsigned long long)k->broadcast_bytes, (unsigned long long)k->retained_bytes,
            (unsigned long long)k->accepted, (unsigned long long)k->late,
            (unsigned long long)k->duplicate, (unsigned long long)k->conflicting, (unsigned long long)k->early, (unsigned long long)rejected,
            (unsigned long long)k->clipped, (unsigned long long)k->dropped_nonfinite,
            (unsigned long long)k->rejected_bytes, (unsigned long long)k->unused_uplink_bytes,
            (unsigned long long)state_checksum(coordinator_params(c), (size_t)job_dimension(cfg) * sizeof(float)));
    /* One flat key per rejection reason, so a line-oriented reader finds it. */
    for (int i = 1; i < ESGD_STATUS_COUNT; i++)
        fprintf(out, ", \"rejected_%s\": %llu", esgd_status_name((esgd_status)i), (unsigned long long)k->rejected[i]);
    if (times) {
        json_real(out, "round_seconds_median", round_times_quantile(times, 0.5), 6);
        json_real(out, "round_seconds_p90", round_times_quantile(times, 0.9), 6);
    }
    /* The OpenBLAS kernel decides the float results, so model fingerprints
     * compare only between runs on the same one. */
    fprintf(out, ", \"blas_core\": \"%s\", \"seconds\": %.2f}\n", openblas_get_corename(), seconds);
}
