"""What the deployment tools return: our own view of Vercel's objects, plus history entries.

Vercel's bodies are read for the few keys we need and turned into these models, so a field Vercel adds
or renames in a new version touches one function (`deployment_info`), not every caller.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "DeployResult",
    "DeploymentInfo",
    "DeploymentList",
    "EnvVarChange",
    "EnvVarInfo",
    "EnvVarList",
    "Environment",
    "HistoryEntry",
    "HistoryList",
    "RollbackResult",
    "TERMINAL_STATES",
    "deployment_info",
    "from_epoch_ms",
]

Environment = Literal["production", "staging", "preview"]
TERMINAL_STATES = frozenset({"READY", "ERROR", "CANCELED", "BLOCKED", "DELETED"})
IDEMPOTENCY_META = "opsAgentIdempotencyKey"


class DeploymentInfo(BaseModel):
    id: str
    project: str | None = Field(None, description="Project name.")
    project_id: str | None = None
    environment: Environment
    state: str = Field(description="QUEUED, INITIALIZING, BUILDING, READY, ERROR, CANCELED, BLOCKED or DELETED.")
    deployment_url: str | None = Field(None, description="https:// URL of this deployment.")
    branch: str | None = None
    commit: str | None = None
    created_at: datetime | None = None
    ready_at: datetime | None = None
    aliases: list[str] = Field(default_factory=list)
    error: str | None = Field(None, description="Vercel's error code and message, for a failed build.")
    inspector_url: str | None = None
    idempotency_key: str | None = None


class DeployResult(DeploymentInfo):
    reused: bool = Field(False, description="True when this request was already carried out (same idempotency key).")
    duration_s: float | None = Field(None, description="Seconds from the request to a final state, when waited for.")
    build_log_tail: list[str] = Field(default_factory=list, description="Last build log lines, when waited for.")


class DeploymentList(BaseModel):
    deployments: list[DeploymentInfo]
    next_cursor: int | None = Field(None, description="Pass as `until` for the next page; null when done.")


class RollbackResult(BaseModel):
    project: str | None
    project_id: str
    undone_deployment_id: str = Field(description="The deployment that no longer serves production.")
    now_serving_id: str = Field(description="The deployment production serves now.")
    deployment_url: str | None = None
    note: str


class EnvVarInfo(BaseModel):
    """An environment variable, never with its value."""

    id: str
    key: str
    type: str | None = None
    targets: list[str] = Field(default_factory=list)
    custom_environment_ids: list[str] = Field(default_factory=list)
    updated_at: datetime | None = None


class EnvVarList(BaseModel):
    project: str
    variables: list[EnvVarInfo]


class EnvVarChange(BaseModel):
    project: str
    key: str
    environments: list[Environment]
    change: Literal["created", "updated", "deleted"]


class HistoryEntry(BaseModel):
    id: int
    action: Literal["deploy", "rollback", "promote", "cancel"]
    requested_by: str
    project: str
    environment: str
    branch: str | None = None
    deployment_id: str | None = None
    deployment_url: str | None = None
    outcome: str = Field(description="pending, ready, failed, canceled or done.")
    error: str | None = None
    requested_at: datetime
    finished_at: datetime | None = None
    duration_s: float | None = None
    idempotency_key: str | None = None


class HistoryList(BaseModel):
    entries: list[HistoryEntry]


def from_epoch_ms(ms: Any) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if isinstance(ms, (int, float)) and ms > 0 else None


def environment_of(body: dict[str, Any]) -> Environment:
    if body.get("target") == "production":
        return "production"
    if body.get("target") == "staging" or body.get("customEnvironment"):
        return "staging"
    return "preview"


def deployment_info(body: dict[str, Any], project: str | None = None) -> DeploymentInfo:
    """Our view of a Vercel deployment from get, create, cancel or a list item (which says `uid`)."""
    url = body.get("url")
    meta = body.get("meta") or {}
    git = body.get("gitSource") or {}
    error = None
    if body.get("errorCode") or body.get("errorMessage"):
        error = ": ".join(str(part) for part in (body.get("errorCode"), body.get("errorMessage")) if part)
    return DeploymentInfo(
        id=body.get("id") or body.get("uid") or "",
        project=project or body.get("name"),
        project_id=body.get("projectId"),
        environment=environment_of(body),
        state=body.get("readyState") or body.get("state") or body.get("status") or "UNKNOWN",
        deployment_url=f"https://{url}" if url and "://" not in url else url,
        branch=git.get("ref") or meta.get("githubCommitRef") or meta.get("branch"),
        commit=git.get("sha") or meta.get("githubCommitSha"),
        created_at=from_epoch_ms(body.get("createdAt") or body.get("created")),
        ready_at=from_epoch_ms(body.get("ready")),
        aliases=[alias for alias in body.get("alias") or [] if isinstance(alias, str)],
        error=error,
        inspector_url=body.get("inspectorUrl"),
        idempotency_key=meta.get(IDEMPOTENCY_META),
    )
