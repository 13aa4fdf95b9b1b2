/* pgerr: what a PostgreSQL failure was, kept with its cause (SQLSTATE, whether the
 * connection was lost, libpq's or the server's message), and the one rule that says what
 * to do about it: retry on a fresh connection after a backoff, or fail the slice at once.
 * Pure functions; no libpq calls. */
#ifndef DSYNC_PGERR_H
#define DSYNC_PGERR_H

#include <stdbool.h>
#include <stddef.h>

struct pgerr {
    char sqlstate[6]; /* "" when the server sent none (connection failures) */
    bool conn_lost;   /* the connection is gone (closed, reset, timed out) */
    bool timeout;     /* our own bound on waiting for the server expired */
    char message[1024];
};

enum pgerr_action {
    PGERR_RETRY, /* transient: reconnect, back off, try the slice again */
    PGERR_FAIL,  /* the data or the destination is wrong: fail the slice now */
};

/* Connection loss, server restart or shutdown (57P01-57P03), too many connections (53300),
 * serialization failures and deadlocks (40001, 40P01) and lock timeouts (55P03) are
 * retried; everything else (data errors 22, constraint violations 23, permissions 42501,
 * disk full 53100, statement timeouts 57014, ...) fails at once. */
enum pgerr_action pgerr_action(const struct pgerr *e);
/* A short name for logs and metrics: "connection", "shutdown", "conflict", "data",
 * "constraint", "permission", "disk_full", "timeout", "schema", "other". */
const char *pgerr_kind(const struct pgerr *e);
/* The destination schema or a table is gone (3F000, 42P01): recreate it. */
bool pgerr_schema_missing(const struct pgerr *e);
/* Fills e from parts; message is copied with trailing newlines removed. */
void pgerr_set(struct pgerr *e, const char *sqlstate, bool conn_lost, const char *message);

#endif
