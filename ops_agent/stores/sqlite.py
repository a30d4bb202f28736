"""Embedded SQLite plumbing: one connection on one dedicated thread, WAL, per-component migrations.

Why not aiosqlite: it hops to its thread once per statement. Governance wants a whole transaction
(read a budget, insert a reservation, commit) in one hop, so `read(fn)` and `write(fn)` run a plain
function against the connection on the database thread, and the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

__all__ = ["SqliteDatabase"]

T = TypeVar("T")


class SqliteDatabase:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._submit(self._connect)

    def _connect(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes; WAL fsyncs at checkpoints
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER)")
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._submit(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def migrate(self, component: str, migrations: Sequence[str]) -> None:
        """Apply the migrations of `component` not yet applied, each in its own transaction."""

        def apply(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
            for version, script in enumerate(migrations[row[0] if row else 0 :], start=(row[0] if row else 0) + 1):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in filter(str.strip, script.split(";")):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                        "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                        (component, version),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

        await self.run(apply)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the database thread (autocommit: for reads and single statements)."""
        return await self._submit(lambda: _no_cursor(fn(self._connection())))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` inside one IMMEDIATE transaction, committed if it returns, rolled back if it raises."""

        def transaction() -> T:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return _no_cursor(result)

        return await self._submit(transaction)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def _submit(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)


def _no_cursor(result: T) -> T:
    """A cursor must not leave the database thread: freed on another thread, it resets a statement the
    database thread may be using at that moment (SQLite answers "bad parameter or other API misuse").
    A function that returns one gets its row count instead, the cursor closed here."""
    if isinstance(result, sqlite3.Cursor):
        count = result.rowcount
        result.close()
        return count  # type: ignore[return-value]
    return result
