/* codec_decode_config on arbitrary bytes: the retained job configuration
 * every agent starts from. An accepted config must pass job_config_validate
 * (the agent sizes its buffers from it) and re-encode to the same config. */
#include "fuzz_common.h"

/* Field by field through the option table, so struct padding and the
 * unused tail of the job name do not count. */
static void check_same(const esgd_job_config *a, const esgd_job_config *b)
{
    for (size_t i = 0; i < job_option_count(); i++) {
        const job_option *opt = job_option_at(i);
        switch (opt->type) {
        case JOB_OPTION_UINT:
            FUZZ_CHECK(job_config_get_uint(a, opt) == job_config_get_uint(b, opt));
            break;
        case JOB_OPTION_FLOAT: {
            double x = job_config_get_float(a, opt), y = job_config_get_float(b, opt);
            FUZZ_CHECK(memcmp(&x, &y, sizeof x) == 0);
            break;
        }
        case JOB_OPTION_STRING:
            FUZZ_CHECK(strcmp(job_config_get_string(a, opt), job_config_get_string(b, opt)) == 0);
            break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_codec *codec = fuzz_codec_once(CODEC_CONFIG_BOUND);
    esgd_job_config first, again;
    esgd_error err = {0};
    esgd_status st = codec_decode_config(codec->decoder, data, size, &first, &err);
    fuzz_check_outcome(st, &err);
    if (st != ESGD_OK)
        return 0;
    FUZZ_CHECK(fuzz_job_name_ok(first.job));
    FUZZ_CHECK(job_config_validate(&first, &err) == ESGD_OK);

    FUZZ_CHECK(codec_encode_config(&codec->encoded, &first, &err) == ESGD_OK);
    FUZZ_CHECK(codec_decode_config(codec->decoder, codec->encoded.data, codec->encoded.size, &again, &err) == ESGD_OK);
    check_same(&first, &again);
    FUZZ_CHECK(first.run == again.run); /* not an option: carried beside them */
    return 0;
}
