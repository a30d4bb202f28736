"""The Redis key schema of the task queue: every key the queue and the worker touch is named here.

    {prefix}queue:tasks                 stream of submitted tasks; consumer group `workers` reads it
    {prefix}queue:dead                  dead-letter stream: tasks that failed `max_deliveries` times
    {prefix}queue:submitted:{key}       string: idempotency key of a submit -> its task id (TTL)
    {prefix}task:result:{task_id}       string: the task's report as JSON (TTL)
    {prefix}task:lock:{task_id}         string: token of the worker running the task (lease, renewed while it runs)
    {prefix}once:{key}                  string: "running:<token>" while a step runs (lease), "done:<its result>" after
    {prefix}events                      stream of events for the alert pipeline (e.g. task_dead_lettered)

The prefix defaults to "ops:" and is configurable, so several deployments (or tests) can share one Redis.
Durations carry their unit in the name: `_ms` for Redis-side milliseconds, `_s` for seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_CLAIM_IDLE_MS",
    "DEFAULT_GROUP",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_ONCE_TTL_S",
    "DEFAULT_PREFIX",
    "DEFAULT_RESULT_TTL_S",
    "DEFAULT_RETRY_DELAY_MS",
    "DEFAULT_SUBMIT_KEY_TTL_S",
    "EVENTS_MAXLEN",
    "QueueKeys",
]

DEFAULT_PREFIX = "ops:"
DEFAULT_GROUP = "workers"
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_CLAIM_IDLE_MS = 30_000  # a pending entry idle this long belongs to a dead worker
DEFAULT_RESULT_TTL_S = 7 * 86400
DEFAULT_SUBMIT_KEY_TTL_S = 86400
DEFAULT_ONCE_TTL_S = 7 * 86400  # how long a completed side effect is remembered
DEFAULT_RETRY_DELAY_MS = 5_000  # a task that met an outage waits this long before another delivery
EVENTS_MAXLEN = 10_000


@dataclass(frozen=True)
class QueueKeys:
    prefix: str = DEFAULT_PREFIX

    @property
    def stream(self) -> str:
        return f"{self.prefix}queue:tasks"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}queue:dead"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    def submitted(self, idempotency_key: str) -> str:
        return f"{self.prefix}queue:submitted:{idempotency_key}"

    def result(self, task_id: str) -> str:
        return f"{self.prefix}task:result:{task_id}"

    def lock(self, task_id: str) -> str:
        return f"{self.prefix}task:lock:{task_id}"

    def once(self, key: str) -> str:
        return f"{self.prefix}once:{key}"
