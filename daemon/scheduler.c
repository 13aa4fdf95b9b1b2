/* scheduler (sched_): discovery rounds, stop and reports; the parts are in sched_int.h. See
 * scheduler.h. */
#include "scheduler.h"

#include <stdarg.h>
#include <stdio.h>

#include "cycle.h"
#include "sched_int.h"
#include "lease.h"
#include "log.h"
#include "registry.h"
#include "retry.h"
#include "segments.h"
#include "slicerun.h"

static void discover(struct sched *s);

void sched_set_last_error(struct sched *s, const char *fmt, ...)
{
    /* truncation is intended: the last error is a one-line summary for STATUS= */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->last_error, sizeof s->last_error, fmt, ap);
    va_end(ap);
}

void sched_block_on_auth(struct sched *s, long http_status, const char *message)
{
    char prefix[32];
    int n = snprintf(prefix, sizeof prefix, "HTTP %ld: ", http_status);
    if (n > 0 && strncmp(message, prefix, (size_t)n) == 0)
        message += n; /* the line names the status already */
    if (!s->auth_blocked)
        log_error("druid",
                  "Druid refused our credentials (HTTP %ld): %s; syncing stops until the "
                  "configuration is reloaded",
                  http_status, message);
    s->auth_blocked = true;
}

/* ---- discovery ---- */

static void on_disc_timer(uv_timer_t *t)
{
    discover(t->data);
}

static void disc_failed(struct sched *s, const struct discovery_error *e)
{
    if (pgerr_schema_missing(pgsink_last_error(s->sink)))
        s->schema_lost = true; /* the metadata tables' schema is gone */
    if (e->kind == DRUID_ERR_AUTH)
        sched_block_on_auth(s, e->http_status, e->message);
    s->disc_attempts++;
    sched_set_last_error(s, "%s: %s", e->what, e->message);
    /* a wrong query (a schema that does not exist) cannot succeed by waiting */
    bool permanent = e->kind == DRUID_ERR_QUERY || e->kind == DRUID_ERR_PROTOCOL || e->permanent;
    if (s->opts.once && (s->disc_attempts > s->cfg->max_retries || s->auth_blocked || permanent)) {
        log_error("sched", "discovery failed: %s: %s", e->what, e->message);
        if (!s->finished_reported && s->opts.on_finished) {
            s->finished_reported = true;
            s->opts.on_finished(s->opts.ud, 1);
        }
        return;
    }
    /* what waiting cannot cure is tried again at the next round, not in a backoff */
    double delay = permanent ? s->cfg->sync_interval_seconds
                             : retry_discovery(s->cfg, s->disc_attempts, s->opts.once);
    log_error("sched", "discovery failed: %s: %s; retry in %.1f s", e->what, e->message, delay);
    if (!s->stopping)
        uv_timer_start(&s->disc_timer, on_disc_timer, (uint64_t)(delay * 1000.0), 0);
    else
        sched_check_finished(s);
}

/* The catalog is read: refresh the datasource list and start the cycles that are due. */
static void disc_apply(struct sched *s, const struct discovery_result *r)
{
    registry_update(s, r);
    size_t started = 0, selected = 0;
    for (struct dsync *d = s->ds; d; d = d->next) {
        if (!d->present) {
            if (d->selected)
                log_warning("sched", "%s: not in Druid's catalog; its table is kept", d->name);
            continue;
        }
        if (!d->selected)
            continue;
        selected++;
        if (d->ncols == 0) {
            log_warning("sched", "%s: no columns in INFORMATION_SCHEMA.COLUMNS yet; skipped",
                        d->name);
            continue;
        }
        if (s->opts.once) {
            if (s->once_discovered)
                continue;
        } else if (uv_is_active((uv_handle_t *)&d->timer)) {
            continue; /* its own timer decides */
        }
        if (d->st == DS_IDLE && !s->auth_blocked) {
            cycle_start(d);
            started++;
        }
    }
    if (s->opts.once && !s->once_discovered) {
        s->once_discovered = true;
        /* datasources asked for by name that Druid does not list did not sync: the run
         * fails, their tables stay untouched */
        if (registry_report_missing(s) > 0)
            s->disc_attempts = -1; /* remembered as a failure for the exit code */
    }
    bool changed = r->ntables != s->last_ntables || selected != s->last_selected;
    s->last_ntables = r->ntables;
    s->last_selected = selected;
    log_msg(s->opts.once || changed ? LOG_LVL_INFO : LOG_LVL_DEBUG, "sched",
            "discovery: %zu datasources in schema \"%s\", %zu selected, %zu started", r->ntables,
            s->cfg->schema_name, selected, started);
}

static void on_discovered(void *ud, const struct discovery_result *r,
                          const struct discovery_error *e)
{
    struct sched *s = ud;
    s->disc = NULL; /* the run frees itself after this returns */
    sched_touch(s);
    if (e) {
        disc_failed(s, e);
        return;
    }
    s->disc_attempts = s->disc_attempts < 0 ? -1 : 0;
    if (!s->stopping)
        disc_apply(s, r);
    if (!s->opts.once && !s->stopping)
        uv_timer_start(&s->disc_timer, on_disc_timer,
                       (uint64_t)(s->cfg->sync_interval_seconds * 1000.0), 0);
    sched_check_finished(s);
}

static void on_disc_schema_ready(void *ud, const char *err)
{
    struct sched *s = ud;
    s->ensuring = false;
    if (err) {
        struct discovery_error e = {"recreating the destination schema", err, DRUID_OK, 0, false};
        disc_failed(s, &e);
        return;
    }
    log_warning("pg", "destination schema \"%s\" was missing; created it again",
                s->cfg->destination_schema);
    s->schema_lost = false;
    discover(s);
}

static void discover(struct sched *s)
{
    if (s->ensuring || s->disc || s->stopping)
        return;
    if (s->auth_blocked) {
        log_warning("sched", "discovery skipped: Druid refused our credentials; reload the "
                             "configuration (SIGHUP) after fixing them");
        return;
    }
    if (s->schema_lost) {
        s->ensuring = true;
        pgsink_ensure_schema(s->sink, on_disc_schema_ready, s);
        return;
    }
    s->disc = discovery_run(s->druid, s->sink, s->cfg->schema_name, on_discovered, s);
}

/* ---- public ---- */

void sched_check_finished(struct sched *s)
{
    if (s->finished_reported || !s->opts.on_finished)
        return;
    if (s->stopping) {
        if (s->disc)
            return;
        for (struct dsync *d = s->ds; d; d = d->next)
            if (d->st != DS_IDLE)
                return;
        /* a clean stop gives its leases back: the others need not wait for them to expire
         * (a hard stop too: nothing of ours is in flight any more) */
        if (lease_release_all(s, sched_check_finished))
            return;
        s->finished_reported = true;
        s->opts.on_finished(s->opts.ud, 0);
        return;
    }
    if (!s->opts.once || !s->once_discovered)
        return;
    int code = s->disc_attempts < 0 ? 1 : 0;
    for (struct dsync *d = s->ds; d; d = d->next) {
        if (!d->present || !d->selected || d->ncols == 0)
            continue;
        if (!d->once_done)
            return;
        if (d->once_failed)
            code = 1;
    }
    if (lease_release_all(s, sched_check_finished))
        return;
    s->finished_reported = true;
    s->opts.on_finished(s->opts.ud, code);
}

struct sched *sched_new(uv_loop_t *loop, const struct config *cfg, struct druid_client *druid,
                        struct pgsink *sink, const struct sched_opts *opts)
{
    struct sched *s = sched_xcalloc(1, sizeof *s);
    s->loop = loop;
    s->cfg = cfg;
    s->druid = druid;
    s->sink = sink;
    s->opts = *opts;
    uv_timer_init(loop, &s->disc_timer);
    s->disc_timer.data = s;
    uv_timer_init(loop, &s->stop_timer);
    s->stop_timer.data = s;
    lease_init(s);
    return s;
}

static void on_leases_ready(struct sched *s)
{
    if (!s->stopping)
        discover(s);
    else
        sched_check_finished(s);
}

void sched_start(struct sched *s)
{
    s->started = true;
    sched_touch(s);
    /* an instance that knows how many share the work before it claims any */
    lease_start(s, on_leases_ready);
}

void sched_set_config(struct sched *s, const struct config *cfg)
{
    s->cfg = cfg;
    s->auth_blocked = false;
    registry_reselect(s);
    if (s->started && !s->stopping && !s->opts.once) {
        uv_timer_stop(&s->disc_timer);
        discover(s);
    }
}

static void on_stop_timeout(uv_timer_t *t)
{
    struct sched *s = t->data;
    log_warning("sched", "stop timeout: rolling back the slices still in flight");
    sched_stop(s, 0);
}

void sched_stop(struct sched *s, double timeout_seconds)
{
    bool again = s->stopping;
    s->stopping = true;
    if (again || timeout_seconds <= 0)
        s->stop_hard = true;
    uv_timer_stop(&s->disc_timer);
    for (struct dsync *d = s->ds; d; d = d->next) {
        uv_timer_stop(&d->timer);
        /* planning and waiting retries end at once; slices get the grace period */
        cycle_drop_delays(d);
        if (s->stop_hard)
            cycle_cancel_all(d);
        cycle_maybe_finish(d);
    }
    if (!again && timeout_seconds > 0)
        uv_timer_start(&s->stop_timer, on_stop_timeout, (uint64_t)(timeout_seconds * 1000.0), 0);
    sched_check_finished(s);
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    discovery_cancel(s->disc);
    s->disc = NULL;
    registry_free(s);
    segments_free(s);
    lease_free(s);
    uv_close((uv_handle_t *)&s->disc_timer, NULL);
    uv_close((uv_handle_t *)&s->stop_timer, NULL);
    /* s itself is freed by the caller after the loop has closed the timers */
}

static const char *phase_name(enum ds_state st);

void sched_status(const struct sched *s, char *out, size_t n)
{
    size_t active = 0, total = 0;
    char phases[256] = "";
    size_t pl = 0, shown = 0;
    for (const struct dsync *d = s->ds; d; d = d->next) {
        if (!d->present || !d->selected)
            continue;
        total++;
        if (d->st == DS_IDLE)
            continue;
        active++;
        /* the first few by name and phase, so that a phase change shows in STATUS= */
        if (shown < 3 && pl < sizeof phases) {
            int w = snprintf(phases + pl, sizeof phases - pl, "%s%.60s %s", shown ? ", " : " (",
                             d->name, phase_name(d->st));
            if (w > 0)
                pl += (size_t)w;
            shown++;
        }
    }
    if (shown && pl < sizeof phases)
        snprintf(phases + pl, sizeof phases - pl, "%s)", active > shown ? ", ..." : "");
    if (total == 0 && s->disc && !s->last_ntables) {
        /* the first catalog read: "0 of 0" would say nothing is there */
        snprintf(out, n, "discovering datasources in schema \"%s\"%s%s", s->cfg->schema_name,
                 s->last_error[0] ? "; last error: " : "", s->last_error);
        return;
    }
    char leases[96] = "";
    if (lease_live_instances(s) > 1)
        snprintf(leases, sizeof leases, "; instance %.40s holds %zu, %d instances", lease_owner(s),
                 lease_held_count(s), lease_live_instances(s));
    snprintf(out, n, "%zu of %zu datasources syncing%s%s%s%s", active, total, phases, leases,
             s->last_error[0] ? "; last error: " : "", s->last_error);
}

static const char *phase_name(enum ds_state st)
{
    switch (st) {
    case DS_IDLE:
        return "idle";
    case DS_PREPARING:
        return "preparing";
    case DS_PLANNING:
        return "planning";
    case DS_RUNNING:
        return "syncing";
    case DS_FINISHING:
        return "finishing";
    }
    return "?";
}

void sched_foreach(const struct sched *s, void (*fn)(void *ud, const struct sched_ds_info *i),
                   void *ud)
{
    for (const struct dsync *d = s->ds; d; d = d->next) {
        struct sched_ds_info i;
        memset(&i, 0, sizeof i);
        i.name = d->name;
        i.phase = phase_name(d->st);
        i.selected = d->present && d->selected;
        i.rows_total = d->rows_total;
        i.rows_read_total = d->rows_read_total;
        i.bytes_total = d->bytes_total;
        i.slices_total = d->slices_total;
        i.nul_replaced_total = d->nul_replaced_total;
        i.json_as_string_total = d->json_as_string_total;
        i.rows_skipped_total = d->rows_skipped_total;
        i.cycles_ok = d->cycles_ok;
        i.cycles_failed = d->cycles_failed;
        i.cycles_interrupted = d->cycles_interrupted;
        i.last_success = d->last_success;
        i.lag_seconds = -1;
        if (d->detection && strcmp(d->detection, "segments") == 0 &&
            d->chunk_newest_ms != INT64_MIN && d->chunk_synced_ms != INT64_MIN)
            /* idle cycles read no row: the newest active chunk against the newest synced */
            i.lag_seconds = d->chunk_newest_ms > d->chunk_synced_ms
                                ? (double)(d->chunk_newest_ms - d->chunk_synced_ms) / 1000.0
                                : 0.0;
        else if (d->cursor_ms != INT64_MIN && d->druid_newest_ms != INT64_MIN)
            i.lag_seconds = d->druid_newest_ms > d->cursor_ms
                                ? (double)(d->druid_newest_ms - d->cursor_ms) / 1000.0
                                : 0.0;
        i.detection = d->detection;
        i.chunks_postponed = d->postponed;
        i.paused = d->paused;
        i.lease_held = d->lease_held;
        i.lease_holder = d->lease_holder[0] ? d->lease_holder : NULL;
        if (d->st != DS_IDLE) {
            i.cycle_rows = (uint64_t)d->rows_read + slicerun_rows_in_flight(d);
            i.slices_done = ledger_done(d->slices, d->nslices);
            i.slices_planned = d->nslices;
            i.cycle_est_rows = d->est_rows;
            i.cycle_seconds = (double)(uv_now(s->loop) - d->t0) / 1000.0;
        }
        fn(ud, &i);
    }
}

bool sched_healthy(const struct sched *s, double *stuck_seconds)
{
    bool busy = s->disc != NULL;
    for (const struct dsync *d = s->ds; d && !busy; d = d->next)
        busy = d->st != DS_IDLE;
    uint64_t now = uv_now(s->loop);
    uint64_t since = s->last_progress > s->quiet_until ? s->last_progress : s->quiet_until;
    double quiet = now > since ? (double)(now - since) / 1000.0 : 0.0;
    /* Work in flight always moves within this: a Druid query ends within its timeout, a
     * PostgreSQL operation within postgres_timeout_seconds (the server's) plus our own
     * margin, a backoff within retry_max_seconds. */
    double bound = s->cfg->request_timeout_seconds + s->cfg->postgres_timeout_seconds +
                   s->cfg->retry_max_seconds + 60.0;
    if (stuck_seconds)
        *stuck_seconds = quiet;
    return !busy || quiet <= bound;
}

const char *sched_instance(const struct sched *s)
{
    return lease_owner(s);
}

int sched_live_instances(const struct sched *s)
{
    return lease_live_instances(s);
}

const struct sched_counters *sched_get_counters(const struct sched *s)
{
    return &s->counters;
}

const char *sched_err_kind_name(int kind)
{
    return kind == SCHED_ERR_POSTGRES ? "postgres" : druid_err_kind_name((enum druid_err_kind)kind);
}
