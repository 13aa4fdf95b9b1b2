/* ledger: slice table bookkeeping. See ledger.h. */
#include "ledger.h"

int64_t ledger_prefix_max(const struct ledger_slice *sl, size_t n, size_t upto, int64_t this_max)
{
    int64_t m = INT64_MIN;
    size_t i = 0;
    for (; i < n; i++) {
        int64_t v;
        if (i == upto)
            v = this_max;
        else if (sl[i].status == LEDGER_DONE)
            v = sl[i].max_seen;
        else
            break;
        if (v > m)
            m = v;
    }
    return upto != SIZE_MAX && i <= upto ? INT64_MIN : m;
}

int64_t ledger_cursor(int64_t committed, int64_t candidate)
{
    if (candidate == INT64_MIN)
        return INT64_MIN;
    return committed > candidate ? committed : candidate;
}

size_t ledger_done(const struct ledger_slice *sl, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += sl[i].status == LEDGER_DONE;
    return k;
}
