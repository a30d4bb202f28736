"""The agent's own figures in Prometheus exposition format (prometheus-client), served at /metrics.

Counters and histograms are fed by the gate (every call, through `observe`); gauges that describe the
present (system figures, service health, reputation, budget use) are refreshed just before each scrape.
Each Telemetry has its own CollectorRegistry: nothing global, so several agents can live in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ops_agent.config import PERMISSION_LEVELS
from ops_agent.errors import GovernanceUnavailable
from ops_agent.governance.audit import AuditRecord
from ops_agent.governance.gate import Caller, GovernanceGate
from ops_agent.governance.ledger import budget_windows
from ops_agent.tools.monitoring import MonitoringTool

__all__ = ["ALERT_STATES", "CONTENT_TYPE_LATEST", "Telemetry"]

log = logging.getLogger("ops_agent.telemetry")

ALERT_STATES = ("pending", "firing", "acknowledged", "resolved")


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "ops_agent_tool_calls", "Tool invocations by tool, gate decision and outcome.",
            ["tool", "decision", "outcome"], registry=r,
        )
        self.latency = Histogram(
            "ops_agent_tool_call_duration_seconds", "Tool call duration, gate included.", ["tool"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.decisions = Counter("ops_agent_gate_decisions", "Gate decisions.", ["decision"], registry=r)
        self.tokens = Counter("ops_agent_llm_tokens", "LLM tokens spent through tool calls.", ["agent"], registry=r)
        self.score = Gauge("ops_agent_reputation_score", "Reputation score.", ["agent"], registry=r)
        self.level = Gauge(
            "ops_agent_permission_level", "1 for the agent's current permission level.", ["agent", "level"], registry=r
        )
        self.budget = Gauge(
            "ops_agent_budget_used_ratio", "Share of the budget used, by window and unit.", ["agent", "window", "unit"],
            registry=r,
        )
        self.cpu = Gauge("ops_agent_system_cpu_percent", "Host CPU busy %.", registry=r)
        self.memory = Gauge("ops_agent_system_memory_percent", "Host memory used %.", registry=r)
        self.disk = Gauge("ops_agent_system_disk_percent", "Disk used % per mount.", ["mount"], registry=r)
        self.alerts = Gauge("ops_agent_alerts", "Alerts by state.", ["state"], registry=r)
        # Set by the alert engine when there is one; until then there are no alerts, and the gauges say 0.
        self.alert_counts: Callable[[], Awaitable[dict[str, int]]] | None = None
        self.up = Gauge("ops_agent_service_up", "1 when the service's last probe was up.", ["service"], registry=r)
        self.service_latency = Gauge(
            "ops_agent_service_latency_seconds", "Latency of the service's last probe.", ["service"], registry=r
        )

    def observe(self, record: AuditRecord) -> None:
        """The gate's observer: one audit record per call."""
        self.calls.labels(record.tool, record.decision, record.outcome).inc()
        self.decisions.labels(record.decision).inc()
        if record.decision == "allowed":
            self.latency.labels(record.tool).observe(record.duration_ms / 1000)
        if record.tokens:
            self.tokens.labels(record.agent).inc(record.tokens)

    async def refresh(self, gate: GovernanceGate, monitoring: MonitoringTool | None, agent: str) -> None:
        """Gauges of the present, read just before a scrape."""
        if not gate.degraded:
            try:
                await self._governance(gate, agent)
            except GovernanceUnavailable as exc:  # a backend away mid-run: the other gauges still answer
                log.warning("governance gauges not refreshed: %s", exc.public_message)
        counts = await self.alert_counts() if self.alert_counts is not None else {}
        for state in ALERT_STATES:
            self.alerts.labels(state).set(counts.get(state, 0))
        if monitoring is not None:
            metrics = await monitoring.get_system_metrics()
            self.cpu.set(metrics.cpu_percent)
            self.memory.set(metrics.memory_percent)
            for disk in metrics.disks:
                self.disk.labels(disk.mount).set(disk.percent)
            for name in monitoring.services:
                if (last := monitoring.health.last(name)) is not None:
                    self.up.labels(name).set(1 if last.status == "up" else 0)
                    if last.latency_ms is not None:
                        self.service_latency.labels(name).set(last.latency_ms / 1000)

    async def _governance(self, gate: GovernanceGate, agent: str) -> None:
        record = await gate.agent(Caller(agent))
        self.score.labels(agent).set(record.score)
        current = gate.level(record)
        for level in PERMISSION_LEVELS:
            self.level.labels(agent, level).set(1 if level == current else 0)
        used, limits = await gate.ledger.usage(record.id), gate.limits
        for window, unit, spent, limit in budget_windows(used, limits):
            self.budget.labels(agent, window, unit).set(spent / limit if limit else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
