"""Metric series: the `SeriesStore` seam, an in-memory ring buffer and a SQLite store with retention.

A series is a metric name plus a set of labels, e.g. `cpu_percent{host="web-1"}`; its points are
(epoch seconds, value). Writers (the system sampler every few seconds, `record_metric` from the API)
call `record`, which validates and appends to a buffer and nothing more. `SqliteSeriesStore` writes
the buffer with one executemany in one transaction at most `batch_window_s` or `batch_size` samples
after the first one waiting (the group commit of governance/audit.py). Readers see a sample at once:
`points` and `latest` merge what is still buffered with what is stored.

Retention: raw points are kept `raw_retention_s`; then `compact` folds them into one rollup per series
and `rollup_step_s` bucket (min, max, sum, count, last), kept `rollup_retention_s`. `points` reads a
rollup as one point at the bucket's start whose value is the bucket's average, so a window reaching
past raw retention gets rollups for its older part and raw points for the rest. A sample lives in
exactly one of the two tables, so they never overlap. Only whole buckets are rolled up: raw points
live between `raw_retention_s` and `raw_retention_s + rollup_step_s`.

Names match `[a-zA-Z_][a-zA-Z0-9_:.]*`, label keys `[a-zA-Z_][a-zA-Z0-9_]*`; names, keys and values
are at most 256 characters and values must be finite. Anything else raises ValueError naming it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sqlite3
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, islice
from operator import attrgetter
from typing import Any, Protocol

from ops_agent.stores.sqlite import SqliteDatabase

__all__ = [
    "Labels",
    "MemorySeries",
    "Point",
    "Rollup",
    "SeriesStore",
    "SqliteSeriesStore",
    "TieredSeries",
    "checked_name",
    "labels_of",
]

log = logging.getLogger(__name__)

Labels = frozenset[tuple[str, str]]
Sample = tuple[str, Labels, float, float]  # a checked sample: name, labels, ts, value

MAX_LENGTH = 256
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_:.]*")
_LABEL_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NO_LABELS: Labels = frozenset()
_ts = attrgetter("ts")


@dataclass(frozen=True, slots=True)
class Point:
    ts: float  # epoch seconds
    value: float


@dataclass(frozen=True, slots=True)
class Rollup:
    """One `rollup_step_s` bucket of a series whose raw points have expired."""

    ts: float  # the bucket's start, epoch seconds
    min: float
    max: float
    sum: float
    count: int
    last: float  # the value of the bucket's newest sample, at last_ts
    last_ts: float

    @property
    def avg(self) -> float:
        return self.sum / self.count


class SeriesStore(Protocol):
    async def record(
        self, name: str, value: float, labels: Mapping[str, str] | None = None, ts: float | None = None
    ) -> None:
        """Add one sample (`ts` defaults to now); raises ValueError naming a bad name, label or value."""
        ...

    async def record_many(self, samples: Iterable[tuple[str, Mapping[str, str], float, float]]) -> None:
        """Add (name, labels, ts, value) samples; all or none: one bad sample raises ValueError."""
        ...

    async def points(
        self, name: str, matchers: Mapping[str, str], start: float, end: float
    ) -> dict[Labels, list[Point]]:
        """Each series of `name` whose labels include `matchers`, with its points in [start, end], oldest
        first. Series without a point in the window are left out."""
        ...

    async def latest(self, name: str, matchers: Mapping[str, str]) -> dict[Labels, Point]:
        """The newest point of each series of `name` whose labels include `matchers`."""
        ...

    async def names(self) -> dict[str, list[dict[str, str]]]:
        """Every series name, sorted, with the label sets it has."""
        ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


def labels_of(mapping: Mapping[str, str] | None) -> Labels:
    """The label set of `mapping`, checked; raises ValueError naming a bad label."""
    if not mapping:
        return _NO_LABELS
    try:
        labels = frozenset(mapping.items())
    except TypeError:
        raise ValueError(f"label values must be strings: {_shown(dict(mapping))}") from None
    return _checked_labels(labels)


@lru_cache(maxsize=4096)
def _checked_labels(labels: Labels) -> Labels:
    for key, value in labels:
        if not isinstance(key, str) or len(key) > MAX_LENGTH or not _LABEL_KEY.fullmatch(key):
            raise ValueError(
                f"invalid label name {_shown(key)}: use up to {MAX_LENGTH} letters, digits and '_', "
                "not starting with a digit"
            )
        if not isinstance(value, str):
            raise ValueError(f"label {key!r} must be a string, not {type(value).__name__}")
        if len(value) > MAX_LENGTH:
            raise ValueError(f"label {key!r} is {len(value)} characters long; at most {MAX_LENGTH} are allowed")
    return labels


@lru_cache(maxsize=1024)
def checked_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > MAX_LENGTH or not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid metric name {_shown(name)}: use up to {MAX_LENGTH} letters, digits, '_', ':' and '.', "
            "not starting with a digit"
        )
    return name


def _finite(name: str, what: str, number: Any) -> float:
    try:
        result = float(number)
    except (TypeError, ValueError):
        result = math.nan
    if isinstance(number, str | bytes) or not math.isfinite(result):
        raise ValueError(f"metric {name!r}: {what} {_shown(number)} is not a finite number")
    return result


def _shown(thing: Any) -> str:
    text = repr(thing)
    return text if len(text) <= 80 else text[:77] + "..."


def _sample(name: str, labels: Mapping[str, str] | None, ts: float | None, value: float) -> Sample:
    name = checked_name(name)
    try:
        checked = labels_of(labels)
    except ValueError as exc:
        raise ValueError(f"metric {name!r}: {exc}") from None
    return name, checked, _finite(name, "timestamp", time.time() if ts is None else ts), _finite(name, "value", value)


def _names(series: Iterable[tuple[str, Labels]]) -> dict[str, list[dict[str, str]]]:
    found: dict[str, set[Labels]] = {}
    for name, labels in series:
        found.setdefault(name, set()).add(labels)
    return {
        name: [dict(sorted(labels)) for labels in sorted(label_sets, key=sorted)]
        for name, label_sets in sorted(found.items())
    }


class MemorySeries:
    """The freshest history in memory: the newest `maxlen` points of each series (1200 is an hour at
    3 s). Points are kept in time order; one older than all a full series keeps is dropped. Holds at
    most `max_series` series: a sample of one more raises ValueError. Also degraded mode's store."""

    def __init__(self, *, maxlen: int = 1200, max_series: int = 10_000) -> None:
        if maxlen < 1 or max_series < 1:
            raise ValueError("maxlen and max_series must be at least 1")
        self.maxlen = maxlen
        self.max_series = max_series
        self._series: dict[str, dict[Labels, deque[Point]]] = {}
        self._count = 0

    async def record(
        self, name: str, value: float, labels: Mapping[str, str] | None = None, ts: float | None = None
    ) -> None:
        self._add([_sample(name, labels, ts, value)])

    async def record_many(self, samples: Iterable[tuple[str, Mapping[str, str], float, float]]) -> None:
        self._add([_sample(name, labels, ts, value) for name, labels, ts, value in samples])

    def _add(self, samples: list[Sample]) -> None:
        new = {(name, labels) for name, labels, _, _ in samples if labels not in self._series.get(name, {})}
        if self._count + len(new) > self.max_series:
            raise ValueError(f"too many series: at most {self.max_series} are kept in memory")
        for name, labels, ts, value in samples:
            by_labels = self._series.setdefault(name, {})
            points = by_labels.get(labels)
            if points is None:
                points = by_labels[labels] = deque(maxlen=self.maxlen)
                self._count += 1
            _insert(points, Point(ts, value))

    async def points(
        self, name: str, matchers: Mapping[str, str], start: float, end: float
    ) -> dict[Labels, list[Point]]:
        wanted = labels_of(matchers)
        found = {}
        for labels, points in self._series.get(checked_name(name), {}).items():
            if wanted <= labels:
                low, high = bisect_left(points, start, key=_ts), bisect_right(points, end, key=_ts)
                if low < high:
                    found[labels] = list(islice(points, low, high))
        return found

    async def latest(self, name: str, matchers: Mapping[str, str]) -> dict[Labels, Point]:
        wanted = labels_of(matchers)
        series = self._series.get(checked_name(name), {})
        return {labels: points[-1] for labels, points in series.items() if wanted <= labels and points}

    async def names(self) -> dict[str, list[dict[str, str]]]:
        return _names((name, labels) for name, series in self._series.items() for labels in series)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def covers(self, name: str, matchers: Mapping[str, str], start: float) -> bool:
        """True when every matching series still holds all its points from `start` on (none evicted)."""
        wanted = labels_of(matchers)
        return all(
            len(points) < self.maxlen or points[0].ts <= start
            for labels, points in self._series.get(checked_name(name), {}).items()
            if wanted <= labels
        )


class TieredSeries:
    """The series store behind a ring buffer: every point goes to both; a read of a recent window (the
    usual 5 minutes of a query or an alert rule) is answered from memory, an older one from the store.

    Memory is only trusted from the moment this object was made (after a restart, older points are in
    the store alone) and only for series whose ring has not dropped points inside the window."""

    def __init__(self, memory: MemorySeries, store: SeriesStore, *, clock: Callable[[], float] = time.time) -> None:
        self.memory = memory
        self.store = store
        self._since = clock()

    async def record(
        self, name: str, value: float, labels: Mapping[str, str] | None = None, ts: float | None = None
    ) -> None:
        await self.record_many([(name, labels or {}, ts if ts is not None else time.time(), value)])

    async def record_many(self, samples: Iterable[tuple[str, Mapping[str, str], float, float]]) -> None:
        batch = list(samples)
        await self.store.record_many(batch)  # the store validates: a bad sample stops here, in neither
        await self.memory.record_many(batch)

    async def points(
        self, name: str, matchers: Mapping[str, str], start: float, end: float
    ) -> dict[Labels, list[Point]]:
        if start >= self._since and self.memory.covers(name, matchers, start):
            return await self.memory.points(name, matchers, start, end)
        return await self.store.points(name, matchers, start, end)

    async def latest(self, name: str, matchers: Mapping[str, str]) -> dict[Labels, Point]:
        # the store knows series not seen since a restart; memory has the newest point of the others
        return {**await self.store.latest(name, matchers), **await self.memory.latest(name, matchers)}

    async def names(self) -> dict[str, list[dict[str, str]]]:
        return await self.store.names()

    async def flush(self) -> None:
        await self.store.flush()

    async def close(self) -> None:
        await self.store.close()


def _insert(points: deque[Point], point: Point) -> None:
    """Keep `points` in time order: append, or for a late sample insert it in its place."""
    if not points or point.ts >= points[-1].ts:
        points.append(point)
        return
    if len(points) == points.maxlen:
        if point.ts < points[0].ts:
            return  # older than everything a full series keeps
        points.popleft()
    points.insert(bisect_right(points, point.ts, key=_ts), point)


_MIGRATIONS = [
    """
    CREATE TABLE metric_series (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        UNIQUE (name, labels)
    );
    CREATE TABLE metric_points (
        series_id INTEGER NOT NULL REFERENCES metric_series (id),
        ts REAL NOT NULL,
        value REAL NOT NULL
    );
    CREATE INDEX metric_points_series_ts ON metric_points (series_id, ts);
    CREATE INDEX metric_points_ts ON metric_points (ts);
    CREATE TABLE metric_rollups (
        series_id INTEGER NOT NULL REFERENCES metric_series (id),
        bucket REAL NOT NULL,
        minimum REAL NOT NULL,
        maximum REAL NOT NULL,
        total REAL NOT NULL,
        count INTEGER NOT NULL,
        last REAL NOT NULL,
        last_ts REAL NOT NULL,
        PRIMARY KEY (series_id, bucket)
    ) WITHOUT ROWID;
    CREATE INDEX metric_rollups_bucket ON metric_rollups (bucket)
    """
]

_INSERT_POINTS = "INSERT INTO metric_points (series_id, ts, value) VALUES (?, ?, ?)"

# Raw points older than :cutoff become one row per (series, bucket); a bucket that already has a rollup
# (samples that arrived late) is merged into it.
_ROLL_UP = """
INSERT INTO metric_rollups (series_id, bucket, minimum, maximum, total, count, last, last_ts)
SELECT series_id, bucket, min(value), max(value), sum(value), count(*), max(last), max(ts)
FROM (
    SELECT series_id, ts, value, CAST(ts / :step AS INTEGER) * :step AS bucket,
        last_value(value) OVER (
            PARTITION BY series_id, CAST(ts / :step AS INTEGER) ORDER BY ts, rowid
            ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
        ) AS last
    FROM metric_points
    WHERE ts < :cutoff
)
WHERE true
GROUP BY series_id, bucket
ON CONFLICT (series_id, bucket) DO UPDATE SET
    minimum = min(minimum, excluded.minimum),
    maximum = max(maximum, excluded.maximum),
    total = total + excluded.total,
    count = count + excluded.count,
    last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END,
    last_ts = max(last_ts, excluded.last_ts)
"""

_DELETE_EMPTY_SERIES = """
DELETE FROM metric_series
WHERE NOT EXISTS (SELECT 1 FROM metric_points WHERE series_id = metric_series.id)
    AND NOT EXISTS (SELECT 1 FROM metric_rollups WHERE series_id = metric_series.id)
"""


def _rows(conn: sqlite3.Connection, sql: str, params: tuple | dict = ()) -> list[tuple]:
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: cheaper than sqlite3.Row for many rows
    return cursor.execute(sql, params).fetchall()


def _labels_json(labels: Labels) -> str:
    return json.dumps(dict(sorted(labels)), ensure_ascii=False, separators=(",", ":"))


def _series_id(conn: sqlite3.Connection, name: str, labels: Labels) -> int:
    text = _labels_json(labels)
    row = conn.execute("SELECT id FROM metric_series WHERE name = ? AND labels = ?", (name, text)).fetchone()
    if row is not None:
        return int(row[0])
    return int(conn.execute("INSERT INTO metric_series (name, labels) VALUES (?, ?)", (name, text)).lastrowid)


def _matching_series(conn: sqlite3.Connection, name: str, wanted: Labels) -> list[tuple[int, Labels]]:
    found = []
    for series_id, text in _rows(conn, "SELECT id, labels FROM metric_series WHERE name = ?", (name,)):
        labels = frozenset(json.loads(text).items())
        if wanted <= labels:
            found.append((series_id, labels))
    return found


def _stored_points(
    conn: sqlite3.Connection, name: str, wanted: Labels, start: float, end: float
) -> dict[Labels, list[Point]]:
    found = {}
    for series_id, labels in _matching_series(conn, name, wanted):
        rolled = _rows(
            conn,
            "SELECT bucket, total / count FROM metric_rollups "
            "WHERE series_id = ? AND bucket BETWEEN ? AND ? ORDER BY bucket",
            (series_id, start, end),
        )
        raw = _rows(
            conn,
            "SELECT ts, value FROM metric_points WHERE series_id = ? AND ts BETWEEN ? AND ? ORDER BY ts, rowid",
            (series_id, start, end),
        )
        if rolled or raw:
            found[labels] = [Point(ts, value) for ts, value in chain(rolled, raw)]
    return found


def _stored_latest(conn: sqlite3.Connection, name: str, wanted: Labels) -> dict[Labels, Point]:
    found = {}
    for series_id, labels in _matching_series(conn, name, wanted):
        candidates = _rows(
            conn,
            "SELECT last_ts, last FROM (SELECT * FROM metric_rollups WHERE series_id = :id ORDER BY bucket DESC "
            "LIMIT 1) UNION ALL SELECT ts, value FROM (SELECT * FROM metric_points WHERE series_id = :id "
            "ORDER BY ts DESC, rowid DESC LIMIT 1)",
            {"id": series_id},
        )
        if candidates:
            found[labels] = Point(*max(candidates, key=lambda row: row[0]))
    return found


def _stored_rollups(
    conn: sqlite3.Connection, name: str, wanted: Labels, start: float, end: float
) -> dict[Labels, list[Rollup]]:
    found = {}
    for series_id, labels in _matching_series(conn, name, wanted):
        rows = _rows(
            conn,
            "SELECT bucket, minimum, maximum, total, count, last, last_ts FROM metric_rollups "
            "WHERE series_id = ? AND bucket BETWEEN ? AND ? ORDER BY bucket",
            (series_id, start, end),
        )
        if rows:
            found[labels] = [Rollup(*row) for row in rows]
    return found


class SqliteSeriesStore:
    """Series in SQLite, buffered in memory; see the module docstring for batching and retention.

    `compact` rolls up and deletes expired rows; the owner should call it every few minutes, and a flush
    also runs it when the last run is `compact_every_s` old (the first flush always does; None: never).
    A batch that cannot be written is logged and dropped.
    """

    def __init__(
        self,
        db: SqliteDatabase,
        *,
        raw_retention_s: float = 86400,
        rollup_retention_s: float = 30 * 86400,
        rollup_step_s: float = 60,
        batch_window_s: float = 0.05,
        batch_size: int = 1000,
        compact_every_s: float | None = 300,
    ) -> None:
        if rollup_step_s <= 0 or raw_retention_s < 0 or rollup_retention_s < 0 or batch_size < 1:
            raise ValueError("rollup_step_s and batch_size must be positive, retentions not negative")
        self.db = db
        self.raw_retention_s = raw_retention_s
        self.rollup_retention_s = rollup_retention_s
        self.rollup_step_s = rollup_step_s
        self.batch_window_s = batch_window_s
        self.batch_size = batch_size
        self.compact_every_s = compact_every_s
        self._pending: list[Sample] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._next_compact = 0.0  # time.monotonic() of the next compaction a flush runs
        self._series_ids: dict[tuple[str, Labels], int] = {}  # used on the database thread only
        self._closed = False

    async def migrate(self) -> None:
        await self.db.migrate("series", _MIGRATIONS)

    async def record(
        self, name: str, value: float, labels: Mapping[str, str] | None = None, ts: float | None = None
    ) -> None:
        await self._add([_sample(name, labels, ts, value)])

    async def record_many(self, samples: Iterable[tuple[str, Mapping[str, str], float, float]]) -> None:
        await self._add([_sample(name, labels, ts, value) for name, labels, ts, value in samples])

    async def _add(self, samples: list[Sample]) -> None:
        if self._closed:
            raise RuntimeError("the series store is closed")
        self._pending.extend(samples)
        if len(self._pending) >= self.batch_size:
            await self.flush()
        elif self._timer is None and self._pending:
            self._timer = asyncio.get_running_loop().call_later(self.batch_window_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._spawn(self._flush_logged())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("could not flush metric samples")

    async def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # No await between taking the batch and submitting its write: a read submitted later to the
        # database thread runs after the write, so `points` never misses nor doubles a sample.
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.db.write(lambda conn: self._write(conn, batch))
        except BaseException as exc:
            self._series_ids.clear()  # ids cached by a rolled-back transaction do not exist
            if not isinstance(exc, sqlite3.Error):
                raise
            log.exception("could not write %d metric samples; they are dropped", len(batch))
            return
        if self.compact_every_s is not None and time.monotonic() >= self._next_compact:
            try:
                await self.compact()
            except sqlite3.Error:
                log.exception("could not compact metric series")

    def _write(self, conn: sqlite3.Connection, batch: list[Sample]) -> None:
        ids = self._series_ids
        if len(ids) > 100_000:
            ids.clear()
        rows = []
        for name, labels, ts, value in batch:
            series_id = ids.get((name, labels))
            if series_id is None:
                series_id = ids[name, labels] = _series_id(conn, name, labels)
            rows.append((series_id, ts, value))
        conn.executemany(_INSERT_POINTS, rows)

    async def compact(self, now: float | None = None) -> None:
        """Roll raw points older than raw retention up into buckets and delete what has expired."""
        self._next_compact = time.monotonic() + (self.compact_every_s or 0)
        await self.flush()
        now = time.time() if now is None else now
        step = self.rollup_step_s
        params = {"step": step, "cutoff": math.floor((now - self.raw_retention_s) / step) * step}
        expired = now - self.rollup_retention_s - step  # buckets that ended before rollup retention

        def compact(conn: sqlite3.Connection) -> tuple[int, int, int, int]:
            rolled = conn.execute(_ROLL_UP, params).rowcount
            raw = conn.execute("DELETE FROM metric_points WHERE ts < :cutoff", params).rowcount
            rollups = conn.execute("DELETE FROM metric_rollups WHERE bucket <= ?", (expired,)).rowcount
            series = conn.execute(_DELETE_EMPTY_SERIES).rowcount
            if series:
                self._series_ids.clear()
            return raw, rolled, rollups, series

        try:
            counts = await self.db.write(compact)
        except BaseException:
            self._series_ids.clear()
            raise
        log.debug("metric series compacted: %d raw points into %d rollups; %d rollups, %d series expired", *counts)

    async def close(self) -> None:
        self._closed = True
        await self.flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _buffered(self, name: str) -> Iterable[Sample]:
        return (sample for sample in self._pending if sample[0] == name)

    async def points(
        self, name: str, matchers: Mapping[str, str], start: float, end: float
    ) -> dict[Labels, list[Point]]:
        name, wanted = checked_name(name), labels_of(matchers)
        buffered: dict[Labels, list[Point]] = {}
        for _, labels, ts, value in self._buffered(name):
            if start <= ts <= end and wanted <= labels:
                buffered.setdefault(labels, []).append(Point(ts, value))
        found = await self.db.run(lambda conn: _stored_points(conn, name, wanted, start, end))
        for labels, points in buffered.items():
            found[labels] = sorted(chain(found.get(labels, ()), points), key=_ts)
        return found

    async def latest(self, name: str, matchers: Mapping[str, str]) -> dict[Labels, Point]:
        name, wanted = checked_name(name), labels_of(matchers)
        buffered: dict[Labels, Point] = {}
        for _, labels, ts, value in self._buffered(name):
            if wanted <= labels and (labels not in buffered or ts >= buffered[labels].ts):
                buffered[labels] = Point(ts, value)
        found = await self.db.run(lambda conn: _stored_latest(conn, name, wanted))
        for labels, point in buffered.items():
            if labels not in found or point.ts >= found[labels].ts:
                found[labels] = point
        return found

    async def names(self) -> dict[str, list[dict[str, str]]]:
        buffered = {(name, labels) for name, labels, _, _ in self._pending}
        rows = await self.db.run(lambda conn: _rows(conn, "SELECT name, labels FROM metric_series"))
        stored = ((name, frozenset(json.loads(text).items())) for name, text in rows)
        return _names(chain(stored, buffered))

    async def rollups(
        self, name: str, matchers: Mapping[str, str], start: float, end: float
    ) -> dict[Labels, list[Rollup]]:
        """The rollups (buckets starting in [start, end]) of each matching series: for exact count and sum
        over downsampled history, which `points` reports as bucket averages."""
        name, wanted = checked_name(name), labels_of(matchers)
        return await self.db.run(lambda conn: _stored_rollups(conn, name, wanted, start, end))
