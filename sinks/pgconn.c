/* pgconn: libpq in non-blocking mode on a uv_poll_t. See pgconn.h.
 *
 * The poll watches for readability whenever a result is awaited and for writability only
 * while libpq has unsent output (PQflush() == 1), which is how COPY applies backpressure. */
#include "pgconn.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

enum op {
    OP_NONE,
    OP_CONNECT,
    OP_RESULT, /* waiting for a command's results */
    OP_COPY,   /* in COPY IN: only flushing */
};

struct pgconn {
    uv_loop_t *loop;
    char *conninfo;
    PGconn *pg;
    uv_poll_t *poll; /* separate allocation: a closing handle outlives a socket switch */
    int fd;
    enum op op;
    bool broken;
    PGresult *last;
    char errbuf[1024];
    pgconn_cb connect_cb;
    pgconn_result_cb result_cb;
    void *ud;
    void (*drain_cb)(void *ud);
    void *drain_ud;
    bool flushing;
};

static void on_poll(uv_poll_t *h, int status, int events);

static void set_err(struct pgconn *c, const char *prefix)
{
    const char *m = c->pg ? PQerrorMessage(c->pg) : "out of memory";
    size_t n = (size_t)snprintf(c->errbuf, sizeof c->errbuf, "%s%s", prefix, m);
    while (n > 0 && (c->errbuf[n - 1] == '\n' || c->errbuf[n - 1] == ' '))
        c->errbuf[--n] = '\0';
}

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

static void fail(struct pgconn *c, const char *msg)
{
    c->broken = true;
    enum op op = c->op;
    c->op = OP_NONE;
    watch(c, 0);
    if (c->last) {
        PQclear(c->last);
        c->last = NULL;
    }
    if (op == OP_CONNECT && c->connect_cb)
        c->connect_cb(c->ud, msg);
    else if (op == OP_RESULT && c->result_cb)
        c->result_cb(c->ud, NULL, msg);
    else if (op == OP_COPY && c->drain_cb) {
        void (*cb)(void *) = c->drain_cb;
        c->drain_cb = NULL;
        cb(c->drain_ud); /* the next put/end call reports the error */
    }
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
        watch(c, 0);
        c->connect_cb(c->ud, NULL);
        return;
    default:
        set_err(c, "connection to PostgreSQL failed: ");
        fail(c, c->errbuf);
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

static void collect_results(struct pgconn *c)
{
    if (!PQconsumeInput(c->pg)) {
        set_err(c, "");
        fail(c, c->errbuf);
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            /* command complete */
            PGresult *last = c->last;
            c->last = NULL;
            c->op = OP_NONE;
            watch(c, 0);
            const char *err = NULL;
            ExecStatusType st = last ? PQresultStatus(last) : PGRES_COMMAND_OK;
            if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
                const char *m = last ? PQresultErrorMessage(last) : "";
                snprintf(c->errbuf, sizeof c->errbuf, "%s", m && *m ? m : PQresStatus(st));
                size_t n = strlen(c->errbuf);
                while (n > 0 && c->errbuf[n - 1] == '\n')
                    c->errbuf[--n] = '\0';
                err = c->errbuf;
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
            watch(c, 0);
            c->result_cb(c->ud, r, NULL);
            PQclear(r);
            return;
        }
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
        snprintf(c->errbuf, sizeof c->errbuf, "PostgreSQL socket error: %s", uv_strerror(status));
        fail(c, c->errbuf);
        return;
    }
    switch (c->op) {
    case OP_CONNECT:
        continue_connect(c);
        return;
    case OP_RESULT:
        if (events & UV_WRITABLE) {
            if (flush(c, UV_READABLE) < 0) {
                set_err(c, "");
                fail(c, c->errbuf);
                return;
            }
        }
        if (events & UV_READABLE)
            collect_results(c);
        return;
    case OP_COPY:
        if (events & UV_WRITABLE) {
            int r = flush(c, 0);
            if (r < 0) {
                set_err(c, "");
                fail(c, c->errbuf);
                return;
            }
            if (r == 0 && c->drain_cb) {
                void (*cb)(void *) = c->drain_cb;
                c->drain_cb = NULL;
                cb(c->drain_ud);
            }
        }
        if (events & UV_READABLE) {
            /* an error during COPY (e.g. the server aborted it) */
            if (!PQconsumeInput(c->pg)) {
                set_err(c, "");
                fail(c, c->errbuf);
            }
        }
        return;
    case OP_NONE:
        /* an idle connection became readable: the server closed it or sent a notice */
        if (!PQconsumeInput(c->pg)) {
            c->broken = true;
            watch(c, 0);
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
    c->fd = -1;
    return c;
}

void pgconn_free(struct pgconn *c)
{
    if (!c)
        return;
    drop_poll(c);
    if (c->last)
        PQclear(c->last);
    if (c->pg)
        PQfinish(c->pg);
    free(c->conninfo);
    free(c);
}

void pgconn_connect(struct pgconn *c, pgconn_cb cb, void *ud)
{
    c->connect_cb = cb;
    c->ud = ud;
    c->op = OP_CONNECT;
    c->broken = false;
    if (c->pg) {
        drop_poll(c);
        PQfinish(c->pg);
    }
    const char *keys[] = {"dbname", "application_name", "fallback_application_name", NULL};
    const char *vals[] = {c->conninfo, NULL, "druid-syncd", NULL};
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        set_err(c, "connection to PostgreSQL failed: ");
        fail(c, c->errbuf);
        return;
    }
    continue_connect(c);
}

bool pgconn_ok(const struct pgconn *c)
{
    return c->pg && !c->broken && PQstatus(c->pg) == CONNECTION_OK;
}

bool pgconn_busy(const struct pgconn *c)
{
    return c->op != OP_NONE;
}

void pgconn_query(struct pgconn *c, const char *sql, int nparams, const char *const *params,
                  pgconn_result_cb cb, void *ud)
{
    c->result_cb = cb;
    c->ud = ud;
    c->op = OP_RESULT;
    int ok = nparams > 0 ? PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0)
                         : PQsendQuery(c->pg, sql);
    if (!ok) {
        set_err(c, "");
        fail(c, c->errbuf);
        return;
    }
    if (flush(c, UV_READABLE) < 0) {
        set_err(c, "");
        fail(c, c->errbuf);
    }
}

int pgconn_copy_put(struct pgconn *c, const char *data, size_t len)
{
    if (c->broken || c->op != OP_COPY)
        return -1;
    if (PQputCopyData(c->pg, data, (int)len) != 1) {
        set_err(c, "");
        return -1;
    }
    int r = flush(c, 0);
    if (r < 0)
        set_err(c, "");
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
    if (c->broken) {
        cb(ud, NULL, c->errbuf[0] ? c->errbuf : "connection lost");
        return;
    }
    c->result_cb = cb;
    c->ud = ud;
    c->op = OP_RESULT;
    if (PQputCopyEnd(c->pg, errmsg) < 0) {
        set_err(c, "");
        fail(c, c->errbuf);
        return;
    }
    if (flush(c, UV_READABLE) < 0) {
        set_err(c, "");
        fail(c, c->errbuf);
    }
}

const char *pgconn_error(const struct pgconn *c)
{
    return c->errbuf;
}
