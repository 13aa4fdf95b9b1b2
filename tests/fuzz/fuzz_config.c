/* fuzz_config: libFuzzer target for the configuration parser (common/config).
 *
 * Input: the configuration file's bytes. They are written to an in-memory file (memfd, mode
 * 0600) and loaded with config_load through /proc/self/fd/N, the path the daemon takes; a
 * NUL-free input is also given to config_parse, and both must agree.
 *
 * Checks: a failure has a message; a success holds what config.h promises (required host,
 * ports and bounds in range, exclude list never NULL, backoff cap >= first backoff, prefix
 * short enough for 63-byte identifiers); config_selects and config_system_column work on it;
 * and the password never appears in an error message (the key is secret). */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <json-c/json.h>

#include "config.h"
#include "log.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int mfd = -1;
static char mpath[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* A fuzzed druid_password_file may name /dev/stdin: never wait on a terminal. */
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    unsetenv("CREDENTIALS_DIRECTORY"); /* the systemd credential is not part of the input */
    log_set_level(LOG_LVL_ERROR);      /* warnings about the file would flood the output */
    mfd = memfd_create("fuzz_config", MFD_CLOEXEC);
    if (mfd < 0 || fchmod(mfd, 0600) != 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(mpath, sizeof mpath, "/proc/self/fd/%d", mfd);
    return 0;
}

static void check_config(const struct config *c)
{
    CHECK(c->druid_host && c->druid_host[0]);
    CHECK(c->druid_port >= 1 && c->druid_port <= 65535);
    CHECK(c->schema_name && c->schema_name[0]);
    CHECK(c->incremental_column && c->incremental_column[0]);
    CHECK(c->postgres != NULL);
    CHECK(c->destination_schema && c->destination_schema[0]);
    CHECK(c->exclude_datasources != NULL);
    CHECK(c->sync_interval_seconds > 0);
    CHECK(c->batch_size >= 1);
    CHECK(c->max_concurrent_queries >= 1 && c->max_concurrent_queries <= 256);
    CHECK(c->request_timeout_seconds > 0);
    CHECK(c->lookback_seconds >= 0);
    CHECK(c->metadata_column_prefix && c->metadata_column_prefix[0]);
    CHECK(strlen(c->metadata_column_prefix) <= 48);
    CHECK(c->max_retries >= 0);
    CHECK(c->retry_initial_seconds > 0 && c->retry_max_seconds >= c->retry_initial_seconds);
    CHECK(c->shutdown_timeout_seconds > 0);
    if (c->druid_password && !c->druid_password_file && !getenv("CREDENTIALS_DIRECTORY"))
        CHECK(c->druid_username != NULL);
    if (c->datasources) {
        for (char **p = c->datasources; *p; p++) {
            CHECK((*p)[0] != '\0');
            bool excluded = false;
            for (char **x = c->exclude_datasources; *x; x++)
                excluded |= strcmp(*x, *p) == 0;
            CHECK(config_selects(c, *p) == !excluded);
        }
    }
    for (char **x = c->exclude_datasources; *x; x++)
        CHECK(!config_selects(c, *x));
    char col[128];
    config_system_column(c, "deleted", col, sizeof col);
    CHECK(strlen(col) == strlen(c->metadata_column_prefix) + 7);
}

/* The druid_password string of the document, when it is written without escapes, at least 8
 * bytes long, and found exactly once in the text (so an error message holding it can only
 * have taken it from that key). NULL otherwise. */
static const char *secret_to_watch(const char *text, size_t n, struct json_object **root)
{
    *root = json_tokener_parse(text);
    struct json_object *v;
    if (!*root || !json_object_object_get_ex(*root, "druid_password", &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    const char *pw = json_object_get_string(v);
    size_t len = strlen(pw);
    if (len < 8 || memchr(pw, '"', len) || memchr(pw, '\\', len))
        return NULL;
    const char *first = memmem(text, n, pw, len);
    if (!first || memmem(first + 1, n - (size_t)(first + 1 - text), pw, len))
        return NULL;
    /* ... and written literally as the value: a password made by escapes ("\ud800" decodes
     * to U+FFFD) may equal other text of the file, such as a key an error rightly names */
    if (first == text || first[-1] != '"' || (size_t)(first - text) + len >= n || first[len] != '"')
        return NULL;
    return pw;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    CHECK(ftruncate(mfd, 0) == 0);
    CHECK(pwrite(mfd, data, size, 0) == (ssize_t)size);

    char err[2048] = "";
    struct config *c = config_load(mpath, err, sizeof err);
    if (c) {
        check_config(c);
    } else {
        CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err));
        /* the message starts with the file name, then says what is wrong */
        CHECK(strncmp(err, mpath, strlen(mpath)) == 0 && err[strlen(mpath)] == ':');
    }

    if (!memchr(data, '\0', size)) {
        char *text = malloc(size + 1);
        CHECK(text != NULL);
        memcpy(text, data, size);
        text[size] = '\0';
        char perr[2048] = "";
        struct config *pc = config_parse(text, perr, sizeof perr);
        CHECK((pc == NULL) == (c == NULL));
        if (!pc) {
            CHECK(perr[0] != '\0');
            /* config_load says the same, after the file name */
            size_t pl = strlen(mpath) + 2, el = strlen(err), ml = strlen(perr);
            if (pl + ml < 1000)
                CHECK(el == pl + ml && strcmp(err + pl, perr) == 0);
            struct json_object *root;
            const char *pw = secret_to_watch(text, size, &root);
            if (pw)
                CHECK(strstr(perr, pw) == NULL);
            json_object_put(root);
        } else {
            check_config(pc);
            CHECK(strcmp(pc->druid_host, c->druid_host) == 0);
            CHECK(pc->druid_port == c->druid_port);
        }
        config_free(pc);
        free(text);
    }
    config_free(c);
    return 0;
}
