"""The operator commands (SPEC 1, issue 9 point 1): status, plan, resync, pause, resume, run as
an operator would against a real PostgreSQL and the Druid test server, with and without a
daemon running: output, exit codes (0 done, 1 failed, 64 usage, 78 configuration), what they
write (and that plan writes nothing), and that a running daemon honours a pause within one
cycle, across a restart, until resume."""
import json
import os
import subprocess
import time
import unittest

import harness
from harness import EnvTestCase, iso_ms, ms_iso, qident, state_row, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
DAY0 = iso_ms("2024-05-01T00:00:00.000Z")
HOUR = 3600 * 1000


def mkrows(hours, per, k0=0):
    out = []
    for h in hours:
        for i in range(per):
            out.append({"__time": ms_iso(DAY0 + h * HOUR + i * 60000 + 7), "k": k0 + h * 1000 + i,
                        "v": "r%d_%d" % (h, i)})
    return out


def data_queries(queries, ds):
    """Queries that read rows of ds (not the catalog, sys.segments or the probe)."""
    return [q for q in queries if ("FROM " + qident(ds)) in (q.get("sql") or "")]


def _hooked():
    """Until daemon/main.c hands the command words to opcmd_main (notes/ops-main-hook.txt),
    the binary cannot run these commands: the tests are skipped, saying so."""
    with open(os.path.join(harness.SOURCE_DIR, "daemon", "main.c")) as f:
        return "opcmd_main" in f.read() or os.environ.get("DSYNC_OPCMD_BIN_HOOKED") == "1"


@unittest.skipUnless(_hooked(), "daemon/main.c does not call opcmd_main yet")
class OpcmdTest(EnvTestCase):
    def op(self, *args, config=None, timeout=60):
        """Runs `druid-syncd <args>` with -c after the command word; (code, stdout, stderr)."""
        argv = [args[0], "-c", config or self.env.config_path] + list(args[1:])
        p = harness.run_bin(argv, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def sync(self, ds, **cfg):
        conf = dict(datasources=[ds], lookback_seconds=0, batch_size=1000)
        conf.update(cfg)
        self.env.config(**conf)
        return self.env.once()

    def count(self, ds):
        return int(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)))

    def every_table(self):
        """Every table of the destination schema with its full content, as text."""
        names = [r[0] for r in self.pg.psql("SELECT tablename FROM pg_tables"
                                            " WHERE schemaname = 'druid' ORDER BY 1")]
        return {n: self.pg.psql("SELECT t::text FROM %s AS t ORDER BY 1" % tbl(n)) for n in names}

    # ---- usage and configuration ----

    def test_usage_errors_exit_64(self):
        self.env.config()
        for args in (("pause",), ("resume",), ("resync",), ("status", "--bogus"),
                     ("plan", "--json"), ("resync", "--timeout", "5", "x"),
                     ("resync", "--wait", "--timeout", "soon", "x")):
            code, _out, err = self.op(*args)
            self.assertEqual(code, 64, (args, err))
            self.assertIn("druid-syncd %s:" % args[0], err)
        p = harness.run_bin(["pause", "-c"])
        self.assertEqual(p.returncode, 64, p.stderr)
        code, out, _err = self.op("status", "--help")
        self.assertEqual(code, 0)
        self.assertIn("usage: druid-syncd status", out)

    def test_bad_config_exit_78(self):
        bad = os.path.join(self.env.tmp, "bad.json")
        with open(bad, "w") as f:
            json.dump({"druid_host": "127.0.0.1", "postgress": "x"}, f)
        for cmd in ("status", "plan", "pause", "resume", "resync"):
            code, _out, err = self.op(cmd, "x", config=bad) if cmd != "status" else self.op(
                cmd, config=bad)
            self.assertEqual(code, 78, (cmd, err))
            self.assertIn("postgress", err)
        code, _out, err = self.op("status", config=os.path.join(self.env.tmp, "missing.json"))
        self.assertEqual(code, 78, err)

    def test_no_state_table_yet(self):
        self.env.config(destination_schema="never_synced")
        code, out, err = self.op("status")
        self.assertEqual(code, 1, err)
        self.assertIn('no state table "never_synced"."druid_syncd_state"', err)
        self.assertEqual(out, "")
        code, _out, err = self.op("pause", "anything")
        self.assertEqual(code, 1, err)
        self.env.config()

    def test_postgres_unreachable_is_bounded(self):
        self.env.config(postgres="host=127.0.0.1 port=%d dbname=x" % harness.free_port(),
                        connect_timeout_seconds=2)
        t0 = time.time()
        code, _out, err = self.op("status")
        self.assertEqual(code, 1, err)
        self.assertIn("connection to PostgreSQL failed", err)
        self.assertLess(time.time() - t0, 10)
        self.env.config()

    # ---- status ----

    def test_status_text_and_json(self):
        ds = "op_status"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sync(ds)
        code, out, err = self.op("status")
        self.assertEqual(code, 0, err)
        line = [x for x in out.splitlines() if x.startswith(ds + ":")]
        self.assertEqual(len(line), 1, out)
        for part in ("status=ok", "mode=incremental", "detection=segments", "rows=30",
                     "cursor=" + ms_iso(DAY0 + 2 * HOUR + 9 * 60000 + 7), "chunks_pending=0",
                     "chunks_postponed=0", "paused=no", "last_error=-"):
            self.assertIn(part, line[0])
        self.assertNotIn("last_success=never", line[0])
        code, out, err = self.op("status", "--json")
        self.assertEqual(code, 0, err)
        rows = {r["datasource"]: r for r in json.loads(out)}
        r = rows[ds]
        self.assertEqual((r["status"], r["rows"], r["paused"], r["last_cycle_failed"],
                          r["last_error"], r["chunks_pending"]), ("ok", 30, False, False, None, 0))
        self.assertEqual(r["cursor"], ms_iso(DAY0 + 2 * HOUR + 9 * 60000 + 7))
        self.assertGreater(r["lag_seconds"], 0)
        self.assertTrue(r["last_success"].endswith("Z"))
        code, _out, err = self.op("status", "op_nobody_knows")
        self.assertEqual(code, 1)
        self.assertIn('unknown datasource "op_nobody_knows"', err)

    def test_status_failed_exits_1_and_sanitises(self):
        ds = "op_fails"
        self.sim.datasource(ds, COLS, mkrows(range(2), 5), granularity="HOUR")
        self.sim.fault("status", match='FROM "%s"' % ds, times=-1, error="unknown_table")
        try:
            self.env.config(datasources=[ds])
            self.env.once(expect=1)
        finally:
            self.sim.clear_faults()
        code, out, err = self.op("status", ds)
        self.assertEqual(code, 1, out + err)
        self.assertIn("status=error", out)
        self.assertNotIn("last_error=-", out)
        self.assertIn("failed their last cycle", err)
        # paused after a failed cycle: still a failed last cycle
        self.assertEqual(self.op("pause", ds)[0], 0)
        code, out, err = self.op("status", ds)
        self.assertEqual(code, 1, out + err)
        self.assertIn("status=paused", out)
        self.assertEqual(self.op("resume", ds)[0], 0)
        # outside text in last_error (Druid's messages) prints as one plain line
        self.pg.psql("UPDATE druid.druid_syncd_state SET last_error = E'line1\\nline2\\x1b[31m'"
                     " WHERE datasource = '%s'" % ds)
        code, out, _err = self.op("status", ds)
        self.assertEqual(len(out.splitlines()), 1, out)
        self.assertNotIn("\x1b", out)
        self.assertIn("line1\\nline2", out)
        code, out, _err = self.op("status", "--json", ds)
        self.assertEqual(code, 1)
        r = json.loads(out)[0]
        self.assertTrue(r["last_cycle_failed"])
        self.assertNotIn("\x1b", r["last_error"])

    # ---- pause and resume ----

    def test_pause_unknown_changes_nothing(self):
        ds = "op_known"
        self.sim.datasource(ds, COLS, mkrows(range(1), 3), granularity="HOUR")
        self.sync(ds)
        code, out, err = self.op("pause", ds, "op_never_synced")
        self.assertEqual(code, 1, out + err)
        self.assertIn('unknown datasource "op_never_synced"', err)
        self.assertIn("nothing changed", err)
        self.assertEqual(state_row(self.pg, ds)["paused"], False)
        code, _out, err = self.op("resume", "op_never_synced")
        self.assertEqual(code, 1, err)

    def test_pause_running_daemon_survives_restart_then_resume(self):
        ds = "op_pause"
        self.sim.datasource(ds, COLS, mkrows(range(2), 10), granularity="HOUR")
        self.env.config(datasources=[ds], lookback_seconds=0, sync_interval_seconds=0.5,
                        log_level="info")
        d = self.env.start_daemon()
        try:
            wait_for(lambda: harness.table_exists(self.pg, ds) and self.count(ds) == 20,
                     what="first sync")
            code, out, err = self.op("pause", ds)
            self.assertEqual(code, 0, err)
            self.assertIn("%s: paused" % ds, out)
            st = state_row(self.pg, ds)
            self.assertEqual((st["paused"], st["status"]), (True, "paused"))
            # within one cycle (0.5 s) the daemon stops touching it: rows arrive in Druid ...
            time.sleep(1.0)  # a cycle that had already started when the pause came ends
            self.sim.append(ds, mkrows([2], 5, k0=50000))
            self.sim.clear_queries()
            time.sleep(3.0)  # ... six cycle intervals later nothing was read or written
            self.assertEqual(data_queries(self.sim.queries(), ds), [])
            self.assertEqual(self.count(ds), 20)
            self.assertEqual(state_row(self.pg, ds)["status"], "paused")
        finally:
            d.terminate()
            _o, log1 = d.communicate(timeout=60)
        self.assertEqual(log1.count("paused by an operator"), 1, log1[-3000:])
        # a restarted daemon keeps it paused, and says so in its metrics
        port = harness.free_port()
        self.env.config(datasources=[ds], lookback_seconds=0, sync_interval_seconds=0.5,
                        log_level="info", metrics_listen="127.0.0.1:%d" % port)
        d = self.env.start_daemon()
        try:
            self.sim.clear_queries()
            time.sleep(3.0)
            self.assertEqual(data_queries(self.sim.queries(), ds), [])
            self.assertEqual(self.count(ds), 20)
            import urllib.request
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
                metrics = r.read().decode()
            self.assertIn('druid_syncd_paused{datasource="%s"} 1' % ds, metrics)
            code, out, err = self.op("status", ds)
            self.assertIn("status=paused", out)
            self.assertIn("paused=yes", out)
            code, out, err = self.op("resume", ds)
            self.assertEqual(code, 0, err)
            self.assertIn("%s: resumed" % ds, out)
            wait_for(lambda: self.count(ds) == 25, timeout=30, what="sync after resume")
            wait_for(lambda: state_row(self.pg, ds)["status"] == "ok", timeout=30,
                     what="status ok after resume")
            self.assertEqual(state_row(self.pg, ds)["paused"], False)
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
                self.assertIn('druid_syncd_paused{datasource="%s"} 0' % ds, r.read().decode())
        finally:
            d.terminate()
            _o, log2 = d.communicate(timeout=60)
        self.assertEqual(log2.count("paused by an operator"), 1, log2[-3000:])

    def test_paused_once_exits_0_without_reading(self):
        ds = "op_pause_once"
        self.sim.datasource(ds, COLS, mkrows(range(1), 4), granularity="HOUR")
        self.sync(ds)
        self.assertEqual(self.op("pause", ds)[0], 0)
        self.sim.append(ds, mkrows([1], 3, k0=7000))
        self.sim.clear_queries()
        err = self.sync(ds)
        self.assertIn("paused by an operator", err)
        self.assertEqual(data_queries(self.sim.queries(), ds), [])
        self.assertEqual(self.count(ds), 4)
        self.assertEqual(self.op("resume", ds)[0], 0)
        self.assertEqual(state_row(self.pg, ds)["status"], "idle")
        self.sync(ds)
        self.assertEqual(self.count(ds), 7)

    # ---- plan ----

    def test_plan_writes_nothing_and_shows_a_late_row(self):
        ds = "op_plan"
        self.sim.datasource(ds, COLS, mkrows(range(6), 20), granularity="HOUR")
        self.sync(ds)
        before = self.every_table()
        code, out, err = self.op("plan", ds)
        self.assertEqual(code, 0, err)
        self.assertIn("%s: 0 new, 0 changed, 0 dropped, 0 postponed chunks; 0 slices; ~0 rows"
                      % ds, out)
        self.sim.late_append(ds, [{"__time": ms_iso(DAY0 + HOUR + 30 * 60000 + 1), "k": 9999,
                                   "v": "late"}])
        code, out, err = self.op("plan", ds)
        self.assertEqual(code, 0, err)
        self.assertIn("%s: 0 new, 1 changed, 0 dropped, 0 postponed chunks; 1 slices; ~21 rows"
                      % ds, out)
        self.assertEqual(self.every_table(), before, "plan wrote something")
        # a datasource Druid has and PostgreSQL does not: all new
        fresh = "op_plan_new"
        self.sim.datasource(fresh, COLS, mkrows(range(3), 5), granularity="HOUR")
        self.env.config(datasources=[ds, fresh], batch_size=1000)
        code, out, err = self.op("plan")
        self.assertEqual(code, 0, err)
        self.assertIn("%s: 3 new, 0 changed, 0 dropped, 0 postponed chunks; 1 slices; ~15 rows"
                      % fresh, out)
        self.assertIn("never synced", out)
        self.assertIn("total: 3 new, 1 changed", out)
        self.assertEqual(self.every_table(), before, "plan wrote something")
        code, _out, err = self.op("plan", "op_nowhere")
        self.assertEqual(code, 1)
        self.assertIn('unknown datasource "op_nowhere"', err)

    # ---- resync ----

    def test_resync_request_recorded_wait_times_out(self):
        ds = "op_resync"
        self.sim.datasource(ds, COLS, mkrows(range(1), 3), granularity="HOUR")
        self.sync(ds)
        code, out, err = self.op("resync", ds)
        self.assertEqual(code, 0, err)
        self.assertIn("%s: resync requested at " % ds, out)
        first = self.pg.scalar("SELECT resync_requested FROM druid.druid_syncd_state"
                               " WHERE datasource = '%s'" % ds)
        self.assertTrue(first)
        t0 = time.time()
        code, _out, err = self.op("resync", "--wait", "--timeout", "2", ds)
        took = time.time() - t0
        self.assertEqual(code, 1, err)
        self.assertIn("timed out after 2 s waiting for the rebuild of %s" % ds, err)
        self.assertLess(took, 8)
        # a pending request keeps its time
        self.assertEqual(self.pg.scalar("SELECT resync_requested FROM druid.druid_syncd_state"
                                        " WHERE datasource = '%s'" % ds), first)
        code, _out, err = self.op("resync", "op_nowhere")
        self.assertEqual(code, 1)
        self.assertIn('unknown datasource "op_nowhere"', err)
        # --wait returns once the request is done; the daemon's rebuild is not built yet, so
        # this test plays its part: it clears the request as the daemon will when done
        w = subprocess.Popen([harness.BIN, "resync", "-c", self.env.config_path, "--wait",
                              "--timeout", "30", ds], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        self.assertIsNone(w.poll(), "--wait returned while the request was pending")
        self.pg.psql("UPDATE druid.druid_syncd_state SET resync_requested = NULL,"
                     " last_resync = now() WHERE datasource = '%s'" % ds)
        out, err = w.communicate(timeout=10)
        self.assertEqual(w.returncode, 0, err)
        self.assertIn("resync done", out)


if __name__ == "__main__":
    harness.main()
