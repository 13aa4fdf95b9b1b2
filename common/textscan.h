/* textscan: the one fast scan the row decoder and encoder share: how far a run of text goes
 * before a byte that needs attention (a control character, or one of two delimiters). Header
 * only, so that both hot loops inline it. */
#ifndef DSYNC_TEXTSCAN_H
#define DSYNC_TEXTSCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Length of the run at s (n bytes at most) with no control character and neither c1 nor c2:
 * 8 bytes a step (SWAR: a byte below 0x20, or equal to c, sets its high bit in the test),
 * then byte by byte from the word that holds one. */
static inline size_t textscan_plain_run(const char *s, size_t n, unsigned char c1, unsigned char c2)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w, x1, x2;
        memcpy(&w, s + i, 8);
        x1 = w ^ (ones * c1);
        x2 = w ^ (ones * c2);
        if (((w - ones * 0x20) & ~w & highs) | ((x1 - ones) & ~x1 & highs) |
            ((x2 - ones) & ~x2 & highs))
            break;
    }
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == c1 || c == c2)
            break;
        i++;
    }
    return i;
}

#endif
