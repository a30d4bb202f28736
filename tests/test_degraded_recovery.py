"""Degraded mode mid-run, against real servers that each test starts for itself and stops and starts again.

While Redis (the cost ledger) or PostgreSQL (the reputation store) is away, reads still run and every other
call is refused with `GovernanceUnavailable` naming what is away (audited `denied_degraded`); the worker keeps
its tasks; and once the server is back the very next call works, with no restart of services or worker.
Nothing here asserts a duration: waits poll with generous deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from ops_agent.config import ServiceCheck, Settings, load_settings
from ops_agent.errors import GovernanceUnavailable
from ops_agent.governance import Caller
from ops_agent.services import Services, open_services
from ops_agent.worker import TaskQueue, Worker
from tests.conftest import make_settings
from tests.postgres import PostgresServer, create_schema, postgres_binaries, running_postgres
from tests.processes import missing
from tests.redis_server import RedisServer, running_redis

# A non-read call that needs no network: alert:write, kind `write` (consequential: it scores reputation).
RULE = {"name": "error_burst", "condition": "log_count(severity=error)[5m] > 100", "severity": "high"}
WAIT_S = 15.0


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to stop and start."""
    with running_redis() as server:
        yield server


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, free to stop and start."""
    binaries = postgres_binaries()
    if binaries is None:
        missing("PostgreSQL (initdb, postgres) not found: install Debian's postgresql package (scripts/ci-packages)")
    with running_postgres(binaries) as server:
        yield server


@asynccontextmanager
async def services_for(settings: Settings, http: httpx2.AsyncClient | None = None) -> AsyncIterator[Services]:
    async with open_services(settings, http=http, background=False) as services:
        yield services


def caller_of(services: Services) -> Caller:
    return Caller(services.settings.governance.agent_name, via="test")


async def newest_audit(services: Services, tool: str) -> dict:
    return next(r for r in await services.gate.audit.recent(200) if r["tool"] == tool)


async def rule_names(services: Services, caller: Caller) -> list[str]:
    return [rule.name for rule in (await services.registry.invoke(caller, "list_alert_rules", {})).rules]


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll `condition` until it holds; fail naming `what` after a generous deadline."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


def warnings_in(caplog: pytest.LogCaptureFixture, logger: str = "") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith(logger)]


def assert_names_no_address(message: str, *addresses: str) -> None:
    for address in addresses:
        assert address not in message
    assert "127.0.0.1" not in message


# --- through the gate ------------------------------------------------------------------------------------------


async def test_a_redis_outage_refuses_non_reads_and_the_next_call_after_it_works(tmp_path, own_redis, caplog):
    async with services_for(make_settings(tmp_path, REDIS_URL=own_redis.url)) as services:
        caller, registry = caller_of(services), services.registry
        own_redis.stop()

        assert (await registry.invoke(caller, "get_system_metrics", {})).cpu_percent >= 0  # a read: no ledger
        with pytest.raises(GovernanceUnavailable) as refused:
            await registry.invoke(caller, "create_alert_rule", RULE)
        message = refused.value.public_message
        assert "redis unreachable" in message and "cost ledger" in message
        assert "only read-only actions are allowed" in message
        assert_names_no_address(message, own_redis.url, str(own_redis.port))
        record = await newest_audit(services, "create_alert_rule")
        assert (record["decision"], record["outcome"], record["error"]) == ("denied_degraded", "refused", message)
        assert RULE["name"] not in await rule_names(services, caller)  # refused before it ran
        with pytest.raises(GovernanceUnavailable, match="redis unreachable"):
            await services.gate.reserve(caller, 1_000, 1_000)  # no LLM spending either
        assert any("redis unreachable" in line and "create_alert_rule refused" in line for line in warnings_in(caplog))

        own_redis.start()  # same port, empty: the budgets start over, and the same services carry on

        created = await registry.invoke(caller, "create_alert_rule", RULE)
        assert created.name == RULE["name"] and RULE["name"] in await rule_names(services, caller)
        record = await newest_audit(services, "create_alert_rule")
        assert (record["decision"], record["outcome"], record["error"]) == ("allowed", "ok", None)
        reservation = await services.gate.reserve(caller, 1_000, 1_000)
        assert reservation is not None
        await services.gate.settle(reservation, 10, 10, "model")
        assert (await services.gate.usage(caller)).hour_tokens == 10


async def test_fail_open_runs_non_reads_through_a_redis_outage(tmp_path, own_redis, caplog):
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'ops-agent.db'}\ngovernance:\n  fail_open: true\n")
    async with services_for(load_settings(config, environ={"REDIS_URL": own_redis.url})) as services:
        caller = caller_of(services)
        own_redis.stop()
        created = await services.registry.invoke(caller, "create_alert_rule", RULE)
        assert created.name == RULE["name"]
        record = await newest_audit(services, "create_alert_rule")
        assert (record["decision"], record["outcome"]) == ("allowed", "ok")
        assert await services.gate.reserve(caller, 1_000, 1_000) is None  # the request goes unreserved
        assert any("UNCONSTRAINED (fail_open)" in line for line in warnings_in(caplog))


async def test_a_postgres_outage_refuses_non_reads_and_the_next_call_after_it_works(
    tmp_path, own_postgres, caplog
):
    url = create_schema(own_postgres.url)
    async with services_for(make_settings(tmp_path, DATABASE_URL=url)) as services:
        caller, registry, gate = caller_of(services), services.registry, services.gate
        own_postgres.stop()
        await asyncio.sleep(gate.cache_ttl_s)  # the cached agent record expires: the next call asks the store

        await registry.invoke(caller, "get_system_metrics", {})  # a read, on the last agent record seen
        newcomer = Caller("newcomer", via="test", agent_type="mcp_client")
        await registry.invoke(newcomer, "get_system_metrics", {})  # a read by an agent never seen: no record
        assert RULE["name"] not in await rule_names(services, caller)
        with pytest.raises(GovernanceUnavailable) as refused:
            await registry.invoke(caller, "create_alert_rule", RULE)
        message = refused.value.public_message
        # "cannot connect", or the end of a connection the stop cut: either way the store, never its address
        assert message.startswith("reputation store unavailable: ") and "PostgreSQL" in message
        assert "only read-only actions are allowed" in message
        assert_names_no_address(message, url, str(own_postgres.port), "postgres@")
        record = await newest_audit(services, "create_alert_rule")
        assert (record["decision"], record["outcome"], record["error"]) == ("denied_degraded", "refused", message)
        with pytest.raises(GovernanceUnavailable, match="reputation store unavailable"):
            await gate.reserve(caller, 1_000, 1_000)
        await gate.task_outcome(caller, True, "a task that finished during the outage")  # logged, not raised
        assert any("reputation event task_success not recorded" in line for line in warnings_in(caplog))

        own_postgres.start()  # same port, same data

        created = await registry.invoke(caller, "create_alert_rule", RULE)
        assert created.name == RULE["name"]
        record = await newest_audit(services, "create_alert_rule")
        assert (record["decision"], record["outcome"]) == ("allowed", "ok")
        [event] = await gate.reputation.events((await gate.agent(caller)).id, limit=1)
        assert (event["event_type"], event["reason"]) == ("task_success", "create_alert_rule (alert:write)")
        assert (await gate.agent(newcomer)).agent_type == "mcp_client"  # registered now that the store is back


async def test_an_event_lost_to_an_outage_after_the_call_ran_does_not_change_its_result(
    tmp_path, own_postgres, caplog
):
    url = create_schema(own_postgres.url)
    async with services_for(make_settings(tmp_path, DATABASE_URL=url)) as services:
        caller, gate = caller_of(services), services.gate
        agent = await gate.agent(caller)
        gate.cache_ttl_s = 3600.0  # the checks pass on the cached record; only the event after the call meets the outage
        own_postgres.stop()

        created = await services.registry.invoke(caller, "create_alert_rule", RULE)

        assert created.name == RULE["name"]
        record = await newest_audit(services, "create_alert_rule")
        assert (record["decision"], record["outcome"], record["error"]) == ("allowed", "ok", None)
        assert any("reputation event task_success not recorded" in line for line in warnings_in(caplog))
        own_postgres.start()
        assert await gate.reputation.events(agent.id) == []  # dropped, not half-written


# --- through the worker ----------------------------------------------------------------------------------------


def queue_on(redis: Redis, **options) -> TaskQueue:
    return TaskQueue(redis, prefix=f"test:{uuid.uuid4().hex[:8]}:", **options)


async def execute_task_audits(services: Services, task_id: str, decision: str) -> int:
    records = await services.gate.audit.recent(2000)
    return sum(1 for r in records if r["tool"] == "execute_task" and r["task_id"] == task_id and r["decision"] == decision)


async def stopped(worker: Worker, running: asyncio.Task) -> None:
    worker.stop(timeout_s=5)
    await asyncio.wait_for(running, 10)


async def test_the_worker_keeps_its_tasks_through_a_postgres_outage(tmp_path, own_postgres, redis_url):
    url = create_schema(own_postgres.url)
    settings = make_settings(tmp_path, DATABASE_URL=url, REDIS_URL=redis_url)
    async with services_for(settings) as services, Redis.from_url(redis_url, decode_responses=True) as redis:
        queue = queue_on(redis, max_deliveries=2, claim_idle_ms=200)
        worker = Worker(services, queue, poll_delay_s=0.05, retry_defer_ms=20)
        running = asyncio.create_task(worker.run())
        try:
            own_postgres.stop()
            await asyncio.sleep(services.gate.cache_ttl_s)  # so every task meets the outage, none the cached record
            task_ids = [await queue.submit("show system metrics") for _ in range(3)]

            async def refused_past_max_deliveries_or_dead() -> bool:
                if await queue.dead_letters():
                    return True
                counts = [await execute_task_audits(services, t, "denied_degraded") for t in task_ids]
                return min(counts) > queue.max_deliveries

            await until(refused_past_max_deliveries_or_dead, "every task refused more often than max_deliveries")
            # An outage is nobody's fault: refused deliveries do not bring a task nearer the dead-letter stream.
            assert await queue.dead_letters() == [] and worker.dead_lettered == 0
            assert [await queue.result(t) for t in task_ids] == [None, None, None]

            own_postgres.start()

            async def all_results() -> bool:
                return all([await queue.result(t) is not None for t in task_ids])

            await until(all_results, "a result for every task after PostgreSQL came back")
        finally:
            await stopped(worker, running)
        for task_id in task_ids:
            assert (await queue.result(task_id))["status"] == "completed"
            assert await execute_task_audits(services, task_id, "allowed") == 1  # ran once, after the outage
        assert await queue.dead_letters() == [] and await queue.pending_count() == 0


async def test_the_worker_keeps_its_tasks_through_a_redis_outage_and_reconnects(tmp_path, caplog):
    with running_redis(persistent=True) as server:  # a queue must survive a restart: append-only, fsync always
        health_checks: list[str] = []
        release = asyncio.Event()

        async def health(request: httpx2.Request) -> httpx2.Response:
            """Holds the first task in flight until the test lets it go."""
            health_checks.append(str(request.url))
            await release.wait()
            return httpx2.Response(200, text="ok")

        settings = make_settings(tmp_path, REDIS_URL=server.url)
        settings = settings.model_copy(update={"services": [ServiceCheck(name="api", url="http://api.test/health")]})
        async with (
            httpx2.AsyncClient(transport=httpx2.MockTransport(health)) as http,
            services_for(settings, http) as services,
            Redis.from_url(  # the test's own client rides over connections the restart cut
                server.url, decode_responses=True, retry=Retry(ConstantBackoff(0.1), 5),
                retry_on_error=[RedisConnectionError],
            ) as redis,
        ):
            queue = queue_on(redis, claim_idle_ms=300)
            worker = Worker(services, queue, poll_delay_s=0.05, retry_defer_ms=50)
            running = asyncio.create_task(worker.run())
            try:
                task_ids = [await queue.submit("check the health of api") for _ in range(3)]

                async def first_task_in_flight() -> bool:
                    return worker.in_flight == 1 and len(health_checks) == 1

                await until(first_task_in_flight, "the first task held at its health check")
                seen = len(warnings_in(caplog, "ops_agent.worker"))
                server.stop()  # one task in flight, two waiting in the stream

                async def worker_met_the_outage() -> bool:  # its heartbeat, most likely
                    return len(warnings_in(caplog, "ops_agent.worker")) > seen

                await until(worker_met_the_outage, "the worker to meet the outage")
                server.start()
                release.set()

                async def all_results() -> bool:
                    return all([await queue.result(t) is not None for t in task_ids])

                await until(all_results, "a result for every task after Redis came back")

                # Again while the worker is idle, reading: it backs off, then reads again by itself.
                seen = len(warnings_in(caplog, "ops_agent.worker"))
                server.stop()
                await until(worker_met_the_outage, "the idle worker to meet the outage")
                server.start()
                later = await queue.submit("check the health of api")

                async def later_result() -> bool:
                    return await queue.result(later) is not None

                await until(later_result, "the task submitted after the second outage")
            finally:
                await stopped(worker, running)
            for task_id in [*task_ids, later]:
                assert (await queue.result(task_id))["status"] == "completed"
                assert await execute_task_audits(services, task_id, "allowed") == 1
            assert worker.completed == 4 and worker.dead_lettered == 0
            assert await queue.dead_letters() == [] and await queue.pending_count() == 0
