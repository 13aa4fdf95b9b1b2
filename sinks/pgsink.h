/* pgsink: the PostgreSQL side of a sync. Owns the SQL: the destination schema, one table
 * per datasource (creation, new columns, widening), the metadata tables, the state table,
 * and the per-slice transaction: a writer connection from the pool, BEGIN, the fast path
 * (COPY straight into the table when the slice's range holds no rows yet) or the merge path
 * (COPY into a staging table, insert new identities, flag or delete vanished rows), the
 * state row, COMMIT. Rows arrive as COPY text from the row encoder; pgsink never sees
 * Druid or HTTP. */
#ifndef DSYNC_PGSINK_H
#define DSYNC_PGSINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "pgerr.h"
#include "typemap.h"

/* The metadata tables (SPEC 3.2). */
#define PGSINK_META_TABLES "information_schema_tables"
#define PGSINK_META_COLUMNS "information_schema_columns"

struct pgsink;       /* opaque */
struct pgsink_slice; /* opaque: one slice transaction on one writer connection */

/* err is NULL on success; borrowed for the call. */
typedef void (*pgsink_cb)(void *ud, const char *err);

struct pgsink_column {
    const char *name;
    enum pgtype type;
};

/* cfg is borrowed and must outlive the sink (or be replaced with pgsink_set_config).
 * NULL on OOM. */
struct pgsink *pgsink_new(uv_loop_t *loop, const struct config *cfg);
/* Closes every connection; slices in flight are abandoned (PostgreSQL rolls them back).
 * Accepts NULL. */
void pgsink_free(struct pgsink *s);
void pgsink_set_config(struct pgsink *s, const struct config *cfg);
/* PostgreSQL connections open now (control and writers), for metrics. */
size_t pgsink_connections(const struct pgsink *s);
/* The cause of the last failure reported through a pgsink_cb or pgsink_table_cb (read it
 * inside that callback): SQLSTATE, connection lost, timeout. */
const struct pgerr *pgsink_last_error(const struct pgsink *s);
/* CREATE SCHEMA and the state table IF NOT EXISTS (again: after a failure said the schema
 * or a table is gone, pgerr_schema_missing). */
void pgsink_ensure_schema(struct pgsink *s, pgsink_cb cb, void *ud);
/* Marks the state rows still saying 'syncing' as 'interrupted': a previous run ended
 * during a cycle without recording its end (PostgreSQL was unreachable, or a kill). Only the
 * datasources this instance syncs: `only` (NULL-terminated names, or NULL for all) minus the
 * configuration's exclude_datasources, and not those whose work lease another instance than
 * `owner` holds alive, so another instance's cycle is left alone. */
void pgsink_state_recover(struct pgsink *s, const char *const *only, const char *owner,
                          pgsink_cb cb, void *ud);

/* Connects the control connection; creates the destination schema and the state table. */
void pgsink_start(struct pgsink *s, pgsink_cb cb, void *ud);

/* Replaces the whole content of a metadata table (information_schema_tables/_columns) in
 * one transaction: creates it or adds missing columns, deletes, COPYs copy_text. */
void pgsink_replace_metadata(struct pgsink *s, const char *table, const struct pgsink_column *cols,
                             size_t ncols, const char *copy_text, size_t len, pgsink_cb cb,
                             void *ud);

struct pgsink_table_req {
    const char *datasource;
    const struct pgsink_column *cols; /* the Druid columns, in query order */
    size_t ncols;
    const char *slice_column; /* the column slices are ranges of; NULL: whole-table slices */
    const char *mode;         /* "incremental" or "full" */
    const char *incremental_column;
    int id_scheme; /* the row id scheme the encoder writes (recorded for new tables) */
    /* a resync (SPEC 1): after bringing the live table up to date, prepare its shadow
     * (pgsink_resync_key) and answer for the shadow: its cursor, emptiness, creation */
    bool resync;
    /* a table created by this prepare is created without its primary key and range index
     * (initial_load): the first sync loads it unindexed, pgsink_finish_initial_load builds
     * both once (as pg_restore does); ignored with resync */
    bool defer_indexes;
    /* another instance holds the datasource and this one helps with its first load (chunk
     * units): the table is brought up to date but its initial-load clean-up is the holder's */
    bool helper;
};

struct pgsink_table_info {
    const char *destination_table;
    const enum pgtype *types; /* the destination column types (after widening), per req col */
    const char *cursor;       /* committed cursor, NULL when none */
    bool created;             /* the table did not exist: created now */
    bool empty;               /* the table holds no row at all (live or flagged) */
    int id_scheme;            /* the row id scheme its rows were written with; 0 unknown */
    bool initial_load;        /* its first load is under way: no key or range index yet */
};
typedef void (*pgsink_table_cb)(void *ud, const char *err, const struct pgsink_table_info *info);

/* Creates the table or brings it up to date (new columns, widened types, the range index),
 * and reads the state row. The sink remembers the column list for this datasource's slices. */
void pgsink_prepare_table(struct pgsink *s, const struct pgsink_table_req *req, pgsink_table_cb cb,
                          void *ud);

/* ---- the first load of a table created without indexes (req->defer_indexes) ----
 * While the state row says initial_load, every slice takes the fast path without the range
 * check (which would scan the unindexed table): it first deletes the rows of its range only
 * when a synced ledger chunk overlaps the range (a re-read of a synced chunk); and each
 * prepare deletes the rows outside the ledger's synced chunks (slices that committed while
 * their chunk was not yet recorded, before a kill or a failed cycle), so that those ranges
 * are empty before they are read again. */
/* Is datasource's table (as last prepared) in its initial load? */
bool pgsink_initial_load(const struct pgsink *s, const char *datasource);
/* Ends the initial load, one transaction on the control connection: ADD PRIMARY KEY, the
 * range index (the names and definitions of a table created with them), initial_load
 * cleared. Call once every chunk of the first sync is committed and recorded. Calls cb at
 * once when the table is not in its initial load. */
void pgsink_finish_initial_load(struct pgsink *s, const char *datasource, pgsink_cb cb, void *ud);
/* After pgsink_finish_initial_load succeeded: the newest value of the slice column among the
 * table's live rows in epoch ms (INT64_MIN none or not known). */
int64_t pgsink_initial_load_newest(const struct pgsink *s, const char *datasource);

/* ---- resync: the rebuild beside the live table ----
 * A prepare with req->resync records the rebuild's start in the state row (resync_started,
 * and resync_for: the request it serves) unless it is already under way, and creates the
 * shadow table (LIKE the live table INCLUDING ALL) IF NOT EXISTS; a shadow whose columns
 * no longer match the live table's is dropped and the rebuild starts over. Slices, ledger
 * rows and bucket counts under the shadow key go to the shadow; its slices record their
 * progress in the live state row (resync_cursor, resync_rows), never in cursor or
 * rows_synced. An interrupted rebuild keeps all of it: the next resync prepare resumes. */
#define PGSINK_RESYNC_PREFIX "\x1fresync:"
/* The sink key of datasource's shadow (malloc'd; never a Druid name: it holds \x1f). */
char *pgsink_resync_key(const char *datasource);
/* The shadow table's name for datasource (deterministic, <= 63 bytes) into out (64 bytes). */
void pgsink_resync_table(const char *datasource, char *out);
/* The swap, one transaction on the control connection: LOCK the live table IN ACCESS
 * EXCLUSIVE MODE, DELETE its rows, INSERT the shadow's (so the table keeps its OID, grants,
 * views, indexes, publications; readers wait at the lock and see the old rows or the new,
 * never a mix), the shadow's ledger rows replace the live ones, the state row takes the
 * rebuild's cursor and rows (id_scheme the current one, last_resync now) and clears
 * resync_requested only if it still equals resync_for (a request made during the rebuild
 * stays pending), the shadow is dropped, COMMIT. datasource must have been prepared with
 * req->resync. */
void pgsink_resync_swap(struct pgsink *s, const char *datasource, int id_scheme, pgsink_cb cb,
                        void *ud);

/* Slices. lo/hi are epoch millis; INT64_MIN / INT64_MAX mean unbounded. */
typedef void (*pgsink_slice_cb)(void *ud, struct pgsink_slice *sl, const struct pgerr *err);
void pgsink_slice_begin(struct pgsink *s, const char *datasource, int64_t lo, int64_t hi,
                        pgsink_slice_cb cb, void *ud);
/* Did the slice take the fast path (its range held no rows)? */
bool pgsink_slice_fast(const struct pgsink_slice *sl);
/* COPY text for one or more rows. 0 sent, 1 queued (pause the source until the drain
 * callback), -1 error (then abort the slice). */
int pgsink_slice_write(struct pgsink_slice *sl, const char *data, size_t len);
void pgsink_slice_on_drain(struct pgsink_slice *sl, void (*cb)(void *ud), void *ud);
/* Why the last write failed (libpq's reason). */
const struct pgerr *pgsink_slice_last_error(const struct pgsink_slice *sl);

struct pgsink_slice_result {
    int64_t copied;   /* rows received */
    int64_t inserted; /* rows new to the table (or un-flagged) */
    int64_t vanished; /* rows flagged deleted or deleted */
    bool fast;        /* the fast path: plain COPY into an empty range */
};
typedef void (*pgsink_commit_cb)(void *ud, const struct pgerr *err,
                                 const struct pgsink_slice_result *r);
/* Ends the COPY, merges, writes the state row (cursor = the greater of the stored one and
 * this one; NULL keeps it) and commits. The slice is freed before cb returns. On error the
 * transaction is rolled back: nothing of the slice is visible. */
void pgsink_slice_commit(struct pgsink_slice *sl, const char *cursor, pgsink_commit_cb cb,
                         void *ud);
/* The slice's range is rewritten, not merged: live rows of the range that the slice does not
 * bring are deleted rather than flagged (rows written with an older id scheme). */
void pgsink_slice_set_replace(struct pgsink_slice *sl, bool replace);
/* Rolls back and frees the slice; no callback. */
void pgsink_slice_abort(struct pgsink_slice *sl);

/* The chunk ledger druid_syncd_chunks (SPEC 3.4): one row per Druid time chunk known. */
#define PGSINK_CHUNKS_TABLE "druid_syncd_chunks"
struct pgsink_chunk {
    const char *start, *end; /* as Druid reports them */
    int64_t start_ms, end_ms;
    const char *fingerprint;    /* of its active segments; NULL: the chunk is gone */
    int64_t druid_rows;         /* rows Druid reports, -1 unknown */
    int64_t stored_rows;        /* rows read into PostgreSQL when it was synced */
    const char *state;          /* "synced", "pending" or "postponed" */
    int64_t postponed_since_ms; /* epoch ms, 0 when not postponed */
    int64_t position_ms;        /* open chunks: newest __time read, INT64_MIN none */
    int64_t full_read_ms;       /* open chunks: last read whole (epoch ms), 0 never */
    bool drop_held;             /* gone from Druid in a snapshot that dropped too much at once */
};
/* The ledger rows of a datasource, by start (strings borrowed for the call). */
typedef void (*pgsink_chunks_cb)(void *ud, const char *err, const struct pgsink_chunk *c, size_t n);
void pgsink_chunks_read(struct pgsink *s, const char *datasource, pgsink_chunks_cb cb, void *ud);
/* Records chunks in one transaction: every ledger row overlapping a chunk of c is replaced
 * by it (a chunk with a NULL fingerprint only removes them). */
void pgsink_chunks_write(struct pgsink *s, const char *datasource, const struct pgsink_chunk *c,
                         size_t n, pgsink_cb cb, void *ud);
/* The same, inside the slice's transaction, at COMMIT: the chunks this slice completes
 * become synced with its data. Call before pgsink_slice_commit; c is copied. */
void pgsink_slice_chunks(struct pgsink_slice *sl, const struct pgsink_chunk *c, size_t n);

/* Live rows per bucket of the slice column over [lo, hi) (INT64_MIN/INT64_MAX: unbounded):
 * bucket start (epoch ms, a multiple of width_ms), row count, and the sum of each column
 * sum_cols[k] (indices into the columns of the table request; NULL sums read 0). For the
 * fallback that compares Druid's counts with what PostgreSQL holds. */
struct pgsink_bucket {
    int64_t start_ms;
    int64_t n;
    const double *sums;
};
typedef void (*pgsink_buckets_cb)(void *ud, const char *err, const struct pgsink_bucket *b,
                                  size_t n);
void pgsink_buckets(struct pgsink *s, const char *datasource, const size_t *sum_cols, size_t nsum,
                    int64_t width_ms, int64_t lo, int64_t hi, pgsink_buckets_cb cb, void *ud);

/* State row outside slices. */
void pgsink_state_cycle_start(struct pgsink *s, const char *datasource, pgsink_cb cb, void *ud);
/* error NULL: success (last_success, clears last_error); cursor NULL keeps it. interrupted:
 * a stop ended the cycle early (status 'interrupted', last_success kept). detection: how
 * changes were found ("segments", "counts", "cursor", "full"; NULL keeps it). id_scheme:
 * every row now has ids of this scheme (0 keeps it). */
void pgsink_state_cycle_end(struct pgsink *s, const char *datasource, const char *error,
                            const char *cursor, bool interrupted, const char *detection,
                            int id_scheme, pgsink_cb cb, void *ud);
/* Datasources with a state row that are not in present_json (a JSON array of the names in
 * Druid's catalog) are marked missing: their tables are kept, the state says so. */
void pgsink_state_mark_missing(struct pgsink *s, const char *present_json, pgsink_cb cb, void *ud);

#endif
