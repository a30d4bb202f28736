"""Turn one raw log line into a LogRecord, whatever its format: JSON, logfmt, syslog (RFC 3164 and 5424),
Apache/Nginx access logs, "timestamp level message" lines, or plain text.

The format is detected per line, because one collector reads many sources, and cheaply: the first character
picks the candidates before any regex runs, since a parse has to cost a few microseconds. No line is dropped.
A line that matches no format, or that trips a parser, is kept whole as a plain-text message.
Timestamps without a zone are taken as UTC."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from ops_agent.tools.logs.record import LogRecord, normalize_severity

__all__ = ["FORMATS", "detect_format", "parse_line", "without_surrogates"]

FORMATS = ("json", "logfmt", "syslog", "combined", "generic", "text")

Parsed = tuple[str, LogRecord]


def parse_line(
    line: str, *, service: str = "", host: str = "", received: float | None = None, year: int | None = None
) -> LogRecord:
    """Parse one line (trailing newline optional). `service` and `host` apply when the line names none;
    `received` (Unix seconds, default now) is the time of a line that carries none and, with `year`, fills
    in the year that classic syslog leaves out. Never raises. Lone surrogates, in the line or from JSON
    escapes, become U+FFFD: UTF-8 cannot carry them, so no store could keep the record otherwise."""
    return _parse(line, service, host, received, year)[1]


def detect_format(line: str) -> str:
    """The format name parse_line would use for `line`: one of FORMATS."""
    return _parse(line, "", "", None, None)[0]


def _parse(line: Any, service: str, host: str, received: float | None, year: int | None) -> Parsed:
    if type(line) is not str:
        line = _as_text(line)
    if line.endswith(("\n", "\r")):
        line = line.rstrip("\r\n")
    if not line.isascii() and _SURROGATE.search(line):
        line = _SURROGATE.sub("\ufffd", line)
    try:
        parsed = _structured(line, service, host, received, year)
    except Exception:  # a parser bug must never cost a line: the text fallback below keeps it whole
        parsed = None
    if parsed is not None:
        return parsed
    return "text", LogRecord(_now(received), line, _guess_severity(line) or "info", service, host, {})


_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def without_surrogates(value: Any) -> Any:
    """`value` (decoded JSON) with lone surrogates, as `"\\ud800"` escapes give, replaced by U+FFFD."""
    kind = type(value)
    if kind is str:
        return _SURROGATE.sub("\ufffd", value)
    if kind is dict:
        return {_SURROGATE.sub("\ufffd", key): without_surrogates(item) for key, item in value.items()}
    if kind is list:
        return [without_surrogates(item) for item in value]
    return value


def _as_text(value: Any) -> str:
    """Whatever a caller passed instead of a str, as text (parse_line must not raise even then)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def _now(received: float | None) -> float:
    return time.time() if received is None else received


def _structured(s: str, service: str, host: str, received: float | None, year: int | None) -> Parsed | None:
    """Try the formats the first character allows, cheapest test first; None means plain text."""
    s = s.lstrip()
    if not s:
        return None
    c = s[0]
    if c == "{":
        if s.rstrip().endswith("}"):
            return _json(s, service, host, received)
        return None
    if c == "<":
        return _syslog_pri(s, service, host, received, year)
    if "] \"" in s and c != "[":
        parsed = _combined(s, service, host, received)
        if parsed is not None:
            return parsed
    if c.isdigit() or c == "[":
        return _generic(s, service, host, received)
    if c.isalpha() or c == "_" or c == "@":
        if s[3:4] == " " and s[:3] in _MONTHS:
            parsed = _rfc3164(s, 0, None, service, host, received, year)
            if parsed is not None:
                return parsed
        if c in "IWEF" and s[1:2].isdigit():
            parsed = _klog(s, service, host, received, year)
            if parsed is not None:
                return parsed
        if _LOGFMT_START.match(s):
            parsed = _logfmt(s, service, host, received)
            if parsed is not None:
                return parsed
        return _level_first(s, service, host, received)
    return None


# A double-quoted string with backslash escapes, written unrolled: an alternation per character is ten times slower.
_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'


# --- timestamps --------------------------------------------------------------------------------------------

# Spelled out: calendar.month_abbr follows the process locale, and logs write English names.
_MONTHS = {name: number for number, name in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_MONTH_DIGITS = {name: f"{number:02d}" for name, number in _MONTHS.items()}


def _epoch(year: int, month: int, day: int, hour: int, minute: int, second: int, fraction: str | None) -> float:
    """Unix seconds for a UTC calendar time, by integer arithmetic (days from civil) since it runs per line."""
    if not 1 <= month <= 12:
        raise ValueError(f"month {month}")
    shifted = year - (month <= 2)  # count years from March, so the leap day ends the year
    era, year_of_era = divmod(shifted, 400)
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    return seconds + int(fraction) / 10 ** len(fraction) if fraction else float(seconds)


def _iso_epoch(text: str) -> float | None:
    try:
        return _datetime_epoch(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        return None


def _datetime_epoch(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _number_epoch(value: float) -> float | None:
    """Epoch seconds from seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude."""
    if type(value) is int and not -1e20 < value < 1e20:
        return None  # beyond any plausible clock, and too big for a float
    if not math.isfinite(value):
        return None
    size = abs(value)
    if size >= 1e17:
        return value / 1e9
    if size >= 1e14:
        return value / 1e6
    if size > 1e11:
        return value / 1e3
    return float(value)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_CLF_TIME = re.compile(r"(\d{1,2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?: ?([+-])(\d{2}):?(\d{2}))?")


def _clf_epoch(text: str) -> float | None:
    """`10/Oct/2000:13:55:36 -0700`, the access-log time (nginx's $time_local)."""
    if len(text) == 26 and text[2] == "/" and text[6] == "/" and text[3:6] in _MONTH_DIGITS:
        # The usual fixed layout, rearranged as ISO-8601 for the C parser: a quarter of the regex's cost.
        moment = _iso_epoch(f"{text[7:11]}-{_MONTH_DIGITS[text[3:6]]}-{text[:2]}T{text[12:20]}{text[21:]}")
        if moment is not None:
            return moment
    m = _CLF_TIME.fullmatch(text)
    if m is None or m[2] not in _MONTHS:
        return None
    seconds = _epoch(int(m[3]), _MONTHS[m[2]], int(m[1]), int(m[4]), int(m[5]), int(m[6]), m[7])
    if m[8]:
        offset = int(m[9]) * 3600 + int(m[10]) * 60
        seconds -= offset if m[8] == "+" else -offset
    return seconds


def _time_value(value: Any) -> float | None:
    """A time field's value as Unix seconds: ISO-8601, epoch (s/ms/µs/ns, number or digits), access-log or
    RFC 2822 text, or {"seconds", "nanos"}; None when it is none of these."""
    kind = type(value)
    if kind is int or kind is float:
        return _number_epoch(value)
    if kind is str:
        text = value.strip()
        if text[4:5] == "-":
            return _iso_epoch(text)
        if _NUMBER.fullmatch(text):
            return _number_epoch(float(text))
        if text[:1].isdigit():
            moment = _iso_epoch(text)
            return moment if moment is not None else _clf_epoch(text)
        try:
            return _datetime_epoch(parsedate_to_datetime(text))
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if kind is dict and "seconds" in value:
        seconds, nanos = value.get("seconds"), value.get("nanos", 0)
        if type(seconds) in (int, str) and type(nanos) in (int, str):
            return int(seconds) + int(nanos) / 1e9
    return None


# --- severity ----------------------------------------------------------------------------------------------

# Level words as written in logs, upper case; the 3-letter ones are Serilog's and friends'.
_LEVEL_WORDS = {
    "TRACE": "debug", "DEBUG": "debug", "DBG": "debug", "VERBOSE": "debug", "VRB": "debug",
    "INFO": "info", "INF": "info", "NOTICE": "notice",
    "WARN": "warning", "WARNING": "warning", "WRN": "warning",
    "ERROR": "error", "ERR": "error", "SEVERE": "error",
    "CRIT": "critical", "CRITICAL": "critical", "FATAL": "critical", "FTL": "critical", "EMERG": "critical",
    "EMERGENCY": "critical", "ALERT": "critical", "PANIC": "critical",
}
# Longest first, so WARNING is not read as WARN plus "ING".
_LEVEL_PATTERN = "|".join(sorted(_LEVEL_WORDS, key=len, reverse=True))
_KLOG_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "critical"}
# The usual spellings, looked up before normalize_severity's strip-and-lower.
_LEVEL_NAMES = {form: level for word, level in _LEVEL_WORDS.items() for form in (word, word.lower(), word.title())}


def _level_value(value: Any) -> str | None:
    """A level field's value as a severity: a name, a syslog number 0..7, or a pino/bunyan level 10..60."""
    if type(value) is str:
        level = _LEVEL_NAMES.get(value) or normalize_severity(value, "")
        if level:
            return level
        if not value.isdecimal():
            return None
        value = int(value)
    if type(value) is not int:
        return None
    if 0 <= value <= 7:
        return normalize_severity(value)
    if 10 <= value <= 60:
        return ("debug", "debug", "info", "warning", "error", "critical")[(value - 1) // 10]
    return None


def _level_tokens() -> tuple[dict[str, str], dict[str, str]]:
    """Level words as they appear as whole tokens: upper case bare or decorated (`INFO`, `[ERROR]`, `WARN:`),
    any case when bracketed (`[error]`); and, for a line's first token only, any case with a colon (`error:`),
    since prose says "error" too. Spelled out ahead so a guess is one dict lookup per token."""
    anywhere: dict[str, str] = {}
    first: dict[str, str] = {}
    for word, level in _LEVEL_WORDS.items():
        for form in (word, f"{word}:", f"{word},", f"({word})", f"{word}]"):
            anywhere[form] = level
        for case in (word, word.lower(), word.title()):
            for form in (f"[{case}]", f"[{case}]:", f"<{case}>", f"[{case}"):
                anywhere[form] = level
            first[f"{case}:"] = level
    return anywhere, first


_LEVEL_TOKENS, _FIRST_LEVEL_TOKENS = _level_tokens()


def _guess_severity(text: str) -> str | None:
    """The first level word among a line's first dozen tokens (see _level_tokens), or None."""
    tokens = text[:200].split(None, 12)[:12]
    if not tokens:
        return None
    return _FIRST_LEVEL_TOKENS.get(tokens[0]) or next(filter(None, map(_LEVEL_TOKENS.get, tokens)), None)


# --- JSON and logfmt: named fields -------------------------------------------------------------------------

# A role's keys: flat names (also dotted, as ECS writes "log.level"), then (parent, child) paths into nested objects.
Keys = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]
_TIME_KEYS: Keys = (("time", "timestamp", "ts", "@timestamp", "date", "timestampInMs", "timeMillis", "@t"), ())
_LEVEL_KEYS: Keys = (("level", "severity", "lvl", "levelname", "log.level", "@l"), (("log", "level"),))
_MESSAGE_KEYS: Keys = (("message", "msg", "log", "text", "event", "@m"), ())
_SERVICE_KEYS: Keys = (("service", "service.name", "app", "projectName", "logger"), (("service", "name"),))
_HOST_KEYS: Keys = (("host", "hostname", "host.name"), (("host", "name"), ("host", "hostname")))
# Heroku's router writes at=info / at=error; only a recognised level is taken, so other `at`s stay attributes.
_LOGFMT_LEVEL_KEYS: Keys = ((*_LEVEL_KEYS[0], "at"), ())


def _text_value(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return value.rstrip("\r\n") or None
    if kind is int or kind is float:
        return str(value)
    return None


def _take(fields: dict[str, Any], keys: Keys, convert: Callable[[Any], Any]) -> Any:
    """Remove and return the first of `keys` whose value converts; what does not convert stays an attribute."""
    flat, nested = keys
    for key in flat:
        if key in fields:
            value = convert(fields[key])
            if value is not None:
                del fields[key]
                return value
    for parent_key, key in nested:
        parent = fields.get(parent_key)
        if type(parent) is dict and key in parent:
            value = convert(parent[key])
            if value is not None:
                del parent[key]
                if not parent:
                    del fields[parent_key]
                return value
    return None


def _from_fields(
    fmt: str, fields: dict[str, Any], level_keys: Keys, line: str, service: str, host: str, received: float | None
) -> Parsed:
    moment = _take(fields, _TIME_KEYS, _time_value)
    level = _take(fields, level_keys, _level_value)
    message = _take(fields, _MESSAGE_KEYS, _text_value)
    own_service = _take(fields, _SERVICE_KEYS, _text_value)
    own_host = _take(fields, _HOST_KEYS, _text_value)
    return fmt, LogRecord(
        time=_now(received) if moment is None else moment,
        # With no message field the line itself is the message, so a search still finds its text.
        message=line if message is None else message,
        severity=level or "info",
        service=own_service or service,
        host=own_host or host,
        attributes=fields,
    )


def _keep_constant(name: str) -> str:
    return name


def _finite_float(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text


# NaN, Infinity and numbers too big for a float (1e999) have no JSON form: kept as the strings they were,
# attributes stay JSON-compatible (a strict store such as Postgres' jsonb would refuse the record).
_JSON = json.JSONDecoder(parse_constant=_keep_constant, parse_float=_finite_float)


def _json(s: str, service: str, host: str, received: float | None) -> Parsed | None:
    try:
        fields = _JSON.decode(s)
    except (ValueError, RecursionError):
        return None
    if type(fields) is not dict:
        return None
    if "\\u" in s and _ESCAPED_SURROGATE.search(s):
        fields = without_surrogates(fields)
    return _from_fields("json", fields, _LEVEL_KEYS, s.rstrip(), service, host, received)


_LOGFMT_START = re.compile(r"[A-Za-z_@][\w.\-@/]*=")
# key="quoted \" value" | key=value | bare-word
_LOGFMT_TOKEN = re.compile(rf'([^\s="]+)=(?:{_QUOTED}|(\S*))|(\S+)')
_LOGFMT_ESCAPE = re.compile(r"\\(.)")
_LOGFMT_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _unescape(match: re.Match[str]) -> str:
    return _LOGFMT_ESCAPES.get(match[1], match[1])


def _logfmt(s: str, service: str, host: str, received: float | None) -> Parsed | None:
    fields: dict[str, Any] = {}
    pairs = bare = 0
    for key, quoted, plain, word in _LOGFMT_TOKEN.findall(s):
        if word:
            bare += 1
            fields[word] = True  # logfmt's bare key is a flag
            continue
        pairs += 1
        if quoted:
            fields[key] = _LOGFMT_ESCAPE.sub(_unescape, quoted) if "\\" in quoted else quoted
        else:
            fields[key] = plain
    # Prose with a stray `a=b` is text; logfmt is mostly pairs.
    if pairs <= bare:
        return None
    return _from_fields("logfmt", fields, _LOGFMT_LEVEL_KEYS, s.rstrip(), service, host, received)


# --- syslog ------------------------------------------------------------------------------------------------

_PRI = re.compile(r"<(\d{1,3})>")
_RFC5424 = re.compile(
    r'(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) (-|(?:\[[^\]"]*(?:"[^"\\]*(?:\\.[^"\\]*)*"[^\]"]*)*\])+) ?'
)
_SD_ELEMENT = re.compile(rf'\[([^\s\]=]+)((?:\s+[^\s=\]]+={_QUOTED})*)\s*\]')
_SD_PARAM = re.compile(rf'([^\s=\]]+)={_QUOTED}')
_SD_ESCAPE = re.compile(r'\\(["\\\]])')
_RFC3164_TIME = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))? ")
_SYSLOG_TAG = re.compile(r"([^\s\[\]:]{1,64})(?:\[([^\]\s]{0,32})\])?: ?")
_DAY_S = 86400


def _syslog_pri(s: str, service: str, host: str, received: float | None, year: int | None) -> Parsed | None:
    pri = _PRI.match(s)
    if pri is None:
        return None
    value, end = int(pri[1]), pri.end()
    if s[end:end + 1].isdigit():
        parsed = _rfc5424(s, end, value, service, host, received)
        if parsed is None:
            parsed = _iso_syslog(s, end, value, service, host, received)
        return parsed
    return _rfc3164(s, end, value, service, host, received, year)


def _pid(text: str) -> int | str:
    return int(text) if text.isascii() and text.isdigit() else text


def _rfc5424(s: str, start: int, pri: int, service: str, host: str, received: float | None) -> Parsed | None:
    m = _RFC5424.match(s, start)
    if m is None:
        return None
    stamp, hostname, app, procid, msgid, data = m.group(2, 3, 4, 5, 6, 7)
    moment = None if stamp == "-" else _iso_epoch(stamp)
    if moment is None and stamp != "-":
        return None
    attributes: dict[str, Any] = {"facility": pri // 8}
    if procid != "-":
        attributes["pid"] = _pid(procid)
    if msgid != "-":
        attributes["msgid"] = msgid
    if data != "-":
        attributes["structured_data"] = {
            element[1]: {name: _SD_ESCAPE.sub(r"\1", value) for name, value in _SD_PARAM.findall(element[2])}
            for element in _SD_ELEMENT.finditer(data)
        }
    message = s[m.end():]
    if message.startswith("\ufeff"):  # RFC 5424 marks a UTF-8 MSG with a BOM
        message = message[1:]
    return "syslog", LogRecord(
        time=_now(received) if moment is None else moment,
        message=message or s,
        severity=normalize_severity(pri % 8),
        service=service if app == "-" else app,
        host=host if hostname == "-" else hostname,
        attributes=attributes,
    )


def _syslog_tail(
    s: str, start: int, moment: float, pri: int | None, service: str, host: str, require_tag: bool
) -> Parsed | None:
    """`HOST TAG[PID]: MSG` after a syslog timestamp; a first token ending in ':' is a tag with no host."""
    rest = s[start:]
    first, _, after = rest.partition(" ")
    own_host = ""
    if first.endswith(":") and _SYSLOG_TAG.fullmatch(first):
        after = rest
    else:
        own_host = first
    tag = _SYSLOG_TAG.match(after)
    if tag is None and require_tag:
        return None
    attributes: dict[str, Any] = {}
    if pri is not None:
        attributes["facility"] = pri // 8
    if tag is not None:
        if tag[2]:
            attributes["pid"] = _pid(tag[2])
        message = after[tag.end():]
    else:
        message = after
    if pri is not None:
        severity = normalize_severity(pri % 8)
    else:
        severity = _guess_severity(message) or "info"
    return "syslog", LogRecord(
        time=moment,
        message=message or s,
        severity=severity,
        service=tag[1] if tag is not None else service,
        host=own_host or host,
        attributes=attributes,
    )


def _rfc3164(
    s: str, start: int, pri: int | None, service: str, host: str, received: float | None, year: int | None
) -> Parsed | None:
    m = _RFC3164_TIME.match(s, start)
    if m is None or m[1] not in _MONTHS:
        return None
    fields = _MONTHS[m[1]], int(m[2]), int(m[3]), int(m[4]), int(m[5])
    moment = _yearless_epoch(fields, m[6], received, year)
    return _syslog_tail(s, m.end(), moment, pri, service, host, require_tag=False)


def _yearless_epoch(fields: tuple[int, int, int, int, int], fraction: str | None, received: float | None, year: int | None) -> float:
    """Month, day, hour, minute, second in `year`; by default the receiving year, or the one before for a date
    that would lie ahead (December lines read in January, or an old file read today)."""
    if year is not None:
        return _epoch(year, *fields, fraction)
    now = _now(received)
    this_year = time.gmtime(now).tm_year
    moment = _epoch(this_year, *fields, fraction)
    return moment if moment <= now + _DAY_S else _epoch(this_year - 1, *fields, fraction)


def _iso_syslog(s: str, start: int, pri: int | None, service: str, host: str, received: float | None) -> Parsed | None:
    """rsyslog's high-precision form, `[<PRI>]2024-01-02T03:04:05.123456+00:00 host app[pid]: msg`."""
    m = _ISO_TS.match(s, start)
    if m is None or s[m.end():m.end() + 1] != " ":
        return None
    moment = _iso_epoch(m[1])
    if moment is None:
        return None
    return _syslog_tail(s, m.end() + 1, moment, pri, service, host, require_tag=True)


# --- access logs -------------------------------------------------------------------------------------------

_COMBINED = re.compile(
    rf"(\S+) (\S+) (\S+) \[([^\]]{{1,64}})\] {_QUOTED} (\d{{3}}|-) (\d+|-)(?: {_QUOTED} {_QUOTED})?"
)
# What nginx and Apache configs often append: $request_time (seconds, "0.123"), rt=…, or Apache's %D (µs).
_REQUEST_TIME = re.compile(r'\s+(?:(?:rt|request_time)=)?"?(\d+)(\.\d+)?"?(?=\s|$)')


def _combined(s: str, service: str, host: str, received: float | None) -> Parsed | None:
    m = _COMBINED.match(s)
    if m is None:
        return None
    client, _ident, user, stamp, request, status, size, referer, agent = m.groups()
    attributes: dict[str, Any] = {"client_ip": client}
    if user != "-":
        attributes["user"] = user
    parts = request.split(" ")
    if 2 <= len(parts) <= 3 and parts[0].isalpha():
        attributes["method"], attributes["path"] = parts[0], parts[1]
        if len(parts) == 3:
            attributes["protocol"] = parts[2]
        what = f"{parts[0]} {parts[1]}"
    else:
        attributes["request"] = request  # "-", or junk such as a TLS handshake sent to the HTTP port
        what = request or "-"
    code = 0 if status == "-" else int(status)
    if code:
        attributes["status"] = code
    attributes["bytes"] = 0 if size == "-" else int(size)
    if referer and referer != "-":
        attributes["referer"] = referer
    if agent and agent != "-":
        attributes["user_agent"] = agent
    tail = s[m.end():]
    if tail:
        duration = _REQUEST_TIME.match(tail)
        if duration is not None:
            whole, fraction = duration.groups()
            # A decimal is seconds ($request_time, %T with fraction); a bare integer is Apache's %D microseconds.
            attributes["duration_ms"] = round(float(whole + fraction) * 1000, 3) if fraction else int(whole) / 1000
            tail = tail[duration.end():]
        if tail.strip():
            attributes["extra"] = tail.strip()  # other appended fields, kept rather than lost
    moment = _clf_epoch(stamp)
    if moment is None:
        attributes["timestamp"] = stamp
    severity = "error" if code >= 500 else "warning" if code >= 400 else "info"
    return "combined", LogRecord(
        time=_now(received) if moment is None else moment,
        message=f"{what} {status}",
        severity=severity,
        service=service,
        host=host,
        attributes=attributes,
    )


# --- "timestamp level message" -----------------------------------------------------------------------------

_ISO_TS = re.compile(
    r"\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)\]?"
)
_SLASH_TS = re.compile(r"\[?(\d{4}|\d{2})/(\d{2})/(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?\]?")  # nginx error, Spark
_CTIME_TS = re.compile(r"\[[A-Z][a-z]{2} ([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))? (\d{4})\]")  # Apache error
_TIME_ONLY = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?(?=\s)")  # logback's %d{HH:mm:ss.SSS}
# After the timestamp: separators, then an optional pid (oslo), `[thread]` (logback) or `name -` (Python
# logging), then the level, perhaps bracketed or as Apache 2.4's [module:level].
_LEVEL_AFTER_TS = re.compile(
    r"[\s\-|:,]{0,8}(?:(\d+)\s+)?(?:\[([^\]]{1,80})\]\s+)?(?:([\w.\-$/]+)\s+-\s+)?"
    rf"[\[(<]?(?:\w+:)?({_LEVEL_PATTERN})[\])>]?:?(?:\s+-\s+|\s+|$)",
    re.I,
)
_LEVEL_FIRST = re.compile(rf"[\[(<]?({_LEVEL_PATTERN})[\])>]?:?\s+(?=\[?\d{{4}}[-/]\d{{2}}[-/]\d{{2}})", re.I)
# Java-style `[thread] com.foo.Bar - msg` / Hadoop `[main] org.apache.X: msg`: a dotted logger name.
_LOGGER = re.compile(r"([A-Za-z_$][\w$]*(?:\.[\w$]+)+)(?:@\d+)?(?:\s+-\s+|:\s+|\s+(?=\[))")
_KLOG = re.compile(r"([IWEF])(\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{6})\s+(\d+) ([^\s\]]+)\] ?")


def _leading_time(s: str, pos: int, received: float | None) -> tuple[float, int, bool] | None:
    """A timestamp at `pos`: (Unix seconds, end, whether it is RFC 3339 with a zone)."""
    c = s[pos:pos + 1]
    if s[pos + 2:pos + 3] == ":":
        m = _TIME_ONLY.match(s, pos)
        if m is not None:
            # Time of day only: on the receiving day, or the day before for a time that would lie ahead.
            now = _now(received)
            moment = now - now % _DAY_S + _epoch(1970, 1, 1, int(m[1]), int(m[2]), int(m[3]), m[4])
            return (moment if moment <= now + 3600 else moment - _DAY_S), m.end(), False
    if c.isdigit() or c == "[":
        m = _ISO_TS.match(s, pos)
        if m is not None:
            moment = _iso_epoch(m[1])
            if moment is not None:
                stamp = m[1]
                return moment, m.end(), stamp[10] == "T" and (stamp[-1] == "Z" or "+" in stamp or "-" in stamp[10:])
        m = _SLASH_TS.match(s, pos)
        if m is not None:
            year = int(m[1])
            return _epoch(year + 2000 if year < 100 else year, *map(int, m.group(2, 3, 4, 5, 6)), m[7]), m.end(), False
    if c == "[":
        m = _CTIME_TS.match(s, pos)
        if m is not None and m[1] in _MONTHS:
            fields = int(m[7]), _MONTHS[m[1]], *map(int, m.group(2, 3, 4, 5))
            return _epoch(*fields, m[6]), m.end(), False
    return None


def _generic(s: str, service: str, host: str, received: float | None) -> Parsed | None:
    stamp = _leading_time(s, 0, received)
    if stamp is None:
        return _level_first(s, service, host, received)
    moment, end, rfc3339 = stamp
    m = _LEVEL_AFTER_TS.match(s, end)
    if m is None:
        if rfc3339:
            parsed = _syslog_tail(s, end + 1, moment, None, service, host, require_tag=True) if s[end:end + 1] == " " else None
            if parsed is not None:
                return parsed
        rest = s[end:].lstrip(" -|:")
        return "generic", LogRecord(moment, rest or s, _guess_severity(rest) or "info", service, host, {})
    attributes: dict[str, Any] = {}
    pid, thread, logger, level = m.groups()
    if pid:
        attributes["pid"] = int(pid)
    if thread:
        attributes["thread"] = thread
    if logger:
        attributes["logger"] = logger
    return _generic_record(s, m.end(), moment, _LEVEL_WORDS[level.upper()], attributes, service, host)


def _generic_record(
    s: str, start: int, moment: float, severity: str, attributes: dict[str, Any], service: str, host: str
) -> Parsed:
    """The message after the level, lifting a leading `[thread]` and logger name into attributes."""
    message = s[start:]
    logger = None
    if message[:1] == "[":
        close = _closing_bracket(message)
        if close > 0:
            after = message[close + 1:].lstrip()
            if after.startswith("- "):
                attributes["thread"] = message[1:close]
                message = after[2:]
            else:
                logger = _LOGGER.match(after)
                if logger is not None:
                    attributes["thread"] = message[1:close]
                    message = after
    elif "logger" not in attributes:
        logger = _LOGGER.match(message)
    if logger is not None:
        attributes["logger"] = logger[1]
        message = message[logger.end():]
    return "generic", LogRecord(moment, message or s, severity, service, host, attributes)


def _closing_bracket(text: str) -> int:
    """Index of the `]` closing text[0], allowing nesting (Zookeeper's `[QuorumPeer[myid=1]/…]`); -1 if none nearby."""
    depth, position, limit = 0, 0, min(len(text), 256)
    while True:
        close = text.find("]", position, limit)
        if close < 0:
            return -1
        depth += text.count("[", position, close) - 1
        if depth <= 0:
            return close
        position = close + 1


def _level_first(s: str, service: str, host: str, received: float | None) -> Parsed | None:
    """`ERROR 2024-01-02 03:04:05,678 msg` / `[WARN] 2024-…`."""
    m = _LEVEL_FIRST.match(s)
    if m is None:
        return None
    stamp = _leading_time(s, m.end(), received)
    if stamp is None:
        return None
    moment, end, _ = stamp
    start = end
    while s[start:start + 1] in (" ", "-", ":", "|") and start < end + 8:
        start += 1
    return _generic_record(s, start, moment, _LEVEL_WORDS[m[1].upper()], {}, service, host)


def _klog(s: str, service: str, host: str, received: float | None, year: int | None) -> Parsed | None:
    """Kubernetes' klog/glog: `E0102 15:04:05.123456   12345 file.go:42] message` (no year)."""
    m = _KLOG.match(s)
    if m is None:
        return None
    moment = _yearless_epoch((int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6])), m[7], received, year)
    attributes = {"pid": int(m[8]), "source": m[9]}
    return "generic", LogRecord(moment, s[m.end():] or s, _KLOG_LEVELS[m[1]], service, host, attributes)
