"""Alert rules, alerts, silences and their history: the models every alert interface answers with."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "PRIORITIES",
    "Alert",
    "AlertRule",
    "HistoryEvent",
    "Remediation",
    "Silence",
]

Priority = Literal["critical", "high", "medium", "low"]
PRIORITIES: tuple[str, ...] = ("critical", "high", "medium", "low")
AlertState = Literal["pending", "firing", "resolved"]


class Remediation(BaseModel):
    """What to do, governed, when the alert fires: roll back production, run an allow-listed command, or a task."""

    action: Literal["rollback", "restart", "task"]
    project: str | None = Field(None, description="rollback: the project (default: vercel.default_project).")
    command: str | None = Field(None, description="restart: a name from alerts.restart_commands.")
    task: str | None = Field(None, description="task: what to do, in plain language (run as a task of its own).")


class AlertRule(BaseModel):
    id: str
    name: str
    condition: str
    severity: Priority
    channels: list[str] = Field(default_factory=list, description="Extra channels; the priority adds its own.")
    for_s: float = 0.0
    repeat_interval_s: float
    remediation: Remediation | None = None
    enabled: bool = True
    created_by: str = ""
    created_at: float
    labels: dict[str, str] = Field(default_factory=dict)
    # The agent a remediation acts as: whoever last set it. A rule's author cannot make another agent's
    # permissions run its words (an agent allowed to write rules is not allowed to roll back production).
    remediation_by: str = ""


class Alert(BaseModel):
    id: str  # one episode: from the condition first holding to its resolution
    fingerprint: str  # rule and labels: at most one active alert per fingerprint (deduplication)
    rule_id: str
    rule_name: str
    severity: Priority
    state: AlertState
    value: float | None = None
    summary: str = ""
    started_at: float  # when the condition first held (pending since)
    fired_at: float | None = None
    resolved_at: float | None = None
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    last_notified_at: float | None = None
    notifications: int = 0
    escalated: bool = False
    silenced: bool = False
    remediation: str | None = None  # the remediation's outcome, when the rule has one


class Silence(BaseModel):
    id: str
    matchers: dict[str, str] = Field(description="rule (name, * allowed), severity, or a label: all must match.")
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""


class HistoryEvent(BaseModel):
    id: int
    alert_id: str
    rule_name: str
    at: float
    event: str  # pending, firing, resolved, cleared, notified, repeated, escalated, acknowledged, silenced, remediation
    detail: dict[str, Any] = Field(default_factory=dict)
