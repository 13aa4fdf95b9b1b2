"""A query the daemon abandons (a second SIGTERM, or the stop timeout running out) is also
cancelled in Druid with DELETE /druid/v2/sql/{sqlQueryId}, so Druid does not go on
computing it; nothing of the abandoned slice is committed."""
import signal
import time
import unittest

import harness
from harness import EnvTestCase, iso_ms, ms_iso, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT")]
BASE = iso_ms("2023-04-04T00:00:00.000Z")


class CancelTest(EnvTestCase):
    def stalled_run(self, ds, *args, **cfg):
        self.sim.datasource(ds, COLS, [{"__time": ms_iso(BASE + i), "k": i} for i in range(50)])
        self.env.config(datasources=[ds], batch_size=1000, **cfg)
        # the slice read (not the COUNT planning query) stalls after 5 rows
        self.sim.fault("delay", match='SELECT "__time", "k" FROM "%s"' % ds, times=1,
                       after_rows=5, delay_seconds=60)
        self.sim.clear_queries()
        p = self.env.start_daemon(*args)

        def stalled():
            return [q for q in self.sim.queries()
                    if 'FROM "%s"' % ds in q["sql"] and "COUNT(*)" not in q["sql"]
                    and q["rows_sent"] >= 5 and not q["finished"]]
        q = wait_for(stalled, timeout=30, what="the slice to stall")[0]
        return p, q["context"]["sqlQueryId"]

    def tearDown(self):
        self.sim.clear_faults()

    def test_second_signal_cancels_in_druid(self):
        ds = "cancel_a"
        p, qid = self.stalled_run(ds, "--once")
        t0 = time.time()
        p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=30)
        self.assertLess(time.time() - t0, 10)
        self.assertEqual(p.returncode, 1, err[-3000:])  # an interrupted --once
        wait_for(lambda: qid in self.sim.stats()["cancel_requests"], timeout=10,
                 what="DELETE of the abandoned query")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "0")

    def test_stop_timeout_cancels_in_druid(self):
        ds = "cancel_b"
        p, qid = self.stalled_run(ds, shutdown_timeout_seconds=1)
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err[-3000:])
        self.assertIn(qid, self.sim.stats()["cancel_requests"])
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "0")


if __name__ == "__main__":
    harness.main()
