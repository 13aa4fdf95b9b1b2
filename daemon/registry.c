/* registry: known datasources and their selection. See registry.h. */
#include "registry.h"

#include "cycle.h"
#include "log.h"

struct dsync *registry_find(struct sched *s, const char *name)
{
    for (struct dsync *d = s->ds; d; d = d->next)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

bool registry_selects(const struct sched *s, const char *name)
{
    if (!config_selects(s->cfg, name))
        return false;
    if (!s->opts.only)
        return true;
    for (const char *const *o = s->opts.only; *o; o++)
        if (strcmp(*o, name) == 0)
            return true;
    return false;
}

struct discovery_column *registry_copy_cols(const struct discovery_column *c, size_t n)
{
    struct discovery_column *out = sched_xcalloc(n, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        out[i].name = sched_xstrdup(c[i].name);
        out[i].sql_type = sched_xstrdup(c[i].sql_type);
        out[i].ordinal = c[i].ordinal;
    }
    return out;
}

void registry_free_cols(struct discovery_column *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(c[i].name);
        free(c[i].sql_type);
    }
    free(c);
}

void registry_update(struct sched *s, const struct discovery_result *r)
{
    for (struct dsync *d = s->ds; d; d = d->next)
        d->present = false;
    for (size_t i = 0; i < r->ntables; i++) {
        const struct discovery_table *t = &r->tables[i];
        struct dsync *d = registry_find(s, t->name);
        if (!d) {
            d = sched_xcalloc(1, sizeof *d);
            d->s = s;
            d->name = sched_xstrdup(t->name);
            d->sink_key = sched_xstrdup(t->name);
            d->cursor_ms = INT64_MIN;
            d->druid_newest_ms = INT64_MIN;
            d->chunk_newest_ms = d->chunk_synced_ms = INT64_MIN;
            uv_timer_init(s->loop, &d->timer);
            d->timer.data = d;
            d->next = s->ds;
            s->ds = d;
        }
        d->present = true;
        d->selected = registry_selects(s, t->name);
        registry_free_cols(d->cols, d->ncols);
        d->cols = registry_copy_cols(t->cols, t->ncols);
        d->ncols = t->ncols;
    }
}

size_t registry_report_missing(struct sched *s)
{
    size_t missing = 0;
    const char *const *lists[2] = {s->opts.only, (const char *const *)s->cfg->datasources};
    for (int l = 0; l < 2; l++) {
        for (const char *const *o = lists[l]; o && *o; o++) {
            struct dsync *d = registry_find(s, *o);
            if ((d && d->present) || !registry_selects(s, *o))
                continue;
            log_error("sched", "%s: not in Druid's catalog (schema \"%s\"); not synced", *o,
                      s->cfg->schema_name);
            sched_set_last_error(s, "%s: not in Druid's catalog", *o);
            missing++;
        }
    }
    return missing;
}

void registry_reselect(struct sched *s)
{
    for (struct dsync *d = s->ds; d; d = d->next)
        d->selected = registry_selects(s, d->name);
}

static void free_dsync(uv_handle_t *h)
{
    free(h->data);
}

void registry_free(struct sched *s)
{
    while (s->ds) {
        struct dsync *d = s->ds;
        s->ds = d->next;
        cycle_free(d);
        free(d->name);
        free(d->sink_key);
        free(d->lease_unit);
        uv_close((uv_handle_t *)&d->timer, free_dsync);
    }
}
