/* Crash-safe state files (round trip, every kind of damage), the programs'
 * option parsing, and topic names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "esgd/cli.h"
#include "esgd/state_file.h"
#include "esgd/topics.h"

static char dir[64];
static char path[128];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/esgd-state-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.state", dir);
    return 0;
}

static int remove_dir(void **state)
{
    (void)state;
    char tmp[160];
    unlink(path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    rmdir(dir);
    return 0;
}

static void write_sample(void)
{
    state_writer w;
    state_writer_init(&w);
    state_put_u32(&w, 0xdeadbeef);
    state_put_u64(&w, 1ull << 40);
    state_put_f64(&w, -2.5);
    float values[3] = {1.5f, -0.0f, 3e-30f};
    state_put_bytes(&w, values, sizeof values);
    state_put_bytes(&w, "abc", 3);
    esgd_error err = {0};
    assert_int_equal(state_file_write(path, STATE_KIND_AGENT, &w, &err), ESGD_OK);
    state_writer_destroy(&w);
}

static void test_round_trip(void **state)
{
    (void)state;
    write_sample();
    state_reader r;
    esgd_error err = {0};
    assert_int_equal(state_file_read(path, STATE_KIND_AGENT, &r, &err), ESGD_OK);
    uint32_t u32;
    uint64_t u64;
    double f64;
    float values[3];
    const uint8_t *bytes;
    size_t size;
    assert_int_equal(state_get_u32(&r, &u32, &err), ESGD_OK);
    assert_int_equal(u32, 0xdeadbeef);
    assert_int_equal(state_get_u64(&r, &u64, &err), ESGD_OK);
    assert_int_equal(u64, 1ull << 40);
    assert_int_equal(state_get_f64(&r, &f64, &err), ESGD_OK);
    assert_true(f64 == -2.5);
    assert_int_equal(state_get_exact(&r, values, sizeof values, &err), ESGD_OK);
    assert_true(values[0] == 1.5f && values[2] == 3e-30f);
    assert_int_equal(state_get_bytes(&r, &bytes, &size, &err), ESGD_OK);
    assert_int_equal(size, 3);
    assert_memory_equal(bytes, "abc", 3);
    /* Reading past the end is an error, not an overread. */
    assert_int_equal(state_get_u32(&r, &u32, &err), ESGD_ERR_TRUNCATED);
    state_reader_destroy(&r);
    /* No temporary file is left behind. */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_false(state_file_exists(tmp));
}

static long file_size(void)
{
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void patch_byte(long offset, uint8_t xor_mask)
{
    FILE *f = fopen(path, "r+b");
    fseek(f, offset, SEEK_SET);
    int c = fgetc(f);
    fseek(f, offset, SEEK_SET);
    fputc(c ^ xor_mask, f);
    fclose(f);
}

static void test_every_damage_is_reported(void **state)
{
    (void)state;
    state_reader r;
    esgd_error err = {0};
    assert_int_equal(state_file_read("/nonexistent/dir/x.state", STATE_KIND_AGENT, &r, &err), ESGD_ERR_IO);

    write_sample();
    assert_int_equal(state_file_read(path, STATE_KIND_COORDINATOR, &r, &err), ESGD_ERR_MISMATCH);

    long size = file_size();
    /* Every single flipped byte is caught (magic, version, kind, size, payload, checksum). */
    for (long off = 0; off < size; off++) {
        write_sample();
        patch_byte(off, 0x01);
        esgd_status st = state_file_read(path, STATE_KIND_AGENT, &r, &err);
        if (st == ESGD_OK)
            fail_msg("a flipped byte at offset %ld went unnoticed", off);
    }
    /* Every truncation is caught. */
    for (long keep = 0; keep < size; keep++) {
        write_sample();
        assert_int_equal(truncate(path, keep), 0);
        assert_int_not_equal(state_file_read(path, STATE_KIND_AGENT, &r, &err), ESGD_OK);
    }
    write_sample();
    patch_byte(0, 0xff);
    assert_int_equal(state_file_read(path, STATE_KIND_AGENT, &r, &err), ESGD_ERR_FORMAT);
    write_sample();
    patch_byte(8, 0x02); /* format version */
    assert_int_equal(state_file_read(path, STATE_KIND_AGENT, &r, &err), ESGD_ERR_VERSION);
    write_sample();
    patch_byte(size - 1, 0x80); /* checksum */
    assert_int_equal(state_file_read(path, STATE_KIND_AGENT, &r, &err), ESGD_ERR_FORMAT);
}

static void test_block_length_is_checked(void **state)
{
    (void)state;
    state_writer w;
    state_writer_init(&w);
    state_put_u64(&w, 1000); /* a length prefix promising more than the payload holds */
    state_put_u32(&w, 7);
    esgd_error err = {0};
    assert_int_equal(state_file_write(path, STATE_KIND_AGENT, &w, &err), ESGD_OK);
    state_writer_destroy(&w);
    state_reader r;
    assert_int_equal(state_file_read(path, STATE_KIND_AGENT, &r, &err), ESGD_OK);
    const uint8_t *bytes;
    size_t size;
    assert_int_equal(state_get_bytes(&r, &bytes, &size, &err), ESGD_ERR_TRUNCATED);
    state_reader_destroy(&r);
    float two[2];
    write_sample();
    assert_int_equal(state_file_read(path, STATE_KIND_AGENT, &r, &err), ESGD_OK);
    r.pos = 20; /* at the float block (12 bytes), asked for 8 */
    assert_int_equal(state_get_exact(&r, two, sizeof two, &err), ESGD_ERR_DIMENSION);
    state_reader_destroy(&r);
}

static void test_write_to_a_missing_folder_fails_cleanly(void **state)
{
    (void)state;
    state_writer w;
    state_writer_init(&w);
    state_put_u32(&w, 1);
    esgd_error err = {0};
    assert_int_equal(state_file_write("/nonexistent/dir/x.state", STATE_KIND_AGENT, &w, &err), ESGD_ERR_IO);
    assert_non_null(strstr(err.message, "/nonexistent/dir/x.state"));
    state_writer_destroy(&w);
}

/* The whole file's bytes; *size its length. */
static uint8_t *slurp(const char *file, long *size)
{
    FILE *f = fopen(file, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    *size = ftell(f);
    rewind(f);
    uint8_t *data = malloc((size_t)*size + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)*size, f), (size_t)*size);
    fclose(f);
    return data;
}

/* One payload of small fields around blocks smaller and larger than the
 * streaming buffer (64 KB), put into w. */
static void put_mixed(state_writer *w, const uint8_t *big, size_t big_size)
{
    for (uint32_t i = 0; i < 5000; i++)
        state_put_u32(w, i * 2654435761u);
    state_put_bytes(w, big, 1000);
    state_put_f64(w, 0.125);
    state_put_bytes(w, big, big_size);
    state_put_bytes(w, big + 3, 40000);
    state_put_u64(w, 42);
}

/* A streamed state file is byte for byte the file state_file_write makes of
 * the same payload, reads back, and the writer's buffer serves file after
 * file; a folder that is missing is an error at begin, and a failed stream
 * leaves the old file and no .tmp. */
static void test_streamed_file_equals_the_built_one(void **state)
{
    (void)state;
    size_t big_size = 300000;
    uint8_t *big = malloc(big_size);
    assert_non_null(big);
    for (size_t i = 0; i < big_size; i++)
        big[i] = (uint8_t)(i * 7 + (i >> 9));
    state_writer built;
    state_writer_init(&built);
    put_mixed(&built, big, big_size);
    esgd_error err = {0};
    assert_int_equal(state_file_write(path, STATE_KIND_AGENT, &built, &err), ESGD_OK);
    long expected_size = 0;
    uint8_t *expected = slurp(path, &expected_size);
    state_writer_destroy(&built);
    unlink(path);

    state_writer w;
    state_writer_init(&w);
    for (int file = 0; file < 2; file++) {
        uint64_t bytes = 0;
        assert_int_equal(state_stream_begin(&w, path, STATE_KIND_AGENT, &err), ESGD_OK);
        put_mixed(&w, big, big_size);
        assert_int_equal(state_stream_end(&w, &bytes, &err), ESGD_OK);
        assert_int_equal(bytes, (uint64_t)expected_size);
        assert_true(w.capacity <= 64 * 1024);
        long size = 0;
        uint8_t *got = slurp(path, &size);
        assert_int_equal(size, expected_size);
        assert_memory_equal(got, expected, (size_t)size);
        free(got);
    }
    state_reader r;
    assert_int_equal(state_file_read(path, STATE_KIND_AGENT, &r, &err), ESGD_OK);
    state_reader_destroy(&r);
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);

    assert_int_equal(state_stream_begin(&w, "/nonexistent/dir/x.state", STATE_KIND_AGENT, &err), ESGD_ERR_IO);
    assert_non_null(strstr(err.message, "/nonexistent/dir/x.state.tmp"));
    assert_int_equal(state_stream_end(&w, NULL, &err), ESGD_ERR_ARG);
    /* Destroyed in the middle: the .tmp goes, the file stays. */
    assert_int_equal(state_stream_begin(&w, path, STATE_KIND_AGENT, &err), ESGD_OK);
    state_put_u32(&w, 1);
    assert_int_equal(access(tmp, F_OK), 0);
    state_writer_destroy(&w);
    assert_int_equal(access(tmp, F_OK), -1);
    long size = 0;
    uint8_t *kept = slurp(path, &size);
    assert_int_equal(size, expected_size);
    assert_memory_equal(kept, expected, (size_t)size);
    free(kept);
    free(expected);
    free(big);
}

/* ---- options ---- */

static void test_cli_flags_environment_and_job_options(void **state)
{
    (void)state;
    const char *broker = "tcp://default:1";
    uint32_t quorum = 0;
    double timeout = 30;
    int json = 0;
    const cli_option options[] = {
        {"broker", CLI_STRING, &broker, "broker"},
        {"quorum", CLI_UINT, &quorum, "quorum"},
        {"round-timeout", CLI_DOUBLE, &timeout, "timeout"},
        {"json", CLI_FLAG, &json, "json"},
    };
    cli_program p = {.name = "test", .summary = "usage", .options = options, .option_count = 4};
    esgd_job_config cfg;
    job_config_defaults(&cfg);
    setenv("ESGD_ROUND_TIMEOUT", "2.5", 1);
    setenv("ESGD_DROP", "0.99", 1);
    char *argv[] = {"test", "--broker", "tcp://127.0.0.1:1883", "--quorum", "3", "--json", "--agents", "7", NULL};
    assert_int_equal(cli_parse(&p, 8, argv, &cfg), CLI_CONTINUE);
    assert_string_equal(broker, "tcp://127.0.0.1:1883");
    assert_int_equal(quorum, 3);
    assert_true(timeout == 2.5);
    assert_int_equal(json, 1);
    assert_int_equal(cfg.agents, 7);
    assert_true(cfg.sparsify.drop_ratio == 0.99);
    unsetenv("ESGD_ROUND_TIMEOUT");
    unsetenv("ESGD_DROP");

    /* Bad input is a usage error, never a crash. */
    char *bad_number[] = {"test", "--quorum", "-1", NULL};
    assert_int_equal(cli_parse(&p, 3, bad_number, &cfg), CLI_USAGE_ERROR);
    char *unknown[] = {"test", "--frobnicate", "1", NULL};
    assert_int_equal(cli_parse(&p, 3, unknown, &cfg), CLI_USAGE_ERROR);
    char *missing_value[] = {"test", "--broker", NULL};
    assert_int_equal(cli_parse(&p, 2, missing_value, &cfg), CLI_USAGE_ERROR);
    char *job_option_without_cfg[] = {"test", "--agents", "3", NULL};
    assert_int_equal(cli_parse(&p, 3, job_option_without_cfg, NULL), CLI_USAGE_ERROR);
    char *bad_job_value[] = {"test", "--method", "magic", NULL};
    assert_int_equal(cli_parse(&p, 3, bad_job_value, &cfg), CLI_USAGE_ERROR);
    setenv("ESGD_QUORUM", "lots", 1);
    char *none[] = {"test", NULL};
    assert_int_equal(cli_parse(&p, 1, none, &cfg), CLI_USAGE_ERROR);
    unsetenv("ESGD_QUORUM");
    char *nan_timeout[] = {"test", "--round-timeout", "nan", NULL};
    assert_int_equal(cli_parse(&p, 3, nan_timeout, &cfg), CLI_USAGE_ERROR);
}

/* ---- topics ---- */

static void test_topics_round_trip_and_reject_others(void **state)
{
    (void)state;
    char t[TOPIC_MAX];
    topic_round_grad(t, "mnist", 17, 3);
    assert_string_equal(t, "esgd/mnist/round/17/grad/3");
    topic_info i = topic_parse(t, "mnist");
    assert_int_equal(i.kind, TOPIC_ROUND_GRAD);
    assert_int_equal(i.round, 17);
    assert_int_equal(i.agent, 3);
    topic_round_model(t, "mnist", 4294967295u);
    i = topic_parse(t, "mnist");
    assert_int_equal(i.kind, TOPIC_ROUND_MODEL);
    assert_int_equal(i.round, 4294967295u);
    topic_config(t, "mnist");
    assert_int_equal(topic_parse(t, "mnist").kind, TOPIC_CONFIG);
    topic_latest_model(t, "mnist");
    assert_int_equal(topic_parse(t, "mnist").kind, TOPIC_LATEST_MODEL);
    topic_status(t, "mnist", 9);
    i = topic_parse(t, "mnist");
    assert_int_equal(i.kind, TOPIC_STATUS);
    assert_int_equal(i.agent, 9);
    topic_agent_model(t, "mnist", 12);
    assert_string_equal(t, "esgd/mnist/agent/12/model");
    i = topic_parse(t, "mnist");
    assert_int_equal(i.kind, TOPIC_AGENT_MODEL);
    assert_int_equal(i.agent, 12);
    topic_agent_config(t, "mnist", 7);
    assert_string_equal(t, "esgd/mnist/agent/7/config");
    i = topic_parse(t, "mnist");
    assert_int_equal(i.kind, TOPIC_AGENT_CONFIG);
    assert_int_equal(i.agent, 7);

    static const char *const others[] = {
        "esgd/mnist2/config",           "esgd/mnis/config",          "esgd/mnist/round/4294967296/model",
        "esgd/mnist/round/01/model",    "esgd/mnist/round/-1/model", "esgd/mnist/round/3/grad/",
        "esgd/mnist/round/3/grad/1/x",  "esgd/mnist/round//model",   "esgd/mnist/status/",
        "esgd/mnist/status/1a",         "esgd/mnist",                "",
        "esgd/mnist/round/3/modelx",    "other/mnist/config",        "esgd/mnist/agent/1",
        "esgd/mnist/agent/1/model/x",   "esgd/mnist/agent//model",   "esgd/mnist/agent/01/model",
        "esgd/mnist/agent/1/configx",   "esgd/mnist/agent/x/config",
    };
    for (size_t k = 0; k < sizeof others / sizeof others[0]; k++)
        if (topic_parse(others[k], "mnist").kind != TOPIC_UNKNOWN)
            fail_msg("'%s' was taken for a topic of job mnist", others[k]);

    /* A broker that turns '.' into levels (RabbitMQ) is recognised. */
    assert_true(topic_splits_job_name("esgd/it/rmq/config", "it.rmq"));
    assert_true(topic_splits_job_name("esgd/a/b/c/round/3/model", "a.b.c"));
    assert_false(topic_splits_job_name("esgd/it.rmq/config", "it.rmq"));
    assert_false(topic_splits_job_name("esgd/it/rmq", "it.rmq"));
    assert_false(topic_splits_job_name("esgd/it/rmqx/config", "it.rmq"));
    assert_false(topic_splits_job_name("esgd/mnist/config", "mnist"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_every_damage_is_reported, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(test_block_length_is_checked, make_dir, remove_dir),
        cmocka_unit_test(test_write_to_a_missing_folder_fails_cleanly),
        cmocka_unit_test_setup_teardown(test_streamed_file_equals_the_built_one, make_dir, remove_dir),
        cmocka_unit_test(test_cli_flags_environment_and_job_options),
        cmocka_unit_test(test_topics_round_trip_and_reject_others),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
