/* rowdec: the fast decoder of one arrayLines data row. Reads the line once, without a json-c
 * tree, into per-column struct rowenc_value (rowenc.h), exactly as rowenc_encode would see
 * the row json-c decodes from the same line. It takes only a subset of what json-c accepts:
 * the compact RFC 8259 JSON Druid writes (no whitespace, no comments, integers within
 * 64 bits, no lone surrogate escapes, no raw control characters, nesting up to
 * ROWDEC_DEPTH, object keys distinct, no more values than DRUID_ROW_TREE_MAX allows).
 * Any other line is left to json-c (ROWDEC_SLOW), which accepts or rejects it as before;
 * so for every line the values, the errors and the limits are json-c's.
 * tests/fuzz/fuzz_rowdec.c checks that against the json-c path on every input. */
#ifndef DSYNC_ROWDEC_H
#define DSYNC_ROWDEC_H

#include <stddef.h>

#include "rowenc.h"

/* Deepest nesting of a value decoded here (deeper lines go to json-c, whose limit is
 * DRUID_JSON_DEPTH). */
#define ROWDEC_DEPTH 64
/* Most keys of one object decoded here (duplicate keys are looked for pairwise). */
#define ROWDEC_KEYS 64

#define ROWDEC_OK 0
#define ROWDEC_SLOW 1 /* not in the subset: decode the line with json-c */

struct rowdec; /* opaque */

struct rowdec *rowdec_new(void);
void rowdec_free(struct rowdec *d);

/* Decodes line (len bytes, line[len] == '\0'). On ROWDEC_OK, *vals and *n are the row's
 * values, valid until the next call or until the line buffer changes: they point into the
 * line (which is modified: terminating NULs are written after string and number values)
 * and into the decoder. On ROWDEC_SLOW the line is unchanged. */
int rowdec_decode(struct rowdec *d, char *line, size_t len, const struct rowenc_value **vals,
                  size_t *n);

#endif
