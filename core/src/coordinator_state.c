/* The coordinator's checkpoint (coordinator.h): what coordinator_save
 * writes into a state file (state_file.h) and coordinator_restore reads back
 * all or nothing, field by field in the order they were added, so that a
 * checkpoint of an older build still resumes. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "coordinator_impl.h"
#include "esgd/state_file.h"

/* The counters in a fixed order, so the file does not depend on struct layout. */
static const size_t counter_offsets[] = {
    offsetof(coordinator_counters, accepted),        offsetof(coordinator_counters, duplicate),
    offsetof(coordinator_counters, late),            offsetof(coordinator_counters, early),
    offsetof(coordinator_counters, uplink_bytes),    offsetof(coordinator_counters, accepted_uplink_bytes),
    offsetof(coordinator_counters, broadcast_bytes), offsetof(coordinator_counters, downlink_bytes),
    offsetof(coordinator_counters, clipped),         offsetof(coordinator_counters, retained_bytes),
    /* added later: older checkpoints end before these */
    offsetof(coordinator_counters, rejected_bytes),  offsetof(coordinator_counters, unused_uplink_bytes),
    offsetof(coordinator_counters, dropped_nonfinite), offsetof(coordinator_counters, conflicting),
    offsetof(coordinator_counters, data_conflicts),  offsetof(coordinator_counters, rounds_lost),
    offsetof(coordinator_counters, sync_bytes),      offsetof(coordinator_counters, published_bytes),
};
/* Checkpoints with this many counters or fewer counted every update message in uplink_bytes. */
#define COUNTERS_BEFORE_BYTE_SPLIT 10
#define COUNTER_COUNT (sizeof counter_offsets / sizeof counter_offsets[0])

static uint64_t *counter_at(coordinator_counters *k, size_t i)
{
    return (uint64_t *)((char *)k + counter_offsets[i]);
}

esgd_status coordinator_save(esgd_coordinator *c, const char *path, esgd_error *err)
{
    /* The configuration as its unsigned body: a checkpoint outlives a key. */
    esgd_status st = codec_encode_config(&c->out, &c->cfg, err);
    if (st != ESGD_OK)
        return st;
    const uint8_t *config = c->out.data;
    size_t config_size = c->out.size;
    state_writer w;
    state_writer_init(&w);
    state_put_bytes(&w, config, config_size);
    state_put_u32(&w, c->round);
    state_put_bytes(&w, c->loss_history, (size_t)c->round * sizeof(float));
    state_put_u32(&w, (uint32_t)COUNTER_COUNT);
    for (size_t i = 0; i < COUNTER_COUNT; i++)
        state_put_u64(&w, *counter_at(&c->counters, i));
    state_put_u32(&w, ESGD_STATUS_COUNT);
    for (int i = 0; i < ESGD_STATUS_COUNT; i++)
        state_put_u64(&w, c->counters.rejected[i]);
    state_put_bytes(&w, c->model->params, (size_t)c->dim * sizeof(float));
    /* Added later, so it comes last: the norm history, oldest first. */
    state_put_u32(&w, c->norm_count);
    for (uint32_t i = 0; i < c->norm_count; i++)
        state_put_f64(&w, c->norm_history[(c->norm_next + NORM_BOUND_WINDOW - c->norm_count + i) % NORM_BOUND_WINDOW]);
    state_put_u32(&w, c->generation); /* added later still */
    /* And the compressed downlink's residual (empty without one): the part
     * of past steps the model has not taken yet. */
    const float *residual = aggregator_downlink_residual(c->agg);
    state_put_bytes(&w, residual, residual ? (size_t)c->dim * sizeof(float) : 0);
    st = state_file_write(path, STATE_KIND_COORDINATOR, &w, err);
    state_writer_destroy(&w);
    return st;
}

esgd_status coordinator_restore(esgd_coordinator *c, const char *path, esgd_error *err)
{
    state_reader r;
    esgd_status st = state_file_read(path, STATE_KIND_COORDINATOR, &r, err);
    if (st != ESGD_OK)
        return st;
    const uint8_t *saved_config = NULL;
    size_t saved_size = 0;
    uint32_t round = 0, counter_count = 0, status_count = 0;
    uint64_t own_run = c->cfg.run;
    esgd_job_config saved;
    coordinator_counters counters;
    memset(&counters, 0, sizeof counters);
    if ((st = state_get_bytes(&r, &saved_config, &saved_size, err)) != ESGD_OK)
        goto out;
    /* A resume continues the checkpoint's run: every other setting must be
     * the same, the run id is taken from it. */
    if ((st = codec_decode_config(c->decoder, saved_config, saved_size, &saved, err)) != ESGD_OK) {
        esgd_error_prefix(err, "checkpoint %s: its job configuration", path);
        goto out;
    }
    c->cfg.run = saved.run;
    if ((st = codec_encode_config(&c->out, &c->cfg, err)) != ESGD_OK)
        goto out;
    if (saved_size != c->out.size || memcmp(saved_config, c->out.data, saved_size) != 0) {
        st = esgd_error_set(err, ESGD_ERR_MISMATCH,
                            "checkpoint %s was written for another job configuration (remove it or use the same "
                            "settings)", path);
        goto out;
    }
    if ((st = state_get_u32(&r, &round, err)) != ESGD_OK)
        goto out;
    if (round > c->total_rounds) {
        st = esgd_error_set(err, ESGD_ERR_RANGE, "checkpoint %s: round %u beyond the job's %u", path, round,
                            c->total_rounds);
        goto out;
    }
    /* Read everything into temporaries first: a damaged file must leave the
     * coordinator as it was. */
    const uint8_t *losses = NULL, *params = NULL;
    size_t losses_size = 0, params_size = 0;
    if ((st = state_get_bytes(&r, &losses, &losses_size, err)) != ESGD_OK)
        goto out;
    if (losses_size != (size_t)round * sizeof(float)) {
        st = esgd_error_set(err, ESGD_ERR_DIMENSION, "checkpoint %s: loss history does not match round %u", path,
                            round);
        goto out;
    }
    if ((st = state_get_u32(&r, &counter_count, err)) != ESGD_OK)
        goto out;
    /* Counters added later come last: an older checkpoint has fewer, and
     * the missing ones start at zero. */
    if (counter_count > COUNTER_COUNT) {
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "checkpoint %s: %u counters, at most %zu expected", path,
                            counter_count, COUNTER_COUNT);
        goto out;
    }
    for (size_t i = 0; i < counter_count && st == ESGD_OK; i++)
        st = state_get_u64(&r, counter_at(&counters, i), err);
    if (st == ESGD_OK)
        st = state_get_u32(&r, &status_count, err);
    /* Reasons added later come last, as counters do. */
    if (st == ESGD_OK && status_count > ESGD_STATUS_COUNT)
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "checkpoint %s: %u rejection reasons, at most %d expected", path,
                            status_count, ESGD_STATUS_COUNT);
    for (uint32_t i = 0; i < status_count && st == ESGD_OK; i++)
        st = state_get_u64(&r, &counters.rejected[i], err);
    if (st == ESGD_OK)
        st = state_get_bytes(&r, &params, &params_size, err);
    if (st == ESGD_OK && params_size != (size_t)c->dim * sizeof(float))
        st = esgd_error_set(err, ESGD_ERR_DIMENSION, "checkpoint %s: %zu parameter bytes, model has %u parameters",
                            path, params_size, c->dim);
    /* The norm history; a checkpoint written before it existed ends here,
     * and the relative bound then starts again from the next round's updates. */
    uint32_t norm_count = 0;
    double norms[NORM_BOUND_WINDOW];
    if (st == ESGD_OK && state_reader_left(&r)) {
        st = state_get_u32(&r, &norm_count, err);
        if (st == ESGD_OK && norm_count > NORM_BOUND_WINDOW)
            st = esgd_error_set(err, ESGD_ERR_FORMAT, "checkpoint %s: %u update norms, at most %d expected", path,
                                norm_count, NORM_BOUND_WINDOW);
        for (uint32_t i = 0; i < norm_count && st == ESGD_OK; i++) {
            st = state_get_f64(&r, &norms[i], err);
            if (st == ESGD_OK && !(isfinite(norms[i]) && norms[i] > 0))
                st = esgd_error_set(err, ESGD_ERR_RANGE, "checkpoint %s: update norm %g is not finite and > 0", path,
                                    norms[i]);
        }
    }
    /* The generation; older checkpoints end before it (generation 0). */
    uint32_t generation = 0;
    if (st == ESGD_OK && state_reader_left(&r))
        st = state_get_u32(&r, &generation, err);
    /* The downlink residual; older checkpoints end before it (none held back). */
    float *residual = aggregator_downlink_residual(c->agg);
    const uint8_t *saved_residual = NULL;
    size_t residual_size = 0;
    if (st == ESGD_OK && state_reader_left(&r))
        st = state_get_bytes(&r, &saved_residual, &residual_size, err);
    if (st == ESGD_OK && residual_size != 0 && residual_size != (residual ? (size_t)c->dim * sizeof(float) : 0))
        st = esgd_error_set(err, ESGD_ERR_DIMENSION, "checkpoint %s: a downlink residual of %zu bytes, expected %zu",
                            path, residual_size, residual ? (size_t)c->dim * sizeof(float) : 0);
    for (size_t i = 0; st == ESGD_OK && i < residual_size / sizeof(float); i++) {
        float v;
        memcpy(&v, saved_residual + i * sizeof v, sizeof v);
        if (!isfinite(v))
            st = esgd_error_set(err, ESGD_ERR_NONFINITE, "checkpoint %s: downlink residual %zu is not finite", path, i);
    }
    if (st == ESGD_OK && state_reader_left(&r))
        st = esgd_error_set(err, ESGD_ERR_FORMAT, "checkpoint %s: %zu unexpected bytes after the last field", path,
                            state_reader_left(&r));
    /* A checksum only says the file is what was written: the values must
     * still be a usable model (a round with no update has a NaN loss). */
    for (uint32_t i = 0; st == ESGD_OK && i < c->dim; i++) {
        float v;
        memcpy(&v, params + (size_t)i * sizeof v, sizeof v);
        if (!isfinite(v))
            st = esgd_error_set(err, ESGD_ERR_NONFINITE, "checkpoint %s: parameter %u is not finite", path, i);
    }
    for (uint32_t i = 0; st == ESGD_OK && i < round; i++) {
        float v;
        memcpy(&v, losses + (size_t)i * sizeof v, sizeof v);
        if (isinf(v) || v < 0)
            st = esgd_error_set(err, ESGD_ERR_RANGE, "checkpoint %s: loss of round %u is %g", path, i, (double)v);
    }
    if (st != ESGD_OK)
        goto out;
    memcpy(c->loss_history, losses, losses_size);
    memcpy(c->model->params, params, params_size);
    if (counter_count <= COUNTERS_BEFORE_BYTE_SPLIT && counters.uplink_bytes >= counters.accepted_uplink_bytes) {
        /* Which of the unaccepted bytes were rejected was not recorded. */
        counters.unused_uplink_bytes = counters.uplink_bytes - counters.accepted_uplink_bytes;
        counters.uplink_bytes = counters.accepted_uplink_bytes;
    }
    c->counters = counters;
    memcpy(c->norm_history, norms, (size_t)norm_count * sizeof(double));
    c->norm_count = norm_count;
    c->norm_next = norm_count % NORM_BOUND_WINDOW;
    c->round = round;
    c->generation = generation;
    if (residual) {
        if (residual_size)
            memcpy(residual, saved_residual, residual_size);
        else
            memset(residual, 0, (size_t)c->dim * sizeof(float));
    }
    c->delta_valid = false;
    aggregator_reset(c->agg);
out:
    if (st != ESGD_OK)
        c->cfg.run = own_run;
    state_reader_destroy(&r);
    return st;
}
