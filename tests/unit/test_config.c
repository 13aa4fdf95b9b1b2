/* Unit tests for common/config.c (SPEC 2). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

static char err[1024];

/* Parses a JSON text built from fmt. */
static struct config *parsef(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static struct config *parsef(const char *fmt, ...)
{
    char text[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    err[0] = '\0';
    return config_parse(text, err, sizeof err);
}

/* {"druid_host":"h", <extra>} */
static struct config *with(const char *extra)
{
    return parsef("{\"druid_host\":\"h\"%s%s}", *extra ? "," : "", extra);
}

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        if (!strstr((hay), (needle)))                                                              \
            fail_msg("\"%s\" does not contain \"%s\"", (hay), (needle));                           \
    } while (0)

/* The key/value pair must be rejected with a message containing each of the needles. */
static void reject(const char *extra, const char *needle1, const char *needle2)
{
    struct config *c = with(extra);
    if (c) {
        config_free(c);
        fail_msg("accepted: %s", extra);
    }
    assert_contains(err, needle1);
    if (needle2)
        assert_contains(err, needle2);
}

static struct config *accept(const char *extra)
{
    struct config *c = with(extra);
    if (!c)
        fail_msg("rejected: %s: %s", extra, err);
    return c;
}

/* A temporary directory for files; removed by the test that made it. */
static void tmpdir(char *out, size_t n)
{
    snprintf(out, n, "/tmp/test_config.XXXXXX");
    assert_non_null(mkdtemp(out));
}

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    unsetenv("CREDENTIALS_DIRECTORY");
    return 0;
}

/* ---- defaults and the original connector ---- */

static void test_defaults(void **state)
{
    (void)state;
    struct config *c = with("");
    assert_non_null(c);
    assert_string_equal(c->druid_host, "h");
    assert_int_equal(c->druid_port, 8888);
    assert_string_equal(c->schema_name, "druid");
    assert_string_equal(c->incremental_column, "__time");
    assert_false(c->use_ssl);
    assert_null(c->druid_username);
    assert_null(c->druid_password);
    assert_null(c->druid_password_file);
    assert_null(c->tls_ca_file);
    assert_true(c->tls_verify);
    assert_string_equal(c->postgres, "");
    assert_string_equal(c->destination_schema, "druid");
    assert_null(c->datasources);
    assert_non_null(c->exclude_datasources);
    assert_null(c->exclude_datasources[0]);
    assert_true(c->sync_interval_seconds == 60.0);
    assert_int_equal(c->batch_size, 50000);
    assert_int_equal(c->max_concurrent_queries, 4);
    assert_true(c->request_timeout_seconds == 300.0);
    assert_true(c->lookback_seconds == 0.0);
    assert_true(c->soft_deletes);
    assert_string_equal(c->metadata_column_prefix, "_druid_");
    assert_int_equal(c->max_retries, 5);
    assert_true(c->retry_initial_seconds == 1.0);
    assert_true(c->retry_max_seconds == 60.0);
    assert_null(c->log_level);
    assert_true(c->postgres_timeout_seconds == 600.0);
    assert_int_equal(c->postgres_writers, 2);
    assert_string_equal(c->log_format, "text");
    assert_true(c->lease_seconds == 30.0);
    assert_null(c->instance_name);
    assert_true(c->connect_timeout_seconds == 10.0);
    assert_non_null(c->warnings);
    assert_null(c->warnings[0]);
    config_free(c);
}

static const char original[] = "{\"druid_host\":\"localhost\",\"druid_port\":\"8888\","
                               "\"schema_name\":\"druid\",\"incremental_column\":\"__time\","
                               "\"use_ssl\":\"false\"}";

static void test_original_connector(void **state)
{
    (void)state;
    struct config *c = config_parse(original, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    assert_string_equal(c->druid_host, "localhost");
    assert_int_equal(c->druid_port, 8888);
    assert_string_equal(c->schema_name, "druid");
    assert_string_equal(c->incremental_column, "__time");
    assert_false(c->use_ssl);
    config_free(c);
}

/* etc/ is found from this file's path: <root>/tests/unit/test_config.c */
static void etc_path(const char *name, char *out, size_t n)
{
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/test_config.c");
    if (cut && cut != f) {
        snprintf(out, n, "%.*setc/%s", (int)(cut - f), f, name);
    } else {
        const char *shared = getenv("DSYNC_SHARED_DATA");
        assert_non_null(shared);
        snprintf(out, n, "%s/../../main/etc/%s", shared, name);
    }
}

static void test_etc_config_json(void **state)
{
    (void)state;
    char path[PATH_MAX];
    etc_path("config.json", path, sizeof path);
    struct config *c = config_load(path, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    assert_string_equal(c->druid_host, "localhost");
    assert_int_equal(c->druid_port, 8888);
    assert_string_equal(c->postgres, "dbname=druid_sync");
    assert_true(c->postgres_timeout_seconds == 600.0);
    config_free(c);
}

static void test_etc_config_minimal_json(void **state)
{
    (void)state;
    char path[PATH_MAX];
    etc_path("config.minimal.json", path, sizeof path);
    struct config *c = config_load(path, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    assert_string_equal(c->druid_host, "localhost");
    assert_int_equal(c->druid_port, 8888);
    assert_false(c->use_ssl);
    config_free(c);
}

static void test_every_key_set(void **state)
{
    (void)state;
    struct config *c =
        accept("\"druid_port\":8082,\"schema_name\":\"s\",\"incremental_column\":\"ts\","
               "\"use_ssl\":true,\"druid_username\":\"u\",\"druid_password\":\"p\","
               "\"tls_verify\":false,\"postgres\":\"dbname=x\",\"destination_schema\":\"d\","
               "\"datasources\":[\"a\",\"b\"],\"exclude_datasources\":[\"b\"],"
               "\"sync_interval_seconds\":0.5,\"batch_size\":10,\"max_concurrent_queries\":256,"
               "\"request_timeout_seconds\":1.5,\"lookback_seconds\":3600,\"soft_deletes\":false,"
               "\"metadata_column_prefix\":\"_fivetran_\",\"max_retries\":0,"
               "\"retry_initial_seconds\":0.25,\"retry_max_seconds\":0.25,\"log_level\":\"debug\","
               "\"postgres_timeout_seconds\":30");
    assert_int_equal(c->druid_port, 8082);
    assert_string_equal(c->schema_name, "s");
    assert_string_equal(c->incremental_column, "ts");
    assert_true(c->use_ssl);
    assert_string_equal(c->druid_username, "u");
    assert_string_equal(c->druid_password, "p");
    assert_false(c->tls_verify);
    assert_string_equal(c->postgres, "dbname=x");
    assert_string_equal(c->destination_schema, "d");
    assert_string_equal(c->datasources[0], "a");
    assert_string_equal(c->datasources[1], "b");
    assert_null(c->datasources[2]);
    assert_string_equal(c->exclude_datasources[0], "b");
    assert_null(c->exclude_datasources[1]);
    assert_true(c->sync_interval_seconds == 0.5);
    assert_int_equal(c->batch_size, 10);
    assert_int_equal(c->max_concurrent_queries, 256);
    assert_true(c->request_timeout_seconds == 1.5);
    assert_true(c->lookback_seconds == 3600.0);
    assert_false(c->soft_deletes);
    assert_string_equal(c->metadata_column_prefix, "_fivetran_");
    assert_int_equal(c->max_retries, 0);
    assert_true(c->retry_initial_seconds == 0.25);
    assert_true(c->retry_max_seconds == 0.25);
    assert_string_equal(c->log_level, "debug");
    assert_true(c->postgres_timeout_seconds == 30.0);
    config_free(c);
}

/* ---- druid_host ---- */

static void test_druid_host(void **state)
{
    (void)state;
    assert_null(parsef("{}"));
    assert_contains(err, "druid_host: required key is missing");
    assert_null(parsef("{\"druid_port\":1}"));
    assert_contains(err, "druid_host: required key is missing");
    assert_null(parsef("{\"druid_host\":\"\"}"));
    assert_contains(err, "druid_host: expected a non-empty string");
    assert_null(parsef("{\"druid_host\":5}"));
    assert_contains(err, "druid_host: expected a non-empty string, got 5");
    assert_null(parsef("{\"druid_host\":null}"));
    assert_contains(err, "got null");
    assert_null(parsef("{\"druid_host\":[\"a\"]}"));
    assert_contains(err, "got an array");
    assert_null(parsef("{\"druid_host\":\"http://localhost:8888\"}"));
    assert_contains(err, "druid_host: expected a host name");
    assert_null(parsef("{\"druid_host\":\"a\\u0000b\"}"));
    assert_contains(err, "druid_host");
    struct config *c = parsef("{\"druid_host\":\"10.0.0.1\"}");
    assert_non_null(c);
    config_free(c);
    c = parsef("{\"druid_host\":\"[::1]\"}");
    assert_non_null(c);
    config_free(c);
}

/* ---- druid_port ---- */

static void test_druid_port_accepted(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int port;
    } ok[] = {
        {"8888", 8888},   {"\"8888\"", 8888},   {"8888.0", 8888}, {"1", 1},
        {"65535", 65535}, {"\"65535\"", 65535}, {"\"1\"", 1},     {"1e3", 1000},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct config *c = parsef("{\"druid_host\":\"h\",\"druid_port\":%s}", ok[i].text);
        if (!c)
            fail_msg("druid_port %s: %s", ok[i].text, err);
        assert_int_equal(c->druid_port, ok[i].port);
        config_free(c);
    }
}

static void test_druid_port_rejected(void **state)
{
    (void)state;
    reject("\"druid_port\":70000", "druid_port: expected an integer between 1 and 65535, got 70000",
           NULL);
    reject("\"druid_port\":0", "druid_port: expected an integer between 1 and 65535, got 0", NULL);
    reject("\"druid_port\":-1", "druid_port", "got -1");
    reject("\"druid_port\":\"70000\"", "druid_port", "got \"70000\"");
    reject("\"druid_port\":\"0\"", "druid_port", NULL);
    reject("\"druid_port\":\"abc\"", "druid_port", "got \"abc\"");
    reject("\"druid_port\":\"\"", "druid_port", NULL);
    reject("\"druid_port\":\" 80\"", "druid_port", NULL);
    reject("\"druid_port\":\"-1\"", "druid_port", NULL);
    reject("\"druid_port\":\"80.0\"", "druid_port", NULL);
    reject("\"druid_port\":\"99999999999999999999999\"", "druid_port", NULL);
    reject("\"druid_port\":8888.5", "druid_port", "got 8888.5");
    reject("\"druid_port\":true", "druid_port", "got true");
    reject("\"druid_port\":null", "druid_port", "got null");
    reject("\"druid_port\":{}", "druid_port", "got an object");
    reject("\"druid_port\":18446744073709551615", "druid_port", NULL);
    reject("\"druid_port\":1e400", "druid_port", NULL);
    reject("\"druid_port\":NaN", "druid_port", NULL);
}

/* ---- booleans ---- */

static void test_use_ssl(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool v;
    } ok[] = {{"true", true}, {"false", false}, {"\"true\"", true}, {"\"false\"", false}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct config *c = parsef("{\"druid_host\":\"h\",\"use_ssl\":%s}", ok[i].text);
        if (!c)
            fail_msg("use_ssl %s: %s", ok[i].text, err);
        assert_int_equal(c->use_ssl, ok[i].v);
        config_free(c);
    }
    reject("\"use_ssl\":\"yes\"", "use_ssl: expected true, false, \"true\" or \"false\"",
           "got \"yes\"");
    reject("\"use_ssl\":1", "use_ssl", "got 1");
    reject("\"use_ssl\":null", "use_ssl", "got null");
    reject("\"use_ssl\":\"\"", "use_ssl", NULL);
}

static void test_plain_booleans(void **state)
{
    (void)state;
    static const char *const keys[] = {"tls_verify", "soft_deletes"};
    for (size_t i = 0; i < 2; i++) {
        char extra[128];
        struct config *c;
        snprintf(extra, sizeof extra, "\"%s\":false", keys[i]);
        c = accept(extra);
        config_free(c);
        snprintf(extra, sizeof extra, "\"%s\":true", keys[i]);
        c = accept(extra);
        config_free(c);
        /* only use_ssl keeps the original connector's string form */
        snprintf(extra, sizeof extra, "\"%s\":\"false\"", keys[i]);
        reject(extra, keys[i], "expected true or false, got \"false\"");
        snprintf(extra, sizeof extra, "\"%s\":0", keys[i]);
        reject(extra, keys[i], "got 0");
    }
    struct config *c = accept("\"tls_verify\":false,\"soft_deletes\":false");
    assert_false(c->tls_verify);
    assert_false(c->soft_deletes);
    config_free(c);
}

/* ---- strings ---- */

static void test_strings(void **state)
{
    (void)state;
    static const struct {
        const char *key;
        bool nonempty;
    } keys[] = {
        {"schema_name", true}, {"incremental_column", true}, {"druid_username", true},
        {"postgres", false},   {"destination_schema", true}, {"metadata_column_prefix", true},
        {"log_level", true},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char extra[128], needle[128];
        snprintf(extra, sizeof extra, "\"%s\":42", keys[i].key);
        snprintf(needle, sizeof needle, "%s: expected ", keys[i].key);
        reject(extra, needle, "got 42");
        snprintf(extra, sizeof extra, "\"%s\":false", keys[i].key);
        reject(extra, keys[i].key, "got false");
        snprintf(extra, sizeof extra, "\"%s\":\"\"", keys[i].key);
        if (keys[i].nonempty) {
            reject(extra, keys[i].key, "non-empty");
        } else {
            struct config *c = accept(extra);
            config_free(c);
        }
    }
    struct config *c = accept("\"postgres\":\"postgresql://u@db:5432/x?sslmode=require\"");
    assert_string_equal(c->postgres, "postgresql://u@db:5432/x?sslmode=require");
    config_free(c);
}

static void test_metadata_column_prefix(void **state)
{
    (void)state;
    char extra[256], col[128];
    char p48[49], p49[50];
    memset(p48, 'p', 48);
    p48[48] = '\0';
    memset(p49, 'p', 49);
    p49[49] = '\0';

    snprintf(extra, sizeof extra, "\"metadata_column_prefix\":\"%s\"", p48);
    struct config *c = accept(extra);
    config_system_column(c, "deleted", col, sizeof col);
    assert_int_equal(strlen(col), 55);
    assert_true(strlen(col) <= 63);
    config_free(c);

    snprintf(extra, sizeof extra, "\"metadata_column_prefix\":\"%s\"", p49);
    reject(extra, "metadata_column_prefix: expected a non-empty string of at most 48 bytes",
           "got 49 bytes");
    reject("\"metadata_column_prefix\":\"\"", "metadata_column_prefix", NULL);
}

static void test_system_column(void **state)
{
    (void)state;
    char col[64];
    struct config *c = with("");
    config_system_column(c, "id", col, sizeof col);
    assert_string_equal(col, "_druid_id");
    config_system_column(c, "synced", col, sizeof col);
    assert_string_equal(col, "_druid_synced");
    config_system_column(c, "deleted", col, sizeof col);
    assert_string_equal(col, "_druid_deleted");
    config_free(c);
    c = accept("\"metadata_column_prefix\":\"_fivetran_\"");
    config_system_column(c, "deleted", col, sizeof col);
    assert_string_equal(col, "_fivetran_deleted");
    config_system_column(c, "id", col, 5); /* truncated, still terminated */
    assert_string_equal(col, "_fiv");
    config_free(c);
}

static void test_log_level(void **state)
{
    (void)state;
    static const char *const ok[] = {"error", "warning", "info", "debug"};
    for (size_t i = 0; i < 4; i++) {
        char extra[64];
        snprintf(extra, sizeof extra, "\"log_level\":\"%s\"", ok[i]);
        struct config *c = accept(extra);
        assert_string_equal(c->log_level, ok[i]);
        config_free(c);
    }
    reject("\"log_level\":\"verbose\"", "log_level: expected \"error\"", "got \"verbose\"");
    reject("\"log_level\":\"INFO\"", "log_level", NULL);
    reject("\"log_level\":3", "log_level", NULL);
}

static void test_log_format(void **state)
{
    (void)state;
    struct config *c = accept("\"log_format\":\"json\"");
    assert_string_equal(c->log_format, "json");
    config_free(c);
    reject("\"log_format\":\"JSON\"", "log_format: expected \"text\" or \"json\"", "got \"JSON\"");
    reject("\"log_format\":\"\"", "log_format", NULL);
    reject("\"log_format\":true", "log_format", NULL);
}

static void test_new_keys(void **state)
{
    (void)state;
    struct config *c = accept("\"postgres_writers\":1,\"lease_seconds\":2.5,"
                              "\"instance_name\":\"node-a\"");
    assert_int_equal(c->postgres_writers, 1);
    assert_true(c->lease_seconds == 2.5);
    assert_string_equal(c->instance_name, "node-a");
    config_free(c);
    reject("\"postgres_writers\":0", "postgres_writers", NULL);
    reject("\"postgres_writers\":65", "postgres_writers", NULL);
    reject("\"postgres_writers\":1.5", "postgres_writers", NULL);
    reject("\"lease_seconds\":0", "lease_seconds", NULL);
    reject("\"instance_name\":\"\"", "instance_name", NULL);
}

/* The postgres string goes through libpq's own parser at load time (SPEC 2: a wrong value is
 * an error that names the key), so --check-config catches what would fail at connect. */
static void test_postgres_string(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "",
        "dbname=x",
        "host=/tmp port=5433 dbname=d user=u",
        "service=mysvc",
        "postgresql://u@h:5432/db?sslmode=require",
        "postgresql:///db",
        "host=a,b port=5432,5433",
        "host=a,b port=5432,",
        "postgres://h/db?connect_timeout=3",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char extra[256];
        snprintf(extra, sizeof extra, "\"postgres\":\"%s\"", ok[i]);
        config_free(accept(extra));
    }
    reject("\"postgres\":\"host=x bogus=1\"", "postgres: libpq cannot parse",
           "invalid connection option \"bogus\"");
    reject("\"postgres\":\"host=x dbname\"", "postgres: libpq cannot parse", "missing \"=\"");
    reject("\"postgres\":\"postgresql://h/db?bogus=2\"", "postgres: libpq cannot parse", "bogus");
    reject("\"postgres\":\"postgresql://u@h:notaport/db\"", "postgres: port", "notaport");
    reject("\"postgres\":\"host=x port=99999\"", "postgres: port", "99999");
    reject("\"postgres\":\"host=x port=5432,abc\"", "postgres: port", NULL);
    /* a token of a malformed string may be a piece of the password: not repeated */
    reject("\"postgres\":\"host=x password=se cret\"", "postgres: libpq cannot parse", NULL);
    assert_null(strstr(err, "cret"));
    reject("\"postgres\":\"postgresql://u:hunter2@h:12x/db\"", "postgres: port", NULL);
    assert_null(strstr(err, "hunter2"));
}

/* ---- numbers ---- */

static void test_integers(void **state)
{
    (void)state;
    struct config *c = accept("\"batch_size\":1,\"max_concurrent_queries\":1,\"max_retries\":1000");
    assert_int_equal(c->batch_size, 1);
    assert_int_equal(c->max_concurrent_queries, 1);
    assert_int_equal(c->max_retries, 1000);
    config_free(c);
    c = accept("\"batch_size\":10.0,\"max_concurrent_queries\":8.0,\"max_retries\":3.0");
    assert_int_equal(c->batch_size, 10);
    assert_int_equal(c->max_concurrent_queries, 8);
    assert_int_equal(c->max_retries, 3);
    config_free(c);
    c = accept("\"batch_size\":9223372036854775807");
    assert_true(c->batch_size == LONG_MAX);
    config_free(c);
    c = accept("\"batch_size\":1e6");
    assert_int_equal(c->batch_size, 1000000);
    config_free(c);

    reject("\"batch_size\":0", "batch_size: expected an integer >= 1, got 0", NULL);
    reject("\"batch_size\":-5", "batch_size", "got -5");
    reject("\"batch_size\":1.5", "batch_size", "got 1.5");
    reject("\"batch_size\":\"100\"", "batch_size", "got \"100\"");
    reject("\"batch_size\":99999999999999999999", "batch_size", NULL);
    reject("\"batch_size\":1e300", "batch_size", NULL);
    reject("\"batch_size\":[1]", "batch_size", "got an array");
    reject("\"max_concurrent_queries\":257",
           "max_concurrent_queries: expected an integer between 1 and 256, got 257", NULL);
    reject("\"max_concurrent_queries\":0", "max_concurrent_queries", NULL);
    reject("\"max_concurrent_queries\":\"4\"", "max_concurrent_queries", NULL);
    reject("\"max_retries\":1001", "max_retries: expected an integer between 0 and 1000", NULL);
    reject("\"max_retries\":-1", "max_retries", NULL);
    reject("\"max_retries\":2.5", "max_retries", NULL);
}

static void test_numbers(void **state)
{
    (void)state;
    static const char *const positive[] = {"sync_interval_seconds", "request_timeout_seconds",
                                           "retry_initial_seconds"};
    for (size_t i = 0; i < 3; i++) {
        char extra[128], needle[128];
        const char *k = positive[i];
        snprintf(extra, sizeof extra, "\"%s\":0.5", k);
        struct config *c = accept(extra);
        config_free(c);
        snprintf(extra, sizeof extra, "\"%s\":2", k);
        c = accept(extra);
        config_free(c);
        snprintf(extra, sizeof extra, "\"%s\":0", k);
        snprintf(needle, sizeof needle, "%s: expected a number > 0", k);
        reject(extra, needle, "got 0");
        snprintf(extra, sizeof extra, "\"%s\":-1", k);
        reject(extra, k, "got -1");
        snprintf(extra, sizeof extra, "\"%s\":\"60\"", k);
        reject(extra, k, "got \"60\"");
        snprintf(extra, sizeof extra, "\"%s\":1e400", k);
        reject(extra, k, NULL);
        snprintf(extra, sizeof extra, "\"%s\":true", k);
        reject(extra, k, "got true");
    }
    struct config *c = accept("\"sync_interval_seconds\":0.25,\"lookback_seconds\":0.5");
    assert_true(c->sync_interval_seconds == 0.25);
    assert_true(c->lookback_seconds == 0.5);
    config_free(c);
    c = accept("\"lookback_seconds\":0");
    config_free(c);
    reject("\"lookback_seconds\":-1", "lookback_seconds: expected a number >= 0", "got -1");
    reject("\"lookback_seconds\":\"0\"", "lookback_seconds", NULL);
    reject("\"lookback_seconds\":null", "lookback_seconds", "got null");
    reject("\"sync_interval_seconds\":NaN", "sync_interval_seconds", NULL);
    reject("\"sync_interval_seconds\":1e12", "sync_interval_seconds", "no larger than 1000000000");
    c = accept("\"lookback_seconds\":1000000000");
    config_free(c);
}

static void test_retry_bounds(void **state)
{
    (void)state;
    struct config *c = accept("\"retry_initial_seconds\":2,\"retry_max_seconds\":2");
    config_free(c);
    reject("\"retry_initial_seconds\":10,\"retry_max_seconds\":5", "retry_max_seconds",
           "retry_initial_seconds");
    /* against the defaults too: initial 1 */
    reject("\"retry_max_seconds\":0.5", "retry_max_seconds", NULL);
    reject("\"retry_initial_seconds\":120", "retry_max_seconds", NULL);
    reject("\"retry_max_seconds\":0", "retry_max_seconds: expected a number > 0", NULL);
}

/* ---- lists and selection ---- */

static void test_lists(void **state)
{
    (void)state;
    struct config *c = accept("\"datasources\":[\"wikipedia\"]");
    assert_string_equal(c->datasources[0], "wikipedia");
    assert_null(c->datasources[1]);
    config_free(c);
    c = accept("\"exclude_datasources\":[\"\",\"x\"]");
    assert_string_equal(c->exclude_datasources[1], "x");
    config_free(c);

    reject("\"datasources\":\"wikipedia\"", "datasources: expected an array of non-empty strings",
           "got \"wikipedia\"");
    reject("\"datasources\":[]", "datasources", "empty");
    reject("\"datasources\":[\"a\",\"\"]", "datasources: element 2", "non-empty");
    reject("\"datasources\":[\"a\",3]", "datasources: element 2", "got 3");
    reject("\"datasources\":null", "datasources", "got null");
    reject("\"exclude_datasources\":\"x\"", "exclude_datasources: expected an array of strings",
           NULL);
    reject("\"exclude_datasources\":[null]", "exclude_datasources: element 1", "got null");
    reject("\"exclude_datasources\":[[\"x\"]]", "exclude_datasources", "got an array");
}

static void test_selects(void **state)
{
    (void)state;
    struct config *c = with("");
    assert_true(config_selects(c, "anything"));
    assert_true(config_selects(c, ""));
    assert_false(config_selects(c, NULL));
    config_free(c);

    c = accept("\"datasources\":[\"a\",\"b\"]");
    assert_true(config_selects(c, "a"));
    assert_true(config_selects(c, "b"));
    assert_false(config_selects(c, "c"));
    assert_false(config_selects(c, "A"));  /* case-sensitive */
    assert_false(config_selects(c, "a ")); /* exact */
    assert_false(config_selects(c, "ab"));
    config_free(c);

    c = accept("\"exclude_datasources\":[\"b\"]");
    assert_true(config_selects(c, "a"));
    assert_false(config_selects(c, "b"));
    assert_true(config_selects(c, "B"));
    config_free(c);

    c = accept("\"datasources\":[\"a\",\"b\"],\"exclude_datasources\":[\"b\",\"c\"]");
    assert_true(config_selects(c, "a"));
    assert_false(config_selects(c, "b"));
    assert_false(config_selects(c, "c"));
    assert_false(config_selects(c, "d"));
    config_free(c);
}

/* ---- unknown keys and JSON problems ---- */

static void test_unknown_keys(void **state)
{
    (void)state;
    reject("\"batchsize\":1", "unknown key \"batchsize\" (did you mean \"batch_size\"?)", NULL);
    reject("\"druid_hots\":\"x\"", "did you mean \"druid_host\"?", NULL);
    reject("\"Use_SSL\":true", "did you mean \"use_ssl\"?", NULL);
    reject("\"soft_delete\":true", "did you mean \"soft_deletes\"?", NULL);
    reject("\"completely_different\":1", "unknown key \"completely_different\"", NULL);
    assert_null(strstr(err, "did you mean"));
    reject("\"\":1", "unknown key \"\"", NULL);
    /* the unknown key is reported even when druid_host is missing */
    assert_null(parsef("{\"bach_size\":1}"));
    assert_contains(err, "unknown key \"bach_size\" (did you mean \"batch_size\"?)");
}

static void test_json_syntax(void **state)
{
    (void)state;
    assert_null(parsef("{\n  \"druid_host\": \"h\",\n  \"druid_port\": 88 88\n}"));
    assert_contains(err, "line 3: JSON syntax error: ");
    assert_null(parsef("{\n\"druid_host\": \"h\",\n}"));
    assert_contains(err, "line 3: JSON syntax error");
    assert_null(config_parse("", err, sizeof err));
    assert_contains(err, "JSON syntax error");
    assert_null(parsef("{\"druid_host\":\"h\""));
    assert_contains(err, "JSON syntax error");
    assert_null(parsef("{\"druid_host\":\"h\"} x"));
    assert_contains(err, "line 1: JSON syntax error");
    assert_null(parsef("// comment\n{\"druid_host\":\"h\"}"));
    assert_contains(err, "line 1: JSON syntax error");
    assert_null(parsef("{\"druid_host\":\"\xff\"}"));
    assert_contains(err, "JSON syntax error");
    assert_null(config_parse(NULL, err, sizeof err));
}

static void test_top_level_not_object(void **state)
{
    (void)state;
    static const char *const texts[] = {"[]",   "42",   "\"x\"",
                                        "null", "true", "[{\"druid_host\":1}]"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        assert_null(parsef("%s", texts[i]));
        assert_contains(err, "top level must be a JSON object");
    }
}

static void test_small_err_buffer(void **state)
{
    (void)state;
    char small[8];
    memset(small, 'x', sizeof small);
    assert_null(config_parse("{}", small, sizeof small));
    assert_int_equal(strlen(small), 7);
    assert_null(config_parse("{}", NULL, 0));
}

/* ---- files ---- */

static void test_load_file(void **state)
{
    (void)state;
    char dir[64], path[128];
    tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.json", dir);

    write_file(path, original);
    struct config *c = config_load(path, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    config_free(c);

    write_file(path, "{\n  \"druid_host\": \"h\",\n  \"druid_port\": 70000\n}\n");
    assert_null(config_load(path, err, sizeof err));
    assert_contains(err, path);
    assert_contains(err, "druid_port: expected an integer between 1 and 65535, got 70000");

    write_file(path, "{\n  \"druid_host\": \"h\",\n  oops\n}\n");
    assert_null(config_load(path, err, sizeof err));
    assert_contains(err, path);
    assert_contains(err, "config.json: line 3: JSON syntax error: ");

    unlink(path);
    assert_null(config_load(path, err, sizeof err));
    assert_contains(err, path);
    assert_contains(err, "No such file");

    assert_null(config_load(dir, err, sizeof err));
    assert_contains(err, dir);
    rmdir(dir);
}

static void test_password_file(void **state)
{
    (void)state;
    char dir[64], path[128], extra[512];
    tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/pw", dir);

    static const char *const contents[] = {"s3cret", "s3cret\n", "s3cret\n\n", "s3cret\r\n"};
    for (size_t i = 0; i < 4; i++) {
        write_file(path, contents[i]);
        snprintf(extra, sizeof extra, "\"druid_username\":\"u\",\"druid_password_file\":\"%s\"",
                 path);
        struct config *c = accept(extra);
        assert_string_equal(c->druid_password, "s3cret");
        assert_string_equal(c->druid_password_file, path);
        config_free(c);
    }
    /* inner white space is kept */
    write_file(path, " a b \n");
    struct config *c = accept(extra);
    assert_string_equal(c->druid_password, " a b ");
    config_free(c);

    write_file(path, "\n");
    reject(extra, "druid_password_file", "empty");

    write_file(path, "s3cret\n");
    reject("\"druid_username\":\"u\",\"druid_password_file\":\"/nonexistent/pw\"",
           "druid_password_file: cannot read \"/nonexistent/pw\"", NULL);
    snprintf(extra, sizeof extra, "\"druid_username\":\"u\",\"druid_password_file\":\"%s\"", dir);
    reject(extra, "druid_password_file", NULL);
    if (geteuid() != 0) {
        chmod(path, 0);
        snprintf(extra, sizeof extra, "\"druid_username\":\"u\",\"druid_password_file\":\"%s\"",
                 path);
        reject(extra, "druid_password_file: cannot read", "Permission denied");
        chmod(path, 0600);
    }
    reject("\"druid_username\":\"u\",\"druid_password_file\":\"\"", "druid_password_file", NULL);
    reject("\"druid_username\":\"u\",\"druid_password_file\":1", "druid_password_file", NULL);

    /* both sources */
    snprintf(extra, sizeof extra,
             "\"druid_username\":\"u\",\"druid_password\":\"topsecret\","
             "\"druid_password_file\":\"%s\"",
             path);
    reject(extra, "druid_password_file", "druid_password");
    assert_null(strstr(err, "topsecret"));

    /* a password without a user name */
    snprintf(extra, sizeof extra, "\"druid_password_file\":\"%s\"", path);
    reject(extra, "druid_username", NULL);
    assert_null(strstr(err, "s3cret"));

    unlink(path);
    rmdir(dir);
}

static void test_password_never_in_messages(void **state)
{
    (void)state;
    reject("\"druid_username\":\"u\",\"druid_password\":12345678",
           "druid_password: expected a string, got a number", NULL);
    assert_null(strstr(err, "12345678"));
    reject("\"druid_username\":\"u\",\"druid_password\":[\"hunter2\"]", "druid_password",
           "got an array");
    assert_null(strstr(err, "hunter2"));
    reject("\"druid_password\":\"hunter2\"", "druid_username", NULL);
    assert_null(strstr(err, "hunter2"));
    /* an error elsewhere does not echo the password either */
    reject("\"druid_username\":\"u\",\"druid_password\":\"hunter2\",\"batch_size\":0", "batch_size",
           NULL);
    assert_null(strstr(err, "hunter2"));
    struct config *c = accept("\"druid_username\":\"u\",\"druid_password\":\"\"");
    assert_string_equal(c->druid_password, "");
    config_free(c);
}

static void test_credentials_directory(void **state)
{
    (void)state;
    char dir[64], path[128], extra[256];
    tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/druid_password", dir);
    setenv("CREDENTIALS_DIRECTORY", dir, 1);

    /* no credential file: no password */
    struct config *c = accept("\"druid_username\":\"u\"");
    assert_null(c->druid_password);
    config_free(c);

    write_file(path, "fromcred\n");
    c = accept("\"druid_username\":\"u\"");
    assert_non_null(c->druid_password);
    assert_string_equal(c->druid_password, "fromcred");
    assert_null(c->druid_password_file);
    config_free(c);

    /* the key wins over the credential */
    c = accept("\"druid_username\":\"u\",\"druid_password\":\"fromkey\"");
    assert_string_equal(c->druid_password, "fromkey");
    config_free(c);

    /* and so does the file */
    char pw[128];
    snprintf(pw, sizeof pw, "%s/other", dir);
    write_file(pw, "fromfile");
    snprintf(extra, sizeof extra, "\"druid_username\":\"u\",\"druid_password_file\":\"%s\"", pw);
    c = accept(extra);
    assert_string_equal(c->druid_password, "fromfile");
    config_free(c);
    unlink(pw);

    /* an empty credential is an error naming it */
    write_file(path, "");
    reject("\"druid_username\":\"u\"", "druid_password", "credential");

    unlink(path);
    rmdir(dir);
    unsetenv("CREDENTIALS_DIRECTORY");
    c = accept("\"druid_username\":\"u\"");
    assert_null(c->druid_password);
    config_free(c);
}

static void test_tls_ca_file(void **state)
{
    (void)state;
    char dir[64], path[128], extra[256];
    tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ca.pem", dir);
    write_file(path, "-----BEGIN CERTIFICATE-----\n");
    snprintf(extra, sizeof extra, "\"use_ssl\":true,\"tls_ca_file\":\"%s\"", path);
    struct config *c = accept(extra);
    assert_string_equal(c->tls_ca_file, path);
    config_free(c);
    snprintf(extra, sizeof extra, "\"tls_ca_file\":\"%s\"", dir);
    reject(extra, "tls_ca_file", NULL);
    unlink(path);
    snprintf(extra, sizeof extra, "\"tls_ca_file\":\"%s\"", path);
    reject(extra, "tls_ca_file: cannot read", "No such file");
    reject("\"tls_ca_file\":\"\"", "tls_ca_file", NULL);
    reject("\"tls_ca_file\":true", "tls_ca_file", NULL);
    rmdir(dir);
}

/* Every key rejects an object, and the message names it. */
static void test_every_key_named_on_type_error(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "druid_host",
        "druid_port",
        "schema_name",
        "incremental_column",
        "use_ssl",
        "druid_username",
        "druid_password",
        "druid_password_file",
        "tls_ca_file",
        "tls_verify",
        "postgres",
        "destination_schema",
        "datasources",
        "exclude_datasources",
        "sync_interval_seconds",
        "batch_size",
        "max_concurrent_queries",
        "request_timeout_seconds",
        "lookback_seconds",
        "soft_deletes",
        "metadata_column_prefix",
        "max_retries",
        "retry_initial_seconds",
        "retry_max_seconds",
        "log_level",
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "%s: expected ", keys[i]);
        if (strcmp(keys[i], "druid_host") == 0) /* given twice it would be a duplicate key */
            assert_null(parsef("{\"druid_host\":{\"x\":1}}"));
        else
            assert_null(parsef("{\"druid_host\":\"h\",\"%s\":{\"x\":1}}", keys[i]));
        assert_contains(err, needle);
        assert_contains(err, "got an object");
    }
}

static void test_shutdown_timeout_and_metrics_listen(void **state)
{
    (void)state;
    struct config *c = accept("");
    assert_true(c->shutdown_timeout_seconds == 30.0);
    assert_null(c->metrics_listen); /* off unless asked for */
    config_free(c);
    c = accept("\"shutdown_timeout_seconds\":2.5,\"metrics_listen\":\"127.0.0.1:9187\"");
    assert_true(c->shutdown_timeout_seconds == 2.5);
    assert_string_equal(c->metrics_listen, "127.0.0.1:9187");
    config_free(c);
    c = accept("\"metrics_listen\":\"[::1]:9187\"");
    char host[64];
    int port;
    assert_int_equal(config_parse_listen(c->metrics_listen, host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9187);
    config_free(c);
    reject("\"shutdown_timeout_seconds\":0", "shutdown_timeout_seconds", NULL);
    reject("\"metrics_listen\":\"nonsense\"", "metrics_listen", "IP:port");
    reject("\"metrics_listen\":\"127.0.0.1:0\"", "metrics_listen", NULL);
    reject("\"metrics_listen\":9187", "metrics_listen", NULL);
    /* host names are accepted (resolved when the listener starts) */
    c = accept("\"metrics_listen\":\"localhost:9100\"");
    assert_int_equal(config_parse_listen(c->metrics_listen, host, sizeof host, &port), 0);
    assert_string_equal(host, "localhost");
    assert_int_equal(port, 9100);
    config_free(c);
    c = accept("\"metrics_listen\":\"metrics-1.example.org:9187\"");
    config_free(c);
    c = accept("\"metrics_listen\":\":9187\"");
    assert_int_equal(config_parse_listen(c->metrics_listen, host, sizeof host, &port), 0);
    assert_string_equal(host, "::");
    config_free(c);
    reject("\"metrics_listen\":\"[localhost]:9187\"", "metrics_listen", NULL); /* [] is IPv6 */
    reject("\"metrics_listen\":\"local host:9187\"", "metrics_listen", NULL);
    reject("\"metrics_listen\":\"http://h:9187\"", "metrics_listen", NULL);
    reject("\"metrics_listen\":\"-h:9187\"", "metrics_listen", NULL);
    reject("\"metrics_listen\":\"localhost:\"", "metrics_listen", NULL);
    reject("\"metrics_listen\":\"localhost:65536\"", "metrics_listen", NULL);
}

static void test_postgres_timeout_seconds(void **state)
{
    (void)state;
    struct config *c = accept("\"postgres_timeout_seconds\":0.5");
    assert_true(c->postgres_timeout_seconds == 0.5);
    config_free(c);
    c = accept("\"postgres_timeout_seconds\":0.001"); /* 1 ms, the smallest PostgreSQL limit */
    assert_true(c->postgres_timeout_seconds == 0.001);
    config_free(c);
    c = accept("\"postgres_timeout_seconds\":2147483"); /* about 24.8 days */
    assert_true(c->postgres_timeout_seconds == 2147483.0);
    config_free(c);
    /* 0 (or less than 1 ms) would switch statement_timeout off */
    reject("\"postgres_timeout_seconds\":0", "postgres_timeout_seconds: expected a number >= 0.001",
           "got 0");
    reject("\"postgres_timeout_seconds\":0.0001", "postgres_timeout_seconds", NULL);
    reject("\"postgres_timeout_seconds\":-1", "postgres_timeout_seconds", "got -1");
    /* statement_timeout is an int of milliseconds */
    reject("\"postgres_timeout_seconds\":2147484", "postgres_timeout_seconds",
           "no larger than 2147483");
    reject("\"postgres_timeout_seconds\":\"600\"", "postgres_timeout_seconds", "got \"600\"");
    reject("\"postgres_timeout_seconds\":true", "postgres_timeout_seconds", "got true");
    reject("\"postgres_timeout_seconds\":null", "postgres_timeout_seconds", "got null");
}

/* ---- duplicate keys ---- */

static void test_duplicate_keys(void **state)
{
    (void)state;
    /* json-c alone would keep the second value silently */
    assert_null(parsef("{\"druid_host\":\"h\",\"batch_size\":10,\"batch_size\":20}"));
    assert_contains(err, "line 1: duplicate key \"batch_size\"");
    assert_null(
        parsef("{\n  \"druid_host\": \"a\",\n  \"druid_port\": 1,\n  \"druid_host\": \"b\"\n}"));
    assert_contains(err, "line 4: duplicate key \"druid_host\"");
    /* the value of a secret is not quoted */
    reject("\"druid_username\":\"u\",\"druid_password\":\"hunter2\",\"druid_password\":\"hunter3\"",
           "duplicate key \"druid_password\"", NULL);
    assert_null(strstr(err, "hunter"));
    /* the same value twice, still an error: the file says it twice */
    reject("\"use_ssl\":true,\"use_ssl\":true", "duplicate key \"use_ssl\"", NULL);
    /* keys differing in case are two keys (and the second one is unknown) */
    reject("\"batch_size\":1,\"Batch_size\":2", "unknown key \"Batch_size\"", NULL);
    /* an escape spelling the same key is the same key */
    reject("\"batch_size\":1,\"batch\\u005fsize\":2", "duplicate key \"batch_size\"", NULL);
    /* a key with control characters is shown escaped */
    reject("\"a\\u001b[2J\":1,\"a\\u001b[2J\":2", "duplicate key \"a\\x1b[2J\"", NULL);
    assert_null(strchr(err, '\x1b'));
    /* json-c takes NaN, 'quotes' and raw control characters; the duplicate check reads
     * strict JSON. A value json-c turned into a wrong one is still named by its key... */
    reject("\"batch_size\":NaN", "batch_size: expected an integer", NULL);
    /* ...but when the only trace of the non-JSON part was overwritten, it is a syntax error */
    reject("\"batch_size\":NaN,\"batch_size\":5", "line 1: JSON syntax error: ", "(column ");
    assert_null(parsef("{\n\"druid_host\":'h'}"));
    assert_contains(err, "line 2: JSON syntax error: ");
    reject("\"postgres\":\"host=x\tdbname=y\"", "line 1: JSON syntax error: ", NULL);
    reject("\"retry_max_seconds\":2.", "line 1: JSON syntax error: ", NULL);
    /* equal strings in a list are values, not keys */
    struct config *c = accept("\"exclude_datasources\":[\"a\",\"a\"]");
    config_free(c);
}

static void test_duplicate_keys_nested(void **state)
{
    (void)state;
    /* no key of the file takes an object, but a duplicate inside one is named by its path
     * before the wrong type is */
    reject("\"datasources\":[{\"a\":1,\"a\":2}]", "duplicate key \"datasources[0].a\"", NULL);
    reject("\"postgres\":{\"x\":{\"y\":[1,\"s\",null,[],{\"z\":1,\"q\":{},\"z\":2}]}}",
           "duplicate key \"postgres.x.y[4].z\"", NULL);
    /* equal keys in two different objects are not duplicates: the type error remains */
    reject("\"datasources\":[{\"a\":1},{\"a\":1}]", "datasources: element 1", NULL);
    reject("\"postgres\":{\"a\":{\"a\":1}}", "postgres: expected a string", NULL);
    /* a nested duplicate in a file, with its line */
    assert_null(parsef("{\"druid_host\":\"h\",\n\"postgres\":{\n\"k\":1,\n\"k\":2}}"));
    assert_contains(err, "line 4: duplicate key \"postgres.k\"");
}

/* ---- permission warnings ---- */

/* Writes content to path with mode (whatever the umask) and loads it. */
static struct config *load_mode(const char *path, const char *content, mode_t mode)
{
    write_file(path, content);
    assert_int_equal(chmod(path, mode), 0);
    err[0] = '\0';
    struct config *c = config_load(path, err, sizeof err);
    if (!c)
        fail_msg("%s: %s", path, err);
    return c;
}

static size_t n_warnings(const struct config *c)
{
    size_t n = 0;
    while (c->warnings[n])
        n++;
    return n;
}

/* Exactly one warning, naming file and containing needle, and never secret. */
static void one_warning(const struct config *c, const char *file, const char *needle,
                        const char *secret)
{
    if (n_warnings(c) != 1)
        fail_msg("%zu warnings, want 1 (first: %s)", n_warnings(c),
                 c->warnings[0] ? c->warnings[0] : "none");
    assert_contains(c->warnings[0], file);
    assert_contains(c->warnings[0], needle);
    assert_contains(c->warnings[0], "readable by group or others");
    assert_null(strstr(c->warnings[0], secret));
}

static void test_warn_druid_password_in_readable_file(void **state)
{
    (void)state;
    char dir[64], path[128];
    tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *cfg = "{\"druid_host\":\"h\",\"druid_username\":\"u\","
                      "\"druid_password\":\"hunter2\"}";

    struct config *c = load_mode(path, cfg, 0644);
    one_warning(c, path, "druid_password", "hunter2");
    assert_contains(c->warnings[0], "mode 0644");
    config_free(c);
    c = load_mode(path, cfg, 0640); /* group only */
    one_warning(c, path, "druid_password", "hunter2");
    config_free(c);
    c = load_mode(path, cfg, 0604); /* others only */
    one_warning(c, path, "druid_password", "hunter2");
    config_free(c);
    c = load_mode(path, cfg, 0600);
    assert_int_equal(n_warnings(c), 0);
    config_free(c);
    c = load_mode(path, cfg, 0400);
    assert_int_equal(n_warnings(c), 0);
    config_free(c);

    /* no password in the file: nothing to warn about */
    c = load_mode(path, "{\"druid_host\":\"h\",\"druid_username\":\"u\"}", 0644);
    assert_int_equal(n_warnings(c), 0);
    config_free(c);
    c = load_mode(path, "{\"druid_host\":\"h\",\"druid_username\":\"u\",\"druid_password\":\"\"}",
                  0644);
    assert_int_equal(n_warnings(c), 0);
    config_free(c);

    /* the same text from memory has no file to warn about */
    c = config_parse(cfg, err, sizeof err);
    assert_non_null(c);
    assert_int_equal(n_warnings(c), 0);
    config_free(c);

    unlink(path);
    rmdir(dir);
}

static void test_warn_postgres_password_in_readable_file(void **state)
{
    (void)state;
    char dir[64], path[128], cfg[512];
    tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    static const char *const with_pw[] = {
        "host=db user=sync password=pgsecret dbname=x",
        "host=db password='pg secret' dbname=x",
        "postgresql://sync:pgsecret@db:5432/x",
        "postgres://sync:pgsecret@db/x?sslmode=require",
        "postgresql://sync@db/x?password=pgsecret",
    };
    for (size_t i = 0; i < sizeof with_pw / sizeof with_pw[0]; i++) {
        snprintf(cfg, sizeof cfg, "{\"druid_host\":\"h\",\"postgres\":\"%s\"}", with_pw[i]);
        struct config *c = load_mode(path, cfg, 0644);
        one_warning(c, path, "PostgreSQL password in postgres", "secret");
        config_free(c);
        c = load_mode(path, cfg, 0600);
        assert_int_equal(n_warnings(c), 0);
        config_free(c);
    }
    static const char *const without_pw[] = {
        "",
        "host=db user=sync dbname=x",
        "postgresql://sync@db:5432/x",
        "host=db password='' dbname=x", /* empty: libpq sends none */
        "host=db passfile=/etc/pgpass",
    };
    for (size_t i = 0; i < sizeof without_pw / sizeof without_pw[0]; i++) {
        snprintf(cfg, sizeof cfg, "{\"druid_host\":\"h\",\"postgres\":\"%s\"}", without_pw[i]);
        struct config *c = load_mode(path, cfg, 0644);
        if (n_warnings(c) != 0)
            fail_msg("postgres \"%s\": unexpected warning: %s", without_pw[i], c->warnings[0]);
        config_free(c);
    }
    /* both passwords: one warning each */
    struct config *c =
        load_mode(path,
                  "{\"druid_host\":\"h\",\"druid_username\":\"u\","
                  "\"druid_password\":\"hunter2\",\"postgres\":\"password=pgsecret\"}",
                  0644);
    assert_int_equal(n_warnings(c), 2);
    for (size_t i = 0; i < 2; i++) {
        assert_contains(c->warnings[i], path);
        assert_null(strstr(c->warnings[i], "hunter2"));
        assert_null(strstr(c->warnings[i], "pgsecret"));
    }
    config_free(c);
    unlink(path);
    rmdir(dir);
}

static void test_warn_readable_password_file(void **state)
{
    (void)state;
    char dir[64], path[128], pw[128], extra[512];
    tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(pw, sizeof pw, "%s/druid-password", dir);
    write_file(pw, "s3cret\n");
    snprintf(extra, sizeof extra, "\"druid_username\":\"u\",\"druid_password_file\":\"%s\"", pw);

    assert_int_equal(chmod(pw, 0644), 0);
    struct config *c = accept(extra); /* from memory too: the password file is a file */
    one_warning(c, pw, "druid_password_file", "s3cret");
    assert_contains(c->warnings[0], "mode 0644");
    config_free(c);
    /* a readable config file without a password in it draws no warning of its own */
    char cfg[640];
    snprintf(cfg, sizeof cfg, "{\"druid_host\":\"h\",%s}", extra);
    c = load_mode(path, cfg, 0644);
    one_warning(c, pw, "druid_password_file", "s3cret");
    assert_null(strstr(c->warnings[0], path));
    config_free(c);

    assert_int_equal(chmod(pw, 0640), 0);
    c = accept(extra);
    one_warning(c, pw, "druid_password_file", "s3cret");
    config_free(c);
    assert_int_equal(chmod(pw, 0600), 0);
    c = accept(extra);
    assert_int_equal(n_warnings(c), 0);
    config_free(c);
    c = load_mode(path, cfg, 0644);
    assert_int_equal(n_warnings(c), 0);
    config_free(c);

    unlink(pw);
    unlink(path);
    rmdir(dir);
}

static void test_free_null(void **state)
{
    (void)state;
    config_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_shutdown_timeout_and_metrics_listen, setup),
        cmocka_unit_test_setup(test_original_connector, setup),
        cmocka_unit_test_setup(test_etc_config_json, setup),
        cmocka_unit_test_setup(test_etc_config_minimal_json, setup),
        cmocka_unit_test_setup(test_every_key_set, setup),
        cmocka_unit_test_setup(test_druid_host, setup),
        cmocka_unit_test_setup(test_druid_port_accepted, setup),
        cmocka_unit_test_setup(test_druid_port_rejected, setup),
        cmocka_unit_test_setup(test_use_ssl, setup),
        cmocka_unit_test_setup(test_plain_booleans, setup),
        cmocka_unit_test_setup(test_strings, setup),
        cmocka_unit_test_setup(test_metadata_column_prefix, setup),
        cmocka_unit_test_setup(test_system_column, setup),
        cmocka_unit_test_setup(test_log_level, setup),
        cmocka_unit_test_setup(test_integers, setup),
        cmocka_unit_test_setup(test_numbers, setup),
        cmocka_unit_test_setup(test_retry_bounds, setup),
        cmocka_unit_test_setup(test_lists, setup),
        cmocka_unit_test_setup(test_selects, setup),
        cmocka_unit_test_setup(test_unknown_keys, setup),
        cmocka_unit_test_setup(test_json_syntax, setup),
        cmocka_unit_test_setup(test_top_level_not_object, setup),
        cmocka_unit_test_setup(test_small_err_buffer, setup),
        cmocka_unit_test_setup(test_load_file, setup),
        cmocka_unit_test_setup(test_password_file, setup),
        cmocka_unit_test_setup(test_password_never_in_messages, setup),
        cmocka_unit_test_setup(test_credentials_directory, setup),
        cmocka_unit_test_setup(test_tls_ca_file, setup),
        cmocka_unit_test_setup(test_every_key_named_on_type_error, setup),
        cmocka_unit_test_setup(test_postgres_timeout_seconds, setup),
        cmocka_unit_test_setup(test_duplicate_keys, setup),
        cmocka_unit_test_setup(test_duplicate_keys_nested, setup),
        cmocka_unit_test_setup(test_warn_druid_password_in_readable_file, setup),
        cmocka_unit_test_setup(test_warn_postgres_password_in_readable_file, setup),
        cmocka_unit_test_setup(test_warn_readable_password_file, setup),
        cmocka_unit_test_setup(test_free_null, setup),
        cmocka_unit_test_setup(test_log_format, setup),
        cmocka_unit_test_setup(test_new_keys, setup),
        cmocka_unit_test_setup(test_postgres_string, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
