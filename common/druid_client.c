/* druid_client: Druid SQL over libcurl's multi interface on the libuv loop. See
 * druid_client.h. The curl socket callback maps each socket to a uv_poll_t and the timer
 * callback to one uv_timer_t; every completed transfer is collected in check_done(). */
#include "druid_client.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "buf.h"
#include "druid_lines.h"
#include "log.h"
#include "rowdec.h"

#define ERRBODY_MAX (64 * 1024)

struct druid_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    char *url;
    char *user;
    char *pass;
    char *ca;
    bool verify;
    long timeout_ms;
    long connect_ms; /* connect_timeout_seconds */
    size_t max_inflight;
    size_t inflight;
    size_t cancels;                 /* DELETE requests in flight */
    struct druid_query *active;     /* running transfers (doubly linked) */
    struct druid_query *queue_head; /* waiting for a slot, FIFO */
    struct druid_query *queue_tail;
};

struct druid_query {
    struct druid_client *c;
    struct druid_query *next, *prev;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char id[48];
    struct druid_query_ops ops;
    void *ud;
    struct druid_lines *lines;
    json_tokener *tok;
    druid_row_view_fn on_row_view;
    druid_row_line_fn on_row_line;
    bool line_left;     /* on_line_peek passed the line to on_line after on_row_line left it */
    struct rowdec *dec; /* with on_row_view */
    char **hdr[3];
    size_t nhdr;
    size_t ncols;
    uint64_t rows;
    long status;
    size_t header_bytes; /* all response header lines so far, for DRUID_HEADERS_MAX */
    bool body_started;   /* on_write was called: the headers are complete */
    struct buf errbody;
    char retry_after[64];
    char curl_err[CURL_ERROR_SIZE];
    struct druid_error err; /* set when we abort the transfer ourselves */
    bool running;
    bool cancelled;
    bool internal; /* our own DELETE /druid/v2/sql/{id}: no caller, no slot */
    bool want_pause;
    bool curl_paused;
};

struct sockctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct druid_client *c;
    bool closing;
};

static void check_done(struct druid_client *c);
static void start_pending(struct druid_client *c);

/* ---- curl <-> libuv glue ---- */

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sockctx *sc = h->data;
    struct druid_client *c = sc->c;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    int running;
    curl_multi_socket_action(c->multi, sc->fd, flags, &running);
    check_done(c);
}

static void free_sockctx(uv_handle_t *h)
{
    free(h->data);
}

static int on_curl_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    struct druid_client *c = userp;
    struct sockctx *sc = socketp;
    if (sc && sc->closing)
        return 0; /* curl_multi_cleanup may report a socket we already let go of */
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            sc->closing = true;
            uv_poll_stop(&sc->poll);
            uv_close((uv_handle_t *)&sc->poll, free_sockctx);
            curl_multi_assign(c->multi, s, NULL);
        }
        return 0;
    }
    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc)
            return -1;
        sc->fd = s;
        sc->c = c;
        if (uv_poll_init_socket(c->loop, &sc->poll, s) != 0) {
            free(sc);
            return -1;
        }
        sc->poll.data = sc;
        curl_multi_assign(c->multi, s, sc);
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&sc->poll, ev, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    struct druid_client *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    struct druid_client *c = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- response parsing ---- */

static void free_hdr(struct druid_query *q)
{
    for (size_t h = 0; h < 3; h++) {
        if (!q->hdr[h])
            continue;
        for (size_t i = 0; i < q->ncols; i++)
            free(q->hdr[h][i]);
        free(q->hdr[h]);
        q->hdr[h] = NULL;
    }
}

static int take_header_row(struct druid_query *q, struct json_object *arr)
{
    size_t n = json_object_array_length(arr);
    if (q->nhdr == 0)
        q->ncols = n;
    else if (n != q->ncols) {
        druid_error_set(&q->err, DRUID_ERR_PROTOCOL, "header row %zu has %zu columns, expected %zu",
                        q->nhdr + 1, n, q->ncols);
        return -1;
    }
    char **row = calloc(n ? n : 1, sizeof *row);
    if (!row)
        abort();
    q->hdr[q->nhdr] = row;
    for (size_t i = 0; i < n; i++) {
        struct json_object *v = json_object_array_get_idx(arr, i);
        if (v && json_object_is_type(v, json_type_string))
            row[i] = strdup(json_object_get_string(v));
        else if (v || q->nhdr == 0) {
            druid_error_set(&q->err, DRUID_ERR_PROTOCOL,
                            "header row %zu: column %zu is not a string", q->nhdr + 1, i + 1);
            q->nhdr++;
            return -1;
        }
    }
    q->nhdr++;
    if (q->nhdr == 3 && q->ops.on_header) {
        struct druid_header h = {q->ncols, (const char *const *)q->hdr[0],
                                 (const char *const *)q->hdr[1], (const char *const *)q->hdr[2]};
        if (q->ops.on_header(q->ud, &h) != 0) {
            druid_error_set(&q->err, DRUID_ERR_PROTOCOL, "aborted by consumer");
            return -1;
        }
    }
    return 0;
}

/* The decoded size of a line, less its string bytes, from one pass over the text: every ','
 * starts one more value or member, every '[' / '{' one more container. Stops counting once
 * past the limit. Strings are skipped (their bytes are bounded by the line itself). */
static size_t tree_cost(const char *s, size_t n)
{
    size_t cost = DRUID_COST_VALUE;
    for (size_t i = 0; i < n && cost <= DRUID_ROW_TREE_MAX; i++) {
        switch (s[i]) {
        case '"':
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            break;
        case ',':
            cost += DRUID_COST_VALUE;
            break;
        case '[':
            cost += DRUID_COST_ARRAY;
            break;
        case '{':
            cost += DRUID_COST_OBJECT;
            break;
        default:
            break;
        }
    }
    return cost;
}

/* A data line to the raw-line consumer: 0 taken, DRUID_LINE_DECODE left to the decoders,
 * -1 aborted (the query's error set). */
static int row_line(struct druid_query *q, const char *line, size_t len)
{
    int rc = q->on_row_line(q->ud, line, len);
    if (rc != DRUID_LINE_DECODE)
        q->rows++;
    if (rc == 0 || rc == DRUID_LINE_DECODE)
        return rc;
    druid_error_set(&q->err, DRUID_ERR_PROTOCOL, "aborted by consumer");
    return -1;
}

/* A line of ncols scalars costs this in tree_cost: one over the limit cannot reach the
 * raw-line consumer, which takes no other kind of line. */
static bool row_line_wanted(const struct druid_query *q)
{
    return q->on_row_line && q->nhdr == 3 &&
           DRUID_COST_ARRAY + q->ncols * (size_t)DRUID_COST_VALUE <= DRUID_ROW_TREE_MAX;
}

/* A line inside one piece of the body, where it arrived (druid_lines_set_peek). */
static int on_line_peek(void *ud, const char *line, size_t len)
{
    struct druid_query *q = ud;
    if (!row_line_wanted(q))
        return DRUID_LINES_PASS;
    int rc = row_line(q, line, len);
    if (rc == DRUID_LINE_DECODE) {
        q->line_left = true; /* on_line gets it next: do not offer it twice */
        return DRUID_LINES_PASS;
    }
    return rc;
}

static int on_line(void *ud, char *line, size_t len)
{
    struct druid_query *q = ud;
    bool left = q->line_left;
    q->line_left = false;
    if (!left && row_line_wanted(q)) {
        int rc = row_line(q, line, len);
        if (rc != DRUID_LINE_DECODE)
            return rc;
    }
    if (q->on_row_view && q->nhdr == 3) {
        const struct rowenc_value *v;
        size_t n;
        if (!q->dec && !(q->dec = rowdec_new()))
            abort(); /* as buf: no progress without memory */
        if (rowdec_decode(q->dec, line, len, &v, &n) == ROWDEC_OK) {
            if (n != q->ncols) {
                druid_error_set(&q->err, DRUID_ERR_PROTOCOL,
                                "row %llu has %zu values, expected %zu",
                                (unsigned long long)q->rows + 1, n, q->ncols);
                return -1;
            }
            q->rows++;
            if (q->on_row_view(q->ud, v, n) != 0) {
                druid_error_set(&q->err, DRUID_ERR_PROTOCOL, "aborted by consumer");
                return -1;
            }
            return 0;
        }
        /* anything else json-c decodes, or rejects, as it always did */
    }
    if (tree_cost(line, len) > DRUID_ROW_TREE_MAX) {
        druid_error_set(&q->err, DRUID_ERR_PROTOCOL,
                        "line %llu of the response holds too many JSON values: decoded, they "
                        "would take more than the %u MiB limit of one row",
                        (unsigned long long)(q->nhdr + q->rows + 1), DRUID_ROW_TREE_MAX >> 20);
        return -1;
    }
    json_tokener_reset(q->tok);
    struct json_object *obj = json_tokener_parse_ex(q->tok, line, (int)len);
    if (!obj && json_tokener_get_error(q->tok) == json_tokener_error_depth) {
        druid_error_set(&q->err, DRUID_ERR_PROTOCOL,
                        "line %llu of the response nests JSON deeper than the limit of %d "
                        "levels in a value (json-c: %s)",
                        (unsigned long long)(q->nhdr + q->rows + 1), DRUID_JSON_DEPTH,
                        json_tokener_error_desc(json_tokener_error_depth));
        return -1;
    }
    if (!obj || json_tokener_get_error(q->tok) != json_tokener_success ||
        json_tokener_get_parse_end(q->tok) != len || !json_object_is_type(obj, json_type_array)) {
        druid_error_set(&q->err, DRUID_ERR_PROTOCOL,
                        "line %llu of the response is not a JSON array",
                        (unsigned long long)(q->nhdr + q->rows + 1));
        json_object_put(obj);
        return -1;
    }
    int rc = 0;
    if (q->nhdr < 3) {
        rc = take_header_row(q, obj);
    } else if (json_object_array_length(obj) != q->ncols) {
        druid_error_set(&q->err, DRUID_ERR_PROTOCOL, "row %llu has %zu values, expected %zu",
                        (unsigned long long)q->rows + 1, json_object_array_length(obj), q->ncols);
        rc = -1;
    } else {
        q->rows++;
        if (q->ops.on_row && q->ops.on_row(q->ud, obj) != 0) {
            druid_error_set(&q->err, DRUID_ERR_PROTOCOL, "aborted by consumer");
            rc = -1;
        }
    }
    json_object_put(obj);
    return rc;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct druid_query *q = ud;
    size_t n = size * nmemb;
    if (q->cancelled || q->err.kind != DRUID_OK)
        return 0;
    if (q->want_pause) {
        /* curl keeps this chunk and hands it to us again after the unpause */
        q->curl_paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    q->body_started = true;
    if (q->status == 0)
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &q->status);
    if (q->status != 200) {
        if (q->errbody.len < ERRBODY_MAX)
            buf_append(&q->errbody, ptr,
                       n < ERRBODY_MAX - q->errbody.len ? n : ERRBODY_MAX - q->errbody.len);
        return n;
    }
    int rc = druid_lines_feed(q->lines, ptr, n);
    if (rc != 0) {
        if (q->err.kind == DRUID_OK) {
            if (rc == DRUID_LINES_E_AFTER_END)
                druid_error_set(&q->err, DRUID_ERR_PROTOCOL, "data after the end marker");
            else if (rc == DRUID_LINES_E_TOOLONG && q->nhdr < 3)
                druid_error_set(&q->err, DRUID_ERR_PROTOCOL,
                                "a response line exceeds the %u MiB limit (header row %zu)",
                                DRUID_LINE_MAX >> 20, q->nhdr + 1);
            else if (rc == DRUID_LINES_E_TOOLONG)
                druid_error_set(&q->err, DRUID_ERR_PROTOCOL,
                                "a response line exceeds the %u MiB limit (row %llu)",
                                DRUID_LINE_MAX >> 20, (unsigned long long)q->rows + 1);
            else if (rc == DRUID_LINES_E_NOMEM)
                druid_error_set(&q->err, DRUID_ERR_PROTOCOL,
                                "out of memory buffering response row %llu",
                                (unsigned long long)q->rows + 1);
            else
                druid_error_set(&q->err, DRUID_ERR_PROTOCOL, "response parse failed (%d)", rc);
        }
        return 0;
    }
    return n;
}

static size_t on_header_line(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct druid_query *q = ud;
    size_t n = size * nmemb;
    static const char key[] = "retry-after:";
    /* libcurl keeps every header line until the transfer ends; a server sending endless
     * headers would otherwise grow that without bound (returning less than n aborts). */
    q->header_bytes += n;
    if (q->header_bytes > DRUID_HEADERS_MAX) {
        if (q->err.kind == DRUID_OK)
            druid_error_set(&q->err, DRUID_ERR_PROTOCOL,
                            "Druid's response headers exceed %u KiB (%zu bytes so far)",
                            DRUID_HEADERS_MAX >> 10, q->header_bytes);
        return 0;
    }
    if (n > sizeof key && strncasecmp(ptr, key, sizeof key - 1) == 0) {
        size_t off = sizeof key - 1;
        while (off < n && (ptr[off] == ' ' || ptr[off] == '\t'))
            off++;
        size_t len = n - off;
        while (len > 0 && (ptr[off + len - 1] == '\r' || ptr[off + len - 1] == '\n'))
            len--;
        if (len >= sizeof q->retry_after)
            len = sizeof q->retry_after - 1;
        memcpy(q->retry_after, ptr + off, len);
        q->retry_after[len] = '\0';
    }
    return n;
}

/* ---- query lifecycle ---- */

static void query_free(struct druid_query *q)
{
    if (q->easy)
        curl_easy_cleanup(q->easy);
    curl_slist_free_all(q->headers);
    free(q->body);
    druid_lines_free(q->lines);
    if (q->tok)
        json_tokener_free(q->tok);
    rowdec_free(q->dec);
    free_hdr(q);
    buf_free(&q->errbody);
    free(q);
}

static void list_remove(struct druid_query **head, struct druid_query *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        *head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->next = q->prev = NULL;
}

/* Options every request to Druid shares: auth, TLS, bookkeeping. */
static void common_options(struct druid_client *c, struct druid_query *q)
{
    CURL *e = q->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, q);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, q->curl_err);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_ms);
    if (c->user) {
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(e, CURLOPT_USERNAME, c->user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, c->pass ? c->pass : "");
    }
    if (c->ca)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, c->verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, c->verify ? 2L : 0L);
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

/* Best effort: Druid would otherwise run an abandoned query to its end (or its timeout). */
static void send_cancel(struct druid_client *c, const char *id)
{
    struct druid_query *q = calloc(1, sizeof *q);
    if (!q)
        return;
    q->c = c;
    q->internal = true;
    snprintf(q->id, sizeof q->id, "%s", id);
    q->easy = curl_easy_init();
    if (!q->easy) {
        free(q);
        return;
    }
    struct buf u = BUF_INIT;
    buf_printf(&u, "%s/%s", c->url, id); /* ids are ours: "druid-syncd-" and hex */
    curl_easy_setopt(q->easy, CURLOPT_URL, u.data);
    buf_free(&u);
    curl_easy_setopt(q->easy, CURLOPT_CUSTOMREQUEST, "DELETE");
    curl_easy_setopt(q->easy, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(q->easy, CURLOPT_TIMEOUT_MS, 5000L);
    common_options(c, q);
    if (curl_multi_add_handle(c->multi, q->easy) != CURLM_OK) {
        query_free(q);
        return;
    }
    c->cancels++;
    q->running = true;
    q->next = c->active;
    if (c->active)
        c->active->prev = q;
    c->active = q;
}

static int query_start(struct druid_query *q)
{
    struct druid_client *c = q->c;
    q->easy = curl_easy_init();
    q->lines = druid_lines_new(DRUID_LINE_MAX, on_line, q);
    if (q->lines && q->on_row_line)
        druid_lines_set_peek(q->lines, on_line_peek);
    /* json-c accepts max_depth - 1 levels of nesting; one more level is the row array */
    q->tok = json_tokener_new_ex(DRUID_JSON_DEPTH + 2);
    if (!q->easy || !q->lines || !q->tok)
        return -1;
    q->headers = curl_slist_append(q->headers, "Content-Type: application/json");
    q->headers = curl_slist_append(q->headers, "Accept: application/json");
    CURL *e = q->easy;
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(q->body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header_line);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, q);
    common_options(c, q);
    /* Druid enforces the query timeout itself (context.timeout) and answers 504; ours is a
     * backstop a little later for a server that stops answering altogether. */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms + 5000);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK)
        return -1;
    q->running = true;
    c->inflight++;
    q->next = c->active;
    if (c->active)
        c->active->prev = q;
    c->active = q;
    log_debug("druid", "query %s started", q->id);
    return 0;
}

static void query_finish(struct druid_query *q, CURLcode res)
{
    struct druid_client *c = q->c;
    curl_multi_remove_handle(c->multi, q->easy);
    list_remove(&c->active, q);
    if (q->internal) {
        long st = 0;
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &st);
        log_debug("druid", "cancel of %s: %s, HTTP %ld", q->id, curl_easy_strerror(res), st);
        c->cancels--;
        query_free(q);
        return;
    }
    c->inflight--;
    q->running = false;
    if (q->cancelled) {
        query_free(q);
        return;
    }
    struct druid_error err;
    memset(&err, 0, sizeof err);
    err.retry_after = -1;
    if (q->status == 0)
        curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &q->status);
    if (q->err.kind != DRUID_OK) {
        err = q->err;
        err.http_status = q->status;
    } else if (res == CURLE_OUT_OF_MEMORY && !q->body_started) {
        /* libcurl's only out-of-memory before the body in practice: one header line longer
         * than its 100 KiB line buffer (CURL_MAX_HTTP_HEADER), which it reports as OOM. */
        druid_error_set(&err, DRUID_ERR_PROTOCOL,
                        "Druid's response headers exceed %u KiB (one header line is longer "
                        "than libcurl's 100 KiB line limit; %zu bytes of complete header lines "
                        "before it)",
                        DRUID_HEADERS_MAX >> 10, q->header_bytes);
        err.http_status = q->status;
    } else if (res != CURLE_OK) {
        /* the reason once, and whether a retry can cure it (TLS, unknown host, not HTTP) */
        druid_error_from_curl(&err, (int)res, q->curl_err, q->status);
    } else if (q->status == 200) {
        if (druid_lines_finish(q->lines) != 0)
            druid_error_set(&err, DRUID_ERR_TRUNCATED,
                            "truncated response: the body ended without Druid's end marker "
                            "after %llu rows",
                            (unsigned long long)q->rows);
        else if (q->nhdr < 3)
            druid_error_set(&err, DRUID_ERR_PROTOCOL,
                            "response has %zu header rows, 3 were requested", q->nhdr);
        err.http_status = 200;
    } else {
        druid_error_from_response(q->status, q->errbody.data, q->errbody.len,
                                  q->retry_after[0] ? q->retry_after : NULL, &err);
    }
    log_debug("druid", "query %s done: %s, %llu rows", q->id, druid_err_kind_name(err.kind),
              (unsigned long long)q->rows);
    if (q->ops.on_done)
        q->ops.on_done(q->ud, &err);
    query_free(q);
}

static void check_done(struct druid_client *c)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct druid_query *q = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
        query_finish(q, m->data.result);
    }
    start_pending(c);
}

static void start_pending(struct druid_client *c)
{
    while (c->queue_head && c->inflight < c->max_inflight) {
        struct druid_query *q = c->queue_head;
        c->queue_head = q->next;
        if (!c->queue_head)
            c->queue_tail = NULL;
        q->next = q->prev = NULL;
        if (query_start(q) != 0) {
            struct druid_error err;
            druid_error_set(&err, DRUID_ERR_TRANSPORT, "could not start the HTTP request");
            if (q->ops.on_done)
                q->ops.on_done(q->ud, &err);
            query_free(q);
        }
    }
}

/* ---- public API ---- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The password is scrubbed before its memory goes back to the allocator. */
static void free_settings(struct druid_client *c)
{
    free(c->url);
    free(c->user);
    if (c->pass)
        explicit_bzero(c->pass, strlen(c->pass));
    free(c->pass);
    free(c->ca);
}

static void apply_config(struct druid_client *c, const struct config *cfg)
{
    free_settings(c);
    struct buf u = BUF_INIT;
    const char *host = cfg->druid_host;
    bool v6 = strchr(host, ':') != NULL && host[0] != '[';
    buf_printf(&u, "%s://%s%s%s:%d/druid/v2/sql", cfg->use_ssl ? "https" : "http", v6 ? "[" : "",
               host, v6 ? "]" : "", cfg->druid_port);
    c->url = buf_steal(&u);
    c->user = dup_or_null(cfg->druid_username);
    c->pass = dup_or_null(cfg->druid_password);
    c->ca = dup_or_null(cfg->tls_ca_file);
    c->verify = cfg->tls_verify;
    c->timeout_ms = (long)(cfg->request_timeout_seconds * 1000.0);
    c->connect_ms = (long)(cfg->connect_timeout_seconds * 1000.0);
    if (c->connect_ms < 1)
        c->connect_ms = 1;
    c->max_inflight = (size_t)cfg->max_concurrent_queries;
}

struct druid_client *druid_client_new(uv_loop_t *loop, const struct config *cfg)
{
    static bool curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return NULL;
        curl_ready = true;
    }
    struct druid_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->multi = curl_multi_init();
    if (!c->multi) {
        free(c);
        return NULL;
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    apply_config(c, cfg);
    return c;
}

void druid_client_set_config(struct druid_client *c, const struct config *cfg)
{
    apply_config(c, cfg);
    start_pending(c);
}

static void free_client_cb(uv_handle_t *h)
{
    free(h->data);
}

void druid_client_free(struct druid_client *c)
{
    if (!c)
        return;
    while (c->active) {
        struct druid_query *q = c->active;
        curl_multi_remove_handle(c->multi, q->easy);
        list_remove(&c->active, q);
        query_free(q);
    }
    while (c->queue_head) {
        struct druid_query *q = c->queue_head;
        c->queue_head = q->next;
        query_free(q);
    }
    curl_multi_cleanup(c->multi);
    free_settings(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, free_client_cb);
}

static void make_id(char *out, size_t n)
{
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        /* getrandom on Linux does not fail for 16 bytes after boot; keep ids unique anyway */
        static unsigned long ctr;
        memset(r, 0, sizeof r);
        memcpy(r, &ctr, sizeof ctr);
        ctr++;
    }
    size_t off = (size_t)snprintf(out, n, "druid-syncd-");
    for (size_t i = 0; i < sizeof r && off + 2 < n; i++)
        off += (size_t)snprintf(out + off, n - off, "%02x", r[i]);
}

static char *build_body(struct druid_client *c, const char *id, const char *sql,
                        const struct druid_param *p, size_t np)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "query", json_object_new_string(sql));
    json_object_object_add(o, "resultFormat", json_object_new_string("arrayLines"));
    json_object_object_add(o, "header", json_object_new_boolean(1));
    json_object_object_add(o, "typesHeader", json_object_new_boolean(1));
    json_object_object_add(o, "sqlTypesHeader", json_object_new_boolean(1));
    struct json_object *ctx = json_object_new_object();
    json_object_object_add(ctx, "sqlQueryId", json_object_new_string(id));
    json_object_object_add(ctx, "sqlTimeZone", json_object_new_string("UTC"));
    json_object_object_add(ctx, "timeout", json_object_new_int64(c->timeout_ms));
    json_object_object_add(o, "context", ctx);
    struct json_object *params = json_object_new_array();
    for (size_t i = 0; i < np; i++) {
        struct json_object *jp = json_object_new_object();
        switch (p[i].type) {
        case DRUID_PARAM_TIMESTAMP_MS:
            json_object_object_add(jp, "type", json_object_new_string("TIMESTAMP"));
            json_object_object_add(jp, "value", json_object_new_int64(p[i].i));
            break;
        case DRUID_PARAM_BIGINT:
            json_object_object_add(jp, "type", json_object_new_string("BIGINT"));
            json_object_object_add(jp, "value", json_object_new_int64(p[i].i));
            break;
        case DRUID_PARAM_VARCHAR:
            json_object_object_add(jp, "type", json_object_new_string("VARCHAR"));
            json_object_object_add(jp, "value", p[i].s ? json_object_new_string(p[i].s) : NULL);
            break;
        }
        json_object_array_add(params, jp);
    }
    json_object_object_add(o, "parameters", params);
    char *body = strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return body;
}

struct druid_query *druid_query_submit(struct druid_client *c, const char *sql,
                                       const struct druid_param *params, size_t nparams,
                                       const struct druid_query_ops *ops, void *ud)
{
    struct druid_query *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->c = c;
    q->ops = *ops;
    q->ud = ud;
    make_id(q->id, sizeof q->id);
    q->body = build_body(c, q->id, sql, params, nparams);
    if (!q->body) {
        free(q);
        return NULL;
    }
    log_debug("druid", "query %s: %s", q->id, sql);
    if (c->queue_tail)
        c->queue_tail->next = q;
    else
        c->queue_head = q;
    c->queue_tail = q;
    start_pending(c);
    return q;
}

void druid_query_cancel(struct druid_query *q)
{
    struct druid_client *c = q->c;
    if (q->running) {
        curl_multi_remove_handle(c->multi, q->easy);
        list_remove(&c->active, q);
        c->inflight--;
        send_cancel(c, q->id);
        query_free(q);
        start_pending(c);
        return;
    }
    /* still queued */
    struct druid_query *prev = NULL;
    for (struct druid_query *it = c->queue_head; it; prev = it, it = it->next) {
        if (it != q)
            continue;
        if (prev)
            prev->next = q->next;
        else
            c->queue_head = q->next;
        if (c->queue_tail == q)
            c->queue_tail = prev;
        break;
    }
    query_free(q);
}

void druid_query_on_row_line(struct druid_query *q, druid_row_line_fn fn)
{
    q->on_row_line = fn;
    if (q->lines) /* else query_start sets it: a queued query has no splitter yet */
        druid_lines_set_peek(q->lines, fn ? on_line_peek : NULL);
}

void druid_query_on_row_view(struct druid_query *q, druid_row_view_fn fn)
{
    q->on_row_view = fn;
}

void druid_query_pause(struct druid_query *q, bool paused)
{
    q->want_pause = paused;
    if (!paused && q->curl_paused && q->running) {
        q->curl_paused = false;
        curl_easy_pause(q->easy, CURLPAUSE_CONT);
    }
}

const char *druid_query_id(const struct druid_query *q)
{
    return q->id;
}

size_t druid_client_inflight(const struct druid_client *c)
{
    return c->inflight;
}

size_t druid_client_cancels_pending(const struct druid_client *c)
{
    return c->cancels;
}
