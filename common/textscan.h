/* textscan: the fast scan and copy the row decoder and encoder share: how far a run of text
 * goes before a byte that needs attention (a control character, or one of two delimiters),
 * and a copy of a short run without a call. Header only, so that both hot loops inline it. */
#ifndef DSYNC_TEXTSCAN_H
#define DSYNC_TEXTSCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Length of the run at s (n bytes at most) with no control character and neither c1 nor c2:
 * 8 bytes a step (SWAR: a byte below 0x20, or equal to c, sets its high bit in the test;
 * the lowest bit set is always the first such byte, as borrows only run upwards), the last
 * n % 8 bytes one by one; with SSE2, 16 bytes a step before that. */
static inline size_t textscan_plain_run(const char *s, size_t n, unsigned char c1, unsigned char c2)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t i = 0;
#ifdef __SSE2__
    /* 16 bytes a step where SSE2 is there (every x86-64): most strings of a row end in the
     * first step. A byte b is a control character when min(b, 0x1f) == b (unsigned). */
    const __m128i v1 = _mm_set1_epi8((char)c1), v2 = _mm_set1_epi8((char)c2);
    const __m128i ctl = _mm_set1_epi8(0x1f);
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, v1), _mm_cmpeq_epi8(x, v2)),
                                 _mm_cmpeq_epi8(_mm_min_epu8(x, ctl), x));
        unsigned bits = (unsigned)_mm_movemask_epi8(m);
        if (bits)
            return i + (size_t)__builtin_ctz(bits);
    }
#endif
    for (; i + 8 <= n; i += 8) {
        uint64_t w, x1, x2, m;
        memcpy(&w, s + i, 8);
        x1 = w ^ (ones * c1);
        x2 = w ^ (ones * c2);
        m = ((w - ones * 0x20) & ~w & highs) | ((x1 - ones) & ~x1 & highs) |
            ((x2 - ones) & ~x2 & highs);
        if (m) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            return i + (size_t)(__builtin_ctzll(m) >> 3);
#else
            break;
#endif
        }
    }
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == c1 || c == c2)
            break;
        i++;
    }
    return i;
}

/* memcpy(d, s, n), returning d + n. Most fields of a row are a few bytes long: up to 16 are
 * copied with two overlapping loads and stores of a fixed size (inlined, never reading or
 * writing outside the n bytes), longer runs by memcpy. */
static inline char *textscan_copy(char *d, const char *s, size_t n)
{
    if (n >= 8 && n <= 16) {
        memcpy(d, s, 8);
        memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4 && n < 8) {
        memcpy(d, s, 4);
        memcpy(d + n - 4, s + n - 4, 4);
    } else if (n > 16) {
        memcpy(d, s, n);
    } else if (n) {
        d[0] = s[0];
        d[n / 2] = s[n / 2];
        d[n - 1] = s[n - 1];
    }
    return d + n;
}

#endif
