"""Memory benchmark: the daemon's peak RSS while syncing one datasource in a single slice,
for a small and a 5x larger datasource. Bounded memory means the ratio stays near 1.0.
A third figure is the peak RSS with 8 queries in flight against endless lines: every slice
read gets a row line that never ends (the test server's endless_line fault), eight at once,
so each query's line buffer fills to the 4 MiB line limit before the slice fails.
Not part of the test suite (it takes a minute); run it by hand:

    /usr/bin/python3 tests/bench/memory.py [ROWS_SMALL] [ROWS_LARGE]

Uses the real binary (build/druid-syncd), a throwaway PostgreSQL and the Druid test server.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402

COLS = [{"name": "__time", "type": "TIMESTAMP"}, {"name": "s", "type": "VARCHAR"},
        {"name": "n", "type": "BIGINT"}]


def fill(sim, name, n):
    sim.datasource(name, COLS, [])
    chunk = []
    for i in range(n):
        chunk.append({"__time": 1442016000000 + i * 7, "s": ("x%d" % i) * 20, "n": i})
        if len(chunk) == 20000:
            sim.append(name, chunk)
            chunk = []
    if chunk:
        sim.append(name, chunk)


def peak_rss_kb(env, name):
    env.config(datasources=[name], batch_size=10_000_000)  # one slice for everything
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", harness.BIN, "-c", env.config_path,
                        "--once", "--log-level", "warning"], capture_output=True, text=True)
    secs = time.time() - t0
    if p.returncode != 0:
        raise SystemExit("druid-syncd failed:\n" + p.stderr[-3000:])
    rows = int(env.pg.scalar("SELECT count(*) FROM druid.%s" % harness.qident(name)))
    return int(p.stderr.strip().splitlines()[-1]), rows, secs


def endless_peak_rss_kb(env, inflight=8):
    """Peak RSS of a --once run whose `inflight` slice reads all hit endless lines at once."""
    name = "endless"
    env.sim.datasource(name, COLS, [])
    env.sim.append(name, [{"__time": 1442016000000 + i * 1000, "s": "x", "n": i} for i in range(10)])
    env.config(datasources=[name], batch_size=10, max_concurrent_queries=inflight, max_retries=1)
    p = subprocess.run([harness.BIN, "-c", env.config_path, "--once"], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("first sync failed:\n" + p.stderr[-3000:])
    env.sim.append(name, [{"__time": 1442016010000 + i * 1000, "s": "x", "n": i}
                          for i in range(20 * inflight)])
    match = harness.slice_match(env.sim, name)
    # The stall puts every read in flight (200 and header rows sent) before the lines start.
    env.sim.fault("endless_line", match=match, times=-1, delay_seconds=1.5)
    env.sim.reset_stats()
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", harness.BIN, "-c", env.config_path,
                        "--once", "--log-level", "warning"], capture_output=True, text=True)
    secs = time.time() - t0
    env.sim.clear_faults()
    if p.returncode != 1 or "exceeds the 4 MiB limit" not in p.stderr:
        raise SystemExit("expected the slices to fail at the line limit:\n" + p.stderr[-3000:])
    return int(p.stderr.strip().splitlines()[-1]), env.sim.stats()["max_inflight"], secs


def main():
    small = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    large = int(sys.argv[2]) if len(sys.argv) > 2 else 5 * small
    env = harness.Env()
    try:
        fill(env.sim, "small", small)
        fill(env.sim, "large", large)
        rs, ns, ts = peak_rss_kb(env, "small")
        rl, nl, tl = peak_rss_kb(env, "large")
        re_, ne, te = endless_peak_rss_kb(env)
    finally:
        env.close()
    print("rows %9d  one slice  peak RSS %7.1f MiB  %5.1f s  %8.0f rows/s" % (ns, rs / 1024, ts, ns / ts))
    print("rows %9d  one slice  peak RSS %7.1f MiB  %5.1f s  %8.0f rows/s" % (nl, rl / 1024, tl, nl / tl))
    print("data ratio %.1fx, peak RSS ratio %.2fx" % (nl / ns, rl / rs))
    print("%d queries in flight against endless lines  peak RSS %7.1f MiB  %5.1f s" % (ne, re_ / 1024, te))


if __name__ == "__main__":
    main()
