/* notify: the systemd notify protocol (sd_notify). Owns READY/STATUS/RELOADING/STOPPING
 * messages and the watchdog timer on the loop. Outside systemd every call is a no-op. */
#ifndef DSYNC_NOTIFY_H
#define DSYNC_NOTIFY_H

#include <stdbool.h>
#include <uv.h>

/* Starts the watchdog pings (at half of WATCHDOG_USEC) on the loop, if systemd asked. Each
 * ping first asks healthy(ud) (may be NULL): a loop that runs but whose work is stuck stops
 * pinging too, and systemd restarts it. */
void notify_init(uv_loop_t *loop, bool (*healthy)(void *ud), void *ud);
void notify_ready(void);
/* STATUS=: the text is sanitised (log_sanitize): outside text with newlines can never add
 * notify assignments of its own. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void notify_reloading(void);
void notify_stopping(void);
/* Closes the watchdog timer. */
void notify_close(void);

#endif
