/* pgctl: reading operator requests from the state table. See pgctl.h. */
#include "pgctl.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "pgsink_int.h"

struct ctl_read {
    pgctl_cb cb;
    void *ud;
};

static int ctl_hook(struct pgjob *j, PGresult *res, void *ud, char *err, size_t errlen)
{
    (void)j;
    (void)err;
    (void)errlen;
    struct ctl_read *r = ud;
    struct pgctl_requests q = {false, false, NULL, NULL};
    if (PQntuples(res) > 0) {
        q.known = true;
        q.paused = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        q.resync_requested = PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1);
        q.resync_started = PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2);
    }
    r->cb(r->ud, NULL, &q);
    r->cb = NULL; /* answered */
    return 0;
}

static void ctl_done(void *ud, const char *err)
{
    struct ctl_read *r = ud;
    if (r->cb)
        r->cb(r->ud, err ? err : "reading the operator requests returned nothing", NULL);
    free(r);
}

void pgsink_ctl_read(struct pgsink *s, const char *datasource, pgctl_cb cb, void *ud)
{
    struct ctl_read *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->cb = cb;
    r->ud = ud;
    struct pgjob *j = pgjob_new(ctl_done, r);
    pgjob_set_ud_free(j, free); /* dropped unrun (at exit): no callback */
    struct buf b = BUF_INIT;
    buf_puts(&b, "SELECT paused, resync_requested::text, resync_started::text FROM ");
    pgsink_qtable(&b, s, STATE_TABLE);
    buf_puts(&b, " WHERE datasource = $1");
    const char *p[1] = {datasource};
    pgjob_sql(j, b.data, 1, p, ctl_hook);
    buf_free(&b);
    pgjob_submit(s->control, j);
}
