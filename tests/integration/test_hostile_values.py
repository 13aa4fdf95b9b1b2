"""Hostile values never block a datasource: a NUL in a string is stored as U+FFFD, JSON
nested 1,000 and 5,000 levels deep is stored as jsonb, deeper JSON and text that is not JSON
in a jsonb column are stored as a jsonb string holding the text, timestamps and dates over
PostgreSQL's whole range (BC years, years above 9999) are stored exactly, and a row with a
timestamp beyond PostgreSQL's range is left out with a warning naming it while every other
row is stored. Values are compared inside PostgreSQL (md5 of the UTF-8 bytes, to_char,
epoch millis, jsonb_typeof), with expected values written out here, not recomputed by the
daemon's rules."""
import hashlib
import json
import unittest

import harness
from harness import EnvTestCase, iso_ms, ms_iso, slice_match, snapshot, state_row, tbl

BASE = iso_ms("2021-06-01T00:00:00.000Z")
FFFD = "\ufffd"


def t(sec):
    return ms_iso(BASE + sec * 1000)


def slice_sql(ds, cols):
    """The start of the daemon's slice query (not its COUNT planning queries), for a fault
    `match` before any sync has shown the query."""
    return "SELECT %s FROM \"%s\"" % (", ".join('"%s"' % c for c, _ in cols), ds)


def md5(s):
    return hashlib.md5(s.encode("utf-8")).hexdigest()


# PostgreSQL's own text for a timestamptz in UTC, with the era: 0001-12-31T23:59:59.999 BC
PG_TS = "to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS BC')"
PG_MS = "(extract(epoch FROM %s) * 1000)::bigint"
PG_DATE = "%s::text"  # (to_char would go through timestamp, whose range is smaller)


class HostileValuesTest(EnvTestCase):

    def tearDown(self):
        self.sim.clear_faults()

    def col(self, ds, k, expr):
        rows = self.pg.psql("SELECT (%s)::text FROM %s WHERE k = %d" % (expr, tbl(ds), k))
        self.assertEqual(len(rows), 1, "%s: expected one row k=%d, got %d" % (ds, k, len(rows)))
        return rows[0][0]

    def keys(self, ds):
        return [int(r[0]) for r in self.pg.psql("SELECT k FROM %s ORDER BY k" % tbl(ds))]

    # --- NUL ---------------------------------------------------------------------------

    def test_nul_in_text_and_json(self):
        ds = "h_nul"
        cols = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("s", "VARCHAR"), ("j", "COMPLEX<json>"),
                ("arr", "ARRAY<STRING>")]
        rows = [
            {"__time": t(0), "k": 1, "s": "plain", "j": {"a": 1}, "arr": ["x"]},
            # Druid sends these as "a\u0000b" escapes: the text holds real NULs, and the JSON
            # text inside the COMPLEX<json> string holds the escape \u0000
            {"__time": t(1), "k": 2, "s": "a\u0000b\u0000", "j": {"k": "x\u0000y", "\u0000": [1]},
             "arr": ["p\u0000q", "r"]},
            {"__time": t(2), "k": 3, "s": "\u0000", "j": None, "arr": None},
            {"__time": t(3), "k": 4, "s": "tab\tafter", "j": [1, "two"], "arr": []},
        ]
        self.sim.datasource(ds, cols, rows)
        self.env.config(datasources=[ds])
        self.env.once(expect=0)
        self.assertEqual(self.keys(ds), [1, 2, 3, 4])
        md5s = "md5(convert_to(s, 'UTF8'))"
        self.assertEqual(self.col(ds, 1, md5s), md5("plain"))
        self.assertEqual(self.col(ds, 2, md5s), md5("a" + FFFD + "b" + FFFD))
        self.assertEqual(self.col(ds, 3, md5s), md5(FFFD))
        self.assertEqual(self.col(ds, 4, md5s), md5("tab\tafter"))
        self.assertEqual(self.col(ds, 2, "md5(convert_to(j->>'k', 'UTF8'))"), md5("x" + FFFD + "y"))
        self.assertEqual(self.col(ds, 2, "j->'%s'" % FFFD), "[1]")
        self.assertEqual(self.col(ds, 2, "md5(convert_to(arr->>0, 'UTF8'))"), md5("p" + FFFD + "q"))
        self.assertEqual(self.col(ds, 2, "arr->>1"), "r")
        self.assertEqual(self.col(ds, 1, "j"), '{"a": 1}')
        self.assertEqual(self.col(ds, 4, "j"), '[1, "two"]')
        # re-reading the same values writes nothing and keeps every identity
        snap = snapshot(self.pg, ds)
        self.env.config(datasources=[ds], lookback_seconds=86400)
        self.env.once(expect=0)
        self.assertEqual(snapshot(self.pg, ds), snap)

    # --- deep JSON and text that is not JSON -------------------------------------------

    def test_deep_and_invalid_json(self):
        ds = "h_deep"
        cols = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("j", "COMPLEX<json>"),
                ("j2", "COMPLEX<json>"), ("arr", "ARRAY"), ("x", "COMPLEX<json>")]
        base = [{"__time": t(i), "k": i, "j": {"a": [i]}, "j2": None, "arr": [i, i], "x": "s%d" % i}
                for i in range(3)]
        self.sim.datasource(ds, cols, base)
        self.env.config(datasources=[ds], batch_size=10)
        self.env.once(expect=0)
        more = [{"__time": t(10 + i), "k": 10 + i, "j": {"a": [i]}, "j2": None, "arr": [i],
                 "x": "s%d" % i} for i in range(3)]
        self.sim.append(ds, more)
        # Values this deep cannot go through the test server's JSON encoder: the row is sent
        # as a raw response line, each value JSON text inside a Druid string, as Druid sends
        # COMPLEX<json> and ARRAY values.
        mixed1000 = '{"a":[' * 500 + "1" + "]}" * 500           # 1,000 levels
        obj5000 = '{"a":' * 4999 + "{}" + "}" * 4999            # 5,000 levels (the limit)
        arr20000 = "[" * 20000 + "]" * 20000                     # far past the limit
        classname = "org.apache.druid.hll.VersionOneHyperLogLogCollector"  # not JSON
        line = json.dumps([t(11), 100, mixed1000, obj5000, arr20000, classname])
        self.sim.fault("raw_line", match=slice_match(self.sim, ds), times=1, after_rows=1, line=line)
        self.env.once(expect=0)
        self.assertEqual(self.keys(ds), [0, 1, 2, 10, 11, 12, 100])
        # stored as jsonb: PostgreSQL's own output text of the same values
        self.assertEqual(self.col(ds, 100, "jsonb_typeof(j)"), "object")
        self.assertEqual(self.col(ds, 100, "md5(j::text)"),
                         md5('{"a": [' * 500 + "1" + "]}" * 500))
        self.assertEqual(self.col(ds, 100, "jsonb_typeof(j2)"), "object")
        self.assertEqual(self.col(ds, 100, "md5(j2::text)"),
                         md5('{"a": ' * 4999 + "{}" + "}" * 4999))
        # stored as a jsonb string holding the original text
        self.assertEqual(self.col(ds, 100, "jsonb_typeof(arr)"), "string")
        self.assertEqual(self.col(ds, 100, "md5(arr #>> '{}')"), md5(arr20000))
        self.assertEqual(self.col(ds, 100, "jsonb_typeof(x)"), "string")
        self.assertEqual(self.col(ds, 100, "x #>> '{}'"), classname)
        # the ordinary rows around it
        self.assertEqual(self.col(ds, 11, "j"), '{"a": [1]}')
        self.assertEqual(self.col(ds, 11, "arr"), "[1]")
        self.assertEqual(self.col(ds, 2, "arr"), "[2, 2]")
        self.assertEqual(self.col(ds, 12, "x"), '"s2"')

    # --- timestamps and dates ----------------------------------------------------------

    def test_timestamps_and_dates_over_postgres_range(self):
        ds = "h_time"
        cols = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("t2", "TIMESTAMP"), ("dt", "DATE"),
                ("t3", "TIMESTAMP"), ("d3", "DATE")]
        # Druid prints astronomical years: 0000 is 1 BC, -1000 is 1001 BC
        rows = [
            {"__time": t(2), "k": 2, "t2": "0000-12-31T23:59:59.999Z", "dt": "0000-03-01"},
            {"__time": t(4), "k": 4, "t2": "0001-01-01T00:00:00.000Z", "dt": "0001-01-01"},
            {"__time": t(5), "k": 5, "t2": "10000-01-01T00:00:00.000Z", "dt": "10000-01-01"},
            {"__time": t(6), "k": 6, "t2": "294276-12-31T23:59:59.999Z", "dt": "5874897-12-31"},
            {"__time": t(7), "k": 7, "t2": "2020-02-29T12:00:00.001Z", "dt": "2020-02-29"},
            # one millisecond (or day) beyond PostgreSQL's range: these rows are skipped
            {"__time": t(8), "k": 8, "t2": "294277-01-01T00:00:00.000Z", "dt": None},
            {"__time": t(60), "k": 10, "t2": None, "dt": "5874898-01-01"},
        ]
        self.sim.datasource(ds, cols, [dict(r, t3=None, d3=None) for r in rows])
        self.env.config(datasources=[ds])
        # The test server's calendar code gets dates before 0000-03-01 wrong (it assumes C
        # division): the row with those years is sent as a raw line, as Druid prints it.
        first = json.dumps([t(1), 1, "-4713-11-24T00:00:00.000Z", "-1000-03-01T00:00:00.000Z",
                            "-1000-03-01T12:34:56.789Z", "-4713-11-24T00:00:00.000Z"])
        self.sim.fault("raw_line", match=slice_sql(ds, cols), times=1, after_rows=0, line=first)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 0, err[-4000:])
        self.assertEqual(self.keys(ds), [1, 2, 4, 5, 6, 7])
        want = {
            1: ("4714-11-24T00:00:00.000 BC", -210866803200000, "1001-03-01 BC"),
            2: ("0001-12-31T23:59:59.999 BC", -62135596800001, "0001-03-01 BC"),
            4: ("0001-01-01T00:00:00.000 AD", -62135596800000, "0001-01-01"),
            5: ("10000-01-01T00:00:00.000 AD", 253402300800000, "10000-01-01"),
            6: ("294276-12-31T23:59:59.999 AD", 9224318015999999, "5874897-12-31"),
            7: ("2020-02-29T12:00:00.001 AD", 1582977600001, "2020-02-29"),
        }
        for k, (ts, ms, d) in want.items():
            self.assertEqual(self.col(ds, k, PG_TS % "t2"), ts, "k=%d" % k)
            self.assertEqual(self.col(ds, k, PG_MS % "t2"), str(ms), "k=%d" % k)
            self.assertEqual(self.col(ds, k, PG_DATE % "dt"), d, "k=%d" % k)
        self.assertEqual(self.col(ds, 1, PG_TS % "t3"), "1001-03-01T12:34:56.789 BC")
        self.assertEqual(self.col(ds, 1, PG_MS % "t3"), "-93718985103211")
        self.assertEqual(self.col(ds, 1, PG_DATE % "d3"), "4714-11-24 BC")
        # the log names each skipped row's column and value
        self.assert_logged_skip(err, "t2", "294277-01-01T00:00:00.000Z")
        self.assert_logged_skip(err, "dt", "5874898-01-01")
        # the skipped rows move no cursor (k=10 is the latest row in Druid)
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(7))

        # a row one millisecond before PostgreSQL's first instant, in the next cycle
        self.sim.append(ds, [{"__time": t(70), "k": 11, "t2": "2021-01-01T00:00:00.000Z"}])
        before = json.dumps([t(75), 9, "-4713-11-23T23:59:59.999Z", None, None, None])
        # (after the last row, which keeps the rows in time order)
        self.sim.fault("raw_line", match=slice_sql(ds, cols), times=1, after_rows=10 ** 6, line=before)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 0, err[-4000:])
        self.assert_logged_skip(err, "t2", "-4713-11-23T23:59:59.999Z")
        self.assertEqual(self.keys(ds), [1, 2, 4, 5, 6, 7, 11])
        self.assertEqual(self.col(ds, 11, PG_MS % "t2"), "1609459200000")
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(70))

    def assert_logged_skip(self, err, colname, value):
        lines = [ln for ln in err.splitlines() if value in ln]
        self.assertTrue(lines, "no log line names %s:\n%s" % (value, err[-4000:]))
        self.assertIn('"%s"' % colname, lines[0])
        self.assertIn("skipped", lines[0])

    def test_time_column_far_from_today(self):
        """The incremental column itself in year 0 (1 BC) and beyond 9999, read in several
        slices: planned, bounded and re-read over PostgreSQL's range. (From 0000-03-01 on:
        the test server gets earlier dates wrong.)"""
        ds = "h_ftime"
        cols = [("__time", "TIMESTAMP"), ("k", "BIGINT")]
        stamps = ["0000-03-01T00:00:00.000Z", "0000-06-15T00:00:00.000Z", "0000-09-01T00:00:00.000Z",
                  "0000-12-31T23:59:59.999Z", "0001-01-01T00:00:00.000Z",
                  "1969-12-31T23:59:59.999Z", "2021-06-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z",
                  "10000-01-01T00:00:00.000Z", "294276-12-31T23:59:59.999Z"]
        # and one beyond PostgreSQL's range, in Druid's own range: skipped
        beyond = "300000-01-01T00:00:00.000Z"
        self.sim.datasource(ds, cols, [{"__time": s, "k": i} for i, s in enumerate(stamps + [beyond])])
        self.env.config(datasources=[ds], batch_size=2)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 0, err[-4000:])
        self.assert_logged_skip(err, "__time", beyond)
        # the cursor is the latest stored instant (years compared as numbers, not text)
        self.assertEqual(state_row(self.pg, ds)["cursor"], "294276-12-31T23:59:59.999Z")
        got = [r[0] for r in self.pg.psql("SELECT %s FROM %s ORDER BY k" % (PG_MS % "__time", tbl(ds)))]
        self.assertEqual(got, ["-62162035200000", "-62152876800000", "-62146137600000",
                               "-62135596800001", "-62135596800000", "-1",
                               "1622505600000", "253402300799999", "253402300800000",
                               "9224318015999999"])
        snap = snapshot(self.pg, ds)
        # re-reading (the slices within the longest lookback) rewrites nothing
        self.env.config(datasources=[ds], batch_size=2, lookback_seconds=10 ** 9)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 0, err[-4000:])
        self.assertEqual(snapshot(self.pg, ds), snap)


if __name__ == "__main__":
    harness.main()
