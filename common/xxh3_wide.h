/* xxh3_wide: XXH3-128 of a row's id hash input on the widest vector unit the CPU has (AVX2
 * where there is one). The digest is XXH3-128's on every unit, only the speed differs: the
 * input of a row (about 420 bytes, names included) hashes in about two thirds of the time
 * SSE2 takes. bench_rowenc's checksum over the ids and the fuzz targets' comparison with
 * the frozen encoder (which hashes through libxxhash) check that the ids do not change. */
#ifndef DSYNC_XXH3_WIDE_H
#define DSYNC_XXH3_WIDE_H

#include <stddef.h>
#include <stdint.h>

/* XXH3-128 of p[0..n): out[0] the low 64 bits, out[1] the high. */
typedef void (*xxh3_wide_fn)(const void *p, size_t n, uint64_t out[2]);

/* The AVX2 implementation when this build has one and the CPU runs it, else NULL (the
 * caller hashes with its own, SSE2 on x86-64). */
xxh3_wide_fn xxh3_wide_pick(void);

#endif
