/* progress: live lines, periodic lines and STATUS=. See progress.h. */
#include "progress.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "notify.h"

#define TICK_MS 250       /* how soon a phase change reaches STATUS= */
#define LIVE_EVERY 4      /* live lines redrawn every 4 ticks: 1 s */
#define PLAIN_EVERY 40    /* plain lines every 40 ticks: 10 s */
#define STATUS_MIN_MS 500 /* STATUS= at most this often */
#define STATUS_MS 5000    /* and at least this often (the rate moves) */

struct progress {
    uv_timer_t timer;
    const struct sched *s;
    bool live;
    int drawn; /* lines of the live block on screen */
    unsigned ticks;
    double last_t;
    uint64_t last_rows; /* over all datasources, for rows/s */
    double rate;
    struct buf block;
    char override[600]; /* start-up text shown instead of the datasources; "" none */
    char last_key[700]; /* what the last STATUS= said, rate left out */
    uint64_t last_sent; /* loop time of the last STATUS=, 0 never */
};

static struct progress *g_live; /* the log hooks need it */

static void erase_block(void)
{
    struct progress *p = g_live;
    if (!p || p->drawn == 0)
        return;
    struct buf b = BUF_INIT;
    for (int i = 0; i < p->drawn; i++)
        buf_puts(&b, "\033[1A\033[2K");
    ssize_t w = write(STDERR_FILENO, b.data, b.len);
    (void)w;
    buf_free(&b);
    p->drawn = 0;
}

static void draw_block(void)
{
    struct progress *p = g_live;
    if (!p || p->block.len == 0)
        return;
    ssize_t w = write(STDERR_FILENO, p->block.data, p->block.len);
    (void)w;
    p->drawn = 0;
    for (size_t i = 0; i < p->block.len; i++)
        p->drawn += p->block.data[i] == '\n';
}

struct collect {
    struct progress *p;
    struct buf *out;
    uint64_t rows;
    double now_rate;
    int active;
    bool plain;
};

static void fmt_eta(char *out, size_t n, double secs)
{
    if (secs < 0)
        snprintf(out, n, "--");
    else if (secs < 100)
        snprintf(out, n, "%.0f s", secs);
    else if (secs < 6000)
        snprintf(out, n, "%.0f min", secs / 60);
    else
        snprintf(out, n, "%.1f h", secs / 3600);
}

static void one(void *ud, const struct sched_ds_info *i)
{
    struct collect *c = ud;
    c->rows += i->rows_read_total;
    if (!i->selected || strcmp(i->phase, "idle") == 0)
        return;
    c->active++;
    double rate = i->cycle_seconds > 0 ? (double)i->cycle_rows / i->cycle_seconds : 0;
    double eta = -1;
    if (rate > 0 && i->cycle_est_rows > 0)
        eta = ((double)i->cycle_est_rows - (double)i->cycle_rows) / rate;
    if (eta < 0 && i->cycle_est_rows > 0)
        eta = 0;
    char etas[32];
    fmt_eta(etas, sizeof etas, eta);
    if (c->plain)
        log_info("progress", "%s: %s, %llu rows (%.0f rows/s), slices %zu of %zu, ETA %s", i->name,
                 i->phase, (unsigned long long)i->cycle_rows, rate, i->slices_done,
                 i->slices_planned, etas);
    else
        buf_printf(c->out, "  %-30.30s %-9s %12llu rows %10.0f rows/s  slices %zu/%zu  ETA %s\n",
                   i->name, i->phase, (unsigned long long)i->cycle_rows, rate, i->slices_done,
                   i->slices_planned, etas);
}

/* STATUS= when what it says changed (at most every STATUS_MIN_MS) or STATUS_MS passed. */
static void maybe_status(struct progress *p, uint64_t now, bool force)
{
    char st[600];
    if (p->override[0])
        snprintf(st, sizeof st, "%s", p->override);
    else
        sched_status(p->s, st, sizeof st);
    bool changed = strcmp(st, p->last_key) != 0;
    uint64_t since = p->last_sent ? now - p->last_sent : UINT64_MAX;
    if (!(force || (changed && since >= STATUS_MIN_MS) || since >= STATUS_MS))
        return;
    if (p->override[0])
        notify_status("%s", st);
    else
        notify_status("%s; %.0f rows/s", st, p->rate);
    snprintf(p->last_key, sizeof p->last_key, "%s", st);
    p->last_sent = now ? now : 1;
}

static void on_tick(uv_timer_t *t)
{
    struct progress *p = t->data;
    p->ticks++;
    bool live_tick = p->live && p->ticks % LIVE_EVERY == 0;
    bool plain = !p->live && p->ticks % PLAIN_EVERY == 0;
    uint64_t now_ms = uv_now(t->loop);
    bool rate_tick = !p->last_t || now_ms - (uint64_t)(p->last_t * 1000.0) >= STATUS_MS;
    if (!live_tick && !plain && !rate_tick) {
        maybe_status(p, now_ms, false);
        return;
    }
    buf_reset(&p->block);
    struct collect c = {p, &p->block, 0, 0, 0, plain};
    sched_foreach(p->s, one, &c);
    double now = (double)now_ms / 1000.0;
    if (rate_tick || live_tick) {
        if (p->last_t > 0 && now > p->last_t)
            p->rate = (double)(c.rows - p->last_rows) / (now - p->last_t);
        p->last_t = now;
        p->last_rows = c.rows;
    }
    if (live_tick) {
        erase_block();
        draw_block();
    }
    maybe_status(p, now_ms, false);
}

void progress_set_override(struct progress *p, const char *fmt, ...)
{
    if (!p)
        return;
    if (!fmt) {
        p->override[0] = '\0';
    } else {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->override, sizeof p->override, fmt, ap);
        va_end(ap);
    }
    /* at once: start-up events are few (one per check and backoff), and a reason must show
     * even when the run ends right after it */
    maybe_status(p, uv_now(p->timer.loop), p->override[0] && strcmp(p->override, p->last_key) != 0);
}

struct progress *progress_start(uv_loop_t *loop, const struct sched *s, bool live)
{
    struct progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->s = s;
    p->live = live;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_tick, TICK_MS, TICK_MS);
    if (live) {
        g_live = p;
        log_set_hooks(erase_block, draw_block);
    }
    return p;
}

static void free_progress(uv_handle_t *h)
{
    struct progress *p = h->data;
    buf_free(&p->block);
    free(p);
}

void progress_stop(struct progress *p)
{
    if (!p)
        return;
    if (p->live) {
        erase_block();
        log_set_hooks(NULL, NULL);
        g_live = NULL;
    }
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, free_progress);
}
