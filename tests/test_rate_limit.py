"""Per-agent rate limits: the token buckets on a test clock, then through the real gate (registry, audit,
reputation, telemetry, degraded mode) and over MCP, on real SQLite services in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mcp import Client

from mcp_server import build_server
from ops_agent.config import load_settings
from ops_agent.errors import GovernanceUnavailable, RateLimited
from ops_agent.governance import Caller, RateLimiter, RateLimits
from ops_agent.services import Services, open_services
from ops_agent.worker.worker import is_outage
from tests.conftest import make_settings

READ = ("check_service_health", {})


def write(n: int) -> tuple[str, dict]:
    """A real consequential call (action alert:write, kind write) that works offline; a new rule each time, on a
    series that exists from the start (system ones wait for the first sample)."""
    return "create_alert_rule", {"name": f"low_score_{n}", "condition": "governance_reputation_score < 10 for 5m"}


class Clock:
    """The limiter's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **limits: int) -> RateLimiter:
    return RateLimiter(RateLimits(**limits), clock=clock)


def config(tmp_path: Path, **limits: int) -> Path:
    path = tmp_path / "config.yaml"
    rows = "".join(f"    {key}: {value}\n" for key, value in limits.items())
    path.write_text(f"storage:\n  path: {tmp_path / 'ops-agent.db'}\ngovernance:\n  rate_limit:\n{rows}")
    return path


def on_clock(services: Services, clock: Clock) -> None:
    """Give the gate a limiter with the configured limits on the test clock."""
    services.gate.rate_limiter = RateLimiter(services.gate.rate_limiter.limits, clock=clock)


# -- the buckets -------------------------------------------------------------------------------------------


def test_a_burst_passes_then_the_bucket_refills_at_the_rate():
    clock = Clock()
    limits = limiter(clock, calls_per_minute=60, burst=3)
    for _ in range(3):
        limits.acquire("a", change=False)
    with pytest.raises(RateLimited) as refused:
        limits.acquire("a", change=False)
    assert refused.value.retry_after_s == 1.0  # one token at 1 a second
    clock.now += 0.5
    with pytest.raises(RateLimited) as refused:
        limits.acquire("a", change=False)
    assert refused.value.retry_after_s == 0.5  # the refused call took nothing
    clock.now += 0.5
    limits.acquire("a", change=False)
    clock.now += 60  # long idle: back to a full burst, never more
    for _ in range(3):
        limits.acquire("a", change=False)
    with pytest.raises(RateLimited):
        limits.acquire("a", change=False)


def test_the_message_names_agent_limit_and_wait_rounded_up():
    clock = Clock()
    limits = limiter(clock, calls_per_minute=7, burst=1)
    limits.acquire("dev_agent", change=False)
    with pytest.raises(RateLimited) as refused:
        limits.acquire("dev_agent", change=False)
    # 60/7 = 8.571 s: rounded up, so waiting what the message says is always enough
    assert refused.value.retry_after_s == 8.6
    assert refused.value.public_message == (
        "rate limit: agent dev_agent made more than 7 tool calls a minute (bursts of up to 1); retry after 8.6 s"
    )
    clock.now += 8.6
    limits.acquire("dev_agent", change=False)


def test_zero_turns_a_limit_off():
    clock = Clock()
    limits = limiter(clock, calls_per_minute=0, burst=1, changes_per_minute=0, change_burst=1)
    for _ in range(10_000):
        limits.acquire("a", change=True)
    assert limits.agents() == 0  # nothing is even held
    only_changes = limiter(clock, calls_per_minute=0, burst=1, changes_per_minute=60, change_burst=1)
    only_changes.acquire("a", change=True)
    for _ in range(1000):
        only_changes.acquire("a", change=False)
    with pytest.raises(RateLimited, match="changing tool calls"):
        only_changes.acquire("a", change=True)


def test_changes_have_their_own_tighter_bucket_and_a_refusal_takes_nothing():
    clock = Clock()
    limits = limiter(clock, calls_per_minute=60, burst=3, changes_per_minute=6, change_burst=2)
    limits.acquire("a", change=True)
    limits.acquire("a", change=True)
    with pytest.raises(RateLimited) as refused:
        limits.acquire("a", change=True)
    assert "6 changing tool calls (not reads) a minute (bursts of up to 2)" in refused.value.public_message
    assert refused.value.retry_after_s == 10.0
    limits.acquire("a", change=False)  # the third call token is still there: the refused change took none
    with pytest.raises(RateLimited, match="60 tool calls a minute"):
        limits.acquire("a", change=False)


def test_the_longer_wait_of_two_empty_buckets_is_the_one_reported():
    clock = Clock()
    limits = limiter(clock, calls_per_minute=60, burst=1, changes_per_minute=6, change_burst=1)
    limits.acquire("a", change=True)
    with pytest.raises(RateLimited) as refused:
        limits.acquire("a", change=True)
    assert refused.value.retry_after_s == 10.0 and "changing" in refused.value.public_message
    clock.now += 10
    limits.acquire("a", change=True)


def test_agents_do_not_share_buckets():
    clock = Clock()
    limits = limiter(clock, calls_per_minute=60, burst=1)
    limits.acquire("a", change=False)
    limits.acquire("b", change=False)
    with pytest.raises(RateLimited, match="agent a "):
        limits.acquire("a", change=False)


def test_memory_stays_bounded_with_many_agents():
    clock = Clock()
    limits = RateLimiter(RateLimits(calls_per_minute=60, burst=10), clock=clock, sweep_interval_s=60)
    for n in range(5000):
        limits.acquire(f"agent-{n}", change=True)
    assert limits.agents() == 5000
    clock.now += 61  # every bucket has refilled, and a sweep is due
    limits.acquire("busy", change=False)
    for _ in range(9):
        limits.acquire("busy", change=False)
    assert limits.agents() == 1
    clock.now += 61
    limits.acquire("other", change=False)  # "busy" refilled meanwhile: swept too
    assert limits.agents() == 1
    with pytest.raises(RateLimited):  # a swept agent was full anyway, and "other" is not
        for _ in range(10):
            limits.acquire("other", change=False)


def test_a_rate_limited_task_goes_back_to_the_queue_uncounted():
    assert is_outage(RateLimited("ops_agent", "60 changing tool calls a minute", 1.0))


# -- through the gate ----------------------------------------------------------------------------------------


async def test_a_refused_call_is_audited_counted_and_costs_no_reputation(tmp_path):
    settings = load_settings(config(tmp_path, changes_per_minute=6, change_burst=2), environ={})
    async with open_services(settings) as services:
        assert services.gate.rate_limiter.limits == RateLimits(600, 120, 6, 2)
        clock = Clock()
        on_clock(services, clock)
        caller = services.identity
        for n in range(2):
            await services.registry.invoke(caller, *write(n))
        before = await services.gate.reputation.get_agent(caller.agent)
        events_before = await services.gate.reputation.events(before.id, limit=50)
        with pytest.raises(RateLimited) as refused:
            await services.registry.invoke(caller, *write(2))
        assert refused.value.retry_after_s == 10.0
        assert refused.value.public_message == (
            "rate limit: agent ops_agent made more than 6 changing tool calls (not reads) a minute "
            "(bursts of up to 2); retry after 10.0 s"
        )
        rules = await services.registry.invoke(caller, "list_alert_rules", {})
        assert "low_score_2" not in rules.model_dump_json()  # the handler never ran
        after = await services.gate.reputation.get_agent(caller.agent)
        assert after.score == before.score  # a burst is not misconduct
        assert await services.gate.reputation.events(after.id, limit=50) == events_before
        [record] = [r for r in await services.gate.audit.recent(50) if r["decision"] == "denied_rate"]
        assert (record["tool"], record["action"], record["outcome"]) == ("create_alert_rule", "alert:write", "refused")
        assert record["error"] == refused.value.public_message
        assert record["arguments"]["name"] == "low_score_2"
        decisions = services.telemetry.registry.get_sample_value
        assert decisions("ops_agent_gate_decisions_total", {"decision": "denied_rate"}) == 1
        clock.now += 10.0  # waiting what it said is enough
        await services.registry.invoke(caller, *write(2))


async def test_reads_pass_while_the_change_budget_is_spent(tmp_path):
    settings = load_settings(config(tmp_path, burst=50, changes_per_minute=1, change_burst=1), environ={})
    async with open_services(settings) as services:
        on_clock(services, Clock())
        await services.registry.invoke(services.identity, *write(0))
        with pytest.raises(RateLimited):
            await services.registry.invoke(services.identity, *write(1))
        for _ in range(20):  # an engineer polling is not blocked by a spent change budget
            await services.registry.invoke(services.identity, *READ)


async def test_agents_have_their_own_buckets_and_task_steps_count_against_theirs(tmp_path):
    settings = load_settings(config(tmp_path, calls_per_minute=60, burst=3), environ={})
    async with open_services(settings) as services:
        on_clock(services, Clock())
        local = services.identity
        await services.registry.invoke(local, *READ)
        await services.registry.invoke(local.in_task("task-1"), *READ)  # a planner step: same agent
        await services.registry.invoke(local.in_task("task-2"), *READ)
        with pytest.raises(RateLimited, match="agent ops_agent "):
            await services.registry.invoke(local, *READ)
        dev = Caller("dev_agent", via="test", agent_type="mcp_client")
        for _ in range(3):
            await services.registry.invoke(dev, *READ)
        with pytest.raises(RateLimited, match="agent dev_agent "):
            await services.registry.invoke(dev.in_task("task-3"), *READ)
        records = await services.gate.audit.recent(50)
        refused = [(r["agent"], r["task_id"]) for r in records if r["decision"] == "denied_rate"]
        assert sorted(refused, key=str) == [("dev_agent", "task-3"), ("ops_agent", None)]


async def test_limiting_holds_in_degraded_mode(tmp_path, caplog):
    blocked = tmp_path / "not-a-file"
    blocked.mkdir()
    settings = make_settings(tmp_path, OPS_AGENT_DB=str(blocked))
    async with open_services(settings) as services:
        assert services.gate.degraded
        services.gate.rate_limiter = RateLimiter(RateLimits(calls_per_minute=60, burst=2), clock=Clock())
        await services.registry.invoke(services.identity, *READ)
        with pytest.raises(GovernanceUnavailable):  # not a read: refused for the outage, and it counted
            await services.registry.invoke(services.identity, *write(0))
        with pytest.raises(RateLimited):
            await services.registry.invoke(services.identity, *READ)
        assert any(r.getMessage().startswith("audit ") and "denied_rate" in r.getMessage() for r in caplog.records)


# -- over MCP ------------------------------------------------------------------------------------------------


async def test_mcp_answers_with_the_retry_after_in_text_and_meta(tmp_path):
    # Real clock: one change a minute, so the bucket cannot refill during the test; no time is asserted.
    settings = load_settings(config(tmp_path, changes_per_minute=1, change_burst=1), environ={})
    async with open_services(settings) as services:
        async with Client(build_server(services)) as client:
            first = await client.call_tool(*write(0))
            assert not first.is_error, first.content
            result = await client.call_tool(*write(1))
            read = await client.call_tool(*READ)
        assert result.is_error
        text = result.content[0].text
        match = re.fullmatch(
            r"rate limit: agent ops_agent made more than 1 changing tool calls \(not reads\) a minute "
            r"\(bursts of up to 1\); retry after (\d+\.\d) s",
            text,
        )
        assert match, text
        assert result.meta["retry_after_s"] == float(match[1])  # beside the SDK's own serverInfo
        assert 0 < float(match[1]) <= 60
        assert not read.is_error and "retry_after_s" not in (read.meta or {})
        [record] = [r for r in await services.gate.audit.recent(50) if r["decision"] == "denied_rate"]
        assert record["via"] == "mcp-stdio"
