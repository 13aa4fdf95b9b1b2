/* discovery: the catalog read and the metadata tables. See discovery.h.
 *
 * The steps run in order, each in the callback of the previous one: TABLES from Druid ->
 * information_schema_tables -> COLUMNS from Druid -> information_schema_columns -> state
 * rows of vanished datasources -> the caller's callback. */
#include "discovery.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "druidsql.h"
#include "rowenc.h"
#include "typemap.h"

struct discovery {
    struct druid_client *druid;
    struct pgsink *sink;
    char *schema;
    discovery_cb cb;
    void *ud;
    struct druid_query *q; /* the Druid query in flight, if any */
    /* the metadata table being filled: its columns, encoder and COPY text */
    struct rowenc *enc;
    struct pgsink_column *cols;
    char **names;
    size_t ncols;
    struct buf copy;
    int idx_table_name, idx_table_type, idx_column_name, idx_ordinal, idx_data_type;
    struct discovery_result res;
    bool schema_seen;   /* SCHEMATA lists the schema */
    struct buf schemas; /* ... and what it lists, for the error */
};

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        abort();
    return p;
}

static void meta_reset(struct discovery *d)
{
    rowenc_free(d->enc);
    d->enc = NULL;
    for (size_t i = 0; i < d->ncols; i++)
        free(d->names[i]);
    free(d->names);
    free(d->cols);
    d->names = NULL;
    d->cols = NULL;
    d->ncols = 0;
    buf_free(&d->copy);
}

static void free_run(struct discovery *d)
{
    meta_reset(d);
    for (size_t i = 0; i < d->res.ntables; i++) {
        struct discovery_table *t = &d->res.tables[i];
        for (size_t k = 0; k < t->ncols; k++) {
            free(t->cols[k].name);
            free(t->cols[k].sql_type);
        }
        free(t->cols);
        free(t->name);
    }
    free(d->res.tables);
    free(d->schema);
    buf_free(&d->schemas);
    free(d);
}

static void fail_perm(struct discovery *d, const char *what, const char *msg,
                      enum druid_err_kind kind, long status, bool permanent)
{
    struct discovery_error e = {what, msg, kind, status, permanent};
    d->cb(d->ud, NULL, &e);
    free_run(d);
}

static void fail(struct discovery *d, const char *what, const char *msg, enum druid_err_kind kind,
                 long status)
{
    fail_perm(d, what, msg, kind, status, false);
}

/* A Druid query of the run failed: the cause and whether waiting can cure it. */
static void fail_druid(struct discovery *d, const char *what, const struct druid_error *e)
{
    fail_perm(d, what, e->message, e->kind, e->http_status, druid_error_permanent(e));
}

static int name_index(const struct druid_header *h, const char *name)
{
    for (size_t i = 0; i < h->ncols; i++)
        if (strcmp(h->names[i], name) == 0)
            return (int)i;
    return -1;
}

/* The metadata table mirrors the header: lowercase names, types from the SQL types row,
 * plus pg_type and pg_column on the columns table. pg_column (the column's name in
 * PostgreSQL) is written NULL here; pgsink_replace_metadata fills it from the mappings
 * the state rows record, and preparing a table fills it for new columns. */
static int meta_header(struct discovery *d, const struct druid_header *h, bool with_pg_cols)
{
    static const char *const pg_cols[] = {"pg_type", "pg_column"};
    meta_reset(d);
    d->ncols = h->ncols + (with_pg_cols ? 2 : 0);
    d->names = xcalloc(d->ncols, sizeof *d->names);
    d->cols = xcalloc(d->ncols, sizeof *d->cols);
    struct rowenc_column *rc = xcalloc(d->ncols, sizeof *rc);
    for (size_t i = 0; i < d->ncols; i++) {
        d->names[i] = xstrdup(i < h->ncols ? h->names[i] : pg_cols[i - h->ncols]);
        for (char *p = d->names[i]; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        d->cols[i].name = d->names[i];
        d->cols[i].type = i < h->ncols ? typemap_from_druid(h->sql_types[i]) : PGT_TEXT;
        rc[i].name = d->names[i];
        rc[i].type = d->cols[i].type;
    }
    d->enc = rowenc_new(rc, d->ncols, -1, false);
    free(rc);
    return d->enc ? 0 : -1;
}

static struct discovery_table *find_table(struct discovery *d, const char *name)
{
    for (size_t i = 0; i < d->res.ntables; i++)
        if (strcmp(d->res.tables[i].name, name) == 0)
            return &d->res.tables[i];
    return NULL;
}

static int cmp_ordinal(const void *a, const void *b)
{
    const struct discovery_column *x = a, *y = b;
    return (x->ordinal > y->ordinal) - (x->ordinal < y->ordinal);
}

/* ---- the steps, last first ---- */

static void on_missing_marked(void *ud, const char *err)
{
    struct discovery *d = ud;
    if (err) {
        fail(d, "recording datasources missing from the catalog", err, DRUID_OK, 0);
        return;
    }
    for (size_t i = 0; i < d->res.ntables; i++) {
        struct discovery_table *t = &d->res.tables[i];
        qsort(t->cols, t->ncols, sizeof *t->cols, cmp_ordinal);
    }
    d->cb(d->ud, &d->res, NULL);
    free_run(d);
}

static void on_columns_written(void *ud, const char *err)
{
    struct discovery *d = ud;
    if (err) {
        fail(d, "writing " PGSINK_META_COLUMNS, err, DRUID_OK, 0);
        return;
    }
    /* state rows of datasources that vanished from the catalog: their tables stay */
    struct json_object *arr = json_object_new_array();
    for (size_t i = 0; i < d->res.ntables; i++)
        json_object_array_add(arr, json_object_new_string(d->res.tables[i].name));
    pgsink_state_mark_missing(d->sink, json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN),
                              on_missing_marked, d);
    json_object_put(arr);
}

static int columns_on_header(void *ud, const struct druid_header *h)
{
    struct discovery *d = ud;
    d->idx_table_name = name_index(h, "TABLE_NAME");
    d->idx_column_name = name_index(h, "COLUMN_NAME");
    d->idx_ordinal = name_index(h, "ORDINAL_POSITION");
    d->idx_data_type = name_index(h, "DATA_TYPE");
    if (d->idx_table_name < 0 || d->idx_column_name < 0 || d->idx_data_type < 0)
        return -1;
    return meta_header(d, h, true);
}

static int columns_on_row(void *ud, struct json_object *row)
{
    struct discovery *d = ud;
    char err[256];
    struct json_object *tn = json_object_array_get_idx(row, (size_t)d->idx_table_name);
    struct json_object *cn = json_object_array_get_idx(row, (size_t)d->idx_column_name);
    struct json_object *dt = json_object_array_get_idx(row, (size_t)d->idx_data_type);
    struct json_object *op =
        d->idx_ordinal >= 0 ? json_object_array_get_idx(row, (size_t)d->idx_ordinal) : NULL;
    const char *dts = dt ? json_object_get_string(dt) : "VARCHAR";
    json_object_array_add(row, json_object_new_string(typemap_pg_name(typemap_from_druid(dts))));
    json_object_array_add(row, NULL); /* pg_column: filled in PostgreSQL */
    if (rowenc_encode(d->enc, row, &d->copy, NULL, err, sizeof err) != 0)
        return -1;
    struct discovery_table *t = tn && cn ? find_table(d, json_object_get_string(tn)) : NULL;
    if (!t)
        return 0; /* a column of something that is not a datasource (a view, a lookup) */
    t->cols = realloc(t->cols, (t->ncols + 1) * sizeof *t->cols);
    if (!t->cols)
        abort();
    struct discovery_column *c = &t->cols[t->ncols];
    c->name = xstrdup(json_object_get_string(cn));
    c->sql_type = xstrdup(dts);
    /* before Druid 26 ORDINAL_POSITION was a 0-based string: json-c reads both */
    c->ordinal = op ? json_object_get_int64(op) : (int64_t)t->ncols;
    t->ncols++;
    return 0;
}

static void columns_on_done(void *ud, const struct druid_error *e)
{
    struct discovery *d = ud;
    d->q = NULL;
    if (e->kind != DRUID_OK) {
        fail_druid(d, "reading INFORMATION_SCHEMA.COLUMNS", e);
        return;
    }
    pgsink_replace_metadata(d->sink, PGSINK_META_COLUMNS, d->cols, d->ncols,
                            d->copy.data ? d->copy.data : "", d->copy.len, on_columns_written, d);
}

static void on_tables_written(void *ud, const char *err)
{
    static const struct druid_query_ops ops = {columns_on_header, columns_on_row, columns_on_done};
    struct discovery *d = ud;
    if (err) {
        fail(d, "writing " PGSINK_META_TABLES, err, DRUID_OK, 0);
        return;
    }
    struct buf sql = BUF_INIT;
    struct druid_param p[DRUIDSQL_MAX_PARAMS];
    size_t np = 0;
    druidsql_columns(&sql, p, &np, d->schema);
    d->q = druid_query_submit(d->druid, sql.data, p, np, &ops, d);
    buf_free(&sql);
}

static int tables_on_header(void *ud, const struct druid_header *h)
{
    struct discovery *d = ud;
    d->idx_table_name = name_index(h, "TABLE_NAME");
    d->idx_table_type = name_index(h, "TABLE_TYPE");
    if (d->idx_table_name < 0)
        return -1;
    return meta_header(d, h, false);
}

static int tables_on_row(void *ud, struct json_object *row)
{
    struct discovery *d = ud;
    char err[256];
    if (rowenc_encode(d->enc, row, &d->copy, NULL, err, sizeof err) != 0)
        return -1;
    struct json_object *name = json_object_array_get_idx(row, (size_t)d->idx_table_name);
    struct json_object *type =
        d->idx_table_type >= 0 ? json_object_array_get_idx(row, (size_t)d->idx_table_type) : NULL;
    if (!name || (type && strcmp(json_object_get_string(type), "TABLE") != 0))
        return 0;
    d->res.tables = realloc(d->res.tables, (d->res.ntables + 1) * sizeof *d->res.tables);
    if (!d->res.tables)
        abort();
    struct discovery_table *t = &d->res.tables[d->res.ntables++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(json_object_get_string(name));
    return 0;
}

static void write_tables(struct discovery *d);

static int schemata_on_row(void *ud, struct json_object *row)
{
    struct discovery *d = ud;
    struct json_object *v = json_object_array_get_idx(row, 0);
    const char *name = v ? json_object_get_string(v) : NULL;
    if (!name)
        return 0;
    if (strcmp(name, d->schema) == 0)
        d->schema_seen = true;
    buf_puts(&d->schemas, d->schemas.len ? ", " : "");
    buf_puts(&d->schemas, name);
    return 0;
}

static void schemata_on_done(void *ud, const struct druid_error *e)
{
    struct discovery *d = ud;
    d->q = NULL;
    if (e->kind != DRUID_OK) {
        fail_druid(d, "reading INFORMATION_SCHEMA.SCHEMATA", e);
        return;
    }
    if (!d->schema_seen) {
        /* a mistyped schema_name must not look like an empty cluster */
        struct buf m = BUF_INIT;
        buf_printf(&m, "Druid has no schema \"%s\" (schema_name); its schemas are: %s", d->schema,
                   d->schemas.len ? d->schemas.data : "none");
        fail(d, "reading the catalog", m.data, DRUID_ERR_QUERY, 0);
        buf_free(&m);
        return;
    }
    write_tables(d);
}

static void tables_on_done(void *ud, const struct druid_error *e)
{
    struct discovery *d = ud;
    d->q = NULL;
    if (e->kind != DRUID_OK) {
        fail_druid(d, "reading INFORMATION_SCHEMA.TABLES", e);
        return;
    }
    if (d->res.ntables == 0) {
        static const struct druid_query_ops ops = {NULL, schemata_on_row, schemata_on_done};
        d->q = druid_query_submit(d->druid, DRUIDSQL_SCHEMATA, NULL, 0, &ops, d);
        return;
    }
    write_tables(d);
}

static void write_tables(struct discovery *d)
{
    pgsink_replace_metadata(d->sink, PGSINK_META_TABLES, d->cols, d->ncols,
                            d->copy.data ? d->copy.data : "", d->copy.len, on_tables_written, d);
}

struct discovery *discovery_run(struct druid_client *druid, struct pgsink *sink, const char *schema,
                                discovery_cb cb, void *ud)
{
    static const struct druid_query_ops ops = {tables_on_header, tables_on_row, tables_on_done};
    struct discovery *d = xcalloc(1, sizeof *d);
    d->druid = druid;
    d->sink = sink;
    d->schema = xstrdup(schema);
    d->cb = cb;
    d->ud = ud;
    struct buf sql = BUF_INIT;
    struct druid_param p[DRUIDSQL_MAX_PARAMS];
    size_t np = 0;
    druidsql_tables(&sql, p, &np, d->schema);
    d->q = druid_query_submit(druid, sql.data, p, np, &ops, d);
    buf_free(&sql);
    return d;
}

void discovery_cancel(struct discovery *d)
{
    if (!d)
        return;
    if (d->q)
        druid_query_cancel(d->q);
    free_run(d);
}
