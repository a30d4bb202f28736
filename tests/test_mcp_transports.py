"""The real MCP server, driven by the SDK's real client: over stdio (a subprocess) and over streamable HTTP
(a subprocess listening on a loopback socket).

Every server gets its own SQLite file (OPS_AGENT_DB) and YAML config under a temporary directory; the
environment handed to it is stripped of every variable ops-agent reads, so a developer's real keys (an
ANTHROPIC_API_KEY would switch the planner) never change what these tests see.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from ops_agent.config import CONFIG_FILE_VARIABLE, ENVIRONMENT
from tests.conftest import Tokens
from tests.processes import free_port, stop, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
MODES = [
    pytest.param("auto", "2026-07-28", id="auto"),
    pytest.param("legacy", "2025-11-25", id="legacy"),
]
EXPECTED_TOOLS = {"get_system_metrics", "check_service_health", "execute_task"}
MCP_POST_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "ops-agent-tests", "version": "0"},
    },
}
STARTUP_TIMEOUT_S = 20.0


# -- helpers ----------------------------------------------------------------------------------------------




def _server_env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT and k != CONFIG_FILE_VARIABLE}
    env["OPS_AGENT_DB"] = str(db)
    env.update(extra)
    return env


def _write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"log_level": "WARNING", **data}, sort_keys=False), encoding="utf-8")
    return path


def _query(db: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


async def _eventually(probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll `probe` until it returns something truthy (audit records of reads are written in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


def _texts(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]




def _stdio_client(tmp_path: Path, mode: str = "auto", **env: str) -> tuple[Client, Path]:
    config = _write_config(tmp_path / "stdio.yaml", {})
    db = tmp_path / "stdio.db"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "ops_agent", "serve", "--transport", "stdio", "--config", str(config)],
        env=_server_env(db, **env),
        cwd=str(ROOT),
    )
    return Client(params, mode=mode, read_timeout_seconds=30), db


@dataclass
class HttpServer:
    process: subprocess.Popen
    port: int
    db: Path
    config: Path
    stderr: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"


def _start_http_server(directory: Path, config_data: dict[str, Any]) -> HttpServer:
    port = free_port()
    config = _write_config(directory / "config.yaml", config_data)
    db = directory / "ops-agent.db"
    stderr = directory / "stderr.log"
    with open(directory / "stdout.log", "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops_agent", "serve", "--transport", "http", "--port", str(port),
             "--config", str(config)],
            env=_server_env(db),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    server = HttpServer(process, port, db, config, stderr)
    wait_until_healthy(process, server.base, stderr, STARTUP_TIMEOUT_S)
    return server


# -- fixtures ---------------------------------------------------------------------------------------------


@dataclass
class ServiceStub:
    port: int
    hits: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


@pytest.fixture(scope="module")
def service_stub() -> Iterator[ServiceStub]:
    """A real HTTP service on loopback that counts the probes it receives."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (stdlib name)
            hits.append(self.path)
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield ServiceStub(httpd.server_address[1], hits)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """Streamable HTTP on loopback, no tokens: every caller is the configured local agent."""
    server = _start_http_server(tmp_path_factory.mktemp("http-open"), {})
    try:
        yield server
    finally:
        stop(server.process)


@pytest.fixture(scope="module")
def token_server(
    tmp_path_factory: pytest.TempPathFactory, tokens: Tokens, service_stub: ServiceStub
) -> Iterator[HttpServer]:
    """Streamable HTTP with bearer tokens, health checks raised to staging_access, one real service.

    Tests sharing this server must not move anyone's reputation except
    test_http_permission_denied_scores_and_audits_the_token_agent: only reads and invalid arguments here.
    """
    config = {
        "mcp": {"tokens": {"ops_agent": tokens.ops_agent, "dev_agent": tokens.dev_agent}},
        "governance": {"policy": {"health_check": "staging_access"}},
        "services": [{"name": "web", "url": service_stub.url, "timeout_s": 2}],
    }
    server = _start_http_server(tmp_path_factory.mktemp("http-tokens"), config)
    try:
        yield server
    finally:
        stop(server.process)


def _bearer_client(server: HttpServer, token: str, mode: str = "auto") -> tuple[httpx2.AsyncClient, Any]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return http, Client(streamable_http_client(server.url, http_client=http), mode=mode, read_timeout_seconds=30)


# -- shared assertions -------------------------------------------------------------------------------------


def _assert_tool_list(tools: list[Any]) -> None:
    by_name = {tool.name: tool for tool in tools}
    assert EXPECTED_TOOLS <= set(by_name)
    for name in EXPECTED_TOOLS:
        tool = by_name[name]
        assert tool.input_schema and tool.input_schema.get("type") == "object", name
        assert tool.output_schema and tool.output_schema.get("type") == "object", name
        assert tool.annotations is not None, name
    assert by_name["get_system_metrics"].annotations.read_only_hint is True
    assert by_name["check_service_health"].annotations.read_only_hint is True
    assert "service" in by_name["check_service_health"].input_schema["properties"]
    assert by_name["execute_task"].annotations.destructive_hint is True
    assert by_name["execute_task"].annotations.read_only_hint is not True
    assert "task" in by_name["execute_task"].input_schema["properties"]
    assert {"cpu_percent", "memory_percent"} <= set(by_name["get_system_metrics"].output_schema["properties"])


def _assert_metrics(result: Any) -> None:
    assert result.is_error is False, _texts(result)
    data = result.structured_content
    assert isinstance(data, dict)
    assert isinstance(data["cpu_percent"], (int, float)) and 0 <= data["cpu_percent"] <= 100
    assert isinstance(data["memory_percent"], (int, float)) and 0 <= data["memory_percent"] <= 100


# -- 1. stdio ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "version"), MODES)
async def test_stdio_negotiates_version_and_lists_tools_with_schemas_and_annotations(
    tmp_path: Path, mode: str, version: str
) -> None:
    client, _ = _stdio_client(tmp_path, mode)
    async with client:
        assert client.protocol_version == version
        _assert_tool_list((await client.list_tools()).tools)


@pytest.mark.parametrize(("mode", "version"), MODES)
async def test_stdio_get_system_metrics_returns_structured_metrics_as_local_agent(
    tmp_path: Path, mode: str, version: str
) -> None:
    client, db = _stdio_client(tmp_path, mode)
    async with client:
        assert client.protocol_version == version
        _assert_metrics(await client.call_tool("get_system_metrics", {}))
        rows = await _eventually(
            lambda: _query(db, "SELECT agent, via, decision FROM audit_log WHERE tool = 'get_system_metrics'")
        )
    assert rows == [{"agent": "ops_agent", "via": "mcp-stdio", "decision": "allowed"}]


@pytest.mark.parametrize(("mode", "version"), MODES)
async def test_stdio_execute_task_completes_with_a_metrics_step(tmp_path: Path, mode: str, version: str) -> None:
    client, _ = _stdio_client(tmp_path, mode)
    async with client:
        assert client.protocol_version == version
        result = await client.call_tool("execute_task", {"task": "show system metrics"})
    assert result.is_error is False, _texts(result)
    report = result.structured_content
    assert report["status"] == "completed", report
    steps = [step for step in report["steps"] if step["tool"] == "get_system_metrics"]
    assert steps and steps[0]["ok"] is True
    assert "cpu_percent" in steps[0]["output"]


@pytest.mark.parametrize(("mode", "version"), MODES)
async def test_stdio_bad_arguments_are_tool_errors_naming_the_field(tmp_path: Path, mode: str, version: str) -> None:
    client, _ = _stdio_client(tmp_path, mode)
    async with client:
        assert client.protocol_version == version
        wrong_type = await client.call_tool("check_service_health", {"service": 5})
        unknown = await client.call_tool("check_service_health", {"bogus_field": "x"})
        extra_on_empty = await client.call_tool("get_system_metrics", {"verbose": True})
        # The connection survives bad calls.
        _assert_metrics(await client.call_tool("get_system_metrics", {}))
    for result, field in ((wrong_type, "service"), (unknown, "bogus_field"), (extra_on_empty, "verbose")):
        text = _texts(result)
        assert result.is_error is True, text
        assert field in text
        assert "invalid arguments" in text
        assert "Traceback" not in text and 'File "' not in text
    assert "unknown field" in _texts(unknown)
    assert "string" in _texts(wrong_type)


# -- 2. HTTP on loopback, no tokens ----------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "version"), MODES)
async def test_http_without_tokens_serves_both_protocol_modes(open_server: HttpServer, mode: str, version: str) -> None:
    async with Client(open_server.url, mode=mode, read_timeout_seconds=30) as client:
        assert client.protocol_version == version
        _assert_tool_list((await client.list_tools()).tools)
        _assert_metrics(await client.call_tool("get_system_metrics", {}))
    rows = await _eventually(lambda: _query(open_server.db, "SELECT DISTINCT agent, via FROM audit_log"))
    assert rows == [{"agent": "ops_agent", "via": "mcp-http"}]


async def test_http_without_tokens_needs_no_authorization(open_server: HttpServer) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(open_server.url, json=INITIALIZE, headers=MCP_POST_HEADERS)
    assert response.status_code == 200, response.text


# -- 3. HTTP with bearer tokens -----------------------------------------------------------------------------


async def test_http_with_tokens_refuses_missing_and_wrong_tokens(token_server: HttpServer, tokens: Tokens) -> None:
    wrong = f"tok-wrong-{secrets.token_hex(24)}"
    async with httpx2.AsyncClient(timeout=10) as http:
        missing = await http.post(token_server.url, json=INITIALIZE, headers=MCP_POST_HEADERS)
        bad = await http.post(
            token_server.url, json=INITIALIZE, headers={**MCP_POST_HEADERS, "authorization": f"Bearer {wrong}"}
        )
        # A prefix of a real token is not that token.
        truncated = await http.post(
            token_server.url,
            json=INITIALIZE,
            headers={**MCP_POST_HEADERS, "authorization": f"Bearer {tokens.dev_agent[:-1]}"},
        )
        good = await http.post(
            token_server.url,
            json=INITIALIZE,
            headers={**MCP_POST_HEADERS, "authorization": f"Bearer {tokens.dev_agent}"},
        )
    for response in (missing, bad, truncated):
        assert response.status_code == 401, response.text
        challenge = response.headers.get("www-authenticate", "")
        assert challenge.startswith("Bearer"), response.headers
        assert wrong not in challenge and wrong not in response.text
        assert all(token not in response.text for token in tokens.all())
    # The same request with a valid token gets through: the 401s above are about the token alone.
    assert good.status_code == 200, good.text


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_with_tokens_sdk_client_without_token_cannot_connect(token_server: HttpServer, mode: str) -> None:
    with pytest.raises(Exception) as caught:
        async with Client(token_server.url, mode=mode, read_timeout_seconds=10) as client:
            await client.list_tools()
    assert any(isinstance(leaf, MCPError) for leaf in _leaves(caught.value)), repr(caught.value)


@pytest.mark.parametrize(("mode", "version"), MODES)
async def test_http_with_tokens_serves_both_modes_to_a_token_holder(
    token_server: HttpServer, tokens: Tokens, mode: str, version: str
) -> None:
    last_id = _query(token_server.db, "SELECT coalesce(max(id), 0) AS id FROM audit_log")[0]["id"]
    http, client = _bearer_client(token_server, tokens.ops_agent, mode)
    async with http, client:
        assert client.protocol_version == version
        _assert_tool_list((await client.list_tools()).tools)
        _assert_metrics(await client.call_tool("get_system_metrics", {}))
    # The token's agent is the caller: the local agent's name, over HTTP.
    rows = await _eventually(
        lambda: _query(token_server.db, "SELECT agent, via, tool, decision FROM audit_log WHERE id > ?", last_id)
    )
    assert rows == [{"agent": "ops_agent", "via": "mcp-http", "tool": "get_system_metrics", "decision": "allowed"}]


async def test_http_permission_denied_scores_and_audits_the_token_agent(
    token_server: HttpServer, tokens: Tokens, service_stub: ServiceStub
) -> None:
    hits_before = len(service_stub.hits)
    http, client = _bearer_client(token_server, tokens.dev_agent)
    async with http, client:
        result = await client.call_tool("check_service_health", {})
    text = _texts(result)
    assert result.is_error is True, text
    assert "permission denied" in text
    assert "staging_access" in text
    assert "dev_agent" in text
    assert "Traceback" not in text
    # Refused before it ran: the configured service was never probed.
    assert len(service_stub.hits) == hits_before

    scores = {row["name"]: row for row in _query(token_server.db, "SELECT name, agent_type, score FROM agents")}
    assert scores["dev_agent"]["score"] == 92  # 100 - 8 (permission_denied)
    assert scores["dev_agent"]["agent_type"] == "mcp_client"
    assert scores["ops_agent"]["score"] == 100
    events = _query(
        token_server.db,
        "SELECT e.event_type, e.delta FROM reputation_events e JOIN agents a ON a.id = e.agent_id "
        "WHERE a.name = 'dev_agent'",
    )
    assert events == [{"event_type": "permission_denied", "delta": -8}]

    denied = _query(
        token_server.db,
        "SELECT agent, via, tool, decision, outcome FROM audit_log WHERE decision = 'denied_permission'",
    )
    assert denied == [
        {
            "agent": "dev_agent",
            "via": "mcp-http",
            "tool": "check_service_health",
            "decision": "denied_permission",
            "outcome": "refused",
        }
    ]


async def test_http_tool_results_never_contain_tokens(token_server: HttpServer, tokens: Tokens) -> None:
    seen: list[str] = []

    def keep(result: Any) -> Any:
        seen.append(_texts(result))
        seen.append(repr(result.structured_content))
        return result

    for own, other in ((tokens.ops_agent, tokens.dev_agent), (tokens.dev_agent, tokens.ops_agent)):
        http, client = _bearer_client(token_server, own, "legacy")
        async with http, client:
            seen.append((await client.list_tools()).model_dump_json())
            _assert_metrics(keep(await client.call_tool("get_system_metrics", {})))
            # Bad arguments quoting a token: the validation messages quote the input. (A token this long is
            # cut to a prefix by the message itself; that prefix leak is test_stdio_long_secret_... below.)
            for token in (own, other):
                for arguments in ({"service": f"{token}!"}, {"service": [token]}, {token: "x"}):
                    result = keep(await client.call_tool("check_service_health", arguments))
                    assert result.is_error is True
                    assert "invalid arguments" in _texts(result)
                result = keep(await client.call_tool("check_service_health", {token: "x"}))
                assert "[REDACTED]: unknown field" in _texts(result)
                result = keep(await client.call_tool("get_system_metrics", {"note": token}))
                assert result.is_error is True
    assert seen
    for text in seen:
        for token in tokens.all():
            assert token not in text


async def test_http_execute_task_result_does_not_echo_a_token(token_server: HttpServer, tokens: Tokens) -> None:
    http, client = _bearer_client(token_server, tokens.ops_agent)
    async with http, client:
        result = await client.call_tool("execute_task", {"task": f"show system metrics for {tokens.dev_agent}"})
    assert result.is_error is False, _texts(result)
    assert any(step["tool"] == "get_system_metrics" for step in result.structured_content["steps"])
    assert tokens.dev_agent not in _texts(result)
    assert tokens.dev_agent not in repr(result.structured_content)


# -- 4. non-loopback bind without tokens ------------------------------------------------------------------


def test_http_refuses_to_bind_beyond_loopback_without_tokens(tmp_path: Path) -> None:
    port = free_port()
    config = _write_config(tmp_path / "config.yaml", {})
    with open(tmp_path / "stdout.log", "wb") as out, open(tmp_path / "stderr.log", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops_agent", "serve", "--transport", "http", "--host", "0.0.0.0",
             "--port", str(port), "--config", str(config)],
            env=_server_env(tmp_path / "ops-agent.db"),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    accepted = False
    started = time.monotonic()
    try:
        # Watch the port while the process lives: a bind on 0.0.0.0 would answer on 127.0.0.1 too.
        while process.poll() is None and time.monotonic() - started < 15:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.2)
                accepted |= probe.connect_ex(("127.0.0.1", port)) == 0
            time.sleep(0.05)
        assert process.poll() is not None, "the server is still running after 15 s"
    finally:
        stop(process)
    stderr = " ".join((tmp_path / "stderr.log").read_text(encoding="utf-8").split())
    assert process.returncode != 0
    assert "mcp.tokens" in stderr
    assert "0.0.0.0" in stderr
    assert "Traceback" not in stderr
    assert not accepted, "something listened on the port"


# -- 5. configured secrets are masked in error results ----------------------------------------------------


async def test_stdio_bad_arguments_never_echo_a_configured_secret(tmp_path: Path) -> None:
    secret = "vercel-secret-XYZ-123456"
    client, db = _stdio_client(tmp_path, VERCEL_TOKEN=secret)
    cases = [
        ({"service": f"{secret}!"}, "pattern"),  # fails the name pattern; the message quotes the input
        ({"service": f"x {secret}"}, "pattern"),
        ({"service": [secret]}, "valid string"),  # wrong type; quoted too
        ({"service": secret}, "unknown service"),  # passes the pattern; the monitoring tool quotes it
        ({secret: "x"}, "unknown field"),  # the unknown field's name is the secret (keep last: see below)
    ]
    texts = []
    async with client:
        for arguments, problem in cases:
            result = await client.call_tool("check_service_health", arguments)
            text = _texts(result)
            assert result.is_error is True, text
            assert problem in text, text
            assert "[REDACTED]" in text, text
            texts.append(text)
        rows = await _eventually(
            lambda: (found := _query(db, "SELECT arguments, error FROM audit_log ORDER BY id")) and len(found) >= 4
            and found
        )
    assert all(secret not in text for text in texts), texts
    # The audit records of the calls (in call order) mask it too. The last case, a secret as a key, is
    # test_stdio_audit_record_masks_a_secret_used_as_an_argument_name.
    assert rows and len(rows) >= 4, rows
    for row in rows[:4]:
        assert secret not in row["arguments"] and secret not in (row["error"] or ""), row
        assert "[REDACTED]" in row["arguments"], row


async def test_stdio_audit_record_masks_a_secret_used_as_an_argument_name(tmp_path: Path) -> None:
    secret = "vercel-secret-XYZ-123456"
    client, db = _stdio_client(tmp_path, VERCEL_TOKEN=secret)
    async with client:
        result = await client.call_tool("check_service_health", {secret: "x"})
        rows = await _eventually(lambda: _query(db, "SELECT arguments, error FROM audit_log"))
    assert result.is_error is True and secret not in _texts(result)
    assert len(rows) == 1, rows
    assert secret not in rows[0]["arguments"], rows
    assert secret not in (rows[0]["error"] or ""), rows


async def test_stdio_long_secret_is_not_leaked_by_a_truncated_validation_message(tmp_path: Path) -> None:
    secret = f"vercel-secret-{secrets.token_hex(40)}"  # 94 characters, over the 64 the field allows
    client, _ = _stdio_client(tmp_path, VERCEL_TOKEN=secret)
    async with client:
        result = await client.call_tool("check_service_health", {"service": secret})
    text = _texts(result)
    assert result.is_error is True, text
    assert "service" in text
    assert secret[:24] not in text, text
