/* rowenc: Druid result rows -> PostgreSQL COPY text lines, and the per-row identity UUID
 * (id scheme ROWENC_ID_SCHEME: canonical values, see rowenc.h). */
#include "rowenc.h"
#include "textscan.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
/* inlined: the id hash runs twice per row on short inputs, where a call into the library
 * and its length dispatch cost about as much as the hashing (same digests) */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "timeutil.h"
#include "xxh3_wide.h"

/* What a field contributes to the id (scheme 2, rowenc.h): its value class and where its
 * canonical value is, recorded while the field is encoded and hashed once the row is
 * complete (the hash runs in name order, the encoder in column order). Pointers are into
 * the row's json-c objects, valid for the rowenc_encode call. */
enum canon_kind {
    CK_NULL,     /* left out of the hash */
    CK_INT,      /* number: i */
    CK_INTTEXT,  /* number: i, whose decimal text as json-c prints it is p/n */
    CK_UINT,     /* number: (uint64_t)i, above INT64_MAX */
    CK_NUMTEXT,  /* number: the decimal literal p/n (d: its double, for a literal json-c made) */
    CK_NAN,      /* NaN */
    CK_PINF,     /* +Infinity */
    CK_NINF,     /* -Infinity */
    CK_STR,      /* string: p/n */
    CK_TS,       /* timestamp: i epoch millis */
    CK_JSON,     /* JSON text p/n, valid (json_check JC_OK or JC_NUL) */
    CK_JSONSTR,  /* a jsonb stored as the JSON string of the text p/n */
    CK_JSONTEXT, /* a JSON array/object in a text column: JSON if it is valid, else a string */
};

struct canon {
    enum canon_kind kind;
    const char *p;
    size_t n;
    int64_t i;
    double d;
};

/* Tags of the hash input (rowenc.h). */
#define TAG_NUMBER 'N'
#define TAG_NAN 'Q'
#define TAG_PINF '+'
#define TAG_NINF '-'
#define TAG_STRING 'S'
#define TAG_TIME 'T'
#define TAG_JSON 'J'

/* The id hash input of a row, gathered in one buffer and hashed in one XXH3 call (the same
 * digest as streaming the same bytes, without the streaming state's copies and calls). */
struct hashw {
    char *b;
    size_t n, cap;
};
/* What the hash buffer keeps between rows at most; a larger row's buffer is given back. */
#define HW_KEEP (256u * 1024)
/* Slack the fixed-size writes of one field may use beyond their bytes (a name's padding) */
#define HW_SLACK 16

#define OCC_LIST 8

struct occ_slot {
    XXH128_hash_t h;
    uint64_t seen; /* identical rows seen so far in the slice; 0 marks an empty slot */
};

struct rowenc {
    size_t ncols;
    struct rowenc_column *cols; /* names owned */
    size_t *name_len;
    size_t names_total; /* the sum of name_len + 1 (a name and its NUL) */
    size_t *by_name;    /* column indexes in ascending byte order of name */
    int inc_col;
    bool with_id;
    struct canon *canon;        /* per column, this row */
    struct rowenc_value *jvals; /* per column: rowenc_encode's row, as values */
    char (*num)[24];            /* per column: the text of a number or boolean in a jsonb column */
    struct hashw hw;
    struct occ_slot *occ;
    size_t occ_cap, occ_used; /* occ_cap is 0 or a power of two */
    /* the slots of the first OCC_LIST rows of a group (valid until the table grows): a reset
     * after a small group clears those, not the table (ordered reads reset at nearly
     * every row) */
    size_t occ_at[OCC_LIST];
    bool occ_at_valid;
    uint64_t rows;
    struct rowenc_stats stats, pend; /* pend: this row's counts, added when it is stored */
    bool ts_day_valid;               /* ts_druid_fast's last date "YYYY-MM-DD" and its day */
    char ts_day_key[10];
    int64_t ts_day;
    int group_col;      /* rowenc_group_by: rows are numbered per run of this column's text */
    char group_key[48]; /* the text of the current run (a longer text never starts one) */
    size_t group_len;
    uint64_t line_ok, line_slow; /* rowenc_encode_line: lines taken and left */
    xxh3_wide_fn wide;           /* the content hash on AVX2, or NULL: the inlined one */
};

struct rowenc *rowenc_new(const struct rowenc_column *cols, size_t ncols, int inc_col, bool with_id)
{
    struct rowenc *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->ncols = ncols;
    e->inc_col = inc_col >= 0 && (size_t)inc_col < ncols ? inc_col : -1;
    e->with_id = with_id;
    e->group_col = -1;
    e->wide = xxh3_wide_pick();
    size_t n = ncols ? ncols : 1;
    e->cols = calloc(n, sizeof *e->cols);
    e->name_len = calloc(n, sizeof *e->name_len);
    e->by_name = calloc(n, sizeof *e->by_name);
    e->canon = calloc(n, sizeof *e->canon);
    e->jvals = calloc(n, sizeof *e->jvals);
    e->num = calloc(n, sizeof *e->num);
    if (!e->cols || !e->name_len || !e->by_name || !e->canon || !e->jvals || !e->num)
        goto oom;
    for (size_t i = 0; i < ncols; i++) {
        e->cols[i].type = cols[i].type;
        e->cols[i].name = strdup(cols[i].name ? cols[i].name : "");
        if (!e->cols[i].name)
            goto oom;
        e->name_len[i] = strlen(e->cols[i].name);
        e->names_total += e->name_len[i] + 1;
    }
    /* Insertion sort: column counts are small and this runs once per slice at most. */
    for (size_t i = 0; i < ncols; i++) {
        size_t j = i;
        while (j > 0 && strcmp(e->cols[e->by_name[j - 1]].name, e->cols[i].name) > 0) {
            e->by_name[j] = e->by_name[j - 1];
            j--;
        }
        e->by_name[j] = i;
    }
    return e;
oom:
    rowenc_free(e);
    return NULL;
}

void rowenc_free(struct rowenc *e)
{
    if (!e)
        return;
    if (e->cols)
        for (size_t i = 0; i < e->ncols; i++)
            free((char *)e->cols[i].name);
    free(e->cols);
    free(e->name_len);
    free(e->by_name);
    free(e->canon);
    free(e->jvals);
    free(e->num);
    free(e->hw.b);
    free(e->occ);
    free(e);
}

void rowenc_reset(struct rowenc *e)
{
    if (e->occ_used == 0) {
        /* nothing to forget: callers reset once per timestamp group, often per row */
    } else if (e->occ_cap > 4096) {
        /* a large table from one big group: give it back rather than clear it every time */
        free(e->occ);
        e->occ = NULL;
        e->occ_cap = 0;
    } else if (e->occ_at_valid && e->occ_used <= OCC_LIST) {
        for (size_t k = 0; k < e->occ_used; k++)
            e->occ[e->occ_at[k]].seen = 0;
    } else {
        memset(e->occ, 0, e->occ_cap * sizeof *e->occ);
    }
    e->occ_used = 0;
    e->occ_at_valid = true;
    e->rows = 0;
}

void rowenc_group_by(struct rowenc *e, int col)
{
    e->group_col = col;
    e->group_len = 0;
}

/* A row whose group column reads s (n bytes): a new run of equal texts starts the counts
 * again. */
static void group_check(struct rowenc *e, const char *s, size_t n)
{
    if (n < sizeof e->group_key && (n != e->group_len || memcmp(s, e->group_key, n) != 0)) {
        rowenc_reset(e);
        memcpy(e->group_key, s, n);
        e->group_len = n;
    }
}

/* The group text of a decoded value: a string up to its first NUL, NULL as "", anything
 * else as the JSON text json-c writes for it. */
static void group_value(struct rowenc *e, const struct rowenc_value *v)
{
    if (v->kind == ROWENC_V_STRING) {
        group_check(e, v->p, strlen(v->p));
    } else if (v->kind == ROWENC_V_NULL) {
        group_check(e, "", 0);
    } else {
        struct buf b = BUF_INIT;
        rowenc_value_text(v, &b);
        group_check(e, b.data ? b.data : "", b.data ? strlen(b.data) : 0);
        buf_free(&b);
    }
}

uint64_t rowenc_rows(const struct rowenc *e)
{
    return e->rows;
}

const struct rowenc_stats *rowenc_stats(const struct rowenc *e)
{
    return &e->stats;
}

/* buf_append / buf_putc with the room check inline: most appends of a row fit the buffer
 * the last COPY chunk left, so the call and the growth logic run only when it grows. */
static inline void out_append(struct buf *b, const void *p, size_t n)
{
    if (b->len + n < b->cap) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
    } else {
        buf_append(b, p, n);
    }
}

/* Room for k more bytes and the NUL, so that the writes after it need no check. */
static inline void out_room(struct buf *b, size_t k)
{
    if (b->cap - b->len <= k)
        buf_reserve(b, k);
}

void rowenc_copy_escape(struct buf *out, const char *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        i += textscan_plain_run(s + i, n - i, '\\', '\\');
        if (i == n)
            break;
        unsigned char c = (unsigned char)s[i];
        if (i > run)
            out_append(out, s + run, i - run);
        run = i + 1;
        char esc[4] = {'\\', 0, 0, 0};
        size_t len = 2;
        switch (c) {
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\v':
            esc[1] = 'v';
            break;
        default: /* the rest of the control range, as COPY's \ooo octal */
            esc[1] = (char)('0' + (c >> 6));
            esc[2] = (char)('0' + ((c >> 3) & 7));
            esc[3] = (char)('0' + (c & 7));
            len = 4;
        }
        out_append(out, esc, len);
    }
    if (n > run)
        out_append(out, s + run, n - run);
}

void rowenc_format_uuid(const uint8_t id[16], char out[37])
{
    /* two hex digits per byte from one table: the id of every row is written */
    static const char hex2[513] =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    char *o = out;
#define H(i) (memcpy(o, hex2 + 2 * id[i], 2), o += 2)
    H(0), H(1), H(2), H(3), *o++ = '-';
    H(4), H(5), *o++ = '-';
    H(6), H(7), *o++ = '-';
    H(8), H(9), *o++ = '-';
    H(10), H(11), H(12), H(13), H(14), H(15);
#undef H
    *o = '\0';
}

static void put_i64(struct buf *out, int64_t v)
{
    char tmp[24];
    size_t p = sizeof tmp;
    /* through uint64 so INT64_MIN negates without overflow */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--p] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--p] = '-';
    out_append(out, tmp + p, sizeof tmp - p);
}

static const char *kind_name(const struct rowenc_value *v)
{
    switch (v->kind) {
    case ROWENC_V_NULL:
        return "null";
    case ROWENC_V_BOOL:
        return "boolean";
    case ROWENC_V_DOUBLE:
        return "double";
    case ROWENC_V_INT:
    case ROWENC_V_UINT:
        return "integer";
    case ROWENC_V_OBJECT:
        return "object";
    case ROWENC_V_ARRAY:
        return "array";
    case ROWENC_V_STRING:
        return "string";
    }
    return "value";
}

static void put_u64(struct buf *out, uint64_t u);

/* A string as json-c writes it: '"', '\\', \b \f \n \r \t by name, other control
 * characters as \u00xx, '/' and everything else as it is. */
static void put_json_quoted(struct buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    buf_putc(out, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (i > run)
            buf_append(out, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
        size_t len = 2;
        switch (c) {
        case '"':
        case '\\':
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            len = 6;
        }
        buf_append(out, esc, len);
    }
    if (n > run)
        buf_append(out, s + run, n - run);
    buf_putc(out, '"');
}

void rowenc_value_text(const struct rowenc_value *v, struct buf *out)
{
    switch (v->kind) {
    case ROWENC_V_NULL:
        buf_append(out, "null", 4);
        break;
    case ROWENC_V_BOOL:
        buf_puts(out, v->i ? "true" : "false");
        break;
    case ROWENC_V_INT:
        put_i64(out, v->i);
        break;
    case ROWENC_V_UINT:
        put_u64(out, (uint64_t)v->i);
        break;
    case ROWENC_V_STRING:
        put_json_quoted(out, v->p, v->n);
        break;
    case ROWENC_V_DOUBLE:
    case ROWENC_V_ARRAY:
    case ROWENC_V_OBJECT:
        buf_append(out, v->p, v->n);
        break;
    }
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* "column "x" (bigint): cannot store string "abc"": names the column, the destination type
 * and a short excerpt of the value, which is what an operator needs to find the row. */
static int fail_value(const struct rowenc *e, size_t col, const struct rowenc_value *v,
                      const char *why, char *err, size_t errlen)
{
    struct buf t = BUF_INIT;
    rowenc_value_text(v, &t);
    /* the excerpt ends at a NUL, as the C string json-c returned did */
    int tlen = t.data ? (int)strlen(t.data) : 0;
    fail(err, errlen, "column \"%s\" (%s): cannot store %s %.*s%s%s%s", e->cols[col].name,
         typemap_pg_name(e->cols[col].type), kind_name(v), tlen > 80 ? 80 : tlen,
         t.data ? t.data : "", tlen > 80 ? "..." : "", why ? ": " : "", why ? why : "");
    buf_free(&t);
    return -1;
}

/* An integer JSON value as int64; -1 when json-c holds it as a uint64 above INT64_MAX. */
static int json_int64(struct json_object *v, int64_t *out)
{
    int64_t i = json_object_get_int64(v);
    if (i == INT64_MAX && json_object_get_uint64(v) != (uint64_t)INT64_MAX)
        return -1;
    *out = i;
    return 0;
}

/* A whole decimal integer string ("-12"), exactly. */
static int str_int64(const char *s, size_t n, int64_t *out)
{
    size_t i = s[0] == '-' || s[0] == '+';
    if (n == i || n > 21)
        return -1;
    for (size_t k = i; k < n; k++)
        if (s[k] < '0' || s[k] > '9')
            return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || (size_t)(end - s) != n)
        return -1;
    *out = v;
    return 0;
}

/* Text with each NUL written as U+FFFD: PostgreSQL text cannot hold NUL. Runs without a
 * control character (most text) are copied whole; the rest is rowenc_copy_escape's. */
static void put_text(struct rowenc *e, struct buf *out, const char *s, size_t n)
{
    if (textscan_plain_run(s, n, '\\', '\\') == n) {
        out_append(out, s, n);
        return;
    }
    const char *end = s + n, *nul;
    while ((nul = memchr(s, '\0', (size_t)(end - s))) != NULL) {
        rowenc_copy_escape(out, s, (size_t)(nul - s));
        buf_append(out, "\xef\xbf\xbd", 3);
        e->pend.nul_replaced++;
        s = nul + 1;
    }
    rowenc_copy_escape(out, s, (size_t)(end - s));
}

/* --- JSON text as PostgreSQL's jsonb input takes it ---
 * One pass, no allocation: RFC 8259 syntax as PostgreSQL's parser reads it, plus what jsonb
 * refuses beyond syntax (\u0000, lone surrogate escapes, numbers outside numeric's range)
 * and nesting beyond ROWENC_JSON_MAX_DEPTH. */

enum jcheck {
    JC_OK,  /* stored as it is */
    JC_NUL, /* valid once its NULs (raw inside strings, or \u0000) become U+FFFD */
    JC_BAD  /* stored as a JSON string of the text */
};

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int hex4(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A string from just after its opening quote; *pp ends just after the closing quote. */
static int scan_jstring(const unsigned char **pp, const unsigned char *end, bool *nul)
{
    const unsigned char *p = *pp;
    for (;;) {
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (p == end)
            return -1;
        unsigned char c = *p++;
        if (c == '"')
            break;
        if (c == '\0') { /* becomes U+FFFD, which a string may hold */
            *nul = true;
            continue;
        }
        if (c != '\\' || p == end)
            return -1; /* a raw control character, or a lone backslash at the end */
        c = *p++;
        if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
            c == 't')
            continue;
        int u = c == 'u' ? hex4(p, end) : -1;
        if (u < 0)
            return -1;
        p += 4;
        if (u == 0) {
            *nul = true;
        } else if (u >= 0xDC00 && u <= 0xDFFF) {
            return -1;
        } else if (u >= 0xD800 && u <= 0xDBFF) {
            int lo = end - p >= 6 && p[0] == '\\' && p[1] == 'u' ? hex4(p + 2, end) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            p += 6;
        }
    }
    *pp = p;
    return 0;
}

/* A number, and within numeric's limits: at most 131072 digits before the point (weight)
 * and 16383 after it (dscale, which counts the digits as written, minus the exponent). */
static int scan_jnumber(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp;
    int64_t ilen = 0, flen = 0, fzeros = 0, ex = 0;
    bool nonzero = false;
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++, ilen++;
        nonzero = true;
    } else {
        return -1;
    }
    if (p < end && *p == '.') {
        const unsigned char *f = ++p;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            if (!nonzero && *p == '0')
                fzeros++;
            else
                nonzero = true;
        }
        flen = p - f;
        if (flen == 0)
            return -1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        bool neg = p < end && *p == '-';
        if (p < end && (*p == '-' || *p == '+'))
            p++;
        if (p == end || *p < '0' || *p > '9')
            return -1;
        for (; p < end && *p >= '0' && *p <= '9'; p++)
            if (ex < 2000000000)
                ex = ex * 10 + (*p - '0');
        if (neg)
            ex = -ex;
    }
    *pp = p;
    if (ex > 1000000000 || ex < -1000000000 || flen - ex > 16383)
        return -1;
    if (nonzero && (ilen ? ilen + ex : ex - fzeros) > 131072)
        return -1;
    return 0;
}

static enum jcheck json_check(const char *text, size_t n)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + n;
    unsigned char isobj[(ROWENC_JSON_MAX_DEPTH + 7) / 8]; /* per open level: object or array */
    int depth = 0;
    bool nul = false, obj;
value:
    p = skip_ws(p, end);
    if (p == end)
        return JC_BAD;
    switch (*p) {
    case '{':
    case '[':
        if (depth == ROWENC_JSON_MAX_DEPTH)
            return JC_BAD;
        obj = *p == '{';
        if (obj)
            isobj[depth >> 3] |= (unsigned char)(1u << (depth & 7));
        else
            isobj[depth >> 3] &= (unsigned char)~(1u << (depth & 7));
        depth++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == (obj ? '}' : ']')) {
            p++;
            depth--;
            goto after;
        }
        if (obj)
            goto key;
        goto value;
    case '"':
        p++;
        if (scan_jstring(&p, end, &nul))
            return JC_BAD;
        break;
    case 't':
    case 'f':
    case 'n': {
        const char *w = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
        size_t wl = strlen(w);
        if ((size_t)(end - p) < wl || memcmp(p, w, wl) != 0)
            return JC_BAD;
        p += wl;
        break;
    }
    default:
        if (scan_jnumber(&p, end))
            return JC_BAD;
    }
after:
    p = skip_ws(p, end);
    if (depth == 0)
        return p != end ? JC_BAD : nul ? JC_NUL : JC_OK;
    if (p == end)
        return JC_BAD;
    obj = isobj[(depth - 1) >> 3] >> ((depth - 1) & 7) & 1;
    if (*p == ',') {
        p++;
        if (obj)
            goto key;
        goto value;
    }
    if (*p != (obj ? '}' : ']'))
        return JC_BAD;
    p++;
    depth--;
    goto after;
key:
    p = skip_ws(p, end);
    if (p == end || *p != '"')
        return JC_BAD;
    p++;
    if (scan_jstring(&p, end, &nul))
        return JC_BAD;
    p = skip_ws(p, end);
    if (p == end || *p != ':')
        return JC_BAD;
    p++;
    goto value;
}

/* Valid JSON text with its NULs replaced: raw ones (inside strings) by U+FFFD's bytes, the
 * escape \u0000 by \ufffd. In valid JSON every backslash starts an escape, so stepping
 * over escapes in pairs finds exactly the real \u0000. */
static void put_json_nul_fixed(struct rowenc *e, struct buf *out, const char *s, size_t n)
{
    size_t run = 0, i = 0;
    while (i < n) {
        if (s[i] == '\0') {
            rowenc_copy_escape(out, s + run, i - run);
            buf_append(out, "\xef\xbf\xbd", 3);
            e->pend.nul_replaced++;
            run = ++i;
        } else if (s[i] == '\\') {
            if (i + 5 < n && memcmp(s + i + 1, "u0000", 5) == 0) {
                rowenc_copy_escape(out, s + run, i - run);
                buf_append(out, "\\\\ufffd", 7); /* COPY doubles the backslash */
                e->pend.nul_replaced++;
                i += 6;
                run = i;
            } else {
                i += 2;
            }
        } else {
            i++;
        }
    }
    rowenc_copy_escape(out, s + run, n - run);
}

/* The text as a JSON string literal, written as COPY text (so each JSON escape's backslash
 * is doubled): '"' and '\' escaped, control characters as \b \f \n \r \t or \u00XX, and a
 * NUL as U+FFFD. */
static void put_json_string_of(struct rowenc *e, struct buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    buf_putc(out, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (i > run)
            buf_append(out, s + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', '\\', 0, 0, 0, 0, 0};
        size_t len = 3;
        switch (c) {
        case '"':
            esc[2] = '"';
            break;
        case '\\':
            esc[2] = '\\';
            esc[3] = '\\';
            len = 4;
            break;
        case '\b':
            esc[2] = 'b';
            break;
        case '\f':
            esc[2] = 'f';
            break;
        case '\n':
            esc[2] = 'n';
            break;
        case '\r':
            esc[2] = 'r';
            break;
        case '\t':
            esc[2] = 't';
            break;
        case '\0':
            memcpy(esc, "\xef\xbf\xbd", 3);
            e->pend.nul_replaced++;
            break;
        default:
            memcpy(esc + 2, "u00", 3);
            esc[5] = hex[c >> 4];
            esc[6] = hex[c & 15];
            len = 7;
        }
        buf_append(out, esc, len);
    }
    if (n > run)
        buf_append(out, s + run, n - run);
    buf_putc(out, '"');
    e->pend.json_as_string++;
}

static enum jcheck put_jsonb(struct rowenc *e, struct buf *out, const char *s, size_t n)
{
    enum jcheck r = json_check(s, n);
    switch (r) {
    case JC_OK:
        rowenc_copy_escape(out, s, n);
        break;
    case JC_NUL:
        put_json_nul_fixed(e, out, s, n);
        break;
    case JC_BAD:
        put_json_string_of(e, out, s, n);
        break;
    }
    return r;
}

static void put_u64(struct buf *out, uint64_t u)
{
    char tmp[24];
    size_t p = sizeof tmp;
    do {
        tmp[--p] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    buf_append(out, tmp + p, sizeof tmp - p);
}

/* An integer value as its decimal text (what json-c prints) and its canonical form. */
static void put_int(struct buf *out, const struct rowenc_value *v, struct canon *c)
{
    if (v->kind == ROWENC_V_INT) {
        put_i64(out, v->i);
        c->kind = CK_INT;
    } else {
        put_u64(out, (uint64_t)v->i);
        c->kind = CK_UINT;
    }
    c->i = v->i;
}

/* A double's literal too short to overflow or underflow (under 64 characters, an exponent
 * of at most two digits): its value is finite and zero only when its digits are, so the
 * checks below need no strtod. */
static bool double_plain(const char *t, size_t n)
{
    if (n >= 64)
        return false;
    const char *x = memchr(t, 'E', n);
    if (!x)
        x = memchr(t, 'e', n);
    if (!x)
        return true;
    size_t k = (size_t)(t + n - x) - 1;
    if (k && (x[1] == '-' || x[1] == '+'))
        k--;
    return k <= 2;
}

static int put_double(struct rowenc *e, size_t col, struct buf *out, const struct rowenc_value *v,
                      char *err, size_t errlen)
{
    const char *t = v->p;
    struct canon *c = &e->canon[col];
    if (!v->has_d && double_plain(t, v->n)) {
        out_append(out, t, v->n);
        *c = (struct canon){.kind = CK_NUMTEXT, .p = t, .n = v->n};
        return 0;
    }
    double d = v->has_d ? v->d : strtod(t, NULL);
    if (d != d) {
        buf_puts(out, "NaN");
        c->kind = CK_NAN;
    } else if (d > 1.7976931348623157e308 || d < -1.7976931348623157e308) {
        /* A literal infinity is stored; a finite number too large for a double (1e400)
         * would be rejected by PostgreSQL, so it is reported here, naming the column. */
        const char *s = t[0] == '-' || t[0] == '+' ? t + 1 : t;
        if (strncasecmp(s, "inf", 3) != 0)
            return fail_value(e, col, v, "out of range for double precision", err, errlen);
        buf_puts(out, d < 0 ? "-Infinity" : "Infinity");
        c->kind = d < 0 ? CK_NINF : CK_PINF;
    } else {
        if (d == 0 && strpbrk(t, "123456789") && strcspn(t, "123456789") < strcspn(t, "eE")) {
            /* a non-zero literal that underflows to 0 (1e-400): PostgreSQL refuses it as
             * out of range, like 1e400 (Druid's Double.toString never writes one) */
            return fail_value(e, col, v, "out of range for double precision", err, errlen);
        }
        size_t n = strlen(t);
        buf_append(out, t, n);
        *c = (struct canon){.kind = CK_NUMTEXT, .p = t, .n = n, .d = d};
    }
    return 0;
}

/* A timestamp or date PostgreSQL cannot hold: the row is left out (ROWENC_SKIPPED). */
static int skip_value(const struct rowenc *e, size_t col, const struct rowenc_value *v, char *err,
                      size_t errlen)
{
    fail_value(e, col, v,
               e->cols[col].type == PGT_DATE
                   ? "outside PostgreSQL's date range 4714-11-24 BC to 5874897-12-31; row skipped"
                   : "outside PostgreSQL's timestamptz range 4714-11-24 BC 00:00:00 UTC to "
                     "294276-12-31 23:59:59.999 UTC; row skipped",
               err, errlen);
    return ROWENC_SKIPPED;
}

static int put_ts(const struct rowenc *e, size_t col, struct buf *out, const struct rowenc_value *v,
                  int64_t ms, char *err, size_t errlen)
{
    if (ms < TIME_PG_TS_MIN_MS || ms > TIME_PG_TS_MAX_MS)
        return skip_value(e, col, v, err, errlen);
    char iso[TIME_ISO_MAX];
    time_format_pg_ms(ms, iso);
    buf_puts(out, iso);
    return 0;
}

/* Druid's own form of an instant in the years 1 to 9999, "2015-09-12T00:46:58.771Z", once
 * time_parse_iso_ms took it: a four-digit year (a sign or a longer year would put the first
 * '-' elsewhere), every field in range. time_format_pg_ms writes these same 24 bytes for
 * it, so the text is copied rather than printed again. */
static bool ts_druid_form(const char *s, size_t n)
{
    return n == 24 && s[4] == '-' && s[10] == 'T' && s[19] == '.' && s[23] == 'Z' &&
           memcmp(s, "0000", 4) != 0;
}

/* Druid's form with every field in range, read without time_parse_iso_ms (which takes
 * every ISO variant and costs a good part of a row): 0 and the instant, or -1 for anything
 * else (left to time_parse_iso_ms). The day of the last timestamp is kept: rows of a slice
 * come in time order, so most share their date with the row before. */
static int ts_druid_fast(struct rowenc *e, const char *s, size_t n, int64_t *ms)
{
    if (n != 24)
        return -1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        /* "YYYY-MM-DDTHH:MM:SS.sssZ" as three 8-byte words: the separators as they are, and
         * every other byte a digit: b - '0' (below '0'), b + 0x46 (above '9') or b itself
         * (above 0x7f) sets its high bit otherwise. A borrow or carry between bytes only comes
         * out of a byte that is not a digit, which fails by itself. */
#define B(k, x) ((uint64_t)(x) << (8 * (k)))
#define SEP(k) B(k, 0xff)
    static const uint64_t sep[3] = {SEP(4) | SEP(7), SEP(2) | SEP(5), SEP(0) | SEP(3) | SEP(7)};
    static const uint64_t tpl[3] = {B(4, '-') | B(7, '-'), B(2, 'T') | B(5, ':'),
                                    B(0, ':') | B(3, '.') | B(7, 'Z')};
#undef SEP
#undef B
    uint64_t w[3];
    memcpy(w, s, 24);
    for (int k = 0; k < 3; k++) {
        uint64_t dm = ~sep[k]; /* the digit positions */
        if (((w[k] ^ tpl[k]) & sep[k]) || (((w[k] - (dm & 0x3030303030303030ull)) |
                                            (w[k] + (dm & 0x4646464646464646ull)) | w[k]) &
                                           dm & 0x8080808080808080ull))
            return -1;
    }
#else
    static const unsigned char digit_at[24] = {1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1,
                                               1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0};
    if (!ts_druid_form(s, n) || s[7] != '-' || s[13] != ':' || s[16] != ':')
        return -1;
    for (int k = 0; k < 24; k++)
        if (digit_at[k] && (unsigned)(s[k] - '0') > 9)
            return -1;
#endif
    if (memcmp(s, "0000", 4) == 0)
        return -1;
#define D2(k) ((s[k] - '0') * 10 + (s[(k) + 1] - '0'))
    int h = D2(11), mi = D2(14), se = D2(17);
    int msec = (s[20] - '0') * 100 + D2(21);
    if (h > 23 || mi > 59 || se > 59)
        return -1;
    int64_t days;
    if (e->ts_day_valid && memcmp(e->ts_day_key, s, sizeof e->ts_day_key) == 0) {
        days = e->ts_day;
    } else {
        int64_t y = D2(0) * 100 + D2(2);
        int mo = D2(5), d = D2(8);
        static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap))
            return -1;
        /* days from civil (H. Hinnant), years 1..9999: no negative eras */
        int64_t yy = y - (mo <= 2);
        int64_t era = yy / 400, yoe = yy - era * 400;
        int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        days = era * 146097 + doe - 719468;
        memcpy(e->ts_day_key, s, sizeof e->ts_day_key);
        e->ts_day = days;
        e->ts_day_valid = true;
    }
#undef D2
    *ms = ((days * 24 + h) * 60 + mi) * 60000 + se * 1000 + msec;
    return 0;
}

static int put_date(const struct rowenc *e, size_t col, struct buf *out,
                    const struct rowenc_value *v, int64_t day, char *err, size_t errlen)
{
    if (day < TIME_PG_DATE_MIN_DAY || day > TIME_PG_DATE_MAX_DAY)
        return skip_value(e, col, v, err, errlen);
    char text[TIME_ISO_MAX];
    time_format_pg_date(day, text);
    buf_puts(out, text);
    return 0;
}

static int encode_value(struct rowenc *e, size_t col, const struct rowenc_value *v, struct buf *out,
                        char *err, size_t errlen)
{
    enum rowenc_kind k = v->kind;
    struct canon *c = &e->canon[col];
    int64_t i64;
    switch (e->cols[col].type) {
    case PGT_TEXT:
        /* the value class follows what Druid sent: a number stays a number, a boolean
         * the number 0 or 1, an array or object JSON */
        switch (k) {
        case ROWENC_V_STRING:
            put_text(e, out, v->p, v->n);
            *c = (struct canon){.kind = CK_STR, .p = v->p, .n = v->n};
            return 0;
        case ROWENC_V_INT:
        case ROWENC_V_UINT:
            put_int(out, v, c);
            return 0;
        case ROWENC_V_BOOL:
            c->kind = CK_INT;
            c->i = v->i ? 1 : 0;
            buf_puts(out, c->i ? "true" : "false");
            return 0;
        case ROWENC_V_DOUBLE:
            rowenc_copy_escape(out, v->p, v->n);
            *c = (struct canon){.kind = CK_NUMTEXT, .p = v->p, .n = v->n, .d = v->d};
            return 0;
        default: /* arrays and objects, as their JSON text */
            rowenc_copy_escape(out, v->p, v->n);
            *c = (struct canon){.kind = CK_JSONTEXT, .p = v->p, .n = v->n};
            return 0;
        }

    case PGT_BIGINT:
        if (k == ROWENC_V_INT) {
            i64 = v->i;
        } else if (k == ROWENC_V_UINT) {
            return fail_value(e, col, v, "out of range for bigint", err, errlen);
        } else if (k == ROWENC_V_STRING) {
            if (str_int64(v->p, v->n, &i64))
                return fail_value(e, col, v, NULL, err, errlen);
        } else if (k == ROWENC_V_BOOL) {
            /* a column widened from boolean to bigint still receives booleans */
            i64 = v->i ? 1 : 0;
        } else {
            return fail_value(e, col, v, NULL, err, errlen);
        }
        put_i64(out, i64);
        c->kind = CK_INT;
        c->i = i64;
        return 0;

    case PGT_DOUBLE:
        if (k == ROWENC_V_DOUBLE)
            return put_double(e, col, out, v, err, errlen);
        if (k == ROWENC_V_INT || k == ROWENC_V_UINT) {
            /* the integer's exact text; PostgreSQL rounds it once, as it would any input */
            put_int(out, v, c);
            return 0;
        }
        if (k == ROWENC_V_STRING) {
            /* Jackson writes non-finite doubles as these strings (reference §3.1) */
            const char *s = v->p;
            enum canon_kind ck = strcmp(s, "NaN") == 0         ? CK_NAN
                                 : strcmp(s, "Infinity") == 0  ? CK_PINF
                                 : strcmp(s, "-Infinity") == 0 ? CK_NINF
                                                               : CK_NULL;
            if (ck != CK_NULL) {
                buf_puts(out, s);
                c->kind = ck;
                return 0;
            }
        }
        return fail_value(e, col, v, NULL, err, errlen);

    case PGT_BOOLEAN:
        if (k == ROWENC_V_BOOL) {
            i64 = v->i ? 1 : 0;
        } else if (k == ROWENC_V_INT && (v->i == 0 || v->i == 1)) {
            i64 = v->i;
        } else if (k == ROWENC_V_STRING &&
                   (strcasecmp(v->p, "true") == 0 || strcasecmp(v->p, "false") == 0)) {
            i64 = (v->p[0] | 0x20) == 't';
        } else {
            return fail_value(e, col, v, NULL, err, errlen);
        }
        buf_putc(out, i64 ? 't' : 'f');
        c->kind = CK_INT; /* true is 1: a boolean widened to bigint keeps its ids */
        c->i = i64;
        return 0;

    case PGT_TIMESTAMPTZ:
        if (k == ROWENC_V_INT) {
            i64 = v->i;
        } else if (k == ROWENC_V_UINT) {
            return fail_value(e, col, v, "out of range", err, errlen);
        } else if (k == ROWENC_V_STRING) {
            if (ts_druid_fast(e, v->p, v->n, &i64) == 0) {
                /* Druid's canonical form: validated, passed through as it is */
                out_append(out, v->p, v->n);
                c->kind = CK_TS;
                c->i = i64;
                return 0;
            }
            if (time_parse_iso_ms(v->p, &i64))
                return fail_value(e, col, v, "not an ISO-8601 timestamp", err, errlen);
            if (ts_druid_form(v->p, v->n)) {
                buf_append(out, v->p, v->n);
                c->kind = CK_TS;
                c->i = i64;
                return 0;
            }
        } else {
            return fail_value(e, col, v, NULL, err, errlen);
        }
        c->kind = CK_TS;
        c->i = i64;
        return put_ts(e, col, out, v, i64, err, errlen);

    case PGT_DATE: {
        int64_t day;
        if (k == ROWENC_V_INT) {
            i64 = v->i;
            day = i64 / 86400000 - (i64 % 86400000 < 0); /* millis -> the UTC calendar day */
        } else if (k == ROWENC_V_UINT) {
            return fail_value(e, col, v, "out of range", err, errlen);
        } else if (k == ROWENC_V_STRING) {
            /* Druid prints a DATE as a timestamp in sqlTimeZone: the date written before
             * the time is the calendar date whatever the offset (reference §3.1). */
            if (time_parse_iso_ms(v->p, &i64) || time_parse_iso_date(v->p, &day))
                return fail_value(e, col, v, "not an ISO-8601 timestamp", err, errlen);
        } else {
            return fail_value(e, col, v, NULL, err, errlen);
        }
        int rc = put_date(e, col, out, v, day, err, errlen);
        /* the instant of the day's UTC midnight: a date widened to timestamptz, printed by
         * Druid at midnight UTC, keeps its ids (inside PostgreSQL's range, no overflow) */
        c->kind = CK_TS;
        c->i = rc == 0 ? day * 86400000 : 0;
        return rc;
    }

    case PGT_JSONB: {
        /* Druid sends ARRAY and COMPLEX<json> values as JSON text inside a string; real
         * JSON values (sqlStringifyArrays:false) are checked as their text too. */
        const char *t = v->p;
        size_t n = v->n;
        if (k == ROWENC_V_BOOL || k == ROWENC_V_INT || k == ROWENC_V_UINT) {
            struct buf tb = {e->num[col], 0, sizeof e->num[col]}; /* never grows: 20 bytes */
            tb.data[0] = '\0';
            rowenc_value_text(v, &tb);
            t = e->num[col];
            n = tb.len;
        }
        enum jcheck r = put_jsonb(e, out, t, n);
        c->kind = r == JC_BAD ? CK_JSONSTR : CK_JSON;
        c->p = t;
        c->n = n;
        return 0;
    }
    }
    return fail_value(e, col, v, "unknown column type", err, errlen);
}

static int inc_value(const struct rowenc *e, const struct rowenc_value *v, int64_t *ms, char *err,
                     size_t errlen)
{
    if (v->kind == ROWENC_V_NULL) {
        *ms = INT64_MIN;
        return 0;
    }
    size_t col = (size_t)e->inc_col;
    if (e->cols[col].type == PGT_TIMESTAMPTZ && e->canon[col].kind == CK_TS) {
        *ms = e->canon[col].i; /* parsed once, by encode_value, the same way */
        return 0;
    }
    switch (v->kind) {
    case ROWENC_V_INT:
        *ms = v->i;
        return 0;
    case ROWENC_V_STRING:
        if (time_parse_iso_ms(v->p, ms) == 0 || str_int64(v->p, v->n, ms) == 0)
            return 0;
        break;
    default:
        break;
    }
    return fail_value(e, col, v, "not usable as the incremental column", err, errlen);
}

/* --- the id hash input (scheme 2, rowenc.h) --- */

static __attribute__((noinline)) void hw_grow(struct hashw *h, size_t k)
{
    size_t need = h->n + k + HW_SLACK, cap = h->cap ? h->cap : 1024;
    while (cap < need)
        cap *= 2;
    char *b = realloc(h->b, cap);
    if (!b)
        abort(); /* same policy as buf: no progress is possible without memory */
    h->b = b;
    h->cap = cap;
}

/* Room for k more bytes (and HW_SLACK): the writes after it need no check. */
static inline void hw_room(struct hashw *h, size_t k)
{
    if (h->cap - h->n < k + HW_SLACK)
        hw_grow(h, k);
}

static inline void hw_put(struct hashw *h, const void *p, size_t n)
{
    hw_room(h, n);
    textscan_copy(h->b + h->n, p, n);
    h->n += n;
}

static inline void hw_byte(struct hashw *h, unsigned char c)
{
    hw_room(h, 1);
    h->b[h->n++] = (char)c;
}

/* Unsigned LEB128: 7 bits a byte, low first, the high bit set on all but the last. */
/* hw_varint into room already made (at most 10 bytes); returns the end. */
static inline char *hw_varint_at(char *o, uint64_t v)
{
    while (v >= 0x80) {
        *o++ = (char)((v & 0x7f) | 0x80);
        v >>= 7;
    }
    *o++ = (char)v;
    return o;
}

static void hw_varint(struct hashw *h, uint64_t v)
{
    hw_room(h, 10);
    h->n = (size_t)(hw_varint_at(h->b + h->n, v) - h->b);
}

/* Decimal text of v into t (at least 21 bytes); returns its length. */
static size_t fmt_i64(char *t, int64_t v)
{
    char tmp[24];
    size_t p = sizeof tmp, n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--p] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        t[n++] = '-';
    memcpy(t + n, tmp + p, sizeof tmp - p);
    return n + sizeof tmp - p;
}

/* A number as D x 10^X: the sign, D's digits (two runs of the text: the integer part and
 * the fraction, either may be empty), X. Both runs empty means zero. */
struct dec {
    bool neg;
    const char *a0, *a1, *b0, *b1;
    int64_t x;
};

/* Exponents written beyond this are clamped to it: such a number is far outside any
 * double or bigint (it only reaches text columns, as text) and stays a number. */
#define DEC_EXP_CLAMP 1000000000000000LL

/* A decimal literal as json-c's tokener accepts one: [+-] digits [. digits] [(e|E) [+-]
 * digits], either digit run of the mantissa may be empty but not both. -1 otherwise. */
static int dec_parse(const char *s, size_t n, struct dec *d)
{
    const char *p = s, *end = s + n;
    d->neg = false;
    if (p < end && (*p == '-' || *p == '+'))
        d->neg = *p++ == '-';
    const char *i0 = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    const char *i1 = p, *f0 = p, *f1 = p;
    if (p < end && *p == '.') {
        f0 = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        f1 = p;
    }
    if (i0 == i1 && f0 == f1)
        return -1;
    int64_t ex = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        bool eneg = p < end && *p == '-';
        if (p < end && (*p == '-' || *p == '+'))
            p++;
        const char *e0 = p;
        for (; p < end && *p >= '0' && *p <= '9'; p++)
            if (ex <= DEC_EXP_CLAMP)
                ex = ex * 10 + (*p - '0');
        if (p == e0)
            return -1;
        if (ex > DEC_EXP_CLAMP)
            ex = DEC_EXP_CLAMP;
        if (eneg)
            ex = -ex;
    }
    if (p != end)
        return -1;
    int64_t x = ex - (int64_t)(f1 - f0);
    while (i0 < i1 && *i0 == '0')
        i0++;
    if (i0 == i1) /* no integer digits: the fraction's leading zeros are not significant */
        while (f0 < f1 && *f0 == '0')
            f0++;
    while (f1 > f0 && f1[-1] == '0')
        f1--, x++;
    if (f1 == f0)
        while (i1 > i0 && i1[-1] == '0')
            i1--, x++;
    *d = (struct dec){d->neg, i0, i1, f0, f1, x};
    return 0;
}

/* tag, length, "[-]DeX" ("0" for zero, whatever its sign). */
static void hw_dec(struct hashw *h, unsigned char tag, const struct dec *d)
{
    hw_byte(h, tag);
    if (d->a0 == d->a1 && d->b0 == d->b1) {
        hw_varint(h, 1);
        hw_byte(h, '0');
        return;
    }
    char xt[24];
    xt[0] = 'e';
    size_t xn = 1 + fmt_i64(xt + 1, d->x);
    size_t na = (size_t)(d->a1 - d->a0), nb = (size_t)(d->b1 - d->b0);
    hw_varint(h, d->neg + na + nb + xn);
    if (d->neg)
        hw_byte(h, '-');
    hw_put(h, d->a0, na);
    hw_put(h, d->b0, nb);
    hw_put(h, xt, xn);
}

/* A number written as text (a double's literal): exactly its decimal value; the literals
 * that are not decimal are NaN and the infinities (or a double json-c made without text,
 * written here as 17 significant digits, which read back as the same double). */
static void hw_numtext(struct hashw *h, const char *s, size_t n, double dv)
{
    struct dec d;
    if (dec_parse(s, n, &d) == 0) {
        hw_dec(h, TAG_NUMBER, &d);
    } else if (dv != dv) {
        hw_byte(h, TAG_NAN);
    } else if (isinf(dv)) {
        hw_byte(h, dv < 0 ? TAG_NINF : TAG_PINF);
    } else {
        char t[40];
        int k = snprintf(t, sizeof t, "%.17g", dv);
        if (k > 0 && (size_t)k < sizeof t && dec_parse(t, (size_t)k, &d) == 0) {
            hw_dec(h, TAG_NUMBER, &d);
        } else { /* not reached: %.17g of a finite double is decimal */
            hw_byte(h, TAG_STRING);
            hw_varint(h, n);
            hw_put(h, s, n);
        }
    }
}

/* A JSON string from just after its opening quote: its decoded bytes are counted (h NULL)
 * or hashed. Returns the position after the closing quote. Escapes decode to UTF-8, a
 * surrogate pair to its code point, \u0000 to a NUL byte. */
static const unsigned char *json_str_bytes(struct hashw *h, const unsigned char *p,
                                           const unsigned char *end, size_t *len)
{
    size_t n = 0;
    while (p < end && *p != '"') {
        if (*p != '\\') {
            const unsigned char *q = p;
            while (p < end && *p != '"' && *p != '\\')
                p++;
            if (h)
                hw_put(h, q, (size_t)(p - q));
            n += (size_t)(p - q);
            continue;
        }
        if (++p == end)
            break;
        unsigned char c = *p++, o[4];
        size_t k = 1;
        uint32_t cp;
        switch (c) {
        case 'b':
            o[0] = '\b';
            break;
        case 'f':
            o[0] = '\f';
            break;
        case 'n':
            o[0] = '\n';
            break;
        case 'r':
            o[0] = '\r';
            break;
        case 't':
            o[0] = '\t';
            break;
        case 'u': {
            int u = hex4(p, end);
            if (u < 0) {
                cp = 0xFFFD; /* not reached in checked JSON */
            } else {
                p += 4;
                cp = (uint32_t)u;
                int lo = u >= 0xD800 && u <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u'
                             ? hex4(p + 2, end)
                             : -1;
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + (((uint32_t)u - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
                    p += 6;
                }
            }
            if (cp < 0x80) {
                o[0] = (unsigned char)cp;
            } else if (cp < 0x800) {
                o[0] = (unsigned char)(0xC0 | cp >> 6);
                o[1] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 2;
            } else if (cp < 0x10000) {
                o[0] = (unsigned char)(0xE0 | cp >> 12);
                o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
                o[2] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 3;
            } else {
                o[0] = (unsigned char)(0xF0 | cp >> 18);
                o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
                o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
                o[3] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 4;
            }
            break;
        }
        default: /* '"', '\\', '/' */
            o[0] = c;
        }
        if (h)
            hw_put(h, o, k);
        n += k;
    }
    *len = n;
    return p < end ? p + 1 : end;
}

/* JSON text that json_check accepted, as a stream of items: { } [ ] as themselves, a
 * string as 's' length bytes, a number as 'n' length "[-]DeX", true 't', false 'f', null
 * 'z'. Whitespace, commas and colons carry nothing a valid text's items do not imply. */
static void hw_json(struct hashw *h, const char *text, size_t n)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        switch (c) {
        case '{':
        case '}':
        case '[':
        case ']':
            hw_byte(h, c);
            p++;
            break;
        case ' ':
        case '\t':
        case '\n':
        case '\r':
        case ',':
        case ':':
            p++;
            break;
        case '"': {
            size_t len;
            json_str_bytes(NULL, p + 1, end, &len);
            hw_byte(h, 's');
            hw_varint(h, len);
            p = json_str_bytes(h, p + 1, end, &len);
            break;
        }
        case 't':
        case 'f':
        case 'n': {
            size_t w = c == 'f' ? 5 : 4;
            hw_byte(h, c == 'n' ? 'z' : c);
            p += (size_t)(end - p) < w ? (size_t)(end - p) : w;
            break;
        }
        default: {
            const unsigned char *q = p;
            while (q < end && ((*q >= '0' && *q <= '9') || *q == '-' || *q == '+' || *q == '.' ||
                               *q == 'e' || *q == 'E'))
                q++;
            struct dec d;
            if (q > p && dec_parse((const char *)p, (size_t)(q - p), &d) == 0) {
                hw_dec(h, 'n', &d);
            } else { /* not reached in checked JSON: the byte as it is, and on */
                q = q > p ? q : p + 1;
                hw_put(h, p, (size_t)(q - p));
            }
            p = q;
        }
        }
    }
}

/* u as 8 bytes big-endian at o; returns the end. */
static inline char *put_be64(char *o, uint64_t u)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    u = __builtin_bswap64(u);
    memcpy(o, &u, 8);
#else
    for (int i = 0; i < 8; i++)
        o[i] = (char)(u >> (56 - 8 * i));
#endif
    return o + 8;
}

/* hw_int's bytes into room already made (at most 26): tag 'N', the length, "[-]DeX". */
static char *hw_int_at(char *o, bool neg, uint64_t u)
{
    *o++ = TAG_NUMBER;
    if (u == 0) {
        *o++ = 1;
        *o++ = '0';
        return o;
    }
    unsigned x = 0;
    while (u % 10 == 0)
        u /= 10, x++;
    char t[20];
    size_t nd = 0;
    for (; u; u /= 10)
        t[sizeof t - ++nd] = (char)('0' + u % 10);
    *o++ = (char)(neg + nd + (x >= 10 ? 3 : 2)); /* under 0x80: one varint byte */
    if (neg)
        *o++ = '-';
    o = textscan_copy(o, t + sizeof t - nd, nd);
    *o++ = 'e';
    if (x >= 10)
        *o++ = (char)('0' + x / 10);
    *o++ = (char)('0' + x % 10);
    return o;
}

/* *sure: room was made for every common class of the row at once (put_id), until a field
 * of another class writes with its own checks. */
static void hash_field(struct rowenc *e, size_t col, bool *sure)
{
    struct hashw *h = &e->hw;
    const struct canon *c = &e->canon[col];
    size_t nl = e->name_len[col] + 1; /* the name and its NUL */
    /* the common classes are written in one go, into room made once */
    switch (c->kind) {
    case CK_STR: {
        if (!*sure)
            hw_room(h, nl + 11 + c->n);
        char *o = textscan_copy(h->b + h->n, e->cols[col].name, nl);
        *o++ = TAG_STRING;
        o = hw_varint_at(o, c->n);
        o = textscan_copy(o, c->p, c->n);
        h->n = (size_t)(o - h->b);
        return;
    }
    case CK_INTTEXT: {
        /* the digits as they are: at most 20 and a sign, no leading zero, not "-0" */
        if (!*sure)
            hw_room(h, nl + 32);
        char *o = textscan_copy(h->b + h->n, e->cols[col].name, nl);
        const char *d0 = c->p, *d1 = c->p + c->n;
        bool neg = *d0 == '-';
        d0 += neg;
        *o++ = TAG_NUMBER;
        if (d1 - d0 == 1 && *d0 == '0') {
            *o++ = 1;
            *o++ = '0';
        } else {
            unsigned x = 0;
            while (d1[-1] == '0')
                d1--, x++;
            size_t nd = (size_t)(d1 - d0);
            *o++ = (char)(neg + nd + (x >= 10 ? 3 : 2)); /* under 0x80: one varint byte */
            if (neg)
                *o++ = '-';
            o = textscan_copy(o, d0, nd);
            *o++ = 'e';
            if (x >= 10)
                *o++ = (char)('0' + x / 10);
            *o++ = (char)('0' + x % 10);
        }
        h->n = (size_t)(o - h->b);
        return;
    }
    case CK_INT:
    case CK_UINT: {
        if (!*sure)
            hw_room(h, nl + 32);
        char *o = textscan_copy(h->b + h->n, e->cols[col].name, nl);
        bool neg = c->kind == CK_INT && c->i < 0;
        o = hw_int_at(o, neg, neg ? (uint64_t)0 - (uint64_t)c->i : (uint64_t)c->i);
        h->n = (size_t)(o - h->b);
        return;
    }
    case CK_TS: {
        if (!*sure)
            hw_room(h, nl + 9);
        char *o = textscan_copy(h->b + h->n, e->cols[col].name, nl);
        uint64_t u = (uint64_t)c->i;
        *o++ = TAG_TIME;
        o = put_be64(o, u);
        h->n = (size_t)(o - h->b);
        return;
    }
    default:
        break;
    }
    *sure = false;
    hw_put(h, e->cols[col].name, nl);
    switch (c->kind) {
    case CK_NULL: /* not reached: left out by the caller */
        break;
    case CK_INT:
    case CK_INTTEXT:
    case CK_UINT:
    case CK_TS:
    case CK_STR: /* not reached: written above */
        break;
    case CK_NUMTEXT:
        hw_numtext(h, c->p, c->n, c->d);
        break;
    case CK_NAN:
        hw_byte(h, TAG_NAN);
        break;
    case CK_PINF:
        hw_byte(h, TAG_PINF);
        break;
    case CK_NINF:
        hw_byte(h, TAG_NINF);
        break;
    case CK_JSONTEXT:
        if (json_check(c->p, c->n) != JC_BAD) {
            hw_byte(h, TAG_JSON);
            hw_json(h, c->p, c->n);
        } else { /* not JSON PostgreSQL would take (json-c wrote NaN): a string */
            hw_byte(h, TAG_STRING);
            hw_varint(h, c->n);
            hw_put(h, c->p, c->n);
        }
        break;
    case CK_JSON:
        hw_byte(h, TAG_JSON);
        hw_json(h, c->p, c->n);
        break;
    case CK_JSONSTR:
        hw_byte(h, TAG_JSON);
        hw_byte(h, 's');
        hw_varint(h, c->n);
        hw_put(h, c->p, c->n);
        break;
    }
}

/* Occurrence number of a content hash in this slice: 0 for its first row, then 1, 2, ... */
static uint64_t occ_next(struct rowenc *e, XXH128_hash_t h)
{
    if (e->occ_used * 2 >= e->occ_cap) {
        size_t ncap = e->occ_cap ? e->occ_cap * 2 : 16;
        struct occ_slot *n = calloc(ncap, sizeof *n);
        if (!n)
            abort(); /* same policy as buf: no progress is possible without memory */
        for (size_t i = 0; i < e->occ_cap; i++) {
            if (!e->occ[i].seen)
                continue;
            size_t j = (size_t)e->occ[i].h.low64 & (ncap - 1);
            while (n[j].seen)
                j = (j + 1) & (ncap - 1);
            n[j] = e->occ[i];
        }
        free(e->occ);
        e->occ = n;
        e->occ_cap = ncap;
        e->occ_at_valid = e->occ_used == 0; /* else the recorded slots moved */
    }
    size_t j = (size_t)h.low64 & (e->occ_cap - 1);
    while (e->occ[j].seen) {
        if (XXH128_isEqual(e->occ[j].h, h))
            return e->occ[j].seen++;
        j = (j + 1) & (e->occ_cap - 1);
    }
    e->occ[j].h = h;
    e->occ[j].seen = 1;
    if (e->occ_used < OCC_LIST)
        e->occ_at[e->occ_used] = j;
    e->occ_used++;
    return 0;
}

/* room: at least the sum over fields of the value's length and 32, which with the names
 * bounds what the common classes write (hash_field). */
static void put_id(struct rowenc *e, struct buf *out, size_t room)
{
    /* Content hash over non-NULL fields in name order: a new all-NULL column, or a
     * reordering of columns, leaves every id unchanged. */
    struct hashw *h = &e->hw;
    h->n = 0;
    hw_room(h, e->names_total + room);
    bool sure = true;
    for (size_t k = 0; k < e->ncols; k++) {
        size_t c = e->by_name[k];
        if (e->canon[c].kind != CK_NULL)
            hash_field(e, c, &sure);
    }
    XXH128_hash_t content;
    if (e->wide && h->n > 240) { /* (shorter inputs take XXH3's scalar paths anyway) */
        uint64_t w[2];
        e->wide(h->b, h->n, w);
        content.low64 = w[0];
        content.high64 = w[1];
    } else {
        content = XXH3_128bits(h->b ? h->b : "", h->n);
    }
    if (h->cap > HW_KEEP) {
        free(h->b);
        *h = (struct hashw){NULL, 0, 0};
    }
    uint64_t n = occ_next(e, content);

    uint8_t in[24];
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, content);
    memcpy(in, canon.digest, 16);
    put_be64((char *)in + 16, n);
    XXH128_canonicalFromHash(&canon, XXH3_128bits(in, sizeof in));
    uint8_t *id = canon.digest;
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x80); /* version 8: custom (RFC 9562) */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80); /* variant 10 */
    char s[37];
    rowenc_format_uuid(id, s);
    out_append(out, s, 36);
}

/* A json-c value as rowenc_encode_values takes it (texts as json-c writes them). */
static void from_json(struct json_object *o, struct rowenc_value *v)
{
    memset(v, 0, sizeof *v);
    switch (json_object_get_type(o)) {
    case json_type_null:
        v->kind = ROWENC_V_NULL;
        break;
    case json_type_boolean:
        v->kind = ROWENC_V_BOOL;
        v->i = json_object_get_boolean(o) ? 1 : 0;
        break;
    case json_type_int:
        if (json_int64(o, &v->i) == 0) {
            v->kind = ROWENC_V_INT;
        } else {
            v->kind = ROWENC_V_UINT;
            v->i = (int64_t)json_object_get_uint64(o);
        }
        break;
    case json_type_double:
        v->kind = ROWENC_V_DOUBLE;
        v->p = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        v->n = strlen(v->p);
        v->d = json_object_get_double(o);
        v->has_d = true;
        break;
    case json_type_string:
        v->kind = ROWENC_V_STRING;
        v->p = json_object_get_string(o);
        v->n = (size_t)json_object_get_string_len(o);
        break;
    case json_type_array:
    case json_type_object:
        v->kind = json_object_is_type(o, json_type_array) ? ROWENC_V_ARRAY : ROWENC_V_OBJECT;
        v->p = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE);
        v->n = strlen(v->p);
        break;
    }
}

int rowenc_encode(struct rowenc *e, struct json_object *row, struct buf *out, int64_t *inc_ms,
                  char *err, size_t errlen)
{
    if (!json_object_is_type(row, json_type_array)) {
        struct rowenc_value rv;
        from_json(row, &rv);
        return fail(err, errlen, "row is %s, not a JSON array", row ? kind_name(&rv) : "null");
    }
    size_t n = json_object_array_length(row);
    if (n != e->ncols)
        return rowenc_encode_values(e, NULL, n, out, inc_ms, err, errlen);
    for (size_t i = 0; i < n; i++)
        from_json(json_object_array_get_idx(row, i), &e->jvals[i]);
    return rowenc_encode_values(e, e->jvals, n, out, inc_ms, err, errlen);
}

/* The end of a row whose fields are in out up to o (room: as put_id takes it): the id,
 * the newline, the counts. */
static int finish_row(struct rowenc *e, struct buf *out, char *o, size_t room, int64_t inc,
                      int64_t *inc_ms)
{
    out->len = (size_t)(o - out->data);
    out_room(out, 40);
    if (e->with_id) {
        if (e->ncols)
            out->data[out->len++] = '\t';
        put_id(e, out, room);
    }
    out->data[out->len++] = '\n';
    out->data[out->len] = '\0';
    e->rows++;
    e->stats.nul_replaced += e->pend.nul_replaced;
    e->stats.json_as_string += e->pend.json_as_string;
    if (inc_ms)
        *inc_ms = inc;
    return ROWENC_OK;
}

int rowenc_encode_values(struct rowenc *e, const struct rowenc_value *vals, size_t n,
                         struct buf *out, int64_t *inc_ms, char *err, size_t errlen)
{
    if (e->group_col >= 0) {
        if ((size_t)e->group_col < n && vals)
            group_value(e, &vals[e->group_col]);
        else
            group_check(e, "", 0);
    }
    if (n != e->ncols)
        return fail(err, errlen, "row has %zu values for %zu columns%s%s%s", n, e->ncols,
                    e->ncols ? " (first column \"" : "", e->ncols ? e->cols[0].name : "",
                    e->ncols ? "\")" : "");

    /* Written straight into out (no second copy on the hot path) and cut back on error. */
    size_t saved = out->len;
    int64_t inc = INT64_MIN;
    int rc = -1;
    memset(&e->pend, 0, sizeof e->pend);
    /* Room for every field taking the fast path below (at most its text, a tab and 31 more
     * bytes), made once for the row and again after a field written by encode_value (which
     * may move the buffer): the cursor o runs over fields without a check or a store. */
    size_t room = 40;
    for (size_t i = 0; i < n; i++)
        room += vals[i].n + 32;
    out_room(out, room);
    char *o = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        const struct rowenc_value *v = &vals[i];
        struct canon *c = &e->canon[i];
        /* The common values (NULL, a plain string in a text column, an integer in a bigint
         * or text column, Druid's own timestamp form) are written here through the cursor;
         * the rest by encode_value. */
        if (i)
            *o++ = '\t';
        enum pgtype t = e->cols[i].type;
        int64_t ms;
        if (v->kind == ROWENC_V_NULL) {
            c->kind = CK_NULL;
            *o++ = '\\';
            *o++ = 'N';
        } else if (v->kind == ROWENC_V_STRING && v->plain && t == PGT_TEXT) {
            o = textscan_copy(o, v->p, v->n);
            c->kind = CK_STR; /* all hash_field reads of a string */
            c->p = v->p;
            c->n = v->n;
        } else if (v->kind == ROWENC_V_INT && (t == PGT_BIGINT || t == PGT_TEXT)) {
            if (v->p) { /* the decoder's text of it, which is what fmt_i64 would write */
                o = textscan_copy(o, v->p, v->n);
                c->kind = CK_INTTEXT;
                c->p = v->p;
                c->n = v->n;
            } else {
                o += fmt_i64(o, v->i);
                c->kind = CK_INT;
            }
            c->i = v->i;
        } else if (v->kind == ROWENC_V_STRING && t == PGT_TIMESTAMPTZ &&
                   ts_druid_fast(e, v->p, v->n, &ms) == 0) {
            /* Druid's canonical form: validated, passed through as it is */
            o = textscan_copy(o, v->p, v->n);
            c->kind = CK_TS;
            c->i = ms;
        } else {
            out->len = (size_t)(o - out->data);
            if ((rc = encode_value(e, i, v, out, err, errlen)) != 0)
                goto undo;
            out_room(out, room);
            o = out->data + out->len;
        }
        if ((int)i == e->inc_col && (rc = inc_value(e, v, &inc, err, errlen)) != 0)
            goto undo;
    }
    return finish_row(e, out, o, room, inc, inc_ms);
undo:
    out->len = saved;
    if (out->data)
        out->data[saved] = '\0';
    if (rc == ROWENC_SKIPPED) {
        e->stats.rows_skipped++;
        if (inc_ms)
            *inc_ms = INT64_MIN; /* a row not stored moves no cursor */
        return ROWENC_SKIPPED;
    }
    return -1;
}

/* Stay off the fused path for the rest of this encoder's life once most lines leave it (a
 * datasource with a double column, say): a line left costs its scan twice. */
static bool line_worth_trying(const struct rowenc *e)
{
    return e->line_slow <= 64 || e->line_slow * 8 <= e->line_ok;
}

int rowenc_encode_line(struct rowenc *e, const char *line, size_t len, struct buf *out,
                       int64_t *inc_ms)
{
    size_t ncols = e->ncols;
    if (!line_worth_trying(e))
        return ROWENC_LINE_SLOW;
    if (ncols == 0 || len < 2 || line[0] != '[' || line[len - 1] != ']') {
        e->line_slow++;
        return ROWENC_LINE_SLOW;
    }
    const char *p = line + 1, *end = line + len - 1; /* end: the closing bracket */
    /* COPY text is never longer than the JSON text here: a string loses its quotes, null
     * becomes \N, an integer stays, a tab replaces each comma */
    size_t saved = out->len, room = len + 40 + 32 * ncols;
    out_room(out, len + 40);
    char *o = out->data + out->len;
    int64_t inc = INT64_MIN;
    const char *gp = "";
    size_t gn = 0;
    for (size_t i = 0; i < ncols; i++) {
        struct canon *c = &e->canon[i];
        enum pgtype t = e->cols[i].type;
        if (i) {
            if (p == end || *p != ',')
                goto slow;
            p++;
            *o++ = '\t';
        }
        if (p == end)
            goto slow;
        const char *s = p;
        if (*p == '"') {
            s = ++p;
            p += textscan_plain_run(p, (size_t)(end - p), '"', '\\');
            if (p == end || *p != '"')
                goto slow; /* an escape or a control character: rowdec's */
            size_t n = (size_t)(p - s);
            p++;
            int64_t ms;
            if (t == PGT_TEXT) {
                c->kind = CK_STR;
            } else if (t == PGT_TIMESTAMPTZ && ts_druid_fast(e, s, n, &ms) == 0) {
                c->kind = CK_TS; /* Druid's canonical form: validated, passed through */
                c->i = ms;
            } else {
                goto slow;
            }
            o = textscan_copy(o, s, n);
            c->p = s;
            c->n = n;
        } else if (*p == 'n') {
            if (end - p < 4 || memcmp(p, "null", 4) != 0)
                goto slow;
            p += 4;
            *o++ = '\\';
            *o++ = 'N';
            c->kind = CK_NULL;
            c->p = "";
            c->n = 0;
        } else {
            /* an integer of up to 18 digits as Druid writes it (no leading zero, not -0):
             * its text is the one json-c would print */
            if (t != PGT_BIGINT && t != PGT_TEXT)
                goto slow;
            bool neg = *p == '-';
            p += neg;
            const char *d0 = p;
            uint64_t u = 0;
            while (p < end && (unsigned)(*p - '0') < 10)
                u = u * 10 + (unsigned)(*p++ - '0');
            size_t nd = (size_t)(p - d0);
            if (nd == 0 || nd > 18 || (*d0 == '0' && nd > 1) || (neg && u == 0) ||
                (p < end && (*p == '.' || *p == 'e' || *p == 'E')))
                goto slow;
            o = textscan_copy(o, s, (size_t)(p - s));
            c->kind = CK_INTTEXT;
            c->p = s;
            c->n = (size_t)(p - s);
            c->i = neg ? -(int64_t)u : (int64_t)u;
        }
        if ((int)i == e->inc_col) {
            if (c->kind == CK_TS || c->kind == CK_INTTEXT)
                inc = c->i;
            else if (c->kind != CK_NULL)
                goto slow; /* a string read as a time: rowenc_encode_values */
        }
        if ((int)i == e->group_col) {
            gp = c->p;
            gn = c->n;
        }
    }
    if (p != end)
        goto slow;
    if (e->group_col >= 0)
        group_check(e, gp, gn);
    memset(&e->pend, 0, sizeof e->pend);
    e->line_ok++;
    return finish_row(e, out, o, room, inc, inc_ms);
slow:
    out->len = saved;
    out->data[saved] = '\0';
    e->line_slow++;
    return ROWENC_LINE_SLOW;
}
