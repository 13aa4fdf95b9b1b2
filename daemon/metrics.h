/* metrics: the optional Prometheus endpoint (metrics_listen). Owns a small HTTP/1.x
 * responder on the loop (GET /metrics, text format 0.0.4) and the metric names; the numbers
 * come from the scheduler, the Druid client and the PostgreSQL sink at scrape time. */
#ifndef DSYNC_METRICS_H
#define DSYNC_METRICS_H

#include <stddef.h>
#include <uv.h>

#include "druid_client.h"
#include "pgsink.h"
#include "scheduler.h"

struct metrics; /* opaque */

/* Listens on listen ("IP:port"). NULL on failure with a message in err. */
struct metrics *metrics_start(uv_loop_t *loop, const char *listen, const struct sched *s,
                              const struct druid_client *d, const struct pgsink *p, char *err,
                              size_t errlen);
/* Closes the listener and open connections. Accepts NULL. */
void metrics_stop(struct metrics *m);
/* The text of a scrape (for tests and --once summaries). Caller frees. */
char *metrics_render(const struct sched *s, const struct druid_client *d, const struct pgsink *p);

#endif
