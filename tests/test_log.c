/* Rate-limited logging (log_*_limited): one line per interval per limiter,
 * the count of what was left out on the next line and on a flush, separate
 * limiters independent, and exact counts with two threads sharing one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "test_skip.h"
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "esgd/log.h"

/* ---- stderr into a file for the checks ---- */

static char capture_path[64];
static int saved_stderr = -1;

static void capture_begin(void)
{
    snprintf(capture_path, sizeof capture_path, "/tmp/esgd-test-log.XXXXXX");
    int fd = mkstemp(capture_path);
    assert_true(fd >= 0);
    fflush(stderr);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* Restores stderr and returns what was written meanwhile (free it). */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    FILE *f = fopen(capture_path, "r");
    assert_non_null(f);
    char *text = calloc(1, 1 << 16);
    assert_non_null(text);
    size_t n = fread(text, 1, (1 << 16) - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(capture_path);
    return text;
}

static int count_lines(const char *text)
{
    int n = 0;
    for (; *text; text++)
        n += *text == '\n';
    return n;
}

static void sleep_seconds(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* ---- tests ---- */

static void test_one_line_per_interval(void **state)
{
    (void)state;
    log_limiter lim = LOG_LIMITER(0.5);
    capture_begin();
    for (int i = 0; i < 1000; i++)
        log_warn_limited(&lim, "update %d rejected", i);
    sleep_seconds(0.6);
    log_warn_limited(&lim, "update %d rejected", 1000);
    for (int i = 0; i < 5; i++)
        log_warn_limited(&lim, "update %d rejected", 1001 + i);
    log_limiter_flush(&lim, "rejected updates");
    log_limiter_flush(&lim, "rejected updates"); /* nothing left out: no line */
    char *out = capture_end();
    fprintf(stderr, "%s", out);
    assert_int_equal(count_lines(out), 3);
    assert_non_null(strstr(out, "test_log warning: update 0 rejected\n"));
    /* 999 left out between the first line and the one 0.6 s later. */
    assert_non_null(strstr(out, "warning: update 1000 rejected (and 999 more like it in the last 0."));
    assert_non_null(strstr(out, "warning: 5 more rejected updates in the last 0."));
    free(out);
}

static void test_limiters_are_independent(void **state)
{
    (void)state;
    log_limiter a = LOG_LIMITER(60), b = LOG_LIMITER(60);
    capture_begin();
    log_info_limited(&a, "status flood from agent %d", 1);
    log_info_limited(&b, "status flood from agent %d", 2);
    log_info_limited(&a, "status flood from agent %d", 1);
    char *out = capture_end();
    fprintf(stderr, "%s", out);
    assert_int_equal(count_lines(out), 2);
    assert_non_null(strstr(out, "test_log status flood from agent 1\n"));
    assert_non_null(strstr(out, "test_log status flood from agent 2\n"));
    free(out);
}

static log_limiter shared = LOG_LIMITER(60);

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++)
        log_warn_limited(&shared, "reconnect failed");
    return NULL;
}

static void test_shared_between_threads(void **state)
{
    (void)state;
    capture_begin();
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    log_limiter_flush(&shared, "failures");
    char *out = capture_end();
    fprintf(stderr, "%s", out);
    assert_int_equal(count_lines(out), 2);
    assert_non_null(strstr(out, "warning: reconnect failed\n"));
    assert_non_null(strstr(out, "warning: 39999 more failures in the last "));
    free(out);
}

int main(void)
{
    log_set_subject("test_log");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_line_per_interval),
        cmocka_unit_test(test_limiters_are_independent),
        cmocka_unit_test(test_shared_between_threads),
    };
    return test_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
