/* codec_decode_status on arbitrary bytes: the retained agent status and
 * Last Will messages the coordinator follows. */
#include "esgd/codec.h"
#include "fuzz_common.h"

static codec_decoder *decoder;
static esgd_buffer encoded;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    esgd_error err;
    decoder = codec_decoder_new(&err);
    FUZZ_CHECK(decoder != NULL);
    FUZZ_CHECK(buffer_init(&encoded, CODEC_STATUS_BOUND, &err) == ESGD_OK);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    status_msg first, again;
    memset(&first, 0, sizeof first);
    esgd_error err = {0};
    esgd_status st = codec_decode_status(decoder, data, size, &first, &err);
    FUZZ_CHECK(st == err.status);
    if (st != ESGD_OK) {
        FUZZ_CHECK(err.message[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(fuzz_job_name_ok(first.job));
    FUZZ_CHECK(first.state == AGENT_STATE_ONLINE || first.state == AGENT_STATE_OFFLINE ||
               first.state == AGENT_STATE_DONE);

    FUZZ_CHECK(codec_encode_status(&encoded, &first, &err) == ESGD_OK);
    memset(&again, 0, sizeof again);
    FUZZ_CHECK(codec_decode_status(decoder, encoded.data, encoded.size, &again, &err) == ESGD_OK);
    FUZZ_CHECK(memcmp(&first, &again, sizeof first) == 0);
    return 0;
}
