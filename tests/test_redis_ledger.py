"""RedisCostLedger against a real redis-server: parity with SqliteCostLedger, windows, leases, warnings,
outages and 100 concurrent reserves racing one budget."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from ops_agent.errors import BudgetExceeded, GovernanceUnavailable
from ops_agent.governance.ledger import (
    BudgetLimits,
    BudgetUsage,
    CostLedger,
    SqliteCostLedger,
)
from ops_agent.governance.redis_keys import GovernanceKeys
from ops_agent.governance.redis_ledger import RedisCostLedger
from ops_agent.stores.sqlite import SqliteDatabase
from tests.redis_server import running_redis

T0_S = 1_699_999_980.0  # a minute boundary
BIG = 10**12
AGENT = "agent-1"


class Clock:
    """Epoch seconds that move only when told to."""

    def __init__(self, now_s: float = T0_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def limits(hourly_tokens: int = BIG, daily_tokens: int = BIG, hourly_usd_micros: int = BIG,
           daily_usd_micros: int = BIG) -> BudgetLimits:
    return BudgetLimits(hourly_tokens, daily_tokens, hourly_usd_micros, daily_usd_micros)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(client: redis.asyncio.Redis, prefix: str, clock: Clock) -> RedisCostLedger:
    return RedisCostLedger(client, prefix=prefix, clock=clock, lease_s=60)


# -- parity with SqliteCostLedger ---------------------------------------------------------------------------


async def _scenario(ledger: CostLedger) -> list:
    """Steps whose results must not depend on the backend: usages and refusal texts."""
    budget = limits(hourly_tokens=1000, daily_tokens=1500, hourly_usd_micros=10_000, daily_usd_micros=12_000)
    trace: list = []

    async def attempt(tokens: int, micros: int) -> int | None:
        try:
            return await ledger.reserve(AGENT, tokens, micros, budget)
        except BudgetExceeded as exc:
            trace.append(exc.public_message)
            return None

    first = await attempt(600, 1000)
    trace.append(await ledger.usage(AGENT))
    assert await attempt(500, 0) is None  # 600 + 500 > 1000 hourly tokens
    await ledger.settle(first, 200, 300, "model-a")  # lower than reserved
    trace.append(await ledger.usage(AGENT))
    second = await attempt(700, 100)
    await ledger.settle(second, 900, 11_000, "model-a")  # higher than reserved
    trace.append(await ledger.usage(AGENT))
    assert await attempt(1, 1) is None  # hourly tokens and hourly USD
    await ledger.record(AGENT, 10, 10, "model-b")
    trace.append(await ledger.usage(AGENT))
    assert await attempt(0, 0) is None  # nothing more requested, but already at/over the limit
    trace.append(await ledger.usage("another-agent"))
    return trace


async def test_parity_with_sqlite_ledger(tmp_path: Path, client: redis.asyncio.Redis, prefix: str) -> None:
    db = SqliteDatabase(tmp_path / "ledger.db")
    await db.open()
    try:
        sqlite_ledger = SqliteCostLedger(db)
        await sqlite_ledger.migrate()
        expected = await _scenario(sqlite_ledger)
    finally:
        await db.close()
    actual = await _scenario(RedisCostLedger(client, prefix=prefix))  # the server's clock
    assert actual == expected
    assert actual[0] == BudgetUsage(600, 1000, 600, 1000)
    assert actual[5] == BudgetUsage(1110, 11_310, 1110, 11_310)
    assert "hourly tokens 600 of 1000 used, 500 more requested" in actual[1]


@pytest.mark.parametrize(
    ("budget", "window"),
    [
        (limits(hourly_tokens=100), "hourly tokens 0 of 100 used, 101 more requested"),
        (limits(daily_tokens=100), "daily tokens 0 of 100 used, 101 more requested"),
        (limits(hourly_usd_micros=100), "hourly USD $0.0000 of $0.0001 used, $0.0001 more requested"),
        (limits(daily_usd_micros=100), "daily USD $0.0000 of $0.0001 used, $0.0001 more requested"),
    ],
)
async def test_reserve_over_each_limit_names_the_window(
    ledger: RedisCostLedger, budget: BudgetLimits, window: str
) -> None:
    with pytest.raises(BudgetExceeded) as raised:
        await ledger.reserve(AGENT, 101, 101, budget)
    assert raised.value.public_message == f"budget exceeded: {window}"
    assert await ledger.usage(AGENT) == BudgetUsage()  # a refused reserve holds nothing
    reservation = await ledger.reserve(AGENT, 100, 100, budget)  # exactly at the limit is within
    assert reservation > 0


async def test_reservation_ids_are_distinct_ints(ledger: RedisCostLedger) -> None:
    ids = [await ledger.reserve(AGENT, 1, 1, limits()) for _ in range(5)]
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == 5


async def test_settle_twice_or_unknown_is_ignored(ledger: RedisCostLedger) -> None:
    reservation = await ledger.reserve(AGENT, 50, 50, limits())
    await ledger.settle(reservation, 10, 20)
    await ledger.settle(reservation, 99, 99)
    await ledger.settle(987_654_321, 5, 5)
    assert await ledger.usage(AGENT) == BudgetUsage(10, 20, 10, 20)


# -- windows ------------------------------------------------------------------------------------------------


async def test_usage_rolls_out_of_the_hour_then_the_day(
    ledger: RedisCostLedger, client: redis.asyncio.Redis, clock: Clock, prefix: str
) -> None:
    await ledger.record(AGENT, 100, 1000)
    clock.advance(1800)
    await ledger.record(AGENT, 10, 10)
    assert await ledger.usage(AGENT) == BudgetUsage(110, 1010, 110, 1010)
    clock.advance(1800 + 60)  # the first record is an hour (and a bucket) old
    assert await ledger.usage(AGENT) == BudgetUsage(10, 10, 110, 1010)
    clock.advance(1800)
    assert await ledger.usage(AGENT) == BudgetUsage(0, 0, 110, 1010)
    clock.advance(86_400 - 3600 - 60)
    assert await ledger.usage(AGENT) == BudgetUsage(0, 0, 10, 10)
    clock.advance(1800)
    assert await ledger.usage(AGENT) == BudgetUsage()
    keys = GovernanceKeys(prefix)
    assert await client.hlen(keys.usage_tokens(AGENT)) == 0  # buckets that left the day are dropped


async def test_a_spent_hour_refuses_until_it_rolls(ledger: RedisCostLedger, clock: Clock) -> None:
    budget = limits(hourly_tokens=100)
    await ledger.settle(await ledger.reserve(AGENT, 100, 0, budget), 100, 0)
    with pytest.raises(BudgetExceeded, match="hourly tokens 100 of 100 used"):
        await ledger.reserve(AGENT, 1, 0, budget)
    clock.advance(3600 + 60)
    assert await ledger.reserve(AGENT, 100, 0, budget) > 0


async def test_agents_have_separate_budgets(ledger: RedisCostLedger) -> None:
    budget = limits(hourly_tokens=100)
    await ledger.reserve("a", 100, 0, budget)
    assert await ledger.reserve("b", 100, 0, budget) > 0


# -- leases -------------------------------------------------------------------------------------------------


async def test_unsettled_reservation_is_booked_at_its_worst_case_when_its_lease_ends(
    ledger: RedisCostLedger, client: redis.asyncio.Redis, clock: Clock, prefix: str
) -> None:
    budget = limits(hourly_tokens=1000)
    reservation = await ledger.reserve(AGENT, 700, 70, budget)  # its process "crashes" and never settles
    clock.advance(61)  # the lease (60 s) has ended
    assert await ledger.usage(AGENT) == BudgetUsage(700, 70, 700, 70)  # booked as spent, not forgotten
    assert await client.zcard(GovernanceKeys(prefix).leases(AGENT)) == 0
    with pytest.raises(BudgetExceeded, match="hourly tokens 700 of 1000 used, 400 more requested"):
        await ledger.reserve(AGENT, 400, 0, budget)
    # the process was only slow: a late settle corrects the booking to the real usage
    await ledger.settle(reservation, 100, 10)
    assert await ledger.usage(AGENT) == BudgetUsage(100, 10, 100, 10)
    assert await ledger.reserve(AGENT, 900, 0, budget) > 0


async def test_held_reservation_counts_until_settled(ledger: RedisCostLedger, clock: Clock) -> None:
    reservation = await ledger.reserve(AGENT, 300, 30, limits())
    clock.advance(59)
    assert await ledger.usage(AGENT) == BudgetUsage(300, 30, 300, 30)
    await ledger.settle(reservation, 5, 1)
    clock.advance(120)
    assert await ledger.usage(AGENT) == BudgetUsage(5, 1, 5, 1)


# -- warnings -----------------------------------------------------------------------------------------------


async def test_warnings_at_80_and_95_percent_once_per_crossing(
    client: redis.asyncio.Redis, prefix: str, clock: Clock
) -> None:
    budget = limits(hourly_tokens=1000, daily_tokens=100_000)
    ledger = RedisCostLedger(client, prefix=prefix, clock=clock, limits=budget)
    await ledger.record(AGENT, 790, 0)
    assert await ledger.events() == []
    await ledger.record(AGENT, 20, 0)  # 810: crosses 80%
    await ledger.record(AGENT, 10, 0)  # 820: no new crossing
    [warning] = await ledger.events()
    assert (warning.agent_id, warning.window, warning.metric) == (AGENT, "hour", "tokens")
    assert (warning.threshold_pct, warning.used, warning.limit) == (80, 810, 1000)
    assert warning.at_ms == int(T0_S * 1000)
    reservation = await ledger.reserve(AGENT, 150, 0, budget)  # 970 held: crosses 95%
    await ledger.settle(reservation, 140, 0)  # 960: still above
    later = await ledger.events(since_id=warning.id)
    assert [(w.window, w.threshold_pct, w.used) for w in later] == [("hour", 95, 970)]
    clock.advance(3600 + 60)  # the hour rolls: the thresholds re-arm
    await ledger.record(AGENT, 960, 0)  # from 0 straight past both
    latest = await ledger.events(since_id=later[-1].id)
    assert [(w.window, w.metric, w.threshold_pct) for w in latest] == [("hour", "tokens", 80), ("hour", "tokens", 95)]
    assert len(await ledger.events()) == 4


async def test_warnings_on_usd_and_day_windows_use_the_latest_reserve_limits(
    ledger: RedisCostLedger,
) -> None:
    budget = limits(daily_usd_micros=1000)
    await ledger.reserve(AGENT, 1, 850, budget)
    await ledger.record(AGENT, 1, 100)  # no limits given to record: the reserve's are used
    assert [(w.window, w.metric, w.threshold_pct, w.used) for w in await ledger.events()] == [
        ("day", "usd_micros", 80, 850),
        ("day", "usd_micros", 95, 950),
    ]


# -- outages ------------------------------------------------------------------------------------------------


async def test_unreachable_redis_is_governance_unavailable_and_recovers() -> None:
    password = "s3cret-redis-pw"
    with running_redis(password=password) as server:
        client = redis.asyncio.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            ledger = RedisCostLedger(client, prefix="outage:")
            budget = limits(hourly_tokens=1000)
            reservation = await ledger.reserve(AGENT, 10, 1, budget)
            server.stop()
            calls = [
                ledger.usage(AGENT),
                ledger.reserve(AGENT, 10, 1, budget),
                ledger.settle(reservation, 1, 1),
                ledger.record(AGENT, 1, 1),
                ledger.events(),
            ]
            for call in calls:
                with pytest.raises(GovernanceUnavailable) as raised:
                    await call
                text = str(raised.value)
                assert password not in text and "redis://" not in text and str(server.port) not in text
                assert "redis unreachable" in raised.value.public_message
            server.start()  # empty again: no persistence; the script is loaded anew
            assert await ledger.usage(AGENT) == BudgetUsage()
            assert await ledger.reserve(AGENT, 10, 1, budget) > 0
        finally:
            await client.aclose()


# -- concurrency --------------------------------------------------------------------------------------------


async def test_100_concurrent_reserves_never_overspend_one_budget(redis_url: str, prefix: str) -> None:
    budget = limits(hourly_tokens=1000, hourly_usd_micros=5_000)
    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(100)]
    ledgers = [RedisCostLedger(c, prefix=prefix) for c in clients]
    try:

        async def reserve(ledger: RedisCostLedger) -> int | None:
            try:
                return await ledger.reserve(AGENT, 30, 100, budget)
            except BudgetExceeded:
                return None

        first = await asyncio.gather(*(reserve(ledger) for ledger in ledgers))
        won = [r for r in first if r is not None]
        assert len(won) == 33  # 33 x 30 = 990 <= 1000 tokens (and 3,300 <= 5,000 micros)
        assert (await ledgers[0].usage(AGENT)).hour_tokens == 990

        # all settle lower than reserved, concurrently; then everyone races for the freed budget again
        await asyncio.gather(*(ledger.settle(r, 10, 100) for ledger, r in zip(ledgers, won, strict=False)))
        assert await ledgers[0].usage(AGENT) == BudgetUsage(330, 3300, 330, 3300)
        second = [r for r in await asyncio.gather(*(reserve(ledger) for ledger in ledgers)) if r is not None]
        assert len(second) == 17  # the USD limit binds now: 3,300 + 17 x 100 = 5,000
        usage = await ledgers[0].usage(AGENT)
        assert usage.hour_usd_micros == 5000 and usage.hour_tokens == 330 + 17 * 30
        assert usage.hour_tokens <= budget.hourly_tokens
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


# -- keys and clients ---------------------------------------------------------------------------------------


async def test_every_key_is_under_the_prefix_and_named_by_the_schema(
    ledger: RedisCostLedger, client: redis.asyncio.Redis, prefix: str
) -> None:
    before = {key async for key in client.scan_iter()}
    reservation = await ledger.reserve(AGENT, 90, 9, limits(hourly_tokens=100))  # also raises a warning
    created = {key.decode() async for key in client.scan_iter()} - {key.decode() for key in before}
    keys = GovernanceKeys(prefix)
    assert created == {
        keys.leases(AGENT),
        keys.reservation(reservation),
        keys.reservation_seq,
        keys.warned(AGENT),
        keys.limits(AGENT),
        keys.events,
    }
    await ledger.settle(reservation, 9, 9)
    assert await client.hgetall(keys.usage_tokens(AGENT)) and await client.hgetall(keys.usage_usd_micros(AGENT))
    assert not await client.exists(keys.reservation(reservation))
    assert all(key.startswith(prefix + "governance:") for key in created)


async def test_a_client_that_decodes_responses_works_too(redis_url: str, prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        ledger = RedisCostLedger(client, prefix=prefix)
        reservation = await ledger.reserve(AGENT, 90, 9, limits(hourly_tokens=100))
        await ledger.settle(reservation, 85, 8)
        assert await ledger.usage(AGENT) == BudgetUsage(85, 8, 85, 8)
        assert [w.threshold_pct for w in await ledger.events()] == [80]
    finally:
        await client.aclose()


async def test_redis_url_moves_the_budgets_to_redis(tmp_path, redis_url):
    from ops_agent.services import open_services
    from tests.conftest import make_settings

    async with open_services(make_settings(tmp_path, REDIS_URL=redis_url), background=False) as services:
        assert isinstance(services.gate.ledger, RedisCostLedger)
        record = await services.gate.agent(services.identity)
        await services.gate.ledger.record(record.id, 1234, 5678)
        status = await services.gate.status(services.settings.governance.agent_name)
        assert status["budget"]["hourly_tokens"]["used"] == 1234
