/* fuzz_rowdec: differential libFuzzer target for the data-row fast path. Every line is
 * decoded twice and must come out the same:
 *   old: what druid_client.c did before rowdec (the tree_cost limit, json-c's tokener at
 *        DRUID_JSON_DEPTH, the whole line a JSON array of ncols values), then the encoder
 *        as it was (ref/rowenc_ref.c, a frozen copy);
 *   new: the fused path (rowenc_encode_line) on a copy of the line; for a line it leaves,
 *        rowdec_decode and rowenc_encode_values; when rowdec leaves the line to json-c
 *        (ROWDEC_SLOW), json-c and today's rowenc_encode, as the client does now. A line the
 *        fused path leaves must leave the output and every count as they were.
 * Aborts on any difference: a line accepted by one and rejected by the other, the return
 * code, the COPY text (which holds the row id), the incremental value, the error text.
 *
 * Input: a column spec line (as fuzz_rowenc: t b d o T D j, '*' marks the incremental
 * column, '-' turns ids off; the column count is the spec's), then one response line per
 * line; an empty line starts a new slice. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "buf.h"
#include "druid_client.h"
#include "ref/rowenc_ref.h"
#include "rowdec.h"
#include "rowenc.h"
#include "typemap.h"

#define MAX_COLS 32

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const enum pgtype all_types[] = {PGT_TEXT,        PGT_BIGINT, PGT_DOUBLE, PGT_BOOLEAN,
                                        PGT_TIMESTAMPTZ, PGT_DATE,   PGT_JSONB};

/* druid_client.c's tree_cost, as it was. */
static size_t tree_cost(const char *s, size_t n)
{
    size_t cost = DRUID_COST_VALUE;
    for (size_t i = 0; i < n && cost <= DRUID_ROW_TREE_MAX; i++) {
        switch (s[i]) {
        case '"':
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            break;
        case ',':
            cost += DRUID_COST_VALUE;
            break;
        case '[':
            cost += DRUID_COST_ARRAY;
            break;
        case '{':
            cost += DRUID_COST_OBJECT;
            break;
        default:
            break;
        }
    }
    return cost;
}

/* The line as druid_client.c decodes it with json-c: the row, or NULL when the query
 * fails on this line (not an array, too deep, too many values, trailing bytes). */
static struct json_object *jsonc_line(const char *line, size_t len)
{
    if (tree_cost(line, len) > DRUID_ROW_TREE_MAX)
        return NULL;
    /* A tokener per line: after a line cut off right after a high surrogate escape,
     * json-c 0.16's json_tokener_reset keeps that surrogate, and a reused tokener gives the
     * next lone surrogate a second U+FFFD. The two sides here parse different sequences of
     * lines; in the client such a line fails the query, so nothing follows it. */
    json_tokener *tok = json_tokener_new_ex(DRUID_JSON_DEPTH + 2);
    CHECK(tok != NULL);
    struct json_object *obj = json_tokener_parse_ex(tok, line, (int)len);
    if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != len || !json_object_is_type(obj, json_type_array)) {
        json_object_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    return obj;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t speclen = nl ? (size_t)(nl - data) : 0;
    struct rowenc_column cols[MAX_COLS];
    static const char *names[MAX_COLS] = {"__time", "b", "a", "c1", "zz", "d", "e", "f"};
    size_t ncols = 0;
    int inc_col = -1;
    bool with_id = true, inc_next = false;
    for (size_t i = 0; i < speclen && ncols < MAX_COLS; i++) {
        if (data[i] == '*') {
            inc_next = true;
            continue;
        }
        if (data[i] == '-') {
            with_id = false;
            continue;
        }
        const char *m = strchr("tbdoTDj", data[i]);
        enum pgtype t = m && data[i] ? all_types[m - "tbdoTDj"] : all_types[data[i] % 7];
        if (inc_next)
            inc_col = (int)ncols;
        inc_next = false;
        cols[ncols].type = t;
        cols[ncols].name = names[ncols % 8] ? names[ncols % 8] : "x";
        ncols++;
    }
    if (ncols == 0) {
        cols[0] = (struct rowenc_column){"c", PGT_TEXT};
        ncols = 1;
    }
    const uint8_t *p = nl ? nl + 1 : data, *end = data + size;

    struct ref_rowenc *oe = ref_rowenc_new(cols, ncols, inc_col, with_id);
    struct rowenc *ne = rowenc_new(cols, ncols, inc_col, with_id);
    struct rowdec *dec = rowdec_new();
    CHECK(oe && ne && dec);
    struct buf oout = BUF_INIT, nout = BUF_INIT;
    char oerr[512], nerr[512];

    while (p < end) {
        const uint8_t *e = memchr(p, '\n', (size_t)(end - p));
        size_t len = e ? (size_t)(e - p) : (size_t)(end - p);
        char *line = malloc(len + 1), *copy = malloc(len + 1);
        CHECK(line && copy);
        memcpy(line, p, len);
        line[len] = '\0';
        memcpy(copy, line, len + 1);
        p += len + (e ? 1 : 0);
        if (len == 0) {
            ref_rowenc_reset(oe);
            rowenc_reset(ne);
            free(line);
            free(copy);
            continue;
        }

        /* old */
        struct json_object *orow = jsonc_line(line, len);
        bool oacc = orow && json_object_array_length(orow) == ncols;
        int orc = 0;
        int64_t oms = 0;
        oerr[0] = '\0';
        if (oacc)
            orc = ref_rowenc_encode(oe, orow, &oout, &oms, oerr, sizeof oerr);
        json_object_put(orow);

        /* new */
        const struct rowenc_value *v;
        size_t n;
        bool nacc;
        int nrc = 0;
        int64_t nms = 0;
        nerr[0] = '\0';
        size_t nlen0 = nout.len;
        struct rowenc_stats nst0 = *rowenc_stats(ne);
        uint64_t nrows0 = rowenc_rows(ne);
        int lrc = rowenc_encode_line(ne, copy, len, &nout, &nms);
        CHECK(memcmp(copy, line, len + 1) == 0); /* the fused path never writes the line */
        if (lrc == ROWENC_OK) {
            nacc = true;
            nrc = ROWENC_OK;
        } else {
            CHECK(lrc == ROWENC_LINE_SLOW);
            /* a line left: nothing written, nothing counted */
            CHECK(nout.len == nlen0 && rowenc_rows(ne) == nrows0 &&
                  memcmp(rowenc_stats(ne), &nst0, sizeof nst0) == 0);
        }
        if (lrc == ROWENC_OK) {
            /* compared with the old side below */
        } else if (rowdec_decode(dec, copy, len, &v, &n) == ROWDEC_OK) {
            nacc = n == ncols;
            if (nacc)
                nrc = rowenc_encode_values(ne, v, n, &nout, &nms, nerr, sizeof nerr);
        } else {
            CHECK(memcmp(copy, line, len + 1) == 0); /* json-c gets the line as it came */
            struct json_object *nrow = jsonc_line(copy, len);
            nacc = nrow && json_object_array_length(nrow) == ncols;
            if (nacc)
                nrc = rowenc_encode(ne, nrow, &nout, &nms, nerr, sizeof nerr);
            json_object_put(nrow);
        }

        if (oacc != nacc || orc != nrc || oms != nms || strcmp(oerr, nerr) != 0 ||
            oout.len != nout.len || (oout.len && memcmp(oout.data, nout.data, oout.len) != 0)) {
            fprintf(stderr,
                    "line: %.*s\nold: acc %d rc %d ms %lld err '%s'\n%s\nnew: acc %d rc %d "
                    "ms %lld err '%s'\n%s\n",
                    (int)len, line, oacc, orc, (long long)oms, oerr, oout.data ? oout.data : "",
                    nacc, nrc, (long long)nms, nerr, nout.data ? nout.data : "");
            abort();
        }
        free(line);
        free(copy);
    }
    buf_free(&oout);
    buf_free(&nout);
    rowdec_free(dec);
    rowenc_free(ne);
    ref_rowenc_free(oe);
    return 0;
}
