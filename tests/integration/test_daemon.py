"""The daemon mode: continuous syncing, new rows and datasources picked up, clean exit on
SIGTERM/SIGINT, systemd notifications, journal priority prefixes, SIGHUP reload."""
import collections
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import harness
from harness import EnvTestCase, BIN, iso_ms, ms_iso, state_row, table_exists, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2025-01-01T00:00:00.000Z")


def rows(n, start=0):
    return [{"__time": ms_iso(BASE + i * 1000), "k": i, "v": "v%d" % i} for i in range(start, start + n)]


class Daemon:
    """druid-syncd without --once; stderr goes to a file (a pipe could fill up and block it)."""

    def __init__(self, env, *args, extra_env=None, journal=False):
        self.log = tempfile.NamedTemporaryFile(prefix="dsync-daemon-", suffix=".log", dir=env.tmp, delete=False)
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.pop("JOURNAL_STREAM", None)
        if journal:
            st = os.fstat(self.log.fileno())
            e["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        e.update(extra_env or {})
        self.proc = subprocess.Popen([BIN, "-c", env.config_path] + list(args), stdout=subprocess.DEVNULL,
                                     stderr=self.log, env=e)

    def stderr(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Sends sig; returns (exit code, seconds it took)."""
        t0 = time.time()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("druid-syncd did not exit within %ss of %s\n%s"
                                 % (timeout, sig.name, self.stderr()[-3000:]))
        return rc, time.time() - t0

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class DaemonTest(EnvTestCase):

    def setUp(self):
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.kill()

    def start(self, *args, **kw):
        d = Daemon(self.env, *args, **kw)
        self.daemons.append(d)
        return d

    def count(self, ds, where="WHERE NOT _druid_deleted"):
        if not table_exists(self.pg, ds):
            return -1
        return int(self.pg.scalar("SELECT count(*) FROM %s %s" % (tbl(ds), where)))

    def assertNoDuplicates(self, ds):
        dup = self.pg.psql("SELECT k::text, count(*) FROM %s GROUP BY 1 HAVING count(*) > 1" % tbl(ds))
        self.assertEqual(dup, [], "duplicate rows")

    def test_continuous_sync_and_sigterm(self):
        ds = "dm_main"
        self.sim.datasource(ds, COLS, rows(50))
        self.env.config(datasources=[ds, "dm_late"], sync_interval_seconds=0.5, batch_size=20)
        d = self.start()
        wait_for(lambda: self.count(ds) == 50, timeout=30, what="initial 50 rows")
        self.sim.append(ds, rows(25, start=50))
        wait_for(lambda: self.count(ds) == 75, timeout=30, what="appended rows")
        # a datasource that appears while the daemon runs
        self.sim.datasource("dm_late", COLS, rows(7))
        wait_for(lambda: self.count("dm_late") == 7, timeout=30, what="new datasource")
        self.sim.append(ds, rows(5, start=75))
        wait_for(lambda: self.count(ds) == 80, timeout=30, what="second append")
        time.sleep(1.2)  # settle
        snap = harness.snapshot(self.pg, ds)
        time.sleep(2.0)  # several idle cycles over unchanged data write nothing
        self.assertEqual(harness.snapshot(self.pg, ds), snap, "idle cycles rewrote rows")
        self.assertEqual(self.count(ds, ""), 80)
        self.assertNoDuplicates(ds)
        self.assertIsNone(state_row(self.pg, ds)["last_error"])
        rc, took = d.stop(signal.SIGTERM, timeout=10)
        self.assertEqual(rc, 0, d.stderr()[-3000:])
        self.assertLess(took, 5, "SIGTERM took %.1fs" % took)
        self.assertEqual(self.count(ds, ""), 80)
        self.assertNoDuplicates(ds)

    def test_sigint_exits_zero(self):
        ds = "dm_int"
        self.sim.datasource(ds, COLS, rows(10))
        self.env.config(datasources=[ds], sync_interval_seconds=0.5)
        d = self.start()
        wait_for(lambda: self.count(ds) == 10, timeout=30, what="rows")
        rc, took = d.stop(signal.SIGINT, timeout=10)
        self.assertEqual(rc, 0, d.stderr()[-3000:])
        self.assertLess(took, 5)

    def test_sigterm_during_slow_query(self):
        # SIGTERM while a slice query is slow in Druid: the daemon may let slices in flight
        # finish (it logs a grace period) but must exit 0 in bounded time, and the slice is
        # either committed completely or not at all.
        ds = "dm_slow"
        self.sim.datasource(ds, COLS, rows(10))
        self.env.config(datasources=[ds], sync_interval_seconds=0.5)
        self.env.once()
        self.sim.append(ds, rows(10, start=10))
        self.sim.fault("delay", match='"v" FROM "dm_slow"', times=-1, delay_seconds=6)
        try:
            d = self.start()
            wait_for(lambda: any('"v" FROM "dm_slow"' in (q.get("sql") or "") and q.get("finished") is None
                                 for q in self.sim.queries()), timeout=20, what="a slow query in flight")
            rc, took = d.stop(signal.SIGTERM, timeout=40)
            self.assertEqual(rc, 0, d.stderr()[-3000:])
            self.assertIn(self.count(ds, ""), (10, 20), "a partial slice was committed")
            self.assertNoDuplicates(ds)
        finally:
            self.sim.clear_faults()

    def test_systemd_notify(self):
        ds = "dm_notify"
        self.sim.datasource(ds, COLS, rows(5))
        self.env.config(datasources=[ds], sync_interval_seconds=0.5)
        path = os.path.join(self.env.tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(0.2)
        msgs = []

        def drain():
            while True:
                try:
                    msgs.append(sock.recv(4096).decode("utf-8", "replace"))
                except (socket.timeout, BlockingIOError):
                    return

        try:
            d = self.start(extra_env={"NOTIFY_SOCKET": path})
            wait_for(lambda: (drain(), any("READY=1" in m for m in msgs))[1], timeout=30, what="READY=1")
            wait_for(lambda: self.count(ds) == 5, timeout=30, what="rows")
            rc, _took = d.stop(signal.SIGTERM)
            drain()
            self.assertEqual(rc, 0, d.stderr()[-3000:])
            self.assertTrue(any("STOPPING=1" in m for m in msgs), "no STOPPING=1: %s" % msgs)
            self.assertTrue(any("STATUS=" in m for m in msgs), "no STATUS=: %s" % msgs)
        finally:
            sock.close()

    def test_journal_priority_prefix(self):
        ds = "dm_journal"
        self.sim.datasource(ds, COLS, rows(3))
        self.env.config(datasources=[ds], sync_interval_seconds=0.5)
        d = self.start(journal=True)
        wait_for(lambda: self.count(ds) == 3, timeout=30, what="rows")
        rc, _ = d.stop()
        self.assertEqual(rc, 0)
        lines = [x for x in d.stderr().splitlines() if x.strip()]
        self.assertTrue(lines)
        bad = [x for x in lines if not re.match(r"^<[0-7]>", x)]
        self.assertEqual(bad, [], "lines without a syslog priority prefix under JOURNAL_STREAM")

    def test_sighup_reload_after_auth_failure(self):
        # 401 in the middle of a run: syncing stops "until the configuration is reloaded";
        # the daemon stays up; after SIGHUP it syncs again.
        ds = "dm_hup"
        self.sim.datasource(ds, COLS, rows(6))
        self.sim.fault("status", match='FROM "dm_hup"', times=-1, error="unauthorized")
        try:
            self.env.config(datasources=[ds], sync_interval_seconds=0.5)
            d = self.start()
            wait_for(lambda: any(q["status"] == 401 for q in self.sim.queries()), timeout=30, what="a 401")
            time.sleep(1.5)
            n401 = sum(1 for q in self.sim.queries() if q["status"] == 401)
            time.sleep(1.5)
            self.assertEqual(d.proc.poll(), None, "the daemon exited on a 401:\n" + d.stderr()[-3000:])
            self.assertEqual(sum(1 for q in self.sim.queries() if q["status"] == 401), n401,
                             "syncing went on after a 401")
            self.assertIn("401", d.stderr())
            self.sim.clear_faults()
            self.env.config(datasources=[ds], sync_interval_seconds=0.5, batch_size=5)
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: self.count(ds) == 6, timeout=30, what="rows after SIGHUP")
            rc, _ = d.stop()
            self.assertEqual(rc, 0, d.stderr()[-3000:])
        finally:
            self.sim.clear_faults()

    def test_auth_failure_at_startup_waits_for_reload(self):
        # The same at startup (wrong credentials from the beginning): the daemon logs the
        # reason and waits for a reload instead of exiting (SPEC 4, Errors).
        ds = "dm_hup0"
        self.sim.datasource(ds, COLS, rows(4))
        self.sim.fault("status", match=None, times=-1, error="unauthorized")
        try:
            self.env.config(datasources=[ds], sync_interval_seconds=0.5)
            d = self.start()
            wait_for(lambda: any(q["status"] == 401 for q in self.sim.queries()), timeout=30, what="a 401")
            time.sleep(1.5)
            self.assertEqual(d.proc.poll(), None,
                             "the daemon exited on a 401 at startup instead of waiting for a reload:\n"
                             + d.stderr()[-3000:])
            self.sim.clear_faults()
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: self.count(ds) == 4, timeout=30, what="rows after SIGHUP")
            rc, _ = d.stop()
            self.assertEqual(rc, 0, d.stderr()[-3000:])
        finally:
            self.sim.clear_faults()


if __name__ == "__main__":
    harness.main()
