"""The alert condition language: the metric query language (monitoring/query.py) plus `for`, service
health, log counts and log anomalies. docs/ALERT_CONDITIONS.md has the grammar and the meaning of each form.

    error_rate > 5%                                     (5% is the number 5: error_rate is a percentage)
    cpu_percent > 90 for 5m                             (true on every evaluation for 5 minutes)
    avg(response_time_ms[5m]) > 500
    log_error_ratio{service="api"} * 100 > 5            (a ratio from 0 to 1, as a percentage)
    health(api) == down
    log_count(severity=error, service=api)[5m] > 100
    anomaly(logs)
    sentry_new_issues(web)[10m] > 0                     (Sentry issues first seen in the last 10 minutes)

A condition is one comparison of two metric expressions, one health check, or one anomaly check, with
an optional trailing `for <duration>`. `log_count(...)` is a number like any other inside the
expressions. The parser is the metric query parser, extended through its `call` hook; evaluation reuses
the query language's reads and arithmetic, so both languages mean the same thing by the same text, with
one difference: in a condition a bare series is its newest point of the last STALE_AFTER_S seconds
(`cpu_percent` reads as `last(cpu_percent[5m])`), so a series that stopped being written is no data
rather than its last value forever.

`parse_condition` raises QueryError (a position and a caret under it) for bad syntax. `check_condition`
lists what would keep a well-formed condition from ever firing: series nobody records, services nobody
checks, a percentage compared with a ratio. `evaluate_condition` answers breached, not breached or no data
(None): no data must neither fire an alert nor resolve one (the evaluator holds the state).
"""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ops_agent.errors import OpsAgentError, QueryError
from ops_agent.tools.logs.index.query import parse_query
from ops_agent.tools.logs.record import SEVERITIES, normalize_severity
from ops_agent.tools.monitoring.query import (
    DEFAULT_WINDOW_S,
    FUNCTIONS,
    MAX_QUERY_LENGTH,
    MAX_WINDOW_S,
    Aggregation,
    Comparison,
    Expr,
    Number,
    Query,
    Selector,
    _clip,
    _Parser,
    _Token,
    compare,
    compute,
    describe_expr,
    format_duration,
    leaves,
    read_leaf,
)
from ops_agent.tools.monitoring.series import SeriesStore

__all__ = [
    "CONDITION_FUNCTIONS",
    "Condition",
    "ConditionResult",
    "ConditionSources",
    "HealthCheck",
    "LogAnomaly",
    "LogCount",
    "SentryNewIssues",
    "check_condition",
    "describe_condition",
    "evaluate_condition",
    "parse_condition",
]

CONDITION_FUNCTIONS = (*FUNCTIONS, "log_count", "health", "anomaly", "sentry_new_issues")
LOG_COUNT_ARGUMENTS = ("severity", "service", "query")
HEALTH_STATES = ("up", "down")
MAX_SUMMARY_LENGTH = 500
STALE_AFTER_S = 300  # a bare series' newest point older than this is no data (Prometheus' lookback)

_BARE_SERVICE = re.compile(r"[A-Za-z_][A-Za-z0-9_:.]*")
_COMPARE_OPS = frozenset((">", ">=", "<", "<=", "==", "!="))
_RATIO_FUNCTIONS = frozenset(("avg", "min", "max", "last", "p50", "p90", "p95", "p99"))


# --- what a condition reads -----------------------------------------------------------------------


class ConditionSources(Protocol):
    """Everything a condition reads. Series are read at the `now` given to evaluate_condition; log windows
    end at the implementation's own clock (in production both are the present)."""

    @property
    def series(self) -> SeriesStore: ...

    async def health(self, service: str) -> str | None:
        """"up" or "down" from the latest check, or None for a service unknown or never checked."""
        ...

    async def log_count(
        self, *, severity: str | None, service: str | None, query: str | None, window_s: float
    ) -> int:
        """Log records of the last `window_s` seconds at `severity` or above, from `service`, matching
        the log search text `query`; None means no filter."""
        ...

    async def log_anomalies(self, *, service: str | None, window_s: float) -> list[str]:
        """What the log anomaly detector finds in the window, one line each; empty when nothing."""
        ...

    # Optional (sources without Sentry leave it out: the condition then has no data):
    # async def sentry_new_issues(self, *, project: str, window_s: float) -> int | None:
    #     """Sentry issues of `project` first seen in the last `window_s` seconds; None when Sentry is off."""
    # def sentry_projects(self) -> Collection[str] | None:
    #     """The configured Sentry projects (checked at rule creation); None when Sentry is off."""


# --- the syntax tree (comparisons and arithmetic are the query language's own nodes) -------------


@dataclass(frozen=True)
class LogCount:
    """`log_count(severity=error, service=api, query="timeout")[5m]`: a number in an expression.
    `severity` is a threshold (error includes critical); None means any."""

    severity: str | None = None
    service: str | None = None
    query: str | None = None  # log search text, already checked by the log search parser
    window_s: int = DEFAULT_WINDOW_S
    position: int = field(default=0, compare=False)

    def __str__(self) -> str:
        arguments = []
        if self.severity is not None:
            arguments.append(f"severity={self.severity}")
        if self.service is not None:
            arguments.append(f"service={_service_text(self.service)}")
        if self.query is not None:
            arguments.append(f"query={_quote(self.query)}")
        return f"log_count({', '.join(arguments)})[{format_duration(self.window_s)}]"


@dataclass(frozen=True)
class HealthCheck:
    """`health(api) == down`: the latest health check of a configured service."""

    service: str
    op: Literal["==", "!="]
    state: Literal["up", "down"]
    position: int = field(default=0, compare=False)


@dataclass(frozen=True)
class LogAnomaly:
    """`anomaly(logs, service=api)[5m]`: true when the log anomaly detector reports anything."""

    service: str | None = None
    window_s: int = DEFAULT_WINDOW_S
    position: int = field(default=0, compare=False)


@dataclass(frozen=True)
class SentryNewIssues:
    """`sentry_new_issues(web)[10m]`: the Sentry issues of a project first seen in the window, a number.
    Read from the log index (what collect_sentry_issues, polling and /ingest/sentry stored)."""

    project: str
    window_s: int = DEFAULT_WINDOW_S
    position: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"sentry_new_issues({_service_text(self.project)})[{format_duration(self.window_s)}]"


Test = Comparison | HealthCheck | LogAnomaly


@dataclass(frozen=True)
class Condition:
    """A parsed condition. `text` is as written (positions in errors refer to it); equality ignores it,
    so parse_condition(describe_condition(c)) == c."""

    text: str = field(compare=False)
    for_s: float
    test: Test

    def series(self) -> tuple[Selector, ...]:
        """Every series the condition reads, once each, in the order written."""
        if not isinstance(self.test, Comparison):
            return ()
        return Query(self.test).series()

    def log_counts(self) -> tuple[LogCount, ...]:
        if not isinstance(self.test, Comparison):
            return ()
        return tuple(dict.fromkeys(leaf for leaf in leaves(self.test) if isinstance(leaf, LogCount)))

    def sentry_reads(self) -> tuple[SentryNewIssues, ...]:
        if not isinstance(self.test, Comparison):
            return ()
        return tuple(dict.fromkeys(leaf for leaf in leaves(self.test) if isinstance(leaf, SentryNewIssues)))

    def __str__(self) -> str:
        return describe_condition(self)


@dataclass(frozen=True)
class ConditionResult:
    """One evaluation. `breached` is None when there was no data to judge by. `value` is the left side
    of a comparison, 1.0/0.0 for a service up/down, or the number of log anomalies. `summary` is one line
    for people ("cpu_percent = 93.2 > 90"); `details` are the anomaly detector's explanations."""

    breached: bool | None
    value: float | None
    summary: str
    details: tuple[str, ...] = ()


# --- parsing --------------------------------------------------------------------------------------


class _ConditionParser(_Parser):
    """The metric query parser with the condition forms on top; one token of lookahead, like its base."""

    def condition(self) -> Condition:
        if self.tok.kind == "end":
            raise self.error("empty condition: write one such as cpu_percent > 90 for 5m", self.tok.pos)
        test: Test
        if self.keyword("health") and self.next_is("("):
            test = self.health()
        elif self.keyword("anomaly") and self.next_is("("):
            test = self.anomaly()
        else:
            test = self.comparison()
        for_s = self.for_clause()
        if self.tok.kind != "end":
            self.trailing()
        return Condition(self.text, float(for_s), test)

    # -- helpers

    def keyword(self, word: str) -> bool:
        return self.tok.kind == "name" and self.tok.text == word

    def next_is(self, op: str) -> bool:
        saved = self.lexer.pos
        try:
            following = self.lexer.next()
        finally:
            self.lexer.pos = saved
        return following.kind == "op" and following.text == op

    def trailing(self) -> None:
        tok = self.tok
        if self.keyword("for"):
            raise self.error("a condition takes one 'for' duration", tok.pos)
        if tok.kind == "name" and tok.text.lower() in ("and", "or", "unless"):
            raise self.error(
                f"conditions cannot be joined with {_clip(tok.text)!r}: write one rule per condition", tok.pos
            )
        if tok.kind == "duration":
            raise self.error(f"write 'for {_clip(tok.text)}' to say how long the condition must hold", tok.pos)
        self.finish(Query(Number(0)))  # the query language's message for what follows a complete expression
        raise AssertionError("unreachable: finish() raises unless at the end")

    # -- the three forms

    def comparison(self) -> Comparison:
        left, _ = self.arith(0)
        if not (self.tok.kind == "op" and self.tok.text in _COMPARE_OPS):
            if self.tok.kind == "end" or self.keyword("for"):
                example = _clip(describe_expr(left))
                raise self.error(
                    f"a condition needs a comparison here, as in {example} > 90; only anomaly(logs) and "
                    "health(<service>) == up|down stand without a number to compare with",
                    self.tok.pos,
                )
            self.trailing()
        op = self.advance()
        right, _ = self.arith(0)
        if self.tok.kind == "op" and self.tok.text in _COMPARE_OPS:
            raise self.error("only one comparison is allowed in a condition", self.tok.pos)
        return Comparison(op.text, left, right)  # type: ignore[arg-type]

    def health(self) -> HealthCheck:
        name = self.advance()
        opener = self.advance()
        service = self.service_argument("health", 'health(api) == down or health("api-gateway") == down')
        self.close(")", opener)
        if self.at("["):
            raise self.error("health(...) takes no window; add 'for 2m' to require it for a while", self.tok.pos)
        if not (self.at("==") or self.at("!=")):
            if self.tok.kind == "op" and self.tok.text in _COMPARE_OPS:
                raise self.error("a health check compares with == or !=, as in health(api) == down", self.tok.pos)
            if self.at("="):
                raise self.error("use '==' to compare, as in health(api) == down", self.tok.pos)
            raise self.error(
                f"a health check needs == or != and up or down, as in health(api) == down; found {self.tok.shown()}",
                self.tok.pos,
            )
        op = self.advance()
        state = self.tok
        if state.kind == "string" and state.value in HEALTH_STATES:
            raise self.error(f"write the state without quotes: {state.value}", state.pos)
        if not (state.kind == "name" and state.text in HEALTH_STATES):
            raise self.error(f"a service's health is up or down, found {state.shown()}", state.pos)
        self.advance()
        return HealthCheck(service, op.text, state.text, position=name.pos)  # type: ignore[arg-type]

    def anomaly(self) -> LogAnomaly:
        name = self.advance()
        opener = self.advance()
        if not self.keyword("logs"):
            raise self.error(
                "anomaly( takes logs, as in anomaly(logs) or anomaly(logs, service=api): log anomalies are "
                f"the kind detected; found {self.tok.shown()}",
                self.tok.pos,
            )
        self.advance()
        service = None
        if self.at(","):
            self.advance()
            if not self.keyword("service"):
                raise self.error(
                    f"anomaly(logs, ...) takes service=<name> only; found {self.tok.shown()}", self.tok.pos
                )
            self.advance()
            self.equals("service")
            service = self.service_argument("anomaly", "anomaly(logs, service=api)")
        self.close(")", opener)
        window_s = self.window() if self.at("[") else DEFAULT_WINDOW_S
        if self.tok.kind == "op" and (self.tok.text in _COMPARE_OPS or self.tok.text in "+-*/"):
            raise self.error(
                "anomaly(logs) is a condition on its own: it takes no comparison or arithmetic, as in "
                "anomaly(logs)[10m]",
                self.tok.pos,
            )
        return LogAnomaly(service, window_s, position=name.pos)

    def for_clause(self) -> int:
        if not self.keyword("for"):
            return 0
        self.advance()
        tok = self.tok
        if tok.kind == "end":
            raise self.error("'for' needs a duration, as in for 5m", tok.pos)
        if tok.kind == "number":
            raise self.error("a duration needs a unit: s, m, h or d, as in for 5m", tok.pos)
        if tok.kind != "duration":
            raise self.error(f"expected a duration such as 5m or 1h30m after 'for', found {tok.shown()}", tok.pos)
        assert isinstance(tok.value, int)
        if tok.value == 0:
            raise self.error("a 'for' duration must be longer than zero; leave 'for' out to fire at once", tok.pos)
        if tok.value > MAX_WINDOW_S:
            raise self.error(f"a 'for' duration can be at most {format_duration(MAX_WINDOW_S)}", tok.pos)
        self.advance()
        return tok.value

    # -- functions inside expressions

    def call(self, name: _Token) -> Expr:
        function = name.text
        if function == "log_count":
            return self.log_count(name)  # type: ignore[return-value]
        if function == "sentry_new_issues":
            return self.sentry_new_issues(name)  # type: ignore[return-value]
        if function == "health":
            raise self.error(
                "health(...) is a condition of its own, as in health(api) == down; it cannot be part of "
                "arithmetic or compared with a number",
                name.pos,
            )
        if function == "anomaly":
            raise self.error(
                "anomaly(logs) is a condition of its own; it cannot be part of arithmetic or a comparison",
                name.pos,
            )
        if function not in FUNCTIONS:
            close = difflib.get_close_matches(function.lower(), CONDITION_FUNCTIONS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.error(
                f"unknown function {_clip(function)!r}; {hint}known functions: {', '.join(CONDITION_FUNCTIONS)}",
                name.pos,
            )
        return super().call(name)

    def log_count(self, name: _Token) -> LogCount:
        opener = self.advance()
        given: dict[str, str | None] = {}
        while not self.at(")"):
            tok = self.tok
            if tok.kind == "end":
                raise self.error(f"missing ')' to close the '(' at position {opener.pos}", tok.pos)
            if tok.kind != "name":
                raise self.error(
                    "log_count( takes severity=, service= and query= arguments, as in "
                    f"log_count(severity=error, service=api)[5m]; found {tok.shown()}",
                    tok.pos,
                )
            if tok.text not in LOG_COUNT_ARGUMENTS:
                raise self.error(
                    f"log_count has no argument {_clip(tok.text)!r}; it takes {', '.join(LOG_COUNT_ARGUMENTS)}",
                    tok.pos,
                )
            if tok.text in given:
                raise self.error(f"the argument {tok.text} is given twice", tok.pos)
            self.advance()
            self.equals(tok.text)
            if tok.text == "severity":
                given["severity"] = self.severity_argument()
            elif tok.text == "service":
                given["service"] = self.service_argument("log_count", "log_count(service=api)")
            else:
                given["query"] = self.query_argument()
            if self.at(","):
                self.advance()
            elif not self.at(")"):
                if self.tok.kind == "end":
                    raise self.error(f"missing ')' to close the '(' at position {opener.pos}", self.tok.pos)
                raise self.error(f"expected ',' or ')' after an argument, found {self.tok.shown()}", self.tok.pos)
        self.advance()
        window_s = self.window() if self.at("[") else DEFAULT_WINDOW_S
        return LogCount(
            given.get("severity"), given.get("service"), given.get("query"), window_s, position=name.pos
        )

    def sentry_new_issues(self, name: _Token) -> SentryNewIssues:
        opener = self.advance()
        example = 'sentry_new_issues(web)[10m] > 0 or sentry_new_issues("my-app")[10m] > 0'
        if self.at(")"):
            raise self.error(f"sentry_new_issues( takes a Sentry project slug, as in {example}", self.tok.pos)
        if self.keyword("project") and self.next_is("="):
            self.advance()
            self.advance()
        project = self.service_argument("sentry_new_issues", example)
        if not self.at(")"):
            raise self.error(
                f"sentry_new_issues takes one project, as in {example}; found {self.tok.shown()}", self.tok.pos
            )
        self.close(")", opener)
        window_s = self.window() if self.at("[") else DEFAULT_WINDOW_S
        return SentryNewIssues(project, window_s, position=name.pos)

    def equals(self, argument: str) -> None:
        if self.at("=="):
            raise self.error(f"arguments take a single '=', as in {argument}=...", self.tok.pos)
        if not self.at("="):
            raise self.error(f"expected '=' after {argument}, found {self.tok.shown()}", self.tok.pos)
        self.advance()

    def service_argument(self, function: str, example: str) -> str:
        tok = self.tok
        if tok.kind not in ("name", "string"):
            raise self.error(f"{function}( takes a service name, as in {example}; found {tok.shown()}", tok.pos)
        service = str(tok.value) if tok.kind == "string" else tok.text
        if not service:
            raise self.error("a service name cannot be empty", tok.pos)
        self.checked_length(tok, "this service name", len(service))
        self.advance()
        if tok.kind == "name" and (self.at("-") or self.tok.kind in ("number", "duration")):
            raise self.error(
                f"a service name with '-' or other punctuation goes in double quotes, as in {example}", tok.pos
            )
        return service

    def severity_argument(self) -> str:
        tok = self.tok
        written = str(tok.value) if tok.kind == "string" else tok.text
        level = normalize_severity(written, default="") if tok.kind in ("name", "string") else ""
        if not level:
            raise self.error(
                f"severity= takes one of {', '.join(SEVERITIES)} (a threshold: error includes critical); "
                f"found {tok.shown()}",
                tok.pos,
            )
        self.advance()
        return level

    def query_argument(self) -> str | None:
        tok = self.tok
        if tok.kind != "string":
            raise self.error(
                f'query= takes log search text in double quotes, as in query="timeout"; found {tok.shown()}', tok.pos
            )
        assert isinstance(tok.value, str)
        try:
            node = parse_query(tok.value)
        except QueryError as exc:
            message = exc.message.removeprefix("query: ")
            inside = min(tok.pos + 1 + exc.position, tok.pos + len(tok.text) - 1)  # exact unless escapes
            raise self.error(f"in the log search text: {message}", inside) from None
        except OpsAgentError as exc:  # parse_severity's ToolRetry for severity:<unknown>
            raise self.error(f"in the log search text: {exc.public_message}", tok.pos + 1) from None
        self.advance()
        return None if node is None else tok.value


def parse_condition(text: str) -> Condition:
    """Parse an alert condition. Raises QueryError naming the first problem and where it is."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(
            f"the condition is too long: {len(text)} characters, the limit is {MAX_QUERY_LENGTH}",
            MAX_QUERY_LENGTH,
            text,
        )
    return _ConditionParser(text).condition()


# --- canonical form -------------------------------------------------------------------------------


def describe_condition(condition: Condition) -> str:
    """The canonical text: windows written out, severities and spacing normalized."""
    test = condition.test
    if isinstance(test, Comparison):
        text = f"{describe_expr(test.left)} {test.op} {describe_expr(test.right)}"
    elif isinstance(test, HealthCheck):
        text = f"health({_service_text(test.service)}) {test.op} {test.state}"
    else:
        service = f", service={_service_text(test.service)}" if test.service is not None else ""
        text = f"anomaly(logs{service})[{format_duration(test.window_s)}]"
    if condition.for_s:
        text += f" for {format_duration(int(condition.for_s))}"
    return text


def _service_text(service: str) -> str:
    return service if _BARE_SERVICE.fullmatch(service) else _quote(service)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- checks at rule creation ----------------------------------------------------------------------


async def check_condition(
    condition: Condition,
    sources: ConditionSources,
    *,
    known_series: Collection[str] | None = None,
    known_services: Collection[str] | None = None,
    known_log_services: Collection[str] | None = None,
) -> list[str]:
    """What would keep the condition from ever firing, one line per problem (with its position in the
    condition's text); empty means fine.

    Series must be in `known_series` (default: the store's `names()`). A health check's service must be
    in `known_services` (default: a service whose `health` is not None, so pass the configured names
    to accept a service not checked yet). Services named in log_count/anomaly are checked only against
    `known_log_services`, when given. sentry_new_issues needs Sentry configured and, when the sources list
    projects (`sentry_projects()`), one of them. A percentage literal compared with a bare `*_ratio` series
    is reported too: the ratio is at most 1, and 5% means 5."""
    problems: list[str] = []
    test = condition.test
    selectors = condition.series()
    if selectors:
        names = set(known_series) if known_series is not None else set(await sources.series.names())
        for selector in selectors:
            if selector.name not in names:
                detail = _suggest(selector.name, names, "known series", "none yet (record_metric adds some)")
                subject = f"unknown series {selector.name!r}"
                problems.append(_problem(subject, selector.position, condition.text, detail))
    if isinstance(test, HealthCheck):
        if known_services is not None:
            known = test.service in known_services
        else:
            known = await sources.health(test.service) is not None
        if not known:
            detail = (
                _suggest(test.service, known_services, "configured services", "none configured")
                if known_services is not None
                else "it is not configured or has never been checked"
            )
            subject = f"unknown service {test.service!r} in health()"
            problems.append(_problem(subject, test.position, condition.text, detail))
    if known_log_services is not None:
        log_reads: tuple[LogCount | LogAnomaly, ...] = (
            (test,) if isinstance(test, LogAnomaly) else condition.log_counts()
        )
        for read in log_reads:
            if read.service is not None and read.service not in known_log_services:
                detail = _suggest(read.service, known_log_services, "services with logs", "none yet")
                subject = f"no logs from service {read.service!r}"
                problems.append(_problem(subject, read.position, condition.text, detail))
    if sentry_reads := condition.sentry_reads():
        projects = getattr(sources, "sentry_projects", lambda: None)()
        for read in sentry_reads:
            if projects is None:
                detail = "sentry is not configured: set SENTRY_AUTH_TOKEN and sentry.organization (docs/SENTRY.md)"
                problems.append(_problem("sentry_new_issues() reads Sentry", read.position, condition.text, detail))
            elif projects and read.project not in projects:  # none listed: every project the token reads
                detail = _suggest(read.project, projects, "sentry.projects", "none configured")
                subject = f"unknown Sentry project {read.project!r}"
                problems.append(_problem(subject, read.position, condition.text, detail))
    if isinstance(test, Comparison):
        problems.extend(_percent_of_ratio(test, condition.text))
    return problems


def _percent_of_ratio(test: Comparison, text: str) -> list[str]:
    problems = []
    for side, other in ((test.left, test.right), (test.right, test.left)):
        if not (isinstance(other, Number) and other.percent):
            continue
        if isinstance(side, Aggregation) and side.function in _RATIO_FUNCTIONS:
            selector = side.selector
        elif isinstance(side, Selector):
            selector = side
        else:
            continue
        if selector.name.endswith("_ratio"):
            shown, number = describe_expr(side), describe_expr(Number(other.value))
            fraction = describe_expr(Number(other.value / 100))
            detail = (
                f"it is at most 1, but {number}% is the number {number}, so this never fires; "
                f"write {shown} * 100 {test.op} {number} or {shown} {test.op} {fraction}"
            )
            problems.append(_problem(f"{selector.name} is a ratio from 0 to 1", selector.position, text, detail))
    return problems


def _suggest(name: str, known: Collection[str], what: str, none: str) -> str:
    if not known:
        return f"{what}: {none}"
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = sorted(known)
    more = f", … ({len(listed) - 30} more)" if len(listed) > 30 else ""
    return f"{hint}{what}: {', '.join(listed[:30])}{more}"


def _problem(subject: str, position: int, text: str, detail: str) -> str:
    """One line, so callers can join several (the caret form is for parse errors). Without the text
    as written, a position would point into nothing, so it is left out."""
    where = f" (at position {position})" if text else ""
    return f"{subject}{where}: {detail}"


# --- evaluation -----------------------------------------------------------------------------------


async def evaluate_condition(condition: Condition, sources: ConditionSources, *, now: float) -> ConditionResult:
    """The condition at `now` (epoch seconds). `for` is not applied here: the evaluator counts how long
    `breached` has held. An error from a source propagates unchanged."""
    test = condition.test
    if isinstance(test, HealthCheck):
        return await _health(test, sources)
    if isinstance(test, LogAnomaly):
        return await _anomaly(test, sources)
    reads = list(dict.fromkeys(leaves(test)))
    fetched = await asyncio.gather(*(_read(leaf, sources, now) for leaf in reads), return_exceptions=True)
    for outcome in fetched:
        if isinstance(outcome, BaseException):
            raise outcome
    values: dict[Expr, float | None] = dict(zip(reads, fetched, strict=True))  # type: ignore[arg-type]
    left, right = compute(test.left, values), compute(test.right, values)
    if left is None or right is None:
        missing = [describe_expr(leaf) for leaf in reads if values[leaf] is None]
        reason = (
            f"no data for {', '.join(missing)}"
            if missing
            else "no data: the value cannot be computed (a division by zero or an overflow)"
        )
        return ConditionResult(None, left, _clipped(f"{describe_condition(condition)}: {reason}"))
    breached = compare(test.op, left, right)
    percent = "%" if isinstance(test.right, Number) and test.right.percent else ""
    left_text = f"{describe_expr(test.left)} = {_shown(left)}{percent}"
    right_text = describe_expr(test.right)
    if not isinstance(test.right, Number):
        right_text += f" = {_shown(right)}"
    summary = f"{left_text} {test.op} {right_text}" if breached else f"{left_text}, not {test.op} {right_text}"
    return ConditionResult(breached, left, _clipped(summary))


async def _read(leaf: Expr, sources: ConditionSources, now: float) -> float | None:
    if isinstance(leaf, SentryNewIssues):
        reader = getattr(sources, "sentry_new_issues", None)
        if reader is None:
            return None  # a source without Sentry: no data, which neither fires nor resolves
        found = await reader(project=leaf.project, window_s=float(leaf.window_s))
        return None if found is None else float(found)
    if isinstance(leaf, LogCount):
        count = await sources.log_count(
            severity=leaf.severity, service=leaf.service, query=leaf.query, window_s=float(leaf.window_s)
        )
        return float(count)  # a count is never "no data": no matching record is 0
    if isinstance(leaf, Selector):
        leaf = Aggregation("last", leaf, STALE_AFTER_S)
    return await read_leaf(leaf, sources.series, now)  # type: ignore[arg-type]


async def _health(test: HealthCheck, sources: ConditionSources) -> ConditionResult:
    shown = f"health({_service_text(test.service)})"
    status = await sources.health(test.service)
    if status not in HEALTH_STATES:
        return ConditionResult(None, None, f"{shown}: no data (never checked)")
    breached = (status == test.state) == (test.op == "==")
    value = 1.0 if status == "up" else 0.0
    if breached:
        return ConditionResult(True, value, f"{shown} = {status}")
    return ConditionResult(False, value, f"{shown} = {status}, not {test.op} {test.state}")


async def _anomaly(test: LogAnomaly, sources: ConditionSources) -> ConditionResult:
    found = await sources.log_anomalies(service=test.service, window_s=float(test.window_s))
    details = tuple(found)
    scope = f"logs of {test.service}" if test.service is not None else "logs"
    window = format_duration(test.window_s)
    if not details:
        return ConditionResult(False, 0.0, f"no anomaly in the {scope} over the last {window}")
    count = "1 anomaly" if len(details) == 1 else f"{len(details)} anomalies"
    summary = f"{count} in the {scope} over the last {window}: {'; '.join(details)}"
    return ConditionResult(True, float(len(details)), _clipped(summary), details)


def _shown(value: float) -> str:
    """A value for people: whole numbers as such, otherwise a few significant digits."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1:
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1e15 else f"{value:.4g}"
    return f"{value:.4g}"


def _clipped(summary: str) -> str:
    line = " ".join(summary.split())  # one line, whatever the explanations held
    return line if len(line) <= MAX_SUMMARY_LENGTH else line[: MAX_SUMMARY_LENGTH - 1] + "…"

