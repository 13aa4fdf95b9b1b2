/* scheduler (sched_): the scheduler's face. A discovery of the Druid schema (discovery.c) at
 * start and every interval, then per datasource a cycle: prepare its table, plan slices,
 * run them (Druid query -> row encoder -> PostgreSQL COPY, several in flight), commit each
 * with its state row, retry failures with backoff, schedule the next cycle. The parts:
 * registry.c (datasources, selection), cycle.c (the per-datasource state machine),
 * planning.c (metadata to slices), slicerun.c (one slice's pipeline), retry.c (the fault
 * policy), ledger.c (what committed). It connects the Druid client and the PostgreSQL
 * sink and writes no SQL itself (Druid's is in druidsql.c, PostgreSQL's in sinks/). */
#ifndef DSYNC_SCHED_H
#define DSYNC_SCHED_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "druid_client.h"
#include "pgsink.h"

struct sched; /* opaque */

struct sched_opts {
    bool once;               /* one cycle of every selected datasource, then done */
    const char *const *only; /* --datasource names (NULL-terminated) or NULL */
    void (*on_finished)(void *ud, int exit_code); /* --once: all done; stop: all stopped */
    void *ud;
};

/* Everything is borrowed and must outlive the scheduler. */
struct sched *sched_new(uv_loop_t *loop, const struct config *cfg, struct druid_client *druid,
                        struct pgsink *sink, const struct sched_opts *opts);
void sched_free(struct sched *s);
/* Starts the first discovery. */
void sched_start(struct sched *s);
/* A new configuration for cycles started from now on; lifts a stop caused by 401/403. */
void sched_set_config(struct sched *s, const struct config *cfg);
/* Graceful stop: no new slices or cycles; slices in flight commit or roll back; then
 * on_finished(ud, 0). A second call (or the timeout) rolls back everything in flight. */
void sched_stop(struct sched *s, double timeout_seconds);

/* One line for systemd STATUS= and logs. Writes into out. */
void sched_status(const struct sched *s, char *out, size_t n);

/* A snapshot of one datasource, for progress lines and metrics. */
struct sched_ds_info {
    const char *name;
    const char *phase;             /* "idle", "preparing", "planning", "syncing", "finishing" */
    bool selected;                 /* selected and in Druid's catalog */
    uint64_t rows_total;           /* rows newly stored (new identities), since start */
    uint64_t rows_read_total;      /* rows read from Druid in committed slices, since start */
    uint64_t bytes_total;          /* COPY bytes of committed slices, since start */
    uint64_t slices_total;         /* slices committed, since start */
    uint64_t nul_replaced_total;   /* NUL characters stored as U+FFFD, since start */
    uint64_t json_as_string_total; /* jsonb values too deep, stored as JSON strings */
    uint64_t rows_skipped_total;   /* rows left out: timestamps outside PostgreSQL's range */
    uint64_t cycles_ok, cycles_failed, cycles_interrupted;
    uint64_t cycle_rows; /* this cycle: rows read so far (committed or in flight) */
    size_t slices_done, slices_planned;
    int64_t cycle_est_rows;   /* this cycle: rows counted at planning */
    double cycle_seconds;     /* this cycle: time since it started */
    double last_success;      /* unix time of the last successful cycle, 0 if none */
    double lag_seconds;       /* newest Druid row minus committed cursor; < 0 unknown */
    const char *detection;    /* "segments", "counts", "cursor", "full"; NULL before a cycle */
    size_t chunks_postponed;  /* chunks with unavailable segments, in the last cycle */
    bool paused;              /* its last cycle found it paused by an operator */
    bool lease_held;          /* this instance holds its work lease */
    const char *lease_holder; /* the other instance seen holding it, NULL none known */
};

/* Error kinds counted by sched_counters: the druid_err_kind values, then PostgreSQL. */
#define SCHED_ERR_POSTGRES 8
#define SCHED_ERR_KINDS 9
struct sched_counters {
    uint64_t retries[SCHED_ERR_KINDS];
    uint64_t errors[SCHED_ERR_KINDS]; /* failures that ended a cycle */
};
const char *sched_err_kind_name(int kind);

void sched_foreach(const struct sched *s, void (*fn)(void *ud, const struct sched_ds_info *i),
                   void *ud);
const struct sched_counters *sched_get_counters(const struct sched *s);
/* This instance's name (instance_name or host:pid) and the instances alive at the last lease
 * renewal (0: not known yet; a --once run is not counted). */
const char *sched_instance(const struct sched *s);
int sched_live_instances(const struct sched *s);
/* False when work is in flight but nothing has moved for longer than any bound the daemon
 * sets itself (Druid's and PostgreSQL's timeouts, the backoff cap): the watchdog then stops
 * pinging, so systemd restarts a daemon that is stuck. stuck_seconds: the quiet time. */
bool sched_healthy(const struct sched *s, double *stuck_seconds);

#endif
