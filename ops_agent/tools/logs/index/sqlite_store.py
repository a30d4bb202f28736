"""The embedded log index: SQLite with an FTS5 table, in its own file and on its own thread.

Its own file because a million-line ingest must not queue behind governance's writes, nor make the main
database's file grow. Two tables share one rowid: `log_records` holds the filterable fields, `log_fts` the
searchable text (message, attribute values).

The rowid is the record's time: milliseconds since the epoch in the high bits, a sequence number in the
low 21. So rowid order is time order whatever order records arrive in, and a time range is a rowid range,
which FTS5 seeks directly: "the newest 100 matches", a histogram and a count come from the full-text index
alone, without visiting the records, and retention is a rowid-range delete. Time ranges have millisecond
resolution.

A record with a sender's key (`LogRecord.key`: a Vercel drain record, a signed webhook message) is
written once: `source_key` is uniquely indexed, and a batch skips the keys already stored inside its own
write transaction.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ops_agent.errors import ToolFailed, ToolRetry
from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.logs.index.query import And, Field, Node, Not, Or, Text, is_text_only
from ops_agent.tools.logs.index.store import LogFilter, SearchPage, StoredRecord, bucket_width, flat_attribute_text
from ops_agent.tools.logs.record import SEVERITIES, LogRecord, severity_rank

__all__ = ["SqliteLogStore", "time_key"]

log = logging.getLogger(__name__)

T = TypeVar("T")

SEQUENCE_BITS = 21  # 2M records per millisecond; 42 bits of milliseconds reach the year 2109
_SEQUENCE_MASK = (1 << SEQUENCE_BITS) - 1
_MAX_MS = (1 << 42) - 1

_MIGRATIONS = [
    """
    CREATE TABLE log_records (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        severity INTEGER NOT NULL,
        service TEXT NOT NULL,
        host TEXT NOT NULL,
        attributes TEXT
    );
    CREATE INDEX log_records_service ON log_records (service);
    CREATE INDEX log_records_severity ON log_records (severity);
    CREATE VIRTUAL TABLE log_fts USING fts5 (message, attributes, tokenize = 'unicode61 remove_diacritics 2')
    """,
    """
    ALTER TABLE log_records ADD COLUMN source_key TEXT;
    CREATE UNIQUE INDEX log_records_source_key ON log_records (source_key) WHERE source_key IS NOT NULL
    """,
]
_SELECT = (
    "SELECT r.id, r.time, r.severity, r.service, r.host, f.message, r.attributes "
    "FROM log_records r JOIN log_fts f ON f.rowid = r.id"
)


def time_key(ts: float) -> int:
    """The smallest rowid of a record at `ts` (Unix seconds)."""
    ms = math.floor(ts * 1000) if math.isfinite(ts) else (0 if ts < 0 else _MAX_MS)
    return min(max(ms, 0), _MAX_MS) << SEQUENCE_BITS


class SqliteLogStore:
    def __init__(self, path: Path | str) -> None:
        self.database = SqliteDatabase(path)
        # Records of one millisecond differ in their sequence numbers; starting at a random one makes a
        # clash with records written before a restart (same millisecond, same number) practically impossible.
        self._sequence = random.getrandbits(SEQUENCE_BITS)

    async def open(self) -> None:
        await self.database.open()
        # A bigger page cache keeps the FTS index's hot pages in memory during large ingests.
        await self.database.run(lambda conn: conn.execute("PRAGMA cache_size = -65536"))
        await self.database.migrate("logs", _MIGRATIONS)

    async def close(self) -> None:
        await self.database.close()

    async def append(self, records: list[LogRecord]) -> int:
        if not records:
            return 0
        for attempt in range(5):
            first = self._sequence
            self._sequence = (self._sequence + len(records)) & _SEQUENCE_MASK
            ids = [time_key(r.time) | ((first + i) & _SEQUENCE_MASK) for i, r in enumerate(records)]
            try:
                return await self.database.write(lambda conn: _insert(conn, ids, records))
            except sqlite3.IntegrityError:
                if attempt == 4:
                    raise
                self._sequence = random.getrandbits(SEQUENCE_BITS)  # a clash: the batch rolled back; renumber
        raise AssertionError("unreachable")

    async def known_keys(self, keys: Sequence[str]) -> set[str]:
        """The keys of `keys` already stored (records are written once per key)."""
        return await self._read(lambda conn: _stored_keys(conn, keys))

    async def search(self, where: LogFilter, *, limit: int, buckets: int = 60) -> SearchPage:
        source, id_column, clause, params = _matches(where)

        def run(conn: sqlite3.Connection) -> SearchPage:
            start = where.start
            if start is None:
                row = conn.execute(
                    f"SELECT {id_column} FROM {source} WHERE {clause} ORDER BY {id_column} LIMIT 1", params
                ).fetchone()
                start = (row[0] >> SEQUENCE_BITS) / 1000 if row else where.end
            width = bucket_width(start, where.end, buckets)
            histogram = [0] * max(1, int((where.end - start) // width) + 1)
            for bucket, count in conn.execute(
                f"SELECT ({id_column} - ?) / ?, COUNT(*) FROM {source} WHERE {clause} GROUP BY 1",
                [time_key(start), round(width * 1000) << SEQUENCE_BITS, *params],
            ):
                histogram[min(max(bucket, 0), len(histogram) - 1)] += count
            newest = [
                row[0]
                for row in conn.execute(
                    f"SELECT {id_column} FROM {source} WHERE {clause} ORDER BY {id_column} DESC LIMIT ?",
                    [*params, limit],
                )
            ]
            return SearchPage(sum(histogram), _by_id(conn, newest), start, width, histogram)

        return await self._read(run)

    async def records(self, where: LogFilter, *, limit: int) -> list[StoredRecord]:
        source, id_column, clause, params = _matches(where)

        def run(conn: sqlite3.Connection) -> list[StoredRecord]:
            sql = f"SELECT {id_column} FROM {source} WHERE {clause} ORDER BY {id_column} DESC LIMIT ?"
            return _by_id(conn, [row[0] for row in conn.execute(sql, [*params, limit])])

        return await self._read(run)

    async def volume(self, where: LogFilter, *, bucket_s: float) -> dict[tuple[str, str], dict[int, int]]:
        clause, params = _where(where)
        origin = time_key(where.start if where.start is not None else 0.0)
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT r.service, r.severity, (r.id - ?) / ?, COUNT(*) FROM log_records r WHERE {clause} "
                "GROUP BY 1, 2, 3",
                [origin, round(bucket_s * 1000) << SEQUENCE_BITS, *params],
            ).fetchall()
        )
        counts: dict[tuple[str, str], dict[int, int]] = {}
        for service, severity, bucket, count in rows:
            counts.setdefault((service, SEVERITIES[severity]), {})[bucket] = count
        return counts

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read, with SQLite's errors translated at the seam (never a raw database message to a caller)."""
        try:
            return await self.database.run(fn)
        except sqlite3.Error as exc:
            if "stack overflow" in str(exc) or "too many" in str(exc):
                raise ToolRetry("query: too complex for the index; use fewer terms or less nesting") from exc
            log.warning("log index query failed: %s: %s", type(exc).__name__, exc)
            raise ToolFailed(f"the log index could not answer ({type(exc).__name__}); see the server log") from exc

    async def prune(self, before: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            key = time_key(before)
            conn.execute("DELETE FROM log_fts WHERE rowid < ?", (key,))
            return conn.execute("DELETE FROM log_records WHERE id < ?", (key,)).rowcount

        return await self.database.write(delete)

    async def stats(self) -> dict[str, Any]:
        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            count = conn.execute("SELECT COUNT(*) FROM log_records").fetchone()[0]
            oldest = conn.execute("SELECT time FROM log_records ORDER BY id LIMIT 1").fetchone()
            newest = conn.execute("SELECT time FROM log_records ORDER BY id DESC LIMIT 1").fetchone()
            return {
                "backend": "sqlite", "records": count,
                "oldest": oldest[0] if oldest else None, "newest": newest[0] if newest else None,
            }

        return await self.database.run(run)


def _insert(conn: sqlite3.Connection, ids: list[int], records: list[LogRecord]) -> int:
    keys = [r.key for r in records]
    if any(keys):  # inside the write transaction: no other writer can store a key between check and insert
        taken = _stored_keys(conn, [k for k in keys if k])
        kept = []
        for id_, record, key in zip(ids, records, keys, strict=True):
            if key is None or key not in taken:
                kept.append((id_, record, key))
                if key is not None:
                    taken.add(key)  # a key twice in one batch: the first is kept
        ids, records, keys = [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]
    conn.executemany(
        "INSERT INTO log_records (id, time, severity, service, host, attributes, source_key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (id_, r.time, severity_rank(r.severity), r.service, r.host,
             _json(r.attributes) if r.attributes else None, key)
            for id_, r, key in zip(ids, records, keys, strict=True)
        ],
    )
    conn.executemany(
        "INSERT INTO log_fts (rowid, message, attributes) VALUES (?, ?, ?)",
        [
            (id_, r.message, flat_attribute_text(r.attributes) if r.attributes else "")
            for id_, r in zip(ids, records, strict=True)
        ],
    )
    return len(records)


def _stored_keys(conn: sqlite3.Connection, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        sql = f"SELECT source_key FROM log_records WHERE source_key IN ({', '.join('?' * len(chunk))})"
        found.update(row[0] for row in conn.execute(sql, chunk))
    return found


def _by_id(conn: sqlite3.Connection, ids: list[int]) -> list[StoredRecord]:
    """The records of `ids`, in that order."""
    by_id = {}
    for start in range(0, len(ids), 500):  # SQLite builds may cap a statement's parameters at 32,766
        chunk = ids[start : start + 500]
        for row in conn.execute(f"{_SELECT} WHERE r.id IN ({', '.join('?' * len(chunk))})", chunk):
            by_id[row[0]] = _record(row)
    return [by_id[i] for i in ids if i in by_id]


def _json(attributes: dict[str, Any]) -> str:
    try:
        return json.dumps(attributes, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # NaN or infinity: SQLite's JSON functions would reject the whole document
        return json.dumps(_finite(attributes), separators=(",", ":"), default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _record(row: sqlite3.Row) -> StoredRecord:
    return StoredRecord(
        id=row[0],
        time=row[1],
        severity=SEVERITIES[row[2]],
        service=row[3],
        host=row[4],
        message=row[5],
        attributes=json.loads(row[6]) if row[6] else {},
    )


# --- compiling a query to SQL ------------------------------------------------------------------------


def _matches(where: LogFilter) -> tuple[str, str, str, list[Any]]:
    """Where the matches of `where` are read from: (table, id column, condition, parameters).

    A full-text query with no other filter is answered by the FTS index alone (its rowids are the ids);
    anything else filters the records, with the full-text part as a subquery."""
    low = time_key(where.start) if where.start is not None else 0
    high = time_key(where.end) | _SEQUENCE_MASK
    if (
        where.query is not None
        and not where.services
        and where.min_severity is None
        and is_text_only(where.query)
        and (expression := _fts(where.query)) is not None
    ):
        return "log_fts", "rowid", "log_fts MATCH ? AND rowid BETWEEN ? AND ?", [expression, low, high]
    clause, params = _where(where)
    return "log_records r", "r.id", clause, params


def _where(where: LogFilter) -> tuple[str, list[Any]]:
    low = time_key(where.start) if where.start is not None else 0
    clauses = ["r.id BETWEEN ? AND ?"]
    params: list[Any] = [low, time_key(where.end) | _SEQUENCE_MASK]
    if where.min_severity is not None:
        clauses.append("r.severity >= ?")
        params.append(severity_rank(where.min_severity))
    if where.services:
        clauses.append(f"r.service IN ({', '.join('?' * len(where.services))})")
        params.extend(where.services)
    if where.query is not None:
        sql, query_params = _sql(where.query)
        clauses.append(f"({sql})")  # a top-level OR must not escape the range and filters
        params.extend(query_params)
    return " AND ".join(clauses), params


def _sql(node: Node) -> tuple[str, list[Any]]:
    if is_text_only(node) and (expression := _fts(node)) is not None:
        return "r.id IN (SELECT rowid FROM log_fts WHERE log_fts MATCH ?)", [expression]
    match node:
        case Field():
            return _field(node)
        case Not(inner):
            sql, params = _sql(inner)
            return f"NOT ({sql})", params
        case And(nodes):
            # Text parts answer best as one full-text expression; the rest filter the same rows.
            text = [n for n in nodes if is_text_only(n)]
            rest = [n for n in nodes if not is_text_only(n)]
            parts: list[tuple[str, list[Any]]] = []
            if len(text) > 1 and (expression := _fts(And(tuple(text)))) is not None:
                parts.append(("r.id IN (SELECT rowid FROM log_fts WHERE log_fts MATCH ?)", [expression]))
            else:
                rest = list(nodes)
            parts.extend(_sql(n) for n in rest)
            return " AND ".join(f"({sql})" for sql, _ in parts), [p for _, ps in parts for p in ps]
        case Or(nodes):
            parts = [_sql(n) for n in nodes]
            return " OR ".join(f"({sql})" for sql, _ in parts), [p for _, ps in parts for p in ps]
    raise AssertionError(f"unknown query node {node!r}")


def _fts(node: Node) -> str | None:
    """An FTS5 MATCH expression for a text-only subtree, or None where FTS5 can't say it (a lone NOT)."""
    match node:
        case Text(words, _, prefix):
            return '"' + words.replace('"', '""') + '"' + ("*" if prefix else "")
        case Or(nodes):
            parts = [_fts(n) for n in nodes]
            return None if None in parts else "(" + " OR ".join(parts) + ")"  # type: ignore[arg-type]
        case And(nodes):
            positive = [_fts(n) for n in nodes if not isinstance(n, Not)]
            negative = [_fts(n.node) for n in nodes if isinstance(n, Not)]
            if not positive or None in positive or None in negative:
                return None
            expression = "(" + " AND ".join(positive) + ")"  # type: ignore[arg-type]
            return expression + (" NOT (" + " OR ".join(negative) + ")" if negative else "")  # type: ignore[arg-type]
    return None


def _field(node: Field) -> tuple[str, list[Any]]:
    if node.name == "severity":
        return "r.severity >= ?", [severity_rank(node.value)]
    if node.name in ("service", "host"):
        column = f"r.{node.name}"
    else:
        parts = [part.replace('"', "") for part in node.name.split(".")]
        column = "json_extract(r.attributes, '$" + "".join(f'."{part}"' for part in parts) + "')"
        if len(parts) > 1:  # a.b: nested, or else a key that holds the dot itself (ECS-style flat keys)
            column = f"""COALESCE({column}, json_extract(r.attributes, '$."{'.'.join(parts)}"'))"""
    if node.operator == "=":
        if node.value.endswith("*"):
            return f"{column} LIKE ? ESCAPE '\\'", [_like_prefix(node.value[:-1])]
        return f"CAST({column} AS TEXT) = ?", [node.value]
    return f"CAST({column} AS REAL) {node.operator} ?", [float(node.value)]


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
