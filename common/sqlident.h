/* sqlident: identifiers going into SQL text, for Druid and PostgreSQL alike. Both quote
 * with double quotes and escape an embedded quote by doubling it; every identifier the
 * daemon writes goes through here. Also the deterministic shortening of names longer than
 * PostgreSQL's 63-byte limit. */
#ifndef DSYNC_SQLIDENT_H
#define DSYNC_SQLIDENT_H

#include <stddef.h>

#include "buf.h"

#define SQLIDENT_PG_MAX 63

/* Appends "ident" with embedded '"' doubled. */
void sqlident_quote(struct buf *out, const char *ident);
/* Appends "schema"."name". */
void sqlident_quote2(struct buf *out, const char *schema, const char *name);
/* Writes name into out when it fits in 63 bytes; otherwise a prefix of it (cut on a UTF-8
 * character boundary) + "_" + 16 hex digits of a hash of the whole name. out must hold
 * SQLIDENT_PG_MAX + 1 bytes. */
void sqlident_pg_name(const char *name, char *out);
/* Always the shortened form (prefix + "_" + hash), even for a short name: for a name that
 * must not be used verbatim (it is taken by one of the daemon's own tables). */
void sqlident_pg_name_hashed(const char *name, char *out);

#endif
