"""Steady load on a service, and what it saw: the traffic an incident hurts and a fix must restore.

    async with LoadGenerator(demo.base_url, rps=20) as load:
        ...
        load.stats()   # ok / 5xx / connection errors and latency percentiles over the last 10 s

The loop is open: a request starts every 1/rps seconds whether or not earlier ones have answered, as users
would, so a slow service piles up requests in flight instead of quietly getting less load.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType

import httpx2

__all__ = ["LoadGenerator", "LoadStats"]


@dataclass(frozen=True)
class LoadStats:
    window_s: float
    requests: int  # finished in the window, answered or not
    ok: int  # 1xx-3xx
    client_errors: int  # 4xx
    server_errors: int  # 5xx
    connection_errors: int  # no answer: refused, reset or timed out
    p50_ms: float | None  # latency percentiles of the answered ones
    p95_ms: float | None
    p99_ms: float | None

    @property
    def error_ratio(self) -> float:
        """Share of requests that failed on the server or got no answer."""
        return (self.server_errors + self.connection_errors) / self.requests if self.requests else 0.0


class LoadGenerator:
    """GETs `path` at `rps` per second from a background task, with one httpx2.AsyncClient."""

    def __init__(
        self, base_url: str, *, rps: float = 20, path: str = "/work", timeout_s: float = 2.0,
        window_s: float = 10.0, max_in_flight: int = 200,
    ) -> None:
        self.base_url, self.path, self.timeout_s = base_url, path, timeout_s
        self.rps = rps
        self.window_s = window_s
        self.max_in_flight = max_in_flight
        self.sent = 0
        self._results: deque[tuple[float, int | None, float]] = deque(maxlen=100_000)  # (finished, status, ms)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._client: httpx2.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    def set_rate(self, rps: float) -> None:
        """Requests per second from now on; 0 pauses."""
        self.rps = rps

    def stats(self, window_s: float | None = None) -> LoadStats:
        """What finished in the last `window_s` seconds (default: the generator's window; math.inf: all kept)."""
        window = self.window_s if window_s is None else window_s
        since = time.monotonic() - window
        recent = [(status, ms) for finished, status, ms in self._results if finished >= since]
        statuses = [status for status, _ in recent]
        latencies = sorted(ms for status, ms in recent if status is not None)
        return LoadStats(
            window_s=window,
            requests=len(recent),
            ok=sum(1 for s in statuses if s is not None and s < 400),
            client_errors=sum(1 for s in statuses if s is not None and 400 <= s < 500),
            server_errors=sum(1 for s in statuses if s is not None and s >= 500),
            connection_errors=statuses.count(None),
            p50_ms=_percentile(latencies, 0.50),
            p95_ms=_percentile(latencies, 0.95),
            p99_ms=_percentile(latencies, 0.99),
        )

    async def __aenter__(self) -> LoadGenerator:
        self._client = httpx2.AsyncClient(
            base_url=self.base_url, timeout=self.timeout_s,
            limits=httpx2.Limits(max_connections=self.max_in_flight, max_keepalive_connections=50),
        )
        self._task = asyncio.create_task(self._run(), name="load-generator")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tasks = [t for t in (self._task, *self._in_flight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        self._task = self._client = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if self.rps <= 0:
                await asyncio.sleep(0.05)
                next_at = loop.time()
                continue
            # after a stall, carry on at the rate rather than firing the missed requests in a burst
            next_at = max(next_at + 1 / self.rps, loop.time() - 1.0)
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if self.rps <= 0 or len(self._in_flight) >= self.max_in_flight:  # paused while asleep, or saturated
                continue
            self.sent += 1  # counted here, not in the task: a pause stops the count at once
            task = asyncio.create_task(self._one())
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _one(self) -> None:
        assert self._client is not None
        started = time.monotonic()
        status: int | None
        try:
            status = (await self._client.get(self.path)).status_code
        except httpx2.TransportError:  # refused, reset, timed out: no answer
            status = None
        finished = time.monotonic()
        self._results.append((finished, status, (finished - started) * 1000))


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)
