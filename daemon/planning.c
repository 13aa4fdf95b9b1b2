/* planning: count queries to slices. See planning.h. */
#include "planning.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "cycle.h"
#include "druidsql.h"
#include "log.h"
#include "retry.h"
#include "segments.h"
#include "timeutil.h"

/* One count query of the plan: the first (per day from the start) or a refinement of a
 * bucket that holds too many rows. Its buckets are kept until the answer is complete, so a
 * query that fails half-way and is retried counts its rows once. */
struct countq {
    struct dsync *d;
    struct countq *next, *prev;
    struct plan *plan; /* the plan it answers: d->plan, or a chunk's d->plans[item] */
    size_t item;       /* the chunk work item (segments mode), SIZE_MAX none */
    bool refine;
    struct plan_bucket parent; /* the bucket refined, when refine */
    enum plan_level level;
    int64_t lo, hi;
    int attempts;
    struct druid_query *q;
    struct plan_bucket *got;
    size_t ngot, capgot;
    int64_t newest_ms;
};

static void submit_count(struct dsync *d, struct countq *cq);
static void ledger_plan_done(struct dsync *d);

static void countq_free(struct countq *cq)
{
    free(cq->got);
    free(cq);
}

static int count_on_row(void *ud, struct json_object *row)
{
    struct countq *cq = ud;
    sched_touch(cq->d->s);
    struct json_object *b = json_object_array_get_idx(row, 0);
    struct json_object *n = json_object_array_get_idx(row, 1);
    struct plan_bucket pb = {0, 0, cq->level};
    if (!b || !n || !json_object_is_type(b, json_type_string) ||
        time_parse_iso_ms(json_object_get_string(b), &pb.start_ms) != 0)
        return -1;
    pb.count = json_object_get_int64(n);
    struct json_object *mx = json_object_array_get_idx(row, 2);
    int64_t mxms;
    if (mx && json_object_is_type(mx, json_type_string) &&
        time_parse_iso_ms(json_object_get_string(mx), &mxms) == 0 && mxms > cq->newest_ms)
        cq->newest_ms = mxms;
    if (cq->ngot == cq->capgot) {
        cq->capgot = cq->capgot ? cq->capgot * 2 : 32;
        cq->got = realloc(cq->got, cq->capgot * sizeof *cq->got);
        if (!cq->got)
            abort();
    }
    cq->got[cq->ngot++] = pb;
    return 0;
}

static void count_retry(struct dsync *d, void *arg)
{
    struct countq *cq = arg;
    if (d->failed || d->s->stopping) {
        countq_free(cq);
        cycle_maybe_finish(d);
        return;
    }
    submit_count(d, cq);
}

static void count_drop(struct dsync *d, void *arg)
{
    (void)d;
    countq_free(arg);
}

static void plan_done(struct dsync *d)
{
    struct plan_slice *sl = NULL;
    size_t n = 0;
    if (plan_slices(d->plan, &sl, &n) != 0) {
        cycle_fail(d, "slice planning failed");
        return;
    }
    log_debug("sched", "%s: %zu slices planned", d->name, n);
    struct ledger_slice *ls = sched_xcalloc(n, sizeof *ls);
    for (size_t i = 0; i < n; i++) {
        ls[i].r = sl[i];
        ls[i].w0 = ls[i].w1 = SIZE_MAX;
    }
    free(sl);
    cycle_planned(d, ls, n);
}

static void take_refinements(struct dsync *d, struct plan *plan, size_t item)
{
    struct plan_bucket b;
    while (plan_take_refinement(plan, &b) == 1) {
        struct countq *cq = sched_xcalloc(1, sizeof *cq);
        cq->plan = plan;
        cq->item = item;
        cq->refine = true;
        cq->parent = b;
        cq->level = (enum plan_level)(b.level + 1);
        cq->lo = b.start_ms;
        cq->hi = b.start_ms + plan_level_width_ms(b.level);
        if (item != SIZE_MAX) {
            /* inside a chunk: never count beyond it (an HOUR chunk's day holds others) */
            if (cq->lo < d->work[item].lo)
                cq->lo = d->work[item].lo;
            if (cq->hi > d->work[item].hi)
                cq->hi = d->work[item].hi;
        }
        submit_count(d, cq);
    }
}

static void count_on_done(void *ud, const struct druid_error *e)
{
    struct countq *cq = ud;
    struct dsync *d = cq->d;
    struct sched *s = d->s;
    sched_touch(s);
    cq->q = NULL;
    LIST_DEL(d->counts, cq);
    d->outstanding--;
    if (e->kind != DRUID_OK) {
        bool auth = false;
        double delay = retry_druid(s->cfg, e, ++cq->attempts, false, &auth);
        if (auth) {
            sched_block_on_auth(s, e->http_status, druid_error_reason(e));
            sched_set_last_error(s, "Druid HTTP %ld: %s", e->http_status, druid_error_reason(e));
        }
        if (delay >= 0 && s->stopping) {
            countq_free(cq); /* planning stays unfinished: the cycle is interrupted */
            cycle_maybe_finish(d);
            return;
        }
        if (delay >= 0 && !d->failed) {
            s->counters.retries[e->kind]++;
            log_event(LOG_LVL_WARNING, "druid",
                      LOG_FIELDS(.datasource = d->name, .error_kind = druid_err_kind_name(e->kind),
                                 .druid_code = e->code[0] ? e->code : NULL,
                                 .http_status = e->http_status),
                      "%s: counting rows failed (%s: %s); retry %d in %.1f s", d->name,
                      druid_err_kind_name(e->kind), e->message, cq->attempts, delay);
            cq->ngot = 0; /* the retry answers again from scratch */
            cq->newest_ms = INT64_MIN;
            cycle_call_later(d, delay, count_retry, count_drop, cq);
            return;
        }
        countq_free(cq);
        s->counters.errors[e->kind]++;
        cycle_fail(d, "counting rows failed: %s", e->message);
        return;
    }
    struct plan *plan = cq->plan;
    size_t item = cq->item;
    int rc = cq->refine ? plan_refined(plan, &cq->parent, cq->got, cq->ngot)
                        : plan_add(plan, cq->got, cq->ngot);
    if (cq->newest_ms > d->druid_newest_ms)
        d->druid_newest_ms = cq->newest_ms;
    countq_free(cq);
    if (rc != 0) {
        cycle_fail(d, "slice planning failed: a count answer fits no bucket of the plan");
        return;
    }
    if (d->failed || s->stopping) {
        cycle_maybe_finish(d);
        return;
    }
    take_refinements(d, plan, item);
    if (!d->counts && !d->delays && d->st == DS_PLANNING) {
        if (d->ledger_mode)
            ledger_plan_done(d);
        else
            plan_done(d);
    }
}

static void submit_count(struct dsync *d, struct countq *cq)
{
    static const struct druid_query_ops ops = {NULL, count_on_row, count_on_done};
    struct buf b = BUF_INIT;
    struct druid_param p[DRUIDSQL_MAX_PARAMS];
    size_t np = 0;
    druidsql_count(&b, p, &np, d->name, d->slice_col, plan_level_period(cq->level), cq->lo, cq->hi);
    cq->d = d;
    cq->newest_ms = INT64_MIN;
    LIST_PUSH(d->counts, cq);
    d->outstanding++;
    cq->q = druid_query_submit(d->s->druid, b.data, p, np, &ops, cq);
    buf_free(&b);
    if (!cq->q)
        abort();
}

/* Today's planning: counts per day from the cursor (or the start), refined. */
static void plan_by_counts(struct dsync *d)
{
    if (!d->slice_col) {
        /* nothing to slice by: the whole datasource is one slice */
        d->plan = plan_new(d->s->cfg->batch_size, PLAN_UNBOUNDED_LO);
        if (!d->plan)
            abort();
        plan_done(d);
        return;
    }
    d->plan = plan_new(d->s->cfg->batch_size, d->start_ms);
    if (!d->plan)
        abort();
    struct countq *cq = sched_xcalloc(1, sizeof *cq);
    cq->plan = d->plan;
    cq->item = SIZE_MAX;
    cq->level = PLAN_DAY;
    cq->lo = d->start_ms;
    cq->hi = PLAN_UNBOUNDED_HI;
    submit_count(d, cq);
}

/* ---- segments mode ---- */

static int cmp_work_range(const void *a, const void *b)
{
    const struct ledger_work *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int cmp_slice(const void *a, const void *b)
{
    const struct ledger_slice *x = a, *y = b;
    return x->r.lo < y->r.lo ? -1 : x->r.lo > y->r.lo;
}

/* Every count is in: chunks small enough are packed (adjacent ones together, up to
 * batch_size rows), counted ones are cut by their plan. */
static void ledger_plan_done(struct dsync *d)
{
    long batch = d->s->cfg->batch_size;
    struct ledger_slice *sl = sched_xcalloc(d->nwork * 2 + 1, sizeof *sl);
    size_t n = 0, cap = d->nwork * 2 + 1;
    bool open = false; /* sl[n-1] is a packed group that may grow */
    for (size_t i = 0; i < d->nwork; i++) {
        const struct ledger_work *w = &d->work[i];
        bool reads =
            w->action == LEDGER_READ || (w->action == LEDGER_DROP && d->s->cfg->follow_drops);
        if (!reads) {
            open = false;
            continue;
        }
        if (d->plans[i]) {
            struct plan_slice *ps = NULL;
            size_t np = 0;
            if (plan_slices(d->plans[i], &ps, &np) != 0) {
                free(sl);
                cycle_fail(d, "slice planning failed");
                return;
            }
            if (n + np > cap) {
                cap = (n + np) * 2;
                sl = realloc(sl, cap * sizeof *sl);
                if (!sl)
                    abort();
            }
            for (size_t k = 0; k < np; k++) {
                struct ledger_slice x;
                memset(&x, 0, sizeof x);
                x.r = ps[k];
                if (k == 0)
                    x.r.lo = w->lo;
                if (k + 1 == np)
                    x.r.hi = w->hi;
                x.w0 = x.w1 = i;
                x.max_seen = INT64_MIN;
                sl[n++] = x;
            }
            free(ps);
            open = false;
            continue;
        }
        int64_t rows = w->action == LEDGER_DROP ? 0 : w->rows;
        if (open && sl[n - 1].r.hi == w->lo && sl[n - 1].r.est_rows + rows <= batch) {
            sl[n - 1].r.hi = w->hi;
            sl[n - 1].r.est_rows += rows;
            sl[n - 1].w1 = i;
            continue;
        }
        if (n == cap) {
            cap *= 2;
            sl = realloc(sl, cap * sizeof *sl);
            if (!sl)
                abort();
        }
        struct ledger_slice x;
        memset(&x, 0, sizeof x);
        x.r = (struct plan_slice){w->lo, w->hi, rows};
        x.w0 = x.w1 = i;
        x.max_seen = INT64_MIN;
        sl[n++] = x;
        open = true;
    }
    qsort(sl, n, sizeof *sl, cmp_slice);
    log_debug("sched", "%s: %zu chunks to read or flag, %zu slices", d->name, d->nwork, n);
    cycle_planned(d, sl, n);
}

static void ledger_start_counts(struct dsync *d)
{
    long batch = d->s->cfg->batch_size;
    d->plans = sched_xcalloc(d->nwork, sizeof *d->plans);
    for (size_t i = 0; i < d->nwork; i++) {
        const struct ledger_work *w = &d->work[i];
        if (w->action != LEDGER_READ || (w->rows >= 0 && w->rows <= batch))
            continue;
        /* Druid does not know its rows, or they exceed a slice: count inside the chunk */
        d->plans[i] = plan_new(batch, w->lo);
        if (!d->plans[i])
            abort();
        struct countq *cq = sched_xcalloc(1, sizeof *cq);
        cq->plan = d->plans[i];
        cq->item = i;
        cq->level = PLAN_DAY;
        cq->lo = w->lo;
        cq->hi = w->hi;
        submit_count(d, cq);
    }
    if (!d->counts && !d->delays)
        ledger_plan_done(d);
}

static void to_ledger_chunks(struct dsync *d, const struct pgsink_chunk *c, size_t n)
{
    d->ledc = sched_xcalloc(n, sizeof *d->ledc);
    d->nledc = 0;
    for (size_t i = 0; i < n; i++) {
        struct ledger_chunk *l = &d->ledc[d->nledc];
        memset(l, 0, sizeof *l);
        l->start_ms = c[i].start_ms;
        l->end_ms = c[i].end_ms;
        snprintf(l->start, sizeof l->start, "%s", c[i].start);
        snprintf(l->end, sizeof l->end, "%s", c[i].end);
        snprintf(l->fp, sizeof l->fp, "%s", c[i].fingerprint ? c[i].fingerprint : "");
        l->druid_rows = c[i].druid_rows;
        l->stored_rows = c[i].stored_rows;
        l->state = strcmp(c[i].state, "synced") == 0      ? LEDGER_SYNCED
                   : strcmp(c[i].state, "postponed") == 0 ? LEDGER_POSTPONED
                                                          : LEDGER_WAITING;
        l->postponed_since_ms = c[i].postponed_since_ms;
        l->position_ms = c[i].position_ms;
        l->drop_held = c[i].drop_held;
        l->full_read_ms = c[i].full_read_ms;
        if (l->state == LEDGER_SYNCED && l->end_ms > d->chunk_synced_ms)
            d->chunk_synced_ms = l->end_ms;
        d->nledc++;
    }
}

static void on_ledger(void *ud, const char *err, const struct pgsink_chunk *c, size_t n)
{
    struct dsync *d = ud;
    struct sched *s = d->s;
    sched_touch(s);
    d->outstanding--;
    if (err) {
        cycle_fail(d, "reading the chunk ledger failed: %s", err);
        return;
    }
    if (d->failed || s->stopping) {
        cycle_maybe_finish(d);
        return;
    }
    int64_t stored = 0;
    for (size_t i = 0; i < n; i++)
        stored += c[i].stored_rows;
    d->chunk_synced_ms = INT64_MIN;
    if (d->table_reset && n > 0) {
        /* the ledger says the table holds rows, the table says otherwise */
        log_warning("sched",
                    "%s: the destination table was dropped or emptied while the chunk ledger "
                    "records %" PRId64 " rows in %zu chunks; rebuilding it from Druid",
                    d->name, stored, n);
        n = 0;
        d->ledger_stale = true;
    }
    if (d->migrating && n > 0) {
        n = 0; /* every chunk is read again: the ids change */
        d->ledger_stale = true;
    }
    to_ledger_chunks(d, c, n);
    struct ledger_opts o = {time_now_ms(), (int64_t)(s->cfg->realtime_reread_seconds * 1000.0),
                            false};
    bool *gone = sched_xcalloc(d->nledc, sizeof *gone);
    size_t drops = ledger_dropped(d->snapc, d->nsnapc, d->ledc, d->nledc, gone);
    bool confirmed = true; /* every chunk this snapshot drops was held back before */
    for (size_t j = 0; j < d->nledc; j++)
        confirmed &= !gone[j] || d->ledc[j].drop_held;
    if (drops > 0 && d->nledc >= 2 && drops * 2 > d->nledc && !confirmed) {
        /* a snapshot that drops most of a datasource at once waits for the next one to
         * agree (this process or the next --once): a Broker that lost its view must not flag
         * everything. The mark is kept in the ledger rows. */
        log_warning("sched",
                    "%s: Druid's segments drop %zu of %zu known chunks at once; holding that "
                    "back until the next snapshot agrees",
                    d->name, drops, d->nledc);
        o.hold_drops = true;
    }
    d->held = sched_xcalloc(d->nledc, sizeof *d->held);
    d->nheld = 0;
    for (size_t j = 0; j < d->nledc; j++) {
        /* held now: mark; no longer dropped (or confirmed): clear a stale mark */
        bool mark = o.hold_drops && gone[j];
        if (mark == d->ledc[j].drop_held || (!mark && gone[j]))
            continue;
        const struct ledger_chunk *l = &d->ledc[j];
        struct pgsink_chunk *h = &d->held[d->nheld++];
        *h = (struct pgsink_chunk){l->start,
                                   l->end,
                                   l->start_ms,
                                   l->end_ms,
                                   l->fp,
                                   l->druid_rows,
                                   l->stored_rows,
                                   l->state == LEDGER_SYNCED      ? "synced"
                                   : l->state == LEDGER_POSTPONED ? "postponed"
                                                                  : "pending",
                                   l->postponed_since_ms,
                                   l->position_ms,
                                   l->full_read_ms,
                                   mark};
    }
    free(gone);
    if (ledger_diff(d->snapc, d->nsnapc, d->ledc, d->nledc, &o, &d->work, &d->nwork, &drops) != 0)
        abort();
    /* lookback_seconds stays a safety net: unchanged chunks near the cursor are read too */
    if (s->cfg->lookback_seconds > 0 && d->cursor_ms != INT64_MIN) {
        int64_t from = d->cursor_ms - (int64_t)(s->cfg->lookback_seconds * 1000.0);
        for (size_t i = 0; i < d->nsnapc; i++) {
            const struct ledger_chunk *k = &d->snapc[i];
            if (k->end_ms <= from || !k->available)
                continue;
            bool listed = false;
            for (size_t w = 0; w < d->nwork && !listed; w++)
                listed = d->work[w].snap == i;
            if (listed)
                continue;
            d->work = realloc(d->work, (d->nwork + 1) * sizeof *d->work);
            if (!d->work)
                abort();
            struct ledger_work x = {LEDGER_READ,   k->start_ms, k->end_ms, i,         false,
                                    k->druid_rows, 0,           false,     INT64_MIN, 0};
            d->work[d->nwork++] = x;
        }
        qsort(d->work, d->nwork, sizeof *d->work, cmp_work_range);
    }
    d->work_rows = sched_xcalloc(d->nwork, sizeof *d->work_rows);
    d->work_max = sched_xcalloc(d->nwork, sizeof *d->work_max);
    for (size_t i = 0; i < d->nwork; i++)
        d->work_max[i] = INT64_MIN;
    d->work_recorded = sched_xcalloc(d->nwork, sizeof *d->work_recorded);
    ledger_start_counts(d);
}

/* ---- counts fallback: Druid's buckets against PostgreSQL's ---- */

#define CMP_MAX_SUMS 16

struct bkt {
    int64_t start, n;
    double sums[CMP_MAX_SUMS];
};

/* One bucket comparison: the same level and range counted on both sides. */
struct cmpq {
    struct dsync *d;
    struct cmpq *next, *prev;
    enum plan_level level;
    int64_t lo, hi;
    struct druid_query *q;
    struct bkt *druid, *pg;
    size_t nd, np, capd;
    int attempts;
    bool druid_done, pg_done, cancelled;
};

static size_t cmp_nsums(const struct dsync *d, size_t *idx, const char **names)
{
    size_t n = 0;
    for (size_t i = 0; i < d->nccols && n < CMP_MAX_SUMS; i++) {
        if ((int)i == d->time_idx || (d->types[i] != PGT_BIGINT && d->types[i] != PGT_DOUBLE))
            continue;
        if (idx)
            idx[n] = i;
        if (names)
            names[n] = d->ccols[i].name;
        n++;
    }
    return n;
}

static void cmp_free(struct cmpq *c)
{
    free(c->druid);
    free(c->pg);
    free(c);
}

static bool same_bucket(const struct bkt *a, const struct bkt *b, size_t ns)
{
    if (a->n != b->n)
        return false;
    for (size_t k = 0; k < ns; k++) {
        double x = a->sums[k], y = b->sums[k], m = fabs(x) > fabs(y) ? fabs(x) : fabs(y);
        /* sums of doubles depend on the order of addition: a relative tolerance */
        if (fabs(x - y) > 1e-9 * m)
            return false;
    }
    return true;
}

static int cmp_bkt(const void *a, const void *b)
{
    const struct bkt *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static void cmp_submit(struct dsync *d, enum plan_level level, int64_t lo, int64_t hi);

static void add_work(struct dsync *d, int64_t lo, int64_t hi, int64_t rows)
{
    d->work = realloc(d->work, (d->nwork + 1) * sizeof *d->work);
    if (!d->work)
        abort();
    struct ledger_work x = {LEDGER_READ, lo, hi, SIZE_MAX, false, rows, 0, false, INT64_MIN, 0};
    d->work[d->nwork++] = x;
}

static void counts_planned(struct dsync *d)
{
    if (d->nwork > 1)
        qsort(d->work, d->nwork, sizeof *d->work, cmp_work_range);
    d->work_rows = sched_xcalloc(d->nwork, sizeof *d->work_rows);
    d->work_max = sched_xcalloc(d->nwork, sizeof *d->work_max);
    d->work_recorded = sched_xcalloc(d->nwork, sizeof *d->work_recorded);
    for (size_t i = 0; i < d->nwork; i++)
        d->work_max[i] = INT64_MIN;
    log_debug("sched", "%s: %zu hours differ from Druid's counts", d->name, d->nwork);
    ledger_start_counts(d);
}

/* Both sides answered: buckets that differ are refined (day to hours) or read (hours). */
static void cmp_compare(struct cmpq *c)
{
    struct dsync *d = c->d;
    size_t ns = cmp_nsums(d, NULL, NULL);
    if (c->nd > 1)
        qsort(c->druid, c->nd, sizeof *c->druid, cmp_bkt);
    if (c->np > 1)
        qsort(c->pg, c->np, sizeof *c->pg, cmp_bkt);
    int64_t width = plan_level_width_ms(c->level);
    size_t i = 0, j = 0;
    while (i < c->nd || j < c->np) {
        const struct bkt *a = i < c->nd ? &c->druid[i] : NULL, *b = j < c->np ? &c->pg[j] : NULL;
        int64_t start;
        bool differ;
        int64_t rows = 0;
        if (a && (!b || a->start < b->start)) {
            start = a->start, differ = true, rows = a->n, i++;
        } else if (b && (!a || b->start < a->start)) {
            start = b->start, differ = true, j++; /* only in PostgreSQL: its rows vanished */
        } else {
            start = a->start, differ = !same_bucket(a, b, ns), rows = a->n, i++, j++;
        }
        if (!differ)
            continue;
        if (c->level == PLAN_DAY)
            cmp_submit(d, PLAN_HOUR, start, start + width);
        else
            add_work(d, start, start + width, rows);
    }
}

static void cmp_maybe_done(struct cmpq *c)
{
    struct dsync *d = c->d;
    if (!c->druid_done || !c->pg_done)
        return;
    LIST_DEL(d->cmps, c);
    d->outstanding--;
    if (!d->failed && !d->s->stopping)
        cmp_compare(c);
    cmp_free(c);
    if (d->failed || d->s->stopping) {
        cycle_maybe_finish(d);
        return;
    }
    if (!d->cmps && d->st == DS_PLANNING)
        counts_planned(d);
}

static int cmp_on_row(void *ud, struct json_object *row)
{
    struct cmpq *c = ud;
    sched_touch(c->d->s);
    struct json_object *b = json_object_array_get_idx(row, 0);
    if (c->nd == c->capd) {
        c->capd = c->capd ? c->capd * 2 : 32;
        c->druid = realloc(c->druid, c->capd * sizeof *c->druid);
        if (!c->druid)
            abort();
    }
    struct bkt *k = &c->druid[c->nd];
    memset(k, 0, sizeof *k);
    if (!b || !json_object_is_type(b, json_type_string) ||
        time_parse_iso_ms(json_object_get_string(b), &k->start) != 0)
        return -1;
    k->n = json_object_get_int64(json_object_array_get_idx(row, 1));
    size_t ns = cmp_nsums(c->d, NULL, NULL);
    for (size_t s = 0; s < ns; s++) {
        struct json_object *v = json_object_array_get_idx(row, 2 + s);
        k->sums[s] = v ? json_object_get_double(v) : 0;
    }
    c->nd++;
    return 0;
}

static void cmp_send(struct cmpq *c);

static void cmp_retry(struct dsync *d, void *arg)
{
    struct cmpq *c = arg;
    if (d->failed || d->s->stopping) {
        c->druid_done = true;
        cmp_maybe_done(c);
        return;
    }
    cmp_send(c);
}

static void cmp_retry_drop(struct dsync *d, void *arg)
{
    (void)d;
    struct cmpq *c = arg;
    c->druid_done = true; /* a stop: the comparison ends unfinished (interrupted) */
    cmp_maybe_done(c);
}

static void cmp_on_done(void *ud, const struct druid_error *e)
{
    struct cmpq *c = ud;
    struct dsync *d = c->d;
    struct sched *s = d->s;
    c->q = NULL;
    sched_touch(s);
    if (e->kind != DRUID_OK) {
        c->nd = 0;
        bool auth = false;
        double delay = retry_druid(s->cfg, e, ++c->attempts, false, &auth);
        if (auth) {
            sched_block_on_auth(s, e->http_status, druid_error_reason(e));
            sched_set_last_error(s, "Druid HTTP %ld: %s", e->http_status, druid_error_reason(e));
        }
        if (delay >= 0 && !s->stopping && !d->failed) {
            s->counters.retries[e->kind]++;
            log_event(LOG_LVL_WARNING, "druid",
                      LOG_FIELDS(.datasource = d->name, .error_kind = druid_err_kind_name(e->kind),
                                 .druid_code = e->code[0] ? e->code : NULL,
                                 .http_status = e->http_status),
                      "%s: counting rows failed (%s: %s); retry %d in %.1f s", d->name,
                      druid_err_kind_name(e->kind), e->message, c->attempts, delay);
            cycle_call_later(d, delay, cmp_retry, cmp_retry_drop, c);
            return;
        }
        if (!s->stopping) {
            s->counters.errors[e->kind]++;
            cycle_fail(d, "counting rows in Druid failed: %s", e->message);
        }
    }
    c->druid_done = true;
    cmp_maybe_done(c);
}

static void cmp_on_pg(void *ud, const char *err, const struct pgsink_bucket *b, size_t n)
{
    struct cmpq *c = ud;
    if (c->cancelled) {
        LIST_DEL(c->d->cmp_orphans, c);
        cmp_free(c); /* a hard stop dropped it: nobody waits */
        return;
    }
    sched_touch(c->d->s);
    if (err) {
        cycle_fail(c->d, "counting rows in PostgreSQL failed: %s", err);
    } else {
        size_t ns = cmp_nsums(c->d, NULL, NULL);
        c->pg = sched_xcalloc(n, sizeof *c->pg);
        for (size_t i = 0; i < n; i++) {
            c->pg[i].start = b[i].start_ms;
            c->pg[i].n = b[i].n;
            for (size_t k = 0; k < ns; k++)
                c->pg[i].sums[k] = b[i].sums[k];
        }
        c->np = n;
    }
    c->pg_done = true;
    cmp_maybe_done(c);
}

static void cmp_submit(struct dsync *d, enum plan_level level, int64_t lo, int64_t hi)
{
    struct cmpq *c = sched_xcalloc(1, sizeof *c);
    c->d = d;
    c->level = level;
    c->lo = lo;
    c->hi = hi;
    LIST_PUSH(d->cmps, c);
    d->outstanding++;
    size_t idx[CMP_MAX_SUMS];
    size_t ns = cmp_nsums(d, idx, NULL);
    cmp_send(c);
    pgsink_buckets(d->s->sink, d->sink_key, idx, ns, plan_level_width_ms(level), lo, hi, cmp_on_pg,
                   c);
}

static void cmp_send(struct cmpq *c)
{
    static const struct druid_query_ops ops = {NULL, cmp_on_row, cmp_on_done};
    struct dsync *d = c->d;
    const char *names[CMP_MAX_SUMS];
    size_t ns = cmp_nsums(d, NULL, names);
    struct buf b = BUF_INIT;
    struct druid_param p[DRUIDSQL_MAX_PARAMS];
    size_t np = 0;
    druidsql_sums(&b, p, &np, d->name, d->slice_col, plan_level_period(c->level), names, ns, c->lo,
                  c->hi);
    c->q = druid_query_submit(d->s->druid, b.data, p, np, &ops, c);
    buf_free(&b);
    if (!c->q)
        abort();
}

static void counts_start(struct dsync *d)
{
    d->counts_mode = true;
    cmp_submit(d, PLAN_DAY, INT64_MIN, INT64_MAX);
}

static void on_snapshot(struct dsync *d, const struct ledger_chunk *c, size_t n, const char *err)
{
    struct sched *s = d->s;
    sched_touch(s);
    if (d->failed || s->stopping) {
        cycle_maybe_finish(d);
        return;
    }
    if (!c) {
        /* no segments to go by: an error, a 403, or none listed for a datasource the catalog
         * has (not proof that everything was dropped) */
        if (!d->detection || strcmp(d->detection, "counts") != 0)
            log_warning("sched",
                        "%s: %s; change detection falls back to comparing row counts with "
                        "PostgreSQL",
                        d->name,
                        err ? err
                            : "sys.segments lists no segment of it (no permission, or not "
                              "visible yet)");
        d->detection = "counts";
        if (d->migrating || d->table_reset) {
            /* everything is read again, from the start: nothing to compare */
            if (d->table_reset && !d->migrating && d->cursor_ms != INT64_MIN)
                log_warning("sched",
                            "%s: the destination table was dropped or emptied while the state "
                            "row records a cursor; reading from the start",
                            d->name);
            d->ledger_mode = false;
            d->start_ms = PLAN_UNBOUNDED_LO;
            plan_by_counts(d);
        } else {
            counts_start(d);
        }
        return;
    }
    if (!d->detection || strcmp(d->detection, "segments") != 0)
        log_info("sched", "%s: change detection from sys.segments (%zu chunks)", d->name, n);
    d->detection = "segments";
    d->snapc = sched_xcalloc(n, sizeof *d->snapc);
    memcpy(d->snapc, c, n * sizeof *c);
    d->nsnapc = n;
    d->chunk_newest_ms = c[n - 1].end_ms;
    for (size_t i = 0; i < n; i++)
        if (c[i].end_ms > d->chunk_newest_ms)
            d->chunk_newest_ms = c[i].end_ms;
    d->outstanding++;
    pgsink_chunks_read(s->sink, d->sink_key, on_ledger, d);
}

void planning_start(struct dsync *d)
{
    d->st = DS_PLANNING;
    if (!d->ledger_mode) {
        d->detection = d->slice_col ? "cursor" : "full";
        plan_by_counts(d);
        return;
    }
    /* datasources due around the same time share one snapshot */
    double max_age = d->s->cfg->sync_interval_seconds / 2;
    if (max_age < 1)
        max_age = 1;
    segments_get(d, max_age, on_snapshot);
}

void planning_cancel(struct dsync *d)
{
    segments_forget(d);
    while (d->cmps) {
        struct cmpq *c = d->cmps;
        LIST_DEL(d->cmps, c);
        if (c->q)
            druid_query_cancel(c->q);
        d->outstanding--;
        if (c->pg_done) {
            cmp_free(c);
        } else {
            c->cancelled = true; /* freed when PostgreSQL answers */
            LIST_PUSH(d->cmp_orphans, c);
        }
    }
    while (d->counts) {
        struct countq *cq = d->counts;
        LIST_DEL(d->counts, cq);
        druid_query_cancel(cq->q);
        d->outstanding--;
        countq_free(cq);
    }
}

void planning_free(struct dsync *d)
{
    /* only at teardown: the sink is freed next and will not answer */
    while (d->cmps) {
        struct cmpq *c = d->cmps;
        LIST_DEL(d->cmps, c);
        if (c->q)
            druid_query_cancel(c->q);
        cmp_free(c);
    }
    while (d->cmp_orphans) {
        struct cmpq *c = d->cmp_orphans;
        LIST_DEL(d->cmp_orphans, c);
        cmp_free(c);
    }
}
