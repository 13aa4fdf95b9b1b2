/* discovery: one read of Druid's catalog for a schema. Owns the INFORMATION_SCHEMA.TABLES
 * and COLUMNS queries, the refresh of the metadata tables in PostgreSQL (SPEC 3.2), and the
 * marking of state rows whose datasource left the catalog. The scheduler decides what to
 * sync from the result. */
#ifndef DSYNC_DISCOVERY_H
#define DSYNC_DISCOVERY_H

#include <stddef.h>
#include <stdint.h>

#include "druid_client.h"
#include "pgsink.h"

struct discovery_column {
    char *name;
    char *sql_type; /* INFORMATION_SCHEMA.COLUMNS.DATA_TYPE */
    int64_t ordinal;
};

/* A datasource (TABLE_TYPE "TABLE") with its columns in ordinal order. */
struct discovery_table {
    char *name;
    struct discovery_column *cols;
    size_t ncols;
};

struct discovery_result {
    struct discovery_table *tables;
    size_t ntables;
};

struct discovery_error {
    const char *what;         /* the step that failed, e.g. "reading INFORMATION_SCHEMA.TABLES" */
    const char *message;      /* Druid's errorMessage or PostgreSQL's message */
    enum druid_err_kind kind; /* the Druid failure; DRUID_OK when PostgreSQL failed */
    long http_status;
    bool permanent; /* retrying cannot cure it (TLS, unknown host, not HTTP, a 4xx) */
};

/* Exactly one of r and err is non-NULL; both are borrowed for the call. */
typedef void (*discovery_cb)(void *ud, const struct discovery_result *r,
                             const struct discovery_error *err);

struct discovery; /* opaque: one run */

/* Starts a run; cb is called once, then the run frees itself. schema is copied. */
struct discovery *discovery_run(struct druid_client *druid, struct pgsink *sink, const char *schema,
                                discovery_cb cb, void *ud);
/* Teardown only: cancels the Druid query and frees the run without a callback. A
 * PostgreSQL step still queued is dropped by pgsink_free, which must follow before the
 * loop runs again. Accepts NULL. */
void discovery_cancel(struct discovery *d);

#endif
