/* pgschema: DDL and schema evolution: the destination tables (names, creation, new columns,
 * widening, the range index) and the metadata tables. See pgsink.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "pgsink_int.h"
#include "sqlident.h"
#include "timeutil.h"

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

/* ---- metadata tables ---- */

static void add_columns_ddl(struct buf *b, const struct pgsink *s, const char *table,
                            const struct pgsink_column *cols, size_t n)
{
    buf_puts(b, "CREATE TABLE IF NOT EXISTS ");
    pgsink_qtable(b, s, table);
    buf_puts(b, " (");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(b, ", ");
        sqlident_quote(b, cols[i].name);
        buf_printf(b, " %s", typemap_pg_name(cols[i].type));
    }
    buf_puts(b, ")");
}

void pgsink_replace_metadata(struct pgsink *s, const char *table, const struct pgsink_column *cols,
                             size_t ncols, const char *copy_text, size_t len, pgsink_cb cb,
                             void *ud)
{
    struct pgjob *j = pgsink_job(cb, ud);
    struct buf b = BUF_INIT;
    pgjob_sql(j, "BEGIN", 0, NULL, NULL);
    add_columns_ddl(&b, s, table, cols, ncols);
    pgjob_sql(j, b.data, 0, NULL, NULL);
    for (size_t i = 0; i < ncols; i++) {
        buf_reset(&b);
        buf_puts(&b, "ALTER TABLE ");
        pgsink_qtable(&b, s, table);
        buf_puts(&b, " ADD COLUMN IF NOT EXISTS ");
        sqlident_quote(&b, cols[i].name);
        buf_printf(&b, " %s", typemap_pg_name(cols[i].type));
        pgjob_sql(j, b.data, 0, NULL, NULL);
    }
    buf_reset(&b);
    buf_puts(&b, "DELETE FROM ");
    pgsink_qtable(&b, s, table);
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_reset(&b);
    buf_puts(&b, "COPY ");
    pgsink_qtable(&b, s, table);
    buf_puts(&b, " (");
    pgsink_column_list(&b, cols, ncols);
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
        pgsink_qtable(&b, s, p->dest);
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
                pgsink_qtable(&b, s, p->dest);
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
                pgsink_qtable(&b, s, p->dest);
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
        pgsink_qtable(&b, s, p->dest);
        buf_puts(&b, " (");
        sqlident_quote(&b, p->slice_column);
        buf_puts(&b, ")");
        pgjob_sql(j, b.data, 0, NULL, NULL);
    }
    buf_reset(&b);
    buf_puts(&b, "INSERT INTO ");
    pgsink_qtable(&b, s, STATE_TABLE);
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
    pgsink_qtable(&b, s, STATE_TABLE);
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
    struct dstable *t = pgsink_find_table(s, p->datasource);
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
    pgsink_column_list(&b, p->cols, p->ncols);
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
    pgsink_qtable(&b, s, p->dest);
    const char *params[1] = {b.data};
    pgjob_sql(j,
              "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
              " WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped"
              " ORDER BY attnum",
              1, params, prep_columns_hook);
    buf_free(&b);
    pgjob_submit(s->control, j);
}

void pgschema_free_tables(struct pgsink *s)
{
    while (s->tables) {
        struct dstable *t = s->tables;
        s->tables = t->next;
        free(t->datasource);
        free(t->copy_cols);
        free(t->slice_column);
        free(t);
    }
}
