"""Deployment: Vercel deploys, status, build progress, rollback, promotion, env vars and history, declared
for the registry with their governance actions and the phrasings the offline planner understands."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from mcp.types import ToolAnnotations
from pydantic import Field, SecretStr, field_validator

from ops_agent.config import VercelSettings
from ops_agent.registry import Intent, ToolContext, ToolInput, ToolSpec, mentioned
from ops_agent.tools.deployment.deployment_tool import DeploymentTool
from ops_agent.tools.deployment.history import DeploymentHistory, SqliteDeploymentHistory
from ops_agent.tools.deployment.models import (
    DeploymentInfo,
    DeploymentList,
    DeployResult,
    Environment,
    EnvVarChange,
    EnvVarList,
    HistoryList,
    RollbackResult,
)
from ops_agent.tools.deployment.vercel_client import VercelClient, VercelError

__all__ = [
    "DeploymentHistory",
    "DeploymentTool",
    "SqliteDeploymentHistory",
    "VercelClient",
    "VercelError",
    "deployment_specs",
]

PROJECT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]*$"
DEPLOYMENT_ID = r"^(dpl_[A-Za-z0-9]+|[a-z0-9][a-z0-9.-]*\.[a-z]{2,})$"
ENV_WRITE_ACTIONS = ("env:write:sandbox", "env:write:preview", "env:write:staging", "env:write:production")
States = Literal["QUEUED", "INITIALIZING", "BUILDING", "READY", "ERROR", "CANCELED", "BLOCKED", "DELETED"]


def _deployment_id(description: str, **default: Any) -> Any:
    return Field(**default, max_length=200, pattern=DEPLOYMENT_ID, description=description)


def _project_field(description: str = "Vercel project name or id.", **default: Any) -> Any:
    return Field(**default, min_length=1, max_length=100, pattern=PROJECT_PATTERN, description=description)


class DeployInput(ToolInput):
    project: str = _project_field()
    environment: Environment = Field("preview", description="production, staging or preview.")
    branch: str | None = Field(
        None, max_length=255, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$",
        description="Git branch to build; default: the production branch for production, else main.",
    )
    low_risk: bool = Field(False, description="A low-risk production change (docs, UI): needs prod_low_risk, not prod_full_access.")
    idempotency_key: str | None = Field(
        None, min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Repeat a request with the same key and it is carried out once.",
    )
    wait: bool = Field(True, description="Wait for the build to finish, streaming progress.")
    timeout_s: float | None = Field(None, gt=0, le=3600, description="How long to wait for a final state.")

    @field_validator("branch")
    @classmethod
    def _no_parent_steps(cls, branch: str | None) -> str | None:
        if branch is not None and ".." in branch:
            raise ValueError("a git branch name cannot contain '..'")
        return branch


class DeploymentIdInput(ToolInput):
    deployment_id: str = _deployment_id("Deployment id (dpl_...) or its URL hostname.")


class WaitInput(DeploymentIdInput):
    timeout_s: float = Field(600, gt=0, le=3600, description="How long to wait for a final state.")


class ListDeploymentsInput(ToolInput):
    project: str | None = _project_field("Only this project.", default=None)
    environment: Environment | None = Field(None, description="Only this environment.")
    state: States | None = Field(None, description="Only deployments in this state.")
    limit: int = Field(20, ge=1, le=100)
    until: int | None = Field(None, ge=0, description="Cursor from next_cursor, for the next page.")


class RollbackInput(ToolInput):
    deployment_id: str | None = _deployment_id(
        "The production deployment to undo; default: what production serves now.", default=None
    )
    target_deployment_id: str | None = _deployment_id(
        "Roll back to this deployment instead of the previous READY one.", default=None
    )
    project: str | None = _project_field(
        "The project (required without deployment_id; checked against the deployment otherwise).", default=None
    )


class ScopedDeploymentInput(DeploymentIdInput):
    project: str | None = _project_field(
        "The deployment's project (checked), which sandbox projects need for their own permissions.", default=None
    )


class ProjectInput(ToolInput):
    project: str = _project_field()


class SetEnvVarInput(ToolInput):
    project: str = _project_field()
    key: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Variable name.")
    value: SecretStr = Field(description="The value; never echoed in results, logs or the audit trail.")
    environments: list[Environment] = Field(min_length=1, description="Where it applies.")
    sensitive: bool = Field(True, description="Store as a sensitive variable (unreadable after creation).")


class DeleteEnvVarInput(ToolInput):
    project: str = _project_field()
    key: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    environments: list[Environment] = Field(
        default_factory=lambda: ["production", "staging", "preview"], min_length=1, description="Where to remove it."
    )


class HistoryInput(ToolInput):
    project: str | None = _project_field("Only this project.", default=None)
    environment: Environment | None = None
    action: Literal["deploy", "rollback", "promote", "cancel"] | None = None
    outcome: Literal["pending", "ready", "failed", "canceled", "done"] | None = None
    since: datetime | None = Field(None, description="Only entries requested at or after this time (ISO 8601).")
    limit: int = Field(20, ge=1, le=500)

    @field_validator("since")
    @classmethod
    def _representable(cls, since: datetime | None) -> datetime | None:
        try:
            since is None or since.timestamp()  # year 1 with no zone: "year 0 is out of range"
        except (ValueError, OverflowError, OSError):
            raise ValueError("is out of range; give a time after 1970 such as 2026-01-31T12:00:00Z") from None
        return since


def _highest(environments: list[Environment]) -> str:
    return next(e for e in ("production", "staging", "preview") if e in environments)


def deployment_specs(tool: DeploymentTool, settings: VercelSettings) -> list[ToolSpec]:
    sandbox = set(settings.sandbox_projects)

    def deploy_action(args: DeployInput) -> str:
        if args.project in sandbox:
            return "deploy:sandbox"
        if args.environment == "production":
            return "deploy:production:low_risk" if args.low_risk else "deploy:production"
        return f"deploy:{args.environment}"

    def rollback_action(args: RollbackInput) -> str:
        return "rollback:sandbox" if args.project in sandbox else "rollback:production"

    def promote_action(args: ScopedDeploymentInput) -> str:
        return "deploy:sandbox" if args.project in sandbox else "deploy:production"

    def cancel_action(args: ScopedDeploymentInput) -> str:
        return "deploy:sandbox" if args.project in sandbox else "deploy:cancel"

    def env_action(args: SetEnvVarInput | DeleteEnvVarInput) -> str:
        return "env:write:sandbox" if args.project in sandbox else f"env:write:{_highest(args.environments)}"

    async def deploy(args: DeployInput, ctx: ToolContext) -> DeployResult:
        return await tool.deploy(
            args.project, args.environment, args.branch, idempotency_key=args.idempotency_key, wait=args.wait,
            timeout_s=args.timeout_s, requested_by=ctx.caller.agent, progress=ctx.progress_callback,
        )

    async def get_deployment_status(args: DeploymentIdInput, ctx: ToolContext) -> DeploymentInfo:
        return await tool.get_deployment_status(args.deployment_id)

    async def wait_for_deployment(args: WaitInput, ctx: ToolContext) -> DeployResult:
        return await tool.wait_for_deployment(args.deployment_id, timeout_s=args.timeout_s, progress=ctx.progress_callback)

    async def list_deployments(args: ListDeploymentsInput, ctx: ToolContext) -> DeploymentList:
        return await tool.list_deployments(args.project, args.environment, args.state, args.limit, args.until)

    async def rollback(args: RollbackInput, ctx: ToolContext) -> RollbackResult:
        return await tool.rollback(
            args.deployment_id, args.target_deployment_id, project=args.project, requested_by=ctx.caller.agent
        )

    async def promote(args: ScopedDeploymentInput, ctx: ToolContext) -> DeploymentInfo:
        return await tool.promote(args.deployment_id, project=args.project, requested_by=ctx.caller.agent)

    async def cancel_deployment(args: ScopedDeploymentInput, ctx: ToolContext) -> DeploymentInfo:
        return await tool.cancel_deployment(args.deployment_id, project=args.project, requested_by=ctx.caller.agent)

    async def list_env_vars(args: ProjectInput, ctx: ToolContext) -> EnvVarList:
        return await tool.list_env_vars(args.project)

    async def set_env_var(args: SetEnvVarInput, ctx: ToolContext) -> EnvVarChange:
        return await tool.set_env_var(
            args.project, args.key, args.value.get_secret_value(), args.environments, sensitive=args.sensitive
        )

    async def delete_env_var(args: DeleteEnvVarInput, ctx: ToolContext) -> EnvVarChange:
        return await tool.delete_env_var(args.project, args.key, args.environments)

    async def list_deployment_history(args: HistoryInput, ctx: ToolContext) -> HistoryList:
        entries = await tool.history.list(
            project=args.project, environment=args.environment, outcome=args.outcome, action=args.action,
            since=args.since, limit=args.limit,
        )
        return HistoryList(entries=entries)

    read = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True)
    read_local = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
    changes_production = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)
    wait_s = settings.deploy_timeout_s + 120
    return [
        ToolSpec(
            name="deploy",
            system_ids=DEPLOYMENT_IDS,
            title="Deploy to Vercel",
            description=(
                "Build a git branch of a Vercel project into production, staging or preview, waiting for the "
                "build with progress. Production needs prod_full_access (prod_low_risk for low_risk changes). "
                "Carried out once per idempotency_key."
            ),
            input_model=DeployInput, output_model=DeployResult, handler=deploy,
            actions=("deploy:sandbox", "deploy:preview", "deploy:staging", "deploy:production:low_risk", "deploy:production"),
            action=deploy_action,
            annotations=changes_production,
            timeout_s=wait_s,
            idempotency_field="idempotency_key",
            summarize=lambda r: f"{r.project} {r.environment} {r.id} {r.state}" + (f" at {r.deployment_url}" if r.deployment_url else ""),
            intents=(Intent(patterns=(r"\b(deploy|ship|release|roll\s*out)\b",), arguments=_deploy_arguments),),
        ),
        ToolSpec(
            name="get_deployment_status",
            system_ids=DEPLOYMENT_IDS,
            title="Deployment status",
            description="State, URL, branch, commit, aliases and error of one deployment.",
            input_model=DeploymentIdInput, output_model=DeploymentInfo, handler=get_deployment_status,
            actions=("read",), annotations=read, timeout_s=60,
            summarize=lambda r: f"{r.id} {r.state} ({r.environment})" + (f": {r.error}" if r.error else ""),
            intents=(Intent(patterns=(r"\b(status|state|progress)\b[^,;]*\bdpl_\w+", r"\bdpl_\w+"), arguments=_status_arguments),),
        ),
        ToolSpec(
            name="wait_for_deployment",
            system_ids=DEPLOYMENT_IDS,
            title="Wait for a deployment",
            description="Follow a build until it is READY, failed or canceled (or the timeout), reporting its log lines as progress.",
            input_model=WaitInput, output_model=DeployResult, handler=wait_for_deployment,
            actions=("read",), annotations=read, timeout_s=3700,
            summarize=lambda r: f"{r.id} {r.state} after {r.duration_s} s",
        ),
        ToolSpec(
            name="list_deployments",
            system_ids=DEPLOYMENT_IDS,
            title="List deployments",
            description="Deployments newest first, filtered by project, environment and state; page with next_cursor.",
            input_model=ListDeploymentsInput, output_model=DeploymentList, handler=list_deployments,
            actions=("read",), annotations=read, timeout_s=60,
            summarize=lambda r: f"{len(r.deployments)} deployments" + "".join(f"; {d.id} {d.environment} {d.state}" for d in r.deployments[:5]),
            intents=(Intent(patterns=(r"\b(list|show|recent|latest|last)\b[^,;]*\bdeployments\b",), arguments=_project_filter),),
        ),
        ToolSpec(
            name="rollback",
            system_ids=DEPLOYMENT_IDS,
            title="Roll back production",
            description=(
                "Undo a production deployment: production goes back to the most recent READY production "
                "deployment created before it (instant, no rebuild), or to target_deployment_id. Without "
                "deployment_id, undoes what the project's production serves now. Needs prod_low_risk."
            ),
            input_model=RollbackInput, output_model=RollbackResult, handler=rollback,
            actions=("rollback:sandbox", "rollback:production"), action=rollback_action,
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True),
            timeout_s=120,
            summarize=lambda r: r.note,
            intents=(Intent(patterns=(r"\b(roll\s*back|rollback|revert|undo)\b[^,;]*",), arguments=_rollback_arguments),),
        ),
        ToolSpec(
            name="promote",
            system_ids=DEPLOYMENT_IDS,
            title="Promote to production",
            description="Point production at a READY production deployment (no rebuild); also turns automatic production assignment back on after a rollback.",
            input_model=ScopedDeploymentInput, output_model=DeploymentInfo, handler=promote,
            actions=("deploy:sandbox", "deploy:production"), action=promote_action,
            annotations=changes_production,
            timeout_s=120,
            summarize=lambda r: f"production now serves {r.id}",
        ),
        ToolSpec(
            name="cancel_deployment",
            system_ids=DEPLOYMENT_IDS,
            title="Cancel a build",
            description="Cancel a deployment that is still queued or building.",
            input_model=ScopedDeploymentInput, output_model=DeploymentInfo, handler=cancel_deployment,
            actions=("deploy:sandbox", "deploy:cancel"), action=cancel_action,
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True),
            timeout_s=60,
            summarize=lambda r: f"{r.id} {r.state}",
            intents=(Intent(patterns=(r"\b(cancel|abort|stop)\b[^,;]*\b(build|deploy(ment)?)\b[^,;]*",), arguments=_status_arguments),),
        ),
        ToolSpec(
            name="list_env_vars",
            system_ids=("id", "key"),
            title="List environment variables",
            description="A project's environment variables: names, types and where they apply. Values are never shown.",
            input_model=ProjectInput, output_model=EnvVarList, handler=list_env_vars,
            actions=("read",), annotations=read, timeout_s=60,
            summarize=lambda r: f"{len(r.variables)} variables: " + ", ".join(v.key for v in r.variables[:20]),
            intents=(Intent(patterns=(r"\b(env|environment)\s+(vars?|variables)\b",), arguments=_project_required),),
        ),
        ToolSpec(
            name="set_env_var",
            title="Set an environment variable",
            description="Create or overwrite a project environment variable for some environments. The value is never echoed.",
            input_model=SetEnvVarInput, output_model=EnvVarChange, handler=set_env_var,
            actions=ENV_WRITE_ACTIONS, action=env_action, annotations=changes_production, timeout_s=60,
            summarize=lambda r: f"{r.key} {r.change} in {', '.join(r.environments)}",
        ),
        ToolSpec(
            name="delete_env_var",
            title="Delete an environment variable",
            description="Remove a project environment variable from some or all environments.",
            input_model=DeleteEnvVarInput, output_model=EnvVarChange, handler=delete_env_var,
            actions=ENV_WRITE_ACTIONS, action=env_action, annotations=changes_production, timeout_s=60,
            summarize=lambda r: f"{r.key} deleted from {', '.join(r.environments)}",
        ),
        ToolSpec(
            name="list_deployment_history",
            system_ids=DEPLOYMENT_IDS,
            title="Deployment history",
            description="What ops-agent deployed, rolled back, promoted or canceled: who asked, when, where, outcome, duration, URL.",
            input_model=HistoryInput, output_model=HistoryList, handler=list_deployment_history,
            actions=("read",), annotations=read_local, timeout_s=30,
            summarize=lambda r: f"{len(r.entries)} entries" + "".join(f"; {e.action} {e.project} {e.environment} {e.outcome}" for e in r.entries[:5]),
            intents=(Intent(patterns=(r"\bdeploy(ment)?s?\s+history\b", r"\bwho\s+deployed\b", r"\bwhat\s+(was|got)\s+deployed\b"), arguments=_project_filter),),
        ),
    ]


# Output keys whose values Vercel or our history made: a later step of a task may act on them as they are
# (ops_agent.ooda.provenance). Free text beside them (a commit message, an error) is not trusted.
DEPLOYMENT_IDS = ("id", "project_id", "deployment_id", "undone_deployment_id", "now_serving_id")


# -- how the offline planner reads deployment requests -------------------------------------------------

_DEPLOYMENT = re.compile(r"\bdpl_[A-Za-z0-9]+\b")
_BRANCH = re.compile(r"\b(?:from\s+(?:the\s+)?(?:branch\s+)?|branch\s+)([A-Za-z0-9_][A-Za-z0-9_./-]*)", re.I)


def _named_project(clause: str, facts: Mapping[str, Any]) -> str | None:
    return next(iter(mentioned(clause, facts.get("projects", ()))), None)


def _project(clause: str, facts: Mapping[str, Any]) -> str | None:
    """The project a clause means: named, else the default, else the only one known."""
    known: list[str] = list(facts.get("projects", ()))
    return _named_project(clause, facts) or facts.get("default_project") or (known[0] if len(known) == 1 else None)


def _no_project(facts: Mapping[str, Any]) -> str:
    known = ", ".join(facts.get("projects", ())) or "none are configured (vercel.projects)"
    return f"which project? name one (known projects: {known}) or set vercel.default_project"


def _environment(clause: str) -> str:
    if re.search(r"\b(prod|production|live)\b", clause, re.I):
        return "production"
    if re.search(r"\bstag(e|ing)\b", clause, re.I):
        return "staging"
    return "preview"


def _deploy_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    project = _project(clause, facts)
    if project is None:
        return _no_project(facts)
    arguments: dict[str, Any] = {"project": project, "environment": _environment(clause)}
    if (branch := _BRANCH.search(clause)) is not None:
        arguments["branch"] = branch.group(1)
    return [arguments]


def _rollback_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    ids = _DEPLOYMENT.findall(clause)
    if ids:
        arguments: dict[str, Any] = {"deployment_id": ids[0]}
        if len(ids) > 1:
            arguments["target_deployment_id"] = ids[1]
        if named := _named_project(clause, facts):
            arguments["project"] = named
        return [arguments]
    project = _project(clause, facts)
    return [{"project": project}] if project else _no_project(facts)


def _status_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    ids = _DEPLOYMENT.findall(clause)
    return [{"deployment_id": i} for i in ids] or "name the deployment (its dpl_... id)"


def _project_filter(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    named = _named_project(clause, facts)
    return [{"project": named}] if named else [{}]


def _project_required(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    project = _project(clause, facts)
    return [{"project": project}] if project else _no_project(facts)
