"""The log search language: what parses to what, and clear errors with a position for what doesn't."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ops_agent.errors import QueryError, ToolRetry
from ops_agent.tools.logs.index.query import And, Field, Not, Or, Text, is_text_only, parse_query, parse_time_range

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("   ", None),
        ("error", Text("error")),
        ("error timeout", And((Text("error"), Text("timeout")))),
        ("error AND timeout", And((Text("error"), Text("timeout")))),
        ('"connection refused"', Text("connection refused", phrase=True)),
        ("conn*", Text("conn", prefix=True)),
        ("service:api", Field("service", "api")),
        ("level:warn", Field("severity", "warning")),
        ("severity:fatal", Field("severity", "critical")),
        ("status:>=500", Field("status", "500", ">=")),
        ("http.status:<400", Field("http.status", "400", "<")),
        ('path:"/api/users"', Field("path", "/api/users")),
        ("NOT health", Not(Text("health"))),
        ("-health", Not(Text("health"))),
        ('-"a phrase"', Not(Text("a phrase", phrase=True))),
        ("-(a OR b)", Not(Or((Text("a"), Text("b"))))),
        ("a OR b c", Or((Text("a"), And((Text("b"), Text("c")))))),
        ("(a OR b) c", And((Or((Text("a"), Text("b"))), Text("c")))),
        ("10.0.0.1", Text("10.0.0.1")),
        ("dpl_abc-123", Text("dpl_abc-123")),
    ],
)
def test_queries_parse(text, expected):
    assert parse_query(text) == expected


@pytest.mark.parametrize(
    ("text", "position", "says"),
    [
        ("(a OR b", 0, "missing ')'"),
        ('"unclosed', 0, "unclosed quote"),
        ("a OR", 4, "expected a term"),
        ("AND a", 0, "expected a term before AND"),
        ("a )", 2, "unexpected ')'"),
        ("status:>=abc", 0, "needs a number"),
        ("severity:<error", 0, "threshold"),
        ("service:", 0, "has no value"),
        ("***", 0, "no letters or digits"),
        ('a ""', 2, "empty phrase"),
        ("(" * 40 + "a" + ")" * 40, 12, "nested too deep"),
        ("NOT " * 20 + "a", 0, "nested more than 12 levels"),
        ("a\x00b", 1, "control characters"),
        (" ".join(["a"] * 150), 200, "more than 100 terms"),
    ],
)
def test_malformed_queries_say_what_and_where(text, position, says):
    with pytest.raises(QueryError) as caught:
        parse_query(text)
    assert caught.value.position == position
    assert says in caught.value.public_message
    assert "^" in caught.value.public_message  # a caret under the spot


def test_an_unknown_severity_names_the_levels():
    with pytest.raises(ToolRetry, match="severity: 'loud' is not one of debug, info"):
        parse_query("severity:loud")


def test_text_only_subtrees_are_recognised():
    assert is_text_only(parse_query('a "b c" OR NOT d'))
    assert not is_text_only(parse_query("a service:api"))


@pytest.mark.parametrize(
    ("text", "span_s"),
    [("15m", 900), ("1h", 3600), ("24h", 86400), ("7d", 7 * 86400), ("last 30 m", 1800), ("2w", 14 * 86400), ("90s", 90)],
)
def test_relative_time_ranges_end_now(text, span_s):
    assert parse_time_range(text, now=NOW) == (NOW - span_s, NOW)


def test_iso_bounds_and_open_ranges():
    start, end = parse_time_range("2026-11-27T10:00:00Z..2026-11-27T11:00:00Z", now=NOW)
    assert (start, end) == (NOW - 7200, NOW - 3600)
    assert parse_time_range("2026-11-27T11:00:00/", now=NOW) == (NOW - 3600, NOW)  # no zone: UTC
    assert parse_time_range("2026-11-27T11:00:00+01:00", now=NOW) == (NOW - 7200, NOW)
    assert parse_time_range(None, now=NOW) == (None, NOW)
    assert parse_time_range("all", now=NOW) == (None, NOW)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("yesterday-ish", "neither a length"),
        ("0m", "is empty"),
        ("2026-11-27T11:00:00Z..2026-11-27T10:00:00Z", "is not before"),
        ("2026-13-45..", "not an ISO-8601 time"),
    ],
)
def test_bad_time_ranges_name_the_field(text, says):
    with pytest.raises(ToolRetry, match="time_range") as caught:
        parse_time_range(text, now=NOW)
    assert says in caught.value.public_message
