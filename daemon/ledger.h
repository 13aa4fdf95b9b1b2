/* ledger: the bookkeeping of what a cycle planned and committed, as pure functions over
 * its slice table. The cursor a commit may carry is the greatest incremental value of the
 * committed prefix of slices: a cursor never passes a slice that has not committed (a crash
 * then re-reads from there) and never moves back. A cycle is complete only when every
 * planned slice committed. */
#ifndef DSYNC_LEDGER_H
#define DSYNC_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plan.h"

enum ledger_status {
    LEDGER_PENDING, /* not started, or put back after a failure or a stop */
    LEDGER_RUNNING, /* in flight, or waiting for its retry */
    LEDGER_DONE,    /* committed */
};

struct ledger_slice {
    struct plan_slice r;
    enum ledger_status status;
    int64_t max_seen; /* greatest incremental value committed by this slice, INT64_MIN none */
    int attempts;
};

/* The greatest max_seen of the committed prefix of sl[0..n), with slice `upto` counted as
 * committed with `this_max` (upto = SIZE_MAX: none). INT64_MIN when the prefix holds no
 * value, or when `upto` is not part of the prefix (an earlier slice is not committed). */
int64_t ledger_prefix_max(const struct ledger_slice *sl, size_t n, size_t upto, int64_t this_max);

/* The cursor to record: candidate, but never behind committed (INT64_MIN: none). */
int64_t ledger_cursor(int64_t committed, int64_t candidate);

/* Slices committed. */
size_t ledger_done(const struct ledger_slice *sl, size_t n);

#endif
