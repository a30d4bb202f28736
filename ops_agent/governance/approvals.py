"""Held calls waiting for the operator: `approval_required`.

When the loop will not run a step the planner chose (the task did not ask for it, or a value in it came from
tool output: see `ops_agent.ooda.provenance`), the call is kept here, whole, as *pending*. The operator then
approves it (`ops-agent approvals approve ID`, or an MCP client's elicitation prompt), which runs it once,
through the gate, as the agent that asked for it, with that agent's permission level and budget; or denies
it. Approving lifts the hold, never a permission. An approval is single-use and expires after a day.

The arguments are stored as given, because an approved call must run as it was held; every listing shows
them redacted, as the audit trail does.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from ops_agent.errors import OpsAgentError, ToolRetry
from ops_agent.governance.gate import Caller
from ops_agent.redact import Redactor
from ops_agent.stores.sqlite import SqliteDatabase

__all__ = ["Approval", "ApprovalStore", "Approver", "APPROVAL_TTL_S"]

APPROVAL_TTL_S = 86_400.0
Status = Literal["pending", "approved", "denied", "expired"]
# Asks a person now: True approves, False denies, None leaves the step pending (no answer, or no way to ask).
Approver = Callable[["Approval"], Awaitable[bool | None]]

_MIGRATIONS = [
    """
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        agent TEXT NOT NULL,
        agent_type TEXT NOT NULL,
        via TEXT NOT NULL,
        task_id TEXT,
        task TEXT NOT NULL,
        tool TEXT NOT NULL,
        arguments TEXT NOT NULL,
        reasons TEXT NOT NULL,
        status TEXT NOT NULL,
        decided_by TEXT,
        decided_at REAL,
        outcome TEXT
    );
    CREATE INDEX approvals_status ON approvals (status, created_at)
    """
]


@dataclass(frozen=True)
class Approval:
    id: str
    created_at: float
    expires_at: float
    caller: Caller
    task: str
    tool: str
    arguments: dict[str, Any]
    reasons: list[str]
    status: Status
    decided_by: str | None = None
    decided_at: float | None = None
    outcome: str | None = None

    def public(self, redactor: Redactor) -> dict[str, Any]:
        """What a listing shows: arguments redacted, like the audit trail."""
        return {
            "id": self.id, "status": self.status, "agent": self.caller.agent, "via": self.caller.via,
            "task_id": self.caller.task_id, "task": redactor.text(self.task), "tool": self.tool,
            "arguments": redactor.value(self.arguments), "reasons": [redactor.text(r) for r in self.reasons],
            "created_at": self.created_at, "expires_at": self.expires_at, "decided_by": self.decided_by,
            "decided_at": self.decided_at, "outcome": redactor.text(self.outcome) if self.outcome else None,
        }


class ApprovalStore:
    def __init__(self, db: SqliteDatabase, *, ttl_s: float = APPROVAL_TTL_S) -> None:
        self.db = db
        self.ttl_s = ttl_s

    async def migrate(self) -> None:
        await self.db.migrate("approvals", _MIGRATIONS)

    async def hold(self, caller: Caller, task: str, tool: str, arguments: dict[str, Any], reasons: list[str]) -> Approval:
        now = time.time()
        approval = Approval(
            id=f"apr-{uuid.uuid4().hex[:12]}", created_at=now, expires_at=now + self.ttl_s, caller=caller, task=task,
            tool=tool, arguments=arguments, reasons=reasons, status="pending",
        )
        row = (
            approval.id, now, approval.expires_at, caller.agent, caller.agent_type, caller.via, caller.task_id, task,
            tool, json.dumps(arguments), json.dumps(reasons), "pending",
        )
        await self.db.run(lambda conn: conn.execute(
            "INSERT INTO approvals (id, created_at, expires_at, agent, agent_type, via, task_id, task, tool, arguments,"
            " reasons, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row))
        return approval

    async def get(self, approval_id: str) -> Approval:
        row = await self.db.run(lambda conn: conn.execute(
            "SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone())
        if row is None:
            raise ToolRetry(f"approval_id: no held call {approval_id!r} (see `ops-agent approvals list`)")
        return _approval(row)

    async def list(self, status: str | None = "pending", limit: int = 50) -> list[Approval]:
        now = time.time()

        def select(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            if status is None:
                return conn.execute("SELECT * FROM approvals ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
            if status == "pending":
                return conn.execute("SELECT * FROM approvals WHERE status = 'pending' AND expires_at > ? "
                                    "ORDER BY created_at DESC LIMIT ?", (now, limit)).fetchall()
            return conn.execute("SELECT * FROM approvals WHERE status = ? ORDER BY created_at DESC LIMIT ?",
                                (status, limit)).fetchall()

        return [_approval(row) for row in await self.db.run(select)]

    async def decide(self, approval_id: str, approve: bool, by: str) -> Approval:
        """pending -> approved or denied, once: a second decision, or one after expiry, is refused."""
        now = time.time()

        def transition(conn: sqlite3.Connection) -> sqlite3.Row | None:
            conn.execute("UPDATE approvals SET status = 'expired' WHERE status = 'pending' AND expires_at <= ?", (now,))
            changed = conn.execute(
                "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ? WHERE id = ? AND status = 'pending'",
                ("approved" if approve else "denied", by, now, approval_id),
            ).rowcount
            return conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone() if changed else None

        row = await self.db.write(transition)
        if row is None:
            current = await self.get(approval_id)
            raise ToolRetry(f"approval_id: {approval_id} is {current.status}, not pending: nothing to decide")
        return _approval(row)

    async def record_outcome(self, approval_id: str, outcome: str) -> None:
        await self.db.run(lambda conn: conn.execute(
            "UPDATE approvals SET outcome = ? WHERE id = ?", (outcome[:2000], approval_id)))

    async def approve_and_run(
        self, approval_id: str, by: str, invoke: Callable[[Caller, str, dict[str, Any]], Awaitable[BaseModel]]
    ) -> tuple[Approval, BaseModel]:
        """Approve, then run the held call through `invoke` (the registry's) as the agent that asked for it."""
        approval = await self.decide(approval_id, True, by)
        caller = Caller(approval.caller.agent, via=f"approval:{by}"[:64], task_id=approval.caller.task_id,
                        agent_type=approval.caller.agent_type)
        try:
            output = await invoke(caller, approval.tool, approval.arguments)
        except OpsAgentError as exc:
            await self.record_outcome(approval_id, f"error: {exc.public_message}")
            raise
        await self.record_outcome(approval_id, "ok")
        return approval, output


def _approval(row: sqlite3.Row) -> Approval:
    status = row["status"]
    if status == "pending" and row["expires_at"] <= time.time():
        status = "expired"
    return Approval(
        id=row["id"], created_at=row["created_at"], expires_at=row["expires_at"],
        caller=Caller(row["agent"], via=row["via"], task_id=row["task_id"], agent_type=row["agent_type"]),
        task=row["task"], tool=row["tool"], arguments=json.loads(row["arguments"]), reasons=json.loads(row["reasons"]),
        status=status, decided_by=row["decided_by"], decided_at=row["decided_at"], outcome=row["outcome"],
    )
