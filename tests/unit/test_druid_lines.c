/* test_druid_lines: arrayLines framing, end marker and truncation, at every split point. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "druid_lines.h"

/* Lines joined with '|', so a test can compare what came out in one string. */
struct collect {
    struct buf out;
    int nlines;
    int stop_at; /* return 7 from the callback for this line number (1-based); 0 = never */
};

static int collect_cb(void *ud, char *line, size_t len)
{
    struct collect *c = ud;
    assert_int_equal(line[len], '\0');
    assert_int_equal(strlen(line), len);
    assert_true(len > 0);
    c->nlines++;
    if (c->out.len)
        buf_putc(&c->out, '|');
    buf_append(&c->out, line, len);
    return c->nlines == c->stop_at ? 7 : 0;
}

struct result {
    int feed_rc;
    int finish_rc;
    int nlines;
    char joined[512];
};

/* Feeds body in pieces at the given cut points (sorted, unique, inside the body). */
static struct result run_cuts(const char *body, size_t len, const size_t *cuts, size_t ncuts,
                              size_t max_line)
{
    struct collect c = {BUF_INIT, 0, 0};
    struct druid_lines *l = druid_lines_new(max_line, collect_cb, &c);
    assert_non_null(l);
    struct result r = {0, 0, 0, ""};
    size_t pos = 0;
    for (size_t i = 0; i <= ncuts && r.feed_rc == 0; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        /* copy each piece to its own heap block so ASan catches reads past it */
        char *piece = malloc(end - pos + 1);
        memcpy(piece, body + pos, end - pos);
        r.feed_rc = druid_lines_feed(l, piece, end - pos);
        free(piece);
        pos = end;
    }
    r.finish_rc = druid_lines_finish(l);
    r.nlines = c.nlines;
    snprintf(r.joined, sizeof r.joined, "%s", c.out.data ? c.out.data : "");
    buf_free(&c.out);
    druid_lines_free(l);
    return r;
}

static struct result run_whole(const char *body)
{
    return run_cuts(body, strlen(body), NULL, 0, 1 << 20);
}

/* The same result for the whole body, every two-piece split and one byte at a time. */
static void check_all_splits(const char *body, int want_feed, int want_finish, int want_lines,
                             const char *want_joined)
{
    size_t len = strlen(body);
    struct result r = run_whole(body);
    assert_int_equal(r.feed_rc, want_feed);
    assert_int_equal(r.finish_rc, want_finish);
    assert_int_equal(r.nlines, want_lines);
    assert_string_equal(r.joined, want_joined);
    for (size_t cut = 0; cut <= len; cut++) {
        r = run_cuts(body, len, &cut, 1, 1 << 20);
        assert_int_equal(r.feed_rc, want_feed);
        assert_int_equal(r.finish_rc, want_finish);
        assert_int_equal(r.nlines, want_lines);
        assert_string_equal(r.joined, want_joined);
    }
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    r = run_cuts(body, len, cuts, len ? len - 1 : 0, 1 << 20);
    free(cuts);
    assert_int_equal(r.feed_rc, want_feed);
    assert_int_equal(r.finish_rc, want_finish);
    assert_int_equal(r.nlines, want_lines);
    assert_string_equal(r.joined, want_joined);
}

static const char reference_body[] =
    "[\"__time\",\"channel\",\"added\"]\n[\"LONG\",\"STRING\",\"LONG\"]\n[\"TIMESTAMP\","
    "\"VARCHAR\",\"BIGINT\"]\n[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",36]\n["
    "\"2015-09-12T00:47:00.496Z\",\"#ca.wikipedia\",17]\n\n";

static void test_reference_body(void **state)
{
    (void)state;
    check_all_splits(reference_body, 0, 0, 5,
                     "[\"__time\",\"channel\",\"added\"]|[\"LONG\",\"STRING\",\"LONG\"]|["
                     "\"TIMESTAMP\",\"VARCHAR\",\"BIGINT\"]|[\"2015-09-12T00:46:58.771Z\","
                     "\"#en.wikipedia\",36]|[\"2015-09-12T00:47:00.496Z\",\"#ca.wikipedia\",17]");
}

static void test_complete_small_bodies(void **state)
{
    (void)state;
    check_all_splits("\n\n", 0, 0, 0, "");               /* no header, no rows */
    check_all_splits("[\"a\"]\n\n", 0, 0, 1, "[\"a\"]"); /* header only */
    check_all_splits("[1]\n[1]\n\n", 0, 0, 2, "[1]|[1]");
    check_all_splits("{\"cnt\":1}\n{\"cnt\":1}\n\n", 0, 0, 2, "{\"cnt\":1}|{\"cnt\":1}");
}

static void test_truncated(void **state)
{
    (void)state;
    /* verbatim truncated bodies of the reference (§3.3) */
    check_all_splits("[1]\n[1]", 0, DRUID_LINES_E_TRUNCATED, 1, "[1]");
    check_all_splits("{\"cnt\":1}\n{\"cnt\":1}", 0, DRUID_LINES_E_TRUNCATED, 1, "{\"cnt\":1}");
    check_all_splits("[1]\n", 0, DRUID_LINES_E_TRUNCATED, 1, "[1]");
    check_all_splits("[1]\n[1]\n", 0, DRUID_LINES_E_TRUNCATED, 2, "[1]|[1]");
    check_all_splits("\n", 0, DRUID_LINES_E_TRUNCATED, 0, "");
    check_all_splits("[1]", 0, DRUID_LINES_E_TRUNCATED, 0, "");
    /* the reference body cut anywhere before its final newline */
    size_t len = strlen(reference_body);
    for (size_t cut = 0; cut < len; cut++) {
        struct result r = run_cuts(reference_body, cut, NULL, 0, 1 << 20);
        assert_int_equal(r.feed_rc, 0);
        assert_int_equal(r.finish_rc, DRUID_LINES_E_TRUNCATED);
    }
}

static void test_empty_body(void **state)
{
    (void)state;
    struct result r = run_whole("");
    assert_int_equal(r.finish_rc, DRUID_LINES_E_TRUNCATED);
    assert_int_equal(r.nlines, 0);
}

static void test_after_end(void **state)
{
    (void)state;
    check_all_splits("[1]\n\nX", DRUID_LINES_E_AFTER_END, DRUID_LINES_E_TRUNCATED, 1, "[1]");
    check_all_splits("[1]\n\n\n", DRUID_LINES_E_AFTER_END, DRUID_LINES_E_TRUNCATED, 1, "[1]");
    check_all_splits("\n\n\n", DRUID_LINES_E_AFTER_END, DRUID_LINES_E_TRUNCATED, 0, "");
    /* an empty line in the middle is an end marker followed by more data */
    check_all_splits("[1]\n\n[2]\n\n", DRUID_LINES_E_AFTER_END, DRUID_LINES_E_TRUNCATED, 1, "[1]");
    check_all_splits("\n[1]\n\n", DRUID_LINES_E_AFTER_END, DRUID_LINES_E_TRUNCATED, 0, "");
}

static void test_too_long(void **state)
{
    (void)state;
    const char *body = "[12]\n[123]\n\n";
    size_t len = strlen(body);
    /* exactly max_line bytes is fine */
    struct result r = run_cuts("[12]\n[34]\n\n", 11, NULL, 0, 4);
    assert_int_equal(r.feed_rc, 0);
    assert_int_equal(r.finish_rc, 0);
    assert_int_equal(r.nlines, 2);
    for (size_t cut = 0; cut <= len; cut++) {
        r = run_cuts(body, len, &cut, 1, 4);
        assert_int_equal(r.feed_rc, DRUID_LINES_E_TOOLONG);
        assert_int_equal(r.finish_rc, DRUID_LINES_E_TRUNCATED);
        assert_int_equal(r.nlines, 1);
    }
}

static void test_callback_stops(void **state)
{
    (void)state;
    struct collect c = {BUF_INIT, 0, 2};
    struct druid_lines *l = druid_lines_new(100, collect_cb, &c);
    assert_int_equal(druid_lines_feed(l, "[1]\n[2]\n[3]\n\n", 13), 7);
    assert_int_equal(c.nlines, 2);
    /* the failure sticks */
    assert_int_equal(druid_lines_feed(l, "[4]\n", 4), 7);
    assert_int_equal(c.nlines, 2);
    assert_int_equal(druid_lines_finish(l), DRUID_LINES_E_TRUNCATED);
    buf_free(&c.out);
    druid_lines_free(l);
}

static void test_many_lines_bounded(void **state)
{
    (void)state;
    /* 100k rows through a 64-byte line buffer, in 1000-byte chunks */
    struct buf body = BUF_INIT;
    for (int i = 0; i < 100000; i++)
        buf_printf(&body, "[\"2015-09-12T00:00:00.000Z\",%d]\n", i);
    buf_putc(&body, '\n');
    struct collect c = {BUF_INIT, 0, 0};
    struct druid_lines *l = druid_lines_new(64, collect_cb, &c);
    for (size_t pos = 0; pos < body.len; pos += 1000) {
        size_t n = body.len - pos < 1000 ? body.len - pos : 1000;
        assert_int_equal(druid_lines_feed(l, body.data + pos, n), 0);
    }
    assert_int_equal(druid_lines_feed(l, "", 0), 0);
    assert_int_equal(druid_lines_finish(l), 0);
    assert_int_equal(c.nlines, 100000);
    buf_free(&c.out);
    buf_free(&body);
    druid_lines_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_body), cmocka_unit_test(test_complete_small_bodies),
        cmocka_unit_test(test_truncated),      cmocka_unit_test(test_empty_body),
        cmocka_unit_test(test_after_end),      cmocka_unit_test(test_too_long),
        cmocka_unit_test(test_callback_stops), cmocka_unit_test(test_many_lines_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
