"""Work leases and the fence (sinks/pglease.c; reference druid-segments.md section 7) against a real
PostgreSQL, driven through tests/pg/lease_probe (the sink module on a libuv loop, as the daemon
runs it): a unit is held by one owner at a time; a take after expiry bumps the epoch; the old
holder's renewal reports the loss and its fence refuses to commit (SQLSTATE DSL01) even inside a
transaction that began while the lease was valid (clock_timestamp, not now()); a fence holds the
lease row so that a steal waits for the slice's transaction; release keeps the epoch."""
import json
import os
import subprocess
import threading
import time
import unittest

import harness
from harness import BIN

PROBE = os.path.join(os.path.dirname(os.path.abspath(BIN)), "tests", "lease_probe")
LEASES = 'druid."druid_syncd_leases"'
FENCE = 'druid."druid_syncd_fence"'


class Probe:
    def __init__(self, env):
        self.p = subprocess.Popen([PROBE, env.config_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.first = json.loads(self.p.stdout.readline())  # the sink's start-up

    def __call__(self, *words):
        self.p.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError("lease_probe died: " + self.p.stderr.read())
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


@unittest.skipUnless(os.path.exists(PROBE), "tests/lease_probe not built")
class LeaseTest(harness.EnvTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env.config()
        cls.a = Probe(cls.env)
        cls.b = Probe(cls.env)
        assert cls.a.first.get("ok"), cls.a.first
        assert cls.a("ensure").get("ok")
        assert cls.b("ensure").get("ok")  # twice, from two sessions: idempotent

    @classmethod
    def tearDownClass(cls):
        cls.a.close()
        cls.b.close()
        super().tearDownClass()

    def row(self, unit):
        r = self.pg.psql("SELECT owner, epoch FROM %s WHERE unit = '%s'" % (LEASES, unit))
        return (r[0][0], int(r[0][1])) if r else None

    def test_exclusive_then_taken_after_expiry(self):
        c = self.a("claim", "u1", "ds1", "inst-a", 1.0)
        self.assertTrue(c["granted"], c)
        e1 = c["epoch"]
        # the holder again, at the epoch it holds: the same token
        again = self.a("claim", "u1", "ds1", "inst-a", 1.0, e1)
        self.assertTrue(again["granted"])
        self.assertEqual(again["epoch"], e1)
        c = self.b("claim", "u1", "ds1", "inst-b", 1.0)
        self.assertFalse(c["granted"])
        self.assertEqual(c["holder"], "inst-a")
        self.assertGreater(c["seconds_left"], 0)
        self.assertLessEqual(c["seconds_left"], 1.0)
        self.assertEqual(self.a("fence", "u1", "inst-a", e1), {"ok": True})
        time.sleep(1.2)  # a's lease expires (database time)
        c = self.b("claim", "u1", "ds1", "inst-b", 5.0)
        self.assertTrue(c["granted"], c)
        self.assertEqual(c["epoch"], e1 + 1, "a take from another owner must bump the epoch")
        self.assertEqual(self.row("u1"), ("inst-b", e1 + 1))
        # the old holder learns it lost the unit, and cannot commit with its old token
        self.assertEqual(self.a("renew", "inst-a", 1.0, "u1:%d" % e1)["held"], [False])
        f = self.a("fence", "u1", "inst-a", e1)
        self.assertTrue(f.get("lost"), f)
        self.assertEqual(f["sqlstate"], "DSL01")
        self.assertIn("held by inst-b", f["error"])
        # even a stale token of the current owner is refused
        self.assertTrue(self.b("fence", "u1", "inst-b", e1).get("lost"))
        self.assertEqual(self.b("fence", "u1", "inst-b", e1 + 1), {"ok": True})
        self.assertEqual(self.b("renew", "inst-b", 5.0, "u1:%d" % (e1 + 1))["held"], [True])

    def test_renew_keeps_a_lease_alive(self):
        c = self.a("claim", "u2", "ds2", "inst-a", 0.8)
        e = c["epoch"]
        for _ in range(4):  # 1.6 s in all, twice the lease, renewed every 0.4 s
            time.sleep(0.4)
            self.assertEqual(self.a("renew", "inst-a", 0.8, "u2:%d" % e)["held"], [True])
        self.assertFalse(self.b("claim", "u2", "ds2", "inst-b", 0.8)["granted"])
        self.assertEqual(self.a("fence", "u2", "inst-a", e), {"ok": True})
        # several units in one renewal, one of them never held
        c3 = self.a("claim", "u3", "ds2", "inst-a", 5)
        r = self.a("renew", "inst-a", 5, "u2:%d" % e, "u3:%d" % c3["epoch"], "nope:1")
        self.assertEqual(r["held"], [True, True, False])
        # units with the characters an array literal must escape
        odd = 'ds:we"ird\\na{m}e,x'
        co = self.a("claim", odd, "odd", "inst-a", 5)
        self.assertTrue(co["granted"], co)
        r = self.a("renew", "inst-a", 5, "%s:%d" % (odd, co["epoch"]), "u3:%d" % c3["epoch"])
        self.assertEqual(r["held"], [True, True])

    def test_release_keeps_the_epoch(self):
        c = self.a("claim", "u4", "ds4", "inst-a", 30)
        self.assertEqual(self.a("release", "inst-a", "u4"), {"ok": True})
        self.assertEqual(self.row("u4"), (None, c["epoch"]))
        self.assertTrue(self.a("fence", "u4", "inst-a", c["epoch"]).get("lost"))
        c2 = self.b("claim", "u4", "ds4", "inst-b", 30)
        self.assertTrue(c2["granted"])
        self.assertEqual(c2["epoch"], c["epoch"] + 1)
        # releasing what one does not hold changes nothing
        self.assertEqual(self.a("release", "inst-a", "u4"), {"ok": True})
        self.assertEqual(self.row("u4"), ("inst-b", c["epoch"] + 1))

    def test_fence_uses_database_time_not_transaction_start(self):
        """A slice transaction that began while the lease was valid and reaches its fence after
        expiry is refused: now() would still say valid."""
        c = self.a("claim", "u5", "ds5", "inst-a", 1.0)
        p = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.pg.conninfo(), "-c",
                            "BEGIN; SELECT pg_sleep(1.3); SELECT %s('u5', 'inst-a', %d); COMMIT;"
                            % (FENCE, c["epoch"])], capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("lease of u5 lost", p.stderr)

    def test_steal_waits_for_the_fenced_transaction(self):
        """The fence locks the lease row: a steal that comes while the slice's transaction is
        still open waits until it ends, so the slice either commits before the steal or not."""
        c = self.a("claim", "u6", "ds6", "inst-a", 1.0)
        t0 = time.time()
        slow = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.pg.conninfo(), "-c",
                                 "BEGIN; SELECT %s('u6', 'inst-a', %d); SELECT pg_sleep(2.5); COMMIT;"
                                 % (FENCE, c["epoch"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.3)  # a's lease has expired, but its slice holds the row
        got = self.b("claim", "u6", "ds6", "inst-b", 5)
        waited = time.time() - t0
        out, err = slow.communicate(30)
        self.assertEqual(slow.returncode, 0, err)  # fenced before expiry: its commit stands
        self.assertTrue(got["granted"], got)
        self.assertGreaterEqual(waited, 2.4, "the steal did not wait for the open transaction")
        self.assertEqual(got["epoch"], c["epoch"] + 1)

    def test_same_name_without_its_epoch_is_a_new_token(self):
        """A restarted daemon with a configured instance_name takes its old units at once,
        but as a new token: the earlier process (frozen, say) cannot commit with the old one."""
        c = self.a("claim", "u8", "ds8", "inst-a", 30)
        again = self.b("claim", "u8", "ds8", "inst-a", 30)  # same name, no epoch held
        self.assertTrue(again["granted"], again)
        self.assertEqual(again["epoch"], c["epoch"] + 1)
        self.assertTrue(self.a("fence", "u8", "inst-a", c["epoch"]).get("lost"))
        self.assertEqual(self.b("fence", "u8", "inst-a", again["epoch"]), {"ok": True})

    def test_min_free_leaves_a_released_unit_to_others_for_a_while(self):
        """An instance beyond its share takes a free unit only after nobody else took it for
        min_free seconds (database time); below its share it takes it at once."""
        self.a("claim", "u9", "ds9", "inst-a", 30)
        self.a("release", "inst-a", "u9")
        over = self.b("claim", "u9", "ds9", "inst-b", 30, -1, 1.0)
        self.assertFalse(over["granted"], over)
        self.assertEqual(over["holder"], "nobody")
        time.sleep(1.1)
        later = self.b("claim", "u9", "ds9", "inst-b", 30, -1, 1.0)
        self.assertTrue(later["granted"], later)
        # a brand-new unit has been free only since it was first asked for
        self.assertFalse(self.a("claim", "u10", "ds10", "inst-a", 30, -1, 5.0)["granted"])
        self.assertTrue(self.b("claim", "u10", "ds10", "inst-b", 30, -1, 0)["granted"])

    def test_renewal_counts_the_live_instances(self):
        ha = self.a("claim", "instance:live-a", "hb", "live-a", 0.8)
        hb = self.b("claim", "instance:live-b", "hb", "live-b", 30)
        r = self.b("renew", "live-b", 30, "instance:live-b:%d" % hb["epoch"])
        self.assertEqual(r["held"], [True])
        base = r["live"]
        self.assertGreaterEqual(base, 2)
        time.sleep(1.0)  # live-a stops renewing: it no longer counts
        self.assertEqual(self.b("renew", "live-b", 30, "instance:live-b:%d" % hb["epoch"])["live"],
                         base - 1)
        self.assertTrue(ha["granted"])

    def test_census_names_the_least_loaded_instance(self):
        # only this test's instances alive (other tests leave heartbeats that hold nothing)
        self.pg.psql("UPDATE %s SET owner = NULL, expires_at = NULL WHERE unit LIKE 'instance:%%'" % LEASES)
        hx = self.a("claim", "instance:ll-x", "hb", "ll-x", 30)
        hy = self.b("claim", "instance:ll-y", "hb", "ll-y", 30)
        self.assertTrue(hx["granted"] and hy["granted"])
        for u, o in (("ds:ll1", "ll-x"), ("ds:ll2", "ll-x"), ("ds:ll3", "ll-y")):
            self.assertTrue(self.a("claim", u, u[3:], o, 30)["granted"])
        r = self.a("renew", "ll-x", 30, "instance:ll-x:%d" % hx["epoch"])
        self.assertEqual((r["live"], r["min_held"]), (2, 1))  # ll-x holds 2, ll-y 1
        self.b("release", "ll-y", "ds:ll3")
        r = self.a("renew", "ll-x", 30, "instance:ll-x:%d" % hx["epoch"])
        self.assertEqual((r["live"], r["min_held"]), (2, 0))
        self.b("release", "ll-y", "instance:ll-y")
        r = self.a("renew", "ll-x", 30, "instance:ll-x:%d" % hx["epoch"])
        self.assertEqual((r["live"], r["min_held"]), (1, 2))  # ll-x alone, holding its 2
        self.a("release", "ll-x", "instance:ll-x", "ds:ll1", "ds:ll2")

    def test_stale_transactions_of_dead_instances_are_ended(self):
        """A session named druid-syncd/NAME whose NAME holds no live lease and whose
        transaction is older than the lease is ended; a live instance's is not."""
        hb = self.b("claim", "instance:st-live", "hb", "st-live", 30)
        self.assertTrue(hb["granted"])
        env = dict(os.environ)

        def open_tx(name):
            env["PGAPPNAME"] = "druid-syncd/" + name
            return subprocess.Popen(["psql", "-X", "-q", "-d", self.pg.conninfo(), "-c",
                                     "BEGIN; SELECT 1; SELECT pg_sleep(8); COMMIT;"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        dead, live = open_tx("st-dead"), open_tx("st-live")
        time.sleep(1.5)
        self.a("end_stale", 1.0)
        _, err = dead.communicate(30)
        self.assertNotEqual(dead.returncode, 0)
        self.assertIn("terminat", err)
        live.communicate(30)
        self.assertEqual(live.returncode, 0, "a live instance's session was ended")
        self.b("release", "st-live", "instance:st-live")

    def test_through_a_missing_table_is_an_error_not_a_grant(self):
        self.pg.psql("ALTER TABLE %s RENAME TO leases_gone" % LEASES)
        try:
            c = self.a("claim", "u7", "ds7", "inst-a", 5)
            self.assertIn("error", c)
            self.assertEqual(c["sqlstate"], "42P01")
        finally:
            self.pg.psql('ALTER TABLE druid."leases_gone" RENAME TO "druid_syncd_leases"')


if __name__ == "__main__":
    harness.main()
