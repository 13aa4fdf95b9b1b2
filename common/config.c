/* config: see config.h and SPEC 2.
 *
 * Every key is one row of cf_keys[] (name, type, field, default, bounds, flags, an optional
 * extra check), in the style of pgbouncer's config table: adding a key is adding a row.
 * Defaults are written as JSON text and go through the same code as the file's values, so
 * a default can never bypass validation. Rules that involve several keys (password
 * sources, retry bounds) live in finish().
 *
 * json-c builds the document and reports syntax errors; it keeps the last of two equal keys
 * silently, so a second pass with yajl's event parser (which sees every key as written)
 * finds duplicates. Warnings about passwords readable by others are collected in
 * c->warnings for the caller to log. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <json-c/json.h>
#include <libpq-fe.h>
#include <malloc.h>
#include <yajl/yajl_parse.h>

#include "buf.h"
#include "log.h"

#define CONFIG_MAX_FILE (1024 * 1024) /* a configuration file larger than this is a mistake */
#define SECRET_MAX_FILE (64 * 1024)   /* same for a password file */
#define PREFIX_MAX 48                 /* 63-byte identifiers minus "deleted" (and margin) */
#define SECONDS_MAX 1e9               /* ~31 years: keeps conversions to ms far from overflow */
#define GOT_MAX 64                    /* longest value quoted back in a message */
#define PG_TIMEOUT_MAX 2147483.0 /* statement_timeout is an int of milliseconds in PostgreSQL */
#define DUP_DEPTH_MAX 64         /* json-c stops at 32 levels before the duplicate check runs */

enum cf_type {
    CF_STRING, /* char *; CF_NONEMPTY, CF_READABLE (a path that must be readable) */
    CF_INT,    /* int, in [imin, imax]; CF_STR_OK: a numeric string is accepted too */
    CF_LONG,   /* long, in [imin, imax] */
    CF_NUMBER, /* double, > dmin (CF_GT) or >= dmin, and <= dmax */
    CF_BOOL,   /* bool; CF_STR_OK: "true"/"false" are accepted too */
    CF_STRLIST /* NULL-terminated char **; CF_NONEMPTY: elements must be non-empty */
};

enum {
    CF_REQUIRED = 1 << 0, /* no default: the key must be present */
    CF_NONEMPTY = 1 << 1, /* strings (or list elements) must not be "" */
    CF_STR_OK = 1 << 2,   /* the value may also be given as a string (original connector) */
    CF_SECRET = 1 << 3,   /* never quote the value in a message */
    CF_READABLE = 1 << 4, /* a path that must name a readable regular file */
    CF_GT = 1 << 5,       /* numbers: strictly greater than dmin */
};

struct cf_key;
typedef int (*cf_check_fn)(const struct cf_key *k, struct config *c, char *err, size_t errlen);

struct cf_key {
    const char *name;
    enum cf_type type;
    size_t off;      /* offset of the field in struct config */
    const char *def; /* default as JSON text; NULL: no default (field stays NULL/0) */
    unsigned flags;
    long long imin, imax; /* CF_INT, CF_LONG */
    double dmin, dmax;    /* CF_NUMBER */
    size_t maxlen;        /* CF_STRING: 0 = unlimited */
    cf_check_fn check;    /* optional extra rule, run after the value is stored */
};

static int check_host(const struct cf_key *k, struct config *c, char *err, size_t errlen);
static int check_listen(const struct cf_key *k, struct config *c, char *err, size_t errlen);
static int check_log_level(const struct cf_key *k, struct config *c, char *err, size_t errlen);
static int check_postgres(const struct cf_key *k, struct config *c, char *err, size_t errlen);
static int check_log_format(const struct cf_key *k, struct config *c, char *err, size_t errlen);

/* clang-format off */
#define F(field) offsetof(struct config, field)
#define STR(name, field, def, flags, check) {name, CF_STRING, F(field), def, flags, 0, 0, 0, 0, 0, check}
#define INT(name, field, def, flags, lo, hi) {name, CF_INT, F(field), def, flags, lo, hi, 0, 0, 0, NULL}
#define LONG(name, field, def, lo, hi) {name, CF_LONG, F(field), def, 0, lo, hi, 0, 0, 0, NULL}
#define NUM(name, field, def, flags, lo) {name, CF_NUMBER, F(field), def, flags, 0, 0, lo, SECONDS_MAX, 0, NULL}
#define BOOL(name, field, def, flags) {name, CF_BOOL, F(field), def, flags, 0, 0, 0, 0, 0, NULL}
#define LIST(name, field, def, flags) {name, CF_STRLIST, F(field), def, flags, 0, 0, 0, 0, 0, NULL}

static const struct cf_key cf_keys[] = {
    /* Druid: the first five keys are the original connector's */
    STR ("druid_host",              druid_host,              NULL,        CF_REQUIRED | CF_NONEMPTY, check_host),
    INT ("druid_port",              druid_port,              "8888",      CF_STR_OK, 1, 65535),
    STR ("schema_name",             schema_name,             "\"druid\"", CF_NONEMPTY, NULL),
    STR ("incremental_column",      incremental_column,      "\"__time\"", CF_NONEMPTY, NULL),
    BOOL("use_ssl",                 use_ssl,                 "false",     CF_STR_OK),
    STR ("druid_username",          druid_username,          NULL,        CF_NONEMPTY, NULL),
    STR ("druid_password",          druid_password,          NULL,        CF_SECRET, NULL),
    STR ("druid_password_file",     druid_password_file,     NULL,        CF_NONEMPTY, NULL),
    STR ("tls_ca_file",             tls_ca_file,             NULL,        CF_NONEMPTY | CF_READABLE, NULL),
    BOOL("tls_verify",              tls_verify,              "true",      0),
    /* PostgreSQL */
    STR ("postgres",                postgres,                "\"\"",      0, check_postgres),
    STR ("destination_schema",      destination_schema,      "\"druid\"", CF_NONEMPTY, NULL),
    {"postgres_timeout_seconds", CF_NUMBER, F(postgres_timeout_seconds), "600", 0,
     0, 0, 0.001, PG_TIMEOUT_MAX, 0, NULL}, /* >= 1 ms: 0 ms would mean no limit */
    /* selection */
    LIST("datasources",             datasources,             NULL,        CF_NONEMPTY),
    LIST("exclude_datasources",     exclude_datasources,     "[]",        0),
    /* pacing */
    NUM ("sync_interval_seconds",   sync_interval_seconds,   "60",        CF_GT, 0),
    LONG("batch_size",              batch_size,              "50000",     1, LONG_MAX),
    INT ("max_concurrent_queries",  max_concurrent_queries,  "4",         0, 1, 256),
    NUM ("request_timeout_seconds", request_timeout_seconds, "300",       CF_GT, 0),
    NUM ("connect_timeout_seconds", connect_timeout_seconds, "10",        CF_GT, 0),
    NUM ("lookback_seconds",        lookback_seconds,        "0",         0, 0),
    BOOL("soft_deletes",            soft_deletes,            "true",      0),
    BOOL("follow_drops",            follow_drops,            "true",      0),
    NUM ("realtime_reread_seconds", realtime_reread_seconds, "600",       0, 0),
    {"metadata_column_prefix", CF_STRING, F(metadata_column_prefix), "\"_druid_\"", CF_NONEMPTY,
     0, 0, 0, 0, PREFIX_MAX, NULL},
    /* additions beyond SPEC 2 */
    INT ("max_retries",             max_retries,             "5",         0, 0, 1000),
    NUM ("retry_initial_seconds",   retry_initial_seconds,   "1",         CF_GT, 0),
    NUM ("retry_max_seconds",       retry_max_seconds,       "60",        CF_GT, 0),
    STR ("log_level",               log_level,               NULL,        CF_NONEMPTY, check_log_level),
    NUM ("shutdown_timeout_seconds", shutdown_timeout_seconds, "30",      CF_GT, 0),
    STR ("metrics_listen",          metrics_listen,          NULL,        CF_NONEMPTY, check_listen),
    INT ("postgres_writers",        postgres_writers,        "2",         0, 1, 64),
    STR ("log_format",              log_format,              "\"text\"",  CF_NONEMPTY, check_log_format),
    NUM ("lease_seconds",           lease_seconds,           "30",        CF_GT, 0),
    {"instance_name", CF_STRING, F(instance_name), NULL, CF_NONEMPTY, 0, 0, 0, 0, 128, NULL},
};
/* clang-format on */

#define N_KEYS (sizeof cf_keys / sizeof cf_keys[0])

/* ---- messages ---- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* What was found, for "expected X, got Y". Secrets show only their type. */
static void describe(const json_object *v, bool secret, char *out, size_t n)
{
    switch (json_object_get_type(v)) {
    case json_type_null:
        snprintf(out, n, "null");
        return;
    case json_type_array:
        snprintf(out, n, "an array");
        return;
    case json_type_object:
        snprintf(out, n, "an object");
        return;
    case json_type_string:
        if (secret) {
            snprintf(out, n, "a string");
            return;
        }
        break;
    case json_type_boolean:
    case json_type_int:
    case json_type_double:
        if (secret) {
            snprintf(out, n, "a %s",
                     json_object_is_type(v, json_type_boolean) ? "boolean" : "number");
            return;
        }
        break;
    }
    const char *s = json_object_to_json_string_ext(
        (json_object *)v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t len = strlen(s);
    if (len > GOT_MAX)
        snprintf(out, n, "%.*s...", GOT_MAX, s);
    else
        snprintf(out, n, "%s", s);
}

static void expected(const struct cf_key *k, char *out, size_t n)
{
    switch (k->type) {
    case CF_STRING:
        if (k->maxlen)
            snprintf(out, n, "a non-empty string of at most %zu bytes", k->maxlen);
        else
            snprintf(out, n, "%s", (k->flags & CF_NONEMPTY) ? "a non-empty string" : "a string");
        break;
    case CF_INT:
    case CF_LONG:
        if (k->imax == LONG_MAX || k->imax == INT_MAX)
            snprintf(out, n, "an integer >= %lld", k->imin);
        else
            snprintf(out, n, "an integer between %lld and %lld", k->imin, k->imax);
        break;
    case CF_NUMBER:
        snprintf(out, n, "a number %s %g", (k->flags & CF_GT) ? ">" : ">=", k->dmin);
        break;
    case CF_BOOL:
        snprintf(out, n, "%s",
                 (k->flags & CF_STR_OK) ? "true, false, \"true\" or \"false\"" : "true or false");
        break;
    case CF_STRLIST:
        snprintf(out, n, "%s",
                 (k->flags & CF_NONEMPTY) ? "an array of non-empty strings"
                                          : "an array of strings");
        break;
    }
}

static int type_error(const struct cf_key *k, const json_object *v, char *err, size_t errlen)
{
    char exp[128], got[GOT_MAX + 16];
    expected(k, exp, sizeof exp);
    describe(v, k->flags & CF_SECRET, got, sizeof got);
    seterr(err, errlen, "%s: expected %s, got %s", k->name, exp, got);
    return -1;
}

/* A name from the file (a key) as it may be quoted in a message: one line, no control
 * characters (log_sanitize's rule), at most GOT_MAX bytes plus "...". */
static void shown_name(const char *name, char *out, size_t n)
{
    if (log_sanitize(out, n > GOT_MAX + 1 ? GOT_MAX + 1 : n, name) > GOT_MAX && n > GOT_MAX + 3)
        strcat(out, "...");
}

/* Appends one warning to c->warnings. */
static void add_warning(struct config *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add_warning(struct config *c, const char *fmt, ...)
{
    size_t n = 0;
    while (c->warnings[n])
        n++;
    char **more = realloc(c->warnings, (n + 2) * sizeof *more);
    if (!more)
        abort();
    c->warnings = more;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&more[n], fmt, ap);
    va_end(ap);
    if (r < 0)
        abort();
    more[n + 1] = NULL;
}

/* ---- reading values ---- */

/* A JSON string as a C string; NULL if it holds a NUL byte (it could not be used safely). */
static const char *string_of(const json_object *v)
{
    const char *s = json_object_get_string((json_object *)v);
    if ((size_t)json_object_get_string_len(v) != strlen(s))
        return NULL;
    return s;
}

/* An integral value: JSON integers, integral doubles (10.0, 1e3) and, with str_ok, a string
 * of decimal digits. 0 on success; -1 if v is not an integer at all; 1 if it is one but
 * does not fit in a long long (reported as out of range). */
static int integer_of(const json_object *v, bool str_ok, long long *out)
{
    switch (json_object_get_type(v)) {
    case json_type_int: {
        int64_t i = json_object_get_int64(v);
        if (i == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX)
            return 1;
        *out = i;
        return 0;
    }
    case json_type_double: {
        double d = json_object_get_double(v);
        if (!isfinite(d) || d != floor(d))
            return -1;
        if (d < -9.2e18 || d > 9.2e18)
            return 1;
        *out = (long long)d;
        return 0;
    }
    case json_type_string: {
        const char *s = string_of(v);
        if (!str_ok || !s || !*s || strlen(s) > 18)
            return -1;
        for (const char *p = s; *p; p++)
            if (!isdigit((unsigned char)*p))
                return -1;
        *out = strtoll(s, NULL, 10);
        return 0;
    }
    default:
        return -1;
    }
}

static int set_string(const struct cf_key *k, struct config *c, const json_object *v, char *err,
                      size_t errlen)
{
    if (!json_object_is_type(v, json_type_string))
        return type_error(k, v, err, errlen);
    const char *s = string_of(v);
    if (!s) {
        seterr(err, errlen, "%s: the string contains a NUL character", k->name);
        return -1;
    }
    if ((k->flags & CF_NONEMPTY) && !*s) {
        seterr(err, errlen, "%s: expected a non-empty string, got \"\"", k->name);
        return -1;
    }
    if (k->maxlen && strlen(s) > k->maxlen) {
        seterr(err, errlen, "%s: expected a non-empty string of at most %zu bytes, got %zu bytes",
               k->name, k->maxlen, strlen(s));
        return -1;
    }
    if (k->flags & CF_READABLE) {
        int fd = open(s, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0) {
            seterr(err, errlen, "%s: cannot read \"%s\": %s", k->name, s, strerror(errno));
            return -1;
        }
        int bad = fstat(fd, &st) != 0 || !S_ISREG(st.st_mode);
        close(fd);
        if (bad) {
            seterr(err, errlen, "%s: \"%s\" is not a regular file", k->name, s);
            return -1;
        }
    }
    char *copy = strdup(s);
    if (!copy)
        abort();
    *(char **)((char *)c + k->off) = copy;
    return 0;
}

static int set_integer(const struct cf_key *k, struct config *c, const json_object *v, char *err,
                       size_t errlen)
{
    long long i = 0;
    int r = integer_of(v, k->flags & CF_STR_OK, &i);
    if (r != 0 || i < k->imin || i > k->imax)
        return type_error(k, v, err, errlen);
    if (k->type == CF_INT)
        *(int *)((char *)c + k->off) = (int)i;
    else
        *(long *)((char *)c + k->off) = (long)i;
    return 0;
}

static int set_number(const struct cf_key *k, struct config *c, const json_object *v, char *err,
                      size_t errlen)
{
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return type_error(k, v, err, errlen);
    double d = json_object_get_double(v);
    if (!isfinite(d) || ((k->flags & CF_GT) ? d <= k->dmin : d < k->dmin))
        return type_error(k, v, err, errlen);
    if (d > k->dmax) {
        char got[GOT_MAX + 16];
        describe(v, false, got, sizeof got);
        seterr(err, errlen, "%s: expected a number of seconds no larger than %.0f, got %s", k->name,
               k->dmax, got);
        return -1;
    }
    *(double *)((char *)c + k->off) = d;
    return 0;
}

static int set_bool(const struct cf_key *k, struct config *c, const json_object *v, char *err,
                    size_t errlen)
{
    bool b;
    if (json_object_is_type(v, json_type_boolean)) {
        b = json_object_get_boolean(v);
    } else if ((k->flags & CF_STR_OK) && json_object_is_type(v, json_type_string) && string_of(v) &&
               (strcasecmp(string_of(v), "true") == 0 || strcasecmp(string_of(v), "false") == 0)) {
        b = strcasecmp(string_of(v), "true") == 0;
    } else {
        return type_error(k, v, err, errlen);
    }
    *(bool *)((char *)c + k->off) = b;
    return 0;
}

static void free_list(char **l)
{
    if (!l)
        return;
    for (char **p = l; *p; p++)
        free(*p);
    free(l);
}

static int set_list(const struct cf_key *k, struct config *c, const json_object *v, char *err,
                    size_t errlen)
{
    if (!json_object_is_type(v, json_type_array))
        return type_error(k, v, err, errlen);
    size_t n = json_object_array_length(v);
    if (n == 0 && (k->flags & CF_NONEMPTY)) {
        seterr(err, errlen,
               "%s: the list is empty and would select nothing; leave the key out to select "
               "every datasource",
               k->name);
        return -1;
    }
    char **l = calloc(n + 1, sizeof *l);
    if (!l)
        abort();
    for (size_t i = 0; i < n; i++) {
        const json_object *e = json_object_array_get_idx(v, i);
        const char *s = json_object_is_type(e, json_type_string) ? string_of(e) : NULL;
        if (!s || ((k->flags & CF_NONEMPTY) && !*s)) {
            char got[GOT_MAX + 16];
            describe(e, false, got, sizeof got);
            seterr(err, errlen, "%s: element %zu: expected a %sstring, got %s", k->name, i + 1,
                   (k->flags & CF_NONEMPTY) ? "non-empty " : "", got);
            free_list(l);
            return -1;
        }
        l[i] = strdup(s);
        if (!l[i])
            abort();
    }
    *(char ***)((char *)c + k->off) = l;
    return 0;
}

static int set_value(const struct cf_key *k, struct config *c, const json_object *v, char *err,
                     size_t errlen)
{
    int r = -1;
    switch (k->type) {
    case CF_STRING:
        r = set_string(k, c, v, err, errlen);
        break;
    case CF_INT:
    case CF_LONG:
        r = set_integer(k, c, v, err, errlen);
        break;
    case CF_NUMBER:
        r = set_number(k, c, v, err, errlen);
        break;
    case CF_BOOL:
        r = set_bool(k, c, v, err, errlen);
        break;
    case CF_STRLIST:
        r = set_list(k, c, v, err, errlen);
        break;
    }
    if (r == 0 && k->check)
        r = k->check(k, c, err, errlen);
    return r;
}

/* ---- extra checks ---- */

static int check_host(const struct cf_key *k, struct config *c, char *err, size_t errlen)
{
    const char *h = c->druid_host;
    if (strstr(h, "://") || strchr(h, '/')) {
        seterr(err, errlen,
               "%s: expected a host name or address, got \"%s\" (give the port in druid_port "
               "and HTTPS with use_ssl, not as a URL)",
               k->name, h);
        return -1;
    }
    for (const char *p = h; *p; p++) {
        if (isspace((unsigned char)*p)) {
            seterr(err, errlen,
                   "%s: expected a host name or address, got \"%s\" (contains white "
                   "space)",
                   k->name, h);
            return -1;
        }
    }
    return 0;
}

int config_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon)
        return -1;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl == 0) {
        /* ":PORT": every address (IPv4 and IPv6 where the host has it) */
        h = "::";
        hl = 2;
    }
    bool bracketed = h[0] == '[';
    if (bracketed) {
        if (hl < 3 || h[hl - 1] != ']')
            return -1;
        h++;
        hl -= 2;
    }
    if (hl + 1 > hostlen)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p < 1 || p > 65535)
        return -1;
    unsigned char addr[16];
    bool v6 = inet_pton(AF_INET6, host, addr) == 1;
    if (bracketed && !v6)
        return -1;
    if (!v6 && inet_pton(AF_INET, host, addr) != 1) {
        /* a host name (resolved when the listener starts): letters, digits, '-', '.' */
        if (hl > 253)
            return -1;
        for (size_t i = 0; i < hl; i++) {
            unsigned char ch = (unsigned char)host[i];
            if (!isalnum(ch) && ch != '-' && ch != '.')
                return -1;
        }
        if (host[0] == '-' || host[0] == '.')
            return -1;
    }
    *port = (int)p;
    return 0;
}

static int check_listen(const struct cf_key *k, struct config *c, char *err, size_t errlen)
{
    char host[256];
    int port;
    if (config_parse_listen(c->metrics_listen, host, sizeof host, &port) != 0) {
        seterr(err, errlen,
               "%s: expected \"host:port\", \"IP:port\", \"[IPv6]:port\" or \":port\" (every "
               "address), e.g. \"127.0.0.1:9187\" or \"localhost:9187\", got \"%s\"",
               k->name, c->metrics_listen);
        return -1;
    }
    return 0;
}

static int check_log_level(const struct cf_key *k, struct config *c, char *err, size_t errlen)
{
    enum log_level lvl;
    if (log_level_parse(c->log_level, &lvl) != 0) {
        seterr(err, errlen,
               "%s: expected \"error\", \"warning\", \"info\" or \"debug\", got \"%s\"", k->name,
               c->log_level);
        return -1;
    }
    return 0;
}

static int check_log_format(const struct cf_key *k, struct config *c, char *err, size_t errlen)
{
    if (strcmp(c->log_format, "text") != 0 && strcmp(c->log_format, "json") != 0) {
        seterr(err, errlen, "%s: expected \"text\" or \"json\", got \"%s\"", k->name,
               c->log_format);
        return -1;
    }
    return 0;
}

/* libpq's message may quote a token of the string, which may be a piece of a password:
 * when the string mentions a password, quoted parts are replaced by "...". */
static void redact_quoted(char *msg, size_t cap, bool has_secret)
{
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    if (!has_secret)
        return;
    char out[512];
    size_t o = 0;
    bool in = false;
    for (const char *p = msg; *p && o + 4 < sizeof out; p++) {
        if (*p == '"') {
            if (!in) {
                memcpy(out + o, "\"...\"", 5);
                o += 5;
            }
            in = !in;
        } else if (!in) {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    snprintf(msg, cap, "%s", out);
}

/* Is every entry of a port list ("5432" or "5432,5433,") a port number? libpq's parser
 * accepts any text there and fails only when it connects. */
static bool port_list_ok(const char *v)
{
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len) { /* an empty entry means the default port */
            if (len > 5)
                return false;
            long port = 0;
            for (size_t i = 0; i < len; i++) {
                if (p[i] < '0' || p[i] > '9')
                    return false;
                port = port * 10 + (p[i] - '0');
            }
            if (port < 1 || port > 65535)
                return false;
        }
        if (!comma)
            return true;
        p = comma + 1;
    }
}

/* The connection string is parsed by libpq itself, so that --check-config catches what
 * would otherwise fail only at run time (and restart-loop under systemd). */
static int check_postgres(const struct cf_key *k, struct config *c, char *err, size_t errlen)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(c->postgres, &errmsg);
    bool secret = strcasestr(c->postgres, "password") || strchr(c->postgres, '@');
    if (!opts) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", errmsg ? errmsg : "out of memory");
        if (errmsg) {
            explicit_bzero(errmsg, strlen(errmsg));
            PQfreemem(errmsg);
        }
        redact_quoted(msg, sizeof msg, secret);
        seterr(err, errlen, "%s: libpq cannot parse the connection string: %s", k->name, msg);
        return -1;
    }
    int rc = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "port") == 0 && !port_list_ok(o->val)) {
            seterr(err, errlen, "%s: port: expected a port number (1-65535), got \"%.64s\"",
                   k->name, o->val);
            rc = -1;
        }
        if (strcmp(o->keyword, "password") == 0)
            explicit_bzero(o->val, strlen(o->val));
    }
    PQconninfoFree(opts);
    return rc;
}

/* ---- unknown keys ---- */

/* Optimal string alignment distance (a transposition counts as one edit), ignoring case. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    size_t d[65][65];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int same = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]);
            size_t best = d[i - 1][j - 1] + !same;
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

static const struct cf_key *find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(cf_keys[i].name, name) == 0)
            return &cf_keys[i];
    return NULL;
}

static void unknown_key(const char *name, char *err, size_t errlen)
{
    const char *best = NULL;
    size_t best_d = 3; /* suggest only within distance 2 */
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t d = edit_distance(name, cf_keys[i].name);
        if (d < best_d) {
            best_d = d;
            best = cf_keys[i].name;
        }
    }
    char shown[GOT_MAX + 4];
    shown_name(name, shown, sizeof shown);
    if (best)
        seterr(err, errlen, "unknown key \"%s\" (did you mean \"%s\"?)", shown, best);
    else
        seterr(err, errlen, "unknown key \"%s\"", shown);
}

/* ---- secrets ---- */

static void scrub_free(char *s)
{
    if (!s)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* Reads a whole (small) file. Returns 0 and *out (NUL-terminated, *len bytes) and *mode
 * (st_mode of the file read, for the permission warnings); -1 with errno set, or EFBIG when
 * it is larger than max. */
static int read_file(const char *path, size_t max, char **out, size_t *len, mode_t *mode)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        errno = EISDIR;
        return -1;
    }
    *mode = st.st_mode;
    size_t cap = 4096, n = 0;
    char *data = malloc(cap + 1);
    if (!data)
        abort();
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                explicit_bzero(data, n);
                free(data);
                close(fd);
                errno = EFBIG;
                return -1;
            }
            char *bigger = malloc(cap * 2 + 1);
            if (!bigger)
                abort();
            memcpy(bigger, data, n);
            explicit_bzero(data, n);
            free(data);
            data = bigger;
            cap *= 2;
        }
        ssize_t r = read(fd, data + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            explicit_bzero(data, n);
            free(data);
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (n > max) {
        explicit_bzero(data, n);
        free(data);
        errno = EFBIG;
        return -1;
    }
    data[n] = '\0';
    *out = data;
    *len = n;
    return 0;
}

/* Reads a password from path into *out: trailing newlines stripped, not empty, no NUL. The
 * message names what (a key, or the credential). */
static int read_secret(const char *what, const char *path, char **out, mode_t *mode, char *err,
                       size_t errlen)
{
    char *data;
    size_t n;
    if (read_file(path, SECRET_MAX_FILE, &data, &n, mode) != 0) {
        seterr(err, errlen, "%s: cannot read \"%s\": %s", what, path,
               errno == EFBIG ? "file too large for a password" : strerror(errno));
        return -1;
    }
    while (n > 0 && (data[n - 1] == '\n' || data[n - 1] == '\r'))
        data[--n] = '\0';
    const char *problem = NULL;
    if (n == 0)
        problem = "the file is empty";
    else if (strlen(data) != n)
        problem = "the file contains a NUL byte";
    if (problem) {
        seterr(err, errlen, "%s: \"%s\": %s", what, path, problem);
        explicit_bzero(data, n);
        free(data);
        return -1;
    }
    *out = data;
    return 0;
}

/* ---- rules over several keys ---- */

static int finish(struct config *c, char *err, size_t errlen)
{
    bool from_credential = false;
    if (c->druid_password && c->druid_password_file) {
        seterr(err, errlen,
               "druid_password_file: druid_password is set as well; give the password one way "
               "only");
        return -1;
    }
    if (c->druid_password_file) {
        mode_t mode;
        if (read_secret("druid_password_file", c->druid_password_file, &c->druid_password, &mode,
                        err, errlen) != 0)
            return -1;
        if (mode & (S_IRGRP | S_IROTH))
            add_warning(c,
                        "druid_password_file: \"%s\" is readable by group or others (mode "
                        "%04o); make it readable by its owner only (chmod 600)",
                        c->druid_password_file, (unsigned)(mode & 07777));
    } else if (!c->druid_password) {
        /* systemd LoadCredential=druid_password:... */
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        if (dir && *dir) {
            struct buf path = BUF_INIT;
            buf_printf(&path, "%s/druid_password", dir);
            int r = 0;
            mode_t mode; /* systemd makes credentials private to the service */
            if (access(path.data, F_OK) == 0)
                r = read_secret("druid_password (systemd credential)", path.data,
                                &c->druid_password, &mode, err, errlen);
            buf_free(&path);
            if (r != 0)
                return -1;
            from_credential = c->druid_password != NULL;
        }
    }
    if ((c->druid_password_file || (c->druid_password && !from_credential)) && !c->druid_username) {
        seterr(err, errlen, "druid_username: required when %s is set",
               c->druid_password_file ? "druid_password_file" : "druid_password");
        return -1;
    }
    if (c->retry_max_seconds < c->retry_initial_seconds) {
        seterr(err, errlen,
               "retry_max_seconds: expected a number >= retry_initial_seconds (%g), got %g",
               c->retry_initial_seconds, c->retry_max_seconds);
        return -1;
    }
    return 0;
}

/* ---- warnings about the configuration file ---- */

/* Does the libpq connection string (key=value or URI) carry a password? libpq's own parser
 * decides. A string it cannot parse gives no answer here (connecting reports it). */
static bool conninfo_has_password(const char *conninfo)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
    if (!opts) {
        if (errmsg) { /* it may quote a piece of the string */
            explicit_bzero(errmsg, strlen(errmsg));
            PQfreemem(errmsg);
        }
        return false;
    }
    bool found = false;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val && strcmp(o->keyword, "password") == 0) {
            found = *o->val != '\0';
            explicit_bzero(o->val, strlen(o->val));
        }
    }
    PQconninfoFree(opts);
    return found;
}

/* path (mode) was read and holds c: warn when it holds a password others can read. */
static void warn_readable(struct config *c, const char *path, mode_t mode, bool pw_in_file)
{
    if (!(mode & (S_IRGRP | S_IROTH)))
        return;
    unsigned m = (unsigned)(mode & 07777);
    if (pw_in_file)
        add_warning(c,
                    "%s: the file holds druid_password and is readable by group or others (mode "
                    "%04o); make it readable by its owner only (chmod 600), or give the password "
                    "in druid_password_file or the systemd credential druid_password",
                    path, m);
    if (conninfo_has_password(c->postgres))
        add_warning(c,
                    "%s: the file holds a PostgreSQL password in postgres and is readable by "
                    "group or others (mode %04o); make it readable by its owner only (chmod "
                    "600), or move the password to a libpq password file (PGPASSFILE, or the "
                    "systemd credential pgpass)",
                    path, m);
}

/* ---- duplicate keys ----
 * A yajl event parser walks the text json-c has already accepted and keeps, per open
 * object, the set of keys seen so far (a json-c object used as a hash set), so that the
 * first repeated key can be reported with its line and path. */

struct dup_frame {
    json_object *keys; /* an object: the keys seen so far; NULL for an array */
    char *key;         /* an object: the current key */
    long idx;          /* an array: index of the current element (-1 before the first) */
};

struct dup_ctx {
    yajl_handle h;
    struct dup_frame st[DUP_DEPTH_MAX];
    size_t depth;
    char *dup;     /* the repeated key's path, once found */
    size_t offset; /* where it was found */
    bool too_deep;
};

/* Every value (scalar, object or array) counts as one element of an enclosing array. */
static int dup_value(void *ud)
{
    struct dup_ctx *d = ud;
    if (d->depth > 0 && !d->st[d->depth - 1].keys)
        d->st[d->depth - 1].idx++;
    return 1;
}

static int dup_bool(void *ud, int b)
{
    (void)b;
    return dup_value(ud);
}

static int dup_number(void *ud, const char *s, size_t n)
{
    (void)s;
    (void)n;
    return dup_value(ud);
}

static int dup_string(void *ud, const unsigned char *s, size_t n)
{
    (void)s;
    (void)n;
    return dup_value(ud);
}

static int dup_push(struct dup_ctx *d, bool object)
{
    dup_value(d);
    if (d->depth == DUP_DEPTH_MAX) {
        d->too_deep = true;
        return 0;
    }
    struct dup_frame *f = &d->st[d->depth++];
    f->keys = object ? json_object_new_object() : NULL;
    if (object && !f->keys)
        abort();
    f->key = NULL;
    f->idx = -1;
    return 1;
}

static int dup_start_map(void *ud)
{
    return dup_push(ud, true);
}

static int dup_start_array(void *ud)
{
    return dup_push(ud, false);
}

static int dup_pop(void *ud)
{
    struct dup_ctx *d = ud;
    struct dup_frame *f = &d->st[--d->depth];
    json_object_put(f->keys);
    free(f->key);
    return 1;
}

static int dup_key(void *ud, const unsigned char *key, size_t n)
{
    struct dup_ctx *d = ud;
    struct dup_frame *f = &d->st[d->depth - 1];
    free(f->key);
    f->key = strndup((const char *)key, n); /* json-c too ends a key at a NUL */
    if (!f->key)
        abort();
    if (!json_object_object_get_ex(f->keys, f->key, NULL)) {
        if (json_object_object_add(f->keys, f->key, NULL) != 0)
            abort();
        return 1;
    }
    /* the path: keys of the enclosing objects, indexes of the enclosing arrays */
    struct buf path = BUF_INIT;
    for (size_t i = 0; i < d->depth; i++) {
        const struct dup_frame *e = &d->st[i];
        if (e->keys)
            buf_printf(&path, "%s%s", path.len ? "." : "", e->key);
        else
            buf_printf(&path, "[%ld]", e->idx);
    }
    d->dup = buf_steal(&path);
    d->offset = yajl_get_bytes_consumed(d->h);
    return 0; /* stops the parse */
}

/* yajl's buffers may hold a decoded secret: overwrite them before they go back. */
static void *dup_malloc(void *ud, size_t n)
{
    (void)ud;
    return malloc(n);
}

static void dup_free(void *ud, void *p)
{
    (void)ud;
    if (p)
        explicit_bzero(p, malloc_usable_size(p));
    free(p);
}

static void *dup_realloc(void *ud, void *p, size_t n)
{
    void *q = malloc(n);
    if (q && p) {
        size_t old = malloc_usable_size(p);
        memcpy(q, p, old < n ? old : n);
        dup_free(ud, p);
    }
    return q;
}

/* Line and column (from 1) of byte off of text. */
static void position(const char *text, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            ++*line;
            *col = 1;
        } else {
            ++*col;
        }
    }
}

/* text is what json-c accepted. 0: it is JSON (RFC 8259) and no object repeats a key. -1:
 * a key is repeated (before any problem of the next kind); the message names it. 1: it is
 * not strict JSON although json-c took it (NaN, Infinity, 'single quotes', a raw control
 * character in a string, "1."); the message is the syntax error, and keys after that point
 * went unchecked. */
static int check_duplicates(const char *text, size_t len, char *err, size_t errlen)
{
    static const yajl_callbacks cb = {
        .yajl_null = dup_value,
        .yajl_boolean = dup_bool,
        .yajl_number = dup_number, /* raw text: no range checks, json-c did those */
        .yajl_string = dup_string,
        .yajl_start_map = dup_start_map,
        .yajl_map_key = dup_key,
        .yajl_end_map = dup_pop,
        .yajl_start_array = dup_start_array,
        .yajl_end_array = dup_pop,
    };
    yajl_alloc_funcs af = {dup_malloc, dup_realloc, dup_free, NULL};
    struct dup_ctx d = {0};
    d.h = yajl_alloc(&cb, &af, &d);
    if (!d.h)
        abort();
    yajl_status st = yajl_parse(d.h, (const unsigned char *)text, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(d.h);
    int r = 0;
    size_t line, col;
    if (d.dup) {
        char shown[GOT_MAX + 4];
        shown_name(d.dup, shown, sizeof shown);
        position(text, d.offset, &line, &col);
        seterr(err, errlen,
               "line %zu: duplicate key \"%s\" (JSON keeps only one of the values; give each key "
               "once)",
               line, shown);
        r = -1;
    } else if (d.too_deep) {
        seterr(err, errlen, "the configuration is nested more than %d levels deep", DUP_DEPTH_MAX);
        r = -1;
    } else if (st != yajl_status_ok) {
        unsigned char *msg = yajl_get_error(d.h, 0, (const unsigned char *)text, len);
        size_t off = yajl_get_bytes_consumed(d.h);
        char clean[256];
        log_sanitize(clean, sizeof clean, msg ? (const char *)msg : "?");
        size_t n = strlen(clean);
        while (n >= 2 && strcmp(clean + n - 2, "\\n") == 0) /* yajl ends it with a newline */
            clean[n -= 2] = '\0';
        if (n > 0 && clean[n - 1] == '.')
            clean[--n] = '\0';
        position(text, off < len ? off : len, &line, &col);
        seterr(err, errlen, "line %zu: JSON syntax error: %s (column %zu)", line, clean, col);
        if (msg)
            yajl_free_error(d.h, msg);
        r = 1;
    }
    while (d.depth > 0)
        dup_pop(&d);
    free(d.dup);
    yajl_free(d.h);
    return r;
}

/* ---- entry points ---- */

/* Validates a parsed document. Owns nothing of root. path and mode: the file it was read
 * from (NULL when it came from memory), for the warnings. */
static struct config *build(json_object *root, const char *path, mode_t mode, char *err,
                            size_t errlen)
{
    if (!json_object_is_type(root, json_type_object)) {
        char got[GOT_MAX + 16];
        describe(root, true, got, sizeof got);
        seterr(err, errlen, "the top level must be a JSON object, got %s", got);
        return NULL;
    }
    struct json_object_iterator it = json_object_iter_begin(root);
    struct json_object_iterator end = json_object_iter_end(root);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *name = json_object_iter_peek_name(&it);
        if (!find_key(name)) {
            unknown_key(name, err, errlen);
            return NULL;
        }
    }

    struct config *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->warnings = calloc(1, sizeof *c->warnings);
    if (!c->warnings)
        abort();
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct cf_key *k = &cf_keys[i];
        json_object *v;
        int r;
        if (json_object_object_get_ex(root, k->name, &v)) {
            r = set_value(k, c, v, err, errlen);
        } else if (k->flags & CF_REQUIRED) {
            seterr(err, errlen, "%s: required key is missing", k->name);
            r = -1;
        } else if (k->def) {
            json_object *d = json_tokener_parse(k->def);
            if (!d)
                abort(); /* a broken default is a bug in cf_keys[] */
            r = set_value(k, c, d, err, errlen);
            json_object_put(d);
        } else {
            r = 0;
        }
        if (r != 0) {
            config_free(c);
            return NULL;
        }
    }
    bool pw_in_file = c->druid_password && *c->druid_password; /* before finish() adds others */
    if (finish(c, err, errlen) != 0) {
        config_free(c);
        return NULL;
    }
    if (path)
        warn_readable(c, path, mode, pw_in_file);
    return c;
}

/* Overwrites the secret strings of the document before it is freed. */
static void scrub_secrets(json_object *root)
{
    if (!json_object_is_type(root, json_type_object))
        return;
    for (size_t i = 0; i < N_KEYS; i++) {
        json_object *v;
        if ((cf_keys[i].flags & CF_SECRET) &&
            json_object_object_get_ex(root, cf_keys[i].name, &v) &&
            json_object_is_type(v, json_type_string)) {
            explicit_bzero((char *)json_object_get_string(v),
                           (size_t)json_object_get_string_len(v));
        }
    }
}

static struct config *parse_len(const char *text, size_t len, const char *path, mode_t mode,
                                char *err, size_t errlen)
{
    if (len > INT_MAX - 1) {
        seterr(err, errlen, "the configuration is too large");
        return NULL;
    }
    if (strlen(text) != len) {
        size_t off = strlen(text), line = 1;
        for (size_t i = 0; i < off; i++)
            line += text[i] == '\n';
        seterr(err, errlen, "line %zu: JSON syntax error: NUL byte in the text", line);
        return NULL;
    }
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    /* len + 1: the terminating NUL ends a number at the very end of the text */
    json_object *root = json_tokener_parse_ex(tok, text, (int)len + 1);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (!root && jerr != json_tokener_success) { /* (a JSON null is NULL with success) */
        size_t off = json_tokener_get_parse_end(tok), line, col;
        position(text, off < len ? off : len, &line, &col);
        if (jerr == json_tokener_continue)
            seterr(err, errlen, "line %zu: JSON syntax error: unexpected end of data", line);
        else
            seterr(err, errlen, "line %zu: JSON syntax error: %s (column %zu)", line,
                   json_tokener_error_desc(jerr), col);
        json_tokener_free(tok);
        return NULL;
    }
    json_tokener_free(tok);
    char syntax[512];
    struct config *c = NULL;
    int d = check_duplicates(text, len, syntax, sizeof syntax);
    if (d < 0) {
        seterr(err, errlen, "%s", syntax);
    } else {
        c = build(root, path, mode, err, errlen);
        if (c && d > 0) {
            /* Not JSON, yet every value json-c made of it was accepted: report the syntax.
             * When build() fails instead, its message names the key (e.g. a NaN port). */
            config_free(c);
            c = NULL;
            seterr(err, errlen, "%s", syntax);
        }
    }
    scrub_secrets(root);
    json_object_put(root);
    return c;
}

struct config *config_parse(const char *json_text, char *err, size_t errlen)
{
    if (!json_text) {
        seterr(err, errlen, "no configuration text");
        return NULL;
    }
    return parse_len(json_text, strlen(json_text), NULL, 0, err, errlen);
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
    if (!path) {
        seterr(err, errlen, "no configuration file given");
        return NULL;
    }
    char *text;
    size_t len;
    mode_t mode;
    if (read_file(path, CONFIG_MAX_FILE, &text, &len, &mode) != 0) {
        seterr(err, errlen, "%s: cannot read: %s", path,
               errno == EFBIG ? "file too large" : strerror(errno));
        return NULL;
    }
    char msg[1024] = "";
    struct config *c = parse_len(text, len, path, mode, msg, sizeof msg);
    explicit_bzero(text, len);
    free(text);
    if (!c)
        seterr(err, errlen, "%s: %s", path, msg);
    return c;
}

void config_free(struct config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct cf_key *k = &cf_keys[i];
        void *field = (char *)c + k->off;
        if (k->type == CF_STRING && k->off != F(druid_password))
            free(*(char **)field);
        else if (k->type == CF_STRLIST)
            free_list(*(char ***)field);
    }
    scrub_free(c->druid_password); /* also when it came from a file or credential */
    free_list(c->warnings);
    free(c);
}

bool config_selects(const struct config *c, const char *datasource)
{
    if (!c || !datasource)
        return false;
    if (c->datasources) {
        bool found = false;
        for (char **p = c->datasources; *p && !found; p++)
            found = strcmp(*p, datasource) == 0;
        if (!found)
            return false;
    }
    for (char **p = c->exclude_datasources; p && *p; p++)
        if (strcmp(*p, datasource) == 0)
            return false;
    return true;
}

void config_system_column(const struct config *c, const char *suffix, char *out, size_t outlen)
{
    if (!out || outlen == 0)
        return;
    const char *prefix = c && c->metadata_column_prefix ? c->metadata_column_prefix : "_druid_";
    snprintf(out, outlen, "%s%s", prefix, suffix ? suffix : "");
}
