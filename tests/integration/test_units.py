"""The systemd unit files: `systemd-analyze verify` is clean, `systemd-analyze security`
rates them <= 1.5, and they carry the settings the daemon relies on (Type=notify, reload
by SIGHUP, watchdog, restart policy, credentials, sandboxing)."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import BIN, SOURCE_DIR

UNITS = {
    # file name -> unit name to verify (the template through an instance)
    "druid-syncd.service": "druid-syncd.service",
    "druid-syncd@.service": "druid-syncd@test.service",
}
MAX_EXPOSURE = 1.5


def parse_unit(text):
    """{(section, key): [values]} (a key may repeat; an empty value resets the list)."""
    out = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            section = m.group(1)
            continue
        if "=" not in line:
            continue
        k, v = line.split("=", 1)
        k, v = k.strip(), v.strip()
        lst = out.setdefault((section, k), [])
        if v == "" and k not in ("CapabilityBoundingSet", "AmbientCapabilities"):
            lst.clear()
        else:
            lst.append(v)
    return out


def have_analyze():
    return shutil.which("systemd-analyze") is not None


class UnitFileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dsync-units-")
        cls.texts = {}
        cls.paths = {}
        for fname in UNITS:
            src = os.path.join(SOURCE_DIR, "systemd", fname)
            with open(src, encoding="utf-8") as f:
                text = f.read()
            cls.texts[fname] = text
            # point ExecStart at the built binary so that verify finds an executable
            rewritten = re.sub(r"^(Exec(?:Start|Reload)=)(\S*druid-syncd)(\s)", lambda m: m.group(1) + os.path.abspath(BIN)
                               + m.group(3), text, flags=re.M)
            dst = os.path.join(cls.tmp, fname)
            with open(dst, "w", encoding="utf-8") as f:
                f.write(rewritten)
            cls.paths[fname] = dst

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def analyze(self, *args):
        return subprocess.run(["systemd-analyze"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=120, cwd=self.tmp)

    def unit_arg(self, fname):
        return os.path.join(self.tmp, UNITS[fname])

    def test_exec_start_rewritten(self):
        for fname, path in self.paths.items():
            with open(path) as f:
                self.assertRegex(f.read(), r"(?m)^ExecStart=%s " % re.escape(os.path.abspath(BIN)), fname)

    @unittest.skipUnless(have_analyze(), "systemd-analyze not installed")
    def test_verify(self):
        for fname in UNITS:
            with self.subTest(unit=fname):
                p = self.analyze("verify", self.unit_arg(fname))
                self.assertEqual(p.returncode, 0, "systemd-analyze verify %s: %s%s" % (UNITS[fname], p.stdout, p.stderr))
                self.assertEqual(p.stderr.strip(), "", "systemd-analyze verify %s complained" % UNITS[fname])

    @unittest.skipUnless(have_analyze(), "systemd-analyze not installed")
    def test_security_exposure(self):
        for fname in UNITS:
            with self.subTest(unit=fname):
                p = self.analyze("security", "--offline=true", "--no-pager", self.unit_arg(fname))
                out = p.stdout + p.stderr
                m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
                self.assertIsNotNone(m, "no exposure level in:\n" + out[-3000:])
                level = float(m.group(1))
                self.assertLessEqual(level, MAX_EXPOSURE, "%s exposure %.1f > %.1f:\n%s"
                                     % (UNITS[fname], level, MAX_EXPOSURE, out[-4000:]))

    def test_settings(self):
        for fname, text in self.texts.items():
            with self.subTest(unit=fname):
                u = parse_unit(text)

                def one(key, section="Service"):
                    v = u.get((section, key))
                    self.assertTrue(v, "%s: %s= missing" % (fname, key))
                    return v[-1]

                self.assertEqual(one("Type"), "notify")
                reloads = u.get(("Service", "ExecReload"), [])
                self.assertEqual(len(reloads), 2, reloads)
                # first the file is validated (a broken file fails the reload), then SIGHUP
                self.assertRegex(reloads[0], r"druid-syncd\s+--check-config\s+(--config|-c)\s+/etc/druid-syncd/")
                self.assertEqual(reloads[0].split("--config")[-1].strip(),
                                 one("ExecStart").split("--config")[-1].strip(),
                                 "ExecReload validates a different file than ExecStart runs")
                self.assertRegex(reloads[1], r"kill\s+(-s\s+)?-?(HUP|SIGHUP|1)\b.*\$MAINPID", reloads[1])
                wd = one("WatchdogSec")
                self.assertRegex(wd, r"^\d+(s|min)?$")
                self.assertGreater(int(re.match(r"\d+", wd).group(0)), 0)
                self.assertEqual(one("Restart"), "on-failure")
                self.assertIn("78", one("RestartPreventExitStatus").split())
                creds = u.get(("Service", "LoadCredential"), [])
                names = [c.split(":", 1)[0] for c in creds]
                self.assertIn("druid_password", names, "%s: no LoadCredential=druid_password:..." % fname)
                self.assertIn("pgpass", names, "%s: no LoadCredential= for the PostgreSQL password file" % fname)
                for c in creds:
                    self.assertIn(":", c, "LoadCredential=%s has no source path" % c)
                # libpq finds the password file through PGPASSFILE in the credentials directory
                envs = " ".join(u.get(("Service", "Environment"), []))
                self.assertRegex(envs, r"PGPASSFILE=(%d|\$\{CREDENTIALS_DIRECTORY\})/pgpass")
                dyn = u.get(("Service", "DynamicUser"), [])
                user = u.get(("Service", "User"), [])
                self.assertTrue((dyn and dyn[-1] in ("yes", "true", "1", "on")) or user,
                                "%s: neither DynamicUser=yes nor User=" % fname)
                self.assertEqual(one("ProtectSystem"), "strict")
                self.assertIn(one("NoNewPrivileges"), ("yes", "true", "1", "on"))
                self.assertIn(one("PrivateTmp"), ("yes", "true", "1", "on"))
                fams = one("RestrictAddressFamilies").split()
                self.assertEqual(set(fams), {"AF_UNIX", "AF_INET", "AF_INET6"},
                                 "the daemon needs exactly AF_UNIX (notify, libpq sockets) and AF_INET/AF_INET6")
                self.assertRegex(one("ExecStart"), r"druid-syncd\s+(--config|-c)\s+/etc/druid-syncd/")
                # ExecStart of the plain unit does not run --once: the service is the daemon
                self.assertNotIn("--once", one("ExecStart"))
                # systemd's stop timeout leaves room for the daemon's own (30 s by default)
                stop = u.get(("Service", "TimeoutStopSec"))
                if stop:
                    self.assertGreater(int(re.match(r"\d+", stop[-1]).group(0)), 30)
        self.assertIn("%i", parse_unit(self.texts["druid-syncd@.service"])[("Service", "ExecStart")][-1])


if __name__ == "__main__":
    harness.main()
