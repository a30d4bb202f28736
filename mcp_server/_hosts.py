"""Whether a host name or address is this machine, and whether a request's Host and Origin may reach a route
that answers without a token (DNS rebinding, and cross-site posts from a browser)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

__all__ = ["host_allowed", "is_loopback", "origin_allowed", "refuse_foreign"]


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (brackets allowed); not a port."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, allowed: list[str]) -> bool:
    """A Host header naming this machine, or one of `allowed` (`name:*` allows any port)."""
    if _listed(host, allowed):
        return True
    return is_loopback(host.rsplit(":", 1)[0] if not host.endswith("]") else host)


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """No Origin (not a browser), an http(s) page on this machine, or one of `allowed`. `null` is refused."""
    if not origin:
        return True
    if _listed(origin, allowed):
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")


def refuse_foreign(request: Request, allowed_hosts: list[str], allowed_origins: list[str]) -> Response | None:
    """421 for a foreign Host, 403 for a foreign Origin, else None: the check the MCP endpoint makes, for the
    routes beside it that answer without a token."""
    if not host_allowed(request.headers.get("host", ""), allowed_hosts):
        return PlainTextResponse("invalid Host header\n", status_code=421)
    if not origin_allowed(request.headers.get("origin"), allowed_origins):
        return PlainTextResponse("invalid Origin header\n", status_code=403)
    return None


def _listed(value: str, allowed: list[str]) -> bool:
    return value in allowed or any(
        pattern.endswith(":*") and value.startswith(pattern[:-1]) for pattern in allowed
    )
