/* Whole sync cycles of the real scheduler (daemon/: scheduler, registry, cycle, planning,
 * slicerun, retry, ledger) against the fakes of fake_io.c: a virtual clock, an in-memory
 * Druid datasource and a PostgreSQL sink that keeps what was committed. No process, socket
 * or sleep: a stop, a retry or an out-of-order commit is a deterministic test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "fake_io.h"
#include "log.h"
#include "scheduler.h"

#define DAY 86400000LL
#define T0 1577836800000LL /* 2020-01-01T00:00:00Z */
#define FOREVER (UINT64_C(1) << 50)

struct run {
    struct config *cfg;
    struct sched *s;
    uv_loop_t loop; /* never run: the fake clock stands in for it */
    bool finished;
    int code;
    uint64_t finished_at; /* virtual ms */
};

static void on_finished(void *ud, int code)
{
    struct run *r = ud;
    r->finished = true;
    r->code = code;
    r->finished_at = fake_now();
}

static struct config *cfg_new(long batch, int conc)
{
    char json[1024], err[256];
    snprintf(json, sizeof json,
             "{\"druid_host\": \"druid.invalid\", \"postgres\": \"\", \"batch_size\": %ld,"
             " \"max_concurrent_queries\": %d, \"retry_initial_seconds\": 1,"
             " \"retry_max_seconds\": 8, \"max_retries\": 3, \"sync_interval_seconds\": 60,"
             " \"log_level\": \"error\", \"instance_name\": \"me\"}",
             batch, conc);
    struct config *c = config_parse(json, err, sizeof err);
    if (!c)
        fail_msg("config: %s", err);
    return c;
}

static void start(struct run *r, long batch, int conc, bool once)
{
    memset(r, 0, sizeof *r);
    r->cfg = cfg_new(batch, conc);
    struct sched_opts o = {once, NULL, on_finished, r};
    r->s = sched_new(&r->loop, r->cfg, NULL, NULL, &o);
    sched_start(r->s);
}

static void finish(struct run *r)
{
    sched_free(r->s);
    fake_step(); /* the timers' close callbacks */
    free(r->s);
    config_free(r->cfg);
    fake_reset();
}

/* 250 rows a day, one a minute, v numbering them from 0. */
static int64_t rows_3_days(void)
{
    int64_t v = 0, max = 0;
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < 250; i++) {
            max = T0 + d * DAY + i * 60000LL;
            fake_druid_add_row(max, v++);
        }
    return max;
}

static void assert_each_row_once(int64_t from_v, int64_t to_v)
{
    for (int64_t v = from_v; v < to_v; v++) {
        int64_t ts = T0 + (v / 250) * DAY + (v % 250) * 60000LL;
        if (fake_sink_copies(ts, v) != 1)
            fail_msg("row v=%lld stored %d times", (long long)v, fake_sink_copies(ts, v));
    }
}

struct info {
    uint64_t ok, failed, interrupted;
    int64_t est;
    size_t done, planned;
    double last_success;
};

static void grab(void *ud, const struct sched_ds_info *i)
{
    struct info *o = ud;
    o->ok = i->cycles_ok;
    o->failed = i->cycles_failed;
    o->interrupted = i->cycles_interrupted;
    o->est = i->cycle_est_rows;
    o->done = i->slices_done;
    o->planned = i->slices_planned;
    o->last_success = i->last_success;
}

static struct info info_of(struct run *r)
{
    struct info i;
    memset(&i, 0, sizeof i);
    sched_foreach(r->s, grab, &i);
    return i;
}

/* A first sync under --once: every row exactly once, the cursor at the newest row. */
static void test_first_sync(void **state)
{
    (void)state;
    struct run r;
    int64_t max = rows_3_days();
    start(&r, 100, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    assert_string_equal(fake_sink_status(), "ok");
    assert_true(fake_sink_cursor() == max);
    /* one count per day then one per hour inside each day that holds too many rows */
    assert_int_equal(fake_druid_queries("'P1D'"), 1);
    assert_int_equal(fake_druid_queries("'PT1H'"), 3);
    assert_true(fake_sink_commits() >= 8);
    assert_int_equal(fake_sink_open_slices(), 0);
    finish(&r);
}

/* Releases every held commit, lowest first, until the run is over. */
static void release_all(struct run *r)
{
    for (;;) {
        fake_run(FOREVER);
        int64_t los[64];
        int n = fake_sink_held_list(los, 64);
        if (n == 0)
            break;
        assert_int_equal(fake_sink_release(los[0]), 0);
    }
    assert_true(r->finished);
}

/* A count answer cut off half-way is retried; its buckets count once. */
static void test_truncated_count_counts_once(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_fault("'P1D'", DRUID_ERR_TRUNCATED, 2, 1);
    fake_sink_hold_commits(true);
    start(&r, 100, 4, true);
    fake_run(FOREVER);
    assert_int_equal(fake_druid_queries("'P1D'"), 2);
    assert_true(fake_now() >= 1000); /* it waited for the backoff */
    struct info i = info_of(&r);
    assert_int_equal(i.est, 750); /* 1,250 if the first answer's two days had stayed */
    assert_int_equal(sched_get_counters(r.s)->retries[DRUID_ERR_TRUNCATED], 1);
    release_all(&r);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    finish(&r);
}

static void delete_first_day(int level, int64_t lo, int64_t hi)
{
    (void)hi;
    if (level == 1 && lo == T0)
        fake_druid_delete(T0, T0 + DAY);
}

/* The rows of a day went away between the day count and its hour count: the refinement
 * comes back empty and planning goes on without it. */
static void test_empty_refinement(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_before_count(delete_first_day);
    start(&r, 100, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_string_equal(fake_sink_status(), "ok");
    assert_int_equal(fake_sink_rows(), 500);
    assert_each_row_once(250, 750);
    finish(&r);
}

/* A slice whose response is truncated is read again after the backoff; nothing doubles. */
static void test_slice_retry(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_fault("ORDER BY", DRUID_ERR_TRUNCATED, 10, 1);
    start(&r, 100, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_true(fake_now() >= 1000);
    assert_int_equal(sched_get_counters(r.s)->retries[DRUID_ERR_TRUNCATED], 1);
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    finish(&r);
}

/* Commits arrive out of order: a commit never carries a cursor past a slice that has not
 * committed, and the cursor never moves back. */
static void test_out_of_order_commits(void **state)
{
    (void)state;
    struct run r;
    int64_t max = rows_3_days();
    fake_sink_hold_commits(true);
    start(&r, 100, 4, true);
    fake_run(FOREVER);
    int64_t los[8];
    assert_int_equal(fake_sink_held_list(los, 8), 4);
    /* slices: [-inf, 01:00), [01:00, 02:00), [02:00, 03:00), [03:00, next day 00:00) */
    assert_true(los[0] == INT64_MIN && los[1] == T0 + 3600000 && los[3] == T0 + 3 * 3600000);
    assert_int_equal(fake_sink_release(los[3]), 0);
    fake_run(FOREVER);
    assert_int_equal(fake_sink_commits(), 1);
    assert_true(fake_sink_commit_cursor(0) == INT64_MIN); /* slices 1-3 still open */
    assert_true(fake_sink_cursor() == INT64_MIN);
    assert_int_equal(fake_sink_release(los[0]), 0);
    fake_run(FOREVER);
    assert_true(fake_sink_commit_cursor(1) == T0 + 59 * 60000LL); /* slice 1's newest row */
    assert_true(fake_sink_cursor() == T0 + 59 * 60000LL);
    assert_int_equal(fake_sink_release(los[2]), 0);
    assert_int_equal(fake_sink_release(los[1]), 0);
    release_all(&r);
    assert_int_equal(r.code, 0);
    int64_t prev = INT64_MIN;
    for (int k = 0; k < fake_sink_commits(); k++) {
        int64_t c = fake_sink_commit_cursor(k);
        if (c == INT64_MIN)
            continue;
        assert_true(c >= prev);
        prev = c;
    }
    assert_true(fake_sink_cursor() == max);
    assert_string_equal(fake_sink_status(), "ok");
    assert_each_row_once(0, 750);
    finish(&r);
}

/* A stop while slices are in flight: they commit within the grace period, the rest stays
 * unread, the cycle is recorded as interrupted (not a success), the cursor covers exactly
 * the committed prefix. */
static void test_stop_mid_cycle(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_sink_hold_commits(true);
    start(&r, 100, 4, false);
    fake_run(0); /* daemon mode: discoveries repeat forever, so the clock stays put */
    assert_int_equal(fake_sink_held(), 4);
    sched_stop(r.s, 30);
    assert_false(r.finished); /* the slices in flight get their grace period */
    release_all(&r);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_sink_commits(), 4);
    assert_int_equal(fake_druid_pending(), 0);
    assert_string_equal(fake_sink_status(), "interrupted");
    /* four slices of the first day: up to 03:00 and the rest of day 1 */
    assert_true(fake_sink_cursor() == T0 + 249 * 60000LL);
    struct info i = info_of(&r);
    assert_int_equal(i.interrupted, 1);
    assert_int_equal(i.ok, 0);
    assert_true(i.last_success == 0);
    assert_int_equal(fake_sink_open_slices(), 0);
    finish(&r);
}

/* A stop while a slice waits for its retry: the wait ends at once, the cycle is
 * interrupted, nothing is left open. */
static void test_stop_during_backoff(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_fault("ORDER BY", DRUID_ERR_TRANSIENT, 0, 1);
    start(&r, 100, 4, false);
    fake_run(500); /* the retry is due at 1,000 ms */
    assert_false(r.finished);
    sched_stop(r.s, 30);
    fake_run(999);
    assert_true(r.finished); /* before the retry was due */
    assert_int_equal(r.code, 0);
    assert_string_equal(fake_sink_status(), "interrupted");
    assert_int_equal(info_of(&r).interrupted, 1);
    assert_int_equal(fake_sink_open_slices(), 0);
    finish(&r);
}

/* A constraint violation fails the slice at once (no retry) and the cycle with
 * PostgreSQL's reason; the next cycles wait at least the sync interval. */
static void test_postgres_constraint_fails_at_once(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_sink_fail_commits("23514", false, 1000000);
    start(&r, 100, 4, false);
    fake_run(600000); /* ten minutes */
    const struct sched_counters *c = sched_get_counters(r.s);
    assert_int_equal(c->retries[SCHED_ERR_POSTGRES], 0);
    assert_true(c->errors[SCHED_ERR_POSTGRES] >= 1);
    assert_string_equal(fake_sink_status(), "error");
    assert_non_null(strstr(fake_sink_last_error(), "23514"));
    /* cycles at 0, 60, 120, ... s at most: no tight loop */
    assert_true(fake_sink_cycle_ends() >= 2 && fake_sink_cycle_ends() <= 11);
    assert_int_equal(fake_sink_rows(), 0);
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    assert_true(r.finished);
    finish(&r);
}

/* A lost connection at COMMIT is retried on a fresh one; the data ends exact. */
static void test_postgres_connection_lost_retried(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_sink_fail_commits("", true, 2);
    start(&r, 100, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(sched_get_counters(r.s)->retries[SCHED_ERR_POSTGRES], 2);
    assert_string_equal(fake_sink_status(), "ok");
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    finish(&r);
}

/* Runs one daemon cycle: the first at start, later ones on the datasource's timer. */
static void next_cycle(void)
{
    fake_run(fake_now() + 60000);
}

/* Without sys.segments, later cycles compare Druid's row counts and sums per day, then per
 * hour, with PostgreSQL's, and read only the hours that differ: a late row into an old day
 * is found without any lookback, and a cycle with no change reads no row. */
static void test_counts_fallback_compares(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    start(&r, 100, 4, false);
    fake_run(0);
    assert_int_equal(fake_sink_rows(), 750);
    int reads = fake_druid_queries("ORDER BY"), hours = fake_druid_queries("'PT1H'");
    next_cycle();
    assert_int_equal(fake_druid_queries("ORDER BY"), reads); /* no change, no row read */
    assert_int_equal(fake_druid_queries("'PT1H'"), hours);   /* no day differs */
    fake_druid_add_row(T0 + 30 * 60000LL + 7, 750);          /* late, into day 0's first hour */
    next_cycle();
    assert_int_equal(fake_druid_queries("'PT1H'"), hours + 1); /* only day 0 refined */
    assert_int_equal(fake_druid_queries("ORDER BY"), reads + 1);
    assert_int_equal(fake_sink_rows(), 751);
    assert_int_equal(fake_sink_copies(T0 + 30 * 60000LL + 7, 750), 1);
    assert_each_row_once(0, 750);
    /* a row that vanished from Druid: its hour differs and is read again (flagged) */
    fake_druid_delete(T0 + DAY + 5 * 60000LL, T0 + DAY + 5 * 60000LL + 1);
    next_cycle();
    assert_int_equal(fake_sink_rows(), 750);
    assert_int_equal(fake_sink_copies(T0 + DAY + 5 * 60000LL, 255), 0);
    assert_string_equal(fake_sink_status(), "ok");
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    finish(&r);
}

/* ---- segments mode: the chunk ledger ---- */

/* A first sync planned from the segments' row counts: no COUNT query at all, each day one
 * slice, the ledger records every chunk with its rows. */
static void test_segments_first_sync(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_druid_queries("COUNT(*)"), 0);
    assert_int_equal(fake_druid_queries("ORDER BY"), 3);
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    assert_int_equal(fake_ledger_rows(), 3);
    for (int d = 0; d < 3; d++) {
        assert_string_equal(fake_ledger_state(T0 + d * DAY), "synced");
        assert_int_equal(fake_ledger_stored(T0 + d * DAY), 250);
    }
    finish(&r);
}

/* Unchanged chunks are not queried; a chunk that gained a late row is read again, alone. */
static void test_segments_change_detection(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    start(&r, 300, 4, false);
    fake_run(0);
    assert_int_equal(fake_sink_rows(), 750);
    int reads = fake_druid_queries("ORDER BY"), all = fake_druid_queries(NULL);
    next_cycle();
    assert_int_equal(fake_druid_queries("ORDER BY"), reads); /* no change: no data query */
    assert_int_equal(fake_druid_queries(NULL), all + 1);     /* only sys.segments */
    /* a late row into day 1 */
    fake_druid_add_row(T0 + DAY + 7, 750);
    next_cycle();
    assert_int_equal(fake_druid_queries("ORDER BY"), reads + 1);
    assert_int_equal(fake_sink_rows(), 751);
    assert_int_equal(fake_sink_copies(T0 + DAY + 7, 750), 1);
    assert_each_row_once(0, 750);
    assert_int_equal(fake_ledger_stored(T0 + DAY), 251);
    assert_string_equal(fake_sink_status(), "ok");
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    finish(&r);
}

/* Dropped days: their rows are flagged (here: the range's rows replaced by none) and the
 * ledger forgets them; a snapshot dropping most chunks at once waits for a second one to
 * agree. (A datasource with no segment listed at all is "unreadable", not "all dropped".) */
static void test_segments_drops(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    start(&r, 300, 4, false);
    fake_run(0);
    assert_int_equal(fake_ledger_rows(), 3);
    fake_druid_delete(T0, T0 + 2 * DAY); /* two of three chunks at once */
    next_cycle();
    assert_int_equal(fake_sink_rows(), 750);
    assert_int_equal(fake_ledger_rows(), 3);
    next_cycle(); /* the second snapshot agrees */
    assert_int_equal(fake_sink_rows(), 250);
    assert_int_equal(fake_ledger_rows(), 1);
    assert_each_row_once(500, 750);
    assert_string_equal(fake_sink_status(), "ok");
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    finish(&r);
}

/* The hold survives the process: two --once runs confirm a large drop as a daemon's two
 * cycles do (the mark is kept in the ledger). */
static void test_segments_drop_hold_across_runs(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    for (int run = 0; run < 3; run++) {
        if (run == 1)
            fake_druid_delete(T0, T0 + 2 * DAY);
        start(&r, 300, 4, true);
        fake_run(FOREVER);
        assert_true(r.finished);
        assert_int_equal(r.code, 0);
        if (run == 1)
            assert_int_equal(fake_sink_rows(), 750); /* held back */
        sched_free(r.s);
        fake_step();
        free(r.s);
        config_free(r.cfg);
    }
    assert_int_equal(fake_sink_rows(), 250); /* the second run agreed */
    assert_int_equal(fake_ledger_rows(), 1);
    fake_reset();
}

/* A day whose segments are unavailable is neither read nor flagged; it converges once they
 * are served again. */
static void test_segments_unavailable_postponed(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    start(&r, 300, 4, false);
    fake_run(0);
    fake_druid_add_row(T0 + 2 * DAY + 5, 750);
    fake_druid_unavailable(T0 + 2 * DAY, true);
    int reads = fake_druid_queries("ORDER BY");
    next_cycle();
    assert_int_equal(fake_druid_queries("ORDER BY"), reads);
    assert_string_equal(fake_ledger_state(T0 + 2 * DAY), "postponed");
    assert_int_equal(fake_sink_rows(), 750); /* day 2's rows stay, not flagged */
    fake_druid_unavailable(T0 + 2 * DAY, false);
    next_cycle();
    assert_string_equal(fake_ledger_state(T0 + 2 * DAY), "synced");
    assert_int_equal(fake_sink_rows(), 751);
    assert_each_row_once(0, 750);
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    finish(&r);
}

/* Segments whose num_rows is unknown (0) are counted inside their chunk. */
static void test_segments_unknown_rows_counted(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", true);
    start(&r, 100, 4, true);
    fake_run(FOREVER);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_druid_queries("'P1D'"), 3); /* one per chunk */
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    assert_int_equal(fake_ledger_rows(), 3);
    for (int d = 0; d < 3; d++)
        assert_int_equal(fake_ledger_stored(T0 + d * DAY), 250);
    finish(&r);
}

/* A stop while the chunks are still being counted: the cycle ends before any slice ran, and
 * no chunk may be recorded as synced (an item no slice covers yet is not done), or its rows
 * would never be read. */
static struct sched *stop_during_count;
static void stop_in_count(int level, int64_t lo, int64_t hi)
{
    (void)level;
    (void)lo;
    (void)hi;
    if (stop_during_count) {
        sched_stop(stop_during_count, 30);
        stop_during_count = NULL;
    }
}

static void test_segments_stop_while_counting_records_nothing(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", true); /* rows unknown: every chunk is counted */
    fake_druid_before_count(stop_in_count);
    start(&r, 100, 4, true);
    stop_during_count = r.s;
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(fake_sink_rows(), 0);
    for (int d = 0; d < 3; d++)
        if (strcmp(fake_ledger_state(T0 + d * DAY), "synced") == 0)
            fail_msg("day %d recorded as synced without its rows", d);
    finish(&r);
    /* the next run reads everything */
    fake_druid_before_count(NULL);
    rows_3_days();
    fake_druid_segments(true, "v1", true);
    start(&r, 100, 4, true);
    fake_run(FOREVER);
    assert_int_equal(r.code, 0);
    assert_each_row_once(0, 750);
    finish(&r);
}

/* A chunk still served by realtime tasks stays pending: each cycle reads it from the newest
 * row read before; after the handoff it is read whole once and becomes synced. */
static void test_segments_realtime_chunk(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_druid_realtime(T0 + 2 * DAY, true);
    start(&r, 300, 4, false);
    fake_run(0);
    assert_string_equal(fake_ledger_state(T0 + 2 * DAY), "pending");
    assert_string_equal(fake_ledger_state(T0 + DAY), "synced");
    fake_druid_add_row(T0 + 2 * DAY + 300 * 60000LL, 750); /* a new realtime row */
    next_cycle();
    assert_true(fake_druid_last_slice_lo() == T0 + 2 * DAY + 249 * 60000LL); /* from the newest */
    assert_int_equal(fake_sink_rows(), 751);
    assert_each_row_once(0, 750);
    fake_druid_realtime(T0 + 2 * DAY, false); /* handoff */
    next_cycle();
    assert_true(fake_druid_last_slice_lo() == T0 + 2 * DAY);
    assert_string_equal(fake_ledger_state(T0 + 2 * DAY), "synced");
    assert_int_equal(fake_sink_rows(), 751);
    int reads = fake_druid_queries("ORDER BY");
    next_cycle();
    assert_int_equal(fake_druid_queries("ORDER BY"), reads); /* closed and unchanged */
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    finish(&r);
}

/* ---- operator requests: pause and resume (sinks/pgctl.h, faked in fake_io.c's own block) */
void fake_ctl_reset(void);
void fake_ctl_pause(bool paused);
int fake_ctl_reads(void);
void fake_ctl_fail_reads(int n);

/* A paused datasource under --once: no Druid query at all, nothing written, not a failure. */
static void test_paused_once_does_nothing(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_ctl_pause(true);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_ctl_reads(), 1);
    assert_int_equal(fake_druid_queries(NULL), 0);
    assert_int_equal(fake_sink_commits(), 0);
    assert_int_equal(fake_sink_rows(), 0);
    assert_int_equal(fake_sink_cycle_ends(), 0);
    assert_string_equal(fake_sink_status(), ""); /* no state write: the pause's row stays */
    finish(&r);
}

/* A running daemon: a pause takes effect at the next cycle (nothing read, the late row not
 * synced, no state write), cycles keep asking, and a resume syncs at the cycle after it. */
static void test_pause_then_resume_daemon(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    start(&r, 300, 4, false);
    next_cycle();
    assert_int_equal(fake_sink_rows(), 750);
    int ends = fake_sink_cycle_ends(), commits = fake_sink_commits();
    fake_ctl_pause(true);
    fake_druid_add_row(T0 + DAY + 7, 750); /* late: its chunk changes */
    fake_druid_segments(true, "v2", false);
    int reads = fake_ctl_reads();
    next_cycle();
    next_cycle();
    assert_true(fake_ctl_reads() >= reads + 2);          /* every cycle asks again */
    assert_int_equal(fake_druid_queries("ORDER BY"), 3); /* no data query since the first */
    assert_int_equal(fake_druid_queries("COUNT("), 0);
    assert_int_equal(fake_sink_commits(), commits);
    assert_int_equal(fake_sink_cycle_ends(), ends);
    assert_int_equal(fake_sink_rows(), 750);
    fake_ctl_pause(false);
    next_cycle();
    assert_int_equal(fake_sink_rows(), 751);
    assert_int_equal(fake_sink_copies(T0 + DAY + 7, 750), 1);
    assert_string_equal(fake_sink_status(), "ok");
    assert_int_equal(fake_sink_cycle_ends(), ends + 1);
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    finish(&r);
}

/* PostgreSQL cannot say whether it is paused: the cycle reads nothing from Druid and fails
 * (--once exit 1), rather than sync a datasource that may be paused. */
static void test_requests_unreadable_fails(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_ctl_fail_reads(1);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 1);
    assert_int_equal(fake_druid_queries(NULL), 0);
    assert_int_equal(fake_sink_rows(), 0);
    assert_string_equal(fake_sink_status(), "error");
    assert_non_null(strstr(fake_sink_last_error(), "operator requests"));
    finish(&r);
}

/* ---- operator requests: resync ---- */
void fake_ctl_resync(const char *requested);
const char *fake_ctl_resync_pending(void);
int fake_ctl_swaps(void);
void fake_ctl_fail_swaps(int n);
int fake_prepares(bool resync);
int fake_slices_begun(bool shadow);

#define REQ1 "2024-05-01 10:00:00.123456+00"
#define REQ2 "2024-05-01 10:00:05.5+00"

/* A pending request under --once: the cycle prepares the shadow, every slice goes to the
 * shadow's key, the cycle ends with one swap (which clears the request) and succeeds; the
 * next cycle of a daemon is an ordinary one again. */
static void test_resync_rebuilds_then_swaps(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_ctl_resync(REQ1);
    start(&r, 300, 4, false);
    fake_run(fake_now() + 1000);
    assert_int_equal(fake_prepares(true), 1);
    assert_int_equal(fake_prepares(false), 0);
    assert_true(fake_slices_begun(true) >= 3);
    assert_int_equal(fake_slices_begun(false), 0);
    assert_int_equal(fake_ctl_swaps(), 1);
    assert_string_equal(fake_ctl_resync_pending(), "");
    assert_string_equal(fake_sink_status(), "ok");
    assert_int_equal(info_of(&r).ok, 1);
    int shadow = fake_slices_begun(true);
    fake_druid_add_row(T0 + 3 * DAY + 5, 750); /* a new day: an ordinary cycle reads it */
    fake_druid_segments(true, "v2", false);
    next_cycle();
    next_cycle();
    assert_int_equal(fake_prepares(false), 2);
    assert_int_equal(fake_prepares(true), 1);
    assert_int_equal(fake_slices_begun(true), shadow);
    assert_true(fake_slices_begun(false) >= 1);
    assert_int_equal(fake_ctl_swaps(), 1);
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    finish(&r);
}

/* A paused datasource keeps its request: nothing is rebuilt or swapped until it resumes. */
static void test_resync_waits_while_paused(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_ctl_resync(REQ1);
    fake_ctl_pause(true);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_prepares(true) + fake_prepares(false), 0);
    assert_int_equal(fake_ctl_swaps(), 0);
    assert_string_equal(fake_ctl_resync_pending(), REQ1);
    finish(&r);
}

/* The swap fails (a lock timeout): --once fails, the request stays, the live state row's
 * cursor is not moved to the shadow's; the next run resumes and swaps. */
static void test_resync_swap_failure_resumes(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_ctl_resync(REQ1);
    fake_ctl_fail_swaps(1);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 1);
    assert_int_equal(fake_ctl_swaps(), 0);
    assert_string_equal(fake_ctl_resync_pending(), REQ1);
    assert_string_equal(fake_sink_status(), "error");
    assert_non_null(strstr(fake_sink_last_error(), "lock timeout"));
    assert_true(fake_sink_cursor() == INT64_MIN); /* only the swap gives the live row one */
    sched_free(r.s);
    fake_step();
    free(r.s);
    config_free(r.cfg);
    start(&r, 300, 4, true); /* the next --once: the same world, the shadow kept */
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_prepares(true), 2);
    assert_int_equal(fake_ctl_swaps(), 1);
    assert_string_equal(fake_ctl_resync_pending(), "");
    assert_string_equal(fake_sink_status(), "ok");
    finish(&r);
}

/* A request made while the rebuild runs has a newer time: the swap leaves it pending and
 * the next cycle rebuilds again. */
static void test_resync_request_during_rebuild_runs_again(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_ctl_resync(REQ1);
    fake_sink_hold_commits(true);
    start(&r, 300, 4, false);
    fake_run(fake_now() + 1000);
    assert_true(fake_sink_held() > 0); /* the rebuild is under way */
    fake_ctl_resync(REQ2);             /* opcmd: a new time while resync_for = REQ1 */
    fake_sink_hold_commits(false);
    int64_t los[64];
    int n;
    while ((n = fake_sink_held_list(los, 64)) > 0) {
        assert_int_equal(fake_sink_release(los[0]), 0);
        fake_run(fake_now() + 10);
    }
    fake_run(fake_now() + 1000);
    assert_int_equal(fake_ctl_swaps(), 1);
    assert_string_equal(fake_ctl_resync_pending(), REQ2);
    next_cycle();
    next_cycle();
    assert_int_equal(fake_prepares(true), 2);
    assert_int_equal(fake_ctl_swaps(), 2);
    assert_string_equal(fake_ctl_resync_pending(), "");
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    finish(&r);
}

/* Each test starts in a fresh world, even after a failed one. */
/* ---- the first load without indexes (fake_io.c's initial-load block) ---- */
bool fake_il_flag(void);
int fake_il_builds(void);
int fake_il_defer_requests(void);
int fake_il_rows_at_build(void);
int fake_il_synced_at_build(void);
void fake_il_fail_builds(int n);

/* A new table of the segments mode is asked for without indexes; they are built once, after
 * every row and ledger chunk of the first sync is committed, and not again later. */
static void test_initial_load_built_once_at_the_end(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_il_defer_requests(), 1);
    assert_int_equal(fake_il_builds(), 1);
    assert_int_equal(fake_il_rows_at_build(), 750);
    assert_int_equal(fake_il_synced_at_build(), 3);
    assert_false(fake_il_flag());
    assert_string_equal(fake_sink_status(), "ok");
    sched_free(r.s);
    fake_step();
    free(r.s);
    config_free(r.cfg);
    start(&r, 300, 4, true); /* the next --once: an existing table, nothing to build */
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_il_builds(), 1);
    assert_each_row_once(0, 750);
    finish(&r);
}

/* A first cycle that fails builds nothing; the next one that completes does. */
static void test_initial_load_not_built_after_failure(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_sink_fail_commits("23514", false, 1);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 1);
    assert_int_equal(fake_il_builds(), 0);
    assert_true(fake_il_flag());
    sched_free(r.s);
    fake_step();
    free(r.s);
    config_free(r.cfg);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_il_builds(), 1);
    assert_int_equal(fake_il_rows_at_build(), 750);
    assert_false(fake_il_flag());
    finish(&r);
}

/* A build that fails fails the cycle (with its cause) and is tried again by the next. */
static void test_initial_load_build_failure_retried(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_il_fail_builds(1);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 1);
    assert_string_equal(fake_sink_status(), "error");
    assert_non_null(strstr(fake_sink_last_error(), "primary key"));
    assert_true(fake_il_flag());
    sched_free(r.s);
    fake_step();
    free(r.s);
    config_free(r.cfg);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_il_builds(), 1);
    assert_string_equal(fake_sink_status(), "ok");
    assert_each_row_once(0, 750);
    finish(&r);
}

/* ---- leases (daemon/lease.c against the fake lease table) ---- */
void fake_lease_take(const char *unit, const char *owner, double seconds);
const char *fake_lease_owner(const char *unit);
int64_t fake_lease_epoch(const char *unit);
void fake_lease_live(int n);
void fake_lease_fail(int n);
int fake_lease_claims(void);
int fake_lease_renewals(void);
int fake_lease_releases(void);
int fake_lease_refused(void);

/* --once next to a live instance that keeps its lease: it waits 2 x lease_seconds (60 s),
 * reads and writes nothing, and fails (exit 1). */
static void test_lease_once_waits_then_reports_holder(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_lease_take("ds:ds", "other", 1000);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 1);
    if (r.finished_at < 60000 || r.finished_at >= 62000)
        fail_msg("gave up at %llu ms", (unsigned long long)r.finished_at);
    assert_true(fake_lease_claims() >= 2); /* it asked again while waiting */
    assert_int_equal(fake_druid_queries("ORDER BY"), 0);
    assert_int_equal(fake_druid_queries("COUNT("), 0);
    assert_int_equal(fake_sink_commits(), 0);
    assert_int_equal(fake_sink_cycle_ends(), 0);
    assert_string_equal(fake_lease_owner("ds:ds"), "other");
    finish(&r);
}

/* The holder dies (its lease is not renewed): --once takes the unit once it expired, with a
 * new epoch, syncs everything and gives the lease back. */
static void test_lease_once_takes_over_after_expiry(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_lease_take("ds:ds", "dead", 20);
    int64_t e0 = fake_lease_epoch("ds:ds");
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_true(fake_now() >= 20000);
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    assert_true(fake_lease_epoch("ds:ds") == e0 + 1);
    assert_string_equal(fake_lease_owner("ds:ds"), ""); /* released at the end */
    assert_true(fake_lease_releases() >= 1);
    finish(&r);
}

/* A frozen instance: its commits wait while another instance takes the unit over; when they
 * reach PostgreSQL the fence refuses every one, nothing of them is stored, the cycle ends
 * interrupted without writing its end, and the run fails. */
static void test_lease_taken_over_commits_refused(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_sink_hold_commits(true);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_true(fake_sink_held() > 0);
    assert_string_equal(fake_lease_owner("ds:ds"), "me");
    fake_lease_take("ds:ds", "thief", 1000); /* as if our lease had expired meanwhile */
    fake_sink_hold_commits(false);
    int64_t los[64];
    int n;
    while ((n = fake_sink_held_list(los, 64)) > 0) {
        assert_int_equal(fake_sink_release(los[0]), 0);
        fake_run(FOREVER);
    }
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 1);
    assert_true(fake_lease_refused() >= 1);
    assert_int_equal(fake_sink_commits(), 0);
    assert_int_equal(fake_sink_rows(), 0);
    assert_int_equal(fake_sink_cycle_ends(), 0); /* the new holder's state row is left alone */
    assert_string_equal(fake_lease_owner("ds:ds"), "thief");
    assert_int_equal(fake_sink_open_slices(), 0);
    finish(&r);
}

/* A daemon whose renewal finds its unit taken stops the cycle at once (slices in flight
 * rolled back), then leaves the datasource to the new holder: no Druid query, no write. */
static void test_lease_renewal_finds_it_taken(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_sink_hold_commits(true);
    start(&r, 300, 4, false);
    fake_run(5000);
    assert_true(fake_sink_held() > 0);
    int queries = fake_druid_queries("ORDER BY");
    fake_lease_take("ds:ds", "thief", 1e9);
    /* ... and the chunks of its first load: nothing is left to help with */
    for (int d = 0; d < 3; d++) {
        char u[64];
        snprintf(u, sizeof u, "chunk:ds:%lld", (long long)(T0 + d * DAY));
        fake_lease_take(u, "thief", 1e9);
    }
    fake_run(11000); /* the renewal at 10 s finds it taken */
    assert_true(fake_lease_renewals() >= 2);
    /* no slice starts any more; the commits already sent reach the fence and are refused */
    assert_int_equal(fake_druid_queries("ORDER BY"), queries);
    int64_t los[64];
    while (fake_sink_held_list(los, 64) > 0) {
        assert_int_equal(fake_sink_release(los[0]), 0);
        fake_run(fake_now());
    }
    assert_true(fake_lease_refused() >= 1);
    struct info i = info_of(&r);
    assert_int_equal(i.interrupted, 1);
    assert_int_equal(fake_sink_open_slices(), 0);
    int q = fake_druid_queries(NULL);
    fake_run(300000); /* five more sync intervals */
    assert_int_equal(fake_sink_commits(), 0);
    assert_int_equal(fake_sink_rows(), 0);
    /* only the segments snapshot and the catalog are read, never the datasource again */
    assert_int_equal(fake_druid_queries("ORDER BY"), queries);
    assert_true(fake_druid_queries(NULL) >= q);
    assert_string_equal(fake_lease_owner("ds:ds"), "thief");
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    finish(&r);
}

/* PostgreSQL stops answering renewals: the lease is not trusted past its length less the
 * margin, whatever happens later; the cycle is stopped before the lease could have been
 * taken. Once renewals work again the daemon claims it anew (new epoch) and syncs. */
static void test_lease_unrenewed_is_distrusted(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_sink_hold_commits(true);
    start(&r, 300, 4, false);
    fake_run(5000);
    int64_t e0 = fake_lease_epoch("ds:ds");
    fake_lease_fail(3); /* the renewals at 10, 20 and 30 s */
    int queries = fake_druid_queries("ORDER BY");
    fake_run(28000);
    assert_int_equal(fake_lease_refused(), 0);
    fake_run(31000); /* past 30 s - 1 s: not trusted; expired in PostgreSQL too */
    assert_int_equal(fake_druid_queries("ORDER BY"), queries);
    fake_sink_hold_commits(false);
    int64_t los[64];
    while (fake_sink_held_list(los, 64) > 0) {
        assert_int_equal(fake_sink_release(los[0]), 0);
        fake_run(fake_now());
    }
    assert_true(fake_lease_refused() >= 1);
    assert_int_equal(info_of(&r).interrupted, 1);
    assert_int_equal(fake_sink_rows(), 0);
    fake_run(200000);
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    assert_true(fake_lease_epoch("ds:ds") > e0);
    assert_string_equal(fake_lease_owner("ds:ds"), "me");
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_string_equal(fake_lease_owner("ds:ds"), ""); /* a clean stop gives it back */
    assert_string_equal(fake_lease_owner("instance:me"), "");
    finish(&r);
}

static int reset(void **state)
{
    (void)state;
    fake_reset();
    fake_ctl_reset();
    return 0;
}

/* ---- chunk units: several instances read one first load ---- */
/* fake_io.c's chunk block */
int fake_chunk_claims(void);
int fake_slice_clears(void);
bool fake_lease_dirty(const char *unit);
void fake_lease_set_dirty(const char *unit, bool dirty);
int fake_chunk_units_held(const char *owner);
void fake_il_set(bool on);
void fake_other_reads(const char *unit);

static const char *day_unit(int d)
{
    static char u[4][64];
    snprintf(u[d], sizeof u[d], "chunk:ds:%lld", (long long)(T0 + d * DAY));
    return u[d];
}

/* Another live instance holds day 3's chunk: the holder reads days 1 and 2, leaves day 3
 * alone while it is held, and, once the other has read and recorded it and let it go, finds
 * it done without reading it; then the first load ends (index built once), exact, with the
 * cursor at the newest row (which only the other instance saw). */
static void test_chunk_left_to_other_then_done(void **state)
{
    (void)state;
    struct run r;
    int64_t max = rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_lease_take(day_unit(2), "other", 1e9);
    start(&r, 300, 4, true);
    fake_run(10000);
    assert_false(r.finished); /* waiting for day 3 */
    assert_int_equal(fake_druid_queries("ORDER BY"), 2);
    assert_int_equal(fake_sink_rows(), 500);
    assert_int_equal(fake_il_builds(), 0);
    assert_string_equal(fake_lease_owner(day_unit(2)), "other");
    /* the chunks it read were given back once recorded, not at the end of the cycle */
    assert_int_equal(fake_chunk_units_held("me"), 0);
    assert_string_equal(fake_ledger_state(T0), "synced");
    int claims = fake_chunk_claims();
    fake_run(fake_now() + 5000);
    assert_true(fake_chunk_claims() > claims); /* it keeps asking */
    /* the other instance reads day 2, records it and gives its unit back */
    fake_other_reads(day_unit(2));
    fake_lease_take(day_unit(2), "other", 0);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_druid_queries("ORDER BY"), 2); /* day 3 never read here */
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    assert_int_equal(fake_il_builds(), 1);
    assert_int_equal(fake_il_rows_at_build(), 750);
    assert_int_equal(fake_il_synced_at_build(), 3);
    assert_int_equal(fake_chunk_units_held("me"), 0);
    assert_string_equal(fake_sink_status(), "ok");
    /* the cursor is the newest row, which the other instance read */
    assert_true(fake_sink_cursor() == max);
    finish(&r);
}

/* The other instance dies while reading day 2 (its unit expires, dirty: it committed part of
 * it): the holder takes the unit over once it expired, empties day 2's range first, reads it
 * and marks the unit clean; the load ends exact. */
static void test_chunk_taken_over_dirty(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_lease_take(day_unit(1), "other", 7);
    fake_lease_set_dirty(day_unit(1), true);
    start(&r, 300, 4, true);
    fake_run(6000);
    assert_false(r.finished);
    assert_int_equal(fake_slice_clears(), 0);
    assert_int_equal(fake_druid_queries("ORDER BY"), 2);
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_true(r.finished_at >= 7000); /* not before the other's lease expired */
    assert_int_equal(fake_slice_clears(), 1);
    assert_false(fake_lease_dirty(day_unit(1)));
    assert_int_equal(fake_lease_epoch(day_unit(1)), 2);
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    assert_int_equal(fake_il_builds(), 1);
    finish(&r);
}

/* The other instance dies while the holder's own slices are still running (their commits
 * held): the holder does not wait for them to finish before it asks again; it takes the dead
 * one's chunk soon after its lease expired. */
static void test_chunk_taken_over_while_busy(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_lease_take(day_unit(0), "other", 3);
    fake_lease_set_dirty(day_unit(0), true);
    fake_sink_hold_commits(true);
    start(&r, 300, 4, true);
    fake_run(2500);
    assert_int_equal(fake_sink_held(), 2); /* days 2 and 3, waiting to commit */
    assert_int_equal(fake_druid_queries("ORDER BY"), 2);
    fake_run(5500);
    assert_int_equal(fake_druid_queries("ORDER BY"), 3); /* day 1 taken over meanwhile */
    assert_int_equal(fake_sink_held(), 3);
    assert_int_equal(fake_slice_clears(), 1);
    assert_string_equal(fake_lease_owner(day_unit(0)), "me");
    fake_sink_hold_commits(false);
    int64_t los[64];
    while (fake_sink_held_list(los, 64) > 0) {
        assert_int_equal(fake_sink_release(los[0]), 0);
        fake_run(fake_now());
    }
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 0);
    assert_int_equal(fake_sink_rows(), 750);
    assert_each_row_once(0, 750);
    assert_int_equal(fake_il_builds(), 1);
    finish(&r);
}

/* A chunk unit taken by another instance while the holder's slice is in flight (as if it
 * had expired): that commit is refused by the fence, the cycle stops interrupted without
 * building the index, and the datasource's own lease is kept. */
static void test_chunk_fence_refuses_after_takeover(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_sink_hold_commits(true);
    start(&r, 300, 4, true);
    fake_run(FOREVER);
    assert_int_equal(fake_sink_held(), 3);
    fake_lease_take(day_unit(0), "thief", 1000);
    fake_sink_hold_commits(false);
    int64_t los[64];
    while (fake_sink_held_list(los, 64) > 0) {
        assert_int_equal(fake_sink_release(los[0]), 0);
        fake_run(fake_now());
    }
    fake_run(FOREVER);
    assert_true(r.finished);
    assert_int_equal(r.code, 1);
    assert_int_equal(fake_lease_refused(), 1);
    assert_int_equal(fake_sink_copies(T0, 0), 0); /* day 1 is the thief's */
    assert_int_equal(fake_il_builds(), 0);
    struct info i = info_of(&r);
    assert_int_equal(i.interrupted, 1);
    assert_string_equal(fake_lease_owner(day_unit(0)), "thief");
    finish(&r);
}

/* A daemon next to the holder of a datasource in its first load helps: it reads the chunks
 * nobody holds (fenced by their units, no cursor), leaves the one the holder reads, records
 * neither the cycle's end nor the index build (the holder's), and gives its units back. */
static void test_helper_reads_free_chunks(void **state)
{
    (void)state;
    struct run r;
    rows_3_days();
    fake_druid_segments(true, "v1", false);
    fake_il_set(true);
    fake_lease_take("ds:ds", "holder", 1e9);
    fake_lease_take(day_unit(0), "holder", 1e9);
    start(&r, 300, 4, false);
    fake_run(30000);
    assert_int_equal(fake_druid_queries("ORDER BY"), 2);
    assert_int_equal(fake_sink_rows(), 500);
    assert_int_equal(fake_sink_copies(T0, 0), 0);
    assert_int_equal(fake_sink_copies(T0 + DAY, 250), 1);
    assert_int_equal(fake_sink_copies(T0 + 2 * DAY, 500), 1);
    assert_int_equal(fake_sink_commits(), 2);
    assert_true(fake_sink_commit_cursor(0) == INT64_MIN);
    assert_true(fake_sink_commit_cursor(1) == INT64_MIN);
    assert_string_equal(fake_ledger_state(T0 + DAY), "synced");
    assert_string_equal(fake_ledger_state(T0 + 2 * DAY), "synced");
    assert_int_equal(fake_sink_cycle_ends(), 0);
    assert_int_equal(fake_il_builds(), 0);
    assert_true(fake_il_flag());
    assert_int_equal(fake_chunk_units_held("me"), 0);
    assert_string_equal(fake_lease_owner("ds:ds"), "holder");
    /* the next attempt finds nothing left to read */
    fake_run(100000);
    assert_int_equal(fake_druid_queries("ORDER BY"), 2);
    sched_stop(r.s, 30);
    fake_run(FOREVER);
    finish(&r);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup(test_first_sync, reset),
    cmocka_unit_test_setup(test_truncated_count_counts_once, reset),
    cmocka_unit_test_setup(test_empty_refinement, reset),
    cmocka_unit_test_setup(test_slice_retry, reset),
    cmocka_unit_test_setup(test_out_of_order_commits, reset),
    cmocka_unit_test_setup(test_stop_mid_cycle, reset),
    cmocka_unit_test_setup(test_stop_during_backoff, reset),
    cmocka_unit_test_setup(test_postgres_constraint_fails_at_once, reset),
    cmocka_unit_test_setup(test_postgres_connection_lost_retried, reset),
    cmocka_unit_test_setup(test_counts_fallback_compares, reset),
    cmocka_unit_test_setup(test_segments_first_sync, reset),
    cmocka_unit_test_setup(test_segments_change_detection, reset),
    cmocka_unit_test_setup(test_segments_drops, reset),
    cmocka_unit_test_setup(test_segments_drop_hold_across_runs, reset),
    cmocka_unit_test_setup(test_segments_unavailable_postponed, reset),
    cmocka_unit_test_setup(test_segments_unknown_rows_counted, reset),
    cmocka_unit_test_setup(test_segments_realtime_chunk, reset),
    cmocka_unit_test_setup(test_segments_stop_while_counting_records_nothing, reset),
    cmocka_unit_test_setup(test_paused_once_does_nothing, reset),
    cmocka_unit_test_setup(test_pause_then_resume_daemon, reset),
    cmocka_unit_test_setup(test_requests_unreadable_fails, reset),
    cmocka_unit_test_setup(test_resync_rebuilds_then_swaps, reset),
    cmocka_unit_test_setup(test_resync_waits_while_paused, reset),
    cmocka_unit_test_setup(test_resync_swap_failure_resumes, reset),
    cmocka_unit_test_setup(test_resync_request_during_rebuild_runs_again, reset),
    cmocka_unit_test_setup(test_initial_load_built_once_at_the_end, reset),
    cmocka_unit_test_setup(test_initial_load_not_built_after_failure, reset),
    cmocka_unit_test_setup(test_initial_load_build_failure_retried, reset),
    cmocka_unit_test_setup(test_lease_once_waits_then_reports_holder, reset),
    cmocka_unit_test_setup(test_lease_once_takes_over_after_expiry, reset),
    cmocka_unit_test_setup(test_lease_taken_over_commits_refused, reset),
    cmocka_unit_test_setup(test_lease_renewal_finds_it_taken, reset),
    cmocka_unit_test_setup(test_lease_unrenewed_is_distrusted, reset),
    cmocka_unit_test_setup(test_chunk_left_to_other_then_done, reset),
    cmocka_unit_test_setup(test_chunk_taken_over_dirty, reset),
    cmocka_unit_test_setup(test_chunk_taken_over_while_busy, reset),
    cmocka_unit_test_setup(test_chunk_fence_refuses_after_takeover, reset),
    cmocka_unit_test_setup(test_helper_reads_free_chunks, reset),
};

int main(void)
{
    /* SCHED_TEST_LOG=1: every line, to see what a failing test did */
    log_set_level(getenv("SCHED_TEST_LOG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
