"""Issue 10, the chunks of ONE large datasource's first load read by several instances (chunk
units, `chunk:DS:START_MS` rows in `<schema>.druid_syncd_leases`), against the real binary. One
datasource of many daily chunks, every slice slowed down by the Druid test server (a stall after
its first rows, its COPY open) so that the first load lasts long enough for every instance to
take part. What an operator checks in the logs, the lease table, the state row and the table:

1. the holder first, two more a moment later: all three commit slices of it (the helpers' commit
   lines say "helping"), the table ends exact (identical rows included, no id twice), the state
   row leaves its first load, the primary key and range index are built once (one "first load
   done" line in all the logs), no chunk unit is left held, and every (unit, epoch) token was
   committed by exactly the instance whose log says it took it; the state row counts every slice
   and row once, and its cursor (what `status` shows) is the newest row, as after a load by one
   instance alone (a subtest; it failed before ca4d988); meanwhile `status` names the holder
   (held_by) and two chunk readers or more (chunks_read_by).
2. a helper SIGKILLed while it holds a chunk: the chunk is taken over only after its lease
   expired, with a new epoch (the taker's log says "dirty" when the dead one had committed part
   of it); the table ends exact.
3. a helper SIGSTOPped while it holds a chunk, past its lease, then SIGCONTed: after the resume
   it commits nothing with the chunk tokens it held before the freeze; the table ends exact.
4. a helper stopped cleanly (SIGTERM) while it holds chunks gives them back at once (owner
   NULL in the lease table as soon as it exited); the load ends exact.
5. the kill campaign of issue 10 point 6 on one datasource (36 daily chunks, holder + two
   helpers): one instance (whichever is seen holding a chunk with its COPY open: the holder
   or a helper) SIGKILLed, then another SIGSTOPped while it holds a chunk mid-COPY until every
   unit it held expired, then SIGCONTed, then the third stopped cleanly (exit 0, owns no unit
   after) and started again under its name; meanwhile appends (new days after the end) and
   late rows (with an identical twin) into a chunk already read. The table ends exact, no id
   twice, initial_load false, the index built once; every (unit, epoch) token, chunk units and
   the datasource's own, was committed with only by the process whose log says it took it (a
   restarted process counts apart); the frozen one committed nothing after its resume with a
   token it held before the freeze.

lease_seconds 3, sync_interval_seconds 1, max_concurrent_queries 2, log_level debug.
"""
import collections
import json
import os
import random
import re
import signal
import subprocess
import tempfile
import threading
import time

import harness
from harness import BIN, EnvTestCase, iso_ms, ms_iso, sqlstr, state_row, table_exists, tbl, wait_for

LEASE = 3.0
COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
DAY0 = iso_ms("2024-01-01T00:00:00.000Z")
DAY = 86400 * 1000
# the Druid test server stalls every slice read (its ORDER BY) after a few rows: the COPY of
# the slice is open, and a slice takes about STALL s
SLICE_MATCH = 'ORDER BY "__time"'
STALL = 0.5

# "(instance NAME, lease epoch E, chunk:DS:LO epoch C)" for the holder, "(instance NAME, helping,
# chunk:DS:LO epoch C)" for a helper; "... epoch C and K more)" when a slice reads several chunks
COMMIT_RE = re.compile(r"(\S+): slice (\d+) committed: (\d+) rows, .* \(instance (\S+), (?:lease epoch (\d+)|(helping))"
                       r"(?:, (chunk:\S+) epoch (\d+)(?: and (\d+) more)?)?\)")
CHUNK_HOLDS_RE = re.compile(r"(\S+): instance (\S+) holds chunk lease (\S+) \(epoch (\d+)([^)]*)\)")
HOLDS_RE = re.compile(r"(\S+): instance (\S+) holds its lease \(epoch (\d+)")
HELPS = "held by instance %s and in its first load: this instance helps with its chunks"
HELPED_RE = re.compile(r"(\S+): helped instance (\S+) with its first load for ([\d.]+) s: (\d+) slices, (\d+) rows")
DONE = "first load done: primary key and range index built"


def day_rows(days, per_day=80):
    """per_day rows spread over each of `days` days (17 minutes apart: a chunk is cut into
    several slices); every 10th row has an identical twin (Druid keeps duplicates)."""
    out = []
    k = 0
    for d in range(days):
        for j in range(per_day):
            r = {"__time": ms_iso(DAY0 + d * DAY + j * 17 * 60000 + 3), "k": k, "v": "r%d" % k}
            out.append(r)
            if k % 10 == 0:
                out.append(dict(r))
            k += 1
    return out


class Inst:
    """One druid-syncd daemon with its own config file (instance_name = name); stderr to a file."""

    def __init__(self, tmp, name, cfg, tag=None):
        self.name = name
        self.tag = tag or name  # a process started again under its name: "name#2"
        self.path = os.path.join(tmp, "cs-%s.json" % name)
        with open(self.path, "w") as f:
            json.dump(dict(cfg, instance_name=name), f)
        self.logf = tempfile.NamedTemporaryFile(prefix="dsync-cs-%s-" % name, suffix=".log", dir=tmp,
                                                delete=False)
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen([BIN, "-c", self.path], stdout=subprocess.DEVNULL, stderr=self.logf, env=e)
        self.frozen = False

    def log(self):
        with open(self.logf.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=30):
        """SIGTERM; returns the exit code."""
        if self.frozen:
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
        self.frozen = True

    def cont(self):
        self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def kill(self):
        if self.proc.poll() is None:
            if self.frozen:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


class ChunkShareTest(EnvTestCase):

    def setUp(self):
        self.insts = []
        self.sim.clear_faults()

    def tearDown(self):
        for i in self.insts:
            i.kill()
        self.sim.clear_faults()

    # ---- helpers ----

    def cfg(self, schema, ds, **kw):
        c = {
            "druid_host": "127.0.0.1",
            "druid_port": self.sim.port,
            "postgres": self.pg.conninfo(),
            "destination_schema": schema,
            "datasources": [ds],
            "batch_size": 25,
            "max_concurrent_queries": 2,
            "postgres_writers": 2,
            "retry_initial_seconds": 0.05,
            "retry_max_seconds": 0.5,
            "sync_interval_seconds": 1,
            "lookback_seconds": 0,
            "lease_seconds": LEASE,
            "postgres_timeout_seconds": 2,
            "log_level": "debug",
        }
        c.update(kw)
        return c

    def start(self, name, cfg):
        i = Inst(self.env.tmp, name, cfg)
        self.insts.append(i)
        return i

    def load(self, ds, days, per_day=80):
        """The datasource, and every slice read of it slowed down; returns the rows served."""
        want = day_rows(days, per_day)
        self.sim.datasource(ds, COLS, want, granularity="DAY")
        self.sim.fault("delay", match=SLICE_MATCH, times=1000000, after_rows=5, delay_seconds=STALL)
        return want

    def start_shared(self, schema, ds, names, **kw):
        """names[0] first (it takes the datasource's unit), the others once it holds it; returns
        the instances once every helper has said it helps."""
        cfg = self.cfg(schema, ds, **kw)
        holder = self.start(names[0], cfg)
        wait_for(lambda: "%s: instance %s holds its lease" % (ds, names[0]) in holder.log(), timeout=20,
                 interval=0.05, what="%s holding %s" % (names[0], ds))
        helpers = [self.start(n, cfg) for n in names[1:]]
        for h in helpers:
            try:
                wait_for(lambda: HELPS % names[0] in h.log(), timeout=6 * LEASE, interval=0.1,
                         what="%s helping" % h.name)
            except AssertionError:
                raise AssertionError("%s never helped with %s's first load of %s\n%s"
                                     % (h.name, names[0], ds, self.logs()))
        return holder, helpers

    def logs(self, insts=None):
        keep = re.compile(r"lease|instance|helped|first load|warning|error|fatal")
        out = []
        for i in (insts or self.insts):
            lines = [ln for ln in i.log().splitlines() if keep.search(ln) and "NOTICE" not in ln]
            out.append("--- %s (rc %s)\n%s" % (i.name, i.proc.poll(), "\n".join(lines[-50:])))
        return "\n".join(out)

    def chunk_rows(self, schema, where="true"):
        """Chunk units as dicts (owner, epoch, dirty, live: unexpired by the database's clock)."""
        if not table_exists(self.pg, "druid_syncd_leases", schema):
            return []
        out = []
        for u, o, e, d, live, x, a in self.pg.psql(
                "SELECT unit, owner, epoch, dirty, owner IS NOT NULL AND expires_at > clock_timestamp(),"
                " extract(epoch FROM expires_at)::text, extract(epoch FROM acquired_at)::text"
                " FROM %s WHERE unit LIKE 'chunk:%%' AND (%s) ORDER BY unit"
                % (tbl("druid_syncd_leases", schema), where)):
            out.append({"unit": u, "owner": o, "epoch": int(e), "dirty": d == "t", "live": live == "t",
                        "expires": float(x) if x else None, "acquired": float(a) if a else None})
        return out

    def live_chunks(self, schema, owner=None):
        return [r for r in self.chunk_rows(schema) if r["live"] and (owner is None or r["owner"] == owner)]

    def got(self, schema, ds):
        return collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT %s, k::text, v FROM %s WHERE NOT _druid_deleted" % (harness.pg_iso("__time"), tbl(ds, schema))))

    @staticmethod
    def counter(want):
        return collections.Counter((r["__time"], str(r["k"]), r["v"]) for r in want)

    def loaded(self, schema, ds):
        """The first load is over: the state row says so."""
        st = state_row(self.pg, ds, schema) if table_exists(self.pg, "druid_syncd_state", schema) else None
        return st is not None and st.get("initial_load") is False

    def diagnosis(self, schema, ds, want):
        """Per day: rows wanted and stored (for failure messages)."""
        if not table_exists(self.pg, ds, schema):
            return "no table"
        have = dict(self.pg.psql("SELECT (extract(epoch FROM date_trunc('day', __time)) * 1000)::bigint::text,"
                                 " count(*)::text FROM %s GROUP BY 1" % tbl(ds, schema)))
        wanted = collections.Counter(str(iso_ms(r["__time"]) // DAY * DAY) for r in want)
        out = []
        for d in sorted(set(wanted) | set(have), key=int):
            if str(wanted.get(d, 0)) != have.get(d, "0"):
                out.append("%s: want %d have %s" % (ms_iso(int(d)), wanted.get(d, 0), have.get(d, "0")))
        return "\n".join(out) or "(every day has its count)"

    def wait_loaded(self, schema, ds, want, timeout, what):
        """Waits until the state row leaves its first load and the table is exact."""
        def ok():
            return (self.loaded(schema, ds)
                    and self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds, schema)) == str(len(want))
                    and self.got(schema, ds) == self.counter(want))
        t0 = time.time()
        try:
            wait_for(ok, timeout=timeout, interval=0.25, what=what)
        except AssertionError:
            raise AssertionError("%s: not done within %.0f s: state %r, rows %s of %d\n%s\n%s"
                                 % (what, timeout, state_row(self.pg, ds, schema),
                                    self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds, schema))
                                    if table_exists(self.pg, ds, schema) else None,
                                    len(want), self.diagnosis(schema, ds, want), self.logs()))
        return time.time() - t0

    def assert_exact(self, schema, ds, want):
        self.assertEqual(self.got(schema, ds), self.counter(want),
                         "%s differs from what Druid served\n%s" % (ds, self.diagnosis(schema, ds, want)))
        total, ids = self.pg.psql("SELECT count(*), count(DISTINCT _druid_id) FROM %s" % tbl(ds, schema))[0]
        self.assertEqual(int(total), len(want), "%s holds rows flagged deleted or extra" % ds)
        self.assertEqual(int(ids), int(total), "an id is twice in %s" % ds)
        self.assertTrue(self.loaded(schema, ds), state_row(self.pg, ds, schema))

    def commits(self, inst, ds, text=None):
        """Commit lines of ds in inst's log: dicts (slice, rows, who, epoch, helping, unit, cepoch)."""
        out = []
        for m in COMMIT_RE.finditer(inst.log() if text is None else text):
            if m.group(1) != ds:
                continue
            out.append({"slice": int(m.group(2)), "rows": int(m.group(3)), "who": m.group(4),
                        "epoch": m.group(5) and int(m.group(5)), "helping": bool(m.group(6)),
                        "unit": m.group(7), "cepoch": m.group(8) and int(m.group(8))})
        return out

    def assert_tokens(self, ds):
        """Every (unit, epoch) a commit was fenced with (its chunk units, and the datasource's
        own unit for the holder) was taken by exactly the process that committed with it (its
        own log says it took it), and by nobody else. Per process: one started again under its
        name must not commit with a token its previous run took."""
        used = collections.defaultdict(set)
        taken = collections.defaultdict(set)
        for inst in self.insts:
            text = inst.log()
            for c in self.commits(inst, ds, text):
                self.assertEqual(c["who"], inst.name, "a commit line of %s names %s" % (inst.name, c["who"]))
                if c["unit"]:
                    used[(c["unit"], c["cepoch"])].add(inst.tag)
                if c["epoch"] is not None:
                    used[("ds:" + ds, c["epoch"])].add(inst.tag)
            for d, who, unit, ep, _ in CHUNK_HOLDS_RE.findall(text):
                if d == ds:
                    self.assertEqual(who, inst.name)
                    taken[(unit, int(ep))].add(inst.tag)
            for d, who, ep in HOLDS_RE.findall(text):
                if d == ds:
                    self.assertEqual(who, inst.name)
                    taken[("ds:" + ds, int(ep))].add(inst.tag)
        self.assertTrue(any(u.startswith("chunk:") for u, _ in used),
                        "no commit fenced by a chunk unit (log_level debug)")
        for tok, who in taken.items():
            self.assertEqual(len(who), 1, "token %r taken by %r" % (tok, who))
        for tok, who in used.items():
            self.assertEqual(len(who), 1, "token %r committed with by %r" % (tok, who))
            self.assertEqual(who, taken.get(tok, set()),
                             "token %r committed with by %r, taken by %r" % (tok, who, taken.get(tok)))
        return used

    def assert_no_chunk_held(self, schema):
        try:
            wait_for(lambda: not self.live_chunks(schema), timeout=2 * LEASE, interval=0.2,
                     what="no chunk unit held")
        except AssertionError:
            raise AssertionError("chunk units still held after the first load: %r\n%s"
                                 % (self.live_chunks(schema), self.logs()))

    def assert_index_once(self, ds):
        n = {i.name: i.log().count("%s: %s" % (ds, DONE)) for i in self.insts}
        self.assertEqual(sum(n.values()), 1, "'first load done' lines per instance: %r" % n)
        return [k for k, v in n.items() if v][0]

    def held_chunk(self, schema, owner, timeout=20, dirty=None):
        """Waits for a chunk unit held alive by owner (and dirty, when asked): its row."""
        def pick():
            rs = [r for r in self.live_chunks(schema, owner) if dirty is None or r["dirty"] == dirty]
            return rs[0] if rs else None
        return wait_for(pick, timeout=timeout, interval=0.03, what="a chunk unit held by %s" % owner)

    # ---- tests ----

    def test_1_three_instances_share_one_first_load(self):
        schema, ds = "cs_three", "big"
        want = self.load(ds, 40)
        t0 = time.time()
        holder, helpers = self.start_shared(schema, ds, ["th-a", "th-b", "th-c"])

        # what an operator sees meanwhile: who holds the datasource, who reads how many chunks
        def sharing():
            p = harness.run_bin(["status", "--json", "-c", holder.path], timeout=60)
            e = next((e for e in json.loads(p.stdout or "[]") if e["datasource"] == ds), {})
            by = dict(x.rsplit(":", 1) for x in (e.get("chunks_read_by") or "").split(",") if x)
            return e if e.get("held_by") == holder.name and len(by) >= 2 else None
        seen = wait_for(sharing, timeout=60, interval=0.3, what="status naming two chunk readers or more")
        self.assertTrue(all(int(n) >= 1 for n in
                            (x.rsplit(":", 1)[1] for x in seen["chunks_read_by"].split(","))), seen)
        plain = harness.run_bin(["status", "-c", holder.path], timeout=60).stdout
        self.assertRegex(plain, r"%s: .* held_by=%s( chunks_read_by=\S+)? " % (ds, holder.name))
        self.wait_loaded(schema, ds, want, 120, "the shared first load")
        took = time.time() - t0
        self.assert_exact(schema, ds, want)
        self.assertEqual(self.assert_index_once(ds), holder.name, "the index was built by a helper")
        self.assert_no_chunk_held(schema)
        per = {}
        for i in self.insts:
            cs = self.commits(i, ds)
            per[i.name] = len(cs)
            self.assertGreater(len(cs), 0, "%s committed no slice of %s\n%s" % (i.name, ds, self.logs()))
            if i is holder:
                self.assertTrue(all(not c["helping"] and c["epoch"] is not None and c["unit"] for c in cs),
                                "the holder's commit lines must name its lease epoch and chunk: %r" % cs[:3])
            else:
                self.assertTrue(all(c["helping"] and c["unit"] for c in cs),
                                "a helper's commit lines must say helping and name the chunk: %r" % cs[:3])
        rows = {i.name: sum(c["rows"] for c in self.commits(i, ds)) for i in self.insts}
        self.assertEqual(sum(rows.values()), len(want), "rows committed %r, %d served" % (rows, len(want)))
        self.assert_tokens(ds)
        # the state row, as `status` shows it: every slice and row counted once, whoever committed
        st = state_row(self.pg, ds, schema)
        self.assertEqual(st["rows_synced"], len(want), st)
        self.assertEqual(st["slices_committed"], sum(per.values()), st)
        newest = max(r["__time"] for r in want)
        def newest_read(inst):
            los = [int(c["unit"].split(":")[-1]) for c in self.commits(inst, ds) if c["unit"]]
            return ms_iso(max(los))[:10] if los else None

        with self.subTest("the cursor after a shared first load"):
            # one instance alone ends its first load with the cursor at the newest row; with
            # helpers the holder must count the chunks they read too
            def cursor():
                p = harness.run_bin(["status", "--json", "-c", holder.path], timeout=60)
                self.assertEqual(p.returncode, 0, p.stderr)
                return next(e for e in json.loads(p.stdout) if e["datasource"] == ds).get("cursor")
            try:
                wait_for(lambda: cursor() == newest, timeout=2 * LEASE, interval=0.5, what="the cursor")
            except AssertionError:
                raise AssertionError(
                    "after the first load read by three instances, `status` shows cursor %s (state row"
                    " cursor %s) though every row up to %s is committed (one instance alone ends at %s);"
                    " newest chunk read by the holder: %s, by the helpers: %s."
                    % (cursor(), st["cursor"], newest, newest, newest_read(holder),
                       [newest_read(h) for h in helpers])) from None
        for i in self.insts:
            self.assertTrue(i.alive(), self.logs())
        for i in helpers:  # while the holder holds the datasource, a helper ends no cycle of it
            end = re.search(r"%s: cycle (done|interrupted|failed).*" % ds, i.log())
            self.assertIsNone(end, "helper %s ended a cycle of %s: %s" % (i.name, ds, end and end.group(0)))
        for i in helpers + [holder]:  # the helpers first: the holder's unit is not handed over
            self.assertEqual(i.stop(), 0, i.log()[-3000:])
        for i in helpers:  # what each helper says it did (its help cycles ended by now)
            helped = [m for m in HELPED_RE.findall(i.log()) if m[0] == ds]
            self.assertTrue(helped, "%s never logged what it helped with" % i.name)
            self.assertTrue(all(m[1] == holder.name for m in helped), helped)
            self.assertEqual(sum(int(m[3]) for m in helped), per[i.name],
                             "%s: the slices of its 'helped' lines differ from its commit lines" % i.name)
            self.assertEqual(sum(int(m[4]) for m in helped), rows[i.name],
                             "%s: the rows of its 'helped' lines differ from its commit lines" % i.name)
        print("\n  three instances: first load of %d rows in %.1f s; slices per instance %r, rows %r"
              % (len(want), took, per, rows))

    def helper_mid_chunk(self, schema, helpers, timeout=20):
        """Waits for a helper holding a chunk it has read part of (dirty: its slices committed
        some of the chunk, whose ledger row is not written yet): (helper, its row)."""
        def pick():
            by = {h.name: h for h in helpers if h.alive()}
            for r in self.live_chunks(schema):
                if r["owner"] in by and r["dirty"]:
                    return by[r["owner"]], r
            return None
        try:
            return wait_for(pick, timeout=timeout, interval=0.02, what="a helper in the middle of a chunk")
        except AssertionError:
            raise AssertionError("no helper seen holding a chunk it had read part of: %r\n%s"
                                 % (self.chunk_rows(schema), self.logs()))

    def unit_now(self, schema, unit):
        rs = self.chunk_rows(schema, "unit = %s" % sqlstr(unit))
        return rs[0] if rs else None

    def test_2_sigkill_a_helper_mid_chunk(self):
        schema, ds = "cs_kill", "bigk"
        want = self.load(ds, 30)
        holder, helpers = self.start_shared(schema, ds, ["kl-a", "kl-b", "kl-c"])
        victim, r = self.helper_mid_chunk(schema, helpers)
        victim.kill()
        t_kill = time.time()
        at_kill = self.unit_now(schema, r["unit"])
        self.assertEqual(at_kill["owner"], victim.name, "the unit changed hands before the kill: %r" % at_kill)
        left = at_kill["expires"] - float(self.pg.scalar("SELECT extract(epoch FROM clock_timestamp())"))
        rest = [i for i in self.insts if i is not victim]

        def taken():
            u = self.unit_now(schema, r["unit"])
            return u if u["owner"] not in (None, victim.name) and u["epoch"] > at_kill["epoch"] else None

        try:
            # taken when an instance's pass over the plan reaches the chunk again (the holder asks
            # again about chunks left to others once it has nothing else to start): up to the
            # rest of the load
            u = wait_for(taken, timeout=90, interval=0.05, what="the dead helper's chunk taken over")
        except AssertionError:
            raise AssertionError("%s (dirty, held by the killed %s) not taken over: %r\n%s"
                                 % (r["unit"], victim.name, self.unit_now(schema, r["unit"]), self.logs(rest)))
        took = time.time() - t_kill
        self.assertGreaterEqual(u["acquired"], at_kill["expires"],
                                "%s taken at %.3f, before the killed helper's lease expired at %.3f"
                                % (r["unit"], u["acquired"], at_kill["expires"]))
        taker = next(i for i in rest if i.name == u["owner"])
        takes = [m for m in CHUNK_HOLDS_RE.findall(taker.log()) if m[2] == r["unit"] and int(m[3]) == u["epoch"]]
        self.assertEqual(len(takes), 1, "%s's log does not say it took %s at epoch %d\n%s"
                         % (taker.name, r["unit"], u["epoch"], self.logs([taker])))
        if at_kill["dirty"]:
            self.assertIn("dirty: its range is emptied first", takes[0][4],
                          "%s took the dead helper's half-read %s without emptying it" % (taker.name, r["unit"]))
        else:  # its last slice and ledger row committed between the look and the kill
            self.assertIn("already read", takes[0][4], (at_kill, takes))
        self.wait_loaded(schema, ds, want, 90, "the first load after a helper's SIGKILL")
        self.assert_exact(schema, ds, want)
        self.assert_index_once(ds)
        self.assert_tokens(ds)
        self.assert_no_chunk_held(schema)
        for i in rest:
            self.assertTrue(i.alive(), self.logs())
            self.assertEqual(i.stop(), 0, i.log()[-3000:])
        print("\n  SIGKILL of %s mid-chunk: its lease had %.2f s left, %s (%s) taken over by %s after %.2f s"
              " (%.2f s after the expiry)" % (victim.name, left, r["unit"], "dirty" if at_kill["dirty"] else "clean",
                                             taker.name, took, u["acquired"] - at_kill["expires"]))

    def test_3_sigstop_a_helper_past_its_lease(self):
        schema, ds = "cs_stop", "bigs"
        want = self.load(ds, 30)
        holder, helpers = self.start_shared(schema, ds, ["st-a", "st-b", "st-c"])
        frozen, r = self.helper_mid_chunk(schema, helpers)
        frozen.freeze()
        t_freeze = time.time()
        held = self.live_chunks(schema, frozen.name)
        tokens = {(x["unit"], x["epoch"]) for x in held}
        self.assertIn((r["unit"], r["epoch"]), tokens, "the unit changed hands before the freeze")
        rest = [i for i in self.insts if i is not frozen]

        def taken():
            u = self.unit_now(schema, r["unit"])
            return u if u["owner"] not in (None, frozen.name) and u["epoch"] > r["epoch"] else None

        try:
            u = wait_for(taken, timeout=90, interval=0.05, what="the frozen helper's chunk taken over")
        except AssertionError:
            raise AssertionError("%s (held by the frozen %s) not taken over: %r\n%s"
                                 % (r["unit"], frozen.name, self.unit_now(schema, r["unit"]), self.logs(rest)))
        took = time.time() - t_freeze
        # every unit it held is past its lease; the others went on meanwhile
        wait_for(lambda: not self.live_chunks(schema, frozen.name), timeout=2 * LEASE, interval=0.1,
                 what="every unit of the frozen helper expired")
        time.sleep(1.0)
        mark = len(frozen.log())
        frozen.cont()
        self.wait_loaded(schema, ds, want, 90, "the first load after a helper's freeze and resume")
        self.assert_exact(schema, ds, want)
        time.sleep(LEASE)  # the resumed helper's slices in flight end one way or the other
        after = frozen.log()[mark:]
        stale = [c for c in self.commits(frozen, ds, after) if (c["unit"], c["cepoch"]) in tokens]
        self.assertEqual(stale, [], "the resumed %s committed with chunk tokens it held before its freeze"
                         "\n%s" % (frozen.name, after[-4000:]))
        noticed = re.search(r"%s: instance %s lost a chunk lease.*|%s: slice \d+ rolled back by the fence.*"
                            % (ds, frozen.name, ds), after)
        self.assertTrue(noticed, "the resumed helper never noticed it lost its chunks\n" + after[-4000:])
        self.assert_index_once(ds)
        self.assert_tokens(ds)
        self.assert_no_chunk_held(schema)
        for i in self.insts:
            self.assertTrue(i.alive(), self.logs())
            self.assertEqual(i.stop(), 0, i.log()[-3000:])
        self.assert_exact(schema, ds, want)
        print("\n  SIGSTOP of %s holding %d chunk units: %s taken over after %.2f s; after the resume:"
              " %d commits, none with its old tokens; it logged: %s"
              % (frozen.name, len(tokens), r["unit"], took, len(self.commits(frozen, ds, after)),
                 noticed.group(0)[:300]))

    def test_4_sigterm_a_helper_gives_its_chunks_back(self):
        schema, ds = "cs_term", "bigt"
        want = self.load(ds, 30)
        holder, helpers = self.start_shared(schema, ds, ["tm-a", "tm-b", "tm-c"])
        leaving, r = self.helper_mid_chunk(schema, helpers)
        held = self.live_chunks(schema, leaving.name)
        t0 = time.time()
        self.assertEqual(leaving.stop(), 0, leaving.log()[-3000:])
        exit_took = time.time() - t0
        mine = self.pg.psql("SELECT unit, epoch::text FROM %s WHERE owner = %s"
                            % (tbl("druid_syncd_leases", schema), sqlstr(leaving.name)))
        self.assertEqual(mine, [], "%s still owns units after its clean stop (held before: %r)\n%s"
                         % (leaving.name, [x["unit"] for x in held], leaving.log()[-3000:]))
        for x in held:
            u = self.unit_now(schema, x["unit"])
            if u["owner"] is not None:  # taken again since: before the old lease would have run out
                self.assertLess(u["acquired"], x["expires"] + 0.001, (x, u))
        rest = [i for i in self.insts if i is not leaving]
        self.wait_loaded(schema, ds, want, 90, "the first load after a helper's clean stop")
        self.assert_exact(schema, ds, want)
        self.assert_index_once(ds)
        self.assert_tokens(ds)
        self.assert_no_chunk_held(schema)
        for i in rest:
            self.assertTrue(i.alive(), self.logs())
            self.assertEqual(i.stop(), 0, i.log()[-3000:])
        print("\n  SIGTERM of %s holding %d chunk units: exited after %.2f s, every unit given back"
              % (leaving.name, len(held), exit_took))


    # ---- the campaign (issue 10 point 6) on one datasource ----

    def units_of(self, schema, owner):
        """Every unit owner holds alive by the database's clock (chunk and ds units): {unit: row}."""
        return {u: {"epoch": int(e), "expires": float(x)} for u, e, x in self.pg.psql(
            "SELECT unit, epoch::text, extract(epoch FROM expires_at)::text FROM %s WHERE owner = %s"
            " AND expires_at > clock_timestamp()" % (tbl("druid_syncd_leases", schema), sqlstr(owner)))}

    def copying(self, name):
        """Backends of instance name with a COPY running (its slice's COPY open)."""
        return int(self.pg.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state <> 'idle'"
            " AND query LIKE 'COPY%%'" % sqlstr("druid-syncd/" + name)))

    def mid_copy(self, schema, candidates, what, timeout=20):
        """Waits for one of candidates (alive) holding a chunk unit with a COPY open: (inst, units)."""
        def pick():
            for i in candidates:
                if not i.alive():
                    continue
                units = self.units_of(schema, i.name)
                if any(u.startswith("chunk:") for u in units) and self.copying(i.name):
                    return i, units
            return None
        try:
            return wait_for(pick, timeout=timeout, interval=0.02, what=what)
        except AssertionError:
            raise AssertionError("%s: none of %r seen holding a chunk with a COPY open: %r\n%s"
                                 % (what, [i.name for i in candidates], self.chunk_rows(schema),
                                    self.logs())) from None

    def test_5_campaign_on_one_datasource(self):
        schema, ds = "cs_camp", "bigc"
        days = 36
        want = self.load(ds, days)
        end = DAY0 + days * DAY

        # every change of a unit's (owner, epoch), as the lease table had it: takeover delays
        seen = {}
        changes = []
        stop_watch = threading.Event()

        def watch():
            while not stop_watch.is_set():
                try:
                    rows = self.pg.psql("SELECT unit, owner, epoch::text, extract(epoch FROM acquired_at)::text"
                                        " FROM %s WHERE owner IS NOT NULL" % tbl("druid_syncd_leases", schema))
                except Exception:  # the table is not there yet
                    rows = []
                for u, o, e, a in rows:
                    if seen.get(u) != (o, e):
                        seen[u] = (o, e)
                        changes.append((u, o, int(e), float(a)))
                stop_watch.wait(0.05)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        self.addCleanup(stop_watch.set)

        def taken_over(units, old_owner):
            """For each unit old_owner held: the first later (owner, epoch) by someone else,
            seconds after the old lease expired (None: not seen taken)."""
            out = {}
            for u, r in units.items():
                nxt = next((c for c in changes if c[0] == u and c[1] != old_owner and c[2] > r["epoch"]), None)
                out[u] = None if nxt is None else (nxt[1], nxt[3] - r["expires"])
            return out

        def db_now():
            return float(self.pg.scalar("SELECT extract(epoch FROM clock_timestamp())"))

        def late_rows(tag, n, k0):
            """n rows (one with an identical twin) inside the earliest chunk the ledger has read and
            nobody holds: its segments change, so it is read again."""
            led = [int(x[0]) for x in self.pg.psql(
                "SELECT start_ms::text FROM %s WHERE datasource = %s AND state = 'synced' ORDER BY start_ms"
                % (tbl("druid_syncd_chunks", schema), sqlstr(ds)))]
            busy = {int(r["unit"].rsplit(":", 1)[1]) for r in self.live_chunks(schema)}
            day = next((d for d in led if d not in busy and d < end), None)
            self.assertIsNotNone(day, "no chunk read yet to send late rows into: %r %r %r" % (led, self.pg.psql(
                "SELECT start_ms::text, state FROM %s" % tbl("druid_syncd_chunks", schema)), self.chunk_rows(schema)))
            add = [{"__time": ms_iso(day + j * 41 * 60000 + 11), "k": k0 + j, "v": "%s%d" % (tag, j)}
                   for j in range(n)]
            add.append(dict(add[0]))
            self.sim.late_append(ds, add)
            want.extend(add)
            return ms_iso(day)[:10]

        def append_days(tag, first_day, n_days, per_day, k0):
            add = [{"__time": ms_iso(end + (first_day + d) * DAY + j * 53 * 60000 + 5), "k": k0 + d * per_day + j,
                    "v": "%s%d" % (tag, d * per_day + j)} for d in range(n_days) for j in range(per_day)]
            add.append(dict(add[-1]))
            self.sim.append(ds, add)
            want.extend(add)

        t0 = time.time()
        holder, helpers = self.start_shared(schema, ds, ["cp-a", "cp-b", "cp-c"])
        every = [holder] + helpers
        # a few chunks read first (late rows go into one of them)
        wait_for(lambda: table_exists(self.pg, "druid_syncd_chunks", schema) and int(self.pg.scalar(
            "SELECT count(*) FROM %s WHERE datasource = %s AND state = 'synced'"
            % (tbl("druid_syncd_chunks", schema), sqlstr(ds)))) >= 3, timeout=20, interval=0.1,
            what="three chunks read")

        # 1. SIGKILL one holding a chunk with its COPY open (the holder or a helper)
        victim, v_units = self.mid_copy(schema, random.sample(every, 3), "an instance mid-slice to kill")
        victim.kill()
        t_kill = time.time()
        v_units = {u: r for u, r in (self.units_of(schema, victim.name) or v_units).items()
                   if not u.startswith("instance:")}
        append_days("a", 0, 2, 30, 900000)

        # 2. SIGSTOP another holding a chunk (COPY open), past its lease, then SIGCONT
        rest = [i for i in every if i is not victim]
        frozen, _ = self.mid_copy(schema, random.sample(rest, 2), "an instance mid-slice to freeze")
        frozen.freeze()
        t_freeze = time.time()
        f_units = {u: r for u, r in self.units_of(schema, frozen.name).items() if not u.startswith("instance:")}
        self.assertTrue(any(u.startswith("chunk:") for u in f_units), f_units)
        tokens = {(u, r["epoch"]) for u, r in f_units.items()}
        late1 = late_rows("late", 6, 800000)
        try:
            wait_for(lambda: not self.units_of(schema, frozen.name), timeout=4 * LEASE, interval=0.1,
                     what="every unit of the frozen instance expired")
        except AssertionError:
            raise AssertionError("units of the frozen %s still alive %.1f s after the freeze: %r"
                                 % (frozen.name, time.time() - t_freeze, self.units_of(schema, frozen.name)))
        time.sleep(0.5)
        frozen_for = time.time() - t_freeze
        mark = len(frozen.log())
        frozen.cont()

        # 3. stop the third cleanly (exit 0, gives back what it holds) and start it again
        third = next(i for i in every if i not in (victim, frozen))
        self.assertFalse(self.loaded(schema, ds), "the first load ended before the clean stop: the campaign"
                         " needs a larger datasource or a longer stall")
        t_held = self.units_of(schema, third.name)
        self.assertEqual(third.stop(), 0, third.log()[-3000:])
        left = self.pg.psql("SELECT unit FROM %s WHERE owner = %s" % (tbl("druid_syncd_leases", schema),
                                                                      sqlstr(third.name)))
        self.assertEqual(left, [], "%s still owns units after its clean stop (held: %r)" % (third.name, t_held))
        again = Inst(self.env.tmp, third.name, self.cfg(schema, ds), tag=third.name + "#2")
        self.insts.append(again)
        t_restart = time.time() - t0
        append_days("b", 2, 1, 25, 910000)
        late2 = late_rows("late2-", 4, 810000)
        in_load = not self.loaded(schema, ds)

        self.wait_loaded(schema, ds, want, 60, "the first load through the campaign, appends and late rows")
        took = time.time() - t0
        self.assert_exact(schema, ds, want)
        builder = self.assert_index_once(ds)
        used = self.assert_tokens(ds)
        self.assert_no_chunk_held(schema)

        # the frozen one committed nothing after its resume with a token it held before the freeze
        after = frozen.log()[mark:]
        fc = self.commits(frozen, ds, after)
        stale = [c for c in fc if (c["unit"], c["cepoch"]) in tokens
                 or (c["epoch"] is not None and ("ds:" + ds, c["epoch"]) in tokens)]
        self.assertEqual(stale, [], "the resumed %s committed with tokens it held before its freeze %r\n%s"
                         % (frozen.name, sorted(tokens), after[-4000:]))
        # what it logged first about it: a lost unit, a fence refusal, or (seen in about one run
        # of three) only the end of its help cycle, its slices in flight dropped without a word
        noticed = re.search(r"%s: (instance %s lost (a chunk lease|its lease)|slice \d+ rolled back by the fence"
                            r"|helped instance|cycle (done|interrupted|failed)).*" % (ds, frozen.name), after)
        self.assertTrue(noticed, "the resumed %s never ended the cycle it was in" % frozen.name)
        for i in self.insts:
            if i is victim or i is third:
                continue
            self.assertTrue(i.alive(), "%s exited\n%s" % (i.tag, self.logs()))
        for i in self.insts:
            if i.alive():
                self.assertEqual(i.stop(), 0, i.log()[-3000:])
        self.assert_exact(schema, ds, want)
        stop_watch.set()
        watcher.join(5)

        per = {i.tag: len(self.commits(i, ds)) for i in self.insts}
        kill_to = taken_over(v_units, victim.name)
        freeze_to = taken_over(f_units, frozen.name)

        def fmt(d):
            got = [v[1] for v in d.values() if v]
            return "%d/%d units taken over, %s s after expiry" % (
                len(got), len(d), "-" if not got else "%.2f..%.2f" % (min(got), max(got)))
        print("\n  campaign on %s (%d days, %d rows served): loaded in %.1f s; slices per process %r; "
              "SIGKILL %s%s (%s); SIGSTOP %s%s for %.1f s (%s; after resume %d commits, none stale; it logged: %s); "
              "SIGTERM %s, restarted at %.1f s (%s); late rows into %s and %s; index built by %s; "
              "%d tokens committed with"
              % (ds, days, len(want), took, per, victim.name, " (holder)" if "ds:" + ds in v_units else "",
                 fmt(kill_to), frozen.name, " (holder)" if "ds:" + ds in f_units else "", frozen_for,
                 fmt(freeze_to), len(fc), noticed.group(0)[:90], third.name, t_restart,
                 "during the load" if in_load else "after the load", late1, late2, builder, len(used)))

if __name__ == "__main__":
    harness.main()
