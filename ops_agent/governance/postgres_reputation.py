"""Agents and their reputation on PostgreSQL (psycopg 3, async), with the SQL migrations that create them.

The semantics are `SqliteReputationStore`'s: a new agent starts at `INITIAL_SCORE`, each event adds its
`REPUTATION_DELTAS` row, the score never goes below 0, and `task_success` counts towards probation. A score
change is one call of the `record_reputation_event` SQL function (the migration defines it; the Supabase
store calls the same function through PostgREST): an `UPDATE ... RETURNING` whose row lock orders
concurrent events, so none is lost, and the event row, in one transaction.

Failures are translated at this seam: an unreachable or refusing server, or any other database error,
becomes `GovernanceUnavailable` naming only the kind of failure; never the URL, the user or a password.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row, tuple_row

from ops_agent.errors import GovernanceUnavailable
from ops_agent.governance.reputation import INITIAL_SCORE, REPUTATION_DELTAS, AgentRecord, EventType

__all__ = ["APPLICATION_NAME", "MIGRATIONS_TABLE", "PostgresReputationStore", "apply_migrations", "migration_scripts"]

# The ledger of applied migrations. Prefixed, unlike the governance tables: a database shared with other
# tools (Supabase, Rails, Flyway) may well have a `schema_migrations` of its own.
MIGRATIONS_TABLE = "ops_agent_schema_migrations"
# pg_advisory_xact_lock key serialising migrators across processes: the bytes of "opsagent" as an int64.
_MIGRATION_LOCK = int.from_bytes(b"opsagent", "big", signed=True)
APPLICATION_NAME = "ops-agent reputation"  # in pg_stat_activity
_AGENT_COLUMNS = "id, name, agent_type, reputation_score, successes, created_at"
_NOT_FOUND = "PT404"  # the SQLSTATE record_reputation_event raises for an unknown agent (PostgREST: HTTP 404)


def migration_scripts() -> list[tuple[str, str]]:
    """(version, SQL) of every file in migrations/postgres, in name order; the version is the file stem."""
    folder = resources.files("ops_agent.governance").joinpath("migrations", "postgres")
    files = sorted((entry for entry in folder.iterdir() if entry.name.endswith(".sql")), key=lambda e: e.name)
    return [(entry.name.removesuffix(".sql"), entry.read_text("utf-8")) for entry in files]


async def apply_migrations(
    conn: psycopg.AsyncConnection[Any], scripts: Sequence[tuple[str, str]] | None = None
) -> list[str]:
    """Apply the migrations not yet recorded in `MIGRATIONS_TABLE`, all in one transaction under an advisory
    lock, so that processes starting together apply each exactly once. Returns the versions applied."""
    scripts = migration_scripts() if scripts is None else scripts
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = conn.cursor(row_factory=tuple_row)  # whatever row factory the connection has
        await cursor.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")
        applied = {version for (version,) in await cursor.fetchall()}
        pending = [(version, script) for version, script in scripts if version not in applied]
        for version, script in pending:
            await conn.execute(script.encode("utf-8"))  # several statements: no parameters, simple protocol
            await conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES (%s)", (version,))
    return [version for version, _ in pending]


def _record(row: dict[str, Any]) -> AgentRecord:
    return AgentRecord(
        str(row["id"]), row["name"], row["agent_type"], row["reputation_score"], row["successes"],
        _epoch(row["created_at"]),
    )


def _epoch(value: datetime) -> float:
    return value.timestamp()


def _unavailable(exc: psycopg.Error, *, connecting: bool = False) -> GovernanceUnavailable:
    """The public error for a database failure: its kind and SQLSTATE, never its text (which names the host
    and the user and, from some proxies, echoes the connection string)."""
    if connecting:
        refused = "authentication" in str(exc).lower()  # libpq's words, classified here, never passed on
        why = "authentication refused" if refused else "server unreachable or refusing connections"
        return GovernanceUnavailable(f"reputation store unavailable: cannot connect to PostgreSQL ({why})")
    state = f", SQLSTATE {exc.sqlstate}" if exc.sqlstate else ""
    return GovernanceUnavailable(f"reputation store unavailable: PostgreSQL {type(exc).__name__}{state}")


class PostgresReputationStore:
    """`ReputationStore` on PostgreSQL. Holds up to `max_connections` connections, opened on demand.

    `url` is a libpq URL or conninfo string; `migrate()` creates the tables (idempotent)."""

    def __init__(self, url: str, *, max_connections: int = 10, connect_timeout_s: float = 5.0) -> None:
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[psycopg.AsyncConnection[dict[str, Any]]] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<url hidden>)"

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the versions applied (empty when up to date)."""
        async with self._connection() as conn:
            return await apply_migrations(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def get_or_create_agent(self, name: str, agent_type: str = "ops_agent") -> AgentRecord:
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO agents (name, agent_type, reputation_score) VALUES (%s, %s, %s) "
                        "ON CONFLICT (name) DO NOTHING",
                        (name, agent_type, INITIAL_SCORE),
                    )
                    cursor = await conn.execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE name = %s", (name,))
                    row = await cursor.fetchone()
            except pg_errors.CheckViolation as exc:
                raise ValueError(f"agent_type {agent_type!r} is refused by the agents table's CHECK constraint "
                                 f"({exc.diag.constraint_name})") from exc
        assert row is not None  # inserted, or there already
        return _record(row)

    async def get_agent(self, name: str) -> AgentRecord | None:
        async with self._connection() as conn:
            cursor = await conn.execute(f"SELECT {_AGENT_COLUMNS} FROM agents WHERE name = %s", (name,))
            row = await cursor.fetchone()
        return _record(row) if row else None

    async def record_event(self, agent_id: str, event_type: EventType, reason: str) -> AgentRecord:
        delta = REPUTATION_DELTAS[event_type]
        async with self._connection() as conn:
            try:
                cursor = await conn.execute(
                    f"SELECT {_AGENT_COLUMNS} FROM record_reputation_event(%s::uuid, %s, %s, %s)",
                    (agent_id, event_type, delta, reason),
                )
                row = await cursor.fetchone()
            except psycopg.DatabaseError as exc:
                if isinstance(exc, pg_errors.InvalidTextRepresentation) or exc.sqlstate == _NOT_FOUND:
                    raise LookupError(f"no agent {agent_id}") from exc
                raise
        assert row is not None
        return _record(row)

    async def events(self, agent_id: str, limit: int = 50) -> list[dict]:
        async with self._connection() as conn:
            try:
                cursor = await conn.execute(
                    "SELECT event_type, delta, score_after, reason, created_at FROM reputation_events "
                    "WHERE agent_id = %s::uuid ORDER BY id DESC LIMIT %s",
                    (agent_id, limit),
                )
                rows = await cursor.fetchall()
            except pg_errors.InvalidTextRepresentation:
                return []  # not a uuid: no agent has it
        return [{**row, "created_at": _epoch(row["created_at"])} for row in rows]

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A connection in autocommit mode, from the idle list or new. Database errors other than the
        ones a caller maps itself (LookupError, ValueError) leave as `GovernanceUnavailable`."""
        async with self._slots:
            try:
                conn = self._idle.pop() if self._idle else await self._connect()
            except psycopg.Error as exc:
                raise _unavailable(exc, connecting=True) from exc
            try:
                yield conn
            except psycopg.Error as exc:
                raise _unavailable(exc) from exc
            finally:
                reusable = not conn.closed and not conn.broken
                if reusable and conn.info.transaction_status == TransactionStatus.IDLE:
                    self._idle.append(conn)
                else:
                    await conn.close()

    async def _connect(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        return await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, row_factory=dict_row, connect_timeout=max(1, round(self._connect_timeout_s)),
            application_name=APPLICATION_NAME,
        )
