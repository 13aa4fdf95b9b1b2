/* pgslice: one slice's transaction on a writer connection: BEGIN, the range check, the fast
 * path (COPY into the table) or the merge path (COPY into a staging table, insert new
 * identities, flag or delete vanished rows), the state row, COMMIT. See pgsink.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
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

/* ---- slices ---- */

enum slice_phase {
    SL_WAIT_WRITER,
    SL_CONNECT,
    SL_BEGIN,
    SL_CHECK,
    SL_STAGE,
    SL_COPY_START,
    SL_COPYING, /* handed to the caller */
    SL_COPY_END,
    SL_ANALYZE,
    SL_INSERT,
    SL_VANISH,
    SL_CHUNKS_DEL,
    SL_CHUNKS_INS,
    SL_STATE,
    SL_COMMIT,
    SL_ROLLBACK,
};

struct pgsink_slice {
    struct pgsink *s;
    struct pgsink_slice *live_next, *live_prev;
    struct writer *w;
    char *datasource;
    char dest[SQLIDENT_PG_MAX + 1];
    struct dstable view; /* copy of the table's slice column / copy columns */
    int64_t lo, hi;
    bool fast;
    enum slice_phase phase;
    pgsink_slice_cb ready_cb;
    void *ready_ud;
    pgsink_commit_cb commit_cb;
    void *commit_ud;
    char *cursor;
    char *chunks_json; /* the ledger rows this slice completes, or NULL */
    struct pgsink_slice_result res;
    void (*drain_cb)(void *ud);
    void *drain_ud;
    bool aborted;      /* caller gave up: roll back quietly */
    bool soft_deletes; /* as configured when the slice began: a reload does not change it */
    bool replace;      /* unmatched live rows are deleted, not flagged (id scheme migration) */
    struct pgerr err;  /* the first failure, with its cause */
};

static void slice_step(struct pgsink_slice *sl);
static void slice_on_result(void *ud, PGresult *res, const char *err);

static void slice_free(struct pgsink_slice *sl)
{
    if (sl->live_prev)
        sl->live_prev->live_next = sl->live_next;
    else
        sl->s->live = sl->live_next;
    if (sl->live_next)
        sl->live_next->live_prev = sl->live_prev;
    free(sl->datasource);
    free(sl->view.copy_cols);
    free(sl->view.slice_column);
    free(sl->cursor);
    free(sl->chunks_json);
    free(sl);
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

/* Ends the slice: reports to whoever waits, releases the writer, frees. */
static void slice_end(struct pgsink_slice *sl, const struct pgerr *err)
{
    struct pgsink *s = sl->s;
    struct writer *w = sl->w;
    if (!sl->aborted) {
        if (sl->commit_cb)
            sl->commit_cb(sl->commit_ud, err, err ? NULL : &sl->res);
        else if (sl->ready_cb)
            sl->ready_cb(sl->ready_ud, NULL, err);
    }
    slice_free(sl);
    if (w)
        writer_release(s, w);
}

static void slice_on_rollback(void *ud, PGresult *res, const char *err)
{
    (void)res;
    (void)err;
    struct pgsink_slice *sl = ud;
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
    if (sl->w && pgconn_ok(sl->w->conn) && sl->phase != SL_CONNECT && sl->phase != SL_BEGIN) {
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
    sl->phase = SL_BEGIN;
    slice_step(sl);
}

static void slice_query(struct pgsink_slice *sl, const char *sql, int n, const char **p)
{
    pgconn_query(sl->w->conn, sql, n, p, slice_on_result, sl);
}

static void slice_step(struct pgsink_slice *sl)
{
    struct pgsink *s = sl->s;
    struct buf b = BUF_INIT;
    char lob[TIME_ISO_MAX], hib[TIME_ISO_MAX];
    const char *p[4];
    int np;
    switch (sl->phase) {
    case SL_CONNECT:
        if (!pgconn_ok(sl->w->conn)) {
            pgconn_connect(sl->w->conn, slice_on_connect, sl);
            break;
        }
        sl->phase = SL_BEGIN;
        /* fall through */
    case SL_BEGIN:
        sl->phase = SL_BEGIN;
        /* the server bounds every statement and lock wait of the transaction itself */
        buf_printf(&b, "BEGIN; %s", s->set_local);
        slice_query(sl, b.data, 0, NULL);
        break;
    case SL_CHECK:
        buf_puts(&b, "SELECT EXISTS (SELECT 1 FROM ");
        pgsink_qtable(&b, s, sl->dest);
        buf_puts(&b, " WHERE ");
        np = range_sql(&b, &sl->view, "", sl->lo, sl->hi, 1, lob, hib, p);
        buf_puts(&b, ")");
        slice_query(sl, b.data, np, p);
        break;
    case SL_STAGE:
        buf_puts(&b, "CREATE TEMP TABLE " STAGE_TABLE " (LIKE ");
        pgsink_qtable(&b, s, sl->dest);
        buf_puts(&b, " INCLUDING DEFAULTS) ON COMMIT DROP");
        slice_query(sl, b.data, 0, NULL);
        break;
    case SL_COPY_START:
        buf_puts(&b, "COPY ");
        if (sl->fast)
            pgsink_qtable(&b, s, sl->dest);
        else
            buf_puts(&b, STAGE_TABLE);
        buf_printf(&b, " (%s) FROM STDIN", sl->view.copy_cols);
        slice_query(sl, b.data, 0, NULL);
        break;
    case SL_ANALYZE:
        /* a temp table has no statistics; without them the anti-join below can be planned
         * as a nested loop over the whole slice */
        slice_query(sl, "ANALYZE " STAGE_TABLE, 0, NULL);
        break;
    case SL_INSERT:
        buf_puts(&b, "INSERT INTO ");
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
        slice_query(sl, b.data, 0, NULL);
        break;
    case SL_VANISH:
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
        np = range_sql(&b, &sl->view, "t", sl->lo, sl->hi, 1, lob, hib, p);
        buf_puts(&b, " AND NOT EXISTS (SELECT 1 FROM " STAGE_TABLE " g WHERE g.");
        sqlident_quote(&b, s->col_id);
        buf_puts(&b, " = t.");
        sqlident_quote(&b, s->col_id);
        buf_puts(&b, ")");
        slice_query(sl, b.data, np, p);
        break;
    case SL_CHUNKS_DEL:
    case SL_CHUNKS_INS:
        if (sl->phase == SL_CHUNKS_DEL)
            pgchunks_sql_delete(&b, s);
        else
            pgchunks_sql_insert(&b, s);
        p[0] = sl->datasource;
        p[1] = sl->chunks_json;
        slice_query(sl, b.data, 2, p);
        break;
    case SL_STATE: {
        char ins[32];
        snprintf(ins, sizeof ins, "%" PRId64, sl->res.inserted);
        buf_puts(&b, "INSERT INTO ");
        pgsink_qtable(&b, s, STATE_TABLE);
        buf_puts(&b, " AS st (datasource, destination_table, cursor, rows_synced,"
                     " slices_committed) VALUES ($1, $2, $3, $4::bigint, 1)"
                     " ON CONFLICT (datasource) DO UPDATE SET cursor ="
                     /* the scheduler never sends a cursor behind the stored one (text
                      * comparison would misorder years beyond 9999 and BC) */
                     " COALESCE(EXCLUDED.cursor, st.cursor),"
                     " rows_synced = st.rows_synced + EXCLUDED.rows_synced,"
                     " slices_committed = st.slices_committed + 1, updated_at = now()");
        p[0] = sl->datasource;
        p[1] = sl->dest;
        p[2] = sl->cursor;
        p[3] = ins;
        slice_query(sl, b.data, 4, p);
        break;
    }
    case SL_COMMIT:
        slice_query(sl, "COMMIT", 0, NULL);
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

static void slice_on_result(void *ud, PGresult *res, const char *err)
{
    struct pgsink_slice *sl = ud;
    if (err) {
        slice_fail(sl, err);
        return;
    }
    switch (sl->phase) {
    case SL_BEGIN:
        sl->phase = SL_CHECK;
        break;
    case SL_CHECK:
        sl->fast = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "f") == 0;
        sl->phase = sl->fast ? SL_COPY_START : SL_STAGE;
        break;
    case SL_STAGE:
        sl->phase = SL_COPY_START;
        break;
    case SL_COPY_START:
        sl->phase = SL_COPYING;
        sl->ready_cb(sl->ready_ud, sl, NULL);
        return;
    case SL_COPY_END:
        sl->res.copied = cmd_tuples(res);
        sl->res.fast = sl->fast;
        if (sl->fast) {
            sl->res.inserted = sl->res.copied;
            sl->phase = sl->chunks_json ? SL_CHUNKS_DEL : SL_STATE;
        } else {
            sl->phase = SL_ANALYZE;
        }
        break;
    case SL_ANALYZE:
        sl->phase = SL_INSERT;
        break;
    case SL_INSERT:
        sl->res.inserted = cmd_tuples(res);
        sl->phase = SL_VANISH;
        break;
    case SL_VANISH:
        sl->res.vanished = cmd_tuples(res);
        sl->phase = sl->chunks_json ? SL_CHUNKS_DEL : SL_STATE;
        break;
    case SL_CHUNKS_DEL:
        sl->phase = SL_CHUNKS_INS;
        break;
    case SL_CHUNKS_INS:
        sl->phase = SL_STATE;
        break;
    case SL_STATE:
        sl->phase = SL_COMMIT;
        break;
    case SL_COMMIT:
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
    memcpy(sl->dest, t->dest, sizeof sl->dest);
    sl->view.copy_cols = strdup(t->copy_cols);
    sl->view.slice_column = t->slice_column ? strdup(t->slice_column) : NULL;
    sl->lo = lo;
    sl->hi = hi;
    sl->soft_deletes = s->cfg->soft_deletes;
    sl->ready_cb = cb;
    sl->ready_ud = ud;
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

bool pgsink_slice_fast(const struct pgsink_slice *sl)
{
    return sl->fast;
}

int pgsink_slice_write(struct pgsink_slice *sl, const char *data, size_t len)
{
    return pgconn_copy_put(sl->w->conn, data, len);
}

const struct pgerr *pgsink_slice_last_error(const struct pgsink_slice *sl)
{
    return pgconn_last_error(sl->w->conn);
}

static void slice_drained(void *ud)
{
    struct pgsink_slice *sl = ud;
    if (sl->drain_cb)
        sl->drain_cb(sl->drain_ud);
}

void pgsink_slice_on_drain(struct pgsink_slice *sl, void (*cb)(void *ud), void *ud)
{
    sl->drain_cb = cb;
    sl->drain_ud = ud;
    pgconn_on_drain(sl->w->conn, slice_drained, sl);
}

void pgsink_slice_set_replace(struct pgsink_slice *sl, bool replace)
{
    sl->replace = replace;
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
    sl->ready_cb = NULL;
    sl->cursor = cursor ? strdup(cursor) : NULL;
    sl->phase = SL_COPY_END;
    pgconn_copy_end(sl->w->conn, NULL, slice_on_result, sl);
}

static void slice_on_abort_copy(void *ud, PGresult *res, const char *err)
{
    (void)res;
    (void)err; /* "COPY aborted" is the expected answer */
    struct pgsink_slice *sl = ud;
    slice_fail(sl, "aborted");
}

void pgsink_slice_abort(struct pgsink_slice *sl)
{
    sl->aborted = true;
    sl->phase = SL_COPY_END;
    pgconn_copy_end(sl->w->conn, "slice aborted by druid-syncd", slice_on_abort_copy, sl);
}

void pgslice_free_live(struct pgsink *s)
{
    while (s->live)
        slice_free(s->live);
}
