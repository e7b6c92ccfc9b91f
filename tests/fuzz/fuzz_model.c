/* codec_decode_model on arbitrary bytes: what every agent does with the
 * model broadcast and the retained full model. An accepted model must be
 * one the agent can apply blindly: full with d finite values, or a delta of
 * sorted in-range indices on the previous round. */
#include <math.h>

#include "fuzz_common.h"

static esgd_status decode(codec_decoder *decoder, const uint8_t *data, size_t size, uint32_t expected_dim, int slot,
                          model_msg *out)
{
    memset(out, 0, sizeof *out);
    out->params = fuzz_sparse_slot(slot);
    esgd_error err = {0};
    esgd_status st = codec_decode_model(decoder, data, size, expected_dim, out, &err);
    fuzz_check_outcome(st, &err);
    FUZZ_CHECK(st == ESGD_OK || out->params.count == 0);
    return st;
}

static void check_valid(const model_msg *m)
{
    const sparse_vector *p = &m->params;
    FUZZ_CHECK(fuzz_job_name_ok(m->job));
    FUZZ_CHECK(isfinite(m->lr) && m->lr >= 0);
    FUZZ_CHECK(isnan(m->prev_loss) || (isfinite(m->prev_loss) && m->prev_loss >= 0));
    FUZZ_CHECK(m->loss_fell >= -1 && m->loss_fell <= 1);
    FUZZ_CHECK(m->done <= 1);
    FUZZ_CHECK(p->dim > 0 && p->dim <= FUZZ_DIM);
    FUZZ_CHECK(p->count <= p->dim && p->count <= p->capacity);
    if (m->form == MODEL_FORM_FULL) {
        FUZZ_CHECK(p->count == p->dim);
        FUZZ_CHECK(m->base_round == m->round);
    } else {
        FUZZ_CHECK(m->form == MODEL_FORM_DELTA);
        FUZZ_CHECK(m->round > 0 && m->base_round == m->round - 1);
        for (uint32_t i = 0; i < p->count; i++) {
            FUZZ_CHECK(p->indices[i] < p->dim);
            FUZZ_CHECK(i == 0 || p->indices[i] > p->indices[i - 1]);
        }
    }
    for (uint32_t i = 0; i < p->count; i++)
        FUZZ_CHECK(isfinite(p->values[i]));
}

static void check_same(const model_msg *a, const model_msg *b)
{
    FUZZ_CHECK(strcmp(a->job, b->job) == 0);
    FUZZ_CHECK(a->run == b->run);
    FUZZ_CHECK(a->round == b->round && a->base_round == b->base_round);
    FUZZ_CHECK(memcmp(&a->lr, &b->lr, sizeof a->lr) == 0);
    FUZZ_CHECK(memcmp(&a->prev_loss, &b->prev_loss, sizeof a->prev_loss) == 0 ||
               (isnan(a->prev_loss) && isnan(b->prev_loss)));
    FUZZ_CHECK(a->loss_fell == b->loss_fell && a->done == b->done && a->form == b->form);
    FUZZ_CHECK(a->params.dim == b->params.dim && a->params.count == b->params.count);
    if (a->form == MODEL_FORM_DELTA)
        FUZZ_CHECK(memcmp(a->params.indices, b->params.indices, a->params.count * sizeof(uint32_t)) == 0);
    FUZZ_CHECK(memcmp(a->params.values, b->params.values, a->params.count * sizeof(float)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_codec *codec = fuzz_codec_once(codec_model_bound(FUZZ_DIM));
    model_msg first, again;
    esgd_status st = decode(codec->decoder, data, size, 0, 0, &first);
    esgd_status st_job = decode(codec->decoder, data, size, FUZZ_DIM, 1, &again);
    if (st != ESGD_OK) {
        FUZZ_CHECK(st_job != ESGD_OK);
        return 0;
    }
    check_valid(&first);
    FUZZ_CHECK((st_job == ESGD_OK) == (first.params.dim == FUZZ_DIM));
    if (st_job == ESGD_OK)
        check_same(&first, &again);

    esgd_error err = {0};
    esgd_buffer *encoded = &codec->encoded;
    FUZZ_CHECK(codec_encode_model(encoded, &first, &err) == ESGD_OK);
    FUZZ_CHECK(decode(codec->decoder, encoded->data, encoded->size, first.params.dim, 1, &again) == ESGD_OK);
    check_same(&first, &again);
    return 0;
}
