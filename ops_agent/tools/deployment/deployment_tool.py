"""DeploymentTool: the seed's deploy / get_deployment_status / rollback, and what an operator needs beside them.

Environments map to Vercel like this:
    production  ->  target "production"
    staging     ->  the custom environment `vercel.staging_environment` (default slug "staging")
    preview     ->  no target (a preview deployment)

`rollback(deployment_id)` means "undo this deployment": production goes back to the most recent READY
production deployment created before it (Vercel's instant rollback, no rebuild); `target_deployment_id`
picks another one. Without a deployment id, the project's current production deployment is undone.

Every deploy carries an idempotency key, stored in the deployment's `meta` and in the local history.
A retried or redelivered request with the same key finds the deployment made the first time; a create
whose answer was lost (5xx, timeout) is reconciled by looking the key up before trying again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ops_agent.config import VercelSettings
from ops_agent.errors import ToolFailed, ToolRetry, UpstreamError
from ops_agent.tools.deployment.history import DeploymentHistory
from ops_agent.tools.deployment.models import (
    IDEMPOTENCY_META,
    TERMINAL_STATES,
    DeploymentInfo,
    DeploymentList,
    DeployResult,
    Environment,
    EnvVarChange,
    EnvVarInfo,
    EnvVarList,
    RollbackResult,
    deployment_info,
    environment_of,
    from_epoch_ms,
)
from ops_agent.tools.deployment.vercel_client import VercelClient

__all__ = ["DeploymentTool"]

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
CREATE_ATTEMPTS = 4
VERCEL_TARGETS = {"production": "production", "preview": "preview", "staging": None}


class DeploymentTool:
    def __init__(self, client: VercelClient | None, history: DeploymentHistory, settings: VercelSettings) -> None:
        self._client = client
        self.history = history
        self.settings = settings

    @property
    def client(self) -> VercelClient:
        if self._client is None:
            raise ToolFailed(
                "Vercel is not configured: set VERCEL_TOKEN (and VERCEL_TEAM_ID for a team), or run the local "
                "emulator with `ops-agent sandbox` and point VERCEL_API_URL at it"
            )
        return self._client

    # -- deploy ------------------------------------------------------------------------------------------

    async def deploy(
        self,
        project: str,
        environment: Environment = "preview",
        branch: str | None = None,
        *,
        idempotency_key: str | None = None,
        wait: bool = True,
        timeout_s: float | None = None,
        requested_by: str = "api",
        progress: Progress | None = None,
    ) -> DeployResult:
        """Build `branch` of `project` (from its git link) into `environment`."""
        self._in_scope(project)
        key = idempotency_key or f"deploy-{uuid.uuid4().hex}"
        started = time.monotonic()
        details = await self.client.get_project(project)
        link = details.get("link") or {}
        ref = branch or (link.get("productionBranch") if environment == "production" else None) or "main"
        entry, created = await self.history.start(
            action="deploy", requested_by=requested_by, project=details.get("name") or project,
            environment=environment, branch=ref, idempotency_key=key,
        )
        if not created and entry.deployment_id:  # the same request again: report, never deploy twice
            found = await self.client.get_deployment(entry.deployment_id)
            return DeployResult(**deployment_info(found, entry.project).model_dump(), reused=True)
        body = {
            "name": details.get("name") or project,
            "project": details.get("id") or project,
            "gitSource": _git_source(link, ref, project),
            "meta": {IDEMPOTENCY_META: key, "opsAgentRequestedBy": requested_by},
            **self._target(environment),
        }
        async with self._failure_recorded(entry.id):
            # A caller's key may have been used on another machine, or by a run that died mid-create here.
            created_body, reused = await self._create_once(
                body, details.get("id") or project, key, look_first=idempotency_key is not None
            )
        info = deployment_info(created_body, entry.project)
        await self.history.update(entry.id, deployment_id=info.id, deployment_url=info.deployment_url)
        if progress is not None:
            await progress(0, None, f"{info.id} {info.state}")
        result = DeployResult(**info.model_dump(), reused=reused)
        if wait:
            result = await self._wait(result, timeout_s or self.settings.deploy_timeout_s, progress)
            result.duration_s = round(time.monotonic() - started, 3)
        await self._finish(entry.id, result, started)
        if result.state in ("ERROR", "CANCELED", "BLOCKED"):
            raise ToolFailed(
                f"deployment {result.id} of {result.project} to {environment} ended {result.state}"
                + (f": {result.error}" if result.error else "")
            )
        return result

    async def _create_once(
        self, body: dict[str, Any], project_id: str, key: str, *, look_first: bool
    ) -> tuple[dict[str, Any], bool]:
        """Create the deployment exactly once, even when answers get lost on the way back."""
        last: UpstreamError | None = None
        for attempt in range(CREATE_ATTEMPTS):
            if attempt or look_first:
                if (found := await self._find_by_key(project_id, key)) is not None:
                    return found, True
            if attempt:
                await asyncio.sleep(min(8.0, 0.25 * 2**attempt))
            try:
                return await self.client.create_deployment(body), False
            except UpstreamError as exc:
                if not exc.retryable:
                    raise
                last = exc
        if (found := await self._find_by_key(project_id, key)) is not None:
            return found, True
        assert last is not None
        raise last

    async def _find_by_key(self, project_id: str, key: str) -> dict[str, Any] | None:
        async for item in self.client.iter_deployments(projectId=project_id, limit=20, max_items=100):
            if (item.get("meta") or {}).get(IDEMPOTENCY_META) == key:
                return item
        return None

    def _target(self, environment: Environment) -> dict[str, Any]:
        if environment == "staging":
            return {"customEnvironmentSlugOrId": self.settings.staging_environment}
        return {"target": "production"} if environment == "production" else {}

    # -- status, waiting, listing --------------------------------------------------------------------------

    async def get_deployment_status(self, deployment_id: str) -> DeploymentInfo:
        body = await self.client.get_deployment(deployment_id)
        info = deployment_info(body)
        if not info.aliases and info.state == "READY":
            info.aliases = [a.get("alias") for a in await self.client.list_aliases(info.id) if a.get("alias")]
        return info

    async def wait_for_deployment(
        self, deployment_id: str, *, timeout_s: float | None = None, progress: Progress | None = None
    ) -> DeployResult:
        started = time.monotonic()
        info = await self.get_deployment_status(deployment_id)
        result = await self._wait(DeployResult(**info.model_dump()), timeout_s or self.settings.deploy_timeout_s, progress)
        result.duration_s = round(time.monotonic() - started, 3)
        return result

    async def _wait(self, result: DeployResult, timeout_s: float, progress: Progress | None) -> DeployResult:
        """Poll until a final state or the timeout, streaming build log lines and state changes as progress."""
        deadline = time.monotonic() + timeout_s
        state, lines, since_ms, step = result.state, [], None, 0
        while True:
            events = await self.client.get_deployment_events(result.id, since_ms=since_ms)
            for event in events:
                since_ms = max(since_ms or 0, int(event.get("created") or 0) + 1)
                payload = event.get("payload") or {}
                # A state the polls below would miss (a short BUILDING) still shows in the build's own events.
                reported = (payload.get("info") or {}).get("readyState") if event.get("type") == "deployment-state" else None
                if reported and reported != state:
                    state = reported
                    step += 1
                    if progress is not None:
                        await progress(step, None, f"{result.id} {state}")
                    continue
                text = (payload.get("text") or event.get("text") or "").rstrip()
                if text:
                    lines.append(text)
                    step += 1
                    if progress is not None:
                        await progress(step, None, text[:200])
            body = await self.client.get_deployment(result.id)
            current = deployment_info(body, result.project)
            if current.state != state:
                state = current.state
                step += 1
                if progress is not None:
                    await progress(step, None, f"{result.id} {state}")
            if state in TERMINAL_STATES or time.monotonic() >= deadline:
                merged = result.model_dump() | current.model_dump(exclude={"project"}) | {"build_log_tail": lines[-20:]}
                return DeployResult(**merged)
            await asyncio.sleep(min(self.settings.poll_interval_s, max(0.0, deadline - time.monotonic())))

    async def list_deployments(
        self,
        project: str | None = None,
        environment: Environment | None = None,
        state: str | None = None,
        limit: int = 20,
        until: int | None = None,
    ) -> DeploymentList:
        if project:
            self._in_scope(project)
        project_id = (await self.client.get_project(project)).get("id") if project else None
        target = VERCEL_TARGETS[environment] if environment else None
        page = await self.client.list_deployments(
            projectId=project_id, target=target, state=state, limit=limit, until=until
        )
        items = [deployment_info(item, project) for item in page.get("deployments", [])]
        if environment:
            items = [item for item in items if item.environment == environment]
        return DeploymentList(deployments=items, next_cursor=(page.get("pagination") or {}).get("next"))

    # -- rollback and promote ---------------------------------------------------------------------------

    async def rollback(
        self,
        deployment_id: str | None = None,
        target_deployment_id: str | None = None,
        *,
        project: str | None = None,
        requested_by: str = "api",
    ) -> RollbackResult:
        if deployment_id is None:
            if project is None:
                raise ToolRetry("rollback: give the deployment to undo, or the project whose production to roll back")
            current = ((await self.client.get_project(project)).get("targets") or {}).get("production") or {}
            if not current.get("id"):
                raise ToolFailed(f"project {project} has no production deployment to roll back")
            deployment_id = current["id"]
        undone = await self.client.get_deployment(deployment_id)
        self._check_project(undone, project)
        if environment_of(undone) != "production":
            raise ToolRetry(
                f"rollback: {deployment_id} is a {environment_of(undone)} deployment; instant rollback applies to "
                "production, so deploy the earlier commit to that environment instead"
            )
        project_id = undone.get("projectId") or ""
        if target_deployment_id:
            target = await self.client.get_deployment(target_deployment_id)
            if target.get("projectId") != project_id or environment_of(target) != "production":
                raise ToolRetry(f"rollback: {target_deployment_id} is not a production deployment of the same project")
            if target.get("readyState") != "READY":
                raise ToolRetry(f"rollback: {target_deployment_id} is {target.get('readyState')}, not READY")
        else:
            target = await self._previous_ready(project_id, undone)
        target_id = target.get("id") or target.get("uid")
        name = undone.get("name")
        entry, _ = await self.history.start(
            action="rollback", requested_by=requested_by, project=name or project_id, environment="production",
            deployment_id=target_id,
        )
        async with self._failure_recorded(entry.id):
            await self.client.rollback(project_id, target_id, description=f"ops-agent: undo {deployment_id}")
        info = deployment_info(target, name)
        await self.history.update(entry.id, outcome="done", deployment_url=info.deployment_url, finished_at=_now())
        return RollbackResult(
            project=name,
            project_id=project_id,
            undone_deployment_id=deployment_id,
            now_serving_id=target_id,
            deployment_url=info.deployment_url,
            note=(
                f"production of {name} now serves {target_id} (created {info.created_at:%Y-%m-%d %H:%M} UTC) "
                "without a rebuild; Vercel stops assigning new production deployments automatically until one "
                "is promoted"
                if info.created_at
                else f"production of {name} now serves {target_id}"
            ),
        )

    async def _previous_ready(self, project_id: str, undone: dict[str, Any]) -> dict[str, Any]:
        """The most recent READY production deployment created before `undone`."""
        created = undone.get("createdAt") or 0
        async for item in self.client.iter_deployments(
            projectId=project_id, target="production", state="READY", until=created, limit=20, max_items=200
        ):
            item_id = item.get("uid") or item.get("id")
            if item_id != undone.get("id") and (item.get("createdAt") or item.get("created") or 0) < created:
                return item
        raise ToolFailed(
            f"no READY production deployment of {undone.get('name')} older than {undone.get('id')} to roll back to"
        )

    async def promote(self, deployment_id: str, *, project: str | None = None, requested_by: str = "api") -> DeploymentInfo:
        body = await self.client.get_deployment(deployment_id)
        self._check_project(body, project)
        if environment_of(body) != "production" or body.get("readyState") != "READY":
            raise ToolRetry(
                f"promote: {deployment_id} is a {body.get('readyState')} {environment_of(body)} deployment; "
                "only READY production deployments can be promoted"
            )
        entry, _ = await self.history.start(
            action="promote", requested_by=requested_by, project=body.get("name") or "", environment="production",
            deployment_id=deployment_id,
        )
        async with self._failure_recorded(entry.id):
            await self.client.promote(body.get("projectId") or "", deployment_id)
        info = deployment_info(body)
        await self.history.update(entry.id, outcome="done", deployment_url=info.deployment_url, finished_at=_now())
        return info

    async def cancel_deployment(
        self, deployment_id: str, *, project: str | None = None, requested_by: str = "api"
    ) -> DeploymentInfo:
        body = await self.client.get_deployment(deployment_id)
        self._check_project(body, project)
        entry, _ = await self.history.start(
            action="cancel", requested_by=requested_by, project=body.get("name") or "",
            environment=environment_of(body), deployment_id=deployment_id,
        )
        async with self._failure_recorded(entry.id):
            canceled = await self.client.cancel_deployment(deployment_id)
        await self.history.update(entry.id, outcome="canceled", finished_at=_now())
        return deployment_info(canceled)

    @contextlib.asynccontextmanager
    async def _failure_recorded(self, entry_id: int) -> AsyncIterator[None]:
        """An upstream failure inside ends the history entry as failed, with the reason, and goes on up."""
        try:
            yield
        except UpstreamError as exc:
            await self.history.update(entry_id, outcome="failed", error=exc.public_message, finished_at=_now())
            raise

    def _check_project(self, body: dict[str, Any], project: str | None) -> None:
        """When the caller named a project (it may decide the governance action), the deployment must be in it;
        and a deployment is acted on only in this agent's projects."""
        if project is not None and project not in (body.get("name"), body.get("projectId")):
            raise ToolRetry(f"deployment {body.get('id')} does not belong to project {project!r}")
        shown = f"{body.get('name')!r} (of deployment {body.get('id')})"
        self._in_scope(body.get("name"), body.get("projectId"), shown=shown)

    def _in_scope(self, *names: str | None, shown: str | None = None) -> None:
        """Act only on this agent's projects: vercel.projects, sandbox_projects and default_project. With no
        list configured, on whatever the token reaches."""
        s = self.settings
        scope = {*s.projects, *s.sandbox_projects, *([s.default_project] if s.default_project else [])}
        if scope and not scope & set(names):
            raise ToolRetry(f"project: {shown or repr(names[0])} is not one of this agent's projects "
                            f"({', '.join(sorted(scope))}); add it to vercel.projects")

    # -- environment variables ------------------------------------------------------------------------------

    async def list_env_vars(self, project: str) -> EnvVarList:
        self._in_scope(project)
        return EnvVarList(project=project, variables=[_env_info(env) for env in await self.client.list_env(project)])

    async def set_env_var(
        self, project: str, key: str, value: str, environments: list[Environment], *, sensitive: bool = True
    ) -> EnvVarChange:
        existing = {env.key for env in (await self.list_env_vars(project)).variables}
        variable: dict[str, Any] = {"key": key, "value": value, "type": "sensitive" if sensitive else "encrypted"}
        targets = [VERCEL_TARGETS[e] for e in environments if VERCEL_TARGETS[e]]
        if targets:
            variable["target"] = targets
        if "staging" in environments:
            staging = await self.client.get_custom_environment(project, self.settings.staging_environment)
            variable["customEnvironmentIds"] = [staging.get("id")]
        await self.client.create_env(project, variable, upsert=True)
        return EnvVarChange(
            project=project, key=key, environments=environments, change="updated" if key in existing else "created"
        )

    async def delete_env_var(self, project: str, key: str, environments: list[Environment]) -> EnvVarChange:
        variables = [env for env in (await self.list_env_vars(project)).variables if env.key == key]
        if not variables:
            raise ToolRetry(f"project {project} has no environment variable {key!r}")
        wanted = {VERCEL_TARGETS[e] for e in environments if VERCEL_TARGETS[e]}
        for variable in variables:
            if not wanted or wanted & set(variable.targets) or "staging" in environments:
                await self.client.delete_env(project, variable.id)
        return EnvVarChange(project=project, key=key, environments=environments, change="deleted")

    async def _finish(self, entry_id: int, result: DeployResult, started: float) -> None:
        outcome = {"READY": "ready", "ERROR": "failed", "CANCELED": "canceled", "BLOCKED": "failed"}.get(
            result.state, "pending"
        )
        await self.history.update(
            entry_id,
            outcome=outcome,
            error=result.error,
            finished_at=_now() if outcome != "pending" else None,
            duration_s=round(time.monotonic() - started, 3) if outcome != "pending" else None,
        )


def _git_source(link: dict[str, Any], ref: str, project: str) -> dict[str, Any]:
    kind = link.get("type")
    if kind in ("github", "github-limited") and (link.get("repoId") or link.get("repo")):
        source = {"type": kind, "ref": ref}
        return source | ({"repoId": link["repoId"]} if link.get("repoId") else {"org": link.get("org"), "repo": link.get("repo")})
    if kind == "gitlab" and link.get("projectId"):
        return {"type": "gitlab", "ref": ref, "projectId": link["projectId"]}
    if kind == "bitbucket" and link.get("repoUuid"):
        return {"type": "bitbucket", "ref": ref, "repoUuid": link["repoUuid"]}
    raise ToolRetry(f"project {project} has no git repository linked in Vercel; link one to deploy by branch")


def _env_info(env: dict[str, Any]) -> EnvVarInfo:
    target = env.get("target") or []
    return EnvVarInfo(
        id=env.get("id") or "",
        key=env.get("key") or "",
        type=env.get("type"),
        targets=[target] if isinstance(target, str) else list(target),
        custom_environment_ids=list(env.get("customEnvironmentIds") or []),
        updated_at=from_epoch_ms(env.get("updatedAt")),
    )


def _now() -> datetime:
    return datetime.now(UTC)
