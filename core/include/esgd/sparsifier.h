/* Choosing what an agent sends each round: dense, threshold SGD, eSGD (see
 * shared/docs/esgd-algorithm.md, the contract), top-k with error feedback,
 * random-k and Deep Gradient Compression, behind one interface.
 *
 *   sparsifier *s = sparsifier_new(&config, d, agent_id, &err);
 *   each round:  sparsifier_select(s, grad, round, loss_fell, local_loss, &out);
 *
 * All state (H, residual, previous selection, scratch) is allocated by
 * sparsifier_new; sparsifier_select allocates nothing and costs O(d) or
 * O(d log k). out's arrays belong to the sparsifier and stay valid until the
 * next call. */
#ifndef ESGD_SPARSIFIER_H
#define ESGD_SPARSIFIER_H

#include <stdbool.h>
#include <stdint.h>

#include "esgd/error.h"
#include "esgd/job_types.h"
#include "esgd/sparse.h"
#include "esgd/state_file.h"

/* sparsify_method, the eSGD option enums and sparsifier_config: job_types.h. */

/* DGC's defaults for clip and warm-up (see results/dgc.md for how they
 * were chosen on LeNet / MNIST). */
#define SPARSIFIER_CONFIG_DGC_CLIP 2.0f
#define SPARSIFIER_CONFIG_DGC_WARMUP 20

#define SPARSIFIER_CONFIG_DEFAULT                                                               \
    {                                                                                           \
        .method = SPARSIFY_ESGD, .drop_ratio = 0.875, .threshold = 0.01f,                       \
        .loss_signal = ESGD_LOSS_SIGNAL_GLOBAL, .h_increment = ESGD_H_INCREMENT_ONE,            \
        .eps = 1e-3f, .beta = 0.9f, .value_mode = ESGD_VALUE_GRAD,                              \
        .tau_mode = ESGD_TAU_MEAN_ABS, .tau = 0.0f, .dgc_momentum = 0.9f,                       \
        .dgc_clip = SPARSIFIER_CONFIG_DGC_CLIP, .dgc_warmup_rounds = SPARSIFIER_CONFIG_DGC_WARMUP,  \
        .seed = 1                                                                               \
    }

typedef struct sparsifier sparsifier;

/* k for a dimension and drop ratio: ceil((1 - drop) * d), at least 1. */
uint32_t sparsifier_keep_count(uint32_t dim, double drop_ratio);

/* Validates config (ESGD_ERR_ARG with the offending option) and allocates all
 * state. agent_id selects the agent's own random stream. */
sparsifier *sparsifier_new(const sparsifier_config *config, uint32_t dim, uint32_t agent_id, esgd_error *err);
void sparsifier_free(sparsifier *s); /* NULL is a no-op */

/* DGC's warm-up: the drop ratio starts at DGC_WARMUP_DROP and reaches the
 * target after dgc_warmup_rounds rounds, the keep ratio 1 - drop falling
 * geometrically (the paper's 75%, 93.75%, 98.4%, ... per epoch, made
 * smooth): keep_t = 0.25 * (keep / 0.25)^(t / W). No warm-up when the
 * target drop is <= DGC_WARMUP_DROP. */
#define DGC_WARMUP_DROP 0.75

/* k of round `round` for config (DGC's warm-up; the fixed k otherwise). */
uint32_t sparsifier_keep_at(const sparsifier_config *config, uint32_t dim, uint32_t round);

/* The most entries config's method may send in any round, so the most an
 * update of that job can hold: k, DGC's k of round 0 (its warm-up only
 * narrows k), or d for dense/threshold. The coordinator sizes its buffers
 * with it. */
uint32_t sparsifier_max_count(const sparsifier_config *config, uint32_t dim);

/* Largest count sparsifier_select can return: sparsifier_max_count of the
 * sparsifier's config and dim. */
uint32_t sparsifier_capacity(const sparsifier *s);

/* One round. grad: (dim) this round's gradient g. loss_fell: the global
 * signal (L_t < L_{t-1}) the coordinator sent with the model; local_loss:
 * this agent's minibatch loss, used when loss_signal is LOCAL. Writes the
 * entries to send, indices ascending, into *out. */
esgd_status sparsifier_select(sparsifier *s, const float *grad, uint32_t round, bool loss_fell, float local_loss,
                              sparse_vector *out, esgd_error *err);

/* Read access to the state, for tests and persistence (NULL if the method
 * has no such state): H (dim), residual (dim; DGC's accumulation v),
 * momentum (dim; DGC's u). */
const float *sparsifier_importance(const sparsifier *s);
const float *sparsifier_residual(const sparsifier *s);
const float *sparsifier_momentum(const sparsifier *s);

/* Everything that carries from one round to the next (H, residual, previous
 * selection and round, previous local loss, random streams), so a restarted
 * agent continues exactly. load checks the method and dimension and changes
 * nothing unless the whole state reads back. */
void sparsifier_save_state(const sparsifier *s, state_writer *w);
esgd_status sparsifier_load_state(sparsifier *s, state_reader *r, esgd_error *err);

#endif
