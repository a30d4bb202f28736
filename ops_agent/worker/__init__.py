"""The task queue on Redis Streams and the worker that runs the seed's Task Execution Flow from it."""

from ops_agent.worker.keys import QueueKeys
from ops_agent.worker.queue import (
    QueueEntry,
    SideEffectInProgress,
    TaskMessage,
    TaskQueue,
    new_task_id,
)
from ops_agent.worker.worker import Worker, is_retryable

__all__ = [
    "QueueEntry",
    "QueueKeys",
    "SideEffectInProgress",
    "TaskMessage",
    "TaskQueue",
    "Worker",
    "is_retryable",
    "new_task_id",
]
