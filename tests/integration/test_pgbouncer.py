"""druid-syncd through pgbouncer in transaction mode (issue 10 point 5): with a pool of three
server connections that every client's transactions share, `--once` syncs exactly (first sync,
appends, late rows on the merge path, an idle run that writes nothing), two daemons
(instance_name pgb-a and pgb-b) on the same datasources through the same pooler end exact,
the operator commands work through it, and nothing druid-syncd runs leaves session settings
on the pooled server connections, where any other client of the pooler would inherit them.

Skipped when /usr/sbin/pgbouncer is missing (Debian package pgbouncer, tests/install-deps.sh).
"""
import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import BIN, EnvTestCase, iso_ms, ms_iso, state_row, table_exists, tbl, wait_for

PGBOUNCER = "/usr/sbin/pgbouncer"
POOL = 3  # server connections per (database, user): fewer than the clients of one test
COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2023-06-01T00:00:00.000Z")
MIN = 60 * 1000


def rows(n, start=0, base=BASE, step=MIN):
    return [{"__time": ms_iso(base + i * step), "k": i, "v": "v%d" % i}
            for i in range(start, start + n)]


def _psql(conninfo, sql, timeout=30):
    """Rows of sql (unaligned, fields split) over conninfo; raises with psql's stderr."""
    p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-F", "\x1f", "-v", "ON_ERROR_STOP=1",
                        "-d", conninfo, "-c", sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError("psql %r failed: %s" % (sql, p.stderr))
    return [line.split("\x1f") for line in p.stdout.splitlines() if line]


class Bouncer:
    """A pgbouncer of our own in front of the harness's PostgreSQL (its Unix socket), on
    127.0.0.1 at a free port, pool_mode=transaction, trust auth. As root it runs as
    `postgres` (pgbouncer refuses root), the user that owns the harness's socket directory."""

    def __init__(self, pg, pool=POOL):
        self.dir = tempfile.mkdtemp(prefix="dsync-pgb-")
        self.port = harness.free_port()
        self.logfile = os.path.join(self.dir, "pgbouncer.log")
        ini = os.path.join(self.dir, "pgbouncer.ini")
        users = os.path.join(self.dir, "userlist.txt")
        with open(users, "w") as f:
            f.write('"postgres" ""\n')  # trust still needs the user listed
        with open(ini, "w") as f:
            f.write("[databases]\n"
                    "sync = host=%s port=%d dbname=sync user=postgres\n"
                    "[pgbouncer]\n"
                    "listen_addr = 127.0.0.1\n"
                    "listen_port = %d\n"
                    "unix_socket_dir =\n"
                    "auth_type = trust\n"
                    "auth_file = %s\n"
                    "admin_users = postgres\n"
                    "pool_mode = transaction\n"
                    "default_pool_size = %d\n"
                    "min_pool_size = 0\n"
                    "reserve_pool_size = 0\n"
                    "max_client_conn = 200\n"
                    "logfile = %s\n"
                    % (pg.dir, pg.port, self.port, users, pool, self.logfile))
        argv = [PGBOUNCER, ini]
        if os.geteuid() == 0:
            for p in (self.dir, ini, users):
                shutil.chown(p, "postgres", "postgres")
            argv = [PGBOUNCER, "-u", "postgres", ini]
        # stderr to a file: pgbouncer in the foreground logs every login there too, and a pipe
        # nobody reads would fill up and stop it
        self.errfile = open(os.path.join(self.dir, "stderr.log"), "w+")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.errfile)
        deadline = time.time() + 15
        while True:
            if self.proc.poll() is not None:
                self.errfile.seek(0)
                err = self.errfile.read()
                self.close()
                raise RuntimeError("pgbouncer exited %s: %s %s" % (self.proc.returncode, err, self.log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    self.close()
                    raise RuntimeError("pgbouncer did not listen within 15 s: " + self.log())
                time.sleep(0.05)

    def conninfo(self, db="sync"):
        return "host=127.0.0.1 port=%d user=postgres dbname=%s" % (self.port, db)

    def admin(self, command):
        """SHOW ... on the admin console: a list of {column: value}."""
        p = subprocess.run(["psql", "-X", "-q", "-A", "-F", "\x1f", "-d", self.conninfo("pgbouncer"),
                            "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=10)
        if p.returncode != 0:
            raise AssertionError("pgbouncer %s failed: %s" % (command, p.stderr))
        lines = [x for x in p.stdout.splitlines() if x and not x.startswith("(")]
        head = lines[0].split("\x1f")
        return [dict(zip(head, x.split("\x1f"))) for x in lines[1:]]

    def pool(self):
        """(client connections, server connections) of the sync database's pool."""
        for r in self.admin("SHOW POOLS"):
            if r.get("database") == "sync":
                cl = sum(int(r.get(k) or 0) for k in ("cl_active", "cl_waiting"))
                sv = sum(int(r.get(k) or 0) for k in ("sv_active", "sv_idle", "sv_used",
                                                      "sv_tested", "sv_login"))
                return cl, sv
        return 0, 0

    def transactions(self):
        for r in self.admin("SHOW STATS"):
            if r.get("database") == "sync":
                return int(r["total_xact_count"])
        return 0

    def log(self):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errfile.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class PoolSampler:
    """The largest client and server counts of the pool, every 50 ms, while it runs."""

    def __init__(self, bouncer):
        self.b, self.max_clients, self.max_servers, self.samples = bouncer, 0, 0, 0
        self._stop = False
        self.th = threading.Thread(target=self._loop, daemon=True)
        self.th.start()

    def _loop(self):
        while not self._stop:
            try:
                cl, sv = self.b.pool()
            except Exception:  # pgbouncer gone: the test reports its own failure
                return
            self.max_clients = max(self.max_clients, cl)
            self.max_servers = max(self.max_servers, sv)
            self.samples += 1
            time.sleep(0.05)

    def stop(self):
        self._stop = True
        self.th.join(5)


class Daemon:
    """druid-syncd in daemon mode with its own config file; stderr to a file."""

    def __init__(self, tmp, config_path):
        self.log = tempfile.NamedTemporaryFile(prefix="dsync-pgb-daemon-", suffix=".log", dir=tmp,
                                               delete=False)
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen([BIN, "-c", config_path], stdout=subprocess.DEVNULL,
                                     stderr=self.log, env=e)

    def stderr(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, timeout=20):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("druid-syncd did not exit within %ss of SIGTERM\n%s"
                                 % (timeout, self.stderr()[-3000:]))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@unittest.skipUnless(os.path.exists(PGBOUNCER), "pgbouncer is not installed (%s)" % PGBOUNCER)
class PgbouncerTest(EnvTestCase):

    @classmethod
    def setUpClass(cls):
        # class cleanups, not tearDownClass: they also run when setUpClass fails half-way
        cls.env = harness.Env(**cls.env_args)
        cls.addClassCleanup(cls.env.close)
        cls.pg, cls.sim = cls.env.pg, cls.env.sim
        cls.bouncer = Bouncer(cls.pg)
        cls.addClassCleanup(cls.bouncer.close)  # runs first (cleanups are LIFO)

    @classmethod
    def tearDownClass(cls):
        pass  # the class cleanups close pgbouncer, then the Env

    def setUp(self):
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.kill()
        self.sim.clear_faults()

    # ---- helpers ----

    def config(self, path=None, **kw):
        """The harness config with PostgreSQL reached through pgbouncer only; written to
        self.env.config_path, and to path too (with the same keys) when given."""
        cfg = self.env.config(postgres=self.bouncer.conninfo(), **kw)
        if path:
            with open(path, "w") as f:
                json.dump(cfg, f)
        return cfg

    def op(self, *args):
        """`druid-syncd <command> -c <config> <args>`: (exit code, stdout, stderr)."""
        p = harness.run_bin([args[0], "-c", self.env.config_path] + list(args[1:]), timeout=60)
        return p.returncode, p.stdout, p.stderr

    def got(self, ds):
        return collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT %s, k::text, v FROM %s WHERE NOT _druid_deleted" % (harness.pg_iso("__time"), tbl(ds))))

    def is_exact(self, ds, want):
        if not table_exists(self.pg, ds):
            return False
        return (self.got(ds) == collections.Counter((r["__time"], str(r["k"]), r["v"]) for r in want)
                and self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)) == str(len(want)))

    def assert_exact(self, ds, want, log="", stopped=False):
        """The table holds exactly Druid's rows, none flagged deleted, and its state row
        agrees. stopped: a SIGTERM may have ended a cycle, which the state row says."""
        self.assertTrue(table_exists(self.pg, ds), "no table %s\n%s" % (ds, log[-3000:]))
        self.assertEqual(self.got(ds), collections.Counter((r["__time"], str(r["k"]), r["v"]) for r in want),
                         "%s differs from Druid\n%s" % (ds, log[-3000:]))
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), str(len(want)),
                         "%s holds rows flagged deleted or extra\n%s" % (ds, log[-3000:]))
        st = state_row(self.pg, ds)
        self.assertIn(st["last_error"], (None, "stopped before the cycle completed") if stopped else (None,),
                      log[-3000:])
        self.assertEqual(int(st["rows_synced"]), len(want), "rows_synced of %s" % ds)

    def session_settings(self, names, clients=POOL, hold=1.5):
        """{backend pid: {setting: value}} as `clients` concurrent pgbouncer clients see them
        in their own transactions (no SET of theirs): each holds its server connection for
        `hold` seconds, so together they are given every server connection of the pool."""
        sel = ", ".join("current_setting('%s')" % n for n in names)
        sql = "BEGIN; SELECT pg_backend_pid(), %s, pg_sleep(%s); COMMIT;" % (sel, hold)
        out, errs = {}, []

        def one():
            try:
                for r in _psql(self.bouncer.conninfo(), sql):
                    if len(r) == len(names) + 2:
                        out[r[0]] = dict(zip(names, r[1:-1]))
            except AssertionError as e:
                errs.append(str(e))

        ths = [threading.Thread(target=one) for _ in range(clients)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(30)
        self.assertEqual(errs, [])
        return out

    def diagnosis(self):
        """The pooler's and the server's view, for a failure message."""
        keys = ("database", "state", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used",
                "link", "request_time", "remote_pid")
        out = []
        for cmd in ("SHOW POOLS", "SHOW SERVERS", "SHOW CLIENTS"):
            try:
                rows_ = self.bouncer.admin(cmd)
                out.append("%s: %r" % (cmd, [{k: r[k] for k in keys if k in r} for r in rows_]))
            except (AssertionError, subprocess.TimeoutExpired) as e:
                out.append("%s: %s" % (cmd, e))
        out.append("pg_stat_activity: %r" % self.pg.psql(
            "SELECT pid, state, wait_event, now() - xact_start, left(query, 160) FROM pg_stat_activity"
            " WHERE datname = 'sync' AND pid <> pg_backend_pid()"))
        out.append("pgbouncer log: " + self.bouncer.log()[-3000:])
        return "\n".join(out)

    # ---- tests ----

    def test_a_once_through_pgbouncer_is_exact(self):
        ds = "pgb_once"
        want = rows(600)  # 10 hours, one segment per hour: several slices
        self.sim.datasource(ds, COLS, want, granularity="HOUR")
        self.config(datasources=[ds], batch_size=100, max_concurrent_queries=4, postgres_writers=2,
                    lookback_seconds=0, log_level="info")
        x0 = self.bouncer.transactions()
        sampler = PoolSampler(self.bouncer)
        try:
            err = self.env.once()
        finally:
            sampler.stop()
        self.assert_exact(ds, want, err)
        self.assertGreater(self.bouncer.transactions(), x0, "no transaction went through pgbouncer")
        self.assertLessEqual(sampler.max_servers, POOL)
        # rows appended after the end, and late rows inside hours already synced (their
        # chunks change: the merge path, with its staging table ON COMMIT DROP)
        more = rows(120, start=600)
        late = [{"__time": ms_iso(BASE + 2 * 3600 * 1000 + i * MIN + 30000), "k": 10000 + i,
                 "v": "late%d" % i} for i in range(20)]
        self.sim.append(ds, more)
        self.sim.late_append(ds, late)
        want = want + more + late
        err = self.env.once()
        self.assert_exact(ds, want, err)
        # unchanged data: a third run through the pooler writes nothing
        snap = harness.snapshot(self.pg, ds)
        err = self.env.once()
        self.assertEqual(harness.snapshot(self.pg, ds), snap, "an idle run rewrote rows\n" + err[-3000:])
        self.assertNotIn("unsupported startup parameter", self.bouncer.log())

    def test_b_two_daemons_through_one_pooler_end_exact(self):
        names = ["pgb_d%d" % i for i in range(4)]
        want = {}
        for i, ds in enumerate(names):
            want[ds] = rows(300 + 60 * i, base=BASE + i * 86400 * 1000)
            self.sim.datasource(ds, COLS, want[ds], granularity="HOUR")
        paths = [os.path.join(self.env.tmp, "pgb-%s.json" % n) for n in ("a", "b")]
        common = dict(datasources=names, batch_size=100, max_concurrent_queries=3, postgres_writers=2,
                      lookback_seconds=0, sync_interval_seconds=0.5, log_level="info")
        for path, inst in zip(paths, ("pgb-a", "pgb-b")):
            self.config(path, instance_name=inst, **common)
        sampler = PoolSampler(self.bouncer)
        owners = collections.defaultdict(set)  # datasource -> lease owners seen

        def look_at_leases():
            if not table_exists(self.pg, "druid_syncd_leases"):
                return
            for ds, owner in self.pg.psql('SELECT datasource, owner FROM druid."druid_syncd_leases"'
                                          " WHERE owner IS NOT NULL"):
                owners[ds].add(owner)

        def logs():
            return "\n".join("--- %s\n%s" % (p, d.stderr()[-2500:]) for p, d in zip(("pgb-a", "pgb-b"), ds_))

        def all_exact():
            look_at_leases()
            return all(self.is_exact(ds, want[ds]) for ds in names)

        ds_ = []
        try:
            for p in paths:
                ds_.append(Daemon(self.env.tmp, p))
                self.daemons.append(ds_[-1])
            try:
                wait_for(all_exact, timeout=25, interval=0.2, what="first sync by two daemons")
            except AssertionError:
                raise AssertionError("first sync by two daemons not exact: %r\n%s\n%s" % (
                    {ds: self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)) if table_exists(self.pg, ds)
                     else None for ds in names}, self.diagnosis(), logs()))
            for rnd in range(2):  # appends after the end, then late rows in synced hours
                for i, ds in enumerate(names):
                    n = len(want[ds])
                    if rnd == 0:
                        add = rows(90, start=n, base=BASE + i * 86400 * 1000)
                        self.sim.append(ds, add)
                    else:
                        add = [{"__time": ms_iso(BASE + i * 86400 * 1000 + 3600 * 1000 + j * MIN + 1),
                                "k": 50000 + j, "v": "late%d" % j} for j in range(15)]
                        self.sim.late_append(ds, add)
                    want[ds] = want[ds] + add
                try:
                    wait_for(all_exact, timeout=30, interval=0.2, what="round %d" % rnd)
                except AssertionError:
                    for ds in names:
                        self.assert_exact(ds, want[ds], self.diagnosis() + "\n" + logs())
                    raise
            time.sleep(1.5)  # a few more cycles of both over unchanged data
            look_at_leases()
            for d in ds_:
                self.assertIsNone(d.proc.poll(), "a daemon exited\n" + logs())
            for ds in names:  # both running, idle: the last cycles succeeded
                self.assert_exact(ds, want[ds], logs())
        finally:
            sampler.stop()
        for d in ds_:
            self.assertEqual(d.stop(), 0, logs())
        for ds in names:
            self.assert_exact(ds, want[ds], logs(), stopped=True)
        # the pooler really shared its few server connections among more clients
        self.assertLessEqual(sampler.max_servers, POOL)
        self.assertGreater(sampler.max_clients, POOL, "fewer clients than server connections: nothing shared")
        # every datasource's work was leased to one of the two, and both got a share
        for ds in names:
            self.assertTrue(owners[ds], "no lease row for %s" % ds)
            self.assertLessEqual(owners[ds], {"pgb-a", "pgb-b"}, ds)
        self.assertEqual(set().union(*owners.values()), {"pgb-a", "pgb-b"}, dict(owners))
        # a clean stop gave every lease back
        self.assertEqual(self.pg.scalar('SELECT count(*) FROM druid."druid_syncd_leases" WHERE owner IS NOT NULL'),
                         "0")

    def test_c_operator_commands_through_pgbouncer(self):
        ds = "pgb_ops"
        want = rows(120, base=BASE + 20 * 86400 * 1000)
        self.sim.datasource(ds, COLS, want, granularity="HOUR")
        self.config(datasources=[ds], lookback_seconds=0, sync_interval_seconds=0.5, log_level="info",
                    instance_name="pgb-a")
        d = Daemon(self.env.tmp, self.env.config_path)
        self.daemons.append(d)
        wait_for(lambda: self.is_exact(ds, want), timeout=30, what="first sync")
        code, out, err = self.op("status", ds)
        self.assertEqual(code, 0, err)
        self.assertIn("%s: status=ok" % ds, out)
        self.assertIn("rows=%d " % len(want), out)
        code, out, err = self.op("status", "--json", ds)
        self.assertEqual(code, 0, err)
        self.assertEqual([e["datasource"] for e in json.loads(out)], [ds])
        code, out, err = self.op("pause", ds)
        self.assertEqual(code, 0, err)
        self.assertIn("%s: paused" % ds, out)
        self.assertEqual(state_row(self.pg, ds)["paused"], True)
        time.sleep(1.0)  # a cycle under way when the pause came ends
        more = rows(30, start=120, base=BASE + 20 * 86400 * 1000)
        self.sim.append(ds, more)
        time.sleep(2.0)  # four cycle intervals: nothing synced
        self.assertEqual(int(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds))), len(want))
        code, out, err = self.op("status", ds)
        self.assertIn("paused=yes", out, err)
        code, out, err = self.op("resume", ds)
        self.assertEqual(code, 0, err)
        self.assertIn("%s: resumed" % ds, out)
        want = want + more
        wait_for(lambda: self.is_exact(ds, want), timeout=30, what="sync after resume")
        wait_for(lambda: state_row(self.pg, ds)["status"] == "ok", timeout=30, what="status ok")
        self.assert_exact(ds, want, d.stderr())
        self.assertEqual(d.stop(), 0, d.stderr()[-3000:])
        self.assert_exact(ds, want, d.stderr(), stopped=True)
        code, out, err = self.op("status", ds)
        self.assertEqual(code, 0, err)
        self.assertIn("paused=no", out)

    def test_d_no_session_settings_left_on_pooled_connections(self):
        """A transaction pooler hands a server connection to any client after each
        transaction: a session-level SET by druid-syncd would go on to govern other
        clients' statements (and not druid-syncd's own next ones, on another connection).
        An odd postgres_timeout_seconds makes its settings recognisable."""
        ds = "pgb_sess"
        self.sim.datasource(ds, COLS, rows(50, base=BASE + 30 * 86400 * 1000), granularity="HOUR")
        self.config(datasources=[ds], lookback_seconds=0, postgres_timeout_seconds=7.25)
        self.env.once()
        for args in (("status", ds), ("pause", ds), ("resume", ds), ("status",)):
            code, _out, err = self.op(*args)
            self.assertEqual(code, 0, (args, err))
        names = ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"]
        seen = self.session_settings(names)
        self.assertEqual(len(seen), POOL, "the probe did not reach every server connection: %r" % seen)
        leaked = {pid: s for pid, s in seen.items()
                  if any(v in ("7250ms", "3625ms", "7250", "3625") for v in s.values())}
        self.assertEqual(leaked, {}, "druid-syncd's session settings stayed on pooled server connections")


if __name__ == "__main__":
    harness.main()
