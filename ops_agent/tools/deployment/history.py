"""Deployment history in the store: who asked for what, when, where, how it ended. Survives restarts.

The idempotency key is unique here: a request that comes again with the same key finds its earlier
entry (and deployment) instead of creating another.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.deployment.models import HistoryEntry

__all__ = ["DeploymentHistory", "SqliteDeploymentHistory"]


class DeploymentHistory(Protocol):
    async def start(self, **fields: Any) -> tuple[HistoryEntry, bool]:
        """Record a request; returns (entry, created). With a known idempotency key, the earlier entry."""
        ...

    async def update(self, entry_id: int, **fields: Any) -> HistoryEntry: ...

    async def by_key(self, key: str) -> HistoryEntry | None: ...

    async def list(
        self,
        *,
        project: str | None = None,
        environment: str | None = None,
        outcome: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[HistoryEntry]: ...


_MIGRATIONS = [
    """
    CREATE TABLE deployment_history (
        id INTEGER PRIMARY KEY,
        action TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        project TEXT NOT NULL,
        environment TEXT NOT NULL,
        branch TEXT,
        deployment_id TEXT,
        deployment_url TEXT,
        outcome TEXT NOT NULL,
        error TEXT,
        requested_at REAL NOT NULL,
        finished_at REAL,
        duration_s REAL,
        idempotency_key TEXT UNIQUE
    );
    CREATE INDEX deployment_history_project ON deployment_history (project, requested_at)
    """
]
_TIMES = ("requested_at", "finished_at")


def _entry(row: sqlite3.Row) -> HistoryEntry:
    values = dict(row)
    for name in _TIMES:
        if values[name] is not None:
            values[name] = datetime.fromtimestamp(values[name], UTC)
    return HistoryEntry(**values)


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: (value.timestamp() if isinstance(value, datetime) else value) for key, value in fields.items()}


class SqliteDeploymentHistory:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate("deployment_history", _MIGRATIONS)

    async def start(self, **fields: Any) -> tuple[HistoryEntry, bool]:
        values = _columns({"outcome": "pending", "requested_at": time.time(), **fields})
        names = ", ".join(values)
        marks = ", ".join("?" * len(values))

        def insert(conn: sqlite3.Connection) -> tuple[HistoryEntry, bool]:
            row = conn.execute(
                f"INSERT INTO deployment_history ({names}) VALUES ({marks}) "
                "ON CONFLICT (idempotency_key) DO NOTHING RETURNING *",
                tuple(values.values()),
            ).fetchone()
            if row is not None:
                return _entry(row), True
            earlier = conn.execute(
                "SELECT * FROM deployment_history WHERE idempotency_key = ?", (values["idempotency_key"],)
            ).fetchone()
            return _entry(earlier), False

        return await self.db.write(insert)

    async def update(self, entry_id: int, **fields: Any) -> HistoryEntry:
        values = _columns(fields)
        assignments = ", ".join(f"{name} = ?" for name in values)
        row = await self.db.write(
            lambda conn: conn.execute(
                f"UPDATE deployment_history SET {assignments} WHERE id = ? RETURNING *", (*values.values(), entry_id)
            ).fetchone()
        )
        return _entry(row)

    async def by_key(self, key: str) -> HistoryEntry | None:
        row = await self.db.run(
            lambda conn: conn.execute("SELECT * FROM deployment_history WHERE idempotency_key = ?", (key,)).fetchone()
        )
        return _entry(row) if row else None

    async def list(
        self,
        *,
        project: str | None = None,
        environment: str | None = None,
        outcome: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[HistoryEntry]:
        filters = {"project": project, "environment": environment, "outcome": outcome, "action": action}
        where = [f"{name} = ?" for name, value in filters.items() if value is not None]
        params: list[Any] = [value for value in filters.values() if value is not None]
        if since is not None:
            where.append("requested_at >= ?")
            params.append(since.timestamp())
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self.db.run(
            lambda conn: conn.execute(
                f"SELECT * FROM deployment_history {clause} ORDER BY requested_at DESC, id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        )
        return [_entry(row) for row in rows]
