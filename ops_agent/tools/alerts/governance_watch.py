"""The seed's governance monitoring as ordinary alert rules: reputation below 70, budget at 80% and 95%,
permission-denied events. Governance figures are written to the series each evaluation cycle, and four
built-in rules (created when missing; edit or disable them like any other) read them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ops_agent.errors import OpsAgentError
from ops_agent.governance import AuditRecord, Caller, GovernanceGate
from ops_agent.governance.ledger import budget_windows
from ops_agent.tools.alerts.alert_management_tool import AlertManagementTool
from ops_agent.tools.monitoring.series import SeriesStore

__all__ = ["BUILT_IN_RULES", "GovernanceWatch"]

log = logging.getLogger(__name__)

# name, condition, severity: the seed's thresholds
BUILT_IN_RULES = (
    ("governance_reputation_low", "last(governance_reputation_score[10m]) < 70", "high"),
    ("governance_budget_80", "max(governance_budget_used_percent[10m]) >= 80", "medium"),
    ("governance_budget_95", "max(governance_budget_used_percent[10m]) >= 95", "critical"),
    ("governance_permission_denied", "sum(governance_permissions_denied[5m]) > 0", "medium"),
)
# Built-in conditions replaced since: a rule still holding one is moved to today's. A counter read with
# increase() fired falsely whenever another process (a one-shot CLI command) wrote its own count from 0.
_REPLACED = {"governance_permission_denied": "increase(governance_permission_denied_total[5m]) > 0"}


class GovernanceWatch:
    def __init__(
        self, gate: GovernanceGate, series: SeriesStore, agent: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.gate = gate
        self.series = series
        self.agent = agent
        self.clock = clock
        self.denied = 0

    def observe(self, record: AuditRecord) -> None:
        """A gate observer: counts permission refusals (of every agent) until the next sample."""
        if record.decision == "denied_permission":
            self.denied += 1

    async def sample(self, now: float | None = None) -> None:
        """Write the governance figures of this agent into the series (nothing in degraded mode)."""
        if self.gate.degraded:
            return
        now = self.clock() if now is None else now
        try:
            record = await self.gate.agent(Caller(self.agent))
            used, limits = await self.gate.ledger.usage(record.id), self.gate.limits
        except OpsAgentError as exc:
            log.warning("governance figures unavailable: %s", exc.public_message)
            return
        labels = {"agent": self.agent}
        samples = [("governance_reputation_score", labels, now, float(record.score))]
        for window, unit, spent, limit in budget_windows(used, limits):
            percent = 100.0 * spent / limit if limit else 0.0
            samples.append(("governance_budget_used_percent", {**labels, "window": window, "unit": unit}, now, percent))
        # Refusals since the last sample, not a running total: sum() over a window then counts exactly, whichever
        # processes wrote into the shared series.
        denied, self.denied = self.denied, 0
        samples.append(("governance_permissions_denied", {}, now, float(denied)))
        try:
            await self.series.record_many(samples)
        except BaseException:
            self.denied += denied  # not written: counted again next time
            raise

    async def install_rules(self, tool: AlertManagementTool) -> None:
        """Create the built-in rules that are missing (after a first sample, so their series exist)."""
        if self.gate.degraded:
            return
        await self.sample()
        for name, condition, severity in BUILT_IN_RULES:
            rule = await tool.store.rule(name)
            if rule is None:
                await tool.create_alert_rule(name, condition, severity, created_by="ops-agent (built in)")
            elif rule.condition == _REPLACED.get(name):
                await tool.update_alert_rule(name, condition=condition)
