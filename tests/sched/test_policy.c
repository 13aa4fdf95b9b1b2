/* The fault policy (retry.c) and the slice ledger (ledger.c): pure functions, checked
 * against the values a user reads in the README and the logs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "ledger.h"
#include "retry.h"

static struct config *cfg(void)
{
    char err[256];
    struct config *c = config_parse("{\"druid_host\": \"x\", \"postgres\": \"\","
                                    " \"retry_initial_seconds\": 1, \"retry_max_seconds\": 60,"
                                    " \"max_retries\": 5, \"sync_interval_seconds\": 30}",
                                    err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    return c;
}

static void test_backoff(void **state)
{
    (void)state;
    struct config *c = cfg();
    /* 1, 2, 4, 8, 16, 32, then capped at 60 */
    double want[] = {1, 2, 4, 8, 16, 32, 60, 60};
    for (int a = 1; a <= 8; a++)
        assert_true(retry_backoff(c, a, -1) == want[a - 1]);
    assert_true(retry_backoff(c, 1, 90) == 90); /* Retry-After wins when longer */
    config_free(c);
}

static void test_druid(void **state)
{
    (void)state;
    struct config *c = cfg();
    struct druid_error e = {DRUID_ERR_TRANSIENT, 429, "", "", "", -1};
    bool auth = true;
    assert_true(retry_druid(c, &e, 1, false, &auth) == 1);
    assert_false(auth);
    assert_true(retry_druid(c, &e, 5, false, &auth) == 16);
    assert_true(retry_druid(c, &e, 6, false, &auth) < 0); /* max_retries used up */
    assert_true(retry_druid(c, &e, 1, true, &auth) < 0);  /* stopping */
    e.kind = DRUID_ERR_QUERY;
    assert_true(retry_druid(c, &e, 1, false, &auth) < 0);
    e.kind = DRUID_ERR_AUTH;
    assert_true(retry_druid(c, &e, 1, false, &auth) < 0);
    assert_true(auth);
    e.kind = DRUID_ERR_TRUNCATED;
    assert_true(retry_druid(c, &e, 2, false, &auth) == 2);
    config_free(c);
}

static void test_postgres(void **state)
{
    (void)state;
    struct config *c = cfg();
    struct pgerr e;
    bool lost;
    static const struct {
        const char *state;
        bool conn;
        bool retried;
    } cases[] = {
        {"", true, true},       /* connection lost */
        {"57P01", false, true}, /* admin shutdown */
        {"40P01", false, true}, /* deadlock */
        {"40001", false, true}, /* serialization */
        {"55P03", false, true}, /* lock timeout */
        {"23514", false, false}, {"22P02", false, false}, {"42501", false, false},
        {"53100", false, false}, {"57014", false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pgerr_set(&e, cases[i].state, cases[i].conn, "x");
        double d = retry_postgres(c, &e, 1, false, &lost);
        if (cases[i].retried != (d >= 0))
            fail_msg("SQLSTATE '%s': retried=%d", cases[i].state, d >= 0);
    }
    pgerr_set(&e, "3F000", false, "schema \"x\" does not exist");
    retry_postgres(c, &e, 1, false, &lost);
    assert_true(lost);
    config_free(c);
}

static void test_next_cycle(void **state)
{
    (void)state;
    struct config *c = cfg();
    assert_true(retry_next_cycle(c, 0) == 30);
    assert_true(retry_next_cycle(c, 3) == 30); /* backoff 4 < interval */
    assert_true(retry_next_cycle(c, 7) == 60); /* capped backoff above the interval */
    assert_true(retry_discovery(c, 7, false) == 30);
    assert_true(retry_discovery(c, 7, true) == 60);
    config_free(c);
}

static void test_prefix(void **state)
{
    (void)state;
    struct ledger_slice sl[4];
    memset(sl, 0, sizeof sl);
    for (int i = 0; i < 4; i++)
        sl[i].max_seen = 100 * (i + 1);
    sl[0].status = LEDGER_DONE;
    sl[2].status = LEDGER_DONE;
    assert_true(ledger_prefix_max(sl, 4, SIZE_MAX, INT64_MIN) == 100);
    assert_true(ledger_prefix_max(sl, 4, 1, 250) == 300);       /* 1 closes the gap to 2 */
    assert_true(ledger_prefix_max(sl, 4, 3, 400) == INT64_MIN); /* 1 is still open */
    sl[0].status = LEDGER_PENDING;
    assert_true(ledger_prefix_max(sl, 4, SIZE_MAX, INT64_MIN) == INT64_MIN);
    assert_true(ledger_cursor(500, 300) == 500);
    assert_true(ledger_cursor(INT64_MIN, 300) == 300);
    assert_true(ledger_cursor(500, INT64_MIN) == INT64_MIN);
    assert_int_equal(ledger_done(sl, 4), 1);
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),  cmocka_unit_test(test_druid),
        cmocka_unit_test(test_postgres), cmocka_unit_test(test_next_cycle),
        cmocka_unit_test(test_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
