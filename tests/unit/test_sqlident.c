/* Unit tests for sqlident: identifier quoting (Druid and PostgreSQL) and the deterministic
 * shortening of names longer than PostgreSQL's 63 bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sqlident.h"

static void quote_plain_and_embedded_quotes(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    sqlident_quote(&b, "wikipedia");
    assert_string_equal(b.data, "\"wikipedia\"");
    buf_reset(&b);
    sqlident_quote(&b, "my \"odd\" data source");
    assert_string_equal(b.data, "\"my \"\"odd\"\" data source\"");
    buf_reset(&b);
    sqlident_quote(&b, "\"");
    assert_string_equal(b.data, "\"\"\"\"");
    buf_reset(&b);
    sqlident_quote2(&b, "dest schema", "t\"x");
    assert_string_equal(b.data, "\"dest schema\".\"t\"\"x\"");
    buf_free(&b);
}

static void short_names_are_kept_verbatim(void **state)
{
    (void)state;
    char out[SQLIDENT_PG_MAX + 1];
    sqlident_pg_name("wikipedia", out);
    assert_string_equal(out, "wikipedia");
    char n63[64];
    memset(n63, 'a', 63);
    n63[63] = '\0';
    sqlident_pg_name(n63, out);
    assert_string_equal(out, n63);
}

static void long_names_are_shortened_deterministically(void **state)
{
    (void)state;
    char a[200], b[200], outa[SQLIDENT_PG_MAX + 1], outb[SQLIDENT_PG_MAX + 1], again[64];
    memset(a, 'x', 100);
    a[100] = '\0';
    memcpy(b, a, 101);
    b[99] = 'y'; /* differs only at the end: the hash must tell them apart */
    sqlident_pg_name(a, outa);
    sqlident_pg_name(b, outb);
    sqlident_pg_name(a, again);
    assert_int_equal(strlen(outa), SQLIDENT_PG_MAX);
    assert_string_equal(outa, again);
    assert_string_not_equal(outa, outb);
    assert_memory_equal(outa, a, SQLIDENT_PG_MAX - 17);
    assert_int_equal(outa[SQLIDENT_PG_MAX - 17], '_');
}

static void shortening_never_splits_a_utf8_character(void **state)
{
    (void)state;
    char name[256] = "";
    for (int i = 0; i < 40; i++)
        strcat(name, "é"); /* 2 bytes each: 80 bytes */
    char out[SQLIDENT_PG_MAX + 1];
    sqlident_pg_name(name, out);
    size_t cut = strchr(out, '_') - out;
    assert_true(cut % 2 == 0); /* whole characters only */
    assert_true(strlen(out) <= SQLIDENT_PG_MAX);
}

static void hashed_form_for_reserved_names(void **state)
{
    (void)state;
    char out[SQLIDENT_PG_MAX + 1], plain[SQLIDENT_PG_MAX + 1];
    sqlident_pg_name_hashed("druid_syncd_state", out);
    sqlident_pg_name("druid_syncd_state", plain);
    assert_string_equal(plain, "druid_syncd_state");
    assert_int_equal(strncmp(out, "druid_syncd_state_", 18), 0);
    assert_int_equal(strlen(out), 17 + 17); /* name + '_' + 16 hex digits */
    assert_string_not_equal(out, plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(quote_plain_and_embedded_quotes),
        cmocka_unit_test(short_names_are_kept_verbatim),
        cmocka_unit_test(long_names_are_shortened_deterministically),
        cmocka_unit_test(shortening_never_splits_a_utf8_character),
        cmocka_unit_test(hashed_form_for_reserved_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
