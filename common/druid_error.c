/* druid_error: parsing and classification of Druid error responses (reference §5). */
#include "druid_error.h"

#include <curl/curl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const struct {
    const char *name;
    enum druid_err_kind kind;
} categories[] = {
    {"CAPACITY_EXCEEDED", DRUID_ERR_TRANSIENT},
    {"TIMEOUT", DRUID_ERR_TRANSIENT},
    {"SERVICE_UNAVAILABLE", DRUID_ERR_TRANSIENT},
    {"UNAUTHORIZED", DRUID_ERR_AUTH},
    {"FORBIDDEN", DRUID_ERR_AUTH},
    {"INVALID_INPUT", DRUID_ERR_QUERY},
    {"NOT_FOUND", DRUID_ERR_QUERY},
    {"UNSUPPORTED", DRUID_ERR_QUERY},
};

/* Legacy QueryException codes (before Druid 27, and kept in the wrapped 27+ form). */
static const struct {
    const char *code;
    enum druid_err_kind kind;
} legacy_codes[] = {
    {"Query capacity exceeded", DRUID_ERR_TRANSIENT},
    {"Query timeout", DRUID_ERR_TRANSIENT},
    {"SQL parse failed", DRUID_ERR_QUERY},
    {"Plan validation failed", DRUID_ERR_QUERY},
    {"SQL query is unsupported", DRUID_ERR_QUERY},
    {"Unsupported query", DRUID_ERR_QUERY},
    {"Resource limit exceeded", DRUID_ERR_QUERY},
    {"Query context parse failed", DRUID_ERR_QUERY},
    {"Json parse failed", DRUID_ERR_QUERY},
    {"Unauthorized request", DRUID_ERR_AUTH},
};

static enum druid_err_kind kind_from_status(long s)
{
    switch (s) {
    case 401:
    case 403:
        return DRUID_ERR_AUTH;
    case 429:
    case 503:
    case 504:
        return DRUID_ERR_TRANSIENT;
    case 501:
        return DRUID_ERR_QUERY;
    }
    if (s >= 400 && s <= 499)
        return DRUID_ERR_QUERY; /* the request is wrong: 400, 404, 405, 409, 413, ... */
    if (s >= 400 && s <= 599)
        return DRUID_ERR_SERVER;
    if (s == 0)
        return DRUID_ERR_TRANSPORT;
    return DRUID_ERR_PROTOCOL; /* a 1xx/2xx/3xx handed in as an error: not something to retry */
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static const char *get_str(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* A delay larger than this is taken as this (RFC 9111 §1.2.2 does the same for an
 * overflowing delta-seconds): it keeps "1e999" or twenty digits from becoming an infinite
 * or overflowing timer. */
#define RETRY_AFTER_MAX 2147483648.0

/* Delta-seconds or an HTTP-date; -1 when absent or unreadable; at most RETRY_AFTER_MAX. */
static double parse_retry_after(const char *h)
{
    if (!h)
        return -1;
    while (*h == ' ' || *h == '\t')
        h++;
    if (!*h)
        return -1;
    if (*h >= '0' && *h <= '9') {
        char *end;
        double v = strtod(h, &end);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
            end++;
        if (*end == '\0')
            return v < RETRY_AFTER_MAX ? v : RETRY_AFTER_MAX;
        /* not a plain number: maybe a date starting with a digit ("07 Nov 2026 ...") */
    }
    time_t t = curl_getdate(h, NULL);
    if (t == (time_t)-1)
        return -1;
    double d = difftime(t, time(NULL));
    return d <= 0 ? 0 : d < RETRY_AFTER_MAX ? d : RETRY_AFTER_MAX;
}

static void truncated_body_excerpt(char *out, size_t cap, const char *body, size_t len)
{
    /* Keep a short, printable excerpt of a proxy page: it often names the real cause. */
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)body[i];
        out[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    out[o] = '\0';
}

void druid_error_from_response(long http_status, const char *body, size_t len,
                               const char *retry_after, struct druid_error *out)
{
    memset(out, 0, sizeof *out);
    out->http_status = http_status;
    out->retry_after = parse_retry_after(retry_after);

    struct json_object *root = NULL;
    if (body && len) {
        struct json_tokener *tok = json_tokener_new();
        if (tok) {
            root = json_tokener_parse_ex(tok, body, (int)(len > 0x7fffffff ? 0x7fffffff : len));
            /* Trailing garbage or an unfinished document is not a JSON error body. */
            if (root && (json_tokener_get_error(tok) != json_tokener_success ||
                         !json_object_is_type(root, json_type_object))) {
                json_object_put(root);
                root = NULL;
            }
            if (root) {
                size_t used = json_tokener_get_parse_end(tok);
                for (; used < len; used++) {
                    char c = body[used];
                    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
                        json_object_put(root);
                        root = NULL;
                        break;
                    }
                }
            }
            json_tokener_free(tok);
        }
    }

    enum druid_err_kind by_status = kind_from_status(http_status);
    if (!root) {
        /* A proxy or Jetty page, or nothing at all: the request never reached a Druid
         * that could answer, so it is a transport failure unless the status itself says
         * what to do (429/503/504 back off, 401/403 stop). */
        out->kind = by_status;
        if ((http_status >= 500 || http_status == 429) && by_status != DRUID_ERR_TRANSIENT &&
            by_status != DRUID_ERR_AUTH)
            out->kind = DRUID_ERR_TRANSPORT;
        if (by_status == DRUID_ERR_AUTH) {
            /* Jetty's HTML page for a bad Basic header says nothing a reader needs */
            snprintf(out->message, sizeof out->message, "HTTP %ld: %s", http_status,
                     http_status == 401 ? "Druid refused the credentials (Unauthorized)"
                                        : "the user may not read this (Forbidden)");
        } else if (!body || !len) {
            snprintf(out->message, sizeof out->message, "HTTP %ld with an empty body", http_status);
        } else {
            char excerpt[200];
            truncated_body_excerpt(excerpt, sizeof excerpt, body, len);
            snprintf(out->message, sizeof out->message, "HTTP %ld with a non-JSON body: %s",
                     http_status, excerpt);
        }
        return;
    }

    const char *error = get_str(root, "error");
    const char *code =
        error && strcmp(error, "druidException") != 0 ? error : get_str(root, "errorCode");
    const char *category = get_str(root, "category");
    const char *msg = get_str(root, "errorMessage");
    copy_str(out->code, sizeof out->code, code);
    copy_str(out->category, sizeof out->category, category);
    if (msg && *msg) /* an empty errorMessage says as little as none */
        copy_str(out->message, sizeof out->message, msg);
    else if (code)
        snprintf(out->message, sizeof out->message, "HTTP %ld: %s", http_status, code);
    else
        snprintf(out->message, sizeof out->message, "HTTP %ld with no error message", http_status);

    enum druid_err_kind kind = by_status;
    int found = 0;
    if (category) {
        kind = DRUID_ERR_SERVER; /* CANCELED, RUNTIME_FAILURE, UNCATEGORIZED, ... */
        for (size_t i = 0; i < sizeof categories / sizeof *categories; i++) {
            if (strcmp(category, categories[i].name) == 0) {
                kind = categories[i].kind;
                break;
            }
        }
        found = 1;
    } else if (error && strcmp(error, "druidException") != 0) {
        for (size_t i = 0; i < sizeof legacy_codes / sizeof *legacy_codes; i++) {
            if (strcasecmp(error, legacy_codes[i].code) == 0) {
                kind = legacy_codes[i].kind;
                found = 1;
                break;
            }
        }
    }
    if (!found)
        kind = by_status;
    /* 401/403 mean the credentials are wrong whatever the body says (reference §5.4). */
    if (http_status == 401 || http_status == 403)
        kind = DRUID_ERR_AUTH;
    /* any other 4xx but 429 says this request is wrong: asking again cannot help */
    else if (http_status >= 400 && http_status <= 499 && http_status != 429 &&
             druid_err_retryable(kind))
        kind = DRUID_ERR_QUERY;
    out->kind = kind;
    json_object_put(root);
}

void druid_error_set(struct druid_error *out, enum druid_err_kind kind, const char *fmt, ...)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->retry_after = -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof out->message, fmt, ap);
    va_end(ap);
}

/* The DRUID_CAUSE_ of a CURLcode retrying cannot cure, or NULL. */
static const char *curl_cause(int curl_code)
{
    switch ((CURLcode)curl_code) {
    /* the TLS layer: a certificate nobody trusts, a host name it does not match, a handshake
     * that fails (TLS against a plain HTTP port says "wrong version number") */
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
        return DRUID_CAUSE_TLS;
    /* a name the resolver does not know (a resolver that does not answer is a timeout) */
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return DRUID_CAUSE_UNKNOWN_HOST;
    /* the peer is not an HTTP server: PostgreSQL's port answers "HTTP/0.9" bytes */
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_LOGIN_DENIED:
    case CURLE_TOO_MANY_REDIRECTS:
        return DRUID_CAUSE_NOT_HTTP;
    default:
        return NULL;
    }
}

bool druid_curl_retryable(int curl_code)
{
    return curl_cause(curl_code) == NULL;
}

void druid_error_from_curl(struct druid_error *out, int curl_code, const char *detail,
                           long http_status)
{
    /* libcurl's detail often ends with its own summary: say it once */
    const char *what = curl_easy_strerror((CURLcode)curl_code);
    enum druid_err_kind kind = DRUID_ERR_TRANSPORT; /* timeouts too, as they always were */
    if (detail && detail[0] && strstr(detail, what))
        druid_error_set(out, kind, "%s", detail);
    else
        druid_error_set(out, kind, "%s: %s", what, detail && detail[0] ? detail : "no detail");
    out->http_status = http_status;
    const char *cause = curl_cause(curl_code);
    if (cause)
        copy_str(out->category, sizeof out->category, cause);
}

bool druid_error_permanent(const struct druid_error *e)
{
    return e->kind == DRUID_ERR_TRANSPORT && (strcmp(e->category, DRUID_CAUSE_TLS) == 0 ||
                                              strcmp(e->category, DRUID_CAUSE_UNKNOWN_HOST) == 0 ||
                                              strcmp(e->category, DRUID_CAUSE_NOT_HTTP) == 0);
}

bool druid_error_retryable(const struct druid_error *e)
{
    return druid_err_retryable(e->kind) && !druid_error_permanent(e);
}

const char *druid_err_kind_name(enum druid_err_kind k)
{
    switch (k) {
    case DRUID_OK:
        return "ok";
    case DRUID_ERR_TRANSIENT:
        return "transient";
    case DRUID_ERR_AUTH:
        return "auth";
    case DRUID_ERR_QUERY:
        return "query";
    case DRUID_ERR_SERVER:
        return "server";
    case DRUID_ERR_TRUNCATED:
        return "truncated";
    case DRUID_ERR_TRANSPORT:
        return "transport";
    case DRUID_ERR_PROTOCOL:
        return "protocol";
    }
    return "unknown";
}

bool druid_err_retryable(enum druid_err_kind k)
{
    return k == DRUID_ERR_TRANSIENT || k == DRUID_ERR_SERVER || k == DRUID_ERR_TRUNCATED ||
           k == DRUID_ERR_TRANSPORT;
}

const char *druid_error_reason(const struct druid_error *e)
{
    char prefix[32];
    int n = snprintf(prefix, sizeof prefix, "HTTP %ld: ", e->http_status);
    if (n > 0 && strncmp(e->message, prefix, (size_t)n) == 0)
        return e->message + n;
    return e->message;
}
