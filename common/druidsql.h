/* druidsql: every piece of Druid SQL text the daemon sends, in one place: the start-up
 * probe, the catalog reads (INFORMATION_SCHEMA), the row counts planning uses and the slice
 * reads. Identifiers are quoted with sqlident, values always go as dynamic parameters, so a
 * datasource or column name can never change a query's meaning. Builds text only; sends
 * nothing. */
#ifndef DSYNC_DRUIDSQL_H
#define DSYNC_DRUIDSQL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "druid_client.h"

/* Room for every parameter one query of this module takes. */
#define DRUIDSQL_MAX_PARAMS 4

/* A query that every Druid answers: reachability and credentials. */
#define DRUIDSQL_PROBE "SELECT 1"

/* The catalog of one schema; the schema name is parameter 1 (p[0]). */
void druidsql_tables(struct buf *sql, struct druid_param *p, size_t *np, const char *schema);
void druidsql_columns(struct buf *sql, struct druid_param *p, size_t *np, const char *schema);

/* The active segments of every datasource, one row each: datasource, start, end, segment_id,
 * size, num_rows, is_available, is_realtime. One query serves all datasources (Druid builds
 * the whole list for any filter); the JSON columns are never selected (they cost the Broker);
 * order is not guaranteed. */
void druidsql_segments(struct buf *sql, struct druid_param *p, size_t *np);

/* Every schema Druid has (asked only when a schema lists no table: a typo?). */
#define DRUIDSQL_SCHEMATA "SELECT \"SCHEMA_NAME\" FROM INFORMATION_SCHEMA.SCHEMATA"

/* Rows per bucket of col over [lo, hi) (INT64_MIN / INT64_MAX: unbounded), with the greatest
 * value of col per bucket: columns "b", "n", "mx". period is a TIME_FLOOR period ("P1D",
 * "PT1H", ...) or NULL to group by the column's own values. */
void druidsql_count(struct buf *sql, struct druid_param *p, size_t *np, const char *datasource,
                    const char *col, const char *period, int64_t lo, int64_t hi);

/* Rows per bucket of col over [lo, hi), with the sums of sum_cols: columns "b", "n", then one
 * per summed column. period as for druidsql_count (never NULL here). */
void druidsql_sums(struct buf *sql, struct druid_param *p, size_t *np, const char *datasource,
                   const char *col, const char *period, const char *const *sum_cols, size_t nsum,
                   int64_t lo, int64_t hi);

/* All of cols (in this order) of the rows with col in [lo, hi); col NULL: every row.
 * ordered: ORDER BY "__time" (Druid's scan order that bounds occurrence counting). */
void druidsql_slice(struct buf *sql, struct druid_param *p, size_t *np, const char *datasource,
                    const char *const *cols, size_t ncols, const char *col, int64_t lo, int64_t hi,
                    int ordered);

#endif
