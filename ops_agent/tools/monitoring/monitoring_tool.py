"""MonitoringTool: system metrics (psutil) and service health (HTTP), with the seed's API."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx2
import psutil
from pydantic import BaseModel, Field

from ops_agent.config import ServiceCheck
from ops_agent.errors import ToolRetry

__all__ = ["DiskUsage", "HealthReport", "MonitoringTool", "ServiceHealth", "SystemMetrics"]

# psutil measures CPU between two calls; a reading is refreshed at most this often so that callers
# in a tight loop get a meaningful figure instead of a percentage over a few microseconds.
CPU_MIN_WINDOW_S = 0.25


class DiskUsage(BaseModel):
    mount: str
    total_bytes: int
    used_bytes: int
    percent: float


class SystemMetrics(BaseModel):
    sampled_at: datetime
    cpu_percent: float = Field(description="CPU busy % across all cores over cpu_window_s.")
    cpu_window_s: float = Field(description="Seconds the CPU figure covers.")
    cpu_count: int
    load_average: tuple[float, float, float] = Field(description="1, 5 and 15 minute load averages.")
    memory_total_bytes: int
    memory_used_bytes: int
    memory_percent: float
    swap_percent: float
    disks: list[DiskUsage]
    process_count: int
    uptime_s: float


class ServiceHealth(BaseModel):
    name: str
    url: str = Field(description="The probed URL, without any credentials.")
    status: Literal["up", "down"]
    http_status: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    checked_at: datetime


class HealthReport(BaseModel):
    services: list[ServiceHealth]
    healthy: int
    unhealthy: int
    note: str | None = None


class MonitoringTool:
    def __init__(self, services: list[ServiceCheck], http: httpx2.AsyncClient) -> None:
        self.services = {service.name: service for service in services}
        self.http = http
        psutil.cpu_percent(interval=None)  # start psutil's CPU window
        # (taken at, percent, window it covers); until the first window closes, the average since boot.
        self._cpu = (time.monotonic(), self._cpu_since_boot(), time.time() - psutil.boot_time())

    async def get_system_metrics(self) -> SystemMetrics:
        """A snapshot of CPU, load, memory, swap, disk and processes. Reads /proc off the event loop."""
        return await asyncio.to_thread(self._sample)

    def _sample(self) -> SystemMetrics:
        cpu_percent, cpu_window_s = self._cpu_reading()
        memory = psutil.virtual_memory()
        root = psutil.disk_usage("/")
        return SystemMetrics(
            sampled_at=datetime.now(UTC),
            cpu_percent=cpu_percent,
            cpu_window_s=round(cpu_window_s, 3),
            cpu_count=psutil.cpu_count() or 1,
            load_average=psutil.getloadavg(),
            memory_total_bytes=memory.total,
            memory_used_bytes=memory.total - memory.available,
            memory_percent=memory.percent,
            swap_percent=psutil.swap_memory().percent,
            disks=[DiskUsage(mount="/", total_bytes=root.total, used_bytes=root.used, percent=root.percent)],
            process_count=len(psutil.pids()),
            uptime_s=round(time.time() - psutil.boot_time(), 1),
        )

    def _cpu_reading(self) -> tuple[float, float]:
        now = time.monotonic()
        if now - self._cpu[0] >= CPU_MIN_WINDOW_S:
            self._cpu = (now, psutil.cpu_percent(interval=None), now - self._cpu[0])
        return self._cpu[1], self._cpu[2]

    @staticmethod
    def _cpu_since_boot() -> float:
        times = psutil.cpu_times()
        total = sum(times)
        return round(100.0 * (1 - (times.idle + getattr(times, "iowait", 0.0)) / total), 1) if total else 0.0

    async def check_service_health(self, service: str | None = None) -> HealthReport:
        """Probe one configured service, or all of them at once when `service` is None."""
        if service is not None and service not in self.services:
            known = ", ".join(sorted(self.services)) or "none are configured"
            raise ToolRetry(f"unknown service {service!r}; configured services: {known}")
        targets = [self.services[service]] if service else list(self.services.values())
        if not targets:
            return HealthReport(
                services=[],
                healthy=0,
                unhealthy=0,
                note="no services are configured; add them under `services:` in the config file",
            )
        results = await asyncio.gather(*(self._probe(target) for target in targets))
        healthy = sum(result.status == "up" for result in results)
        return HealthReport(services=results, healthy=healthy, unhealthy=len(results) - healthy)

    async def _probe(self, service: ServiceCheck) -> ServiceHealth:
        started = time.perf_counter()
        checked_at = datetime.now(UTC)
        shown_url = _without_credentials(service.url)
        try:
            response = await self.http.get(service.url, timeout=service.timeout_s, follow_redirects=False)
        except httpx2.TimeoutException:
            error = f"no answer within {service.timeout_s:g} s"
            return ServiceHealth(name=service.name, url=shown_url, status="down", error=error, checked_at=checked_at)
        except httpx2.HTTPError as exc:
            error = f"{type(exc).__name__}: connection failed"
            return ServiceHealth(name=service.name, url=shown_url, status="down", error=error, checked_at=checked_at)
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        up = response.status_code == service.expected_status
        return ServiceHealth(
            name=service.name,
            url=shown_url,
            status="up" if up else "down",
            http_status=response.status_code,
            latency_ms=latency_ms,
            error=None if up else f"expected HTTP {service.expected_status}, got {response.status_code}",
            checked_at=checked_at,
        )


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
