/* retry: delays and give-up decisions for failures. See retry.h. */
#include "retry.h"

#include <math.h>
#include <stdio.h>

double retry_backoff(const struct config *c, int attempt, double retry_after)
{
    double b = c->retry_initial_seconds * pow(2.0, attempt > 0 ? attempt - 1 : 0);
    if (b > c->retry_max_seconds)
        b = c->retry_max_seconds;
    if (retry_after > b)
        b = retry_after;
    return b;
}

double retry_druid(const struct config *c, const struct druid_error *e, int attempts, bool stopping,
                   bool *auth)
{
    *auth = e->kind == DRUID_ERR_AUTH;
    /* permanent: a certificate, a handshake, an unknown host, not HTTP, a 4xx: the next
     * cycle tries again, this one fails at once */
    if (*auth || !druid_error_retryable(e) || attempts > c->max_retries || stopping)
        return -1;
    return retry_backoff(c, attempts, e->retry_after);
}

double retry_startup(const struct config *c, bool permanent, int attempts, bool once,
                     double elapsed)
{
    if (!once)
        return permanent ? retry_next_cycle(c, attempts) : retry_backoff(c, attempts, -1);
    if (permanent || attempts > c->max_retries)
        return -1;
    double delay = retry_backoff(c, attempts, -1);
    /* the next attempt may take a whole connect timeout: it must end within the bound */
    if (elapsed + delay + c->connect_timeout_seconds >
        RETRY_STARTUP_BOUND * c->connect_timeout_seconds)
        return -1;
    return delay;
}

double retry_postgres(const struct config *c, const struct pgerr *e, int attempts, bool stopping,
                      bool *schema_lost)
{
    *schema_lost = pgerr_schema_missing(e);
    if (pgerr_action(e) != PGERR_RETRY || attempts > c->max_retries || stopping)
        return -1;
    return retry_backoff(c, attempts, -1);
}

double retry_next_cycle(const struct config *c, int failed_cycles)
{
    double next = c->sync_interval_seconds;
    if (failed_cycles > 0) {
        double b = retry_backoff(c, failed_cycles, -1);
        if (b > next)
            next = b;
    }
    return next;
}

double retry_discovery(const struct config *c, int attempts, bool once)
{
    double delay = retry_backoff(c, attempts, -1);
    if (!once && delay > c->sync_interval_seconds)
        delay = c->sync_interval_seconds;
    return delay;
}

void retry_pg_describe(const struct pgerr *e, char *out, size_t n)
{
    snprintf(out, n, "PostgreSQL (%s%s%s): %s", pgerr_kind(e), e->sqlstate[0] ? ", " : "",
             e->sqlstate, e->message);
}
