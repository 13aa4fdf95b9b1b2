/* rowdec: one arrayLines data row -> struct rowenc_value per column, in one pass over the
 * line and without a json-c tree (see rowdec.h for the subset it takes). Strings without
 * escapes stay in the line (a NUL is written after each); escaped strings and the JSON text
 * of arrays and objects go to one scratch buffer, never longer than the line: the text
 * json-c would write for a value is never longer than the value's text in this subset. */
#include "rowdec.h"
#include "textscan.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "druid_client.h"

#define SLOW ROWDEC_SLOW
/* What the decoder keeps between rows at most; a larger row's buffers are given back. */
#define KEEP_SCRATCH (256u * 1024)
#define KEEP_VALUES 1024u

struct rowdec {
    struct rowenc_value *v;
    size_t *term; /* where terminating NULs go in the line, at most one per value */
    size_t vcap;
    char *s; /* scratch: escaped strings decoded, JSON texts of arrays and objects */
    size_t scap;
    size_t koff[ROWDEC_DEPTH * ROWDEC_KEYS]; /* the keys of the objects open now, in s */
    size_t klen[ROWDEC_DEPTH * ROWDEC_KEYS];
};

struct rowdec *rowdec_new(void)
{
    return calloc(1, sizeof(struct rowdec));
}

void rowdec_free(struct rowdec *d)
{
    if (!d)
        return;
    free(d->v);
    free(d->term);
    free(d->s);
    free(d);
}

static int hex4(const char *p, const char *end)
{
    if (end - p < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = (unsigned char)p[i];
        int x = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (x < 0)
            return -1;
        v = v * 16 + x;
    }
    return v;
}

/* One escape from just after its backslash: the code point, or -1 (not in the subset:
 * an unknown escape, a lone surrogate). */
static int32_t unescape(const char **pp, const char *end)
{
    const char *p = *pp;
    if (p == end)
        return -1;
    char c = *p++;
    int32_t cp;
    switch (c) {
    case '"':
    case '\\':
    case '/':
        cp = c;
        break;
    case 'b':
        cp = '\b';
        break;
    case 'f':
        cp = '\f';
        break;
    case 'n':
        cp = '\n';
        break;
    case 'r':
        cp = '\r';
        break;
    case 't':
        cp = '\t';
        break;
    case 'u': {
        int u = hex4(p, end);
        if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
            return -1;
        p += 4;
        cp = u;
        if (u >= 0xD800 && u <= 0xDBFF) {
            int lo = end - p >= 6 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2, end) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            cp = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        }
        break;
    }
    default:
        return -1;
    }
    *pp = p;
    return cp;
}

static char *put_utf8(char *o, int32_t cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | cp >> 12);
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | cp >> 18);
        *o++ = (char)(0x80 | (cp >> 12 & 0x3F));
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* A code point as json-c writes it inside a string: '"' and '\\' escaped, control
 * characters as \b \f \n \r \t or \u00xx, everything else (also '/') as UTF-8. */
static char *put_json_cp(char *o, int32_t cp)
{
    static const char hex[] = "0123456789abcdef";
    if (cp >= 0x20 && cp != '"' && cp != '\\')
        return put_utf8(o, cp);
    *o++ = '\\';
    switch (cp) {
    case '"':
    case '\\':
        *o++ = (char)cp;
        break;
    case '\b':
        *o++ = 'b';
        break;
    case '\f':
        *o++ = 'f';
        break;
    case '\n':
        *o++ = 'n';
        break;
    case '\r':
        *o++ = 'r';
        break;
    case '\t':
        *o++ = 't';
        break;
    default:
        memcpy(o, "u00", 3);
        o[3] = hex[cp >> 4];
        o[4] = hex[cp & 15];
        o += 5;
    }
    return o;
}

/* A string's content from just after its opening quote, to o: decoded bytes (json false)
 * or the string as json-c writes it, quotes included (json true). *pp ends after the
 * closing quote. */
static int str_to(const char **pp, const char *end, char **op, bool json)
{
    const char *p = *pp;
    char *o = *op;
    if (json)
        *o++ = '"';
    for (;;) {
        const char *r = p;
        p += textscan_plain_run(p, (size_t)(end - p), '"', '\\');
        memcpy(o, r, (size_t)(p - r));
        o += p - r;
        if (p == end || (unsigned char)*p < 0x20)
            return SLOW;
        if (*p++ == '"')
            break;
        int32_t cp = unescape(&p, end);
        if (cp < 0)
            return SLOW;
        o = json ? put_json_cp(o, cp) : put_utf8(o, cp);
    }
    if (json)
        *o++ = '"';
    *pp = p;
    *op = o;
    return 0;
}

/* A number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?. An integer goes to v->i as
 * json-c holds it (int64, or uint64 above INT64_MAX; beyond that json-c saturates, which is
 * left to it); anything with a fraction or an exponent is a double, its text kept. */
static int number(const char **pp, const char *end, struct rowenc_value *v)
{
    const char *p = *pp, *s = p;
    bool neg = false, dbl = false;
    uint64_t u = 0;
    if (*p == '-') {
        neg = true;
        if (++p == end)
            return SLOW;
    }
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            unsigned dg = (unsigned)(*p - '0');
            if (u > (UINT64_MAX - dg) / 10)
                return SLOW;
            u = u * 10 + dg;
        }
    } else {
        return SLOW;
    }
    if (p < end && *p == '.') {
        dbl = true;
        const char *f = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == f)
            return SLOW;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        dbl = true;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        const char *x = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == x)
            return SLOW;
    }
    if (dbl) {
        *v = (struct rowenc_value){.kind = ROWENC_V_DOUBLE, .p = s, .n = (size_t)(p - s)};
    } else if (neg) {
        if (u > (uint64_t)INT64_MAX + 1)
            return SLOW;
        /* the literal is the text json-c prints, except for "-0" (printed "0") */
        *v = (struct rowenc_value){.kind = ROWENC_V_INT,
                                   .i = (int64_t)(0 - u),
                                   .p = u ? s : NULL,
                                   .n = u ? (size_t)(p - s) : 0};
    } else if (u > (uint64_t)INT64_MAX) {
        *v = (struct rowenc_value){.kind = ROWENC_V_UINT, .i = (int64_t)u};
    } else {
        *v = (struct rowenc_value){
            .kind = ROWENC_V_INT, .i = (int64_t)u, .p = s, .n = (size_t)(p - s)};
    }
    *pp = p;
    return 0;
}

static char *put_dec(char *o, const struct rowenc_value *v)
{
    char t[24];
    size_t k = sizeof t;
    uint64_t u =
        v->kind == ROWENC_V_INT && v->i < 0 ? (uint64_t)0 - (uint64_t)v->i : (uint64_t)v->i;
    do {
        t[--k] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v->kind == ROWENC_V_INT && v->i < 0)
        *o++ = '-';
    memcpy(o, t + k, sizeof t - k);
    return o + (sizeof t - k);
}

static int literal(const char **pp, const char *end, const char *w, size_t n)
{
    if ((size_t)(end - *pp) < n || memcmp(*pp, w, n) != 0)
        return SLOW;
    *pp += n;
    return 0;
}

/* An array or object from its bracket, written to *op as json-c writes it (plain: no
 * whitespace, integers in decimal, doubles as their literal, strings re-escaped). Adds
 * what tree_cost in druid_client.c counts for it to *cost. */
static int container(struct rowdec *d, const char **pp, const char *end, char **op, size_t *cost)
{
    const char *p = *pp;
    char *o = *op;
    bool isobj[ROWDEC_DEPTH];
    size_t kbase[ROWDEC_DEPTH];
    size_t depth = 0, nkeys = 0;
    struct rowenc_value num;
    for (;;) {
        /* a value at p */
        if (p == end)
            return SLOW;
        switch (*p) {
        case '[':
        case '{':
            if (depth == ROWDEC_DEPTH)
                return SLOW;
            isobj[depth] = *p == '{';
            kbase[depth] = nkeys;
            *cost += isobj[depth] ? DRUID_COST_OBJECT : DRUID_COST_ARRAY;
            depth++;
            *o++ = *p++;
            if (p == end)
                return SLOW;
            if (*p == (isobj[depth - 1] ? '}' : ']')) {
                *o++ = *p++;
                depth--;
                break;
            }
            if (!isobj[depth - 1])
                continue;
            goto key;
        case '"':
            p++;
            if (str_to(&p, end, &o, true))
                return SLOW;
            break;
        case 't':
            if (literal(&p, end, "true", 4))
                return SLOW;
            memcpy(o, "true", 4);
            o += 4;
            break;
        case 'f':
            if (literal(&p, end, "false", 5))
                return SLOW;
            memcpy(o, "false", 5);
            o += 5;
            break;
        case 'n':
            if (literal(&p, end, "null", 4))
                return SLOW;
            memcpy(o, "null", 4);
            o += 4;
            break;
        default:
            if (number(&p, end, &num))
                return SLOW;
            if (num.kind == ROWENC_V_DOUBLE) {
                memcpy(o, num.p, num.n);
                o += num.n;
            } else {
                o = put_dec(o, &num);
            }
        }
        /* after a value: close what ends here, then the next value or key */
        for (;;) {
            if (depth == 0) {
                *pp = p;
                *op = o;
                return 0;
            }
            if (p == end)
                return SLOW;
            if (*p == (isobj[depth - 1] ? '}' : ']')) {
                *o++ = *p++;
                depth--;
                nkeys = kbase[depth];
                continue;
            }
            if (*p != ',')
                return SLOW;
            *cost += DRUID_COST_VALUE;
            *o++ = *p++;
            break;
        }
        if (!isobj[depth - 1])
            continue;
    key:
        if (p == end || *p != '"')
            return SLOW;
        {
            char *k0 = o;
            p++;
            if (str_to(&p, end, &o, true))
                return SLOW;
            size_t kl = (size_t)(o - k0), b = kbase[depth - 1];
            if (nkeys - b >= ROWDEC_KEYS)
                return SLOW;
            for (size_t k = b; k < nkeys; k++)
                if (d->klen[k] == kl && memcmp(d->s + d->koff[k], k0, kl) == 0)
                    return SLOW; /* json-c keeps one of duplicate keys: left to it */
            d->koff[nkeys] = (size_t)(k0 - d->s);
            d->klen[nkeys] = kl;
            nkeys++;
        }
        if (p == end || *p != ':')
            return SLOW;
        *o++ = *p++;
    }
}

static int reserve(struct rowdec *d, size_t nv, size_t len)
{
    if (nv >= d->vcap) {
        size_t cap = d->vcap ? d->vcap * 2 : 64;
        struct rowenc_value *v = realloc(d->v, cap * sizeof *v);
        if (!v)
            return SLOW;
        d->v = v;
        size_t *t = realloc(d->term, cap * sizeof *t);
        if (!t)
            return SLOW;
        d->term = t;
        d->vcap = cap;
    }
    if (len + 16 > d->scap) {
        size_t cap = d->scap ? d->scap : 1024;
        while (cap < len + 16)
            cap *= 2;
        char *s = realloc(d->s, cap);
        if (!s)
            return SLOW;
        d->s = s;
        d->scap = cap;
    }
    return 0;
}

static int decode(struct rowdec *d, char *line, size_t len, size_t *nout)
{
    const char *p = line, *end = line + len;
    size_t nv = 0, nt = 0, cost = DRUID_COST_VALUE + DRUID_COST_ARRAY;
    char *o = d->s;
    if (len < 2 || *p++ != '[')
        return SLOW;
    if (*p == ']') {
        p++;
    } else {
        for (;;) {
            if (nv >= d->vcap && reserve(d, nv, 0))
                return SLOW;
            struct rowenc_value *v = &d->v[nv];
            nv++;
            if (p == end)
                return SLOW;
            switch (*p) {
            case '"': {
                const char *s = ++p;
                p += textscan_plain_run(p, (size_t)(end - p), '"', '\\');
                if (p < end && *p == '"') { /* no escape: the string stays in the line */
                    *v = (struct rowenc_value){
                        .kind = ROWENC_V_STRING, .plain = true, .p = s, .n = (size_t)(p - s)};
                    d->term[nt++] = (size_t)(p - line);
                    p++;
                    break;
                }
                char *o0 = o;
                p = s;
                if (str_to(&p, end, &o, false))
                    return SLOW;
                *v = (struct rowenc_value){.kind = ROWENC_V_STRING, .p = o0, .n = (size_t)(o - o0)};
                *o++ = '\0';
                break;
            }
            case '[':
            case '{': {
                char *o0 = o;
                bool obj = *p == '{';
                if (container(d, &p, end, &o, &cost))
                    return SLOW;
                *v = (struct rowenc_value){
                    .kind = obj ? ROWENC_V_OBJECT : ROWENC_V_ARRAY, .p = o0, .n = (size_t)(o - o0)};
                *o++ = '\0';
                break;
            }
            case 't':
                if (literal(&p, end, "true", 4))
                    return SLOW;
                *v = (struct rowenc_value){.kind = ROWENC_V_BOOL, .i = 1};
                break;
            case 'f':
                if (literal(&p, end, "false", 5))
                    return SLOW;
                *v = (struct rowenc_value){.kind = ROWENC_V_BOOL, .i = 0};
                break;
            case 'n':
                if (literal(&p, end, "null", 4))
                    return SLOW;
                *v = (struct rowenc_value){.kind = ROWENC_V_NULL};
                break;
            default:
                if (number(&p, end, v))
                    return SLOW;
                if (v->p)
                    d->term[nt++] = (size_t)(p - line);
            }
            if (p == end)
                return SLOW;
            if (*p == ']') {
                p++;
                break;
            }
            if (*p++ != ',')
                return SLOW;
            cost += DRUID_COST_VALUE;
        }
    }
    if (p != end || cost > DRUID_ROW_TREE_MAX)
        return SLOW; /* json-c reports it, or the limit does, as before */
    for (size_t k = 0; k < nt; k++)
        line[d->term[k]] = '\0';
    *nout = nv;
    return 0;
}

int rowdec_decode(struct rowdec *d, char *line, size_t len, const struct rowenc_value **vals,
                  size_t *n)
{
    /* the last row's values are no longer needed: give back what a large row took */
    if (d->scap > KEEP_SCRATCH && len + 16 <= KEEP_SCRATCH) {
        free(d->s);
        d->s = NULL;
        d->scap = 0;
    }
    if (d->vcap > KEEP_VALUES) {
        free(d->v);
        free(d->term);
        d->v = NULL;
        d->term = NULL;
        d->vcap = 0;
    }
    if (reserve(d, 0, len))
        return SLOW;
    int rc = decode(d, line, len, n);
    *vals = d->v;
    return rc;
}
