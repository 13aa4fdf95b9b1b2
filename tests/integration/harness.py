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

    def __init__(self, load=None, auth=None, **sim_kw):
        """sim_kw: more Sim.start arguments (legacy_errors=, version=, extra_args=)."""
        self.pg = Postgres()
        try:
            self.sim = Sim.start(load=load or {}, auth=auth, **sim_kw)
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

    def run(self, *args, timeout=300, check_exit=None, env=None):
        """Runs druid-syncd with the current config; returns (exit code, stderr).
        env: extra environment variables for the process."""
        e = None
        if env:
            e = dict(os.environ)
            e.update(env)
        p = subprocess.run([BIN, "-c", self.config_path] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout, env=e)
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


class EnvTestCase(unittest.TestCase):
    """A test class with one Env (PostgreSQL + Druid test server) for all its tests:
    self.env, self.pg, self.sim. env_args are passed to Env."""

    env_args = {}

    @classmethod
    def setUpClass(cls):
        cls.env = Env(**cls.env_args)
        cls.pg, cls.sim = cls.env.pg, cls.env.sim

    @classmethod
    def tearDownClass(cls):
        cls.env.close()


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


# ---------------------------------------------------------------------------
# Helpers shared by the test modules (added with the integration tests).
# ---------------------------------------------------------------------------

def run_bin(argv, env=None, timeout=60, stdin=None):
    """Runs druid-syncd with exactly `argv` (no implied -c); returns CompletedProcess."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([BIN] + list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, env=e, stdin=stdin)


def tbl(name, schema="druid"):
    """schema-qualified, quoted table name."""
    return qident(schema) + "." + qident(name)


def table_exists(pg, name, schema="druid"):
    return pg.scalar(
        "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s"
        % (sqlstr(schema), sqlstr(name))) == "1"


def sqlstr(s):
    """A PostgreSQL string literal (E'' free, standard_conforming_strings on)."""
    return "'" + s.replace("'", "''") + "'"


def snapshot(pg, name, schema="druid"):
    """Every row of a synced table with its xmin, ordered by id: equal snapshots mean
    nothing was written (not even an identical UPDATE)."""
    return pg.psql("SELECT t.xmin::text, t._druid_id::text, row_to_json(t)::text FROM %s t ORDER BY 2"
                   % tbl(name, schema))


def state_row(pg, datasource, schema="druid"):
    """The druid_syncd_state row of a datasource as a dict (None if absent)."""
    v = pg.scalar("SELECT row_to_json(s)::text FROM %s s WHERE datasource = %s"
                  % (tbl("druid_syncd_state", schema), sqlstr(datasource)))
    return None if v is None else json.loads(v)


def pg_column_types(pg, name, schema="druid"):
    """{column: data_type} from PostgreSQL's information_schema."""
    rows = pg.psql("SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                   " WHERE table_schema = %s AND table_name = %s" % (sqlstr(schema), sqlstr(name)))
    return {r[0]: r[1] for r in rows}


def ms_iso(ms):
    """Epoch millis -> 2015-09-12T00:46:58.771Z."""
    import datetime
    d = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(milliseconds=ms)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def iso_ms(s):
    """ISO-8601 UTC text -> epoch millis."""
    import datetime
    d = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    delta = d - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


PG_ISO_MS = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"


def pg_iso(col):
    """SQL expression: a timestamptz column as ISO UTC text with milliseconds."""
    return "to_char(%s AT TIME ZONE 'UTC', %s)" % (col, PG_ISO_MS)


def slice_match(sim, datasource):
    """The text of the daemon's slice query up to its FROM clause (a fault `match` that hits
    slice reads but not the COUNT planning queries). Needs one earlier sync of `datasource`;
    falls back to 'FROM "ds"'."""
    frm = "FROM " + qident(datasource)
    for q in reversed(sim.queries()):
        sql = q.get("sql") or ""
        if frm in sql and "COUNT(" not in sql.upper() and "INFORMATION_SCHEMA" not in sql.upper():
            return sql[:sql.index(frm) + len(frm)]
    return frm


def free_port():
    """A TCP port on 127.0.0.1 with nothing listening on it."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class NotifyReader:
    """A $NOTIFY_SOCKET of our own (what systemd would read): every datagram kept raw, with
    its arrival time (time.monotonic()). Give the daemon env NOTIFY_SOCKET=reader.path."""

    def __init__(self):
        import socket
        import threading
        self.dir = tempfile.mkdtemp(prefix="dsync-notify-")
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.lock = threading.Lock()
        self.grams = []
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        import socket
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.grams.append((time.monotonic(), data))

    def datagrams(self):
        with self.lock:
            return list(self.grams)

    def values(self, key):
        """Every value sent for key (e.g. "STATUS"), in order."""
        out = []
        for _, data in self.datagrams():
            for line in data.decode("utf-8", "replace").split("\n"):
                if line.startswith(key + "="):
                    out.append(line[len(key) + 1:])
        return out

    def messages(self):
        """Every datagram as (arrival time, {KEY: VALUE}, text)."""
        out = []
        for t, data in self.datagrams():
            text = data.decode("utf-8", "replace")
            kv = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
            out.append((t, kv, text))
        return out

    def wait(self, pred, timeout=30, start=0, what="notification"):
        """Waits for a message (index >= start) whose {KEY: VALUE} satisfies pred; returns
        its index."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            ms = self.messages()
            for i in range(start, len(ms)):
                if pred(ms[i][1]):
                    return i
            time.sleep(0.02)
        raise AssertionError("timed out waiting for %s; got %r" % (what, [m[2] for m in self.messages()][-30:]))

    def times(self, line):
        """Arrival times of the datagrams holding exactly this line (e.g. "WATCHDOG=1")."""
        return [t for t, data in self.datagrams() if line in data.decode("utf-8", "replace").split("\n")]

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
