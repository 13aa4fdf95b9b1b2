/* chunklease: the chunk units of a first load. See chunklease.h. */
#include "chunklease.h"

#include <inttypes.h>
#include <stdio.h>

#include "cycle.h"
#include "lease.h"
#include "log.h"
#include "pglease.h"
#include "sched_int.h"
#include "slicerun.h"

/* How long the holder waits before it asks again about the slices left to others. */
static double recheck_seconds(const struct sched *s)
{
    double t = s->cfg->lease_seconds / 3.0;
    return t > 2.0 ? 2.0 : t < 0.2 ? 0.2 : t;
}

static bool has_unit(const struct dsync *d, size_t item)
{
    return d->cu && item < d->nwork && d->cu[item].unit;
}

void chunklease_planned(struct dsync *d)
{
    if (!d->chunk_units || d->counts_mode || !d->work || d->nwork == 0) {
        d->chunk_units = false;
        return;
    }
    d->cu = sched_xcalloc(d->nwork, sizeof *d->cu);
    for (size_t i = 0; i < d->nwork; i++) {
        if (d->work[i].action != LEDGER_READ)
            continue;
        char u[512];
        snprintf(u, sizeof u, PGLEASE_CHUNK_PREFIX "%s:%" PRId64, d->name, d->work[i].lo);
        d->cu[i].unit = sched_xstrdup(u);
    }
    d->away = 0;
    d->slice_off = 0;
    if (d->helping && d->nslices > 1) {
        /* helpers start at different places of the plan: they meet the holder (which
         * starts at its beginning) and each other later, not at every slice */
        uint64_t h = 1469598103934665603ULL; /* FNV-1a of the instance name */
        for (const char *c = lease_owner(d->s); *c; c++)
            h = (h ^ (unsigned char)*c) * 1099511628211ULL;
        d->slice_off = 1 + (size_t)(h % (d->nslices - 1));
    }
}

bool chunklease_needed(const struct dsync *d, size_t idx)
{
    const struct ledger_slice *st = &d->slices[idx];
    if (!d->chunk_units || !d->cu || st->w0 == SIZE_MAX)
        return false;
    for (size_t i = st->w0; i <= st->w1; i++)
        if (has_unit(d, i))
            return true;
    return false;
}

/* ---- release ---- */

static void on_released(void *ud, const char *err)
{
    char *name = ud;
    if (err)
        log_warning("lease", "%s: giving chunk leases back failed: %s; they expire by themselves",
                    name, err);
    free(name);
}

/* Gives back the units of items [w0, w1] taken by a claim (taken[k]) or, taken NULL, every
 * unit held in that range. */
static void release_range(struct dsync *d, size_t w0, size_t w1, const bool *taken)
{
    struct sched *s = d->s;
    const char **u = sched_xcalloc(w1 - w0 + 1, sizeof *u);
    size_t n = 0;
    for (size_t i = w0; i <= w1; i++) {
        if (!has_unit(d, i) || !d->cu[i].held || (taken && !taken[i - w0]))
            continue;
        u[n++] = d->cu[i].unit;
        d->cu[i].held = false;
    }
    if (n)
        pgsink_lease_release(s->sink, lease_owner(s), u, n, on_released, sched_xstrdup(d->name));
    free(u);
}

void chunklease_release(struct dsync *d)
{
    if (d->cu && d->nwork)
        release_range(d, 0, d->nwork - 1, NULL);
}

/* ---- claims ---- */

struct claimx {
    struct dsync *d;
    size_t idx;
    uint64_t sent;
    size_t n;
    size_t *items; /* the items whose units this claim takes */
};

static void claim_answered(void *ud, const char *err, const struct pglease_chunk_got *got, size_t n)
{
    struct claimx *x = ud;
    struct dsync *d = x->d;
    struct sched *s = d->s;
    size_t idx = x->idx;
    struct ledger_slice *st = &d->slices[idx];
    sched_touch(s);
    d->running--;
    d->outstanding--;
    size_t w0 = st->w0, w1 = st->w1;
    bool *taken = sched_xcalloc(w1 - w0 + 1, sizeof *taken);
    bool other = false, all_done = true;
    const char *holder = NULL;
    for (size_t k = 0; k < x->n; k++)
        d->cu[x->items[k]].claiming = false;
    if (err) {
        log_event(LOG_LVL_WARNING, "lease",
                  LOG_FIELDS(.datasource = d->name, .error_kind = "lease"),
                  "%s: claiming the chunk leases of slice %zu failed: %s; it is tried again later",
                  d->name, idx + 1, err);
        other = true;
    } else {
        for (size_t k = 0; k < x->n && k < n; k++) {
            struct chunk_unit *c = &d->cu[x->items[k]];
            if (!got[k].granted) {
                other = true;
                holder = got[k].holder;
                continue;
            }
            c->held = true;
            c->epoch = got[k].epoch;
            c->dirty = got[k].dirty;
            c->valid_until = lease_valid_until(s, x->sent);
            log_debug("lease", "%s: instance %s holds chunk lease %s (epoch %" PRId64 "%s%s)",
                      d->name, lease_owner(s), c->unit, c->epoch,
                      c->dirty ? ", dirty: its range is emptied first" : "",
                      got[k].done ? ", already read" : "");
            taken[x->items[k] - w0] = true;
            if (!got[k].done)
                all_done = false;
        }
        /* an item held before this claim (another slice of the same chunk) is ours to read */
        for (size_t i = w0; i <= w1; i++)
            if (has_unit(d, i) && d->cu[i].held && !taken[i - w0])
                all_done = false;
    }
    free(x->items);
    free(x);
    st->status = LEDGER_PENDING;
    if (d->failed || s->stopping || d->lease_handover || d->lease_gone) {
        release_range(d, w0, w1, taken);
    } else if (other) {
        release_range(d, w0, w1, taken);
        chunklease_away(d, idx);
        if (holder)
            log_debug("lease", "%s: slice %zu left to instance %s (it holds one of its chunks)",
                      d->name, idx + 1, holder);
    } else if (all_done) {
        /* read and recorded by another instance since this one planned */
        st->status = LEDGER_DONE;
        st->max_seen = INT64_MIN;
        for (size_t i = w0; i <= w1; i++)
            if (has_unit(d, i) && d->work_recorded)
                d->work_recorded[i] = true;
        release_range(d, w0, w1, taken);
        log_debug("lease", "%s: slice %zu: its chunks were read by another instance", d->name,
                  idx + 1);
    } else {
        free(taken);
        slicerun_start(d, idx);
        cycle_pump(d);
        cycle_maybe_finish(d);
        return;
    }
    free(taken);
    cycle_pump(d);
    cycle_maybe_finish(d);
}

bool chunklease_start(struct dsync *d, size_t idx)
{
    struct sched *s = d->s;
    struct ledger_slice *st = &d->slices[idx];
    size_t missing = 0;
    for (size_t i = st->w0; i <= st->w1; i++) {
        if (!has_unit(d, i))
            continue;
        if (d->cu[i].claiming)
            return false;
        missing += !d->cu[i].held;
    }
    if (missing == 0) {
        slicerun_start(d, idx);
        return true;
    }
    struct claimx *x = sched_xcalloc(1, sizeof *x);
    x->d = d;
    x->idx = idx;
    x->sent = uv_now(s->loop);
    x->items = sched_xcalloc(missing, sizeof *x->items);
    const char **units = sched_xcalloc(missing, sizeof *units);
    const char **fps = sched_xcalloc(missing, sizeof *fps);
    int64_t *lo = sched_xcalloc(missing, sizeof *lo), *hi = sched_xcalloc(missing, sizeof *hi);
    for (size_t i = st->w0; i <= st->w1; i++) {
        if (!has_unit(d, i) || d->cu[i].held)
            continue;
        const struct ledger_work *w = &d->work[i];
        d->cu[i].claiming = true;
        units[x->n] = d->cu[i].unit;
        lo[x->n] = w->lo;
        hi[x->n] = w->hi;
        fps[x->n] = w->snap != SIZE_MAX && w->snap < d->nsnapc ? d->snapc[w->snap].fp : "";
        x->items[x->n++] = i;
    }
    /* a table rebuilt from scratch (dropped or emptied behind our back while its ledger
     * stayed, or rewritten for a new id scheme) has ledger rows from before: none of them
     * says a chunk is read (a table new with its ledger has none) */
    struct pglease_chunk_req rq = {
        d->name, lease_owner(s), s->cfg->lease_seconds, x->n, units, lo, hi, fps, !d->ledger_stale};
    st->status = LEDGER_RUNNING;
    d->running++;
    d->outstanding++;
    pgsink_chunk_claim(s->sink, &rq, claim_answered, x);
    free(units);
    free(fps);
    free(lo);
    free(hi);
    return true;
}

void chunklease_slice_ready(struct dsync *d, size_t idx, struct pgsink_slice *sl)
{
    const struct ledger_slice *st = &d->slices[idx];
    if (!chunklease_needed(d, idx))
        return;
    for (size_t i = st->w0; i <= st->w1; i++)
        if (has_unit(d, i) && d->cu[i].dirty) {
            pgsink_slice_clear_range(sl);
            return;
        }
}

void chunklease_fence(struct dsync *d, size_t idx, struct pgsink_slice *sl, const bool *clean)
{
    const struct ledger_slice *st = &d->slices[idx];
    if (!chunklease_needed(d, idx))
        return;
    size_t k = st->w1 - st->w0 + 1, n = 0;
    const char **units = sched_xcalloc(k, sizeof *units);
    int64_t *epochs = sched_xcalloc(k, sizeof *epochs);
    bool *cl = sched_xcalloc(k, sizeof *cl);
    for (size_t i = st->w0; i <= st->w1; i++) {
        if (!has_unit(d, i))
            continue;
        units[n] = d->cu[i].unit;
        epochs[n] = d->cu[i].epoch;
        cl[n++] = clean[i - st->w0];
    }
    struct pglease_units f = {lease_owner(d->s), units, epochs, n};
    pgsink_slice_fence_chunks(sl, &f, cl);
    free(units);
    free(epochs);
    free(cl);
}

void chunklease_describe(const struct dsync *d, size_t idx, char *out, size_t n)
{
    const struct ledger_slice *st = &d->slices[idx];
    size_t first = SIZE_MAX, more = 0;
    for (size_t i = st->w0; st->w0 != SIZE_MAX && i <= st->w1; i++) {
        if (!has_unit(d, i))
            continue;
        if (first == SIZE_MAX)
            first = i;
        else
            more++;
    }
    if (first == SIZE_MAX) {
        snprintf(out, n, "-");
        return;
    }
    if (more)
        snprintf(out, n, "%s epoch %" PRId64 " and %zu more", d->cu[first].unit, d->cu[first].epoch,
                 more);
    else
        snprintf(out, n, "%s epoch %" PRId64, d->cu[first].unit, d->cu[first].epoch);
}

/* ---- waiting for the slices left to others ---- */

static void recheck(struct dsync *d, void *arg)
{
    (void)arg;
    struct sched *s = d->s;
    d->recheck_pending = false;
    if (d->failed || s->stopping || d->lease_handover || d->lease_gone) {
        cycle_maybe_finish(d);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < d->nslices; i++)
        if (d->slices[i].away) {
            d->slices[i].away = false;
            n++;
        }
    d->away = 0;
    d->next_slice = 0; /* the pump skips the slices that are not pending */
    log_debug("lease", "%s: asking again about %zu slices left to other instances", d->name, n);
    cycle_pump(d);
    cycle_maybe_finish(d);
}

static void recheck_drop(struct dsync *d, void *arg)
{
    (void)arg;
    d->recheck_pending = false;
}

/* The holder asks again every few seconds, also while its other slices run: a chunk whose
 * reader died is taken over soon after its lease expired, not at the end of the load. */
static void schedule_recheck(struct dsync *d)
{
    if (d->recheck_pending || d->helping)
        return; /* a helper reads what is free and is done */
    d->recheck_pending = true;
    cycle_call_later(d, recheck_seconds(d->s), recheck, recheck_drop, NULL);
}

void chunklease_away(struct dsync *d, size_t idx)
{
    d->slices[idx].away = true;
    d->away++;
    schedule_recheck(d);
}

bool chunklease_wait_away(struct dsync *d)
{
    struct sched *s = d->s;
    if (!d->chunk_units || d->away == 0 || d->helping || d->failed || s->stopping ||
        d->lease_handover || d->lease_gone)
        return false;
    log_debug("lease", "%s: %zu slices left to other instances; checking again in %.1f s", d->name,
              d->away, recheck_seconds(s));
    schedule_recheck(d);
    return true;
}

/* ---- a chunk completed by slices that committed at the same time ---- */

struct recordx {
    struct dsync *d;
    size_t item;
};

void chunklease_lost(struct dsync *d, const char *why)
{
    log_event(LOG_LVL_WARNING, "lease", LOG_FIELDS(.datasource = d->name, .error_kind = "lease"),
              "%s: instance %s lost a chunk lease: %s; the cycle stops (its chunks are read "
              "again by whoever holds them)",
              d->name, lease_owner(d->s), why);
    if (!d->failed) {
        snprintf(d->err, sizeof d->err, "chunk lease lost: %s", why);
        d->failed = true;
    }
    d->interrupted = true;
}

static void on_recorded(void *ud, const char *err)
{
    struct recordx *x = ud;
    struct dsync *d = x->d;
    sched_touch(d->s);
    d->outstanding--;
    if (err && pglease_lost(pgsink_last_error(d->s->sink)))
        chunklease_lost(d, err);
    else if (err)
        log_warning("pg", "%s: recording chunk %s failed: %s; it is read again", d->name,
                    d->cu[x->item].unit, err);
    else
        chunklease_item_recorded(d, x->item);
    free(x);
    cycle_maybe_finish(d);
}

void chunklease_item_recorded(struct dsync *d, size_t item)
{
    if (d->work_recorded)
        d->work_recorded[item] = true;
    if (has_unit(d, item) && d->cu[item].held)
        release_range(d, item, item, NULL); /* done with: others need not wait for the end */
}

void chunklease_record_item(struct dsync *d, size_t item)
{
    if (!has_unit(d, item) || !d->cu[item].held)
        return;
    struct pgsink_chunk rec;
    cycle_chunk_record(d, item, d->work_rows[item], d->work_max[item], &rec);
    const char *u[1] = {d->cu[item].unit};
    int64_t e[1] = {d->cu[item].epoch};
    struct pglease_units f = {lease_owner(d->s), u, e, 1};
    struct recordx *x = sched_xcalloc(1, sizeof *x);
    x->d = d;
    x->item = item;
    d->outstanding++;
    pgsink_chunks_write_fenced(d->s->sink, d->sink_key, &rec, 1, &f, on_recorded, x);
}

/* ---- renewal ---- */

size_t chunklease_count(const struct dsync *d)
{
    size_t n = 0;
    for (size_t i = 0; d->cu && i < d->nwork; i++)
        n += d->cu[i].unit && d->cu[i].held;
    return n;
}

size_t chunklease_collect(struct dsync *d, char **units, int64_t *epochs, size_t *cu_idx)
{
    size_t n = 0;
    for (size_t i = 0; d->cu && i < d->nwork; i++)
        if (d->cu[i].unit && d->cu[i].held) {
            units[n] = sched_xstrdup(d->cu[i].unit);
            epochs[n] = d->cu[i].epoch;
            cu_idx[n++] = i;
        }
    return n;
}

static void lost_now(struct dsync *d, const char *why)
{
    chunklease_lost(d, why);
    cycle_cancel_all(d);
    cycle_maybe_finish(d);
}

void chunklease_renewed(struct dsync *d, size_t k, bool held, uint64_t valid_until)
{
    if (!d->cu || k >= d->nwork || !d->cu[k].held)
        return;
    if (held) {
        d->cu[k].valid_until = valid_until;
        return;
    }
    d->cu[k].held = false;
    if (d->failed && d->interrupted)
        return; /* stopping already */
    lost_now(d, "the renewal found it taken by another instance or expired");
}

void chunklease_distrust(struct dsync *d, uint64_t now)
{
    for (size_t i = 0; d->cu && i < d->nwork; i++)
        if (d->cu[i].unit && d->cu[i].held && now >= d->cu[i].valid_until) {
            d->cu[i].held = false;
            if (!(d->failed && d->interrupted))
                lost_now(d, "it could not be renewed in time");
        }
}

bool chunklease_may_help(const struct dsync *d)
{
    for (const struct dsync *o = d->s->ds; o; o = o->next)
        if (o != d && (o->helping || o->st != DS_IDLE))
            return false; /* its own work first, and one help at a time */
    return true;
}
