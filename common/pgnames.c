/* pgnames: collision-free PostgreSQL names for tables, indexes and columns. See pgnames.h. */
#include "pgnames.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define MAX_TRIES 100000u

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

bool pgnames_reserved_table(const char *name)
{
    /* kept in step with sinks/ (STATE_TABLE, PGSINK_META_*) and the tables planned there */
    static const char *const own[] = {"druid_syncd_state", "information_schema_tables",
                                      "information_schema_columns", "druid_syncd_chunks",
                                      "druid_syncd_leases"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (strcmp(name, own[i]) == 0)
            return true;
    return false;
}

/* A prefix of name of at most max bytes, never cutting a UTF-8 character. */
static size_t prefix_len(const char *name, size_t n, size_t max)
{
    size_t keep = n < max ? n : max;
    while (keep > 0 && keep < n && ((unsigned char)name[keep] & 0xC0) == 0x80)
        keep--;
    return keep;
}

void pgnames_candidate(const char *name, unsigned k, char *out)
{
    if (k == 0) {
        sqlident_pg_name(name, out);
        return;
    }
    if (k == 1) {
        sqlident_pg_name_hashed(name, out);
        return;
    }
    size_t n = strlen(name);
    char tail[40];
    int tl =
        snprintf(tail, sizeof tail, "_%016llx_%u", (unsigned long long)XXH3_64bits(name, n), k);
    size_t keep = prefix_len(name, n, SQLIDENT_PG_MAX - (size_t)tl);
    memcpy(out, name, keep);
    memcpy(out + keep, tail, (size_t)tl + 1);
}

/* ---- sets ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void pgnames_set_add(struct pgnames_set *s, const char *name)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = xstrdup(name);
    s->sorted = false;
}

bool pgnames_set_has(struct pgnames_set *s, const char *name)
{
    if (!s->sorted) {
        if (s->n > 1)
            qsort(s->v, s->n, sizeof *s->v, cmp_str);
        s->sorted = true;
    }
    return s->n && bsearch(&name, s->v, s->n, sizeof *s->v, cmp_str) != NULL;
}

void pgnames_set_free(struct pgnames_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
    s->sorted = true;
}

int pgnames_pick(const char *name, struct pgnames_set *taken, bool tables, char *out)
{
    for (unsigned k = 0; k < MAX_TRIES; k++) {
        pgnames_candidate(name, k, out);
        if (out[0] == '\0') /* PostgreSQL has no zero-length identifiers */
            continue;
        if (tables && pgnames_reserved_table(out))
            continue;
        if (pgnames_set_has(taken, out))
            continue;
        pgnames_set_add(taken, out);
        return 0;
    }
    out[0] = '\0';
    return -1;
}

/* ---- tables and indexes ---- */

/* Does a beat b to a table both state rows record? */
static bool better_claim(const char *a, const char *b, const char *table)
{
    if (strcmp(a, table) == 0)
        return true;
    if (strcmp(b, table) == 0)
        return false;
    return strcmp(a, b) < 0;
}

bool pgnames_keeps_table(const char *datasource, const char *table, const char *const *rivals,
                         size_t nrivals, bool other_relation)
{
    if (table[0] == '\0' || other_relation || pgnames_reserved_table(table))
        return false;
    for (size_t i = 0; i < nrivals; i++)
        if (strcmp(rivals[i], datasource) != 0 && better_claim(rivals[i], datasource, table))
            return false;
    return true;
}

char *pgnames_index_base(const char *datasource, const char *column)
{
    size_t n = strlen("druid_syncd_") + strlen(datasource) + 1 + strlen(column) + 1;
    char *s = xrealloc(NULL, n);
    snprintf(s, n, "druid_syncd_%s_%s", datasource, column);
    return s;
}

/* ---- columns ---- */

const char *pgnames_map_get(const struct pgnames_map *m, const char *druid)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->druid[i], druid) == 0)
            return m->pg[i];
    return NULL;
}

void pgnames_map_put(struct pgnames_map *m, const char *druid, const char *pg)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->druid[i], druid) == 0) {
            free(m->pg[i]);
            m->pg[i] = xstrdup(pg);
            return;
        }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->druid = xrealloc(m->druid, m->cap * sizeof *m->druid);
        m->pg = xrealloc(m->pg, m->cap * sizeof *m->pg);
    }
    m->druid[m->n] = xstrdup(druid);
    m->pg[m->n] = xstrdup(pg);
    m->n++;
}

void pgnames_map_free(struct pgnames_map *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->druid[i]);
        free(m->pg[i]);
    }
    free(m->druid);
    free(m->pg);
    memset(m, 0, sizeof *m);
}

int pgnames_columns(struct pgnames_map *map, const char *const *cols, size_t n,
                    const char *const *system, size_t nsystem, const char **out)
{
    /* PostgreSQL's system columns: CREATE TABLE refuses a user column of these names */
    static const char *const pg_system[] = {"tableoid", "cmax", "xmax", "cmin", "xmin", "ctid"};
    struct pgnames_set taken = PGNAMES_SET_INIT;
    for (size_t i = 0; i < sizeof pg_system / sizeof pg_system[0]; i++)
        pgnames_set_add(&taken, pg_system[i]);
    for (size_t i = 0; i < nsystem; i++)
        pgnames_set_add(&taken, system[i]);
    for (size_t i = 0; i < map->n; i++)
        pgnames_set_add(&taken, map->pg[i]);
    int rc = 0;
    /* pass 1: recorded; pass 2: new names that fit verbatim; pass 3: the rest, in order */
    for (int pass = 1; pass <= 3 && rc == 0; pass++) {
        for (size_t i = 0; i < n; i++) {
            if (pass == 1) {
                out[i] = pgnames_map_get(map, cols[i]);
                continue;
            }
            if (out[i])
                continue;
            char pg[PGNAMES_LEN];
            if (pass == 2) {
                if (cols[i][0] == '\0' || strlen(cols[i]) > SQLIDENT_PG_MAX ||
                    pgnames_set_has(&taken, cols[i]))
                    continue;
                strcpy(pg, cols[i]);
                pgnames_set_add(&taken, pg);
            } else if (pgnames_pick(cols[i], &taken, false, pg) != 0) {
                rc = -1;
                break;
            }
            pgnames_map_put(map, cols[i], pg);
            out[i] = pgnames_map_get(map, cols[i]);
        }
    }
    pgnames_set_free(&taken);
    return rc;
}

int64_t pgnames_lock_key(const char *schema)
{
    static const char tag[] = "druid-syncd names";
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        abort();
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, tag, sizeof tag); /* with its NUL: tag and schema stay apart */
    XXH3_64bits_update(st, schema, strlen(schema));
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return (int64_t)h;
}
