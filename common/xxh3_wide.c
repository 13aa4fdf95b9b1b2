/* xxh3_wide: XXH3-128 compiled for AVX2 (this file alone is built with -mavx2 on x86-64, see
 * CMakeLists.txt), used only where the CPU has AVX2. */
#include "xxh3_wide.h"

#if defined(__x86_64__) && defined(__AVX2__)
#define XXH_INLINE_ALL
#include <xxhash.h>

static void hash_avx2(const void *p, size_t n, uint64_t out[2])
{
    XXH128_hash_t h = XXH3_128bits(p, n);
    out[0] = h.low64;
    out[1] = h.high64;
}

xxh3_wide_fn xxh3_wide_pick(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? hash_avx2 : NULL;
}
#else
xxh3_wide_fn xxh3_wide_pick(void)
{
    return NULL;
}
#endif
