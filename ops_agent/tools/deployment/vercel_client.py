"""A small async client for the Vercel REST API subset in ../shared/contracts/VERCEL.md.

It speaks to whatever base URL it is given (api.vercel.com, or the sandbox emulator) with a bearer token
and optional `teamId` scoping, returns the JSON bodies as dicts (Vercel adds keys without a new version,
so callers read only what they need), and raises `VercelError` (an `UpstreamError`) for every failure.

Retries (tenacity): 429 and connection failures before anything was sent are always retried, honouring
`Retry-After`; 5xx and timeouts only for requests that are safe to repeat (`idempotent=True`). Creating a
deployment is not: its caller reconciles through the idempotency key instead (see DeploymentTool.deploy).

Contract quirks handled here: the list endpoint exists as v6 and v7 (`list_version`); instant rollback is
`/v1/projects/.../rollback/...` in the SDK and `/v9/...` in the CLI (we use v1); timestamps are epoch ms.
"""

from __future__ import annotations

import json
import random
from urllib.parse import quote
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from ops_agent.errors import UpstreamError, UpstreamTimeout

__all__ = ["VercelClient", "VercelError"]

SERVICE = "vercel"


class VercelError(UpstreamError):
    """A Vercel API failure: HTTP status, Vercel's error code, and whether repeating may succeed."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(SERVICE, message, status_code=status_code, retryable=retryable)
        self.code = code
        self.retry_after_s = retry_after_s


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


class VercelClient:
    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        base_url: str,
        token: str,
        team_id: str | None = None,
        max_attempts: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_retry_after_s: float = 60.0,
        list_version: int = 6,
        timeout_s: float = 30.0,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.team_id = team_id
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.list_version = list_version
        self.timeout_s = timeout_s

    # -- deployments ----------------------------------------------------------------------------------

    async def create_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", "/v13/deployments", json=body, idempotent=False)

    async def get_deployment(self, id_or_url: str) -> dict[str, Any]:
        return await self._request("GET", f"/v13/deployments/{_segment(id_or_url)}")

    async def list_deployments(self, **filters: Any) -> dict[str, Any]:
        """One page: `{"deployments": [...], "pagination": {"count", "next", "prev"}}`."""
        params = {key: value for key, value in filters.items() if value is not None}
        return await self._request("GET", f"/v{self.list_version}/deployments", params=params)

    async def iter_deployments(self, *, max_items: int = 1000, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        """Every deployment matching `filters`, newest first, following `pagination.next` with `until`."""
        seen = 0
        until = filters.pop("until", None)
        while True:
            page = await self.list_deployments(**filters, until=until)
            for item in page.get("deployments", []):
                yield item
                seen += 1
                if seen >= max_items:
                    return
            until = (page.get("pagination") or {}).get("next")
            if until is None:
                return

    async def cancel_deployment(self, deployment_id: str) -> dict[str, Any]:
        return await self._request("PATCH", f"/v12/deployments/{_segment(deployment_id)}/cancel")

    async def get_deployment_events(self, id_or_url: str, *, since_ms: int | None = None) -> list[dict[str, Any]]:
        params = {"direction": "forward", "limit": -1, "since": since_ms}
        body = await self._request("GET", f"/v3/deployments/{_segment(id_or_url)}/events", params=params)
        return body if isinstance(body, list) else []

    async def get_runtime_logs(self, project_id: str, deployment_id: str) -> list[dict[str, Any]]:
        """What the deployment's functions logged (an application/stream+json body, one entry a line)."""
        path = f"/v1/projects/{_segment(project_id)}/deployments/{_segment(deployment_id)}/runtime-logs"
        body = await self._request("GET", path)
        return body if isinstance(body, list) else [body] if isinstance(body, dict) else []

    async def promote(self, project_id: str, deployment_id: str) -> None:
        await self._request("POST", f"/v10/projects/{_segment(project_id)}/promote/{_segment(deployment_id)}")

    async def rollback(self, project_id: str, deployment_id: str, *, description: str | None = None) -> None:
        path = f"/v1/projects/{_segment(project_id)}/rollback/{_segment(deployment_id)}"
        await self._request("POST", path, params={"description": description})

    # -- projects, environments, aliases ----------------------------------------------------------------

    async def get_project(self, id_or_name: str) -> dict[str, Any]:
        return await self._request("GET", f"/v9/projects/{_segment(id_or_name)}")

    async def get_custom_environment(self, project: str, slug_or_id: str) -> dict[str, Any]:
        return await self._request(
            "GET", f"/v9/projects/{_segment(project)}/custom-environments/{_segment(slug_or_id)}"
        )

    async def list_env(self, project: str) -> list[dict[str, Any]]:
        """Environment variables of a project, values not decrypted."""
        body = await self._request("GET", f"/v10/projects/{_segment(project)}/env")
        if isinstance(body, dict) and "envs" in body:
            return list(body["envs"])
        return [body] if isinstance(body, dict) else []

    async def create_env(self, project: str, variable: dict[str, Any], *, upsert: bool = True) -> dict[str, Any]:
        params = {"upsert": "true" if upsert else None}
        return await self._request(
            "POST", f"/v10/projects/{_segment(project)}/env", params=params, json=variable, idempotent=upsert
        )

    async def edit_env(self, project: str, env_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return await self._request("PATCH", f"/v9/projects/{_segment(project)}/env/{_segment(env_id)}", json=changes)

    async def delete_env(self, project: str, env_id: str) -> dict[str, Any]:
        return await self._request("DELETE", f"/v9/projects/{_segment(project)}/env/{_segment(env_id)}")

    async def list_aliases(self, deployment_id: str) -> list[dict[str, Any]]:
        body = await self._request("GET", f"/v2/deployments/{_segment(deployment_id)}/aliases")
        return list(body.get("aliases", [])) if isinstance(body, dict) else []

    async def assign_alias(self, deployment_id: str, alias: str) -> dict[str, Any]:
        return await self._request("POST", f"/v2/deployments/{_segment(deployment_id)}/aliases", json={"alias": alias})

    # -- transport -------------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> Any:
        query = {key: value for key, value in (params or {}).items() if value is not None}
        if self.team_id:
            query["teamId"] = self.team_id
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: self._should_retry(exc, idempotent)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send(method, path, query, json)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _send(self, method: str, path: str, query: dict[str, Any], body: Any) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            response = await self.http.request(
                method, self.base_url + path, params=query, json=body, headers=headers, timeout=self.timeout_s
            )
        except httpx2.ConnectError as exc:
            raise _NotSent(f"cannot connect to {self.base_url}") from exc
        except httpx2.TimeoutException as exc:
            raise UpstreamTimeout(SERVICE, f"{method} {path} timed out") from exc
        except httpx2.HTTPError as exc:
            raise VercelError(f"{method} {path} failed: {type(exc).__name__}", retryable=True) from exc
        if response.status_code >= 400:
            raise _error_from(response, method, path)
        if not response.content:
            return None
        try:
            if response.headers.get("content-type", "").startswith("application/stream+json"):
                return [json.loads(line) for line in response.text.splitlines() if line.strip()]
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise VercelError(
                f"{method} {path} answered HTTP {response.status_code} with a body that is not JSON",
                status_code=response.status_code,
            ) from None

    def _should_retry(self, exc: BaseException, idempotent: bool) -> bool:
        if isinstance(exc, _NotSent):
            return True
        if isinstance(exc, VercelError) and exc.status_code == 429:  # refused unprocessed: safe to repeat
            return exc.retry_after_s is None or exc.retry_after_s <= self.max_retry_after_s
        return idempotent and isinstance(exc, UpstreamError) and exc.retryable

    def _wait(self, retry_state: Any) -> float:
        """Retry-After when the server gave one, else exponential backoff with full jitter."""
        exc = retry_state.outcome.exception()
        if isinstance(exc, VercelError) and exc.retry_after_s is not None:
            return exc.retry_after_s
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (retry_state.attempt_number - 1))
        return random.uniform(0, ceiling)


class _NotSent(VercelError):
    """The connection failed before the request left: always safe to repeat."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


def _error_from(response: httpx2.Response, method: str, path: str) -> VercelError:
    code, message = None, None
    try:
        error = response.json().get("error") or {}
        code, message = error.get("code"), error.get("message")
    except (ValueError, AttributeError):
        pass
    status = response.status_code
    retry_after = _retry_after_s(response) if _retryable_status(status) else None
    text = f"{method} {path}: HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    return VercelError(text, status_code=status, code=code, retryable=_retryable_status(status), retry_after_s=retry_after)


def _retry_after_s(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _segment(value: str) -> str:
    """A path segment, so an id can never change the path it is put in."""
    return quote(value, safe="")
