"""The task queue on a Redis stream with a consumer group.

A task is one stream entry. A worker reads it (XREADGROUP '>'), runs it, stores the result and then
acknowledges and deletes the entry, so the stream holds only the backlog and the work in flight. An entry
that is not acknowledged stays pending: a worker that died leaves its entries idle, and a live worker
claims entries idle longer than `claim_idle_ms` (XAUTOCLAIM). A worker running a long task keeps its entry
fresh with a heartbeat, so only a dead worker's entries are claimed. A retry is `retry_or_dead_letter(entry,
error, defer_ms=…)`: the entry stays pending and becomes claimable after `defer_ms`; after `max_deliveries`
deliveries it moves to the dead-letter stream and a `task_dead_lettered` event is published for the alert
pipeline. `once(key)` guards a side effect so a redelivered task never repeats it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ops_agent.errors import InvalidArguments, OpsAgentError
from ops_agent.ooda import Priority
from ops_agent.worker.keys import (
    DEFAULT_CLAIM_IDLE_MS,
    DEFAULT_GROUP,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_ONCE_LEASE_MS,
    DEFAULT_ONCE_TTL_S,
    DEFAULT_PREFIX,
    DEFAULT_RESULT_TTL_S,
    DEFAULT_SUBMIT_KEY_TTL_S,
    EVENTS_MAXLEN,
    QueueKeys,
)

__all__ = ["QueueEntry", "SideEffectInProgress", "TaskMessage", "TaskQueue", "new_task_id"]

log = logging.getLogger("ops_agent.worker")

# Refresh (idle_ms empty) or set the idle time of a pending entry, only while `consumer` owns it: a worker
# whose entry was claimed by another never takes it back. JUSTID: the delivery count is not incremented.
_TOUCH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
if ARGV[4] == '' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
else
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
end
return 1
"""
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_DONE = "done"


def new_task_id() -> str:
    return f"task-{uuid.uuid4().hex[:12]}"  # the shape TaskLoop gives tasks it names itself


class TaskMessage(BaseModel):
    """A queue payload: validated when submitted and again when read."""

    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$", description="Stable across redeliveries.")
    task: str = Field(min_length=1, max_length=4000, description="What to do, in plain language.")
    priority: Priority = "medium"
    submitted_at: float = Field(description="Unix time of the submit, seconds.")


@dataclass
class QueueEntry:
    """One delivery of a stream entry to `consumer`. `message` is None when the payload was rejected."""

    entry_id: str
    consumer: str
    deliveries: int
    fields: dict[str, str]
    message: TaskMessage | None = None
    problem: str | None = None

    @property
    def task_id(self) -> str:
        return self.message.task_id if self.message else self.fields.get("task_id") or self.entry_id


class SideEffectInProgress(OpsAgentError):
    """Another live worker holds the lease of this side effect; try again later."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} is being run by another worker")
        self.key = key


@dataclass
class TaskQueue:
    redis: Redis
    _: KW_ONLY
    prefix: str = DEFAULT_PREFIX
    group: str = DEFAULT_GROUP
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS
    result_ttl_s: int = DEFAULT_RESULT_TTL_S
    submit_key_ttl_s: int = DEFAULT_SUBMIT_KEY_TTL_S
    keys: QueueKeys = field(init=False)
    _group_ready: bool = field(default=False, init=False)
    _claim_cursor: str = field(default="0-0", init=False)
    _next_claim_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.max_deliveries < 1 or self.claim_idle_ms < 1:
            raise ValueError("max_deliveries and claim_idle_ms must be positive")
        self.keys = QueueKeys(self.prefix)

    @property
    def claim_interval_s(self) -> float:
        """How often `read` looks for entries to reclaim."""
        return min(self.claim_idle_ms / 4000, 1.0)

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:  # id 0: tasks submitted before the first worker started are read too
            await self.redis.xgroup_create(self.keys.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # -- producing --------------------------------------------------------------------------------------

    async def submit(
        self, task: str, priority: str = "medium", *, task_id: str | None = None, idempotency_key: str | None = None
    ) -> str:
        """Enqueue a task and return its id. With an idempotency key, a repeated submit returns the first id."""
        try:
            message = TaskMessage(
                task_id=task_id or new_task_id(), task=task, priority=priority, submitted_at=time.time()
            )
        except ValidationError as exc:
            problems = [(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors(include_url=False)]
            raise InvalidArguments("submit", problems) from None
        claimed = False
        if idempotency_key is not None:
            submitted = self.keys.submitted(idempotency_key)
            claimed = bool(await self.redis.set(submitted, message.task_id, nx=True, ex=self.submit_key_ttl_s))
            if not claimed:
                existing = await self.redis.get(submitted)
                if existing is not None:
                    return _text(existing)
        try:
            await self.redis.xadd(self.keys.stream, {"task_id": message.task_id, "payload": message.model_dump_json()})
        except BaseException:
            if claimed:
                await self.redis.delete(self.keys.submitted(idempotency_key or ""))
            raise
        return message.task_id

    # -- consuming --------------------------------------------------------------------------------------

    async def read(self, consumer: str, count: int = 1, block_ms: int | None = None) -> list[QueueEntry]:
        """Entries for `consumer`: first those reclaimed from dead workers, else new ones (blocking up to
        `block_ms`; None or 0 does not block). Reclaimed entries past `max_deliveries` are dead-lettered."""
        try:
            return await self._read(consumer, count, block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False  # the stream was deleted (FLUSHALL?): recreate and read again
            return await self._read(consumer, count, block_ms)

    async def _read(self, consumer: str, count: int, block_ms: int | None) -> list[QueueEntry]:
        await self.ensure_group()
        now = time.monotonic()
        if now >= self._next_claim_at:
            self._next_claim_at = now + self.claim_interval_s
            reclaimed = await self._reclaim(consumer, count)
            if reclaimed:
                return reclaimed
        reply = await self.redis.xreadgroup(
            self.group, consumer, {self.keys.stream: ">"}, count=count, block=block_ms or None
        )
        return [_entry(entry_id, fields, consumer, 1) for _, messages in reply or [] for entry_id, fields in messages]

    async def _reclaim(self, consumer: str, count: int) -> list[QueueEntry]:
        reply = await self.redis.xautoclaim(
            self.keys.stream, self.group, consumer, self.claim_idle_ms, start_id=self._claim_cursor, count=count
        )
        self._claim_cursor = _text(reply[0])
        messages = [(entry_id, fields) for entry_id, fields in reply[1] if fields]
        if not messages:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in messages:
                pipe.xpending_range(self.keys.stream, self.group, min=entry_id, max=entry_id, count=1)
            pending = await pipe.execute()
        entries = []
        for (entry_id, fields), info in zip(messages, pending, strict=True):
            deliveries = int(info[0]["times_delivered"]) if info else self.max_deliveries + 1
            entry = _entry(entry_id, fields, consumer, deliveries)
            log.warning("⚠️ Reclaimed task %s (delivery %d): its worker stopped without finishing it",
                        entry.task_id, deliveries)
            if deliveries > self.max_deliveries:
                await self.dead_letter(entry, f"delivered {deliveries} times without finishing")
            else:
                entries.append(entry)
        return entries

    async def ack(self, entry: QueueEntry) -> None:
        """Done: acknowledge and delete, so the stream keeps only the backlog and the work in flight."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.stream, self.group, entry.entry_id)
            pipe.xdel(self.keys.stream, entry.entry_id)
            await pipe.execute()

    async def touch(self, entry: QueueEntry) -> bool:
        """Heartbeat: reset the entry's idle time while its consumer still owns it. False if it was claimed."""
        return bool(await self.redis.eval(_TOUCH, 1, self.keys.stream, self.group, entry.consumer, entry.entry_id, ""))

    async def release(self, entry: QueueEntry, *, defer_ms: int = 0) -> bool:
        """Give the entry back without acknowledging it: any worker may claim it after `defer_ms`."""
        idle_ms = max(0, self.claim_idle_ms - defer_ms)
        return bool(
            await self.redis.eval(_TOUCH, 1, self.keys.stream, self.group, entry.consumer, entry.entry_id, idle_ms)
        )

    async def retry_or_dead_letter(self, entry: QueueEntry, error: str, *, defer_ms: int = 0) -> bool:
        """After a failure worth retrying: deliver again after `defer_ms`, or, once the entry has had
        `max_deliveries` deliveries, dead-letter it. True when it was dead-lettered."""
        if entry.deliveries >= self.max_deliveries:
            await self.dead_letter(entry, error)
            return True
        await self.release(entry, defer_ms=defer_ms)
        return False

    async def dead_letter(self, entry: QueueEntry, error: str) -> None:
        """Move the entry to the dead-letter stream and publish `task_dead_lettered` on the events stream."""
        now = time.time()
        record = {
            "task_id": entry.task_id,
            "entry_id": entry.entry_id,
            "deliveries": str(entry.deliveries),
            "error": error[:2000],
            "payload": entry.fields.get("payload", ""),
            "at": f"{now:.3f}",
        }
        event = {
            "type": "task_dead_lettered",
            "severity": "critical",
            "task_id": entry.task_id,
            "deliveries": str(entry.deliveries),
            "error": error[:500],
            "at": f"{now:.3f}",
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.dead_letter, record)
            pipe.xack(self.keys.stream, self.group, entry.entry_id)
            pipe.xdel(self.keys.stream, entry.entry_id)
            pipe.xadd(self.keys.events, event, maxlen=EVENTS_MAXLEN, approximate=True)
            await pipe.execute()
        log.error("❌ Task %s moved to the dead-letter stream after %d deliveries: %s",
                  entry.task_id, entry.deliveries, error)

    # -- results and inspection -------------------------------------------------------------------------

    async def set_result(self, task_id: str, report_json: str) -> None:
        await self.redis.set(self.keys.result(task_id), report_json, ex=self.result_ttl_s)

    async def result(self, task_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.result(task_id))
        return None if raw is None else json.loads(raw)

    async def dead_letters(self, limit: int = 50) -> list[dict[str, str]]:
        """The newest dead-lettered tasks first."""
        reply = await self.redis.xrevrange(self.keys.dead_letter, count=limit)
        return [{"id": _text(entry_id), **_fields(fields)} for entry_id, fields in reply]

    async def events(self, limit: int = 50) -> list[dict[str, str]]:
        reply = await self.redis.xrevrange(self.keys.events, count=limit)
        return [{"id": _text(entry_id), **_fields(fields)} for entry_id, fields in reply]

    async def pending_count(self) -> int:
        """Entries delivered and not yet acknowledged (in flight, awaiting a retry, or left by a dead worker)."""
        await self.ensure_group()
        summary = await self.redis.xpending(self.keys.stream, self.group)
        return int(summary["pending"])

    async def backlog(self) -> int:
        """Entries in the stream: not yet delivered plus pending (acknowledged ones are deleted)."""
        return int(await self.redis.xlen(self.keys.stream))

    # -- idempotent side effects ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def once(
        self, key: str, *, ttl_s: int = DEFAULT_ONCE_TTL_S, lease_ms: int = DEFAULT_ONCE_LEASE_MS
    ) -> AsyncIterator[bool]:
        """`async with queue.once(key) as first:` — `first` is False when the step already completed.

        While the body runs, the key holds a lease (renewed every lease_ms/3) so a second worker raises
        SideEffectInProgress instead of running it too; a crashed holder's lease lapses. A body that raises
        releases the key (the step did not complete); one that returns marks it done for `ttl_s`."""
        name = self.keys.once(key)
        token = f"running:{uuid.uuid4().hex}"
        for _ in range(3):
            if await self.redis.set(name, token, nx=True, px=lease_ms):
                break
            value = await self.redis.get(name)
            if value is None:
                continue  # lapsed between SET and GET
            if _text(value) == _DONE:
                yield False
                return
            raise SideEffectInProgress(key)
        else:
            raise SideEffectInProgress(key)
        renew = asyncio.create_task(self._renew(name, token, lease_ms), name=f"once:{key}")
        try:
            yield True
        except BaseException:
            renew.cancel()
            await asyncio.shield(self.redis.eval(_RELEASE, 1, name, token))
            raise
        renew.cancel()
        await self.redis.set(name, _DONE, ex=ttl_s)

    async def _renew(self, name: str, token: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(lease_ms / 3000)
            try:
                await self.redis.eval(_RENEW, 1, name, token, lease_ms)
            except (RedisError, OSError) as exc:  # Redis away for a moment: the next renewal may succeed
                log.warning("⚠️ could not renew the lease of %s: %s", name, type(exc).__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(fields: dict) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}


def _entry(entry_id: Any, fields: dict, consumer: str, deliveries: int) -> QueueEntry:
    decoded = _fields(fields)
    entry = QueueEntry(_text(entry_id), consumer, deliveries, decoded)
    try:
        entry.message = TaskMessage.model_validate_json(decoded.get("payload", ""))
    except ValidationError as exc:
        entry.problem = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
    return entry
