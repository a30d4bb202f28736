"""The JSON shapes of the Vercel API subset (../shared/contracts/vercel-openapi-subset.json): request bodies
as pydantic models, response bodies built from the records in `state.py`, and the error envelope.

Response builders emit the keys the subset requires plus the ones clients read; they never emit a key
with a type the subset does not allow (tests validate every body against the subset).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

if TYPE_CHECKING:
    from sandbox.vercel.state import Alias, CustomEnvironment, Deployment, EnvVar, Event, Project, State

REGION = "iad1"
PLAN = "pro"
BUILD_ERROR_CODE = "BUILD_UTILS_SPAWN_1"
EnvTarget = Literal["production", "preview", "development"]
EnvType = Literal["system", "secret", "encrypted", "plain", "sensitive"]
HOSTNAME = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$"


# -- errors ----------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An answer in Vercel's error envelope: `{"error": {"code", "message", ...extra}}`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found: {ident}")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def env_conflict(key: str, target: list[str], branch: str | None) -> ApiError:
    return ApiError(
        400,
        "ENV_CONFLICT",
        f"A variable with the name `{key}` already exists for the target {','.join(target) or 'custom environment'}"
        f" on branch {branch or 'any'}; pass upsert=true to overwrite it",
        key=key,
        envVarKey=key,
        target=target,
    )


def invalid_body(exc: ValidationError) -> ApiError:
    """Vercel-style 400 naming the first offending field, e.g. "Invalid request: `gitSource.ref` is required"."""
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"] if not _is_union_tag(part)) or "body"
    if error["type"] == "missing":
        problem = "is required"
    elif error["type"] == "extra_forbidden":
        problem = "is not an allowed property"
    else:
        problem = f"is invalid: {error['msg'].removeprefix('Value error, ')}"
    return bad_request(f"Invalid request: `{location}` {problem}")


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and (part[:1].isupper() or "[" in part)  # model names pydantic puts in unions


# -- request bodies --------------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")  # Vercel refuses unknown properties
    nullable: ClassVar[frozenset[str]] = frozenset()  # fields the subset lets be null; others may be left out

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.nullable:
            raise ValueError("must not be null")
        return value


class GitSourceIn(BaseModel):
    type: Literal["github", "github-limited", "gitlab", "bitbucket"]
    ref: str = Field(min_length=1)
    sha: str | None = None
    repoId: int | str | None = None
    org: str | None = None
    repo: str | None = None
    projectId: int | str | None = None
    repoUuid: str | None = None
    workspaceUuid: str | None = None
    owner: str | None = None
    slug: str | None = None


class InlinedFile(_In):
    file: str
    data: str
    encoding: Literal["base64", "utf-8"] | None = None


class UploadedFile(_In):
    file: str
    sha: str | None = None
    size: int | None = None


class CreateDeploymentIn(_In):
    nullable = frozenset({"monorepoManager"})
    name: str = Field(min_length=1)
    project: str | None = None
    target: str | None = None
    customEnvironmentSlugOrId: str | None = None
    deploymentId: str | None = None
    gitSource: GitSourceIn | None = None
    files: list[InlinedFile | UploadedFile] | None = None
    meta: dict[str, Annotated[str, Field(max_length=65536)]] | None = None
    gitMetadata: dict[str, Any] | None = None
    projectSettings: dict[str, Any] | None = None
    monorepoManager: str | None = None
    withLatestCommit: bool | None = None


class EnvVarIn(_In):
    nullable = frozenset({"gitBranch"})
    key: str
    value: str
    type: EnvType
    target: list[EnvTarget] | None = None
    gitBranch: str | None = Field(None, max_length=250)
    comment: str | None = Field(None, max_length=500)
    customEnvironmentIds: list[str] | None = None


class EnvVarPatch(_In):
    nullable = frozenset({"gitBranch"})
    key: str | None = None
    value: str | None = None
    type: EnvType | None = None
    target: list[EnvTarget] | None = None
    gitBranch: str | None = Field(None, max_length=250)
    customEnvironmentIds: list[str] | None = None
    comment: str | None = Field(None, max_length=500)


class AliasIn(_In):
    nullable = frozenset({"redirect"})
    alias: str = Field(pattern=HOSTNAME, max_length=253)
    redirect: str | None = None


# -- responses -------------------------------------------------------------------------------------------


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def team_slug(team_id: str) -> str:
    return team_id.removeprefix("team_").lower().replace("_", "-")


def hostname(project: str, team_id: str, *parts: str) -> str:
    """`<project>-<parts>-<team>.vercel.app`: the form of Vercel's generated deployment and alias hostnames."""
    return "-".join((project, *parts, team_slug(team_id))) + ".vercel.app"


def _inspector_url(d: Deployment) -> str:
    return f"https://vercel.com/{team_slug(d.team_id)}/{d.name}/{d.id.removeprefix('dpl_')}"


def _timeline(d: Deployment, state: str, now: int, error_message: str) -> dict[str, Any]:
    stopped = d.canceled_ms if d.canceled_ms is not None else now
    body: dict[str, Any] = {"buildingAt": d.building_ms if d.building_ms <= stopped else d.created_ms}
    if state == "READY":
        body["ready"] = d.end_ms
    elif state == "ERROR":
        body |= {
            "buildErrorAt": d.end_ms,
            "errorCode": BUILD_ERROR_CODE,
            "errorMessage": error_message,
            "errorStep": "build",
        }
    elif state == "CANCELED":
        body["canceledAt"] = d.canceled_ms
    return body


def _substate(d: Deployment, state: str) -> dict[str, str]:
    if d.target != "production" or state != "READY":
        return {}
    return {"readySubstate": "PROMOTED" if d.promoted_ms is not None else "STAGED"}


def deployment(s: State, d: Deployment, now: int) -> dict[str, Any]:
    """createDeployment / getDeployment / cancelDeployment: the full (private) deployment."""
    state = d.ready_state(now)
    project = s.projects[d.project_id]
    user = s.config.user
    body: dict[str, Any] = {
        "id": d.id,
        "url": d.url,
        "name": d.name,
        "projectId": d.project_id,
        "ownerId": d.team_id,
        "createdAt": d.created_ms,
        "createdIn": REGION,
        "bootedAt": d.created_ms,
        **_timeline(d, state, now, s.config.build_error_message),
        "readyState": state,
        "status": state,
        **_substate(d, state),
        "target": d.target,
        "type": "LAMBDAS",
        "version": 2,
        "plan": PLAN,
        "public": False,
        "regions": [REGION],
        "source": d.source,
        "meta": dict(d.meta),
        "creator": {"uid": user.uid, "username": user.username},
        "alias": [a.alias for a in s.aliases_of(d.id)],
        "aliasAssigned": state == "READY",
        "aliasError": None,
        "inspectorUrl": _inspector_url(d),
        "isInConcurrentBuildsQueue": state == "QUEUED",
        "isInSystemBuildsQueue": False,
        "buildSkipped": False,
        "projectSettings": {
            "framework": project.framework,
            "buildCommand": None,
            "devCommand": None,
            "installCommand": None,
            "outputDirectory": None,
        },
        "build": {"env": list(d.env_keys)},
        "env": list(d.env_keys),
        "routes": [],
        "project": {"id": project.id, "name": project.name, "framework": project.framework},
        "team": {"id": d.team_id, "name": team_slug(d.team_id), "slug": team_slug(d.team_id)},
    }
    if d.git_source is not None:
        body["gitSource"] = dict(d.git_source)
    if d.custom_environment_id is not None:
        environment = project.custom_environment(d.custom_environment_id)
        body["customEnvironment"] = custom_environment(s, project, environment)
    return body


def deployment_item(s: State, d: Deployment, now: int) -> dict[str, Any]:
    """getDeployments (v6/v7): a list item, which calls the id `uid` and the creation time `created`."""
    state = d.ready_state(now)
    user = s.config.user
    timeline = _timeline(d, state, now, s.config.build_error_message)
    body: dict[str, Any] = {
        "uid": d.id,
        "name": d.name,
        "projectId": d.project_id,
        "url": d.url,
        "created": d.created_ms,
        "createdAt": d.created_ms,
        "buildingAt": timeline["buildingAt"],
        "state": state,
        "readyState": state,
        **_substate(d, state),
        "type": "LAMBDAS",
        "creator": {"uid": user.uid, "username": user.username, "email": user.email},
        "meta": dict(d.meta),
        "target": d.target,
        "aliasError": None,
        "aliasAssigned": d.end_ms if state == "READY" else False,  # nullable+anyOf: null fails OAS 3.0.3
        "inspectorUrl": _inspector_url(d),
        "isRollbackCandidate": s.is_rollback_candidate(d, now),
        "source": d.source,
    }
    if "ready" in timeline:
        body["ready"] = timeline["ready"]
    if state == "ERROR":
        body |= {"errorCode": timeline["errorCode"], "errorMessage": timeline["errorMessage"]}
    if d.custom_environment_id is not None:
        environment = s.projects[d.project_id].custom_environment(d.custom_environment_id)
        body["customEnvironment"] = {"id": environment.id, "slug": environment.slug}
    return body


def _project_deployment(s: State, d: Deployment, now: int) -> dict[str, Any]:
    """A deployment as getProject shows it (targets.production, latestDeployments)."""
    state = d.ready_state(now)
    user = s.config.user
    body: dict[str, Any] = {
        "id": d.id,
        "alias": [a.alias for a in s.aliases_of(d.id)],
        "aliasAssigned": d.end_ms if state == "READY" else False,  # nullable+anyOf: null fails OAS 3.0.3
        "aliasError": None,
        "buildingAt": _timeline(d, state, now, s.config.build_error_message)["buildingAt"],
        "createdAt": d.created_ms,
        "createdIn": REGION,
        "creator": {"email": user.email, "uid": user.uid, "username": user.username},
        "deploymentHostname": d.url.removesuffix(".vercel.app"),
        "name": d.name,
        "meta": dict(d.meta),
        "plan": PLAN,
        "private": True,
        "readyState": state,
        **_substate(d, state),
        "target": d.target,
        "teamId": d.team_id,
        "type": "LAMBDAS",
        "url": d.url,
        "userId": user.uid,
    }
    if state == "READY":
        body["readyAt"] = d.end_ms
    return body


def project(s: State, p: Project, now: int) -> dict[str, Any]:
    latest = [d for d in reversed(s.deployments.values()) if d.project_id == p.id][:5]
    production = s.deployments.get(p.production_id) if p.production_id else None
    resources = {"functionDefaultRegions": [REGION], "fluid": False}
    body: dict[str, Any] = {
        "id": p.id,
        "name": p.name,
        "accountId": p.team_id,
        "framework": p.framework,
        "nodeVersion": "22.x",
        "directoryListing": False,
        "createdAt": p.created_ms,
        "updatedAt": p.updated_ms,
        "live": False,
        "autoAssignCustomDomains": True,
        "resourceConfig": resources,
        "defaultResourceConfig": dict(resources),
        "targets": {"production": _project_deployment(s, production, now)} if production else {},
        "latestDeployments": [_project_deployment(s, d, now) for d in latest],
        "customEnvironments": [custom_environment(s, p, e) for e in p.custom_environments],
        "lastRollbackTarget": p.last_rollback_target,
        "lastAliasRequest": p.last_alias_request,
    }
    if p.rollback_description is not None:
        body["rollbackDescription"] = p.rollback_description
    if p.link is not None:
        body["link"] = {
            "type": p.link.type,
            "org": p.link.org,
            "repo": p.link.repo,
            "repoId": p.link.repoId,
            "productionBranch": p.link.productionBranch,
            "gitCredentialId": "",
            "deployHooks": [],
            "sourceless": True,
            "createdAt": p.created_ms,
            "updatedAt": p.created_ms,
        }
    return body


def custom_environment(s: State, p: Project, e: CustomEnvironment) -> dict[str, Any]:
    host = hostname(p.name, p.team_id, "env", e.slug)
    body: dict[str, Any] = {
        "id": e.id,
        "slug": e.slug,
        "type": e.type,
        "description": e.description,
        "domains": [],
        "currentDeploymentAliases": [host] if host in s.aliases else [],
        "createdAt": e.created_ms,
        "updatedAt": e.created_ms,
    }
    if e.branch_matcher is not None:
        body["branchMatcher"] = dict(e.branch_matcher)
    return body


def event(d: Deployment, e: Event, serial: int) -> dict[str, Any]:
    """getDeploymentEvents: one build log event in the `{type, created, payload}` form."""
    info: dict[str, str] = {"type": "build", "name": "bld_" + d.id.removeprefix("dpl_")[:12], "entrypoint": "."}
    if e.ready_state is not None:
        info["readyState"] = e.ready_state
    return {
        "type": e.type,
        "created": e.created,
        "payload": {
            "deploymentId": d.id,
            "id": f"{d.id}-{serial}",
            "date": e.created,
            "created": e.created,
            "serial": f"{e.created:013d}:{serial:05d}",
            "text": e.text,
            "info": info,
        },
    }


def runtime_log(
    d: Deployment, serial: int, message: str, level: str, path: str, method: str, status: int, at_ms: int
) -> dict[str, Any]:
    """getRuntimeLogs: one line of the application/stream+json body."""
    return {
        "level": level,
        "message": message,
        "rowId": f"{d.id}-r{serial}",
        "source": "serverless",
        "timestampInMs": at_ms,
        "domain": d.url,
        "messageTruncated": False,
        "requestMethod": method,
        "requestPath": path,
        "responseStatusCode": status,
    }


def deployment_alias(a: Alias) -> dict[str, Any]:
    return {"uid": a.uid, "alias": a.alias, "created": iso(a.created_ms), "redirect": a.redirect}


def alias(s: State, a: Alias) -> dict[str, Any]:
    """getAlias: the object form (the subset also accepts the older array form)."""
    d = s.deployments[a.deployment_id]
    user = s.config.user
    return {
        "uid": a.uid,
        "alias": a.alias,
        "created": iso(a.created_ms),
        "createdAt": a.created_ms,
        "updatedAt": a.updated_ms,
        "creator": {"uid": user.uid, "email": user.email, "username": user.username},
        "deploymentId": a.deployment_id,
        "deployment": {"id": d.id, "url": d.url},
        "projectId": a.project_id,
        "redirect": a.redirect,
    }


def env_var(s: State, v: EnvVar, *, reveal: bool, single: bool = False) -> dict[str, Any]:
    """An environment variable. Plain values always show; encrypted ones only when `reveal`; sensitive
    ones never (getProjectEnv then omits `value`, as Vercel does)."""
    user = s.config.user
    body: dict[str, Any] = {
        "id": v.id,
        "key": v.key,
        "type": v.type,
        "target": list(v.target),
        "customEnvironmentIds": list(v.custom_environment_ids),
        "configurationId": None,
        "createdAt": v.created_ms,
        "updatedAt": v.updated_ms,
        "createdBy": user.uid,
        "updatedBy": user.uid,
    }
    if v.git_branch is not None:
        body["gitBranch"] = v.git_branch
    if v.comment is not None:
        body["comment"] = v.comment
    if v.type in ("plain", "system"):
        body["value"] = v.value
    elif v.type == "sensitive":
        body["decrypted"] = False
        if not single:
            body["value"] = _ciphertext(s, v)
    else:
        body["decrypted"] = reveal
        body["value"] = v.value if reveal else _ciphertext(s, v)
    return body


def _ciphertext(s: State, v: EnvVar) -> str:
    """An opaque stand-in for Vercel's encrypted value: changes with the value, reveals nothing of it."""
    mac = hmac.new(s.cipher_key, f"{v.id}\0{v.value}".encode(), hashlib.sha256).digest()
    return base64.b64encode(b"\x01sandbox-enc\x00" + mac).decode()


def snapshot(s: State, now: int) -> dict[str, Any]:
    """GET /_sandbox/state: what production serves, every deployment, and request counters."""
    projects = []
    for p in s.projects.values():
        production = s.deployments.get(p.production_id) if p.production_id else None
        projects.append(
            {
                "id": p.id,
                "name": p.name,
                "teamId": p.team_id,
                "link": f"{p.link.type}:{p.link.org}/{p.link.repo}@{p.link.productionBranch}" if p.link else None,
                "production": {"deploymentId": production.id, "url": production.url} if production else None,
                "productionAliases": p.production_hosts,
                "autoAssignProduction": p.auto_assign,
                "lastRollbackTarget": p.last_rollback_target,
                "lastAliasRequest": p.last_alias_request,
                "customEnvironments": [{"id": e.id, "slug": e.slug} for e in p.custom_environments],
                "envKeys": sorted({v.key for v in p.envs}),
            }
        )
    deployments = [
        {
            "id": d.id,
            "url": d.url,
            "project": d.name,
            "target": d.target,
            "customEnvironmentId": d.custom_environment_id,
            "ref": d.ref,
            "sha": (d.git_source or {}).get("sha"),
            "state": d.ready_state(now),
            **_substate(d, d.ready_state(now)),
            "isRollbackCandidate": s.is_rollback_candidate(d, now),
            "createdAt": d.created_ms,
            "meta": dict(d.meta),
            "failReason": d.fail_reason,
        }
        for d in reversed(s.deployments.values())
    ]
    return {
        "now": now,
        "teams": [{"id": t, "slug": team_slug(t)} for t in dict.fromkeys(s.config.tokens.values())],
        "projects": projects,
        "deployments": deployments,
        "aliases": {host: a.deployment_id for host, a in sorted(s.aliases.items())},
        "counters": {
            "requests": sum(s.requests.values()),
            "byOperation": dict(sorted(s.requests.items())),
            "createDeploymentRequests": s.requests["createDeployment"],
            "deployments": len(s.deployments),
            "faults": dict(sorted(s.faults.items())),
        },
        "config": s.config.model_dump(exclude={"tokens", "projects", "user"}),
    }
