/* pgsink: the sink's lifecycle and what its parts share. See pgsink.h and pgsink_int.h.
 *
 * One control connection (a pgjob queue) runs DDL, metadata refreshes and state updates;
 * a pool of postgres_writers writer connections runs slices, one slice transaction per
 * connection. */
#include "pgsink.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "pgsink_int.h"
#include "sqlident.h"
#include "timeutil.h"

/* ---- helpers ---- */

void pgsink_qtable(struct buf *b, const struct pgsink *s, const char *name)
{
    sqlident_quote2(b, s->cfg->destination_schema, name);
}

void pgsink_add_columns(struct pgjob *j, const struct pgsink *s, const char *table,
                        const char *const *defs, size_t n)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "ALTER TABLE ");
    pgsink_qtable(&b, s, table);
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s ADD COLUMN IF NOT EXISTS %s", i ? "," : "", defs[i]);
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_free(&b);
}

struct dstable *pgsink_find_table(struct pgsink *s, const char *ds)
{
    for (struct dstable *t = s->tables; t; t = t->next)
        if (strcmp(t->datasource, ds) == 0)
            return t;
    return NULL;
}

void pgsink_column_list(struct buf *b, const struct pgsink_column *cols, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(b, ", ");
        sqlident_quote(b, cols[i].name);
    }
}

/* ---- lifecycle ---- */

struct pgsink *pgsink_new(uv_loop_t *loop, const struct config *cfg)
{
    struct pgsink *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = loop;
    s->control = pgjob_queue_new(loop, cfg->postgres);
    /* its own key: Druid queries in flight and PostgreSQL writers are different limits (a
     * slice takes a writer only once its Druid response has data, see pgslice.c) */
    s->nwriters = (size_t)(cfg->postgres_writers > 0 ? cfg->postgres_writers : 1);
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
    /* Every transaction carries its own limits (SET LOCAL: nothing stays on the session,
     * so a transaction-mode pooler works too). A frozen daemon's transaction is ended by
     * the server; our own bound on waiting is a little longer, for a dead server. */
    long ms = (long)(cfg->postgres_timeout_seconds * 1000.0);
    /* a lock wait is contention (retried), a statement running out of time is a failure:
     * lock waits end first, at half the limit, so the two can be told apart */
    long lock_ms = ms / 2 > 0 ? ms / 2 : 1;
    snprintf(s->set_local, sizeof s->set_local,
             "SET LOCAL statement_timeout = %ld; SET LOCAL lock_timeout = %ld;"
             " SET LOCAL idle_in_transaction_session_timeout = %ld",
             ms, lock_ms, ms);
    double wait = cfg->postgres_timeout_seconds + 10;
    pgjob_queue_set_limits(s->control, cfg->connect_timeout_seconds, wait, s->set_local);
    if (s->lease)
        pgjob_queue_set_limits(s->lease, cfg->connect_timeout_seconds, wait, s->set_local);
    for (size_t i = 0; i < s->nwriters; i++)
        pgconn_set_timeouts(s->writers[i].conn, cfg->connect_timeout_seconds, wait);
}

const struct pgerr *pgsink_last_error(const struct pgsink *s)
{
    return pgjob_queue_last_error(s->control);
}

size_t pgsink_connections(const struct pgsink *s)
{
    size_t n = (pgjob_queue_connected(s->control) ? 1 : 0) +
               (s->lease && pgjob_queue_connected(s->lease) ? 1 : 0);
    for (size_t i = 0; i < s->nwriters; i++)
        n += pgconn_ok(s->writers[i].conn);
    return n;
}

void pgsink_free(struct pgsink *s)
{
    if (!s)
        return;
    pgjob_queue_free(s->control);
    pgjob_queue_free(s->lease);
    for (size_t i = 0; i < s->nwriters; i++)
        pgconn_free(s->writers[i].conn);
    free(s->writers);
    pglease_free_fences(s);
    pgschema_free_tables(s);
    while (s->wait_head) {
        struct waiter *w = s->wait_head;
        s->wait_head = w->next;
        free(w);
    }
    /* slices still rolling back (or waiting) when the daemon exits: closing their
     * connections rolls them back; only the memory is left to reclaim */
    pgslice_free_live(s);
    free(s);
}

struct cbctx {
    struct pgsink *s;
    pgsink_cb cb;
    void *ud;
};

static void cbctx_done(void *ud, const char *err)
{
    struct cbctx *c = ud;
    c->cb(c->ud, err);
    free(c);
}

struct pgjob *pgsink_job(struct pgsink *s, pgsink_cb cb, void *ud)
{
    struct cbctx *c = malloc(sizeof *c);
    if (!c)
        abort();
    c->s = s;
    c->cb = cb;
    c->ud = ud;
    struct pgjob *j = pgjob_new(cbctx_done, c);
    pgjob_set_ud_free(j, free); /* a job dropped unrun (at exit) still frees its context */
    return j;
}

void pgsink_ensure_schema(struct pgsink *s, pgsink_cb cb, void *ud)
{
    struct pgjob *j = pgsink_job(s, cb, ud);
    /* IF NOT EXISTS is not safe against a second instance doing the same: take the
     * schema's lock first (transaction-scoped; the job runs in a transaction) */
    pgschema_add_lock(j, s);
    struct buf b = BUF_INIT;
    buf_puts(&b, "CREATE SCHEMA IF NOT EXISTS ");
    sqlident_quote(&b, s->cfg->destination_schema);
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_free(&b);
    pgstate_add_create(j, s);
    pgchunks_add_create(j, s);
    pglease_add_create(j, s);
    pgjob_submit(s->control, j);
}

void pgsink_start(struct pgsink *s, pgsink_cb cb, void *ud)
{
    pgsink_ensure_schema(s, cb, ud);
}
