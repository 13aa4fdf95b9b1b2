/* pgconn: libpq in non-blocking mode on a uv_poll_t. See pgconn.h.
 *
 * The poll watches for readability whenever a result is awaited (and during COPY, to see the
 * server close the connection) and for writability only while libpq has unsent output
 * (PQflush() == 1), which is how COPY applies backpressure. libpq may read the server's
 * answer into its own buffer while it flushes, leaving nothing on the socket to wake the
 * poll: so after every send the results are also looked at once from a zero-delay timer.
 *
 * Host names are resolved by getaddrinfo on a detached thread of our own, which hands the
 * answer to the loop through a uv_async_t. Not on libuv's thread pool: a resolution there
 * cannot be cancelled once it runs, and the loop would wait for it (a resolver that never
 * answers held --once for its whole timeout after the connect bound had failed it). Every
 * address found is passed to libpq (host and hostaddr lists), so it tries them in turn as
 * it would by itself: ::1 first with a server listening on 127.0.0.1 only still connects. */
#include "pgconn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"

enum op {
    OP_NONE,
    OP_RESOLVE, /* host names being resolved off the loop */
    OP_CONNECT,
    OP_RESULT, /* waiting for a command's results */
    OP_COPY,   /* in COPY IN: only flushing */
};

/* One host name being resolved. Shared by the resolving thread and the loop (refs); the
 * loop abandons it under g_resolve_mu, after which the thread never touches the async. */
struct resolve {
    uv_async_t *async; /* on the loop; closed when the loop is done with the resolution */
    struct pgconn *c;  /* NULL once the connection gave up on it */
    char *name;
    int rc, sys_errno;
    struct addrinfo *res;
    int refs;
    bool abandoned;
};

static pthread_mutex_t g_resolve_mu = PTHREAD_MUTEX_INITIALIZER;

/* A host name resolves to at most this many addresses handed to libpq. */
#define PGCONN_MAX_ADDRS 16

struct pgconn {
    uv_loop_t *loop;
    char *conninfo;
    PGconn *pg;
    uv_poll_t *poll;   /* separate allocation: a closing handle outlives a socket switch */
    uv_timer_t *timer; /* separate allocation too: freed by the loop after pgconn_free */
    uv_timer_t *kick;
    int fd;
    enum op op;
    bool broken;
    PGresult *last;
    struct pgerr err;
    char errbuf[1024];
    pgconn_cb connect_cb;
    pgconn_result_cb result_cb;
    pgconn_each_cb each_cb;
    void *ud;
    void (*drain_cb)(void *ud);
    void *drain_ud;
    bool flushing;
    uint64_t connect_ms, op_ms;
    /* host resolution: the conninfo's host (and port) list; the host, hostaddr and port
     * lists for libpq built so far, one entry per address */
    char **hosts, **ports;
    size_t nhosts, nports, next_host, naddrs;
    struct buf host_list, hostaddr, port_list;
    struct resolve *resolving;
};

static void on_poll(uv_poll_t *h, int status, int events);
static void collect_results(struct pgconn *c);
static void drop_resolve(struct pgconn *c);

static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* Must run before libpq closes the socket: epoll must not watch a closed fd. */
static void drop_poll(struct pgconn *c)
{
    if (!c->poll)
        return;
    uv_poll_stop(c->poll);
    uv_close((uv_handle_t *)c->poll, free_handle);
    c->poll = NULL;
    c->fd = -1;
}

static void watch(struct pgconn *c, int events)
{
    int fd = c->pg ? PQsocket(c->pg) : -1;
    if (fd < 0)
        return;
    if (c->poll && fd != c->fd)
        drop_poll(c); /* libpq may switch sockets while connecting (several hosts, SSL) */
    if (!c->poll) {
        c->poll = malloc(sizeof *c->poll);
        if (!c->poll || uv_poll_init(c->loop, c->poll, fd) != 0) {
            free(c->poll);
            c->poll = NULL;
            return;
        }
        c->poll->data = c;
        c->fd = fd;
    }
    if (events)
        uv_poll_start(c->poll, events, on_poll);
    else
        uv_poll_stop(c->poll);
}

static void on_deadline(uv_timer_t *t);

/* (Re)arms the bound on waiting for the server; 0 disarms. */
static void arm(struct pgconn *c, uint64_t ms)
{
    if (ms)
        uv_timer_start(c->timer, on_deadline, ms, 0);
    else
        uv_timer_stop(c->timer);
}

static void close_pg(struct pgconn *c)
{
    drop_poll(c);
    if (c->last) {
        PQclear(c->last);
        c->last = NULL;
    }
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
}

/* The operation failed with c->err: the connection is given up (closed, so that the server
 * rolls back at once rather than keeping an aborted transaction open) and the waiting
 * callback hears of it. */
static void fail(struct pgconn *c)
{
    c->broken = true;
    enum op op = c->op;
    c->op = OP_NONE;
    arm(c, 0);
    uv_timer_stop(c->kick);
    drop_resolve(c); /* a late answer must not revive a connection that failed */
    close_pg(c);
    snprintf(c->errbuf, sizeof c->errbuf, "%s", c->err.message);
    if ((op == OP_CONNECT || op == OP_RESOLVE) && c->connect_cb)
        c->connect_cb(c->ud, c->errbuf);
    else if (op == OP_RESULT && c->result_cb)
        c->result_cb(c->ud, NULL, c->errbuf);
    else if (op == OP_COPY && c->drain_cb) {
        void (*cb)(void *) = c->drain_cb;
        c->drain_cb = NULL;
        cb(c->drain_ud); /* the next put/end call reports the error */
    }
}

/* A connection-level failure with libpq's message. */
static void fail_conn(struct pgconn *c, const char *prefix)
{
    char msg[1024];
    const char *m = c->pg ? PQerrorMessage(c->pg) : "";
    snprintf(msg, sizeof msg, "%s%s", prefix, m && *m ? m : "connection lost");
    pgerr_set(&c->err, "", true, msg);
    fail(c);
}

static void on_deadline(uv_timer_t *t)
{
    struct pgconn *c = t->data;
    double secs =
        (double)(c->op == OP_CONNECT || c->op == OP_RESOLVE ? c->connect_ms : c->op_ms) / 1000.0;
    char msg[512];
    if (c->op == OP_RESOLVE && c->next_host < c->nhosts)
        snprintf(msg, sizeof msg,
                 "connection to PostgreSQL timed out after %.0f s: resolving host \"%s\" "
                 "took too long",
                 secs, c->hosts[c->next_host]);
    else
        snprintf(msg, sizeof msg,
                 c->op == OP_CONNECT || c->op == OP_RESOLVE
                     ? "connection to PostgreSQL timed out after %.0f s"
                     : "PostgreSQL did not answer for %.0f s; connection closed",
                 secs);
    pgerr_set(&c->err, "", true, msg);
    c->err.timeout = true;
    fail(c);
}

static void on_kick(uv_timer_t *t)
{
    struct pgconn *c = t->data;
    if (c->op == OP_RESULT)
        collect_results(c);
}

/* Server notices (e.g. "relation already exists, skipping") go to the debug log. */
static void on_notice(void *arg, const char *msg)
{
    (void)arg;
    log_debug("pg", "%s", msg);
}

static void continue_connect(struct pgconn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        watch(c, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        watch(c, UV_WRITABLE);
        return;
    case PGRES_POLLING_OK:
        PQsetnonblocking(c->pg, 1);
        PQsetNoticeProcessor(c->pg, on_notice, NULL);
        c->op = OP_NONE;
        arm(c, 0);
        watch(c, UV_READABLE); /* an idle connection closed by the server is noticed */
        c->connect_cb(c->ud, NULL);
        return;
    default:
        fail_conn(c, "connection to PostgreSQL failed: ");
        return;
    }
}

/* Flushes pending output; arranges for writability while some remains. 0 done, 1 pending,
 * -1 error. */
static int flush(struct pgconn *c, int read_too)
{
    int r = PQflush(c->pg);
    if (r < 0)
        return -1;
    watch(c, (r ? UV_WRITABLE : 0) | read_too);
    c->flushing = r == 1;
    return r;
}

static void result_error(struct pgconn *c, PGresult *last, ExecStatusType st)
{
    const char *m = last ? PQresultErrorMessage(last) : "";
    const char *code = last ? PQresultErrorField(last, PG_DIAG_SQLSTATE) : NULL;
    pgerr_set(&c->err, code, PQstatus(c->pg) == CONNECTION_BAD, m && *m ? m : PQresStatus(st));
    snprintf(c->errbuf, sizeof c->errbuf, "%s", c->err.message);
}

static void collect_results(struct pgconn *c)
{
    if (!PQconsumeInput(c->pg)) {
        fail_conn(c, "");
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            /* command complete */
            PGresult *last = c->last;
            c->last = NULL;
            c->op = OP_NONE;
            arm(c, 0);
            const char *err = NULL;
            ExecStatusType st = last ? PQresultStatus(last) : PGRES_COMMAND_OK;
            if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
                result_error(c, last, st);
                err = c->errbuf;
            }
            if (PQstatus(c->pg) == CONNECTION_BAD) {
                c->broken = true; /* e.g. FATAL 57P01: the server closed it after answering */
                drop_poll(c);
            } else {
                watch(c, UV_READABLE);
            }
            c->result_cb(c->ud, last, err);
            PQclear(last);
            return;
        }
        if (PQresultStatus(r) == PGRES_COPY_IN) {
            /* the server waits for data: hand over now, PQgetResult would block */
            if (c->last)
                PQclear(c->last);
            c->last = NULL;
            c->op = OP_COPY;
            arm(c, 0);
            watch(c, UV_READABLE);
            c->result_cb(c->ud, r, NULL);
            PQclear(r);
            return;
        }
        if (c->each_cb &&
            (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK))
            c->each_cb(c->ud, r);
        if (c->last) {
            /* keep the first error of a multi-result command */
            ExecStatusType ls = PQresultStatus(c->last);
            if (ls == PGRES_FATAL_ERROR) {
                PQclear(r);
                continue;
            }
            PQclear(c->last);
        }
        c->last = r;
    }
    watch(c, UV_READABLE | (c->flushing ? UV_WRITABLE : 0));
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct pgconn *c = h->data;
    if (status < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "PostgreSQL socket error: %s", uv_strerror(status));
        pgerr_set(&c->err, "", true, msg);
        fail(c);
        return;
    }
    switch (c->op) {
    case OP_RESOLVE:
        return;
    case OP_CONNECT:
        continue_connect(c);
        return;
    case OP_RESULT:
        if (events & UV_WRITABLE) {
            if (flush(c, UV_READABLE) < 0) {
                fail_conn(c, "");
                return;
            }
            arm(c, c->op_ms); /* progress: the server takes our data */
        }
        if (events & UV_READABLE)
            collect_results(c);
        return;
    case OP_COPY:
        if (events & UV_READABLE) {
            /* the server closed the connection (or sent an error we read at COPY's end) */
            if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
                fail_conn(c, "");
                return;
            }
        }
        if (events & UV_WRITABLE) {
            int r = flush(c, UV_READABLE);
            if (r < 0) {
                fail_conn(c, "");
                return;
            }
            arm(c, r ? c->op_ms : 0);
            if (r == 0 && c->drain_cb) {
                void (*cb)(void *) = c->drain_cb;
                c->drain_cb = NULL;
                cb(c->drain_ud);
            }
        }
        return;
    case OP_NONE:
        /* an idle connection became readable: the server closed it or sent a notice */
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
            c->broken = true;
            drop_poll(c);
        }
        return;
    }
}

struct pgconn *pgconn_new(uv_loop_t *loop, const char *conninfo)
{
    struct pgconn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->conninfo = strdup(conninfo ? conninfo : "");
    c->timer = malloc(sizeof *c->timer);
    c->kick = malloc(sizeof *c->kick);
    if (!c->conninfo || !c->timer || !c->kick) {
        free(c->conninfo);
        free(c->timer);
        free(c->kick);
        free(c);
        return NULL;
    }
    uv_timer_init(loop, c->timer);
    uv_timer_init(loop, c->kick);
    c->timer->data = c->kick->data = c;
    c->fd = -1;
    c->connect_ms = 10000;
    return c;
}

void pgconn_set_timeouts(struct pgconn *c, double connect_seconds, double op_seconds)
{
    c->connect_ms = connect_seconds > 0 ? (uint64_t)(connect_seconds * 1000.0) : 0;
    c->op_ms = op_seconds > 0 ? (uint64_t)(op_seconds * 1000.0) : 0;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_hosts(struct pgconn *c)
{
    drop_resolve(c);
    free_list(c->hosts, c->nhosts);
    free_list(c->ports, c->nports);
    c->hosts = c->ports = NULL;
    c->nhosts = c->nports = c->next_host = c->naddrs = 0;
    buf_free(&c->host_list);
    buf_free(&c->hostaddr);
    buf_free(&c->port_list);
}

void pgconn_free(struct pgconn *c)
{
    if (!c)
        return;
    close_pg(c);
    free_hosts(c);
    uv_timer_stop(c->timer);
    uv_close((uv_handle_t *)c->timer, free_handle);
    uv_timer_stop(c->kick);
    uv_close((uv_handle_t *)c->kick, free_handle);
    free(c->conninfo);
    free(c);
}

void pgconn_close(struct pgconn *c)
{
    c->op = OP_NONE;
    c->broken = true;
    c->drain_cb = NULL;
    arm(c, 0);
    uv_timer_stop(c->kick);
    free_hosts(c);
    close_pg(c);
}

static char app_name[64]; /* pgconn_set_application_name, "" none */

void pgconn_set_application_name(const char *instance)
{
    if (instance)
        snprintf(app_name, sizeof app_name, PGCONN_APP_PREFIX "%s", instance);
    else
        app_name[0] = '\0';
}

static void start_libpq(struct pgconn *c)
{
    /* Defaults first: a value in the conninfo string (expanded from "dbname") wins, except
     * the resolved host lists placed after it. */
    char tcp_user_timeout[32];
    snprintf(tcp_user_timeout, sizeof tcp_user_timeout, "%d", 60000);
    bool resolved = c->hostaddr.len > 0;
    const char *keys[12] = {
        "keepalives",       "keepalives_idle", "keepalives_interval",      "keepalives_count",
        "tcp_user_timeout", "dbname",          "fallback_application_name"};
    const char *vals[12] = {"1", "30", "10", "3", tcp_user_timeout, c->conninfo, "druid-syncd"};
    size_t k = 7;
    if (app_name[0]) {
        keys[k] = "application_name";
        vals[k++] = app_name;
    }
    if (resolved) {
        keys[k] = "host";
        vals[k++] = c->host_list.data;
        keys[k] = "hostaddr";
        vals[k++] = c->hostaddr.data;
        if (c->port_list.len) {
            keys[k] = "port";
            vals[k++] = c->port_list.data;
        }
    }
    keys[k] = vals[k] = NULL;
    c->op = OP_CONNECT;
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        fail_conn(c, "connection to PostgreSQL failed: ");
        return;
    }
    continue_connect(c);
}

static void resolve_next(struct pgconn *c);

/* Drops one reference; the last one frees. Called with g_resolve_mu held. */
static bool resolve_unref_locked(struct resolve *r)
{
    return --r->refs == 0;
}

static void resolve_free(struct resolve *r)
{
    if (r->res)
        freeaddrinfo(r->res);
    free(r->name);
    free(r);
}

/* The loop is done with r: the thread may still be in getaddrinfo and frees it then. */
static void resolve_abandon(struct resolve *r)
{
    pthread_mutex_lock(&g_resolve_mu);
    r->abandoned = true;
    bool last = resolve_unref_locked(r);
    pthread_mutex_unlock(&g_resolve_mu);
    uv_close((uv_handle_t *)r->async, free_handle);
    if (last)
        resolve_free(r);
}

static void drop_resolve(struct pgconn *c)
{
    if (c->resolving) {
        c->resolving->c = NULL;
        resolve_abandon(c->resolving);
        c->resolving = NULL;
    }
}

static void *resolve_thread(void *arg)
{
    struct resolve *r = arg;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(r->name, NULL, &hints, &res);
    int e = errno;
    pthread_mutex_lock(&g_resolve_mu);
    r->rc = rc;
    r->sys_errno = e;
    r->res = res;
    if (!r->abandoned)
        uv_async_send(r->async); /* under the lock: the loop cannot have closed it */
    bool last = resolve_unref_locked(r);
    pthread_mutex_unlock(&g_resolve_mu);
    if (last)
        resolve_free(r);
    return NULL;
}

static void resolve_failed(struct pgconn *c, const char *why)
{
    char msg[512];
    snprintf(msg, sizeof msg, "could not resolve PostgreSQL host \"%s\": %s",
             c->hosts[c->next_host], why);
    pgerr_set(&c->err, "", true, msg);
    fail(c);
}

static void list_add(struct buf *b, bool first, const char *item)
{
    if (!first)
        buf_putc(b, ',');
    buf_puts(b, item);
}

/* One entry of each list for host i with address addr ("" for libpq to use the host). */
static void add_target(struct pgconn *c, size_t i, const char *addr)
{
    bool first = c->naddrs == 0;
    list_add(&c->host_list, first, c->hosts[i]);
    list_add(&c->hostaddr, first, addr);
    if (c->nports > 1)
        list_add(&c->port_list, first, c->ports[i]);
    c->naddrs++;
}

static void on_resolved(uv_async_t *a)
{
    struct resolve *r = a->data;
    struct pgconn *c = r->c;
    if (!c) /* abandoned already: resolve_abandon closed us */
        return;
    pthread_mutex_lock(&g_resolve_mu);
    int rc = r->rc, e = r->sys_errno;
    struct addrinfo *res = r->res;
    r->res = NULL;
    pthread_mutex_unlock(&g_resolve_mu);
    c->resolving = NULL;
    r->c = NULL;
    resolve_abandon(r);
    if (rc != 0 || !res) {
        if (res)
            freeaddrinfo(res);
        resolve_failed(c, rc == EAI_SYSTEM ? strerror(e) : gai_strerror(rc));
        return;
    }
    /* every address, as libpq itself would try them; duplicates (one per socket type or
     * protocol) once */
    char seen[PGCONN_MAX_ADDRS][INET6_ADDRSTRLEN];
    size_t n = 0;
    for (struct addrinfo *ai = res; ai && n < PGCONN_MAX_ADDRS; ai = ai->ai_next) {
        char addr[INET6_ADDRSTRLEN] = "";
        if (ai->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, addr, sizeof addr);
        else if (ai->ai_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, addr,
                      sizeof addr);
        else
            continue;
        bool dup = false;
        for (size_t j = 0; j < n && !dup; j++)
            dup = strcmp(seen[j], addr) == 0;
        if (dup)
            continue;
        memcpy(seen[n++], addr, sizeof addr);
        add_target(c, c->next_host, addr);
    }
    freeaddrinfo(res);
    if (n == 0) {
        resolve_failed(c, "no IPv4 or IPv6 address");
        return;
    }
    c->next_host++;
    resolve_next(c);
}

/* A name that needs DNS: not empty, not a socket directory, not a numeric address. */
static bool needs_dns(const char *h)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return h[0] && h[0] != '/' && h[0] != '@' && inet_pton(AF_INET, h, tmp) != 1 &&
           inet_pton(AF_INET6, h, tmp) != 1;
}

static void resolve_next(struct pgconn *c)
{
    while (c->next_host < c->nhosts && !needs_dns(c->hosts[c->next_host])) {
        add_target(c, c->next_host, ""); /* an empty entry: libpq uses the host itself */
        c->next_host++;
    }
    if (c->next_host >= c->nhosts) {
        start_libpq(c);
        return;
    }
    struct resolve *r = calloc(1, sizeof *r);
    uv_async_t *a = malloc(sizeof *a);
    char *name = strdup(c->hosts[c->next_host]);
    if (!r || !a || !name || uv_async_init(c->loop, a, on_resolved) != 0) {
        free(r);
        free(a);
        free(name);
        resolve_failed(c, "out of memory");
        return;
    }
    a->data = r;
    r->async = a;
    r->c = c;
    r->name = name;
    r->refs = 2; /* the loop's and the thread's */
    pthread_attr_t attr;
    pthread_t th;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&th, &attr, resolve_thread, r);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        r->refs = 1;
        r->c = NULL;
        resolve_abandon(r);
        char why[128];
        snprintf(why, sizeof why, "cannot start a resolver thread: %s", strerror(rc));
        resolve_failed(c, why);
        return;
    }
    c->resolving = r;
}

/* Splits a comma-separated libpq list. */
static size_t split_list(const char *s, char ***out)
{
    size_t n = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        *out = realloc(*out, (n + 1) * sizeof **out);
        if (!*out)
            abort();
        (*out)[n++] = strndup(p, len);
        if (!e)
            break;
        p = e + 1;
    }
    return n;
}

/* The host list libpq would use, unless addresses are given already (hostaddr); and the
 * port list, when it has one entry per host (it must then follow the expansion). */
static void find_hosts(struct pgconn *c)
{
    const char *host = NULL, *port = NULL;
    bool have_addr = getenv("PGHOSTADDR") && *getenv("PGHOSTADDR");
    PQconninfoOption *opts = PQconninfoParse(c->conninfo, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val && *o->val)
            host = o->val;
        if (strcmp(o->keyword, "port") == 0 && o->val && *o->val)
            port = o->val;
        if (strcmp(o->keyword, "hostaddr") == 0 && o->val && *o->val)
            have_addr = true;
    }
    if (!host)
        host = getenv("PGHOST");
    if (!port)
        port = getenv("PGPORT");
    if (host && *host && !have_addr) {
        c->nhosts = split_list(host, &c->hosts);
        if (port && *port && strchr(port, ','))
            c->nports = split_list(port, &c->ports);
        if (c->nports != c->nhosts) {
            /* libpq will refuse the mismatch itself: leave the lists to it */
            free_list(c->ports, c->nports);
            c->ports = NULL;
            c->nports = 0;
        }
    }
    PQconninfoFree(opts);
}

void pgconn_connect(struct pgconn *c, pgconn_cb cb, void *ud)
{
    c->connect_cb = cb;
    c->ud = ud;
    c->broken = false;
    close_pg(c);
    free_hosts(c);
    memset(&c->err, 0, sizeof c->err);
    c->op = OP_RESOLVE;
    arm(c, c->connect_ms);
    find_hosts(c);
    resolve_next(c);
}

bool pgconn_ok(const struct pgconn *c)
{
    return c->pg && !c->broken && PQstatus(c->pg) == CONNECTION_OK;
}

bool pgconn_busy(const struct pgconn *c)
{
    return c->op != OP_NONE;
}

/* After a send: wait for the answer within the bound, and look at once whether libpq has
 * it buffered already. */
static void await_result(struct pgconn *c)
{
    if (flush(c, UV_READABLE) < 0) {
        fail_conn(c, "");
        return;
    }
    arm(c, c->op_ms);
    uv_timer_start(c->kick, on_kick, 0, 0);
}

void pgconn_query(struct pgconn *c, const char *sql, int nparams, const char *const *params,
                  pgconn_result_cb cb, void *ud)
{
    c->each_cb = NULL;
    c->result_cb = cb;
    c->ud = ud;
    c->op = OP_RESULT;
    memset(&c->err, 0, sizeof c->err);
    if (!c->pg) {
        pgerr_set(&c->err, "", true, "not connected to PostgreSQL");
        fail(c);
        return;
    }
    int ok = nparams > 0 ? PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0)
                         : PQsendQuery(c->pg, sql);
    if (!ok) {
        fail_conn(c, "");
        return;
    }
    await_result(c);
}

void pgconn_query_each(struct pgconn *c, const char *sql, pgconn_each_cb each, pgconn_result_cb cb,
                       void *ud)
{
    pgconn_query(c, sql, 0, NULL, cb, ud);
    if (c->op == OP_RESULT)
        c->each_cb = each; /* after the send: a failure to send has reported already */
}

int pgconn_literal(struct pgconn *c, struct buf *b, const char *s)
{
    if (!c->pg)
        return -1;
    char *q = PQescapeLiteral(c->pg, s, strlen(s));
    if (!q)
        return -1;
    buf_puts(b, q);
    PQfreemem(q);
    return 0;
}

int pgconn_copy_put(struct pgconn *c, const char *data, size_t len)
{
    if (c->broken || c->op != OP_COPY || !c->pg)
        return -1;
    int r = PQputCopyData(c->pg, data, (int)len);
    if (r < 0) {
        pgerr_set(&c->err, "", PQstatus(c->pg) == CONNECTION_BAD, PQerrorMessage(c->pg));
        snprintf(c->errbuf, sizeof c->errbuf, "%s", c->err.message);
        return -1;
    }
    if (r == 0) {
        /* not queued: libpq could not grow its output buffer (out of memory). The caller
         * has let go of the data, so "wait for drain" would lose it: fail the slice */
        pgerr_set(&c->err, "", false, "COPY data not queued by libpq (out of memory)");
        snprintf(c->errbuf, sizeof c->errbuf, "%s", c->err.message);
        return -1;
    }
    r = flush(c, UV_READABLE);
    if (r < 0) {
        pgerr_set(&c->err, "", true, PQerrorMessage(c->pg));
        snprintf(c->errbuf, sizeof c->errbuf, "%s", c->err.message);
        return -1;
    }
    arm(c, r ? c->op_ms : 0);
    return r;
}

void pgconn_on_drain(struct pgconn *c, void (*cb)(void *ud), void *ud)
{
    c->drain_cb = cb;
    c->drain_ud = ud;
}

void pgconn_copy_end(struct pgconn *c, const char *errmsg, pgconn_result_cb cb, void *ud)
{
    c->drain_cb = NULL;
    if (c->broken || !c->pg) {
        if (!c->err.message[0])
            pgerr_set(&c->err, "", true, "connection to PostgreSQL lost");
        snprintf(c->errbuf, sizeof c->errbuf, "%s", c->err.message);
        cb(ud, NULL, c->errbuf);
        return;
    }
    c->result_cb = cb;
    c->each_cb = NULL;
    c->ud = ud;
    c->op = OP_RESULT;
    int r = PQputCopyEnd(c->pg, errmsg);
    if (r < 0) {
        /* libpq has left COPY already: the server answered with an error, which the
         * results below carry (with its SQLSTATE), or the connection is gone */
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            fail_conn(c, "");
            return;
        }
    }
    await_result(c);
}

const char *pgconn_error(const struct pgconn *c)
{
    return c->errbuf;
}

const struct pgerr *pgconn_last_error(const struct pgconn *c)
{
    return &c->err;
}
