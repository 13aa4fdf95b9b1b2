"""Client for the Druid simulator (druid_sim.py), imported by the integration tests.

Owns: starting/stopping a simulator process on a free port and one method per
control endpoint (``/__sim/...``), plus ``sql()`` to talk to ``/druid/v2/sql``
directly.  Standard library (urllib) only.

    sim = Sim.start(load={"wikipedia": path})
    sim.fault(kind="truncate", after_rows=10)
    status, headers, body = sim.sql('SELECT 1')
    sim.stop()
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SIM_PATH = os.path.join(HERE, "druid_sim.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


class SimError(Exception):
    pass


class Sim:
    """A running simulator process."""

    def __init__(self, proc, port, host="127.0.0.1", tmpdir=None, auth=None):
        self.proc, self.port, self.host = proc, port, host
        self.url = "http://%s:%d" % (host, port)
        self.auth = auth
        self._tmpdir = tmpdir

    # -- lifecycle
    @classmethod
    def start(cls, load=None, auth=None, legacy_errors=False, version=None, extra_args=(), timeout=60):
        """Spawn druid_sim.py on a free port and wait until it listens.

        load: {datasource: path to .json/.json.gz}; auth: "user:pass" or None.
        """
        tmpdir = tempfile.TemporaryDirectory(prefix="druid_sim_")
        port_file = os.path.join(tmpdir.name, "port")
        cmd = [PYTHON, SIM_PATH, "--host", "127.0.0.1", "--port", "0", "--port-file", port_file]
        for name, path in (load or {}).items():
            cmd += ["--load", "%s=%s" % (name, path)]
        if auth:
            cmd += ["--auth", auth]
        if legacy_errors:
            cmd.append("--legacy-errors")
        if version:
            cmd += ["--version", version]
        cmd += list(extra_args)
        log = open(os.path.join(tmpdir.name, "sim.log"), "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                with open(os.path.join(tmpdir.name, "sim.log"), "rb") as f:
                    out = f.read().decode("utf-8", "replace")
                tmpdir.cleanup()
                raise SimError("druid_sim exited with %s:\n%s" % (proc.returncode, out))
            if os.path.exists(port_file):
                with open(port_file) as f:
                    txt = f.read().strip()
                if txt:
                    sim = cls(proc, int(txt), tmpdir=tmpdir, auth=auth)
                    # The port file is written after bind+listen; one health probe to be sure.
                    sim._wait_health(deadline)
                    return sim
            time.sleep(0.05)
        proc.kill()
        tmpdir.cleanup()
        raise SimError("druid_sim did not start within %ss" % timeout)

    def _wait_health(self, deadline):
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/status/health", timeout=5) as r:
                    if r.read() == b"true":
                        return
            except OSError:
                time.sleep(0.05)
        raise SimError("druid_sim not healthy")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def log(self):
        """The simulator's stdout/stderr so far (useful in failure messages)."""
        if self._tmpdir is None:
            return ""
        with open(os.path.join(self._tmpdir.name, "sim.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- raw HTTP
    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers dict-like, body bytes); never raises on HTTP status."""
        data = body
        if body is not None and not isinstance(body, (bytes, bytearray)):
            data = json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def _control(self, method, ep, body=None):
        status, _h, data = self.request(method, "/__sim/" + ep, body,
                                        {"Content-Type": "application/json"} if body is not None else {})
        out = json.loads(data.decode("utf-8")) if data else None
        if status != 200:
            raise SimError("%s /__sim/%s -> %s %s" % (method, ep, status, out))
        return out

    # -- control API
    def datasource(self, name, columns, rows=()):
        """Create or replace a datasource. columns: [{"name","type"}] or [(name, type)]."""
        cols = [c if isinstance(c, dict) else {"name": c[0], "type": c[1]} for c in columns]
        return self._control("POST", "datasource", {"name": name, "columns": cols, "rows": list(rows)})

    def append(self, datasource, rows):
        return self._control("POST", "append", {"datasource": datasource, "rows": list(rows)})

    def delete(self, datasource, start, end):
        return self._control("POST", "delete", {"datasource": datasource, "start": start, "end": end})

    def replace(self, datasource, start, end, rows):
        return self._control("POST", "replace", {"datasource": datasource, "start": start, "end": end,
                                                 "rows": list(rows)})

    def add_column(self, datasource, name, type):
        return self._control("POST", "add_column", {"datasource": datasource, "name": name, "type": type})

    def hide(self, datasource, hidden=True):
        return self._control("POST", "hide", {"datasource": datasource, "hidden": hidden})

    def drop(self, datasource):
        return self._control("POST", "drop", {"datasource": datasource})

    def load(self, datasource, file, limit=None):
        return self._control("POST", "load", {"datasource": datasource, "file": file, "limit": limit})

    def fault(self, kind, match=None, times=1, after_rows=0, **kw):
        """Add a fault rule. kw: error=, status=, body=, retry_after=, delay_seconds=."""
        body = {"kind": kind, "match": match, "times": times, "after_rows": after_rows}
        body.update(kw)
        return self._control("POST", "fault", body)

    def clear_faults(self):
        return self._control("DELETE", "faults")

    def queries(self):
        return self._control("GET", "queries")

    def clear_queries(self):
        return self._control("DELETE", "queries")

    def stats(self):
        return self._control("GET", "stats")

    def reset_stats(self):
        """Restart max_inflight counting from the current inflight count."""
        return self._control("DELETE", "stats")

    # -- Druid API
    def sql(self, query, params=None, fmt="arrayLines", header=True, types_header=False, sql_types_header=False,
            context=None, auth=None, content_type="application/json", raw_body=None, timeout=60, extra=None):
        """POST /druid/v2/sql -> (status, headers, body bytes).

        params: list of {"type","value"} dicts or (type, value) tuples.  auth:
        "user:pass" (defaults to the one the simulator was started with; pass
        False for none).  A connection reset raises (ConnectionError /
        http.client.IncompleteRead), as it would for the daemon.
        """
        if raw_body is None:
            req = {"query": query, "resultFormat": fmt, "header": header}
            if types_header:
                req["typesHeader"] = True
            if sql_types_header:
                req["sqlTypesHeader"] = True
            if context is not None:
                req["context"] = context
            if params is not None:
                req["parameters"] = [p if isinstance(p, dict) else {"type": p[0], "value": p[1]} for p in params]
            if extra:
                req.update(extra)
            raw_body = json.dumps(req).encode("utf-8")
        elif isinstance(raw_body, str):
            raw_body = raw_body.encode("utf-8")
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        a = self.auth if auth is None else auth
        if a:
            headers["Authorization"] = "Basic " + base64.b64encode(a.encode("utf-8")).decode("ascii")
        return self.request("POST", "/druid/v2/sql", raw_body, headers, timeout=timeout)
