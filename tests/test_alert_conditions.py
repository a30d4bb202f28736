"""The alert condition language: parsing, errors that point at the problem, checks at rule creation,
evaluation over real stores, and the canonical form.

`StoreSources` is a ConditionSources built from real objects: a MemorySeries, a dict of health states and
a SqliteLogStore in tmp_path. Its log_anomalies returns canned explanations: the anomaly detector has
its own tests, and this is the seam a condition reads it through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ops_agent.errors import QueryError
from ops_agent.tools.alerts.condition import (
    Condition,
    ConditionResult,
    ConditionSources,
    HealthCheck,
    LogAnomaly,
    LogCount,
    check_condition,
    describe_condition,
    evaluate_condition,
    parse_condition,
)
from ops_agent.tools.logs.index.query import parse_query
from ops_agent.tools.logs.index.sqlite_store import SqliteLogStore
from ops_agent.tools.logs.index.store import LogFilter
from ops_agent.tools.logs.record import LogRecord
from ops_agent.tools.monitoring.query import (
    Aggregation,
    BinaryOp,
    Comparison,
    Number,
    Selector,
)
from ops_agent.tools.monitoring.series import MemorySeries

NOW = 1_700_000_000.0
ISSUE_EXAMPLES = [
    "error_rate > 5%",
    "cpu_percent > 90 for 5m",
    "avg(response_time_ms[5m]) > 500",
    "health(api) == down",
    "log_count(severity=error, service=api)[5m] > 100",
    "anomaly(logs)",
]


# --- a real ConditionSources ----------------------------------------------------------------------


@dataclass
class StoreSources:
    """Series in memory, health as a dict, log counts from a real SQLite log index; the clock is fixed
    so log windows end at NOW, as series windows do."""

    series: MemorySeries = field(default_factory=MemorySeries)
    states: dict[str, str] = field(default_factory=dict)
    logs: SqliteLogStore | None = None
    anomalies: dict[str | None, list[str]] = field(default_factory=dict)
    now: float = NOW
    anomaly_reads: list[tuple[str | None, float]] = field(default_factory=list)

    async def health(self, service: str) -> str | None:
        return self.states.get(service)

    async def log_count(self, *, severity: str | None, service: str | None, query: str | None, window_s: float) -> int:
        assert self.logs is not None
        where = LogFilter(
            end=self.now,
            start=self.now - window_s,
            query=parse_query(query) if query else None,
            min_severity=severity,
            services=(service,) if service else (),
        )
        return (await self.logs.search(where, limit=1, buckets=1)).total

    async def log_anomalies(self, *, service: str | None, window_s: float) -> list[str]:
        self.anomaly_reads.append((service, window_s))
        return list(self.anomalies.get(service, []))


def _sources(sources: StoreSources) -> ConditionSources:
    return sources  # checked by the type checker: StoreSources satisfies the protocol


@pytest.fixture
async def logs(tmp_path: Path) -> AsyncIterator[SqliteLogStore]:
    store = SqliteLogStore(tmp_path / "logs.db")
    await store.open()
    yield store
    await store.close()


async def series_with(*samples: tuple[str, dict[str, str], float, float]) -> MemorySeries:
    """A MemorySeries holding (name, labels, seconds before NOW, value) samples."""
    store = MemorySeries()
    await store.record_many((name, labels, NOW - age, value) for name, labels, age, value in samples)
    return store


async def evaluate(text: str, sources: StoreSources) -> ConditionResult:
    return await evaluate_condition(parse_condition(text), _sources(sources), now=NOW)


# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ISSUE_EXAMPLES)
def test_every_example_in_the_issue_parses(text: str) -> None:
    condition = parse_condition(text)
    assert isinstance(condition, Condition)
    assert condition.text == text


def test_the_issue_examples_parse_to_these_trees() -> None:
    error_rate, cpu, response, health, errors, anomaly = map(parse_condition, ISSUE_EXAMPLES)
    assert error_rate.test == Comparison(">", Selector("error_rate"), Number(5))
    assert error_rate.test.right.percent and error_rate.for_s == 0  # type: ignore[union-attr]
    assert cpu.test == Comparison(">", Selector("cpu_percent"), Number(90)) and cpu.for_s == 300.0
    assert response.test == Comparison(">", Aggregation("avg", Selector("response_time_ms"), 300), Number(500))
    assert health.test == HealthCheck("api", "==", "down")
    assert errors.test == Comparison(">", LogCount("error", "api", None, 300), Number(100))
    assert anomaly.test == LogAnomaly(None, 300)
    assert cpu.series() == (Selector("cpu_percent"),) and health.series() == () and anomaly.series() == ()


def test_log_count_is_a_number_inside_arithmetic() -> None:
    condition = parse_condition('log_count(severity=error, query="timeout")[10m] / log_count()[10m] * 100 > 5')
    expected_errors = LogCount("error", None, "timeout", 600)
    assert condition.test == Comparison(
        ">", BinaryOp("*", BinaryOp("/", expected_errors, LogCount(window_s=600)), Number(100)), Number(5)
    )
    assert condition.log_counts() == (expected_errors, LogCount(window_s=600))


def test_arguments_and_severity_names_are_normalized() -> None:
    condition = parse_condition('log_count(service="api-gateway", severity=err)[1m] > 0')
    assert condition.test.left == LogCount("error", "api-gateway", None, 60)  # type: ignore[union-attr]
    assert parse_condition('log_count(query="")[5m] > 0').test.left == LogCount()  # type: ignore[union-attr]


def test_health_and_anomaly_forms() -> None:
    assert parse_condition('health("api-gateway") != up').test == HealthCheck("api-gateway", "!=", "up")
    assert parse_condition("anomaly(logs, service=api)[15m]").test == LogAnomaly("api", 900)
    # Without "(" these are plain series names, as `count` is in the query language.
    assert parse_condition("health > 0").test == Comparison(">", Selector("health"), Number(0))
    assert parse_condition("anomaly >= 1").series() == (Selector("anomaly"),)


@pytest.mark.parametrize(
    ("text", "for_s"),
    [
        ("cpu_percent > 90 for 30s", 30.0),
        ("cpu_percent > 90 for 5m", 300.0),
        ("cpu_percent > 90 for 1h30m", 5400.0),
        ("cpu_percent > 90 for 1d2h3m4s", 93784.0),
        ("cpu_percent > 90", 0.0),
        ("health(api) == down for 2m", 120.0),
        ("anomaly(logs)[10m] for 10m", 600.0),
        ("log_count(severity=error)[5m] > 100 for 1h", 3600.0),
    ],
)
def test_for_durations(text: str, for_s: float) -> None:
    condition = parse_condition(text)
    assert condition.for_s == for_s
    assert isinstance(condition.for_s, float)


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("foo(cpu) > 1", 0, "unknown function 'foo'"),
        ("avgg(cpu[5m]) > 1", 0, "did you mean 'avg'?"),
        ("log_cuont(severity=error) > 1", 0, "did you mean 'log_count'?"),
        ("cpu_percent", 11, "a condition needs a comparison"),
        ("avg(cpu_percent[5m]) for 5m", 21, "a condition needs a comparison"),
        ("log_count(severity=error)[5m]", 29, "a condition needs a comparison"),
        ("cpu_percent > 90 for", 20, "'for' needs a duration"),
        ("cpu_percent > 90 for 5", 21, "needs a unit"),
        ("cpu_percent > 90 for 5x", 21, "neither a number nor a duration"),
        ("cpu_percent > 90 for 1m1h", 24, "largest to smallest"),
        ("cpu_percent > 90 for 1.5m", 21, "whole numbers"),
        ("cpu_percent > 90 for 0s", 21, "longer than zero"),
        ("cpu_percent > 90 for soon", 21, "expected a duration"),
        ("cpu_percent > 90 for 5m for 10m", 24, "one 'for'"),
        ("cpu_percent > 90 5m", 17, "write 'for 5m'"),
        ("health(api) == broken", 15, "up or down"),
        ('health(api) == "down"', 15, "without quotes"),
        ("health(api) > down", 12, "== or !="),
        ("health(api) = down", 12, "use '=='"),
        ("health(api)", 11, "needs == or !="),
        ("health(api-gateway) == down", 7, "double quotes"),
        ("health() == down", 7, "takes a service name"),
        ("health(api)[5m] == down", 11, "takes no window"),
        ("cpu_percent > 90 garbage", 17, "after a complete expression"),
        ("cpu_percent > 90 and mem_percent > 90", 17, "one rule per condition"),
        ("cpu_percent > 90 )", 17, "no matching '('"),
        ("cpu_percent > 90 > 80", 17, "only one comparison"),
        ("cpu_percent > health(api)", 14, "condition of its own"),
        ("anomaly(logs) + 1 > 2", 14, "no comparison or arithmetic"),
        ("anomaly(logs) > 0", 14, "takes no comparison"),
        ("anomaly(metrics)", 8, "takes logs"),
        ("anomaly(logs, host=web-1)", 14, "service=<name> only"),
        ("log_count(level=error) > 1", 10, "no argument 'level'"),
        ("log_count(severity=loud) > 1", 19, "severity= takes one of"),
        ("log_count(severity=error, severity=warning) > 1", 26, "given twice"),
        ("log_count(service==api) > 1", 17, "single '='"),
        ("log_count(query=timeout) > 1", 16, "double quotes"),
        ('log_count(query="a AND") > 1', 22, "in the log search text"),
        ("log_count(severity=error service=api) > 1", 25, "expected ',' or ')'"),
        ("log_count(severity=error", 24, "missing ')'"),
        ("log_count()[0s] > 1", 12, "longer than zero"),
        ("", 0, "empty condition"),
    ],
)
def test_bad_syntax_points_at_the_problem(text: str, position: int, fragment: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_condition(text)
    error = caught.value
    assert fragment in error.message, error.message
    assert error.position == position, error.public_message
    caret_line = error.public_message.splitlines()[-1]
    assert caret_line == "  " + " " * position + "^"


def test_a_query_language_error_keeps_its_own_message() -> None:
    with pytest.raises(QueryError) as caught:
        parse_condition("avg(cpu_percent[5]) > 1")
    assert "a window needs a unit" in caught.value.message and caught.value.position == 16


def test_too_long_a_condition_is_refused() -> None:
    with pytest.raises(QueryError, match="too long"):
        parse_condition("x > " + "1 + " * 600 + "1")


# --- checks at rule creation ----------------------------------------------------------------------


async def test_unknown_series_are_reported_with_their_position_and_a_suggestion() -> None:
    sources = StoreSources(series=await series_with(("cpu_percent", {}, 10, 50.0), ("mem_percent", {}, 10, 1.0)))
    fine = parse_condition("cpu_percent > 90 for 5m")
    assert await check_condition(fine, sources) == []
    problems = await check_condition(parse_condition("avg(cpu_percnt[5m]) > 90"), sources)
    assert problems == [
        (
            "unknown series 'cpu_percnt' (at position 4): did you mean 'cpu_percent'? "
            "known series: cpu_percent, mem_percent"
        )
    ]
    two = await check_condition(parse_condition("disk_percent + swap_percent > 90"), sources)
    assert [problem.split(" (")[0] for problem in two] == [
        "unknown series 'disk_percent'",
        "unknown series 'swap_percent'",
    ]


async def test_known_series_can_be_given_instead_of_the_store() -> None:
    sources = StoreSources()  # empty store
    condition = parse_condition("error_rate > 5%")
    assert "none yet" in (await check_condition(condition, sources))[0]
    assert await check_condition(condition, sources, known_series={"error_rate"}) == []


async def test_unknown_services_are_reported_for_health() -> None:
    sources = StoreSources(states={"api": "up"})
    assert await check_condition(parse_condition("health(api) == down"), sources) == []
    never_checked = await check_condition(parse_condition("health(web) == down"), sources)
    assert never_checked == [
        "unknown service 'web' in health() (at position 0): it is not configured or has never been checked"
    ]
    # The configured names: a service not checked yet is fine, a typo is not.
    configured = {"web", "worker"}
    assert await check_condition(parse_condition("health(web) == down"), sources, known_services=configured) == []
    typo = await check_condition(parse_condition("health(wrker) == down"), sources, known_services=configured)
    assert typo == [
        "unknown service 'wrker' in health() (at position 0): did you mean 'worker'? configured services: web, worker"
    ]


async def test_log_services_are_checked_only_when_known() -> None:
    sources = StoreSources()
    condition = parse_condition("log_count(service=apii, severity=error)[5m] > 10")
    assert await check_condition(condition, sources) == []
    problems = await check_condition(condition, sources, known_log_services={"api", "worker"})
    assert problems == [
        "no logs from service 'apii' (at position 0): did you mean 'api'? services with logs: api, worker"
    ]
    anomaly = parse_condition("anomaly(logs, service=apii)")
    assert len(await check_condition(anomaly, sources, known_log_services={"api"})) == 1


async def test_a_percentage_compared_with_a_ratio_is_reported() -> None:
    sources = StoreSources(series=await series_with(("log_error_ratio", {"service": "api"}, 10, 0.2)))
    problems = await check_condition(parse_condition('log_error_ratio{service="api"} > 5%'), sources)
    assert problems == [
        (
            "log_error_ratio is a ratio from 0 to 1 (at position 0): it is at most 1, but 5% is the number 5, so "
            'this never fires; write log_error_ratio{service="api"} * 100 > 5 or log_error_ratio{service="api"} > 0.05'
        )
    ]
    for fine in ("log_error_ratio * 100 > 5", "log_error_ratio > 0.05", "avg(log_error_ratio[5m]) * 100 > 5%"):
        assert await check_condition(parse_condition(fine), sources) == [], fine


# --- evaluation -----------------------------------------------------------------------------------


async def test_a_comparison_over_real_series_breaches_or_not() -> None:
    series = await series_with(
        ("cpu_percent", {"host": "web-1"}, 5, 93.2),
        ("response_time_ms", {}, 200, 400.0),
        ("response_time_ms", {}, 100, 800.0),
        ("response_time_ms", {}, 10, 600.0),
        ("response_time_ms", {}, 900, 10_000.0),  # older than the 5m window
    )
    sources = StoreSources(series=series)
    hot = await evaluate("cpu_percent > 90 for 5m", sources)
    assert hot == ConditionResult(True, 93.2, "cpu_percent = 93.2 > 90")
    calm = await evaluate("cpu_percent > 95", sources)
    assert calm == ConditionResult(False, 93.2, "cpu_percent = 93.2, not > 95")
    slow = await evaluate("avg(response_time_ms[5m]) > 500", sources)
    assert slow.breached is True and slow.value == 600.0
    assert slow.summary == "avg(response_time_ms[5m]) = 600 > 500"
    both = await evaluate("max(response_time_ms[5m]) > avg(response_time_ms[5m])", sources)
    assert both.summary == "max(response_time_ms[5m]) = 800 > avg(response_time_ms[5m]) = 600"


async def test_percent_means_the_number_and_the_summary_says_so() -> None:
    sources = StoreSources(series=await series_with(("error_rate", {}, 5, 7.25), ("log_error_ratio", {}, 5, 0.0725)))
    assert await evaluate("error_rate > 5%", sources) == ConditionResult(True, 7.25, "error_rate = 7.25% > 5%")
    as_percentage = await evaluate("log_error_ratio * 100 > 5", sources)
    assert as_percentage.breached is True and as_percentage.value == pytest.approx(7.25)
    assert (await evaluate("log_error_ratio > 0.05", sources)).summary == "log_error_ratio = 0.0725 > 0.05"


async def test_no_points_is_no_data_not_false() -> None:
    series = await series_with(("cpu_percent", {}, 3600, 99.0))  # an hour old
    sources = StoreSources(series=series)
    stale = await evaluate("avg(cpu_percent[5m]) > 90", sources)
    assert stale == ConditionResult(None, None, "avg(cpu_percent[5m]) > 90: no data for avg(cpu_percent[5m])")
    missing = await evaluate('cpu_percent{host="nowhere"} > 90 for 5m', sources)
    assert missing.breached is None and missing.summary.endswith('no data for cpu_percent{host="nowhere"}')
    divided = await evaluate("last(cpu_percent[2h]) / (last(cpu_percent[2h]) - 1) > 1", sources)
    assert divided.breached is True  # the hour-old point is inside a 2h window
    zero = await evaluate("last(cpu_percent[2h]) / (last(cpu_percent[2h]) - 99) > 1", sources)
    assert zero.breached is None and "division by zero" in zero.summary


async def test_a_bare_series_that_stopped_being_written_is_no_data() -> None:
    sources = StoreSources(series=await series_with(("cpu_percent", {}, 301, 99.0), ("mem_percent", {}, 299, 99.0)))
    stale = await evaluate("cpu_percent > 90", sources)
    assert stale == ConditionResult(None, None, "cpu_percent > 90: no data for cpu_percent")
    assert (await evaluate("mem_percent > 90", sources)).breached is True
    assert (await evaluate("last(cpu_percent[1h]) > 90", sources)).breached is True  # sparse series: say so


async def test_health_states() -> None:
    sources = StoreSources(states={"api": "down", "web": "up"})
    assert await evaluate("health(api) == down", sources) == ConditionResult(True, 0.0, "health(api) = down")
    up = await evaluate("health(web) == down", sources)
    assert up == ConditionResult(False, 1.0, "health(web) = up, not == down")
    assert (await evaluate("health(web) != down", sources)).breached is True
    assert (await evaluate("health(api) != down", sources)).breached is False
    unknown = await evaluate('health("never-checked") == down', sources)
    assert unknown == ConditionResult(None, None, 'health("never-checked"): no data (never checked)')


async def test_log_count_over_a_real_log_store(logs: SqliteLogStore) -> None:
    def at(age: float, severity: str, service: str, message: str) -> LogRecord:
        return LogRecord(time=NOW - age, message=message, severity=severity, service=service)

    await logs.append(
        [
            *(at(10 + i, "error", "api", f"upstream timeout {i}") for i in range(120)),
            *(at(20 + i, "critical", "api", "database down") for i in range(5)),
            *(at(30, "warning", "api", "slow query") for _ in range(7)),
            *(at(40, "error", "worker", "job failed timeout") for _ in range(3)),
            *(at(900, "error", "api", "old timeout") for _ in range(50)),  # outside a 5m window
        ]
    )
    sources = StoreSources(logs=logs)
    issue = await evaluate("log_count(severity=error, service=api)[5m] > 100", sources)
    assert issue == ConditionResult(True, 125.0, "log_count(severity=error, service=api)[5m] = 125 > 100")
    assert (await evaluate("log_count()[5m] > 0", sources)).value == 135.0
    assert (await evaluate("log_count(severity=critical)[5m] > 0", sources)).value == 5.0
    assert (await evaluate("log_count(severity=warning, service=api)[5m] > 0", sources)).value == 132.0
    assert (await evaluate('log_count(query="timeout")[5m] > 0', sources)).value == 123.0
    assert (await evaluate('log_count(query="timeout")[1h] > 0', sources)).value == 173.0
    assert (await evaluate("log_count(service=worker)[5m] > 3", sources)).breached is False
    nothing = await evaluate("log_count(service=billing)[5m] > 0", sources)
    assert nothing == ConditionResult(False, 0.0, "log_count(service=billing)[5m] = 0, not > 0")  # 0, not no data


async def test_log_count_mixes_with_series(logs: SqliteLogStore) -> None:
    await logs.append([LogRecord(time=NOW - 5, message="boom", severity="error", service="api") for _ in range(30)])
    sources = StoreSources(series=await series_with(("http_requests_total", {}, 5, 600.0)), logs=logs)
    result = await evaluate("log_count(severity=error, service=api)[5m] / http_requests_total * 100 > 2%", sources)
    assert result.breached is True and result.value == pytest.approx(5.0)


async def test_anomaly_reads_the_detector_through_the_sources() -> None:
    sources = StoreSources(
        anomalies={
            None: ["api/error volume 12x its baseline", "new template: <*> connection reset by peer"],
            "worker": [],
        }
    )
    found = await evaluate("anomaly(logs)", sources)
    assert found.breached is True and found.value == 2.0
    assert found.details == ("api/error volume 12x its baseline", "new template: <*> connection reset by peer")
    assert found.summary == (
        "2 anomalies in the logs over the last 5m: api/error volume 12x its baseline; "
        "new template: <*> connection reset by peer"
    )
    quiet = await evaluate("anomaly(logs, service=worker)[15m]", sources)
    assert quiet == ConditionResult(False, 0.0, "no anomaly in the logs of worker over the last 15m")
    assert sources.anomaly_reads == [(None, 300.0), ("worker", 900.0)]


async def test_a_summary_stays_on_one_line() -> None:
    sources = StoreSources(anomalies={None: ["line one\nline two", "x" * 1000]})
    result = await evaluate("anomaly(logs)", sources)
    assert "\n" not in result.summary and len(result.summary) <= 500
    assert result.details[0] == "line one\nline two"  # the explanations themselves are untouched


# --- canonical form -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("error_rate > 5%", "error_rate > 5%"),
        ("cpu_percent>90   for   5m", "cpu_percent > 90 for 5m"),
        ("cpu_percent > 90 for 90m", "cpu_percent > 90 for 1h30m"),
        ("avg( response_time_ms [5m] ) > 500", "avg(response_time_ms[5m]) > 500"),
        ("avg(response_time_ms) > 500", "avg(response_time_ms[5m]) > 500"),
        ("health( api )==down", "health(api) == down"),
        ('health("api") == down', "health(api) == down"),
        ('health("api-gateway") != up for 30s', 'health("api-gateway") != up for 30s'),
        ("log_count(service=api, severity=err)[5m] > 100", "log_count(severity=error, service=api)[5m] > 100"),
        ('log_count(query="say \\"hi\\"")  > 1', 'log_count(query="say \\"hi\\"")[5m] > 1'),
        ("anomaly(logs)", "anomaly(logs)[5m]"),
        ("anomaly(logs, service = api)[1h] for 10m", "anomaly(logs, service=api)[1h] for 10m"),
        ("-log_count()[1m] < -(2 + 3) * 4", "-log_count()[1m] < -(2 + 3) * 4"),
    ],
)
def test_describe_is_canonical_and_round_trips(text: str, canonical: str) -> None:
    condition = parse_condition(text)
    assert describe_condition(condition) == canonical
    assert str(condition) == canonical
    again = parse_condition(canonical)
    assert again == condition and describe_condition(again) == canonical


@pytest.mark.parametrize("text", ISSUE_EXAMPLES)
def test_the_issue_examples_round_trip(text: str) -> None:
    condition = parse_condition(text)
    assert parse_condition(describe_condition(condition)) == condition
