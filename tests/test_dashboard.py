"""The live dashboard: its routes in-process (httpx2's ASGITransport, and a raw ASGI driver for the endless
event stream), then the real server in a real browser (Debian's chromium driven by Playwright).

The browser test saves a screenshot under its tmp_path and, when OPS_AGENT_ARTIFACTS names a folder,
copies it there as dashboard.png. Without /usr/bin/chromium it is skipped, unless CI is set: then it fails.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
import yaml
from mcp.server.mcpserver import MCPServer

from mcp_server import build_http_app
from mcp_server.dashboard import COOKIE_NAME, add_dashboard_routes
from ops_agent.config import CONFIG_FILE_VARIABLE, ENVIRONMENT, load_settings
from ops_agent.services import Services, open_services
from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.alerts import SqliteAlertStore
from ops_agent.tools.alerts.models import Alert
from ops_agent.tools.deployment import SqliteDeploymentHistory
from ops_agent.tools.incidents.models import Diagnosis, RemediationReport
from tests.processes import STOP_TIMEOUT_S, free_port, missing, stop, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
BASE = "http://127.0.0.1:8000"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT_S = 20.0
BROWSER_TIMEOUT_MS = 20_000
TOKEN = "tok-dashboard-0123456789abcdef"
OTHER_TOKEN = "tok-viewer-fedcba9876543210"
SECTIONS = {"version", "generated_at", "interval_s", "agent", "system", "services", "deployments", "governance",
            "alerts", "timeline", "errors"}
SECRET = "sk-ant-api03-" + "Q7" * 16  # the redactor knows this shape


# -- in-process helpers -----------------------------------------------------------------------------------


def _config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    data = {"log_level": "WARNING", "storage": {"path": str(tmp_path / "ops-agent.db")}, **data}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@asynccontextmanager
async def _services(tmp_path: Path, **config: Any) -> AsyncIterator[Services]:
    async with open_services(load_settings(_config(tmp_path, config), environ={})) as services:
        yield services


def _app(services: Services, interval_s: float = 0.05, **options: Any) -> Any:
    """The HTTP app with only the dashboard's routes, on a short event interval."""
    server = MCPServer("dashboard-test")
    add_dashboard_routes(server, services, interval_s=interval_s, **options)
    return build_http_app(services, server)


@asynccontextmanager
async def _client(app: Any) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=BASE) as client:
        yield client


@dataclass
class Streamed:
    status: int
    headers: dict[str, str]
    events: list[dict[str, str]]
    finished_after_disconnect: bool


async def _stream_events(
    app: Any, path: str = "/dashboard/events", *, want: int = 2, headers: dict[str, str] | None = None,
    host: str = "127.0.0.1:8000", max_chunks: int = 200, timeout_s: float = 10.0,
) -> Streamed:
    """GET `path` as raw ASGI, read until `want` events (at most `max_chunks` body chunks, `timeout_s`), then
    disconnect and report whether the app finished within 2 s. httpx2's ASGITransport would wait for the
    whole body, which an event stream never completes."""
    raw_headers = [(b"host", host.encode())] + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": raw_headers,
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
    }
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    disconnect = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await messages.put(message)

    task = asyncio.create_task(app(scope, receive, send))
    status, response_headers, buffer, events = 0, {}, "", []
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(max_chunks):
                message = await messages.get()
                if message["type"] == "http.response.start":
                    status = message["status"]
                    response_headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
                    continue
                buffer += message.get("body", b"").decode()
                *blocks, buffer = re.split(r"\r?\n\r?\n", buffer)
                events += [_sse_fields(block) for block in blocks if block.strip()]
                if len(events) >= want or not message.get("more_body", False):
                    break
    finally:
        disconnect.set()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:
            task.cancel()
    return Streamed(status, response_headers, events, bool(done))


def _sse_fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in re.split(r"\r?\n", block):
        name, _, value = line.partition(":")
        if name:
            fields[name] = fields.get(name, "") + value.removeprefix(" ")
    return fields


def _cookie(response: httpx2.Response) -> SimpleCookie:
    cookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    return cookie


async def _eventually(probe: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := probe()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return value


@pytest.fixture
async def tcp_listener() -> AsyncIterator[int]:
    """A loopback port that accepts TCP connections (a service that is up)."""
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()




# -- routes in-process ------------------------------------------------------------------------------------


async def test_page_and_assets_are_served_locally_with_their_types(services):
    async with _client(build_http_app(services)) as client:  # the server's own wiring
        page = await client.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-store"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert 'id="live"' in page.text and 'id="chart-cpu"' in page.text
        assets = re.findall(r'(?:href|src)="(dashboard/static/[^"]+)"', page.text)
        assert {urlsplit(a).path.rsplit("/", 1)[1] for a in assets} == {"dashboard.js", "dashboard.css", "favicon.svg"}
        assert not re.search(r"https?://", page.text), "the page must load nothing from another host"

        types = {}
        for asset in assets:
            response = await client.get("/" + asset)
            assert response.status_code == 200, asset
            assert response.headers["cache-control"].startswith("private, max-age=")
            assert response.headers["x-content-type-options"] == "nosniff"
            types[urlsplit(asset).path.rsplit(".", 1)[1]] = response.headers["content-type"]
            if not urlsplit(asset).path.endswith(".svg"):  # an SVG names its XML namespace by URL
                assert not re.search(r"https?://", response.text), f"{asset} refers to another host"
            again = await client.get("/" + asset, headers={"if-none-match": response.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        assert types == {
            "js": "text/javascript; charset=utf-8",
            "css": "text/css; charset=utf-8",
            "svg": "image/svg+xml",
        }


async def test_static_serves_only_its_own_files(services):
    app = _app(services)
    async with _client(app) as client:
        for path in [
            "/dashboard/static/nope.js",
            "/dashboard/static/dashboard.html",  # the page template: not an asset
            "/dashboard/static/",
            "/dashboard/static/%2e%2e",
            "/dashboard/static/..%2fserver.py",
            "/dashboard/static/..%2F..%2Fpyproject.toml",
            "/dashboard/static/%2e%2e%2fdashboard.py",
        ]:
            response = await client.get(path)
            assert response.status_code == 404, path
            assert "def " not in response.text and "[project]" not in response.text
    # httpx2 resolves literal dot segments before sending; a server hands them over decoded, as these are.
    for path in ["/dashboard/static/../dashboard.py", "/dashboard/static/../../pyproject.toml", "/dashboard/static/.."]:
        streamed = await _stream_events(app, path, want=1)
        assert streamed.status == 404, path


async def test_snapshot_has_every_section(tmp_path, tcp_listener):
    closed_port = free_port()
    config = {
        "monitoring": {"sample_interval_s": 0.5},
        "services": [
            {"name": "db", "tcp": f"127.0.0.1:{tcp_listener}", "interval_s": 1},
            {"name": "queue", "tcp": f"127.0.0.1:{closed_port}", "interval_s": 1, "timeout_s": 1},
        ],
    }
    async with _services(tmp_path, **config) as services:
        history = services.deployment.history
        entry, _ = await history.start(
            action="deploy", requested_by="ops_agent", project="web", environment="preview", idempotency_key="k-1"
        )
        await history.update(entry.id, outcome="ready")
        assert await _eventually(lambda: all(services.monitoring.health.last(n) for n in ("db", "queue")))
        async with _client(_app(services)) as client:
            response = await client.get("/dashboard/snapshot")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    snapshot = response.json()
    assert set(snapshot) == SECTIONS
    assert snapshot["errors"] == {}
    assert snapshot["agent"] == "ops_agent"

    system = snapshot["system"]
    assert 0 <= system["cpu_percent"] <= 100
    assert isinstance(system["cpu_per_core"], list)
    assert 0 < system["memory_percent"] <= 100
    assert len(system["load_average"]) == 3
    assert system["disks"] and {"mount", "percent"} <= set(system["disks"][0])
    for rate in ("net_sent_bytes_per_s", "net_recv_bytes_per_s", "disk_read_bytes_per_s", "disk_write_bytes_per_s"):
        assert rate in system
    assert "top_cpu" not in system  # process lists stay out of the page

    services_by_name = {s["name"]: s for s in snapshot["services"]}
    assert services_by_name["db"]["status"] == "up"
    assert services_by_name["db"]["latency_ms"] is not None
    assert services_by_name["db"]["uptime_percent"] == 100
    assert services_by_name["db"]["consecutive_failures"] == 0
    assert services_by_name["queue"]["status"] == "down"
    assert services_by_name["queue"]["consecutive_failures"] >= 1
    assert services_by_name["queue"]["error"]

    [deployment] = snapshot["deployments"]
    assert {k: deployment[k] for k in ("action", "project", "environment", "outcome")} == {
        "action": "deploy", "project": "web", "environment": "preview", "outcome": "ready"
    }
    assert deployment["requested_at"].endswith("Z")

    governance = snapshot["governance"]
    assert governance["mode"] == "normal"
    assert isinstance(governance["reputation_score"], int)
    assert governance["permission_level"] == "sandbox_only"
    assert governance["probation"] == {"successes": 0, "required": 5}
    assert governance["budget"]["daily_tokens"] == {"used": 0, "limit": 2_000_000}
    assert list(governance["levels"]) == ["sandbox_only", "staging_access", "prod_low_risk", "prod_full_access"]

    assert snapshot["alerts"] == [] and snapshot["timeline"] == []


async def test_alerts_and_the_timeline_come_redacted(tmp_path):
    """A rule that fires shows as an active alert and a timeline entry; remediation and diagnosis follow;
    a secret in a summary, an outcome or a diagnosis never reaches the page."""
    async with open_services(load_settings(_config(tmp_path, {}), environ={}), background=False) as services:
        await services.monitoring.series.record("demo_errors", 42.0, {}, time.time())
        await services.alerts.create_alert_rule("demo_errors", "demo_errors > 5", severity="critical")
        await services.alerts.evaluator.cycle(time.time())
        [alert] = await services.alerts.get_active_alerts()
        assert alert.state == "firing"

        alert.summary, alert.remediation = f"{alert.summary}; key {SECRET}", f"failed: {SECRET}"
        await services.alerts.store.save_alert(alert)
        await services.alerts.store.record(
            alert.id, alert.rule_name, time.time(), "remediation_done", {"ok": False, "outcome": f"refused {SECRET}"}
        )
        assert services.incidents is not None
        diagnosis = Diagnosis(
            service="api", onset="2026-01-01T00:00:00Z", cause="crashing", summary=f"api keeps crashing ({SECRET})",
            evidence=["3 restarts in 5 min"], fixable=False,
        )
        services.incidents.reports.append((time.time() + 1, RemediationReport(
            diagnosis=diagnosis, outcome="no automatic fix", verified=False, verification="nothing was done",
            escalated=True,
        )))
        async with _client(_app(services)) as client:
            response = await client.get("/dashboard/snapshot")
    assert SECRET not in response.text
    snapshot = response.json()
    assert snapshot["errors"] == {}

    [shown] = snapshot["alerts"]
    assert {k: shown[k] for k in ("id", "rule", "severity", "state", "acknowledged_by")} == {
        "id": alert.id, "rule": "demo_errors", "severity": "critical", "state": "firing", "acknowledged_by": None
    }
    assert shown["summary"].startswith("demo_errors") and "[REDACTED]" in shown["summary"]
    assert shown["remediation"].startswith("failed: ")
    assert shown["started_at"].endswith("Z") and shown["fired_at"].endswith("Z")

    timeline = snapshot["timeline"]
    assert [(e["kind"], e["text"].split(":")[0]) for e in timeline] == [
        ("diagnosis", "api"), ("remediation", "remediation of demo_errors failed"), ("alert", "demo_errors firing"),
    ]  # newest first; the pending event is left out
    assert timeline[0]["text"].startswith("api: crashing: api keeps crashing") and timeline[0]["text"].endswith(" — escalated")
    assert all(e["at"].endswith("Z") and len(e["text"]) <= 300 for e in timeline)


async def test_snapshots_read_probes_and_never_probe(tmp_path):
    """Without the background monitor nothing has probed the service, and the dashboard does not either."""
    config = _config(tmp_path, {"services": [{"name": "late", "tcp": "127.0.0.1:9", "interval_s": 3600}]})
    async with open_services(load_settings(config, environ={}), enable_monitoring=False) as services:
        async with _client(_app(services)) as client:
            snapshot = (await client.get("/dashboard/snapshot")).json()
            streamed = await _stream_events(_app(services), want=2)
        assert services.monitoring.health.last("late") is None
    assert snapshot["services"] == [{"name": "late", "status": "pending", "target": None, "interval_s": 3600.0}]
    assert len(streamed.events) == 2


async def test_events_stream_snapshots_and_stop_when_the_client_leaves(services):
    streamed = await _stream_events(_app(services, interval_s=0.05), want=3)
    assert streamed.status == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["cache-control"] == "no-store"
    snapshots = [e for e in streamed.events if e.get("event") == "snapshot"]
    assert len(snapshots) >= 2
    assert [e["id"] for e in snapshots[:3]] == ["1", "2", "3"][: len(snapshots[:3])]
    for event in snapshots:
        assert set(json.loads(event["data"])) == SECTIONS
    assert streamed.finished_after_disconnect, "the stream kept running after the client left"


async def test_streams_are_limited_and_a_closed_one_frees_its_place(services):
    app = _app(services, interval_s=0.1, max_streams=1)
    holding = asyncio.create_task(_stream_events(app, want=6))
    await asyncio.sleep(0.2)
    refused = await _stream_events(app, want=1)
    assert refused.status == 503 and refused.headers["retry-after"] == "5"
    assert (await holding).finished_after_disconnect
    assert (await _stream_events(app, want=1)).status == 200


async def test_open_dashboard_refuses_foreign_hosts(services):
    """No tokens: a page on another site reaching us through DNS rebinding names its own host."""
    app = _app(services)
    async with _client(app) as client:
        for path in ("/dashboard", "/dashboard/snapshot", "/dashboard/static/dashboard.js"):
            assert (await client.get(path, headers={"host": "evil.example:8000"})).status_code == 421
            assert (await client.get(path, headers={"host": "localhost:8000"})).status_code == 200
            assert (await client.get(path, headers={"host": "[::1]:8000"})).status_code == 200
    assert (await _stream_events(app, host="evil.example", want=1)).status == 421


async def test_tokens_guard_every_dashboard_route(tmp_path):
    config = {"mcp": {"tokens": {"ops_agent": TOKEN, "viewer": OTHER_TOKEN}}}
    async with _services(tmp_path, **config) as services:
        app = build_http_app(services)
        async with _client(app) as client:
            for path in ("/dashboard", "/dashboard/snapshot", "/dashboard/static/dashboard.js"):
                refused = await client.get(path)
                assert refused.status_code == 401, path
                assert refused.headers["www-authenticate"] == "Bearer"
            assert (await _stream_events(app, want=1)).status == 401

            for wrong in ("/dashboard?token=wrong-token-000", "/dashboard?token="):
                response = await client.get(wrong)
                assert response.status_code == 401 and "set-cookie" not in response.headers
            bad_bearer = {"authorization": "Bearer wrong-token-000"}
            assert (await client.get("/dashboard/snapshot", headers=bad_bearer)).status_code == 401
            assert (await client.get("/dashboard", headers=bad_bearer)).status_code == 401

            # ?token= sets the session cookie and sends the browser back to a URL without the token.
            login = await client.get(f"/dashboard?token={TOKEN}", follow_redirects=False)
            assert login.status_code == 303 and login.headers["location"] == "dashboard"
            cookie = _cookie(login)[COOKIE_NAME]
            assert cookie["httponly"] is True and cookie["samesite"].lower() == "strict"
            assert TOKEN not in str(login.headers) and TOKEN not in login.text
            session = {"cookie": f"{COOKIE_NAME}={cookie.value}"}
            client.cookies.clear()

            page = await client.get("/dashboard", headers=session)
            assert page.status_code == 200 and 'id="live"' in page.text
            assert (await client.get("/dashboard/static/dashboard.css", headers=session)).status_code == 200
            snapshot = await client.get("/dashboard/snapshot", headers=session)
            assert snapshot.status_code == 200 and set(snapshot.json()) == SECTIONS
            assert TOKEN not in snapshot.text and OTHER_TOKEN not in snapshot.text
            forged = {"cookie": f"{COOKIE_NAME}={cookie.value[:-2]}00"}
            assert (await client.get("/dashboard/snapshot", headers=forged)).status_code == 401

            # A bearer token works on every route, and on the page it sets the cookie for the page's requests.
            bearer = {"authorization": f"Bearer {OTHER_TOKEN}"}
            assert (await client.get("/dashboard/snapshot", headers=bearer)).status_code == 200
            page = await client.get("/dashboard", headers=bearer)
            assert page.status_code == 200 and COOKIE_NAME in _cookie(page)
            assert _cookie(page)[COOKIE_NAME].value != cookie.value  # one session value per token
            client.cookies.clear()

            # The /metrics rules are untouched, and a foreign Host is no reason to refuse a token holder.
            assert (await client.get("/metrics", headers=session)).status_code == 401
            behind_proxy = {**session, "host": "ops.example.com"}
            assert (await client.get("/dashboard/snapshot", headers=behind_proxy)).status_code == 200
        streamed = await _stream_events(_app(services), want=2, headers=session)
    assert streamed.status == 200 and len(streamed.events) >= 2


async def test_a_failing_section_is_reported_not_fatal(services, monkeypatch):
    async def broken(**_: Any) -> list:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services.deployment.history, "list", broken)
    async with _client(_app(services)) as client:
        snapshot = (await client.get("/dashboard/snapshot")).json()
    assert snapshot["deployments"] == []
    assert snapshot["errors"] == {"deployments": "deployments unavailable (RuntimeError)"}
    assert snapshot["system"] is not None and snapshot["governance"] is not None


# -- the real server --------------------------------------------------------------------------------------


@dataclass
class RealServer:
    process: subprocess.Popen
    port: int
    directory: Path
    stderr: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stderr = self.directory / "stderr.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _server_env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT and k != CONFIG_FILE_VARIABLE}
    env["OPS_AGENT_DB"] = str(db)
    return env




def _seed_history(db: Path) -> None:
    """Two finished deployments and a firing alert, written through the stores' own APIs (the alert has no
    rule, so the server's evaluator leaves it alone)."""

    async def seed() -> None:
        database = SqliteDatabase(db)
        await database.open()
        try:
            history = SqliteDeploymentHistory(database)
            await history.migrate()
            for key, project, environment, branch, outcome in [
                ("seed-1", "docs", "preview", "<i>escaped</i>", "failed"),
                ("seed-2", "web", "production", "main", "ready"),
            ]:
                entry, _ = await history.start(
                    action="deploy", requested_by="ops_agent", project=project, environment=environment,
                    branch=branch, idempotency_key=key,
                )
                await history.update(entry.id, outcome=outcome, duration_s=42.0)
            alerts = SqliteAlertStore(database)
            await alerts.migrate()
            now = time.time()
            alert = Alert(
                id="seeded-1", fingerprint="seeded", rule_id="seeded-rule", rule_name="demo_errors", severity="high",
                state="firing", summary="demo_errors = 42 > 5 <b>bold</b>", started_at=now - 5, fired_at=now - 5,
            )
            await alerts.save_alert(alert)
            await alerts.record(alert.id, alert.rule_name, now - 5, "firing", {"summary": alert.summary})
        finally:
            await database.close()

    asyncio.run(seed())


def _start_server(directory: Path, **extra: Any) -> RealServer:
    """`ops-agent serve --transport http` sampling every 0.5 s, watching its own /healthz, with history."""
    port = free_port()
    db = directory / "ops-agent.db"
    _seed_history(db)
    config = {
        "log_level": "WARNING",
        "monitoring": {"sample_interval_s": 0.5},
        "services": [{"name": "ops-agent", "url": f"http://127.0.0.1:{port}/healthz", "interval_s": 1}],
        **extra,
    }
    config_path = directory / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    with open(directory / "stdout.log", "wb") as out, open(directory / "stderr.log", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops_agent", "serve", "--transport", "http", "--port", str(port),
             "--config", str(config_path)],
            env=_server_env(db), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )
    server = RealServer(process, port, directory)
    wait_until_healthy(process, server.base, server.stderr, STARTUP_TIMEOUT_S)
    return server


@pytest.fixture
def real_server(tmp_path: Path) -> Iterator[RealServer]:
    directory = tmp_path / "server"
    directory.mkdir()
    server = _start_server(directory)
    try:
        yield server
    finally:
        stop(server.process)


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[RealServer]:
    directory = tmp_path / "token-server"
    directory.mkdir()
    server = _start_server(directory, mcp={"tokens": {"ops_agent": TOKEN}})
    try:
        yield server
    finally:
        stop(server.process)


def _chromium() -> Path:
    """Debian's chromium, and Playwright to drive it: skipped when missing, but under CI a failure."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is not installed (scripts/ci-packages installs it)"
    elif importlib.util.find_spec("playwright") is None:
        problem = "playwright is not installed (pip install -e '.[test]')"
    if problem is None:
        return CHROMIUM
    missing(problem)


async def test_events_over_a_real_socket_and_a_prompt_shutdown(real_server):
    """SSE through uvicorn, read in bounded chunks; terminating the server does not wait for open streams."""
    events = []
    async with httpx2.AsyncClient(base_url=real_server.base, timeout=10.0) as client:
        async with client.stream("GET", "/dashboard/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async with asyncio.timeout(15):
                lines = response.aiter_lines()
                for _ in range(400):
                    line = await anext(lines)
                    if line.startswith("data:"):
                        events.append(json.loads(line.removeprefix("data:")))
                    if len(events) >= 2:
                        break
            assert len(events) >= 2 and set(events[0]) == SECTIONS
            assert events[0]["services"][0]["name"] == "ops-agent"

            # Stop the server while this stream is still open.
            started = time.monotonic()
            real_server.process.terminate()
            await asyncio.to_thread(real_server.process.wait, STOP_TIMEOUT_S)
            assert time.monotonic() - started < STOP_TIMEOUT_S
    # uvicorn stops gracefully, then re-raises the signal it caught.
    assert real_server.process.returncode in (0, -signal.SIGTERM)
    assert "without completing response" not in real_server.stderr.read_text()


async def test_dashboard_in_headless_chromium(real_server, tmp_path):
    chromium = _chromium()
    from playwright.async_api import async_playwright

    console_errors: list[str] = []
    requested: list[str] = []
    screenshot = tmp_path / "dashboard.png"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True, timeout=BROWSER_TIMEOUT_MS
        )
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900}, color_scheme="light")
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))
            page.on("request", lambda r: requested.append(r.url))
            page.on("response", lambda r: console_errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

            response = await page.goto(f"{real_server.base}/dashboard", wait_until="load")
            assert response is not None and response.status == 200
            await page.wait_for_function(
                """() => {
                    const live = document.getElementById('live');
                    const cpu = document.getElementById('chart-cpu');
                    return Number(live.dataset.snapshots) >= 3 && Number(cpu.dataset.points) >= 3;
                }""",
                timeout=BROWSER_TIMEOUT_MS,
            )
            assert await page.get_attribute("#live", "data-state") == "live"
            assert int(await page.get_attribute("#chart-mem", "data-points")) >= 2
            assert int(await page.get_attribute("#chart-net", "data-points")) >= 1
            await page.wait_for_function(
                "() => document.querySelector('#services tr .badge')?.textContent === 'up'", timeout=BROWSER_TIMEOUT_MS
            )
            assert "ops-agent" in await page.inner_text("#services")
            deployments = await page.inner_text("#deployments")
            assert "web" in deployments and "production" in deployments and "ready" in deployments
            assert "<i>escaped</i>" in deployments  # data is shown as text ...
            assert await page.locator("#deployments i").count() == 0  # ... never parsed as HTML
            governance = await page.inner_text("#governance")
            assert "sandbox_only" in governance and "Budget" in governance
            alerts = await page.inner_text("#alerts")
            assert "demo_errors" in alerts and "<b>bold</b>" in alerts and "high" in alerts
            assert await page.locator("#alerts b").count() == 0
            assert not await page.is_visible("#alerts-note")
            assert "demo_errors firing: demo_errors = 42 > 5" in await page.inner_text("#timeline")
            assert await page.locator("#timeline li .badge").first.inner_text() == "alert"
            snapshots = int(await page.get_attribute("#live", "data-snapshots"))
            assert snapshots >= 3
            await page.screenshot(path=str(screenshot), full_page=True)
        finally:
            await browser.close()

    if artifacts := os.environ.get("OPS_AGENT_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, Path(artifacts) / "dashboard.png")
    assert screenshot.stat().st_size > 10_000
    assert console_errors == []
    hosts = {urlsplit(url).hostname for url in requested if not url.startswith("data:")}
    assert hosts == {"127.0.0.1"}, f"requests left the machine: {sorted(requested)}"


async def test_a_token_opens_the_dashboard_in_headless_chromium(token_server):
    """?token= once: the browser lands on /dashboard without it, and its HttpOnly cookie carries the stream."""
    chromium = _chromium()
    from playwright.async_api import async_playwright

    console_errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True, timeout=BROWSER_TIMEOUT_MS
        )
        try:
            context = await browser.new_context()
            context.set_default_timeout(BROWSER_TIMEOUT_MS)
            # Refused without the token (its page logs the 401, and a /favicon.ico 404: expected there).
            refused_page = await context.new_page()
            refused = await refused_page.goto(f"{token_server.base}/dashboard")
            assert refused is not None and refused.status == 401
            assert "token" in await refused_page.inner_text("body")
            await refused_page.close()

            page = await context.new_page()
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))
            response = await page.goto(f"{token_server.base}/dashboard?token={TOKEN}")
            assert response is not None and response.status == 200
            assert page.url == f"{token_server.base}/dashboard"  # the token left the address bar
            await page.wait_for_function(
                "() => Number(document.getElementById('live').dataset.snapshots) >= 2", timeout=BROWSER_TIMEOUT_MS
            )
            assert await page.evaluate("() => document.cookie") == ""  # HttpOnly: no script can read it
            [cookie] = await page.context.cookies()
            assert cookie["name"] == COOKIE_NAME and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert TOKEN not in cookie["value"]
        finally:
            await browser.close()
    assert console_errors == []
