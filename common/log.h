/* log: the one logging module. Owns the log level, the line format (journald priority
 * prefixes when JOURNAL_STREAM is set, timestamps on a terminal) and the subsystem tag
 * every line carries. Nothing else in the daemon writes to stderr. */
#ifndef DSYNC_LOG_H
#define DSYNC_LOG_H

enum log_level {
    LOG_LVL_ERROR = 3,
    LOG_LVL_WARNING = 4,
    LOG_LVL_INFO = 6,
    LOG_LVL_DEBUG = 7,
};

/* Reads JOURNAL_STREAM (journald prefixes) and whether stderr is a terminal. */
void log_init(void);
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* "error", "warning", "info", "debug" -> 0 and *out; anything else -> -1. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level lvl);

/* One line: level, subsystem ("config", "druid", "pg", "sched", "main", ...), message.
 * A trailing newline in fmt is not needed. */
void log_msg(enum log_level lvl, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Called around every line written, so that a live progress display on the terminal can
 * erase itself before a log line and redraw after it. NULL removes them. */
void log_set_hooks(void (*before)(void), void (*after)(void));
/* Is stderr a terminal (and not the journal)? */
int log_is_tty(void);

#define log_error(sub, ...) log_msg(LOG_LVL_ERROR, sub, __VA_ARGS__)
#define log_warning(sub, ...) log_msg(LOG_LVL_WARNING, sub, __VA_ARGS__)
#define log_info(sub, ...) log_msg(LOG_LVL_INFO, sub, __VA_ARGS__)
#define log_debug(sub, ...) log_msg(LOG_LVL_DEBUG, sub, __VA_ARGS__)

#endif
