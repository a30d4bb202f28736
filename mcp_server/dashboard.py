"""The live dashboard on the HTTP server: one page, its local assets, a snapshot and a stream of snapshots.

Routes (added by `add_dashboard_routes(server, services)`):

- `GET /dashboard`: the page (HTML). Its script and style come from `/dashboard/static/`; nothing is
  loaded from another host (the Content-Security-Policy says so too).
- `GET /dashboard/static/{name}`: the files in `mcp_server/static/` with a known type, and only those.
- `GET /dashboard/events`: Server-Sent Events, a `snapshot` event every `interval_s` until the client leaves.
- `GET /dashboard/snapshot`: the same JSON once, for scripts.

A snapshot is cheap: it reads the monitoring tool's latest system sample and each service's last probe
(it never samples or probes for itself while the background monitor runs), the active alerts and the last
hour of alert history (one query each), the incident reports kept in memory, and re-reads governance and
deployment history from the store at most every `store_refresh_s`. One snapshot is built at a time and
shared by every open stream. `timeline` merges alert events (firing, resolved, escalated, acknowledged,
remediations, recoveries) and incident diagnoses, newest first.

Access: with no `mcp.tokens` (the loopback default) the dashboard is open to requests that name a
loopback host (or one of `mcp.allowed_hosts`), which keeps other web sites out through DNS rebinding.
With tokens, every route needs one: `Authorization: Bearer <token>`, or `/dashboard?token=<token>` once,
which sets an HttpOnly, SameSite=Strict session cookie and redirects to `/dashboard` (so the token leaves
the address bar). The cookie holds an HMAC of the token, never the token; changing the token ends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from mcp_server._hosts import host_allowed
from ops_agent import __version__
from ops_agent.services import Services

__all__ = ["COOKIE_NAME", "add_dashboard_routes"]

log = logging.getLogger("mcp_server.dashboard")

STATIC_DIR = Path(__file__).with_name("static")
PAGE_TEMPLATE = "dashboard.html"
COOKIE_NAME = "ops_agent_dashboard"
DEPLOYMENTS_SHOWN = 10
TIMELINE_SHOWN = 30
TIMELINE_WINDOW_S = 3600.0  # alert history read for the timeline
TIMELINE_EVENTS = 300
TEXT_MAX = 300  # characters of a timeline entry or an alert summary

# Only these types are served from the static folder; anything else there (the page template) is not.
CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
}
STATIC_CACHE = "private, max-age=86400"  # the page asks for ?v=<content hash>, so a new file is a new URL
PAGE_SECURITY = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_SESSION_LABEL = b"ops-agent dashboard session v1"


def add_dashboard_routes(
    server: MCPServer,
    services: Services,
    *,
    interval_s: float = 1.0,
    store_refresh_s: float = 2.0,
    max_streams: int = 32,
    static_dir: Path = STATIC_DIR,
) -> None:
    """Register the dashboard's routes on `server` (call before the HTTP app is built)."""
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    assets = _load_assets(static_dir)
    page = _render_page((static_dir / PAGE_TEMPLATE).read_text(encoding="utf-8"), assets)
    settings = services.settings.mcp
    access = _Access(
        {agent: token.get_secret_value() for agent, token in settings.tokens.items()},
        allowed_hosts=settings.allowed_hosts,
        public_https=(settings.public_url or "").startswith("https://"),
    )
    snapshots = _Snapshots(services, interval_s=interval_s, fresh_s=min(0.5, interval_s / 2), store_s=store_refresh_s)
    streams: set[object] = set()

    def page_response() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_SECURITY)

    @server.custom_route("/dashboard", methods=["GET"])
    async def dashboard_page(request: Request) -> Response:
        if refused := access.refuse_host(request):
            return refused
        if not access.required:
            return page_response()
        if (token := request.query_params.get("token")) is not None:
            if (session := access.session_for(token)) is None:
                return _unauthorized(page_hint=True)
            # Set the cookie, then drop the token from the address bar (and from history and reloads).
            redirect = RedirectResponse("dashboard", status_code=303, headers={"Cache-Control": "no-store"})
            access.set_cookie(redirect, request, session)
            return redirect
        if (bearer := _bearer(request)) is not None:
            if (session := access.session_for(bearer)) is None:
                return _unauthorized(page_hint=True)
            response = page_response()
            access.set_cookie(response, request, session)  # the page's own requests carry no bearer header
            return response
        return page_response() if access.cookie_ok(request) else _unauthorized(page_hint=True)

    @server.custom_route("/dashboard/static/{name}", methods=["GET"])
    async def dashboard_static(request: Request) -> Response:
        if refused := access.refuse(request):
            return refused
        asset = assets.get(request.path_params["name"])
        if asset is None:
            return PlainTextResponse("not found\n", status_code=404)
        headers = {"Cache-Control": STATIC_CACHE, "ETag": asset.etag, "X-Content-Type-Options": "nosniff"}
        if asset.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.content_type, headers=headers)

    @server.custom_route("/dashboard/snapshot", methods=["GET"])
    async def dashboard_snapshot(request: Request) -> Response:
        if refused := access.refuse(request):
            return refused
        _, text = await snapshots.get()
        return Response(text, media_type="application/json", headers={"Cache-Control": "no-store"})

    @server.custom_route("/dashboard/events", methods=["GET"])
    async def dashboard_events(request: Request) -> Response:
        if refused := access.refuse(request):
            return refused
        if len(streams) >= max_streams:
            return PlainTextResponse(
                "too many open dashboard streams\n", status_code=503, headers={"Retry-After": "5"}
            )

        shutdown = anyio.Event()  # set by sse-starlette when uvicorn is asked to stop

        async def events() -> AsyncIterator[ServerSentEvent]:
            marker = object()
            streams.add(marker)
            try:
                sequence = 0
                while not shutdown.is_set():
                    _, text = await snapshots.get()
                    sequence += 1
                    # `retry` tells EventSource how long to wait before reconnecting after a drop.
                    yield ServerSentEvent(data=text, event="snapshot", id=str(sequence), retry=3000)
                    with anyio.move_on_after(interval_s):
                        await shutdown.wait()
            finally:
                streams.discard(marker)

        # No pings (a snapshot every interval keeps the connection busy); a client that stops reading for
        # 10 s is dropped. On shutdown the stream ends on its own, so the server stops without waiting.
        return EventSourceResponse(
            events(),
            ping=0,
            send_timeout=10.0,
            shutdown_event=shutdown,
            shutdown_grace_period=1.0,
            headers={"X-Content-Type-Options": "nosniff"},
        )


# -- snapshots -------------------------------------------------------------------------------------------


class _Snapshots:
    """Builds the snapshot JSON, at most once per `fresh_s`, shared by every reader."""

    def __init__(self, services: Services, *, interval_s: float, fresh_s: float, store_s: float) -> None:
        self.services = services
        self.interval_s = interval_s
        self.fresh_s = fresh_s
        self.store_s = store_s
        self._lock = asyncio.Lock()
        self._last: tuple[float, dict[str, Any], str] | None = None
        self._stored: dict[str, tuple[float, Any]] = {}
        self._failing: set[str] = set()

    async def get(self) -> tuple[dict[str, Any], str]:
        """(snapshot, its JSON text)."""
        if (last := self._last) and time.monotonic() - last[0] < self.fresh_s:
            return last[1], last[2]
        async with self._lock:
            if (last := self._last) and time.monotonic() - last[0] < self.fresh_s:
                return last[1], last[2]
            snapshot = await self._build()
            text = json.dumps(snapshot, separators=(",", ":"), allow_nan=False)
            self._last = (time.monotonic(), snapshot, text)
            return snapshot, text

    async def _build(self) -> dict[str, Any]:
        errors: dict[str, str] = {}
        system = await self._section("system", self._system, errors)
        services = await self._section("services", self._services, errors)
        deployments = await self._stored_section("deployments", self._deployments, errors)
        governance = await self._stored_section("governance", self._governance, errors)
        alerts = await self._section("alerts", self._alerts, errors)  # live: they change every evaluation
        timeline = await self._section("timeline", self._timeline, errors)
        return {
            "version": __version__,
            "generated_at": _iso(datetime.now(UTC)),
            "interval_s": self.interval_s,
            "agent": self.services.settings.governance.agent_name,
            "system": system,
            "services": services if services is not None else [],
            "deployments": deployments if deployments is not None else [],
            "governance": governance,
            "alerts": alerts if alerts is not None else [],
            "timeline": timeline if timeline is not None else [],
            "errors": errors,
        }

    async def _section(
        self, name: str, read: Callable[[], Awaitable[Any]], errors: dict[str, str]
    ) -> Any:
        """One section; a failure becomes an entry in `errors` (logged once until it recovers)."""
        try:
            value = await read()
        except Exception as exc:
            errors[name] = f"{name} unavailable ({type(exc).__name__})"
            if name not in self._failing:
                self._failing.add(name)
                log.warning("dashboard: cannot read %s", name, exc_info=True)
            return None
        if name in self._failing:
            self._failing.discard(name)
            log.info("dashboard: %s readable again", name)
        return value

    async def _stored_section(
        self, name: str, read: Callable[[], Awaitable[Any]], errors: dict[str, str]
    ) -> Any:
        """A section read from the store: re-read at most every `store_s`."""
        cached = self._stored.get(name)
        if cached and time.monotonic() - cached[0] < self.store_s:
            return cached[1]
        value = await self._section(name, read, errors)
        if name not in errors:
            self._stored[name] = (time.monotonic(), value)
        return value

    async def _system(self) -> dict[str, Any]:
        metrics = await self.services.monitoring.get_system_metrics()  # the latest sample when it is recent
        data = metrics.model_dump(mode="json", exclude={"top_cpu", "top_memory"})
        data["sampled_at"] = _iso(metrics.sampled_at)
        return data

    async def _services(self) -> list[dict[str, Any]]:
        monitoring, text = self.services.monitoring, self.services.redactor.text
        rows = []
        for name, check in monitoring.services.items():
            last = monitoring.health.last(name)  # the last background probe; never probes here
            if last is None:
                rows.append({"name": name, "status": "pending", "target": None, "interval_s": check.interval_s})
                continue
            rows.append(
                {
                    "name": last.name,
                    "target": text(last.target),
                    "status": last.status,
                    "http_status": last.http_status,
                    "latency_ms": last.latency_ms,
                    "latency_p95_ms": last.latency_p95_ms,
                    "uptime_percent": last.uptime_percent,
                    "consecutive_failures": last.consecutive_failures,
                    "error": text(last.error) if last.error else None,
                    "checked_at": _iso(last.checked_at),
                    "interval_s": check.interval_s,
                }
            )
        return rows

    async def _deployments(self) -> list[dict[str, Any]]:
        text = self.services.redactor.text
        entries = await self.services.deployment.history.list(limit=DEPLOYMENTS_SHOWN)
        return [
            {
                "id": entry.id,
                "action": entry.action,
                "project": entry.project,
                "environment": entry.environment,
                "outcome": entry.outcome,
                "requested_by": entry.requested_by,
                "branch": entry.branch,
                "requested_at": _iso(entry.requested_at),
                "finished_at": _iso(entry.finished_at) if entry.finished_at else None,
                "duration_s": entry.duration_s,
                "url": entry.deployment_url,
                "error": text(entry.error) if entry.error else None,
            }
            for entry in entries
        ]

    async def _governance(self) -> dict[str, Any]:
        status = await self.services.gate.status(self.services.settings.governance.agent_name)
        if status.get("mode") == "degraded":
            return {
                "agent": status["agent"],
                "mode": "degraded",
                "reason": self.services.redactor.text(str(status.get("reason") or "")),
                "fail_open": status.get("fail_open", False),
            }
        return {
            "agent": status["agent"],
            "mode": status["mode"],
            "reputation_score": status["reputation_score"],
            "permission_level": status["permission_level"],
            "probation": status["probation"],
            "budget": status["budget"],
            "levels": dict(self.services.gate.policy.levels),  # level -> lowest score, in order
        }

    async def _alerts(self) -> list[dict[str, Any]]:
        text = self.services.redactor.text
        return [
            {
                "id": alert.id,
                "rule": alert.rule_name,
                "severity": alert.severity,
                "state": alert.state,
                "summary": _clip(text(alert.summary)),
                "started_at": _iso_s(alert.started_at),
                "fired_at": _iso_s(alert.fired_at) if alert.fired_at is not None else None,
                "acknowledged_by": text(alert.acknowledged_by) if alert.acknowledged_by else None,
                "remediation": _clip(text(alert.remediation)) if alert.remediation else None,
            }
            for alert in await self.services.alerts.get_active_alerts()
        ]

    async def _timeline(self) -> list[dict[str, Any]]:
        """Alert events of the last hour and incident diagnoses, newest first: (at, kind, text)."""
        entries: list[tuple[float, str, str]] = []
        for event in await self.services.alerts.history(since_s=TIMELINE_WINDOW_S, limit=TIMELINE_EVENTS):
            if (entry := _alert_entry(event.rule_name, event.event, event.detail)) is not None:
                entries.append((event.at, *entry))
        if self.services.incidents is not None:
            for finished, report in list(self.services.incidents.reports):
                d = report.diagnosis
                outcome = " — verified" if report.verified else " — escalated" if report.escalated else ""
                entries.append((finished, "diagnosis", f"{d.service}: {d.cause}: {d.summary}{outcome}"))
        entries.sort(key=lambda entry: entry[0], reverse=True)
        text = self.services.redactor.text
        return [
            {"at": _iso_s(at), "kind": kind, "text": _clip(text(line))} for at, kind, line in entries[:TIMELINE_SHOWN]
        ]


def _alert_entry(rule: str, event: str, detail: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, text) of an alert history event worth a line on the timeline; None for the rest (pending,
    cleared, repeated, silenced: many, and little news)."""
    if event == "firing":
        return "alert", f"{rule} firing: {detail.get('summary', '')}".rstrip(": ")
    if event == "resolved":
        if detail.get("manual"):
            return "alert", f"{rule} resolved by {detail.get('by') or 'hand'}"
        firing_s = detail.get("firing_s")
        return "alert", f"{rule} resolved" + (f" after {_seconds(firing_s)}" if firing_s is not None else "")
    if event == "closed":
        return "alert", f"{rule} closed: {detail.get('reason', '')}".rstrip(": ")
    if event == "escalated":
        channels = ", ".join(map(str, detail.get("channels") or []))
        return "alert", f"{rule} escalated" + (f" to {channels}" if channels else "")
    if event == "acknowledged":
        return "alert", f"{rule} acknowledged by {detail.get('by') or 'unknown'}"
    if event == "remediation_started":
        return "remediation", f"remediation of {rule} started: {detail.get('action', '')}".rstrip(": ")
    if event == "remediation_done":
        result = "succeeded" if detail.get("ok") else "failed"
        return "remediation", f"remediation of {rule} {result}: {detail.get('outcome', '')}".rstrip(": ")
    if event == "recovered":
        after = detail.get("time_to_recover_s")
        line = f"{rule} recovered" + (f" {_seconds(after)} after firing" if after is not None else "")
        return "remediation", line + (" (a person was needed)" if detail.get("human_needed") else "")
    return None


def _seconds(value: Any) -> str:
    try:
        return f"{float(value):.1f} s"
    except (TypeError, ValueError):
        return str(value)


def _clip(value: str, limit: int = TEXT_MAX) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_s(epoch_s: float) -> str:
    return _iso(datetime.fromtimestamp(epoch_s, UTC))


# -- access ----------------------------------------------------------------------------------------------


class _Access:
    """Who may see the dashboard: anyone on a loopback Host without tokens; a token holder with them."""

    def __init__(self, tokens: dict[str, str], *, allowed_hosts: list[str], public_https: bool) -> None:
        self._tokens = [token.encode() for token in tokens.values()]
        self._sessions = [_session(token) for token in self._tokens]
        self._allowed_hosts = allowed_hosts
        self._public_https = public_https

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def session_for(self, token: str) -> str | None:
        """The session cookie value for a valid token (constant-time over every known token)."""
        candidate = token.encode()
        found = None
        for known, session in zip(self._tokens, self._sessions, strict=True):
            if hmac.compare_digest(candidate, known):
                found = session
        return found

    def cookie_ok(self, request: Request) -> bool:
        candidate = request.cookies.get(COOKIE_NAME, "").encode()
        ok = False
        for session in self._sessions:
            ok |= hmac.compare_digest(candidate, session.encode())
        return ok

    def set_cookie(self, response: Response, request: Request, session: str) -> None:
        # No Path: the browser scopes the cookie to the page's folder, which still works behind a prefix.
        response.set_cookie(
            COOKIE_NAME,
            session,
            path=None,  # type: ignore[arg-type]
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" or self._public_https,
        )

    def refuse_host(self, request: Request) -> Response | None:
        """Without tokens, only a loopback Host (or a configured one) may read the dashboard."""
        if self.required or host_allowed(request.headers.get("host", ""), self._allowed_hosts):
            return None
        return PlainTextResponse("invalid Host header\n", status_code=421)

    def refuse(self, request: Request) -> Response | None:
        """None when the request may read dashboard data: open loopback, a bearer token or the cookie."""
        if refused := self.refuse_host(request):
            return refused
        if not self.required:
            return None
        if (bearer := _bearer(request)) is not None:
            return None if self.session_for(bearer) is not None else _unauthorized()
        return None if self.cookie_ok(request) else _unauthorized()


def _session(token: bytes) -> str:
    return hmac.new(token, _SESSION_LABEL, hashlib.sha256).hexdigest()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _unauthorized(page_hint: bool = False) -> Response:
    message = "a token is required"
    if page_hint:
        message += ": open /dashboard?token=YOUR_TOKEN once, or send Authorization: Bearer YOUR_TOKEN"
    return PlainTextResponse(
        message + "\n", status_code=401, headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"}
    )


# -- assets ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str

    @property
    def version(self) -> str:
        return self.etag.strip('"')


def _load_assets(directory: Path) -> dict[str, _Asset]:
    """Every regular file of a known type in `directory` (read once): the only names the route serves."""
    assets = {}
    for path in sorted(directory.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is None or path.is_symlink() or not path.is_file():
            continue
        body = path.read_bytes()
        assets[path.name] = _Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:16]}"')
    return assets


_PLACEHOLDER = re.compile(r"\{\{\s*(asset|version)\s*([\w.-]*)\s*\}\}")


def _render_page(template: str, assets: dict[str, _Asset]) -> bytes:
    """The page with `{{ asset NAME }}` as relative, versioned asset URLs and `{{ version }}` filled in."""

    def fill(match: re.Match[str]) -> str:
        kind, name = match.groups()
        if kind == "version":
            return html.escape(__version__)
        if name not in assets:
            raise ValueError(f"dashboard page names a missing asset: {name}")
        return html.escape(f"dashboard/static/{name}?v={assets[name].version}")

    return _PLACEHOLDER.sub(fill, template).encode()


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
