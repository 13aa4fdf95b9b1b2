/* metrics: Prometheus text exposition on the loop. See metrics.h.
 *
 * The responder understands exactly one request per connection (GET, headers up to 8 KiB)
 * and closes after answering: scrapers need nothing more, and it keeps the code small. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "log.h"

#define REQ_MAX 8192
#define CONN_TIMEOUT_MS 10000
#define MAX_LISTENERS 4 /* addresses of one name served at once */

struct metrics {
    uv_loop_t *loop;
    uv_tcp_t server[MAX_LISTENERS];
    int nserver;    /* initialised server handles */
    int pending;    /* handles (and the resolver) still to close or answer */
    bool resolving; /* uv_getaddrinfo still out: it owns m until it answers */
    bool stopped;   /* metrics_stop was called */
    bool answered;  /* on_ready was called */
    uv_getaddrinfo_t gai;
    uv_timer_t resolve_timer;
    char listen[300];
    char host[256];
    int port;
    void (*on_ready)(void *ud, const char *err);
    void *ud;
    const struct sched *s;
    const struct druid_client *d;
    const struct pgsink *p;
    struct mconn *conns;
};

static int g_up[2];

void metrics_set_up(enum metrics_target t, bool up)
{
    g_up[t] = up ? 1 : 0;
}

struct mconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct metrics *m;
    struct mconn *next, *prev;
    char req[REQ_MAX];
    size_t len;
    char *resp;
    uv_write_t wr;
    int closing; /* handles still to close */
};

/* Label values: backslash, double quote and newline are escaped (text format 0.0.4). */
static void label(struct buf *b, const char *v)
{
    buf_putc(b, '"');
    for (const char *c = v; *c; c++) {
        if (*c == '\\' || *c == '"')
            buf_putc(b, '\\');
        if (*c == '\n') {
            buf_puts(b, "\\n");
            continue;
        }
        buf_putc(b, *c);
    }
    buf_putc(b, '"');
}

struct render {
    struct buf *b;
    const char *metric;
    int which;
};

enum {
    M_ROWS,
    M_ROWS_READ,
    M_BYTES,
    M_SLICES,
    M_CYCLES_OK,
    M_CYCLES_FAILED,
    M_CYCLES_INTERRUPTED,
    M_LAG,
    M_LAST_SUCCESS,
    M_SYNCING,
    M_ADJ_NUL,
    M_ADJ_JSON,
    M_SKIPPED,
    M_DETECTION,
    M_POSTPONED,
    M_PAUSED,
    M_LEASE,
    M_COUNT
};

static void per_ds(void *ud, const struct sched_ds_info *i)
{
    struct render *r = ud;
    if (!i->selected)
        return;
    struct buf *b = r->b;
    const char *suffix = "";
    char val[64];
    switch (r->which) {
    case M_ROWS:
        snprintf(val, sizeof val, "%llu", (unsigned long long)i->rows_total);
        break;
    case M_ROWS_READ:
        snprintf(val, sizeof val, "%llu", (unsigned long long)i->rows_read_total);
        break;
    case M_BYTES:
        snprintf(val, sizeof val, "%llu", (unsigned long long)i->bytes_total);
        break;
    case M_SLICES:
        snprintf(val, sizeof val, "%llu", (unsigned long long)i->slices_total);
        break;
    case M_CYCLES_OK:
        suffix = ",result=\"ok\"";
        snprintf(val, sizeof val, "%llu", (unsigned long long)i->cycles_ok);
        break;
    case M_CYCLES_FAILED:
        suffix = ",result=\"failed\"";
        snprintf(val, sizeof val, "%llu", (unsigned long long)i->cycles_failed);
        break;
    case M_CYCLES_INTERRUPTED:
        suffix = ",result=\"interrupted\"";
        snprintf(val, sizeof val, "%llu", (unsigned long long)i->cycles_interrupted);
        break;
    case M_LAG:
        if (i->lag_seconds < 0)
            return;
        snprintf(val, sizeof val, "%.3f", i->lag_seconds);
        break;
    case M_LAST_SUCCESS:
        if (i->last_success <= 0)
            return;
        snprintf(val, sizeof val, "%.3f", i->last_success);
        break;
    case M_SYNCING:
        snprintf(val, sizeof val, "%d", strcmp(i->phase, "idle") != 0);
        break;
    case M_ADJ_NUL:
        suffix = ",rule=\"nul\"";
        snprintf(val, sizeof val, "%llu", (unsigned long long)i->nul_replaced_total);
        break;
    case M_ADJ_JSON:
        suffix = ",rule=\"json_as_string\"";
        snprintf(val, sizeof val, "%llu", (unsigned long long)i->json_as_string_total);
        break;
    case M_DETECTION:
        if (!i->detection)
            return;
        buf_printf(b, "%s{datasource=", r->metric);
        label(b, i->name);
        buf_puts(b, ",mode=");
        label(b, i->detection);
        buf_puts(b, "} 1\n");
        return;
    case M_POSTPONED:
        snprintf(val, sizeof val, "%zu", i->chunks_postponed);
        break;
    case M_PAUSED:
        snprintf(val, sizeof val, "%d", i->paused);
        break;
    case M_LEASE:
        snprintf(val, sizeof val, "%d", i->lease_held);
        break;
    case M_SKIPPED:
        snprintf(val, sizeof val, "%llu", (unsigned long long)i->rows_skipped_total);
        break;
    default:
        return;
    }
    buf_printf(b, "%s{datasource=", r->metric);
    label(b, i->name);
    buf_printf(b, "%s} %s\n", suffix, val);
}

static void family(struct buf *b, const struct sched *s, const char *name, const char *type,
                   const char *help, int which, int which2, int which3)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    struct render r = {b, name, which};
    sched_foreach(s, per_ds, &r);
    if (which2 >= 0) {
        r.which = which2;
        sched_foreach(s, per_ds, &r);
    }
    if (which3 >= 0) {
        r.which = which3;
        sched_foreach(s, per_ds, &r);
    }
}

char *metrics_render(const struct sched *s, const struct druid_client *d, const struct pgsink *p)
{
    struct buf b = BUF_INIT;
    family(&b, s, "druid_syncd_rows_synced_total", "counter",
           "Rows newly stored in PostgreSQL (new identities).", M_ROWS, -1, -1);
    family(&b, s, "druid_syncd_rows_read_total", "counter",
           "Rows read from Druid in committed slices (re-reads included).", M_ROWS_READ, -1, -1);
    family(&b, s, "druid_syncd_bytes_synced_total", "counter",
           "Bytes of COPY data in committed slices.", M_BYTES, -1, -1);
    family(&b, s, "druid_syncd_slices_total", "counter", "Slices committed.", M_SLICES, -1, -1);
    family(&b, s, "druid_syncd_cycles_total", "counter", "Sync cycles by result.", M_CYCLES_OK,
           M_CYCLES_FAILED, M_CYCLES_INTERRUPTED);
    family(&b, s, "druid_syncd_lag_seconds", "gauge",
           "Newest Druid row minus the committed cursor.", M_LAG, -1, -1);
    family(&b, s, "druid_syncd_last_success_timestamp_seconds", "gauge",
           "Unix time of the last successful cycle.", M_LAST_SUCCESS, -1, -1);
    family(&b, s, "druid_syncd_syncing", "gauge", "1 while a cycle of the datasource runs.",
           M_SYNCING, -1, -1);
    family(&b, s, "druid_syncd_values_adjusted_total", "counter",
           "Values stored by a documented rule instead of verbatim, by rule.", M_ADJ_NUL,
           M_ADJ_JSON, -1);
    family(&b, s, "druid_syncd_change_detection", "gauge",
           "How the last cycle found changes: segments (sys.segments and the chunk ledger), "
           "counts (row counts from the cursor), cursor or full.",
           M_DETECTION, -1, -1);
    family(&b, s, "druid_syncd_chunks_postponed", "gauge",
           "Time chunks not read in the last cycle because some of their segments are "
           "unavailable.",
           M_POSTPONED, -1, -1);
    family(&b, s, "druid_syncd_paused", "gauge",
           "1 while an operator has paused the datasource (druid-syncd pause).", M_PAUSED, -1, -1);
    family(&b, s, "druid_syncd_lease_held", "gauge",
           "1 while this instance holds the datasource's work lease (druid_syncd_leases).", M_LEASE,
           -1, -1);
    buf_puts(&b, "# HELP druid_syncd_instances_alive Instances sharing the destination, by "
                 "their heartbeat leases at the last renewal.\n"
                 "# TYPE druid_syncd_instances_alive gauge\n");
    buf_printf(&b, "druid_syncd_instances_alive %d\n", sched_live_instances(s));
    family(&b, s, "druid_syncd_rows_skipped_total", "counter",
           "Rows left out because no PostgreSQL value can hold them.", M_SKIPPED, -1, -1);
    const struct sched_counters *c = sched_get_counters(s);
    buf_puts(&b, "# HELP druid_syncd_retries_total Failures that were retried, by kind.\n"
                 "# TYPE druid_syncd_retries_total counter\n");
    for (int k = 1; k < SCHED_ERR_KINDS; k++)
        buf_printf(&b, "druid_syncd_retries_total{kind=\"%s\"} %llu\n", sched_err_kind_name(k),
                   (unsigned long long)c->retries[k]);
    buf_puts(&b, "# HELP druid_syncd_errors_total Failures that ended a cycle, by kind.\n"
                 "# TYPE druid_syncd_errors_total counter\n");
    for (int k = 1; k < SCHED_ERR_KINDS; k++)
        buf_printf(&b, "druid_syncd_errors_total{kind=\"%s\"} %llu\n", sched_err_kind_name(k),
                   (unsigned long long)c->errors[k]);
    buf_printf(&b,
               "# HELP druid_syncd_up 1 once the daemon has reached the peer, 0 while it waits "
               "for it.\n"
               "# TYPE druid_syncd_up gauge\n"
               "druid_syncd_up{target=\"druid\"} %d\n"
               "druid_syncd_up{target=\"postgres\"} %d\n",
               g_up[METRICS_DRUID], g_up[METRICS_POSTGRES]);
    buf_printf(&b,
               "# HELP druid_syncd_druid_queries_in_flight Druid queries running now.\n"
               "# TYPE druid_syncd_druid_queries_in_flight gauge\n"
               "druid_syncd_druid_queries_in_flight %zu\n"
               "# HELP druid_syncd_postgres_connections PostgreSQL connections open now.\n"
               "# TYPE druid_syncd_postgres_connections gauge\n"
               "druid_syncd_postgres_connections %zu\n",
               druid_client_inflight(d), pgsink_connections(p));
    return buf_steal(&b);
}

static void conn_closed(uv_handle_t *h)
{
    struct mconn *c = h->data;
    if (--c->closing == 0) {
        free(c->resp);
        free(c);
    }
}

static void conn_close(struct mconn *c)
{
    if (c->closing)
        return;
    c->closing = 2;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    conn_close(w->data);
}

static void respond(struct mconn *c, int code, const char *reason, const char *ctype,
                    const char *body)
{
    struct buf b = BUF_INIT;
    buf_printf(&b,
               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
               "Connection: close\r\n\r\n%s",
               code, reason, ctype, strlen(body), body);
    c->resp = buf_steal(&b);
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_buf_t ub = uv_buf_init(c->resp, (unsigned)strlen(c->resp));
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &ub, 1, on_written) != 0)
        conn_close(c);
}

static void handle_request(struct mconn *c)
{
    struct metrics *m = c->m;
    if (strncmp(c->req, "GET ", 4) != 0 && strncmp(c->req, "HEAD ", 5) != 0) {
        respond(c, 405, "Method Not Allowed", "text/plain", "only GET\n");
        return;
    }
    const char *path = strchr(c->req, ' ') + 1;
    if (strncmp(path, "/metrics ", 9) == 0 || strncmp(path, "/metrics?", 9) == 0 ||
        strncmp(path, "/ ", 2) == 0) {
        char *text = metrics_render(m->s, m->d, m->p);
        respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text);
        free(text);
        return;
    }
    respond(c, 404, "Not Found", "text/plain", "not found; try /metrics\n");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    struct mconn *c = h->data;
    b->base = c->req + c->len;
    b->len = REQ_MAX - 1 - c->len;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct mconn *c = s->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)n;
    c->req[c->len] = '\0';
    if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n"))
        handle_request(c);
    else if (c->len >= REQ_MAX - 1)
        respond(c, 431, "Request Header Fields Too Large", "text/plain", "too large\n");
}

/* m goes once every handle has closed and the resolver has answered */
static void maybe_free(struct metrics *m)
{
    if (m->stopped && m->pending == 0 && !m->resolving)
        free(m);
}

static void handle_closed(uv_handle_t *h)
{
    struct metrics *m = h->data;
    m->pending--;
    maybe_free(m);
}

static void answer(struct metrics *m, const char *err)
{
    uv_timer_stop(&m->resolve_timer);
    if (m->answered || m->stopped)
        return;
    m->answered = true;
    if (!err)
        log_info("metrics", "serving Prometheus metrics on http://%s/metrics", m->listen);
    m->on_ready(m->ud, err);
}

static void on_conn_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct metrics *m = server->data;
    if (status < 0)
        return;
    struct mconn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->m = m;
    uv_tcp_init(m->loop, &c->tcp);
    uv_timer_init(m->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->next = m->conns;
    if (m->conns)
        m->conns->prev = c;
    m->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_conn_timeout, CONN_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* Binds and listens on one address; 0 or a libuv error. */
static int listen_on(struct metrics *m, const struct sockaddr *sa)
{
    if (m->nserver == MAX_LISTENERS)
        return 0;
    uv_tcp_t *t = &m->server[m->nserver++];
    uv_tcp_init(m->loop, t);
    t->data = m;
    m->pending++;
    /* one listener per address: an IPv6 one must not also take the IPv4 port of another */
    int r =
        uv_tcp_bind(t, sa, sa->sa_family == AF_INET6 && m->host[0] != ':' ? UV_TCP_IPV6ONLY : 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)t, 64, on_connection);
    if (r != 0)
        uv_close((uv_handle_t *)t, handle_closed); /* its slot stays used: never reused */
    return r;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct metrics *m = req->data;
    m->resolving = false;
    if (m->stopped || m->answered) {
        uv_freeaddrinfo(res);
        maybe_free(m);
        return;
    }
    char err[1024];
    if (status != 0) {
        snprintf(err, sizeof err, "metrics_listen %s: cannot resolve \"%s\": %s", m->listen,
                 m->host, uv_strerror(status));
        uv_freeaddrinfo(res);
        answer(m, err);
        return;
    }
    int ok = 0, last = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int r = listen_on(m, ai->ai_addr);
        if (r == UV_EAFNOSUPPORT && m->listen[0] == ':') {
            /* ":PORT" on a host without IPv6: every IPv4 address */
            struct sockaddr_in v4;
            uv_ip4_addr("0.0.0.0", m->port, &v4);
            r = listen_on(m, (const struct sockaddr *)&v4);
        }
        if (r == 0)
            ok++;
        else
            last = r;
    }
    uv_freeaddrinfo(res);
    if (ok == 0) {
        snprintf(err, sizeof err, "metrics_listen %s: %s", m->listen,
                 last ? uv_strerror(last) : "no address");
        answer(m, err);
        return;
    }
    answer(m, NULL);
}

static void on_resolve_timeout(uv_timer_t *t)
{
    struct metrics *m = t->data;
    char err[1024];
    snprintf(err, sizeof err,
             "metrics_listen %s: resolving \"%s\" took longer than connect_timeout_seconds",
             m->listen, m->host);
    uv_cancel((uv_req_t *)&m->gai); /* the answer, if it still comes, is ignored */
    answer(m, err);
}

struct metrics *metrics_start(uv_loop_t *loop, const char *listen, double resolve_timeout,
                              const struct sched *s, const struct druid_client *d,
                              const struct pgsink *p, void (*on_ready)(void *ud, const char *err),
                              void *ud, char *err, size_t errlen)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (config_parse_listen(listen, m->host, sizeof m->host, &m->port) != 0) {
        snprintf(err, errlen, "metrics_listen: cannot parse \"%s\"", listen);
        free(m);
        return NULL;
    }
    snprintf(m->listen, sizeof m->listen, "%s", listen);
    m->loop = loop;
    m->s = s;
    m->d = d;
    m->p = p;
    m->on_ready = on_ready;
    m->ud = ud;
    uv_timer_init(loop, &m->resolve_timer);
    m->resolve_timer.data = m;
    m->pending = 1;
    m->gai.data = m;
    char port[8];
    snprintf(port, sizeof port, "%d", m->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int r = uv_getaddrinfo(loop, &m->gai, on_resolved, m->host, port, &hints);
    if (r != 0) {
        snprintf(err, errlen, "metrics_listen %s: %s", listen, uv_strerror(r));
        m->stopped = true;
        uv_close((uv_handle_t *)&m->resolve_timer, handle_closed);
        return NULL;
    }
    m->resolving = true;
    uv_timer_start(&m->resolve_timer, on_resolve_timeout,
                   (uint64_t)(resolve_timeout > 0 ? resolve_timeout * 1000.0 : 1), 0);
    return m;
}

void metrics_stop(struct metrics *m)
{
    if (!m)
        return;
    while (m->conns)
        conn_close(m->conns);
    m->stopped = true;
    uv_timer_stop(&m->resolve_timer);
    uv_close((uv_handle_t *)&m->resolve_timer, handle_closed);
    for (int i = 0; i < m->nserver; i++)
        if (!uv_is_closing((uv_handle_t *)&m->server[i]))
            uv_close((uv_handle_t *)&m->server[i], handle_closed);
    if (m->resolving)
        uv_cancel((uv_req_t *)&m->gai);
    maybe_free(m);
}
