/* druid_lines: streaming arrayLines/objectLines splitter with end-marker detection. */
#include "druid_lines.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum state {
    ST_BODY,        /* inside the body, before the end marker */
    ST_EMPTY_FIRST, /* the body so far is exactly "\n": only a second '\n' may follow */
    ST_END,         /* the end marker has been seen: nothing may follow */
};

struct druid_lines {
    size_t max_line;
    druid_line_cb cb;
    druid_peek_cb peek;
    void *ud;
    char *line; /* the current, incomplete line; cap bytes, NULL until the first byte */
    size_t cap;
    size_t len;
    bool seen_any; /* any byte of the body has arrived */
    enum state st;
    int err; /* sticky: once a feed failed, every later feed fails the same way */
};

struct druid_lines *druid_lines_new(size_t max_line, druid_line_cb cb, void *ud)
{
    struct druid_lines *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    /* keeps max_line + 1 and the doubling in reserve() from overflowing */
    l->max_line = max_line < SIZE_MAX / 4 ? max_line : SIZE_MAX / 4;
    l->cb = cb;
    l->ud = ud;
    return l;
}

void druid_lines_set_peek(struct druid_lines *l, druid_peek_cb peek)
{
    l->peek = peek;
}

static void release(struct druid_lines *l)
{
    free(l->line);
    l->line = NULL;
    l->cap = 0;
    l->len = 0;
}

void druid_lines_free(struct druid_lines *l)
{
    if (!l)
        return;
    release(l);
    free(l);
}

/* Room for need bytes plus the '\0': doubling from DRUID_LINES_INITIAL, capped at
 * max_line + 1, so a huge line costs at most twice its size and an endless one stops at
 * the cap. The buffer is kept between lines: rows of one response tend to be alike. */
static int reserve(struct druid_lines *l, size_t need)
{
    if (need + 1 <= l->cap)
        return 0;
    size_t limit = l->max_line + 1;
    size_t cap = l->cap ? l->cap : DRUID_LINES_INITIAL;
    while (cap < need + 1 && cap < limit)
        cap = cap > limit / 2 ? limit : cap * 2;
    if (cap > limit)
        cap = limit;
    char *p = realloc(l->line, cap);
    if (!p)
        return DRUID_LINES_E_NOMEM;
    l->line = p;
    l->cap = cap;
    return 0;
}

static int append(struct druid_lines *l, const char *p, size_t n)
{
    if (n > l->max_line - l->len)
        return DRUID_LINES_E_TOOLONG;
    int rc = reserve(l, l->len + n);
    if (rc)
        return rc;
    memcpy(l->line + l->len, p, n);
    l->len += n;
    return 0;
}

static int feed(struct druid_lines *l, const char *data, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (l->st == ST_END)
            return DRUID_LINES_E_AFTER_END;
        if (l->st == ST_EMPTY_FIRST) {
            if (data[i] != '\n')
                return DRUID_LINES_E_AFTER_END; /* an empty line, then more data */
            l->st = ST_END;
            i++;
            continue;
        }
        const char *nl = memchr(data + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (data + i)) : len - i;
        if (nl && n && l->len == 0 && l->peek && n <= l->max_line) {
            /* the whole line is in this piece: the consumer may take it where it is */
            int rc = l->peek(l->ud, data + i, n);
            if (rc != DRUID_LINES_PASS) {
                l->seen_any = true;
                i += n + 1;
                if (rc)
                    return rc;
                continue;
            }
        }
        if (n) {
            int rc = append(l, data + i, n);
            if (rc)
                return rc;
        }
        i += n;
        if (!nl)
            break;
        i++; /* the '\n' */
        if (l->len == 0) {
            /* An empty line is the end marker, except at the very start of the body,
             * where the complete empty body "\n\n" needs both newlines. */
            l->st = l->seen_any ? ST_END : ST_EMPTY_FIRST;
            l->seen_any = true;
            if (l->st == ST_END)
                release(l); /* no line can follow */
            continue;
        }
        l->seen_any = true;
        l->line[l->len] = '\0';
        size_t ll = l->len;
        l->len = 0;
        int rc = l->cb(l->ud, l->line, ll);
        if (rc)
            return rc;
    }
    if (len)
        l->seen_any = true;
    return 0;
}

int druid_lines_feed(struct druid_lines *l, const char *data, size_t len)
{
    if (l->err)
        return l->err;
    int rc = feed(l, data, len);
    l->err = rc;
    if (rc)
        release(l); /* the failure is sticky: the buffer is never needed again */
    return rc;
}

int druid_lines_finish(struct druid_lines *l)
{
    if (l->err || l->st != ST_END)
        return DRUID_LINES_E_TRUNCATED;
    return 0;
}

size_t druid_lines_capacity(const struct druid_lines *l)
{
    return l->cap;
}

size_t druid_lines_pending(const struct druid_lines *l)
{
    return l->len;
}
