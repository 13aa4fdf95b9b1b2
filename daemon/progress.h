/* progress: what the daemon tells people while it works. Owns the live per-datasource lines
 * on a terminal (--once), the plain periodic progress lines elsewhere, and keeping systemd's
 * STATUS= current (datasources syncing, rows/s, last error). */
#ifndef DSYNC_PROGRESS_H
#define DSYNC_PROGRESS_H

#include <stdbool.h>
#include <uv.h>

#include "scheduler.h"

struct progress; /* opaque */

/* live: draw redrawn lines on the terminal (else log a line per active datasource every
 * 10 s). NULL on OOM. */
struct progress *progress_start(uv_loop_t *loop, const struct sched *s, bool live);
/* Erases the live lines and closes the timer. Accepts NULL. */
void progress_stop(struct progress *p);

#endif
