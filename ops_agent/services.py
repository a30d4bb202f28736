"""The composition root: builds stores, gate, tools, registry, planner and loop from Settings.

`open_services(settings)` is an async context manager, so the same lifespan serves the CLI (`async with`),
the MCP server (its lifespan) and the Python API (`OpsAgentOODA`). Nothing here is global.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx2

from ops_agent.config import Settings
from ops_agent.governance import (
    BudgetLimits,
    Caller,
    GovernanceGate,
    LogAuditLog,
    PolicyTable,
    SqliteAuditLog,
    SqliteCostLedger,
    SqliteReputationStore,
)
from ops_agent.governance.audit import AuditLog
from ops_agent.ooda import Planner, RulePlanner, TaskLoop, execute_task_spec
from ops_agent.redact import RedactingFilter, Redactor
from ops_agent.registry import ToolRegistry
from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.telemetry import Telemetry
from ops_agent.tools.deployment import DeploymentTool, SqliteDeploymentHistory, VercelClient, deployment_specs
from ops_agent.tools.monitoring import CustomMetrics, MonitoringTool, monitoring_specs
from ops_agent.tools.monitoring.prometheus import PrometheusClient
from ops_agent.tools.monitoring.series import MemorySeries, SeriesStore, SqliteSeriesStore, TieredSeries

if TYPE_CHECKING:
    import anthropic

__all__ = ["Services", "configure_logging", "open_services"]

log = logging.getLogger("ops_agent.governance")
USER_AGENT = "ops-agent/0.1"


@dataclass
class Services:
    settings: Settings
    redactor: Redactor
    gate: GovernanceGate
    registry: ToolRegistry
    loop: TaskLoop
    monitoring: MonitoringTool
    deployment: DeploymentTool
    telemetry: Telemetry
    http: httpx2.AsyncClient

    @property
    def identity(self) -> Caller:
        """The local agent: stdio MCP, the CLI and the Python API act as this agent."""
        return Caller(self.settings.governance.agent_name, via="api")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners and daemons swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(settings: Settings) -> Redactor:
    """Log lines to stderr in the seed's `LEVEL:name:message` shape, scrubbed of secrets."""
    redactor = Redactor(settings.secret_values())
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_ops_agent", False)]:
        root.removeHandler(old)
    handler._ops_agent = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for noisy in ("httpx2", "httpcore2", "mcp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return redactor


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    anthropic_client: anthropic.AsyncAnthropic | None = None,
    http: httpx2.AsyncClient | None = None,
    enable_monitoring: bool = True,
) -> AsyncIterator[Services]:
    async with AsyncExitStack() as stack:
        redactor = Redactor(settings.secret_values())
        if http is None:
            http = httpx2.AsyncClient(follow_redirects=False, timeout=10.0, headers={"user-agent": USER_AGENT})
            stack.push_async_callback(http.aclose)
        db, degraded_reason = await _open_database(settings, redactor, stack)
        gate = await _open_governance(settings, redactor, db, degraded_reason, stack)
        telemetry = Telemetry()
        gate.observers.append(telemetry.observe)
        registry = ToolRegistry(gate)
        series = await _open_series(db, degraded_reason, stack)
        monitoring = MonitoringTool(
            settings.services,
            http,
            series=series,
            sample_interval_s=settings.monitoring.sample_interval_s,
            top_processes=settings.monitoring.top_processes,
        )
        stack.push_async_callback(monitoring.aclose)
        custom_metrics = CustomMetrics(db, series, _prometheus(settings, http))
        await custom_metrics.migrate()
        if enable_monitoring:
            for spec in monitoring_specs(monitoring, custom_metrics):
                registry.register(spec)
            stack.push_async_callback(_cancel, asyncio.create_task(monitoring.run(), name="monitoring"))
        history = SqliteDeploymentHistory(db)
        await history.migrate()
        deployment = DeploymentTool(_vercel_client(settings, http), history, settings.vercel)
        for spec in deployment_specs(deployment, settings.vercel):
            registry.register(spec)
        planner = _planner(settings, registry, gate, anthropic_client, stack)
        facts = {
            "services": [service.name for service in settings.services],
            "projects": sorted({*settings.vercel.projects, *settings.vercel.sandbox_projects}),
            "default_project": settings.vercel.default_project,
        }
        loop = TaskLoop(registry, planner, gate, max_steps=settings.llm.max_steps, facts=facts)
        registry.register(execute_task_spec(loop))
        yield Services(settings, redactor, gate, registry, loop, monitoring, deployment, telemetry, http)


async def _open_database(
    settings: Settings, redactor: Redactor, stack: AsyncExitStack
) -> tuple[SqliteDatabase, str | None]:
    """The configured store, or, when it cannot be opened, an in-memory one and the reason (degraded mode)."""
    db = SqliteDatabase(settings.storage.path)
    stack.push_async_callback(db.close)
    try:
        await db.open()
        return db, None
    except (sqlite3.Error, OSError) as exc:
        reason = f"store {settings.storage.path} unusable: {type(exc).__name__}: {redactor.text(str(exc))}"
    memory = SqliteDatabase(":memory:")
    stack.push_async_callback(memory.close)
    await memory.open()
    return memory, reason


async def _open_governance(
    settings: Settings, redactor: Redactor, db: SqliteDatabase, degraded_reason: str | None, stack: AsyncExitStack
) -> GovernanceGate:
    governance = settings.governance
    common = dict(
        policy=PolicyTable.load(governance.policy),
        limits=BudgetLimits.from_settings(governance.budget),
        probation_tasks=governance.probation_tasks,
        redactor=redactor,
        reputation=SqliteReputationStore(db),
        ledger=SqliteCostLedger(db),
    )
    await common["reputation"].migrate()
    await common["ledger"].migrate()
    if degraded_reason is None:
        try:
            audit = SqliteAuditLog(db)
            await audit.migrate()
            stack.push_async_callback(audit.close)
            log.info("✅ Governance modules initialized")
            gate = GovernanceGate(audit=audit, **common)
            await gate.register(governance.agent_name)
            return gate
        except (sqlite3.Error, OSError) as exc:
            degraded_reason = f"registration failed: {type(exc).__name__}: {redactor.text(str(exc))}"
    log.warning("⚠️ Could not register with Governance (degraded mode)")
    mode = "running UNCONSTRAINED (fail_open)" if governance.fail_open else "read-only actions only"
    log.warning("   %s; %s", degraded_reason, mode)
    # Budgets still hold within this process: in degraded mode `db` is an in-memory database.
    audit_log: AuditLog = LogAuditLog()
    return GovernanceGate(audit=audit_log, degraded_reason=degraded_reason, fail_open=governance.fail_open, **common)


async def _open_series(db: SqliteDatabase, degraded_reason: str | None, stack: AsyncExitStack) -> SeriesStore:
    """Metric series in the store; in degraded mode, a bounded in-memory history."""
    if degraded_reason is not None:
        return MemorySeries()
    store = SqliteSeriesStore(db)
    await store.migrate()
    stack.push_async_callback(store.close)
    return TieredSeries(MemorySeries(), store)  # recent windows from a ring buffer, older ones from the store


def _prometheus(settings: Settings, http: httpx2.AsyncClient) -> PrometheusClient | None:
    monitoring = settings.monitoring
    if monitoring.prometheus_url is None:
        return None
    token = monitoring.prometheus_token.get_secret_value() if monitoring.prometheus_token else None
    return PrometheusClient(http, monitoring.prometheus_url, timeout_s=monitoring.prometheus_timeout_s, bearer_token=token)


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _vercel_client(settings: Settings, http: httpx2.AsyncClient) -> VercelClient | None:
    vercel = settings.vercel
    if vercel.token is None:
        return None
    return VercelClient(
        http,
        base_url=vercel.api_url,
        token=vercel.token.get_secret_value(),
        team_id=vercel.team_id,
        max_attempts=vercel.max_attempts,
        list_version=vercel.list_version,
        timeout_s=vercel.timeout_s,
    )


def _planner(
    settings: Settings,
    registry: ToolRegistry,
    gate: GovernanceGate,
    client: anthropic.AsyncAnthropic | None,
    stack: AsyncExitStack,
) -> Planner:
    llm = settings.llm
    if client is None and llm.api_key is None:
        return RulePlanner(registry)
    import anthropic

    from ops_agent.ooda.claude_planner import ClaudePlanner

    if client is None:
        client = anthropic.AsyncAnthropic(
            api_key=llm.api_key.get_secret_value(),
            base_url=llm.base_url,
            max_retries=2,
            http_client=httpx2.AsyncClient(timeout=llm.timeout_s, headers={"user-agent": USER_AGENT}),
        )
        stack.push_async_callback(client.close)
    return ClaudePlanner(client, registry, gate, llm)
