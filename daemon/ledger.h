/* ledger: the bookkeeping of what a cycle planned and committed, as pure functions over
 * its slice table. The cursor a commit may carry is the greatest incremental value of the
 * committed prefix of slices: a cursor never passes a slice that has not committed (a crash
 * then re-reads from there) and never moves back. A cycle is complete only when every
 * planned slice committed. */
#ifndef DSYNC_LEDGER_H
#define DSYNC_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plan.h"

enum ledger_status {
    LEDGER_PENDING, /* not started, or put back after a failure or a stop */
    LEDGER_RUNNING, /* in flight, or waiting for its retry */
    LEDGER_DONE,    /* committed */
};

struct ledger_slice {
    struct plan_slice r;
    enum ledger_status status;
    int64_t max_seen; /* greatest incremental value committed by this slice, INT64_MIN none */
    int attempts;
    size_t w0, w1; /* the chunk work items it reads (ledger_work indices), SIZE_MAX none */
    bool away;     /* chunk units: another instance holds one of its chunks (pending) */
};

/* ---- the chunk ledger (segments mode) ---- */

enum ledger_state { LEDGER_SYNCED, LEDGER_WAITING, LEDGER_POSTPONED };

/* One time chunk: from Druid's snapshot (its active segments) or a ledger row. */
struct ledger_chunk {
    int64_t start_ms, end_ms;
    char start[48], end[48]; /* as Druid prints them */
    char fp[33];             /* fingerprint of the active segments (hex), "" unknown */
    int64_t druid_rows;      /* sum of num_rows; -1 when a segment's is unknown (0) */
    int64_t stored_rows;     /* ledger: rows read when it was synced */
    bool available;          /* snapshot: every active segment is served */
    bool realtime;           /* snapshot: some segment is served only by realtime tasks */
    enum ledger_state state; /* ledger */
    int64_t postponed_since_ms;
    int64_t position_ms;  /* ledger, open chunks: the newest __time read, INT64_MIN none */
    int64_t full_read_ms; /* ledger, open chunks: when it was last read whole, 0 never */
    bool drop_held;       /* ledger: a snapshot dropped it with too many others; held back */
};

/* One active segment of sys.segments (the daemon's snapshot and the `plan` command read the
 * same rows). id is owned by the caller; start and end are the interval as Druid prints it. */
struct ledger_segment {
    char *id;
    const char *start, *end;
    int64_t start_ms, end_ms, size, num_rows;
    bool available, realtime;
};

/* Segments to chunks: overlapping intervals are one chunk (a partial reindex inside a coarser
 * chunk, or a granularity change), fingerprinted over the chunk's segment ids and sizes in id
 * order. Sorts segs in place. out has room for n chunks; bytes, when not NULL, has room for n
 * and gets each chunk's segment sizes summed. Returns the number of chunks. */
size_t ledger_chunks_from_segments(struct ledger_segment *segs, size_t n, struct ledger_chunk *out,
                                   int64_t *bytes);

enum ledger_action {
    LEDGER_READ,     /* new or changed (or open): read its range (fast or merge path) */
    LEDGER_POSTPONE, /* some active segment unavailable: neither read nor flagged */
    LEDGER_DROP,     /* in the ledger, no longer active: its rows follow follow_drops */
};

struct ledger_work {
    enum ledger_action action;
    int64_t lo, hi;
    size_t snap;          /* the snapshot chunk (READ, POSTPONE); SIZE_MAX for DROP */
    bool fresh;           /* READ: no ledger row overlaps it */
    int64_t rows;         /* READ: rows Druid reports, -1 unknown */
    int64_t since_ms;     /* POSTPONE: postponed since (epoch ms) */
    bool open;            /* READ: realtime segments serve it: it stays 'pending' */
    int64_t position_ms;  /* open: the newest __time read before, INT64_MIN none */
    int64_t full_read_ms; /* open: when it is (lo = chunk start) or was last read whole */
};

struct ledger_opts {
    int64_t now_ms;
    int64_t reread_ms; /* an open chunk is read whole at most this often, else from its position */
    bool hold_drops;   /* drops are held back this time (more than half, not yet confirmed) */
};

/* Compares Druid's chunks (snap, by start, disjoint) with the ledger rows (led, by start)
 * and lists the work, by range: chunks matched by overlap, not exact bounds. An unchanged
 * chunk (one ledger row, same bounds, same fingerprint, synced, not realtime) is no work.
 * An open (realtime) chunk is read from its position (the newest __time read, inclusive)
 * and whole again every reread_ms; its handoff (no realtime segment left) reads it whole.
 * *ndrops: ledger rows that vanished from the active set (counted even when held). Returns
 * 0, -1 on OOM; *out is malloc'd. */
int ledger_diff(const struct ledger_chunk *snap, size_t ns, const struct ledger_chunk *led,
                size_t nl, const struct ledger_opts *o, struct ledger_work **out, size_t *nout,
                size_t *ndrops);

/* The greatest max_seen of the committed prefix of sl[0..n), with slice `upto` counted as
 * committed with `this_max` (upto = SIZE_MAX: none). INT64_MIN when the prefix holds no
 * value, or when `upto` is not part of the prefix (an earlier slice is not committed). */
int64_t ledger_prefix_max(const struct ledger_slice *sl, size_t n, size_t upto, int64_t this_max);

/* The cursor to record: candidate, but never behind committed (INT64_MIN: none). */
int64_t ledger_cursor(int64_t committed, int64_t candidate);

/* Which ledger rows no chunk of the snapshot overlaps (gone[j], nl entries): dropped. Returns
 * how many. */
size_t ledger_dropped(const struct ledger_chunk *snap, size_t ns, const struct ledger_chunk *led,
                      size_t nl, bool *gone);

/* Is work item `item` complete once every slice reading it but `except` (SIZE_MAX: none)
 * has committed? (A chunk cut into several slices is complete with its last one.) */
bool ledger_item_complete(const struct ledger_slice *sl, size_t n, size_t item, size_t except);

/* Slices committed. */
size_t ledger_done(const struct ledger_slice *sl, size_t n);

#endif
