/* retry: the fault policy, as pure functions of the configuration and the failure. Which
 * Druid and PostgreSQL failures are retried and after how long (exponential backoff from
 * retry_initial_seconds, capped at retry_max_seconds, never shorter than a Retry-After),
 * which stop a slice at once, and how long a datasource whose cycles keep failing waits.
 * The classification itself is druid_err_retryable (Druid) and pgerr_action (PostgreSQL);
 * this module turns it into delays. No I/O, no clock. */
#ifndef DSYNC_RETRY_H
#define DSYNC_RETRY_H

#include <stdbool.h>

#include "config.h"
#include "druid_error.h"
#include "pgerr.h"

/* The backoff before attempt `attempt` (1 = the first retry): retry_initial_seconds *
 * 2^(attempt-1), capped at retry_max_seconds, raised to retry_after when that is longer. */
double retry_backoff(const struct config *c, int attempt, double retry_after);

/* A Druid query failed for the attempts-th time. The delay before trying again, or -1: do
 * not retry (not retryable or permanent, retries used up, or stopping). *auth is set when Druid
 * refused our credentials: every query stops until a reload (SPEC 4). */
double retry_druid(const struct config *c, const struct druid_error *e, int attempts, bool stopping,
                   bool *auth);

/* A PostgreSQL operation failed for the attempts-th time: connection loss, restarts,
 * serialization failures and deadlocks are retried on a fresh connection after a backoff;
 * everything else fails at once (-1). *schema_lost is set when the destination schema or a
 * table is gone (it is created again before the next cycle). */
double retry_postgres(const struct config *c, const struct pgerr *e, int attempts, bool stopping,
                      bool *schema_lost);

/* Under --once, start-up gives up on an unreachable Druid or PostgreSQL within this many
 * connect_timeout_seconds. */
#define RETRY_STARTUP_BOUND 3.0

/* The start-up check of Druid (the probe) or PostgreSQL (the first connection) failed for
 * the attempts-th time, elapsed seconds after start. The delay before the next attempt, or -1:
 * give up (--once exits 1). The daemon never gives up: the backoff, or for a permanent
 * failure (retry_druid's sense) the wait of a failed cycle (retry_next_cycle). --once gives up
 * at once on a permanent failure, after max_retries, and when one more attempt (the delay and a
 * whole connect_timeout_seconds) could end later than RETRY_STARTUP_BOUND connect timeouts
 * after start. */
double retry_startup(const struct config *c, bool permanent, int attempts, bool once,
                     double elapsed);

/* "PostgreSQL (constraint, 23514): ERROR: ...": the failure with its class and SQLSTATE,
 * as every log line about a PostgreSQL failure shows it. */
void retry_pg_describe(const struct pgerr *e, char *out, size_t n);

/* The wait before the next cycle of a datasource after failed_cycles consecutive failed
 * cycles (0: the last one succeeded): never less than sync_interval_seconds, growing with
 * the backoff so that a permanent error (a constraint, a full disk) is no tight loop. */
double retry_next_cycle(const struct config *c, int failed_cycles);

/* The wait before the next catalog read after attempts failures in a row. Daemon mode
 * never waits longer than the sync interval. */
double retry_discovery(const struct config *c, int attempts, bool once);

#endif
