"""Custom metrics: named queries over the series store (the seed's `add_custom_metric(name, query)`),
kept in the store so they survive restarts, and evaluated on demand."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from ops_agent.errors import ToolRetry
from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.monitoring.metric_value import MetricValue
from ops_agent.tools.monitoring.prometheus import PrometheusClient, prometheus_value
from ops_agent.tools.monitoring.query import Query, QueryError, describe, evaluate, parse
from ops_agent.tools.monitoring.series import SeriesStore

__all__ = ["CustomMetric", "CustomMetrics", "MetricValue", "PerformanceReport", "ServicePerformance", "checked_query", "performance", "value_of"]


class CustomMetric(MetricValue):
    name: str
    language: str = Field("ops", description="ops (ops-agent's query language) or promql (the configured Prometheus).")
    description: str | None = None
    created_by: str
    created_at: datetime


_MIGRATIONS = [
    """
    CREATE TABLE custom_metrics (
        name TEXT PRIMARY KEY,
        query TEXT NOT NULL,
        description TEXT,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL
    )
    """,
    "ALTER TABLE custom_metrics ADD COLUMN language TEXT NOT NULL DEFAULT 'ops'",
]
Language = Literal["ops", "promql"]


async def checked_query(text: str, series: SeriesStore) -> Query:
    """Parse `text` and insist that every series it reads exists, pointing at the first unknown one."""
    query = parse(text)
    known = await series.names()
    for selector in query.series():
        if selector.name not in known:
            names = ", ".join(sorted(known)[:30]) or "none yet (record_metric adds some)"
            raise QueryError(f"unknown series {selector.name!r}; known series: {names}", selector.position, text)
    return query


async def value_of(query: Query, series: SeriesStore) -> MetricValue:
    now = time.time()
    result = await evaluate(query, series, now)
    return MetricValue(
        query=describe(query),
        value=result.value,
        no_data=result.no_data,
        series=[selector.name for selector in query.series()],
        evaluated_at=datetime.fromtimestamp(now, UTC),
    )


class CustomMetrics:
    def __init__(self, db: SqliteDatabase, series: SeriesStore, prometheus: PrometheusClient | None = None) -> None:
        self.db = db
        self.series = series
        self.prometheus = prometheus

    async def evaluate(self, text: str, language: Language = "ops") -> MetricValue:
        """One query now, in ops-agent's language over the series store, or in PromQL on Prometheus."""
        if language == "promql":
            return await prometheus_value(self._prometheus(), text)
        return await value_of(await checked_query(text, self.series), self.series)

    def _prometheus(self) -> PrometheusClient:
        if self.prometheus is None:
            raise ToolRetry("PromQL needs a Prometheus: set monitoring.prometheus_url")
        return self.prometheus

    async def migrate(self) -> None:
        await self.db.migrate("custom_metrics", _MIGRATIONS)

    async def add(
        self, name: str, text: str, description: str | None, created_by: str, language: Language = "ops"
    ) -> CustomMetric:
        # checked before it is kept: bad syntax and unknown series are reported now, not as silence later
        canonical = (await self.evaluate(text, language)).query

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO custom_metrics (name, query, description, created_by, created_at, language) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (name, canonical, description, created_by, time.time(), language),
                )
            except sqlite3.IntegrityError:
                raise ToolRetry(f"a custom metric called {name!r} exists already; remove it first") from None

        await self.db.write(insert)
        return (await self.get(name))[0]

    async def remove(self, name: str) -> bool:
        deleted = await self.db.write(lambda conn: conn.execute("DELETE FROM custom_metrics WHERE name = ?", (name,)))
        return deleted > 0

    async def get(self, name: str | None = None) -> list[CustomMetric]:
        """Definitions with their current values (all of them, or one)."""
        where, params = ("WHERE name = ?", (name,)) if name else ("", ())
        rows = await self.db.run(
            lambda conn: conn.execute(f"SELECT * FROM custom_metrics {where} ORDER BY name", params).fetchall()
        )
        if name and not rows:
            raise ToolRetry(f"no custom metric called {name!r}")
        metrics = []
        for row in rows:
            if row["language"] == "promql":
                current = await prometheus_value(self._prometheus(), row["query"])
            else:
                current = await value_of(parse(row["query"]), self.series)
            metrics.append(
                CustomMetric(
                    **current.model_dump(),
                    name=row["name"],
                    language=row["language"],
                    description=row["description"],
                    created_by=row["created_by"],
                    created_at=datetime.fromtimestamp(row["created_at"], UTC),
                )
            )
        return metrics


class ServicePerformance(BaseModel):
    service: str
    source: str = Field(description="response_time_ms (pushed per request) or service_latency_ms (probes).")
    samples: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    throughput_per_s: float | None = Field(description="Requests per second; from pushed measurements only.")


class PerformanceReport(BaseModel):
    window_s: int
    services: list[ServicePerformance]
    note: str | None = None


async def performance(series: SeriesStore, services: list[str], window_s: int) -> PerformanceReport:
    """Response time percentiles and throughput per service over the window, through the query language:
    pushed `response_time_ms{service=...}` when there is any, else the probes' `service_latency_ms`."""
    known = await series.names()
    pushed = {labels.get("service") for labels in known.get("response_time_ms", [])} - {None}
    names = services or sorted(pushed | {labels["service"] for labels in known.get("service_latency_ms", [])})
    results = []
    for service in names:
        source = "response_time_ms" if service in pushed else "service_latency_ms"
        selector = f'{source}{{service="{_escaped(service)}"}}[{window_s}s]'
        figures = {}
        for function in ("count", "p50", "p95", "p99"):
            figures[function] = (await value_of(parse(f"{function}({selector})"), series)).value
        samples = int(figures["count"] or 0)
        results.append(
            ServicePerformance(
                service=service,
                source=source,
                samples=samples,
                p50_ms=figures["p50"],
                p95_ms=figures["p95"],
                p99_ms=figures["p99"],
                throughput_per_s=round(samples / window_s, 3) if source == "response_time_ms" else None,
            )
        )
    note = None if results else "no response times yet: push response_time_ms{service=...} or configure services"
    return PerformanceReport(window_s=window_s, services=results, note=note)


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
