/* fake_io: the fake world of the scheduler tests. See fake_io.h. */
#include "fake_io.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "discovery.h"
#include "druid_client.h"
#include "pgsink.h"
#include "rowenc.h"
#include "timeutil.h"

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p)
        abort();
    return p;
}

/* ---- operations and the virtual clock ---- */

struct op {
    struct op *next;
    void (*fn)(void *arg);
    void *arg;
};

static struct op *ops_head, *ops_tail;
static uint64_t now_ms;

static void defer(void (*fn)(void *), void *arg)
{
    struct op *o = xcalloc(1, sizeof *o);
    o->fn = fn;
    o->arg = arg;
    if (ops_tail)
        ops_tail->next = o;
    else
        ops_head = o;
    ops_tail = o;
}

struct ftimer {
    uv_timer_t *t;
    uv_timer_cb cb;
    uint64_t due;
    bool active;
    bool closed;
    bool unref; /* uv_unref: fires while the loop runs, does not keep it running */
};

#define MAX_TIMERS 4096
static struct ftimer timers[MAX_TIMERS];
static size_t ntimers;

static struct ftimer *find_timer(const void *h)
{
    for (size_t i = 0; i < ntimers; i++)
        if (timers[i].t == h && !timers[i].closed)
            return &timers[i];
    return NULL;
}

int uv_timer_init(uv_loop_t *loop, uv_timer_t *t)
{
    (void)loop;
    if (ntimers == MAX_TIMERS)
        abort();
    timers[ntimers++] = (struct ftimer){t, NULL, 0, false, false, false};
    return 0;
}

int uv_timer_start(uv_timer_t *t, uv_timer_cb cb, uint64_t timeout, uint64_t repeat)
{
    (void)repeat;
    struct ftimer *f = find_timer(t);
    if (!f)
        abort();
    f->cb = cb;
    f->due = now_ms + timeout;
    f->active = true;
    return 0;
}

int uv_timer_stop(uv_timer_t *t)
{
    struct ftimer *f = find_timer(t);
    if (f)
        f->active = false;
    return 0;
}

int uv_is_active(const uv_handle_t *h)
{
    struct ftimer *f = find_timer(h);
    return f && f->active;
}

void uv_unref(uv_handle_t *h)
{
    struct ftimer *f = find_timer(h);
    if (f)
        f->unref = true;
}

uint64_t uv_now(const uv_loop_t *loop)
{
    (void)loop;
    return now_ms;
}

struct closing {
    uv_handle_t *h;
    uv_close_cb cb;
};

static void do_close(void *arg)
{
    struct closing *c = arg;
    if (c->cb)
        c->cb(c->h);
    free(c);
}

void uv_close(uv_handle_t *h, uv_close_cb cb)
{
    struct ftimer *f = find_timer(h);
    if (f) {
        f->active = false;
        f->closed = true;
    }
    struct closing *c = xcalloc(1, sizeof *c);
    c->h = h;
    c->cb = cb;
    defer(do_close, c);
}

uint64_t fake_now(void)
{
    return now_ms;
}

void fake_step(void)
{
    struct op *o = ops_head;
    ops_head = ops_tail = NULL;
    while (o) {
        struct op *next = o->next;
        o->fn(o->arg);
        free(o);
        o = next;
    }
}

int fake_run(uint64_t until_ms)
{
    int steps = 0;
    for (;;) {
        if (ops_head) {
            fake_step();
            steps++;
            continue;
        }
        struct ftimer *next = NULL;
        bool referenced = false;
        for (size_t i = 0; i < ntimers; i++)
            if (timers[i].active && !timers[i].closed) {
                referenced |= !timers[i].unref;
                if (!next || timers[i].due < next->due)
                    next = &timers[i];
            }
        /* like uv_run: only unreferenced timers left is nothing left */
        if (!next || !referenced || next->due > until_ms)
            return steps;
        if (next->due > now_ms)
            now_ms = next->due;
        next->active = false;
        next->cb(next->t);
        steps++;
    }
}

/* ---- Druid ---- */

struct frow {
    int64_t ts, v;
};

static struct frow *rows;
static size_t nrows, caprows;

struct fault {
    char match[128];
    enum druid_err_kind kind;
    int after_rows;
    int times;
};
static struct fault faults[16];
static size_t nfaults;
static void (*before_count)(int level, int64_t lo, int64_t hi);
static int queries_done;
static char *queries_log[4096];
static int nlog;

struct druid_query {
    struct druid_query *next;
    char *sql;
    struct druid_param p[4];
    size_t np;
    const struct druid_query_ops *ops;
    void *ud;
    bool cancelled;
};
static struct druid_query *pending_q;

void fake_druid_add_row(int64_t ts_ms, int64_t v)
{
    if (nrows == caprows) {
        caprows = caprows ? caprows * 2 : 256;
        rows = realloc(rows, caprows * sizeof *rows);
        if (!rows)
            abort();
    }
    rows[nrows++] = (struct frow){ts_ms, v};
}

void fake_druid_delete(int64_t lo, int64_t hi)
{
    size_t k = 0;
    for (size_t i = 0; i < nrows; i++)
        if (!(rows[i].ts >= lo && rows[i].ts < hi))
            rows[k++] = rows[i];
    nrows = k;
}

size_t fake_druid_rows(void)
{
    return nrows;
}

void fake_druid_fault(const char *match, enum druid_err_kind kind, int after_rows, int times)
{
    struct fault *f = &faults[nfaults++];
    snprintf(f->match, sizeof f->match, "%s", match ? match : "");
    f->kind = kind;
    f->after_rows = after_rows;
    f->times = times;
}

void fake_druid_before_count(void (*fn)(int level, int64_t lo, int64_t hi))
{
    before_count = fn;
}

int fake_druid_queries(const char *match)
{
    if (!match)
        return queries_done;
    int n = 0;
    for (int i = 0; i < nlog; i++)
        n += strstr(queries_log[i], match) != NULL;
    return n;
}

int fake_druid_pending(void)
{
    int n = 0;
    for (struct druid_query *q = pending_q; q; q = q->next)
        n += !q->cancelled;
    return n;
}

static int cmp_row(const void *a, const void *b)
{
    const struct frow *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->v < y->v ? -1 : x->v > y->v;
}

/* The range of a query: its TIMESTAMP parameters, by the comparisons in its text. */
static void query_range(const struct druid_query *q, int64_t *lo, int64_t *hi)
{
    *lo = INT64_MIN;
    *hi = INT64_MAX;
    size_t k = 0;
    if (strstr(q->sql, ">= ?"))
        *lo = q->p[k++].i;
    if (strstr(q->sql, "< ?"))
        *hi = q->p[k].i;
}

static int64_t floor_to(int64_t ts, int64_t w)
{
    int64_t f = ts / w * w;
    return f > ts ? f - w : f;
}

static struct json_object *ts_json(int64_t ms)
{
    char t[TIME_ISO_MAX];
    time_format_iso_ms(ms, t);
    return json_object_new_string(t);
}

static void unlink_q(struct druid_query *q)
{
    for (struct druid_query **pp = &pending_q; *pp; pp = &(*pp)->next)
        if (*pp == q) {
            *pp = q->next;
            return;
        }
}

static bool seg_on, seg_unknown;
static char seg_version[64];
static int64_t unavailable_days[64];
static size_t nunavailable;

void fake_druid_segments(bool on, const char *version, bool rows_unknown)
{
    seg_on = on;
    seg_unknown = rows_unknown;
    snprintf(seg_version, sizeof seg_version, "%s", version ? version : "v1");
}

void fake_druid_unavailable(int64_t day_ms, bool unavailable)
{
    for (size_t i = 0; i < nunavailable; i++)
        if (unavailable_days[i] == day_ms) {
            if (!unavailable)
                unavailable_days[i] = unavailable_days[--nunavailable];
            return;
        }
    if (unavailable)
        unavailable_days[nunavailable++] = day_ms;
}

static int64_t realtime_days[64];
static size_t nrealtime;
static int64_t last_slice_lo = INT64_MIN;

void fake_druid_realtime(int64_t day_ms, bool realtime)
{
    for (size_t i = 0; i < nrealtime; i++)
        if (realtime_days[i] == day_ms) {
            if (!realtime)
                realtime_days[i] = realtime_days[--nrealtime];
            return;
        }
    if (realtime)
        realtime_days[nrealtime++] = day_ms;
}

static bool day_realtime(int64_t day)
{
    for (size_t i = 0; i < nrealtime; i++)
        if (realtime_days[i] == day)
            return true;
    return false;
}

int64_t fake_druid_last_slice_lo(void)
{
    return last_slice_lo;
}

static bool day_unavailable(int64_t day)
{
    for (size_t i = 0; i < nunavailable; i++)
        if (unavailable_days[i] == day)
            return true;
    return false;
}

static int cmp_row(const void *a, const void *b);

/* sys.segments: one segment per day holding rows. */
static void answer_segments(struct druid_query *q)
{
    struct druid_error e = {DRUID_OK, 200, "", "", "", -1};
    if (!seg_on) {
        druid_error_set(&e, DRUID_ERR_AUTH, "Unauthorized");
        e.http_status = 403;
        q->ops->on_done(q->ud, &e);
        return;
    }
    qsort(rows, nrows, sizeof *rows, cmp_row);
    for (size_t i = 0; i < nrows;) {
        int64_t day = floor_to(rows[i].ts, 86400000), n = 0;
        size_t j = i;
        while (j < nrows && floor_to(rows[j].ts, 86400000) == day)
            j++, n++;
        char st[TIME_ISO_MAX], en[TIME_ISO_MAX], id[256];
        time_format_iso_ms(day, st);
        time_format_iso_ms(day + 86400000, en);
        snprintf(id, sizeof id, "ds_%s_%s_%s", st, en, seg_version);
        struct json_object *row = json_object_new_array();
        json_object_array_add(row, json_object_new_string("ds"));
        json_object_array_add(row, json_object_new_string(st));
        json_object_array_add(row, json_object_new_string(en));
        json_object_array_add(row, json_object_new_string(id));
        json_object_array_add(row, json_object_new_int64(n * 100));
        json_object_array_add(row, json_object_new_int64(seg_unknown ? 0 : n));
        json_object_array_add(row, json_object_new_int64(day_unavailable(day) ? 0 : 1));
        json_object_array_add(row, json_object_new_int64(day_realtime(day) ? 1 : 0));
        int rc = q->ops->on_row(q->ud, row);
        json_object_put(row);
        if (rc != 0) {
            druid_error_set(&e, DRUID_ERR_PROTOCOL, "aborted by consumer");
            break;
        }
        i = j;
    }
    q->ops->on_done(q->ud, &e);
}

static void answer(void *arg)
{
    struct druid_query *q = arg;
    unlink_q(q);
    if (q->cancelled) {
        free(q->sql);
        free(q);
        return;
    }
    queries_done++;
    if (nlog < 4096)
        queries_log[nlog++] = strdup(q->sql);
    if (strstr(q->sql, "sys.segments")) {
        answer_segments(q);
        free(q->sql);
        free(q);
        return;
    }
    struct fault *fault = NULL;
    for (size_t i = 0; i < nfaults; i++)
        if (faults[i].times > 0 && strstr(q->sql, faults[i].match)) {
            fault = &faults[i];
            fault->times--;
            break;
        }
    int64_t lo, hi;
    query_range(q, &lo, &hi);
    bool count = strstr(q->sql, "COUNT(*)") != NULL;
    bool sums = strstr(q->sql, "SUM(\"v\")") != NULL; /* the counts fallback's comparison */
    int64_t width = 1;
    int level = 4;
    static const char *periods[] = {"'P1D'", "'PT1H'", "'PT1M'", "'PT1S'"};
    static const int64_t widths[] = {86400000, 3600000, 60000, 1000};
    for (int i = 0; i < 4; i++)
        if (strstr(q->sql, periods[i])) {
            width = widths[i];
            level = i;
        }
    if (count && before_count)
        before_count(level, lo, hi);
    if (!count)
        last_slice_lo = lo;
    qsort(rows, nrows, sizeof *rows, cmp_row);
    struct druid_error e = {DRUID_OK, 200, "", "", "", -1};
    int delivered = 0;
    bool aborted = false;
    if (!count && q->ops->on_header) {
        const char *names[] = {"__time", "v"};
        const char *nt[] = {"LONG", "LONG"};
        const char *st[] = {"TIMESTAMP", "BIGINT"};
        struct druid_header h = {2, names, nt, st};
        aborted = q->ops->on_header(q->ud, &h) != 0;
    }
    for (size_t i = 0; i < nrows && !aborted;) {
        if (rows[i].ts < lo || rows[i].ts >= hi ||
            day_unavailable(floor_to(rows[i].ts, 86400000))) {
            i++;
            continue;
        }
        if (fault && delivered >= fault->after_rows)
            break;
        struct json_object *row = json_object_new_array();
        if (count) {
            int64_t b = floor_to(rows[i].ts, width), n = 0, mx = INT64_MIN;
            size_t j = i;
            for (; j < nrows && rows[j].ts < hi && floor_to(rows[j].ts, width) == b &&
                   !day_unavailable(floor_to(rows[j].ts, 86400000));
                 j++) {
                n++;
                if (rows[j].ts > mx)
                    mx = rows[j].ts;
            }
            json_object_array_add(row, ts_json(b));
            json_object_array_add(row, json_object_new_int64(n));
            if (sums) {
                int64_t sum = 0;
                for (size_t k = i; k < j; k++)
                    sum += rows[k].v;
                json_object_array_add(row, json_object_new_int64(sum));
            } else {
                json_object_array_add(row, ts_json(mx));
            }
            i = j;
        } else {
            json_object_array_add(row, ts_json(rows[i].ts));
            json_object_array_add(row, json_object_new_int64(rows[i].v));
            i++;
        }
        delivered++;
        aborted = q->ops->on_row(q->ud, row) != 0;
        json_object_put(row);
    }
    if (aborted)
        druid_error_set(&e, DRUID_ERR_PROTOCOL, "aborted by consumer");
    else if (fault)
        druid_error_set(&e, fault->kind, "fault injected after %d rows", delivered);
    q->ops->on_done(q->ud, &e);
    free(q->sql);
    free(q);
}

/* The fake has no decoded-row or raw-line path: its rows reach slice_on_row as json-c
 * arrays. */
void druid_query_on_row_view(struct druid_query *q, druid_row_view_fn fn)
{
    (void)q;
    (void)fn;
}

void druid_query_on_row_line(struct druid_query *q, druid_row_line_fn fn)
{
    (void)q;
    (void)fn;
}

struct druid_query *druid_query_submit(struct druid_client *c, const char *sql,
                                       const struct druid_param *params, size_t nparams,
                                       const struct druid_query_ops *ops, void *ud)
{
    (void)c;
    struct druid_query *q = xcalloc(1, sizeof *q);
    q->sql = strdup(sql);
    q->np = nparams < 4 ? nparams : 4;
    memcpy(q->p, params, q->np * sizeof *params);
    q->ops = ops;
    q->ud = ud;
    q->next = pending_q;
    pending_q = q;
    defer(answer, q);
    return q;
}

void druid_query_cancel(struct druid_query *q)
{
    if (q)
        q->cancelled = true;
}

void druid_query_pause(struct druid_query *q, bool paused)
{
    (void)q;
    (void)paused;
}

/* ---- discovery ---- */

struct discovery {
    discovery_cb cb;
    void *ud;
    bool cancelled;
};

static void disc_answer(void *arg)
{
    struct discovery *d = arg;
    if (!d->cancelled) {
        struct discovery_column cols[2] = {{"__time", "TIMESTAMP", 1}, {"v", "BIGINT", 2}};
        struct discovery_table t = {"ds", cols, 2};
        struct discovery_result r = {&t, 1};
        d->cb(d->ud, &r, NULL);
    }
    free(d);
}

struct discovery *discovery_run(struct druid_client *druid, struct pgsink *sink, const char *schema,
                                discovery_cb cb, void *ud)
{
    (void)druid;
    (void)sink;
    (void)schema;
    struct discovery *d = xcalloc(1, sizeof *d);
    d->cb = cb;
    d->ud = ud;
    defer(disc_answer, d);
    return d;
}

void discovery_cancel(struct discovery *d)
{
    if (d)
        d->cancelled = true;
}

/* ---- PostgreSQL sink ---- */

struct srow {
    int64_t ts, v;
};
static struct srow *stored;
static size_t nstored, capstored;
static char state_status[32];
static int64_t state_cursor = INT64_MIN;
static int64_t shadow_cursor = INT64_MIN; /* a resync's progress (resync_cursor) */
static char state_error[1100];
static int cycle_ends;
static int commits;
static int64_t commit_cursors[4096];
static bool hold;
static struct pgerr fail_err;
static int fail_n;
static struct pgerr last_err;
static int open_slices;
static bool table_created;

struct lrow {
    char start[48], end[48];
    int64_t start_ms, end_ms;
    char fp[40];
    int64_t druid_rows, stored_rows;
    char state[16];
    int64_t since;
    int64_t position, full_read;
    bool drop_held;
};
static struct lrow ledger[8192];
static size_t nledger;

static void ledger_apply(const struct pgsink_chunk *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        for (size_t j = 0; j < nledger; j++)
            if (!(ledger[j].start_ms < c[i].end_ms && c[i].start_ms < ledger[j].end_ms))
                ledger[k++] = ledger[j];
        nledger = k;
    }
    for (size_t i = 0; i < n; i++) {
        if (!c[i].fingerprint)
            continue;
        struct lrow *l = &ledger[nledger++];
        snprintf(l->start, sizeof l->start, "%s", c[i].start);
        snprintf(l->end, sizeof l->end, "%s", c[i].end);
        l->start_ms = c[i].start_ms;
        l->end_ms = c[i].end_ms;
        snprintf(l->fp, sizeof l->fp, "%s", c[i].fingerprint);
        l->druid_rows = c[i].druid_rows;
        l->stored_rows = c[i].stored_rows;
        snprintf(l->state, sizeof l->state, "%s", c[i].state);
        l->since = c[i].postponed_since_ms;
        l->position = c[i].position_ms;
        l->full_read = c[i].full_read_ms;
        l->drop_held = c[i].drop_held;
    }
}

struct pgsink_slice {
    struct pgsink_chunk *chunks;
    size_t nchunks;
    int64_t lo, hi;
    struct srow *rows;
    size_t n, cap;
    struct pgerr err;
    char cursor[64];
    bool has_cursor;
    bool shadow; /* a resync's slice: its cursor is the shadow's progress */
    pgsink_commit_cb cb;
    void *ud;
    struct pgsink_slice *next_held;
    bool fenced; /* began under a fence (pgsink_fence_set): checked at commit */
    char fence_unit[160], fence_owner[160];
    int64_t fence_epoch;
    /* chunk units (pgsink_slice_fence_chunks): they fence the commit instead */
    char cunits[16][160];
    int64_t cepochs[16];
    bool cclean[16];
    size_t ncunits;
    char chunk_owner[160];
    bool clear;
};
static struct pgsink_slice *held;
/* the lease block at the end of this file */
static void fence_capture(struct pgsink_slice *sl);
static bool fence_refuses(struct pgsink_slice *sl, struct pgerr *e);
void fake_lease_reset(void);

const struct pgerr *pgsink_last_error(const struct pgsink *s)
{
    (void)s;
    return &last_err;
}

struct cbop {
    pgsink_cb cb;
    void *ud;
};

static void run_cbop(void *arg)
{
    struct cbop *c = arg;
    c->cb(c->ud, NULL);
    free(c);
}

static void run_cbfail(void *arg)
{
    struct cbop *c = arg;
    c->cb(c->ud, last_err.message);
    free(c);
}

static void ok_later(pgsink_cb cb, void *ud)
{
    struct cbop *c = xcalloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    defer(run_cbop, c);
}

void pgsink_ensure_schema(struct pgsink *s, pgsink_cb cb, void *ud)
{
    (void)s;
    ok_later(cb, ud);
}

static int64_t fake_prep_cursor(bool resync);
/* the first load without indexes (the block at the end of this file resets and reads these) */
static bool il_flag;
static int il_defer_requests;
static int il_builds, il_fail_n, il_rows_at_build, il_synced_at_build;
struct prepop {
    pgsink_table_cb cb;
    void *ud;
    enum pgtype types[8];
    bool resync;
    bool defer;
};

static void run_prep(void *arg)
{
    struct prepop *p = arg;
    char cur[TIME_ISO_MAX];
    int64_t c0 = fake_prep_cursor(p->resync);
    if (c0 != INT64_MIN)
        time_format_iso_ms(c0, cur);
    /* the first prepare of a run creates the table */
    bool created = !table_created;
    table_created = true;
    if (created && p->defer && !p->resync)
        il_flag = true;
    struct pgsink_table_info info = {
        "ds",         p->types,         c0 != INT64_MIN ? cur : NULL, created,
        nstored == 0, ROWENC_ID_SCHEME, !p->resync && il_flag};
    p->cb(p->ud, NULL, &info);
    free(p);
}

/* resync (the operator block at the end of this file resets and reads these) */
static int prep_resync, prep_plain;    /* prepares with and without req->resync */
static int slices_shadow, slices_live; /* slices begun under the shadow key, or not */

void pgsink_prepare_table(struct pgsink *s, const struct pgsink_table_req *req, pgsink_table_cb cb,
                          void *ud)
{
    (void)s;
    if (req->resync)
        prep_resync++;
    else
        prep_plain++;
    struct prepop *p = xcalloc(1, sizeof *p);
    p->resync = req->resync;
    p->defer = req->defer_indexes;
    if (req->defer_indexes)
        il_defer_requests++;
    p->cb = cb;
    p->ud = ud;
    for (size_t i = 0; i < req->ncols && i < 8; i++)
        p->types[i] = req->cols[i].type;
    defer(run_prep, p);
}

void pgsink_state_cycle_start(struct pgsink *s, const char *datasource, pgsink_cb cb, void *ud)
{
    (void)s;
    (void)datasource;
    snprintf(state_status, sizeof state_status, "syncing");
    ok_later(cb, ud);
}

void pgsink_state_cycle_end(struct pgsink *s, const char *datasource, const char *error,
                            const char *cursor, bool interrupted, const char *detection,
                            int id_scheme, pgsink_cb cb, void *ud)
{
    (void)id_scheme;
    (void)s;
    (void)datasource;
    (void)detection;
    snprintf(state_status, sizeof state_status, "%s",
             interrupted ? "interrupted"
             : error     ? "error"
                         : "ok");
    snprintf(state_error, sizeof state_error, "%s", error ? error : "");
    int64_t c;
    if (cursor && time_parse_iso_ms(cursor, &c) == 0 && c > state_cursor)
        state_cursor = c;
    cycle_ends++;
    ok_later(cb, ud);
}

struct beginop {
    pgsink_slice_cb cb;
    void *ud;
    struct pgsink_slice *sl;
};

static void run_begin(void *arg)
{
    struct beginop *b = arg;
    b->cb(b->ud, b->sl, NULL);
    free(b);
}

void pgsink_slice_begin(struct pgsink *s, const char *datasource, int64_t lo, int64_t hi,
                        pgsink_slice_cb cb, void *ud)
{
    (void)s;
    bool shadow = strncmp(datasource, PGSINK_RESYNC_PREFIX, strlen(PGSINK_RESYNC_PREFIX)) == 0;
    if (shadow)
        slices_shadow++;
    else
        slices_live++;
    struct beginop *b = xcalloc(1, sizeof *b);
    b->cb = cb;
    b->ud = ud;
    b->sl = xcalloc(1, sizeof *b->sl);
    b->sl->shadow = shadow;
    b->sl->lo = lo;
    b->sl->hi = hi;
    fence_capture(b->sl);
    open_slices++;
    defer(run_begin, b);
}

bool pgsink_slice_fast(const struct pgsink_slice *sl)
{
    (void)sl;
    return false;
}

int pgsink_slice_write(struct pgsink_slice *sl, const char *data, size_t len)
{
    /* lines "ts\tv\tid\n" */
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            abort(); /* the scheduler hands over whole lines */
        char line[256];
        size_t n = (size_t)(nl - p) < sizeof line - 1 ? (size_t)(nl - p) : sizeof line - 1;
        memcpy(line, p, n);
        line[n] = '\0';
        char *tab = strchr(line, '\t');
        if (!tab)
            abort();
        *tab = '\0';
        struct srow r;
        if (time_parse_iso_ms(line, &r.ts) != 0)
            abort();
        r.v = strtoll(tab + 1, NULL, 10);
        if (sl->n == sl->cap) {
            sl->cap = sl->cap ? sl->cap * 2 : 64;
            sl->rows = realloc(sl->rows, sl->cap * sizeof *sl->rows);
            if (!sl->rows)
                abort();
        }
        sl->rows[sl->n++] = r;
        p = nl + 1;
    }
    return 0;
}

void pgsink_slice_on_drain(struct pgsink_slice *sl, void (*cb)(void *ud), void *ud)
{
    (void)sl;
    (void)cb;
    (void)ud;
}

const struct pgerr *pgsink_slice_last_error(const struct pgsink_slice *sl)
{
    return &sl->err;
}

static void slice_free(struct pgsink_slice *sl)
{
    open_slices--;
    free(sl->chunks);
    free(sl->rows);
    free(sl);
}

static void run_commit(void *arg)
{
    struct pgsink_slice *sl = arg;
    struct pgerr fe;
    if (fence_refuses(sl, &fe)) {
        last_err = fe;
        pgsink_commit_cb cb = sl->cb;
        void *ud = sl->ud;
        slice_free(sl);
        cb(ud, &fe, NULL);
        return;
    }
    if (fail_n > 0) {
        fail_n--;
        last_err = fail_err;
        pgsink_commit_cb cb = sl->cb;
        void *ud = sl->ud;
        slice_free(sl);
        cb(ud, &fail_err, NULL);
        return;
    }
    /* the range's rows become exactly the slice's rows (the merge path's effect) */
    size_t k = 0;
    int64_t vanished = 0;
    for (size_t i = 0; i < nstored; i++) {
        if (stored[i].ts >= sl->lo && stored[i].ts < sl->hi)
            vanished++;
        else
            stored[k++] = stored[i];
    }
    nstored = k;
    for (size_t i = 0; i < sl->n; i++) {
        if (nstored == capstored) {
            capstored = capstored ? capstored * 2 : 256;
            stored = realloc(stored, capstored * sizeof *stored);
            if (!stored)
                abort();
        }
        stored[nstored++] = sl->rows[i];
    }
    ledger_apply(sl->chunks, sl->nchunks);
    int64_t c = INT64_MIN;
    int64_t *cur = sl->shadow ? &shadow_cursor : &state_cursor;
    if (sl->has_cursor && time_parse_iso_ms(sl->cursor, &c) == 0 && c > *cur)
        *cur = c;
    if (commits < 4096)
        commit_cursors[commits] = sl->has_cursor ? c : INT64_MIN;
    commits++;
    struct pgsink_slice_result res = {(int64_t)sl->n, (int64_t)sl->n, vanished, false};
    pgsink_commit_cb cb = sl->cb;
    void *ud = sl->ud;
    slice_free(sl);
    cb(ud, NULL, &res);
}

void pgsink_slice_commit(struct pgsink_slice *sl, const char *cursor, pgsink_commit_cb cb, void *ud)
{
    sl->cb = cb;
    sl->ud = ud;
    sl->has_cursor = cursor != NULL;
    if (cursor)
        snprintf(sl->cursor, sizeof sl->cursor, "%s", cursor);
    if (hold) {
        sl->next_held = held;
        held = sl;
        return;
    }
    defer(run_commit, sl);
}

void pgsink_slice_abort(struct pgsink_slice *sl)
{
    if (sl)
        slice_free(sl);
}

/* Strings of the chunks handed over must outlive the call: keep a copy per slice. */
static struct pgsink_chunk *copy_chunks(const struct pgsink_chunk *c, size_t n)
{
    /* the strings are the scheduler's cycle data, alive until the commit completes
     * (slices commit before their cycle is reset) */
    struct pgsink_chunk *o = xcalloc(n, sizeof *o);
    memcpy(o, c, n * sizeof *c);
    return o;
}

void pgsink_slice_set_replace(struct pgsink_slice *sl, bool replace)
{
    (void)sl;
    (void)replace;
}

void pgsink_slice_chunks(struct pgsink_slice *sl, const struct pgsink_chunk *c, size_t n)
{
    free(sl->chunks);
    sl->chunks = copy_chunks(c, n);
    sl->nchunks = n;
}

void pgsink_chunks_write(struct pgsink *s, const char *datasource, const struct pgsink_chunk *c,
                         size_t n, pgsink_cb cb, void *ud)
{
    (void)s;
    (void)datasource;
    ledger_apply(c, n);
    ok_later(cb, ud);
}

struct readop {
    pgsink_chunks_cb cb;
    void *ud;
};

static int cmp_lrow(const void *a, const void *b)
{
    const struct lrow *x = a, *y = b;
    return x->start_ms < y->start_ms ? -1 : x->start_ms > y->start_ms;
}

static void run_read(void *arg)
{
    struct readop *r = arg;
    qsort(ledger, nledger, sizeof *ledger, cmp_lrow);
    struct pgsink_chunk *c = xcalloc(nledger, sizeof *c);
    for (size_t i = 0; i < nledger; i++)
        c[i] = (struct pgsink_chunk){
            ledger[i].start, ledger[i].end,        ledger[i].start_ms,    ledger[i].end_ms,
            ledger[i].fp,    ledger[i].druid_rows, ledger[i].stored_rows, ledger[i].state,
            ledger[i].since, ledger[i].position,   ledger[i].full_read,   ledger[i].drop_held};
    r->cb(r->ud, NULL, c, nledger);
    free(c);
    free(r);
}

void pgsink_chunks_read(struct pgsink *s, const char *datasource, pgsink_chunks_cb cb, void *ud)
{
    (void)s;
    (void)datasource;
    struct readop *r = xcalloc(1, sizeof *r);
    r->cb = cb;
    r->ud = ud;
    defer(run_read, r);
}

int fake_ledger_rows(void)
{
    return (int)nledger;
}

const char *fake_ledger_state(int64_t start_ms)
{
    for (size_t i = 0; i < nledger; i++)
        if (ledger[i].start_ms == start_ms)
            return ledger[i].state;
    return "";
}

int64_t fake_ledger_stored(int64_t start_ms)
{
    for (size_t i = 0; i < nledger; i++)
        if (ledger[i].start_ms == start_ms)
            return ledger[i].stored_rows;
    return -1;
}

struct bucketop {
    pgsink_buckets_cb cb;
    void *ud;
    int64_t width, lo, hi;
};

static void run_buckets(void *arg)
{
    struct bucketop *o = arg;
    struct pgsink_bucket *b = xcalloc(nstored, sizeof *b);
    double *sums = xcalloc(nstored, sizeof *sums);
    size_t n = 0;
    for (size_t i = 0; i < nstored; i++) {
        if (stored[i].ts < o->lo || stored[i].ts >= o->hi)
            continue;
        int64_t start = floor_to(stored[i].ts, o->width);
        size_t k = 0;
        while (k < n && b[k].start_ms != start)
            k++;
        if (k == n) {
            b[n].start_ms = start;
            b[n].sums = &sums[n];
            n++;
        }
        b[k].n++;
        sums[k] += (double)stored[i].v;
    }
    o->cb(o->ud, NULL, b, n);
    free(sums);
    free(b);
    free(o);
}

void pgsink_buckets(struct pgsink *s, const char *datasource, const size_t *sum_cols, size_t nsum,
                    int64_t width_ms, int64_t lo, int64_t hi, pgsink_buckets_cb cb, void *ud)
{
    (void)s;
    (void)datasource;
    /* the fake table has one summable column: v (request column 1) */
    if (nsum != 1 || sum_cols[0] != 1)
        abort();
    struct bucketop *o = xcalloc(1, sizeof *o);
    *o = (struct bucketop){cb, ud, width_ms, lo, hi};
    defer(run_buckets, o);
}

void fake_sink_hold_commits(bool h)
{
    hold = h;
}

int fake_sink_held(void)
{
    int n = 0;
    for (struct pgsink_slice *s = held; s; s = s->next_held)
        n++;
    return n;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int fake_sink_held_list(int64_t *los, int max)
{
    int n = 0;
    for (struct pgsink_slice *s = held; s && n < max; s = s->next_held)
        los[n++] = s->lo;
    qsort(los, (size_t)n, sizeof *los, cmp_i64);
    return n;
}

int fake_sink_release(int64_t lo)
{
    for (struct pgsink_slice **pp = &held; *pp; pp = &(*pp)->next_held) {
        if ((*pp)->lo == lo) {
            struct pgsink_slice *sl = *pp;
            *pp = sl->next_held;
            defer(run_commit, sl);
            return 0;
        }
    }
    return -1;
}

void fake_sink_fail_commits(const char *sqlstate, bool conn_lost, int n)
{
    pgerr_set(&fail_err, sqlstate, conn_lost, "fake failure");
    fail_n = n;
}

size_t fake_sink_rows(void)
{
    return nstored;
}

int fake_sink_copies(int64_t ts_ms, int64_t v)
{
    int n = 0;
    for (size_t i = 0; i < nstored; i++)
        n += stored[i].ts == ts_ms && stored[i].v == v;
    return n;
}

int fake_sink_commits(void)
{
    return commits;
}

int64_t fake_sink_commit_cursor(int k)
{
    return k < commits && k < 4096 ? commit_cursors[k] : INT64_MIN;
}

const char *fake_sink_status(void)
{
    return state_status;
}

int64_t fake_sink_cursor(void)
{
    return state_cursor;
}

const char *fake_sink_last_error(void)
{
    return state_error;
}

int fake_sink_cycle_ends(void)
{
    return cycle_ends;
}

int fake_sink_open_slices(void)
{
    return open_slices;
}

void fake_reset(void)
{
    while (ops_head) {
        struct op *o = ops_head;
        ops_head = o->next;
        free(o);
    }
    ops_tail = NULL;
    now_ms = 0;
    ntimers = 0;
    free(rows);
    rows = NULL;
    nrows = caprows = 0;
    nfaults = 0;
    before_count = NULL;
    queries_done = 0;
    for (int i = 0; i < nlog; i++)
        free(queries_log[i]);
    nlog = 0;
    pending_q = NULL;
    free(stored);
    stored = NULL;
    nstored = capstored = 0;
    state_status[0] = '\0';
    state_cursor = shadow_cursor = INT64_MIN;
    state_error[0] = '\0';
    cycle_ends = commits = 0;
    hold = false;
    held = NULL;
    fail_n = 0;
    memset(&last_err, 0, sizeof last_err);
    open_slices = 0;
    table_created = false;
    il_flag = false;
    il_defer_requests = il_builds = il_fail_n = 0;
    il_rows_at_build = il_synced_at_build = -1;
    nledger = 0;
    seg_on = seg_unknown = false;
    nunavailable = 0;
    nrealtime = 0;
    last_slice_lo = INT64_MIN;
    fake_lease_reset();
}

/* ---- operator requests (sinks/pgctl.h) ---- */
/* Its own block, with its own reset (fake_ctl_reset): the pause flag the operator commands
 * set, the reads of it, and read failures on request. The test file declares these. */
#include "pgctl.h"

static bool ctl_paused;
static int ctl_reads, ctl_fail_n;
/* resync: the request (text, "" none), the request the rebuild serves, swaps done and
 * swaps to fail */
static char ctl_resync[64], ctl_resync_for[64];
static int swaps, swap_fail_n;

void fake_ctl_reset(void);
void fake_ctl_pause(bool paused);
int fake_ctl_reads(void);
void fake_ctl_fail_reads(int n);
void fake_ctl_resync(const char *requested);
const char *fake_ctl_resync_pending(void);
int fake_ctl_swaps(void);
void fake_ctl_fail_swaps(int n);
int fake_prepares(bool resync);
int fake_slices_begun(bool shadow);

void fake_ctl_reset(void)
{
    ctl_paused = false;
    ctl_reads = ctl_fail_n = 0;
    ctl_resync[0] = ctl_resync_for[0] = '\0';
    swaps = swap_fail_n = 0;
    prep_resync = prep_plain = slices_shadow = slices_live = 0;
}

void fake_ctl_resync(const char *requested)
{
    snprintf(ctl_resync, sizeof ctl_resync, "%s", requested ? requested : "");
}

const char *fake_ctl_resync_pending(void)
{
    return ctl_resync;
}

int fake_ctl_swaps(void)
{
    return swaps;
}

void fake_ctl_fail_swaps(int n)
{
    swap_fail_n = n;
}

int fake_prepares(bool resync)
{
    return resync ? prep_resync : prep_plain;
}

int fake_slices_begun(bool shadow)
{
    return shadow ? slices_shadow : slices_live;
}

struct swapop {
    pgsink_cb cb;
    void *ud;
};

static void run_swap(void *arg)
{
    struct swapop *w = arg;
    if (swap_fail_n > 0) {
        swap_fail_n--;
        pgerr_set(&last_err, "55P03", false, "canceling statement due to lock timeout");
        w->cb(w->ud, "canceling statement due to lock timeout");
    } else {
        swaps++;
        state_cursor = shadow_cursor; /* the live row takes the rebuild's cursor */
        shadow_cursor = INT64_MIN;
        /* cleared only when it is still the request the rebuild served */
        if (strcmp(ctl_resync, ctl_resync_for) == 0)
            ctl_resync[0] = '\0';
        ctl_resync_for[0] = '\0';
        w->cb(w->ud, NULL);
    }
    free(w);
}

char *pgsink_resync_key(const char *datasource)
{
    char *k = xcalloc(1, strlen(PGSINK_RESYNC_PREFIX) + strlen(datasource) + 1);
    strcpy(k, PGSINK_RESYNC_PREFIX);
    strcat(k, datasource);
    return k;
}

void pgsink_resync_swap(struct pgsink *s, const char *datasource, int id_scheme, pgsink_cb cb,
                        void *ud)
{
    (void)s;
    (void)datasource;
    (void)id_scheme;
    struct swapop *w = xcalloc(1, sizeof *w);
    w->cb = cb;
    w->ud = ud;
    defer(run_swap, w);
}

void fake_ctl_pause(bool paused)
{
    ctl_paused = paused;
}

int fake_ctl_reads(void)
{
    return ctl_reads;
}

void fake_ctl_fail_reads(int n)
{
    ctl_fail_n = n;
}

struct ctlop {
    pgctl_cb cb;
    void *ud;
};

static void run_ctl(void *arg)
{
    struct ctlop *c = arg;
    ctl_reads++;
    if (ctl_fail_n > 0) {
        ctl_fail_n--;
        pgerr_set(&last_err, "", true, "server closed the connection unexpectedly");
        c->cb(c->ud, "server closed the connection unexpectedly", NULL);
    } else {
        /* the first resync prepare records the request it serves (pgschema.c) */
        if (ctl_resync[0] && !ctl_resync_for[0] && !ctl_paused)
            snprintf(ctl_resync_for, sizeof ctl_resync_for, "%s", ctl_resync);
        struct pgctl_requests q = {true, ctl_paused, ctl_resync[0] ? ctl_resync : NULL,
                                   ctl_resync_for[0] ? ctl_resync_for : NULL};
        c->cb(c->ud, NULL, &q);
    }
    free(c);
}

void pgsink_ctl_read(struct pgsink *s, const char *datasource, pgctl_cb cb, void *ud)
{
    (void)s;
    (void)datasource;
    struct ctlop *c = xcalloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    defer(run_ctl, c);
}

static int64_t fake_prep_cursor(bool resync)
{
    return resync ? shadow_cursor : state_cursor;
}

/* ---- the first load without indexes: the flag, the builds (with the rows and synced
 * ledger chunks there were when each ran), builds to fail ---- */
void fake_il_reset(void);
bool fake_il_flag(void);
int fake_il_builds(void);
int fake_il_defer_requests(void);
int fake_il_rows_at_build(void);
int fake_il_synced_at_build(void);
void fake_il_fail_builds(int n);

void fake_il_reset(void)
{
    il_flag = false;
    il_defer_requests = il_builds = il_fail_n = 0;
    il_rows_at_build = il_synced_at_build = -1;
}

bool fake_il_flag(void)
{
    return il_flag;
}

int fake_il_builds(void)
{
    return il_builds;
}

int fake_il_defer_requests(void)
{
    return il_defer_requests;
}

int fake_il_rows_at_build(void)
{
    return il_rows_at_build;
}

int fake_il_synced_at_build(void)
{
    return il_synced_at_build;
}

void fake_il_fail_builds(int n)
{
    il_fail_n = n;
}

bool pgsink_initial_load(const struct pgsink *s, const char *datasource)
{
    (void)s;
    return il_flag && strncmp(datasource, PGSINK_RESYNC_PREFIX, strlen(PGSINK_RESYNC_PREFIX)) != 0;
}

struct ilop {
    pgsink_cb cb;
    void *ud;
};

static void run_il(void *arg)
{
    struct ilop *o = arg;
    if (il_fail_n > 0) {
        il_fail_n--;
        pgerr_set(&last_err, "23505", false, "could not create unique index");
        o->cb(o->ud, "could not create unique index");
    } else {
        il_builds++;
        il_flag = false;
        il_rows_at_build = fake_sink_rows();
        il_synced_at_build = 0;
        for (size_t i = 0; i < nledger; i++)
            il_synced_at_build += strcmp(ledger[i].state, "synced") == 0;
        o->cb(o->ud, NULL);
    }
    free(o);
}

int64_t pgsink_initial_load_newest(const struct pgsink *s, const char *datasource)
{
    (void)s;
    (void)datasource;
    if (il_builds == 0)
        return INT64_MIN;
    int64_t m = INT64_MIN;
    for (size_t i = 0; i < nstored; i++)
        if (stored[i].ts > m)
            m = stored[i].ts;
    return m;
}

void pgsink_finish_initial_load(struct pgsink *s, const char *datasource, pgsink_cb cb, void *ud)
{
    (void)s;
    if (!pgsink_initial_load(s, datasource)) {
        cb(ud, NULL);
        return;
    }
    struct ilop *o = xcalloc(1, sizeof *o);
    o->cb = cb;
    o->ud = ud;
    defer(run_il, o);
}

/* ---- leases (sinks/pglease.h) ---- */
/* Its own block and reset (fake_lease_reset): a lease table in memory with the SQL's rules
 * (virtual time), other instances taking units on request, the fence checked at every slice
 * commit, failures on request. The test file declares these. */
#include "pglease.h"

struct flease {
    char unit[160], owner[160];
    int64_t epoch;
    int64_t expires; /* virtual ms; INT64_MIN: released / never held */
    int64_t free_since;
    bool dirty; /* chunk units: a commit left rows of an unfinished read */
};
#define FL_MAX 512
static struct flease fl[FL_MAX];
static int nfl;
static int fl_min_held;
static int fl_live = 1, fl_fail_n, fl_claims, fl_renewals, fl_releases, fl_refused;
static struct {
    char unit[160], owner[160];
    int64_t epoch;
    bool set;
} ffence;

void fake_lease_reset(void);
static void fake_chunk_reset(void);
void fake_lease_take(const char *unit, const char *owner, double seconds);
const char *fake_lease_owner(const char *unit);
int64_t fake_lease_epoch(const char *unit);
void fake_lease_live(int n);
void fake_lease_fail(int n);
int fake_lease_claims(void);
int fake_lease_renewals(void);
int fake_lease_releases(void);
int fake_lease_refused(void);

void fake_lease_reset(void)
{
    nfl = 0;
    fl_live = 1;
    fl_min_held = 0;
    fl_fail_n = fl_claims = fl_renewals = fl_releases = fl_refused = 0;
    memset(&ffence, 0, sizeof ffence);
    fake_chunk_reset();
}

static struct flease *fl_row(const char *unit, bool create)
{
    for (int i = 0; i < nfl; i++)
        if (strcmp(fl[i].unit, unit) == 0)
            return &fl[i];
    if (!create || nfl == FL_MAX)
        return NULL;
    struct flease *l = &fl[nfl++];
    memset(l, 0, sizeof *l);
    snprintf(l->unit, sizeof l->unit, "%s", unit);
    l->expires = INT64_MIN;
    l->free_since = (int64_t)now_ms;
    return l;
}

static bool fl_alive(const struct flease *l)
{
    return l->owner[0] && l->expires != INT64_MIN && l->expires > (int64_t)now_ms;
}

void fake_lease_take(const char *unit, const char *owner, double seconds)
{
    struct flease *l = fl_row(unit, true);
    snprintf(l->owner, sizeof l->owner, "%s", owner);
    l->epoch++;
    l->expires = (int64_t)now_ms + (int64_t)(seconds * 1000.0);
}

const char *fake_lease_owner(const char *unit)
{
    struct flease *l = fl_row(unit, false);
    return l && fl_alive(l) ? l->owner : "";
}

int64_t fake_lease_epoch(const char *unit)
{
    struct flease *l = fl_row(unit, false);
    return l ? l->epoch : -1;
}

void fake_lease_live(int n)
{
    fl_live = n;
}
void fake_lease_fail(int n)
{
    fl_fail_n = n;
}
int fake_lease_claims(void)
{
    return fl_claims;
}
int fake_lease_renewals(void)
{
    return fl_renewals;
}
int fake_lease_releases(void)
{
    return fl_releases;
}
int fake_lease_refused(void)
{
    return fl_refused;
}

static bool fl_failing(void)
{
    if (fl_fail_n <= 0)
        return false;
    fl_fail_n--;
    pgerr_set(&last_err, "", true, "server closed the connection unexpectedly");
    return true;
}

struct flclaim {
    struct pglease_claim_req rq;
    char unit[160], owner[160];
    pglease_claim_cb cb;
    void *ud;
};

static void run_claim(void *arg)
{
    struct flclaim *x = arg;
    fl_claims++;
    if (fl_failing()) {
        x->cb(x->ud, "server closed the connection unexpectedly", NULL);
        free(x);
        return;
    }
    struct flease *l = fl_row(x->unit, true);
    int64_t now = (int64_t)now_ms;
    bool mine = strcmp(l->owner, x->owner) == 0;
    bool freed = !fl_alive(l);
    int64_t since = l->expires != INT64_MIN ? l->expires : l->free_since;
    struct pglease_claim c = {0};
    char expires[32];
    if (mine || (freed && since <= now - (int64_t)(x->rq.min_free_seconds * 1000.0))) {
        if (!(mine && fl_alive(l) && l->epoch == x->rq.held_epoch))
            l->epoch++;
        snprintf(l->owner, sizeof l->owner, "%s", x->owner);
        l->expires = now + (int64_t)(x->rq.ttl * 1000.0);
        c.granted = true;
        c.epoch = l->epoch;
        c.seconds_left = x->rq.ttl;
    } else {
        c.holder = freed ? "nobody" : l->owner;
        c.seconds_left = freed ? 0 : (double)(l->expires - now) / 1000.0;
        c.first_load = il_flag;
    }
    snprintf(expires, sizeof expires, "T+%" PRId64, l->expires);
    c.expires_at = expires;
    x->cb(x->ud, NULL, &c);
    free(x);
}

void pgsink_lease_claim(struct pgsink *s, const struct pglease_claim_req *rq, pglease_claim_cb cb,
                        void *ud)
{
    (void)s;
    struct flclaim *x = xcalloc(1, sizeof *x);
    x->rq = *rq;
    snprintf(x->unit, sizeof x->unit, "%s", rq->unit);
    snprintf(x->owner, sizeof x->owner, "%s", rq->owner);
    x->cb = cb;
    x->ud = ud;
    defer(run_claim, x);
}

struct flrenew {
    char owner[160];
    char units[FL_MAX][160];
    int64_t epochs[FL_MAX];
    size_t n;
    double ttl;
    pglease_renew_cb cb;
    void *ud;
};

static void run_renew(void *arg)
{
    struct flrenew *x = arg;
    fl_renewals++;
    if (fl_failing()) {
        x->cb(x->ud, "server closed the connection unexpectedly", NULL, 0, NULL);
        free(x);
        return;
    }
    bool held[FL_MAX] = {false};
    for (size_t i = 0; i < x->n; i++) {
        struct flease *l = fl_row(x->units[i], false);
        if (l && fl_alive(l) && strcmp(l->owner, x->owner) == 0 && l->epoch == x->epochs[i]) {
            l->expires = (int64_t)now_ms + (int64_t)(x->ttl * 1000.0);
            held[i] = true;
        }
    }
    struct pglease_census c = {fl_live, fl_min_held};
    x->cb(x->ud, NULL, held, x->n, &c);
    free(x);
}

void pgsink_lease_renew(struct pgsink *s, const char *owner, const char *const *units,
                        const int64_t *epochs, size_t n, double ttl, pglease_renew_cb cb, void *ud)
{
    (void)s;
    struct flrenew *x = xcalloc(1, sizeof *x);
    snprintf(x->owner, sizeof x->owner, "%s", owner);
    for (size_t i = 0; i < n && i < FL_MAX; i++) {
        snprintf(x->units[i], sizeof x->units[i], "%s", units[i]);
        x->epochs[i] = epochs[i];
    }
    x->n = n < FL_MAX ? n : FL_MAX;
    x->ttl = ttl;
    x->cb = cb;
    x->ud = ud;
    defer(run_renew, x);
}

void pgsink_lease_end_stale(struct pgsink *s, double ttl)
{
    (void)s;
    (void)ttl;
}

void pgsink_lease_release(struct pgsink *s, const char *owner, const char *const *units, size_t n,
                          pgsink_cb cb, void *ud)
{
    (void)s;
    fl_releases++;
    for (size_t i = 0; i < n; i++) {
        struct flease *l = fl_row(units[i], false);
        if (l && strcmp(l->owner, owner) == 0) {
            l->owner[0] = '\0';
            l->expires = INT64_MIN;
            l->free_since = (int64_t)now_ms;
        }
    }
    ok_later(cb, ud);
}

const struct pgerr *pgsink_lease_last_error(const struct pgsink *s)
{
    (void)s;
    return &last_err;
}

void pgsink_fence_set(struct pgsink *s, const char *datasource, const char *unit, const char *owner,
                      int64_t epoch)
{
    (void)s;
    (void)datasource; /* one datasource in this world */
    ffence.set = unit != NULL;
    if (unit) {
        snprintf(ffence.unit, sizeof ffence.unit, "%s", unit);
        snprintf(ffence.owner, sizeof ffence.owner, "%s", owner);
        ffence.epoch = epoch;
    }
}

bool pglease_lost(const struct pgerr *e)
{
    return e && strcmp(e->sqlstate, PGLEASE_SQLSTATE) == 0;
}

static void fence_capture(struct pgsink_slice *sl)
{
    sl->fenced = ffence.set;
    snprintf(sl->fence_unit, sizeof sl->fence_unit, "%s", ffence.unit);
    snprintf(sl->fence_owner, sizeof sl->fence_owner, "%s", ffence.owner);
    sl->fence_epoch = ffence.epoch;
}

static bool fence_refuses_ds(struct pgsink_slice *sl, struct pgerr *e);

static bool fence_refuses(struct pgsink_slice *sl, struct pgerr *e)
{
    if (fence_refuses_ds(sl, e))
        return true; /* the holder's slices carry its datasource's fence too */
    if (sl->ncunits) {
        char owner[160];
        snprintf(owner, sizeof owner, "%s", sl->chunk_owner);
        for (size_t i = 0; i < sl->ncunits; i++) {
            struct flease *l = fl_row(sl->cunits[i], false);
            if (!(l && fl_alive(l) && strcmp(l->owner, owner) == 0 && l->epoch == sl->cepochs[i])) {
                fl_refused++;
                char m[300];
                snprintf(m, sizeof m, "lease of %s lost (fake fence)", sl->cunits[i]);
                pgerr_set(e, PGLEASE_SQLSTATE, false, m);
                return true;
            }
        }
        for (size_t i = 0; i < sl->ncunits; i++)
            fl_row(sl->cunits[i], false)->dirty = !sl->cclean[i];
    }
    return false;
}

static bool fence_refuses_ds(struct pgsink_slice *sl, struct pgerr *e)
{
    if (!sl->fenced)
        return false;
    struct flease *l = fl_row(sl->fence_unit, false);
    if (l && fl_alive(l) && strcmp(l->owner, sl->fence_owner) == 0 && l->epoch == sl->fence_epoch)
        return false;
    fl_refused++;
    pgerr_set(e, PGLEASE_SQLSTATE, false, "lease lost (fake fence)");
    return true;
}

/* ---- chunk units ---- */
static int fl_chunk_claims, fl_clears;
static char other_reads[16][160]; /* units another instance reads before the next claim */
static int nother_reads;
void fake_il_set(bool on);
void fake_other_reads(const char *unit);

void fake_il_set(bool on)
{
    il_flag = on;
    table_created = on; /* its first load began elsewhere */
}

void fake_other_reads(const char *unit)
{
    snprintf(other_reads[nother_reads++], sizeof other_reads[0], "%s", unit);
}

static void fake_chunk_reset(void)
{
    fl_chunk_claims = fl_clears = nother_reads = 0;
}

/* Another instance read [lo, hi) and recorded it (fingerprint fp) before this claim: the
 * range's rows are Druid's, its ledger row synced. */
static void other_read(int64_t lo, int64_t hi, const char *fp)
{
    size_t k = 0;
    for (size_t i = 0; i < nstored; i++)
        if (!(stored[i].ts >= lo && stored[i].ts < hi))
            stored[k++] = stored[i];
    nstored = k;
    int64_t n = 0;
    for (size_t i = 0; i < nrows; i++) {
        if (rows[i].ts < lo || rows[i].ts >= hi)
            continue;
        if (nstored == capstored) {
            capstored = capstored ? capstored * 2 : 256;
            stored = realloc(stored, capstored * sizeof *stored);
            if (!stored)
                abort();
        }
        stored[nstored++] = (struct srow){rows[i].ts, rows[i].v};
        n++;
    }
    struct pgsink_chunk c = {"", "", lo, hi, fp, n, n, "synced", 0, INT64_MIN, 0, false};
    ledger_apply(&c, 1);
}
int fake_chunk_claims(void);
int fake_slice_clears(void);
bool fake_lease_dirty(const char *unit);
void fake_lease_set_dirty(const char *unit, bool dirty);
int fake_chunk_units_held(const char *owner);

int fake_chunk_claims(void)
{
    return fl_chunk_claims;
}
int fake_slice_clears(void)
{
    return fl_clears;
}
bool fake_lease_dirty(const char *unit)
{
    struct flease *l = fl_row(unit, false);
    return l && l->dirty;
}
void fake_lease_set_dirty(const char *unit, bool dirty)
{
    fl_row(unit, true)->dirty = dirty;
}
int fake_chunk_units_held(const char *owner)
{
    int n = 0;
    for (int i = 0; i < nfl; i++)
        n += strncmp(fl[i].unit, PGLEASE_CHUNK_PREFIX, strlen(PGLEASE_CHUNK_PREFIX)) == 0 &&
             fl_alive(&fl[i]) && strcmp(fl[i].owner, owner) == 0;
    return n;
}

struct flchunk {
    char owner[160];
    double ttl;
    size_t n;
    char units[16][160];
    int64_t lo[16], hi[16];
    char fp[16][64];
    bool check_done;
    pglease_chunk_cb cb;
    void *ud;
};

static void run_chunk_claim(void *arg)
{
    struct flchunk *x = arg;
    fl_chunk_claims++;
    if (fl_failing()) {
        x->cb(x->ud, "server closed the connection unexpectedly", NULL, 0);
        free(x);
        return;
    }
    struct pglease_chunk_got got[16];
    memset(got, 0, sizeof got);
    int64_t now = (int64_t)now_ms;
    for (size_t i = 0; i < x->n; i++) {
        struct flease *l = fl_row(x->units[i], true);
        for (int k = 0; k < nother_reads; k++)
            if (strcmp(other_reads[k], x->units[i]) == 0 && !fl_alive(l)) {
                other_read(x->lo[i], x->hi[i], x->fp[i]);
                other_reads[k][0] = '\0';
            }
        if (strcmp(l->owner, x->owner) == 0 || !fl_alive(l)) {
            l->epoch++;
            snprintf(l->owner, sizeof l->owner, "%s", x->owner);
            l->expires = now + (int64_t)(x->ttl * 1000.0);
            got[i].granted = true;
            got[i].epoch = l->epoch;
            got[i].dirty = l->dirty;
            for (size_t j = 0; x->check_done && j < nledger; j++)
                if (ledger[j].start_ms == x->lo[i] && ledger[j].end_ms == x->hi[i] &&
                    strcmp(ledger[j].fp, x->fp[i]) == 0 &&
                    (strcmp(ledger[j].state, "synced") == 0 ||
                     strcmp(ledger[j].state, "pending") == 0))
                    got[i].done = true;
        } else {
            got[i].holder = l->owner;
        }
    }
    x->cb(x->ud, NULL, got, x->n);
    free(x);
}

void pgsink_chunk_claim(struct pgsink *s, const struct pglease_chunk_req *rq, pglease_chunk_cb cb,
                        void *ud)
{
    (void)s;
    struct flchunk *x = xcalloc(1, sizeof *x);
    if (rq->n > 16)
        abort(); /* the tests' slices read a few chunks each */
    snprintf(x->owner, sizeof x->owner, "%s", rq->owner);
    x->ttl = rq->ttl;
    x->n = rq->n;
    x->check_done = rq->check_done;
    for (size_t i = 0; i < rq->n; i++) {
        snprintf(x->units[i], sizeof x->units[i], "%s", rq->units[i]);
        x->lo[i] = rq->lo[i];
        x->hi[i] = rq->hi[i];
        snprintf(x->fp[i], sizeof x->fp[i], "%s", rq->fingerprint[i] ? rq->fingerprint[i] : "");
    }
    x->cb = cb;
    x->ud = ud;
    defer(run_chunk_claim, x);
}

void pgsink_slice_fence_chunks(struct pgsink_slice *sl, const struct pglease_units *f,
                               const bool *clean)
{
    if (f->n > 16)
        abort();
    sl->ncunits = f->n;
    snprintf(sl->chunk_owner, sizeof sl->chunk_owner, "%s", f->owner);
    for (size_t i = 0; i < f->n; i++) {
        snprintf(sl->cunits[i], sizeof sl->cunits[i], "%s", f->units[i]);
        sl->cepochs[i] = f->epochs[i];
        sl->cclean[i] = clean[i];
    }
}

void pgsink_slice_clear_range(struct pgsink_slice *sl)
{
    sl->clear = true;
    fl_clears++;
}

void pgsink_chunks_write_fenced(struct pgsink *s, const char *datasource,
                                const struct pgsink_chunk *c, size_t n,
                                const struct pglease_units *f, pgsink_cb cb, void *ud)
{
    (void)s;
    (void)datasource;
    for (size_t i = 0; i < f->n; i++) {
        struct flease *l = fl_row(f->units[i], false);
        if (!(l && fl_alive(l) && strcmp(l->owner, f->owner) == 0 && l->epoch == f->epochs[i])) {
            fl_refused++;
            char m[300];
            snprintf(m, sizeof m, "lease of %s lost (fake fence)", f->units[i]);
            pgerr_set(&last_err, PGLEASE_SQLSTATE, false, m);
            struct cbop *o = xcalloc(1, sizeof *o);
            o->cb = cb;
            o->ud = ud;
            defer(run_cbfail, o);
            return;
        }
    }
    for (size_t i = 0; i < f->n; i++)
        fl_row(f->units[i], false)->dirty = false;
    ledger_apply(c, n);
    ok_later(cb, ud);
}
