"""PostgreSQL-side faults: a writer connection killed in the middle of a slice's COPY is
retried on a fresh connection, and the data ends exact with nothing duplicated; a
PostgreSQL that rejects a value fails the datasource's cycle without touching its table."""
import collections
import threading
import time
import unittest

import harness
from harness import EnvTestCase, iso_ms, ms_iso, snapshot, state_row, tbl

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2020-02-02T00:00:00.000Z")


def rows(n, start=0):
    return [{"__time": ms_iso(BASE + i * 1000), "k": i, "v": "v%d" % i}
            for i in range(start, start + n)]


class PostgresFaultsTest(EnvTestCase):

    def tearDown(self):
        self.sim.clear_faults()

    def test_writer_killed_mid_copy_is_retried(self):
        ds = "pg_kill"
        self.sim.datasource(ds, COLS, rows(400))
        self.env.config(datasources=[ds], batch_size=100, max_concurrent_queries=2)
        # every slice stalls after 20 rows: its COPY is open while we kill the backends
        # slice reads only (they end their column list with "v"), not the planning counts
        self.sim.fault("delay", match='"v" FROM "%s"' % ds, times=2, after_rows=20,
                       delay_seconds=1.5)
        killed = []

        def killer():
            deadline = time.time() + 20
            while time.time() < deadline and not killed:
                r = self.pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE application_name LIKE 'druid-syncd%' AND query LIKE 'COPY%'")
                if r:
                    killed.append(len(r))
                time.sleep(0.05)

        th = threading.Thread(target=killer)
        th.start()
        rc, err = self.env.run("--once", timeout=120)
        th.join()
        self.assertTrue(killed, "no COPY was caught in flight")
        self.assertEqual(rc, 0, err[-4000:])
        self.assertIn("retry", err)
        got = collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT k::text, v FROM %s WHERE NOT _druid_deleted" % tbl(ds)))
        want = collections.Counter((str(r["k"]), r["v"]) for r in rows(400))
        self.assertEqual(got, want)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "400")
        self.assertEqual(int(state_row(self.pg, ds)["rows_synced"]), 400)

    def test_value_rejected_by_postgres_leaves_table_as_it_was(self):
        ds = "pg_reject"
        self.sim.datasource(ds, COLS, rows(10))
        self.env.config(datasources=[ds], batch_size=100, max_retries=1)
        self.env.once()
        snap = snapshot(self.pg, ds)
        # someone narrowed the column by hand: PostgreSQL now refuses Druid's values
        self.pg.psql('ALTER TABLE %s ADD CONSTRAINT small_k CHECK (k < 5) NOT VALID' % tbl(ds))
        self.sim.append(ds, rows(5, start=10))
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertIn("small_k", err)
        self.assertEqual(snapshot(self.pg, ds), snap)
        self.assertIn("small_k", state_row(self.pg, ds)["last_error"])


if __name__ == "__main__":
    harness.main()
