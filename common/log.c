/* log: see log.h. Lines are written with one write(2) each so that concurrent writers
 * (and journald's stream reader) never see a line torn in half. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level g_level = LOG_LVL_INFO;
static int g_journal; /* JOURNAL_STREAM set: "<N>" prefixes, no timestamps */
static void (*g_before)(void);
static void (*g_after)(void);

void log_set_hooks(void (*before)(void), void (*after)(void))
{
    g_before = before;
    g_after = after;
}

int log_is_tty(void)
{
    return !g_journal && isatty(STDERR_FILENO);
}

void log_init(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    g_journal = js && *js;
}

void log_set_level(enum log_level lvl)
{
    g_level = lvl;
}

enum log_level log_get_level(void)
{
    return g_level;
}

static const struct {
    const char *name;
    enum log_level lvl;
} level_names[] = {
    {"error", LOG_LVL_ERROR},
    {"warning", LOG_LVL_WARNING},
    {"info", LOG_LVL_INFO},
    {"debug", LOG_LVL_DEBUG},
};

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; s && i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(s, level_names[i].name) == 0) {
            *out = level_names[i].lvl;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(enum log_level lvl)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++)
        if (level_names[i].lvl == lvl)
            return level_names[i].name;
    return "?";
}

void log_msg(enum log_level lvl, const char *subsys, const char *fmt, ...)
{
    if (lvl > g_level)
        return;
    char line[4096];
    size_t n = 0;
    if (g_journal) {
        n = (size_t)snprintf(line, sizeof line, "<%d>%s: ", (int)lvl, subsys);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ %-7s %s: ", ts.tv_nsec / 1000000,
                              log_level_name(lvl), subsys);
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m;
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    /* A message must stay one line: fold embedded newlines (e.g. from Druid's messages). */
    for (size_t i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[n++] = '\n';
    if (g_before)
        g_before();
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
    if (g_after)
        g_after();
}
