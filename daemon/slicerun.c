/* slicerun: one slice, from Druid's response to COMMIT. See slicerun.h. */
#include "slicerun.h"

#include <inttypes.h>
#include <stdio.h>

#include "chunklease.h"
#include "cycle.h"
#include "druidsql.h"
#include "lease.h"
#include "log.h"
#include "pglease.h"
#include "retry.h"
#include "timeutil.h"

#define COPY_CHUNK (256 * 1024) /* COPY data handed to libpq at a time */

struct slicerun {
    struct dsync *d;
    struct slicerun *next, *prev;
    size_t idx;
    struct pgsink_slice *sl;
    struct druid_query *q;
    struct rowenc *enc;
    struct buf out;
    int64_t max_seen;
    int64_t cursor_sent; /* the cursor this slice's commit carries, INT64_MIN none */
    uint64_t rows;
    uint64_t bytes;
    bool ordered;
    bool committing;
    bool pg_failed;     /* the consumer side failed: PostgreSQL, not Druid */
    struct pgerr pge;   /* ... and why */
    int64_t *item_rows; /* segments mode: rows read per work item w0..w1 of the slice */
    int64_t *item_max;  /* ... and the newest __time of each */
    bool chunks_sent;   /* the commit carries the ledger rows of the items it completes */
    bool *item_clean;   /* ... which ones (items w0..w1) */
    int64_t epoch;      /* the lease epoch it began under (its fence's token) */
    char err[1024];
};

static void run_free(struct slicerun *r)
{
    free(r->item_rows);
    free(r->item_max);
    free(r->item_clean);
    rowenc_free(r->enc);
    buf_free(&r->out);
    free(r);
}

static void run_end(struct slicerun *r)
{
    struct dsync *d = r->d;
    LIST_DEL(d->runs, r);
    d->running--;
    d->outstanding--;
    run_free(r);
}

static void slice_retry(struct dsync *d, void *arg)
{
    size_t idx = (size_t)(uintptr_t)arg;
    if (d->failed || d->s->stopping) {
        d->slices[idx].status = LEDGER_PENDING;
        cycle_maybe_finish(d);
        return;
    }
    slicerun_start(d, idx);
}

/* A stop ended the wait: the slice is pending again, so the cycle is seen as incomplete. */
static void slice_retry_drop(struct dsync *d, void *arg)
{
    d->slices[(size_t)(uintptr_t)arg].status = LEDGER_PENDING;
}

/* A slice attempt failed; its transaction is (being) rolled back. Exactly one of e (Druid)
 * and pe (PostgreSQL) is set. The slice is retried after a backoff or, when it cannot be,
 * put back as pending and the cycle fails: no slice is left behind. */
static void slice_failed(struct slicerun *r, const struct druid_error *e, const struct pgerr *pe)
{
    struct dsync *d = r->d;
    struct sched *s = d->s;
    size_t idx = r->idx;
    struct ledger_slice *st = &d->slices[idx];
    if (e && r->ordered && e->kind == DRUID_ERR_QUERY && strstr(e->message, "ime ordering")) {
        /* too many segments per time chunk for an ordered scan: read unordered from now on
         * (occurrence numbers are then counted over the whole slice) */
        log_warning("sched",
                    "%s: Druid cannot order this scan by __time (%s); reading "
                    "slices unordered",
                    d->name, e->message);
        d->unordered = true;
        run_end(r);
        slicerun_start(d, idx);
        return;
    }
    st->attempts++;
    char msg[1200];
    int ekind;
    double delay;
    const char *kind;
    if (pe) {
        retry_pg_describe(pe, msg, sizeof msg);
        ekind = SCHED_ERR_POSTGRES;
        kind = "postgres";
        bool lost = false;
        delay = retry_postgres(s->cfg, pe, st->attempts, false, &lost);
        if (lost)
            s->schema_lost = true; /* recreated before the next cycle */
    } else {
        snprintf(msg, sizeof msg, "%s", r->err[0] ? r->err : e->message);
        ekind = (int)e->kind;
        kind = druid_err_kind_name(e->kind);
        bool auth = false;
        delay = retry_druid(s->cfg, e, st->attempts, false, &auth);
        if (auth) {
            sched_block_on_auth(s, e->http_status, druid_error_reason(e));
            sched_set_last_error(s, "Druid HTTP %ld: %s", e->http_status, druid_error_reason(e));
        }
    }
    run_end(r);
    st->status = LEDGER_PENDING;
    if (pe && pglease_lost(pe)) {
        /* the fence refused the commit: another instance holds the datasource now */
        log_event(LOG_LVL_WARNING, "lease",
                  LOG_FIELDS(.datasource = d->name, .slice = (long long)idx + 1,
                             .error_kind = "lease", .sqlstate = pe->sqlstate),
                  "%s: slice %zu rolled back by the fence: %s", d->name, idx + 1, pe->message);
        if (strstr(pe->message, "lease of " PGLEASE_CHUNK_PREFIX))
            chunklease_lost(d, pe->message); /* its chunk's unit, not the datasource's */
        else
            lease_lost(d, pe->message);
        cycle_maybe_finish(d);
        return;
    }
    /* what a log pipeline filters on: the slice and the cause as the peer gave it */
    const struct log_fields *f =
        LOG_FIELDS(.datasource = d->name, .slice = (long long)idx + 1, .error_kind = kind,
                   .sqlstate = pe && pe->sqlstate[0] ? pe->sqlstate : NULL,
                   .druid_code = e && e->code[0] ? e->code : NULL,
                   .http_status = e ? e->http_status : 0);
    if (delay >= 0 && s->stopping) {
        /* a failure a retry would cure, during a stop: the slice stays pending and the
         * cycle is recorded as interrupted, not failed */
        log_event(LOG_LVL_INFO, "sched", f, "%s: slice %zu ended by the stop (%s: %s)", d->name,
                  idx + 1, kind, msg);
        cycle_maybe_finish(d);
        return;
    }
    if (delay >= 0 && !d->failed) {
        s->counters.retries[ekind]++;
        st->status = LEDGER_RUNNING; /* owned by its retry timer */
        log_event(LOG_LVL_WARNING, "sched", f, "%s: slice %zu failed (%s: %s); retry %d in %.1f s",
                  d->name, idx + 1, kind, msg, st->attempts, delay);
        cycle_call_later(d, delay, slice_retry, slice_retry_drop, (void *)(uintptr_t)idx);
        return;
    }
    s->counters.errors[ekind]++;
    if (!d->failed) { /* the first failure is the cycle's: keep its cause for the log */
        snprintf(d->err_kind, sizeof d->err_kind, "%s", kind);
        snprintf(d->err_sqlstate, sizeof d->err_sqlstate, "%s", pe ? pe->sqlstate : "");
        snprintf(d->err_druid_code, sizeof d->err_druid_code, "%s", e ? e->code : "");
        d->err_http_status = e ? e->http_status : 0;
    }
    cycle_fail(d, "slice %zu failed: %s", idx + 1, msg);
}

static void on_drain(void *ud)
{
    struct slicerun *r = ud;
    sched_touch(r->d->s);
    if (r->q)
        druid_query_pause(r->q, false);
}

static int flush_out(struct slicerun *r)
{
    if (!r->out.len)
        return 0;
    r->bytes += r->out.len;
    int rc = pgsink_slice_write(r->sl, r->out.data, r->out.len);
    buf_reset(&r->out);
    if (rc < 0) {
        r->pge = *pgsink_slice_last_error(r->sl);
        if (!r->pge.message[0])
            pgerr_set(&r->pge, "", true, "writing COPY data to PostgreSQL failed");
        snprintf(r->err, sizeof r->err, "%s", r->pge.message);
        r->pg_failed = true;
        return -1;
    }
    if (rc == 1 && r->q) {
        /* PostgreSQL is behind: stop reading Druid until libpq's buffer drains */
        druid_query_pause(r->q, true);
        pgsink_slice_on_drain(r->sl, on_drain, r);
    }
    return 0;
}

static int slice_on_header(void *ud, const struct druid_header *h)
{
    struct slicerun *r = ud;
    struct dsync *d = r->d;
    if (h->ncols != d->nccols) {
        snprintf(r->err, sizeof r->err, "Druid returned %zu columns, expected %zu", h->ncols,
                 d->nccols);
        return -1;
    }
    for (size_t i = 0; i < h->ncols; i++) {
        if (strcmp(h->names[i], d->ccols[i].name) != 0) {
            snprintf(r->err, sizeof r->err,
                     "Druid returned column \"%s\" where \"%s\" was expected", h->names[i],
                     d->ccols[i].name);
            return -1;
        }
    }
    return 0;
}

/* The work item (chunk) a row of the slice belongs to, by its __time. */
static void count_item(struct slicerun *r, int64_t ms)
{
    const struct ledger_slice *st = &r->d->slices[r->idx];
    size_t lo = st->w0, hi = st->w1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (r->d->work[mid].lo <= ms)
            lo = mid;
        else
            hi = mid - 1;
    }
    r->item_rows[lo - st->w0]++;
    if (ms > r->item_max[lo - st->w0])
        r->item_max[lo - st->w0] = ms;
}

static int slice_row_done(struct slicerun *r, int rc, int64_t ms);

static int slice_on_row(void *ud, struct json_object *row)
{
    struct slicerun *r = ud;
    int64_t ms = INT64_MIN;
    int rc = rowenc_encode(r->enc, row, &r->out, &ms, r->err, sizeof r->err);
    return slice_row_done(r, rc, ms);
}

/* The same for a row decoded without json-c (druid_query_on_row_view). */
static int slice_on_row_view(void *ud, const struct rowenc_value *v, size_t n)
{
    struct slicerun *r = ud;
    int64_t ms = INT64_MIN;
    int rc = rowenc_encode_values(r->enc, v, n, &r->out, &ms, r->err, sizeof r->err);
    return slice_row_done(r, rc, ms);
}

/* The same for a raw line, through the encoder's fused path when the line is of its kind. */
static int slice_on_row_line(void *ud, const char *line, size_t len)
{
    struct slicerun *r = ud;
    int64_t ms = INT64_MIN;
    int rc = rowenc_encode_line(r->enc, line, len, &r->out, &ms);
    if (rc == ROWENC_LINE_SLOW)
        return DRUID_LINE_DECODE;
    return slice_row_done(r, rc, ms);
}

static int slice_row_done(struct slicerun *r, int rc, int64_t ms)
{
    if (rc == ROWENC_SKIPPED) {
        /* a value no PostgreSQL column can hold (a timestamp outside its range): the row
         * is left out and said so, and the datasource goes on */
        uint64_t n = rowenc_stats(r->enc)->rows_skipped;
        if (n <= 5)
            log_warning("sched", "%s: slice %zu: row skipped: %s%s", r->d->name, r->idx + 1, r->err,
                        n == 5 ? " (further skipped rows of this slice are counted only)" : "");
        r->err[0] = '\0';
        sched_touch(r->d->s);
        return 0;
    }
    if (rc != 0)
        return -1;
    if (ms > r->max_seen) {
        r->max_seen = ms;
        if (ms > r->d->druid_newest_ms)
            r->d->druid_newest_ms = ms;
    }
    if (r->item_rows)
        count_item(r, ms);
    r->rows++;
    sched_touch(r->d->s);
    /* the first row goes out at once: the sink takes a writer and opens the COPY while the
     * rest of the response arrives (it holds the row, pausing us, until one is free) */
    if (r->out.len >= COPY_CHUNK || r->rows == 1)
        return flush_out(r);
    return 0;
}

static void slice_on_commit(void *ud, const struct pgerr *err,
                            const struct pgsink_slice_result *res)
{
    struct slicerun *r = ud;
    struct dsync *d = r->d;
    r->sl = NULL;
    sched_touch(d->s);
    if (err) {
        r->err[0] = '\0';
        slice_failed(r, NULL, err);
        return;
    }
    struct ledger_slice *st = &d->slices[r->idx];
    st->status = LEDGER_DONE;
    st->max_seen = r->max_seen;
    d->rows_read += res->copied;
    d->inserted += res->inserted;
    d->vanished += res->vanished;
    d->fast_slices += res->fast;
    d->rows_total += (uint64_t)res->inserted;
    d->rows_read_total += (uint64_t)res->copied;
    d->bytes_total += r->bytes;
    d->slices_total++;
    const struct rowenc_stats *es = rowenc_stats(r->enc);
    d->nul_replaced_total += es->nul_replaced;
    d->json_as_string_total += es->json_as_string;
    d->rows_skipped_total += es->rows_skipped;
    if (es->nul_replaced || es->json_as_string || es->rows_skipped)
        log_warning("sched",
                    "%s: slice %zu stored by rule: %" PRIu64 " NUL characters replaced by U+FFFD, "
                    "%" PRIu64 " JSON values too deep for jsonb stored as JSON strings, %" PRIu64
                    " rows skipped (timestamps outside PostgreSQL's range)",
                    d->name, r->idx + 1, es->nul_replaced, es->json_as_string, es->rows_skipped);
    if (r->cursor_sent != INT64_MIN && r->cursor_sent > d->cursor_ms)
        d->cursor_ms = r->cursor_sent;
    if (r->item_rows) {
        for (size_t i = st->w0; i <= st->w1; i++) {
            d->work_rows[i] += r->item_rows[i - st->w0];
            if (r->item_max[i - st->w0] > d->work_max[i])
                d->work_max[i] = r->item_max[i - st->w0];
            if (!ledger_item_complete(d->slices, d->nslices, i, SIZE_MAX))
                continue;
            if (r->item_clean && r->item_clean[i - st->w0]) {
                chunklease_item_recorded(d, i);
                if (d->work[i].hi > d->chunk_synced_ms && d->work[i].action == LEDGER_READ)
                    d->chunk_synced_ms = d->work[i].hi;
            } else if (d->chunk_units && !d->work_recorded[i]) {
                /* its slices committed at the same time: recorded now, under its unit */
                chunklease_record_item(d, i);
            }
        }
    }
    if (d->helping)
        d->helped_slices++;
    /* the tokens the commit was fenced with: the datasource's (a helper holds none) and its
     * chunks' */
    char lease_of[700];
    if (d->helping)
        snprintf(lease_of, sizeof lease_of, "helping");
    else
        snprintf(lease_of, sizeof lease_of, "lease epoch %" PRId64, r->epoch);
    if (chunklease_needed(d, r->idx)) {
        char u[560];
        chunklease_describe(d, r->idx, u, sizeof u);
        size_t k = strlen(lease_of);
        snprintf(lease_of + k, sizeof lease_of - k, ", %s", u);
    }
    log_event(LOG_LVL_DEBUG, "sched",
              LOG_FIELDS(.datasource = d->name, .slice = (long long)r->idx + 1, .rows = res->copied,
                         .has_rows = true),
              "%s: slice %zu committed: %" PRId64 " rows, %" PRId64 " new, %" PRId64
              " vanished (instance %s, %s)",
              d->name, r->idx + 1, res->copied, res->inserted, res->vanished, lease_owner(d->s),
              lease_of);
    run_end(r);
    cycle_pump(d);
    cycle_maybe_finish(d);
}

/* The chunks this slice completes become synced in its own transaction. A chunk cut into
 * slices that commit concurrently is recorded at the end of the cycle instead. */
static void attach_chunks(struct slicerun *r)
{
    struct dsync *d = r->d;
    const struct ledger_slice *st = &d->slices[r->idx];
    struct pgsink_chunk *rec = sched_xcalloc(st->w1 - st->w0 + 1, sizeof *rec);
    free(r->item_clean);
    r->item_clean = sched_xcalloc(st->w1 - st->w0 + 1, sizeof *r->item_clean);
    size_t n = 0;
    for (size_t i = st->w0; i <= st->w1; i++)
        if (ledger_item_complete(d->slices, d->nslices, i, r->idx)) {
            cycle_chunk_record(d, i, d->work_rows[i] + r->item_rows[i - st->w0],
                               r->item_max[i - st->w0] > d->work_max[i] ? r->item_max[i - st->w0]
                                                                        : d->work_max[i],
                               &rec[n++]);
            r->item_clean[i - st->w0] = true;
        }
    if (n)
        pgsink_slice_chunks(r->sl, rec, n);
    r->chunks_sent = n > 0;
    /* its chunks' units fence the commit (and are marked clean where it completes them) */
    chunklease_fence(d, r->idx, r->sl, r->item_clean);
    free(rec);
}

static void slice_on_done(void *ud, const struct druid_error *e)
{
    struct slicerun *r = ud;
    struct dsync *d = r->d;
    r->q = NULL;
    sched_touch(r->d->s);
    if (e->kind == DRUID_OK && flush_out(r) != 0)
        e = NULL;
    if (!e || e->kind != DRUID_OK) {
        struct druid_error copy;
        if (e)
            copy = *e;
        pgsink_slice_abort(r->sl);
        r->sl = NULL;
        if (r->pg_failed) {
            /* the consumer side failed: the cause is PostgreSQL's, not Druid's */
            struct pgerr pe = r->pge;
            r->err[0] = '\0';
            slice_failed(r, NULL, &pe);
            return;
        }
        if (!e)
            druid_error_set(&copy, DRUID_ERR_PROTOCOL, "%s", r->err);
        slice_failed(r, &copy, NULL);
        return;
    }
    char cur[TIME_ISO_MAX];
    /* a helper's slices carry no cursor: the holder's committed prefix makes it */
    r->cursor_sent = d->incremental && !d->helping
                         ? ledger_cursor(d->cursor_ms, ledger_prefix_max(d->slices, d->nslices,
                                                                         r->idx, r->max_seen))
                         : INT64_MIN;
    if (r->cursor_sent != INT64_MIN)
        time_format_iso_ms(r->cursor_sent, cur);
    r->committing = true;
    if (r->item_rows && !d->counts_mode)
        attach_chunks(r);
    pgsink_slice_commit(r->sl, r->cursor_sent != INT64_MIN ? cur : NULL, slice_on_commit, r);
}

static void slice_on_ready(void *ud, struct pgsink_slice *sl, const struct pgerr *err)
{
    static const struct druid_query_ops ops = {slice_on_header, slice_on_row, slice_on_done};
    struct slicerun *r = ud;
    struct dsync *d = r->d;
    if (err) {
        slice_failed(r, NULL, err);
        return;
    }
    r->sl = sl;
    sched_touch(r->d->s);
    if (d->failed || d->s->stopping) {
        pgsink_slice_abort(sl);
        r->sl = NULL;
        d->slices[r->idx].status = LEDGER_PENDING;
        run_end(r);
        cycle_maybe_finish(d);
        return;
    }
    struct ledger_slice *st = &d->slices[r->idx];
    pgsink_slice_set_replace(sl, d->migrating);
    chunklease_slice_ready(d, r->idx, sl);
    struct buf b = BUF_INIT;
    struct druid_param p[DRUIDSQL_MAX_PARAMS];
    size_t np = 0;
    r->ordered = d->time_idx >= 0 && !d->unordered;
    /* Ordered reads: identical rows share their timestamp, so with rows in time order
     * occurrence numbers only need counting within one timestamp, which bounds the memory
     * (Druid prints an instant one way, so comparing the text is enough). */
    rowenc_group_by(r->enc, r->ordered ? r->d->time_idx : -1);
    druidsql_slice(&b, p, &np, d->name, d->ccol_names, d->nccols, d->slice_col, st->r.lo, st->r.hi,
                   r->ordered);
    r->q = druid_query_submit(d->s->druid, b.data, p, np, &ops, r);
    buf_free(&b);
    if (!r->q)
        abort();
    druid_query_on_row_view(r->q, slice_on_row_view);
    druid_query_on_row_line(r->q, slice_on_row_line);
}

void slicerun_start(struct dsync *d, size_t idx)
{
    struct slicerun *r = sched_xcalloc(1, sizeof *r);
    r->d = d;
    r->idx = idx;
    r->max_seen = INT64_MIN;
    r->cursor_sent = INT64_MIN;
    r->epoch = d->lease_epoch;
    sched_touch(r->d->s);
    struct rowenc_column *rc = sched_xcalloc(d->nccols, sizeof *rc);
    for (size_t i = 0; i < d->nccols; i++) {
        rc[i].name = d->ccols[i].name;
        rc[i].type = d->types[i];
    }
    /* segments mode needs every row's __time: which chunk it belongs to */
    r->enc = rowenc_new(rc, d->nccols, d->ledger_mode ? d->time_idx : d->inc_idx, true);
    if (d->ledger_mode && d->slices[idx].w0 != SIZE_MAX) {
        size_t k = d->slices[idx].w1 - d->slices[idx].w0 + 1;
        r->item_rows = sched_xcalloc(k, sizeof *r->item_rows);
        r->item_max = sched_xcalloc(k, sizeof *r->item_max);
        for (size_t i = 0; i < k; i++)
            r->item_max[i] = INT64_MIN;
    }
    free(rc);
    if (!r->enc)
        abort();
    d->slices[idx].status = LEDGER_RUNNING;
    LIST_PUSH(d->runs, r);
    d->running++;
    d->outstanding++;
    pgsink_slice_begin(d->s->sink, d->sink_key, d->slices[idx].r.lo, d->slices[idx].r.hi,
                       slice_on_ready, r);
}

void slicerun_cancel_all(struct dsync *d)
{
    for (struct slicerun *r = d->runs, *next; r; r = next) {
        next = r->next;
        if (r->committing)
            continue; /* COMMIT is on its way; it finishes or fails as a whole */
        if (r->q)
            druid_query_cancel(r->q);
        r->q = NULL;
        if (!r->sl)
            continue; /* pgsink_slice_begin has not answered yet; it aborts itself then */
        pgsink_slice_abort(r->sl);
        r->sl = NULL;
        d->slices[r->idx].status = LEDGER_PENDING;
        run_end(r);
    }
}

void slicerun_free_all(struct dsync *d)
{
    while (d->runs) { /* those the sink still holds: pgsink_free reclaims its side */
        struct slicerun *r = d->runs;
        LIST_DEL(d->runs, r);
        if (r->q)
            druid_query_cancel(r->q);
        run_free(r);
    }
}

uint64_t slicerun_rows_in_flight(const struct dsync *d)
{
    uint64_t n = 0;
    for (const struct slicerun *r = d->runs; r; r = r->next)
        if (!r->committing)
            n += r->rows;
    return n;
}
