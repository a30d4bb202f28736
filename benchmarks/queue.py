"""The task queue on one Redis, side by side in one run.

    .venv/bin/python benchmarks/queue.py [--tasks 2000] [--rounds 3] [--crash-tasks 1000] [--workers 3]
    .venv/bin/python benchmarks/queue.py --skip-throughput --crash-tasks 100 --keep /tmp/run   # keep logs

Needs redis-server on PATH (Debian: redis-server) and `pip install -e ".[bench]"` for arq. About 4 minutes
on two cores, nearly all of it the crash run.

1. Throughput. N no-op tasks through our worker (each one a whole `execute_task` through the governance
   gate; the offline planner finds nothing to do in "noop", so the task ends after the gate and one plan)
   vs arq's worker running a no-op job, both at concurrency 4, on the same Redis flushed before each
   measurement. `--rounds` rounds, the order of the two swapped each round (a shared machine is noisy).
   Printed: each round; the median tasks/s of each; the median of the per-round ratios ours/arq (goal
   >= 1.0x); the commands Redis ran per task while each worker drained the queue (commands inside Lua
   scripts included), from INFO commandstats.

2. Crash run. T tasks "deploy demo-app to preview" (task ids crash-0000...), W processes of
   `python -m ops_agent worker --concurrency 2` sharing one queue, one SQLite database and one agent (so
   one budget, on Redis). Every `--kill-interval-s` or so (0.5x to 1.5x) a random worker that has been up
   2.5 s is SIGKILLed and started again, until every task has a result (or was dead-lettered); then each
   gets SIGTERM once it is reading, and should exit 0. Config: queue.claim_idle_s 5 (a dead worker's task
   is reclaimed after 5 s, not 30), queue.retry_delay_s 1. Around the workers, in this process:
   - the Vercel emulator (`sandbox.vercel`), where each task's deploy lands; builds take `--build-time-s`
     so that kills land mid-task;
   - a fake Anthropic Messages API (benchmarks/fake_anthropic.py), so the Claude planner plans every task:
     a `deploy` tool_use, then, after the tool_result, an end_turn; replies carry the contract examples'
     usage (5,821 tokens a task, cache tokens included, as the ledger counts them); it counts what it served;
   - a token budget (governance.budget.hourly_tokens; USD limits set out of the way) worth `--budget-share`
     of the tasks if each ran once, so the rest must be refused (status `refused`, budget exceeded).
   Printed:
   - SIGKILLs, and how many hit a worker holding tasks (pending entries of its consumer at that moment);
   - reclaimed: "Reclaimed task" warnings in the workers' logs (a dead worker's task taken by another);
     live workers' tasks claimed away (heartbeat too late); waits for a dead worker's task lock or step
     lease ("met an outage"); deploy steps replayed from an earlier delivery; finished tasks skipped;
   - results by status; tasks lost (goal 0): submitted tasks with no stored result (dead-lettered ones
     included, and shown apart);
   - side effects repeated (goal 0): emulator deployments beyond one per idempotency key (each deploy step's
     key, made from task id, tool and arguments, is in the deployment's meta), and the tasks that touched;
   - results vs side effects (goal 0): tasks deployed whose stored result shows no successful deploy step,
     and results showing a deploy the emulator does not have; then the results not `completed`, by summary;
   - budget: tokens the fake served vs the hourly limit, overspend = max(0, served - limit) (goal 0); the
     Redis ledger's usage (RedisCostLedger.usage) and its parts, settled replies plus reservations never
     settled because their worker was killed mid-request (held at their worst case; booked as spent when
     their lease ends); and max(0, served - ledger), spend the ledger does not know about (goal 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on the path, and its name would hide the standard
# library's `queue` (which redis imports): take the folder off before anything imports it.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import redis.asyncio  # noqa: E402
import yaml  # noqa: E402

from benchmarks.fake_anthropic import FakeAnthropic  # noqa: E402
from ops_agent.config import CONFIG_FILE_VARIABLE, ENVIRONMENT, load_settings  # noqa: E402
from ops_agent.governance.rate_limit import RateLimiter, RateLimits  # noqa: E402
from ops_agent.governance.redis_keys import GovernanceKeys  # noqa: E402
from ops_agent.governance.redis_ledger import RedisCostLedger  # noqa: E402
from ops_agent.ooda.loop import step_key  # noqa: E402
from ops_agent.services import open_services  # noqa: E402
from ops_agent.tools.deployment.models import IDEMPOTENCY_META  # noqa: E402
from ops_agent.worker import QueueKeys, TaskQueue, Worker  # noqa: E402
from sandbox.vercel import EmulatorConfig, VercelEmulator  # noqa: E402
from tests.redis_server import running_redis  # noqa: E402

NOOP_TASK = "noop"  # the planner understands nothing in it: the task ends after the gate and one plan
THROUGHPUT_CONCURRENCY = 4

DEPLOY_TASK = "deploy demo-app to preview"  # a new agent, on probation, may deploy previews
DEPLOY_TOOL = "deploy"
DEPLOY_INPUT = {"project": "demo-app", "environment": "preview"}
WORKER_CONCURRENCY = 2
PREFIX = "ops:"  # the default key prefix, as `ops-agent worker` uses it
START_GRACE_S = 2.5  # a worker younger than this is still importing: killing it would test nothing


# -- 1. throughput -------------------------------------------------------------------------------------


@dataclass
class Measured:
    rate: float  # tasks/s
    commands: Counter[str]  # Redis commands the worker sent while it drained the queue, by name

    def per_task(self, tasks: int) -> str:
        top = ", ".join(f"{name} {n / tasks:.1f}" for name, n in self.commands.most_common(4))
        return f"{sum(self.commands.values()) / tasks:.1f} ({top})"


async def ours(redis_url: str, tasks: int, db: Path) -> Measured:
    settings = load_settings(environ={"OPS_AGENT_DB": str(db), "REDIS_URL": redis_url, "OPS_AGENT_LOG_LEVEL": "WARNING"})
    client = redis.asyncio.Redis.from_url(redis_url)
    queue = TaskQueue(client, prefix="bench:")
    await queue.ensure_group()
    for _ in range(tasks):
        await queue.submit(NOOP_TASK)
    async with open_services(settings, background=False) as services:
        services.gate.rate_limiter = RateLimiter(RateLimits.off())  # throughput of the queue, not of the limit
        await client.config_resetstat()
        started = time.perf_counter()
        await Worker(services, queue, burst=True, poll_delay_s=0, concurrency=THROUGHPUT_CONCURRENCY).run()
        elapsed = time.perf_counter() - started
    commands = await _command_counts(client)
    await client.aclose()
    return Measured(tasks / elapsed, commands)


async def arq_baseline(redis_url: str, tasks: int) -> Measured:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker as ArqWorker
    from arq.worker import func

    async def noop(ctx: dict) -> None:
        return None

    settings = RedisSettings.from_dsn(redis_url)
    pool = await create_pool(settings)
    for _ in range(tasks):
        await pool.enqueue_job("noop")
    worker = ArqWorker(functions=[func(noop, name="noop")], redis_settings=settings, burst=True, poll_delay=0,
                       max_jobs=THROUGHPUT_CONCURRENCY, handle_signals=False, keep_result=0)
    await pool.config_resetstat()
    started = time.perf_counter()
    await worker.main()
    elapsed = time.perf_counter() - started
    await worker.close()
    commands = await _command_counts(pool)
    await pool.aclose()
    return Measured(tasks / elapsed, commands)


async def _command_counts(client: redis.asyncio.Redis) -> Counter[str]:
    """Redis's own count of the commands it ran since CONFIG RESETSTAT (less this INFO itself)."""
    stats = await client.info("commandstats")
    counts = Counter({name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()})
    counts["info"] -= 1
    return +counts


def throughput(redis_url: str, tasks: int, rounds: int, tmp: Path) -> None:
    try:
        import arq  # noqa: F401
    except ImportError:
        print("arq is not installed (pip install -e '.[bench]'): no baseline, throughput skipped", file=sys.stderr)
        return
    print(f"## Throughput: {tasks} no-op tasks, concurrency {THROUGHPUT_CONCURRENCY}, one Redis, {rounds} rounds")
    rates: dict[str, list[float]] = {"ours": [], "arq": []}
    ratios = []
    last: dict[str, Measured] = {}
    for number in range(1, rounds + 1):
        order = ["ours", "arq"] if number % 2 else ["arq", "ours"]  # swapped each round: no side always first
        for side in order:
            _flush(redis_url)
            if side == "ours":
                last[side] = asyncio.run(ours(redis_url, tasks, tmp / f"ours-{number}.db"))
            else:
                last[side] = asyncio.run(arq_baseline(redis_url, tasks))
            rates[side].append(last[side].rate)
        ratios.append(last["ours"].rate / last["arq"].rate)
        print(f"round {number} ({' then '.join(order)}): ours {last['ours'].rate:,.0f} tasks/s, "
              f"arq {last['arq'].rate:,.0f} tasks/s, ratio {ratios[-1]:.2f}x")
    print(f"median: ours (execute_task through the gate) {statistics.median(rates['ours']):,.0f} tasks/s; "
          f"arq (a bare no-op job) {statistics.median(rates['arq']):,.0f} tasks/s")
    print(f"median of the per-round ratios ours/arq: {statistics.median(ratios):.2f}x (goal >= 1.0x)")
    print(f"Redis commands per task (last round): ours {last['ours'].per_task(tasks)}; "
          f"arq {last['arq'].per_task(tasks)}")
    _flush(redis_url)


def _flush(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.flushall()


# -- 2. crash run --------------------------------------------------------------------------------------


@dataclass
class WorkerPool:
    """W `ops-agent worker` processes; each start gets its own log file, so a killed worker's log is kept."""

    command: list[str]
    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    log_files: list[Path] = field(default_factory=list)
    starts: int = 0

    def start(self, count: int) -> None:
        for _ in range(count):
            self.processes.append(None)  # type: ignore[arg-type]
            self.started_at.append(0.0)
            self.log_files.append(Path())
            self.restart(len(self.processes) - 1)

    def restart(self, slot: int) -> None:
        self.starts += 1
        self.log_files[slot] = self.logs / f"worker-{self.starts:03d}.log"
        with open(self.log_files[slot], "wb") as log:
            self.processes[slot] = subprocess.Popen(self.command, env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                                    stdout=log, stderr=subprocess.STDOUT)
        self.started_at[slot] = time.monotonic()

    def grown_up(self) -> list[int]:
        now = time.monotonic()
        return [slot for slot, started in enumerate(self.started_at) if now - started >= START_GRACE_S]

    def stop(self, timeout_s: float) -> list[int]:
        """SIGTERM all and wait; returns the exit codes (one that would not stop is killed: -9). A worker gets
        the signal only once it is reading (its handler is in place), so a clean stop exits 0."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(self._reading(slot) for slot in range(len(self.processes))):
            time.sleep(0.1)
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes

    def _reading(self, slot: int) -> bool:
        return self.processes[slot].poll() is not None or " reading " in self.log_files[slot].read_text(errors="replace")

    def claimed_away(self) -> tuple[int, int]:
        """Warnings "Task X was claimed by another worker": (while X still ran there, after X had finished
        there). The second kind is a heartbeat that read its list of tasks before one of them finished."""
        running = finished = 0
        for path in sorted(self.logs.glob("worker-*.log")):
            done: set[str] = set()
            for line in path.read_text(errors="replace").splitlines():
                if match := re.search(r"Task (\S+) finished: ", line):
                    done.add(match.group(1))
                elif match := re.search(r"Task (\S+) was claimed by another worker", line):
                    finished += match.group(1) in done
                    running += match.group(1) not in done
        return running, finished

    def count_in_logs(self, text: str) -> int:
        return sum(path.read_text(errors="replace").count(text) for path in sorted(self.logs.glob("worker-*.log")))


def crash_run(redis_url: str, args: argparse.Namespace, tmp: Path) -> None:
    tasks, workers = args.crash_tasks, args.workers
    task_ids = [f"crash-{i:04d}" for i in range(tasks)]
    deploy_key = {step_key(task_id, DEPLOY_TOOL, DEPLOY_INPUT): task_id for task_id in task_ids}
    fake = FakeAnthropic(DEPLOY_TOOL, DEPLOY_INPUT, final_text="Deployed demo-app to preview.")
    # Enough tokens for about budget_share of the tasks, if each ran exactly once to the end.
    hourly_tokens = round(args.budget_share * tasks * fake.tokens_per_task)
    emulator_config = EmulatorConfig(build_time_s=args.build_time_s, rate_limit=10**9, seed=5)
    with VercelEmulator(emulator_config) as emulator, fake:
        config = tmp / "crash.yaml"
        config.write_text(yaml.safe_dump({
            "governance": {
                "budget": {
                    "hourly_tokens": hourly_tokens, "daily_tokens": 10 * hourly_tokens,
                    "hourly_usd": 1_000_000, "daily_usd": 1_000_000,  # tokens are the budget that binds here
                },
                # Off: a thousand deploy tasks from one agent in minutes is the point here, not a runaway.
                "rate_limit": {"calls_per_minute": 0, "changes_per_minute": 0},
            },
            "vercel": {"projects": ["demo-app"], "poll_interval_s": 0.25},
            # A dead worker's task is reclaimed after 5 s instead of 30; a task waiting for a dead worker's
            # step lease is retried every second instead of every 5.
            "queue": {"claim_idle_s": 5, "retry_delay_s": 1},
        }))
        inherited = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT and k != CONFIG_FILE_VARIABLE}
        env = inherited | {
            CONFIG_FILE_VARIABLE: str(config),
            "REDIS_URL": redis_url,
            "OPS_AGENT_DB": str(tmp / "crash.db"),
            "OPS_AGENT_LOG_LEVEL": "INFO",  # "Reclaimed task" is a warning; replays and skips are info
            "VERCEL_API_URL": emulator.base_url,
            "VERCEL_TOKEN": emulator.token,
            "VERCEL_TEAM_ID": emulator.team_id,
            "ANTHROPIC_API_KEY": "sk-ant-api03-benchmark-not-a-real-key",
            "ANTHROPIC_BASE_URL": fake.base_url,
        }
        _submit(redis_url, task_ids)
        (tmp / "logs").mkdir()
        pool = WorkerPool([sys.executable, "-m", "ops_agent", "worker", "--concurrency", str(WORKER_CONCURRENCY)],
                          env, tmp / "logs")
        print(f"## Crash run: {tasks} tasks \"{DEPLOY_TASK}\", {workers} workers x concurrency "
              f"{WORKER_CONCURRENCY}, Claude planner on a fake Anthropic API, budget {hourly_tokens:,} tokens/hour "
              f"(about {args.budget_share:.0%} of the tasks)", flush=True)
        started = time.monotonic()
        kills = kills_holding = 0
        rng = random.Random(args.seed)
        with redis.Redis.from_url(redis_url) as client:
            pool.start(workers)
            deadline = started + args.timeout_s
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(0.5, 1.5) * args.kill_interval_s)
                if _finished(client, task_ids) == tasks:
                    break
                if candidates := pool.grown_up():
                    slot = rng.choice(candidates)
                    holding = _pending_of(client, pool.processes[slot].pid)
                    pool.processes[slot].send_signal(signal.SIGKILL)
                    pool.processes[slot].wait()
                    kills += 1
                    kills_holding += holding > 0
                    pool.restart(slot)
            elapsed = time.monotonic() - started
            exit_codes = pool.stop(timeout_s=60)
            report = _crash_figures(client, redis_url, task_ids, deploy_key, emulator, fake, hourly_tokens)
        timed_out = " (TIMED OUT before every task had a result)" if elapsed >= args.timeout_s else ""
        print(f"drained in {elapsed:.0f} s{timed_out}; {pool.starts} worker starts; "
              f"SIGTERM at the end: exit codes {exit_codes}")
        print(f"SIGKILLs: {kills} ({kills_holding} of them hit a worker holding tasks); "
              f"reclaimed: {pool.count_in_logs('Reclaimed task')} (\"Reclaimed task\" in the workers' logs)")
        claimed, after_finish = pool.claimed_away()
        print(f"live workers' tasks claimed away by another worker: {claimed}"
              + (f" (and {after_finish} such warnings logged after the task had finished on that worker: its "
                 "heartbeat raced the finish, nothing was claimed)" if after_finish else ""))
        print(f"waited for a dead worker's lock or step lease: {pool.count_in_logs('met an outage')} times; "
              f"deploy steps replayed from an earlier delivery: {pool.count_in_logs('already ran in an earlier delivery')}; "
              f"redeliveries of finished tasks skipped: {pool.count_in_logs('already has a result')}")
        for line in report:
            print(line)


def _submit(redis_url: str, task_ids: list[str]) -> None:
    async def submit() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        queue = TaskQueue(client, prefix=PREFIX)
        await queue.ensure_group()
        for task_id in task_ids:
            await queue.submit(DEPLOY_TASK, task_id=task_id)
        await client.aclose()

    asyncio.run(submit())


def _finished(client: redis.Redis, task_ids: list[str]) -> int:
    """Tasks with a stored result, plus tasks dead-lettered (they will never get one)."""
    keys = QueueKeys(PREFIX)
    with client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.exists(keys.result(task_id))
        results = sum(pipe.execute())
    return results + client.xlen(keys.dead_letter)


def _pending_of(client: redis.Redis, pid: int) -> int:
    """Entries the worker with this pid holds (its consumer is named host-pid-random)."""
    keys = QueueKeys(PREFIX)
    try:
        consumers = client.xinfo_consumers(keys.stream, "workers")
    except redis.ResponseError:
        return 0
    return sum(int(c["pending"]) for c in consumers if f"-{pid}-" in _text(c["name"]))


def _crash_figures(
    client: redis.Redis, redis_url: str, task_ids: list[str], deploy_key: dict[str, str], emulator: VercelEmulator,
    fake: FakeAnthropic, hourly_tokens: int,
) -> list[str]:
    keys = QueueKeys(PREFIX)
    raw = client.mget([keys.result(task_id) for task_id in task_ids])
    results = {task_id: json.loads(body) for task_id, body in zip(task_ids, raw, strict=True) if body is not None}
    statuses = Counter(result["status"] for result in results.values())
    dead = client.xlen(keys.dead_letter)
    lost = len(task_ids) - len(results)

    deployments = list(emulator.state.deployments.values())
    per_key = Counter(d.meta.get(IDEMPOTENCY_META) for d in deployments)
    repeated = {key: n for key, n in per_key.items() if n > 1}
    foreign = [key for key in per_key if key not in deploy_key]  # a deploy no task of ours asked for
    deployed_tasks = {deploy_key[key] for key in per_key if key in deploy_key}
    deployed_by_status = Counter(results[t]["status"] if t in results else "no result" for t in deployed_tasks)
    # A result should tell the truth about the side effect: a deploy step that succeeded iff a deployment exists.
    reported = {t for t, result in results.items()
                if any(step["tool"] == DEPLOY_TOOL and step["ok"] for step in result.get("steps", []))}
    unreported, phantom = deployed_tasks - reported, reported - deployed_tasks
    reasons = Counter((r["status"], _shape(r["summary"])) for r in results.values() if r["status"] != "completed")

    ledger = _ledger(client, redis_url)
    served, limit = fake.tokens_served, hourly_tokens
    by_status = ", ".join(f"{n} {status}" for status, n in statuses.most_common())
    unreported_by_status = ", ".join(
        f"{n} {status}" for status, n in Counter(results[t]["status"] if t in results else "no result"
                                                 for t in unreported).most_common())
    deployed_now = ", ".join(f"{n} now {status}" for status, n in deployed_by_status.most_common())
    lines = [
        f"results: {len(results)}/{len(task_ids)} ({by_status})",
        f"tasks lost: {lost} (goal 0)" + (f"; {dead} of them dead-lettered" if dead else ""),
        (f"deployments in the emulator: {len(deployments)} for {len(per_key)} distinct deploy keys "
         f"({len(deployed_tasks)} tasks deployed: {deployed_now})"),
        (f"side effects repeated: {len(deployments) - len(per_key)} extra deployments, "
         f"{len(repeated)} tasks deployed more than once (goal 0)")
        + (f"; {len(foreign)} deploy keys match no task" if foreign else ""),
        (f"results vs side effects: {len(unreported)} tasks deployed but their result shows no deploy"
         + (f" ({unreported_by_status})" if unreported else "")
         + f"; {len(phantom)} results show a deploy the emulator does not have (goal 0 each)"),
        "tasks not completed, by result:",
        *(f"  {n} {status}: {summary}" for (status, summary), n in reasons.most_common(5)),
        f"LLM: {fake.requests} requests served, {served:,} tokens; hourly limit {limit:,}",
        (f"Redis ledger usage (hour): {ledger['usage']:,} tokens = {ledger['settled']:,} settled + "
         f"{ledger['held']:,} held by {ledger['held_count']} reservation(s) never settled (their worker was killed "
         "mid-request: held at the worst case, booked as spent when the lease ends)"),
        (f"budget overspend: {max(0, served - limit):,} tokens (served - limit, goal 0); "
         f"spend the ledger missed: {max(0, served - ledger['usage']):,} tokens (served - ledger, goal 0)"),
    ]
    if repeated:
        examples = sorted(repeated.items(), key=lambda item: -item[1])[:5]
        lines.append("repeated deploy keys (task: deployments): "
                     + ", ".join(f"{deploy_key.get(k, k)}: {n}" for k, n in examples))
    return lines


def _shape(summary: str) -> str:
    """A result summary with its numbers and ids blanked, so that like results count together."""
    first = summary.splitlines()[0] if summary else ""
    return re.sub(r"\b(step-[0-9a-f]+|crash-\d+|\d[\d,]*)\b", "N", first)[:160]


def _ledger(client: redis.Redis, redis_url: str) -> dict[str, int]:
    """The agent's hourly token usage as the Redis ledger reports it, and its parts: settled tokens, and
    reservations still held (never settled)."""
    keys = GovernanceKeys(PREFIX)
    agents = [_text(k)[len(keys.limits("")):] for k in client.scan_iter(match=keys.limits("*"))]
    figures = {"usage": 0, "settled": 0, "held": 0, "held_count": 0}
    for agent in agents:
        figures["settled"] += sum(int(v) for v in client.hvals(keys.usage_tokens(agent)))
        for reservation in client.zrange(keys.leases(agent), 0, -1):
            tokens, state = client.hmget(keys.reservation(int(reservation)), "tokens", "state")
            if tokens is not None and _text(state) == "held":
                figures["held"] += int(tokens)
                figures["held_count"] += 1
        figures["usage"] += asyncio.run(_ledger_usage(redis_url, agent))
    return figures


async def _ledger_usage(redis_url: str, agent: str) -> int:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        return (await RedisCostLedger(client, prefix=PREFIX).usage(agent)).hour_tokens
    finally:
        await client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (ours and arq each round)")
    parser.add_argument("--crash-tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--budget-share", type=float, default=0.6, help="share of the crash tasks the budget affords")
    parser.add_argument("--build-time-s", type=float, default=1.0, help="emulator build time of one deploy")
    parser.add_argument("--kill-interval-s", type=float, default=4.0, help="mean time between SIGKILLs")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="give the crash run up after this long")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-crash", action="store_true")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (workers' logs, database)")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
    with tempfile.TemporaryDirectory() as directory, running_redis() as server:
        tmp = args.keep.resolve() if args.keep else Path(directory)
        if not args.skip_throughput:
            throughput(server.url, args.tasks, args.rounds, tmp)
            print()
        if not args.skip_crash:
            crash_run(server.url, args, tmp)


if __name__ == "__main__":
    main()
