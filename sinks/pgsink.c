/* pgsink: PostgreSQL tables, state and slice transactions. See pgsink.h.
 *
 * One control connection (a pgjob queue) runs DDL, metadata refreshes and state updates;
 * a pool of writer connections runs slices, one slice transaction per connection. */
#include "pgsink.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "pgconn.h"
#include "pgjob.h"
#include "sqlident.h"
#include "timeutil.h"

#define STATE_TABLE "druid_syncd_state"
#define STAGE_TABLE "druid_syncd_stage"

/* What the sink knows of one datasource's table, from pgsink_prepare_table. */
struct dstable {
    struct dstable *next;
    char *datasource;
    char dest[SQLIDENT_PG_MAX + 1];
    char *copy_cols;    /* "c1","c2",...,"<prefix>id" */
    char *slice_column; /* NULL: whole-table slices */
};

struct writer {
    struct pgconn *conn;
    bool in_use;
};

struct waiter {
    struct waiter *next;
    struct pgsink_slice *sl;
};

struct pgsink {
    uv_loop_t *loop;
    const struct config *cfg;
    struct pgjob_queue *control;
    struct dstable *tables;
    struct writer *writers;
    size_t nwriters;
    struct waiter *wait_head, *wait_tail;
    struct pgsink_slice *live; /* every slice not yet freed, so pgsink_free can reclaim them */
    char col_id[64], col_synced[64], col_deleted[64];
};

/* ---- helpers ---- */

static void qtable(struct buf *b, const struct pgsink *s, const char *name)
{
    sqlident_quote2(b, s->cfg->destination_schema, name);
}

static struct dstable *find_table(struct pgsink *s, const char *ds)
{
    for (struct dstable *t = s->tables; t; t = t->next)
        if (strcmp(t->datasource, ds) == 0)
            return t;
    return NULL;
}

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
        time_format_iso_ms(lo, lob);
        p[n++] = lob;
    }
    if (t->slice_column && hi != INT64_MAX) {
        buf_puts(b, n ? " AND " : "");
        buf_printf(b, "%s%s", alias, alias[0] ? "." : "");
        sqlident_quote(b, t->slice_column);
        buf_printf(b, " < $%d::timestamptz", first + n);
        time_format_iso_ms(hi, hib);
        p[n++] = hib;
    }
    if (!n)
        buf_puts(b, "true");
    return n;
}

/* The table for a datasource: its name verbatim, shortened when longer than 63 bytes, and
 * hashed when it would be one of the daemon's own tables. */
static void dest_name(const char *datasource, char *out)
{
    if (strcmp(datasource, STATE_TABLE) == 0 || strcmp(datasource, PGSINK_META_TABLES) == 0 ||
        strcmp(datasource, PGSINK_META_COLUMNS) == 0)
        sqlident_pg_name_hashed(datasource, out);
    else
        sqlident_pg_name(datasource, out);
}

/* ---- lifecycle ---- */

struct pgsink *pgsink_new(uv_loop_t *loop, const struct config *cfg)
{
    struct pgsink *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = loop;
    s->control = pgjob_queue_new(loop, cfg->postgres);
    s->nwriters = (size_t)cfg->max_concurrent_queries;
    s->writers = calloc(s->nwriters, sizeof *s->writers);
    if (!s->control || !s->writers) {
        pgjob_queue_free(s->control);
        free(s->writers);
        free(s);
        return NULL;
    }
    for (size_t i = 0; i < s->nwriters; i++)
        s->writers[i].conn = pgconn_new(loop, cfg->postgres);
    pgsink_set_config(s, cfg);
    return s;
}

void pgsink_set_config(struct pgsink *s, const struct config *cfg)
{
    s->cfg = cfg;
    config_system_column(cfg, "id", s->col_id, sizeof s->col_id);
    config_system_column(cfg, "synced", s->col_synced, sizeof s->col_synced);
    config_system_column(cfg, "deleted", s->col_deleted, sizeof s->col_deleted);
}

static void slice_free(struct pgsink_slice *sl);

size_t pgsink_connections(const struct pgsink *s)
{
    size_t n = pgjob_queue_connected(s->control) ? 1 : 0;
    for (size_t i = 0; i < s->nwriters; i++)
        n += pgconn_ok(s->writers[i].conn);
    return n;
}

void pgsink_free(struct pgsink *s)
{
    if (!s)
        return;
    pgjob_queue_free(s->control);
    for (size_t i = 0; i < s->nwriters; i++)
        pgconn_free(s->writers[i].conn);
    free(s->writers);
    while (s->tables) {
        struct dstable *t = s->tables;
        s->tables = t->next;
        free(t->datasource);
        free(t->copy_cols);
        free(t->slice_column);
        free(t);
    }
    while (s->wait_head) {
        struct waiter *w = s->wait_head;
        s->wait_head = w->next;
        free(w);
    }
    /* slices still rolling back (or waiting) when the daemon exits: closing their
     * connections rolls them back; only the memory is left to reclaim */
    while (s->live)
        slice_free(s->live);
    free(s);
}

struct cbctx {
    pgsink_cb cb;
    void *ud;
};

static void cbctx_done(void *ud, const char *err)
{
    struct cbctx *c = ud;
    c->cb(c->ud, err);
    free(c);
}

static struct pgjob *job_with_cb(pgsink_cb cb, void *ud)
{
    struct cbctx *c = malloc(sizeof *c);
    if (!c)
        abort();
    c->cb = cb;
    c->ud = ud;
    struct pgjob *j = pgjob_new(cbctx_done, c);
    pgjob_set_ud_free(j, free); /* a job dropped unrun (at exit) still frees its context */
    return j;
}

void pgsink_start(struct pgsink *s, pgsink_cb cb, void *ud)
{
    struct pgjob *j = job_with_cb(cb, ud);
    struct buf b = BUF_INIT;
    buf_puts(&b, "CREATE SCHEMA IF NOT EXISTS ");
    sqlident_quote(&b, s->cfg->destination_schema);
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_reset(&b);
    buf_puts(&b, "CREATE TABLE IF NOT EXISTS ");
    qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " (datasource text PRIMARY KEY, destination_table text NOT NULL,"
                 " mode text, incremental_column text, cursor text,"
                 " rows_synced bigint NOT NULL DEFAULT 0, last_started timestamptz,"
                 " last_finished timestamptz, last_success timestamptz, last_error text,"
                 " updated_at timestamptz NOT NULL DEFAULT now(),"
                 " status text, in_catalog boolean NOT NULL DEFAULT true,"
                 " slices_committed bigint NOT NULL DEFAULT 0)");
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_free(&b);
    pgjob_submit(s->control, j);
}

/* ---- metadata tables ---- */

static void add_columns_ddl(struct buf *b, const struct pgsink *s, const char *table,
                            const struct pgsink_column *cols, size_t n)
{
    buf_puts(b, "CREATE TABLE IF NOT EXISTS ");
    qtable(b, s, table);
    buf_puts(b, " (");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(b, ", ");
        sqlident_quote(b, cols[i].name);
        buf_printf(b, " %s", typemap_pg_name(cols[i].type));
    }
    buf_puts(b, ")");
}

static void column_list(struct buf *b, const struct pgsink_column *cols, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(b, ", ");
        sqlident_quote(b, cols[i].name);
    }
}

void pgsink_replace_metadata(struct pgsink *s, const char *table, const struct pgsink_column *cols,
                             size_t ncols, const char *copy_text, size_t len, pgsink_cb cb,
                             void *ud)
{
    struct pgjob *j = job_with_cb(cb, ud);
    struct buf b = BUF_INIT;
    pgjob_sql(j, "BEGIN", 0, NULL, NULL);
    add_columns_ddl(&b, s, table, cols, ncols);
    pgjob_sql(j, b.data, 0, NULL, NULL);
    for (size_t i = 0; i < ncols; i++) {
        buf_reset(&b);
        buf_puts(&b, "ALTER TABLE ");
        qtable(&b, s, table);
        buf_puts(&b, " ADD COLUMN IF NOT EXISTS ");
        sqlident_quote(&b, cols[i].name);
        buf_printf(&b, " %s", typemap_pg_name(cols[i].type));
        pgjob_sql(j, b.data, 0, NULL, NULL);
    }
    buf_reset(&b);
    buf_puts(&b, "DELETE FROM ");
    qtable(&b, s, table);
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_reset(&b);
    buf_puts(&b, "COPY ");
    qtable(&b, s, table);
    buf_puts(&b, " (");
    column_list(&b, cols, ncols);
    buf_puts(&b, ") FROM STDIN");
    pgjob_copy(j, b.data, copy_text, len);
    pgjob_sql(j, "COMMIT", 0, NULL, NULL);
    buf_free(&b);
    pgjob_submit(s->control, j);
}

/* ---- table preparation ---- */

struct prep {
    struct pgsink *s;
    pgsink_table_cb cb;
    void *ud;
    char *datasource;
    struct pgsink_column *cols;
    size_t ncols;
    char *slice_column;
    char *mode;
    char *inc;
    char dest[SQLIDENT_PG_MAX + 1];
    enum pgtype *types;
    char *cursor;
};

static void prep_free(struct prep *p)
{
    for (size_t i = 0; i < p->ncols; i++)
        free((char *)p->cols[i].name);
    free(p->cols);
    free(p->datasource);
    free(p->slice_column);
    free(p->mode);
    free(p->inc);
    free(p->types);
    free(p->cursor);
    free(p);
}

static void prep_drop(void *p)
{
    prep_free(p);
}

static int prep_state_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct prep *p = ud;
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        p->cursor = strdup(PQgetvalue(res, 0, 0));
    return 0;
}

/* Reads the existing columns and adds the DDL that brings the table up to date. */
static int prep_columns_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    struct prep *p = ud;
    struct pgsink *s = p->s;
    int n = PQntuples(res);
    struct buf b = BUF_INIT;
    (void)err;
    (void)errlen;
    if (n == 0) {
        buf_puts(&b, "CREATE TABLE ");
        qtable(&b, s, p->dest);
        buf_puts(&b, " (");
        for (size_t i = 0; i < p->ncols; i++) {
            sqlident_quote(&b, p->cols[i].name);
            buf_printf(&b, " %s, ", typemap_pg_name(p->cols[i].type));
            p->types[i] = p->cols[i].type;
        }
        sqlident_quote(&b, s->col_id);
        buf_puts(&b, " uuid PRIMARY KEY, ");
        sqlident_quote(&b, s->col_synced);
        buf_puts(&b, " timestamptz NOT NULL DEFAULT now(), ");
        sqlident_quote(&b, s->col_deleted);
        buf_puts(&b, " boolean NOT NULL DEFAULT false)");
        pgjob_sql(j, b.data, 0, NULL, NULL);
    } else {
        for (size_t i = 0; i < p->ncols; i++) {
            int row = -1;
            for (int r = 0; r < n; r++)
                if (strcmp(PQgetvalue(res, r, 0), p->cols[i].name) == 0)
                    row = r;
            buf_reset(&b);
            if (row < 0) {
                /* schema drift: a new column, nullable */
                buf_puts(&b, "ALTER TABLE ");
                qtable(&b, s, p->dest);
                buf_puts(&b, " ADD COLUMN ");
                sqlident_quote(&b, p->cols[i].name);
                buf_printf(&b, " %s", typemap_pg_name(p->cols[i].type));
                pgjob_sql(j, b.data, 0, NULL, NULL);
                p->types[i] = p->cols[i].type;
                log_info("pg", "%s: new column %s %s", p->datasource, p->cols[i].name,
                         typemap_pg_name(p->cols[i].type));
                continue;
            }
            enum pgtype have;
            if (typemap_from_pg_name(PQgetvalue(res, row, 1), &have) != 0)
                have = PGT_TEXT; /* a type someone changed by hand: write text into it */
            enum pgtype want = typemap_widen(have, p->cols[i].type);
            p->types[i] = want;
            if (want != have) {
                buf_puts(&b, "ALTER TABLE ");
                qtable(&b, s, p->dest);
                buf_puts(&b, " ALTER COLUMN ");
                sqlident_quote(&b, p->cols[i].name);
                buf_printf(&b, " TYPE %s USING ", typemap_pg_name(want));
                sqlident_quote(&b, p->cols[i].name);
                buf_printf(&b, "::%s", typemap_pg_name(want));
                pgjob_sql(j, b.data, 0, NULL, NULL);
                log_info("pg", "%s: column %s widened from %s to %s", p->datasource,
                         p->cols[i].name, typemap_pg_name(have), typemap_pg_name(want));
            }
        }
    }
    if (p->slice_column) {
        /* the range index: fast-path checks and merges look up rows by slice range */
        char idx[SQLIDENT_PG_MAX + 1], raw[256];
        snprintf(raw, sizeof raw, "druid_syncd_%s_%s", p->datasource, p->slice_column);
        sqlident_pg_name(raw, idx);
        buf_reset(&b);
        buf_puts(&b, "CREATE INDEX IF NOT EXISTS ");
        sqlident_quote(&b, idx);
        buf_puts(&b, " ON ");
        qtable(&b, s, p->dest);
        buf_puts(&b, " (");
        sqlident_quote(&b, p->slice_column);
        buf_puts(&b, ")");
        pgjob_sql(j, b.data, 0, NULL, NULL);
    }
    buf_reset(&b);
    buf_puts(&b, "INSERT INTO ");
    qtable(&b, s, STATE_TABLE);
    buf_puts(
        &b,
        " AS st (datasource, destination_table, mode, incremental_column, in_catalog,"
        " status) VALUES ($1, $2, $3, $4, true, 'syncing')"
        " ON CONFLICT (datasource) DO UPDATE SET destination_table = EXCLUDED.destination_table,"
        " mode = EXCLUDED.mode, incremental_column = EXCLUDED.incremental_column,"
        " in_catalog = true, updated_at = now(),"
        /* switching modes invalidates the cursor */
        " cursor = CASE WHEN st.mode IS DISTINCT FROM EXCLUDED.mode"
        " OR st.incremental_column IS DISTINCT FROM EXCLUDED.incremental_column"
        " THEN NULL ELSE st.cursor END");
    const char *params[4] = {p->datasource, p->dest, p->mode, p->inc};
    pgjob_sql(j, b.data, 4, params, NULL);
    buf_reset(&b);
    buf_puts(&b, "SELECT cursor FROM ");
    qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " WHERE datasource = $1");
    pgjob_sql(j, b.data, 1, params, prep_state_hook);
    pgjob_sql(j, "COMMIT", 0, NULL, NULL);
    buf_free(&b);
    return 0;
}

static void prep_done(void *ud, const char *err)
{
    struct prep *p = ud;
    struct pgsink *s = p->s;
    if (err) {
        p->cb(p->ud, err, NULL);
        prep_free(p);
        return;
    }
    struct dstable *t = find_table(s, p->datasource);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t)
            abort();
        t->datasource = strdup(p->datasource);
        t->next = s->tables;
        s->tables = t;
    }
    memcpy(t->dest, p->dest, sizeof t->dest);
    free(t->copy_cols);
    free(t->slice_column);
    struct buf b = BUF_INIT;
    column_list(&b, p->cols, p->ncols);
    buf_puts(&b, ", ");
    sqlident_quote(&b, s->col_id);
    t->copy_cols = buf_steal(&b);
    t->slice_column = p->slice_column ? strdup(p->slice_column) : NULL;
    struct pgsink_table_info info = {p->dest, p->types, p->cursor};
    p->cb(p->ud, NULL, &info);
    prep_free(p);
}

void pgsink_prepare_table(struct pgsink *s, const struct pgsink_table_req *req, pgsink_table_cb cb,
                          void *ud)
{
    struct prep *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->s = s;
    p->cb = cb;
    p->ud = ud;
    p->datasource = strdup(req->datasource);
    p->ncols = req->ncols;
    p->cols = calloc(req->ncols ? req->ncols : 1, sizeof *p->cols);
    p->types = calloc(req->ncols ? req->ncols : 1, sizeof *p->types);
    for (size_t i = 0; i < req->ncols; i++) {
        /* PostgreSQL would silently cut a longer name; shorten it the same way as tables */
        char pgname[SQLIDENT_PG_MAX + 1];
        sqlident_pg_name(req->cols[i].name, pgname);
        p->cols[i].name = strdup(pgname);
        p->cols[i].type = req->cols[i].type;
    }
    if (req->slice_column) {
        char pgname[SQLIDENT_PG_MAX + 1];
        sqlident_pg_name(req->slice_column, pgname);
        p->slice_column = strdup(pgname);
    }
    p->mode = strdup(req->mode);
    p->inc = strdup(req->incremental_column);
    dest_name(req->datasource, p->dest);

    struct pgjob *j = pgjob_new(prep_done, p);
    pgjob_set_ud_free(j, prep_drop);
    struct buf b = BUF_INIT;
    pgjob_sql(j, "BEGIN", 0, NULL, NULL);
    qtable(&b, s, p->dest);
    const char *params[1] = {b.data};
    pgjob_sql(j,
              "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
              " WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped"
              " ORDER BY attnum",
              1, params, prep_columns_hook);
    buf_free(&b);
    pgjob_submit(s->control, j);
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
    struct pgsink_slice_result res;
    void (*drain_cb)(void *ud);
    void *drain_ud;
    bool aborted;      /* caller gave up: roll back quietly */
    bool soft_deletes; /* as configured when the slice began: a reload does not change it */
    char err[1024];
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
static void slice_end(struct pgsink_slice *sl, const char *err)
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
    slice_end(sl, sl->err);
}

/* Records the first error and rolls back (when the connection still works). */
static void slice_fail(struct pgsink_slice *sl, const char *err)
{
    if (!sl->err[0])
        snprintf(sl->err, sizeof sl->err, "%s", err);
    if (sl->w && pgconn_ok(sl->w->conn) && sl->phase != SL_CONNECT && sl->phase != SL_BEGIN) {
        sl->phase = SL_ROLLBACK;
        pgconn_query(sl->w->conn, "ROLLBACK", 0, NULL, slice_on_rollback, sl);
        return;
    }
    slice_end(sl, sl->err);
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
        slice_query(sl, "BEGIN", 0, NULL);
        break;
    case SL_CHECK:
        buf_puts(&b, "SELECT EXISTS (SELECT 1 FROM ");
        qtable(&b, s, sl->dest);
        buf_puts(&b, " WHERE ");
        np = range_sql(&b, &sl->view, "", sl->lo, sl->hi, 1, lob, hib, p);
        buf_puts(&b, ")");
        slice_query(sl, b.data, np, p);
        break;
    case SL_STAGE:
        buf_puts(&b, "CREATE TEMP TABLE " STAGE_TABLE " (LIKE ");
        qtable(&b, s, sl->dest);
        buf_puts(&b, " INCLUDING DEFAULTS) ON COMMIT DROP");
        slice_query(sl, b.data, 0, NULL);
        break;
    case SL_COPY_START:
        buf_puts(&b, "COPY ");
        if (sl->fast)
            qtable(&b, s, sl->dest);
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
        qtable(&b, s, sl->dest);
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
        if (sl->soft_deletes) {
            buf_puts(&b, "UPDATE ");
            qtable(&b, s, sl->dest);
            buf_puts(&b, " AS t SET ");
            sqlident_quote(&b, s->col_deleted);
            buf_puts(&b, " = true, ");
            sqlident_quote(&b, s->col_synced);
            buf_puts(&b, " = now() WHERE NOT t.");
            sqlident_quote(&b, s->col_deleted);
            buf_puts(&b, " AND ");
        } else {
            buf_puts(&b, "DELETE FROM ");
            qtable(&b, s, sl->dest);
            buf_puts(&b, " AS t WHERE ");
        }
        np = range_sql(&b, &sl->view, "t", sl->lo, sl->hi, 1, lob, hib, p);
        buf_puts(&b, " AND NOT EXISTS (SELECT 1 FROM " STAGE_TABLE " g WHERE g.");
        sqlident_quote(&b, s->col_id);
        buf_puts(&b, " = t.");
        sqlident_quote(&b, s->col_id);
        buf_puts(&b, ")");
        slice_query(sl, b.data, np, p);
        break;
    case SL_STATE: {
        char ins[32];
        snprintf(ins, sizeof ins, "%" PRId64, sl->res.inserted);
        buf_puts(&b, "INSERT INTO ");
        qtable(&b, s, STATE_TABLE);
        buf_puts(&b, " AS st (datasource, destination_table, cursor, rows_synced,"
                     " slices_committed) VALUES ($1, $2, $3, $4::bigint, 1)"
                     " ON CONFLICT (datasource) DO UPDATE SET cursor = CASE"
                     " WHEN EXCLUDED.cursor IS NULL THEN st.cursor"
                     " WHEN st.cursor IS NULL THEN EXCLUDED.cursor"
                     " ELSE GREATEST(st.cursor COLLATE \"C\", EXCLUDED.cursor COLLATE \"C\") END,"
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
            sl->phase = SL_STATE;
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
    struct dstable *t = find_table(s, datasource);
    if (!t) {
        cb(ud, NULL, "table not prepared");
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

/* ---- state rows ---- */

/* set_clause may use $2 and $3 when nparams is 3 */
static void state_update(struct pgsink *s, const char *set_clause, int nparams,
                         const char *datasource, const char *p2, const char *p3, pgsink_cb cb,
                         void *ud)
{
    struct pgjob *j = job_with_cb(cb, ud);
    struct buf b = BUF_INIT;
    buf_puts(&b, "UPDATE ");
    qtable(&b, s, STATE_TABLE);
    buf_printf(&b, " AS st SET %s, updated_at = now() WHERE datasource = $1", set_clause);
    const char *p[3] = {datasource, p2, p3};
    pgjob_sql(j, b.data, nparams, p, NULL);
    buf_free(&b);
    pgjob_submit(s->control, j);
}

void pgsink_state_cycle_start(struct pgsink *s, const char *datasource, pgsink_cb cb, void *ud)
{
    state_update(s, "last_started = now(), status = 'syncing', in_catalog = true", 1, datasource,
                 NULL, NULL, cb, ud);
}

void pgsink_state_cycle_end(struct pgsink *s, const char *datasource, const char *error,
                            const char *cursor, pgsink_cb cb, void *ud)
{
    state_update(s,
                 "last_finished = now(),"
                 " last_success = CASE WHEN $2::text IS NULL THEN now() ELSE last_success END,"
                 " last_error = $2::text,"
                 " status = CASE WHEN $2::text IS NULL THEN 'ok' ELSE 'error' END,"
                 " cursor = CASE WHEN $3::text IS NULL THEN st.cursor"
                 " WHEN st.cursor IS NULL THEN $3::text"
                 " ELSE GREATEST(st.cursor COLLATE \"C\", $3::text COLLATE \"C\") END",
                 3, datasource, error, cursor, cb, ud);
}

void pgsink_state_mark_missing(struct pgsink *s, const char *present_json, pgsink_cb cb, void *ud)
{
    struct pgjob *j = job_with_cb(cb, ud);
    struct buf b = BUF_INIT;
    buf_puts(&b, "UPDATE ");
    qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " SET in_catalog = false, status = 'missing from the Druid catalog',"
                 " updated_at = now() WHERE in_catalog AND datasource NOT IN"
                 " (SELECT jsonb_array_elements_text($1::jsonb))");
    const char *p[1] = {present_json};
    pgjob_sql(j, b.data, 1, p, NULL);
    buf_free(&b);
    pgjob_submit(s->control, j);
}
