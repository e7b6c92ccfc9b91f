/* What a run reports, in one format for esgd-sim and esgd-coordinator: the
 * progress line, the per-round CSV and the final JSON object, and the
 * after-round sequence of evaluation, CSV row and progress line that both
 * programs run (report_round). */
#ifndef ESGD_REPORT_H
#define ESGD_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "esgd/coordinator.h"
#include "esgd/dataset.h"
#include "esgd/round_times.h"

/* Mean of the last `tail` values of values[0..n) (NaN values skipped; NaN if none). */
double report_mean_tail(const float *values, uint32_t n, uint32_t tail);

/* Rounds are numbered from 1 in every report (progress, CSV, plot,
 * metrics): "round 120" is the 120th round closed, whose messages carry the
 * wire round number 119. Every report of a round is written after the model
 * that round produced has been published, so its byte counters include that
 * model, and those of the last round equal the final JSON's. */

/* When this process started the job, for the rate and the time left. */
typedef struct report_clock {
    double started;       /* monotonic seconds */
    uint32_t first_round; /* rounds already closed then (a restored checkpoint) */
} report_clock;

void report_clock_start(report_clock *clock, const esgd_coordinator *c);

/* "round 120/3750 epoch 0.06 participants 4 loss 0.8123 [test_accuracy 0.9012] up 1.23 MB down 4.56 MB
 * elapsed 0:12 9.8 rounds/s eta 6:10". accuracy NaN: not evaluated this round. */
void report_progress(FILE *out, const esgd_coordinator *c, const round_summary *s, float accuracy,
                     const report_clock *clock);

void report_csv_header(FILE *out);
/* round,loss,participants,lr,test_accuracy,test_images,uplink_bytes,downlink_bytes,retained_bytes
 * (accuracy and test_images empty when the round was not evaluated). */
void report_csv_row(FILE *out, const esgd_coordinator *c, const round_summary *s, float accuracy,
                    uint32_t test_images);
/* Cuts the CSV at `path` back to its header and the rows of rounds 1..rounds
 * (a resume runs the later ones again); rewrites it only when something is
 * cut. A missing file is fine. */
esgd_status report_csv_cut(const char *path, uint32_t rounds, esgd_error *err);

/* What a program reports after each round, and how. */
typedef struct report_rounds {
    const esgd_dataset *test;  /* the test set evaluation rounds use */
    uint32_t eval_limit;       /* its examples per periodic evaluation (0: all; the last round uses all) */
    FILE *csv;                 /* NULL: no CSV */
    const char *csv_path;      /* names the CSV when a row cannot be synced */
    bool csv_sync;             /* flush and fsync every row (a kill leaves each row whole on disk) */
    bool progress_every_round; /* else the progress line only after evaluated rounds */
    report_clock clock;        /* report_clock_start before the first round */
    float accuracy, test_loss; /* of the last evaluation; set them to NaN before the first */
    uint32_t test_images;      /* examples the last reported round was evaluated on, 0 if none */
} report_rounds;

/* A program's own step between two of report_round's: ESGD_OK to go on,
 * else a status and err's message (the report stops there). */
typedef esgd_status (*report_step)(void *ctx, const round_summary *s, esgd_error *err);

typedef struct report_round_steps {
    report_step after_evaluation; /* NULL: none. The coordinator encodes the next model here, so
                                   * that the row's byte counts include it */
    report_step after_row;        /* NULL: none. The coordinator checkpoints and publishes here:
                                   * the row is on disk before the checkpoint, and the progress
                                   * line comes once the round's model is out */
    void *ctx;
} report_round_steps;

/* After round s closed, in this order: evaluates the model on r->test when
 * s is an evaluation round (job_is_eval_round), into r->accuracy,
 * r->test_loss and r->test_images; runs steps->after_evaluation; writes the
 * CSV row (synced if asked; a failed sync is a warning, not an error); runs
 * steps->after_row; prints the progress line on stderr. steps may be NULL.
 * Errors: the evaluation's, its message prefixed "evaluation", or the
 * failing step's. */
esgd_status report_round(report_rounds *r, esgd_coordinator *c, const round_summary *s,
                         const report_round_steps *steps, esgd_error *err);

/* One JSON object and a newline: method, drop, model, agents, partition,
 * epochs, rounds, batch, lr, seed, values, test_accuracy, test_loss (r's
 * last evaluation), test_images and test_correct (its examples and hits:
 * the accuracy exactly, whatever the test set's size),
 * final_loss (mean L_t of the last 100 rounds), uplink_bytes (accepted
 * update messages only), dense_uplink_bytes (accepted updates x 4d),
 * compression (dense_uplink_bytes / uplink_bytes), downlink_bytes,
 * broadcast_bytes (model messages published once each),
 * retained_model_bytes (full models published retained), accepted (updates
 * that went into a model), late, duplicate, conflicting (a second, different update under one agent id),
 * data_conflicts (agents announcing one shard or one data set, or one id two),
 * rounds_lost (rounds agents answered, then came back without), early, rejected (updates refused
 * for any reason, at receipt or at close), clipped, dropped_nonfinite (of
 * the rejected, held updates dropped at close because the model would not
 * have been finite), rejected_bytes (bytes of the rejected update messages),
 * unused_uplink_bytes (bytes of the duplicate, late and early ones),
 * model_fnv1a64 (FNV-1a 64 of the final parameters' bytes: equal runs have
 * equal models), rejected_<reason> for every status name,
 * blas_core (the OpenBLAS kernel, which the float results depend on),
 * round_seconds_median and round_seconds_p90 (when times is not NULL: from
 * opening a round to closing it), seconds. */
void report_json(FILE *out, const esgd_coordinator *c, const report_rounds *r, round_times *times, double seconds);

#endif
