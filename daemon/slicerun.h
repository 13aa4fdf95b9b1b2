/* slicerun: one slice's pipeline. A writer transaction from the sink, the slice's Druid
 * query, each response row through the row encoder into COPY text, handed to the sink in
 * chunks with backpressure (the Druid response pauses while libpq's buffer is full), then
 * COMMIT with the cursor the committed prefix of slices allows. Failures go to the retry
 * policy (retry.c); a slice that cannot be retried fails the cycle and is never dropped. */
#ifndef DSYNC_SLICERUN_H
#define DSYNC_SLICERUN_H

#include "sched_int.h"

/* Starts slice idx of d's cycle. */
void slicerun_start(struct dsync *d, size_t idx);
/* Hard stop: cancels the Druid queries and rolls back every slice not yet committing;
 * their slices go back to pending. */
void slicerun_cancel_all(struct dsync *d);
/* Teardown: frees every run (the sink reclaims its side). */
void slicerun_free_all(struct dsync *d);
/* Rows read so far by the slices not yet committed, for progress. */
uint64_t slicerun_rows_in_flight(const struct dsync *d);

#endif
