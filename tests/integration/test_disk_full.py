"""A full disk (issue 6 items 1 and 10): the destination table lives in a tablespace on a
small tmpfs. A sync that outgrows it fails the slice at once with PostgreSQL's own message
(SQLSTATE 53100), is not retried in a tight loop, does not hold up other datasources, and
leaves the state row 'error' (never 'syncing'); once there is room again, the next cycle
makes the table exact."""
import collections
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
from harness import EnvTestCase, iso_ms, ms_iso, state_row, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2022-05-06T00:00:00.000Z")
PAD = "x" * 200  # about 250 bytes a row on disk: 40,000 rows need ~10 MiB


def rows(n, start=0, pad=PAD):
    return [{"__time": ms_iso(BASE + i * 1000), "k": i, "v": "%s%d" % (pad, i)}
            for i in range(start, start + n)]


def live(pg, ds):
    return collections.Counter(tuple(r) for r in pg.psql(
        "SELECT k::text, v FROM %s WHERE NOT _druid_deleted" % tbl(ds)))


def want(rs):
    return collections.Counter((str(r["k"]), r["v"]) for r in rs)


def mount_tmpfs(path, size, owner):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", path],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shutil.chown(path, owner, owner)


def remount(path, size):
    subprocess.run(["mount", "-o", "remount,size=%s" % size, path], check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def tmpfs_reason():
    """Why a small tmpfs cannot be mounted here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root to mount a small tmpfs for the tablespace"
    d = tempfile.mkdtemp(prefix="dsync-tmpfs-probe-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            return "cannot mount tmpfs here: %s" % r.stderr.strip()
        subprocess.run(["umount", d], check=False)
        return None
    finally:
        os.rmdir(d)


def slice_reads(sim, ds):
    frm = 'FROM "%s"' % ds
    return [q for q in sim.queries() if frm in (q.get("sql") or "")
            and "COUNT(" not in (q.get("sql") or "").upper()]


@unittest.skipIf(tmpfs_reason(), tmpfs_reason() or "")
class DiskFull(EnvTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mnt = tempfile.mkdtemp(prefix="dsync-small-ts-")
        try:
            mount_tmpfs(cls.mnt, "8m", "postgres")
        except Exception:
            os.rmdir(cls.mnt)
            super().tearDownClass()
            raise
        cls.mounted = True

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()  # PostgreSQL first: it holds files in the tablespace
        finally:
            if cls.mounted:
                r = subprocess.run(["umount", cls.mnt], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                if r.returncode != 0:
                    subprocess.run(["umount", "-l", cls.mnt], check=False)
            shutil.rmtree(cls.mnt, ignore_errors=True)

    def test_full_tablespace(self):
        ds, other = "fills_disk", "bystander"
        self.sim.datasource(ds, COLS, rows(100))
        self.sim.datasource(other, COLS, rows(50))
        self.env.config(datasources=[ds, other], batch_size=100000, max_concurrent_queries=2,
                        max_retries=3, retry_initial_seconds=1, retry_max_seconds=4,
                        sync_interval_seconds=0.5)
        self.env.once()
        self.pg.psql("CREATE TABLESPACE small LOCATION '%s'" % self.mnt)
        self.pg.psql("ALTER TABLE %s SET TABLESPACE small" % tbl(ds))

        # 40,000 more rows (~10 MiB, one slice) into an 8 MiB tablespace
        self.sim.append(ds, rows(40000, start=100))
        self.sim.append(other, rows(50, start=50))
        self.sim.clear_queries()
        t0 = time.time()
        rc, err = self.env.run("--once", timeout=120)
        secs = time.time() - t0
        self.assertEqual(rc, 1, err[-3000:])
        self.assertLess(secs, 30, err[-3000:])
        self.assertIn("53100", err)
        self.assertRegex(err, r"could not extend file|No space left on device")
        # failed at once: each slice read once, none retried
        reads = slice_reads(self.sim, ds)
        self.assertLessEqual(len(reads), 3, "slice reads of the full table: %d" % len(reads))
        st = state_row(self.pg, ds)
        self.assertEqual(st["status"], "error")
        self.assertIn("53100", st["last_error"])
        self.assertEqual(live(self.pg, other), want(rows(100)))
        self.assertEqual(state_row(self.pg, other)["status"], "ok")
        self.assertEqual(live(self.pg, ds), want(rows(100)), "a partial slice was committed")

        # daemon mode: no tight loop; the other datasource keeps syncing meanwhile
        self.sim.clear_queries()
        window = 12.0
        td = time.time()
        p = self.env.start_daemon()
        try:
            time.sleep(3)
            self.sim.append(other, rows(30, start=100))
            wait_for(lambda: live(self.pg, other) == want(rows(130)), timeout=15,
                     what="the other datasource to sync while the disk is full")
            time.sleep(max(0.0, td + window - time.time()))
            cycles = len(slice_reads(self.sim, ds))
            self.assertIn("53100", state_row(self.pg, ds)["last_error"] or "")
            # failed cycles back off (1, 2, 4, 4 s): a handful, never hundreds
            self.assertGreaterEqual(cycles, 2, "the full datasource was not tried again")
            self.assertLessEqual(cycles, 10, "%d slice reads in about %.0f s" % (cycles, window))
            # room again: the next cycle converges
            remount(self.mnt, "256m")
            wait_for(lambda: live(self.pg, ds) == want(rows(40100)), timeout=40,
                     interval=0.5, what="the table to become exact once there is room")
            wait_for(lambda: state_row(self.pg, ds)["status"] == "ok", timeout=10,
                     what="status ok")
        finally:
            p.terminate()
            try:
                _, derr = p.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                _, derr = p.communicate()
        self.assertEqual(p.returncode, 0, derr[-3000:])
        self.assertEqual(int(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds))), 40100)
        line = next((l for l in err.split("\n") if "53100" in l), "")
        print("\n  disk full: --once failed in %.1f s after %d slice read(s); %d slice reads of "
              "the full datasource in daemon mode over ~%.0f s\n  %s"
              % (secs, len(reads), cycles, window, line[:400]))


if __name__ == "__main__":
    harness.main()
