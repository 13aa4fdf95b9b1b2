"""Names never collide: datasources named like another's shortened name or like the
daemon's own tables and indexes, Druid columns named like the system columns or equal after
shortening. Each test uses its own destination schema, so their tables never meet."""
import json
import unittest

import harness
from harness import EnvTestCase, iso_ms, ms_iso, qident, sqlstr, state_row, table_exists, tbl

BASE = iso_ms("2023-06-01T00:00:00.000Z")
COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]

# 70 bytes; its shortened form (first 46 bytes + "_" + XXH3-64 of the name), as test_pgnames
LONG_DS = "a_rather_long_datasource_name_that_goes_on_and_on_beyond_the_limit_one"
LONG_DS_SHORT = "a_rather_long_datasource_name_that_goes_on_and_84fec0bdfcf7e56b"
C46 = "c" * 46
C70 = "c" * 70
C70X_SHORT = C46 + "_f6e75756b7239b3e"  # the shortened form of C70 + "x"


def t(sec):
    return ms_iso(BASE + sec * 1000)


def rows(n, tag, start=0):
    """n rows whose v says which datasource they belong to."""
    return [{"__time": t(i), "k": i, "v": "%s-%d" % (tag, i)} for i in range(start, start + n)]


class CollisionCase(EnvTestCase):
    schema = None  # set per test

    def sync(self, names, schema, expect=0, **cfg):
        self.env.config(datasources=list(names), destination_schema=schema, **cfg)
        return self.env.once(expect=expect)

    def dest(self, ds, schema):
        st = state_row(self.pg, ds, schema)
        self.assertIsNotNone(st, "no state row for %r" % ds)
        return st["destination_table"]

    def own_rows(self, ds, schema, tag):
        """Asserts the datasource's table holds exactly its own rows, none flagged deleted."""
        d = self.dest(ds, schema)
        self.assertTrue(table_exists(self.pg, d, schema), "%r: table %r missing" % (ds, d))
        got = self.pg.psql("SELECT v, _druid_deleted::text FROM %s ORDER BY k" % tbl(d, schema))
        vs = [r[0] for r in got]
        self.assertTrue(vs and all(v.startswith(tag + "-") for v in vs),
                        "%r: table %r holds rows of another datasource: %s" % (ds, d, vs[:5]))
        self.assertEqual([r[1] for r in got], ["false"] * len(got),
                         "%r: rows flagged deleted in %r" % (ds, d))
        return len(got)

    def relkind(self, name, schema):
        return self.pg.scalar("SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n"
                              " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
                              % (sqlstr(schema), sqlstr(name)))

    def range_indexes(self, table, schema, column="__time"):
        """Names of the indexes of table whose first key is column."""
        return [r[0] for r in self.pg.psql(
            "SELECT ic.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]"
            " WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s"
            % (sqlstr(schema), sqlstr(table), sqlstr(column)))]

    def tables_in(self, schema):
        return sorted(r[0] for r in self.pg.psql(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s" % sqlstr(schema)))


class ShortenedNameTest(CollisionCase):

    def check_pair(self, schema, first, second):
        tags = {LONG_DS: "long", LONG_DS_SHORT: "short"}
        self.sim.datasource(first, COLS, rows(5, tags[first]))
        self.sync([first], schema)
        self.sim.datasource(second, COLS, rows(7, tags[second]))
        self.sync([LONG_DS, LONG_DS_SHORT], schema)
        # a second cycle: before, each one's merge flagged the other's rows as vanished
        self.sim.append(LONG_DS, rows(1, "long", start=50))
        self.sim.append(LONG_DS_SHORT, rows(1, "short", start=60))
        self.sync([LONG_DS, LONG_DS_SHORT], schema)
        self.assertNotEqual(self.dest(LONG_DS, schema), self.dest(LONG_DS_SHORT, schema))
        want = {first: 6, second: 8}
        for ds in (LONG_DS, LONG_DS_SHORT):
            self.assertEqual(self.own_rows(ds, schema, tags[ds]), want[ds], ds)
            self.assertIsNone(state_row(self.pg, ds, schema)["last_error"])
        return self.dest(LONG_DS, schema), self.dest(LONG_DS_SHORT, schema)

    def test_long_one_first(self):
        d_long, d_short = self.check_pair("short_a", LONG_DS, LONG_DS_SHORT)
        self.assertEqual(d_long, LONG_DS_SHORT)  # it was there first: its usual name
        self.assertLessEqual(len(d_short.encode()), 63)

    def test_short_one_first(self):
        d_long, d_short = self.check_pair("short_b", LONG_DS_SHORT, LONG_DS)
        self.assertEqual(d_short, LONG_DS_SHORT)  # verbatim
        self.assertLessEqual(len(d_long.encode()), 63)


# Every relation the daemon creates or reserves in the destination schema, for a schema
# where datasource "ix" exists: its range index and its primary key included.
OWN_NAMES = ["druid_syncd_state", "information_schema_tables", "information_schema_columns",
             "druid_syncd_chunks", "druid_syncd_leases", "druid_syncd_state_pkey",
             "druid_syncd_chunks_pkey", "druid_syncd_ix___time", "ix_pkey"]
RESERVED = OWN_NAMES[:5]


class OwnNamesTest(CollisionCase):
    """Datasources named like every table and index the daemon creates, created before
    and after the datasource whose index they are named like."""

    def columns_of(self, table, schema):
        return sorted(harness.pg_column_types(self.pg, table, schema).items())

    def check_all(self, schema):
        all_ds = ["ix"] + OWN_NAMES
        dests = {ds: self.dest(ds, schema) for ds in all_ds}
        self.assertEqual(len(set(dests.values())), len(all_ds), "two datasources share a table: %s" % dests)
        for ds in all_ds:
            tag = "ix" if ds == "ix" else "own%d" % OWN_NAMES.index(ds)
            self.assertEqual(self.relkind(dests[ds], schema), "r", "%r: %r is not a table" % (ds, dests[ds]))
            self.assertGreater(self.own_rows(ds, schema, tag), 0)
            self.assertIsNone(state_row(self.pg, ds, schema)["last_error"], ds)
            self.assertEqual(len(self.range_indexes(dests[ds], schema)), 1,
                             "%r: no (or a duplicate) index on __time" % ds)
        for ds in RESERVED:
            self.assertNotEqual(dests[ds], ds, "a datasource took the daemon's table name %s" % ds)
        # the daemon's own tables are untouched by the datasources named like them
        state_cols = [c for c, _ in self.columns_of("druid_syncd_state", schema)]
        self.assertIn("column_names", state_cols)
        self.assertNotIn("k", state_cols)
        for m in ("information_schema_tables", "information_schema_columns"):
            self.assertNotIn("_druid_id", [c for c, _ in self.columns_of(m, schema)])
        self.assertEqual(self.relkind("druid_syncd_state_pkey", schema), "i")
        return dests

    def second_cycle(self, schema, dests):
        for i, ds in enumerate(OWN_NAMES):
            self.sim.append(ds, rows(1, "own%d" % i, start=40))
        self.sim.append("ix", rows(1, "ix", start=40))
        ntables = self.tables_in(schema)
        self.sync(["ix"] + OWN_NAMES, schema)
        self.assertEqual(self.check_all(schema), dests, "names changed on the second cycle")
        self.assertEqual(self.tables_in(schema), ntables, "a new table appeared on the second cycle")

    def add_own(self):
        for i, ds in enumerate(OWN_NAMES):
            self.sim.datasource(ds, COLS, rows(3 + i, "own%d" % i))

    def test_index_owner_first(self):
        schema = "own_a"
        self.sim.datasource("ix", COLS, rows(4, "ix"))
        self.sync(["ix"], schema)
        # its range index has the usual name, and its primary key PostgreSQL's default
        self.assertEqual(self.range_indexes("ix", schema), ["druid_syncd_ix___time"])
        self.assertEqual(self.relkind("ix_pkey", schema), "i")
        self.add_own()
        self.sync(["ix"] + OWN_NAMES, schema)
        dests = self.check_all(schema)
        # names of existing indexes are taken: those datasources get other table names
        self.assertNotEqual(dests["druid_syncd_ix___time"], "druid_syncd_ix___time")
        self.assertNotEqual(dests["ix_pkey"], "ix_pkey")
        self.assertEqual(dests["ix"], "ix")
        self.second_cycle(schema, dests)

    def test_index_owner_second(self):
        schema = "own_b"
        self.add_own()
        self.sync(OWN_NAMES, schema)
        self.sim.datasource("ix", COLS, rows(4, "ix"))
        self.sync(["ix"] + OWN_NAMES, schema)
        dests = self.check_all(schema)
        # the datasources came first: they keep their names, ix's index and key go elsewhere
        self.assertEqual(dests["druid_syncd_ix___time"], "druid_syncd_ix___time")
        self.assertEqual(dests["ix_pkey"], "ix_pkey")
        self.assertEqual(dests["ix"], "ix")
        idx = self.range_indexes("ix", schema)
        self.assertEqual(len(idx), 1)
        self.assertNotEqual(idx[0], "druid_syncd_ix___time")
        self.second_cycle(schema, dests)

    def test_index_found_by_column_not_name(self):
        """A table whose index was renamed (or made by hand) gets no second index."""
        schema = "own_c"
        self.sim.datasource("renamed_ix", COLS, rows(3, "r"))
        self.sync(["renamed_ix"], schema)
        [idx] = self.range_indexes("renamed_ix", schema)
        self.pg.psql("ALTER INDEX %s RENAME TO my_own_index" % tbl(idx, schema))
        self.sim.append("renamed_ix", rows(1, "r", start=10))
        self.sync(["renamed_ix"], schema)
        self.assertEqual(self.range_indexes("renamed_ix", schema), ["my_own_index"])
        self.assertEqual(self.own_rows("renamed_ix", schema, "r"), 4)


class ColumnNamesTest(CollisionCase):

    def mapping(self, ds, schema):
        return state_row(self.pg, ds, schema)["column_names"]

    def meta_pg_columns(self, ds, schema):
        return dict(self.pg.psql("SELECT column_name, pg_column FROM %s WHERE table_name = %s"
                                 % (tbl("information_schema_columns", schema), sqlstr(ds))))

    def values(self, ds, schema, druid_cols):
        """{druid column: [values by k]} read through the recorded mapping."""
        m = self.mapping(ds, schema)
        d = self.dest(ds, schema)
        out = {}
        for c in druid_cols:
            out[c] = [r[0] for r in self.pg.psql("SELECT %s::text FROM %s ORDER BY k"
                                                   % (qident(m[c]), tbl(d, schema)))]
        return out

    def check_columns(self, ds, schema, cols, data, system):
        """Two cycles; every Druid column's values are in its own PostgreSQL column."""
        self.sim.datasource(ds, cols, data)
        self.sync([ds], schema, metadata_column_prefix=system[0][:-2])
        self.sync([ds], schema, metadata_column_prefix=system[0][:-2])
        names = [c for c, _ in cols]
        m = self.mapping(ds, schema)
        self.assertEqual(sorted(m), sorted(names))
        self.assertEqual(len(set(m.values())), len(names), "two columns share a name: %s" % m)
        for c in names:
            self.assertNotIn(m[c], system, "column %r mapped onto a system column" % c)
            self.assertLessEqual(len(m[c].encode()), 63)
        got = self.values(ds, schema, [c for c in names if c != "__time"])
        for c in names:
            if c in ("__time", "k"):
                continue
            self.assertEqual(got[c], [str(r[c]) for r in data], c)
        d = self.dest(ds, schema)
        # the system columns hold what they should
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE %s" % (tbl(d, schema), qident(system[2]))),
                         "0")
        self.assertEqual(self.pg.scalar("SELECT count(DISTINCT %s) FROM %s" % (qident(system[0]), tbl(d, schema))),
                         str(len(data)))
        self.assertEqual(self.meta_pg_columns(ds, schema), m)
        return m

    def test_system_column_names(self):
        cols = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("_druid_id", "VARCHAR"),
                ("_druid_synced", "VARCHAR"), ("_druid_deleted", "BIGINT"), ("xmin", "VARCHAR")]
        data = [{"__time": t(i), "k": i, "_druid_id": "id%d" % i, "_druid_synced": "s%d" % i,
                 "_druid_deleted": 100 + i, "xmin": "x%d" % i} for i in range(4)]
        m = self.check_columns("sys_cols", "cols_a", cols, data,
                               ["_druid_id", "_druid_synced", "_druid_deleted"])
        self.assertEqual(m["k"], "k")
        self.assertEqual(m["__time"], "__time")

    def test_fivetran_prefix(self):
        cols = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("_fivetran_id", "VARCHAR"),
                ("_druid_id", "VARCHAR")]
        data = [{"__time": t(i), "k": i, "_fivetran_id": "f%d" % i, "_druid_id": "d%d" % i}
                for i in range(3)]
        m = self.check_columns("ft_cols", "cols_b", cols, data,
                               ["_fivetran_id", "_fivetran_synced", "_fivetran_deleted"])
        self.assertEqual(m["_druid_id"], "_druid_id")  # no system column under this prefix

    def test_long_columns(self):
        cols = [("__time", "TIMESTAMP"), ("k", "BIGINT"), (C70 + "x", "VARCHAR"),
                (C70 + "y", "VARCHAR"), (C70X_SHORT, "VARCHAR")]
        data = [{"__time": t(i), "k": i, C70 + "x": "x%d" % i, C70 + "y": "y%d" % i,
                 C70X_SHORT: "s%d" % i} for i in range(3)]
        m = self.check_columns("long_cols", "cols_c", cols, data,
                               ["_druid_id", "_druid_synced", "_druid_deleted"])
        self.assertEqual(m[C70X_SHORT], C70X_SHORT)  # verbatim: it fits

    def test_mapping_survives_restart_and_new_columns(self):
        schema, ds = "cols_d", "drifting"
        sysc = ["_druid_id", "_druid_synced", "_druid_deleted"]
        cols = [("__time", "TIMESTAMP"), ("k", "BIGINT"), (C70 + "x", "VARCHAR")]
        data = [{"__time": t(i), "k": i, C70 + "x": "x%d" % i} for i in range(3)]
        self.sim.datasource(ds, cols, data)
        self.sync([ds], schema)
        m1 = self.mapping(ds, schema)
        self.assertEqual(m1[C70 + "x"], C70X_SHORT)
        tables = self.tables_in(schema)
        self.assertEqual(self.meta_pg_columns(ds, schema), m1)
        # new columns between runs: one named exactly like the existing shortened column,
        # one like a system column, one plain
        for c in (C70X_SHORT, "_druid_synced", "plain"):
            self.sim.add_column(ds, c, "VARCHAR")
        self.sim.append(ds, [{"__time": t(10), "k": 10, C70 + "x": "x10", C70X_SHORT: "s10",
                              "_druid_synced": "ds10", "plain": "p10"}])
        self.sync([ds], schema)
        m2 = self.mapping(ds, schema)
        for c, pg in m1.items():
            self.assertEqual(m2[c], pg, "column %r renamed after a new column arrived" % c)
        self.assertNotEqual(m2[C70X_SHORT], C70X_SHORT)  # taken by the older column
        self.assertNotIn(m2["_druid_synced"], sysc)
        self.assertEqual(m2["plain"], "plain")
        self.assertEqual(len(set(m2.values())), len(m2))
        self.assertEqual(self.tables_in(schema), tables, "a new table appeared")
        self.assertEqual(self.meta_pg_columns(ds, schema), m2)
        got = self.values(ds, schema, [C70 + "x", C70X_SHORT, "_druid_synced", "plain"])
        self.assertEqual(got[C70 + "x"], ["x0", "x1", "x2", "x10"])
        self.assertEqual(got[C70X_SHORT], [None, None, None, "s10"])
        self.assertEqual(got["_druid_synced"], [None, None, None, "ds10"])
        # another run (a restart): the same names, the same tables, the rows still there
        self.sync([ds], schema)
        self.assertEqual(self.mapping(ds, schema), m2)
        self.assertEqual(self.tables_in(schema), tables)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s WHERE NOT _druid_deleted"
                                        % tbl(self.dest(ds, schema), schema)), "4")
        # the metadata table is rewritten each discovery: pg_column comes back from the state
        self.assertEqual(self.meta_pg_columns(ds, schema), m2)


class TwoInstancesTest(CollisionCase):
    """Two daemons preparing colliding datasources in one schema at the same moment: the
    allocation is serialised, so both sync, into different tables."""

    def test_concurrent_allocation(self):
        import os
        import subprocess
        self.sim.datasource(LONG_DS, COLS, rows(5, "long"))
        self.sim.datasource(LONG_DS_SHORT, COLS, rows(6, "short"))
        self.sim.datasource("warmup", COLS, rows(1, "w"))
        for round_ in range(3):
            schema = "twice_%d" % round_
            # the schema and the state table exist already (two instances creating them at
            # the very same moment is start-up's business, not naming's)
            self.sync(["warmup"], schema)
            paths = []
            for i, ds in enumerate((LONG_DS, LONG_DS_SHORT)):
                cfg = self.env.config(datasources=[ds], destination_schema=schema)
                path = os.path.join(self.env.tmp, "two_%d.json" % i)
                with open(path, "w") as f:
                    json.dump(cfg, f)
                paths.append(path)
            procs = [subprocess.Popen([harness.BIN, "-c", p, "--once"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for p in paths]
            for p in procs:
                _out, err = p.communicate(timeout=120)
                self.assertEqual(p.returncode, 0, err[-3000:])
            self.assertNotEqual(self.dest(LONG_DS, schema), self.dest(LONG_DS_SHORT, schema))
            self.assertEqual(self.own_rows(LONG_DS, schema, "long"), 5)
            self.assertEqual(self.own_rows(LONG_DS_SHORT, schema, "short"), 6)
            # both refreshed the metadata tables: each catalog row is there once
            for m in ("information_schema_tables", "information_schema_columns"):
                self.assertEqual(self.pg.scalar(
                    "SELECT count(*) FROM (SELECT 1 FROM %s t GROUP BY t.* HAVING count(*) > 1) d"
                    % tbl(m, schema)), "0", "%s holds rows twice" % m)


class LegacyStateTest(CollisionCase):
    """Tables made by the previous version (state rows without column_names) keep their
    tables and column names."""

    def test_previous_version_state(self):
        schema, ds = "legacy", "old_ds"
        cols = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
        self.sim.datasource(ds, cols, rows(3, "old"))
        self.sync([ds], schema)
        # what the previous version left: no mapping recorded
        self.pg.psql("UPDATE %s SET column_names = NULL" % tbl("druid_syncd_state", schema))
        self.pg.psql("UPDATE %s SET pg_column = NULL" % tbl("information_schema_columns", schema))
        self.sim.add_column(ds, "w", "VARCHAR")
        self.sim.append(ds, [{"__time": t(20), "k": 20, "v": "old-20", "w": "w20"}])
        self.sync([ds], schema)
        st = state_row(self.pg, ds, schema)
        self.assertEqual(st["destination_table"], ds)
        self.assertEqual(st["column_names"], {"__time": "__time", "k": "k", "v": "v", "w": "w"})
        self.assertEqual(self.own_rows(ds, schema, "old"), 4)
        self.assertEqual(self.tables_in(schema), sorted(
            [ds, "druid_syncd_chunks", "druid_syncd_leases", "druid_syncd_state",
             "information_schema_columns", "information_schema_tables"]))

    def test_previous_version_shared_table(self):
        """The previous version gave a long datasource and one named like its shortened
        name the same table: the one named like the table keeps it, the other moves to a
        table of its own and syncs from the beginning."""
        schema = "legacy_shared"
        self.sim.datasource(LONG_DS_SHORT, COLS, rows(4, "short"))
        self.sim.datasource(LONG_DS, COLS, rows(5, "long"))
        self.sync([LONG_DS_SHORT], schema)
        self.pg.psql("INSERT INTO %s (datasource, destination_table, mode, incremental_column, cursor,"
                     " status) VALUES (%s, %s, 'incremental', '__time', %s, 'ok')"
                     % (tbl("druid_syncd_state", schema), sqlstr(LONG_DS), sqlstr(LONG_DS_SHORT),
                        sqlstr(t(100))))
        err = self.sync([LONG_DS, LONG_DS_SHORT], schema)
        self.assertEqual(self.dest(LONG_DS_SHORT, schema), LONG_DS_SHORT)
        moved = self.dest(LONG_DS, schema)
        self.assertNotEqual(moved, LONG_DS_SHORT)
        self.assertIn("new table", err)
        # from the beginning: the recorded cursor (beyond every row) did not skip them
        self.assertEqual(self.own_rows(LONG_DS, schema, "long"), 5)
        self.assertEqual(self.own_rows(LONG_DS_SHORT, schema, "short"), 4)
        self.sync([LONG_DS, LONG_DS_SHORT], schema)
        self.assertEqual(self.dest(LONG_DS, schema), moved)
        self.assertEqual(self.own_rows(LONG_DS_SHORT, schema, "short"), 4)


if __name__ == "__main__":
    harness.main()
