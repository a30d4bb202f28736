"""The MCP server, built from the tool registry: one MCP tool per `ToolSpec`, plus `execute_task`.

Each MCP tool publishes the spec's own input and output schemas and annotations, and its body is one
call to `registry.invoke`, so MCP has no path around the governance gate. Errors are mapped here, and
only here: an `OpsAgentError` becomes an `is_error` result with its (redacted) public message; anything
else is logged with its traceback and the client gets a generic message with a reference id.

Identity: over stdio, and over HTTP when no tokens are configured, the caller is the configured local
agent. With `mcp.tokens` set, every HTTP request needs a bearer token, and the token's agent name is the
caller, with its own reputation and budget.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcp_server._hosts import is_loopback, refuse_foreign
from mcp_server.dashboard import add_dashboard_routes
from mcp_server.ingest import add_ingest_routes
from ops_agent import __version__
from ops_agent.errors import ConfigError, OpsAgentError, RateLimited
from ops_agent.governance import Caller
from ops_agent.governance.approvals import Approval, Approver
from ops_agent.registry import ToolSpec
from ops_agent.services import Services
from ops_agent.telemetry import CONTENT_TYPE_LATEST

__all__ = ["build_http_app", "build_server"]

log = logging.getLogger("mcp_server")

MAX_BODY_BYTES = 4 * 1024 * 1024  # one JSON-RPC message to /mcp; larger gets 413 (log batches: /ingest/logs)

INSTRUCTIONS = (
    "ops-agent: deploy, monitor, read logs, alert and notify. Every tool call passes a governance gate "
    "(budget, permission by reputation, audit); a refusal comes back as an error result that says why. "
    "Use execute_task for a plain-language task, or call the tools one by one."
)


class _PassThroughArguments(ArgModelBase):
    """The registry validates arguments against the spec's model, so MCP hands them over untouched."""

    model_config = ConfigDict(extra="allow")

    def model_dump_one_level(self) -> dict[str, Any]:
        return {"arguments": dict(self.model_extra or {})}


class _BearerTokens:
    """TokenVerifier: a configured token -> the agent it belongs to (constant-time comparison)."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = [(token.encode(), agent) for agent, token in tokens.items()]

    async def verify_token(self, token: str) -> AccessToken | None:
        candidate = token.encode()
        found = None
        for known, agent in self._tokens:
            if hmac.compare_digest(candidate, known):
                found = agent
        return AccessToken(token=token, client_id=found, scopes=["ops"]) if found else None


class _OpsMCPServer(MCPServer):
    """MCPServer whose unknown-tool answers come from the registry: audited, and redacted (the SDK's own
    answer would echo the requested name as it is). Its tools are the registry's, fixed at start: adding or
    removing one afterwards raises, so nothing at run time can put a tool beside the gate."""

    def __init__(self, *args: Any, services: Services, via: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._services = services
        self._via = via
        self._names = {spec.name for spec in services.registry.specs()}

    def add_tool(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the MCP tools are the registry's, fixed at start; register a ToolSpec instead")

    def remove_tool(self, name: str) -> None:
        raise RuntimeError("the MCP tools are the registry's, fixed at start")

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        if name not in self._names:
            local = Caller(self._services.settings.governance.agent_name, via=self._via)
            try:
                await self._services.registry.invoke(_caller(local, self._via), name, arguments)
            except OpsAgentError as exc:
                return _error(exc.public_message)
        return await super().call_tool(name, arguments, context)


def build_server(services: Services, *, via: str = "mcp-stdio") -> MCPServer:
    settings = services.settings.mcp
    tokens = {agent: token.get_secret_value() for agent, token in settings.tokens.items()}
    verifier = _BearerTokens(tokens)
    auth_options: dict[str, Any] = {}
    if via == "mcp-http" and tokens:
        url = settings.public_url or f"http://{settings.host}:{settings.port}{settings.path}"
        auth_options = {
            "token_verifier": verifier,
            "auth": AuthSettings(
                issuer_url=url, resource_server_url=url, required_scopes=["ops"], validate_token_resource=False
            ),
        }
    tools = [_mcp_tool(spec, services, via) for spec in services.registry.specs()]
    server = _OpsMCPServer(
        "ops-agent",
        services=services,
        via=via,
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=tools,
        warn_on_duplicate_tools=False,  # the registry already refuses duplicates
        log_level=services.settings.log_level,
        **auth_options,
    )

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> JSONResponse:
        peers = {
            status.name: {"connected": status.connected, "tools": len(status.tools), "changed": sorted(status.changed)}
            for status in (services.peers.status() if services.peers else [])
        }  # a peer down, or whose tool list changed since start, shows here (docs/MCP.md, "Peers")
        return JSONResponse({"status": "ok", "governance": "degraded" if services.gate.degraded else "normal",
                             "peers": peers})

    @server.custom_route("/metrics", methods=["GET"])
    async def metrics(request: Request) -> Response:
        """Prometheus exposition; behind the same bearer tokens as MCP when tokens are configured, and only
        for this machine's Host and Origin (or the configured ones) when not."""
        if not tokens and (refused := refuse_foreign(request, settings.allowed_hosts, settings.allowed_origins)):
            return refused
        if tokens:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or await verifier.verify_token(token) is None:
                return Response("bearer token required\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})
        telemetry = services.telemetry
        await telemetry.refresh(services.gate, services.monitoring, services.settings.governance.agent_name)
        return Response(telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)

    add_dashboard_routes(server, services)
    add_ingest_routes(server, services)
    return server


def build_http_app(services: Services, server: MCPServer | None = None) -> Starlette:
    """The streamable HTTP app. Refuses to bind beyond loopback without bearer tokens. Bodies over
    `MAX_BODY_BYTES` get 413 before any of them is parsed (the SDK's limit, set here)."""
    settings = services.settings.mcp
    if not is_loopback(settings.host) and not settings.tokens:
        raise ConfigError(
            f"mcp.host: binding to {settings.host} exposes the server beyond this machine; "
            "set mcp.tokens (agent name -> bearer token) first"
        )
    server = server or build_server(services, via="mcp-http")
    security = None
    if settings.allowed_hosts or settings.allowed_origins or not is_loopback(settings.host):
        port = settings.port
        security = TransportSecuritySettings(
            allowed_hosts=[f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", *settings.allowed_hosts],
            allowed_origins=[f"http://127.0.0.1:{port}", f"http://localhost:{port}", *settings.allowed_origins],
        )
    return server.streamable_http_app(
        streamable_http_path=settings.path,
        stateless_http=True,
        max_request_body_size=MAX_BODY_BYTES,
        transport_security=security,
        host=settings.host,
    )


def _mcp_tool(spec: ToolSpec, services: Services, via: str) -> Tool:
    local = Caller(services.settings.governance.agent_name, via=via)

    async def call(arguments: dict[str, Any], ctx: Context) -> CallToolResult:
        approver = _elicitation(ctx, services) if via == "mcp-stdio" else None
        try:
            output = await services.registry.invoke_redacted(
                _caller(local, via), spec.name, arguments, progress=ctx.report_progress, approver=approver
            )
        except OpsAgentError as exc:
            return _error(services.redactor.text(exc.public_message), exc)
        except Exception:
            reference = uuid.uuid4().hex[:12]
            log.exception("MCP call to %s failed (reference %s)", spec.name, reference)
            return _error(f"{spec.name} failed with an internal error (reference {reference})")
        data = output.data
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(data))], structured_content=data)

    return Tool(
        fn=call,
        name=spec.name,
        title=spec.title,
        description=spec.description,
        parameters=spec.input_schema(),
        fn_metadata=FuncMetadata(arg_model=_PassThroughArguments, output_schema=spec.output_schema()),
        is_async=True,
        context_kwarg="ctx",
        annotations=spec.annotations,
    )


class _Approve(BaseModel):
    approve: bool = Field(description="Run this held step once now.")


def _elicitation(ctx: Context, services: Services) -> Approver | None:
    """Ask the person at a stdio client about a held step, when the client supports elicitation and the
    session has a back-channel (the 2025-11-25 protocol; a 2026-07-28 session leaves the step pending for
    `ops-agent approvals`). Never over HTTP: there a client is another agent, which must not approve for
    the operator."""
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.elicitation is None:
        return None

    async def approve(approval: Approval) -> bool | None:
        shown = approval.public(services.redactor)
        message = (
            f"ops-agent held a step of task {shown['task_id']}: {shown['tool']} {json.dumps(shown['arguments'])}.\n"
            f"Why: {'; '.join(shown['reasons'])}.\nRun it once now?"
        )
        try:
            answer = await ctx.elicit(message, _Approve)
        except MCPError as exc:
            log.info("held step %s left pending: %s", approval.id, exc)
            return None
        if answer.action == "cancel":
            return None
        return answer.action == "accept" and answer.data.approve

    return approve


def _caller(local: Caller, via: str) -> Caller:
    """The bearer token's agent when the request carried one, else the local agent."""
    if (token := get_access_token()) is None or not token.client_id:
        return local
    agent_type = "ops_agent" if token.client_id == local.agent else "mcp_client"
    return Caller(token.client_id, via=via, agent_type=agent_type)


def _error(message: str, exc: OpsAgentError | None = None) -> CallToolResult:
    # The wait is in the text for a model, and in _meta for a client that backs off without parsing it.
    meta = {"retry_after_s": exc.retry_after_s} if isinstance(exc, RateLimited) else None
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True, _meta=meta)

