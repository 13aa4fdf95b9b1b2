/* pgerr: classification of PostgreSQL failures. See pgerr.h. */
#include "pgerr.h"

#include <stdio.h>
#include <string.h>

static bool is(const struct pgerr *e, const char *code)
{
    return strcmp(e->sqlstate, code) == 0;
}

static bool cls(const struct pgerr *e, const char *two)
{
    return strncmp(e->sqlstate, two, 2) == 0;
}

const char *pgerr_kind(const struct pgerr *e)
{
    if (is(e, "57P01") || is(e, "57P02") || is(e, "57P03"))
        return "shutdown";
    if (e->conn_lost || cls(e, "08") || is(e, "53300"))
        return "connection";
    if (is(e, "40001") || is(e, "40P01") || is(e, "55P03"))
        return "conflict";
    if (is(e, "57014"))
        return "timeout";
    if (is(e, "53100"))
        return "disk_full";
    if (is(e, "42501"))
        return "permission";
    if (is(e, "3F000") || is(e, "42P01"))
        return "schema";
    if (cls(e, "22"))
        return "data";
    if (cls(e, "23"))
        return "constraint";
    return "other";
}

enum pgerr_action pgerr_action(const struct pgerr *e)
{
    const char *k = pgerr_kind(e);
    if (strcmp(k, "shutdown") == 0 || strcmp(k, "connection") == 0 || strcmp(k, "conflict") == 0)
        return PGERR_RETRY;
    return PGERR_FAIL;
}

bool pgerr_schema_missing(const struct pgerr *e)
{
    return is(e, "3F000") || is(e, "42P01");
}

void pgerr_set(struct pgerr *e, const char *sqlstate, bool conn_lost, const char *message)
{
    snprintf(e->sqlstate, sizeof e->sqlstate, "%s", sqlstate ? sqlstate : "");
    e->conn_lost = conn_lost;
    e->timeout = false;
    size_t n = (size_t)snprintf(e->message, sizeof e->message, "%s", message ? message : "");
    if (n >= sizeof e->message)
        n = sizeof e->message - 1;
    while (n > 0 && (e->message[n - 1] == '\n' || e->message[n - 1] == ' '))
        e->message[--n] = '\0';
}
