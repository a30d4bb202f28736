"""The audit trail: one record per gate decision, with its outcome.

Records of read-only calls are written in batches by a background task (a group commit at most 50 ms
or 256 records after the first one waiting), so observing costs no disk wait; a record of anything that changes the world is
committed before the call returns. `close()` flushes what is pending.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from dataclasses import asdict, dataclass
from typing import Protocol

from ops_agent.stores.sqlite import SqliteDatabase

__all__ = ["AuditLog", "AuditRecord", "LogAuditLog", "SqliteAuditLog"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AuditRecord:
    ts: float
    agent_id: str | None
    agent: str
    via: str
    task_id: str | None
    tool: str
    action: str | None
    arguments: dict
    decision: str  # allowed | invalid | denied_budget | denied_permission | denied_degraded
    outcome: str  # ok | error | refused
    error: str | None = None
    duration_ms: float = 0.0
    tokens: int = 0
    usd_micros: int = 0


class AuditLog(Protocol):
    async def append(self, record: AuditRecord, *, durable: bool) -> None: ...

    async def recent(self, limit: int = 50, agent: str | None = None) -> list[dict]: ...


_MIGRATIONS = [
    """
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        agent_id TEXT,
        agent TEXT NOT NULL,
        via TEXT NOT NULL,
        task_id TEXT,
        tool TEXT NOT NULL,
        action TEXT,
        arguments TEXT NOT NULL,
        decision TEXT NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT,
        duration_ms REAL NOT NULL,
        tokens INTEGER NOT NULL,
        usd_micros INTEGER NOT NULL
    );
    CREATE INDEX audit_log_agent ON audit_log (agent, id)
    """
]
_COLUMNS = tuple(AuditRecord.__dataclass_fields__)
_INSERT = f"INSERT INTO audit_log ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def _row(record: AuditRecord) -> tuple:
    values = asdict(record)
    values["arguments"] = json.dumps(values["arguments"], default=str, sort_keys=True)
    return tuple(values[name] for name in _COLUMNS)


class SqliteAuditLog:
    def __init__(self, db: SqliteDatabase, *, batch_window_s: float = 0.05, batch_size: int = 256) -> None:
        self.db = db
        self.batch_window_s = batch_window_s
        self.batch_size = batch_size
        self._pending: list[AuditRecord] = []
        self._flusher: asyncio.Task | None = None

    async def migrate(self) -> None:
        await self.db.migrate("audit", _MIGRATIONS)

    async def append(self, record: AuditRecord, *, durable: bool) -> None:
        self._pending.append(record)
        if durable or len(self._pending) >= self.batch_size:
            await self.flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.batch_window_s)
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            rows = [_row(record) for record in batch]
            try:
                await self.db.write(lambda conn: conn.executemany(_INSERT, rows))
            except sqlite3.Error:
                log.exception("could not write %d audit records; they follow as log lines", len(rows))
                for record in batch:
                    log.warning("audit %s", json.dumps(asdict(record), default=str))

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()

    async def recent(self, limit: int = 50, agent: str | None = None) -> list[dict]:
        await self.flush()
        where, params = ("WHERE agent = ?", (agent, limit)) if agent else ("", (limit,))
        rows = await self.db.run(
            lambda conn: conn.execute(f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?", params).fetchall()
        )
        return [dict(row) | {"arguments": json.loads(row["arguments"])} for row in rows]


class LogAuditLog:
    """Degraded mode's audit trail: one JSON log line per record, since the store is unreachable."""

    async def append(self, record: AuditRecord, *, durable: bool) -> None:
        log.warning("audit %s", json.dumps(asdict(record), default=str, sort_keys=True))

    async def recent(self, limit: int = 50, agent: str | None = None) -> list[dict]:
        return []

    async def close(self) -> None:
        return None
