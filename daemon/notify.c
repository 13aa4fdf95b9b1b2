/* notify: sd_notify wrappers and the watchdog. See notify.h. */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "log.h"

static uv_timer_t g_watchdog;
static bool g_watchdog_on;
static bool (*g_healthy)(void *ud);
static void *g_healthy_ud;
static bool g_said_stuck;

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    /* sent from the loop itself: a stuck loop stops the pings and systemd restarts us; so
     * does work that has stopped moving */
    if (g_healthy && !g_healthy(g_healthy_ud)) {
        if (!g_said_stuck)
            log_error("main", "no progress for longer than any timeout allows: watchdog pings "
                              "stop, systemd will restart the daemon");
        g_said_stuck = true;
        return;
    }
    g_said_stuck = false;
    sd_notify(0, "WATCHDOG=1");
}

void notify_init(uv_loop_t *loop, bool (*healthy)(void *ud), void *ud)
{
    g_healthy = healthy;
    g_healthy_ud = ud;
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        uv_timer_init(loop, &g_watchdog);
        uint64_t ms = usec / 2000;
        if (ms == 0)
            ms = 1;
        uv_timer_start(&g_watchdog, on_watchdog, ms, ms);
        g_watchdog_on = true;
        log_debug("main", "watchdog: pinging every %llu ms", (unsigned long long)ms);
    }
}

void notify_ready(void)
{
    sd_notify(0, "READY=1");
}

void notify_status(const char *fmt, ...)
{
    char msg[1024], clean[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_sanitize(clean, sizeof clean, msg);
    sd_notifyf(0, "STATUS=%s", clean);
}

void notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
               (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void notify_stopping(void)
{
    sd_notify(0, "STOPPING=1");
}

void notify_close(void)
{
    if (g_watchdog_on) {
        uv_timer_stop(&g_watchdog);
        uv_close((uv_handle_t *)&g_watchdog, NULL);
        g_watchdog_on = false;
    }
}
