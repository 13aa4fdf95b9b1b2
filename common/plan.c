/* plan: packs per-bucket row counts into half-open slices of about batch_size rows. */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

struct taken {
    int64_t start;
    enum plan_level level;
};

struct plan {
    int64_t batch;
    int64_t start_ms;
    struct plan_bucket *b;
    size_t n, cap;
    struct taken *pend; /* buckets handed out by plan_take_refinement, not yet re-added */
    size_t npend, pendcap;
};

const char *plan_level_period(enum plan_level l)
{
    switch (l) {
    case PLAN_DAY:
        return "P1D";
    case PLAN_HOUR:
        return "PT1H";
    case PLAN_MINUTE:
        return "PT1M";
    case PLAN_SECOND:
        return "PT1S";
    case PLAN_EXACT:
        return NULL;
    }
    return NULL;
}

int64_t plan_level_width_ms(enum plan_level l)
{
    switch (l) {
    case PLAN_DAY:
        return 86400000;
    case PLAN_HOUR:
        return 3600000;
    case PLAN_MINUTE:
        return 60000;
    case PLAN_SECOND:
        return 1000;
    case PLAN_EXACT:
        return 1;
    }
    return 1;
}

struct plan *plan_new(int64_t batch_size, int64_t start_ms)
{
    struct plan *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->batch = batch_size > 0 ? batch_size : 1;
    p->start_ms = start_ms;
    return p;
}

void plan_free(struct plan *p)
{
    if (!p)
        return;
    free(p->b);
    free(p->pend);
    free(p);
}

/* start <= x < start + width, without overflowing near INT64_MAX. */
static int in_range(int64_t x, int64_t start, int64_t width)
{
    return x >= start && (uint64_t)x - (uint64_t)start < (uint64_t)width;
}

static void resolve_pending(struct plan *p, size_t i)
{
    p->pend[i] = p->pend[--p->npend];
}

int plan_add(struct plan *p, const struct plan_bucket *b, size_t n)
{
    if (p->n + n > p->cap) {
        size_t cap = p->cap ? p->cap : 64;
        while (cap < p->n + n)
            cap *= 2;
        struct plan_bucket *nb = realloc(p->b, cap * sizeof *nb);
        if (!nb)
            return -1;
        p->b = nb;
        p->cap = cap;
    }
    if (n)
        memcpy(p->b + p->n, b, n * sizeof *b);
    p->n += n;

    /* A refinement is answered once buckets inside its range arrive. A refinement whose
     * count came back empty (the rows went away meanwhile) is answered by an empty add:
     * that settles the most recent one, which is what a take/count/add loop produces. */
    size_t before = p->npend;
    for (size_t k = 0; k < n && p->npend; k++) {
        for (size_t i = 0; i < p->npend; i++) {
            if (in_range(b[k].start_ms, p->pend[i].start, plan_level_width_ms(p->pend[i].level))) {
                resolve_pending(p, i);
                break;
            }
        }
    }
    if (n == 0 && before && p->npend == before)
        p->npend--;
    return 0;
}

int plan_refined(struct plan *p, const struct plan_bucket *taken, const struct plan_bucket *b,
                 size_t n)
{
    size_t i = 0;
    while (i < p->npend &&
           !(p->pend[i].start == taken->start_ms && p->pend[i].level == taken->level))
        i++;
    if (i == p->npend)
        return -1;
    resolve_pending(p, i);
    /* plan_add's own settling is for answers that do not name their refinement */
    size_t keep = p->npend;
    p->npend = 0;
    int rc = plan_add(p, b, n);
    p->npend = keep;
    return rc;
}

int plan_take_refinement(struct plan *p, struct plan_bucket *out)
{
    size_t best = p->n;
    for (size_t i = 0; i < p->n; i++) {
        if (p->b[i].count > p->batch && p->b[i].level < PLAN_EXACT &&
            (best == p->n || p->b[i].start_ms < p->b[best].start_ms))
            best = i;
    }
    if (best == p->n)
        return 0;
    if (p->npend == p->pendcap) {
        size_t cap = p->pendcap ? p->pendcap * 2 : 8;
        struct taken *np = realloc(p->pend, cap * sizeof *np);
        if (!np)
            return 0; /* cannot track it: leave the bucket coarse rather than lose it */
        p->pend = np;
        p->pendcap = cap;
    }
    *out = p->b[best];
    p->pend[p->npend++] = (struct taken){out->start_ms, out->level};
    /* removed: its sub-buckets will stand in for it */
    p->b[best] = p->b[--p->n];
    return 1;
}

static int cmp_bucket(const void *a, const void *b)
{
    const struct plan_bucket *x = a, *y = b;
    if (x->start_ms != y->start_ms)
        return x->start_ms < y->start_ms ? -1 : 1;
    return (int)x->level - (int)y->level;
}

int plan_slices(struct plan *p, struct plan_slice **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (p->npend)
        return -1;
    if (p->n)
        qsort(p->b, p->n, sizeof *p->b, cmp_bucket);
    /* at most one slice per bucket, plus the first */
    struct plan_slice *s = malloc((p->n + 1) * sizeof *s);
    if (!s)
        return -1;
    size_t ns = 0;
    int64_t lo = p->start_ms, acc = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_bucket *b = &p->b[i];
        /* Cut only on a bucket start strictly inside the current slice, and never between
         * buckets that share a start: a timestamp is never split. Buckets that begin
         * before start_ms (a floored first bucket) belong to the first slice. */
        if (acc > 0 && acc + b->count > p->batch && b->start_ms > lo &&
            b->start_ms != p->b[i - 1].start_ms) {
            s[ns++] = (struct plan_slice){lo, b->start_ms, acc};
            lo = b->start_ms;
            acc = 0;
        }
        acc += b->count;
    }
    s[ns++] = (struct plan_slice){lo, PLAN_UNBOUNDED_HI, acc};
    *out = s;
    *nout = ns;
    return 0;
}
