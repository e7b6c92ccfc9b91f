/* The kinds a job is made of: how the data is cut
 * into shards, how agents sparsify and how update values travel. Only the
 * types live here, so that the job configuration (job.h), and everything
 * that merely names a setting, need not include the modules that implement
 * them: dataset.h, sparsifier.h and codec.h include this header
 * for their own kinds. */
#ifndef ESGD_JOB_TYPES_H
#define ESGD_JOB_TYPES_H

#include <stdint.h>

/* dataset.h: shards_make */
typedef enum partition_kind {
    PARTITION_IID,       /* shuffled, equal-size shards */
    PARTITION_DIRICHLET  /* label-skewed: each class split by Dirichlet(alpha) */
} partition_kind;

/* codec.h: how the values of an update travel */
typedef enum value_format {
    VALUE_FORMAT_F32, /* IEEE 754 binary32, little-endian */
    VALUE_FORMAT_F16  /* IEEE 754 binary16, little-endian, round to nearest even */
} value_format;

/* job.h: the learning rate over the rounds (job_lr_at_round) */
typedef enum lr_schedule_kind {
    LR_SCHEDULE_STEP,     /* lr * lr_decay^epoch (the default) */
    LR_SCHEDULE_CONSTANT, /* lr every round */
    LR_SCHEDULE_COSINE    /* lr * (1 + cos(pi t / T)) / 2, t and T counted after the warm-up */
} lr_schedule_kind;

/* sparsifier.h: what an agent sends each round, and the method's options */
typedef enum sparsify_method {
    SPARSIFY_DENSE,     /* every coordinate, every round */
    SPARSIFY_THRESHOLD, /* |g + r| > threshold, rest kept as residual r */
    SPARSIFY_ESGD,      /* importance updating + momentum residual (the spec) */
    SPARSIFY_TOPK,      /* k largest |g + r|, rest kept as residual */
    SPARSIFY_RANDK,     /* k uniformly random coordinates, no residual */
    SPARSIFY_DGC        /* Deep Gradient Compression (Lin et al., ICLR 2018): local
                         * momentum u = m u + clip(g), accumulation v += u, k largest
                         * |v| sent, u and v zeroed where sent, warm-up of k */
} sparsify_method;

typedef enum esgd_loss_signal {
    ESGD_LOSS_SIGNAL_GLOBAL, /* L_t < L_{t-1} from the coordinator */
    ESGD_LOSS_SIGNAL_LOCAL   /* this agent's l_i(x_t) < l_i(x_{t-1}) */
} esgd_loss_signal;

typedef enum esgd_h_increment {
    ESGD_H_INCREMENT_ONE,    /* H[j] += 1 */
    ESGD_H_INCREMENT_ABSGRAD /* H[j] += |g[j]| */
} esgd_h_increment;

typedef enum esgd_value_mode {
    ESGD_VALUE_GRAD,               /* selected j sends g[j] (paper) */
    ESGD_VALUE_GRAD_PLUS_RESIDUAL  /* selected j sends g[j] + r[j] */
} esgd_value_mode;

typedef enum esgd_tau_mode {
    ESGD_TAU_MEAN_ABS, /* tau = mean |g| each round */
    ESGD_TAU_FIXED     /* tau = config.tau */
} esgd_tau_mode;

/* Defaults: SPARSIFIER_CONFIG_DEFAULT in sparsifier.h. */
typedef struct sparsifier_config {
    sparsify_method method;
    double drop_ratio;          /* k = ceil((1 - drop_ratio) * d), 0 <= drop < 1 */
    float threshold;            /* threshold SGD: fixed |g| threshold */
    esgd_loss_signal loss_signal;
    esgd_h_increment h_increment;
    float eps;                  /* sampling weight H[j] + eps, eps > 0 */
    float beta;                 /* residual decay, 0..1 */
    esgd_value_mode value_mode;
    esgd_tau_mode tau_mode;
    float tau;                  /* used when tau_mode == ESGD_TAU_FIXED */
    float dgc_momentum;         /* DGC: local momentum m, 0 <= m < 1 */
    float dgc_clip;             /* DGC: bound on this agent's ||g||_2, 0 = no clipping */
    uint32_t dgc_warmup_rounds; /* DGC: rounds over which drop ramps from 0.75 to drop_ratio */
    uint64_t seed;
} sparsifier_config;

#endif
