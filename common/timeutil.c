/* timeutil: ISO-8601 <-> epoch milliseconds (proleptic Gregorian, UTC), see timeutil.h. */
#include "timeutil.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Calendar arithmetic by hand (H. Hinnant's days_from_civil / civil_from_days) rather than
 * timegm/gmtime_r: it works for any year Druid can print (including negative ones) and does
 * not depend on the width of time_t. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

/* Reads exactly n digits. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* The date part "[+-]YYYY...-MM-DD" at *p; advances *p past it. */
static int parse_date_part(const char **pp, int64_t *year_out, int *mon_out, int *day_out)
{
    const char *p = *pp;
    int neg = 0;
    if (*p == '-' || *p == '+') {
        neg = *p == '-';
        p++;
    }
    /* Year: at least 4 digits; more only with Druid's out-of-range years. 9 digits keeps
     * every value inside int64 millis. */
    int64_t year = 0;
    int nd = 0;
    while (*p >= '0' && *p <= '9') {
        if (++nd > 9)
            return -1;
        year = year * 10 + (*p++ - '0');
    }
    if (nd < 4)
        return -1;
    if (neg)
        year = -year;
    int mon, day;
    if (*p++ != '-' || digits(&p, 2, &mon) || *p++ != '-' || digits(&p, 2, &day))
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon))
        return -1;
    *pp = p;
    *year_out = year;
    *mon_out = mon;
    *day_out = day;
    return 0;
}

int time_parse_iso_date(const char *s, int64_t *days)
{
    int64_t year;
    int mon, day;
    if (!s || parse_date_part(&s, &year, &mon, &day))
        return -1;
    *days = days_from_civil(year, mon, day);
    return 0;
}

int time_parse_iso_ms(const char *s, int64_t *ms)
{
    if (!s)
        return -1;
    const char *p = s;
    int64_t year;
    int mon, day, hh = 0, mi = 0, ss = 0, frac = 0;
    if (parse_date_part(&p, &year, &mon, &day))
        return -1;
    int64_t offset_min = 0;
    if (*p == 'T' || *p == ' ') {
        p++;
        if (digits(&p, 2, &hh) || *p++ != ':' || digits(&p, 2, &mi))
            return -1;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &ss))
                return -1;
            if (*p == '.' || *p == ',') {
                p++;
                int n = 0;
                /* Up to three digits are millis; further digits are truncated. */
                while (*p >= '0' && *p <= '9') {
                    if (n < 3)
                        frac = frac * 10 + (*p - '0');
                    n++;
                    p++;
                }
                if (n == 0)
                    return -1;
                for (; n < 3; n++)
                    frac *= 10;
            }
        }
        if (hh > 23 || mi > 59 || ss > 59)
            return -1;
        if (*p == 'Z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
            if (digits(&p, 2, &oh))
                return -1;
            if (*p == ':') {
                p++;
                if (digits(&p, 2, &om))
                    return -1;
            } else if (*p >= '0' && *p <= '9') {
                if (digits(&p, 2, &om))
                    return -1;
            }
            if (oh > 23 || om > 59)
                return -1;
            offset_min = sign * (oh * 60 + om);
        }
    }
    if (*p != '\0')
        return -1;
    int64_t days = days_from_civil(year, mon, day);
    int64_t secs = ((int64_t)hh * 60 + mi - offset_min) * 60 + ss;
    /* Borrow one day from the time part so that instants just above INT64_MIN (Druid's
     * minimum, see the tests) do not overflow the intermediate product. */
    int64_t r, tod = secs * 1000 + frac;
    if (days < 0) {
        days++;
        tod -= 86400000;
    }
    if (__builtin_mul_overflow(days, (int64_t)86400000, &r) || __builtin_add_overflow(r, tod, &r))
        return -1;
    *ms = r;
    return 0;
}

/* Writes the instant; bc selects PostgreSQL's era notation for years before 1. */
static void format_ms(int64_t ms, char *out, int bc)
{
    /* Floor division so that instants before 1970 get the right day and a positive
     * time of day. */
    int64_t days = ms / 86400000, rem = ms % 86400000;
    if (rem < 0) {
        rem += 86400000;
        days--;
    }
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    int msec = (int)(rem % 1000), sec = (int)(rem / 1000);
    int era_bc = bc && y < 1;
    if (era_bc)
        y = 1 - y; /* astronomical 0 is 1 BC, -1 is 2 BC */
    /* Same shape as Joda's dateTime(): at least four year digits, '-' for negative years. */
    snprintf(out, TIME_ISO_MAX, "%s%04lld-%02d-%02dT%02d:%02d:%02d.%03dZ%s", y < 0 ? "-" : "",
             (long long)(y < 0 ? -y : y), m, d, sec / 3600, sec / 60 % 60, sec % 60, msec,
             era_bc ? " BC" : "");
}

void time_format_iso_ms(int64_t ms, char *out)
{
    format_ms(ms, out, 0);
}

void time_format_pg_ms(int64_t ms, char *out)
{
    if (ms < TIME_PG_TS_MIN_MS || ms > TIME_PG_TS_MAX_MS)
        snprintf(out, TIME_ISO_MAX, "%s", ms < 0 ? "-infinity" : "infinity");
    else
        format_ms(ms, out, 1);
}

void time_format_pg_date(int64_t days, char *out)
{
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    int era_bc = y < 1;
    if (era_bc)
        y = 1 - y;
    snprintf(out, TIME_ISO_MAX, "%04lld-%02d-%02d%s", (long long)y, m, d, era_bc ? " BC" : "");
}

int64_t time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
