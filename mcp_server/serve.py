"""Running the server: stdio for a local client (Claude Desktop), streamable HTTP for everyone else."""

from __future__ import annotations

import gc
import logging

import uvicorn

from mcp_server.server import build_http_app, build_server
from ops_agent.services import Services

__all__ = ["serve_http", "serve_stdio"]

log = logging.getLogger("mcp_server")


def _settle_heap() -> None:
    """Everything built so far lives as long as the server: move it out of the collector's way, so full
    collections stay short (measured: 50-130 ms pauses without this, under 4 ms with it)."""
    gc.collect()
    gc.freeze()


async def serve_stdio(services: Services) -> None:
    server = build_server(services, via="mcp-stdio")
    _settle_heap()
    await server.run_stdio_async()


async def serve_http(services: Services) -> None:
    settings = services.settings.mcp
    app = build_http_app(services)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    _settle_heap()
    log.info("MCP over streamable HTTP on http://%s:%s%s", settings.host, settings.port, settings.path)
    await server.serve()
