/* ledger: slice table bookkeeping. See ledger.h. */
#include "ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int64_t ledger_prefix_max(const struct ledger_slice *sl, size_t n, size_t upto, int64_t this_max)
{
    int64_t m = INT64_MIN;
    size_t i = 0;
    for (; i < n; i++) {
        int64_t v;
        if (i == upto)
            v = this_max;
        else if (sl[i].status == LEDGER_DONE)
            v = sl[i].max_seen;
        else
            break;
        if (v > m)
            m = v;
    }
    return upto != SIZE_MAX && i <= upto ? INT64_MIN : m;
}

int64_t ledger_cursor(int64_t committed, int64_t candidate)
{
    if (candidate == INT64_MIN)
        return INT64_MIN;
    return committed > candidate ? committed : candidate;
}

size_t ledger_dropped(const struct ledger_chunk *snap, size_t ns, const struct ledger_chunk *led,
                      size_t nl, bool *gone)
{
    size_t n = 0, i0 = 0;
    for (size_t j = 0; j < nl; j++) {
        while (i0 < ns && snap[i0].end_ms <= led[j].start_ms)
            i0++;
        bool covered = false;
        for (size_t i = i0; i < ns && snap[i].start_ms < led[j].end_ms && !covered; i++)
            covered = led[j].start_ms < snap[i].end_ms && snap[i].start_ms < led[j].end_ms;
        gone[j] = !covered;
        n += !covered;
    }
    return n;
}

bool ledger_item_complete(const struct ledger_slice *sl, size_t n, size_t item, size_t except)
{
    for (size_t i = 0; i < n; i++) {
        if (i == except || sl[i].w0 == SIZE_MAX || item < sl[i].w0 || item > sl[i].w1)
            continue;
        if (sl[i].status != LEDGER_DONE)
            return false;
    }
    return true;
}

size_t ledger_done(const struct ledger_slice *sl, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += sl[i].status == LEDGER_DONE;
    return k;
}

static bool overlaps(int64_t lo1, int64_t hi1, int64_t lo2, int64_t hi2)
{
    return lo1 < hi2 && lo2 < hi1;
}

static int push(struct ledger_work **w, size_t *n, size_t *cap, const struct ledger_work *x)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        struct ledger_work *nw = realloc(*w, c * sizeof *nw);
        if (!nw)
            return -1;
        *w = nw;
        *cap = c;
    }
    (*w)[(*n)++] = *x;
    return 0;
}

static int cmp_work(const void *a, const void *b)
{
    const struct ledger_work *x = a, *y = b;
    if (x->lo != y->lo)
        return x->lo < y->lo ? -1 : 1;
    return x->hi < y->hi ? -1 : x->hi > y->hi;
}

int ledger_diff(const struct ledger_chunk *snap, size_t ns, const struct ledger_chunk *led,
                size_t nl, const struct ledger_opts *o, struct ledger_work **out, size_t *nout,
                size_t *ndrops)
{
    struct ledger_work *w = NULL;
    size_t n = 0, cap = 0, drops = 0;
    size_t j0 = 0; /* first ledger row that may overlap the current snapshot chunk */
    for (size_t i = 0; i < ns; i++) {
        const struct ledger_chunk *c = &snap[i];
        while (j0 < nl && led[j0].end_ms <= c->start_ms)
            j0++;
        size_t nover = 0, same = SIZE_MAX;
        int64_t since = 0;
        for (size_t j = j0; j < nl && led[j].start_ms < c->end_ms; j++) {
            if (!overlaps(led[j].start_ms, led[j].end_ms, c->start_ms, c->end_ms))
                continue;
            nover++;
            if (led[j].start_ms == c->start_ms && led[j].end_ms == c->end_ms)
                same = j;
            if (led[j].state == LEDGER_POSTPONED && led[j].postponed_since_ms &&
                (!since || led[j].postponed_since_ms < since))
                since = led[j].postponed_since_ms;
        }
        struct ledger_work x = {LEDGER_READ,   c->start_ms, c->end_ms, i,         nover == 0,
                                c->druid_rows, 0,           false,     INT64_MIN, 0};
        if (c->realtime && c->available) {
            x.open = true;
            x.full_read_ms = o->now_ms;
            const struct ledger_chunk *l = same != SIZE_MAX && nover == 1 ? &led[same] : NULL;
            if (l && l->state == LEDGER_WAITING && l->position_ms != INT64_MIN &&
                l->position_ms >= c->start_ms && l->full_read_ms &&
                o->now_ms - l->full_read_ms < o->reread_ms) {
                /* its new rows: from the newest one read (rows sharing it are read again,
                 * identical ones write nothing) */
                x.lo = l->position_ms;
                x.position_ms = l->position_ms;
                x.full_read_ms = l->full_read_ms;
                x.rows = -1; /* unknown for a part of the chunk: counted */
            }
        }
        if (!c->available) {
            x.action = LEDGER_POSTPONE;
            x.since_ms = since ? since : o->now_ms;
        } else if (nover == 1 && same != SIZE_MAX && led[same].state == LEDGER_SYNCED &&
                   !c->realtime && c->fp[0] && strcmp(led[same].fp, c->fp) == 0) {
            continue; /* unchanged: not queried */
        }
        if (push(&w, &n, &cap, &x) != 0)
            goto oom;
    }
    /* ledger rows no active chunk overlaps: dropped intervals */
    size_t i0 = 0;
    for (size_t j = 0; j < nl; j++) {
        while (i0 < ns && snap[i0].end_ms <= led[j].start_ms)
            i0++;
        bool covered = false;
        for (size_t i = i0; i < ns && snap[i].start_ms < led[j].end_ms && !covered; i++)
            covered = overlaps(led[j].start_ms, led[j].end_ms, snap[i].start_ms, snap[i].end_ms);
        if (covered)
            continue;
        drops++;
        if (o->hold_drops)
            continue;
        struct ledger_work x = {LEDGER_DROP, led[j].start_ms, led[j].end_ms, SIZE_MAX, false, 0,
                                0,           false,           INT64_MIN,     0};
        if (push(&w, &n, &cap, &x) != 0)
            goto oom;
    }
    if (n > 1)
        qsort(w, n, sizeof *w, cmp_work);
    *out = w;
    *nout = n;
    *ndrops = drops;
    return 0;
oom:
    free(w);
    return -1;
}

/* ---- segments to chunks ---- */

static int cmp_seg_time(const void *a, const void *b)
{
    const struct ledger_segment *x = a, *y = b;
    if (x->start_ms != y->start_ms)
        return x->start_ms < y->start_ms ? -1 : 1;
    if (x->end_ms != y->end_ms)
        return x->end_ms < y->end_ms ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int cmp_seg_id(const void *a, const void *b)
{
    return strcmp(((const struct ledger_segment *)a)->id, ((const struct ledger_segment *)b)->id);
}

size_t ledger_chunks_from_segments(struct ledger_segment *segs, size_t n, struct ledger_chunk *out,
                                   int64_t *bytes)
{
    if (n > 1)
        qsort(segs, n, sizeof *segs, cmp_seg_time);
    size_t nchunks = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1, end_at = i;
        int64_t end = segs[i].end_ms;
        while (j < n && segs[j].start_ms < end) {
            if (segs[j].end_ms > end) {
                end = segs[j].end_ms;
                end_at = j;
            }
            j++;
        }
        struct ledger_chunk *c = &out[nchunks];
        memset(c, 0, sizeof *c);
        c->start_ms = segs[i].start_ms;
        c->end_ms = end;
        snprintf(c->start, sizeof c->start, "%s", segs[i].start);
        snprintf(c->end, sizeof c->end, "%s", segs[end_at].end);
        c->available = true;
        if (bytes)
            bytes[nchunks] = 0;
        /* the fingerprint: ids and sizes in id order, whatever order Druid listed them in */
        qsort(segs + i, j - i, sizeof *segs, cmp_seg_id);
        XXH3_state_t *h = XXH3_createState();
        if (!h)
            abort();
        XXH3_128bits_reset(h);
        for (size_t k = i; k < j; k++) {
            const struct ledger_segment *g = &segs[k];
            XXH3_128bits_update(h, g->id, strlen(g->id) + 1);
            char sz[24];
            int len = snprintf(sz, sizeof sz, "%lld", (long long)g->size);
            XXH3_128bits_update(h, sz, (size_t)len + 1);
            c->available &= g->available;
            c->realtime |= g->realtime;
            if (g->num_rows <= 0) /* 0 is Druid's "unknown" */
                c->druid_rows = -1;
            else if (c->druid_rows >= 0)
                c->druid_rows += g->num_rows;
            if (bytes)
                bytes[nchunks] += g->size;
        }
        XXH128_hash_t fp = XXH3_128bits_digest(h);
        XXH3_freeState(h);
        snprintf(c->fp, sizeof c->fp, "%016llx%016llx", (unsigned long long)fp.high64,
                 (unsigned long long)fp.low64);
        nchunks++;
        i = j;
    }
    return nchunks;
}
