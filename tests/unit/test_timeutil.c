/* test_timeutil: ISO-8601 parsing and formatting of epoch milliseconds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

static int64_t parse_ok(const char *s)
{
    int64_t ms = 12345;
    if (time_parse_iso_ms(s, &ms) != 0)
        fail_msg("failed to parse \"%s\"", s);
    return ms;
}

static void check_fmt(int64_t ms, const char *want)
{
    char out[TIME_ISO_MAX];
    time_format_iso_ms(ms, out);
    assert_string_equal(out, want);
}

static void test_druid_shapes(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2015-09-12T00:46:58.771Z"), 1442018818771LL);
    assert_int_equal(parse_ok("2015-09-12T00:46:58Z"), 1442018818000LL);
    assert_int_equal(parse_ok("2015-09-12"), 1442016000000LL);
    assert_int_equal(parse_ok("2015-09-12 00:46:58.771"), 1442018818771LL);
    assert_int_equal(parse_ok("2015-09-12 00:46:58"), 1442018818000LL);
    assert_int_equal(parse_ok("1970-01-01T00:00:00.000Z"), 0);
    /* Druid under sqlTimeZone=America/Los_Angeles */
    assert_int_equal(parse_ok("1999-12-31T16:00:00.000-08:00"), parse_ok("2000-01-01T00:00:00Z"));
    assert_int_equal(parse_ok("2015-09-12T02:46:58.771+02:00"), 1442018818771LL);
    assert_int_equal(parse_ok("2015-09-12T02:46:58.771+0200"), 1442018818771LL);
    assert_int_equal(parse_ok("2015-09-12T06:16:58.771+05:30"), 1442018818771LL);
}

static void test_fraction_digits(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2015-09-12T00:00:00.7Z"), 1442016000700LL);
    assert_int_equal(parse_ok("2015-09-12T00:00:00.07Z"), 1442016000070LL);
    assert_int_equal(parse_ok("2015-09-12T00:00:00.007Z"), 1442016000007LL);
    /* more than millis: truncated, not rounded */
    assert_int_equal(parse_ok("2015-09-12T00:00:00.123999Z"), 1442016000123LL);
    assert_int_equal(parse_ok("2015-09-12T00:00:00.123456789Z"), 1442016000123LL);
}

static void test_before_epoch(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("1969-12-31T23:59:59.999Z"), -1);
    assert_int_equal(parse_ok("1969-12-31T23:59:59.000Z"), -1000);
    assert_int_equal(parse_ok("1900-01-01T00:00:00.000Z"), -2208988800000LL);
    check_fmt(-1, "1969-12-31T23:59:59.999Z");
    check_fmt(-1000, "1969-12-31T23:59:59.000Z");
    check_fmt(-1001, "1969-12-31T23:59:58.999Z");
    check_fmt(-86400000, "1969-12-31T00:00:00.000Z");
    check_fmt(-86400001, "1969-12-30T23:59:59.999Z");
    check_fmt(-2208988800000LL, "1900-01-01T00:00:00.000Z");
}

static void test_format(void **state)
{
    (void)state;
    check_fmt(0, "1970-01-01T00:00:00.000Z");
    check_fmt(1442018818771LL, "2015-09-12T00:46:58.771Z");
    check_fmt(951782400000LL, "2000-02-29T00:00:00.000Z");
    check_fmt(253402300799999LL, "9999-12-31T23:59:59.999Z");
    /* Druid's legacy "MAX(__time) over nothing" value round-trips */
    int64_t ms = parse_ok("-292275055-05-16T16:47:04.192Z");
    assert_int_equal(ms, INT64_MIN);
    check_fmt(INT64_MIN, "-292275055-05-16T16:47:04.192Z");
    check_fmt(INT64_MAX, "292278994-08-17T07:12:55.807Z");
}

static void test_round_trip(void **state)
{
    (void)state;
    srand(7);
    for (int i = 0; i < 20000; i++) {
        int64_t ms = ((int64_t)rand() << 20 ^ rand()) % 400000000000000LL - 200000000000000LL;
        char out[TIME_ISO_MAX];
        time_format_iso_ms(ms, out);
        int64_t back;
        assert_int_equal(time_parse_iso_ms(out, &back), 0);
        assert_int_equal(back, ms);
    }
}

static void test_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "2015",
        "2015-09",
        "2015-9-12",
        "2015-13-01",
        "2015-00-01",
        "2015-02-29",
        "2015-09-31",
        "2015-09-12T",
        "2015-09-12T24:00:00Z",
        "2015-09-12T00:60:00Z",
        "2015-09-12T00:00:60Z",
        "2015-09-12T00:00:00.Z",
        "2015-09-12T00:00:00.000X",
        "2015-09-12T00:00:00.000Z ",
        "2015-09-12T00:00:00+2",
        "2015-09-12T00:00:00+25:00",
        "2015-09-12x",
        "1442018818771",
        "abc",
        "9999999999-01-01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int64_t ms = 42;
        if (time_parse_iso_ms(bad[i], &ms) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(ms, 42);
    }
    int64_t ms;
    assert_int_equal(time_parse_iso_ms(NULL, &ms), -1);
    assert_int_equal(parse_ok("2016-02-29"), 1456704000000LL);
}

/* Expected values below were taken from PostgreSQL 15 (extract(epoch ...) and date
 * subtraction), not from this code. */
static void test_wide_years(void **state)
{
    (void)state;
    /* astronomical years, as Joda prints them: 0000 is 1 BC, -0001 is 2 BC */
    assert_int_equal(parse_ok("0000-01-01T00:00:00.000Z"), -62167219200000LL);
    assert_int_equal(parse_ok("0000-12-31T23:59:59.999Z"), -62135596800001LL);
    assert_int_equal(parse_ok("-0001-12-31T23:59:59.999Z"), -62167219200001LL);
    assert_int_equal(parse_ok("-4000-02-29T12:34:56.789Z"), -188389884303211LL);
    assert_int_equal(parse_ok("-4713-11-24T00:00:00.000Z"), -210866803200000LL);
    assert_int_equal(parse_ok("10000-01-01T00:00:00.000Z"), 253402300800000LL);
    assert_int_equal(parse_ok("+10000-01-01T00:00:00.000Z"), 253402300800000LL);
    assert_int_equal(parse_ok("100000-02-29T12:34:56.789Z"), 3093533123696789LL);
    assert_int_equal(parse_ok("294276-12-31T23:59:59.999Z"), 9224318015999999LL);
    assert_int_equal(parse_ok("294276-12-31T22:59:59.999-01:00"), 9224318015999999LL);

    check_fmt(-62167219200000LL, "0000-01-01T00:00:00.000Z");
    check_fmt(-62135596800001LL, "0000-12-31T23:59:59.999Z");
    check_fmt(-62167219200001LL, "-0001-12-31T23:59:59.999Z");
    check_fmt(-188389884303211LL, "-4000-02-29T12:34:56.789Z");
    check_fmt(-210866803200000LL, "-4713-11-24T00:00:00.000Z");
    check_fmt(253402300800000LL, "10000-01-01T00:00:00.000Z");
    check_fmt(3093533123696789LL, "100000-02-29T12:34:56.789Z");
    check_fmt(9224318015999999LL, "294276-12-31T23:59:59.999Z");
}

static void check_pg(int64_t ms, const char *want)
{
    char out[TIME_ISO_MAX];
    time_format_pg_ms(ms, out);
    assert_string_equal(out, want);
}

static void check_pg_date(int64_t days, const char *want)
{
    char out[TIME_ISO_MAX];
    time_format_pg_date(days, out);
    assert_string_equal(out, want);
}

static void test_pg_text(void **state)
{
    (void)state;
    /* PostgreSQL's era notation: no year 0, BC suffix */
    check_pg(-62135596800000LL, "0001-01-01T00:00:00.000Z");
    check_pg(-62135596800001LL, "0001-12-31T23:59:59.999Z BC");
    check_pg(-62167219200000LL, "0001-01-01T00:00:00.000Z BC");
    check_pg(-62167219200001LL, "0002-12-31T23:59:59.999Z BC");
    check_pg(-188389884303211LL, "4001-02-29T12:34:56.789Z BC");
    check_pg(TIME_PG_TS_MIN_MS, "4714-11-24T00:00:00.000Z BC");
    check_pg(TIME_PG_TS_MAX_MS, "294276-12-31T23:59:59.999Z");
    check_pg(1442018818771LL, "2015-09-12T00:46:58.771Z");
    check_pg(253402300800000LL, "10000-01-01T00:00:00.000Z");
    /* beyond PostgreSQL's range: the infinities, which order the same way against every
     * storable instant (slice bounds) */
    check_pg(TIME_PG_TS_MIN_MS - 1, "-infinity");
    check_pg(INT64_MIN, "-infinity");
    check_pg(TIME_PG_TS_MAX_MS + 1, "infinity");
    check_pg(INT64_MAX, "infinity");
    /* the range constants are PostgreSQL's */
    assert_int_equal(TIME_PG_TS_MIN_MS, -210866803200000LL);
    assert_int_equal(TIME_PG_TS_MAX_MS, 9224318015999999LL);
    assert_int_equal(TIME_PG_DATE_MIN_DAY, -2440588);
    assert_int_equal(TIME_PG_DATE_MAX_DAY, 2145042905);

    check_pg_date(0, "1970-01-01");
    check_pg_date(10956, "1999-12-31");
    check_pg_date(-719162, "0001-01-01");
    check_pg_date(-719163, "0001-12-31 BC");
    check_pg_date(-719528, "0001-01-01 BC");
    check_pg_date(6585322, "20000-01-01");
    check_pg_date(-2440588, "4714-11-24 BC");
    check_pg_date(2145042905, "5874897-12-31");
}

static void test_parse_date(void **state)
{
    (void)state;
    int64_t d = 42;
    /* the date as written, whatever the time and offset */
    assert_int_equal(time_parse_iso_date("1999-12-31T00:00:00.000-08:00", &d), 0);
    assert_int_equal(d, 10956);
    assert_int_equal(time_parse_iso_date("1999-12-31T23:59:59.999+14:00", &d), 0);
    assert_int_equal(d, 10956);
    assert_int_equal(time_parse_iso_date("1999-12-31", &d), 0);
    assert_int_equal(d, 10956);
    assert_int_equal(time_parse_iso_date("20000-01-01T00:00:00.000Z", &d), 0);
    assert_int_equal(d, 6585322);
    assert_int_equal(time_parse_iso_date("0000-01-01T00:00:00.000Z", &d), 0);
    assert_int_equal(d, -719528);
    assert_int_equal(time_parse_iso_date("-4713-11-24T00:00:00.000Z", &d), 0);
    assert_int_equal(d, -2440588);
    assert_int_equal(time_parse_iso_date("5874897-12-31T00:00:00.000Z", &d), 0);
    assert_int_equal(d, 2145042905);
    d = 42;
    assert_int_equal(time_parse_iso_date("2000-13-01T00:00:00.000Z", &d), -1);
    assert_int_equal(time_parse_iso_date("200-01-01", &d), -1);
    assert_int_equal(time_parse_iso_date("2015-02-29", &d), -1);
    assert_int_equal(time_parse_iso_date(NULL, &d), -1);
    assert_int_equal(d, 42);
}

static void test_round_trip_wide(void **state)
{
    (void)state;
    /* over PostgreSQL's whole timestamptz range: 6-digit and negative years both ways */
    srand(11);
    for (int i = 0; i < 20000; i++) {
        uint64_t r = (uint64_t)rand() << 42 ^ (uint64_t)rand() << 21 ^ (uint64_t)rand();
        int64_t span = TIME_PG_TS_MAX_MS - TIME_PG_TS_MIN_MS + 1;
        int64_t ms = TIME_PG_TS_MIN_MS + (int64_t)(r % (uint64_t)span);
        char out[TIME_ISO_MAX];
        time_format_iso_ms(ms, out);
        int64_t back;
        if (time_parse_iso_ms(out, &back) != 0 || back != ms)
            fail_msg("%lld -> \"%s\" did not read back", (long long)ms, out);
    }
}

static void test_now(void **state)
{
    (void)state;
    int64_t now = time_now_ms();
    assert_true(now > 1700000000000LL);
    assert_true(now < 4102444800000LL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_druid_shapes), cmocka_unit_test(test_fraction_digits),
        cmocka_unit_test(test_before_epoch), cmocka_unit_test(test_format),
        cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_wide_years),   cmocka_unit_test(test_pg_text),
        cmocka_unit_test(test_parse_date),   cmocka_unit_test(test_round_trip_wide),
        cmocka_unit_test(test_now),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
