"""Row id schemes: a table records the scheme its ids were made with (state column
id_scheme); a table written with an older scheme (or before schemes were recorded) is read
again once and its rows rewritten with the current ids, never left with two live copies of a
row. A column widened from BIGINT to DOUBLE keeps every id."""
import unittest

import harness
from harness import EnvTestCase, ms_iso, iso_ms, state_row, tbl

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2024-03-01T00:00:00.000Z")


def rows(n, start=0):
    # three days of rows, one every 30 minutes; two identical rows per day
    out = [{"__time": ms_iso(BASE + (start + i) * 1800000), "k": start + i, "v": "r"} for i in range(n)]
    out += [{"__time": ms_iso(BASE + d * 86400000), "k": -1, "v": "dup"} for d in range(3)]
    return out


class IdSchemeTest(EnvTestCase):

    def counts(self, ds):
        live = int(self.pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted" % tbl(ds)))
        flagged = int(self.pg.scalar("SELECT count(*) FROM %s WHERE _druid_deleted" % tbl(ds)))
        return live, flagged

    def ids(self, ds):
        return sorted(r[0] for r in self.pg.psql("SELECT _druid_id::text FROM %s" % tbl(ds)))

    def test_new_table_records_the_scheme(self):
        ds = "ids_new"
        self.sim.datasource(ds, COLS, rows(144))
        self.env.config(datasources=[ds], batch_size=50)
        self.env.once()
        self.assertEqual(state_row(self.pg, ds)["id_scheme"], 2)
        self.assertEqual(self.counts(ds), (147, 0))

    def test_older_scheme_is_rewritten_once(self):
        ds = "ids_old"
        self.sim.datasource(ds, COLS, rows(144))
        self.env.config(datasources=[ds], batch_size=50)
        self.env.once()
        # what a table written by an older version looks like: other ids, no scheme recorded
        self.pg.psql("UPDATE %s SET _druid_id = gen_random_uuid()" % tbl(ds))
        self.pg.psql("UPDATE %s SET id_scheme = NULL WHERE datasource = '%s'"
                     % (tbl("druid_syncd_state"), ds))
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 0, err[-2000:])
        self.assertIn("reading every row again to rewrite them", err)
        self.assertEqual(self.counts(ds), (147, 0), "old-scheme rows left beside the new ones")
        self.assertEqual(state_row(self.pg, ds)["id_scheme"], 2)
        after = self.ids(ds)
        # the next cycle finds nothing to do: the ids are those a fresh sync gives
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 0, err[-2000:])
        self.assertNotIn("reading every row again", err)
        self.assertEqual(self.ids(ds), after)
        fresh = "ids_fresh"
        self.sim.datasource(fresh, COLS, rows(144))
        self.env.config(datasources=[fresh], batch_size=50)
        self.env.once()
        self.assertEqual(self.ids(fresh), after)

    def test_widening_keeps_ids(self):
        ds = "ids_widen"
        self.sim.datasource(ds, COLS, rows(144))
        self.env.config(datasources=[ds], batch_size=50)
        self.env.once()
        before = self.ids(ds)
        # Druid now reports k as DOUBLE (a reindex: new segments in every chunk, so every
        # chunk is read again, and Druid prints 1.0 where it printed 1)
        self.sim.datasource(ds, [("__time", "TIMESTAMP"), ("k", "DOUBLE"), ("v", "VARCHAR")],
                            [dict(r, k=float(r["k"])) for r in rows(144)])
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 0, err[-2000:])
        self.assertEqual(harness.pg_column_types(self.pg, ds)["k"], "double precision")
        self.assertEqual(self.ids(ds), before)
        self.assertEqual(self.counts(ds), (147, 0))


if __name__ == "__main__":
    harness.main()
