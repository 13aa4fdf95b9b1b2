/* Unit tests for pgnames: collision-free table, index and column names. The expected names
 * are literals (hashes are XXH3-64 of the name, computed once with libxxhash): names are
 * recorded in users' databases, so a change of the scheme must show up here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pgnames.h"

/* 70 bytes: shortened to its first 46 bytes + "_" + hash */
#define LONG_DS "a_rather_long_datasource_name_that_goes_on_and_on_beyond_the_limit_one"
#define LONG_DS_SHORT "a_rather_long_datasource_name_that_goes_on_and_84fec0bdfcf7e56b"
#define C46 "cccccccccccccccccccccccccccccccccccccccccccccc"
#define C70 C46 "cccccccccccccccccccccccc"

static const char *const SYS[] = {"_druid_id", "_druid_synced", "_druid_deleted"};

static void candidates_in_order(void **state)
{
    (void)state;
    char out[PGNAMES_LEN];
    pgnames_candidate("orders", 0, out);
    assert_string_equal(out, "orders");
    pgnames_candidate("orders", 1, out);
    assert_string_equal(out, "orders_a88ccdc9fa4974fb");
    pgnames_candidate("orders", 2, out);
    assert_string_equal(out, "orders_a88ccdc9fa4974fb_2");
    pgnames_candidate("orders", 10, out);
    assert_string_equal(out, "orders_a88ccdc9fa4974fb_10");
    pgnames_candidate(LONG_DS, 0, out);
    assert_string_equal(out, LONG_DS_SHORT);
    pgnames_candidate(LONG_DS, 1, out); /* a long name's hashed form is its shortened form */
    assert_string_equal(out, LONG_DS_SHORT);
    pgnames_candidate(LONG_DS, 2, out); /* the counter costs two bytes of the prefix */
    assert_string_equal(out, "a_rather_long_datasource_name_that_goes_on_a_84fec0bdfcf7e56b_2");
    assert_int_equal(strlen(out), 63);
    pgnames_candidate(LONG_DS, 10, out);
    assert_string_equal(out, "a_rather_long_datasource_name_that_goes_on__84fec0bdfcf7e56b_10");
    assert_int_equal(strlen(out), 63);
}

static void counter_form_never_splits_utf8(void **state)
{
    (void)state;
    char name[256] = "";
    for (int i = 0; i < 40; i++)
        strcat(name, "\xc3\xa9"); /* é: 80 bytes */
    char out[PGNAMES_LEN];
    pgnames_candidate(name, 2, out);
    /* room for 44 bytes: 22 whole characters */
    assert_int_equal(strlen(out), 44 + 19);
    assert_int_equal(out[44], '_');
    pgnames_candidate(name, 10, out);
    /* room for 43 bytes: 21 whole characters (42 bytes), never half of one */
    assert_int_equal(out[42], '_');
    assert_int_equal(strlen(out), 42 + 20);
}

static void reserved_tables(void **state)
{
    (void)state;
    const char *own[] = {"druid_syncd_state", "information_schema_tables",
                         "information_schema_columns", "druid_syncd_chunks", "druid_syncd_leases"};
    for (size_t i = 0; i < 5; i++)
        assert_true(pgnames_reserved_table(own[i]));
    assert_false(pgnames_reserved_table("druid_syncd_state_pkey"));
    assert_false(pgnames_reserved_table("wikipedia"));
    assert_false(pgnames_reserved_table("Druid_Syncd_State")); /* quoted names keep case */
}

static void table_names(void **state)
{
    (void)state;
    struct pgnames_set taken = PGNAMES_SET_INIT;
    char out[PGNAMES_LEN];
    /* the common case: verbatim */
    assert_int_equal(pgnames_pick("orders", &taken, true, out), 0);
    assert_string_equal(out, "orders");
    assert_true(pgnames_set_has(&taken, "orders")); /* picked names become taken */
    /* the same name again: the hashed form, then the counter */
    assert_int_equal(pgnames_pick("orders", &taken, true, out), 0);
    assert_string_equal(out, "orders_a88ccdc9fa4974fb");
    assert_int_equal(pgnames_pick("orders", &taken, true, out), 0);
    assert_string_equal(out, "orders_a88ccdc9fa4974fb_2");
    /* the daemon's own tables are never given out, even when absent from taken */
    assert_int_equal(pgnames_pick("druid_syncd_state", &taken, true, out), 0);
    assert_string_equal(out, "druid_syncd_state_aee3b84aa7482e68");
    assert_int_equal(pgnames_pick("druid_syncd_leases", &taken, true, out), 0);
    assert_int_equal(strncmp(out, "druid_syncd_leases_", 19), 0);
    /* ...but a column may be called like one */
    assert_int_equal(pgnames_pick("druid_syncd_leases", &taken, false, out), 0);
    assert_string_equal(out, "druid_syncd_leases");
    pgnames_set_free(&taken);
}

static void datasource_named_like_anothers_shortened_name(void **state)
{
    (void)state;
    struct pgnames_set taken = PGNAMES_SET_INIT;
    char a[PGNAMES_LEN], b[PGNAMES_LEN];
    /* the long one first: it gets the shortened name, the other its hashed form */
    assert_int_equal(pgnames_pick(LONG_DS, &taken, true, a), 0);
    assert_int_equal(pgnames_pick(LONG_DS_SHORT, &taken, true, b), 0);
    assert_string_equal(a, LONG_DS_SHORT);
    assert_string_equal(b, "a_rather_long_datasource_name_that_goes_on_and_7a2d02a1d361fb39");
    pgnames_set_free(&taken);
    /* the other order: the verbatim one keeps its name, the long one takes the counter form
     * (its hashed form is the same name) */
    assert_int_equal(pgnames_pick(LONG_DS_SHORT, &taken, true, b), 0);
    assert_int_equal(pgnames_pick(LONG_DS, &taken, true, a), 0);
    assert_string_equal(b, LONG_DS_SHORT);
    assert_string_equal(a, "a_rather_long_datasource_name_that_goes_on_a_84fec0bdfcf7e56b_2");
    pgnames_set_free(&taken);
}

static void index_names(void **state)
{
    (void)state;
    char *base = pgnames_index_base("ix", "__time");
    assert_string_equal(base, "druid_syncd_ix___time");
    struct pgnames_set taken = PGNAMES_SET_INIT;
    /* a datasource took the index's usual name as its table */
    pgnames_set_add(&taken, "druid_syncd_ix___time");
    char out[PGNAMES_LEN];
    assert_int_equal(pgnames_pick(base, &taken, true, out), 0);
    assert_string_equal(out, "druid_syncd_ix___time_7c4a1a5419770f20");
    free(base);
    pgnames_set_free(&taken);
}

static void keeping_a_recorded_table(void **state)
{
    (void)state;
    assert_true(pgnames_keeps_table("orders", "orders", NULL, 0, false));
    /* the name now belongs to an index or a view: move */
    assert_false(pgnames_keeps_table("orders", "orders", NULL, 0, true));
    /* a reserved name recorded by an older version: move */
    assert_false(pgnames_keeps_table("druid_syncd_chunks", "druid_syncd_chunks", NULL, 0, false));
    /* an older version gave two datasources one table: the one named like it keeps it */
    const char *long_one[] = {LONG_DS};
    const char *short_one[] = {LONG_DS_SHORT};
    assert_true(pgnames_keeps_table(LONG_DS_SHORT, LONG_DS_SHORT, long_one, 1, false));
    assert_false(pgnames_keeps_table(LONG_DS, LONG_DS_SHORT, short_one, 1, false));
    /* neither named like it: the smaller name keeps it */
    const char *x[] = {"x_ds"}, *y[] = {"y_ds"};
    assert_true(pgnames_keeps_table("x_ds", "shared", y, 1, false));
    assert_false(pgnames_keeps_table("y_ds", "shared", x, 1, false));
}

static void columns_verbatim_and_system_names(void **state)
{
    (void)state;
    struct pgnames_map m = PGNAMES_MAP_INIT;
    const char *cols[] = {"__time",         "page", "_druid_id", "_druid_synced",
                          "_druid_deleted", "xmin", "ctid"};
    const char *out[7];
    assert_int_equal(pgnames_columns(&m, cols, 7, SYS, 3, out), 0);
    assert_string_equal(out[0], "__time");
    assert_string_equal(out[1], "page");
    assert_string_equal(out[2], "_druid_id_9818d4ace728911b");
    assert_int_equal(strncmp(out[3], "_druid_synced_", 14), 0);
    assert_int_equal(strlen(out[3]), 13 + 17);
    assert_int_equal(strncmp(out[4], "_druid_deleted_", 15), 0);
    assert_string_equal(out[5], "xmin_491678e40b3d5a9e"); /* PostgreSQL's own system column */
    assert_int_equal(strncmp(out[6], "ctid_", 5), 0);
    assert_int_equal(m.n, 7);
    assert_string_equal(pgnames_map_get(&m, "_druid_id"), "_druid_id_9818d4ace728911b");
    pgnames_map_free(&m);
}

static void columns_with_the_fivetran_prefix(void **state)
{
    (void)state;
    const char *sys[] = {"_fivetran_id", "_fivetran_synced", "_fivetran_deleted"};
    struct pgnames_map m = PGNAMES_MAP_INIT;
    const char *cols[] = {"_fivetran_id", "_druid_id"};
    const char *out[2];
    assert_int_equal(pgnames_columns(&m, cols, 2, sys, 3, out), 0);
    assert_int_equal(strncmp(out[0], "_fivetran_id_", 13), 0);
    assert_string_equal(out[1], "_druid_id"); /* not a system column under this prefix */
    pgnames_map_free(&m);
}

static void long_columns(void **state)
{
    (void)state;
    struct pgnames_map m = PGNAMES_MAP_INIT;
    /* two names sharing their first 63 bytes, and one equal to the first's shortened form */
    const char *cols[] = {C70 "x", C70 "y", C46 "_f6e75756b7239b3e"};
    const char *out[3];
    assert_int_equal(pgnames_columns(&m, cols, 3, SYS, 3, out), 0);
    /* the verbatim one keeps its name although it comes last */
    assert_string_equal(out[2], C46 "_f6e75756b7239b3e");
    assert_string_equal(out[0], "cccccccccccccccccccccccccccccccccccccccccccc_f6e75756b7239b3e_2");
    assert_string_equal(out[1], C46 "_349afec2f199270d");
    pgnames_map_free(&m);
}

static void recorded_mapping_is_stable(void **state)
{
    (void)state;
    struct pgnames_map m = PGNAMES_MAP_INIT;
    /* the first run: only the long column */
    const char *run1[] = {"__time", C70 "x"};
    const char *out1[2];
    assert_int_equal(pgnames_columns(&m, run1, 2, SYS, 3, out1), 0);
    assert_string_equal(out1[1], C46 "_f6e75756b7239b3e");
    /* a column named like it arrives (listed first): the existing column keeps its name */
    const char *run2[] = {C46 "_f6e75756b7239b3e", "__time", C70 "x", "new"};
    const char *out2[4];
    assert_int_equal(pgnames_columns(&m, run2, 4, SYS, 3, out2), 0);
    assert_string_equal(out2[2], C46 "_f6e75756b7239b3e");
    assert_string_equal(out2[0], C46 "_74f533825052fd8c");
    assert_string_equal(out2[1], "__time");
    assert_string_equal(out2[3], "new");
    /* a column gone from Druid keeps its entry, so its name is never given to another */
    const char *run3[] = {"__time", "gone_soon"};
    const char *out3[2];
    assert_int_equal(pgnames_columns(&m, run3, 2, SYS, 3, out3), 0);
    assert_int_equal(m.n, 5);
    assert_string_equal(pgnames_map_get(&m, C70 "x"), C46 "_f6e75756b7239b3e");
    pgnames_map_free(&m);
}

static void a_recorded_name_is_never_given_again(void **state)
{
    (void)state;
    struct pgnames_map m = PGNAMES_MAP_INIT;
    pgnames_map_put(&m, "renamed", "k"); /* recorded earlier: Druid column "renamed" is k */
    const char *cols[] = {"k"};
    const char *out[1];
    assert_int_equal(pgnames_columns(&m, cols, 1, SYS, 3, out), 0);
    assert_string_equal(out[0], "k_a921e3704fda881d"); /* the hashed form of "k" */
    pgnames_map_free(&m);
}

static void lock_key_per_schema(void **state)
{
    (void)state;
    assert_true(pgnames_lock_key("druid") == pgnames_lock_key("druid"));
    assert_true(pgnames_lock_key("druid") != pgnames_lock_key("druid2"));
    assert_true(pgnames_lock_key("") != pgnames_lock_key("druid"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(candidates_in_order),
        cmocka_unit_test(counter_form_never_splits_utf8),
        cmocka_unit_test(reserved_tables),
        cmocka_unit_test(table_names),
        cmocka_unit_test(datasource_named_like_anothers_shortened_name),
        cmocka_unit_test(index_names),
        cmocka_unit_test(keeping_a_recorded_table),
        cmocka_unit_test(columns_verbatim_and_system_names),
        cmocka_unit_test(columns_with_the_fivetran_prefix),
        cmocka_unit_test(long_columns),
        cmocka_unit_test(recorded_mapping_is_stable),
        cmocka_unit_test(a_recorded_name_is_never_given_again),
        cmocka_unit_test(lock_key_per_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
