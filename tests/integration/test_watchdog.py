"""The watchdog is fed from the event loop, and only while work moves (issue 6 item 3).

Every wait of the daemon has a bound of its own (a Druid query ends within
request_timeout_seconds, a PostgreSQL answer within postgres_timeout_seconds + 10 s, a
connection within 10 s, a backoff within retry_max_seconds), so no fault from outside can
leave work in flight without an event. What can wedge the daemon is its loop itself:
here, a stderr that nobody reads (a journald that hangs) blocks the loop in write(2), and
the pings stop at once; they come back when the pipe drains.

Three daemons run side by side, each with its own NOTIFY_SOCKET and WATCHDOG_USEC=1 s
(pings every 0.5 s), request_timeout_seconds 2, postgres_timeout_seconds 2 and
retry_max_seconds 1, so the daemon's own bound for "nothing moved" is 2+2+1+60 = 65 s:
  - a cycle that moves slowly (one 50-row slice a second) for longer than that bound: the
    pings never pause;
  - a datasource that Druid holds back with Retry-After: 600 (a wait the daemon honours
    on purpose, beyond retry_max_seconds): pings must go on while it waits;
  - a daemon whose stderr pipe is left full: the pings stop, and resume after it drains.
"""
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import BIN, EnvTestCase, iso_ms, ms_iso, state_row, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2023-07-08T00:00:00.000Z")
TIMEOUTS = dict(request_timeout_seconds=2, postgres_timeout_seconds=2, retry_initial_seconds=0.5,
                retry_max_seconds=1)
BOUND = 2 + 2 + 1 + 60  # the daemon's "nothing moved" bound for TIMEOUTS (README)
WATCHDOG_USEC = 1000000  # pings every 0.5 s
MAX_GAP = 1.6  # seconds between pings we accept (three intervals, for a loaded machine)
OBSERVE = BOUND + 7  # how long the long daemons are watched


def rows(n, start=0, step_ms=1000):
    return [{"__time": ms_iso(BASE + i * step_ms), "k": i, "v": "v%d" % i}
            for i in range(start, start + n)]


NotifyReader = harness.NotifyReader  # a $NOTIFY_SOCKET of our own (harness.py)


def max_gap(times, t0, t1):
    """The longest time in [t0, t1] without a ping."""
    pts = [t0] + [t for t in times if t0 <= t <= t1] + [t1]
    return max(b - a for a, b in zip(pts, pts[1:]))


class Daemon:
    """druid-syncd on its own config file, notify socket and stderr (a file, or a pipe)."""

    def __init__(self, env, name, cfg, stderr_pipe=False, args=()):
        self.notify = NotifyReader()
        self.config = os.path.join(env.tmp, "%s.json" % name)
        env.config(**cfg)
        shutil.copy(env.config_path, self.config)
        e = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            e.pop(k, None)
        e["NOTIFY_SOCKET"] = self.notify.path
        e["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
        self.err_chunks = []
        self.draining = threading.Event()
        if stderr_pipe:
            self.r, self.w = os.pipe()
            err = self.w
        else:
            self.logf = open(os.path.join(env.tmp, "%s.log" % name), "w+b")
            err = self.logf
        self.proc = subprocess.Popen([BIN, "-c", self.config] + list(args),
                                     stdout=subprocess.DEVNULL, stderr=err, env=e)
        self.pipe = stderr_pipe
        if stderr_pipe:
            self.draining.set()
            self.reader = threading.Thread(target=self._drain, daemon=True)
            self.reader.start()

    def _drain(self):
        while self.proc.poll() is None or select.select([self.r], [], [], 0)[0]:
            if not self.draining.is_set():
                time.sleep(0.05)
                continue
            if select.select([self.r], [], [], 0.1)[0]:
                data = os.read(self.r, 65536)
                if not data:
                    return
                self.err_chunks.append(data)

    def fill_pipe(self):
        """Stops reading stderr and fills the pipe (from our own copy of its write end, a
        chunk only while at least PIPE_BUF bytes are free, so we never block): the daemon's
        next log line blocks it in write(2)."""
        self.draining.clear()
        time.sleep(0.3)  # the reader is out of os.read
        n = 0
        while select.select([], [self.w], [], 0)[1]:
            n += os.write(self.w, b"#" * 1024)
        return n

    def drain_pipe(self):
        self.draining.set()

    def stderr(self):
        if self.pipe:
            return b"".join(self.err_chunks).decode("utf-8", "replace")
        self.logf.seek(0)
        return self.logf.read().decode("utf-8", "replace")

    def ready_at(self, timeout=30):
        wait_for(lambda: self.notify.times("READY=1"), timeout=timeout, what="READY=1")
        return self.notify.times("READY=1")[0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pipe and self.w is not None:
            self.draining.set()
            self.reader.join(5)
            os.close(self.w)
            os.close(self.r)
            self.w = self.r = None
        if self.notify:
            self.notify.close()
            self.notify = None


class Watchdog(EnvTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.daemons = []
        try:
            # 8,000 rows, 50 a minute, 50 a slice: 160 slices, each answered by Druid after
            # 1 s (within request_timeout_seconds): a cycle of well over BOUND seconds, still
            # running when the other tests (which may take a while on a loaded machine) are
            # done. Only slice reads are delayed (they name the columns), not the planning
            # counts.
            cls.sim.datasource("slow_moving", COLS, rows(8000, step_ms=1200))
            cls.sim.fault("delay", match='"v" FROM "slow_moving"', times=100000,
                          delay_seconds=1.0)
            cls.moving = cls.start("moving", dict(datasources=["slow_moving"], batch_size=50,
                                                  max_concurrent_queries=1,
                                                  sync_interval_seconds=300, **TIMEOUTS))
            # Druid asks us to come back in 10 minutes; nothing else happens meanwhile
            # (discovery every 300 s)
            cls.sim.datasource("held_back", COLS, rows(10))
            cls.sim.fault("status", match='FROM "held_back"', times=100000, status=429,
                          error="capacity", retry_after=600)
            cls.held = cls.start("held", dict(datasources=["held_back"], max_retries=5,
                                              sync_interval_seconds=300, **TIMEOUTS))
            cls.t_moving = cls.moving.ready_at()
            cls.t_held = cls.held.ready_at()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def start(cls, name, cfg, **kw):
        d = Daemon(cls.env, name, cfg, **kw)
        cls.daemons.append(d)
        return d

    @classmethod
    def tearDownClass(cls):
        try:
            for d in cls.daemons:
                try:
                    d.stop()
                except Exception as e:  # never leave PostgreSQL and the Druid server behind
                    print("stopping a daemon: %s" % e)
        finally:
            super().tearDownClass()

    def test_1_loop_blocked_on_stderr_stops_pings(self):
        self.sim.datasource("chatty", COLS, rows(20))
        d = self.start("blocked", dict(datasources=["chatty"], sync_interval_seconds=0.2,
                                       **TIMEOUTS), stderr_pipe=True, args=["--log-level", "debug"])
        t_ready = d.ready_at()
        wait_for(lambda: len([t for t in d.notify.times("WATCHDOG=1") if t > t_ready]) >= 4,
                 timeout=10, what="pings after READY")
        self.assertLess(max_gap(d.notify.times("WATCHDOG=1"), t_ready, time.monotonic()), MAX_GAP)
        t_fill = time.monotonic()
        d.fill_pipe()
        # quiet cycles log at debug every 0.2 s: a write soon blocks the loop
        wait_for(lambda: time.monotonic() - max(d.notify.times("WATCHDOG=1")) > 4, timeout=20,
                 what="the pings to stop while stderr is full")
        self.assertIsNone(d.proc.poll(), "the daemon exited instead of blocking")
        last = max(d.notify.times("WATCHDOG=1"))
        t_drain = time.monotonic()
        d.drain_pipe()
        wait_for(lambda: [t for t in d.notify.times("WATCHDOG=1") if t > t_drain], timeout=5,
                 what="the pings to resume after stderr drained")
        resumed = min(t for t in d.notify.times("WATCHDOG=1") if t > t_drain)
        print("\n  blocked loop: last ping %.2f s after the pipe was filled; none for %.1f s; "
              "first ping %.2f s after draining" % (last - t_fill, t_drain - last, resumed - t_drain))
        err = d.stderr()
        d.stop()
        self.assertEqual(d.proc.returncode, 0, err[-2000:])

    def test_2_moving_cycle_longer_than_the_bound_keeps_pinging(self):
        d, t0 = self.moving, self.t_moving
        try:
            # (a loaded machine running the sanitizer build next to another test may take a
            # while to get there; the cycle itself lasts 160 s)
            wait_for(lambda: (state_row(self.pg, "slow_moving") or {}).get("status") == "syncing",
                     timeout=60, what="the slow cycle to start")
        except AssertionError:
            raise AssertionError("the slow cycle did not start: %s\n%s"
                                 % (state_row(self.pg, "slow_moving"), d.stderr()[-3000:]))
        started = state_row(self.pg, "slow_moving")["last_started"]
        committed = []
        while time.monotonic() < t0 + OBSERVE:
            committed.append((state_row(self.pg, "slow_moving") or {}).get("slices_committed") or 0)
            time.sleep(5)
        st = state_row(self.pg, "slow_moving")
        err = d.stderr()
        # the same cycle has been running for longer than the bound, and still moves
        self.assertEqual(st["status"], "syncing", err[-2000:])
        self.assertEqual(st["last_started"], started)
        self.assertGreater(committed[-1], committed[-3], "the slow cycle stopped moving")
        gap = max_gap(d.notify.times("WATCHDOG=1"), t0, time.monotonic())
        self.assertLess(gap, MAX_GAP, "a %.1f s pause in the pings during a moving sync" % gap)
        self.assertNotIn("no progress", err)
        print("\n  moving cycle: %d slices in %.0f s, longest pause between pings %.2f s"
              % (committed[-1], time.monotonic() - t0, gap))

    def test_3_long_retry_after_keeps_pinging(self):
        d, t0 = self.held, self.t_held
        wait_for(lambda: "retry" in d.stderr(), timeout=20, what="the 429 to be retried later")
        while time.monotonic() < t0 + OBSERVE:
            time.sleep(1)
        times = d.notify.times("WATCHDOG=1")
        gap = max_gap(times, t0, time.monotonic())
        err = d.stderr()
        if gap >= MAX_GAP:
            print("\n  Retry-After 600: last ping %.1f s after READY; %s"
                  % (max(times) - t0, [l for l in err.split("\n") if "no progress" in l][:1]))
        self.assertLess(gap, MAX_GAP, "pings stopped while the daemon honoured Retry-After:\n%s"
                        % err[-1500:])


if __name__ == "__main__":
    harness.main()
