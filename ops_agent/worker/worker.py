"""The worker: the seed's Task Execution Flow, fed from the Redis task queue.

    1. Task received from Redis queue       (this module)
    2. Budget check (daily + hourly)        (the gate, on `execute_task` and on each step)
    3. Permission check (based on reputation)
    4. Task execution                       (TaskLoop through the registry)
    5. Cost tracking                        (the gate's ledger)
    6. Reputation event recording           (the gate)

Outcomes: a report (completed, failed, refused — governance refusals and tool failures included) is stored
as the task's result and the entry acknowledged; it is not retried. An outage (governance unavailable,
Redis, another worker holding the task) hands the entry back for redelivery after `retry_defer_ms` without
counting the delivery, and the worker pauses reading for as long, so an outage never dead-letters a task. Other
infrastructure errors (a retryable upstream error, a crash) count: after `max_deliveries` the queue
dead-letters the task. A task that already has a result is acknowledged without running again, and inside a
task every side-effecting step runs once (`TaskQueue.run_once`), so redelivery never repeats a deploy or a
notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ops_agent.errors import (
    GovernanceRefusal,
    GovernanceUnavailable,
    OpsAgentError,
    RateLimited,
    SideEffectInProgress,
    UpstreamError,
)
from ops_agent.governance import Caller
from ops_agent.ooda import TaskReport
from ops_agent.worker.keys import DEFAULT_RETRY_DELAY_MS
from ops_agent.worker.queue import QueueEntry, TaskMessage, TaskQueue

if TYPE_CHECKING:
    from ops_agent.services import Services

__all__ = ["Worker", "is_outage", "is_retryable"]

log = logging.getLogger("ops_agent.worker")


def is_retryable(exc: BaseException) -> bool:
    """Infrastructure trouble that another delivery may not meet; everything else is the task's result."""
    if is_outage(exc):
        return True
    if isinstance(exc, UpstreamError):
        return exc.retryable
    return not isinstance(exc, OpsAgentError)  # a bug: retried, and dead-lettered if it keeps happening


def is_outage(exc: BaseException) -> bool:
    """A backend away for a while, the task busy elsewhere, or its agent over its rate limit (the backlog
    would only be refused faster): not the task's fault, so not counted."""
    return isinstance(exc, GovernanceUnavailable | SideEffectInProgress | RateLimited | RedisError | OSError)


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
        retry_defer_ms: int = DEFAULT_RETRY_DELAY_MS,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.services = services
        self.queue = queue
        self.agent = services.settings.governance.agent_name
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency
        self._read_batch = max(1, concurrency // 2)
        self.poll_delay_s = poll_delay_s
        self.burst = burst
        self.stop_timeout_s = stop_timeout_s
        self.retry_defer_ms = retry_defer_ms
        self.completed = self.retried = self.dead_lettered = self.skipped = self.returned = 0
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task] = set()
        self._held: dict[str, tuple[QueueEntry, str]] = {}  # entry id -> (entry, task lock token)
        self._resume_at = 0.0  # after an outage, reading pauses until then
        self._abandon_timer: asyncio.TimerHandle | None = None
        services.loop.step_guard = queue  # side-effecting steps of queued tasks run once

    @classmethod
    def from_settings(cls, services: Services, queue: TaskQueue, **overrides: Any) -> Worker:
        settings = services.settings.queue
        options: dict[str, Any] = {
            "concurrency": settings.concurrency, "stop_timeout_s": settings.stop_timeout_s,
            "retry_defer_ms": round(settings.retry_delay_s * 1000),
        }
        return cls(services, queue, **(options | overrides))

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
        heartbeat = asyncio.create_task(self._heartbeat(), name="worker-heartbeat")
        try:
            await self._read_until_stopped()
            if self._in_flight:  # finished, or cancelled by the stop timeout
                await asyncio.gather(*self._in_flight, return_exceptions=True)
        finally:
            heartbeat.cancel()
            self._abandon()  # only when run() itself is cancelled is anything still in flight
            await asyncio.gather(heartbeat, *self._in_flight, return_exceptions=True)
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

    async def _read_until_stopped(self) -> None:
        block_ms = round(self.poll_delay_s * 1000) or None
        backoff_s = 0.1
        while not self._stopping.is_set():
            room = self.concurrency - len(self._in_flight)
            pause_s = self._resume_at - asyncio.get_running_loop().time()
            # Read when half the slots are free, not at each one: fewer, larger reads while busy.
            if room < self._read_batch or pause_s > 0:
                await self._wait_for_room(pause_s if pause_s > 0 else None)
                continue
            try:
                entries = await self.queue.read(self.consumer, room, block_ms)
                if not entries and self.burst:
                    if not self._in_flight and await self.queue.pending_count() == 0:
                        log.info("worker %s: queue drained (burst)", self.consumer)
                        return
                    await self._wait_for_room(min(self.queue.claim_interval_s, 0.05))  # a retry falling due
                backoff_s = 0.1
            except (RedisError, OSError) as exc:
                log.warning("⚠️ Redis unavailable (%s); reading again in %g s", type(exc).__name__, backoff_s)
                await self._wait_for_room(backoff_s, until_stopped_only=True)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            for entry in entries:
                task = asyncio.create_task(self._handle(entry), name=f"task {entry.task_id}")
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _wait_for_room(self, timeout_s: float | None, *, until_stopped_only: bool = False) -> None:
        """Sleep until a task finishes (unless `until_stopped_only`), `stop()` is called or `timeout_s` passes."""
        waiters = [asyncio.ensure_future(self._stopping.wait())]
        if self._in_flight and not until_stopped_only:
            waiters.append(asyncio.ensure_future(asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)))
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _handle(self, entry: QueueEntry) -> None:
        queue = self.queue
        if entry.message is None:
            self.dead_lettered += 1
            await queue.dead_letter(entry, f"rejected payload: {entry.problem}")
            return
        message = entry.message
        log.info("✅ Task received from Redis queue: %s (priority %s, delivery %d of %d)",
                 message.task_id, message.priority, entry.deliveries, queue.max_deliveries)
        token = f"{self.consumer}:{entry.entry_id}"
        try:
            state = await queue.begin(message.task_id, token)
            if state == "done":
                self.skipped += 1
                log.info("task %s already has a result: acknowledged without running it again", message.task_id)
                await queue.ack(entry)
                return
            if state == "busy":
                raise SideEffectInProgress(f"task {message.task_id}")
            self._held[entry.entry_id] = (entry, token)
            report = await self._execute(message)
            await queue.finish(entry, message.task_id, report.model_dump_json(), token)
            self.completed += 1
            log.info("✅ Task %s finished: %s (%s)", message.task_id, report.status, _first_line(report.summary))
        except asyncio.CancelledError:
            self.returned += 1
            with contextlib.suppress(Exception):
                await asyncio.shield(queue.release(entry, token=token, counts=False))
            log.warning("⚠️ Task %s returned to the queue unfinished (worker stopping)", message.task_id)
            raise
        except Exception as exc:  # noqa: BLE001 - _retry logs it, then retries or dead-letters the task
            await self._retry(entry, token, exc)
        finally:
            self._held.pop(entry.entry_id, None)

    async def _retry(self, entry: QueueEntry, token: str, exc: Exception) -> None:
        if isinstance(exc, OpsAgentError):
            reason = exc.public_message
        elif isinstance(exc, RedisError | OSError):  # its text names the server's address
            reason = f"Redis unavailable ({type(exc).__name__})"
        else:
            reason = self.services.gate.redactor.text(f"{type(exc).__name__}: {exc}")
        outage = is_outage(exc)
        if not isinstance(exc, OpsAgentError | RedisError | OSError):
            log.exception("task %s crashed the worker step", entry.task_id)
        if outage:  # pause reading too, instead of taking every task through the same outage
            self._resume_at = asyncio.get_running_loop().time() + self.retry_defer_ms / 1000
        try:
            dead = await self.queue.retry_or_dead_letter(
                entry, reason, token=token, defer_ms=self.retry_defer_ms, counts=not outage
            )
        except (RedisError, OSError):
            log.warning("⚠️ Task %s failed (%s) and Redis is unavailable: it will be reclaimed", entry.task_id, reason)
            return
        if dead:
            self.dead_lettered += 1
        else:
            self.retried += 1
            log.warning("⚠️ Task %s %s on delivery %d of %d, retrying in %g s: %s", entry.task_id,
                        "met an outage" if outage else "failed", entry.deliveries, self.queue.max_deliveries,
                        self.retry_defer_ms / 1000, reason)

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

    async def _heartbeat(self) -> None:
        """Keep the entries and task locks of running tasks fresh, so no live worker's task is reclaimed."""
        while True:
            await asyncio.sleep(self.queue.claim_idle_ms / 3000)
            held = list(self._held.values())
            if not held:
                continue
            try:
                owned = await self.queue.touch(held)
            except (RedisError, OSError) as exc:
                log.warning("⚠️ heartbeat for %d tasks failed: %s", len(held), type(exc).__name__)
                continue
            for (entry, _), still_ours in zip(held, owned, strict=True):
                if not still_ours and entry.entry_id in self._held:  # not merely finished meanwhile
                    log.warning("⚠️ Task %s was claimed by another worker", entry.task_id)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""
