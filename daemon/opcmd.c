/* opcmd: the operator commands (SPEC 1). See opcmd.h.
 *
 * Requests live in druid_syncd_state (sinks/pgstate.c): `paused` (pause/resume),
 * `resync_requested` (set by resync, cleared by the daemon when the rebuild is done, which
 * also sets `last_resync`). Each command runs in one transaction, so it changes all the named
 * datasources or none. */
#include "opcmd.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "druid_client.h"
#include "druidsql.h"
#include "ledger.h"
#include "segments.h"
#include "log.h"
#include "pglease.h"
#include "pgsink.h"
#include "sqlident.h"
#include "timeutil.h"

#define EXIT_DONE 0
#define EXIT_FAILED 1
#define EXIT_USAGE 64
#define DEFAULT_CONFIG "/etc/druid-syncd/config.json"
#define STATE_TABLE "druid_syncd_state"
#define RESYNC_WAIT_DEFAULT 3600.0

static const char *const commands[] = {"status", "plan", "resync", "pause", "resume"};

bool opcmd_is_command(const char *word)
{
    for (size_t i = 0; word && i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(word, commands[i]) == 0)
            return true;
    return false;
}

struct opts {
    const char *cmd;
    const char *config_path;
    bool json, wait, help;
    double timeout;
    char **names; /* argv entries, not copied */
    size_t nnames;
};

static void usage(FILE *f, const char *cmd)
{
    if (!cmd || strcmp(cmd, "status") == 0)
        fprintf(f, "usage: druid-syncd status [-c FILE] [--json] [NAME]...\n");
    if (!cmd || strcmp(cmd, "plan") == 0)
        fprintf(f, "usage: druid-syncd plan   [-c FILE] [NAME]...\n");
    if (!cmd || strcmp(cmd, "resync") == 0)
        fprintf(f, "usage: druid-syncd resync [-c FILE] [--wait [--timeout SECONDS]] NAME...\n");
    if (!cmd || strcmp(cmd, "pause") == 0)
        fprintf(f, "usage: druid-syncd pause  [-c FILE] NAME...\n");
    if (!cmd || strcmp(cmd, "resume") == 0)
        fprintf(f, "usage: druid-syncd resume [-c FILE] NAME...\n");
    fprintf(f, "Default config: %s. Exit codes: 0 done, 1 failed, 64 usage, 78 configuration.\n",
            DEFAULT_CONFIG);
}

static void say_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say_err(const char *cmd, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "druid-syncd %s: %s\n", cmd, msg);
}

/* 0, or EXIT_USAGE after saying why. */
static int parse_args(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->cmd = argv[0];
    o->config_path = DEFAULT_CONFIG;
    o->timeout = RESYNC_WAIT_DEFAULT;
    o->names = calloc((size_t)argc + 1, sizeof *o->names);
    if (!o->names)
        abort();
    bool status = strcmp(o->cmd, "status") == 0, resync = strcmp(o->cmd, "resync") == 0;
    bool timeout_given = false, only_names = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_names || a[0] != '-' || strcmp(a, "-") == 0) {
            o->names[o->nnames++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            only_names = true;
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                say_err(o->cmd, "%s needs a file name", a);
                return EXIT_USAGE;
            }
            o->config_path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            o->config_path = a + 9;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = true;
        } else if (status && strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (resync && strcmp(a, "--wait") == 0) {
            o->wait = true;
        } else if (resync && (strcmp(a, "--timeout") == 0 || strncmp(a, "--timeout=", 10) == 0)) {
            const char *v = a[9] == '=' ? a + 10 : (i + 1 < argc ? argv[++i] : NULL);
            char *end = NULL;
            double t = v ? strtod(v, &end) : 0;
            if (!v || !*v || *end || !(t > 0) || !isfinite(t)) {
                say_err(o->cmd, "--timeout needs a positive number of seconds");
                return EXIT_USAGE;
            }
            o->timeout = t;
            timeout_given = true;
        } else {
            say_err(o->cmd, "unknown option \"%s\"", a);
            usage(stderr, o->cmd);
            return EXIT_USAGE;
        }
    }
    if (o->help)
        return 0;
    if (timeout_given && !o->wait) {
        say_err(o->cmd, "--timeout applies to --wait only");
        return EXIT_USAGE;
    }
    bool needs_names = !status && strcmp(o->cmd, "plan") != 0;
    if (needs_names && o->nnames == 0) {
        say_err(o->cmd, "name at least one datasource");
        usage(stderr, o->cmd);
        return EXIT_USAGE;
    }
    return 0;
}

/* ---- PostgreSQL ---- */

struct pg {
    PGconn *c;
    const struct config *cfg;
    const char *cmd;
    char begin[160]; /* "BEGIN; SET LOCAL ...": the bounds travel with every transaction */
};

static void qtable(struct buf *b, const struct config *cfg, const char *name)
{
    sqlident_quote2(b, cfg->destination_schema, name);
}

/* Connects within connect_timeout_seconds and bounds every statement and lock wait by
 * postgres_timeout_seconds. */
static int pg_open(struct pg *p, const struct config *cfg, const char *cmd)
{
    p->cfg = cfg;
    p->cmd = cmd;
    char ct[32], app[64];
    snprintf(ct, sizeof ct, "%d", (int)ceil(cfg->connect_timeout_seconds));
    snprintf(app, sizeof app, "druid-syncd %s", cmd);
    /* defaults first: what the postgres string (expanded from dbname) says wins */
    const char *keys[] = {"connect_timeout", "dbname", "fallback_application_name", NULL};
    const char *vals[] = {ct, cfg->postgres, app, NULL};
    p->c = PQconnectdbParams(keys, vals, 1);
    if (!p->c || PQstatus(p->c) != CONNECTION_OK) {
        char m[1024];
        log_sanitize(m, sizeof m, p->c ? PQerrorMessage(p->c) : "out of memory");
        size_t n = strlen(m);
        while (n >= 2 && strcmp(m + n - 2, "\\n") == 0)
            m[n -= 2] = '\0';
        say_err(cmd, "connection to PostgreSQL failed: %s", m);
        PQfinish(p->c);
        p->c = NULL;
        return -1;
    }
    /* SET LOCAL in every transaction, never a session SET: through a transaction-mode
     * pooler (pgbouncer) a session setting would stay on a server connection that other
     * clients get next, and our own next statement may run on another one */
    long ms = (long)(cfg->postgres_timeout_seconds * 1000.0);
    snprintf(p->begin, sizeof p->begin,
             "BEGIN; SET LOCAL statement_timeout = %ld; SET LOCAL lock_timeout = %ld", ms, ms);
    return 0;
}

static void pg_close(struct pg *p)
{
    PQfinish(p->c);
    p->c = NULL;
}

/* Opens a transaction with the statement and lock bounds. */
static bool pg_begin(struct pg *p)
{
    PGresult *r = PQexec(p->c, p->begin);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        char m[1024];
        log_sanitize(m, sizeof m, PQerrorMessage(p->c));
        say_err(p->cmd, "starting a transaction failed: %s", m);
    }
    return ok;
}

/* Runs sql with text parameters in the current transaction; NULL after saying why
 * (SQLSTATE kept in the message). */
static PGresult *pg_exec_in(struct pg *p, const char *what, const char *sql, int n,
                            const char *const *params)
{
    PGresult *r = PQexecParams(p->c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    char m[1024];
    log_sanitize(m, sizeof m,
                 PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : PQerrorMessage(p->c));
    size_t len = strlen(m);
    while (len >= 2 && strcmp(m + len - 2, "\\n") == 0)
        m[len -= 2] = '\0';
    say_err(p->cmd, "%s failed (SQLSTATE %s): %s", what, code ? code : "none", m);
    PQclear(r);
    return NULL;
}

/* pg_exec_in, in a transaction of its own (with the bounds) unless one is open. */
static PGresult *pg_exec(struct pg *p, const char *what, const char *sql, int n,
                         const char *const *params)
{
    if (PQtransactionStatus(p->c) != PQTRANS_IDLE)
        return pg_exec_in(p, what, sql, n, params);
    if (!pg_begin(p))
        return NULL;
    PGresult *r = pg_exec_in(p, what, sql, n, params);
    PGresult *e = PQexec(p->c, r ? "COMMIT" : "ROLLBACK");
    bool ok = PQresultStatus(e) == PGRES_COMMAND_OK;
    PQclear(e);
    if (r && !ok) {
        char m[1024];
        log_sanitize(m, sizeof m, PQerrorMessage(p->c));
        say_err(p->cmd, "%s failed at COMMIT: %s", what, m);
        PQclear(r);
        return NULL;
    }
    return r;
}

static bool pg_simple(struct pg *p, const char *sql)
{
    PGresult *r = pg_exec(p, sql, sql, 0, NULL);
    PQclear(r);
    return r != NULL;
}

/* Does the table exist in destination_schema? 1 yes, 0 no, -1 error. */
static int pg_has_table(struct pg *p, const char *name)
{
    struct buf b = BUF_INIT;
    qtable(&b, p->cfg, name);
    const char *params[1] = {b.data};
    PGresult *r =
        pg_exec(p, "looking up the table", "SELECT to_regclass($1) IS NOT NULL", 1, params);
    buf_free(&b);
    if (!r)
        return -1;
    int yes = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return yes;
}

/* 0 when the state table exists; EXIT_FAILED after saying so. */
static int need_state_table(struct pg *p)
{
    int has = pg_has_table(p, STATE_TABLE);
    if (has < 0)
        return EXIT_FAILED;
    if (!has) {
        say_err(p->cmd,
                "no state table \"%s\".\"%s\" in PostgreSQL yet: druid-syncd has not synced "
                "into this destination_schema",
                p->cfg->destination_schema, STATE_TABLE);
        return EXIT_FAILED;
    }
    return 0;
}

static char *names_json(char **names, size_t n)
{
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++)
        json_object_array_add(a, json_object_new_string(names[i]));
    char *out = strdup(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
    json_object_put(a);
    if (!out)
        abort();
    return out;
}

/* The named datasources without a state row: said, and counted. */
static size_t report_unknown(struct pg *p, char **names, size_t n)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "SELECT n FROM jsonb_array_elements_text($1::jsonb) AS n WHERE n NOT IN"
                 " (SELECT datasource FROM ");
    qtable(&b, p->cfg, STATE_TABLE);
    buf_puts(&b, ")");
    char *js = names_json(names, n);
    const char *params[1] = {js};
    PGresult *r = pg_exec(p, "reading the state table", b.data, 1, params);
    free(js);
    buf_free(&b);
    if (!r)
        return SIZE_MAX;
    size_t unknown = (size_t)PQntuples(r);
    for (int i = 0; i < PQntuples(r); i++) {
        char m[512];
        log_sanitize(m, sizeof m, PQgetvalue(r, i, 0));
        say_err(p->cmd,
                "unknown datasource \"%s\": no state row in \"%s\".\"%s\" (it has not been "
                "synced yet)",
                m, p->cfg->destination_schema, STATE_TABLE);
    }
    PQclear(r);
    return unknown;
}

/* ---- pause, resume, resync ---- */

static int cmd_set(struct pg *p, const struct opts *o)
{
    int rc = need_state_table(p);
    if (rc)
        return rc;
    if (!pg_begin(p))
        return EXIT_FAILED;
    size_t unknown = report_unknown(p, o->names, o->nnames);
    if (unknown == SIZE_MAX || unknown > 0) {
        pg_simple(p, "ROLLBACK");
        if (unknown != SIZE_MAX)
            say_err(p->cmd, "nothing changed");
        return EXIT_FAILED;
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "UPDATE ");
    qtable(&b, p->cfg, STATE_TABLE);
    bool pause = strcmp(o->cmd, "pause") == 0, resync = strcmp(o->cmd, "resync") == 0;
    if (pause)
        buf_puts(&b, " SET paused = true, status = 'paused'");
    else if (resync)
        /* a request already pending keeps its time (--wait of either caller sees it done),
         * unless a rebuild already serves it (resync_for): data read before this request
         * must not satisfy it, so it gets its own time and the swap leaves it pending.
         * resync_for through to_jsonb: a state table from before the column exists too. */
        buf_puts(&b, " AS st SET resync_requested = CASE WHEN st.resync_requested IS NULL OR"
                     " st.resync_requested IS NOT DISTINCT FROM"
                     " (to_jsonb(st) ->> 'resync_for')::timestamptz THEN now()"
                     " ELSE st.resync_requested END");
    else
        /* waiting for its next cycle, which records its own status */
        buf_puts(&b, " SET paused = false,"
                     " status = CASE WHEN status = 'paused' THEN 'idle' ELSE status END");
    buf_puts(&b, ", updated_at = now() WHERE datasource IN"
                 " (SELECT jsonb_array_elements_text($1::jsonb)) RETURNING datasource, paused,"
                 " to_char(resync_requested AT TIME ZONE 'UTC',"
                 " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), resync_requested::text");
    char *js = names_json(o->names, o->nnames);
    const char *params[1] = {js};
    PGresult *r = pg_exec(p, "updating the state table", b.data, 1, params);
    free(js);
    buf_free(&b);
    if (!r || !pg_simple(p, "COMMIT")) {
        PQclear(r);
        return EXIT_FAILED;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        char name[512];
        log_sanitize(name, sizeof name, PQgetvalue(r, i, 0));
        bool paused = strcmp(PQgetvalue(r, i, 1), "t") == 0;
        if (pause)
            printf("%s: paused (every instance skips its cycles until `druid-syncd resume`)\n",
                   name);
        else if (resync)
            printf("%s: resync requested at %s%s\n", name, PQgetvalue(r, i, 2),
                   paused ? " (the datasource is paused: nothing happens until it is resumed)"
                          : "");
        else
            printf("%s: resumed (syncs at its next cycle)\n", name);
    }
    PQclear(r);
    fflush(stdout);
    return EXIT_DONE;
}

static double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Polls until no named datasource has a resync request pending, or the timeout. */
static int resync_wait(struct pg *p, const struct opts *o)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "SELECT datasource FROM ");
    qtable(&b, p->cfg, STATE_TABLE);
    buf_puts(&b, " WHERE datasource IN (SELECT jsonb_array_elements_text($1::jsonb))"
                 " AND resync_requested IS NOT NULL ORDER BY datasource");
    char *js = names_json(o->names, o->nnames);
    const char *params[1] = {js};
    double until = mono_seconds() + o->timeout;
    int rc = EXIT_FAILED;
    for (;;) {
        PGresult *r = pg_exec(p, "reading the state table", b.data, 1, params);
        if (!r)
            break;
        int pending = PQntuples(r);
        if (pending == 0) {
            PQclear(r);
            printf("resync done\n");
            rc = EXIT_DONE;
            break;
        }
        if (mono_seconds() >= until) {
            struct buf l = BUF_INIT;
            for (int i = 0; i < pending; i++) {
                char m[512];
                log_sanitize(m, sizeof m, PQgetvalue(r, i, 0));
                buf_printf(&l, "%s%s", i ? ", " : "", m);
            }
            say_err(p->cmd,
                    "timed out after %g s waiting for the rebuild of %s (is a daemon running? "
                    "the request stays recorded)",
                    o->timeout, l.data);
            buf_free(&l);
            PQclear(r);
            break;
        }
        PQclear(r);
        double left = until - mono_seconds();
        usleep((useconds_t)((left < 1.0 ? (left > 0 ? left : 0) : 1.0) * 1e6));
    }
    free(js);
    buf_free(&b);
    return rc;
}

/* ---- status ---- */

#define TS_SQL(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

enum {
    ST_DS,
    ST_STATUS,
    ST_MODE,
    ST_DETECT,
    ST_ROWS,
    ST_CURSOR,
    ST_LAG,
    ST_PENDING,
    ST_POSTPONED,
    ST_SUCCESS,
    ST_FINISHED,
    ST_ERROR,
    ST_PAUSED,
    ST_RESYNC,
    ST_CATALOG,
    ST_HOLDER,
    ST_LEASE_UNTIL,
    ST_CHUNKS_BY,
};

static bool selected(const struct config *cfg, const struct opts *o, const char *ds)
{
    if (o->nnames == 0)
        return config_selects(cfg, ds);
    for (size_t i = 0; i < o->nnames; i++)
        if (strcmp(o->names[i], ds) == 0)
            return true;
    return false;
}

static const char *val(PGresult *r, int i, int col)
{
    return PQgetisnull(r, i, col) ? NULL : PQgetvalue(r, i, col);
}

static void add_str(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, v ? json_object_new_string(v) : NULL);
}

static void add_int(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, v ? json_object_new_int64(strtoll(v, NULL, 10)) : NULL);
}

/* "3d 4h", "5m 10s", "12s" */
static void fmt_age(char *out, size_t n, double s)
{
    long t = (long)(s < 0 ? 0 : s);
    if (t >= 86400)
        snprintf(out, n, "%ldd%ldh", t / 86400, t % 86400 / 3600);
    else if (t >= 3600)
        snprintf(out, n, "%ldh%ldm", t / 3600, t % 3600 / 60);
    else if (t >= 60)
        snprintf(out, n, "%ldm%lds", t / 60, t % 60);
    else
        snprintf(out, n, "%lds", t);
}

static int cmd_status(struct pg *p, const struct opts *o)
{
    int rc = need_state_table(p);
    if (rc)
        return rc;
    int chunks = pg_has_table(p, PGSINK_CHUNKS_TABLE);
    if (chunks < 0)
        return EXIT_FAILED;
    struct buf b = BUF_INIT, k = BUF_INIT;
    qtable(&k, p->cfg, PGSINK_CHUNKS_TABLE);
    buf_puts(&b, "SELECT st.datasource, st.status, st.mode, st.change_detection, st.rows_synced,"
                 " st.cursor,"
                 /* lag: how old the newest synced value is (cursor mode and segments alike) */
                 " CASE WHEN st.cursor ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$'"
                 " THEN round(extract(epoch FROM now() - st.cursor::timestamptz)) END, ");
    if (chunks)
        buf_printf(&b,
                   "(SELECT count(*) FROM %s k WHERE k.datasource = st.datasource AND"
                   " k.state = 'pending'), (SELECT count(*) FROM %s k WHERE k.datasource ="
                   " st.datasource AND k.state = 'postponed'), ",
                   k.data, k.data);
    else
        buf_puts(&b, "0, 0, ");
    buf_puts(&b, TS_SQL("st.last_success") ", " TS_SQL(
                     "st.last_finished") ", st.last_error,"
                                         " st.paused, " TS_SQL(
                                             "st.resync_requested") ", st.in_catalog, ");
    int leases = pg_has_table(p, PGLEASE_TABLE);
    if (leases < 0) {
        buf_free(&b);
        buf_free(&k);
        return EXIT_FAILED;
    }
    if (leases) {
        /* which instance works on it now (a lease alive by the database's clock) */
        struct buf l = BUF_INIT;
        qtable(&l, p->cfg, PGLEASE_TABLE);
        buf_printf(&b,
                   "(SELECT l.owner FROM %s l WHERE l.unit = '" PGLEASE_DS_PREFIX
                   "' || st.datasource AND l.expires_at > clock_timestamp()),"
                   " (SELECT " TS_SQL(
                       "l.expires_at") " FROM %s l WHERE l.unit = '" PGLEASE_DS_PREFIX
                                       "' || st.datasource AND l.expires_at > clock_timestamp()),"
                                       /* a first load read by several instances: who reads how many
                                          of its chunks */
                                       " (SELECT string_agg(c.owner || ':' || c.n, ',' ORDER BY "
                                       "c.owner) FROM (SELECT"
                                       " l.owner, count(*) AS n FROM %s l WHERE l.datasource = "
                                       "st.datasource AND l.unit"
                                       " LIKE '" PGLEASE_CHUNK_PREFIX
                                       "%%' AND l.expires_at > clock_timestamp() GROUP BY"
                                       " l.owner) AS c) FROM ",
                   l.data, l.data, l.data);
        buf_free(&l);
    } else {
        buf_puts(&b, "NULL, NULL, NULL FROM ");
    }
    qtable(&b, p->cfg, STATE_TABLE);
    buf_puts(&b, " AS st ORDER BY st.datasource");
    PGresult *r = pg_exec(p, "reading the state table", b.data, 0, NULL);
    buf_free(&b);
    buf_free(&k);
    if (!r)
        return EXIT_FAILED;
    struct json_object *arr = json_object_new_array();
    size_t shown = 0, failed = 0;
    bool *found = calloc(o->nnames + 1, sizeof *found);
    if (!found)
        abort();
    for (int i = 0; i < PQntuples(r); i++) {
        const char *ds = PQgetvalue(r, i, ST_DS);
        if (!selected(p->cfg, o, ds))
            continue;
        for (size_t n = 0; n < o->nnames; n++)
            found[n] |= strcmp(o->names[n], ds) == 0;
        shown++;
        const char *status = val(r, i, ST_STATUS), *err = val(r, i, ST_ERROR);
        bool paused = strcmp(PQgetvalue(r, i, ST_PAUSED), "t") == 0;
        /* the last cycle that ended failed (last_error stays through 'syncing', 'paused' and
         * 'idle' until a cycle succeeds); an interrupted one (a stop) says nothing of health */
        bool bad = err && !(status && strcmp(status, "interrupted") == 0);
        failed += bad;
        char name[512], errs[1024], cur[256];
        log_sanitize(name, sizeof name, ds);
        log_sanitize(errs, sizeof errs, err);
        log_sanitize(cur, sizeof cur, val(r, i, ST_CURSOR));
        if (o->json) {
            struct json_object *x = json_object_new_object();
            add_str(x, "datasource", ds);
            add_str(x, "status", status);
            add_str(x, "mode", val(r, i, ST_MODE));
            add_str(x, "change_detection", val(r, i, ST_DETECT));
            add_int(x, "rows", val(r, i, ST_ROWS));
            add_str(x, "cursor", val(r, i, ST_CURSOR));
            add_int(x, "lag_seconds", val(r, i, ST_LAG));
            add_int(x, "chunks_pending", val(r, i, ST_PENDING));
            add_int(x, "chunks_postponed", val(r, i, ST_POSTPONED));
            add_str(x, "last_success", val(r, i, ST_SUCCESS));
            add_str(x, "last_finished", val(r, i, ST_FINISHED));
            add_str(x, "last_error", err ? errs : NULL);
            json_object_object_add(x, "last_cycle_failed", json_object_new_boolean(bad));
            json_object_object_add(x, "paused", json_object_new_boolean(paused));
            add_str(x, "resync_requested", val(r, i, ST_RESYNC));
            json_object_object_add(
                x, "in_catalog",
                json_object_new_boolean(strcmp(PQgetvalue(r, i, ST_CATALOG), "t") == 0));
            add_str(x, "held_by", val(r, i, ST_HOLDER));
            add_str(x, "lease_expires", val(r, i, ST_LEASE_UNTIL));
            add_str(x, "chunks_read_by", val(r, i, ST_CHUNKS_BY));
            json_object_array_add(arr, x);
            continue;
        }
        char lag[32] = "-";
        if (val(r, i, ST_LAG))
            fmt_age(lag, sizeof lag, strtod(val(r, i, ST_LAG), NULL));
        char st[256], holder[256], cby[512];
        log_sanitize(st, sizeof st, status ? status : "-");
        log_sanitize(holder, sizeof holder, val(r, i, ST_HOLDER) ? val(r, i, ST_HOLDER) : "");
        log_sanitize(cby, sizeof cby, val(r, i, ST_CHUNKS_BY) ? val(r, i, ST_CHUNKS_BY) : "");
        printf("%s: status=%s mode=%s detection=%s rows=%s cursor=%s lag=%s chunks_pending=%s "
               "chunks_postponed=%s last_success=%s paused=%s%s%s held_by=%s%s%s last_error=%s\n",
               name, st, val(r, i, ST_MODE) ? val(r, i, ST_MODE) : "-",
               val(r, i, ST_DETECT) ? val(r, i, ST_DETECT) : "-", PQgetvalue(r, i, ST_ROWS),
               cur[0] ? cur : "-", lag, PQgetvalue(r, i, ST_PENDING),
               PQgetvalue(r, i, ST_POSTPONED),
               val(r, i, ST_SUCCESS) ? val(r, i, ST_SUCCESS) : "never", paused ? "yes" : "no",
               val(r, i, ST_RESYNC) ? " resync_requested=" : "",
               val(r, i, ST_RESYNC) ? val(r, i, ST_RESYNC) : "", holder[0] ? holder : "-",
               cby[0] ? " chunks_read_by=" : "", cby, err ? errs : "-");
    }
    PQclear(r);
    rc = failed ? EXIT_FAILED : EXIT_DONE;
    for (size_t n = 0; n < o->nnames; n++) {
        if (!found[n]) {
            char m[512];
            log_sanitize(m, sizeof m, o->names[n]);
            say_err(p->cmd, "unknown datasource \"%s\": no state row", m);
            rc = EXIT_FAILED;
        }
    }
    free(found);
    if (o->json)
        printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE));
    else if (shown == 0 && o->nnames == 0)
        printf("no datasource of this configuration has a state row yet\n");
    json_object_put(arr);
    if (failed && !o->json)
        say_err(p->cmd, "%zu datasource(s) failed their last cycle", failed);
    fflush(stdout);
    return rc;
}

/* ---- plan ---- */

struct segds {
    char *name;
    struct ledger_segment *segs;
    size_t n, cap;
    struct ledger_chunk *chunks;
    int64_t *bytes; /* per chunk: the sizes of its segments */
    size_t nchunks;
};

struct snapshot {
    struct segds *ds;
    size_t nds, cap;
    bool done;
    char err[1200];
};

static struct segds *snap_ds(struct snapshot *s, const char *name, bool add)
{
    for (size_t i = 0; i < s->nds; i++)
        if (strcmp(s->ds[i].name, name) == 0)
            return &s->ds[i];
    if (!add)
        return NULL;
    if (s->nds == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->ds = realloc(s->ds, s->cap * sizeof *s->ds);
        if (!s->ds)
            abort();
    }
    struct segds *x = &s->ds[s->nds++];
    memset(x, 0, sizeof *x);
    x->name = strdup(name);
    if (!x->name)
        abort();
    return x;
}

static int on_seg_row(void *ud, struct json_object *row)
{
    struct snapshot *s = ud;
    const char *ds;
    struct ledger_segment g;
    if (segments_parse_row(row, &ds, &g) != 0) {
        snprintf(s->err, sizeof s->err, "%s", SEGMENTS_BAD_ROW);
        return -1;
    }
    struct segds *x = snap_ds(s, ds, true);
    if (x->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 64;
        x->segs = realloc(x->segs, x->cap * sizeof *x->segs);
        if (!x->segs)
            abort();
    }
    x->segs[x->n++] = g;
    return 0;
}

static void on_seg_done(void *ud, const struct druid_error *e)
{
    struct snapshot *s = ud;
    s->done = true;
    if (e->kind != DRUID_OK && !s->err[0])
        snprintf(s->err, sizeof s->err, "%s (%s)", e->message, druid_err_kind_name(e->kind));
}

/* The daemon's own chunking and fingerprint (ledger.c), so that `plan` agrees with a cycle. */
static void build_chunks(struct segds *x)
{
    x->chunks = calloc(x->n ? x->n : 1, sizeof *x->chunks);
    x->bytes = calloc(x->n ? x->n : 1, sizeof *x->bytes);
    if (!x->chunks || !x->bytes)
        abort();
    x->nchunks = ledger_chunks_from_segments(x->segs, x->n, x->chunks, x->bytes);
}

static void snapshot_free(struct snapshot *s)
{
    for (size_t i = 0; i < s->nds; i++) {
        for (size_t k = 0; k < s->ds[i].n; k++)
            free(s->ds[i].segs[k].id);
        free(s->ds[i].segs);
        free(s->ds[i].chunks);
        free(s->ds[i].bytes);
        free(s->ds[i].name);
    }
    free(s->ds);
}

/* One blocking read of sys.segments through the daemon's own Druid client on a private
 * loop (the same SQL, auth, TLS and response checks; bounded by connect_timeout_seconds and
 * request_timeout_seconds). 0, or -1 with s->err. */
static int read_segments(const struct config *cfg, struct snapshot *s)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        snprintf(s->err, sizeof s->err, "cannot initialise an event loop");
        return -1;
    }
    struct druid_client *dc = druid_client_new(&loop, cfg);
    if (!dc) {
        snprintf(s->err, sizeof s->err, "cannot initialise libcurl");
        uv_loop_close(&loop);
        return -1;
    }
    struct buf sql = BUF_INIT;
    struct druid_param p[DRUIDSQL_MAX_PARAMS];
    size_t np = 0;
    druidsql_segments(&sql, p, &np);
    static const struct druid_query_ops ops = {NULL, on_seg_row, on_seg_done};
    if (!druid_query_submit(dc, sql.data, p, np, &ops, s))
        abort();
    buf_free(&sql);
    while (!s->done && uv_run(&loop, UV_RUN_ONCE))
        ;
    druid_client_free(dc);
    uv_run(&loop, UV_RUN_DEFAULT); /* the handles' close callbacks */
    uv_loop_close(&loop);
    if (!s->done && !s->err[0])
        snprintf(s->err, sizeof s->err, "the query ended without an answer");
    if (s->err[0])
        return -1;
    for (size_t i = 0; i < s->nds; i++)
        build_chunks(&s->ds[i]);
    return 0;
}

/* The ledger rows of ds, as planning.c reads them. *out malloc'd. 0, -1 after saying why. */
static int read_ledger(struct pg *p, const char *ds, bool has_table, struct ledger_chunk **out,
                       size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!has_table)
        return 0;
    struct buf b = BUF_INIT;
    buf_puts(&b, "SELECT chunk_start, chunk_end, start_ms, end_ms, fingerprint, druid_rows,"
                 " stored_rows, state, (extract(epoch FROM postponed_since) * 1000)::bigint,"
                 " position_ms, full_read_ms, drop_held FROM ");
    qtable(&b, p->cfg, PGSINK_CHUNKS_TABLE);
    buf_puts(&b, " WHERE datasource = $1 ORDER BY start_ms, end_ms");
    const char *params[1] = {ds};
    PGresult *r = pg_exec(p, "reading the chunk ledger", b.data, 1, params);
    buf_free(&b);
    if (!r)
        return -1;
    size_t m = (size_t)PQntuples(r);
    struct ledger_chunk *l = calloc(m ? m : 1, sizeof *l);
    if (!l)
        abort();
    for (int i = 0; i < (int)m; i++) {
        struct ledger_chunk *c = &l[i];
        snprintf(c->start, sizeof c->start, "%s", PQgetvalue(r, i, 0));
        snprintf(c->end, sizeof c->end, "%s", PQgetvalue(r, i, 1));
        c->start_ms = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        c->end_ms = strtoll(PQgetvalue(r, i, 3), NULL, 10);
        snprintf(c->fp, sizeof c->fp, "%s", PQgetvalue(r, i, 4));
        c->druid_rows = PQgetisnull(r, i, 5) ? -1 : strtoll(PQgetvalue(r, i, 5), NULL, 10);
        c->stored_rows = strtoll(PQgetvalue(r, i, 6), NULL, 10);
        const char *st = PQgetvalue(r, i, 7);
        c->state = strcmp(st, "synced") == 0      ? LEDGER_SYNCED
                   : strcmp(st, "postponed") == 0 ? LEDGER_POSTPONED
                                                  : LEDGER_WAITING;
        c->postponed_since_ms = PQgetisnull(r, i, 8) ? 0 : strtoll(PQgetvalue(r, i, 8), NULL, 10);
        c->position_ms = PQgetisnull(r, i, 9) ? INT64_MIN : strtoll(PQgetvalue(r, i, 9), NULL, 10);
        c->full_read_ms = PQgetisnull(r, i, 10) ? 0 : strtoll(PQgetvalue(r, i, 10), NULL, 10);
        c->drop_held = strcmp(PQgetvalue(r, i, 11), "t") == 0;
    }
    PQclear(r);
    *out = l;
    *n = m;
    return 0;
}

struct plan_row {
    size_t fresh, changed, dropped, postponed, open, slices, unknown_rows;
    int64_t rows, bytes;
    bool held;
};

/* What the next cycle would do, from the same comparison the daemon runs (ledger_diff) and
 * the same packing rule as planning.c (adjacent chunks up to batch_size rows share a slice;
 * a bigger or uncounted chunk is counted at sync time: at least ceil(rows / batch) slices). */
static void plan_one(const struct config *cfg, const struct segds *x,
                     const struct ledger_chunk *led, size_t nl, struct plan_row *pr)
{
    memset(pr, 0, sizeof *pr);
    static const struct ledger_chunk none;
    const struct ledger_chunk *snap = x ? x->chunks : &none;
    size_t ns = x ? x->nchunks : 0;
    struct ledger_opts lo = {time_now_ms(), (int64_t)(cfg->realtime_reread_seconds * 1000.0),
                             false};
    bool *gone = calloc(nl ? nl : 1, sizeof *gone);
    if (!gone)
        abort();
    size_t drops = ledger_dropped(snap, ns, led, nl, gone);
    bool confirmed = true;
    for (size_t j = 0; j < nl; j++)
        confirmed &= !gone[j] || led[j].drop_held;
    free(gone);
    if (drops > 0 && nl >= 2 && drops * 2 > nl && !confirmed)
        lo.hold_drops = pr->held = true; /* the daemon's rule for a snapshot dropping most */
    struct ledger_work *w = NULL;
    size_t nw = 0, ndrops = 0;
    if (ledger_diff(snap, ns, led, nl, &lo, &w, &nw, &ndrops) != 0)
        abort();
    long batch = cfg->batch_size;
    bool open = false;
    int64_t group = 0, group_hi = INT64_MIN;
    for (size_t i = 0; i < nw; i++) {
        const struct ledger_work *k = &w[i];
        bool reads = k->action == LEDGER_READ || (k->action == LEDGER_DROP && cfg->follow_drops);
        if (k->action == LEDGER_READ) {
            if (k->fresh)
                pr->fresh++;
            else
                pr->changed++;
            pr->open += k->open;
            if (k->rows >= 0)
                pr->rows += k->rows;
            else
                pr->unknown_rows++;
            pr->bytes += x->bytes[k->snap];
        } else if (k->action == LEDGER_DROP) {
            pr->dropped++;
        } else {
            pr->postponed++;
        }
        if (!reads) {
            open = false;
            continue;
        }
        int64_t rows = k->action == LEDGER_DROP ? 0 : k->rows;
        if (k->action == LEDGER_READ && (rows < 0 || rows > batch)) {
            pr->slices += rows < 0 ? 1 : (size_t)((rows + batch - 1) / batch);
            open = false;
            continue;
        }
        if (open && group_hi == k->lo && group + rows <= batch) {
            group += rows;
            group_hi = k->hi;
            continue;
        }
        pr->slices++;
        group = rows;
        group_hi = k->hi;
        open = true;
    }
    free(w);
}

static void fmt_bytes(char *out, size_t n, int64_t b)
{
    if (b >= 1 << 30)
        snprintf(out, n, "%.1f GiB", (double)b / (1 << 30));
    else if (b >= 1 << 20)
        snprintf(out, n, "%.1f MiB", (double)b / (1 << 20));
    else if (b >= 1 << 10)
        snprintf(out, n, "%.1f KiB", (double)b / (1 << 10));
    else
        snprintf(out, n, "%" PRId64 " B", b);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmd_plan(struct pg *p, const struct opts *o)
{
    int has_state = pg_has_table(p, STATE_TABLE), has_chunks = pg_has_table(p, PGSINK_CHUNKS_TABLE);
    if (has_state < 0 || has_chunks < 0)
        return EXIT_FAILED;
    /* the datasources the destination knows, with how the last cycle found changes */
    size_t nknown = 0;
    PGresult *kr = NULL;
    if (has_state) {
        struct buf b = BUF_INIT;
        buf_puts(&b, "SELECT datasource, change_detection, paused FROM ");
        qtable(&b, p->cfg, STATE_TABLE);
        kr = pg_exec(p, "reading the state table", b.data, 0, NULL);
        buf_free(&b);
        if (!kr)
            return EXIT_FAILED;
        nknown = (size_t)PQntuples(kr);
    }
    struct snapshot snap;
    memset(&snap, 0, sizeof snap);
    if (read_segments(p->cfg, &snap) != 0) {
        char m[1300];
        log_sanitize(m, sizeof m, snap.err);
        say_err(p->cmd,
                "reading sys.segments from Druid at %s:%d failed: %s (without it the daemon "
                "compares per-chunk counts, which a dry run does not predict)",
                p->cfg->druid_host, p->cfg->druid_port, m);
        snapshot_free(&snap);
        PQclear(kr);
        return EXIT_FAILED;
    }
    /* every name: Druid's and the state table's, selected, sorted, once */
    size_t cap = snap.nds + nknown + 1, n = 0;
    const char **names = calloc(cap, sizeof *names);
    if (!names)
        abort();
    for (size_t i = 0; i < snap.nds; i++)
        names[n++] = snap.ds[i].name;
    for (size_t i = 0; i < nknown; i++) {
        const char *ds = PQgetvalue(kr, (int)i, 0);
        if (!snap_ds(&snap, ds, false))
            names[n++] = ds;
    }
    qsort(names, n, sizeof *names, cmp_str);
    int rc = EXIT_DONE;
    for (size_t k = 0; k < o->nnames; k++) {
        bool f = false;
        for (size_t i = 0; i < n && !f; i++)
            f = strcmp(names[i], o->names[k]) == 0;
        if (!f) {
            char m[512];
            log_sanitize(m, sizeof m, o->names[k]);
            say_err(p->cmd,
                    "unknown datasource \"%s\": Druid lists no segment of it and it has "
                    "no state row",
                    m);
            rc = EXIT_FAILED;
        }
    }
    size_t shown = 0;
    struct plan_row tot;
    memset(&tot, 0, sizeof tot);
    for (size_t i = 0; i < n && rc == EXIT_DONE; i++) {
        const char *ds = names[i];
        if (!selected(p->cfg, o, ds))
            continue;
        const char *how = NULL;
        bool paused = false, has_row = false;
        for (size_t j = 0; j < nknown; j++)
            if (strcmp(PQgetvalue(kr, (int)j, 0), ds) == 0) {
                has_row = true;
                how = PQgetisnull(kr, (int)j, 1) ? NULL : PQgetvalue(kr, (int)j, 1);
                paused = strcmp(PQgetvalue(kr, (int)j, 2), "t") == 0;
            }
        struct ledger_chunk *led = NULL;
        size_t nl = 0;
        if (read_ledger(p, ds, has_chunks, &led, &nl) != 0) {
            rc = EXIT_FAILED;
            break;
        }
        struct plan_row pr;
        plan_one(p->cfg, snap_ds(&snap, ds, false), led, nl, &pr);
        free(led);
        char name[512], bytes[32];
        log_sanitize(name, sizeof name, ds);
        fmt_bytes(bytes, sizeof bytes, pr.bytes);
        char note[256] = "";
        if (paused)
            snprintf(note, sizeof note, " (paused: the next cycle does nothing)");
        else if (how && strcmp(how, "segments") != 0)
            snprintf(note, sizeof note,
                     " (its last cycle used %s change detection: this segment view may not be "
                     "what it does)",
                     how);
        else if (!has_row)
            snprintf(note, sizeof note, " (never synced: a first sync)");
        printf("%s: %zu new, %zu changed, %zu dropped%s, %zu postponed chunks; %zu slices; "
               "~%" PRId64 " rows%s, %s%s\n",
               name, pr.fresh, pr.changed, pr.dropped, pr.held ? " (held back)" : "", pr.postponed,
               pr.slices, pr.rows,
               pr.unknown_rows ? " (some chunks' rows unknown: counted at sync)" : "", bytes, note);
        shown++;
        tot.fresh += pr.fresh;
        tot.changed += pr.changed;
        tot.dropped += pr.dropped;
        tot.postponed += pr.postponed;
        tot.slices += pr.slices;
        tot.rows += pr.rows;
        tot.bytes += pr.bytes;
    }
    if (rc == EXIT_DONE && shown > 1) {
        char bytes[32];
        fmt_bytes(bytes, sizeof bytes, tot.bytes);
        printf("total: %zu new, %zu changed, %zu dropped, %zu postponed chunks; %zu slices; "
               "~%" PRId64 " rows, %s\n",
               tot.fresh, tot.changed, tot.dropped, tot.postponed, tot.slices, tot.rows, bytes);
    } else if (rc == EXIT_DONE && shown == 0) {
        printf("no datasource selected by this configuration\n");
    }
    free(names);
    snapshot_free(&snap);
    PQclear(kr);
    fflush(stdout);
    return rc;
}

/* ---- entry ---- */

int opcmd_main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc || o.help) {
        if (o.help)
            usage(stdout, o.cmd);
        free(o.names);
        return rc;
    }
    char err[1024];
    struct config *cfg = config_load(o.config_path, err, sizeof err);
    if (!cfg) {
        say_err(o.cmd, "%s", err);
        free(o.names);
        return CONFIG_EXIT;
    }
    for (char **w = cfg->warnings; w && *w; w++)
        say_err(o.cmd, "warning: %s", *w);
    struct pg p;
    memset(&p, 0, sizeof p);
    if (pg_open(&p, cfg, o.cmd) != 0) {
        config_free(cfg);
        free(o.names);
        return EXIT_FAILED;
    }
    if (strcmp(o.cmd, "status") == 0)
        rc = cmd_status(&p, &o);
    else if (strcmp(o.cmd, "plan") == 0)
        rc = cmd_plan(&p, &o);
    else {
        rc = cmd_set(&p, &o);
        if (rc == EXIT_DONE && o.wait)
            rc = resync_wait(&p, &o);
    }
    pg_close(&p);
    config_free(cfg);
    free(o.names);
    return rc;
}
