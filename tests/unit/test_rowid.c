/* Row ids under scheme 2 (rowenc.h, ROWENC_ID_SCHEME): literal ids for fixed rows, and the
 * values that must share an id (or must not). The literals were computed once and are
 * written here, never recomputed with the code's formula. Each of them was also checked
 * by hand, outside the code: the hash input written out byte by byte (in Python, from the
 * rules in rowenc.h), hashed with Debian's xxhsum -H2 (XXH3-128, big-endian hex), the
 * second step likewise over that digest and the 8-byte big-endian occurrence number, then
 * the version and variant bits set. For example ID_ONE, the row {"n": 1}:
 *   c=$(printf 'n\0N\0031e0' | xxhsum -H2 | cut -d' ' -f1)
 *   { printf "$(echo $c | sed 's/../\\x&/g')"; printf '\0\0\0\0\0\0\0\0'; } | xxhsum -H2
 * prints 0e2f42302d50c16689c0ca2f52bf411a; byte 6's high nibble set to 8 and byte 8's top
 * bits to 10 give 0e2f4230-2d50-8166-89c0-ca2f52bf411a. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "buf.h"
#include "rowenc.h"

static char err_out[512];

/* The ids of rows (arrayLines JSON texts) encoded in one slice, in order. */
static void ids_for(const struct rowenc_column *cols, size_t ncols, const char *const *rows,
                    size_t nrows, char (*ids)[37])
{
    struct rowenc *e = rowenc_new(cols, ncols, -1, true);
    assert_non_null(e);
    struct buf out = BUF_INIT;
    for (size_t i = 0; i < nrows; i++) {
        struct json_object *row = json_tokener_parse(rows[i]);
        if (!row)
            fail_msg("test row is not JSON: %s", rows[i]);
        buf_reset(&out);
        if (rowenc_encode(e, row, &out, NULL, err_out, sizeof err_out) != ROWENC_OK)
            fail_msg("%s: %s", rows[i], err_out);
        assert_true(out.len >= 37);
        memcpy(ids[i], out.data + out.len - 37, 36); /* the id is the last field */
        ids[i][36] = '\0';
        json_object_put(row);
    }
    buf_free(&out);
    rowenc_free(e);
}

/* The id of one row in a slice of its own, in a one-column table. The result stays valid
 * for the next 7 calls (so two can be compared). */
static const char *id1(const char *name, enum pgtype type, const char *row)
{
    static char ring[8][37];
    static unsigned next;
    char *id = ring[next++ % 8];
    struct rowenc_column col = {name, type};
    ids_for(&col, 1, &row, 1, (char(*)[37])id);
    return id;
}

#define EXPECT_ID1(want, name, type, row)                                                          \
    do {                                                                                           \
        const char *got_ = id1(name, type, row);                                                   \
        if (strcmp(got_, want) != 0)                                                               \
            fail_msg("%s in %s column \"%s\": id %s, expected %s", row, typemap_pg_name(type),     \
                     name, got_, want);                                                            \
    } while (0)

static void test_scheme_constant(void **state)
{
    (void)state;
    /* scheme 1 was the COPY-text hash; these are scheme 2's ids */
    assert_int_equal(ROWENC_ID_SCHEME, 2);
}

/* ---- a wikiticker-like slice, pinned, and the same rows after type widenings ---- */

static const char *const W[] = {
    "18fa479c-fe79-8a27-8335-bf7a1dbe4297", "7f459b83-0f30-86a7-9041-b692c606ab04",
    "5e253258-de4a-8150-979d-0c53bd69a686", "cd3a01ec-1fdf-8bb2-a452-210091f9448d",
    "42281222-5a9d-8929-9979-ccb3a2f2d1b4",
};

static void expect_w(const struct rowenc_column *cols, size_t ncols, const char *const *rows)
{
    char ids[5][37];
    ids_for(cols, ncols, rows, 5, ids);
    for (size_t i = 0; i < 5; i++)
        if (strcmp(ids[i], W[i]) != 0)
            fail_msg("row %zu %s: id %s, expected %s", i, rows[i], ids[i], W[i]);
}

static void test_wiki_pinned_bigint(void **state)
{
    (void)state;
    static const struct rowenc_column cols[] = {
        {"__time", PGT_TIMESTAMPTZ}, {"channel", PGT_TEXT},    {"added", PGT_BIGINT},
        {"delta", PGT_BIGINT},       {"isRobot", PGT_BOOLEAN},
    };
    static const char *const rows[] = {
        "[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",36,36,false]",
        "[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",36,36,false]",
        "[\"2015-09-12T00:47:00.496Z\",\"#ca.wikipedia\",17,-17,true]",
        "[\"2015-09-12T00:47:05.474Z\",\"#en.wikipedia\",0,0,null]",
        "[\"2015-09-12T00:47:08.770Z\",null,1500,-1500,false]",
    };
    expect_w(cols, 5, rows);
    /* rows 0 and 1 are identical: their occurrence numbers 0 and 1 give distinct ids */
    assert_string_not_equal(W[0], W[1]);
}

static void test_wiki_widened_to_double(void **state)
{
    (void)state;
    /* the same rows once Druid reports added and delta as DOUBLE: it prints 36.0 for 36
     * (Double.toString), and may print 1500 as 1500.0 or 1.5E3 */
    static const struct rowenc_column cols[] = {
        {"__time", PGT_TIMESTAMPTZ}, {"channel", PGT_TEXT},    {"added", PGT_DOUBLE},
        {"delta", PGT_DOUBLE},       {"isRobot", PGT_BOOLEAN},
    };
    static const char *const rows[] = {
        "[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",36.0,36.0,false]",
        "[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",36.0,3.6E1,false]",
        "[\"2015-09-12T00:47:00.496Z\",\"#ca.wikipedia\",17.0,-17.0,true]",
        "[\"2015-09-12T00:47:05.474Z\",\"#en.wikipedia\",0.0,-0.0,null]",
        "[\"2015-09-12T00:47:08.770Z\",null,1.5E3,-1500.0,false]",
    };
    expect_w(cols, 5, rows);
}

static void test_wiki_boolean_widened_to_bigint(void **state)
{
    (void)state;
    /* boolean + bigint widens to bigint: Druid then prints 1 and 0 */
    static const struct rowenc_column cols[] = {
        {"__time", PGT_TIMESTAMPTZ}, {"channel", PGT_TEXT},   {"added", PGT_BIGINT},
        {"delta", PGT_DOUBLE},       {"isRobot", PGT_BIGINT},
    };
    static const char *const rows[] = {
        "[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",36,36.0,0]",
        "[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",36,36.0,0]",
        "[\"2015-09-12T00:47:00.496Z\",\"#ca.wikipedia\",17,-17.0,1]",
        "[\"2015-09-12T00:47:05.474Z\",\"#en.wikipedia\",0,0.0,null]",
        "[\"2015-09-12T00:47:08.770Z\",null,1500,-1500.0,0]",
    };
    expect_w(cols, 5, rows);
}

static void test_wiki_null_columns_and_order(void **state)
{
    (void)state;
    /* two new columns, NULL in every row, one sorting first and one last, and the
     * columns in another order: every id unchanged */
    static const struct rowenc_column cols[] = {
        {"zz_new", PGT_DOUBLE},      {"isRobot", PGT_BOOLEAN}, {"delta", PGT_BIGINT},
        {"added", PGT_BIGINT},       {"channel", PGT_TEXT},    {"__aa_new", PGT_JSONB},
        {"__time", PGT_TIMESTAMPTZ},
    };
    static const char *const rows[] = {
        "[null,false,36,36,\"#en.wikipedia\",null,\"2015-09-12T00:46:58.771Z\"]",
        "[null,false,36,36,\"#en.wikipedia\",null,\"2015-09-12T00:46:58.771Z\"]",
        "[null,true,-17,17,\"#ca.wikipedia\",null,\"2015-09-12T00:47:00.496Z\"]",
        "[null,null,0,0,\"#en.wikipedia\",null,\"2015-09-12T00:47:05.474Z\"]",
        "[null,false,-1500,1500,null,null,\"2015-09-12T00:47:08.770Z\"]",
    };
    expect_w(cols, 7, rows);
}

static void test_wiki_changes_change_ids(void **state)
{
    (void)state;
    static const struct rowenc_column cols[] = {
        {"__time", PGT_TIMESTAMPTZ}, {"channel", PGT_TEXT},    {"added", PGT_BIGINT},
        {"delta", PGT_BIGINT},       {"isRobot", PGT_BOOLEAN},
    };
    static const char *const rows[] = {
        "[\"2015-09-12T00:46:58.771Z\",\"#en.wikipedia\",37,36,false]", /* a value */
        "[\"2015-09-12T00:46:58.772Z\",\"#en.wikipedia\",36,36,false]", /* 1 ms */
        "[\"2015-09-12T00:47:00.496Z\",\"#ca.wikipedia\",-17,17,true]", /* swapped */
        "[\"2015-09-12T00:47:05.474Z\",\"#en.wikipedia\",0,0,false]",   /* NULL -> false */
        "[\"2015-09-12T00:47:08.770Z\",\"\",1500,-1500,false]",         /* NULL -> "" */
    };
    char ids[5][37];
    ids_for(cols, 5, rows, 5, ids);
    for (size_t i = 0; i < 5; i++)
        for (size_t k = 0; k < 5; k++)
            if (strcmp(ids[i], W[k]) == 0)
                fail_msg("changed row %s has the id of pinned row %zu", rows[i], k);
}

/* ---- numbers ---- */

/* Hash input of {"n": 1}: 6e 00 4e 03 31 65 30 ("n" NUL 'N' len 3 "1e0"). */
#define ID_ONE "0e2f4230-2d50-8166-89c0-ca2f52bf411a"
/* Hash input of {"n": "1"}: 6e 00 53 01 31 ("n" NUL 'S' len 1 "1"). */
#define ID_STR_ONE "21520336-524d-8c06-bef1-0a87d7b78b68"

static void test_one_spelled_many_ways(void **state)
{
    (void)state;
    static const char *const doubles[] = {"[1]",     "[1.0]",      "[1.0E0]",
                                          "[1e0]",   "[1.000E+0]", "[10E-1]",
                                          "[0.1e1]", "[100e-2]",   "[0.00001E5]"};
    for (size_t i = 0; i < sizeof doubles / sizeof *doubles; i++)
        EXPECT_ID1(ID_ONE, "n", PGT_DOUBLE, doubles[i]);
    EXPECT_ID1(ID_ONE, "n", PGT_BIGINT, "[1]");
    EXPECT_ID1(ID_ONE, "n", PGT_BIGINT, "[\"1\"]"); /* a numeric string in a bigint column */
    EXPECT_ID1(ID_ONE, "n", PGT_BIGINT, "[true]");
    EXPECT_ID1(ID_ONE, "n", PGT_BOOLEAN, "[true]");
    EXPECT_ID1(ID_ONE, "n", PGT_BOOLEAN, "[\"true\"]");
    EXPECT_ID1(ID_ONE, "n", PGT_TEXT, "[1]"); /* a JSON number in a text column */
    EXPECT_ID1(ID_ONE, "n", PGT_TEXT, "[1.0]");
    /* the string "1" is not the number 1 */
    EXPECT_ID1(ID_STR_ONE, "n", PGT_TEXT, "[\"1\"]");
    assert_string_not_equal(ID_ONE, ID_STR_ONE);
    /* nor is the number under another column name */
    assert_string_not_equal(id1("m", PGT_DOUBLE, "[1]"), ID_ONE);
}

#define ID_TENTH "5e31241a-8cc1-8ab4-b01b-dc3dcc29808a"
#define ID_ZERO "ef23c723-b2a0-8596-951a-11ccbac7a79d"
#define ID_NAN "f0bf9e9a-c454-8062-a92f-c86ff1e75b48"
#define ID_PINF "b8cabcc3-b8d5-8f76-a547-1428e2402397"
#define ID_NINF "114296be-411d-8a68-92ea-632b8d4f72bf"
#define ID_MINUS_2500 "a1fbc8f7-ebee-80a6-a9f1-7c3a3e5c3928"
#define ID_INT64_MAX "b61814d5-e914-84b6-aea6-48a6847bd1ca"
#define ID_UINT64_MAX "d52a8fac-d6e1-8cde-b5c5-5c139e8c2bbf"

static void test_numbers_exact(void **state)
{
    (void)state;
    EXPECT_ID1(ID_TENTH, "n", PGT_DOUBLE, "[0.1]");
    EXPECT_ID1(ID_TENTH, "n", PGT_DOUBLE, "[1.0E-1]");
    EXPECT_ID1(ID_TENTH, "n", PGT_DOUBLE, "[0.10]");
    EXPECT_ID1(ID_TENTH, "n", PGT_DOUBLE, "[100E-3]");
    /* exact decimals: the double nearest 0.1 written out in full is another value */
    assert_string_not_equal(id1("n", PGT_DOUBLE, "[0.1000000000000000055511151231257827]"),
                            ID_TENTH);
    assert_string_not_equal(id1("n", PGT_DOUBLE, "[0.30000000000000004]"),
                            id1("n", PGT_DOUBLE, "[0.3]"));

    /* zero, whatever its sign or spelling */
    static const char *const zeros[] = {"[0]", "[0.0]", "[-0.0]", "[0e5]", "[-0]", "[0.000E-7]"};
    for (size_t i = 0; i < sizeof zeros / sizeof *zeros; i++)
        EXPECT_ID1(ID_ZERO, "n", PGT_DOUBLE, zeros[i]);
    EXPECT_ID1(ID_ZERO, "n", PGT_BIGINT, "[0]");
    EXPECT_ID1(ID_ZERO, "n", PGT_BOOLEAN, "[false]");

    EXPECT_ID1(ID_MINUS_2500, "n", PGT_BIGINT, "[-2500]");
    EXPECT_ID1(ID_MINUS_2500, "n", PGT_DOUBLE, "[-2.5E3]");
    EXPECT_ID1(ID_MINUS_2500, "n", PGT_DOUBLE, "[-2500.00]");

    /* 64-bit extremes stay exact: no detour through a double */
    EXPECT_ID1(ID_INT64_MAX, "n", PGT_BIGINT, "[9223372036854775807]");
    EXPECT_ID1(ID_INT64_MAX, "n", PGT_DOUBLE, "[9223372036854775807]");
    EXPECT_ID1(ID_INT64_MAX, "n", PGT_TEXT, "[9223372036854775807]");
    assert_string_not_equal(id1("n", PGT_BIGINT, "[9223372036854775806]"), ID_INT64_MAX);
    EXPECT_ID1(ID_UINT64_MAX, "n", PGT_DOUBLE, "[18446744073709551615]");
    EXPECT_ID1(ID_UINT64_MAX, "n", PGT_TEXT, "[18446744073709551615]");
    assert_string_not_equal(id1("n", PGT_DOUBLE, "[1.8446744073709552E19]"), ID_UINT64_MAX);
    EXPECT_ID1(ID_UINT64_MAX, "n", PGT_DOUBLE, "[1.8446744073709551615E19]");

    /* the non-finite values: Jackson's strings and the literals alike, each its own */
    EXPECT_ID1(ID_NAN, "n", PGT_DOUBLE, "[\"NaN\"]");
    EXPECT_ID1(ID_NAN, "n", PGT_DOUBLE, "[NaN]");
    EXPECT_ID1(ID_PINF, "n", PGT_DOUBLE, "[\"Infinity\"]");
    EXPECT_ID1(ID_PINF, "n", PGT_DOUBLE, "[Infinity]");
    EXPECT_ID1(ID_NINF, "n", PGT_DOUBLE, "[\"-Infinity\"]");
    EXPECT_ID1(ID_NINF, "n", PGT_DOUBLE, "[-Infinity]");
    assert_string_not_equal(ID_NAN, ID_PINF);
    assert_string_not_equal(ID_PINF, ID_NINF);
    assert_string_not_equal(ID_NAN, ID_ZERO);
    /* the string "NaN" in a text column is a string */
    assert_string_not_equal(id1("n", PGT_TEXT, "[\"NaN\"]"), ID_NAN);

    /* the largest and smallest doubles, by their literal */
    assert_string_equal(id1("n", PGT_DOUBLE, "[1.7976931348623157E308]"),
                        id1("n", PGT_DOUBLE, "[17976931348623157e292]"));
    assert_string_equal(id1("n", PGT_DOUBLE, "[4.9E-324]"), id1("n", PGT_DOUBLE, "[49e-325]"));
    /* a huge exponent in a text column is still a number */
    assert_string_equal(id1("n", PGT_TEXT, "[1e400]"), id1("n", PGT_TEXT, "[10E399]"));
}

/* ---- timestamps ---- */

/* Hash input: "__time" NUL 'T' 00 00 01 55 8f 27 d4 00 (1466985600000 big-endian). */
#define ID_TS "97f0d606-bf38-84a5-9f32-3e0871c050d4"

static void test_timestamp_forms(void **state)
{
    (void)state;
    static const char *const forms[] = {
        "[\"2016-06-27T00:00:00.000Z\"]",
        "[\"2016-06-27T00:00:00Z\"]",
        "[\"2016-06-27T02:00:00.000+02:00\"]",
        "[\"2016-06-26T19:00:00-05:00\"]",
        "[\"2016-06-27 00:00:00\"]",
        "[\"2016-06-27T00:00:00.0001Z\"]",
        "[\"2016-06-27\"]",
        "[1466985600000]",
    };
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++)
        EXPECT_ID1(ID_TS, "__time", PGT_TIMESTAMPTZ, forms[i]);
    /* a date is the instant of its UTC midnight: date widened to timestamptz keeps ids */
    EXPECT_ID1(ID_TS, "__time", PGT_DATE, "[\"2016-06-27T00:00:00.000Z\"]");
    EXPECT_ID1(ID_TS, "__time", PGT_DATE, "[\"2016-06-27\"]");
    EXPECT_ID1(ID_TS, "__time", PGT_DATE, "[1466985600000]");
    /* one millisecond later is another instant */
    assert_string_not_equal(id1("__time", PGT_TIMESTAMPTZ, "[\"2016-06-27T00:00:00.001Z\"]"),
                            ID_TS);
    /* the same text in a text column is a string, and the millis a number */
    assert_string_not_equal(id1("__time", PGT_TEXT, "[\"2016-06-27T00:00:00.000Z\"]"), ID_TS);
    assert_string_not_equal(id1("__time", PGT_BIGINT, "[1466985600000]"), ID_TS);
    /* years before 1 and far ahead, as Druid prints them */
    assert_string_equal(id1("t", PGT_TIMESTAMPTZ, "[\"0000-01-01T00:00:00.000Z\"]"),
                        id1("t", PGT_TIMESTAMPTZ, "[-62167219200000]"));
    assert_string_equal(id1("t", PGT_TIMESTAMPTZ, "[\"10000-01-01T00:00:00.000Z\"]"),
                        id1("t", PGT_TIMESTAMPTZ, "[253402300800000]"));
}

/* ---- strings and JSON ---- */

#define ID_J12 "e6854428-c8ea-8935-b2f1-87e1a7286da6"
#define ID_JOBJ "4b00e904-24cb-888a-b00a-8f548ea3da70"
#define ID_JSTR "73419cd3-53c0-85aa-83c5-51a9fafc5385"
#define ID_MULTI "0c1d47cd-aaaa-8013-9a23-8d3b984ad561"

static void test_strings(void **state)
{
    (void)state;
    /* strings are their bytes: escapes decoded, nothing else folded */
    assert_string_equal(id1("s", PGT_TEXT, "[\"caf\\u00e9\"]"), id1("s", PGT_TEXT, "[\"café\"]"));
    assert_string_not_equal(id1("s", PGT_TEXT, "[\"Café\"]"), id1("s", PGT_TEXT, "[\"café\"]"));
    assert_string_not_equal(id1("s", PGT_TEXT, "[\"a \"]"), id1("s", PGT_TEXT, "[\"a\"]"));
    /* the empty string is a value; NULL is left out (a row of NULLs has one id) */
    assert_string_not_equal(id1("s", PGT_TEXT, "[\"\"]"), id1("s", PGT_TEXT, "[null]"));
    assert_string_equal(id1("s", PGT_TEXT, "[null]"), id1("other", PGT_DOUBLE, "[null]"));
    /* a NUL is hashed as sent (stored as U+FFFD) */
    assert_string_not_equal(id1("s", PGT_TEXT, "[\"a\\u0000\"]"), id1("s", PGT_TEXT, "[\"a\"]"));
    /* name/value boundaries cannot shift: ("ab" = "c") vs ("a" = "bc") */
    assert_string_not_equal(id1("ab", PGT_TEXT, "[\"c\"]"), id1("a", PGT_TEXT, "[\"bc\"]"));
    /* two fields vs one field holding both */
    static const struct rowenc_column two[] = {{"a", PGT_TEXT}, {"b", PGT_TEXT}};
    const char *r2[] = {"[\"x\",\"y\"]"};
    char ids[1][37];
    ids_for(two, 2, r2, 1, ids);
    assert_string_not_equal(ids[0], id1("a", PGT_TEXT, "[\"x\\u0000b\\u0000Sy\"]"));
}

static void test_long_values(void **state)
{
    (void)state;
    /* hash inputs longer than the encoder's staging block, and a two-byte length:
     * "s" NUL 'S' ac 02 then 300 'x'; and a 200-byte name NUL 'S' 64 then 100 'y' */
    char row[400], name[201];
    snprintf(row, sizeof row, "[\"%0300d\"]", 0);
    memset(row + 2, 'x', 300);
    EXPECT_ID1("39893275-b5fe-8cc2-987f-e8f5c3a303df", "s", PGT_TEXT, row);
    memset(name, 'c', 200);
    name[200] = '\0';
    snprintf(row, sizeof row, "[\"%0100d\"]", 0);
    memset(row + 2, 'y', 100);
    EXPECT_ID1("08b95e32-25f4-8701-96e0-735230fb2526", name, PGT_TEXT, row);
}

static void test_json(void **state)
{
    (void)state;
    /* text as Druid sends ARRAY values, whitespace, number spellings and a real array */
    static const char *const arrays[] = {"[\"[1,2]\"]",       "[\"[1.0,2.0]\"]",
                                         "[\" [ 1 , 2 ] \"]", "[\"[1e0,20E-1]\"]",
                                         "[[1,2]]",           "[[1.0,2.0]]"};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++)
        EXPECT_ID1(ID_J12, "j", PGT_JSONB, arrays[i]);
    assert_string_not_equal(id1("j", PGT_JSONB, "[\"[2,1]\"]"), ID_J12);
    assert_string_not_equal(id1("j", PGT_JSONB, "[\"[[1,2]]\"]"), ID_J12);
    assert_string_not_equal(id1("j", PGT_JSONB, "[\"[\\\"1\\\",2]\"]"), ID_J12);

    EXPECT_ID1(ID_JOBJ, "j", PGT_JSONB, "[\"{\\\"a\\\":1,\\\"b\\\":\\\"é\\\"}\"]");
    EXPECT_ID1(ID_JOBJ, "j", PGT_JSONB, "[\"{\\\"a\\\": 1.0, \\\"b\\\": \\\"\\\\u00e9\\\"}\"]");
    EXPECT_ID1(ID_JOBJ, "j", PGT_JSONB, "[{\"a\":1,\"b\":\"é\"}]");
    /* keys stay in the order Druid sent them */
    assert_string_not_equal(id1("j", PGT_JSONB, "[\"{\\\"b\\\":\\\"é\\\",\\\"a\\\":1}\"]"),
                            ID_JOBJ);
    /* true, false and null inside JSON are their own, not numbers */
    assert_string_not_equal(id1("j", PGT_JSONB, "[\"[true]\"]"), id1("j", PGT_JSONB, "[\"[1]\"]"));
    assert_string_not_equal(id1("j", PGT_JSONB, "[\"[null]\"]"), id1("j", PGT_JSONB, "[\"[]\"]"));
    /* surrogate pairs decode to the code point */
    assert_string_equal(id1("j", PGT_JSONB, "[\"[\\\"\\\\ud83d\\\\ude00\\\"]\"]"),
                        id1("j", PGT_JSONB, "[\"[\\\"\xf0\x9f\x98\x80\\\"]\"]"));

    /* text that is not JSON is stored as the JSON string of itself: same as that string */
    EXPECT_ID1(ID_JSTR, "j", PGT_JSONB, "[\"org.apache.druid.hll.HLLCV1\"]");
    EXPECT_ID1(ID_JSTR, "j", PGT_JSONB, "[\"\\\"org.apache.druid.hll.HLLCV1\\\"\"]");
    assert_string_not_equal(id1("j", PGT_TEXT, "[\"org.apache.druid.hll.HLLCV1\"]"), ID_JSTR);

    /* a multi-value string in a text column (a JSON array) */
    EXPECT_ID1(ID_MULTI, "tags", PGT_TEXT, "[[\"a\",\"b\"]]");
    EXPECT_ID1(ID_MULTI, "tags", PGT_JSONB, "[\"[\\\"a\\\", \\\"b\\\"]\"]");
    assert_string_not_equal(id1("tags", PGT_TEXT, "[\"[\\\"a\\\",\\\"b\\\"]\"]"), ID_MULTI);
}

/* ---- occurrences ---- */

static const char *const OCC[] = {"605bb979-2acf-8dba-993c-a7a98233ba71",
                                  "e9b9f3c7-35ee-8d10-bb45-ba87ff90eff9",
                                  "db93340d-edce-8312-859d-ea81b1d4b9ae"};

static void test_occurrences(void **state)
{
    (void)state;
    static const struct rowenc_column cols[] = {{"__time", PGT_TIMESTAMPTZ}, {"k", PGT_TEXT}};
    static const char *const rows[] = {
        "[\"2016-06-27T00:00:00.000Z\",\"dup\"]",
        "[\"2016-06-27T00:00:00.000Z\",\"dup\"]",
        "[\"2016-06-27T00:00:00.000Z\",\"dup\"]",
    };
    char ids[3][37];
    ids_for(cols, 2, rows, 3, ids);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(ids[i], OCC[i]);
    assert_string_not_equal(OCC[0], OCC[1]);
    assert_string_not_equal(OCC[1], OCC[2]);
    assert_string_not_equal(OCC[0], OCC[2]);

    /* interleaved with another row, and after a reset, the counts are per slice */
    struct rowenc *e = rowenc_new(cols, 2, 0, true);
    struct buf out = BUF_INIT;
    const char *seq[] = {rows[0], "[\"2016-06-27T00:00:00.000Z\",\"other\"]", rows[0], NULL,
                         rows[0]};
    const char *want[] = {OCC[0], NULL, OCC[1], NULL, OCC[0]};
    for (size_t i = 0; i < 5; i++) {
        if (!seq[i]) {
            rowenc_reset(e);
            continue;
        }
        struct json_object *row = json_tokener_parse(seq[i]);
        buf_reset(&out);
        assert_int_equal(rowenc_encode(e, row, &out, NULL, err_out, sizeof err_out), ROWENC_OK);
        if (want[i])
            assert_memory_equal(out.data + out.len - 37, want[i], 36);
        json_object_put(row);
    }
    buf_free(&out);
    rowenc_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scheme_constant),
        cmocka_unit_test(test_wiki_pinned_bigint),
        cmocka_unit_test(test_wiki_widened_to_double),
        cmocka_unit_test(test_wiki_boolean_widened_to_bigint),
        cmocka_unit_test(test_wiki_null_columns_and_order),
        cmocka_unit_test(test_wiki_changes_change_ids),
        cmocka_unit_test(test_one_spelled_many_ways),
        cmocka_unit_test(test_numbers_exact),
        cmocka_unit_test(test_timestamp_forms),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_long_values),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_occurrences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
