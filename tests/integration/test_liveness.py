"""Liveness details of issue 6 that need the real binary: PostgreSQL host names are resolved
off the loop (a name that resolves, a name with an IPv6 and an IPv4 address where only IPv4
listens, an unknown name, a resolver that never answers: each within a bound, the error
naming the host), and text from Druid can never add sd_notify assignments or log lines of
its own (STATUS= and stderr carry it escaped)."""
import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from harness import BIN, EnvTestCase, free_port, iso_ms, ms_iso, slice_match, state_row, tbl, wait_for

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2021-03-04T00:00:00.000Z")


def rows(n, start=0):
    return [{"__time": ms_iso(BASE + i * 1000), "k": i, "v": "v%d" % i}
            for i in range(start, start + n)]


def live(pg, ds):
    return collections.Counter(tuple(r) for r in pg.psql(
        "SELECT k::text, v FROM %s WHERE NOT _druid_deleted" % tbl(ds)))


def want(rs):
    return collections.Counter((str(r["k"]), r["v"]) for r in rs)


def listen_on_tcp(pg, port):
    """Restarts the harness's PostgreSQL so that it also listens on 127.0.0.1:port (the Unix
    socket moves to the same port number, so pg.psql keeps working)."""
    data = f"{pg.dir}/data"
    pg._run(["pg_ctl", "-D", data, "-m", "fast", "-w", "stop"])
    pg._run(["pg_ctl", "-D", data, "-l", f"{pg.dir}/server.log", "-w", "-t", "60", "-o",
             f"-p {port} -k {pg.dir} -c listen_addresses='127.0.0.1' -c fsync=off"
             " -c max_connections=200", "start"])
    pg.port = port
    pg.env["PGPORT"] = str(port)


def can_unshare_mounts():
    """True when this process may run a command in a private mount namespace (root, and a
    kernel or sandbox that allows it): the way to give the daemon alone another /etc/hosts
    or /etc/resolv.conf."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "--", "true"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return r.returncode == 0


def run_with_file(env, target, content, args, timeout):
    """Runs druid-syncd with `target` (e.g. /etc/hosts) replaced by `content` for the daemon
    only (bind mount in a private mount namespace). Returns (rc, stderr, seconds)."""
    path = os.path.join(env.tmp, os.path.basename(target))
    with open(path, "w") as f:
        f.write(content)
    argv = ["unshare", "-m", "--", "sh", "-c", 'mount --bind "$0" "$1" && shift && exec "$@"',
            path, target, BIN, "-c", env.config_path] + list(args)
    t0 = time.time()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    return p.returncode, p.stderr, time.time() - t0


class HostNames(EnvTestCase):
    """postgres = "host=NAME port=N ..." against a PostgreSQL listening on 127.0.0.1."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tcp_port = free_port()
        listen_on_tcp(cls.pg, cls.tcp_port)

    def conninfo(self, host):
        return "host=%s port=%d user=postgres dbname=sync connect_timeout=5" % (host, self.tcp_port)

    def test_localhost_by_name(self):
        ds = "by_name"
        self.sim.datasource(ds, COLS, rows(500))
        self.env.config(datasources=[ds], batch_size=100, postgres=self.conninfo("localhost"))
        t0 = time.time()
        err = self.env.once(timeout=60)
        self.assertLess(time.time() - t0, 30)
        self.assertEqual(live(self.pg, ds), want(rows(500)), err[-2000:])
        self.assertEqual(state_row(self.pg, ds)["status"], "ok")

    def test_name_with_ipv6_first_and_only_ipv4_listening(self):
        # Debian's own /etc/hosts names localhost for ::1 too, and getaddrinfo sorts ::1
        # first; this PostgreSQL listens on 127.0.0.1 only. libpq tries every address of a
        # name; the daemon resolves the name itself and must do the same.
        if not can_unshare_mounts():
            self.skipTest("needs root and private mount namespaces (unshare -m) to give the "
                          "daemon its own /etc/hosts")
        ds = "ipv6_first"
        self.sim.datasource(ds, COLS, rows(300))
        self.env.config(datasources=[ds], batch_size=100,
                        postgres=self.conninfo("pg-dual.test"))
        hosts = "::1 pg-dual.test\n127.0.0.1 pg-dual.test\n127.0.0.1 localhost\n"
        rc, err, secs = run_with_file(self.env, "/etc/hosts", hosts, ["--once"], timeout=60)
        self.assertEqual(rc, 0, err[-3000:])
        self.assertLess(secs, 30)
        self.assertEqual(live(self.pg, ds), want(rows(300)))

    def test_unknown_host_fails_at_once_naming_it(self):
        ds = "unknown_host"
        self.sim.datasource(ds, COLS, rows(10))
        self.env.config(datasources=[ds], postgres=self.conninfo("no-such-host.invalid"))
        t0 = time.time()
        rc, err = self.env.run("--once", timeout=60)
        secs = time.time() - t0
        self.assertEqual(rc, 1, err[-3000:])
        self.assertLess(secs, 15, err[-3000:])
        self.assertIn('could not resolve PostgreSQL host "no-such-host.invalid"', err)

    def test_resolver_that_never_answers_is_bounded(self):
        # A DNS server that swallows every query: the resolution (in libuv's thread pool)
        # outlasts the 10 s connect bound. --once must still end soon after that bound, with
        # an error that names the host, and must not act on the late answer.
        if not can_unshare_mounts():
            self.skipTest("needs root and private mount namespaces (unshare -m) to give the "
                          "daemon its own /etc/resolv.conf")
        dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            dns.bind(("127.0.0.1", 53))
        except OSError as e:
            dns.close()
            self.skipTest("cannot bind a silent resolver on 127.0.0.1:53: %s" % e)
        got = []
        stop = threading.Event()

        def swallow():
            dns.settimeout(0.2)
            while not stop.is_set():
                try:
                    got.append(dns.recv(4096))
                except socket.timeout:
                    continue
                except OSError:
                    return
        th = threading.Thread(target=swallow, daemon=True)
        th.start()
        try:
            ds = "silent_dns"
            self.sim.datasource(ds, COLS, rows(10))
            self.env.config(datasources=[ds], postgres=self.conninfo("pg.silent-dns.test"),
                            connect_timeout_seconds=3)
            resolv = "nameserver 127.0.0.1\noptions timeout:25 attempts:1\n"
            rc, err, secs = run_with_file(self.env, "/etc/resolv.conf", resolv, ["--once"],
                                          timeout=90)
        finally:
            stop.set()
            th.join(2)
            dns.close()
        self.assertTrue(got, "the daemon never asked the resolver")
        self.assertEqual(rc, 1, err[-3000:])
        self.assertIn("pg.silent-dns.test", err)
        # the bound is connect_timeout_seconds (3 s here), not the resolver's 25 s
        self.assertLess(secs, 10, "--once took %.1f s with a silent resolver:\n%s"
                        % (secs, err[-3000:]))
        self.assertIn("timed out after 3 s", err)


# ---------------------------------------------------------------------------
# sd_notify and log injection
# ---------------------------------------------------------------------------

NotifyReader = harness.NotifyReader  # a $NOTIFY_SOCKET of our own (harness.py)


# The keys the daemon itself sends (notify.c); anything else is injected.
OWN_KEYS = {"READY", "STATUS", "WATCHDOG", "RELOADING", "STOPPING", "MAINPID", "MONOTONIC_USEC"}

EVIL = ("boom\nWATCHDOG=trigger\nSTOPPING=1\r\nMAINPID=1\n"
        "READY=1\tERRNO=5\x1b[2J\x7f\x07 c1:\u0085 ls:\u2028 ps:\u2029 end")


def druid_error_body(message):
    """A Druid 500 error envelope (native form) whose errorMessage is `message`."""
    import json
    return json.dumps({"error": "druidException", "errorCode": "general", "persona": "ADMIN",
                       "category": "RUNTIME_FAILURE", "errorMessage": message, "context": {}})


class NoInjection(EnvTestCase):

    def tearDown(self):
        self.sim.clear_faults()

    def check_datagrams(self, grams):
        for _, data in grams:
            text = data.decode("utf-8", "replace")
            lines = text.split("\n")
            for line in lines:
                key = line.split("=", 1)[0]
                self.assertIn(key, OWN_KEYS, "a notify line not of the daemon's own: %r in %r"
                              % (line, text))
                self.assertIn("=", line, "a notify line without '=': %r in %r" % (line, text))
            if any(l.startswith("STATUS=") for l in lines):
                self.assertEqual(len(lines), 1, "STATUS= shares its datagram: %r" % text)
            self.assertNotIn("WATCHDOG=trigger", lines)
            for ch in "\r\t\x1b\x7f\x07\u0085\u2028\u2029":
                self.assertNotIn(ch, text, "raw control %r reached sd_notify: %r" % (ch, text))

    def check_log(self, err):
        # every line is one of the daemon's: a timestamp, a level, a subsystem
        for line in err.split("\n"):
            if line:
                self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warning|info|debug) ",
                                 "a log line that is not the daemon's own: %r" % line)
        for ch in "\r\t\x1b\x7f\x07\u0085\u2028\u2029":
            self.assertNotIn(ch, err, "raw control %r in stderr" % ch)

    def run_daemon(self, seconds_until, what):
        reader = NotifyReader()
        log = open(os.path.join(self.env.tmp, "daemon-%s.log" % what), "w+b")
        e = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            e.pop(k, None)
        e["NOTIFY_SOCKET"] = reader.path
        e["WATCHDOG_USEC"] = "1000000"
        p = subprocess.Popen([BIN, "-c", self.env.config_path], stdout=subprocess.DEVNULL,
                             stderr=log, env=e)
        try:
            seconds_until(reader)
            grams_before_stop = reader.datagrams()
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            time.sleep(0.2)
            grams = reader.datagrams()
            reader.close()
            log.seek(0)
            err = log.read().decode("utf-8", "replace")
            log.close()
        return grams_before_stop, grams, err, p.returncode

    def statuses(self, grams):
        return [d.decode("utf-8", "replace")[len("STATUS="):] for _, d in grams
                if d.startswith(b"STATUS=")]

    def test_druid_error_text_in_slice_failure(self):
        ds = "inject_slice"
        self.sim.datasource(ds, COLS, rows(20))
        self.env.config(datasources=[ds], max_retries=1, retry_initial_seconds=0.05,
                        retry_max_seconds=0.1, sync_interval_seconds=30)
        self.sim.fault("status", match='FROM "%s"' % ds, times=1000, status=500,
                       body=druid_error_body(EVIL))

        def until(reader):
            # the cycle fails, then STATUS= (refreshed every 5 s) shows the last error
            wait_for(lambda: any("WATCHDOG=trigger" in s for s in self.statuses(reader.datagrams())),
                     timeout=30, interval=0.2, what="STATUS= with the Druid error")
        before, grams, err, rc = self.run_daemon(until, "slice")
        self.assertEqual(rc, 0, err[-3000:])
        self.check_datagrams(grams)
        # before SIGTERM nothing said STOPPING=1 (it would stop us under systemd)
        self.assertFalse([d for _, d in before if b"STOPPING=1" in d.split(b"\n")],
                         "STOPPING before the stop: %r" % [d for _, d in before][-10:])
        st = [s for s in self.statuses(grams) if "WATCHDOG=trigger" in s]
        self.assertIn("boom\\nWATCHDOG=trigger\\nSTOPPING=1\\r\\nMAINPID=1\\nREADY=1\\tERRNO=5"
                      "\\x1b[2J\\x7f\\x07 c1:\\u0085 ls:\\u2028 ps:\\u2029 end", st[-1])
        self.assertIn(ds, st[-1])
        self.check_log(err)
        self.assertIn("boom\\nWATCHDOG=trigger\\nSTOPPING=1", err)
        self.assertEqual(state_row(self.pg, ds)["status"], "error")
        self.assertIn("WATCHDOG=trigger", state_row(self.pg, ds)["last_error"])

    def test_druid_error_text_at_startup_probe(self):
        ds = "inject_probe"
        self.sim.datasource(ds, COLS, rows(5))
        self.env.config(datasources=[ds], max_retries=50, retry_initial_seconds=0.2,
                        retry_max_seconds=0.5)
        # the start-up probe (SELECT 1) answers 500: "waiting for Druid: <message>"
        self.sim.fault("status", match="SELECT 1", times=1000, status=500,
                       body=druid_error_body(EVIL))

        def until(reader):
            wait_for(lambda: any(s.startswith("waiting for Druid") for s in self.statuses(reader.datagrams())),
                     timeout=30, interval=0.2, what="STATUS= waiting for Druid")
            time.sleep(1)
        before, grams, err, rc = self.run_daemon(until, "probe")
        self.check_datagrams(grams)
        # READY comes at once now (issue 9); STOPPING would stop us under systemd
        self.assertFalse([d for _, d in before if b"STOPPING=1" in d.split(b"\n")],
                         "STOPPING while Druid fails: %r" % [d for _, d in before][-10:])
        st = [s for s in self.statuses(grams) if s.startswith("waiting for Druid")]
        self.assertIn("boom\\nWATCHDOG=trigger\\nSTOPPING=1", st[-1])
        self.check_log(err)


if __name__ == "__main__":
    harness.main()
