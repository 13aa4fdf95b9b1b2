/* chunklease: the chunk units of a first load (issue 10), so that several instances read the
 * chunks of one large datasource at once. While a datasource's table is in its first load
 * (initial_load), each slice claims the units of its chunks ("chunk:NAME:START_MS", on the
 * sink's lease connection) before it reads anything; a slice whose chunk another live
 * instance holds is left to it (away), one whose chunk the ledger already records as planned
 * is done. The holder of the datasource waits for the slices left to others (it checks again
 * every few seconds: read by then, or taken over once the other's lease expired); an
 * instance that holds other work only when it has nothing of its own to do helps: it reads
 * the chunks nobody holds and leaves the table's clean-up, its end of cycle and its index
 * build to the holder. A unit taken dirty (rows of someone's unfinished read in its range)
 * makes its slices empty their ranges first. Every commit is fenced by its chunks' units;
 * the units are renewed with the instance's other leases and given back at the end of the
 * cycle. */
#ifndef DSYNC_CHUNKLEASE_H
#define DSYNC_CHUNKLEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dsync;
struct pgsink_slice;

/* Planning ended: the units of the cycle's work items, when it reads under chunk units. */
void chunklease_planned(struct dsync *d);

/* Does slice idx need its chunks' units before it starts? */
bool chunklease_needed(const struct dsync *d, size_t idx);

/* Starts slice idx once its units are held: at once when they are, else after a claim
 * (then the slice may end up away or done instead). Returns false when the slice must wait
 * for a claim of the same units in flight (try it again later). */
bool chunklease_start(struct dsync *d, size_t idx);

/* The slice's sink handle is ready: it empties its range first when a unit was dirty. */
void chunklease_slice_ready(struct dsync *d, size_t idx, struct pgsink_slice *sl);

/* Just before the commit: the fence of slice idx, clean[k] for its items w0+k that it
 * completes. */
void chunklease_fence(struct dsync *d, size_t idx, struct pgsink_slice *sl, const bool *clean);

/* The units of slice idx for its commit log line: "chunk:NAME:START_MS epoch E" (+ " and N
 * more"). */
void chunklease_describe(const struct dsync *d, size_t idx, char *out, size_t n);

/* Slice idx is left to another instance: the holder tries it again in min(lease_seconds / 3,
 * 2 s), also while its other slices run (the other's lease may expire meanwhile). */
void chunklease_away(struct dsync *d, size_t idx);

/* Everything planned is done or away: true when the cycle waits for the away slices (a
 * check again is scheduled); false when it may finish. */
bool chunklease_wait_away(struct dsync *d);

/* Items completed by slices that committed at the same time: their ledger rows, fenced by
 * their units, now. */
void chunklease_record_item(struct dsync *d, size_t item);

/* A fence refused a commit of a chunk unit: the cycle stops new slices and ends
 * interrupted (the datasource's own lease is not affected). */
void chunklease_lost(struct dsync *d, const char *why);

/* Item's ledger row committed (with a slice or by chunklease_record_item): recorded, and its
 * unit given back. */
void chunklease_item_recorded(struct dsync *d, size_t item);

/* The cycle ends: every unit held is given back. */
void chunklease_release(struct dsync *d);

/* For the renewal (lease.c): the units held, with their epochs, appended to units/epochs
 * (room for chunklease_count); unit i of d is entry base + i. */
size_t chunklease_count(const struct dsync *d);
size_t chunklease_collect(struct dsync *d, char **units, int64_t *epochs, size_t *cu_idx);
/* The renewal answered for unit k of d (held: renewed at sent_valid_until). */
void chunklease_renewed(struct dsync *d, size_t k, bool held, uint64_t valid_until);
/* Units not renewed in time: the cycle stops. */
void chunklease_distrust(struct dsync *d, uint64_t now);

/* Whether this instance has room to help with another's first load now. */
bool chunklease_may_help(const struct dsync *d);

#endif
