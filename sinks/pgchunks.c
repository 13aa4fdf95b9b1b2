/* pgchunks: the chunk ledger table druid_syncd_chunks: its DDL, reading a datasource's rows,
 * and replacing rows by chunk, on the control connection or inside a slice's transaction.
 * See pgsink.h. */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "pglease.h"
#include "pgsink_int.h"

void pgchunks_add_create(struct pgjob *j, const struct pgsink *s)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "CREATE TABLE IF NOT EXISTS ");
    pgsink_qtable(&b, s, PGSINK_CHUNKS_TABLE);
    buf_puts(&b, " (datasource text NOT NULL, chunk_start text NOT NULL, chunk_end text NOT NULL,"
                 " start_ms bigint NOT NULL, end_ms bigint NOT NULL, fingerprint text NOT NULL,"
                 " druid_rows bigint, stored_rows bigint NOT NULL DEFAULT 0,"
                 " state text NOT NULL CHECK (state IN ('synced', 'pending', 'postponed')),"
                 " synced_at timestamptz, postponed_since timestamptz,"
                 " PRIMARY KEY (datasource, start_ms, end_ms))");
    pgjob_sql(j, b.data, 0, NULL, NULL);
    /* open (realtime) chunks: where the next read starts, and when it was read whole */
    static const char *const added[] = {"position_ms bigint", "full_read_ms bigint",
                                        "drop_held boolean NOT NULL DEFAULT false"};
    pgsink_add_columns(j, s, PGSINK_CHUNKS_TABLE, added, sizeof added / sizeof added[0]);
    buf_free(&b);
}

char *pgchunks_json(const struct pgsink_chunk *c, size_t n)
{
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "chunk_start", json_object_new_string(c[i].start));
        json_object_object_add(o, "chunk_end", json_object_new_string(c[i].end));
        json_object_object_add(o, "start_ms", json_object_new_int64(c[i].start_ms));
        json_object_object_add(o, "end_ms", json_object_new_int64(c[i].end_ms));
        json_object_object_add(o, "fingerprint",
                               c[i].fingerprint ? json_object_new_string(c[i].fingerprint) : NULL);
        json_object_object_add(
            o, "druid_rows", c[i].druid_rows >= 0 ? json_object_new_int64(c[i].druid_rows) : NULL);
        json_object_object_add(o, "stored_rows", json_object_new_int64(c[i].stored_rows));
        json_object_object_add(o, "state", json_object_new_string(c[i].state ? c[i].state : ""));
        json_object_object_add(
            o, "postponed_since_ms",
            c[i].postponed_since_ms ? json_object_new_int64(c[i].postponed_since_ms) : NULL);
        json_object_object_add(
            o, "position_ms",
            c[i].position_ms != INT64_MIN ? json_object_new_int64(c[i].position_ms) : NULL);
        json_object_object_add(o, "full_read_ms",
                               c[i].full_read_ms ? json_object_new_int64(c[i].full_read_ms) : NULL);
        json_object_object_add(o, "drop_held", json_object_new_boolean(c[i].drop_held));
        json_object_array_add(a, o);
    }
    char *out = strdup(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
    json_object_put(a);
    if (!out)
        abort();
    return out;
}

void pgchunks_sql_delete(struct buf *b, const struct pgsink *s, const char *ds, const char *json)
{
    buf_puts(b, "DELETE FROM ");
    pgsink_qtable(b, s, PGSINK_CHUNKS_TABLE);
    buf_printf(b,
               " AS k USING jsonb_to_recordset(%s::jsonb) AS c(start_ms bigint, end_ms bigint)"
               " WHERE k.datasource = %s AND k.start_ms < c.end_ms AND k.end_ms > c.start_ms",
               json, ds);
}

void pgchunks_sql_insert(struct buf *b, const struct pgsink *s, const char *ds, const char *json)
{
    buf_puts(b, "INSERT INTO ");
    pgsink_qtable(b, s, PGSINK_CHUNKS_TABLE);
    buf_puts(b, " (datasource, chunk_start, chunk_end, start_ms, end_ms, fingerprint, druid_rows,"
                " stored_rows, state, synced_at, postponed_since, position_ms, full_read_ms,"
                " drop_held)"
                " SELECT ");
    buf_puts(b, ds);
    buf_puts(b, ", c.chunk_start, c.chunk_end, c.start_ms, c.end_ms, c.fingerprint,"
                " c.druid_rows, c.stored_rows, c.state,"
                " CASE WHEN c.state = 'synced' THEN now() END,"
                " to_timestamp(c.postponed_since_ms / 1000.0), c.position_ms, c.full_read_ms,"
                " c.drop_held"
                " FROM jsonb_to_recordset(");
    buf_puts(b, json);
    buf_puts(b, "::jsonb) AS c(chunk_start text, chunk_end text,"
                " start_ms bigint, end_ms bigint, fingerprint text, druid_rows bigint,"
                " stored_rows bigint, state text, postponed_since_ms bigint, position_ms bigint,"
                " full_read_ms bigint, drop_held boolean)"
                " WHERE c.fingerprint IS NOT NULL");
}

/* The rows replaced by chunk, then the fence (f: chunk units, else the datasource's); the
 * job's COMMIT follows. */
static void chunks_write(struct pgsink *s, const char *datasource, const struct pgsink_chunk *c,
                         size_t n, const struct pglease_units *f, pgsink_cb cb, void *ud)
{
    struct pgjob *j = pgsink_job(s, cb, ud);
    char *json = pgchunks_json(c, n);
    const char *p[2] = {datasource, json};
    struct buf b = BUF_INIT;
    pgchunks_sql_delete(&b, s, "$1", "$2");
    pgjob_sql(j, b.data, 2, p, NULL);
    buf_reset(&b);
    pgchunks_sql_insert(&b, s, "$1", "$2");
    pgjob_sql(j, b.data, 2, p, NULL);
    if (f)
        pglease_add_unit_fences(j, s, f);
    else
        pglease_add_fence(j, s, datasource);
    buf_free(&b);
    free(json);
    pgjob_submit(s->control, j);
}

void pgsink_chunks_write(struct pgsink *s, const char *datasource, const struct pgsink_chunk *c,
                         size_t n, pgsink_cb cb, void *ud)
{
    chunks_write(s, datasource, c, n, NULL, cb, ud);
}

void pgsink_chunks_write_fenced(struct pgsink *s, const char *datasource,
                                const struct pgsink_chunk *c, size_t n,
                                const struct pglease_units *f, pgsink_cb cb, void *ud)
{
    chunks_write(s, datasource, c, n, f, cb, ud);
}

struct chunks_read {
    pgsink_chunks_cb cb;
    void *ud;
    PGresult *res;
};

static int chunks_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct chunks_read *r = ud;
    size_t n = (size_t)PQntuples(res);
    struct pgsink_chunk *c = calloc(n ? n : 1, sizeof *c);
    if (!c)
        abort();
    for (size_t i = 0; i < n; i++) {
        int k = (int)i;
        c[i].start = PQgetvalue(res, k, 0);
        c[i].end = PQgetvalue(res, k, 1);
        c[i].start_ms = strtoll(PQgetvalue(res, k, 2), NULL, 10);
        c[i].end_ms = strtoll(PQgetvalue(res, k, 3), NULL, 10);
        c[i].fingerprint = PQgetvalue(res, k, 4);
        c[i].druid_rows = PQgetisnull(res, k, 5) ? -1 : strtoll(PQgetvalue(res, k, 5), NULL, 10);
        c[i].stored_rows = strtoll(PQgetvalue(res, k, 6), NULL, 10);
        c[i].state = PQgetvalue(res, k, 7);
        c[i].position_ms =
            PQgetisnull(res, k, 9) ? INT64_MIN : strtoll(PQgetvalue(res, k, 9), NULL, 10);
        c[i].full_read_ms = PQgetisnull(res, k, 10) ? 0 : strtoll(PQgetvalue(res, k, 10), NULL, 10);
        c[i].drop_held = strcmp(PQgetvalue(res, k, 11), "t") == 0;
        c[i].postponed_since_ms =
            PQgetisnull(res, k, 8) ? 0 : strtoll(PQgetvalue(res, k, 8), NULL, 10);
    }
    r->cb(r->ud, NULL, c, n);
    r->cb = NULL; /* answered */
    free(c);
    return 0;
}

static void chunks_done(void *ud, const char *err)
{
    struct chunks_read *r = ud;
    if (r->cb)
        r->cb(r->ud, err ? err : "reading the chunk ledger returned nothing", NULL, 0);
    free(r);
}

void pgsink_chunks_read(struct pgsink *s, const char *datasource, pgsink_chunks_cb cb, void *ud)
{
    struct chunks_read *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->cb = cb;
    r->ud = ud;
    struct pgjob *j = pgjob_new(chunks_done, r);
    pgjob_set_ud_free(j, free);
    struct buf b = BUF_INIT;
    buf_puts(&b, "SELECT chunk_start, chunk_end, start_ms, end_ms, fingerprint, druid_rows,"
                 " stored_rows, state,"
                 " (extract(epoch FROM postponed_since) * 1000)::bigint, position_ms,"
                 " full_read_ms, drop_held FROM ");
    pgsink_qtable(&b, s, PGSINK_CHUNKS_TABLE);
    buf_puts(&b, " WHERE datasource = $1 ORDER BY start_ms, end_ms");
    const char *p[1] = {datasource};
    pgjob_sql(j, b.data, 1, p, chunks_hook);
    buf_free(&b);
    pgjob_submit(s->control, j);
}
