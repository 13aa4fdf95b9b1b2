/* timeutil: conversions between Druid's ISO-8601 timestamps and epoch milliseconds, the
 * representation every cursor and slice bound uses inside the daemon. */
#ifndef DSYNC_TIMEUTIL_H
#define DSYNC_TIMEUTIL_H

#include <stdint.h>

#define TIME_ISO_MAX 40

/* Parses "2015-09-12T00:46:58.771Z", "...T00:46:58Z", "...+02:00", "2015-09-12" and the
 * SQL form "2015-09-12 00:46:58.771" (read as UTC). 0 on success, -1 if malformed. */
int time_parse_iso_ms(const char *s, int64_t *ms);
/* Writes "YYYY-MM-DDTHH:MM:SS.sssZ" (UTC) into out (at least TIME_ISO_MAX bytes). */
void time_format_iso_ms(int64_t ms, char *out);
/* Milliseconds since the epoch, wall clock. */
int64_t time_now_ms(void);

#endif
