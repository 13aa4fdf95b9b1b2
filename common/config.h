/* config: the configuration file (SPEC 2). Owns parsing, defaults, validation and the
 * rule of which datasources are selected. A struct config is immutable once loaded; a
 * reload builds a new one and swaps it in. */
#ifndef DSYNC_CONFIG_H
#define DSYNC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct config {
    /* Druid (the first five keys are the original connector's) */
    char *druid_host;
    int druid_port;
    char *schema_name;
    char *incremental_column;
    bool use_ssl;
    char *druid_username;      /* NULL when not set */
    char *druid_password;      /* resolved: from the key, the file, or the credential */
    char *druid_password_file; /* NULL when not set */
    char *tls_ca_file;         /* NULL: system CAs */
    bool tls_verify;
    /* PostgreSQL */
    char *postgres; /* libpq conninfo or URI; "" = libpq defaults */
    char *destination_schema;
    double postgres_timeout_seconds; /* statement_timeout and lock_timeout of each transaction */
    /* selection */
    char **datasources;         /* NULL-terminated; NULL when the key is absent (= all) */
    char **exclude_datasources; /* NULL-terminated; never NULL (empty list) */
    /* pacing */
    double sync_interval_seconds;
    long batch_size;
    int max_concurrent_queries;
    double request_timeout_seconds;
    double connect_timeout_seconds; /* opening a connection to Druid or PostgreSQL */
    double lookback_seconds;
    bool soft_deletes;
    bool follow_drops;              /* rows of chunks Druid dropped are flagged (or deleted) */
    double realtime_reread_seconds; /* an open (realtime) chunk is re-read whole this often */
    char *metadata_column_prefix;
    int postgres_writers; /* PostgreSQL connections that write slices; default 2 */
    char *log_format;     /* "text" (default) or "json" */
    double lease_seconds; /* work lease length when instances share a destination */
    char *instance_name;  /* NULL: host name and process id, decided at start-up */
    /* additions beyond SPEC 2 (documented in the README) */
    int max_retries;                 /* attempts per slice before the cycle fails; default 5 */
    double retry_initial_seconds;    /* first backoff, doubled each retry; default 1 */
    double retry_max_seconds;        /* backoff cap; default 60 */
    char *log_level;                 /* NULL or "error"/"warning"/"info"/"debug" */
    double shutdown_timeout_seconds; /* SIGTERM: grace for slices in flight; default 30 */
    char *metrics_listen;            /* NULL (off) or "IP:port" / "[IPv6]:port" for /metrics */
    /* Not keys: what the operator should fix although it stops nothing (a password readable
     * by group or others). NULL-terminated, never NULL; each message names the file and
     * never holds a secret. The caller logs them (log_warning "config") or prints them. */
    char **warnings;
};

/* Exit code for configuration errors (EX_CONFIG). */
#define CONFIG_EXIT 78

/* Loads and validates path. On error returns NULL and writes one message naming the
 * offending key (or the file/JSON problem: a syntax error with its line, a duplicate key
 * with its line and path) into err. The caller frees with config_free. Warnings (see
 * struct config) cover path itself and the druid_password_file. */
struct config *config_load(const char *path, char *err, size_t errlen);
/* Same, from a JSON text already in memory (used by tests); no warning about the text's
 * own file, since there is none. */
struct config *config_parse(const char *json_text, char *err, size_t errlen);
void config_free(struct config *c);

/* Does the configuration select this datasource? (datasources / exclude_datasources) */
bool config_selects(const struct config *c, const char *datasource);

/* Parses a listen address (as metrics_listen): "IP:port", "[IPv6]:port", ":port" (host "::",
 * every address) or "name:port" (a host name: letters, digits, '-' and '.'; the caller resolves
 * it). host gets the address or name (256 bytes hold any name), port the port. 0 or -1. */
int config_parse_listen(const char *s, char *host, size_t hostlen, int *port);

/* Names of the system columns: prefix + "id" / "synced" / "deleted". Writes into out. */
void config_system_column(const struct config *c, const char *suffix, char *out, size_t outlen);

#endif
