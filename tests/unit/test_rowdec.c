/* test_rowdec: the data-row fast paths. For each line, what reaches PostgreSQL through
 * rowdec + rowenc_encode_values, and through the fused rowenc_encode_line when it takes the
 * line (COPY text, the row id, the error), is what json-c + rowenc_encode write for it;
 * lines outside rowdec's subset are left to json-c untouched, lines outside the fused
 * subset are left with nothing written; rowenc_group_by numbers identical rows per
 * timestamp as resetting by hand does; and the COPY text of the values Druid sends is as a
 * user would read it back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "druid_client.h"
#include "rowdec.h"
#include "rowenc.h"

static const char *names[] = {"__time", "b", "a", "c", "z", "d", "e", "f"};
static unsigned fused_lines; /* lines check() saw the fused path take */

static enum pgtype type_of(char c)
{
    switch (c) {
    case 'b':
        return PGT_BIGINT;
    case 'd':
        return PGT_DOUBLE;
    case 'o':
        return PGT_BOOLEAN;
    case 'T':
        return PGT_TIMESTAMPTZ;
    case 'D':
        return PGT_DATE;
    case 'j':
        return PGT_JSONB;
    default:
        return PGT_TEXT;
    }
}

struct result {
    int rc;
    char out[8192];
    char err[512];
    int64_t ms;
};

static void run(struct rowenc *e, const char *line, bool fast, struct result *r)
{
    struct buf out = BUF_INIT;
    r->err[0] = '\0';
    r->ms = 0;
    if (fast) {
        struct rowdec *d = rowdec_new();
        assert_non_null(d);
        size_t len = strlen(line);
        char *copy = strdup(line);
        const struct rowenc_value *v;
        size_t n;
        assert_int_equal(rowdec_decode(d, copy, len, &v, &n), ROWDEC_OK);
        r->rc = rowenc_encode_values(e, v, n, &out, &r->ms, r->err, sizeof r->err);
        free(copy);
        rowdec_free(d);
    } else {
        /* as the client parses a line: its depth, the whole line */
        json_tokener *tok = json_tokener_new_ex(DRUID_JSON_DEPTH + 2);
        struct json_object *row = json_tokener_parse_ex(tok, line, (int)strlen(line));
        json_tokener_free(tok);
        assert_non_null(row);
        r->rc = rowenc_encode(e, row, &out, &r->ms, r->err, sizeof r->err);
        json_object_put(row);
    }
    assert_true(out.len < sizeof r->out);
    snprintf(r->out, sizeof r->out, "%s", out.data ? out.data : "");
    buf_free(&out);
}

/* Encodes line with column types (one letter each, as fuzz_rowdec's spec) both ways, with
 * and without ids, and checks they agree; returns the COPY line without id and '\n'. */
static const char *check(const char *types, const char *line, int *rc)
{
    static struct result a, b;
    struct rowenc_column cols[8];
    size_t n = strlen(types);
    for (size_t i = 0; i < n; i++)
        cols[i] = (struct rowenc_column){names[i], type_of(types[i])};
    for (int with_id = 1; with_id >= 0; with_id--) {
        struct rowenc *e1 = rowenc_new(cols, n, 0, with_id), *e2 = rowenc_new(cols, n, 0, with_id);
        run(e1, line, false, &a);
        run(e2, line, true, &b);
        assert_int_equal(a.rc, b.rc);
        assert_string_equal(a.out, b.out);
        assert_string_equal(a.err, b.err);
        assert_true(a.ms == b.ms);
        rowenc_free(e1);
        rowenc_free(e2);
        /* the fused path, where it takes the line, writes the same */
        struct rowenc *e3 = rowenc_new(cols, n, 0, with_id);
        struct buf out = BUF_INIT;
        int64_t ms = 0;
        if (rowenc_encode_line(e3, line, strlen(line), &out, &ms) == ROWENC_OK) {
            fused_lines++;
            assert_int_equal(a.rc, ROWENC_OK);
            assert_string_equal(out.data, a.out);
            assert_true(ms == a.ms);
        } else {
            assert_true(out.len == 0);
        }
        buf_free(&out);
        rowenc_free(e3);
    }
    *rc = b.rc;
    size_t l = strlen(b.out);
    if (l && b.out[l - 1] == '\n')
        b.out[l - 1] = '\0';
    return b.rc == 0 ? b.out : b.err;
}

#define EXPECT(types, line, copy)                                                                  \
    do {                                                                                           \
        int rc_;                                                                                   \
        assert_string_equal(check(types, line, &rc_), copy);                                       \
        assert_int_equal(rc_, 0);                                                                  \
    } while (0)

/* A line rowdec leaves to json-c, unchanged. */
static void expect_slow(const char *line)
{
    struct rowdec *d = rowdec_new();
    char *copy = strdup(line);
    const struct rowenc_value *v;
    size_t n;
    assert_int_equal(rowdec_decode(d, copy, strlen(line), &v, &n), ROWDEC_SLOW);
    assert_string_equal(copy, line);
    free(copy);
    rowdec_free(d);
}

static void test_integers(void **state)
{
    (void)state;
    EXPECT("Tbb", "[0,9223372036854775807,-9223372036854775808]",
           "1970-01-01T00:00:00.000Z\t9223372036854775807\t-9223372036854775808");
    /* beyond int64: json-c's uint64, text as written, a bigint column refuses it */
    EXPECT("Tt", "[1,18446744073709551615]", "1970-01-01T00:00:00.001Z\t18446744073709551615");
    int rc;
    assert_string_equal(check("Tb", "[1,9223372036854775808]", &rc),
                        "column \"b\" (bigint): cannot store integer 9223372036854775808: out of "
                        "range for bigint");
    assert_int_equal(rc, -1);
    EXPECT("Tt", "[1,-0]", "1970-01-01T00:00:00.001Z\t0");
    /* beyond what json-c holds exactly (it saturates): left to json-c */
    expect_slow("[1,18446744073709551616]");
    expect_slow("[1,-9223372036854775809]");
    expect_slow("[1,007]");
}

static void test_doubles(void **state)
{
    (void)state;
    EXPECT("Tddd", "[1,1.0E7,-0.0,1.0E-5]", "1970-01-01T00:00:00.001Z\t1.0E7\t-0.0\t1.0E-5");
    EXPECT("Tddd", "[1,\"NaN\",\"Infinity\",\"-Infinity\"]",
           "1970-01-01T00:00:00.001Z\tNaN\tInfinity\t-Infinity");
    EXPECT("Tt", "[1,10.5]", "1970-01-01T00:00:00.001Z\t10.5");
    int rc;
    assert_string_equal(check("Td", "[1,1e400]", &rc),
                        "column \"b\" (double precision): cannot store double 1e400: out of range "
                        "for double precision");
    assert_string_equal(check("Td", "[1,1e-400]", &rc),
                        "column \"b\" (double precision): cannot store double 1e-400: out of "
                        "range for double precision");
    /* bare literals Druid does not write: json-c's */
    expect_slow("[1,NaN]");
    expect_slow("[1,Infinity]");
    expect_slow("[1,-Infinity]");
}

static void test_strings(void **state)
{
    (void)state;
    EXPECT("Tt", "[1,\"tab\\there \\\\ \\\"q\\\" \\/ \\b\\f\\n\\r\"]",
           "1970-01-01T00:00:00.001Z\ttab\\there \\\\ \"q\" / \\b\\f\\n\\r");
    /* \u0000 is stored as U+FFFD */
    EXPECT("Tt", "[1,\"a\\u0000b\"]",
           "1970-01-01T00:00:00.001Z\ta\xef\xbf\xbd"
           "b");
    /* a surrogate pair is one code point, U+1F600 */
    EXPECT("Tt", "[1,\"\\ud83d\\ude00\\u00e9\"]",
           "1970-01-01T00:00:00.001Z\t\xf0\x9f\x98\x80\xc3\xa9");
    /* bytes that are not UTF-8 pass as they are (json-c does not check them either) */
    EXPECT("Tt", "[1,\"\xff\xfe\x80\"]", "1970-01-01T00:00:00.001Z\t\xff\xfe\x80");
    expect_slow("[1,\"\\ud800\"]");
    expect_slow("[1,\"\\udc00\"]");
    expect_slow("[1,\"\\ud800\\u0041\"]");
    expect_slow("[1,\"raw\ttab\"]");
    expect_slow("[1,\"\\x\"]");
}

static void test_nested(void **state)
{
    (void)state;
    /* a multi-value string (Druid sends an array) in a text column: its JSON text */
    EXPECT("Tt", "[1,[\"a\",\"b\"]]", "1970-01-01T00:00:00.001Z\t[\"a\",\"b\"]");
    EXPECT("Tj", "[1,{\"k\":[1,-0,2.50,\"\\u00e9\\/\\u0001\",true,null,{}]}]",
           "1970-01-01T00:00:00.001Z\t{\"k\":[1,0,2.50,\"\xc3\xa9/\\\\u0001\",true,null,{}]}");
    EXPECT("Tj", "[1,\"[1,2]\"]", "1970-01-01T00:00:00.001Z\t[1,2]");
    char deep[4 * DRUID_JSON_DEPTH + 64];
    for (int depth = ROWDEC_DEPTH; depth <= ROWDEC_DEPTH + 1; depth++) {
        size_t o = (size_t)snprintf(deep, sizeof deep, "[1,");
        for (int i = 0; i < depth; i++)
            deep[o++] = '[';
        for (int i = 0; i < depth; i++)
            deep[o++] = ']';
        deep[o++] = ']';
        deep[o] = '\0';
        if (depth > ROWDEC_DEPTH) {
            expect_slow(deep); /* json-c takes it, up to DRUID_JSON_DEPTH */
        } else {
            int rc;
            check("Tj", deep, &rc);
            assert_int_equal(rc, 0);
        }
    }
    /* beyond DRUID_JSON_DEPTH: left to json-c, which rejects it (the client's error) */
    size_t o = (size_t)snprintf(deep, sizeof deep, "[1,");
    for (int i = 0; i <= DRUID_JSON_DEPTH; i++)
        deep[o++] = '[';
    for (int i = 0; i <= DRUID_JSON_DEPTH; i++)
        deep[o++] = ']';
    deep[o++] = ']';
    deep[o] = '\0';
    expect_slow(deep);
    /* duplicate keys: json-c keeps one, left to it */
    expect_slow("[1,{\"a\":1,\"a\":2}]");
}

static void test_nulls_bools_times(void **state)
{
    (void)state;
    EXPECT("Ttbo", "[\"2015-09-12T00:46:58.771Z\",null,null,true]",
           "2015-09-12T00:46:58.771Z\t\\N\t\\N\tt");
    EXPECT("Tbot", "[\"2016-02-29T23:59:59.999Z\",true,\"FALSE\",false]",
           "2016-02-29T23:59:59.999Z\t1\tf\tfalse");
    /* not Druid's form: read by time_parse_iso_ms and printed */
    EXPECT("T", "[\"2015-09-12T01:46:58.771+01:00\"]", "2015-09-12T00:46:58.771Z");
    int rc;
    assert_string_equal(check("T", "[\"2015-02-29T00:00:00.000Z\"]", &rc),
                        "column \"__time\" (timestamptz): cannot store string "
                        "\"2015-02-29T00:00:00.000Z\": not an ISO-8601 timestamp");
    assert_int_equal(rc, -1);
    EXPECT("TD", "[\"0001-01-01T00:00:00.000Z\",\"2015-09-12T00:00:00.000Z\"]",
           "0001-01-01T00:00:00.000Z\t2015-09-12");
}

static void test_lines(void **state)
{
    (void)state;
    /* truncated, padded or otherwise not Druid's compact form: all json-c's */
    expect_slow("[1,\"abc\"");
    expect_slow("[1,\"abc");
    expect_slow("[1,");
    expect_slow("[1 ,2]");
    expect_slow(" [1]");
    expect_slow("[1]x");
    expect_slow("[1,2,]");
    expect_slow("[1,tru]");
    expect_slow("{\"a\":1}");
    /* more values than DRUID_ROW_TREE_MAX allows: json-c's path reports the limit */
    size_t nv = DRUID_ROW_TREE_MAX / DRUID_COST_VALUE + 2, o = 0;
    char *big = malloc(nv * 2 + 2);
    big[o++] = '[';
    for (size_t i = 0; i < nv; i++) {
        big[o++] = '1';
        big[o++] = ',';
    }
    big[o - 1] = ']';
    big[o] = '\0';
    expect_slow(big);
    free(big);
    /* the empty row */
    struct rowdec *d = rowdec_new();
    char e[] = "[]";
    const struct rowenc_value *v;
    size_t n = 9;
    assert_int_equal(rowdec_decode(d, e, 2, &v, &n), ROWDEC_OK);
    assert_int_equal(n, 0);
    rowdec_free(d);
}

/* One line through the fused path: its COPY line (id included), or NULL when left. */
static char *fused(struct rowenc *e, const char *line)
{
    struct buf out = BUF_INIT;
    buf_puts(&out, "x");
    int64_t ms;
    int rc = rowenc_encode_line(e, line, strlen(line), &out, &ms);
    if (rc != ROWENC_OK) {
        assert_int_equal(rc, ROWENC_LINE_SLOW);
        assert_string_equal(out.data, "x"); /* nothing written */
        buf_free(&out);
        return NULL;
    }
    char *r = strdup(out.data + 1);
    buf_free(&out);
    return r;
}

static void test_fused_line(void **state)
{
    (void)state;
    /* every kind of value the fused path takes, compared with json-c's path by check() */
    unsigned before = fused_lines;
    EXPECT("Ttbt", "[\"2015-09-12T00:46:58.771Z\",\"caf\xc3\xa9 \xff\",-900,123456789012345678]",
           "2015-09-12T00:46:58.771Z\tcaf\xc3\xa9 \xff\t-900\t123456789012345678");
    EXPECT("Ttbt", "[\"9999-12-31T23:59:59.999Z\",null,0,null]",
           "9999-12-31T23:59:59.999Z\t\\N\t0\t\\N");
    EXPECT("Ttb", "[null,\"\",100]", "\\N\t\t100");
    assert_int_equal(fused_lines - before, 6); /* 3 lines, with ids and without */
    struct rowenc_column cols[] = {
        {"__time", PGT_TIMESTAMPTZ}, {"s", PGT_TEXT}, {"n", PGT_BIGINT}, {"t", PGT_TEXT}};
    struct rowenc *e = rowenc_new(cols, 4, 0, false);
    char *r = fused(e, "[\"2015-09-12T00:46:58.771Z\",\"caf\xc3\xa9 ok\",-42,17]");
    assert_non_null(r);
    assert_string_equal(r, "2015-09-12T00:46:58.771Z\tcaf\xc3\xa9 ok\t-42\t17\n");
    free(r);
    r = fused(e, "[null,null,null,null]");
    assert_string_equal(r, "\\N\t\\N\t\\N\t\\N\n");
    free(r);
    /* left to the decoder: escapes, doubles, booleans, wrong arity, a string in bigint,
     * -0, leading zeros, 19 digits, whitespace, a timestamp not in Druid's form, trailing
     * bytes */
    static const char *left[] = {
        "[\"2015-09-12T00:46:58.771Z\",\"a\\nb\",1,2]",
        "[\"2015-09-12T00:46:58.771Z\",\"a\",1.5,2]",
        "[\"2015-09-12T00:46:58.771Z\",true,1,2]",
        "[\"2015-09-12T00:46:58.771Z\",\"a\",1]",
        "[\"2015-09-12T00:46:58.771Z\",\"a\",1,2,3]",
        "[\"2015-09-12T00:46:58.771Z\",\"a\",\"1\",2]",
        "[\"2015-09-12T00:46:58.771Z\",\"a\",-0,2]",
        "[\"2015-09-12T00:46:58.771Z\",\"a\",01,2]",
        "[\"2015-09-12T00:46:58.771Z\",\"a\",1234567890123456789,2]",
        "[\"2015-09-12T00:46:58.771Z\", \"a\",1,2]",
        "[\"2015-09-12 00:46:58.771Z\",\"a\",1,2]",
        "[\"2015-09-12T00:46:58.771Z\",\"a\",1,2]x",
        "[\"2015-09-12T00:46:58.771Z\",\"a\",1,2",
        "[\"2015-09-12T00:46:58.771Z\",\"a\t\",1,2]",
    };
    for (size_t i = 0; i < sizeof left / sizeof *left; i++)
        assert_null(fused(e, left[i]));
    assert_int_equal(rowenc_rows(e), 2);
    rowenc_free(e);
}

/* line through rowdec + rowenc_encode_values, appended to out. */
static void view_encode(struct rowenc *e, struct rowdec *d, const char *line, struct buf *out)
{
    char *copy = strdup(line), err[256];
    const struct rowenc_value *v;
    size_t nv;
    int64_t ms;
    assert_int_equal(rowdec_decode(d, copy, strlen(copy), &v, &nv), ROWDEC_OK);
    assert_int_equal(rowenc_encode_values(e, v, nv, out, &ms, err, sizeof err), 0);
    free(copy);
}

/* Identical rows under rowenc_group_by get the ids of resetting at each new timestamp by
 * hand (what the slice pipeline did before), on both paths; counting over the slice
 * gives other ids, so the comparison can fail. */
static void test_group_by(void **state)
{
    (void)state;
    struct rowenc_column cols[] = {{"__time", PGT_TIMESTAMPTZ}, {"s", PGT_TEXT}};
    static const char *rows[] = {
        "[\"2015-09-12T00:00:00.000Z\",\"a\"]",        "[\"2015-09-12T00:00:00.000Z\",\"a\"]",
        "[\"2015-09-12T00:00:01.000Z\",\"a\"]",        "[\"2015-09-12T00:00:00.000Z\",\"a\"]",
        "[\"2015-09-12T00:00:00.000Z\",\"a\\u0062\"]", "[\"2015-09-12T00:00:00.000Z\",\"ab\"]",
    };
    size_t n = sizeof rows / sizeof *rows;
    struct rowenc *hand = rowenc_new(cols, 2, 0, true), *line = rowenc_new(cols, 2, 0, true),
                  *view = rowenc_new(cols, 2, 0, true), *flat = rowenc_new(cols, 2, 0, true);
    rowenc_group_by(line, 0);
    rowenc_group_by(view, 0);
    struct buf bh = BUF_INIT, bl = BUF_INIT, bv = BUF_INIT, bf = BUF_INIT;
    char last[64] = "";
    int64_t ms;
    struct rowdec *d = rowdec_new();
    unsigned took = 0;
    for (size_t i = 0; i < n; i++) {
        const char *ts = rows[i] + 2; /* the 24 bytes of the timestamp */
        if (strncmp(ts, last, 24) != 0) {
            rowenc_reset(hand);
            memcpy(last, ts, 24);
        }
        struct result r;
        run(hand, rows[i], true, &r);
        buf_puts(&bh, r.out);
        run(flat, rows[i], true, &r);
        buf_puts(&bf, r.out);
        if (rowenc_encode_line(line, rows[i], strlen(rows[i]), &bl, &ms) == ROWENC_OK)
            took++;
        else
            view_encode(line, d, rows[i], &bl);
        view_encode(view, d, rows[i], &bv);
    }
    assert_int_equal(took, n - 1); /* all but the escaped string went the fused way */
    assert_string_equal(bl.data, bh.data);
    assert_string_equal(bv.data, bh.data);
    assert_string_not_equal(bf.data, bh.data);
    buf_free(&bh);
    buf_free(&bl);
    buf_free(&bv);
    buf_free(&bf);
    rowdec_free(d);
    rowenc_free(hand);
    rowenc_free(line);
    rowenc_free(view);
    rowenc_free(flat);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_integers),          cmocka_unit_test(test_doubles),
        cmocka_unit_test(test_strings),           cmocka_unit_test(test_nested),
        cmocka_unit_test(test_nulls_bools_times), cmocka_unit_test(test_lines),
        cmocka_unit_test(test_fused_line),        cmocka_unit_test(test_group_by),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
