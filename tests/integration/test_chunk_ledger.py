"""The chunk ledger (issue 7): change detection from sys.segments, checked as a user would in
PostgreSQL (rows, xmin, _druid_deleted, druid_syncd_chunks, druid_syncd_state) and in Druid's
query log (which queries the daemon sent, and how many rows they scanned). Every test runs
with lookback_seconds 0: only the ledger can find a change behind the cursor.

Each kind of change Druid makes by time chunk: late rows into an old chunk, compaction (same
rows, new version, also HOUR -> DAY), reindex with changed values, dropped intervals (and
follow_drops false), a snapshot that drops most chunks at once, unavailable chunks, realtime
rows and handoff, a widened column then compaction; and a dropped or emptied destination
table, an interrupted cycle, and the counts fallback when sys.segments is unreadable."""
import collections
import json
import os
import signal
import subprocess
import threading
import time
import unittest
import urllib.request

import harness
from harness import EnvTestCase, iso_ms, ms_iso, qident, snapshot, state_row, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
DAY0 = iso_ms("2024-05-01T00:00:00.000Z")
HOUR = 3600 * 1000


def hour(h):
    return ms_iso(DAY0 + h * HOUR)


def mkrows(hours, per, k0=0, v="r"):
    """`per` rows in each hour of `hours` (inside it: a minute apart, or closer), k unique
    from k0."""
    out = []
    step = min(60000, HOUR // per)
    for h in hours:
        for i in range(per):
            out.append({"__time": ms_iso(DAY0 + h * HOUR + i * step + 7), "k": k0 + h * 1000 + i,
                        "v": "%s%d_%d" % (v, h, i)})
    return out


# ---- the sim's query log ----

def kind(q, ds):
    sql = q.get("sql") or ""
    if sql.strip().upper() == "SELECT 1":
        return "probe"  # the start-up probe of a run, not part of a cycle
    if "INFORMATION_SCHEMA" in sql:
        return "catalog"
    if "sys.segments" in sql:
        return "segments"
    if "COUNT(" in sql.upper():
        return "count"
    if ("FROM " + qident(ds)) in sql:
        return "data"
    return "other"


def of_kind(queries, ds, k):
    return [q for q in queries if kind(q, ds) == k]


def qrange(q):
    """(lo, hi) epoch ms of a data or count query's __time bounds (None: unbounded)."""
    sql = q.get("sql") or ""
    vals = [p.get("value") for p in q.get("parameters") or [] if p.get("type") == "TIMESTAMP"]
    lo = hi = None
    i = 0
    for tok in ('"__time" >= ?', '"__time" < ?'):
        if tok in sql:
            v = vals[i] if i < len(vals) else None
            i += 1
            if isinstance(v, str):
                v = iso_ms(v)
            if tok.endswith(">= ?"):
                lo = v
            else:
                hi = v
    return lo, hi


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        return r.read().decode("utf-8")


def metric(text, name, **labels):
    want = ",".join('%s="%s"' % (k, v) for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and line[len(name) + 1:].startswith(want + "}"):
            return float(line.rsplit(" ", 1)[1])
    return None


class Daemon:
    """druid-syncd in daemon mode, stderr to a file (a pipe could fill and block it)."""

    def __init__(self, env):
        self.log = open(os.path.join(env.tmp, "daemon-%d.log" % time.time_ns()), "w+")
        self.proc = subprocess.Popen([harness.BIN, "-c", env.config_path], stdout=subprocess.DEVNULL,
                                     stderr=self.log)

    def stderr(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("druid-syncd did not stop:\n" + self.stderr()[-3000:])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class LedgerCase(EnvTestCase):
    """Helpers over one PostgreSQL and one Druid test server."""

    def tearDown(self):
        self.sim.clear_faults()

    def sync(self, ds, expect=0, **cfg):
        conf = dict(datasources=[ds], lookback_seconds=0, batch_size=1000)
        conf.update(cfg)
        self.env.config(**conf)
        self.sim.clear_queries()
        err = self.env.once(expect=expect)
        return err, self.sim.queries()

    def druid(self, ds, cols=("k", "v")):
        sel = ", ".join(qident(c) for c in ("__time",) + tuple(cols))
        status, _h, body = self.sim.sql("SELECT %s FROM %s" % (sel, qident(ds)))
        self.assertEqual(status, 200, body)
        lines = [json.loads(x) for x in body.decode("utf-8").splitlines() if x.strip()]
        return collections.Counter(tuple(None if v is None else str(v) for v in r) for r in lines[1:])

    def pg_rows(self, ds, where, cols=("k", "v")):
        sel = ", ".join([harness.pg_iso("__time")] + ["%s::text" % qident(c) for c in cols])
        return collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT %s FROM %s WHERE %s" % (sel, tbl(ds), where)))

    def live(self, ds, cols=("k", "v")):
        return self.pg_rows(ds, "NOT _druid_deleted", cols)

    def flagged(self, ds, cols=("k", "v")):
        return self.pg_rows(ds, "_druid_deleted", cols)

    def assertExact(self, ds, cols=("k", "v")):
        got, want = self.live(ds, cols), self.druid(ds, cols)
        self.assertEqual(got, want, "live rows differ from Druid: missing %s, extra %s"
                         % (dict(want - got), dict(got - want)))

    def count(self, ds, where="true"):
        return int(self.pg.scalar("SELECT count(*) FROM %s WHERE %s" % (tbl(ds), where)))

    def xmins(self, ds):
        """{_druid_id: (xmin, deleted)} of every row."""
        return {r[0]: (r[1], r[2]) for r in self.pg.psql(
            "SELECT _druid_id::text, xmin::text, _druid_deleted::text FROM %s" % tbl(ds))}

    def ledger(self, ds):
        """druid_syncd_chunks rows of ds, by start: dicts."""
        v = self.pg.psql("SELECT row_to_json(c)::text FROM %s c WHERE datasource = %s ORDER BY start_ms"
                         % (tbl("druid_syncd_chunks"), harness.sqlstr(ds)))
        return [json.loads(r[0]) for r in v]

    def fp_by_start(self, ds):
        return {c["chunk_start"]: c["fingerprint"] for c in self.ledger(ds)}

    def active_chunks(self, ds):
        """The sim's own active time chunks: {(start, end): [segments]} of segments that are
        published-and-not-overshadowed or realtime."""
        out = {}
        for s in self.sim.segments(ds):
            if s.get("overshadowed"):
                continue
            out.setdefault((s["start"], s["end"]), []).append(s)
        return out

    def assertNoDataQuery(self, queries, ds, what):
        data = of_kind(queries, ds, "data") + of_kind(queries, ds, "count")
        self.assertEqual(data, [], "%s: the daemon queried data: %s" % (what, [q["sql"] for q in data]))

    def assertDataOnlyIn(self, queries, ds, lo, hi, what):
        """Every data and COUNT query stays inside [lo, hi) (the changed chunks)."""
        data = of_kind(queries, ds, "data") + of_kind(queries, ds, "count")
        self.assertTrue(data, "%s: no data query at all" % what)
        for q in data:
            qlo, qhi = qrange(q)
            self.assertTrue(qlo is not None and qhi is not None and lo <= qlo and qhi <= hi,
                            "%s: query outside the changed chunks [%s, %s): %s %s"
                            % (what, ms_iso(lo), ms_iso(hi), q["sql"], q["parameters"]))


class ChunkLedger(LedgerCase):

    # ---- first sync, no-change cycle, planning ----

    def test_first_sync_from_segments(self):
        ds = "lg_first"
        data = mkrows(range(6), 50)
        self.sim.datasource(ds, COLS, data, granularity="HOUR")
        _err, qs = self.sync(ds, batch_size=1000)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 300)
        self.assertEqual(of_kind(qs, ds, "count"), [], "COUNT query although every chunk < batch_size")
        self.assertEqual(len(of_kind(qs, ds, "segments")), 1)
        scanned = sum(q["rows_sent"] for q in of_kind(qs, ds, "data"))
        ratio = scanned / 300.0
        print("\n[figure] first sync: %d data queries, %d rows scanned for 300 rows (%.3f per row)"
              % (len(of_kind(qs, ds, "data")), scanned, ratio))
        self.assertLessEqual(ratio, 1.05)
        led = self.ledger(ds)
        chunks = self.active_chunks(ds)
        self.assertEqual(sorted((c["chunk_start"], c["chunk_end"]) for c in led), sorted(chunks))
        for c in led:
            self.assertEqual(c["state"], "synced", c)
            self.assertEqual(c["druid_rows"], 50, c)
            self.assertEqual(c["stored_rows"], 50, c)
            self.assertEqual(c["start_ms"], iso_ms(c["chunk_start"]))
            self.assertEqual(c["end_ms"], iso_ms(c["chunk_end"]))
            self.assertIsNotNone(c["synced_at"])
        self.assertEqual(len(set(c["fingerprint"] for c in led)), 6, "fingerprints not distinct")
        st = state_row(self.pg, ds)
        self.assertEqual(st["change_detection"], "segments")
        self.assertEqual(st["status"], "ok")
        self.assertEqual(st["rows_synced"], 300)

    def test_no_change_cycle(self):
        ds = "lg_nochange"
        self.sim.datasource(ds, COLS, mkrows(range(5), 20), granularity="HOUR")
        self.sync(ds)
        before = snapshot(self.pg, ds)
        led = self.ledger(ds)
        _err, qs = self.sync(ds)
        cycle = [q for q in qs if kind(q, ds) != "probe"]
        print("\n[figure] no-change cycle: %d Druid queries (%s), plus the run's start-up probe"
              % (len(cycle), ", ".join(kind(q, ds) for q in cycle)))
        self.assertLessEqual(len(cycle), 3, [q["sql"] for q in cycle])
        self.assertNoDataQuery(qs, ds, "no-change cycle")
        self.assertEqual(snapshot(self.pg, ds), before, "a no-change cycle wrote rows")
        self.assertEqual([(c["chunk_start"], c["fingerprint"], c["synced_at"]) for c in self.ledger(ds)],
                         [(c["chunk_start"], c["fingerprint"], c["synced_at"]) for c in led])

    def _plan_case(self, ds):
        # hours 0..3: 20 rows; hour 4: 250 rows (over batch_size 100); hour 5: num_rows unknown
        data = mkrows(range(4), 20) + mkrows([4], 250) + mkrows([5], 20)
        self.sim.datasource(ds, COLS, data, granularity="HOUR")
        self.sim.num_rows_known(ds, False, hour(5), hour(6))
        _err, qs = self.sync(ds, batch_size=100)
        self.assertExact(ds)
        return data, qs

    def test_big_and_unknown_chunks_planned(self):
        ds = "lg_plan"
        data, qs = self._plan_case(ds)
        counts = of_kind(qs, ds, "count")
        self.assertTrue(any(qrange(q) == (iso_ms(hour(4)), iso_ms(hour(5))) for q in counts),
                        "no COUNT inside the chunk over batch_size")
        self.assertTrue(any(qrange(q) == (iso_ms(hour(5)), iso_ms(hour(6))) for q in counts),
                        "no COUNT inside the chunk whose num_rows is unknown")
        for q in of_kind(qs, ds, "data"):
            self.assertLessEqual(q["rows_sent"], 100, "a slice above batch_size")
        scanned = sum(q["rows_sent"] for q in of_kind(qs, ds, "data"))
        self.assertEqual(scanned, len(data), "data slices read rows twice")
        led = {c["chunk_start"]: c for c in self.ledger(ds)}
        self.assertEqual(led[hour(4)]["stored_rows"], 250)
        self.assertEqual(led[hour(4)]["druid_rows"], 250)
        self.assertIsNone(led[hour(5)]["druid_rows"], "unknown num_rows recorded as a number")
        self.assertEqual(led[hour(5)]["stored_rows"], 20)
        self.assertTrue(all(c["state"] == "synced" for c in led.values()))

    def test_count_queries_stay_inside_their_chunk(self):
        ds = "lg_plan_clip"
        _data, qs = self._plan_case(ds)
        for q in of_kind(qs, ds, "count"):
            lo, hi = qrange(q)
            inside = any(lo is not None and hi is not None and iso_ms(hour(h)) <= lo and hi <= iso_ms(hour(h + 1))
                         for h in (4, 5))
            self.assertTrue(inside, "COUNT outside the big and unknown chunks: %s [%s, %s) scanned %s"
                            % (q["sql"][:60], lo and ms_iso(lo), hi and ms_iso(hi), "the whole day"))

    def test_two_datasources_share_one_snapshot(self):
        a, b = "lg_share_a", "lg_share_b"
        self.sim.datasource(a, COLS, mkrows(range(2), 5), granularity="HOUR")
        self.sim.datasource(b, COLS, mkrows(range(3), 5), granularity="HOUR")
        self.env.config(datasources=[a, b], lookback_seconds=0)
        self.sim.clear_queries()
        self.env.once()
        segs = [q for q in self.sim.queries() if "sys.segments" in (q.get("sql") or "")]
        self.assertEqual(len(segs), 1, "one sys.segments query per datasource, not per round")
        self.assertExact(a)
        self.assertExact(b)

    def test_all_granularity(self):
        ds = "lg_all"
        self.sim.datasource(ds, COLS, mkrows(range(3), 5), granularity="ALL")
        self.sync(ds)
        self.assertExact(ds)
        led = self.ledger(ds)
        self.assertEqual(len(led), 1, led)
        self.assertEqual(led[0]["chunk_start"], "-146136543-09-08T08:23:32.096Z")
        self.assertEqual(led[0]["chunk_end"], "146140482-04-24T15:36:27.903Z")
        self.assertLess(led[0]["start_ms"], -4 * 10 ** 18)
        self.assertGreater(led[0]["end_ms"], 4 * 10 ** 18)
        self.assertEqual((led[0]["state"], led[0]["stored_rows"]), ("synced", 15))
        before = self.xmins(ds)
        self.sim.late_append(ds, [{"__time": hour(1), "k": 1, "v": "late"}])
        self.sync(ds)
        self.assertExact(ds)
        after = self.xmins(ds)
        self.assertEqual({i: after[i] for i in before}, before)
        _err, qs = self.sync(ds)
        self.assertNoDataQuery(qs, ds, "ALL granularity, no change")

    def test_full_mode_reads_only_changed_chunks(self):
        """A datasource without the incremental column is synced in full mode, by chunk."""
        ds = "lg_full"
        self.sim.datasource(ds, COLS, mkrows(range(4), 10), granularity="HOUR")
        self.sync(ds, incremental_column="updated_at")
        st = state_row(self.pg, ds)
        self.assertEqual((st["mode"], st["change_detection"]), ("full", "segments"))
        self.assertExact(ds)
        _err, qs = self.sync(ds, incremental_column="updated_at")
        self.assertNoDataQuery(qs, ds, "full mode, no change")
        before = self.xmins(ds)
        self.sim.late_append(ds, [{"__time": ms_iso(DAY0 + HOUR + 5), "k": 5, "v": "late"}])
        _err, qs = self.sync(ds, incremental_column="updated_at")
        self.assertDataOnlyIn(qs, ds, iso_ms(hour(1)), iso_ms(hour(2)), "full mode, late row")
        self.assertExact(ds)
        after = self.xmins(ds)
        self.assertEqual({i: after[i] for i in before}, before)
        self.sim.drop_interval(ds, hour(3), hour(4))
        self.sync(ds, incremental_column="updated_at")
        self.assertExact(ds)
        self.assertEqual(self.count(ds, "_druid_deleted"), 10)

    # ---- late rows, compaction, reindex ----

    def test_late_rows_into_old_chunk(self):
        ds = "lg_late"
        self.sim.datasource(ds, COLS, mkrows(range(6), 20), granularity="HOUR")
        self.sync(ds)
        before = self.xmins(ds)
        fp = self.fp_by_start(ds)
        late = [{"__time": ms_iso(DAY0 + 1 * HOUR + 30 * 60000 + 1), "k": 9000 + i, "v": "late%d" % i}
                for i in range(3)]
        self.sim.late_append(ds, late)
        _err, qs = self.sync(ds)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 123)
        self.assertEqual(self.count(ds, "_druid_deleted"), 0)
        after = self.xmins(ds)
        for i, (x, _dl) in before.items():
            self.assertEqual(after[i][0], x, "an untouched row was rewritten")
        self.assertDataOnlyIn(qs, ds, iso_ms(hour(1)), iso_ms(hour(2)), "late rows")
        fp2 = self.fp_by_start(ds)
        self.assertNotEqual(fp2[hour(1)], fp[hour(1)])
        self.assertEqual({k: v for k, v in fp2.items() if k != hour(1)},
                         {k: v for k, v in fp.items() if k != hour(1)})
        c1 = [c for c in self.ledger(ds) if c["chunk_start"] == hour(1)][0]
        self.assertEqual((c1["druid_rows"], c1["stored_rows"], c1["state"]), (23, 23, "synced"))

    def test_compaction_rewrites_nothing(self):
        ds = "lg_compact"
        self.sim.datasource(ds, COLS, mkrows(range(6), 20), granularity="HOUR", rows_per_segment=7)
        self.sync(ds)
        before = snapshot(self.pg, ds)
        fp = self.fp_by_start(ds)
        self.sim.compact(ds, hour(2), hour(4))
        _err, qs = self.sync(ds)
        self.assertEqual(snapshot(self.pg, ds), before, "compaction (same rows) rewrote rows")
        self.assertEqual(self.count(ds, "_druid_deleted"), 0)
        self.assertDataOnlyIn(qs, ds, iso_ms(hour(2)), iso_ms(hour(4)), "compaction")
        fp2 = self.fp_by_start(ds)
        for h in (2, 3):
            self.assertNotEqual(fp2[hour(h)], fp[hour(h)], "fingerprint of a compacted chunk kept")
        for h in (0, 1, 4, 5):
            self.assertEqual(fp2[hour(h)], fp[hour(h)])
        self.assertTrue(all(c["state"] == "synced" and c["stored_rows"] == 20 for c in self.ledger(ds)))
        # and nothing more to do afterwards
        _err, qs = self.sync(ds)
        self.assertNoDataQuery(qs, ds, "cycle after compaction")

    def test_compaction_hour_to_day(self):
        ds = "lg_gran"
        self.sim.datasource(ds, COLS, mkrows(range(6), 20), granularity="HOUR")
        self.sync(ds)
        before = snapshot(self.pg, ds)
        self.assertEqual(len(self.ledger(ds)), 6)
        day_end = ms_iso(DAY0 + 24 * HOUR)
        self.sim.compact(ds, hour(0), day_end, granularity="DAY")
        _err, qs = self.sync(ds)
        self.assertEqual(snapshot(self.pg, ds), before, "HOUR -> DAY compaction rewrote rows")
        self.assertEqual(self.count(ds, "_druid_deleted"), 0)
        data = of_kind(qs, ds, "data")
        self.assertEqual(len(data), 1, "the new DAY chunk was not read exactly once: %s"
                         % [(q["sql"], q["parameters"]) for q in data])
        self.assertEqual(qrange(data[0]), (DAY0, DAY0 + 24 * HOUR))
        self.assertEqual(of_kind(qs, ds, "count"), [])
        led = self.ledger(ds)
        self.assertEqual([(c["chunk_start"], c["chunk_end"], c["state"], c["stored_rows"]) for c in led],
                         [(hour(0), day_end, "synced", 120)], "old HOUR ledger rows not replaced")
        _err, qs = self.sync(ds)
        self.assertNoDataQuery(qs, ds, "cycle after HOUR -> DAY")

    def test_compaction_published_before_loaded(self):
        """A compaction published but not loaded yet: the chunk waits (old rows stay), then
        converges with nothing rewritten; the old segments' cleanup changes nothing."""
        ds = "lg_compact_late_load"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sync(ds)
        before = snapshot(self.pg, ds)
        self.sim.compact(ds, hour(1), hour(2), available=False)
        _err, qs = self.sync(ds)
        self.assertEqual(snapshot(self.pg, ds), before)
        self.assertNoDataQuery(qs, ds, "compaction not loaded yet")
        self.assertEqual({c["chunk_start"]: c["state"] for c in self.ledger(ds)}[hour(1)], "postponed")
        self.sim.set_available(ds, hour(1), hour(2), available=True)
        self.sim.cleanup(ds)
        self.sync(ds)
        self.assertEqual(snapshot(self.pg, ds), before, "a loaded compaction rewrote rows")
        self.assertTrue(all(c["state"] == "synced" for c in self.ledger(ds)))
        _err, qs = self.sync(ds)
        self.assertNoDataQuery(qs, ds, "after the compaction loaded")

    def test_reindex_day_to_hour(self):
        """A DAY chunk reindexed as HOUR chunks with the same rows: nothing rewritten, the
        DAY ledger row replaced by the HOUR ones."""
        ds = "lg_split"
        data = mkrows(range(4), 10)
        self.sim.datasource(ds, COLS, data, granularity="DAY")
        self.sync(ds)
        self.assertEqual(len(self.ledger(ds)), 1)
        before = snapshot(self.pg, ds)
        self.sim.reindex(ds, hour(0), ms_iso(DAY0 + 24 * HOUR), data, granularity="HOUR")
        self.sync(ds)
        self.assertEqual(snapshot(self.pg, ds), before, "DAY -> HOUR reindex of the same rows rewrote rows")
        # the emptied hours of the day become tombstones (MSQ REPLACE): chunks without rows
        led = self.ledger(ds)
        self.assertEqual([c["chunk_start"] for c in led], [hour(h) for h in range(24)])
        self.assertEqual([c["stored_rows"] for c in led], [10] * 4 + [0] * 20)
        self.assertTrue(all(c["state"] == "synced" for c in led))
        _err, qs = self.sync(ds)
        self.assertNoDataQuery(qs, ds, "after DAY -> HOUR")

    def test_reindex_hard_delete(self):
        ds = "lg_reindex_hard"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sync(ds, soft_deletes=False)
        self.sim.reindex(ds, hour(1), hour(2), mkrows([1], 4))
        self.sync(ds, soft_deletes=False)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 24, "soft_deletes false: vanished rows not deleted")

    def test_reindex_with_changed_values(self):
        ds = "lg_reindex"
        orig = mkrows(range(4), 10)
        self.sim.datasource(ds, COLS, orig, granularity="HOUR")
        self.sync(ds, soft_deletes=True)
        before = self.xmins(ds)
        ids_by_k = dict((r[0], r[1]) for r in self.pg.psql("SELECT k::text, _druid_id::text FROM %s" % tbl(ds)))
        # hour 2 reindexed: rows k=2000..2002 get new values, the others come back the same
        new = [dict(r) for r in orig if r["__time"] >= hour(2) and r["__time"] < hour(3)]
        for r in new[:3]:
            r["v"] = r["v"] + "-changed"
        self.sim.reindex(ds, hour(2), hour(3), new)
        _err, qs = self.sync(ds, soft_deletes=True)
        self.assertExact(ds)
        old3 = collections.Counter((r["__time"], str(r["k"]), r["v"]) for r in orig if r["k"] in (2000, 2001, 2002))
        self.assertEqual(self.flagged(ds), old3, "old versions of changed rows not flagged")
        self.assertEqual(self.count(ds), 43)
        after = self.xmins(ds)
        changed_ids = {ids_by_k[str(k)] for k in (2000, 2001, 2002)}
        for i, (x, _dl) in before.items():
            if i not in changed_ids:
                self.assertEqual(after[i], (x, "false"), "an unchanged row was rewritten or flagged")
        self.assertDataOnlyIn(qs, ds, iso_ms(hour(2)), iso_ms(hour(3)), "reindex")

    # ---- drops ----

    def test_dropped_interval_flagged(self):
        ds = "lg_drop"
        self.sim.datasource(ds, COLS, mkrows(range(6), 10), granularity="HOUR")
        self.sync(ds)
        before = self.xmins(ds)
        self.sim.drop_interval(ds, hour(2), hour(4))
        self.sync(ds)
        self.assertExact(ds)
        gone = collections.Counter((r["__time"], str(r["k"]), r["v"]) for r in mkrows([2, 3], 10))
        self.assertEqual(self.flagged(ds), gone)
        self.assertEqual(self.count(ds), 60)
        self.assertEqual(sorted(c["chunk_start"] for c in self.ledger(ds)), [hour(h) for h in (0, 1, 4, 5)])
        after = self.xmins(ds)
        kept = [i for i in before if after[i][1] == "false"]
        self.assertEqual(len(kept), 40)
        for i in kept:
            self.assertEqual(after[i][0], before[i][0], "a row of a chunk still in Druid was rewritten")

    def test_dropped_interval_kept_with_follow_drops_false(self):
        ds = "lg_archive"
        self.sim.datasource(ds, COLS, mkrows(range(6), 10), granularity="HOUR")
        self.sync(ds, follow_drops=False)
        before = snapshot(self.pg, ds)
        self.sim.drop_interval(ds, hour(0), hour(2))
        self.sync(ds, follow_drops=False)
        self.assertEqual(snapshot(self.pg, ds), before, "follow_drops false: rows were touched")
        self.assertEqual(self.count(ds, "_druid_deleted"), 0)
        self.assertEqual(sorted(c["chunk_start"] for c in self.ledger(ds)), [hour(h) for h in range(2, 6)],
                         "the ledger still knows the dropped chunks")
        # later cycles leave the archive alone too
        _err, qs = self.sync(ds, follow_drops=False)
        self.assertEqual(snapshot(self.pg, ds), before)
        self.assertNoDataQuery(qs, ds, "cycle after an archived drop")

    def test_reindex_with_tombstone_flags_emptied_chunk(self):
        ds = "lg_tomb"
        self.sim.datasource(ds, COLS, mkrows(range(4), 10), granularity="HOUR")
        self.sync(ds)
        # MSQ REPLACE of hours 1..2 with rows in hour 1 only: hour 2 becomes a tombstone
        self.sim.reindex(ds, hour(1), hour(3), mkrows([1], 10), empty_chunks="tombstone")
        self.sync(ds)
        self.assertExact(ds)
        gone = collections.Counter((r["__time"], str(r["k"]), r["v"]) for r in mkrows([2], 10))
        self.assertEqual(self.flagged(ds), gone)

    def _drop_then_back(self, ds, follow):
        data = mkrows(range(4), 10)
        self.sim.datasource(ds, COLS, data, granularity="HOUR")
        self.sync(ds, follow_drops=follow)
        self.sim.drop_interval(ds, hour(2), hour(3))
        self.sync(ds, follow_drops=follow)
        self.assertEqual(self.count(ds, "_druid_deleted"), 10 if follow else 0)
        # the same rows are ingested into that hour again
        self.sim.late_append(ds, [r for r in data if hour(2) <= r["__time"] < hour(3)])
        err, _qs = self.sync(ds, follow_drops=follow)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 40, "a row of the returning chunk has two copies")
        self.assertEqual(self.count(ds, "_druid_deleted"), 0)
        self.assertEqual(len(self.ledger(ds)), 4)

    def test_dropped_chunk_comes_back(self):
        self._drop_then_back("lg_back", True)

    def test_archived_chunk_comes_back(self):
        self._drop_then_back("lg_back_archive", False)

    def test_most_chunks_dropped_at_once_held_back_once(self):
        """Daemon mode: the first cycle that sees 4 of 6 chunks dropped holds it back, the
        second (same snapshot) flags them."""
        ds = "lg_halfdrop"
        self.sim.datasource(ds, COLS, mkrows(range(6), 10), granularity="HOUR")
        self.sync(ds)
        self.sim.drop_interval(ds, hour(1), hour(5))
        t0 = state_row(self.pg, ds)["last_finished"]
        self.env.config(datasources=[ds], lookback_seconds=0, sync_interval_seconds=2.5)
        d = Daemon(self.env)
        try:
            wait_for(lambda: (state_row(self.pg, ds)["last_finished"] != t0
                              and state_row(self.pg, ds)["status"] == "ok"), timeout=30, what="first cycle")
            t1 = state_row(self.pg, ds)["last_finished"]
            self.assertEqual(self.count(ds, "_druid_deleted"), 0, "flagged at the first snapshot")
            self.assertIn("holding that back", d.stderr())
            wait_for(lambda: state_row(self.pg, ds)["last_finished"] != t1
                     and state_row(self.pg, ds)["status"] == "ok", timeout=30, what="second cycle")
            self.assertEqual(self.count(ds, "_druid_deleted"), 40, d.stderr()[-2000:])
            self.assertExact(ds)
        finally:
            d.stop()
            d.kill()
        self.assertEqual(sorted(c["chunk_start"] for c in self.ledger(ds)), [hour(0), hour(5)])

    def test_most_chunks_dropped_at_once_held_back_once_under_once(self):
        ds = "lg_halfdrop_once"
        self.sim.datasource(ds, COLS, mkrows(range(6), 10), granularity="HOUR")
        self.sync(ds)
        self.sim.drop_interval(ds, hour(1), hour(5))
        err, _qs = self.sync(ds)
        self.assertIn("holding that back", err)
        self.assertEqual(self.count(ds, "_druid_deleted"), 0, "flagged at the first snapshot")
        err, _qs = self.sync(ds)
        self.assertEqual(self.count(ds, "_druid_deleted"), 40,
                         "a second --once run with the same snapshot still holds the drop back:\n"
                         + err[-1500:])

    # ---- availability ----

    def test_unavailable_chunk_on_first_sync(self):
        ds = "lg_unavail_first"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR", rows_per_segment=4)
        self.sim.set_available(ds, hour(1), hour(2), available=False, partitions=[1])
        self.sync(ds)
        self.assertEqual(self.count(ds), 20, "rows of a partly unavailable chunk were read")
        self.assertEqual(self.count(ds, "__time >= %s AND __time < %s" % (harness.sqlstr(hour(1)),
                                                                        harness.sqlstr(hour(2)))), 0)
        self.assertEqual({c["chunk_start"]: c["state"] for c in self.ledger(ds)}[hour(1)], "postponed")
        self.sim.set_available(ds, hour(1), hour(2), available=True)
        self.sync(ds)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 30)
        self.assertTrue(all(c["state"] == "synced" for c in self.ledger(ds)))

    def test_unavailable_chunk_postponed_then_converges(self):
        ds = "lg_unavail"
        self.sim.datasource(ds, COLS, mkrows(range(5), 10), granularity="HOUR")
        self.sync(ds)
        fp = self.fp_by_start(ds)
        before = snapshot(self.pg, ds)
        self.sim.set_available(ds, hour(2), hour(3), available=False)
        _err, qs = self.sync(ds)
        self.assertEqual(snapshot(self.pg, ds), before, "an unavailable chunk's rows were touched")
        self.assertNoDataQuery(qs, ds, "unavailable chunk")
        led = {c["chunk_start"]: c for c in self.ledger(ds)}
        self.assertEqual(led[hour(2)]["state"], "postponed")
        self.assertEqual(led[hour(2)]["fingerprint"], fp[hour(2)], "postponed chunk lost its fingerprint")
        self.assertIsNotNone(led[hour(2)]["postponed_since"])
        # changes while it is unavailable: late rows into it and into another chunk
        self.sim.late_append(ds, [{"__time": ms_iso(DAY0 + 2 * HOUR + 55 * 60000), "k": 7001, "v": "late-in-2"},
                                  {"__time": ms_iso(DAY0 + 4 * HOUR + 55 * 60000), "k": 7002, "v": "late-in-4"}])
        _err, qs = self.sync(ds)
        self.assertEqual(self.count(ds, "_druid_deleted"), 0)
        self.assertEqual(self.live(ds)[(ms_iso(DAY0 + 4 * HOUR + 55 * 60000), "7002", "late-in-4")], 1,
                         "an available chunk was not synced while another is postponed")
        self.assertEqual(self.count(ds, "k = 7001"), 0)
        self.assertDataOnlyIn(qs, ds, iso_ms(hour(4)), iso_ms(hour(5)), "while a chunk is postponed")
        self.assertEqual({c["chunk_start"]: c["state"] for c in self.ledger(ds)}[hour(2)], "postponed")
        self.assertEqual(state_row(self.pg, ds)["status"], "ok")
        # postponed for more than 10 minutes (as if): a warning names the chunk
        self.pg.psql("UPDATE %s SET postponed_since = now() - interval '11 minutes' WHERE datasource = %s"
                     " AND state = 'postponed'" % (tbl("druid_syncd_chunks"), harness.sqlstr(ds)))
        err, _qs = self.sync(ds)
        self.assertRegex(err, r"warning +sched: %s: chunk %s/%s has been postponed for 1[01] minutes"
                         % (ds, hour(2), hour(3)))
        # available again: converges
        self.sim.set_available(ds, hour(2), hour(3), available=True)
        self.sync(ds)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 52)
        self.assertEqual(self.count(ds, "_druid_deleted"), 0)
        self.assertTrue(all(c["state"] == "synced" for c in self.ledger(ds)), self.ledger(ds))
        self.assertEqual({c["chunk_start"]: c["stored_rows"] for c in self.ledger(ds)}[hour(2)], 11)

    # ---- realtime ----

    def test_realtime_rows_then_handoff(self):
        ds = "lg_rt"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sync(ds)
        rt1 = mkrows([3], 5, v="rt")
        self.sim.realtime(ds, rt1)
        self.sync(ds)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 35)
        # more rows into the open realtime segment (its id does not change)
        rt2 = [{"__time": ms_iso(DAY0 + 3 * HOUR + 40 * 60000), "k": 3500 + i, "v": "rt-more"} for i in range(4)]
        self.sim.realtime(ds, rt2)
        self.sync(ds)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 39)
        before = snapshot(self.pg, ds)
        self.sim.handoff(ds)
        self.sync(ds)
        self.assertEqual(snapshot(self.pg, ds), before, "handoff of synced rows rewrote rows")
        self.assertExact(ds)
        led = {c["chunk_start"]: c for c in self.ledger(ds)}
        self.assertEqual((led[hour(3)]["state"], led[hour(3)]["stored_rows"]), ("synced", 9))
        _err, qs = self.sync(ds)
        self.assertNoDataQuery(qs, ds, "cycle after handoff")

    def test_realtime_late_row_behind_position(self):
        ds = "lg_rt_late"
        self.sim.datasource(ds, COLS, mkrows(range(2), 5), granularity="HOUR")
        self.sync(ds)
        self.sim.realtime(ds, [{"__time": ms_iso(DAY0 + 3 * HOUR + m * 60000), "k": 3000 + m, "v": "rt"}
                               for m in range(10, 15)])
        self.sync(ds)
        self.assertExact(ds)
        c = {c["chunk_start"]: c for c in self.ledger(ds)}[hour(3)]
        self.assertEqual(c["state"], "pending", c)
        self.assertEqual(c["position_ms"], DAY0 + 3 * HOUR + 14 * 60000)
        # a row behind the position, one after it
        self.sim.realtime(ds, [{"__time": ms_iso(DAY0 + 3 * HOUR + 5 * 60000), "k": 3100, "v": "behind"},
                               {"__time": ms_iso(DAY0 + 3 * HOUR + 20 * 60000), "k": 3101, "v": "ahead"}])
        _err, qs = self.sync(ds)
        for q in of_kind(qs, ds, "data"):
            self.assertEqual(qrange(q), (DAY0 + 3 * HOUR + 14 * 60000, DAY0 + 4 * HOUR),
                             "an open chunk was not read from its position")
        self.assertEqual(self.count(ds, "k = 3101"), 1)
        self.assertEqual(self.count(ds, "k = 3100"), 0, "documented: behind the position waits for the re-read")
        self.assertEqual(self.count(ds, "_druid_deleted"), 0)
        # realtime_reread_seconds passed: read whole
        time.sleep(1.2)
        self.sync(ds, realtime_reread_seconds=1)
        self.assertExact(ds)
        self.assertEqual(self.count(ds, "_druid_deleted"), 0)

    # ---- identity across a widening ----

    def test_widening_then_compaction_keeps_ids(self):
        ds = "lg_widen"
        cols = COLS + [("x", "BIGINT")]
        data = [dict(r, x=r["k"] % 7) for r in mkrows(range(3), 10)]
        self.sim.datasource(ds, cols, data, granularity="HOUR")
        self.sync(ds)
        ids = set(self.xmins(ds))
        self.assertEqual(len(ids), 30)
        # Druid reingests with x as DOUBLE: it now prints 1.0 for 1
        self.sim.datasource(ds, COLS + [("x", "DOUBLE")], [dict(r, x=float(r["x"])) for r in data],
                            granularity="HOUR")
        self.sync(ds)
        self.assertEqual(harness.pg_column_types(self.pg, ds)["x"], "double precision")
        self.assertEqual(self.count(ds, "_druid_deleted"), 0, "rows flagged after a widening")
        self.assertEqual(set(self.xmins(ds)), ids, "ids changed with the widening")
        self.assertExact(ds, ("k", "v"))
        before = snapshot(self.pg, ds)
        self.sim.compact(ds, hour(0), hour(3))
        self.sync(ds)
        self.assertEqual(snapshot(self.pg, ds), before, "compaction after a widening rewrote rows")
        self.assertEqual(set(self.xmins(ds)), ids)

    # ---- the destination table behind the daemon's back ----

    def _table_gone_case(self, ds, sql):
        self.sim.datasource(ds, COLS, mkrows(range(4), 10), granularity="HOUR")
        self.sync(ds)
        self.pg.psql(sql % tbl(ds))
        err, _qs = self.sync(ds)
        self.assertIn("rebuilding it from Druid", err)
        self.assertRegex(err, r"warning +sched: %s: the destination table was dropped or emptied" % ds)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 40)
        self.assertEqual(len(self.ledger(ds)), 4)
        self.assertTrue(all(c["state"] == "synced" and c["stored_rows"] == 10 for c in self.ledger(ds)))
        self.assertEqual(state_row(self.pg, ds)["status"], "ok")

    def test_dropped_destination_table_rebuilt(self):
        self._table_gone_case("lg_dropped", "DROP TABLE %s")

    def test_truncated_destination_table_rebuilt(self):
        self._table_gone_case("lg_truncated", "TRUNCATE %s")

    # ---- an interrupted cycle ----

    def test_interrupted_cycle_state_and_metric(self):
        ds = "lg_intr"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sync(ds)
        st0 = state_row(self.pg, ds)
        before = snapshot(self.pg, ds)
        fp = self.fp_by_start(ds)
        self.sim.late_append(ds, [{"__time": ms_iso(DAY0 + HOUR + 123), "k": 8001, "v": "late"}])
        port = harness.free_port()
        self.env.config(datasources=[ds], lookback_seconds=0, batch_size=1000, sync_interval_seconds=60,
                        shutdown_timeout_seconds=1, metrics_listen="127.0.0.1:%d" % port)
        self.sim.clear_queries()
        self.sim.fault("delay", match='"v" FROM "lg_intr"', times=-1, delay_seconds=60)
        d = Daemon(self.env)
        frozen = False
        last = [None]
        try:
            wait_for(lambda: any(kind(q, ds) == "data" and q.get("finished") is None for q in self.sim.queries()),
                     timeout=20, what="a stalled slice")
            text0 = wait_for(lambda: self._try_scrape(port), timeout=10, what="metrics")
            self.assertIn(metric(text0, "druid_syncd_cycles_total", datasource=ds, result="interrupted"),
                          (None, 0.0))
            # The counter is visible only between the cycle's end and the exit: the cancel
            # the daemon sends to a frozen Druid keeps it up for its cancel grace (1 s).
            os.kill(self.sim.proc.pid, signal.SIGSTOP)
            frozen = True
            stop = threading.Event()

            def poll():
                while not stop.is_set():
                    t = self._try_scrape(port)
                    if t:
                        last[0] = t
                    time.sleep(0.01)
            th = threading.Thread(target=poll)
            th.start()
            try:
                d.proc.send_signal(signal.SIGTERM)
                rc = d.proc.wait(20)
            finally:
                stop.set()
                th.join()
            os.kill(self.sim.proc.pid, signal.SIGCONT)
            frozen = False
            self.assertEqual(rc, 0, d.stderr()[-3000:])
        finally:
            if frozen:
                os.kill(self.sim.proc.pid, signal.SIGCONT)
            d.kill()
            self.sim.clear_faults()
        log = d.stderr()
        self.assertIn("stop timeout", log)
        st = state_row(self.pg, ds)
        self.assertEqual(st["status"], "interrupted", log[-2000:])
        self.assertEqual(st["last_success"], st0["last_success"], "an interrupted cycle moved last_success")
        self.assertEqual(snapshot(self.pg, ds), before)
        self.assertEqual(self.fp_by_start(ds), fp, "the ledger moved for a chunk that did not commit")
        self.assertEqual(metric(last[0] or "", "druid_syncd_cycles_total", datasource=ds, result="interrupted"),
                         1.0, "last scrape before exit:\n%s" % (last[0] or "")[:3000])
        self.assertEqual(metric(last[0] or "", "druid_syncd_cycles_total", datasource=ds, result="ok"), 0.0)
        # the next run completes it
        self.sync(ds)
        self.assertExact(ds)
        self.assertEqual(state_row(self.pg, ds)["status"], "ok")

    def test_double_sigterm_interrupts(self):
        ds = "lg_intr2"
        self.sim.datasource(ds, COLS, mkrows(range(2), 10), granularity="HOUR")
        self.sync(ds)
        st0 = state_row(self.pg, ds)
        self.sim.late_append(ds, [{"__time": ms_iso(DAY0 + 123), "k": 8001, "v": "late"}])
        self.env.config(datasources=[ds], lookback_seconds=0, sync_interval_seconds=60,
                        shutdown_timeout_seconds=30)
        self.sim.clear_queries()
        self.sim.fault("delay", match='"v" FROM "lg_intr2"', times=-1, delay_seconds=60)
        d = Daemon(self.env)
        try:
            wait_for(lambda: any(kind(q, ds) == "data" and q.get("finished") is None for q in self.sim.queries()),
                     timeout=20, what="a stalled slice")
            d.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            d.proc.send_signal(signal.SIGTERM)
            self.assertEqual(d.proc.wait(15), 0, d.stderr()[-2000:])
        finally:
            d.kill()
            self.sim.clear_faults()
        st = state_row(self.pg, ds)
        self.assertEqual(st["status"], "interrupted", d.stderr()[-2000:])
        self.assertEqual(st["last_success"], st0["last_success"])
        self.assertEqual(self.count(ds, "k = 8001"), 0)

    def test_metrics_in_segments_mode(self):
        ds = "lg_metrics"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sync(ds)
        self.sim.set_available(ds, hour(0), hour(1), available=False)
        port = harness.free_port()
        self.env.config(datasources=[ds], lookback_seconds=0, sync_interval_seconds=0.5,
                        metrics_listen="127.0.0.1:%d" % port)
        d = Daemon(self.env)
        try:
            text = wait_for(lambda: (lambda t: t if t and (metric(t, "druid_syncd_cycles_total", datasource=ds,
                                                                     result="ok") or 0) >= 2 else None)(
                self._try_scrape(port)), timeout=30, what="two idle cycles")
        finally:
            d.stop()
            d.kill()
        self.assertEqual(metric(text, "druid_syncd_change_detection", datasource=ds, mode="segments"), 1.0, text)
        self.assertEqual(metric(text, "druid_syncd_chunks_postponed", datasource=ds), 1.0, text)
        lag = metric(text, "druid_syncd_lag_seconds", datasource=ds)
        self.assertIsNotNone(lag, "idle cycles lost the lag gauge:\n" + text)
        self.assertGreaterEqual(lag, 0)

    @staticmethod
    def _try_scrape(port):
        try:
            return scrape(port)
        except OSError:
            return None


class CountsFallback(LedgerCase):

    def test_segments_forbidden(self):
        ds = "fb_forbidden"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sim.segments_forbidden(True)
        err, _qs = self.sync(ds)
        self.assertIn("change detection falls back", err)
        self.assertExact(ds)
        self.assertEqual(state_row(self.pg, ds)["change_detection"], "counts")
        self.sim.late_append(ds, mkrows([3, 4], 5, v="new"))
        self.sync(ds)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 40)
        self.assertEqual(self.count(ds, "_druid_deleted"), 0)
        self.assertEqual(state_row(self.pg, ds)["change_detection"], "counts")
        # readable again: segments mode over a table the ledger does not know yet
        self.sim.clear_faults()
        before = snapshot(self.pg, ds)
        err, _qs = self.sync(ds)
        self.assertEqual(state_row(self.pg, ds)["change_detection"], "segments", err[-2000:])
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 40, "duplicates after counts -> segments")
        self.assertEqual(snapshot(self.pg, ds), before, "counts -> segments rewrote rows")
        self.assertEqual(len(self.ledger(ds)), 5)

    def test_dropped_table_in_counts_mode(self):
        ds = "fb_dropped"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sim.segments_forbidden(True)
        self.sync(ds)
        self.pg.psql("DROP TABLE %s" % tbl(ds))
        err, _qs = self.sync(ds)
        self.assertEqual(self.count(ds), 30, "table dropped in counts mode resynced from the cursor:\n"
                         + err[-1500:])
        self.assertExact(ds)
        self.assertIn("reading from the start", err)

    def test_older_id_scheme_rewritten_in_counts_mode(self):
        ds = "fb_idscheme"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sync(ds)
        good = sorted(self.xmins(ds))
        # a table written by an older version: other ids, no scheme recorded
        self.pg.psql("UPDATE %s SET _druid_id = gen_random_uuid()" % tbl(ds))
        self.pg.psql("UPDATE %s SET id_scheme = NULL WHERE datasource = %s"
                     % (tbl("druid_syncd_state"), harness.sqlstr(ds)))
        self.sim.segments_forbidden(True)
        self.sync(ds)
        self.assertExact(ds)
        self.assertEqual(sorted(self.xmins(ds)), good,
                         "id_scheme %s recorded, but the rows keep other ids"
                         % state_row(self.pg, ds)["id_scheme"])

    def test_counts_compare_finds_old_changes(self):
        """Counts fallback (item 5): per-bucket counts and numeric sums against PostgreSQL find
        a late row into an old day, a changed value and a deleted row, with lookback 0."""
        ds = "fb_compare"
        days = [{"__time": ms_iso(DAY0 + d * 24 * HOUR + i * 600000), "k": d * 100 + i, "v": "d%d" % d}
                for d in range(4) for i in range(6)]
        self.sim.datasource(ds, COLS, days, granularity="DAY")
        self.sim.segments_forbidden(True)
        self.sync(ds)
        self.assertExact(ds)
        _err, qs = self.sync(ds)
        print("\n[figure] counts fallback, no-change cycle: %d Druid queries (%s), %d rows read"
              % (len([q for q in qs if kind(q, ds) != "probe"]),
                 ", ".join(kind(q, ds) for q in qs if kind(q, ds) != "probe"),
                 sum(q["rows_sent"] for q in of_kind(qs, ds, "data"))))
        self.assertEqual(of_kind(qs, ds, "data"), [], "counts fallback, no change: rows read")
        before = self.xmins(ds)
        # day 0: one late row; day 1: a value changed (same count); day 2: one row deleted
        self.sim.append(ds, [{"__time": ms_iso(DAY0 + 5 * HOUR), "k": 999, "v": "late"}])
        self.sim.replace(ds, ms_iso(DAY0 + 24 * HOUR), ms_iso(DAY0 + 24 * HOUR + 1),
                         [{"__time": ms_iso(DAY0 + 24 * HOUR), "k": 5000, "v": "d1"}])
        self.sim.delete(ds, ms_iso(DAY0 + 48 * HOUR), ms_iso(DAY0 + 48 * HOUR + 1))
        self.sync(ds)
        self.assertExact(ds)
        self.assertEqual(state_row(self.pg, ds)["change_detection"], "counts")
        self.assertEqual(sorted(k for _t, k, _v in self.flagged(ds)), ["100", "200"])
        after = self.xmins(ds)
        untouched = [i for i in before if before[i][1] == "false" and after[i][1] == "false"]
        self.assertEqual(len(untouched), 22)
        for i in untouched:
            self.assertEqual(after[i][0], before[i][0], "a row of an unchanged bucket was rewritten")

    def test_segments_hidden_after_ledger(self):
        ds = "fb_hidden"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sync(ds)
        self.assertEqual(state_row(self.pg, ds)["change_detection"], "segments")
        self.sim.segments_hidden(ds)
        self.sim.late_append(ds, mkrows([5], 4, v="new"))
        err, _qs = self.sync(ds)
        self.assertEqual(self.count(ds, "_druid_deleted"), 0, "hidden segments taken as everything dropped")
        self.assertEqual(state_row(self.pg, ds)["change_detection"], "counts")
        self.assertIn("lists no segment", err)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 34)
        self.assertEqual(len(self.ledger(ds)), 3, "the ledger lost chunks while segments were hidden")

    def test_segments_hidden_first_sync(self):
        ds = "fb_hidden_first"
        self.sim.datasource(ds, COLS, mkrows(range(3), 10), granularity="HOUR")
        self.sim.segments_hidden(ds)
        self.sync(ds)
        self.assertExact(ds)
        self.assertEqual(self.count(ds), 30, "hidden segments on a first sync: nothing synced")
        self.assertEqual(state_row(self.pg, ds)["change_detection"], "counts")


if __name__ == "__main__":
    harness.main()
