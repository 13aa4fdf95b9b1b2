/* log: see log.h. Lines are written with one write(2) each so that concurrent writers
 * (and journald's stream reader) never see a line torn in half. Every message passes
 * through log_sanitize, so no text from outside can start a line of its own, forge a
 * journald priority prefix or send a terminal escape; in json mode json-c then escapes the
 * sanitised strings, so the object always parses and decodes to the text line's words. */
#include "log.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level g_level = LOG_LVL_INFO;
static enum log_format g_format = LOG_FORMAT_TEXT;
static char g_instance[192]; /* log_set_instance: every JSON line names it */
static int g_journal;        /* JOURNAL_STREAM set: "<N>" prefixes, no timestamps */
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

int log_format_parse(const char *s, enum log_format *out)
{
    if (s && strcmp(s, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else if (s && strcmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

void log_set_format(enum log_format f)
{
    g_format = f;
}

void log_set_instance(const char *name)
{
    snprintf(g_instance, sizeof g_instance, "%s", name ? name : "");
}

enum log_format log_get_format(void)
{
    return g_format;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when s[0] does not start one. Strict
 * (Unicode table 3-7): no overlong forms, no surrogates, nothing above U+10FFFF. Stops at
 * the first byte that does not fit, so it never reads past a terminating NUL. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t n;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

size_t log_sanitize(char *dst, size_t dstlen, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)(src ? src : "");
    size_t total = 0, used = 0;
    int full = 0; /* once one unit did not fit, nothing after it is written either */
    while (*s) {
        char esc[8];
        const char *unit = esc;
        size_t ulen, n = utf8_seq(s);
        if (n == 1 && *s >= 0x20 && *s != 0x7f) {
            unit = (const char *)s;
            ulen = 1;
        } else if (n == 1 && (*s == '\n' || *s == '\r' || *s == '\t')) {
            esc[0] = '\\';
            esc[1] = *s == '\n' ? 'n' : *s == '\r' ? 'r' : 't';
            ulen = 2;
        } else if (n <= 1) { /* a C0 control, DEL, or a byte outside valid UTF-8 */
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[*s >> 4];
            esc[3] = hex[*s & 15];
            ulen = 4;
            n = 1;
        } else if ((n == 2 && s[0] == 0xc2 && s[1] < 0xa0) ||
                   (n == 3 && s[0] == 0xe2 && s[1] == 0x80 && (s[2] == 0xa8 || s[2] == 0xa9))) {
            /* C1 controls (U+009B is CSI on some terminals), line/paragraph separators */
            unsigned cp = n == 2 ? s[1] : 0x2000u | (s[2] & 0x3fu);
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = hex[(cp >> 12) & 15];
            esc[3] = hex[(cp >> 8) & 15];
            esc[4] = hex[(cp >> 4) & 15];
            esc[5] = hex[cp & 15];
            ulen = 6;
        } else {
            unit = (const char *)s;
            ulen = n;
        }
        if (!full && used + ulen < dstlen) {
            memcpy(dst + used, unit, ulen);
            used += ulen;
        } else {
            full = 1;
        }
        total += ulen;
        s += n;
    }
    if (dstlen > 0)
        dst[used] = '\0';
    return total;
}

/* Sanitises raw into dst (room bytes with its NUL); a message cut to fit ends in
 * LOG_TRUNCATED. Returns its length. */
static size_t sanitize_marked(char *dst, size_t room, const char *raw)
{
    size_t m = log_sanitize(dst, room, raw);
    if (m < room)
        return m;
    log_sanitize(dst, room - (sizeof LOG_TRUNCATED - 1), raw);
    m = strlen(dst);
    memcpy(dst + m, LOG_TRUNCATED, sizeof LOG_TRUNCATED);
    return m + sizeof LOG_TRUNCATED - 1;
}

static void add_str(struct json_object *o, const char *key, const char *val, size_t cap)
{
    if (!val)
        return;
    char clean[512];
    if (cap > sizeof clean)
        cap = sizeof clean;
    sanitize_marked(clean, cap, val);
    json_object_object_add(o, key, json_object_new_string(clean));
}

/* The JSON object for one event into line + n (at most cap - n - 1 bytes, newline not
 * included). Returns the new length, or n when json-c failed (out of memory). */
static size_t json_line(char *line, size_t cap, size_t n, enum log_level lvl, const char *subsys,
                        const struct log_fields *f, const char *raw)
{
    struct timespec ts;
    struct tm tm;
    char when[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03ldZ", ts.tv_nsec / 1000000);
    /* the message gets what the other members leave; escaping can grow it (a backslash
     * becomes two), so shrink and render again until the object fits */
    size_t budget = cap - n - 1;
    char msg[LOG_LINE_MAX];
    for (int tries = 0; tries < 8; tries++) {
        struct json_object *o = json_object_new_object();
        if (!o)
            return n;
        json_object_object_add(o, "time", json_object_new_string(when));
        json_object_object_add(o, "level", json_object_new_string(log_level_name(lvl)));
        add_str(o, "subsystem", subsys, 64);
        if (g_instance[0])
            add_str(o, "instance", g_instance, sizeof g_instance);
        if (f) {
            add_str(o, "datasource", f->datasource, 512);
            if (f->has_rows)
                json_object_object_add(o, "rows", json_object_new_int64(f->rows));
            if (f->slice > 0)
                json_object_object_add(o, "slice", json_object_new_int64(f->slice));
            add_str(o, "error_kind", f->error_kind, 64);
            add_str(o, "sqlstate", f->sqlstate, 16);
            add_str(o, "druid_code", f->druid_code, 128);
            if (f->http_status > 0)
                json_object_object_add(o, "http_status",
                                       json_object_new_int64((int64_t)f->http_status));
            add_str(o, "target", f->target, 32);
        }
        size_t mroom = budget < sizeof msg ? budget : sizeof msg;
        if (mroom <= sizeof LOG_TRUNCATED)
            mroom = sizeof LOG_TRUNCATED + 1;
        sanitize_marked(msg, mroom, raw);
        json_object_object_add(o, "message", json_object_new_string(msg));
        size_t len = 0;
        const char *text = json_object_to_json_string_length(
            o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        if (text && n + len + 1 <= cap) {
            memcpy(line + n, text, len);
            json_object_put(o);
            return n + len;
        }
        json_object_put(o);
        if (!text)
            return n;
        /* scale the message by how much too long the object is (escapes grow evenly
         * enough), a little more each time so that it converges */
        size_t fit = (size_t)((double)mroom * (double)(cap - n - 2) / (double)len);
        budget = fit > 16 ? fit - 16 : sizeof LOG_TRUNCATED + 1;
    }
    return n;
}

static void vlog(enum log_level lvl, const char *subsys, const struct log_fields *f,
                 const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    size_t n = 0;
    /* The raw message is as large as the whole line. Every source byte yields at least one
     * output byte, so when vsnprintf cuts raw (perhaps inside a character), log_sanitize
     * has run out of room well before it reaches that cut. */
    char raw[LOG_LINE_MAX];
    if (vsnprintf(raw, sizeof raw, fmt, ap) < 0)
        raw[0] = '\0';
    if (g_format == LOG_FORMAT_JSON) {
        if (g_journal) /* journald strips it and keeps the level */
            n = (size_t)snprintf(line, sizeof line, "<%d>", (int)lvl);
        size_t m = json_line(line, sizeof line, n, lvl, subsys, f, raw);
        if (m > n) {
            n = m;
            line[n++] = '\n';
            goto write_it;
        }
        /* json-c out of memory: the text line still says it */
        n = 0;
    }
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
    if (n > sizeof line / 2) /* a subsystem tag is a short constant; never let it crowd out */
        n = sizeof line / 2;
    /* message + its NUL, which becomes the newline */
    n += sanitize_marked(line + n, sizeof line - n, raw);
    line[n++] = '\n';
write_it:
    if (g_before)
        g_before();
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
    if (g_after)
        g_after();
}

void log_msg(enum log_level lvl, const char *subsys, const char *fmt, ...)
{
    if (lvl > g_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, subsys, NULL, fmt, ap);
    va_end(ap);
}

void log_event(enum log_level lvl, const char *subsys, const struct log_fields *f, const char *fmt,
               ...)
{
    if (lvl > g_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, subsys, f, fmt, ap);
    va_end(ap);
}
