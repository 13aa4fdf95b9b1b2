/* lease: this instance's work leases in the destination (issue 10; reference druid-segments.md
 * section 7), on top of the sink's lease table (sinks/pglease.h). Owns the instance's name
 * (instance_name, default host name and process id), its heartbeat unit, one datasource unit
 * per datasource ("ds:NAME") with the epoch it holds, the renewal timer (every lease_seconds
 * / 3, on the sink's lease connection, never blocking the loop), the local distrust of a
 * lease that could not be renewed in time, the fair share (ceil(selected datasources / live
 * instances)) and the hand-over of units beyond it, the wait of --once for units another
 * instance holds, and the release of everything on a clean stop. Every slice of a held unit
 * carries the fence (pgsink_fence_set), so a commit after the lease was lost rolls back. */
#ifndef DSYNC_LEASE_H
#define DSYNC_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sched;
struct dsync;

/* The instance's name: instance_name, or "HOST:PID". */
void lease_init(struct sched *s);
const char *lease_owner(const struct sched *s);

/* Daemon mode: takes the heartbeat unit, learns how many instances are alive, starts the
 * renewal timer, then calls ready(s) (also when PostgreSQL refused: the next renewal
 * tries again). --once: calls ready at once (a one-off run is not a member). */
void lease_start(struct sched *s, void (*ready)(struct sched *s));

/* Before a cycle of d does anything in Druid or PostgreSQL: granted(d) once this instance
 * holds d's unit (claimed now or still valid). When it does not (held by another instance,
 * beyond this instance's share, or the claim failed) granted is not called: d->st is back to
 * idle, the next attempt scheduled, and the reason logged (--once: d fails after waiting). */
void lease_acquire(struct dsync *d, void (*granted)(struct dsync *d));

/* The cycle of d ended: hands d over when this instance holds more than its share. */
void lease_cycle_end(struct dsync *d);

/* The fence refused one of d's commits, or a renewal found the unit taken: d stops using it
 * (its cycle ends interrupted, without writing its end). why is logged. */
void lease_lost(struct dsync *d, const char *why);

/* Everything held is given back (clean stop or the end of --once); done(s) follows, also
 * when PostgreSQL refused (the leases then expire by themselves). true: a release is under
 * way or done; call again after done. */
bool lease_release_all(struct sched *s, void (*done)(struct sched *s));

/* Until when a lease granted or renewed by a request sent at loop time sent is trusted
 * (its length less a margin). */
uint64_t lease_valid_until(const struct sched *s, uint64_t sent);

/* For STATUS= and metrics: units held, live instances seen at the last renewal. */
size_t lease_held_count(const struct sched *s);
int lease_live_instances(const struct sched *s);

/* The renewal timer is stopped and closed; held units are not released (see above). */
void lease_free(struct sched *s);

#endif
