/* test_druid_lines: arrayLines framing, end marker and truncation, at every split point; the
 * line buffer's growth, its limit and its release. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "druid_client.h"
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

/* Counts lines and remembers the length of the last one (big lines do not fit `collect`). */
struct count {
    int nlines;
    size_t last_len;
    int bad; /* lines whose bytes are not all 'x' (or '[' / ']') */
};

static int count_cb(void *ud, char *line, size_t len)
{
    struct count *c = ud;
    assert_int_equal(line[len], '\0');
    for (size_t i = 0; i < len; i++)
        if (line[i] != 'x' && line[i] != '[' && line[i] != ']')
            c->bad++;
    c->nlines++;
    c->last_len = len;
    return 0;
}

/* Feeds n bytes of 'x' in pieces of `piece` bytes; returns the first non-zero result. */
static int feed_x(struct druid_lines *l, size_t n, size_t piece)
{
    static char xs[65536];
    if (xs[0] != 'x')
        memset(xs, 'x', sizeof xs);
    assert_true(piece <= sizeof xs);
    while (n > 0) {
        size_t k = n < piece ? n : piece;
        int rc = druid_lines_feed(l, xs, k);
        if (rc)
            return rc;
        n -= k;
    }
    return 0;
}

static void test_nothing_reserved_up_front(void **state)
{
    (void)state;
    struct count c = {0, 0, 0};
    struct druid_lines *l = druid_lines_new(DRUID_LINE_MAX, count_cb, &c);
    assert_int_equal(druid_lines_capacity(l), 0);
    assert_int_equal(druid_lines_feed(l, "", 0), 0);
    assert_int_equal(druid_lines_capacity(l), 0);
    /* a small row costs the 64 KiB starting buffer, not the 4 MiB limit */
    assert_int_equal(druid_lines_feed(l, "[1]\n[2", 6), 0);
    assert_int_equal(druid_lines_capacity(l), 64 * 1024);
    assert_int_equal(druid_lines_pending(l), 2);
    assert_int_equal(c.nlines, 1);
    druid_lines_free(l);
}

static void test_growth_is_geometric(void **state)
{
    (void)state;
    struct count c = {0, 0, 0};
    struct druid_lines *l = druid_lines_new(DRUID_LINE_MAX, count_cb, &c);
    /* a 1.1 MB row (tests/integration/test_types.py test_huge_values), 1000 bytes at a time */
    size_t want = 1100000, fed = 0, seen[16], nseen = 0;
    while (fed < want) {
        size_t k = want - fed < 1000 ? want - fed : 1000;
        assert_int_equal(feed_x(l, k, 1000), 0);
        fed += k;
        size_t cap = druid_lines_capacity(l);
        assert_true(cap >= fed + 1);
        if (nseen == 0 || seen[nseen - 1] != cap) {
            assert_true(nseen < 16);
            seen[nseen++] = cap;
        }
    }
    /* 64 KiB, doubling: 64K 128K 256K 512K 1M 2M, so at most twice what the line needs */
    const size_t steps[] = {65536, 131072, 262144, 524288, 1048576, 2097152};
    assert_int_equal(nseen, 6);
    for (size_t i = 0; i < nseen; i++)
        assert_int_equal(seen[i], steps[i]);
    assert_int_equal(druid_lines_feed(l, "\n[x]\n\n", 6), 0);
    assert_int_equal(druid_lines_finish(l), 0);
    assert_int_equal(c.nlines, 2);
    assert_int_equal(c.last_len, 3);
    assert_int_equal(c.bad, 0);
    druid_lines_free(l);
}

/* A line of exactly the limit passes; one byte more fails, however it is split. */
static void test_limit_boundary(void **state)
{
    (void)state;
    const size_t limit = 4u * 1024 * 1024;
    assert_int_equal(DRUID_LINE_MAX, limit); /* the documented client limit */
    /* pieces of 64 KiB, of an odd size, and (1) byte by byte around the boundary */
    const size_t pieces[] = {65536, 4093, 1};
    for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
        struct count c = {0, 0, 0};
        struct druid_lines *l = druid_lines_new(limit, count_cb, &c);
        size_t piece = pieces[p] == 1 ? 65536 : pieces[p];
        assert_int_equal(feed_x(l, limit - 3, piece), 0);
        assert_int_equal(feed_x(l, 3, pieces[p] == 1 ? 1 : 3), 0);
        assert_int_equal(druid_lines_capacity(l), limit + 1); /* the cap, not a doubling past it */
        assert_int_equal(druid_lines_feed(l, "\n", 1), 0);
        assert_int_equal(c.nlines, 1);
        assert_int_equal(c.last_len, limit);
        /* the next line, one byte longer */
        assert_int_equal(feed_x(l, limit, piece), 0);
        assert_int_equal(druid_lines_feed(l, "x", 1), DRUID_LINES_E_TOOLONG);
        assert_int_equal(druid_lines_capacity(l), 0); /* released at once */
        assert_int_equal(druid_lines_feed(l, "\n\n", 2), DRUID_LINES_E_TOOLONG);
        assert_int_equal(druid_lines_finish(l), DRUID_LINES_E_TRUNCATED);
        assert_int_equal(c.nlines, 1);
        druid_lines_free(l);
    }
    /* limit + 1 bytes arriving in one piece, with its newline */
    struct count c = {0, 0, 0};
    struct druid_lines *l = druid_lines_new(limit, count_cb, &c);
    char *big = malloc(limit + 2);
    memset(big, 'x', limit + 1);
    big[limit + 1] = '\n';
    assert_int_equal(druid_lines_feed(l, big, limit + 2), DRUID_LINES_E_TOOLONG);
    assert_int_equal(c.nlines, 0);
    assert_int_equal(druid_lines_capacity(l), 0);
    druid_lines_free(l);
    /* and exactly the limit in one piece */
    l = druid_lines_new(limit, count_cb, &c);
    big[limit] = '\n';
    assert_int_equal(druid_lines_feed(l, big, limit + 1), 0);
    assert_int_equal(c.nlines, 1);
    assert_int_equal(c.last_len, limit);
    free(big);
    druid_lines_free(l);
}

/* An endless line: the buffer stops at the limit and the feed fails; nothing grows after. */
static void test_endless_line_bounded(void **state)
{
    (void)state;
    struct count c = {0, 0, 0};
    struct druid_lines *l = druid_lines_new(DRUID_LINE_MAX, count_cb, &c);
    assert_int_equal(druid_lines_feed(l, "[\"a\"]\n[\"", 8), 0);
    size_t fed = 0, maxcap = 0;
    int rc = 0;
    while (rc == 0 && fed < 64u * 1024 * 1024) {
        rc = feed_x(l, 65536, 65536);
        fed += 65536;
        if (druid_lines_capacity(l) > maxcap)
            maxcap = druid_lines_capacity(l);
    }
    assert_int_equal(rc, DRUID_LINES_E_TOOLONG);
    assert_true(fed <= 4u * 1024 * 1024 + 65536);
    assert_true(maxcap <= 4u * 1024 * 1024 + 1);
    assert_int_equal(druid_lines_capacity(l), 0);
    assert_int_equal(feed_x(l, 65536, 65536), DRUID_LINES_E_TOOLONG);
    assert_int_equal(druid_lines_capacity(l), 0);
    assert_int_equal(c.nlines, 1);
    druid_lines_free(l);
}

static int stop_cb(void *ud, char *line, size_t len)
{
    (void)ud;
    (void)line;
    (void)len;
    return 9;
}

/* The buffer goes back as soon as no line can follow: end marker, a failure, a stop. */
static void test_memory_released(void **state)
{
    (void)state;
    struct count c = {0, 0, 0};
    struct druid_lines *l = druid_lines_new(DRUID_LINE_MAX, count_cb, &c);
    assert_int_equal(druid_lines_feed(l, "[", 1), 0);
    assert_int_equal(feed_x(l, 300000, 65536), 0);
    assert_true(druid_lines_capacity(l) >= 300002);
    assert_int_equal(druid_lines_feed(l, "]\n", 2), 0);
    assert_true(druid_lines_capacity(l) > 0); /* kept for the next row */
    assert_int_equal(druid_lines_feed(l, "[1]\n\n", 5), 0);
    assert_int_equal(druid_lines_capacity(l), 0);
    assert_int_equal(druid_lines_finish(l), 0);
    assert_int_equal(c.nlines, 2);
    druid_lines_free(l);

    l = druid_lines_new(100, count_cb, &c);
    assert_int_equal(druid_lines_feed(l, "[1]\n\nX", 6), DRUID_LINES_E_AFTER_END);
    assert_int_equal(druid_lines_capacity(l), 0);
    druid_lines_free(l);

    l = druid_lines_new(100, stop_cb, NULL);
    assert_int_equal(druid_lines_feed(l, "[1]\n[2", 6), 9);
    assert_int_equal(druid_lines_capacity(l), 0);
    druid_lines_free(l);

    /* freeing mid-line (a cancelled query) releases everything: ASan's leak check */
    l = druid_lines_new(DRUID_LINE_MAX, count_cb, &c);
    assert_int_equal(feed_x(l, 1000000, 65536), 0);
    druid_lines_free(l);
}

/* The end-marker rules hold for lines that needed the buffer to grow, at every cut near
 * the growth boundary and the end. */
static void test_end_marker_after_big_lines(void **state)
{
    (void)state;
    size_t big = 64 * 1024 + 10;
    struct buf body = BUF_INIT;
    buf_putc(&body, '[');
    for (size_t i = 0; i < big; i++)
        buf_putc(&body, 'x');
    buf_append(&body, "]\n[x]\n\n", 7);
    size_t len = body.len;
    size_t cuts[] = {1, 65535, 65536, 65537, big + 1, big + 2, big + 3, len - 2, len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        for (int mode = 0; mode < 3; mode++) {
            /* mode 0: complete; 1: without the last '\n' (truncated); 2: a byte after the end */
            size_t l0 = mode == 1 ? len - 1 : len;
            struct count c = {0, 0, 0};
            struct druid_lines *l = druid_lines_new(DRUID_LINE_MAX, count_cb, &c);
            size_t cut = cuts[k] < l0 ? cuts[k] : l0;
            int rc = druid_lines_feed(l, body.data, cut);
            if (rc == 0)
                rc = druid_lines_feed(l, body.data + cut, l0 - cut);
            if (mode == 2 && rc == 0)
                rc = druid_lines_feed(l, "[", 1);
            assert_int_equal(rc, mode == 2 ? DRUID_LINES_E_AFTER_END : 0);
            assert_int_equal(druid_lines_finish(l), mode == 0 ? 0 : DRUID_LINES_E_TRUNCATED);
            assert_int_equal(c.nlines, 2);
            assert_int_equal(c.last_len, 3);
            assert_int_equal(c.bad, 0);
            druid_lines_free(l);
        }
    }
    buf_free(&body);
}

/* The peek callback: lines starting with 'a' taken in place, the others passed on. */
struct peeked {
    struct buf out;
    const char *piece, *piece_end;
    int taken, passed;
};

static int peek_cb(void *ud, const char *line, size_t len)
{
    struct peeked *p = ud;
    assert_true(line >= p->piece && line + len < p->piece_end); /* in place, not copied */
    assert_int_equal(line[len], '\n');
    if (line[0] != 'a') {
        p->passed++;
        return DRUID_LINES_PASS;
    }
    p->taken++;
    if (p->out.len)
        buf_putc(&p->out, '|');
    buf_append(&p->out, line, len);
    return len == 2 ? 9 : 0; /* "aX" stops the feed */
}

static int peek_line_cb(void *ud, char *line, size_t len)
{
    struct peeked *p = ud;
    assert_int_equal(line[len], '\0');
    if (p->out.len)
        buf_putc(&p->out, '|');
    buf_append(&p->out, line, len);
    return 0;
}

static void test_peek(void **state)
{
    (void)state;
    static const char body[] = "abc\nxyz\naaa\nq\n\n";
    size_t len = strlen(body);
    /* whole, then every two-piece split: the same lines in the same order; a line cut
     * across pieces reaches only the line callback */
    for (size_t cut = 0; cut <= len; cut++) {
        struct peeked p = {BUF_INIT, NULL, NULL, 0, 0};
        struct druid_lines *l = druid_lines_new(1 << 20, peek_line_cb, &p);
        druid_lines_set_peek(l, peek_cb);
        p.piece = body;
        p.piece_end = body + cut;
        assert_int_equal(druid_lines_feed(l, body, cut), 0);
        p.piece = body + cut;
        p.piece_end = body + len;
        assert_int_equal(druid_lines_feed(l, body + cut, len - cut), 0);
        assert_int_equal(druid_lines_finish(l), 0);
        assert_string_equal(p.out.data, "abc|xyz|aaa|q");
        /* a line is cut when the cut falls after its first byte and up to its newline */
        int cut_lines =
            (cut > 0 && cut <= 3) + (cut > 4 && cut <= 7) + (cut > 8 && cut <= 11) + (cut == 13);
        assert_int_equal(p.taken + p.passed, 4 - cut_lines);
        if (cut == 0 || cut == len)
            assert_int_equal(p.taken, 2);
        buf_free(&p.out);
        druid_lines_free(l);
    }
    /* a non-zero return stops the feed, as the line callback's */
    struct peeked p = {BUF_INIT, NULL, NULL, 0, 0};
    static const char stop[] = "ab\nzz\n\n";
    struct druid_lines *l = druid_lines_new(1 << 20, peek_line_cb, &p);
    druid_lines_set_peek(l, peek_cb);
    p.piece = stop;
    p.piece_end = stop + strlen(stop);
    assert_int_equal(druid_lines_feed(l, stop, strlen(stop)), 9);
    assert_string_equal(p.out.data, "ab");
    buf_free(&p.out);
    druid_lines_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_body),
        cmocka_unit_test(test_complete_small_bodies),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_empty_body),
        cmocka_unit_test(test_after_end),
        cmocka_unit_test(test_too_long),
        cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_many_lines_bounded),
        cmocka_unit_test(test_nothing_reserved_up_front),
        cmocka_unit_test(test_growth_is_geometric),
        cmocka_unit_test(test_limit_boundary),
        cmocka_unit_test(test_endless_line_bounded),
        cmocka_unit_test(test_memory_released),
        cmocka_unit_test(test_end_marker_after_big_lines),
        cmocka_unit_test(test_peek),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
