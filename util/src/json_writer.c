/* The JSON writer of json_writer.h: separators and indentation from a
 * small stack of open containers, and the string escaping every program's
 * JSON goes through. */
#include "esgd/json_writer.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>

void json_writer_init(json_writer *w, FILE *out)
{
    w->out = out;
    w->depth = 0;
}

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 if the bytes there
 * are not one: a stray continuation byte, a truncated sequence, an overlong
 * form, a surrogate or a code point past U+10FFFF. */
static int utf8_length(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    int n;
    uint32_t cp, least;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2, cp = s[0] & 0x1fu, least = 0x80;
    } else if ((s[0] & 0xf0) == 0xe0) {
        n = 3, cp = s[0] & 0x0fu, least = 0x800;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4, cp = s[0] & 0x07u, least = 0x10000;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* the terminating NUL stops here too */
            return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    if (cp < least || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* The characters JSON escapes with a letter: '"' as \", '\n' as \n... */
static const char short_escape[] = {['"'] = '"', ['\\'] = '\\', ['\b'] = 'b', ['\f'] = 'f',
                                    ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};

void json_writer_quote(FILE *out, const char *s)
{
    if (!s) {
        fputs("null", out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)s; *c;) {
        if (*c < sizeof short_escape && short_escape[*c]) {
            fputc('\\', out);
            fputc(short_escape[*c], out);
            c++;
        } else if (*c < 0x20) {
            fprintf(out, "\\u%04x", *c);
            c++;
        } else {
            int n = utf8_length(c);
            if (n == 0) { /* not UTF-8: one replacement character per byte */
                fputs("\\ufffd", out);
                n = 1;
            } else {
                fwrite(c, 1, (size_t)n, out);
            }
            c += n;
        }
    }
    fputc('"', out);
}

static void indent(json_writer *w)
{
    fputc('\n', w->out);
    for (int i = 0; i < w->depth; i++)
        fputs("  ", w->out);
}

/* Everything before a value: the comma, the line break and indentation,
 * and the key. */
static void member(json_writer *w, const char *key)
{
    if (w->depth == 0) {
        assert(!key && "a top-level value has no key");
        return;
    }
    json_writer_level *top = &w->open[w->depth - 1];
    assert(top->array ? !key : key != NULL);
    if (top->has_items)
        fputc(',', w->out);
    if (top->lines)
        indent(w);
    else if (top->has_items)
        fputc(' ', w->out);
    top->has_items = true;
    if (key) {
        json_writer_quote(w->out, key);
        fputs(": ", w->out);
    }
}

static void begin(json_writer *w, const char *key, json_writer_layout layout, bool array)
{
    assert(w->depth < JSON_WRITER_MAX_DEPTH);
    member(w, key);
    fputc(array ? '[' : '{', w->out);
    w->open[w->depth].array = array;
    w->open[w->depth].lines = layout == JSON_WRITER_LINES;
    w->open[w->depth].has_items = false;
    w->depth++;
}

static void end(json_writer *w, bool array)
{
    assert(w->depth > 0 && w->open[w->depth - 1].array == array);
    w->depth--;
    if (w->open[w->depth].lines && w->open[w->depth].has_items)
        indent(w);
    fputc(array ? ']' : '}', w->out);
}

void json_writer_object_begin(json_writer *w, const char *key, json_writer_layout layout)
{
    begin(w, key, layout, false);
}

void json_writer_object_end(json_writer *w)
{
    end(w, false);
}

void json_writer_array_begin(json_writer *w, const char *key, json_writer_layout layout)
{
    begin(w, key, layout, true);
}

void json_writer_array_end(json_writer *w)
{
    end(w, true);
}

void json_writer_string(json_writer *w, const char *key, const char *s)
{
    member(w, key);
    json_writer_quote(w->out, s);
}

void json_writer_uint(json_writer *w, const char *key, uint64_t value)
{
    member(w, key);
    fprintf(w->out, "%" PRIu64, value);
}

void json_writer_bool(json_writer *w, const char *key, bool value)
{
    member(w, key);
    fputs(value ? "true" : "false", w->out);
}

void json_writer_null(json_writer *w, const char *key)
{
    member(w, key);
    fputs("null", w->out);
}

void json_writer_real(json_writer *w, const char *key, double value)
{
    member(w, key);
    if (isfinite(value))
        fprintf(w->out, "%g", value);
    else
        fputs("null", w->out);
}

void json_writer_fixed(json_writer *w, const char *key, double value, int digits)
{
    member(w, key);
    if (isfinite(value))
        fprintf(w->out, "%.*f", digits, value);
    else
        fputs("null", w->out);
}
