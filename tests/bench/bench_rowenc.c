/* bench_rowenc: ns/row of rowenc_encode (COPY text and row id) on wikiticker-shaped rows,
 * through json-c (rowenc_encode) and through the daemon's path (rowdec_decode, then
 * rowenc_encode_values).
 * Not a test: no timing enters the test suite. Run by hand:
 *
 *     build-x/tests/bench/bench_rowenc [-n ROWS] [-r REPEATS] [FILE]
 *
 * FILE is newline-delimited JSON objects (gzip allowed), by default the Wikipedia sample
 * $DSYNC_SHARED_DATA/wikiticker-2015-09-12-sampled.json.gz (DSYNC_SHARED_DATA defaults to
 * ../shared/data beside the source tree). Each object becomes one arrayLines row as the
 * Druid test server prints it (__time first, then the fields in file order; integers
 * BIGINT, booleans and strings VARCHAR), parsed by json-c as the Druid client does. The
 * ROWS rows (default 1,000,000) cycle through the sample; the occurrence counts are reset
 * at every change of timestamp, as the slice pipeline does for ordered reads.
 *
 * Prints the median ns/row (with the range) with ids and without, and checksums of the COPY
 * text written without ids and of the text with ids on the daemon's path, so two builds can
 * be compared for identical output (the ids included). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <json-c/json.h>
#include <xxhash.h>

#include "buf.h"
#include "rowdec.h"
#include "rowenc.h"

#ifndef BENCH_SHARED_DATA
#define BENCH_SHARED_DATA "../shared/data"
#endif
#define MAX_COLS 64

static struct rowenc_column cols[MAX_COLS];
static char *col_names[MAX_COLS];
static size_t ncols;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The column list from the first object: "time" (or "timestamp") becomes __time. */
static int learn_columns(struct json_object *o)
{
    cols[0] = (struct rowenc_column){"__time", PGT_TIMESTAMPTZ};
    ncols = 1;
    json_object_object_foreach(o, k, v)
    {
        if (strcmp(k, "time") == 0 || strcmp(k, "timestamp") == 0)
            continue;
        if (ncols == MAX_COLS)
            return -1;
        col_names[ncols] = strdup(k);
        enum pgtype t = json_object_is_type(v, json_type_int) ? PGT_BIGINT : PGT_TEXT;
        /* metroCode is an integer or null: typed from its first non-null value would need
         * a second pass; wikiticker's only such field is metroCode */
        if (strcmp(k, "metroCode") == 0)
            t = PGT_BIGINT;
        cols[ncols] = (struct rowenc_column){col_names[ncols], t};
        ncols++;
    }
    return 0;
}

/* One object -> the arrayLines row Druid would send. */
static struct json_object *to_row(struct json_object *o)
{
    struct json_object *arr = json_object_new_array();
    struct json_object *t = NULL;
    if (!json_object_object_get_ex(o, "time", &t))
        json_object_object_get_ex(o, "timestamp", &t);
    json_object_array_add(arr, t ? json_object_get(t) : NULL);
    for (size_t i = 1; i < ncols; i++) {
        struct json_object *v = NULL;
        json_object_object_get_ex(o, cols[i].name, &v);
        if (v && json_object_is_type(v, json_type_boolean))
            v = json_object_new_string(json_object_get_boolean(v) ? "true" : "false");
        else if (v)
            v = json_object_get(v);
        json_object_array_add(arr, v);
    }
    return arr;
}

static FILE *open_input(const char *path, int *is_pipe)
{
    size_t n = strlen(path);
    *is_pipe = 0;
    if (n > 3 && strcmp(path + n - 3, ".gz") == 0) {
        if (strchr(path, '\'')) {
            fprintf(stderr, "bench_rowenc: path with a quote: %s\n", path);
            return NULL;
        }
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "gzip -dc -- '%s'", path);
        *is_pipe = 1;
        return popen(cmd, "r");
    }
    return fopen(path, "r");
}

struct result {
    double ns_per_row, wall_ns_per_row;
    size_t interrupted;
    uint64_t bytes;
    uint64_t checksum;
    uint64_t fused; /* LINE_WITH_IDS: rows rowenc_encode_line took */
};

/* Each row is parsed from its text just before it is encoded, as in the daemon, so the
 * encoder sees a freshly built (cached) tree; only the encode is timed, per row, less the
 * cost of reading the clock. */
enum mode { PARSE_ONLY, NO_IDS, WITH_IDS, VIEW_DECODE, VIEW_WITH_IDS, LINE_WITH_IDS, NMODES };

/* The daemon's path: the line copied out of the receive buffer (as druid_lines does), then
 * decoded by rowdec and encoded from the values; decode alone, or decode and encode with ids
 * (both timed); or (LINE_WITH_IDS) the fused path, rowenc_encode_line, with rowdec and
 * rowenc_encode_values for the lines it leaves, and the occurrence counts reset by the
 * encoder itself (rowenc_group_by), as the slice pipeline does now. */
static int run_view(char **lines, size_t nlines, size_t total, enum mode mode, double clock_ns,
                    struct result *res)
{
    struct rowenc *e = rowenc_new(cols, ncols, 0, true);
    struct rowdec *d = rowdec_new();
    if (!e || !d)
        return -1;
    struct buf out = BUF_INIT, line = BUF_INIT;
    char err[512], group[64] = "";
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    uint64_t bytes = 0, fused = 0;
    double spent = 0, w0 = now_ns();
    size_t timed = 0;
    if (mode == LINE_WITH_IDS)
        rowenc_group_by(e, 0);
    for (size_t i = 0; i < total; i++) {
        const char *text = lines[i % nlines];
        buf_reset(&line);
        buf_puts(&line, text);
        const struct rowenc_value *v;
        size_t n;
        double t0 = now_ns();
        int rc = ROWENC_OK;
        int64_t ms;
        bool taken = false;
        if (mode == LINE_WITH_IDS) {
            rc = rowenc_encode_line(e, line.data, line.len, &out, &ms);
            taken = rc != ROWENC_LINE_SLOW;
            fused += taken;
        }
        if (!taken) {
            if (rowdec_decode(d, line.data, line.len, &v, &n) != ROWDEC_OK) {
                fprintf(stderr, "bench_rowenc: row %zu is not on rowdec's fast path\n", i);
                return -1;
            }
            if (mode == VIEW_WITH_IDS) {
                const char *ts = v[0].kind == ROWENC_V_STRING ? v[0].p : "";
                if (strlen(ts) < sizeof group && strcmp(ts, group) != 0) {
                    rowenc_reset(e);
                    memcpy(group, ts, strlen(ts) + 1);
                }
            }
            /* LINE_WITH_IDS: the encoder resets by itself (rowenc_group_by) */
            if (mode != VIEW_DECODE)
                rc = rowenc_encode_values(e, v, n, &out, &ms, err, sizeof err);
        }
        double dt = now_ns() - t0;
        if (dt < 50000) {
            spent += dt;
            timed++;
        }
        if (rc != ROWENC_OK) {
            fprintf(stderr, "bench_rowenc: row %zu: %s\n", i, err);
            return -1;
        }
        if (out.len >= 256 << 10) { /* the daemon's COPY chunk */
            XXH3_64bits_update(st, out.data, out.len);
            bytes += out.len;
            buf_reset(&out);
        }
    }
    res->wall_ns_per_row = (now_ns() - w0) / (double)total;
    XXH3_64bits_update(st, out.data ? out.data : "", out.len);
    bytes += out.len;
    res->ns_per_row = timed ? spent / (double)timed - clock_ns : 0;
    res->interrupted = total - timed;
    res->bytes = bytes;
    res->fused = fused;
    res->checksum = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    buf_free(&out);
    buf_free(&line);
    rowdec_free(d);
    rowenc_free(e);
    return 0;
}

static int run(char **lines, size_t nlines, size_t total, enum mode mode, double clock_ns,
               struct result *res)
{
    if (mode >= VIEW_DECODE)
        return run_view(lines, nlines, total, mode, clock_ns, res);
    bool with_id = mode == WITH_IDS;
    struct rowenc *e = rowenc_new(cols, ncols, 0, with_id);
    struct json_tokener *tok = json_tokener_new_ex(64);
    if (!e || !tok)
        return -1;
    struct buf out = BUF_INIT;
    char err[512], group[64] = "";
    XXH3_state_t *st = XXH3_createState();
    XXH3_64bits_reset(st);
    uint64_t bytes = 0;
    double spent = 0, w0 = now_ns();
    size_t timed = 0;
    for (size_t i = 0; i < total; i++) {
        const char *text = lines[i % nlines];
        json_tokener_reset(tok);
        struct json_object *row = json_tokener_parse_ex(tok, text, (int)strlen(text));
        struct json_object *t = json_object_array_get_idx(row, 0);
        const char *ts = t ? json_object_get_string(t) : "";
        if (mode == PARSE_ONLY) {
            json_object_put(row);
            continue;
        }
        double t0 = now_ns();
        if (strlen(ts) < sizeof group && strcmp(ts, group) != 0) {
            rowenc_reset(e);
            memcpy(group, ts, strlen(ts) + 1);
        }
        int64_t ms;
        int rc = rowenc_encode(e, row, &out, &ms, err, sizeof err);
        double dt = now_ns() - t0;
        /* a row that took over 50 us was interrupted (2 shared cores): counted apart */
        if (dt < 50000) {
            spent += dt;
            timed++;
        }
        if (rc != ROWENC_OK) {
            fprintf(stderr, "bench_rowenc: row %zu: %s\n", i, err);
            return -1;
        }
        json_object_put(row);
        if (out.len >= 1 << 20) { /* the size of a CopyData flush */
            if (!with_id)
                XXH3_64bits_update(st, out.data, out.len);
            bytes += out.len;
            buf_reset(&out);
        }
    }
    res->wall_ns_per_row = (now_ns() - w0) / (double)total;
    if (!with_id)
        XXH3_64bits_update(st, out.data ? out.data : "", out.len);
    bytes += out.len;
    res->ns_per_row = timed ? spent / (double)timed - clock_ns : 0;
    res->interrupted = total - timed;
    res->bytes = bytes;
    res->checksum = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    json_tokener_free(tok);
    buf_free(&out);
    rowenc_free(e);
    return 0;
}

/* What one pair of clock reads adds to a timed row. */
static double clock_cost(void)
{
    double spent = 0;
    for (int i = 0; i < 1000000; i++) {
        double t0 = now_ns();
        spent += now_ns() - t0;
    }
    return spent / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    size_t total = 1000000;
    int repeats = 5, only = -1; /* -m 0..5: one mode alone, for a profiler */
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            total = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
            only = atoi(argv[++i]);
        else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
            repeats = atoi(argv[++i]);
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: bench_rowenc [-n ROWS] [-r REPEATS] [-m MODE] [FILE]\n");
            return 64;
        } else
            path = argv[i];
    }
    if (repeats < 1 || repeats > 99 || total == 0) {
        fprintf(stderr, "bench_rowenc: bad -n or -r\n");
        return 64;
    }
    char def[4096];
    if (!path) {
        const char *dir = getenv("DSYNC_SHARED_DATA");
        snprintf(def, sizeof def, "%s/wikiticker-2015-09-12-sampled.json.gz",
                 dir && *dir ? dir : BENCH_SHARED_DATA);
        path = def;
    }
    int is_pipe;
    FILE *f = open_input(path, &is_pipe);
    if (!f) {
        fprintf(stderr, "bench_rowenc: %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t cap = 1024, nrows = 0;
    char **rows = malloc(cap * sizeof *rows);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    uint64_t in_bytes = 0;
    while ((len = getline(&line, &lcap, f)) > 0) {
        struct json_object *o = json_tokener_parse(line);
        if (!o || !json_object_is_type(o, json_type_object)) {
            fprintf(stderr, "bench_rowenc: line %zu is not a JSON object\n", nrows + 1);
            return 1;
        }
        if (nrows == 0 && learn_columns(o)) {
            fprintf(stderr, "bench_rowenc: more than %d columns\n", MAX_COLS);
            return 1;
        }
        if (nrows == cap)
            rows = realloc(rows, (cap *= 2) * sizeof *rows);
        struct json_object *row = to_row(o);
        rows[nrows] = strdup(json_object_to_json_string_ext(
            row, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(row);
        in_bytes += strlen(rows[nrows]);
        nrows++;
        json_object_put(o);
    }
    free(line);
    if (is_pipe ? pclose(f) != 0 : fclose(f) != 0) {
        fprintf(stderr, "bench_rowenc: reading %s failed\n", path);
        return 1;
    }
    if (nrows == 0) {
        fprintf(stderr, "bench_rowenc: %s has no rows\n", path);
        return 1;
    }
    printf("%zu distinct rows of %zu columns from %s (%.0f bytes of row JSON each), %zu rows "
           "per run, %d runs\n",
           nrows, ncols, path, (double)in_bytes / (double)nrows, total, repeats);
    double clock_ns = clock_cost();
    printf("clock read pair: %.1f ns (subtracted)\n", clock_ns);
    /* repetitions interleave the modes, so a change in machine load hits all three */
    double ns[NMODES][99] = {{0}}, wall[NMODES][99] = {{0}};
    struct result r[NMODES] = {{0}};
    for (int k = 0; k < repeats; k++) {
        for (int m = PARSE_ONLY; m < NMODES; m++) {
            if (only >= 0 && m != only)
                continue;
            if (run(rows, nrows, total, (enum mode)m, clock_ns, &r[m]))
                return 1;
            ns[m][k] = r[m].ns_per_row;
            wall[m][k] = r[m].wall_ns_per_row;
        }
    }
    for (int m = PARSE_ONLY; m < NMODES; m++) {
        qsort(ns[m], (size_t)repeats, sizeof ns[m][0], cmp_double);
        qsort(wall[m], (size_t)repeats, sizeof wall[m][0], cmp_double);
    }
    int mid = repeats / 2;
    printf("json-c parse alone (not rowenc): %.1f ns/row wall (min %.1f, max %.1f)\n",
           wall[PARSE_ONLY][mid], wall[PARSE_ONLY][0], wall[PARSE_ONLY][repeats - 1]);
    for (int m = NO_IDS; m <= WITH_IDS; m++) {
        printf("rowenc_encode %-11s %7.1f ns/row (min %.1f, max %.1f), %.1f bytes of COPY "
               "text per row, %zu rows interrupted",
               m == WITH_IDS ? "with ids" : "without ids", ns[m][mid], ns[m][0], ns[m][repeats - 1],
               (double)r[m].bytes / (double)total, r[m].interrupted);
        if (m == NO_IDS)
            printf(", checksum %016llx", (unsigned long long)r[m].checksum);
        printf("\n");
    }
    printf("rowdec_decode alone       %7.1f ns/row (min %.1f, max %.1f)\n", ns[VIEW_DECODE][mid],
           ns[VIEW_DECODE][0], ns[VIEW_DECODE][repeats - 1]);
    printf("rowdec + encode with ids  %7.1f ns/row (min %.1f, max %.1f), %.1f bytes of COPY text "
           "per row, %zu rows interrupted, checksum with ids %016llx\n",
           ns[VIEW_WITH_IDS][mid], ns[VIEW_WITH_IDS][0], ns[VIEW_WITH_IDS][repeats - 1],
           (double)r[VIEW_WITH_IDS].bytes / (double)total, r[VIEW_WITH_IDS].interrupted,
           (unsigned long long)r[VIEW_WITH_IDS].checksum);
    printf("fused line path with ids  %7.1f ns/row (min %.1f, max %.1f), %.1f %% of rows fused, "
           "%.1f bytes of COPY text per row, %zu rows interrupted, checksum with ids %016llx\n",
           ns[LINE_WITH_IDS][mid], ns[LINE_WITH_IDS][0], ns[LINE_WITH_IDS][repeats - 1],
           100.0 * (double)r[LINE_WITH_IDS].fused / (double)total,
           (double)r[LINE_WITH_IDS].bytes / (double)total, r[LINE_WITH_IDS].interrupted,
           (unsigned long long)r[LINE_WITH_IDS].checksum);
    for (size_t i = 0; i < nrows; i++)
        free(rows[i]);
    free(rows);
    for (size_t i = 1; i < ncols; i++)
        free(col_names[i]);
    return 0;
}
