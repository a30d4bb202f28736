"""The seed's AlertManagementTool: rules, active alerts, acknowledgement, silences, history."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence

from ops_agent.errors import ToolRetry
from ops_agent.tools.alerts.condition import ConditionSources, check_condition, parse_condition
from ops_agent.tools.alerts.evaluator import AlertEvaluator
from ops_agent.tools.alerts.models import PRIORITIES, Alert, AlertRule, HistoryEvent, Remediation, Silence
from ops_agent.tools.alerts.store import AlertStore

__all__ = ["AlertManagementTool"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.I)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class AlertManagementTool:
    def __init__(
        self,
        store: AlertStore,
        evaluator: AlertEvaluator,
        sources: ConditionSources,
        *,
        known_services: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.evaluator = evaluator
        self.sources = sources
        self.known_services = list(known_services)
        self.clock = clock

    # -- rules ---------------------------------------------------------------------------------------------

    async def create_alert_rule(
        self,
        name: str,
        condition: str,
        severity: str = "medium",
        channels: Sequence[str] = (),
        *,
        repeat_interval: str | None = None,
        remediation: Remediation | None = None,
        created_by: str = "",
    ) -> AlertRule:
        """A new rule, checked now: its syntax, and that the series and services it reads exist."""
        if not _NAME.match(name):
            raise ToolRetry(f"name: {name!r} must be 1-100 letters, digits, '_', '.', '-', starting with a letter or digit")
        if await self.store.rule(name) is not None:
            raise ToolRetry(f"name: a rule called {name!r} exists; update or delete it instead")
        rule = AlertRule(
            id=uuid.uuid4().hex[:12], name=name, condition="", severity=_severity(severity), created_by=created_by,
            created_at=self.clock(), repeat_interval_s=0.0,
        )
        rule = await self._checked(rule, condition=condition, channels=channels, repeat_interval=repeat_interval,
                                   remediation=remediation)
        if remediation is not None:
            rule = rule.model_copy(update={"remediation_by": created_by})
        await self.store.save_rule(rule)
        return rule

    async def update_alert_rule(
        self,
        name: str,
        *,
        condition: str | None = None,
        severity: str | None = None,
        channels: Sequence[str] | None = None,
        repeat_interval: str | None = None,
        remediation: Remediation | None = None,
        enabled: bool | None = None,
        by: str = "",
    ) -> AlertRule:
        rule = await self._rule(name)
        if remediation is not None:
            rule = rule.model_copy(update={"remediation_by": by})
        if severity is not None:
            rule = rule.model_copy(update={"severity": _severity(severity)})
        if enabled is not None:
            rule = rule.model_copy(update={"enabled": enabled})
        rule = await self._checked(
            rule, condition=condition if condition is not None else rule.condition,
            channels=channels if channels is not None else rule.channels,
            repeat_interval=repeat_interval, remediation=remediation if remediation is not None else rule.remediation,
        )
        await self.store.save_rule(rule)
        for alert in await self._alerts_of(rule):
            if not rule.enabled:
                await self._close(alert, "rule disabled")
            elif alert.severity != rule.severity:  # its priority follows the rule (filters, routing, escalation)
                alert.severity = rule.severity
                await self.store.save_alert(alert)
        return rule

    async def delete_alert_rule(self, name: str) -> AlertRule:
        rule = await self._rule(name)
        await self.store.delete_rule(rule.id)
        for alert in await self._alerts_of(rule):  # nothing would ever evaluate them again
            await self._close(alert, "rule deleted")
        return rule

    async def _alerts_of(self, rule: AlertRule) -> list[Alert]:
        return [a for a in await self.store.active_alerts() if a.rule_id == rule.id]

    async def _close(self, alert: Alert, reason: str) -> None:
        alert.state, alert.resolved_at = "resolved", self.clock()
        await self.store.save_alert(alert)
        await self.store.record(alert.id, alert.rule_name, alert.resolved_at, "closed", {"reason": reason})

    async def list_alert_rules(self) -> list[AlertRule]:
        return await self.store.rules()

    async def _rule(self, name: str) -> AlertRule:
        rule = await self.store.rule(name)
        if rule is None:
            known = ", ".join(r.name for r in await self.store.rules()) or "none defined"
            raise ToolRetry(f"rule: no rule called {name!r} (rules: {known})")
        return rule

    async def _checked(
        self,
        rule: AlertRule,
        *,
        condition: str,
        channels: Sequence[str],
        repeat_interval: str | None,
        remediation: Remediation | None,
    ) -> AlertRule:
        parsed = parse_condition(condition)  # QueryError with the position on bad syntax
        problems = await check_condition(parsed, self.sources, known_services=set(self.known_services))
        if problems:
            raise ToolRetry("condition: " + "; ".join(problems))
        available = self.evaluator.available_channels
        unknown = [c for c in channels if c not in available]
        if unknown:
            raise ToolRetry(
                f"channels: {', '.join(map(repr, unknown))} not configured (configured: {', '.join(available) or 'none'})"
            )
        if remediation is not None:
            _check_remediation(remediation)
        repeat_s = _duration("repeat_interval", repeat_interval) if repeat_interval else rule.repeat_interval_s
        return rule.model_copy(update={
            "condition": condition.strip(), "for_s": parsed.for_s, "channels": list(dict.fromkeys(channels)),
            "repeat_interval_s": repeat_s, "remediation": remediation,
        })

    # -- alerts ----------------------------------------------------------------------------------------------

    async def get_active_alerts(self, severity: str | None = None) -> list[Alert]:
        alerts = await self.store.active_alerts()
        return [a for a in alerts if severity is None or a.severity == _severity(severity)]

    async def state_counts(self) -> dict[str, int]:
        """Active alerts by state, acknowledged ones apart (for /metrics)."""
        counts: dict[str, int] = {}
        for alert in await self.store.active_alerts():
            state = "acknowledged" if alert.acknowledged_at is not None else alert.state
            counts[state] = counts.get(state, 0) + 1
        return counts

    async def acknowledge_alert(self, alert_id: str, by: str = "") -> Alert:
        """Stop repeats and escalation of an active alert; it still resolves on its own."""
        alert = await self._active(alert_id)
        if alert.acknowledged_at is None:
            alert.acknowledged_by, alert.acknowledged_at = by or "unknown", self.clock()
            await self.store.save_alert(alert)
            await self.store.record(alert.id, alert.rule_name, alert.acknowledged_at, "acknowledged", {"by": by})
        return alert

    async def resolve_alert(self, alert_id: str, by: str = "") -> Alert:
        """Close an active alert by hand (it opens again if its condition still holds at the next cycle)."""
        alert = await self._active(alert_id)
        alert.state, alert.resolved_at = "resolved", self.clock()
        await self.store.save_alert(alert)
        await self.store.record(alert.id, alert.rule_name, alert.resolved_at, "resolved", {"by": by, "manual": True})
        return alert

    async def _active(self, alert_id: str) -> Alert:
        alert = await self.store.alert(alert_id)
        if alert is None:
            raise ToolRetry(f"alert_id: no alert {alert_id!r}; get_active_alerts lists the active ones")
        if alert.state == "resolved":
            raise ToolRetry(f"alert_id: alert {alert_id} is already resolved")
        return alert

    # -- silences and history ----------------------------------------------------------------------------------

    async def silence(
        self, matchers: dict[str, str], duration: str, *, comment: str = "", by: str = ""
    ) -> Silence:
        if not matchers:
            raise ToolRetry("matchers: give at least one, e.g. {\"rule\": \"high_error_rate\"} or {\"severity\": \"low\"}")
        if unknown := sorted(set(matchers) - {"rule", "severity"}):
            raise ToolRetry(f"matchers: {', '.join(unknown)} can match nothing; use rule (a name, * allowed) or severity")
        now = self.clock()
        silence = Silence(
            id=uuid.uuid4().hex[:12], matchers=dict(matchers), starts_at=now,
            ends_at=now + _duration("duration", duration), created_by=by, comment=comment,
        )
        await self.store.save_silence(silence)
        return silence

    async def list_silences(self, *, active_only: bool = True) -> list[Silence]:
        return await self.store.silences(now=self.clock() if active_only else None)

    async def expire_silence(self, silence_id: str) -> bool:
        return await self.store.delete_silence(silence_id)

    async def history(
        self, *, alert_id: str | None = None, rule: str | None = None, since_s: float | None = None, limit: int = 100
    ) -> list[HistoryEvent]:
        since = self.clock() - since_s if since_s is not None else None
        return await self.store.history(alert_id=alert_id, rule=rule, since=since, limit=limit)

    async def remediation_stats(self, since_s: float = 30 * 86400) -> dict[str, float | int | None]:
        """Auto-fix rate and MTTR of remediated alerts (the seed's success metrics)."""
        events = await self.store.history(since=self.clock() - since_s, limit=100_000)
        recovered = [e for e in events if e.event == "recovered"]
        automatic = [e for e in recovered if not e.detail.get("human_needed")]
        times = [float(e.detail["time_to_recover_s"]) for e in recovered if "time_to_recover_s" in e.detail]
        return {
            "remediated": len(recovered),
            "fixed_without_a_person": len(automatic),
            "auto_fix_rate": round(len(automatic) / len(recovered), 4) if recovered else None,
            "mttr_s": round(sum(times) / len(times), 3) if times else None,
        }


def _severity(value: str) -> str:
    if value not in PRIORITIES:
        raise ToolRetry(f"severity: {value!r} is not one of {', '.join(PRIORITIES)}")
    return value


def _duration(field: str, value: str) -> float:
    match = _DURATION.match(value)
    if match is None:
        raise ToolRetry(f"{field}: {value!r} is not a duration such as 30m, 4h or 1d")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2).lower()]
    if not 1 <= seconds <= 366 * 86400:
        raise ToolRetry(f"{field}: {value!r} must be between 1s and 366d")
    return seconds


def _check_remediation(remediation: Remediation) -> None:
    needed = {"restart": "command", "task": "task"}.get(remediation.action)
    if needed and not getattr(remediation, needed):
        raise ToolRetry(f"remediation.{needed}: required for the {remediation.action} action")
