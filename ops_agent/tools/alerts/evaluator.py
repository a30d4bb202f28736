"""The evaluator: every interval, each rule's condition is judged and its alert moves through its states.

    (condition holds) ──▶ pending ──(held `for`)──▶ firing ──(no longer holds)──▶ resolved
                              └──(stops holding first)──▶ cleared (never notified)

- One active alert per rule (its fingerprint), however many cycles the condition holds: deduplication.
- A firing alert notifies the channels of its priority (the routing policy) plus the rule's own; alerts
  firing in the same cycle to the same channels go out as one message (grouping).
- Unacknowledged, it notifies again every `repeat_interval_s`; acknowledged, it stops. A critical alert
  left unacknowledged for `escalate_after_s` is also sent to the escalation channels, once.
- A silence in force suppresses notifications (the alert is still tracked and recorded).
- No data (a series without points) holds the current state: it neither fires nor resolves.
- A rule with a remediation runs it, governed, when it fires; when the alert resolves, the time to recover
  and whether a person had to step in are recorded (the auto-fix rate and MTTR come from these).
Every transition is written to the history.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ops_agent.tools.alerts.condition import Condition, ConditionSources, evaluate_condition, parse_condition
from ops_agent.tools.alerts.models import Alert, AlertRule, Silence
from ops_agent.tools.alerts.store import AlertStore

__all__ = ["AlertEvaluator", "AlertNotifier", "RoutingPolicy"]

log = logging.getLogger(__name__)

Remediate = Callable[[AlertRule, Alert], Awaitable[tuple[bool, str]]]  # (succeeded, one-line outcome)


class AlertNotifier(Protocol):
    async def notify(self, channels: Sequence[str], *, subject: str, message: str, priority: str, key: str) -> None:
        """Hand a message over for delivery (durably); `key` is stable, so a repeat of it is sent once."""
        ...


@dataclass(frozen=True)
class RoutingPolicy:
    """Which channels each priority pages, how often it repeats, and when a critical alert escalates."""

    channels: Mapping[str, Sequence[str]] = field(
        default_factory=lambda: {"critical": ("slack", "email", "webhook"), "high": ("slack", "email"),
                                 "medium": ("slack",), "low": ()}
    )
    repeat_interval_s: Mapping[str, float] = field(
        default_factory=lambda: {"critical": 1800.0, "high": 3600.0, "medium": 4 * 3600.0, "low": 24 * 3600.0}
    )
    escalate_after_s: float = 900.0
    escalation_channels: Sequence[str] = ("email", "webhook", "slack")

    def route(self, rule: AlertRule, available: Sequence[str]) -> list[str]:
        wanted = [*self.channels.get(rule.severity, ()), *rule.channels]
        return [c for c in dict.fromkeys(wanted) if c in available]


@dataclass
class _Outgoing:
    channels: tuple[str, ...]
    priority: str
    lines: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    alerts: list[tuple[Alert, float | None]] = field(default_factory=list)  # with their last_notified_at before


class AlertEvaluator:
    def __init__(
        self,
        store: AlertStore,
        sources: ConditionSources,
        notifier: AlertNotifier,
        *,
        available_channels: Sequence[str],
        policy: RoutingPolicy | None = None,
        remediate: Remediate | None = None,
        before_cycle: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sources = sources
        self.notifier = notifier
        self.available_channels = list(available_channels)
        self.policy = policy or RoutingPolicy()
        self.remediate = remediate
        self.before_cycle = before_cycle  # e.g. write fresh governance figures for the rules to read
        self.clock = clock
        self._conditions: dict[str, tuple[str, Condition]] = {}
        self._remediations: set[asyncio.Task[None]] = set()
        self._outcomes: dict[str, str] = {}  # alert id -> remediation outcome, taken up by the next cycle
        self._starting: list[tuple[AlertRule, Alert]] = []  # remediations this cycle fired, to start after its saves

    async def run(self, interval_s: float) -> None:
        """Evaluate every `interval_s` until cancelled; a failing cycle is logged and the next one runs."""
        while True:
            started = time.monotonic()
            try:
                await self.cycle(self.clock())
            except Exception:
                log.exception("alert evaluation failed; retrying next cycle")
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))

    async def settle(self) -> None:
        """Wait for the remediations in progress (tests; an orderly shutdown)."""
        while self._remediations:
            await asyncio.gather(*self._remediations, return_exceptions=True)

    async def cycle(self, now: float) -> list[Alert]:
        """One evaluation of every enabled rule; returns the alerts that changed.

        Messages are handed to the outbox before the alerts that sent them are saved: a failed hand-over
        leaves the alert unsent, to be sent next cycle, and a crash in between resends under the same key,
        which the outbox takes once."""
        if self.before_cycle is not None:
            await self.before_cycle(now)
        active = {alert.fingerprint: alert for alert in await self.store.active_alerts()}
        silences = await self.store.silences(now=now)
        outgoing: dict[tuple[tuple[str, ...], str], _Outgoing] = {}
        changed = []
        for rule in await self.store.rules():
            if not rule.enabled:
                continue
            alert = await self._judge(rule, active.get(_fingerprint(rule)), now, silences, outgoing)
            if alert is not None:
                changed.append(alert)
        for message in outgoing.values():
            if not await self._send(message):
                for alert, previous in message.alerts:
                    alert.notifications -= 1
                    alert.last_notified_at = previous
        for alert in changed:
            await self._save(alert)
        # A remediation reads the store (which alerts fire, since when): it starts after the cycle saved them.
        starting, self._starting = self._starting, []
        for rule, alert in starting:
            self._start_remediation(rule, alert)
        return changed

    async def _save(self, alert: Alert) -> None:
        """Save the cycle's view of an alert, keeping what people did meanwhile (an acknowledgement, a
        resolution by hand): the cycle read the alert before it spent its time evaluating."""
        stored = await self.store.alert(alert.id)
        if stored is not None:
            if stored.acknowledged_at is not None and alert.acknowledged_at is None:
                alert.acknowledged_by, alert.acknowledged_at = stored.acknowledged_by, stored.acknowledged_at
            if stored.state == "resolved" and alert.state != "resolved":
                return  # resolved by hand while the cycle ran: that stands
        await self.store.save_alert(alert)

    async def _judge(
        self,
        rule: AlertRule,
        alert: Alert | None,
        now: float,
        silences: Sequence[Silence],
        outgoing: dict[tuple[tuple[str, ...], str], _Outgoing],
    ) -> Alert | None:
        try:
            result = await evaluate_condition(self._condition(rule), self.sources, now=now)
        except Exception as exc:
            log.warning("rule %s could not be evaluated: %s", rule.name, exc)
            return None
        took_outcome = alert is not None and alert.id in self._outcomes
        if took_outcome:
            alert.remediation = self._outcomes.pop(alert.id)
        if result.breached is None:
            return alert if took_outcome else None  # no data: hold whatever state the alert is in
        if not result.breached:
            if alert is None:
                return None
            if alert.state == "pending":
                alert.state, alert.resolved_at = "resolved", now
                await self._record(alert, now, "cleared", summary=result.summary)
                return alert
            alert.state, alert.resolved_at, alert.value, alert.summary = "resolved", now, result.value, result.summary
            await self._record(alert, now, "resolved", summary=result.summary, firing_s=round(now - (alert.fired_at or now), 3))
            if alert.remediation is not None and alert.remediation != "running":
                await self._record_recovery(alert)  # still running: the remediation records it when done
            if alert.notifications and not alert.silenced:
                self._queue(outgoing, rule, alert, f"RESOLVED {rule.name}: {result.summary}", "resolved")
            return alert

        if alert is None:
            alert = Alert(
                id=f"{_fingerprint(rule)[:10]}-{int(now * 1000):x}", fingerprint=_fingerprint(rule), rule_id=rule.id,
                rule_name=rule.name, severity=rule.severity, state="pending", started_at=now,
            )
            await self._record(alert, now, "pending", summary=result.summary)
        alert.value, alert.summary = result.value, result.summary
        silenced = any(_matches(s, rule) for s in silences)
        if alert.state == "pending":
            if now - alert.started_at < rule.for_s:
                return alert
            alert.state, alert.fired_at, alert.silenced = "firing", now, silenced
            await self._record(alert, now, "firing", summary=result.summary)
            if silenced:
                await self._record(alert, now, "silenced")
            else:
                self._queue(outgoing, rule, alert, f"FIRING {rule.name}: {result.summary}", "firing")
            if rule.remediation is not None and self.remediate is not None:
                alert.remediation = "running"
                self._starting.append((rule, alert))  # once the cycle has saved it as firing
            return alert
        # firing, still holding: repeat and escalate while nobody has acknowledged it
        alert.silenced = silenced
        if silenced or alert.acknowledged_at is not None:
            return alert
        if alert.notifications == 0:  # it began firing under a silence that has ended: send it now
            self._queue(outgoing, rule, alert, f"FIRING {rule.name}: {result.summary}", "firing")
            return alert
        repeat_s = rule.repeat_interval_s or self.policy.repeat_interval_s.get(rule.severity, 3600.0)
        if alert.last_notified_at is not None and now - alert.last_notified_at >= repeat_s:
            self._queue(outgoing, rule, alert, f"STILL FIRING {rule.name}: {result.summary}", "repeated")
            await self._record(alert, now, "repeated")
        if (
            rule.severity == "critical"
            and not alert.escalated
            and now - (alert.fired_at or now) >= self.policy.escalate_after_s
        ):
            alert.escalated = True
            channels = [c for c in self.policy.escalation_channels if c in self.available_channels]
            self._queue(
                outgoing, rule, alert, f"ESCALATED {rule.name}: unacknowledged for "
                f"{int(now - (alert.fired_at or now))} s: {result.summary}", "escalated", channels=channels,
            )
            await self._record(alert, now, "escalated", channels=channels)
        return alert

    def _condition(self, rule: AlertRule) -> Condition:
        cached = self._conditions.get(rule.id)
        if cached is None or cached[0] != rule.condition:
            cached = (rule.condition, parse_condition(rule.condition))
            self._conditions[rule.id] = cached
        return cached[1]

    def _queue(
        self,
        outgoing: dict[tuple[tuple[str, ...], str], _Outgoing],
        rule: AlertRule,
        alert: Alert,
        line: str,
        kind: str,
        *,
        channels: Sequence[str] | None = None,
    ) -> None:
        targets = tuple(channels if channels is not None else self.policy.route(rule, self.available_channels))
        if not targets:
            return
        message = outgoing.setdefault((targets, rule.severity), _Outgoing(targets, rule.severity))
        message.lines.append(line)
        message.keys.append(f"{alert.id}:{kind}:{alert.notifications}")
        message.names.append(rule.name)
        message.alerts.append((alert, alert.last_notified_at))
        alert.notifications += 1
        alert.last_notified_at = self.clock()

    async def _send(self, message: _Outgoing) -> bool:
        count = len(message.lines)
        subject = f"[{message.priority.upper()}] " + (
            message.lines[0] if count == 1 else f"{count} alerts: {', '.join(dict.fromkeys(message.names))}"
        )
        key = hashlib.sha256("|".join(sorted(message.keys)).encode()).hexdigest()[:32]
        try:
            await self.notifier.notify(
                message.channels, subject=subject[:200], message="\n".join(message.lines),
                priority=message.priority, key=key,
            )
        except Exception:
            log.exception("could not hand %d alert notification(s) to %s; next cycle retries", count,
                          ", ".join(message.channels))
            return False
        return True

    def _start_remediation(self, rule: AlertRule, alert: Alert) -> None:
        assert self.remediate is not None and rule.remediation is not None

        async def remediate() -> None:
            started = self.clock()
            await self._record(alert, started, "remediation_started", action=rule.remediation.action)
            try:
                ok, outcome = await self.remediate(rule, alert)
            except Exception as exc:  # a refusal by the gate lands here too: recorded, never raised
                ok, outcome = False, f"{type(exc).__name__}: {getattr(exc, 'public_message', 'failed')}"
            result = f"{'succeeded' if ok else 'failed'}: {outcome}"
            await self._record(alert, self.clock(), "remediation_done", ok=ok, outcome=outcome,
                               duration_s=round(self.clock() - started, 3))
            stored = await self.store.alert(alert.id)
            if stored is not None and stored.state == "resolved":  # it recovered while the remediation ran
                stored.remediation = result
                await self.store.save_alert(stored)
                await self._record_recovery(stored)
            else:  # still active: the cycle owns the row (it may be saving it right now), so hand it over
                self._outcomes[alert.id] = result

        task = asyncio.create_task(remediate(), name=f"remediate:{rule.name}")
        self._remediations.add(task)
        task.add_done_callback(self._remediations.discard)

    async def _record_recovery(self, alert: Alert) -> None:
        assert alert.remediation is not None and alert.resolved_at is not None
        await self._record(
            alert, alert.resolved_at, "recovered",
            time_to_recover_s=round(alert.resolved_at - (alert.fired_at or alert.resolved_at), 3),
            human_needed=alert.acknowledged_at is not None or not alert.remediation.startswith("succeeded"),
        )

    async def _record(self, alert: Alert, at: float, event: str, **detail: Any) -> None:
        await self.store.record(alert.id, alert.rule_name, at, event, detail)


def _fingerprint(rule: AlertRule) -> str:
    labels = ",".join(f"{k}={v}" for k, v in sorted(rule.labels.items()))
    return hashlib.sha256(f"{rule.id}|{labels}".encode()).hexdigest()


def _matches(silence: Silence, rule: AlertRule) -> bool:
    for key, wanted in silence.matchers.items():
        actual = {"rule": rule.name, "severity": rule.severity}.get(key, rule.labels.get(key))
        if actual is None or not fnmatch.fnmatchcase(actual, wanted):
            return False
    return True
