/* segments: sys.segments snapshots and chunk fingerprints. See segments.h. */
#include "segments.h"

#include <stdio.h>

#include "druidsql.h"
#include "log.h"
#include "retry.h"
#include "timeutil.h"

struct snapds {
    char *name;
    struct ledger_segment *segs;
    size_t n, cap;
    struct ledger_chunk *chunks;
    size_t nchunks;
};

struct waiter {
    struct waiter *next;
    struct dsync *d;
    segments_cb cb;
};

struct segsnap {
    struct sched *s;
    uv_timer_t retry; /* a transient failure waits for its backoff */
    int attempts;
    struct druid_query *q; /* being read */
    uint64_t taken_at;     /* loop time the query was sent */
    bool ready;
    char err[1200];
    struct snapds *ds;
    size_t nds, capds, last;
    struct waiter *waiting;
};

static void snap_clear(struct segsnap *p)
{
    for (size_t i = 0; i < p->nds; i++) {
        for (size_t k = 0; k < p->ds[i].n; k++)
            free(p->ds[i].segs[k].id);
        free(p->ds[i].segs);
        free(p->ds[i].chunks);
        free(p->ds[i].name);
    }
    free(p->ds);
    p->ds = NULL;
    p->nds = p->capds = p->last = 0;
    p->ready = false;
    p->err[0] = '\0';
}

static struct snapds *snap_ds(struct segsnap *p, const char *name, bool create)
{
    if (p->last < p->nds && strcmp(p->ds[p->last].name, name) == 0)
        return &p->ds[p->last];
    for (size_t i = 0; i < p->nds; i++)
        if (strcmp(p->ds[i].name, name) == 0) {
            p->last = i;
            return &p->ds[i];
        }
    if (!create)
        return NULL;
    if (p->nds == p->capds) {
        p->capds = p->capds ? p->capds * 2 : 16;
        p->ds = realloc(p->ds, p->capds * sizeof *p->ds);
        if (!p->ds)
            abort();
    }
    struct snapds *x = &p->ds[p->nds];
    memset(x, 0, sizeof *x);
    x->name = sched_xstrdup(name);
    p->last = p->nds++;
    return x;
}

static const char *str_at(struct json_object *row, size_t i)
{
    struct json_object *v = json_object_array_get_idx(row, i);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int64_t int_at(struct json_object *row, size_t i)
{
    struct json_object *v = json_object_array_get_idx(row, i);
    return v ? json_object_get_int64(v) : 0;
}

int segments_parse_row(struct json_object *row, const char **datasource, struct ledger_segment *g)
{
    const char *ds = str_at(row, 0), *start = str_at(row, 1), *end = str_at(row, 2),
               *id = str_at(row, 3);
    memset(g, 0, sizeof *g);
    if (!ds || !start || !end || !id || time_parse_iso_ms(start, &g->start_ms) != 0 ||
        time_parse_iso_ms(end, &g->end_ms) != 0 || g->end_ms <= g->start_ms ||
        strlen(start) >= sizeof((struct ledger_chunk *)0)->start ||
        strlen(end) >= sizeof((struct ledger_chunk *)0)->end)
        return -1;
    /* id, start and end share one allocation: id\0start\0end\0 */
    size_t li = strlen(id), ls = strlen(start), le = strlen(end);
    g->id = malloc(li + ls + le + 3);
    if (!g->id)
        abort();
    memcpy(g->id, id, li + 1);
    memcpy(g->id + li + 1, start, ls + 1);
    memcpy(g->id + li + ls + 2, end, le + 1);
    g->start = g->id + li + 1;
    g->end = g->id + li + ls + 2;
    g->size = int_at(row, 4);
    g->num_rows = int_at(row, 5);
    g->available = int_at(row, 6) != 0;
    g->realtime = int_at(row, 7) != 0;
    *datasource = ds;
    return 0;
}

static int snap_on_row(void *ud, struct json_object *row)
{
    struct segsnap *p = ud;
    sched_touch(p->s);
    const char *ds;
    struct ledger_segment g;
    if (segments_parse_row(row, &ds, &g) != 0) {
        snprintf(p->err, sizeof p->err, "%s", SEGMENTS_BAD_ROW);
        return -1;
    }
    struct snapds *x = snap_ds(p, ds, true);
    if (x->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 64;
        x->segs = realloc(x->segs, x->cap * sizeof *x->segs);
        if (!x->segs)
            abort();
    }
    x->segs[x->n++] = g;
    return 0;
}

/* Segments to chunks (ledger_chunks_from_segments): one array for the whole snapshot. */
static void build_chunks(struct snapds *x)
{
    x->chunks = sched_xcalloc(x->n, sizeof *x->chunks);
    x->nchunks = ledger_chunks_from_segments(x->segs, x->n, x->chunks, NULL);
}

static void answer(struct segsnap *p, struct waiter *w)
{
    if (!p->ready) {
        w->cb(w->d, NULL, 0, p->err[0] ? p->err : "sys.segments could not be read");
        return;
    }
    struct snapds *x = snap_ds(p, w->d->name, false);
    if (!x || x->nchunks == 0)
        w->cb(w->d, NULL, 0, NULL);
    else
        w->cb(w->d, x->chunks, x->nchunks, NULL);
}

static void snap_submit(struct segsnap *p);

static void on_retry(uv_timer_t *t)
{
    struct segsnap *p = t->data;
    if (!p->waiting)
        return; /* every cycle that asked went away (a stop) */
    snap_submit(p);
}

static void snap_on_done(void *ud, const struct druid_error *e)
{
    struct segsnap *p = ud;
    struct sched *s = p->s;
    p->q = NULL;
    sched_touch(s);
    if (e->kind != DRUID_OK && druid_error_retryable(e) && !s->stopping &&
        p->attempts < s->cfg->max_retries && p->waiting) {
        /* a busy or restarting Broker: the snapshot is worth waiting for; a refusal (403)
         * or an unknown table is not, and falls back at once */
        p->attempts++;
        double delay = retry_backoff(s->cfg, p->attempts, e->retry_after);
        s->counters.retries[e->kind]++;
        log_warning("druid", "reading sys.segments failed (%s: %s); retry %d in %.1f s",
                    druid_err_kind_name(e->kind), e->message, p->attempts, delay);
        for (size_t i = 0; i < p->nds; i++) {
            for (size_t k = 0; k < p->ds[i].n; k++)
                free(p->ds[i].segs[k].id);
            p->ds[i].n = 0;
        }
        p->err[0] = '\0';
        uint64_t ms = (uint64_t)(delay * 1000.0);
        if (uv_now(s->loop) + ms > s->quiet_until)
            s->quiet_until = uv_now(s->loop) + ms;
        uv_timer_start(&p->retry, on_retry, ms, 0);
        return;
    }
    p->attempts = 0;
    if (e->kind == DRUID_OK) {
        for (size_t i = 0; i < p->nds; i++)
            build_chunks(&p->ds[i]);
        p->ready = true;
    } else {
        if (!p->err[0])
            snprintf(p->err, sizeof p->err, "%s (%s)", e->message, druid_err_kind_name(e->kind));
        for (size_t i = 0; i < p->nds; i++) {
            for (size_t k = 0; k < p->ds[i].n; k++)
                free(p->ds[i].segs[k].id);
            p->ds[i].n = 0;
        }
    }
    struct waiter *w = p->waiting;
    p->waiting = NULL;
    /* oldest first: the order the cycles asked in */
    struct waiter *rev = NULL;
    while (w) {
        struct waiter *n = w->next;
        w->next = rev;
        rev = w;
        w = n;
    }
    while (rev) {
        struct waiter *n = rev->next;
        rev->d->outstanding--;
        answer(p, rev);
        free(rev);
        rev = n;
    }
}

void segments_get(struct dsync *d, double max_age, segments_cb cb)
{
    struct sched *s = d->s;
    if (!s->snap) {
        s->snap = sched_xcalloc(1, sizeof *s->snap);
        s->snap->s = s;
        uv_timer_init(s->loop, &s->snap->retry);
        s->snap->retry.data = s->snap;
    }
    struct segsnap *p = s->snap;
    struct waiter *w = sched_xcalloc(1, sizeof *w);
    w->d = d;
    w->cb = cb;
    double age = (double)(uv_now(s->loop) - p->taken_at) / 1000.0;
    if (!p->q && !uv_is_active((uv_handle_t *)&p->retry) && (p->ready || p->err[0]) &&
        p->taken_at && age <= max_age) {
        answer(p, w);
        free(w);
        return;
    }
    d->outstanding++;
    w->next = p->waiting;
    p->waiting = w;
    if (p->q || uv_is_active((uv_handle_t *)&p->retry))
        return; /* being read: this request waits for it */
    p->attempts = 0;
    snap_submit(p);
}

static void snap_submit(struct segsnap *p)
{
    struct sched *s = p->s;
    snap_clear(p);
    static const struct druid_query_ops ops = {NULL, snap_on_row, snap_on_done};
    struct buf b = BUF_INIT;
    struct druid_param prm[DRUIDSQL_MAX_PARAMS];
    size_t np = 0;
    druidsql_segments(&b, prm, &np);
    p->taken_at = uv_now(s->loop);
    if (!p->taken_at)
        p->taken_at = 1;
    p->q = druid_query_submit(s->druid, b.data, prm, np, &ops, p);
    buf_free(&b);
    if (!p->q)
        abort();
}

void segments_forget(struct dsync *d)
{
    struct segsnap *p = d->s->snap;
    if (!p)
        return;
    for (struct waiter **pp = &p->waiting; *pp;) {
        if ((*pp)->d == d) {
            struct waiter *w = *pp;
            *pp = w->next;
            d->outstanding--;
            free(w);
        } else {
            pp = &(*pp)->next;
        }
    }
}

static void free_snap(uv_handle_t *h)
{
    free(h->data);
}

void segments_free(struct sched *s)
{
    struct segsnap *p = s->snap;
    if (!p)
        return;
    if (p->q)
        druid_query_cancel(p->q);
    while (p->waiting) {
        struct waiter *w = p->waiting;
        p->waiting = w->next;
        free(w);
    }
    snap_clear(p);
    uv_timer_stop(&p->retry);
    uv_close((uv_handle_t *)&p->retry, (uv_close_cb)free_snap);
    s->snap = NULL;
}
