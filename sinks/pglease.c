/* pglease: work leases and the fence. See pglease.h. */
#include "pglease.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgconn.h"
#include "pgerr.h"
#include "pgsink_int.h"
#include "sqlident.h"

/* The fence's body is dollar-quoted; a schema name holding the tag could end it early. */
#define FENCE_TAG "$druid_syncd_fence$"

static void qname(struct buf *b, const char *schema, const char *name)
{
    sqlident_quote(b, schema);
    buf_putc(b, '.');
    sqlident_quote(b, name);
}

/* Leases go on a connection of their own: a renewal must not wait behind an index build or a
 * resync swap on the control connection, or the lease would expire while the work goes on. */
static struct pgjob_queue *lease_queue(struct pgsink *s)
{
    if (!s->lease) {
        s->lease = pgjob_queue_new(s->loop, s->cfg->postgres);
        if (!s->lease)
            abort();
        pgjob_queue_set_limits(s->lease, s->cfg->connect_timeout_seconds,
                               s->cfg->postgres_timeout_seconds + 10, s->set_local);
    }
    return s->lease;
}

const struct pgerr *pgsink_lease_last_error(const struct pgsink *s)
{
    return s->lease ? pgjob_queue_last_error(s->lease) : NULL;
}

/* ---- DDL ---- */

static int refuse_tag(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)res;
    (void)ud;
    snprintf(err, errlen, "destination_schema contains \"%s\": cannot create the lease fence",
             FENCE_TAG);
    return -1;
}

void pglease_add_create(struct pgjob *j, const struct pgsink *s)
{
    const char *schema = s->cfg->destination_schema;
    struct buf b = BUF_INIT;
    buf_puts(&b, "CREATE TABLE IF NOT EXISTS ");
    qname(&b, schema, PGLEASE_TABLE);
    /* epoch is never reset: a released unit keeps its row, so every take is a new token */
    buf_puts(&b, " (unit text PRIMARY KEY, datasource text NOT NULL, owner text,"
                 " epoch bigint NOT NULL DEFAULT 0, expires_at timestamptz,"
                 " acquired_at timestamptz, renewed_at timestamptz)");
    pgjob_sql(j, b.data, 0, NULL, NULL);
    /* chunk units (PGLEASE_CHUNK_PREFIX): the range they cover, and whether rows of a read
     * that did not finish may lie in it (the next reader empties the range first) */
    static const char *const added[] = {"range_lo bigint", "range_hi bigint",
                                        "dirty boolean NOT NULL DEFAULT false"};
    pgsink_add_columns(j, s, PGLEASE_TABLE, added, sizeof added / sizeof added[0]);
    buf_reset(&b);
    buf_puts(&b, "CREATE INDEX IF NOT EXISTS " PGLEASE_TABLE "_datasource ON ");
    qname(&b, schema, PGLEASE_TABLE);
    buf_puts(&b, " (datasource, range_lo)");
    pgjob_sql(j, b.data, 0, NULL, NULL);
    if (strstr(schema, FENCE_TAG)) {
        pgjob_sql(j, "SELECT 1", 0, NULL, refuse_tag);
    } else {
        buf_reset(&b);
        buf_puts(&b, "CREATE OR REPLACE FUNCTION ");
        qname(&b, schema, PGLEASE_FENCE);
        buf_puts(&b, "(p_unit text, p_owner text, p_epoch bigint) RETURNS void LANGUAGE plpgsql"
                     " AS " FENCE_TAG " DECLARE r record; BEGIN"
                     " SELECT owner, epoch, expires_at, clock_timestamp() AS now INTO r FROM ");
        qname(&b, schema, PGLEASE_TABLE);
        buf_puts(&b, " WHERE unit = p_unit FOR UPDATE;"
                     " IF NOT FOUND THEN RAISE EXCEPTION 'lease of % lost: no lease row', p_unit"
                     " USING ERRCODE = '" PGLEASE_SQLSTATE "'; END IF;"
                     " IF r.owner IS DISTINCT FROM p_owner OR r.epoch <> p_epoch"
                     " OR r.expires_at IS NULL OR r.expires_at <= r.now THEN"
                     " RAISE EXCEPTION 'lease of % lost: held by % at epoch % until %, this slice"
                     " holds epoch %', p_unit, coalesce(r.owner, 'nobody'), r.epoch,"
                     " coalesce(r.expires_at::text, '-'), p_epoch"
                     " USING ERRCODE = '" PGLEASE_SQLSTATE "'; END IF; END " FENCE_TAG);
        pgjob_sql(j, b.data, 0, NULL, NULL);
    }
    buf_free(&b);
}

void pgsink_lease_ensure(struct pgsink *s, pgsink_cb cb, void *ud)
{
    struct pgjob *j = pgsink_job(s, cb, ud);
    pgschema_add_lock(j, s); /* CREATE ... IF NOT EXISTS / OR REPLACE race between instances */
    pglease_add_create(j, s);
    pgjob_submit(s->control, j);
}

void pglease_fence_sql(struct buf *b, const char *schema, int p_unit, int p_owner, int p_epoch)
{
    buf_puts(b, "SELECT ");
    qname(b, schema, PGLEASE_FENCE);
    buf_printf(b, "($%d, $%d, $%d::bigint)", p_unit, p_owner, p_epoch);
}

void pglease_fence_lit(struct buf *b, const char *schema, const char *unit_lit,
                       const char *owner_lit, int64_t epoch)
{
    buf_puts(b, "SELECT ");
    qname(b, schema, PGLEASE_FENCE);
    buf_printf(b, "(%s, %s, %" PRId64 ")", unit_lit, owner_lit, epoch);
}

/* ---- fences per datasource ---- */

void pgsink_fence_set(struct pgsink *s, const char *datasource, const char *unit, const char *owner,
                      int64_t epoch)
{
    struct pgfence **pp = &s->fences;
    while (*pp && strcmp((*pp)->datasource, datasource) != 0)
        pp = &(*pp)->next;
    struct pgfence *f = *pp;
    if (!unit) {
        if (f) {
            *pp = f->next;
            free(f->datasource);
            free(f->unit);
            free(f->owner);
            free(f);
        }
        return;
    }
    if (!f) {
        f = calloc(1, sizeof *f);
        if (!f || !(f->datasource = strdup(datasource)))
            abort();
        *pp = f;
    }
    free(f->unit);
    free(f->owner);
    f->unit = strdup(unit);
    f->owner = strdup(owner);
    if (!f->unit || !f->owner)
        abort();
    f->epoch = epoch;
}

const struct pgfence *pglease_fence_of(struct pgsink *s, const char *key)
{
    /* a resync's shadow belongs to the live datasource whose state row it reports to */
    const struct dstable *t = pgsink_find_table(s, key);
    const char *ds = t && t->state_key ? t->state_key : key;
    for (const struct pgfence *f = s->fences; f; f = f->next)
        if (strcmp(f->datasource, ds) == 0)
            return f;
    return NULL;
}

void pglease_add_fence(struct pgjob *j, struct pgsink *s, const char *key)
{
    const struct pgfence *f = pglease_fence_of(s, key);
    if (!f)
        return;
    char ep[32];
    snprintf(ep, sizeof ep, "%" PRId64, f->epoch);
    struct buf b = BUF_INIT;
    pglease_fence_sql(&b, s->cfg->destination_schema, 1, 2, 3);
    const char *p[3] = {f->unit, f->owner, ep};
    pgjob_sql(j, b.data, 3, p, NULL);
    buf_free(&b);
}

void pglease_add_unit_fences(struct pgjob *j, struct pgsink *s, const struct pglease_units *f)
{
    struct buf b = BUF_INIT, c = BUF_INIT;
    pglease_fence_sql(&b, s->cfg->destination_schema, 1, 2, 3);
    buf_puts(&c, "UPDATE ");
    qname(&c, s->cfg->destination_schema, PGLEASE_TABLE);
    buf_puts(&c, " SET dirty = false WHERE unit = $1 AND dirty");
    for (size_t i = 0; i < f->n; i++) {
        char ep[32];
        snprintf(ep, sizeof ep, "%" PRId64, f->epochs[i]);
        const char *p[3] = {f->units[i], f->owner, ep};
        pgjob_sql(j, b.data, 3, p, NULL);
        pgjob_sql(j, c.data, 1, p, NULL);
    }
    buf_free(&b);
    buf_free(&c);
}

void pglease_free_fences(struct pgsink *s)
{
    while (s->fences) {
        struct pgfence *f = s->fences;
        pgsink_fence_set(s, f->datasource, NULL, NULL, 0);
    }
}

bool pglease_lost(const struct pgerr *e)
{
    return e && strcmp(e->sqlstate, PGLEASE_SQLSTATE) == 0;
}

/* ---- claim ---- */

struct claim_ctx {
    pglease_claim_cb cb;
    void *ud;
    struct pgsink *s;
    char *unit;
    double ttl;
    struct pglease_claim c;
    char holder[256];
    char expires[64];
    bool answered;
};

static void copy_text(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

static int claim_other_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    struct claim_ctx *x = ud;
    if (PQntuples(res) != 1) {
        snprintf(err, errlen, "lease of %s: its row vanished", x->unit);
        return -1;
    }
    x->c.granted = false;
    copy_text(x->holder, sizeof x->holder,
              PQgetisnull(res, 0, 0) ? "nobody" : PQgetvalue(res, 0, 0));
    x->c.seconds_left = PQgetisnull(res, 0, 1) ? 0 : strtod(PQgetvalue(res, 0, 1), NULL);
    copy_text(x->expires, sizeof x->expires, PQgetisnull(res, 0, 2) ? "" : PQgetvalue(res, 0, 2));
    x->c.first_load = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    x->answered = true;
    return 0;
}

static int claim_take_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct claim_ctx *x = ud;
    if (PQntuples(res) == 1) {
        x->c.granted = true;
        x->c.epoch = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        copy_text(x->expires, sizeof x->expires, PQgetvalue(res, 0, 1));
        x->c.seconds_left = x->ttl;
        x->answered = true;
        return 0;
    }
    /* held by someone else: say by whom and for how long (database time) */
    struct buf b = BUF_INIT;
    buf_puts(&b, "SELECT owner, extract(epoch FROM expires_at - clock_timestamp()),"
                 " expires_at::text, COALESCE((SELECT st.initial_load FROM ");
    /* a first load under way: other instances may help with its chunks */
    pgsink_qtable(&b, x->s, STATE_TABLE);
    buf_puts(&b, " AS st WHERE st.datasource = l.datasource), false) FROM ");
    qname(&b, x->s->cfg->destination_schema, PGLEASE_TABLE);
    buf_puts(&b, " AS l WHERE unit = $1");
    const char *p[1] = {x->unit};
    pgjob_sql(j, b.data, 1, p, claim_other_hook);
    buf_free(&b);
    return 0;
}

static void claim_free(void *ud)
{
    struct claim_ctx *x = ud;
    free(x->unit);
    free(x);
}

static void claim_done(void *ud, const char *err)
{
    struct claim_ctx *x = ud;
    if (err || !x->answered) {
        x->cb(x->ud, err ? err : "lease claim returned nothing", NULL);
    } else {
        x->c.holder = x->c.granted ? NULL : x->holder;
        x->c.expires_at = x->expires;
        x->cb(x->ud, NULL, &x->c);
    }
    claim_free(x);
}

void pgsink_lease_claim(struct pgsink *s, const struct pglease_claim_req *rq, pglease_claim_cb cb,
                        void *ud)
{
    struct claim_ctx *x = calloc(1, sizeof *x);
    if (!x)
        abort();
    x->cb = cb;
    x->ud = ud;
    x->s = s;
    x->unit = strdup(rq->unit);
    x->ttl = rq->ttl;
    if (!x->unit)
        abort();
    struct pgjob *j = pgjob_new(claim_done, x);
    pgjob_set_ud_free(j, claim_free);
    const char *schema = s->cfg->destination_schema;
    char ttl_s[32], held_s[32], free_s[32];
    snprintf(ttl_s, sizeof ttl_s, "%.3f", rq->ttl);
    snprintf(held_s, sizeof held_s, "%" PRId64, rq->held_epoch);
    snprintf(free_s, sizeof free_s, "%.3f", rq->min_free_seconds > 0 ? rq->min_free_seconds : 0.0);
    struct buf b = BUF_INIT;
    buf_puts(&b, "INSERT INTO ");
    qname(&b, schema, PGLEASE_TABLE);
    /* renewed_at: a new row has been free since now (min_free_seconds counts from there) */
    buf_puts(&b, " (unit, datasource, renewed_at) VALUES ($1, $2, clock_timestamp())"
                 " ON CONFLICT (unit) DO NOTHING");
    const char *p2[2] = {rq->unit, rq->datasource};
    pgjob_sql(j, b.data, 2, p2, NULL);
    buf_reset(&b);
    /* SET expressions read the row's old values. The epoch stays only when this owner holds
     * the unit at the epoch it believes it holds (its slices in flight keep their token);
     * every other take, including one under our own name by an earlier process, is a new
     * token, so that process's fence fails. Another owner's unit is taken only once it
     * has expired or been released, and (min_free_seconds) free for that long. */
    buf_puts(&b, "UPDATE ");
    qname(&b, schema, PGLEASE_TABLE);
    buf_puts(&b, " SET epoch = CASE WHEN owner = $2 AND epoch = $4::bigint"
                 " AND expires_at > clock_timestamp() THEN epoch ELSE epoch + 1 END,"
                 " acquired_at = CASE WHEN owner = $2 AND epoch = $4::bigint"
                 " AND expires_at > clock_timestamp() THEN acquired_at ELSE clock_timestamp() END,"
                 " owner = $2, renewed_at = clock_timestamp(),"
                 " expires_at = clock_timestamp() + make_interval(secs => $3::float8)"
                 " WHERE unit = $1 AND (owner = $2 OR ((owner IS NULL OR expires_at IS NULL"
                 " OR expires_at <= clock_timestamp()) AND COALESCE(expires_at, renewed_at,"
                 " '-infinity') <= clock_timestamp() - make_interval(secs => $5::float8)))"
                 " RETURNING epoch, expires_at::text");
    const char *p5[5] = {rq->unit, rq->owner, ttl_s, held_s, free_s};
    pgjob_sql(j, b.data, 5, p5, claim_take_hook);
    buf_free(&b);
    pgjob_submit(lease_queue(s), j);
}

/* ---- chunk units ---- */

struct chunk_ctx {
    pglease_chunk_cb cb;
    void *ud;
    size_t n, k; /* units; the next take statement's answer is unit k's */
    char **units;
    int64_t *lo, *hi;
    struct pglease_chunk_got *got;
    char **holders;
    bool answered;
};

static void chunk_ctx_free(void *ud)
{
    struct chunk_ctx *x = ud;
    for (size_t i = 0; i < x->n; i++) {
        free(x->units[i]);
        free(x->holders[i]);
    }
    free(x->units);
    free(x->holders);
    free(x->lo);
    free(x->hi);
    free(x->got);
    free(x);
}

static int chunk_take_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct chunk_ctx *x = ud;
    size_t i = x->k++;
    if (i < x->n && PQntuples(res) == 1) {
        x->got[i].granted = true;
        x->got[i].epoch = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        x->got[i].dirty = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    }
    return 0;
}

static int chunk_done_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct chunk_ctx *x = ud;
    for (int r = 0; r < PQntuples(res); r++) {
        int64_t lo = strtoll(PQgetvalue(res, r, 0), NULL, 10);
        int64_t hi = strtoll(PQgetvalue(res, r, 1), NULL, 10);
        for (size_t i = 0; i < x->n; i++)
            if (x->got[i].granted && x->lo[i] == lo && x->hi[i] == hi)
                x->got[i].done = true;
    }
    return 0;
}

static int chunk_holder_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct chunk_ctx *x = ud;
    for (int r = 0; r < PQntuples(res); r++)
        for (size_t i = 0; i < x->n; i++)
            if (!x->got[i].granted && !x->holders[i] &&
                strcmp(x->units[i], PQgetvalue(res, r, 0)) == 0) {
                x->holders[i] = strdup(PQgetisnull(res, r, 1) ? "nobody" : PQgetvalue(res, r, 1));
                if (!x->holders[i])
                    abort();
            }
    x->answered = true;
    return 0;
}

static void chunk_claim_done(void *ud, const char *err)
{
    struct chunk_ctx *x = ud;
    if (err || !x->answered) {
        x->cb(x->ud, err ? err : "chunk lease claim returned nothing", NULL, 0);
    } else {
        for (size_t i = 0; i < x->n; i++)
            x->got[i].holder = x->got[i].granted ? NULL : x->holders[i] ? x->holders[i] : "nobody";
        x->cb(x->ud, NULL, x->got, x->n);
    }
    chunk_ctx_free(x);
}

/* "{a,b}" for a text[] parameter */
static void text_array(struct buf *b, const char *const *v, size_t n)
{
    buf_putc(b, '{');
    for (size_t i = 0; i < n; i++) {
        buf_puts(b, i ? ",\"" : "\"");
        for (const char *c = v[i] ? v[i] : ""; *c; c++) {
            if (*c == '"' || *c == '\\')
                buf_putc(b, '\\');
            buf_putc(b, *c);
        }
        buf_putc(b, '"');
    }
    buf_putc(b, '}');
}

static void int_array(struct buf *b, const int64_t *v, size_t n)
{
    buf_putc(b, '{');
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "%s%" PRId64, i ? "," : "", v[i]);
    buf_putc(b, '}');
}

void pgsink_chunk_claim(struct pgsink *s, const struct pglease_chunk_req *rq, pglease_chunk_cb cb,
                        void *ud)
{
    struct chunk_ctx *x = calloc(1, sizeof *x);
    if (!x)
        abort();
    size_t n = rq->n;
    x->cb = cb;
    x->ud = ud;
    x->n = n;
    x->units = calloc(n ? n : 1, sizeof *x->units);
    x->holders = calloc(n ? n : 1, sizeof *x->holders);
    x->lo = calloc(n ? n : 1, sizeof *x->lo);
    x->hi = calloc(n ? n : 1, sizeof *x->hi);
    x->got = calloc(n ? n : 1, sizeof *x->got);
    if (!x->units || !x->holders || !x->lo || !x->hi || !x->got)
        abort();
    struct pgjob *j = pgjob_new(chunk_claim_done, x);
    pgjob_set_ud_free(j, chunk_ctx_free);
    const char *schema = s->cfg->destination_schema;
    char ttl_s[32];
    snprintf(ttl_s, sizeof ttl_s, "%.3f", rq->ttl);
    struct buf ins = BUF_INIT, take = BUF_INIT, b = BUF_INIT;
    buf_puts(&ins, "INSERT INTO ");
    qname(&ins, schema, PGLEASE_TABLE);
    /* a new row's first token is the clock in ms: a row deleted once its first load ended
     * and created again later never hands out a token an older process may still hold */
    buf_puts(&ins,
             " (unit, datasource, range_lo, range_hi, epoch, renewed_at) VALUES ($1, $2,"
             " $3::bigint, $4::bigint, (extract(epoch FROM clock_timestamp()) * 1000)::bigint,"
             " clock_timestamp()) ON CONFLICT (unit) DO NOTHING");
    buf_puts(&take, "UPDATE ");
    qname(&take, schema, PGLEASE_TABLE);
    buf_puts(&take, " SET epoch = epoch + 1, acquired_at = clock_timestamp(), owner = $2,"
                    " renewed_at = clock_timestamp(),"
                    " expires_at = clock_timestamp() + make_interval(secs => $3::float8),"
                    " range_lo = $4::bigint, range_hi = $5::bigint"
                    " WHERE unit = $1 AND (owner = $2 OR owner IS NULL OR expires_at IS NULL"
                    " OR expires_at <= clock_timestamp()) RETURNING epoch, dirty");
    for (size_t i = 0; i < n; i++) {
        x->units[i] = strdup(rq->units[i]);
        if (!x->units[i])
            abort();
        x->lo[i] = rq->lo[i];
        x->hi[i] = rq->hi[i];
        char lo_s[32], hi_s[32];
        snprintf(lo_s, sizeof lo_s, "%" PRId64, rq->lo[i]);
        snprintf(hi_s, sizeof hi_s, "%" PRId64, rq->hi[i]);
        const char *pi[4] = {rq->units[i], rq->datasource, lo_s, hi_s};
        pgjob_sql(j, ins.data, 4, pi, NULL);
        const char *pt[5] = {rq->units[i], rq->owner, ttl_s, lo_s, hi_s};
        pgjob_sql(j, take.data, 5, pt, chunk_take_hook);
    }
    /* taken: is it already in the ledger as planned (another instance read it since this
     * one planned)? Read after the takes, so that a reader that finished and released it is
     * seen with its ledger row */
    struct buf los = BUF_INIT, his = BUF_INIT, fps = BUF_INIT, us = BUF_INIT;
    int_array(&los, rq->lo, n);
    int_array(&his, rq->hi, n);
    text_array(&fps, rq->fingerprint, n);
    text_array(&us, rq->units, n);
    buf_puts(&b, "SELECT c.start_ms, c.end_ms FROM ");
    pgsink_qtable(&b, s, PGSINK_CHUNKS_TABLE);
    buf_puts(&b, " AS c JOIN unnest($2::bigint[], $3::bigint[], $4::text[]) AS p(lo, hi, fp)"
                 " ON c.start_ms = p.lo AND c.end_ms = p.hi AND c.fingerprint = p.fp"
                 " WHERE c.datasource = $1 AND c.state IN ('synced', 'pending')");
    const char *pd[4] = {rq->datasource, los.data, his.data, fps.data};
    if (rq->check_done)
        pgjob_sql(j, b.data, 4, pd, chunk_done_hook);
    buf_reset(&b);
    buf_puts(&b, "SELECT unit, owner FROM ");
    qname(&b, schema, PGLEASE_TABLE);
    buf_puts(&b, " WHERE unit = ANY($1::text[])");
    const char *ph[1] = {us.data};
    pgjob_sql(j, b.data, 1, ph, chunk_holder_hook);
    buf_free(&ins);
    buf_free(&take);
    buf_free(&b);
    buf_free(&los);
    buf_free(&his);
    buf_free(&fps);
    buf_free(&us);
    pgjob_submit(lease_queue(s), j);
}

void pglease_chunk_fence_lit(struct buf *b, const char *schema, const char *owner_lit,
                             const char *const *unit_lits, const int64_t *epochs, const bool *clean,
                             size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pglease_fence_lit(b, schema, unit_lits[i], owner_lit, epochs[i]);
        buf_puts(b, "; UPDATE ");
        qname(b, schema, PGLEASE_TABLE);
        buf_printf(b, " SET dirty = %s WHERE unit = %s AND dirty <> %s; ",
                   clean[i] ? "false" : "true", unit_lits[i], clean[i] ? "false" : "true");
    }
}

/* ---- renew ---- */

struct renew_ctx {
    pglease_renew_cb cb;
    void *ud;
    char **units;
    bool *held;
    size_t n;
    struct pglease_census census;
    bool answered;
};

static void renew_free(void *ud)
{
    struct renew_ctx *x = ud;
    for (size_t i = 0; i < x->n; i++)
        free(x->units[i]);
    free(x->units);
    free(x->held);
    free(x);
}

static int renew_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct renew_ctx *x = ud;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *u = PQgetvalue(res, r, 0);
        for (size_t i = 0; i < x->n; i++)
            if (strcmp(x->units[i], u) == 0)
                x->held[i] = true;
    }
    return 0;
}

static int census_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct renew_ctx *x = ud;
    if (PQntuples(res) == 1) {
        x->census.live = atoi(PQgetvalue(res, 0, 0));
        x->census.min_held = atoi(PQgetvalue(res, 0, 1));
    }
    x->answered = true;
    return 0;
}

static void renew_done(void *ud, const char *err)
{
    struct renew_ctx *x = ud;
    if (err || !x->answered)
        x->cb(x->ud, err ? err : "lease renewal returned nothing", NULL, 0, NULL);
    else
        x->cb(x->ud, NULL, x->held, x->n, &x->census);
    renew_free(x);
}

/* ["unit", ...]: the units to release go to SQL as one jsonb value */
static char *units_json(const char *const *units, size_t n)
{
    struct json_object *a = json_object_new_array_ext((int)n);
    for (size_t i = 0; i < n; i++)
        json_object_array_add(a, json_object_new_string(units[i]));
    char *out = strdup(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
    json_object_put(a);
    if (!out)
        abort();
    return out;
}

void pgsink_lease_renew(struct pgsink *s, const char *owner, const char *const *units,
                        const int64_t *epochs, size_t n, double ttl, pglease_renew_cb cb, void *ud)
{
    struct renew_ctx *x = calloc(1, sizeof *x);
    if (!x)
        abort();
    x->cb = cb;
    x->ud = ud;
    x->n = n;
    x->units = calloc(n ? n : 1, sizeof *x->units);
    x->held = calloc(n ? n : 1, sizeof *x->held);
    if (!x->units || !x->held)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!(x->units[i] = strdup(units[i])))
            abort();
    struct pgjob *j = pgjob_new(renew_done, x);
    pgjob_set_ud_free(j, renew_free);
    char ttl_s[32];
    snprintf(ttl_s, sizeof ttl_s, "%.3f", ttl);
    /* arrays, not a jsonb set: the planner counts an array parameter's elements, while it
     * guesses 100 rows for jsonb_to_recordset and, for an owner its statistics do not know
     * yet, picks a nested loop that reads the set again per lease row (445 ms at 1,000
     * units, 11 ms with arrays: tests/bench/scale.py) */
    struct buf ua = BUF_INIT, ea = BUF_INIT;
    text_array(&ua, units, n);
    int_array(&ea, epochs, n);
    struct buf b = BUF_INIT;
    buf_puts(&b, "UPDATE ");
    qname(&b, s->cfg->destination_schema, PGLEASE_TABLE);
    buf_puts(&b, " AS l SET expires_at = clock_timestamp() + make_interval(secs => $2::float8),"
                 " renewed_at = clock_timestamp()"
                 " FROM unnest($3::text[], $4::bigint[]) AS u(unit, epoch)"
                 " WHERE l.unit = u.unit AND l.epoch = u.epoch AND l.owner = $1"
                 " AND l.expires_at > clock_timestamp() RETURNING l.unit");
    const char *p[4] = {owner, ttl_s, ua.data, ea.data};
    pgjob_sql(j, b.data, 4, p, renew_hook);
    buf_free(&ua);
    buf_free(&ea);
    /* the instances alive now (their heartbeat units): how many share the work, and how
     * many datasources the least loaded one holds */
    buf_reset(&b);
    /* one pass over the table (a per-heartbeat count would scan it once per instance) */
    buf_puts(&b, "SELECT count(*), coalesce(min(coalesce(c.n, 0)), 0) FROM ");
    qname(&b, s->cfg->destination_schema, PGLEASE_TABLE);
    buf_puts(&b, " AS h LEFT JOIN (SELECT owner, count(*) AS n FROM ");
    qname(&b, s->cfg->destination_schema, PGLEASE_TABLE);
    buf_puts(
        &b, " WHERE unit LIKE '" PGLEASE_DS_PREFIX "%' AND expires_at > clock_timestamp()"
            " GROUP BY owner) AS c ON c.owner = h.owner WHERE h.unit LIKE '" PGLEASE_INSTANCE_PREFIX
            "%' AND h.expires_at > clock_timestamp()");
    pgjob_sql(j, b.data, 0, NULL, census_hook);
    buf_free(&b);
    pgjob_submit(lease_queue(s), j);
}

/* ---- stale transactions ---- */

static void stale_done(void *ud, const char *err)
{
    (void)ud;
    if (err)
        log_debug("lease", "ending the transactions of dead instances failed: %s", err);
}

void pgsink_lease_end_stale(struct pgsink *s, double ttl)
{
    struct pgjob *j = pgsink_job(s, stale_done, NULL);
    char ttl_s[32];
    snprintf(ttl_s, sizeof ttl_s, "%.3f", ttl);
    struct buf b = BUF_INIT;
    /* application_name is at most 63 bytes: a longer one was cut, and cannot be matched to
     * its owner for sure, so it is left alone */
    buf_puts(&b, "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity AS a"
                 " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
                 " AND a.usename = current_user AND a.application_name LIKE '" PGCONN_APP_PREFIX
                 "%' AND octet_length(a.application_name) < 63"
                 " AND a.xact_start < clock_timestamp() - make_interval(secs => $1::float8)"
                 " AND NOT EXISTS (SELECT 1 FROM ");
    qname(&b, s->cfg->destination_schema, PGLEASE_TABLE);
    buf_puts(&b, " AS l WHERE '" PGCONN_APP_PREFIX "' || l.owner = a.application_name"
                 " AND l.expires_at > clock_timestamp())");
    const char *p[1] = {ttl_s};
    pgjob_sql(j, b.data, 1, p, NULL);
    buf_free(&b);
    pgjob_submit(lease_queue(s), j);
}

/* ---- release ---- */

void pgsink_lease_release(struct pgsink *s, const char *owner, const char *const *units, size_t n,
                          pgsink_cb cb, void *ud)
{
    struct pgjob *j = pgsink_job(s, cb, ud);
    char *json = units_json(units, n);
    struct buf b = BUF_INIT;
    buf_puts(&b, "UPDATE ");
    qname(&b, s->cfg->destination_schema, PGLEASE_TABLE);
    buf_puts(&b, " SET owner = NULL, expires_at = NULL, renewed_at = clock_timestamp()"
                 " WHERE owner = $1 AND unit IN (SELECT jsonb_array_elements_text($2::jsonb))");
    const char *p[2] = {owner, json};
    pgjob_sql(j, b.data, 2, p, NULL);
    buf_free(&b);
    free(json);
    pgjob_submit(lease_queue(s), j);
}
