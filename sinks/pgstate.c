/* pgstate: the state table druid_syncd_state: its DDL and the updates outside slices
 * (cycle start and end, datasources missing from the catalog). See pgsink.h. */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "pglease.h"
#include "pgsink_int.h"
#include "sqlident.h"
#include "timeutil.h"

void pgstate_add_create(struct pgjob *j, const struct pgsink *s)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "CREATE TABLE IF NOT EXISTS ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " (datasource text PRIMARY KEY, destination_table text NOT NULL,"
                 " mode text, incremental_column text, cursor text,"
                 " rows_synced bigint NOT NULL DEFAULT 0, last_started timestamptz,"
                 " last_finished timestamptz, last_success timestamptz, last_error text,"
                 " updated_at timestamptz NOT NULL DEFAULT now(),"
                 " status text, in_catalog boolean NOT NULL DEFAULT true,"
                 " slices_committed bigint NOT NULL DEFAULT 0)");
    pgjob_sql(j, b.data, 0, NULL, NULL);
    /* columns added after the first release: a state table from then gains them */
    static const char *const added[] = {
        "column_names jsonb",    /* Druid column name -> PostgreSQL column name */
        "change_detection text", /* segments, counts, cursor or full */
        "id_scheme integer",     /* the row id scheme of the table's rows (rowenc.h) */
        /* operator requests (daemon/opcmd.c writes them, sinks/pgctl.c reads them) */
        "paused boolean NOT NULL DEFAULT false", /* skipped by every instance until resumed */
        "resync_requested timestamptz",          /* a rebuild asked for, not yet done */
        "last_resync timestamptz",               /* the last rebuild done */
        /* a rebuild under way (sinks/pgschema.c): when it started, the request it serves,
         * and the shadow's progress (its slices' cursor and rows) */
        "resync_started timestamptz",
        "resync_for timestamptz",
        "resync_cursor text",
        "resync_rows bigint NOT NULL DEFAULT 0",
        /* a table created without its key and range index, first load under way
         * (sinks/pgschema.c, pgsink_finish_initial_load) */
        "initial_load boolean NOT NULL DEFAULT false",
    };
    pgsink_add_columns(j, s, STATE_TABLE, added, sizeof added / sizeof added[0]);
    buf_free(&b);
}

/* ---- state rows ---- */

/* set_clause may use $2 and $3 when nparams is 3 */
static void state_update(struct pgsink *s, const char *set_clause, int nparams,
                         const char *datasource, const char *p2, const char *p3, pgsink_cb cb,
                         void *ud)
{
    struct pgjob *j = pgsink_job(s, cb, ud);
    struct buf b = BUF_INIT;
    buf_puts(&b, "UPDATE ");
    pgsink_qtable(&b, s, STATE_TABLE);
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
                            const char *cursor, bool interrupted, const char *detection,
                            int id_scheme, pgsink_cb cb, void *ud)
{
    /* a pause that arrived during the cycle keeps its status: the next cycle is skipped */
    /* the scheduler never sends a cursor behind the stored one: no text comparison, which
     * would misorder years beyond 9999 and BC */
    struct pgjob *j = pgsink_job(s, cb, ud);
    struct buf b = BUF_INIT;
    buf_puts(&b, "UPDATE ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, interrupted ? " AS st SET last_finished = now(), last_error = $2::text,"
                               " status = CASE WHEN st.paused THEN 'paused' ELSE 'interrupted'"
                               " END,"
                             : " AS st SET last_finished = now(),"
                               " last_success = CASE WHEN $2::text IS NULL THEN now() ELSE"
                               " last_success END, last_error = $2::text,"
                               " status = CASE WHEN st.paused THEN 'paused' WHEN $2::text IS NULL"
                               " THEN 'ok' ELSE 'error' END,");
    buf_puts(&b, " cursor = COALESCE($3::text, st.cursor),"
                 " change_detection = COALESCE($4::text, st.change_detection),"
                 " id_scheme = COALESCE($5::integer, st.id_scheme),"
                 " updated_at = now() WHERE datasource = $1");
    char scheme[16];
    snprintf(scheme, sizeof scheme, "%d", id_scheme);
    const char *p[5] = {datasource, error, cursor, detection, id_scheme > 0 ? scheme : NULL};
    pgjob_sql(j, b.data, 5, p, NULL);
    buf_free(&b);
    pgjob_submit(s->control, j);
}

void pgsink_state_mark_missing(struct pgsink *s, const char *present_json, pgsink_cb cb, void *ud)
{
    struct pgjob *j = pgsink_job(s, cb, ud);
    struct buf b = BUF_INIT;
    buf_puts(&b, "UPDATE ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " SET in_catalog = false, status = CASE WHEN paused THEN 'paused'"
                 " ELSE 'missing from the Druid catalog' END,"
                 " updated_at = now() WHERE in_catalog AND datasource NOT IN"
                 " (SELECT jsonb_array_elements_text($1::jsonb))");
    const char *p[1] = {present_json};
    pgjob_sql(j, b.data, 1, p, NULL);
    buf_free(&b);
    pgjob_submit(s->control, j);
}

static char *names_json(const char *const *names)
{
    struct json_object *a = json_object_new_array();
    for (const char *const *n = names; n && *n; n++)
        json_object_array_add(a, json_object_new_string(*n));
    char *out = strdup(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
    json_object_put(a);
    if (!out)
        abort();
    return out;
}

void pgsink_state_recover(struct pgsink *s, const char *const *only, const char *owner,
                          pgsink_cb cb, void *ud)
{
    struct pgjob *j = pgsink_job(s, cb, ud);
    struct buf b = BUF_INIT;
    buf_puts(&b, "UPDATE ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " SET status = CASE WHEN paused THEN 'paused' ELSE 'interrupted' END,"
                 " last_finished = COALESCE(last_finished, now()),"
                 " last_error = 'the previous run ended during this cycle without recording"
                 " its end', updated_at = now() WHERE status = 'syncing'"
                 " AND ($1::jsonb IS NULL OR datasource IN"
                 " (SELECT jsonb_array_elements_text($1::jsonb)))"
                 " AND datasource NOT IN (SELECT jsonb_array_elements_text($2::jsonb))"
                 /* a datasource whose lease is alive is mid-cycle on another instance */
                 " AND NOT EXISTS (SELECT 1 FROM ");
    pgsink_qtable(&b, s, PGLEASE_TABLE);
    /* (not under our own name: that is an earlier run of this instance, now dead) */
    buf_puts(&b,
             " AS l WHERE l.unit = '" PGLEASE_DS_PREFIX "' || datasource AND l.owner IS NOT NULL"
             " AND l.owner IS DISTINCT FROM $3 AND l.expires_at > clock_timestamp())");
    char *inc = only ? names_json(only) : NULL;
    char *exc = names_json((const char *const *)s->cfg->exclude_datasources);
    const char *p[3] = {inc, exc, owner};
    pgjob_sql(j, b.data, 3, p, NULL);
    free(inc);
    free(exc);
    buf_free(&b);
    pgjob_submit(s->control, j);
}
