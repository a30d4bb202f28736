"""What alert conditions read in the running agent: the monitoring series, the latest health checks, the log
index and its anomaly detector."""

from __future__ import annotations

import time
from collections.abc import Callable

from ops_agent.tools.logs import LogAnalysisTool
from ops_agent.tools.logs.index.query import parse_query, parse_severity
from ops_agent.tools.logs.index.store import LogFilter
from ops_agent.tools.monitoring.health import ServiceHealth
from ops_agent.tools.monitoring.series import SeriesStore

__all__ = ["AgentConditionSources"]


class AgentConditionSources:
    def __init__(
        self,
        series: SeriesStore,
        last_health: Callable[[str], ServiceHealth | None],
        logs: LogAnalysisTool,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._series = series
        self._last_health = last_health
        self._logs = logs
        self._clock = clock

    @property
    def series(self) -> SeriesStore:
        return self._series

    async def health(self, service: str) -> str | None:
        checked = self._last_health(service)
        return checked.status if checked is not None else None

    async def log_count(self, *, severity: str | None, service: str | None, query: str | None, window_s: float) -> int:
        now = self._clock()
        where = LogFilter(
            end=now,
            start=now - window_s,
            query=parse_query(query) if query else None,
            min_severity=parse_severity(severity) if severity else None,
            services=(service,) if service else (),
        )
        return (await self._logs.store.search(where, limit=1, buckets=1)).total

    async def log_anomalies(self, *, service: str | None, window_s: float) -> list[str]:
        report = await self._logs.detect_anomalies(window=f"{max(1, round(window_s))}s", service=service)
        return [anomaly.explanation for anomaly in report.anomalies]
