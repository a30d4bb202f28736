"""The worker: the seed's Task Execution Flow, fed from the Redis task queue.

    1. Task received from Redis queue       (this module)
    2. Budget check (daily + hourly)        (the gate, on `execute_task` and on each step)
    3. Permission check (based on reputation)
    4. Task execution                       (TaskLoop through the registry)
    5. Cost tracking                        (the gate's ledger)
    6. Reputation event recording           (the gate)

Outcomes: a report (completed, failed, refused — governance refusals and tool failures included) is stored
as the task's result and the entry acknowledged; it is not retried. Infrastructure errors (governance
unavailable, a retryable upstream error, Redis trouble, a crash) leave the entry pending for redelivery after
`retry_defer_ms`, until the queue dead-letters it. A task whose result is stored, or whose run is marked done,
is acknowledged without running again, so redelivery never repeats it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ops_agent.errors import (
    GovernanceRefusal,
    GovernanceUnavailable,
    OpsAgentError,
    UpstreamError,
)
from ops_agent.governance import Caller
from ops_agent.ooda import TaskReport
from ops_agent.worker.queue import (
    QueueEntry,
    SideEffectInProgress,
    TaskMessage,
    TaskQueue,
)

if TYPE_CHECKING:
    from ops_agent.services import Services

__all__ = ["Worker", "is_retryable"]

log = logging.getLogger("ops_agent.worker")


def is_retryable(exc: BaseException) -> bool:
    """Infrastructure trouble that another delivery may not meet; everything else is the task's result."""
    if isinstance(exc, GovernanceUnavailable | SideEffectInProgress | RedisError | OSError):
        return True
    if isinstance(exc, UpstreamError):
        return exc.retryable
    return not isinstance(exc, OpsAgentError)  # a bug: retried, and dead-lettered if it keeps happening


class Worker:
    def __init__(
        self,
        services: Services,
        queue: TaskQueue,
        *,
        consumer: str | None = None,
        concurrency: int = 1,
        poll_delay_s: float = 1.0,
        burst: bool = False,
        stop_timeout_s: float = 30.0,
        retry_defer_ms: int = 5_000,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.services = services
        self.queue = queue
        self.agent = services.settings.governance.agent_name
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency
        self.poll_delay_s = poll_delay_s
        self.burst = burst
        self.stop_timeout_s = stop_timeout_s
        self.retry_defer_ms = retry_defer_ms
        self.completed = self.retried = self.dead_lettered = self.skipped = self.returned = 0
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task] = set()
        self._abandon_timer: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Read and run tasks until `stop()` (or, in burst mode, until the queue is drained)."""
        await self.queue.ensure_group()
        log.info("✅ Worker %s reading %s as group %s (concurrency %d%s)", self.consumer, self.queue.keys.stream,
                 self.queue.group, self.concurrency, ", burst" if self.burst else "")
        slots = [asyncio.create_task(self._slot(), name=f"worker-slot-{n}") for n in range(self.concurrency)]
        try:
            await asyncio.gather(*slots)
        finally:
            for slot in slots:
                slot.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            if self._abandon_timer is not None:
                self._abandon_timer.cancel()
        log.info("worker %s stopped: %d completed, %d skipped as done, %d retried, %d dead-lettered, %d returned",
                 self.consumer, self.completed, self.skipped, self.retried, self.dead_lettered, self.returned)

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop reading; tasks in flight get `timeout_s` to finish, then are returned to the queue.
        A second call returns them at once (the second Ctrl-C)."""
        if self._stopping.is_set():
            self._abandon()
            return
        timeout_s = self.stop_timeout_s if timeout_s is None else timeout_s
        log.info("worker %s stopping: no new tasks; %d in flight get %g s to finish",
                 self.consumer, len(self._in_flight), timeout_s)
        self._stopping.set()
        self._abandon_timer = asyncio.get_running_loop().call_later(timeout_s, self._abandon)

    def _abandon(self) -> None:
        for task in list(self._in_flight):
            task.cancel()

    async def _slot(self) -> None:
        block_ms = round(self.poll_delay_s * 1000) or None
        backoff_s = 0.1
        while not self._stopping.is_set():
            try:
                entries = await self.queue.read(self.consumer, 1, block_ms)
                if not entries and self.burst:
                    if await self.queue.pending_count() == 0 and not self._in_flight:
                        log.info("worker %s: queue drained (burst)", self.consumer)
                        self._stopping.set()
                        return
                    await self._sleep(min(self.queue.claim_interval_s, 0.05))  # waiting for a retry to fall due
                backoff_s = 0.1
            except (RedisError, OSError) as exc:
                log.warning("⚠️ Redis unavailable (%s); reading again in %g s", type(exc).__name__, backoff_s)
                await self._sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            for entry in entries:
                task = asyncio.create_task(self._handle(entry), name=f"task {entry.task_id}")
                self._in_flight.add(task)
                try:
                    await asyncio.shield(task)  # a cancelled slot does not cancel the task: stop() decides
                except asyncio.CancelledError:
                    if not task.done():
                        raise
                finally:
                    self._in_flight.discard(task)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _handle(self, entry: QueueEntry) -> None:
        queue = self.queue
        if entry.message is None:
            self.dead_lettered += 1
            await queue.dead_letter(entry, f"rejected payload: {entry.problem}")
            return
        message = entry.message
        log.info("✅ Task received from Redis queue: %s (priority %s, delivery %d of %d)",
                 message.task_id, message.priority, entry.deliveries, queue.max_deliveries)
        heartbeat = asyncio.create_task(self._heartbeat(entry), name=f"heartbeat {message.task_id}")
        try:
            if await queue.result(message.task_id) is not None:
                self.skipped += 1
                log.info("task %s already has a result: acknowledged without running it again", message.task_id)
                await queue.ack(entry)
                return
            async with queue.once(f"task:{message.task_id}") as first:
                if first:
                    report = await self._execute(message)
                    await queue.set_result(message.task_id, report.model_dump_json())
            await queue.ack(entry)
            if not first:
                self.skipped += 1
                log.info("task %s already ran: acknowledged without running it again", message.task_id)
                return
            self.completed += 1
            log.info("✅ Task %s finished: %s (%s)", message.task_id, report.status, _first_line(report.summary))
        except asyncio.CancelledError:
            self.returned += 1
            with contextlib.suppress(Exception):
                await asyncio.shield(queue.release(entry))
            log.warning("⚠️ Task %s returned to the queue unfinished (worker stopping)", message.task_id)
            raise
        except Exception as exc:
            reason = exc.public_message if isinstance(exc, OpsAgentError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, OpsAgentError | RedisError | OSError):
                log.exception("task %s crashed the worker step", message.task_id)
            try:
                dead = await queue.retry_or_dead_letter(entry, reason, defer_ms=self.retry_defer_ms)
            except (RedisError, OSError):
                log.warning("⚠️ Task %s failed (%s) and Redis is unavailable: it will be reclaimed",
                            message.task_id, reason)
                return
            if dead:
                self.dead_lettered += 1
            else:
                self.retried += 1
                log.warning("⚠️ Task %s failed on delivery %d of %d, retrying in %g s: %s", message.task_id,
                            entry.deliveries, queue.max_deliveries, self.retry_defer_ms / 1000, reason)
        finally:
            heartbeat.cancel()

    async def _execute(self, message: TaskMessage) -> TaskReport:
        """Run through the registry, so through the gate: budget, permission, execution, cost, reputation."""
        caller = Caller(self.agent, via="worker", task_id=message.task_id)
        try:
            report = await self.services.registry.invoke(
                caller, "execute_task", {"task": message.task, "priority": message.priority}
            )
        except Exception as exc:
            if is_retryable(exc):
                raise
            assert isinstance(exc, OpsAgentError)
            status = "refused" if isinstance(exc, GovernanceRefusal) else "failed"
            return TaskReport(
                task_id=message.task_id, task=message.task, priority=message.priority, status=status,
                summary=exc.public_message, planner=self.services.loop.planner.name,
            )
        assert isinstance(report, TaskReport)
        return report

    async def _heartbeat(self, entry: QueueEntry) -> None:
        """Keep the entry's idle time low while it runs, so no live worker's task is reclaimed."""
        while True:
            await asyncio.sleep(self.queue.claim_idle_ms / 3000)
            try:
                if not await self.queue.touch(entry):
                    log.warning("⚠️ Task %s was claimed by another worker", entry.task_id)
                    return
            except (RedisError, OSError) as exc:
                log.warning("⚠️ heartbeat for task %s failed: %s", entry.task_id, type(exc).__name__)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""
