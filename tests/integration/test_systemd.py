"""Running as a real systemd service: the sd_notify protocol (READY once the configuration is
valid, then STATUS= says what start-up waits for, STATUS, WATCHDOG cadence, RELOADING/READY around SIGHUP, STOPPING, start-up
failures), SIGHUP reloads in the middle of a sync, SIGTERM in the middle of a slice
(only whole slices committed; a second SIGTERM; --once), and the Prometheus endpoint."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import harness
from harness import EnvTestCase, BIN, WIKI, Env, free_port, iso_ms, ms_iso, state_row, table_exists, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2025-01-01T00:00:00.000Z")


def rows(n, start=0):
    return [{"__time": ms_iso(BASE + i * 1000), "k": i, "v": "v%d" % i} for i in range(start, start + n)]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

NotifySocket = harness.NotifyReader  # a fake $NOTIFY_SOCKET (harness.py)


class Daemon:
    """druid-syncd with stderr in a file (a full pipe would block it)."""

    def __init__(self, env, *args, extra_env=None, notify=None, watchdog_usec=None):
        self.log = tempfile.NamedTemporaryFile(prefix="dsync-daemon-", suffix=".log", dir=env.tmp, delete=False)
        e = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "CREDENTIALS_DIRECTORY"):
            e.pop(k, None)
        if notify is not None:
            e["NOTIFY_SOCKET"] = notify.path
        if watchdog_usec is not None:
            e["WATCHDOG_USEC"] = str(watchdog_usec)
        e.update(extra_env or {})
        self.t0 = time.time()
        self.proc = subprocess.Popen([BIN, "-c", env.config_path] + list(args), stdout=subprocess.DEVNULL,
                                     stderr=self.log, env=e)

    def stderr(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def send(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Sends sig; returns (exit code or None if it had to be killed, seconds)."""
        t0 = time.time()
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        self.proc.send_signal(sig)
        rc = self.wait(timeout)
        secs = time.time() - t0
        if rc is None:
            self.proc.kill()
            self.proc.wait()
        return rc, secs

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, n=4000):
        return self.stderr()[-n:]


def write_raw_config(env, obj):
    with open(env.config_path, "w") as f:
        json.dump(obj, f)


def slice_queries(sim, ds):
    """The slice reads of `ds` seen by the simulator (not COUNT planning queries)."""
    out = []
    frm = "FROM " + harness.qident(ds)
    for q in sim.queries():
        sql = q.get("sql") or ""
        if frm in sql and "COUNT(" not in sql.upper() and "INFORMATION_SCHEMA" not in sql.upper():
            out.append(q)
    return out


def slice_range(q):
    """[lo, hi) of a slice query in epoch millis (None when open)."""
    sql = q["sql"]
    params = [p["value"] for p in q.get("parameters") or []]
    lo = hi = None
    i = 0
    for m in re.finditer(r'"__time" (>=|<) \?', sql):
        v = params[i] if i < len(params) else None
        i += 1
        if m.group(1) == ">=":
            lo = v
        else:
            hi = v
    return lo, hi


def pg_count_range(pg, table, lo, hi):
    conds = []
    if lo is not None:
        conds.append("__time >= to_timestamp(%d / 1000.0)" % lo)
    if hi is not None:
        conds.append("__time < to_timestamp(%d / 1000.0)" % hi)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    return int(pg.scalar("SELECT count(*) FROM %s%s" % (tbl(table), where)))


def count_rows(pg, table):
    if not table_exists(pg, table):
        return 0
    return int(pg.scalar("SELECT count(*) FROM %s" % tbl(table)))


def no_duplicates(pg, table):
    return pg.scalar("SELECT count(*) = count(DISTINCT _druid_id) FROM %s" % tbl(table)) == "t"


# ---------------------------------------------------------------------------
# 1. the notify protocol
# ---------------------------------------------------------------------------

class NotifyProtocolTest(unittest.TestCase):
    """One daemon run, inspected step by step: READY at once; Druid first answers 503 to the
    start-up probe three times (STATUS= says so); then STATUS on every change (at most every
    0.5 s, at least every ~5 s), watchdog pings, SIGHUP, SIGTERM."""

    @classmethod
    def setUpClass(cls):
        cls.env = Env()
        cls.pg, cls.sim = cls.env.pg, cls.env.sim
        cls.sim.datasource("small", COLS, rows(300))
        cls.env.config(retry_initial_seconds=0.4, retry_max_seconds=0.8, max_retries=6,
                       sync_interval_seconds=1)
        cls.sim.fault("status", match="SELECT 1", times=3, error="unavailable")
        cls.ns = NotifySocket()
        cls.t_start = time.monotonic()
        cls.d = Daemon(cls.env, notify=cls.ns, watchdog_usec=1000000)
        try:
            cls.ready_idx = cls.ns.wait(lambda kv: kv.get("READY") == "1", timeout=30, what="READY=1")
        except AssertionError:
            cls.ready_idx = None

    @classmethod
    def tearDownClass(cls):
        cls.d.kill()
        cls.ns.close()
        cls.env.close()

    def msgs(self):
        return self.ns.messages()

    def test_01_ready_at_once_then_waiting_for_druid(self):
        self.assertIsNotNone(self.ready_idx, "no READY=1 within 30 s\n" + self.d.tail())
        # READY does not wait for a peer (issue 9: start-up never times out on one)
        self.assertLess(self.msgs()[self.ready_idx][0] - self.t_start, 1.5,
                        "READY=1 waited for Druid")
        wait_for(lambda: any(re.search(r"\d+ of \d+ datasources", kv.get("STATUS", ""))
                             for _, kv, _ in self.msgs()), timeout=30, what="syncing STATUS=")
        ms = self.msgs()
        # The three 503s were all used: the probe retried until Druid answered.
        probes = [q for q in self.sim.queries() if (q.get("sql") or "").strip() == "SELECT 1"]
        self.assertGreaterEqual(len(probes), 4, "expected 3 failed probes + 1 good one: %r" % probes)
        self.assertEqual([q["status"] for q in probes[:3]], [503, 503, 503])
        self.assertEqual(probes[3]["status"], 200)
        statuses = [kv["STATUS"] for _, kv, _ in ms if "STATUS" in kv]
        first = next(i for i, st in enumerate(statuses) if re.search(r"\d+ of \d+ datasources", st))
        waiting = [st for st in statuses[:first] if st.startswith("waiting for Druid at ")]
        self.assertTrue(waiting, "no STATUS= while waiting for Druid: %r" % statuses)
        self.assertRegex(waiting[0], r"retry in [0-9.]+ s$")
        self.assertIn("Druid at", self.d.stderr())

    def test_02_status_keeps_coming(self):
        self.assertIsNotNone(self.ready_idx)
        # Wait for at least 3 STATUS messages after READY (every ~5 s).
        # Start-up STATUS= come first now (READY is at once): wait for 3 of the summaries.
        wait_for(lambda: len([m for m in self.msgs()[self.ready_idx:]
                              if re.search(r"\d+ of \d+ datasources", m[1].get("STATUS", ""))]) >= 3,
                 timeout=20, what="3 STATUS summaries after READY")
        st = [m for m in self.msgs()[self.ready_idx + 1:] if "STATUS" in m[1]]
        periodic = [m for m in st if re.search(r"\d+ of \d+ datasources", m[1]["STATUS"])]
        self.assertGreaterEqual(len(periodic), 2, [m[1]["STATUS"] for m in st])
        for m in periodic:
            self.assertIn("rows/s", m[1]["STATUS"])
            self.assertRegex(m[1]["STATUS"], r"\d+ of \d+ datasources")
        gaps = [b[0] - a[0] for a, b in zip(periodic, periodic[1:])]
        # on every change, rate-limited to 0.5 s, and at least every ~5 s
        for g in gaps:
            self.assertTrue(0.4 <= g <= 6.5, "STATUS interval %.2f s: %r" % (g, gaps))
        # The datasource count reflects discovery: one datasource.
        self.assertIn("of 1 datasources", periodic[-1][1]["STATUS"])

    def test_03_watchdog_cadence(self):
        self.assertIsNotNone(self.ready_idx)
        start = len(self.msgs())
        time.sleep(3.2)
        pings = [m[0] for m in self.msgs()[start:] if m[1].get("WATCHDOG") == "1"]
        self.assertGreaterEqual(len(pings), 4, "only %d WATCHDOG=1 in 3.2 s (WATCHDOG_USEC=1000000)" % len(pings))
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        for g in gaps:
            self.assertTrue(0.3 <= g <= 0.8, "watchdog interval %.3f s, expected ~0.5 s: %r" % (g, gaps))

    def test_04_sighup_reloading_then_ready(self):
        self.assertIsNotNone(self.ready_idx)
        self.assertTrue(self.d.alive())
        start = len(self.msgs())
        t_sig = time.monotonic()
        self.d.send(signal.SIGHUP)
        i = self.ns.wait(lambda kv: kv.get("RELOADING") == "1", start=start, timeout=10, what="RELOADING=1")
        kv = self.msgs()[i][1]
        self.assertIn("MONOTONIC_USEC", kv, "RELOADING=1 without MONOTONIC_USEC: %r" % self.msgs()[i][2])
        self.assertRegex(kv["MONOTONIC_USEC"], r"^\d+$")
        usec = int(kv["MONOTONIC_USEC"])
        # CLOCK_MONOTONIC, the clock Python's time.monotonic() reads on Linux
        self.assertLess(abs(usec / 1e6 - t_sig), 5.0, "MONOTONIC_USEC %d is not CLOCK_MONOTONIC" % usec)
        j = self.ns.wait(lambda kv: kv.get("READY") == "1", start=i + 1, timeout=10, what="READY=1 after reload")
        self.assertGreater(j, i)
        self.assertIn("configuration reloaded", self.d.stderr())
        self.assertTrue(self.d.alive())

    def test_05_sigterm_stopping(self):
        self.assertIsNotNone(self.ready_idx)
        start = len(self.msgs())
        rc, secs = self.d.stop(signal.SIGTERM, timeout=15)
        self.assertEqual(rc, 0, self.d.tail())
        i = self.ns.wait(lambda kv: kv.get("STOPPING") == "1", start=start, timeout=2, what="STOPPING=1")
        self.assertGreaterEqual(i, start)


class StartupFailureTest(EnvTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sim.datasource("small", COLS, rows(10))

    def run_failing(self, timeout=30, **cfg):
        """--once with this configuration: (exit code, notify messages, stderr)."""
        ns = NotifySocket()
        try:
            self.env.config(**cfg)
            d = Daemon(self.env, "--once", notify=ns)
            rc = d.wait(timeout)
            if rc is None:
                d.kill()
                self.fail("the daemon did not exit within %d s\n%s" % (timeout, d.tail()))
            time.sleep(0.2)
            return rc, ns.messages(), d.stderr()
        finally:
            ns.close()

    def test_unreachable_postgres(self):
        bad = "host=/nonexistent-dsync-dir port=5 user=postgres dbname=x connect_timeout=2"
        # --once: exit 1 with the reason
        rc, ms, err = self.run_failing(postgres=bad, connect_timeout_seconds=2)
        self.assertEqual(rc, 1, err)
        statuses = [m[1]["STATUS"] for m in ms if "STATUS" in m[1]]
        self.assertTrue(any(s.startswith("start-up failed:") and "PostgreSQL" in s for s in statuses),
                        "expected STATUS=start-up failed: PostgreSQL ...; got %r\n%s" % (statuses, err))
        # the daemon: READY (systemctl start does not time out), then it waits and says why
        ns = NotifySocket()
        d = Daemon(self.env, notify=ns)
        try:
            ns.wait(lambda kv: kv.get("READY") == "1", timeout=10, what="READY=1")
            ns.wait(lambda kv: kv.get("STATUS", "").startswith("waiting for PostgreSQL: "), timeout=10,
                    what="STATUS= waiting for PostgreSQL")
            self.assertTrue(d.alive(), d.tail())
            rc, _ = d.stop()
            self.assertEqual(rc, 0, d.tail())
        finally:
            d.kill()
            ns.close()

    def test_druid_refusing_credentials_once(self):
        """Under --once, Druid refusing our credentials at start-up ends the run."""
        self.sim.clear_faults()
        self.sim.fault("status", match="SELECT 1", times=1, error="unauthorized")
        ns = NotifySocket()
        try:
            self.env.config()
            d = Daemon(self.env, "--once", notify=ns)
            rc = d.wait(30)
            if rc is None:
                d.kill()
                self.fail("--once did not exit\n" + d.tail())
            time.sleep(0.2)
            ms, err = ns.messages(), d.stderr()
        finally:
            ns.close()
            self.sim.clear_faults()
        self.assertEqual(rc, 1, err)
        statuses = [m[1]["STATUS"] for m in ms if "STATUS" in m[1]]
        self.assertTrue(any(s.startswith("start-up failed:") and "Druid" in s for s in statuses),
                        "expected STATUS=start-up failed: Druid ...; got %r\n%s" % (statuses, err))

    def test_druid_refusing_credentials_daemon(self):
        """Without --once, refused credentials keep the daemon up (a restart cannot help):
        it says so in STATUS= and the log, and a reload tries again."""
        self.sim.clear_faults()
        self.sim.fault("status", match="SELECT 1", times=1, error="unauthorized")
        ns = NotifySocket()
        d = None
        try:
            self.env.config()
            d = Daemon(self.env, notify=ns)
            i = ns.wait(lambda kv: "credentials" in kv.get("STATUS", ""), timeout=20,
                        what="STATUS= about refused credentials")
            self.assertIn("401", ns.messages()[i][1]["STATUS"])
            time.sleep(1.0)
            self.assertTrue(d.alive(), "the daemon exited on refused credentials\n" + d.tail())
            self.assertIn("refused our credentials", d.stderr())
            self.assertFalse(table_exists(self.env.pg, "small"), "synced although Druid refused us")
            # the credentials are fixed: a reload probes again and syncing starts
            self.sim.clear_faults()
            d.send(signal.SIGHUP)
            wait_for(lambda: count_rows(self.env.pg, "small") == 10, timeout=30, what="sync after the reload")
            rc, _ = d.stop()
            self.assertEqual(rc, 0, d.tail())
        finally:
            if d:
                d.kill()
            ns.close()
            self.sim.clear_faults()

    def test_druid_not_listening(self):
        rc, ms, err = self.run_failing(druid_port=free_port(), max_retries=2, retry_initial_seconds=0.1,
                                       retry_max_seconds=0.2)
        self.assertNotEqual(rc, 0, err)
        self.assertNotEqual(rc, 78, err)
        statuses = [m[1]["STATUS"] for m in ms if "STATUS" in m[1]]
        self.assertTrue(any(s.startswith("start-up failed:") and "Druid" in s for s in statuses),
                        "expected STATUS=start-up failed: Druid ...; got %r\n%s" % (statuses, err))
        self.assertTrue(any(s.startswith("waiting for Druid at ") for s in statuses), statuses)

    def test_bad_config_exits_78_with_status(self):
        rc, ms, err = self.run_failing(batch_sizee=5)
        self.assertEqual(rc, 78, err)
        statuses = [m[1]["STATUS"] for m in ms if "STATUS" in m[1]]
        self.assertTrue(statuses, "no STATUS= for a bad configuration\n" + err)
        self.assertTrue(any("batch_sizee" in s for s in statuses), statuses)
        self.assertTrue(any(s.startswith("start-up failed") for s in statuses), statuses)
        self.assertFalse(any(m[1].get("READY") == "1" for m in ms))


# ---------------------------------------------------------------------------
# 2. SIGHUP during a sync
# ---------------------------------------------------------------------------

WIKI_ROWS = 39244
WIKI_SUMS = [["9385573", "394298", "8991275"]]


class ReloadDuringSyncTest(EnvTestCase):
    env_args = dict(load={"wikipedia": WIKI})

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sim.datasource("alpha", COLS, rows(50))
        cls.sim.datasource("beta", COLS, rows(40))

    def base_cfg(self, **kw):
        cfg = dict(batch_size=2000, max_concurrent_queries=1, exclude_datasources=["beta"],
                   sync_interval_seconds=0.5)
        cfg.update(kw)
        return cfg

    def test_reload_bad_then_good_during_sync(self):
        env, pg, sim = self.env, self.pg, self.sim
        env.config(**self.base_cfg())
        # Every slice read of wikipedia stalls 0.3 s after 500 rows: the sync lasts ~10 s.
        sim.fault("delay", match='"deleted" FROM "wikipedia"', times=-1, after_rows=500, delay_seconds=0.3)
        ns = NotifySocket()
        d = Daemon(env, notify=ns)
        try:
            ns.wait(lambda kv: kv.get("READY") == "1", timeout=30, what="READY=1")
            wait_for(lambda: table_exists(pg, "wikipedia") and count_rows(pg, "wikipedia") > 0,
                     timeout=30, what="first wikipedia slices")
            wait_for(lambda: count_rows(pg, "alpha") == 50, timeout=30, what="alpha synced")
            self.assertEqual(count_rows(pg, "beta"), 0, "beta is excluded but was synced")

            # A bad file (unknown key) while wikipedia is syncing.
            n_before_bad = count_rows(pg, "wikipedia")
            self.assertLess(n_before_bad, WIKI_ROWS, "the sync was already over; the test needs it running")
            cfg = env.config(**self.base_cfg())
            cfg["batch_sizee"] = 3000
            write_raw_config(env, cfg)
            mark = len(ns.messages())
            d.send(signal.SIGHUP)
            wait_for(lambda: "reload failed" in d.stderr(), timeout=10, what="'reload failed' in the log")
            ns.wait(lambda kv: kv.get("READY") == "1", start=mark, timeout=10, what="READY=1 after a failed reload")
            err = d.stderr()
            line = [l for l in err.splitlines() if "reload failed" in l][0]
            self.assertIn("batch_sizee", line, "the reload failure does not say why")
            self.assertTrue(d.alive(), "the daemon died on a bad reload\n" + d.tail())
            sts = [m[1]["STATUS"] for m in ns.messages()[mark:] if "STATUS" in m[1]]
            self.assertTrue(any("reload failed" in s for s in sts), sts)

            # A good file: a different batch_size, alpha excluded instead of beta.
            time.sleep(0.5)
            n_before_good = count_rows(pg, "wikipedia")
            self.assertLess(n_before_good, WIKI_ROWS, "the sync was already over; the test needs it running")
            env.config(**self.base_cfg(batch_size=3000, exclude_datasources=["alpha"]))
            d.send(signal.SIGHUP)
            wait_for(lambda: "configuration reloaded" in d.stderr(), timeout=10, what="'configuration reloaded'")
            self.assertTrue(d.alive(), d.tail())

            # The sync finishes exactly.
            sim.clear_faults()
            wait_for(lambda: count_rows(pg, "wikipedia") >= WIKI_ROWS
                     and (state_row(pg, "wikipedia") or {}).get("cursor") == "2015-09-12T23:59:59.200Z"
                     and (state_row(pg, "wikipedia") or {}).get("status") == "ok",
                     timeout=60, what="wikipedia fully synced")
            t = tbl("wikipedia")
            self.assertEqual(pg.scalar("SELECT count(*) FROM %s" % t), str(WIKI_ROWS))
            self.assertEqual(pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted" % t), str(WIKI_ROWS))
            self.assertTrue(no_duplicates(pg, "wikipedia"))
            self.assertEqual(pg.psql("SELECT sum(added), sum(deleted), sum(delta) FROM %s" % t), WIKI_SUMS)

            # beta, no longer excluded, is synced; alpha, now excluded, is not any more.
            wait_for(lambda: count_rows(pg, "beta") == 40, timeout=30, what="beta synced after the reload")
            sim.append("alpha", rows(10, 50))
            sim.append("beta", rows(10, 40))
            wait_for(lambda: count_rows(pg, "beta") == 50, timeout=30, what="beta's new rows")
            time.sleep(2)  # several sync intervals
            self.assertEqual(count_rows(pg, "alpha"), 50, "alpha was synced after being excluded")
            self.assertTrue(no_duplicates(pg, "beta"))
            self.assertIn("discovery", d.stderr())
            self.assertTrue(d.alive())
            rc, _ = d.stop()
            self.assertEqual(rc, 0, d.tail())
        finally:
            d.kill()
            ns.close()
            sim.clear_faults()


# ---------------------------------------------------------------------------
# 3. SIGTERM during a slice
# ---------------------------------------------------------------------------

class ShutdownTest(EnvTestCase):
    """Per test a datasource: 2000 rows synced first; 6000 more appended; the last slice of
    the new rows stalls mid-stream (after 300 of its 2000 rows) for a minute."""

    N0, N1 = 2000, 6000
    n = 0


    def setUp(self):
        ShutdownTest.n += 1
        self.ds = "ds%d" % ShutdownTest.n
        self.sim.clear_faults()
        self.sim.datasource(self.ds, COLS, rows(self.N0))
        self.env.config(batch_size=2000, max_concurrent_queries=2, shutdown_timeout_seconds=3)
        self.env.once("--datasource", self.ds, expect=0)
        self.assertEqual(count_rows(self.pg, self.ds), self.N0)
        self.sim.append(self.ds, rows(self.N1, self.N0))
        self.sim.clear_queries()
        # Only slice reads of the changed chunk match (planning queries and sys.segments do
        # not); each holds about 2000 rows, so the stall after 300 always happens.
        self.sim.fault("delay", match='"v" FROM %s WHERE "__time" >= ?' % harness.qident(self.ds),
                       times=1, after_rows=300, delay_seconds=60)

    def tearDown(self):
        self.sim.clear_faults()

    def druid_count(self, lo, hi):
        n = 0
        for i in range(self.N0 + self.N1):
            t = BASE + i * 1000
            if (lo is None or t >= lo) and (hi is None or t < hi):
                n += 1
        return n

    def wait_stalled(self):
        def stalled():
            for q in slice_queries(self.sim, self.ds):
                if q.get("rows_sent") == 300 and not q.get("finished"):
                    return q
            return None
        return wait_for(stalled, timeout=30, interval=0.05, what="a slice stalled mid-stream")

    def check_whole_slices(self, stalled_q):
        lo, hi = slice_range(stalled_q)
        new_lo = BASE + self.N0 * 1000
        lo = new_lo if lo is None or lo < new_lo else lo
        self.assertEqual(pg_count_range(self.pg, self.ds, lo, hi), 0,
                         "rows of the interrupted slice [%s, %s) were committed" % (lo, hi))
        for q in slice_queries(self.sim, self.ds):
            qlo, qhi = slice_range(q)
            if qhi is not None and qhi <= new_lo:
                continue
            qlo = new_lo if qlo is None or qlo < new_lo else qlo  # only the appended rows
            got = pg_count_range(self.pg, self.ds, qlo, qhi)
            want = self.druid_count(qlo, qhi)
            self.assertIn(got, (0, want), "slice [%s, %s) holds %d rows, Druid has %d: a partial slice"
                          % (qlo, qhi, got, want))
        self.assertTrue(no_duplicates(self.pg, self.ds))
        # the original rows are intact
        self.assertEqual(pg_count_range(self.pg, self.ds, None, BASE + self.N0 * 1000), self.N0)

    def test_sigterm_waits_then_rolls_back(self):
        d = Daemon(self.env, "--datasource", self.ds)
        try:
            q = self.wait_stalled()
            time.sleep(0.5)
            rc, secs = d.stop(signal.SIGTERM, timeout=3 + 7)
            self.assertIsNotNone(rc, "no exit within shutdown_timeout_seconds (3) + 7 s\n" + d.tail())
            self.assertEqual(rc, 0, d.tail())
            self.assertLess(secs, 3 + 3, "took %.1f s with shutdown_timeout_seconds 3" % secs)
            q = [x for x in slice_queries(self.sim, self.ds) if x.get("sql") == q["sql"]
                 and x.get("parameters") == q["parameters"]][0]
            self.check_whole_slices(q)
            self.assertIn("stopping", d.stderr())
        finally:
            d.kill()

    def test_second_sigterm_is_prompt(self):
        d = Daemon(self.env, "--datasource", self.ds)
        try:
            q = self.wait_stalled()
            time.sleep(0.3)
            t0 = time.time()
            d.send(signal.SIGTERM)
            time.sleep(0.3)
            d.send(signal.SIGTERM)
            rc = d.wait(10)
            secs = time.time() - t0
            self.assertIsNotNone(rc, d.tail())
            self.assertEqual(rc, 0, d.tail())
            self.assertLess(secs, 2.0, "a second SIGTERM should stop at once (took %.1f s; timeout 3 s)" % secs)
            self.check_whole_slices(q)
        finally:
            d.kill()

    def test_sigterm_under_once_exits_1(self):
        d = Daemon(self.env, "--once", "--datasource", self.ds)
        try:
            q = self.wait_stalled()
            time.sleep(0.3)
            rc, secs = d.stop(signal.SIGTERM, timeout=10)
            self.assertIsNotNone(rc, d.tail())
            self.assertEqual(rc, 1, "an interrupted --once did not sync everything: exit 1 expected\n" + d.tail())
            self.assertLess(secs, 3 + 3)
            self.check_whole_slices(q)
        finally:
            d.kill()


# ---------------------------------------------------------------------------
# 4. metrics
# ---------------------------------------------------------------------------

QUOTED = 'we"ird\\ds'


def parse_prom(text):
    """Prometheus text format 0.0.4 -> ([(name, {label: value}, float)], {family: type}).
    Fails on a line that is not a comment or a sample, or a sample before its HELP/TYPE."""
    samples, types, helps = [], {}, set()
    lab_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
    for line in text.split("\n"):
        if line == "":
            continue
        if line.startswith("# HELP "):
            helps.add(line.split(" ")[2])
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            if parts[2] not in helps:
                raise AssertionError("TYPE before HELP for %s" % parts[2])
            types[parts[2]] = parts[3]
            continue
        if line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m:
            raise AssertionError("not a Prometheus sample line: %r" % line)
        name, labtxt, val = m.groups()
        labels = {}
        if labtxt:
            pos = 0
            while pos < len(labtxt):
                lm = lab_re.match(labtxt, pos)
                if not lm:
                    raise AssertionError("bad labels in %r" % line)
                v = re.sub(r'\\(.)', lambda x: {"n": "\n"}.get(x.group(1), x.group(1)), lm.group(2))
                labels[lm.group(1)] = v
                pos = lm.end()
        fam = name
        if fam not in types:
            raise AssertionError("sample %r before its # TYPE line" % line)
        samples.append((name, labels, float(val)))
    return samples, types


def get(samples, name, **labels):
    for n, l, v in samples:
        if n == name and all(l.get(k) == x for k, x in labels.items()):
            return v
    return None


class MetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = Env(load={"wikipedia": WIKI})
        cls.pg, cls.sim = cls.env.pg, cls.env.sim
        cls.sim.datasource(QUOTED, COLS, rows(20))
        cls.port = free_port()
        cls.env.config(batch_size=5000, max_concurrent_queries=2, metrics_listen="127.0.0.1:%d" % cls.port,
                       sync_interval_seconds=0.5)
        # slow enough to scrape during the sync
        cls.sim.fault("delay", match='"deleted" FROM "wikipedia"', times=8, after_rows=1000, delay_seconds=0.5)
        cls.d = Daemon(cls.env)
        cls.during = None
        try:
            wait_for(lambda: table_exists(cls.pg, "wikipedia") and count_rows(cls.pg, "wikipedia") > 0,
                     timeout=30, what="first slice")
            cls.during = cls.scrape()
        except Exception as e:  # noqa
            cls.during_err = "%s\n%s" % (e, cls.d.tail())
        try:
            wait_for(lambda: (state_row(cls.pg, "wikipedia") or {}).get("rows_synced") == WIKI_ROWS
                     and (state_row(cls.pg, "wikipedia") or {}).get("status") == "ok", timeout=90,
                     what="wikipedia synced")
            time.sleep(0.3)
        except AssertionError:
            pass

    @classmethod
    def tearDownClass(cls):
        cls.d.kill()
        cls.env.close()

    @classmethod
    def scrape(cls, path="/metrics"):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (cls.port, path), timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode("utf-8")

    def test_01_during_sync(self):
        self.assertIsNotNone(self.during, getattr(self, "during_err", ""))
        status, ctype, text = self.during
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        samples, types = parse_prom(text)
        self.assertIn("druid_syncd_rows_synced_total", types)
        self.assertEqual(types["druid_syncd_rows_synced_total"], "counter")
        self.assertEqual(types.get("druid_syncd_lag_seconds"), "gauge")
        rows_now = get(samples, "druid_syncd_rows_synced_total", datasource="wikipedia")
        self.assertIsNotNone(rows_now, text)
        self.assertLess(rows_now, WIKI_ROWS)
        self.assertIsNotNone(get(samples, "druid_syncd_druid_queries_in_flight"), text)

    def test_02_after_sync(self):
        st = state_row(self.pg, "wikipedia")
        self.assertEqual(st and st["rows_synced"], WIKI_ROWS, self.d.tail())
        time.sleep(1.6)  # a few more (empty) cycles at sync_interval_seconds 0.5
        st = state_row(self.pg, "wikipedia")
        status, _ct, text = self.scrape()
        samples, types = parse_prom(text)
        # rows synced = rows committed as new (the state's rows_synced), not rows re-read
        self.assertEqual(get(samples, "druid_syncd_rows_synced_total", datasource="wikipedia"), WIKI_ROWS,
                         "druid_syncd_rows_synced_total differs from the %d rows synced (state rows_synced %s)"
                         % (WIKI_ROWS, st["rows_synced"]))
        self.assertEqual(int(self.pg.scalar("SELECT count(*) FROM %s" % tbl("wikipedia"))), WIKI_ROWS)
        slices = get(samples, "druid_syncd_slices_total", datasource="wikipedia")
        self.assertIsNotNone(slices, text)
        self.assertGreaterEqual(slices, 8)
        self.assertGreaterEqual(slices, st["slices_committed"] if st.get("slices_committed") is not None else 0)
        ok = get(samples, "druid_syncd_cycles_total", datasource="wikipedia", result="ok")
        self.assertIsNotNone(ok, text)
        self.assertGreaterEqual(ok, 1)
        self.assertIsNotNone(get(samples, "druid_syncd_cycles_total", datasource="wikipedia", result="failed"))
        lag = get(samples, "druid_syncd_lag_seconds", datasource="wikipedia")
        self.assertIsNotNone(lag, text)
        self.assertEqual(lag, 0.0, "fully synced, the lag should be 0")
        last = get(samples, "druid_syncd_last_success_timestamp_seconds", datasource="wikipedia")
        self.assertIsNotNone(last, text)
        self.assertLess(abs(time.time() - last), 60, "last success %.0f is not near now" % last)
        self.assertIsNotNone(get(samples, "druid_syncd_druid_queries_in_flight"), text)
        pgc = get(samples, "druid_syncd_postgres_connections")
        self.assertIsNotNone(pgc, text)
        self.assertGreaterEqual(pgc, 1)
        self.assertIsNotNone(get(samples, "druid_syncd_retries_total", kind="transient"), text)

    def test_03_quoted_datasource_label(self):
        wait_for(lambda: count_rows(self.pg, QUOTED) == 20, timeout=30, what="quoted datasource synced")
        _s, _c, text = self.scrape()
        self.assertIn('datasource="we\\"ird\\\\ds"', text)
        samples, _t = parse_prom(text)
        self.assertEqual(get(samples, "druid_syncd_rows_synced_total", datasource=QUOTED), 20,
                         "rows_synced_total of a 20-row datasource after several cycles")

    def test_04_retries_after_429(self):
        _s, _c, text = self.scrape()
        before = get(parse_prom(text)[0], "druid_syncd_retries_total", kind="transient")
        # every cycle reads sys.segments (an unchanged wikipedia is not queried itself)
        self.sim.fault("status", match="sys.segments", times=1, error="capacity")

        def increased():
            v = get(parse_prom(self.scrape()[2])[0], "druid_syncd_retries_total", kind="transient")
            return v is not None and v > before
        wait_for(increased, timeout=20, what="retries_total{kind=transient} to increase after a 429")
        self.assertTrue(self.d.alive())

    def test_05_other_path_404(self):
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.scrape("/other")
        self.assertEqual(cm.exception.code, 404)

    def test_06_invalid_metrics_listen(self):
        cfg_path = os.path.join(self.env.tmp, "bad-metrics.json")
        cfg = {"druid_host": "127.0.0.1", "druid_port": self.sim.port, "postgres": self.pg.conninfo(),
               "metrics_listen": "nonsense"}
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        p = harness.run_bin(["-c", cfg_path, "--once"], timeout=30)
        self.assertEqual(p.returncode, 78, p.stderr)
        self.assertIn("metrics_listen", p.stderr)
        p = harness.run_bin(["-c", cfg_path, "--check-config"], timeout=30)
        self.assertEqual(p.returncode, 78, p.stderr)
        self.assertIn("metrics_listen", p.stdout + p.stderr)


if __name__ == "__main__":
    harness.main()
