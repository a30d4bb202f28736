"""The durable outbox: every delivery is stored before it is attempted and marked after.

States: pending -> sending (claimed; attempts + 1, committed before the request leaves) -> delivered, or
-> pending again with a later next_attempt_at (retryable failure), or -> failed (permanent, or out of
attempts; a fallback entry for another channel may be inserted in the same transaction).

`NotificationService.stop()` lets attempts in flight finish and be recorded, so a graceful stop leaves
nothing in doubt. A process that dies (or a cancelled worker) leaves its in-flight entries in `sending`. `recover()` (run once when a service starts;
one delivering process per database) decides what they become: channels whose receiver dedupes on our id
(webhooks) go back to pending, and a repeat is harmless. For Slack and Mailtrap, which take no idempotency
key, the only way a message is sent twice is a crash between the service accepting it and our commit of
`delivered` (milliseconds, plus the request time if the crash is mid-request); `in_doubt="resend"` (the
default: a page is never lost) resends those, `in_doubt="drop"` marks them failed instead (never twice).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.notify._models import DeliveryResult, Notification, OutboxEntry

__all__ = ["MemoryOutbox", "Outbox", "SqliteOutbox"]

IN_DOUBT_ERROR = "interrupted while sending (process stopped); "


class Outbox(Protocol):
    async def add(self, entries: Sequence[OutboxEntry]) -> list[str]:
        """Store new entries; an id already stored is left alone (same notification id = same delivery).
        Returns the ids that were new."""
        ...

    async def get(self, ids: Sequence[str]) -> list[OutboxEntry]: ...

    async def for_notification(self, notification_id: str) -> list[OutboxEntry]: ...

    async def due(self, now: float, *, limit: int = 100, ids: Sequence[str] | None = None) -> list[OutboxEntry]:
        """Pending entries whose next attempt is due, oldest first."""
        ...

    async def claim(self, entry_id: str, now: float) -> OutboxEntry | None:
        """pending -> sending with attempts + 1, if still pending and due; None if someone else has it."""
        ...

    async def mark_delivered(self, entry_id: str, result: DeliveryResult, now: float) -> None: ...

    async def reschedule(
        self, entry_id: str, *, error: str, status_code: int | None, next_attempt_at: float, now: float
    ) -> None: ...

    async def mark_failed(
        self, entry_id: str, *, error: str, status_code: int | None, now: float, fallback: OutboxEntry | None = None
    ) -> None:
        """Final failure; `fallback` is inserted and linked in the same transaction."""
        ...

    async def recover(self, now: float, resend: Callable[[str], bool]) -> tuple[int, int]:
        """Entries left in `sending` by a stopped process: back to pending where resend(channel), else failed.
        Returns (resent, failed)."""
        ...

    async def next_due_at(self) -> float | None: ...

    async def list(self, *, status: str | None = None, limit: int = 100) -> list[OutboxEntry]: ...


class MemoryOutbox:
    """The embedded default without a database: the same state machine, lost with the process."""

    def __init__(self) -> None:
        self._entries: dict[str, OutboxEntry] = {}

    async def add(self, entries: Sequence[OutboxEntry]) -> list[str]:
        new = [e for e in entries if e.id not in self._entries]
        for entry in new:
            self._entries[entry.id] = replace(entry)
        return [e.id for e in new]

    async def get(self, ids: Sequence[str]) -> list[OutboxEntry]:
        return [replace(self._entries[i]) for i in ids if i in self._entries]

    async def for_notification(self, notification_id: str) -> list[OutboxEntry]:
        return [replace(e) for e in self._entries.values() if e.notification.notification_id == notification_id]

    async def due(self, now: float, *, limit: int = 100, ids: Sequence[str] | None = None) -> list[OutboxEntry]:
        pool = self._entries.values() if ids is None else [self._entries[i] for i in ids if i in self._entries]
        due = [e for e in pool if e.status == "pending" and e.next_attempt_at <= now]
        due.sort(key=lambda e: (e.next_attempt_at, e.notification.created_at))
        return [replace(e) for e in due[:limit]]

    async def claim(self, entry_id: str, now: float) -> OutboxEntry | None:
        entry = self._entries.get(entry_id)
        if entry is None or entry.status != "pending" or entry.next_attempt_at > now:
            return None
        entry.status, entry.attempts, entry.updated_at = "sending", entry.attempts + 1, now
        return replace(entry)

    async def mark_delivered(self, entry_id: str, result: DeliveryResult, now: float) -> None:
        entry = self._entries[entry_id]
        entry.status, entry.updated_at, entry.last_error = "delivered", now, None
        entry.status_code, entry.provider_ids = result.status_code, list(result.provider_ids)

    async def reschedule(
        self, entry_id: str, *, error: str, status_code: int | None, next_attempt_at: float, now: float
    ) -> None:
        entry = self._entries[entry_id]
        entry.status, entry.last_error, entry.status_code = "pending", error, status_code
        entry.next_attempt_at, entry.updated_at = next_attempt_at, now

    async def mark_failed(
        self, entry_id: str, *, error: str, status_code: int | None, now: float, fallback: OutboxEntry | None = None
    ) -> None:
        entry = self._entries[entry_id]
        entry.status, entry.last_error, entry.status_code, entry.updated_at = "failed", error, status_code, now
        if fallback is not None and fallback.id not in self._entries:
            self._entries[fallback.id] = replace(fallback)
            entry.fallback_entry = fallback.id

    async def recover(self, now: float, resend: Callable[[str], bool]) -> tuple[int, int]:
        resent = failed = 0
        for entry in self._entries.values():
            if entry.status != "sending":
                continue
            if resend(entry.channel):
                entry.status, entry.next_attempt_at, resent = "pending", now, resent + 1
            else:
                entry.status, failed = "failed", failed + 1
                entry.last_error = IN_DOUBT_ERROR + "not resent, to avoid a duplicate"
            entry.updated_at = now
        return resent, failed

    async def next_due_at(self) -> float | None:
        times = [e.next_attempt_at for e in self._entries.values() if e.status == "pending"]
        return min(times) if times else None

    async def list(self, *, status: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        rows = [e for e in self._entries.values() if status is None or e.status == status]
        rows.sort(key=lambda e: e.notification.created_at, reverse=True)
        return [replace(e) for e in rows[:limit]]


MIGRATIONS = [
    """
    CREATE TABLE notify_outbox (
        id TEXT PRIMARY KEY,
        notification_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        notification TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_error TEXT,
        status_code INTEGER,
        provider_ids TEXT NOT NULL DEFAULT '[]',
        fallback_of TEXT,
        fallback_entry TEXT
    );
    CREATE INDEX notify_outbox_due ON notify_outbox (status, next_attempt_at);
    CREATE INDEX notify_outbox_notification ON notify_outbox (notification_id)
    """
]

_COLUMNS = (
    "id, notification, status, attempts, next_attempt_at, updated_at, last_error, status_code, provider_ids, "
    "fallback_of, fallback_entry"
)


def _entry(row: sqlite3.Row) -> OutboxEntry:
    return OutboxEntry(
        id=row["id"],
        notification=Notification.model_validate_json(row["notification"]),
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        updated_at=row["updated_at"],
        last_error=row["last_error"],
        status_code=row["status_code"],
        provider_ids=json.loads(row["provider_ids"]),
        fallback_of=row["fallback_of"],
        fallback_entry=row["fallback_entry"],
    )


def _insert(conn: sqlite3.Connection, entry: OutboxEntry) -> bool:
    n = entry.notification
    cursor = conn.execute(
        "INSERT OR IGNORE INTO notify_outbox (id, notification_id, channel, notification, status, attempts, "
        "next_attempt_at, created_at, updated_at, fallback_of) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
        (entry.id, n.notification_id, n.channel, n.model_dump_json(), entry.next_attempt_at, n.created_at,
         n.created_at, entry.fallback_of),
    )
    return cursor.rowcount == 1


class SqliteOutbox:
    """The outbox in the project's SQLite database (component "notify")."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate("notify", MIGRATIONS)

    async def add(self, entries: Sequence[OutboxEntry]) -> list[str]:
        def add(conn: sqlite3.Connection) -> list[str]:
            return [entry.id for entry in entries if _insert(conn, entry)]

        return await self.db.write(add)

    async def get(self, ids: Sequence[str]) -> list[OutboxEntry]:
        ids = list(ids)

        def get(conn: sqlite3.Connection) -> list[OutboxEntry]:
            marks = ",".join("?" * len(ids))
            rows = conn.execute(f"SELECT {_COLUMNS} FROM notify_outbox WHERE id IN ({marks})", ids).fetchall()
            by_id = {row["id"]: _entry(row) for row in rows}
            return [by_id[i] for i in ids if i in by_id]

        return await self.db.run(get) if ids else []

    async def for_notification(self, notification_id: str) -> list[OutboxEntry]:
        def get(conn: sqlite3.Connection) -> list[OutboxEntry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM notify_outbox WHERE notification_id = ? ORDER BY created_at, rowid",
                (notification_id,),
            ).fetchall()
            return [_entry(row) for row in rows]

        return await self.db.run(get)

    async def due(self, now: float, *, limit: int = 100, ids: Sequence[str] | None = None) -> list[OutboxEntry]:
        def due(conn: sqlite3.Connection) -> list[OutboxEntry]:
            sql = f"SELECT {_COLUMNS} FROM notify_outbox WHERE status = 'pending' AND next_attempt_at <= ?"
            params: list[object] = [now]
            if ids is not None:
                sql += f" AND id IN ({','.join('?' * len(ids))})"
                params += list(ids)
            sql += " ORDER BY next_attempt_at, created_at, rowid LIMIT ?"
            return [_entry(row) for row in conn.execute(sql, [*params, limit]).fetchall()]

        if ids is not None and not ids:
            return []
        return await self.db.run(due)

    async def claim(self, entry_id: str, now: float) -> OutboxEntry | None:
        def claim(conn: sqlite3.Connection) -> OutboxEntry | None:
            changed = conn.execute(
                "UPDATE notify_outbox SET status = 'sending', attempts = attempts + 1, updated_at = ? "
                "WHERE id = ? AND status = 'pending' AND next_attempt_at <= ?",
                (now, entry_id, now),
            ).rowcount
            if changed != 1:
                return None
            return _entry(conn.execute(f"SELECT {_COLUMNS} FROM notify_outbox WHERE id = ?", (entry_id,)).fetchone())

        return await self.db.write(claim)

    async def mark_delivered(self, entry_id: str, result: DeliveryResult, now: float) -> None:
        await self.db.run(
            lambda conn: conn.execute(
                "UPDATE notify_outbox SET status = 'delivered', updated_at = ?, last_error = NULL, status_code = ?, "
                "provider_ids = ? WHERE id = ?",
                (now, result.status_code, json.dumps(result.provider_ids), entry_id),
            )
        )

    async def reschedule(
        self, entry_id: str, *, error: str, status_code: int | None, next_attempt_at: float, now: float
    ) -> None:
        await self.db.run(
            lambda conn: conn.execute(
                "UPDATE notify_outbox SET status = 'pending', last_error = ?, status_code = ?, next_attempt_at = ?, "
                "updated_at = ? WHERE id = ?",
                (error, status_code, next_attempt_at, now, entry_id),
            )
        )

    async def mark_failed(
        self, entry_id: str, *, error: str, status_code: int | None, now: float, fallback: OutboxEntry | None = None
    ) -> None:
        def fail(conn: sqlite3.Connection) -> None:
            linked = fallback.id if fallback is not None and _insert(conn, fallback) else None
            conn.execute(
                "UPDATE notify_outbox SET status = 'failed', last_error = ?, status_code = ?, updated_at = ?, "
                "fallback_entry = ? WHERE id = ?",
                (error, status_code, now, linked, entry_id),
            )

        await self.db.write(fail)

    async def recover(self, now: float, resend: Callable[[str], bool]) -> tuple[int, int]:
        def recover(conn: sqlite3.Connection) -> tuple[int, int]:
            resent = failed = 0
            rows = conn.execute("SELECT id, channel FROM notify_outbox WHERE status = 'sending'").fetchall()
            for row in rows:
                if resend(row["channel"]):
                    conn.execute(
                        "UPDATE notify_outbox SET status = 'pending', next_attempt_at = ?, updated_at = ? WHERE id = ?",
                        (now, now, row["id"]),
                    )
                    resent += 1
                else:
                    conn.execute(
                        "UPDATE notify_outbox SET status = 'failed', last_error = ?, updated_at = ? WHERE id = ?",
                        (IN_DOUBT_ERROR + "not resent, to avoid a duplicate", now, row["id"]),
                    )
                    failed += 1
            return resent, failed

        return await self.db.write(recover)

    async def next_due_at(self) -> float | None:
        return await self.db.run(
            lambda conn: conn.execute(
                "SELECT MIN(next_attempt_at) FROM notify_outbox WHERE status = 'pending'"
            ).fetchone()[0]
        )

    async def list(self, *, status: str | None = None, limit: int = 100) -> list[OutboxEntry]:
        def rows(conn: sqlite3.Connection) -> list[OutboxEntry]:
            where, params = ("WHERE status = ?", [status]) if status else ("", [])
            result = conn.execute(
                f"SELECT {_COLUMNS} FROM notify_outbox {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
            return [_entry(row) for row in result]

        return await self.db.run(rows)
