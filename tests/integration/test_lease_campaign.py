"""Issue 10 point 6: a kill campaign with three instances on one destination. During the first
sync of three datasources (dozens of slices each, every slice slowed down by the Druid test
server so that a kill lands mid-slice), with appends, late rows and identical rows arriving,
one instance is SIGKILLed, another frozen with SIGSTOP past its lease and resumed, the third
stopped cleanly and started again. Then:
  - every table holds exactly Druid's rows (identical rows included), no id twice;
  - no commit came from an instance that had lost its lease: every committed slice's log line
    names (instance, lease epoch), each (datasource, epoch) token was used by one instance only,
    and the frozen instance committed nothing with the epoch it held before the freeze;
  - the frozen instance's commits after the resume were refused by the fence, or it had already
    learned it lost the lease (its log says which).
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
from harness import BIN, EnvTestCase, iso_ms, ms_iso, state_row, table_exists, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2023-03-01T00:00:00.000Z")
HOUR = 3600 * 1000
NAMES = ["camp_0", "camp_1", "camp_2"]
LEASE = 3.0
# "(instance NAME, lease epoch E)" or, for a first load read by chunks, "(instance NAME, lease
# epoch E, chunk:DS:LO epoch C)" and for a helper "(instance NAME, helping, chunk:DS:LO epoch C)"
COMMIT_RE = re.compile(r"(\S+): slice \d+ committed: .* \(instance (\S+), (?:lease epoch (\d+)|helping)"
                       r"(?:, (chunk:\S+) epoch (\d+)(?: and \d+ more)?)?\)")
HOLDS_RE = re.compile(r"(\S+): instance (\S+) holds its lease \(epoch (\d+)")
CHUNK_HOLDS_RE = re.compile(r"(\S+): instance (\S+) holds chunk lease (\S+) \(epoch (\d+)")


def rows_for(i, hours=24, per_hour=40, start_k=0):
    """per_hour rows in each hour; every 10th row has an identical twin (duplicates kept)."""
    out = []
    k = start_k
    for h in range(hours):
        for j in range(per_hour):
            r = {"__time": ms_iso(BASE + i * 86400 * 1000 + h * HOUR + j * 60000), "k": k, "v": "r%d" % k}
            out.append(r)
            if k % 10 == 0:
                out.append(dict(r))
            k += 1
    return out


class Instance:
    def __init__(self, tmp, name, cfg):
        self.name = name
        self.path = os.path.join(tmp, "camp-%s.json" % name)
        with open(self.path, "w") as f:
            json.dump(dict(cfg, instance_name=name), f)
        self.logs = []
        self.proc = None

    def start(self):
        log = tempfile.NamedTemporaryFile(prefix="dsync-camp-%s-" % self.name, suffix=".log", delete=False)
        self.logs.append(log.name)
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen([BIN, "-c", self.path], stdout=subprocess.DEVNULL, stderr=log, env=e)

    def text(self):
        out = []
        for p in self.logs:
            with open(p, encoding="utf-8", errors="replace") as f:
                out.append(f.read())
        return "\n".join(out)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


class LeaseCampaignTest(EnvTestCase):

    def setUp(self):
        self.insts = []

    def tearDown(self):
        for i in self.insts:
            i.kill()

    def owners(self):
        if not table_exists(self.pg, "druid_syncd_leases"):
            return {}
        return {ds: (owner, int(ep)) for ds, owner, ep in self.pg.psql(
            "SELECT datasource, owner, epoch FROM druid.\"druid_syncd_leases\" WHERE unit LIKE 'ds:%'"
            " AND owner IS NOT NULL AND expires_at > clock_timestamp()")}

    def got(self, ds):
        return collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT %s, k::text, v FROM %s WHERE NOT _druid_deleted" % (harness.pg_iso("__time"), tbl(ds))))

    def exact(self, ds, want):
        return (table_exists(self.pg, ds)
                and self.got(ds) == collections.Counter((r["__time"], str(r["k"]), r["v"]) for r in want)
                and self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)) == str(len(want)))

    def diagnosis(self, want):
        """Per datasource and hour: rows wanted, rows stored, the ledger's row for it."""
        out = []
        for ds in NAMES:
            if not table_exists(self.pg, ds):
                out.append("%s: no table" % ds)
                continue
            have = dict(self.pg.psql("SELECT (extract(epoch FROM date_trunc('hour', __time)) * 1000)::bigint::text,"
                                     " count(*)::text FROM %s GROUP BY 1" % tbl(ds)))
            led = {r[0]: r[1:] for r in self.pg.psql(
                "SELECT start_ms::text, state, stored_rows::text FROM druid.druid_syncd_chunks"
                " WHERE datasource = %s" % harness.sqlstr(ds))}
            wanted = collections.Counter(str(iso_ms(r["__time"]) // HOUR * HOUR) for r in want[ds])
            for h in sorted(set(wanted) | set(have) | set(led), key=int):
                if str(wanted.get(h, 0)) != have.get(h, "0"):
                    out.append("%s %s: want %d have %s ledger %r" % (ds, ms_iso(int(h)), wanted.get(h, 0),
                                                                    have.get(h, "0"), led.get(h)))
        return "\n".join(out)

    def logs(self):
        return "\n".join("--- %s\n%s" % (i.name, i.text()[-2500:]) for i in self.insts)

    def holder_mid_slice(self, exclude=()):
        """An instance that holds a datasource whose first sync is still under way."""
        def pick():
            for ds, (owner, _) in self.owners().items():
                if owner in exclude:
                    continue
                inst = next((i for i in self.insts if i.name == owner and i.alive()), None)
                if inst and self.pg.scalar("SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle'"
                                           " AND query LIKE 'COPY%%'") != "0":
                    return inst, ds
            return None
        got = wait_for(pick, timeout=30, interval=0.05, what="an instance mid-slice")
        return got

    def test_three_instances_kill_freeze_restart(self):
        want = {ds: rows_for(i) for i, ds in enumerate(NAMES)}
        for ds in NAMES:
            self.sim.datasource(ds, COLS, want[ds], granularity="HOUR")
        # every slice read stalls 0.8 s after its first rows (its COPY open): the first sync
        # lasts long enough for the campaign, and a kill lands mid-slice
        self.sim.fault("delay", match='ORDER BY "__time"', times=100000, after_rows=10, delay_seconds=0.8)
        cfg = self.env.config(datasources=NAMES, batch_size=40, max_concurrent_queries=2, postgres_writers=2,
                              lookback_seconds=0, sync_interval_seconds=0.5, lease_seconds=LEASE,
                              postgres_timeout_seconds=2, log_level="debug")
        for n in ("c1", "c2", "c3"):
            self.insts.append(Instance(self.env.tmp, n, cfg))
        for i in self.insts:
            i.start()
        try:
            wait_for(lambda: len(set(o for o, _ in self.owners().values())) == 3, timeout=30,
                     what="each of the three instances holding a datasource")
        except AssertionError:
            raise AssertionError("not one datasource each: %r\n%s" % (self.owners(), self.logs()))

        # 1. SIGKILL an instance mid-slice
        victim, vds = self.holder_mid_slice()
        victim.proc.kill()
        victim.proc.wait()
        # its lease, as PostgreSQL has it after the kill (renewed every lease_seconds / 3)
        expired_at = float(self.pg.scalar(
            "SELECT extract(epoch FROM expires_at) FROM druid.\"druid_syncd_leases\" WHERE unit = %s"
            % harness.sqlstr("ds:" + vds)))
        for i, ds in enumerate(NAMES):  # appends past the end
            add = [{"__time": ms_iso(BASE + i * 86400 * 1000 + 24 * HOUR + j * 60000), "k": 90000 + j,
                    "v": "a%d" % j} for j in range(30)]
            self.sim.append(ds, add)
            want[ds] += add
        wait_for(lambda: self.owners().get(vds, (victim.name,))[0] != victim.name, timeout=4 * LEASE + 10,
                 what="the killed instance's datasource taken over")
        acquired = float(self.pg.scalar(
            "SELECT extract(epoch FROM acquired_at) FROM druid.\"druid_syncd_leases\" WHERE unit = %s"
            % harness.sqlstr("ds:" + vds)))
        self.assertGreaterEqual(acquired, expired_at, "taken over before the killed instance's lease expired")

        # 2. SIGSTOP another instance mid-slice, past its lease, then SIGCONT
        frozen, fds = self.holder_mid_slice(exclude=(victim.name,))
        old_epoch = self.owners()[fds][1]
        frozen.proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: self.owners().get(fds, (frozen.name, 0))[0] not in (frozen.name,), timeout=4 * LEASE + 10,
                 what="the frozen instance's datasource taken over")
        for i, ds in enumerate(NAMES):  # late rows into synced hours, while it is frozen
            add = [{"__time": ms_iso(BASE + i * 86400 * 1000 + 2 * HOUR + j * 60000 + 7), "k": 80000 + j,
                    "v": "late%d" % j} for j in range(5)]
            self.sim.late_append(ds, add)
            want[ds] += add
        resume_offset = len(frozen.text())
        frozen.proc.send_signal(signal.SIGCONT)

        # 3. stop the third cleanly, start it again
        third = next(i for i in self.insts if i not in (victim, frozen))
        held_before = [ds for ds, (o, _) in self.owners().items() if o == third.name]
        third.proc.send_signal(signal.SIGTERM)
        self.assertEqual(third.proc.wait(30), 0, third.text()[-3000:])
        still = [ds for ds, (o, _) in self.owners().items() if o == third.name]
        self.assertEqual(still, [], "a clean stop left leases behind (held before: %r)" % held_before)
        third.start()
        victim.start()  # the killed one comes back as a new process under its name

        self.sim.clear_faults()
        for i, ds in enumerate(NAMES):
            add = [{"__time": ms_iso(BASE + i * 86400 * 1000 + 25 * HOUR + j * 60000), "k": 70000 + j,
                    "v": "b%d" % j} for j in range(20)]
            self.sim.append(ds, add)
            want[ds] += add
        try:
            wait_for(lambda: all(self.exact(ds, want[ds]) for ds in NAMES), timeout=90, interval=0.5,
                     what="every table exact")
        except AssertionError:
            raise AssertionError("not exact: %r\n%s\n%s" % (
                {ds: (self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), len(want[ds])) for ds in NAMES},
                self.diagnosis(want), self.logs()))
        for ds in NAMES:
            self.assertEqual(self.pg.scalar("SELECT count(*) - count(DISTINCT _druid_id) FROM %s" % tbl(ds)), "0",
                             "%s holds an id twice" % ds)

        # no commit from an instance that had lost its lease
        tokens = collections.defaultdict(set)  # (datasource, epoch) -> instances that committed with it
        taken = collections.defaultdict(set)   # (datasource, epoch) -> instances that took it
        for inst in self.insts:
            text = inst.text()
            for ds, who, ep, unit, cep in COMMIT_RE.findall(text):
                self.assertEqual(who, inst.name)
                if ep:
                    tokens[(ds, int(ep))].add(who)
                if unit:
                    tokens[(unit, int(cep))].add(who)
            for ds, who, ep in HOLDS_RE.findall(text):
                taken[(ds, int(ep))].add(who)
            for ds, who, unit, cep in CHUNK_HOLDS_RE.findall(text):
                taken[(unit, int(cep))].add(who)
        self.assertTrue(tokens, "no commit lines (log_level debug)")
        for tok, who in tokens.items():
            self.assertEqual(len(who), 1, "token %r used by %r" % (tok, who))
            self.assertEqual(who, taken[tok], "token %r committed by %r but taken by %r" % (tok, who, taken[tok]))
        after = frozen.text()[resume_offset:]
        late = [(ds, ep) for ds, who, ep, unit, cep in COMMIT_RE.findall(after)
                if ds == fds and ep and int(ep) <= old_epoch]
        self.assertEqual(late, [], "the frozen instance committed with its old epoch after the resume")
        self.assertTrue("rolled back by the fence" in after or "lost its lease" in after,
                        "the resumed instance never noticed it had lost %s\n%s" % (fds, after[-3000:]))
        for i in self.insts:
            self.assertTrue(i.alive(), "%s exited\n%s" % (i.name, i.text()[-3000:]))


if __name__ == "__main__":
    harness.main()
