"""Service health: HTTP(S) and TCP probes, and what they add up to over time per service.

A probe never takes longer than its service's own timeout, so a hanging service costs its timeout, not
everyone's: all services are probed concurrently. For HTTPS the certificate's days left are read on a
separate TLS handshake at most once an hour per service.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx2
from pydantic import BaseModel, Field

from ops_agent.config import ServiceCheck

__all__ = ["HealthChecker", "ServiceHealth"]

CERT_CHECK_INTERVAL_S = 3600.0
LATENCY_WINDOW = 500  # probes kept per service for percentiles


class ServiceHealth(BaseModel):
    name: str
    target: str = Field(description="The probed URL (without credentials) or host:port.")
    status: Literal["up", "down"]
    http_status: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    checked_at: datetime
    consecutive_failures: int = Field(0, description="Failed probes in a row, this one included.")
    uptime_percent: float | None = Field(None, description="Share of probes up since ops-agent started.")
    tls_days_left: float | None = Field(None, description="Days until the HTTPS certificate expires.")
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None


@dataclass
class _Record:
    """What the checker remembers about one service between probes."""

    checks: int = 0
    ups: int = 0
    consecutive_failures: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    tls_days_left: float | None = None
    tls_checked_at: float = float("-inf")
    last: ServiceHealth | None = None


class HealthChecker:
    def __init__(self, services: list[ServiceCheck], http: httpx2.AsyncClient) -> None:
        self.services = {service.name: service for service in services}
        self.http = http
        self._records = {name: _Record() for name in self.services}
        # A service behind a private CA gets a client that trusts that CA (and only for that service).
        self._clients = {
            service.name: httpx2.AsyncClient(verify=ssl.create_default_context(cafile=str(service.tls_ca_file)))
            for service in services
            if service.tls_ca_file is not None
        }

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    def last(self, name: str) -> ServiceHealth | None:
        return self._records[name].last

    async def check(self, names: list[str]) -> list[ServiceHealth]:
        return list(await asyncio.gather(*(self._check(self.services[name]) for name in names)))

    async def _check(self, service: ServiceCheck) -> ServiceHealth:
        record = self._records[service.name]
        checked_at = datetime.now(UTC)
        started = time.perf_counter()
        if service.url:
            status, http_status, error = await self._probe_http(service)
            if service.url.startswith("https://") and time.monotonic() - record.tls_checked_at >= CERT_CHECK_INTERVAL_S:
                record.tls_days_left = await _tls_days_left(service)
                record.tls_checked_at = time.monotonic()
        else:
            status, http_status, error = await self._probe_tcp(service)
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        record.checks += 1
        if status == "up":
            record.ups += 1
            record.consecutive_failures = 0
            record.latencies_ms.append(latency_ms)
        else:
            record.consecutive_failures += 1
        p50, p95, p99 = _percentiles(record.latencies_ms, (50, 95, 99))
        record.last = ServiceHealth(
            name=service.name,
            target=_display_target(service),
            status=status,
            http_status=http_status,
            latency_ms=latency_ms if status == "up" else None,
            error=error,
            checked_at=checked_at,
            consecutive_failures=record.consecutive_failures,
            uptime_percent=round(100 * record.ups / record.checks, 2),
            tls_days_left=record.tls_days_left,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
        )
        return record.last

    async def _probe_http(self, service: ServiceCheck) -> tuple[str, int | None, str | None]:
        assert service.url is not None
        try:
            async with asyncio.timeout(service.timeout_s):
                http = self._clients.get(service.name, self.http)
                response = await http.get(service.url, timeout=service.timeout_s, follow_redirects=False)
                body = await response.aread() if service.body_contains else b""
        except (TimeoutError, httpx2.TimeoutException):
            return "down", None, f"no answer within {service.timeout_s:g} s"
        except httpx2.ConnectError:
            return "down", None, "connection refused or host unreachable"
        except httpx2.HTTPError as exc:
            return "down", None, f"{type(exc).__name__}: request failed"
        if response.status_code != service.expected_status:
            return "down", response.status_code, f"expected HTTP {service.expected_status}, got {response.status_code}"
        if service.body_contains and service.body_contains.encode() not in body:
            return "down", response.status_code, f"the body does not contain {service.body_contains!r}"
        return "up", response.status_code, None

    async def _probe_tcp(self, service: ServiceCheck) -> tuple[str, int | None, str | None]:
        assert service.tcp is not None
        host, _, port = service.tcp.rpartition(":")
        try:
            async with asyncio.timeout(service.timeout_s):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except TimeoutError:
            return "down", None, f"no connection within {service.timeout_s:g} s"
        except OSError as exc:
            return "down", None, f"cannot connect: {exc.strerror or type(exc).__name__}"
        writer.close()
        return "up", None, None


async def _tls_days_left(service: ServiceCheck) -> float | None:
    """Days until the certificate the server presents expires; None when it cannot be read."""
    parts = urlsplit(service.url or "")
    context = ssl.create_default_context(cafile=str(service.tls_ca_file) if service.tls_ca_file else None)
    try:
        async with asyncio.timeout(service.timeout_s):
            _, writer = await asyncio.open_connection(
                parts.hostname, parts.port or 443, ssl=context, server_hostname=parts.hostname
            )
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    try:
        certificate = writer.get_extra_info("peercert") or {}
        expires = certificate.get("notAfter")
        return round((ssl.cert_time_to_seconds(expires) - time.time()) / 86400, 1) if expires else None
    finally:
        writer.close()


def _display_target(service: ServiceCheck) -> str:
    if service.tcp:
        return service.tcp
    parts = urlsplit(service.url or "")
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _percentiles(values: deque[float], ranks: tuple[int, ...]) -> tuple[float | None, ...]:
    if not values:
        return tuple(None for _ in ranks)
    ordered = sorted(values)
    return tuple(round(ordered[min(len(ordered) - 1, int(len(ordered) * rank / 100))], 2) for rank in ranks)
