/* rowenc: the row encoder. Turns one Druid result row (a json-c array, or the same values
 * decoded without a tree: struct rowenc_value) into one line of PostgreSQL COPY text, and gives
 * every row its identity: a 128-bit hash of its values plus its occurrence number among identical
 * rows of the slice, written as a UUID (scheme ROWENC_ID_SCHEME, below). Knows nothing of HTTP or
 * SQL connections. */
#ifndef DSYNC_ROWENC_H
#define DSYNC_ROWENC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "buf.h"
#include "typemap.h"

/* The row id scheme rowenc_encode writes. Ids are stored (the primary key), so a scheme
 * never changes once released; a table records the scheme it was written with, and one
 * written with another scheme is migrated by the sink. Every scheme hashes the non-NULL
 * fields only (a new all-NULL column keeps every id) in ascending byte order of column name
 * (column order does not matter), with XXH3-128, then derives the id from that content
 * hash and the row's occurrence number n among identical rows of the slice (0, 1, ...):
 * id = XXH3-128(content digest, 16 bytes big-endian || n, 8 bytes big-endian) with the
 * UUID version set to 8 and the variant to 10 (RFC 9562), written lowercase 8-4-4-4-12.
 *
 * 1: content input = name NUL copytext NUL per field, copytext being the field's COPY text
 *    as written; second step seeded with 0x64727569642d6964. Depends on the PostgreSQL
 *    column type and on how Druid spells a number (1 in bigint, 1.0 in double precision).
 * 2: content input = name NUL tag payload per field, over canonical values; second step
 *    unseeded. len is an unsigned LEB128 byte count. The class comes from the column type
 *    and, in a text column, from the JSON kind Druid sent:
 *    - number 'N' len "[-]DeX": the exact decimal value D x 10^X, D the significant digits
 *      with no leading or trailing zero, X in decimal ("1e0" for 1, 1.0, 1.0E0, 10E-1;
 *      "15e-1" for 1.5; "-25e2" for -2500). Zero is "0", also -0.0 (no sign). A double is
 *      taken from the literal Druid wrote, never through binary floating point; exponents
 *      written beyond 10^15 are clamped to 10^15 (only text columns can hold such a value).
 *      Integers, doubles, numeric strings in a bigint column, and booleans (true 1, false
 *      0, as Druid stores them: a boolean widened to bigint keeps its ids) all use it.
 *    - NaN 'Q', +Infinity '+', -Infinity '-', no payload (the literals and Jackson's
 *      strings "NaN", "Infinity", "-Infinity" in a double column alike).
 *    - timestamp 'T' and 8 bytes: the instant in epoch milliseconds, big-endian two's
 *      complement, whatever its text form (Z, an offset, SQL form, epoch millis). A date is
 *      the instant of its 00:00 UTC (a date widened to timestamptz keeps its ids when Druid
 *      prints it at midnight UTC).
 *    - string 'S' len bytes: the bytes Druid sent (JSON escapes decoded, a NUL kept as NUL
 *      though it is stored as U+FFFD). A change to or from a string type changes ids.
 *    - JSON 'J' item (jsonb columns, and arrays/objects in text columns): the JSON text as
 *      a stream of items: '{' '}' '[' ']' as themselves, a string 's' len bytes (escapes
 *      decoded to UTF-8, surrogate pairs joined), a number 'n' len "[-]DeX" as above, true
 *      't', false 'f', null 'z'; whitespace, commas and colons carry nothing. Object keys
 *      stay in the order Druid sent them. A jsonb value stored as a JSON string of its text
 *      (not valid JSON) is 'J' 's' len text; an array/object in a text column that is not
 *      valid JSON (NaN inside) is 'S' len text. */
#define ROWENC_ID_SCHEME 2

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

/* One decoded JSON value of a row, as rowenc_encode_values takes it: what the encoder needs
 * of a value without a json-c tree. Texts are NUL-terminated at p[n] (a string may also hold
 * NULs inside). rowenc_encode fills these from json-c objects; rowdec fills them straight
 * from the line, and both must describe a value alike (tests/fuzz/fuzz_rowdec.c). */
enum rowenc_kind {
    ROWENC_V_NULL,
    ROWENC_V_BOOL,   /* i: 0 or 1 */
    ROWENC_V_INT,    /* i; p/n its decimal text as json-c writes it, or p NULL */
    ROWENC_V_UINT,   /* (uint64_t)i, above INT64_MAX */
    ROWENC_V_DOUBLE, /* p/n: its text as json-c writes it (the literal); d when has_d */
    ROWENC_V_STRING, /* p/n: the decoded bytes */
    ROWENC_V_ARRAY,  /* p/n: the JSON text as json-c writes it (plain, '/' not escaped) */
    ROWENC_V_OBJECT, /* as ROWENC_V_ARRAY */
};

struct rowenc_value {
    enum rowenc_kind kind;
    bool has_d; /* ROWENC_V_DOUBLE: d holds the value (else it is read from p when needed) */
    /* ROWENC_V_STRING: p/n holds no byte below 0x20 and no backslash, so its COPY text is
     * itself (the decoder knows this from its scan; false is always correct) */
    bool plain;
    const char *p;
    size_t n;
    int64_t i;
    double d;
};

/* rowenc_encode over values already decoded (n of them, one per column); same output,
 * same return codes. */
int rowenc_encode_values(struct rowenc *e, const struct rowenc_value *v, size_t n, struct buf *out,
                         int64_t *inc_ms, char *err, size_t errlen);

/* Ordered reads: identical rows share their timestamp, so occurrence numbers need only be
 * counted within a run of rows whose column col has the same text (rowenc_reset at every
 * change; a text of 48 bytes or more never starts a run, which is always correct). The
 * text is a string up to its first NUL, "" for NULL, else the JSON text json-c writes.
 * col -1 (the default) counts over everything since the last reset. */
void rowenc_group_by(struct rowenc *e, int col);

/* Returned by rowenc_encode_line for a line it leaves to the decoder. */
#define ROWENC_LINE_SLOW 2

/* The fused path for the commonest data line: the arrayLines row line (len bytes, not
 * modified, no terminator needed) decoded and encoded in one pass, with the same COPY text,
 * id and incremental value rowdec + rowenc_encode_values give it. It takes only lines of
 * exactly the encoder's column count whose values are null, a string with no escape or
 * control character in a text column or (Druid's canonical form) in a timestamptz column,
 * or an integer of up to 18 digits in a bigint or text column, in compact JSON. Returns
 * ROWENC_OK, or ROWENC_LINE_SLOW with out and every count unchanged: decode that line with
 * rowdec. After many lines left, it leaves every line (the datasource's rows are not of
 * this kind). tests/fuzz/fuzz_rowdec.c compares it with the frozen encoder on every input. */
int rowenc_encode_line(struct rowenc *e, const char *line, size_t len, struct buf *out,
                       int64_t *inc_ms);

/* The JSON text json-c writes for v (plain, '/' not escaped), appended to out: for error
 * messages and for callers that need a value's text (a row's time column). */
void rowenc_value_text(const struct rowenc_value *v, struct buf *out);

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
