/* druid_client: Druid's SQL API over HTTP, on the daemon's libuv loop. Owns the libcurl
 * multi handle (driven by uv_poll/uv_timer socket and timer callbacks), the limit on
 * queries in flight, the request body (arrayLines with all three header rows, a sqlQueryId
 * per query, dynamic parameters, the query timeout in the context), and the streaming
 * parse of the response: rows reach the caller as they arrive, and a body without Druid's
 * end marker is reported as truncated, never as success. Speaks no SQL to PostgreSQL. */
#ifndef DSYNC_DRUID_CLIENT_H
#define DSYNC_DRUID_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>
#include <uv.h>

#include "config.h"
#include "druid_error.h"

/* What one response may cost; each limit breached is DRUID_ERR_PROTOCOL for that query (not
 * retried), never an out-of-memory. Per query in flight, the client holds at most one line
 * buffer of DRUID_LINE_MAX + 1 bytes (grown on demand from 64 KiB, nothing reserved up front,
 * freed with the query), one row's decoded JSON (its strings, at most DRUID_LINE_MAX bytes,
 * plus at most DRUID_ROW_TREE_MAX of json-c objects; a row decoded by rowdec instead takes
 * at most DRUID_LINE_MAX + 16 bytes of text and one struct rowenc_value per value, the
 * values bounded by DRUID_ROW_TREE_MAX alike), and libcurl's buffers.
 *  DRUID_LINE_MAX     the longest response line (one row, or one header row), in bytes.
 *  DRUID_HEADERS_MAX  all HTTP response header lines of a response together, in bytes
 *                     (libcurl itself refuses a single header line over 100 KiB).
 *  DRUID_JSON_DEPTH   the deepest nesting of a value inside a row (a value that is real JSON,
 *                     not a string); the row array itself is one more level.
 *  DRUID_ROW_TREE_MAX what one row's decoded JSON may cost beyond its string bytes, estimated
 *                     before decoding: json-c takes ~90 bytes per value, ~180 per array and
 *                     ~800 per object, so a 4 MiB line of "{}," would decode to over 1 GB.
 *                     4 MiB is ~47,000 scalar values, or 2,000 nested levels many times over. */
#define DRUID_LINE_MAX (4u * 1024 * 1024)
#define DRUID_HEADERS_MAX (64u * 1024)
#define DRUID_JSON_DEPTH 2000
#define DRUID_ROW_TREE_MAX (4u * 1024 * 1024)
/* What json-c allocates per value, array and object (measured with json-c 0.16: a number or
 * string ~90 bytes, an empty array ~180, an empty object ~800): the estimate that
 * DRUID_ROW_TREE_MAX bounds, from one pass over a line (every ',' starts one more value or
 * member, every '[' / '{' one more container; strings are skipped). */
#define DRUID_COST_VALUE 90u
#define DRUID_COST_ARRAY 180u
#define DRUID_COST_OBJECT 800u

enum druid_param_type {
    DRUID_PARAM_TIMESTAMP_MS, /* {"type":"TIMESTAMP","value":<millis>} */
    DRUID_PARAM_VARCHAR,      /* {"type":"VARCHAR","value":"..."} */
    DRUID_PARAM_BIGINT,       /* {"type":"BIGINT","value":<int>} */
};

struct druid_param {
    enum druid_param_type type;
    int64_t i;
    const char *s;
};

/* The three header rows of an arrayLines response. */
struct druid_header {
    size_t ncols;
    const char *const *names;
    const char *const *native_types; /* entries may be NULL (Druid sends null for ROW) */
    const char *const *sql_types;
};

struct druid_query_ops {
    /* Once, before any row. Non-zero aborts the query. */
    int (*on_header)(void *ud, const struct druid_header *h);
    /* Once per data row, a json-c array of ncols values, borrowed for the call. Non-zero
     * aborts the query (on_done then reports DRUID_ERR_PROTOCOL "aborted by consumer"). */
    int (*on_row)(void *ud, struct json_object *row);
    /* Exactly once, unless the query was cancelled: err->kind is DRUID_OK on a complete
     * response. The query handle is freed right after this returns. */
    void (*on_done)(void *ud, const struct druid_error *err);
};

struct druid_client; /* opaque */
struct druid_query;  /* opaque; owned by the client */

/* Copies what it needs from cfg. NULL on failure (curl could not be initialised). */
struct druid_client *druid_client_new(uv_loop_t *loop, const struct config *cfg);
/* Applies a reloaded configuration to queries submitted from now on; queries in flight
 * keep the settings they started with. */
void druid_client_set_config(struct druid_client *c, const struct config *cfg);
/* Cancels every query (no callbacks) and closes the handles; the loop must run once more
 * for the handles to close. Accepts NULL. */
void druid_client_free(struct druid_client *c);

/* Queues a query; it starts when fewer than max_concurrent_queries are in flight. sql and
 * params are copied. Returns NULL only on out-of-memory. */
struct druid_query *druid_query_submit(struct druid_client *c, const char *sql,
                                       const struct druid_param *params, size_t nparams,
                                       const struct druid_query_ops *ops, void *ud);
/* Stops a query; no callback is called afterwards. A query already running is also
 * cancelled in Druid (DELETE /druid/v2/sql/{sqlQueryId}, best effort). */
void druid_query_cancel(struct druid_query *q);
/* Data rows as decoded values instead of json-c arrays: from now on each data row of q
 * that rowdec decodes (rowdec.h: the compact JSON Druid writes) reaches fn, one
 * struct rowenc_value per column, borrowed for the call, with the same meaning as on_row's
 * return value; a row rowdec leaves to json-c still reaches on_row. Header rows and every
 * limit above are unchanged. For slice queries, where decoding is most of the cost. */
struct rowenc_value;
typedef int (*druid_row_view_fn)(void *ud, const struct rowenc_value *v, size_t n);
void druid_query_on_row_view(struct druid_query *q, druid_row_view_fn fn);
/* Data rows as their raw line first: from now on each data line of q (without its
 * newline, len bytes; read only, and not terminated: most lines are read where they
 * arrived, druid_lines_set_peek) reaches fn before any decoding, borrowed for the call,
 * when the line can hold no more JSON values than the header's column count allows. fn returns 0
 * when it took the row (counted as a data row), DRUID_LINE_DECODE to have the line decoded as
 * without fn (on_row_view, on_row), or another non-zero value to abort the query as on_row's does.
 * For slice queries: the encoder's fused path (rowenc_encode_line). */
#define DRUID_LINE_DECODE 1
typedef int (*druid_row_line_fn)(void *ud, const char *line, size_t len);
void druid_query_on_row_line(struct druid_query *q, druid_row_line_fn fn);
/* Backpressure: stop/resume reading the response body. */
void druid_query_pause(struct druid_query *q, bool paused);
/* "druid-syncd-<32 hex>": the sqlQueryId, for logs and for DELETE /druid/v2/sql/{id}. */
const char *druid_query_id(const struct druid_query *q);

/* Queries running now (not queued), for metrics and tests. */
size_t druid_client_inflight(const struct druid_client *c);
/* Cancel requests still on their way to Druid (let them go out before exiting). */
size_t druid_client_cancels_pending(const struct druid_client *c);

#endif
