#!/usr/bin/python3
"""Smoke run of the throughput benchmark (tests/bench/throughput.py --quick): it completes
and prints every figure line and every target line. No speed is asserted: the figures
depend on the machine; the benchmark is run by hand for them (README, "Benchmarks").
"""
import os
import re
import subprocess
import unittest

import harness

BENCH = os.path.join(harness.SOURCE_DIR, "tests", "bench", "throughput.py")

FIGURES = [
    r"first sync, end to end \(rows/s\)",
    r"first sync, end to end \(MB/s of COPY text\)",
    r"psql \\copy, one session \(rows/s\)",
    r"psql \\copy, two sessions \(rows/s\)",
    r"daemon / one \\copy session",
    r"daemon / two \\copy sessions",
    r"daemon CPU \(CPU-s per million rows\)",
    r"PostgreSQL backends CPU, daemon's load \(CPU-s per million rows\)",
    r"PostgreSQL backends CPU, one \\copy \(CPU-s per million rows\)",
    r"PostgreSQL backends CPU, two \\copy \(CPU-s per million rows\)",
    r"PostgreSQL CPU ratio, daemon's load / one \\copy",
    r"daemon peak RSS \(VmHWM\) at 100000 rows \(MiB\)",
    r"Druid queries per million rows \(first sync\)",
    r"rows scanned per row delivered \(first sync\)",
    r"rows returned per row delivered \(first sync\)",
    r"no-change cycle: wall time \(s\)",
    r"no-change cycle: Druid queries",
    r"1 % append \(1000 rows\): wall time \(s\)",
    r"1 % append: Druid queries",
    r"1 % append: rows read from Druid",
    r"test server raw rate, 4 at once, curl to /dev/null \(rows/s\)",
    r"test server raw rate \(MB/s of response\)",
    r"test server raw rate / daemon end to end",
]
TARGETS = [
    r"first sync >= 1\.0 x two-session \\copy",
    r"daemon CPU <= 0\.6 CPU-s per million rows",
    r"PostgreSQL CPU for the daemon's load <= 1\.1 x one \\copy",
    r"peak RSS <= 64 MiB at 10M rows, and <= 1\.2 x RSS at 1M",
    r"test server raw rate >= 3 x daemon end to end",
]
NUMBER = r"\d+(\.\d+)?"


class BenchSmoke(unittest.TestCase):
    def test_quick_run_prints_every_figure(self):
        env = dict(os.environ, DSYNC_BIN=harness.BIN, DSYNC_SHARED_DATA=harness.SHARED_DATA)
        p = subprocess.run(["/usr/bin/python3", BENCH, "--quick"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=600, env=env)
        out = p.stdout
        self.assertEqual(p.returncode, 0, out[-4000:])
        for f in FIGURES:
            # one line per figure, with a number (a median, or a ratio) after the label
            self.assertRegex(out, re.compile(r"^%s +%s" % (f, NUMBER), re.M), f)
        for t in TARGETS:
            self.assertRegex(out, re.compile(r"^target %s +(met|NOT MET|n/a) +\(" % t, re.M), t)
        self.assertIn("CREATE UNIQUE INDEX", out)  # the table shape both sides load into


if __name__ == "__main__":
    harness.main()
