/* The JSON writer (json_writer.h): string escaping (quotes, backslash,
 * control characters, UTF-8 passed through, bytes that are not UTF-8
 * replaced), null for NaN and infinity, and both layouts byte for byte as
 * the programs printed them before (tests and scripts parse that text). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "test_skip.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "esgd/json_writer.h"

/* ---- output into a string ---- */

typedef struct capture {
    char *text;
    size_t size;
    FILE *out;
} capture;

static void capture_begin(capture *c)
{
    c->text = NULL;
    c->size = 0;
    c->out = open_memstream(&c->text, &c->size);
    assert_non_null(c->out);
}

/* What was written; free it. */
static char *capture_end(capture *c)
{
    fclose(c->out);
    return c->text;
}

static void assert_quoted(const char *s, const char *expected)
{
    capture c;
    capture_begin(&c);
    json_writer_quote(c.out, s);
    char *text = capture_end(&c);
    assert_string_equal(text, expected);
    free(text);
}

/* ---- escaping ---- */

static void test_plain_strings_unchanged(void **state)
{
    (void)state;
    assert_quoted("", "\"\"");
    assert_quoted("mnist", "\"mnist\"");
    assert_quoted("tcp://127.0.0.1:1883/a b_c.d-e~!#$%&'()*+,;=?@[]^`{|}", "\"tcp://127.0.0.1:1883/a b_c.d-e~!#$%&'()*+,;=?@[]^`{|}\"");
    assert_quoted(NULL, "null");
}

static void test_quotes_backslash_and_control_characters(void **state)
{
    (void)state;
    assert_quoted("say \"hi\"", "\"say \\\"hi\\\"\"");
    assert_quoted("C:\\dir\\", "\"C:\\\\dir\\\\\"");
    assert_quoted("a\nb\tc\rd\be\ff", "\"a\\nb\\tc\\rd\\be\\ff\"");
    assert_quoted("\x01\x1f", "\"\\u0001\\u001f\"");
    assert_quoted("esgd/mnist/\x1b[31mred", "\"esgd/mnist/\\u001b[31mred\"");
    /* DEL is allowed in a JSON string as it is. */
    assert_quoted("\x7f", "\"\x7f\"");
    /* A key is escaped the same way. */
    capture c;
    capture_begin(&c);
    json_writer w;
    json_writer_init(&w, c.out);
    json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
    json_writer_string(&w, "a\"b", "x\\y");
    json_writer_object_end(&w);
    char *text = capture_end(&c);
    assert_string_equal(text, "{\"a\\\"b\": \"x\\\\y\"}");
    free(text);
}

static void test_utf8_passes_through(void **state)
{
    (void)state;
    /* 2, 3 and 4 bytes, U+2028 (valid in JSON), the largest code point. */
    assert_quoted("caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e \xe2\x80\xa8 \xf4\x8f\xbf\xbf",
                  "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e \xe2\x80\xa8 \xf4\x8f\xbf\xbf\"");
}

static void test_bytes_that_are_not_utf8_are_replaced(void **state)
{
    (void)state;
    /* Each byte that does not start a valid sequence becomes U+FFFD; the
     * bytes after it are looked at afresh. */
    assert_quoted("a\x80z", "\"a\\ufffdz\"");                     /* stray continuation byte */
    assert_quoted("\xe2\x82", "\"\\ufffd\\ufffd\"");              /* sequence cut by the end */
    assert_quoted("\xe2\x82z", "\"\\ufffd\\ufffdz\"");            /* ... or by an ASCII byte */
    assert_quoted("\xc0\xaf", "\"\\ufffd\\ufffd\"");              /* overlong '/' */
    assert_quoted("\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\"");   /* overlong, 3 bytes */
    assert_quoted("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");   /* a UTF-16 surrogate */
    assert_quoted("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* past U+10FFFF */
    assert_quoted("\xff\xfe", "\"\\ufffd\\ufffd\"");
    assert_quoted("\xc3\xa9\xc3", "\"\xc3\xa9\\ufffd\"");        /* valid, then cut */
}

/* ---- values and layout ---- */

static void test_numbers_and_literals(void **state)
{
    (void)state;
    capture c;
    capture_begin(&c);
    json_writer w;
    json_writer_init(&w, c.out);
    json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
    json_writer_uint(&w, "zero", 0);
    json_writer_uint(&w, "max", UINT64_MAX);
    json_writer_real(&w, "drop", 0.875);
    json_writer_real(&w, "big", 1e7);
    json_writer_real(&w, "nan", NAN);
    json_writer_fixed(&w, "acc", 0.98125, 4);
    json_writer_fixed(&w, "whole", 12345.6, 0);
    json_writer_fixed(&w, "inf", INFINITY, 2);
    json_writer_fixed(&w, "minus_inf", -INFINITY, 2);
    json_writer_bool(&w, "yes", true);
    json_writer_bool(&w, "no", false);
    json_writer_null(&w, "none");
    json_writer_string(&w, "nothing", NULL);
    json_writer_object_end(&w);
    char *text = capture_end(&c);
    assert_string_equal(text, "{\"zero\": 0, \"max\": 18446744073709551615, \"drop\": 0.875, \"big\": 1e+07, "
                              "\"nan\": null, \"acc\": 0.9812, \"whole\": 12346, \"inf\": null, "
                              "\"minus_inf\": null, \"yes\": true, \"no\": false, \"none\": null, "
                              "\"nothing\": null}");
    free(text);
}

/* esgd-watch's object, as its printf wrote it. */
static void test_inline_layout_as_before(void **state)
{
    (void)state;
    capture c;
    capture_begin(&c);
    json_writer w;
    json_writer_init(&w, c.out);
    json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
    json_writer_string(&w, "job", "mnist");
    json_writer_bool(&w, "done", true);
    json_writer_uint(&w, "last_round", 41);
    for (int i = 0; i < 2; i++) {
        json_writer_object_begin(&w, i ? "update" : "config", JSON_WRITER_INLINE);
        json_writer_uint(&w, "messages", 3);
        json_writer_uint(&w, "bytes", 300);
        json_writer_uint(&w, "invalid", 0);
        json_writer_object_end(&w);
    }
    json_writer_array_begin(&w, "empty", JSON_WRITER_INLINE);
    json_writer_array_end(&w);
    json_writer_array_begin(&w, "list", JSON_WRITER_INLINE);
    json_writer_uint(&w, NULL, 1);
    json_writer_uint(&w, NULL, 2);
    json_writer_array_end(&w);
    json_writer_string(&w, "first_error", "");
    json_writer_object_end(&w);
    char *text = capture_end(&c);
    char expected[512];
    snprintf(expected, sizeof expected,
             "{\"job\": \"%s\", \"done\": %s, \"last_round\": %u, \"config\": {\"messages\": %llu, \"bytes\": %llu, "
             "\"invalid\": %llu}, \"update\": {\"messages\": %llu, \"bytes\": %llu, \"invalid\": %llu}, "
             "\"empty\": [], \"list\": [1, 2], \"first_error\": \"\"}",
             "mnist", "true", 41u, 3ull, 300ull, 0ull, 3ull, 300ull, 0ull);
    assert_string_equal(text, expected);
    free(text);
}

/* esgd-bench's object: one member per line, arrays of one-line objects. */
static void test_lines_layout_as_before(void **state)
{
    (void)state;
    capture c;
    capture_begin(&c);
    json_writer w;
    json_writer_init(&w, c.out);
    json_writer_object_begin(&w, NULL, JSON_WRITER_LINES);
    json_writer_object_begin(&w, "training_samples_per_second", JSON_WRITER_INLINE);
    json_writer_uint(&w, "batch", 32);
    json_writer_fixed(&w, "lenet", 6209.4, 0);
    json_writer_object_end(&w);
    json_writer_array_begin(&w, "codec", JSON_WRITER_LINES);
    for (int i = 0; i < 2; i++) {
        json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
        json_writer_real(&w, "drop", i ? 0.99 : 0.0);
        json_writer_string(&w, "values", i ? "f16" : "f32");
        json_writer_object_end(&w);
    }
    json_writer_array_end(&w);
    json_writer_array_begin(&w, "empty", JSON_WRITER_LINES);
    json_writer_array_end(&w);
    json_writer_fixed(&w, "memory_triad_GBps", 11.25, 1);
    json_writer_object_end(&w);
    fputc('\n', c.out);
    char *text = capture_end(&c);
    assert_string_equal(text, "{\n"
                              "  \"training_samples_per_second\": {\"batch\": 32, \"lenet\": 6209},\n"
                              "  \"codec\": [\n"
                              "    {\"drop\": 0, \"values\": \"f32\"},\n"
                              "    {\"drop\": 0.99, \"values\": \"f16\"}\n"
                              "  ],\n"
                              "  \"empty\": [],\n"
                              "  \"memory_triad_GBps\": 11.2\n"
                              "}\n");
    free(text);
}

static void test_writer_escapes_strings(void **state)
{
    (void)state;
    capture c;
    capture_begin(&c);
    json_writer w;
    json_writer_init(&w, c.out);
    json_writer_object_begin(&w, NULL, JSON_WRITER_INLINE);
    json_writer_string(&w, "job", "a\"b\\c\n\xff");
    json_writer_object_end(&w);
    char *text = capture_end(&c);
    assert_string_equal(text, "{\"job\": \"a\\\"b\\\\c\\n\\ufffd\"}");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_strings_unchanged),
        cmocka_unit_test(test_quotes_backslash_and_control_characters),
        cmocka_unit_test(test_utf8_passes_through),
        cmocka_unit_test(test_bytes_that_are_not_utf8_are_replaced),
        cmocka_unit_test(test_numbers_and_literals),
        cmocka_unit_test(test_inline_layout_as_before),
        cmocka_unit_test(test_lines_layout_as_before),
        cmocka_unit_test(test_writer_escapes_strings),
    };
    return test_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
