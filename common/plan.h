/* plan: the slice planner. Pure logic, no I/O. The scheduler feeds it per-bucket row
 * counts of the incremental column (coarse buckets first, then finer ones for buckets that
 * hold more than batch_size rows) and it packs them into half-open slices [lo, hi) of about
 * batch_size rows. A single timestamp is never split, however many rows share it. */
#ifndef DSYNC_PLAN_H
#define DSYNC_PLAN_H

#include <stddef.h>
#include <stdint.h>

/* Bucket granularities, coarse to fine. PLAN_EXACT groups by the column itself. */
enum plan_level {
    PLAN_DAY = 0, /* TIME_FLOOR(col, 'P1D') */
    PLAN_HOUR,    /* 'PT1H' */
    PLAN_MINUTE,  /* 'PT1M' */
    PLAN_SECOND,  /* 'PT1S' */
    PLAN_EXACT,   /* GROUP BY the timestamp itself: one bucket per distinct value */
};

#define PLAN_UNBOUNDED_LO INT64_MIN
#define PLAN_UNBOUNDED_HI INT64_MAX

/* "P1D", "PT1H", "PT1M", "PT1S"; NULL for PLAN_EXACT. */
const char *plan_level_period(enum plan_level l);
/* 86400000, 3600000, 60000, 1000, 1. */
int64_t plan_level_width_ms(enum plan_level l);

struct plan_bucket {
    int64_t start_ms; /* bucket start (the TIME_FLOOR value, or the timestamp for EXACT) */
    int64_t count;    /* rows in the bucket */
    enum plan_level level;
};

struct plan_slice {
    int64_t lo;       /* inclusive; PLAN_UNBOUNDED_LO for no lower bound */
    int64_t hi;       /* exclusive; PLAN_UNBOUNDED_HI for no upper bound */
    int64_t est_rows; /* rows counted at planning time */
};

struct plan; /* opaque */

/* Plans the range [start_ms, +inf) (start_ms may be PLAN_UNBOUNDED_LO). NULL on OOM. */
struct plan *plan_new(int64_t batch_size, int64_t start_ms);
void plan_free(struct plan *p);

/* Adds buckets of one level. When they refine a bucket taken by plan_take_refinement, they
 * replace it; buckets may arrive in any order. 0, or -1 on OOM. */
int plan_add(struct plan *p, const struct plan_bucket *b, size_t n);

/* If some bucket holds more than batch_size rows and is not yet at PLAN_EXACT, removes it
 * from the plan, writes it to *out and returns 1: the caller must count its range
 * [start, start + width(level)) at level + 1 and plan_add the result. Returns 0 when
 * nothing needs refining. */
int plan_take_refinement(struct plan *p, struct plan_bucket *out);
/* The answer to one refinement: taken is the bucket plan_take_refinement handed out, b[0..n)
 * its finer buckets (n may be 0: its rows went away meanwhile). Settles exactly that
 * refinement, whatever the order answers arrive in. 0, or -1 on OOM or when taken is not a
 * pending refinement. */
int plan_refined(struct plan *p, const struct plan_bucket *taken, const struct plan_bucket *b,
                 size_t n);

/* Packs the buckets into slices covering [start_ms, +inf) without gaps: the first slice
 * starts at start_ms, the last is unbounded above, cuts fall on bucket starts. Always at
 * least one slice (a range with no rows still needs reading to detect deletions).
 * *out is malloc'd (caller frees). 0, or -1 on OOM or when refinements are pending. */
int plan_slices(struct plan *p, struct plan_slice **out, size_t *n);

#endif
