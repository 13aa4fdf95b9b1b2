/* pgctl: operator requests a running daemon reads from PostgreSQL (SPEC 1: pause, resume,
 * resync): the `paused` flag and the pending resync request of a datasource's state row,
 * read on the control connection without blocking the loop. The operator commands
 * (daemon/opcmd.c) write them; every instance sharing the destination reads them at the
 * start of each cycle, so a request takes effect within one cycle. */
#ifndef DSYNC_PGCTL_H
#define DSYNC_PGCTL_H

#include <stdbool.h>

#include "pgsink.h"

struct pgctl_requests {
    bool known;                   /* the datasource has a state row */
    bool paused;                  /* skip its cycles until resumed */
    const char *resync_requested; /* when a resync was asked for (text), NULL none */
    const char *resync_started;   /* a rebuild under way since then (text), NULL none */
};
/* err is NULL on success; r (and its strings) are borrowed for the call, NULL on error. */
typedef void (*pgctl_cb)(void *ud, const char *err, const struct pgctl_requests *r);
void pgsink_ctl_read(struct pgsink *s, const char *datasource, pgctl_cb cb, void *ud);

#endif
