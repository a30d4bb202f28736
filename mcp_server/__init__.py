"""The MCP face of ops-agent: every registry tool over stdio and streamable HTTP."""

from mcp_server.server import build_http_app, build_server
from mcp_server.serve import serve_http, serve_stdio

__all__ = ["build_http_app", "build_server", "serve_http", "serve_stdio"]
