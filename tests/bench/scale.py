#!/usr/bin/python3
"""Scale benchmark (issue 10 point 7): what several instances sharing one destination cost
PostgreSQL and Druid, and what one instance handles on this machine. Not part of the test
suite; run it by hand:

    /usr/bin/python3 tests/bench/scale.py [--quick] [--reps R]

A full run takes about 10 minutes, --quick about 2 (shorter pgbench runs, fewer sizes).
Everything runs on one throwaway PostgreSQL (tests/integration/harness.py, fsync=off,
autovacuum off for the run) and the Druid test server (tests/druid_sim/druid_sim.py).

1. Fence cost per slice: pgbench (-M simple, one message per transaction, as the daemon
   sends its commit string) of "BEGIN; INSERT one row; COMMIT" against the same with
   "SELECT druid_syncd_fence(unit, owner, epoch)" before COMMIT; the lease table and the
   fence function are the ones the real binary creates (a --once of a tiny datasource).
   One client, and four clients fencing the same unit (one datasource's four slices).
1b. Chunk units (a first load read by several instances): the claim transaction of one chunk
   (pgbench, 1 and 4 clients), its WAL, and a commit's chunk fence with its dirty mark.
2. Renewal cost: the renewal transaction exactly as sinks/pglease.c sends it (BEGIN with
   the SET LOCAL limits; UPDATE ... FROM unnest(text[], bigint[]); the census count; COMMIT) for
   1, 100, 1,000 and 10,000 units held, in a lease table of 10,000 datasource units and 100
   heartbeats; ms per renewal (pgbench -r per statement) and WAL bytes per renewal.
3. Lease-table contention: 2, 8, 32 pgbench clients, each an "instance" renewing its own
   100 units, claiming one of them, fencing slices on them, and stealing units of a shared
   pool that expire at once; transactions/s and latency per kind.
4. One instance with the real binary: N datasources of 6 rows (3 hourly segments) each;
   --once first sync, a no-change --once, and a --once after one late row in every
   datasource: wall time, daemon CPU, PostgreSQL transactions per datasource
   (pg_stat_database.xact_commit), Druid queries, the sys.segments query as the server
   logged it. For the largest size also the daemon itself (not --once) for two rounds of
   no-change cycles (transactions, daemon and backend CPU, WAL per datasource cycle), and
   where PostgreSQL's time goes in a no-change cycle (log_min_duration_statement = 0).
   Then sys.segments alone for datasources x segments up to 100,000 segments: response
   size and time, and the daemon's no-change cycle over that snapshot.
5. The derived table: measured figures, then the extrapolation to 100 instances and 10,000
   datasources, each line marked measured or derived.

The statement texts are copied from sinks/pglease.c and checked against it at start (a
warning if they drifted). Parameters are written as literals (the daemon sends them as
text parameters of the same unnamed statement: the same custom plan).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402

SCHEMA = "druid"
LEASES = '"druid"."druid_syncd_leases"'
FENCE = '"druid"."druid_syncd_fence"'
# pgsink.c: the limits every transaction of the daemon carries (postgres_timeout_seconds 600)
SET_LOCAL = ("SET LOCAL statement_timeout = 600000; SET LOCAL lock_timeout = 300000;"
             " SET LOCAL idle_in_transaction_session_timeout = 600000")

# sinks/pglease.c, pgsink_lease_renew and pgsink_lease_claim ($n as the daemon numbers them)
RENEW = ("UPDATE " + LEASES + " AS l SET expires_at = clock_timestamp() + make_interval(secs => $2::float8),"
         " renewed_at = clock_timestamp()"
         " FROM unnest($3::text[], $4::bigint[]) AS u(unit, epoch)"
         " WHERE l.unit = u.unit AND l.epoch = u.epoch AND l.owner = $1"
         " AND l.expires_at > clock_timestamp() RETURNING l.unit")
# the renewal before a429d23: the units as one jsonb set (kept to show why it changed)
RENEW_JSONB = RENEW.replace("unnest($3::text[], $4::bigint[]) AS u(unit, epoch)",
                            "jsonb_to_recordset($3::jsonb) AS u(unit text, epoch bigint)")
CENSUS = ("SELECT count(*), coalesce(min(coalesce(c.n, 0)), 0) FROM " + LEASES + " AS h LEFT JOIN"
          " (SELECT owner, count(*) AS n FROM " + LEASES + " WHERE unit LIKE 'ds:%'"
          " AND expires_at > clock_timestamp() GROUP BY owner) AS c ON c.owner = h.owner"
          " WHERE h.unit LIKE 'instance:%' AND h.expires_at > clock_timestamp()")
CLAIM_INSERT = ("INSERT INTO " + LEASES + " (unit, datasource, renewed_at) VALUES ($1, $2, clock_timestamp())"
                " ON CONFLICT (unit) DO NOTHING")
CLAIM_UPDATE = ("UPDATE " + LEASES + " SET epoch = CASE WHEN owner = $2 AND epoch = $4::bigint"
                " AND expires_at > clock_timestamp() THEN epoch ELSE epoch + 1 END,"
                " acquired_at = CASE WHEN owner = $2 AND epoch = $4::bigint"
                " AND expires_at > clock_timestamp() THEN acquired_at ELSE clock_timestamp() END,"
                " owner = $2, renewed_at = clock_timestamp(),"
                " expires_at = clock_timestamp() + make_interval(secs => $3::float8)"
                " WHERE unit = $1 AND (owner = $2 OR ((owner IS NULL OR expires_at IS NULL"
                " OR expires_at <= clock_timestamp()) AND COALESCE(expires_at, renewed_at,"
                " '-infinity') <= clock_timestamp() - make_interval(secs => $5::float8)))"
                " RETURNING epoch, expires_at::text")
# daemon/... DRUIDSQL_SEGMENTS (common/druidsql.c)
SEGMENTS_SQL = ('SELECT "datasource", "start", "end", "segment_id", "size", "num_rows", "is_available",'
                ' "is_realtime" FROM sys.segments WHERE "is_active" = 1')

CLK = os.sysconf("SC_CLK_TCK")
HOUR_MS = 3600000
T0_MS = 1577836800000  # 2020-01-01T00:00:00Z, where the test server's generate starts


# -- small helpers --------------------------------------------------------------------------

def lit(v):
    return "'" + str(v).replace("'", "''") + "'"


def bind(sql, *params):
    """$1..$n replaced by text literals (highest number first, so $1 does not eat $10)."""
    for i in range(len(params), 0, -1):
        sql = sql.replace("$%d" % i, lit(params[i - 1]))
    return sql


def c_literals(path, func):
    """The C string literals of one function of a source file, concatenated."""
    with open(path) as f:
        src = f.read()
    i = src.index(func)
    j = src.find("\n}\n", i)
    body = src[i:j]
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body)).replace('\\"', '"')


def check_statements():
    """Warns when the copies above drifted from sinks/pglease.c."""
    src = os.path.join(harness.SOURCE_DIR, "sinks", "pglease.c")
    out = []
    try:
        renew = c_literals(src, "void pgsink_lease_renew(")
        claim = c_literals(src, "void pgsink_lease_claim(")
        fence = c_literals(src, "void pglease_fence_lit(")
    except (OSError, ValueError) as e:
        return ["cannot read %s: %s" % (src, e)]
    for name, stmt, lits in (("renewal", RENEW, renew), ("claim insert", CLAIM_INSERT, claim),
                             ("claim update", CLAIM_UPDATE, claim)):
        for piece in stmt.replace(LEASES, "\x00").split("\x00"):
            if piece.strip() and piece.strip() not in lits:
                out.append("the %s statement differs from %s: %r" % (name, src, piece.strip()[:80]))
    if "SELECT " not in fence:
        out.append("the fence statement differs from %s" % src)
    return out


def fig(values, fmt="%.0f"):
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt % med
    return "%s [%s-%s]" % (fmt % med, fmt % min(values), fmt % max(values))


def med(values):
    return statistics.median(values) if values else float("nan")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# -- pgbench --------------------------------------------------------------------------------

class Bench:
    def __init__(self, pg, tmp):
        self.pg, self.tmp = pg, tmp
        self.exe = os.path.join(harness._pgbin(), "pgbench")
        self.n = 0

    def script(self, text):
        self.n += 1
        path = os.path.join(self.tmp, "s%d.sql" % self.n)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run(self, db, scripts, clients=1, secs=None, txns=None, per_stmt=False):
        """scripts: [(path, weight)]. -> {"tps", "lat_ms", "scripts": [{tps, lat_ms, n}],
        "stmts": [ms per command of the first script]}."""
        cmd = [self.exe, "-n", "-M", "simple", "-c", str(clients), "-j", str(min(clients, 2))]
        cmd += ["-T", str(secs)] if secs else ["-t", str(txns)]
        if per_stmt:
            cmd.append("-r")
        for path, w in scripts:
            cmd += ["-f", "%s@%d" % (path, w)]
        cmd.append(db)
        env = dict(os.environ, **self.pg.env)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        out = p.stdout
        if p.returncode != 0 or "number of failed transactions: 0 " not in out:
            raise SystemExit("pgbench failed (%d):\n%s\n%s" % (p.returncode, out[-3000:], p.stderr[-3000:]))
        res = {"tps": float(re.search(r"tps = ([\d.]+) \(without", out).group(1)),
               "lat_ms": float(re.search(r"^latency average = ([\d.]+) ms", out, re.M).group(1)),
               "scripts": [], "stmts": []}
        for m in re.finditer(r"SQL script \d+: .*?\n - weight.*?\n - (\d+) transactions \([\d.]+% of total, "
                             r"tps = ([\d.]+)\)(.*?)(?=SQL script|\Z)", out, re.S):
            lat = re.search(r" - latency average = ([\d.]+) ms", m.group(3))
            res["scripts"].append({"n": int(m.group(1)), "tps": float(m.group(2)),
                                   "lat_ms": float(lat.group(1)) if lat else None})
        if per_stmt:
            sect = out.split("statement latencies in milliseconds", 1)[1]
            for line in sect.splitlines()[1:]:
                m = re.match(r"\s+([\d.]+)\s+\d+\s+(.*)", line)
                if not m:
                    if res["stmts"]:
                        break
                    continue
                res["stmts"].append((float(m.group(1)), m.group(2)))
        return res


def psql_in(pg, db, sql):
    """Runs SQL given on stdin (no argument-length limit): its output lines."""
    p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", pg.conninfo(db)],
                       input=sql, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("psql failed: %s" % p.stderr[-2000:])
    return [x for x in p.stdout.splitlines() if x]


def wal_lsn(pg, db):
    return pg.psql("SELECT pg_current_wal_lsn()", db=db)[0][0]


def wal_diff(pg, db, a, b):
    return int(float(pg.psql("SELECT pg_wal_lsn_diff('%s', '%s')" % (b, a), db=db)[0][0]))


def checkpoint(pg, db):
    # every measurement starts after a checkpoint: the full-page images come first everywhere
    pg.psql("CHECKPOINT", db=db)


# -- 1. fence -------------------------------------------------------------------------------

def part_fence(pg, bench, db, secs, reps, out):
    pg.psql("CREATE SCHEMA IF NOT EXISTS bench; DROP TABLE IF EXISTS bench.slice_rows;"
            " CREATE TABLE bench.slice_rows (id bigserial PRIMARY KEY, ds text NOT NULL, v int NOT NULL)", db=db)
    pg.psql(bind("INSERT INTO " + LEASES + " (unit, datasource, owner, epoch, expires_at, acquired_at, renewed_at)"
                 " VALUES ($1, 'fenced', 'bench-owner', 7, clock_timestamp() + interval '1 day',"
                 " clock_timestamp(), clock_timestamp()) ON CONFLICT (unit) DO NOTHING", "ds:fenced"), db=db)
    fence = "SELECT %s(%s, %s, %d)" % (FENCE, lit("ds:fenced"), lit("bench-owner"), 7)
    ins = "INSERT INTO bench.slice_rows (ds, v) VALUES ('fenced', 1)"
    plain = bench.script("BEGIN \\; %s \\; %s \\; COMMIT;\n" % (SET_LOCAL.replace(";", " \\;"), ins))
    fenced = bench.script("BEGIN \\; %s \\; %s \\; %s \\; COMMIT;\n" % (SET_LOCAL.replace(";", " \\;"), ins, fence))
    # a refused fence must roll back: check once that the function is the real thing
    bad = subprocess.run(["psql", "-X", "-q", "-v", "VERBOSITY=verbose", "-d", pg.conninfo(db), "-c",
                          "SELECT %s('ds:fenced', 'someone-else', 7)" % FENCE], capture_output=True, text=True)
    if bad.returncode == 0 or "DSL01" not in bad.stderr:
        print("WARNING: the fence did not refuse another owner with DSL01", flush=True)
    R = {k: [] for k in ("p1", "f1", "p4", "f4")}
    for rep in range(reps):
        order = [("p1", plain, 1), ("f1", fenced, 1), ("p4", plain, 4), ("f4", fenced, 4)]
        if rep % 2:
            order = order[1::-1] + order[:1:-1]
        for key, path, clients in order:
            r = bench.run(db, [(path, 1)], clients=clients, secs=secs)
            R[key].append(1e3 * r["lat_ms"] / clients if clients > 1 else 1e3 * r["lat_ms"])
            R[key + "_tps"] = R.get(key + "_tps", []) + [r["tps"]]
    # WAL per transaction, both ways, each after a checkpoint
    wal = {}
    n = 2000
    for key, path in (("plain", plain), ("fenced", fenced)):
        checkpoint(pg, db)
        a = wal_lsn(pg, db)
        bench.run(db, [(path, 1)], txns=n)
        wal[key] = wal_diff(pg, db, a, wal_lsn(pg, db)) / n
    d1 = [f - p for p, f in zip(R["p1"], R["f1"])]
    d4 = [f - p for p, f in zip(R["p4"], R["f4"])]
    out["fence_us"] = med(d1)
    out["fence_wal"] = wal["fenced"] - wal["plain"]
    out["fence_us_4"] = med(d4)
    out["slice_tx_us"] = med(R["f1"])
    lines = [
        ("1 client: BEGIN; INSERT; COMMIT (us per transaction)", fig(R["p1"], "%.1f")),
        ("1 client: the same with the fence before COMMIT (us)", fig(R["f1"], "%.1f")),
        ("1 client: fence cost (us per slice, paired difference)", fig(d1, "%.1f")),
        ("4 clients, one unit: without fence (us per transaction, wall/tps)", fig(R["p4"], "%.1f")),
        ("4 clients, one unit: with fence (us per transaction)", fig(R["f4"], "%.1f")),
        ("4 clients, one unit: fence cost (us per slice)", fig(d4, "%.1f")),
        ("WAL per transaction without / with fence (bytes)", "%.0f / %.0f" % (wal["plain"], wal["fenced"])),
        ("WAL of the fence (bytes per slice: the row lock)", "%.0f" % (wal["fenced"] - wal["plain"])),
    ]
    return lines


# -- 1b. chunk units ------------------------------------------------------------------------

CHUNKS = '"druid"."druid_syncd_chunks"'


def part_chunk_claim(pg, bench, db, secs, reps, out):
    """A first load read by several instances claims its chunks' units slice by slice
    (sinks/pglease.c, pgsink_chunk_claim: the row inserted if missing, the take, the ledger
    check, the holders; one transaction) and fences each commit by them (the fence and the
    dirty mark). pgbench clients are instances claiming random chunks of a 10,000-chunk load
    whose first half is in the ledger."""
    pg.psql("DELETE FROM %s WHERE unit LIKE 'chunk:bench:%%'" % LEASES, db=db)
    # the ledger as sinks/pgchunks.c creates it (the set-up datasource is not read by chunks)
    pg.psql("CREATE TABLE IF NOT EXISTS %s (datasource text NOT NULL, chunk_start text NOT NULL,"
            " chunk_end text NOT NULL, start_ms bigint NOT NULL, end_ms bigint NOT NULL,"
            " fingerprint text NOT NULL, druid_rows bigint, stored_rows bigint NOT NULL DEFAULT 0,"
            " state text NOT NULL, synced_at timestamptz, postponed_since timestamptz,"
            " PRIMARY KEY (datasource, start_ms, end_ms))" % CHUNKS, db=db)
    pg.psql("DELETE FROM %s WHERE datasource = 'bench'" % CHUNKS, db=db)
    pg.psql("INSERT INTO %s (datasource, chunk_start, chunk_end, start_ms, end_ms, fingerprint, stored_rows,"
            " state) SELECT 'bench', i::text, (i + 1)::text, i::bigint * 3600000, (i::bigint + 1) * 3600000, 'fp' || i, 100,"
            " 'synced' FROM generate_series(0, 4999) i" % CHUNKS, db=db)
    unit = "'chunk:bench:' || (:k::bigint * 3600000)"
    claim = bench.script(
        "\\set k random(0, 9999)\n"
        "BEGIN \\; %s;\n"
        "INSERT INTO %s (unit, datasource, range_lo, range_hi, epoch, renewed_at) VALUES (%s, 'bench',"
        " :k::bigint * 3600000, (:k::bigint + 1) * 3600000, (extract(epoch FROM clock_timestamp()) * 1000)::bigint,"
        " clock_timestamp()) ON CONFLICT (unit) DO NOTHING;\n"
        "UPDATE %s SET epoch = epoch + 1, acquired_at = clock_timestamp(), owner = 'bench-' || :client_id,"
        " renewed_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => 30),"
        " range_lo = :k::bigint * 3600000, range_hi = (:k::bigint + 1) * 3600000 WHERE unit = %s AND (owner ="
        " 'bench-' || :client_id OR owner IS NULL OR expires_at IS NULL OR expires_at <= clock_timestamp())"
        " RETURNING epoch, dirty;\n"
        "SELECT c.start_ms, c.end_ms FROM %s AS c JOIN unnest(ARRAY[:k::bigint * 3600000]::bigint[],"
        " ARRAY[(:k::bigint + 1) * 3600000]::bigint[], ARRAY['fp' || :k]::text[]) AS p(lo, hi, fp)"
        " ON c.start_ms = p.lo AND c.end_ms = p.hi AND c.fingerprint = p.fp"
        " WHERE c.datasource = 'bench' AND c.state IN ('synced', 'pending');\n"
        "SELECT unit, owner FROM %s WHERE unit = ANY(ARRAY[%s]);\n"
        "COMMIT;\n" % (SET_LOCAL.replace(";", " \\;"), LEASES, unit, LEASES, unit, CHUNKS, LEASES, unit))
    # a commit's chunk fence: the fence function on the unit, then its dirty mark
    pg.psql("INSERT INTO %s (unit, datasource, owner, epoch, expires_at, range_lo, range_hi)"
            " VALUES ('chunk:bench:fenced', 'bench', 'bench-owner', 7, clock_timestamp() + interval '1 day',"
            " 0, 1) ON CONFLICT (unit) DO UPDATE SET owner = 'bench-owner', epoch = 7,"
            " expires_at = clock_timestamp() + interval '1 day'" % LEASES, db=db)
    fence = bench.script("BEGIN \\; %s \\; SELECT %s('chunk:bench:fenced', 'bench-owner', 7) \\;"
                         " UPDATE %s SET dirty = true WHERE unit = 'chunk:bench:fenced' AND dirty <> true"
                         " \\; COMMIT;\n" % (SET_LOCAL.replace(";", " \\;"), FENCE, LEASES))
    bare = bench.script("BEGIN \\; %s \\; COMMIT;\n" % SET_LOCAL.replace(";", " \\;"))
    R = {k: [] for k in ("c1", "c4", "f1", "b1")}
    for _rep in range(reps):
        R["c1"].append(bench.run(db, [(claim, 1)], clients=1, secs=secs)["lat_ms"])
        r = bench.run(db, [(claim, 1)], clients=4, secs=secs)
        R["c4"].append(r["lat_ms"])
        R["f1"].append(1e3 * bench.run(db, [(fence, 1)], clients=1, secs=secs)["lat_ms"])
        R["b1"].append(1e3 * bench.run(db, [(bare, 1)], clients=1, secs=secs)["lat_ms"])
    checkpoint(pg, db)
    a = wal_lsn(pg, db)
    bench.run(db, [(claim, 1)], txns=2000)
    wal = wal_diff(pg, db, a, wal_lsn(pg, db)) / 2000
    d = [f - b for f, b in zip(R["f1"], R["b1"])]
    out["chunk_claim_ms"] = med(R["c1"])
    out["chunk_fence_us"] = med(d)
    return [
        ("chunk claim, one unit, 1 client (ms per transaction, 6 round trips)", fig(R["c1"], "%.2f")),
        ("chunk claim, one unit, 4 clients at once (ms per transaction)", fig(R["c4"], "%.2f")),
        ("WAL per chunk claim (bytes)", "%.0f" % wal),
        ("chunk fence and dirty mark in a commit (us, paired difference)", fig(d, "%.1f")),
    ]


# -- 2. renewal -----------------------------------------------------------------------------

def units_json(units, epoch):
    return json.dumps([{"unit": u, "epoch": epoch} for u in units], separators=(",", ":"))


def renew_bind(owner, ttl, units, epoch):
    """The daemon's renewal with its two array parameters."""
    return bind(RENEW, owner, ttl, "{" + ",".join('"%s"' % u for u in units) + "}",
                "{" + ",".join(str(epoch) for _u in units) + "}")


def renewal_script(bench, owner, units, epoch, ttl="30.000"):
    """The daemon's renewal job: BEGIN+SET LOCAL, the UPDATE, the census, COMMIT (4 round trips)."""
    return bench.script("BEGIN \\; %s;\n%s;\n%s;\nCOMMIT;\n" % (
        SET_LOCAL.replace(";", " \\;"), renew_bind(owner, ttl, units, epoch), CENSUS))


def fill_leases(pg, db, n_ds=10000, n_inst=100):
    pg.psql("DELETE FROM %s WHERE unit LIKE 'ds:scale%%' OR unit LIKE 'instance:scale%%'" % LEASES, db=db)
    pg.psql("INSERT INTO %s (unit, datasource, owner, epoch, expires_at, acquired_at, renewed_at)"
            " SELECT 'ds:scale' || lpad(i::text, 5, '0'), 'scale' || lpad(i::text, 5, '0'),"
            " 'scale-other-' || (i %% %d), 1, clock_timestamp() + interval '1 day', clock_timestamp(),"
            " clock_timestamp() FROM generate_series(0, %d) i" % (LEASES, n_inst, n_ds - 1), db=db)
    pg.psql("INSERT INTO %s (unit, datasource, owner, epoch, expires_at, acquired_at, renewed_at)"
            " SELECT 'instance:scale-other-' || i, '', 'scale-other-' || i, 1, clock_timestamp() + interval '1 day',"
            " clock_timestamp(), clock_timestamp() FROM generate_series(0, %d) i" % (LEASES, n_inst - 1), db=db)
    pg.psql("VACUUM ANALYZE %s" % LEASES, db=db)


def plan_shape(pg, db, sql):
    """The renewal's join as EXPLAIN shows it: 'hash join', 'index nested loop' or 'nested
    loop, function rescanned' (the JSON set is read again for every lease row: quadratic)."""
    plan = "\n".join(psql_in(pg, db, "EXPLAIN " + sql + ";\n"))
    if "Hash Join" in plan:
        return "hash join"
    if "Index Scan" in plan:
        return "index nested loop"
    if "Nested Loop" in plan:
        return "nested loop, set rescanned"
    return "other"


def jsonb_sql(units, epoch):
    """The renewal as it was before a429d23: one jsonb set, which the planner guesses at 100
    rows."""
    return RENEW_JSONB, units_json(units, epoch)


def part_renewal(pg, bench, db, sizes, txns, reps, out):
    """Each size twice: held by an owner name the statistics do not know yet (a new instance:
    its name carries its pid) and after ANALYZE (autovacuum's state once it has run)."""
    fill_leases(pg, db)
    rows = []
    out["renew"] = {}
    for k in sizes:
        units = ["ds:scale%05d" % i for i in range(k)]
        for stats in ("new owner", "analyzed"):
            owner = "scale-me-%d" % k
            if stats == "new owner":
                pg.psql("ANALYZE %s" % LEASES, db=db)
                # this instance holds the first k units, unknown to the statistics
                pg.psql("UPDATE %s SET owner = %s, expires_at = clock_timestamp() + interval '1 day'"
                        " WHERE unit < 'ds:scale%05d' AND unit LIKE 'ds:scale%%'" % (LEASES, lit(owner), k), db=db)
            else:
                pg.psql("ANALYZE %s" % LEASES, db=db)
            stmt = renew_bind(owner, "30.000", units, 1)
            got = psql_in(pg, db, "BEGIN;\n" + stmt + ";\nROLLBACK;\n")
            if len(got) != k:
                raise SystemExit("renewal of %d units renewed %d" % (k, len(got)))
            shape = plan_shape(pg, db, stmt)
            path = renewal_script(bench, owner, units, 1)
            n = max(3, txns // k) if k > 1 else txns
            tx, upd = [], []
            for _rep in range(reps):
                r = bench.run(db, [(path, 1)], txns=n, per_stmt=True)
                tx.append(r["lat_ms"])
                upd.append(r["stmts"][1][0])
            checkpoint(pg, db)
            a = wal_lsn(pg, db)
            bench.run(db, [(path, 1)], txns=n)
            wal = wal_diff(pg, db, a, wal_lsn(pg, db)) / n
            out["renew"][(k, stats)] = {"tx_ms": med(tx), "upd_ms": med(upd), "wal": wal}
            rows.append(("%d unit%s, %s: transaction / UPDATE (ms); plan" % (k, "" if k == 1 else "s", stats),
                         "%s / %s; %s" % (fig(tx, "%.2f"), fig(upd, "%.2f"), shape)))
            if stats == "analyzed":
                rows.append(("%d unit%s: WAL (bytes per renewal, per unit)" % (k, "" if k == 1 else "s"),
                             "%.0f, %.0f" % (wal, wal / k)))
                if k >= 1000:
                    # before: the same UPDATE over jsonb_to_recordset, a new owner again
                    pg.psql("UPDATE %s SET owner = %s WHERE owner = %s" % (LEASES, lit(owner + "-u"), lit(owner)),
                            db=db)
                    sql, js = jsonb_sql(units, 1)
                    ustmt = bind(sql, owner + "-u", "30.000", js)
                    shape = plan_shape(pg, db, ustmt)
                    upath = bench.script("BEGIN \\; %s;\n%s;\n%s;\nCOMMIT;\n" % (
                        SET_LOCAL.replace(";", " \\;"), ustmt, CENSUS))
                    ut = [bench.run(db, [(upath, 1)], txns=n, per_stmt=True)["stmts"][1][0] for _r in range(reps)]
                    out["renew"][(k, "jsonb")] = {"upd_ms": med(ut)}
                    rows.append(("%d units, new owner, jsonb_to_recordset (before a429d23): UPDATE (ms); plan" % k,
                                 "%s; %s" % (fig(ut, "%.2f"), shape)))
                    owner += "-u"
            if stats == "analyzed":
                pg.psql("UPDATE %s SET owner = 'scale-other-0' WHERE owner = %s" % (LEASES, lit(owner)), db=db)
    return rows


# -- 3. contention --------------------------------------------------------------------------

def part_contention(pg, bench, db, clients_list, secs, out):
    """Every pgbench client is an instance 'c<client_id>' with 100 units of its own; a pool of
    32 units expires at once after every take, so steals race for them."""
    own = 100
    pool = 32
    maxc = max(clients_list)
    pg.psql("DELETE FROM %s WHERE unit LIKE 'own-%%' OR unit LIKE 'pool-%%'" % LEASES, db=db)
    pg.psql("INSERT INTO %s (unit, datasource, owner, epoch, expires_at, acquired_at, renewed_at)"
            " SELECT 'own-' || c || '-' || k, 'own-' || c || '-' || k, 'c' || c, 1,"
            " clock_timestamp() + interval '1 day', clock_timestamp(), clock_timestamp()"
            " FROM generate_series(0, %d) c, generate_series(0, %d) k" % (LEASES, maxc - 1, own - 1), db=db)
    pg.psql("INSERT INTO %s (unit, datasource, renewed_at) SELECT 'pool-' || k, 'pool-' || k, clock_timestamp()"
            " FROM generate_series(0, %d) k" % (LEASES, pool - 1), db=db)
    pg.psql("VACUUM ANALYZE %s" % LEASES, db=db)
    begin = "BEGIN \\; %s" % SET_LOCAL.replace(";", " \\;")
    # pgbench substitutes :client_id and :k inside the literals (simple protocol)
    units = ["own-:client_id-%d" % k for k in range(own)]
    renew = bench.script("%s;\n%s;\n%s;\nCOMMIT;\n" % (
        begin, renew_bind("c:client_id", "30.000", units, 1), CENSUS))
    claim = bench.script("\\set k random(0, %d)\n%s;\n%s;\n%s;\nCOMMIT;\n" % (
        own - 1, begin, bind(CLAIM_INSERT, "own-:client_id-:k", "own-:client_id-:k"),
        bind(CLAIM_UPDATE, "own-:client_id-:k", "c:client_id", "30.000", "1", "0.000")))
    # a steal: held_epoch -1 (a new token), a lease of 1 ms, so the next steal finds it expired
    steal = bench.script("\\set k random(0, %d)\n%s;\n%s;\n%s;\nCOMMIT;\n" % (
        pool - 1, begin, bind(CLAIM_INSERT, "pool-:k", "pool-:k"),
        bind(CLAIM_UPDATE, "pool-:k", "c:client_id", "0.001", "-1", "0.000")))
    ins = "INSERT INTO bench.slice_rows (ds, v) VALUES ('own', 1)"
    fence = bench.script("\\set k random(0, %d)\nBEGIN \\; %s \\; %s \\; SELECT %s('own-:client_id-:k', 'c:client_id', 1)"
                         " \\; COMMIT;\n" % (own - 1, SET_LOCAL.replace(";", " \\;"), ins, FENCE))
    kinds = ("renewal of 100", "claim own", "steal", "slice+fence")
    rows = []
    out["contention"] = {}
    for c in clients_list:
        e0 = pg.psql("SELECT sum(epoch) FROM %s WHERE unit LIKE 'pool-%%'" % LEASES, db=db)[0][0]
        r = bench.run(db, [(renew, 1), (claim, 1), (steal, 1), (fence, 1)], clients=c, secs=secs)
        e1 = pg.psql("SELECT sum(epoch) FROM %s WHERE unit LIKE 'pool-%%'" % LEASES, db=db)[0][0]
        out["contention"][c] = r
        per = ", ".join("%s %.0f/s %.2f ms" % (k, s["tps"], s["lat_ms"] or float("nan"))
                        for k, s in zip(kinds, r["scripts"]))
        rows.append(("%d clients: transactions/s, mean latency (ms)" % c, "%.0f, %.2f" % (r["tps"], r["lat_ms"])))
        rows.append(("%d clients: per kind" % c, per))
        rows.append(("%d clients: successful steals (epochs taken in the pool)" % c,
                     "%d of %d attempts" % (int(e1 or 0) - int(e0 or 0), r["scripts"][2]["n"])))
    return rows


# -- 4. one instance, real binary -----------------------------------------------------------

def run_daemon(cfg_path, log_path, timeout=1800):
    """druid-syncd --once: (exit code, wall s, CPU s)."""
    with open(log_path, "ab") as log:
        t0 = time.time()
        p = subprocess.Popen([harness.BIN, "-c", cfg_path, "--once"], stdout=log, stderr=log)
        _pid, status, ru = os.wait4(p.pid, 0)
        wall = time.time() - t0
    return os.waitstatus_to_exitcode(status), wall, ru.ru_utime + ru.ru_stime


def xacts(pg, db):
    """(xact_commit, xact_rollback) of db once no backend of it is left (their statistics
    are flushed when they exit); read from another database, so this read does not count."""
    deadline = time.time() + 10
    while time.time() < deadline:
        n = int(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = %s" % lit(db), db="postgres")[0][0])
        if n == 0:
            break
        time.sleep(0.05)
    time.sleep(0.05)
    r = pg.psql("SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s" % lit(db),
                db="postgres")[0]
    return int(r[0]), int(r[1])


def seg_query(sim):
    """The daemon's sys.segments query, end to end from here: (seconds, rows, bytes)."""
    body = json.dumps({"query": SEGMENTS_SQL, "resultFormat": "arrayLines", "header": True,
                       "typesHeader": True, "sqlTypesHeader": True}).encode()
    req = urllib.request.Request(sim.url + "/druid/v2/sql", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=600) as r:
        data = r.read()
    secs = time.time() - t0
    rows = data.count(b"\n") - 4  # three header rows, the rows, the blank line that ends arrayLines
    return secs, max(rows, 0), len(data)


def logged_segments(sim):
    """The sys.segments queries in the server's log: [(seconds, rows)]."""
    out = []
    for q in sim.queries():
        if "sys.segments" in (q.get("sql") or "") and q.get("finished"):
            out.append((q["finished"] - q["started"], q["rows_sent"]))
    return out


def populate(sim, n_ds, segs, rows_per_segment):
    t0 = time.time()
    for i in range(n_ds):
        sim.generate("ds%05d" % i, segments=segs, granularity="HOUR", rows_per_segment=rows_per_segment)
    return time.time() - t0


def part_capacity(pg, tmp, sizes, log_path, out, rounds, interval):
    rows = []
    out["cap"] = {}
    segs, rps = 3, 2
    for n_ds in sizes:
        sim = harness.Sim.start()
        try:
            build = populate(sim, n_ds, segs, rps)
            db = "cap%d" % n_ds
            pg.psql("DROP DATABASE IF EXISTS %s" % db, db="postgres")
            pg.psql("CREATE DATABASE %s" % db, db="postgres")
            cfg_path = os.path.join(tmp, "cap%d.json" % n_ds)
            with open(cfg_path, "w") as f:
                json.dump({"druid_host": "127.0.0.1", "druid_port": sim.port, "postgres": pg.conninfo(db),
                           "destination_schema": SCHEMA, "instance_name": "scale-1"}, f)
            res = {}
            for phase in ("first", "nochange", "append"):
                if phase == "append":
                    for i in range(n_ds):
                        # one late row in the middle chunk of every datasource: a new partition
                        sim.late_append("ds%05d" % i, [{"__time": T0_MS + HOUR_MS + 1234, "n": 10**6 + i, "s": "late"}])
                sim.clear_queries()
                x0 = xacts(pg, db)
                rc, wall, cpu = run_daemon(cfg_path, log_path)
                x1 = xacts(pg, db)
                if rc != 0:
                    raise SystemExit("--once (%s, %d datasources) exited %d; see %s" % (phase, n_ds, rc, log_path))
                qs = sim.queries()
                seg = logged_segments(sim)
                slices = [q for q in qs if 'FROM "ds' in (q.get("sql") or "")]
                res[phase] = {"wall": wall, "cpu": cpu, "xact": x1[0] - x0[0], "rollback": x1[1] - x0[1],
                              "queries": len(qs), "slices": len(slices),
                              "seg_s": seg[0][0] if seg else None, "seg_rows": seg[0][1] if seg else None}
            if n_ds == max(sizes):
                res["daemon"] = steady_state(pg, sim, db, tmp, cfg_path, n_ds, rounds, interval)
                res["where"] = where_time_goes(pg, db, cfg_path, log_path)
            want = n_ds * (segs * rps + 1)
            got = int(pg.psql("SELECT coalesce(sum(rows_synced), 0) FROM druid.druid_syncd_state", db=db)[0][0])
            live = int(pg.psql("SELECT count(*) FROM druid.druid_syncd_state", db=db)[0][0])
            if live != n_ds or got != want:
                raise SystemExit("%d datasources: state rows %d, rows synced %d, expected %d and %d"
                                 % (n_ds, live, got, n_ds, want))
            pg.psql("DROP DATABASE %s" % db, db="postgres")
        finally:
            sim.stop()
        out["cap"][n_ds] = res
        f, nc, ap = res["first"], res["nochange"], res["append"]
        rows += [
            ("%d datasources (built in %.1f s): first sync wall / daemon CPU (s)" % (n_ds, build),
             "%.1f / %.1f" % (f["wall"], f["cpu"])),
            ("%d datasources: first sync PG transactions per datasource, Druid queries" % n_ds,
             "%.1f, %d" % (f["xact"] / n_ds, f["queries"])),
            ("%d datasources: no-change --once wall / CPU (s)" % n_ds, "%.2f / %.2f" % (nc["wall"], nc["cpu"])),
            ("%d datasources: no-change PG transactions per datasource (commits, rollbacks)" % n_ds,
             "%.2f (%d, %d)" % (nc["xact"] / n_ds, nc["xact"], nc["rollback"])),
            ("%d datasources: no-change Druid queries; sys.segments server time (ms, rows)" % n_ds,
             "%d; %.1f ms, %s rows" % (nc["queries"], 1e3 * (nc["seg_s"] or 0), nc["seg_rows"])),
            ("%d datasources: one late row each: wall / CPU (s), slices" % n_ds,
             "%.1f / %.1f, %d" % (ap["wall"], ap["cpu"], ap["slices"])),
            ("%d datasources: one late row each: PG transactions per datasource" % n_ds,
             "%.1f" % (ap["xact"] / n_ds)),
        ]
        if "daemon" in res:
            d = res["daemon"]
            busy = d["round_s"] - d["interval"]
            rows += [
                ("%d datasources, daemon mode (sync_interval %g s): one round of no-change cycles (s)"
                 % (n_ds, d["interval"]), "%.2f (%.2f beyond the interval: ~%.0f datasources/s)"
                 % (d["round_s"], busy, n_ds / busy if busy > 0 else float("inf"))),
                ("%d datasources, daemon mode: PG transactions per no-change datasource cycle" % n_ds,
                 "%.2f (%d commits, %d rollbacks in %d rounds, ~%d renewals)" % (
                     d["xact"] / max(d["cycles"], 1), d["xact"], d["rollback"], d["rounds"], d["renewals"])),
                ("%d datasources, daemon mode: daemon CPU / PG backends CPU per 1,000 ds cycles (s)" % n_ds,
                 "%.2f / %.2f" % (1e3 * d["cpu"] / max(d["cycles"], 1), 1e3 * d["pgcpu"] / max(d["cycles"], 1))),
                ("%d datasources, daemon mode: sys.segments queries in %d rounds; WAL per ds cycle (bytes)"
                 % (n_ds, d["rounds"]), "%d; %.0f" % (d["seg_queries"], d["wal"] / max(d["cycles"], 1))),
            ]
        if "where" in res:
            total, top = res["where"]
            rows.append(("%d datasources, no-change --once: PostgreSQL statement time per datasource (ms)" % n_ds,
                         "%.2f (server-logged durations, parse+bind+execute)" % (total / n_ds)))
            for n, ms, text in top:
                rows.append(("  %4.1f%%  %s" % (100.0 * ms / total, text[:62]), "%.3f ms per datasource" % (ms / n_ds)))
    return rows


def where_time_goes(pg, db, cfg_path, log_path):
    """One more no-change --once with log_min_duration_statement = 0: the server's time by
    statement (datasource names folded), the six largest."""
    import collections
    pg.psql("ALTER DATABASE %s SET log_min_duration_statement = 0" % db, db="postgres")
    logf = os.path.join(pg.dir, "server.log")
    off = os.path.getsize(logf)
    try:
        rc, _w, _c = run_daemon(cfg_path, log_path)
        if rc != 0:
            raise SystemExit("the logged no-change --once exited %d" % rc)
    finally:
        pg.psql("ALTER DATABASE %s RESET log_min_duration_statement" % db, db="postgres")
    agg = collections.defaultdict(lambda: [0, 0.0])
    with open(logf, errors="replace") as f:
        f.seek(off)
        for line in f:
            m = re.search(r"duration: ([\d.]+) ms  (?:statement|execute <unnamed>|bind <unnamed>|parse <unnamed>): "
                          r"(.*)", line)
            if m:
                key = re.sub(r'"ds\d+"', '"dsN"', m.group(2))[:80]
                agg[key][0] += 1
                agg[key][1] += float(m.group(1))
    total = sum(v[1] for v in agg.values())
    top = sorted(((v[0], v[1], k) for k, v in agg.items()), key=lambda x: -x[1])[:6]
    return total, top


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK


def steady_state(pg, sim, db, tmp, cfg_path, n_ds, rounds, interval):
    """The daemon (not --once, sync_interval_seconds `interval`) on datasources already synced: its
    cycles of all datasources run as rounds; measured from the end of the first round (which
    claims the units back) to the end of round 1 + `rounds`, counted from its debug log."""
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["sync_interval_seconds"] = interval
    path = os.path.join(tmp, "daemon-%d.json" % n_ds)
    with open(path, "w") as f:
        json.dump(cfg, f)
    log_path = os.path.join(tmp, "daemon-%d.log" % n_ds)
    log = open(log_path, "wb")
    p = subprocess.Popen([harness.BIN, "-c", path, "--log-level", "debug"], stdout=log, stderr=log)

    def done_lines():
        with open(log_path, "rb") as f:
            return f.read().count(b": cycle done in ")

    def snap():
        pids = [int(r[0]) for r in pg.psql("SELECT pid FROM pg_stat_activity WHERE datname = %s" % lit(db),
                                           db="postgres")]
        pgc = 0.0
        for q in pids:
            try:
                pgc += proc_cpu(q)
            except OSError:
                pass
        x = pg.psql("SELECT xact_commit, xact_rollback, pg_current_wal_lsn() FROM pg_stat_database"
                    " WHERE datname = %s" % lit(db), db="postgres")[0]
        return {"t": time.time(), "done": done_lines(), "cpu": proc_cpu(p.pid), "pgcpu": pgc, "pids": set(pids),
                "xc": int(x[0]), "xr": int(x[1]), "lsn": x[2]}

    def round_end(k):
        harness.wait_for(lambda: done_lines() >= k * n_ds or p.poll() is not None, timeout=600, interval=0.05,
                         what="round %d of the daemon's cycles" % k)
        if p.poll() is not None:
            raise SystemExit("the daemon exited %s; see %s" % (p.returncode, log_path))
        # backends flush their statistics once idle for a second; the next round starts
        # sync_interval after this one ended
        time.sleep(1.2)
        return snap()

    try:
        a = round_end(1)
        sim.clear_queries()
        b = round_end(1 + rounds)
        segq = len([q for q in sim.queries() if "sys.segments" in (q.get("sql") or "")])
        if a["pids"] != b["pids"]:
            print("note: the daemon's PostgreSQL connections changed during the measurement", flush=True)
        elapsed = b["t"] - a["t"]
        return {"interval": interval, "elapsed": elapsed, "rounds": rounds, "cycles": b["done"] - a["done"],
                "round_s": elapsed / rounds, "xact": b["xc"] - a["xc"], "rollback": b["xr"] - a["xr"],
                "cpu": b["cpu"] - a["cpu"], "pgcpu": b["pgcpu"] - a["pgcpu"], "seg_queries": segq,
                "renewals": int(elapsed / 10.0), "wal": wal_diff(pg, "postgres", a["lsn"], b["lsn"])}
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def part_snapshot(pg, tmp, shapes, log_path, out):
    """sys.segments for datasources x segments: size and time (server: the first query after a
    change rebuilds the server's list; repeats read it), and the daemon's no-change cycle."""
    rows = []
    out["snap"] = {}
    for n_ds, segs in shapes:
        sim = harness.Sim.start()
        try:
            populate(sim, n_ds, segs, 1)
            first = seg_query(sim)
            rep = [seg_query(sim) for _ in range(3)]
            if first[1] != n_ds * segs:
                raise SystemExit("sys.segments listed %d rows, expected %d" % (first[1], n_ds * segs))
            db = "snap%d" % n_ds
            pg.psql("DROP DATABASE IF EXISTS %s" % db, db="postgres")
            pg.psql("CREATE DATABASE %s" % db, db="postgres")
            cfg_path = os.path.join(tmp, "snap%d.json" % n_ds)
            with open(cfg_path, "w") as f:
                json.dump({"druid_host": "127.0.0.1", "druid_port": sim.port, "postgres": pg.conninfo(db),
                           "destination_schema": SCHEMA, "instance_name": "scale-1"}, f)
            rc, fwall, fcpu = run_daemon(cfg_path, log_path)
            if rc != 0:
                raise SystemExit("--once over %d x %d segments exited %d; see %s" % (n_ds, segs, rc, log_path))
            sim.clear_queries()
            rc, nwall, ncpu = run_daemon(cfg_path, log_path)
            if rc != 0:
                raise SystemExit("no-change --once over %d x %d segments exited %d" % (n_ds, segs, rc))
            seen = logged_segments(sim)
            pg.psql("DROP DATABASE %s" % db, db="postgres")
        finally:
            sim.stop()
        total = n_ds * segs
        r = {"segs": total, "first_s": first[0], "rep_s": med([x[0] for x in rep]), "bytes": first[2],
             "nc_wall": nwall, "nc_cpu": ncpu, "daemon_seen": seen[0][0] if seen else None, "first_wall": fwall}
        out["snap"][(n_ds, segs)] = r
        rows += [
            ("%d x %d = %d segments: response (MB, bytes per segment)" % (n_ds, segs, total),
             "%.2f, %.0f" % (first[2] / 1e6, first[2] / total)),
            ("%d x %d: sys.segments after a change / repeated (s, client side)" % (n_ds, segs),
             "%.2f / %s" % (first[0], fig([x[0] for x in rep], "%.2f"))),
            ("%d x %d: daemon no-change --once wall / CPU (s); its sys.segments (s)" % (n_ds, segs),
             "%.2f / %.2f; %.2f" % (nwall, ncpu, r["daemon_seen"] or float("nan"))),
        ]
    return rows


# -- main -----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 2 minutes: shorter runs, fewer sizes")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="12345", help="parts to run, e.g. 14 (5 needs all)")
    a = ap.parse_args()
    if a.quick:
        a.reps = min(a.reps, 3)
    secs = 2 if a.quick else 5
    cont_secs = 3 if a.quick else 8
    clients = [2, 8] if a.quick else [2, 8, 32]
    ds_sizes = [100, 300] if a.quick else [100, 500, 1000]
    shapes = [(100, 100)] if a.quick else [(100, 100), (100, 1000)]
    if not os.path.exists(harness.BIN):
        raise SystemExit("no binary at %s (set DSYNC_BIN)" % harness.BIN)
    for w in check_statements():
        print("WARNING: %s" % w, flush=True)
    tmp = tempfile.mkdtemp(prefix="dsync-scale-")
    os.chmod(tmp, 0o755)
    log_path = os.path.join(tmp, "daemon.log")
    t_start = time.time()
    load0 = loadavg()
    pg = harness.Postgres()
    out = {}
    sections = []
    try:
        pg.psql("ALTER SYSTEM SET autovacuum = off", db="postgres")
        pg.psql("SELECT pg_reload_conf()", db="postgres")
        bench = Bench(pg, tmp)
        db = "lease"
        if set(a.only) & set("123"):
            # the lease table and the fence exactly as the binary creates them
            sim = harness.Sim.start()
            try:
                sim.generate("tiny", segments=1, rows_per_segment=1)
                pg.psql("CREATE DATABASE %s" % db, db="postgres")
                cfg = os.path.join(tmp, "tiny.json")
                with open(cfg, "w") as f:
                    json.dump({"druid_host": "127.0.0.1", "druid_port": sim.port, "postgres": pg.conninfo(db),
                               "destination_schema": SCHEMA}, f)
                rc, _w, _c = run_daemon(cfg, log_path)
                if rc != 0:
                    raise SystemExit("the set-up --once failed (%d); see %s" % (rc, log_path))
            finally:
                sim.stop()
            if not pg.psql("SELECT 1 FROM pg_proc WHERE proname = 'druid_syncd_fence'", db=db):
                raise SystemExit("the binary created no druid_syncd_fence")
        if "1" in a.only:
            sections.append(("1. fence cost per slice (pgbench, %d s per run, %d reps)" % (secs, a.reps),
                             part_fence(pg, bench, db, secs, a.reps, out)))
            sections.append(("1b. chunk units of a shared first load (pgbench, %d s per run, %d reps)"
                             % (secs, a.reps), part_chunk_claim(pg, bench, db, secs, a.reps, out)))
            print("part 1 done (%.0f s)" % (time.time() - t_start), flush=True)
        if "2" in a.only:
            if "1" not in a.only:
                part_fence(pg, bench, db, 1, 1, {})
            sections.append(("2. renewal cost (the daemon's renewal transaction; %d reps)" % a.reps,
                             part_renewal(pg, bench, db, [1, 100, 1000, 10000], 400 if a.quick else 2000,
                                          a.reps, out)))
            print("part 2 done (%.0f s)" % (time.time() - t_start), flush=True)
        if "3" in a.only:
            if "1" not in a.only and "2" not in a.only:
                part_fence(pg, bench, db, 1, 1, {})
            sections.append(("3. lease-table contention (pgbench, %d s per run; mix 1:1:1:1)" % cont_secs,
                             part_contention(pg, bench, db, clients, cont_secs, out)))
            print("part 3 done (%.0f s)" % (time.time() - t_start), flush=True)
        if "4" in a.only:
            sections.append(("4a. one instance, real binary: datasources of 6 rows (3 hourly segments)",
                             part_capacity(pg, tmp, ds_sizes, log_path, out, 2, 5.0 if a.quick else 10.0)))
            print("part 4a done (%.0f s)" % (time.time() - t_start), flush=True)
            sections.append(("4b. sys.segments: datasources x segments (test server; real Druid differs)",
                             part_snapshot(pg, tmp, shapes, log_path, out)))
            print("part 4b done (%.0f s)" % (time.time() - t_start), flush=True)
    finally:
        pg.stop()

    print()
    print("druid-syncd scale benchmark: %s, %d cores, load average %s at start, %s at end" % (
        os.uname().nodename, os.cpu_count(), load0, loadavg()))
    print("binary %s; PostgreSQL %s (fsync=off, autovacuum off); medians [min-max]" % (
        harness.BIN, os.path.basename(os.path.dirname(harness._pgbin()))))
    for title, lines in sections:
        print()
        print(title)
        w = max(len(k) for k, _v in lines)
        for k, v in lines:
            print("  %-*s  %s" % (w, k, v))
    if a.only == "12345":
        print()
        derived(out, ds_sizes, shapes)
    print("total %.0f s" % (time.time() - t_start))
    subprocess.run(["rm", "-rf", tmp])


def derived(out, ds_sizes, shapes):
    """Part 5: the extrapolation, every figure from the measured ones above."""
    inst, n_ds, lease, interval = 100, 10000, 30.0, 60.0
    per = n_ds // inst
    r100 = out["renew"][(100, "analyzed")]
    big = max(ds_sizes)
    cap = out["cap"][big]
    ap, dm = cap["append"], cap["daemon"]
    fence_us, fence_wal = out["fence_us"], out["fence_wal"]
    renew_s = inst * 3.0 / lease
    cycles_s = n_ds / interval  # datasource cycles per second over all instances
    biggest = max(shapes, key=lambda x: x[0] * x[1])
    snap = out["snap"][biggest]
    per_seg_b = snap["bytes"] / snap["segs"]
    small = [x for x in shapes if x[0] == biggest[0] and x != biggest]
    if small:
        # the slope between two sizes of the same datasources: the per-segment part alone
        lo = out["snap"][small[0]]
        per_seg_s = (snap["rep_s"] - lo["rep_s"]) / (snap["segs"] - lo["segs"])
        per_seg_cpu = (snap["nc_cpu"] - lo["nc_cpu"]) / (snap["segs"] - lo["segs"])
        how = "slope %d-%d segments" % (lo["segs"], snap["segs"])
    else:
        per_seg_s = snap["rep_s"] / snap["segs"]
        per_seg_cpu = snap["nc_cpu"] / snap["segs"]
        how = "%d segments, whole cycle" % snap["segs"]
    claim_ms = out["contention"][2]["scripts"][1]["lat_ms"]
    nc_tx = dm["xact"] / dm["cycles"]
    nc_pg_ms = 1e3 * dm["pgcpu"] / dm["cycles"]
    nc_wal = dm["wal"] / dm["cycles"]
    busy = dm["round_s"] - dm["interval"]
    ap_tx = ap["xact"] / big
    lines = [
        ("M", "fence: PostgreSQL time per slice (us), WAL (bytes)", "%.1f, %.0f" % (fence_us, fence_wal)),
        ("M", "renewal of 100 units (analyzed): ms per renewal, WAL bytes", "%.2f, %.0f" % (r100["tx_ms"], r100["wal"])),
        ("M", "renewal of 10,000 units (one instance holding all): ms",
         "%.1f" % out["renew"][(10000, "analyzed")]["tx_ms"]),
        ("M", "claim of one unit, 2 clients (ms)", "%.2f" % claim_ms),
        ("M", "no-change datasource cycle, daemon mode: PG transactions, PG CPU (ms), WAL (bytes)",
         "%.1f, %.2f, %.0f" % (nc_tx, nc_pg_ms, nc_wal)),
        ("M", "changed datasource (one late row, one slice), --once: PG transactions", "%.1f" % ap_tx),
        ("D", "one instance: no-change datasources per 60 s sync_interval (%d in %.1f s of work)" % (big, busy),
         "%.0f" % (big * interval / busy if busy > 0 else float("inf"))),
        ("D", "one instance: changed datasources per 60 s (--once of %d in %.1f s)" % (big, ap["wall"]),
         "%.0f" % (big * interval / ap["wall"])),
        ("", "100 instances x 10,000 datasources (%d each), lease_seconds 30, sync_interval 60:" % per, ""),
        ("D", "renewal statements/s (instances x 3 / lease_seconds)", "%.0f" % renew_s),
        ("D", "  their PostgreSQL time (ms/s), WAL (KB/s)",
         "%.0f, %.0f" % (renew_s * r100["tx_ms"], renew_s * r100["wal"] / 1e3)),
        ("D", "fence statements/s (= slices/s if every datasource changes every cycle)", "%.0f" % cycles_s),
        ("D", "  their PostgreSQL time (ms/s), WAL (KB/s)",
         "%.0f, %.0f" % (cycles_s * fence_us / 1e3, cycles_s * fence_wal / 1e3)),
        ("D", "claims/s in steady state (units stay held through renewals)", "0"),
        ("D", "claims when one instance dies (its units, after lease_seconds), PG time",
         "%d, %.0f ms" % (per, per * claim_ms)),
        ("D", "datasource cycles/s; their bookkeeping transactions/s (no change)",
         "%.0f; %.0f" % (cycles_s, cycles_s * nc_tx)),
        ("D", "  their PostgreSQL CPU (cores), WAL (KB/s)", "%.2f, %.0f" % (cycles_s * nc_pg_ms / 1e3,
                                                                       cycles_s * nc_wal / 1e3)),
        ("M", "sys.segments, test server (%s): ms per 1,000 segments, bytes per segment" % how,
         "%.1f, %.0f" % (1e6 * per_seg_s, per_seg_b)),
        ("M", "daemon CPU of a no-change --once per 1,000 segments in the snapshot (%s, ms)" % how,
         "%.1f" % (1e6 * per_seg_cpu)),
    ]
    for segs_per_ds in (10, 100):
        total = n_ds * segs_per_ds
        q_s = inst / interval
        lines += [
            ("", "sys.segments at 10,000 datasources x %d segments = %s segments:" % (
                segs_per_ds, format(total, ",")), ""),
            ("D", "  queries/s on the Broker (one per instance per cycle)", "%.2f" % q_s),
            ("D", "  response per query (MB); Broker egress (MB/s)",
             "%.0f; %.0f" % (total * per_seg_b / 1e6, q_s * total * per_seg_b / 1e6)),
            ("D", "  test-server time per query (s); queries in flight at that rate",
             "%.1f; %.1f" % (total * per_seg_s, q_s * total * per_seg_s)),
            ("D", "  daemon CPU per instance per cycle to read it (s)", "%.1f" % (total * per_seg_cpu)),
        ]
    print("5. derived (M = measured above, D = derived from them)")
    w = max(len(k) for _m, k, _v in lines)
    for m, k, v in lines:
        if not m:
            print("  %s" % k)
        else:
            print("  %s %-*s  %s" % (m, w, k, v))


if __name__ == "__main__":
    main()
