"""What alert conditions read in the running agent: the monitoring series, the latest health checks, the log
index and its anomaly detector, and the Sentry issues stored in that index."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection

from ops_agent.tools.logs import LogAnalysisTool
from ops_agent.tools.logs.index.query import parse_query, parse_severity
from ops_agent.tools.logs.index.store import LogFilter
from ops_agent.tools.monitoring.health import ServiceHealth
from ops_agent.tools.monitoring.series import SeriesStore

__all__ = ["AgentConditionSources"]

MAX_SENTRY_RECORDS = 10_000  # records read per sentry_new_issues evaluation (one per issue activity)


class AgentConditionSources:
    def __init__(
        self,
        series: SeriesStore,
        last_health: Callable[[str], ServiceHealth | None],
        logs: LogAnalysisTool,
        *,
        clock: Callable[[], float] = time.time,
        sentry_projects: Collection[str] | None = None,
    ) -> None:
        self._sentry_projects = sentry_projects  # None: Sentry is off; empty: every project the token reads
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

    def sentry_projects(self) -> Collection[str] | None:
        return self._sentry_projects

    async def sentry_new_issues(self, *, project: str, window_s: float) -> int | None:
        """Distinct issues of `project` whose firstSeen is in the window. Every record of such an issue is
        stamped at or after its firstSeen, so the window's records are enough to read."""
        if self._sentry_projects is None:
            return None
        now = self._clock()
        start = now - window_s
        where = LogFilter(
            end=now,
            start=start,
            query=parse_query(f"source:sentry first_seen_ts:>={math.floor(start)}"),
            services=(project,),
        )
        issues = {
            record.attributes.get("issue_id")
            for record in await self._logs.store.records(where, limit=MAX_SENTRY_RECORDS)
            if isinstance(seen := record.attributes.get("first_seen_ts"), (int, float)) and start <= seen <= now
        }
        return len(issues - {None})
