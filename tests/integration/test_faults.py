"""Failures of Druid: truncated and reset responses, 429/503/504 (retried), 401/403
(stop), 400 on one datasource (others continue), an unreachable Druid."""
import collections
import json
import time
import unittest

import harness
from harness import EnvTestCase, free_port, iso_ms, ms_iso, slice_match, snapshot, state_row, table_exists, tbl

BASE = iso_ms("2022-02-02T00:00:00.000Z")
COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
# State columns that describe the committed data (a failed run may update the others:
# last_started, last_finished, last_error, status, updated_at; and slices_committed counts
# a slice that was read completely and committed as a no-op, e.g. the one at the cursor).
DATA_STATE = ("datasource", "destination_table", "mode", "incremental_column", "cursor", "rows_synced",
              "last_success", "in_catalog")


def t(sec):
    return ms_iso(BASE + sec * 1000)


def rows(n, start=0):
    return [{"__time": t(i), "k": i, "v": "v%d" % i} for i in range(start, start + n)]


class FaultsTest(EnvTestCase):

    def setUp(self):
        self.sim.clear_faults()

    def tearDown(self):
        self.sim.clear_faults()

    def sync(self, names, expect=0, **cfg):
        cfg.setdefault("batch_size", 10)
        self.env.config(datasources=list(names), **cfg)
        return self.env.once(expect=expect)

    def data_state(self, ds):
        st = state_row(self.pg, ds)
        return None if st is None else {k: st.get(k) for k in DATA_STATE}

    def assertExact(self, ds):
        """Live rows equal the simulator's rows, with no duplicates and nothing flagged."""
        status, _h, body = self.sim.sql('SELECT "__time", "k", "v" FROM %s' % harness.qident(ds))
        self.assertEqual(status, 200)
        lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()][1:]
        want = collections.Counter((r[0], str(r[1]), r[2]) for r in lines)
        got = collections.Counter(tuple(r) for r in self.pg.psql(
            "SELECT %s, k::text, v FROM %s WHERE NOT _druid_deleted" % (harness.pg_iso("__time"), tbl(ds))))
        self.assertEqual(got, want, "missing %s extra %s" % (dict(want - got), dict(got - want)))
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE _druid_deleted" % tbl(ds)), "0")

    def prepared(self, ds, n=40, more=40):
        """A datasource synced once (n rows), then `more` rows appended in Druid."""
        self.sim.datasource(ds, COLS, rows(n))
        self.sync([ds])
        self.sim.append(ds, rows(more, start=n))
        return slice_match(self.sim, ds)

    # -- persistent truncation: the run fails and nothing of it is committed
    def test_truncated_response_fails_cleanly(self):
        ds = "f_trunc"
        match = self.prepared(ds)
        snap, st = snapshot(self.pg, ds), self.data_state(ds)
        self.sim.fault("truncate", match=match, times=-1, after_rows=5)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err[-3000:])
        self.assertIn("truncat", err.lower(), "no clear error about the truncated response:\n" + err[-3000:])
        self.assertEqual(snapshot(self.pg, ds), snap, "a truncated slice changed the table")
        self.assertEqual(self.data_state(ds), st, "a truncated slice changed the committed state")
        after = state_row(self.pg, ds)
        self.assertTrue(after.get("last_error"), "last_error not recorded")
        # and once Druid behaves, the run completes with exact data
        self.sim.clear_faults()
        self.sync([ds])
        self.assertExact(ds)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "80")
        self.assertIsNone(state_row(self.pg, ds)["last_error"])

    def test_truncated_first_sync_writes_nothing(self):
        ds = "f_trunc_first"
        self.sim.datasource(ds, COLS, rows(30))
        self.sim.fault("truncate", match='FROM "f_trunc_first"', times=-1, after_rows=3)
        self.env.config(datasources=[ds], batch_size=10)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err[-3000:])
        if table_exists(self.pg, ds):
            self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "0")
        st = state_row(self.pg, ds)
        if st is not None:
            self.assertIn(st["cursor"], (None, ""), "cursor advanced although nothing was read")

    # -- one-shot faults are retried and the run succeeds exactly
    def one_shot(self, ds, kind, **kw):
        match = self.prepared(ds)
        self.sim.clear_queries()
        self.sim.fault(kind, match=match, times=1, **kw)
        t0 = time.time()
        err = self.sync([ds])
        self.assertExact(ds)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "80")
        hit = [f for f in self.sim._control("GET", "faults") if f.get("hits")]
        self.assertTrue(hit, "the fault never fired (match %r)" % match)
        st = state_row(self.pg, ds)
        self.assertIsNone(st["last_error"])
        self.assertEqual(st["cursor"], t(79))
        return err, time.time() - t0

    def test_one_shot_truncate_retried(self):
        self.one_shot("f_os_trunc", "truncate", after_rows=5)

    def test_one_shot_reset_retried(self):
        self.one_shot("f_os_reset", "reset", after_rows=5)

    def test_one_shot_reset_before_any_row(self):
        self.one_shot("f_os_reset0", "reset", after_rows=0)

    def test_429_retry_after_honoured(self):
        _err, took = self.one_shot("f_os_429", "retry_after", seconds=1)
        qs = [q for q in self.sim.queries() if q["status"] == 429]
        self.assertEqual(len(qs), 1)
        self.assertGreaterEqual(took, 0.9, "Retry-After: 1 not honoured (run took %.2fs)" % took)

    def test_503_retried(self):
        self.one_shot("f_os_503", "status", error="unavailable")
        self.assertEqual(sum(1 for q in self.sim.queries() if q["status"] == 503), 1)

    def test_504_retried(self):
        self.one_shot("f_os_504", "status", error="timeout")
        self.assertEqual(sum(1 for q in self.sim.queries() if q["status"] == 504), 1)

    def test_garbage_body_retried_or_failed_cleanly(self):
        # A proxy's HTML page with status 200: never taken for data.
        ds = "f_garbage"
        match = self.prepared(ds)
        snap, st = snapshot(self.pg, ds), self.data_state(ds)
        self.sim.fault("garbage", match=match, times=-1)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err[-3000:])
        self.assertEqual(snapshot(self.pg, ds), snap)
        self.assertEqual(self.data_state(ds), st)

    def test_persistent_503_gives_up(self):
        ds = "f_503_forever"
        match = self.prepared(ds)
        snap = snapshot(self.pg, ds)
        self.sim.clear_queries()
        self.sim.fault("status", match=match, times=-1, error="unavailable")
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertEqual(snapshot(self.pg, ds), snap)
        n503 = sum(1 for q in self.sim.queries() if q["status"] == 503)
        self.assertGreaterEqual(n503, 2, "503 was not retried")
        self.assertLessEqual(n503, 20, "retries unbounded despite max_retries 3")

    # -- 401/403: stop, say why, write nothing
    def auth_failure(self, error, code):
        ds = "f_auth_%d" % code
        self.sim.datasource(ds, COLS, rows(10))
        self.sim.clear_queries()
        self.sim.fault("status", match=None, times=-1, error=error)
        self.env.config(datasources=[ds])
        rc, err = self.env.run("--once", timeout=60)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertTrue(str(code) in err or ("unauthori" in err.lower() or "forbidden" in err.lower()),
                        "no message about HTTP %d:\n%s" % (code, err[-3000:]))
        self.assertFalse(table_exists(self.pg, ds), "a table was created despite HTTP %d" % code)
        # 401/403 is not retried like an overload
        n = sum(1 for q in self.sim.queries() if q["status"] == code)
        self.assertLessEqual(n, 2, "HTTP %d was retried (%d requests)" % (code, n))

    def test_401_stops(self):
        self.auth_failure("unauthorized", 401)

    def test_403_stops(self):
        self.auth_failure("forbidden", 403)

    # -- a 400 on one datasource does not stop another
    def test_400_on_one_datasource_others_continue(self):
        bad, good = "f_bad400", "f_good"
        self.sim.datasource(bad, COLS, rows(20))
        self.sim.datasource(good, COLS, rows(55))
        self.sim.fault("status", match='FROM "f_bad400"', times=-1, error="unknown_table")
        self.env.config(datasources=[bad, good], batch_size=10)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err[-3000:])
        self.assertIn(bad, err)
        self.assertTrue(table_exists(self.pg, good))
        self.assertExact(good)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(good)), "55")
        self.assertIsNone(state_row(self.pg, good)["last_error"])
        st = state_row(self.pg, bad)
        if st is not None:
            self.assertTrue(st["last_error"], "the failing datasource has no last_error")
        self.assertEqual(sum(1 for q in self.sim.queries() if q["status"] == 400 and "f_bad400" in q["sql"]) <= 4,
                         True, "a 400 (not transient) was retried many times")

    # -- discovery (INFORMATION_SCHEMA) failures
    def test_discovery_one_shot_faults_retried(self):
        ds = "f_disc"
        self.sim.datasource(ds, COLS, rows(12))
        self.sim.fault("reset", match="INFORMATION_SCHEMA.TABLES", times=1, after_rows=0)
        self.sim.fault("status", match="INFORMATION_SCHEMA.COLUMNS", times=1, error="unavailable")
        self.sync([ds])
        self.assertExact(ds)
        hits = [f.get("hits", 0) for f in self.sim._control("GET", "faults")]
        self.assertEqual(hits, [1, 1], "discovery faults did not fire")

    def test_discovery_failure_changes_nothing(self):
        ds = "f_disc_down"
        self.sim.datasource(ds, COLS, rows(12))
        self.sync([ds])
        meta = lambda: (self.pg.psql("SELECT row_to_json(t)::text FROM %s t ORDER BY 1"
                                     % tbl("information_schema_columns")),
                        self.pg.psql("SELECT row_to_json(t)::text FROM %s t ORDER BY 1"
                                     % tbl("information_schema_tables")))
        before_meta, snap = meta(), snapshot(self.pg, ds)
        st = self.data_state(ds)
        # COLUMNS cut short on every attempt: no partial metadata, nobody marked missing
        self.sim.fault("truncate", match="INFORMATION_SCHEMA.COLUMNS", times=-1, after_rows=3)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err[-3000:])
        self.assertEqual(meta(), before_meta, "metadata tables replaced from a truncated response")
        self.assertEqual(snapshot(self.pg, ds), snap)
        self.assertEqual(self.data_state(ds), st)
        self.sim.clear_faults()
        # TABLES failing for good: the datasource is not declared missing from the catalog
        self.sim.fault("status", match="INFORMATION_SCHEMA.TABLES", times=-1, error="unavailable")
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err[-3000:])
        self.assertIs(state_row(self.pg, ds)["in_catalog"], True,
                      "a failed discovery marked the datasource missing from the catalog")
        self.assertEqual(meta(), before_meta)
        self.assertEqual(snapshot(self.pg, ds), snap)

    def test_state_timestamps_move(self):
        ds = "f_state_ts"
        self.sim.datasource(ds, COLS, rows(5))
        self.sync([ds])
        first = state_row(self.pg, ds)
        self.assertLessEqual(first["last_started"], first["last_finished"])
        time.sleep(0.05)
        self.sim.append(ds, rows(2, start=5))
        self.sync([ds])
        second = state_row(self.pg, ds)
        self.assertGreater(second["last_success"], first["last_success"])
        self.assertGreater(second["updated_at"], first["updated_at"])
        self.assertEqual(second["cursor"], t(6))

    # -- Druid not there at all
    def test_unreachable_druid(self):
        self.env.config(druid_port=free_port())
        t0 = time.time()
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertLess(time.time() - t0, 60)
        self.assertTrue(err.strip(), "no message at all")


if __name__ == "__main__":
    harness.main()
