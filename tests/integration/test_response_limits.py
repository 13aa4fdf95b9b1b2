"""Memory has a bound for any response: a row line that never ends fails its slice at the
4 MiB line limit (and the cycle ends), eight of them at once keep the daemon under 64 MiB of
peak RSS, endless response headers are a clear error (never curl's "Out of memory"), and JSON
nested 2,000 levels deep decodes while one level more is an error naming the limit, and a
row whose JSON would decode to far more than its text is refused before json-c builds it."""
import os
import subprocess
import time
import unittest

import harness
from harness import EnvTestCase, BIN, iso_ms, ms_iso, slice_match, snapshot, state_row, tbl

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2023-03-03T00:00:00.000Z")
# State columns that describe committed data (a failed run updates the others).
DATA_STATE = ("cursor", "rows_synced", "last_success", "destination_table", "mode")
MIB = 1024 * 1024
RSS_BOUND_KB = 64 * 1024


def t(sec):
    return ms_iso(BASE + sec * 1000)


def rows(n, start=0):
    return [{"__time": t(i), "k": i, "v": "v%d" % i} for i in range(start, start + n)]


def sanitized_build():
    """ASan/UBSan builds reserve shadow memory and quarantine frees: RSS says nothing there."""
    with open(BIN, "rb") as f:
        return b"__asan_init" in f.read()


def run_measured(config_path, timeout=120):
    """Runs `druid-syncd --once`; returns (exit code, stderr, seconds, peak RSS in KiB) with
    the peak from the kernel's accounting of the child (getrusage ru_maxrss, like VmHWM)."""
    t0 = time.time()
    p = subprocess.Popen([BIN, "-c", config_path, "--once"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    err = []
    import threading
    th = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    th.start()
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.time() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            th.join(5)
            p.stderr.close()
            raise AssertionError("druid-syncd --once did not end within %ss:\n%s"
                                 % (timeout, "".join(err)[-3000:]))
        time.sleep(0.02)
    p.returncode = os.waitstatus_to_exitcode(status)
    th.join(10)
    p.stderr.close()
    return p.returncode, "".join(err), time.time() - t0, ru.ru_maxrss


class ResponseLimitsTest(EnvTestCase):

    def tearDown(self):
        self.sim.clear_faults()

    def data_state(self, ds):
        st = state_row(self.pg, ds)
        return None if st is None else {k: st.get(k) for k in DATA_STATE}

    def prepared(self, ds, n=20, more=80, **cfg):
        """ds synced once with n rows, then `more` rows appended in Druid; returns the fault
        match of its slice reads."""
        self.sim.datasource(ds, COLS, rows(n))
        self.env.config(datasources=[ds], batch_size=10, max_retries=1, **cfg)
        self.env.once()
        self.sim.append(ds, rows(more, start=n))
        return slice_match(self.sim, ds)

    def assert_untouched_then_recovers(self, ds, snap, st, total):
        self.assertEqual(snapshot(self.pg, ds), snap, "the failed run changed the table")
        self.assertEqual(self.data_state(ds), st, "the failed run changed the committed state")
        self.sim.clear_faults()
        self.env.once()
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted" % tbl(ds)),
                         str(total))

    # (a) one endless line: the slice fails at the limit, --once ends with exit 1
    def test_endless_line_fails_the_slice(self):
        ds = "rl_endless"
        match = self.prepared(ds)
        snap, st = snapshot(self.pg, ds), self.data_state(ds)
        self.sim.fault("endless_line", match=match, times=-1, after_rows=3)
        rc, err, secs, _rss = run_measured(self.env.config_path, timeout=60)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertLess(secs, 30, "the cycle took %.1f s to end" % secs)
        self.assertIn("a response line exceeds the 4 MiB limit (row 4)", err, err[-3000:])
        self.assertNotIn("Out of memory", err)
        after = state_row(self.pg, ds)
        self.assertIn("4 MiB limit", after.get("last_error") or "", after)
        self.assert_untouched_then_recovers(ds, snap, st, 100)

    # (b) eight endless lines at once: peak RSS stays under 64 MiB
    def test_peak_rss_with_eight_endless_lines(self):
        if sanitized_build():
            self.skipTest("peak RSS is measured on the plain build (this binary has ASan)")
        ds = "rl_rss"
        match = self.prepared(ds, n=10, more=160, max_concurrent_queries=8)
        snap, st = snapshot(self.pg, ds), self.data_state(ds)
        # The stall lets all eight slice reads get their 200 and header rows before any
        # endless line starts, so eight line buffers fill at the same moment.
        self.sim.fault("endless_line", match=match, times=-1, after_rows=0, delay_seconds=1.5)
        self.sim.reset_stats()
        rc, err, secs, rss_kb = run_measured(self.env.config_path, timeout=90)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertGreaterEqual(self.sim.stats()["max_inflight"], 8,
                                "fewer than 8 queries were in flight at once")
        fault = [f for f in self.sim._control("GET", "faults") if f["kind"] == "endless_line"][0]
        self.assertGreaterEqual(fault.get("hits", 0), 8)
        print("\n  peak RSS with 8 endless lines in flight: %.1f MiB (%.1f s)" % (rss_kb / 1024, secs))
        self.assertLess(rss_kb, RSS_BOUND_KB, "peak RSS %.1f MiB" % (rss_kb / 1024))
        self.assertIn("exceeds the 4 MiB limit", err, err[-3000:])
        self.assert_untouched_then_recovers(ds, snap, st, 170)

    # (c) endless response headers: a clear error, never "Out of memory"
    def test_huge_header_is_a_clear_error(self):
        ds = "rl_header"
        match = self.prepared(ds)
        snap, st = snapshot(self.pg, ds), self.data_state(ds)
        # one 2 GB header line (libcurl's own 100 KiB line limit stops it), then 2 GB of
        # 1000-byte lines (our 64 KiB total stops it)
        for extra in ({}, {"line_bytes": 1000}):
            self.sim.clear_faults()
            self.sim.fault("huge_header", match=match, times=-1, **extra)
            rc, err, secs, _rss = run_measured(self.env.config_path, timeout=60)
            self.assertEqual(rc, 1, err[-3000:])
            self.assertLess(secs, 30)
            self.assertIn("Druid's response headers exceed 64 KiB", err, err[-3000:])
            self.assertNotIn("Out of memory", err)
            self.assertEqual(snapshot(self.pg, ds), snap)
        self.assert_untouched_then_recovers(ds, snap, st, 100)

    # JSON nesting: 2,000 levels inside a value decode, 2,001 are a protocol error
    def test_json_nesting_limit(self):
        ds = "rl_deep"
        match = self.prepared(ds, n=5, more=5)
        deep = lambda d: "[" * d + "1" + "]" * d  # noqa: E731
        # a row past the limit: the error names it, the table stays as it was
        snap = snapshot(self.pg, ds)
        line = '["%s",2001,%s]' % (t(6), deep(2001))
        self.sim.fault("raw_line", match=match, times=-1, after_rows=1, line=line)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err[-3000:])
        self.assertIn("nests JSON deeper than the limit of 2000 levels", err, err[-3000:])
        self.assertNotIn("not a JSON array", err)
        self.assertEqual(snapshot(self.pg, ds), snap)
        # exactly at the limit, the row decodes and is stored (as its JSON text)
        self.sim.clear_faults()
        line = '["%s",2000,%s]' % (t(6), deep(2000))
        self.sim.fault("raw_line", match=match, times=1, after_rows=1, line=line)
        rc, err = self.env.run("--once")
        self.assertNotIn("nests JSON deeper", err)
        self.assertNotIn("not a JSON array", err)
        self.assertEqual(rc, 0, err[-3000:])
        self.assertEqual(self.pg.scalar("SELECT length(v) FROM %s WHERE k = 2000" % tbl(ds)),
                         str(len(deep(2000))))

    # a line within 4 MiB whose JSON decodes to far more (json-c: ~800 bytes per "{}")
    def test_row_of_many_json_values(self):
        ds = "rl_tree"
        match = self.prepared(ds, n=5, more=5)
        snap = snapshot(self.pg, ds)
        for unit in ("{}", "[]", "1"):
            n = (4 * MIB - 100) // (len(unit) + 1)
            line = '["%s",1,[%s]]' % (t(6), ",".join([unit] * n))
            self.sim.clear_faults()
            self.sim.fault("raw_line", match=match, times=-1, after_rows=1, line=line)
            rc, err, _secs, rss_kb = run_measured(self.env.config_path, timeout=60)
            self.assertEqual(rc, 1, err[-3000:])
            self.assertIn("holds too many JSON values", err, err[-3000:])
            self.assertIn("4 MiB limit of one row", err)
            if not sanitized_build():
                self.assertLess(rss_kb, RSS_BOUND_KB, "%s: peak RSS %.1f MiB" % (unit, rss_kb / 1024))
            self.assertEqual(snapshot(self.pg, ds), snap)
        # a real-JSON value of 20,000 numbers (the shape of test_types' huge row) still decodes
        self.sim.clear_faults()
        value = "[" + ",".join(str(i) for i in range(20000)) + "]"
        self.sim.fault("raw_line", match=match, times=1, after_rows=1,
                       line='["%s",20000,%s]' % (t(6), value))
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 0, err[-3000:])
        self.assertEqual(self.pg.scalar("SELECT length(v) FROM %s WHERE k = 20000" % tbl(ds)), str(len(value)))


if __name__ == "__main__":
    harness.main()
