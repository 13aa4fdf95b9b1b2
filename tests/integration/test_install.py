"""`cmake --install` puts the binary, the example configuration and the unit files where the
README says, and the installed example configuration passes --check-config."""
import os
import shlex
import shutil
import subprocess
import tempfile
import unittest

import harness


class InstallTest(unittest.TestCase):
    def test_install_tree(self):
        build = os.path.dirname(os.path.abspath(harness.BIN))
        with tempfile.TemporaryDirectory(prefix="dsync-install-") as dest:
            subprocess.run(["cmake", "--install", build, "--prefix", dest], check=True,
                           stdout=subprocess.DEVNULL)
            binary = os.path.join(dest, "bin", "druid-syncd")
            example = os.path.join(dest, "etc", "druid-syncd", "config.json.example")
            units = os.path.join(dest, "lib", "systemd", "system")
            self.assertTrue(os.access(binary, os.X_OK))
            for unit in ("druid-syncd.service", "druid-syncd@.service"):
                with open(os.path.join(units, unit)) as f:
                    text = f.read()
                self.assertIn("Type=notify", text)
                # the unit runs the binary this install put in place, whatever the prefix
                execs = [l.split("=", 1)[1].split()[0] for l in text.splitlines()
                         if l.startswith("ExecStart=")]
                self.assertEqual(execs, [binary], unit)
                self.assertIn("file:" + os.path.join(dest, "share", "doc", "druid-syncd", "README.md"),
                              text)
                self.assertNotIn("/usr/local", text)
                if shutil.which("systemd-analyze"):
                    name = unit.replace("@.", "@test.")
                    with tempfile.TemporaryDirectory() as ud:
                        path = os.path.join(ud, name)
                        with open(path, "w") as f:
                            f.write(text)
                        p = subprocess.run(["systemd-analyze", "verify", path],
                                           capture_output=True, text=True)
                    self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                self.reload_line_checks(text, binary, unit)
            self.assertTrue(os.path.exists(os.path.join(dest, "share", "doc", "druid-syncd",
                                                        "README.md")))
            p = subprocess.run([binary, "--check-config", "-c", example], capture_output=True,
                               text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            v = subprocess.run([binary, "--version"], capture_output=True, text=True)
            self.assertRegex(v.stdout, r"^druid-syncd \d+\.\d+\.\d+")

    def reload_line_checks(self, text, binary, unit):
        """The installed unit's ExecReload validation line, run as systemd would run it (the
        config path swapped for a file of ours): a broken file fails the reload (exit 78 with
        the reason), a good one lets the SIGHUP line run."""
        reloads = [l.split("=", 1)[1] for l in text.splitlines() if l.startswith("ExecReload=")]
        self.assertEqual(len(reloads), 2, unit)
        argv = shlex.split(reloads[0].replace("%i", "test"))
        self.assertEqual(argv[0], binary, unit)
        self.assertIn("--check-config", argv)
        cfg_at = argv.index("--config") + 1
        with tempfile.TemporaryDirectory() as d:
            cases = [
                ('{"druid_host": "localhost", "druid_port": "eighty"}', 78, "druid_port"),
                ('{"druid_host": "localhost", "postgres": "host=x bogus=1"}', 78, "postgres"),
                ('{"druid_host": "localhost",', 78, "line"),
                ('{"druid_host": "localhost"}', 0, "valid"),
            ]
            for body, rc, needle in cases:
                path = os.path.join(d, "c.json")
                with open(path, "w") as f:
                    f.write(body)
                os.chmod(path, 0o600)
                cmd = argv[:cfg_at] + [path] + argv[cfg_at + 1:]
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
                self.assertEqual(p.returncode, rc, (unit, body, p.stdout, p.stderr))
                self.assertIn(needle, p.stdout + p.stderr, (unit, body))


if __name__ == "__main__":
    harness.main()
