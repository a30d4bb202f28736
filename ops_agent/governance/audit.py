"""The audit trail: one record per gate decision, with its outcome, append-only and hash-chained.

Records of read-only calls are written in batches by a background task (a group commit at most 50 ms
or 256 records after the first one waiting), so observing costs no disk wait; a record of anything that changes the world is
committed before the call returns. `close()` flushes what is pending.

The chain. Each stored record carries `prev_hash` (the `hash` of the record before it) and `hash`, the
SHA-256 of its canonical form: sorted-key, compact, ASCII JSON of `id`, every `AuditRecord` field (with
`arguments` as the stored JSON text) and `prev_hash`. Hashes are computed inside the batch's write
transaction on the database thread (read the last hash, chain the batch, insert), so concurrent appenders,
even in other processes, are serialised by the write lock and cannot fork the chain.

Genesis. Records written before the chain existed have no hashes. The migration that added the chain stored
the highest id at that moment in `audit_chain_genesis`; those earlier records are counted, not checked, and
the first chained record has `prev_hash` "0" * 64.

Append-only. Triggers refuse UPDATE and DELETE on `audit_log` (and on the genesis marker) and refuse an
INSERT without hashes, so history only changes by editing the file directly, which `verify()` detects: a
changed record, a missing one (a gap in the ids) or a record rewritten with a fresh hash (the next record's
`prev_hash` no longer matches). What a chain alone cannot detect is the newest records cut off the end, or
every record from some point rewritten with fresh hashes; compare `head_hash` with a copy kept elsewhere
for that.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ops_agent.stores.sqlite import SqliteDatabase

__all__ = ["AuditLog", "AuditRecord", "AuditVerification", "LogAuditLog", "SqliteAuditLog"]

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
    decision: str  # allowed | invalid | held_approval | denied_rate | denied_budget | denied_permission | denied_degraded
    outcome: str  # ok | error | refused
    error: str | None = None
    duration_ms: float = 0.0
    tokens: int = 0
    usd_micros: int = 0


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """What `verify()` found. `problem` names the first bad record, e.g. "record 42 was changed"."""

    ok: bool
    records_checked: int  # chained records checked (up to the first bad one)
    first_bad_id: int | None = None
    problem: str | None = None
    unchained_records: int = 0  # records from before the chain existed, counted but not checked
    head_hash: str | None = None  # the newest record's hash: keep a copy elsewhere to detect a cut-off tail
    note: str | None = None


class AuditLog(Protocol):
    async def append(self, record: AuditRecord, *, durable: bool) -> None: ...

    async def recent(self, limit: int = 50, agent: str | None = None) -> list[dict]: ...

    async def verify(self) -> AuditVerification: ...


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
    """,
    """
    ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
    ALTER TABLE audit_log ADD COLUMN hash TEXT;
    CREATE TABLE audit_chain_genesis (after_id INTEGER NOT NULL);
    INSERT INTO audit_chain_genesis (after_id) SELECT COALESCE(MAX(id), 0) FROM audit_log
    """,
]
# The migration runner splits scripts on ";", which a trigger body contains, so the triggers are created
# here, idempotently, after the migrations (and again on every open, should one have been dropped).
_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: records cannot be updated'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: records cannot be deleted'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_chained_insert BEFORE INSERT ON audit_log
       WHEN NEW.hash IS NULL OR NEW.prev_hash IS NULL
       BEGIN SELECT RAISE(ABORT, 'audit records are inserted with their hashes'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_chain_genesis_no_update BEFORE UPDATE ON audit_chain_genesis
       BEGIN SELECT RAISE(ABORT, 'the audit chain genesis cannot be changed'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_chain_genesis_no_delete BEFORE DELETE ON audit_chain_genesis
       BEGIN SELECT RAISE(ABORT, 'the audit chain genesis cannot be changed'); END""",
]
GENESIS_HASH = "0" * 64
_COLUMNS = tuple(AuditRecord.__dataclass_fields__)
_HASHED = ("id", *_COLUMNS, "prev_hash")
_INSERT = f"INSERT INTO audit_log ({', '.join(_HASHED)}, hash) VALUES ({', '.join('?' * (len(_HASHED) + 1))})"
_REAL = frozenset({"ts", "duration_ms"})
_INTEGER = frozenset({"tokens", "usd_micros"})
_VERIFY_PAGE = 1000


def _row(record: AuditRecord) -> tuple:
    """The record's column values, each already of its column's type, so what is stored reads back (and
    hashes) exactly as written."""
    values = []
    for name in _COLUMNS:  # getattr, not asdict: asdict deep-copies the arguments
        value = getattr(record, name)
        if name == "arguments":
            value = json.dumps(value, default=str, sort_keys=True)
        elif name in _REAL:
            value = float(value) + 0.0  # + 0.0 turns -0.0, which SQLite may store as 0, into 0.0
        elif name in _INTEGER:
            value = int(value)
        elif value is not None:
            value = str(value)
        values.append(value)
    return tuple(values)


def _record_hash(fields: dict[str, Any]) -> str:
    """SHA-256 of the canonical form of a stored record: `fields` holds exactly the `_HASHED` columns."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _insert_chained(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Chain `rows` after the newest stored record and insert them (inside the caller's write transaction)."""
    last = conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    last_id, prev_hash = (last["id"], last["hash"] or GENESIS_HASH) if last else (0, GENESIS_HASH)
    chained = []
    for offset, values in enumerate(rows, start=1):
        stored = (last_id + offset, *values, prev_hash)
        prev_hash = _record_hash(dict(zip(_HASHED, stored)))
        chained.append((*stored, prev_hash))
    conn.executemany(_INSERT, chained)


def _missing(after_id: int, next_id: int) -> str:
    gap = f"record {after_id + 1} is" if next_id == after_id + 2 else f"records {after_id + 1}-{next_id - 1} are"
    return f"{gap} missing (ids jump from {after_id} to {next_id})"


class SqliteAuditLog:
    def __init__(self, db: SqliteDatabase, *, batch_window_s: float = 0.05, batch_size: int = 256) -> None:
        self.db = db
        self.batch_window_s = batch_window_s
        self.batch_size = batch_size
        self._pending: list[AuditRecord] = []
        self._flushing = asyncio.Lock()
        self._flusher: asyncio.Task | None = None

    async def migrate(self) -> None:
        await self.db.migrate("audit", _MIGRATIONS)

        def create_triggers(conn: sqlite3.Connection) -> None:
            for trigger in _TRIGGERS:
                conn.execute(trigger)

        await self.db.write(create_triggers)

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
        # Group commit: records appended while a batch is written wait here and go in the next batch together.
        async with self._flushing:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                rows = [_row(record) for record in batch]
                await self.db.write(lambda conn: _insert_chained(conn, rows))
            except (sqlite3.Error, ValueError):  # ValueError: a value JSON cannot hold (NaN), or SQLite cannot
                log.exception("could not write %d audit records; they follow as log lines", len(batch))
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

    async def verify(self) -> AuditVerification:
        """Walk the chain in id order, a page at a time, and report the first record that does not hold."""
        await self.flush()
        genesis = await self.db.run(lambda conn: conn.execute("SELECT after_id FROM audit_chain_genesis").fetchall())
        if len(genesis) != 1:
            return AuditVerification(
                ok=False, records_checked=0, problem=f"the chain's genesis marker has {len(genesis)} rows, not 1"
            )
        after_id = genesis[0]["after_id"]
        unchained = await self.db.run(
            lambda conn: conn.execute("SELECT COUNT(*) FROM audit_log WHERE id <= ?", (after_id,)).fetchone()[0]
        )
        last_id, expected_prev, checked = after_id, GENESIS_HASH, 0

        def bad(record_id: int, problem: str) -> AuditVerification:
            return AuditVerification(
                ok=False, records_checked=checked, first_bad_id=record_id, problem=problem, unchained_records=unchained
            )

        while True:
            page = await self.db.run(
                lambda conn, after=last_id: conn.execute(
                    "SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?", (after, _VERIFY_PAGE)
                ).fetchall()
            )
            for row in page:
                record_id = row["id"]
                if record_id != last_id + 1:
                    return bad(last_id + 1, _missing(last_id, record_id))
                if row["hash"] is None or row["prev_hash"] is None:
                    return bad(record_id, f"record {record_id} was changed: its hashes are gone")
                try:
                    recomputed = _record_hash({name: row[name] for name in _HASHED})
                except ValueError:  # a value JSON cannot hold (NaN) was written into the file
                    recomputed = None
                if recomputed != row["hash"]:
                    return bad(record_id, f"record {record_id} was changed")
                if row["prev_hash"] != expected_prev:
                    return bad(record_id, f"chain broken at {record_id}: prev_hash does not match")
                last_id, expected_prev, checked = record_id, row["hash"], checked + 1
            if len(page) < _VERIFY_PAGE:
                break
        return AuditVerification(
            ok=True,
            records_checked=checked,
            unchained_records=unchained,
            head_hash=expected_prev if checked else None,
        )


class LogAuditLog:
    """Degraded mode's audit trail: one JSON log line per record, since the store is unreachable."""

    async def append(self, record: AuditRecord, *, durable: bool) -> None:
        log.warning("audit %s", json.dumps(asdict(record), default=str, sort_keys=True))

    async def recent(self, limit: int = 50, agent: str | None = None) -> list[dict]:
        return []

    async def verify(self) -> AuditVerification:
        return AuditVerification(
            ok=True,
            records_checked=0,
            note="degraded mode: audit records go to the log only, so nothing is stored to verify",
        )

    async def close(self) -> None:
        return None
