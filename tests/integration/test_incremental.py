"""Incremental mode: appends, rows at the cursor timestamp, late rows and lookback,
re-read slices (soft and hard deletes, rows that come back), big groups of rows sharing
one timestamp, duplicate rows."""
import collections
import unittest

import harness
from harness import EnvTestCase, ms_iso, iso_ms, snapshot, state_row, tbl

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2024-03-01T12:00:00.000Z")


def t(sec, ms=0):
    return ms_iso(BASE + sec * 1000 + ms)


def rows(*spec):
    """rows((sec, k, v), ...) -> control-API rows."""
    return [{"__time": t(s), "k": k, "v": v} for s, k, v in spec]


class IncrementalTest(EnvTestCase):

    # -- helpers
    def sync(self, ds, expect=0, **cfg):
        self.env.config(**cfg)
        return self.env.once("--datasource", ds, expect=expect)

    def live(self, ds):
        """Counter of (time, k, v) over live rows."""
        return collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT %s, k::text, v FROM %s WHERE NOT _druid_deleted" % (harness.pg_iso("__time"), tbl(ds))))

    def flagged(self, ds):
        return collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT %s, k::text, v FROM %s WHERE _druid_deleted" % (harness.pg_iso("__time"), tbl(ds))))

    def druid(self, ds):
        """Counter of (time, k, v) in the simulator, read back through its SQL API."""
        import json
        status, _h, body = self.sim.sql('SELECT "__time", "k", "v" FROM %s' % harness.qident(ds))
        self.assertEqual(status, 200, body)
        lines = [json.loads(x) for x in body.decode("utf-8").splitlines() if x.strip()]
        return collections.Counter((r[0], None if r[1] is None else str(r[1]), r[2]) for r in lines[1:])

    def assertSynced(self, ds):
        got, want = self.live(ds), self.druid(ds)
        self.assertEqual(got, want, "live PG rows differ from Druid: missing %s, extra %s"
                         % (dict(want - got), dict(got - want)))

    # -- tests
    def test_append_lands_once(self):
        ds = "inc_append"
        self.sim.datasource(ds, COLS, rows(*[(i, i, "a%d" % i) for i in range(20)]))
        self.sync(ds)
        self.assertSynced(ds)
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(19))
        self.sim.append(ds, rows(*[(i, i, "a%d" % i) for i in range(20, 30)]))
        self.sync(ds)
        self.assertSynced(ds)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "30")
        st = state_row(self.pg, ds)
        self.assertEqual(st["cursor"], t(29))
        self.assertEqual(st["mode"], "incremental")
        # and once more: nothing new, nothing rewritten
        snap = snapshot(self.pg, ds)
        self.sync(ds)
        self.assertEqual(snapshot(self.pg, ds), snap)

    def test_rows_at_cursor_timestamp(self):
        ds = "inc_cursor_ts"
        self.sim.datasource(ds, COLS, rows((0, 1, "a"), (1, 2, "b"), (2, 3, "c"), (2, 4, "d")))
        self.sync(ds)
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(2))
        # Late arrivals sharing the cursor's exact timestamp, plus one newer row.
        self.sim.append(ds, rows((2, 5, "e"), (2, 6, "f"), (3, 7, "g")))
        self.sync(ds)
        self.assertSynced(ds)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "7")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE _druid_deleted" % tbl(ds)), "0")
        # and another row exactly at the new cursor
        self.sim.append(ds, rows((3, 8, "h")))
        self.sync(ds)
        self.assertSynced(ds)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "8")

    def _late_rows(self, ds):
        self.sim.datasource(ds, COLS, rows(*[(i * 10, i, "r%d" % i) for i in range(13)]))  # 0..120 s
        self.sync(ds, lookback_seconds=60)
        self.assertSynced(ds)
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(120))
        # One late row 30 s behind the cursor (inside the lookback), one 100 s behind (outside).
        self.sim.append(ds, rows((90, 100, "inside"), (20, 101, "outside")))
        self.sync(ds, lookback_seconds=60)
        return self.live(ds)

    def test_late_rows_found_by_counts(self):
        """Without sys.segments the counts fallback compares per-day (then per-hour) counts
        and sums with PostgreSQL: late rows are found whatever lookback_seconds says."""
        self.sim.segments_forbidden(True)
        try:
            live = self._late_rows("inc_late")
        finally:
            self.sim.segments_forbidden(False)
        self.assertEqual(live[(t(90), "100", "inside")], 1)
        self.assertEqual(live[(t(20), "101", "outside")], 1, "late row in an old hour not synced")
        self.assertEqual(sum(live.values()), 15)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE _druid_deleted" % tbl("inc_late")), "0")
        self.assertEqual(state_row(self.pg, "inc_late")["change_detection"], "counts")

    def test_late_rows_followed_by_segments(self):
        """With sys.segments the changed chunk is read again, however old the late row."""
        live = self._late_rows("inc_late_seg")
        self.assertEqual(live[(t(90), "100", "inside")], 1)
        self.assertEqual(live[(t(20), "101", "outside")], 1, "late row in an old chunk not synced")
        self.assertEqual(sum(live.values()), 15)
        self.assertEqual(state_row(self.pg, "inc_late_seg")["change_detection"], "segments")

    def _replace_case(self, ds, soft):
        orig = rows(*[(i * 10, i, "r%d" % i) for i in range(7)])  # 0..60 s
        self.sim.datasource(ds, COLS, orig)
        self.sync(ds, lookback_seconds=120, soft_deletes=soft)
        self.assertSynced(ds)
        ids_before = dict((r[0], r[1]) for r in self.pg.psql(
            "SELECT k::text, _druid_id::text FROM %s" % tbl(ds)))
        # Replace [20 s, 40 s): rows k=2 (20 s), k=3 (30 s) vanish, two new rows appear.
        self.sim.replace(ds, t(20), t(40), rows((25, 20, "new-a"), (35, 30, "new-b")))
        self.sync(ds, lookback_seconds=120, soft_deletes=soft)
        self.assertSynced(ds)
        gone = collections.Counter([(t(20), "2", "r2"), (t(30), "3", "r3")])
        if soft:
            self.assertEqual(self.flagged(ds), gone, "vanished rows not flagged _druid_deleted")
            self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "9")
        else:
            self.assertEqual(self.flagged(ds), collections.Counter())
            self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "7")
        # untouched rows keep their identity
        ids_after = dict((r[0], r[1]) for r in self.pg.psql(
            "SELECT k::text, _druid_id::text FROM %s WHERE NOT _druid_deleted" % tbl(ds)))
        for k in ("0", "1", "4", "5", "6"):
            self.assertEqual(ids_after[k], ids_before[k])
        return ids_before

    def test_replace_soft_delete_and_come_back(self):
        ds = "inc_replace_soft"
        ids_before = self._replace_case(ds, soft=True)
        # k=2 comes back exactly as it was: un-flagged, same id, no second copy.
        self.sim.replace(ds, t(20), t(30), rows((20, 2, "r2"), (25, 20, "new-a")))
        self.sync(ds, lookback_seconds=120, soft_deletes=True)
        self.assertSynced(ds)
        self.assertEqual(self.pg.psql("SELECT _druid_id::text, _druid_deleted::text FROM %s WHERE k = 2"
                                      % tbl(ds)), [[ids_before["2"], "false"]])
        self.assertEqual(self.flagged(ds), collections.Counter([(t(30), "3", "r3")]))

    def test_replace_hard_delete(self):
        self._replace_case("inc_replace_hard", soft=False)

    def test_delete_within_lookback(self):
        ds = "inc_delete"
        self.sim.datasource(ds, COLS, rows(*[(i, i, "d%d" % i) for i in range(10)]))
        self.sync(ds, lookback_seconds=3600)
        self.sim.delete(ds, t(3), t(6))
        self.sync(ds, lookback_seconds=3600)
        self.assertSynced(ds)
        self.assertEqual(sorted(k for _t, k, _v in self.flagged(ds)), ["3", "4", "5"])

    def test_many_rows_one_timestamp(self):
        ds = "inc_big_ts"
        distinct = [{"__time": t(100), "k": i, "v": "same-%d" % i} for i in range(3)]
        data = [dict(r) for r in distinct for _ in range(20000)]
        data += rows(*[(50 + i % 40, 1000 + i, "before") for i in range(150)])
        data += rows(*[(101 + i % 5, 2000 + i, "after") for i in range(150)])
        self.sim.datasource(ds, COLS, data)
        self.sync(ds, batch_size=10000)
        counts = dict(((r[0], r[1]), int(r[2])) for r in self.pg.psql(
            "SELECT k::text, v, count(*) FROM %s WHERE NOT _druid_deleted GROUP BY 1, 2" % tbl(ds)))
        for i in range(3):
            self.assertEqual(counts.get((str(i), "same-%d" % i)), 20000, "row k=%d" % i)
        self.assertEqual(sum(counts.values()), 60300)
        self.assertEqual(self.pg.scalar("SELECT count(DISTINCT _druid_id) FROM %s" % tbl(ds)), "60300")
        self.assertSynced(ds)
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(105))
        snap = snapshot(self.pg, ds)
        self.sync(ds, batch_size=10000)
        self.assertTrue(snap == snapshot(self.pg, ds), "re-run over unchanged data wrote rows")
        # Cursor inside the big group: append more copies at that timestamp with lookback
        # covering it; the counts must follow Druid's exactly.
        self.sim.append(ds, [dict(distinct[0]) for _ in range(7)])
        self.sync(ds, batch_size=10000, lookback_seconds=10)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted AND k = 0"
                                        % tbl(ds)), "20007")
        self.assertSynced(ds)

    def test_duplicates_survive(self):
        ds = "inc_dups"
        self.sim.datasource(ds, COLS, rows((1, 1, "twin"), (1, 1, "twin"), (2, 2, "x")))
        self.sync(ds)
        r = self.pg.psql("SELECT _druid_id::text FROM %s WHERE k = 1" % tbl(ds))
        self.assertEqual(len(r), 2, "two identical Druid rows must be two PG rows")
        self.assertNotEqual(r[0][0], r[1][0])
        # A third copy arrives at a new timestamp (and one at the same): counts follow Druid.
        self.sim.append(ds, rows((2, 1, "twin"), (3, 1, "twin")))
        self.sync(ds)
        self.assertSynced(ds)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE k = 1" % tbl(ds)), "4")
        snap = snapshot(self.pg, ds)
        self.sync(ds, lookback_seconds=3600)
        self.assertEqual(snapshot(self.pg, ds), snap)

    def test_lookback_boundary_is_inclusive(self):
        """An incremental column other than __time keeps cursor planning: each cycle reads
        from cursor - lookback_seconds, inclusive."""
        ds = "inc_boundary"
        cols = COLS + [("ts", "TIMESTAMP")]

        def r(sec, ms, k, v):
            return {"__time": t(sec, ms), "ts": t(sec, ms), "k": k, "v": v}
        self.sim.datasource(ds, cols, [r(i, 0, i, "b") for i in range(0, 101, 10)])  # cursor 100 s
        self.sync(ds, lookback_seconds=10, incremental_column="ts")
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(100))
        self.assertEqual(state_row(self.pg, ds)["change_detection"], "cursor")
        # exactly cursor - lookback (90.000 s) is re-read; 89.999 s is not
        self.sim.append(ds, [r(90, 0, 500, "at-lo"), r(89, 999, 501, "before-lo"),
                             r(99, 999, 502, "just-before-cursor")])
        self.sync(ds, lookback_seconds=10, incremental_column="ts")
        ks = sorted(int(r[0]) for r in self.pg.psql("SELECT k FROM %s WHERE k >= 500" % tbl(ds)))
        self.assertEqual(ks, [500, 502])

    def test_whole_window_deleted(self):
        ds = "inc_window_gone"
        self.sim.datasource(ds, COLS, rows(*[(i, i, "w") for i in range(10)]))
        self.sync(ds, lookback_seconds=5)
        self.sim.delete(ds, t(5), t(10))  # everything from cursor - lookback on
        self.sync(ds, lookback_seconds=5)
        self.assertEqual(sorted(int(k) for _t, k, _v in self.flagged(ds)), [5, 6, 7, 8, 9])
        self.assertSynced(ds)
        self.sim.append(ds, rows((20, 20, "later")))
        self.sync(ds, lookback_seconds=5)
        self.assertSynced(ds)
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(20))

    def test_one_of_two_duplicates_vanishes(self):
        ds = "inc_dup_vanish"
        self.sim.datasource(ds, COLS, rows((1, 1, "twin"), (1, 1, "twin"), (1, 1, "twin"), (2, 2, "x")))
        self.sync(ds, lookback_seconds=60)
        self.sim.replace(ds, t(1), t(2), rows((1, 1, "twin")))
        self.sync(ds, lookback_seconds=60)
        self.assertSynced(ds)
        self.assertEqual(self.flagged(ds), collections.Counter({(t(1), "1", "twin"): 2}))
        # and they come back: un-flagged, no new copies
        self.sim.replace(ds, t(1), t(2), rows((1, 1, "twin"), (1, 1, "twin"), (1, 1, "twin")))
        self.sync(ds, lookback_seconds=60)
        self.assertSynced(ds)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "4")

    def test_replace_across_many_slices(self):
        ds = "inc_replace_slices"
        self.sim.datasource(ds, COLS, rows(*[(i, i, "m%d" % i) for i in range(30)]))
        self.sync(ds, lookback_seconds=100, batch_size=3)
        synced_before = self.pg.scalar("SELECT max(_druid_synced)::text FROM %s" % tbl(ds))
        keep = [5, 8, 13]
        self.sim.replace(ds, t(5), t(15), rows(*[(i, i, "m%d" % i) for i in keep] + [(14, 99, "new")]))
        self.sync(ds, lookback_seconds=100, batch_size=3)
        self.assertSynced(ds)
        flagged = sorted(int(k) for _t, k, _v in self.flagged(ds))
        self.assertEqual(flagged, [i for i in range(5, 15) if i not in keep])
        # flagging is a write: _druid_synced moves forward on the flagged rows only
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE _druid_deleted AND _druid_synced <= '%s'"
                                        % (tbl(ds), synced_before)), "0")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted AND k < 5"
                                        " AND _druid_synced > '%s'" % (tbl(ds), synced_before)), "0")

    def test_other_timestamp_as_incremental_column(self):
        ds = "inc_other_col"
        cols = [("__time", "TIMESTAMP"), ("ingested_at", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
        self.sim.datasource(ds, cols, [{"__time": t(i), "ingested_at": t(1000 + i), "k": i, "v": "o"}
                                       for i in range(10)])
        self.sync(ds, incremental_column="ingested_at")
        st = state_row(self.pg, ds)
        self.assertEqual(st["mode"], "incremental")
        self.assertEqual(st["incremental_column"], "ingested_at")
        self.assertEqual(st["cursor"], t(1009))
        # an old event ingested late: ordered by ingested_at, so it is new data
        self.sim.append(ds, [{"__time": t(0), "ingested_at": t(2000), "k": 100, "v": "late event"}])
        self.sync(ds, incremental_column="ingested_at")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE k = 100" % tbl(ds)), "1")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "11")
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(2000))

    def test_delete_at_cursor_without_lookback(self):
        # lookback 0 still re-reads the cursor's own timestamp: deletions there are seen.
        ds = "inc_cursor_delete"
        self.sim.datasource(ds, COLS, rows((0, 0, "a"), (4, 1, "b"), (4, 2, "c")))
        self.sync(ds)
        self.sim.replace(ds, t(4), t(5), rows((4, 1, "b")))
        self.sync(ds)
        self.assertSynced(ds)
        self.assertEqual(self.flagged(ds), collections.Counter([(t(4), "2", "c")]))
        # every row at the cursor gone: the (empty) range is still read
        self.sim.delete(ds, t(4), t(5))
        self.sync(ds)
        self.assertSynced(ds)
        self.assertEqual(sorted(k for _t, k, _v in self.flagged(ds)), ["1", "2"])
        self.sim.append(ds, rows((9, 9, "z")))
        self.sync(ds)
        self.assertSynced(ds)
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(9))

    def test_multi_slice_rows_synced(self):
        ds = "inc_slices"
        self.sim.datasource(ds, COLS, rows(*[(i, i, "s") for i in range(95)]))
        self.sync(ds, batch_size=10)
        self.assertSynced(ds)
        st = state_row(self.pg, ds)
        self.assertEqual(st["rows_synced"], 95)
        self.assertEqual(st["cursor"], t(94))
        self.assertIsNone(st["last_error"])


if __name__ == "__main__":
    harness.main()
