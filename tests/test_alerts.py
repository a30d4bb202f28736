"""Alert rules and the evaluator on a real SQLite store and real series: states, dedup, grouping, repeats,
acknowledgement, escalation, silences, no data, remediation, history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from ops_agent.errors import QueryError, ToolRetry
from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.alerts.alert_management_tool import AlertManagementTool
from ops_agent.tools.alerts.evaluator import AlertEvaluator, RoutingPolicy
from ops_agent.tools.alerts.models import Alert, AlertRule, Remediation
from ops_agent.tools.alerts.store import SqliteAlertStore
from ops_agent.tools.monitoring.series import MemorySeries

T0 = 1_800_000_000.0


@dataclass
class Sources:
    """The condition sources over real series; health and logs as plain data (the seam's own shape)."""

    series: MemorySeries = field(default_factory=MemorySeries)
    states: dict[str, str] = field(default_factory=dict)

    async def health(self, service: str) -> str | None:
        return self.states.get(service)

    async def log_count(self, *, severity, service, query, window_s) -> int:
        return 0

    async def log_anomalies(self, *, service, window_s) -> list[str]:
        return []


@dataclass
class Sent:
    channels: tuple[str, ...]
    subject: str
    message: str
    priority: str
    key: str


@dataclass
class Notifier:
    """Records what would be handed to the notification service (which has its own tests with real sinks)."""

    sent: list[Sent] = field(default_factory=list)

    async def notify(self, channels: Sequence[str], *, subject: str, message: str, priority: str, key: str) -> None:
        self.sent.append(Sent(tuple(channels), subject, message, priority, key))


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Bench:
    tool: AlertManagementTool
    evaluator: AlertEvaluator
    sources: Sources
    notifier: Notifier
    clock: Clock
    remediations: list[str]

    async def point(self, name: str, value: float, **labels: str) -> None:
        await self.sources.series.record(name, value, labels, self.clock.now)

    async def cycle(self, advance_s: float = 0.0) -> list[Alert]:
        self.clock.now += advance_s
        return await self.evaluator.cycle(self.clock.now)


@pytest.fixture
async def bench(tmp_path) -> AsyncIterator[Bench]:
    db = SqliteDatabase(tmp_path / "alerts.db")
    await db.open()
    store = SqliteAlertStore(db)
    await store.migrate()
    sources, notifier, clock, remediations = Sources(), Notifier(), Clock(), []

    async def remediate(rule: AlertRule, alert: Alert) -> tuple[bool, str]:
        remediations.append(rule.name)
        return rule.remediation.action != "task", f"ran {rule.remediation.action}"

    policy = RoutingPolicy(escalate_after_s=600)
    evaluator = AlertEvaluator(
        store, sources, notifier, available_channels=["slack", "email", "webhook"], policy=policy,
        remediate=remediate, clock=clock,
    )
    tool = AlertManagementTool(store, evaluator, sources, known_services=["api"], clock=clock)
    yield Bench(tool, evaluator, sources, notifier, clock, remediations)
    await db.close()


async def test_a_rule_goes_pending_then_firing_after_its_for_duration_then_resolves(bench):
    await bench.point("cpu_percent", 50)
    await bench.tool.create_alert_rule("hot_cpu", "cpu_percent > 90 for 5m", "high", ["webhook"])
    await bench.point("cpu_percent", 95)
    [alert] = await bench.cycle()
    assert alert.state == "pending" and bench.notifier.sent == []
    bench.clock.now += 240
    await bench.point("cpu_percent", 96)
    await bench.cycle()
    assert (await bench.tool.get_active_alerts())[0].state == "pending"
    bench.clock.now += 61
    await bench.point("cpu_percent", 97)
    [firing] = await bench.cycle()
    assert firing.state == "firing" and firing.id == alert.id  # the same alert: deduplicated
    [sent] = bench.notifier.sent
    assert sent.channels == ("slack", "email", "webhook") and sent.priority == "high"
    assert sent.subject.startswith("[HIGH] FIRING hot_cpu") and "97" in sent.message
    bench.clock.now += 10
    await bench.point("cpu_percent", 40)
    [resolved] = await bench.cycle()
    assert resolved.state == "resolved" and await bench.tool.get_active_alerts() == []
    assert bench.notifier.sent[-1].subject.startswith("[HIGH] RESOLVED hot_cpu")
    events = [e.event for e in reversed(await bench.tool.history(rule="hot_cpu"))]
    assert events == ["pending", "firing", "resolved"]


async def test_a_condition_that_stops_before_for_is_cleared_without_a_page(bench):
    await bench.point("cpu_percent", 95)
    await bench.tool.create_alert_rule("hot_cpu", "cpu_percent > 90 for 5m", "critical")
    await bench.cycle()
    bench.clock.now += 60
    await bench.point("cpu_percent", 10)
    await bench.cycle()
    assert bench.notifier.sent == [] and await bench.tool.get_active_alerts() == []
    assert [e.event for e in reversed(await bench.tool.history())] == ["pending", "cleared"]


async def test_no_data_neither_fires_nor_resolves(bench):
    await bench.point("queue_depth", 500)
    await bench.tool.create_alert_rule("deep_queue", "last(queue_depth[1m]) > 100", "medium")
    assert (await bench.cycle())[0].state == "firing"
    await bench.cycle(600)  # the series went quiet: no points in the window
    assert (await bench.tool.get_active_alerts())[0].state == "firing"
    assert [e.event for e in await bench.tool.history()] == ["firing", "pending"]


async def test_repeats_until_acknowledged_and_a_critical_alert_escalates(bench):
    await bench.point("error_rate", 12)
    await bench.tool.create_alert_rule("high_error_rate", "error_rate > 5%", "critical", ["email", "slack"])
    await bench.cycle()
    assert len(bench.notifier.sent) == 1
    bench.clock.now += 600
    await bench.point("error_rate", 12)
    await bench.cycle()  # escalation is due at 600 s, before the 1800 s repeat
    escalated = bench.notifier.sent[-1]
    assert escalated.subject.startswith("[CRITICAL] ESCALATED high_error_rate")
    bench.clock.now += 1800  # a full repeat interval after the last notification (the escalation)
    await bench.point("error_rate", 13)
    await bench.cycle()
    assert bench.notifier.sent[-1].subject.startswith("[CRITICAL] STILL FIRING")
    [alert] = await bench.tool.get_active_alerts()
    await bench.tool.acknowledge_alert(alert.id, by="oncall")
    count = len(bench.notifier.sent)
    bench.clock.now += 3600
    await bench.point("error_rate", 14)
    await bench.cycle()
    assert len(bench.notifier.sent) == count  # acknowledged: no more repeats
    events = {e.event for e in await bench.tool.history(alert_id=alert.id)}
    assert {"firing", "escalated", "repeated", "acknowledged"} <= events


async def test_alerts_firing_together_to_the_same_channels_go_out_as_one_message(bench):
    for name in ("disk_a", "disk_b"):
        await bench.point(name, 99)
        await bench.tool.create_alert_rule(name, f"{name} > 90", "medium")
    await bench.cycle()
    [sent] = bench.notifier.sent
    assert sent.subject == "[MEDIUM] 2 alerts: disk_a, disk_b" and sent.channels == ("slack",)
    assert sent.message.count("FIRING") == 2


async def test_a_silence_suppresses_notifications_but_keeps_the_alert(bench):
    await bench.tool.silence({"rule": "noisy*"}, "1h", comment="maintenance", by="oncall")
    await bench.point("noisy_metric", 10)
    await bench.tool.create_alert_rule("noisy_rule", "noisy_metric > 1", "high")
    [alert] = await bench.cycle()
    assert alert.state == "firing" and alert.silenced and bench.notifier.sent == []
    assert "silenced" in [e.event for e in await bench.tool.history()]
    with pytest.raises(ToolRetry, match="duration"):
        await bench.tool.silence({"rule": "x"}, "forever")


async def test_remediation_runs_and_its_recovery_is_measured(bench):
    await bench.point("api_5xx", 50)
    await bench.tool.create_alert_rule(
        "api_broken", "api_5xx > 10", "critical", remediation=Remediation(action="rollback", project="web")
    )
    await bench.cycle()
    await bench.evaluator.settle()
    assert bench.remediations == ["api_broken"]
    bench.clock.now += 42
    await bench.point("api_5xx", 0)
    await bench.cycle()
    stats = await bench.tool.remediation_stats()
    assert stats == {"remediated": 1, "fixed_without_a_person": 1, "auto_fix_rate": 1.0, "mttr_s": 42.0}


async def test_creating_a_rule_checks_everything_it_can_now(bench):
    await bench.point("cpu_percent", 1)
    with pytest.raises(QueryError):
        await bench.tool.create_alert_rule("bad", "cpu_percent >", "high")
    with pytest.raises(ToolRetry, match="condition: .*no_such_series"):
        await bench.tool.create_alert_rule("ghost", "no_such_series > 1", "high")
    with pytest.raises(ToolRetry, match="channels: 'pager' not configured"):
        await bench.tool.create_alert_rule("x", "cpu_percent > 1", "high", ["pager"])
    with pytest.raises(ToolRetry, match="severity: 'urgent' is not one of"):
        await bench.tool.create_alert_rule("x", "cpu_percent > 1", "urgent")
    await bench.tool.create_alert_rule("x", "cpu_percent > 1", "low")
    with pytest.raises(ToolRetry, match="exists"):
        await bench.tool.create_alert_rule("x", "cpu_percent > 2", "low")
    updated = await bench.tool.update_alert_rule("x", condition="cpu_percent > 3 for 1m", severity="high")
    assert (updated.condition, updated.for_s, updated.severity) == ("cpu_percent > 3 for 1m", 60.0, "high")
    await bench.tool.delete_alert_rule("x")
    with pytest.raises(ToolRetry, match="no rule called 'x'"):
        await bench.tool.delete_alert_rule("x")


async def test_an_alert_that_fired_under_a_silence_is_sent_when_the_silence_ends(bench):
    silence = await bench.tool.silence({"rule": "deep"}, "1h")
    await bench.point("q1", 500)
    await bench.tool.create_alert_rule("deep", "q1 > 100", "high")
    await bench.cycle()
    assert bench.notifier.sent == []
    await bench.tool.expire_silence(silence.id)
    bench.clock.now += 5
    await bench.point("q1", 500)
    await bench.cycle()
    assert [s.subject for s in bench.notifier.sent] == ["[HIGH] FIRING deep: q1 = 500 > 100"]


async def test_an_acknowledgement_made_during_a_cycle_is_kept(bench):
    await bench.point("q1", 500)
    await bench.tool.create_alert_rule("deep", "q1 > 100", "high", repeat_interval="1s")
    [alert] = await bench.cycle()
    bench.clock.now += 5
    await bench.point("q1", 500)
    active = {a.fingerprint: a for a in await bench.evaluator.store.active_alerts()}  # what a cycle reads first
    await bench.tool.acknowledge_alert(alert.id, by="oncall")  # ... someone acknowledges meanwhile ...
    changed = await bench.evaluator._judge(
        (await bench.tool.list_alert_rules())[0], active[alert.fingerprint], bench.clock.now, [], {}
    )
    await bench.evaluator._save(changed)  # ... and the cycle saves its view
    stored = await bench.evaluator.store.alert(alert.id)
    assert stored.acknowledged_by == "oncall"


async def test_a_failed_hand_over_is_retried_next_cycle(bench):
    class Flaky:
        def __init__(self, inner):
            self.inner, self.failures = inner, 1

        async def notify(self, channels, **kwargs):
            if self.failures:
                self.failures -= 1
                raise OSError("database is locked")
            await self.inner.notify(channels, **kwargs)

    bench.evaluator.notifier = Flaky(bench.notifier)
    await bench.point("q1", 500)
    await bench.tool.create_alert_rule("deep", "q1 > 100", "high")
    [alert] = await bench.cycle()
    assert alert.notifications == 0 and bench.notifier.sent == []
    bench.clock.now += 5
    await bench.point("q1", 500)
    await bench.cycle()
    assert [s.subject for s in bench.notifier.sent] == ["[HIGH] FIRING deep: q1 = 500 > 100"]


async def test_deleting_or_disabling_a_rule_closes_its_alert_and_severity_follows_the_rule(bench):
    for name in ("r3", "r4", "r5"):
        await bench.point(f"m_{name}", 99)
        await bench.tool.create_alert_rule(name, f"m_{name} > 90", "low")
    await bench.cycle()
    await bench.tool.delete_alert_rule("r3")
    await bench.tool.update_alert_rule("r4", enabled=False)
    await bench.tool.update_alert_rule("r5", severity="critical")
    active = await bench.tool.get_active_alerts()
    assert [(a.rule_name, a.severity) for a in active] == [("r5", "critical")]
    closed = [e.detail["reason"] for e in await bench.tool.history() if e.event == "closed"]
    assert sorted(closed) == ["rule deleted", "rule disabled"]
    with pytest.raises(ToolRetry, match="can match nothing"):
        await bench.tool.silence({"team": "db"}, "1h")


async def test_a_remediation_that_ends_after_the_recovery_is_counted_as_automatic(bench):
    import asyncio

    release = asyncio.Event()

    async def slow(rule, alert):
        await release.wait()
        return True, "rolled back"

    bench.evaluator.remediate = slow
    await bench.point("api_5xx", 50)
    await bench.tool.create_alert_rule("api_broken", "api_5xx > 10", "critical",
                                       remediation=Remediation(action="rollback"))
    await bench.cycle()
    bench.clock.now += 30
    await bench.point("api_5xx", 0)
    await bench.cycle()  # recovered while the remediation still runs
    release.set()
    await bench.evaluator.settle()
    stats = await bench.tool.remediation_stats()
    assert stats["auto_fix_rate"] == 1.0 and stats["mttr_s"] == 30.0
    assert bench.evaluator._outcomes == {}
