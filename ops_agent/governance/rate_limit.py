"""Per-agent rate limits on tool calls: token buckets in process memory, keyed by agent name.

Each agent has two buckets. Every call takes a token from its `calls` bucket; a call that changes something
(kind write, destructive, outward or delegate: everything the budget check does not treat as free) also
takes one from its `changes` bucket. So an engineer polling reads is limited only by the generous first
bucket, while deploys, env changes and notifications run out of the tighter second one. A bucket holds at
most `burst` tokens and refills at `per_minute / 60` a second; `per_minute == 0` turns it off.

A refused call takes nothing from either bucket, and is told how long until both have a token again, so a
caller that waits `retry_after_s` passes. The buckets live in this process: two processes (an MCP server and
a worker, say) each allow the full rate. Memory stays bounded by the agents active lately: at most once a
`sweep_interval_s`, buckets that have refilled completely are dropped, since a new full bucket is the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ops_agent.config import RateLimitSettings
from ops_agent.errors import RateLimited

__all__ = ["RateLimiter", "RateLimits"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    calls_per_minute: int = 600
    burst: int = 120
    changes_per_minute: int = 60
    change_burst: int = 20

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> RateLimits:
        return cls(settings.calls_per_minute, settings.burst, settings.changes_per_minute, settings.change_burst)

    @classmethod
    def off(cls) -> RateLimits:
        return cls(0, 1, 0, 1)


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class RateLimiter:
    def __init__(
        self,
        limits: RateLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sweep_interval_s: float = 60.0,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.sweep_interval_s = sweep_interval_s
        # (per_minute, burst, what the message calls it) of each bucket kind; a kind whose rate is 0 is off.
        self._kinds = {
            "calls": (limits.calls_per_minute, limits.burst, "tool calls"),
            "changes": (limits.changes_per_minute, limits.change_burst, "changing tool calls (not reads)"),
        }
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._swept_at = clock()

    def acquire(self, agent: str, *, change: bool) -> None:
        """Take one call (and one change, if `change`) from `agent`'s buckets, or raise RateLimited."""
        now = self.clock()
        if now - self._swept_at >= self.sweep_interval_s:
            self._sweep(now)
        kinds = ("calls", "changes") if change else ("calls",)
        buckets: list[_Bucket] = []
        worst: tuple[float, str] | None = None
        for kind in kinds:
            per_minute, burst, what = self._kinds[kind]
            if per_minute <= 0:
                continue
            bucket = self._buckets.get((agent, kind))
            if bucket is None:
                bucket = self._buckets[(agent, kind)] = _Bucket(float(burst), now)
            rate_s = per_minute / 60
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate_s)
            bucket.at = now
            if bucket.tokens < 1:
                wait_s = (1 - bucket.tokens) / rate_s
                if worst is None or wait_s > worst[0]:
                    worst = (wait_s, f"{per_minute} {what} a minute (bursts of up to {burst})")
            buckets.append(bucket)
        if worst is not None:  # nothing is taken: a refused call costs the caller no budget
            # Rounded up to the tenth shown in the message, so waiting what it says is always enough.
            retry_after_s = max(0.1, math.ceil(round(worst[0], 9) * 10) / 10)
            raise RateLimited(agent, worst[1], retry_after_s)
        for bucket in buckets:
            bucket.tokens -= 1

    def agents(self) -> int:
        """How many agents have a bucket held (for tests and telemetry: memory stays bounded)."""
        return len({agent for agent, _ in self._buckets})

    def _sweep(self, now: float) -> None:
        """Drop every bucket that has refilled: an agent idle that long starts afresh with the same full one."""
        self._swept_at = now
        for key, bucket in list(self._buckets.items()):
            per_minute, burst, _ = self._kinds[key[1]]
            if bucket.tokens + (now - bucket.at) * per_minute / 60 >= burst:
                del self._buckets[key]
