/* fake_io: what the scheduler talks to, faked for deterministic tests with no process,
 * socket or sleep. Replaces at link time libuv's timers and clock (a virtual clock), the
 * Druid client (queries answered from an in-memory datasource, with faults on request),
 * discovery (one datasource) and the PostgreSQL sink (a table of committed slices and a
 * state row, with failures on request). Every operation completes on a later step of
 * fake_run, in submission order, unless the test holds it. The model is chrony's
 * simulation tests: the real scheduling code, a fake world. */
#ifndef DSYNC_FAKE_IO_H
#define DSYNC_FAKE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "druid_error.h"

/* ---- the world ---- */
void fake_reset(void);
/* Virtual time (ms since the fake's epoch). */
uint64_t fake_now(void);
/* Runs: completes pending operations in order; when none is left, moves the clock to the
 * next timer and fires it. Stops when nothing is left, or the clock passes until_ms. Returns
 * the number of steps taken. */
int fake_run(uint64_t until_ms);
/* Completes only the operations pending now (no clock movement). */
void fake_step(void);

/* ---- Druid ---- */
/* The datasource "ds" (columns __time TIMESTAMP, v BIGINT): rows (ts_ms, v). */
void fake_druid_add_row(int64_t ts_ms, int64_t v);
/* Removes rows with ts in [lo, hi). */
void fake_druid_delete(int64_t lo, int64_t hi);
size_t fake_druid_rows(void);
/* The next query whose SQL contains `match` (NULL: any) fails with kind after delivering
 * after_rows rows (a truncated response). times: how many queries it hits. */
void fake_druid_fault(const char *match, enum druid_err_kind kind, int after_rows, int times);
/* Called before each count query of a refinement is answered (to change data between
 * planning queries). */
void fake_druid_before_count(void (*fn)(int level, int64_t lo, int64_t hi));
/* Queries answered (or failed), and those containing match. */
int fake_druid_queries(const char *match);
/* Queries not yet answered. */
int fake_druid_pending(void);

/* sys.segments: off (the default) answers like a Druid that forbids it (403); on lists one
 * segment per day of the rows, version `version`, num_rows known unless rows_unknown. */
void fake_druid_segments(bool on, const char *version, bool rows_unknown);
/* The segments of the day starting at day_ms are unavailable (true) or served again. */
void fake_druid_unavailable(int64_t day_ms, bool unavailable);

/* The segments of the day starting at day_ms are served by realtime tasks (true) or were
 * handed off. */
void fake_druid_realtime(int64_t day_ms, bool realtime);
/* The lower bound of the last slice query (INT64_MIN: unbounded). */
int64_t fake_druid_last_slice_lo(void);

/* ---- PostgreSQL sink ---- */
/* Hold commits instead of completing them; release one by its slice's lo bound. */
void fake_sink_hold_commits(bool hold);
int fake_sink_held(void);
/* The lower bounds of the held commits' slices, ascending (INT64_MIN: unbounded). */
int fake_sink_held_list(int64_t *los, int max);
/* Completes the held commit of the slice starting at lo; 0, -1 when none is held. */
int fake_sink_release(int64_t lo);
/* The next n commits fail with this SQLSTATE (conn_lost for connection failures). */
void fake_sink_fail_commits(const char *sqlstate, bool conn_lost, int n);
/* The committed table: rows stored (COPY lines), and how often each row (by its ts and v)
 * is stored. */
size_t fake_sink_rows(void);
int fake_sink_copies(int64_t ts_ms, int64_t v);
/* Slice commits done, and the cursor carried by commit k (0-based; INT64_MIN: none). */
int fake_sink_commits(void);
int64_t fake_sink_commit_cursor(int k);
/* The state row. */
const char *fake_sink_status(void); /* "ok", "error", "interrupted", "syncing", "" none */
int64_t fake_sink_cursor(void);     /* INT64_MIN none */
const char *fake_sink_last_error(void);
int fake_sink_cycle_ends(void);
/* The chunk ledger: rows, and the state/stored rows of the row starting at start_ms. */
int fake_ledger_rows(void);
const char *fake_ledger_state(int64_t start_ms);
int64_t fake_ledger_stored(int64_t start_ms);
/* Slice transactions open now. */
int fake_sink_open_slices(void);

#endif
