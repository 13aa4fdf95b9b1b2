"""The wikiticker sample (39,244 rows) end to end: row-for-row equality with the source
file, column types, state, metadata tables, idempotent re-runs and the shape of the
queries sent to Druid."""
import collections
import gzip
import hashlib
import json
import re
import unittest

import harness
from harness import EnvTestCase, Env, WIKI, pg_iso, snapshot, state_row, tbl

DS = "wikipedia"
# Column order and Druid types as the simulator's loader infers them from the file
# (JSON booleans become VARCHAR 'true'/'false', integer-or-null becomes BIGINT).
COLUMNS = [
    ("__time", "TIMESTAMP"), ("channel", "VARCHAR"), ("cityName", "VARCHAR"),
    ("comment", "VARCHAR"), ("countryIsoCode", "VARCHAR"), ("countryName", "VARCHAR"),
    ("isAnonymous", "VARCHAR"), ("isMinor", "VARCHAR"), ("isNew", "VARCHAR"),
    ("isRobot", "VARCHAR"), ("isUnpatrolled", "VARCHAR"), ("metroCode", "BIGINT"),
    ("namespace", "VARCHAR"), ("page", "VARCHAR"), ("regionIsoCode", "VARCHAR"),
    ("regionName", "VARCHAR"), ("user", "VARCHAR"), ("delta", "BIGINT"), ("added", "BIGINT"),
    ("deleted", "BIGINT")]
PG_TYPES = {"VARCHAR": "text", "BIGINT": "bigint", "TIMESTAMP": "timestamp with time zone"}


def canon_py(values):
    """md5 of the row: each value's UTF-8 hex ('~' for NULL) joined with ','."""
    parts = []
    for v in values:
        if v is None:
            parts.append("~")
        else:
            parts.append(v.encode("utf-8").hex())
    return hashlib.md5(",".join(parts).encode("ascii")).hexdigest()


def py_text(v):
    if v is None:
        return None
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


def source_rows():
    rows = []
    with gzip.open(WIKI, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def source_canon(rows):
    out = collections.Counter()
    for r in rows:
        vals = [harness.ms_iso(harness.iso_ms(r["time"]))]
        for name, _t in COLUMNS[1:]:
            vals.append(py_text(r.get(name)))
        out[canon_py(vals)] += 1
    return out


def pg_canon_sql(table, where=""):
    exprs = []
    for name, t in COLUMNS:
        col = harness.qident(name)
        txt = pg_iso(col) if t == "TIMESTAMP" else col + "::text"
        exprs.append("coalesce(encode(convert_to(%s, 'UTF8'), 'hex'), '~')" % txt)
    return "SELECT md5(concat_ws(',', %s)) FROM %s %s" % (", ".join(exprs), table, where)


class WikipediaTest(EnvTestCase):
    env_args = dict(load={DS: WIKI})

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env.config(batch_size=10000, max_concurrent_queries=2)
        cls.first_stderr = cls.env.once(expect=0, timeout=600)
        cls.first_queries = cls.sim.queries()
        cls.first_stats = cls.sim.stats()
        cls.source = source_rows()

    def test_01_counts_and_sums(self):
        t = tbl(DS)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted" % t), "39244")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % t), "39244")
        self.assertEqual(self.pg.psql('SELECT sum(added), sum(deleted), sum(delta) FROM %s '
                                      'WHERE NOT _druid_deleted' % t),
                         [["9385573", "394298", "8991275"]])

    def test_02_every_row_equals_source(self):
        expected = source_canon(self.source)
        got = collections.Counter(r[0] for r in self.pg.psql(pg_canon_sql(tbl(DS), "WHERE NOT _druid_deleted")))
        missing = expected - got
        extra = got - expected
        if missing or extra:
            # Show a few source rows that did not arrive intact.
            bad = []
            for r in self.source:
                vals = [harness.ms_iso(harness.iso_ms(r["time"]))] + [py_text(r.get(n)) for n, _ in COLUMNS[1:]]
                if canon_py(vals) in missing:
                    bad.append(r)
                if len(bad) >= 3:
                    break
            self.fail("%d source rows missing or altered, %d unexpected rows in PG; e.g. %s"
                      % (sum(missing.values()), sum(extra.values()), json.dumps(bad, ensure_ascii=False)[:3000]))

    def test_03_column_types(self):
        types = harness.pg_column_types(self.pg, DS)
        for name, t in COLUMNS:
            self.assertEqual(types.get(name), PG_TYPES[t], "column %s" % name)
        self.assertEqual(types.get("_druid_id"), "uuid")
        self.assertEqual(types.get("_druid_synced"), "timestamp with time zone")
        self.assertEqual(types.get("_druid_deleted"), "boolean")
        pk = self.pg.psql(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '%s'::regclass AND i.indisprimary" % tbl(DS))
        self.assertEqual(pk, [["_druid_id"]])
        self.assertEqual(self.pg.scalar("SELECT count(DISTINCT _druid_id) FROM %s" % tbl(DS)), "39244")

    def test_04_state_row(self):
        st = state_row(self.pg, DS)
        self.assertIsNotNone(st, "no druid_syncd_state row for wikipedia")
        self.assertEqual(st["destination_table"], DS)
        self.assertEqual(st["mode"], "incremental")
        self.assertEqual(st["incremental_column"], "__time")
        self.assertEqual(st["cursor"], "2015-09-12T23:59:59.200Z")
        self.assertEqual(st["rows_synced"], 39244)
        self.assertIsNotNone(st["last_success"])
        self.assertIsNotNone(st["last_started"])
        self.assertIsNotNone(st["last_finished"])
        self.assertIsNone(st["last_error"])
        self.assertIs(st.get("in_catalog"), True)

    def test_05_metadata_tables(self):
        tabs = self.pg.psql("SELECT table_schema, table_name, table_type FROM %s"
                            % tbl("information_schema_tables"))
        self.assertIn(["druid", DS, "TABLE"], tabs)
        cols = self.pg.psql(
            "SELECT column_name, ordinal_position::text, data_type, pg_type, is_nullable, jdbc_type::text"
            " FROM %s WHERE table_name = 'wikipedia' ORDER BY ordinal_position::int"
            % tbl("information_schema_columns"))
        self.assertEqual([c[0] for c in cols], [n for n, _ in COLUMNS])
        self.assertEqual([c[1] for c in cols], [str(i + 1) for i in range(len(COLUMNS))])
        self.assertEqual([c[2] for c in cols], [t for _, t in COLUMNS])
        norm = {"timestamptz": "timestamp with time zone", "int8": "bigint", "float8": "double precision",
                "bool": "boolean"}
        self.assertEqual([norm.get(c[3], c[3]) for c in cols], [PG_TYPES[t] for _, t in COLUMNS])
        self.assertEqual(cols[0][4], "NO")
        self.assertEqual(cols[0][5], "93")
        # lowercase column names, as documented
        names = [r[0] for r in self.pg.psql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'druid'"
            " AND table_name = 'information_schema_columns'")]
        for n in ("table_schema", "table_name", "column_name", "ordinal_position", "data_type",
                  "is_nullable", "jdbc_type", "pg_type"):
            self.assertIn(n, names)

    def test_06_second_run_writes_nothing(self):
        before = snapshot(self.pg, DS)
        st_before = state_row(self.pg, DS)
        self.env.once(expect=0)
        after = snapshot(self.pg, DS)
        self.assertEqual(len(after), 39244)
        self.assertTrue(before == after, "a re-run over unchanged data rewrote %d rows"
                        % len(set(map(tuple, before)) ^ set(map(tuple, after))))
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE _druid_deleted" % tbl(DS)), "0")
        st = state_row(self.pg, DS)
        self.assertEqual(st["cursor"], st_before["cursor"])
        self.assertEqual(st["rows_synced"], 39244)
        self.assertIsNone(st["last_error"])

    def test_07_queries_shape(self):
        qs = self.first_queries
        self.assertTrue(qs, "the simulator saw no queries")
        ids = []
        for q in qs:
            sql = q.get("sql") or ""
            self.assertIsNone(re.search(r"\bOFFSET\b", sql, re.I), "query uses OFFSET: %s" % sql)
            self.assertEqual(q["resultFormat"], "arrayLines", sql)
            self.assertTrue(q["header"] and q["typesHeader"] and q["sqlTypesHeader"],
                            "query without all three headers: %s" % sql)
            self.assertEqual((q["content_type"] or "").split(";")[0].strip().lower(), "application/json", sql)
            qid = (q.get("context") or {}).get("sqlQueryId")
            self.assertTrue(qid, "query without context.sqlQueryId: %s" % sql)
            ids.append(qid)
            self.assertEqual(q["status"], 200, sql)
        dup = [i for i, n in collections.Counter(ids).items() if n > 1]
        self.assertEqual(dup, [], "sqlQueryId reused")
        # The data was read in several slices (39,244 rows at batch_size 10,000).
        slices = [q for q in qs if 'FROM "wikipedia"' in (q.get("sql") or "")
                  and "COUNT(" not in (q.get("sql") or "").upper()]
        self.assertGreaterEqual(len(slices), 4, "expected >= 4 slice queries")

    def test_08_concurrency_limit(self):
        self.assertLessEqual(self.first_stats["max_inflight"], 2)
        self.assertGreaterEqual(self.first_stats["max_inflight"], 1)


    def test_09_small_slices_and_full_mode_deletes(self):
        # The same data read in ~40 slices of 997 rows, then in full mode with an hour
        # deleted in the middle of the day.
        ds = "wiki_small"
        self.sim.load(ds, WIKI)
        self.env.config(datasources=[ds], batch_size=997, max_concurrent_queries=4)
        self.env.once(expect=0, timeout=600)
        expected = source_canon(self.source)
        got = collections.Counter(r[0] for r in self.pg.psql(pg_canon_sql(tbl(ds))))
        self.assertTrue(got == expected, "small-slice copy differs: %d missing, %d extra"
                        % (sum((expected - got).values()), sum((got - expected).values())))
        self.assertGreaterEqual(state_row(self.pg, ds)["slices_committed"], 39)
        gone = sum(1 for r in self.source if "2015-09-12T10:00:00.000Z" <= r["time"] < "2015-09-12T11:00:00.000Z")
        self.assertGreater(gone, 0)
        self.sim.delete(ds, "2015-09-12T10:00:00.000Z", "2015-09-12T11:00:00.000Z")
        self.env.config(datasources=[ds], batch_size=5000, incremental_column="no_such_column")
        self.env.once(expect=0, timeout=600)
        self.assertEqual(state_row(self.pg, ds)["mode"], "full")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE _druid_deleted" % tbl(ds)), str(gone))
        self.assertEqual(self.pg.scalar(
            "SELECT count(*) FROM %s WHERE _druid_deleted AND __time >= '2015-09-12T10:00:00Z'"
            " AND __time < '2015-09-12T11:00:00Z'" % tbl(ds)), str(gone))
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted" % tbl(ds)),
                         str(39244 - gone))
        self.env.config(batch_size=10000, max_concurrent_queries=2)

if __name__ == "__main__":
    harness.main()
