/* pglease: work leases in the destination, for several instances sharing one destination
 * (reference: druid-segments.md section 7). Owns the lease table druid_syncd_leases (one row per
 * work unit: owner, a monotonic epoch that is never reset, expiry in database time) and the
 * fence function druid_syncd_fence(unit, owner, epoch), which a slice transaction calls just
 * before COMMIT: it locks the lease row and raises SQLSTATE PGLEASE_SQLSTATE unless this owner
 * still holds it at that epoch by clock_timestamp() (not now(), the transaction's start). Claims,
 * renewals and releases are short transactions on the control connection, never on a connection
 * that holds a slice; nothing here depends on session state (no advisory session locks, no
 * session SETs), so it works through a transaction-mode pooler. */
#ifndef DSYNC_PGLEASE_H
#define DSYNC_PGLEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "pgsink.h"

#define PGLEASE_TABLE "druid_syncd_leases"
#define PGLEASE_FENCE "druid_syncd_fence"
/* Raised by the fence when the lease is no longer held at the slice's epoch. */
#define PGLEASE_SQLSTATE "DSL01"

/* Creates the lease table and the fence function (under the schema's DDL lock);
 * pgsink_ensure_schema does it too. */
void pgsink_lease_ensure(struct pgsink *s, pgsink_cb cb, void *ud);

/* The fence every write of a datasource carries from now on: slices begun after this call,
 * chunk ledger writes and the resync swap check, in their own transaction just before
 * COMMIT, that owner still holds unit at epoch. unit NULL removes it (nothing fenced). */
void pgsink_fence_set(struct pgsink *s, const char *datasource, const char *unit, const char *owner,
                      int64_t epoch);

/* Heartbeat units ("instance:NAME"): one per daemon, renewed with its leases, so that every
 * instance can count the instances alive and take its share of the work. */
#define PGLEASE_INSTANCE_PREFIX "instance:"
/* A datasource's unit: "ds:NAME". */
#define PGLEASE_DS_PREFIX "ds:"

struct pglease_claim {
    bool granted;           /* this owner holds the unit now */
    int64_t epoch;          /* the fencing token when granted (unchanged when it already
                             * held the unit at held_epoch: its slices in flight stay valid) */
    const char *holder;     /* not granted: who holds it ("nobody": free, but not for long
                             * enough) */
    double seconds_left;    /* not granted: until the holder's lease expires (database time);
                             * granted: the lease's length */
    const char *expires_at; /* the expiry as PostgreSQL prints it */
    bool first_load;        /* not granted: the datasource's table is in its first load, whose
                             * chunks other instances may read (chunk units) */
};
struct pglease_claim_req {
    const char *unit, *datasource, *owner;
    double ttl;
    int64_t held_epoch;      /* the epoch this process holds the unit at, -1 none: any other
                              * take (even under the same owner name) is a new token */
    double min_free_seconds; /* another owner's unit: only once free (released or expired) for
                              * this long; 0 at once */
};
typedef void (*pglease_claim_cb)(void *ud, const char *err, const struct pglease_claim *c);
/* Takes the unit for ttl seconds when it is this owner's, or free as req says: one
 * transaction on the sink's lease connection (the row is created on first use, epoch 0). A
 * take increments the epoch unless this owner held it at held_epoch; the previous holder's
 * fence then fails. c (and its strings) are borrowed for the call; NULL with err on failure. */
void pgsink_lease_claim(struct pgsink *s, const struct pglease_claim_req *req, pglease_claim_cb cb,
                        void *ud);
/* The cause of the last lease operation that failed. */
const struct pgerr *pgsink_lease_last_error(const struct pgsink *s);

/* What a renewal learns about the others, in database time. */
struct pglease_census {
    int live;     /* instances whose heartbeat unit is alive */
    int min_held; /* datasource units held by the least loaded of them */
};
/* held[i]: unit i is still owner's at epochs[i] and now runs ttl seconds from now; false: lost
 * (expired and taken, or released by someone else). NULL (and c NULL) with err on failure. */
typedef void (*pglease_renew_cb)(void *ud, const char *err, const bool *held, size_t n,
                                 const struct pglease_census *c);
void pgsink_lease_renew(struct pgsink *s, const char *owner, const char *const *units,
                        const int64_t *epochs, size_t n, double ttl, pglease_renew_cb cb, void *ud);

/* Ends (pg_terminate_backend) the transactions that druid-syncd instances without any live
 * lease left open for longer than ttl: a frozen instance's COPY, which the server never times
 * out while it waits for the client's data, would otherwise block the new holder. Only
 * sessions of the same role whose application_name is "druid-syncd/NAME" (pgconn), for a NAME
 * that holds nothing alive: a live --once or daemon is never touched. Its own transaction:
 * a refusal (permissions) is logged at debug and changes nothing else. */
void pgsink_lease_end_stale(struct pgsink *s, double ttl);

/* ---- chunk units: the chunks of one datasource's first load, read by several instances ----
 * A chunk unit ("chunk:DATASOURCE:START_MS") covers the range [range_lo, range_hi) of one
 * time chunk. Its row is kept (epoch monotonic) and says dirty while rows of a read that did
 * not finish may lie in its range: a slice commit sets it, the commit of the chunk's ledger
 * row clears it. Whoever takes a dirty unit empties its range before the fast path loads it;
 * the initial-load clean-up of a prepare leaves the ranges of live or dirty units alone. */
#define PGLEASE_CHUNK_PREFIX "chunk:"

struct pglease_chunk_req {
    const char *datasource; /* the live datasource (the ledger's key) */
    const char *owner;
    double ttl;
    size_t n; /* units, in range order (two claimers lock them in the same order) */
    const char *const *units;
    const int64_t *lo, *hi;
    const char *const *fingerprint; /* the chunk as planned: done when the ledger has it */
    bool check_done; /* false: the ledger is not trusted (the table was rebuilt): never done */
};
struct pglease_chunk_got {
    bool granted;       /* this owner holds it now, at epoch */
    int64_t epoch;      /* a new token at every take */
    bool dirty;         /* granted: rows of an unfinished read may be in its range */
    bool done;          /* granted: the ledger records it synced with the planned fingerprint */
    const char *holder; /* not granted: the live holder */
};
/* got[] has n entries; borrowed for the call. NULL with err on failure (nothing taken then:
 * one transaction). */
typedef void (*pglease_chunk_cb)(void *ud, const char *err, const struct pglease_chunk_got *got,
                                 size_t n);
/* Takes every unit that is free (released or expired), in one transaction on the lease
 * connection; units held by another live owner are left. A unit this owner already holds is
 * taken again as a new token too: claim each unit once per cycle. */
void pgsink_chunk_claim(struct pgsink *s, const struct pglease_chunk_req *req, pglease_chunk_cb cb,
                        void *ud);

/* Units held, with the epoch each was taken at: what a commit is fenced by. */
struct pglease_units {
    const char *owner;
    const char *const *units;
    const int64_t *epochs;
    size_t n;
};

/* A slice of chunk units: its commit is fenced by f (taken before the slice's COPY opens)
 * instead of its datasource's fence, each unit marked dirty, or clean where clean[i] (the
 * slice completes that chunk: its ledger row commits with it). Call before the commit. */
void pgsink_slice_fence_chunks(struct pgsink_slice *sl, const struct pglease_units *f,
                               const bool *clean);
/* Initial load: the slice first deletes every row of its range (a dirty unit was taken: rows
 * of another's unfinished read may be there). Call before the first write. */
void pgsink_slice_clear_range(struct pgsink_slice *sl);

/* Ledger rows written under chunk units (a chunk completed by slices that committed at the
 * same time): each unit is fenced and marked clean in the same transaction. */
void pgsink_chunks_write_fenced(struct pgsink *s, const char *datasource,
                                const struct pgsink_chunk *c, size_t n,
                                const struct pglease_units *f, pgsink_cb cb, void *ud);

/* The fences of a slice's commit under chunk units, as statements with literals (owner_lit
 * and the units quoted by the caller): each unit fenced at its epoch and marked dirty, or
 * clean where clean[i] (its ledger row commits in the same transaction). Ends with "; ". */
void pglease_chunk_fence_lit(struct buf *b, const char *schema, const char *owner_lit,
                             const char *const *unit_lits, const int64_t *epochs, const bool *clean,
                             size_t n);

/* Gives the units back (owner and expiry cleared; the epoch stays, so a later take bumps it). */
void pgsink_lease_release(struct pgsink *s, const char *owner, const char *const *units, size_t n,
                          pgsink_cb cb, void *ud);

/* The SQL statement that fences a slice: "SELECT schema.druid_syncd_fence($a, $b, $c)" with
 * the parameter numbers given (the caller passes unit, owner and the epoch as text). */
void pglease_fence_sql(struct buf *b, const char *schema, int p_unit, int p_owner, int p_epoch);

/* The fence as a statement with literals (unit and owner already quoted by the caller). */
void pglease_fence_lit(struct buf *b, const char *schema, const char *unit_lit,
                       const char *owner_lit, int64_t epoch);

/* Is this failure the fence refusing a commit (the lease was lost)? */
bool pglease_lost(const struct pgerr *e);

#endif
