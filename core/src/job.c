/* The job options table and everything derived from it: parsing from flags
 * and the environment, typed access for the codec, validation, --help, and
 * the round/epoch/learning-rate arithmetic. */
#include "esgd/job.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/model_spec.h"
#include "esgd/sparsifier.h" /* SPARSIFIER_CONFIG_DEFAULT */

/* FIELD_TEXT: printable ASCII, 1 to max characters (a model spec). */
typedef enum field_kind { FIELD_U32, FIELD_U64, FIELD_F64, FIELD_F32, FIELD_ENUM, FIELD_NAME, FIELD_TEXT } field_kind;

typedef struct option_entry {
    job_option public;
    field_kind kind;
    size_t offset;
    double min, max;          /* inclusive numeric range */
    const char *const *names; /* FIELD_ENUM: value names, NULL-terminated */
} option_entry;

static const char *const method_names[] = {"dense", "threshold", "esgd", "topk", "randk", "dgc", NULL};
static const char *const signal_names[] = {"global", "local", NULL};
static const char *const hinc_names[] = {"one", "absgrad", NULL};
static const char *const value_mode_names[] = {"grad", "grad+residual", NULL};
static const char *const tau_names[] = {"mean", "fixed", NULL};
static const char *const partition_names[] = {"iid", "noniid", NULL};
static const char *const lr_schedule_names[] = {"step", "constant", "cosine", NULL};
const char *const value_format_names[] = {"f32", "f16", NULL}; /* job.h: also the codec's val_fmt */

#define OFF(field) offsetof(esgd_job_config, field)
#define NUM(n, k, f, lo, hi, h) {{n, (k) == FIELD_F64 || (k) == FIELD_F32 ? JOB_OPTION_FLOAT : JOB_OPTION_UINT, h}, k, OFF(f), lo, hi, NULL}
#define ENUM(n, f, list, h) {{n, JOB_OPTION_STRING, h}, FIELD_ENUM, OFF(f), 0, 0, list}
#define TEXT(n, f, h) {{n, JOB_OPTION_STRING, h}, FIELD_TEXT, OFF(f), 0, sizeof(((esgd_job_config *)0)->f) - 1, NULL}

static const option_entry options[] = {
    {{"job", JOB_OPTION_STRING, "job name, [A-Za-z0-9_.-], used in topics"}, FIELD_NAME, OFF(job), 0, 0, NULL},
    TEXT("model", model, "network: lenet | mlp | a layer list, e.g. \"conv 8 3, relu, maxpool 2, dense 10\""),
    TEXT("input", input, "one example's shape, e.g. 28x28 (image), 3x32x32, 6x128 (conv1d: channels x length), 20"),
    NUM("classes", FIELD_U32, classes, 2, MODEL_SPEC_MAX_CLASSES, "number of classes (labels 0..classes-1)"),
    ENUM("method", sparsify.method, method_names, "what agents send: dense | threshold | esgd | topk | randk | dgc"),
    NUM("drop", FIELD_F64, sparsify.drop_ratio, 0.0, 0.999999, "gradient drop ratio, k = ceil((1-drop) d)"),
    NUM("threshold", FIELD_F32, sparsify.threshold, 0.0, 1e30, "threshold SGD: fixed |g| threshold"),
    ENUM("loss-signal", sparsify.loss_signal, signal_names, "eSGD loss signal: global | local"),
    ENUM("h-increment", sparsify.h_increment, hinc_names, "eSGD importance increment when loss fell: one | absgrad"),
    NUM("eps", FIELD_F32, sparsify.eps, 1e-30, 1e30, "eSGD sampling weight H[j] + eps (> 0)"),
    NUM("beta", FIELD_F32, sparsify.beta, 0.0, 1.0, "eSGD residual decay"),
    ENUM("value-mode", sparsify.value_mode, value_mode_names, "eSGD value of a selected j: grad | grad+residual"),
    ENUM("tau-mode", sparsify.tau_mode, tau_names, "eSGD swap threshold: mean (mean |g|) | fixed (--tau)"),
    NUM("tau", FIELD_F32, sparsify.tau, 0.0, 1e30, "eSGD fixed swap threshold"),
    NUM("dgc-momentum", FIELD_F32, sparsify.dgc_momentum, 0.0, 0.9999, "DGC local momentum m (u = m u + g)"),
    NUM("dgc-clip", FIELD_F32, sparsify.dgc_clip, 0.0, 1e30, "DGC bound on each agent's gradient L2 norm (0: off)"),
    NUM("dgc-warmup-rounds", FIELD_U32, sparsify.dgc_warmup_rounds, 0, 4000000000.0,
        "DGC rounds over which drop ramps from 0.75 to --drop"),
    NUM("down-drop", FIELD_F64, down_drop, 0.0, 0.999999,
        "compressed downlink: the model changes in ceil((1-R) d) coordinates a round, the rest of the step is "
        "held back for later rounds (0: off; auto: twice the coordinates of one agent's update, 1 - 2 (1 - drop))"),
    NUM("agents", FIELD_U32, agents, 1, 100000, "number of agents N"),
    NUM("batch", FIELD_U32, batch, 1, 4096, "minibatch per agent per round"),
    NUM("lr", FIELD_F64, lr, 1e-12, 1e6, "learning rate in epoch 0"),
    NUM("lr-decay", FIELD_F64, lr_decay, 1e-12, 1.0, "per-epoch factor: lr_e = lr * lr-decay^e"),
    ENUM("lr-schedule", lr_schedule, lr_schedule_names,
         "learning rate: step (lr * lr-decay^epoch) | constant | cosine (to 0 over the rounds)"),
    NUM("warmup-rounds", FIELD_U32, warmup_rounds, 0, 4000000000.0,
        "linear warm-up: round t < N takes (t+1)/N of the schedule's lr (< total rounds)"),
    NUM("epochs", FIELD_U32, epochs, 0, 100000, "length of the job in epochs"),
    NUM("rounds", FIELD_U32, rounds, 0, 4000000000.0, "length in rounds (overrides --epochs when > 0)"),
    NUM("seed", FIELD_U64, seed, 0, 18446744073709551615.0, "random seed"),
    ENUM("partition", partition, partition_names, "shards: iid | noniid (label skew, Dirichlet(alpha))"),
    NUM("alpha", FIELD_F64, alpha, 1e-6, 1e6, "Dirichlet concentration for noniid"),
    ENUM("values", values, value_format_names, "update value encoding: f32 | f16"),
    NUM("train-samples", FIELD_U32, train_samples, 1, 4000000000.0, "training-set size (sets rounds per epoch)"),
    NUM("eval-every", FIELD_U32, eval_every, 0, 4000000000.0, "rounds between test evaluations (0: once per epoch)"),
};
#define OPTION_COUNT (sizeof options / sizeof options[0])

void job_config_defaults(esgd_job_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->job, "mnist");
    strcpy(cfg->model, "lenet");
    strcpy(cfg->input, "28x28");
    cfg->classes = 10;
    cfg->sparsify = (sparsifier_config)SPARSIFIER_CONFIG_DEFAULT;
    cfg->agents = 4;
    cfg->batch = 32;
    cfg->lr = 0.1;
    cfg->lr_decay = 0.5;
    cfg->lr_schedule = LR_SCHEDULE_STEP;
    cfg->warmup_rounds = 0;
    cfg->epochs = 2;
    cfg->rounds = 0;
    cfg->seed = 1;
    cfg->partition = PARTITION_IID;
    cfg->alpha = 0.5;
    cfg->values = VALUE_FORMAT_F32;
    cfg->train_samples = 60000;
    cfg->eval_every = 0;
    cfg->down_drop = 0.0; /* off: results/scale.md section 1 has the data */
}

double job_down_drop(const esgd_job_config *cfg)
{
    if (cfg->down_drop != JOB_DOWN_DROP_AUTO)
        return cfg->down_drop;
    sparsify_method m = cfg->sparsify.method;
    if (m == SPARSIFY_DENSE || m == SPARSIFY_THRESHOLD)
        return 0.0;
    double r = 1.0 - 2.0 * (1.0 - cfg->sparsify.drop_ratio);
    return r > 0.0 ? r : 0.0;
}

static bool is_down_drop(const job_option *opt)
{
    return strcmp(opt->name, "down-drop") == 0;
}

size_t job_option_count(void)
{
    return OPTION_COUNT;
}

const job_option *job_option_at(size_t i)
{
    return i < OPTION_COUNT ? &options[i].public : NULL;
}

const job_option *job_option_find(const char *name)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (strcmp(options[i].public.name, name) == 0)
            return &options[i].public;
    return NULL;
}

/* public is the first member, so the public pointer is the entry pointer. */
static const option_entry *entry_of(const job_option *opt)
{
    return (const option_entry *)opt;
}

static void *field_ptr(esgd_job_config *cfg, const option_entry *e)
{
    return (char *)cfg + e->offset;
}

static const void *field_cptr(const esgd_job_config *cfg, const option_entry *e)
{
    return (const char *)cfg + e->offset;
}

esgd_status job_config_set_uint(esgd_job_config *cfg, const job_option *opt, uint64_t value, esgd_error *err)
{
    const option_entry *e = entry_of(opt);
    if (e->kind != FIELD_U32 && e->kind != FIELD_U64)
        return esgd_error_set(err, ESGD_ERR_TYPE, "option %s is not an integer", opt->name);
    if ((double)value < e->min || (double)value > e->max)
        return esgd_error_set(err, ESGD_ERR_RANGE, "option %s = %llu outside [%.0f, %.0f]", opt->name,
                              (unsigned long long)value, e->min, e->max);
    if (e->kind == FIELD_U32)
        *(uint32_t *)field_ptr(cfg, e) = (uint32_t)value;
    else
        *(uint64_t *)field_ptr(cfg, e) = value;
    return ESGD_OK;
}

esgd_status job_config_set_float(esgd_job_config *cfg, const job_option *opt, double value, esgd_error *err)
{
    const option_entry *e = entry_of(opt);
    if (e->kind != FIELD_F64 && e->kind != FIELD_F32)
        return esgd_error_set(err, ESGD_ERR_TYPE, "option %s is not a number", opt->name);
    if (!isfinite(value))
        return esgd_error_set(err, ESGD_ERR_NONFINITE, "option %s is not finite", opt->name);
    if (value < e->min || value > e->max)
        return esgd_error_set(err, ESGD_ERR_RANGE, "option %s = %g outside [%g, %g]", opt->name, value, e->min,
                              e->max);
    if (e->kind == FIELD_F64)
        *(double *)field_ptr(cfg, e) = value;
    else
        *(float *)field_ptr(cfg, e) = (float)value;
    return ESGD_OK;
}

/* Explicit ranges rather than isalnum: a name is used in topics and by
 * every program, so it must not depend on anyone's locale. */
esgd_status job_name_check(const char *name, size_t len, esgd_status status, esgd_error *err)
{
    bool ok = len > 0 && len <= JOB_NAME_MAX;
    for (size_t i = 0; ok && i < len; i++) {
        char c = name[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
             c == '-';
    }
    if (!ok)
        return esgd_error_set(err, status, "job name must be 1..%d of [A-Za-z0-9_.-]", JOB_NAME_MAX);
    return ESGD_OK;
}

esgd_status job_config_set_string(esgd_job_config *cfg, const job_option *opt, const char *value, size_t len,
                                  esgd_error *err)
{
    const option_entry *e = entry_of(opt);
    if (e->kind == FIELD_NAME) {
        esgd_status st = job_name_check(value, len, ESGD_ERR_RANGE, err);
        if (st != ESGD_OK)
            return st;
        memcpy(cfg->job, value, len);
        cfg->job[len] = '\0';
        return ESGD_OK;
    }
    if (e->kind == FIELD_TEXT) {
        if (len == 0 || len > (size_t)e->max)
            return esgd_error_set(err, ESGD_ERR_RANGE, "option %s: %zu characters, 1 to %.0f", opt->name, len,
                                  e->max);
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)value[i] < 0x20 || (unsigned char)value[i] > 0x7e)
                return esgd_error_set(err, ESGD_ERR_RANGE,
                                      "option %s: character %zu is not printable ASCII (a control character or "
                                      "another byte)",
                                      opt->name, i + 1);
        char *field = field_ptr(cfg, e);
        if (len)
            memcpy(field, value, len);
        field[len] = '\0';
        return ESGD_OK;
    }
    if (e->kind != FIELD_ENUM)
        return esgd_error_set(err, ESGD_ERR_TYPE, "option %s is not a string", opt->name);
    for (int i = 0; e->names[i]; i++) {
        if (strlen(e->names[i]) == len && memcmp(e->names[i], value, len) == 0) {
            *(int *)field_ptr(cfg, e) = i;
            return ESGD_OK;
        }
    }
    char allowed[160] = "";
    for (int i = 0; e->names[i]; i++) {
        strncat(allowed, i ? " | " : "", sizeof allowed - strlen(allowed) - 1);
        strncat(allowed, e->names[i], sizeof allowed - strlen(allowed) - 1);
    }
    return esgd_error_set(err, ESGD_ERR_RANGE, "option %s = '%.*s' is not one of %s", opt->name,
                          (int)(len > 40 ? 40 : len), value ? value : "", allowed);
}

uint64_t job_config_get_uint(const esgd_job_config *cfg, const job_option *opt)
{
    const option_entry *e = entry_of(opt);
    if (e->kind == FIELD_U32)
        return *(const uint32_t *)field_cptr(cfg, e);
    if (e->kind == FIELD_U64)
        return *(const uint64_t *)field_cptr(cfg, e);
    return 0;
}

double job_config_get_float(const esgd_job_config *cfg, const job_option *opt)
{
    if (is_down_drop(opt))
        return job_down_drop(cfg);
    const option_entry *e = entry_of(opt);
    if (e->kind == FIELD_F64)
        return *(const double *)field_cptr(cfg, e);
    if (e->kind == FIELD_F32)
        return *(const float *)field_cptr(cfg, e);
    return 0;
}

const char *job_config_get_string(const esgd_job_config *cfg, const job_option *opt)
{
    const option_entry *e = entry_of(opt);
    if (e->kind == FIELD_NAME)
        return cfg->job;
    if (e->kind == FIELD_TEXT)
        return field_cptr(cfg, e);
    if (e->kind == FIELD_ENUM)
        return e->names[*(const int *)field_cptr(cfg, e)];
    return "";
}

esgd_status job_config_set(esgd_job_config *cfg, const char *name, const char *text, esgd_error *err)
{
    const job_option *opt = job_option_find(name);
    if (!opt)
        return esgd_error_set(err, ESGD_ERR_ARG, "unknown option --%s", name);
    const option_entry *e = entry_of(opt);
    if (is_down_drop(opt) && strcmp(text, "auto") == 0) {
        cfg->down_drop = JOB_DOWN_DROP_AUTO;
        return ESGD_OK;
    }
    char *end = NULL;
    errno = 0;
    switch (e->kind) {
    case FIELD_U32:
    case FIELD_U64: {
        if (text[0] == '-' || text[0] == '\0')
            return esgd_error_set(err, ESGD_ERR_ARG, "--%s needs a non-negative integer, got '%s'", name, text);
        unsigned long long v = strtoull(text, &end, 10);
        if (errno || *end)
            return esgd_error_set(err, ESGD_ERR_ARG, "--%s needs a non-negative integer, got '%s'", name, text);
        return job_config_set_uint(cfg, opt, v, err);
    }
    case FIELD_F32:
    case FIELD_F64: {
        double v = strtod(text, &end);
        if (errno || *end || end == text)
            return esgd_error_set(err, ESGD_ERR_ARG, "--%s needs a number, got '%s'", name, text);
        return job_config_set_float(cfg, opt, v, err);
    }
    case FIELD_ENUM:
    case FIELD_NAME:
    case FIELD_TEXT:
        return job_config_set_string(cfg, opt, text, strlen(text), err);
    }
    return esgd_error_set(err, ESGD_ERR_ARG, "option --%s has no parser", name);
}

esgd_status job_config_from_env(esgd_job_config *cfg, esgd_error *err)
{
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        char var[64] = "ESGD_";
        const char *name = options[i].public.name;
        size_t n = strlen(var);
        for (size_t j = 0; name[j] && n + 1 < sizeof var; j++)
            var[n++] = name[j] == '-' ? '_' : (char)toupper((unsigned char)name[j]);
        var[n] = '\0';
        const char *value = getenv(var);
        if (!value)
            continue;
        esgd_status st = job_config_set(cfg, name, value, err);
        if (st != ESGD_OK) {
            esgd_error_prefix(err, "environment %s", var);
            return st;
        }
    }
    return ESGD_OK;
}

esgd_status job_config_validate(const esgd_job_config *cfg, esgd_error *err)
{
    esgd_status st = job_name_check(cfg->job, strlen(cfg->job), ESGD_ERR_ARG, err);
    if (st != ESGD_OK)
        return st;
    if (cfg->agents == 0 || cfg->agents > cfg->train_samples)
        return esgd_error_set(err, ESGD_ERR_ARG, "agents = %u must be in 1..train-samples (%u)", cfg->agents,
                              cfg->train_samples);
    if (cfg->batch == 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "batch must be > 0");
    if (cfg->epochs == 0 && cfg->rounds == 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "set --epochs or --rounds to a positive number");
    if (!(cfg->sparsify.drop_ratio >= 0.0 && cfg->sparsify.drop_ratio < 1.0))
        return esgd_error_set(err, ESGD_ERR_ARG, "drop = %g must be in [0, 1)", cfg->sparsify.drop_ratio);
    if (!(cfg->sparsify.eps > 0.0f))
        return esgd_error_set(err, ESGD_ERR_ARG, "eps must be > 0");
    model_spec spec;
    if ((st = job_model_spec(cfg, &spec, err)) != ESGD_OK)
        return st;
    if (!(cfg->sparsify.dgc_momentum >= 0.0f && cfg->sparsify.dgc_momentum < 1.0f))
        return esgd_error_set(err, ESGD_ERR_ARG, "dgc-momentum = %g must be in [0, 1)",
                              (double)cfg->sparsify.dgc_momentum);
    if ((unsigned)cfg->lr_schedule > LR_SCHEDULE_COSINE)
        return esgd_error_set(err, ESGD_ERR_ARG, "lr-schedule = %d is not step, constant or cosine",
                              (int)cfg->lr_schedule);
    if (cfg->warmup_rounds > 0 && cfg->warmup_rounds >= job_total_rounds(cfg))
        return esgd_error_set(err, ESGD_ERR_ARG, "warmup-rounds = %u must be less than the job's %u rounds",
                              cfg->warmup_rounds, job_total_rounds(cfg));
    return ESGD_OK;
}

void job_config_print_help(FILE *out)
{
    esgd_job_config defaults;
    job_config_defaults(&defaults);
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const job_option *opt = &options[i].public;
        char number[32];
        const char *shown = number;
        switch (opt->type) {
        case JOB_OPTION_UINT:
            snprintf(number, sizeof number, "%llu", (unsigned long long)job_config_get_uint(&defaults, opt));
            break;
        case JOB_OPTION_FLOAT:
            snprintf(number, sizeof number, "%g", job_config_get_float(&defaults, opt));
            break;
        case JOB_OPTION_STRING:
            shown = job_config_get_string(&defaults, opt);
            break;
        }
        fprintf(out, "  --%-14s %s [%s]\n", opt->name, opt->help, shown);
    }
}

esgd_status job_input_dims(const esgd_job_config *cfg, uint32_t dims[3], uint32_t *rank, esgd_error *err)
{
    const char *p = cfg->input;
    *rank = 0;
    for (;;) {
        char *end;
        errno = 0;
        unsigned long v = isdigit((unsigned char)*p) ? strtoul(p, &end, 10) : 0;
        if (v == 0 || errno || v > MODEL_SPEC_MAX_VALUES || *rank == 3)
            return esgd_error_set(err, ESGD_ERR_ARG,
                                  "input '%s': expected 1 to 3 positive sizes joined by x, e.g. 28x28 or 6x128",
                                  cfg->input);
        dims[(*rank)++] = (uint32_t)v;
        if (*end == '\0')
            return ESGD_OK;
        if (*end != 'x')
            return esgd_error_set(err, ESGD_ERR_ARG, "input '%s': expected sizes joined by x, e.g. 28x28",
                                  cfg->input);
        p = end + 1;
    }
}

esgd_status job_model_spec(const esgd_job_config *cfg, model_spec *spec, esgd_error *err)
{
    uint32_t dims[3], rank;
    esgd_status st = job_input_dims(cfg, dims, &rank, err);
    if (st == ESGD_OK)
        st = model_spec_parse(spec, cfg->model, dims, rank, cfg->classes, err);
    return st;
}

uint32_t job_dimension(const esgd_job_config *cfg)
{
    model_spec spec;
    return job_model_spec(cfg, &spec, NULL) == ESGD_OK ? spec.num_params : 0;
}

uint32_t job_rounds_per_epoch(const esgd_job_config *cfg)
{
    uint64_t per_round = (uint64_t)cfg->agents * cfg->batch;
    uint64_t rounds = (cfg->train_samples + per_round - 1) / per_round;
    return rounds ? (uint32_t)rounds : 1;
}

uint32_t job_total_rounds(const esgd_job_config *cfg)
{
    if (cfg->rounds > 0)
        return cfg->rounds;
    uint64_t total = (uint64_t)cfg->epochs * job_rounds_per_epoch(cfg);
    return total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
}

uint32_t job_epoch_of_round(const esgd_job_config *cfg, uint32_t round)
{
    return round / job_rounds_per_epoch(cfg);
}

double job_lr_at_round(const esgd_job_config *cfg, uint32_t round)
{
    static const double pi = 3.14159265358979323846;
    uint32_t warmup = cfg->warmup_rounds;
    double lr;
    switch (cfg->lr_schedule) {
    case LR_SCHEDULE_CONSTANT:
        lr = cfg->lr;
        break;
    case LR_SCHEDULE_COSINE: {
        uint32_t total = job_total_rounds(cfg);
        uint32_t span = total > warmup ? total - warmup : 1;      /* validate: warmup < total */
        uint32_t t = round > warmup ? round - warmup : 0;         /* lr itself while warming up */
        if (t > span)
            t = span;
        lr = cfg->lr * 0.5 * (1.0 + cos(pi * (double)t / (double)span));
        break;
    }
    case LR_SCHEDULE_STEP:
    default: /* the expression of before the schedules, so step runs stay bit-identical */
        lr = cfg->lr * pow(cfg->lr_decay, (double)job_epoch_of_round(cfg, round));
        break;
    }
    if (round < warmup)
        lr = lr * (double)(round + 1) / (double)warmup;
    return lr;
}

static const char *enum_name(const char *const *names, int value)
{
    for (int i = 0; names[i]; i++)
        if (i == value)
            return names[i];
    return "unknown";
}

const char *value_format_name(value_format f)
{
    return enum_name(value_format_names, (int)f);
}

const char *sparsify_method_name(sparsify_method m)
{
    return enum_name(method_names, (int)m);
}

const char *partition_kind_name(partition_kind p)
{
    return enum_name(partition_names, (int)p);
}

const char *lr_schedule_name(lr_schedule_kind s)
{
    return enum_name(lr_schedule_names, (int)s);
}

bool job_is_eval_round(const esgd_job_config *cfg, uint32_t round)
{
    uint32_t every = cfg->eval_every ? cfg->eval_every : job_rounds_per_epoch(cfg);
    return (round + 1) % every == 0 || round + 1 == job_total_rounds(cfg);
}
