/* pgschema: DDL and schema evolution: the destination tables (names, creation, new columns,
 * widening, the range index) and the metadata tables. The names themselves are chosen by
 * pgnames (no collisions); this module reads what is taken (pg_class, pg_type, the state
 * rows) and records the choice (druid_syncd_state.destination_table and column_names,
 * information_schema_columns.pg_column). See pgsink.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "buf.h"
#include "log.h"
#include "pgnames.h"
#include "pglease.h"
#include "pgsink_int.h"
#include "sqlident.h"
#include "timeutil.h"

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

/* The transaction-scoped lock that serialises, per destination schema, the allocation of
 * names and the refresh of the metadata tables among all instances. */
void pgschema_add_lock(struct pgjob *j, const struct pgsink *s)
{
    char key[32];
    snprintf(key, sizeof key, "%" PRId64, pgnames_lock_key(s->cfg->destination_schema));
    const char *lp[1] = {key};
    pgjob_sql(j, "SELECT pg_advisory_xact_lock($1::bigint)", 1, lp, NULL);
}

static bool has_column(const struct pgsink_column *cols, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(cols[i].name, name) == 0)
            return true;
    return false;
}

void pgsink_replace_metadata(struct pgsink *s, const char *table, const struct pgsink_column *cols,
                             size_t ncols, const char *copy_text, size_t len, pgsink_cb cb,
                             void *ud)
{
    struct pgjob *j = pgsink_job(s, cb, ud);
    struct buf b = BUF_INIT;
    pgjob_sql(j, "BEGIN", 0, NULL, NULL);
    /* two instances on one schema: otherwise both CREATE at once, or one's DELETE misses
     * the other's fresh rows and the table holds them twice */
    pgschema_add_lock(j, s);
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
    if (strcmp(table, PGSINK_META_COLUMNS) == 0 && has_column(cols, ncols, "table_name")) {
        /* every prepare updates its datasource's rows by table_name: without an index a round
         * of N datasources scans the table N times (tests/bench/scale.py); a relation that
         * already has the name leaves the table without it, slower but correct */
        buf_reset(&b);
        buf_puts(&b, "CREATE INDEX IF NOT EXISTS ");
        sqlident_quote(&b, PGSINK_META_COLUMNS "_table_name_idx");
        buf_puts(&b, " ON ");
        pgsink_qtable(&b, s, table);
        buf_puts(&b, " (table_name)");
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
    if (strcmp(table, PGSINK_META_COLUMNS) == 0 && has_column(cols, ncols, "pg_column") &&
        has_column(cols, ncols, "table_name") && has_column(cols, ncols, "column_name")) {
        /* each column's PostgreSQL name, from the mapping its datasource's state row records */
        buf_reset(&b);
        buf_puts(&b, "UPDATE ");
        pgsink_qtable(&b, s, table);
        buf_puts(&b, " AS c SET pg_column = st.column_names ->> c.column_name FROM ");
        pgsink_qtable(&b, s, STATE_TABLE);
        buf_puts(&b, " AS st WHERE st.datasource = c.table_name AND st.column_names IS NOT NULL");
        pgjob_sql(j, b.data, 0, NULL, NULL);
    }
    pgjob_sql(j, "COMMIT", 0, NULL, NULL);
    buf_free(&b);
    pgjob_submit(s->control, j);
}

/* ---- table preparation ----
 *
 * One transaction on the control connection, under an advisory lock per destination schema
 * so that two instances never allocate the same name at once:
 *   lock -> the state row (recorded table and column mapping) -> [every name taken in the
 *   schema, to allocate a table name] -> [the table's columns] -> CREATE or ALTER ->
 *   [the range index, looked up by column; when missing, a free name for it] -> the state
 *   row with the mapping -> information_schema_columns.pg_column -> COMMIT.
 * Each hook adds the steps that follow it. The choice of names is pgnames' (no SQL there). */

struct prep {
    struct pgsink *s;
    pgsink_table_cb cb;
    void *ud;
    char *datasource;
    char **druid;               /* Druid column names, in query order */
    struct pgsink_column *cols; /* their PostgreSQL names (once allocated) and types */
    size_t ncols;
    char *slice_druid;  /* the Druid column slices are ranges of; NULL: whole-table slices */
    char *slice_column; /* its PostgreSQL name */
    char *mode;
    char *inc;
    char dest[PGNAMES_LEN];
    char *recorded;         /* destination_table of the state row; NULL: no state row */
    bool table_exists;      /* dest is an existing table */
    bool meta_pg_column;    /* information_schema_columns has pg_column */
    struct pgnames_map map; /* recorded column mapping, then with the new columns */
    enum pgtype *types;
    char *cursor;
    bool empty;     /* the table holds no row */
    int id_scheme;  /* of the request */
    int got_scheme; /* recorded for the table */
    /* a resync: the shadow table, its sink key, and whether it was (re)created now */
    bool resync;
    char shadow[PGNAMES_LEN];
    char *key;
    bool shadow_created;
    /* the first load without indexes: requested for a table created now, and recorded */
    bool defer;
    bool initial_load;
    bool helper; /* req->helper */
};

static void prep_free(struct prep *p)
{
    for (size_t i = 0; i < p->ncols; i++) {
        free((char *)p->cols[i].name);
        free(p->druid[i]);
    }
    free(p->cols);
    free(p->druid);
    free(p->datasource);
    free(p->slice_druid);
    free(p->slice_column);
    free(p->mode);
    free(p->inc);
    free(p->recorded);
    pgnames_map_free(&p->map);
    free(p->types);
    free(p->cursor);
    free(p->key);
    free(p);
}

static void prep_drop(void *p)
{
    prep_free(p);
}

static const char *schema_of(const struct prep *p)
{
    return p->s->cfg->destination_schema;
}

/* Every name a new relation must not take: other datasources' recorded tables, every
 * relation of the schema (tables, indexes, sequences, views), and its types other than the
 * implicit array types (CREATE TABLE moves those out of the way). */
static void add_taken_query(struct pgjob *j, struct prep *p, pgjob_hook hook)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "SELECT o.destination_table FROM ");
    pgsink_qtable(&b, p->s, STATE_TABLE);
    buf_puts(&b, " o WHERE o.datasource <> $1"
                 " UNION SELECT c.relname::text FROM pg_class c"
                 " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $2"
                 " UNION SELECT t.typname::text FROM pg_type t"
                 " JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $2"
                 " AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)");
    const char *params[2] = {p->datasource, schema_of(p)};
    pgjob_sql(j, b.data, 2, params, hook);
    buf_free(&b);
}

static void taken_set(PGresult *res, struct pgnames_set *taken)
{
    for (int r = 0; r < PQntuples(res); r++)
        if (!PQgetisnull(res, r, 0))
            pgnames_set_add(taken, PQgetvalue(res, r, 0));
}

static int prep_state_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct prep *p = ud;
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        p->cursor = strdup(PQgetvalue(res, 0, 0));
    p->empty = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    p->got_scheme = PQntuples(res) > 0 ? atoi(PQgetvalue(res, 0, 2)) : 0;
    p->initial_load =
        PQntuples(res) > 0 && PQnfields(res) > 3 && strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    return 0;
}

static int prep_empty_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct prep *p = ud;
    p->empty = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    return 0;
}

/* The live table's state row read: a table in its initial load that existed before this
 * prepare loses the rows outside the ledger's synced chunks (slices that committed before
 * a kill or a failed cycle while their chunk was not recorded yet: those ranges are read
 * again, on the fast path, so they must be empty), then COMMIT. */
static int prep_live_state_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    struct prep *p = ud;
    prep_state_hook(j, res, ud, err, errlen);
    /* (an instance helping with another's first load leaves the table to its holder) */
    if (p->initial_load && p->table_exists && p->slice_column && !p->helper) {
        if (!p->defer)
            log_warning("pg",
                        "%s: the table's first load started in segments mode and is not "
                        "finished; it goes on without its key until a cycle completes",
                        p->datasource);
        struct buf b = BUF_INIT;
        buf_puts(&b, "DELETE FROM ");
        pgsink_qtable(&b, p->s, p->dest);
        /* the ledger rows do not overlap: the last one starting at or before a row's time
         * is the only one that can hold it (one probe of the ledger's key per row) */
        buf_puts(&b, " AS x WHERE NOT EXISTS (SELECT 1 FROM (SELECT c.end_ms, c.state FROM ");
        pgsink_qtable(&b, p->s, PGSINK_CHUNKS_TABLE);
        buf_puts(&b, " AS c WHERE c.datasource = $1 AND c.start_ms <= "
                     "(extract(epoch FROM x.");
        sqlident_quote(&b, p->slice_column);
        buf_puts(&b, ") * 1000)::bigint ORDER BY c.start_ms DESC LIMIT 1) AS l"
                     " WHERE l.state = 'synced' AND l.end_ms > (extract(epoch FROM x.");
        sqlident_quote(&b, p->slice_column);
        /* ... and outside the chunk units another instance is reading (live) or whose
         * unfinished rows their next reader deletes (dirty): a handful of rows, read once */
        buf_puts(&b, ") * 1000)::bigint) AND NOT EXISTS (SELECT 1 FROM (SELECT k.range_lo,"
                     " k.range_hi FROM ");
        pgsink_qtable(&b, p->s, PGLEASE_TABLE);
        buf_puts(&b, " AS k WHERE k.datasource = $1 AND k.unit LIKE '" PGLEASE_CHUNK_PREFIX
                     "%' AND (k.dirty OR k.expires_at > clock_timestamp()) OFFSET 0) AS u"
                     " WHERE u.range_lo <= (extract(epoch FROM x.");
        sqlident_quote(&b, p->slice_column);
        buf_puts(&b, ") * 1000)::bigint AND u.range_hi > (extract(epoch FROM x.");
        sqlident_quote(&b, p->slice_column);
        buf_puts(&b, ") * 1000)::bigint)");
        const char *pd[1] = {p->datasource};
        pgjob_sql(j, b.data, 1, pd, NULL);
        buf_reset(&b);
        buf_puts(&b, "SELECT NOT EXISTS (SELECT 1 FROM ");
        pgsink_qtable(&b, p->s, p->dest);
        buf_puts(&b, ")");
        pgjob_sql(j, b.data, 0, NULL, prep_empty_hook);
        buf_free(&b);
    }
    pgjob_sql(j, "COMMIT", 0, NULL, NULL);
    return 0;
}

/* ---- the resync's shadow ----
 * After the live table is up to date, in the same transaction: the rebuild's start (kept
 * when it is under way), the shadow's columns compared with the live table's, the shadow
 * created (LIKE live INCLUDING ALL) when missing or stale, its progress read, COMMIT. */

static void add_resync_progress_reset(struct pgjob *j, struct prep *p)
{
    struct buf b = BUF_INIT;
    const char *pk[1] = {p->key};
    buf_puts(&b, "DELETE FROM ");
    pgsink_qtable(&b, p->s, PGSINK_CHUNKS_TABLE);
    buf_puts(&b, " WHERE datasource = $1");
    pgjob_sql(j, b.data, 1, pk, NULL);
    buf_reset(&b);
    buf_puts(&b, "UPDATE ");
    pgsink_qtable(&b, p->s, STATE_TABLE);
    buf_puts(&b, " SET resync_cursor = NULL, resync_rows = 0 WHERE datasource = $1");
    const char *pd[1] = {p->datasource};
    pgjob_sql(j, b.data, 1, pd, NULL);
    buf_free(&b);
}

static int prep_resync_cols_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct prep *p = ud;
    struct pgsink *s = p->s;
    bool exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    bool same = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    struct buf b = BUF_INIT;
    if (exists && !same) {
        log_info("pg",
                 "%s: the table's columns changed during the resync; rebuilding from the "
                 "start",
                 p->datasource);
        buf_puts(&b, "DROP TABLE ");
        pgsink_qtable(&b, s, p->shadow);
        pgjob_sql(j, b.data, 0, NULL, NULL);
    }
    if (!exists || !same) {
        /* the shadow's ledger rows and progress describe the shadow: a new one has none */
        add_resync_progress_reset(j, p);
        p->shadow_created = true;
        buf_reset(&b);
        buf_puts(&b, "CREATE TABLE ");
        pgsink_qtable(&b, s, p->shadow);
        buf_puts(&b, " (LIKE ");
        pgsink_qtable(&b, s, p->dest);
        buf_puts(&b, " INCLUDING ALL)");
        pgjob_sql(j, b.data, 0, NULL, NULL);
    }
    buf_reset(&b);
    buf_puts(&b, "SELECT resync_cursor, NOT EXISTS (SELECT 1 FROM ");
    pgsink_qtable(&b, s, p->shadow);
    buf_puts(&b, "), 0 FROM ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " WHERE datasource = $1");
    const char *pd[1] = {p->datasource};
    pgjob_sql(j, b.data, 1, pd, prep_state_hook);
    pgjob_sql(j, "COMMIT", 0, NULL, NULL);
    buf_free(&b);
    return 0;
}

/* The columns (name and type) of a relation given as a quoted qualified name in $n. */
#define RESYNC_COLS(n)                                                                             \
    "(SELECT array_agg(a.attname::text || ' ' || format_type(a.atttypid, a.atttypmod)"             \
    " ORDER BY a.attname) FROM pg_attribute a WHERE a.attrelid = to_regclass($" #n ")"             \
    " AND a.attnum > 0 AND NOT a.attisdropped)"

static int prep_resync_start_hook(struct pgjob *j, PGresult *res, void *ud, char *err,
                                  size_t errlen)
{
    struct prep *p = ud;
    struct pgsink *s = p->s;
    bool fresh = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    bool taken = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    if (fresh && taken) {
        /* under way, the shadow is ours; before the start a relation of its name is not */
        snprintf(err, errlen,
                 "cannot resync %s: a relation named %s exists in schema %s and it is not a "
                 "resync table of druid-syncd (rename or drop it)",
                 p->datasource, p->shadow, schema_of(p));
        return -1;
    }
    struct buf b = BUF_INIT, lq = BUF_INIT, sq = BUF_INIT;
    const char *pd[1] = {p->datasource};
    if (fresh) {
        log_info("pg", "%s: resync starts: rebuilding into %s beside %s", p->datasource, p->shadow,
                 p->dest);
        buf_puts(&b, "UPDATE ");
        pgsink_qtable(&b, s, STATE_TABLE);
        buf_puts(&b, " SET resync_started = now(), resync_for = resync_requested,"
                     " resync_cursor = NULL, resync_rows = 0 WHERE datasource = $1");
        pgjob_sql(j, b.data, 1, pd, NULL);
    } else {
        log_info("pg", "%s: resync resumes (%s)", p->datasource, p->shadow);
    }
    pgsink_qtable(&lq, s, p->dest);
    pgsink_qtable(&sq, s, p->shadow);
    const char *pc[2] = {lq.data, sq.data};
    pgjob_sql(j,
              "SELECT to_regclass($2) IS NOT NULL, " RESYNC_COLS(
                  1) " IS NOT DISTINCT FROM " RESYNC_COLS(2),
              2, pc, prep_resync_cols_hook);
    buf_free(&b);
    buf_free(&lq);
    buf_free(&sq);
    return 0;
}

static void add_resync_start(struct pgjob *j, struct prep *p)
{
    pgsink_resync_table(p->datasource, p->shadow);
    p->key = pgsink_resync_key(p->datasource);
    struct buf b = BUF_INIT;
    buf_puts(&b, "SELECT st.resync_started IS NULL, EXISTS (SELECT 1 FROM pg_class c"
                 " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $2"
                 " AND c.relname = $3) FROM ");
    pgsink_qtable(&b, p->s, STATE_TABLE);
    buf_puts(&b, " st WHERE st.datasource = $1 FOR UPDATE");
    const char *params[3] = {p->datasource, schema_of(p), p->shadow};
    pgjob_sql(j, b.data, 3, params, prep_resync_start_hook);
    buf_free(&b);
}

/* The state row with the names, the pg_column of the metadata table, COMMIT. */
static void add_tail(struct pgjob *j, struct prep *p)
{
    struct pgsink *s = p->s;
    struct json_object *m = json_object_new_object();
    for (size_t i = 0; i < p->map.n; i++)
        json_object_object_add(m, p->map.druid[i], json_object_new_string(p->map.pg[i]));
    const char *mapping = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN);
    struct buf b = BUF_INIT;
    buf_puts(&b, "INSERT INTO ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(
        &b,
        " AS st (datasource, destination_table, mode, incremental_column, column_names,"
        " in_catalog, status, id_scheme, initial_load) VALUES ($1, $2, $3, $4, $5::jsonb, true,"
        " 'syncing', $6::integer, COALESCE($7::boolean, false))"
        " ON CONFLICT (datasource) DO UPDATE SET destination_table = EXCLUDED.destination_table,"
        " mode = EXCLUDED.mode, incremental_column = EXCLUDED.incremental_column,"
        " column_names = EXCLUDED.column_names, in_catalog = true, updated_at = now(),"
        /* a table created now holds ids of the current scheme; an existing one keeps its
         * record (NULL: written before schemes were recorded) */
        " id_scheme = COALESCE(EXCLUDED.id_scheme, st.id_scheme),"
        /* a table created now says whether it is created without indexes */
        " initial_load = COALESCE($7::boolean, st.initial_load),"
        /* switching modes, or moving to another table, invalidates the cursor */
        " cursor = CASE WHEN st.mode IS DISTINCT FROM EXCLUDED.mode"
        " OR st.incremental_column IS DISTINCT FROM EXCLUDED.incremental_column"
        " OR st.destination_table IS DISTINCT FROM EXCLUDED.destination_table"
        " THEN NULL ELSE st.cursor END");
    char scheme[16];
    snprintf(scheme, sizeof scheme, "%d", p->id_scheme);
    const char *params[7] = {p->datasource,
                             p->dest,
                             p->mode,
                             p->inc,
                             mapping,
                             !p->table_exists ? scheme : NULL,
                             p->table_exists   ? NULL
                             : p->initial_load ? "true"
                                               : "false"};
    pgjob_sql(j, b.data, 7, params, NULL);
    if (p->meta_pg_column) {
        buf_reset(&b);
        buf_puts(&b, "UPDATE ");
        pgsink_qtable(&b, s, PGSINK_META_COLUMNS);
        buf_puts(&b, " SET pg_column = $2::jsonb ->> column_name WHERE table_name = $1"
                     " AND pg_column IS DISTINCT FROM $2::jsonb ->> column_name");
        const char *mp[2] = {p->datasource, mapping};
        pgjob_sql(j, b.data, 2, mp, NULL);
    }
    if (p->resync) {
        add_resync_start(j, p);
        buf_free(&b);
        json_object_put(m);
        return;
    }
    buf_reset(&b);
    /* with an emptiness probe: a table dropped or emptied behind the daemon's back while
     * its state says it holds rows is rebuilt */
    buf_puts(&b, "SELECT cursor, NOT EXISTS (SELECT 1 FROM ");
    /* ... and the id scheme of its rows */
    pgsink_qtable(&b, s, p->dest);
    buf_puts(&b, "), COALESCE(id_scheme, 0), initial_load FROM ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " WHERE datasource = $1");
    pgjob_sql(j, b.data, 1, params, prep_live_state_hook);
    buf_free(&b);
    json_object_put(m);
}

/* No index leads with the slice column: create one under a free name. */
static int prep_index_taken_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    struct prep *p = ud;
    struct pgnames_set taken = PGNAMES_SET_INIT;
    taken_set(res, &taken);
    char idx[PGNAMES_LEN];
    char *base = pgnames_index_base(p->datasource, p->slice_column);
    int rc = pgnames_pick(base, &taken, true, idx);
    free(base);
    pgnames_set_free(&taken);
    if (rc != 0) {
        snprintf(err, errlen, "no free name for the index of %s", p->dest);
        return -1;
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "CREATE INDEX ");
    sqlident_quote(&b, idx);
    buf_puts(&b, " ON ");
    pgsink_qtable(&b, p->s, p->dest);
    buf_puts(&b, " (");
    sqlident_quote(&b, p->slice_column);
    buf_puts(&b, ")");
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_free(&b);
    add_tail(j, p);
    return 0;
}

/* Is there a valid btree index without predicate whose first key is the slice column?
 * Found by column, not by name: any name will do, and an index made by hand counts. */
static int prep_index_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct prep *p = ud;
    if (PQntuples(res) > 0)
        add_tail(j, p);
    else
        add_taken_query(j, p, prep_index_taken_hook);
    return 0;
}

static void add_index_steps(struct pgjob *j, struct prep *p)
{
    if (!p->table_exists) {
        add_taken_query(j, p, prep_index_taken_hook); /* a new table has no index yet */
        return;
    }
    const char *params[3] = {p->dest, schema_of(p), p->slice_column};
    pgjob_sql(j,
              "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
              " JOIN pg_namespace n ON n.oid = c.relnamespace"
              " JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam"
              " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]"
              " WHERE n.nspname = $2 AND c.relname = $1 AND a.attname = $3"
              " AND am.amname = 'btree' AND i.indisvalid AND i.indpred IS NULL LIMIT 1",
              3, params, prep_index_hook);
}

/* Allocates the column names and adds the DDL that creates the table or brings it up to
 * date. existing: the table's columns (name, type), NULL for a table to create. */
static int prep_ddl(struct pgjob *j, struct prep *p, PGresult *existing, char *err, size_t errlen)
{
    struct pgsink *s = p->s;
    const char *sys[3] = {s->col_id, s->col_synced, s->col_deleted};
    const char **pg = calloc(p->ncols ? p->ncols : 1, sizeof *pg);
    if (!pg)
        abort();
    if (pgnames_columns(&p->map, (const char *const *)p->druid, p->ncols, sys, 3, pg) != 0) {
        free(pg);
        snprintf(err, errlen, "no free column name in %s", p->dest);
        return -1;
    }
    for (size_t i = 0; i < p->ncols; i++) {
        p->cols[i].name = strdup(pg[i]);
        if (!p->cols[i].name)
            abort();
        if (strcmp(pg[i], p->druid[i]) != 0)
            log_debug("pg", "%s: column %s is %s in PostgreSQL", p->datasource, p->druid[i], pg[i]);
    }
    free(pg);
    if (p->slice_druid) {
        const char *sc = pgnames_map_get(&p->map, p->slice_druid);
        char fallback[PGNAMES_LEN];
        if (!sc) { /* not among the columns: then it has its plain name */
            sqlident_pg_name(p->slice_druid, fallback);
            sc = fallback;
        }
        p->slice_column = strdup(sc);
        if (!p->slice_column)
            abort();
    }

    struct buf b = BUF_INIT;
    if (!existing) {
        buf_puts(&b, "CREATE TABLE ");
        pgsink_qtable(&b, s, p->dest);
        buf_puts(&b, " (");
        for (size_t i = 0; i < p->ncols; i++) {
            sqlident_quote(&b, p->cols[i].name);
            buf_printf(&b, " %s, ", typemap_pg_name(p->cols[i].type));
            p->types[i] = p->cols[i].type;
        }
        sqlident_quote(&b, s->col_id);
        /* the implicit index name is PostgreSQL's: it skips names already taken (and so
         * does ADD PRIMARY KEY at the end of a first load without indexes) */
        p->initial_load = p->defer && p->slice_column;
        buf_puts(&b, p->initial_load ? " uuid, " : " uuid PRIMARY KEY, ");
        sqlident_quote(&b, s->col_synced);
        buf_puts(&b, " timestamptz NOT NULL DEFAULT now(), ");
        sqlident_quote(&b, s->col_deleted);
        buf_puts(&b, " boolean NOT NULL DEFAULT false)");
        pgjob_sql(j, b.data, 0, NULL, NULL);
    } else {
        int n = PQntuples(existing);
        for (size_t i = 0; i < p->ncols; i++) {
            int row = -1;
            for (int r = 0; r < n; r++)
                if (strcmp(PQgetvalue(existing, r, 0), p->cols[i].name) == 0)
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
            if (typemap_from_pg_name(PQgetvalue(existing, row, 1), &have) != 0)
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
    buf_free(&b);
    if (p->slice_column && !p->initial_load)
        add_index_steps(j, p);
    else
        add_tail(j, p);
    return 0;
}

static int prep_columns_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    return prep_ddl(j, ud, res, err, errlen);
}

/* A table name had to be allocated: the first free candidate of the datasource's name. */
static int prep_table_taken_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    struct prep *p = ud;
    struct pgnames_set taken = PGNAMES_SET_INIT;
    taken_set(res, &taken);
    int rc = pgnames_pick(p->datasource, &taken, true, p->dest);
    pgnames_set_free(&taken);
    if (rc != 0) {
        snprintf(err, errlen, "no free table name for datasource %s", p->datasource);
        return -1;
    }
    if (p->recorded)
        log_warning("pg",
                    "%s: table %s belongs to something else now (another datasource recorded it,"
                    " or it is not a table); syncing into a new table %s from the beginning",
                    p->datasource, p->recorded, p->dest);
    else if (strcmp(p->dest, p->datasource) != 0)
        log_info("pg", "%s: table name %s", p->datasource, p->dest);
    p->table_exists = false;
    return prep_ddl(j, p, NULL, err, errlen);
}

static int parse_mapping(struct prep *p, const char *text, char *err, size_t errlen)
{
    struct json_object *m = json_tokener_parse(text);
    if (!m || !json_object_is_type(m, json_type_object)) {
        json_object_put(m);
        snprintf(err, errlen, "%s: column_names in the state row is not a JSON object",
                 p->datasource);
        return -1;
    }
    json_object_object_foreach(m, key, val)
    {
        if (json_object_is_type(val, json_type_string))
            pgnames_map_put(&p->map, key, json_object_get_string(val));
    }
    json_object_put(m);
    return 0;
}

/* The state row: keep its table when it is still ours, else allocate a name. */
static int prep_row_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    struct prep *p = ud;
    if (PQntuples(res) == 0) {
        snprintf(err, errlen, "destination schema %s does not exist", schema_of(p));
        return -1;
    }
    p->meta_pg_column = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
    /* an existing table in its first load gets its range index with the key, at the end */
    p->initial_load = strcmp(PQgetvalue(res, 0, 6), "t") == 0;
    if (PQgetisnull(res, 0, 0)) { /* a new datasource */
        add_taken_query(j, p, prep_table_taken_hook);
        return 0;
    }
    p->recorded = strdup(PQgetvalue(res, 0, 0));
    if (!p->recorded)
        abort();
    if (!PQgetisnull(res, 0, 1) && parse_mapping(p, PQgetvalue(res, 0, 1), err, errlen) != 0)
        return -1;
    const char *relkind = PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2);
    bool is_table = relkind && (strcmp(relkind, "r") == 0 || strcmp(relkind, "p") == 0);
    bool other = relkind ? !is_table : strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    /* rivals: other state rows recording the same table (left by older versions) */
    const char **rivals = NULL;
    size_t nrivals = 0;
    struct json_object *arr =
        PQgetisnull(res, 0, 4) ? NULL : json_tokener_parse(PQgetvalue(res, 0, 4));
    if (arr && json_object_is_type(arr, json_type_array)) {
        nrivals = json_object_array_length(arr);
        rivals = calloc(nrivals ? nrivals : 1, sizeof *rivals);
        if (!rivals)
            abort();
        for (size_t i = 0; i < nrivals; i++)
            rivals[i] = json_object_get_string(json_object_array_get_idx(arr, i));
    }
    bool keep = pgnames_keeps_table(p->datasource, p->recorded, rivals, nrivals, other);
    free(rivals);
    json_object_put(arr);
    if (!keep || strlen(p->recorded) > SQLIDENT_PG_MAX) {
        add_taken_query(j, p, prep_table_taken_hook);
        return 0;
    }
    strcpy(p->dest, p->recorded);
    p->table_exists = is_table;
    if (!is_table)
        return prep_ddl(j, p, NULL, err, errlen); /* dropped by hand: created again */
    const char *params[2] = {p->dest, schema_of(p)};
    pgjob_sql(j,
              "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
              " JOIN pg_class c ON c.oid = a.attrelid"
              " JOIN pg_namespace n ON n.oid = c.relnamespace"
              " WHERE n.nspname = $2 AND c.relname = $1 AND c.relkind IN ('r', 'p')"
              " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
              2, params, prep_columns_hook);
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
    const char *key = p->resync ? p->key : p->datasource;
    struct dstable *t = pgsink_find_table(s, key);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t)
            abort();
        t->datasource = strdup(key);
        t->loaded_newest_ms = INT64_MIN;
        t->next = s->tables;
        s->tables = t;
    }
    free(t->live_dest);
    free(t->state_key);
    t->live_dest = p->resync ? strdup(p->dest) : NULL;
    t->state_key = p->resync ? strdup(p->datasource) : NULL;
    memcpy(t->dest, p->resync ? p->shadow : p->dest, sizeof t->dest);
    free(t->copy_cols);
    free(t->slice_column);
    struct buf b = BUF_INIT;
    pgsink_column_list(&b, p->cols, p->ncols);
    buf_puts(&b, ", ");
    sqlident_quote(&b, s->col_id);
    t->copy_cols = buf_steal(&b);
    t->slice_column = p->slice_column ? strdup(p->slice_column) : NULL;
    for (size_t i = 0; i < t->ncols; i++)
        free(t->pg_cols[i]);
    free(t->pg_cols);
    t->pg_cols = calloc(p->ncols ? p->ncols : 1, sizeof *t->pg_cols);
    if (!t->pg_cols)
        abort();
    for (size_t i = 0; i < p->ncols; i++)
        if (!(t->pg_cols[i] = strdup(p->cols[i].name)))
            abort();
    t->ncols = p->ncols;
    t->initial_load = !p->resync && p->initial_load;
    struct pgsink_table_info info = {p->dest,  p->types,      p->cursor,      !p->table_exists,
                                     p->empty, p->got_scheme, t->initial_load};
    if (p->resync) {
        /* the shadow's: written by this encoder only */
        info.destination_table = p->shadow;
        info.created = p->shadow_created;
        info.id_scheme = p->id_scheme;
    }
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
    p->druid = calloc(req->ncols ? req->ncols : 1, sizeof *p->druid);
    p->types = calloc(req->ncols ? req->ncols : 1, sizeof *p->types);
    if (!p->datasource || !p->cols || !p->druid || !p->types)
        abort();
    for (size_t i = 0; i < req->ncols; i++) {
        p->druid[i] = strdup(req->cols[i].name);
        if (!p->druid[i])
            abort();
        p->cols[i].type = req->cols[i].type; /* the name comes with the allocation */
    }
    p->slice_druid = req->slice_column ? strdup(req->slice_column) : NULL;
    p->mode = strdup(req->mode);
    p->inc = strdup(req->incremental_column);
    p->id_scheme = req->id_scheme;
    p->resync = req->resync;
    p->defer = req->defer_indexes && !req->resync;
    p->helper = req->helper;

    struct pgjob *j = pgjob_new(prep_done, p);
    pgjob_set_ud_free(j, prep_drop);
    pgjob_sql(j, "BEGIN", 0, NULL, NULL);
    /* transaction-scoped: released by COMMIT or ROLLBACK, also when the connection drops */
    pgschema_add_lock(j, s);
    struct buf b = BUF_INIT;
    buf_puts(&b, "SELECT st.destination_table, st.column_names::text,"
                 " (SELECT c.relkind::text FROM pg_class c"
                 "  WHERE c.relnamespace = n.oid AND c.relname = st.destination_table),"
                 " EXISTS (SELECT 1 FROM pg_type t WHERE t.typnamespace = n.oid"
                 "  AND t.typname = st.destination_table AND t.typrelid = 0"
                 "  AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)),"
                 " (SELECT json_agg(o.datasource ORDER BY o.datasource)::text FROM ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " o WHERE o.destination_table = st.destination_table"
                 "  AND o.datasource <> st.datasource),"
                 " EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                 "  WHERE c.relnamespace = n.oid AND c.relname = '" PGSINK_META_COLUMNS "'"
                 "  AND c.relkind = 'r' AND a.attname = 'pg_column' AND NOT a.attisdropped),"
                 " COALESCE(st.initial_load, false)"
                 " FROM pg_namespace n LEFT JOIN ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " st ON st.datasource = $1 WHERE n.nspname = $2");
    const char *params[2] = {p->datasource, s->cfg->destination_schema};
    pgjob_sql(j, b.data, 2, params, prep_row_hook);
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
        for (size_t i = 0; i < t->ncols; i++)
            free(t->pg_cols[i]);
        free(t->pg_cols);
        free(t->live_dest);
        free(t->state_key);
        free(t);
    }
}

/* ---- resync: names and the swap ---- */

char *pgsink_resync_key(const char *datasource)
{
    size_t n = strlen(PGSINK_RESYNC_PREFIX) + strlen(datasource) + 1;
    char *k = malloc(n);
    if (!k)
        abort();
    snprintf(k, n, "%s%s", PGSINK_RESYNC_PREFIX, datasource);
    return k;
}

void pgsink_resync_table(const char *datasource, char *out)
{
    /* always the hashed form: deterministic, <= 63 bytes, and unlike any plain name */
    struct buf b = BUF_INIT;
    buf_printf(&b, "druid_syncd_resync_%s", datasource);
    sqlident_pg_name_hashed(b.data, out);
    buf_free(&b);
}

struct swap {
    struct pgsink *s;
    pgsink_cb cb;
    void *ud;
    char *datasource, *key, *live, *shadow;
    char scheme[16];
};

static void swap_free(void *ud)
{
    struct swap *w = ud;
    free(w->datasource);
    free(w->key);
    free(w->live);
    free(w->shadow);
    free(w);
}

static int swap_cols_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    struct swap *w = ud;
    struct pgsink *s = w->s;
    if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        snprintf(err, errlen, "resync of %s: the live table %s has no column to fill",
                 w->datasource, w->live);
        return -1;
    }
    const char *cols = PQgetvalue(res, 0, 0);
    struct buf b = BUF_INIT;
    /* DELETE, not TRUNCATE: concurrent snapshots keep seeing the old rows (MVCC) and
     * publications see the row changes */
    buf_puts(&b, "DELETE FROM ");
    pgsink_qtable(&b, s, w->live);
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_reset(&b);
    buf_puts(&b, "INSERT INTO ");
    pgsink_qtable(&b, s, w->live);
    buf_printf(&b, " (%s) SELECT %s FROM ", cols, cols);
    pgsink_qtable(&b, s, w->shadow);
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_reset(&b);
    const char *pk[2] = {w->datasource, w->key};
    buf_puts(&b, "DELETE FROM ");
    pgsink_qtable(&b, s, PGSINK_CHUNKS_TABLE);
    buf_puts(&b, " WHERE datasource = $1");
    pgjob_sql(j, b.data, 1, pk, NULL);
    buf_reset(&b);
    buf_puts(&b, "UPDATE ");
    pgsink_qtable(&b, s, PGSINK_CHUNKS_TABLE);
    buf_puts(&b, " SET datasource = $1 WHERE datasource = $2");
    pgjob_sql(j, b.data, 2, pk, NULL);
    buf_reset(&b);
    buf_puts(&b, "UPDATE ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " AS st SET cursor = st.resync_cursor, rows_synced = st.resync_rows,"
                 " id_scheme = $2::integer, last_resync = now(),"
                 /* a request made during the rebuild has another time: it stays pending */
                 " resync_requested = CASE WHEN st.resync_requested IS NOT DISTINCT FROM"
                 " st.resync_for THEN NULL ELSE st.resync_requested END,"
                 " resync_started = NULL, resync_for = NULL, resync_cursor = NULL,"
                 " resync_rows = 0, updated_at = now() WHERE datasource = $1");
    const char *ps[2] = {w->datasource, w->scheme};
    pgjob_sql(j, b.data, 2, ps, NULL);
    buf_reset(&b);
    buf_puts(&b, "DROP TABLE ");
    pgsink_qtable(&b, s, w->shadow);
    pgjob_sql(j, b.data, 0, NULL, NULL);
    pglease_add_fence(j, s, w->datasource);
    pgjob_sql(j, "COMMIT", 0, NULL, NULL);
    buf_free(&b);
    return 0;
}

static int swap_state_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    struct swap *w = ud;
    if (PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        snprintf(err, errlen,
                 "resync of %s: no rebuild is under way any more (done by another "
                 "instance?)",
                 w->datasource);
        return -1;
    }
    /* every column of the live table that the shadow has and that takes a value */
    struct buf lq = BUF_INIT, sq = BUF_INIT;
    pgsink_qtable(&lq, w->s, w->live);
    pgsink_qtable(&sq, w->s, w->shadow);
    const char *p[2] = {lq.data, sq.data};
    pgjob_sql(j,
              "SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)"
              " FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0"
              " AND NOT a.attisdropped AND a.attgenerated = '' AND EXISTS (SELECT 1"
              " FROM pg_attribute b WHERE b.attrelid = $2::regclass AND b.attname = a.attname"
              " AND NOT b.attisdropped)",
              2, p, swap_cols_hook);
    buf_free(&lq);
    buf_free(&sq);
    return 0;
}

static void swap_job_done(void *ud, const char *err)
{
    struct swap *w = ud;
    w->cb(w->ud, err);
    swap_free(w);
}

void pgsink_resync_swap(struct pgsink *s, const char *datasource, int id_scheme, pgsink_cb cb,
                        void *ud)
{
    char *key = pgsink_resync_key(datasource);
    struct dstable *t = pgsink_find_table(s, key);
    if (!t || !t->live_dest) {
        free(key);
        cb(ud, "the resync of this datasource is not prepared");
        return;
    }
    struct swap *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    w->s = s;
    w->datasource = strdup(datasource);
    w->key = key;
    w->live = strdup(t->live_dest);
    w->shadow = strdup(t->dest);
    if (!w->datasource || !w->live || !w->shadow)
        abort();
    snprintf(w->scheme, sizeof w->scheme, "%d", id_scheme);
    w->cb = cb;
    w->ud = ud;
    struct pgjob *j = pgjob_new(swap_job_done, w);
    pgjob_set_ud_free(j, swap_free);
    struct buf b = BUF_INIT;
    pgjob_sql(j, "BEGIN", 0, NULL, NULL);
    /* readers of the live table wait here, then see the new rows: never an empty table */
    buf_puts(&b, "LOCK TABLE ");
    pgsink_qtable(&b, s, w->live);
    buf_puts(&b, " IN ACCESS EXCLUSIVE MODE");
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_reset(&b);
    buf_puts(&b, "SELECT resync_started IS NOT NULL FROM ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " WHERE datasource = $1 FOR UPDATE");
    const char *p[1] = {datasource};
    pgjob_sql(j, b.data, 1, p, swap_state_hook);
    buf_free(&b);
    pgjob_submit(s->control, j);
}

/* ---- the end of a first load without indexes ----
 * One transaction: the schema lock, the state row (still initial_load?), ADD PRIMARY KEY,
 * every name taken, CREATE INDEX under the first free name of the range index (the order
 * and naming of a table created with them), initial_load cleared, COMMIT. */

struct build {
    struct pgsink *s;
    pgsink_cb cb;
    void *ud;
    char *datasource;
    char *slice_column;
    char dest[SQLIDENT_PG_MAX + 1];
    int64_t newest_ms; /* the table's newest slice column value, INT64_MIN none */
};

static void build_free(void *ud)
{
    struct build *x = ud;
    free(x->datasource);
    free(x->slice_column);
    free(x);
}

static void build_done(void *ud, const char *err)
{
    struct build *x = ud;
    struct dstable *t = pgsink_find_table(x->s, x->datasource);
    if (!err && t) {
        t->initial_load = false;
        t->loaded_newest_ms = x->newest_ms;
    }
    if (!err)
        log_info("pg", "%s: first load done: primary key and range index built on %s",
                 x->datasource, x->dest);
    x->cb(x->ud, err);
    build_free(x);
}

static int build_newest_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct build *x = ud;
    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        x->newest_ms = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    return 0;
}

static void add_build_end(struct pgjob *j, struct build *x)
{
    struct buf b = BUF_INIT;
    if (x->slice_column) {
        /* the newest row, for the cursor: the load's slices may have been committed by other
         * instances (chunk units), whose values the holder never saw (one probe of the new
         * index) */
        buf_puts(&b, "SELECT floor(extract(epoch FROM max(");
        sqlident_quote(&b, x->slice_column);
        buf_puts(&b, ")) * 1000)::bigint FROM ");
        pgsink_qtable(&b, x->s, x->dest);
        buf_puts(&b, " WHERE NOT ");
        sqlident_quote(&b, x->s->col_deleted);
        pgjob_sql(j, b.data, 0, NULL, build_newest_hook);
        buf_reset(&b);
    }
    buf_puts(&b, "UPDATE ");
    pgsink_qtable(&b, x->s, STATE_TABLE);
    buf_puts(&b, " SET initial_load = false, updated_at = now() WHERE datasource = $1");
    const char *pd[1] = {x->datasource};
    pgjob_sql(j, b.data, 1, pd, NULL);
    /* its chunk units are done with: every chunk is read and recorded (another's live one
     * is left to expire: its holder's fence needs the row) */
    buf_reset(&b);
    buf_puts(&b, "DELETE FROM ");
    pgsink_qtable(&b, x->s, PGLEASE_TABLE);
    buf_puts(&b, " WHERE datasource = $1 AND unit LIKE '" PGLEASE_CHUNK_PREFIX
                 "%' AND (expires_at IS NULL OR expires_at <= clock_timestamp()"
                 " OR owner = $2)");
    const struct pgfence *f = pglease_fence_of(x->s, x->datasource);
    const char *po[2] = {x->datasource, f ? f->owner : ""};
    pgjob_sql(j, b.data, 2, po, NULL);
    pgjob_sql(j, "COMMIT", 0, NULL, NULL);
    buf_free(&b);
}

static int build_taken_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    struct build *x = ud;
    struct pgnames_set taken = PGNAMES_SET_INIT;
    taken_set(res, &taken);
    char idx[PGNAMES_LEN];
    char *base = pgnames_index_base(x->datasource, x->slice_column);
    int rc = pgnames_pick(base, &taken, true, idx);
    free(base);
    pgnames_set_free(&taken);
    if (rc != 0) {
        snprintf(err, errlen, "no free name for the index of %s", x->dest);
        return -1;
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "CREATE INDEX ");
    sqlident_quote(&b, idx);
    buf_puts(&b, " ON ");
    pgsink_qtable(&b, x->s, x->dest);
    buf_puts(&b, " (");
    sqlident_quote(&b, x->slice_column);
    buf_puts(&b, ")");
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_free(&b);
    add_build_end(j, x);
    return 0;
}

static int build_state_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct build *x = ud;
    if (PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        pgjob_sql(j, "COMMIT", 0, NULL, NULL); /* done already (another instance) */
        return 0;
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "ALTER TABLE ");
    pgsink_qtable(&b, x->s, x->dest);
    buf_puts(&b, " ADD PRIMARY KEY (");
    sqlident_quote(&b, x->s->col_id);
    buf_puts(&b, ")");
    pgjob_sql(j, b.data, 0, NULL, NULL);
    buf_free(&b);
    if (!x->slice_column) {
        add_build_end(j, x);
        return 0;
    }
    /* the same query as a table's creation: the key's index name is taken by now */
    struct buf q = BUF_INIT;
    buf_puts(&q, "SELECT o.destination_table FROM ");
    pgsink_qtable(&q, x->s, STATE_TABLE);
    buf_puts(&q, " o WHERE o.datasource <> $1"
                 " UNION SELECT c.relname::text FROM pg_class c"
                 " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $2"
                 " UNION SELECT t.typname::text FROM pg_type t"
                 " JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $2"
                 " AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)");
    const char *params[2] = {x->datasource, x->s->cfg->destination_schema};
    pgjob_sql(j, q.data, 2, params, build_taken_hook);
    buf_free(&q);
    return 0;
}

int64_t pgsink_initial_load_newest(const struct pgsink *s, const char *datasource)
{
    const struct dstable *t = pgsink_find_table((struct pgsink *)s, datasource);
    return t ? t->loaded_newest_ms : INT64_MIN;
}

bool pgsink_initial_load(const struct pgsink *s, const char *datasource)
{
    const struct dstable *t = pgsink_find_table((struct pgsink *)s, datasource);
    return t && t->initial_load;
}

void pgsink_finish_initial_load(struct pgsink *s, const char *datasource, pgsink_cb cb, void *ud)
{
    struct dstable *t = pgsink_find_table(s, datasource);
    if (!t || !t->initial_load) {
        cb(ud, NULL);
        return;
    }
    struct build *x = calloc(1, sizeof *x);
    if (!x)
        abort();
    x->s = s;
    x->cb = cb;
    x->ud = ud;
    x->newest_ms = INT64_MIN;
    x->datasource = strdup(datasource);
    x->slice_column = t->slice_column ? strdup(t->slice_column) : NULL;
    if (!x->datasource || (t->slice_column && !x->slice_column))
        abort();
    memcpy(x->dest, t->dest, sizeof x->dest);
    struct pgjob *j = pgjob_new(build_done, x);
    pgjob_set_ud_free(j, build_free);
    pgjob_sql(j, "BEGIN", 0, NULL, NULL);
    pgschema_add_lock(j, s);
    struct buf b = BUF_INIT;
    buf_puts(&b, "SELECT initial_load FROM ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " WHERE datasource = $1 FOR UPDATE");
    const char *pd[1] = {datasource};
    pgjob_sql(j, b.data, 1, pd, build_state_hook);
    buf_free(&b);
    pgjob_submit(s->control, j);
}
