"""Fuzzing: every registry tool's input schema, the query and condition languages, the ingest parsers.

Every tool is called through `registry.invoke` (the gate path) with arguments derived from its JSON input
schema: values of the declared types with boundary and odd values, wrong types, unknown keys, missing
required keys. The only acceptable outcomes are a result or an `OpsAgentError`; a crash that the gate turned
into "internal error (reference ...)" counts as a defect too. No configured secret may appear in any answer.

CI runs a bounded number of cases per tool (derandomized, repeatable). On demand:

    FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/test_fuzz.py

runs that many per tool and per parser, with a random seed (hypothesis prints the failing example).
No request leaves the process: the HTTP client is a transport that refuses every connection, and webhook
host names resolve to a fixed public address without DNS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fnmatch
import json
import math
import os
import string
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ops_agent.config import load_settings
from ops_agent.errors import InvalidArguments, OpsAgentError, ToolFailed
from ops_agent.ooda.rule_planner import RulePlanner
from ops_agent.registry import mentioned
from ops_agent.services import Services, open_services
from ops_agent.tools.alerts.alert_management_tool import _duration
from ops_agent.tools.alerts.condition import describe_condition, parse_condition
from ops_agent.tools.logs.analysis.mining import mine_templates
from ops_agent.tools.logs.analysis.rootcause import load_signatures, match_signatures
from ops_agent.tools.logs.index.query import parse_query, parse_severity, parse_time_range
from ops_agent.tools.logs.ingest.body import json_array, json_lines
from ops_agent.tools.logs.ingest.parse import detect_format, parse_line
from ops_agent.tools.logs.ingest.vercel_logs import drain_records
from ops_agent.tools.logs.record import LogRecord
from ops_agent.tools.monitoring.query import describe, parse as parse_metric_query
from tests.test_entry_points import SAMPLE_ARGUMENTS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0") or 0)
ON_DEMAND = EXAMPLES > 0
TOOL_EXAMPLES = EXAMPLES or 20  # per tool
PARSER_EXAMPLES = EXAMPLES or 150  # per parser
TASK_EXAMPLES = max(5, EXAMPLES // 20) if ON_DEMAND else 8  # execute_task plans: fewer
CALL_TIMEOUT_S = 30.0  # a call that takes longer is a hang


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=not ON_DEMAND,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


# --- secrets that must never come back ------------------------------------------------------------------

VERCEL_TOKEN = "vercel-secret-token-0123456789"
SLACK_URL = "https://hooks.slack.com/services/T000/B000/slacksecret0123456789"
MAILTRAP_TOKEN = "mailtrap-secret-token-0123456789"
PROMETHEUS_TOKEN = "prom-secret-token-0123456789"
HOOK_URL = "https://hooks.example.net/pager/hooksecret0123456789"
HOOK_SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTAxMjM0NTY3ODk="
INGEST_TOKEN = "ingest-secret-token-0123456789"
SECRETS = [VERCEL_TOKEN, SLACK_URL, MAILTRAP_TOKEN, PROMETHEUS_TOKEN, HOOK_URL, HOOK_SECRET, INGEST_TOKEN]
# Distinctive parts: a secret shortened or re-encoded must not survive either.
SECRET_MARKS = ["slacksecret0123456789", "hooksecret0123456789", "c2VjcmV0LXNpZ25pbmcta2V5", "secret-token-0123456789"]


def assert_no_secret(text: str, where: str, given: str = "") -> None:
    """No configured secret in `text`, not even one the caller sent (answers are scrubbed); and no
    distinctive part of one unless the caller sent that part itself (echoing its own text is no leak)."""
    for secret in SECRETS:
        assert secret not in text, f"secret {secret[:12]!r}... leaked in {where}: {text[:500]!r}"
    for mark in SECRET_MARKS:
        assert mark not in text or mark in given, f"secret part {mark!r} leaked in {where}: {text[:500]!r}"


# --- real services, nothing reachable ---------------------------------------------------------------------

CLOSED = "http://127.0.0.1:9"  # discard port: nothing listens


def refuse(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("connection refused (fuzz: no network)", request=request)


async def public_resolver(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]  # a public address; the refusing transport means nothing is sent there


def fuzz_config(tmp: Path) -> Path:
    from ops_agent.governance import PolicyTable

    # Every action at the lowest level: the gate lets every tool run however the fuzz moves the score.
    policy = {action: "sandbox_only" for action in PolicyTable.load().rules}
    config = {
        # ... and no rate limit: the fuzz is after the tools' handlers, not the limiter (tests/test_rate_limit.py).
        "governance": {"policy": policy, "rate_limit": {"calls_per_minute": 0, "changes_per_minute": 0}},
        "storage": {"path": str(tmp / "fuzz.db")},
        "services": [{"name": "api", "url": f"{CLOSED}/health", "timeout_s": 0.5, "project": "demo-app"}],
        "monitoring": {"prometheus_url": CLOSED, "prometheus_token": PROMETHEUS_TOKEN, "prometheus_timeout_s": 1},
        "vercel": {
            "api_url": CLOSED, "timeout_s": 1, "max_attempts": 1, "projects": ["demo-app"],
            "default_project": "demo-app", "sandbox_projects": ["sandbox-app"], "poll_interval_s": 0.05,
            "deploy_timeout_s": 1,
        },
        "notify": {
            "mailtrap_api_url": CLOSED, "email_recipients": ["oncall@example.com"], "timeout_s": 1,
            "max_attempts": 1, "backoff_s": 0.01, "max_backoff_s": 0.01, "rate_limit_s": {},
            "webhooks": {"pager": {"url": HOOK_URL, "secret": HOOK_SECRET}}, "poll_interval_s": 0.05,
        },
        "logs": {"ingest_token": INGEST_TOKEN},
        "alerts": {"restart_commands": {"restart_api": ["true"]}, "command_timeout_s": 5},
        "incidents": {"verify_timeout_s": 5, "verify_checks": 1},
    }
    path = tmp / "fuzz.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


SEED_LINES = [  # something for searches, pattern mining and anomaly detection to find
    '{"level": "error", "msg": "connection refused to db 10.0.0.5:5432", "status": 503, "request_id": "r1"}',
    "2026-11-27T11:59:00Z ERROR timeout after 30s calling https://api.example.com/v1/users",
    'time=2026-11-27T11:59:01Z level=warn msg="slow query" duration_ms=1200 path=/api/users',
    '127.0.0.1 - - [27/Nov/2026:11:59:02 +0000] "GET /api/users HTTP/1.1" 500 12 "-" "curl/8"',
    "<11>1 2026-11-27T11:59:03Z web api 42 - - OutOfMemoryError: Java heap space",
] * 4


class FuzzEnv:
    """Services opened once per module on a private event loop, so hypothesis can drive calls synchronously."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.stack = AsyncExitStack()
        environ = {"VERCEL_TOKEN": VERCEL_TOKEN, "SLACK_WEBHOOK_URL": SLACK_URL, "Mailtrap_API_TOKEN": MAILTRAP_TOKEN}
        self.settings = load_settings(fuzz_config(tmp), environ=environ)  # no ANTHROPIC_API_KEY: offline planner
        assert self.settings.llm.api_key is None
        self.services: Services = self.run(self._open())
        self.caller = self.services.identity
        self.outcomes: dict[str, dict[str, int]] = {}  # tool -> outcome (result or error class) -> calls

    async def _open(self) -> Services:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(refuse), follow_redirects=False, timeout=2.0)
        self.stack.push_async_callback(http.aclose)
        services = await self.stack.enter_async_context(open_services(self.settings, http=http, background=False))
        invoke = services.registry.invoke
        await invoke(services.identity, "ingest_logs", {"lines": SEED_LINES, "service": "api"})
        for name, value in (("system_cpu_percent", 42.0), ("response_time_ms", 120.0), ("errors", 3.0), ("requests", 90.0)):
            await invoke(services.identity, "record_metric", {"name": name, "value": value, "labels": {"service": "api"}})
        await services.monitoring.series.flush()
        # A rule for update_alert_rule and delete_alert_rule to find (fuzzing those may delete or change it).
        await invoke(services.identity, "create_alert_rule", SAMPLE_ARGUMENTS["create_alert_rule"])
        services.notify.resolver = public_resolver
        for channel in services.notify.channels.values():
            if hasattr(channel, "resolver"):
                channel.resolver = public_resolver
        return services

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def count(self, name: str, outcome: str) -> None:
        counts = self.outcomes.setdefault(name, {})
        counts[outcome] = counts.get(outcome, 0) + 1

    def close(self) -> None:
        if os.environ.get("FUZZ_REPORT"):  # FUZZ_REPORT=1 pytest -s: calls per tool by outcome
            for name, counts in sorted(self.outcomes.items()):
                print(f"fuzz {name}: {sum(counts.values())} calls {dict(sorted(counts.items()))}")
        try:
            self.run(self.stack.aclose())
        finally:
            self.loop.close()

    def call(self, name: str, arguments: Any) -> None:
        """One call through the gate; fails the test on any outcome but a result or a deliberate error."""
        started = time.monotonic()
        try:
            result = self.run(asyncio.wait_for(
                self.services.registry.invoke(self.caller, name, arguments), CALL_TIMEOUT_S
            ))
        except TimeoutError:
            pytest.fail(f"{name} hung for {CALL_TIMEOUT_S:g} s on {short(arguments)}")
        except OpsAgentError as exc:
            self.count(name, type(exc).__name__)
            check_error(name, arguments, exc)
        except BaseException as exc:  # noqa: BLE001 - exactly what the fuzz is looking for
            pytest.fail(f"{name} raised {type(exc).__name__}: {exc!r} on {short(arguments)}")
        else:
            self.count(name, "result")
            assert_no_secret(repr(result), f"the result of {name}", repr(arguments))
        assert time.monotonic() - started < CALL_TIMEOUT_S


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 600 else text[:600] + "..."


def check_error(name: str, arguments: Any, exc: OpsAgentError) -> None:
    message = exc.public_message
    assert isinstance(message, str) and message.strip(), (name, arguments, exc)
    assert_no_secret(message, f"the error of {name}", repr(arguments))
    assert_no_secret(str(exc), f"str() of the error of {name}", repr(arguments))
    assert "Traceback" not in message
    if isinstance(exc, ToolFailed) and "internal error" in message:
        cause = exc.__cause__
        pytest.fail(f"{name} crashed: {type(cause).__name__}: {cause!r} on {short(arguments)}")
    if isinstance(exc, InvalidArguments):
        assert message.startswith(f"invalid arguments for {name}: "), message
        assert exc.problems, message
        for field, problem in exc.problems:
            assert field and problem, (field, problem)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzEnv]:
    env = FuzzEnv(tmp_path_factory.mktemp("fuzz"))
    try:
        yield env
    finally:
        env.close()


def token_soup(tokens: list[str], max_size: int = 25) -> st.SearchStrategy[str]:
    """Text made of the language's own tokens, glued with or without spaces: reaches deep parser states."""
    return st.lists(st.sampled_from(tokens), max_size=max_size).flatmap(
        lambda parts: st.sampled_from(["", " "]).map(lambda sep: sep.join(parts))
    )


LOG_QUERY_TOKENS = [
    "error", "timeout", "AND", "OR", "NOT", "and", "or", "-", "(", ")", '"', '"a phrase"', "conn*", "*", "service:",
    "service:api", "level:warn", "severity:<error", "severity:fatal", "status:>=500", "status:<", "http.status:<400",
    ":", ">=", "<=", ">", "<", "=", "path:\"/api\"", "10.0.0.1", "dpl_abc-123", "\\", "\x00", "\u200b", "é", "1e309",
    "nan", "status:>=nan", "status:>inf", "attr.deep.key:x", "'",
]
CONDITION_TOKENS = [
    "system_cpu_percent", "error_rate", "cpu_percent", ">", "<", ">=", "<=", "==", "!=", "90", "5", "%", "for", "5m",
    "0s", "1e400", "-1", "nan", "avg(", "max(", "rate(", "p99(", "sum(", "response_time_ms", "[5m]", "[0m]", "[",
    "]", "(", ")", "{", "}", 'service="api"', ",", "health(api)", "health(", "api", "down", "up", "log_count(",
    "severity=error", "service=api", 'query="timeout"', 'query="(("', "anomaly(logs)", "anomaly(", "logs", "and",
    "or", "+", "-", "*", "/", '"', "=", "!~", "=~", "\u200b", "_", "1.5", ".5", "5.", "1e3",
]
METRIC_TOKENS = [
    "avg(", "sum(", "min(", "max(", "rate(", "count(", "p50(", "p99(", "last(", "system_cpu_percent", "errors",
    "requests", "m", "{", "}", 'a="b"', 'a!="b"', 'a=~"b"', ",", "[5m]", "[1h]", "[0s]", "[", "]", "(", ")", "+",
    "-", "*", "/", "100", "0", "1e309", "-1", "nan", "inf", ">", "<", ">=", "==", "!=", '"', "\\", "by", "(job)",
    ".5", "1.", "_", ":", "\u0660", "\u00b2",
]


# --- JSON schema -> strategy ------------------------------------------------------------------------------

ODD_STRINGS = [
    "", " ", "\x00", "a\x00b", "\u200b", "\u200d\u200c", "\u202eevil\u202c", "\ufeff", "\ud800", "a\udfffb",
    "\U0001f4a5" * 3, "e\u0301", "İ", "ß", "\n", "\r\n", "a\r\nX-Injected: 1", "\t", "\\", '"', "'", "`",
    "${jndi:ldap://x}", "%s%n%x", "{{7*7}}", "' OR 1=1 --", "'; DROP TABLE audit; --", "../../etc/passwd",
    "NaN", "-1", "1e309", "null", "[]", "{}", "*", "**", "*" * 40, "(" * 60, ")" * 60, "a" * 5000,
    "NOT " * 30, "x" * 100_001, "\u0000" * 10, "\x7f", "\x1b[31mred", "<script>alert(1)</script>",
    VERCEL_TOKEN, SLACK_URL, HOOK_URL, f"token {VERCEL_TOKEN}", f"Bearer {PROMETHEUS_TOKEN}",
]
ODD_NUMBERS = [0, -1, 1, -0.0, 0.5, 1e-308, 5e-324, 1e308, -1e308, 2**31, 2**63, -(2**63), 10**30,
               math.inf, -math.inf, math.nan, True, False]

# Values that reach deeper than random text: names the configuration knows, and well-formed sentences.
KNOWN: dict[str, list[Any]] = {
    "service": ["api", "web", "API", "api "],
    "project": ["demo-app", "sandbox-app", "other"],
    "deployment_id": ["dpl_abc123", "demo-app.vercel.app"],
    "target_deployment_id": ["dpl_abc122"],
    "deployment": ["dpl_abc123", "https://demo-app.vercel.app", "demo-app.vercel.app"],
    "condition": [
        "system_cpu_percent > 90 for 5m", "error_rate > 5%", "avg(response_time_ms[5m]) > 500",
        "health(api) == down", "log_count(severity=error, service=api)[5m] > 100", "anomaly(logs)",
        'rate(http_requests_total{service="api"}[1m]) > 1', "p99(response_time_ms[5m]) >= 1e400",
        "log_count(query=\"timeout*\")[1m] > 0",
    ],
    "query": [
        "avg(system_cpu_percent[5m])", "errors / requests * 100", 'max(m{a="b",c!="d"}[1h])', "1/0", "-(-(-x))",
        "timeout", "service:api status:>=500", '"connection refused" OR conn*', "up", "rate(x[5m]) > 1",
    ],
    "time_range": ["1h", "15m", "7d", "all", "2026-01-01T00:00:00Z..2026-01-02T00:00:00Z", "0s", "99999999w",
                   "2026-01-01..", "../x", "9999-12-31T23:59:59"],
    "window": ["5m", "15m", "1h", "0m", "1s", "100w"],
    "severity": ["error", "critical", "warning", "debug", "fatal", "ERR", "high", "medium"],
    "duration": ["1h", "30m", "1d", "0s", "367d", "1.5h", "1e3m"],
    "repeat_interval": ["1h", "30m", "0s", "5s"],
    "channels": [["slack"], ["email"], ["webhook:pager"], ["webhook"], ["mailtrap", "smtp"], ["webhook:none"]],
    "url": ["https://hooks.example.com/ops", f"{CLOSED}/x", "https://10.0.0.1/x", "http://[::1]/", "file:///etc/x",
            "https://user:pw@example.com/", "https://example.com:99999/", "https://[fe80::1%25eth0]/"],
    "matchers": [{"rule": "hot_*"}, {"severity": "critical"}, {"rule": "*" * 30 + "!"}, {"rule": "[!a-"}],
    "name": ["hot_cpu", "restart_api", "cpu_5m", "api_response_time_ms"],
    "alert_id": ["abc-123"], "silence_id": ["abc123"], "notification_id": ["ntf_abc"],
    "task": ["show system metrics", "check the api health and search logs for timeout in the last 1h"],
    "labels": [{"service": "api"}, {"": ""}, {"a" * 300: "b" * 3000}],
    "payload": [{"event": "test"}, {"nested": {"deep": [1, 2, {"x": None}]}}, {"token": VERCEL_TOKEN}],
    "lines": [["2026-01-01T00:00:00Z ERROR boom"], ['{"level": "error", "msg": "x", "time": 1e400}'],
              ["<34>1 2026-01-01T00:00:00Z host app 1 - - msg"]],
    "session_field": ["request_id", "trace_id"],
    "key": ["FEATURE_FLAG"],
    "value": ["on", VERCEL_TOKEN],
    "since": ["2026-01-01T00:00:00Z", "0001-01-01T00:00:00", "9999-12-31T23:59:59+14:00"],
    "to": [["oncall@example.com"], ["not-an-address"], ["a@b\r\nBcc: x@y"]],
}

# Fields whose text is a language: sentences of its tokens, which get past validation into the parsers.
LANGUAGES: dict[str, st.SearchStrategy[str]] = {
    "query": token_soup(LOG_QUERY_TOKENS) | token_soup(METRIC_TOKENS),
    "condition": token_soup(CONDITION_TOKENS),
}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
junk = st.recursive(
    json_scalars | st.sampled_from(ODD_STRINGS) | st.sampled_from(ODD_NUMBERS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


lone_surrogates = st.text(st.characters(min_codepoint=0xD700, max_codepoint=0xE000, exclude_categories=()),
                          min_size=1, max_size=6)


def odd_text(min_length: int = 0, max_length: int | None = None) -> st.SearchStrategy[str]:
    bounds: list[str] = []
    for length in {min_length, max(min_length - 1, 0), max_length, (max_length or 0) + 1}:
        if length is not None and length <= 100_001:
            bounds.append("a" * length)
            bounds.append("\u200b" * length)
    cap = min(max_length if max_length is not None else 200, 200)
    return st.one_of(
        st.text(min_size=min(min_length, cap), max_size=cap),
        st.builds(str.__add__, st.text(max_size=4), lone_surrogates),
        st.text(alphabet=string.printable, min_size=min(min_length, cap), max_size=cap),
        st.sampled_from(ODD_STRINGS),
        st.sampled_from(bounds),
    )


def from_schema(schema: dict[str, Any], defs: dict[str, Any], field: str = "", depth: int = 0) -> st.SearchStrategy:
    """Values of the declared type, mostly valid, often at or past a bound, sometimes of another type."""
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, field, depth)
    wrong = junk if depth < 3 else json_scalars
    known = st.sampled_from(KNOWN[field]) if field in KNOWN else st.nothing()
    if field in LANGUAGES:
        known = known | LANGUAGES[field]
    if "anyOf" in schema:
        return st.one_of(*(from_schema(s, defs, field, depth + 1) for s in schema["anyOf"]), known, wrong)
    if "enum" in schema:
        values = list(schema["enum"])
        return st.one_of(st.sampled_from(values), st.sampled_from([str(v).upper() for v in values] + [""]), wrong)
    kind = schema.get("type")
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        options = [odd_text(low, high), known, wrong]
        if pattern := schema.get("pattern"):
            valid = st.from_regex(pattern, fullmatch=True)
            if high is not None:
                valid = valid.filter(lambda s: low <= len(s) <= high)
            options.insert(0, valid)
        if schema.get("format") == "date-time":
            options.insert(0, st.datetimes().map(lambda d: d.isoformat()))
        return st.one_of(*options)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        edges = [v for v in (low, high) if v is not None]
        near = [e + d for e in edges for d in (-1, 0, 1)] + [e + d for e in edges for d in (-0.001, 0.001)]
        if kind == "integer":
            base = st.integers(min_value=low, max_value=high)
            near = [int(v) for v in near]
        else:
            base = st.floats(min_value=low, max_value=high, allow_nan=False)
        return st.one_of(base, st.sampled_from(near or [0]), st.sampled_from(ODD_NUMBERS), known, wrong)
    if kind == "boolean":
        return st.one_of(st.booleans(), st.sampled_from([0, 1, "true", "yes", None]), wrong)
    if kind == "array":
        items = from_schema(schema.get("items", {}), defs, "", depth + 1) if schema.get("items") else junk
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        cap = min(high if high is not None else 8, 8)
        over = [] if high is None else [["x"] * (high + 1)]
        return st.one_of(
            st.lists(items, min_size=min(low, cap), max_size=cap), known, st.just([]), st.sampled_from(over or [[]]),
            wrong,
        )
    if kind == "object" or "properties" in schema:
        return object_strategy(schema, defs, depth + 1) | known | wrong
    return junk  # no type: anything


def valid_value(schema: dict[str, Any], defs: dict[str, Any], field: str = "") -> st.SearchStrategy:
    """Values the schema accepts (often not the tool: an id that does not exist), to get past validation."""
    if "$ref" in schema:
        return valid_value(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, field)
    if field in KNOWN:  # a value that exists here, or any the schema accepts
        return st.sampled_from(KNOWN[field]) | valid_value(schema, defs)
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    if "anyOf" in schema:
        return st.one_of(*(valid_value(s, defs, field) for s in schema["anyOf"]))
    kind = schema.get("type")
    if kind == "string":
        low, high = schema.get("minLength", 0), min(schema.get("maxLength", 60), 60)
        if pattern := schema.get("pattern"):
            return st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= schema.get("maxLength", 10**6))
        return st.text(min_size=low, max_size=max(low, high))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if kind == "integer":
            return st.integers(min_value=low, max_value=high)
        return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False,
                         exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.nothing()


def object_strategy(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> st.SearchStrategy:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    extra = schema.get("additionalProperties", True)
    if not properties:
        if extra is False:
            return st.just({})
        values = junk if extra is True else from_schema(extra, defs, "", depth + 1)
        keys = odd_text(0, 40)
        high = min(schema.get("maxProperties", 6), 6)
        low = min(schema.get("minProperties", 0), high)
        return st.one_of(
            st.dictionaries(keys, values, min_size=low, max_size=high),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), min_size=schema.get("maxProperties", 6) + 1,
                            max_size=schema.get("maxProperties", 6) + 1),
        )
    fields = {name: from_schema(sub, defs, name, depth) for name, sub in properties.items()}
    return st.fixed_dictionaries(
        {name: fields[name] for name in properties if name in required},
        optional={name: fields[name] for name in properties if name not in required},
    )


def arguments_for(spec: Any) -> st.SearchStrategy:
    """(a) declared types with odd values, (b) wrong types, (c) unknown keys, (d) missing required keys,
    and a valid sample with one field replaced, which gets past validation into the handler."""
    schema = spec.input_schema()
    defs = schema.get("$defs", {})
    properties = schema.get("properties", {})
    sample = SAMPLE_ARGUMENTS[spec.name]
    typed = object_strategy(schema, defs)

    def with_extra(args: dict, key: str, value: Any) -> dict:
        return {**args, key: value}

    def without(args: dict, key: str) -> dict:
        return {k: v for k, v in args.items() if k != key}

    options = [
        typed,
        st.builds(with_extra, typed, odd_text(0, 30), junk),
        junk,  # not even an object
    ]
    if properties:
        one_field = st.sampled_from(sorted(properties)).flatmap(
            lambda name: from_schema(properties[name], defs, name).map(lambda value: {**sample, name: value})
        )
        valid_field = st.sampled_from(sorted(properties)).flatmap(
            lambda name: valid_value(properties[name], defs, name).map(lambda value: {**sample, name: value})
        )
        options += [one_field] * 3 + [valid_field] * 3  # the deepest-reaching kinds: most of the cases
    if schema.get("required"):
        options.append(st.builds(without, typed, st.sampled_from(schema["required"])))
        options.append(st.builds(without, st.just(sample), st.sampled_from(schema["required"])))
    return st.one_of(*options)


def test_the_fuzz_covers_every_tool(fuzz):
    names = {spec.name for spec in fuzz.services.registry.specs()}
    assert names == set(SAMPLE_ARGUMENTS) == set(FUZZED_TOOLS) | {"execute_task"}


def test_schema_strategies_are_drawable(fuzz):
    """Every schema feature the tools use is understood (a strategy error would show as a skipped fuzz)."""
    for spec in fuzz.services.registry.specs():
        strategy = arguments_for(spec)
        try:
            strategy.validate()
        except InvalidArgument as exc:  # pragma: no cover - a schema feature from_schema does not know
            pytest.fail(f"{spec.name}: {exc}")


FUZZED_TOOLS = sorted(set(SAMPLE_ARGUMENTS) - {"execute_task"})


@pytest.mark.parametrize("name", FUZZED_TOOLS)
def test_tool_survives_fuzzed_arguments(fuzz, name):
    spec = fuzz.services.registry.get(name)
    assert spec is not None

    @fuzz_settings(TOOL_EXAMPLES)
    @given(arguments=arguments_for(spec))
    @example(arguments=SAMPLE_ARGUMENTS[name])
    @example(arguments={**SAMPLE_ARGUMENTS[name], "no_such_field": 1})
    @example(arguments=["not", "an", "object"])
    def run(arguments):
        fuzz.call(name, arguments)

    run()


def test_execute_task_survives_random_tasks(fuzz):
    """The offline planner reads any text without crashing; a plan that fails is an error, not a crash."""
    spec = fuzz.services.registry.get("execute_task")
    words = st.sampled_from([
        "check", "the", "api", "health", "deploy", "demo-app", "to", "production", "rollback", "search", "logs",
        "for", "timeout", "in", "last", "1h", "and", "then", "show", "metrics", "alert", "when", "cpu", "above",
        "90%", "silence", "hot_*", "notify", "slack", '"', "'", "dpl_abc", "env", "var", "X=1", ",", ";", "(", "*",
    ])
    sentences = st.lists(words, min_size=1, max_size=20).map(" ".join)

    @fuzz_settings(TASK_EXAMPLES)
    @given(arguments=st.one_of(
        st.fixed_dictionaries({"task": st.one_of(sentences, odd_text(1, 4000))},
                              optional={"priority": st.sampled_from(["low", "high", "urgent", ""])}),
        arguments_for(spec),
    ))
    @example(arguments={"task": "show system metrics"})
    @example(arguments={"task": "search logs for " + "(" * 100})
    @example(arguments={"task": "a" * 4000})
    def run(arguments):
        fuzz.call("execute_task", arguments)

    run()


# --- parsers ----------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()


def assert_parser_error(exc: BaseException, text: str) -> None:
    assert isinstance(exc, OpsAgentError), f"{type(exc).__name__}: {exc!r} on {text[:300]!r}"
    assert exc.public_message.strip()


@fuzz_settings(PARSER_EXAMPLES)
@given(text=st.one_of(token_soup(LOG_QUERY_TOKENS), st.text(max_size=200), st.sampled_from(ODD_STRINGS)))
@example(text="(" * 40 + "a" + ")" * 40)
@example(text="status:>=1e999")
def test_log_query_parser(text):
    try:
        parse_query(text)
    except Exception as exc:  # noqa: BLE001
        assert_parser_error(exc, text)


@fuzz_settings(PARSER_EXAMPLES)
@given(text=st.one_of(token_soup(CONDITION_TOKENS), st.text(max_size=200), st.sampled_from(ODD_STRINGS)))
@example(text="system_cpu_percent > 90 for 5m")
@example(text="log_count(query=\"" + "(" * 50 + "\")[5m] > 1")
def test_condition_language(text):
    try:
        condition = parse_condition(text)
    except Exception as exc:  # noqa: BLE001
        assert_parser_error(exc, text)
        return
    canonical = describe_condition(condition)
    assert parse_condition(canonical) == condition, (text, canonical)  # the canonical text means the same


@fuzz_settings(PARSER_EXAMPLES)
@given(text=st.one_of(token_soup(METRIC_TOKENS), st.text(max_size=200), st.sampled_from(ODD_STRINGS)))
@example(text="avg(system_cpu_percent[5m])")
@example(text="-" * 500 + "1")
def test_metric_query_language(text):
    try:
        query = parse_metric_query(text)
    except Exception as exc:  # noqa: BLE001
        assert_parser_error(exc, text)
        return
    canonical = describe(query)
    assert parse_metric_query(canonical) == query, (text, canonical)  # documented: parse(describe(q)) == q


time_text = st.one_of(
    st.builds(lambda n, u, p: f"{p}{n}{u}", st.one_of(st.integers(-5, 10**12).map(str), st.floats().map(repr)),
              st.sampled_from(list("smhdwSMHDWx") + [""]), st.sampled_from(["", "last ", "past ", " "])),
    st.builds(lambda a, sep, b: f"{a}{sep}{b}", st.datetimes(timezones=st.none() | st.timezones()).map(str) | odd_text(0, 30),
              st.sampled_from(["..", "/", " .. ", ""]), st.datetimes().map(lambda d: d.isoformat()) | odd_text(0, 30)),
    st.text(max_size=80),
    st.sampled_from(ODD_STRINGS + ["all", "ALL", None]),
)


@fuzz_settings(PARSER_EXAMPLES)
@given(text=time_text)
@example(text="9" * 400 + "w")
@example(text="0001-01-01T00:00:00+14:00..")
@example(text="9999-12-31T23:59:59-14:00")  # found: a lone start after now, or outside 1970..2100, was taken
@example(text="1900-01-01")
def test_time_range_parser(text):
    try:
        start, end = parse_time_range(text, now=NOW)
    except Exception as exc:  # noqa: BLE001
        assert_parser_error(exc, str(text))
        return
    assert start is None or (math.isfinite(start) and start < end), (text, start, end)
    assert math.isfinite(end)


@fuzz_settings(PARSER_EXAMPLES)
@given(text=st.one_of(time_text.filter(lambda t: t is not None), st.sampled_from(KNOWN["duration"])))
@example(text="9" * 400 + "d")
def test_alert_durations(text):
    try:
        seconds = _duration("duration", text)
    except Exception as exc:  # noqa: BLE001
        assert_parser_error(exc, text)
        return
    assert 1 <= seconds <= 366 * 86400


@fuzz_settings(PARSER_EXAMPLES)
@given(text=st.one_of(st.text(max_size=30), st.sampled_from(KNOWN["severity"] + ODD_STRINGS)))
def test_severity_names(text):
    try:
        parse_severity(text)
    except Exception as exc:  # noqa: BLE001
        assert_parser_error(exc, text)


# Lines shaped like each format the ingest parser knows, with junk in every slot.
json_line = st.dictionaries(
    st.sampled_from(["time", "timestamp", "ts", "@timestamp", "level", "severity", "lvl", "msg", "message", "service",
                     "host", "status", "attributes", "error", "trace_id", "", "\u0000"]) | st.text(max_size=6),
    junk, max_size=6,
).map(lambda d: json.dumps(d, allow_nan=True))
logfmt_line = st.lists(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["time", "level", "msg", "ts", "service", "x", ""]),
              st.one_of(st.text(max_size=10), st.sampled_from(['"quoted \\" value"', '"', "1e999", "-1", ""]))),
    max_size=6,
).map(" ".join)
syslog_line = st.builds(
    lambda pri, version, rest: f"<{pri}>{version}{rest}",
    st.one_of(st.integers(-1, 300).map(str), st.text(max_size=4)), st.sampled_from(["", "1 ", "0 ", "999 "]),
    st.one_of(
        st.just("2026-01-01T00:00:00Z host app 1 - [a b=\"c\"] msg"),
        st.just("Jan  1 00:00:00 host app[12]: msg"),
        st.just("Feb 30 25:61:61 host app: msg"),
        st.text(max_size=80),
    ),
)
access_line = st.builds(
    lambda ip, when, request, status: f'{ip} - - [{when}] "{request}" {status} 123 "-" "ua"',
    st.sampled_from(["127.0.0.1", "::1", "x"]),
    st.sampled_from(["10/Oct/2000:13:55:36 -0700", "99/Foo/0000:99:99:99 +9999", ""]),
    st.text(max_size=30), st.one_of(st.integers(-1, 10**6).map(str), st.just("-")),
)
generic_line = st.builds(
    lambda when, level, message: f"{when} {level} {message}",
    st.one_of(st.datetimes().map(lambda d: d.isoformat()), st.sampled_from(["0000-00-00 00:00:00", "2026-13-45T99:99"])),
    st.sampled_from(["ERROR", "[warn]", "I1127", "E0101 12:00:00.000000", "FATAL:", ""]), st.text(max_size=40),
)
any_line = st.one_of(json_line, logfmt_line, syslog_line, access_line, generic_line, st.text(max_size=300),
                     st.sampled_from(ODD_STRINGS))


@fuzz_settings(PARSER_EXAMPLES * 2)
@given(line=any_line, received=st.one_of(st.none(), st.floats(allow_nan=True)), year=st.one_of(st.none(), st.integers(-10, 10**5)))
@example(line='{"time": 1e400, "level": {"x": 1}}', received=None, year=None)
@example(line="<999999999999999999999>1 x", received=None, year=None)
def test_ingest_line_parser_never_raises(line, received, year):
    record = parse_line(line, service="svc", host="h", received=received, year=year)
    assert isinstance(record, LogRecord)
    assert detect_format(line) in ("json", "logfmt", "syslog", "combined", "generic", "text")


@fuzz_settings(PARSER_EXAMPLES)
@given(body=st.one_of(
    st.lists(st.one_of(json_line, st.dictionaries(
        st.sampled_from(["message", "level", "timestamp", "statusCode", "proxy", "projectName", "host", "source"]),
        junk, max_size=6,
    ).map(json.dumps)), max_size=5).map("\n".join),
    st.lists(junk, max_size=5).map(lambda items: json.dumps(items)),
    st.text(max_size=200),
    st.sampled_from(["[" * 100_000, "[]", "{}", "\n\n", "[1,2", '{"proxy": "x"}', '{"proxy": [1], "message": ""}']),
).map(lambda text: text.encode("utf-8", "surrogatepass")))
@example(body=b'{"proxy": "not an object"}')  # found: AttributeError on a proxy that is not an object
@example(body=b'{"proxy": [1, 2]}')
@example(body=b'{"timestamp": "soon", "level": 5, "statusCode": "500"}')
@example(body=b'{"timestamp": 1e400}')
@example(body=b'{"message": "x", "projectName": {"a": 1}, "host": [1]}')
def test_ingest_bodies(body):
    try:
        records = drain_records(body)
    except Exception as exc:  # noqa: BLE001
        assert_parser_error(exc, repr(body))
        return
    assert all(isinstance(record, LogRecord) for record in records)
    text = body.decode("utf-8", "replace")
    for reader in (json_array, json_lines):
        try:
            reader(text)
        except Exception as exc:  # noqa: BLE001
            assert_parser_error(exc, text)


# --- regular expressions fed user text cannot hang ---------------------------------------------------------

EVIL = [
    "a" * 50_000 + "!",
    " " * 50_000 + "!",
    "\t" * 20_000 + "x" * 20_000,
    "(" * 20_000,
    "((a)*)*" * 3_000,
    "=" * 50_000,
    '"' * 50_000,
    "a=" * 25_000,
    "\\" * 50_000,
    '[a b="' + "\\" * 30_000,
    "<1>1 " + "- " * 20_000,
    "2026-01-01T00:00:00" + "0" * 50_000,
    "1" * 50_000 + "m",
    "x" * 30_000 + ":" + "y" * 30_000,
    "bearer " + "a" * 50_000 + "!",
    "sk-" + "a" * 50_000,
    "password=" + "a" * 50_000,
    "https://" + "a" * 30_000 + "@",
    "/" * 50_000,
    "0." * 25_000,
    "a-" * 25_000,
    "*" * 50_000 + "!",
    "10.0.0." * 8_000,
    "\u200b" * 50_000,
]


def finishes(function: Any, text: str, limit_s: float = 5.0, name: str = "") -> None:
    """`function(text)` returns or raises an OpsAgentError within `limit_s`: no catastrophic backtracking."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(function, text)
    try:
        future.result(timeout=limit_s)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"{name or getattr(function, '__name__', function)} took over {limit_s:g} s on {text[:60]!r}... "
                    f"({len(text)} characters)")
    except OpsAgentError:
        pass
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _regex_targets(fuzz: FuzzEnv) -> dict[str, Any]:
    signatures = load_signatures(None)
    planner = RulePlanner(fuzz.services.registry)
    facts = {"services": ["api"], "projects": ["demo-app"], "default_project": "demo-app"}
    redactor = fuzz.services.redactor

    def plan(text: str) -> None:
        planner.plan(text[:4000], facts)  # execute_task's limit: the planner never sees more

    return {
        "parse_line": lambda text: parse_line(text),
        "parse_query": parse_query,
        "parse_condition": parse_condition,
        "parse_metric_query": parse_metric_query,
        "parse_time_range": lambda text: parse_time_range(text[:80], now=NOW),
        "alert duration": lambda text: _duration("duration", text),
        "mine_templates": lambda text: mine_templates([text, text[::-1]]),
        "match_signatures": lambda text: match_signatures([text], signatures),
        "redactor": redactor.text,
        "silence matcher": lambda text: fnmatch.fnmatchcase("hot_" + "a" * 5000 + "!", text[:2000]),
        "mentioned": lambda text: mentioned(text, ["api", "demo-app", "a.b-c"]),
        "rule planner": plan,
    }


@pytest.mark.parametrize("evil", EVIL, ids=lambda e: f"{e[:12]!r}x{len(e)}")
def test_regexes_on_user_text_finish(fuzz, evil):
    for name, function in _regex_targets(fuzz).items():
        started = time.monotonic()
        finishes(function, evil, name=name)
        assert time.monotonic() - started < 5.0, name


def test_tasks_with_evil_text_finish(fuzz):
    """The offline planner's intent regexes run over the task text; the whole task must plan quickly."""
    for evil in (e[:4000] for e in EVIL):
        started = time.monotonic()
        fuzz.call("execute_task", {"task": evil})
        assert time.monotonic() - started < 10.0, evil[:40]


def test_a_secret_in_arguments_is_scrubbed_from_str_of_the_error(fuzz):
    """Found by this fuzz: the gate scrubbed `public_message` but `str(exc)` still quoted the caller's
    arguments, configured secrets included (get_custom_metrics, analyze_error_patterns ...)."""
    # Not the bare token as a metric name: fuzzing add_custom_metric may have defined that very name (it is
    # one of ODD_STRINGS), and then get_custom_metrics answers instead of raising (FUZZ_EXAMPLES=200 found it).
    for name, arguments in (("get_custom_metrics", {"name": f"{VERCEL_TOKEN}_never_defined"}),
                            ("analyze_error_patterns", {"time_range": VERCEL_TOKEN}),
                            ("search_logs", {"query": f"service:{MAILTRAP_TOKEN}", "time_range": VERCEL_TOKEN})):
        with pytest.raises(OpsAgentError) as caught:
            fuzz.run(fuzz.services.registry.invoke(fuzz.caller, name, arguments))
        for text in (str(caught.value), repr(caught.value), caught.value.public_message):
            assert VERCEL_TOKEN not in text and MAILTRAP_TOKEN not in text, text


def test_a_far_past_since_is_refused_not_a_crash(fuzz):
    """Found by this fuzz: list_deployment_history(since="0001-01-01T00:00:00") raised ValueError ("year 0 is
    out of range") inside the handler: an internal error instead of a field error."""
    with pytest.raises(InvalidArguments, match="since: .*out of range"):
        fuzz.run(fuzz.services.registry.invoke(fuzz.caller, "list_deployment_history", {"since": "0001-01-01T00:00"}))


def test_lone_surrogates_in_arguments_are_replaced_not_a_crash(fuzz):
    """Found by this fuzz: a lone surrogate (a JSON "\\ud800" escape) in a webhook payload or a message made
    the outbox write fail with UnicodeEncodeError (an internal error); in a metric label it was accepted, then
    failed every later flush of the series store. Arguments now carry U+FFFD instead, as log lines do."""
    fuzz.call("send_webhook", {"url": "https://hooks.example.com/ops", "payload": {"\ud800": "\udfff"}})
    fuzz.call("send_notification", {"channels": ["slack"], "message": "a\ud800b", "subject": "\udc80"})
    fuzz.call("record_metric", {"name": "fuzz_surrogate", "value": 1, "labels": {"service": "x\ud800"}})
    fuzz.run(fuzz.services.monitoring.series.flush())
    found = fuzz.run(fuzz.services.registry.invoke(fuzz.caller, "query_metrics", {"query": "last(fuzz_surrogate[5m])"}))
    assert "fuzz_surrogate" in repr(found) or found is not None


def test_long_tokens_do_not_stall_pattern_mining(fuzz):
    """Found by this fuzz: one ingested line of 20,000 characters like "0.0.0.…" kept analyze_error_patterns
    busy for 6 s (the host-name masks are quadratic in a token's length); 100,000 would take minutes."""
    fuzz.call("ingest_logs", {"lines": ["ERROR " + "0." * 50_000, "ERROR " + "10.0.0." * 10_000], "service": "dos"})
    started = time.monotonic()
    fuzz.call("analyze_error_patterns", {"time_range": "1h", "service": "dos"})
    assert time.monotonic() - started < 5.0


def test_silence_matchers_with_many_wildcards_finish(fuzz):
    """Silence matchers are fnmatch patterns applied to rule names: a pattern of many `*` must stay linear."""
    for pattern in ("*" * 1000 + "!", "*a" * 500 + "!", "[" * 1000, "?" * 1000 + "!"):
        finishes(lambda p: fnmatch.fnmatchcase("a" * 100 + "x" * 100, p), pattern)
