"""Logging: journal priority prefixes under systemd (JOURNAL_STREAM), ISO timestamps
otherwise, --log-level and the log_level key, no Druid password in the logs whatever its
source, and the progress lines (live block on a terminal, periodic lines otherwise)."""
import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
from harness import EnvTestCase, BIN, Env, iso_ms, ms_iso

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2025-01-01T00:00:00.000Z")

JOURNAL_RE = re.compile(r"^<([0-7])>")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z? +(error|warning|info|debug) +\S")
ANY_TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
PRIO = {"error": "3", "warning": "4", "info": "6", "debug": "7"}
SCRUB = ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY")


def rows(n, start=0):
    return [{"__time": ms_iso(BASE + i * 1000), "k": i, "v": "v%d" % i} for i in range(start, start + n)]


def run(config_path, *args, env=None, timeout=120):
    """druid-syncd -c config_path args, with a clean systemd-free environment plus env;
    returns (exit code, stderr)."""
    e = {k: v for k, v in os.environ.items() if k not in SCRUB}
    e.update(env or {})
    p = subprocess.run([BIN, "-c", config_path] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, env=e)
    return p.returncode, p.stderr


def lines(text):
    return [l for l in text.split("\n") if l != ""]


def plain_levels(text):
    """Levels of the timestamped lines."""
    out = []
    for l in lines(text):
        m = ISO_RE.match(l)
        if m:
            out.append(m.group(2))
    return out


def journal_levels(text):
    return [JOURNAL_RE.match(l).group(1) for l in lines(text) if JOURNAL_RE.match(l)]


class LogFormatTest(EnvTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sim.datasource("small", COLS, rows(200))
        cls.sim.datasource("prog_live", COLS, rows(300))
        cls.sim.datasource("prog_plain", COLS, rows(300))

    def cfg(self, **kw):
        self.env.config(**kw)
        return self.env.config_path

    def test_journal_prefixes(self):
        path = self.cfg()
        rc, err = run(path, "--once", "--log-level", "debug", "--datasource", "small", env={"JOURNAL_STREAM": "8:1234"})
        self.assertEqual(rc, 0, err)
        ls = lines(err)
        self.assertTrue(ls, "no log lines at all")
        for l in ls:
            self.assertRegex(l, r"^<[3467]>", "a line without a syslog priority prefix under JOURNAL_STREAM")
            self.assertIsNone(ANY_TS_RE.match(l[3:]), "a timestamp under journald (it adds its own): %r" % l)
            self.assertNotRegex(l, r"^<\d>\d{4}-", l)
        prios = set(journal_levels(err))
        self.assertIn("6", prios, "no info line (<6>)")
        self.assertIn("7", prios, "no debug line (<7>) at --log-level debug")
        # the level word is not repeated after the prefix (the prefix is the level)
        self.assertFalse(any(re.match(r"^<\d>(info|debug|warning|error)\b", l) for l in ls), ls[:5])
        # an error gets <3>
        rc, err = run(path, "--once", "--datasource", "no_such_ds", env={"JOURNAL_STREAM": "8:1234"})
        self.assertEqual(rc, 1, err)
        bad = [l for l in lines(err) if "no_such_ds" in l]
        self.assertTrue(bad, err)
        self.assertTrue(any(l.startswith("<3>") for l in bad), "the error about no_such_ds is not <3>: %r" % bad)
        for l in lines(err):
            self.assertRegex(l, r"^<[3467]>")

    def test_journal_warning_prefix(self):
        # a retried slice (one-shot 503) gives a warning line
        path = self.cfg()
        # a new row: its chunk is read again (an unchanged one would not be queried)
        self.sim.append("small", rows(1, start=1000 + len(self.sim.queries())))
        self.sim.fault("status", match='"v" FROM "small"', times=1, error="unavailable")
        try:
            rc, err = run(path, "--once", "--datasource", "small", env={"JOURNAL_STREAM": "8:1234"})
        finally:
            self.sim.clear_faults()
        self.assertEqual(rc, 0, err)
        warn = [l for l in lines(err) if "retry" in l]
        self.assertTrue(warn, "no retry line for an injected 503:\n" + err)
        self.assertTrue(all(l.startswith("<4>") for l in warn), warn)

    def test_plain_timestamps(self):
        path = self.cfg()
        rc, err = run(path, "--once", "--log-level", "debug", "--datasource", "small")
        self.assertEqual(rc, 0, err)
        ls = lines(err)
        self.assertTrue(ls)
        for l in ls:
            self.assertRegex(l, ISO_RE, "a line without an ISO timestamp and level outside journald")
            self.assertIsNone(JOURNAL_RE.match(l))
        lv = set(plain_levels(err))
        self.assertIn("info", lv)
        self.assertIn("debug", lv)

    def test_cli_log_level_warning_hides_info(self):
        path = self.cfg()
        rc, err = run(path, "--once", "--log-level", "warning", "--datasource", "small")
        self.assertEqual(rc, 0, err)
        self.assertEqual([l for l in plain_levels(err) if l in ("info", "debug")], [], err)
        self.assertNotIn("cycle done", err)
        self.assertNotIn("starting", err)
        # errors still show
        rc, err = run(path, "--once", "--log-level", "warning", "--datasource", "no_such_ds")
        self.assertEqual(rc, 1, err)
        self.assertIn("error", plain_levels(err), err)
        self.assertEqual([l for l in plain_levels(err) if l in ("info", "debug")], [], err)
        # journald form too
        rc, err = run(path, "--once", "--log-level", "warning", "--datasource", "small",
                      env={"JOURNAL_STREAM": "8:1234"})
        self.assertEqual(rc, 0, err)
        self.assertFalse(set(journal_levels(err)) & {"6", "7"}, err)

    def test_config_log_level_and_override(self):
        path = self.cfg(log_level="warning")
        rc, err = run(path, "--once", "--datasource", "small")
        self.assertEqual(rc, 0, err)
        self.assertEqual([l for l in plain_levels(err) if l in ("info", "debug")], [],
                         "log_level \"warning\" in the config did not hide info lines:\n" + err)
        rc, err = run(path, "--once", "--datasource", "small", "--log-level", "debug")
        self.assertEqual(rc, 0, err)
        self.assertIn("debug", plain_levels(err), "--log-level debug did not override log_level warning")
        self.assertIn("info", plain_levels(err))
        path = self.cfg(log_level="debug")
        rc, err = run(path, "--once", "--datasource", "small")
        self.assertEqual(rc, 0, err)
        self.assertIn("debug", plain_levels(err), "log_level \"debug\" in the config had no effect")
        rc, err = run(path, "--once", "--datasource", "small", "--log-level", "error")
        self.assertEqual(rc, 0, err)
        self.assertEqual([l for l in plain_levels(err) if l != "error"], [],
                         "--log-level error did not override log_level debug:\n" + err)
        path = self.cfg(log_level="verbose")
        p = subprocess.run([BIN, "-c", path, "--check-config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 78, p.stderr)
        self.assertIn("log_level", p.stdout + p.stderr)

    @unittest.skipUnless(shutil.which("script"), "script(1) from util-linux not installed")
    def test_live_progress_on_a_terminal(self):
        path = self.cfg()
        # the slice read of prog_live waits 3.5 s before answering: several 1 s redraws
        self.sim.fault("delay", match='"v" FROM "prog_live"', times=1, delay_seconds=3.5)
        try:
            cmd = " ".join(shlex.quote(a) for a in [BIN, "-c", path, "--once", "--datasource", "prog_live"])
            e = {k: v for k, v in os.environ.items() if k not in SCRUB}
            e["TERM"] = "xterm"
            p = subprocess.run(["script", "-qec", cmd, "/dev/null"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=60, env=e, stdin=subprocess.DEVNULL)
        finally:
            self.sim.clear_faults()
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out[-3000:])
        self.assertIn("rows/s", out, "no live progress block on a terminal:\n" + out[-3000:])
        self.assertIn("slices", out)
        self.assertIn("prog_live", out)
        # the block is redrawn in place (cursor up + erase line)
        self.assertIn("\x1b[1A", out, "the live block is not redrawn in place")
        # no plain "progress:" log lines in live mode
        self.assertNotIn("progress: prog_live", out)

    def test_plain_progress_lines_when_not_a_terminal(self):
        """--once, stderr a file or pipe, a sync of > 10 s: periodic "progress:" lines."""
        path = self.cfg()
        self.sim.fault("delay", match='"v" FROM "prog_plain"', times=1, delay_seconds=11.5)
        try:
            rc, err = run(path, "--once", "--datasource", "prog_plain", timeout=90)
        finally:
            self.sim.clear_faults()
        self.assertEqual(rc, 0, err)
        prog = [l for l in lines(err) if "progress:" in l]
        self.assertTrue(prog, "no progress: lines during an 11 s sync:\n" + err)
        for l in prog:
            self.assertRegex(l, ISO_RE)
            self.assertIn("prog_plain", l)
            self.assertIn("rows/s", l)
            self.assertIn("slices", l)
        self.assertNotIn("\x1b[", err, "terminal escapes written to a non-terminal")


PASSWORD = "S3cr3t-XYZ"
WRONG = "Wr0ng-PW-777"
USER = "u"


def secrets():
    out = []
    for pw in (PASSWORD, WRONG):
        out.append(pw)
        out.append(base64.b64encode(("%s:%s" % (USER, pw)).encode()).decode())
    return out


class PasswordTest(EnvTestCase):
    env_args = dict(auth="%s:%s" % (USER, PASSWORD))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sim.datasource("small", COLS, rows(50))
        cls.tmp = tempfile.mkdtemp(prefix="dsync-pw-")

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def assertNoSecret(self, text):
        for s in secrets():
            self.assertNotIn(s, text, "a password (or its Basic auth encoding) appears in the log")

    def pwfile(self, name, pw):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(pw + "\n")
        os.chmod(path, 0o600)
        return path

    def credsdir(self, pw):
        d = tempfile.mkdtemp(prefix="creds-", dir=self.tmp)
        with open(os.path.join(d, "druid_password"), "w") as f:
            f.write(pw)
        return d

    def check_ok(self, env=None, **cfg):
        self.env.config(druid_username=USER, **cfg)
        rc, err = run(self.env.config_path, "--once", "--log-level", "debug", env=env)
        self.assertEqual(rc, 0, err)
        self.assertIn("cycle done", err)
        self.assertNoSecret(err)
        rc, err = run(self.env.config_path, "--once", "--log-level", "debug", env=dict(env or {}, JOURNAL_STREAM="8:1"))
        self.assertEqual(rc, 0, err)
        self.assertNoSecret(err)
        return err

    def check_refused(self, env=None, **cfg):
        self.env.config(druid_username=USER, **cfg)
        rc, err = run(self.env.config_path, "--once", "--log-level", "debug", env=env)
        self.assertEqual(rc, 1, "a wrong password under --once must exit 1:\n" + err)
        self.assertNoSecret(err)
        self.assertRegex(err, r"401|[Uu]nauthori[sz]ed|credentials",
                         "no clear message about the refused credentials:\n" + err)
        errs = [l for l in lines(err) if ISO_RE.match(l) and ISO_RE.match(l).group(2) == "error"]
        self.assertTrue(any(re.search(r"401|credentials|[Uu]nauthori", l) for l in errs), err)
        # clear: it says the credentials were refused, rather than dumping the server's HTML page
        self.assertTrue(any("credentials" in l for l in errs),
                        "the error does not say that Druid refused the credentials:\n" + err)
        self.assertFalse(any("<html>" in l.lower() for l in errs),
                         "the error dumps Druid's HTML error page instead of a clear message:\n" + err)
        return err

    def test_inline_password(self):
        self.check_ok(druid_password=PASSWORD)

    def test_inline_password_wrong(self):
        self.check_refused(druid_password=WRONG)

    def test_password_file(self):
        self.check_ok(druid_password_file=self.pwfile("good", PASSWORD))

    def test_password_file_wrong(self):
        self.check_refused(druid_password_file=self.pwfile("bad", WRONG))

    def test_systemd_credential(self):
        self.check_ok(env={"CREDENTIALS_DIRECTORY": self.credsdir(PASSWORD)})

    def test_systemd_credential_wrong(self):
        self.check_refused(env={"CREDENTIALS_DIRECTORY": self.credsdir(WRONG)})

    def test_no_password_gives_401(self):
        self.env.config(druid_username=None)
        rc, err = run(self.env.config_path, "--once", "--log-level", "debug")
        self.assertEqual(rc, 1, err)
        self.assertNoSecret(err)

    def test_check_config_and_config_errors_hide_password(self):
        self.env.config(druid_username=USER, druid_password=PASSWORD)
        rc, err = run(self.env.config_path, "--check-config", "--log-level", "debug")
        self.assertEqual(rc, 0, err)
        self.assertNoSecret(err)
        # a configuration error about the password itself must not echo it
        cfg = {"druid_host": "127.0.0.1", "druid_port": self.sim.port, "postgres": self.pg.conninfo(),
               "druid_username": USER, "druid_password": PASSWORD,
               "druid_password_file": self.pwfile("both", PASSWORD)}
        path = os.path.join(self.tmp, "bad.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        rc, err = run(path, "--once", "--log-level", "debug")
        self.assertEqual(rc, 78, err)
        self.assertIn("druid_password", err)
        self.assertNoSecret(err)
        p = subprocess.run([BIN, "-c", path, "--check-config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 78)
        self.assertNoSecret(p.stdout + p.stderr)

    def test_daemon_mode_wrong_password_journal(self):
        self.env.config(druid_username=USER, druid_password=WRONG)
        e = {k: v for k, v in os.environ.items() if k not in SCRUB}
        e["JOURNAL_STREAM"] = "8:1234"
        log = open(os.path.join(self.tmp, "daemon.log"), "w+")
        p = subprocess.Popen([BIN, "-c", self.env.config_path, "--log-level", "debug"], stdout=subprocess.DEVNULL,
                             stderr=log, env=e)
        try:
            deadline = time.time() + 15
            while time.time() < deadline and p.poll() is None:
                log.seek(0)
                if "credentials" in log.read():
                    break
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.seek(0)
        err = log.read()
        log.close()
        self.assertNoSecret(err)
        self.assertIn("credentials", err)
        for l in lines(err):
            self.assertRegex(l, r"^<[3467]>")


if __name__ == "__main__":
    harness.main()
