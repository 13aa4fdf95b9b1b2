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
#include "opcmd.h"
#include "pgconn.h"
#include "pgsink.h"
#include "pgerr.h"
#include "progress.h"
#include "retry.h"
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
    uv_timer_t exit_timer;     /* teardown runs from here, never inside a module's callback */
    uv_timer_t probe_timer;    /* the next start-up check of Druid */
    uv_timer_t probe_deadline; /* the probe's whole answer comes within connect_timeout */
    uv_timer_t pg_timer;       /* the next start-up check of PostgreSQL */
    uv_timer_t stop_deadline;  /* a stop ends by this, whatever is still waiting */
    uint64_t exit_requested_at;
    uint64_t checks_started_at;
    struct druid_query *probe_q;
    int probe_attempts, pg_attempts;
    bool druid_ok, pg_ok, pg_busy, sched_started, ready_sent;
    char druid_wait[700], pg_wait[700]; /* STATUS= text while waiting for each; "" reached */
    bool auth_refused; /* Druid answered 401/403 to the start-up probe: wait for a reload */
    bool once;
    const char *const *only; /* --datasource names, NULL-terminated, or NULL */
    bool cli_log_level;
    int exit_code;
    bool stopping;
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: druid-syncd [-c FILE | --config FILE] [--once] [--check-config]\n"
            "       druid-syncd status|plan|resync|pause|resume ... (druid-syncd status --help)\n"
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
    uv_close((uv_handle_t *)&a->probe_deadline, NULL);
    uv_close((uv_handle_t *)&a->pg_timer, NULL);
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
    /* the start-up check of PostgreSQL (with its correction of rows an earlier run left
     * 'syncing') runs side by side with Druid's: a run that gives up on Druid lets it
     * finish, within the connection bound, so that the state it leaves is true */
    if (a->pg_busy && !a->stopping &&
        uv_now(&a->loop) - a->exit_requested_at <
            (uint64_t)(a->cfg->connect_timeout_seconds * 1000.0) + 1000) {
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
    if (!a->sched || !a->sched_started) {
        /* still starting: nothing to finish; checks in flight are dropped with the loop */
        log_info("main", "%s: stopping", strsignal(signum));
        notify_stopping();
        a->stopping = true;
        if (a->probe_q)
            druid_query_cancel(a->probe_q);
        a->probe_q = NULL;
        uv_timer_stop(&a->probe_deadline);
        uv_timer_stop(&a->probe_timer);
        uv_timer_stop(&a->pg_timer);
        request_exit(a, a->once ? 1 : 0);
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
static void apply_log_format(const struct config *c);
static void main_retry_check(uv_timer_t *t);

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
    apply_log_format(n);
    for (char **w = n->warnings; *w; w++)
        log_warning("config", "%s", *w);
    /* keys that shape connections already open take effect for new ones only */
    /* the leases are held under the name the instance started with */
    bool same_instance = (!n->instance_name && !a->cfg->instance_name) ||
                         (n->instance_name && a->cfg->instance_name &&
                          strcmp(n->instance_name, a->cfg->instance_name) == 0);
    bool same_metrics = (!n->metrics_listen && !a->cfg->metrics_listen) ||
                        (n->metrics_listen && a->cfg->metrics_listen &&
                         strcmp(n->metrics_listen, a->cfg->metrics_listen) == 0);
    if (strcmp(n->postgres, a->cfg->postgres) != 0 ||
        strcmp(n->destination_schema, a->cfg->destination_schema) != 0 ||
        strcmp(n->metadata_column_prefix, a->cfg->metadata_column_prefix) != 0 ||
        n->max_concurrent_queries != a->cfg->max_concurrent_queries ||
        n->postgres_writers != a->cfg->postgres_writers || !same_metrics || !same_instance)
        log_warning("config", "changes to postgres, destination_schema, metadata_column_prefix, "
                              "max_concurrent_queries, postgres_writers, metrics_listen and "
                              "instance_name need a restart; the running values are kept");
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
    n->postgres_writers = a->cfg->postgres_writers; /* the writer pool is sized at start */
    free(n->metadata_column_prefix);
    n->metadata_column_prefix = strdup(a->cfg->metadata_column_prefix);
    free(n->metrics_listen);
    n->metrics_listen = a->cfg->metrics_listen ? strdup(a->cfg->metrics_listen) : NULL;
    free(n->instance_name);
    n->instance_name = a->cfg->instance_name ? strdup(a->cfg->instance_name) : NULL;
    druid_client_set_config(a->druid, n);
    pgsink_set_config(a->sink, n);
    sched_set_config(a->sched, n);
    /* slices in flight keep pointers into the old configuration only through the sink and
     * scheduler, which now hold the new one; the old one can go */
    config_free(a->cfg);
    a->cfg = n;
    log_info("config", "configuration reloaded from %s", a->config_path);
    notify_ready();
    if (a->auth_refused || (a->checks_started_at && !a->druid_ok && !a->probe_q)) {
        /* start-up had stopped at the credentials, or waits for Druid: try the new
         * configuration now */
        a->auth_refused = false;
        a->probe_attempts = 0;
        uv_timer_stop(&a->probe_timer);
        probe_druid(a);
    }
}

/* ---- start-up: READY at once, then Druid and PostgreSQL are checked side by side;
 * syncing starts when both answered. Each failed check says why at once (log, STATUS=,
 * druid_syncd_up) and is retried (retry_startup); --once gives up within
 * RETRY_STARTUP_BOUND x connect_timeout_seconds. ---- */

static void set_override(struct app *a, const char *text)
{
    if (a->progress)
        progress_set_override(a->progress, "%s", text);
    else
        notify_status("%s", text);
}

/* STATUS= while start-up waits: what is unreachable and why, else what is being checked. */
static void startup_status(struct app *a)
{
    if (a->sched_started)
        return;
    char text[1500];
    const char *h = a->cfg->druid_host;
    int port = a->cfg->druid_port;
    if (a->pg_wait[0] || a->druid_wait[0])
        snprintf(text, sizeof text, "%s%s%s", a->pg_wait,
                 a->pg_wait[0] && a->druid_wait[0] ? "; " : "", a->druid_wait);
    else if (!a->pg_ok && !a->druid_ok)
        snprintf(text, sizeof text, "starting: checking PostgreSQL and Druid at %s:%d", h, port);
    else if (!a->druid_ok)
        snprintf(text, sizeof text, "starting: PostgreSQL ready; checking Druid at %s:%d", h, port);
    else if (!a->pg_ok)
        snprintf(text, sizeof text, "starting: Druid at %s:%d answers; checking PostgreSQL", h,
                 port);
    else
        snprintf(text, sizeof text, "started; discovering datasources");
    set_override(a, text);
}

static void maybe_start_sched(struct app *a)
{
    if (!a->druid_ok || !a->pg_ok || a->sched_started || a->stopping)
        return;
    a->sched_started = true;
    if (a->progress)
        progress_set_override(a->progress, NULL);
    else
        notify_status("started; discovering datasources");
    sched_start(a->sched);
}

static void fmt_delay(char *out, size_t n, double secs)
{
    snprintf(out, n, secs < 10 ? "%.1f s" : "%.0f s", secs);
}

enum target { T_DRUID, T_PG };

/* One failed check of Druid or PostgreSQL: say why now, then retry or give up. */
static void check_failed(struct app *a, enum target t, const char *reason, bool permanent,
                         const struct log_fields *f)
{
    int *attempts = t == T_DRUID ? &a->probe_attempts : &a->pg_attempts;
    char *wait = t == T_DRUID ? a->druid_wait : a->pg_wait;
    size_t waitlen = t == T_DRUID ? sizeof a->druid_wait : sizeof a->pg_wait;
    char where[300];
    if (t == T_DRUID)
        snprintf(where, sizeof where, "Druid at %s:%d", a->cfg->druid_host, a->cfg->druid_port);
    else
        snprintf(where, sizeof where, "PostgreSQL");
    const char *sub = t == T_DRUID ? "druid" : "pg";
    metrics_set_up(t == T_DRUID ? METRICS_DRUID : METRICS_POSTGRES, false);
    (*attempts)++;
    double elapsed = (double)(uv_now(&a->loop) - a->checks_started_at) / 1000.0;
    if (a->stopping) {
        request_exit(a, a->exit_code);
        return;
    }
    double delay = retry_startup(a->cfg, permanent, *attempts, a->once, elapsed);
    if (delay < 0) {
        log_event(LOG_LVL_ERROR, sub, f, "%s is not usable: %s; giving up", where, reason);
        char text[1200];
        snprintf(text, sizeof text, "start-up failed: %s: %s", where, reason);
        a->sched_started = true; /* nothing overwrites the reason any more */
        if (a->progress)
            progress_set_override(a->progress, "%s", text);
        notify_status("%s", text);
        request_exit(a, 1);
        return;
    }
    char d[32];
    fmt_delay(d, sizeof d, delay);
    log_event(LOG_LVL_ERROR, sub, f, "%s is not usable: %s; retry in %s", where, reason, d);
    snprintf(wait, waitlen, "waiting for %s: %s, retry in %s", where, reason, d);
    startup_status(a);
    uv_timer_start(t == T_DRUID ? &a->probe_timer : &a->pg_timer, main_retry_check,
                   (uint64_t)(delay * 1000.0), 0);
}

static void on_probe_done(void *ud, const struct druid_error *e)
{
    struct app *a = ud;
    a->probe_q = NULL;
    uv_timer_stop(&a->probe_deadline);
    if (a->stopping) {
        request_exit(a, a->exit_code);
        return;
    }
    const struct log_fields *f =
        LOG_FIELDS(.target = "druid", .error_kind = druid_err_kind_name(e->kind),
                   .http_status = e->http_status, .druid_code = e->code[0] ? e->code : NULL);
    if (e->kind == DRUID_ERR_AUTH && !a->once) {
        /* the credentials are wrong: retrying cannot help, restarting cannot either; stay up
         * (so that systemctl reload works) and wait for a corrected configuration */
        log_event(LOG_LVL_ERROR, "druid", f,
                  "Druid at %s:%d refused our credentials (HTTP %ld): %s; syncing waits until "
                  "the configuration is reloaded",
                  a->cfg->druid_host, a->cfg->druid_port, e->http_status, druid_error_reason(e));
        a->auth_refused = true;
        metrics_set_up(METRICS_DRUID, false);
        snprintf(a->druid_wait, sizeof a->druid_wait,
                 "Druid refused our credentials (HTTP %ld): %s; fix them and reload",
                 e->http_status, druid_error_reason(e));
        startup_status(a);
        return;
    }
    if (e->kind == DRUID_ERR_AUTH) {
        char reason[1200];
        snprintf(reason, sizeof reason, "Druid refused our credentials (HTTP %ld): %s",
                 e->http_status, druid_error_reason(e));
        check_failed(a, T_DRUID, reason, true, f);
        return;
    }
    if (e->kind != DRUID_OK) {
        check_failed(a, T_DRUID, e->message, !druid_error_retryable(e), f);
        return;
    }
    log_event(LOG_LVL_INFO, "druid", LOG_FIELDS(.target = "druid"), "Druid at %s:%d answers",
              a->cfg->druid_host, a->cfg->druid_port);
    a->druid_ok = true;
    a->druid_wait[0] = '\0';
    metrics_set_up(METRICS_DRUID, true);
    startup_status(a);
    maybe_start_sched(a);
}

/* The probe's whole answer, not only the connection, is bounded by connect_timeout_seconds:
 * a Druid that accepts connections but never answers is reported as such. */
static void on_probe_deadline(uv_timer_t *t)
{
    struct app *a = t->data;
    if (!a->probe_q)
        return;
    druid_query_cancel(a->probe_q);
    a->probe_q = NULL;
    char reason[200];
    snprintf(reason, sizeof reason,
             "no answer to \"" DRUIDSQL_PROBE "\" within %g s (connect_timeout_seconds)",
             a->cfg->connect_timeout_seconds);
    check_failed(a, T_DRUID, reason, false,
                 LOG_FIELDS(.target = "druid", .error_kind = "transport"));
}

/* A cheap query proves Druid's SQL endpoint and our credentials. */
static void probe_druid(struct app *a)
{
    static const struct druid_query_ops ops = {NULL, NULL, on_probe_done};
    if (a->probe_q || a->stopping)
        return;
    a->probe_q = druid_query_submit(a->druid, DRUIDSQL_PROBE, NULL, 0, &ops, a);
    uv_timer_start(&a->probe_deadline, on_probe_deadline,
                   (uint64_t)(a->cfg->connect_timeout_seconds * 1000.0) + 1, 0);
}

static void on_state_recovered(void *ud, const char *err)
{
    struct app *a = ud;
    a->pg_busy = false;
    if (err)
        log_warning("pg", "correcting state rows left 'syncing' by an earlier run failed: %s", err);
    if (a->stopping) {
        request_exit(a, a->exit_code);
        return;
    }
    a->pg_ok = true;
    a->pg_wait[0] = '\0';
    metrics_set_up(METRICS_POSTGRES, true);
    startup_status(a);
    maybe_start_sched(a);
}

static bool sched_ok(void *ud)
{
    struct app *a = ud;
    return !a->sched || sched_healthy(a->sched, NULL);
}

static void on_sink_started(void *ud, const char *err)
{
    struct app *a = ud;
    if (a->stopping) {
        a->pg_busy = false;
        request_exit(a, a->exit_code);
        return;
    }
    if (err) {
        a->pg_busy = false;
        const struct pgerr *pe = pgsink_last_error(a->sink);
        /* a server that answers with an error (a wrong password, no such database) will
         * say the same again; a connection that failed may come up */
        bool permanent = pe && pe->sqlstate[0] && pgerr_action(pe) != PGERR_RETRY;
        check_failed(a, T_PG, err, permanent,
                     LOG_FIELDS(.target = "postgres", .error_kind = "postgres",
                                .sqlstate = pe && pe->sqlstate[0] ? pe->sqlstate : NULL));
        return;
    }
    log_event(LOG_LVL_INFO, "pg", LOG_FIELDS(.target = "postgres"),
              "PostgreSQL ready; destination schema \"%s\"", a->cfg->destination_schema);
    /* a previous run that ended mid-cycle (killed, or PostgreSQL unreachable at its end)
     * left 'syncing' behind: say what happened */
    /* only this instance's datasources: another instance may be mid-cycle on others */
    const char *const *mine = a->only ? a->only : (const char *const *)a->cfg->datasources;
    pgsink_state_recover(a->sink, mine, sched_instance(a->sched), on_state_recovered, a);
}

static void check_postgres(struct app *a)
{
    if (a->pg_busy || a->stopping)
        return;
    a->pg_busy = true;
    pgsink_start(a->sink, on_sink_started, a);
}

void main_retry_check(uv_timer_t *t)
{
    struct app *a = t->data;
    if (t == &a->probe_timer)
        probe_druid(a);
    else
        check_postgres(a);
}

/* The configuration is valid and the loop runs (and the metrics listener, if any, is up):
 * READY now, so that systemctl start never waits for a peer; then the checks. */
static void startup_go(struct app *a)
{
    if (!a->ready_sent) {
        notify_ready();
        a->ready_sent = true;
    }
    a->checks_started_at = uv_now(&a->loop);
    startup_status(a);
    check_postgres(a);
    probe_druid(a);
}

static void on_metrics_ready(void *ud, const char *err)
{
    struct app *a = ud;
    if (err) {
        log_error("metrics", "%s", err);
        notify_status("start-up failed: %s", err);
        request_exit(a, 1);
        return;
    }
    if (!a->stopping)
        startup_go(a);
}

static void apply_log_format(const struct config *c)
{
    enum log_format f;
    if (c->log_format && log_format_parse(c->log_format, &f) == 0)
        log_set_format(f);
}

int main(int argc, char **argv)
{
    if (argc > 1 && opcmd_is_command(argv[1]))
        return opcmd_main(argc - 1, argv + 1); /* status, plan, resync, pause, resume (SPEC 1) */
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
    if (!check)
        apply_log_format(a.cfg); /* the warnings below are already in the chosen format */
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
    /* the sessions of this instance are named: pg_stat_activity shows them, and another
     * instance can end them once this one is dead or frozen (pglease) */
    pgconn_set_application_name(sched_instance(a.sched));
    uv_timer_init(&a.loop, &a.exit_timer);
    a.exit_timer.data = &a;
    uv_timer_init(&a.loop, &a.probe_timer);
    a.probe_timer.data = &a;
    uv_timer_init(&a.loop, &a.probe_deadline);
    a.probe_deadline.data = &a;
    uv_timer_init(&a.loop, &a.pg_timer);
    a.pg_timer.data = &a;
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
    a.progress = progress_start(&a.loop, a.sched, a.once && log_is_tty());
    log_info("main", "druid-syncd %s starting: Druid %s:%d schema \"%s\"%s", DSYNC_VERSION,
             a.cfg->druid_host, a.cfg->druid_port, a.cfg->schema_name,
             a.once ? " (one cycle)" : "");
    if (a.cfg->metrics_listen) {
        a.metrics = metrics_start(&a.loop, a.cfg->metrics_listen, a.cfg->connect_timeout_seconds,
                                  a.sched, a.druid, a.sink, on_metrics_ready, &a, err, sizeof err);
        if (!a.metrics) {
            log_error("metrics", "%s", err);
            notify_status("start-up failed: %s", err);
            request_exit(&a, 1);
        }
    } else {
        startup_go(&a);
    }

    uv_run(&a.loop, UV_RUN_DEFAULT);
    uv_loop_close(&a.loop);
    free(a.sched);
    config_free(a.cfg);
    free(only);
    log_info("main", "exiting with status %d", a.exit_code);
    return a.exit_code;
}
