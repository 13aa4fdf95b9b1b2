/* fuzz_druid_error: libFuzzer target for Druid's error responses
 * (common/druid_error: druid_error_from_response).
 *
 * Input: a first line "<status>[ <Retry-After value>]", then the body (the rest, not
 * NUL-terminated, in an exact-size buffer so that a read past it is caught). No '\n' at all:
 * the whole input is the status line and the body is empty.
 *
 * Checks: the classification is one of the error kinds (never "ok"), 401/403 are always auth
 * errors, a non-JSON body with 429/503/504 is transient, every text field is terminated inside
 * its array and the message is never empty, and retry_after is -1 without the header and
 * otherwise -1 or a delay the scheduler can arm a timer with (finite, >= 0, and small enough
 * that its milliseconds fit the 64-bit timer argument with a wide margin: the scheduler does
 * (uint64_t)(seconds * 1000.0), undefined for infinity). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "druid_error.h"

/* a delay whose milliseconds are still exact in a double, and far inside uint64 */
#define DELAY_MAX_SECONDS (9007199254740992.0 / 1000)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t head = nl ? (size_t)(nl - data) : size;

    long status = 0;
    size_t i = 0;
    while (i < head && i < 6 && data[i] >= '0' && data[i] <= '9')
        status = status * 10 + (data[i++] - '0');
    char *retry_after = NULL;
    if (i < head && data[i] == ' ') {
        /* the header value as druid_client.c hands it over: at most 63 bytes, NUL-ended */
        size_t n = head - i - 1;
        if (n > 63)
            n = 63;
        retry_after = malloc(n + 1);
        CHECK(retry_after != NULL);
        memcpy(retry_after, data + i + 1, n);
        retry_after[n] = '\0';
    }
    size_t blen = nl ? size - head - 1 : 0;
    char *body = blen ? malloc(blen) : NULL;
    if (blen) {
        CHECK(body != NULL);
        memcpy(body, nl + 1, blen);
    }

    struct druid_error e;
    memset(&e, 0xa5, sizeof e); /* every field must be written */
    druid_error_from_response(status, body, blen, retry_after, &e);

    CHECK(e.kind > DRUID_OK && e.kind <= DRUID_ERR_PROTOCOL);
    CHECK(e.http_status == status);
    CHECK(terminated(e.code, sizeof e.code));
    CHECK(terminated(e.category, sizeof e.category));
    CHECK(terminated(e.message, sizeof e.message));
    CHECK(e.message[0] != '\0');
    CHECK(druid_err_kind_name(e.kind) != NULL);
    if (status == 401 || status == 403)
        CHECK(e.kind == DRUID_ERR_AUTH);
    if (!retry_after) {
        CHECK(e.retry_after == -1);
    } else {
        CHECK(e.retry_after == -1 || (isfinite(e.retry_after) && e.retry_after >= 0 &&
                                      e.retry_after <= DELAY_MAX_SECONDS));
    }
    /* A body that is not JSON (here: one that does not start like JSON) never classifies by
     * its content: 429/503/504 back off. */
    if ((status == 429 || status == 503 || status == 504) &&
        (blen == 0 || (body[0] != '{' && body[0] != ' ' && body[0] != '\t' && body[0] != '\n' &&
                       body[0] != '\r' && body[0] != '/')))
        CHECK(e.kind == DRUID_ERR_TRANSIENT);

    free(body);
    free(retry_after);
    return 0;
}
