/* notify: the systemd notify protocol (sd_notify). Owns READY/STATUS/RELOADING/STOPPING
 * messages and the watchdog timer on the loop. Outside systemd every call is a no-op. */
#ifndef DSYNC_NOTIFY_H
#define DSYNC_NOTIFY_H

#include <stdbool.h>
#include <uv.h>

/* Starts the watchdog pings (at half of WATCHDOG_USEC) on the loop, if systemd asked. */
void notify_init(uv_loop_t *loop);
void notify_ready(void);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void notify_reloading(void);
void notify_stopping(void);
/* Closes the watchdog timer. */
void notify_close(void);

#endif
