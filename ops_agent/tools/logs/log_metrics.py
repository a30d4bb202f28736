"""Metrics derived from logs, pushed into the monitoring series so alert rules can use them.

Per service and per `window_s` window of record time (not arrival time, so a backfill lands where it
belongs): `log_lines_per_s{service,severity}`, `log_error_ratio{service}` (error and critical lines over
all lines), and from access logs (records with a `status` attribute) `http_requests_per_s{service}`,
`http_error_ratio{service}` (5xx over requests) and `http_latency_ms{service,quantile}` (0.5, 0.95, 0.99)
where the lines carry a duration. A window is written once it has closed.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from ops_agent.tools.logs.record import LogRecord
from ops_agent.tools.monitoring.series import SeriesStore

__all__ = ["LogMetrics"]

log = logging.getLogger(__name__)

_ERRORS = ("error", "critical")
_QUANTILES = (0.5, 0.95, 0.99)


@dataclass
class _Window:
    lines: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by severity
    requests: int = 0
    server_errors: int = 0
    durations_ms: list[float] = field(default_factory=list)


class LogMetrics:
    def __init__(self, series: SeriesStore, *, window_s: float = 10.0, max_durations: int = 10_000) -> None:
        self.series = series
        self.window_s = window_s
        self.max_durations = max_durations
        self._windows: dict[tuple[str, int], _Window] = {}

    def observe(self, records: Sequence[LogRecord]) -> None:
        """A collector observer: count the records into their windows (cheap; no IO)."""
        for record in records:
            window = self._windows.get(key := (record.service or "unknown", int(record.time // self.window_s)))
            if window is None:
                window = self._windows[key] = _Window()
            window.lines[record.severity] += 1
            status = record.attributes.get("status")
            if isinstance(status, int) and 100 <= status <= 599:
                window.requests += 1
                window.server_errors += status >= 500
                duration = record.attributes.get("duration_ms")
                if isinstance(duration, (int, float)) and len(window.durations_ms) < self.max_durations:
                    window.durations_ms.append(float(duration))

    async def flush(self, now: float) -> int:
        """Write every window that closed before `now`; returns how many samples were written."""
        closed = [key for key in self._windows if (key[1] + 1) * self.window_s <= now]
        samples: list[tuple[str, dict[str, str], float, float]] = []
        for key in sorted(closed, key=lambda k: k[1]):
            service, index = key
            window = self._windows.pop(key)
            at = (index + 1) * self.window_s
            total = sum(window.lines.values())
            for severity, count in window.lines.items():
                samples.append(("log_lines_per_s", {"service": service, "severity": severity}, at, count / self.window_s))
            errors = sum(window.lines.get(s, 0) for s in _ERRORS)
            samples.append(("log_error_ratio", {"service": service}, at, errors / total if total else 0.0))
            if window.requests:
                samples.append(("http_requests_per_s", {"service": service}, at, window.requests / self.window_s))
                samples.append(("http_error_ratio", {"service": service}, at, window.server_errors / window.requests))
            if window.durations_ms:
                ordered = sorted(window.durations_ms)
                for q in _QUANTILES:
                    value = ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
                    samples.append(("http_latency_ms", {"service": service, "quantile": str(q)}, at, value))
        if samples:
            await self.series.record_many(samples)
        return len(samples)
