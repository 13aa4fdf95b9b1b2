/* pgjob: a short script of SQL steps run one after another on one pgconn, with an optional
 * hook per step to read its result (and add further steps); COPY steps send a prepared
 * buffer. On the first error the job issues ROLLBACK and reports the error. pgsink builds
 * every control-connection task from these. */
#ifndef DSYNC_PGJOB_H
#define DSYNC_PGJOB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "pgconn.h"

struct pgjob; /* opaque; freed by the runner after the done callback */

/* Reads a step's result; may add steps with pgjob_sql/pgjob_copy. Non-zero fails the job
 * (with the message written into err). */
typedef int (*pgjob_hook)(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen);
typedef void (*pgjob_done)(void *ud, const char *err);

struct pgjob *pgjob_new(pgjob_done done, void *ud);
/* When the job is dropped without running to its end (the queue is freed), ud_free(ud)
 * is called instead of the done callback. */
void pgjob_set_ud_free(struct pgjob *j, void (*ud_free)(void *));
/* Adds a statement; sql and params are copied. nparams 0 allows several statements. */
void pgjob_sql(struct pgjob *j, const char *sql, int nparams, const char *const *params,
               pgjob_hook hook);
/* Adds COPY ... FROM STDIN with this data (copied). */
void pgjob_copy(struct pgjob *j, const char *copy_sql, const char *data, size_t len);

/* A FIFO of jobs on one connection, (re)connecting as needed. */
struct pgjob_queue;
struct pgjob_queue *pgjob_queue_new(uv_loop_t *loop, const char *conninfo);
/* Bounds for this queue's connection (see pgconn_set_timeouts), and the SET LOCAL
 * statements (e.g. "SET LOCAL statement_timeout = 600000") that open every transaction:
 * a job that does not begin with "BEGIN" is wrapped in BEGIN ... COMMIT for them. */
void pgjob_queue_set_limits(struct pgjob_queue *q, double connect_seconds, double op_seconds,
                            const char *set_local);
void pgjob_queue_free(struct pgjob_queue *q);
void pgjob_submit(struct pgjob_queue *q, struct pgjob *j);
bool pgjob_queue_connected(const struct pgjob_queue *q);
/* The cause of the last job that failed (SQLSTATE, connection lost); read it in the done
 * callback. */
const struct pgerr *pgjob_queue_last_error(const struct pgjob_queue *q);

#endif
