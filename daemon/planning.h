/* planning: turns Druid's metadata into the cycle's work. Today: row counts per day of the
 * slice column, refined to hours, minutes, seconds and single timestamps where a bucket
 * holds more than batch_size rows (plan.c packs them into slices). Owns the count queries,
 * their retries (a retried query's buckets count once) and refinements that come back
 * empty (the data was deleted meanwhile). Hands the slices to cycle_planned.
 * With sys.segments (segments.c) it plans from the chunk ledger instead; where that cannot be
 * read, it compares Druid's row counts and numeric sums per day, refined to hours, with what
 * PostgreSQL holds, and reads the hours that differ. */
#ifndef DSYNC_PLANNING_H
#define DSYNC_PLANNING_H

#include "sched_int.h"

/* Plans the cycle of d from d->start_ms (the cursor minus the lookback, or unbounded). */
void planning_start(struct dsync *d);
/* Hard stop: cancels the count queries in flight. */
void planning_cancel(struct dsync *d);
/* Teardown: also frees what still waits for PostgreSQL (the sink is freed next). */
void planning_free(struct dsync *d);

#endif
