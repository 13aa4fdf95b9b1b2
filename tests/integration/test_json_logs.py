"""JSON logs (issue 9 point 5): log_format "json" writes one JSON object per line with time,
level, subsystem, message and the structured fields; under journald (JOURNAL_STREAM) each
object follows its <N> priority prefix; hostile text stays inside its string; no secret."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import EnvTestCase, free_port  # noqa: E402

COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT"), ("v", "VARCHAR")]
BASE = harness.iso_ms("2025-01-01T00:00:00.000Z")
EVIL = "boom\nWATCHDOG=trigger\n<3>forged \x1b[2J \"quoted\" back\\slash"
SECRET = "s3cret-Pa55word"


def rows(n):
    return [{"__time": harness.ms_iso(BASE + i * 1000), "k": i, "v": "v%d" % i} for i in range(n)]


def objects(err, journal=False):
    out = []
    for line in err.splitlines():
        if journal:
            m = re.match(r"^<([0-7])>(\{.*)$", line)
            assert m, "not <N>{...}: %r" % line
            o = json.loads(m.group(2))
            o["_prio"] = int(m.group(1))
        else:
            o = json.loads(line)  # every line is one object, nothing else
        out.append(o)
    return out


class JsonLogTest(EnvTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sim.datasource("good", COLS, rows(30))
        cls.sim.datasource("bad", COLS, rows(5))

    def setUp(self):
        self.sim.clear_faults()

    def test_once_json_lines(self):
        self.sim.fault("status", match='FROM "bad"', times=100, status=400,
                       body=json.dumps({"error": "druidException", "errorCode": "invalidInput",
                                        "category": "INVALID_INPUT", "errorMessage": EVIL}))
        self.env.config(log_format="json", datasources=["good", "bad"], druid_username="u",
                        druid_password=SECRET)
        rc, err = self.env.run("--once", "--log-level", "debug")
        self.assertEqual(rc, 1, err)
        self.assertNotIn(SECRET, err)
        objs = objects(err)
        self.assertGreater(len(objs), 5)
        for o in objs:
            for k in ("time", "level", "subsystem", "message"):
                self.assertIn(k, o, o)
            self.assertRegex(o["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(o["level"], ("error", "warning", "info", "debug"))
            self.assertNotIn("\n", o["message"])
        starting = [o for o in objs if o["message"].startswith("druid-syncd ")]
        self.assertTrue(starting and starting[0]["subsystem"] == "main" and starting[0]["level"] == "info")
        # the start-up checks carry their target
        targets = {o.get("target") for o in objs if "target" in o}
        self.assertEqual(targets, {"druid", "postgres"}, objs[:6])
        # Druid's hostile message stays one JSON string, decoded to the sanitised text
        evil = [o for o in objs if "WATCHDOG=trigger" in o["message"]]
        self.assertTrue(evil, err[-3000:])
        self.assertIn("boom\\nWATCHDOG=trigger\\n<3>forged \\x1b[2J \"quoted\" back\\slash",
                      evil[0]["message"])
        self.assertEqual(evil[0]["level"], "error")

    def test_structured_fields_of_slices(self):
        """What a log pipeline filters on: a slice's retry carries datasource, slice, error
        kind, HTTP status and Druid's error code; a commit carries its rows; a PostgreSQL
        failure its SQLSTATE; the cycle summary its datasource and rows."""
        self.sim.datasource("fields", COLS, rows(40))
        self.sim.fault("status", match='"v" FROM "fields"', times=1, status=503,
                       body=json.dumps({"error": "druidException", "errorCode": "serviceUnavailable",
                                        "category": "RUNTIME_FAILURE", "errorMessage": "busy"}))
        self.env.config(log_format="json", datasources=["fields"], batch_size=10)
        rc, err = self.env.run("--once", "--log-level", "debug")
        self.assertEqual(rc, 0, err)
        objs = objects(err)
        retry = [o for o in objs if o.get("slice") and "retry" in o["message"]]
        self.assertTrue(retry, err[-3000:])
        self.assertEqual(retry[0]["datasource"], "fields")
        self.assertEqual(retry[0]["http_status"], 503)
        self.assertEqual(retry[0]["druid_code"], "serviceUnavailable")
        self.assertIn("error_kind", retry[0])
        commits = [o for o in objs if "committed" in o["message"] and o.get("slice")]
        self.assertEqual(sum(o["rows"] for o in commits), 40, commits)
        self.assertEqual({o["datasource"] for o in commits}, {"fields"})
        done = [o for o in objs if "cycle done" in o["message"]]
        self.assertEqual((done[0]["datasource"], done[0]["rows"]), ("fields", 40))
        # issue 9.6: the state table's counters agree with the log (4 slices, one retried)
        logged = int(re.search(r"(\d+) slices \(", done[0]["message"]).group(1))
        st = harness.state_row(self.pg, "fields")
        self.assertEqual((int(st["slices_committed"]), int(st["rows_synced"])), (logged, 40))
        self.assertEqual(logged, len(commits))
        # PostgreSQL refuses a row: the failure names its SQLSTATE
        self.sim.datasource("fields2", COLS, rows(5))
        self.env.config(log_format="json", datasources=["fields2"], max_retries=0)
        self.env.once()
        self.pg.psql('ALTER TABLE druid."fields2" ADD CONSTRAINT no_v3 CHECK (v <> \'v9\')')
        self.sim.append("fields2", [{"__time": harness.ms_iso(BASE + 9000), "k": 9, "v": "v9"}])
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err)
        states = {o.get("sqlstate") for o in objects(err) if o.get("datasource") == "fields2"}
        self.assertIn("23514", states, err[-3000:])

    def test_journal_prefix(self):
        self.env.config(log_format="json", datasources=["good"])
        rc, err = self.env.run("--once", env={"JOURNAL_STREAM": "8:12345"})
        self.assertEqual(rc, 0, err)
        objs = objects(err, journal=True)
        prio = {"error": 3, "warning": 4, "info": 6, "debug": 7}
        for o in objs:
            self.assertEqual(o["_prio"], prio[o["level"]], o)
        self.assertTrue(any("exiting with status 0" in o["message"] for o in objs))

    def test_text_is_default_and_unchanged(self):
        self.env.config(datasources=["good"])
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 0, err)
        for line in err.splitlines():
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT[\d:.]+Z (error|warning|info|debug) +[a-z]+: ")
        self.assertIn("info    druid: Druid at 127.0.0.1:%d answers" % self.sim.port, err)

    def test_unreachable_druid_json(self):
        port = free_port()
        self.env.config(log_format="json", druid_port=port, connect_timeout_seconds=1,
                        retry_initial_seconds=0.2, retry_max_seconds=0.4, max_retries=1)
        rc, err = self.env.run("--once")
        self.assertEqual(rc, 1, err)
        fails = [o for o in objects(err) if o.get("target") == "druid" and o["level"] == "error"]
        self.assertTrue(fails, err)
        self.assertEqual(fails[0]["error_kind"], "transport")
        self.assertIn("127.0.0.1:%d" % port, fails[0]["message"])


if __name__ == "__main__":
    harness.main()
