"""The composition root: builds stores, gate, tools, registry, planner and loop from Settings.

`open_services(settings)` is an async context manager, so the same lifespan serves the CLI (`async with`),
the MCP server (its lifespan) and the Python API (`OpsAgentOODA`). Nothing here is global.
"""

from __future__ import annotations

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
from ops_agent.tools.monitoring import MonitoringTool, monitoring_specs

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
        gate = await _open_governance(settings, redactor, stack)
        registry = ToolRegistry(gate)
        monitoring = MonitoringTool(settings.services, http)
        if enable_monitoring:
            for spec in monitoring_specs(monitoring):
                registry.register(spec)
        planner = _planner(settings, registry, gate, anthropic_client, stack)
        facts = {"services": [service.name for service in settings.services]}
        loop = TaskLoop(registry, planner, gate, max_steps=settings.llm.max_steps, facts=facts)
        registry.register(execute_task_spec(loop))
        yield Services(settings, redactor, gate, registry, loop, monitoring, http)


async def _open_governance(settings: Settings, redactor: Redactor, stack: AsyncExitStack) -> GovernanceGate:
    governance = settings.governance
    policy = PolicyTable.load(governance.policy)
    limits = BudgetLimits.from_settings(governance.budget)
    common = dict(policy=policy, limits=limits, probation_tasks=governance.probation_tasks, redactor=redactor)
    db = SqliteDatabase(settings.storage.path)
    stack.push_async_callback(db.close)
    try:
        await db.open()
        reputation, ledger, audit = SqliteReputationStore(db), SqliteCostLedger(db), SqliteAuditLog(db)
        for store in (reputation, ledger, audit):
            await store.migrate()
        stack.push_async_callback(audit.close)
        log.info("✅ Governance modules initialized")
        gate = GovernanceGate(reputation=reputation, ledger=ledger, audit=audit, **common)
        await gate.register(governance.agent_name)
        return gate
    except (sqlite3.Error, OSError) as exc:
        reason = f"store {settings.storage.path} unusable: {type(exc).__name__}: {redactor.text(str(exc))}"
    log.warning("⚠️ Could not register with Governance (degraded mode)")
    log.warning("   %s; %s", reason, "running UNCONSTRAINED (fail_open)" if governance.fail_open else "read-only actions only")
    # Budgets still hold within this process, on an in-memory database.
    memory = SqliteDatabase(":memory:")
    stack.push_async_callback(memory.close)
    await memory.open()
    reputation, ledger = SqliteReputationStore(memory), SqliteCostLedger(memory)
    await reputation.migrate()
    await ledger.migrate()
    audit: AuditLog = LogAuditLog()
    return GovernanceGate(
        reputation=reputation, ledger=ledger, audit=audit, degraded_reason=reason, fail_open=governance.fail_open,
        **common,
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
