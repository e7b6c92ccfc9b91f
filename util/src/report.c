/* The progress line, CSV row and result object shared by the simulator and
 * the MQTT coordinator, and the order they come in after a round, so both
 * report the same numbers the same way. */
#include "esgd/report.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "esgd/fingerprint.h"
#include "esgd/json_writer.h"
#include "esgd/log.h"
#include "esgd/runtime.h"

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
            "round,loss,participants,lr,test_accuracy,test_images,uplink_bytes,downlink_bytes,retained_bytes,"
            "sync_bytes,published_bytes\n");
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
    fprintf(out, ",%llu,%llu,%llu,%llu,%llu\n", (unsigned long long)k->uplink_bytes,
            (unsigned long long)k->downlink_bytes, (unsigned long long)k->retained_bytes,
            (unsigned long long)k->sync_bytes, (unsigned long long)k->published_bytes);
}

esgd_status report_csv_cut(const char *path, uint32_t rounds, esgd_error *err)
{
    FILE *in = fopen(path, "r");
    if (!in)
        return errno == ENOENT ? ESGD_OK
                               : esgd_error_set(err, ESGD_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.cut", path);
    FILE *out = NULL;
    char *line = NULL;
    size_t cap = 0;
    long kept_end = 0; /* file offset after the last line kept */
    bool header = true, cut = false;
    esgd_status st = ESGD_OK;
    while (getline(&line, &cap, in) > 0) {
        char *end;
        unsigned long round = strtoul(line, &end, 10);
        /* A row without its newline was cut short by the kill. */
        bool partial = line[strlen(line) - 1] != '\n';
        if (!header && (partial || (end != line && *end == ',' && round > rounds))) {
            cut = true;
            break;
        }
        header = false;
        kept_end = ftell(in);
    }
    if (cut) {
        /* Copy what is kept, then replace the file in one rename. */
        rewind(in);
        if (!(out = fopen(tmp, "w"))) {
            st = esgd_error_set(err, ESGD_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        } else {
            char block[8192];
            long left = kept_end;
            while (st == ESGD_OK && left > 0) {
                size_t want = left < (long)sizeof block ? (size_t)left : sizeof block;
                size_t got = fread(block, 1, want, in);
                if (got == 0 || fwrite(block, 1, got, out) != got)
                    st = esgd_error_set(err, ESGD_ERR_IO, "cannot copy %s to %s", path, tmp);
                left -= (long)got;
            }
            if (fflush(out) != 0 || fsync(fileno(out)) != 0)
                st = esgd_error_set(err, ESGD_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
            fclose(out);
            if (st == ESGD_OK && rename(tmp, path) != 0)
                st = esgd_error_set(err, ESGD_ERR_IO, "cannot replace %s: %s", path, strerror(errno));
            if (st != ESGD_OK)
                remove(tmp);
        }
    }
    free(line);
    fclose(in);
    return st;
}

/* A full disk or a lost mount fails every row: one line a minute says so. */
static log_limiter csv_sync_log = LOG_LIMITER(60);

esgd_status report_round(report_rounds *r, esgd_coordinator *c, const round_summary *s,
                         const report_round_steps *steps, esgd_error *err)
{
    esgd_status st = coordinator_evaluate_round(c, r->test, s, r->eval_limit, &r->accuracy, &r->test_loss,
                                                &r->test_images, err);
    if (st != ESGD_OK) {
        esgd_error_prefix(err, "evaluation");
        return st;
    }
    if (steps && steps->after_evaluation && (st = steps->after_evaluation(steps->ctx, s, err)) != ESGD_OK)
        return st;
    float accuracy = r->test_images ? r->accuracy : NAN;
    if (r->csv) {
        report_csv_row(r->csv, c, s, accuracy, r->test_images);
        if (r->csv_sync && (fflush(r->csv) != 0 || fsync(fileno(r->csv)) != 0))
            log_warn_limited(&csv_sync_log, "cannot write %s: %s", r->csv_path, strerror(errno));
    }
    if (steps && steps->after_row && (st = steps->after_row(steps->ctx, s, err)) != ESGD_OK)
        return st;
    if (r->test_images || r->progress_every_round)
        report_progress(stderr, c, s, accuracy, &r->clock);
    return ESGD_OK;
}

void report_json(FILE *out, const esgd_coordinator *c, const report_rounds *r, round_times *times, double seconds)
{
    const esgd_job_config *cfg = coordinator_config(c);
    const coordinator_counters *k = coordinator_get_counters(c);
    uint32_t rounds = coordinator_round(c);
    uint64_t dense = k->accepted * job_dimension(cfg) * 4ull;
    uint64_t rejected = 0;
    for (int i = 0; i < ESGD_STATUS_COUNT; i++)
        rejected += k->rejected[i];
    json_writer w;
    json_writer_init(&w, out);
    json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
    json_writer_string(&w, "method", sparsify_method_name(cfg->sparsify.method));
    json_writer_real(&w, "drop", cfg->sparsify.drop_ratio);
    json_writer_string(&w, "model", cfg->model);
    json_writer_string(&w, "input", cfg->input);
    json_writer_uint(&w, "classes", cfg->classes);
    json_writer_uint(&w, "agents", cfg->agents);
    json_writer_string(&w, "partition", partition_kind_name(cfg->partition));
    json_writer_uint(&w, "epochs", cfg->rounds ? 0 : cfg->epochs);
    json_writer_uint(&w, "rounds", rounds);
    json_writer_uint(&w, "batch", cfg->batch);
    json_writer_real(&w, "lr", cfg->lr);
    json_writer_string(&w, "lr_schedule", lr_schedule_name(cfg->lr_schedule));
    json_writer_uint(&w, "warmup_rounds", cfg->warmup_rounds);
    json_writer_uint(&w, "seed", cfg->seed);
    json_writer_string(&w, "values", value_format_name(cfg->values));
    /* A value that was never measured (NaN) is null. */
    json_writer_fixed(&w, "test_accuracy", r->accuracy, 4);
    json_writer_fixed(&w, "test_loss", r->test_loss, 4);
    json_writer_uint(&w, "test_images", r->test_images);
    if (r->test_images) /* the accuracy is hits / images in float: exact to far below half a hit */
        json_writer_uint(&w, "test_correct", (uint64_t)lround((double)r->accuracy * r->test_images));
    else
        json_writer_null(&w, "test_correct");
    json_writer_fixed(&w, "final_loss", report_mean_tail(coordinator_loss_history(c), rounds, 100), 4);
    json_writer_uint(&w, "uplink_bytes", k->uplink_bytes);
    json_writer_uint(&w, "dense_uplink_bytes", dense);
    json_writer_fixed(&w, "compression", (double)dense / (double)(k->uplink_bytes ? k->uplink_bytes : 1), 2);
    json_writer_uint(&w, "downlink_bytes", k->downlink_bytes);
    json_writer_uint(&w, "broadcast_bytes", k->broadcast_bytes);
    json_writer_uint(&w, "retained_model_bytes", k->retained_bytes);
    json_writer_uint(&w, "sync_model_bytes", k->sync_bytes);
    json_writer_uint(&w, "published_bytes", k->published_bytes);
    json_writer_uint(&w, "accepted", k->accepted);
    json_writer_uint(&w, "late", k->late);
    json_writer_uint(&w, "duplicate", k->duplicate);
    json_writer_uint(&w, "conflicting", k->conflicting);
    json_writer_uint(&w, "data_conflicts", k->data_conflicts);
    json_writer_uint(&w, "rounds_lost", k->rounds_lost);
    json_writer_uint(&w, "early", k->early);
    json_writer_uint(&w, "rejected", rejected);
    json_writer_uint(&w, "clipped", k->clipped);
    json_writer_uint(&w, "dropped_nonfinite", k->dropped_nonfinite);
    json_writer_uint(&w, "rejected_bytes", k->rejected_bytes);
    json_writer_uint(&w, "unused_uplink_bytes", k->unused_uplink_bytes);
    char fingerprint[17];
    snprintf(fingerprint, sizeof fingerprint, "%016llx",
             (unsigned long long)fnv1a64(coordinator_params(c), (size_t)job_dimension(cfg) * sizeof(float)));
    json_writer_string(&w, "model_fnv1a64", fingerprint);
    /* One flat key per rejection reason, so a line-oriented reader finds it. */
    for (int i = 1; i < ESGD_STATUS_COUNT; i++) {
        char key[64];
        snprintf(key, sizeof key, "rejected_%s", esgd_status_name((esgd_status)i));
        json_writer_uint(&w, key, k->rejected[i]);
    }
    if (times) {
        json_writer_fixed(&w, "round_seconds_median", round_times_quantile(times, 0.5), 6);
        json_writer_fixed(&w, "round_seconds_p90", round_times_quantile(times, 0.9), 6);
    }
    /* The OpenBLAS kernel decides the float results, so model fingerprints
     * compare only between runs on the same one. */
    json_writer_string(&w, "blas_core", openblas_get_corename());
    json_writer_fixed(&w, "seconds", seconds, 2);
    json_writer_object_end(&w);
    fputc('\n', out);
}
