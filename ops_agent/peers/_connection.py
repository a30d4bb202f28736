"""One long-lived MCP client session per peer, and the set of peers ops-agent was configured with.

Each connection is owned by a task of its own: anyio cancel scopes (inside `Client`) must be entered and
left by the same task, and a handler that reconnects runs in whichever task called it. Callers only send
requests on the open session; the owner task opens it, re-lists the tools every `relist_interval_s`,
and closes it when a caller saw it die (the next call reopens it, bounded by `connect_timeout_s`).

A peer's tool list is fixed when ops-agent starts (the registry is). A later listing that differs (a tool
added, removed, or with another description or schema) flags the peer: a warning, `status().changed`, and
calls to the tools concerned are refused until ops-agent restarts and reads them afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
from mcp import Client, MCPError, StdioServerParameters, types
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CONNECTION_CLOSED, CallToolResult, Tool

from ops_agent.config import PeerSettings
from ops_agent.errors import ToolFailed, UpstreamError, UpstreamTimeout
from ops_agent.peers._specs import peer_spec
from ops_agent.redact import Redactor
from ops_agent.registry import ToolRegistry

__all__ = ["PeerConnection", "PeerStatus", "Peers", "open_peers"]

log = logging.getLogger("ops_agent.peers")
MAX_LIST_PAGES = 20
CLOSE_TIMEOUT_S = 5.0


@dataclass
class PeerStatus:
    name: str
    role: str
    transport: str  # stdio | http
    connected: bool
    tools: list[str]  # registry names offered at start
    changed: dict[str, str] = field(default_factory=dict)  # peer tool -> what changed since start
    error: str | None = None


class PeerConnection:
    def __init__(self, name: str, settings: PeerSettings, redactor: Redactor) -> None:
        self.name = name
        self.settings = settings
        self.redactor = redactor
        self.service = f"peer {name}"  # how errors name it
        self.baseline: dict[str, Tool] = {}  # the listing at start: what the registry offers
        self.changed: dict[str, str] = {}
        self.error: str | None = None
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._dropping = False
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._client is not None

    # -- connection -------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[Client]:
        settings = self.settings
        async with AsyncExitStack() as stack:
            target: Any
            if settings.command is not None:
                target = StdioServerParameters(
                    command=settings.command[0], args=settings.command[1:],
                    env={**get_default_environment(), **settings.env},  # none of our own secrets
                    cwd=str(settings.cwd) if settings.cwd else None,
                )
            else:
                headers = {"user-agent": "ops-agent/0.1"}
                if settings.token is not None:
                    headers["authorization"] = f"Bearer {settings.token.get_secret_value()}"
                # No read timeout here: each request is bounded by our own timeout, which cancels just that
                # request; an httpx2 ReadTimeout would instead tear down the whole session.
                timeout = httpx2.Timeout(None, connect=settings.connect_timeout_s)
                http = httpx2.AsyncClient(headers=headers, timeout=timeout, follow_redirects=False)
                stack.push_async_callback(http.aclose)
                target = streamable_http_client(settings.url, http_client=http)
            client = Client(
                target, mode=settings.mode, cache=None,  # no cached listings: a re-list must ask the peer
                read_timeout_seconds=settings.timeout_s + settings.connect_timeout_s,
                message_handler=self._on_message,
            )
            yield await stack.enter_async_context(client)

    async def _on_message(self, message: Any) -> None:
        # Legacy sessions hear list_changed; 2026-07-28 ones only by re-listing (see _watch).
        if isinstance(message, types.ToolListChangedNotification):
            self._wake.set()

    async def _own(self, connected: asyncio.Future[list[Tool]]) -> None:
        try:
            async with self._open() as client:
                tools = await self._list(client)
                self._client = client
                connected.set_result(tools)
                await self._watch(client)
        except Exception as exc:  # noqa: BLE001  the owner must not die silently: the next call reconnects
            reason = self._describe(exc)
            if not connected.done():
                self.error = f"cannot connect: {reason}"
                connected.set_exception(UpstreamError(self.service, self.error, retryable=True))
            else:
                self.error = f"connection lost: {reason}"
                if not self._dropping:
                    log.warning("peer %s: %s; reopened on the next call", self.name, self.error)
        finally:
            self._client = None

    async def _watch(self, client: Client) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.relist_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if self._dropping:
                return
            self._compare(await self._list(client))

    async def _list(self, client: Client) -> list[Tool]:
        tools: list[Tool] = []
        cursor = None
        async with asyncio.timeout(self.settings.timeout_s):
            for _ in range(MAX_LIST_PAGES):  # a paginator that never ends cannot hang us
                page = await client.list_tools(cursor=cursor) if cursor else await client.list_tools()
                tools.extend(page.tools)
                if not (cursor := page.next_cursor):
                    break
        return tools

    async def connect(self) -> Client:
        """The open session, opening one if there is none. Raises UpstreamError naming the peer."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:
                return self._client
            await self._stop_owner()
            self._dropping = False
            self._wake = asyncio.Event()
            connected: asyncio.Future[list[Tool]] = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._own(connected), name=f"peer:{self.name}")
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    tools = await asyncio.shield(connected)
            except TimeoutError:
                await self._stop_owner(graceful=False)
                self.error = f"no connection within {self.settings.connect_timeout_s:g} s"
                raise UpstreamTimeout(self.service, self.error) from None
            if self.baseline:
                self._compare(tools)  # a peer restarted with other tools is flagged too
            else:
                self.baseline = {tool.name: tool for tool in tools}
            self.error = None
            assert self._client is not None
            return self._client

    def _drop(self) -> None:
        """A caller saw the session die: the owner closes it; the next call opens a new one."""
        self._client = None
        self._dropping = True
        self._wake.set()

    async def _stop_owner(self, *, graceful: bool = True) -> None:
        """Let the owner close its session (a stdio peer is stopped by the SDK), cancelling it if it dawdles."""
        task = self._task
        if task is not None and not task.done():
            self._dropping = True
            self._wake.set()
            if graceful:
                await asyncio.wait([task], timeout=CLOSE_TIMEOUT_S)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None

    async def aclose(self) -> None:
        await self._stop_owner()
        self._client = None

    # -- tool list changes ---------------------------------------------------------------------------

    def _compare(self, tools: list[Tool]) -> None:
        now = {tool.name: tool for tool in tools}
        found: dict[str, str] = {}
        for name, tool in self.baseline.items():
            if name not in now:
                found[name] = "was removed"
            elif _fingerprint(now[name]) != _fingerprint(tool):
                found[name] = "changed its description, schema or annotations"
        for name in now.keys() - self.baseline.keys():
            found[name] = "was added"
        new = {name: why for name, why in found.items() if name not in self.changed}
        if new:
            self.changed.update(new)
            shown = ", ".join(f"{name[:64]!r} {why}" for name, why in sorted(new.items()))
            log.warning("peer %s: its tool list changed since start (%s); those tools are refused until restart",
                        self.name, self.redactor.text(shown))

    # -- calls -----------------------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call `tool` on the peer within `timeout_s`. Raises ToolFailed for a flagged tool, UpstreamTimeout
        and UpstreamError (each naming the peer) for a slow, failing or unreachable peer."""
        self._refuse_changed(tool)
        client = await self.connect()
        self._refuse_changed(tool)  # a reconnect may have found the change
        timeout_s = self.settings.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await client.call_tool(tool, arguments)
        except TimeoutError:
            raise UpstreamTimeout(self.service, f"{tool} did not answer within {timeout_s:g} s") from None
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._drop()
                raise UpstreamError(self.service, "connection lost; it is reopened on the next call",
                                    retryable=True) from None
            message = self.redactor.text(exc.message)[:300]
            raise UpstreamError(self.service, f"{tool}: MCP error {exc.code}: {message}") from None
        except Exception as exc:  # noqa: BLE001  the transport broke under the call (httpx2, anyio errors)
            self._drop()
            raise UpstreamError(self.service, f"{tool}: {self._describe(exc)}; reconnecting on the next call",
                                retryable=True) from None

    def _refuse_changed(self, tool: str) -> None:
        if tool in self.changed:
            raise ToolFailed(
                f"peer {self.name}: tool {tool!r} {self.changed[tool]} since ops-agent started; it is not trusted "
                "until ops-agent restarts and reads it again"
            )

    def _describe(self, exc: BaseException) -> str:
        """A short reason, without secrets, from whatever the transport raised (often an exception group)."""
        leaves = [exc]
        while any(isinstance(leaf, BaseExceptionGroup) for leaf in leaves):
            leaves = [inner for leaf in leaves
                      for inner in (leaf.exceptions if isinstance(leaf, BaseExceptionGroup) else (leaf,))]
        leaf = next((leaf for leaf in leaves if not isinstance(leaf, asyncio.CancelledError)), leaves[0])
        if isinstance(leaf, httpx2.HTTPStatusError):
            text = f"HTTP {leaf.response.status_code}"
        elif isinstance(leaf, MCPError):
            text = f"MCP error {leaf.code}: {leaf.message[:200]}"
        elif isinstance(leaf, OSError) and leaf.strerror:
            text = f"{type(leaf).__name__}: {leaf.strerror}"
        elif isinstance(leaf, httpx2.HTTPError):
            text = f"{type(leaf).__name__}: {str(leaf)[:200]}"
        else:
            text = type(leaf).__name__
        return self.redactor.text(text)

    def status(self, offered: list[str]) -> PeerStatus:
        transport = "stdio" if self.settings.command is not None else "http"
        return PeerStatus(self.name, self.settings.role, transport, self.connected, offered, dict(self.changed),
                          self.error)


def _fingerprint(tool: Tool) -> str:
    return json.dumps(tool.model_dump(mode="json", exclude={"meta"}, exclude_none=True), sort_keys=True)


class Peers:
    """The configured peers: their connections, the registry names of their tools, their status."""

    def __init__(self) -> None:
        self.connections: dict[str, PeerConnection] = {}
        self.offered: dict[str, dict[str, str]] = {}  # peer -> {peer tool: registry name}

    def by_role(self, role: str) -> list[str]:
        """Names of the peers configured with `role` (dev, faq, other), in config order."""
        return [name for name, conn in self.connections.items() if conn.settings.role == role]

    def tool_name(self, peer_or_role: str, tool: str) -> str | None:
        """The registry name of `tool` on the peer named `peer_or_role` (or the first connected peer of that
        role that offers it), or None when no such tool is offered."""
        names = [peer_or_role] if peer_or_role in self.connections else self.by_role(peer_or_role)
        for name in names:
            if (found := self.offered.get(name, {}).get(tool)) is not None:
                return found
        return None

    def status(self) -> list[PeerStatus]:
        return [conn.status(sorted(self.offered.get(name, {}).values())) for name, conn in self.connections.items()]

    async def aclose(self) -> None:
        for conn in self.connections.values():
            await conn.aclose()


async def open_peers(settings: dict[str, PeerSettings], registry: ToolRegistry, redactor: Redactor) -> Peers:
    """Connect to every peer at once and register the tools of those that answered. A peer that is down is
    logged and offers nothing until ops-agent restarts (the registry is fixed at start). Close with aclose."""
    peers = Peers()
    for name, peer_settings in settings.items():
        registry.gate.policy.rule(peer_settings.action)  # a typo in `action` stops the start (ConfigError)
        peers.connections[name] = PeerConnection(name, peer_settings, redactor)
    results = await asyncio.gather(*(conn.connect() for conn in peers.connections.values()), return_exceptions=True)
    for (name, conn), result in zip(peers.connections.items(), results, strict=True):
        if isinstance(result, BaseException):
            reason = getattr(result, "public_message", None) or type(result).__name__
            log.warning("peer %s unavailable at start (%s); its tools are not offered until restart",
                        name, redactor.text(reason))
            conn.error = conn.error or redactor.text(reason)
            continue
        wanted = conn.settings.tools
        peers.offered[name] = {}
        for tool in conn.baseline.values():
            if wanted is not None and tool.name not in wanted:
                continue
            spec = peer_spec(name, conn.settings, tool, registry.gate.policy, conn.call)
            if spec is None:
                continue
            if registry.get(spec.name) is not None:
                log.warning("peer %s: tool %r maps to %s, which is taken; not offered", name, tool.name[:64], spec.name)
                continue
            try:
                registry.register(spec)
            except ValueError as exc:  # e.g. a name too long for the registry
                log.warning("peer %s: tool %r not offered: %s", name, tool.name[:64], redactor.text(str(exc))[:200])
                continue
            peers.offered[name][tool.name] = spec.name
        log.info("peer %s connected; offers %d tools", name, len(peers.offered[name]))
    return peers

