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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
