/* test_typemap: Druid -> PostgreSQL type mapping (SPEC 3.1) and widening. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "typemap.h"

static void test_from_druid(void **state)
{
    (void)state;
    static const struct {
        const char *druid;
        enum pgtype pg;
    } cases[] = {
        {"VARCHAR", PGT_TEXT},
        {"CHAR", PGT_TEXT},
        {"varchar", PGT_TEXT},
        {"BIGINT", PGT_BIGINT},
        {"INTEGER", PGT_BIGINT},
        {"SMALLINT", PGT_BIGINT},
        {"TINYINT", PGT_BIGINT},
        {"bigint", PGT_BIGINT},
        {"DOUBLE", PGT_DOUBLE},
        {"FLOAT", PGT_DOUBLE},
        {"REAL", PGT_DOUBLE},
        {"DECIMAL", PGT_DOUBLE},
        {"DECIMAL(10,2)", PGT_DOUBLE},
        {"BOOLEAN", PGT_BOOLEAN},
        {"TIMESTAMP", PGT_TIMESTAMPTZ},
        {"timestamp", PGT_TIMESTAMPTZ},
        {"TIMESTAMP(3)", PGT_TIMESTAMPTZ},
        {"DATE", PGT_DATE},
        {"ARRAY", PGT_JSONB},
        {"ARRAY<LONG>", PGT_JSONB},
        {"array<string>", PGT_JSONB},
        {"VARCHAR ARRAY", PGT_JSONB},
        {"COMPLEX<json>", PGT_JSONB},
        {"complex<JSON>", PGT_JSONB},
        {"COMPLEX<hyperUnique>", PGT_TEXT},
        {"COMPLEX<HLLSketch>", PGT_TEXT},
        {"COMPLEX", PGT_TEXT},
        {"OTHER", PGT_TEXT},
        {"ROW", PGT_TEXT},
        {"", PGT_TEXT},
        {"BIGINTEGER", PGT_TEXT}, /* a prefix is not a match */
        {"DATETIME", PGT_TEXT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (typemap_from_druid(cases[i].druid) != cases[i].pg)
            fail_msg("%s -> %s, want %s", cases[i].druid,
                     typemap_pg_name(typemap_from_druid(cases[i].druid)),
                     typemap_pg_name(cases[i].pg));
    }
    assert_int_equal(typemap_from_druid(NULL), PGT_TEXT);
}

static void test_pg_names(void **state)
{
    (void)state;
    assert_string_equal(typemap_pg_name(PGT_TEXT), "text");
    assert_string_equal(typemap_pg_name(PGT_BIGINT), "bigint");
    assert_string_equal(typemap_pg_name(PGT_DOUBLE), "double precision");
    assert_string_equal(typemap_pg_name(PGT_BOOLEAN), "boolean");
    assert_string_equal(typemap_pg_name(PGT_TIMESTAMPTZ), "timestamptz");
    assert_string_equal(typemap_pg_name(PGT_DATE), "date");
    assert_string_equal(typemap_pg_name(PGT_JSONB), "jsonb");
    /* round trip through our own names */
    for (int t = PGT_TEXT; t <= PGT_JSONB; t++) {
        enum pgtype back = PGT_TEXT;
        assert_int_equal(typemap_from_pg_name(typemap_pg_name((enum pgtype)t), &back), 0);
        assert_int_equal(back, t);
    }
}

static void test_from_pg_catalog(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        enum pgtype t;
    } cases[] = {
        {"timestamp with time zone", PGT_TIMESTAMPTZ},
        {"int8", PGT_BIGINT},
        {"float8", PGT_DOUBLE},
        {"bool", PGT_BOOLEAN},
        {"TEXT", PGT_TEXT},
        {"Double Precision", PGT_DOUBLE},
        {"JSONB", PGT_JSONB},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        enum pgtype t = PGT_TEXT;
        assert_int_equal(typemap_from_pg_name(cases[i].name, &t), 0);
        assert_int_equal(t, cases[i].t);
    }
    const char *not_ours[] = {"integer",   "json",    "timestamp without time zone",
                              "timestamp", "varchar", "uuid",
                              "",          "numeric"};
    for (size_t i = 0; i < sizeof not_ours / sizeof *not_ours; i++) {
        enum pgtype t = PGT_BIGINT;
        assert_int_equal(typemap_from_pg_name(not_ours[i], &t), -1);
        assert_int_equal(t, PGT_BIGINT);
    }
    assert_int_equal(typemap_from_pg_name(NULL, NULL), -1);
}

static void test_widen(void **state)
{
    (void)state;
    for (int t = PGT_TEXT; t <= PGT_JSONB; t++) {
        assert_int_equal(typemap_widen((enum pgtype)t, (enum pgtype)t), t);
        assert_int_equal(typemap_widen((enum pgtype)t, PGT_TEXT), PGT_TEXT);
        assert_int_equal(typemap_widen(PGT_TEXT, (enum pgtype)t), PGT_TEXT);
    }
    assert_int_equal(typemap_widen(PGT_BIGINT, PGT_DOUBLE), PGT_DOUBLE);
    assert_int_equal(typemap_widen(PGT_DOUBLE, PGT_BIGINT), PGT_DOUBLE);
    assert_int_equal(typemap_widen(PGT_BOOLEAN, PGT_BIGINT), PGT_BIGINT);
    assert_int_equal(typemap_widen(PGT_BIGINT, PGT_BOOLEAN), PGT_BIGINT);
    assert_int_equal(typemap_widen(PGT_DATE, PGT_TIMESTAMPTZ), PGT_TIMESTAMPTZ);
    assert_int_equal(typemap_widen(PGT_TIMESTAMPTZ, PGT_DATE), PGT_TIMESTAMPTZ);
    assert_int_equal(typemap_widen(PGT_BIGINT, PGT_TIMESTAMPTZ), PGT_TEXT);
    assert_int_equal(typemap_widen(PGT_JSONB, PGT_BIGINT), PGT_TEXT);
    assert_int_equal(typemap_widen(PGT_BOOLEAN, PGT_DOUBLE), PGT_TEXT);
    /* widening is symmetric */
    for (int a = PGT_TEXT; a <= PGT_JSONB; a++)
        for (int b = PGT_TEXT; b <= PGT_JSONB; b++)
            assert_int_equal(typemap_widen((enum pgtype)a, (enum pgtype)b),
                             typemap_widen((enum pgtype)b, (enum pgtype)a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_druid),
        cmocka_unit_test(test_pg_names),
        cmocka_unit_test(test_from_pg_catalog),
        cmocka_unit_test(test_widen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
