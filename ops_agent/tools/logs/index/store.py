"""What a log index must answer, whichever database holds it (SQLite embedded, PostgreSQL when configured)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ops_agent.tools.logs.index.query import Node
from ops_agent.tools.logs.record import LogRecord

__all__ = ["LogFilter", "LogStore", "SearchPage", "StoredRecord", "bucket_width", "flat_attribute_text"]


@dataclass(frozen=True, slots=True)
class LogFilter:
    end: float
    start: float | None = None  # None: from the oldest record
    query: Node | None = None
    min_severity: str | None = None  # a threshold: "error" includes "critical"
    services: tuple[str, ...] = ()  # any of these; empty = every service


@dataclass(frozen=True, slots=True)
class StoredRecord:
    id: int
    time: float
    severity: str
    service: str
    host: str
    message: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SearchPage:
    total: int  # every match in the range, not only the returned ones
    records: list[StoredRecord]  # newest first, at most `limit`
    origin: float  # start of the first histogram bucket
    bucket_s: float
    histogram: list[int]  # matches per bucket, oldest first


class LogStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, records: list[LogRecord]) -> int:
        """Write a batch in one transaction; returns how many were written."""
        ...

    async def known_keys(self, keys: Sequence[str]) -> set[str]:
        """The keys of `keys` already stored: a keyed record is written once, in the transaction that writes it."""
        ...

    async def search(self, where: LogFilter, *, limit: int, buckets: int = 60) -> SearchPage: ...

    async def records(self, where: LogFilter, *, limit: int) -> list[StoredRecord]:
        """Matching records, newest first (for template mining and root-cause work)."""
        ...

    async def volume(self, where: LogFilter, *, bucket_s: float) -> dict[tuple[str, str], dict[int, int]]:
        """Counts per (service, severity) per bucket index, bucket 0 starting at `where.start`."""
        ...

    async def prune(self, before: float) -> int:
        """Delete records older than `before`; returns how many."""
        ...

    async def stats(self) -> dict[str, Any]:
        """`records`, `oldest`, `newest` (Unix seconds or None) and `backend`."""
        ...


def bucket_width(start: float, end: float, buckets: int) -> float:
    """A readable histogram bucket (1 s, 5 s, … 1 d) giving at most `buckets` buckets over the span."""
    span = max(end - start, 1.0)
    for width in (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if span / width <= buckets:
            return float(width)
    return float(86400 * math.ceil(span / 86400 / buckets))


def flat_attribute_text(attributes: dict[str, Any]) -> str:
    """The attribute values a free-text search should find (ids, paths, hosts), as one string."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(str(value))

    walk(attributes)
    return " ".join(parts)
