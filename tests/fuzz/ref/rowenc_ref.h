/* The pre-rowdec row encoder (ref/rowenc_ref.c), under ref_ names, for fuzz_rowdec. */
#ifndef DSYNC_ROWENC_REF_H
#define DSYNC_ROWENC_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "buf.h"
#include "rowenc.h"

struct ref_rowenc;
struct ref_rowenc *ref_rowenc_new(const struct rowenc_column *cols, size_t ncols, int inc_col,
                                  bool with_id);
void ref_rowenc_free(struct ref_rowenc *e);
void ref_rowenc_reset(struct ref_rowenc *e);
int ref_rowenc_encode(struct ref_rowenc *e, struct json_object *row, struct buf *out,
                      int64_t *inc_ms, char *err, size_t errlen);

#endif
