"""The emulated Vercel account: the in-memory records and the rules that move them.

State is lazy. A deployment's readyState follows from its timestamps: QUEUED, then BUILDING after 10% of
the build time, then READY or ERROR. `_advance()` applies what finished builds cause (production
assignment, aliases) in the order the builds finished. Every public method advances first under one lock,
so what a client reads always agrees with the clock, and no background task is needed.

Every public method is one API operation. It takes the caller's team and validated input, and returns the
JSON body (shapes in `wire.py`) or raises `ApiError`. Configuration is in `config.py`, HTTP in `app.py`.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import string
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.vercel import wire
from sandbox.vercel.config import EmulatorConfig, GitLinkConfig
from sandbox.vercel.wire import ApiError, CreateDeploymentIn, EnvVarIn, EnvVarPatch, hostname

Clock = Callable[[], float]
QUEUED_FRACTION = 0.1  # the share of the build time a deployment spends QUEUED
TERMINAL_STATES = frozenset({"READY", "ERROR", "CANCELED"})
LIST_STATES = frozenset({"BUILDING", "ERROR", "INITIALIZING", "QUEUED", "READY", "CANCELED", "DELETED", "BLOCKED"})
ID_ALPHABET = string.ascii_letters + string.digits


# -- records ---------------------------------------------------------------------------------------------


@dataclass
class CustomEnvironment:
    id: str
    slug: str
    type: str
    description: str
    branch_matcher: dict[str, str] | None
    created_ms: int


@dataclass
class EnvVar:
    id: str
    key: str
    value: str
    type: str
    target: list[str]
    custom_environment_ids: list[str]
    git_branch: str | None
    comment: str | None
    created_ms: int
    updated_ms: int


@dataclass
class Project:
    id: str
    name: str
    team_id: str
    framework: str | None
    link: GitLinkConfig | None
    custom_environments: list[CustomEnvironment]
    created_ms: int
    envs: list[EnvVar] = field(default_factory=list)
    production_id: str | None = None
    auto_assign: bool = True  # off after a rollback, until a promote: new production builds stay STAGED
    last_rollback_target: dict[str, Any] | None = None
    last_alias_request: dict[str, Any] | None = None
    rollback_description: dict[str, Any] | None = None
    updated_ms: int = 0

    @property
    def production_hosts(self) -> list[str]:
        return [f"{self.name}.vercel.app"]

    def custom_environment(self, slug_or_id: str) -> CustomEnvironment | None:
        return next((e for e in self.custom_environments if slug_or_id in (e.id, e.slug)), None)


@dataclass
class Deployment:
    id: str
    url: str
    name: str
    project_id: str
    team_id: str
    target: str | None  # "production" | "staging" | None (preview)
    custom_environment_id: str | None
    git_source: dict[str, Any] | None
    meta: dict[str, str]
    source: str
    env_keys: list[str]
    created_ms: int
    building_ms: int
    end_ms: int
    fail_reason: str | None = None  # set: the build ends in ERROR
    canceled_ms: int | None = None
    promoted_ms: int | None = None  # first time it served production: rollback-eligible from then on
    settled: bool = False  # what its end causes (production, aliases) has been applied
    runtime_logs: list[dict[str, Any]] = field(default_factory=list)  # what its functions printed

    def ready_state(self, now_ms: int) -> str:
        if self.canceled_ms is not None:
            return "CANCELED"
        if now_ms >= self.end_ms:
            return "ERROR" if self.fails else "READY"
        return "BUILDING" if now_ms >= self.building_ms else "QUEUED"

    @property
    def fails(self) -> bool:
        return self.fail_reason is not None

    @property
    def ref(self) -> str | None:
        return (self.git_source or {}).get("ref")


@dataclass
class Alias:
    uid: str
    alias: str
    deployment_id: str
    project_id: str
    team_id: str
    created_ms: int
    updated_ms: int
    redirect: str | None = None


@dataclass
class Event:
    created: int
    type: str
    text: str
    ready_state: str | None = None


# -- the account -----------------------------------------------------------------------------------------


class State:
    """The whole emulated account. Thread-safe: the server thread and a test thread may both call in."""

    def __init__(self, config: EmulatorConfig, *, clock: Clock = time.time) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.RLock()
        self._rng = random.Random(config.seed)
        self.cipher_key = os.urandom(16)  # keys the opaque stand-in for encrypted env values
        self._last_created_ms = 0
        self.requests: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.projects: dict[str, Project] = {}
        self.deployments: dict[str, Deployment] = {}  # insertion order = creation order
        self.aliases: dict[str, Alias] = {}
        now = self._now_ms()
        for spec in config.projects:
            project_id = spec.id or _stable_id("prj_", spec.name)
            environments = [
                CustomEnvironment(
                    id=env.id or _stable_id("env_", project_id, env.slug),
                    slug=env.slug,
                    type=env.type,
                    description=env.description,
                    branch_matcher=env.branchMatcher.model_dump() if env.branchMatcher else None,
                    created_ms=now,
                )
                for env in spec.custom_environments
            ]
            link = spec.link
            if link is not None and link.repoId is None:
                link = link.model_copy(update={"repoId": int(_digest(link.org, link.repo)[:8], 16) % 10**9})
            self.projects[project_id] = Project(
                id=project_id,
                name=spec.name,
                team_id=spec.team_id or config.default_team,
                framework=spec.framework,
                link=link,
                custom_environments=environments,
                created_ms=now,
                updated_ms=now,
            )

    # -- bookkeeping used by the HTTP layer ----------------------------------------------------------------

    def team_of_token(self, token: str) -> str | None:
        return self.config.tokens.get(token)

    def count_request(self, operation: str) -> None:
        with self._lock:
            self.requests[operation] += 1

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def chance(self, probability: float) -> bool:
        """One draw from the seeded generator: True with `probability`."""
        if probability <= 0:
            return False
        with self._lock:
            return self._rng.random() < probability

    def choice(self, options: list[Any]) -> Any:
        with self._lock:
            return self._rng.choice(options)

    # -- deployments ---------------------------------------------------------------------------------------

    def create_deployment(self, team: str, body: CreateDeploymentIn) -> dict[str, Any]:
        with self._lock:
            self._advance()
            previous = self._deployment(team, body.deploymentId) if body.deploymentId else None
            if previous is not None:
                project = self.projects[previous.project_id]
            else:
                project = self._project(team, body.project or body.name)
            target, environment = self._target(project, body)
            git_source, source = self._source(project, body, previous)
            now = self._now_ms()
            created = now + 1 if now == self._last_created_ms else now  # unique: `until` pages stay exact
            self._last_created_ms = created
            build_ms = int(self.config.build_time_s * 1000)
            ref = (git_source or {}).get("ref")
            fail_reason = None
            if ref is not None and ref in self.config.fail_branches:
                fail_reason = f"builds of branch {ref!r} always fail here (sandbox fail_branches)"
            elif self.chance(self.config.failed_build_rate):
                fail_reason = "this build was picked to fail (sandbox failed_build_rate)"
            meta = _git_meta(git_source) | dict(body.meta or {})
            deployment = Deployment(
                id="dpl_" + self._random_id(28),
                url=hostname(project.name, team, self._random_id(9, string.ascii_lowercase + string.digits)),
                name=project.name,
                project_id=project.id,
                team_id=team,
                target=target,
                custom_environment_id=environment.id if environment else None,
                git_source=git_source,
                meta=meta,
                source=source,
                env_keys=self._env_keys(project, target, environment, ref),
                created_ms=created,
                building_ms=created + int(build_ms * QUEUED_FRACTION),
                end_ms=created + build_ms,
                fail_reason=fail_reason,
            )
            self.deployments[deployment.id] = deployment
            self._advance()  # a zero build time is READY at once
            return wire.deployment(self, deployment, self._now_ms())

    def get_deployment(self, team: str, id_or_url: str) -> dict[str, Any]:
        with self._lock:
            now = self._advance()
            return wire.deployment(self, self._deployment(team, id_or_url), now)

    def list_deployments(
        self,
        team: str,
        *,
        project: str | None = None,
        project_ids: list[str] | None = None,
        app: str | None = None,
        target: str | None = None,
        states: set[str] | None = None,
        rollback_candidate: bool | None = None,
        branch: str | None = None,
        sha: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:
        with self._lock:
            now = self._advance()
            wanted_projects = {self._project(team, p).id for p in ([project] if project else project_ids or [])}
            matches = []
            for d in reversed(self.deployments.values()):  # newest first
                if d.team_id != team or (wanted_projects and d.project_id not in wanted_projects):
                    continue
                if app is not None and d.name != app:
                    continue
                if target is not None and (d.target or "preview") != target:
                    continue
                if states is not None and d.ready_state(now) not in states:
                    continue
                if rollback_candidate is not None and self.is_rollback_candidate(d, now) != rollback_candidate:
                    continue
                if branch is not None and d.ref != branch:
                    continue
                if sha is not None and (d.git_source or {}).get("sha") != sha:
                    continue
                if (until is not None and d.created_ms >= until) or (since is not None and d.created_ms <= since):
                    continue
                matches.append(d)
            page = matches[:limit]
            return {
                "pagination": {
                    "count": len(page),
                    "next": page[-1].created_ms if len(matches) > len(page) else None,
                    "prev": page[0].created_ms if page else None,
                },
                "deployments": [wire.deployment_item(self, d, now) for d in page],
            }

    def cancel_deployment(self, team: str, deployment_id: str) -> dict[str, Any]:
        with self._lock:
            now = self._advance()
            deployment = self._deployment(team, deployment_id)
            current = deployment.ready_state(now)
            if current not in ("QUEUED", "BUILDING"):
                raise ApiError(
                    400,
                    "deployment_not_cancelable",
                    f"Deployment {deployment.id} is {current}; only QUEUED or BUILDING deployments can be canceled",
                )
            deployment.canceled_ms = now
            deployment.settled = True
            return wire.deployment(self, deployment, now)

    def deployment_events(
        self,
        team: str,
        id_or_url: str,
        *,
        since: int | None = None,
        until: int | None = None,
        backward: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            now = self._advance()
            deployment = self._deployment(team, id_or_url)
            events = [  # numbered before filtering: an event keeps its id and serial whatever the query
                (serial, e)
                for serial, e in enumerate(self._events(deployment, now))
                if (since is None or e.created >= since) and (until is None or e.created <= until)
            ]
            if backward:
                events.reverse()
            if limit is not None and limit >= 0:
                events = events[:limit]
            return [wire.event(deployment, e, serial) for serial, e in events]

    def follow_events(self, team: str, id_or_url: str, already_sent: int) -> tuple[list[dict[str, Any]], bool]:
        """Events after the first `already_sent`, and whether the build has finished (for `follow=1`)."""
        with self._lock:
            now = self._advance()
            deployment = self._deployment(team, id_or_url)
            events = self._events(deployment, now)
            fresh = [wire.event(deployment, e, already_sent + i) for i, e in enumerate(events[already_sent:])]
            return fresh, deployment.ready_state(now) in TERMINAL_STATES

    def runtime_logs(self, team: str, project_id: str, deployment_id: str) -> list[dict[str, Any]]:
        """getRuntimeLogs: what the deployment's functions logged, oldest first."""
        with self._lock:
            _, deployment = self._project_deployment(team, project_id, deployment_id)
            return list(deployment.runtime_logs)

    def emit_runtime_log(
        self,
        deployment_id: str,
        message: str,
        *,
        level: str = "info",
        path: str = "/",
        method: str = "GET",
        status: int = 200,
        at_ms: int | None = None,
    ) -> None:
        """What a running deployment would log for a request (for scenarios and tests)."""
        with self._lock:
            deployment = self.deployments[deployment_id]
            deployment.runtime_logs.append(
                wire.runtime_log(deployment, len(deployment.runtime_logs), message, level, path, method, status,
                                 self._now_ms() if at_ms is None else at_ms)
            )

    # -- production: promote and rollback ----------------------------------------------------------------------

    def promote(self, team: str, project_id: str, deployment_id: str) -> None:
        with self._lock:
            now = self._advance()
            project, deployment = self._project_deployment(team, project_id, deployment_id)
            if deployment.target != "production":
                raise ApiError(
                    400,
                    "invalid_promote_target",
                    f"Deployment {deployment.id} is not a production deployment; promoting a preview means "
                    "rebuilding it with target production (POST /v13/deployments with deploymentId)",
                )
            self._require_ready(deployment, now)
            if deployment.promoted_ms is not None:
                raise ApiError(
                    409,
                    "deployment_already_promoted",
                    f"Deployment {deployment.id} has served production before; roll back to it instead",
                )
            self._request_alias(project, deployment, "promote", now)
            project.auto_assign = True
            project.last_rollback_target = None

    def rollback(self, team: str, project_id: str, deployment_id: str, description: str | None = None) -> None:
        with self._lock:
            now = self._advance()
            project, deployment = self._project_deployment(team, project_id, deployment_id)
            if deployment.target != "production":
                raise ApiError(
                    400,
                    "invalid_rollback_target",
                    f"Deployment {deployment.id} is not a production deployment; only production deployments "
                    "can be rolled back to",
                )
            self._require_ready(deployment, now)
            if deployment.promoted_ms is None:
                raise ApiError(
                    409,
                    "not_rollback_candidate",
                    f"Deployment {deployment.id} has never served production; promote it instead",
                )
            if deployment.id == project.production_id:
                raise ApiError(409, "rollback_target_is_current", f"Production already serves {deployment.id}")
            request = self._request_alias(project, deployment, "rollback", now)
            project.auto_assign = False
            project.last_rollback_target = {  # the CLI polls this one for the rollback's progress
                key: request[key] for key in ("fromDeploymentId", "toDeploymentId", "jobStatus", "requestedAt")
            }
            if description:
                user = self.config.user
                project.rollback_description = {
                    "userId": user.uid, "username": user.username, "description": description, "createdAt": now,
                }

    # -- projects and custom environments ------------------------------------------------------------------

    def get_project(self, team: str, id_or_name: str) -> dict[str, Any]:
        with self._lock:
            now = self._advance()
            return wire.project(self, self._project(team, id_or_name), now)

    def list_custom_environments(self, team: str, id_or_name: str, git_branch: str | None = None) -> dict[str, Any]:
        with self._lock:
            self._advance()
            project = self._project(team, id_or_name)
            environments = [
                e for e in project.custom_environments if git_branch is None or _branch_matches(e, git_branch)
            ]
            return {
                "accountLimit": {"total": 12},
                "environments": [wire.custom_environment(self, project, e) for e in environments],
            }

    def get_custom_environment(self, team: str, id_or_name: str, slug_or_id: str) -> dict[str, Any]:
        with self._lock:
            self._advance()
            project = self._project(team, id_or_name)
            environment = project.custom_environment(slug_or_id)
            if environment is None:
                raise wire.not_found("Custom environment", slug_or_id)
            return wire.custom_environment(self, project, environment)

    # -- aliases -------------------------------------------------------------------------------------------

    def list_deployment_aliases(self, team: str, deployment_id: str) -> dict[str, Any]:
        with self._lock:
            self._advance()
            deployment = self._deployment(team, deployment_id)
            return {"aliases": [wire.deployment_alias(a) for a in self.aliases_of(deployment.id)]}

    def assign_alias(self, team: str, deployment_id: str, alias: str, redirect: str | None) -> dict[str, Any]:
        with self._lock:
            now = self._advance()
            deployment = self._deployment(team, deployment_id)
            self._require_ready(deployment, now)
            existing = self.aliases.get(alias)
            if existing is not None and existing.team_id != team:
                raise ApiError(409, "alias_in_use", f"The alias {alias} is used by another team")
            old = self._assign_alias(alias, deployment, now)
            record = self.aliases[alias]
            record.redirect = redirect
            return {"uid": record.uid, "alias": alias, "created": wire.iso(record.created_ms), "oldDeploymentId": old}

    def get_alias(
        self, team: str, id_or_alias: str, *, project_id: str | None = None, since: int | None = None,
        until: int | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            self._advance()
            record = self.aliases.get(id_or_alias) or next(
                (a for a in self.aliases.values() if a.uid == id_or_alias), None
            )
            if (
                record is None
                or record.team_id != team
                or (project_id is not None and record.project_id != self._project(team, project_id).id)
                or (since is not None and record.created_ms < since)
                or (until is not None and record.created_ms > until)
            ):
                raise wire.not_found("Alias", id_or_alias)
            return wire.alias(self, record)

    # -- environment variables -----------------------------------------------------------------------------

    def list_env(
        self, team: str, id_or_name: str, *, decrypt: bool = False, git_branch: str | None = None,
        custom_environment: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            self._advance()
            project = self._project(team, id_or_name)
            environment_id = None
            if custom_environment is not None:
                environment = project.custom_environment(custom_environment)
                if environment is None:
                    raise wire.not_found("Custom environment", custom_environment)
                environment_id = environment.id
            envs = [
                v
                for v in project.envs
                if (git_branch is None or v.git_branch in (None, git_branch))
                and (environment_id is None or environment_id in v.custom_environment_ids)
            ]
            return {"envs": [wire.env_var(self, v, reveal=decrypt) for v in envs]}

    def create_env(
        self, team: str, id_or_name: str, items: list[EnvVarIn], *, single: bool, upsert: bool
    ) -> dict[str, Any]:
        with self._lock:
            now = self._advance()
            project = self._project(team, id_or_name)
            created: list[EnvVar] = []
            failed: list[dict[str, Any]] = []
            for item in items:
                self._check_env_input(project, item.key, item.target, item.customEnvironmentIds, item.gitBranch)
                clash = self._env_clash(
                    project, item.key, item.target or [], item.customEnvironmentIds or [], item.gitBranch
                )
                if clash is not None and not upsert:
                    error = wire.env_conflict(item.key, item.target or [], item.gitBranch)
                    if single:
                        raise error
                    failed.append(error.body())
                    continue
                if clash is not None:
                    variable = clash
                    variable.value, variable.type, variable.comment = item.value, item.type, item.comment
                    variable.target = list(item.target or [])
                    variable.custom_environment_ids = list(item.customEnvironmentIds or [])
                    variable.updated_ms = now
                else:
                    variable = EnvVar(
                        id=self._random_id(16),
                        key=item.key,
                        value=item.value,
                        type=item.type,
                        target=list(item.target or []),
                        custom_environment_ids=list(item.customEnvironmentIds or []),
                        git_branch=item.gitBranch,
                        comment=item.comment,
                        created_ms=now,
                        updated_ms=now,
                    )
                    project.envs.append(variable)
                created.append(variable)
            shapes = [wire.env_var(self, v, reveal=False) for v in created]
            body: dict[str, Any] = {"failed": failed}
            if shapes:
                body["created"] = shapes[0] if single else shapes
            return body

    def get_env(self, team: str, id_or_name: str, env_id: str) -> dict[str, Any]:
        with self._lock:
            self._advance()
            variable = self._env(self._project(team, id_or_name), env_id)
            return wire.env_var(self, variable, reveal=True, single=True)

    def edit_env(self, team: str, id_or_name: str, env_id: str, patch: EnvVarPatch) -> dict[str, Any]:
        with self._lock:
            now = self._advance()
            project = self._project(team, id_or_name)
            variable = self._env(project, env_id)
            changes = patch.model_dump(exclude_unset=True)
            key = changes.get("key", variable.key)
            target = changes.get("target", variable.target)
            environments = changes.get("customEnvironmentIds", variable.custom_environment_ids)
            branch = changes.get("gitBranch", variable.git_branch)
            self._check_env_input(project, key, target, environments, branch)
            clash = self._env_clash(project, key, target or [], environments or [], branch, ignore=variable)
            if clash is not None:
                raise wire.env_conflict(key, target or [], branch)
            variable.key, variable.target, variable.custom_environment_ids, variable.git_branch = (
                key, list(target or []), list(environments or []), branch,
            )
            variable.value = changes.get("value", variable.value)
            variable.type = changes.get("type", variable.type)
            variable.comment = changes.get("comment", variable.comment)
            variable.updated_ms = now
            return wire.env_var(self, variable, reveal=False)

    def remove_env(
        self, team: str, id_or_name: str, env_id: str, custom_environment_id: str | None = None
    ) -> dict[str, Any]:
        with self._lock:
            self._advance()
            project = self._project(team, id_or_name)
            variable = self._env(project, env_id)
            if custom_environment_id is not None and custom_environment_id in variable.custom_environment_ids:
                variable.custom_environment_ids.remove(custom_environment_id)  # detach from one environment only
                if variable.target or variable.custom_environment_ids:
                    return wire.env_var(self, variable, reveal=False)
            project.envs.remove(variable)
            return wire.env_var(self, variable, reveal=False)

    # -- inspection (tests and people; not part of the Vercel API) ---------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self._advance()
            return wire.snapshot(self, now)

    def production_deployment_id(self, project: str) -> str | None:
        """The deployment the production domains of `project` (name or id) point to."""
        with self._lock:
            self._advance()
            return self._any_project(project).production_id

    def production_deployment(self, project: str) -> tuple[str, str | None] | None:
        """(id, git ref) of the deployment production of `project` serves; None before the first one."""
        with self._lock:
            self._advance()
            production_id = self._any_project(project).production_id
            return None if production_id is None else (production_id, self.deployments[production_id].ref)

    def deployment_state(self, deployment_id: str) -> str:
        with self._lock:
            now = self._advance()
            return self.deployments[deployment_id].ready_state(now)

    def auto_assign(self, project: str) -> bool:
        with self._lock:
            return self._any_project(project).auto_assign

    # -- rules (callers hold the lock) ---------------------------------------------------------------------

    def _now_ms(self) -> int:
        # never behind the newest createdAt: timestamps are bumped to stay unique when requests share a ms
        return max(int(self._clock() * 1000), self._last_created_ms)

    def _advance(self) -> int:
        """Apply what builds finished by now cause, in the order they finished; return now (ms)."""
        now = self._now_ms()
        finished = sorted(
            (d for d in self.deployments.values() if not d.settled and d.end_ms <= now), key=lambda d: d.end_ms
        )
        for deployment in finished:
            deployment.settled = True
            if deployment.fails:
                continue
            project = self.projects[deployment.project_id]
            at = deployment.end_ms
            if deployment.ref:  # the branch alias follows the branch's newest READY build
                branch_host = hostname(project.name, project.team_id, "git", _slug(deployment.ref))
                self._assign_alias(branch_host, deployment, at)
            if deployment.custom_environment_id:
                slug = project.custom_environment(deployment.custom_environment_id).slug
                self._assign_alias(hostname(project.name, project.team_id, "env", slug), deployment, at)
            elif deployment.target == "staging":
                self._assign_alias(hostname(project.name, project.team_id), deployment, at)
            if deployment.target == "production" and project.auto_assign:
                self._point_production(project, deployment, at)
        return now

    def _point_production(self, project: Project, deployment: Deployment, at: int) -> None:
        project.production_id = deployment.id
        if deployment.promoted_ms is None:
            deployment.promoted_ms = at
        for host in project.production_hosts:
            self._assign_alias(host, deployment, at)

    def _request_alias(self, project: Project, deployment: Deployment, kind: str, now: int) -> dict[str, Any]:
        request = {
            "fromDeploymentId": project.production_id or "",
            "toDeploymentId": deployment.id,
            "jobStatus": "succeeded",  # aliases move at once here; Vercel may report pending first
            "requestedAt": now,
            "type": kind,
        }
        self._point_production(project, deployment, now)
        project.last_alias_request = request
        project.updated_ms = now
        return request

    def _assign_alias(self, host: str, deployment: Deployment, at: int) -> str | None:
        """Point `host` at `deployment`; return the deployment it pointed to before."""
        record = self.aliases.get(host)
        if record is None:
            self.aliases[host] = Alias(
                uid=self._random_id(24), alias=host, deployment_id=deployment.id, project_id=deployment.project_id,
                team_id=deployment.team_id, created_ms=at, updated_ms=at,
            )
            return None
        old = record.deployment_id
        record.deployment_id, record.project_id, record.updated_ms = deployment.id, deployment.project_id, at
        return old

    def aliases_of(self, deployment_id: str) -> list[Alias]:
        return sorted((a for a in self.aliases.values() if a.deployment_id == deployment_id), key=lambda a: a.alias)

    def is_rollback_candidate(self, deployment: Deployment, now: int) -> bool:
        return (
            deployment.target == "production"
            and deployment.promoted_ms is not None
            and deployment.ready_state(now) == "READY"
        )

    def _events(self, deployment: Deployment, now: int) -> list[Event]:
        """The build log of `deployment` as far as it has got by `now`."""
        d = deployment
        span = d.end_ms - d.building_ms

        def at(fraction: float) -> int:
            return d.building_ms + int(span * fraction)

        source = d.git_source
        if source:
            repository = f"github.com/{source['org']}/{source['repo']}"
            fetch = f"Cloning {repository} (Branch: {source['ref']}, Commit: {source['sha'][:7]})"
        else:
            fetch = "Downloading deployment source files..."
        events = [
            Event(d.created_ms, "deployment-state", "Deployment queued", "QUEUED"),
            Event(d.building_ms, "deployment-state", "Build started", "BUILDING"),
            Event(at(0.0), "stdout", "Running build in Washington, D.C., USA (East) - iad1"),
            Event(at(0.05), "stdout", fetch),
            Event(at(0.15), "stdout", "Cloning completed: 212.000ms" if source else "Downloaded source files"),
            Event(at(0.25), "command", 'Running "vercel build"'),
            Event(at(0.35), "command", 'Running "install" command: `npm install`...'),
            Event(at(0.5), "stdout", "added 312 packages, and audited 313 packages in 4s"),
            *(Event(at(0.55), "stdout", line) for line in self.config.build_output),
            Event(at(0.6), "command", 'Running "npm run build"'),
        ]
        if d.fails:
            events += [
                Event(at(0.8), "stderr", "Failed to compile."),
                Event(at(0.85), "stderr", f"sandbox: {d.fail_reason}"),
                Event(at(0.9), "stderr", f"Error: {self.config.build_error_message}"),
                Event(d.end_ms, "exit", "exit code 1"),
                Event(d.end_ms, "deployment-state", "Build failed", "ERROR"),
            ]
        else:
            events += [
                Event(at(0.8), "stdout", "Compiled successfully"),
                Event(at(0.9), "stdout", "Build Completed in /vercel/output"),
                Event(at(0.95), "stdout", "Deploying outputs..."),
                Event(d.end_ms, "stdout", "Deployment completed"),
                Event(d.end_ms, "deployment-state", "Deployment ready", "READY"),
            ]
        for previous, event in zip(events, events[1:]):  # distinct, increasing times: `since` stays exact
            event.created = max(event.created, previous.created + 1)
        if d.canceled_ms is not None:
            events = [e for e in events if e.created < d.canceled_ms]
            events += [
                Event(d.canceled_ms, "stderr", "Build canceled"),
                Event(d.canceled_ms + 1, "deployment-state", "Deployment canceled", "CANCELED"),
            ]
            return events
        if d.ready_state(now) in TERMINAL_STATES:
            return events
        return [e for e in events if e.created <= now]

    def _target(self, project: Project, body: CreateDeploymentIn) -> tuple[str | None, CustomEnvironment | None]:
        environment = None
        if body.customEnvironmentSlugOrId is not None:
            environment = project.custom_environment(body.customEnvironmentSlugOrId)
            if environment is None:
                raise wire.not_found("Custom environment", body.customEnvironmentSlugOrId)
        if body.target in (None, "production", "staging"):
            if body.target == "production" and environment is not None:
                raise wire.bad_request(
                    "Invalid request: `target` production cannot be combined with `customEnvironmentSlugOrId`"
                )
            if body.target == "staging" and environment is None:
                environment = project.custom_environment("staging")
            return body.target, environment
        named = project.custom_environment(body.target)
        if named is None or (environment is not None and environment is not named):
            raise wire.bad_request(
                f"Invalid request: `target` must be production, staging, a custom environment of {project.name}, "
                f"or omitted for a preview; got {body.target!r}"
            )
        return None, named

    def _source(
        self, project: Project, body: CreateDeploymentIn, previous: Deployment | None
    ) -> tuple[dict[str, Any] | None, str]:
        if previous is not None:  # a redeploy: a new build of the same source
            source = dict(previous.git_source) if previous.git_source else None
            if source is not None and body.withLatestCommit:
                source["sha"] = self._head_sha(source)
            return source, "redeploy"
        if body.gitSource is None:
            if body.files is None:
                raise wire.bad_request("Invalid request: `gitSource` is required (a git ref to build), or `files`")
            if not body.files:
                raise ApiError(400, "no_files", "No files in the deployment: `files` is empty")
            return None, "cli"
        given = body.gitSource
        link = project.link
        if link is None:
            raise ApiError(
                400, "incorrect_git_source_info", f"Project {project.name} is not linked to a git repository"
            )
        same_repo = (
            given.type == link.type
            and (given.repoId is None or str(given.repoId) == str(link.repoId))
            and (given.org is None or given.org.lower() == link.org.lower())
            and (given.repo is None or given.repo.lower() == link.repo.lower())
            and (given.repoId is not None or (given.org is not None and given.repo is not None))
        )
        if not same_repo:
            raise ApiError(
                400,
                "incorrect_git_source_info",
                f"`gitSource` does not match the repository linked to {project.name} "
                f"({link.type} {link.org}/{link.repo}, repoId {link.repoId})",
            )
        source = {"type": link.type, "ref": given.ref, "repoId": link.repoId, "org": link.org, "repo": link.repo}
        source["sha"] = given.sha or self._head_sha(source)
        return source, "git"

    def _head_sha(self, source: dict[str, Any]) -> str:
        """A new commit on the ref each time: every build of a branch head looks like a fresh push."""
        return _digest(source["org"], source["repo"], source["ref"], self._random_id(16))

    def _env_keys(
        self, project: Project, target: str | None, environment: CustomEnvironment | None, ref: str | None
    ) -> list[str]:
        """Keys of the variables a new build gets (a snapshot: later edits need a new build)."""
        keys = set()
        for v in project.envs:
            if environment is not None:
                applies = environment.id in v.custom_environment_ids
            elif target == "production":
                applies = "production" in v.target
            else:
                applies = "preview" in v.target and v.git_branch in (None, ref)
            if applies:
                keys.add(v.key)
        return sorted(keys)

    def _check_env_input(
        self, project: Project, key: str, target: list[str] | None, environments: list[str] | None, branch: str | None
    ) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise wire.bad_request(
                f"Invalid request: `key` {key!r} must be letters, digits and underscores, not starting with a digit"
            )
        if not target and not environments:
            raise wire.bad_request("Invalid request: give `target` or `customEnvironmentIds`")
        for environment_id in environments or []:
            if project.custom_environment(environment_id) is None:
                raise wire.bad_request(
                    f"Invalid request: `customEnvironmentIds`: {project.name} has no custom environment "
                    f"{environment_id!r}"
                )
        if branch is not None and list(target or []) != ["preview"]:
            raise wire.bad_request("Invalid request: `gitBranch` needs `target` to be exactly [\"preview\"]")

    def _env_clash(
        self, project: Project, key: str, target: list[str], environments: list[str], branch: str | None,
        ignore: EnvVar | None = None,
    ) -> EnvVar | None:
        for v in project.envs:
            if v is ignore or v.key != key or v.git_branch != branch:
                continue
            if set(v.target) & set(target) or set(v.custom_environment_ids) & set(environments):
                return v
        return None

    def _env(self, project: Project, env_id: str) -> EnvVar:
        variable = next((v for v in project.envs if v.id == env_id), None)
        if variable is None:
            raise wire.not_found("Environment variable", env_id)
        return variable

    def _require_ready(self, deployment: Deployment, now: int) -> None:
        current = deployment.ready_state(now)
        if current != "READY":
            raise ApiError(409, "deployment_not_ready", f"Deployment {deployment.id} is {current}, not READY")

    def _project(self, team: str, id_or_name: str) -> Project:
        project = next((p for p in self.projects.values() if id_or_name in (p.id, p.name)), None)
        if project is None or project.team_id != team:  # another team's project: as if it did not exist
            raise wire.not_found("Project", id_or_name)
        return project

    def _any_project(self, id_or_name: str) -> Project:
        project = next((p for p in self.projects.values() if id_or_name in (p.id, p.name)), None)
        if project is None:
            raise KeyError(id_or_name)
        return project

    def _deployment(self, team: str, id_or_url: str) -> Deployment:
        deployment = self.deployments.get(id_or_url) or next(
            (d for d in self.deployments.values() if d.url == id_or_url), None
        )
        if deployment is None or deployment.team_id != team:
            raise wire.not_found("Deployment", id_or_url)
        return deployment

    def _project_deployment(self, team: str, project_id: str, deployment_id: str) -> tuple[Project, Deployment]:
        project = self._project(team, project_id)
        deployment = self._deployment(team, deployment_id)
        if deployment.project_id != project.id:
            raise wire.not_found("Deployment", f"{deployment_id} in project {project.name}")
        return project, deployment

    def _random_id(self, length: int, alphabet: str = ID_ALPHABET) -> str:
        return "".join(self._rng.choice(alphabet) for _ in range(length))


def _digest(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


def _stable_id(prefix: str, *parts: str) -> str:
    """An id that stays the same across runs, so a config file and a client setting can name it."""
    return prefix + _digest(*parts)[:24]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def _branch_matches(environment: CustomEnvironment, branch: str) -> bool:
    matcher = environment.branch_matcher
    if matcher is None:
        return False
    pattern = matcher["pattern"]
    return {
        "equals": branch == pattern,
        "startsWith": branch.startswith(pattern),
        "endsWith": branch.endswith(pattern),
    }[matcher["type"]]


def _git_meta(source: dict[str, Any] | None) -> dict[str, str]:
    """The git keys Vercel adds to `meta` of a git deployment (clients read githubCommitSha and friends)."""
    if not source:
        return {}
    return {
        "githubCommitRef": source["ref"],
        "githubCommitSha": source["sha"],
        "githubOrg": source["org"],
        "githubRepo": source["repo"],
        "githubRepoId": str(source["repoId"]),
        "githubDeployment": "1",
    }
