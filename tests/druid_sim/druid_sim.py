#!/usr/bin/python3
"""Druid SQL HTTP API simulator for the druid-syncd tests.

This module owns everything a test needs from "a Druid cluster":

* ``POST /druid/v2/sql`` with the five result formats, header rows, lazy start,
  chunked streaming, truncation semantics, both error envelopes (27+ and legacy),
  Basic auth, query ids and cancellation (``DELETE /druid/v2/sql/{id}``), all
  byte-for-byte as described in ``shared/reference/druid-sql-api.md`` (section 10
  is the checklist).
* A small Druid SQL dialect (the shapes the daemon sends plus what a person
  types by hand), translated to SQLite over in-memory tables.  Types are tracked
  by our own typer because the header rows and the value formatting depend on
  the SQL type of each output expression, which SQLite does not know.
* ``INFORMATION_SCHEMA`` and ``sys.segments`` views of the datasources.
* Druid's segment model (``shared/reference/druid-segments.md``): each datasource is
  cut into time chunks of its segment granularity, each chunk held by the
  partitions of one version; every row belongs to one segment.  sys.segments is
  built from that model (the columns of the configured Druid version), and queries
  see exactly the rows of the segments the Broker's timeline would use: available,
  not overshadowed, complete partition sets, plus realtime segments.
* A control API under ``/__sim/`` (never authenticated) to create/alter data
  (including late appends, compaction, reindexing, dropped intervals, unavailable
  segments, realtime segments and handoff), inject faults and inspect the queries
  the daemon sent.  simctl.py has one method per endpoint.

Standard library only; run with /usr/bin/python3 (3.11).
"""

import argparse
import base64
import bisect
import gzip
import json
import math
import operator
import os
import re
import signal
import socket
import sqlite3
import struct
import sys
import threading
import time
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DAY_MS = 86400000

# ---------------------------------------------------------------------------
# Value formatting (reference section 3)
# ---------------------------------------------------------------------------


def _java_digits(digits, exp10, neg):
    """Render shortest decimal digits the way Java's Double/Float.toString does.

    ``digits`` is the significant digit string (no leading/trailing zeros except
    a single "0"), ``exp10`` the exponent of its first digit (scientific form).
    Java uses plain notation for 1e-3 <= |x| < 1e7 and computerized scientific
    notation (``1.0E7``, ``1.0E-5``) otherwise, always with a fractional part.
    """
    sign = "-" if neg else ""
    if -3 <= exp10 < 7:
        if exp10 >= 0:
            ip = digits[: exp10 + 1].ljust(exp10 + 1, "0")
            fp = digits[exp10 + 1:] or "0"
        else:
            ip = "0"
            fp = "0" * (-exp10 - 1) + digits
        return "%s%s.%s" % (sign, ip, fp)
    return "%s%s.%sE%d" % (sign, digits[0], digits[1:] or "0", exp10)


def _shortest_parts(text):
    """Split a Python shortest-repr float text into (digits, exp10, neg)."""
    d = Decimal(text)
    sign, dig, exp = d.as_tuple()
    s = "".join(map(str, dig)).rstrip("0")
    if not s:
        return "0", 0, bool(sign)
    lead = len("".join(map(str, dig))) + exp - 1
    return s, lead, bool(sign)


def java_double(x):
    """Java ``Double.toString`` for finite doubles (shortest round-trip digits)."""
    x = float(x)
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    parts = _shortest_parts(repr(x))
    if len(parts[0]) == 1:
        # Java renders at least two significant digits and then picks the closest
        # two-digit decimal (Double.MIN_VALUE is 4.9E-324, not 5.0E-324).
        t = "%.1e" % x
        if float(t) == x:
            parts = _shortest_parts(t)
    return _java_digits(*parts)


def java_float(x):
    """Java ``Float.toString``: shortest digits that round-trip through float32."""
    x = struct.unpack("f", struct.pack("f", float(x)))[0]
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    for p in range(1, 10):
        t = "%.*e" % (p - 1, x)
        if struct.unpack("f", struct.pack("f", float(t)))[0] == x:
            if p == 1:  # at least two digits, the closest one (see java_double)
                t2 = "%.1e" % x
                if struct.unpack("f", struct.pack("f", float(t2)))[0] == x:
                    t = t2
            return _java_digits(*_shortest_parts(t))
    return java_double(x)


def to_float32(x):
    return struct.unpack("f", struct.pack("f", float(x)))[0]


_CTRL_RE = re.compile(r"[\x00-\x1f]")


_JSON_SPECIAL = re.compile(r'["\\\x00-\x1f]')


def jstr(s):
    """JSON string the way Jackson writes it: raw UTF-8, control chars escaped
    (short forms for \\b\\f\\n\\r\\t, otherwise \\u00XX in upper case hex)."""
    if not _JSON_SPECIAL.search(s):
        return '"' + s + '"'  # what json.dumps gives too: it escapes only these characters
    out = json.dumps(s, ensure_ascii=False)
    if _CTRL_RE.search(s) and re.search(r"\\u00[0-9a-f]{2}", out):
        parts = ['"']
        for ch in s:
            o = ord(ch)
            if ch == '"':
                parts.append('\\"')
            elif ch == "\\":
                parts.append("\\\\")
            elif o < 0x20:
                parts.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(o, "\\u%04X" % o))
            else:
                parts.append(ch)
        parts.append('"')
        out = "".join(parts)
    return out


def jdump(v):
    """Compact JSON with Java-style numbers (what Druid's ObjectMapper emits)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return '"NaN"'
        if math.isinf(v):
            return '"Infinity"' if v > 0 else '"-Infinity"'
        return java_double(v)
    if isinstance(v, str):
        return jstr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(jdump(e) for e in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(jstr(str(k)) + ":" + jdump(e) for k, e in v.items()) + "}"
    return jstr(str(v))


# --- time -------------------------------------------------------------------


def days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


def fmt_ts(ms):
    """Joda ISODateTimeFormat.dateTime() in UTC: 2015-09-12T00:46:58.771Z."""
    ms = int(ms)
    days, rem = divmod(ms, DAY_MS)
    y, mo, d = civil_from_days(days)
    hh, rem = divmod(rem, 3600000)
    mi, rem = divmod(rem, 60000)
    ss, mss = divmod(rem, 1000)
    ys = "%04d" % y if 0 <= y <= 9999 else str(y)
    return "%s-%02d-%02dT%02d:%02d:%02d.%03dZ" % (ys, mo, d, hh, mi, ss, mss)


def fmt_sql_ts(ms):
    """CAST(ts AS VARCHAR) form: 2015-09-12 00:46:58.771."""
    t = fmt_ts(ms)
    return t[:10] + " " + t[11:23]


_ISO_RE = re.compile(
    r"^\s*([+-]?\d{4,9})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2})(?::(\d{1,2})(?::(\d{1,2})(?:[.,](\d{1,9}))?)?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?\s*$")


def parse_time(s):
    """ISO-8601 (or SQL 'yyyy-MM-dd HH:mm:ss[.SSS]') string -> epoch millis, or None.
    No offset means UTC (Druid reads it in sqlTimeZone, which we fix to UTC)."""
    if not isinstance(s, str):
        return None
    m = _ISO_RE.match(s)
    if not m:
        return None
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    hh, mi, ss = (int(m.group(i) or 0) for i in (4, 5, 6))
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mi < 60 and ss < 60):
        return None
    frac = m.group(7) or "0"
    ms = int((frac + "00")[:3])
    total = days_from_civil(y, mo, d) * DAY_MS + hh * 3600000 + mi * 60000 + ss * 1000 + ms
    off = m.group(8)
    if off and off != "Z":
        sign = -1 if off[0] == "-" else 1
        digits = off[1:].replace(":", "")
        oh, om = int(digits[:2]), int(digits[2:4] or 0)
        total -= sign * (oh * 3600000 + om * 60000)
    return total


def to_millis(v):
    """A TIMESTAMP value from JSON (millis number or ISO string) -> millis."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValueError("bad timestamp %r" % (v,))
    if isinstance(v, (int, float)):
        return int(v)
    ms = parse_time(str(v))
    if ms is None:
        raise ValueError("bad timestamp %r" % (v,))
    return ms


_PERIOD_RE = re.compile(
    r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_period(p):
    """ISO period -> ('months', n) or ('ms', n, origin_ms).  None if invalid."""
    m = _PERIOD_RE.match(p or "")
    if not m or p in ("P", "PT"):
        return None
    y, mo, w, d, h, mi, s = m.groups()
    months = int(y or 0) * 12 + int(mo or 0)
    dur = (int(w or 0) * 7 * DAY_MS + int(d or 0) * DAY_MS + int(h or 0) * 3600000
           + int(mi or 0) * 60000 + int(round(float(s or 0) * 1000)))
    if months and dur:
        return None
    if months:
        return ("months", months)
    if dur <= 0:
        return None
    # Weeks are aligned on ISO Mondays (1970-01-05), everything else on the epoch.
    return ("ms", dur, 4 * DAY_MS if w else 0)


_period_cache = {}


def time_floor(ms, period):
    if ms is None or period is None:
        return None
    spec = _period_cache.get(period)
    if spec is None:
        spec = parse_period(period)
        if spec is None:
            raise ValueError("Unknown period [%s]" % period)
        _period_cache[period] = spec
    ms = int(ms)
    if spec[0] == "ms":
        dur, origin = spec[1], spec[2]
        return (ms - origin) // dur * dur + origin
    y, mo, _d = civil_from_days(ms // DAY_MS)
    idx = (y * 12 + mo - 1) - (1970 * 12)
    idx = idx // spec[1] * spec[1] + 1970 * 12
    return days_from_civil(idx // 12, idx % 12 + 1, 1) * DAY_MS


def time_ceil(ms, period):
    f = time_floor(ms, period)
    if f is None or f == ms:
        return f
    spec = _period_cache[period]
    if spec[0] == "ms":
        return f + spec[1]
    y, mo, _d = civil_from_days(f // DAY_MS)
    idx = y * 12 + mo - 1 + spec[1]
    return days_from_civil(idx // 12, idx % 12 + 1, 1) * DAY_MS


# ---------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------

JDBC = {"TIMESTAMP": 93, "VARCHAR": 12, "CHAR": 1, "BIGINT": -5, "INTEGER": 4, "SMALLINT": 5, "TINYINT": -6,
        "FLOAT": 6, "REAL": 7, "DOUBLE": 8, "DECIMAL": 3, "BOOLEAN": 16, "DATE": 91, "ARRAY": 2003, "OTHER": 1111}
INT_TYPES = ("BIGINT", "INTEGER", "SMALLINT", "TINYINT")
FLOAT_TYPES = ("DOUBLE", "FLOAT", "REAL", "DECIMAL")


class T:
    """A column/expression type: SQL type name (sqlTypesHeader), native type
    (typesHeader) and the INFORMATION_SCHEMA DATA_TYPE spelling."""
    __slots__ = ("sql", "native", "info")

    def __init__(self, sql, native, info=None):
        self.sql, self.native, self.info = sql, native, info or sql

    def __repr__(self):
        return "T(%s,%s)" % (self.sql, self.native)


def native_of(sql):
    if sql in ("TIMESTAMP", "DATE", "BOOLEAN") or sql in INT_TYPES:
        return "LONG"
    if sql in ("DOUBLE", "DECIMAL"):
        return "DOUBLE"
    if sql in ("FLOAT", "REAL"):
        return "FLOAT"
    if sql in ("VARCHAR", "CHAR"):
        return "STRING"
    return None


def tsimple(sql):
    return T(sql, native_of(sql))


def type_from_name(name):
    """Control-API / parameter type name -> T.  Raises ValueError if unknown."""
    n = (name or "").strip()
    u = n.upper()
    if u.startswith("COMPLEX<") and n.endswith(">"):
        return T("OTHER", "COMPLEX<%s>" % n[8:-1], "COMPLEX<%s>" % n[8:-1])
    if u in ("COMPLEX", "OTHER", "JSON"):
        return T("OTHER", "COMPLEX<json>", "COMPLEX<json>")
    if u.startswith("ARRAY"):
        el = u[6:-1] if u.startswith("ARRAY<") else ""
        el = {"VARCHAR": "STRING", "BIGINT": "LONG"}.get(el, el)
        return T("ARRAY", "ARRAY<%s>" % el if el else "ARRAY<STRING>", "ARRAY")
    if u == "STRING":
        u = "VARCHAR"
    if u == "LONG":
        u = "BIGINT"
    if native_of(u) is None:
        raise ValueError("unknown type [%s]" % name)
    return tsimple(u)


# ---------------------------------------------------------------------------
# Errors (reference section 5)
# ---------------------------------------------------------------------------


class DruidError(Exception):
    """An error response.  ``kind`` 'native' is a DruidException, 'legacy' a
    wrapped legacy QueryException; ``raw`` bypasses the envelope entirely."""

    def __init__(self, status, message, code="invalidInput", persona="USER", category="INVALID_INPUT",
                 context=None, kind="native", legacy_error=None, legacy_class=None, host=None,
                 raw=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.code, self.persona = status, message, code, persona
        self.category, self.context, self.kind = category, context if context is not None else {}, kind
        self.legacy_error, self.legacy_class, self.host = legacy_error, legacy_class, host
        self.raw, self.headers = raw, headers or []

    def body(self, legacy_mode):
        if self.raw is not None:
            return self.raw
        if legacy_mode:
            return "{" + ",".join([
                '"error":' + jdump(self.legacy_error or "Unknown exception"),
                '"errorMessage":' + jdump(self.message),
                '"errorClass":' + jdump(self.legacy_class),
                '"host":' + jdump(self.host)]) + "}"
        if self.kind == "legacy":
            ctx = {"host": self.host, "errorClass": self.legacy_class, "legacyErrorCode": self.legacy_error}
            return "{" + ",".join([
                '"error":' + jdump(self.legacy_error), '"errorClass":' + jdump(self.legacy_class),
                '"host":' + jdump(self.host), '"errorCode":"legacyQueryException"',
                '"persona":' + jdump(self.persona), '"category":' + jdump(self.category),
                '"errorMessage":' + jdump(self.message), '"context":' + jdump(ctx)]) + "}"
        return "{" + ",".join([
            '"error":"druidException"', '"errorCode":' + jdump(self.code), '"persona":' + jdump(self.persona),
            '"category":' + jdump(self.category), '"errorMessage":' + jdump(self.message),
            '"context":' + jdump({k: str(v) for k, v in self.context.items()})]) + "}"


def _sql_ctx(sql, pos, endpos):
    line, col = line_col(sql, pos)
    eline, ecol = line_col(sql, max(pos, endpos - 1))
    return {"sourceType": "sql", "line": line, "column": col, "endLine": eline, "endColumn": ecol}


def line_col(sql, pos):
    pos = max(0, min(pos, len(sql)))
    line = sql.count("\n", 0, pos) + 1
    col = pos - (sql.rfind("\n", 0, pos) + 1) + 1
    return line, col


def err_parse(message):
    return DruidError(400, message, legacy_error="SQL parse failed",
                      legacy_class="org.apache.calcite.sql.parser.SqlParseException")


def err_validation(message, context=None):
    return DruidError(400, message, context=context, legacy_error="Plan validation failed",
                      legacy_class="org.apache.calcite.tools.ValidationException")


def err_order_by(cols):
    return DruidError(
        400, "Query could not be planned. A possible reason is [SQL query requires ordering a table by "
             "non-time column [[%s]], which is not supported.]" % ", ".join(cols),
        code="general", persona="ADMIN", legacy_error="SQL query is unsupported",
        legacy_class="org.apache.calcite.plan.RelOptPlanner$CannotPlanException")


def err_unknown_table(name, sql="", pos=0, endpos=0, within=None):
    ctx = _sql_ctx(sql, pos, endpos) if sql else {}
    if within:
        # Calcite's wording for a qualified name in a known schema.
        msg = "Object '%s' not found within '%s'" % (name, within)
    elif ctx:
        msg = "Object '%s' not found (line [%s], column [%s])" % (name, ctx["line"], ctx["column"])
    else:
        msg = "Object '%s' not found" % name
    return err_validation(msg, ctx)


def err_timeout():
    return DruidError(504, "Query did not complete within configured timeout period. You can increase query "
                           "timeout or tune the performance of query.", code="legacyQueryException",
                      persona="OPERATOR", category="TIMEOUT", kind="legacy", legacy_error="Query timeout",
                      legacy_class="org.apache.druid.query.QueryTimeoutException")


def err_capacity():
    return DruidError(429, "Too many concurrent queries, total query capacity of 2 exceeded. Please try your "
                           "query again later.", code="legacyQueryException", persona="OPERATOR",
                      category="CAPACITY_EXCEEDED", kind="legacy", legacy_error="Query capacity exceeded",
                      legacy_class="org.apache.druid.query.QueryCapacityExceededException")


def err_cancelled(qid):
    return DruidError(500, "Query [%s] was cancelled." % qid, code="legacyQueryException", persona="OPERATOR",
                      category="CANCELED", kind="legacy", legacy_error="Query cancelled", legacy_class=None)


def err_general(status, message, category="UNCATEGORIZED", legacy_error="Unknown exception",
                legacy_class="java.lang.RuntimeException"):
    return DruidError(status, message, code="general", persona="ADMIN", category=category,
                      legacy_error=legacy_error, legacy_class=legacy_class)


UNAUTHORIZED_BODY = '{"error":"Unauthorized request","errorMessage":null,"errorClass":null,"host":"localhost"}'


def err_unauthorized():
    return DruidError(401, "Unauthorized request", raw=UNAUTHORIZED_BODY, headers=[("WWW-Authenticate", "Basic")])


def jetty_401_page(uri):
    return ('<html>\n<head>\n<meta http-equiv="Content-Type" content="text/html;charset=ISO-8859-1"/>\n'
            '<title>Error 401 Unauthorized</title>\n</head>\n<body><h2>HTTP ERROR 401 Unauthorized</h2>\n'
            '<table>\n<tr><th>URI:</th><td>%s</td></tr>\n<tr><th>STATUS:</th><td>401</td></tr>\n'
            '<tr><th>MESSAGE:</th><td>Unauthorized</td></tr>\n<tr><th>SERVLET:</th><td>-</td></tr>\n'
            '</table>\n\n</body>\n</html>\n' % uri)


def fault_error(name, table="nope"):
    """Error templates for the 'status' fault kind."""
    if name == "capacity":
        return err_capacity()
    if name == "timeout":
        return err_timeout()
    if name == "unavailable":
        return DruidError(503, "Service Unavailable: no broker is available to serve this query",
                          code="general", persona="OPERATOR", category="SERVICE_UNAVAILABLE",
                          legacy_error="Query interrupted", legacy_class="java.io.IOException")
    if name == "server":
        return err_general(500, "Internal server error")
    if name == "unauthorized":
        return err_unauthorized()
    if name == "forbidden":
        return DruidError(403, "Unauthorized", raw='{"error":"Unauthorized"}')
    if name == "unknown_table":
        return err_unknown_table(table)
    if name == "order_by":
        return err_order_by(["channel"])
    raise ValueError("unknown error template [%s]" % name)


# ---------------------------------------------------------------------------
# SQL tokenizer and parser (a Druid SQL subset)
# ---------------------------------------------------------------------------

RESERVED = set("""ALL AND ANY ARRAY AS ASYMMETRIC AVG BETWEEN BY CASE CAST COUNT CROSS CURRENT_DATE CURRENT_TIMESTAMP
DATE DAY DISTINCT ELSE END EXCEPT EXISTS EXTRACT FALSE FETCH FLOOR FROM FULL GROUP HAVING HOUR IN INNER INSERT
INTERSECT INTERVAL INTO IS JOIN LEFT LIKE LIMIT MAX MIN MINUTE MONTH NATURAL NOT NULL OFFSET ON ONE OR ORDER OUTER
RIGHT ROWS SECOND SELECT START SUM SYMMETRIC THEN TIME TIMESTAMP TRUE UNION UPDATE USER USING VALUE VALUES WHEN
WHERE WITH YEAR DELETE REPLACE""".split())

# Words that are reserved but may still start a function call.
FUNC_KEYWORDS = {"COUNT", "SUM", "MIN", "MAX", "AVG", "FLOOR", "CEIL", "CAST", "EXTRACT", "REPLACE", "LEFT", "RIGHT",
                 "ARRAY"}

_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<qid>"(?:[^"]|"")*")
  | (?P<str>'(?:[^']|'')*')
  | (?P<op><>|!=|>=|<=|\|\||[=<>+\-*/%(),.;?])
""", re.X | re.S)


class Tok:
    __slots__ = ("kind", "val", "pos", "end", "upper")

    def __init__(self, kind, val, pos, end):
        self.kind, self.val, self.pos, self.end = kind, val, pos, end
        self.upper = val.upper() if kind == "word" else None


def tokenize(sql):
    toks, i, n = [], 0, len(sql)
    while i < n:
        m = _TOKEN_RE.match(sql, i)
        if not m:
            line, col = line_col(sql, i)
            raise err_parse("Lexical error at line %d, column %d.  Encountered: \"%s\"" % (line, col, sql[i]))
        kind = m.lastgroup
        if kind != "ws":
            text = m.group(kind)
            if kind == "qid":
                toks.append(Tok("qid", text[1:-1].replace('""', '"'), i, m.end()))
            elif kind == "str":
                toks.append(Tok("str", text[1:-1].replace("''", "'"), i, m.end()))
            else:
                toks.append(Tok(kind, text, i, m.end()))
        i = m.end()
    toks.append(Tok("eof", "", n, n))
    return toks


class N:
    """AST node: ``k`` is the kind, other attributes depend on it."""

    def __init__(self, k, pos=0, end=0, **kw):
        self.k, self.pos, self.end = k, pos, end
        self.__dict__.update(kw)

    def __repr__(self):
        return "N(%s)" % ", ".join("%s=%r" % kv for kv in self.__dict__.items())


AGGS = {"COUNT", "SUM", "MIN", "MAX", "AVG", "APPROX_COUNT_DISTINCT", "APPROX_COUNT_DISTINCT_BUILTIN",
        "ANY_VALUE", "EARLIEST", "LATEST"}


class Parser:
    def __init__(self, sql):
        self.sql = sql
        self.toks = tokenize(sql)
        self.i = 0
        self.nparams = 0

    # -- helpers
    @property
    def t(self):
        return self.toks[self.i]

    def peek(self, k=1):
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def is_kw(self, *words):
        return self.t.kind == "word" and self.t.upper in words

    def accept_kw(self, *words):
        if self.is_kw(*words):
            return self.next()
        return None

    def is_op(self, *ops):
        return self.t.kind == "op" and self.t.val in ops

    def accept_op(self, *ops):
        if self.is_op(*ops):
            return self.next()
        return None

    def error(self, tok=None):
        tok = tok or self.t
        line, col = line_col(self.sql, tok.pos)
        ctx = _sql_ctx(self.sql, tok.pos, tok.end)
        if tok.kind == "eof":
            e = err_parse("Incorrect syntax near the keyword '<EOF>' at line %d, column %d" % (line, col))
        elif tok.kind == "word" and tok.upper in RESERVED:
            e = err_parse("Incorrect syntax near the keyword '%s' at line %d, column %d" % (tok.upper, line, col))
        else:
            text = self.sql[tok.pos:tok.end]
            e = err_parse("Received an unexpected token [%s] (line [%d], column [%d])" % (text, line, col))
        e.context = ctx
        return e

    def expect_kw(self, w):
        if not self.is_kw(w):
            raise self.error()
        return self.next()

    def expect_op(self, o):
        if not self.is_op(o):
            raise self.error()
        return self.next()

    def ident(self):
        t = self.t
        if t.kind == "qid":
            self.next()
            return t.val, t
        if t.kind == "word" and t.upper not in RESERVED:
            self.next()
            return t.val, t
        raise self.error()

    # -- statements
    def parse(self):
        if self.is_kw("INSERT", "REPLACE") and not self.is_op_at(1, "("):
            raise DruidError(400, "%s operations are not supported by requested SQL engine [native], consider "
                                  "using MSQ." % self.t.upper, legacy_error="Plan validation failed",
                             legacy_class="org.apache.calcite.tools.ValidationException")
        if self.is_kw("UPDATE", "DELETE", "MERGE"):
            raise DruidError(400, "Unsupported SQL statement [%s]" % self.t.upper,
                             legacy_error="SQL query is unsupported",
                             legacy_class="org.apache.calcite.tools.ValidationException")
        q = self.select()
        self.accept_op(";")
        if self.t.kind != "eof":
            raise self.error()
        q.nparams = self.nparams
        return q

    def is_op_at(self, k, op):
        t = self.peek(k)
        return t.kind == "op" and t.val == op

    def select(self):
        self.expect_kw("SELECT")
        q = N("select", distinct=False, items=[], table=None, where=None, group=None, having=None,
              order=[], limit=None, offset=None)
        if self.accept_kw("DISTINCT"):
            q.distinct = True
        else:
            self.accept_kw("ALL")
        while True:
            start = self.t
            if self.accept_op("*"):
                q.items.append(N("star", start.pos, start.end))
            else:
                e = self.expr()
                alias = None
                if self.accept_kw("AS"):
                    alias, _ = self.ident()
                elif self.t.kind == "qid" or (self.t.kind == "word" and self.t.upper not in RESERVED):
                    alias, _ = self.ident()
                q.items.append(N("item", start.pos, self.toks[self.i - 1].end, e=e, alias=alias))
            if not self.accept_op(","):
                break
        if self.accept_kw("FROM"):
            q.table = self.table_ref()
        if self.accept_kw("WHERE"):
            q.where = self.expr()
        if self.accept_kw("GROUP"):
            self.expect_kw("BY")
            q.group = [self.expr()]
            while self.accept_op(","):
                q.group.append(self.expr())
        if self.accept_kw("HAVING"):
            q.having = self.expr()
        if self.accept_kw("ORDER"):
            self.expect_kw("BY")
            while True:
                e = self.expr()
                desc = False
                if self.accept_kw("DESC"):
                    desc = True
                else:
                    self.accept_kw("ASC")
                q.order.append((e, desc))
                if not self.accept_op(","):
                    break
        if self.is_kw("OFFSET"):
            off_tok = self.next()
            q.offset = self.count_value()
            self.accept_kw("ROWS", "ROW")
            if self.is_kw("LIMIT", "FETCH"):
                e = err_parse("'OFFSET start LIMIT count' is not allowed under the current SQL conformance level")
                e.context = _sql_ctx(self.sql, off_tok.pos, self.t.end)
                raise e
        elif self.accept_kw("LIMIT"):
            q.limit = self.count_value()
            if self.accept_kw("OFFSET"):
                q.offset = self.count_value()
        return q

    def count_value(self):
        t = self.t
        if t.kind == "num" and t.val.isdigit():
            self.next()
            return int(t.val)
        if self.accept_op("?"):
            self.nparams += 1
            return N("param", t.pos, t.end, idx=self.nparams - 1)
        raise self.error()

    def table_ref(self):
        if self.is_op("("):
            raise DruidError(400, "Subqueries are not supported by the Druid simulator",
                             legacy_error="SQL query is unsupported")
        name, tok = self.ident()
        parts, toks = [name], [tok]
        while self.accept_op("."):
            n2, t2 = self.ident()
            parts.append(n2)
            toks.append(t2)
        if len(parts) > 2:
            raise self.error(toks[2])
        ref = N("table", toks[0].pos, toks[-1].end, parts=parts, toks=toks)
        # Optional table alias.
        if self.accept_kw("AS"):
            ref.alias = self.ident()[0]
        elif self.t.kind == "qid" or (self.t.kind == "word" and self.t.upper not in RESERVED):
            ref.alias = self.ident()[0]
        else:
            ref.alias = None
        if self.is_kw("JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS") or self.is_op(","):
            raise DruidError(400, "JOIN is not supported by the Druid simulator",
                             legacy_error="SQL query is unsupported")
        return ref

    # -- expressions (precedence climbing)
    def expr(self):
        return self.or_expr()

    def or_expr(self):
        e = self.and_expr()
        while self.is_kw("OR"):
            self.next()
            r = self.and_expr()
            e = N("bin", e.pos, r.end, op="OR", l=e, r=r)
        return e

    def and_expr(self):
        e = self.not_expr()
        while self.is_kw("AND"):
            self.next()
            r = self.not_expr()
            e = N("bin", e.pos, r.end, op="AND", l=e, r=r)
        return e

    def not_expr(self):
        if self.is_kw("NOT"):
            t = self.next()
            e = self.not_expr()
            return N("not", t.pos, e.end, e=e)
        return self.comparison()

    def comparison(self):
        e = self.additive()
        while True:
            if self.is_op("=", "<>", "!=", "<", "<=", ">", ">="):
                op = self.next().val
                r = self.additive()
                e = N("bin", e.pos, r.end, op="<>" if op == "!=" else op, l=e, r=r)
                continue
            if self.is_kw("IS"):
                self.next()
                neg = bool(self.accept_kw("NOT"))
                if self.accept_kw("NULL"):
                    e = N("isnull", e.pos, self.toks[self.i - 1].end, e=e, neg=neg)
                elif self.is_kw("TRUE", "FALSE"):
                    v = self.next().upper == "TRUE"
                    e = N("istrue", e.pos, self.toks[self.i - 1].end, e=e, val=v, neg=neg)
                else:
                    raise self.error()
                continue
            neg = False
            save = self.i
            if self.is_kw("NOT"):
                self.next()
                neg = True
            if self.accept_kw("IN"):
                self.expect_op("(")
                items = [self.expr()]
                while self.accept_op(","):
                    items.append(self.expr())
                end = self.expect_op(")").end
                e = N("in", e.pos, end, e=e, items=items, neg=neg)
                continue
            if self.accept_kw("LIKE"):
                p = self.additive()
                esc = None
                if self.accept_kw("ESCAPE"):
                    esc = self.additive()
                e = N("like", e.pos, p.end, e=e, pat=p, esc=esc, neg=neg)
                continue
            if self.accept_kw("BETWEEN"):
                self.accept_kw("ASYMMETRIC")
                lo = self.additive()
                self.expect_kw("AND")
                hi = self.additive()
                e = N("between", e.pos, hi.end, e=e, lo=lo, hi=hi, neg=neg)
                continue
            self.i = save
            return e

    def additive(self):
        e = self.mult()
        while self.is_op("+", "-", "||"):
            op = self.next().val
            r = self.mult()
            e = N("bin", e.pos, r.end, op=op, l=e, r=r)
        return e

    def mult(self):
        e = self.unary()
        while self.is_op("*", "/", "%"):
            op = self.next().val
            r = self.unary()
            e = N("bin", e.pos, r.end, op=op, l=e, r=r)
        return e

    def unary(self):
        if self.is_op("-", "+"):
            t = self.next()
            e = self.unary()
            if t.val == "+":
                return e
            if e.k == "num":
                e.text = "-" + e.text
                e.pos = t.pos
                return e
            return N("neg", t.pos, e.end, e=e)
        return self.primary()

    def primary(self):
        t = self.t
        if t.kind == "num":
            self.next()
            return N("num", t.pos, t.end, text=t.val)
        if t.kind == "str":
            self.next()
            return N("str", t.pos, t.end, val=t.val)
        if t.kind == "op" and t.val == "?":
            self.next()
            self.nparams += 1
            return N("param", t.pos, t.end, idx=self.nparams - 1)
        if t.kind == "op" and t.val == "(":
            self.next()
            e = self.expr()
            self.expect_op(")")
            return e
        if t.kind == "qid":
            return self.column_ref()
        if t.kind != "word":
            raise self.error()
        u = t.upper
        if u in ("TRUE", "FALSE"):
            self.next()
            return N("bool", t.pos, t.end, val=(u == "TRUE"))
        if u == "NULL":
            self.next()
            return N("null", t.pos, t.end)
        if u in ("TIMESTAMP", "DATE") and self.peek().kind == "str":
            self.next()
            s = self.next()
            ms = parse_time(s.val) if re.match(r"^\s*\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2}(\.\d{1,9})?)?\s*$",
                                                s.val) else None
            if ms is None or (u == "DATE" and ms % DAY_MS):
                e = err_parse("Illegal %s literal '%s': not in format '%s'" % (
                    u, s.val, "yyyy-MM-dd HH:mm:ss" if u == "TIMESTAMP" else "yyyy-MM-dd"))
                e.context = _sql_ctx(self.sql, t.pos, s.end)
                raise e
            return N("ts", t.pos, s.end, ms=ms, typ=u)
        if u in ("CURRENT_TIMESTAMP", "CURRENT_DATE"):
            self.next()
            now = int(time.time() * 1000)
            return N("ts", t.pos, t.end, ms=now if u == "CURRENT_TIMESTAMP" else now // DAY_MS * DAY_MS,
                     typ=u[8:])
        if u == "CASE":
            return self.case()
        if u == "CAST" and self.is_op_at(1, "("):
            self.next()
            self.next()
            e = self.expr()
            self.expect_kw("AS")
            tn = self.next()
            if tn.kind != "word":
                raise self.error(tn)
            tname = tn.upper
            if self.accept_op("("):  # VARCHAR(10), DECIMAL(10,2)
                while not self.accept_op(")"):
                    if self.t.kind == "eof":
                        raise self.error()
                    self.next()
            end = self.expect_op(")").end
            return N("cast", t.pos, end, e=e, to=tname)
        if u in ("FLOOR", "CEIL") and self.is_op_at(1, "("):
            # FLOOR(x TO DAY) as well as numeric FLOOR(x).
            save = self.i
            self.next()
            self.next()
            e = self.expr()
            if self.accept_kw("TO"):
                unit = self.next().upper
                end = self.expect_op(")").end
                per = {"SECOND": "PT1S", "MINUTE": "PT1M", "HOUR": "PT1H", "DAY": "P1D", "WEEK": "P1W",
                       "MONTH": "P1M", "QUARTER": "P3M", "YEAR": "P1Y"}.get(unit)
                if per is None:
                    raise self.error()
                return N("func", t.pos, end, name="TIME_FLOOR" if u == "FLOOR" else "TIME_CEIL",
                         args=[e, N("str", val=per)], distinct=False, star=False)
            self.i = save
        if self.is_op_at(1, "(") and (u not in RESERVED or u in FUNC_KEYWORDS):
            self.next()
            self.next()
            args, distinct, star = [], False, False
            if self.accept_op("*"):
                star = True
            elif not self.is_op(")"):
                if self.accept_kw("DISTINCT"):
                    distinct = True
                args.append(self.expr())
                while self.accept_op(","):
                    args.append(self.expr())
            end = self.expect_op(")").end
            return N("func", t.pos, end, name=u, args=args, distinct=distinct, star=star)
        return self.column_ref()

    def case(self):
        t = self.next()
        operand = None
        if not self.is_kw("WHEN"):
            operand = self.expr()
        whens = []
        while self.accept_kw("WHEN"):
            c = self.expr()
            self.expect_kw("THEN")
            whens.append((c, self.expr()))
        if not whens:
            raise self.error()
        els = self.expr() if self.accept_kw("ELSE") else None
        end = self.expect_kw("END").end
        return N("case", t.pos, end, operand=operand, whens=whens, els=els)

    def column_ref(self):
        name, tok = self.ident()
        end = tok.end
        quals = []
        while self.is_op(".") and self.peek().kind in ("qid", "word"):
            self.next()
            quals.append(name)
            name, t2 = self.ident()
            end = t2.end
        return N("col", tok.pos, end, name=name, quals=quals)


# ---------------------------------------------------------------------------
# Catalog and storage
# ---------------------------------------------------------------------------


class Column:
    __slots__ = ("name", "t", "internal")

    def __init__(self, name, t, internal):
        self.name, self.t, self.internal = name, t, internal


class Table:
    """A datasource (or a system table).  A datasource's rows live in two SQLite tables:
    ``sqlite_name`` holds exactly the rows queries see (rows of segments the Broker's
    timeline uses), ``hidden_name`` the rows of segments that are unavailable or
    overshadowed, so queries on datasources run unchanged and no slower.  Both carry
    the segment key in the extra column "sg"; ``columns`` never lists it."""

    def __init__(self, name, schema, sqlite_name):
        self.name, self.schema, self.sqlite_name = name, schema, sqlite_name
        self.columns = []
        self.hidden = False
        self.granularity = "DAY"  # segment granularity of new time chunks
        self.segs = {}  # segment key -> Segment: the used segments (published) and realtime ones
        self.had_segments = False
        self.listed = True  # in the catalog: Druid lists a datasource only while it has served segments
        self.rows_unknown = False  # every segment reports num_rows 0 (Broker metadata not refreshed)
        self.segments_hidden = False  # fault: sys.segments shows none of its segments
        self.active = []  # Coordinator timeline: sorted disjoint (start, end, group key) winning pieces
        self.active_starts = []
        self.groups = {}  # (start, end, version) -> [published Segment]
        self.rt = []  # realtime segments
        self.max_parts = 0  # most queryable historical partitions in one chunk
        self.used_starts, self.used_ends = [], []  # merged intervals of all used segments
        self.schema_json = None  # (column count, dimensions JSON, metrics JSON) for new segments

    @property
    def hidden_name(self):
        return self.sqlite_name + "h"

    def col(self, name):
        for c in self.columns:
            if c.name == name:
                return c
        return None


def sqlite_affinity(t):
    if t.sql in ("TIMESTAMP", "DATE", "BOOLEAN") or t.sql in INT_TYPES:
        return "INTEGER"
    if t.sql in FLOAT_TYPES:
        # No affinity: REAL affinity would be fine, but text 'NaN' must stay text
        # (SQLite silently turns a bound NaN into NULL).
        return ""
    return "TEXT"


def convert_value(v, t, name="?"):
    """JSON value from the control API / loader -> stored SQLite value."""
    if v is None:
        return None
    s = t.sql
    if s in ("TIMESTAMP", "DATE"):
        ms = to_millis(v)
        return ms // DAY_MS * DAY_MS if s == "DATE" else ms
    if s in ("VARCHAR", "CHAR"):
        if isinstance(v, list):
            # Multi-value string: one value is a plain string, none is null, several
            # are stored as the JSON array text that Druid emits for them.
            vals = [None if e is None else (e if isinstance(e, str) else jdump(e).strip('"')) for e in v]
            if not vals:
                return None
            if len(vals) == 1:
                return vals[0]
            return jdump(vals)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return java_double(v)
        if isinstance(v, dict):
            return jdump(v)
        return str(v)
    if s in INT_TYPES:
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, float):
            return int(v)
        return int(v)
    if s == "BOOLEAN":
        if isinstance(v, str):
            return 1 if v.lower() == "true" else 0
        return 1 if v else 0
    if s in FLOAT_TYPES:
        if isinstance(v, str):
            f = {"nan": math.nan, "infinity": math.inf, "-infinity": -math.inf}.get(v.lower())
            if f is None:
                f = float(v)
        else:
            f = float(v)
        if s in ("FLOAT", "REAL"):
            f = to_float32(f)
        return "NaN" if math.isnan(f) else f
    if s == "ARRAY":
        if not isinstance(v, list):
            v = [v]
        el = t.native[6:-1]
        if el == "DOUBLE":
            v = [None if e is None else float(e) for e in v]
        elif el == "LONG":
            v = [None if e is None else int(e) for e in v]
        elif el == "STRING":
            v = [None if e is None else (e if isinstance(e, str) else jdump(e).strip('"')) for e in v]
        return jdump(v)
    if s == "OTHER":
        return jdump(v)
    raise ValueError("cannot store value for column %s" % name)


def infer_array_native(values):
    kinds = set()
    for v in values:
        if isinstance(v, list):
            for e in v:
                if e is None:
                    continue
                kinds.add("b" if isinstance(e, bool) else "i" if isinstance(e, int) else
                          "f" if isinstance(e, float) else "s")
    if kinds and kinds <= {"i"}:
        return "ARRAY<LONG>"
    if kinds and kinds <= {"i", "f"}:
        return "ARRAY<DOUBLE>"
    return "ARRAY<STRING>"


def read_ndjson(path, limit=None):
    opener = gzip.open if path.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def infer_columns(rows):
    """Loader type inference (see the brief): returns [(name, T)] with __time first."""
    order, kinds = [], {}
    for r in rows:
        for k, v in r.items():
            if k not in kinds:
                kinds[k] = set()
                order.append(k)
            if v is None:
                continue
            kinds[k].add("b" if isinstance(v, bool) else "i" if isinstance(v, int) else
                          "f" if isinstance(v, float) else "l" if isinstance(v, list) else
                          "d" if isinstance(v, dict) else "s")
    time_field = "time" if "time" in kinds else "timestamp" if "timestamp" in kinds else \
        "__time" if "__time" in kinds else None
    cols = [("__time", tsimple("TIMESTAMP"), time_field)]
    for k in order:
        if k == time_field:
            continue
        ks = kinds[k]
        if ks and ks <= {"i"}:
            t = tsimple("BIGINT")
        elif ks and ks <= {"i", "f"}:
            t = tsimple("DOUBLE")
        elif ks == {"d"}:
            t = type_from_name("COMPLEX<json>")
        else:
            t = tsimple("VARCHAR")
        cols.append((k, t, k))
    return cols


# --- segments (shared/reference/druid-segments.md) ---------------------------------

# JodaUtils.MIN_INSTANT / MAX_INSTANT bound ALL-granularity segments.  Joda prints the
# minimum one day later than the proleptic calendar of fmt_ts does (its leap-year
# arithmetic for huge negative years); these are Druid's strings (reference 6.2).
MIN_INSTANT = -4611686018427387904
MAX_INSTANT = 4611686018427387903
_INSTANT_TEXT = {MIN_INSTANT: "-146136543-09-08T08:23:32.096Z", MAX_INSTANT: "146140482-04-24T15:36:27.903Z"}

GRANULARITIES = {
    "SECOND": "PT1S", "MINUTE": "PT1M", "FIVE_MINUTE": "PT5M", "TEN_MINUTE": "PT10M",
    "FIFTEEN_MINUTE": "PT15M", "THIRTY_MINUTE": "PT30M", "HOUR": "PT1H", "SIX_HOUR": "PT6H",
    "EIGHT_HOUR": "PT8H", "DAY": "P1D", "WEEK": "P1W", "MONTH": "P1M", "QUARTER": "P3M", "YEAR": "P1Y",
    "ALL": None}
# Segment allocation tries finer granularities, in this order, when the preferred
# chunk of a new row would overlap existing segments of other bounds (as Druid's does).
_GRAN_FALLBACK = ["YEAR", "QUARTER", "MONTH", "WEEK", "DAY", "EIGHT_HOUR", "SIX_HOUR", "HOUR", "THIRTY_MINUTE",
                  "FIFTEEN_MINUTE", "TEN_MINUTE", "FIVE_MINUTE", "MINUTE", "SECOND"]


def fmt_instant(ms):
    """An interval bound as Druid prints it in sys.segments and segment ids."""
    return _INSTANT_TEXT.get(ms) or fmt_ts(ms)


def granularity_name(g):
    u = str(g or "").strip().upper()
    if u not in GRANULARITIES:
        raise ValueError("unknown segment granularity [%s]" % (g,))
    return u


def chunk_of(ms, g):
    """The time chunk [start, end) of granularity g holding instant ms."""
    p = GRANULARITIES[g]
    if p is None:
        return MIN_INSTANT, MAX_INSTANT
    a = time_floor(ms, p)
    return a, time_ceil(a + 1, p)


def _subtract(a, b, starts, ends):
    """[a, b) minus the sorted disjoint intervals (starts, ends): a list of pieces."""
    i = bisect.bisect_right(ends, a)
    out, cur = [], a
    while i < len(starts) and starts[i] < b:
        if starts[i] > cur:
            out.append((cur, starts[i]))
        cur = max(cur, ends[i])
        i += 1
    if cur < b:
        out.append((cur, b))
    return out


def _add(a, b, starts, ends):
    i = bisect.bisect_left(ends, a)
    j = i
    while j < len(starts) and starts[j] <= b:
        a, b = min(a, starts[j]), max(b, ends[j])
        j += 1
    starts[i:j] = [a]
    ends[i:j] = [b]


def _minus(pieces, other):
    """Pieces (sorted disjoint) minus other pieces."""
    if not other:
        return list(pieces)
    starts, ends = [p[0] for p in other], [p[1] for p in other]
    out = []
    for a, b in pieces:
        out.extend(_subtract(a, b, starts, ends))
    return out


def _timeline(groups, complete, contributes=None):
    """Druid's VersionedIntervalTimeline over partition sets.  groups: {(start, end,
    version): segments}; complete: {key: bool} (all core partitions present).  Returns
    {key: pieces of its interval not covered by a complete set of a higher version}.
    An empty list means overshadowed.  Only complete sets (and, when given, only keys
    in ``contributes``) cover others."""
    keys = sorted(groups, key=lambda k: k[0])
    keys.sort(key=lambda k: k[2], reverse=True)  # stable: by version down, then start up
    starts, ends = [], []
    res = {}
    i, n = 0, len(keys)
    while i < n:
        v = keys[i][2]
        j = i
        while j < n and keys[j][2] == v:
            j += 1
        for k in keys[i:j]:
            res[k] = _subtract(k[0], k[1], starts, ends)
        for k in keys[i:j]:
            if complete[k] and (contributes is None or k in contributes):
                _add(k[0], k[1], starts, ends)
        i = j
    return res


class Segment:
    """One segment: a partition of one version of one time chunk."""
    __slots__ = ("key", "ds", "start", "end", "version", "pnum", "core", "kind", "published", "realtime",
                 "want_available", "rf", "nrows", "size", "rows_unknown", "dims", "mets", "compaction",
                 "vis", "served", "overshadowed")

    def __init__(self, key, ds, start, end, version, pnum, core):
        self.key, self.ds, self.start, self.end = key, ds, start, end
        self.version, self.pnum, self.core = version, pnum, core
        self.kind = "numbered"
        self.published, self.realtime = True, False
        self.want_available = True  # load rules and historicals would serve it
        self.rf = 1  # replication factor from the load rules (0: deep storage only)
        self.nrows, self.size = 0, 0
        self.rows_unknown = False
        self.dims = self.mets = "[]"
        self.compaction = None
        self.vis = []  # pieces of [start, end) whose rows are in the queryable table
        self.served = False
        self.overshadowed = False

    @property
    def sid(self):
        s = "%s_%s_%s_%s" % (self.ds, fmt_instant(self.start), fmt_instant(self.end), self.version)
        return s + "_%d" % self.pnum if self.pnum else s

    @property
    def shard_spec(self):
        if self.kind == "tombstone":
            return '{"type":"tombstone","partitionNum":0,"partitions":1}'
        return '{"type":"numbered","partitionNum":%d,"partitions":%d}' % (self.pnum, self.core)

    def info(self):
        return {"segment_id": self.sid, "start": fmt_instant(self.start), "end": fmt_instant(self.end),
                "version": self.version, "partition_num": self.pnum, "core_partitions": self.core,
                "kind": self.kind, "published": self.published, "realtime": self.realtime,
                "available": self.served, "load_wanted": self.want_available, "overshadowed": self.overshadowed,
                "replication_factor": self.rf, "rows": self.nrows, "size": self.size,
                "queryable": [[fmt_instant(a), fmt_instant(b)] for a, b in self.vis]}


class Store:
    """All datasources in one in-memory SQLite connection, with Druid's segment model.

    Access is serialised by ``lock``; a query holds it only while it executes and
    while it fetches the next batch of rows, so several queries stream at once.
    Replaced/dropped tables get fresh SQLite names, and old ones are dropped
    later, because SQLite refuses DROP TABLE while a statement still reads it.

    Every row belongs to exactly one segment.  After each change ``_recompute`` runs
    the Coordinator's view (published segments: overshadowed or not) and the Broker's
    view (served segments: which rows queries see) and moves rows between a
    datasource's queryable and hidden tables accordingly.
    """

    def __init__(self, version="37.0.0"):
        self.lock = threading.RLock()
        self.db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        for name, n, fn in (
                ("d_time_floor", 2, time_floor), ("d_time_ceil", 2, time_ceil),
                ("d_time_parse", 1, lambda s: parse_time(s) if isinstance(s, str) else None),
                ("d_idiv", 2, _idiv), ("d_fdiv", 2, _fdiv), ("d_imod", 2, _imod),
                ("d_like", 3, _like), ("d_ts_str", 1, lambda v: None if v is None else fmt_sql_ts(v)),
                ("d_num_str", 2, _num_str), ("d_to_ts", 1, _to_ts)):
            self.db.create_function(name, n, fn, deterministic=True)
        self.tables = {}  # datasource name -> Table
        self.system = {}  # (schema, name) -> Table
        self.seq = 0
        self.seg_seq = 0
        self.garbage = []
        self.last_version = 0
        self.system_dirty = True  # INFORMATION_SCHEMA needs a rebuild
        self.segments_dirty = set()  # datasources whose sys.segments rows need a rebuild
        self.segments_forbidden = False  # fault: queries on sys.segments answer 403
        # Rows changed by rebuilding system tables: data_gen() leaves them out, so reading
        # sys.segments does not invalidate the pre-rendered slices of the datasources.
        self.sys_changes = 0
        self.fast = FastSlices(self)
        self.sys_defs = self._sys_defs(_version_tuple(version))
        self._make_system_tables()

    # -- helpers
    def _new_sqlite_name(self):
        self.seq += 1
        return "t%d" % self.seq

    def new_version(self):
        now = int(time.time() * 1000)
        self.last_version = max(now, self.last_version + 1)
        return fmt_ts(self.last_version)

    def _collect_garbage(self):
        keep = []
        for name in self.garbage:
            try:
                self.db.execute('DROP TABLE IF EXISTS "%s"' % name)
            except sqlite3.OperationalError:
                keep.append(name)
        self.garbage = keep

    def _create_sqlite_table(self, table):
        cols = ", ".join('"%s" %s' % (c.internal, sqlite_affinity(c.t)) for c in table.columns)
        self.db.execute('CREATE TABLE "%s" (%s)' % (table.sqlite_name, cols))

    def _create_ds_tables(self, t):
        cols = ", ".join('"%s" %s' % (c.internal, sqlite_affinity(c.t)) for c in t.columns)
        for name in (t.sqlite_name, t.hidden_name):
            self.db.execute('CREATE TABLE "%s" (%s, "sg" INTEGER)' % (name, cols))

    def _index_ds_tables(self, t):
        """After the first bulk insert (cheaper than growing the index row by row)."""
        for name in (t.sqlite_name, t.hidden_name):
            self.db.execute('CREATE INDEX "%s_sg" ON "%s" ("sg")' % (name, name))

    def _txn(self):
        store = self

        class Txn:
            def __enter__(self):
                store.db.execute("BEGIN")

            def __exit__(self, et, ev, tb):
                store.db.execute("ROLLBACK" if et else "COMMIT")
        return Txn()

    @staticmethod
    def _cols_sql(t):
        return ", ".join('"%s"' % c.internal for c in t.columns)

    @staticmethod
    def _tcol(t):
        return t.col("__time").internal

    def _convert(self, t, rows, mapping=None):
        """JSON rows -> stored tuples (lists, in column order); __time missing means 0."""
        cols = t.columns
        fields = [mapping.get(c.name, c.name) if mapping else c.name for c in cols]
        out = []
        for r in rows:
            if not isinstance(r, dict):
                raise ValueError("a row must be a JSON object")
            tup = []
            for c, f in zip(cols, fields):
                v = r.get(f) if f is not None else None
                if c.name == "__time" and v is None:
                    v = 0  # Druid: data without a time is 1970-01-01
                try:
                    tup.append(convert_value(v, c.t, c.name))
                except (ValueError, TypeError) as e:
                    raise ValueError("column %s: %s" % (c.name, e))
            out.append(tup)
        return out

    def _insert_tuples(self, t, table, tuples):
        """tuples: stored values plus the segment key last."""
        if tuples:
            ph = ",".join("?" * (len(t.columns) + 1))
            self.db.executemany('INSERT INTO "%s" (%s, "sg") VALUES (%s)' % (table, self._cols_sql(t), ph), tuples)

    def _schema(self, t):
        if t.schema_json is None or t.schema_json[0] != len(t.columns):
            dims = [c.name for c in t.columns if c.name != "__time" and c.t.sql in ("VARCHAR", "ARRAY")]
            mets = [c.name for c in t.columns if c.name != "__time" and c.t.sql not in ("VARCHAR", "ARRAY")]
            t.schema_json = (len(t.columns), jdump(dims), jdump(mets))
        return t.schema_json

    def _new_seg(self, t, start, end, version, pnum, core, published=True, realtime=False, available=True,
                 kind="numbered", compaction=None):
        self.seg_seq += 1
        s = Segment(self.seg_seq, t.name, start, end, version, pnum, core)
        s.published, s.realtime, s.want_available = published, realtime, available
        s.kind, s.compaction = kind, compaction
        if realtime:
            s.rf = -1  # unknown until published and seen by the load rules
        if kind != "tombstone":
            _n, s.dims, s.mets = self._schema(t)
        else:
            s.size = 1  # Druid publishes tombstones with size 1 and no rows
        t.segs[s.key] = s
        t.had_segments = True
        return s

    def _stats(self, t, segs):
        """Row counts of these segments, from the rows stored for them; sizes later (_sizes)."""
        segs = [s for s in segs if s.kind != "tombstone"]
        if not segs:
            return
        lo, hi = min(s.key for s in segs), max(s.key for s in segs)
        acc = {}
        for name in (t.sqlite_name, t.hidden_name):
            for sg, n in self.db.execute('SELECT "sg", COUNT(*) FROM "%s" WHERE "sg" BETWEEN ? AND ? GROUP BY "sg"'
                                         % name, (lo, hi)):
                acc[sg] = acc.get(sg, 0) + n
        for s in segs:
            s.nrows = acc.get(s.key, 0)
            s.size = None

    def _sizes(self, t):
        """Sizes of the segments that have none yet: deterministic, growing with the content.
        Computed when sys.segments is read, so loading and mutations stay cheap."""
        segs = [s for s in t.segs.values() if s.size is None]
        if not segs:
            return
        lo, hi = min(s.key for s in segs), max(s.key for s in segs)
        width = "+".join('IFNULL(LENGTH("%s"),0)' % c.internal for c in t.columns)
        acc = {}
        for name in (t.sqlite_name, t.hidden_name):
            for sg, w in self.db.execute('SELECT "sg", SUM(%s) FROM "%s" WHERE "sg" BETWEEN ? AND ? GROUP BY "sg"'
                                         % (width, name), (lo, hi)):
                acc[sg] = acc.get(sg, 0) + (w or 0)
        for s in segs:
            s.size = 1024 + 8 * s.nrows * len(t.columns) + acc.get(s.key, 0)

    def _move(self, t, s, src, dst, a, b):
        cols = self._cols_sql(t) + ', "sg"'
        if a <= s.start and b >= s.end:
            cond, args = '"sg" = ?', (s.key,)
        else:
            tc = self._tcol(t)
            cond, args = '"sg" = ? AND "%s" >= ? AND "%s" < ?' % (tc, tc), (s.key, a, b)
        self.db.execute('INSERT INTO "%s" (%s) SELECT %s FROM "%s" WHERE %s ORDER BY rowid'
                        % (dst, cols, cols, src, cond), args)
        self.db.execute('DELETE FROM "%s" WHERE %s' % (src, cond), args)

    def _delete_rows(self, t, s):
        for name in (t.sqlite_name, t.hidden_name):
            self.db.execute('DELETE FROM "%s" WHERE "sg" = ?' % name, (s.key,))

    def _recompute(self, t, cleanup=False):
        """Overshadowing (Coordinator), loading and query visibility (Broker) of every
        segment of t; moves rows so the queryable table holds exactly the visible ones.
        cleanup: overshadowed segments no longer served are marked unused (returns how many)."""
        groups, rts = {}, []
        for s in t.segs.values():
            if s.realtime:
                rts.append(s)
            else:
                groups.setdefault((s.start, s.end, s.version), []).append(s)
        core = {k: max(s.core for s in g) for k, g in groups.items()}

        def complete(k, segs):
            c = core[k]
            if c == 0:
                return True
            have = {s.pnum for s in segs}
            return all(i in have for i in range(c))

        comp = {k: complete(k, g) for k, g in groups.items()}
        pieces = _timeline(groups, comp)
        act = []
        for k, g in groups.items():
            over = not pieces[k]
            for s in g:
                s.overshadowed = over
            if comp[k]:
                act.extend((a, b, k) for a, b in pieces[k])
        act.sort()
        t.active, t.active_starts, t.groups, t.rt = act, [x[0] for x in act], groups, rts
        # Loaded: what the load rules place (not overshadowed), plus overshadowed segments whose
        # overshadowing sets are not all loaded yet (the Coordinator drops them only then).
        want = {}
        for k, g in groups.items():
            ss = [s for s in g if s.want_available and s.rf != 0]
            if ss:
                want[k] = ss
        wcomp = {k: complete(k, ss) for k, ss in want.items()}
        # Historicals keep an overshadowed segment they serve until what overshadows it is
        # loaded; nothing loads an overshadowed segment anew.
        fresh = {k for k in want if pieces[k]}
        kept = _timeline(want, wcomp, contributes=fresh)
        served = {}
        for k, ss in want.items():
            if k not in fresh and kept[k]:
                ss = [s for s in ss if s.served]
            if k in fresh or (kept[k] and ss):
                served[k] = ss
        scomp = {k: complete(k, ss) for k, ss in served.items()}
        vis = _timeline(served, scomp)
        # The Coordinator marks unused what is overshadowed by loaded segments only.
        loaded_cover = _timeline(groups, {k: k in served and scomp[k] for k in groups}) if cleanup else None
        unused = 0
        for k, g in list(groups.items()):
            ss = served.get(k)
            keys = {s.key for s in ss} if ss else ()
            vp = vis[k] if ss and scomp[k] else []
            for s in list(g):
                s.served = s.key in keys
                if cleanup and s.overshadowed and not s.served and not loaded_cover[k]:
                    self._unuse(t, [s])
                    g.remove(s)
                    unused += 1
                    continue
                nv = vp if s.served else []
                if nv != s.vis:
                    for a, b in _minus(s.vis, nv):
                        self._move(t, s, t.sqlite_name, t.hidden_name, a, b)
                    for a, b in _minus(nv, s.vis):
                        self._move(t, s, t.hidden_name, t.sqlite_name, a, b)
                    s.vis = nv
        for s in rts:  # served by their task, and announced at the chunk's newest version
            s.served = True
            nv = [(s.start, s.end)]
            if s.vis != nv:
                self._move(t, s, t.hidden_name, t.sqlite_name, s.start, s.end)
                s.vis = nv
        per_chunk = {}
        for s in t.segs.values():
            if s.vis and not s.realtime:  # historicals' partitions per chunk (check_scan_order)
                per_chunk[(s.start, s.end)] = per_chunk.get((s.start, s.end), 0) + 1
        t.max_parts = max(per_chunk.values(), default=0)
        ivs = sorted((s.start, s.end) for s in t.segs.values())
        t.used_starts, t.used_ends = [], []
        for a, b in ivs:
            if t.used_starts and a <= t.used_ends[-1]:
                t.used_ends[-1] = max(t.used_ends[-1], b)
            else:
                t.used_starts.append(a)
                t.used_ends.append(b)
        listed = not t.had_segments or bool(rts) or any(s.served for s in t.segs.values())
        if listed != t.listed:
            t.listed = listed
            self.system_dirty = True
        self.segments_dirty.add(t.name)
        if unused:
            t.groups = {k: g for k, g in groups.items() if g}
        return unused

    # -- chunk lookups
    def _covering(self, t, ms):
        """(start, end, version) of the active chunk holding ms (its newest version), or None."""
        i = bisect.bisect_right(t.active_starts, ms) - 1
        best = None
        if i >= 0 and t.active[i][0] <= ms < t.active[i][1]:
            k = t.active[i][2]
            best = (k[0], k[1], k[2])
        for s in t.rt:
            if s.start <= ms < s.end and (best is None or s.version > best[2]):
                best = (s.start, s.end, s.version)
        return best

    def _alloc_chunk(self, t, ms, pending):
        """A new chunk for ms: the datasource's granularity, or a finer one where that
        would overlap segments of other bounds."""
        for a, b in pending:
            if a <= ms < b:
                return a, b
        g = t.granularity
        cands = [g] if g not in _GRAN_FALLBACK else _GRAN_FALLBACK[_GRAN_FALLBACK.index(g):]
        for x in cands:
            a, b = chunk_of(ms, x)
            if _subtract(a, b, t.used_starts, t.used_ends) == [(a, b)] and \
                    not any(pa < b and a < pb for pa, pb in pending):
                pending.append((a, b))
                return a, b
        a, b = chunk_of(ms, cands[-1])
        pending.append((a, b))
        return a, b

    def _pieces_in(self, t, a, b):
        """Active pieces (lo, hi, group key) of the Coordinator timeline inside [a, b)."""
        i = max(0, bisect.bisect_right(t.active_starts, a) - 1)
        out = []
        for pa, pb, k in t.active[i:]:
            if pa >= b:
                break
            lo, hi = max(pa, a), min(pb, b)
            if lo < hi:
                out.append((lo, hi, k))
        return out

    def _logical(self, t, a, b, exclude=None):
        """(sql, args) fragments selecting the current rows of [a, b) — the rows of its
        active published segments, available or not — from each of the two tables."""
        tc = self._tcol(t)
        parts = []
        for lo, hi, k in self._pieces_in(t, a, b):
            for s in t.groups[k]:
                cond = '"sg" = ? AND "%s" >= ? AND "%s" < ?' % (tc, tc)
                args = [s.key, lo, hi]
                if exclude:
                    cond += ' AND NOT ("%s" >= ? AND "%s" < ?)' % (tc, tc)
                    args += list(exclude)
                parts.append((cond, args))
        return parts

    def _count_logical(self, t, a, b, exclude=None):
        n = 0
        for cond, args in self._logical(t, a, b, exclude):
            for name in (t.sqlite_name, t.hidden_name):
                n += self.db.execute('SELECT COUNT(*) FROM "%s" WHERE %s' % (name, cond), args).fetchone()[0]
        return n

    def _copy_logical(self, t, a, b, dst, first_key, nparts, exclude=None):
        """Copy the current rows of [a, b) into dst for new segments first_key ..
        first_key + nparts - 1 (spread by row).  Returns the number of rows."""
        cols = self._cols_sql(t)
        n = 0
        for cond, args in self._logical(t, a, b, exclude):
            for name in (t.sqlite_name, t.hidden_name):
                cur = self.db.execute('INSERT INTO "%s" (%s, "sg") SELECT %s, ? + (rowid %% ?) FROM "%s" WHERE %s '
                                      'ORDER BY rowid' % (dst, cols, cols, name, cond), [first_key, nparts] + args)
                n += max(cur.rowcount, 0)
        return n

    def _relabel_logical(self, t, a, b, new_key, exclude=None):
        """Hand the current rows of [a, b) (minus the excluded interval) to segment new_key,
        in place (their order kept), into the queryable table.  For rewrites whose old
        segments are marked unused at once.  Returns the number of rows."""
        n = 0
        for cond, args in self._logical(t, a, b, exclude):
            for name in (t.sqlite_name, t.hidden_name):
                cur = self.db.execute('UPDATE "%s" SET "sg" = ? WHERE %s' % (name, cond), [new_key] + args)
                n += max(cur.rowcount, 0)
        cols = self._cols_sql(t) + ', "sg"'
        if self.db.execute('SELECT 1 FROM "%s" WHERE "sg" = ? LIMIT 1' % t.hidden_name, (new_key,)).fetchone():
            self.db.execute('INSERT INTO "%s" (%s) SELECT %s FROM "%s" WHERE "sg" = ? ORDER BY rowid'
                            % (t.sqlite_name, cols, cols, t.hidden_name), (new_key,))
            self.db.execute('DELETE FROM "%s" WHERE "sg" = ?' % t.hidden_name, (new_key,))
        return n

    def _unuse(self, t, segs):
        for s in segs:
            self._delete_rows(t, s)
            del t.segs[s.key]

    def _merge_chunks(self, chunks):
        """Overlapping chunk intervals -> their unions (a chunk is rewritten whole)."""
        out = []
        for a, b in sorted(chunks):
            if out and a < out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        return out


    # -- datasources (control API)
    def create(self, name, columns, rows, mapping=None, granularity=None, rows_per_segment=None, repeat=None):
        """A datasource from one batch ingestion: one version, each chunk in
        ceil(rows / rows_per_segment) partitions (one without it).  repeat: (n, cycle_ms)
        (see load_file)."""
        with self.lock:
            old = self.tables.get(name)
            gran = granularity_name(granularity) if granularity else (old.granularity if old else "DAY")
            rps = int(rows_per_segment) if rows_per_segment else None
            if rps is not None and rps < 1:
                raise ValueError("rows_per_segment must be at least 1")
            t = Table(name, "druid", self._new_sqlite_name())
            t.granularity = gran
            specs = list(columns)
            if not any(c[0] == "__time" for c in specs):
                specs.insert(0, ("__time", tsimple("TIMESTAMP")))
            for i, (cname, ctype) in enumerate(specs):
                t.columns.append(Column(cname, ctype, "c%d" % i))
            tuples = self._convert(t, rows, mapping)
            ti = t.columns.index(t.col("__time"))
            if repeat is not None:
                tuples = self._cycle(tuples, ti, *repeat)
            self._create_ds_tables(t)
            version = self.new_version()
            by_chunk = {}
            for tup in tuples:
                by_chunk.setdefault(chunk_of(tup[ti], gran), []).append(tup)
            new = []
            for (a, b), lst in sorted(by_chunk.items()):
                nparts = -(-len(lst) // rps) if rps else 1
                segs = [self._new_seg(t, a, b, version, p, nparts) for p in range(nparts)]
                for i, tup in enumerate(lst):
                    tup.append(segs[i // rps if rps else 0].key)
                for s in segs:
                    s.vis = [(a, b)]
                new.extend(segs)
            with self._txn():
                self._insert_tuples(t, t.sqlite_name, tuples)
                self._index_ds_tables(t)
                self._stats(t, new)
                self._recompute(t)
            if old is not None:
                t.hidden = old.hidden
                t.segments_hidden = old.segments_hidden
                t.rows_unknown = old.rows_unknown
                self.garbage += [old.sqlite_name, old.hidden_name]
            self.tables[name] = t
            self.system_dirty = True
            self.segments_dirty.add(name)
            self._collect_garbage()
            return t

    @staticmethod
    def _cycle(tuples, ti, n, cycle_ms):
        """n tuples: these, then copies shifted in time by cycle_ms each (see load_file)."""
        if n < 0:
            raise ValueError("rows must not be negative")
        if not tuples:
            return []
        if cycle_ms is None:
            lo = min(tup[ti] for tup in tuples)
            hi = max(tup[ti] for tup in tuples)
            cycle_ms = ((hi - lo) // DAY_MS + 1) * DAY_MS
        cycle_ms = int(cycle_ms)
        out = []
        k = 0
        while len(out) < n:
            off = k * cycle_ms
            for tup in tuples[:n - len(out)]:
                c = list(tup)
                c[ti] += off
                out.append(c)
            k += 1
        return out

    def load_file(self, name, path, limit=None, granularity=None, rows=None, cycle_ms=None):
        """rows: that many rows, the file's rows cycled: copy k of the file is shifted by
        k * cycle_ms (default: the file's time span rounded up to whole days), so each copy
        lands in chunks of its own (the benchmark's large wikiticker-shaped datasources)."""
        recs = read_ndjson(path, limit)
        cols = infer_columns(recs)
        return self.create(name, [(n, t) for n, t, _f in cols], recs, {n: f for n, _t, f in cols},
                           granularity=granularity, repeat=(int(rows), cycle_ms) if rows is not None else None)

    def generate(self, name, segments, granularity="HOUR", start="2020-01-01T00:00:00Z", rows_per_segment=1,
                 partitions_per_chunk=1):
        """A datasource of `segments` segments (columns __time, n BIGINT, s VARCHAR) in
        consecutive chunks of `partitions_per_chunk` partitions, quickly (scale tests)."""
        with self.lock:
            nseg, rps, ppc = int(segments), int(rows_per_segment), int(partitions_per_chunk)
            if nseg < 1 or rps < 1 or ppc < 1:
                raise ValueError("segments, rows_per_segment and partitions_per_chunk must be at least 1")
            gran = granularity_name(granularity)
            if gran == "ALL" and nseg > ppc:
                raise ValueError("ALL granularity has one chunk: segments must not exceed partitions_per_chunk")
            old = self.tables.get(name)
            t = Table(name, "druid", self._new_sqlite_name())
            t.granularity = gran
            t.columns = [Column("__time", tsimple("TIMESTAMP"), "c0"), Column("n", tsimple("BIGINT"), "c1"),
                         Column("s", tsimple("VARCHAR"), "c2")]
            self._create_ds_tables(t)
            version = self.new_version()
            a = chunk_of(to_millis(start), gran)[0]
            tuples, new, n, left = [], [], 0, nseg
            while left > 0:
                a, b = chunk_of(a, gran)
                parts = min(ppc, left)
                for p in range(parts):
                    s = self._new_seg(t, a, b, version, p, parts)
                    s.vis = [(a, b)]
                    new.append(s)
                    span = min(b - a, 86400000 * 366) if gran == "ALL" else b - a
                    base = 0 if gran == "ALL" else a
                    for r in range(rps):
                        ms = base + ((p * rps + r) * span) // (parts * rps)
                        tuples.append((ms, n, "s%d" % (n % 7), s.key))
                        n += 1
                left -= parts
                a = b
            with self._txn():
                self._insert_tuples(t, t.sqlite_name, tuples)
                self._index_ds_tables(t)
                self._stats(t, new)
                self._recompute(t)
            if old is not None:
                t.hidden = old.hidden
                self.garbage += [old.sqlite_name, old.hidden_name]
            self.tables[name] = t
            self.system_dirty = True
            self.segments_dirty.add(name)
            self._collect_garbage()
            return [s.sid for s in new[:3]], len(new)

    def get(self, name):
        t = self.tables.get(name)
        if t is None:
            raise KeyError("no such datasource [%s]" % name)
        return t

    def _rewrite(self, t, chunks, exclude=None):
        """Rewrite chunks at one new version (a batch re-ingestion of them): their current
        rows (minus those in the excluded interval) plus the new tuples given per chunk.
        Chunks left without rows are dropped.  What this overshadows is marked unused at
        once (the Coordinator's cleanup), so the segment list stays one version per chunk."""
        version = self.new_version()
        tc_i = t.columns.index(t.col("__time"))
        merged = self._merge_chunks(chunks)
        new, empty = [], []
        with self._txn():
            tc = self._tcol(t)
            for a, b in merged:
                rows = [tup for (ca, cb), lst in chunks.items() if a <= ca and cb <= b for tup in lst]
                pieces = self._pieces_in(t, a, b)
                one = t.groups[pieces[0][2]] if len(pieces) == 1 and pieces[0][2][:2] == (a, b) else ()
                if len(one) == 1 and one[0].served and one[0].vis == [(a, b)] and one[0].kind == "numbered":
                    # The chunk is one fully served segment: the rewritten segment takes its place
                    # (same rows, in place), which is what rewrite + cleanup would leave.
                    s = one[0]
                    n = s.nrows
                    if exclude:
                        n -= self.db.execute('DELETE FROM "%s" WHERE "sg" = ? AND "%s" >= ? AND "%s" < ?'
                                             % (t.sqlite_name, tc, tc), (s.key, exclude[0], exclude[1])).rowcount
                    s.version, s.pnum, s.core, s.compaction = version, 0, 1, None
                    _n, s.dims, s.mets = self._schema(t)
                else:
                    s = self._new_seg(t, a, b, version, 0, 1)
                    n = self._relabel_logical(t, a, b, s.key, exclude)
                for tup in rows:
                    assert a <= tup[tc_i] < b
                    tup.append(s.key)
                self._insert_tuples(t, t.sqlite_name, rows)
                if n + len(rows) == 0:
                    self._unuse(t, [s])
                    empty.append((a, b))
                    continue
                s.vis = [(a, b)]
                new.append(s)
            self._stats(t, new)
            for a, b in empty:
                self._unuse(t, [s for s in t.segs.values() if s.published and a <= s.start and s.end <= b])
            self._recompute(t, cleanup=True)

    def _chunks_with_rows(self, t, lo, hi):
        """{chunk: []} for the active chunks holding current rows inside [lo, hi)."""
        out = {}
        for pa, pb, k in self._pieces_in(t, lo, hi):
            if (k[0], k[1]) not in out and self._count_logical(t, pa, pb):
                out[(k[0], k[1])] = []
        return out

    def _target_chunks(self, t, tuples, chunks=None):
        ti = t.columns.index(t.col("__time"))
        chunks = {} if chunks is None else chunks
        pending = []
        for tup in tuples:
            c = self._covering(t, tup[ti])
            key = (c[0], c[1]) if c else self._alloc_chunk(t, tup[ti], pending)
            chunks.setdefault(key, []).append(tup)
        return chunks

    def append(self, name, rows):
        """Rows added; every chunk they touch is re-ingested at a new version."""
        with self.lock:
            t = self.get(name)
            tuples = self._convert(t, rows)
            self._rewrite(t, self._target_chunks(t, tuples))
            return len(rows)

    def delete(self, name, start, end):
        """Rows in [start, end) removed: the chunks holding them are re-ingested without
        them at a new version; chunks left empty are dropped."""
        with self.lock:
            t = self.get(name)
            lo, hi = to_millis(start), to_millis(end)
            n = self._count_logical(t, lo, hi)
            self._rewrite(t, self._chunks_with_rows(t, lo, hi), exclude=(lo, hi))
            return n

    def replace(self, name, start, end, rows):
        with self.lock:
            t = self.get(name)
            lo, hi = to_millis(start), to_millis(end)
            tuples = self._convert(t, rows)
            ti = t.columns.index(t.col("__time"))
            for tup in tuples:
                if not lo <= tup[ti] < hi:
                    raise ValueError("row time %s outside the replaced interval" % fmt_ts(tup[ti]))
            self._rewrite(t, self._target_chunks(t, tuples, self._chunks_with_rows(t, lo, hi)), exclude=(lo, hi))
            return len(rows)

    def _next_pnum(self, t, a, b, version):
        return 1 + max([s.pnum for s in t.segs.values() if (s.start, s.end, s.version) == (a, b, version)],
                       default=-1)

    def _group_core(self, t, a, b, version):
        return max([s.core for s in t.segs.values() if (s.start, s.end, s.version) == (a, b, version)],
                   default=0)

    def late_append(self, name, rows, realtime=False):
        """Rows appended as streaming/append ingestion does: one new partition per chunk
        touched, at the chunk's current version (realtime: added to the chunk's open
        realtime segment if there is one).  New chunks get a new version, partition 0."""
        with self.lock:
            t = self.get(name)
            tuples = self._convert(t, rows)
            ti = t.columns.index(t.col("__time"))
            version = None
            targets, pending = {}, []
            for tup in tuples:
                c = self._covering(t, tup[ti])
                if c is None:
                    version = version or self.new_version()
                    a, b = self._alloc_chunk(t, tup[ti], pending)
                    c = (a, b, version)
                targets.setdefault(c, []).append(tup)
            touched = []
            with self._txn():
                for (a, b, v), lst in sorted(targets.items()):
                    s = None
                    if realtime:
                        open_ = [x for x in t.segs.values() if x.realtime and (x.start, x.end, x.version) == (a, b, v)]
                        s = max(open_, key=lambda x: x.pnum) if open_ else None
                    if s is None:
                        s = self._new_seg(t, a, b, v, self._next_pnum(t, a, b, v), self._group_core(t, a, b, v),
                                          published=not realtime, realtime=realtime)
                        s.vis = [(a, b)]
                    for tup in lst:
                        tup.append(s.key)
                    self._insert_tuples(t, t.sqlite_name, lst)
                    touched.append(s)
                self._stats(t, touched)
                self._recompute(t)
            return [s.sid for s in touched]

    def handoff(self, name, start=None, end=None):
        """Realtime segments (overlapping [start, end), or all) are published and loaded.
        One whose chunk got a newer version meanwhile (a compaction or reindex ran
        concurrently) is published upgraded to it: a new id."""
        with self.lock:
            t = self.get(name)
            lo = to_millis(start) if start is not None else MIN_INSTANT
            hi = to_millis(end) if end is not None else MAX_INSTANT
            out = []
            with self._txn():
                for s in sorted((x for x in t.segs.values() if x.realtime and x.start < hi and lo < x.end),
                                key=lambda x: x.key):
                    old = s.sid
                    c = self._covering_published(t, s)
                    if c is not None:
                        a, b, v = c
                        s.pnum = self._next_pnum(t, a, b, v)
                        s.core = self._group_core(t, a, b, v)
                        s.start, s.end, s.version = a, b, v
                    s.realtime, s.published, s.want_available, s.rf = False, True, True, 1
                    out.append([old, s.sid])
                self._recompute(t)
            return out

    def _covering_published(self, t, s):
        best = None
        for lo, hi, k in self._pieces_in(t, s.start, s.end):
            if k[0] <= s.start and s.end <= k[1] and k[2] > s.version and (best is None or k[2] > best[2]):
                best = k
        return best

    def compact(self, name, start, end, granularity=None, partitions=1, available=True):
        """Compaction: the current rows of the chunks in [start, end) written again at a new
        version, merged into `partitions` partitions per chunk; with `granularity`, in
        chunks of that granularity (which must cover whole segments).  available=False:
        published but not loaded yet (queries keep reading the old version)."""
        with self.lock:
            t = self.get(name)
            lo, hi = to_millis(start), to_millis(end)
            nparts = int(partitions)
            if nparts < 1:
                raise ValueError("partitions must be at least 1")
            pieces = self._pieces_in(t, lo, hi)
            if granularity:
                g = granularity_name(granularity)
                a0, b0 = chunk_of(lo, g)[0], chunk_of(hi - 1, g)[1]
                pieces = self._pieces_in(t, a0, b0)
                for _pa, _pb, k in pieces:
                    if k[0] < a0 or k[1] > b0:
                        raise ValueError("segments of %s/%s extend beyond the compacted interval %s/%s"
                                         % (fmt_instant(k[0]), fmt_instant(k[1]), fmt_instant(a0), fmt_instant(b0)))
                chunks = set()
                for pa, pb, _k in pieces:
                    a = chunk_of(pa, g)[0]
                    while a < pb:
                        b = chunk_of(a, g)[1]
                        chunks.add((a, b))
                        a = b
                chunks = sorted(chunks)
            else:
                g = None
                chunks = self._merge_chunks({(k[0], k[1]) for _a, _b, k in pieces})
            version = self.new_version()
            dst = t.sqlite_name if available else t.hidden_name
            new = []
            with self._txn():
                for a, b in chunks:
                    n = self._count_logical(t, a, b)
                    if n == 0:
                        continue
                    p = min(nparts, n)
                    state = self._compaction_state(t, g or self._gran_of(a, b), p)
                    segs = [self._new_seg(t, a, b, version, i, p, available=available, compaction=state)
                            for i in range(p)]
                    self._copy_logical(t, a, b, dst, segs[0].key, p)
                    for s in segs:
                        s.vis = [(a, b)] if available else []
                    new.extend(segs)
                self._stats(t, new)
                self._recompute(t)
            return [s.sid for s in new]

    @staticmethod
    def _gran_of(a, b):
        for g, p in GRANULARITIES.items():
            if chunk_of(a, g) == (a, b):
                return g
        return "NONE"

    def _compaction_state(self, t, gran, nparts):
        dims = [{"type": "string", "name": c.name, "multiValueHandling": "SORTED_ARRAY", "createBitmapIndex": True}
                if c.t.sql in ("VARCHAR", "ARRAY") else
                {"type": c.t.native.lower() if c.t.native in ("LONG", "FLOAT", "DOUBLE") else "json", "name": c.name,
                 "multiValueHandling": "SORTED_ARRAY", "createBitmapIndex": False}
                for c in t.columns if c.name != "__time"]
        return jdump({
            "partitionsSpec": {"type": "dynamic", "maxRowsPerSegment": 5000000, "maxTotalRows": None},
            "dimensionsSpec": {"dimensions": dims},
            "metricsSpec": [],
            "transformSpec": {"filter": None},
            "indexSpec": {"bitmap": {"type": "roaring"}, "dimensionCompression": "lz4",
                          "stringDictionaryEncoding": {"type": "utf8"}, "metricCompression": "lz4",
                          "longEncoding": "longs"},
            "granularitySpec": {"type": "uniform", "segmentGranularity": gran, "queryGranularity": {"type": "none"},
                                "rollup": False, "intervals": []}})

    def reindex(self, name, start, end, rows, granularity=None, partitions=1, available=True,
                empty_chunks="tombstone"):
        """Re-ingestion of [start, end) (aligned to the granularity) with these rows, at a
        new version.  Chunks of the interval that had data but get no rows: a tombstone
        (MSQ REPLACE), 'drop' (their segments marked unused) or 'keep' (old data stays)."""
        with self.lock:
            t = self.get(name)
            g = granularity_name(granularity) if granularity else t.granularity
            if empty_chunks not in ("tombstone", "drop", "keep"):
                raise ValueError("empty_chunks must be tombstone, drop or keep")
            nparts = int(partitions)
            if nparts < 1:
                raise ValueError("partitions must be at least 1")
            lo, hi = to_millis(start), to_millis(end)
            if g == "ALL":
                lo, hi = MIN_INSTANT, MAX_INSTANT
            elif chunk_of(lo, g)[0] != lo or chunk_of(hi - 1, g)[1] != hi or hi <= lo:
                raise ValueError("interval %s/%s is not aligned with the %s granularity" % (start, end, g))
            tuples = self._convert(t, rows)
            ti = t.columns.index(t.col("__time"))
            by_chunk = {}
            for tup in tuples:
                if not lo <= tup[ti] < hi:
                    raise ValueError("row time %s outside the reindexed interval" % fmt_ts(tup[ti]))
                by_chunk.setdefault(chunk_of(tup[ti], g), []).append(tup)
            old = set()
            for pa, pb, _k in self._pieces_in(t, lo, hi):
                a = chunk_of(pa, g)[0]
                while a < pb:
                    b = chunk_of(a, g)[1]
                    old.add((a, b))
                    a = b
            version = self.new_version()
            dst = t.sqlite_name if available else t.hidden_name
            new, out = [], []
            with self._txn():
                for a, b in sorted(old | set(by_chunk)):
                    lst = by_chunk.get((a, b))
                    if lst:
                        p = min(nparts, len(lst))
                        segs = [self._new_seg(t, a, b, version, i, p, available=available) for i in range(p)]
                        for i, tup in enumerate(lst):
                            tup.append(segs[i % p].key)
                        self._insert_tuples(t, dst, lst)
                    elif empty_chunks == "tombstone":
                        segs = [self._new_seg(t, a, b, version, 0, 1, available=available, kind="tombstone")]
                    else:
                        if empty_chunks == "drop":
                            self._unuse(t, [s for s in t.segs.values()
                                            if s.published and a <= s.start and s.end <= b])
                        continue
                    for s in segs:
                        s.vis = [(a, b)] if available else []
                    new.extend(segs)
                self._stats(t, new)
                self._recompute(t)
            return [s.sid for s in new]

    def drop_interval(self, name, start, end):
        """Published segments contained in [start, end) are marked unused (retention, kill)."""
        with self.lock:
            t = self.get(name)
            lo, hi = to_millis(start), to_millis(end)
            gone = [s for s in t.segs.values() if s.published and lo <= s.start and s.end <= hi]
            with self._txn():
                ids = [s.sid for s in gone]
                self._unuse(t, gone)
                self._recompute(t)
            return ids

    def set_available(self, name, start, end, available, partitions=None, replication_factor=None,
                      segment_ids=None):
        """Published segments overlapping [start, end) (only these partition numbers, or
        these segment ids, if given) are loaded on historicals or not; replication_factor
        sets the load rule's replica count (0: deep storage only, never loaded)."""
        with self.lock:
            t = self.get(name)
            lo = to_millis(start) if start is not None else MIN_INSTANT
            hi = to_millis(end) if end is not None else MAX_INSTANT
            parts = None if partitions is None else {int(p) for p in partitions}
            ids = None if segment_ids is None else set(segment_ids)
            hit = [s for s in t.segs.values() if s.published and s.start < hi and lo < s.end
                   and (parts is None or s.pnum in parts) and (ids is None or s.sid in ids)]
            with self._txn():
                for s in hit:
                    s.want_available = bool(available)
                    if replication_factor is not None:
                        s.rf = int(replication_factor)
                self._recompute(t)
            return [s.sid for s in hit]

    def cleanup(self, name):
        with self.lock:
            t = self.get(name)
            with self._txn():
                return self._recompute(t, cleanup=True)

    MAX_ROWS_QUEUED_FOR_ORDERING = 100000
    MAX_PARTITIONS_ORDERED_IN_MEMORY = 50

    def check_scan_order(self, plan):
        """Druid's ScanQueryRunnerFactory: a scan ordered by __time with no limit under
        maxRowsQueuedForOrdering merges the partitions of each time chunk in memory, at most
        maxSegmentPartitionsOrderedInMemory of them (reference 6.3).  The chunks scanned are
        taken as those holding a row that matches the filter (Druid prunes by interval)."""
        t = plan.table
        if not plan.ordered_scan or (plan.scan_limit is not None
                                     and plan.scan_limit < self.MAX_ROWS_QUEUED_FOR_ORDERING):
            return
        if t.max_parts <= self.MAX_PARTITIONS_ORDERED_IN_MEMORY:
            return
        per_chunk = {}
        for s in t.segs.values():
            if s.vis and not s.realtime:
                per_chunk[(s.start, s.end)] = per_chunk.get((s.start, s.end), 0) + 1
        sql = 'SELECT DISTINCT "sg" FROM "%s"' % t.sqlite_name
        if plan.where_sql:
            sql += " WHERE " + plan.where_sql
        n = max([per_chunk.get((t.segs[sg].start, t.segs[sg].end), 0)
                 for (sg,) in self.db.execute(sql, plan.binds) if sg in t.segs], default=0)
        if n > self.MAX_PARTITIONS_ORDERED_IN_MEMORY:
            raise DruidError(
                400, "Time ordering is not supported for a Scan query with %d segments per time chunk and a row "
                     "limit of %d. Try reducing your query limit below maxRowsQueuedForOrdering (currently %s), or "
                     "using compaction to reduce the number of segments per time chunk, or raising "
                     "maxSegmentPartitionsOrderedInMemory (currently %s) above the number of segments per time "
                     "chunk." % (n, plan.scan_limit if plan.scan_limit is not None else 2 ** 63 - 1,
                                 "{:,}".format(self.MAX_ROWS_QUEUED_FOR_ORDERING),
                                 "{:,}".format(self.MAX_PARTITIONS_ORDERED_IN_MEMORY)),
                code="legacyQueryException", persona="OPERATOR", category="INVALID_INPUT", kind="legacy",
                legacy_error="Resource limit exceeded",
                legacy_class="org.apache.druid.query.ResourceLimitExceededException")

    def set_granularity(self, name, granularity):
        with self.lock:
            self.get(name).granularity = granularity_name(granularity)

    def set_num_rows(self, name, known, start=None, end=None):
        """num_rows unknown (0) or known again: for segments overlapping [start, end), or,
        without an interval, for all segments of the datasource, present and future."""
        with self.lock:
            t = self.get(name)
            if start is None and end is None:
                t.rows_unknown = not known
                if known:
                    for s in t.segs.values():
                        s.rows_unknown = False
            else:
                lo = to_millis(start) if start is not None else MIN_INSTANT
                hi = to_millis(end) if end is not None else MAX_INSTANT
                for s in t.segs.values():
                    if s.start < hi and lo < s.end:
                        s.rows_unknown = not known
            self.segments_dirty.add(name)

    def set_segments_hidden(self, name, hidden):
        with self.lock:
            self.get(name).segments_hidden = bool(hidden)
            self.segments_dirty.add(name)

    def clear_segment_faults(self):
        with self.lock:
            self.segments_forbidden = False
            for t in self.tables.values():
                if t.segments_hidden:
                    t.segments_hidden = False
                    self.segments_dirty.add(t.name)

    def segments(self, name):
        with self.lock:
            t = self.get(name)
            self._sizes(t)
            return [s.info() for s in sorted(t.segs.values(), key=lambda s: (s.start, s.version, s.pnum))]

    def add_column(self, name, cname, ctype):
        with self.lock:
            t = self.get(name)
            if t.col(cname):
                raise ValueError("column [%s] already exists" % cname)
            c = Column(cname, ctype, "c%d" % len(t.columns))
            for tn in (t.sqlite_name, t.hidden_name):
                self.db.execute('ALTER TABLE "%s" ADD COLUMN "%s" %s' % (tn, c.internal, sqlite_affinity(ctype)))
            t.columns.append(c)
            self.system_dirty = True

    def hide(self, name, hidden):
        with self.lock:
            self.get(name).hidden = bool(hidden)
            self.system_dirty = True
            self.segments_dirty.add(name)

    def drop(self, name):
        with self.lock:
            t = self.tables.pop(name, None)
            if t is None:
                raise KeyError("no such datasource [%s]" % name)
            self.garbage += [t.sqlite_name, t.hidden_name]
            self._collect_garbage()
            self.system_dirty = True
            self.segments_dirty.add(name)

    # -- system tables
    SYS_DEFS = {
        ("INFORMATION_SCHEMA", "SCHEMATA"): [
            ("CATALOG_NAME", "VARCHAR"), ("SCHEMA_NAME", "VARCHAR"), ("SCHEMA_OWNER", "VARCHAR"),
            ("DEFAULT_CHARACTER_SET_CATALOG", "VARCHAR"), ("DEFAULT_CHARACTER_SET_SCHEMA", "VARCHAR"),
            ("DEFAULT_CHARACTER_SET_NAME", "VARCHAR"), ("SQL_PATH", "VARCHAR")],
        ("INFORMATION_SCHEMA", "TABLES"): [
            ("TABLE_CATALOG", "VARCHAR"), ("TABLE_SCHEMA", "VARCHAR"), ("TABLE_NAME", "VARCHAR"),
            ("TABLE_TYPE", "VARCHAR"), ("IS_JOINABLE", "VARCHAR"), ("IS_BROADCAST", "VARCHAR")],
        ("INFORMATION_SCHEMA", "COLUMNS"): [
            ("TABLE_CATALOG", "VARCHAR"), ("TABLE_SCHEMA", "VARCHAR"), ("TABLE_NAME", "VARCHAR"),
            ("COLUMN_NAME", "VARCHAR"), ("ORDINAL_POSITION", "BIGINT"), ("COLUMN_DEFAULT", "VARCHAR"),
            ("IS_NULLABLE", "VARCHAR"), ("DATA_TYPE", "VARCHAR"), ("CHARACTER_MAXIMUM_LENGTH", "BIGINT"),
            ("CHARACTER_OCTET_LENGTH", "BIGINT"), ("NUMERIC_PRECISION", "BIGINT"),
            ("NUMERIC_PRECISION_RADIX", "BIGINT"), ("NUMERIC_SCALE", "BIGINT"), ("DATETIME_PRECISION", "BIGINT"),
            ("CHARACTER_SET_NAME", "VARCHAR"), ("COLLATION_NAME", "VARCHAR"), ("JDBC_TYPE", "BIGINT")],
        ("INFORMATION_SCHEMA", "ROUTINES"): [
            ("ROUTINE_CATALOG", "VARCHAR"), ("ROUTINE_SCHEMA", "VARCHAR"), ("ROUTINE_NAME", "VARCHAR"),
            ("ROUTINE_TYPE", "VARCHAR"), ("IS_AGGREGATOR", "VARCHAR"), ("SIGNATURES", "VARCHAR")],
        # SystemSchema.SEGMENTS_SIGNATURE; _sys_defs adjusts it to the version (see there).
        ("sys", "segments"): [
            ("segment_id", "VARCHAR"), ("datasource", "VARCHAR"), ("start", "VARCHAR"), ("end", "VARCHAR"),
            ("size", "BIGINT"), ("version", "VARCHAR"), ("partition_num", "BIGINT"), ("num_replicas", "BIGINT"),
            ("num_rows", "BIGINT"), ("is_active", "BIGINT"), ("is_published", "BIGINT"),
            ("is_available", "BIGINT"), ("is_realtime", "BIGINT"), ("is_overshadowed", "BIGINT"),
            ("shard_spec", "VARCHAR"), ("dimensions", "VARCHAR"), ("metrics", "VARCHAR"), ("projections", "VARCHAR"),
            ("last_compaction_state", "VARCHAR"), ("replication_factor", "BIGINT")],
        ("sys", "server_segments"): [("server", "VARCHAR"), ("segment_id", "VARCHAR")],
        ("sys", "servers"): [
            ("server", "VARCHAR"), ("host", "VARCHAR"), ("plaintext_port", "BIGINT"), ("tls_port", "BIGINT"),
            ("server_type", "VARCHAR"), ("tier", "VARCHAR"), ("curr_size", "BIGINT"), ("max_size", "BIGINT"),
            ("is_leader", "BIGINT"), ("start_time", "VARCHAR")],
        ("sys", "supervisors"): [
            ("supervisor_id", "VARCHAR"), ("state", "VARCHAR"), ("detailed_state", "VARCHAR"),
            ("healthy", "BIGINT"), ("type", "VARCHAR"), ("source", "VARCHAR"), ("suspended", "BIGINT"),
            ("spec", "VARCHAR")],
        ("sys", "tasks"): [
            ("task_id", "VARCHAR"), ("group_id", "VARCHAR"), ("type", "VARCHAR"), ("datasource", "VARCHAR"),
            ("created_time", "VARCHAR"), ("queue_insertion_time", "VARCHAR"), ("status", "VARCHAR"),
            ("runner_status", "VARCHAR"), ("duration", "BIGINT"), ("location", "VARCHAR"), ("host", "VARCHAR"),
            ("plaintext_port", "BIGINT"), ("tls_port", "BIGINT"), ("error_msg", "VARCHAR")],
    }
    SEG_ALL = [n for n, _t in SYS_DEFS[("sys", "segments")]]

    @classmethod
    def _sys_defs(cls, version):
        """sys.segments per Druid version: replication_factor arrived in 27 (#14403),
        projections in 35 (#18223, merged July 2025; the release is our inference)."""
        defs = dict(cls.SYS_DEFS)
        drop = set()
        if version < (27,):
            drop.add("replication_factor")
        if version < (35,):
            drop.add("projections")
        defs[("sys", "segments")] = [c for c in cls.SYS_DEFS[("sys", "segments")] if c[0] not in drop]
        return defs

    def _make_system_tables(self):
        for (schema, name), cols in self.sys_defs.items():
            t = Table(name, schema, self._new_sqlite_name())
            t.columns = [Column(n, tsimple(ty), "c%d" % i) for i, (n, ty) in enumerate(cols)]
            self._create_sqlite_table(t)
            self.system[(schema, name)] = t
        segs = self.system[("sys", "segments")]
        self.db.execute('CREATE INDEX "%s_ds" ON "%s" ("c1")' % (segs.sqlite_name, segs.sqlite_name))
        self.seg_pick = [self.SEG_ALL.index(c.name) for c in segs.columns]

    def visible(self):
        return [self.tables[n] for n in sorted(self.tables) if not self.tables[n].hidden and self.tables[n].listed]

    def refresh_system(self, table=None):
        """Rebuild what a query on this system table reads (lock held)."""
        before = self.db.total_changes
        try:
            if table is self.system[("sys", "segments")]:
                self._refresh_segments()
            elif table is not None and table.schema == "INFORMATION_SCHEMA":
                self._refresh_info()
        finally:
            self.sys_changes += self.db.total_changes - before

    def data_gen(self):
        """Changes so far to the rows of datasource tables (lock held).  SQLite counts every
        row inserted, updated or deleted, whichever code path did it (appends, deletes,
        compaction, availability, handoff, ...); DDL is not counted but always comes with a
        new table name or a new column, which are part of the slice cache's key."""
        return self.db.total_changes - self.sys_changes

    def _refresh_info(self):
        if not self.system_dirty:
            return
        self.system_dirty = False
        rows = {k: [] for k in self.sys_defs if k[0] == "INFORMATION_SCHEMA"}
        for s in ("druid", "INFORMATION_SCHEMA", "lookup", "sys", "view"):
            rows[("INFORMATION_SCHEMA", "SCHEMATA")].append(["druid", s, None, None, None, None, None])
        tables = rows[("INFORMATION_SCHEMA", "TABLES")]
        columns = rows[("INFORMATION_SCHEMA", "COLUMNS")]
        all_tables = [(t, "TABLE") for t in self.visible()]
        all_tables += [(self.system[k], "SYSTEM_TABLE") for k in sorted(self.system)]
        for t, ttype in all_tables:
            tables.append(["druid", t.schema, t.name, ttype, "NO", "NO"])
            for i, c in enumerate(t.columns):
                columns.append(self._column_row(t, c, i + 1))
        for key, rs in rows.items():
            st = self.system[key]
            self.db.execute('DELETE FROM "%s"' % st.sqlite_name)
            if rs:
                self.db.executemany('INSERT INTO "%s" VALUES (%s)' % (st.sqlite_name, ",".join("?" * len(rs[0]))),
                                    rs)

    def _refresh_segments(self):
        if not self.segments_dirty:
            return
        st = self.system[("sys", "segments")]
        ph = ",".join("?" * len(st.columns))
        pick = self.seg_pick
        with self._txn():
            for name in sorted(self.segments_dirty):
                self.db.execute('DELETE FROM "%s" WHERE "c1" = ?' % st.sqlite_name, (name,))
                t = self.tables.get(name)
                if t is None or t.hidden or t.segments_hidden:
                    continue
                self._sizes(t)
                # Published segments first (the Coordinator's list), then the realtime ones
                # (the Broker's own view): Druid's order, which is not sorted.
                segs = sorted(t.segs.values(), key=lambda s: (s.realtime, s.key))
                rows = []
                for s in segs:
                    full = self._sys_row(t, s)
                    rows.append([full[i] for i in pick])
                self.db.executemany('INSERT INTO "%s" VALUES (%s)' % (st.sqlite_name, ph), rows)
        self.segments_dirty.clear()

    @staticmethod
    def _sys_row(t, s):
        """A sys.segments row, as SystemSchema.SegmentsTable builds it (all columns)."""
        unknown = t.rows_unknown or s.rows_unknown
        if s.realtime:
            # From the Broker's served-segment view: unpublished, active, available; the
            # Coordinator knows no replication factor; a realtime sink has size 0.
            return [s.sid, t.name, fmt_instant(s.start), fmt_instant(s.end), 0, s.version, s.pnum, 1,
                    0 if unknown else s.nrows, 1, 0, 1, 1, 0, s.shard_spec, s.dims, s.mets, None, None, -1]
        served = s.served
        return [s.sid, t.name, fmt_instant(s.start), fmt_instant(s.end), s.size, s.version, s.pnum,
                max(s.rf, 1) if served else 0,
                # num_rows comes from the Broker's metadata of served segments: 0 otherwise
                s.nrows if served and not unknown else 0,
                0 if s.overshadowed else 1, 1, 1 if served else 0, 0, 1 if s.overshadowed else 0,
                s.shard_spec, s.dims, s.mets, None, s.compaction, s.rf]

    @staticmethod
    def _column_row(t, c, pos):
        s = c.t.sql
        numeric = s in INT_TYPES or s in FLOAT_TYPES
        prec = {"BIGINT": 19, "INTEGER": 10, "SMALLINT": 5, "TINYINT": 3, "DOUBLE": 15, "FLOAT": 7,
                "REAL": 7, "DECIMAL": 19}.get(s)
        scale = 0 if s in INT_TYPES else None
        char = s in ("VARCHAR", "CHAR")
        return ["druid", t.schema, t.name, c.name, pos, "",
                "NO" if c.name == "__time" else "YES", c.t.info,
                None, None, prec if numeric else None, 10 if numeric else None, scale if numeric else None,
                3 if s in ("TIMESTAMP", "DATE") else None,
                "UTF-16LE" if char else None, "UTF-16LE$en_US$primary" if char else None,
                JDBC.get(s, 1111)]


def _idiv(a, b):
    if a is None or b is None:
        return None
    if b == 0:
        raise ZeroDivisionError("/ by zero")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _imod(a, b):
    if a is None or b is None:
        return None
    if b == 0:
        raise ZeroDivisionError("/ by zero")
    return int(math.fmod(a, b))


def _fdiv(a, b):
    if a is None or b is None:
        return None
    a, b = _num(a), _num(b)
    if b == 0:
        if a == 0 or math.isnan(a):
            return "NaN"
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    r = a / b
    return "NaN" if math.isnan(r) else r


def _num(v):
    return math.nan if v == "NaN" else float(v)


_like_cache = {}


def _like(s, pat, esc):
    if s is None or pat is None:
        return None
    key = (pat, esc)
    rx = _like_cache.get(key)
    if rx is None:
        out, i = [], 0
        while i < len(pat):
            ch = pat[i]
            if esc and ch == esc and i + 1 < len(pat):
                out.append(re.escape(pat[i + 1]))
                i += 2
                continue
            out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
            i += 1
        rx = _like_cache[key] = re.compile("".join(out) + r"\Z", re.S)
    return 1 if rx.match(str(s)) else 0


def _num_str(v, kind):
    if v is None:
        return None
    if kind == "f" and isinstance(v, (int, float)):
        return java_double(v) if math.isfinite(v) else ("Infinity" if v > 0 else "-Infinity")
    return str(v)


def _to_ts(v):
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return int(v)
    return parse_time(str(v))


# ---------------------------------------------------------------------------
# Planner: AST -> SQLite SQL + output types
# ---------------------------------------------------------------------------


class Plan:
    def __init__(self):
        self.sql = ""
        self.binds = {}
        self.names = []
        self.types = []
        self.table = None
        self.ordered_scan = False  # a scan ordered by __time (no aggregation)
        self.scan_limit = None  # its row limit (None: none)
        self.where_sql = None


def _is_time(t):
    return t.sql in ("TIMESTAMP", "DATE")


class Planner:
    """Resolves names against the catalog, types every expression and emits SQLite SQL."""

    def __init__(self, store, sql, params):
        self.store, self.sql, self.params = store, sql, params or []
        self.binds = {}
        self.table = None

    def fail_col(self, node):
        name = node.name
        return err_validation("Column '%s' not found in any table" % name, _sql_ctx(self.sql, node.pos, node.end))

    # -- parameters
    def param(self, node):
        if node.idx >= len(self.params):
            raise DruidError(400, "No value bound for parameter (position [%d])" % (node.idx + 1),
                             context=_sql_ctx(self.sql, node.pos, node.end), legacy_error="Plan validation failed",
                             legacy_class="org.apache.calcite.tools.ValidationException")
        p = self.params[node.idx]
        if not isinstance(p, dict):
            raise DruidError(400, "Invalid parameter [%s]" % (p,))
        tname = str(p.get("type", "VARCHAR")).upper()
        v = p.get("value")
        try:
            t = type_from_name(tname) if not tname.startswith("ARRAY") else T("ARRAY", "ARRAY<STRING>", "ARRAY")
        except ValueError:
            raise DruidError(400, "Unsupported parameter type [%s]" % tname)
        if v is not None:
            if t.sql in INT_TYPES and (isinstance(v, str) or isinstance(v, bool)):
                raise err_general(500, "Cannot handle query", category="RUNTIME_FAILURE")
            try:
                if t.sql == "TIMESTAMP":
                    v = to_millis(v)
                elif t.sql == "DATE":
                    v = int(v) * DAY_MS if isinstance(v, (int, float)) else to_millis(v) // DAY_MS * DAY_MS
                else:
                    v = convert_value(v, t)
            except (ValueError, TypeError):
                raise DruidError(400, "Cannot parse parameter value [%s] as [%s]" % (v, tname))
        key = "p%d" % node.idx
        self.binds[key] = v
        return ":" + key, t

    # -- expressions
    def expr(self, n, aliases=None):
        k = n.k
        if k == "num":
            txt = n.text
            if re.match(r"^-?\d+$", txt):
                v = int(txt)
                return str(v), tsimple("INTEGER" if -2 ** 31 <= v < 2 ** 31 else "BIGINT")
            return repr(float(txt)) if "e" not in txt.lower() else repr(float(txt)), \
                tsimple("DECIMAL" if "e" not in txt.lower() else "DOUBLE")
        if k == "str":
            return "'" + n.val.replace("'", "''") + "'", tsimple("CHAR")
        if k == "bool":
            return ("1" if n.val else "0"), tsimple("BOOLEAN")
        if k == "null":
            return "NULL", T("NULL", None)
        if k == "ts":
            return str(n.ms), tsimple(n.typ)
        if k == "param":
            return self.param(n)
        if k == "col":
            return self.column(n)
        if k == "neg":
            s, t = self.expr(n.e)
            return "(-%s)" % s, t
        if k == "not":
            s, _ = self.expr(n.e)
            return "(NOT %s)" % s, tsimple("BOOLEAN")
        if k == "isnull":
            s, _ = self.expr(n.e)
            return "(%s IS %sNULL)" % (s, "NOT " if n.neg else ""), tsimple("BOOLEAN")
        if k == "istrue":
            s, _ = self.expr(n.e)
            core = "(%s IS NOT NULL AND %s %s 0)" % (s, s, "<>" if n.val else "=")
            return ("(NOT %s)" % core if n.neg else core), tsimple("BOOLEAN")
        if k == "in":
            s, t = self.expr(n.e)
            items = [self.coerce_to(t, i) for i in n.items]
            return "(%s %sIN (%s))" % (s, "NOT " if n.neg else "", ", ".join(items)), tsimple("BOOLEAN")
        if k == "like":
            s, _ = self.expr(n.e)
            p, _ = self.expr(n.pat)
            e = self.expr(n.esc)[0] if n.esc else "NULL"
            return "(%sd_like(%s, %s, %s))" % ("NOT " if n.neg else "", s, p, e), tsimple("BOOLEAN")
        if k == "between":
            s, t = self.expr(n.e)
            lo, hi = self.coerce_to(t, n.lo), self.coerce_to(t, n.hi)
            return "(%s %sBETWEEN %s AND %s)" % (s, "NOT " if n.neg else "", lo, hi), tsimple("BOOLEAN")
        if k == "bin":
            return self.binary(n)
        if k == "cast":
            return self.cast(n)
        if k == "case":
            parts = ["CASE"]
            if n.operand is not None:
                parts.append(self.expr(n.operand)[0])
            rt = None
            for c, v in n.whens:
                cs, _ = self.expr(c)
                vs, vt = self.expr(v)
                if rt is None and vt.sql != "NULL":
                    rt = vt
                parts.append("WHEN %s THEN %s" % (cs, vs))
            if n.els is not None:
                es, et = self.expr(n.els)
                if rt is None and et.sql != "NULL":
                    rt = et
                parts.append("ELSE %s" % es)
            parts.append("END")
            if rt is not None and rt.sql == "CHAR":
                rt = tsimple("VARCHAR") if any(self.expr(v)[1].sql == "VARCHAR" for _c, v in n.whens) else rt
            return "(" + " ".join(parts) + ")", rt or tsimple("VARCHAR")
        if k == "func":
            return self.func(n)
        if k == "star":
            raise err_parse("Unknown identifier '*'")
        raise err_parse("Unsupported expression")

    def coerce_to(self, t, node):
        """Render ``node`` for comparison with a value of type ``t``: a string
        literal compared with a TIMESTAMP is read as a timestamp, like Calcite does."""
        if _is_time(t) and node.k == "str":
            ms = parse_time(node.val)
            if ms is None:
                raise err_validation("Illegal TIMESTAMP literal '%s'" % node.val,
                                     _sql_ctx(self.sql, node.pos, node.end))
            return str(ms)
        s, _ = self.expr(node)
        return s

    def column(self, n):
        if self.table is None:
            raise self.fail_col(n)
        quals = n.quals
        if quals and quals[-1] not in (self.table.name, getattr(self, "alias", None)):
            raise err_validation("Table '%s' not found" % ".".join(quals), _sql_ctx(self.sql, n.pos, n.end))
        c = self.table.col(n.name)
        if c is None:
            raise self.fail_col(n)
        return '"%s"' % c.internal, c.t

    def binary(self, n):
        op = n.op
        if op in ("AND", "OR"):
            l, _ = self.expr(n.l)
            r, _ = self.expr(n.r)
            return "(%s %s %s)" % (l, op, r), tsimple("BOOLEAN")
        if op in ("=", "<>", "<", "<=", ">", ">="):
            ls, lt = self.expr(n.l)
            rs, rt = self.expr(n.r)
            if _is_time(lt) and n.r.k == "str":
                rs = self.coerce_to(lt, n.r)
            elif _is_time(rt) and n.l.k == "str":
                ls = self.coerce_to(rt, n.l)
            return "(%s %s %s)" % (ls, op, rs), tsimple("BOOLEAN")
        ls, lt = self.expr(n.l)
        rs, rt = self.expr(n.r)
        if op == "||":
            return "(%s || %s)" % (self.as_text(ls, lt), self.as_text(rs, rt)), tsimple("VARCHAR")
        floaty = lt.sql in FLOAT_TYPES or rt.sql in FLOAT_TYPES
        if floaty:
            rtype = tsimple("DOUBLE")
        elif _is_time(lt) and op in "+-" and rt.sql in INT_TYPES:
            rtype = lt
        elif "BIGINT" in (lt.sql, rt.sql):
            rtype = tsimple("BIGINT")
        else:
            rtype = tsimple("INTEGER")
        if op == "/":
            return ("d_fdiv(%s, %s)" if floaty else "d_idiv(%s, %s)") % (ls, rs), rtype
        if op == "%":
            return ("d_imod(%s, %s)" % (ls, rs) if not floaty else "(%s %% %s)" % (ls, rs)), rtype
        return "(%s %s %s)" % (ls, op, rs), rtype

    @staticmethod
    def as_text(s, t):
        if _is_time(t):
            return "d_ts_str(%s)" % s
        if t.sql in FLOAT_TYPES:
            return "d_num_str(%s, 'f')" % s
        return s

    def cast(self, n):
        s, t = self.expr(n.e)
        to = n.to
        if to in ("VARCHAR", "CHAR", "STRING"):
            return "CAST(%s AS TEXT)" % self.as_text(s, t) if not _is_time(t) and t.sql not in FLOAT_TYPES \
                else self.as_text(s, t), tsimple("VARCHAR")
        if to in INT_TYPES or to == "LONG":
            return "CAST(%s AS INTEGER)" % s, tsimple("BIGINT" if to == "LONG" else to)
        if to in FLOAT_TYPES:
            return "CAST(%s AS REAL)" % s, tsimple(to)
        if to == "TIMESTAMP":
            return ("d_to_ts(%s)" % s if not _is_time(t) else s), tsimple("TIMESTAMP")
        if to == "DATE":
            return "d_time_floor(d_to_ts(%s), 'P1D')" % s, tsimple("DATE")
        if to == "BOOLEAN":
            return "(%s <> 0)" % s, tsimple("BOOLEAN")
        raise err_validation("Unknown type [%s]" % to, _sql_ctx(self.sql, n.pos, n.end))

    def func(self, n):
        name, args = n.name, n.args
        argc = len(args)

        def a(i):
            return self.expr(args[i])

        def need(lo, hi=None):
            if not (lo <= argc <= (hi if hi is not None else lo)):
                raise err_validation("Invalid number of arguments to function '%s'. Was expecting %d arguments"
                                     % (name, lo), _sql_ctx(self.sql, n.pos, n.end))

        if name in AGGS:
            if self.no_aggs:
                raise err_validation("Aggregate expression is illegal in %s clause" % self.no_aggs,
                                     _sql_ctx(self.sql, n.pos, n.end))
            self.has_aggs = True
            if name == "COUNT":
                if n.star or not args:
                    return "COUNT(*)", tsimple("BIGINT")
                s, _ = a(0)
                return "COUNT(%s%s)" % ("DISTINCT " if n.distinct else "", s), tsimple("BIGINT")
            if name.startswith("APPROX_COUNT_DISTINCT"):
                s, _ = a(0)
                return "COUNT(DISTINCT %s)" % s, tsimple("BIGINT")
            need(1)
            s, t = a(0)
            if name == "SUM":
                if t.sql in FLOAT_TYPES:
                    return "SUM(%s)" % s, tsimple("DOUBLE")
                if t.sql in INT_TYPES:
                    return "SUM(%s)" % s, tsimple("BIGINT")
                raise err_validation("Cannot apply 'SUM' to arguments of type 'SUM(<%s>)'" % t.sql,
                                     _sql_ctx(self.sql, n.pos, n.end))
            if name == "AVG":
                return "AVG(%s)" % s, tsimple("DOUBLE")
            if name in ("MIN", "MAX"):
                return "%s(%s%s)" % (name, "DISTINCT " if n.distinct else "", s), t
            return "MAX(%s)" % s, t  # ANY_VALUE / EARLIEST / LATEST: any value is fine here
        if name == "TIME_FLOOR" or name == "TIME_CEIL":
            need(2, 4)
            s, _ = a(0)
            per = args[1]
            if per.k != "str" or parse_period(per.val) is None:
                raise DruidError(400, "Invalid period[%s] for TIME_FLOOR" % getattr(per, "val", "?"),
                                 context=_sql_ctx(self.sql, per.pos, per.end))
            fn = "d_time_floor" if name == "TIME_FLOOR" else "d_time_ceil"
            return "%s(%s, '%s')" % (fn, s, per.val), tsimple("TIMESTAMP")
        if name == "TIME_PARSE":
            need(1, 3)
            s, _ = a(0)
            return "d_time_parse(%s)" % s, tsimple("TIMESTAMP")
        if name == "MILLIS_TO_TIMESTAMP":
            need(1)
            s, _ = a(0)
            return "CAST(%s AS INTEGER)" % s, tsimple("TIMESTAMP")
        if name == "TIMESTAMP_TO_MILLIS":
            need(1)
            s, _ = a(0)
            return s, tsimple("BIGINT")
        if name == "TIME_FORMAT":
            need(1, 3)
            s, _ = a(0)
            return "d_ts_str(%s)" % s if argc > 1 else "replace(d_ts_str(%s), ' ', 'T') || 'Z'" % s, \
                tsimple("VARCHAR")
        if name in ("LOWER", "UPPER", "TRIM", "LTRIM", "RTRIM"):
            need(1)
            s, t = a(0)
            return "%s(%s)" % (name, s), tsimple("VARCHAR")
        if name in ("LENGTH", "CHAR_LENGTH", "CHARACTER_LENGTH", "STRLEN"):
            need(1)
            s, _ = a(0)
            return "LENGTH(%s)" % s, tsimple("INTEGER")
        if name in ("SUBSTRING", "SUBSTR"):
            need(2, 3)
            parts = [self.expr(x)[0] for x in args]
            return "SUBSTR(%s)" % ", ".join(parts), tsimple("VARCHAR")
        if name == "CONCAT":
            parts = [self.as_text(*self.expr(x)) for x in args]
            return "(" + " || ".join(parts) + ")", tsimple("VARCHAR")
        if name in ("COALESCE", "NVL", "IFNULL"):
            parts = [self.expr(x) for x in args]
            t = next((t for _s, t in parts if t.sql != "NULL"), tsimple("VARCHAR"))
            return "COALESCE(%s)" % ", ".join(s for s, _t in parts), t
        if name == "NULLIF":
            need(2)
            s1, t1 = a(0)
            s2, _ = a(1)
            return "NULLIF(%s, %s)" % (s1, s2), t1
        if name == "ABS":
            need(1)
            s, t = a(0)
            return "ABS(%s)" % s, t
        if name in ("FLOOR", "CEIL"):
            need(1)
            s, t = a(0)
            if t.sql in INT_TYPES:
                return s, t
            return ("CAST(%s(%s) AS REAL)" % ("floor" if name == "FLOOR" else "ceil", s)), t
        raise err_validation("No match found for function signature %s(%s)" % (
            name, ", ".join("<%s>" % self.expr(x)[1].sql for x in args) if not n.star else "*"),
            _sql_ctx(self.sql, n.pos, n.end))

    # -- whole query
    def resolve_table(self, ref):
        parts, toks = ref.parts, ref.toks
        st = self.store
        if len(parts) == 2:
            schema, name = parts
            if schema == "druid":
                t = st.tables.get(name)
                if t is None or t.hidden or not t.listed:
                    raise err_unknown_table(name, self.sql, toks[1].pos, toks[1].end, within=schema)
                return t
            if schema in ("INFORMATION_SCHEMA", "sys"):
                t = st.system.get((schema, name))
                if t is None:
                    raise err_unknown_table(name, self.sql, toks[1].pos, toks[1].end, within=schema)
                return t
            raise err_unknown_table(schema, self.sql, toks[0].pos, toks[0].end)
        name = parts[0]
        t = st.tables.get(name)
        if t is None or t.hidden or not t.listed:
            raise err_unknown_table(name, self.sql, toks[0].pos, toks[0].end)
        return t

    def plan(self, q):
        p = Plan()
        self.has_aggs = False
        self.no_aggs = None
        if q.table is not None:
            self.table = self.resolve_table(q.table)
            self.alias = q.table.alias
            p.table = self.table
        # select list
        sel, names, types, exprs = [], [], [], []
        for i, item in enumerate(q.items):
            if item.k == "star":
                if self.table is None:
                    raise err_validation("SELECT * requires a FROM clause", _sql_ctx(self.sql, item.pos, item.end))
                for c in self.table.columns:
                    sel.append('"%s"' % c.internal)
                    names.append(c.name)
                    types.append(c.t)
                    exprs.append(N("col", name=c.name, quals=[]))
                continue
            s, t = self.expr(item.e)
            if t.sql == "CHAR" and item.e.k != "str":
                t = tsimple("VARCHAR")
            if t.sql == "NULL":
                t = tsimple("VARCHAR")
            sel.append(s)
            names.append(item.alias if item.alias is not None else
                         item.e.name if item.e.k == "col" else "EXPR$%d" % i)
            types.append(t)
            exprs.append(item.e)
        select_has_aggs = self.has_aggs
        parts = ["SELECT", "DISTINCT" if q.distinct else "", ", ".join(sel)]
        if self.table is not None:
            parts.append('FROM "%s"' % self.table.sqlite_name)
        if q.where is not None:
            self.no_aggs = "WHERE"
            p.where_sql = self.expr(q.where)[0]
            parts.append("WHERE " + p.where_sql)
            self.no_aggs = None
        grouped = q.group is not None
        if grouped:
            gs = []
            for g in q.group:
                gs.append(self.group_or_order_key(g, names, exprs, prefer_column=True))
            parts.append("GROUP BY " + ", ".join(gs))
        having = self.expr(q.having)[0] if q.having is not None else None
        if (not grouped and select_has_aggs and self.table is not None and self.table.schema != "druid"):
            # Druid answers a key-less aggregate over an empty system table with no
            # row at all (live: SELECT COUNT(*) FROM sys.supervisors gave [["c"]]);
            # over a datasource it is a timeseries and gives one row, like SQLite.
            having = "COUNT(*) > 0" + (" AND (%s)" % having if having else "")
        if having is not None:
            parts.append("HAVING " + having)
        aggregating = grouped or select_has_aggs or self.has_aggs or q.distinct
        if q.order:
            os_ = []
            bad = []
            for e, desc in q.order:
                key = self.group_or_order_key(e, names, exprs, prefer_column=False)
                os_.append(key + (" DESC" if desc else ""))
                under = self.underlying(e, names, exprs)
                if not (under is not None and under.k == "col" and under.name == "__time"):
                    bad.append(names[int(key) - 1] if key.isdigit() and int(key) <= len(names)
                               else getattr(under, "name", None) or self.sql[e.pos:e.end])
            if (not aggregating and self.table is not None and self.table.schema == "druid" and bad):
                raise err_order_by(bad)
            p.ordered_scan = not aggregating and self.table is not None and self.table.schema == "druid"
            if p.ordered_scan:
                # Ties in storage (ingestion) order, by definition rather than by SQLite's
                # sorter: the pre-rendered slices (FastSlices) serve them in that order too.
                os_.append("rowid")
            parts.append("ORDER BY " + ", ".join(os_))
        if q.limit is not None or q.offset is not None:
            lim = self.count(q.limit) if q.limit is not None else -1
            parts.append("LIMIT %d" % lim)
            if q.offset is not None:
                parts.append("OFFSET %d" % self.count(q.offset))
            if lim >= 0:
                p.scan_limit = lim + (self.count(q.offset) if q.offset is not None else 0)
        p.sql = " ".join(x for x in parts if x)
        p.binds = self.binds
        p.names, p.types = names, types
        return p

    def count(self, v):
        if isinstance(v, int):
            return v
        s, _t = self.param(v)
        val = self.binds[s[1:]]
        if not isinstance(val, int) or val < 0:
            raise DruidError(400, "LIMIT/OFFSET parameter must be a non-negative integer")
        return val

    def underlying(self, e, names, exprs):
        if e.k == "num" and e.text.isdigit():
            i = int(e.text) - 1
            return exprs[i] if 0 <= i < len(exprs) else None
        if e.k == "col" and not e.quals and e.name in names:
            return exprs[names.index(e.name)]
        return e

    def group_or_order_key(self, e, names, exprs, prefer_column):
        if e.k == "num" and e.text.isdigit():
            i = int(e.text)
            if not 1 <= i <= len(names):
                raise err_validation("Ordinal out of range", _sql_ctx(self.sql, e.pos, e.end))
            return str(i)
        if e.k == "col" and not e.quals:
            is_col = self.table is not None and self.table.col(e.name) is not None
            if e.name in names and not (prefer_column and is_col):
                return str(names.index(e.name) + 1)
        return self.expr(e)[0]


# ---------------------------------------------------------------------------
# Result formatting
# ---------------------------------------------------------------------------


def value_formatter(t, stringify_arrays):
    """Return f(sqlite value) -> (json_text, csv_text) for a column of type t."""
    s = t.sql

    def nonfinite(f):
        if math.isnan(f):
            return '"NaN"', "NaN"
        return ('"Infinity"', "Infinity") if f > 0 else ('"-Infinity"', "-Infinity")

    if s in ("TIMESTAMP", "DATE"):
        def f(v):
            if v is None:
                return "null", ""
            if isinstance(v, str):
                ms = parse_time(v)
                if ms is None:
                    return "null", ""
                v = ms
            x = fmt_ts(v)
            return '"' + x + '"', x
        return f
    if s in INT_TYPES:
        def f(v):
            if v is None:
                return "null", ""
            if isinstance(v, float):
                if not math.isfinite(v):
                    return nonfinite(v)
                v = int(v)
            elif isinstance(v, str):
                try:
                    v = int(v)
                except ValueError:
                    return jstr(v), v
            x = str(v)
            return x, x
        return f
    if s in FLOAT_TYPES:
        fmt = java_float if s in ("FLOAT", "REAL") else java_double

        def f(v):
            if v is None:
                return "null", ""
            if isinstance(v, str):
                if v == "NaN":
                    return '"NaN"', "NaN"
                try:
                    v = float(v)
                except ValueError:
                    return jstr(v), v
            if not math.isfinite(v):
                return nonfinite(v)
            x = fmt(v)
            return x, x
        return f
    if s == "BOOLEAN":
        def f(v):
            if v is None:
                return "null", ""
            x = "true" if v else "false"
            return x, x
        return f
    if s == "ARRAY":
        def f(v):
            if v is None:
                return "null", ""
            if stringify_arrays:
                return jstr(v), v
            return v, v
        return f

    def f(v):  # VARCHAR, CHAR, OTHER
        if v is None:
            return "null", ""
        if not isinstance(v, str):
            v = _num_str(v, "f" if isinstance(v, float) else "i")
        return jstr(v), v
    return f


def csv_field(x):
    if any(c in x for c in '",\n\r'):
        return '"' + x.replace('"', '""') + '"'
    return x


def csv_line(fields):
    if len(fields) == 1 and fields[0] == "":
        return '""\n'  # opencsv quotes a lone empty value so it is not a blank line
    return ",".join(csv_field(x) for x in fields) + "\n"


class Writer:
    """Druid's five result writers; ``item()`` for each header/data row."""

    def __init__(self, fmt, names):
        self.fmt, self.names, self.n = fmt, names, 0
        self.jnames = [jstr(x) for x in names]

    def start(self):
        return "[" if self.fmt in ("array", "object") else ""

    def _sep(self):
        first = self.n == 0
        self.n += 1
        if self.fmt in ("array", "object"):
            return "" if first else ","
        if self.fmt in ("arrayLines", "objectLines"):
            return "" if first else "\n"
        return ""

    def header(self, header, types, sqltypes):
        out = []
        f = self.fmt
        if not header:
            return ""
        if f in ("object", "objectLines"):
            parts = []
            for i, jn in enumerate(self.jnames):
                if not types and not sqltypes:
                    parts.append(jn + ":null")
                else:
                    inner = []
                    if types:
                        inner.append('"type":' + jdump(types[i]))
                    if sqltypes:
                        inner.append('"sqlType":' + jdump(sqltypes[i]))
                    parts.append(jn + ":{" + ",".join(inner) + "}")
            out.append(self._sep() + "{" + ",".join(parts) + "}")
        elif f in ("array", "arrayLines"):
            out.append(self._sep() + "[" + ",".join(self.jnames) + "]")
            for row in (types, sqltypes):
                if row is not None:
                    out.append(self._sep() + "[" + ",".join(jdump(x) for x in row) + "]")
        else:
            out.append(csv_line(self.names))
            for row in (types, sqltypes):
                if row is not None:
                    out.append(csv_line(["" if x is None else x for x in row]))
        return "".join(out)

    def row(self, cells):
        """cells: list of (json_text, csv_text)."""
        f = self.fmt
        if f in ("array", "arrayLines"):
            return self._sep() + "[" + ",".join(c[0] for c in cells) + "]"
        if f in ("object", "objectLines"):
            return self._sep() + "{" + ",".join(jn + ":" + c[0] for jn, c in zip(self.jnames, cells)) + "}"
        return csv_line([c[1] for c in cells])

    def end(self):
        if self.fmt in ("array", "object"):
            return "]\n"
        return "\n\n" if self.fmt in ("arrayLines", "objectLines") else "\n"


FORMATS = {f.upper(): f for f in ("object", "array", "objectLines", "arrayLines", "csv")}


# ---------------------------------------------------------------------------
# Pre-rendered slices: the fast path for the queries a sync sends
# ---------------------------------------------------------------------------

_TS_PREFIX = {}  # epoch day -> '"YYYY-MM-DDT'


def _ts_json(ms):
    """'"' + fmt_ts(ms) + '"' for an int, with the date part cached per day."""
    days, rem = divmod(ms, DAY_MS)
    p = _TS_PREFIX.get(days)
    if p is None:
        if len(_TS_PREFIX) > 100000:
            _TS_PREFIX.clear()
        p = _TS_PREFIX[days] = '"' + fmt_ts(days * DAY_MS)[:-13]
    hh, rem = divmod(rem, 3600000)
    mi, rem = divmod(rem, 60000)
    ss, mss = divmod(rem, 1000)
    return '%s%02d:%02d:%02d.%03dZ"' % (p, hh, mi, ss, mss)


def json_cell(t, stringify):
    """f(sqlite value) -> the JSON text value_formatter gives (its first half), faster:
    timestamps through _ts_json, other values memoised per column (str, int and None
    never compare equal to each other; floats, which equal ints, always go through)."""
    base = value_formatter(t, stringify)
    if t.sql in ("TIMESTAMP", "DATE"):
        def ts(v):
            return _ts_json(v) if v.__class__ is int else base(v)[0]
        return ts
    memo = {}

    def f(v):
        if v.__class__ is float:
            return base(v)[0]
        r = memo.get(v)
        if r is None:
            r = base(v)[0]
            if len(memo) < 200000:
                memo[v] = r
        return r
    return f


class _Rendered:
    """One datasource table's rows for one column list, each rendered once as its
    arrayLines line (b'[...]\n'), kept in storage (rowid) order and sorted by (__time,
    rowid), with the times for bisecting."""
    __slots__ = ("gen", "rows", "times", "sorted_rows", "pos", "nbytes")


class FastSlices:
    """Serves ``SELECT col, ... FROM ds [WHERE __time >= ? AND __time < ?] [ORDER BY
    __time]`` in arrayLines (the daemon's slice reads) from rows rendered once per
    version of the data, by bisecting on time and writing large chunks, instead of
    running SQLite and formatting every value of every row each time.

    The bytes are those of the SQLite path by construction: each row is rendered by the
    same formatters, and rows come in the same order (storage order without ORDER BY,
    (__time, rowid) with it; the planner adds the rowid tie-break).  A cached rendering
    is valid while ``Store.data_gen()`` is unchanged (any row inserted, updated or
    deleted anywhere invalidates every rendering); its key holds the SQLite table name
    (new for a replaced datasource) and the columns with their types.  Everything else
    (other formats, expressions, LIMIT, other filters, the endless_line / raw_line /
    huge_header faults) takes the SQLite path."""

    MAX_ENTRIES = 2
    PIECE_ROWS = 2048  # rows per write; cancellation and the deadline are checked between pieces

    def __init__(self, store):
        self.store = store
        self.enabled = True
        self.entries = {}  # key -> _Rendered
        self.lock = threading.Lock()  # taken before store.lock, never inside it
        self.builds = 0
        self.build_seconds = 0.0

    # -- which queries (store.lock held: planning)
    def match(self, q, plan, fmt, fault, stringify):
        """A spec for rows(), or None for the SQLite path."""
        t = plan.table
        if (not self.enabled or fmt != "arrayLines" or t is None or t.schema != "druid" or q.distinct
                or q.group is not None or q.having is not None or q.limit is not None or q.offset is not None):
            return None
        if fault and fault.get("kind") not in ("truncate", "reset", "delay"):
            return None
        tcol = t.col("__time")
        if tcol is None:
            return None
        cols = []
        for it in q.items:
            if it.k == "star":
                cols.extend(t.columns)
            elif it.e.k == "col" and t.col(it.e.name) is not None:
                cols.append(t.col(it.e.name))
            else:
                return None
        if len(cols) != len(plan.types) or any(c.t is not pt for c, pt in zip(cols, plan.types)):
            return None
        ordered = False
        if q.order:
            if len(q.order) != 1:
                return None
            e, desc = q.order[0]
            if desc or e.k != "col" or e.name != "__time":
                return None
            if not e.quals and "__time" in plan.names and cols[plan.names.index("__time")] is not tcol:
                return None  # ORDER BY names a select item called __time that is something else
            ordered = True
        bounds = []
        if q.where is not None and not self._bounds(q.where, plan.binds, bounds):
            return None
        key = (t.sqlite_name, tcol.internal, tuple((c.internal, c.t.sql) for c in cols), bool(stringify))
        return (key, cols, stringify, bounds, ordered)

    _FLIP = {">=": "<=", ">": "<", "<=": ">=", "<": ">"}

    def _bounds(self, n, binds, out):
        if n.k != "bin":
            return False
        if n.op == "AND":
            return self._bounds(n.l, binds, out) and self._bounds(n.r, binds, out)
        if n.op not in self._FLIP:
            return False
        l, r, op = n.l, n.r, n.op
        if r.k == "col" and l.k != "col":
            l, r, op = r, l, self._FLIP[op]
        if l.k != "col" or l.name != "__time":
            return False
        if r.k == "param":
            key = "p%d" % r.idx
            if key not in binds:
                return False
            v = binds[key]
        elif r.k == "ts":
            v = r.ms
        else:
            return False
        if v.__class__ not in (int, float) or (v.__class__ is float and not math.isfinite(v)):
            return False
        out.append((op, v))
        return True

    # -- the rows (no lock held by the caller)
    def rows(self, spec):
        """The rendered lines (bytes, each ending in \n) the query returns, in order; None
        when the table cannot be served this way (then the SQLite path runs)."""
        key, cols, stringify, bounds, ordered = spec
        with self.lock:
            with self.store.lock:
                gen = self.store.data_gen()
            e = self.entries.get(key)
            if e is None or e.gen != gen:
                e = self._build(key, cols, stringify)
                if e is None:
                    return None
        ts = e.times
        a, b = 0, len(ts)
        for op, v in bounds:
            if op == ">=":
                a = max(a, bisect.bisect_left(ts, v))
            elif op == ">":
                a = max(a, bisect.bisect_right(ts, v))
            elif op == "<":
                b = min(b, bisect.bisect_left(ts, v))
            else:
                b = min(b, bisect.bisect_right(ts, v))
        if a >= b:
            return []
        if e.pos is None or ordered:
            return e.sorted_rows[a:b]
        rr = e.rows
        return [rr[i] for i in sorted(e.pos[a:b])]  # storage order, as a table scan gives

    def _build(self, key, cols, stringify):
        store = self.store
        sqlite_name, tc = key[0], key[1]
        sql = 'SELECT %s, "%s" FROM "%s" ORDER BY rowid' % (", ".join('"%s"' % c.internal for c in cols), tc,
                                                           sqlite_name)
        t0 = time.time()
        fmts = [json_cell(c.t, stringify) for c in cols]
        call = operator.call
        rows, times = [], []
        mono, prev, nbytes = True, None, 0
        # Read in batches, the store lock held only while fetching (a build of millions of
        # rows takes seconds); a change meanwhile discards the result (gen re-checked).
        try:
            with store.lock:
                gen = store.data_gen()
                cur = store.db.execute(sql)
                data = cur.fetchmany(20000)
            while data:
                for row in data:
                    tm = row[-1]
                    if tm.__class__ is not int:
                        return None
                    if prev is not None and tm < prev:
                        mono = False
                    prev = tm
                    line = ("[" + ",".join(map(call, fmts, row)) + "]\n").encode("utf-8")
                    nbytes += len(line)
                    rows.append(line)
                    times.append(tm)
                with store.lock:
                    if store.data_gen() != gen:
                        return None
                    data = cur.fetchmany(20000)
        except sqlite3.Error:
            return None
        e = _Rendered()
        e.gen, e.rows, e.nbytes = gen, rows, nbytes
        if mono:
            e.times, e.sorted_rows, e.pos = times, rows, None
        else:
            order = sorted(range(len(times)), key=times.__getitem__)  # stable: ties in rowid order
            e.times = [times[i] for i in order]
            e.sorted_rows = [rows[i] for i in order]
            e.pos = order
        for k in [k for k, x in self.entries.items() if x.gen != gen]:
            del self.entries[k]
        self.entries.pop(key, None)
        self.entries[key] = e
        while len(self.entries) > self.MAX_ENTRIES:
            del self.entries[next(iter(self.entries))]
        self.builds += 1
        self.build_seconds += time.time() - t0
        return e

    def info(self):
        with self.lock:
            return {"enabled": self.enabled, "builds": self.builds, "build_seconds": round(self.build_seconds, 3),
                    "entries": [{"table": k[0], "columns": len(k[2]), "rows": len(e.rows), "bytes": e.nbytes,
                                 "gen": e.gen} for k, e in self.entries.items()]}


# ---------------------------------------------------------------------------
# Server state: faults, query log, running queries
# ---------------------------------------------------------------------------


class SimState:
    def __init__(self, store, args):
        self.store = store
        self.args = args
        self.lock = threading.Lock()
        self.faults = []
        self.queries = []
        self.running = {}  # sqlQueryId -> list of QueryRun
        self.cancel_requests = []  # ids named by DELETE /druid/v2/sql/{id}, in order
        self.inflight = 0
        self.max_inflight = 0

    def take_fault(self, sql):
        with self.lock:
            for f in self.faults:
                if f["times"] == 0:
                    continue
                m = f.get("match")
                if m is None or m in sql:
                    if f["times"] > 0:
                        f["times"] -= 1
                    f["hits"] = f.get("hits", 0) + 1
                    return dict(f)
        return None


class QueryRun:
    def __init__(self, qid):
        self.qid = qid
        self.cancelled = threading.Event()


class Abort(Exception):
    """Stop streaming: the body ends without the end marker."""


class ChunkedBody:
    """Chunked response writer with lazy start: headers go out with the first
    flush, so an error before the first row can still be a proper error status."""

    FLUSH_AT = 16384

    def __init__(self, handler, headers, trailers, huge_header=None):
        self.h, self.headers, self.trailers = handler, headers, trailers
        self.huge_header = huge_header  # (total bytes, bytes per line or None) or None
        self.buf = []
        self.size = 0
        self.started = False

    def write(self, s):
        self.write_bytes(s.encode("utf-8"))

    def write_bytes(self, b):
        """b: bytes or a memoryview of them."""
        self.buf.append(b)
        self.size += len(b)
        if self.size >= self.FLUSH_AT:
            self.flush()

    def _start(self, extra=()):
        h = self.h
        h.send_response(200)
        for k, v in list(self.headers) + list(extra):
            h.send_header(k, v)
        h.send_header("Transfer-Encoding", "chunked")
        if self.trailers:
            h.send_header("Trailer", "X-Druid-Response-Complete")
        if self.huge_header:
            h.flush_headers()
            self._stream_huge_header(*self.huge_header)
        h.end_headers()
        self.started = True

    def _stream_huge_header(self, total, per_line):
        """The 'huge_header' fault: `total` bytes of header lines (CRLF included), as one
        line or as lines of `per_line` bytes, written as fast as the client reads them."""
        w = self.h.wfile
        block = b"a" * 65536
        n = 0
        while n < total:
            name = b"X-Sim-Huge-%d: " % n
            line_len = min(per_line or total, total - n)
            body_len = max(1, line_len - len(name) - 2)
            w.write(name)
            left = body_len
            while left > 0:
                k = min(left, len(block))
                w.write(block[:k])
                left -= k
            w.write(b"\r\n")
            n += len(name) + body_len + 2

    def flush(self, extra=()):
        if not self.started:
            self._start(extra)
        if self.buf:
            # One write per chunk (small writes would meet Nagle and delayed ACKs).
            data = b"".join([b"%x\r\n" % self.size] + self.buf + [b"\r\n"])
            self.buf, self.size = [], 0
            self.h.wfile.write(data)

    def finish(self, complete):
        extra = [] if self.started else [("X-Druid-Response-Context", '{"missingSegments":[]}')]
        self.flush(extra)
        if self.trailers:
            self.h.wfile.write(b"0\r\nX-Druid-Response-Complete: %s\r\n\r\n" % (b"true" if complete else b"false"))
        else:
            self.h.wfile.write(b"0\r\n\r\n")


# ---------------------------------------------------------------------------
# HTTP handler
# ---------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None  # set by main()

    def version_string(self):
        return "Jetty(9.4.57.v20241219)"

    def log_message(self, fmt, *args):
        pass

    # -- plumbing
    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_bytes(self, status, body, ctype="application/json", headers=()):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, obj):
        self.send_bytes(status, json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    def auth_check(self):
        """None if allowed, else 'missing' or 'bad' (Basic auth per section 8)."""
        want = self.state.args.auth
        if not want:
            return None
        h = self.headers.get("Authorization")
        if not h:
            return "missing"
        if not h.startswith("Basic "):
            return "missing"  # not ours: the next authenticator in the chain gets it, none claims it
        try:
            cred = base64.b64decode(h[6:].strip(), validate=True).decode("utf-8")
        except Exception:
            return "bad"
        if ":" not in cred or cred != want:
            return "bad"
        return None

    def send_auth_failure(self, kind, extra_headers=()):
        if kind == "missing":
            self.send_bytes(401, UNAUTHORIZED_BODY, headers=[("WWW-Authenticate", "Basic")] + list(extra_headers))
        else:
            self.send_bytes(401, jetty_401_page(self.path.split("?")[0]), ctype="text/html;charset=iso-8859-1",
                            headers=[("Cache-Control", "must-revalidate,no-cache,no-store")])

    # -- dispatch
    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def dispatch(self, method):
        path = self.path.split("?")[0]
        try:
            if path.startswith("/__sim/"):
                return self.control(method, path)
            if path in ("/druid/v2/sql", "/druid/v2/sql/") and method == "POST":
                return self.sql_query()
            if path.startswith("/druid/v2/sql/") and method == "DELETE":
                self.read_body()  # keep the keep-alive connection in sync
                a = self.auth_check()
                if a:
                    return self.send_auth_failure(a)
                return self.cancel(path[len("/druid/v2/sql/"):])
            self.read_body()
            if path == "/status/health" and method == "GET":
                return self.send_bytes(200, "true")
            if path == "/status" and method == "GET":
                a = self.auth_check()
                if a:
                    return self.send_auth_failure(a)
                return self.send_bytes(200, jdump({
                    "version": self.state.args.version,
                    "modules": [{"name": "org.apache.druid.sql.guice.SqlModule", "artifact": "druid-sql",
                                 "version": self.state.args.version}],
                    "memory": {"maxMemory": 4294967296, "totalMemory": 1073741824, "freeMemory": 536870912,
                               "usedMemory": 536870912, "directMemory": 2147483648}}))
            if path == "/status/selfDiscovered/status" and method == "GET":
                return self.send_bytes(200, '{"selfDiscovered":true}')
            self.send_bytes(404, "Not Found: %s\n" % path, ctype="text/plain")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def cancel(self, qid):
        from urllib.parse import unquote
        qid = unquote(qid)
        with self.state.lock:
            runs = list(self.state.running.get(qid, []))
            self.state.cancel_requests.append(qid)
        for r in runs:
            r.cancelled.set()
        self.send_bytes(202 if runs else 404, b"", ctype=None)

    # -- the SQL endpoint
    def sql_query(self):
        st = self.state
        legacy = st.args.legacy_errors
        raw = self.read_body()
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        rec = {"sql": None, "parameters": [], "context": {}, "resultFormat": "object", "header": False,
               "typesHeader": False, "sqlTypesHeader": False, "content_type": self.headers.get("Content-Type"),
               "authorization_present": "Authorization" in self.headers, "status": None, "rows_sent": 0,
               "complete": False, "started": time.time(), "finished": None}
        with st.lock:
            st.queries.append(rec)
        qid = None
        req_error = None
        try:
            if ctype == "application/json":
                try:
                    req = json.loads(raw.decode("utf-8"))
                    if not isinstance(req, dict):
                        raise ValueError("not an object")
                except (ValueError, UnicodeDecodeError) as e:
                    req = {}
                    req_error = DruidError(400, "Malformed SQL query wrapped in JSON: %s" % e,
                                           legacy_error="Json parse failed",
                                           legacy_class="com.fasterxml.jackson.core.JsonParseException")
            else:
                # Druid ~34+: any other content type is the raw SQL text.
                req = {"query": raw.decode("utf-8", "replace")}
            ctx = req.get("context") if isinstance(req.get("context"), dict) else {}
            qid = str(ctx.get("sqlQueryId") or uuid.uuid4())
            rec.update(sql=req.get("query"), parameters=req.get("parameters") or [], context=ctx,
                       resultFormat=req.get("resultFormat", "object"), header=bool(req.get("header")),
                       typesHeader=bool(req.get("typesHeader")), sqlTypesHeader=bool(req.get("sqlTypesHeader")))
        except Exception as e:  # defensive: never leave the client hanging
            req, ctx, qid = {}, {}, qid or str(uuid.uuid4())
            req_error = err_general(500, str(e))
        # A list (not rebuilt later) so a fault can add Retry-After for fail() too.
        # X-Druid-Query-Id arrived with the shared QueryResultPusher in 25.
        id_headers = [("X-Druid-SQL-Query-Id", qid)]
        if _version_tuple(st.args.version) >= (25,):
            id_headers.append(("X-Druid-Query-Id", qid))

        def fail(e):
            rec["status"] = e.status
            rec["finished"] = time.time()
            self.send_bytes(e.status, e.body(legacy), headers=id_headers + list(e.headers))

        a = self.auth_check()
        if a:
            rec["status"] = 401
            rec["finished"] = time.time()
            return self.send_auth_failure(a, id_headers if a == "missing" else ())
        if req_error:
            return fail(req_error)

        run = QueryRun(qid)
        with st.lock:
            st.inflight += 1
            st.max_inflight = max(st.max_inflight, st.inflight)
            st.running.setdefault(qid, []).append(run)
        try:
            self._run_sql(req, ctx, qid, id_headers, rec, run, fail)
        finally:
            with st.lock:
                st.inflight -= 1
                lst = st.running.get(qid, [])
                if run in lst:
                    lst.remove(run)
                if not lst:
                    st.running.pop(qid, None)
            if rec["finished"] is None:
                rec["finished"] = time.time()

    def _run_sql(self, req, ctx, qid, id_headers, rec, run, fail):
        st = self.state
        t0 = time.time()
        # --- request validation (Druid rejects these while deserializing the body)
        fmt_name = req.get("resultFormat", "object")
        if fmt_name is None:
            fmt_name = "object"
        fmt = FORMATS.get(str(fmt_name).upper())
        if fmt is None:
            return fail(DruidError(400, "Cannot deserialize value of type `org.apache.druid.sql.http.ResultFormat` "
                                        "from String \"%s\": not one of the values accepted for Enum class: "
                                        "[OBJECT, ARRAY, OBJECTLINES, ARRAYLINES, CSV]" % fmt_name,
                                   legacy_error="Json parse failed",
                                   legacy_class="com.fasterxml.jackson.databind.exc.InvalidFormatException"))
        header = bool(req.get("header"))
        types_h = bool(req.get("typesHeader"))
        sqltypes_h = bool(req.get("sqlTypesHeader"))
        if (types_h or sqltypes_h) and not header:
            return fail(DruidError(400, "Cannot include '%s' without 'header'" %
                                   ("typesHeader" if types_h else "sqlTypesHeader"),
                                   legacy_error="Json parse failed", legacy_class="java.lang.IllegalStateException"))
        sql = req.get("query")
        if not isinstance(sql, str) or not sql.strip():
            return fail(DruidError(400, "Query must be a non-empty string", legacy_error="SQL parse failed"))
        params = req.get("parameters") or []
        if not isinstance(params, list):
            return fail(DruidError(400, "parameters must be a list", legacy_error="Json parse failed"))
        try:
            timeout = int(str(ctx.get("timeout", 300000)).strip())
        except ValueError:
            return fail(DruidError(400, "Failed to parse query context: timeout [%s]" % ctx.get("timeout"),
                                   kind="legacy", code="legacyQueryException", legacy_error="Query context parse failed",
                                   legacy_class="org.apache.druid.query.BadQueryContextException"))
        deadline = t0 + timeout / 1000.0 if timeout > 0 else None
        stringify = ctx.get("sqlStringifyArrays", True)
        stringify = not (stringify is False or str(stringify).lower() == "false")
        trailers = _version_tuple(st.args.version) >= (31,) and not st.args.no_trailers
        ctype_out = "application/json"
        if st.args.documented_content_types:
            # What sql-api.md documents (the code sends application/json; section 4).
            ctype_out = {"arrayLines": "text/plain", "objectLines": "text/plain", "csv": "text/csv"}.get(
                fmt, ctype_out)
        headers = [("Content-Type", ctype_out)] + id_headers
        if header:
            headers.append(("X-Druid-SQL-Header-Included", "yes"))

        # --- fault injection
        fault = st.take_fault(sql)
        if fault:
            kind = fault.get("kind")
            if fault.get("retry_after") is not None:
                id_headers.append(("Retry-After", str(fault["retry_after"])))
                headers.append(("Retry-After", str(fault["retry_after"])))
            if kind == "delay" and not int(fault.get("after_rows") or 0):
                end = time.time() + float(fault.get("delay_seconds", 1))
                while time.time() < end:
                    if run.cancelled.is_set():
                        return fail(err_cancelled(qid))
                    if deadline and time.time() >= deadline:
                        return fail(err_timeout())
                    time.sleep(min(0.02, max(0, end - time.time())))
            elif kind == "status":
                if fault.get("body") is not None or fault.get("error") is None:
                    body = fault.get("body", "")
                    if not isinstance(body, str):
                        body = jdump(body)
                    e = DruidError(int(fault.get("status", 500)), "fault", raw=body)
                else:
                    try:
                        table = re.search(r'FROM\s+("(?:[^"]|"")*"|\S+)', sql, re.I)
                        tname = table.group(1).strip('"').replace('""', '"') if table else "nope"
                        e = fault_error(fault["error"], tname)
                    except ValueError as ex:
                        e = err_general(500, str(ex))
                    if fault.get("status") is not None:
                        e.status = int(fault["status"])
                return fail(e)
            elif kind == "garbage":
                rec["status"] = 200
                return self.send_bytes(200, "<html><body>502 Bad Gateway (not JSON)</body></html>\n",
                                       headers=id_headers)

        # --- plan
        store = st.store
        try:
            q = Parser(sql).parse()
            with store.lock:
                plan = Planner(store, sql, params).plan(q)
                if plan.table is not None and plan.table.schema != "druid":
                    if store.segments_forbidden and plan.table is store.system[("sys", "segments")]:
                        # authorizeSystemTablesDirectly without READ on SYSTEM_TABLE segments
                        raise DruidError(403, "Unauthorized", raw='{"error":"Unauthorized"}')
                    store.refresh_system(plan.table)
                elif plan.table is not None:
                    store.check_scan_order(plan)
                fast = store.fast.match(q, plan, fmt, fault, stringify)
        except DruidError as e:
            return fail(e)
        except RecursionError:
            return fail(err_parse("Query too complex"))
        fast_rows = store.fast.rows(fast) if fast is not None else None
        rec["fast_path"] = fast_rows is not None

        # --- execute and stream
        formatters = [value_formatter(t, stringify) for t in plan.types]
        writer = Writer(fmt, plan.names)
        huge = None
        if fault and fault.get("kind") == "huge_header":
            huge = (int(fault.get("bytes") or 2 * 1024 ** 3), int(fault.get("line_bytes") or 0) or None)
        body = ChunkedBody(self, headers, trailers, huge_header=huge)
        # endless_line: after after_rows rows, one row line that never ends.
        # raw_line: after after_rows rows, the fault's `line` verbatim as one more row line.
        endless_at = raw_at = None
        if fault and fault.get("kind") == "endless_line":
            endless_at = int(fault.get("after_rows") or 0)
        if fault and fault.get("kind") == "raw_line":
            raw_at = int(fault.get("after_rows") or 0)
        limit_rows = None
        if fault and fault.get("kind") in ("truncate", "reset"):
            limit_rows = int(fault.get("after_rows", 0))
        # A delay fault with after_rows stalls mid-stream (after the 200 went out),
        # so cancellation and timeouts can hit a query that is already streaming.
        stall_at = None
        if fault and fault.get("kind") == "delay" and int(fault.get("after_rows") or 0):
            stall_at = int(fault["after_rows"])
        sent = 0
        complete = False
        try:
            if fast_rows is not None:
                body.write(writer.start())
                body.write(writer.header(header, [_native_or_none(t) for t in plan.types] if types_h else None,
                                         [t.sql for t in plan.types] if sqltypes_h else None))
                err = self._write_rendered(body, writer.n > 0, fast_rows, limit_rows, stall_at, fault, run,
                                           deadline, rec, qid)
                if err is not None:
                    return fail(err)
                if limit_rows is not None and len(fast_rows) >= limit_rows:
                    raise Abort(fault["kind"])
                if run.cancelled.is_set() and not body.started:
                    return fail(err_cancelled(qid))
                body.write(writer.end())
                body.finish(True)
                complete = True
                rec["status"] = 200
                return
            with store.lock:
                try:
                    cur = store.db.cursor()
                    cur.execute(plan.sql, plan.binds)
                    batch = cur.fetchmany(256)
                except sqlite3.Error as e:
                    return fail(self._sqlite_error(e))
            body.write(writer.start())
            body.write(writer.header(header, [_native_or_none(t) for t in plan.types] if types_h else None,
                                     [t.sql for t in plan.types] if sqltypes_h else None))
            while batch:
                for row in batch:
                    if limit_rows is not None and sent >= limit_rows:
                        raise Abort(fault["kind"])
                    if endless_at is not None and sent >= endless_at:
                        self._endless_line(body, writer, run, float(fault.get("delay_seconds") or 0))
                    if raw_at is not None and sent >= raw_at:
                        raw_at = None
                        body.write(writer._sep() + fault["line"])
                    if stall_at is not None and sent == stall_at:
                        stall_at = None
                        body.flush()
                        self._stall(float(fault.get("delay_seconds", 1)), run, deadline)
                    if run.cancelled.is_set():
                        if not body.started:
                            return fail(err_cancelled(qid))
                        raise Abort("cancel")
                    if deadline and time.time() >= deadline:
                        if not body.started:
                            return fail(err_timeout())
                        raise Abort("timeout")
                    body.write(writer.row([f(v) for f, v in zip(formatters, row)]))
                    sent += 1
                    rec["rows_sent"] = sent
                with store.lock:
                    try:
                        batch = cur.fetchmany(256)
                    except sqlite3.Error as e:
                        if not body.started:
                            return fail(self._sqlite_error(e))
                        raise Abort("error")
            if limit_rows is not None and sent >= limit_rows:
                raise Abort(fault["kind"])
            if endless_at is not None:
                self._endless_line(body, writer, run, float(fault.get("delay_seconds") or 0))
            if raw_at is not None:
                body.write(writer._sep() + fault["line"])
            if run.cancelled.is_set() and not body.started:
                return fail(err_cancelled(qid))
            body.write(writer.end())
            body.finish(True)
            complete = True
            rec["status"] = 200
        except Abort as a:
            rec["status"] = 200
            if str(a) == "reset":
                body.flush()
                self.wfile.flush()
                self.close_connection = True
                self._drain_send_queue(2.0)
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                except OSError:
                    pass
            else:
                body.finish(False)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            rec["complete"] = complete
            rec["finished"] = time.time()

    def _write_rendered(self, body, after_header, rows, limit_rows, stall_at, fault, run, deadline, rec, qid):
        """The row lines of a pre-rendered slice (FastSlices), byte for byte what the row
        loop of the SQLite path writes: a row's separating newline goes out with the next
        row (or the end marker), so a truncated body ends without one and a stall leaves
        the last row unterminated, exactly as there.  Truncation (limit_rows), the
        mid-stream stall, cancellation and the deadline apply at the same row counts;
        the latter two are checked every PIECE_ROWS rows.  Returns a DruidError to send
        instead of the body (only before anything went out), else None."""
        n = len(rows) if limit_rows is None else min(len(rows), limit_rows)
        step = FastSlices.PIECE_ROWS
        lead = b"\n" if after_header else b""
        sent = 0
        while sent < n:
            if stall_at is not None and sent == stall_at:
                stall_at = None
                body.flush()
                self._stall(float(fault.get("delay_seconds", 1)), run, deadline)
            if run.cancelled.is_set():
                if not body.started:
                    return err_cancelled(qid)
                raise Abort("cancel")
            if deadline and time.time() >= deadline:
                if not body.started:
                    return err_timeout()
                raise Abort("timeout")
            stop = min(n, sent + step)
            if stall_at is not None and sent < stall_at < stop:
                stop = stall_at
            data = b"".join(rows[sent:stop])
            if lead:
                body.write_bytes(lead)
            body.write_bytes(memoryview(data)[:-1])
            lead = b"\n"
            sent = stop
            rec["rows_sent"] = sent
        return None

    def _endless_line(self, body, writer, run, delay):
        """Starts a row line and never ends it: 'x' at full speed, in 256 KiB chunks, until
        the client goes away (BrokenPipeError, caught by the caller) or cancels the query.
        delay: seconds to stall first (after what came before went out), so that several
        queries can be made to stream their endless lines at the same moment."""
        body.write(writer._sep() + '["')
        body.flush()
        if delay:
            self._stall(delay, run, None)
        chunk = b"x" * 262144
        frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        while not run.cancelled.is_set():
            self.wfile.write(frame)
        raise Abort("cancel")

    def _drain_send_queue(self, limit):
        """Waits (up to limit seconds) until the client has acknowledged everything sent:
        a reset discards what is still queued, so without this the rows before a reset
        fault would depend on timing (and on how large the last writes were)."""
        import fcntl
        import termios
        end = time.time() + limit
        buf = struct.pack("i", 0)
        while time.time() < end:
            try:
                if struct.unpack("i", fcntl.ioctl(self.connection.fileno(), termios.TIOCOUTQ, buf))[0] == 0:
                    return
            except OSError:
                return
            time.sleep(0.002)

    @staticmethod
    def _stall(seconds, run, deadline):
        end = time.time() + seconds
        while time.time() < end and not run.cancelled.is_set() and not (deadline and time.time() >= deadline):
            time.sleep(0.02)

    @staticmethod
    def _sqlite_error(e):
        msg = str(e)
        if "user-defined function raised exception" in msg:
            return err_general(500, "/ by zero", legacy_class="java.lang.ArithmeticException")
        if "integer overflow" in msg:
            return err_general(500, "long overflow", legacy_class="java.lang.ArithmeticException")
        return err_general(500, "Simulator SQL failure: %s" % msg)

    # -- control API
    def control(self, method, path):
        st = self.state
        store = st.store
        raw = self.read_body()
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except ValueError as e:
            return self.send_json(400, {"error": "bad JSON: %s" % e})
        ep = path[len("/__sim/"):].rstrip("/")
        try:
            if method == "POST" and ep == "datasource":
                cols = [(c["name"], type_from_name(c["type"])) for c in body.get("columns", [])]
                rows = body.get("rows", [])
                # A bare "ARRAY" column takes its element type from the data.
                fixed = []
                for n, t in cols:
                    if t.sql == "ARRAY" and body_type(body, n).upper() == "ARRAY":
                        t = T("ARRAY", infer_array_native([r.get(n) for r in rows]), "ARRAY")
                    fixed.append((n, t))
                store.create(body["name"], fixed, rows, granularity=body.get("granularity"),
                             rows_per_segment=body.get("rows_per_segment"))
                return self.send_json(200, {"ok": True, "rows": len(rows)})
            if method == "POST" and ep == "append":
                n = store.append(body["datasource"], body.get("rows", []))
                return self.send_json(200, {"ok": True, "rows": n})
            if method == "POST" and ep == "delete":
                n = store.delete(body["datasource"], body["start"], body["end"])
                return self.send_json(200, {"ok": True, "deleted": n})
            if method == "POST" and ep == "replace":
                n = store.replace(body["datasource"], body["start"], body["end"], body.get("rows", []))
                return self.send_json(200, {"ok": True, "rows": n})
            if method == "POST" and ep == "add_column":
                store.add_column(body["datasource"], body["name"], type_from_name(body["type"]))
                return self.send_json(200, {"ok": True})
            if method == "POST" and ep == "hide":
                store.hide(body["datasource"], body.get("hidden", True))
                return self.send_json(200, {"ok": True})
            if method == "POST" and ep == "drop":
                store.drop(body["datasource"])
                return self.send_json(200, {"ok": True})
            if method == "POST" and ep == "load":
                t = store.load_file(body["datasource"], body["file"], body.get("limit"), body.get("granularity"),
                                    body.get("rows"), body.get("cycle_ms"))
                return self.send_json(200, {"ok": True, "columns": [[c.name, c.t.info] for c in t.columns]})
            if method == "POST" and ep == "fault":
                kind = body.get("kind")
                if kind not in ("truncate", "reset", "status", "retry_after", "delay", "garbage", "endless_line",
                                "huge_header", "raw_line"):
                    raise ValueError("unknown fault kind [%s]" % kind)
                if kind == "raw_line" and not isinstance(body.get("line"), str):
                    raise ValueError("raw_line needs a string `line`")
                if kind == "status" and body.get("error") is not None:
                    fault_error(body["error"])  # validate the template name now
                f = dict(body)
                f.setdefault("match", None)
                f.setdefault("times", 1)
                f.setdefault("after_rows", 0)
                if kind == "retry_after":
                    # On its own, retry_after means: a 429 with a Retry-After header.
                    f.setdefault("error", "capacity")
                    f["kind"] = "status"
                    f.setdefault("retry_after", body.get("seconds", 1))
                with st.lock:
                    st.faults.append(f)
                return self.send_json(200, {"ok": True})
            if method == "DELETE" and ep == "faults":
                with st.lock:
                    st.faults = []
                store.clear_segment_faults()
                return self.send_json(200, {"ok": True})
            # -- segments (shared/reference/druid-segments.md)
            if method == "POST" and ep == "granularity":
                store.set_granularity(body["datasource"], body["granularity"])
                return self.send_json(200, {"ok": True})
            if method == "POST" and ep == "late_append":
                ids = store.late_append(body["datasource"], body.get("rows", []))
                return self.send_json(200, {"ok": True, "segments": ids})
            if method == "POST" and ep == "realtime":
                ids = store.late_append(body["datasource"], body.get("rows", []), realtime=True)
                return self.send_json(200, {"ok": True, "segments": ids})
            if method == "POST" and ep == "handoff":
                pairs = store.handoff(body["datasource"], body.get("start"), body.get("end"))
                return self.send_json(200, {"ok": True, "segments": pairs})
            if method == "POST" and ep == "compact":
                ids = store.compact(body["datasource"], body["start"], body["end"], body.get("granularity"),
                                    body.get("partitions", 1), body.get("available", True))
                return self.send_json(200, {"ok": True, "segments": ids})
            if method == "POST" and ep == "reindex":
                ids = store.reindex(body["datasource"], body["start"], body["end"], body.get("rows", []),
                                    body.get("granularity"), body.get("partitions", 1), body.get("available", True),
                                    body.get("empty_chunks", "tombstone"))
                return self.send_json(200, {"ok": True, "segments": ids})
            if method == "POST" and ep == "drop_interval":
                ids = store.drop_interval(body["datasource"], body["start"], body["end"])
                return self.send_json(200, {"ok": True, "segments": ids})
            if method == "POST" and ep == "availability":
                ids = store.set_available(body["datasource"], body.get("start"), body.get("end"),
                                          body.get("available", False), body.get("partitions"),
                                          body.get("replication_factor"), body.get("segment_ids"))
                return self.send_json(200, {"ok": True, "segments": ids})
            if method == "POST" and ep == "cleanup":
                n = store.cleanup(body["datasource"])
                return self.send_json(200, {"ok": True, "unused": n})
            if method == "POST" and ep == "num_rows":
                store.set_num_rows(body["datasource"], bool(body.get("known", False)), body.get("start"),
                                   body.get("end"))
                return self.send_json(200, {"ok": True})
            if method == "POST" and ep == "segments_forbidden":
                with store.lock:
                    store.segments_forbidden = bool(body.get("forbidden", True))
                return self.send_json(200, {"ok": True})
            if method == "POST" and ep == "segments_hidden":
                store.set_segments_hidden(body["datasource"], body.get("hidden", True))
                return self.send_json(200, {"ok": True})
            if method == "POST" and ep == "generate":
                t0 = time.time()
                first, n = store.generate(body["datasource"], body.get("segments", 10000),
                                          body.get("granularity", "HOUR"),
                                          body.get("start", "2020-01-01T00:00:00Z"), body.get("rows_per_segment", 1),
                                          body.get("partitions_per_chunk", 1))
                return self.send_json(200, {"ok": True, "segments": n, "first": first,
                                            "seconds": round(time.time() - t0, 3)})
            if method == "GET" and ep == "segments":
                from urllib.parse import parse_qs, urlsplit
                ds = (parse_qs(urlsplit(self.path).query).get("datasource") or [body.get("datasource")])[0]
                return self.send_json(200, store.segments(ds))
            if method == "GET" and ep == "faults":
                with st.lock:
                    return self.send_json(200, st.faults)
            if method == "GET" and ep == "queries":
                with st.lock:
                    return self.send_json(200, list(st.queries))
            if method == "DELETE" and ep == "queries":
                with st.lock:
                    st.queries = []
                return self.send_json(200, {"ok": True})
            if method == "GET" and ep == "stats":
                with st.lock:
                    return self.send_json(200, {"max_inflight": st.max_inflight, "inflight": st.inflight,
                                                "cancel_requests": list(st.cancel_requests)})
            if method == "DELETE" and ep == "stats":
                with st.lock:
                    st.max_inflight = st.inflight
                return self.send_json(200, {"ok": True})
            if ep == "fast_path" and method in ("GET", "POST"):
                # The pre-rendered slice path (FastSlices): on/off, and what it holds.
                if method == "POST" and "enabled" in body:
                    with store.fast.lock:
                        store.fast.enabled = bool(body["enabled"])
                return self.send_json(200, store.fast.info())
            if method == "GET" and ep == "datasources":
                with store.lock:
                    return self.send_json(200, {n: {"hidden": t.hidden, "listed": t.listed,
                                                    "granularity": t.granularity,
                                                    "columns": [[c.name, c.t.info] for c in t.columns]}
                                                for n, t in store.tables.items()})
            return self.send_json(404, {"error": "unknown control endpoint %s %s" % (method, path)})
        except KeyError as e:
            return self.send_json(400, {"error": "missing or unknown: %s" % (e.args[0],)})
        except (ValueError, TypeError, sqlite3.Error, OSError) as e:
            return self.send_json(400, {"error": str(e)})


def body_type(body, name):
    for c in body.get("columns", []):
        if c.get("name") == name:
            return str(c.get("type", ""))
    return ""


def _native_or_none(t):
    return t.native


def _version_tuple(v):
    try:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:3])
    except ValueError:
        return (0,)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(argv=None):
    ap = argparse.ArgumentParser(description="Druid SQL API simulator")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--load", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--granularity", action="append", default=[], metavar="NAME=GRANULARITY",
                    help="segment granularity of a --load datasource (HOUR, DAY, MONTH, YEAR, ALL, ...; DAY)")
    ap.add_argument("--auth", metavar="USER:PASS")
    ap.add_argument("--legacy-errors", action="store_true")
    ap.add_argument("--version", default="37.0.0")
    ap.add_argument("--no-trailers", action="store_true", help="do not send the Druid 31+ HTTP trailer")
    ap.add_argument("--documented-content-types", action="store_true",
                    help="text/plain for the line formats and text/csv for csv, as the docs say")
    ap.add_argument("--no-fast-path", action="store_true",
                    help="serve every query through SQLite (no pre-rendered slices)")
    ap.add_argument("--tls-cert", help="also serve HTTPS (same data) with this PEM certificate")
    ap.add_argument("--tls-key", help="the certificate's PEM private key")
    ap.add_argument("--tls-port-file", help="where to write the HTTPS port")
    args = ap.parse_args(argv)

    store = Store(args.version)
    store.fast.enabled = not args.no_fast_path
    grans = {}
    for spec in args.granularity:
        name, _, g = spec.partition("=")
        try:
            grans[name] = granularity_name(g)
        except ValueError as e:
            ap.error("--granularity: %s" % e)
    for spec in args.load:
        name, _, path = spec.partition("=")
        if not name or not path:
            ap.error("--load wants NAME=FILE")
        store.load_file(name, path, granularity=grans.get(name))
    Handler.state = SimState(store, args)
    srv = Server((args.host, args.port), Handler)
    port = srv.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp%d" % os.getpid()
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("druid_sim listening on %s:%d" % (args.host, port), flush=True)
    tls_srv = None
    if args.tls_cert:
        # A second listener with TLS over the same state: the control API stays plain HTTP
        # on the first port, the daemon under test talks HTTPS to this one.
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        tls_srv = Server((args.host, 0), Handler)
        tls_srv.socket = ctx.wrap_socket(tls_srv.socket, server_side=True)
        tls_port = tls_srv.server_address[1]
        if args.tls_port_file:
            tmp = args.tls_port_file + ".tmp%d" % os.getpid()
            with open(tmp, "w") as f:
                f.write("%d\n" % tls_port)
            os.replace(tmp, args.tls_port_file)
        threading.Thread(target=tls_srv.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()
        print("druid_sim listening with TLS on %s:%d" % (args.host, tls_port), flush=True)

    def stop(_sig, _frm):
        threading.Thread(target=srv.shutdown, daemon=True).start()
        if tls_srv:
            threading.Thread(target=tls_srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
