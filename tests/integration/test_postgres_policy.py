"""PostgreSQL faults under one policy (issue 6): errors raised inside COPY fail the slice at
once with PostgreSQL's own message; lost connections and server restarts are retried on a
fresh connection, in daemon mode as under --once; server-side timeouts come from
postgres_timeout_seconds; a dropped destination schema is recreated; a state row left
'syncing' by a killed run is corrected at the next start."""
import collections
import os
import signal
import subprocess
import threading
import time
import unittest

import harness
from harness import EnvTestCase, iso_ms, ms_iso, slice_match, state_row, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2020-02-02T00:00:00.000Z")


def rows(n, start=0):
    return [{"__time": ms_iso(BASE + i * 1000), "k": i, "v": "v%d" % i}
            for i in range(start, start + n)]


def live(pg, ds):
    return collections.Counter(tuple(r) for r in pg.psql(
        "SELECT k::text, v FROM %s WHERE NOT _druid_deleted" % tbl(ds)))


def want(rs):
    return collections.Counter((str(r["k"]), r["v"]) for r in rs)


def backends(pg):
    return pg.psql("SELECT pid::text, state, left(query, 40) FROM pg_stat_activity"
                   " WHERE application_name LIKE 'druid-syncd%'")


class ErrorsInsideCopy(EnvTestCase):

    def tearDown(self):
        self.sim.clear_faults()

    def test_check_constraint_mid_copy_fails_at_once_and_names_it(self):
        ds = "chk_fast"
        self.sim.datasource(ds, COLS, rows(10))
        self.env.config(datasources=[ds], batch_size=100000, max_retries=3)
        self.env.once()
        self.pg.psql("ALTER TABLE %s ADD CONSTRAINT small_k CHECK (k < 150)" % tbl(ds))
        # many rows after the cursor: fast-path slices COPY straight into the table, so the
        # constraint fires inside COPY (the hang of issue 6)
        self.sim.append(ds, rows(250000, start=10))
        t0 = time.time()
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertLess(time.time() - t0, 60)
        self.assertIn("small_k", err)
        self.assertIn("constraint, 23514", err)
        # not retried: a constraint violation is not transient
        self.assertNotRegex(err, r"slice \d+ failed \(postgres: .*small_k.*retry")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "10")
        st = state_row(self.pg, ds)
        self.assertEqual(st["status"], "error")
        self.assertIn("small_k", st["last_error"])
        # nothing is left idle in an aborted transaction
        self.assertEqual([b for b in backends(self.pg) if "aborted" in (b[1] or "")], [])

    def test_statement_timeout_from_postgres_timeout_seconds(self):
        ds = "stmt_timeout"
        self.sim.datasource(ds, COLS, rows(300))
        self.env.config(datasources=[ds], batch_size=1000, postgres_timeout_seconds=1,
                        max_retries=3)
        # the slice's COPY stays open while Druid stalls: the server cancels it
        self.sim.fault("delay", match=slice_match(self.sim, ds), times=5, after_rows=10,
                       delay_seconds=3)
        t0 = time.time()
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertIn("timeout, 57014", err)
        self.assertNotIn("retry 1", err)
        self.assertLess(time.time() - t0, 30)
        self.assertFalse(harness.table_exists(self.pg, ds) and
                         self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)) != "0")

    def test_lock_wait_is_bounded_and_retried(self):
        ds = "locked"
        self.sim.datasource(ds, COLS, rows(50))
        self.env.config(datasources=[ds], batch_size=1000, postgres_timeout_seconds=2,
                        max_retries=6, retry_initial_seconds=0.5, retry_max_seconds=1)
        self.env.once()
        self.sim.append(ds, rows(50, start=50))
        # another session holds the table for 2.5 s: the slice's lock wait ends after
        # 1 s (lock_timeout: half of postgres_timeout_seconds), is retried, and succeeds
        # once the lock is gone
        holder = subprocess.Popen(
            ["psql", "-X", "-q", "-d", self.pg.conninfo(), "-c",
             "BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2.5); COMMIT;"
             % tbl(ds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        try:
            rc, err = self.env.run("--once", timeout=120)
        finally:
            holder.wait(timeout=30)
        self.assertEqual(rc, 0, err[-3000:])
        self.assertIn("conflict, 55P03", err)
        self.assertEqual(live(self.pg, ds), want(rows(100)))


class ConnectionsLost(EnvTestCase):

    def tearDown(self):
        self.sim.clear_faults()

    def test_daemon_survives_backends_killed_mid_copy(self):
        ds = "kill_daemon"
        data = rows(600)
        self.sim.datasource(ds, COLS, data)
        self.env.config(datasources=[ds], batch_size=100, max_concurrent_queries=2,
                        max_retries=5, sync_interval_seconds=0.5)
        self.sim.fault("delay", match='"v" FROM "%s"' % ds, times=3, after_rows=20,
                       delay_seconds=1.5)
        p = self.env.start_daemon()
        try:
            killed = []
            deadline = time.time() + 30
            while time.time() < deadline and len(killed) < 2:
                r = self.pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE application_name LIKE 'druid-syncd%' AND query LIKE 'COPY%'")
                if r:
                    killed.append(len(r))
                    time.sleep(0.5)
                time.sleep(0.05)
            self.assertTrue(killed, "no COPY was caught in flight")
            wait_for(lambda: live(self.pg, ds) == want(data), timeout=60,
                     what="the table to become exact after the kills")
            self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "600")
            t0 = time.time()
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=40)
            self.assertEqual(p.returncode, 0, err[-3000:])
            self.assertLess(time.time() - t0, 35)
            self.assertIn("retry", err)
            self.assertIn("postgres", err)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()


class ServerRestarts(EnvTestCase):

    def restart(self, mode):
        self.pg._run(["pg_ctl", "-D", f"{self.pg.dir}/data", "-m", mode, "-w", "restart",
                      "-o", f"-p {self.pg.port} -k {self.pg.dir} -c listen_addresses=''"
                      " -c fsync=off -c max_connections=200", "-l", f"{self.pg.dir}/server.log"])

    def tearDown(self):
        self.sim.clear_faults()

    def _restart_during_sync(self, mode, once):
        ds = "restart_" + mode + ("_once" if once else "")
        data = rows(800)
        self.sim.datasource(ds, COLS, data)
        self.env.config(datasources=[ds], batch_size=100, max_concurrent_queries=2,
                        max_retries=8, retry_initial_seconds=0.3, retry_max_seconds=1,
                        sync_interval_seconds=0.5)
        self.sim.fault("delay", match=slice_match(self.sim, ds), times=4, after_rows=20,
                       delay_seconds=1.0)
        p = self.env.start_daemon("--once") if once else self.env.start_daemon()
        try:
            wait_for(lambda: any("COPY" in (b[2] or "") for b in backends(self.pg)),
                     timeout=30, what="a COPY in flight")
            self.restart(mode)
            if once:
                _, err = p.communicate(timeout=120)
                self.assertEqual(p.returncode, 0, err[-4000:])
            else:
                wait_for(lambda: live(self.pg, ds) == want(data), timeout=90,
                         what="the table to become exact after the restart")
                p.send_signal(signal.SIGTERM)
                _, err = p.communicate(timeout=40)
                self.assertEqual(p.returncode, 0, err[-3000:])
            self.assertEqual(live(self.pg, ds), want(data))
            self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "800")
            self.assertIn("retry", err)
            self.assertNotEqual(state_row(self.pg, ds)["status"], "syncing")
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()

    def test_restart_fast_daemon(self):
        self._restart_during_sync("fast", once=False)

    def test_restart_immediate_daemon(self):
        self._restart_during_sync("immediate", once=False)

    def test_restart_fast_once(self):
        self._restart_during_sync("fast", once=True)


class SchemaAndState(EnvTestCase):

    def test_dropped_schema_is_recreated_without_restart(self):
        ds = "schema_drop"
        self.sim.datasource(ds, COLS, rows(30))
        self.env.config(datasources=[ds], batch_size=1000, sync_interval_seconds=0.3,
                        retry_initial_seconds=0.1, retry_max_seconds=0.3)
        p = self.env.start_daemon()
        try:
            wait_for(lambda: harness.table_exists(self.pg, ds) and
                     live(self.pg, ds) == want(rows(30)), timeout=30, what="first sync")
            for attempt in range(20):  # may deadlock with the daemon's own transaction
                try:
                    self.pg.psql("DROP SCHEMA druid CASCADE")
                    break
                except subprocess.CalledProcessError:
                    time.sleep(0.1)
            else:
                self.fail("DROP SCHEMA kept failing")
            wait_for(lambda: harness.table_exists(self.pg, ds) and
                     live(self.pg, ds) == want(rows(30)), timeout=30,
                     what="the schema and table to come back")
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=40)
            self.assertIn("created it again", err)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()

    def test_syncing_left_by_a_killed_run_is_corrected_at_start(self):
        ds, other = "killed_mid_cycle", "bystander"
        self.sim.datasource(ds, COLS, rows(500))
        self.sim.datasource(other, COLS, rows(5))
        # a configured instance_name: the restart below is the same instance again
        self.env.config(datasources=[ds, other], batch_size=50, max_concurrent_queries=1,
                        instance_name="policy-a")
        self.sim.fault("delay", match=slice_match(self.sim, ds), times=1, after_rows=5,
                       delay_seconds=5)
        p = self.env.start_daemon("--once", "--datasource", ds)
        try:
            wait_for(lambda: (state_row(self.pg, ds) or {}).get("status") == "syncing",
                     timeout=30, what="the cycle to start")
            p.kill()
            p.communicate()
        finally:
            if p.poll() is None:
                p.kill()
        self.assertEqual(state_row(self.pg, ds)["status"], "syncing")
        # a run that syncs only the other datasource leaves it alone (it could be another
        # instance's cycle in progress) ...
        self.env.once("--datasource", other)
        self.assertEqual(state_row(self.pg, ds)["status"], "syncing")
        # ... so does a start of another instance while the killed run's lease is alive (it
        # cannot tell a dead holder from a live one before the lease expires) ...
        self.sim.fault("status", match="SELECT 1", times=100, error="unauthorized")
        try:
            self.env.config(datasources=[ds, other], batch_size=50, max_concurrent_queries=1,
                            instance_name="policy-b", lease_seconds=300)
            rc, err = self.env.run("--once", "--datasource", ds, timeout=60)
            self.assertEqual(rc, 1, err[-2000:])
            self.assertEqual(state_row(self.pg, ds)["status"], "syncing")
            # ... a start of the same instance that syncs it corrects it first thing (here
            # Druid then refuses us, so the correction is all this run does)
            self.env.config(datasources=[ds, other], batch_size=50, max_concurrent_queries=1,
                            instance_name="policy-a")
            rc, err = self.env.run("--once", "--datasource", ds, timeout=60)
        finally:
            self.sim.clear_faults()
        self.assertEqual(rc, 1, err[-2000:])
        st = state_row(self.pg, ds)
        self.assertEqual(st["status"], "interrupted")
        self.assertIn("without recording its end", st["last_error"])


class StopAlwaysWorks(EnvTestCase):
    """SIGTERM ends the daemon within shutdown_timeout_seconds plus a few seconds in every
    state; a second SIGTERM ends it at once."""

    SHUTDOWN = 2

    def tearDown(self):
        self.sim.clear_faults()

    def start(self, ds, n=300, **cfg):
        self.sim.datasource(ds, COLS, rows(n))
        base = dict(datasources=[ds], batch_size=50, max_concurrent_queries=2,
                    shutdown_timeout_seconds=self.SHUTDOWN, max_retries=50,
                    sync_interval_seconds=0.5)
        base.update(cfg)
        self.env.config(**base)
        return self.env.start_daemon()

    def stop_within(self, p, seconds, signals=1):
        t0 = time.time()
        for _ in range(signals):
            p.send_signal(signal.SIGTERM)
            time.sleep(0.1)
        try:
            _, err = p.communicate(timeout=seconds + 10)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            self.fail("still running %.0f s after SIGTERM:\n%s" % (time.time() - t0, err[-3000:]))
        took = time.time() - t0
        self.assertLess(took, seconds, err[-3000:])
        return err

    def test_stop_while_postgres_is_unreachable(self):
        ds = "stop_pg_down"
        self.sim.fault("delay", match=slice_match(self.sim, ds), times=50, after_rows=5,
                       delay_seconds=2)
        p = self.start(ds, retry_initial_seconds=0.2, retry_max_seconds=0.5)
        try:
            wait_for(lambda: any("COPY" in (b[2] or "") for b in backends(self.pg)),
                     timeout=30, what="a COPY in flight")
            self.pg._run(["pg_ctl", "-D", f"{self.pg.dir}/data", "-m", "immediate", "-w", "stop"])
            time.sleep(1.5)  # slices fail and retry against a server that is gone
            err = self.stop_within(p, self.SHUTDOWN + 5)
            self.assertIn("PostgreSQL", err)
        finally:
            if p.poll() is None:
                p.kill()
            self.pg._run(["pg_ctl", "-D", f"{self.pg.dir}/data", "-l", f"{self.pg.dir}/server.log",
                          "-w", "-o", f"-p {self.pg.port} -k {self.pg.dir} -c listen_addresses=''"
                          " -c fsync=off -c max_connections=200", "start"])

    def test_stop_while_copy_is_blocked(self):
        ds = "stop_copy_blocked"
        # Druid stalls mid-response: the COPY stays open long enough to be caught and stopped
        self.sim.fault("delay", match='"v" FROM "%s"' % ds, times=-1, after_rows=1000,
                       delay_seconds=5)
        p = self.start(ds, n=200000, batch_size=200000, max_concurrent_queries=1)
        stopped = []
        try:
            def copying():
                return [b for b in backends(self.pg) if "COPY" in (b[2] or "")]
            pid = int(wait_for(copying, timeout=30, what="a COPY in flight")[0][0])
            os.kill(pid, signal.SIGSTOP)  # the backend stops reading: COPY blocks
            stopped.append(pid)
            time.sleep(1.5)
            self.stop_within(p, self.SHUTDOWN + 5)
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            if p.poll() is None:
                p.kill()

    def test_second_sigterm_ends_at_once(self):
        ds = "stop_twice"
        # Druid stalls mid-response: the COPY stays open long enough to be caught and stopped
        self.sim.fault("delay", match='"v" FROM "%s"' % ds, times=-1, after_rows=1000,
                       delay_seconds=5)
        p = self.start(ds, n=200000, batch_size=200000, max_concurrent_queries=1,
                       shutdown_timeout_seconds=60)
        stopped = []
        try:
            def copying():
                return [b for b in backends(self.pg) if "COPY" in (b[2] or "")]
            pid = int(wait_for(copying, timeout=30, what="a COPY in flight")[0][0])
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
            time.sleep(1)
            self.stop_within(p, 4, signals=2)
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            if p.poll() is None:
                p.kill()

    def test_stop_while_query_is_queued(self):
        ds, other = "stop_queued_a", "stop_queued_b"
        self.sim.datasource(other, COLS, rows(10))
        # one Druid slot, held by a stalled query of ds: the other datasource's query waits
        # in the daemon's queue
        self.sim.fault("delay", match='FROM "%s"' % ds, times=50, after_rows=0,
                       delay_seconds=30)
        p = self.start(ds, max_concurrent_queries=1, datasources=[ds, other])
        try:
            wait_for(lambda: any('FROM "%s"' % ds in (q.get("sql") or "")
                                 for q in self.sim.queries()),
                     timeout=30, what="the stalled query")
            time.sleep(1)  # ds's next queries (or the other's) wait for the held slot
            self.stop_within(p, self.SHUTDOWN + 5)
        finally:
            if p.poll() is None:
                p.kill()

    def test_stop_while_backoff_is_pending(self):
        ds = "stop_backoff"
        self.sim.fault("status", match=slice_match(self.sim, ds), times=50, status=503,
                       error="capacity")
        p = self.start(ds, retry_initial_seconds=60, retry_max_seconds=60)
        try:
            wait_for(lambda: len([q for q in self.sim.queries()
                                  if "FROM" in (q.get("sql") or "")]) > 3,
                     timeout=30, what="a slice to fail")
            time.sleep(1)
            self.stop_within(p, 3)
        finally:
            if p.poll() is None:
                p.kill()


if __name__ == "__main__":
    harness.main()
