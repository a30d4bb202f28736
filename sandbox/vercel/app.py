"""The HTTP face of the emulator: routes of the Vercel API subset onto `State`, plus what every request goes
through first: added latency, injected transient faults, authentication and team scoping, rate limits.
Every response, even a 404 for an unknown path, carries X-RateLimit-Limit/Remaining/Reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.vercel import wire
from sandbox.vercel.config import EmulatorConfig
from sandbox.vercel.state import LIST_STATES, Clock, State
from sandbox.vercel.wire import AliasIn, ApiError, CreateDeploymentIn, EnvVarIn, EnvVarPatch

log = logging.getLogger(__name__)

TRANSIENT_FAULTS = {
    429: ("too_many_requests", "Rate limit exceeded (sandbox transient_error_rate)"),
    500: ("internal_server_error", "An unexpected internal error occurred (sandbox transient_error_rate)"),
    502: ("bad_gateway", "The upstream server did not answer (sandbox transient_error_rate)"),
    503: ("service_unavailable", "The service is temporarily unavailable (sandbox transient_error_rate)"),
}
FOLLOW_POLL_S = 0.02


@dataclass
class Call:
    """One authenticated API request, as a handler sees it."""

    state: State
    team: str
    request: Request
    body: Any

    def path(self, name: str) -> str:
        return self.request.path_params[name]

    def query(self, name: str) -> str | None:
        return self.request.query_params.get(name)

    def number(self, name: str) -> int | None:
        value = self.query(name)
        if value is None or value == "":
            return None
        try:
            return int(float(value))
        except (ValueError, OverflowError):
            raise wire.bad_request(f"Invalid request: query parameter `{name}` must be a number") from None

    def flag(self, name: str) -> bool | None:
        value = self.query(name)
        if value is None:
            return None
        if value.lower() not in ("true", "false", "1", "0"):
            raise wire.bad_request(f"Invalid request: query parameter `{name}` must be true or false")
        return value.lower() in ("true", "1")

    def parsed(self, model: type[Any]) -> Any:
        try:
            return model.model_validate(self.body if self.body is not None else {})
        except ValidationError as exc:
            raise wire.invalid_body(exc) from None


Handler = Callable[[Call], Awaitable[Response] | Response]


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _error(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


# -- operations -----------------------------------------------------------------------------------------


def create_deployment(call: Call) -> Response:
    body = call.state.create_deployment(call.team, call.parsed(CreateDeploymentIn))
    if call.state.chance(call.state.config.lost_response_rate):  # created, but the answer never arrives
        call.state.count_fault("lostResponses")
        return _error(ApiError(500, "internal_server_error", "An unexpected internal error occurred"))
    return _json(body)


def get_deployment(call: Call) -> Response:
    return _json(call.state.get_deployment(call.team, call.path("idOrUrl")))


def list_deployments(call: Call) -> Response:
    target = call.query("target")
    if target is not None and target not in ("production", "preview", "staging"):
        raise wire.bad_request("Invalid request: query parameter `target` must be production, preview or staging")
    states = None
    if call.query("state"):
        states = {s.strip().upper() for s in call.query("state").split(",") if s.strip()}
        if unknown := states - LIST_STATES:
            raise wire.bad_request(f"Invalid request: unknown `state` {', '.join(sorted(unknown))}")
    limit = call.number("limit")
    return _json(
        call.state.list_deployments(
            call.team,
            project=call.query("projectId"),
            project_ids=call.request.query_params.getlist("projectIds") or None,
            app=call.query("app"),
            target=target,
            states=states,
            rollback_candidate=call.flag("rollbackCandidate"),
            branch=call.query("branch"),
            sha=call.query("sha"),
            since=call.number("since"),
            until=call.number("until"),
            limit=20 if limit is None else max(1, min(limit, 100)),  # Vercel's default and maximum
        )
    )


def cancel_deployment(call: Call) -> Response:
    return _json(call.state.cancel_deployment(call.team, call.path("id")))


async def deployment_events(call: Call) -> Response:
    id_or_url = call.path("idOrUrl")
    if call.number("follow") == 1:
        call.state.follow_events(call.team, id_or_url, 0)  # a 404 now, not inside the stream
        return StreamingResponse(_follow(call.state, call.team, id_or_url), media_type="application/stream+json")
    direction = call.query("direction") or "forward"
    if direction not in ("forward", "backward"):
        raise wire.bad_request("Invalid request: query parameter `direction` must be forward or backward")
    events = call.state.deployment_events(
        call.team,
        id_or_url,
        since=call.number("since"),
        until=call.number("until"),
        backward=direction == "backward",
        limit=call.number("limit"),
    )
    return _json(events)


async def _follow(state: State, team: str, id_or_url: str):
    """`follow=1`: one JSON event per line as the build log grows, until the build ends."""
    sent = 0
    while True:
        events, finished = state.follow_events(team, id_or_url, sent)
        for event in events:
            yield json.dumps(event) + "\n"
        sent += len(events)
        if finished:
            return
        await asyncio.sleep(FOLLOW_POLL_S)


def runtime_logs(call: Call) -> Response:
    entries = call.state.runtime_logs(call.team, call.path("projectId"), call.path("deploymentId"))
    body = "".join(json.dumps(entry) + "\n" for entry in entries)
    return Response(body, media_type="application/stream+json")


def promote(call: Call) -> Response:
    call.state.promote(call.team, call.path("projectId"), call.path("deploymentId"))
    return Response(status_code=201)


def rollback(call: Call) -> Response:
    call.state.rollback(call.team, call.path("projectId"), call.path("deploymentId"), call.query("description"))
    return Response(status_code=201)


def get_project(call: Call) -> Response:
    return _json(call.state.get_project(call.team, call.path("idOrName")))


def list_custom_environments(call: Call) -> Response:
    return _json(call.state.list_custom_environments(call.team, call.path("idOrName"), call.query("gitBranch")))


def get_custom_environment(call: Call) -> Response:
    return _json(call.state.get_custom_environment(call.team, call.path("idOrName"), call.path("environmentSlugOrId")))


def list_deployment_aliases(call: Call) -> Response:
    return _json(call.state.list_deployment_aliases(call.team, call.path("id")))


def assign_alias(call: Call) -> Response:
    body = call.parsed(AliasIn)
    return _json(call.state.assign_alias(call.team, call.path("id"), body.alias, body.redirect))


def get_alias(call: Call) -> Response:
    return _json(
        call.state.get_alias(
            call.team, call.path("idOrAlias"), project_id=call.query("projectId"),
            since=call.number("since"), until=call.number("until"),
        )
    )


def list_env(call: Call) -> Response:
    return _json(
        call.state.list_env(
            call.team,
            call.path("idOrName"),
            decrypt=call.flag("decrypt") is True,
            git_branch=call.query("gitBranch"),
            custom_environment=call.query("customEnvironmentId") or call.query("customEnvironmentSlug"),
        )
    )


def create_env(call: Call) -> Response:
    single = not isinstance(call.body, list)
    raw = [call.body] if single else call.body
    items = []
    for index, item in enumerate(raw):
        try:
            items.append(EnvVarIn.model_validate(item))
        except ValidationError as exc:
            error = wire.invalid_body(exc)
            if not single:
                error.message = error.message.replace("Invalid request: `", f"Invalid request: `[{index}].")
            raise error from None
    if not items:
        raise wire.bad_request("Invalid request: the body is an empty list")
    upsert = call.flag("upsert") is True
    return _json(call.state.create_env(call.team, call.path("idOrName"), items, single=single, upsert=upsert), 201)


def get_env(call: Call) -> Response:
    return _json(call.state.get_env(call.team, call.path("idOrName"), call.path("id")))


def edit_env(call: Call) -> Response:
    return _json(call.state.edit_env(call.team, call.path("idOrName"), call.path("id"), call.parsed(EnvVarPatch)))


def remove_env(call: Call) -> Response:
    environment = call.query("customEnvironmentId")
    return _json(call.state.remove_env(call.team, call.path("idOrName"), call.path("id"), environment))


# (method, path, operationId as in the subset, handler, takes a JSON body)
OPERATIONS: list[tuple[str, str, str, Handler, bool]] = [
    ("POST", "/v13/deployments", "createDeployment", create_deployment, True),
    ("GET", "/v13/deployments/{idOrUrl}", "getDeployment", get_deployment, False),
    ("GET", "/v6/deployments", "getDeployments", list_deployments, False),
    ("GET", "/v7/deployments", "getDeploymentsV7", list_deployments, False),
    ("PATCH", "/v12/deployments/{id}/cancel", "cancelDeployment", cancel_deployment, False),
    ("GET", "/v3/deployments/{idOrUrl}/events", "getDeploymentEvents", deployment_events, False),
    (
        "GET", "/v1/projects/{projectId}/deployments/{deploymentId}/runtime-logs", "getRuntimeLogs", runtime_logs,
        False,
    ),
    ("POST", "/v10/projects/{projectId}/promote/{deploymentId}", "requestPromote", promote, False),
    ("POST", "/v1/projects/{projectId}/rollback/{deploymentId}", "requestRollback", rollback, False),
    ("POST", "/v9/projects/{projectId}/rollback/{deploymentId}", "requestRollbackCli", rollback, False),
    ("GET", "/v9/projects/{idOrName}", "getProject", get_project, False),
    ("GET", "/v9/projects/{idOrName}/custom-environments", "listCustomEnvironments", list_custom_environments, False),
    (
        "GET", "/v9/projects/{idOrName}/custom-environments/{environmentSlugOrId}", "getCustomEnvironment",
        get_custom_environment, False,
    ),
    ("GET", "/v2/deployments/{id}/aliases", "listDeploymentAliases", list_deployment_aliases, False),
    ("POST", "/v2/deployments/{id}/aliases", "assignAlias", assign_alias, True),
    ("GET", "/v4/aliases/{idOrAlias}", "getAlias", get_alias, False),
    ("GET", "/v10/projects/{idOrName}/env", "filterProjectEnvs", list_env, False),
    ("POST", "/v10/projects/{idOrName}/env", "createProjectEnv", create_env, True),
    ("GET", "/v1/projects/{idOrName}/env/{id}", "getProjectEnv", get_env, False),
    ("PATCH", "/v9/projects/{idOrName}/env/{id}", "editProjectEnv", edit_env, True),
    ("DELETE", "/v9/projects/{idOrName}/env/{id}", "removeProjectEnv", remove_env, False),
]


# -- what every request goes through ---------------------------------------------------------------------


class RateLimiter:
    """Fixed windows per (token, operation), like Vercel's per-endpoint limits."""

    def __init__(self, limit: int, window_s: float, clock: Clock) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}

    def take(self, key: tuple[str, str]) -> tuple[bool, dict[str, str], int]:
        """Count one request: (allowed, X-RateLimit-* headers, seconds until the window resets)."""
        now = self.clock()
        start, used = self._windows.get(key, (now, 0))
        if now >= start + self.window_s:
            start, used = now, 0
        allowed = used < self.limit
        used += allowed
        self._windows[key] = (start, used)
        reset = start + self.window_s
        return allowed, self.headers(self.limit - used, reset), max(1, math.ceil(reset - now))

    def headers(self, remaining: int | None = None, reset: float | None = None) -> dict[str, str]:
        reset = self.clock() + self.window_s if reset is None else reset
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limit if remaining is None else remaining),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }


def _operation(operation_id: str, handler: Handler, takes_body: bool):
    async def endpoint(request: Request) -> Response:
        state: State = request.app.state.vercel
        config = state.config
        state.count_request(operation_id)
        if config.slow_response_s:
            await asyncio.sleep(config.slow_response_s)
        try:
            if state.chance(config.transient_error_rate):  # before anything else: nothing happens
                return _transient_fault(state)
            team, token = _authenticate(request, state)
            allowed, headers, retry_after = request.app.state.limiter.take((token, operation_id))
            request.state.ratelimit = headers
            if not allowed:
                state.count_fault("rateLimited")
                reset = int(headers["X-RateLimit-Reset"])
                error = ApiError(
                    429, "rate_limited", f"The rate limit of {config.rate_limit} exceeded for '{operation_id}'. "
                    f"Try again in {retry_after} seconds",
                    limit={"remaining": 0, "reset": reset, "resetMs": reset * 1000, "total": config.rate_limit},
                )
                return _error(error, {"Retry-After": str(retry_after)})
            body = await _json_body(request) if takes_body else None
            result = handler(Call(state, team, request, body))
            return await result if asyncio.iscoroutine(result) else result
        except ApiError as error:
            return _error(error)
        except Exception:  # answer in Vercel's shape (with the rate-limit headers) and keep serving
            log.exception("sandbox Vercel emulator: %s failed", operation_id)
            return _error(ApiError(500, "internal_server_error", "An unexpected internal error occurred"))

    endpoint.__name__ = operation_id
    return endpoint


def _transient_fault(state: State) -> Response:
    status = state.choice(sorted(TRANSIENT_FAULTS))
    state.count_fault(f"transient{status}")
    code, message = TRANSIENT_FAULTS[status]
    headers = {"Retry-After": str(state.config.retry_after_s)} if status in (429, 503) else None
    return _error(ApiError(status, code, message), headers)


def _authenticate(request: Request, state: State) -> tuple[str, str]:
    """The caller's (team, token): a known bearer token, and teamId/slug, when given, naming its team."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "The request is missing an authentication token", missingToken=True)
    team = state.team_of_token(token)
    if team is None:
        raise ApiError(403, "forbidden", "Not authorized", invalidToken=True)
    team_id, slug = request.query_params.get("teamId"), request.query_params.get("slug")
    if (team_id is not None and team_id != team) or (slug is not None and slug != wire.team_slug(team)):
        raise ApiError(403, "forbidden", "You don't have permission to access this team")
    return team, token


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise wire.bad_request("Invalid request: the body is not valid JSON") from None


async def _sandbox_state(request: Request) -> Response:
    return _json(request.app.state.vercel.snapshot())


async def _not_found(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return _error(ApiError(405, "method_unknown", f"This endpoint only responds to {allowed}"), {"Allow": allowed})
    return _error(ApiError(404, "not_found", f"The requested path was not found: {request.url.path}"))


class RateLimitHeaders:
    """Adds X-RateLimit-* to every response: the operation's own counts when it was reached, else a full window."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                values = scope.get("state", {}).get("ratelimit") or self.limiter.headers()
                for name, value in values.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(config: EmulatorConfig | None = None, *, clock: Clock = time.time) -> Starlette:
    """The emulator as an ASGI app; `app.state.vercel` is its `State`."""
    config = config or EmulatorConfig()
    state = State(config, clock=clock)
    limiter = RateLimiter(config.rate_limit, config.rate_limit_window_s, clock)
    routes = [
        Route(path, _operation(operation_id, handler, takes_body), methods=[method], name=operation_id)
        for method, path, operation_id, handler, takes_body in OPERATIONS
    ]
    routes.append(Route("/_sandbox/state", _sandbox_state, methods=["GET"]))
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    app.state.vercel = state
    app.state.limiter = limiter
    app.add_middleware(RateLimitHeaders, limiter=limiter)
    return app
