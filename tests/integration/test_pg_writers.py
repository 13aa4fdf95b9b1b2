"""PostgreSQL writer pool (postgres_writers, distinct from max_concurrent_queries): with fewer
writers than Druid queries, the queries still run in parallel (a slice takes a writer only
once its Druid response has data, and waits for one with its response paused), the data ends
exact, a stalled Druid response holding the only writer does not deadlock the others, and
PostgreSQL never sees more writer connections than configured (plus the control one and the
lease one)."""
import collections
import threading
import time
import unittest

import harness
from harness import EnvTestCase, iso_ms, ms_iso, state_row, tbl

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2021-03-01T00:00:00.000Z")
HOUR = 3600 * 1000


def rows(n, start=0, step=60 * 1000):
    return [{"__time": ms_iso(BASE + i * step), "k": i, "v": "v%d" % i}
            for i in range(start, start + n)]


def slice_queries(sim, ds):
    return [q for q in sim.queries()
            if q.get("sql") and '"v" FROM "%s"' % ds in q["sql"] and q.get("finished")]


def max_overlap(queries):
    """The most queries that were in flight at one instant."""
    ev = sorted([(q["started"], 1) for q in queries] + [(q["finished"], -1) for q in queries],
                key=lambda e: (e[0], e[1]))
    n = best = 0
    for _, d in ev:
        n += d
        best = max(best, n)
    return best


class Sampler:
    """Samples the druid-syncd sessions PostgreSQL sees, every 20 ms, while it runs."""

    def __init__(self, pg):
        self.pg, self.max, self.samples, self._stop = pg, 0, 0, False
        self.th = threading.Thread(target=self._loop)
        self.th.start()

    def _loop(self):
        while not self._stop:
            n = int(self.pg.scalar("SELECT count(*) FROM pg_stat_activity "
                                   "WHERE application_name LIKE 'druid-syncd%'"))
            self.max = max(self.max, n)
            self.samples += 1
            time.sleep(0.02)

    def stop(self):
        self._stop = True
        self.th.join()


class PgWritersTest(EnvTestCase):

    def tearDown(self):
        self.sim.clear_faults()

    def assert_exact(self, ds, want):
        got = collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT k::text, v FROM %s WHERE NOT _druid_deleted" % tbl(ds)))
        self.assertEqual(got, collections.Counter((str(r["k"]), r["v"]) for r in want))
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), str(len(want)))
        self.assertEqual(int(state_row(self.pg, ds)["rows_synced"]), len(want))

    def test_one_writer_four_queries_is_exact_and_queries_overlap(self):
        ds = "w_one"
        data = rows(2400)  # 40 hours: slices of 100 rows
        self.sim.datasource(ds, COLS, data, granularity="HOUR")
        self.env.config(datasources=[ds], batch_size=100, max_concurrent_queries=4,
                        postgres_writers=1)
        # every slice's response stalls mid-stream: a slice holding the only writer waits for
        # its Druid rows while the other slices' responses wait, paused, for the writer
        self.sim.fault("delay", match='"v" FROM "%s"' % ds, times=1000, after_rows=30,
                       delay_seconds=0.3)
        sampler = Sampler(self.pg)
        try:
            rc, err = self.env.run("--once", timeout=180)
        finally:
            sampler.stop()
        self.assertEqual(rc, 0, err[-4000:])
        self.assert_exact(ds, data)
        qs = slice_queries(self.sim, ds)
        self.assertGreaterEqual(len(qs), 24)
        # Druid queries ran in parallel although one writer was configured
        self.assertGreater(max_overlap(qs), 1)
        self.assertGreater(sampler.samples, 5)
        self.assertLessEqual(sampler.max, 1 + 2, "more than one writer connection (+ control, lease)")

    def test_writer_connections_bounded_by_postgres_writers(self):
        ds = "w_two"
        data = rows(1600)
        self.sim.datasource(ds, COLS, data, granularity="HOUR")
        self.env.config(datasources=[ds], batch_size=100, max_concurrent_queries=4,
                        postgres_writers=2)
        self.sim.fault("delay", match='"v" FROM "%s"' % ds, times=1000, after_rows=30,
                       delay_seconds=0.3)
        sampler = Sampler(self.pg)
        try:
            rc, err = self.env.run("--once", timeout=180)
        finally:
            sampler.stop()
        self.assertEqual(rc, 0, err[-4000:])
        self.assert_exact(ds, data)
        self.assertGreater(sampler.samples, 5)
        self.assertLessEqual(sampler.max, 2 + 2, "more than two writer connections (+ control, lease)")
        # both writers were used: the two slices' transactions overlapped
        self.assertGreaterEqual(sampler.max, 2)
        # an append afterwards goes through the same pool (merge path on a changed chunk)
        more = rows(50, start=1600)
        self.sim.append(ds, more)
        self.env.run("--once", timeout=120, check_exit=0)
        self.assert_exact(ds, data + more)

    def test_merge_path_counts_with_one_writer(self):
        ds = "w_merge"
        data = rows(600, step=HOUR // 10)
        self.sim.datasource(ds, COLS, data, granularity="HOUR")
        self.env.config(datasources=[ds], batch_size=100, max_concurrent_queries=4,
                        postgres_writers=1, soft_deletes=True)
        self.env.run("--once", timeout=120, check_exit=0)
        self.assert_exact(ds, data)
        # a chunk re-ingested with one row fewer and one changed: merged, the vanished row
        # flagged, the new one inserted
        changed = [dict(r) for r in data if r["k"] != 5]
        changed[0]["v"] = "changed"
        self.sim.datasource(ds, COLS, changed, granularity="HOUR")
        self.env.run("--once", timeout=120, check_exit=0)
        live = collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT k::text, v FROM %s WHERE NOT _druid_deleted" % tbl(ds)))
        self.assertEqual(live, collections.Counter((str(r["k"]), r["v"]) for r in changed))
        flagged = self.pg.psql("SELECT k::text, v FROM %s WHERE _druid_deleted ORDER BY k"
                               % tbl(ds))
        self.assertEqual(sorted(tuple(r) for r in flagged),
                         sorted([("5", "v5"), ("0", "v0")]))


if __name__ == "__main__":
    harness.main()
