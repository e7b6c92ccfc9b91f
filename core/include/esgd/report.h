/* What a run reports, in one format for esgd-sim and esgd-coordinator: the
 * progress line, the per-round CSV and the final JSON object. */
#ifndef ESGD_REPORT_H
#define ESGD_REPORT_H

#include <stdio.h>

#include "esgd/coordinator.h"
#include "esgd/round_times.h"

/* Mean of the last `tail` values of values[0..n) (NaN values skipped; NaN if none). */
double report_mean_tail(const float *values, uint32_t n, uint32_t tail);

/* "round 120/3750 epoch 0.06 participants 4 loss 0.8123 [test_accuracy 0.9012] up 1.23 MB down 4.56 MB".
 * accuracy NaN: not evaluated this round. */
void report_progress(FILE *out, const esgd_coordinator *c, const round_summary *s, float accuracy);

void report_csv_header(FILE *out);
/* round,loss,participants,lr,test_accuracy,uplink_bytes,downlink_bytes (accuracy empty when NaN). */
void report_csv_row(FILE *out, const esgd_coordinator *c, const round_summary *s, float accuracy);

/* One JSON object and a newline: method, drop, model, agents, partition,
 * epochs, rounds, batch, lr, seed, values, test_accuracy, test_loss,
 * final_loss (mean L_t of the last 100 rounds), uplink_bytes,
 * dense_uplink_bytes (accepted updates x 4d), compression, downlink_bytes,
 * broadcast_bytes (model messages published once each), accepted, late,
 * duplicate, early, rejected (updates refused for any reason), clipped,
 * model_fnv1a64 (FNV-1a 64 of the final parameters' bytes: equal runs have
 * equal models), rejected_<reason> for every status name,
 * round_seconds_median and round_seconds_p90 (when times is not NULL: from
 * opening a round to closing it), seconds. */
void report_json(FILE *out, const esgd_coordinator *c, float test_accuracy, float test_loss, round_times *times,
                 double seconds);

#endif
