"""The Redis event streams in the alert pipeline, against a real redis-server and the real notification sinks:
a task dead-lettered by the queue pages with its id, budget warnings of another agent on the shared ledger
raise the budget rules (this agent's own do not raise them twice), a restart neither replays nor loses events,
and a Redis outage costs one warning while every other rule is still evaluated."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio
import yaml

from ops_agent.config import load_settings
from ops_agent.governance.ledger import BudgetLimits
from ops_agent.governance.redis_ledger import RedisCostLedger
from ops_agent.services import Services, open_services
from ops_agent.tools.alerts.event_watch import BUDGET_WARNINGS, DEAD_LETTERED, EVENT_RULES
from ops_agent.worker import TaskQueue
from ops_agent.worker.keys import QueueKeys
from sandbox.notify import NotifySinks, SinksConfig
from tests.conftest import paging_notify_config
from tests.redis_server import redis_server, redis_url, running_redis  # noqa: F401  (session fixtures)

BIG = 10**12
WATCH_LOG = "ops_agent.tools.alerts.event_watch"


@pytest.fixture(scope="module")
def sinks() -> Iterator[NotifySinks]:
    with NotifySinks(SinksConfig(slack_rate_per_s=None)) as running:
        yield running


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}:"


@asynccontextmanager
async def agent_on(tmp_path: Path, sinks: NotifySinks, url: str, prefix: str) -> AsyncIterator[Services]:
    """The running agent on `url` under `prefix`, paging the sinks; cycles are driven by the test."""
    config = {
        "storage": {"path": str(tmp_path / "ops.db")},
        "redis": {"url": url, "prefix": prefix},
        "alerts": {"interval_s": 3600},
        "notify": paging_notify_config(sinks),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    async with open_services(load_settings(tmp_path / "config.yaml", environ={})) as services:
        await first_cycle_done()
        yield services


async def first_cycle_done() -> None:
    """The evaluator's own loop runs one cycle as it starts; wait until it sleeps, so that the cycles the test
    drives never overlap it (two cycles at once could both open an alert for the same rule)."""
    [loop] = [task for task in asyncio.all_tasks() if task.get_name() == "alerts" and not task.done()]
    for _ in range(1000):
        if getattr(loop.get_coro().cr_await, "__qualname__", "") == "sleep":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the evaluator's first cycle did not end")


async def dead_letter(url: str, prefix: str, error: str = "delivered 5 times without finishing") -> str:
    """Submit a task, read it as a worker would, and dead-letter it the way the queue does."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        queue = TaskQueue(client, prefix=prefix)
        task_id = await queue.submit("deploy the web project to production")
        [entry] = await queue.read("test-worker")
        await queue.dead_letter(entry, error)
        return task_id
    finally:
        await client.aclose()


async def active(services: Services) -> set[str]:
    alerts = await services.registry.invoke(services.identity, "get_active_alerts", {})
    return {a.rule_name for a in alerts.alerts if a.state == "firing"}


def texts(sinks: NotifySinks) -> list[str]:
    return [str(m.payload) for m in sinks.messages()]


async def test_the_event_rules_are_built_in(tmp_path, sinks, redis_url, prefix):  # noqa: F811
    async with agent_on(tmp_path, sinks, redis_url, prefix) as agent:
        rules = {r.name: r for r in await agent.alerts.list_alert_rules()}
        for name, condition, severity, _ in EVENT_RULES:
            assert rules[name].condition == condition and rules[name].severity == severity
        assert {"governance_budget_80", "governance_budget_95"} <= set(rules)  # this agent's own, from usage


async def test_a_dead_lettered_task_pages_every_critical_channel_with_its_id(tmp_path, sinks, redis_url, prefix):  # noqa: F811
    sinks.clear(reset_dedup=True)
    async with agent_on(tmp_path, sinks, redis_url, prefix) as agent:
        evaluator = agent.alerts.evaluator
        now = time.time()
        await evaluator.cycle(now)
        assert await active(agent) == set()
        secret = agent.settings.notify.mailtrap_token.get_secret_value()
        task_id = await dead_letter(redis_url, prefix, f"upstream refused the token {secret}")

        await evaluator.cycle(now + 5)
        await evaluator.cycle(now + 10)  # still firing: one page, not two
        assert await active(agent) == {"queue_task_dead_lettered"}
        await sinks.wait_for(3, timeout_s=10)  # critical: slack + e-mail (Mailtrap) + the pager webhook
        by_channel = {m.channel: str(m.payload) for m in sinks.messages()}
        assert set(by_channel) == {"slack", "mailtrap", "webhook"}
        for text in by_channel.values():
            assert "FIRING queue_task_dead_lettered" in text
            assert task_id in text and "dead-lettered after 1 deliveries" in text  # which task, and why
            assert secret not in text
        [alert] = (await agent.registry.invoke(agent.identity, "get_active_alerts", {})).alerts
        assert alert.severity == "critical" and alert.summary == f"sum({DEAD_LETTERED}[5m]) = 1 > 0"

        await evaluator.cycle(now + 400)  # the event left the 5-minute window: zeros since, so it resolves
        assert await active(agent) == set()
        await sinks.wait_for(6, timeout_s=10)
        assert sum("RESOLVED queue_task_dead_lettered" in text for text in texts(sinks)) == 3


async def test_budget_warnings_of_another_agent_raise_the_budget_rules(tmp_path, sinks, redis_url, prefix):  # noqa: F811
    sinks.clear(reset_dedup=True)
    async with agent_on(tmp_path, sinks, redis_url, prefix) as agent:
        evaluator = agent.alerts.evaluator
        now = time.time()
        await evaluator.cycle(now)

        # This agent's own 85%: the usage rule says it; the warning on the stream does not say it again.
        own = await agent.gate.agent(agent.identity)
        await agent.gate.ledger.record(own.id, int(agent.gate.limits.hourly_tokens * 0.85), 0)
        await evaluator.cycle(now + 5)
        assert await active(agent) == {"governance_budget_80"}
        series = agent.alerts.sources.series
        mine = await series.latest(BUDGET_WARNINGS, {"agent": own.id, "threshold": "80", "window": "hour",
                                                     "metric": "tokens"})
        assert [p.value for p in mine.values()] == [1.0]
        assert dict(next(iter(mine)))["local"] == "true"

        # Another agent on the same Redis ledger reserves past 80%, then past 95% of its hourly tokens.
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            ledger = RedisCostLedger(client, prefix=prefix)
            budget = BudgetLimits(hourly_tokens=1000, daily_tokens=BIG, hourly_usd_micros=BIG, daily_usd_micros=BIG)
            first = await ledger.reserve("agent-elsewhere", 850, 0, budget)
            await ledger.settle(first, 850, 0)
            await evaluator.cycle(now + 10)
            assert await active(agent) == {"governance_budget_80", "governance_budget_warning_80"}
            await sinks.wait_for(2, "slack", timeout_s=10)  # medium: Slack only
            [page] = [t for t in texts(sinks) if "FIRING governance_budget_warning_80" in t]
            assert "agent agent-elsewhere: 80% of its hourly tokens budget (850 of 1,000)" in page

            second = await ledger.reserve("agent-elsewhere", 110, 0, budget)
            await ledger.settle(second, 110, 0)
        finally:
            await client.aclose()
        await evaluator.cycle(now + 15)
        assert await active(agent) == {"governance_budget_80", "governance_budget_warning_80",
                                       "governance_budget_warning_95"}
        await sinks.wait_for(5, timeout_s=10)  # + critical: slack, e-mail, webhook
        critical = [m for m in sinks.messages() if "FIRING governance_budget_warning_95" in str(m.payload)]
        assert {m.channel for m in critical} == {"slack", "mailtrap", "webhook"}
        assert all("agent agent-elsewhere: 95% of its hourly tokens budget (960 of 1,000)" in str(m.payload)
                   for m in critical)


async def test_a_restart_neither_replays_old_events_nor_loses_new_ones(tmp_path, sinks, redis_url, prefix, caplog):  # noqa: F811
    sinks.clear(reset_dedup=True)
    # Before the first start: one event from long ago (never to be paged) and one recent dead letter.
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        seconds, _ = await client.time()
        ancient = f"{(int(seconds) - 3600) * 1000}-0"
        await client.xadd(QueueKeys(prefix).events, {"type": "task_dead_lettered", "task_id": "task-ancient",
                                                     "deliveries": "5", "error": "x", "at": "0"}, id=ancient)
    finally:
        await client.aclose()
    recent = await dead_letter(redis_url, prefix)
    async with agent_on(tmp_path, sinks, redis_url, prefix) as agent:  # its first cycle reads what is new
        assert await active(agent) == {"queue_task_dead_lettered"}
        await sinks.wait_for(1, "slack", timeout_s=10)
        [page] = [str(m.payload) for m in sinks.messages("slack")]
        assert recent in page and "task-ancient" not in page

    while_down = await dead_letter(redis_url, prefix)
    caplog.clear()
    reopened = time.time()
    async with agent_on(tmp_path, sinks, redis_url, prefix) as agent:  # the same store, the same Redis
        await agent.alerts.evaluator.cycle(time.time())
        points = await agent.alerts.sources.series.points(DEAD_LETTERED, {}, reopened, time.time())
        assert sum(p.value for ps in points.values() for p in ps) == 1  # exactly the one it had not seen
        read = [r.getMessage() for r in caplog.records if r.name == WATCH_LOG and "dead-lettered" in r.getMessage()]
        assert len(read) == 1 and while_down in read[0]
        assert await active(agent) == {"queue_task_dead_lettered"}  # the same alert, still firing: no new page
    assert len(sinks.messages("slack")) == 1


async def test_a_redis_outage_is_one_warning_and_events_are_read_when_it_is_back(tmp_path, sinks, caplog):
    sinks.clear(reset_dedup=True)
    password = f"pw-{uuid.uuid4().hex}"
    prefix = "outage:"
    with running_redis(password=password) as server:  # no persistence: it comes back empty
        async with agent_on(tmp_path, sinks, server.url, prefix) as agent:
            evaluator = agent.alerts.evaluator
            await agent.registry.invoke(agent.identity, "record_metric", {"name": "queue_depth", "value": 900.0})
            await agent.registry.invoke(agent.identity, "create_alert_rule",
                                        {"name": "deep_queue", "condition": "queue_depth > 100", "severity": "low"})
            now = time.time()
            await evaluator.cycle(now)
            assert await active(agent) == {"deep_queue"}
            await agent.registry.invoke(agent.identity, "resolve_alert",
                                        {"alert_id": (await agent.alerts.get_active_alerts())[0].id})

            server.stop()
            caplog.clear()
            await evaluator.cycle(now + 5)
            await evaluator.cycle(now + 10)
            assert await active(agent) == {"deep_queue"}  # every other rule is still evaluated
            warnings = [r for r in caplog.records if r.name == WATCH_LOG and r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "Redis unreachable" in warnings[0].getMessage()

            server.start()
            task_id = await dead_letter(server.url, prefix)  # written before the watch noticed Redis is back
            await evaluator.cycle(now + 15)
            assert await active(agent) == {"queue_task_dead_lettered", "deep_queue"}
            assert any(r.name == WATCH_LOG and "reachable again" in r.getMessage() for r in caplog.records)
            await sinks.wait_for(1, "slack", timeout_s=10)
            assert any(task_id in t for t in texts(sinks))
    assert password not in caplog.text
