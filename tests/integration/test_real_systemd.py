"""The installed unit under a real systemd: systemd 252 runs as PID 1 of its own PID and mount
namespace (its /run, /tmp and /var/tmp are its own and the host's root is read-only to it), the unit files come from `cmake --install`,
and the test drives it with systemctl as an operator would: start (active only after READY),
reload with a broken file (the reload fails, the daemon keeps running with its old configuration),
reload with a good file (applied), stop (quick, clean).

Needs root, unshare(1) and /lib/systemd/systemd; skipped otherwise. What the test changes in the
unit, in a drop-in, and why: the throwaway PostgreSQL's socket directory lives in /tmp, which the
unit's PrivateTmp= hides, so the drop-in binds that one directory into the service's view."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
from harness import BIN, ms_iso, iso_ms, tbl, wait_for

SYSTEMD = "/lib/systemd/systemd"
ETC = "/etc/druid-syncd"
TARGET = "dsync-test-%d.target" % os.getpid()  # unique: the test finds its own PID 1 by it
COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2025-01-01T00:00:00.000Z")

BOOT = r"""#!/bin/bash
# PID 1 of a new PID and mount namespace. Everything it could write is its own: a private /run,
# /tmp and /var/tmp (tmpfs), and the host's root read-only (so that nothing systemd or a unit
# does at boot, such as tmpfiles cleaning /tmp, reaches the host). Binds: the test's config
# directory over /etc/druid-syncd, and the throwaway PostgreSQL's socket directory at its path.
# Never send this systemd SIGTERM: PID 1 re-executes itself on it and leaves the test target.
set -e
etc="$1"; pg="$2"
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system /run/lock /run/dsync-pg
mount --bind "$pg" /run/dsync-pg
mount --bind "$etc" /etc/druid-syncd
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mkdir -p "$pg"
mount --bind /run/dsync-pg "$pg"
mount -o remount,bind,ro /
printf '[Unit]\nDescription=druid-syncd test target\n' > /run/systemd/system/%s
exec %s --system --unit=%s --log-target=console --log-level=warning
""" % (TARGET, SYSTEMD, TARGET)


def rows(n, start=0):
    return [{"__time": ms_iso(BASE + i * 1000), "k": i, "v": "v%d" % i} for i in range(start, start + n)]


def sanitized():
    """A sanitizer build (the suite's second run): LeakSanitizer's exit check needs ptrace,
    which the unit's SystemCallFilter= forbids, so every process exits 1 inside the sandbox
    (the --check-config of ExecReload included). The installed unit is tested with the release
    binary of the first run."""
    try:
        with open(BIN, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"libasan" in data or b"__asan_init" in data or b"__ubsan_handle" in data


def usable():
    if os.geteuid() != 0:
        return "needs root"
    if sanitized():
        return "a sanitizer build: the unit's sandbox is for the release binary"
    if not os.path.exists(SYSTEMD) or not shutil.which("unshare") or not shutil.which("nsenter"):
        return "needs systemd, unshare and nsenter"
    return None


@unittest.skipIf(usable(), usable() or "")
class RealSystemdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.Env()
        cls.pg, cls.sim = cls.env.pg, cls.env.sim
        cls.sim.datasource("alpha", COLS, rows(30))
        cls.sim.datasource("beta", COLS, rows(20))
        # Outside /tmp (the unit's PrivateTmp= would hide it) and readable by the service's
        # dynamic user: the install tree and the config directory.
        build = os.path.dirname(os.path.abspath(BIN))
        cls.work = tempfile.mkdtemp(prefix="real-systemd-", dir=build)
        os.chmod(cls.work, 0o755)
        cls.prefix = os.path.join(cls.work, "prefix")
        subprocess.run(["cmake", "--install", build, "--prefix", cls.prefix], check=True,
                       stdout=subprocess.DEVNULL)
        cls.etc = os.path.join(cls.work, "etc")
        os.mkdir(cls.etc, 0o755)
        for cred in ("druid_password", "pgpass"):  # LoadCredential= needs them to exist
            with open(os.path.join(cls.etc, cred), "w") as f:
                f.write("")
            os.chmod(os.path.join(cls.etc, cred), 0o600)
        os.chmod(cls.pg.dir, 0o755)  # its socket directory (the data directory stays 0700)
        cls.made_etc = not os.path.isdir(ETC)
        if cls.made_etc:
            os.makedirs(ETC)
        boot = os.path.join(cls.work, "boot.sh")
        with open(boot, "w") as f:
            f.write(BOOT)
        os.chmod(boot, 0o755)
        cls.console = open(os.path.join(cls.work, "systemd.log"), "wb")
        cls.boot = subprocess.Popen(["unshare", "--pid", "--fork", "--mount", "--mount-proc", boot, cls.etc, cls.pg.dir],
                                    stdout=cls.console, stderr=subprocess.STDOUT)
        cls.pid1 = wait_for(cls.find_pid1, timeout=30, what="systemd in its namespace")
        wait_for(lambda: cls.ctl("is-system-running").stdout.strip() in ("running", "degraded"),
                 timeout=30, what="systemd running")
        units = os.path.join(cls.prefix, "lib", "systemd", "system")
        shutil.copy(os.path.join(units, "druid-syncd.service"), "/proc/%d/root/run/systemd/system/" % cls.pid1)
        dropin = "/proc/%d/root/run/systemd/system/druid-syncd.service.d" % cls.pid1
        os.makedirs(dropin)
        with open(os.path.join(dropin, "test.conf"), "w") as f:
            f.write("[Service]\nBindReadOnlyPaths=%s\n" % cls.pg.dir)
        cls.ctl("daemon-reload", check=True)

    @classmethod
    def find_pid1(cls):
        p = subprocess.run(["pgrep", "-f", "--", "--unit=" + TARGET], capture_output=True, text=True)
        pids = [int(x) for x in p.stdout.split()]
        return pids[0] if pids else None

    @classmethod
    def ctl(cls, *args, check=False, timeout=120):
        return subprocess.run(["nsenter", "-t", str(cls.pid1), "-m", "-p", "systemctl", "--no-pager"] + list(args),
                              capture_output=True, text=True, check=check, timeout=timeout)

    @classmethod
    def tearDownClass(cls):
        pid = cls.find_pid1()
        if pid:
            subprocess.run(["kill", "-9", str(pid)])
        try:
            cls.boot.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.boot.kill()
        cls.console.close()
        if cls.made_etc:
            try:
                os.rmdir(ETC)
            except OSError:
                pass
        shutil.rmtree(cls.work, ignore_errors=True)
        cls.env.close()

    def write_config(self, text):
        path = os.path.join(self.etc, "config.json")
        with open(path, "w") as f:
            f.write(text if isinstance(text, str) else json.dumps(text))
        os.chmod(path, 0o644)

    def good_config(self, datasources):
        return {"druid_host": "127.0.0.1", "druid_port": self.sim.port, "postgres": self.pg.conninfo(),
                "datasources": datasources, "sync_interval_seconds": 0.5, "batch_size": 1000}

    def show(self, prop):
        return self.ctl("show", "-p", prop, "--value", "druid-syncd.service").stdout.strip()

    def count(self, ds):
        try:
            return int(self.pg.scalar("SELECT count(*) FROM %s" % tbl(ds)))
        except subprocess.CalledProcessError:
            return -1

    def test_start_reload_stop(self):
        self.write_config(self.good_config(["alpha"]))
        t0 = time.time()
        p = self.ctl("start", "druid-syncd.service")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr + self.ctl("status", "druid-syncd").stdout)
        self.assertEqual(self.show("ActiveState"), "active")
        self.assertLess(time.time() - t0, 30)
        wait_for(lambda: self.count("alpha") == 30, timeout=60, what="alpha synced under systemd")
        pid = self.show("MainPID")
        self.assertNotEqual(pid, "0")
        # the service runs as its dynamic user, not root
        uid = self.ctl("show", "-p", "UID", "--value", "druid-syncd.service").stdout.strip()
        self.assertNotIn(uid, ("0", ""), "the service runs as root")

        # a broken file: `systemctl reload` fails, the daemon keeps running as it was
        for broken in ('{"druid_host": "127.0.0.1", "batch_sise": 5}', '{"druid_host": ',
                       json.dumps(dict(self.good_config(["alpha", "beta"]), postgres="host=x bogus=1"))):
            with self.subTest(config=broken):
                self.write_config(broken)
                p = self.ctl("reload", "druid-syncd.service")
                self.assertNotEqual(p.returncode, 0, "systemctl reload succeeded on a broken file")
                self.assertEqual(self.show("ActiveState"), "active")
                self.assertEqual(self.show("MainPID"), pid, "the daemon was restarted")
        time.sleep(2)  # several cycles: beta (only in the broken file) must not appear
        self.assertEqual(self.count("beta"), -1, "a broken file was applied")

        # a good file: the reload succeeds and is applied (beta gets synced)
        self.write_config(self.good_config(["alpha", "beta"]))
        p = self.ctl("reload", "druid-syncd.service")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(self.show("MainPID"), pid)
        wait_for(lambda: self.count("beta") == 20, timeout=60, what="beta synced after the reload")

        t0 = time.time()
        p = self.ctl("stop", "druid-syncd.service")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertLess(time.time() - t0, 15, "systemctl stop took too long")
        self.assertEqual(self.show("ActiveState"), "inactive")
        self.assertEqual(self.show("Result"), "success")

    def test_start_with_druid_unreachable(self):
        """issue 9.2 on the installed unit: a Druid that accepts connections and never answers
        does not hold up `systemctl start` (READY comes once the configuration is valid);
        STATUS= says what is waited for and why; the unit stays active (no restart loop);
        when Druid is fixed by a reload, syncing starts."""
        import socket
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts (the kernel does), never answers
        try:
            cfg = self.good_config(["alpha"])
            cfg.update(druid_port=silent.getsockname()[1], connect_timeout_seconds=2,
                       destination_schema="unreachable")
            self.write_config(cfg)
            t0 = time.time()
            p = self.ctl("start", "druid-syncd.service")
            took = time.time() - t0
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertLess(took, 10, "systemctl start waited for Druid")
            self.assertEqual(self.show("ActiveState"), "active")
            st = wait_for(lambda: (lambda t: t if "waiting for Druid" in t else None)(self.show("StatusText")),
                          timeout=20, what="STATUS= naming Druid")
            self.assertIn("127.0.0.1:%d" % silent.getsockname()[1], st)
            self.assertIn("within 2 s", st)
            pid = self.show("MainPID")
            time.sleep(5)  # several failed checks: still the same process, no restart loop
            self.assertEqual(self.show("MainPID"), pid)
            self.assertEqual(self.show("NRestarts"), "0")
            cfg.update(druid_port=self.sim.port)
            self.write_config(cfg)
            self.assertEqual(self.ctl("reload", "druid-syncd.service").returncode, 0)
            wait_for(lambda: self.pg.scalar("SELECT count(*) FROM unreachable.alpha") == "30"
                     if self.pg.scalar("SELECT to_regclass('unreachable.alpha')") else False,
                     timeout=60, what="alpha synced once Druid answers")
        finally:
            self.ctl("stop", "druid-syncd.service")
            silent.close()


if __name__ == "__main__":
    harness.main()
