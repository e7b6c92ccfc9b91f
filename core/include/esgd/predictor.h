/* Using a trained model: the small C API a gateway application links
 * (libesgd_core) to classify its own readings with the file the coordinator
 * exported at the end of a job (model_file.h, schemas/model-file.md).
 *
 *   esgd_error err = {0};
 *   esgd_predictor *p = esgd_predictor_load("model-mnist.esgd", &err);
 *   if (!p) { fprintf(stderr, "%s\n", err.message); return 1; }
 *   uint32_t size = esgd_predictor_input_size(p);      // 784 for 28x28
 *   float *x = malloc(n * size * sizeof *x);           // n examples, row-major
 *   for (i = 0; i < n; i++)                            // raw readings -> the model's scale
 *       esgd_predictor_normalise(p, raw + i * size, x + i * size);
 *   uint8_t *cls = malloc(n);
 *   float *probs = malloc(n * esgd_predictor_classes(p) * sizeof *probs);  // or pass NULL
 *   if (esgd_predictor_predict(p, x, n, cls, probs, &err) != ESGD_OK) ...
 *   esgd_predictor_free(p);
 *
 * Inputs are what the network was trained on: for IDX u8 images the pixels
 * divided by 255; for data imported with esgd-import, the raw features
 * normalised with the file's normalisation (esgd_predictor_normalise, the
 * identity when the file has none). Predictions run in chunks of
 * ESGD_PREDICT_CHUNK examples, the chunk the coordinator evaluates the test
 * set with, so the class of every example is the one its evaluation counted.
 * A predictor is not thread-safe (it owns the activation workspace): use
 * one per thread. */
#ifndef ESGD_PREDICTOR_H
#define ESGD_PREDICTOR_H

#include <stdint.h>

#include "esgd/dataset.h"
#include "esgd/error.h"
#include "esgd/model_file.h"

/* Examples per forward pass; equal to the coordinator's evaluation batch
 * (coordinator.c checks this at compile time). */
#define ESGD_PREDICT_CHUNK 500

typedef struct esgd_predictor esgd_predictor;

/* Reads and checks the file (model_file_read) and builds the network.
 * NULL on error, with err naming the file and the fault. */
esgd_predictor *esgd_predictor_load(const char *path, esgd_error *err);
void esgd_predictor_free(esgd_predictor *p); /* NULL is a no-op */

/* x: (count, input_size) floats; classes: (count) argmax classes (the
 * first on ties); probs: NULL or (count, classes) softmax probabilities.
 * Any count > 0. Errors: ESGD_ERR_ARG (NULL, count 0). */
esgd_status esgd_predictor_predict(esgd_predictor *p, const float *x, uint32_t count, uint8_t *classes, float *probs,
                                   esgd_error *err);

/* One raw example (input_size floats) to the scale the network takes, with
 * the file's normalisation ((x - mean) / std), or copied unchanged when it
 * has none. raw and out may be the same buffer. Errors: ESGD_ERR_ARG. */
esgd_status esgd_predictor_normalise(const esgd_predictor *p, const float *raw, float *out);

/* Accuracy (0..1) and mean loss over all of ds, computed exactly as
 * the coordinator computes its test accuracy (model_evaluate, chunks of
 * ESGD_PREDICT_CHUNK). Errors: those of model_evaluate. */
esgd_status esgd_predictor_evaluate(esgd_predictor *p, const esgd_dataset *ds, float *accuracy, float *loss,
                                    esgd_error *err);

uint32_t esgd_predictor_input_size(const esgd_predictor *p); /* floats of one example */
/* The example shape ("28x28" -> {28, 28}); returns its rank (1..3). */
uint32_t esgd_predictor_input_dims(const esgd_predictor *p, uint32_t dims[3]);
uint32_t esgd_predictor_classes(const esgd_predictor *p);
/* Everything the file says (job, run, round, spec, test accuracy, ...). */
const model_file *esgd_predictor_file(const esgd_predictor *p);

#endif
