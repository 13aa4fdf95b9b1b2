/* fuzz_druid_lines: libFuzzer target for the streaming arrayLines splitter
 * (common/druid_lines). The input is a response body. It is fed whole and in
 * pieces whose sizes come from a generator seeded with a hash of the input (single bytes,
 * short runs, empty feeds, cuts at the newlines), and every run must deliver the same lines
 * and verdicts as a reference splitter written here from the framing rules of
 * reference §2 and §3.3: lines end at '\n', an empty line is the end marker, the empty body
 * is exactly "\n\n", bytes after the marker are an error, a body without the marker is
 * truncated. One input in eight is stretched so that lines outgrow the first line buffer;
 * the buffer must stay within max_line + 1 bytes and be released once no line can follow.
 * Every split runs twice, the second time with a peek callback (druid_lines_set_peek) that
 * takes some lines in place and passes the others on: the sequence must not change. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "druid_lines.h"

/* The only lines to adapt if the module's API changes. */
#define LINES_NEW(max_line, cb, ud) druid_lines_new((max_line), (cb), (ud))
#define LINE_BIG (1u << 20)           /* larger than any body made here */
#define FIRST_BUF DRUID_LINES_INITIAL /* the first line buffer; growth starts past it */
#define AMPLIFY 64
#define STOP_RC 7       /* what the callback returns to stop a feed */
#define MAX_INPUT 16384 /* longer inputs are ignored: at most MAX_INPUT / 2 lines */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* What one run (or the reference) produced. Lines are offsets into the body: a splitter
 * never rewrites bytes, so the i-th line must equal that slice of the input. */
struct outcome {
    size_t nlines;
    size_t off[MAX_INPUT / 2], len[MAX_INPUT / 2];
    int feed_rc;   /* 0, STOP_RC or a DRUID_LINES_E_* code */
    int finish_rc; /* 0 or DRUID_LINES_E_TRUNCATED */
};

/* What a run of the module gave (its lines are checked against the reference as they come). */
struct result {
    size_t nlines;
    int feed_rc, finish_rc;
};

struct run {
    const uint8_t *body;
    size_t n;
    size_t max_line;
    size_t stop_after; /* the callback stops the feed at this (1-based) line; 0 = never */
    const struct outcome *want;
    struct result got;
    bool peek; /* run with a peek callback that takes every line whose first byte is odd */
    const uint8_t *piece, *piece_end; /* the piece being fed, for peek's in-place check */
};

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void reference(const uint8_t *b, size_t n, size_t max_line, size_t stop_after,
                      struct outcome *o)
{
    o->nlines = 0;
    o->finish_rc = DRUID_LINES_E_TRUNCATED;
    o->feed_rc = 0;
    if (n >= 1 && b[0] == '\n') {
        /* the only body that may start with an empty line is exactly "\n\n" */
        if (n >= 2 && (b[1] != '\n' || n > 2))
            o->feed_rc = DRUID_LINES_E_AFTER_END;
        else if (n == 2)
            o->finish_rc = 0;
        return;
    }
    size_t pos = 0;
    while (pos < n) {
        const uint8_t *nl = memchr(b + pos, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - (b + pos)) : n - pos;
        if (len > max_line) {
            o->feed_rc = DRUID_LINES_E_TOOLONG;
            return;
        }
        if (!nl)
            return; /* an unfinished last line: truncated */
        if (len == 0) {
            if (pos + 1 < n)
                o->feed_rc = DRUID_LINES_E_AFTER_END;
            else
                o->finish_rc = 0;
            return;
        }
        o->off[o->nlines] = pos;
        o->len[o->nlines] = len;
        if (++o->nlines == stop_after) {
            o->feed_rc = STOP_RC;
            return;
        }
        pos += len + 1;
    }
}

static int on_line(void *ud, char *line, size_t len)
{
    struct run *r = ud;
    struct result *g = &r->got;
    CHECK(len > 0);
    CHECK(len <= r->max_line);
    CHECK(line[len] == '\0');
    CHECK(memchr(line, '\n', len) == NULL);
    /* the same line as the reference, byte for byte, in the same place of the sequence */
    CHECK(g->nlines < r->want->nlines);
    CHECK(len == r->want->len[g->nlines]);
    CHECK(memcmp(line, r->body + r->want->off[g->nlines], len) == 0);
    g->nlines++;
    return g->nlines == r->stop_after ? STOP_RC : 0;
}

/* The peek callback: a line inside the fed piece, in place (followed by its '\n'); lines
 * with an odd first byte are taken here, the others passed on to on_line, so that both
 * kinds interleave and the sequence stays the reference's. */
static int on_peek(void *ud, const char *line, size_t len)
{
    struct run *r = ud;
    struct result *g = &r->got;
    CHECK(len > 0);
    CHECK(len <= r->max_line);
    CHECK((const uint8_t *)line >= r->piece && (const uint8_t *)line + len < r->piece_end);
    CHECK(line[len] == '\n');
    CHECK(memchr(line, '\n', len) == NULL);
    if (!((unsigned char)line[0] & 1))
        return DRUID_LINES_PASS;
    CHECK(g->nlines < r->want->nlines);
    CHECK(len == r->want->len[g->nlines]);
    CHECK(memcmp(line, r->body + r->want->off[g->nlines], len) == 0);
    g->nlines++;
    return g->nlines == r->stop_after ? STOP_RC : 0;
}

/* Feeds body in pieces of the sizes mode picks; every feed after the first failure must
 * return that same failure (the error is sticky). */
static void run_once(struct run *r, int mode, uint64_t seed)
{
    memset(&r->got, 0, sizeof r->got);
    struct druid_lines *l = LINES_NEW(r->max_line, on_line, r);
    CHECK(l != NULL);
    if (r->peek)
        druid_lines_set_peek(l, on_peek);
    size_t pos = 0;
    int verdict = 0;
    uint64_t s = seed;
    while (pos < r->n || (mode == 2 && splitmix(&s) % 4 == 0)) {
        size_t left = r->n - pos, k;
        switch (mode) {
        case 0: /* all at once */
            k = left;
            break;
        case 1: /* byte by byte */
            k = left ? 1 : 0;
            break;
        case 2: /* random, empty feeds included */
            k = left ? (size_t)(splitmix(&s) % (left + 1)) : 0;
            break;
        case 3: /* short runs */
            k = left ? 1 + (size_t)(splitmix(&s) % (left < 16 ? left : 16)) : 0;
            break;
        default: { /* cut just before or just after each newline */
            const uint8_t *nl = memchr(r->body + pos, '\n', left);
            k = nl ? (size_t)(nl - (r->body + pos)) + (splitmix(&s) & 1) : left;
            if (k == 0)
                k = 1;
        }
        }
        r->piece = r->body + pos;
        r->piece_end = r->body + pos + k;
        int rc = druid_lines_feed(l, (const char *)r->body + pos, k);
        /* memory: never above the limit, and nothing held once no line can follow */
        CHECK(druid_lines_capacity(l) <= r->max_line + 1);
        if (rc)
            CHECK(druid_lines_capacity(l) == 0);
        if (verdict)
            CHECK(rc == verdict);
        else
            verdict = rc;
        pos += k;
    }
    /* an empty feed at the end changes nothing */
    int rc = druid_lines_feed(l, "", 0);
    CHECK(rc == verdict);
    r->got.feed_rc = verdict;
    r->got.finish_rc = druid_lines_finish(l);
    if (r->got.finish_rc == 0)
        CHECK(druid_lines_capacity(l) == 0);          /* the end marker released the buffer */
    CHECK(druid_lines_finish(l) == r->got.finish_rc); /* finish does not change state */
    druid_lines_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a: the input chooses its own splits */
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 0x100000001b3ULL;
    uint64_t s = h;
    /* One input in eight is stretched (each byte but '\n' written AMPLIFY times) so that
     * lines outgrow the splitter's first buffer, with limits around its growth steps. */
    bool stretch = splitmix(&s) % 8 == 0;
    size_t n = 0;
    for (size_t i = 0; i < size; i++)
        n += stretch && data[i] != '\n' ? AMPLIFY : 1;
    /* An exact-size copy, so that a read past the body is caught by ASan. */
    uint8_t *body = malloc(n ? n : 1);
    CHECK(body != NULL);
    for (size_t i = 0, o = 0; i < size; i++) {
        size_t k = stretch && data[i] != '\n' ? AMPLIFY : 1;
        memset(body + o, data[i], k);
        o += k;
    }
    static struct outcome want; /* static: 128 KiB */
    struct run run = {0}, *r = &run;
    r->body = body;
    r->n = n;
    static const size_t big_limits[] = {FIRST_BUF - 1, FIRST_BUF, FIRST_BUF + 1, 2 * FIRST_BUF + 7,
                                        LINE_BIG};
    if (stretch)
        r->max_line = big_limits[splitmix(&s) % 5];
    else
        r->max_line = splitmix(&s) % 4 == 0 ? 1 + (size_t)(splitmix(&s) % 64) : LINE_BIG;
    r->stop_after = splitmix(&s) % 8 == 0 ? 1 + (size_t)(splitmix(&s) % 8) : 0;
    reference(body, n, r->max_line, r->stop_after, &want);
    r->want = &want;

    for (int mode = 0; mode < 10; mode++) {
        if (mode % 5 == 1 && n > MAX_INPUT)
            continue;        /* byte by byte only on short bodies */
        r->peek = mode >= 5; /* every split again with a peek callback */
        run_once(r, mode % 5, splitmix(&s));
        CHECK(r->got.nlines == want.nlines);
        CHECK(r->got.feed_rc == want.feed_rc);
        CHECK(r->got.finish_rc == want.finish_rc);
    }
    free(body);
    return 0;
}
