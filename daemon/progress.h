/* progress: what the daemon tells people while it works. Owns the live per-datasource lines
 * on a terminal (--once), the plain periodic progress lines elsewhere, and keeping systemd's
 * STATUS= current (start-up state, datasources syncing and their phases, rows/s, last error):
 * sent within a quarter second of a change, at most every 0.5 s, and at least every 5 s. */
#ifndef DSYNC_PROGRESS_H
#define DSYNC_PROGRESS_H

#include <stdbool.h>
#include <uv.h>

#include "scheduler.h"

struct progress; /* opaque */

/* live: draw redrawn lines on the terminal (else log a line per active datasource every
 * 10 s). NULL on OOM. */
struct progress *progress_start(uv_loop_t *loop, const struct sched *s, bool live);
/* Start-up text for STATUS= instead of the datasources' summary (the periodic refresh keeps
 * it, never "0 of 0 datasources syncing" before syncing starts); NULL goes back to the summary.
 * A changed text is sent at once (start-up events are few). Accepts p NULL. */
void progress_set_override(struct progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Erases the live lines and closes the timer. Accepts NULL. */
void progress_stop(struct progress *p);

#endif
