/* lease_probe: drives sinks/pglease.c against a real PostgreSQL for tests/integration/
 * test_leases.py. Reads one command per line on stdin, runs it on the sink's control
 * connection through the libuv loop, prints one JSON object per line:
 *   ensure
 *   claim UNIT DATASOURCE OWNER TTL [HELD_EPOCH [MIN_FREE]]
 *                                      -> {"granted":..,"epoch":..,"holder":..,"seconds_left":..}
 *   renew OWNER TTL UNIT:EPOCH...      -> {"held":[true,false,...],"live":N}
 *   release OWNER UNIT...              -> {"ok":true}
 *   end_stale TTL                      -> as renew (pgsink_lease_end_stale, then a renewal)
 *   fence UNIT OWNER EPOCH             -> {"ok":true} or {"error":..,"sqlstate":..,"lost":..}
 * Errors print {"error": ..., "sqlstate": ...}. Usage: lease_probe CONFIG_FILE */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "config.h"
#include "pgerr.h"
#include "pglease.h"
#include "pgsink.h"
#include "pgsink_int.h"

static struct pgsink *sink;
static uv_loop_t loop;
static bool done;
static struct json_object *out;

/* The answer came: uv_run returns even when it came from a timer callback, before the loop
 * would block in its poll phase with nothing left to wait for. */
static void answered(void)
{
    done = true;
    uv_stop(&loop);
}

/* claims, renewals and releases run on the sink's lease connection, the rest on control */
static bool on_lease_conn;

static void put_err(const char *err)
{
    out = json_object_new_object();
    json_object_object_add(out, "error", json_object_new_string(err));
    const struct pgerr *e = on_lease_conn ? pgsink_lease_last_error(sink) : pgsink_last_error(sink);
    json_object_object_add(out, "sqlstate", json_object_new_string(e ? e->sqlstate : ""));
    json_object_object_add(out, "lost", json_object_new_boolean(pglease_lost(e)));
}

static void on_plain(void *ud, const char *err)
{
    (void)ud;
    if (err) {
        put_err(err);
    } else {
        out = json_object_new_object();
        json_object_object_add(out, "ok", json_object_new_boolean(1));
    }
    answered();
}

static void on_claim(void *ud, const char *err, const struct pglease_claim *c)
{
    (void)ud;
    if (err) {
        put_err(err);
    } else {
        out = json_object_new_object();
        json_object_object_add(out, "granted", json_object_new_boolean(c->granted));
        json_object_object_add(out, "epoch", json_object_new_int64(c->epoch));
        json_object_object_add(out, "holder", c->holder ? json_object_new_string(c->holder) : NULL);
        json_object_object_add(out, "seconds_left", json_object_new_double(c->seconds_left));
        json_object_object_add(out, "expires_at", json_object_new_string(c->expires_at));
    }
    answered();
}

static void on_renew(void *ud, const char *err, const bool *held, size_t n,
                     const struct pglease_census *c)
{
    (void)ud;
    if (err) {
        put_err(err);
    } else {
        out = json_object_new_object();
        struct json_object *a = json_object_new_array();
        for (size_t i = 0; i < n; i++)
            json_object_array_add(a, json_object_new_boolean(held[i]));
        json_object_object_add(out, "held", a);
        json_object_object_add(out, "live", json_object_new_int(c->live));
        json_object_object_add(out, "min_held", json_object_new_int(c->min_held));
    }
    answered();
}

static void run(void)
{
    while (!done)
        uv_run(&loop, UV_RUN_DEFAULT);
    done = false;
    puts(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
    fflush(stdout);
    json_object_put(out);
    out = NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: lease_probe CONFIG_FILE\n");
        return 64;
    }
    char err[1024];
    struct config *cfg = config_load(argv[1], err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return 78;
    }
    uv_loop_init(&loop);
    sink = pgsink_new(&loop, cfg);
    pgsink_start(sink, on_plain, NULL);
    run();
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        char *words[64];
        size_t n = 0;
        for (char *t = strtok(line, " \n"); t && n < 64; t = strtok(NULL, " \n"))
            words[n++] = t;
        if (n == 0)
            continue;
        on_lease_conn = strcmp(words[0], "claim") == 0 || strcmp(words[0], "renew") == 0 ||
                        strcmp(words[0], "release") == 0 || strcmp(words[0], "end_stale") == 0;
        if (strcmp(words[0], "ensure") == 0) {
            pgsink_lease_ensure(sink, on_plain, NULL);
        } else if (strcmp(words[0], "claim") == 0 && n >= 5 && n <= 7) {
            struct pglease_claim_req rq = {words[1],
                                           words[2],
                                           words[3],
                                           strtod(words[4], NULL),
                                           n > 5 ? strtoll(words[5], NULL, 10) : -1,
                                           n > 6 ? strtod(words[6], NULL) : 0};
            pgsink_lease_claim(sink, &rq, on_claim, NULL);
        } else if (strcmp(words[0], "renew") == 0 && n >= 3) {
            const char *units[64];
            int64_t epochs[64];
            for (size_t i = 3; i < n; i++) {
                char *colon = strrchr(words[i], ':');
                *colon = '\0';
                units[i - 3] = words[i];
                epochs[i - 3] = strtoll(colon + 1, NULL, 10);
            }
            pgsink_lease_renew(sink, words[1], units, epochs, n - 3, strtod(words[2], NULL),
                               on_renew, NULL);
        } else if (strcmp(words[0], "end_stale") == 0 && n == 2) {
            pgsink_lease_end_stale(sink, strtod(words[1], NULL));
            /* its own job on the lease connection: a renewal of nothing behind it answers
             * once it ran */
            pgsink_lease_renew(sink, "-", NULL, NULL, 0, 1, on_renew, NULL);
        } else if (strcmp(words[0], "release") == 0 && n >= 2) {
            pgsink_lease_release(sink, words[1], (const char *const *)words + 2, n - 2, on_plain,
                                 NULL);
        } else if (strcmp(words[0], "fence") == 0 && n == 4) {
            struct pgjob *j = pgsink_job(sink, on_plain, NULL);
            struct buf b = BUF_INIT;
            pglease_fence_sql(&b, cfg->destination_schema, 1, 2, 3);
            const char *p[3] = {words[1], words[2], words[3]};
            pgjob_sql(j, b.data, 3, p, NULL);
            buf_free(&b);
            pgjob_submit(sink->control, j);
        } else {
            fprintf(stderr, "lease_probe: bad command: %s\n", words[0]);
            return 64;
        }
        run();
    }
    pgsink_free(sink);
    uv_run(&loop, UV_RUN_NOWAIT);
    config_free(cfg);
    return 0;
}
