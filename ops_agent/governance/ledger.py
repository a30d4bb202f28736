"""Cost tracking: the `CostLedger` seam, budgets over rolling hour and day windows, LLM prices.

Money is integer micro-dollars everywhere (no float drift). Spending goes reserve -> settle: before an LLM
request the worst case is reserved atomically against the budget (so concurrent tasks cannot overspend
it together), and after the reply the reservation is settled to the real usage. A reservation that is
never settled (a crashed process) stops counting when its lease ends.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Protocol

from ops_agent.config import BudgetSettings, LLMPrice
from ops_agent.errors import BudgetExceeded
from ops_agent.stores.sqlite import SqliteDatabase

__all__ = ["BudgetLimits", "BudgetUsage", "CostLedger", "SqliteCostLedger", "TokenUsage", "usd_micros"]

HOUR_S = 3600.0
DAY_S = 86400.0
LEASE_S = 600.0


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """One LLM reply's usage, as the Messages API reports it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
            + self.cache_read_tokens
        )


def usd_micros(usage: TokenUsage, price: LLMPrice) -> int:
    """Cost in micro-dollars; prices are USD per million tokens, so tokens x price is micro-dollars."""
    return round(
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_write_5m_tokens * price.cache_write_5m
        + usage.cache_write_1h_tokens * price.cache_write_1h
        + usage.cache_read_tokens * price.cache_read
    )


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    hour_tokens: int = 0
    hour_usd_micros: int = 0
    day_tokens: int = 0
    day_usd_micros: int = 0


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    hourly_tokens: int
    daily_tokens: int
    hourly_usd_micros: int
    daily_usd_micros: int

    @classmethod
    def from_settings(cls, budget: BudgetSettings) -> BudgetLimits:
        return cls(
            budget.hourly_tokens,
            budget.daily_tokens,
            round(budget.hourly_usd * 1_000_000),
            round(budget.daily_usd * 1_000_000),
        )

    def problems(self, used: BudgetUsage, tokens: int = 0, micros: int = 0) -> list[str]:
        """What `used` plus a further spend of (tokens, micros) would exceed; empty when within budget."""
        checks = [
            ("hourly tokens", used.hour_tokens, tokens, self.hourly_tokens, str),
            ("daily tokens", used.day_tokens, tokens, self.daily_tokens, str),
            ("hourly USD", used.hour_usd_micros, micros, self.hourly_usd_micros, _usd),
            ("daily USD", used.day_usd_micros, micros, self.daily_usd_micros, _usd),
        ]
        return [
            f"{name} {show(spent)} of {show(limit)} used" + (f", {show(more)} more requested" if more else "")
            for name, spent, more, limit, show in checks
            if spent + more > limit or (more == 0 and spent >= limit)
        ]

    def check(self, used: BudgetUsage, tokens: int = 0, micros: int = 0) -> None:
        if problems := self.problems(used, tokens, micros):
            raise BudgetExceeded("budget exceeded: " + "; ".join(problems))


def _usd(micros: int) -> str:
    return f"${micros / 1_000_000:.4f}"


def budget_windows(used: BudgetUsage, limits: BudgetLimits) -> list[tuple[str, str, int, int]]:
    """(window, unit, used, limit) of each budget: hour and day, tokens and USD micros."""
    return [
        ("hour", "tokens", used.hour_tokens, limits.hourly_tokens),
        ("day", "tokens", used.day_tokens, limits.daily_tokens),
        ("hour", "usd", used.hour_usd_micros, limits.hourly_usd_micros),
        ("day", "usd", used.day_usd_micros, limits.daily_usd_micros),
    ]


class CostLedger(Protocol):
    async def usage(self, agent_id: str) -> BudgetUsage: ...

    async def reserve(self, agent_id: str, tokens: int, micros: int, limits: BudgetLimits) -> int:
        """Atomically check the budget and hold (tokens, micros); raises BudgetExceeded. Returns an id."""
        ...

    async def settle(self, reservation_id: int, tokens: int, micros: int, model: str | None = None) -> None: ...

    async def record(self, agent_id: str, tokens: int, micros: int, model: str | None = None) -> None: ...


_MIGRATIONS = [
    """
    CREATE TABLE cost_entries (
        id INTEGER PRIMARY KEY,
        agent_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        tokens INTEGER NOT NULL,
        usd_micros INTEGER NOT NULL,
        model TEXT,
        settled INTEGER NOT NULL,
        lease_until REAL
    );
    CREATE INDEX cost_entries_agent_time ON cost_entries (agent_id, created_at)
    """
]

_USAGE_SQL = """
SELECT
    coalesce(sum(CASE WHEN created_at >= :hour THEN tokens END), 0),
    coalesce(sum(CASE WHEN created_at >= :hour THEN usd_micros END), 0),
    coalesce(sum(tokens), 0),
    coalesce(sum(usd_micros), 0)
FROM cost_entries
WHERE agent_id = :agent AND created_at >= :day AND (settled = 1 OR lease_until > :now)
"""


def _usage(conn: sqlite3.Connection, agent_id: str, now: float) -> BudgetUsage:
    row = conn.execute(_USAGE_SQL, {"agent": agent_id, "hour": now - HOUR_S, "day": now - DAY_S, "now": now})
    return BudgetUsage(*row.fetchone())


class SqliteCostLedger:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate("cost", _MIGRATIONS)

    async def usage(self, agent_id: str) -> BudgetUsage:
        return await self.db.run(lambda conn: _usage(conn, agent_id, time.time()))

    async def reserve(self, agent_id: str, tokens: int, micros: int, limits: BudgetLimits) -> int:
        def reserve(conn: sqlite3.Connection) -> int:
            now = time.time()
            limits.check(_usage(conn, agent_id, now), tokens, micros)
            cursor = conn.execute(
                "INSERT INTO cost_entries (agent_id, created_at, tokens, usd_micros, settled, lease_until) "
                "VALUES (?, ?, ?, ?, 0, ?)",
                (agent_id, now, tokens, micros, now + LEASE_S),
            )
            return int(cursor.lastrowid)

        return await self.db.write(reserve)

    async def settle(self, reservation_id: int, tokens: int, micros: int, model: str | None = None) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "UPDATE cost_entries SET tokens = ?, usd_micros = ?, model = ?, settled = 1, lease_until = NULL "
                "WHERE id = ?",
                (tokens, micros, model, reservation_id),
            )
        )

    async def record(self, agent_id: str, tokens: int, micros: int, model: str | None = None) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO cost_entries (agent_id, created_at, tokens, usd_micros, model, settled) "
                "VALUES (?, ?, ?, ?, ?, 1)",
                (agent_id, time.time(), tokens, micros, model),
            )
        )
