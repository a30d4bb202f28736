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

from ops_agent.config import ServiceCheck, load_settings
from ops_agent.errors import ConfigError, InvalidArguments
from ops_agent.governance import Caller
from ops_agent.services import Services, open_services
from ops_agent.ooda.loop import step_key
from ops_agent.worker import SideEffectInProgress, TaskQueue, Worker
from sandbox.notify import NotifySinks, SinksConfig
from sandbox.vercel import EmulatorConfig, VercelEmulator
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


async def test_an_outage_is_retried_without_counting_and_never_dead_letters(tmp_path, redis_url, queue):  # noqa: F811
    # A database path that is a directory: governance is unavailable, so execute_task is refused as an
    # outage (GovernanceUnavailable). It is handed back again and again, far past max_deliveries (3), and
    # never dead-lettered; once governance works, the task runs.
    task_id = await queue.submit(TASK)
    async with opened(tmp_path, redis_url, db=tmp_path) as services:
        assert services.gate.degraded
        worker = Worker(services, queue, poll_delay_s=0.01, retry_defer_ms=10)
        running = asyncio.create_task(worker.run())
        while worker.retried < 5:
            await asyncio.sleep(0.02)
        worker.stop()
        await asyncio.wait_for(running, 5)
        assert worker.dead_lettered == 0 and worker.completed == 0
    [pending] = await queue.redis.xpending_range(queue.keys.stream, queue.group, min="-", max="+", count=10)
    assert pending["times_delivered"] <= 1  # outage deliveries do not count
    assert await queue.dead_letters() == [] and await queue.events() == []
    async with opened(tmp_path, redis_url) as services:
        worker = burst(services, queue)
        await asyncio.wait_for(worker.run(), 10)
    assert worker.completed == 1 and (await queue.result(task_id))["status"] == "completed"


async def test_a_task_that_keeps_killing_its_worker_is_dead_lettered_with_an_event(tmp_path, redis_url, queue):  # noqa: F811
    task_id = await queue.submit(TASK)
    for delivery in range(1, queue.max_deliveries + 1):  # each delivery's worker dies holding it
        while not (taken := await queue.read(f"dies-{delivery}", 1)):
            await asyncio.sleep(0.05)  # claimable once idle for claim_idle_ms
        assert taken[0].deliveries == delivery
    await asyncio.sleep(queue.claim_idle_ms / 1000 + 0.05)
    async with opened(tmp_path, redis_url) as services:
        worker = burst(services, queue)
        await asyncio.wait_for(worker.run(), 10)
        assert worker.completed == 0 and await runs_of(services, task_id) == 0
    assert await queue.result(task_id) is None
    assert await queue.pending_count() == 0 and await queue.backlog() == 0
    [dead] = await queue.dead_letters()
    assert dead["task_id"] == task_id and dead["deliveries"] == "4" and "without finishing" in dead["error"]
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
        assert await runs_of(services, task_id) == 1
        assert await queue.pending_count() == 0


async def test_a_task_held_by_a_live_worker_is_not_started_twice(tmp_path, redis_url, queue):  # noqa: F811
    task_id = await queue.submit(TASK)
    await queue.submit(TASK, task_id=task_id)  # a duplicate entry of the same task
    assert await queue.begin(task_id, "another-worker") == "run"
    assert await queue.begin(task_id, "me") == "busy"
    async with opened(tmp_path, redis_url) as services:
        worker = Worker(services, queue, poll_delay_s=0.01, retry_defer_ms=20)
        running = asyncio.create_task(worker.run())
        while worker.retried < 2:
            await asyncio.sleep(0.02)
        assert await runs_of(services, task_id) == 0  # busy elsewhere: handed back, not run
        worker.stop()
        await asyncio.wait_for(running, 5)


DEPLOY_TASK = "deploy demo-app to preview"


@asynccontextmanager
async def deploying(tmp_path: Path, redis_url: str, emulator: VercelEmulator, name: str):  # noqa: F811
    """Services (each with its own database, as on another machine) that deploy to the Vercel emulator."""
    (tmp_path / name).mkdir()
    settings = make_settings(tmp_path / name, REDIS_URL=redis_url, VERCEL_TOKEN=emulator.token)
    vercel = settings.vercel.model_copy(
        update={"api_url": emulator.base_url, "team_id": emulator.team_id, "poll_interval_s": 0.02,
                "projects": ["demo-app"]}
    )
    async with open_services(settings.model_copy(update={"vercel": vercel}), background=False) as services:
        yield services


@pytest.fixture
async def emulator() -> AsyncIterator[VercelEmulator]:
    async with VercelEmulator(EmulatorConfig(build_time_s=0.05, seed=3, rate_limit=100_000)) as emu:
        yield emu


async def test_a_redelivered_task_replays_its_deploy_step_instead_of_deploying_again(
    tmp_path, redis_url, queue, emulator  # noqa: F811
):
    task_id = await queue.submit(DEPLOY_TASK)
    [taken] = await queue.read("worker-that-dies", 1)
    async with deploying(tmp_path, redis_url, emulator, "a") as services:
        # The dying worker ran the task (its deploy step completed and was kept), then died before
        # storing the result or acknowledging.
        services.loop.step_guard = queue
        caller = Caller(services.settings.governance.agent_name, via="worker", task_id=task_id)
        first = await services.registry.invoke(caller, "execute_task", {"task": DEPLOY_TASK})
        assert first.status == "completed" and len(emulator.state.deployments) == 1
    async with deploying(tmp_path, redis_url, emulator, "b") as services:
        worker = burst(services, queue)
        await asyncio.wait_for(worker.run(), 10)
    assert worker.completed == 1
    report = await queue.result(task_id)
    assert report["status"] == "completed" and report["deployment_url"] == first.deployment_url
    assert len(emulator.state.deployments) == 1  # replayed, not deployed again


async def test_the_deploy_key_catches_a_step_whose_worker_died_before_keeping_it(
    tmp_path, redis_url, queue, emulator  # noqa: F811
):
    # The worst moment: Vercel created the deployment, and the worker died before the step was kept
    # (the step's lease lapsed). The step runs again, on another machine, and the deploy's idempotency key
    # (the step's key, in the deployment's meta) finds the first deployment instead of creating one.
    task_id = "task-died-mid-step"
    async with deploying(tmp_path, redis_url, emulator, "a") as services:
        services.loop.step_guard = queue
        caller = Caller(services.settings.governance.agent_name, via="worker", task_id=task_id)
        first = await services.registry.invoke(caller, "execute_task", {"task": DEPLOY_TASK})
    [kept] = [key async for key in queue.redis.scan_iter(match=queue.keys.once("*"))]
    await queue.redis.delete(kept)
    async with deploying(tmp_path, redis_url, emulator, "b") as services:
        services.loop.step_guard = queue
        caller = Caller(services.settings.governance.agent_name, via="worker", task_id=task_id)
        again = await services.registry.invoke(caller, "execute_task", {"task": DEPLOY_TASK})
    assert again.status == "completed" and again.steps[0].output["reused"] is True
    assert again.deployment_url == first.deployment_url and len(emulator.state.deployments) == 1


async def test_a_step_still_leased_by_a_dead_worker_is_retried_later_not_failed(
    tmp_path, redis_url, queue, emulator  # noqa: F811
):
    # The worker killed mid-deploy left its step lease; the redelivered task meets it, is handed back (an
    # outage: not counted), and once the lease lapses the step runs: one deployment, a completed result.
    task_id = await queue.submit(DEPLOY_TASK)
    key = step_key(task_id, "deploy", {"project": "demo-app", "environment": "preview"})
    await queue.redis.set(queue.keys.once(key), "running:dead-worker", px=600)
    async with deploying(tmp_path, redis_url, emulator, "a") as services:
        worker = Worker(services, queue, poll_delay_s=0.01, retry_defer_ms=50)
        running = asyncio.create_task(worker.run())
        while await queue.result(task_id) is None:
            await asyncio.sleep(0.05)
        worker.stop()
        await asyncio.wait_for(running, 10)
    assert worker.retried >= 1 and worker.dead_lettered == 0
    assert (await queue.result(task_id))["status"] == "completed" and len(emulator.state.deployments) == 1


async def test_run_once_keeps_the_result_and_guards_a_running_step(queue):
    calls = []

    async def step() -> str:
        calls.append(1)
        return '{"id": "dpl_1"}'

    assert await queue.run_once("deploy:abc", step) == ('{"id": "dpl_1"}', True)
    assert await queue.run_once("deploy:abc", step) == ('{"id": "dpl_1"}', False)  # done: kept, not run
    assert len(calls) == 1

    async def fails() -> str:
        raise RuntimeError("failed half way")

    with pytest.raises(RuntimeError):
        await queue.run_once("notify:xyz", fails)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "sent"

    running = asyncio.create_task(queue.run_once("notify:xyz", slow, lease_ms=300))  # a failed step runs again
    await started.wait()
    await asyncio.sleep(0.4)  # the lease is renewed while the step runs
    with pytest.raises(SideEffectInProgress):  # another worker meanwhile
        await queue.run_once("notify:xyz", step)
    release.set()
    assert await running == ("sent", True)


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


async def test_a_notification_step_carries_its_step_key_so_a_rerun_sends_nothing_new(tmp_path):
    # Without the Redis step guard too: the step key becomes the notification's idempotency key, and the
    # durable outbox delivers a notification id once.
    with NotifySinks(SinksConfig(slack_rate_per_s=None)) as sinks:
        settings = make_settings(tmp_path, SLACK_WEBHOOK_URL=sinks.slack_url)
        async with open_services(settings, background=True) as services:
            caller = Caller(settings.governance.agent_name, via="worker", task_id="task-notify-1")
            task = {"task": 'notify the team on slack "deploy finished"'}
            first = await services.registry.invoke(caller, "execute_task", task)
            again = await services.registry.invoke(caller, "execute_task", task)
        [step], [step_again] = first.steps, again.steps
        assert step.ok and step_again.ok
        assert step.output["notification_id"] == step_again.output["notification_id"]
        assert step.output["notification_id"] == step_key("task-notify-1", "send_notification", step.arguments)
        assert len(sinks.messages("slack")) == 1


def test_queue_and_worker_settings_come_from_the_config_file(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "redis:\n  prefix: 'staging:'\n"
        "queue:\n  group: night\n  concurrency: 3\n  max_deliveries: 7\n  claim_idle_s: 12\n  retry_delay_s: 0.5\n"
        "  stop_timeout_s: 9\n  result_ttl_s: 3600\n"
    )
    settings = load_settings(config, environ={})
    queue = TaskQueue.from_settings(Redis(), settings)
    assert (queue.keys.stream, queue.group, queue.max_deliveries, queue.claim_idle_ms, queue.result_ttl_s) == (
        "staging:queue:tasks", "night", 7, 12_000, 3600)
    with pytest.raises(ConfigError, match=r"queue\.max_deliveries.*greater than or equal to 1"):
        load_settings(environ={}, path=_write(tmp_path / "bad.yaml", "queue:\n  max_deliveries: 0\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
