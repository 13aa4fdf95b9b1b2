/* metrics: the optional Prometheus endpoint (metrics_listen). Owns a small HTTP/1.x
 * responder on the loop (GET /metrics, text format 0.0.4) and the metric names; the numbers
 * come from the scheduler, the Druid client and the PostgreSQL sink at scrape time. */
#ifndef DSYNC_METRICS_H
#define DSYNC_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "druid_client.h"
#include "pgsink.h"
#include "scheduler.h"

struct metrics; /* opaque */

/* Starts listening on listen ("IP:port", "[IPv6]:port", ":port" or "name:port"). The
 * address is resolved on libuv's thread pool (uv_getaddrinfo), never on the loop, within
 * resolve_timeout seconds; a name is served on every address it resolves to (localhost: ::1
 * and 127.0.0.1). on_ready(ud, NULL) once listening, or on_ready(ud, reason) once it cannot
 * (then call metrics_stop). NULL (and err) when listen cannot be parsed or on OOM. */
struct metrics *metrics_start(uv_loop_t *loop, const char *listen, double resolve_timeout,
                              const struct sched *s, const struct druid_client *d,
                              const struct pgsink *p, void (*on_ready)(void *ud, const char *err),
                              void *ud, char *err, size_t errlen);
/* Closes the listener and open connections. Accepts NULL. */
void metrics_stop(struct metrics *m);
/* What druid_syncd_up{target} says: 1 once the daemon has reached that peer, 0 while it
 * waits for it (both 0 before the first check). Kept by the module, whether or not metrics are
 * served. */
enum metrics_target { METRICS_DRUID, METRICS_POSTGRES };
void metrics_set_up(enum metrics_target t, bool up);

/* The text of a scrape (for tests and --once summaries). Caller frees. */
char *metrics_render(const struct sched *s, const struct druid_client *d, const struct pgsink *p);

#endif
