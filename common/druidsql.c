/* druidsql: the Druid SQL text of the daemon. See druidsql.h. */
#include "druidsql.h"

#include "sqlident.h"

static void param_varchar(struct druid_param *p, size_t *np, const char *s)
{
    p[(*np)++] = (struct druid_param){DRUID_PARAM_VARCHAR, 0, s};
}

/* WHERE on col for [lo, hi), as dynamic parameters. */
static void where_range(struct buf *b, const char *col, int64_t lo, int64_t hi,
                        struct druid_param *p, size_t *np)
{
    int any = 0;
    if (lo != INT64_MIN) {
        buf_puts(b, " WHERE ");
        sqlident_quote(b, col);
        buf_puts(b, " >= ?");
        p[(*np)++] = (struct druid_param){DRUID_PARAM_TIMESTAMP_MS, lo, NULL};
        any = 1;
    }
    if (hi != INT64_MAX) {
        buf_puts(b, any ? " AND " : " WHERE ");
        sqlident_quote(b, col);
        buf_puts(b, " < ?");
        p[(*np)++] = (struct druid_param){DRUID_PARAM_TIMESTAMP_MS, hi, NULL};
    }
}

void druidsql_tables(struct buf *sql, struct druid_param *p, size_t *np, const char *schema)
{
    *np = 0;
    buf_puts(sql, "SELECT * FROM INFORMATION_SCHEMA.TABLES WHERE \"TABLE_SCHEMA\" = ?");
    param_varchar(p, np, schema);
}

void druidsql_columns(struct buf *sql, struct druid_param *p, size_t *np, const char *schema)
{
    *np = 0;
    buf_puts(sql, "SELECT * FROM INFORMATION_SCHEMA.COLUMNS WHERE \"TABLE_SCHEMA\" = ?");
    param_varchar(p, np, schema);
}

void druidsql_segments(struct buf *sql, struct druid_param *p, size_t *np)
{
    (void)p;
    *np = 0;
    buf_puts(sql, "SELECT \"datasource\", \"start\", \"end\", \"segment_id\", \"size\","
                  " \"num_rows\", \"is_available\", \"is_realtime\" FROM sys.segments"
                  " WHERE \"is_active\" = 1");
}

void druidsql_count(struct buf *sql, struct druid_param *p, size_t *np, const char *datasource,
                    const char *col, const char *period, int64_t lo, int64_t hi)
{
    *np = 0;
    buf_puts(sql, "SELECT ");
    if (period) {
        /* period is one of the planner's constants, never outside text */
        buf_puts(sql, "TIME_FLOOR(");
        sqlident_quote(sql, col);
        buf_printf(sql, ", '%s')", period);
    } else {
        sqlident_quote(sql, col);
    }
    buf_puts(sql, " AS \"b\", COUNT(*) AS \"n\", MAX(");
    sqlident_quote(sql, col);
    buf_puts(sql, ") AS \"mx\" FROM ");
    sqlident_quote(sql, datasource);
    where_range(sql, col, lo, hi, p, np);
    buf_puts(sql, " GROUP BY 1");
}

void druidsql_sums(struct buf *sql, struct druid_param *p, size_t *np, const char *datasource,
                   const char *col, const char *period, const char *const *sum_cols, size_t nsum,
                   int64_t lo, int64_t hi)
{
    *np = 0;
    buf_puts(sql, "SELECT TIME_FLOOR(");
    sqlident_quote(sql, col);
    buf_printf(sql, ", '%s') AS \"b\", COUNT(*) AS \"n\"", period);
    for (size_t k = 0; k < nsum; k++) {
        buf_puts(sql, ", SUM(");
        sqlident_quote(sql, sum_cols[k]);
        buf_printf(sql, ") AS \"s%zu\"", k);
    }
    buf_puts(sql, " FROM ");
    sqlident_quote(sql, datasource);
    where_range(sql, col, lo, hi, p, np);
    buf_puts(sql, " GROUP BY 1");
}

void druidsql_slice(struct buf *sql, struct druid_param *p, size_t *np, const char *datasource,
                    const char *const *cols, size_t ncols, const char *col, int64_t lo, int64_t hi,
                    int ordered)
{
    *np = 0;
    buf_puts(sql, "SELECT ");
    for (size_t i = 0; i < ncols; i++) {
        if (i)
            buf_puts(sql, ", ");
        sqlident_quote(sql, cols[i]);
    }
    buf_puts(sql, " FROM ");
    sqlident_quote(sql, datasource);
    if (col)
        where_range(sql, col, lo, hi, p, np);
    if (ordered)
        buf_puts(sql, " ORDER BY \"__time\"");
}
