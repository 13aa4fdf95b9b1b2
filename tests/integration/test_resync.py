"""`druid-syncd resync` (SPEC 1, issue 9 point 1), the daemon's side: a request makes the next
cycle rebuild the datasource from Druid into a shadow table beside the live one, then replace
the live table's contents in one transaction. Checked as an operator would: the table ends
exactly like Druid after drift on both sides; it keeps its OID, a grant, a view and a user
index; a reader never sees it empty or partial; `resync --wait` returns 0 with a daemon and
with --once; a SIGKILL during the rebuild leaves the live table as it was and the next run
completes it; a request made during a rebuild runs again; the shadow is gone afterwards."""
import os
import signal
import subprocess
import threading
import time

import harness
from harness import EnvTestCase, iso_ms, ms_iso, state_row, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
DAY0 = iso_ms("2024-05-01T00:00:00.000Z")
HOUR = 3600 * 1000


def mkrows(hours, per, tag="r"):
    return [{"__time": ms_iso(DAY0 + h * HOUR + i * 60000 + 7), "k": h * 1000 + i,
             "v": "%s%d_%d" % (tag, h, i)} for h in hours for i in range(per)]


class ResyncTest(EnvTestCase):
    def op(self, *args, timeout=120):
        p = harness.run_bin([args[0], "-c", self.env.config_path] + list(args[1:]),
                            timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def setup_ds(self, ds, hours=6, per=40, **cfg):
        self.sim.datasource(ds, COLS, mkrows(range(hours), per), granularity="HOUR")
        conf = dict(datasources=[ds], lookback_seconds=0, batch_size=per,
                    max_concurrent_queries=1)
        conf.update(cfg)
        self.env.config(**conf)
        self.env.once()
        self.assertEqual(self.count(ds), hours * per)

    def count(self, ds):
        return int(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)))

    def content(self, ds):
        """The table's rows that are not flagged deleted, as (k, v) text, sorted."""
        return self.pg.psql("SELECT k, v FROM %s WHERE NOT _druid_deleted ORDER BY k, v" % tbl(ds))

    def expected(self, rows):
        return sorted([(str(r["k"]), r["v"]) for r in rows])

    def oid(self, ds):
        return self.pg.scalar("SELECT '%s'::regclass::oid" % tbl(ds).replace("'", "''"))

    def shadows(self, ds):
        return self.pg.psql("SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE"
                            " 'druid_syncd_resync_%s%%'" % ds)

    def drift(self, ds):
        """Behind the daemon's back in PostgreSQL, and changed rows in Druid."""
        self.pg.psql("DELETE FROM %s WHERE k %% 7 = 0" % tbl(ds))
        self.pg.psql("UPDATE %s SET v = 'tampered' WHERE k %% 11 = 1" % tbl(ds))
        self.sim.replace(ds, ms_iso(DAY0 + 2 * HOUR), ms_iso(DAY0 + 3 * HOUR),
                         mkrows([2], 25, tag="new"))

    def druid_rows(self, hours=6, per=40):
        rows = [r for r in mkrows(range(hours), per) if not (DAY0 + 2 * HOUR <= iso_ms(r["__time"])
                                                              < DAY0 + 3 * HOUR)]
        return rows + mkrows([2], 25, tag="new")

    def assert_done(self, ds, rows, ledger=True, stopped=False):
        """stopped: the daemon was stopped (SIGTERM) after the rebuild, which may have cut a
        later cycle short: the state row then says so, and nothing else."""
        self.assertEqual(sorted(tuple(r) for r in self.content(ds)), self.expected(rows))
        self.assertEqual(self.count(ds), len(rows))  # nothing left flagged either
        self.assertEqual(self.shadows(ds), [])
        st = state_row(self.pg, ds)
        self.assertIsNone(st["resync_requested"])
        self.assertIsNotNone(st["last_resync"])
        self.assertIsNone(st["resync_started"])
        if stopped and st["status"] == "interrupted":
            self.assertIn(st["last_error"], (None, "stopped before the cycle completed"))
        else:
            self.assertEqual(st["status"], "ok")
        self.assertEqual(int(st["rows_synced"]), len(rows))
        self.assertEqual(st["cursor"][:19], ms_iso(max(iso_ms(r["__time"]) for r in rows))[:19])
        if not ledger:
            return  # the counts fallback keeps no chunk ledger
        keys = self.pg.psql("SELECT DISTINCT datasource FROM druid.druid_syncd_chunks"
                            " WHERE datasource LIKE '%%%s%%'" % ds)
        self.assertEqual(keys, [[ds]])
        stored = int(self.pg.scalar("SELECT sum(stored_rows) FROM druid.druid_syncd_chunks"
                                    " WHERE datasource = '%s'" % ds))
        self.assertEqual(stored, len(rows))

    # ---- --once after a request: exact, identity kept ----

    def test_once_rebuild_exact_and_identity_kept(self):
        ds = "rs_once"
        self.setup_ds(ds)
        self.pg.psql("DO $$ BEGIN CREATE ROLE rs_reader; EXCEPTION WHEN duplicate_object THEN"
                     " NULL; END $$")
        self.pg.psql("GRANT SELECT ON %s TO rs_reader" % tbl(ds))
        self.pg.psql("CREATE VIEW druid.rs_once_view AS SELECT k, v FROM %s WHERE NOT"
                     " _druid_deleted" % tbl(ds))
        self.pg.psql("CREATE INDEX rs_once_user_idx ON %s (v)" % tbl(ds))
        oid = self.oid(ds)
        self.drift(ds)
        code, out, err = self.op("resync", ds)
        self.assertEqual(code, 0, err)
        w = subprocess.Popen([harness.BIN, "resync", "-c", self.env.config_path, "--wait",
                              "--timeout", "60", ds], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        err = self.env.once()
        self.assertIn("resync done", err)
        out, werr = w.communicate(timeout=30)
        self.assertEqual(w.returncode, 0, werr)
        rows = self.druid_rows()
        self.assert_done(ds, rows)
        self.assertEqual(self.oid(ds), oid)
        self.assertEqual(self.pg.scalar("SELECT has_table_privilege('rs_reader', '%s', 'SELECT')"
                                        % tbl(ds).replace("'", "''")), "t")
        self.assertEqual(int(self.pg.scalar("SELECT count(*) FROM druid.rs_once_view")), len(rows))
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM pg_indexes WHERE indexname ="
                                        " 'rs_once_user_idx'"), "1")
        # the next cycle is an ordinary one and finds nothing to do
        self.env.once()
        self.assertEqual(self.count(ds), len(rows))
        self.assertIsNotNone(state_row(self.pg, ds)["last_resync"])

    def test_counts_fallback_rebuild(self):
        ds = "rs_counts"
        self.sim.segments_forbidden(True)
        try:
            self.setup_ds(ds)
            self.drift(ds)
            self.assertEqual(self.op("resync", ds)[0], 0)
            self.env.once()
            self.assert_done(ds, self.druid_rows(), ledger=False)
            self.assertEqual(state_row(self.pg, ds)["change_detection"], "counts")
        finally:
            self.sim.clear_faults()

    # ---- a running daemon: readers, --wait, a second request ----

    def test_daemon_reader_never_partial_second_request_runs_again(self):
        ds = "rs_daemon"
        self.setup_ds(ds)
        self.drift(ds)
        old = self.count(ds)
        rows = self.druid_rows()
        self.assertNotEqual(old, len(rows))
        self.sim.fault("delay", match='FROM "%s"' % ds, times=-1, delay_seconds=0.4)
        d = self.env.start_daemon()
        seen, stop = [], threading.Event()

        def reader():
            while not stop.is_set():
                seen.append(self.count(ds))

        t = threading.Thread(target=reader)
        t.start()
        try:
            code, out, err = self.op("resync", ds)
            self.assertEqual(code, 0, err)
            first = state_row(self.pg, ds)["resync_requested"]
            wait_for(lambda: state_row(self.pg, ds)["resync_started"], timeout=30,
                     what="the rebuild to start")
            w = subprocess.Popen([harness.BIN, "resync", "-c", self.env.config_path, "--wait",
                                  "--timeout", "90", ds], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            # a second request during the rebuild gets its own time
            self.assertEqual(self.op("resync", ds)[0], 0)
            second = state_row(self.pg, ds)["resync_requested"]
            self.assertNotEqual(second, first)
            wait_for(lambda: state_row(self.pg, ds)["last_resync"], timeout=60,
                     what="the first swap")
            st = state_row(self.pg, ds)
            # the second request is still pending (or its rebuild already under way)
            self.assertTrue(st["resync_requested"] == second or st["resync_started"], st)
            last1 = st["last_resync"]
            self.assertEqual(self.count(ds), len(rows))
            out, werr = w.communicate(timeout=90)
            self.assertEqual(w.returncode, 0, werr)
            st = state_row(self.pg, ds)
            self.assertIsNone(st["resync_requested"])
            self.assertNotEqual(st["last_resync"], last1)  # it ran again
        finally:
            stop.set()
            t.join()
            self.sim.clear_faults()
            d.send_signal(signal.SIGTERM)
            d.communicate(timeout=30)
        # every count a reader saw was the old table or the rebuilt one, in that order
        self.assertTrue(set(seen) <= {old, len(rows)}, sorted(set(seen)))
        self.assertEqual(seen[0], old)
        first_new = seen.index(len(rows))
        self.assertTrue(all(c == len(rows) for c in seen[first_new:]))
        self.assert_done(ds, rows, stopped=True)

    # ---- SIGKILL during the rebuild ----

    def test_sigkill_during_rebuild_keeps_live_then_completes(self):
        ds = "rs_kill"
        self.setup_ds(ds)
        self.drift(ds)
        before = self.content(ds)
        oid = self.oid(ds)
        self.assertEqual(self.op("resync", ds)[0], 0)
        self.sim.fault("delay", match='FROM "%s"' % ds, times=-1, delay_seconds=0.5)
        p = self.env.start_daemon("--once")
        try:
            wait_for(lambda: int(state_row(self.pg, ds)["resync_rows"] or 0) > 0, timeout=60,
                     what="a shadow slice to commit")
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.communicate(timeout=30)
        self.assertEqual(self.content(ds), before)
        self.assertEqual(len(self.shadows(ds)), 1)
        self.assertIsNotNone(state_row(self.pg, ds)["resync_started"])
        self.sim.clear_faults()
        err = self.env.once()
        self.assertIn("resync resumes", err)
        self.assert_done(ds, self.druid_rows())
        self.assertEqual(self.oid(ds), oid)


if __name__ == "__main__":
    harness.main()
