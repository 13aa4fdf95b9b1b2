/* pgjob: sequential SQL scripts on a pgconn. See pgjob.h. */
#include "pgjob.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct step {
    char *sql;
    int nparams;
    char **params;
    pgjob_hook hook;
    char *copy_data; /* non-NULL: a COPY step */
    size_t copy_len;
};

struct pgjob {
    struct step *steps;
    size_t n, cap, i;
    pgjob_done done;
    void *ud;
    void (*ud_free)(void *);
    struct pgjob *next;
    bool failed;
    char err[1024];
};

struct pgjob_queue {
    struct pgconn *conn;
    struct pgjob *head, *tail;
    bool running;
    bool connecting;
    char *begin; /* "BEGIN; SET LOCAL ..." */
    struct pgerr lasterr;
};

struct pgjob *pgjob_new(pgjob_done done, void *ud)
{
    struct pgjob *j = calloc(1, sizeof *j);
    if (!j)
        abort();
    j->done = done;
    j->ud = ud;
    return j;
}

void pgjob_set_ud_free(struct pgjob *j, void (*ud_free)(void *))
{
    j->ud_free = ud_free;
}

static struct step *add_step(struct pgjob *j)
{
    if (j->n == j->cap) {
        j->cap = j->cap ? j->cap * 2 : 8;
        j->steps = realloc(j->steps, j->cap * sizeof *j->steps);
        if (!j->steps)
            abort();
    }
    struct step *s = &j->steps[j->n++];
    memset(s, 0, sizeof *s);
    return s;
}

void pgjob_sql(struct pgjob *j, const char *sql, int nparams, const char *const *params,
               pgjob_hook hook)
{
    struct step *s = add_step(j);
    s->sql = strdup(sql);
    s->nparams = nparams;
    s->hook = hook;
    if (nparams > 0) {
        s->params = calloc((size_t)nparams, sizeof *s->params);
        for (int i = 0; i < nparams; i++)
            s->params[i] = params[i] ? strdup(params[i]) : NULL;
    }
}

void pgjob_copy(struct pgjob *j, const char *copy_sql, const char *data, size_t len)
{
    struct step *s = add_step(j);
    s->sql = strdup(copy_sql);
    s->copy_data = malloc(len ? len : 1);
    if (!s->copy_data)
        abort();
    memcpy(s->copy_data, data, len);
    s->copy_len = len;
}

static void job_free(struct pgjob *j)
{
    for (size_t i = 0; i < j->n; i++) {
        free(j->steps[i].sql);
        for (int k = 0; k < j->steps[i].nparams; k++)
            free(j->steps[i].params[k]);
        free(j->steps[i].params);
        free(j->steps[i].copy_data);
    }
    free(j->steps);
    free(j);
}

static void run_next(struct pgjob_queue *q);
static void step(struct pgjob_queue *q);

static void finish(struct pgjob_queue *q, const char *err)
{
    struct pgjob *j = q->head;
    q->head = j->next;
    if (!q->head)
        q->tail = NULL;
    q->running = false;
    if (j->done)
        j->done(j->ud, err);
    job_free(j);
    run_next(q);
}

static void on_rollback(void *ud, PGresult *res, const char *err)
{
    (void)res;
    (void)err; /* the job's own error is what matters */
    struct pgjob_queue *q = ud;
    finish(q, q->head->err);
}

static void fail(struct pgjob_queue *q, const char *err)
{
    struct pgjob *j = q->head;
    snprintf(j->err, sizeof j->err, "%s", err);
    /* the cause, before ROLLBACK starts another operation on the connection */
    const struct pgerr *pe = pgconn_last_error(q->conn);
    if (pe->message[0] && strstr(err, pe->message))
        q->lasterr = *pe;
    else
        pgerr_set(&q->lasterr, "", false, err);
    if (pgconn_ok(q->conn))
        pgconn_query(q->conn, "ROLLBACK", 0, NULL, on_rollback, q);
    else
        finish(q, j->err);
}

static void on_copy_end(void *ud, PGresult *res, const char *err)
{
    (void)res;
    struct pgjob_queue *q = ud;
    if (err) {
        fail(q, err);
        return;
    }
    q->head->i++;
    step(q);
}

static void on_copy_drain(void *ud)
{
    struct pgjob_queue *q = ud;
    pgconn_copy_end(q->conn, NULL, on_copy_end, q);
}

static void on_result(void *ud, PGresult *res, const char *err)
{
    struct pgjob_queue *q = ud;
    struct pgjob *j = q->head;
    struct step *s = &j->steps[j->i];
    if (err) {
        fail(q, err);
        return;
    }
    if (s->copy_data) {
        int r = pgconn_copy_put(q->conn, s->copy_data, s->copy_len);
        if (r < 0) {
            pgconn_copy_end(q->conn, "copy failed", on_copy_end, q);
            return;
        }
        if (r == 1) {
            pgconn_on_drain(q->conn, on_copy_drain, q);
            return;
        }
        pgconn_copy_end(q->conn, NULL, on_copy_end, q);
        return;
    }
    if (s->hook) {
        char msg[1024] = "";
        if (s->hook(j, res, j->ud, msg, sizeof msg) != 0) {
            fail(q, msg[0] ? msg : "unexpected result");
            return;
        }
        s = &j->steps[j->i]; /* the hook may have grown the array */
    }
    j->i++;
    step(q);
}

static void step(struct pgjob_queue *q)
{
    struct pgjob *j = q->head;
    if (j->i >= j->n) {
        finish(q, NULL);
        return;
    }
    struct step *s = &j->steps[j->i];
    const char *sql = s->sql;
    if (q->begin && strcmp(sql, "BEGIN") == 0)
        sql = q->begin; /* the transaction's limits travel with its BEGIN: one round trip */
    pgconn_query(q->conn, sql, s->nparams, (const char *const *)s->params, on_result, q);
}

static void on_connect(void *ud, const char *err)
{
    struct pgjob_queue *q = ud;
    q->connecting = false;
    if (err) {
        /* fail the job at the head; later jobs try again */
        struct pgjob *j = q->head;
        snprintf(j->err, sizeof j->err, "%s", err);
        q->lasterr = *pgconn_last_error(q->conn);
        finish(q, j->err);
        return;
    }
    step(q);
}

static void run_next(struct pgjob_queue *q)
{
    if (q->running || !q->head)
        return;
    q->running = true;
    if (!pgconn_ok(q->conn)) {
        q->connecting = true;
        pgconn_connect(q->conn, on_connect, q);
        return;
    }
    step(q);
}

struct pgjob_queue *pgjob_queue_new(uv_loop_t *loop, const char *conninfo)
{
    struct pgjob_queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->conn = pgconn_new(loop, conninfo);
    if (!q->conn) {
        free(q);
        return NULL;
    }
    return q;
}

void pgjob_queue_set_limits(struct pgjob_queue *q, double connect_seconds, double op_seconds,
                            const char *set_local)
{
    pgconn_set_timeouts(q->conn, connect_seconds, op_seconds);
    free(q->begin);
    q->begin = NULL;
    if (set_local && *set_local) {
        size_t n = strlen(set_local) + 16;
        q->begin = malloc(n);
        if (!q->begin)
            abort();
        snprintf(q->begin, n, "BEGIN; %s", set_local);
    }
}

const struct pgerr *pgjob_queue_last_error(const struct pgjob_queue *q)
{
    return &q->lasterr;
}

void pgjob_queue_free(struct pgjob_queue *q)
{
    if (!q)
        return;
    free(q->begin);
    while (q->head) {
        struct pgjob *j = q->head;
        q->head = j->next;
        if (j->ud_free)
            j->ud_free(j->ud);
        job_free(j);
    }
    pgconn_free(q->conn);
    free(q);
}

void pgjob_submit(struct pgjob_queue *q, struct pgjob *j)
{
    if (q->begin && j->n > 0 && strcmp(j->steps[0].sql, "BEGIN") != 0) {
        /* statements of their own get a transaction too, for its limits */
        add_step(j); /* room for one more; BEGIN goes first */
        memmove(j->steps + 1, j->steps, (j->n - 1) * sizeof *j->steps);
        memset(&j->steps[0], 0, sizeof j->steps[0]);
        j->steps[0].sql = strdup("BEGIN");
        pgjob_sql(j, "COMMIT", 0, NULL, NULL);
    }
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    run_next(q);
}

bool pgjob_queue_connected(const struct pgjob_queue *q)
{
    return pgconn_ok(q->conn);
}
