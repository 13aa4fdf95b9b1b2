/* The fault policy (retry.c) and the slice ledger (ledger.c): pure functions, checked
 * against the values a user reads in the README and the logs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

static void test_druid_permanent(void **state)
{
    (void)state;
    struct config *c = cfg();
    bool auth = true;
    /* libcurl's codes: refused, reset, timeout are retried; TLS, certificate, unknown host,
     * not HTTP fail at once (the next cycle tries again) */
    static const struct {
        int code;
        bool retried;
    } cases[] = {
        {7, true},   /* CURLE_COULDNT_CONNECT: connection refused */
        {56, true},  /* CURLE_RECV_ERROR: reset */
        {28, true},  /* CURLE_OPERATION_TIMEDOUT */
        {52, true},  /* CURLE_GOT_NOTHING */
        {18, true},  /* CURLE_PARTIAL_FILE */
        {35, false}, /* CURLE_SSL_CONNECT_ERROR: TLS against a plain HTTP port */
        {60, false}, /* CURLE_PEER_FAILED_VERIFICATION: untrusted certificate */
        {77, false}, /* CURLE_SSL_CACERT_BADFILE */
        {6, false},  /* CURLE_COULDNT_RESOLVE_HOST */
        {1, false},  /* CURLE_UNSUPPORTED_PROTOCOL: "Received HTTP/0.9" from PostgreSQL's port */
        {8, false},  /* CURLE_WEIRD_SERVER_REPLY */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct druid_error e;
        druid_error_from_curl(&e, cases[i].code, "detail", 0);
        assert_int_equal(e.kind, DRUID_ERR_TRANSPORT);
        double d = retry_druid(c, &e, 1, false, &auth);
        if (cases[i].retried != (d == 1))
            fail_msg("curl code %d: delay %g", cases[i].code, d);
        assert_false(auth);
    }
    /* 4xx other than 429 is not retried; 429 and 5xx are; 401/403 stop until reload */
    static const struct {
        long status;
        bool retried;
    } st[] = {{400, false}, {404, false}, {408, false}, {409, false}, {413, false},
              {418, false}, {429, true},  {500, true},  {502, true},  {503, true}};
    for (size_t i = 0; i < sizeof st / sizeof *st; i++) {
        struct druid_error e;
        druid_error_from_response(st[i].status, "{}", 2, NULL, &e);
        double d = retry_druid(c, &e, 1, false, &auth);
        if (st[i].retried != (d == 1))
            fail_msg("HTTP %ld: delay %g", st[i].status, d);
    }
    struct druid_error e;
    druid_error_from_response(401, NULL, 0, NULL, &e);
    assert_true(retry_druid(c, &e, 1, false, &auth) < 0);
    assert_true(auth);
    config_free(c);
}

static void test_startup(void **state)
{
    (void)state;
    char err[256];
    struct config *c = config_parse("{\"druid_host\": \"x\", \"retry_initial_seconds\": 1,"
                                    " \"retry_max_seconds\": 60, \"max_retries\": 5,"
                                    " \"sync_interval_seconds\": 30,"
                                    " \"connect_timeout_seconds\": 10}",
                                    err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    /* daemon: never gives up; transient failures back off, permanent ones wait a cycle */
    assert_true(retry_startup(c, false, 1, false, 0) == 1);
    assert_true(retry_startup(c, false, 3, false, 100) == 4);
    assert_true(retry_startup(c, false, 50, false, 1e6) == 60);
    assert_true(retry_startup(c, true, 1, false, 0) == 30);
    /* --once: a permanent failure ends at once */
    assert_true(retry_startup(c, true, 1, true, 0) < 0);
    /* a hung Druid: first attempt ends at the 10 s connect timeout; one more fits in 30 s
     * (10 + 1 + 10), the third would not (21 + 2 + 10 > 30) */
    assert_true(retry_startup(c, false, 1, true, 10) == 1);
    assert_true(retry_startup(c, false, 2, true, 21) < 0);
    /* refused at once: retried 1, 2, 4, 8 s later, then the bound (15 + 16 + 10 > 30) */
    assert_true(retry_startup(c, false, 4, true, 7) == 8);
    assert_true(retry_startup(c, false, 5, true, 15) < 0);
    /* never more than max_retries */
    assert_true(retry_startup(c, false, 6, true, 0) < 0);
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

static struct ledger_chunk chunk(int64_t lo, int64_t hi, const char *fp)
{
    struct ledger_chunk c;
    memset(&c, 0, sizeof c);
    c.start_ms = lo;
    c.end_ms = hi;
    snprintf(c.fp, sizeof c.fp, "%s", fp);
    c.druid_rows = 10;
    c.available = true;
    c.state = LEDGER_SYNCED;
    c.position_ms = INT64_MIN;
    return c;
}

/* Druid's chunks against the ledger: what is read, skipped, postponed, dropped. */
static void test_ledger_diff(void **state)
{
    (void)state;
    const int64_t H = 3600000;
    /* ledger: hours 0..3 synced; hour 5 synced */
    struct ledger_chunk led[5] = {chunk(0, H, "a"), chunk(H, 2 * H, "b"), chunk(2 * H, 3 * H, "c"),
                                  chunk(3 * H, 4 * H, "d"), chunk(5 * H, 6 * H, "f")};
    /* Druid: hour 0 unchanged, hour 1 changed, hours 2-3 compacted into one chunk with the
     * same rows (new fingerprint), hour 4 new, hour 5 gone, hour 6 unavailable */
    struct ledger_chunk snap[5] = {chunk(0, H, "a"), chunk(H, 2 * H, "B"),
                                   chunk(2 * H, 4 * H, "CD"), chunk(4 * H, 5 * H, "e"),
                                   chunk(6 * H, 7 * H, "g")};
    snap[4].available = false;
    struct ledger_opts o = {1000, 600000, false};
    struct ledger_work *w = NULL;
    size_t n = 0, drops = 0;
    assert_int_equal(ledger_diff(snap, 5, led, 5, &o, &w, &n, &drops), 0);
    assert_int_equal(drops, 1);
    assert_int_equal(n, 5);
    /* by range: [1h,2h) read, [2h,4h) read (covers two ledger rows), [4h,5h) new,
     * [5h,6h) dropped, [6h,7h) postponed; hour 0 not listed */
    assert_true(w[0].lo == H && w[0].action == LEDGER_READ && !w[0].fresh);
    assert_true(w[1].lo == 2 * H && w[1].hi == 4 * H && w[1].action == LEDGER_READ && !w[1].fresh);
    assert_true(w[2].lo == 4 * H && w[2].action == LEDGER_READ && w[2].fresh);
    assert_true(w[3].lo == 5 * H && w[3].action == LEDGER_DROP);
    assert_true(w[4].lo == 6 * H && w[4].action == LEDGER_POSTPONE && w[4].since_ms == 1000);
    free(w);
    /* holding drops back: the drop is not listed, but counted */
    o.hold_drops = true;
    assert_int_equal(ledger_diff(snap, 5, led, 5, &o, &w, &n, &drops), 0);
    assert_int_equal(drops, 1);
    assert_int_equal(n, 4);
    free(w);
    bool gone[5];
    assert_int_equal(ledger_dropped(snap, 5, led, 5, gone), 1);
    assert_true(gone[4] && !gone[0] && !gone[3]);
    /* an open chunk read recently is read from its position; whole after reread_ms */
    struct ledger_chunk open_led = chunk(0, H, "x");
    open_led.state = LEDGER_WAITING;
    open_led.position_ms = 1234;
    open_led.full_read_ms = 500;
    struct ledger_chunk open_snap = chunk(0, H, "x");
    open_snap.realtime = true;
    o.hold_drops = false;
    assert_int_equal(ledger_diff(&open_snap, 1, &open_led, 1, &o, &w, &n, &drops), 0);
    assert_true(n == 1 && w[0].open && w[0].lo == 1234 && w[0].rows == -1);
    free(w);
    o.now_ms = 500 + 600000;
    assert_int_equal(ledger_diff(&open_snap, 1, &open_led, 1, &o, &w, &n, &drops), 0);
    assert_true(n == 1 && w[0].open && w[0].lo == 0 && w[0].full_read_ms == o.now_ms);
    free(w);
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),         cmocka_unit_test(test_druid),
        cmocka_unit_test(test_druid_permanent), cmocka_unit_test(test_startup),
        cmocka_unit_test(test_postgres),        cmocka_unit_test(test_next_cycle),
        cmocka_unit_test(test_prefix),          cmocka_unit_test(test_ledger_diff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
