"""Names that need quoting or shortening, discovery of new datasources and columns,
datasource selection, datasources hidden from the catalog, and full mode."""
import collections
import json
import unittest

import harness
from harness import EnvTestCase, Env, iso_ms, ms_iso, qident, snapshot, sqlstr, state_row, table_exists, tbl

BASE = iso_ms("2023-05-05T00:00:00.000Z")
COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]


def t(sec):
    return ms_iso(BASE + sec * 1000)


def rows(n, start=0, v="v"):
    return [{"__time": t(i), "k": i, "v": "%s%d" % (v, i)} for i in range(start, start + n)]


class NamesTest(EnvTestCase):

    def sync(self, names, expect=0, **cfg):
        self.env.config(datasources=list(names), **cfg)
        return self.env.once(expect=expect)

    def count(self, table, where=""):
        return int(self.pg.scalar("SELECT count(*) FROM %s %s" % (tbl(table), where)))

    def test_odd_names(self):
        ds = 'my "odd" data source'
        cols = [("__time", "TIMESTAMP"), ('we"ird col', "VARCHAR"), ("Mixed Case", "BIGINT"),
                ("select", "VARCHAR"), ("caf\u00e9", "VARCHAR")]
        data = [{"__time": t(i), 'we"ird col': "w%d" % i, "Mixed Case": i, "select": "s",
                 "caf\u00e9": "\u00e9"} for i in range(5)]
        self.sim.datasource(ds, cols, data)
        self.sync([ds])
        self.assertTrue(table_exists(self.pg, ds), "no table named %r" % ds)
        self.assertEqual(self.count(ds), 5)
        types = harness.pg_column_types(self.pg, ds)
        self.assertEqual(types.get('we"ird col'), "text")
        self.assertEqual(types.get("Mixed Case"), "bigint")
        self.assertEqual(types.get("select"), "text")
        self.assertEqual(types.get("caf\u00e9"), "text")
        self.assertEqual(self.pg.scalar('SELECT string_agg(%s, \',\' ORDER BY %s) FROM %s'
                                        % (qident('we"ird col'), qident("Mixed Case"), tbl(ds))),
                         "w0,w1,w2,w3,w4")
        st = state_row(self.pg, ds)
        self.assertIsNotNone(st)
        self.assertEqual(st["destination_table"], ds)
        self.assertEqual(st["cursor"], t(4))
        self.assertIn([ds], self.pg.psql("SELECT table_name FROM %s" % tbl("information_schema_tables")))
        # incremental second run
        self.sim.append(ds, [{"__time": t(9), 'we"ird col': "late", "Mixed Case": 9, "select": "s",
                              "caf\u00e9": "x"}])
        self.sync([ds])
        self.assertEqual(self.count(ds), 6)

    def test_long_names(self):
        base = "a_rather_long_datasource_name_that_goes_on_and_on_beyond_the_limit_"
        names = [base + "one", base + "two", "\u65e5\u672c\u8a9e" * 8]  # the last: 72 bytes
        for n in names:
            self.assertGreater(len(n.encode("utf-8")), 63)
            self.sim.datasource(n, COLS, rows(4))
        self.sync(names)
        dests = []
        for n in names:
            st = state_row(self.pg, n)
            self.assertIsNotNone(st, "no state row for %r" % n)
            dest = st["destination_table"]
            self.assertLessEqual(len(dest.encode("utf-8")), 63, dest)
            self.assertTrue(table_exists(self.pg, dest), "state names table %r which does not exist" % dest)
            self.assertEqual(self.count(dest), 4)
            dests.append(dest)
        self.assertEqual(len(set(dests)), 3, "shortened names collide: %s" % dests)
        # deterministic: a second run keeps the same tables and creates no others
        ntables = self.pg.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'druid'")
        for n in names:
            self.sim.append(n, rows(1, start=10))
        self.sync(names)
        self.assertEqual([state_row(self.pg, n)["destination_table"] for n in names], dests)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'druid'"), ntables)
        for d in dests:
            self.assertEqual(self.count(d), 5)

    def test_name_boundary_and_case(self):
        n63 = "b" * 63          # fits: verbatim
        n64 = "b" * 64          # does not: shortened, and must not collide with n63
        upper, lower = "CaseDS", "caseds"
        names = [n63, n64, upper, lower]
        for n in names:
            self.sim.datasource(n, COLS, rows(2 + len(n) % 3))
        self.sync(names)
        self.assertEqual(state_row(self.pg, n63)["destination_table"], n63)
        d64 = state_row(self.pg, n64)["destination_table"]
        self.assertNotEqual(d64, n63)
        self.assertLessEqual(len(d64.encode()), 63)
        for n in names:
            dest = state_row(self.pg, n)["destination_table"]
            self.assertEqual(self.count(dest), 2 + len(n) % 3, n)
        self.assertEqual(state_row(self.pg, upper)["destination_table"], upper)
        self.assertEqual(state_row(self.pg, lower)["destination_table"], lower)

    def test_long_column_name(self):
        ds = "long_col"
        long_col = "a_column_name_that_is_much_longer_than_postgresql_identifiers_allow_x"
        self.assertGreater(len(long_col), 63)
        self.sim.datasource(ds, [("__time", "TIMESTAMP"), (long_col, "VARCHAR"), ("k", "BIGINT")],
                            [{"__time": t(i), long_col: "L%d" % i, "k": i} for i in range(3)])
        self.sync([ds])
        self.assertEqual(self.count(ds), 3)
        self.sim.append(ds, [{"__time": t(10), long_col: "L10", "k": 10}])
        self.sync([ds])
        self.assertEqual(self.count(ds, "WHERE NOT _druid_deleted"), 4)
        self.assertEqual(self.count(ds, "WHERE _druid_deleted"), 0)

    def test_added_column(self):
        ds = "drift"
        self.sim.datasource(ds, COLS, rows(5))
        self.sync([ds])
        self.sim.add_column(ds, "extra", "VARCHAR")
        self.sim.add_column(ds, "extra_n", "BIGINT")
        self.sim.append(ds, [{"__time": t(i), "k": i, "v": "v%d" % i, "extra": "e%d" % i, "extra_n": i * 100}
                             for i in range(5, 8)])
        self.sync([ds])
        cols = dict((r[0], (r[1], r[2])) for r in self.pg.psql(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'druid' AND table_name = 'drift'"))
        self.assertEqual(cols.get("extra"), ("text", "YES"))
        self.assertEqual(cols.get("extra_n"), ("bigint", "YES"))
        got = self.pg.psql("SELECT k::text, extra, extra_n::text FROM %s WHERE NOT _druid_deleted ORDER BY k"
                           % tbl(ds))
        want = [[str(i), None, None] for i in range(5)] + [[str(i), "e%d" % i, str(i * 100)] for i in range(5, 8)]
        self.assertEqual(got, want)
        self.assertEqual(self.count(ds, "WHERE _druid_deleted"), 0,
                         "rows still in Druid were flagged deleted after a column was added")
        self.assertEqual(self.count(ds), 8)

    def test_hidden_datasource(self):
        ds = "hidden_ds"
        self.sim.datasource(ds, COLS, rows(6))
        self.sync([ds])
        snap = snapshot(self.pg, ds)
        self.sim.hide(ds)
        self.env.config(datasources=[ds])
        rc, err = self.env.run("--once")
        # asked for by name but not in the catalog: it did not sync, so --once says so
        self.assertEqual(rc, 1, err[-3000:])
        self.assertIn("not in Druid's catalog", err)
        self.assertTrue(table_exists(self.pg, ds), "table of a hidden datasource was dropped")
        self.assertEqual(snapshot(self.pg, ds), snap, "table of a hidden datasource was modified")
        st = state_row(self.pg, ds)
        self.assertIs(st["in_catalog"], False)
        self.assertIn("missing", (st.get("status") or "").lower())
        self.assertEqual(st["cursor"], t(5))
        # back in the catalog: syncs again and the state says so
        self.sim.hide(ds, False)
        self.sim.append(ds, rows(2, start=20))
        self.sync([ds])
        st = state_row(self.pg, ds)
        self.assertIs(st["in_catalog"], True)
        self.assertNotIn("missing", (st.get("status") or "").lower())
        self.assertEqual(self.count(ds, "WHERE NOT _druid_deleted"), 8)
        self.assertEqual(self.count(ds, "WHERE _druid_deleted"), 0)

    def test_full_mode(self):
        ds = "full_ds"
        self.sim.datasource(ds, COLS, rows(30))
        cfg = dict(incremental_column="seq_no", batch_size=10)
        self.sync([ds], **cfg)
        st = state_row(self.pg, ds)
        self.assertEqual(st["mode"], "full")
        self.assertIsNone(st["last_error"])
        self.assertEqual(self.count(ds), 30)
        snap = snapshot(self.pg, ds)
        self.sync([ds], **cfg)
        self.assertEqual(snapshot(self.pg, ds), snap, "full re-read of unchanged data rewrote rows")
        # rows deleted anywhere (even far behind any cursor) are flagged on the next run
        self.sim.delete(ds, t(2), t(5))
        self.sim.append(ds, rows(2, start=100))
        self.sync([ds], **cfg)
        flagged = sorted(int(r[0]) for r in self.pg.psql("SELECT k FROM %s WHERE _druid_deleted" % tbl(ds)))
        self.assertEqual(flagged, [2, 3, 4])
        self.assertEqual(self.count(ds, "WHERE NOT _druid_deleted"), 29)
        self.assertEqual(self.count(ds), 32)
        self.assertEqual(state_row(self.pg, ds)["mode"], "full")
        # hard deletes in full mode
        self.sim.delete(ds, t(10), t(12))
        self.sync([ds], soft_deletes=False, **cfg)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE k IN (10, 11)" % tbl(ds)), "0")
        self.assertEqual(self.count(ds, "WHERE NOT _druid_deleted"), 27)


class DiscoveryTest(EnvTestCase):

    def test_new_datasource_picked_up(self):
        self.sim.datasource("first", COLS, rows(3))
        self.env.config()
        self.env.once()
        self.assertTrue(table_exists(self.pg, "first"))
        self.assertFalse(table_exists(self.pg, "second"))
        self.sim.datasource("second", COLS, rows(4))
        self.env.once()
        self.assertTrue(table_exists(self.pg, "second"), "datasource added to Druid was not discovered")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl("second")), "4")
        self.assertEqual(state_row(self.pg, "second")["mode"], "incremental")
        names = [r[0] for r in self.pg.psql("SELECT table_name FROM %s" % tbl("information_schema_tables"))]
        self.assertIn("second", names)
        cols = self.pg.psql("SELECT column_name FROM %s WHERE table_name = 'second' ORDER BY ordinal_position::int"
                            % tbl("information_schema_columns"))
        self.assertEqual(cols, [["__time"], ["k"], ["v"]])

    def test_metadata_tables_equal_druid(self):
        self.sim.datasource("meta_a", [("__time", "TIMESTAMP"), ("x", "DOUBLE"), ("y", "ARRAY<BIGINT>"),
                                       ("z", "COMPLEX<json>")], [])
        self.env.config()
        self.env.once()
        status, _h, body = self.sim.sql(
            "SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, DATA_TYPE, IS_NULLABLE, JDBC_TYPE"
            " FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = 'druid'")
        self.assertEqual(status, 200)
        want = sorted([None if v is None else str(v) for v in json.loads(x)]
                      for x in body.decode().splitlines()[1:] if x.strip())
        got = sorted(self.pg.psql("SELECT table_name, column_name, ordinal_position::text, data_type, is_nullable,"
                                  " jdbc_type::text FROM %s WHERE table_schema = 'druid'"
                                  % tbl("information_schema_columns")))
        self.assertEqual(got, want)
        status, _h, body = self.sim.sql("SELECT TABLE_NAME, TABLE_TYPE FROM INFORMATION_SCHEMA.TABLES"
                                        " WHERE TABLE_SCHEMA = 'druid'")
        want = sorted(json.loads(x) for x in body.decode().splitlines()[1:] if x.strip())
        got = sorted(self.pg.psql("SELECT table_name, table_type FROM %s WHERE table_schema = 'druid'"
                                  % tbl("information_schema_tables")))
        self.assertEqual(got, want)
        pgt = dict(self.pg.psql("SELECT column_name, pg_type FROM %s WHERE table_name = 'meta_a'"
                                % tbl("information_schema_columns")))
        norm = {"timestamptz": "timestamp with time zone", "float8": "double precision"}
        self.assertEqual({k: norm.get(v, v) for k, v in pgt.items()},
                         {"__time": "timestamp with time zone", "x": "double precision", "y": "jsonb", "z": "jsonb"})

    def test_metadata_tables_follow_drops(self):
        self.sim.datasource("dropme", COLS, rows(2))
        self.env.config()
        self.env.once()
        self.assertIn(["dropme"], self.pg.psql("SELECT table_name FROM %s" % tbl("information_schema_tables")))
        self.sim.drop("dropme")
        self.env.once()
        self.assertNotIn(["dropme"], self.pg.psql("SELECT table_name FROM %s"
                                                  % tbl("information_schema_tables")),
                         "metadata tables not refreshed")
        self.assertTrue(table_exists(self.pg, "dropme"), "a datasource gone from the catalog lost its table")
        self.assertIs(state_row(self.pg, "dropme")["in_catalog"], False)


class ReservedNamesTest(EnvTestCase):
    """A Druid datasource named like one of the daemon's own tables must never alter them."""


    def columns(self, table):
        return sorted(harness.pg_column_types(self.pg, table).items())

    def test_datasource_named_like_daemon_tables(self):
        self.sim.datasource("normal", COLS, rows(5))
        self.env.config()
        self.env.once()
        own = {n: self.columns(n) for n in ("druid_syncd_state", "information_schema_tables",
                                             "information_schema_columns")}
        for n in own:
            self.sim.datasource(n, [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("intruder", "VARCHAR")],
                                [{"__time": t(0), "k": 1, "intruder": "x"}])
        self.sim.append("normal", rows(3, start=10))
        self.env.run("--once")
        for n, cols in own.items():
            self.assertEqual(self.columns(n), cols, "the daemon's table %s was altered by a datasource "
                                                    "of the same name" % n)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl("normal")), "8")
        self.assertEqual(state_row(self.pg, "normal")["cursor"], t(12))
        # and the daemon still works afterwards
        self.sim.append("normal", rows(1, start=20))
        self.env.run("--once")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl("normal")), "9")


class SelectionTest(EnvTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for n in ("sel_a", "sel_b", "sel_c", "sel_d"):
            cls.sim.datasource(n, COLS, rows(3))

    def synced(self):
        return sorted(n for n in ("sel_a", "sel_b", "sel_c", "sel_d") if table_exists(self.pg, n))

    def test_selection(self):
        self.env.config(datasources=["sel_a", "sel_b"], exclude_datasources=["sel_b"])
        self.env.once()
        self.assertEqual(self.synced(), ["sel_a"])
        states = [r[0] for r in self.pg.psql("SELECT datasource FROM %s" % tbl("druid_syncd_state"))]
        self.assertEqual(states, ["sel_a"])
        self.env.config(exclude_datasources=["sel_d"])
        self.env.once("--datasource", "sel_c")
        self.assertEqual(self.synced(), ["sel_a", "sel_c"])
        # --datasource restricts the run: an excluded datasource stays excluded
        self.env.run("--once", "--datasource", "sel_b", "--datasource", "sel_d")
        self.assertNotIn("sel_d", self.synced(), "--datasource overrode exclude_datasources")
        self.assertIn("sel_b", self.synced())
        self.env.once()
        self.assertEqual(self.synced(), ["sel_a", "sel_b", "sel_c"])
        self.env.config()
        self.env.once()
        self.assertEqual(self.synced(), ["sel_a", "sel_b", "sel_c", "sel_d"])


if __name__ == "__main__":
    harness.main()
