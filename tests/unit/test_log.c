/* Unit tests for common/log.c: the sanitising rule (log.h) and the line writer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "log.h"

/* Sanitises src into a large buffer and checks the whole result. */
static void expect(const char *src, const char *want)
{
    char out[256];
    size_t n = log_sanitize(out, sizeof out, src);
    if (strcmp(out, want) != 0)
        fail_msg("sanitised \"%s\" to \"%s\", want \"%s\"", src, out, want);
    assert_int_equal(n, strlen(want));
}

static void test_plain_text_unchanged(void **state)
{
    (void)state;
    expect("", "");
    expect("plain text: 42 rows, 'quoted' \"double\" ~!@#$%^&*()", "plain text: 42 rows, 'quoted' "
                                                                   "\"double\" ~!@#$%^&*()");
    expect("a\\nb", "a\\nb"); /* a literal backslash is left alone */
    expect(NULL, "");
}

static void test_newline_cr_tab(void **state)
{
    (void)state;
    expect("boom\nWATCHDOG=trigger\nSTOPPING=1", "boom\\nWATCHDOG=trigger\\nSTOPPING=1");
    expect("a\r\nb", "a\\r\\nb");
    expect("col\tcol", "col\\tcol");
    expect("\n", "\\n");
}

static void test_escape_and_controls(void **state)
{
    (void)state;
    expect("\x1b[2Jcleared", "\\x1b[2Jcleared");
    expect("del\x7f", "del\\x7f");
    expect("\x01\x02\x1f", "\\x01\\x02\\x1f");
    expect("bell\a", "bell\\x07");
    /* journald reads "<3>" at a line start as a priority: after a newline it would forge one */
    expect("x\n<3>fake error", "x\\n<3>fake error");
    /* C1 controls, encoded in UTF-8: U+009B is CSI on some terminals, U+0085 is NEL */
    expect("\xc2\x9b"
           "2J",
           "\\u009b2J");
    expect("a\xc2\x85"
           "b",
           "a\\u0085b");
    expect("\xc2\x80", "\\u0080");
    /* Unicode line and paragraph separators */
    expect("a\xe2\x80\xa8"
           "b\xe2\x80\xa9",
           "a\\u2028b\\u2029");
}

static void test_utf8(void **state)
{
    (void)state;
    /* valid multi-byte characters pass unchanged: é, €, 😀, U+00A0 (first after C1) */
    expect("caf\xc3\xa9", "caf\xc3\xa9");
    expect("\xe2\x82\xac 5", "\xe2\x82\xac 5");
    expect("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80");
    expect("\xc2\xa0", "\xc2\xa0");
    expect("\xe2\x80\xa7", "\xe2\x80\xa7"); /* U+2027, next to the separators */
    /* invalid bytes are shown, one escape per byte */
    expect("bad\xff"
           "byte",
           "bad\\xffbyte");
    expect("\x80", "\\x80");                            /* stray continuation byte */
    expect("\xc3", "\\xc3");                            /* cut at the end */
    expect("\xc3(", "\\xc3(");                          /* cut by an ASCII byte */
    expect("\xc0\xaf", "\\xc0\\xaf");                   /* overlong '/' */
    expect("\xe0\x80\xaf", "\\xe0\\x80\\xaf");          /* overlong, 3 bytes */
    expect("\xed\xa0\x80", "\\xed\\xa0\\x80");          /* a surrogate (U+D800) */
    expect("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80"); /* above U+10FFFF */
    expect("\xe2\x82", "\\xe2\\x82");                   /* a 3-byte character cut after 2 */
}

/* Truncation: dst is cut between units only, and the return value says how long the whole
 * text would be. */
static void test_truncation(void **state)
{
    (void)state;
    char out[16];
    size_t n;

    n = log_sanitize(out, 6, "abcdefgh");
    assert_string_equal(out, "abcde");
    assert_int_equal(n, 8);

    /* "é" is 2 bytes: 5 bytes of room hold "ab" + "é" (4 bytes), not a half of the next */
    n = log_sanitize(out, 6, "ab\xc3\xa9\xc3\xa9");
    assert_string_equal(out, "ab\xc3\xa9");
    assert_int_equal(n, 6);
    n = log_sanitize(out, 5, "ab\xc3\xa9\xc3\xa9");
    assert_string_equal(out, "ab\xc3\xa9");
    n = log_sanitize(out, 4, "ab\xc3\xa9");
    assert_string_equal(out, "ab");
    assert_int_equal(n, 4);

    /* a 4-byte character needs 4 bytes */
    n = log_sanitize(out, 4, "\xf0\x9f\x98\x80");
    assert_string_equal(out, "");
    assert_int_equal(n, 4);

    /* an escape is never cut: "\x1b" is 4 bytes */
    n = log_sanitize(out, 6,
                     "a\x1b"
                     "b");
    assert_string_equal(out, "a\\x1b");
    assert_int_equal(n, 6);
    n = log_sanitize(out, 5,
                     "a\x1b"
                     "b");
    assert_string_equal(out, "a");
    n = log_sanitize(out, 3, "a\nb");
    assert_string_equal(out, "a");
    assert_int_equal(n, 4);
    n = log_sanitize(out, 7, "x\xc2\x9b");
    assert_string_equal(out, "x");
    assert_int_equal(n, 7);

    /* once a unit does not fit, a shorter one after it is not written either */
    n = log_sanitize(out, 4,
                     "ab\x1b"
                     "c");
    assert_string_equal(out, "ab");
    assert_int_equal(n, 7);

    /* dstlen 1: just the NUL; dstlen 0: nothing written at all */
    n = log_sanitize(out, 1, "abc");
    assert_string_equal(out, "");
    assert_int_equal(n, 3);
    memcpy(out, "untouched", 10);
    n = log_sanitize(out, 0, "abc");
    assert_int_equal(n, 3);
    assert_string_equal(out, "untouched");
    assert_int_equal(log_sanitize(NULL, 0, "a\n"), 3);
}

/* ---- the line writer ---- */

/* Runs fn with stderr sent to a temporary file, under JOURNAL_STREAM (so lines start with
 * "<N>subsys: " and carry no timestamp), and returns what was written (malloc'd). */
static char *capture(void (*fn)(void), size_t *len)
{
    char path[] = "/tmp/test_log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    setenv("JOURNAL_STREAM", "8:1", 1);
    log_init();
    log_set_level(LOG_LVL_DEBUG);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    unsetenv("JOURNAL_STREAM");
    log_init();
    off_t size = lseek(fd, 0, SEEK_END);
    assert_true(size >= 0);
    char *data = malloc((size_t)size + 1);
    assert_non_null(data);
    assert_int_equal(pread(fd, data, (size_t)size, 0), size);
    data[size] = '\0';
    close(fd);
    *len = (size_t)size;
    return data;
}

static void write_hostile(void)
{
    log_error("druid", "query failed: %s", "boom\nWATCHDOG=trigger\n<3>forged\x1b[2J\x7f\xff");
    log_info("pg", "relation \"%s\" ok", "caf\xc3\xa9");
}

static void test_line_writer_sanitises(void **state)
{
    (void)state;
    size_t len;
    char *out = capture(write_hostile, &len);
    assert_string_equal(out, "<3>druid: query failed: boom\\nWATCHDOG=trigger\\n<3>forged"
                             "\\x1b[2J\\x7f\\xff\n"
                             "<6>pg: relation \"caf\xc3\xa9\" ok\n");
    free(out);
}

static char *g_long;

static void write_long(void)
{
    log_warning("sched", "%s", g_long);
}

/* Checks one captured long line: a single line of at most LOG_LINE_MAX bytes ending in the
 * marker, whose message is a whole number of units (unit bytes each, all equal to unit). */
static void check_long_line(const char *unit)
{
    size_t len;
    char *out = capture(write_long, &len);
    const char *prefix = "<4>sched: ";
    size_t ulen = strlen(unit), plen = strlen(prefix), mlen = strlen(LOG_TRUNCATED);
    assert_true(len <= LOG_LINE_MAX);
    assert_true(len >= LOG_LINE_MAX + 1 - ulen); /* cut as late as the units allow */
    assert_int_equal(memcmp(out, prefix, plen), 0);
    assert_int_equal(out[len - 1], '\n');
    assert_null(memchr(out, '\n', len - 1)); /* exactly one line */
    assert_int_equal(memcmp(out + len - 1 - mlen, LOG_TRUNCATED, mlen), 0);
    size_t body = len - 1 - mlen - plen;
    assert_int_equal(body % ulen, 0);
    for (size_t i = 0; i < body; i += ulen)
        if (memcmp(out + plen + i, unit, ulen) != 0)
            fail_msg("unit %zu of the cut message is not \"%s\"", i / ulen, unit);
    free(out);
}

static void test_line_writer_truncates_cleanly(void **state)
{
    (void)state;
    size_t n = 3 * LOG_LINE_MAX;
    g_long = malloc(n * 4 + 1);
    assert_non_null(g_long);

    memset(g_long, 'a', n);
    g_long[n] = '\0';
    check_long_line("a");

    /* 2-byte characters: never half of one */
    for (size_t i = 0; i < n; i++)
        memcpy(g_long + 2 * i, "\xc3\xa9", 2);
    g_long[2 * n] = '\0';
    check_long_line("\xc3\xa9");

    /* 4-byte characters, longer than the raw buffer too */
    for (size_t i = 0; i < n; i++)
        memcpy(g_long + 4 * i, "\xf0\x9f\x98\x80", 4);
    g_long[4 * n] = '\0';
    check_long_line("\xf0\x9f\x98\x80");

    /* escapes: never half of "\x1b" */
    memset(g_long, 0x1b, n);
    g_long[n] = '\0';
    check_long_line("\\x1b");

    /* a message that fits exactly is not marked */
    size_t len;
    memset(g_long, 'b', LOG_LINE_MAX);
    size_t fit = LOG_LINE_MAX - strlen("<4>sched: ") - 1;
    g_long[fit] = '\0';
    char *out = capture(write_long, &len);
    assert_int_equal(len, LOG_LINE_MAX);
    assert_null(strstr(out, LOG_TRUNCATED));
    free(out);
    g_long[fit] = 'b';
    g_long[fit + 1] = '\0';
    out = capture(write_long, &len);
    assert_non_null(strstr(out, LOG_TRUNCATED));
    assert_true(len <= LOG_LINE_MAX);
    free(out);

    free(g_long);
}

/* ---- json lines ---- */

static void write_json_event(void)
{
    log_set_format(LOG_FORMAT_JSON);
    log_event(LOG_LVL_ERROR, "sched",
              LOG_FIELDS(.datasource = "wiki\"pedia\n\xff", .rows = 0, .has_rows = true, .slice = 3,
                         .error_kind = "postgres", .sqlstate = "23514",
                         .druid_code = "Query timeout", .http_status = 504),
              "%s: slice %d failed: %s", "wikipedia", 3, "boom\nWATCHDOG=trigger\\ \"q\" /");
    log_event(LOG_LVL_INFO, "main", NULL, "plain %d", 1);
    log_set_format(LOG_FORMAT_TEXT);
}

static struct json_object *parse_one(const char *line, size_t len)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = json_tokener_parse_ex(tok, line, (int)len);
    assert_int_equal(json_tokener_get_error(tok), json_tokener_success);
    assert_int_equal(json_tokener_get_parse_end(tok), len); /* nothing after the object */
    json_tokener_free(tok);
    assert_true(json_object_is_type(o, json_type_object));
    return o;
}

static const char *member(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return NULL;
    return json_object_get_string(v);
}

static void test_json_line(void **state)
{
    (void)state;
    size_t len;
    char *out = capture(write_json_event, &len);
    /* two lines, each "<N>" then one object */
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_int_equal(out[len - 1], '\n');
    assert_ptr_equal(strchr(nl + 1, '\n'), out + len - 1);
    assert_int_equal(strncmp(out, "<3>{", 4), 0);
    assert_int_equal(strncmp(nl + 1, "<6>{", 4), 0);

    struct json_object *o = parse_one(out + 3, (size_t)(nl - out) - 3);
    const char *t = member(o, "time");
    assert_non_null(t);
    /* 2026-12-01T10:11:12.345Z */
    assert_int_equal(strlen(t), 24);
    assert_int_equal(t[10], 'T');
    assert_int_equal(t[23], 'Z');
    assert_string_equal(member(o, "level"), "error");
    assert_string_equal(member(o, "subsystem"), "sched");
    /* strings are the sanitised text, then JSON-escaped: decoding gives the text line's words */
    assert_string_equal(member(o, "datasource"), "wiki\"pedia\\n\\xff");
    assert_string_equal(member(o, "message"),
                        "wikipedia: slice 3 failed: boom\\nWATCHDOG=trigger\\ \"q\" /");
    assert_string_equal(member(o, "rows"), "0");
    assert_string_equal(member(o, "slice"), "3");
    assert_string_equal(member(o, "error_kind"), "postgres");
    assert_string_equal(member(o, "sqlstate"), "23514");
    assert_string_equal(member(o, "druid_code"), "Query timeout");
    assert_string_equal(member(o, "http_status"), "504");
    assert_null(member(o, "target"));
    struct json_object *v;
    assert_true(json_object_object_get_ex(o, "rows", &v));
    assert_true(json_object_is_type(v, json_type_int));
    json_object_put(o);

    o = parse_one(nl + 4, (size_t)(out + len - 1 - (nl + 4)));
    assert_string_equal(member(o, "level"), "info");
    assert_string_equal(member(o, "message"), "plain 1");
    /* absent fields are absent, not zero */
    assert_null(member(o, "rows"));
    assert_null(member(o, "slice"));
    assert_null(member(o, "datasource"));
    assert_null(member(o, "http_status"));
    json_object_put(o);
    free(out);
}

static void write_text_event(void)
{
    log_event(LOG_LVL_WARNING, "pg", LOG_FIELDS(.datasource = "d", .sqlstate = "40001"),
              "retrying: %s", "x\ny");
    log_msg(LOG_LVL_WARNING, "pg", "retrying: %s", "x\ny");
}

static void test_text_mode_ignores_fields(void **state)
{
    (void)state;
    size_t len;
    char *out = capture(write_text_event, &len);
    assert_string_equal(out, "<4>pg: retrying: x\\ny\n<4>pg: retrying: x\\ny\n");
    free(out);
}

static char *g_json_long;

static void write_json_long(void)
{
    log_set_format(LOG_FORMAT_JSON);
    log_event(LOG_LVL_WARNING, "druid", LOG_FIELDS(.datasource = g_json_long), "%s", g_json_long);
    log_set_format(LOG_FORMAT_TEXT);
}

static void test_json_long_line(void **state)
{
    (void)state;
    /* backslashes and quotes double when JSON-escaped: the object still fits one line */
    const char *units[] = {"\\", "\"", "a", "\xc3\xa9", "\x1b"};
    for (size_t u = 0; u < sizeof units / sizeof *units; u++) {
        size_t n = 2 * LOG_LINE_MAX, ul = strlen(units[u]);
        g_json_long = malloc(n * ul + 1);
        assert_non_null(g_json_long);
        for (size_t i = 0; i < n; i++)
            memcpy(g_json_long + i * ul, units[u], ul);
        g_json_long[n * ul] = '\0';
        size_t len;
        char *out = capture(write_json_long, &len);
        assert_true(len <= LOG_LINE_MAX);
        assert_true(len > LOG_LINE_MAX / 2); /* cut, not dropped */
        assert_null(memchr(out, '\n', len - 1));
        struct json_object *o = parse_one(out + 3, len - 4);
        const char *m = member(o, "message");
        size_t ml = strlen(m), tl = strlen(LOG_TRUNCATED);
        assert_true(ml > tl);
        assert_string_equal(m + ml - tl, LOG_TRUNCATED);
        json_object_put(o);
        free(out);
        free(g_json_long);
    }
}

static void test_format_parse(void **state)
{
    (void)state;
    enum log_format f = LOG_FORMAT_TEXT;
    assert_int_equal(log_format_parse("json", &f), 0);
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("text", &f), 0);
    assert_int_equal(f, LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("JSON", &f), -1);
    assert_int_equal(log_format_parse(NULL, &f), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_text_unchanged),
        cmocka_unit_test(test_newline_cr_tab),
        cmocka_unit_test(test_escape_and_controls),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_line_writer_sanitises),
        cmocka_unit_test(test_line_writer_truncates_cleanly),
        cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_text_mode_ignores_fields),
        cmocka_unit_test(test_json_long_line),
        cmocka_unit_test(test_format_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
