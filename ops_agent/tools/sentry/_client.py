"""A small async client for the Sentry REST API subset in ../shared/contracts/SENTRY.md (read error data).

It reads an organization's issues over a time range (`GET /api/0/organizations/{org}/issues/`, the preferred
endpoint: the per-project one treats `statsPeriod` as a sparkline period, not a filter) and an issue's latest
event, with `Authorization: Bearer <token>`. Bodies are returned as dicts and lists: Sentry adds fields freely,
so callers read only what they need. Every failure is a `SentryError` (an `UpstreamError`) whose text never
holds the token.

Pagination: the `Link` header's `rel="next"` part is followed only while it says `results="true"`, and only
its `cursor` is taken, sent back with our own URL: the token never goes to a host the header names.

Rate limits: a 429 is retried after `Retry-After`, or else until `X-Sentry-Rate-Limit-Reset` (epoch seconds);
a wait longer than `max_retry_after_s` is not made (the error says how long). A success that leaves
`X-Sentry-Rate-Limit-Remaining: 0` makes the next request wait for the reset instead of earning a 429.
5xx, timeouts and lost connections are retried with jittered backoff: every request here is a GET.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx2
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from ops_agent.errors import UpstreamError, UpstreamTimeout

__all__ = ["PAGE_SIZE", "SentryClient", "SentryError", "next_cursor"]

SERVICE = "sentry"
PAGE_SIZE = 100  # the API's maximum
_CURSOR = re.compile(r'cursor="([^"]*)"')


class SentryError(UpstreamError):
    """A Sentry API failure: HTTP status, and whether repeating may succeed (and after how long)."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retryable: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(SERVICE, message, status_code=status_code, retryable=retryable)
        self.retry_after_s = retry_after_s


def next_cursor(link: str | None) -> str | None:
    """The cursor of the `rel="next"` part when it has `results="true"` (sentry-mcp's getNextCursor), else None."""
    for part in (link or "").split(","):
        if 'rel="next"' in part and 'results="true"' in part and (match := _CURSOR.search(part)):
            return match.group(1) or None
    return None


class SentryClient:
    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        base_url: str,
        token: str,
        organization: str,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_retry_after_s: float = 120.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/").removesuffix("/api/0")
        self._token = token
        self.organization = organization
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.timeout_s = timeout_s
        self._sleep = sleep  # injected: tests see the waits without spending them
        self._clock = clock
        self._resume_at = 0.0  # the rate-limit window's reset when the last answer left none remaining

    # -- issues and events ------------------------------------------------------------------------------

    async def iter_issues(
        self,
        *,
        project_ids: Sequence[str] = (),
        start: str | None = None,
        end: str | None = None,
        query: str = "is:unresolved",
        sort: str = "date",
        max_pages: int = 10,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[dict[str, Any]]:
        """Issues with events in [start, end] (ISO-8601; both None: Sentry's default window), newest activity
        first, page after page until the Link header says there is no more or `max_pages` were read."""
        params: list[tuple[str, str]] = [("project", str(pid)) for pid in project_ids]
        params += [("query", query), ("sort", sort), ("limit", str(min(page_size, PAGE_SIZE)))]
        if start is not None:
            params += [("start", start), ("end", end or start)]
        path = f"/api/0/organizations/{_segment(self.organization)}/issues/"
        cursor: str | None = None
        for _ in range(max_pages):
            body, headers = await self._get(path, params + ([("cursor", cursor)] if cursor else []))
            if not isinstance(body, list):
                raise SentryError(f"GET {path}: expected a JSON array of issues")
            for issue in body:
                if isinstance(issue, dict):
                    yield issue
            cursor = next_cursor(headers.get("link"))
            if cursor is None or not body:
                return

    async def latest_event(self, issue_id: str) -> dict[str, Any]:
        path = f"/api/0/organizations/{_segment(self.organization)}/issues/{_segment(issue_id)}/events/latest/"
        body, _ = await self._get(path, [])
        if not isinstance(body, dict):
            raise SentryError(f"GET {path}: expected a JSON object")
        return body

    # -- transport ---------------------------------------------------------------------------------------

    async def _get(self, path: str, params: list[tuple[str, str]]) -> tuple[Any, httpx2.Headers]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send(path, params)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _send(self, path: str, params: list[tuple[str, str]]) -> tuple[Any, httpx2.Headers]:
        if (pause := self._resume_at - self._clock()) > 0:
            await self._sleep(min(pause, self.max_retry_after_s))
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        try:
            response = await self.http.get(self.base_url + path, params=params, headers=headers, timeout=self.timeout_s)
        except httpx2.TimeoutException as exc:
            raise UpstreamTimeout(SERVICE, f"GET {path} timed out") from exc
        except httpx2.HTTPError as exc:  # its text may carry the URL, never the header: still, name only the type
            raise SentryError(f"GET {path} failed: {type(exc).__name__}", retryable=True) from exc
        self._note_rate_limit(response.headers)
        if response.status_code >= 400:
            raise self._error_from(response, path)
        try:
            return response.json(), response.headers
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SentryError(
                f"GET {path} answered HTTP {response.status_code} with a body that is not JSON",
                status_code=response.status_code,
            ) from None

    def _note_rate_limit(self, headers: httpx2.Headers) -> None:
        remaining, reset = _number(headers.get("x-sentry-rate-limit-remaining")), _number(headers.get("x-sentry-rate-limit-reset"))
        self._resume_at = reset if remaining is not None and remaining <= 0 and reset is not None else 0.0

    def _error_from(self, response: httpx2.Response, path: str) -> SentryError:
        status = response.status_code
        detail = _detail(response)
        retryable = status == 429 or status >= 500
        wait = self._retry_after_s(response) if status == 429 else None
        text = f"GET {path}: HTTP {status}" + (f": {detail}" if detail else "")
        if status in (401, 403):
            text += " (check sentry.auth_token and its event:read scope)"
        if wait is not None and wait > self.max_retry_after_s:
            text += f"; Sentry asks to wait {wait:.0f}s, more than sentry.max_retry_after_s"
        return SentryError(text, status_code=status, retryable=retryable, retry_after_s=wait)

    def _retry_after_s(self, response: httpx2.Response) -> float | None:
        if (after := _number(response.headers.get("retry-after"))) is not None:
            return max(0.0, after)
        if (reset := _number(response.headers.get("x-sentry-rate-limit-reset"))) is not None:
            return max(0.0, reset - self._clock())
        return None

    def _should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, SentryError) and exc.status_code == 429:
            return exc.retry_after_s is None or exc.retry_after_s <= self.max_retry_after_s
        return isinstance(exc, UpstreamError) and exc.retryable

    def _wait(self, retry_state: Any) -> float:
        """What a 429 asked for, else exponential backoff with full jitter."""
        exc = retry_state.outcome.exception()
        if isinstance(exc, SentryError) and exc.retry_after_s is not None:
            return exc.retry_after_s
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (retry_state.attempt_number - 1))
        return random.uniform(0, ceiling)


def _detail(response: httpx2.Response) -> str | None:
    """Sentry's `{"detail": "..."}`, or a bare JSON string body; anything else is not shown."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    detail = body.get("detail") if isinstance(body, dict) else body
    return detail[:300] if isinstance(detail, str) else None


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # e.g. an HTTP-date Retry-After: fall back to our own backoff


def _segment(value: str) -> str:
    """A path segment, so an id or slug can never change the path it is put in."""
    return quote(value, safe="")
