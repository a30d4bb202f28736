"""What the sinks received (the inbox), what they answered (the attempts log) and the faults queued for the
next requests. Shared between the server thread and the caller, so every access takes a lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

Channel = Literal["slack", "mailtrap", "webhook", "smtp"]
CHANNELS: tuple[Channel, ...] = ("slack", "mailtrap", "webhook", "smtp")
WAIT_POLL_S = 0.005


class InboxEntry(BaseModel):
    """One message a sink accepted."""

    seq: int = Field(description="Arrival order across all channels, from 1.")
    channel: Channel
    received_at: float = Field(description="Unix seconds.")
    path: str = Field(description="Request path (HTTP sinks) or '' (SMTP).")
    name: str = Field(description="Slack webhook name, webhook hook name, Mailtrap stream, or SMTP envelope sender.")
    recipients: list[str] = Field(default_factory=list, description="Email recipients (Mailtrap and SMTP).")
    payload: Any = Field(description="Parsed body: JSON for HTTP sinks, the parsed message for SMTP.")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers of interest, lower-case names.")
    verified: bool | None = Field(None, description="Webhooks: signature verified; SMTP: authenticated.")
    duplicate: bool = Field(False, description="Webhooks: a webhook-id seen before on this hook.")


class Attempt(BaseModel):
    """One request a sink answered, accepted or not (rate limited, unauthorised, injected fault...)."""

    channel: Channel
    at: float
    path: str
    status: int
    reason: str = Field(description="'ok', 'duplicate', an error code, or 'fault'.")


@dataclass
class Fault:
    status: int
    body: str | None
    retry_after: float | None
    after_delivery: bool


class Inbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[InboxEntry] = []
        self._attempts: list[Attempt] = []
        self._seq = 0
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)

    def add(self, **fields: Any) -> InboxEntry:
        with self._lock:
            self._seq += 1
            entry = InboxEntry(seq=self._seq, received_at=fields.pop("received_at", time.time()), **fields)
            self._entries.append(entry)
            return entry

    def attempt(self, channel: Channel, path: str, status: int, reason: str) -> None:
        with self._lock:
            self._attempts.append(Attempt(channel=channel, at=time.time(), path=path, status=status, reason=reason))

    def seen(self, scope: str, key: str) -> bool:
        """Remember `key` within `scope`; True if it was there already."""
        with self._lock:
            if key in self._seen[scope]:
                return True
            self._seen[scope].add(key)
            return False

    def messages(self, channel: Channel | None = None, *, include_duplicates: bool = True) -> list[InboxEntry]:
        with self._lock:
            return [
                e for e in self._entries
                if (channel is None or e.channel == channel) and (include_duplicates or not e.duplicate)
            ]

    def attempts(self, channel: Channel | None = None) -> list[Attempt]:
        with self._lock:
            return [a for a in self._attempts if channel is None or a.channel == channel]

    def clear(self, *, reset_dedup: bool = False) -> None:
        with self._lock:
            self._entries.clear()
            self._attempts.clear()
            if reset_dedup:
                self._seen.clear()

    async def wait_for(
        self, count: int, channel: Channel | None = None, *, timeout_s: float = 5.0, include_duplicates: bool = True
    ) -> list[InboxEntry]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.messages(channel, include_duplicates=include_duplicates)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                where = channel or "any channel"
                raise TimeoutError(f"{len(found)} of {count} messages on {where} after {timeout_s:g} s")
            await asyncio.sleep(WAIT_POLL_S)

    def queue_fault(self, channel: Channel, fault: Fault, count: int) -> None:
        with self._lock:
            self._faults[channel].extend(fault for _ in range(count))

    def take_fault(self, channel: Channel) -> Fault | None:
        with self._lock:
            queue = self._faults[channel]
            return queue.popleft() if queue else None
