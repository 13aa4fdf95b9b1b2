/* pgconn: one PostgreSQL connection driven by the libuv loop. Owns the libpq handle in
 * non-blocking mode, the uv_poll_t on its socket, and a single operation in progress at a
 * time (connect, a query, or a COPY FROM STDIN with flow control). Never blocks the loop.
 * Knows nothing of Druid, tables or slices: that is pgsink's. */
#ifndef DSYNC_PGCONN_H
#define DSYNC_PGCONN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "buf.h"
#include "pgerr.h"

struct pgconn; /* opaque */

/* err is NULL on success, else a message (borrowed for the call). */
typedef void (*pgconn_cb)(void *ud, const char *err);
/* res is the last result of the command (borrowed; NULL when there was none). */
typedef void (*pgconn_result_cb)(void *ud, PGresult *res, const char *err);

/* conninfo is copied. NULL on OOM. */
struct pgconn *pgconn_new(uv_loop_t *loop, const char *conninfo);
/* Every connection opened from now on has application_name PGCONN_APP_PREFIX + name (it wins
 * over one in the conninfo): what pg_stat_activity shows, and how a live instance tells the
 * sessions of a dead one (pglease). NULL: fallback_application_name "druid-syncd" only. */
#define PGCONN_APP_PREFIX "druid-syncd/"
void pgconn_set_application_name(const char *instance);
/* Bounds on waiting for the server (seconds; 0 = none): for connecting, and for any one
 * operation (a statement's result, or COPY data libpq cannot hand to the socket). When one
 * expires the connection is closed (the server rolls its transaction back) and the
 * operation fails with a timeout. Applies to operations started from now on. */
void pgconn_set_timeouts(struct pgconn *c, double connect_seconds, double op_seconds);
/* Closes the connection and frees it once the loop has closed the poll handle; pending
 * callbacks are not called. Accepts NULL. */
void pgconn_free(struct pgconn *c);

/* Starts connecting: host names are resolved on libuv's thread pool (never on the loop),
 * then PQconnectStartParams/PQconnectPoll run on the loop. TCP keepalives and a user
 * timeout are on by default, so a dead peer is noticed within about a minute; the
 * conninfo string overrides them. */
void pgconn_connect(struct pgconn *c, pgconn_cb cb, void *ud);
/* Connected and not broken. */
bool pgconn_ok(const struct pgconn *c);
/* An operation is in progress. */
bool pgconn_busy(const struct pgconn *c);

/* One statement with parameters (text format; a NULL entry is SQL NULL). Results of type
 * COMMAND_OK/TUPLES_OK/COPY_IN are success; anything else is an error with PostgreSQL's
 * message. For COPY ... FROM STDIN the callback fires when the server is ready for data. */
void pgconn_query(struct pgconn *c, const char *sql, int nparams, const char *const *params,
                  pgconn_result_cb cb, void *ud);

/* One or more statements without parameters, sent as one simple query (one round trip).
 * each (may be NULL) sees every successful result in order as it arrives, also those before
 * a COPY ... FROM STDIN that ends the string; cb reports as pgconn_query does (the first
 * error stops the rest of the string, and is the one reported). */
typedef void (*pgconn_each_cb)(void *ud, PGresult *res);
void pgconn_query_each(struct pgconn *c, const char *sql, pgconn_each_cb each, pgconn_result_cb cb,
                       void *ud);
/* Appends s as an SQL string literal quoted for this connection (PQescapeLiteral). -1 when
 * not connected or out of memory. */
int pgconn_literal(struct pgconn *c, struct buf *b, const char *s);

/* Queues COPY data. Returns 0 when everything was sent, 1 when some of it is waiting for
 * the socket (the caller should stop its source until the drain callback), -1 on error. */
int pgconn_copy_put(struct pgconn *c, const char *data, size_t len);
/* Called (once per registration) when data queued by pgconn_copy_put has been sent. */
void pgconn_on_drain(struct pgconn *c, void (*cb)(void *ud), void *ud);
/* Ends the COPY (errmsg non-NULL aborts it) and reports the COPY command's result. */
void pgconn_copy_end(struct pgconn *c, const char *errmsg, pgconn_result_cb cb, void *ud);

/* PostgreSQL's last error message for this connection (for logs). */
const char *pgconn_error(const struct pgconn *c);
/* The last failure with its cause (SQLSTATE, connection lost, timeout); valid until the
 * next operation starts, so read it inside the failing callback. */
const struct pgerr *pgconn_last_error(const struct pgconn *c);
/* Closes the connection now (the server rolls back an open transaction); no callback of
 * the operation in progress is called. The next pgconn_connect opens a new one. */
void pgconn_close(struct pgconn *c);

#endif
