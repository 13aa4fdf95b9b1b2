"""Command line and configuration: --help/--version, usage and configuration errors with
their exit codes, --check-config without network, the original connector's five-key
configuration, Basic auth and never logging the password."""
import base64
import json
import os
import unittest

import harness
from harness import EnvTestCase, Env, iso_ms, ms_iso, run_bin, state_row, table_exists, tbl

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = iso_ms("2021-07-07T07:07:07.000Z")
USER, PASSWORD = "syncuser", "s3cr3t-pa55"


def rows(n, start=0):
    return [{"__time": ms_iso(BASE + i * 1000), "k": i, "v": "v%d" % i} for i in range(start, start + n)]


class CliTest(EnvTestCase):
    """Tests that need no Druid at all (a PostgreSQL is still started for the five-key test)."""
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sim.datasource("cli_ds", COLS, rows(12))

    def write(self, obj, name="cfg.json"):
        path = os.path.join(self.env.tmp, name)
        with open(path, "w") as f:
            if isinstance(obj, str):
                f.write(obj)
            else:
                json.dump(obj, f)
        return path

    def valid(self, **kw):
        cfg = {"druid_host": "druid.invalid", "druid_port": 8888,
               "postgres": "host=/nonexistent/socket/dir port=1 dbname=nothing connect_timeout=1"}
        cfg.update(kw)
        return cfg

    def test_help_and_version(self):
        p = run_bin(["--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--once", p.stdout + p.stderr)
        p = run_bin(["--version"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("0.", p.stdout + p.stderr)
        p = run_bin(["-h"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--once", p.stdout + p.stderr)

    def test_metrics_listen_port_only(self):
        """":PORT" serves the metrics on every address (here: reached on 127.0.0.1)."""
        port = harness.free_port()
        self.env.config(datasources=["cli_ds"], metrics_listen=":%d" % port)
        p = run_bin(["-c", self.env.config_path, "--check-config"])
        self.assertEqual(p.returncode, 0, p.stderr)
        proc = self.env.start_daemon()
        try:
            body = harness.wait_for(lambda: self._scrape(port), timeout=30,
                                    what="/metrics on :%d" % port)
            self.assertIn("druid_syncd_postgres_connections", body)
        finally:
            proc.terminate()
            proc.communicate(timeout=60)

    def test_start_up_leaves_other_instances_cycles_alone(self):
        """A state row another instance is cycling on ('syncing') is not marked interrupted by
        a start that syncs other datasources; one this run syncs is."""
        self.sim.datasource("other_ds", COLS, rows(5))
        self.env.config(datasources=["other_ds", "cli_ds"])
        rc, err = self.env.run("--once", timeout=60)
        self.assertEqual(rc, 0, err[-2000:])
        self.pg.psql("UPDATE %s SET status = 'syncing'" % tbl("druid_syncd_state"))
        rc, err = self.env.run("--once", "--datasource", "cli_ds", timeout=60)
        self.assertEqual(rc, 0, err[-2000:])
        self.assertEqual(state_row(self.pg, "other_ds")["status"], "syncing")
        self.assertEqual(state_row(self.pg, "cli_ds")["status"], "ok")
        self.env.config(datasources=["other_ds"])
        rc, err = self.env.run("--once", "--log-level", "debug", timeout=60)
        self.assertEqual(rc, 0, err[-2000:])
        self.assertEqual(state_row(self.pg, "other_ds")["status"], "ok")

    def test_mistyped_schema_name_fails(self):
        """A schema Druid does not have is an error naming the schemas it has, not an empty
        sync that exits 0; a schema that exists but holds no table still syncs nothing."""
        self.env.config(schema_name="drud")
        rc, err = self.env.run("--once", timeout=60)
        self.assertEqual(rc, 1, err[-2000:])
        self.assertIn('Druid has no schema "drud"', err)
        self.assertIn("druid", err.split('no schema "drud"', 1)[1])
        self.env.config(schema_name="lookup")
        rc, err = self.env.run("--once", timeout=60)
        self.assertEqual(rc, 0, err[-2000:])
        self.assertIn('0 datasources in schema "lookup"', err)

    def test_mistyped_schema_name_daemon(self):
        """issue 9.3, daemon mode: the mistyped schema is logged at error level every discovery
        round and named in STATUS=, and the daemon keeps running (a reload can fix it)."""
        import signal
        import subprocess
        import time
        self.env.config(schema_name="drud", sync_interval_seconds=0.3)
        reader = harness.NotifyReader()
        log = open(os.path.join(self.env.tmp, "drud.log"), "w+")
        e = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WATCHDOG_USEC")}
        e["NOTIFY_SOCKET"] = reader.path
        p = subprocess.Popen([harness.BIN, "-c", self.env.config_path], stderr=log,
                             stdout=subprocess.DEVNULL, env=e)
        try:
            def errors():
                log.seek(0)
                return [l for l in log.read().splitlines()
                        if 'Druid has no schema "drud"' in l and " error " in " %s " % l]
            harness.wait_for(lambda: len(errors()) >= 3, timeout=30, what="the error in three rounds")
            self.assertIn("druid", errors()[-1].split('no schema "drud"', 1)[1])
            harness.wait_for(lambda: any('no schema "drud"' in v for v in reader.values("STATUS")),
                             timeout=10, what="STATUS= naming the schema")
            self.assertIsNone(p.poll(), "the daemon exited on a mistyped schema")
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(15)
            log.close()
            reader.close()

    def test_unreachable_druid_said_once(self):
        """A Druid nobody listens for: exit 1 with libcurl's reason, said once per line."""
        self.env.config(druid_port=harness.free_port(), max_retries=1)
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 1, err[-2000:])
        lines = [l for l in err.splitlines() if "onnect" in l and "druid" in l.lower()]
        self.assertTrue(lines, err[-2000:])
        for l in lines:
            self.assertLessEqual(l.count("Couldn't connect to server"), 1, l)

    @staticmethod
    def _scrape(port):
        import urllib.request
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    def test_usage_errors(self):
        for argv in (["--bogus-option"], ["--log-level", "loud", "--check-config"], ["-c"],
                     ["--once", "extra-positional"]):
            p = run_bin(argv)
            self.assertEqual(p.returncode, 64, "%s -> %d\n%s" % (argv, p.returncode, p.stderr))

    def check(self, cfg, expect, *extra):
        path = self.write(cfg)
        p = run_bin(["-c", path, "--check-config"] + list(extra), timeout=30)
        self.assertEqual(p.returncode, expect, "config %s -> exit %d\n%s%s" % (cfg, p.returncode, p.stdout, p.stderr))
        return p.stdout + p.stderr

    def test_check_config_valid_without_network(self):
        self.check(self.valid(), 0)
        # every documented key at once
        self.check(self.valid(druid_port="8082", schema_name="druid", incremental_column="__time",
                              use_ssl="false", druid_username="u", druid_password="p",
                              tls_verify=True, destination_schema="mirror", datasources=["a", "b"],
                              exclude_datasources=["c"], sync_interval_seconds=30, batch_size=1000,
                              max_concurrent_queries=2, request_timeout_seconds=60,
                              lookback_seconds=3600, soft_deletes=False,
                              metadata_column_prefix="_fivetran_"), 0)

    def test_unknown_key(self):
        out = self.check(self.valid(druid_hots="x"), 78)
        self.assertIn("druid_hots", out)
        cfg = self.valid(batch_sise=10)
        path = self.write(cfg)
        p = run_bin(["-c", path, "--once"], timeout=30)
        self.assertEqual(p.returncode, 78, p.stderr)
        self.assertIn("batch_sise", p.stderr)

    def test_wrong_types_name_the_key(self):
        cases = [("batch_size", "many"), ("sync_interval_seconds", "soon"), ("datasources", "wikipedia"),
                 ("soft_deletes", "perhaps"), ("druid_host", 42), ("use_ssl", "sometimes"),
                 ("exclude_datasources", [1, 2]), ("lookback_seconds", [])]
        for key, value in cases:
            with self.subTest(key=key):
                out = self.check(self.valid(**{key: value}), 78)
                self.assertIn(key, out)

    def test_port_out_of_range(self):
        for port in (70000, 0, -1, "99999", "80a"):
            with self.subTest(port=port):
                out = self.check(self.valid(druid_port=port), 78)
                self.assertIn("druid_port", out)

    def test_missing_required_and_bad_json(self):
        out = self.check({"druid_port": 8888}, 78)
        self.assertIn("druid_host", out)
        self.check("{ not json", 78)
        self.check("[1, 2]", 78)
        p = run_bin(["-c", os.path.join(self.env.tmp, "does-not-exist.json"), "--check-config"])
        self.assertEqual(p.returncode, 78, p.stderr)

    def test_unreadable_password_file(self):
        out = self.check(self.valid(druid_username="u",
                                    druid_password_file=os.path.join(self.env.tmp, "no-such-password")), 78)
        self.assertIn("druid_password_file", out)

    def test_original_five_key_configuration(self):
        # Exactly what the original connector's configuration.json looks like: port as a
        # numeric string, use_ssl as a string; PostgreSQL from the PG* environment.
        cfg = {"druid_host": "127.0.0.1", "druid_port": str(self.sim.port), "schema_name": "druid",
               "incremental_column": "__time", "use_ssl": "false"}
        path = self.write(cfg, "configuration.json")
        env = dict(self.pg.env)
        env["PGDATABASE"] = "sync"
        p = run_bin(["-c", path, "--check-config"], env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = run_bin(["-c", path, "--once"], env=env, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        self.assertTrue(table_exists(self.pg, "cli_ds"))
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl("cli_ds")), "12")
        self.assertEqual(state_row(self.pg, "cli_ds")["mode"], "incremental")


class AuthTest(EnvTestCase):
    env_args = dict(auth="%s:%s" % (USER, PASSWORD))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sim.datasource("auth_ds", COLS, rows(20))

    def assertNoSecret(self, text):
        b64 = base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
        self.assertNotIn(PASSWORD, text, "the password appears in the log")
        self.assertNotIn(b64, text, "the Basic credentials appear in the log")

    def test_a_basic_auth_works_and_password_never_logged(self):
        self.env.config(druid_username=USER, druid_password=PASSWORD)
        rc, err = self.env.run("--once", "--log-level", "debug")
        self.assertEqual(rc, 0, err[-3000:])
        self.assertNoSecret(err)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl("auth_ds")), "20")
        qs = self.sim.queries()
        self.assertTrue(qs and all(q["authorization_present"] for q in qs))
        self.assertTrue(all(q["status"] == 200 for q in qs))
        # --check-config output does not echo it either
        p = run_bin(["-c", self.env.config_path, "--check-config", "--log-level", "debug"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNoSecret(p.stdout + p.stderr)

    def test_b_password_file(self):
        pw = os.path.join(self.env.tmp, "druid-password")
        with open(pw, "w") as f:
            f.write(PASSWORD + "\n")
        self.sim.append("auth_ds", rows(5, start=100))
        self.env.config(druid_username=USER, druid_password_file=pw)
        rc, err = self.env.run("--once", "--log-level", "debug")
        self.assertEqual(rc, 0, err[-3000:])
        self.assertNoSecret(err)
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl("auth_ds")), "25")

    def test_c_wrong_password_fails_without_leaking(self):
        self.env.config(druid_username=USER, druid_password="wrong-" + PASSWORD)
        rc, err = self.env.run("--once", "--log-level", "debug", timeout=60)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertNotIn("wrong-" + PASSWORD, err)
        self.assertNoSecret(err)
        self.assertTrue("401" in err or "unauthori" in err.lower() or "auth" in err.lower(), err[-3000:])
        # the status is named once per line, not "HTTP 401: HTTP 401: ..."
        import re
        self.assertIsNone(re.search(r"HTTP 401\)?: HTTP 401", err), err[-3000:])

    def test_d_no_credentials_fails(self):
        self.env.config()
        rc, err = self.env.run("--once", timeout=60)
        self.assertEqual(rc, 1, err[-3000:])


if __name__ == "__main__":
    harness.main()
