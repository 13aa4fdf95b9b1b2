/* log: the one logging module. Owns the log level, the line format (text: journald priority
 * prefixes when JOURNAL_STREAM is set, timestamps elsewhere; json: one JSON object per line,
 * after the same priority prefix under journald), the subsystem tag every line carries, the
 * structured fields a log pipeline filters on, and the sanitising rule that keeps text from
 * outside (Druid and PostgreSQL messages, datasource and column names) from injecting lines
 * or terminal escapes. Nothing else in the daemon writes to stderr. */
#ifndef DSYNC_LOG_H
#define DSYNC_LOG_H

#include <stdbool.h>
#include <stddef.h>

/* Longest line log_msg writes, prefix and newline included. A longer message is cut at a
 * character or escape boundary and ends in LOG_TRUNCATED. */
#define LOG_LINE_MAX 4096
#define LOG_TRUNCATED "... [truncated]"

enum log_level {
    LOG_LVL_ERROR = 3,
    LOG_LVL_WARNING = 4,
    LOG_LVL_INFO = 6,
    LOG_LVL_DEBUG = 7,
};

enum log_format {
    LOG_FORMAT_TEXT = 0,
    LOG_FORMAT_JSON,
};

/* Optional structured fields of one event. Zero-initialised members are absent: write
 * LOG_FIELDS(.datasource = name, .slice = idx + 1) and leave the rest out. In text mode they
 * are not shown (the message already says what a reader needs); in json mode each present one
 * is a member of the object: "datasource", "rows", "slice", "error_kind", "sqlstate",
 * "druid_code", "http_status", "target". Never put a secret in one. */
struct log_fields {
    const char *datasource;
    long long rows; /* shown when has_rows */
    bool has_rows;
    long long slice;        /* 1-based slice number; 0: none */
    const char *error_kind; /* druid_err_kind_name(), "postgres", ... */
    const char *sqlstate;   /* PostgreSQL's five characters */
    const char *druid_code; /* Druid's errorCode / legacy "error" */
    long http_status;       /* 0: none */
    const char *target;     /* "druid", "postgres": what an unreachable-peer event is about */
};
#define LOG_FIELDS(...) (&(const struct log_fields){__VA_ARGS__})

/* Reads JOURNAL_STREAM (journald prefixes) and whether stderr is a terminal. */
void log_init(void);
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* "error", "warning", "info", "debug" -> 0 and *out; anything else -> -1. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level lvl);
/* "text", "json" -> 0 and *out; anything else -> -1. */
int log_format_parse(const char *s, enum log_format *out);
void log_set_format(enum log_format f);
enum log_format log_get_format(void);
/* This instance's name (instance_name): a member "instance" of every JSON line, so that the
 * lines of several instances in one journal can be told apart. */
void log_set_instance(const char *name);

/* One line: level, subsystem ("config", "druid", "pg", "sched", "main", ...), message.
 * A trailing newline in fmt is not needed. The formatted message goes through log_sanitize,
 * so it is always exactly one line. */
void log_msg(enum log_level lvl, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with structured fields (f may be NULL). The text line is exactly log_msg's; the
 * JSON object is {"time", "level", "subsystem", the fields present, "message"}, its strings
 * sanitised (log_sanitize) and then JSON-escaped by json-c, at most LOG_LINE_MAX bytes. */
void log_event(enum log_level lvl, const char *subsys, const struct log_fields *f, const char *fmt,
               ...) __attribute__((format(printf, 4, 5)));

/* Copies src into dst so that it is one line of plain text, by this rule:
 *   newline, carriage return, tab       -> the two characters \n, \r, \t
 *   other C0 controls (0x01-0x1f), DEL  -> \x and two lowercase hex digits (ESC -> \x1b)
 *   C1 controls U+0080-U+009F, U+2028 (line separator), U+2029 (paragraph separator)
 *                                       -> \u and four lowercase hex digits (\u009b)
 *   a byte that is not part of valid UTF-8 (stray continuation byte, overlong form,
 *   surrogate, above U+10FFFF, cut sequence) -> \x and its two hex digits, one per byte
 *   everything else (printable ASCII, the backslash itself, valid UTF-8) -> unchanged.
 * The escapes are for reading, not for decoding: a backslash in src is not doubled.
 * dst gets at most dstlen - 1 bytes and a NUL (nothing when dstlen is 0). It is cut only
 * between units, never inside a UTF-8 character or an escape. Returns the length of the
 * whole sanitised text, as snprintf does: dst was cut when the result is >= dstlen. src
 * NULL counts as "". */
size_t log_sanitize(char *dst, size_t dstlen, const char *src);

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
