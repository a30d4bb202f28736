"""MonitoringTool: the seed's get_system_metrics and check_service_health, kept fresh in the background.

`run()` is the background loop (started by the composition root): a system sample every
`sample_interval_s`, and each service probed on its own `interval_s`. `get_system_metrics()` answers from
the latest sample at once; it samples on the spot only when there is no recent one (a one-shot CLI run).
Each sample and probe is recorded in the series store, when one is given.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx2
from pydantic import BaseModel

from ops_agent.config import ServiceCheck
from ops_agent.errors import ToolRetry
from ops_agent.tools.monitoring.health import HealthChecker, ServiceHealth
from ops_agent.tools.monitoring.sampler import SystemMetrics, SystemSampler
from ops_agent.tools.monitoring.series import SeriesStore

__all__ = ["HealthReport", "MonitoringTool", "health_samples", "system_samples"]

log = logging.getLogger(__name__)
MIN_SAMPLE_GAP_S = 0.5


class HealthReport(BaseModel):
    services: list[ServiceHealth]
    healthy: int
    unhealthy: int
    note: str | None = None


class MonitoringTool:
    def __init__(
        self,
        services: list[ServiceCheck],
        http: httpx2.AsyncClient,
        *,
        sample_interval_s: float = 5.0,
        top_processes: int = 5,
        series: SeriesStore | None = None,
    ) -> None:
        self.health = HealthChecker(services, http)
        self.series = series
        self.sample_interval_s = sample_interval_s
        self._sampler = SystemSampler(top_n=top_processes)
        self._latest: tuple[float, SystemMetrics] | None = None
        self._sampling = asyncio.Lock()

    async def aclose(self) -> None:
        await self.health.aclose()

    @property
    def services(self) -> dict[str, ServiceCheck]:
        return self.health.services

    async def get_system_metrics(self) -> SystemMetrics:
        """The latest sample if it is recent, else a new one. Never blocks the event loop."""
        if self._latest and time.monotonic() - self._latest[0] <= 2 * self.sample_interval_s:
            return self._latest[1]
        return await self._sample()

    async def _sample(self) -> SystemMetrics:
        async with self._sampling:  # psutil's CPU windows are per process: one reader at a time
            if self._latest and time.monotonic() - self._latest[0] < min(MIN_SAMPLE_GAP_S, self.sample_interval_s):
                return self._latest[1]  # one was just taken (we waited for it): a new one would cover ~0 s
            metrics = await asyncio.to_thread(self._sampler.sample)
            self._latest = (time.monotonic(), metrics)
        if self.series is not None:
            await self.series.record_many(system_samples(metrics))
        return metrics

    async def check_service_health(self, service: str | None = None) -> HealthReport:
        """Probe one configured service, or all of them at once when `service` is None."""
        if service is not None and service not in self.services:
            known = ", ".join(sorted(self.services)) or "none are configured"
            raise ToolRetry(f"unknown service {service!r}; configured services: {known}")
        names = [service] if service else list(self.services)
        if not names:
            return HealthReport(
                services=[], healthy=0, unhealthy=0,
                note="no services are configured; add them under `services:` in the config file",
            )
        results = await self._probe(names)
        healthy = sum(result.status == "up" for result in results)
        return HealthReport(services=results, healthy=healthy, unhealthy=len(results) - healthy)

    async def run(self) -> None:
        """Sample and probe forever, each on its own interval (cancel the task to stop)."""
        due = {name: 0.0 for name in self.services}
        next_sample = 0.0
        while True:
            now = time.monotonic()
            try:
                if now >= next_sample:
                    next_sample = now + self.sample_interval_s
                    await self._sample()
                if ready := [name for name, at in due.items() if now >= at]:
                    for name in ready:
                        due[name] = now + self.services[name].interval_s
                    await self._probe(ready)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not stop monitoring
                log.exception("monitoring round failed")
            wake = min([next_sample, *due.values()])
            await asyncio.sleep(max(0.05, wake - time.monotonic()))

    async def _probe(self, names: list[str]) -> list[ServiceHealth]:
        results = await self.health.check(names)
        if self.series is not None:
            await self.series.record_many(sample for result in results for sample in health_samples(result))
        return results

    async def record_metric(self, name: str, value: float, labels: dict[str, str], ts: float | None) -> None:
        """A figure pushed from outside (a deploy hook, a load balancer, the log pipeline)."""
        if self.series is None:
            raise ToolRetry("no series store is configured")
        try:
            await self.series.record(name, value, labels, ts)
        except ValueError as exc:
            raise ToolRetry(str(exc)) from None


def system_samples(m: SystemMetrics) -> list[tuple[str, dict[str, str], float, float]]:
    """A system sample as series points: `system_*` names, labels for cores and mounts."""
    ts = m.sampled_at.timestamp()
    figures: list[tuple[str, dict[str, str], float | None]] = [
        ("system_cpu_percent", {}, m.cpu_percent),
        ("system_load1", {}, m.load_average[0]),
        ("system_memory_percent", {}, m.memory_percent),
        ("system_swap_percent", {}, m.swap_percent),
        ("system_process_count", {}, m.process_count),
        ("system_disk_read_bytes_per_s", {}, m.disk_read_bytes_per_s),
        ("system_disk_write_bytes_per_s", {}, m.disk_write_bytes_per_s),
        ("system_net_sent_bytes_per_s", {}, m.net_sent_bytes_per_s),
        ("system_net_recv_bytes_per_s", {}, m.net_recv_bytes_per_s),
        *(("system_cpu_core_percent", {"core": str(i)}, v) for i, v in enumerate(m.cpu_per_core)),
        *(("system_disk_percent", {"mount": d.mount}, d.percent) for d in m.disks),
    ]
    return [(name, labels, ts, float(value)) for name, labels, value in figures if value is not None]


def health_samples(h: ServiceHealth) -> list[tuple[str, dict[str, str], float, float]]:
    """A probe as series points: `service_up` (1/0) and, when up, `service_latency_ms`."""
    labels, ts = {"service": h.name}, h.checked_at.timestamp()
    points = [("service_up", labels, ts, 1.0 if h.status == "up" else 0.0)]
    if h.latency_ms is not None:
        points.append(("service_latency_ms", labels, ts, h.latency_ms))
    return points
