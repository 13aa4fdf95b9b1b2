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
    def start(cls, load=None, auth=None, legacy_errors=False, version=None, extra_args=(), timeout=60,
              granularity=None):
        """Spawn druid_sim.py on a free port and wait until it listens.

        load: {datasource: path to .json/.json.gz}; auth: "user:pass" or None;
        granularity: {datasource: "HOUR"|"DAY"|"MONTH"|"YEAR"|"ALL"|...} for the loaded ones (DAY).
        """
        tmpdir = tempfile.TemporaryDirectory(prefix="druid_sim_")
        port_file = os.path.join(tmpdir.name, "port")
        cmd = [PYTHON, SIM_PATH, "--host", "127.0.0.1", "--port", "0", "--port-file", port_file]
        for name, path in (load or {}).items():
            cmd += ["--load", "%s=%s" % (name, path)]
        for name, g in (granularity or {}).items():
            cmd += ["--granularity", "%s=%s" % (name, g)]
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

    def _control(self, method, ep, body=None, timeout=60):
        status, _h, data = self.request(method, "/__sim/" + ep, body,
                                        {"Content-Type": "application/json"} if body is not None else {},
                                        timeout=timeout)
        out = json.loads(data.decode("utf-8")) if data else None
        if status != 200:
            raise SimError("%s /__sim/%s -> %s %s" % (method, ep, status, out))
        return out

    # -- control API
    def datasource(self, name, columns, rows=(), granularity=None, rows_per_segment=None):
        """Create or replace a datasource, as one batch ingestion: one version, one segment
        per time chunk (or ceil(rows / rows_per_segment) partitions per chunk).
        columns: [{"name","type"}] or [(name, type)]; granularity: segment granularity
        (default DAY, or the replaced datasource's)."""
        cols = [c if isinstance(c, dict) else {"name": c[0], "type": c[1]} for c in columns]
        body = {"name": name, "columns": cols, "rows": list(rows)}
        if granularity is not None:
            body["granularity"] = granularity
        if rows_per_segment is not None:
            body["rows_per_segment"] = rows_per_segment
        return self._control("POST", "datasource", body)

    def append(self, datasource, rows):
        """Rows added; each chunk they touch is re-ingested at a new version (its old
        segments are marked unused at once). For Druid-style appends see late_append."""
        return self._control("POST", "append", {"datasource": datasource, "rows": list(rows)})

    def delete(self, datasource, start, end):
        """Rows in [start, end) removed: the chunks holding them are re-ingested at a new
        version without them; chunks left empty are dropped."""
        return self._control("POST", "delete", {"datasource": datasource, "start": start, "end": end})

    def replace(self, datasource, start, end, rows):
        """Rows in [start, end) replaced by these (all inside it), chunk by chunk as delete."""
        return self._control("POST", "replace", {"datasource": datasource, "start": start, "end": end,
                                                 "rows": list(rows)})

    # -- segments (shared/reference/druid-segments.md); each returns the JSON answer
    def granularity(self, datasource, granularity):
        """Segment granularity of the datasource's new chunks (existing segments keep theirs)."""
        return self._control("POST", "granularity", {"datasource": datasource, "granularity": granularity})

    def late_append(self, datasource, rows):
        """Streaming/append ingestion: per chunk touched, one new partition at the chunk's
        current version (same shard core); rows outside every chunk start a new chunk at
        a new version. -> {"segments": [new ids]}"""
        return self._control("POST", "late_append", {"datasource": datasource, "rows": list(rows)})

    def realtime(self, datasource, rows):
        """Rows served by a realtime task: added to the chunk's open realtime segment (same
        id) or a new one (is_realtime=1, is_published=0). Queryable at once."""
        return self._control("POST", "realtime", {"datasource": datasource, "rows": list(rows)})

    def handoff(self, datasource, start=None, end=None):
        """Realtime segments overlapping [start, end) (default all) are published and loaded;
        one whose chunk got a newer version meanwhile gets a new id at that version.
        -> {"segments": [[old id, new id], ...]}"""
        return self._control("POST", "handoff", {"datasource": datasource, "start": start, "end": end})

    def compact(self, datasource, start, end, granularity=None, partitions=1, available=True):
        """Compaction of the chunks in [start, end): same rows, new version, `partitions`
        partitions per chunk; granularity: new segment granularity (e.g. HOUR -> DAY).
        available=False: published but not loaded yet. Old segments stay listed as
        overshadowed until cleanup(). -> {"segments": [new ids]}"""
        return self._control("POST", "compact", {"datasource": datasource, "start": start, "end": end,
                                                 "granularity": granularity, "partitions": partitions,
                                                 "available": available})

    def reindex(self, datasource, start, end, rows, granularity=None, partitions=1, available=True,
                empty_chunks="tombstone"):
        """Re-ingestion of [start, end) (aligned to the granularity) with these rows at a new
        version; chunks that had data and get none: "tombstone" (MSQ REPLACE), "drop"
        (marked unused) or "keep" (old segments stay). -> {"segments": [new ids]}"""
        return self._control("POST", "reindex", {"datasource": datasource, "start": start, "end": end,
                                                 "rows": list(rows), "granularity": granularity,
                                                 "partitions": partitions, "available": available,
                                                 "empty_chunks": empty_chunks})

    def drop_interval(self, datasource, start, end):
        """Published segments contained in [start, end) become unused: gone from sys.segments
        and from query results. -> {"segments": [dropped ids]}"""
        return self._control("POST", "drop_interval", {"datasource": datasource, "start": start, "end": end})

    def set_available(self, datasource, start=None, end=None, available=False, partitions=None,
                      replication_factor=None, segment_ids=None):
        """Published segments overlapping [start, end) (default all; only these partition
        numbers or segment ids if given) unloaded (available=False: is_available=0, rows
        left out of queries) or loaded again; replication_factor sets the load rule (0:
        deep storage only). -> {"segments": [ids]}"""
        return self._control("POST", "availability", {"datasource": datasource, "start": start, "end": end,
                                                      "available": available, "partitions": partitions,
                                                      "replication_factor": replication_factor,
                                                      "segment_ids": segment_ids})

    def cleanup(self, datasource):
        """The Coordinator's duty: overshadowed segments no longer served become unused."""
        return self._control("POST", "cleanup", {"datasource": datasource})

    def num_rows_known(self, datasource, known, start=None, end=None):
        """known=False: num_rows reads 0 (unknown) for the segments overlapping [start, end),
        or without an interval for all the datasource's segments, now and later."""
        return self._control("POST", "num_rows", {"datasource": datasource, "known": known, "start": start,
                                                  "end": end})

    def segments_forbidden(self, forbidden=True):
        """Fault: queries on sys.segments answer 403 {"error":"Unauthorized"}; others work.
        clear_faults() ends it."""
        return self._control("POST", "segments_forbidden", {"forbidden": forbidden})

    def segments_hidden(self, datasource, hidden=True):
        """Fault: sys.segments has no rows for this datasource; its data stays queryable.
        clear_faults() ends it."""
        return self._control("POST", "segments_hidden", {"datasource": datasource, "hidden": hidden})

    def generate(self, datasource, segments=10000, granularity="HOUR", start="2020-01-01T00:00:00Z",
                 rows_per_segment=1, partitions_per_chunk=1):
        """Create (replace) a datasource with `segments` segments in consecutive chunks
        (columns __time, n BIGINT, s VARCHAR), in a fraction of a second."""
        return self._control("POST", "generate", {"datasource": datasource, "segments": segments,
                                                  "granularity": granularity, "start": start,
                                                  "rows_per_segment": rows_per_segment,
                                                  "partitions_per_chunk": partitions_per_chunk})

    def segments(self, datasource):
        """The simulator's own view of every used segment (for assertions and debugging)."""
        from urllib.parse import quote
        return self._control("GET", "segments?datasource=" + quote(datasource))

    def add_column(self, datasource, name, type):
        return self._control("POST", "add_column", {"datasource": datasource, "name": name, "type": type})

    def hide(self, datasource, hidden=True):
        return self._control("POST", "hide", {"datasource": datasource, "hidden": hidden})

    def drop(self, datasource):
        return self._control("POST", "drop", {"datasource": datasource})

    def load(self, datasource, file, limit=None, granularity=None, rows=None, cycle_ms=None):
        """Create (replace) a datasource from an NDJSON(.gz) file the server reads.
        rows: that many rows, the file's rows cycled, copy k shifted by k * cycle_ms
        (default: the file's time span rounded up to whole days)."""
        body = {"datasource": datasource, "file": file, "limit": limit, "granularity": granularity}
        if rows is not None:
            body["rows"] = rows
            body["cycle_ms"] = cycle_ms
        # building millions of rows takes the server a while (about 20 s per million here)
        return self._control("POST", "load", body, timeout=60 + (rows or 0) / 10000)

    def fast_path(self, enabled=None):
        """The pre-rendered slice path: enabled=True/False switches it (what it rendered
        is kept); -> {"enabled", "builds", "build_seconds", "entries": [...]}."""
        if enabled is None:
            return self._control("GET", "fast_path")
        return self._control("POST", "fast_path", {"enabled": bool(enabled)})

    def fault(self, kind, match=None, times=1, after_rows=0, **kw):
        """Add a fault rule. kw: error=, status=, body=, retry_after=, delay_seconds=."""
        body = {"kind": kind, "match": match, "times": times, "after_rows": after_rows}
        body.update(kw)
        return self._control("POST", "fault", body)

    def clear_faults(self):
        """All fault rules, and the segments_forbidden / segments_hidden faults, end."""
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
