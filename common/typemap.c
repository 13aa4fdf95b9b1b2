/* typemap: Druid SQL type names -> PostgreSQL column types, and type widening (SPEC 3.1). */
#include "typemap.h"

#include <stddef.h>
#include <strings.h>

static const char *const pg_names[] = {
    [PGT_TEXT] = "text",       [PGT_BIGINT] = "bigint",           [PGT_DOUBLE] = "double precision",
    [PGT_BOOLEAN] = "boolean", [PGT_TIMESTAMPTZ] = "timestamptz", [PGT_DATE] = "date",
    [PGT_JSONB] = "jsonb",
};

/* Compares the bare type name of s (up to '(' or the end, so "DECIMAL(10,2)" and
 * "TIMESTAMP(3)" still match) with name, case-insensitively. */
static int base_is(const char *s, const char *name)
{
    size_t i = 0;
    for (; name[i]; i++) {
        char a = s[i], b = name[i];
        if (a >= 'a' && a <= 'z')
            a = (char)(a - 'a' + 'A');
        if (a != b)
            return 0;
    }
    return s[i] == '\0' || s[i] == '(';
}

static int ends_with_ci(const char *s, const char *suffix)
{
    size_t n = 0, m = 0;
    while (s[n])
        n++;
    while (suffix[m])
        m++;
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

enum pgtype typemap_from_druid(const char *t)
{
    if (!t)
        return PGT_TEXT;
    /* Arrays: "ARRAY", "ARRAY<LONG>", and Calcite's "VARCHAR ARRAY" spelling. */
    if (strncasecmp(t, "ARRAY", 5) == 0 || ends_with_ci(t, " ARRAY"))
        return PGT_JSONB;
    if (strcasecmp(t, "COMPLEX<json>") == 0)
        return PGT_JSONB;
    if (base_is(t, "VARCHAR") || base_is(t, "CHAR"))
        return PGT_TEXT;
    if (base_is(t, "BIGINT") || base_is(t, "INTEGER") || base_is(t, "SMALLINT") ||
        base_is(t, "TINYINT"))
        return PGT_BIGINT;
    if (base_is(t, "DOUBLE") || base_is(t, "FLOAT") || base_is(t, "REAL") || base_is(t, "DECIMAL"))
        return PGT_DOUBLE;
    if (base_is(t, "BOOLEAN"))
        return PGT_BOOLEAN;
    if (base_is(t, "TIMESTAMP"))
        return PGT_TIMESTAMPTZ;
    if (base_is(t, "DATE"))
        return PGT_DATE;
    return PGT_TEXT; /* COMPLEX<...>, OTHER, unknown: stored as Druid serialises them */
}

const char *typemap_pg_name(enum pgtype t)
{
    if ((unsigned)t >= sizeof pg_names / sizeof *pg_names)
        return "text";
    return pg_names[t];
}

int typemap_from_pg_name(const char *n, enum pgtype *out)
{
    static const struct {
        const char *name;
        enum pgtype t;
    } names[] = {
        {"text", PGT_TEXT},
        {"bigint", PGT_BIGINT},
        {"int8", PGT_BIGINT},
        {"double precision", PGT_DOUBLE},
        {"float8", PGT_DOUBLE},
        {"boolean", PGT_BOOLEAN},
        {"bool", PGT_BOOLEAN},
        {"timestamptz", PGT_TIMESTAMPTZ},
        {"timestamp with time zone", PGT_TIMESTAMPTZ},
        {"date", PGT_DATE},
        {"jsonb", PGT_JSONB},
    };
    if (!n)
        return -1;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (strcasecmp(n, names[i].name) == 0) {
            if (out)
                *out = names[i].t;
            return 0;
        }
    }
    return -1;
}

static int pair_is(enum pgtype a, enum pgtype b, enum pgtype x, enum pgtype y)
{
    return (a == x && b == y) || (a == y && b == x);
}

enum pgtype typemap_widen(enum pgtype have, enum pgtype want)
{
    if (have == want)
        return have;
    if (pair_is(have, want, PGT_BIGINT, PGT_DOUBLE))
        return PGT_DOUBLE;
    if (pair_is(have, want, PGT_BOOLEAN, PGT_BIGINT))
        return PGT_BIGINT;
    if (pair_is(have, want, PGT_DATE, PGT_TIMESTAMPTZ))
        return PGT_TIMESTAMPTZ;
    return PGT_TEXT;
}
