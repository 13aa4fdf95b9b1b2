/* sched_int: the scheduler's shared state, seen by its parts only (scheduler.c: discovery
 * rounds, stop, reports; registry.c: datasources and selection; cycle.c: one datasource's
 * cycle; planning.c: row counts to slices; slicerun.c: one slice's pipeline; retry.c and
 * ledger.c: pure policy and bookkeeping). Nothing outside daemon/ includes it. */
#ifndef DSYNC_SCHED_INT_H
#define DSYNC_SCHED_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "discovery.h"
#include "druid_client.h"
#include "ledger.h"
#include "pgsink.h"
#include "plan.h"
#include "rowenc.h"
#include "scheduler.h"

enum ds_state { DS_IDLE, DS_PREPARING, DS_PLANNING, DS_RUNNING, DS_FINISHING };

struct dsync;
struct countq;
struct cmpq;
struct slicerun;
struct lease_state;

/* A retry waiting for its timer. drop (may be NULL) releases arg when a stop ends the
 * wait instead. */
struct delayed {
    uv_timer_t t;
    struct dsync *d;
    struct delayed *next, *prev;
    void (*fn)(struct dsync *d, void *arg);
    void (*drop)(struct dsync *d, void *arg);
    void *arg;
};

/* A chunk unit of this cycle (chunklease.c): one per work item of a first load read under
 * chunk units, so that several instances read the chunks of one datasource. */
struct chunk_unit {
    char *unit;           /* "chunk:NAME:START_MS" */
    int64_t epoch;        /* the token it was taken at */
    uint64_t valid_until; /* loop time: not trusted after this without a renewal */
    bool held;            /* taken in this cycle and not given back */
    bool dirty;           /* taken dirty: its slices empty their ranges first */
    bool claiming;        /* a claim with it is in flight */
};

struct dsync {
    struct sched *s;
    struct dsync *next;
    char *name;     /* the Druid datasource (its table in Druid's SQL, its state row) */
    char *sink_key; /* the sink's key for this cycle's slices, ledger rows and counts: the
                     * name, or during a resync the shadow's key (pgsink_resync_key) */
    struct discovery_column *cols; /* as last discovered */
    size_t ncols;
    bool present;
    bool selected;
    enum ds_state st;
    uv_timer_t timer;
    /* --once bookkeeping */
    bool once_done;
    bool once_failed;
    /* the current cycle */
    struct discovery_column *ccols;
    const char **ccol_names; /* ccols' names, for the slice query */
    size_t nccols;
    enum pgtype *types;
    char *slice_col;
    int inc_idx;
    int time_idx; /* index of __time, -1 if the datasource has none */
    bool incremental;
    int64_t start_ms;
    struct plan *plan;
    struct ledger_slice *slices;
    size_t nslices, next_slice;
    bool planned; /* planning ended with these slices: an item no slice covers is complete */
    int running;
    int outstanding; /* async operations not yet returned */
    struct countq *counts;
    struct slicerun *runs;
    struct delayed *delays;
    bool failed;
    bool paused;    /* the last reading of the operator requests said paused */
    bool unordered; /* Druid refused ORDER BY "__time" for this datasource */
    char err[1024];
    /* the cause of the failure in err, for structured logs: "" / 0 where unknown */
    char err_kind[32], err_sqlstate[6], err_druid_code[96];
    long err_http_status;
    uint64_t t0;
    int64_t rows_read, inserted, vanished;
    size_t fast_slices;
    int64_t est_rows;
    /* since start, for metrics and progress */
    uint64_t rows_total, rows_read_total, bytes_total, slices_total, cycles_ok, cycles_failed;
    uint64_t cycles_interrupted;
    uint64_t nul_replaced_total, json_as_string_total, rows_skipped_total;
    double last_success;
    int failed_cycles;           /* consecutive failed cycles: the next one waits longer */
    struct pgsink_table_req req; /* the table request of this cycle, until it is sent */
    struct pgsink_column *req_cols;
    int prep_attempts;     /* tries to prepare the table in this cycle */
    int end_attempts;      /* tries to record the end of this cycle */
    int64_t end_cursor_ms; /* the cursor that end records, INT64_MIN none */
    bool interrupted;      /* this cycle was stopped before every slice committed */
    int64_t cursor_ms;     /* committed cursor, INT64_MIN unknown */
    /* segments mode (the chunk ledger): datasources read by __time */
    bool ledger_mode;           /* this cycle plans from sys.segments and the ledger */
    const char *detection;      /* "segments", "counts" or "cursor" (last cycle's) */
    bool table_reset;           /* the table was created or found empty at prepare */
    bool migrating;             /* its rows carry ids of an older scheme: read everything again */
    bool counts_mode;           /* segments unreadable: buckets compared with PostgreSQL */
    bool ledger_stale;          /* its ledger rows predate the table's rows (rebuilt): none
                                 * says a chunk is read */
    struct cmpq *cmps;          /* bucket comparisons in flight (planning.c) */
    struct cmpq *cmp_orphans;   /* ... cancelled, still waiting for PostgreSQL's answer */
    struct ledger_chunk *snapc; /* this cycle's snapshot chunks */
    size_t nsnapc;
    struct ledger_chunk *ledc; /* this cycle's ledger rows */
    size_t nledc;
    struct ledger_work *work; /* this cycle's chunk work, by range */
    size_t nwork;
    int64_t *work_rows;        /* rows committed per work item */
    int64_t *work_max;         /* newest __time committed per work item, INT64_MIN none */
    bool *work_recorded;       /* its ledger row was written with the data */
    struct plan **plans;       /* per work item that needs counting, else NULL */
    struct pgsink_chunk *held; /* ledger rows whose drop-held mark changes this cycle */
    size_t nheld;
    size_t postponed;                         /* chunks postponed in the last cycle */
    int64_t chunk_newest_ms, chunk_synced_ms; /* newest active / synced chunk end */
    int64_t druid_newest_ms; /* newest incremental value seen in Druid, INT64_MIN unknown */
    /* resync (SPEC 1): this cycle rebuilds into the shadow and ends with the swap */
    bool resync;
    bool resync_swapped; /* the swap committed */
    bool last_resync;    /* the previous cycle was a resync: cursor_ms was the shadow's */
    /* its work lease (lease.c) */
    char *lease_unit;    /* "ds:NAME" */
    bool lease_held;     /* this instance holds it at lease_epoch */
    bool lease_gone;     /* lost during this cycle: it ends without writing its end */
    bool lease_handover; /* beyond this instance's share: no new slice, released at the end
                          * of the cycle */
    int64_t lease_epoch;
    uint64_t lease_valid_until; /* loop time: not trusted after this without a renewal */
    uint64_t lease_wait_start;  /* --once: when it began waiting for another's unit, 0 none */
    char lease_holder[192];     /* the other holder last seen, "" none */
    /* chunk units (chunklease.c): a first load's chunks claimed one slice at a time */
    bool chunk_units;      /* this cycle reads its chunks under chunk units */
    bool helping;          /* another instance holds d: this cycle only reads free chunks */
    bool help_said;        /* "helping" was logged for the current holder */
    struct chunk_unit *cu; /* per work item (nwork), with chunk_units */
    size_t away;           /* slices left to other instances, not resolved yet */
    bool recheck_pending;  /* a check of them again is scheduled */
    size_t slice_off;      /* slices are started from this one on (helpers spread out) */
    size_t helped_slices;  /* slices this help cycle committed */
};

struct sched {
    uv_loop_t *loop;
    const struct config *cfg;
    struct druid_client *druid;
    struct pgsink *sink;
    struct sched_opts opts;
    struct dsync *ds;
    uv_timer_t disc_timer;
    uv_timer_t stop_timer;
    bool started;
    uint64_t last_progress; /* loop time of the last row, drain, answer or timer of ours */
    uint64_t quiet_until;   /* a retry wait of ours ends then: quiet until it is legitimate */
    bool schema_lost;       /* PostgreSQL said the destination schema or a table is gone */
    bool ensuring;          /* discovery waits for the schema to be created again */
    bool stopping;
    bool stop_hard;
    bool auth_blocked;
    bool finished_reported;
    bool once_discovered;
    int disc_attempts;
    char last_error[512];
    struct sched_counters counters;
    struct discovery *disc;             /* the catalog read in progress, if any */
    struct segsnap *snap;               /* the last sys.segments snapshot (segments.c) */
    struct lease_state *lease;          /* this instance's leases (lease.c) */
    size_t last_ntables, last_selected; /* to log discoveries that changed something */
};

#define LIST_PUSH(head, x)                                                                         \
    do {                                                                                           \
        (x)->prev = NULL;                                                                          \
        (x)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (x);                                                                    \
        (head) = (x);                                                                              \
    } while (0)
#define LIST_DEL(head, x)                                                                          \
    do {                                                                                           \
        if ((x)->prev)                                                                             \
            (x)->prev->next = (x)->next;                                                           \
        else                                                                                       \
            (head) = (x)->next;                                                                    \
        if ((x)->next)                                                                             \
            (x)->next->prev = (x)->prev;                                                           \
    } while (0)

/* Allocation failures abort: a daemon that cannot allocate a few bytes cannot go on. */
static inline void *sched_xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p)
        abort();
    return p;
}

static inline char *sched_xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        abort();
    return p;
}

/* Something moved: the watchdog's evidence that work in flight is not stuck. */
static inline void sched_touch(struct sched *s)
{
    s->last_progress = uv_now(s->loop);
}

/* scheduler.c */
void sched_set_last_error(struct sched *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* 401/403 from Druid: every query stops until a reload lifts it (SPEC 4); said once. */
void sched_block_on_auth(struct sched *s, long http_status, const char *message);
/* A datasource's cycle ended, or a stop moved on: report --once's or the stop's end. */
void sched_check_finished(struct sched *s);

#endif
