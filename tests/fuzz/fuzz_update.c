/* codec_decode_update on arbitrary bytes: what the coordinator does with
 * every message on esgd/<job>/round/<t>/grad/<agent>. An accepted update
 * must satisfy everything the aggregator relies on, decode the same way
 * whatever expected_dim says about its dim, and survive a re-encode. */
#include <math.h>

#include "fuzz_common.h"

static esgd_status decode(codec_decoder *decoder, const uint8_t *data, size_t size, uint32_t expected_dim, int slot,
                          update_msg *out)
{
    memset(out, 0, sizeof *out);
    out->grad = fuzz_sparse_slot(slot);
    esgd_error err = {0};
    esgd_status st = codec_decode_update(decoder, data, size, expected_dim, out, &err);
    fuzz_check_outcome(st, &err);
    FUZZ_CHECK(st == ESGD_OK || out->grad.count == 0);
    return st;
}

static void check_valid(const update_msg *m)
{
    const sparse_vector *g = &m->grad;
    FUZZ_CHECK(fuzz_job_name_ok(m->job));
    FUZZ_CHECK(m->samples > 0);
    FUZZ_CHECK(isfinite(m->loss) && m->loss >= 0);
    FUZZ_CHECK(g->dim > 0 && g->dim <= FUZZ_DIM);
    FUZZ_CHECK(g->count <= g->dim && g->count <= g->capacity);
    for (uint32_t i = 0; i < g->count; i++) {
        FUZZ_CHECK(g->indices[i] < g->dim);
        FUZZ_CHECK(i == 0 || g->indices[i] > g->indices[i - 1]);
        FUZZ_CHECK(isfinite(g->values[i]));
    }
}

static void check_same(const update_msg *a, const update_msg *b)
{
    FUZZ_CHECK(strcmp(a->job, b->job) == 0);
    FUZZ_CHECK(a->run == b->run);
    FUZZ_CHECK(a->round == b->round && a->agent == b->agent && a->samples == b->samples);
    FUZZ_CHECK(memcmp(&a->loss, &b->loss, sizeof a->loss) == 0);
    FUZZ_CHECK(a->grad.dim == b->grad.dim && a->grad.count == b->grad.count);
    FUZZ_CHECK(memcmp(a->grad.indices, b->grad.indices, a->grad.count * sizeof(uint32_t)) == 0);
    FUZZ_CHECK(memcmp(a->grad.values, b->grad.values, a->grad.count * sizeof(float)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_codec *codec = fuzz_codec_once(codec_update_bound(FUZZ_DIM));
    update_msg first, again;
    esgd_status st = decode(codec->decoder, data, size, 0, 0, &first);

    /* The job's d is what agents and coordinator pass: it must accept
     * exactly the updates of that dim that expected_dim 0 accepts. */
    esgd_status st_job = decode(codec->decoder, data, size, FUZZ_DIM, 1, &again);
    if (st != ESGD_OK) {
        FUZZ_CHECK(st_job != ESGD_OK);
        return 0;
    }
    check_valid(&first);
    FUZZ_CHECK((st_job == ESGD_OK) == (first.grad.dim == FUZZ_DIM));
    if (st_job == ESGD_OK)
        check_same(&first, &again);

    /* f16 values widen exactly, so f32 carries any accepted update. */
    esgd_error err = {0};
    esgd_buffer *encoded = &codec->encoded;
    FUZZ_CHECK(codec_encode_update(encoded, &first, VALUE_FORMAT_F32, &err) == ESGD_OK);
    FUZZ_CHECK(decode(codec->decoder, encoded->data, encoded->size, first.grad.dim, 1, &again) == ESGD_OK);
    check_same(&first, &again);
    return 0;
}
