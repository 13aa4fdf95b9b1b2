"""Slices are read in __time order, so the row identity's occurrence counts only need one
timestamp's worth of memory. A Druid that cannot order a scan (too many segments per time
chunk: 400 "Time ordering is not supported ...") is read unordered instead, with the same
row identities."""
import json
import unittest

import harness
from harness import EnvTestCase, iso_ms, ms_iso, tbl

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2022-03-03T00:00:00.000Z")
ORDER_ERROR = {
    "error": "Resource limit exceeded",
    "errorClass": "org.apache.druid.query.ResourceLimitExceededException",
    "host": None, "errorCode": "legacyQueryException", "persona": "OPERATOR",
    "category": "INVALID_INPUT",
    "errorMessage": "Time ordering is not supported for a Scan query with 60 segments per time "
                    "chunk and a row limit of 9223372036854775807. Try reducing your query limit "
                    "below maxRowsQueuedForOrdering (currently 100,000), or using compaction to "
                    "reduce the number of segments per time chunk, or raising "
                    "maxSegmentPartitionsOrderedInMemory (currently 50) above the number of "
                    "segments per time chunk.",
    "context": {"host": None, "errorClass": "org.apache.druid.query.ResourceLimitExceededException",
                "legacyErrorCode": "Resource limit exceeded"}}


def rows():
    # duplicates at several timestamps: identities depend on occurrence counting
    out = []
    for i in range(60):
        r = {"__time": ms_iso(BASE + (i // 3) * 1000), "k": i % 4, "v": "x"}
        out += [r, dict(r)]
    return out


class OrderingTest(EnvTestCase):

    def ids(self, ds):
        return sorted(r[0] for r in self.pg.psql("SELECT _druid_id::text FROM %s" % tbl(ds)))

    def test_slices_are_read_in_time_order(self):
        ds = "ord_a"
        self.sim.datasource(ds, COLS, rows())
        self.sim.clear_queries()
        self.env.config(datasources=[ds], batch_size=25)
        self.env.once()
        scans = [q["sql"] for q in self.sim.queries() if "COUNT(*)" not in q["sql"]
                 and 'FROM "%s"' % ds in q["sql"]]
        self.assertTrue(scans)
        for sql in scans:
            self.assertTrue(sql.endswith('ORDER BY "__time"'), sql)
        self.assertEqual(self.pg.scalar("SELECT count(DISTINCT _druid_id) FROM %s" % tbl(ds)), "120")

    def test_unorderable_scan_falls_back_with_identical_ids(self):
        ordered, fallback = "ord_b", "ord_c"
        for ds in (ordered, fallback):
            self.sim.datasource(ds, COLS, rows())
        self.env.config(datasources=[ordered], batch_size=25)
        self.env.once()
        # this run syncs only ord_c: every ordered scan fails the way Druid refuses it
        self.sim.fault("status", match='ORDER BY "__time"', times=-1, status=400,
                       body=json.dumps(ORDER_ERROR, separators=(",", ":")))
        self.env.config(datasources=[fallback], batch_size=25, max_retries=1)
        err = self.env.once()
        self.sim.clear_faults()
        self.assertIn("unordered", err)
        # the same rows give the same identities whichever way they were read
        self.assertEqual(self.ids(fallback), self.ids(ordered))
        self.assertEqual(len(self.ids(fallback)), 120)


if __name__ == "__main__":
    harness.main()
