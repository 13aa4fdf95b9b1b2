"""Start-up never hides its reason (issue 9 point 2) and permanent errors fail fast (point 4):
READY as soon as the configuration is valid; an unreachable Druid or PostgreSQL is reported at
once (error log, STATUS=, druid_syncd_up) and retried; --once gives up within
3 x connect_timeout_seconds; TLS, unknown hosts, non-HTTP peers and 4xx are not retried."""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import BIN, EnvTestCase, NotifyReader, free_port, table_exists, tbl, wait_for  # noqa: E402

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = harness.iso_ms("2025-01-01T00:00:00.000Z")


def count_rows(pg, table):
    if not table_exists(pg, table):
        return -1
    return int(pg.scalar("SELECT count(*) FROM %s" % tbl(table)))


def rows(n):
    return [{"__time": harness.ms_iso(BASE + i * 1000), "k": i, "v": "v%d" % i} for i in range(n)]


class Listener:
    """A TCP port that accepts connections and then does what `answer` says: None never
    answers (a hung Druid), bytes are sent before closing."""

    def __init__(self, answer=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.conns = []
        self.accepted = 0
        self.running = True
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.answer is None:
                self.conns.append(c)  # kept open, never read, never answered
                continue
            try:
                c.settimeout(2)
                c.recv(65536)
                c.sendall(self.answer)
            except OSError:
                pass
            c.close()

    def close(self):
        self.running = False
        self.sock.close()
        for c in self.conns:
            c.close()


class Daemon:
    """The real binary with stderr in a file and a notify socket of our own."""

    def __init__(self, env, *args):
        self.reader = NotifyReader()
        self.log = tempfile.NamedTemporaryFile(prefix="dsync-startup-", suffix=".log", dir=env.tmp,
                                               delete=False)
        e = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            e.pop(k, None)
        e["NOTIFY_SOCKET"] = self.reader.path
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([BIN, "-c", env.config_path] + list(args),
                                     stdout=subprocess.DEVNULL, stderr=self.log, env=e)

    def stderr(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def statuses(self):
        return self.reader.values("STATUS")

    def ready_at(self):
        for t, d in self.reader.datagrams():
            if b"READY=1" in d.split(b"\n"):
                return t - self.t0
        return None

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(15) is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.close()
        return self.proc.returncode


def scrape(port, host="localhost"):
    with urllib.request.urlopen("http://%s:%d/metrics" % (host, port), timeout=5) as r:
        return r.read().decode()


def up(text, target):
    m = re.search(r'^druid_syncd_up\{target="%s"\} (\d)$' % target, text, re.M)
    return int(m.group(1)) if m else None


class StartupTest(EnvTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sim.datasource("small", COLS, rows(20))

    def setUp(self):
        self.sim.clear_faults()

    def run_once(self, timeout=60, **cfg):
        self.env.config(**cfg)
        t0 = time.monotonic()
        rc, err = self.env.run("--once", timeout=timeout)
        return rc, err, time.monotonic() - t0

    # ---- a Druid that accepts connections and never answers ----

    def test_hung_druid_once_exits_within_bound(self):
        hung = Listener(None)
        try:
            rc, err, secs = self.run_once(druid_port=hung.port, connect_timeout_seconds=2,
                                          retry_initial_seconds=0.5, retry_max_seconds=2, max_retries=5)
        finally:
            hung.close()
        self.assertEqual(rc, 1, err)
        # within 3 x connect_timeout_seconds (and not at once: it waited for an answer)
        self.assertLessEqual(secs, 3 * 2 + 0.5, err)
        self.assertGreaterEqual(secs, 2, err)
        self.assertRegex(err, r"error +druid: Druid at 127\.0\.0\.1:%d is not usable: no answer to "
                              r"\"SELECT 1\" within 2 s \(connect_timeout_seconds\); retry in" % hung.port)
        self.assertIn("giving up", err)
        self.assertIn("exiting with status 1", err)
        self.assertGreaterEqual(hung.accepted, 2, "the probe was not retried within the bound")

    def test_hung_druid_daemon_ready_status_and_metric(self):
        hung = Listener(None)
        mport = free_port()
        self.env.config(druid_port=hung.port, connect_timeout_seconds=1, retry_initial_seconds=0.5,
                        retry_max_seconds=1, metrics_listen="localhost:%d" % mport)
        d = Daemon(self.env)
        try:
            wait_for(lambda: d.ready_at() is not None, timeout=10, what="READY=1")
            self.assertLess(d.ready_at(), 2.0, "READY waited for a peer")
            wait_for(lambda: any(s.startswith("waiting for Druid at 127.0.0.1:%d: no answer" % hung.port)
                                 for s in d.statuses()), timeout=10, what="STATUS= waiting for Druid")
            st = [s for s in d.statuses() if s.startswith("waiting for Druid")][-1]
            self.assertRegex(st, r"retry in [0-9.]+ s$")
            # each failed attempt logs at once, at error level
            wait_for(lambda: d.stderr().count("is not usable: no answer") >= 3, timeout=15,
                     what="three failed attempts logged")
            m = scrape(mport)
            self.assertEqual(up(m, "druid"), 0, m)
            self.assertEqual(up(m, "postgres"), 1, m)
            # the refresh never replaced the reason with an empty summary while waiting
            time.sleep(5.5)
            self.assertFalse([s for s in d.statuses() if "datasources syncing" in s], d.statuses())
            self.assertTrue(d.statuses()[-1].startswith("waiting for Druid"), d.statuses()[-1])
        finally:
            rc = d.stop()
            hung.close()
        self.assertEqual(rc, 0, d.stderr()[-3000:])

    def test_druid_comes_up_later(self):
        """Druid answers 503 to the probe for a while: READY at once, STATUS and metric say
        it is waited for, and syncing starts by itself once it answers."""
        mport = free_port()
        self.sim.datasource("later", COLS, rows(20))
        self.sim.fault("status", match="SELECT 1", times=4, error="unavailable")
        self.env.config(datasources=["later"], retry_initial_seconds=0.3, retry_max_seconds=0.6,
                        sync_interval_seconds=30, metrics_listen="127.0.0.1:%d" % mport)
        d = Daemon(self.env)
        try:
            wait_for(lambda: d.ready_at() is not None, timeout=10, what="READY=1")
            wait_for(lambda: any(s.startswith("waiting for Druid") for s in d.statuses()), timeout=10,
                     what="STATUS= waiting for Druid")
            wait_for(lambda: count_rows(self.env.pg, "later") == 20, timeout=30, what="the sync")
            m = scrape(mport, "127.0.0.1")
            self.assertEqual(up(m, "druid"), 1, m + d.stderr())
            sts = d.statuses()
            first_sync = next(i for i, s in enumerate(sts) if "datasources" in s)
            self.assertTrue(all("datasources syncing" not in s for s in sts[:first_sync]))
            self.assertTrue(any(s.startswith("waiting for Druid") for s in sts[:first_sync]), sts)
        finally:
            rc = d.stop()
        self.assertEqual(rc, 0, d.stderr()[-3000:])
        self.assertLess(d.ready_at(), 2.0)

    # ---- PostgreSQL unreachable ----

    def test_unreachable_postgres(self):
        bad = "host=127.0.0.1 port=%d user=postgres dbname=x connect_timeout=2" % free_port()
        rc, err, secs = self.run_once(postgres=bad, connect_timeout_seconds=2)
        self.assertEqual(rc, 1, err)
        self.assertLessEqual(secs, 6.5, err)
        self.assertRegex(err, r"error +pg: PostgreSQL is not usable: .*(refused|connect)")
        # the daemon waits and says so
        self.env.config(postgres=bad, connect_timeout_seconds=2)
        d = Daemon(self.env)
        try:
            wait_for(lambda: d.ready_at() is not None, timeout=10, what="READY=1")
            wait_for(lambda: any(s.startswith("waiting for PostgreSQL: ") for s in d.statuses()),
                     timeout=10, what="STATUS= waiting for PostgreSQL")
            time.sleep(1.5)
            self.assertIsNone(d.proc.poll(), "the daemon gave up on PostgreSQL")
        finally:
            rc = d.stop()
        self.assertEqual(rc, 0)

    # ---- permanent errors: no retry ----

    def assert_fails_at_once(self, what, **cfg):
        rc, err, secs = self.run_once(retry_initial_seconds=1, retry_max_seconds=2, max_retries=5, **cfg)
        self.assertEqual(rc, 1, err)
        self.assertLess(secs, 2.0, "%s took %.1f s: retried?\n%s" % (what, secs, err))
        self.assertNotIn("retry in", err)
        self.assertIn("giving up", err)
        return err

    def test_tls_against_plain_http_port(self):
        err = self.assert_fails_at_once("TLS against HTTP", use_ssl=True)
        self.assertIn("SSL", err)

    def test_unknown_host(self):
        err = self.assert_fails_at_once("unknown host", druid_host="no-such-host.invalid")
        self.assertIn("no-such-host.invalid", err)

    def test_postgres_port_given_as_druids(self):
        # what PostgreSQL answers to an HTTP request: an ErrorResponse, no HTTP
        pg = Listener(b"E\x00\x00\x00\x4cSFATAL\x00VFATAL\x00C0A000\x00Munsupported frontend "
                      b"protocol 1347375956.1414541105\x00\x00")
        try:
            err = self.assert_fails_at_once("PostgreSQL's port", druid_port=pg.port)
        finally:
            pg.close()
        self.assertIn("HTTP/0.9", err)
        self.assertEqual(pg.accepted, 1)

    def test_4xx_slice_not_retried_but_5xx_is(self):
        self.sim.clear_queries()
        self.sim.fault("status", match='FROM "small"', times=100, status=404,
                       body='{"error":"druidException","errorCode":"notFound","category":"NOT_FOUND",'
                            '"errorMessage":"gone"}')
        rc, err, secs = self.run_once(datasources=["small"], retry_initial_seconds=0.2, max_retries=3)
        self.assertEqual(rc, 1, err)
        n404 = len([q for q in self.sim.queries() if q.get("status") == 404])
        self.assertEqual(n404, 1, "a 404 was retried\n" + err)
        self.sim.clear_faults()
        self.sim.clear_queries()
        self.sim.fault("status", match='FROM "small"', times=2, status=500)
        rc, err, secs = self.run_once(datasources=["small"], retry_initial_seconds=0.1, max_retries=3)
        self.assertEqual(rc, 0, err)
        self.assertGreaterEqual(len([q for q in self.sim.queries() if q.get("status") == 500]), 2)


if __name__ == "__main__":
    harness.main()
