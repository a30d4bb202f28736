"""What the incident tools answer with: a diagnosis, and what a remediation did and whether it held."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["Cause", "Diagnosis", "ProposedAction", "RemediationReport"]

Cause = Literal[
    "healthy", "disk_full", "memory_exhausted", "bad_deployment", "dependency_down", "crashing",
    "application_errors", "unknown",
]


class ProposedAction(BaseModel):
    tool: Literal["rollback", "run_restart_command"]
    arguments: dict[str, Any]
    reason: str


class Diagnosis(BaseModel):
    service: str
    onset: str = Field(description="When the trouble began (ISO 8601): the earliest active alert, else the first error line.")
    cause: Cause
    summary: str = Field(description="One line: the cause and the fix, for people.")
    evidence: list[str] = Field(description="What the diagnosis rests on, most telling first.")
    action: ProposedAction | None = Field(None, description="The one governed call that should fix it; none = escalate.")
    fixable: bool = Field(description="True when ops-agent can fix this itself with what is configured.")
    recommendations: list[str] = Field(default_factory=list, description="For people: from the matched signatures.")


class RemediationReport(BaseModel):
    diagnosis: Diagnosis
    action_taken: ProposedAction | None = None
    action_ok: bool | None = Field(None, description="Whether the action's call succeeded; null when none was taken.")
    outcome: str = Field(description="What the action answered, or why nothing was done.")
    verified: bool = Field(description="The service answered healthy, with no server errors, after the action.")
    verification: str
    escalated: bool = Field(description="True when people must act: no safe automatic fix, or the fix did not hold.")
