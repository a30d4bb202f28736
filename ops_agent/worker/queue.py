"""The task queue on a Redis stream with a consumer group.

A task is one stream entry. A worker reads entries (XREADGROUP '>', several at a time), takes the task's
lock (`begin`), runs it, and in one script stores the result, drops the lock, acknowledges and deletes the
entry (`finish`), so the stream holds only the backlog and the work in flight. An entry that is not
acknowledged stays pending: a worker that died leaves its entries idle, and a live worker claims entries
idle longer than `claim_idle_ms` (XAUTOCLAIM). A running worker keeps its entries and locks fresh with one
heartbeat (`touch`), so only a dead worker's entries are claimed. `retry_or_dead_letter(entry, error, …)`
hands an entry back for another delivery after a delay; after `max_deliveries` deliveries it moves to the
dead-letter stream and a `task_dead_lettered` event is published for the alert pipeline. A delivery that met
an outage (`counts=False`) does not count, so an outage never dead-letters a task.

`run_once(key, step)` runs a side-effecting step at most once across deliveries and workers, and keeps its
result, so a redelivered task replays the step's result instead of repeating it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ops_agent.errors import InvalidArguments, SideEffectInProgress
from ops_agent.ooda import Priority
from ops_agent.stores.redis_text import as_fields, as_text
from ops_agent.worker.keys import (
    DEFAULT_CLAIM_IDLE_MS,
    DEFAULT_GROUP,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_ONCE_TTL_S,
    DEFAULT_PREFIX,
    DEFAULT_RESULT_TTL_S,
    DEFAULT_SUBMIT_KEY_TTL_S,
    EVENTS_MAXLEN,
    QueueKeys,
)

if TYPE_CHECKING:
    from ops_agent.config import Settings

__all__ = ["QueueEntry", "SideEffectInProgress", "TaskMessage", "TaskQueue", "new_task_id"]

log = logging.getLogger("ops_agent.worker")

# Redis scripts. Each is one round trip; EVALSHA after the first call (redis-py's Script).

# KEYS: result, lock. ARGV: token, lease ms. 'done' when the task has a result, 'run' when the lock was
# taken, 'busy' when another worker holds it.
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'done' end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'run' end
return 'busy'
"""
# KEYS: stream, result, lock. ARGV: group, entry id, report, result ttl s, token.
_FINISH = """
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""
# Heartbeat or hand-back of one entry and its task lock. KEYS: stream, lock. ARGV: group, consumer, entry id,
# idle ms ('' = now), retry count ('' = unchanged), token, lock lease ms ('' = release the lock).
# The entry is touched only while `consumer` owns it: a worker whose entry was claimed never takes it back.
# JUSTID: the claim does not count as a delivery. Returns 1 when the consumer still owned the entry.
_TOUCH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
local owned = #p > 0 and p[1][2] == ARGV[2]
if owned then
  local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3]}
  if ARGV[4] ~= '' then claim[#claim + 1] = 'IDLE'; claim[#claim + 1] = ARGV[4] end
  if ARGV[5] ~= '' then claim[#claim + 1] = 'RETRYCOUNT'; claim[#claim + 1] = ARGV[5] end
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
if ARGV[6] ~= '' and redis.call('GET', KEYS[2]) == ARGV[6] then
  if ARGV[7] == '' then redis.call('DEL', KEYS[2]) else redis.call('PEXPIRE', KEYS[2], ARGV[7]) end
end
if owned then return 1 end
return 0
"""
# KEYS: once key. ARGV: token, lease ms. nil when the lease was taken, else the key's value.
_TAKE = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end return redis.call('GET', KEYS[1])"
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_DONE = "done:"


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
        script = self.redis.register_script
        self._begin, self._finish, self._touch = script(_BEGIN), script(_FINISH), script(_TOUCH)
        self._take, self._renew_lease, self._release_lease = script(_TAKE), script(_RENEW), script(_RELEASE)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> TaskQueue:
        queue = settings.queue
        return cls(
            redis, prefix=settings.redis.prefix, group=queue.group, max_deliveries=queue.max_deliveries,
            claim_idle_ms=round(queue.claim_idle_s * 1000), result_ttl_s=queue.result_ttl_s,
        )

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
                    return as_text(existing)
        try:
            await self.redis.xadd(self.keys.stream, {"task_id": message.task_id, "payload": message.model_dump_json()})
        except BaseException:
            if claimed:
                await self.redis.delete(self.keys.submitted(idempotency_key or ""))
            raise
        return message.task_id

    # -- consuming --------------------------------------------------------------------------------------

    async def read(self, consumer: str, count: int = 1, block_ms: int | None = None) -> list[QueueEntry]:
        """Up to `count` entries for `consumer`: first those reclaimed from dead workers, else new ones
        (blocking up to `block_ms`; None or 0 does not block). Reclaimed entries past `max_deliveries` are
        dead-lettered."""
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
        self._claim_cursor = as_text(reply[0])
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
            if deliveries > self.max_deliveries:
                await self.dead_letter(entry, f"delivered {deliveries} times without finishing")
            else:
                log.warning("⚠️ Reclaimed task %s (delivery %d): its worker stopped or handed it back for a retry",
                            entry.task_id, deliveries)
                entries.append(entry)
        return entries

    async def begin(self, task_id: str, token: str) -> Literal["run", "done", "busy"]:
        """Take the task's lock for `token`: 'run'; 'done' when it already has a result; 'busy' when another
        worker holds the lock (it lapses `claim_idle_ms` after a holder died)."""
        state = await self._begin(keys=[self.keys.result(task_id), self.keys.lock(task_id)],
                                  args=[token, self.claim_idle_ms])
        return as_text(state)  # type: ignore[return-value]

    async def finish(self, entry: QueueEntry, task_id: str, report_json: str, token: str) -> None:
        """Store the result, drop the lock, acknowledge and delete the entry: one atomic step."""
        await self._finish(
            keys=[self.keys.stream, self.keys.result(task_id), self.keys.lock(task_id)],
            args=[self.group, entry.entry_id, report_json, self.result_ttl_s, token],
        )

    async def ack(self, entry: QueueEntry) -> None:
        """Acknowledge and delete without a result (the task had one already)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.stream, self.group, entry.entry_id)
            pipe.xdel(self.keys.stream, entry.entry_id)
            await pipe.execute()

    async def touch(self, held: Sequence[tuple[QueueEntry, str]]) -> list[bool]:
        """Heartbeat: reset the idle time of each (entry, lock token) still owned, and renew its task lock.
        One round trip for all of them; False for an entry another worker claimed."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry, token in held:
                await self._touch(keys=self._entry_keys(entry), client=pipe,
                            args=[self.group, entry.consumer, entry.entry_id, "", "", token, self.claim_idle_ms])
            return [bool(owned) for owned in await pipe.execute()]

    async def release(self, entry: QueueEntry, *, token: str = "", defer_ms: int = 0, counts: bool = True) -> bool:
        """Give the entry back without acknowledging it (and drop the task lock `token` holds): any worker
        may claim it after `defer_ms`. `counts=False`: this delivery does not count toward dead-lettering."""
        idle_ms = max(0, self.claim_idle_ms - defer_ms)
        retry_count = "" if counts else max(0, entry.deliveries - 1)
        return bool(await self._touch(
            keys=self._entry_keys(entry),
            args=[self.group, entry.consumer, entry.entry_id, idle_ms, retry_count, token, ""],
        ))

    async def retry_or_dead_letter(
        self, entry: QueueEntry, error: str, *, token: str = "", defer_ms: int = 0, counts: bool = True
    ) -> bool:
        """After a failure worth retrying: deliver again after `defer_ms`, or, once the entry has had
        `max_deliveries` counted deliveries, dead-letter it. True when it was dead-lettered."""
        if counts and entry.deliveries >= self.max_deliveries:
            await self.dead_letter(entry, error)
            if token and entry.message is not None:
                await self._release_lease(keys=[self.keys.lock(entry.message.task_id)], args=[token])
            return True
        await self.release(entry, token=token, defer_ms=defer_ms, counts=counts)
        return False

    def _entry_keys(self, entry: QueueEntry) -> list[str]:
        return [self.keys.stream, self.keys.lock(entry.task_id)]

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

    async def result(self, task_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.result(task_id))
        return None if raw is None else json.loads(raw)

    async def dead_letters(self, limit: int = 50) -> list[dict[str, str]]:
        """The newest dead-lettered tasks first."""
        reply = await self.redis.xrevrange(self.keys.dead_letter, count=limit)
        return [{"id": as_text(entry_id), **as_fields(fields)} for entry_id, fields in reply]

    async def events(self, limit: int = 50) -> list[dict[str, str]]:
        reply = await self.redis.xrevrange(self.keys.events, count=limit)
        return [{"id": as_text(entry_id), **as_fields(fields)} for entry_id, fields in reply]

    async def pending_count(self) -> int:
        """Entries delivered and not yet acknowledged (in flight, awaiting a retry, or left by a dead worker)."""
        await self.ensure_group()
        summary = await self.redis.xpending(self.keys.stream, self.group)
        return int(summary["pending"])

    async def backlog(self) -> int:
        """Entries in the stream: not yet delivered plus pending (acknowledged ones are deleted)."""
        return int(await self.redis.xlen(self.keys.stream))

    # -- idempotent steps -------------------------------------------------------------------------------

    async def run_once(
        self,
        key: str,
        step: Callable[[], Awaitable[str]],
        *,
        ttl_s: int = DEFAULT_ONCE_TTL_S,
        lease_ms: int | None = None,
    ) -> tuple[str, bool]:
        """Run `step` once for `key` and keep what it returned: (result, True) when it ran now, (the result
        kept from the earlier run, False) when it had already completed.

        While the step runs, the key holds a lease (default `claim_idle_ms`, renewed every third of it), so a
        second worker raises SideEffectInProgress instead of running it too; a crashed holder's lease lapses.
        A step that raises releases the key (it did not complete); one that returns is remembered for `ttl_s`."""
        name = self.keys.once(key)
        lease_ms = lease_ms or self.claim_idle_ms  # a dead holder's step is free when its task is
        token = f"running:{uuid.uuid4().hex}"
        value = await self._take(keys=[name], args=[token, lease_ms])
        if value is not None:
            value = as_text(value)
            if value.startswith(_DONE):
                return value[len(_DONE):], False
            raise SideEffectInProgress(key)
        renew = asyncio.create_task(self._keep_lease(name, token, lease_ms), name=f"once:{key}")
        try:
            result = await step()
        except BaseException:
            renew.cancel()
            await asyncio.shield(self._release_lease(keys=[name], args=[token]))
            raise
        renew.cancel()
        await self.redis.set(name, _DONE + result, ex=ttl_s)
        return result, True

    async def _keep_lease(self, name: str, token: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(lease_ms / 3000)
            try:
                await self._renew_lease(keys=[name], args=[token, lease_ms])
            except (RedisError, OSError) as exc:  # Redis away for a moment: the next renewal may succeed
                log.warning("⚠️ could not renew the lease of %s: %s", name, type(exc).__name__)




def _entry(entry_id: Any, fields: dict, consumer: str, deliveries: int) -> QueueEntry:
    decoded = as_fields(fields)
    entry = QueueEntry(as_text(entry_id), consumer, deliveries, decoded)
    try:
        entry.message = TaskMessage.model_validate_json(decoded.get("payload", ""))
    except ValidationError as exc:
        entry.problem = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
    return entry
