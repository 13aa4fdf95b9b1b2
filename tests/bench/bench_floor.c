/* bench_floor: the in-process CPU floor of druid-syncd's wire protocol, the CPU that no
 * client of these protocols can go below whatever it does between receiving and sending.
 * With the libraries and settings the daemon uses, on one libuv loop:
 *  fetch  the slice queries' responses from Druid, with libcurl's multi interface driven
 *         by uv_poll/uv_timer (as common/druid_client.c), the same HTTP/1.1 options, as many
 *         at once as the daemon runs, each body thrown away in the write callback;
 *  copy   COPY text held in memory sent into a table by libpq in non-blocking mode, one COPY
 *         per connection (as many as postgres_writers), CopyData messages of COPY_CHUNK
 *         bytes cut at row ends (daemon/slicerun.c), each followed by PQflush, waiting for
 *         writability when libpq has output left (sinks/pgconn.c);
 *  both   the two at once on the same loop.
 * Each part's CPU is getrusage(RUSAGE_SELF) around the loop run (connections to PostgreSQL
 * and the COPY statement are set up before, the TRUNCATE is outside). Not a test; run by
 * tests/bench/throughput.py, or by hand:
 *
 *   bench_floor --url http://127.0.0.1:PORT/druid/v2/sql --queries FILE --fetch-rows N
 *               --pg CONNINFO --table SCHEMA.TABLE --copy FILE [--parallel 4] [--writers 2]
 *               [--max-copy-rows 1000000] [--part fetch|copy|both|all] [--curl-buffer B]
 *
 * FILE of --queries: one JSON request body per line (the daemon's slice queries). N: the
 * rows those responses hold (the test server's log says). --copy: COPY text; at most
 * --max-copy-rows of its rows are read (into memory). Prints per part a line
 *   FLOOR part=P rows=R user=U sys=S wall=W
 * (U and S in CPU-s per million rows) and a readable line. --curl-buffer sets
 * CURLOPT_BUFFERSIZE (default: curl's own, as the daemon), to measure what it would save. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#define COPY_CHUNK (256 * 1024) /* daemon/slicerun.c: COPY data handed to libpq at a time */

static void die(const char *fmt, const char *a)
{
    fprintf(stderr, "bench_floor: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n");
    exit(1);
}

/* ---- fetch: curl multi on the libuv loop, as common/druid_client.c ---- */

struct fetch {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    char **bodies;
    size_t nbodies, next;
    int inflight, parallel;
    uint64_t bytes;
    struct curl_slist *hdr;
    const char *url;
    long curl_buffer; /* CURLOPT_BUFFERSIZE, 0: curl's default (as the daemon) */
    bool done;
};

struct sockctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct fetch *f;
};

static void fetch_start_more(struct fetch *f);

static void fetch_check(struct fetch *f)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        long status = 0;
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        if (m->data.result != CURLE_OK || status != 200)
            die("a slice query failed: %s", curl_easy_strerror(m->data.result));
        curl_multi_remove_handle(f->multi, m->easy_handle);
        curl_easy_cleanup(m->easy_handle);
        f->inflight--;
    }
    fetch_start_more(f);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sockctx *sc = h->data;
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
    curl_multi_socket_action(sc->f->multi, sc->fd, flags, &running);
    fetch_check(sc->f);
}

static void free_sockctx(uv_handle_t *h)
{
    free(h->data);
}

static int on_curl_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    struct fetch *f = userp;
    struct sockctx *sc = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            uv_poll_stop(&sc->poll);
            uv_close((uv_handle_t *)&sc->poll, free_sockctx);
            curl_multi_assign(f->multi, s, NULL);
        }
        return 0;
    }
    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc)
            return -1;
        sc->fd = s;
        sc->f = f;
        if (uv_poll_init_socket(f->loop, &sc->poll, s) != 0) {
            free(sc);
            return -1;
        }
        sc->poll.data = sc;
        curl_multi_assign(f->multi, s, sc);
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
    struct fetch *f = t->data;
    int running;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    fetch_check(f);
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    struct fetch *f = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&f->timer);
    else
        uv_timer_start(&f->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* The floor of a response's consumer: take the bytes, look at none of them. */
static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ptr;
    struct fetch *f = ud;
    f->bytes += size * nmemb;
    return size * nmemb;
}

static void fetch_start_more(struct fetch *f)
{
    while (f->inflight < f->parallel && f->next < f->nbodies) {
        const char *body = f->bodies[f->next++];
        CURL *e = curl_easy_init();
        if (!e)
            die("%s", "curl_easy_init failed");
        /* the options of common/druid_client.c (query_start, common_options) */
        curl_easy_setopt(e, CURLOPT_URL, f->url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->hdr);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 305000L);
        curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        if (f->curl_buffer)
            curl_easy_setopt(e, CURLOPT_BUFFERSIZE, f->curl_buffer);
        if (curl_multi_add_handle(f->multi, e) != CURLM_OK)
            die("%s", "curl_multi_add_handle failed");
        f->inflight++;
    }
    if (f->inflight == 0 && f->next == f->nbodies && !f->done) {
        f->done = true;
        uv_timer_stop(&f->timer);
    }
}

static void fetch_init(struct fetch *f, uv_loop_t *loop)
{
    f->loop = loop;
    f->multi = curl_multi_init();
    if (!f->multi)
        die("%s", "curl_multi_init failed");
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    f->hdr = curl_slist_append(NULL, "Content-Type: application/json");
    f->hdr = curl_slist_append(f->hdr, "Accept: application/json");
}

static void fetch_begin(struct fetch *f)
{
    f->next = 0;
    f->bytes = 0;
    f->done = false;
    fetch_start_more(f);
}

/* ---- copy: libpq non-blocking COPY, as sinks/pgconn.c ---- */

struct writer {
    PGconn *pg;
    uv_poll_t poll;
    bool polling;
    const char *p, *end;
    int state; /* 0 sending, 1 end sent, 2 done */
    int *left;
};

static void writer_watch(struct writer *w, int ev);

static void writer_step(struct writer *w)
{
    while (w->state == 0 && w->p < w->end) {
        const char *q = w->p + COPY_CHUNK < w->end ? w->p + COPY_CHUNK : w->end;
        if (q < w->end) {
            const char *nl = memchr(q, '\n', (size_t)(w->end - q));
            q = nl ? nl + 1 : w->end;
        }
        int r = PQputCopyData(w->pg, w->p, (int)(q - w->p));
        if (r < 0)
            die("PQputCopyData: %s", PQerrorMessage(w->pg));
        if (r == 0) {
            writer_watch(w, UV_READABLE | UV_WRITABLE);
            return;
        }
        w->p = q;
        r = PQflush(w->pg);
        if (r < 0)
            die("PQflush: %s", PQerrorMessage(w->pg));
        if (r == 1) { /* PostgreSQL is behind: wait until the socket takes more */
            writer_watch(w, UV_READABLE | UV_WRITABLE);
            return;
        }
    }
    if (w->state == 0) {
        if (PQputCopyEnd(w->pg, NULL) < 0)
            die("PQputCopyEnd: %s", PQerrorMessage(w->pg));
        w->state = 1;
    }
    if (w->state == 1) {
        int r = PQflush(w->pg);
        if (r < 0)
            die("PQflush: %s", PQerrorMessage(w->pg));
        if (!PQconsumeInput(w->pg))
            die("PQconsumeInput: %s", PQerrorMessage(w->pg));
        while (!PQisBusy(w->pg)) {
            PGresult *res = PQgetResult(w->pg);
            if (!res) {
                w->state = 2;
                uv_poll_stop(&w->poll);
                (*w->left)--;
                return;
            }
            if (PQresultStatus(res) != PGRES_COMMAND_OK)
                die("COPY failed: %s", PQresultErrorMessage(res));
            PQclear(res);
        }
        writer_watch(w, UV_READABLE | (r ? UV_WRITABLE : 0));
    }
}

static void on_pg_poll(uv_poll_t *h, int status, int events)
{
    (void)status;
    struct writer *w = h->data;
    if (events & UV_READABLE && !PQconsumeInput(w->pg))
        die("PQconsumeInput: %s", PQerrorMessage(w->pg));
    if (w->state == 0 && PQflush(w->pg) == 1) {
        writer_watch(w, UV_READABLE | UV_WRITABLE);
        return;
    }
    writer_step(w);
}

static void writer_watch(struct writer *w, int ev)
{
    uv_poll_start(&w->poll, ev, on_pg_poll);
}

static void pg_exec(PGconn *pg, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != want)
        die("%s", PQresultErrorMessage(r));
    PQclear(r);
}

/* ---- driver ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static char *read_file(const char *path, size_t max_rows, size_t *len, size_t *rows)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        die("cannot open %s", path);
    size_t cap = 1 << 20, n = 0, k = 0;
    char *d = malloc(cap);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while (k < max_rows && (got = getline(&line, &lcap, fp)) > 0) {
        if (n + (size_t)got > cap) {
            while (n + (size_t)got > cap)
                cap *= 2;
            d = realloc(d, cap);
        }
        if (!d)
            die("%s", "out of memory");
        memcpy(d + n, line, (size_t)got);
        n += (size_t)got;
        k++;
    }
    free(line);
    fclose(fp);
    *len = n;
    *rows = k;
    return d;
}

int main(int argc, char **argv)
{
    const char *url = NULL, *queries = NULL, *conninfo = NULL, *table = NULL, *copy = NULL;
    const char *part = "all";
    int parallel = 4, writers = 2;
    double fetch_rows = 0;
    size_t max_copy_rows = 1000000;
    long curl_buffer = 0;
    static const struct option opts[] = {{"url", 1, 0, 'u'},         {"queries", 1, 0, 'q'},
                                         {"fetch-rows", 1, 0, 'n'},  {"pg", 1, 0, 'p'},
                                         {"table", 1, 0, 't'},       {"copy", 1, 0, 'c'},
                                         {"parallel", 1, 0, 'j'},    {"writers", 1, 0, 'w'},
                                         {"part", 1, 0, 'x'},        {"max-copy-rows", 1, 0, 'm'},
                                         {"curl-buffer", 1, 0, 'b'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'u':
            url = optarg;
            break;
        case 'q':
            queries = optarg;
            break;
        case 'n':
            fetch_rows = atof(optarg);
            break;
        case 'p':
            conninfo = optarg;
            break;
        case 't':
            table = optarg;
            break;
        case 'c':
            copy = optarg;
            break;
        case 'j':
            parallel = atoi(optarg);
            break;
        case 'w':
            writers = atoi(optarg);
            break;
        case 'x':
            part = optarg;
            break;
        case 'm':
            max_copy_rows = (size_t)atoll(optarg);
            break;
        case 'b':
            curl_buffer = atol(optarg);
            break;
        default:
            die("%s", "usage: see the header of tests/bench/bench_floor.c");
        }
    }
    bool all = strcmp(part, "all") == 0;
    bool do_fetch = all || strcmp(part, "fetch") == 0 || strcmp(part, "both") == 0;
    bool do_copy = all || strcmp(part, "copy") == 0 || strcmp(part, "both") == 0;
    if (do_fetch && (!url || !queries || fetch_rows <= 0))
        die("%s", "fetch needs --url, --queries and --fetch-rows");
    if (do_copy && (!conninfo || !table || !copy))
        die("%s", "copy needs --pg, --table and --copy");
    if (writers < 1 || writers > 64 || parallel < 1)
        die("%s", "bad --writers or --parallel");

    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_loop_t *loop = uv_default_loop();
    struct fetch f = {.parallel = parallel, .url = url, .curl_buffer = curl_buffer};
    char *qtext = NULL;
    if (do_fetch) {
        fetch_init(&f, loop);
        size_t qlen, qn;
        qtext = read_file(queries, SIZE_MAX, &qlen, &qn);
        f.bodies = calloc(qn, sizeof *f.bodies);
        char *s = qtext;
        for (size_t i = 0; i < qn; i++) {
            char *nl = memchr(s, '\n', qlen - (size_t)(s - qtext));
            if (nl)
                *nl = '\0';
            if (*s)
                f.bodies[f.nbodies++] = s;
            s = nl ? nl + 1 : qtext + qlen;
        }
    }
    char *text = NULL;
    size_t text_len = 0, text_rows = 0;
    struct writer *w = NULL;
    PGconn **conns = NULL;
    if (do_copy) {
        text = read_file(copy, max_copy_rows, &text_len, &text_rows);
        w = calloc((size_t)writers, sizeof *w);
        conns = calloc((size_t)writers, sizeof *conns);
        for (int i = 0; i < writers; i++) {
            conns[i] = PQconnectdb(conninfo);
            if (PQstatus(conns[i]) != CONNECTION_OK)
                die("connect: %s", PQerrorMessage(conns[i]));
        }
    }

    const char *parts[3] = {"fetch", "copy", "both"};
    for (int k = 0; k < 3; k++) {
        bool pf = k != 1, pc = k != 0;
        if (!all && strcmp(part, parts[k]) != 0)
            continue;
        int left = 0;
        if (pc) {
            char sql[512];
            snprintf(sql, sizeof sql, "TRUNCATE %s", table);
            pg_exec(conns[0], sql, PGRES_COMMAND_OK);
            snprintf(sql, sizeof sql, "COPY %s FROM STDIN", table);
            /* each writer sends its share of the rows, cut at a row end */
            const char *p = text;
            for (int i = 0; i < writers; i++) {
                const char *end = i == writers - 1
                                      ? text + text_len
                                      : text + text_len / (size_t)writers * (size_t)(i + 1);
                if (end < text + text_len && end > p) {
                    const char *nl = memchr(end, '\n', (size_t)(text + text_len - end));
                    end = nl ? nl + 1 : text + text_len;
                }
                if (end < p)
                    end = p;
                PQsetnonblocking(conns[i], 0);
                pg_exec(conns[i], sql, PGRES_COPY_IN);
                PQsetnonblocking(conns[i], 1);
                w[i] = (struct writer){.pg = conns[i], .p = p, .end = end, .left = &left};
                uv_poll_init_socket(loop, &w[i].poll, PQsocket(conns[i]));
                w[i].poll.data = &w[i];
                p = end;
            }
        }
        struct rusage r0, r1;
        getrusage(RUSAGE_SELF, &r0);
        double t0 = now_s();
        if (pc) {
            left = writers;
            for (int i = 0; i < writers; i++)
                writer_step(&w[i]);
        }
        if (pf)
            fetch_begin(&f);
        /* curl may keep idle connections watched: run until both sides are through */
        while ((pc && left > 0) || (pf && !f.done))
            uv_run(loop, UV_RUN_ONCE);
        double wall = now_s() - t0;
        getrusage(RUSAGE_SELF, &r1);
        if (pc && left != 0)
            die("%s", "a COPY did not end");
        if (pf && !f.done)
            die("%s", "the fetch did not end");
        if (pc)
            for (int i = 0; i < writers; i++)
                uv_close((uv_handle_t *)&w[i].poll, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        /* per million rows moved: fetched, or sent (both: sent, what a sync delivers) */
        double rows = pc ? (double)text_rows : fetch_rows;
        double user = tv_s(r1.ru_utime) - tv_s(r0.ru_utime);
        double sys = tv_s(r1.ru_stime) - tv_s(r0.ru_stime);
        double per = 1e6 / rows;
        printf("FLOOR part=%s rows=%.0f user=%.4f sys=%.4f wall=%.3f fetched_bytes=%llu "
               "copy_bytes=%zu\n",
               parts[k], rows, user * per, sys * per, wall, (unsigned long long)(pf ? f.bytes : 0),
               pc ? text_len : 0);
        printf("floor %-5s %.3f CPU-s per million rows (user %.3f, system %.3f), %.2f s wall\n",
               parts[k], (user + sys) * per, user * per, sys * per, wall);
        fflush(stdout);
    }
    for (int i = 0; conns && i < writers; i++)
        PQfinish(conns[i]);
    if (do_fetch) {
        curl_multi_cleanup(f.multi);
        uv_close((uv_handle_t *)&f.timer, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        curl_slist_free_all(f.hdr);
    }
    curl_global_cleanup();
    free(text);
    free(w);
    free(conns);
    free(f.bodies);
    free(qtext);
    return 0;
}
