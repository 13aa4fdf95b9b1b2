/* test_druid_error: both Druid error envelopes, classification and Retry-After. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "druid_error.h"

static struct druid_error parse(long status, const char *body, const char *retry_after)
{
    struct druid_error e;
    memset(&e, 0x5a, sizeof e); /* every field must be written */
    druid_error_from_response(status, body, body ? strlen(body) : 0, retry_after, &e);
    return e;
}

/* reference §5.2 */
static void test_legacy_envelope(void **state)
{
    (void)state;
    struct druid_error e =
        parse(504,
              "{\"error\":\"Query timeout\",\"errorMessage\":\"Query did not complete within "
              "configured timeout period. You can increase query timeout or tune the performance "
              "of query.\",\"errorClass\":\"org.apache.druid.query.QueryTimeoutException\","
              "\"host\":\"druid-broker:8082\"}",
              NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSIENT);
    assert_int_equal(e.http_status, 504);
    assert_string_equal(e.code, "Query timeout");
    assert_string_equal(e.category, "");
    assert_string_equal(e.message, "Query did not complete within configured timeout period. You "
                                   "can increase query timeout or tune the performance of query.");
    assert_true(e.retry_after == -1);

    e = parse(429,
              "{\"error\":\"Query capacity exceeded\",\"errorMessage\":\"Too many concurrent "
              "queries for lane 'low', query capacity of 2 exceeded. Please try your query again "
              "later.\",\"errorClass\":\"org.apache.druid.query.QueryCapacityExceededException\","
              "\"host\":null}",
              NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSIENT);
    assert_string_equal(e.code, "Query capacity exceeded");
    assert_string_equal(e.message, "Too many concurrent queries for lane 'low', query capacity "
                                   "of 2 exceeded. Please try your query again later.");

    /* before 0.21 nearly everything was a 500: the legacy code decides */
    e = parse(500,
              "{\"error\":\"Query timeout\",\"errorMessage\":null,\"errorClass\":null,\"host\":"
              "null}",
              NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSIENT);
    assert_string_equal(e.message, "HTTP 500: Query timeout");
    /* found by fuzz_druid_error: an empty errorMessage is no message either */
    e = parse(500, "{\"error\":\"Query timeout\",\"errorMessage\":\"\"}", NULL);
    assert_string_equal(e.message, "HTTP 500: Query timeout");
    e = parse(20, "{\"errorMessage\":\"\"}", NULL);
    assert_string_equal(e.message, "HTTP 20 with no error message");
    e = parse(500,
              "{\"error\":\"SQL parse failed\",\"errorMessage\":\"Encountered \\\"FROM\\\"\","
              "\"errorClass\":\"org.apache.calcite.sql.parser.SqlParseException\",\"host\":null}",
              NULL);
    assert_int_equal(e.kind, DRUID_ERR_QUERY);
    assert_string_equal(e.message, "Encountered \"FROM\"");
    const char *query_codes[] = {"Plan validation failed", "SQL query is unsupported",
                                 "Resource limit exceeded", "Query context parse failed",
                                 "Unsupported query"};
    for (size_t i = 0; i < sizeof query_codes / sizeof *query_codes; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"error\":\"%s\",\"errorMessage\":\"x\"}", query_codes[i]);
        e = parse(500, body, NULL);
        assert_int_equal(e.kind, DRUID_ERR_QUERY);
        assert_string_equal(e.code, query_codes[i]);
    }
    /* cancelled: no legacy mapping, the status decides */
    e = parse(500, "{\"error\":\"Query cancelled\",\"errorMessage\":null}", NULL);
    assert_int_equal(e.kind, DRUID_ERR_SERVER);
    assert_true(druid_err_retryable(e.kind));
}

/* reference §5.3 */
static void test_druid_exception_envelope(void **state)
{
    (void)state;
    struct druid_error e = parse(
        400,
        "{\"error\":\"druidException\",\"errorCode\":\"invalidInput\",\"persona\":\"USER\","
        "\"category\":\"INVALID_INPUT\",\"errorMessage\":\"Object 'nope' not found (line [1], "
        "column [15])\",\"context\":{\"sourceType\":\"sql\",\"line\":\"1\",\"column\":\"15\","
        "\"endLine\":\"1\",\"endColumn\":\"18\"}}",
        NULL);
    assert_int_equal(e.kind, DRUID_ERR_QUERY);
    assert_string_equal(e.code, "invalidInput");
    assert_string_equal(e.category, "INVALID_INPUT");
    assert_string_equal(e.message, "Object 'nope' not found (line [1], column [15])");
    assert_false(druid_err_retryable(e.kind));

    e = parse(500,
              "{\"error\":\"druidException\",\"errorCode\":\"general\",\"persona\":\"ADMIN\","
              "\"category\":\"UNCATEGORIZED\",\"errorMessage\":\"/ by zero\",\"context\":{}}",
              NULL);
    assert_int_equal(e.kind, DRUID_ERR_SERVER);
    assert_string_equal(e.code, "general");
    assert_string_equal(e.category, "UNCATEGORIZED");
    assert_string_equal(e.message, "/ by zero");

    /* ORDER BY a non-time column: errorCode general but category INVALID_INPUT */
    e = parse(400,
              "{\"error\":\"druidException\",\"errorCode\":\"general\",\"persona\":\"ADMIN\","
              "\"category\":\"INVALID_INPUT\",\"errorMessage\":\"Query could not be planned. A "
              "possible reason is [SQL query requires ordering a table by non-time column "
              "[[dim1]], which is not supported.]\",\"context\":{}}",
              NULL);
    assert_int_equal(e.kind, DRUID_ERR_QUERY);

    /* legacy exception wrapped (live 37.0.0, HTTP 504) */
    e = parse(504,
              "{\"error\":\"Query timeout\",\"errorClass\":\"org.apache.druid.query."
              "QueryTimeoutException\",\"host\":\"172.18.0.5:8083\",\"errorCode\":"
              "\"legacyQueryException\",\"persona\":\"OPERATOR\",\"category\":\"TIMEOUT\","
              "\"errorMessage\":\"url[http://172.18.0.5:8083/druid/v2/] timed out\",\"context\":{"
              "\"host\":\"172.18.0.5:8083\",\"errorClass\":\"org.apache.druid.query."
              "QueryTimeoutException\",\"legacyErrorCode\":\"Query timeout\"}}",
              NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSIENT);
    assert_string_equal(e.code, "Query timeout"); /* the legacy code wins over errorCode */
    assert_string_equal(e.category, "TIMEOUT");
    assert_string_equal(e.message, "url[http://172.18.0.5:8083/druid/v2/] timed out");

    /* resource limit: legacy error with category INVALID_INPUT */
    e = parse(400,
              "{\"error\":\"Resource limit exceeded\",\"errorClass\":\"org.apache.druid.query."
              "ResourceLimitExceededException\",\"host\":null,\"errorCode\":"
              "\"legacyQueryException\",\"persona\":\"OPERATOR\",\"category\":\"INVALID_INPUT\","
              "\"errorMessage\":\"Subquery generated results beyond maximum[100000]\","
              "\"context\":{\"host\":null}}",
              NULL);
    assert_int_equal(e.kind, DRUID_ERR_QUERY);
    assert_string_equal(e.code, "Resource limit exceeded");

    /* category beats the status */
    static const struct {
        const char *category;
        long status;
        enum druid_err_kind kind;
    } cats[] = {
        {"CAPACITY_EXCEEDED", 429, DRUID_ERR_TRANSIENT},
        {"TIMEOUT", 504, DRUID_ERR_TRANSIENT},
        {"SERVICE_UNAVAILABLE", 503, DRUID_ERR_TRANSIENT},
        {"UNAUTHORIZED", 500, DRUID_ERR_AUTH},
        {"FORBIDDEN", 500, DRUID_ERR_AUTH},
        {"INVALID_INPUT", 500, DRUID_ERR_QUERY},
        {"NOT_FOUND", 404, DRUID_ERR_QUERY},
        {"UNSUPPORTED", 501, DRUID_ERR_QUERY},
        {"CANCELED", 500, DRUID_ERR_SERVER},
        {"RUNTIME_FAILURE", 500, DRUID_ERR_SERVER},
        {"DEFENSIVE", 500, DRUID_ERR_SERVER},
        {"CONFLICT", 409, DRUID_ERR_QUERY}, /* any 4xx but 429: not worth a retry */
        {"SOMETHING_NEW", 400, DRUID_ERR_QUERY},
        {"SOMETHING_NEW", 500, DRUID_ERR_SERVER},
    };
    for (size_t i = 0; i < sizeof cats / sizeof *cats; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"error\":\"druidException\",\"errorCode\":\"x\",\"persona\":\"USER\","
                 "\"category\":\"%s\",\"errorMessage\":\"m\",\"context\":{}}",
                 cats[i].category);
        e = parse(cats[i].status, body, NULL);
        if (e.kind != cats[i].kind)
            fail_msg("%s: got %s", cats[i].category, druid_err_kind_name(e.kind));
    }
}

/* reference §5.4 */
static void test_auth(void **state)
{
    (void)state;
    struct druid_error e = parse(401,
                                 "{\"error\":\"Unauthorized request\",\"errorMessage\":null,"
                                 "\"errorClass\":null,\"host\":\"broker:8082\"}",
                                 NULL);
    assert_int_equal(e.kind, DRUID_ERR_AUTH);
    assert_string_equal(e.code, "Unauthorized request");
    assert_non_null(strstr(e.message, "Unauthorized request"));
    assert_false(druid_err_retryable(e.kind));

    /* Jetty's page for bad credentials: not JSON, still AUTH */
    e = parse(401,
              "<html><head><title>Error 401 Unauthorized</title></head><body><h2>HTTP ERROR 401 "
              "User authentication failed username[x].</h2></body></html>",
              NULL);
    assert_int_equal(e.kind, DRUID_ERR_AUTH);
    assert_non_null(strstr(e.message, "HTTP 401: Druid refused the credentials"));
    /* callers that name the status themselves take the reason alone */
    assert_string_equal(druid_error_reason(&e), "Druid refused the credentials (Unauthorized)");

    e = parse(403, "{\"error\":\"Unauthorized\"}", NULL);
    assert_int_equal(e.kind, DRUID_ERR_AUTH);
    assert_string_equal(e.code, "Unauthorized");
    e = parse(403, "{\"Access-Check-Result\":\"Allowed:false, Message:\"}", NULL);
    assert_int_equal(e.kind, DRUID_ERR_AUTH);
    e = parse(403, NULL, NULL);
    assert_int_equal(e.kind, DRUID_ERR_AUTH);
    /* 401/403 by status alone, even when the body says something else */
    e = parse(403,
              "{\"error\":\"druidException\",\"errorCode\":\"general\",\"category\":"
              "\"INVALID_INPUT\",\"errorMessage\":\"m\"}",
              NULL);
    assert_int_equal(e.kind, DRUID_ERR_AUTH);
    e = parse(401, "{\"error\":\"Query timeout\",\"errorMessage\":\"m\"}", NULL);
    assert_int_equal(e.kind, DRUID_ERR_AUTH);
    /* the legacy code alone also means AUTH */
    e = parse(500, "{\"error\":\"Unauthorized request\",\"errorMessage\":null}", NULL);
    assert_int_equal(e.kind, DRUID_ERR_AUTH);
}

static void test_non_json(void **state)
{
    (void)state;
    struct druid_error e = parse(502, "<html><body>Bad Gateway</body></html>", NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSPORT);
    assert_true(druid_err_retryable(e.kind));
    assert_non_null(strstr(e.message, "HTTP 502 with a non-JSON body"));
    assert_string_equal(e.code, "");
    assert_string_equal(e.category, "");

    e = parse(500, "", NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSPORT);
    assert_non_null(strstr(e.message, "HTTP 500"));
    e = parse(500, NULL, NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSPORT);
    /* Jetty's request limiter: 429 "Too Many Requests", not JSON: still backs off */
    e = parse(429, "Too Many Requests", NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSIENT);
    e = parse(503, "", NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSIENT);
    e = parse(504, "<html>Gateway Timeout</html>", NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSIENT);
    /* a cut-off JSON body, trailing garbage, or JSON that is not an object */
    e = parse(500, "{\"error\":\"druidException\",\"errorCode\":\"gen", NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSPORT);
    e = parse(500, "{\"error\":\"Query timeout\"} trailing", NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSPORT);
    e = parse(500, "[1,2]", NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSPORT);
    /* a trailing newline after the object is fine */
    e = parse(500, "{\"error\":\"Query timeout\",\"errorMessage\":\"t\"}\n", NULL);
    assert_int_equal(e.kind, DRUID_ERR_TRANSIENT);
    /* 4xx non-JSON keeps its status meaning */
    e = parse(404, "<html>Not Found</html>", NULL);
    assert_int_equal(e.kind, DRUID_ERR_QUERY);
    /* control bytes of a page do not reach the message */
    e = parse(502, "line1\nline2\r\n", NULL);
    assert_null(strchr(e.message, '\n'));
}

static void test_status_fallback(void **state)
{
    (void)state;
    static const struct {
        long status;
        enum druid_err_kind kind;
    } cases[] = {
        {400, DRUID_ERR_QUERY},     {404, DRUID_ERR_QUERY},     {405, DRUID_ERR_QUERY},
        {406, DRUID_ERR_QUERY},     {415, DRUID_ERR_QUERY},     {501, DRUID_ERR_QUERY},
        {429, DRUID_ERR_TRANSIENT}, {503, DRUID_ERR_TRANSIENT}, {504, DRUID_ERR_TRANSIENT},
        {401, DRUID_ERR_AUTH},      {403, DRUID_ERR_AUTH},      {409, DRUID_ERR_QUERY},
        {500, DRUID_ERR_SERVER},    {502, DRUID_ERR_SERVER},    {418, DRUID_ERR_QUERY},
        {408, DRUID_ERR_QUERY},     {413, DRUID_ERR_QUERY},     {499, DRUID_ERR_QUERY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* JSON without category or a known legacy code */
        struct druid_error e = parse(cases[i].status, "{\"error\":\"Something odd\"}", NULL);
        if (e.kind != cases[i].kind)
            fail_msg("%ld: got %s", cases[i].status, druid_err_kind_name(e.kind));
        e = parse(cases[i].status, "{}", NULL);
        assert_int_equal(e.kind, cases[i].kind);
        assert_string_equal(e.code, "");
    }
}

static void test_retry_after(void **state)
{
    (void)state;
    const char *cap = "{\"error\":\"Query capacity exceeded\",\"errorMessage\":\"busy\"}";
    struct druid_error e = parse(429, cap, "120");
    assert_true(e.retry_after == 120);
    e = parse(429, cap, " 5 ");
    assert_true(e.retry_after == 5);
    e = parse(429, cap, "0");
    assert_true(e.retry_after == 0);
    e = parse(429, cap, "soon");
    assert_true(e.retry_after == -1);
    e = parse(429, cap, "");
    assert_true(e.retry_after == -1);
    e = parse(503, "", NULL);
    assert_true(e.retry_after == -1);

    /* an HTTP-date 100 s ahead */
    time_t t = time(NULL) + 100;
    struct tm tm;
    gmtime_r(&t, &tm);
    char date[64];
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    e = parse(503, "", date);
    assert_true(e.retry_after >= 95 && e.retry_after <= 100);
    /* a date in the past means "now" */
    e = parse(503, "", "Wed, 21 Oct 2015 07:28:00 GMT");
    assert_true(e.retry_after == 0);

    /* Found by fuzz_druid_error: values that overflow a timer are capped at 2^31 s
     * (RFC 9111 §1.2.2), never infinite. */
    e = parse(429, cap, "1e999");
    assert_true(e.retry_after == 2147483648.0);
    e = parse(429, cap, "99999999999999999999999");
    assert_true(e.retry_after == 2147483648.0);
    e = parse(503, "", "2147483647");
    assert_true(e.retry_after == 2147483647.0);
}

static void test_set_and_names(void **state)
{
    (void)state;
    struct druid_error e;
    memset(&e, 0x5a, sizeof e);
    druid_error_set(&e, DRUID_ERR_TRUNCATED, "body ended after %d rows", 42);
    assert_int_equal(e.kind, DRUID_ERR_TRUNCATED);
    assert_int_equal(e.http_status, 0);
    assert_string_equal(e.code, "");
    assert_string_equal(e.category, "");
    assert_string_equal(e.message, "body ended after 42 rows");
    assert_true(e.retry_after == -1);

    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    druid_error_set(&e, DRUID_ERR_PROTOCOL, "%s", big);
    assert_int_equal(strlen(e.message), sizeof e.message - 1);

    assert_string_equal(druid_err_kind_name(DRUID_OK), "ok");
    assert_string_equal(druid_err_kind_name(DRUID_ERR_TRANSIENT), "transient");
    assert_string_equal(druid_err_kind_name(DRUID_ERR_AUTH), "auth");
    assert_string_equal(druid_err_kind_name(DRUID_ERR_QUERY), "query");
    assert_string_equal(druid_err_kind_name(DRUID_ERR_SERVER), "server");
    assert_string_equal(druid_err_kind_name(DRUID_ERR_TRUNCATED), "truncated");
    assert_string_equal(druid_err_kind_name(DRUID_ERR_TRANSPORT), "transport");
    assert_string_equal(druid_err_kind_name(DRUID_ERR_PROTOCOL), "protocol");

    assert_true(druid_err_retryable(DRUID_ERR_TRANSIENT));
    assert_true(druid_err_retryable(DRUID_ERR_SERVER));
    assert_true(druid_err_retryable(DRUID_ERR_TRUNCATED));
    assert_true(druid_err_retryable(DRUID_ERR_TRANSPORT));
    assert_false(druid_err_retryable(DRUID_ERR_QUERY));
    assert_false(druid_err_retryable(DRUID_ERR_AUTH));
    assert_false(druid_err_retryable(DRUID_ERR_PROTOCOL));
    assert_false(druid_err_retryable(DRUID_OK));
}

static void test_long_fields_truncated(void **state)
{
    (void)state;
    char body[4000];
    char code[200], msg[2000];
    memset(code, 'c', sizeof code - 1);
    code[sizeof code - 1] = '\0';
    memset(msg, 'm', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    snprintf(body, sizeof body, "{\"error\":\"%s\",\"errorMessage\":\"%s\"}", code, msg);
    struct druid_error e = parse(500, body, NULL);
    assert_int_equal(e.kind, DRUID_ERR_SERVER);
    assert_int_equal(strlen(e.code), sizeof e.code - 1);
    assert_int_equal(strlen(e.message), sizeof e.message - 1);
}

/* libcurl failures: the reason once, and which ones a retry cannot cure */
static void test_from_curl(void **state)
{
    (void)state;
    struct druid_error e;
    druid_error_from_curl(&e, 7,
                          "Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to "
                          "server",
                          0);
    assert_int_equal(e.kind, DRUID_ERR_TRANSPORT);
    assert_string_equal(
        e.message, "Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server");
    assert_string_equal(e.category, "");
    assert_false(druid_error_permanent(&e));
    assert_true(druid_error_retryable(&e));
    assert_true(e.retry_after < 0);

    druid_error_from_curl(&e, 35,
                          "OpenSSL/3.0.19: error:0A00010B:SSL routines::wrong version number", 0);
    assert_string_equal(e.message, "SSL connect error: OpenSSL/3.0.19: error:0A00010B:SSL "
                                   "routines::wrong version number");
    assert_string_equal(e.category, DRUID_CAUSE_TLS);
    assert_true(druid_error_permanent(&e));
    assert_false(druid_error_retryable(&e));

    druid_error_from_curl(&e, 60, "SSL certificate problem: self-signed certificate", 0);
    assert_string_equal(e.category, DRUID_CAUSE_TLS);
    druid_error_from_curl(&e, 6, "Could not resolve host: no-such-host.invalid", 0);
    assert_string_equal(e.category, DRUID_CAUSE_UNKNOWN_HOST);
    assert_false(druid_error_retryable(&e));
    druid_error_from_curl(&e, 1, "Received HTTP/0.9 when not allowed", 0);
    assert_string_equal(e.category, DRUID_CAUSE_NOT_HTTP);
    assert_false(druid_error_retryable(&e));
    druid_error_from_curl(&e, 8, "", 0);
    assert_string_equal(e.message, "Weird server reply: no detail");
    assert_string_equal(e.category, DRUID_CAUSE_NOT_HTTP);
    /* timeouts, resets, an empty reply: worth retrying */
    druid_error_from_curl(&e, 28,
                          "Operation timed out after 3001 milliseconds with 0 bytes received", 0);
    assert_true(druid_error_retryable(&e));
    druid_error_from_curl(&e, 52, "Empty reply from server", 0);
    assert_true(druid_error_retryable(&e));
    druid_error_from_curl(&e, 56, "Recv failure: Connection reset by peer", 200);
    assert_true(druid_error_retryable(&e));
    assert_int_equal(e.http_status, 200);
    /* a category of Druid's own on a non-transport kind is not one of ours */
    druid_error_from_response(500, "{\"category\":\"TLS\",\"errorMessage\":\"m\"}", 36, NULL, &e);
    assert_false(druid_error_permanent(&e));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_curl),
        cmocka_unit_test(test_legacy_envelope),
        cmocka_unit_test(test_druid_exception_envelope),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_non_json),
        cmocka_unit_test(test_status_fallback),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_set_and_names),
        cmocka_unit_test(test_long_fields_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
