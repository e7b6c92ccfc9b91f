/* The gateway's prediction API (predictor.h): a model file loaded into a
 * network sized for ESGD_PREDICT_CHUNK examples, predictions in chunks of
 * that size, and the file's input normalisation. */
#include "esgd/predictor.h"

#include <stdlib.h>
#include <string.h>

#include "esgd/model.h"

struct esgd_predictor {
    model_file file;
    esgd_model *model;
};

esgd_predictor *esgd_predictor_load(const char *path, esgd_error *err)
{
    esgd_predictor *p = calloc(1, sizeof *p);
    if (!p) {
        esgd_error_set(err, ESGD_ERR_NOMEM, "model file %s: out of memory", path ? path : "(null)");
        return NULL;
    }
    if (model_file_read(path, &p->file, err) != ESGD_OK)
        goto fail;
    if (!(p->model = model_new(&p->file.spec, ESGD_PREDICT_CHUNK, err))) {
        esgd_error_prefix(err, "model file %s", path);
        goto fail;
    }
    memcpy(p->model->params, p->file.params, (size_t)p->file.num_params * sizeof *p->file.params);
    return p;
fail:
    esgd_predictor_free(p);
    return NULL;
}

void esgd_predictor_free(esgd_predictor *p)
{
    if (!p)
        return;
    model_free(p->model);
    model_file_destroy(&p->file);
    free(p);
}

esgd_status esgd_predictor_predict(esgd_predictor *p, const float *x, uint32_t count, uint8_t *classes, float *probs,
                                   esgd_error *err)
{
    if (!p || !x || !classes || count == 0)
        return esgd_error_set(err, ESGD_ERR_ARG, "esgd_predictor_predict: NULL argument or no examples");
    size_t size = p->model->input_size, n_classes = p->file.classes;
    for (uint32_t start = 0; start < count; start += ESGD_PREDICT_CHUNK) {
        uint32_t n = count - start < ESGD_PREDICT_CHUNK ? count - start : ESGD_PREDICT_CHUNK;
        esgd_status st = model_predict(p->model, x + start * size, n, classes + start,
                                       probs ? probs + start * n_classes : NULL);
        if (st != ESGD_OK)
            return esgd_error_set(err, st, "esgd_predictor_predict: examples %u..%u: %s", start, start + n - 1,
                                  esgd_strerror(st));
    }
    return ESGD_OK;
}

esgd_status esgd_predictor_normalise(const esgd_predictor *p, const float *raw, float *out)
{
    if (!p || !raw || !out)
        return ESGD_ERR_ARG;
    model_file_normalise(&p->file.spec, p->file.norm, p->file.norm_count, raw, out);
    return ESGD_OK;
}

esgd_status esgd_predictor_evaluate(esgd_predictor *p, const esgd_dataset *ds, float *accuracy, float *loss,
                                    esgd_error *err)
{
    if (!p)
        return esgd_error_set(err, ESGD_ERR_ARG, "esgd_predictor_evaluate: NULL predictor");
    return model_evaluate(p->model, ds, 0, accuracy, loss, err);
}

uint32_t esgd_predictor_input_size(const esgd_predictor *p)
{
    return p->model->input_size;
}

uint32_t esgd_predictor_input_dims(const esgd_predictor *p, uint32_t dims[3])
{
    for (uint32_t i = 0; i < 3; i++)
        dims[i] = i < p->file.spec.input_rank ? p->file.spec.input_dims[i] : 0;
    return p->file.spec.input_rank;
}

uint32_t esgd_predictor_classes(const esgd_predictor *p)
{
    return p->file.classes;
}

const model_file *esgd_predictor_file(const esgd_predictor *p)
{
    return &p->file;
}
