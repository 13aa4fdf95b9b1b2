/* pgsink_int: what the parts of the PostgreSQL sink share and nobody else sees: the sink's
 * state (control queue, writer pool, prepared tables, system column names) and small SQL
 * helpers. pgsink.c owns the lifecycle, pgschema.c the DDL and schema evolution, pgslice.c
 * the slice transaction, pgstate.c the state table, pgchunks.c the chunk ledger,
 * pgbuckets.c the per-bucket counts the fallback compares. */
#ifndef DSYNC_PGSINK_INT_H
#define DSYNC_PGSINK_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "pgconn.h"
#include "pgjob.h"
#include "pgsink.h"
#include "sqlident.h"

#define STATE_TABLE "druid_syncd_state"
#define STAGE_TABLE "druid_syncd_stage"

/* What the sink knows of one datasource's table, from pgsink_prepare_table. */
struct dstable {
    struct dstable *next;
    char *datasource;
    char dest[SQLIDENT_PG_MAX + 1];
    char *copy_cols;    /* "c1","c2",...,"<prefix>id" */
    char *slice_column; /* NULL: whole-table slices */
    char **pg_cols;     /* the PostgreSQL name of each requested column, in request order */
    size_t ncols;
    /* a resync's shadow (datasource is the shadow key): the live table and the state row's
     * datasource; NULL for a live table */
    char *live_dest;
    char *state_key;
    bool initial_load;        /* created without key and range index, first load under way */
    int64_t loaded_newest_ms; /* when the first load ended here: its newest slice column value
                               * (INT64_MIN none) */
};

struct writer {
    struct pgconn *conn;
    bool in_use;
};

struct waiter {
    struct waiter *next;
    struct pgsink_slice *sl;
};

/* A datasource's fence (pgsink_fence_set): copied into a slice when it begins. */
struct pgfence {
    struct pgfence *next;
    char *datasource, *unit, *owner;
    int64_t epoch;
};

struct pgsink {
    uv_loop_t *loop;
    const struct config *cfg;
    struct pgjob_queue *control;
    struct pgjob_queue *lease; /* claims and renewals only (pglease.c), opened on first use */
    struct pgfence *fences;
    struct dstable *tables;
    struct writer *writers;
    size_t nwriters;
    struct waiter *wait_head, *wait_tail;
    struct pgsink_slice *live; /* every slice not yet freed, so pgsink_free can reclaim them */
    char col_id[64], col_synced[64], col_deleted[64];
    char set_local[256]; /* SET LOCAL statement_timeout ...; for every transaction */
};

/* "schema"."name" in the destination schema. */
void pgsink_qtable(struct buf *b, const struct pgsink *s, const char *name);
/* One step of j: the columns (definitions) added to a table of the destination schema that
 * an older version created without them (one ALTER TABLE, IF NOT EXISTS each). */
void pgsink_add_columns(struct pgjob *j, const struct pgsink *s, const char *table,
                        const char *const *defs, size_t n);
struct dstable *pgsink_find_table(struct pgsink *s, const char *ds);
/* A control-connection job that reports to cb(ud, err) when it ends. */
struct pgjob *pgsink_job(struct pgsink *s, pgsink_cb cb, void *ud);
/* "c1", "c2", ... */
void pgsink_column_list(struct buf *b, const struct pgsink_column *cols, size_t n);

/* pgstate.c: the state table's DDL, as a step of a job. */
void pgstate_add_create(struct pgjob *j, const struct pgsink *s);
/* pgchunks.c: the chunk ledger's DDL as a step; the chunk list as the jsonb text of the two
 * statements that replace ledger rows (delete overlapping, insert). ds and json are the SQL
 * expressions of the datasource and of that text: parameters ("$1", "$2") or literals. */
void pgchunks_add_create(struct pgjob *j, const struct pgsink *s);
char *pgchunks_json(const struct pgsink_chunk *c, size_t n);
void pgchunks_sql_delete(struct buf *b, const struct pgsink *s, const char *ds, const char *json);
void pgchunks_sql_insert(struct buf *b, const struct pgsink *s, const char *ds, const char *json);
/* pglease.c: the lease table and fence function's DDL as steps of a job; the fence of the
 * datasource a table key (a live table or a resync's shadow) belongs to, NULL none; the
 * fences. */
void pglease_add_create(struct pgjob *j, const struct pgsink *s);
const struct pgfence *pglease_fence_of(struct pgsink *s, const char *key);
/* The fence of key's datasource as a step of a job (nothing when it has none): add it last
 * before the job's COMMIT. */
void pglease_add_fence(struct pgjob *j, struct pgsink *s, const char *key);
void pglease_free_fences(struct pgsink *s);
/* Chunk units as steps of a job: each fenced at its epoch and marked clean (its ledger row
 * commits with the job). */
struct pglease_units;
void pglease_add_unit_fences(struct pgjob *j, struct pgsink *s, const struct pglease_units *f);
/* pgslice.c: frees a slice that is still alive when the sink is freed. */
void pgslice_free_live(struct pgsink *s);
/* pgschema.c: frees the prepared-table list. */
void pgschema_free_tables(struct pgsink *s);
/* pgschema.c: a step taking the transaction-scoped advisory lock of the destination schema,
 * which serialises name allocation and DDL in that schema among all instances. */
void pgschema_add_lock(struct pgjob *j, const struct pgsink *s);

#endif
