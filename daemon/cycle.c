/* cycle: one datasource's cycle. See cycle.h. */
#include "cycle.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "chunklease.h"
#include "lease.h"
#include "log.h"
#include "pgctl.h"
#include "pglease.h"
#include "planning.h"
#include "registry.h"
#include "retry.h"
#include "segments.h"
#include "slicerun.h"
#include "timeutil.h"
#include "typemap.h"

static void cycle_done(struct dsync *d, const char *err);
static void retry_prepare(struct dsync *d, void *arg);
static void retry_prepare_drop(struct dsync *d, void *arg);
static void retry_cycle_end(struct dsync *d, void *arg);

/* ---- retry waits ---- */

static void on_delay(uv_timer_t *t)
{
    struct delayed *dl = t->data;
    struct dsync *d = dl->d;
    sched_touch(d->s);
    LIST_DEL(d->delays, dl);
    d->outstanding--;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    dl->fn(d, dl->arg);
}

void cycle_call_later(struct dsync *d, double seconds, void (*fn)(struct dsync *, void *),
                      void (*drop)(struct dsync *, void *), void *arg)
{
    struct delayed *dl = sched_xcalloc(1, sizeof *dl);
    dl->d = d;
    dl->fn = fn;
    dl->drop = drop;
    dl->arg = arg;
    uv_timer_init(d->s->loop, &dl->t);
    dl->t.data = dl;
    LIST_PUSH(d->delays, dl);
    d->outstanding++;
    uint64_t ms = (uint64_t)(seconds * 1000.0), due = uv_now(d->s->loop) + ms;
    if (due > d->s->quiet_until)
        d->s->quiet_until = due; /* waiting for our own timer is not being stuck */
    uv_timer_start(&dl->t, on_delay, ms, 0);
}

void cycle_drop_delays(struct dsync *d)
{
    bool end_dropped = false;
    segments_forget(d); /* waiting for a snapshot is a wait too */
    while (d->delays) {
        struct delayed *dl = d->delays;
        LIST_DEL(d->delays, dl);
        uv_timer_stop(&dl->t);
        uv_close((uv_handle_t *)&dl->t, (uv_close_cb)free);
        d->outstanding--;
        if (dl->fn == retry_cycle_end)
            end_dropped = true;
        else if (dl->drop)
            dl->drop(d, dl->arg);
    }
    if (end_dropped)
        cycle_done(d, "stopping before the end of the cycle could be recorded");
}

void cycle_cancel_all(struct dsync *d)
{
    planning_cancel(d);
    cycle_drop_delays(d);
    slicerun_cancel_all(d);
}

/* ---- phases ---- */

static void cycle_reset(struct dsync *d)
{
    registry_free_cols(d->ccols, d->nccols);
    d->ccols = NULL;
    free(d->ccol_names);
    d->ccol_names = NULL;
    d->nccols = 0;
    free(d->types);
    d->types = NULL;
    free(d->slice_col);
    d->slice_col = NULL;
    free(d->req_cols);
    d->req_cols = NULL;
    plan_free(d->plan);
    d->plan = NULL;
    for (size_t i = 0; d->plans && i < d->nwork; i++)
        plan_free(d->plans[i]);
    free(d->plans);
    d->plans = NULL;
    free(d->snapc);
    d->snapc = NULL;
    d->nsnapc = 0;
    free(d->ledc);
    d->ledc = NULL;
    d->nledc = 0;
    free(d->work);
    d->work = NULL;
    free(d->work_rows);
    d->work_rows = NULL;
    free(d->work_max);
    d->work_max = NULL;
    free(d->held);
    d->held = NULL;
    d->nheld = 0;
    free(d->work_recorded);
    d->work_recorded = NULL;
    for (size_t i = 0; d->cu && i < d->nwork; i++)
        free(d->cu[i].unit);
    free(d->cu);
    d->cu = NULL;
    d->chunk_units = false;
    d->away = d->slice_off = d->helped_slices = 0;
    d->recheck_pending = false;
    d->nwork = 0;
    d->table_reset = false;
    d->migrating = false;
    d->counts_mode = false;
    d->ledger_stale = false;
    d->prep_attempts = 0;
    free(d->slices);
    d->slices = NULL;
    d->nslices = d->next_slice = 0;
    d->planned = false;
    d->failed = false;
    d->err_kind[0] = d->err_sqlstate[0] = d->err_druid_code[0] = '\0';
    d->err_http_status = 0;
    d->interrupted = false;
    d->err[0] = '\0';
    d->rows_read = d->inserted = d->vanished = 0;
    d->est_rows = 0;
    d->resync_swapped = false;
    if (strcmp(d->sink_key, d->name) != 0) {
        free(d->sink_key);
        d->sink_key = sched_xstrdup(d->name);
    }
}

static void on_ds_timer(uv_timer_t *t)
{
    struct dsync *d = t->data;
    struct sched *s = d->s;
    if (s->stopping || d->st != DS_IDLE)
        return;
    if (!d->present || !d->selected)
        return; /* the next discovery decides */
    if (s->auth_blocked) {
        cycle_schedule(d, s->cfg->sync_interval_seconds);
        return;
    }
    cycle_start(d);
}

void cycle_schedule(struct dsync *d, double seconds)
{
    uv_timer_start(&d->timer, on_ds_timer, (uint64_t)(seconds * 1000.0), 0);
}

void cycle_planned(struct dsync *d, struct ledger_slice *sl, size_t n)
{
    d->slices = sl;
    d->planned = true;
    for (size_t i = 0; i < n; i++) {
        d->slices[i].max_seen = INT64_MIN;
        d->slices[i].status = LEDGER_PENDING;
        d->slices[i].away = false;
        d->est_rows += sl[i].r.est_rows;
    }
    d->nslices = n;
    chunklease_planned(d);
    d->st = DS_RUNNING;
    cycle_pump(d);
    cycle_maybe_finish(d);
}

void cycle_chunk_record(const struct dsync *d, size_t item, int64_t rows, int64_t max_ms,
                        struct pgsink_chunk *out)
{
    const struct ledger_work *w = &d->work[item];
    memset(out, 0, sizeof *out);
    out->position_ms = INT64_MIN;
    out->start_ms = w->lo;
    out->end_ms = w->hi;
    out->druid_rows = -1;
    out->stored_rows = rows;
    if (w->action == LEDGER_DROP) {
        out->start = out->end = "";
        out->fingerprint = NULL; /* gone: its ledger rows are removed */
        return;
    }
    const struct ledger_chunk *c = &d->snapc[w->snap];
    out->start = c->start;
    out->end = c->end;
    out->druid_rows = c->druid_rows;
    if (w->action == LEDGER_READ) {
        out->fingerprint = c->fp;
        out->state = "synced";
        if (w->open) {
            /* still served by realtime tasks: new rows keep arriving, it stays pending */
            out->state = "pending";
            out->position_ms = max_ms > w->position_ms ? max_ms : w->position_ms;
            out->full_read_ms = w->full_read_ms;
        }
        return;
    }
    /* postponed: a ledger row of the same bounds keeps its fingerprint, so that the chunk
     * is read once it is available again only if it changed */
    out->fingerprint = "";
    out->state = "postponed";
    out->postponed_since_ms = w->since_ms;
    for (size_t j = 0; j < d->nledc; j++) {
        const struct ledger_chunk *l = &d->ledc[j];
        if (l->start_ms == w->lo && l->end_ms == w->hi) {
            out->fingerprint = l->fp;
            out->stored_rows = l->stored_rows;
        }
    }
}

void cycle_pump(struct dsync *d)
{
    struct sched *s = d->s;
    while (!d->failed && !s->stopping && !d->lease_handover && d->st == DS_RUNNING &&
           d->next_slice < d->nslices && d->running < s->cfg->max_concurrent_queries) {
        size_t idx = (d->next_slice + d->slice_off) % d->nslices;
        d->next_slice++;
        if (d->slices[idx].status != LEDGER_PENDING || d->slices[idx].away)
            continue; /* (a check again of the slices left to other instances) */
        if (!chunklease_needed(d, idx)) {
            if (d->helping) {
                /* only chunk units let a helper write: the rest is the holder's */
                chunklease_away(d, idx);
                continue;
            }
            slicerun_start(d, idx);
        } else if (!chunklease_start(d, idx)) {
            d->next_slice--; /* a claim of its chunk is in flight: after its answer */
            break;
        }
    }
}

static void on_cycle_end(void *ud, const char *err)
{
    struct dsync *d = ud;
    struct sched *s = d->s;
    sched_touch(s);
    if (err) {
        /* the state row must not keep saying 'syncing': try again on a fresh connection
         * (a start-up corrects it if PostgreSQL stays away) */
        const struct pgerr *pe = pgsink_last_error(s->sink);
        bool again = pgerr_action(pe) == PGERR_RETRY && d->end_attempts < s->cfg->max_retries &&
                     !s->stop_hard;
        if (again) {
            d->end_attempts++;
            double delay = retry_backoff(s->cfg, d->end_attempts, -1);
            log_warning("pg", "%s: recording the end of the cycle failed: %s; retry %d in %.1f s",
                        d->name, err, d->end_attempts, delay);
            cycle_call_later(d, delay, retry_cycle_end, NULL, NULL);
            return;
        }
        log_error("pg", "%s: recording the end of the cycle failed: %s", d->name, err);
    }
    cycle_done(d, err);
}

/* The cycle is over (its end recorded, or given up on): counters, log, next cycle. */
static void cycle_done(struct dsync *d, const char *err)
{
    struct sched *s = d->s;
    double secs = (double)(uv_now(s->loop) - d->t0) / 1000.0;
    bool failed = d->failed || err != NULL;
    if (d->interrupted)
        d->cycles_interrupted++;
    else if (failed)
        d->cycles_failed++;
    else {
        d->cycles_ok++;
        d->last_success = (double)time_now_ms() / 1000.0;
    }
    if (d->interrupted) {
        log_event(LOG_LVL_WARNING, "sched",
                  LOG_FIELDS(.datasource = d->name, .rows = d->rows_read, .has_rows = true),
                  "%s: cycle interrupted after %.1f s: %s", d->name, secs, d->err);
    } else if (d->failed) {
        log_event(LOG_LVL_ERROR, "sched",
                  LOG_FIELDS(.datasource = d->name, .rows = d->rows_read, .has_rows = true,
                             .error_kind = d->err_kind[0] ? d->err_kind : NULL,
                             .sqlstate = d->err_sqlstate[0] ? d->err_sqlstate : NULL,
                             .druid_code = d->err_druid_code[0] ? d->err_druid_code : NULL,
                             .http_status = d->err_http_status),
                  "%s: cycle failed after %.1f s: %s", d->name, secs, d->err);
        sched_set_last_error(s, "%s: %s", d->name, d->err);
    } else {
        /* a daemon repeats quiet cycles for months: only cycles that changed something
         * (and every --once cycle) are worth an info line */
        bool news = s->opts.once || d->inserted > 0 || d->vanished > 0;
        log_event(news ? LOG_LVL_INFO : LOG_LVL_DEBUG, "sched",
                  LOG_FIELDS(.datasource = d->name, .rows = d->rows_read, .has_rows = true),
                  "%s: cycle done in %.1f s: %" PRId64 " rows read, %" PRId64 " new, %" PRId64
                  " vanished, %zu slices (%zu fast)",
                  d->name, secs, d->rows_read, d->inserted, d->vanished, d->nslices,
                  d->fast_slices);
    }
    if (s->opts.once) {
        d->once_done = true;
        d->once_failed = failed;
    }
    d->st = DS_IDLE;
    d->helping = false;
    lease_cycle_end(d);
    /* an interrupted cycle says nothing about the datasource's health */
    if (!d->interrupted)
        d->failed_cycles = failed ? d->failed_cycles + 1 : 0;
    cycle_reset(d);
    if (!s->opts.once && !s->stopping)
        cycle_schedule(d, retry_next_cycle(s->cfg, d->failed_cycles));
    sched_check_finished(s);
}

static void record_cycle_end(struct dsync *d)
{
    char cur[TIME_ISO_MAX];
    /* a rebuild's cursor is the shadow's: the live row takes it with the swap only */
    bool cursor = d->end_cursor_ms != INT64_MIN && (!d->resync || d->resync_swapped);
    if (cursor)
        time_format_iso_ms(d->end_cursor_ms, cur);
    pgsink_state_cycle_end(d->s->sink, d->name, d->failed ? d->err : NULL, cursor ? cur : NULL,
                           d->interrupted, d->detection,
                           d->migrating && !d->failed ? ROWENC_ID_SCHEME : 0, on_cycle_end, d);
}

/* A fenced write of the cycle's end (the chunk ledger, the swap) refused: another instance
 * holds the datasource now and records its own end. */
static bool end_fenced_out(struct dsync *d, const char *err)
{
    if (!err || !pglease_lost(pgsink_last_error(d->s->sink)))
        return false;
    lease_lost(d, err);
    cycle_done(d, NULL);
    return true;
}

static void on_swapped(void *ud, const char *err)
{
    struct dsync *d = ud;
    sched_touch(d->s);
    if (end_fenced_out(d, err))
        return;
    if (err) {
        /* the live table is as it was; the shadow stays and the next cycle resumes */
        snprintf(d->err, sizeof d->err,
                 "replacing the table's contents with the rebuilt data "
                 "failed: %s",
                 err);
        d->failed = true;
    } else {
        d->resync_swapped = true;
        log_info("sched", "%s: resync done: the table's contents replaced by the rebuilt data",
                 d->name);
    }
    record_cycle_end(d);
}

static void on_initial_load_done(void *ud, const char *err)
{
    struct dsync *d = ud;
    sched_touch(d->s);
    if (err) {
        /* the flag stays: the next cycle finds every chunk synced and tries again */
        snprintf(d->err, sizeof d->err,
                 "building the primary key and range index after the first load failed: %s", err);
        d->failed = true;
    } else if (d->incremental) {
        /* the load's newest row (other instances may have read the last chunks) */
        int64_t m = pgsink_initial_load_newest(d->s->sink, d->sink_key);
        if (m != INT64_MIN && (d->end_cursor_ms == INT64_MIN || m > d->end_cursor_ms))
            d->end_cursor_ms = m;
        if (m != INT64_MIN && m > d->cursor_ms)
            d->cursor_ms = m;
    }
    record_cycle_end(d);
}

/* The end of a cycle's writes: a rebuild that completed replaces the live table's contents
 * first (pgsink_resync_swap); a table loaded without indexes gets them once a cycle has
 * committed and recorded every chunk (pgsink_finish_initial_load); then the end is
 * recorded. */
static void cycle_writes_done(struct dsync *d)
{
    if (!d->resync && !d->failed && !d->s->stopping &&
        pgsink_initial_load(d->s->sink, d->sink_key)) {
        pgsink_finish_initial_load(d->s->sink, d->sink_key, on_initial_load_done, d);
        return;
    }
    if (d->resync && !d->failed && d->s->stopping) {
        /* the swap can take a while: the next run does it (the shadow is complete) */
        snprintf(d->err, sizeof d->err, "stopped before the rebuilt data replaced the table");
        d->interrupted = d->failed = true;
    } else if (d->resync && !d->failed) {
        pgsink_resync_swap(d->s->sink, d->name, ROWENC_ID_SCHEME, on_swapped, d);
        return;
    }
    record_cycle_end(d);
}

static void retry_cycle_end(struct dsync *d, void *arg)
{
    (void)arg;
    record_cycle_end(d);
}

static void on_chunks_written(void *ud, const char *err)
{
    struct dsync *d = ud;
    sched_touch(d->s);
    if (end_fenced_out(d, err))
        return;
    if (err && !d->failed) {
        snprintf(d->err, sizeof d->err, "recording the chunk ledger failed: %s", err);
        d->failed = true;
    }
    cycle_writes_done(d);
}

/* The ledger rows not written with a slice's data: chunks whose slices committed
 * concurrently, postponed chunks, and drops kept as an archive (follow_drops false).
 * Returns whether a write was started. */
static bool write_chunks(struct dsync *d)
{
    struct sched *s = d->s;
    struct pgsink_chunk *rec = sched_xcalloc(d->nwork + d->nheld, sizeof *rec);
    size_t n = 0, postponed = 0;
    for (size_t i = 0; i < d->nheld; i++)
        rec[n++] = d->held[i]; /* drop-held marks set or cleared */
    int64_t now = time_now_ms();
    for (size_t i = 0; i < d->nwork; i++) {
        const struct ledger_work *w = &d->work[i];
        if (w->action == LEDGER_POSTPONE) {
            postponed++;
            if (now - w->since_ms > 600000)
                log_warning("sched",
                            "%s: chunk %s/%s has been postponed for %.0f minutes: some of its "
                            "segments are not available in Druid",
                            d->name, d->snapc[w->snap].start, d->snapc[w->snap].end,
                            (double)(now - w->since_ms) / 60000.0);
        } else if (!d->planned) {
            /* planning was cut short (a stop, a hand-over): no item is known to be done,
             * not even one no slice covers yet */
            continue;
        } else if (d->chunk_units && w->action == LEDGER_READ) {
            /* recorded under its chunk unit when its last slice committed */
            continue;
        } else if (w->action == LEDGER_DROP && !s->cfg->follow_drops) {
            /* kept in PostgreSQL as an archive: only the ledger forgets the chunk */
        } else if (d->work_recorded[i] ||
                   !ledger_item_complete(d->slices, d->nslices, i, SIZE_MAX)) {
            continue;
        }
        cycle_chunk_record(d, i, d->work_rows[i], d->work_max[i], &rec[n++]);
    }
    d->postponed = postponed;
    if (n == 0) {
        free(rec);
        return false;
    }
    pgsink_chunks_write(s->sink, d->sink_key, rec, n, on_chunks_written, d);
    free(rec);
    return true;
}

/* A help cycle is over: nothing of the datasource's own is recorded (its holder does). */
static void help_done(struct dsync *d)
{
    struct sched *s = d->s;
    double secs = (double)(uv_now(s->loop) - d->t0) / 1000.0;
    /* how it ended says what became of the slices in flight (the holder reads them again) */
    const char *ended = d->interrupted ? "; stopped: " : d->failed ? "; failed: " : "";
    int lvl = d->failed ? LOG_LVL_WARNING : d->helped_slices ? LOG_LVL_INFO : LOG_LVL_DEBUG;
    log_event(lvl, "sched",
              LOG_FIELDS(.datasource = d->name, .rows = d->rows_read, .has_rows = true,
                         .error_kind = d->err_kind[0] ? d->err_kind : NULL,
                         .sqlstate = d->err_sqlstate[0] ? d->err_sqlstate : NULL),
              "%s: helped instance %s with its first load for %.1f s: %zu slices, %" PRId64
              " rows%s%s",
              d->name, d->lease_holder[0] ? d->lease_holder : "-", secs, d->helped_slices,
              d->rows_read, ended, d->failed ? d->err : "");
    d->helping = false;
    d->st = DS_IDLE;
    lease_cycle_end(d);
    cycle_reset(d);
    if (!s->opts.once && !s->stopping)
        cycle_schedule(d, s->cfg->sync_interval_seconds);
    sched_check_finished(s);
}

static void finish(struct dsync *d)
{
    if (d->helping) {
        d->st = DS_FINISHING;
        help_done(d);
        return;
    }
    /* complete only when planning ended and every planned slice committed */
    bool complete = d->st == DS_RUNNING && ledger_done(d->slices, d->nslices) == d->nslices;
    d->st = DS_FINISHING;
    int64_t m = d->incremental
                    ? ledger_cursor(d->cursor_ms,
                                    ledger_prefix_max(d->slices, d->nslices, SIZE_MAX, INT64_MIN))
                    : INT64_MIN;
    if (m != INT64_MIN && m > d->cursor_ms)
        d->cursor_ms = m;
    if (!complete && !d->failed) {
        /* only a stop or a hand-over (its slices in flight committed; the next holder goes
         * on from the ledger) ends a cycle early without a failure */
        snprintf(d->err, sizeof d->err, "%s",
                 d->lease_handover ? "handed over to another instance before the cycle "
                                     "completed (this instance held more than its share)"
                                   : "stopped before the cycle completed");
        d->interrupted = true;
        d->failed = true;
    }
    d->end_cursor_ms = m;
    d->end_attempts = 0;
    if (d->lease_gone) {
        /* another instance holds it now and writes its state: nothing of ours is recorded */
        cycle_done(d, NULL);
        return;
    }
    if (d->ledger_mode && !d->counts_mode && (d->work || d->nheld) && write_chunks(d))
        return; /* the end is recorded once the ledger rows are written */
    cycle_writes_done(d);
}

void cycle_maybe_finish(struct dsync *d)
{
    if (d->outstanding > 0 || d->st == DS_IDLE || d->st == DS_FINISHING || d->st == DS_PREPARING)
        return;
    bool all_done = d->st == DS_RUNNING && d->next_slice >= d->nslices;
    if (all_done && chunklease_wait_away(d))
        return; /* the holder waits for the slices other instances read */
    if (all_done || d->failed || d->s->stopping || d->lease_handover)
        finish(d);
}

void cycle_fail(struct dsync *d, const char *fmt, ...)
{
    if (!d->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->err, sizeof d->err, fmt, ap);
        va_end(ap);
        d->failed = true;
    }
    cycle_maybe_finish(d);
}

static void on_cycle_started(void *ud, const char *err)
{
    struct dsync *d = ud;
    if (err)
        log_warning("pg", "%s: recording the cycle start failed: %s", d->name, err);
}

static void on_prepared(void *ud, const char *err, const struct pgsink_table_info *info)
{
    struct dsync *d = ud;
    struct sched *s = d->s;
    sched_touch(s);
    d->outstanding--;
    if (err) {
        const struct pgerr *pe = pgsink_last_error(s->sink);
        bool lost = false;
        double delay = retry_postgres(s->cfg, pe, ++d->prep_attempts, s->stopping, &lost);
        if (lost)
            s->schema_lost = true;
        if (delay >= 0 && !lost) {
            /* a lock held by someone else, a restart: the same request again later */
            s->counters.retries[SCHED_ERR_POSTGRES]++;
            char msg[1200];
            retry_pg_describe(pe, msg, sizeof msg);
            log_event(LOG_LVL_WARNING, "pg",
                      LOG_FIELDS(.datasource = d->name, .error_kind = "postgres",
                                 .sqlstate = pe && pe->sqlstate[0] ? pe->sqlstate : NULL),
                      "%s: preparing the PostgreSQL table failed: %s; retry %d in %.1f s", d->name,
                      msg, d->prep_attempts, delay);
            cycle_call_later(d, delay, retry_prepare, retry_prepare_drop, NULL);
            return;
        }
        d->st = DS_PLANNING; /* so that cycle_maybe_finish records the failure */
        cycle_fail(d, "preparing the PostgreSQL table failed: %s", err);
        return;
    }
    for (size_t i = 0; i < d->nccols; i++)
        d->types[i] = info->types[i];
    d->start_ms = PLAN_UNBOUNDED_LO;
    /* a first load is read chunk by chunk under chunk units: other instances may help */
    d->chunk_units = d->ledger_mode && !d->resync && info->initial_load;
    if (d->helping && !d->chunk_units) {
        help_done(d); /* its first load is over: nothing to help with */
        return;
    }
    d->table_reset = info->created || info->empty;
    d->migrating = !d->table_reset && info->id_scheme != ROWENC_ID_SCHEME;
    if (d->migrating)
        log_info("sched",
                 "%s: the table's row ids are of scheme %d (0: unrecorded), the encoder's are of "
                 "scheme %d: reading every row again to rewrite them",
                 d->name, info->id_scheme, ROWENC_ID_SCHEME);
    if (d->incremental && info->cursor && d->migrating && !d->ledger_mode) {
        /* from the start: every row gets its new id */
    } else if (d->incremental && info->cursor && d->table_reset && !d->ledger_mode) {
        log_warning("sched",
                    "%s: the destination table is new or empty but the state row has cursor %s; "
                    "reading from the start",
                    d->name, info->cursor);
    } else if (d->incremental && info->cursor) {
        int64_t c;
        if (time_parse_iso_ms(info->cursor, &c) == 0) {
            d->start_ms = c - (int64_t)(s->cfg->lookback_seconds * 1000.0);
            if (c > d->cursor_ms)
                d->cursor_ms = c;
        } else
            log_warning("sched", "%s: ignoring unreadable cursor \"%s\"", d->name, info->cursor);
    }
    if (!d->helping)
        pgsink_state_cycle_start(s->sink, d->name, on_cycle_started, d);
    if (s->stopping) {
        d->st = DS_PLANNING;
        cycle_maybe_finish(d);
        return;
    }
    planning_start(d);
}

static void prepare(struct dsync *d)
{
    /* d->req (and req_cols) stay until the cycle ends: a retry sends it again */
    pgsink_prepare_table(d->s->sink, &d->req, on_prepared, d);
}

/* A stop ended the wait: the cycle is over before it planned (interrupted). */
static void retry_prepare_drop(struct dsync *d, void *arg)
{
    (void)arg;
    d->st = DS_PLANNING;
}

static void retry_prepare(struct dsync *d, void *arg)
{
    (void)arg;
    if (d->s->stopping) {
        d->st = DS_PLANNING; /* so that cycle_maybe_finish records it as interrupted */
        cycle_maybe_finish(d);
        return;
    }
    d->outstanding++;
    prepare(d);
}

static void on_schema_ready(void *ud, const char *err)
{
    struct dsync *d = ud;
    struct sched *s = d->s;
    if (err) {
        on_prepared(d, err, NULL);
        return;
    }
    if (s->schema_lost)
        log_warning("pg", "destination schema \"%s\" was missing; created it again",
                    s->cfg->destination_schema);
    s->schema_lost = false;
    prepare(d);
}

/* ---- operator requests (pause) ---- */

/* The datasources whose pause this process has logged: said once per pause, not every cycle
 * (by name: a datasource rediscovered after a catalog gap is the same pause). */
struct paused_name {
    struct paused_name *next;
    char *name;
};
static struct paused_name *paused_logged;

/* Whether the pause was new to this process; forgets it on resume (paused false). */
static bool note_paused(const char *name, bool paused)
{
    for (struct paused_name **pp = &paused_logged; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            if (!paused) {
                struct paused_name *p = *pp;
                *pp = p->next;
                free(p->name);
                free(p);
            }
            return false;
        }
    }
    if (!paused)
        return false;
    struct paused_name *p = sched_xcalloc(1, sizeof *p);
    p->name = sched_xstrdup(name);
    p->next = paused_logged;
    paused_logged = p;
    return true;
}

static void cycle_begin(struct dsync *d);

static void on_requests(void *ud, const char *err, const struct pgctl_requests *r)
{
    struct dsync *d = ud;
    struct sched *s = d->s;
    sched_touch(s);
    d->outstanding--;
    if (err) {
        /* not knowing whether it is paused, the cycle must not touch it: it fails like a
         * prepare that PostgreSQL refused, and the next cycle asks again */
        d->st = DS_PLANNING;
        cycle_fail(d, "reading the operator requests from PostgreSQL failed: %s", err);
        return;
    }
    bool paused = r->paused;
    d->paused = paused;
    /* a rebuild under way resumes even when its request was withdrawn by hand: its shadow
     * and ledger rows are only cleaned up by the swap */
    d->resync = !paused && (r->resync_requested || r->resync_started);
    if (note_paused(d->name, paused))
        log_info("sched",
                 "%s: paused by an operator (druid-syncd resume %s): its cycles are "
                 "skipped",
                 d->name, d->name);
    if (paused || s->stopping) {
        log_debug("sched", "%s: cycle skipped (%s)", d->name, paused ? "paused" : "stopping");
        d->st = DS_IDLE;
        if (s->opts.once) {
            d->once_done = true;
            d->once_failed = false; /* a paused datasource is not a failed one */
        }
        if (!s->opts.once && !s->stopping)
            cycle_schedule(d, s->cfg->sync_interval_seconds);
        sched_check_finished(s);
        return;
    }
    /* another instance may hold it: claimed (or still held) before anything is read */
    lease_acquire(d, cycle_begin);
}

/* Every cycle first reads the operator requests: a paused datasource does nothing at all
 * (no Druid query, no write), so a pause takes effect within one cycle on every instance. */
void cycle_start(struct dsync *d)
{
    d->st = DS_PREPARING;
    d->outstanding++;
    pgsink_ctl_read(d->s->sink, d->name, on_requests, d);
}

static void cycle_begin(struct dsync *d)
{
    struct sched *s = d->s;
    cycle_reset(d);
    d->t0 = uv_now(s->loop);
    d->fast_slices = 0;
    if (d->resync) {
        free(d->sink_key);
        d->sink_key = pgsink_resync_key(d->name);
    }
    if (d->resync || d->last_resync)
        d->cursor_ms = INT64_MIN; /* the shadow's cursor, or the live one, comes with prepare */
    d->last_resync = d->resync;
    d->nccols = d->ncols;
    d->ccols = registry_copy_cols(d->cols, d->ncols); /* discovery may change d->cols mid-cycle */
    d->ccol_names = sched_xcalloc(d->ncols, sizeof *d->ccol_names);
    d->types = sched_xcalloc(d->ncols, sizeof *d->types);
    struct pgsink_column *pc = sched_xcalloc(d->ncols, sizeof *pc);
    d->inc_idx = -1;
    int time_idx = -1;
    for (size_t i = 0; i < d->ncols; i++) {
        d->ccol_names[i] = d->ccols[i].name;
        pc[i].name = d->ccols[i].name;
        pc[i].type = typemap_from_druid(d->ccols[i].sql_type);
        bool ts = pc[i].type == PGT_TIMESTAMPTZ;
        if (strcmp(d->ccols[i].name, s->cfg->incremental_column) == 0) {
            if (ts)
                d->inc_idx = (int)i;
            else
                log_warning("sched",
                            "%s: incremental_column \"%s\" is %s, not a TIMESTAMP: "
                            "syncing in full mode",
                            d->name, d->ccols[i].name, d->ccols[i].sql_type);
        }
        if (ts && strcmp(d->ccols[i].name, "__time") == 0)
            time_idx = (int)i;
    }
    d->incremental = d->inc_idx >= 0;
    d->time_idx = time_idx;
    int slice_idx = d->incremental ? d->inc_idx : time_idx;
    d->slice_col = slice_idx >= 0 ? sched_xstrdup(d->ccols[slice_idx].name) : NULL;
    /* Druid changes data by time chunk: datasources read by __time follow sys.segments */
    d->ledger_mode = time_idx >= 0 && (!d->incremental || d->inc_idx == time_idx);
    log_msg(s->opts.once || d->resync ? LOG_LVL_INFO : LOG_LVL_DEBUG, "sched",
            "%s: cycle starts (%s mode, %zu columns%s)", d->name,
            d->incremental ? "incremental" : "full", d->ncols,
            d->resync    ? ", resync: rebuilding beside the live table"
            : d->helping ? ", helping with the first load of another instance"
                         : "");
    struct pgsink_table_req req = {d->name, pc, d->ncols, d->slice_col,
                                   d->incremental ? "incremental" : "full",
                                   s->cfg->incremental_column, ROWENC_ID_SCHEME, d->resync,
                                   /* a new table of the segments mode loads unindexed */
                                   d->ledger_mode && !d->resync, d->helping};
    d->st = DS_PREPARING;
    d->outstanding++;
    d->req_cols = pc;
    d->req = req;
    if (s->schema_lost) {
        /* a failure said the destination schema (or a table) is gone: create it again */
        pgsink_ensure_schema(s->sink, on_schema_ready, d);
        return;
    }
    prepare(d);
}

void cycle_free(struct dsync *d)
{
    cycle_cancel_all(d);
    planning_free(d);
    slicerun_free_all(d);
    cycle_reset(d);
    registry_free_cols(d->cols, d->ncols);
    d->cols = NULL;
    d->ncols = 0;
}
