"""Integration-test harness: a throwaway PostgreSQL, the Druid test server, config files,
and runs of the real druid-syncd binary. Every test module builds on `Env`.

PostgreSQL is started from Debian's binaries on a private socket directory (as the
`postgres` user when running as root, since initdb refuses root) and removed afterwards.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("DSYNC_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "druid_sim"))
from simctl import Sim  # noqa: E402

BIN = os.environ.get("DSYNC_BIN", os.path.join(SOURCE_DIR, "build", "druid-syncd"))
SHARED_DATA = os.environ.get(
    "DSYNC_SHARED_DATA", os.path.join(os.path.dirname(SOURCE_DIR), "shared", "data"))
WIKI = os.path.join(SHARED_DATA, "wikiticker-2015-09-12-sampled.json.gz")


def _pgbin():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: [int(x) for x in d.split("/")[-2].split(".")])
    if not dirs:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return dirs[-1]


class Postgres:
    """A throwaway PostgreSQL cluster listening only on a Unix socket."""

    def __init__(self):
        self.bin = _pgbin()
        self.root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="dsync-pg-", dir="/tmp")
        self.port = 20000 + (os.getpid() % 20000)
        if self.root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(["initdb", "-D", f"{self.dir}/data", "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-locale", "--no-sync"])
        self._run(["pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/server.log", "-w",
                   "-t", "60", "-o",
                   f"-p {self.port} -k {self.dir} -c listen_addresses='' -c fsync=off"
                   " -c max_connections=200", "start"])
        self.env = {"PGHOST": self.dir, "PGPORT": str(self.port), "PGUSER": "postgres"}
        self.psql("CREATE DATABASE sync", db="postgres")

    def _run(self, argv):
        cmd = [os.path.join(self.bin, argv[0])] + argv[1:]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def conninfo(self, db="sync"):
        return f"host={self.dir} port={self.port} user=postgres dbname={db}"

    def psql(self, sql, db="sync"):
        """Runs SQL; returns rows as lists of strings (NULL as None)."""
        out = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-F", "\x1f", "-R", "\x1e", "-P", "null=\x01",
             "-v", "ON_ERROR_STOP=1", "-d", self.conninfo(db), "-c", sql],
            check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        text = out.stdout[:-1] if out.stdout.endswith("\n") else out.stdout
        if text == "":
            return []
        return [[None if v == "\x01" else v for v in rec.split("\x1f")]
                for rec in text.split("\x1e")]

    def scalar(self, sql):
        rows = self.psql(sql)
        return rows[0][0] if rows else None

    def stop(self):
        try:
            self._run(["pg_ctl", "-D", f"{self.dir}/data", "-m", "immediate", "-w", "stop"])
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Env:
    """PostgreSQL + the Druid test server + a config file for one test class."""

    def __init__(self, load=None, auth=None):
        self.pg = Postgres()
        try:
            self.sim = Sim.start(load=load or {}, auth=auth)
        except Exception:
            self.pg.stop()
            raise
        self.tmp = tempfile.mkdtemp(prefix="dsync-test-")
        self.config_path = os.path.join(self.tmp, "config.json")

    def config(self, **overrides):
        cfg = {
            "druid_host": "127.0.0.1",
            "druid_port": self.sim.port,
            "postgres": self.pg.conninfo(),
            "destination_schema": "druid",
            "batch_size": 10000,
            "max_concurrent_queries": 4,
            "retry_initial_seconds": 0.05,
            "retry_max_seconds": 0.2,
            "max_retries": 3,
            "sync_interval_seconds": 0.5,
        }
        cfg.update(overrides)
        cfg = {k: v for k, v in cfg.items() if v is not None}
        with open(self.config_path, "w") as f:
            json.dump(cfg, f)
        return cfg

    def run(self, *args, timeout=300, check_exit=None):
        """Runs druid-syncd with the current config; returns (exit code, stderr)."""
        p = subprocess.run([BIN, "-c", self.config_path] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout)
        if check_exit is not None and p.returncode != check_exit:
            raise AssertionError(
                f"druid-syncd exited {p.returncode}, expected {check_exit}\n{p.stderr[-6000:]}")
        return p.returncode, p.stderr

    def once(self, *args, expect=0, timeout=300):
        return self.run("--once", *args, timeout=timeout, check_exit=expect)[1]

    def start_daemon(self, *args, env=None):
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.Popen([BIN, "-c", self.config_path] + list(args),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)

    def close(self):
        self.sim.stop()
        self.pg.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def qident(name):
    return '"' + name.replace('"', '""') + '"'


def wait_for(pred, timeout=60, interval=0.1, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def main():
    unittest.main(verbosity=2)
