"""The MCP server's HTTP surface, probed from outside: a real server in a subprocess, raw HTTP and the SDK's
real client (see tests/test_mcp_transports.py for the transports themselves).

1. A foreign Host (DNS rebinding) or Origin (another site's page) cannot reach a route that answers
   without a token: /mcp, /metrics, the dashboard, log ingest.
2. With `mcp.tokens`, every route wants one: no token or a wrong one is 401 with a Bearer challenge.
3. An oversized body is 413, before it is read when its Content-Length says so, and cut off when chunked.
4. Malformed JSON-RPC, unknown tools and wrong argument types are protocol errors or error results, never a
   traceback or a path inside the server.
5. The tool list is fixed at start.
6. Annotations agree with the policy table: tests/test_governance.py::test_annotations_agree_with_the_policy_table
   (the registry) and tests/test_entry_points.py::test_mcp_tool_list_is_the_registry (MCP lists the registry's).
7. No MCP bearer token reaches an outbound request (the Vercel emulator records everything it received).
8. An agent cannot act beyond its level; what a project outside `vercel.projects` gets is pinned below.
9. No request field reaches a subprocess: run_restart_command runs configured argv by name, nothing else.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.types import ToolAnnotations

from mcp_server import build_server
from mcp_server.ingest import MAX_BODY_BYTES as INGEST_MAX_BODY_BYTES
from mcp_server.server import MAX_BODY_BYTES as MCP_MAX_BODY_BYTES
from sandbox.vercel import EmulatorConfig, GitLinkConfig, ProjectConfig, VercelEmulator
from tests.conftest import Tokens
from tests.processes import stop
from tests.test_mcp_transports import (
    INITIALIZE,
    MCP_POST_HEADERS,
    ROOT,
    HttpServer,
    _bearer_client,
    _start_http_server,
    _texts,
)

PROJECT = "demo-app"  # in vercel.projects
UNLISTED_PROJECT = "other-app"  # on the Vercel account, not in vercel.projects
INTERNALS = ("Traceback", 'File "/', '.py"', str(ROOT))
FOREIGN_ORIGIN = "http://evil.example"
FOREIGN_HOST = "evil.example"


# -- helpers ----------------------------------------------------------------------------------------------


def _assert_no_internals(text: str) -> None:
    for marker in INTERNALS:
        assert marker not in text, text


def _raw_exchange(port: int, head: bytes, frames: list[bytes] | None = None) -> bytes:
    """Send `head` (and `frames` from a second thread, so a server that answers early is still heard),
    and return the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)

        def send_frames() -> None:
            try:
                for frame in frames or ():
                    sock.sendall(frame)
            except OSError:
                pass  # the server answered and closed: what is being tested

        sender = threading.Thread(target=send_frames, daemon=True)
        sender.start()
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(timeout=30)
    return answer.split(b"\r\n", 1)[0]


def _rpc_message(response: httpx2.Response) -> dict[str, Any] | None:
    """The JSON-RPC message of an answer, whether plain JSON or one SSE `message` event."""
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        text = next((line[5:] for line in text.splitlines() if line.startswith("data:")), "")
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None


@dataclass
class _Recorder:
    """ASGI wrapper keeping every request the wrapped app received: method, path, query, headers, body."""

    app: Any
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode("latin-1"),
            "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            "body": bytearray(),
        }
        self.requests.append(entry)

        async def recording() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                entry["body"].extend(message.get("body", b""))
            return message

        await self.app(scope, recording, send)

    def texts(self) -> list[str]:
        return [
            f"{r['method']} {r['path']}?{r['query']}\n"
            + "\n".join(f"{k}: {v}" for k, v in r["headers"])
            + "\n\n"
            + bytes(r["body"]).decode("utf-8", errors="replace")
            for r in self.requests
        ]


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """Loopback, no tokens: the routes answer anyone local, so Host and Origin are all that keeps others out."""
    server = _start_http_server(tmp_path_factory.mktemp("surface-open"), {})
    try:
        yield server
    finally:
        stop(server.process)


@dataclass
class Vercel:
    emulator: VercelEmulator
    recorder: _Recorder


@pytest.fixture(scope="module")
def vercel() -> Iterator[Vercel]:
    """The Vercel emulator with two projects, recording every request it receives."""
    config = EmulatorConfig(
        build_time_s=0.1,
        seed=11,
        rate_limit=100_000,
        projects=[
            ProjectConfig(name=PROJECT, link=GitLinkConfig(org="acme", repo=PROJECT)),
            ProjectConfig(name=UNLISTED_PROJECT, link=GitLinkConfig(org="acme", repo=UNLISTED_PROJECT)),
        ],
    )
    emulator = VercelEmulator(config)
    recorder = _Recorder(emulator.app)
    emulator.app = recorder  # served as is by start()
    with emulator:
        yield Vercel(emulator, recorder)


@dataclass
class Surface:
    server: HttpServer
    marker: Path  # the configured restart command creates it


@pytest.fixture(scope="module")
def surface(tmp_path_factory: pytest.TempPathFactory, tokens: Tokens, vercel: Vercel) -> Iterator[Surface]:
    """Bearer tokens for two new agents (both sandbox_only), the Vercel emulator, one restart command.

    restart commands are opened to sandbox_only here so the allow-list, not the permission, is what refuses.
    """
    directory = tmp_path_factory.mktemp("surface-tokens")
    marker = directory / "restart-ran"
    config = {
        "mcp": {"tokens": {"ops_agent": tokens.ops_agent, "dev_agent": tokens.dev_agent}},
        "vercel": {
            "api_url": vercel.emulator.base_url,
            "token": vercel.emulator.token,
            "team_id": vercel.emulator.team_id,
            "projects": [PROJECT],
            "poll_interval_s": 0.02,
        },
        "alerts": {
            "restart_commands": {
                "restart_api": [sys.executable, "-c", f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')"]
            }
        },
        "governance": {"policy": {"remediate:restart": "sandbox_only"}},
    }
    server = _start_http_server(directory, config)
    try:
        yield Surface(server, marker)
    finally:
        stop(server.process)


# -- 1. Host and Origin -----------------------------------------------------------------------------------


async def test_foreign_host_or_origin_cannot_reach_the_open_routes(open_server: HttpServer) -> None:
    base, port = open_server.base, open_server.port
    initialize = json.dumps(INITIALIZE)
    routes = [  # (method, path, body, refuses a foreign Origin)
        ("POST", "/mcp", initialize, True),
        ("GET", "/metrics", None, True),
        ("POST", "/ingest/logs", '["surface-test line"]', True),
        ("POST", "/ingest/vercel", "[]", True),
        ("GET", "/dashboard/snapshot", None, False),  # read-only GET: another site's page cannot read it
    ]
    async with httpx2.AsyncClient(timeout=10) as http:
        for method, path, body, checks_origin in routes:
            url = base + path

            async def send(extra: dict[str, str], method: str = method, url: str = url, body: str | None = body):
                return await http.request(method, url, content=body, headers={**MCP_POST_HEADERS, **extra})

            foreign_host = await send({"host": FOREIGN_HOST})
            assert foreign_host.status_code == 421, (path, foreign_host.text)
            rebound = await send({"host": f"{FOREIGN_HOST}:{port}", "origin": f"http://{FOREIGN_HOST}:{port}"})
            assert rebound.status_code == 421, (path, rebound.text)
            if checks_origin:
                for origin in (FOREIGN_ORIGIN, "null", f"https://127.0.0.1.evil.example:{port}"):
                    refused = await send({"origin": origin})
                    assert refused.status_code == 403, (path, origin, refused.text)
            local = await send({"origin": f"http://localhost:{port}"})
            assert local.status_code == 200, (path, local.text)
            plain = await send({})  # no Origin: not a browser
            assert plain.status_code == 200, (path, plain.text)


# -- 2. tokens on every route ---------------------------------------------------------------------------


async def test_every_route_wants_a_token(surface: Surface, tokens: Tokens) -> None:
    """/mcp alone is also tests/test_mcp_transports.py::test_http_with_tokens_refuses_missing_and_wrong_tokens."""
    base = surface.server.base
    wrong = f"tok-wrong-{secrets.token_hex(24)}"
    routes = [
        ("POST", "/mcp", json.dumps(INITIALIZE)),
        ("GET", "/metrics", None),
        ("GET", "/dashboard", None),
        ("GET", "/dashboard/snapshot", None),
        ("POST", "/ingest/logs", '["surface-test line"]'),
        ("POST", "/ingest/vercel", "[]"),
    ]
    async with httpx2.AsyncClient(timeout=10) as http:
        for method, path, body in routes:
            http.cookies.clear()  # the dashboard page sets a session cookie for a good token
            for authorization in (None, f"Bearer {wrong}", f"Bearer {tokens.dev_agent[:-1]}", tokens.dev_agent):
                headers = dict(MCP_POST_HEADERS)
                if authorization is not None:
                    headers["authorization"] = authorization
                refused = await http.request(method, base + path, content=body, headers=headers)
                assert refused.status_code == 401, (path, authorization, refused.text)
                assert refused.headers.get("www-authenticate", "").startswith("Bearer"), (path, refused.headers)
                for token in (wrong, *tokens.all()):
                    assert token not in refused.text and token not in str(refused.headers)
            good = await http.request(
                method, base + path, content=body,
                headers={**MCP_POST_HEADERS, "authorization": f"Bearer {tokens.dev_agent}"},
            )
            assert good.status_code == 200, (path, good.text)


# -- 3. body size -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "cap"),
    [("/mcp", MCP_MAX_BODY_BYTES), ("/ingest/logs", INGEST_MAX_BODY_BYTES), ("/ingest/vercel", INGEST_MAX_BODY_BYTES)],
)
async def test_an_oversized_body_is_refused_without_being_read(open_server: HttpServer, path: str, cap: int) -> None:
    assert 1024 * 1024 <= MCP_MAX_BODY_BYTES <= 4 * 1024 * 1024
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{open_server.port}\r\nContent-Type: application/json\r\n"
        "Accept: application/json, text/event-stream\r\n"
    )
    # A declared length over the cap: answered with none of the body sent.
    declared = _raw_exchange(open_server.port, f"{head}Content-Length: {1024 ** 3}\r\n\r\n".encode())
    assert declared.split(b" ")[1] == b"413", declared
    # Chunked, no length: cut off once the chunks pass the cap.
    chunk = b"x" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    frames = [frame] * (cap // len(chunk) + 16) + [b"0\r\n\r\n"]
    chunked = _raw_exchange(open_server.port, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode(), frames)
    assert chunked.split(b" ")[1] == b"413", chunked
    async with httpx2.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{open_server.base}/healthz")).status_code == 200


# -- 4. malformed JSON-RPC, unknown tools, wrong types ----------------------------------------------------


def _call(params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).encode()


MALFORMED = [  # (body, expected HTTP status, expected JSON-RPC error codes; None = a tool error result)
    (b"not json", 400, {-32700}),
    (b"\xff\xfe\x00", 400, {-32700}),
    (b"[1, 2]", 400, {-32600, -32602}),
    (b"42", 400, {-32600, -32602}),
    (b'"tools/list"', 400, {-32600, -32602}),
    (b'{"jsonrpc": "2.0", "id": 1}', 400, {-32600, -32602}),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}', 400, {-32600, -32602}),
    (b'{"id": 1, "method": "tools/list"}', 400, {-32600, -32602}),
    (_call("x"), 400, {-32600, -32602}),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "no/such/method"}', 200, {-32601}),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/register", "params": {"name": "x"}}', 200, {-32601}),
    (_call({"name": 5}), 200, {-32602}),
    (_call({"name": "get_system_metrics", "arguments": [1]}), 200, {-32602}),
    (_call({"name": "no_such_tool", "arguments": {}}), 200, None),
    (_call({"name": "check_service_health", "arguments": {"service": 5}}), 200, None),
    (_call({"name": "get_deployment_status", "arguments": {"deployment_id": {"$gt": ""}}}), 200, None),
]


@pytest.mark.parametrize(("body", "status", "codes"), MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
async def test_malformed_requests_get_protocol_errors_without_internals(
    open_server: HttpServer, body: bytes, status: int, codes: set[int] | None
) -> None:
    headers = {**MCP_POST_HEADERS, "mcp-protocol-version": "2025-11-25"}
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(open_server.url, content=body, headers=headers)
        _assert_no_internals(response.text)
        assert response.status_code == status, response.text
        message = _rpc_message(response)
        assert message is not None, response.text
        if codes is not None:
            assert message["error"]["code"] in codes, message
        else:
            result = message["result"]
            assert result["isError"] is True, result
            assert any(word in result["content"][0]["text"] for word in ("unknown tool", "invalid arguments")), result
        # The server is unharmed.
        assert (await http.get(f"{open_server.base}/healthz")).status_code == 200


# -- 5. a fixed tool list ---------------------------------------------------------------------------------


async def test_the_tool_list_is_fixed_at_start(surface: Surface, tokens: Tokens) -> None:
    http, client = _bearer_client(surface.server, tokens.ops_agent)
    async with http, client:
        first = [tool.model_dump() for tool in (await client.list_tools()).tools]
        second = [tool.model_dump() for tool in (await client.list_tools()).tools]
        await client.call_tool("get_system_metrics", {})
        await client.call_tool("add_custom_metric", {"name": "surface_cpu", "query": "avg(system_cpu_percent[5m])"})
        await client.call_tool("no_such_tool", {})
        await client.call_tool("execute_task", {"task": "show system metrics"})
        third = [tool.model_dump() for tool in (await client.list_tools()).tools]
    assert first == second == third
    assert len({tool["name"] for tool in first}) == len(first)
    assert "no_such_tool" not in {tool["name"] for tool in third}


async def test_no_tool_can_be_added_to_a_built_server(services) -> None:
    server = build_server(services)

    def extra() -> str:
        return "x"

    with pytest.raises(RuntimeError, match="fixed at start"):
        server.add_tool(extra, name="extra", annotations=ToolAnnotations(read_only_hint=True))
    with pytest.raises(RuntimeError, match="fixed at start"):
        server.tool()(extra)
    with pytest.raises(RuntimeError, match="fixed at start"):
        server.remove_tool("get_system_metrics")
    assert {tool.name for tool in await server.list_tools()} == {spec.name for spec in services.registry.specs()}


# -- 7. no token forwarded --------------------------------------------------------------------------------


async def test_no_mcp_token_reaches_the_vercel_api(surface: Surface, tokens: Tokens, vercel: Vercel) -> None:
    before = len(vercel.recorder.requests)
    http, client = _bearer_client(surface.server, tokens.dev_agent)
    async with http, client:
        deployed = await client.call_tool("deploy", {"project": PROJECT, "environment": "preview"})
        assert deployed.is_error is False, _texts(deployed)
        deployment_id = deployed.structured_content["id"]
        status = await client.call_tool("get_deployment_status", {"deployment_id": deployment_id})
        assert status.is_error is False, _texts(status)
        listed = await client.call_tool("list_deployments", {"project": PROJECT})
        assert listed.is_error is False, _texts(listed)
    received = vercel.recorder.requests[before:]
    assert any(r["method"] == "POST" and r["path"] == "/v13/deployments" for r in received), received
    assert any(r["path"] == f"/v13/deployments/{deployment_id}" for r in received), received
    for request in received:  # the configured Vercel token, and only that one
        authorization = [v for k, v in request["headers"] if k == "authorization"]
        assert authorization == [f"Bearer {vercel.emulator.token}"], request
    for text in vercel.recorder.texts():
        for token in tokens.all():
            assert token not in text
            assert token[-24:] not in text  # nor a recognisable part of it


# -- 8. scope ---------------------------------------------------------------------------------------------


async def test_a_sandbox_agent_cannot_deploy_production(surface: Surface, tokens: Tokens, vercel: Vercel) -> None:
    created = vercel.emulator.state.snapshot()["counters"].get("createDeploymentRequests", 0)
    http, client = _bearer_client(surface.server, tokens.dev_agent)
    async with http, client:
        for project in (PROJECT, UNLISTED_PROJECT):
            result = await client.call_tool("deploy", {"project": project, "environment": "production"})
            text = _texts(result)
            assert result.is_error is True, text
            assert "permission denied" in text and "deploy:production needs prod_full_access" in text, text
            assert "dev_agent" in text
            _assert_no_internals(text)
    assert vercel.emulator.state.snapshot()["counters"].get("createDeploymentRequests", 0) == created


async def test_a_project_vercel_does_not_know_is_a_clear_error(surface: Surface, tokens: Tokens) -> None:
    http, client = _bearer_client(surface.server, tokens.dev_agent)
    async with http, client:
        result = await client.call_tool("deploy", {"project": "ghost-app", "environment": "preview"})
    text = _texts(result)
    assert result.is_error is True, text
    _assert_no_internals(text)
    assert tokens.dev_agent not in text


async def test_a_project_outside_vercel_projects_is_refused(surface: Surface, tokens: Tokens, vercel: Vercel) -> None:
    http, client = _bearer_client(surface.server, tokens.dev_agent)
    async with http, client:
        result = await client.call_tool("deploy", {"project": UNLISTED_PROJECT, "environment": "preview"})
        env = await client.call_tool("list_env_vars", {"project": UNLISTED_PROJECT})
    assert result.is_error is True, _texts(result)
    assert UNLISTED_PROJECT in _texts(result) and "not one of this agent's projects" in _texts(result)
    assert env.is_error is True and "not one of this agent's projects" in _texts(env)


# -- 9. nothing from a request reaches a subprocess -------------------------------------------------------


async def test_restart_commands_run_only_by_configured_name(surface: Surface, tokens: Tokens) -> None:
    assert not surface.marker.exists()
    hostile = [
        ("restart; rm -rf /", "invalid arguments"),
        ("restart_api && touch /tmp/x", "invalid arguments"),
        ("$(touch /tmp/x)", "invalid arguments"),
        ("restart_api\n", "invalid arguments"),
        ("../x", "invalid arguments"),
        ("../restart_api", "invalid arguments"),
        ("..", "not an allowed command"),
        ("restart_API", "not an allowed command"),
        ("/bin/sh", "invalid arguments"),
    ]
    http, client = _bearer_client(surface.server, tokens.ops_agent)
    async with http, client:
        for name, problem in hostile:
            result = await client.call_tool("run_restart_command", {"name": name})
            text = _texts(result)
            assert result.is_error is True, (name, text)
            assert problem in text, (name, text)
            _assert_no_internals(text)
        for arguments in ({"name": ["restart_api"]}, {"name": "restart_api", "argv": ["sh", "-c", "id"]}):
            result = await client.call_tool("run_restart_command", arguments)
            assert result.is_error is True and "invalid arguments" in _texts(result), _texts(result)
        assert not surface.marker.exists(), "a refused name ran something"
        # The configured name does run: the refusals above are the allow-list at work.
        ran = await client.call_tool("run_restart_command", {"name": "restart_api"})
    assert ran.is_error is False, _texts(ran)
    assert ran.structured_content["exit_code"] == 0
    assert surface.marker.read_text() == "ran"
