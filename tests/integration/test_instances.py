"""Several druid-syncd instances on one destination (issue 10), against the real binary: what an
operator checks in the lease table (`<schema>.druid_syncd_leases`), in `druid-syncd status`, in
the logs and in the synced tables.

1. balance: two daemons split four datasources two and two; a third joins and gets work without
   a restart of the others, nobody above ceil(4/3); a clean stop releases its units at once and
   the others take them; every table exact.
2. SIGKILL: the dead instance's units are taken over only after they expire, with a new epoch,
   within a bound; the data ends exact after appends.
3. SIGSTOP mid-slice past the lease: the other instance takes over and syncs while it is frozen;
   after SIGCONT the frozen one commits nothing with its old epoch (its log), the destination is
   exact and has no duplicate row.
4. --once next to a daemon that holds everything exits 1 after about 2 x lease_seconds naming the
   holder and writes nothing; after the daemon is SIGKILLed, --once waits for the expiry and syncs.
5. pause/resume while a daemon holds the datasource: the operator commands need no lease.

Short leases (lease_seconds 3, renewed every second) and sync_interval_seconds 1 keep it fast.
"""
import collections
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import harness
from harness import BIN, EnvTestCase, iso_ms, ms_iso, sqlstr, table_exists, tbl, wait_for

LEASE = 3.0  # lease_seconds of every instance here
COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2024-03-01T00:00:00.000Z")
MIN = 60 * 1000
DAY = 86400 * 1000


def rows(n, start=0, base=BASE, step=MIN):
    return [{"__time": ms_iso(base + i * step), "k": i, "v": "v%d" % i} for i in range(start, start + n)]


class Inst:
    """One druid-syncd daemon with its own config file (instance_name = name); stderr to a file
    (a pipe nobody reads could fill up and block it)."""

    def __init__(self, test, name, cfg):
        self.name = name
        self.path = os.path.join(test.env.tmp, "inst-%s.json" % name)
        with open(self.path, "w") as f:
            json.dump(dict(cfg, instance_name=name), f)
        self.logf = tempfile.NamedTemporaryFile(prefix="dsync-%s-" % name, suffix=".log", dir=test.env.tmp,
                                                delete=False)
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen([BIN, "-c", self.path], stdout=subprocess.DEVNULL, stderr=self.logf, env=e)
        self.stopped = False  # SIGSTOPped

    def log(self):
        with open(self.logf.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_size(self):
        return os.path.getsize(self.logf.name)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=20):
        """SIGTERM; returns the exit code."""
        if self.stopped:
            self.cont()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%s did not exit within %ss of SIGTERM\n%s" % (self.name, timeout,
                                                                                self.log()[-3000:]))

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self):
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def kill(self):
        if self.proc.poll() is None:
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


class InstancesTest(EnvTestCase):

    def setUp(self):
        self.insts = []

    def tearDown(self):
        for i in self.insts:
            i.kill()
        self.sim.clear_faults()

    # ---- helpers ----

    def cfg(self, schema, datasources, **kw):
        c = {
            "druid_host": "127.0.0.1",
            "druid_port": self.sim.port,
            "postgres": self.pg.conninfo(),
            "destination_schema": schema,
            "datasources": datasources,
            "batch_size": 100,
            "max_concurrent_queries": 2,
            "postgres_writers": 2,
            "retry_initial_seconds": 0.05,
            "retry_max_seconds": 0.5,
            "sync_interval_seconds": 1,
            "lookback_seconds": 0,
            "lease_seconds": LEASE,
            "log_level": "debug",
        }
        c.update(kw)
        return c

    def start(self, name, cfg):
        i = Inst(self, name, cfg)
        self.insts.append(i)
        return i

    def logs(self, insts=None):
        """The instances' lease, slice and error lines (debug logs are long), for failure messages."""
        keep = re.compile(r"lease|instance|slice \d+ |warning|error|fatal")
        out = []
        for i in (insts or self.insts):
            lines = [ln for ln in i.log().splitlines() if keep.search(ln) and "NOTICE" not in ln]
            out.append("--- %s (rc %s)\n%s" % (i.name, i.proc.poll(), "\n".join(lines[-60:])))
        return "\n".join(out)

    def leases(self, schema):
        """{datasource: (owner, epoch)} of the datasource units alive by the database's clock."""
        if not table_exists(self.pg, "druid_syncd_leases", schema):
            return {}
        return {r[0]: (r[1], int(r[2])) for r in self.pg.psql(
            "SELECT datasource, owner, epoch FROM %s WHERE unit LIKE 'ds:%%' AND owner IS NOT NULL"
            " AND expires_at > clock_timestamp()" % tbl("druid_syncd_leases", schema))}

    def unit_row(self, schema, unit):
        """The lease row of a unit as a dict (owner, epoch, expires_at, acquired_at as text)."""
        r = self.pg.psql("SELECT owner, epoch, expires_at::text, acquired_at::text, clock_timestamp()::text"
                         " FROM %s WHERE unit = %s" % (tbl("druid_syncd_leases", schema), sqlstr(unit)))
        if not r:
            return None
        o, e, x, a, now = r[0]
        return {"owner": o, "epoch": int(e), "expires_at": x, "acquired_at": a, "now": now}

    def activity(self):
        """What the server's sessions do (for failure messages)."""
        return self.pg.psql("SELECT pid, state, wait_event_type || ':' || wait_event,"
                            " round(extract(epoch FROM clock_timestamp() - xact_start)::numeric, 1),"
                            " left(query, 90) FROM pg_stat_activity WHERE datname = 'sync'"
                            " AND pid <> pg_backend_pid()")

    def per_owner(self, held):
        c = collections.Counter(o for o, _ in held.values())
        return dict(c)

    def status(self, path):
        """{datasource: held_by} from `druid-syncd status` (text) and the JSON form."""
        p = harness.run_bin(["status", "-c", path], timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        text = {}
        for line in p.stdout.splitlines():
            m = re.match(r"^(\S+): status=.* held_by=(\S+) ", line)
            if m:
                text[m.group(1)] = m.group(2)
        p = harness.run_bin(["status", "--json", "-c", path], timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        js = {e["datasource"]: e for e in json.loads(p.stdout)}
        return text, js

    def got(self, schema, ds):
        return collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT %s, k::text, v FROM %s WHERE NOT _druid_deleted" % (harness.pg_iso("__time"), tbl(ds, schema))))

    @staticmethod
    def want_counter(want):
        return collections.Counter((r["__time"], str(r["k"]), r["v"]) for r in want)

    def is_exact(self, schema, ds, want):
        if not table_exists(self.pg, ds, schema):
            return False
        return (self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds, schema)) == str(len(want))
                and self.got(schema, ds) == self.want_counter(want))

    def assert_exact(self, schema, ds, want, why=""):
        self.assertTrue(table_exists(self.pg, ds, schema), "no table %s.%s\n%s" % (schema, ds, why))
        self.assertEqual(self.got(schema, ds), self.want_counter(want), "%s differs from Druid\n%s" % (ds, why))
        total, ids, ks = self.pg.psql("SELECT count(*), count(DISTINCT _druid_id), count(DISTINCT k) FROM %s"
                                      % tbl(ds, schema))[0]
        self.assertEqual(int(total), len(want), "%s holds rows flagged deleted or extra\n%s" % (ds, why))
        self.assertEqual(int(ids), int(total), "duplicate _druid_id in %s" % ds)
        self.assertEqual(int(ks), int(total), "a Druid row is in %s twice" % ds)

    def wait_exact(self, schema, wants, timeout, what, insts=None):
        try:
            wait_for(lambda: all(self.is_exact(schema, ds, w) for ds, w in wants.items()), timeout=timeout,
                     interval=0.2, what=what)
        except AssertionError:
            for ds, w in wants.items():
                self.assert_exact(schema, ds, w, "%s\n%s" % (what, self.logs(insts)))
            raise

    def datasources(self, prefix, n, count=250):
        """n datasources of `count` rows a minute apart (HOUR segments: several slices each)."""
        wants = {}
        for i in range(n):
            ds = "%s%d" % (prefix, i)
            wants[ds] = rows(count, base=BASE + i * DAY)
            self.sim.datasource(ds, COLS, wants[ds], granularity="HOUR")
        return wants

    def append(self, wants, n=60):
        for ds, w in sorted(wants.items()):
            more = rows(n, start=len(w), base=BASE + int(ds[-1]) * DAY)
            self.sim.append(ds, more)
            wants[ds] = w + more

    # ---- tests ----

    def test_1_balance_join_and_clean_leave(self):
        schema = "inst_bal"
        wants = self.datasources("bal", 4)
        names = sorted(wants)
        cfg = self.cfg(schema, names)
        a, b = self.start("bal-a", cfg), self.start("bal-b", cfg)

        def split_two_two():
            held = self.leases(schema)
            return len(held) == 4 and self.per_owner(held) == {"bal-a": 2, "bal-b": 2}

        try:
            wait_for(split_two_two, timeout=6 * LEASE, interval=0.2, what="two datasources each")
        except AssertionError:
            raise AssertionError("two daemons did not split four datasources 2/2: %r\n%s"
                                 % (self.leases(schema), self.logs()))
        self.wait_exact(schema, wants, 30, "first sync by two daemons")
        held = self.leases(schema)
        text, js = self.status(a.path)
        self.assertEqual({ds: text.get(ds) for ds in names}, {ds: held[ds][0] for ds in names},
                         "status held_by disagrees with the lease table")
        self.assertEqual({ds: js[ds]["held_by"] for ds in names}, {ds: held[ds][0] for ds in names})
        self.assertTrue(all(js[ds]["lease_expires"] for ds in names), js)

        # a third instance joins: the work spreads without a restart of the others
        c = self.start("bal-c", cfg)
        t_join = time.time()

        def spread():
            held = self.leases(schema)
            per = self.per_owner(held)
            return len(held) == 4 and max(per.values()) <= 2 and per.get("bal-c", 0) >= 1

        join_took = None
        with self.subTest("the newcomer gets work"):  # the rest of the test runs either way
            try:
                wait_for(spread, timeout=5 * LEASE, interval=0.2, what="the work spread over three")
            except AssertionError:
                raise AssertionError("a third instance got no work within %.0f s: %r\n%s"
                                     % (5 * LEASE, self.leases(schema), self.logs()))
            join_took = time.time() - t_join
        self.assertTrue(a.alive() and b.alive(), self.logs())
        self.append(wants)
        self.wait_exact(schema, wants, 30, "appends with three instances")
        held = self.leases(schema)
        self.assertEqual(len(held), 4, held)
        self.assertLessEqual(max(self.per_owner(held).values()), 2, held)

        # a clean stop gives its units back at once; the others take them
        leaving = max((a, b, c), key=lambda i: (self.per_owner(held).get(i.name, 0), i.name))
        its = [ds for ds, (o, _) in held.items() if o == leaving.name]
        self.assertTrue(its)
        self.assertEqual(leaving.stop(), 0, leaving.log()[-3000:])
        rows_after = {ds: self.unit_row(schema, "ds:" + ds) for ds in its}
        hb = self.unit_row(schema, "instance:" + leaving.name)
        for ds, r in rows_after.items():
            self.assertNotEqual(r["owner"], leaving.name, "%s still held by %s after its clean stop: %r\n%s"
                                % (ds, leaving.name, r, leaving.log()[-3000:]))
        self.assertIsNone(hb["owner"], "heartbeat of %s not released: %r" % (leaving.name, hb))
        rest = [i for i in (a, b, c) if i is not leaving]
        t_left = time.time()

        def taken_over():
            held = self.leases(schema)
            per = self.per_owner(held)
            return (len(held) == 4 and set(per) <= {i.name for i in rest} and max(per.values()) <= 2)

        try:
            wait_for(taken_over, timeout=4 * LEASE, interval=0.2, what="the units of the leaving one taken")
        except AssertionError:
            raise AssertionError("%s's units not taken by the others: %r\n%s"
                                 % (leaving.name, self.leases(schema), self.logs(rest)))
        leave_took = time.time() - t_left
        self.append(wants, n=30)
        self.wait_exact(schema, wants, 30, "appends after one left", rest)
        for i in rest:
            self.assertTrue(i.alive(), self.logs())
            self.assertEqual(i.stop(), 0, i.log()[-3000:])
        self.assertEqual(self.leases(schema), {}, "units still held after every instance stopped")
        for ds in names:
            self.assert_exact(schema, ds, wants[ds])
        print("\n  balance: third instance got work after %s s, units of a leaving one taken after %.1f s"
              % (join_took and "%.1f" % join_took, leave_took))

    def test_2_sigkill_takeover_after_expiry(self):
        schema = "inst_kill"
        wants = self.datasources("kil", 2)
        names = sorted(wants)
        cfg = self.cfg(schema, names)
        a, b = self.start("kill-a", cfg), self.start("kill-b", cfg)
        wait_for(lambda: self.per_owner(self.leases(schema)) == {"kill-a": 1, "kill-b": 1}, timeout=6 * LEASE,
                 interval=0.2, what="one datasource each")
        self.wait_exact(schema, wants, 30, "first sync")
        victim_ds = [ds for ds, (o, _) in self.leases(schema).items() if o == "kill-a"][0]
        self.append(wants)  # work arrives; the victim may die in the middle of it
        time.sleep(0.3)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        t_kill = time.time()
        at_kill = self.unit_row(schema, "ds:" + victim_ds)
        self.assertEqual(at_kill["owner"], "kill-a")
        left = float(self.pg.scalar("SELECT extract(epoch FROM %s::timestamptz - %s::timestamptz)"
                                    % (sqlstr(at_kill["expires_at"]), sqlstr(at_kill["now"]))))
        self.assertGreater(left, 0)
        self.assertLessEqual(left, LEASE + 0.1)
        def taken():
            r = self.unit_row(schema, "ds:" + victim_ds)
            return r if r["owner"] == "kill-b" else None

        r = wait_for(taken, timeout=4 * LEASE, interval=0.05, what="the killed instance's unit taken over")
        took = time.time() - t_kill
        self.assertEqual(r["epoch"], at_kill["epoch"] + 1, "a takeover must bump the epoch")
        self.assertEqual(self.pg.scalar("SELECT %s::timestamptz >= %s::timestamptz"
                                        % (sqlstr(r["acquired_at"]), sqlstr(at_kill["expires_at"]))), "t",
                         "taken at %s, before the lease expired at %s" % (r["acquired_at"], at_kill["expires_at"]))
        self.assertGreaterEqual(took, left - 0.2, "taken over %.2f s after the kill, the lease had %.2f s left"
                                % (took, left))
        self.assertLessEqual(took, 2 * LEASE + 2, "the takeover took %.1f s\n%s" % (took, b.log()[-3000:]))
        self.assertIn("%s: instance kill-b holds its lease (epoch %d" % (victim_ds, r["epoch"]), b.log())
        self.append(wants, n=40)
        self.wait_exact(schema, wants, 30, "appends after the takeover", [b])
        self.assertEqual(self.per_owner(self.leases(schema)), {"kill-b": 2})
        self.assertEqual(b.stop(), 0, b.log()[-3000:])
        for ds in names:
            self.assert_exact(schema, ds, wants[ds])
        print("\n  SIGKILL: lease had %.2f s left at the kill, taken over after %.2f s" % (left, took))

    def test_3_sigstop_mid_slice_commits_nothing_after_resume(self):
        schema = "inst_stop"
        ds = "stp0"
        base = BASE + 10 * DAY
        want = rows(250, base=base)
        self.sim.datasource(ds, COLS, want, granularity="HOUR")
        # one slice per chunk here; the appended hour's rows are wide, so that the frozen
        # instance has sent more than one COPY chunk (256 KiB) of them to PostgreSQL
        cfg = self.cfg(schema, [ds], batch_size=1000)
        a = self.start("stop-a", cfg)
        self.wait_exact(schema, {ds: want}, 30, "first sync by stop-a")
        self.assertEqual(self.leases(schema), {ds: ("stop-a", self.leases(schema)[ds][1])})
        b = self.start("stop-b", cfg)
        wait_for(lambda: "%s: held by instance stop-a" % ds in b.log(), timeout=4 * LEASE, interval=0.2,
                 what="stop-b running, leaving %s to stop-a" % ds)
        # the next slice of stop-a stalls in Druid after most of its rows: stop-a is frozen in it
        match = harness.slice_match(self.sim, ds)
        self.sim.fault("delay", match=match, times=1, after_rows=100, delay_seconds=4)
        hour = base + DAY // 2  # a new chunk, read by one slice
        more = [{"__time": ms_iso(hour + i * 20000), "k": 250 + i, "v": "w%d-" % i + "x" * 4000}
                for i in range(150)]
        self.sim.append(ds, more)
        want = want + more

        def stalled():
            for q in self.sim.queries():
                if match in (q.get("sql") or "") and q.get("finished") is None and (q.get("rows_sent") or 0) >= 100:
                    return True
            return False

        wait_for(stalled, timeout=10, interval=0.02, what="stop-a's slice stalled in Druid")
        copying = ("SELECT pid FROM pg_stat_activity WHERE datname = 'sync' AND state = 'active'"
                   " AND query LIKE 'COPY %%%s%%' AND pid <> pg_backend_pid()" % harness.qident(ds))
        wait_for(lambda: self.pg.psql(copying), timeout=2, interval=0.02,
                 what="stop-a's slice transaction open (its COPY)")
        time.sleep(0.3)  # the rows it got so far go out to PostgreSQL
        epoch_old = self.leases(schema)[ds]
        self.assertEqual(epoch_old[0], "stop-a")
        epoch_old = epoch_old[1]
        a.freeze()
        t_freeze = time.time()
        in_tx = self.pg.psql(copying)
        # while stop-a is frozen, stop-b takes the datasource over and syncs it
        t_take = t_synced = None
        with self.subTest("the other instance takes over and syncs while one is frozen"):
            try:
                r = wait_for(lambda: self.leases(schema).get(ds, ("", 0))[0] == "stop-b" and self.leases(schema)[ds],
                             timeout=4 * LEASE, interval=0.1, what="stop-b takes the datasource over")
            except AssertionError:
                raise AssertionError("stop-b did not take %s over within %.0f s of stop-a's freeze: leases %r;"
                                     " pg_stat_activity: %r\n%s" % (ds, 4 * LEASE, self.leases(schema),
                                                                   self.activity(), self.logs()))
            t_take = time.time() - t_freeze
            self.assertGreater(r[1], epoch_old)
            try:
                wait_for(lambda: self.is_exact(schema, ds, want), timeout=4 * LEASE, interval=0.2,
                         what="stop-b syncs while stop-a is frozen")
            except AssertionError:
                raise AssertionError("stop-b did not sync %s within %.0f s of its takeover while stop-a is"
                                     " frozen (stop-a's COPY open at the freeze: %r); pg_stat_activity: %r\n%s"
                                     % (ds, 4 * LEASE, in_tx, self.activity(), self.logs()))
            t_synced = time.time() - t_freeze
        mark = a.log_size()
        a.cont()
        wait_for(lambda: re.search(r"rolled back by the fence|lost its lease", a.log()[mark:]),
                 timeout=3 * LEASE, interval=0.1, what="stop-a learns it lost the lease")
        more = rows(30, start=400, base=base)
        self.sim.append(ds, more)
        want = want + more
        self.wait_exact(schema, {ds: want}, 30, "appends after the resume")
        time.sleep(LEASE)  # a few more cycles of both
        self.assertTrue(a.alive() and b.alive(), self.logs())
        self.assertEqual(a.stop(), 0, a.log()[-3000:])
        self.assertEqual(b.stop(), 0, b.log()[-3000:])
        after = a.log()[mark:]
        bad = [ln for ln in after.splitlines()
               if re.search(r"slice \d+ committed: .*\(instance stop-a, lease epoch %d[,)]" % epoch_old, ln)]
        self.assertEqual(bad, [], "stop-a committed with its old epoch after the resume\n" + after[-4000:])
        self.assertTrue(re.search(r"%s: slice \d+ rolled back by the fence|%s: instance stop-a lost its lease"
                                  " \(epoch %d\)" % (ds, ds, epoch_old), after), after[-4000:])
        self.assert_exact(schema, ds, want, self.logs())
        print("\n  SIGSTOP: taken over %s s after the freeze, synced by the other after %s s;"
              " frozen in its COPY: %s" % (t_take and "%.1f" % t_take, t_synced and "%.1f" % t_synced, bool(in_tx)))

    def test_4_once_next_to_a_daemon(self):
        schema = "inst_once"
        wants = self.datasources("onc", 2, count=120)
        names = sorted(wants)
        cfg = self.cfg(schema, names)
        d = self.start("once-d", cfg)
        self.wait_exact(schema, wants, 30, "first sync by the daemon")
        wait_for(lambda: self.per_owner(self.leases(schema)) == {"once-d": 2}, timeout=2 * LEASE,
                 what="the daemon holds both")
        before = {ds: harness.snapshot(self.pg, ds, schema) for ds in names}
        epochs = self.leases(schema)
        path = os.path.join(self.env.tmp, "once.json")
        with open(path, "w") as f:
            json.dump(dict(cfg, instance_name="one-off"), f)
        t0 = time.time()
        p = harness.run_bin(["--once", "-c", path], timeout=60)
        took = time.time() - t0
        self.assertEqual(p.returncode, 1, p.stderr[-3000:])
        self.assertGreaterEqual(took, 2 * LEASE - 0.5, "--once gave up after %.1f s" % took)
        self.assertLessEqual(took, 2 * LEASE + 4, "--once took %.1f s" % took)
        for ds in names:
            self.assertRegex(p.stderr, r"%s: not synced: held by instance once-d" % ds)
            self.assertEqual(harness.snapshot(self.pg, ds, schema), before[ds], "--once wrote into %s" % ds)
        self.assertEqual(self.leases(schema), epochs, "--once disturbed the daemon's leases")
        # the daemon dies: --once waits for its leases to expire and syncs
        self.append(wants, n=30)
        time.sleep(0.2)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        left = float(self.pg.scalar(
            "SELECT extract(epoch FROM max(expires_at) - clock_timestamp()) FROM %s WHERE unit LIKE 'ds:%%'"
            % tbl("druid_syncd_leases", schema)))
        t0 = time.time()
        p = harness.run_bin(["--once", "-c", path], timeout=60)
        took = time.time() - t0
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        self.assertGreaterEqual(took, left - 0.3, "--once did not wait for the expiry (%.2f s left)" % left)
        self.assertLessEqual(took, 2 * LEASE + 4)
        self.assertIn("held by instance once-d", p.stderr)
        for ds in names:
            self.assert_exact(schema, ds, wants[ds], p.stderr[-3000:])
        self.assertEqual(self.leases(schema), {}, "--once left its leases held")
        print("\n  --once: gave up after %.1f s next to a live holder; synced %.1f s after the holder's kill"
              " (%.1f s of lease left)" % (2 * LEASE, took, left))

    def test_5_pause_resume_while_another_holds_it(self):
        schema = "inst_ops"
        wants = self.datasources("ops", 1, count=100)
        ds = "ops0"
        cfg = self.cfg(schema, [ds])
        d = self.start("ops-d", cfg)
        self.wait_exact(schema, wants, 30, "first sync")
        self.assertEqual(self.leases(schema)[ds][0], "ops-d")
        path = os.path.join(self.env.tmp, "ops.json")
        with open(path, "w") as f:
            json.dump(dict(cfg, instance_name="operator"), f)
        p = harness.run_bin(["pause", "-c", path, ds], timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("%s: paused" % ds, p.stdout)
        time.sleep(1.5)  # a cycle under way when the pause came ends
        n = len(wants[ds])
        self.append(wants, n=40)
        time.sleep(3.5)  # three cycle intervals
        self.assertEqual(int(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds, schema))), n,
                         "rows synced while paused\n" + d.log()[-3000:])
        text, js = self.status(path)
        self.assertTrue(js[ds]["paused"], js)
        p = harness.run_bin(["resume", "-c", path, ds], timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("%s: resumed" % ds, p.stdout)
        self.wait_exact(schema, wants, 4 * LEASE, "rows after resume")
        self.assertTrue(d.alive())
        self.assertEqual(d.stop(), 0, d.log()[-3000:])
        self.assert_exact(schema, ds, wants[ds])

    def test_6_reload_keeps_the_instance_name(self):
        """The leases are held under the name the instance started with: a reload that renames
        it says so and goes on under the old name (its units are not orphaned)."""
        schema = "inst_rename"
        wants = self.datasources("ren", 1, count=50)
        ds = "ren0"
        d = self.start("ren-a", self.cfg(schema, [ds]))
        self.wait_exact(schema, wants, 30, "first sync")
        self.assertEqual(self.leases(schema)[ds][0], "ren-a")
        with open(d.path) as f:
            cfg = json.load(f)
        with open(d.path, "w") as f:
            json.dump(dict(cfg, instance_name="ren-b"), f)
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "instance_name" in d.log() and "need a restart" in d.log(), timeout=10,
                 what="the reload's warning")
        self.append(wants, n=20)
        self.wait_exact(schema, wants, 4 * LEASE, "rows after the reload")
        time.sleep(LEASE)  # renewals go on under the old name
        self.assertEqual(self.leases(schema)[ds][0], "ren-a")
        self.assertEqual(d.stop(), 0, d.log()[-3000:])


if __name__ == "__main__":
    harness.main()
