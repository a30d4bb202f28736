"""parse_line: each format on realistic lines, timestamps and zones, severities, and that no input makes it
raise or drop the line's text."""

from __future__ import annotations

import calendar
import json
import math
import random
import re
import time
from pathlib import Path

import pytest

from ops_agent.tools.logs.ingest.parse import FORMATS, detect_format, parse_line
from ops_agent.tools.logs.record import SEVERITIES, LogRecord

RECEIVED = 1_700_000_000.0  # 2023-11-14T22:13:20Z
LOGHUB = Path(__file__).resolve().parents[2] / "shared/data/loghub-2k"
SURROGATE = re.compile("[\ud800-\udfff]")


def utc(*fields: int) -> float:
    return float(calendar.timegm(fields + (0,) * (6 - len(fields))))


# --- JSON ----------------------------------------------------------------------------------------------------

VERCEL_DRAIN = (
    '{"id":"1573817187330377061717300000","deploymentId":"dpl_233NRGRjVZX1caZrXWtz5g1TAksD","source":"build",'
    '"host":"my-app-abc123.vercel.app","timestamp":1573817187330,"projectId":"gdufoJxB6b9b1fEqr1jUtFkyavUU",'
    '"level":"info","message":"Build completed successfully","buildId":"bld_cotnkcr76","type":"stdout",'
    '"projectName":"my-app"}'
)


def test_vercel_log_drain_record():
    record = parse_line(VERCEL_DRAIN, received=RECEIVED)
    assert detect_format(VERCEL_DRAIN) == "json"
    assert record.time == pytest.approx(1573817187.330)
    assert (record.message, record.severity) == ("Build completed successfully", "info")
    assert (record.service, record.host) == ("my-app", "my-app-abc123.vercel.app")
    assert record.attributes == {
        "id": "1573817187330377061717300000",
        "deploymentId": "dpl_233NRGRjVZX1caZrXWtz5g1TAksD",
        "source": "build",
        "projectId": "gdufoJxB6b9b1fEqr1jUtFkyavUU",
        "buildId": "bld_cotnkcr76",
        "type": "stdout",
    }


def test_pino_numeric_level_and_epoch_milliseconds():
    line = '{"level":50,"time":1700000000123,"pid":4242,"hostname":"web-1","msg":"db down","err":{"type":"Error","stack":"x"}}'
    record = parse_line(line, service="api")
    assert record.time == pytest.approx(1700000000.123)
    assert (record.severity, record.message, record.host, record.service) == ("error", "db down", "web-1", "api")
    assert record.attributes == {"pid": 4242, "err": {"type": "Error", "stack": "x"}}


@pytest.mark.parametrize(
    ("level", "severity"),
    [(10, "debug"), (20, "debug"), (30, "info"), (40, "warning"), (50, "error"), (60, "critical"),
     (3, "error"), ("WARN", "warning"), ("Fatal", "critical"), ("trace", "debug"), ("30", "info")],
)
def test_json_levels(level, severity):
    assert parse_line(json.dumps({"level": level, "msg": "m"})).severity == severity


def test_unknown_level_stays_an_attribute():
    record = parse_line('{"level":"chatty","msg":"m"}')
    assert record.severity == "info"
    assert record.attributes == {"level": "chatty"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"2024-01-02T03:04:05Z"', utc(2024, 1, 2, 3, 4, 5)),
        ('"2024-01-02T03:04:05.250+02:00"', utc(2024, 1, 2, 1, 4, 5) + 0.25),
        ('"2024-01-02T03:04:05.123456789-0500"', utc(2024, 1, 2, 8, 4, 5) + 0.123456),
        ('"2024-01-02 03:04:05"', utc(2024, 1, 2, 3, 4, 5)),  # no zone: UTC
        ("1704164645", utc(2024, 1, 2, 3, 4, 5)),
        ("1704164645.5", utc(2024, 1, 2, 3, 4, 5) + 0.5),
        ("1704164645500", utc(2024, 1, 2, 3, 4, 5) + 0.5),
        ("1704164645500000", utc(2024, 1, 2, 3, 4, 5) + 0.5),
        ("1704164645500000000", utc(2024, 1, 2, 3, 4, 5) + 0.5),
        ('"1704164645500"', utc(2024, 1, 2, 3, 4, 5) + 0.5),
        ('"02/Jan/2024:04:04:05 +0100"', utc(2024, 1, 2, 3, 4, 5)),
        ('"Tue, 02 Jan 2024 03:04:05 GMT"', utc(2024, 1, 2, 3, 4, 5)),
        ('{"seconds": 1704164645, "nanos": 500000000}', utc(2024, 1, 2, 3, 4, 5) + 0.5),
    ],
)
def test_json_time_forms(value, expected):
    record = parse_line(f'{{"time": {value}, "msg": "m"}}', received=RECEIVED)
    assert record.time == pytest.approx(expected, abs=1e-6)
    assert "time" not in record.attributes


@pytest.mark.parametrize("key", ["time", "timestamp", "ts", "@timestamp", "date", "timestampInMs"])
def test_json_time_keys(key):
    assert parse_line(json.dumps({key: 1704164645000, "msg": "m"})).time == utc(2024, 1, 2, 3, 4, 5)


def test_unreadable_time_stays_an_attribute_and_received_is_used():
    record = parse_line('{"time":"soon","msg":"m"}', received=RECEIVED)
    assert record.time == RECEIVED
    assert record.attributes == {"time": "soon"}


def test_ecs_dotted_and_nested_fields():
    line = json.dumps({
        "@timestamp": "2024-01-02T03:04:05.678Z",
        "log.level": "warn",
        "message": "slow query",
        "service": {"name": "orders", "version": "1.2"},
        "host": {"name": "node-7", "ip": ["10.0.0.7"]},
        "trace.id": "abc",
    })
    record = parse_line(line)
    assert (record.severity, record.service, record.host) == ("warning", "orders", "node-7")
    assert record.time == pytest.approx(utc(2024, 1, 2, 3, 4, 5) + 0.678)
    assert record.attributes == {"service": {"version": "1.2"}, "host": {"ip": ["10.0.0.7"]}, "trace.id": "abc"}


def test_json_field_alternatives():
    record = parse_line('{"ts":"2024-01-02T03:04:05Z","lvl":"error","log":"oops\\n","app":"billing","hostname":"h"}')
    assert (record.message, record.severity, record.service, record.host) == ("oops", "error", "billing", "h")
    record = parse_line('{"levelname":"CRITICAL","event":"structlog says","logger":"app.db"}')
    assert (record.message, record.severity, record.service) == ("structlog says", "critical", "app.db")


def test_json_without_message_keeps_the_line_as_message():
    line = '{"status":200,"path":"/health"}'
    record = parse_line(line, received=RECEIVED)
    assert record.message == line
    assert record.attributes == {"status": 200, "path": "/health"}
    assert record.time == RECEIVED


def test_non_json_constants_stay_json_compatible():
    record = parse_line('{"msg":"m","ratio":NaN,"big":Infinity,"huge":-1e999,"fine":0.5}')
    assert record.attributes == {"ratio": "NaN", "big": "Infinity", "huge": "-1e999", "fine": 0.5}
    json.dumps(record.attributes, allow_nan=False)


@pytest.mark.parametrize("line", ['{"msg": "unterminated', '{not json at all}', '{"a":1} trailing}', "{" * 50_000 + "}"])
def test_invalid_json_falls_back_to_text(line):
    record = parse_line(line, received=RECEIVED)
    assert detect_format(line) == "text"
    assert record.message == line
    assert record.time == RECEIVED


# --- logfmt --------------------------------------------------------------------------------------------------

def test_logfmt():
    line = 'ts=2024-01-02T03:04:05.5Z level=error caller=main.go:42 msg="could not \\"connect\\" to db" service=api retries=3 dry_run'
    record = parse_line(line, service="default")
    assert detect_format(line) == "logfmt"
    assert record.time == pytest.approx(utc(2024, 1, 2, 3, 4, 5) + 0.5)
    assert (record.severity, record.message, record.service) == ("error", 'could not "connect" to db', "api")
    assert record.attributes == {"caller": "main.go:42", "retries": "3", "dry_run": True}


def test_logfmt_heroku_router():
    line = 'at=error code=H12 desc="Request timeout" method=GET path="/" host=myapp.herokuapp.com status=503 bytes=0'
    record = parse_line(line, received=RECEIVED)
    assert (record.severity, record.host, record.time) == ("error", "myapp.herokuapp.com", RECEIVED)
    assert record.message == line  # no msg field: the line is the message
    assert record.attributes["desc"] == "Request timeout"


def test_prose_with_a_stray_pair_is_text():
    line = "user=bob logged in from 10.0.0.1 after 3 attempts"
    assert detect_format(line) == "text"
    assert parse_line(line).message == line


# --- syslog --------------------------------------------------------------------------------------------------

def test_rfc3164_with_priority():
    line = "<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed for lonvick on /dev/pts/8"
    record = parse_line(line, year=2003)
    assert detect_format(line) == "syslog"
    assert record.time == utc(2003, 10, 11, 22, 14, 15)
    assert (record.host, record.service, record.severity) == ("mymachine", "su", "critical")  # 34 % 8 == 2
    assert record.message == "'su root' failed for lonvick on /dev/pts/8"
    assert record.attributes == {"facility": 4, "pid": 123}


def test_rfc3164_without_priority_takes_the_received_year():
    line = "Jun  4 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0"
    record = parse_line(line, received=RECEIVED)
    assert record.time == utc(2023, 6, 4, 15, 16, 1)
    assert (record.host, record.service, record.attributes) == ("combo", "sshd(pam_unix)", {"pid": 19939})
    assert record.severity == "info"


def test_rfc3164_date_ahead_of_receipt_is_last_year():
    received = utc(2024, 1, 1, 0, 5)
    record = parse_line("Dec 31 23:59:58 host cron[1]: job done", received=received)
    assert record.time == utc(2023, 12, 31, 23, 59, 58)


def test_rfc3164_severity_from_message_and_tag_without_pid():
    record = parse_line("Dec 10 07:51:15 LabSZ sshd[24324]: error: Received disconnect from 1.2.3.4", year=2023)
    assert record.severity == "error"
    record = parse_line("Jun 15 04:06:20 combo logrotate: ALERT exited abnormally with [1]", year=2005)
    assert (record.service, record.message, record.attributes) == ("logrotate", "ALERT exited abnormally with [1]", {})


def test_rfc5424():
    line = ('<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
            '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][origin ip="192.0.2.1"] '
            '\ufeffAn application event log entry...')
    record = parse_line(line, service="fallback")
    assert detect_format(line) == "syslog"
    assert record.time == pytest.approx(utc(2003, 10, 11, 22, 14, 15) + 0.003)
    assert (record.host, record.service, record.severity) == ("mymachine.example.com", "evntslog", "notice")
    assert record.message == "An application event log entry..."
    assert record.attributes == {
        "facility": 20,
        "msgid": "ID47",
        "structured_data": {
            "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
            "origin": {"ip": "192.0.2.1"},
        },
    }


def test_rfc5424_with_offset_pid_nil_fields_and_escapes():
    line = '<11>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - [x@1 q="a \\"b\\" \\]c"] It\'s time'
    record = parse_line(line)
    assert record.time == pytest.approx(utc(2003, 8, 24, 12, 14, 15) + 0.000003)
    assert (record.severity, record.message) == ("error", "It's time")
    assert record.attributes == {"facility": 1, "pid": 8710, "structured_data": {"x@1": {"q": 'a "b" ]c'}}}
    record = parse_line("<14>1 - - - - - - no time, no host", host="h0", received=RECEIVED)
    assert (record.time, record.host, record.service, record.message) == (RECEIVED, "h0", "", "no time, no host")


def test_rsyslog_high_precision_format():
    line = "2024-05-01T10:00:00.123456+02:00 web-3 sshd[812]: Accepted publickey for deploy"
    record = parse_line(line)
    assert detect_format(line) == "syslog"
    assert record.time == pytest.approx(utc(2024, 5, 1, 8) + 0.123456)
    assert (record.host, record.service, record.message) == ("web-3", "sshd", "Accepted publickey for deploy")


# --- access logs ---------------------------------------------------------------------------------------------

def test_combined_log_format():
    line = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
    record = parse_line(line, service="web")
    assert detect_format(line) == "combined"
    assert record.time == utc(2000, 10, 10, 20, 55, 36)
    assert (record.message, record.severity, record.service) == ("GET /apache_pb.gif 200", "info", "web")
    assert record.attributes == {
        "client_ip": "127.0.0.1", "user": "frank", "method": "GET", "path": "/apache_pb.gif", "protocol": "HTTP/1.0",
        "status": 200, "bytes": 2326, "referer": "http://www.example.com/start.html",
        "user_agent": "Mozilla/4.08 [en] (Win98; I ;Nav)",
    }


def test_common_log_format_and_status_severities():
    record = parse_line('10.1.2.3 - - [02/Jan/2024:03:04:05 +0000] "POST /api/orders HTTP/1.1" 503 -')
    assert (record.message, record.severity) == ("POST /api/orders 503", "error")
    assert record.attributes == {"client_ip": "10.1.2.3", "method": "POST", "path": "/api/orders",
                                 "protocol": "HTTP/1.1", "status": 503, "bytes": 0}
    assert parse_line('::1 - - [02/Jan/2024:03:04:05 +0000] "GET /x HTTP/2.0" 404 12 "-" "curl/8.5"').severity == "warning"
    assert parse_line('h.example.com - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 301 0 "-" "-"').severity == "info"


@pytest.mark.parametrize(("suffix", "duration_ms"), [(" 0.123", 123.0), (" rt=0.250", 250.0), (' "1.5"', 1500.0), (" 2500", 2.5)])
def test_nginx_request_time(suffix, duration_ms):
    line = '192.168.0.9 - - [02/Jan/2024:03:04:05 +0000] "GET /api HTTP/1.1" 200 512 "-" "Go-http-client/1.1"' + suffix
    assert parse_line(line).attributes["duration_ms"] == pytest.approx(duration_ms)


def test_access_log_keeps_unrecognised_trailing_fields_and_junk_requests():
    record = parse_line('1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 200 5 "-" "x" 0.010 "5.6.7.8, 9.9.9.9"')
    assert record.attributes["extra"] == '"5.6.7.8, 9.9.9.9"'
    record = parse_line('1.2.3.4 - - [02/Jan/2024:03:04:05 +0000] "\\x16\\x03\\x01\\x00\\xCA\\x01" 400 157 "-" "-"')
    assert (record.severity, record.attributes["request"], record.attributes["status"]) == ("warning", "\\x16\\x03\\x01\\x00\\xCA\\x01", 400)


# --- "timestamp level message" -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "when", "severity", "message", "attributes"),
    [
        ("2024-01-02T03:04:05Z ERROR payment failed", utc(2024, 1, 2, 3, 4, 5), "error", "payment failed", {}),
        ("2024-01-02T03:04:05.5+01:00 [WARN] disk at 91%", utc(2024, 1, 2, 2, 4, 5) + 0.5, "warning", "disk at 91%", {}),
        ("[2024-01-02 03:04:05] info: ready", utc(2024, 1, 2, 3, 4, 5), "info", "ready", {}),
        ("2024-01-02 03:04:05,678 - orders.db - ERROR - connection lost", utc(2024, 1, 2, 3, 4, 5) + 0.678, "error",
         "connection lost", {"logger": "orders.db"}),
        ("2024-01-02 03:04:05.678 ERROR [main-1] com.foo.Bar - failed to start", utc(2024, 1, 2, 3, 4, 5) + 0.678, "error",
         "failed to start", {"thread": "main-1", "logger": "com.foo.Bar"}),
        ("2015-10-18 18:01:47,978 INFO [main] org.apache.hadoop.mapreduce.v2.app.MRAppMaster: Created MRAppMaster",
         utc(2015, 10, 18, 18, 1, 47) + 0.978, "info", "Created MRAppMaster",
         {"thread": "main", "logger": "org.apache.hadoop.mapreduce.v2.app.MRAppMaster"}),
        ("2015-07-29 17:41:44,747 - WARN  [QuorumPeer[myid=1]/0.0.0.0:2181:Learner@233] - Unexpected exception",
         utc(2015, 7, 29, 17, 41, 44) + 0.747, "warning", "Unexpected exception",
         {"thread": "QuorumPeer[myid=1]/0.0.0.0:2181:Learner@233"}),
        ("2017-05-16 00:00:00.008 25746 INFO nova.osapi_compute.wsgi.server [req-1] GET /v2 status: 200",
         utc(2017, 5, 16) + 0.008, "info", "[req-1] GET /v2 status: 200", {"pid": 25746, "logger": "nova.osapi_compute.wsgi.server"}),
        ("ERROR 2024-01-02 03:04:05,678 lost the lock", utc(2024, 1, 2, 3, 4, 5) + 0.678, "error", "lost the lock", {}),
        ("[FATAL] 2024-01-02T03:04:05Z out of memory", utc(2024, 1, 2, 3, 4, 5), "critical", "out of memory", {}),
        ('2024/01/02 03:04:05 [error] 1234#0: *5 open() "/x" failed', utc(2024, 1, 2, 3, 4, 5), "error",
         '1234#0: *5 open() "/x" failed', {}),
        ("[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328] [client 72.15.99.187] File does not exist",
         utc(2000, 10, 11, 14, 32, 52) + 0.123456, "error", "[pid 35708:tid 4328] [client 72.15.99.187] File does not exist", {}),
        ("[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok", utc(2005, 12, 4, 4, 47, 44), "notice", "workerEnv.init() ok", {}),
        ("17/06/09 20:10:40 INFO executor.CoarseGrainedExecutorBackend: Registered signal handlers",
         utc(2017, 6, 9, 20, 10, 40), "info", "Registered signal handlers", {"logger": "executor.CoarseGrainedExecutorBackend"}),
        ("2024-01-02 03:04:05 server listening on :8080", utc(2024, 1, 2, 3, 4, 5), "info", "server listening on :8080", {}),
        ("2024-01-02 03:04:05.678 [http-nio-8080-exec-1] INFO  com.example.App - started", utc(2024, 1, 2, 3, 4, 5) + 0.678,
         "info", "started", {"thread": "http-nio-8080-exec-1", "logger": "com.example.App"}),
        ("16:09:35.123 [main] DEBUG c.e.App - wiring beans", utc(2023, 11, 14, 16, 9, 35) + 0.123, "debug",  # received's day
         "wiring beans", {"thread": "main", "logger": "c.e.App"}),
    ],
)
def test_generic(line, when, severity, message, attributes):
    record = parse_line(line, received=RECEIVED)
    assert detect_format(line) == "generic"
    assert record.time == pytest.approx(when, abs=1e-6)
    assert (record.severity, record.message, record.attributes) == (severity, message, attributes)


def test_time_of_day_ahead_of_receipt_is_the_day_before():
    record = parse_line("23:59:59 WARN late flush", received=utc(2024, 1, 2, 0, 0, 5))
    assert (record.time, record.severity, record.message) == (utc(2024, 1, 1, 23, 59, 59), "warning", "late flush")


def test_klog_takes_the_received_year():
    record = parse_line("E0102 15:04:05.123456   12345 reflector.go:42] failed to list pods", received=RECEIVED)
    assert record.time == pytest.approx(utc(2023, 1, 2, 15, 4, 5) + 0.123456)
    assert (record.severity, record.message) == ("error", "failed to list pods")
    assert record.attributes == {"pid": 12345, "source": "reflector.go:42"}


# --- plain text ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "severity"),
    [
        ("ERROR: out of memory", "error"),
        ("error: could not resolve host", "error"),
        ("node-7 kernel FATAL machine check", "critical"),
        ("081109 214043 2561 WARN dfs.DataNode$DataXceiver: Got exception", "warning"),
        ("worker [warn] queue is backing up", "warning"),
        ("the error rate went down", "info"),  # prose "error" is not a level
        ("just some text", "info"),
    ],
)
def test_plain_text(line, severity):
    record = parse_line(line, service="svc", host="h", received=RECEIVED)
    assert detect_format(line) == "text"
    assert record == LogRecord(RECEIVED, line, severity, "svc", "h", {})


def test_text_without_received_time_is_now():
    before = time.time()
    assert before <= parse_line("hello").time <= time.time()


def test_line_endings_are_stripped():
    assert parse_line("hello\r\n").message == "hello"
    assert parse_line('{"msg":"x"}\r').message == "x"


def test_line_fields_win_over_defaults():
    record = parse_line('{"msg":"m","service":"own","host":"own-host"}', service="default", host="default-host")
    assert (record.service, record.host) == ("own", "own-host")
    record = parse_line('{"msg":"m"}', service="default", host="default-host")
    assert (record.service, record.host) == ("default", "default-host")


# --- robustness ----------------------------------------------------------------------------------------------

FRAGMENTS = [
    "{", "}", '"', "\\", "[", "]", "<", ">", "=", " ", "\t", "-", ":", "\x00", "\udcff", "\ud800", "\ufeff", "é", "日本",
    "<34>", "<165>1 ", "Oct 11 22:14:15 ", "2024-01-02T03:04:05Z ", "2024-01-02 03:04:05,678 ", "ERROR ", "[WARN] ",
    '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 1 ', 'key="v a" ', "k=v ", '{"time":', "1e999",
    '"level":', "NaN", "99999999999999999999999999", "[a[b[c]]]", "E0102 15:04:05.123456 1 f.go:1] ", "\r", "\n",
    "<999>", "<1>1 - - - - - - ", "{\"a\":" * 3, "13/Xyz/2000:99:99:99 +9999",
]


def check(line: str) -> LogRecord:
    record = parse_line(line, received=RECEIVED)
    fmt = detect_format(line)
    assert fmt in FORMATS
    assert isinstance(record.time, float) and math.isfinite(record.time)
    assert record.severity in SEVERITIES
    assert isinstance(record.message, str) and isinstance(record.attributes, dict)
    if fmt == "text":
        assert record.message == SURROGATE.sub("\ufffd", line.rstrip("\r\n"))  # kept whole
    elif line.strip():
        assert record.message
    # Storable: UTF-8 all through, attributes JSON.
    for text in (record.message, record.service, record.host, json.dumps(record.attributes, ensure_ascii=False, allow_nan=False)):
        text.encode()
    return record


def test_random_inputs_never_raise_nor_lose_text():
    rng = random.Random(20240102)
    for _ in range(3000):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        check(raw.decode("utf-8", "replace"))
        check(raw.decode("latin-1"))
        check(raw.decode("utf-8", "surrogateescape"))
        check("".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(1, 12))))


@pytest.mark.parametrize(
    "line",
    [
        "", " ", "\x00" * 100, "\ud800 lone surrogate", "x" * 2_000_000, "a=" * 500_000, '"' * 500_000,
        "[" * 300_000, "{" + '"a":[' * 100_000, "2024-01-02 03:04:05 " + "-" * 1_000_000,
        '1.2.3.4 - - [' + " " * 100_000 + '] "', "<13>" + "Oct 11 22:14:15 " + "h " * 300_000,
        '{"time": 99999999999999999999999999999999999999, "msg": "m"}', '{"time": 1e999, "msg": "m"}',
        "2024-13-45T99:99:99Z ERROR bad date", "17/99/99 20:10:40 INFO bad date", "Feb 30 25:61:61 host x: y",
    ],
)
def test_odd_and_huge_inputs(line):
    started = time.perf_counter()
    check(line)
    assert time.perf_counter() - started < 2  # linear, no catastrophic backtracking


def test_lone_surrogates_become_replacement_characters():
    assert parse_line("bad \udcff byte").message == "bad \ufffd byte"
    record = parse_line('{"msg":"half \\ud83d pair","\\udc00":["\\ud800"],"ok":"\\ud83d\\ude00"}')
    assert record.message == "half \ufffd pair"
    assert record.attributes == {"\ufffd": ["\ufffd"], "ok": "\U0001f600"}


def test_non_str_input_is_decoded():
    assert parse_line(b"hello \xff").message == "hello \ufffd"  # type: ignore[arg-type]


@pytest.mark.skipif(not LOGHUB.is_dir(), reason="loghub-2k sample not present")
def test_loghub_samples():
    files = sorted(LOGHUB.glob("*/*_2k.log"))
    assert files
    for path in files:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            record = parse_line(line, received=RECEIVED)
            assert record.severity in SEVERITIES
            if line.strip():
                assert record.message.strip(), (path.name, line)
