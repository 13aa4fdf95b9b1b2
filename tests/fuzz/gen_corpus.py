#!/usr/bin/python3
"""Writes the seed corpora under tests/fuzz/corpus/<target>/ (checked in; rerun only to
change them). Sources: the wire reference (/work/shared/reference/druid-sql-api.md §2, §3, §5),
the sample data (DSYNC_SHARED_DATA, default /work/shared/data), the repo's etc/*.json.

Usage: /usr/bin/python3 tests/fuzz/gen_corpus.py"""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DATA = os.environ.get("DSYNC_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
OUT = os.path.join(HERE, "corpus")


def jl(v):
    """One line as Druid's Jackson writes it: no spaces, UTF-8 raw, '/' not escaped."""
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


WIKI_COLS = ["__time", "channel", "cityName", "isRobot", "metroCode", "added", "delta", "page"]
WIKI_NATIVE = ["LONG", "STRING", "STRING", "LONG", "LONG", "LONG", "LONG", "STRING"]
WIKI_SQL = ["TIMESTAMP", "VARCHAR", "VARCHAR", "BIGINT", "BIGINT", "BIGINT", "BIGINT", "VARCHAR"]


def wiki_rows(n):
    rows = []
    path = os.path.join(DATA, "wikiticker-2015-09-12-sampled.head1000.json")
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows.append([r["time"], r["channel"], r["cityName"], 1 if r["isRobot"] else 0,
                         r["metroCode"], r["added"], r["delta"], r["page"]])
            if len(rows) == n:
                break
    return rows


# Values that have broken decoders elsewhere: 64-bit edges, Druid's double spellings, the
# non-finite strings, escapes, surrogate pairs (and lone ones), NUL, deep nesting.
TRICKY = [
    9223372036854775807, -9223372036854775808, 9223372036854775808, 9007199254740993, 0, -0,
    1.0E7, 1.0E-5, 542.0, "NaN", "Infinity", "-Infinity", True, False, None,
    "tab\there", "new\nline", "back\\slash", "quote\"", "\u0000nul", "\u007fdel",
    "caf\u00e9 \u6f22 \U0001f600", "\ud83d\ude00", "[\"a\",\"b\"]", "{\"color\":\"sky blue\"}",
    "2015-09-12T00:46:58.771Z", "1999-12-31T16:00:00.000-08:00", "-292275055-05-16T16:47:04.192Z",
    "2000-01-01T00:00:00.000Z", "\\N", "",
]


def lines_corpus():
    t = "fuzz_druid_lines"
    # reference §2: the running example, exact bytes
    write(t, "ref_arraylines_example",
          '["__time","channel","added"]\n["LONG","STRING","LONG"]\n["TIMESTAMP","VARCHAR","BIGINT"]\n'
          '["2015-09-12T00:46:58.771Z","#en.wikipedia",36]\n["2015-09-12T00:47:00.496Z","#ca.wikipedia",17]\n\n')
    write(t, "ref_empty_body", "\n\n")
    write(t, "ref_header_only", '["a"]\n\n')
    write(t, "ref_objectlines", '{"__time":"2015-09-12T00:46:58.771Z","channel":"#en.wikipedia","added":36}\n'
          '{"__time":"2015-09-12T00:47:00.496Z","channel":"#ca.wikipedia","added":17}\n\n')
    # reference §3.3: truncated bodies
    write(t, "ref_truncated_no_newline", "[1]\n[1]")
    write(t, "ref_truncated_one_newline", "[1]\n[1]\n")
    write(t, "csv_single_newline", "\n")
    write(t, "after_end_marker", "[1]\n\n[2]\n\n")
    write(t, "empty_then_data", "\n[1]\n\n")
    write(t, "crlf", "[1]\r\n[2]\r\n\r\n")
    write(t, "three_newlines", "[1]\n\n\n")
    body = [WIKI_COLS, WIKI_NATIVE, WIKI_SQL] + wiki_rows(6)
    write(t, "wikiticker_6_rows", "".join(jl(r) + "\n" for r in body) + "\n")
    write(t, "long_line", jl(["x" * 3000]) + "\n\n")
    write(t, "tricky_values", jl(["v"]) + "\n" + "".join(jl([v]) + "\n" for v in TRICKY) + "\n")


def rowenc_corpus():
    t = "fuzz_rowenc"
    rows = wiki_rows(8)
    write(t, "wikiticker_typed", "*Tttbbbbt\n" + "".join(jl(r) + "\n" for r in rows))
    write(t, "wikiticker_two_slices", "*Tttobbbt\n" + jl(rows[0]) + "\n" + jl(rows[0]) + "\n\n" +
          jl(rows[0]) + "\n" + jl(rows[1]) + "\n")
    write(t, "duplicate_rows", "bt\n" + "[1,\"a\"]\n" * 4)
    write(t, "no_id", "-tbd\n[\"x\",1,1.5]\n[null,null,null]\n")
    write(t, "fixed_arity_mismatch", "=tb\n[\"x\",1,2]\n[\"x\"]\n[]\n")
    write(t, "zero_columns", "=\n[]\n[]\n")
    write(t, "bigint_edges", "b\n" + "".join("[%s]\n" % v for v in [
        "9223372036854775807", "-9223372036854775808", "9223372036854775808", "9007199254740993",
        "\"-12\"", "\"+7\"", "\"12a\"", "true", "1.5", "1e3", "\"99999999999999999999\""]))
    write(t, "double_values", "d\n" + "".join("[%s]\n" % v for v in [
        "1.0E7", "1.0E-5", "542.0", "0.1", "\"NaN\"", "\"Infinity\"", "\"-Infinity\"", "1e400",
        "-1e400", "NaN", "Infinity", "-Infinity", "1.", "9223372036854775807", "\"1.5\""]))
    write(t, "boolean_values", "o\n" + "".join("[%s]\n" % v for v in [
        "true", "false", "0", "1", "2", "\"true\"", "\"FALSE\"", "\"yes\"", "null"]))
    write(t, "timestamps", "*T\n" + "".join("[%s]\n" % jl(v) for v in [
        "2015-09-12T00:46:58.771Z", "1999-12-31T16:00:00.000-08:00", "2015-09-12T00:46:58Z",
        "2015-09-12", "2015-09-12 00:46:58.771", "-292275055-05-16T16:47:04.192Z",
        "0000-01-01T00:00:00.000Z", "+294276-12-31T23:59:59.999Z", "2015-02-29T00:00:00Z",
        "not a time", 1442018818771, -62135596800001, 9223372036854775807]))
    write(t, "dates", "D\n" + "".join("[%s]\n" % jl(v) for v in [
        "2000-01-01T00:00:00.000Z", "1999-12-31T00:00:00.000-08:00", "2000-01-01", "0000-01-01",
        "-0001-03-01T00:00:00.000Z", "5874897-12-31T00:00:00.000Z", 946684800000, -1]))
    write(t, "text_escapes", "t\n" + "".join(jl([v]) + "\n" for v in [
        "tab\there", "new\nline\r", "back\\slash", "\\N", "\u0000nul\u0000", "\u0001\u001f\u007f",
        "caf\u00e9 \u6f22 \U0001f600", "\b\f\v", ""]) + '["\\ud83d\\ude00"]\n["\\ud800"]\n["\\udc00x"]\n')
    write(t, "jsonb_values", "j\n" + "".join("[%s]\n" % v for v in [
        jl("[\"a\",\"b\"]"), jl("{\"color\":\"sky blue\",\"price\":542.0}"), jl("[999.0,null,5.5]"),
        jl("\"AgEHDAMIAgDh\""), jl("not json"), jl("[1,]"), jl("{\"a\":\"\\u0000\"}"),
        jl("[\"\\ud800\"]"), jl("1e999999999"), jl("NaN"), "[1,2]", "{\"a\":[true,null]}",
        "NaN", "1.", "\"x\"", "[\"\\u0000\"]", "1E400", "{\"k\":\"\\udc00\"}"]))
    write(t, "deep_array_string", "j\n" + jl(["[" * 300 + "]" * 300]) + "\n")
    write(t, "deep_array_value", "jt\n[" + "[" * 200 + "]" * 200 + "," + "[" * 40 + "]" * 40 + "]\n")
    write(t, "deep_object_value", "j\n[" + "{\"a\":" * 100 + "1" + "}" * 100 + "]\n")
    write(t, "all_types_one_row", "*TtbdoDj\n" + jl(["2015-09-12T00:46:58.771Z", "#en", 36, 1.0E7, True,
                                                    "2015-09-12T00:00:00.000Z", "[1]"]) + "\n")
    write(t, "all_types_nulls", "tbdoTDj\n[null,null,null,null,null,null,null]\n")
    write(t, "strings_in_numbers", "bdoTDj\n[\"x\",\"y\",\"z\",\"w\",\"v\",\"u\"]\n[{},{},{},{},{},{}]\n")
    write(t, "inc_bad", "b*t\n[1,true]\n[2,\"1442018818771\"]\n[3,\"2015-09-12T00:46:58.771Z\"]\n")
    write(t, "not_arrays", "t\n{\"a\":1}\n\"x\"\n[1] [2]\n[1\n")


def error_corpus():
    t = "fuzz_druid_error"
    # reference §5.2 and §5.3, verbatim
    write(t, "legacy_timeout_504", '504\n{"error":"Query timeout","errorMessage":"Query did not complete within configured timeout period. You can increase query timeout or tune the performance of query.","errorClass":"org.apache.druid.query.QueryTimeoutException","host":"druid-broker:8082"}')
    write(t, "legacy_capacity_429", '429 5\n{"error":"Query capacity exceeded","errorMessage":"Too many concurrent queries for lane \'low\', query capacity of 2 exceeded. Please try your query again later.","errorClass":"org.apache.druid.query.QueryCapacityExceededException","host":null}')
    write(t, "druid27_invalid_input_400", '400\n{"error":"druidException","errorCode":"invalidInput","persona":"USER","category":"INVALID_INPUT","errorMessage":"Object \'nope\' not found (line [1], column [15])","context":{"sourceType":"sql","line":"1","column":"15","endLine":"1","endColumn":"18"}}')
    write(t, "druid27_div_zero_500", '500\n{"error":"druidException","errorCode":"general","persona":"ADMIN","category":"UNCATEGORIZED","errorMessage":"/ by zero","context":{}}')
    write(t, "druid27_wrapped_timeout_504", '504\n{"error":"Query timeout","errorClass":"org.apache.druid.query.QueryTimeoutException","host":"172.18.0.5:8083","errorCode":"legacyQueryException","persona":"OPERATOR","category":"TIMEOUT","errorMessage":"url[http://172.18.0.5:8083/druid/v2/] timed out","context":{"host":"172.18.0.5:8083","errorClass":"org.apache.druid.query.QueryTimeoutException","legacyErrorCode":"Query timeout"}}')
    write(t, "cancelled_500", '500\n{"error":"Query cancelled","errorClass":null,"errorCode":"legacyQueryException","persona":"USER","category":"CANCELED","errorMessage":null,"context":{}}')
    write(t, "unsupported_501", '501\n{"error":"Unsupported query","errorClass":"org.apache.druid.query.QueryUnsupportedException","errorMessage":"x"}')
    write(t, "unauthorized_401", '401\n{"error":"Unauthorized request","errorMessage":null,"errorClass":null,"host":"broker"}')
    write(t, "unauthorized_jetty_401", '401\n<html><head><title>Error 401 Unauthorized</title></head><body>User authentication failed username[x].</body></html>')
    write(t, "forbidden_403", '403\n{"error":"Unauthorized"}')
    write(t, "jetty_429_text", '429 Wed, 21 Oct 2026 07:28:00 GMT\nToo Many Requests')
    write(t, "proxy_502_html", '502\n<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\x01\x7f</body></html>\r\n')
    write(t, "empty_503", '503 120\n')
    write(t, "no_body_no_newline", '500')
    write(t, "trailing_garbage", '500\n{"errorMessage":"x"} trailing')
    write(t, "trailing_ws", '400\n{"errorMessage":"x","category":"INVALID_INPUT"}  \r\n\t')
    write(t, "not_object", '500\n["errorMessage"]')
    write(t, "types_wrong", '500\n{"error":1,"errorCode":[],"category":{},"errorMessage":null}')
    write(t, "long_message", '500\n' + jl({"error": "druidException", "category": "RUNTIME_FAILURE",
                                           "errorMessage": "m" * 2000, "errorCode": "c" * 200}))
    write(t, "escapes_nul", '400\n{"errorMessage":"a\\u0000b\\nWATCHDOG=trigger\\nSTOPPING=1","error":"SQL parse failed"}')
    write(t, "retry_after_huge", '429 99999999999999999999999\n')
    write(t, "retry_after_exp", '503 1e999\n')
    write(t, "retry_after_date_digit", '503 07 Nov 2026 08:49:37 GMT\n')
    write(t, "status_200", '200\n{"errorMessage":"x"}')
    write(t, "status_0", '0\n')
    write(t, "deep_nesting", '500\n{"a":' + "[" * 100 + "]" * 100 + ',"errorMessage":"deep"}')


def config_corpus():
    t = "fuzz_config"
    for name in sorted(os.listdir(os.path.join(REPO, "etc"))):
        if name.endswith(".json"):
            shutil.copyfile(os.path.join(REPO, "etc", name), os.path.join(OUT, t, "etc_" + name))
    write(t, "minimal_host", '{"druid_host":"localhost"}')
    write(t, "all_keys", jl({
        "druid_host": "druid.example.com", "druid_port": "8443", "schema_name": "druid",
        "incremental_column": "__time", "use_ssl": "true", "druid_username": "u",
        "druid_password": "s3cret-password", "tls_verify": False, "postgres": "postgresql://u@h/db",
        "destination_schema": "mirror", "datasources": ["a", "b"], "exclude_datasources": ["b"],
        "sync_interval_seconds": 0.5, "batch_size": 1, "max_concurrent_queries": 256,
        "request_timeout_seconds": 1e9, "lookback_seconds": 0, "soft_deletes": False,
        "metadata_column_prefix": "p" * 48, "max_retries": 1000, "retry_initial_seconds": 2,
        "retry_max_seconds": 2, "log_level": "debug", "shutdown_timeout_seconds": 1,
        "metrics_listen": "[::1]:9187"}))
    write(t, "listen_v4", '{"druid_host":"h","metrics_listen":"127.0.0.1:0"}')
    write(t, "duplicate_key", '{"druid_host":"a","druid_host":"b"}')
    write(t, "duplicate_nested", '{"druid_host":"a","datasources":["x","x"],"exclude_datasources":[]}')
    write(t, "unknown_key_typo", '{"druid_hots":"a"}')
    write(t, "password_in_error", '{"druid_host":"h","druid_password":"hunter2-secret","druid_port":"x"}')
    write(t, "password_without_user", '{"druid_host":"h","druid_password":"pw-pw-pw-pw"}')
    write(t, "password_file_missing", '{"druid_host":"h","druid_username":"u","druid_password_file":"/nonexistent/pw"}')
    write(t, "password_file_dir", '{"druid_host":"h","druid_username":"u","druid_password_file":"/"}')
    write(t, "both_passwords", '{"druid_host":"h","druid_username":"u","druid_password":"x","druid_password_file":"/etc/hostname"}')
    write(t, "tls_ca_missing", '{"druid_host":"h","tls_ca_file":"/nonexistent.pem"}')
    write(t, "numbers_edges", '{"druid_host":"h","druid_port":65536,"batch_size":9223372036854775807,"max_retries":-1}')
    write(t, "number_as_double", '{"druid_host":"h","druid_port":8888.0,"sync_interval_seconds":1.0E7}')
    write(t, "nan_strings", '{"druid_host":"h","sync_interval_seconds":"NaN","lookback_seconds":NaN}')
    write(t, "bad_retry_bounds", '{"druid_host":"h","retry_initial_seconds":10,"retry_max_seconds":1}')
    write(t, "prefix_too_long", '{"druid_host":"h","metadata_column_prefix":"' + "p" * 49 + '"}')
    write(t, "escapes_surrogates", '{"druid_host":"h\\u00e9\\ud83d\\ude00","schema_name":"\\ud800"}')
    write(t, "nul_escape", '{"druid_host":"a\\u0000b"}')
    write(t, "nul_byte", b'{"druid_host":"a\x00b"}')
    write(t, "invalid_utf8", b'{"druid_host":"\xff\xfe"}')
    write(t, "comment_and_trailing_comma", '{"druid_host":"h", /* c */ "druid_port":1,}')
    write(t, "top_level_array", '["druid_host"]')
    write(t, "top_level_null", 'null')
    write(t, "empty", '')
    write(t, "truncated", '{"druid_host":"h","datasources":["a",')
    write(t, "deep_nesting", '{"druid_host":"h","datasources":' + "[" * 200 + "]" * 200 + '}')
    write(t, "log_level_bad", '{"druid_host":"h","log_level":"verbose"}')
    write(t, "host_with_scheme", '{"druid_host":"http://h:8888/"}')
    write(t, "listen_bad", '{"druid_host":"h","metrics_listen":"[::1:9187"}')
    write(t, "lists_wrong", '{"druid_host":"h","datasources":"a","exclude_datasources":[1,null,""]}')
    write(t, "multiline_error_line", '{\n  "druid_host": "h",\n  "druid_port": true\n}\n')


def main():
    if not os.path.isdir(DATA):
        sys.exit("sample data not found: set DSYNC_SHARED_DATA")
    for t in ("fuzz_druid_lines", "fuzz_rowenc", "fuzz_druid_error", "fuzz_config"):
        shutil.rmtree(os.path.join(OUT, t), ignore_errors=True)
        os.makedirs(os.path.join(OUT, t))
    lines_corpus()
    rowenc_corpus()
    error_corpus()
    config_corpus()


if __name__ == "__main__":
    main()
