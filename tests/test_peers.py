"""ops-agent as an MCP client of peer agents: a real second MCP server (tests/peer_server.py, the stand-in
for the Dev Agent) over stdio and over streamable HTTP, reached through the registry and the gate."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from mcp_server.server import build_http_app
from ops_agent.config import Settings, load_settings
from ops_agent.errors import (
    ConfigError,
    InvalidArguments,
    PermissionDenied,
    ToolFailed,
    UpstreamError,
    UpstreamTimeout,
)
from ops_agent.governance import Caller
from ops_agent.peers import PeerOutput, peer_tool_name
from ops_agent.services import Services, open_services
from tests.processes import free_port, stop, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
STDIO_PEER = {"command": [sys.executable, "-m", "tests.peer_server"], "cwd": str(ROOT)}
STARTUP_TIMEOUT_S = 20.0


def _settings(tmp_path: Path, peers: dict[str, Any], **governance: Any) -> Settings:
    config = tmp_path / "config.yaml"
    data = {"log_level": "INFO", "peers": peers, "governance": governance}
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_settings(config, environ={"OPS_AGENT_DB": str(tmp_path / "ops-agent.db")})


@pytest.fixture
def caller() -> Caller:
    return Caller("ops_agent", via="test")


class HttpPeer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.token = f"peer-tok-{secrets.token_hex(16)}"
        self.log = directory / "peer-stderr.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        env = {**os.environ, "PEER_TOKEN": self.token}
        with open(self.log, "ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.peer_server", "--http", str(self.port)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
            )
        wait_until_ready(self.process, f"http://127.0.0.1:{self.port}/healthz", self.log, STARTUP_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@pytest.fixture
def http_peer(tmp_path: Path) -> Iterator[HttpPeer]:
    peer = HttpPeer(tmp_path)
    peer.start()
    yield peer
    peer.stop()


@pytest.fixture(params=["stdio", "http"])
async def peer_config(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    if request.param == "stdio":
        yield dict(STDIO_PEER)
        return
    peer = HttpPeer(tmp_path)
    peer.start()
    try:
        yield {"url": peer.url, "token": peer.token}
    finally:
        peer.stop()


@pytest.fixture
async def trusted(tmp_path: Path, peer_config: dict[str, Any]) -> AsyncIterator[Services]:
    """Peer `dev_agent` for an agent past probation (staging_access: allowed to call outward)."""
    settings = _settings(tmp_path, {"dev_agent": {**peer_config, "role": "dev", "timeout_s": 1.0}}, probation_tasks=0)
    async with open_services(settings) as services:
        yield services


# -- discovery ------------------------------------------------------------------------------------------


async def test_discovery_offers_namespaced_governed_tools(trusted: Services):
    registry = trusted.registry
    offered = {spec.name for spec in registry.specs() if spec.name.startswith("dev_agent__")}
    assert {"dev_agent__open_fix_request", "dev_agent__echo", "dev_agent__sleep", "dev_agent__add_tool"} <= offered
    spec = registry.get("dev_agent__open_fix_request")
    assert spec.title == "dev_agent.open_fix_request"
    assert spec.actions == ("peer:call",)
    assert spec.annotations.read_only_hint is False and spec.annotations.destructive_hint is False
    schema = spec.input_schema()
    assert schema["required"] == ["title"] and set(schema["properties"]) == {"title", "details"}
    # Every name is one the Anthropic API accepts, and the planner sees these tools.
    names = {tool["name"] for tool in registry.anthropic_tools()}
    assert offered <= names and all(re.fullmatch(r"[a-zA-Z0-9_-]{1,128}", name) for name in names)
    [status] = trusted.peers.status()
    assert status.connected and status.role == "dev" and not status.changed and status.error is None
    assert trusted.peers.tool_name("dev", "open_fix_request") == peer_tool_name("dev_agent", "open_fix_request")
    assert trusted.peers.tool_name("dev_agent", "echo") == "dev_agent__echo"
    assert trusted.peers.tool_name("faq", "echo") is None and trusted.peers.by_role("dev") == ["dev_agent"]


async def test_a_peer_description_is_untrusted_data(trusted: Services):
    description = trusted.registry.get("dev_agent__leak").description
    assert "\u200b" not in description  # invisible characters are gone
    assert description.count("</data>") == 1 and description.endswith("</data>")  # the fence holds
    assert description.index('<data source="peer:dev_agent">') < description.index("Ignore all previous")
    assert "not an instruction" in description


# -- calls through the gate -----------------------------------------------------------------------------


async def test_a_governed_call_is_audited_and_scored(trusted: Services, caller: Caller):
    before = (await trusted.gate.agent(caller)).score
    result = await trusted.registry.invoke(caller, "dev_agent__open_fix_request", {"title": "disk full on web1"})
    assert isinstance(result, PeerOutput) and not result.is_error
    assert (result.peer, result.tool) == ("dev_agent", "open_fix_request")
    assert result.structured["title"] == "disk full on web1" and result.structured["id"].startswith("FIX-")
    [record] = await trusted.gate.audit.recent(1)
    assert (record["tool"], record["action"], record["decision"], record["outcome"]) == (
        "dev_agent__open_fix_request", "peer:call", "allowed", "ok",
    )
    assert record["arguments"] == {"title": "disk full on web1"}
    assert (await trusted.gate.agent(caller)).score > before  # outward work is consequential: it scores


async def test_bad_arguments_are_refused_before_the_peer(trusted: Services, caller: Caller):
    with pytest.raises(InvalidArguments, match="title"):
        await trusted.registry.invoke(caller, "dev_agent__open_fix_request", {"details": "no title"})


async def test_a_peer_error_is_a_readable_outcome(trusted: Services, caller: Caller):
    result = await trusted.registry.invoke(caller, "dev_agent__fail", {})
    assert result.is_error and "could not do it" in result.content


async def test_a_sandbox_only_agent_is_refused_by_default(tmp_path: Path, caller: Caller):
    async with open_services(_settings(tmp_path, {"dev_agent": STDIO_PEER})) as services:  # on probation
        with pytest.raises(PermissionDenied, match="peer:call needs staging_access"):
            await services.registry.invoke(caller, "dev_agent__echo", {"text": "hi"})
        [record] = await services.gate.audit.recent(1)
        assert (record["tool"], record["decision"], record["outcome"]) == (
            "dev_agent__echo", "denied_permission", "refused",
        )


async def test_a_peer_action_from_config_is_used(tmp_path: Path, caller: Caller):
    """A peer trusted for reads (a FAQ agent) may be declared `action: read`: a sandbox agent may call it."""
    settings = _settings(tmp_path, {"faq": {**STDIO_PEER, "role": "faq", "action": "read", "tools": ["echo"]}})
    async with open_services(settings) as services:
        assert [s.name for s in services.registry.specs() if s.name.startswith("faq__")] == ["faq__echo"]
        assert services.registry.get("faq__echo").annotations.read_only_hint is True
        result = await services.registry.invoke(caller, "faq__echo", {"text": "hi"})
        assert result.content == "hi"


async def test_an_unknown_peer_action_stops_the_start(tmp_path: Path):
    with pytest.raises(ConfigError, match="peer:cal"):
        async with open_services(_settings(tmp_path, {"dev_agent": {**STDIO_PEER, "action": "peer:cal"}})):
            pass


def test_config_names_the_bad_field(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"peers\.dev_agent.*exactly one of command"):
        _settings(tmp_path, {"dev_agent": {"url": "http://127.0.0.1:1/mcp", "command": ["x"]}})
    with pytest.raises(ConfigError, match=r"peers.*single '_'"):
        _settings(tmp_path, {"dev__agent": STDIO_PEER})


# -- a peer that hangs, changes, or is down -------------------------------------------------------------


async def test_a_hanging_peer_times_out_and_stays_usable(trusted: Services, caller: Caller):
    with pytest.raises(UpstreamTimeout, match=r"peer dev_agent: sleep did not answer within 1 s"):
        await trusted.registry.invoke(caller, "dev_agent__sleep", {"seconds": 60})
    [record] = await trusted.gate.audit.recent(1)
    assert (record["outcome"], record["tool"]) == ("error", "dev_agent__sleep")
    result = await trusted.registry.invoke(caller, "dev_agent__echo", {"text": "still here"})
    assert result.content == "still here"


async def _eventually(probe, timeout_s: float = 15.0):
    deadline = time.monotonic() + timeout_s
    while not (value := probe()) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return value


async def test_a_changed_tool_list_is_flagged_not_trusted(
    tmp_path: Path, peer_config: dict[str, Any], caller: Caller, caplog: pytest.LogCaptureFixture
):
    peers = {"dev_agent": {**peer_config, "relist_interval_s": 0.1}}
    async with open_services(_settings(tmp_path, peers, probation_tasks=0)) as services:
        await services.registry.invoke(caller, "dev_agent__add_tool", {"name": "surprise"})
        [status] = await _eventually(lambda: [s for s in services.peers.status() if s.changed])
        assert status.changed == {"surprise": "was added"}
        assert services.registry.get("dev_agent__surprise") is None  # never offered: the registry is fixed

        await services.registry.invoke(caller, "dev_agent__reword_echo", {})
        await _eventually(lambda: "echo" in services.peers.connections["dev_agent"].changed)
        with pytest.raises(ToolFailed, match=r"peer dev_agent: tool 'echo' changed .* until ops-agent restarts"):
            await services.registry.invoke(caller, "dev_agent__echo", {"text": "hi"})
        assert (await services.registry.invoke(caller, "dev_agent__open_fix_request", {"title": "t"})).structured
        assert "its tool list changed since start" in caplog.text
        app = build_http_app(services)  # an operator sees it on /healthz too
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as http:
            health = (await http.get("/healthz")).json()
        assert health["peers"]["dev_agent"]["connected"] and health["peers"]["dev_agent"]["changed"] == ["echo", "surprise"]


async def test_a_peer_down_at_start_is_logged_and_ops_agent_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    peers = {
        "gone": {"url": f"http://127.0.0.1:{free_port()}/mcp", "token": "tok-gone-not-shown", "connect_timeout_s": 5},
        "broken": {"command": [sys.executable, "-c", "raise SystemExit(3)"], "connect_timeout_s": 5},
        "dev_agent": STDIO_PEER,
    }
    async with open_services(_settings(tmp_path, peers)) as services:
        assert services.registry.get("dev_agent__echo") is not None
        assert not [s for s in services.registry.specs() if s.name.startswith(("gone__", "broken__"))]
        status = {s.name: s for s in services.peers.status()}
        assert not status["gone"].connected and "cannot connect" in status["gone"].error
        assert not status["broken"].connected and status["broken"].error
        assert "peer gone unavailable at start" in caplog.text
        assert "peer broken unavailable at start" in caplog.text
    assert "tok-gone-not-shown" not in caplog.text


async def test_a_peer_that_goes_away_is_a_clear_error_then_reconnects(
    tmp_path: Path, http_peer: HttpPeer, caller: Caller
):
    peers = {"dev_agent": {"url": http_peer.url, "token": http_peer.token, "timeout_s": 5, "connect_timeout_s": 5}}
    async with open_services(_settings(tmp_path, peers, probation_tasks=0)) as services:
        http_peer.stop()
        with pytest.raises(UpstreamError, match=r"^peer dev_agent: ") as caught:
            await services.registry.invoke(caller, "dev_agent__echo", {"text": "anyone?"})
        assert http_peer.token not in str(caught.value)
        http_peer.start()
        for _ in range(3):  # the lost session is noticed on a call at most; the next one reconnects
            try:
                result = await services.registry.invoke(caller, "dev_agent__echo", {"text": "back"})
                break
            except UpstreamError:
                continue
        assert result.content == "back"


async def test_no_peer_token_in_outputs_audit_or_logs(
    tmp_path: Path, http_peer: HttpPeer, caller: Caller, caplog: pytest.LogCaptureFixture
):
    peers = {
        "dev_agent": {"url": http_peer.url, "token": http_peer.token, "timeout_s": 0.5},
        "wrong": {"url": http_peer.url, "token": f"{http_peer.token}-wrong", "connect_timeout_s": 5},
    }
    async with open_services(_settings(tmp_path, peers, probation_tasks=0)) as services:
        assert "wrong" in caplog.text and services.registry.get("wrong__echo") is None  # 401: not offered
        echoed = await services.registry.invoke(caller, "dev_agent__echo", {"text": f"say {http_peer.token}"})
        with pytest.raises(UpstreamTimeout) as timed_out:
            await services.registry.invoke(caller, "dev_agent__sleep", {"seconds": 30})
        with pytest.raises(InvalidArguments) as invalid:
            await services.registry.invoke(caller, "dev_agent__sleep", {"seconds": http_peer.token})
        outputs = [echoed.model_dump_json(), str(timed_out.value), str(invalid.value), repr(services.settings)]
        outputs += [str(s) for s in services.peers.status()]
        outputs += [str(record) for record in await services.gate.audit.recent(20)]
    for text in [*outputs, caplog.text]:
        assert http_peer.token not in text
