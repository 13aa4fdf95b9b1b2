/* druid_lines: streaming splitter for Druid's arrayLines (and objectLines) bodies. Bytes go
 * in as they arrive from the network; complete lines come out through a callback; the end
 * marker (an empty line: the body ends in "\n\n") is what tells a complete response from a
 * truncated one. Memory is bounded by the longest line, never by the body: the line buffer
 * starts at DRUID_LINES_INITIAL bytes on the first byte, doubles as a line needs it, never
 * exceeds max_line + 1 bytes, and is released as soon as no further line can come (end
 * marker, error) or the splitter is freed. */
#ifndef DSYNC_DRUID_LINES_H
#define DSYNC_DRUID_LINES_H

#include <stddef.h>

/* First allocation of the line buffer (or max_line + 1 when that is smaller). */
#define DRUID_LINES_INITIAL (64u * 1024)

enum {
    DRUID_LINES_E_TRUNCATED = -2, /* the body ended without the end marker */
    DRUID_LINES_E_TOOLONG = -3,   /* a line exceeded max_line bytes */
    DRUID_LINES_E_AFTER_END = -4, /* bytes after the end marker */
    DRUID_LINES_E_NOMEM = -5,
};

/* Called once per complete, non-empty line (without its '\n'; line[len] is '\0' so it can
 * be handed to a parser directly). A non-zero return stops the feed and is returned by
 * druid_lines_feed. */
typedef int (*druid_line_cb)(void *ud, char *line, size_t len);

struct druid_lines; /* opaque */

/* A peek callback (druid_lines_set_peek) returns this to have the line delivered through
 * the line callback as usual. */
#define DRUID_LINES_PASS 1
/* Sees a complete, non-empty line that lies wholly inside one fed piece, in place: not
 * copied, not terminated (line[len] is the '\n'), not writable. Returns 0 when it took the
 * line, DRUID_LINES_PASS to have it copied and given to the line callback, or another
 * non-zero value to stop the feed (returned by druid_lines_feed) as the line callback's. */
typedef int (*druid_peek_cb)(void *ud, const char *line, size_t len);

/* max_line: the longest line accepted, in bytes without its '\n'. NULL on OOM. Reserves
 * no line buffer yet. */
struct druid_lines *druid_lines_new(size_t max_line, druid_line_cb cb, void *ud);
void druid_lines_free(struct druid_lines *l);
/* Lines inside one fed piece go to peek first (NULL: none); a line cut across pieces is
 * assembled in the line buffer and reaches only the line callback. Saves the copy of most
 * lines for a consumer that can read them in place. */
void druid_lines_set_peek(struct druid_lines *l, druid_peek_cb peek);
/* 0, the callback's non-zero value, or a DRUID_LINES_E_* code. */
int druid_lines_feed(struct druid_lines *l, const char *data, size_t len);
/* At end of body: 0 if the body ended exactly with the end marker ("\n\n", or a body that
 * is exactly "\n\n"), DRUID_LINES_E_TRUNCATED otherwise (including an empty body). */
int druid_lines_finish(struct druid_lines *l);
/* Bytes held by the line buffer now (0 when none is allocated), for tests and metrics. */
size_t druid_lines_capacity(const struct druid_lines *l);
/* Bytes of the incomplete line buffered so far. */
size_t druid_lines_pending(const struct druid_lines *l);

#endif
