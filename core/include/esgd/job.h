/* The job configuration: every training setting that the coordinator, the
 * agents and the simulator must agree on. One table of options drives the
 * command-line flags (--name value), the environment (ESGD_NAME), --help and
 * the config message on the wire, so each setting is declared once. */
#ifndef ESGD_JOB_H
#define ESGD_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "esgd/error.h"
#include "esgd/job_types.h"
#include "esgd/model_spec.h"

#define JOB_NAME_MAX 64
/* down-drop "auto": see job_down_drop. Never on the wire. */
#define JOB_DOWN_DROP_AUTO (-1.0)

typedef struct esgd_job_config {
    char job[JOB_NAME_MAX + 1];  /* [A-Za-z0-9_.-], used in topic names */
    char model[MODEL_SPEC_TEXT_MAX + 1]; /* a preset name or a layer list (model_spec.h) */
    char input[32];              /* one example's shape, "28x28" */
    uint32_t classes;            /* labels 0..classes-1 */
    sparsifier_config sparsify;  /* method, drop ratio, eSGD options, seed */
    double down_drop;            /* compressed downlink: the model changes in ceil((1 - down_drop) d)
                                  * coordinates a round at most (aggregator_set_downlink); 0: off;
                                  * JOB_DOWN_DROP_AUTO: job_down_drop decides */
    uint32_t agents;             /* N, expected agents */
    uint32_t batch;              /* minibatch per agent per round */
    double lr;                   /* learning rate of epoch 0 */
    double lr_decay;             /* lr_e = lr * lr_decay^e (schedule step) */
    lr_schedule_kind lr_schedule; /* step | constant | cosine (job_lr_at_round) */
    uint32_t warmup_rounds;      /* linear warm-up: round t < W takes (t + 1) / W of the schedule */
    uint32_t epochs;             /* length of the job in epochs ... */
    uint32_t rounds;             /* ... or in rounds when non-zero */
    uint64_t seed;               /* model init, partition, sampling */
    partition_kind partition;
    double alpha;                /* Dirichlet concentration for noniid */
    value_format values;         /* encoding of update values */
    uint32_t train_samples;      /* training-set size, sets rounds per epoch */
    uint32_t eval_every;         /* rounds between test evaluations (0: per epoch) */
    uint64_t run;                /* this start of the job: the coordinator's random id, carried by every
                                  * message; not an option (0 until the coordinator has chosen it) */
} esgd_job_config;

typedef enum job_option_type {
    JOB_OPTION_UINT,   /* msgpack positive integer */
    JOB_OPTION_FLOAT,  /* msgpack float 64 */
    JOB_OPTION_STRING  /* msgpack str: free text or one of an enum's names */
} job_option_type;

typedef struct job_option {
    const char *name;     /* flag "--name", env "ESGD_NAME" (upper, '-' -> '_'), msgpack key */
    job_option_type type;
    const char *help;     /* one line for --help, with the allowed values */
} job_option;

void job_config_defaults(esgd_job_config *cfg);

size_t job_option_count(void);
const job_option *job_option_at(size_t i);
const job_option *job_option_find(const char *name);

/* Sets an option from text (flag or env value), checking syntax and range. */
esgd_status job_config_set(esgd_job_config *cfg, const char *name, const char *text, esgd_error *err);
/* Typed access for the codec. Type mismatches return ESGD_ERR_TYPE. */
esgd_status job_config_set_uint(esgd_job_config *cfg, const job_option *opt, uint64_t value, esgd_error *err);
esgd_status job_config_set_float(esgd_job_config *cfg, const job_option *opt, double value, esgd_error *err);
esgd_status job_config_set_string(esgd_job_config *cfg, const job_option *opt, const char *value, size_t len,
                                  esgd_error *err);
uint64_t job_config_get_uint(const esgd_job_config *cfg, const job_option *opt);
double job_config_get_float(const esgd_job_config *cfg, const job_option *opt);
/* The downlink drop in effect: down_drop, or for JOB_DOWN_DROP_AUTO twice
 * the coordinates one agent's update holds, 1 - 2 (1 - drop), and 0 (off)
 * where that is not above 0 or agents send no fixed count (dense,
 * threshold). job_config_get_float reports this value for down-drop, so a
 * configuration message always carries a number. */
double job_down_drop(const esgd_job_config *cfg);
const char *job_config_get_string(const esgd_job_config *cfg, const job_option *opt);

/* Reads ESGD_<NAME> for every option that is set in the environment. */
esgd_status job_config_from_env(esgd_job_config *cfg, esgd_error *err);
/* Checks the combination (agents <= train_samples, batch > 0, ...). */
esgd_status job_config_validate(const esgd_job_config *cfg, esgd_error *err);
/* "--name VALUE  help [default]" for every option. */
void job_config_print_help(FILE *out);

/* The example shape of --input ("28x28" -> {28, 28}, rank 2). */
esgd_status job_input_dims(const esgd_job_config *cfg, uint32_t dims[3], uint32_t *rank, esgd_error *err);
/* The job's network: --model parsed for --input and --classes. */
esgd_status job_model_spec(const esgd_job_config *cfg, model_spec *spec, esgd_error *err);
uint32_t job_dimension(const esgd_job_config *cfg);          /* d of the model, 0 if its spec does not parse */
uint32_t job_rounds_per_epoch(const esgd_job_config *cfg);   /* ceil(train_samples / (agents * batch)) */
uint32_t job_total_rounds(const esgd_job_config *cfg);       /* rounds, or epochs * rounds_per_epoch */
uint32_t job_epoch_of_round(const esgd_job_config *cfg, uint32_t round);
/* The learning rate of `round`, s(t) times the warm-up factor:
 *   step      s(t) = lr * lr_decay^epoch(t)
 *   constant  s(t) = lr
 *   cosine    s(t) = lr * 0.5 * (1 + cos(pi * u / U)), u = t - W (0 while
 *             warming up), U = total rounds - W
 * and for t < W (W = warmup_rounds) the factor (t + 1) / W, else 1. */
double job_lr_at_round(const esgd_job_config *cfg, uint32_t round);
/* True when the test set is evaluated after closing `round`: every
 * eval_every rounds (or at each epoch's end when 0) and after the last. */
bool job_is_eval_round(const esgd_job_config *cfg, uint32_t round);

/* ESGD_OK when name[0..len) is a job name, 1..JOB_NAME_MAX of [A-Za-z0-9_.-]
 * (ASCII whatever the locale; name may be NULL when len is 0); otherwise
 * `status` with that rule as the message. The one check behind --job,
 * job_config_validate and the job field of every wire message. */
esgd_status job_name_check(const char *name, size_t len, esgd_status status, esgd_error *err);

/* Names of enum values, from the same table the options are parsed with
 * (parse them with job_config_set). */
const char *value_format_name(value_format f);       /* "f32", "f16" */
const char *sparsify_method_name(sparsify_method m); /* "dense", "threshold", "esgd", "topk", "randk", "dgc" */
const char *partition_kind_name(partition_kind p);   /* "iid", "noniid" */
const char *lr_schedule_name(lr_schedule_kind s);    /* "step", "constant", "cosine" */
/* The value_format names indexed by value and NULL-terminated: the choices
 * of --values and of an update message's val_fmt. */
extern const char *const value_format_names[];

#endif
