/* buf: a growable byte buffer (always NUL-terminated) used to build SQL, COPY lines and
 * request bodies. Memory is owned by the buffer; buf_free releases it. */
#ifndef DSYNC_BUF_H
#define DSYNC_BUF_H

#include <stddef.h>

struct buf {
    char *data; /* NULL until the first append; data[len] == '\0' afterwards */
    size_t len;
    size_t cap;
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* All appends abort() on out-of-memory: a daemon that cannot allocate a few bytes cannot
 * make progress, and callers stay simple. */
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Room for extra more bytes and the NUL after them (data[len .. len + extra] writable), for
 * writers that fill the buffer themselves and then set len and the NUL. */
void buf_reserve(struct buf *b, size_t extra);
void buf_reset(struct buf *b); /* len = 0, keeps the allocation */
void buf_free(struct buf *b);  /* releases; the buf can be reused after */
/* Gives the data to the caller (free() it); the buf is left empty. Never NULL. */
char *buf_steal(struct buf *b);

#endif
