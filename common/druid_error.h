/* druid_error: Druid's error responses and transport failures. Parses both envelopes (the
 * legacy QueryException one before Druid 27 and the druidException one from 27), maps
 * libcurl's result codes, and classifies a failure into what the scheduler acts on: retry
 * with backoff, stop until reload, or give up for this cycle (a permanent failure: a
 * certificate, a TLS handshake, an unknown host, a peer that does not speak HTTP, a 4xx). */
#ifndef DSYNC_DRUID_ERROR_H
#define DSYNC_DRUID_ERROR_H

#include <stdbool.h>
#include <stddef.h>

enum druid_err_kind {
    DRUID_OK = 0,
    DRUID_ERR_TRANSIENT, /* 429, 503, 504, capacity, timeout: retry with backoff */
    DRUID_ERR_AUTH,      /* 401, 403: stop until the configuration is reloaded */
    DRUID_ERR_QUERY,     /* 4xx but 401/403/429, 501: the query is wrong; retrying won't help */
    DRUID_ERR_SERVER,    /* 500 and other 5xx: retried, within max_retries */
    DRUID_ERR_TRUNCATED, /* 200 but the body lacked the end marker: retried */
    DRUID_ERR_TRANSPORT, /* connect failure, reset, curl timeout, non-JSON error body */
    DRUID_ERR_PROTOCOL,  /* 200 with a body we cannot parse (bad JSON, missing header rows) */
};

/* Causes of a transport failure that cannot go away by retrying within a cycle (the next
 * cycle tries again): a certificate or TLS handshake failure, a host name the resolver does
 * not know, a peer that does not answer HTTP (PostgreSQL's port given as Druid's). */
#define DRUID_CAUSE_TLS "TLS"
#define DRUID_CAUSE_UNKNOWN_HOST "UNKNOWN_HOST"
#define DRUID_CAUSE_NOT_HTTP "NOT_HTTP"

struct druid_error {
    enum druid_err_kind kind;
    long http_status;   /* 0 when no response */
    char code[96];      /* legacy "error" value, else "errorCode"; "" if none */
    char category[48];  /* 27+ "category"; for a transport failure that retrying cannot cure,
                         * ours: DRUID_CAUSE_TLS, _UNKNOWN_HOST, _NOT_HTTP; "" if none */
    char message[1024]; /* Druid's errorMessage, or our own description */
    double retry_after; /* seconds from a Retry-After header, at most 2^31; -1 when absent */
};

/* Fills out from an HTTP error response. body may be NULL/empty or non-JSON (a proxy or
 * Jetty page): that is a transport-level failure. retry_after is the raw header value or
 * NULL (delta-seconds or an HTTP date). 401/403 are classified by status alone. */
void druid_error_from_response(long http_status, const char *body, size_t len,
                               const char *retry_after, struct druid_error *out);
/* Fills out for a failure with no HTTP response or with a bad 200 body. */
void druid_error_set(struct druid_error *out, enum druid_err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fills out for a libcurl failure: curl_code is the CURLcode, detail libcurl's error buffer
 * ("" or NULL when empty), http_status what was received (0: nothing). The message is
 * libcurl's reason said once. Kind TRANSPORT (timeouts included); category one of the
 * DRUID_CAUSE_ values when retrying cannot help. */
void druid_error_from_curl(struct druid_error *out, int curl_code, const char *detail,
                           long http_status);
/* Whether retrying a CURLcode within a cycle can help (connection refused, reset, timeout:
 * yes; TLS, certificate, unknown host, not HTTP, a malformed URL: no). */
bool druid_curl_retryable(int curl_code);
const char *druid_err_kind_name(enum druid_err_kind k);
/* The message without a leading "HTTP <status>: ", for callers that name the status
 * themselves (so that no line says "HTTP 401: HTTP 401: ..."). Points into e->message. */
const char *druid_error_reason(const struct druid_error *e);
/* TRANSIENT, SERVER, TRUNCATED, TRANSPORT are retryable; QUERY, AUTH, PROTOCOL are not. */
bool druid_err_retryable(enum druid_err_kind k);
/* A transport failure with a DRUID_CAUSE_ category: retrying within the cycle cannot help. */
bool druid_error_permanent(const struct druid_error *e);
/* druid_err_retryable(e->kind) and not druid_error_permanent(e): what a retry decision asks. */
bool druid_error_retryable(const struct druid_error *e);

#endif
