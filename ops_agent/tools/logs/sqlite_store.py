"""The embedded log index: SQLite with an FTS5 table, in its own file and on its own thread.

Its own file because a million-line ingest must not queue behind governance's writes, nor make the main
database's file grow. Two tables share one rowid: `log_records` holds the filterable fields (indexed by
time), `log_fts` the searchable text (message, attribute values), so retention is two plain deletes.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.logs.query import And, Field, Node, Not, Or, Text, is_text_only
from ops_agent.tools.logs.record import SEVERITIES, LogRecord, severity_rank
from ops_agent.tools.logs.store import LogFilter, SearchPage, StoredRecord, bucket_width, flat_attribute_text

__all__ = ["SqliteLogStore"]

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
    CREATE INDEX log_records_time ON log_records (time);
    CREATE INDEX log_records_service_time ON log_records (service, time);
    CREATE VIRTUAL TABLE log_fts USING fts5 (message, attributes, tokenize = 'unicode61 remove_diacritics 2')
    """,
]
_SELECT = (
    "SELECT r.id, r.time, r.severity, r.service, r.host, f.message, r.attributes "
    "FROM log_records r JOIN log_fts f ON f.rowid = r.id"
)


class SqliteLogStore:
    def __init__(self, path: Path | str) -> None:
        self.database = SqliteDatabase(path)

    async def open(self) -> None:
        await self.database.open()
        await self.database.migrate("logs", _MIGRATIONS)

    async def close(self) -> None:
        await self.database.close()

    async def append(self, records: list[LogRecord]) -> int:
        if not records:
            return 0

        def insert(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM log_records").fetchone()
            first = row[0] + 1
            conn.executemany(
                "INSERT INTO log_records (id, time, severity, service, host, attributes) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        first + i,
                        r.time,
                        severity_rank(r.severity),
                        r.service,
                        r.host,
                        json.dumps(r.attributes, separators=(",", ":"), default=str) if r.attributes else None,
                    )
                    for i, r in enumerate(records)
                ],
            )
            conn.executemany(
                "INSERT INTO log_fts (rowid, message, attributes) VALUES (?, ?, ?)",
                [
                    (first + i, r.message, flat_attribute_text(r.attributes) if r.attributes else "")
                    for i, r in enumerate(records)
                ],
            )
            return len(records)

        return await self.database.write(insert)

    async def search(self, where: LogFilter, *, limit: int, buckets: int = 60) -> SearchPage:
        clause, params = _where(where)

        def run(conn: sqlite3.Connection) -> SearchPage:
            start = where.start
            if start is None:
                row = conn.execute(f"SELECT MIN(r.time) FROM log_records r WHERE {clause}", params).fetchone()
                start = row[0] if row[0] is not None else where.end
            width = bucket_width(start, where.end, buckets)
            histogram = [0] * max(1, int((where.end - start) // width) + 1)
            for bucket, count in conn.execute(
                f"SELECT CAST((r.time - ?) / ? AS INTEGER), COUNT(*) FROM log_records r WHERE {clause} GROUP BY 1",
                [start, width, *params],
            ):
                histogram[min(max(bucket, 0), len(histogram) - 1)] += count
            rows = conn.execute(
                f"{_SELECT} WHERE {clause} ORDER BY r.time DESC, r.id DESC LIMIT ?", [*params, limit]
            ).fetchall()
            return SearchPage(sum(histogram), [_record(row) for row in rows], start, width, histogram)

        return await self.database.run(run)

    async def records(self, where: LogFilter, *, limit: int) -> list[StoredRecord]:
        clause, params = _where(where)
        rows = await self.database.run(
            lambda conn: conn.execute(
                f"{_SELECT} WHERE {clause} ORDER BY r.time DESC, r.id DESC LIMIT ?", [*params, limit]
            ).fetchall()
        )
        return [_record(row) for row in rows]

    async def volume(self, where: LogFilter, *, bucket_s: float) -> dict[tuple[str, str], dict[int, int]]:
        clause, params = _where(where)
        origin = where.start if where.start is not None else 0.0
        rows = await self.database.run(
            lambda conn: conn.execute(
                f"SELECT r.service, r.severity, CAST((r.time - ?) / ? AS INTEGER), COUNT(*) "
                f"FROM log_records r WHERE {clause} GROUP BY 1, 2, 3",
                [origin, bucket_s, *params],
            ).fetchall()
        )
        counts: dict[tuple[str, str], dict[int, int]] = {}
        for service, severity, bucket, count in rows:
            counts.setdefault((service, SEVERITIES[severity]), {})[bucket] = count
        return counts

    async def prune(self, before: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT MAX(id) FROM log_records WHERE time < ?", (before,)).fetchone()
            if row[0] is None:
                return 0
            conn.execute("DELETE FROM log_fts WHERE rowid IN (SELECT id FROM log_records WHERE time < ?)", (before,))
            return conn.execute("DELETE FROM log_records WHERE time < ?", (before,)).rowcount

        return await self.database.write(delete)

    async def stats(self) -> dict[str, Any]:
        row = await self.database.run(
            lambda conn: conn.execute("SELECT COUNT(*), MIN(time), MAX(time) FROM log_records").fetchone()
        )
        return {"backend": "sqlite", "records": row[0], "oldest": row[1], "newest": row[2]}


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


def _where(where: LogFilter) -> tuple[str, list[Any]]:
    clauses = ["r.time <= ?"]
    params: list[Any] = [where.end]
    if where.start is not None:
        clauses.append("r.time >= ?")
        params.append(where.start)
    if where.min_severity is not None:
        clauses.append("r.severity >= ?")
        params.append(severity_rank(where.min_severity))
    if where.services:
        clauses.append(f"r.service IN ({', '.join('?' * len(where.services))})")
        params.extend(where.services)
    if where.query is not None:
        sql, query_params = _sql(where.query)
        clauses.append(sql)
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
        path = "$" + "".join('."' + part.replace('"', "") + '"' for part in node.name.split("."))
        column = f"json_extract(r.attributes, '{path}')"
    if node.operator == "=":
        if node.value.endswith("*"):
            return f"{column} LIKE ? ESCAPE '\\'", [_like_prefix(node.value[:-1])]
        return f"CAST({column} AS TEXT) = ?", [node.value]
    return f"CAST({column} AS REAL) {node.operator} ?", [float(node.value)]


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
