/* main: the command line, start-up, signals (as uv_signal_t events) and shutdown. Wires the
 * configuration, the Druid client, the PostgreSQL sink and the scheduler onto one loop. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "config.h"
#include "druidsql.h"
#include "druid_client.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "pgsink.h"
#include "progress.h"
#include "scheduler.h"

#define EXIT_USAGE 64
#define DEFAULT_CONFIG "/etc/druid-syncd/config.json"

struct app {
    uv_loop_t loop;
    const char *config_path;
    struct config *cfg;
    struct druid_client *druid;
    struct pgsink *sink;
    struct sched *sched;
    struct metrics *metrics;
    struct progress *progress;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t exit_timer; /* teardown runs from here, never inside a module's callback */
    uv_timer_t probe_timer;
    uv_timer_t stop_deadline; /* a stop ends by this, whatever is still waiting */
    uint64_t exit_requested_at;
    int probe_attempts;
    bool auth_refused; /* Druid answered 401/403 to the start-up probe: wait for a reload */
    bool once;
    const char *const *only; /* --datasource names, NULL-terminated, or NULL */
    bool cli_log_level;
    int exit_code;
    bool stopping;
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: druid-syncd [-c FILE | --config FILE] [--once] [--check-config]\n"
               "                   [--datasource NAME]... [--log-level error|warning|info|debug]\n"
               "                   [--version] [--help]\n"
               "\n"
               "Keeps PostgreSQL tables in step with the datasources of an Apache Druid cluster.\n"
               "\n"
               "  -c, --config FILE     configuration file (default " DEFAULT_CONFIG ")\n"
               "      --once            one sync cycle of every selected datasource, then exit\n"
               "      --check-config    validate the configuration file (no network) and exit\n"
               "      --datasource NAME restrict this run to NAME (repeatable)\n"
               "      --log-level LEVEL error, warning, info (default) or debug\n"
               "      --version         print the version and exit\n"
               "  -h, --help            print this help and exit\n"
               "\n"
               "Exit codes: 0 success, 1 a sync failed, 64 usage error, 78 configuration error.\n");
}

static void close_all(struct app *a)
{
    uv_close((uv_handle_t *)&a->exit_timer, NULL);
    uv_close((uv_handle_t *)&a->probe_timer, NULL);
    uv_close((uv_handle_t *)&a->stop_deadline, NULL);
    uv_close((uv_handle_t *)&a->sig_term, NULL);
    uv_close((uv_handle_t *)&a->sig_int, NULL);
    uv_close((uv_handle_t *)&a->sig_hup, NULL);
    notify_close();
    progress_stop(a->progress);
    a->progress = NULL;
    metrics_stop(a->metrics);
    a->metrics = NULL;
    sched_free(a->sched);
    druid_client_free(a->druid);
    pgsink_free(a->sink);
}

#define CANCEL_GRACE_MS 1000

static void on_exit_timer(uv_timer_t *t)
{
    struct app *a = t->data;
    /* queries abandoned at a hard stop are being cancelled in Druid: let those short
     * requests go out, for a moment */
    if (druid_client_cancels_pending(a->druid) > 0 &&
        uv_now(&a->loop) - a->exit_requested_at < CANCEL_GRACE_MS) {
        uv_timer_start(t, on_exit_timer, 20, 0);
        return;
    }
    close_all(a);
}

/* Ends the loop soon: the modules are freed after the callback that asked has returned. */
static void request_exit(struct app *a, int code)
{
    if (code > a->exit_code)
        a->exit_code = code;
    a->exit_requested_at = uv_now(&a->loop);
    uv_timer_start(&a->exit_timer, on_exit_timer, 0, 0);
}

static void on_finished(void *ud, int code)
{
    request_exit(ud, code);
}

/* Seconds a stop may take beyond shutdown_timeout_seconds: rollbacks, the last state
 * writes and Druid cancels get this long, then the daemon exits anyway (closing its
 * connections rolls back whatever is still open, server-side). */
#define STOP_MARGIN_SECONDS 5.0
#define HARD_STOP_SECONDS 1.5

static void on_stop_deadline(uv_timer_t *t)
{
    struct app *a = t->data;
    log_warning("main", "stop: work still waiting on Druid or PostgreSQL after the stop timeout; "
                        "exiting now (open transactions are rolled back by PostgreSQL)");
    request_exit(a, a->exit_code);
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    if (!a->sched) {
        request_exit(a, 0);
        return;
    }
    if (a->stopping) {
        log_warning("main", "second %s: rolling back everything in flight now", strsignal(signum));
        sched_stop(a->sched, 0);
        uv_timer_start(&a->stop_deadline, on_stop_deadline, (uint64_t)(HARD_STOP_SECONDS * 1000),
                       0);
        return;
    }
    log_info("main", "%s: stopping; slices in flight may finish within %.0f s", strsignal(signum),
             a->cfg->shutdown_timeout_seconds);
    notify_stopping();
    if (a->once)
        a->exit_code = 1; /* an interrupted --once run did not sync everything */
    a->stopping = true;
    uv_timer_start(&a->stop_deadline, on_stop_deadline,
                   (uint64_t)((a->cfg->shutdown_timeout_seconds + STOP_MARGIN_SECONDS) * 1000), 0);
    sched_stop(a->sched, a->cfg->shutdown_timeout_seconds);
}

static void probe_druid(struct app *a);

static void on_hup(uv_signal_t *h, int signum)
{
    (void)signum;
    struct app *a = h->data;
    notify_reloading();
    char err[1024];
    struct config *n = config_load(a->config_path, err, sizeof err);
    if (!n) {
        log_error("config", "reload failed, keeping the running configuration: %s", err);
        notify_status("reload failed, running configuration kept: %s", err);
        notify_ready();
        return;
    }
    for (char **w = n->warnings; *w; w++)
        log_warning("config", "%s", *w);
    /* keys that shape connections already open take effect for new ones only */
    bool same_metrics = (!n->metrics_listen && !a->cfg->metrics_listen) ||
                        (n->metrics_listen && a->cfg->metrics_listen &&
                         strcmp(n->metrics_listen, a->cfg->metrics_listen) == 0);
    if (strcmp(n->postgres, a->cfg->postgres) != 0 ||
        strcmp(n->destination_schema, a->cfg->destination_schema) != 0 ||
        strcmp(n->metadata_column_prefix, a->cfg->metadata_column_prefix) != 0 ||
        n->max_concurrent_queries != a->cfg->max_concurrent_queries || !same_metrics)
        log_warning("config", "changes to postgres, destination_schema, metadata_column_prefix, "
                              "max_concurrent_queries and metrics_listen need a restart; the "
                              "running values are kept");
    if (!a->cli_log_level && n->log_level) {
        enum log_level lvl;
        if (log_level_parse(n->log_level, &lvl) == 0)
            log_set_level(lvl);
    }
    /* keep the running PostgreSQL settings; everything else is the new file's */
    free(n->postgres);
    n->postgres = strdup(a->cfg->postgres);
    free(n->destination_schema);
    n->destination_schema = strdup(a->cfg->destination_schema);
    n->max_concurrent_queries = a->cfg->max_concurrent_queries;
    free(n->metadata_column_prefix);
    n->metadata_column_prefix = strdup(a->cfg->metadata_column_prefix);
    free(n->metrics_listen);
    n->metrics_listen = a->cfg->metrics_listen ? strdup(a->cfg->metrics_listen) : NULL;
    druid_client_set_config(a->druid, n);
    pgsink_set_config(a->sink, n);
    sched_set_config(a->sched, n);
    /* slices in flight keep pointers into the old configuration only through the sink and
     * scheduler, which now hold the new one; the old one can go */
    config_free(a->cfg);
    a->cfg = n;
    log_info("config", "configuration reloaded from %s", a->config_path);
    notify_ready();
    if (a->auth_refused) {
        a->auth_refused = false;
        a->probe_attempts = 0;
        probe_druid(a); /* start-up had stopped at the credentials: try them again */
    }
}

static void on_probe_retry(uv_timer_t *t)
{
    probe_druid(t->data);
}

static void on_probe_done(void *ud, const struct druid_error *e)
{
    struct app *a = ud;
    if (a->stopping) {
        request_exit(a, a->exit_code);
        return;
    }
    if (e->kind == DRUID_ERR_AUTH && !a->once) {
        /* the credentials are wrong: retrying cannot help, restarting cannot either; stay up
         * (so that systemctl reload works) and wait for a corrected configuration */
        log_error("druid",
                  "Druid at %s:%d refused our credentials (HTTP %ld): %s; syncing waits until "
                  "the configuration is reloaded",
                  a->cfg->druid_host, a->cfg->druid_port, e->http_status, druid_error_reason(e));
        a->auth_refused = true;
        notify_ready();
        notify_status("Druid refused our credentials (HTTP %ld): %s; fix them and reload",
                      e->http_status, druid_error_reason(e));
        return;
    }
    if (e->kind == DRUID_ERR_AUTH) {
        log_error("druid", "Druid at %s:%d refused our credentials (HTTP %ld): %s",
                  a->cfg->druid_host, a->cfg->druid_port, e->http_status, druid_error_reason(e));
        notify_status("start-up failed: Druid refused our credentials (HTTP %ld): %s",
                      e->http_status, druid_error_reason(e));
        request_exit(a, 1);
        return;
    }
    if (e->kind != DRUID_OK) {
        bool again = druid_err_retryable(e->kind) && a->probe_attempts < a->cfg->max_retries;
        log_error("druid", "Druid at %s:%d is not usable: %s%s", a->cfg->druid_host,
                  a->cfg->druid_port, e->message, again ? "; retrying" : "");
        if (again) {
            a->probe_attempts++;
            double secs = a->cfg->retry_initial_seconds * (double)(1u << (a->probe_attempts - 1));
            if (secs > a->cfg->retry_max_seconds)
                secs = a->cfg->retry_max_seconds;
            notify_status("waiting for Druid: %s", e->message);
            uv_timer_start(&a->probe_timer, on_probe_retry, (uint64_t)(secs * 1000), 0);
            return;
        }
        notify_status("start-up failed: Druid %s:%d: %s", a->cfg->druid_host, a->cfg->druid_port,
                      e->message);
        request_exit(a, 1);
        return;
    }
    log_info("druid", "Druid at %s:%d answers", a->cfg->druid_host, a->cfg->druid_port);
    notify_ready();
    notify_status("started; discovering datasources");
    sched_start(a->sched);
}

/* READY=1 means both ends were reached: a cheap query proves Druid's SQL and our auth. */
static void probe_druid(struct app *a)
{
    static const struct druid_query_ops ops = {NULL, NULL, on_probe_done};
    druid_query_submit(a->druid, DRUIDSQL_PROBE, NULL, 0, &ops, a);
}

static void on_state_recovered(void *ud, const char *err)
{
    struct app *a = ud;
    if (err)
        log_warning("pg", "correcting state rows left 'syncing' by an earlier run failed: %s", err);
    if (a->stopping) {
        request_exit(a, a->exit_code);
        return;
    }
    probe_druid(a);
}

static bool sched_ok(void *ud)
{
    struct app *a = ud;
    return !a->sched || sched_healthy(a->sched, NULL);
}

static void on_sink_started(void *ud, const char *err)
{
    struct app *a = ud;
    if (err) {
        log_error("pg", "PostgreSQL is not usable: %s", err);
        notify_status("start-up failed: PostgreSQL: %s", err);
        request_exit(a, 1);
        return;
    }
    if (a->stopping) {
        request_exit(a, a->exit_code);
        return;
    }
    log_info("pg", "PostgreSQL ready; destination schema \"%s\"", a->cfg->destination_schema);
    /* a previous run that ended mid-cycle (killed, or PostgreSQL unreachable at its end)
     * left 'syncing' behind: say what happened */
    /* only this instance's datasources: another instance may be mid-cycle on others */
    const char *const *mine = a->only ? a->only : (const char *const *)a->cfg->datasources;
    pgsink_state_recover(a->sink, mine, on_state_recovered, a);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"once", no_argument, NULL, 'o'},
        {"check-config", no_argument, NULL, 'k'},
        {"datasource", required_argument, NULL, 'd'},
        {"log-level", required_argument, NULL, 'l'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct app a;
    memset(&a, 0, sizeof a);
    a.config_path = DEFAULT_CONFIG;
    bool check = false;
    const char **only = NULL;
    size_t nonly = 0;
    enum log_level lvl = LOG_LVL_INFO;
    log_init();
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            a.config_path = optarg;
            break;
        case 'o':
            a.once = true;
            break;
        case 'k':
            check = true;
            break;
        case 'd':
            only = realloc(only, (nonly + 2) * sizeof *only);
            if (!only)
                abort();
            only[nonly++] = optarg;
            only[nonly] = NULL;
            break;
        case 'l':
            if (log_level_parse(optarg, &lvl) != 0) {
                fprintf(stderr,
                        "druid-syncd: --log-level: expected error, warning, info or "
                        "debug, got \"%s\"\n",
                        optarg);
                return EXIT_USAGE;
            }
            a.cli_log_level = true;
            break;
        case 'V':
            printf("druid-syncd %s\n", DSYNC_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "druid-syncd: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    log_set_level(lvl);

    char err[1024];
    a.cfg = config_load(a.config_path, err, sizeof err);
    if (!a.cfg) {
        if (check) {
            printf("%s\n", err); /* the answer --check-config was asked for */
            free(only);
            return CONFIG_EXIT;
        }
        log_error("config", "%s", err);
        notify_status("start-up failed: configuration: %s", err);
        free(only);
        return CONFIG_EXIT;
    }
    for (char **w = a.cfg->warnings; *w; w++) {
        if (check)
            printf("warning: %s\n", *w); /* with the verdict, on stdout */
        else
            log_warning("config", "%s", *w);
    }
    if (check) {
        printf("%s: configuration is valid\n", a.config_path);
        config_free(a.cfg);
        free(only);
        return 0;
    }
    if (!a.cli_log_level && a.cfg->log_level && log_level_parse(a.cfg->log_level, &lvl) == 0)
        log_set_level(lvl);

    uv_loop_init(&a.loop);
    a.druid = druid_client_new(&a.loop, a.cfg);
    a.sink = pgsink_new(&a.loop, a.cfg);
    if (!a.druid || !a.sink) {
        log_error("main", "initialisation failed (out of memory or libcurl)");
        return 1;
    }
    a.only = (const char *const *)only;
    struct sched_opts so = {a.once, (const char *const *)only, on_finished, &a};
    a.sched = sched_new(&a.loop, a.cfg, a.druid, a.sink, &so);
    uv_timer_init(&a.loop, &a.exit_timer);
    a.exit_timer.data = &a;
    uv_timer_init(&a.loop, &a.probe_timer);
    a.probe_timer.data = &a;
    uv_timer_init(&a.loop, &a.stop_deadline);
    a.stop_deadline.data = &a;
    uv_signal_init(&a.loop, &a.sig_term);
    uv_signal_init(&a.loop, &a.sig_int);
    uv_signal_init(&a.loop, &a.sig_hup);
    a.sig_term.data = a.sig_int.data = a.sig_hup.data = &a;
    uv_signal_start(&a.sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&a.sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&a.sig_hup, on_hup, SIGHUP);
    notify_init(&a.loop, sched_ok, &a);
    if (a.cfg->metrics_listen) {
        a.metrics = metrics_start(&a.loop, a.cfg->metrics_listen, a.sched, a.druid, a.sink, err,
                                  sizeof err);
        if (!a.metrics) {
            log_error("metrics", "%s", err);
            notify_status("start-up failed: %s", err);
            a.exit_code = 1;
            close_all(&a);
            uv_run(&a.loop, UV_RUN_DEFAULT);
            uv_loop_close(&a.loop);
            free(a.sched);
            config_free(a.cfg);
            free(only);
            return 1;
        }
    }
    a.progress = progress_start(&a.loop, a.sched, a.once && log_is_tty());
    log_info("main", "druid-syncd %s starting: Druid %s:%d schema \"%s\"%s", DSYNC_VERSION,
             a.cfg->druid_host, a.cfg->druid_port, a.cfg->schema_name,
             a.once ? " (one cycle)" : "");
    pgsink_start(a.sink, on_sink_started, &a);

    uv_run(&a.loop, UV_RUN_DEFAULT);
    uv_loop_close(&a.loop);
    free(a.sched);
    config_free(a.cfg);
    free(only);
    log_info("main", "exiting with status %d", a.exit_code);
    return a.exit_code;
}
