"""The log tools end to end, through the gate: ingest (redacted), search, patterns, anomalies, hints."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mcp import Client

from mcp_server import build_server
from ops_agent.errors import QueryError, ToolRetry
from ops_agent.services import Services, open_services
from ops_agent.tools.logs.index.store import LogFilter

SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


def line(ago_s: float, message: str, level: str = "info", service: str = "api", **extra) -> str:
    return json.dumps({"time": time.time() - ago_s, "level": level, "service": service, "msg": message, **extra})


async def ingest(services: Services, lines: list[str], **arguments) -> int:
    result = await services.registry.invoke(services.identity, "ingest_logs", {"lines": lines, **arguments})
    return result.accepted


async def call(services: Services, tool: str, **arguments):
    return await services.registry.invoke(services.identity, tool, arguments)


async def test_secrets_are_redacted_before_they_reach_the_store(services, settings):
    lines = [
        line(5, f"charging card with {SECRET} failed", "error"),
        line(4, "login", password="hunter2-correct-horse"),
        "plain line with Authorization: Bearer abcdefghijklmnop0123456789 and postgres://u:S3cr3tP4ss@db/app",
    ]
    assert await ingest(services, lines) == 3
    found = await call(services, "search_logs", query="", time_range="1h")
    text = json.dumps(found.model_dump())
    for secret in (SECRET, "hunter2-correct-horse", "abcdefghijklmnop0123456789", "S3cr3tP4ss"):
        assert secret not in text
    assert "[REDACTED]" in text and found.total == 3
    await services.logs.store.database.run(lambda conn: conn.execute("PRAGMA wal_checkpoint(FULL)"))
    stored = b"".join(p.read_bytes() for p in Path(settings.storage.path).parent.glob("logs.db*"))
    assert stored and SECRET.encode() not in stored and b"hunter2-correct-horse" not in stored


async def test_search_filters_by_query_severity_service_and_time(services):
    await ingest(services, [
        line(30, "GET /api/users 200", service="web", status=200),
        line(20, "upstream timeout after 30s", "error", service="api"),
        line(10, "connection refused to db 10.0.0.5", "critical", service="api"),
        line(7200, "old timeout from two hours ago", "error", service="api"),
    ])
    assert (await call(services, "search_logs", query="timeout")).total == 1
    assert (await call(services, "search_logs", query="timeout", time_range="3h")).total == 2
    errors = await call(services, "search_logs", severity="error")
    assert [r.message for r in errors.records] == ["connection refused to db 10.0.0.5", "upstream timeout after 30s"]
    assert (await call(services, "search_logs", service="web")).records[0].attributes["status"] == 200
    assert (await call(services, "search_logs", query="status:>=200 OR refused")).total == 2
    assert (await call(services, "search_logs", query='"connection refused" -timeout')).total == 1
    page = await call(services, "search_logs", query="", limit=1)
    assert page.returned == 1 and page.total == 3 and sum(page.histogram.counts) == 3


async def test_bad_search_input_gets_a_clear_error(services):
    with pytest.raises(QueryError, match=r"missing '\)'"):
        await call(services, "search_logs", query="(timeout OR refused")
    with pytest.raises(ToolRetry, match="time_range: 'soon' is neither"):
        await call(services, "search_logs", time_range="soon")
    with pytest.raises(ToolRetry, match="severity: 'loud' is not one of"):
        await call(services, "search_logs", severity="loud")
    with pytest.raises(ToolRetry, match="limit"):
        await call(services, "search_logs", limit=0)


async def test_error_patterns_group_count_and_trend(services):
    lines = []
    for i in range(12):  # in the last hour: a new pattern, a rising one
        lines.append(line(60 + i, f"payment {1000 + i} failed: card declined by issuer", "error", service="billing"))
        lines.append(line(90 + i, f"connect ECONNREFUSED 10.0.0.{i}:5432", "error"))
    for i in range(3):  # the hour before: fewer refusals, and a pattern that has since stopped
        lines.append(line(3700 + i, f"connect ECONNREFUSED 10.0.1.{i}:5432", "error"))
        lines.append(line(3800 + i, f"cache miss storm on shard {i}", "error"))
    await ingest(services, lines)
    report = await call(services, "analyze_error_patterns", time_range="1h")
    by_trend = {p.trend: p for p in report.patterns}
    assert report.lines == 24 and len(report.patterns) == 2
    assert by_trend["new"].count == 12 and by_trend["new"].services == ["billing"]
    assert "<*>" in by_trend["new"].template and by_trend["new"].share == 0.5
    assert by_trend["rising"].previous_count == 3
    assert [s.name for s in report.signatures] == ["connection_refused"]
    assert any("not accepting connections" in r for r in report.recommendations)


async def test_anomalies_find_a_spike_and_a_new_error_right_after_a_deployment(services):
    window = 300
    lines = []
    for w in range(1, 13):  # a steady baseline: ~20 info lines and 1 known error per 5-minute window
        for i in range(20):
            lines.append(line(w * window + 7 + i * 13, f"GET /api/items/{i} 200", service="api", status=200))
        lines.append(line(w * window + 100, "retrying request 7 after 503", "error"))
    for i in range(60):  # now: a new error, many times
        lines.append(line(100 - i, f"TypeError: Cannot read properties of undefined (reading 'id') at req {i}", "error"))
    for i in range(20):
        lines.append(line(150 - i, f"GET /api/items/{i} 200", service="api", status=200))
    await ingest(services, lines)
    entry, _ = await services.deployment.history.start(
        action="deploy", requested_by="test", project="web", environment="production", deployment_id="dpl_bad1",
        requested_at=time.time() - 300,
    )
    await services.deployment.history.update(entry.id, outcome="ready", finished_at=time.time() - 140)

    report = await call(services, "detect_anomalies", window="5m")
    kinds = {a.kind for a in report.anomalies}
    assert {"new_template", "volume_spike"} <= kinds, report.anomalies
    new = next(a for a in report.anomalies if a.kind == "new_template")
    assert "TypeError" in new.key and new.observed == 60
    assert any("after deploy dpl_bad1 of web reached production" in h for h in new.hints)
    assert any("unhandled error" in r for r in report.recommendations)


async def test_steady_logs_have_no_anomalies(services):
    lines = [
        line(w * 300 + i * 14, f"GET /api/items/{i} 200", service="api", status=200)
        for w in range(0, 13) for i in range(20)
    ]
    await ingest(services, lines)
    report = await call(services, "detect_anomalies", window="5m")
    assert report.anomalies == []


async def test_execute_task_reports_patterns_and_recommendations(services):
    await ingest(services, [line(60 + i, f"ETIMEDOUT calling payments after {i}ms", "error") for i in range(5)])
    report = await call(
        services, "execute_task", task="Analyze error logs from the past hour and identify root causes",
        priority="medium",
    )
    assert report.status == "completed", report
    assert [s.tool for s in report.steps] == ["analyze_error_patterns", "detect_anomalies"]
    assert report.steps[0].arguments == {"time_range": "1h"}
    assert report.patterns and report.patterns[0]["count"] == 5
    assert any("timing out" in r for r in report.recommendations)


async def test_log_derived_metrics_reach_the_series(services):
    now = time.time()
    lines = [line(now % 10 + 20 + i * 0.1, "GET /x 500", service="shop", status=500, duration_ms=100 + i) for i in range(10)]
    await ingest(services, lines)
    await services.logs.metrics.flush(time.time())  # what the maintenance loop does every window
    value = await call(services, "query_metrics", query='last(http_error_ratio{service="shop"}[5m])')
    assert value.value == 1.0
    latency = await call(services, "query_metrics", query='last(http_latency_ms{service="shop",quantile="0.95"}[5m])')
    assert 100 <= latency.value <= 109


async def test_the_index_moves_to_postgresql_when_a_database_url_is_configured(tmp_path, postgres_url):
    from tests.conftest import make_settings
    from tests.postgres import create_schema

    settings = make_settings(tmp_path, OPS_AGENT_LOGS_DATABASE_URL=create_schema(postgres_url))
    async with open_services(settings) as pg:
        assert await ingest(pg, [line(10, "payment gateway timeout", "error"), line(5, f"key {SECRET}")]) == 2
        found = await call(pg, "search_logs", query="gateway timeout", severity="error")
        assert found.total == 1 and found.records[0].message == "payment gateway timeout"
        stats = await call(pg, "log_stats")
        assert stats.backend == "postgresql" and stats.records == 2
        everything = json.dumps((await call(pg, "search_logs")).model_dump())
        assert SECRET not in everything
    assert not (tmp_path / "logs.db").exists()  # nothing went to the embedded index


async def test_log_tools_answer_over_mcp_with_structured_results(services):
    await ingest(services, [line(30, "disk full on /var/lib/postgres: No space left on device", "critical", service="db")])
    async with Client(build_server(services)) as client:
        result = await client.call_tool("analyze_error_patterns", {"time_range": "1h"})
        assert not result.is_error
        report = result.structured_content
        assert report["patterns"][0]["services"] == ["db"] and report["signatures"][0]["name"] == "disk_full"
        bad = await client.call_tool("search_logs", {"query": "status:>=high"})
        assert bad.is_error and "needs a number" in bad.content[0].text


async def test_sessions_that_break_the_usual_sequence_are_found(services):
    lines = []
    for n in range(80):  # baseline: every request goes received -> authorised -> stored -> answered
        ago = 4000 - n * 40
        for step, text in enumerate(["received order", "authorised card", "stored order", "answered 201"]):
            lines.append(line(ago - step, f"{text} for request", service="shop", request_id=f"r{n}"))
    for n in range(5):  # now: normal requests, and one that skipped authorisation and failed to store
        for step, text in enumerate(["received order", "authorised card", "stored order", "answered 201"]):
            lines.append(line(200 - n * 20 - step, f"{text} for request", service="shop", request_id=f"now{n}"))
    for step, text in enumerate(["received order", "stored order", "rollback of order", "answered 500"]):
        lines.append(line(50 - step, f"{text} for request", service="shop", request_id="odd"))
    await ingest(services, lines)
    report = await call(services, "detect_anomalies", window="5m", session_field="request_id")
    sessions = [a for a in report.anomalies if a.kind == "session"]
    assert [a.key for a in sessions] == ["request_id=odd"], report.anomalies
    assert "request_id=odd" in sessions[0].explanation and sessions[0].observed == 4
    few = await call(services, "detect_anomalies", window="5m", baseline_windows=3, session_field="request_id")
    assert "too few to judge sessions" in few.note


async def test_followed_files_resume_after_a_restart_without_reading_lines_twice(tmp_path):
    import asyncio

    import yaml

    from ops_agent.config import load_settings

    watched = tmp_path / "app.log"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"path": str(tmp_path / "ops.db")},
        "logs": {"files": [{"path": str(watched), "service": "app"}], "poll_interval_s": 0.02},
    }))
    settings = load_settings(config, environ={})

    async def stored(services: Services, wanted: int) -> int:
        for _ in range(250):
            total = (await call(services, "search_logs", time_range="all", limit=1)).total
            if total >= wanted:
                return total
            await asyncio.sleep(0.02)
        return total

    watched.write_text("".join(f"2026-11-27T10:00:0{i}Z INFO first run line {i}\n" for i in range(3)))
    async with open_services(settings) as first:
        assert await stored(first, 3) == 3
    with watched.open("a") as f:
        f.write("2026-11-27T10:01:00Z INFO written while ops-agent was down\n")
    async with open_services(settings) as second:
        assert await stored(second, 4) == 4
        await asyncio.sleep(0.2)  # a few more polls: nothing is read twice
        assert (await call(second, "search_logs", time_range="all")).total == 4


# Secrets that only show once a line is parsed (escapes, quoting) or that span several lines.
HIDDEN_SECRETS = [
    ('{"level":"info","msg":"POST /login body={\\"user\\":\\"bob\\",\\"password\\":\\"hunter2pw\\"}"}', "hunter2pw"),
    ('{"msg":"connecting to postgres:\\/\\/app:pgsecret77@db\\/app"}', "pgsecret77"),
    ('{"msg":"x","dsn":"mysql:\\/\\/root:toorpass9@db\\/app"}', "toorpass9"),
    ('{"msg":"\\u0070assword=unicodepw1"}', "unicodepw1"),
    ('{"msg":"x","token":"ab\\"cdSECRETPART"}', "cdSECRETPART"),
    ('{"level":"info","kind":"db_connect","db":{"host":"db1","pass":"nomsgpass1"}}', "nomsgpass1"),
    ('msg="login" password="correct horse battery staple"', "battery staple"),
    ('params: {"password"=>"rubyhash77"}', "rubyhash77"),
    ("Authorization: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "9944b09199c62bcf"),
    ('127.0.0.1 - - [27/Nov/2026:10:00:00 +0000] "GET /login?user=bob&pass=querypass3 HTTP/1.1" 200 12', "querypass3"),
    ("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAABlwAAAAdzc2gtcn", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU"),
]


@pytest.mark.parametrize(("raw", "secret"), HIDDEN_SECRETS)
async def test_secrets_revealed_by_parsing_are_redacted_before_storage(services, raw, secret):
    assert await ingest(services, [raw]) == 1
    stored = await services.logs.store.records(LogFilter(end=time.time() + 60), limit=10)
    assert stored and secret not in json.dumps([r.message for r in stored] + [r.attributes for r in stored])


async def test_redaction_keeps_a_json_record_whole(services):
    raw = '{"ts":"2026-11-27T10:00:00Z","level":"error","service":"pay","msg":"payment failed","session_id":12345}'
    await ingest(services, [raw])
    [record] = await services.logs.store.records(LogFilter(end=time.time() + 60), limit=10)
    assert (record.severity, record.service, record.message) == ("error", "pay", "payment failed")
    assert record.attributes["session_id"] == "[REDACTED]"


async def test_implausible_times_and_unstorable_text_are_repaired_not_fatal(services):
    from ops_agent.tools.logs.ingest.vercel_logs import drain_records

    await ingest(services, ['{"time":1e30,"msg":"far future"}', '{"time":"0001-01-01T00:00:00+01:00","msg":"year one"}'])
    records = drain_records(b'[{"message":"bad \\ud800 surrogate","timestamp":1e400}]')
    assert await services.logs.collector.write(records) == 1
    stats = await call(services, "log_stats")
    assert stats.records == 3 and stats.oldest is not None
    found = await call(services, "search_logs", query="surrogate")
    assert found.records[0].message == "bad \ufffd surrogate"
    far = (await call(services, "search_logs", query="far future")).records[0]
    assert "original_time" in far.attributes and far.time.startswith("20")
    with pytest.raises(ToolRetry, match="longer than 10 years"):
        await call(services, "search_logs", time_range="500000w")
    with pytest.raises(ToolRetry, match="before 1970"):
        await call(services, "detect_anomalies", window="520w", baseline_windows=200)
    with pytest.raises(ToolRetry, match="outside 1970..2100"):
        await call(services, "search_logs", time_range="2026-01-01..9999-12-31T23:59:59-14:00")
