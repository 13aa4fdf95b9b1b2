/* timeutil: conversions between Druid's ISO-8601 timestamps and epoch milliseconds, the
 * representation every cursor and slice bound uses inside the daemon. */
#ifndef DSYNC_TIMEUTIL_H
#define DSYNC_TIMEUTIL_H

#include <stdint.h>

#define TIME_ISO_MAX 48 /* the longest int64 year, " BC" and the NUL fit */

/* PostgreSQL 15's whole range (measured): timestamptz from 4714-11-24 BC 00:00:00 UTC to
 * 294276-12-31 23:59:59.999 UTC in epoch millis, date from 4714-11-24 BC to
 * 5874897-12-31 in days since 1970-01-01. */
#define TIME_PG_TS_MIN_MS (-210866803200000LL) /* 4714-11-24 00:00:00.000Z BC */
#define TIME_PG_TS_MAX_MS 9224318015999999LL   /* 294276-12-31T23:59:59.999Z */
#define TIME_PG_DATE_MIN_DAY (-2440588LL)      /* 4714-11-24 BC (Julian day 0) */
#define TIME_PG_DATE_MAX_DAY 2145042905LL      /* 5874897-12-31 */

/* Parses "2015-09-12T00:46:58.771Z", "...T00:46:58Z", "...+02:00", "2015-09-12" and the
 * SQL form "2015-09-12 00:46:58.771" (read as UTC). 0 on success, -1 if malformed. */
int time_parse_iso_ms(const char *s, int64_t *ms);
/* Years are astronomical, as Joda prints them: at least 4 digits, up to 9 ("-0001" is
 * 2 BC, "0000" is 1 BC, "294276" and "+294276" are read alike). */

/* The calendar date written at the start of s (an ISO timestamp or date, as Druid prints a
 * DATE: local to its offset, which is ignored), in days since 1970-01-01. 0 or -1. */
int time_parse_iso_date(const char *s, int64_t *days);
/* Writes "YYYY-MM-DDTHH:MM:SS.sssZ" (UTC) into out (at least TIME_ISO_MAX bytes), in the
 * same astronomical-year shape the parser reads (Druid's own), for cursors and queries. */
void time_format_iso_ms(int64_t ms, char *out);
/* PostgreSQL timestamptz input text for the same instant: as time_format_iso_ms for years
 * 1 and up; for year 0 and before, the proleptic BC year and a " BC" suffix
 * ("-0001-03-01T00:00:00.000Z" -> "0002-03-01T00:00:00.000Z BC"). Outside PostgreSQL's
 * range (TIME_PG_TS_MIN_MS..TIME_PG_TS_MAX_MS), "-infinity" or "infinity": they compare
 * with every storable instant as ms would, so a query bound keeps its meaning. */
void time_format_pg_ms(int64_t ms, char *out);
/* PostgreSQL date input text for a day since 1970-01-01: "YYYY-MM-DD" or "YYYY-MM-DD BC". */
void time_format_pg_date(int64_t days, char *out);
/* Milliseconds since the epoch, wall clock. */
int64_t time_now_ms(void);

#endif
