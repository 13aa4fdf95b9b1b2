/* test_rowenc: exact COPY bytes per type, errors naming the column, and row identity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rowenc.h"

/* Encodes one arrayLines row (JSON text, as Druid sends it) with the given column types
 * and no id; returns the COPY line without its '\n' (static buffer). */
static char line_out[4096];
static char err_out[512];

static int enc(const struct rowenc_column *cols, size_t n, const char *json, int inc_col,
               int64_t *inc)
{
    struct rowenc *e = rowenc_new(cols, n, inc_col, false);
    assert_non_null(e);
    struct json_object *row = json_tokener_parse(json);
    assert_non_null(row);
    struct buf out = BUF_INIT;
    err_out[0] = '\0';
    int rc = rowenc_encode(e, row, &out, inc, err_out, sizeof err_out);
    line_out[0] = '\0';
    if (rc == 0) {
        assert_true(out.len > 0);
        assert_int_equal(out.data[out.len - 1], '\n');
        assert_true(out.len < sizeof line_out);
        memcpy(line_out, out.data, out.len - 1);
        line_out[out.len - 1] = '\0';
        assert_int_equal(rowenc_rows(e), 1);
    } else {
        assert_int_equal(out.len, 0);
        assert_int_equal(rowenc_rows(e), 0);
    }
    buf_free(&out);
    json_object_put(row);
    rowenc_free(e);
    return rc;
}

/* One column of type t. */
static const char *enc1(enum pgtype t, const char *json_value)
{
    struct rowenc_column col = {"c", t};
    char row[1024];
    snprintf(row, sizeof row, "[%s]", json_value);
    if (enc(&col, 1, row, -1, NULL) != 0)
        fail_msg("%s %s: %s", typemap_pg_name(t), json_value, err_out);
    return line_out;
}

/* One column of type t that must be rejected, with a message naming the column. */
static void enc1_fails(enum pgtype t, const char *json_value)
{
    struct rowenc_column col = {"my col", t};
    char row[1024];
    snprintf(row, sizeof row, "[%s]", json_value);
    if (enc(&col, 1, row, -1, NULL) != -1)
        fail_msg("%s accepted %s as \"%s\"", typemap_pg_name(t), json_value, line_out);
    if (!strstr(err_out, "\"my col\""))
        fail_msg("error does not name the column: %s", err_out);
}

/* One column of type t whose row must be skipped: ROWENC_SKIPPED, nothing written, no
 * incremental value, and a message naming the column and the value. */
static void enc1_skipped(enum pgtype t, const char *json_value)
{
    struct rowenc_column col = {"my col", t};
    char row[1024];
    snprintf(row, sizeof row, "[%s]", json_value);
    int64_t inc = 7;
    int rc = enc(&col, 1, row, 0, &inc);
    if (rc != ROWENC_SKIPPED)
        fail_msg("%s %s: rc %d, \"%s\" %s", typemap_pg_name(t), json_value, rc, line_out, err_out);
    assert_int_equal(inc, INT64_MIN);
    if (!strstr(err_out, "\"my col\"") || !strstr(err_out, json_value) ||
        !strstr(err_out, "skipped"))
        fail_msg("message does not name the column and the value: %s", err_out);
}

/* Encodes a one-column row holding v (taken over) in a column of type t; returns the COPY
 * field (static, any length) and leaves the encoder's counters in st_out. */
static char *big_out;
static struct rowenc_stats st_out;

static const char *enc_val(enum pgtype t, struct json_object *v)
{
    struct rowenc_column col = {"c", t};
    struct rowenc *e = rowenc_new(&col, 1, -1, false);
    assert_non_null(e);
    struct json_object *row = json_object_new_array();
    json_object_array_add(row, v);
    struct buf out = BUF_INIT;
    if (rowenc_encode(e, row, &out, NULL, err_out, sizeof err_out) != 0)
        fail_msg("%s", err_out);
    assert_int_equal(out.data[out.len - 1], '\n');
    free(big_out);
    big_out = strndup(out.data, out.len - 1);
    st_out = *rowenc_stats(e);
    buf_free(&out);
    json_object_put(row);
    rowenc_free(e);
    return big_out;
}

/* The Druid string s (n bytes, may hold NUL) in a column of type t. */
static const char *enc_str(enum pgtype t, const char *s, size_t n)
{
    return enc_val(t, json_object_new_string_len(s, (int)n));
}
#define ENC_LIT(t, lit) enc_str(t, lit, sizeof lit - 1)

static char *repeat(const char *a, int n, const char *mid, const char *b)
{
    size_t la = strlen(a), lm = strlen(mid), lb = strlen(b);
    char *r = malloc(la * (size_t)n + lm + lb * (size_t)n + 1), *p = r;
    for (int i = 0; i < n; i++, p += la)
        memcpy(p, a, la);
    memcpy(p, mid, lm);
    p += lm;
    for (int i = 0; i < n; i++, p += lb)
        memcpy(p, b, lb);
    *p = '\0';
    return r;
}

static char *quoted(const char *s)
{
    size_t n = strlen(s);
    char *r = malloc(n + 3);
    r[0] = '"';
    memcpy(r + 1, s, n);
    r[n + 1] = '"';
    r[n + 2] = '\0';
    return r;
}

static void test_text_escaping(void **state)
{
    (void)state;
    assert_string_equal(enc1(PGT_TEXT, "\"plain\""), "plain");
    assert_string_equal(enc1(PGT_TEXT, "\"a\\tb\""), "a\\tb");
    assert_string_equal(enc1(PGT_TEXT, "\"line1\\nline2\\r\\n\""), "line1\\nline2\\r\\n");
    assert_string_equal(enc1(PGT_TEXT, "\"back\\\\slash\""), "back\\\\slash");
    assert_string_equal(enc1(PGT_TEXT, "\"\\\\N\""), "\\\\N"); /* the text \N is not NULL */
    assert_string_equal(enc1(PGT_TEXT, "\"quote\\\"s 'single'\""), "quote\"s 'single'");
    assert_string_equal(enc1(PGT_TEXT, "\"\\b\\f\\u000b\""), "\\b\\f\\v");
    assert_string_equal(enc1(PGT_TEXT, "\"\\u0001x\\u001f\\u007f\""), "\\001x\\037\x7f");
    assert_string_equal(enc1(PGT_TEXT, "\"Gdańsk – ünï 東京\""), "Gdańsk – ünï 東京");
    assert_string_equal(enc1(PGT_TEXT, "\"\\u00e9\""), "\xc3\xa9");
    /* 4-byte UTF-8, raw and as a JSON surrogate pair */
    assert_string_equal(enc1(PGT_TEXT, "\"smile 😀!\""), "smile \xf0\x9f\x98\x80!");
    assert_string_equal(enc1(PGT_TEXT, "\"\\ud83d\\ude00\""), "\xf0\x9f\x98\x80");
    assert_string_equal(enc1(PGT_TEXT, "\"a/b\""), "a/b");
    /* PostgreSQL text cannot hold NUL: it becomes U+FFFD (was: rejected, see test_nul_text) */
    assert_string_equal(enc1(PGT_TEXT, "\"a\\u0000b\""), "a\xef\xbf\xbd"
                                                         "b");
}

static void test_null_vs_empty(void **state)
{
    (void)state;
    struct rowenc_column cols[] = {
        {"a", PGT_TEXT}, {"b", PGT_TEXT}, {"c", PGT_BIGINT}, {"d", PGT_JSONB}};
    assert_int_equal(enc(cols, 4, "[null,\"\",null,null]", -1, NULL), 0);
    assert_string_equal(line_out, "\\N\t\t\\N\t\\N");
    assert_int_equal(enc(cols, 4, "[\"\",null,0,\"[]\"]", -1, NULL), 0);
    assert_string_equal(line_out, "\t\\N\t0\t[]");
}

static void test_text_from_other_json(void **state)
{
    (void)state;
    /* multi-value strings arrive as JSON text in a string and are stored as that text */
    assert_string_equal(enc1(PGT_TEXT, "\"[\\\"a\\\",\\\"b\\\"]\""), "[\"a\",\"b\"]");
    assert_string_equal(enc1(PGT_TEXT, "\"[\\\"a\\\\\\\\b\\\"]\""), "[\"a\\\\\\\\b\"]");
    /* real JSON values in a text column: their JSON text */
    assert_string_equal(enc1(PGT_TEXT, "[\"a\",\"b\"]"), "[\"a\",\"b\"]");
    assert_string_equal(enc1(PGT_TEXT, "{\"k\":\"v\\nw\"}"), "{\"k\":\"v\\\\nw\"}");
    assert_string_equal(enc1(PGT_TEXT, "36"), "36");
    assert_string_equal(enc1(PGT_TEXT, "1.0E7"), "1.0E7");
    assert_string_equal(enc1(PGT_TEXT, "true"), "true");
    assert_string_equal(enc1(PGT_TEXT, "9223372036854775807"), "9223372036854775807");
}

static void test_bigint(void **state)
{
    (void)state;
    assert_string_equal(enc1(PGT_BIGINT, "36"), "36");
    assert_string_equal(enc1(PGT_BIGINT, "0"), "0");
    assert_string_equal(enc1(PGT_BIGINT, "-1"), "-1");
    assert_string_equal(enc1(PGT_BIGINT, "9223372036854775807"), "9223372036854775807");
    assert_string_equal(enc1(PGT_BIGINT, "-9223372036854775808"), "-9223372036854775808");
    assert_string_equal(enc1(PGT_BIGINT, "9007199254740993"), "9007199254740993");
    assert_string_equal(enc1(PGT_BIGINT, "-9007199254740993"), "-9007199254740993");
    assert_string_equal(enc1(PGT_BIGINT, "\"9007199254740993\""), "9007199254740993");
    assert_string_equal(enc1(PGT_BIGINT, "\"-42\""), "-42");
    assert_string_equal(enc1(PGT_BIGINT, "true"), "1"); /* widened from boolean */
    assert_string_equal(enc1(PGT_BIGINT, "false"), "0");
    enc1_fails(PGT_BIGINT, "\"abc\"");
    enc1_fails(PGT_BIGINT, "\"\"");
    enc1_fails(PGT_BIGINT, "\"12a\"");
    enc1_fails(PGT_BIGINT, "\"9223372036854775808\"");
    enc1_fails(PGT_BIGINT, "9223372036854775808");
    enc1_fails(PGT_BIGINT, "18446744073709551615");
    enc1_fails(PGT_BIGINT, "1.5");
    enc1_fails(PGT_BIGINT, "36.0");
    enc1_fails(PGT_BIGINT, "[1]");
    enc1_fails(PGT_BIGINT, "{}");
}

static void test_double(void **state)
{
    (void)state;
    /* json-c's tokener keeps the text of a parsed double: Druid's Double.toString form is
     * stored as written, so nothing is lost to re-formatting. */
    assert_string_equal(enc1(PGT_DOUBLE, "1.0E7"), "1.0E7");
    assert_string_equal(enc1(PGT_DOUBLE, "1.0E-5"), "1.0E-5");
    assert_string_equal(enc1(PGT_DOUBLE, "0.1"), "0.1");
    assert_string_equal(enc1(PGT_DOUBLE, "542.0"), "542.0");
    assert_string_equal(enc1(PGT_DOUBLE, "-0.0"), "-0.0");
    assert_string_equal(enc1(PGT_DOUBLE, "4.9E-324"), "4.9E-324");
    assert_string_equal(enc1(PGT_DOUBLE, "1.7976931348623157E308"), "1.7976931348623157E308");
    assert_string_equal(enc1(PGT_DOUBLE, "0.30000000000000004"), "0.30000000000000004");
    assert_string_equal(enc1(PGT_DOUBLE, "36"), "36");
    assert_string_equal(enc1(PGT_DOUBLE, "9007199254740993"), "9007199254740993");
    assert_string_equal(enc1(PGT_DOUBLE, "\"NaN\""), "NaN");
    assert_string_equal(enc1(PGT_DOUBLE, "\"Infinity\""), "Infinity");
    assert_string_equal(enc1(PGT_DOUBLE, "\"-Infinity\""), "-Infinity");
    /* json-c's lenient literals too */
    assert_string_equal(enc1(PGT_DOUBLE, "NaN"), "NaN");
    assert_string_equal(enc1(PGT_DOUBLE, "-Infinity"), "-Infinity");
    enc1_fails(PGT_DOUBLE, "\"abc\"");
    enc1_fails(PGT_DOUBLE, "\"1.5\"");
    enc1_fails(PGT_DOUBLE, "\"nan\"");
    enc1_fails(PGT_DOUBLE, "true");
    enc1_fails(PGT_DOUBLE, "[1.0]");
    enc1_fails(PGT_DOUBLE, "1e400"); /* PostgreSQL would reject it */
}

static void test_double_built_by_hand(void **state)
{
    (void)state;
    /* A double that did not come from the tokener has no original text: json-c prints
     * enough digits to read back the same value. */
    struct rowenc_column col = {"d", PGT_DOUBLE};
    struct rowenc *e = rowenc_new(&col, 1, -1, false);
    struct json_object *row = json_object_new_array();
    json_object_array_add(row, json_object_new_double(0.1));
    struct buf out = BUF_INIT;
    assert_int_equal(rowenc_encode(e, row, &out, NULL, NULL, 0), 0);
    out.data[out.len - 1] = '\0';
    assert_true(strtod(out.data, NULL) == 0.1);
    buf_free(&out);
    json_object_put(row);
    rowenc_free(e);
}

static void test_boolean(void **state)
{
    (void)state;
    assert_string_equal(enc1(PGT_BOOLEAN, "true"), "t");
    assert_string_equal(enc1(PGT_BOOLEAN, "false"), "f");
    assert_string_equal(enc1(PGT_BOOLEAN, "1"), "t");
    assert_string_equal(enc1(PGT_BOOLEAN, "0"), "f");
    assert_string_equal(enc1(PGT_BOOLEAN, "\"true\""), "t");
    assert_string_equal(enc1(PGT_BOOLEAN, "\"false\""), "f");
    assert_string_equal(enc1(PGT_BOOLEAN, "\"TRUE\""), "t");
    enc1_fails(PGT_BOOLEAN, "2");
    enc1_fails(PGT_BOOLEAN, "-1");
    enc1_fails(PGT_BOOLEAN, "\"yes\"");
    enc1_fails(PGT_BOOLEAN, "\"\"");
    enc1_fails(PGT_BOOLEAN, "1.0");
}

static void test_timestamptz(void **state)
{
    (void)state;
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"2015-09-12T00:46:58.771Z\""),
                        "2015-09-12T00:46:58.771Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"1999-12-31T16:00:00.000-08:00\""),
                        "2000-01-01T00:00:00.000Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"2015-09-12 00:46:58\""),
                        "2015-09-12T00:46:58.000Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"2015-09-12T00:46:58.7719Z\""),
                        "2015-09-12T00:46:58.771Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"1969-12-31T23:59:59.999Z\""),
                        "1969-12-31T23:59:59.999Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "1442018818771"), "2015-09-12T00:46:58.771Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "-1"), "1969-12-31T23:59:59.999Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"2000-01-01\""), "2000-01-01T00:00:00.000Z");
    enc1_fails(PGT_TIMESTAMPTZ, "\"yesterday\"");
    enc1_fails(PGT_TIMESTAMPTZ, "\"\"");
    enc1_fails(PGT_TIMESTAMPTZ, "1.5");
    enc1_fails(PGT_TIMESTAMPTZ, "true");
    /* Druid's legacy minimum cannot be written as a PostgreSQL timestamptz: the row is
     * skipped (was: an error that failed the slice) */
    enc1_skipped(PGT_TIMESTAMPTZ, "\"-292275055-05-16T16:47:04.192Z\"");
}

static void test_date(void **state)
{
    (void)state;
    assert_string_equal(enc1(PGT_DATE, "\"2000-01-01T00:00:00.000Z\""), "2000-01-01");
    /* under sqlTimeZone=America/Los_Angeles the first 10 characters are the date */
    assert_string_equal(enc1(PGT_DATE, "\"1999-12-31T00:00:00.000-08:00\""), "1999-12-31");
    assert_string_equal(enc1(PGT_DATE, "\"2000-01-01\""), "2000-01-01");
    assert_string_equal(enc1(PGT_DATE, "946684800000"), "2000-01-01");
    assert_string_equal(enc1(PGT_DATE, "946684799999"), "1999-12-31");
    assert_string_equal(enc1(PGT_DATE, "-1"), "1969-12-31");
    enc1_fails(PGT_DATE, "\"2000-13-01T00:00:00.000Z\"");
    /* PostgreSQL takes years above 9999 (was: rejected) */
    assert_string_equal(enc1(PGT_DATE, "\"20000-01-01T00:00:00.000Z\""), "20000-01-01");
    enc1_fails(PGT_DATE, "false");
}

static void test_jsonb(void **state)
{
    (void)state;
    /* ARRAY (sqlStringifyArrays) and COMPLEX<json> arrive as JSON text in a string */
    assert_string_equal(enc1(PGT_JSONB, "\"[1,2]\""), "[1,2]");
    assert_string_equal(enc1(PGT_JSONB, "\"[\\\"alpha\\\"]\""), "[\"alpha\"]");
    assert_string_equal(enc1(PGT_JSONB, "\"{\\\"color\\\":\\\"sky blue\\\",\\\"price\\\":542.0}\""),
                        "{\"color\":\"sky blue\",\"price\":542.0}");
    /* an escape inside the JSON text gets its backslash doubled for COPY */
    assert_string_equal(enc1(PGT_JSONB, "\"[\\\"a\\\\nb\\\"]\""), "[\"a\\\\nb\"]");
    /* real arrays/objects (sqlStringifyArrays:false): compact, doubles as written, '/' kept */
    assert_string_equal(enc1(PGT_JSONB, "[999.0,null,5.5]"), "[999.0,null,5.5]");
    assert_string_equal(enc1(PGT_JSONB, "[1, 2 ,\"x\"]"), "[1,2,\"x\"]");
    assert_string_equal(enc1(PGT_JSONB, "{\"a/b\":{\"c\":[1.0E7,\"😀\"]}}"),
                        "{\"a/b\":{\"c\":[1.0E7,\"😀\"]}}");
    assert_string_equal(enc1(PGT_JSONB, "{\"t\":\"x\\ty\"}"), "{\"t\":\"x\\\\ty\"}");
    assert_string_equal(enc1(PGT_JSONB, "[9223372036854775807]"), "[9223372036854775807]");
    assert_string_equal(enc1(PGT_JSONB, "42"), "42");
    assert_string_equal(enc1(PGT_JSONB, "true"), "true");
}

static void test_nul_text(void **state)
{
    (void)state;
    assert_string_equal(ENC_LIT(PGT_TEXT, "a\0b\0"), "a\xef\xbf\xbd"
                                                     "b\xef\xbf\xbd");
    assert_int_equal(st_out.nul_replaced, 2);
    assert_int_equal(st_out.json_as_string, 0);
    assert_string_equal(ENC_LIT(PGT_TEXT, "\0"), "\xef\xbf\xbd");
    assert_string_equal(ENC_LIT(PGT_TEXT, "x\t\0\\"), "x\\t\xef\xbf\xbd\\\\");
    assert_int_equal(st_out.nul_replaced, 1);
    assert_string_equal(ENC_LIT(PGT_TEXT, "none"), "none");
    assert_int_equal(st_out.nul_replaced, 0);
}

static void test_nul_jsonb(void **state)
{
    (void)state;
    /* the escape \u0000 inside JSON text, in a value and in a key */
    assert_string_equal(ENC_LIT(PGT_JSONB, "{\"k\":\"a\\u0000b\"}"), "{\"k\":\"a\\\\ufffdb\"}");
    assert_int_equal(st_out.nul_replaced, 1);
    assert_int_equal(st_out.json_as_string, 0);
    assert_string_equal(ENC_LIT(PGT_JSONB, "{\"\\u0000\":[\"\\u0000\"]}"),
                        "{\"\\\\ufffd\":[\"\\\\ufffd\"]}");
    assert_int_equal(st_out.nul_replaced, 2);
    /* a raw NUL inside a JSON string */
    assert_string_equal(ENC_LIT(PGT_JSONB, "[\"a\0b\"]"), "[\"a\xef\xbf\xbd"
                                                          "b\"]");
    assert_int_equal(st_out.nul_replaced, 1);
    /* an escaped backslash followed by u0000 is text, not a NUL */
    assert_string_equal(ENC_LIT(PGT_JSONB, "[\"\\\\u0000\"]"), "[\"\\\\\\\\u0000\"]");
    assert_int_equal(st_out.nul_replaced, 0);
    assert_string_equal(ENC_LIT(PGT_JSONB, "[\"\\\\\\u0000\"]"), "[\"\\\\\\\\\\\\ufffd\"]");
    assert_int_equal(st_out.nul_replaced, 1);
    /* a raw NUL outside a string: not JSON, so stored as a string, NUL replaced */
    assert_string_equal(ENC_LIT(PGT_JSONB, "[1,\0]"), "\"[1,\xef\xbf\xbd]\"");
    assert_int_equal(st_out.nul_replaced, 1);
    assert_int_equal(st_out.json_as_string, 1);
    /* a real JSON value holding a NUL (json-c writes it as \u0000) */
    struct json_object *a = json_object_new_array();
    json_object_array_add(a, json_object_new_string_len("a\0b", 3));
    assert_string_equal(enc_val(PGT_JSONB, a), "[\"a\\\\ufffdb\"]");
    assert_int_equal(st_out.nul_replaced, 1);
}

static void test_jsonb_depth(void **state)
{
    (void)state;
    /* 1,000 and 5,000 levels (the limit, ROWENC_JSON_MAX_DEPTH) are stored as they are */
    char *d1000 = repeat("[", 1000, "", "]");
    assert_string_equal(enc_str(PGT_JSONB, d1000, strlen(d1000)), d1000);
    assert_int_equal(st_out.json_as_string, 0);
    char *o1000 = repeat("{\"a\":", 999, "{}", "}");
    assert_string_equal(enc_str(PGT_JSONB, o1000, strlen(o1000)), o1000);
    char *d5000 = repeat("[", 5000, "1", "]");
    assert_string_equal(enc_str(PGT_JSONB, d5000, strlen(d5000)), d5000);
    assert_int_equal(st_out.json_as_string, 0);
    /* one deeper: a JSON string holding the text */
    char *d5001 = repeat("[", 5001, "1", "]");
    char *want = quoted(d5001);
    assert_string_equal(enc_str(PGT_JSONB, d5001, strlen(d5001)), want);
    assert_int_equal(st_out.json_as_string, 1);
    free(want);
    /* objects: each quote of the text escaped for JSON, its backslash doubled for COPY */
    char *o5001 = repeat("{\"a\":", 5000, "{}", "}");
    char *wbody = repeat("{\\\\\"a\\\\\":", 5000, "{}", "}");
    want = quoted(wbody);
    assert_string_equal(enc_str(PGT_JSONB, o5001, strlen(o5001)), want);
    assert_int_equal(st_out.json_as_string, 1);
    free(want);
    free(wbody);
    /* far deeper, and a real (parsed) JSON value too */
    char *d20000 = repeat("[", 20000, "", "]");
    want = quoted(d20000);
    assert_string_equal(enc_str(PGT_JSONB, d20000, strlen(d20000)), want);
    free(want);
    struct json_object *v = json_object_new_array();
    for (int i = 1; i < 1000; i++) {
        struct json_object *outer = json_object_new_array();
        json_object_array_add(outer, v);
        v = outer;
    }
    assert_string_equal(enc_val(PGT_JSONB, v), d1000);
    v = json_object_new_int(1);
    for (int i = 0; i < 5001; i++) {
        struct json_object *outer = json_object_new_array();
        json_object_array_add(outer, v);
        v = outer;
    }
    want = quoted(d5001);
    assert_string_equal(enc_val(PGT_JSONB, v), want);
    assert_int_equal(st_out.json_as_string, 1);
    free(want);
    free(d1000);
    free(o1000);
    free(d5000);
    free(d5001);
    free(o5001);
    free(d20000);
}

static void test_jsonb_not_json(void **state)
{
    (void)state;
    /* rowenc used to copy these through, and PostgreSQL failed the COPY */
    /* Druid with serializeComplexValues=false sends a class name */
    assert_string_equal(ENC_LIT(PGT_JSONB, "org.apache.druid.hll.VersionOneHyperLogLogCollector"),
                        "\"org.apache.druid.hll.VersionOneHyperLogLogCollector\"");
    assert_int_equal(st_out.json_as_string, 1);
    assert_int_equal(st_out.nul_replaced, 0);
    assert_string_equal(ENC_LIT(PGT_JSONB, ""), "\"\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "{\"a\":1,}"), "\"{\\\\\"a\\\\\":1,}\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "a\tb\nc\\d\x01\"\x7f"),
                        "\"a\\\\tb\\\\nc\\\\\\\\d\\\\u0001\\\\\"\x7f\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "NaN"), "\"NaN\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "[1,]"), "\"[1,]\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "01"), "\"01\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "[1] x"), "\"[1] x\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "{\"a\"}"), "\"{\\\\\"a\\\\\"}\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "[\"a\nb\"]"), "\"[\\\\\"a\\\\nb\\\\\"]\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "truex"), "\"truex\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "[1.]"), "\"[1.]\"");
    /* lone surrogate escapes: jsonb refuses them */
    assert_string_equal(ENC_LIT(PGT_JSONB, "\"\\ud800\""), "\"\\\\\"\\\\\\\\ud800\\\\\"\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "\"\\udc00x\""), "\"\\\\\"\\\\\\\\udc00x\\\\\"\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "\"\\ud800\\u0041\""),
                        "\"\\\\\"\\\\\\\\ud800\\\\\\\\u0041\\\\\"\"");
    /* numbers beyond numeric: 131072 digits before the point, 16383 after */
    assert_string_equal(ENC_LIT(PGT_JSONB, "[1e131072]"), "\"[1e131072]\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "1e-16384"), "\"1e-16384\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "1.5e-16383"), "\"1.5e-16383\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "0e-999999999"), "\"0e-999999999\"");
    assert_string_equal(ENC_LIT(PGT_JSONB, "1e99999999999"), "\"1e99999999999\"");
    assert_int_equal(st_out.json_as_string, 1);
    /* a real JSON value json-c accepted but PostgreSQL does not */
    assert_string_equal(enc_val(PGT_JSONB, json_tokener_parse("[NaN]")), "\"[NaN]\"");

    /* valid JSON is kept byte for byte, whitespace included */
    const char *same[] = {
        "  [1, 2]\n",
        "{\"a\" : {\"b\":[true,false,null]} }",
        "-0",
        "1E+2",
        "0.5e-3",
        "[1e131071]",
        "1e-16383",
        "9.9e131071",
        "0e999999999",
        "\"\"",
        "\"\\ud83d\\ude00 \\/ \\b\\f\\n\\r\\t \\\" \\u00e9\"",
        "{}",
        "[]",
        "\"\\\"AgEHDAMIAgDh\\\"\"",
        "[{\"a\":[{}]},[[]],{\"b\":{}}]",
    };
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        struct buf want = BUF_INIT;
        rowenc_copy_escape(&want, same[i], strlen(same[i]));
        const char *got = enc_str(PGT_JSONB, same[i], strlen(same[i]));
        if (strcmp(got, want.data) != 0 || st_out.json_as_string != 0)
            fail_msg("valid JSON %s changed to %s", same[i], got);
        buf_free(&want);
    }
}

static void test_timestamptz_range(void **state)
{
    (void)state;
    /* Druid prints astronomical years (0000 is 1 BC); PostgreSQL wants the era */
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"0001-01-01T00:00:00.000Z\""),
                        "0001-01-01T00:00:00.000Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"0000-12-31T23:59:59.999Z\""),
                        "0001-12-31T23:59:59.999Z BC");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"-0001-03-01T12:00:00.000+02:00\""),
                        "0002-03-01T10:00:00.000Z BC");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"9999-12-31T23:59:59.999Z\""),
                        "9999-12-31T23:59:59.999Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"10000-01-01T00:00:00.000Z\""),
                        "10000-01-01T00:00:00.000Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"+10000-01-01T00:00:00.000Z\""),
                        "10000-01-01T00:00:00.000Z");
    /* the first and the last instant PostgreSQL holds, as text and as millis */
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"-4713-11-24T00:00:00.000Z\""),
                        "4714-11-24T00:00:00.000Z BC");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "-210866803200000"), "4714-11-24T00:00:00.000Z BC");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"294276-12-31T23:59:59.999Z\""),
                        "294276-12-31T23:59:59.999Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "9224318015999999"), "294276-12-31T23:59:59.999Z");
    assert_string_equal(enc1(PGT_TIMESTAMPTZ, "\"294277-01-01T00:59:59.999+01:00\""),
                        "294276-12-31T23:59:59.999Z");
    /* one millisecond beyond each: the row is skipped */
    enc1_skipped(PGT_TIMESTAMPTZ, "\"-4713-11-23T23:59:59.999Z\"");
    enc1_skipped(PGT_TIMESTAMPTZ, "-210866803200001");
    enc1_skipped(PGT_TIMESTAMPTZ, "\"294277-01-01T00:00:00.000Z\"");
    enc1_skipped(PGT_TIMESTAMPTZ, "9224318016000000");
    enc1_skipped(PGT_TIMESTAMPTZ, "\"294276-12-31T23:59:59.999-00:01\"");
    enc1_skipped(PGT_TIMESTAMPTZ, "-9223372036854775808");
    enc1_skipped(PGT_TIMESTAMPTZ, "\"292278994-08-17T07:12:55.807Z\"");
    /* malformed stays an error */
    enc1_fails(PGT_TIMESTAMPTZ, "\"10000-1-01T00:00:00.000Z\"");
}

static void test_date_range(void **state)
{
    (void)state;
    assert_string_equal(enc1(PGT_DATE, "\"0000-01-01T00:00:00.000Z\""), "0001-01-01 BC");
    assert_string_equal(enc1(PGT_DATE, "\"-0001-12-31T00:00:00.000Z\""), "0002-12-31 BC");
    assert_string_equal(enc1(PGT_DATE, "\"10000-01-01T00:00:00.000-08:00\""), "10000-01-01");
    assert_string_equal(enc1(PGT_DATE, "\"-4713-11-24T00:00:00.000Z\""), "4714-11-24 BC");
    assert_string_equal(enc1(PGT_DATE, "\"5874897-12-31T00:00:00.000Z\""), "5874897-12-31");
    /* as millis: the UTC day, over the first and the last day's whole span */
    assert_string_equal(enc1(PGT_DATE, "-210866803200000"), "4714-11-24 BC");
    assert_string_equal(enc1(PGT_DATE, "185331706992000000"), "5874897-12-31");
    assert_string_equal(enc1(PGT_DATE, "185331707078399999"), "5874897-12-31");
    enc1_skipped(PGT_DATE, "\"-4713-11-23T00:00:00.000Z\"");
    enc1_skipped(PGT_DATE, "\"-4713-11-23T23:59:59.999Z\"");
    enc1_skipped(PGT_DATE, "\"5874898-01-01T00:00:00.000Z\"");
    enc1_skipped(PGT_DATE, "-210866803200001");
    enc1_skipped(PGT_DATE, "185331707078400000");
    enc1_skipped(PGT_DATE, "\"-292275055-05-16T16:47:04.192Z\"");
}

static void test_skipped_row(void **state)
{
    (void)state;
    struct rowenc_column cols[] = {{"__time", PGT_TIMESTAMPTZ}, {"t", PGT_TEXT}, {"j", PGT_JSONB}};
    struct rowenc *e = rowenc_new(cols, 3, 0, true);
    struct buf out = BUF_INIT;
    struct json_object *good = json_tokener_parse("[\"2015-09-12T00:46:58.771Z\",\"x\",\"[1]\"]");
    struct json_object *far =
        json_tokener_parse("[\"294277-01-01T00:00:00.000Z\",\"a\\u0000\",\"bad\"]");
    int64_t inc = 0;
    assert_int_equal(rowenc_encode(e, good, &out, &inc, err_out, sizeof err_out), ROWENC_OK);
    size_t len = out.len;
    char *first = strdup(out.data);
    inc = 99;
    assert_int_equal(rowenc_encode(e, far, &out, &inc, err_out, sizeof err_out), ROWENC_SKIPPED);
    assert_int_equal(out.len, len);
    assert_string_equal(out.data, first);
    assert_int_equal(inc, INT64_MIN);
    assert_non_null(strstr(err_out, "\"__time\""));
    assert_non_null(strstr(err_out, "294277-01-01T00:00:00.000Z"));
    assert_int_equal(rowenc_rows(e), 1);
    /* the skipped row's values count for nothing */
    const struct rowenc_stats *st = rowenc_stats(e);
    assert_int_equal(st->rows_skipped, 1);
    assert_int_equal(st->nul_replaced, 0);
    assert_int_equal(st->json_as_string, 0);
    /* and it takes no occurrence number: the next good row is the second copy, whose id
     * differs from the first */
    assert_int_equal(rowenc_encode(e, good, &out, &inc, err_out, sizeof err_out), ROWENC_OK);
    assert_int_equal(inc, 1442018818771LL);
    assert_int_equal(out.len, 2 * len);
    assert_memory_not_equal(out.data, out.data + len, len);
    /* counters survive a reset and add up */
    rowenc_reset(e);
    struct json_object *odd =
        json_tokener_parse("[\"2015-09-12T00:46:58.771Z\",\"a\\u0000\",\"bad\"]");
    assert_int_equal(rowenc_encode(e, odd, &out, &inc, err_out, sizeof err_out), ROWENC_OK);
    assert_int_equal(rowenc_encode(e, far, &out, NULL, NULL, 0), ROWENC_SKIPPED);
    assert_int_equal(st->rows_skipped, 2);
    assert_int_equal(st->nul_replaced, 1);
    assert_int_equal(st->json_as_string, 1);
    assert_non_null(strstr(out.data + 2 * len, "a\xef\xbf\xbd\t\"bad\"\t"));
    free(first);
    json_object_put(good);
    json_object_put(far);
    json_object_put(odd);
    buf_free(&out);
    rowenc_free(e);
}

static void test_row_shape_errors(void **state)
{
    (void)state;
    struct rowenc_column cols[] = {{"__time", PGT_TIMESTAMPTZ}, {"added", PGT_BIGINT}};
    assert_int_equal(enc(cols, 2, "[\"2015-09-12T00:46:58.771Z\"]", -1, NULL), -1);
    assert_non_null(strstr(err_out, "1 values for 2 columns"));
    assert_int_equal(enc(cols, 2, "[\"2015-09-12T00:46:58.771Z\",1,2]", -1, NULL), -1);
    assert_int_equal(enc(cols, 2, "{\"__time\":1}", -1, NULL), -1);
    assert_int_equal(enc(cols, 2, "[\"2015-09-12T00:46:58.771Z\",\"x\"]", -1, NULL), -1);
    assert_non_null(strstr(err_out, "\"added\""));
    assert_non_null(strstr(err_out, "bigint"));

    /* a failing row leaves earlier output untouched */
    struct rowenc *e = rowenc_new(cols, 2, 0, true);
    struct buf out = BUF_INIT;
    struct json_object *good = json_tokener_parse("[\"2015-09-12T00:46:58.771Z\",36]");
    struct json_object *bad = json_tokener_parse("[\"2015-09-12T00:46:58.771Z\",\"x\"]");
    int64_t inc = 0;
    assert_int_equal(rowenc_encode(e, good, &out, &inc, err_out, sizeof err_out), 0);
    char *copy = strdup(out.data);
    size_t len = out.len;
    inc = 99;
    assert_int_equal(rowenc_encode(e, bad, &out, &inc, err_out, sizeof err_out), -1);
    assert_int_equal(out.len, len);
    assert_string_equal(out.data, copy);
    assert_int_equal(inc, 99);
    assert_int_equal(rowenc_rows(e), 1);
    /* and does not take an occurrence number: the next good row is the second copy */
    assert_int_equal(rowenc_encode(e, good, &out, &inc, err_out, sizeof err_out), 0);
    assert_int_equal(rowenc_rows(e), 2);
    assert_memory_not_equal(out.data, out.data + len, len);
    assert_int_equal(rowenc_encode(e, bad, &out, &inc, NULL, 0), -1); /* no err buffer */
    free(copy);
    json_object_put(good);
    json_object_put(bad);
    buf_free(&out);
    rowenc_free(e);
}

static void test_incremental_value(void **state)
{
    (void)state;
    struct rowenc_column cols[] = {{"x", PGT_TEXT}, {"__time", PGT_TIMESTAMPTZ}};
    int64_t inc = 0;
    assert_int_equal(enc(cols, 2, "[\"a\",\"2015-09-12T00:46:58.771Z\"]", 1, &inc), 0);
    assert_int_equal(inc, 1442018818771LL);
    assert_int_equal(enc(cols, 2, "[\"a\",\"1969-12-31T23:59:59.999Z\"]", 1, &inc), 0);
    assert_int_equal(inc, -1);
    assert_int_equal(enc(cols, 2, "[\"a\",1442018818771]", 1, &inc), 0);
    assert_int_equal(inc, 1442018818771LL);
    assert_int_equal(enc(cols, 2, "[\"a\",null]", 1, &inc), 0);
    assert_int_equal(inc, INT64_MIN);
    inc = 5;
    assert_int_equal(enc(cols, 2, "[\"a\",\"2015-09-12T00:46:58.771Z\"]", -1, &inc), 0);
    assert_int_equal(inc, INT64_MIN); /* no incremental column */
    assert_int_equal(enc(cols, 2, "[\"a\",\"2015-09-12T00:46:58.771Z\"]", 1, NULL), 0);
    /* a bigint incremental column */
    struct rowenc_column lc[] = {{"seq", PGT_BIGINT}};
    assert_int_equal(enc(lc, 1, "[-9223372036854775807]", 0, &inc), 0);
    assert_int_equal(inc, -9223372036854775807LL);
    assert_int_equal(enc(lc, 1, "[\"77\"]", 0, &inc), 0);
    assert_int_equal(inc, 77);
    /* text incremental column holding something that is not a time */
    struct rowenc_column tc[] = {{"when", PGT_TEXT}};
    assert_int_equal(enc(tc, 1, "[\"soon\"]", 0, &inc), -1);
    assert_non_null(strstr(err_out, "\"when\""));
}

static void test_copy_escape_direct(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    char all[32];
    for (int i = 0; i < 32; i++)
        all[i] = (char)i;
    rowenc_copy_escape(&b, all, sizeof all);
    assert_string_equal(b.data, "\\000\\001\\002\\003\\004\\005\\006\\007\\b\\t\\n\\v\\f\\r"
                                "\\016\\017\\020\\021\\022\\023\\024\\025\\026\\027\\030\\031"
                                "\\032\\033\\034\\035\\036\\037");
    buf_reset(&b);
    rowenc_copy_escape(&b, "", 0);
    assert_int_equal(b.len, 0);
    rowenc_copy_escape(&b, "\\\\", 2);
    assert_string_equal(b.data, "\\\\\\\\");
    buf_free(&b);

    uint8_t id[16];
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)(i * 17);
    char s[37];
    rowenc_format_uuid(id, s);
    assert_string_equal(s, "00112233-4455-6677-8899-aabbccddeeff");
    /* every byte value, in every position (the digits come from a table) */
    for (int b = 0; b < 256; b++) {
        char want[37], hx[3];
        snprintf(hx, sizeof hx, "%02x", b);
        for (int i = 0; i < 16; i++)
            id[i] = (uint8_t)(i == b % 16 ? b : 255 - b);
        char *w = want;
        for (int i = 0; i < 16; i++) {
            snprintf(w, 3, "%02x", id[i]);
            w += 2;
            if (i == 3 || i == 5 || i == 7 || i == 9)
                *w++ = '-';
        }
        rowenc_format_uuid(id, s);
        assert_string_equal(s, want);
        assert_memory_equal(
            s + 2 * (b % 16) + (b % 16 > 3) + (b % 16 > 5) + (b % 16 > 7) + (b % 16 > 9), hx, 2);
    }
}

/* ---- identity ---- */

/* Encodes rows (JSON texts) in one slice; writes each row's id (36 chars + NUL). */
static void ids_for(const struct rowenc_column *cols, size_t ncols, const char *const *rows,
                    size_t nrows, char (*ids)[37])
{
    struct rowenc *e = rowenc_new(cols, ncols, -1, true);
    assert_non_null(e);
    rowenc_reset(e);
    struct buf out = BUF_INIT;
    for (size_t i = 0; i < nrows; i++) {
        struct json_object *row = json_tokener_parse(rows[i]);
        buf_reset(&out);
        if (rowenc_encode(e, row, &out, NULL, err_out, sizeof err_out))
            fail_msg("%s", err_out);
        /* the id is the last field */
        assert_true(out.len >= 37);
        memcpy(ids[i], out.data + out.len - 37, 36);
        ids[i][36] = '\0';
        if (ncols)
            assert_int_equal(out.data[out.len - 38], '\t');
        json_object_put(row);
    }
    assert_int_equal(rowenc_rows(e), nrows);
    buf_free(&out);
    rowenc_free(e);
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static const struct rowenc_column wiki_cols[] = {
    {"__time", PGT_TIMESTAMPTZ}, {"channel", PGT_TEXT}, {"added", PGT_BIGINT},
    {"isRobot", PGT_BOOLEAN},    {"delta", PGT_DOUBLE},
};
static const char *const wiki_rows[] = {
    "[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",36,false,1.0]",
    "[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",36,false,1.0]",
    "[\"2015-09-12T00:46:58.771Z\",\"#ca.wikipedia\",17,true,null]",
    "[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",36,false,1.0]",
    "[\"2015-09-12T00:47:00.496Z\",null,0,null,-3.5]",
};
#define NWIKI (sizeof wiki_rows / sizeof *wiki_rows)

static void test_ids_format_and_duplicates(void **state)
{
    (void)state;
    char ids[NWIKI][37];
    ids_for(wiki_cols, 5, wiki_rows, NWIKI, ids);
    for (size_t i = 0; i < NWIKI; i++) {
        /* 8-4-4-4-12 lowercase hex, version 8, variant 10 */
        assert_int_equal(strlen(ids[i]), 36);
        for (int k = 0; k < 36; k++) {
            char c = ids[i][k];
            if (k == 8 || k == 13 || k == 18 || k == 23)
                assert_int_equal(c, '-');
            else
                assert_true((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
        }
        assert_int_equal(ids[i][14], '8');
        assert_non_null(strchr("89ab", ids[i][19]));
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(ids[i], ids[j]); /* identical rows get distinct ids */
    }
}

static void test_ids_stable(void **state)
{
    (void)state;
    char a[NWIKI][37], b[NWIKI][37];
    ids_for(wiki_cols, 5, wiki_rows, NWIKI, a);
    ids_for(wiki_cols, 5, wiki_rows, NWIKI, b);
    for (size_t i = 0; i < NWIKI; i++)
        assert_string_equal(a[i], b[i]);

    /* the same rows in another order: the same multiset of ids */
    const char *rev[NWIKI];
    for (size_t i = 0; i < NWIKI; i++)
        rev[i] = wiki_rows[NWIKI - 1 - i];
    ids_for(wiki_cols, 5, rev, NWIKI, b);
    qsort(a, NWIKI, sizeof *a, cmp_id);
    qsort(b, NWIKI, sizeof *b, cmp_id);
    for (size_t i = 0; i < NWIKI; i++)
        assert_string_equal(a[i], b[i]);
}

static void test_ids_pinned(void **state)
{
    (void)state;
    /* Scheme 2 ids (rowenc.h), literal: content input "a" NUL 'S' 03 "x<TAB>y" "b" NUL 'N'
     * 03 "7e0" (fields in name order, the NULL one left out), checked by hand with
     * xxhsum -H2 as test_rowid.c describes. (Scheme 1 hashed the COPY text, x\ty and 7.)
     * More literal ids are pinned in test_rowid.c. */
    struct rowenc_column cols[] = {{"b", PGT_BIGINT}, {"a", PGT_TEXT}, {"n", PGT_TEXT}};
    const char *rows[] = {"[7,\"x\\ty\",null]", "[7,\"x\\ty\",null]"};
    char ids[2][37];
    ids_for(cols, 3, rows, 2, ids);
    assert_string_equal(ids[0], "e726b058-3655-8324-bb89-b987863aca65");
    assert_string_equal(ids[1], "7b7b1b8d-8595-83c6-b00a-b98a1eed8cc1");
}

static void test_ids_schema_drift(void **state)
{
    (void)state;
    char a[NWIKI][37], b[NWIKI][37];
    ids_for(wiki_cols, 5, wiki_rows, NWIKI, a);

    /* a new column that is NULL in every row, placed first: ids unchanged */
    struct rowenc_column more[6] = {{"aaa_new", PGT_TEXT}};
    memcpy(more + 1, wiki_cols, sizeof wiki_cols);
    const char *rows6[NWIKI];
    char store[NWIKI][256];
    for (size_t i = 0; i < NWIKI; i++) {
        snprintf(store[i], sizeof store[i], "[null,%s", wiki_rows[i] + 1);
        rows6[i] = store[i];
    }
    ids_for(more, 6, rows6, NWIKI, b);
    for (size_t i = 0; i < NWIKI; i++)
        assert_string_equal(a[i], b[i]);

    /* the same columns in another order: ids unchanged */
    struct rowenc_column swapped[] = {
        {"delta", PGT_DOUBLE},    {"added", PGT_BIGINT},       {"channel", PGT_TEXT},
        {"isRobot", PGT_BOOLEAN}, {"__time", PGT_TIMESTAMPTZ},
    };
    const char *rows_sw[] = {
        "[1.0,36,\"#en.wikipedia\",false,\"2015-09-12T00:46:58.771Z\"]",
        "[1.0,36,\"#en.wikipedia\",false,\"2015-09-12T00:46:58.771Z\"]",
        "[null,17,\"#ca.wikipedia\",true,\"2015-09-12T00:46:58.771Z\"]",
        "[1.0,36,\"#en.wikipedia\",false,\"2015-09-12T00:46:58.771Z\"]",
        "[-3.5,0,null,null,\"2015-09-12T00:47:00.496Z\"]",
    };
    ids_for(swapped, 5, rows_sw, NWIKI, b);
    for (size_t i = 0; i < NWIKI; i++)
        assert_string_equal(a[i], b[i]);

    /* a changed value changes the id */
    const char *changed[] = {"[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",37,false,1.0]"};
    ids_for(wiki_cols, 5, changed, 1, b);
    assert_string_not_equal(a[0], b[0]);
    /* NULL and empty string are different rows */
    const char *n1[] = {"[\"2015-09-12T00:47:00.496Z\",null,0,null,-3.5]"};
    const char *n2[] = {"[\"2015-09-12T00:47:00.496Z\",\"\",0,null,-3.5]"};
    ids_for(wiki_cols, 5, n1, 1, a);
    ids_for(wiki_cols, 5, n2, 1, b);
    assert_string_not_equal(a[0], b[0]);
}

static void test_ids_reset_and_many(void **state)
{
    (void)state;
    /* 3000 identical rows and 20000 distinct ones: every id distinct (table growth) */
    struct rowenc_column cols[] = {{"k", PGT_BIGINT}};
    struct rowenc *e = rowenc_new(cols, 1, -1, true);
    struct buf out = BUF_INIT;
    size_t n = 23000;
    char(*ids)[37] = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        struct json_object *row = json_object_new_array();
        json_object_array_add(row, json_object_new_int64(i < 3000 ? -1 : (int64_t)i));
        buf_reset(&out);
        assert_int_equal(rowenc_encode(e, row, &out, NULL, NULL, 0), 0);
        memcpy(ids[i], out.data + out.len - 37, 36);
        ids[i][36] = '\0';
        json_object_put(row);
    }
    assert_int_equal(rowenc_rows(e), n);
    char first[37];
    memcpy(first, ids[0], 37);
    qsort(ids, n, sizeof *ids, cmp_id);
    for (size_t i = 1; i < n; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);

    /* after a reset the occurrence numbers start again */
    rowenc_reset(e);
    assert_int_equal(rowenc_rows(e), 0);
    struct json_object *row = json_tokener_parse("[-1]");
    buf_reset(&out);
    assert_int_equal(rowenc_encode(e, row, &out, NULL, NULL, 0), 0);
    assert_memory_equal(out.data + out.len - 37, first, 36);
    assert_memory_equal(out.data, "-1\t", 3);
    json_object_put(row);
    free(ids);
    buf_free(&out);
    rowenc_free(e);
}

/* The id of row k in an encoder that has seen rows (given as ints) since its last reset. */
static void id_of(struct rowenc *e, int64_t k, char id[37])
{
    struct json_object *row = json_object_new_array();
    json_object_array_add(row, json_object_new_int64(k));
    struct buf out = BUF_INIT;
    assert_int_equal(rowenc_encode(e, row, &out, NULL, NULL, 0), 0);
    memcpy(id, out.data + out.len - 37, 36);
    id[36] = '\0';
    buf_free(&out);
    json_object_put(row);
}

/* Groups of every size around the point where a reset stops clearing only the slots it
 * used and clears the table (and around the table's growth), one encoder reset between
 * groups: each group's ids are those of a fresh encoder. */
static void test_ids_small_groups(void **state)
{
    (void)state;
    struct rowenc_column cols[] = {{"k", PGT_BIGINT}};
    struct rowenc *e = rowenc_new(cols, 1, -1, true);
    static const size_t sizes[] = {1, 2, 8, 9, 1, 3, 7, 8, 12, 1, 40, 2, 8, 1};
    for (size_t g = 0; g < sizeof sizes / sizeof *sizes; g++) {
        struct rowenc *fresh = rowenc_new(cols, 1, -1, true);
        for (size_t i = 0; i < sizes[g]; i++) {
            /* identical rows (k = 5) mixed with distinct ones */
            int64_t k = i % 3 == 0 ? 5 : (int64_t)(g * 100 + i);
            char a[37], b[37];
            id_of(e, k, a);
            id_of(fresh, k, b);
            assert_string_equal(a, b);
        }
        rowenc_free(fresh);
        rowenc_reset(e);
    }
    rowenc_free(e);
}

static void test_full_line(void **state)
{
    (void)state;
    /* a whole wikiticker-like line, with the id */
    struct rowenc *e = rowenc_new(wiki_cols, 5, 0, true);
    struct json_object *row = json_tokener_parse(wiki_rows[0]);
    struct buf out = BUF_INIT;
    int64_t inc;
    assert_int_equal(rowenc_encode(e, row, &out, &inc, NULL, 0), 0);
    assert_int_equal(inc, 1442018818771LL);
    assert_int_equal(out.len, strlen("2015-09-12T00:46:58.771Z\t#en.wikipedia\t36\tf\t1.0\t") + 37);
    assert_memory_equal(out.data, "2015-09-12T00:46:58.771Z\t#en.wikipedia\t36\tf\t1.0\t", 48);
    assert_int_equal(out.data[out.len - 1], '\n');
    json_object_put(row);
    buf_free(&out);
    rowenc_free(e);

    /* zero columns: just the id */
    e = rowenc_new(NULL, 0, -1, true);
    row = json_object_new_array();
    assert_int_equal(rowenc_encode(e, row, &out, NULL, NULL, 0), 0);
    assert_int_equal(out.len, 37);
    json_object_put(row);
    buf_free(&out);
    rowenc_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_escaping),
        cmocka_unit_test(test_null_vs_empty),
        cmocka_unit_test(test_text_from_other_json),
        cmocka_unit_test(test_bigint),
        cmocka_unit_test(test_double),
        cmocka_unit_test(test_double_built_by_hand),
        cmocka_unit_test(test_boolean),
        cmocka_unit_test(test_timestamptz),
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_jsonb),
        cmocka_unit_test(test_nul_text),
        cmocka_unit_test(test_nul_jsonb),
        cmocka_unit_test(test_jsonb_depth),
        cmocka_unit_test(test_jsonb_not_json),
        cmocka_unit_test(test_timestamptz_range),
        cmocka_unit_test(test_date_range),
        cmocka_unit_test(test_skipped_row),
        cmocka_unit_test(test_row_shape_errors),
        cmocka_unit_test(test_incremental_value),
        cmocka_unit_test(test_copy_escape_direct),
        cmocka_unit_test(test_ids_format_and_duplicates),
        cmocka_unit_test(test_ids_stable),
        cmocka_unit_test(test_ids_pinned),
        cmocka_unit_test(test_ids_schema_drift),
        cmocka_unit_test(test_ids_reset_and_many),
        cmocka_unit_test(test_ids_small_groups),
        cmocka_unit_test(test_full_line),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(big_out);
    return rc;
}
