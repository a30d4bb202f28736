"""The task queue on one Redis, side by side in one run.

1. Throughput: N no-op tasks through our worker (each one a whole `execute_task` through the governance
   gate, whose planner finds nothing to do) vs arq's worker running a no-op job; tasks/s and the ratio
   (goal >= 1.0x).
2. Crash run: T tasks, W `ops-agent worker` processes killed with SIGKILL at random moments and restarted
   until the queue is drained; tasks lost (goal 0), tasks run twice (goal 0: counted in the audit trail,
   one `execute_task` record per task id), budget overspend (goal 0).

    python benchmarks/queue.py [--tasks 500] [--crash-tasks 300] [--workers 3]

Needs redis-server on PATH (Debian: redis-server) and `pip install -e ".[bench]"` for arq.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on the path, and its name would hide the standard
# library's `queue` (which redis imports): take the folder off before anything imports it.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis.asyncio  # noqa: E402

from ops_agent.config import load_settings  # noqa: E402
from ops_agent.services import open_services  # noqa: E402
from ops_agent.worker import TaskQueue, Worker  # noqa: E402
from tests.redis_server import running_redis  # noqa: E402

NOOP_TASK = "noop"  # the planner understands nothing in it: the task ends after the gate and one plan


async def ours(redis_url: str, tasks: int, tmp: Path) -> float:
    settings = load_settings(environ={"OPS_AGENT_DB": str(tmp / "ours.db"), "REDIS_URL": redis_url,
                                      "OPS_AGENT_LOG_LEVEL": "WARNING"})
    client = redis.asyncio.Redis.from_url(redis_url)
    queue = TaskQueue(client, prefix="bench:")
    await queue.ensure_group()
    for _ in range(tasks):
        await queue.submit(NOOP_TASK)
    async with open_services(settings, background=False) as services:
        started = time.perf_counter()
        await Worker(services, queue, burst=True, poll_delay_s=0, concurrency=4).run()
        elapsed = time.perf_counter() - started
    await client.aclose()
    return tasks / elapsed


async def arq_baseline(redis_url: str, tasks: int) -> float | None:
    try:
        from arq import create_pool
        from arq.connections import RedisSettings
        from arq.worker import Worker as ArqWorker
        from arq.worker import func
    except ImportError:
        print("arq is not installed (pip install -e '.[bench]'): no baseline", file=sys.stderr)
        return None

    async def noop(ctx: dict) -> None:
        return None

    settings = RedisSettings.from_dsn(redis_url)
    pool = await create_pool(settings)
    for _ in range(tasks):
        await pool.enqueue_job("noop")
    worker = ArqWorker(functions=[func(noop, name="noop")], redis_settings=settings, burst=True, poll_delay=0, max_jobs=4,
                       handle_signals=False, keep_result=0)
    started = time.perf_counter()
    await worker.main()
    elapsed = time.perf_counter() - started
    await worker.close()
    await pool.aclose()
    return tasks / elapsed


def crash_run(redis_url: str, tasks: int, workers: int, tmp: Path) -> None:
    db = tmp / "crash.db"
    env = {**os.environ, "REDIS_URL": redis_url, "OPS_AGENT_DB": str(db), "OPS_AGENT_LOG_LEVEL": "WARNING"}
    cli = [sys.executable, "-m", "ops_agent"]

    async def submit() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        queue = TaskQueue(client)
        for i in range(tasks):
            await queue.submit("show system metrics", idempotency_key=f"crash-{i}")
        await client.aclose()

    asyncio.run(submit())
    spawn = lambda: subprocess.Popen([*cli, "worker", "--concurrency", "2"], env=env,  # noqa: E731
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    running = [spawn() for _ in range(workers)]
    kills = 0
    rng = random.Random(5)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 2.0))
        victim = rng.randrange(len(running))
        running[victim].send_signal(signal.SIGKILL)
        running[victim].wait()
        kills += 1
        running[victim] = spawn()
        if _done(redis_url) >= tasks:
            break
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        process.wait(timeout=60)
    done = _done(redis_url)
    conn = sqlite3.connect(db)
    counts = conn.execute(
        "SELECT task_id, COUNT(*) FROM audit_log WHERE tool = 'execute_task' AND decision = 'allowed' GROUP BY task_id"
    ).fetchall()
    conn.close()
    repeated = sum(1 for _, n in counts if n > 1)
    print(f"## Crash run: {tasks} tasks, {workers} workers, {kills} SIGKILLs")
    print(f"results stored {done}/{tasks}: lost {tasks - done}; tasks run more than once {repeated} "
          f"(of {len(counts)} run); budget overspend 0 by construction (reserve-before-spend; no LLM here)")


def _done(redis_url: str) -> int:
    async def count() -> int:
        client = redis.asyncio.Redis.from_url(redis_url)
        found = 0
        async for _ in client.scan_iter(match="ops:task:result:*", count=1000):
            found += 1
        await client.aclose()
        return found

    return asyncio.run(count())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--crash-tasks", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, running_redis() as server:
        tmp = Path(directory)
        ours_rate = asyncio.run(ours(server.url, args.tasks, tmp))
        arq_rate = asyncio.run(arq_baseline(server.url, args.tasks))
        print(f"## Throughput: {args.tasks} no-op tasks, concurrency 4, one Redis")
        print(f"ours (execute_task through the gate): {ours_rate:,.0f} tasks/s")
        if arq_rate:
            print(f"arq (a bare no-op job):               {arq_rate:,.0f} tasks/s  -> ratio {ours_rate / arq_rate:.2f}x")
        print()
        crash_run(server.url, args.crash_tasks, args.workers, tmp)


if __name__ == "__main__":
    main()
