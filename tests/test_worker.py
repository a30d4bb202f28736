"""The task queue on Redis Streams and the worker, against a real redis-server (tests/redis_server.py).

Each test has its own key prefix on the session's server. The service the tasks probe is faked only at the
network edge (an httpx2 MockTransport whose handler may be slow, so a task can be caught in flight).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from redis.asyncio import Redis

from ops_agent.config import ServiceCheck
from ops_agent.errors import InvalidArguments
from ops_agent.services import Services, open_services
from ops_agent.worker import SideEffectInProgress, TaskQueue, Worker
from tests.conftest import make_settings
from tests.redis_server import redis_server, redis_url  # noqa: F401  (session fixtures)

TASK = "check the health of api"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:  # noqa: F811
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def queue(redis: Redis) -> TaskQueue:
    return TaskQueue(redis, prefix=f"test:{uuid.uuid4().hex[:8]}:", max_deliveries=3, claim_idle_ms=200)


@asynccontextmanager
async def opened(tmp_path: Path, redis_url: str, *, delay_s: float = 0.0, db: Path | None = None):  # noqa: F811
    """Services whose `api` health endpoint answers after `delay_s`."""

    async def health(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(delay_s)
        return httpx2.Response(200, text="ok")

    settings = make_settings(tmp_path, REDIS_URL=redis_url, **({"OPS_AGENT_DB": str(db)} if db else {}))
    settings = settings.model_copy(update={"services": [ServiceCheck(name="api", url="http://api.test/health")]})
    async with (
        httpx2.AsyncClient(transport=httpx2.MockTransport(health)) as http,
        open_services(settings, http=http, background=False) as services,
    ):
        yield services


async def runs_of(services: Services, task_id: str) -> int:
    """How many times the gate saw execute_task for this task id."""
    records = await services.gate.audit.recent(500)
    return sum(1 for r in records if r["tool"] == "execute_task" and r["task_id"] == task_id)


def burst(services: Services, queue: TaskQueue, **options) -> Worker:
    return Worker(services, queue, burst=True, poll_delay_s=0, retry_defer_ms=0, **options)


async def test_submit_run_store_and_ack(tmp_path, redis_url, queue, caplog):  # noqa: F811
    async with opened(tmp_path, redis_url) as services:
        task_id = await queue.submit(TASK, "high")
        assert task_id.startswith("task-") and await queue.backlog() == 1
        worker = burst(services, queue)
        await asyncio.wait_for(worker.run(), 10)
        result = await queue.result(task_id)
        assert result["status"] == "completed" and result["task_id"] == task_id and result["priority"] == "high"
        assert [step["tool"] for step in result["steps"]] == ["check_service_health"]
        assert await queue.pending_count() == 0 and await queue.backlog() == 0  # acknowledged and deleted
        assert worker.completed == 1 and await runs_of(services, task_id) == 1
        records = [r for r in await services.gate.audit.recent(50) if r["tool"] == "execute_task"]
        assert records[0]["via"] == "worker" and records[0]["outcome"] == "ok"
    lines = [f"{r.levelname}:{r.name}:{r.getMessage()}" for r in caplog.records]
    assert f"INFO:ops_agent.worker:✅ Task received from Redis queue: {task_id} (priority high, delivery 1 of 3)" in lines
    assert f"INFO:ops_agent.governance:✅ Budget check passed for task {task_id}" in lines
    assert "INFO:ops_agent.governance:✅ Permission check passed for operation: task:execute" in lines
    assert any(line.startswith(f"INFO:ops_agent.worker:✅ Task {task_id} finished: completed") for line in lines)


async def test_idempotent_submit_and_validation(queue):
    first = await queue.submit(TASK, idempotency_key="deploy-42")
    again = await queue.submit("something else", idempotency_key="deploy-42")
    other = await queue.submit(TASK, task_id="my-task-1")
    assert again == first and other == "my-task-1"
    assert await queue.backlog() == 2
    with pytest.raises(InvalidArguments, match="priority"):
        await queue.submit(TASK, "urgent")
    with pytest.raises(InvalidArguments, match="task"):
        await queue.submit("")


async def test_dead_consumer_tasks_are_reclaimed_and_run_once(tmp_path, redis_url, queue, caplog):  # noqa: F811
    async with opened(tmp_path, redis_url) as services:
        task_id = await queue.submit(TASK)
        [taken] = await queue.read("worker-that-dies", 1)  # read and never acknowledged
        assert taken.task_id == task_id and taken.deliveries == 1
        assert await queue.read("live", 1) == []  # not new, and not idle long enough yet
        worker = burst(services, queue, consumer="live")
        await asyncio.wait_for(worker.run(), 10)
        assert (await queue.result(task_id))["status"] == "completed"
        assert worker.completed == 1 and await runs_of(services, task_id) == 1
        assert await queue.pending_count() == 0
    assert any("Reclaimed task" in r.getMessage() and "delivery 2" in r.getMessage() for r in caplog.records)


async def test_failing_task_is_dead_lettered_with_an_event(tmp_path, redis_url, queue):  # noqa: F811
    # A database path that is a directory: governance is unavailable, so execute_task is refused as
    # infrastructure trouble (GovernanceUnavailable): retried, then dead-lettered after max_deliveries.
    async with opened(tmp_path, redis_url, db=tmp_path) as services:
        assert services.gate.degraded
        task_id = await queue.submit(TASK)
        worker = burst(services, queue)
        await asyncio.wait_for(worker.run(), 10)
        assert worker.retried == 2 and worker.dead_lettered == 1 and worker.completed == 0
    assert await queue.result(task_id) is None
    assert await queue.pending_count() == 0 and await queue.backlog() == 0
    [dead] = await queue.dead_letters()
    assert dead["task_id"] == task_id and dead["deliveries"] == "3" and "governance unavailable" in dead["error"]
    [event] = await queue.events()
    assert event["type"] == "task_dead_lettered" and event["task_id"] == task_id and event["severity"] == "critical"


async def test_rejected_payload_is_dead_lettered_at_once(tmp_path, redis_url, queue, redis):  # noqa: F811
    await redis.xadd(queue.keys.stream, {"task_id": "bad-1", "payload": '{"task": ""}'})
    async with opened(tmp_path, redis_url) as services:
        worker = burst(services, queue)
        await asyncio.wait_for(worker.run(), 10)
    [dead] = await queue.dead_letters()
    assert dead["task_id"] == "bad-1" and dead["deliveries"] == "1" and "rejected payload" in dead["error"]


async def test_redelivery_after_completion_does_not_run_again(tmp_path, redis_url, queue):  # noqa: F811
    async with opened(tmp_path, redis_url) as services:
        task_id = await queue.submit(TASK)
        await asyncio.wait_for(burst(services, queue).run(), 10)
        # The same task delivered again (a duplicate entry): its stored result answers it.
        await queue.submit(TASK, task_id=task_id)
        worker = burst(services, queue)
        await asyncio.wait_for(worker.run(), 10)
        assert worker.skipped == 1 and worker.completed == 0
        # A worker that finished the run but died before storing the result and acknowledging: the run is
        # marked done, so the reclaiming worker acknowledges without running it.
        second = await queue.submit(TASK)
        await queue.read("worker-that-dies", 1)
        async with queue.once(f"task:{second}") as first:
            assert first
        worker = burst(services, queue)
        await asyncio.wait_for(worker.run(), 10)
        assert worker.skipped == 1 and worker.completed == 0
        assert await runs_of(services, task_id) == 1 and await runs_of(services, second) == 0
        assert await queue.pending_count() == 0


async def test_once_guards_a_side_effect(queue):
    async with queue.once("deploy:abc") as first:
        assert first
        with pytest.raises(SideEffectInProgress):  # another worker while it runs
            async with queue.once("deploy:abc"):
                pass
    async with queue.once("deploy:abc") as first:
        assert not first  # done: never again
    with pytest.raises(RuntimeError):
        async with queue.once("notify:xyz") as first:
            raise RuntimeError("failed half way")
    async with queue.once("notify:xyz", lease_ms=300) as first:
        assert first  # a failed step is not marked done
        await asyncio.sleep(0.4)  # the lease is renewed while the body runs
        with pytest.raises(SideEffectInProgress):
            async with queue.once("notify:xyz"):
                pass


async def test_long_task_is_not_reclaimed_from_a_live_worker(tmp_path, redis_url, queue):  # noqa: F811
    async with opened(tmp_path, redis_url, delay_s=0.8) as services:  # 4× claim_idle_ms
        task_id = await queue.submit(TASK)
        first = Worker(services, queue, consumer="a", poll_delay_s=0.05)
        running = asyncio.create_task(first.run())
        while first.in_flight == 0:
            await asyncio.sleep(0.01)
        other = burst(services, queue, consumer="b")
        await asyncio.wait_for(other.run(), 10)  # drains only once a finished the task
        first.stop()
        await asyncio.wait_for(running, 5)
        assert first.completed == 1 and other.completed == 0 and other.skipped == 0
        assert await runs_of(services, task_id) == 1


async def test_stop_finishes_the_task_in_flight(tmp_path, redis_url, queue, caplog):  # noqa: F811
    async with opened(tmp_path, redis_url, delay_s=0.5) as services:
        task_id = await queue.submit(TASK)
        later = await queue.submit(TASK)
        worker = Worker(services, queue, poll_delay_s=0.05)
        running = asyncio.create_task(worker.run())
        while worker.in_flight == 0:
            await asyncio.sleep(0.01)
        worker.stop(timeout_s=5)  # what SIGTERM does
        await asyncio.wait_for(running, 5)
        assert worker.completed == 1 and (await queue.result(task_id))["status"] == "completed"
        assert await queue.result(later) is None and await queue.backlog() == 1  # not read after the stop
        assert await queue.pending_count() == 0
    assert any("stopping: no new tasks; 1 in flight" in r.getMessage() for r in caplog.records)


async def test_stop_timeout_returns_the_task_to_the_queue(tmp_path, redis_url, queue):  # noqa: F811
    async with opened(tmp_path, redis_url, delay_s=1.5) as services:
        task_id = await queue.submit(TASK)
        worker = Worker(services, queue, poll_delay_s=0.05)
        running = asyncio.create_task(worker.run())
        while worker.in_flight == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        worker.stop(timeout_s=0.1)
        await asyncio.wait_for(running, 5)
        assert worker.returned == 1 and worker.completed == 0
        assert await queue.pending_count() == 1 and await queue.result(task_id) is None
    async with opened(tmp_path, redis_url) as services:
        other = burst(services, queue)
        await asyncio.wait_for(other.run(), 10)  # claimable at once: the stop set it idle
        assert other.completed == 1 and (await queue.result(task_id))["status"] == "completed"


def test_cli_submit_worker_and_sigterm(tmp_path):
    """`ops-agent submit`, `ops-agent worker --burst`, `submit --wait`, and SIGTERM on a waiting worker."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from tests.redis_server import running_redis

    with running_redis() as server:
        env = {**os.environ, "REDIS_URL": server.url, "OPS_AGENT_DB": str(tmp_path / "ops-agent.db")}
        cli = [sys.executable, "-m", "ops_agent"]

        def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
            return subprocess.run([*cli, *args], check=False, env=env, capture_output=True, text=True, timeout=timeout)

        submitted = run("submit", "show system metrics", "--priority", "high", "--json")
        assert submitted.returncode == 0, submitted.stderr
        task_id = json.loads(submitted.stdout)["task_id"]
        assert run("submit", "show system metrics", "--idempotency-key", "k1").stdout.strip() == \
            run("submit", "other", "--idempotency-key", "k1").stdout.strip()
        drained = run("worker", "--burst")
        assert drained.returncode == 0, drained.stderr
        assert f"INFO:ops_agent.worker:✅ Task received from Redis queue: {task_id} (priority high" in drained.stderr
        assert "INFO:ops_agent.worker:worker" in drained.stderr and "2 completed" in drained.stderr

        daemon = subprocess.Popen([*cli, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            waited = run("submit", "show system metrics", "--wait", "--timeout", "20", "--json")
            assert waited.returncode == 0, waited.stderr
            assert json.loads(waited.stdout)["result"]["status"] == "completed"
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=15)
        assert daemon.returncode == 0, stderr
        assert "stopping: no new tasks" in stderr and "1 completed" in stderr
