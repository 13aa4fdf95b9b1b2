#!/usr/bin/python3
"""Throughput benchmark (issue 8): the first sync of a large wikiticker-shaped datasource
with the real binary, side by side with `psql \\copy` of the same rows into the same table
shape, plus a no-change cycle and a 1 % append. Not part of the test suite; run it by hand:

    /usr/bin/python3 tests/bench/throughput.py [--rows N] [--reps R] [--quick]

Defaults: 1,000,000 rows, 3 repetitions (medians, with the range over repetitions).
--rows 10000000 also syncs a 1,000,000-row datasource once, for the RSS ratio.
--quick: 100,000 rows, 1 repetition (a smoke run of about a minute).

What it does, all in one run on one throwaway PostgreSQL (tests/integration/harness.py)
and one Druid test server (tests/druid_sim/simctl.py):
- The datasource "wiki": the rows of the real Wikipedia sample in the shared data folder
  (wikiticker-2015-09-12-sampled.json.gz), cycled, copy k shifted by k days, N rows in
  all (the test server builds it from the file; nothing is copied into the repository).
- A warm-up sync (not measured) records the daemon's slice queries and exports the synced
  table with COPY TO: that text is what `\\copy` loads (its size is the "MB of COPY text").
- Each repetition, in an order rotated between repetitions:
  * the test server's raw rate: the daemon's slice queries again, as many at once as the
    daemon runs (max_concurrent_queries, 4), each fetched by curl to /dev/null;
  * druid-syncd --once (a real config file, default settings) into a fresh database: wall
    time, its CPU and peak RSS (wait4 rusage: ru_maxrss is the kernel's VmHWM), the
    PostgreSQL backends' CPU (the postmaster's cutime+cstime: backends are its children
    and are reaped when they exit), Druid queries from the server's query log; then a
    no-change cycle and a 1 % append (rows in the next day) on that database;
  * `psql \\copy` of the exported text into a fresh table created LIKE the daemon's table
    INCLUDING ALL (same columns, primary key and indexes), one session, and two sessions
    at once each loading half the rows.
- The in-process floor (tests/bench/bench_floor.c, built next to the binary as the target
  bench_floor; the run builds it when missing): one process with the daemon's libraries and
  settings (libcurl multi on a libuv loop, the same HTTP options, the same queries at once;
  libpq non-blocking COPY in 256 KiB CopyData messages over postgres_writers connections)
  (a) fetches the slice responses and throws them away, (b) sends the COPY text held in
  memory into a table of the same columns, (c) both at once: its CPU (getrusage around
  each part) per million rows is what nobody can go below with these wire protocols.
- The I/O floor of other processes: the CPU of the curl processes of the raw measurement (per million rows they
  fetched) and of the psql client of the one-session `\\copy` (per million rows it sent): what
  receiving the responses and sending the COPY text cost by themselves, whatever a client
  does in between; the daemon's CPU is printed split into user and system time beside it.
PostgreSQL settings are the same for both sides (the harness's: fsync=off; autovacuum is
switched off for the whole run so that no worker lands inside one measurement).
"""
import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402

DS = "wiki"
DAY_MS = 86400000
CLK = os.sysconf("SC_CLK_TCK")


# -- process accounting --------------------------------------------------------------------

def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in seconds from /proc/<pid>/stat."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK, (int(rest[13]) + int(rest[14])) / CLK


def children_of(ppid):
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if proc_stat(int(d))[0] == ppid:
                    out.add(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


class Backends:
    """CPU of the PostgreSQL backends that start and end inside a measurement: the
    postmaster's reaped-children time, read once every new child has exited."""

    def __init__(self, pg):
        with open(os.path.join(pg.dir, "data", "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def start(self):
        self.aux = children_of(self.pid)
        self.c0 = proc_stat(self.pid)[2]

    def stop(self, timeout=30):
        deadline = time.time() + timeout
        while children_of(self.pid) - self.aux and time.time() < deadline:
            time.sleep(0.02)
        return proc_stat(self.pid)[2] - self.c0


# -- the Druid side ------------------------------------------------------------------------

def sample_rows():
    """The Wikipedia sample as the datasource's rows (column names, __time in ms)."""
    rows = []
    with gzip.open(harness.WIKI, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                r["__time"] = harness.iso_ms(r.pop("time"))
                rows.append(r)
    return rows


def query_body(q, params=None):
    return json.dumps({"query": q["sql"], "parameters": params if params is not None else q["parameters"],
                       "context": {k: v for k, v in q["context"].items() if k != "sqlQueryId"},
                       "resultFormat": q["resultFormat"], "header": q["header"],
                       "typesHeader": q["typesHeader"], "sqlTypesHeader": q["sqlTypesHeader"]})


def is_slice(q):
    sql = q.get("sql") or ""
    return ('FROM "%s"' % DS) in sql and "COUNT(" not in sql.upper() and "SUM(" not in sql.upper()


def children_cpu():
    """(user, system) CPU seconds of this process's children that have been waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime, r.ru_stime


def raw_rate(sim, slices, parallel):
    """The test server's rate for these queries, `parallel` at once, curl to /dev/null:
    (rows/s, MB/s, seconds, rows, the curl processes' CPU seconds)."""
    cpu0 = sum(children_cpu())
    sim.clear_queries()
    todo = list(slices)
    lock = threading.Lock()
    total = [0]
    errors = []

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                q = todo.pop(0)
            p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                "-H", "Content-Type: application/json", "--data-binary", "@-",
                                sim.url + "/druid/v2/sql"], input=query_body(q), capture_output=True, text=True)
            code, size = (p.stdout.split() + ["0", "0"])[:2]
            with lock:
                if p.returncode != 0 or code != "200":
                    errors.append(p.stdout + p.stderr)
                total[0] += int(size)

    t0 = time.time()
    ths = [threading.Thread(target=worker) for _ in range(parallel)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    secs = time.time() - t0
    if errors:
        raise SystemExit("raw fetch failed: %s" % errors[0])
    logged = [q for q in sim.queries() if is_slice(q)]
    if not all(q["complete"] for q in logged):
        raise SystemExit("raw fetch: a response was not complete")
    rows = sum(q["rows_sent"] for q in logged)
    return rows / secs, total[0] / secs / 1e6, secs, rows, sum(children_cpu()) - cpu0


def warm(sim, slices):
    """One tiny slice query: (re)renders the server's cached rows of the datasource."""
    q = slices[0]
    p = [dict(q["parameters"][0]), dict(q["parameters"][-1])] if q["parameters"] else None
    if p:
        p[1]["value"] = p[0]["value"]
    # rendering 10M rows anew takes the server minutes: wait for it
    sim.request("POST", "/druid/v2/sql", query_body(q, p).encode(), {"Content-Type": "application/json"},
                timeout=600)


def scanned_rows(pg, db, queries, total):
    """Rows Druid reads to answer these queries: the datasource's rows inside each one's
    time filter (all of them without one), counted in the synced table."""
    n = 0
    for q in queries:
        sql = q.get("sql") or ""
        if ('FROM "%s"' % DS) not in sql:
            continue
        ps = [x.get("value") for x in q.get("parameters") or [] if x.get("type") == "TIMESTAMP"]
        lo = ps[0] if '"__time" >= ?' in sql and ps else None
        hi = ps[-1] if '"__time" < ?' in sql and ps else None
        if lo is None and hi is None:
            n += total
            continue
        cond = []
        if lo is not None:
            cond.append("__time >= to_timestamp(%d / 1000.0)" % lo)
        if hi is not None:
            cond.append("__time < to_timestamp(%d / 1000.0)" % hi)
        n += int(psql(pg, db, "SELECT count(*) FROM druid.%s WHERE %s" % (DS, " AND ".join(cond))))
    return n


# -- PostgreSQL helpers ----------------------------------------------------------------------

def psql(pg, db, sql):
    rows = pg.psql(sql, db=db)
    return rows[0][0] if rows and rows[0] else None


def vm_hwm_kib(pid):
    """The process's own peak RSS (VmHWM), None once it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run_daemon(cfg_path, log_path, split=None):
    """druid-syncd --once: (exit code, wall s, CPU s, peak RSS KiB); split, a list, receives
    the user and system CPU seconds.

    The peak RSS is VmHWM read from /proc while the daemon runs, not wait4's ru_maxrss: Linux
    folds the forking parent's RSS before exec into ru_maxrss, so this Python process's own
    size (hundreds of MiB here) would be reported as the daemon's."""
    with open(log_path, "ab") as log:
        t0 = time.time()
        p = subprocess.Popen([harness.BIN, "-c", cfg_path, "--once"], stdout=log, stderr=log)
        peak = [0]

        def watch():
            while True:
                v = vm_hwm_kib(p.pid)
                if v is None:
                    return
                peak[0] = max(peak[0], v)
                time.sleep(0.01)
        th = threading.Thread(target=watch, daemon=True)
        th.start()
        _pid, status, ru = os.wait4(p.pid, 0)
        wall = time.time() - t0
        th.join(timeout=5)
    p.returncode = os.waitstatus_to_exitcode(status)
    if split is not None:
        split[:] = [ru.ru_utime, ru.ru_stime]
    return p.returncode, wall, ru.ru_utime + ru.ru_stime, peak[0]


def copy_in(pg, db, table, files, backends):
    """`psql \\copy` of each file into table, all sessions at once: (wall s, backend CPU s,
    the psql processes' own CPU s)."""
    cpu0 = sum(children_cpu())
    backends.start()
    t0 = time.time()
    procs = [subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pg.conninfo(db), "-c",
                               "\\copy %s FROM '%s'" % (table, f)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for f in files]
    errs = [p.communicate()[1] for p in procs]
    wall = time.time() - t0
    client = sum(children_cpu()) - cpu0
    cpu = backends.stop()
    if any(p.returncode for p in procs):
        raise SystemExit("\\copy failed: %s" % b"".join(errs).decode())
    return wall, cpu, client


# -- reporting ---------------------------------------------------------------------------

def floor_bin():
    """bench_floor of the binary's build tree (DSYNC_BENCH_FLOOR overrides), built if missing."""
    path = os.environ.get("DSYNC_BENCH_FLOOR") or os.path.join(os.path.dirname(harness.BIN), "tests", "bench",
                                                                "bench_floor")
    if not os.path.exists(path) and not os.environ.get("DSYNC_BENCH_FLOOR"):
        subprocess.run(["cmake", "--build", os.path.dirname(harness.BIN), "--target", "bench_floor"],
                       stdout=subprocess.DEVNULL)
    return path if os.path.exists(path) else None


def run_floor(path, args):
    """bench_floor's parts: {part: (user, sys)} in CPU-s per million rows."""
    p = subprocess.run([path] + args, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("bench_floor failed: %s" % p.stderr.strip())
    out = {}
    for line in p.stdout.splitlines():
        if line.startswith("FLOOR "):
            kv = dict(x.split("=", 1) for x in line.split()[1:])
            out[kv["part"]] = (float(kv["user"]), float(kv["sys"]))
    return out


def fig(values, fmt="%.0f"):
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt % med
    return "%s [%s-%s]" % (fmt % med, fmt % min(values), fmt % max(values))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100,000 rows, 1 repetition")
    ap.add_argument("--parallel", type=int, default=4,
                    help="slice queries at once in the raw server measurement (the daemon's default 4)")
    a = ap.parse_args()
    if a.quick:
        a.rows, a.reps = 100_000, 1
    if not os.path.exists(harness.BIN):
        raise SystemExit("no binary at %s (set DSYNC_BIN)" % harness.BIN)
    if not os.path.exists(harness.WIKI):
        raise SystemExit("sample not found at %s (set DSYNC_SHARED_DATA)" % harness.WIKI)
    N = a.rows
    tmp = tempfile.mkdtemp(prefix="dsync-bench-")
    os.chmod(tmp, 0o755)
    log_path = os.path.join(tmp, "daemon.log")
    t_start = time.time()
    pg = harness.Postgres()
    sim = None
    dbs = []
    try:
        pg.psql("ALTER SYSTEM SET autovacuum = off", db="postgres")
        pg.psql("SELECT pg_reload_conf()", db="postgres")
        backends = Backends(pg)
        sim = harness.Sim.start()
        t0 = time.time()
        sim.load(DS, harness.WIKI, rows=N)
        print("datasource %s: %d rows built in %.1f s" % (DS, N, time.time() - t0), flush=True)
        big = N > 1_000_000
        if big:
            sim.load("wiki1m", harness.WIKI, rows=1_000_000)

        def config(db, **kw):
            path = os.path.join(tmp, "config-%s.json" % db)
            cfg = {"druid_host": "127.0.0.1", "druid_port": sim.port, "postgres": pg.conninfo(db),
                   "destination_schema": "druid", "datasources": kw.pop("datasources", [DS])}
            cfg.update(kw)
            with open(path, "w") as f:
                json.dump(cfg, f, indent=2)
            return path

        def new_db(name):
            pg.psql("DROP DATABASE IF EXISTS %s" % name, db="postgres")
            pg.psql("CREATE DATABASE %s" % name, db="postgres")
            dbs.append(name)
            return name

        # Warm-up: the slice queries, the server's rendered rows, the COPY text.
        warm_db = new_db("warm")
        sim.clear_queries()
        t0 = time.time()
        rc, wall, _cpu, _rss = run_daemon(config(warm_db), log_path)
        if rc != 0:
            raise SystemExit("warm-up sync failed (exit %d); see %s" % (rc, log_path))
        slices = [q for q in sim.queries() if is_slice(q)]
        got = int(psql(pg, warm_db, "SELECT count(*) FROM druid.%s" % DS))
        if got != N:
            raise SystemExit("warm-up sync stored %d rows, expected %d" % (got, N))
        print("warm-up sync: %.1f s (includes the server rendering its rows once), %d slice queries"
              % (time.time() - t0, len(slices)), flush=True)
        copy_all = os.path.join(tmp, "rows.copy")
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pg.conninfo(warm_db), "-c",
                        "\\copy druid.%s TO '%s'" % (DS, copy_all)], check=True)
        copy_bytes = os.path.getsize(copy_all)
        halves = [os.path.join(tmp, "half%d.copy" % i) for i in (0, 1)]
        with open(copy_all, "rb") as f:
            data = f.read()
        cut = data.index(b"\n", len(data) // 2) + 1
        for path, part in zip(halves, (data[:cut], data[cut:])):
            with open(path, "wb") as f:
                f.write(part)
        del data
        mb = copy_bytes / 1e6
        shape = pg.psql("SELECT indexdef FROM pg_indexes WHERE schemaname = 'druid' AND tablename = '%s' "
                        "ORDER BY indexname" % DS, db=warm_db)
        pg.psql("CREATE SCHEMA bench", db=warm_db)
        base = sample_rows()
        span_days = (max(r["__time"] for r in base) - min(r["__time"] for r in base)) // DAY_MS + 1
        copies = -(-N // len(base))
        append_n = max(1, N // 100)
        append_day0 = min(r["__time"] for r in base) // DAY_MS * DAY_MS + copies * span_days * DAY_MS

        # The in-process floor: the slice queries, a table of the daemon's columns (no
        # indexes: the client's CPU does not depend on them, and a first sync loads without).
        floor = floor_bin()
        if floor:
            qfile = os.path.join(tmp, "slices.jsonl")
            with open(qfile, "w") as f:
                for q in slices:
                    f.write(query_body(q) + "\n")
            pg.psql("CREATE TABLE bench.floor (LIKE druid.%s)" % DS, db=warm_db)
            floor_args = ["--url", sim.url + "/druid/v2/sql", "--queries", qfile, "--fetch-rows",
                          str(sum(q["rows_sent"] for q in slices)), "--pg", pg.conninfo(warm_db),
                          "--table", "bench.floor", "--copy", copy_all, "--parallel", str(a.parallel),
                          "--writers", "2"]
        else:
            print("bench_floor not found next to the binary: the in-process floor is left out", flush=True)

        R = {k: [] for k in ("raw_rows", "raw_mb", "d_rows", "d_mb", "d_cpu", "d_pgcpu", "d_rss", "d_queries",
                             "d_scanned", "d_returned", "d_user", "d_sys", "raw_cpu", "c1_client", "nc_wall", "nc_queries", "ap_wall", "ap_queries",
                             "ap_rows", "c1_rows", "c1_pgcpu", "c2_rows", "c2_pgcpu", "f_fetch_u", "f_fetch_s",
                             "f_copy_u", "f_copy_s", "f_both_u", "f_both_s")}

        def step_floor(rep):
            warm(sim, slices)
            got = run_floor(floor, floor_args)
            for part in ("fetch", "copy", "both"):
                R["f_%s_u" % part].append(got[part][0])
                R["f_%s_s" % part].append(got[part][1])

        def step_raw(rep):
            warm(sim, slices)
            rr, rmb, _s, rows, cpu = raw_rate(sim, slices, a.parallel)
            R["raw_rows"].append(rr)
            R["raw_mb"].append(rmb)
            R["raw_cpu"].append(cpu / (rows / 1e6))

        def step_daemon(rep):
            warm(sim, slices)
            db = new_db("rep%d" % rep)
            cfg = config(db)
            sim.clear_queries()
            backends.start()
            split = []
            rc, wall, cpu, rss = run_daemon(cfg, log_path, split)
            pgcpu = backends.stop()
            if rc != 0:
                raise SystemExit("first sync failed (exit %d); see %s" % (rc, log_path))
            queries = sim.queries()
            n = int(psql(pg, db, "SELECT count(*) FROM druid.%s" % DS))
            if n != N:
                raise SystemExit("first sync stored %d rows, expected %d" % (n, N))
            R["d_rows"].append(N / wall)
            R["d_mb"].append(mb / wall)
            R["d_cpu"].append(cpu / (N / 1e6))
            R["d_user"].append(split[0] / (N / 1e6))
            R["d_sys"].append(split[1] / (N / 1e6))
            R["d_pgcpu"].append(pgcpu / (N / 1e6))
            R["d_rss"].append(rss / 1024)
            R["d_queries"].append(len(queries) / (N / 1e6))
            R["d_scanned"].append(scanned_rows(pg, db, queries, N) / N)
            R["d_returned"].append(sum(q["rows_sent"] for q in queries if is_slice(q)) / N)
            # No change.
            sim.clear_queries()
            rc, wall, _c, _r = run_daemon(cfg, log_path)
            if rc != 0:
                raise SystemExit("no-change cycle failed; see %s" % log_path)
            R["nc_wall"].append(wall)
            R["nc_queries"].append(len(sim.queries()))
            # 1 % append: rows of the sample in the day after the last copy (a new chunk).
            rows = []
            for i in range(append_n):
                r = dict(base[i % len(base)])
                r["__time"] = r["__time"] - r["__time"] // DAY_MS * DAY_MS + append_day0 + \
                    (i // len(base)) * DAY_MS
                rows.append(r)
            sim.late_append(DS, rows)
            warm(sim, slices)  # the server renders its rows anew now, not inside the measurement
            sim.clear_queries()
            rc, wall, _c, _r = run_daemon(cfg, log_path)
            if rc != 0:
                raise SystemExit("append cycle failed; see %s" % log_path)
            queries = sim.queries()
            n = int(psql(pg, db, "SELECT count(*) FROM druid.%s" % DS))
            if n != N + append_n:
                raise SystemExit("after the append: %d rows, expected %d" % (n, N + append_n))
            R["ap_wall"].append(wall)
            R["ap_queries"].append(len(queries))
            R["ap_rows"].append(sum(q["rows_sent"] for q in queries if is_slice(q)))
            sim.drop_interval(DS, harness.ms_iso(append_day0),
                              harness.ms_iso(append_day0 + (append_n // len(base) + 1) * DAY_MS))
            pg.psql("DROP DATABASE %s" % db, db="postgres")
            dbs.remove(db)

        def step_copy(rep, sessions):
            table = "bench.c%d" % sessions
            pg.psql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (LIKE druid.%s INCLUDING ALL)"
                    % (table, table, DS), db=warm_db)
            wall, cpu, client = copy_in(pg, warm_db, table, [copy_all] if sessions == 1 else halves, backends)
            n = int(psql(pg, warm_db, "SELECT count(*) FROM %s" % table))
            if n != N:
                raise SystemExit("\\copy stored %d rows, expected %d" % (n, N))
            R["c%d_rows" % sessions].append(N / wall)
            R["c%d_pgcpu" % sessions].append(cpu / (N / 1e6))
            if sessions == 1:
                R["c1_client"].append(client / (N / 1e6))
            pg.psql("DROP TABLE %s" % table, db=warm_db)

        steps = [step_raw, step_daemon, lambda r: step_copy(r, 1), lambda r: step_copy(r, 2)]
        if floor:
            steps.append(step_floor)
        for rep in range(a.reps):
            k = rep % len(steps)
            for st in steps[k:] + steps[:k]:
                st(rep)
            print("repetition %d of %d done (%.0f s so far)" % (rep + 1, a.reps, time.time() - t_start), flush=True)

        rss_1m = None
        if big:
            db = new_db("rss1m")
            rc, _w, _c, rss = run_daemon(config(db, datasources=["wiki1m"]), log_path)
            if rc != 0:
                raise SystemExit("1M sync failed; see %s" % log_path)
            rss_1m = rss / 1024
    finally:
        if sim is not None:
            sim.stop()
        pg.stop()

    # -- report
    med = statistics.median
    d, c1, c2 = med(R["d_rows"]), med(R["c1_rows"]), med(R["c2_rows"])
    print()
    print("druid-syncd throughput: %d rows (%s), %.1f MB of COPY text (%.0f bytes/row), %d repetition%s, "
          "%d cores" % (N, "wikiticker sample cycled by day", mb, copy_bytes / N, a.reps, "s" if a.reps > 1 else "",
                        os.cpu_count()))
    print("binary %s; medians [min-max]" % harness.BIN)
    print("table shape for both sides: %s" % "; ".join(r[0] for r in shape))
    print()
    lines = [
        ("first sync, end to end (rows/s)", fig(R["d_rows"])),
        ("first sync, end to end (MB/s of COPY text)", fig(R["d_mb"], "%.1f")),
        ("psql \\copy, one session (rows/s)", fig(R["c1_rows"])),
        ("psql \\copy, two sessions (rows/s)", fig(R["c2_rows"])),
        ("daemon / one \\copy session", "%.2f" % (d / c1)),
        ("daemon / two \\copy sessions", "%.2f" % (d / c2)),
        ("daemon CPU (CPU-s per million rows)", fig(R["d_cpu"], "%.2f")),
        ("  of which user / system", "%s / %s" % (fig(R["d_user"], "%.2f"), fig(R["d_sys"], "%.2f"))),
    ]
    if R["f_both_u"]:
        tot = {p: [u + s for u, s in zip(R["f_%s_u" % p], R["f_%s_s" % p])] for p in ("fetch", "copy", "both")}
        for p, what in (("fetch", "fetching the slice responses, thrown away"),
                        ("copy", "sending the COPY text from memory"), ("both", "both at once")):
            lines.append(("  in-process floor (bench_floor): %s" % what, "%s (user %s / system %s)" % (
                fig(tot[p], "%.2f"), fig(R["f_%s_u" % p], "%.2f"), fig(R["f_%s_s" % p], "%.2f"))))
        lines.append(("  daemon CPU above the in-process floor (both)",
                      "%.2f" % (med(R["d_cpu"]) - med(tot["both"]))))
    lines += [
        ("  I/O floor: curl fetching the same responses to /dev/null", fig(R["raw_cpu"], "%.2f")),
        ("  I/O floor: psql sending the same COPY text (client CPU)", fig(R["c1_client"], "%.2f")),
        ("  I/O floor, both (what reading and writing alone cost)",
         "%.2f" % (med(R["raw_cpu"]) + med(R["c1_client"]))),
        ("PostgreSQL backends CPU, daemon's load (CPU-s per million rows)", fig(R["d_pgcpu"], "%.2f")),
        ("PostgreSQL backends CPU, one \\copy (CPU-s per million rows)", fig(R["c1_pgcpu"], "%.2f")),
        ("PostgreSQL backends CPU, two \\copy (CPU-s per million rows)", fig(R["c2_pgcpu"], "%.2f")),
        ("PostgreSQL CPU ratio, daemon's load / one \\copy", "%.2f" % (med(R["d_pgcpu"]) / med(R["c1_pgcpu"]))),
        ("daemon peak RSS (VmHWM) at %d rows (MiB)" % N, fig(R["d_rss"], "%.1f")),
    ]
    if rss_1m is not None:
        lines.append(("daemon peak RSS (VmHWM) at 1000000 rows (MiB)", "%.1f" % rss_1m))
    lines += [
        ("Druid queries per million rows (first sync)", fig(R["d_queries"], "%.1f")),
        ("rows scanned per row delivered (first sync)", fig(R["d_scanned"], "%.2f")),
        ("rows returned per row delivered (first sync)", fig(R["d_returned"], "%.2f")),
        ("no-change cycle: wall time (s)", fig(R["nc_wall"], "%.2f")),
        ("no-change cycle: Druid queries", fig(R["nc_queries"], "%.0f")),
        ("1 %% append (%d rows): wall time (s)" % append_n, fig(R["ap_wall"], "%.2f")),
        ("1 % append: Druid queries", fig(R["ap_queries"], "%.0f")),
        ("1 % append: rows read from Druid", fig(R["ap_rows"], "%.0f")),
        ("test server raw rate, %d at once, curl to /dev/null (rows/s)" % a.parallel, fig(R["raw_rows"])),
        ("test server raw rate (MB/s of response)", fig(R["raw_mb"], "%.1f")),
        ("test server raw rate / daemon end to end", "%.2f" % (med(R["raw_rows"]) / d)),
    ]
    w = max(len(k) for k, _v in lines)
    for k, v in lines:
        print("%-*s  %s" % (w, k, v))
    print()

    def target(name, ok, detail):
        print("target %-62s %-8s (%s)" % (name, "met" if ok else "NOT MET", detail))

    target("first sync >= 1.0 x two-session \\copy", d >= c2, "%.2f x" % (d / c2))
    floor_note = ""
    if R["f_both_u"]:
        floor_note = "; in-process floor of the wire protocols %.2f" % med(
            [u + s for u, s in zip(R["f_both_u"], R["f_both_s"])])
    target("daemon CPU <= 0.6 CPU-s per million rows", med(R["d_cpu"]) <= 0.6,
           "%.2f%s" % (med(R["d_cpu"]), floor_note))
    ratio = med(R["d_pgcpu"]) / med(R["c1_pgcpu"])
    target("PostgreSQL CPU for the daemon's load <= 1.1 x one \\copy", ratio <= 1.1, "%.3f x" % ratio)
    if rss_1m is not None:
        r10 = med(R["d_rss"])
        target("peak RSS <= 64 MiB at 10M rows", r10 <= 64 and N >= 10_000_000,
               "%.1f MiB at %d rows" % (r10, N))
        target("RSS at 10M <= 1.2 x RSS at 1M", r10 <= 1.2 * rss_1m and N >= 10_000_000,
               "%.2f x" % (r10 / rss_1m))
    else:
        print("target %-62s %-8s (%s)" % ("peak RSS <= 64 MiB at 10M rows, and <= 1.2 x RSS at 1M", "n/a",
                                         "run with --rows 10000000; %.1f MiB at %d rows" % (med(R["d_rss"]), N)))
    target("test server raw rate >= 3 x daemon end to end", med(R["raw_rows"]) >= 3 * d,
           "%.2f x" % (med(R["raw_rows"]) / d))
    print("total %.0f s" % (time.time() - t_start))
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
