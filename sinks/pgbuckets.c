/* pgbuckets: live rows per time bucket, with sums of numeric columns, of a datasource's
 * table: what the counts fallback compares with Druid's own counts when sys.segments cannot
 * be read. See pgsink.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "pgsink_int.h"
#include "timeutil.h"

struct bucketq {
    pgsink_buckets_cb cb;
    void *ud;
    size_t nsum;
    bool answered;
};

static int buckets_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct bucketq *q = ud;
    size_t n = (size_t)PQntuples(res);
    struct pgsink_bucket *b = calloc(n ? n : 1, sizeof *b);
    double *sums = calloc((n ? n : 1) * (q->nsum ? q->nsum : 1), sizeof *sums);
    if (!b || !sums)
        abort();
    for (size_t i = 0; i < n; i++) {
        int r = (int)i;
        b[i].start_ms = strtoll(PQgetvalue(res, r, 0), NULL, 10);
        b[i].n = strtoll(PQgetvalue(res, r, 1), NULL, 10);
        for (size_t k = 0; k < q->nsum; k++)
            sums[i * q->nsum + k] =
                PQgetisnull(res, r, 2 + (int)k) ? 0 : strtod(PQgetvalue(res, r, 2 + (int)k), NULL);
        b[i].sums = sums + i * q->nsum;
    }
    q->answered = true;
    q->cb(q->ud, NULL, b, n);
    free(sums);
    free(b);
    return 0;
}

static void buckets_done(void *ud, const char *err)
{
    struct bucketq *q = ud;
    if (!q->answered)
        q->cb(q->ud, err ? err : "counting rows in PostgreSQL returned nothing", NULL, 0);
    free(q);
}

void pgsink_buckets(struct pgsink *s, const char *datasource, const size_t *sum_cols, size_t nsum,
                    int64_t width_ms, int64_t lo, int64_t hi, pgsink_buckets_cb cb, void *ud)
{
    struct dstable *t = pgsink_find_table(s, datasource);
    if (!t || !t->slice_column) {
        cb(ud, "the table of this datasource is not prepared", NULL, 0);
        return;
    }
    struct bucketq *q = calloc(1, sizeof *q);
    if (!q)
        abort();
    q->cb = cb;
    q->ud = ud;
    q->nsum = nsum;
    struct pgjob *j = pgjob_new(buckets_done, q);
    pgjob_set_ud_free(j, free);
    struct buf b = BUF_INIT;
    /* extract(epoch) is numeric: exact milliseconds, floored to the bucket */
    buf_puts(&b, "SELECT (floor(extract(epoch FROM ");
    sqlident_quote(&b, t->slice_column);
    buf_puts(&b, ") * 1000 / $1::numeric) * $1::numeric)::bigint AS b, count(*)");
    for (size_t k = 0; k < nsum; k++) {
        if (sum_cols[k] >= t->ncols) {
            buf_free(&b);
            free(q);
            cb(ud, "a summed column is not a column of the table", NULL, 0);
            return;
        }
        buf_puts(&b, ", sum(");
        sqlident_quote(&b, t->pg_cols[sum_cols[k]]);
        buf_puts(&b, ")::float8");
    }
    buf_puts(&b, " FROM ");
    pgsink_qtable(&b, s, t->dest);
    buf_puts(&b, " WHERE NOT ");
    sqlident_quote(&b, s->col_deleted);
    char w[24], lob[TIME_ISO_MAX], hib[TIME_ISO_MAX];
    snprintf(w, sizeof w, "%" PRId64, width_ms);
    const char *p[3] = {w, NULL, NULL};
    int np = 1;
    if (lo != INT64_MIN) {
        buf_puts(&b, " AND ");
        sqlident_quote(&b, t->slice_column);
        buf_printf(&b, " >= $%d::timestamptz", np + 1);
        time_format_pg_ms(lo, lob);
        p[np++] = lob;
    }
    if (hi != INT64_MAX) {
        buf_puts(&b, " AND ");
        sqlident_quote(&b, t->slice_column);
        buf_printf(&b, " < $%d::timestamptz", np + 1);
        time_format_pg_ms(hi, hib);
        p[np++] = hib;
    }
    buf_puts(&b, " GROUP BY 1");
    pgjob_sql(j, b.data, np, p, buckets_hook);
    buf_free(&b);
    pgjob_submit(s->control, j);
}
