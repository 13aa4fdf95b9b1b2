/* cycle: one datasource's sync cycle as a state machine: idle -> preparing (the table is
 * created or brought up to date, the state row read) -> planning (planning.c) -> running
 * (slices, slicerun.c, several in flight) -> finishing (the end recorded in the state row)
 * -> idle, with the next cycle's timer. Owns the per-cycle timers and retry waits, the
 * decision that a cycle succeeded, failed or was interrupted, and what a stop does to each
 * phase. */
#ifndef DSYNC_CYCLE_H
#define DSYNC_CYCLE_H

#include "sched_int.h"

/* Starts a cycle now (d is idle, present and selected). */
void cycle_start(struct dsync *d);
/* The next cycle starts in `seconds` (unless the datasource is busy or gone by then). */
void cycle_schedule(struct dsync *d, double seconds);
/* Planning is over: the cycle's slices, in order (the array is taken over). */
void cycle_planned(struct dsync *d, struct ledger_slice *sl, size_t n);
/* The ledger row that records work item `item` as done with `rows` rows read (segments
 * mode); max_ms: the newest __time read in it. Strings point into d's cycle. */
void cycle_chunk_record(const struct dsync *d, size_t item, int64_t rows, int64_t max_ms,
                        struct pgsink_chunk *out);
/* Starts slices while the concurrency limit allows. */
void cycle_pump(struct dsync *d);
/* Ends the cycle when nothing of it is in flight any more and it is complete, failed or
 * stopping. Safe to call at any time. */
void cycle_maybe_finish(struct dsync *d);
/* The cycle fails (the first reason is kept); it ends once nothing is in flight. */
void cycle_fail(struct dsync *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Runs fn(d, arg) after `seconds`, counted as in flight; a stop drops the wait and calls
 * drop(d, arg) instead (drop may be NULL). */
void cycle_call_later(struct dsync *d, double seconds, void (*fn)(struct dsync *, void *),
                      void (*drop)(struct dsync *, void *), void *arg);
/* Stop: retry waits end without running. */
void cycle_drop_delays(struct dsync *d);
/* Hard stop: also cancels planning queries and rolls back slices not yet committing. */
void cycle_cancel_all(struct dsync *d);
/* Teardown: frees everything of the datasource's cycle (the sink reclaims its side). */
void cycle_free(struct dsync *d);

#endif
