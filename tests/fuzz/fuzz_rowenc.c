/* fuzz_rowenc: libFuzzer target for row decoding (json-c on one response line, then
 * common/rowenc into COPY text).
 *
 * Input: a column spec line, then result lines as they come out of the line splitter.
 *   spec: one byte per column: t text, b bigint, d double, o boolean, T timestamptz, D date,
 *         j jsonb; any other byte is a column of type (byte % 7), so every pgtype is reached.
 *         '*' makes the next column the incremental one, '-' turns the row id off, '=' fixes
 *         the column count to the spec (otherwise it follows the first row, types repeated).
 *   rows: each line is parsed as druid_client.c does (json_tokener_parse_ex on the line,
 *         the whole line, a JSON array) and encoded; an empty line starts a new slice.
 *
 * What a successful encode must give (PostgreSQL COPY text, as the sink sends it): one line,
 * exactly one '\n' at its end, one tab between fields, no raw control bytes, only the escapes
 * COPY reads, \N exactly for JSON null, text strings that read back as the same bytes (each
 * NUL as U+FFFD, rowenc.h), integers that read back as the same value, doubles PostgreSQL can
 * read, jsonb fields PostgreSQL's jsonb input takes (a string that already is such JSON kept
 * as it is), and a distinct well-formed UUID per row of a slice. A failed or skipped row
 * leaves the output as it was, and a failure says why. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "buf.h"
#include "druid_client.h"
#include "rowenc.h"
#include "typemap.h"

/* The tokener depth druid_client.c uses for a line */
#define ROW_JSON_DEPTH (DRUID_JSON_DEPTH + 2)
#define MAX_COLS 64
#define MAX_IDS 512 /* ids checked for uniqueness per slice */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const enum pgtype all_types[] = {PGT_TEXT,        PGT_BIGINT, PGT_DOUBLE, PGT_BOOLEAN,
                                        PGT_TIMESTAMPTZ, PGT_DATE,   PGT_JSONB};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

struct spec {
    enum pgtype type[MAX_COLS];
    size_t ntypes;
    int inc_col;
    bool with_id;
    bool fixed;
};

static void parse_spec(const uint8_t *p, size_t n, struct spec *s)
{
    memset(s, 0, sizeof *s);
    s->inc_col = -1;
    s->with_id = true;
    bool inc_next = false;
    for (size_t i = 0; i < n && s->ntypes < MAX_COLS; i++) {
        enum pgtype t;
        switch (p[i]) {
        case '*':
            inc_next = true;
            continue;
        case '-':
            s->with_id = false;
            continue;
        case '=':
            s->fixed = true;
            continue;
        case 't':
            t = PGT_TEXT;
            break;
        case 'b':
            t = PGT_BIGINT;
            break;
        case 'd':
            t = PGT_DOUBLE;
            break;
        case 'o':
            t = PGT_BOOLEAN;
            break;
        case 'T':
            t = PGT_TIMESTAMPTZ;
            break;
        case 'D':
            t = PGT_DATE;
            break;
        case 'j':
            t = PGT_JSONB;
            break;
        default:
            t = all_types[p[i] % N_TYPES];
        }
        if (inc_next)
            s->inc_col = (int)s->ntypes;
        inc_next = false;
        s->type[s->ntypes++] = t;
    }
}

/* COPY text field -> bytes, by PostgreSQL's rules for what rowenc writes. -1 on an escape
 * COPY would read differently (or not at all). */
static int copy_unescape(const char *f, size_t n, struct buf *out)
{
    buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        if (f[i] != '\\') {
            buf_putc(out, f[i]);
            continue;
        }
        if (++i == n)
            return -1;
        char c;
        switch (f[i]) {
        case '\\':
            c = '\\';
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'v':
            c = '\v';
            break;
        case '0':
        case '1':
        case '2':
        case '3':
            /* exactly three octal digits, so that a following digit is not swallowed */
            if (i + 2 >= n || f[i + 1] < '0' || f[i + 1] > '7' || f[i + 2] < '0' || f[i + 2] > '7')
                return -1;
            c = (char)(((f[i] - '0') << 6) | ((f[i + 1] - '0') << 3) | (f[i + 2] - '0'));
            i += 2;
            break;
        default:
            return -1; /* \N inside a field, \x.., or anything else */
        }
        buf_putc(out, c);
    }
    return 0;
}

static bool is_uuid8(const char *s, size_t n)
{
    if (n != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    /* version 8, RFC 9562 variant */
    return s[14] == '8' && (s[19] == '8' || s[19] == '9' || s[19] == 'a' || s[19] == 'b');
}

/* Would PostgreSQL's float8in take this text? It uses strtod, takes these spellings, and
 * refuses a value strtod reports out of range that came out as 0 or infinite ("1e-400",
 * "1e400": "out of range for type double precision"); subnormals are taken. */
static bool pg_float8_ok(const char *s)
{
    if (!strcmp(s, "NaN") || !strcmp(s, "Infinity") || !strcmp(s, "-Infinity"))
        return true;
    if (!*s)
        return false;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    return *end == '\0' && !(errno == ERANGE && (d == 0 || isinf(d)));
}

/* JSON as PostgreSQL's jsonb input takes it: RFC 8259 (no NaN, Infinity, "1.", comments or
 * single quotes), and no \u0000 or lone surrogate escape. big: a number with an exponent or
 * over 1000 digits (numeric's range has rules of its own); depth: the deepest nesting. */
struct jscan {
    const char *p, *end;
    bool big;
    int depth, maxdepth;
};

static void js_ws(struct jscan *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int js_hex4(struct jscan *j)
{
    if (j->end - j->p < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *j->p++;
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

static bool js_string(struct jscan *j)
{
    if (j->p == j->end || *j->p++ != '"')
        return false;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"')
            return true;
        if (c < 0x20)
            return false;
        if (c != '\\')
            continue;
        if (j->p == j->end)
            return false;
        c = (unsigned char)*j->p++;
        if (strchr("\"\\/bfnrt", c) && c)
            continue;
        if (c != 'u')
            return false;
        int u = js_hex4(j);
        if (u <= 0 || (u >= 0xDC00 && u <= 0xDFFF))
            return false; /* \u0000, a bad escape, a lone low surrogate */
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                return false;
            j->p += 2;
            int lo = js_hex4(j);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return false;
        }
    }
    return false;
}

static bool js_digits(struct jscan *j, size_t *n)
{
    const char *s = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    *n += (size_t)(j->p - s);
    return j->p > s;
}

static bool js_number(struct jscan *j)
{
    size_t nd = 0;
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p < j->end && *j->p == '0')
        j->p++, nd++;
    else if (!js_digits(j, &nd))
        return false;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!js_digits(j, &nd))
            return false;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!js_digits(j, &nd))
            return false;
        j->big = true;
    }
    if (nd > 1000)
        j->big = true;
    return true;
}

static bool js_value(struct jscan *j)
{
    js_ws(j);
    if (j->p == j->end)
        return false;
    char c = *j->p;
    if (c == '"')
        return js_string(j);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        if (++j->depth > j->maxdepth)
            j->maxdepth = j->depth;
        if (j->depth > 20000)
            return false; /* beyond anything PostgreSQL's stack takes */
        js_ws(j);
        if (j->p < j->end && *j->p == close) {
            j->p++;
            j->depth--;
            return true;
        }
        for (;;) {
            if (c == '{') {
                js_ws(j);
                if (!js_string(j))
                    return false;
                js_ws(j);
                if (j->p == j->end || *j->p++ != ':')
                    return false;
            }
            if (!js_value(j))
                return false;
            js_ws(j);
            if (j->p == j->end)
                return false;
            char d = *j->p++;
            if (d == close)
                break;
            if (d != ',')
                return false;
        }
        j->depth--;
        return true;
    }
    static const char *const words[] = {"true", "false", "null"};
    for (size_t i = 0; i < 3; i++) {
        size_t wl = strlen(words[i]);
        if ((size_t)(j->end - j->p) >= wl && memcmp(j->p, words[i], wl) == 0) {
            j->p += wl;
            return true;
        }
    }
    return js_number(j);
}

static bool jsonb_ok(const char *s, size_t n, struct jscan *j)
{
    memset(j, 0, sizeof *j);
    j->p = s;
    j->end = s + n;
    if (!js_value(j))
        return false;
    js_ws(j);
    return j->p == j->end;
}

/* Valid UTF-8 (no overlong forms, surrogates or code points above U+10FFFF). */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 0;
        if (!k || i + k > n || (k == 2 && c < 0xC2) || (k == 4 && c > 0xF4))
            return false;
        uint32_t cp = k == 1 ? c : c & (0x7F >> k);
        for (size_t m = 1; m < k; m++) {
            if ((s[i + m] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + m] & 0x3F);
        }
        if ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        i += k;
    }
    return true;
}

/* s with each NUL as U+FFFD (the rule of rowenc.h) */
static void nul_to_fffd(const char *s, size_t n, struct buf *out)
{
    buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        if (s[i])
            buf_putc(out, s[i]);
        else
            buf_append(out, "\xef\xbf\xbd", 3);
    }
}

/* Valid UTF-8 in text and jsonb fields is checked only with DSYNC_FUZZ_UTF8=1: PostgreSQL
 * rejects invalid UTF-8 in a UTF8 database, but what to store instead is not decided yet. */
static bool utf8_check;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *v = getenv("DSYNC_FUZZ_UTF8");
    utf8_check = v && strcmp(v, "1") == 0;
    return 0;
}

struct slice_ids {
    char id[MAX_IDS][36];
    size_t n;
};

static void check_line(const struct spec *sp, const enum pgtype *types, size_t ncols,
                       struct json_object *row, const char *line, size_t len, struct slice_ids *ids,
                       struct buf *scratch, struct buf *nulfix)
{
    CHECK(len > 0 && line[len - 1] == '\n');
    CHECK(memchr(line, '\n', len - 1) == NULL);
    size_t tabs = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        unsigned char c = (unsigned char)line[i];
        CHECK(c >= 0x20 || c == '\t');
        tabs += c == '\t';
    }
    size_t nfields = ncols + (sp->with_id ? 1 : 0);
    CHECK(tabs == (nfields ? nfields - 1 : 0));

    const char *f = line;
    for (size_t col = 0; col < nfields; col++) {
        const char *end = memchr(f, col + 1 < nfields ? '\t' : '\n', (size_t)(line + len - f));
        CHECK(end != NULL);
        size_t flen = (size_t)(end - f);
        if (col == ncols) { /* the row id */
            CHECK(is_uuid8(f, flen));
            for (size_t k = 0; k < ids->n; k++)
                CHECK(memcmp(ids->id[k], f, 36) != 0);
            if (ids->n < MAX_IDS)
                memcpy(ids->id[ids->n++], f, 36);
            break;
        }
        struct json_object *v = json_object_array_get_idx(row, col);
        bool is_null_field = flen == 2 && f[0] == '\\' && f[1] == 'N';
        CHECK(is_null_field == (v == NULL));
        if (v) {
            CHECK(copy_unescape(f, flen, scratch) == 0);
            const char *val = scratch->data ? scratch->data : "";
            size_t vlen = scratch->len;
            enum json_type jt = json_object_get_type(v);
            const char *s = jt == json_type_string ? json_object_get_string(v) : NULL;
            size_t slen = s ? (size_t)json_object_get_string_len(v) : 0;
            switch (types[col]) {
            case PGT_TEXT:
                /* a string is stored as its bytes, each NUL as U+FFFD (rowenc.h) */
                if (s) {
                    nul_to_fffd(s, slen, nulfix);
                    CHECK(vlen == nulfix->len && (!vlen || memcmp(val, nulfix->data, vlen) == 0));
                }
                CHECK(vlen == strlen(val)); /* no NUL reaches PostgreSQL */
                if (utf8_check)
                    CHECK(utf8_ok((const unsigned char *)val, vlen));
                break;
            case PGT_JSONB: {
                /* whatever the value, PostgreSQL's jsonb input must take the field; a string
                 * that already is such JSON is stored as it is */
                struct jscan j;
                CHECK(jsonb_ok(val, vlen, &j));
                if (s && !memchr(s, '\0', slen) && jsonb_ok(s, slen, &j) && !j.big &&
                    j.maxdepth <= ROWENC_JSON_MAX_DEPTH)
                    CHECK(vlen == slen && memcmp(val, s, slen) == 0);
                if (utf8_check)
                    CHECK(utf8_ok((const unsigned char *)val, vlen));
                break;
            }
            case PGT_BIGINT: {
                char *e;
                errno = 0;
                long long x = strtoll(val, &e, 10);
                CHECK(vlen > 0 && *e == '\0' && errno == 0);
                if (jt == json_type_int)
                    CHECK(x == json_object_get_int64(v));
                break;
            }
            case PGT_DOUBLE:
                CHECK(pg_float8_ok(val));
                break;
            case PGT_BOOLEAN:
                CHECK(vlen == 1 && (val[0] == 't' || val[0] == 'f'));
                break;
            case PGT_TIMESTAMPTZ:
            case PGT_DATE:
                CHECK(vlen >= 10 && vlen == strlen(val));
                break;
            }
        }
        f = end + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    struct spec sp;
    parse_spec(data, nl ? (size_t)(nl - data) : 0, &sp);
    const uint8_t *p = nl ? nl + 1 : data, *end = data + size;

    struct json_tokener *tok = json_tokener_new_ex(ROW_JSON_DEPTH);
    CHECK(tok != NULL);
    struct rowenc *enc = NULL;
    enum pgtype types[MAX_COLS];
    size_t ncols = 0;
    struct buf out = BUF_INIT, scratch = BUF_INIT, nulfix = BUF_INIT;
    static struct slice_ids ids;
    ids.n = 0;
    char err[512];

    while (p < end) {
        const uint8_t *e = memchr(p, '\n', (size_t)(end - p));
        size_t len = e ? (size_t)(e - p) : (size_t)(end - p);
        /* the splitter hands over a NUL-terminated copy */
        char *line = malloc(len + 1);
        CHECK(line != NULL);
        memcpy(line, p, len);
        line[len] = '\0';
        p += len + (e ? 1 : 0);

        if (len == 0) { /* a new slice */
            if (enc)
                rowenc_reset(enc);
            ids.n = 0;
            free(line);
            continue;
        }
        json_tokener_reset(tok);
        struct json_object *row = json_tokener_parse_ex(tok, line, (int)len);
        if (!row || json_tokener_get_error(tok) != json_tokener_success ||
            json_tokener_get_parse_end(tok) != len || !json_object_is_type(row, json_type_array)) {
            json_object_put(row);
            free(line);
            continue; /* the client fails the query here: nothing reaches the encoder */
        }
        if (!enc) {
            ncols = sp.fixed ? sp.ntypes : json_object_array_length(row);
            if (ncols > MAX_COLS)
                ncols = MAX_COLS;
            struct rowenc_column cols[MAX_COLS];
            char names[MAX_COLS][8];
            for (size_t i = 0; i < ncols; i++) {
                types[i] = sp.ntypes ? sp.type[i % sp.ntypes] : PGT_TEXT;
                snprintf(names[i], sizeof names[i], "c%zu", i % 40); /* some names repeat */
                cols[i].name = names[i];
                cols[i].type = types[i];
            }
            enc = rowenc_new(cols, ncols, sp.inc_col, sp.with_id);
            CHECK(enc != NULL);
        }
        if (out.len > 65536)
            buf_reset(&out);
        size_t before = out.len;
        uint64_t rows_before = rowenc_rows(enc);
        int64_t inc = 12345;
        err[0] = '\0';
        int rc = rowenc_encode(enc, row, &out, &inc, err, sizeof err);
        if (rc == 0) {
            CHECK(rowenc_rows(enc) == rows_before + 1);
            CHECK(out.len > before && out.data[out.len] == '\0');
            check_line(&sp, types, ncols, row, out.data + before, out.len - before, &ids, &scratch,
                       &nulfix);
            if (sp.inc_col < 0 || (size_t)sp.inc_col >= ncols ||
                !json_object_array_get_idx(row, (size_t)sp.inc_col))
                CHECK(inc == INT64_MIN);
        } else {
            /* an error (< 0) or a row skipped by rule (> 0): nothing written */
            CHECK(out.len == before);
            CHECK(!out.data || out.data[before] == '\0');
            if (rc < 0) {
                CHECK(rowenc_rows(enc) == rows_before);
                CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
            }
        }
        json_object_put(row);
        free(line);
    }
    rowenc_free(enc);
    json_tokener_free(tok);
    buf_free(&out);
    buf_free(&scratch);
    buf_free(&nulfix);
    return 0;
}
