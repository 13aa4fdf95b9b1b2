/* planning: count queries to slices. See planning.h. */
#include "planning.h"

#include "cycle.h"
#include "druidsql.h"
#include "log.h"
#include "retry.h"
#include "timeutil.h"

/* One count query of the plan: the first (per day from the start) or a refinement of a
 * bucket that holds too many rows. Its buckets are kept until the answer is complete, so a
 * query that fails half-way and is retried counts its rows once. */
struct countq {
    struct dsync *d;
    struct countq *next, *prev;
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
    cycle_planned(d, sl, n);
    free(sl);
}

static void take_refinements(struct dsync *d)
{
    struct plan_bucket b;
    while (plan_take_refinement(d->plan, &b) == 1) {
        struct countq *cq = sched_xcalloc(1, sizeof *cq);
        cq->refine = true;
        cq->parent = b;
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
    struct sched *s = d->s;
    sched_touch(s);
    cq->q = NULL;
    LIST_DEL(d->counts, cq);
    d->outstanding--;
    if (e->kind != DRUID_OK) {
        bool auth = false;
        double delay = retry_druid(s->cfg, e, ++cq->attempts, false, &auth);
        if (auth) {
            sched_block_on_auth(s, e->http_status, e->message);
            sched_set_last_error(s, "Druid HTTP %ld: %s", e->http_status, e->message);
        }
        if (delay >= 0 && s->stopping) {
            countq_free(cq); /* planning stays unfinished: the cycle is interrupted */
            cycle_maybe_finish(d);
            return;
        }
        if (delay >= 0 && !d->failed) {
            s->counters.retries[e->kind]++;
            log_warning("druid", "%s: counting rows failed (%s: %s); retry %d in %.1f s", d->name,
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
    int rc = cq->refine ? plan_refined(d->plan, &cq->parent, cq->got, cq->ngot)
                        : plan_add(d->plan, cq->got, cq->ngot);
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
    take_refinements(d);
    if (!d->counts && !d->delays && d->st == DS_PLANNING)
        plan_done(d);
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

void planning_start(struct dsync *d)
{
    d->st = DS_PLANNING;
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
    cq->level = PLAN_DAY;
    cq->lo = d->start_ms;
    cq->hi = PLAN_UNBOUNDED_HI;
    submit_count(d, cq);
}

void planning_cancel(struct dsync *d)
{
    while (d->counts) {
        struct countq *cq = d->counts;
        LIST_DEL(d->counts, cq);
        druid_query_cancel(cq->q);
        d->outstanding--;
        countq_free(cq);
    }
}
