"""Exactly-once across kills, schema drift, custom destination schema and system column
prefix, empty datasources, PostgreSQL unreachable, request timeout in the query context,
and an older Druid (legacy error envelope, no HTTP trailer) with truncations."""
import collections
import json
import random
import signal
import subprocess
import time
import unittest

import harness
from harness import EnvTestCase, BIN, iso_ms, ms_iso, slice_match, snapshot, state_row, table_exists, tbl

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2019-09-09T00:00:00.000Z")


def t(sec):
    return ms_iso(BASE + sec * 1000)


def rows(n, start=0, dup_every=0):
    out = [{"__time": t(i), "k": i, "v": "v%d" % i} for i in range(start, start + n)]
    if dup_every:
        out += [dict(r) for r in out[::dup_every]]
    return out


def druid_rows(sim, ds, cols=("__time", "k", "v")):
    status, _h, body = sim.sql("SELECT %s FROM %s" % (", ".join(harness.qident(c) for c in cols),
                                                       harness.qident(ds)))
    assert status == 200, body
    lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()][1:]
    return collections.Counter(tuple(None if v is None else str(v) for v in r) for r in lines)


def pg_rows(pg, ds, schema="druid", deleted_col="_druid_deleted"):
    return collections.Counter(tuple(r) for r in pg.psql(
        "SELECT %s, k::text, v FROM %s WHERE NOT %s" % (harness.pg_iso("__time"), tbl(ds, schema), deleted_col)))


class RobustnessTest(EnvTestCase):

    def tearDown(self):
        self.sim.clear_faults()

    def assertExact(self, ds, schema="druid", deleted_col="_druid_deleted"):
        want, got = druid_rows(self.sim, ds), pg_rows(self.pg, ds, schema, deleted_col)
        self.assertEqual(got, want, "missing %s extra %s" % (list((want - got).items())[:5],
                                                             list((got - want).items())[:5]))

    def test_kill_at_any_moment_loses_and_duplicates_nothing(self):
        ds = "rb_kill"
        self.sim.datasource(ds, COLS, rows(3000, dup_every=7))
        self.env.config(datasources=[ds], batch_size=100, max_concurrent_queries=3)
        # Slow, unevenly: slices commit out of order and some are in flight at each kill.
        self.sim.fault("delay", match=slice_match(self.sim, ds), times=-1, delay_seconds=0.05)
        rnd = random.Random(1234)
        kills = 0
        for _ in range(6):
            p = subprocess.Popen([BIN, "-c", self.env.config_path, "--once"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
            time.sleep(rnd.uniform(0.3, 1.2))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
            p.communicate()
            if table_exists(self.pg, ds):
                # whatever is committed is a subset of Druid's rows, never a duplicate
                extra = pg_rows(self.pg, ds) - druid_rows(self.sim, ds)
                self.assertEqual(extra, collections.Counter(), "rows beyond Druid's after a kill")
        self.assertGreater(kills, 0, "the runs finished too fast to be killed")
        self.sim.clear_faults()
        self.env.once()
        self.assertExact(ds)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), str(3000 + 3000 // 7 + 1))
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(2999))
        snap = snapshot(self.pg, ds)
        self.env.once()
        self.assertEqual(snapshot(self.pg, ds), snap)

    def test_kill_during_daemon_then_restart(self):
        ds = "rb_kill_daemon"
        self.sim.datasource(ds, COLS, rows(1500))
        self.env.config(datasources=[ds], batch_size=50, sync_interval_seconds=0.3)
        self.sim.fault("delay", match=slice_match(self.sim, ds), times=-1, delay_seconds=0.05)
        p = subprocess.Popen([BIN, "-c", self.env.config_path], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            harness.wait_for(lambda: table_exists(self.pg, ds) and
                             int(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds))) > 0,
                             timeout=30, what="first slices")
            p.send_signal(signal.SIGKILL)
            p.wait()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.sim.clear_faults()
        self.sim.append(ds, rows(20, start=5000))
        self.env.once()
        self.assertExact(ds)

    def test_postgres_connections_killed_mid_run(self):
        ds = "rb_pgkill"
        self.sim.datasource(ds, COLS, rows(2000))
        self.env.config(datasources=[ds], batch_size=50, max_concurrent_queries=2)
        self.sim.fault("delay", match='FROM "rb_pgkill"', times=-1, delay_seconds=0.05)
        p = subprocess.Popen([BIN, "-c", self.env.config_path, "--once"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        try:
            harness.wait_for(lambda: table_exists(self.pg, ds) and
                             int(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds))) > 0,
                             timeout=30, what="first slices")
            self.pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = 'sync' AND pid <> pg_backend_pid()")
            _out, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertIn(p.returncode, (0, 1), err[-3000:])
        extra = pg_rows(self.pg, ds) - druid_rows(self.sim, ds)
        self.assertEqual(extra, collections.Counter(), "duplicates after PostgreSQL connections were killed")
        self.sim.clear_faults()
        self.env.once()
        self.assertExact(ds)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "2000")

    def test_schema_drift_vanished_column_and_widened_type(self):
        ds = "rb_drift"
        cols = COLS + [("gone", "BIGINT"), ("x", "BIGINT")]
        self.sim.datasource(ds, cols, [dict(r, gone=r["k"] * 10, x=r["k"]) for r in rows(5)])
        self.env.config(datasources=[ds])
        self.env.once()
        self.assertEqual(harness.pg_column_types(self.pg, ds)["x"], "bigint")
        # Druid now has no "gone" and "x" became DOUBLE.
        newcols = COLS + [("x", "DOUBLE")]
        self.sim.datasource(ds, newcols, [dict(r, x=float(r["k"])) for r in rows(5)] +
                            [dict(r, x=r["k"] + 0.5) for r in rows(3, start=5)])
        self.env.once()
        types = harness.pg_column_types(self.pg, ds)
        self.assertIn("gone", types, "a column that disappeared from Druid was dropped")
        self.assertEqual(types["x"], "double precision", "BIGINT -> DOUBLE was not widened")
        got = self.pg.psql("SELECT k::text, x::text, gone::text FROM %s WHERE NOT _druid_deleted AND k >= 5 ORDER BY k"
                           % tbl(ds))
        self.assertEqual(got, [["5", "5.5", None], ["6", "6.5", None], ["7", "7.5", None]])
        self.assertEqual(self.pg.scalar("SELECT x FROM %s WHERE k = 1" % tbl(ds)), "1")
        self.assertEqual(self.pg.scalar("SELECT count(DISTINCT k) FROM %s WHERE NOT _druid_deleted" % tbl(ds)), "8")
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted" % tbl(ds)), "8")

    def test_custom_schema_and_fivetran_prefix(self):
        ds = "rb_prefix"
        self.sim.datasource(ds, COLS, rows(9))
        self.env.config(datasources=[ds], destination_schema="Mirror Schema", metadata_column_prefix="_fivetran_")
        self.env.once()
        schema = "Mirror Schema"
        self.assertTrue(table_exists(self.pg, ds, schema))
        types = harness.pg_column_types(self.pg, ds, schema)
        self.assertEqual(types.get("_fivetran_id"), "uuid")
        self.assertEqual(types.get("_fivetran_synced"), "timestamp with time zone")
        self.assertEqual(types.get("_fivetran_deleted"), "boolean")
        self.assertNotIn("_druid_id", types)
        self.assertTrue(table_exists(self.pg, "druid_syncd_state", schema))
        self.assertTrue(table_exists(self.pg, "information_schema_tables", schema))
        self.assertEqual(state_row(self.pg, ds, schema)["cursor"], t(8))
        self.assertExact(ds, schema, "_fivetran_deleted")
        self.assertFalse(table_exists(self.pg, ds, "druid"))
        # deletes use the prefixed flag
        self.sim.delete(ds, t(8), t(9))
        self.env.config(datasources=[ds], destination_schema=schema, metadata_column_prefix="_fivetran_",
                        lookback_seconds=60)
        self.env.once()
        self.assertEqual(self.pg.psql("SELECT k::text FROM %s WHERE _fivetran_deleted" % tbl(ds, schema)), [["8"]])

    def test_empty_datasource(self):
        ds = "rb_empty"
        self.sim.datasource(ds, COLS, [])
        self.env.config(datasources=[ds])
        self.env.once()
        if table_exists(self.pg, ds):
            self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)), "0")
        self.sim.append(ds, rows(4))
        self.env.once()
        self.assertExact(ds)
        self.assertEqual(state_row(self.pg, ds)["cursor"], t(3))

    def test_postgres_unreachable(self):
        self.env.config(postgres="host=/nonexistent-dir port=1 dbname=x connect_timeout=2")
        t0 = time.time()
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertLess(time.time() - t0, 60)
        self.assertIn("postgres", err.lower())

    def test_query_limit_across_datasources(self):
        names = ["rb_conc_%d" % i for i in range(4)]
        for n in names:
            self.sim.datasource(n, COLS, rows(60))
        self.sim.fault("delay", match=None, times=-1, delay_seconds=0.05)
        self.sim._control("DELETE", "stats")
        self.env.config(datasources=names, batch_size=10, max_concurrent_queries=1)
        self.env.once()
        self.assertEqual(self.sim.stats()["max_inflight"], 1)
        self.sim._control("DELETE", "stats")
        self.env.config(datasources=names, batch_size=10, max_concurrent_queries=3)
        for n in names:
            self.sim.append(n, rows(40, start=100))
        self.env.once()
        self.assertLessEqual(self.sim.stats()["max_inflight"], 3)
        self.sim.clear_faults()
        for n in names:
            self.assertExact(n)

    def test_request_timeout_in_context(self):
        ds = "rb_ctx"
        self.sim.datasource(ds, COLS, rows(3))
        self.sim.clear_queries()
        self.env.config(datasources=[ds], request_timeout_seconds=42)
        self.env.once()
        qs = self.sim.queries()
        self.assertTrue(qs)
        for q in qs:
            self.assertEqual(int(str(q["context"].get("timeout"))), 42000, q["sql"])

    def test_query_timeout_is_retried(self):
        # A slice slower than request_timeout_seconds: Druid answers 504 (or the client gives
        # up); retried, and once Druid is fast again the data is exact.
        ds = "rb_slowq"
        self.sim.datasource(ds, COLS, rows(30))
        self.env.config(datasources=[ds], batch_size=10)
        self.env.once()
        self.sim.append(ds, rows(10, start=30))
        self.sim.fault("delay", match=slice_match(self.sim, ds), times=1, delay_seconds=5)
        self.env.config(datasources=[ds], batch_size=10, request_timeout_seconds=1)
        t0 = time.time()
        self.env.once()
        self.assertLess(time.time() - t0, 30)
        self.assertExact(ds)


class OldDruidTest(EnvTestCase):
    """Druid 30 (no HTTP trailer: truncation shows only as a missing end marker) with the
    legacy error envelope."""

    env_args = dict(legacy_errors=True, version="30.0.0")

    def tearDown(self):
        self.sim.clear_faults()

    def test_truncation_without_trailer(self):
        ds = "old_trunc"
        self.sim.datasource(ds, COLS, rows(40))
        self.env.config(datasources=[ds], batch_size=10)
        self.env.once()
        self.sim.append(ds, rows(40, start=40))
        match = slice_match(self.sim, ds)
        snap, cur = snapshot(self.pg, ds), state_row(self.pg, ds)["cursor"]
        self.sim.fault("truncate", match=match, times=-1, after_rows=5)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err[-3000:])
        self.assertEqual(snapshot(self.pg, ds), snap, "a truncated response (no trailer) was committed")
        self.assertEqual(state_row(self.pg, ds)["cursor"], cur)
        self.sim.clear_faults()
        self.sim.fault("truncate", match=match, times=1, after_rows=5)
        self.env.once()
        self.assertEqual(pg_rows(self.pg, ds), druid_rows(self.sim, ds))

    def test_legacy_errors(self):
        bad, good = "old_bad", "old_good"
        self.sim.datasource(bad, COLS, rows(5))
        self.sim.datasource(good, COLS, rows(15))
        self.sim.fault("status", match='FROM "old_bad"', times=-1, error="unknown_table")
        self.sim.fault("status", match='FROM "old_good"', times=1, error="capacity")
        self.env.config(datasources=[bad, good], batch_size=10)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err[-3000:])
        self.assertIn(bad, err)
        self.assertEqual(pg_rows(self.pg, good), druid_rows(self.sim, good))


if __name__ == "__main__":
    harness.main()
