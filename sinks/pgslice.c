/* pgslice: one slice's transaction on a writer connection: BEGIN, the range check, the fast
 * path (COPY into the table) or the merge path (COPY into a staging table, insert new
 * identities, flag or delete vanished rows), the state row, COMMIT. See pgsink.h.
 *
 * A slice takes a writer only when it has something to write: its first COPY data (or its
 * commit, for a slice without rows). The caller starts its Druid query right after
 * pgsink_slice_begin, so no writer or transaction waits for a Druid query slot; the first
 * write is held here (one chunk) and answered "queued" until a writer is free and the COPY
 * is open, which pauses that Druid response (backpressure, bounded memory). A writer is
 * never waited for by a slice that holds one, so the pool cannot deadlock: a slice holding
 * a writer only waits for its own Druid response or for PostgreSQL.
 *
 * Round trips per slice on the fast path: "BEGIN; SET LOCAL ...; SELECT EXISTS (range)" as
 * one simple query, COPY, the end of COPY, and "ledger rows; state row; COMMIT" as one
 * simple query (values as literals quoted by libpq). The merge path adds one for
 * "ANALYZE; INSERT ... ON CONFLICT; flag/delete". */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "pglease.h"
#include "pgsink_int.h"
#include "sqlident.h"
#include "timeutil.h"

/* Appends the condition "[alias.]col >= $n AND [alias.]col < $n+1" for the slice range
 * (only the bounds that exist) and fills p with their parameters; returns how many. */
static int range_sql(struct buf *b, const struct dstable *t, const char *alias, int64_t lo,
                     int64_t hi, int first, char lob[TIME_ISO_MAX], char hib[TIME_ISO_MAX],
                     const char **p)
{
    int n = 0;
    if (t->slice_column && lo != INT64_MIN) {
        buf_printf(b, "%s%s", alias, alias[0] ? "." : "");
        sqlident_quote(b, t->slice_column);
        buf_printf(b, " >= $%d::timestamptz", first + n);
        time_format_pg_ms(lo, lob);
        p[n++] = lob;
    }
    if (t->slice_column && hi != INT64_MAX) {
        buf_puts(b, n ? " AND " : "");
        buf_printf(b, "%s%s", alias, alias[0] ? "." : "");
        sqlident_quote(b, t->slice_column);
        buf_printf(b, " < $%d::timestamptz", first + n);
        time_format_pg_ms(hi, hib);
        p[n++] = hib;
    }
    if (!n)
        buf_puts(b, "true");
    return n;
}

/* The same condition with the bounds as literals, for a simple query. */
static void range_lit(struct buf *b, const struct dstable *t, const char *alias, int64_t lo,
                      int64_t hi)
{
    char lob[TIME_ISO_MAX], hib[TIME_ISO_MAX];
    const char *p[2];
    struct buf tmp = BUF_INIT;
    int n = range_sql(&tmp, t, alias, lo, hi, 1, lob, hib, p);
    /* the bounds are our own ISO text (digits, '-', ':', '.', '+', ' ', "BC"): quoting
     * them needs no escaping */
    const char *q = tmp.data ? tmp.data : "true";
    for (const char *c = q; *c; c++) {
        if (*c == '$' && (c[1] == '1' || c[1] == '2') && c[1] - '1' < n) {
            buf_printf(b, "'%s'", p[c[1] - '1']);
            c++;
        } else {
            buf_putc(b, *c);
        }
    }
    buf_free(&tmp);
}

/* ---- slices ---- */

/* Data below this size is gathered before it becomes one CopyData message. */
#define COPY_MIN (128 * 1024)

enum slice_phase {
    SL_IDLE,        /* no writer yet, none asked for */
    SL_WAIT_WRITER, /* in the sink's queue */
    SL_CONNECT,
    SL_OPEN,       /* BEGIN; SET LOCAL; the range check */
    SL_COPY_START, /* [CREATE TEMP TABLE;] COPY ... FROM STDIN */
    SL_COPYING,
    SL_COPY_END,
    SL_MERGE, /* ANALYZE; INSERT ... ON CONFLICT; flag or delete vanished rows */
    SL_TAIL,  /* ledger rows; state row; COMMIT */
    SL_ROLLBACK,
    SL_FAILED, /* writer given back; the error waits for the caller's commit or abort */
};

struct pgsink_slice {
    struct pgsink *s;
    struct pgsink_slice *live_next, *live_prev;
    struct writer *w;
    char *datasource;
    char *state_key; /* a resync's shadow: the live state row's datasource, else NULL */
    char dest[SQLIDENT_PG_MAX + 1];
    struct dstable view; /* copy of the table's slice column / copy columns */
    int64_t lo, hi;
    bool fast;
    bool initial_load; /* the table's first load: no range check (no index to use) */
    enum slice_phase phase;
    pgsink_commit_cb commit_cb; /* set: the caller asked to commit */
    void *commit_ud;
    char *cursor;
    char *chunks_json; /* the ledger rows this slice completes, or NULL */
    char *fence_unit;  /* the lease this slice began under (pgsink_fence_set), or NULL */
    char *fence_owner;
    int64_t fence_epoch;
    /* chunk units (pgsink_slice_fence_chunks): they fence the commit instead */
    char *chunk_owner;
    char **chunk_units;
    int64_t *chunk_epochs;
    bool *chunk_clean;
    size_t nchunks;
    bool clear; /* initial load: the range is emptied first (pgsink_slice_clear_range) */
    struct pgsink_slice_result res;
    struct buf pending; /* COPY data not handed to libpq yet */
    void (*drain_cb)(void *ud);
    void *drain_ud;
    bool aborted;      /* caller gave up: roll back quietly */
    bool soft_deletes; /* as configured when the slice began: a reload does not change it */
    bool replace;      /* unmatched live rows are deleted, not flagged (id scheme migration) */
    struct pgerr err;  /* the first failure, with its cause */
};

static void slice_step(struct pgsink_slice *sl);
static void slice_on_result(void *ud, PGresult *res, const char *err);

static void free_chunk_fence(struct pgsink_slice *sl)
{
    for (size_t i = 0; i < sl->nchunks; i++)
        free(sl->chunk_units[i]);
    free(sl->chunk_units);
    free(sl->chunk_epochs);
    free(sl->chunk_clean);
    free(sl->chunk_owner);
    sl->chunk_units = NULL;
    sl->chunk_epochs = NULL;
    sl->chunk_clean = NULL;
    sl->chunk_owner = NULL;
    sl->nchunks = 0;
}

static void slice_free(struct pgsink_slice *sl)
{
    if (sl->live_prev)
        sl->live_prev->live_next = sl->live_next;
    else
        sl->s->live = sl->live_next;
    if (sl->live_next)
        sl->live_next->live_prev = sl->live_prev;
    free(sl->datasource);
    free(sl->state_key);
    free(sl->view.copy_cols);
    free(sl->view.slice_column);
    free(sl->cursor);
    free(sl->chunks_json);
    free_chunk_fence(sl);
    free(sl->fence_unit);
    free(sl->fence_owner);
    buf_free(&sl->pending);
    free(sl);
}

/* A writer for the slice now, or a place in the queue. */
static void writer_acquire(struct pgsink_slice *sl)
{
    struct pgsink *s = sl->s;
    for (size_t i = 0; i < s->nwriters; i++) {
        if (!s->writers[i].in_use) {
            s->writers[i].in_use = true;
            sl->w = &s->writers[i];
            sl->phase = SL_CONNECT;
            slice_step(sl);
            return;
        }
    }
    struct waiter *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    w->sl = sl;
    sl->phase = SL_WAIT_WRITER;
    if (s->wait_tail)
        s->wait_tail->next = w;
    else
        s->wait_head = w;
    s->wait_tail = w;
}

static void waiter_remove(struct pgsink *s, struct pgsink_slice *sl)
{
    struct waiter *prev = NULL;
    for (struct waiter *w = s->wait_head; w; prev = w, w = w->next) {
        if (w->sl != sl)
            continue;
        if (prev)
            prev->next = w->next;
        else
            s->wait_head = w->next;
        if (s->wait_tail == w)
            s->wait_tail = prev;
        free(w);
        return;
    }
}

static void writer_release(struct pgsink *s, struct writer *w)
{
    w->in_use = false;
    if (!s->wait_head)
        return;
    struct waiter *wt = s->wait_head;
    s->wait_head = wt->next;
    if (!s->wait_head)
        s->wait_tail = NULL;
    struct pgsink_slice *sl = wt->sl;
    free(wt);
    w->in_use = true;
    sl->w = w;
    sl->phase = SL_CONNECT;
    slice_step(sl);
}

/* The transaction is over (committed, or rolled back with sl->err): the writer goes back to
 * the pool, and whoever waits hears of it. A slice the caller still writes to is kept, in
 * SL_FAILED, until its commit or abort. */
static void slice_end(struct pgsink_slice *sl, const struct pgerr *err)
{
    struct pgsink *s = sl->s;
    struct writer *w = sl->w;
    sl->w = NULL;
    sl->phase = SL_FAILED;
    if (w)
        writer_release(s, w);
    if (sl->aborted) {
        slice_free(sl);
    } else if (sl->commit_cb) {
        sl->commit_cb(sl->commit_ud, err, err ? NULL : &sl->res);
        slice_free(sl);
    } else if (sl->drain_cb) {
        /* the caller is paused on a write: it resumes, and its next write fails */
        void (*cb)(void *) = sl->drain_cb;
        sl->drain_cb = NULL;
        cb(sl->drain_ud);
    }
}

static void slice_on_rollback(void *ud, PGresult *res, const char *err)
{
    (void)res;
    struct pgsink_slice *sl = ud;
    if (err && sl->w && pgconn_ok(sl->w->conn))
        pgconn_close(sl->w->conn); /* no telling what state the session is in */
    slice_end(sl, &sl->err);
}

/* Records the first error with its cause (the connection's, when err is its message) and
 * rolls back when the connection still works; a lost one is closed, which rolls back. */
static void slice_fail(struct pgsink_slice *sl, const char *err)
{
    if (!sl->err.message[0]) {
        const struct pgerr *pe = sl->w ? pgconn_last_error(sl->w->conn) : NULL;
        if (pe && pe->message[0] && strcmp(pe->message, err) == 0)
            sl->err = *pe;
        else
            pgerr_set(&sl->err, "", false, err);
    }
    if (sl->w && pgconn_ok(sl->w->conn) && sl->phase != SL_CONNECT) {
        /* also after a failed "BEGIN; ...": it may have opened the transaction */
        sl->phase = SL_ROLLBACK;
        pgconn_query(sl->w->conn, "ROLLBACK", 0, NULL, slice_on_rollback, sl);
        return;
    }
    if (sl->w && !pgconn_ok(sl->w->conn))
        pgconn_close(sl->w->conn);
    slice_end(sl, &sl->err);
}

static void slice_on_connect(void *ud, const char *err)
{
    struct pgsink_slice *sl = ud;
    if (err) {
        slice_fail(sl, err);
        return;
    }
    sl->phase = SL_OPEN;
    slice_step(sl);
}

static void slice_query(struct pgsink_slice *sl, const char *sql)
{
    pgconn_query(sl->w->conn, sql, 0, NULL, slice_on_result, sl);
}

/* The counts of the merge statements, as their results arrive. */
static void slice_on_merge_result(void *ud, PGresult *res)
{
    struct pgsink_slice *sl = ud;
    const char *tag = PQcmdStatus(res);
    const char *t = PQcmdTuples(res);
    int64_t n = *t ? strtoll(t, NULL, 10) : 0;
    if (strncmp(tag, "INSERT", 6) == 0)
        sl->res.inserted = n;
    else if (strncmp(tag, "UPDATE", 6) == 0 || strncmp(tag, "DELETE", 6) == 0)
        sl->res.vanished = n;
}

static int lit(struct pgsink_slice *sl, struct buf *b, const char *v)
{
    if (!v) {
        buf_puts(b, "NULL");
        return 0;
    }
    return pgconn_literal(sl->w->conn, b, v);
}

/* The fence, last before COMMIT: it raises (and so skips the COMMIT of the same string) when
 * the lease the slice began under is no longer held at its epoch. */
static int fence_commit(struct pgsink_slice *sl, struct buf *b)
{
    int rc = 0;
    if (sl->nchunks) {
        struct buf o = BUF_INIT;
        struct buf *u = calloc(sl->nchunks, sizeof *u);
        const char **ul = calloc(sl->nchunks, sizeof *ul);
        if (!u || !ul)
            abort();
        rc = lit(sl, &o, sl->chunk_owner);
        for (size_t i = 0; i < sl->nchunks && rc == 0; i++) {
            rc = lit(sl, &u[i], sl->chunk_units[i]);
            ul[i] = u[i].data;
        }
        if (rc == 0)
            pglease_chunk_fence_lit(b, sl->s->cfg->destination_schema, o.data, ul, sl->chunk_epochs,
                                    sl->chunk_clean, sl->nchunks);
        for (size_t i = 0; i < sl->nchunks; i++)
            buf_free(&u[i]);
        free(u);
        free(ul);
        buf_free(&o);
    }
    /* the holder's slices carry its datasource's fence too (a helper holds none) */
    if (sl->fence_unit && rc == 0) {
        struct buf u = BUF_INIT, o = BUF_INIT;
        rc = lit(sl, &u, sl->fence_unit) | lit(sl, &o, sl->fence_owner);
        if (rc == 0) {
            pglease_fence_lit(b, sl->s->cfg->destination_schema, u.data, o.data, sl->fence_epoch);
            buf_puts(b, "; ");
        }
        buf_free(&u);
        buf_free(&o);
    }
    buf_puts(b, "COMMIT");
    return rc;
}

/* The ledger rows, the state row, the fence and COMMIT, as one string. */
static int tail_sql(struct pgsink_slice *sl, struct buf *b)
{
    struct pgsink *s = sl->s;
    struct buf ds = BUF_INIT, js = BUF_INIT;
    int rc = lit(sl, &ds, sl->datasource);
    if (rc == 0 && sl->chunks_json) {
        rc = lit(sl, &js, sl->chunks_json);
        if (rc == 0) {
            pgchunks_sql_delete(b, s, ds.data, js.data);
            buf_puts(b, "; ");
            pgchunks_sql_insert(b, s, ds.data, js.data);
            buf_puts(b, "; ");
        }
    }
    if (rc == 0 && sl->state_key) {
        /* a resync's shadow: its progress, apart from the live table's cursor and rows */
        buf_puts(b, "UPDATE ");
        pgsink_qtable(b, s, STATE_TABLE);
        buf_puts(b, " AS st SET resync_cursor = COALESCE(");
        rc = lit(sl, b, sl->cursor);
        buf_printf(b,
                   ", st.resync_cursor), resync_rows = st.resync_rows + %" PRId64
                   ", slices_committed = st.slices_committed + 1, updated_at = now()"
                   " WHERE datasource = ",
                   sl->res.inserted);
        rc |= lit(sl, b, sl->state_key);
        buf_puts(b, "; ");
        rc |= fence_commit(sl, b);
    } else if (rc == 0) {
        buf_puts(b, "INSERT INTO ");
        pgsink_qtable(b, s, STATE_TABLE);
        buf_puts(b, " AS st (datasource, destination_table, cursor, rows_synced,"
                    " slices_committed) VALUES (");
        buf_puts(b, ds.data);
        buf_puts(b, ", ");
        rc = lit(sl, b, sl->dest);
        buf_puts(b, ", ");
        rc |= lit(sl, b, sl->cursor);
        buf_printf(b, ", %" PRId64 ", 1)", sl->res.inserted);
        buf_puts(b, " ON CONFLICT (datasource) DO UPDATE SET cursor ="
                    /* the scheduler never sends a cursor behind the stored one (text
                     * comparison would misorder years beyond 9999 and BC) */
                    " COALESCE(EXCLUDED.cursor, st.cursor),"
                    " rows_synced = st.rows_synced + EXCLUDED.rows_synced,"
                    " slices_committed = st.slices_committed + 1, updated_at = now(); ");
        rc |= fence_commit(sl, b);
    }
    buf_free(&ds);
    buf_free(&js);
    return rc;
}

static void slice_step(struct pgsink_slice *sl)
{
    struct pgsink *s = sl->s;
    struct buf b = BUF_INIT;
    switch (sl->phase) {
    case SL_CONNECT:
        if (!pgconn_ok(sl->w->conn)) {
            pgconn_connect(sl->w->conn, slice_on_connect, sl);
            break;
        }
        sl->phase = SL_OPEN;
        /* fall through */
    case SL_OPEN:
        if (sl->initial_load) {
            /* the range is empty unless a synced chunk overlaps it (a chunk read again):
             * then its rows give way to the slice's. The uncorrelated EXISTS is a one-time
             * filter: without such a chunk the table is not scanned. */
            struct buf ds = BUF_INIT;
            if (lit(sl, &ds, sl->datasource) != 0) {
                buf_free(&ds);
                buf_free(&b);
                slice_fail(sl, "cannot quote a value for PostgreSQL (out of memory or not "
                               "connected)");
                return;
            }
            buf_printf(&b, "BEGIN; %s; DELETE FROM ", s->set_local);
            pgsink_qtable(&b, s, sl->dest);
            buf_puts(&b, " WHERE ");
            range_lit(&b, &sl->view, "", sl->lo, sl->hi);
            if (!sl->clear) {
                /* (a chunk unit taken dirty is emptied whatever the ledger says: rows of
                 * a read that did not finish are in no ledger row) */
                buf_puts(&b, " AND EXISTS (SELECT 1 FROM ");
                pgsink_qtable(&b, s, PGSINK_CHUNKS_TABLE);
                buf_printf(&b, " WHERE datasource = %s AND state IN ('synced', 'pending')",
                           ds.data);
                if (sl->hi != INT64_MAX)
                    buf_printf(&b, " AND start_ms < %" PRId64, sl->hi);
                if (sl->lo != INT64_MIN)
                    buf_printf(&b, " AND end_ms > %" PRId64, sl->lo);
                buf_puts(&b, ")");
            }
            buf_free(&ds);
            slice_query(sl, b.data);
            break;
        }
        /* the server bounds every statement and lock wait of the transaction itself */
        buf_printf(&b, "BEGIN; %s; SELECT EXISTS (SELECT 1 FROM ", s->set_local);
        pgsink_qtable(&b, s, sl->dest);
        buf_puts(&b, " WHERE ");
        range_lit(&b, &sl->view, "", sl->lo, sl->hi);
        buf_puts(&b, ")");
        slice_query(sl, b.data);
        break;
    case SL_COPY_START:
        if (!sl->fast) {
            buf_puts(&b, "CREATE TEMP TABLE " STAGE_TABLE " (LIKE ");
            pgsink_qtable(&b, s, sl->dest);
            buf_puts(&b, " INCLUDING DEFAULTS) ON COMMIT DROP; ");
        }
        buf_puts(&b, "COPY ");
        if (sl->fast)
            pgsink_qtable(&b, s, sl->dest);
        else
            buf_puts(&b, STAGE_TABLE);
        buf_printf(&b, " (%s) FROM STDIN", sl->view.copy_cols);
        slice_query(sl, b.data);
        break;
    case SL_MERGE:
        /* a temp table has no statistics; without them the anti-join below can be planned
         * as a nested loop over the whole slice */
        buf_puts(&b, "ANALYZE " STAGE_TABLE "; INSERT INTO ");
        pgsink_qtable(&b, s, sl->dest);
        buf_printf(&b, " AS t (%s) SELECT %s FROM " STAGE_TABLE " ON CONFLICT (",
                   sl->view.copy_cols, sl->view.copy_cols);
        sqlident_quote(&b, s->col_id);
        buf_puts(&b, ") DO UPDATE SET ");
        sqlident_quote(&b, s->col_deleted);
        buf_puts(&b, " = false, ");
        sqlident_quote(&b, s->col_synced);
        buf_puts(&b, " = now() WHERE t.");
        sqlident_quote(&b, s->col_deleted);
        buf_puts(&b, "; ");
        if (sl->soft_deletes && !sl->replace) {
            buf_puts(&b, "UPDATE ");
            pgsink_qtable(&b, s, sl->dest);
            buf_puts(&b, " AS t SET ");
            sqlident_quote(&b, s->col_deleted);
            buf_puts(&b, " = true, ");
            sqlident_quote(&b, s->col_synced);
            buf_puts(&b, " = now() WHERE NOT t.");
            sqlident_quote(&b, s->col_deleted);
            buf_puts(&b, " AND ");
        } else {
            buf_puts(&b, "DELETE FROM ");
            pgsink_qtable(&b, s, sl->dest);
            buf_puts(&b, " AS t WHERE ");
            if (sl->replace && sl->soft_deletes) {
                /* rows flagged before keep their record */
                buf_puts(&b, "NOT t.");
                sqlident_quote(&b, s->col_deleted);
                buf_puts(&b, " AND ");
            }
        }
        range_lit(&b, &sl->view, "t", sl->lo, sl->hi);
        buf_puts(&b, " AND NOT EXISTS (SELECT 1 FROM " STAGE_TABLE " g WHERE g.");
        sqlident_quote(&b, s->col_id);
        buf_puts(&b, " = t.");
        sqlident_quote(&b, s->col_id);
        buf_puts(&b, ")");
        pgconn_query_each(sl->w->conn, b.data, slice_on_merge_result, slice_on_result, sl);
        break;
    case SL_TAIL:
        if (tail_sql(sl, &b) != 0) {
            buf_free(&b);
            slice_fail(sl, "cannot quote a value for PostgreSQL (out of memory or not connected)");
            return;
        }
        slice_query(sl, b.data);
        break;
    default:
        break;
    }
    buf_free(&b);
}

static int64_t cmd_tuples(PGresult *res)
{
    const char *t = res ? PQcmdTuples(res) : "";
    return *t ? strtoll(t, NULL, 10) : 0;
}

/* Hands the held COPY data to libpq. 0 sent, 1 queued in libpq, -1 error. */
static int slice_put_pending(struct pgsink_slice *sl)
{
    if (!sl->pending.len)
        return 0;
    int r = pgconn_copy_put(sl->w->conn, sl->pending.data, sl->pending.len);
    buf_reset(&sl->pending);
    return r;
}

static void slice_drained(void *ud)
{
    struct pgsink_slice *sl = ud;
    if (sl->drain_cb) {
        void (*cb)(void *) = sl->drain_cb;
        sl->drain_cb = NULL;
        cb(sl->drain_ud);
    }
}

static void slice_on_abort_copy(void *ud, PGresult *res, const char *err)
{
    (void)res;
    (void)err; /* "COPY aborted" is the expected answer */
    struct pgsink_slice *sl = ud;
    slice_fail(sl, "aborted");
}

static void slice_copy_end(struct pgsink_slice *sl)
{
    slice_put_pending(sl); /* a failure shows in the end of COPY */
    sl->phase = SL_COPY_END;
    pgconn_copy_end(sl->w->conn, NULL, slice_on_result, sl);
}

/* COPY is open: the data held while waiting goes out, then the caller goes on. */
static void slice_copy_ready(struct pgsink_slice *sl)
{
    sl->phase = SL_COPYING;
    if (sl->aborted) {
        sl->phase = SL_COPY_END;
        pgconn_copy_end(sl->w->conn, "slice aborted by druid-syncd", slice_on_abort_copy, sl);
        return;
    }
    if (sl->commit_cb) {
        slice_copy_end(sl);
        return;
    }
    int r = slice_put_pending(sl);
    if (r == 1) {
        pgconn_on_drain(sl->w->conn, slice_drained, sl);
        return;
    }
    if (r < 0) {
        sl->err = *pgconn_last_error(sl->w->conn);
        if (!sl->err.message[0])
            pgerr_set(&sl->err, "", true, "writing COPY data to PostgreSQL failed");
        /* the caller hears it on its next write (it is paused on the first one) */
    }
    slice_drained(sl);
}

static void slice_on_result(void *ud, PGresult *res, const char *err)
{
    struct pgsink_slice *sl = ud;
    if (err) {
        slice_fail(sl, err);
        return;
    }
    if (sl->aborted && sl->phase != SL_COPY_START && sl->phase < SL_COPY_END) {
        slice_fail(sl, "aborted");
        return;
    }
    switch (sl->phase) {
    case SL_OPEN:
        sl->fast =
            sl->initial_load || (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "f") == 0);
        sl->phase = SL_COPY_START;
        break;
    case SL_COPY_START:
        slice_copy_ready(sl);
        return;
    case SL_COPY_END:
        sl->res.copied = cmd_tuples(res);
        sl->res.fast = sl->fast;
        if (sl->fast) {
            sl->res.inserted = sl->res.copied;
            sl->phase = SL_TAIL;
        } else {
            sl->phase = SL_MERGE;
        }
        break;
    case SL_MERGE:
        sl->phase = SL_TAIL;
        break;
    case SL_TAIL:
        slice_end(sl, NULL);
        return;
    default:
        return;
    }
    slice_step(sl);
}

void pgsink_slice_begin(struct pgsink *s, const char *datasource, int64_t lo, int64_t hi,
                        pgsink_slice_cb cb, void *ud)
{
    struct dstable *t = pgsink_find_table(s, datasource);
    if (!t) {
        struct pgerr e;
        pgerr_set(&e, "", false, "table not prepared");
        cb(ud, NULL, &e);
        return;
    }
    struct pgsink_slice *sl = calloc(1, sizeof *sl);
    if (!sl)
        abort();
    sl->s = s;
    sl->live_next = s->live;
    if (s->live)
        s->live->live_prev = sl;
    s->live = sl;
    sl->datasource = strdup(datasource);
    sl->state_key = t->state_key ? strdup(t->state_key) : NULL;
    memcpy(sl->dest, t->dest, sizeof sl->dest);
    sl->view.copy_cols = strdup(t->copy_cols);
    sl->view.slice_column = t->slice_column ? strdup(t->slice_column) : NULL;
    sl->lo = lo;
    sl->hi = hi;
    sl->soft_deletes = s->cfg->soft_deletes;
    sl->initial_load = t->initial_load;
    const struct pgfence *f = pglease_fence_of(s, datasource);
    if (f) {
        /* the epoch it begins with: a lease taken again later is another token */
        sl->fence_unit = strdup(f->unit);
        sl->fence_owner = strdup(f->owner);
        sl->fence_epoch = f->epoch;
        if (!sl->fence_unit || !sl->fence_owner)
            abort();
    }
    sl->phase = SL_IDLE;
    /* no writer yet: one is taken with the first data (see the top of this file) */
    cb(ud, sl, NULL);
}

bool pgsink_slice_fast(const struct pgsink_slice *sl)
{
    return sl->fast;
}

int pgsink_slice_write(struct pgsink_slice *sl, const char *data, size_t len)
{
    if (sl->aborted || sl->phase == SL_FAILED || sl->err.message[0])
        return -1;
    if (sl->phase != SL_COPYING) {
        /* held until the COPY is open; the caller pauses its source meanwhile */
        buf_append(&sl->pending, data, len);
        if (sl->phase == SL_IDLE)
            writer_acquire(sl);
        return sl->err.message[0] ? -1 : 1;
    }
    if (sl->pending.len + len < COPY_MIN) {
        buf_append(&sl->pending, data, len); /* small pieces become one CopyData message */
        return 0;
    }
    if (sl->pending.len) {
        buf_append(&sl->pending, data, len);
        return slice_put_pending(sl);
    }
    return pgconn_copy_put(sl->w->conn, data, len);
}

const struct pgerr *pgsink_slice_last_error(const struct pgsink_slice *sl)
{
    if (sl->err.message[0] || !sl->w)
        return &sl->err;
    return pgconn_last_error(sl->w->conn);
}

void pgsink_slice_on_drain(struct pgsink_slice *sl, void (*cb)(void *ud), void *ud)
{
    sl->drain_cb = cb;
    sl->drain_ud = ud;
    if (sl->phase == SL_COPYING)
        pgconn_on_drain(sl->w->conn, slice_drained, sl);
}

void pgsink_slice_set_replace(struct pgsink_slice *sl, bool replace)
{
    sl->replace = replace;
}

void pgsink_slice_fence_chunks(struct pgsink_slice *sl, const struct pglease_units *f,
                               const bool *clean)
{
    free_chunk_fence(sl);
    size_t n = f->n;
    sl->nchunks = n;
    sl->chunk_units = calloc(n ? n : 1, sizeof *sl->chunk_units);
    sl->chunk_epochs = calloc(n ? n : 1, sizeof *sl->chunk_epochs);
    sl->chunk_clean = calloc(n ? n : 1, sizeof *sl->chunk_clean);
    sl->chunk_owner = strdup(f->owner);
    if (!sl->chunk_units || !sl->chunk_epochs || !sl->chunk_clean || !sl->chunk_owner)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (!(sl->chunk_units[i] = strdup(f->units[i])))
            abort();
        sl->chunk_epochs[i] = f->epochs[i];
        sl->chunk_clean[i] = clean[i];
    }
}

void pgsink_slice_clear_range(struct pgsink_slice *sl)
{
    sl->clear = true;
}

void pgsink_slice_chunks(struct pgsink_slice *sl, const struct pgsink_chunk *c, size_t n)
{
    free(sl->chunks_json);
    sl->chunks_json = n ? pgchunks_json(c, n) : NULL;
}

void pgsink_slice_commit(struct pgsink_slice *sl, const char *cursor, pgsink_commit_cb cb, void *ud)
{
    sl->commit_cb = cb;
    sl->commit_ud = ud;
    sl->drain_cb = NULL;
    sl->cursor = cursor ? strdup(cursor) : NULL;
    switch (sl->phase) {
    case SL_FAILED: {
        struct pgerr e = sl->err;
        if (!e.message[0])
            pgerr_set(&e, "", true, "connection to PostgreSQL lost");
        cb(ud, &e, NULL);
        slice_free(sl);
        return;
    }
    case SL_IDLE:
        writer_acquire(sl); /* a slice without rows still records its state */
        return;
    case SL_COPYING:
        slice_copy_end(sl);
        return;
    default:
        return; /* the COPY is being opened: it ends as soon as it is */
    }
}

void pgsink_slice_abort(struct pgsink_slice *sl)
{
    sl->aborted = true;
    sl->drain_cb = NULL;
    switch (sl->phase) {
    case SL_WAIT_WRITER:
        waiter_remove(sl->s, sl);
        /* fall through */
    case SL_IDLE:
    case SL_FAILED:
        slice_free(sl);
        return;
    case SL_COPYING:
        sl->phase = SL_COPY_END;
        pgconn_copy_end(sl->w->conn, "slice aborted by druid-syncd", slice_on_abort_copy, sl);
        return;
    default:
        return; /* a statement is on its way: its answer sees the flag and rolls back */
    }
}

void pgslice_free_live(struct pgsink *s)
{
    while (s->live)
        slice_free(s->live);
}
