"""Agents and their reputation: the `ReputationStore` seam and its embedded SQLite implementation."""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Literal, Protocol

from ops_agent.stores.sqlite import SqliteDatabase

__all__ = ["AgentRecord", "EventType", "INITIAL_SCORE", "REPUTATION_DELTAS", "ReputationStore", "SqliteReputationStore"]

EventType = Literal["task_success", "task_failure", "budget_exceeded", "permission_denied"]

# The seed's table, exactly.
REPUTATION_DELTAS: dict[str, int] = {
    "task_success": +2,
    "task_failure": -3,
    "budget_exceeded": -10,
    "permission_denied": -8,
}
INITIAL_SCORE = 100
AGENT_TYPES = ("ops_agent", "mcp_client", "peer_agent")


@dataclass(frozen=True, slots=True)
class AgentRecord:
    id: str
    name: str
    agent_type: str
    score: int
    successes: int
    created_at: float


class ReputationStore(Protocol):
    async def get_or_create_agent(self, name: str, agent_type: str = "ops_agent") -> AgentRecord: ...

    async def get_agent(self, name: str) -> AgentRecord | None: ...

    async def record_event(self, agent_id: str, event_type: EventType, reason: str) -> AgentRecord: ...

    async def events(self, agent_id: str, limit: int = 50) -> list[dict]: ...


_MIGRATIONS = [
    f"""
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        agent_type TEXT NOT NULL CHECK (agent_type IN {AGENT_TYPES!r}),
        score INTEGER NOT NULL,
        successes INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE reputation_events (
        id INTEGER PRIMARY KEY,
        agent_id TEXT NOT NULL REFERENCES agents (id),
        event_type TEXT NOT NULL,
        delta INTEGER NOT NULL,
        score_after INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX reputation_events_agent ON reputation_events (agent_id, id)
    """
]


def _record(row: sqlite3.Row) -> AgentRecord:
    return AgentRecord(row["id"], row["name"], row["agent_type"], row["score"], row["successes"], row["created_at"])


class SqliteReputationStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate("reputation", _MIGRATIONS)

    async def get_or_create_agent(self, name: str, agent_type: str = "ops_agent") -> AgentRecord:
        def upsert(conn: sqlite3.Connection) -> AgentRecord:
            conn.execute(
                "INSERT INTO agents (id, name, agent_type, score, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (str(uuid.uuid4()), name, agent_type, INITIAL_SCORE, time.time()),
            )
            return _record(conn.execute("SELECT * FROM agents WHERE name = ?", (name,)).fetchone())

        return await self.db.write(upsert)

    async def get_agent(self, name: str) -> AgentRecord | None:
        row = await self.db.run(lambda conn: conn.execute("SELECT * FROM agents WHERE name = ?", (name,)).fetchone())
        return _record(row) if row else None

    async def record_event(self, agent_id: str, event_type: EventType, reason: str) -> AgentRecord:
        delta = REPUTATION_DELTAS[event_type]

        def apply(conn: sqlite3.Connection) -> AgentRecord:
            row = conn.execute(
                "UPDATE agents SET score = max(0, score + ?), successes = successes + ? WHERE id = ? RETURNING *",
                (delta, 1 if event_type == "task_success" else 0, agent_id),
            ).fetchone()
            if row is None:
                raise LookupError(f"no agent {agent_id}")
            conn.execute(
                "INSERT INTO reputation_events (agent_id, event_type, delta, score_after, reason, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (agent_id, event_type, delta, row["score"], reason, time.time()),
            )
            return _record(row)

        return await self.db.write(apply)

    async def events(self, agent_id: str, limit: int = 50) -> list[dict]:
        rows = await self.db.run(
            lambda conn: conn.execute(
                "SELECT event_type, delta, score_after, reason, created_at FROM reputation_events "
                "WHERE agent_id = ? ORDER BY id DESC LIMIT ?",
                (agent_id, limit),
            ).fetchall()
        )
        return [dict(row) for row in rows]
