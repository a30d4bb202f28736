"""Where rules, alerts, silences and the alert history live: SQLite (the main database), surviving restarts.

Each row keeps its model as JSON beside the few columns that are queried (name, state, times), so a model
can grow a field without a migration.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Protocol

from ops_agent.stores.sqlite import SqliteDatabase
from ops_agent.tools.alerts.models import Alert, AlertRule, HistoryEvent, Silence

__all__ = ["AlertStore", "SqliteAlertStore"]


class AlertStore(Protocol):
    async def save_rule(self, rule: AlertRule) -> None: ...

    async def rule(self, name_or_id: str) -> AlertRule | None: ...

    async def rules(self) -> list[AlertRule]: ...

    async def delete_rule(self, rule_id: str) -> bool: ...

    async def save_alert(self, alert: Alert) -> None: ...

    async def alert(self, alert_id: str) -> Alert | None: ...

    async def active_alerts(self) -> list[Alert]:
        """Pending and firing alerts, newest first."""
        ...

    async def save_silence(self, silence: Silence) -> None: ...

    async def silences(self, *, now: float | None = None) -> list[Silence]:
        """All silences, or with `now` the ones in force then."""
        ...

    async def delete_silence(self, silence_id: str) -> bool: ...

    async def record(self, alert_id: str, rule_name: str, at: float, event: str, detail: dict[str, Any]) -> None: ...

    async def history(
        self, *, alert_id: str | None = None, rule: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[HistoryEvent]: ...


_MIGRATIONS = [
    """
    CREATE TABLE alert_rules (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY, rule_id TEXT NOT NULL, state TEXT NOT NULL, started_at REAL NOT NULL, body TEXT NOT NULL
    );
    CREATE INDEX alerts_state ON alerts (state, started_at);
    CREATE TABLE alert_silences (id TEXT PRIMARY KEY, starts_at REAL NOT NULL, ends_at REAL NOT NULL, body TEXT NOT NULL);
    CREATE TABLE alert_history (
        id INTEGER PRIMARY KEY, alert_id TEXT NOT NULL, rule_name TEXT NOT NULL, at REAL NOT NULL,
        event TEXT NOT NULL, detail TEXT NOT NULL
    );
    CREATE INDEX alert_history_at ON alert_history (at);
    CREATE INDEX alert_history_alert ON alert_history (alert_id, at)
    """,
]


class SqliteAlertStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate("alerts", _MIGRATIONS)

    async def save_rule(self, rule: AlertRule) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO alert_rules (id, name, body) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
                (rule.id, rule.name, rule.model_dump_json()),
            )
        )

    async def rule(self, name_or_id: str) -> AlertRule | None:
        row = await self.db.run(
            lambda conn: conn.execute(
                "SELECT body FROM alert_rules WHERE id = ? OR name = ?", (name_or_id, name_or_id)
            ).fetchone()
        )
        return AlertRule.model_validate_json(row[0]) if row else None

    async def rules(self) -> list[AlertRule]:
        rows = await self.db.run(lambda conn: conn.execute("SELECT body FROM alert_rules ORDER BY name").fetchall())
        return [AlertRule.model_validate_json(row[0]) for row in rows]

    async def delete_rule(self, rule_id: str) -> bool:
        return bool(await self.db.write(lambda conn: conn.execute("DELETE FROM alert_rules WHERE id = ?", (rule_id,))))

    async def save_alert(self, alert: Alert) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO alerts (id, rule_id, state, started_at, body) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state, started_at = excluded.started_at, "
                "body = excluded.body",
                (alert.id, alert.rule_id, alert.state, alert.started_at, alert.model_dump_json()),
            )
        )

    async def alert(self, alert_id: str) -> Alert | None:
        row = await self.db.run(
            lambda conn: conn.execute("SELECT body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        )
        return Alert.model_validate_json(row[0]) if row else None

    async def active_alerts(self) -> list[Alert]:
        rows = await self.db.run(
            lambda conn: conn.execute(
                "SELECT body FROM alerts WHERE state IN ('pending', 'firing') ORDER BY started_at DESC"
            ).fetchall()
        )
        return [Alert.model_validate_json(row[0]) for row in rows]

    async def save_silence(self, silence: Silence) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO alert_silences (id, starts_at, ends_at, body) VALUES (?, ?, ?, ?)",
                (silence.id, silence.starts_at, silence.ends_at, silence.model_dump_json()),
            )
        )

    async def silences(self, *, now: float | None = None) -> list[Silence]:
        def read(conn: sqlite3.Connection) -> list[tuple]:
            if now is None:
                return conn.execute("SELECT body FROM alert_silences ORDER BY ends_at DESC").fetchall()
            return conn.execute(
                "SELECT body FROM alert_silences WHERE starts_at <= ? AND ends_at > ? ORDER BY ends_at DESC", (now, now)
            ).fetchall()

        return [Silence.model_validate_json(row[0]) for row in await self.db.run(read)]

    async def delete_silence(self, silence_id: str) -> bool:
        return bool(
            await self.db.write(lambda conn: conn.execute("DELETE FROM alert_silences WHERE id = ?", (silence_id,)))
        )

    async def record(self, alert_id: str, rule_name: str, at: float, event: str, detail: dict[str, Any]) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO alert_history (alert_id, rule_name, at, event, detail) VALUES (?, ?, ?, ?, ?)",
                (alert_id, rule_name, at, event, json.dumps(detail, default=str)),
            )
        )

    async def history(
        self, *, alert_id: str | None = None, rule: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[HistoryEvent]:
        filters = {"alert_id = ?": alert_id, "rule_name = ?": rule, "at >= ?": since}
        where = [clause for clause, value in filters.items() if value is not None]
        params = [value for value in filters.values() if value is not None]
        sql = "SELECT id, alert_id, rule_name, at, event, detail FROM alert_history"
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self.db.run(
            lambda conn: conn.execute(f"{sql} ORDER BY at DESC, id DESC LIMIT ?", (*params, limit)).fetchall()
        )
        return [
            HistoryEvent(id=r[0], alert_id=r[1], rule_name=r[2], at=r[3], event=r[4], detail=json.loads(r[5]))
            for r in rows
        ]
