/* test_plan: slice planning driven by a simulated Druid count query. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

#define DAY0 1442016000000LL /* 2015-09-12T00:00:00Z */

/* ---- a simulated Druid: rows are just their timestamps ---- */

struct data {
    int64_t *ts; /* sorted */
    size_t n;
};

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t floor_to(int64_t t, int64_t w)
{
    int64_t q = t / w - (t % w < 0);
    return q * w;
}

/* SELECT TIME_FLOOR(ts, period), COUNT(*) WHERE ts >= lo AND ts < hi GROUP BY 1, with
 * the buckets handed over in a scrambled order (the planner must not depend on it). */
static size_t count_buckets(const struct data *d, int64_t lo, int64_t hi, enum plan_level lvl,
                            struct plan_bucket **out)
{
    struct plan_bucket *b = malloc((d->n + 1) * sizeof *b);
    size_t nb = 0;
    int64_t w = plan_level_width_ms(lvl);
    for (size_t i = 0; i < d->n; i++) {
        if (d->ts[i] < lo || d->ts[i] >= hi)
            continue;
        int64_t f = floor_to(d->ts[i], w);
        if (nb && b[nb - 1].start_ms == f) {
            b[nb - 1].count++;
        } else {
            b[nb++] = (struct plan_bucket){f, 1, lvl};
        }
    }
    for (size_t i = 0; i + 1 < nb; i += 2) { /* scramble: swap neighbours */
        struct plan_bucket t = b[i];
        b[i] = b[i + 1];
        b[i + 1] = t;
    }
    *out = b;
    return nb;
}

struct run {
    struct plan_slice *s;
    size_t ns;
    int refinements;
    enum plan_level deepest;
};

/* The scheduler's loop: DAY counts from start_ms, then refine until nothing is left. */
static struct run plan_data(const struct data *d, int64_t batch, int64_t start_ms)
{
    struct run r = {NULL, 0, 0, PLAN_DAY};
    struct plan *p = plan_new(batch, start_ms);
    assert_non_null(p);
    struct plan_bucket *b;
    size_t nb = count_buckets(d, start_ms, INT64_MAX, PLAN_DAY, &b);
    assert_int_equal(plan_add(p, b, nb), 0);
    free(b);
    struct plan_bucket t;
    while (plan_take_refinement(p, &t)) {
        assert_true(t.count > batch);
        assert_true(t.level < PLAN_EXACT);
        /* refinements are pending until answered */
        struct plan_slice *tmp = NULL;
        size_t ntmp = 0;
        assert_int_equal(plan_slices(p, &tmp, &ntmp), -1);
        free(tmp);
        r.refinements++;
        enum plan_level next = (enum plan_level)(t.level + 1);
        if (next > r.deepest)
            r.deepest = next;
        int64_t lo = t.start_ms < start_ms ? start_ms : t.start_ms;
        nb = count_buckets(d, lo, t.start_ms + plan_level_width_ms(t.level), next, &b);
        assert_int_equal(plan_add(p, b, nb), 0);
        free(b);
    }
    assert_int_equal(plan_slices(p, &r.s, &r.ns), 0);
    plan_free(p);
    return r;
}

static int64_t rows_in(const struct data *d, int64_t lo, int64_t hi)
{
    int64_t n = 0;
    for (size_t i = 0; i < d->n; i++)
        n += d->ts[i] >= lo && d->ts[i] < hi;
    return n;
}

static size_t distinct_in(const struct data *d, int64_t lo, int64_t hi)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++)
        if (d->ts[i] >= lo && d->ts[i] < hi && (i == 0 || d->ts[i] != d->ts[i - 1]))
            n++;
    return n;
}

/* The properties every plan must have. */
static void check_plan(const struct data *d, const struct run *r, int64_t batch, int64_t start_ms)
{
    assert_true(r->ns >= 1);
    assert_int_equal(r->s[0].lo, start_ms);
    assert_int_equal(r->s[r->ns - 1].hi, PLAN_UNBOUNDED_HI);
    int64_t total = 0;
    for (size_t i = 0; i < r->ns; i++) {
        const struct plan_slice *s = &r->s[i];
        assert_true(s->lo < s->hi);
        if (i)
            assert_int_equal(s->lo, r->s[i - 1].hi); /* no gap, no overlap */
        /* the estimate is what the slice really holds */
        assert_int_equal(s->est_rows, rows_in(d, s->lo, s->hi));
        /* about batch_size: over it only when the slice is one timestamp */
        if (s->est_rows > batch)
            assert_int_equal(distinct_in(d, s->lo, s->hi), 1);
        total += s->est_rows;
    }
    assert_int_equal(total, rows_in(d, start_ms, INT64_MAX));
}

static struct data make_day(size_t n, unsigned seed)
{
    struct data d = {malloc(n * sizeof(int64_t)), n};
    srand(seed);
    for (size_t i = 0; i < n; i++) /* millisecond timestamps, with some repeats */
        d.ts[i] = DAY0 + 2818771 + (int64_t)(rand() % 83000000) / (i % 5 ? 1 : 100) * 1;
    qsort(d.ts, n, sizeof *d.ts, cmp_i64);
    return d;
}

static void test_wikiticker_day(void **state)
{
    (void)state;
    /* 39,244 rows over one day, batch 10,000 */
    struct data d = make_day(39244, 1);
    struct run r = plan_data(&d, 10000, PLAN_UNBOUNDED_LO);
    check_plan(&d, &r, 10000, PLAN_UNBOUNDED_LO);
    assert_true(r.ns >= 4 && r.ns <= 8);
    assert_int_equal(r.refinements, 1); /* DAY -> HOUR was enough */
    assert_int_equal(r.deepest, PLAN_HOUR);
    for (size_t i = 0; i < r.ns; i++)
        assert_true(r.s[i].est_rows <= 10000);
    free(r.s);

    /* from a cursor in the middle of the day */
    int64_t start = DAY0 + 12 * 3600000LL + 123;
    r = plan_data(&d, 10000, start);
    check_plan(&d, &r, 10000, start);
    free(r.s);
    free(d.ts);
}

static void test_one_hot_timestamp(void **state)
{
    (void)state;
    /* 60,000 rows at one timestamp, neighbours 1 ms either side and further away */
    int64_t t = DAY0 + 5 * 3600000LL + 1234;
    size_t n = 60000 + 500 + 500 + 3000 + 3000;
    struct data d = {malloc(n * sizeof(int64_t)), n};
    size_t k = 0;
    for (int i = 0; i < 60000; i++)
        d.ts[k++] = t;
    for (int i = 0; i < 500; i++) {
        d.ts[k++] = t - 1;
        d.ts[k++] = t + 1;
    }
    for (int i = 0; i < 3000; i++) {
        d.ts[k++] = DAY0 + i * 1000;
        d.ts[k++] = DAY0 + 20 * 3600000LL + i * 7;
    }
    qsort(d.ts, n, sizeof *d.ts, cmp_i64);
    struct run r = plan_data(&d, 10000, PLAN_UNBOUNDED_LO);
    check_plan(&d, &r, 10000, PLAN_UNBOUNDED_LO);
    assert_int_equal(r.deepest, PLAN_EXACT);
    size_t hot = r.ns;
    for (size_t i = 0; i < r.ns; i++)
        if (r.s[i].lo <= t && t < r.s[i].hi)
            hot = i;
    assert_true(hot < r.ns);
    /* the hot slice holds exactly the 60,000 rows; the neighbours are in other slices */
    assert_int_equal(r.s[hot].est_rows, 60000);
    assert_int_equal(r.s[hot].lo, t);
    assert_int_equal(r.s[hot].hi, t + 1);
    free(r.s);
    free(d.ts);
}

static void test_empty(void **state)
{
    (void)state;
    struct plan *p = plan_new(10000, PLAN_UNBOUNDED_LO);
    struct plan_slice *s;
    size_t n;
    struct plan_bucket t;
    assert_int_equal(plan_take_refinement(p, &t), 0);
    assert_int_equal(plan_slices(p, &s, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(s[0].lo, PLAN_UNBOUNDED_LO);
    assert_int_equal(s[0].hi, PLAN_UNBOUNDED_HI);
    assert_int_equal(s[0].est_rows, 0);
    free(s);
    plan_free(p);

    p = plan_new(10000, DAY0);
    assert_int_equal(plan_add(p, NULL, 0), 0);
    assert_int_equal(plan_slices(p, &s, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(s[0].lo, DAY0);
    assert_int_equal(s[0].hi, PLAN_UNBOUNDED_HI);
    free(s);
    plan_free(p);
    plan_free(NULL);
}

static void test_levels(void **state)
{
    (void)state;
    assert_string_equal(plan_level_period(PLAN_DAY), "P1D");
    assert_string_equal(plan_level_period(PLAN_HOUR), "PT1H");
    assert_string_equal(plan_level_period(PLAN_MINUTE), "PT1M");
    assert_string_equal(plan_level_period(PLAN_SECOND), "PT1S");
    assert_null(plan_level_period(PLAN_EXACT));
    assert_int_equal(plan_level_width_ms(PLAN_DAY), 86400000);
    assert_int_equal(plan_level_width_ms(PLAN_HOUR), 3600000);
    assert_int_equal(plan_level_width_ms(PLAN_MINUTE), 60000);
    assert_int_equal(plan_level_width_ms(PLAN_SECOND), 1000);
    assert_int_equal(plan_level_width_ms(PLAN_EXACT), 1);
}

static void test_refinement_flow(void **state)
{
    (void)state;
    /* by hand: DAY -> HOUR -> MINUTE -> SECOND -> EXACT, each step replacing its parent */
    struct plan *p = plan_new(100, PLAN_UNBOUNDED_LO);
    struct plan_bucket day[] = {{DAY0 - 86400000, 50, PLAN_DAY}, {DAY0, 500, PLAN_DAY}};
    assert_int_equal(plan_add(p, day, 2), 0);
    struct plan_bucket t;
    int64_t hot = DAY0 + 3 * 3600000LL + 4 * 60000 + 5 * 1000 + 6;
    assert_int_equal(plan_take_refinement(p, &t), 1);
    assert_int_equal(t.level, PLAN_DAY);
    assert_int_equal(t.start_ms, DAY0);
    assert_int_equal(t.count, 500);
    assert_int_equal(plan_take_refinement(p, &t), 0); /* nothing else to refine */
    struct plan_bucket hour[] = {{DAY0 + 3 * 3600000LL, 450, PLAN_HOUR}, {DAY0, 50, PLAN_HOUR}};
    assert_int_equal(plan_add(p, hour, 2), 0);
    assert_int_equal(plan_take_refinement(p, &t), 1);
    assert_int_equal(t.level, PLAN_HOUR);
    assert_int_equal(t.start_ms, DAY0 + 3 * 3600000LL);
    struct plan_bucket minute[] = {{hot - 5006, 450, PLAN_MINUTE}};
    assert_int_equal(plan_add(p, minute, 1), 0);
    assert_int_equal(plan_take_refinement(p, &t), 1);
    assert_int_equal(t.level, PLAN_MINUTE);
    struct plan_bucket second[] = {{hot - 6, 440, PLAN_SECOND}, {hot - 6 + 1000, 10, PLAN_SECOND}};
    assert_int_equal(plan_add(p, second, 2), 0);
    assert_int_equal(plan_take_refinement(p, &t), 1);
    assert_int_equal(t.level, PLAN_SECOND);
    assert_int_equal(t.start_ms, hot - 6);
    struct plan_bucket exact[] = {{hot, 400, PLAN_EXACT}, {hot - 6, 40, PLAN_EXACT}};
    assert_int_equal(plan_add(p, exact, 2), 0);
    /* EXACT is never split, however big */
    assert_int_equal(plan_take_refinement(p, &t), 0);

    struct plan_slice *s;
    size_t n;
    assert_int_equal(plan_slices(p, &s, &n), 0);
    /* [lo, hot-6): 100 | [hot-6, hot): 40 | [hot, hot+994): 400 | [hot+994, inf): 10 */
    assert_int_equal(n, 4);
    int64_t total = 0;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        total += s[i].est_rows;
        if (s[i].lo == hot) {
            assert_int_equal(s[i].est_rows, 400);
            assert_int_equal(s[i].hi, hot - 6 + 1000); /* the next bucket's start */
            found = 1;
        } else {
            assert_true(s[i].est_rows <= 100);
        }
    }
    assert_true(found);
    assert_int_equal(total, 550);
    assert_int_equal(s[0].lo, PLAN_UNBOUNDED_LO);
    assert_int_equal(s[n - 1].hi, PLAN_UNBOUNDED_HI);
    free(s);
    plan_free(p);
}

static void test_pending_refinement(void **state)
{
    (void)state;
    struct plan *p = plan_new(10, 0);
    struct plan_bucket b[] = {{0, 50, PLAN_DAY}, {86400000, 50, PLAN_DAY}};
    assert_int_equal(plan_add(p, b, 2), 0);
    struct plan_bucket t1, t2;
    assert_int_equal(plan_take_refinement(p, &t1), 1);
    assert_int_equal(plan_take_refinement(p, &t2), 1);
    assert_int_equal(t1.start_ms, 0);
    assert_int_equal(t2.start_ms, 86400000);
    struct plan_slice *s = NULL;
    size_t n = 0;
    assert_int_equal(plan_slices(p, &s, &n), -1);
    assert_null(s);
    /* answering the second one leaves the first pending */
    struct plan_bucket h2[] = {{86400000 + 3600000, 5, PLAN_HOUR}};
    assert_int_equal(plan_add(p, h2, 1), 0);
    assert_int_equal(plan_slices(p, &s, &n), -1);
    /* the first one's rows vanished: an empty answer settles it */
    assert_int_equal(plan_add(p, NULL, 0), 0);
    assert_int_equal(plan_slices(p, &s, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(s[0].est_rows, 5);
    free(s);
    plan_free(p);
}

static void test_out_of_order_same_result(void **state)
{
    (void)state;
    struct plan_bucket b[40];
    srand(3);
    for (int i = 0; i < 40; i++)
        b[i] = (struct plan_bucket){DAY0 + i * 3600000LL, rand() % 4000, PLAN_HOUR};
    struct plan *p1 = plan_new(10000, DAY0), *p2 = plan_new(10000, DAY0);
    assert_int_equal(plan_add(p1, b, 40), 0);
    for (int i = 39; i >= 0; i--) /* one at a time, backwards */
        assert_int_equal(plan_add(p2, &b[i], 1), 0);
    struct plan_slice *s1, *s2;
    size_t n1, n2;
    assert_int_equal(plan_slices(p1, &s1, &n1), 0);
    assert_int_equal(plan_slices(p2, &s2, &n2), 0);
    assert_int_equal(n1, n2);
    assert_true(n1 > 1);
    assert_memory_equal(s1, s2, n1 * sizeof *s1);
    free(s1);
    free(s2);
    plan_free(p1);
    plan_free(p2);
}

static void test_exactly_batch(void **state)
{
    (void)state;
    struct plan *p = plan_new(10000, PLAN_UNBOUNDED_LO);
    struct plan_bucket b[] = {
        {DAY0, 3, PLAN_HOUR},
        {DAY0 + 3600000, 10000, PLAN_HOUR},
        {DAY0 + 7200000, 1, PLAN_HOUR},
    };
    assert_int_equal(plan_add(p, b, 3), 0);
    struct plan_bucket t;
    assert_int_equal(plan_take_refinement(p, &t), 0); /* not more than batch_size */
    struct plan_slice *s;
    size_t n;
    assert_int_equal(plan_slices(p, &s, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(s[0].lo, PLAN_UNBOUNDED_LO);
    assert_int_equal(s[0].hi, DAY0 + 3600000);
    assert_int_equal(s[0].est_rows, 3);
    assert_int_equal(s[1].lo, DAY0 + 3600000);
    assert_int_equal(s[1].hi, DAY0 + 7200000);
    assert_int_equal(s[1].est_rows, 10000);
    assert_int_equal(s[2].lo, DAY0 + 7200000);
    assert_int_equal(s[2].hi, PLAN_UNBOUNDED_HI);
    assert_int_equal(s[2].est_rows, 1);
    free(s);
    plan_free(p);

    /* two buckets that together make exactly batch_size share a slice */
    p = plan_new(10, 0);
    struct plan_bucket c[] = {{0, 4, PLAN_EXACT}, {5, 6, PLAN_EXACT}, {9, 1, PLAN_EXACT}};
    assert_int_equal(plan_add(p, c, 3), 0);
    assert_int_equal(plan_slices(p, &s, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(s[0].est_rows, 10);
    assert_int_equal(s[0].hi, 9);
    free(s);
    plan_free(p);
}

static void test_bucket_before_start(void **state)
{
    (void)state;
    /* the first DAY bucket is floored below start_ms: no cut may fall at or before it */
    int64_t start = DAY0 + 5000;
    struct plan *p = plan_new(10, start);
    struct plan_bucket b[] = {
        {DAY0, 8, PLAN_EXACT}, {start, 8, PLAN_EXACT}, {start + 1, 8, PLAN_EXACT}};
    assert_int_equal(plan_add(p, b, 3), 0);
    struct plan_slice *s;
    size_t n;
    assert_int_equal(plan_slices(p, &s, &n), 0);
    assert_int_equal(s[0].lo, start);
    for (size_t i = 0; i < n; i++)
        assert_true(s[i].lo < s[i].hi);
    assert_int_equal(s[n - 1].hi, PLAN_UNBOUNDED_HI);
    free(s);
    plan_free(p);
}

static void test_random_coverage(void **state)
{
    (void)state;
    for (unsigned seed = 1; seed <= 60; seed++) {
        srand(seed * 7919);
        size_t n = (size_t)(rand() % 3000);
        struct data d = {malloc((n + 1) * sizeof(int64_t)), n};
        int64_t base = DAY0 + (int64_t)(rand() % 1000) * 86400000LL - 400 * 86400000LL;
        for (size_t i = 0; i < n; i++) {
            switch (rand() % 4) {
            case 0: /* a burst at one instant */
                d.ts[i] = base + 777;
                break;
            case 1: /* spread over days, before 1970 too */
                d.ts[i] = base - 5 * 86400000LL + (int64_t)rand() * 97 % (15 * 86400000LL);
                break;
            case 2: /* within one second */
                d.ts[i] = base + 3600000 + rand() % 1000;
                break;
            default: /* minutes */
                d.ts[i] = base + (rand() % 600) * 60000;
            }
            if (seed % 3 == 0)
                d.ts[i] -= 2000000000000LL; /* entirely before the epoch */
        }
        qsort(d.ts, n, sizeof *d.ts, cmp_i64);
        int64_t batch = 1 + rand() % 400;
        int64_t start = PLAN_UNBOUNDED_LO;
        if (n && seed % 2)
            start = d.ts[rand() % n] + (rand() % 3) - 1;
        struct run r = plan_data(&d, batch, start);
        check_plan(&d, &r, batch, start);
        free(r.s);
        free(d.ts);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_wikiticker_day),
        cmocka_unit_test(test_one_hot_timestamp),
        cmocka_unit_test(test_refinement_flow),
        cmocka_unit_test(test_pending_refinement),
        cmocka_unit_test(test_out_of_order_same_result),
        cmocka_unit_test(test_exactly_batch),
        cmocka_unit_test(test_bucket_before_start),
        cmocka_unit_test(test_random_coverage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
