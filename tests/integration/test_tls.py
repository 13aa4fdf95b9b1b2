"""HTTPS to Druid: use_ssl with tls_ca_file verifies the server; an untrusted certificate
is refused unless tls_verify is false; Basic auth travels inside TLS. The Druid test server
serves the same data over a second, TLS listener with a certificate made here."""
import os
import subprocess
import tempfile
import unittest

import harness
from harness import Env, ms_iso, iso_ms, tbl

SIM = os.path.join(harness.SOURCE_DIR, "tests", "druid_sim", "druid_sim.py")
COLS = [("__time", "TIMESTAMP"), ("k", "BIGINT")]


def make_cert(d, cn="127.0.0.1"):
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="dsync-tls-")
        cls.crt, key = make_cert(cls.tmp.name)
        portfile = os.path.join(cls.tmp.name, "tls.port")
        cls.env = Env(auth="syncer:tls-pa55",
                      extra_args=("--tls-cert", cls.crt, "--tls-key", key,
                                  "--tls-port-file", portfile))
        harness.wait_for(lambda: os.path.exists(portfile), timeout=20, what="the TLS port")
        with open(portfile) as f:
            cls.tls_port = int(f.read())
        cls.pg, cls.sim = cls.env.pg, cls.env.sim
        cls.sim.datasource("tls_ds", COLS, [{"__time": ms_iso(iso_ms("2021-01-01T00:00:00.000Z") + i),
                                             "k": i} for i in range(25)])

    @classmethod
    def tearDownClass(cls):
        cls.env.close()
        cls.tmp.cleanup()

    def cfg(self, **kw):
        base = dict(druid_port=self.tls_port, use_ssl=True, druid_username="syncer",
                    druid_password="tls-pa55", datasources=["tls_ds"])
        base.update(kw)
        self.env.config(**base)

    def test_verified_with_ca_file(self):
        self.cfg(tls_ca_file=self.crt)
        self.env.once()
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl("tls_ds")), "25")

    def test_untrusted_certificate_refused(self):
        self.cfg(max_retries=0)
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 1, err[-3000:])
        self.assertRegex(err.lower(), "certificate|ssl")
        self.assertNotIn("tls-pa55", err)

    def test_untrusted_certificate_fails_fast(self):
        """issue 9.4: no retry can cure an untrusted certificate: with the default retries the
        run still ends at once, with the reason, and no retry is logged."""
        import time
        self.cfg(max_retries=5, retry_initial_seconds=1, retry_max_seconds=5)
        t0 = time.time()
        rc, err = self.env.run("--once", timeout=120)
        took = time.time() - t0
        self.assertEqual(rc, 1, err[-3000:])
        self.assertRegex(err.lower(), "certificate")
        self.assertNotIn("retry in", err)
        self.assertLess(took, 5, err[-3000:])

    def test_verification_off(self):
        self.cfg(tls_verify=False)
        self.env.once()
        self.assertEqual(self.pg.scalar("SELECT count(*) FROM %s" % tbl("tls_ds")), "25")

    def test_plain_http_to_tls_port_fails_cleanly(self):
        self.cfg(use_ssl=False, max_retries=0)
        rc, err = self.env.run("--once", timeout=120)
        self.assertEqual(rc, 1, err[-3000:])


if __name__ == "__main__":
    harness.main()
