/* pgnames: choosing the PostgreSQL names of a datasource's table, range index and columns so
 * that none ever collides. Pure: given the candidates, the names already taken and the
 * recorded mapping, it produces the names; no SQL and no I/O (sinks/pgschema.c reads
 * pg_class and the state row, and records the result).
 *
 * The candidates for a name, in order: 0 the name itself (shortened to a prefix + "_" + 16 hex
 * digits of its hash when longer than 63 bytes, see sqlident), 1 the hashed form
 * prefix + "_" + hash even for a short name, 2, 3, ... the hashed form with a counter,
 * prefix + "_" + hash + "_" + k. The first one that is free is used. */
#ifndef DSYNC_PGNAMES_H
#define DSYNC_PGNAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sqlident.h"

#define PGNAMES_LEN (SQLIDENT_PG_MAX + 1)

/* The daemon's own tables in the destination schema, present and reserved for later use:
 * no datasource is ever given one of these names. */
bool pgnames_reserved_table(const char *name);

/* The k-th candidate for name (see above) into out (PGNAMES_LEN bytes). */
void pgnames_candidate(const char *name, unsigned k, char *out);

/* A set of names (taken names). */
struct pgnames_set {
    char **v;
    size_t n, cap;
    bool sorted;
};
#define PGNAMES_SET_INIT                                                                           \
    {                                                                                              \
        NULL, 0, 0, true                                                                           \
    }
void pgnames_set_add(struct pgnames_set *s, const char *name);
bool pgnames_set_has(struct pgnames_set *s, const char *name);
void pgnames_set_free(struct pgnames_set *s);

/* The first candidate for name that is not in taken and, when tables is set, not a reserved
 * table name; it is added to taken. -1 when a hundred thousand candidates are all taken. */
int pgnames_pick(const char *name, struct pgnames_set *taken, bool tables, char *out);

/* May datasource keep the table its state row records? Not when the name is reserved, when
 * other_relation says the name now belongs to a relation that is not a table (an index, a
 * view), or when one of rivals (other datasources whose state rows record the same table,
 * left by a version that let names collide) has the better claim: a datasource named
 * exactly like the table, otherwise the smaller name. */
bool pgnames_keeps_table(const char *datasource, const char *table, const char *const *rivals,
                         size_t nrivals, bool other_relation);

/* The first candidate for the range index of a table: "druid_syncd_<datasource>_<column>"
 * (column: its PostgreSQL name), as a malloc'd string to pass to pgnames_pick. */
char *pgnames_index_base(const char *datasource, const char *column);

/* Druid column name -> PostgreSQL column name. */
struct pgnames_map {
    char **druid, **pg;
    size_t n, cap;
};
#define PGNAMES_MAP_INIT                                                                           \
    {                                                                                              \
        NULL, NULL, 0, 0                                                                           \
    }
const char *pgnames_map_get(const struct pgnames_map *m, const char *druid);
/* Adds or replaces an entry; both strings are copied. */
void pgnames_map_put(struct pgnames_map *m, const char *druid, const char *pg);
void pgnames_map_free(struct pgnames_map *m);

/* Gives every Druid column cols[i] its PostgreSQL name in out[i] (pointing into map):
 * the recorded one when map has it, so an existing column is never renamed; otherwise the
 * first free candidate, where taken means a system column (system[], and PostgreSQL's own
 * ctid, xmin, ...) or a name the map gives another column. New columns whose name fits
 * verbatim are placed first, so a column named exactly like another's shortened form keeps
 * its own name when both are new. New entries are added to map. -1 when no name is free. */
int pgnames_columns(struct pgnames_map *map, const char *const *cols, size_t n,
                    const char *const *system, size_t nsystem, const char **out);

/* The key of the transaction-scoped advisory lock under which names are allocated in a
 * destination schema (pg_advisory_xact_lock(bigint)). */
int64_t pgnames_lock_key(const char *schema);

#endif
