"""Every Druid type and the awkward values: 64-bit extremes, non-finite doubles,
milliseconds, NULL vs '', control characters, quoting, unicode, multi-value strings,
JSON and array columns. Values are compared inside PostgreSQL (hex of the UTF-8 bytes,
typed literals), never by parsing psql's text output."""
import json
import unittest

import harness
from harness import EnvTestCase, Env, tbl

DS = "types"
COLS = [
    ("__time", "TIMESTAMP"), ("k", "BIGINT"), ("s", "VARCHAR"), ("n", "BIGINT"), ("i", "INTEGER"),
    ("d", "DOUBLE"), ("f", "FLOAT"), ("b", "BOOLEAN"), ("t2", "TIMESTAMP"), ("dt", "DATE"),
    ("arr", "ARRAY"), ("arrl", "ARRAY<BIGINT>"), ("j", "COMPLEX<json>"), ("h", "COMPLEX<hyperUnique>"),
    ("mv", "VARCHAR")]

NASTY = "tab\there nl\nthere cr\rback\\slash dq\"sq' end"
UNICODE = "caf\u00e9 \u65e5\u672c\u8a9e \U0001F600"
JSON_OBJ = {"a": [1, 2, {"b": None}], "u": "\u00e9", "big": 9223372036854775807, "q": "x\"y"}

ROWS = [
    {"__time": "2020-01-01T00:00:00.123Z", "k": 1, "s": "", "n": 9223372036854775807, "i": 7,
     "d": "NaN", "f": 0.1, "b": True, "t2": "2021-03-04T05:06:07.089Z", "dt": "2020-02-29",
     "arr": ["x", "y"], "arrl": [1, 9223372036854775807], "j": JSON_OBJ, "h": "AQAAAQAAAAHNBA==",
     "mv": ["a", "b"]},
    {"__time": "2020-01-01T00:00:00.124Z", "k": 2, "s": None, "n": -9223372036854775808, "i": -7,
     "d": "Infinity", "f": 1.0E7, "b": False, "t2": "1999-12-31T23:59:59.999Z", "dt": "1970-01-01",
     "arr": [], "arrl": [-9223372036854775808], "j": {}, "h": None, "mv": ["single"]},
    {"__time": "2020-01-01T00:00:01.000Z", "k": 3, "s": NASTY, "n": 9007199254740993, "i": 0,
     "d": "-Infinity", "f": -2.5, "b": None, "t2": None, "dt": None,
     "arr": ["with \"quote\"", "\u00e9"], "arrl": None, "j": [1, "two", None], "h": None, "mv": None},
    {"__time": "2020-01-01T00:00:02.000Z", "k": 4, "s": "\\N", "n": 0, "i": None,
     "d": 1.0E7, "f": None, "b": True, "t2": "2020-01-01T00:00:00.000Z", "dt": "2024-12-31",
     "arr": None, "arrl": [], "j": None, "h": None, "mv": []},
    {"__time": "2020-01-01T00:00:03.500Z", "k": 5, "s": UNICODE, "n": -1, "i": 2147483647,
     "d": 0.1, "f": 3.4028234663852886e38, "b": False, "t2": None, "dt": None,
     "arr": None, "arrl": None, "j": {"emoji": "\U0001F600", "nl": "a\nb", "bs": "\\"}, "h": None,
     "mv": ["", "x"]},
    {"__time": "2020-01-01T00:00:04.000Z", "k": 6, "s": None, "n": None, "i": None, "d": None,
     "f": None, "b": None, "t2": None, "dt": None, "arr": None, "arrl": None, "j": None, "h": None,
     "mv": None},
    {"__time": "2020-01-01T00:00:05.000Z", "k": 7, "s": "\u00a0\u2028\u2029\u200b\ufeff'\"$$", "n": 1,
     "i": 1, "d": -0.0, "f": 1e-7, "b": True, "t2": None, "dt": None, "arr": None, "arrl": None,
     "j": None, "h": None, "mv": None},
]

PG_TYPES = {
    "__time": "timestamp with time zone", "k": "bigint", "s": "text", "n": "bigint", "i": "bigint",
    "d": "double precision", "f": "double precision", "b": "boolean", "t2": "timestamp with time zone",
    "dt": "date", "arr": "jsonb", "arrl": "jsonb", "j": "jsonb", "h": "text", "mv": "text",
    "_druid_id": "uuid", "_druid_synced": "timestamp with time zone", "_druid_deleted": "boolean"}


def hexlit(s):
    return "'" + s.encode("utf-8").hex() + "'"


def jsonlit(v):
    return "'" + json.dumps(v, ensure_ascii=False).replace("'", "''") + "'::jsonb"


class TypesTest(EnvTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sim.datasource(DS, COLS, ROWS)
        cls.env.config()
        cls.stderr = cls.env.once(expect=0)

    def where(self, k, cond):
        """Asserts that cond holds for the row k (and that the row exists once)."""
        r = self.pg.psql("SELECT (%s)::text FROM %s WHERE k = %d" % (cond, tbl(DS), k))
        self.assertEqual(len(r), 1, "row k=%d: expected one row" % k)
        if r[0][0] != "true":
            got = self.pg.psql("SELECT row_to_json(t)::text FROM %s t WHERE k = %d" % (tbl(DS), k))
            self.fail("row k=%d: %s is %s; row: %s" % (k, cond, r[0][0], got[0][0]))

    def text_is(self, k, col, value):
        c = harness.qident(col)
        if value is None:
            self.where(k, "%s IS NULL" % c)
        else:
            self.where(k, "encode(convert_to(%s, 'UTF8'), 'hex') = %s" % (c, hexlit(value)))

    def test_column_types(self):
        self.assertEqual(harness.pg_column_types(self.pg, DS), PG_TYPES)

    def test_row_count(self):
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(DS)), str(len(ROWS)))

    def test_bigint_extremes(self):
        self.where(1, "n = 9223372036854775807")
        self.where(2, "n = -9223372036854775808")
        self.where(3, "n = 9007199254740993")
        self.where(4, "n = 0")
        self.where(6, "n IS NULL")
        self.where(5, "i = 2147483647")
        self.where(2, "i = -7")

    def test_doubles(self):
        self.where(1, "d = 'NaN'::float8")
        self.where(2, "d = 'Infinity'::float8")
        self.where(3, "d = '-Infinity'::float8")
        self.where(4, "d = 10000000")
        self.where(5, "d = 0.1::float8")
        self.where(6, "d IS NULL")
        self.where(7, "d = 0")
        # FLOAT values arrive as Druid prints the float32 (0.1 -> "0.1")
        self.where(1, "f = 0.1::float8")
        self.where(2, "f = 10000000")
        self.where(3, "f = -2.5")
        self.where(4, "f IS NULL")
        self.where(5, "f = 3.4028235E38::float8")
        self.where(7, "f = 1.0E-7::float8")

    def test_booleans(self):
        self.where(1, "b IS TRUE")
        self.where(2, "b IS FALSE")
        self.where(3, "b IS NULL")

    def test_timestamps_keep_milliseconds(self):
        self.where(1, "__time = '2020-01-01T00:00:00.123Z'::timestamptz")
        self.where(2, "__time = '2020-01-01T00:00:00.124Z'::timestamptz")
        self.where(5, "__time = '2020-01-01T00:00:03.500Z'::timestamptz")
        self.where(1, "t2 = '2021-03-04T05:06:07.089Z'::timestamptz")
        self.where(2, "t2 = '1999-12-31T23:59:59.999Z'::timestamptz")
        self.where(3, "t2 IS NULL")

    def test_dates(self):
        self.where(1, "dt = '2020-02-29'::date")
        self.where(2, "dt = '1970-01-01'::date")
        self.where(4, "dt = '2024-12-31'::date")
        self.where(3, "dt IS NULL")

    def test_null_vs_empty_string(self):
        self.where(1, "s = ''")
        self.where(1, "s IS NOT NULL")
        self.where(2, "s IS NULL")
        self.where(6, "s IS NULL")

    def test_strings_exact(self):
        self.text_is(3, "s", NASTY)
        self.text_is(4, "s", "\\N")
        self.text_is(5, "s", UNICODE)
        self.text_is(7, "s", ROWS[6]["s"])
        self.where(5, "length(s) = %d" % len(UNICODE))

    def test_multi_value_strings(self):
        self.text_is(1, "mv", '["a","b"]')
        self.text_is(2, "mv", "single")
        self.text_is(3, "mv", None)
        self.text_is(4, "mv", None)
        self.text_is(5, "mv", '["","x"]')

    def test_json_and_arrays(self):
        self.where(1, "j = %s" % jsonlit(JSON_OBJ))
        self.where(1, "j->>'big' = '9223372036854775807'")
        self.where(2, "j = '{}'::jsonb")
        self.where(3, "j = %s" % jsonlit([1, "two", None]))
        self.where(4, "j IS NULL")
        self.where(5, "j = %s" % jsonlit({"emoji": "\U0001F600", "nl": "a\nb", "bs": "\\"}))
        self.where(1, "arr = '[\"x\",\"y\"]'::jsonb")
        self.where(3, "arr = %s" % jsonlit(["with \"quote\"", "\u00e9"]))
        self.where(1, "arrl = '[1, 9223372036854775807]'::jsonb")
        self.where(2, "arrl = '[-9223372036854775808]'::jsonb")
        self.where(4, "arr IS NULL")

    def test_other_complex_as_druid_serialises_it(self):
        # What Druid sends for the hyperUnique cell (a JSON string) is stored as its text.
        status, _h, body = self.sim.sql('SELECT "h" FROM "types" WHERE "k" = 1')
        self.assertEqual(status, 200)
        cell = json.loads(body.decode("utf-8").splitlines()[1])[0]
        self.assertIsInstance(cell, str)
        self.text_is(1, "h", cell)
        self.text_is(2, "h", None)

    def test_rerun_is_stable(self):
        snap = harness.snapshot(self.pg, DS)
        self.env.config(lookback_seconds=86400)
        self.env.once(expect=0)
        self.assertEqual(harness.snapshot(self.pg, DS), snap,
                         "re-reading identical typed values rewrote or re-identified rows")
        self.env.config()



class TimesAndSizesTest(EnvTestCase):
    """Timestamps far from today, huge values, a wide datasource."""


    def test_times_around_the_epoch_and_far_away(self):
        ds = "times"
        stamps = ["1900-01-01T00:00:00.000Z", "1969-12-31T23:59:59.999Z", "1970-01-01T00:00:00.000Z",
                  "1970-01-01T00:00:00.001Z", "2038-01-19T03:14:08.000Z", "9999-12-31T23:59:59.999Z"]
        self.sim.datasource(ds, [("__time", "TIMESTAMP"), ("k", "BIGINT")],
                            [{"__time": s, "k": i} for i, s in enumerate(stamps)])
        self.env.config(datasources=[ds], batch_size=2)
        self.env.once()
        got = [r[0] for r in self.pg.psql("SELECT %s FROM %s ORDER BY k" % (harness.pg_iso("__time"), tbl(ds)))]
        self.assertEqual(got, stamps)
        self.assertEqual(harness.state_row(self.pg, ds)["cursor"], stamps[-1])
        snap = harness.snapshot(self.pg, ds)
        self.env.once()
        self.assertEqual(harness.snapshot(self.pg, ds), snap)

    def test_huge_values(self):
        ds = "huge"
        big = ("\u00e9\t\\" + "x" * 997) * 1000  # ~1 MB, awkward bytes throughout
        data = [{"__time": "2020-01-01T00:00:00.000Z", "k": i, "s": big + str(i),
                 "j": {"list": list(range(20000))}} for i in range(3)]
        self.sim.datasource(ds, [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("s", "VARCHAR"),
                                 ("j", "COMPLEX<json>")], data)
        self.env.config(datasources=[ds])
        self.env.once()
        import hashlib
        for i in range(3):
            want = hashlib.md5((big + str(i)).encode("utf-8")).hexdigest()
            self.assertEqual(self.pg.scalar("SELECT md5(convert_to(s, 'UTF8')) FROM %s WHERE k = %d"
                                            % (tbl(ds), i)), want)
            self.assertEqual(self.pg.scalar("SELECT jsonb_array_length(j->'list') FROM %s WHERE k = %d"
                                            % (tbl(ds), i)), "20000")

    def test_wide_datasource(self):
        ds = "wide"
        cols = [("__time", "TIMESTAMP")] + [("c%03d" % i, "BIGINT" if i % 2 else "VARCHAR") for i in range(300)]
        data = [dict({"__time": "2020-01-01T00:00:0%d.000Z" % r},
                     **{"c%03d" % i: (i * 1000 + r if i % 2 else "s%d-%d" % (i, r)) for i in range(300)})
                for r in range(5)]
        self.sim.datasource(ds, cols, data)
        self.env.config(datasources=[ds])
        self.env.once()
        self.assertEqual(len(harness.pg_column_types(self.pg, ds)), 301 + 3)
        self.assertEqual(self.pg.scalar("SELECT sum(c299) FROM %s" % tbl(ds)), str(sum(299000 + r for r in range(5))))
        self.assertEqual(self.pg.scalar("SELECT c298 FROM %s WHERE c001 = 1004" % tbl(ds)), "s298-4")


if __name__ == "__main__":
    harness.main()
