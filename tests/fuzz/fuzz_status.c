/* codec_decode_status on arbitrary bytes: the retained agent status and
 * Last Will messages the coordinator follows. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_codec *codec = fuzz_codec_once(CODEC_STATUS_BOUND);
    status_msg first, again;
    memset(&first, 0, sizeof first);
    esgd_error err = {0};
    esgd_status st = codec_decode_status(codec->decoder, data, size, &first, &err);
    fuzz_check_outcome(st, &err);
    if (st != ESGD_OK)
        return 0;
    FUZZ_CHECK(fuzz_job_name_ok(first.job));
    FUZZ_CHECK(first.state == AGENT_STATE_ONLINE || first.state == AGENT_STATE_OFFLINE ||
               first.state == AGENT_STATE_DONE);

    FUZZ_CHECK(codec_encode_status(&codec->encoded, &first, &err) == ESGD_OK);
    memset(&again, 0, sizeof again);
    FUZZ_CHECK(codec_decode_status(codec->decoder, codec->encoded.data, codec->encoded.size, &again, &err) == ESGD_OK);
    FUZZ_CHECK(memcmp(&first, &again, sizeof first) == 0);
    return 0;
}
