"""The first sync of a new table in segments mode (issue 8): the table is loaded without its
primary key and range index, which are built once when the first cycle has committed every
chunk. Checked as a user would in PostgreSQL: after the first sync the table has exactly the
key, indexes and column definitions of a table created with them (a datasource synced in
cursor mode on another column, where the load is not deferred), and exactly Druid's rows; a
SIGKILL in the middle of the load, while rows of a chunk not yet recorded are committed, then
a restart, ends exact with the key built and no duplicate id; a later cycle takes the normal
merge path (rows of a re-read chunk keep their xmin)."""
import collections
import os
import signal
import unittest

import harness
from harness import EnvTestCase, iso_ms, ms_iso, state_row, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("t2", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
DAY0 = iso_ms("2024-05-01T00:00:00.000Z")
DAY = 86400 * 1000


def mkrows(days, per, k0=0):
    out = []
    for d in days:
        for i in range(per):
            t = DAY0 + d * DAY + i * 60000 + 7
            out.append({"__time": ms_iso(t), "t2": ms_iso(t + 1000), "k": k0 + d * 10000 + i,
                        "v": "v%d_%d" % (d, i)})
    return out


class DeferredIndexTest(EnvTestCase):

    def tearDown(self):
        self.sim.clear_faults()

    # ---- what PostgreSQL says about a table ----

    def indexes(self, ds, column):
        """{index definition with the table's and slice column's names made generic}"""
        out = set()
        for name, idef in self.pg.psql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'druid'"
                " AND tablename = '%s'" % ds):
            out.add((name.replace(ds, "T").replace(column, "C"),
                     idef.replace(ds, "T").replace('"%s"' % column, "C").replace(column, "C")))
        return out

    def constraints(self, ds):
        return set(tuple(r) for r in self.pg.psql(
            "SELECT replace(conname, '%s', 'T'), contype, pg_get_constraintdef(c.oid)"
            " FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace"
            " WHERE n.nspname = 'druid' AND t.relname = '%s'" % (ds, ds)))

    def columns(self, ds):
        return [tuple(r) for r in self.pg.psql(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull::text,"
            " COALESCE(pg_get_expr(d.adbin, d.adrelid), '') FROM pg_attribute a"
            " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = 'druid.%s'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum" % ds)]

    def content(self, ds):
        return collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT k::text, v FROM %s WHERE NOT _druid_deleted" % tbl(ds)))

    def assert_exact(self, ds, rows):
        want = collections.Counter((str(r["k"]), r["v"]) for r in rows)
        self.assertEqual(self.content(ds), want)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), str(len(rows)))
        self.assertEqual(self.pg.scalar("SELECT count(DISTINCT _druid_id) FROM %s" % tbl(ds)),
                         str(len(rows)))

    def initial_load(self, ds):
        return self.pg.scalar("SELECT initial_load::text FROM druid.druid_syncd_state"
                              " WHERE datasource = '%s'" % ds)

    # ---- tests ----

    def test_first_sync_builds_the_key_and_index_of_a_normal_table(self):
        ds, ref = "di_new", "di_ref"
        rows = mkrows(range(4), 50)
        self.sim.datasource(ds, COLS, rows)
        self.sim.datasource(ref, COLS, rows)
        # the reference: cursor mode on t2 (not the segments mode): created with its indexes
        self.env.config(datasources=[ref], incremental_column="t2", batch_size=60)
        self.env.once()
        self.assertEqual(self.initial_load(ref), "false")
        self.env.config(datasources=[ds], batch_size=60)
        err = self.env.once()
        self.assertIn("primary key and range index built", err)
        self.assertEqual(self.initial_load(ds), "false")
        self.assert_exact(ds, rows)
        self.assert_exact(ref, rows)
        want_idx = self.indexes(ref, "t2")
        self.assertEqual(len(want_idx), 2, want_idx)
        self.assertEqual(self.indexes(ds, "__time"), want_idx)
        self.assertEqual(self.constraints(ds), self.constraints(ref))
        self.assertIn(("T_pkey", "p", "PRIMARY KEY (_druid_id)"), self.constraints(ds))
        self.assertEqual(self.columns(ds), self.columns(ref))
        # a second cycle after a change: the normal merge path, untouched rows keep their xmin
        xmin = dict(self.pg.psql("SELECT k::text, xmin::text FROM %s" % tbl(ds)))
        late = mkrows([1], 1, k0=500)
        self.sim.append(ds, late)
        err = self.env.once()
        self.assert_exact(ds, rows + late)
        after = dict(self.pg.psql("SELECT k::text, xmin::text FROM %s" % tbl(ds)))
        self.assertEqual({k: after[k] for k in xmin}, xmin)
        self.assertIn("0 fast", err)
        self.assertEqual(self.initial_load(ds), "false")

    def test_sigkill_mid_load_then_restart_ends_exact(self):
        ds = "di_kill"
        rows = mkrows(range(6), 120)
        self.sim.datasource(ds, COLS, rows)
        # chunks of 120 rows read in slices of at most 50: a chunk is recorded only when its
        # last slice commits, so a kill can leave committed rows of an unrecorded chunk
        self.env.config(datasources=[ds], batch_size=50, max_concurrent_queries=2,
                        lookback_seconds=3 * 86400)
        self.sim.fault("delay", match='"v" FROM "%s"' % ds, times=-1, delay_seconds=0.4)
        p = self.env.start_daemon("--once")
        unrecorded = (
            "SELECT count(*) FROM %s x WHERE NOT EXISTS (SELECT 1 FROM druid.druid_syncd_chunks c"
            " WHERE c.datasource = '%s' AND c.state = 'synced'"
            " AND x.__time >= timestamptz 'epoch' + c.start_ms * interval '1 millisecond'"
            " AND x.__time < timestamptz 'epoch' + c.end_ms * interval '1 millisecond')"
            % (tbl(ds), ds))
        synced = ("SELECT count(*) FROM druid.druid_syncd_chunks WHERE datasource = '%s'"
                  " AND state = 'synced'" % ds)
        try:
            wait_for(lambda: harness.table_exists(self.pg, ds) and int(self.pg.scalar(synced)) >= 1
                     and int(self.pg.scalar(unrecorded)) > 0, timeout=90,
                     what="a recorded chunk and committed rows of an unrecorded one")
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.communicate(timeout=30)
        self.sim.clear_faults()
        n = int(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)))
        self.assertTrue(0 < n < len(rows), n)
        self.assertEqual(self.initial_load(ds), "true")
        self.assertEqual(self.constraints(ds), set())  # no key yet
        self.assertEqual(self.indexes(ds, "__time"), set())
        self.env.config(datasources=[ds], batch_size=50, lookback_seconds=3 * 86400)
        err = self.env.once()
        self.assertIn("primary key and range index built", err)
        self.assert_exact(ds, rows)
        self.assertEqual(self.initial_load(ds), "false")
        self.assertIn(("T_pkey", "p", "PRIMARY KEY (_druid_id)"), self.constraints(ds))
        self.assertEqual(len(self.indexes(ds, "__time")), 2)
        self.assertEqual(int(state_row(self.pg, ds)["rows_synced"]) >= len(rows), True)
        # and the next cycle finds nothing to do
        self.env.config(datasources=[ds], batch_size=50, lookback_seconds=0)
        self.env.once()
        self.assert_exact(ds, rows)


if __name__ == "__main__":
    harness.main()
