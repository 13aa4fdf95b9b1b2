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

/* Appends one COPY text line for row (fields separated by tabs, NULL as \N, then the id
 * when with_id, then '\n'). *inc_ms receives the incremental column's value in epoch
 * millis, or INT64_MIN when absent/NULL (inc_ms may be NULL). On a value that cannot be
 * stored in its column (e.g. a string in a bigint column, wrong arity) returns -1, leaves
 * out unchanged and writes a message naming the column into err. */
int rowenc_encode(struct rowenc *e, struct json_object *row, struct buf *out, int64_t *inc_ms,
                  char *err, size_t errlen);

/* Number of rows encoded since the last reset. */
uint64_t rowenc_rows(const struct rowenc *e);

/* COPY text escaping of one field value (backslash, tab, newline, carriage return and the
 * other control characters), appended to out. */
void rowenc_copy_escape(struct buf *out, const char *s, size_t n);

/* 16 bytes -> "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (37 bytes with the NUL). */
void rowenc_format_uuid(const uint8_t id[16], char out[37]);

#endif
