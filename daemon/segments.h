/* segments: Druid's record of change, read from sys.segments. One snapshot of the active
 * segments serves every datasource whose cycle is due around the same time (the query costs
 * the Broker the whole segment list: never once per datasource); requests that arrive while
 * it is read wait for it. Turns each datasource's segments into time chunks: overlapping
 * segments are one chunk, fingerprinted over their sorted ids and sizes (not row counts or
 * replicas, which change when nothing did), with their row total, availability and
 * realtime flags. */
#ifndef DSYNC_SEGMENTS_H
#define DSYNC_SEGMENTS_H

#include <json-c/json.h>

#include "ledger.h"
#include "sched_int.h"

/* The chunks of one datasource, by start; NULL with err when sys.segments could not be read
 * (err names Druid's reason), NULL without err when it lists no segment of it. Borrowed for
 * the call. */
typedef void (*segments_cb)(struct dsync *d, const struct ledger_chunk *c, size_t n,
                            const char *err);
/* Calls cb with d's chunks from a snapshot at most max_age seconds old, taking one if
 * needed. */
void segments_get(struct dsync *d, double max_age, segments_cb cb);
/* Drops the waiting requests of d (its cycle ended without them). */
void segments_forget(struct dsync *d);
/* Teardown. */
void segments_free(struct sched *s);

/* One row of DRUIDSQL_SEGMENTS (datasource, start, end, id, size, num_rows, available,
 * realtime) into g (g->id malloc'd, the caller frees it) and *datasource (borrowed from
 * row); -1 when the row has no readable datasource, interval or id (SEGMENTS_BAD_ROW says
 * so). The daemon's snapshot and the plan command read the same rows this way. */
#define SEGMENTS_BAD_ROW                                                                           \
    "sys.segments returned a row without a readable datasource, interval or segment id"
int segments_parse_row(struct json_object *row, const char **datasource, struct ledger_segment *g);

#endif
