/* esgd-predict: a trained model file (the coordinator's --export) on a data
 * split: accuracy computed exactly as the coordinator computes its test
 * accuracy, the confusion matrix, inference latency in batches and one
 * example at a time, and optionally every prediction as CSV. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esgd/cli.h"
#include "esgd/dataset.h"
#include "esgd/json_writer.h"
#include "esgd/predictor.h"
#include "esgd/runtime.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define SINGLE_SAMPLE_MAX 1000

typedef struct results {
    float accuracy, loss;
    uint64_t correct;
    uint32_t disagreements;  /* sampled examples whose class alone differs from their class in a batch */
    uint32_t single_count;   /* examples timed one at a time */
    double batch_us, single_us; /* mean latency per example */
    uint64_t *confusion;     /* (classes, classes): row true class, column predicted */
} results;

/* Writes index,label,predicted,p_0..p_{k-1} for every example. */
static int write_predictions(const char *path, const esgd_dataset *ds, const uint8_t *cls, const float *probs,
                             uint32_t classes)
{
    FILE *out = fopen(path, "w");
    if (!out) {
        perror(path);
        return EXIT_RUNTIME;
    }
    fputs("index,label,predicted", out);
    for (uint32_t j = 0; j < classes; j++)
        fprintf(out, ",p_%u", j);
    fputc('\n', out);
    for (uint32_t i = 0; i < ds->count; i++) {
        fprintf(out, "%u,%u,%u", i, ds->labels[i], cls[i]);
        for (uint32_t j = 0; j < classes; j++)
            fprintf(out, ",%.9g", (double)probs[(size_t)i * classes + j]);
        fputc('\n', out);
    }
    if (ferror(out) | (fclose(out) != 0)) {
        fprintf(stderr, "esgd-predict: writing %s failed\n", path);
        return EXIT_RUNTIME;
    }
    return 0;
}

static void print_text(FILE *out, const char *model_path, const char *split, const esgd_predictor *p,
                       const esgd_dataset *ds, const results *r)
{
    const model_file *f = esgd_predictor_file(p);
    uint32_t k = f->classes;
    fprintf(out, "model %s: job %s run %016llx round %u, %s on %s, %u classes, %u parameters\n", model_path, f->job,
            (unsigned long long)f->run, f->round, f->model, f->input, k, f->num_params);
    fprintf(out, "%s: %u examples, accuracy %.4f (%llu correct), loss %.4f\n", split, ds->count, (double)r->accuracy,
            (unsigned long long)r->correct, (double)r->loss);
    if (f->norm_count)
        fprintf(out, "input normalisation: %u (mean, std) pairs (esgd_predictor_normalise; the data split is used as stored)\n",
                f->norm_count);
    if (!isnan(f->test_accuracy))
        fprintf(out, "test accuracy recorded in the file: %.4f (%s)\n", (double)f->test_accuracy,
                f->test_accuracy == r->accuracy ? "equal" : "different");
    fprintf(out, "confusion matrix (rows: true class, columns: predicted)\n%6s", "");
    for (uint32_t j = 0; j < k; j++)
        fprintf(out, " %6u", j);
    fputc('\n', out);
    for (uint32_t i = 0; i < k; i++) {
        fprintf(out, "%6u", i);
        for (uint32_t j = 0; j < k; j++)
            fprintf(out, " %6llu", (unsigned long long)r->confusion[(size_t)i * k + j]);
        fputc('\n', out);
    }
    fprintf(out, "latency per example: %.2f us in batches of %u (all %u), %.2f us one at a time (first %u)\n",
            r->batch_us, ESGD_PREDICT_CHUNK, ds->count, r->single_us, r->single_count);
    if (r->disagreements)
        fprintf(out, "%u of the %u examples predicted alone got another class than in their batch\n",
                r->disagreements, r->single_count);
}

static void print_json(const char *model_path, const char *split, const esgd_predictor *p, const esgd_dataset *ds,
                       const results *r)
{
    const model_file *f = esgd_predictor_file(p);
    json_writer w;
    json_writer_init(&w, stdout);
    json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
    json_writer_string(&w, "model", model_path);
    json_writer_string(&w, "job", f->job);
    json_writer_uint(&w, "round", f->round);
    json_writer_string(&w, "spec", f->model);
    json_writer_string(&w, "split", split);
    json_writer_uint(&w, "examples", ds->count);
    json_writer_uint(&w, "test_correct", r->correct);
    json_writer_fixed(&w, "test_accuracy", r->accuracy, 9);
    json_writer_fixed(&w, "test_loss", r->loss, 6);
    json_writer_fixed(&w, "file_test_accuracy", f->test_accuracy, 9); /* null when the file has none */
    json_writer_bool(&w, "equals_file_accuracy", f->test_accuracy == r->accuracy);
    json_writer_uint(&w, "normalisation_features", f->norm_count); /* 0: none in the file */
    json_writer_fixed(&w, "latency_batch_us", r->batch_us, 3);
    json_writer_uint(&w, "batch", ESGD_PREDICT_CHUNK);
    json_writer_fixed(&w, "latency_single_us", r->single_us, 3);
    json_writer_uint(&w, "single_examples", r->single_count);
    json_writer_uint(&w, "single_disagreements", r->disagreements);
    json_writer_array_begin(&w, "confusion", JSON_WRITER_INLINE);
    for (uint32_t i = 0; i < f->classes; i++) {
        json_writer_array_begin(&w, NULL, JSON_WRITER_INLINE);
        for (uint32_t j = 0; j < f->classes; j++)
            json_writer_uint(&w, NULL, r->confusion[(size_t)i * f->classes + j]);
        json_writer_array_end(&w);
    }
    json_writer_array_end(&w);
    json_writer_object_end(&w);
    fputc('\n', stdout);
}

/* Predicts all of ds, timed, then the first examples one at a time. */
static int run(esgd_predictor *p, const esgd_dataset *ds, const char *predictions, results *r)
{
    uint32_t size = esgd_predictor_input_size(p), k = esgd_predictor_classes(p);
    esgd_error err = {0};
    float *x = malloc((size_t)ds->count * size * sizeof *x);
    float *probs = malloc((size_t)ds->count * k * sizeof *probs);
    uint8_t *cls = malloc(ds->count);
    uint32_t *idx = malloc(ESGD_PREDICT_CHUNK * sizeof *idx);
    uint8_t *y = malloc(ESGD_PREDICT_CHUNK);
    float one_probs[MODEL_SPEC_MAX_CLASSES];
    int rc = 0;
    if (!x || !probs || !cls || !idx || !y || !(r->confusion = calloc((size_t)k * k, sizeof *r->confusion))) {
        fprintf(stderr, "esgd-predict: out of memory for %u examples\n", ds->count);
        rc = EXIT_RUNTIME;
        goto done;
    }
    /* The inputs as the evaluation makes them (dataset_fill_batch). */
    for (uint32_t start = 0; start < ds->count; start += ESGD_PREDICT_CHUNK) {
        uint32_t n = ds->count - start < ESGD_PREDICT_CHUNK ? ds->count - start : ESGD_PREDICT_CHUNK;
        for (uint32_t i = 0; i < n; i++)
            idx[i] = start + i;
        dataset_fill_batch(ds, idx, n, x + (size_t)start * size, y);
    }
    double t0 = monotonic_seconds();
    if (esgd_predictor_predict(p, x, ds->count, cls, probs, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-predict: %s\n", err.message);
        rc = EXIT_RUNTIME;
        goto done;
    }
    r->batch_us = (monotonic_seconds() - t0) * 1e6 / ds->count;
    for (uint32_t i = 0; i < ds->count; i++) {
        r->correct += cls[i] == ds->labels[i];
        if (ds->labels[i] < k)
            r->confusion[(size_t)ds->labels[i] * k + cls[i]]++;
    }
    /* model_evaluate counted the same argmax over the same chunks. */
    if ((float)((double)r->correct / ds->count) != r->accuracy) {
        fprintf(stderr, "esgd-predict: %llu correct predictions disagree with the evaluation's accuracy %.9f\n",
                (unsigned long long)r->correct, (double)r->accuracy);
        rc = EXIT_RUNTIME;
        goto done;
    }
    r->single_count = ds->count < SINGLE_SAMPLE_MAX ? ds->count : SINGLE_SAMPLE_MAX;
    t0 = monotonic_seconds();
    for (uint32_t i = 0; i < r->single_count; i++) {
        uint8_t c;
        if (esgd_predictor_predict(p, x + (size_t)i * size, 1, &c, one_probs, &err) != ESGD_OK) {
            fprintf(stderr, "esgd-predict: %s\n", err.message);
            rc = EXIT_RUNTIME;
            goto done;
        }
        r->disagreements += c != cls[i];
    }
    r->single_us = (monotonic_seconds() - t0) * 1e6 / r->single_count;
    if (predictions)
        rc = write_predictions(predictions, ds, cls, probs, k);
done:
    free(x);
    free(probs);
    free(cls);
    free(idx);
    free(y);
    return rc;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *data_dir = NULL, *split = NULL, *predictions = NULL;
    int json = 0;
    const cli_option options[] = {
        {"model", CLI_STRING, &model_path, "model file written by esgd-coordinator --export"},
        {"data", CLI_STRING, &data_dir, "data folder (IDX files, as for training)"},
        {"split", CLI_STRING, &split, "which split of the folder: t10k | test | train (default: t10k, else test)"},
        {"predictions", CLI_STRING, &predictions, "write index,label,predicted,p_0..p_<classes-1> per example"},
        {"json", CLI_FLAG, &json, "print one JSON object with the results on stdout (the report goes to stderr)"},
    };
    const cli_program program = {
        .name = "esgd-predict",
        .summary = "usage: esgd-predict --model FILE --data DIR [--split t10k|test|train] [--predictions CSV] [--json]\n"
                   "Classifies a data split with a trained model file: accuracy (exactly the coordinator's\n"
                   "test accuracy on the same data), confusion matrix and inference latency.",
        CLI_OPTIONS(options),
        .epilogue = "exit status: 0 done, 1 cannot read the model or the data, or write the predictions, "
                    "2 bad usage",
    };
    int rc = cli_parse(&program, argc, argv, NULL);
    if (rc != CLI_CONTINUE)
        return rc == CLI_HELP ? 0 : EXIT_USAGE;
    if (!model_path || !data_dir) {
        fprintf(stderr, "esgd-predict: --model and --data are required (see --help)\n");
        return EXIT_USAGE;
    }
    if (!split && !(split = dataset_test_split(data_dir))) {
        fprintf(stderr, "esgd-predict: no test split in %s (t10k or test); give --split train for the training split\n",
                data_dir);
        return EXIT_RUNTIME;
    }
    if (strcmp(split, "t10k") != 0 && strcmp(split, "test") != 0 && strcmp(split, "train") != 0) {
        fprintf(stderr, "esgd-predict: --split must be t10k, test or train, not '%s'\n", split);
        return EXIT_USAGE;
    }
    /* The coordinator's thread count, so its sums are added in the same order. */
    blas_threads_default();

    esgd_error err = {0};
    esgd_dataset ds = {0};
    results r = {0};
    esgd_predictor *p = esgd_predictor_load(model_path, &err);
    if (!p) {
        fprintf(stderr, "esgd-predict: %s\n", err.message);
        return EXIT_RUNTIME;
    }
    rc = EXIT_RUNTIME;
    if (dataset_load_split(&ds, data_dir, split, NULL, 0, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-predict: %s\n", err.message);
    } else if (ds.example_size != esgd_predictor_input_size(p)) {
        fprintf(stderr, "esgd-predict: %s split %s: examples of %u values, the model takes %u (input %s)\n", data_dir,
                split, ds.example_size, esgd_predictor_input_size(p), esgd_predictor_file(p)->input);
    } else if (esgd_predictor_evaluate(p, &ds, &r.accuracy, &r.loss, &err) != ESGD_OK) {
        fprintf(stderr, "esgd-predict: %s split %s: %s\n", data_dir, split, err.message);
    } else {
        rc = run(p, &ds, predictions, &r);
    }
    if (rc == 0) {
        print_text(json ? stderr : stdout, model_path, split, p, &ds, &r);
        if (json)
            print_json(model_path, split, p, &ds, &r);
    }
    free(r.confusion);
    dataset_destroy(&ds);
    esgd_predictor_free(p);
    return rc;
}
