"""The chunk ledger at 10,000 segments (issue 7): a first sync, then a cycle with no change
costs the catalog and one sys.segments snapshot (at most 3 Druid queries, no data query).
Prints the query count and the wall time of that cycle (not asserted: machine-dependent)."""
import time

import harness
from harness import EnvTestCase, qident, state_row, tbl

SEGMENTS = 10000


class LedgerScale(EnvTestCase):

    def test_10000_segments_no_change_cycle(self):
        ds = "scale_10k"
        self.sim.generate(ds, segments=SEGMENTS, granularity="HOUR", rows_per_segment=1)
        self.env.config(datasources=[ds], lookback_seconds=0, batch_size=5000)
        t0 = time.time()
        self.env.once(timeout=240)
        first = time.time() - t0
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted" % tbl(ds)),
                         str(SEGMENTS))
        self.assertEqual(self.pg.scalar(
            "SELECT count(*) FROM %s WHERE datasource = %s AND state = 'synced'"
            % (tbl("druid_syncd_chunks"), harness.sqlstr(ds))), str(SEGMENTS))
        self.assertEqual(state_row(self.pg, ds)["change_detection"], "segments")
        xmin_before = self.pg.scalar("SELECT md5(string_agg(xmin::text || _druid_id::text, ',' ORDER BY _druid_id))"
                                     " FROM %s" % tbl(ds))

        self.sim.clear_queries()
        t0 = time.time()
        err = self.env.once(timeout=240)
        wall = time.time() - t0
        qs = [q for q in self.sim.queries() if (q.get("sql") or "").strip().upper() != "SELECT 1"]
        st = state_row(self.pg, ds)
        data = [q for q in qs if ("FROM " + qident(ds)) in (q.get("sql") or "")]
        seg_q = [q for q in qs if "sys.segments" in (q.get("sql") or "")]
        seg_s = sum((q["finished"] or 0) - q["started"] for q in seg_q)
        cycle_line = [ln for ln in err.splitlines() if "cycle done" in ln]
        print("\n[figure] %d segments: first sync %.1f s; no-change cycle: %d Druid queries (%s), "
              "no data query: %s, --once wall time %.2f s (sys.segments answer %.2f s); %s"
              % (SEGMENTS, first, len(qs), ", ".join(sorted(set(
                  "segments" if "sys.segments" in q["sql"] else "catalog" if "INFORMATION_SCHEMA" in q["sql"]
                  else "other" for q in qs))), not data, wall, seg_s,
                 cycle_line[0].split("sched: ", 1)[-1] if cycle_line else "no cycle line"))
        self.assertLessEqual(len(qs), 3, [q["sql"][:80] for q in qs])
        self.assertEqual(data, [], "the no-change cycle queried data")
        self.assertEqual(len(seg_q), 1)
        self.assertEqual(st["status"], "ok")
        self.assertEqual(self.pg.scalar("SELECT md5(string_agg(xmin::text || _druid_id::text, ',' ORDER BY _druid_id))"
                                        " FROM %s" % tbl(ds)), xmin_before, "the no-change cycle wrote rows")

        # one late row into an old chunk among 10,000: only that chunk is read
        segs = sorted(self.sim.segments(ds), key=lambda s: s["start"])
        old = segs[1234]
        self.sim.late_append(ds, [{"__time": old["start"], "n": -1, "s": "late"}])
        self.sim.clear_queries()
        t0 = time.time()
        self.env.once(timeout=240)
        wall = time.time() - t0
        data = [q for q in self.sim.queries() if ("FROM " + qident(ds)) in (q.get("sql") or "")]
        print("[figure] one late row among %d chunks: %d data queries, %d rows scanned, --once %.2f s"
              % (SEGMENTS, len(data), sum(q["rows_sent"] for q in data), wall))
        self.assertEqual(len(data), 1, [(q["sql"][:60], q["parameters"]) for q in data])
        self.assertEqual([p["value"] for p in data[0]["parameters"]],
                         [harness.iso_ms(old["start"]), harness.iso_ms(old["end"])])
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted" % tbl(ds)),
                         str(SEGMENTS + 1))


if __name__ == "__main__":
    harness.main()
