/* textscan: the run scan and the short copy against byte-by-byte definitions, on every
 * length and alignment where the 16-, 8- and 1-byte steps meet, with the stopping byte
 * (and the bytes next to the control range) at every position. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "textscan.h"

static size_t naive_run(const char *s, size_t n, unsigned char c1, unsigned char c2)
{
    size_t i = 0;
    while (i < n && (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] != c1 &&
           (unsigned char)s[i] != c2)
        i++;
    return i;
}

static void test_plain_run(void **state)
{
    (void)state;
    /* the stopping bytes, their neighbours, the control range's edges, high bytes */
    static const unsigned char probes[] = {'"', '\\', 0x00, 0x01, 0x1f, 0x20, 0x21, '!',
                                           '#', '[',  ']',  0x7f, 0x80, 0x9f, 0xa0, 0xff};
    static const unsigned char pairs[][2] = {{'"', '\\'}, {'\\', '\\'}, {'\t', '\n'}};
    char buf[96 + 16];
    for (size_t pi = 0; pi < sizeof pairs / sizeof pairs[0]; pi++) {
        for (size_t off = 0; off < 16; off++) {
            for (size_t n = 0; n <= 80; n++) {
                char *s = buf + off;
                memset(buf, 'a', sizeof buf);
                assert_int_equal(textscan_plain_run(s, n, pairs[pi][0], pairs[pi][1]),
                                 naive_run(s, n, pairs[pi][0], pairs[pi][1]));
                for (size_t k = 0; k < sizeof probes; k++) {
                    for (size_t at = 0; at < n + 2 && at < 90; at++) {
                        memset(buf, 0xc3, sizeof buf); /* high bytes, as UTF-8 text */
                        s[at] = (char)probes[k];
                        if (at + 3 < 90)
                            s[at + 3] = '"'; /* a second stop after the first */
                        assert_int_equal(textscan_plain_run(s, n, pairs[pi][0], pairs[pi][1]),
                                         naive_run(s, n, pairs[pi][0], pairs[pi][1]));
                    }
                }
            }
        }
    }
}

static void test_copy(void **state)
{
    (void)state;
    char src[64], dst[80];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (char)('A' + i % 26);
    for (size_t n = 0; n <= 40; n++) {
        memset(dst, '#', sizeof dst);
        char *end = textscan_copy(dst + 8, src + 3, n);
        assert_ptr_equal(end, dst + 8 + n);
        assert_memory_equal(dst + 8, src + 3, n);
        for (size_t i = 0; i < 8; i++)
            assert_int_equal(dst[i], '#'); /* nothing written before ... */
        for (size_t i = 8 + n; i < sizeof dst; i++)
            assert_int_equal(dst[i], '#'); /* ... or after the n bytes */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_run),
        cmocka_unit_test(test_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
