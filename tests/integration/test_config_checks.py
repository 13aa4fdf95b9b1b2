"""Configuration checks with the real binary: a duplicate key is a configuration error (exit
78) that names the key; a password that group or others can read (druid_password or a
password inside `postgres` in a readable config file, or a readable druid_password_file)
draws a warning naming the file, from --check-config (on stdout, with the verdict), at
start-up and on reload (logged), and the password itself never appears."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness
from harness import BIN, EnvTestCase, wait_for

SECRET = "hunter2-Zq8xW"
PG_SECRET = "pg-Secr3t-Vv1"
READABLE = "readable by group or others"
# PostgreSQL and Druid that cannot be reached: start-up fails at once, after the config.
NOWHERE = {"druid_host": "127.0.0.1", "druid_port": 1,
           "postgres": "host=/nonexistent/socket/dir port=1 dbname=nothing connect_timeout=1"}
SCRUB = ("CREDENTIALS_DIRECTORY", "JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC",
         "WATCHDOG_PID", "PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGHOST", "PGPORT")


def clean_env():
    return {k: v for k, v in os.environ.items() if k not in SCRUB}


def run(argv, timeout=60):
    return subprocess.run([BIN] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, env=clean_env())


class ConfigChecksTest(unittest.TestCase):
    """No PostgreSQL or Druid needed."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="dsync-cfgchk-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, name, text, mode):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text if isinstance(text, str) else json.dumps(text, indent=2))
        os.chmod(path, mode)  # whatever the umask
        return path

    def config(self, mode, **kw):
        cfg = dict(NOWHERE)
        cfg.update(kw)
        return self.write("config.json", cfg, mode)

    def assertNoSecret(self, p):
        for s in (SECRET, PG_SECRET):
            self.assertNotIn(s, p.stdout + p.stderr, "a password appears in the output")

    def warning_lines(self, text, path):
        return [l for l in text.splitlines() if READABLE in l and path in l]

    # ---- duplicate keys ----

    def test_duplicate_key_is_a_configuration_error(self):
        path = self.write("dup.json", '{\n  "druid_host": "h",\n  "batch_size": 10,\n'
                                      '  "batch_size": 20\n}\n', 0o600)
        p = run(["-c", path, "--check-config"])
        self.assertEqual(p.returncode, 78, p.stdout + p.stderr)
        self.assertIn('line 4: duplicate key "batch_size"', p.stdout)
        self.assertIn(path, p.stdout)
        # start-up refuses it too, with the same message in the log
        p = run(["-c", path, "--once"])
        self.assertEqual(p.returncode, 78, p.stderr)
        self.assertIn('duplicate key "batch_size"', p.stderr)

    def test_duplicate_secret_key_does_not_show_the_value(self):
        text = ('{"druid_host": "h", "druid_username": "u", "druid_password": "%s",\n'
                '"druid_password": "%s"}' % (SECRET, SECRET + "x"))
        path = self.write("dup.json", text, 0o600)
        p = run(["-c", path, "--check-config"])
        self.assertEqual(p.returncode, 78, p.stdout + p.stderr)
        self.assertIn('line 2: duplicate key "druid_password"', p.stdout)
        self.assertNoSecret(p)

    def test_nested_duplicate_is_named_by_its_path(self):
        path = self.write("dup.json", '{"druid_host": "h",\n "postgres": {"a": 1,\n "a": 2}}',
                          0o600)
        p = run(["-c", path, "--check-config"])
        self.assertEqual(p.returncode, 78, p.stdout + p.stderr)
        self.assertIn('line 3: duplicate key "postgres.a"', p.stdout)

    def test_other_mistakes_keep_their_messages(self):
        path = self.write("bad.json", '{\n  "druid_host": "h",\n  oops\n}\n', 0o600)
        p = run(["-c", path, "--check-config"])
        self.assertEqual(p.returncode, 78)
        self.assertIn("line 3: JSON syntax error: ", p.stdout)
        path = self.write("bad.json", '{"druid_host": "h", "batch_sise": 1}', 0o600)
        p = run(["-c", path, "--check-config"])
        self.assertEqual(p.returncode, 78)
        self.assertIn('unknown key "batch_sise" (did you mean "batch_size"?)', p.stdout)

    def test_malformed_postgres_string_is_a_configuration_error(self):
        """issue 9.3: libpq's parser judges the string at load time, for --check-config and for
        the daemon (exit 78, which the unit's RestartPreventExitStatus does not restart)."""
        cases = [("host=x bogus=1", 'invalid connection option "bogus"'),
                 ("postgresql://u@h:notaport/db", 'port: expected a port number (1-65535), got "notaport"'),
                 ("postgresql://h/db?sslmode=require&bogus=1", "invalid URI query parameter"),
                 ("host=x password=%s dbname" % PG_SECRET, 'missing "..." after "..."')]
        for conninfo, reason in cases:
            with self.subTest(postgres=conninfo):
                path = self.config(0o600, postgres=conninfo)
                p = run(["-c", path, "--check-config"])
                self.assertEqual(p.returncode, 78, p.stdout + p.stderr)
                self.assertIn("postgres: ", p.stdout)
                self.assertIn(reason, p.stdout)
                self.assertNoSecret(p)
                p = run(["-c", path, "--once"], timeout=30)
                self.assertEqual(p.returncode, 78, p.stdout + p.stderr)
                self.assertIn(reason, p.stderr)
                self.assertNoSecret(p)

    # ---- druid_password in a readable config ----

    def test_readable_config_with_druid_password_warns(self):
        path = self.config(0o644, druid_username="u", druid_password=SECRET)
        p = run(["-c", path, "--check-config"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        w = self.warning_lines(p.stdout, path)
        self.assertEqual(len(w), 1, "no single warning on stdout:\n" + p.stdout + p.stderr)
        self.assertIn("druid_password", w[0])
        self.assertIn("mode 0644", w[0])
        self.assertIn("configuration is valid", p.stdout)
        self.assertNoSecret(p)
        # at start-up it is logged at warning level (the run then fails: nothing is reachable)
        p = run(["-c", path, "--once"])
        self.assertEqual(p.returncode, 1, p.stderr)
        w = self.warning_lines(p.stderr, path)
        self.assertEqual(len(w), 1, "no warning logged at start-up:\n" + p.stderr)
        self.assertIn(" warning config: ", w[0])
        self.assertNoSecret(p)
        # group-readable only is still readable by others than the owner
        os.chmod(path, 0o640)
        p = run(["-c", path, "--check-config"])
        self.assertEqual(len(self.warning_lines(p.stdout, path)), 1, p.stdout)

    def test_private_config_does_not_warn(self):
        path = self.config(0o600, druid_username="u", druid_password=SECRET,
                           postgres=NOWHERE["postgres"] + " password=" + PG_SECRET)
        p = run(["-c", path, "--check-config"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertNotIn(READABLE, p.stdout + p.stderr)
        p = run(["-c", path, "--once"])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertNotIn(READABLE, p.stderr)
        self.assertNoSecret(p)

    def test_readable_config_without_password_does_not_warn(self):
        path = self.config(0o644, druid_username="u")
        p = run(["-c", path, "--check-config"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertNotIn(READABLE, p.stdout + p.stderr)

    # ---- a password inside postgres ----

    def test_readable_config_with_postgres_password_warns(self):
        for conninfo in (NOWHERE["postgres"] + " password=" + PG_SECRET,
                         "postgresql://sync:%s@127.0.0.1:1/nothing?connect_timeout=1" % PG_SECRET):
            with self.subTest(conninfo=conninfo.split(" ")[0]):
                path = self.config(0o644, postgres=conninfo)
                p = run(["-c", path, "--check-config"])
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                w = self.warning_lines(p.stdout, path)
                self.assertEqual(len(w), 1, p.stdout + p.stderr)
                self.assertIn("PostgreSQL password in postgres", w[0])
                self.assertNoSecret(p)
                p = run(["-c", path, "--once"])
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertEqual(len(self.warning_lines(p.stderr, path)), 1, p.stderr)
                self.assertNoSecret(p)

    # ---- druid_password_file ----

    def test_readable_password_file_warns(self):
        pw = self.write("druid-password", SECRET + "\n", 0o644)
        path = self.config(0o600, druid_username="u", druid_password_file=pw)
        p = run(["-c", path, "--check-config"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        w = self.warning_lines(p.stdout, pw)
        self.assertEqual(len(w), 1, "no warning naming the password file:\n" + p.stdout)
        self.assertIn("druid_password_file", w[0])
        self.assertNoSecret(p)
        p = run(["-c", path, "--once"])
        self.assertEqual(len(self.warning_lines(p.stderr, pw)), 1, p.stderr)
        self.assertNoSecret(p)
        os.chmod(pw, 0o600)
        p = run(["-c", path, "--check-config"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertNotIn(READABLE, p.stdout + p.stderr)


class ReloadWarningTest(EnvTestCase):
    """SIGHUP re-reads the file, and the warning with it."""

    def test_warning_on_reload(self):
        self.env.config(druid_username="u", druid_password=SECRET)
        path = self.env.config_path
        os.chmod(path, 0o600)
        log_path = os.path.join(self.env.tmp, "daemon.log")
        with open(log_path, "w+") as log:
            proc = subprocess.Popen([BIN, "-c", path], stdout=subprocess.DEVNULL, stderr=log,
                                    env=clean_env())
            try:
                def log_text():
                    with open(log_path) as f:
                        return f.read()
                wait_for(lambda: "starting" in log_text(), timeout=30, what="start-up line")
                time.sleep(0.5)
                self.assertNotIn(READABLE, log_text())
                os.chmod(path, 0o644)
                proc.send_signal(signal.SIGHUP)
                wait_for(lambda: "configuration reloaded" in log_text(), timeout=30,
                         what="reload line")
                text = log_text()
                w = [l for l in text.splitlines() if READABLE in l and path in l]
                self.assertEqual(len(w), 1, "no warning logged on reload:\n" + text[-3000:])
                self.assertIn(" warning config: ", w[0])
                self.assertNotIn(SECRET, text)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    harness.main()
