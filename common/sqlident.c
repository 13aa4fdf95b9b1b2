/* sqlident: identifier quoting and PostgreSQL name shortening. See sqlident.h. */
#include "sqlident.h"

#include <stdio.h>
#include <string.h>
#include <xxhash.h>

void sqlident_quote(struct buf *out, const char *ident)
{
    buf_putc(out, '"');
    for (const char *p = ident; *p; p++) {
        if (*p == '"')
            buf_putc(out, '"');
        buf_putc(out, *p);
    }
    buf_putc(out, '"');
}

void sqlident_quote2(struct buf *out, const char *schema, const char *name)
{
    sqlident_quote(out, schema);
    buf_putc(out, '.');
    sqlident_quote(out, name);
}

static void hashed(const char *name, size_t n, char *out)
{
    /* at most 63 = prefix + '_' + 16 hex digits */
    size_t keep = n < SQLIDENT_PG_MAX - 17 ? n : SQLIDENT_PG_MAX - 17;
    while (keep > 0 && ((unsigned char)name[keep] & 0xC0) == 0x80)
        keep--; /* never cut a multi-byte character in half */
    memcpy(out, name, keep);
    snprintf(out + keep, SQLIDENT_PG_MAX + 1 - keep, "_%016llx",
             (unsigned long long)XXH3_64bits(name, n));
}

void sqlident_pg_name(const char *name, char *out)
{
    size_t n = strlen(name);
    if (n <= SQLIDENT_PG_MAX) {
        memcpy(out, name, n + 1);
        return;
    }
    hashed(name, n, out);
}

void sqlident_pg_name_hashed(const char *name, char *out)
{
    hashed(name, strlen(name), out);
}
