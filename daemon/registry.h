/* registry: the datasources the daemon knows and which of them it syncs. Refreshed from
 * each catalog read (present or gone, their columns), selected by the configuration
 * (datasources, exclude_datasources) and the command line (--datasource). */
#ifndef DSYNC_REGISTRY_H
#define DSYNC_REGISTRY_H

#include "sched_int.h"

struct dsync *registry_find(struct sched *s, const char *name);
/* Selected by the configuration and by --datasource. */
bool registry_selects(const struct sched *s, const char *name);
/* Applies a catalog read: new datasources are added, every one's presence, selection and
 * columns refreshed. */
void registry_update(struct sched *s, const struct discovery_result *r);
/* --once: names asked for (--datasource, the datasources key) that Druid does not list.
 * Logs each; returns how many. */
size_t registry_report_missing(struct sched *s);
/* Re-applies the selection after a reload. */
void registry_reselect(struct sched *s);
/* Deep copies of column lists (a cycle keeps its own: discovery may change them). */
struct discovery_column *registry_copy_cols(const struct discovery_column *c, size_t n);
void registry_free_cols(struct discovery_column *c, size_t n);
/* Teardown of the list. */
void registry_free(struct sched *s);

#endif
