/* rowenc: the row encoder. Turns one Druid result row (a json-c array, as parsed from an
 * arrayLines body) into one line of PostgreSQL COPY text, and gives every row its identity:
 * a 128-bit hash of its values plus its occurrence number among identical rows of the
 * slice, written as a UUID. Knows nothing of HTTP or SQL connections. */
#ifndef DSYNC_ROWENC_H
#define DSYNC_ROWENC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "buf.h"
#include "typemap.h"

struct rowenc_column {
    const char *name; /* Druid column name, verbatim */
    enum pgtype type; /* the PostgreSQL type of the destination column */
};

struct rowenc; /* opaque */

/* cols is copied. inc_col is the index of the incremental column (its value is reported
 * in millis by rowenc_encode) or -1. with_id appends the identity UUID as a last field.
 * Returns NULL on out-of-memory. Free with rowenc_free. */
struct rowenc *rowenc_new(const struct rowenc_column *cols, size_t ncols, int inc_col,
                          bool with_id);
void rowenc_free(struct rowenc *e);

/* Forget the occurrence counts: call at the start of every slice (identity is per slice;
 * identical rows always share a timestamp and a slice never splits a timestamp). */
void rowenc_reset(struct rowenc *e);

/* Return codes of rowenc_encode. */
#define ROWENC_OK 0
#define ROWENC_SKIPPED 1 /* the row cannot be stored by any rule: leave it out, go on */

/* Deepest JSON nesting stored as jsonb. PostgreSQL 15 with max_stack_depth 2MB rejects
 * input nested deeper than 13,090 objects or 14,544 arrays ("stack depth limit exceeded",
 * measured); this leaves room for builds with larger stack frames. */
#define ROWENC_JSON_MAX_DEPTH 5000

/* Appends one COPY text line for row (fields separated by tabs, NULL as \N, then the id
 * when with_id, then '\n'). *inc_ms receives the incremental column's value in epoch
 * millis, or INT64_MIN when absent/NULL (inc_ms may be NULL).
 *
 * Values PostgreSQL would reject are stored by rule instead, and counted (rowenc_stats):
 * - a NUL character in a text or jsonb value (raw, or the escape \u0000 inside JSON text)
 *   becomes U+FFFD;
 * - a jsonb value that is not JSON PostgreSQL accepts (invalid text, a number beyond
 *   numeric's range, a lone surrogate escape) or is nested deeper than
 *   ROWENC_JSON_MAX_DEPTH is stored as a jsonb string holding the original text.
 * Timestamps and dates are stored exactly over PostgreSQL's whole range (timeutil.h).
 *
 * Returns:
 *  ROWENC_OK (0)       the line was appended.
 *  ROWENC_SKIPPED (1)  a timestamp or date outside PostgreSQL's range: nothing appended,
 *                      *inc_ms set to INT64_MIN, err names the column and the value; the
 *                      row is counted in rows_skipped and not in rowenc_rows. The caller
 *                      logs err and goes on with the next row.
 *  -1                  a value that cannot be stored in its column (e.g. a string in a
 *                      bigint column, wrong arity): out unchanged, err names the column;
 *                      the slice fails. */
int rowenc_encode(struct rowenc *e, struct json_object *row, struct buf *out, int64_t *inc_ms,
                  char *err, size_t errlen);

/* Cumulative counts since rowenc_new (rowenc_reset keeps them), of rows that returned
 * ROWENC_OK, except rows_skipped. */
struct rowenc_stats {
    uint64_t nul_replaced;   /* NUL characters written as U+FFFD */
    uint64_t json_as_string; /* jsonb values stored as a JSON string of their text */
    uint64_t rows_skipped;   /* rows that returned ROWENC_SKIPPED */
};
const struct rowenc_stats *rowenc_stats(const struct rowenc *e);

/* Number of rows encoded since the last reset. */
uint64_t rowenc_rows(const struct rowenc *e);

/* COPY text escaping of one field value (backslash, tab, newline, carriage return and the
 * other control characters), appended to out. */
void rowenc_copy_escape(struct buf *out, const char *s, size_t n);

/* 16 bytes -> "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (37 bytes with the NUL). */
void rowenc_format_uuid(const uint8_t id[16], char out[37]);

#endif
