/* sched: discovery, planning, slices, retries and the cycle timers. See sched.h. */
#include "scheduler.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "discovery.h"
#include "log.h"
#include "plan.h"
#include "rowenc.h"
#include "sqlident.h"
#include "timeutil.h"

#define COPY_CHUNK (256 * 1024) /* COPY data handed to libpq at a time */

enum ds_state { DS_IDLE, DS_PREPARING, DS_PLANNING, DS_RUNNING, DS_FINISHING };

enum slice_status { SL_PENDING, SL_RUNNING, SL_DONE };

struct slice_st {
    struct plan_slice r;
    enum slice_status status;
    int64_t max_seen; /* greatest incremental value committed by this slice */
    int attempts;
};

struct dsync;

/* One async piece of work of a cycle that stop/cancel must be able to reach. */
struct countq {
    struct dsync *d;
    struct countq *next, *prev;
    enum plan_level level;
    int64_t lo, hi;
    int attempts;
    struct druid_query *q;
};

struct slicerun {
    struct dsync *d;
    struct slicerun *next, *prev;
    size_t idx;
    struct pgsink_slice *sl;
    struct druid_query *q;
    struct rowenc *enc;
    struct buf out;
    int64_t max_seen;
    int64_t cursor_sent; /* the cursor this slice's commit carries, INT64_MIN none */
    char group_key[48];  /* ordered reads: the timestamp whose identical rows are counted */
    uint64_t rows;
    uint64_t bytes;
    bool ordered;
    bool committing;
    bool pg_failed;   /* the consumer side failed: PostgreSQL, not Druid */
    struct pgerr pge; /* ... and why */
    char err[1024];
};

struct delayed {
    uv_timer_t t;
    struct dsync *d;
    struct delayed *next, *prev;
    void (*fn)(struct dsync *d, void *arg);
    void *arg;
};

struct dsync {
    struct sched *s;
    struct dsync *next;
    char *name;
    struct discovery_column *cols; /* as last discovered */
    size_t ncols;
    bool present;
    bool selected;
    enum ds_state st;
    uv_timer_t timer;
    /* --once bookkeeping */
    bool once_done;
    bool once_failed;
    /* the current cycle */
    struct discovery_column *ccols;
    size_t nccols;
    enum pgtype *types;
    char *slice_col;
    int inc_idx;
    int time_idx; /* index of __time, -1 if the datasource has none */
    bool incremental;
    int64_t start_ms;
    struct plan *plan;
    struct slice_st *slices;
    size_t nslices, next_slice;
    int running;
    int outstanding; /* async operations not yet returned */
    struct countq *counts;
    struct slicerun *runs;
    struct delayed *delays;
    bool failed;
    bool unordered; /* Druid refused ORDER BY "__time" for this datasource */
    char err[1024];
    uint64_t t0;
    int64_t rows_read, inserted, vanished;
    size_t fast_slices;
    int64_t est_rows;
    /* since start, for metrics and progress */
    uint64_t rows_total, rows_read_total, bytes_total, slices_total, cycles_ok, cycles_failed;
    uint64_t nul_replaced_total, json_as_string_total, rows_skipped_total;
    double last_success;
    int failed_cycles;           /* consecutive failed cycles: the next one waits longer */
    struct pgsink_table_req req; /* the table request of this cycle, until it is sent */
    struct pgsink_column *req_cols;
    int end_attempts;        /* tries to record the end of this cycle */
    int64_t end_cursor_ms;   /* the cursor that end records, INT64_MIN none */
    bool interrupted;        /* this cycle was stopped before every slice committed */
    int64_t cursor_ms;       /* committed cursor, INT64_MIN unknown */
    int64_t druid_newest_ms; /* newest incremental value seen in Druid, INT64_MIN unknown */
};

struct sched {
    uv_loop_t *loop;
    const struct config *cfg;
    struct druid_client *druid;
    struct pgsink *sink;
    struct sched_opts opts;
    struct dsync *ds;
    uv_timer_t disc_timer;
    uv_timer_t stop_timer;
    bool started;
    uint64_t last_progress; /* loop time of the last row, drain, answer or timer of ours */
    bool schema_lost;       /* PostgreSQL said the destination schema or a table is gone */
    bool ensuring;          /* discovery waits for the schema to be created again */
    bool stopping;
    bool stop_hard;
    bool auth_blocked;
    bool finished_reported;
    bool once_discovered;
    int disc_attempts;
    char last_error[512];
    struct sched_counters counters;
    struct discovery *disc;             /* the catalog read in progress, if any */
    size_t last_ntables, last_selected; /* to log discoveries that changed something */
};

static void ds_pump(struct dsync *d);
static void cycle_done(struct dsync *d, const char *err);
static void retry_cycle_end(struct dsync *d, void *arg);
static void slice_retry(struct dsync *d, void *arg);
static void count_retry(struct dsync *d, void *arg);
static void set_last_error(struct sched *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void ds_maybe_finish(struct dsync *d);
static void ds_fail(struct dsync *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void discover(struct sched *s);
static void check_finished(struct sched *s);

/* ---- small helpers ---- */

/* Something moved: the watchdog's evidence that work in flight is not stuck. */
static void touch(struct sched *s)
{
    s->last_progress = uv_now(s->loop);
}

/* Truncation is intended: the last error is a one-line summary for STATUS=. */
static void set_last_error(struct sched *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->last_error, sizeof s->last_error, fmt, ap);
    va_end(ap);
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        abort();
    return p;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p)
        abort();
    return p;
}

static struct discovery_column *copy_cols(const struct discovery_column *c, size_t n)
{
    struct discovery_column *out = xcalloc(n, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        out[i].name = xstrdup(c[i].name);
        out[i].sql_type = xstrdup(c[i].sql_type);
        out[i].ordinal = c[i].ordinal;
    }
    return out;
}

static void free_cols(struct discovery_column *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(c[i].name);
        free(c[i].sql_type);
    }
    free(c);
}

#define LIST_PUSH(head, x)                                                                         \
    do {                                                                                           \
        (x)->prev = NULL;                                                                          \
        (x)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (x);                                                                    \
        (head) = (x);                                                                              \
    } while (0)
#define LIST_DEL(head, x)                                                                          \
    do {                                                                                           \
        if ((x)->prev)                                                                             \
            (x)->prev->next = (x)->next;                                                           \
        else                                                                                       \
            (head) = (x)->next;                                                                    \
        if ((x)->next)                                                                             \
            (x)->next->prev = (x)->prev;                                                           \
    } while (0)

static double backoff_seconds(const struct config *c, int attempt, double retry_after)
{
    double b = c->retry_initial_seconds * pow(2.0, attempt > 0 ? attempt - 1 : 0);
    if (b > c->retry_max_seconds)
        b = c->retry_max_seconds;
    if (retry_after > b)
        b = retry_after;
    return b;
}

static void on_delay(uv_timer_t *t)
{
    struct delayed *dl = t->data;
    struct dsync *d = dl->d;
    touch(d->s);
    LIST_DEL(d->delays, dl);
    d->outstanding--;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    dl->fn(d, dl->arg);
}

static void call_later(struct dsync *d, double seconds, void (*fn)(struct dsync *, void *),
                       void *arg)
{
    struct delayed *dl = xcalloc(1, sizeof *dl);
    dl->d = d;
    dl->fn = fn;
    dl->arg = arg;
    uv_timer_init(d->s->loop, &dl->t);
    dl->t.data = dl;
    LIST_PUSH(d->delays, dl);
    d->outstanding++;
    uv_timer_start(&dl->t, on_delay, (uint64_t)(seconds * 1000.0), 0);
}

/* WHERE on the slice column for [lo, hi), as dynamic parameters. */
static void where_range(struct buf *b, const char *col, int64_t lo, int64_t hi,
                        struct druid_param *p, size_t *np)
{
    bool any = false;
    if (lo != PLAN_UNBOUNDED_LO) {
        buf_puts(b, " WHERE ");
        sqlident_quote(b, col);
        buf_puts(b, " >= ?");
        p[(*np)++] = (struct druid_param){DRUID_PARAM_TIMESTAMP_MS, lo, NULL};
        any = true;
    }
    if (hi != PLAN_UNBOUNDED_HI) {
        buf_puts(b, any ? " AND " : " WHERE ");
        sqlident_quote(b, col);
        buf_puts(b, " < ?");
        p[(*np)++] = (struct druid_param){DRUID_PARAM_TIMESTAMP_MS, hi, NULL};
    }
}

static bool is_selected(const struct sched *s, const char *name)
{
    if (!config_selects(s->cfg, name))
        return false;
    if (!s->opts.only)
        return true;
    for (const char *const *o = s->opts.only; *o; o++)
        if (strcmp(*o, name) == 0)
            return true;
    return false;
}

/* 401/403: every Druid query stops until a reload lifts it (SPEC 4); said once. */
static void block_on_auth(struct sched *s, long http_status, const char *message)
{
    if (!s->auth_blocked)
        log_error("druid",
                  "Druid refused our credentials (HTTP %ld): %s; syncing stops until the "
                  "configuration is reloaded",
                  http_status, message);
    s->auth_blocked = true;
}

/* Classifies a Druid failure: retry later (returns the delay) or give up (-1). */
static double retry_delay(struct dsync *d, const struct druid_error *e, int attempts)
{
    struct sched *s = d->s;
    if (e->kind == DRUID_ERR_AUTH) {
        block_on_auth(s, e->http_status, e->message);
        set_last_error(s, "Druid HTTP %ld: %s", e->http_status, e->message);
        return -1;
    }
    if (!druid_err_retryable(e->kind) || attempts > s->cfg->max_retries || s->stopping)
        return -1;
    return backoff_seconds(s->cfg, attempts, e->retry_after);
}

/* ---- planning ---- */

static void submit_count(struct dsync *d, struct countq *cq);

static int count_on_row(void *ud, struct json_object *row)
{
    struct countq *cq = ud;
    touch(cq->d->s);
    struct json_object *b = json_object_array_get_idx(row, 0);
    struct json_object *n = json_object_array_get_idx(row, 1);
    struct plan_bucket pb = {0, 0, cq->level};
    if (!b || !n || !json_object_is_type(b, json_type_string) ||
        time_parse_iso_ms(json_object_get_string(b), &pb.start_ms) != 0) {
        return -1;
    }
    pb.count = json_object_get_int64(n);
    struct json_object *mx = json_object_array_get_idx(row, 2);
    int64_t mxms;
    if (mx && json_object_is_type(mx, json_type_string) &&
        time_parse_iso_ms(json_object_get_string(mx), &mxms) == 0 && mxms > cq->d->druid_newest_ms)
        cq->d->druid_newest_ms = mxms;
    if (plan_add(cq->d->plan, &pb, 1) != 0)
        return -1;
    return 0;
}

static void count_retry(struct dsync *d, void *arg)
{
    struct countq *cq = arg;
    if (d->failed || d->s->stopping) {
        free(cq);
        ds_maybe_finish(d);
        return;
    }
    submit_count(d, cq);
}

static void plan_done(struct dsync *d)
{
    struct plan_slice *sl = NULL;
    size_t n = 0;
    if (plan_slices(d->plan, &sl, &n) != 0) {
        ds_fail(d, "slice planning failed");
        return;
    }
    d->slices = xcalloc(n, sizeof *d->slices);
    for (size_t i = 0; i < n; i++) {
        d->slices[i].r = sl[i];
        d->slices[i].max_seen = INT64_MIN;
        d->est_rows += sl[i].est_rows;
    }
    d->nslices = n;
    free(sl);
    log_debug("sched", "%s: %zu slices planned", d->name, n);
    d->st = DS_RUNNING;
    ds_pump(d);
}

static void take_refinements(struct dsync *d)
{
    struct plan_bucket b;
    while (plan_take_refinement(d->plan, &b) == 1) {
        struct countq *cq = xcalloc(1, sizeof *cq);
        cq->level = (enum plan_level)(b.level + 1);
        cq->lo = b.start_ms;
        cq->hi = b.start_ms + plan_level_width_ms(b.level);
        submit_count(d, cq);
    }
}

static void count_on_done(void *ud, const struct druid_error *e)
{
    struct countq *cq = ud;
    struct dsync *d = cq->d;
    touch(d->s);
    cq->q = NULL;
    LIST_DEL(d->counts, cq);
    d->outstanding--;
    if (e->kind != DRUID_OK) {
        double delay = retry_delay(d, e, ++cq->attempts);
        if (delay >= 0 && !d->failed) {
            d->s->counters.retries[e->kind]++;
            log_warning("druid", "%s: counting rows failed (%s: %s); retry %d in %.1f s", d->name,
                        druid_err_kind_name(e->kind), e->message, cq->attempts, delay);
            call_later(d, delay, count_retry, cq);
            return;
        }
        free(cq);
        d->s->counters.errors[e->kind]++;
        ds_fail(d, "counting rows failed: %s", e->message);
        return;
    }
    free(cq);
    if (d->failed || d->s->stopping) {
        ds_maybe_finish(d);
        return;
    }
    take_refinements(d);
    if (!d->counts && !d->delays && d->st == DS_PLANNING)
        plan_done(d);
}

static void submit_count(struct dsync *d, struct countq *cq)
{
    static const struct druid_query_ops ops = {NULL, count_on_row, count_on_done};
    struct buf b = BUF_INIT;
    struct druid_param p[2];
    size_t np = 0;
    const char *period = plan_level_period(cq->level);
    buf_puts(&b, "SELECT ");
    if (period) {
        buf_puts(&b, "TIME_FLOOR(");
        sqlident_quote(&b, d->slice_col);
        buf_printf(&b, ", '%s')", period);
    } else {
        sqlident_quote(&b, d->slice_col);
    }
    buf_puts(&b, " AS \"b\", COUNT(*) AS \"n\", MAX(");
    sqlident_quote(&b, d->slice_col);
    buf_puts(&b, ") AS \"mx\" FROM ");
    sqlident_quote(&b, d->name);
    where_range(&b, d->slice_col, cq->lo, cq->hi, p, &np);
    buf_puts(&b, " GROUP BY 1");
    cq->d = d;
    LIST_PUSH(d->counts, cq);
    d->outstanding++;
    cq->q = druid_query_submit(d->s->druid, b.data, p, np, &ops, cq);
    buf_free(&b);
    if (!cq->q)
        abort();
}

static void ds_plan(struct dsync *d)
{
    d->st = DS_PLANNING;
    if (!d->slice_col) {
        /* nothing to slice by: the whole datasource is one slice */
        d->plan = plan_new(d->s->cfg->batch_size, PLAN_UNBOUNDED_LO);
        plan_done(d);
        return;
    }
    d->plan = plan_new(d->s->cfg->batch_size, d->start_ms);
    if (!d->plan)
        abort();
    struct countq *cq = xcalloc(1, sizeof *cq);
    cq->level = PLAN_DAY;
    cq->lo = d->start_ms;
    cq->hi = PLAN_UNBOUNDED_HI;
    submit_count(d, cq);
}

/* ---- slices ---- */

static void run_free(struct slicerun *r)
{
    rowenc_free(r->enc);
    buf_free(&r->out);
    free(r);
}

static void run_end(struct slicerun *r)
{
    struct dsync *d = r->d;
    LIST_DEL(d->runs, r);
    d->running--;
    d->outstanding--;
    run_free(r);
}

static void slice_start(struct dsync *d, size_t idx);

static void slice_retry(struct dsync *d, void *arg)
{
    size_t idx = (size_t)(uintptr_t)arg;
    if (d->failed || d->s->stopping) {
        d->slices[idx].status = SL_PENDING;
        ds_maybe_finish(d);
        return;
    }
    slice_start(d, idx);
}

/* PostgreSQL failures follow one rule (pgerr_action): connection loss, restarts,
 * serialization failures and deadlocks are retried on a fresh connection after a backoff;
 * everything else fails the slice at once. */
static double pg_retry_delay(struct dsync *d, const struct pgerr *e, int attempts)
{
    struct sched *s = d->s;
    if (pgerr_schema_missing(e))
        s->schema_lost = true; /* recreated before the next cycle */
    if (pgerr_action(e) != PGERR_RETRY || attempts > s->cfg->max_retries || s->stopping)
        return -1;
    return backoff_seconds(s->cfg, attempts, -1);
}

/* "PostgreSQL (constraint, 23514): ERROR: ..." */
static void pg_describe(const struct pgerr *e, char *out, size_t n)
{
    snprintf(out, n, "PostgreSQL (%s%s%s): %s", pgerr_kind(e), e->sqlstate[0] ? ", " : "",
             e->sqlstate, e->message);
}

/* A slice attempt failed; its transaction is (being) rolled back. Exactly one of e (Druid)
 * and pe (PostgreSQL) is set. The slice is retried after a backoff or, when it cannot be,
 * put back as pending and the cycle fails: no slice is left behind. */
static void slice_failed(struct slicerun *r, const struct druid_error *e, const struct pgerr *pe)
{
    struct dsync *d = r->d;
    size_t idx = r->idx;
    struct slice_st *st = &d->slices[idx];
    if (e && r->ordered && e->kind == DRUID_ERR_QUERY && strstr(e->message, "ime ordering")) {
        /* too many segments per time chunk for an ordered scan: read unordered from now on
         * (occurrence numbers are then counted over the whole slice) */
        log_warning("sched",
                    "%s: Druid cannot order this scan by __time (%s); reading "
                    "slices unordered",
                    d->name, e->message);
        d->unordered = true;
        run_end(r);
        slice_start(d, idx);
        return;
    }
    st->attempts++;
    char msg[1200];
    int ekind;
    double delay;
    const char *kind;
    if (pe) {
        pg_describe(pe, msg, sizeof msg);
        ekind = SCHED_ERR_POSTGRES;
        kind = "postgres";
        delay = pg_retry_delay(d, pe, st->attempts);
    } else {
        snprintf(msg, sizeof msg, "%s", r->err[0] ? r->err : e->message);
        ekind = (int)e->kind;
        kind = druid_err_kind_name(e->kind);
        delay = retry_delay(d, e, st->attempts);
    }
    run_end(r);
    st->status = SL_PENDING;
    if (delay >= 0 && !d->failed) {
        d->s->counters.retries[ekind]++;
        st->status = SL_RUNNING; /* owned by its retry timer */
        log_warning("sched", "%s: slice %zu failed (%s: %s); retry %d in %.1f s", d->name, idx + 1,
                    kind, msg, st->attempts, delay);
        call_later(d, delay, slice_retry, (void *)(uintptr_t)idx);
        return;
    }
    d->s->counters.errors[ekind]++;
    ds_fail(d, "slice %zu failed: %s", idx + 1, msg);
}

static void on_drain(void *ud)
{
    struct slicerun *r = ud;
    touch(r->d->s);
    if (r->q)
        druid_query_pause(r->q, false);
}

static int flush_out(struct slicerun *r)
{
    if (!r->out.len)
        return 0;
    r->bytes += r->out.len;
    int rc = pgsink_slice_write(r->sl, r->out.data, r->out.len);
    buf_reset(&r->out);
    if (rc < 0) {
        r->pge = *pgsink_slice_last_error(r->sl);
        if (!r->pge.message[0])
            pgerr_set(&r->pge, "", true, "writing COPY data to PostgreSQL failed");
        snprintf(r->err, sizeof r->err, "%s", r->pge.message);
        r->pg_failed = true;
        return -1;
    }
    if (rc == 1 && r->q) {
        /* PostgreSQL is behind: stop reading Druid until libpq's buffer drains */
        druid_query_pause(r->q, true);
        pgsink_slice_on_drain(r->sl, on_drain, r);
    }
    return 0;
}

static int slice_on_header(void *ud, const struct druid_header *h)
{
    struct slicerun *r = ud;
    struct dsync *d = r->d;
    if (h->ncols != d->nccols) {
        snprintf(r->err, sizeof r->err, "Druid returned %zu columns, expected %zu", h->ncols,
                 d->nccols);
        return -1;
    }
    for (size_t i = 0; i < h->ncols; i++) {
        if (strcmp(h->names[i], d->ccols[i].name) != 0) {
            snprintf(r->err, sizeof r->err,
                     "Druid returned column \"%s\" where \"%s\" was expected", h->names[i],
                     d->ccols[i].name);
            return -1;
        }
    }
    return 0;
}

static int slice_on_row(void *ud, struct json_object *row)
{
    struct slicerun *r = ud;
    int64_t ms = INT64_MIN;
    if (r->ordered) {
        /* identical rows share their timestamp: with rows in time order, occurrence
         * numbers only need counting within one timestamp, which bounds the memory.
         * Druid prints an instant one way, so comparing the text is enough. (A value too
         * long to keep never resets: counting over the whole slice is always correct.) */
        struct json_object *t = json_object_array_get_idx(row, (size_t)r->d->time_idx);
        const char *ts = t ? json_object_get_string(t) : "";
        if (strlen(ts) < sizeof r->group_key && strcmp(ts, r->group_key) != 0) {
            rowenc_reset(r->enc);
            snprintf(r->group_key, sizeof r->group_key, "%s", ts);
        }
    }
    int rc = rowenc_encode(r->enc, row, &r->out, &ms, r->err, sizeof r->err);
    if (rc == ROWENC_SKIPPED) {
        /* a value no PostgreSQL column can hold (a timestamp outside its range): the row
         * is left out and said so, and the datasource goes on */
        uint64_t n = rowenc_stats(r->enc)->rows_skipped;
        if (n <= 5)
            log_warning("sched", "%s: slice %zu: row skipped: %s%s", r->d->name, r->idx + 1, r->err,
                        n == 5 ? " (further skipped rows of this slice are counted only)" : "");
        r->err[0] = '\0';
        touch(r->d->s);
        return 0;
    }
    if (rc != 0)
        return -1;
    if (ms > r->max_seen) {
        r->max_seen = ms;
        if (ms > r->d->druid_newest_ms)
            r->d->druid_newest_ms = ms;
    }
    r->rows++;
    touch(r->d->s);
    if (r->out.len >= COPY_CHUNK)
        return flush_out(r);
    return 0;
}

static void slice_on_commit(void *ud, const struct pgerr *err,
                            const struct pgsink_slice_result *res)
{
    struct slicerun *r = ud;
    struct dsync *d = r->d;
    r->sl = NULL;
    touch(d->s);
    if (err) {
        r->err[0] = '\0';
        slice_failed(r, NULL, err);
        return;
    }
    struct slice_st *st = &d->slices[r->idx];
    st->status = SL_DONE;
    st->max_seen = r->max_seen;
    d->rows_read += res->copied;
    d->inserted += res->inserted;
    d->vanished += res->vanished;
    d->fast_slices += res->fast;
    d->rows_total += (uint64_t)res->inserted;
    d->rows_read_total += (uint64_t)res->copied;
    d->bytes_total += r->bytes;
    d->slices_total++;
    const struct rowenc_stats *es = rowenc_stats(r->enc);
    d->nul_replaced_total += es->nul_replaced;
    d->json_as_string_total += es->json_as_string;
    d->rows_skipped_total += es->rows_skipped;
    if (es->nul_replaced || es->json_as_string || es->rows_skipped)
        log_warning("sched",
                    "%s: slice %zu stored by rule: %" PRIu64 " NUL characters replaced by U+FFFD, "
                    "%" PRIu64 " JSON values too deep for jsonb stored as JSON strings, %" PRIu64
                    " rows skipped (timestamps outside PostgreSQL's range)",
                    d->name, r->idx + 1, es->nul_replaced, es->json_as_string, es->rows_skipped);
    if (r->cursor_sent != INT64_MIN && r->cursor_sent > d->cursor_ms)
        d->cursor_ms = r->cursor_sent;
    log_debug("sched",
              "%s: slice %zu committed: %" PRId64 " rows, %" PRId64 " new, %" PRId64 " vanished",
              d->name, r->idx + 1, res->copied, res->inserted, res->vanished);
    run_end(r);
    ds_pump(d);
    ds_maybe_finish(d);
}

/* The greatest incremental value in the committed prefix of slices, with slice `upto`
 * counted as committed with `this_max` (upto = SIZE_MAX: none). INT64_MIN when the prefix
 * holds no value, or when `upto` is not part of the prefix (an earlier slice is open). A
 * cursor never passes an uncommitted slice: a crash then re-reads from there. */
static int64_t prefix_max(const struct dsync *d, size_t upto, int64_t this_max)
{
    int64_t m = INT64_MIN;
    size_t i = 0;
    for (; i < d->nslices; i++) {
        int64_t v;
        if (i == upto)
            v = this_max;
        else if (d->slices[i].status == SL_DONE)
            v = d->slices[i].max_seen;
        else
            break;
        if (v > m)
            m = v;
    }
    return upto != SIZE_MAX && i <= upto ? INT64_MIN : m;
}

static void slice_on_done(void *ud, const struct druid_error *e)
{
    struct slicerun *r = ud;
    struct dsync *d = r->d;
    r->q = NULL;
    touch(r->d->s);
    if (e->kind == DRUID_OK && flush_out(r) != 0)
        e = NULL;
    if (!e || e->kind != DRUID_OK) {
        struct druid_error copy;
        if (e)
            copy = *e;
        pgsink_slice_abort(r->sl);
        r->sl = NULL;
        if (r->pg_failed) {
            /* the consumer side failed: the cause is PostgreSQL's, not Druid's */
            struct pgerr pe = r->pge;
            r->err[0] = '\0';
            slice_failed(r, NULL, &pe);
            return;
        }
        if (!e)
            druid_error_set(&copy, DRUID_ERR_PROTOCOL, "%s", r->err);
        slice_failed(r, &copy, NULL);
        return;
    }
    char cur[TIME_ISO_MAX];
    r->cursor_sent = d->incremental ? prefix_max(d, r->idx, r->max_seen) : INT64_MIN;
    if (r->cursor_sent != INT64_MIN && d->cursor_ms > r->cursor_sent)
        r->cursor_sent = d->cursor_ms; /* a cursor never moves back */
    if (r->cursor_sent != INT64_MIN)
        time_format_iso_ms(r->cursor_sent, cur);
    r->committing = true;
    pgsink_slice_commit(r->sl, r->cursor_sent != INT64_MIN ? cur : NULL, slice_on_commit, r);
}

static void slice_on_ready(void *ud, struct pgsink_slice *sl, const struct pgerr *err)
{
    static const struct druid_query_ops ops = {slice_on_header, slice_on_row, slice_on_done};
    struct slicerun *r = ud;
    struct dsync *d = r->d;
    if (err) {
        slice_failed(r, NULL, err);
        return;
    }
    r->sl = sl;
    touch(r->d->s);
    if (d->failed || d->s->stopping) {
        pgsink_slice_abort(sl);
        r->sl = NULL;
        d->slices[r->idx].status = SL_PENDING;
        run_end(r);
        ds_maybe_finish(d);
        return;
    }
    struct slice_st *st = &d->slices[r->idx];
    struct buf b = BUF_INIT;
    struct druid_param p[2];
    size_t np = 0;
    buf_puts(&b, "SELECT ");
    for (size_t i = 0; i < d->nccols; i++) {
        if (i)
            buf_puts(&b, ", ");
        sqlident_quote(&b, d->ccols[i].name);
    }
    buf_puts(&b, " FROM ");
    sqlident_quote(&b, d->name);
    if (d->slice_col)
        where_range(&b, d->slice_col, st->r.lo, st->r.hi, p, &np);
    r->ordered = d->time_idx >= 0 && !d->unordered;
    r->group_key[0] = '\0';
    if (r->ordered)
        buf_puts(&b, " ORDER BY \"__time\"");
    r->q = druid_query_submit(d->s->druid, b.data, p, np, &ops, r);
    buf_free(&b);
    if (!r->q)
        abort();
}

static void slice_start(struct dsync *d, size_t idx)
{
    struct slicerun *r = xcalloc(1, sizeof *r);
    r->d = d;
    r->idx = idx;
    r->max_seen = INT64_MIN;
    r->cursor_sent = INT64_MIN;
    touch(r->d->s);
    struct rowenc_column *rc = xcalloc(d->nccols, sizeof *rc);
    for (size_t i = 0; i < d->nccols; i++) {
        rc[i].name = d->ccols[i].name;
        rc[i].type = d->types[i];
    }
    r->enc = rowenc_new(rc, d->nccols, d->inc_idx, true);
    free(rc);
    if (!r->enc)
        abort();
    d->slices[idx].status = SL_RUNNING;
    LIST_PUSH(d->runs, r);
    d->running++;
    d->outstanding++;
    pgsink_slice_begin(d->s->sink, d->name, d->slices[idx].r.lo, d->slices[idx].r.hi,
                       slice_on_ready, r);
}

static void ds_pump(struct dsync *d)
{
    struct sched *s = d->s;
    while (!d->failed && !s->stopping && d->st == DS_RUNNING && d->next_slice < d->nslices &&
           d->running < s->cfg->max_concurrent_queries) {
        slice_start(d, d->next_slice++);
    }
}

/* ---- cycle ---- */

static void ds_reset_cycle(struct dsync *d)
{
    free_cols(d->ccols, d->nccols);
    d->ccols = NULL;
    d->nccols = 0;
    free(d->types);
    d->types = NULL;
    free(d->slice_col);
    d->slice_col = NULL;
    free(d->req_cols);
    d->req_cols = NULL;
    plan_free(d->plan);
    d->plan = NULL;
    free(d->slices);
    d->slices = NULL;
    d->nslices = d->next_slice = 0;
    d->failed = false;
    d->interrupted = false;
    d->err[0] = '\0';
    d->rows_read = d->inserted = d->vanished = 0;
    d->est_rows = 0;
}

static void on_ds_timer(uv_timer_t *t);

static void ds_schedule(struct dsync *d, double seconds)
{
    uv_timer_start(&d->timer, on_ds_timer, (uint64_t)(seconds * 1000.0), 0);
}

static void on_cycle_end(void *ud, const char *err)
{
    struct dsync *d = ud;
    struct sched *s = d->s;
    touch(s);
    if (err) {
        /* the state row must not keep saying 'syncing': try again on a fresh connection
         * (a start-up corrects it if PostgreSQL stays away) */
        const struct pgerr *pe = pgsink_last_error(s->sink);
        bool again = pgerr_action(pe) == PGERR_RETRY && d->end_attempts < s->cfg->max_retries &&
                     !s->stop_hard;
        if (again) {
            d->end_attempts++;
            double delay = backoff_seconds(s->cfg, d->end_attempts, -1);
            log_warning("pg", "%s: recording the end of the cycle failed: %s; retry %d in %.1f s",
                        d->name, err, d->end_attempts, delay);
            call_later(d, delay, retry_cycle_end, NULL);
            return;
        }
        log_error("pg", "%s: recording the end of the cycle failed: %s", d->name, err);
    }
    cycle_done(d, err);
}

/* The cycle is over (its end recorded, or given up on): counters, log, next cycle. */
static void cycle_done(struct dsync *d, const char *err)
{
    struct sched *s = d->s;
    double secs = (double)(uv_now(s->loop) - d->t0) / 1000.0;
    if (d->failed || err)
        d->cycles_failed++;
    else {
        d->cycles_ok++;
        d->last_success = (double)time_now_ms() / 1000.0;
    }
    if (d->failed) {
        log_error("sched", "%s: cycle failed after %.1f s: %s", d->name, secs, d->err);
        set_last_error(s, "%s: %s", d->name, d->err);
    } else {
        /* a daemon repeats quiet cycles for months: only cycles that changed something
         * (and every --once cycle) are worth an info line */
        bool news = s->opts.once || d->inserted > 0 || d->vanished > 0;
        log_msg(news ? LOG_LVL_INFO : LOG_LVL_DEBUG, "sched",
                "%s: cycle done in %.1f s: %" PRId64 " rows read, %" PRId64 " new, %" PRId64
                " vanished, %zu slices (%zu fast)",
                d->name, secs, d->rows_read, d->inserted, d->vanished, d->nslices, d->fast_slices);
    }
    if (s->opts.once) {
        d->once_done = true;
        d->once_failed = d->failed || err != NULL;
    }
    d->st = DS_IDLE;
    bool failed = d->failed || err != NULL;
    d->failed_cycles = failed ? d->failed_cycles + 1 : 0;
    ds_reset_cycle(d);
    if (!s->opts.once && !s->stopping) {
        /* a datasource that keeps failing (a constraint, a full disk) waits longer each
         * time, never less than the interval: no tight loop against a permanent error */
        double next = s->cfg->sync_interval_seconds;
        if (d->failed_cycles > 0) {
            double b = backoff_seconds(s->cfg, d->failed_cycles, -1);
            if (b > next)
                next = b;
        }
        ds_schedule(d, next);
    }
    check_finished(s);
}

static void record_cycle_end(struct dsync *d)
{
    char cur[TIME_ISO_MAX];
    if (d->end_cursor_ms != INT64_MIN)
        time_format_iso_ms(d->end_cursor_ms, cur);
    pgsink_state_cycle_end(d->s->sink, d->name, d->failed ? d->err : NULL,
                           d->end_cursor_ms != INT64_MIN ? cur : NULL, d->interrupted, on_cycle_end,
                           d);
}

static void retry_cycle_end(struct dsync *d, void *arg)
{
    (void)arg;
    record_cycle_end(d);
}

static void ds_finish(struct dsync *d)
{
    struct sched *s = d->s;
    d->st = DS_FINISHING;
    char cur[TIME_ISO_MAX];
    bool have = false;
    int64_t m = d->incremental ? prefix_max(d, SIZE_MAX, INT64_MIN) : INT64_MIN;
    if (m != INT64_MIN && d->cursor_ms > m)
        m = d->cursor_ms; /* a cursor never moves back */
    if (m != INT64_MIN) {
        time_format_iso_ms(m, cur);
        have = true;
        if (m > d->cursor_ms)
            d->cursor_ms = m;
    }
    bool incomplete = false;
    for (size_t i = 0; i < d->nslices; i++)
        incomplete |= d->slices[i].status != SL_DONE;
    incomplete |= d->st != DS_RUNNING; /* stopped while planning */
    if (incomplete && s->stopping && !d->failed) {
        snprintf(d->err, sizeof d->err, "stopped before the cycle completed");
        d->interrupted = true;
        d->failed = true;
    }
    d->end_cursor_ms = have ? m : INT64_MIN;
    d->end_attempts = 0;
    record_cycle_end(d);
}

static void ds_maybe_finish(struct dsync *d)
{
    if (d->outstanding > 0 || d->st == DS_IDLE || d->st == DS_FINISHING || d->st == DS_PREPARING)
        return;
    bool all_done = d->st == DS_RUNNING && d->next_slice >= d->nslices;
    if (all_done || d->failed || d->s->stopping)
        ds_finish(d);
}

static void ds_fail(struct dsync *d, const char *fmt, ...)
{
    if (!d->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->err, sizeof d->err, fmt, ap);
        va_end(ap);
        d->failed = true;
    }
    ds_maybe_finish(d);
}

static void on_cycle_started(void *ud, const char *err)
{
    struct dsync *d = ud;
    if (err)
        log_warning("pg", "%s: recording the cycle start failed: %s", d->name, err);
}

static void on_prepared(void *ud, const char *err, const struct pgsink_table_info *info)
{
    struct dsync *d = ud;
    struct sched *s = d->s;
    touch(s);
    d->outstanding--;
    if (err) {
        if (pgerr_schema_missing(pgsink_last_error(s->sink)))
            s->schema_lost = true;
        d->st = DS_PLANNING; /* so that ds_maybe_finish records the failure */
        ds_fail(d, "preparing the PostgreSQL table failed: %s", err);
        return;
    }
    for (size_t i = 0; i < d->nccols; i++)
        d->types[i] = info->types[i];
    d->start_ms = PLAN_UNBOUNDED_LO;
    if (d->incremental && info->cursor) {
        int64_t c;
        if (time_parse_iso_ms(info->cursor, &c) == 0) {
            d->start_ms = c - (int64_t)(s->cfg->lookback_seconds * 1000.0);
            if (c > d->cursor_ms)
                d->cursor_ms = c;
        } else
            log_warning("sched", "%s: ignoring unreadable cursor \"%s\"", d->name, info->cursor);
    }
    pgsink_state_cycle_start(s->sink, d->name, on_cycle_started, d);
    if (s->stopping) {
        d->st = DS_PLANNING;
        ds_maybe_finish(d);
        return;
    }
    ds_plan(d);
}

static void prepare(struct dsync *d)
{
    pgsink_prepare_table(d->s->sink, &d->req, on_prepared, d);
    free(d->req_cols);
    d->req_cols = NULL;
}

static void on_schema_ready(void *ud, const char *err)
{
    struct dsync *d = ud;
    struct sched *s = d->s;
    if (err) {
        free(d->req_cols);
        d->req_cols = NULL;
        on_prepared(d, err, NULL);
        return;
    }
    if (s->schema_lost)
        log_warning("pg", "destination schema \"%s\" was missing; created it again",
                    s->cfg->destination_schema);
    s->schema_lost = false;
    prepare(d);
}

static void ds_start_cycle(struct dsync *d)
{
    struct sched *s = d->s;
    ds_reset_cycle(d);
    d->t0 = uv_now(s->loop);
    d->fast_slices = 0;
    d->nccols = d->ncols;
    d->ccols = copy_cols(d->cols, d->ncols); /* discovery may change d->cols mid-cycle */
    d->types = xcalloc(d->ncols, sizeof *d->types);
    struct pgsink_column *pc = xcalloc(d->ncols, sizeof *pc);
    d->inc_idx = -1;
    int time_idx = -1;
    for (size_t i = 0; i < d->ncols; i++) {
        pc[i].name = d->ccols[i].name;
        pc[i].type = typemap_from_druid(d->ccols[i].sql_type);
        bool ts = typemap_from_druid(d->ccols[i].sql_type) == PGT_TIMESTAMPTZ;
        if (strcmp(d->ccols[i].name, s->cfg->incremental_column) == 0) {
            if (ts)
                d->inc_idx = (int)i;
            else
                log_warning("sched",
                            "%s: incremental_column \"%s\" is %s, not a TIMESTAMP: "
                            "syncing in full mode",
                            d->name, d->ccols[i].name, d->ccols[i].sql_type);
        }
        if (ts && strcmp(d->ccols[i].name, "__time") == 0)
            time_idx = (int)i;
    }
    d->incremental = d->inc_idx >= 0;
    d->time_idx = time_idx;
    int slice_idx = d->incremental ? d->inc_idx : time_idx;
    d->slice_col = slice_idx >= 0 ? xstrdup(d->ccols[slice_idx].name) : NULL;
    log_msg(s->opts.once ? LOG_LVL_INFO : LOG_LVL_DEBUG, "sched",
            "%s: cycle starts (%s mode, %zu columns)", d->name,
            d->incremental ? "incremental" : "full", d->ncols);
    struct pgsink_table_req req = {d->name,
                                   pc,
                                   d->ncols,
                                   d->slice_col,
                                   d->incremental ? "incremental" : "full",
                                   s->cfg->incremental_column};
    d->st = DS_PREPARING;
    d->outstanding++;
    d->req_cols = pc;
    d->req = req;
    if (s->schema_lost) {
        /* a failure said the destination schema (or a table) is gone: create it again */
        pgsink_ensure_schema(s->sink, on_schema_ready, d);
        return;
    }
    prepare(d);
}

static void on_ds_timer(uv_timer_t *t)
{
    struct dsync *d = t->data;
    struct sched *s = d->s;
    if (s->stopping || d->st != DS_IDLE)
        return;
    if (!d->present || !d->selected)
        return; /* the next discovery decides */
    if (s->auth_blocked) {
        ds_schedule(d, s->cfg->sync_interval_seconds);
        return;
    }
    ds_start_cycle(d);
}

/* ---- discovery ---- */

static struct dsync *find_ds(struct sched *s, const char *name)
{
    for (struct dsync *d = s->ds; d; d = d->next)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

static void on_disc_timer(uv_timer_t *t)
{
    discover(t->data);
}

static void disc_failed(struct sched *s, const struct discovery_error *e)
{
    if (pgerr_schema_missing(pgsink_last_error(s->sink)))
        s->schema_lost = true; /* the metadata tables' schema is gone */
    if (e->kind == DRUID_ERR_AUTH) {
        block_on_auth(s, e->http_status, e->message);
    }
    s->disc_attempts++;
    set_last_error(s, "%s: %s", e->what, e->message);
    if (s->opts.once && (s->disc_attempts > s->cfg->max_retries || s->auth_blocked)) {
        log_error("sched", "discovery failed: %s: %s", e->what, e->message);
        if (!s->finished_reported && s->opts.on_finished) {
            s->finished_reported = true;
            s->opts.on_finished(s->opts.ud, 1);
        }
        return;
    }
    double delay = backoff_seconds(s->cfg, s->disc_attempts, -1);
    if (!s->opts.once && delay > s->cfg->sync_interval_seconds)
        delay = s->cfg->sync_interval_seconds;
    log_error("sched", "discovery failed: %s: %s; retry in %.1f s", e->what, e->message, delay);
    if (!s->stopping)
        uv_timer_start(&s->disc_timer, on_disc_timer, (uint64_t)(delay * 1000.0), 0);
    else
        check_finished(s);
}

/* The catalog is read: refresh the datasource list and start the cycles that are due. */
static void disc_apply(struct sched *s, const struct discovery_result *r)
{
    for (struct dsync *d = s->ds; d; d = d->next)
        d->present = false;
    for (size_t i = 0; i < r->ntables; i++) {
        const struct discovery_table *t = &r->tables[i];
        struct dsync *d = find_ds(s, t->name);
        if (!d) {
            d = xcalloc(1, sizeof *d);
            d->s = s;
            d->name = xstrdup(t->name);
            d->cursor_ms = INT64_MIN;
            d->druid_newest_ms = INT64_MIN;
            uv_timer_init(s->loop, &d->timer);
            d->timer.data = d;
            d->next = s->ds;
            s->ds = d;
        }
        d->present = true;
        d->selected = is_selected(s, t->name);
        free_cols(d->cols, d->ncols);
        d->cols = copy_cols(t->cols, t->ncols);
        d->ncols = t->ncols;
    }

    size_t started = 0, selected = 0;
    for (struct dsync *d = s->ds; d; d = d->next) {
        if (!d->present) {
            if (d->selected)
                log_warning("sched", "%s: not in Druid's catalog; its table is kept", d->name);
            continue;
        }
        if (!d->selected)
            continue;
        selected++;
        if (d->ncols == 0) {
            log_warning("sched", "%s: no columns in INFORMATION_SCHEMA.COLUMNS yet; skipped",
                        d->name);
            continue;
        }
        if (s->opts.once) {
            if (s->once_discovered)
                continue;
        } else if (uv_is_active((uv_handle_t *)&d->timer)) {
            continue; /* its own timer decides */
        }
        if (d->st == DS_IDLE && !s->auth_blocked) {
            ds_start_cycle(d);
            started++;
        }
    }
    if (s->opts.once && !s->once_discovered) {
        s->once_discovered = true;
        /* datasources asked for by name (--datasource, or the datasources key) that Druid
         * does not list did not sync: the run fails, their tables stay untouched */
        const char *const *lists[2] = {s->opts.only, (const char *const *)s->cfg->datasources};
        for (int l = 0; l < 2; l++) {
            for (const char *const *o = lists[l]; o && *o; o++) {
                struct dsync *d = find_ds(s, *o);
                if ((d && d->present) || !is_selected(s, *o))
                    continue;
                log_error("sched", "%s: not in Druid's catalog (schema \"%s\"); not synced", *o,
                          s->cfg->schema_name);
                set_last_error(s, "%s: not in Druid's catalog", *o);
                s->disc_attempts = -1; /* remembered as a failure for the exit code */
            }
        }
    }
    bool changed = r->ntables != s->last_ntables || selected != s->last_selected;
    s->last_ntables = r->ntables;
    s->last_selected = selected;
    log_msg(s->opts.once || changed ? LOG_LVL_INFO : LOG_LVL_DEBUG, "sched",
            "discovery: %zu datasources in schema \"%s\", %zu selected, %zu started", r->ntables,
            s->cfg->schema_name, selected, started);
}

static void on_discovered(void *ud, const struct discovery_result *r,
                          const struct discovery_error *e)
{
    struct sched *s = ud;
    s->disc = NULL; /* the run frees itself after this returns */
    touch(s);
    if (e) {
        disc_failed(s, e);
        return;
    }
    s->disc_attempts = s->disc_attempts < 0 ? -1 : 0;
    if (!s->stopping)
        disc_apply(s, r);
    if (!s->opts.once && !s->stopping)
        uv_timer_start(&s->disc_timer, on_disc_timer,
                       (uint64_t)(s->cfg->sync_interval_seconds * 1000.0), 0);
    check_finished(s);
}

static void on_disc_schema_ready(void *ud, const char *err)
{
    struct sched *s = ud;
    s->ensuring = false;
    if (err) {
        struct discovery_error e = {"recreating the destination schema", err, DRUID_OK, 0};
        disc_failed(s, &e);
        return;
    }
    log_warning("pg", "destination schema \"%s\" was missing; created it again",
                s->cfg->destination_schema);
    s->schema_lost = false;
    discover(s);
}

static void discover(struct sched *s)
{
    if (s->ensuring)
        return;
    if (s->disc || s->stopping)
        return;
    if (s->auth_blocked) {
        log_warning("sched", "discovery skipped: Druid refused our credentials; reload the "
                             "configuration (SIGHUP) after fixing them");
        return;
    }
    if (s->schema_lost) {
        s->ensuring = true;
        pgsink_ensure_schema(s->sink, on_disc_schema_ready, s);
        return;
    }
    s->disc = discovery_run(s->druid, s->sink, s->cfg->schema_name, on_discovered, s);
}

/* ---- public ---- */

static void check_finished(struct sched *s)
{
    if (s->finished_reported || !s->opts.on_finished)
        return;
    if (s->stopping) {
        if (s->disc)
            return;
        for (struct dsync *d = s->ds; d; d = d->next)
            if (d->st != DS_IDLE)
                return;
        s->finished_reported = true;
        s->opts.on_finished(s->opts.ud, 0);
        return;
    }
    if (!s->opts.once || !s->once_discovered)
        return;
    int code = s->disc_attempts < 0 ? 1 : 0;
    for (struct dsync *d = s->ds; d; d = d->next) {
        if (!d->present || !d->selected || d->ncols == 0)
            continue;
        if (!d->once_done)
            return;
        if (d->once_failed)
            code = 1;
    }
    s->finished_reported = true;
    s->opts.on_finished(s->opts.ud, code);
}

struct sched *sched_new(uv_loop_t *loop, const struct config *cfg, struct druid_client *druid,
                        struct pgsink *sink, const struct sched_opts *opts)
{
    struct sched *s = xcalloc(1, sizeof *s);
    s->loop = loop;
    s->cfg = cfg;
    s->druid = druid;
    s->sink = sink;
    s->opts = *opts;
    uv_timer_init(loop, &s->disc_timer);
    s->disc_timer.data = s;
    uv_timer_init(loop, &s->stop_timer);
    s->stop_timer.data = s;
    return s;
}

void sched_start(struct sched *s)
{
    s->started = true;
    touch(s);
    discover(s);
}

void sched_set_config(struct sched *s, const struct config *cfg)
{
    s->cfg = cfg;
    s->auth_blocked = false;
    for (struct dsync *d = s->ds; d; d = d->next)
        d->selected = is_selected(s, d->name);
    if (s->started && !s->stopping && !s->opts.once) {
        uv_timer_stop(&s->disc_timer);
        discover(s);
    }
}

/* Pending retries end without running: their slices go back to pending (so the cycle is
 * seen as incomplete), their planning queries are freed. */
static void drop_delays(struct dsync *d)
{
    bool end_dropped = false;
    while (d->delays) {
        struct delayed *dl = d->delays;
        LIST_DEL(d->delays, dl);
        uv_timer_stop(&dl->t);
        uv_close((uv_handle_t *)&dl->t, (uv_close_cb)free);
        d->outstanding--;
        if (dl->fn == slice_retry)
            d->slices[(size_t)(uintptr_t)dl->arg].status = SL_PENDING;
        else if (dl->fn == count_retry)
            free(dl->arg);
        else if (dl->fn == retry_cycle_end)
            end_dropped = true;
    }
    if (end_dropped)
        cycle_done(d, "stopping before the end of the cycle could be recorded");
}

static void cancel_all(struct dsync *d)
{
    while (d->counts) {
        struct countq *cq = d->counts;
        LIST_DEL(d->counts, cq);
        druid_query_cancel(cq->q);
        d->outstanding--;
        free(cq);
    }
    drop_delays(d);
    for (struct slicerun *r = d->runs, *next; r; r = next) {
        next = r->next;
        if (r->committing)
            continue; /* COMMIT is on its way; it finishes or fails as a whole */
        if (r->q)
            druid_query_cancel(r->q);
        r->q = NULL;
        if (r->sl)
            pgsink_slice_abort(r->sl);
        else
            continue; /* still waiting for a writer; it aborts itself when ready */
        r->sl = NULL;
        d->slices[r->idx].status = SL_PENDING;
        run_end(r);
    }
}

static void on_stop_timeout(uv_timer_t *t)
{
    struct sched *s = t->data;
    log_warning("sched", "stop timeout: rolling back the slices still in flight");
    sched_stop(s, 0);
}

void sched_stop(struct sched *s, double timeout_seconds)
{
    bool again = s->stopping;
    s->stopping = true;
    if (again || timeout_seconds <= 0)
        s->stop_hard = true;
    uv_timer_stop(&s->disc_timer);
    for (struct dsync *d = s->ds; d; d = d->next) {
        uv_timer_stop(&d->timer);
        /* planning and waiting retries end at once; slices get the grace period */
        drop_delays(d);
        if (again || timeout_seconds <= 0)
            cancel_all(d);
        ds_maybe_finish(d);
    }
    if (!again && timeout_seconds > 0)
        uv_timer_start(&s->stop_timer, on_stop_timeout, (uint64_t)(timeout_seconds * 1000.0), 0);
    check_finished(s);
}

static void free_dsync(uv_handle_t *h)
{
    free(h->data);
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    discovery_cancel(s->disc);
    s->disc = NULL;
    while (s->ds) {
        struct dsync *d = s->ds;
        s->ds = d->next;
        cancel_all(d);
        while (d->runs) { /* those the sink still holds: pgsink_free reclaims its side */
            struct slicerun *r = d->runs;
            LIST_DEL(d->runs, r);
            if (r->q)
                druid_query_cancel(r->q);
            run_free(r);
        }
        ds_reset_cycle(d);
        free_cols(d->cols, d->ncols);
        free(d->name);
        uv_close((uv_handle_t *)&d->timer, free_dsync);
    }
    uv_close((uv_handle_t *)&s->disc_timer, NULL);
    uv_close((uv_handle_t *)&s->stop_timer, NULL);
    /* s itself is freed by the caller after the loop has closed the timers */
}

void sched_status(const struct sched *s, char *out, size_t n)
{
    size_t active = 0, total = 0;
    for (const struct dsync *d = s->ds; d; d = d->next) {
        if (!d->present || !d->selected)
            continue;
        total++;
        if (d->st != DS_IDLE)
            active++;
    }
    snprintf(out, n, "%zu of %zu datasources syncing%s%s", active, total,
             s->last_error[0] ? "; last error: " : "", s->last_error);
}

static const char *phase_name(enum ds_state st)
{
    switch (st) {
    case DS_IDLE:
        return "idle";
    case DS_PREPARING:
        return "preparing";
    case DS_PLANNING:
        return "planning";
    case DS_RUNNING:
        return "syncing";
    case DS_FINISHING:
        return "finishing";
    }
    return "?";
}

void sched_foreach(const struct sched *s, void (*fn)(void *ud, const struct sched_ds_info *i),
                   void *ud)
{
    for (const struct dsync *d = s->ds; d; d = d->next) {
        struct sched_ds_info i;
        memset(&i, 0, sizeof i);
        i.name = d->name;
        i.phase = phase_name(d->st);
        i.selected = d->present && d->selected;
        i.rows_total = d->rows_total;
        i.rows_read_total = d->rows_read_total;
        i.bytes_total = d->bytes_total;
        i.slices_total = d->slices_total;
        i.nul_replaced_total = d->nul_replaced_total;
        i.json_as_string_total = d->json_as_string_total;
        i.rows_skipped_total = d->rows_skipped_total;
        i.cycles_ok = d->cycles_ok;
        i.cycles_failed = d->cycles_failed;
        i.last_success = d->last_success;
        i.lag_seconds = -1;
        if (d->cursor_ms != INT64_MIN && d->druid_newest_ms != INT64_MIN)
            i.lag_seconds = d->druid_newest_ms > d->cursor_ms
                                ? (double)(d->druid_newest_ms - d->cursor_ms) / 1000.0
                                : 0.0;
        if (d->st != DS_IDLE) {
            i.cycle_rows = (uint64_t)d->rows_read;
            for (const struct slicerun *r = d->runs; r; r = r->next)
                if (!r->committing)
                    i.cycle_rows += r->rows;
            for (size_t k = 0; k < d->nslices; k++)
                i.slices_done += d->slices[k].status == SL_DONE;
            i.slices_planned = d->nslices;
            i.cycle_est_rows = d->est_rows;
            i.cycle_seconds = (double)(uv_now(s->loop) - d->t0) / 1000.0;
        }
        fn(ud, &i);
    }
}

bool sched_healthy(const struct sched *s, double *stuck_seconds)
{
    bool busy = s->disc != NULL;
    for (const struct dsync *d = s->ds; d && !busy; d = d->next)
        busy = d->st != DS_IDLE;
    double quiet = (double)(uv_now(s->loop) - s->last_progress) / 1000.0;
    /* Work in flight always moves within this: a Druid query ends within its timeout, a
     * PostgreSQL operation within postgres_timeout_seconds (the server's) plus our own
     * margin, a backoff within retry_max_seconds. */
    double bound = s->cfg->request_timeout_seconds + s->cfg->postgres_timeout_seconds +
                   s->cfg->retry_max_seconds + 60.0;
    if (stuck_seconds)
        *stuck_seconds = quiet;
    return !busy || quiet <= bound;
}

const struct sched_counters *sched_get_counters(const struct sched *s)
{
    return &s->counters;
}

const char *sched_err_kind_name(int kind)
{
    return kind == SCHED_ERR_POSTGRES ? "postgres" : druid_err_kind_name((enum druid_err_kind)kind);
}
