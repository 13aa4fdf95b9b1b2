/* lease: this instance's work leases. See lease.h. */
#include "lease.h"

#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "chunklease.h"
#include "cycle.h"
#include "log.h"
#include "pglease.h"
#include "sched_int.h"

#define UNIT_PREFIX PGLEASE_DS_PREFIX

struct lease_state {
    uv_timer_t timer; /* renewals; first: lease_free closes it with the state */
    struct sched *s;
    char owner[192];
    char hb_unit[256];
    bool hb_held;
    int64_t hb_epoch;
    uint64_t hb_valid_until;
    int live;       /* instances alive at the last renewal (0: not known yet) */
    int min_held;   /* datasources held by the least loaded of them */
    bool renewing;  /* a renewal is in flight */
    bool releasing; /* lease_release_all under way */
    bool released;  /* ... done */
    bool collision; /* another process's heartbeat has our name (said once) */
    void (*ready)(struct sched *s);
    void (*release_done)(struct sched *s);
};

static double ttl(const struct sched *s)
{
    return s->cfg->lease_seconds;
}

/* A lease is trusted locally until the renewal that granted it was sent plus its length,
 * less a margin for the clock rates of two machines and the time a commit takes. */
uint64_t lease_valid_until(const struct sched *s, uint64_t sent)
{
    double ms = ttl(s) * 1000.0;
    double margin = ms / 10 > 1000 ? 1000 : ms / 10;
    return sent + (uint64_t)(ms - margin);
}

void lease_init(struct sched *s)
{
    struct lease_state *l = sched_xcalloc(1, sizeof *l);
    l->s = s;
    if (s->cfg->instance_name) {
        snprintf(l->owner, sizeof l->owner, "%s", s->cfg->instance_name);
    } else {
        char host[128] = "";
        if (gethostname(host, sizeof host - 1) != 0 || !host[0])
            snprintf(host, sizeof host, "localhost");
        snprintf(l->owner, sizeof l->owner, "%s:%ld", host, (long)getpid());
    }
    snprintf(l->hb_unit, sizeof l->hb_unit, PGLEASE_INSTANCE_PREFIX "%s", l->owner);
    log_set_instance(l->owner);
    uv_timer_init(s->loop, &l->timer);
    /* renewals go on while there is work; they are not work that keeps the loop running */
    uv_unref((uv_handle_t *)&l->timer);
    l->timer.data = l;
    s->lease = l;
}

const char *lease_owner(const struct sched *s)
{
    return s->lease->owner;
}

size_t lease_held_count(const struct sched *s)
{
    size_t n = 0;
    for (const struct dsync *d = s->ds; d; d = d->next)
        n += d->lease_held;
    return n;
}

int lease_live_instances(const struct sched *s)
{
    return s->lease->live;
}

/* ceil(selected / live): what this instance may hold before it stops taking free units. */
static size_t share(const struct sched *s)
{
    size_t m = 0;
    for (const struct dsync *d = s->ds; d; d = d->next)
        m += d->present && d->selected;
    size_t n = s->lease->live > 0 ? (size_t)s->lease->live : 1;
    return m == 0 ? 1 : (m + n - 1) / n;
}

static char *unit_of(const char *name)
{
    size_t n = strlen(UNIT_PREFIX) + strlen(name) + 1;
    char *u = sched_xcalloc(1, n);
    snprintf(u, n, UNIT_PREFIX "%s", name);
    return u;
}

static void drop(struct dsync *d)
{
    d->lease_held = false;
    pgsink_fence_set(d->s->sink, d->name, NULL, NULL, 0);
}

void lease_lost(struct dsync *d, const char *why)
{
    struct sched *s = d->s;
    bool was = d->lease_held;
    drop(d);
    if (was)
        log_event(LOG_LVL_WARNING, "lease",
                  LOG_FIELDS(.datasource = d->name, .error_kind = "lease"),
                  "%s: instance %s lost its lease (epoch %" PRId64 "): %s; its work in flight "
                  "is rolled back",
                  d->name, s->lease->owner, d->lease_epoch, why);
    if (d->st == DS_IDLE || d->lease_gone)
        return;
    d->lease_gone = true;
    d->interrupted = true;
    if (!d->failed) {
        snprintf(d->err, sizeof d->err, "lease lost: %s", why);
        d->failed = true;
    }
}

/* ---- renewal ---- */

static void renew_now(struct lease_state *l);

static void hb_claim(struct lease_state *l);

static void on_timer(uv_timer_t *t)
{
    struct lease_state *l = t->data;
    if (!l->s->opts.once && !l->hb_held && !l->s->stopping)
        hb_claim(l); /* lost or never had it: registered again, then renewed */
    else
        renew_now(l);
}

static void schedule_renewal(struct lease_state *l)
{
    struct sched *s = l->s;
    uv_timer_start(&l->timer, on_timer, (uint64_t)(ttl(s) * 1000.0 / 3.0), 0);
}

/* Lost while this instance may still be working on it: the cycle stops at once. */
static void lost_now(struct dsync *d, const char *why)
{
    lease_lost(d, why);
    cycle_cancel_all(d);
    cycle_maybe_finish(d);
}

/* Units not renewed in time are not trusted any more, whatever PostgreSQL says later. */
static void distrust_expired(struct lease_state *l)
{
    struct sched *s = l->s;
    uint64_t now = uv_now(s->loop);
    for (struct dsync *d = s->ds; d; d = d->next) {
        if (d->lease_held && now >= d->lease_valid_until) {
            lost_now(d, "it could not be renewed in time");
        }
        chunklease_distrust(d, now);
    }
    if (l->hb_held && now >= l->hb_valid_until)
        l->hb_held = false;
}

struct renewal {
    struct lease_state *l;
    uint64_t sent;
    size_t n;
    struct dsync **ds; /* NULL entry: the heartbeat */
    size_t *cu_idx;    /* a chunk unit of ds[i] (chunklease.c), SIZE_MAX: its datasource unit */
    char **units;
};

static void renewal_free(struct renewal *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->units[i]);
    free(r->units);
    free(r->ds);
    free(r->cu_idx);
    free(r);
}

static void call_ready(struct lease_state *l);
static void rebalance(struct lease_state *l);

static void on_renewed(void *ud, const char *err, const bool *held, size_t n,
                       const struct pglease_census *census)
{
    struct renewal *r = ud;
    struct lease_state *l = r->l;
    struct sched *s = l->s;
    l->renewing = false;
    sched_touch(s);
    if (err) {
        log_warning("lease", "instance %s: renewing %zu leases failed: %s", l->owner, r->n, err);
        distrust_expired(l);
    } else {
        int live = census->live;
        if (live != l->live && l->live > 0)
            log_info("lease", "instance %s: %d instances alive (were %d)", l->owner, live, l->live);
        l->live = live;
        l->min_held = census->min_held;
        /* a frozen or dead instance's open transactions would block the new holders */
        pgsink_lease_end_stale(s->sink, ttl(s));
        for (size_t i = 0; i < n && i < r->n; i++) {
            struct dsync *d = r->ds[i];
            if (!d) {
                l->hb_held = held[i];
                if (held[i])
                    l->hb_valid_until = lease_valid_until(s, r->sent);
                continue;
            }
            if (r->cu_idx[i] != SIZE_MAX) {
                chunklease_renewed(d, r->cu_idx[i], held[i], lease_valid_until(s, r->sent));
                continue;
            }
            /* still ours only when it is the same epoch this cycle started with */
            if (!d->lease_held)
                continue;
            if (held[i]) {
                d->lease_valid_until = lease_valid_until(s, r->sent);
            } else {
                lost_now(d, "the renewal found it taken by another instance or expired");
            }
        }
        distrust_expired(l);
        rebalance(l);
    }
    renewal_free(r);
    if (!l->releasing)
        schedule_renewal(l);
    call_ready(l);
}

static void on_handed(void *ud, const char *err);

/* Datasources this instance no longer syncs (excluded by a reload, gone from the catalog)
 * are given back once idle, instead of being renewed for nothing. */
static void release_unselected(struct lease_state *l)
{
    struct sched *s = l->s;
    for (struct dsync *d = s->ds; d; d = d->next) {
        if (!d->lease_held || d->st != DS_IDLE || (d->present && d->selected))
            continue;
        log_event(LOG_LVL_INFO, "lease", LOG_FIELDS(.datasource = d->name),
                  "%s: no longer synced by instance %s: lease released", d->name, l->owner);
        drop(d);
        const char *u[1] = {d->lease_unit};
        pgsink_lease_release(s->sink, l->owner, u, 1, on_handed, d);
    }
}

static void renew_now(struct lease_state *l)
{
    struct sched *s = l->s;
    if (l->renewing || l->releasing)
        return;
    release_unselected(l);
    size_t n = lease_held_count(s) + (l->hb_held ? 1 : 0);
    for (const struct dsync *d = s->ds; d; d = d->next)
        n += chunklease_count(d);
    if (n == 0 && s->opts.once)
        return;
    struct renewal *r = sched_xcalloc(1, sizeof *r);
    r->l = l;
    r->sent = uv_now(s->loop);
    r->ds = sched_xcalloc(n + 1, sizeof *r->ds);
    r->cu_idx = sched_xcalloc(n + 1, sizeof *r->cu_idx);
    r->units = sched_xcalloc(n + 1, sizeof *r->units);
    int64_t *epochs = sched_xcalloc(n + 1, sizeof *epochs);
    if (l->hb_held) {
        r->cu_idx[r->n] = SIZE_MAX;
        r->units[r->n] = sched_xstrdup(l->hb_unit);
        epochs[r->n++] = l->hb_epoch;
    }
    for (struct dsync *d = s->ds; d; d = d->next) {
        if (d->lease_held) {
            r->ds[r->n] = d;
            r->cu_idx[r->n] = SIZE_MAX;
            r->units[r->n] = unit_of(d->name);
            epochs[r->n++] = d->lease_epoch;
        }
        size_t k = chunklease_collect(d, r->units + r->n, epochs + r->n, r->cu_idx + r->n);
        for (size_t i = 0; i < k; i++)
            r->ds[r->n + i] = d;
        r->n += k;
    }
    l->renewing = true;
    pgsink_lease_renew(s->sink, l->owner, (const char *const *)r->units, epochs, r->n, ttl(s),
                       on_renewed, r);
    free(epochs);
}

/* ---- the heartbeat ---- */

static void on_hb(void *ud, const char *err, const struct pglease_claim *c)
{
    struct lease_state *l = ud;
    struct sched *s = l->s;
    sched_touch(s);
    if (err) {
        log_warning("lease", "instance %s: registering with the other instances failed: %s",
                    l->owner, err);
    } else if (c->granted) {
        l->collision = false;
        bool first = !l->hb_held && l->hb_epoch == 0;
        l->hb_held = true;
        l->hb_epoch = c->epoch;
        l->hb_valid_until = lease_valid_until(s, uv_now(s->loop));
        if (first)
            log_info("lease", "instance %s: leases of %.0f s in \"%s\".%s", l->owner, ttl(s),
                     s->cfg->destination_schema, PGLEASE_TABLE);
    } else if (!l->collision) {
        /* another process runs under this name: both would count as one */
        l->collision = true;
        log_error("lease",
                  "instance %s: another process holds this instance's name (until %s); give "
                  "each instance its own instance_name",
                  l->owner, c->expires_at);
    }
    l->renewing = false;
    /* the census comes with the first renewal, before any work is claimed */
    renew_now(l);
    if (!l->renewing) {
        schedule_renewal(l);
        call_ready(l);
    }
}

static void hb_claim(struct lease_state *l)
{
    struct sched *s = l->s;
    l->renewing = true; /* no renewal while the heartbeat is being claimed */
    struct pglease_claim_req rq = {l->hb_unit, "", l->owner, ttl(s), l->hb_held ? l->hb_epoch : -1,
                                   0};
    pgsink_lease_claim(s->sink, &rq, on_hb, l);
}

void lease_start(struct sched *s, void (*ready)(struct sched *s))
{
    struct lease_state *l = s->lease;
    log_info("lease", "instance %s starting", l->owner);
    if (s->opts.once) {
        ready(s);
        return;
    }
    /* ready once the first renewal (the census) answered: until then this instance does not
     * know how many share the work and would take everything */
    l->ready = ready;
    hb_claim(l);
}

static void call_ready(struct lease_state *l)
{
    void (*ready)(struct sched *) = l->ready;
    l->ready = NULL;
    if (ready)
        ready(l->s);
}

/* ---- claims ---- */

struct claim {
    struct dsync *d;
    void (*granted)(struct dsync *d);
    uint64_t sent;
};

static void claim_again(struct dsync *d, void *arg)
{
    lease_acquire(d, (void (*)(struct dsync *))arg);
}

static void claim_again_drop(struct dsync *d, void *arg)
{
    (void)arg;
    d->st = DS_IDLE;
    if (d->s->opts.once) {
        d->once_done = true;
        d->once_failed = true;
    }
}

static void not_held(struct dsync *d)
{
    struct sched *s = d->s;
    d->st = DS_IDLE;
    if (!s->opts.once && !s->stopping)
        cycle_schedule(d, s->cfg->sync_interval_seconds);
    sched_check_finished(s);
}

static void on_claimed(void *ud, const char *err, const struct pglease_claim *c)
{
    struct claim *x = ud;
    struct dsync *d = x->d;
    struct sched *s = d->s;
    struct lease_state *l = s->lease;
    void (*granted)(struct dsync *) = x->granted;
    uint64_t sent = x->sent;
    free(x);
    sched_touch(s);
    d->outstanding--;
    if (err) {
        drop(d);
        log_event(LOG_LVL_WARNING, "lease",
                  LOG_FIELDS(.datasource = d->name, .error_kind = "lease"),
                  "%s: claiming its lease failed: %s", d->name, err);
        snprintf(d->err, sizeof d->err, "claiming the lease failed: %s", err);
        if (s->opts.once) {
            d->once_done = true;
            d->once_failed = true;
        }
        not_held(d);
        return;
    }
    if (c->granted) {
        bool new_token = !d->lease_held || d->lease_epoch != c->epoch;
        d->lease_held = true;
        d->lease_epoch = c->epoch;
        d->lease_valid_until = lease_valid_until(s, sent);
        d->lease_wait_start = 0;
        d->lease_holder[0] = '\0';
        if (!uv_is_active((uv_handle_t *)&l->timer) && !l->renewing && !l->releasing)
            schedule_renewal(l); /* --once renews only while it holds something */
        if (new_token) {
            pgsink_fence_set(s->sink, d->name, d->lease_unit, l->owner, c->epoch);
            log_event(LOG_LVL_INFO, "lease", LOG_FIELDS(.datasource = d->name),
                      "%s: instance %s holds its lease (epoch %" PRId64 ", %.0f s, renewed "
                      "every %.0f s)",
                      d->name, l->owner, c->epoch, ttl(s), ttl(s) / 3);
        }
        granted(d);
        return;
    }
    drop(d);
    bool changed = strcmp(d->lease_holder, c->holder) != 0;
    snprintf(d->lease_holder, sizeof d->lease_holder, "%s", c->holder);
    bool free_unit = strcmp(c->holder, "nobody") == 0;
    if (s->opts.once) {
        uint64_t now = uv_now(s->loop);
        if (!d->lease_wait_start)
            d->lease_wait_start = now + 1; /* 0 is "not waiting" */
        double waited = (double)(now + 1 - d->lease_wait_start) / 1000.0;
        double left = 2 * ttl(s) - waited;
        if (left > 0 && !s->stopping) {
            double wait = c->seconds_left > 0 ? c->seconds_left + 0.2 : 0.5;
            if (wait > left)
                wait = left;
            if (wait < 0.2)
                wait = 0.2;
            if (changed)
                log_info("lease",
                         "%s: held by instance %s (lease until %s); waiting up to %.0f s for it",
                         d->name, c->holder, c->expires_at[0] ? c->expires_at : "-", left);
            cycle_call_later(d, wait, claim_again, claim_again_drop, (void *)granted);
            return;
        }
        log_event(LOG_LVL_ERROR, "lease", LOG_FIELDS(.datasource = d->name, .error_kind = "lease"),
                  "%s: not synced: held by instance %s (lease until %s) for all of %.0f s "
                  "(2 x lease_seconds)",
                  d->name, c->holder, c->expires_at[0] ? c->expires_at : "-", 2 * ttl(s));
        snprintf(d->err, sizeof d->err, "held by instance %s", c->holder);
        d->once_done = true;
        d->once_failed = true;
        not_held(d);
        return;
    }
    if (!free_unit && c->first_load && !s->stopping && !d->resync && chunklease_may_help(d)) {
        /* its first load: this instance reads the chunks nobody holds */
        if (changed || !d->help_said)
            log_event(LOG_LVL_INFO, "lease", LOG_FIELDS(.datasource = d->name),
                      "%s: held by instance %s and in its first load: this instance helps "
                      "with its chunks",
                      d->name, c->holder);
        d->help_said = true;
        d->helping = true;
        granted(d);
        return;
    }
    if (changed && free_unit)
        log_event(LOG_LVL_INFO, "lease", LOG_FIELDS(.datasource = d->name),
                  "%s: left to the other instances (this instance holds %zu, its share of the "
                  "datasources among %d instances)",
                  d->name, lease_held_count(s), l->live > 0 ? l->live : 1);
    else if (changed)
        log_event(LOG_LVL_INFO, "lease", LOG_FIELDS(.datasource = d->name),
                  "%s: held by instance %s; this instance leaves it alone", d->name, c->holder);
    not_held(d);
}

void lease_acquire(struct dsync *d, void (*granted)(struct dsync *d))
{
    struct sched *s = d->s;
    if (!d->lease_unit)
        d->lease_unit = unit_of(d->name);
    if (d->lease_held && uv_now(s->loop) < d->lease_valid_until) {
        granted(d); /* kept alive by the renewals */
        return;
    }
    d->st = DS_PREPARING;
    struct claim *x = sched_xcalloc(1, sizeof *x);
    x->d = d;
    x->granted = granted;
    x->sent = uv_now(s->loop);
    /* beyond its share, or holding more than the least loaded instance, an instance takes
     * only units nobody else took for a whole lease: the least loaded one gets them */
    size_t held = lease_held_count(s);
    bool over = !s->opts.once &&
                (held >= share(s) || (s->lease->live > 1 && held > (size_t)s->lease->min_held));
    struct pglease_claim_req rq = {
        d->lease_unit,    d->name, s->lease->owner, ttl(s), d->lease_held ? d->lease_epoch : -1,
        over ? ttl(s) : 0};
    d->outstanding++;
    pgsink_lease_claim(s->sink, &rq, on_claimed, x);
}

/* ---- hand-over and release ---- */

static void on_handed(void *ud, const char *err)
{
    struct dsync *d = ud;
    if (err)
        log_warning("lease", "%s: handing the lease over failed: %s; it expires in %.0f s", d->name,
                    err, ttl(d->s));
}

static void hand_over(struct dsync *d, size_t held, size_t sh)
{
    struct sched *s = d->s;
    d->lease_handover = false;
    log_event(LOG_LVL_INFO, "lease", LOG_FIELDS(.datasource = d->name),
              "%s: handed over: instance %s holds %zu datasources, its share among %d "
              "instances is %zu",
              d->name, s->lease->owner, held, s->lease->live, sh);
    drop(d);
    const char *u[1] = {d->lease_unit};
    pgsink_lease_release(s->sink, s->lease->owner, u, 1, on_handed, d);
}

/* After a renewal: an instance that holds more than its share (another instance joined)
 * gives the excess back, idle datasources first; a running cycle stops starting slices and
 * gives its datasource back when the slices in flight have committed. */
static void rebalance(struct lease_state *l)
{
    struct sched *s = l->s;
    if (s->opts.once || s->stopping || l->live <= 1)
        return;
    size_t held = lease_held_count(s), sh = share(s), leaving = 0;
    for (const struct dsync *d = s->ds; d; d = d->next)
        leaving += d->lease_held && d->lease_handover;
    size_t keep = held - leaving;
    /* beyond the share, or two more than the least loaded instance (which may hold none
     * while everyone else holds exactly its share): one per renewal, so that two loaded
     * instances do not both give up theirs for a single newcomer */
    bool excess = keep > sh || keep >= (size_t)l->min_held + 2;
    if (!excess || leaving > 0)
        return;
    struct dsync *pick = NULL;
    for (struct dsync *d = s->ds; d; d = d->next) {
        if (!d->lease_held || d->lease_handover)
            continue;
        if (!pick || (d->st == DS_IDLE && pick->st != DS_IDLE))
            pick = d; /* an idle one first: nothing in flight to wait for */
    }
    if (!pick)
        return;
    if (pick->st == DS_IDLE) {
        hand_over(pick, held, sh);
        return;
    }
    log_event(LOG_LVL_INFO, "lease", LOG_FIELDS(.datasource = pick->name),
              "%s: to be handed over once its slices in flight commit (instance %s holds %zu, "
              "its share among %d instances is %zu, the least loaded holds %d)",
              pick->name, l->owner, held, l->live, sh, l->min_held);
    pick->lease_handover = true;
    cycle_maybe_finish(pick);
}

void lease_cycle_end(struct dsync *d)
{
    struct sched *s = d->s;
    chunklease_release(d);
    d->lease_gone = false;
    if (!d->lease_held) {
        d->lease_handover = false;
        return;
    }
    if (s->opts.once || s->stopping)
        return;
    size_t held = lease_held_count(s), sh = share(s);
    if (d->lease_handover || (s->lease->live > 1 && held > sh)) {
        hand_over(d, held, sh);
        return;
    }
}

static void on_released(void *ud, const char *err)
{
    struct lease_state *l = ud;
    struct sched *s = l->s;
    if (err)
        log_warning("lease",
                    "instance %s: releasing its leases failed: %s; they expire within "
                    "%.0f s",
                    l->owner, err, ttl(s));
    else
        log_info("lease", "instance %s: leases released", l->owner);
    l->released = true;
    l->releasing = false;
    void (*done)(struct sched *) = l->release_done;
    l->release_done = NULL;
    if (done)
        done(s);
}

bool lease_release_all(struct sched *s, void (*done)(struct sched *s))
{
    struct lease_state *l = s->lease;
    if (l->released)
        return false;
    if (l->releasing)
        return true;
    uv_timer_stop(&l->timer);
    size_t n = 0, cap = lease_held_count(s) + 2;
    for (const struct dsync *d = s->ds; d; d = d->next)
        cap += chunklease_count(d);
    const char **units = sched_xcalloc(cap, sizeof *units);
    if (l->hb_held)
        units[n++] = l->hb_unit;
    for (struct dsync *d = s->ds; d; d = d->next) {
        if (d->lease_held) {
            units[n++] = d->lease_unit;
            drop(d);
        }
        for (size_t i = 0; d->cu && i < d->nwork; i++)
            if (d->cu[i].unit && d->cu[i].held) {
                units[n++] = d->cu[i].unit;
                d->cu[i].held = false;
            }
    }
    l->hb_held = false;
    if (n == 0) {
        free(units);
        l->released = true;
        return false;
    }
    l->releasing = true;
    l->release_done = done;
    pgsink_lease_release(s->sink, l->owner, units, n, on_released, l);
    free(units);
    return true;
}

void lease_free(struct sched *s)
{
    if (!s->lease)
        return;
    uv_timer_stop(&s->lease->timer);
    /* the state is freed with the timer: its close callback runs after the loop's turn */
    uv_close((uv_handle_t *)&s->lease->timer, (uv_close_cb)free);
    s->lease = NULL;
}
