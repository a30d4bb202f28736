"""Sentry as a log source: pull issues (and latest events) over a window into the log index, list them, poll.

Projects are named by slug (what people and configs say), while the issues endpoint filters by project id.
The first pull reads the organization's issues and keeps those of the slugs asked for, learning each slug's
id from the answers (`issue.project{id,slug}`); later pulls send `project=<id>`. No project endpoint is
needed, and no project asked for: every project the token can read.

Each pulled issue becomes one record keyed by its lastSeen, so an unchanged issue is stored once however
often it is pulled; only issues whose record is new cost a request for their latest event (at most
`max_events` per pull), and after one failed event request the rest of the pull goes without.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx2
from pydantic import BaseModel, Field

from ops_agent.config import SentrySettings
from ops_agent.errors import OpsAgentError, ToolFailed, ToolRetry, UpstreamError
from ops_agent.tools.logs.index.query import parse_time_range
from ops_agent.tools.logs.index.store import LogStore
from ops_agent.tools.logs.ingest.collector import LogCollector
from ops_agent.tools.logs.record import LogRecord
from ops_agent.tools.sentry._client import SentryClient
from ops_agent.tools.sentry._records import issue_record, parse_time

__all__ = ["NOT_CONFIGURED", "SentryCollectReport", "SentryIssue", "SentryIssueList", "SentrySource"]

log = logging.getLogger("ops_agent.sentry")

NOT_CONFIGURED = (
    "sentry is not configured: set SENTRY_AUTH_TOKEN and sentry.organization (SENTRY_ORG), see docs/SENTRY.md"
)


class SentryIssue(BaseModel):
    id: str
    short_id: str | None = None
    title: str
    culprit: str | None = None
    level: str | None = None
    status: str | None = None
    project: str
    count: int | None = Field(None, description="Events in the issue's lifetime.")
    user_count: int | None = None
    first_seen: str | None = None
    last_seen: str | None = None
    permalink: str | None = None


class SentryIssueList(BaseModel):
    issues: list[SentryIssue]
    window: str = Field(description="The time range read, as ISO START..END.")
    truncated: bool = Field(description="More issues matched than were read (the limit or sentry.max_pages).")


class SentryCollectReport(BaseModel):
    accepted: int = Field(description="Records stored now.")
    duplicates: int = Field(description="Records already stored by an earlier pull or webhook.")
    issues: int = Field(description="Issues with activity in the window.")
    new_issues: int = Field(description="Of those, first seen in the window.")
    events: int = Field(description="Latest events fetched to enrich the new records.")
    source: str


class SentrySource:
    def __init__(
        self,
        settings: SentrySettings,
        http: httpx2.AsyncClient,
        store: LogStore,
        collector: LogCollector,
        *,
        client: SentryClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.collector = collector
        self._clock = clock
        if client is None and settings.auth_token is not None and settings.organization:
            client = SentryClient(
                http, base_url=settings.api_url, token=settings.auth_token.get_secret_value(),
                organization=settings.organization, max_attempts=settings.max_attempts,
                max_retry_after_s=settings.max_retry_after_s, timeout_s=settings.timeout_s,
            )
        self._client = client
        self._project_ids: dict[str, str] = {}

    @property
    def configured(self) -> bool:
        return self._client is not None

    def client(self) -> SentryClient:
        if self._client is None:
            raise ToolFailed(NOT_CONFIGURED)
        return self._client

    # -- reading --------------------------------------------------------------------------------------

    async def list_issues(self, project: str | None, time_range: str, limit: int) -> SentryIssueList:
        start, end = self._window(time_range)
        issues, truncated = [], False
        async for issue in self._issues(project, start, end):
            if len(issues) == limit:
                truncated = True
                break
            try:
                issues.append(_issue_model(issue))
            except ToolRetry as exc:
                log.warning("sentry: skipped an issue: %s", exc.public_message)
        return SentryIssueList(issues=issues, window=f"{_iso(start) or ''}..{_iso(end)}", truncated=truncated)

    async def collect(self, project: str | None, time_range: str) -> SentryCollectReport:
        start, end = self._window(time_range)
        return await self.collect_window(project, start, end)

    async def collect_window(self, project: str | None, start: float | None, end: float) -> SentryCollectReport:
        client = self.client()
        issues = [issue async for issue in self._issues(project, start, end)]
        records: list[tuple[dict[str, Any], LogRecord]] = []
        for issue in issues:
            try:
                records.append((issue, issue_record(issue)))
            except ToolRetry as exc:  # one malformed issue must not cost the others
                log.warning("sentry: skipped an issue: %s", exc.public_message)
        known = await self.store.known_keys([r.key for _, r in records if r.key])
        events = 0
        for index, (issue, record) in enumerate(records):
            if record.key in known or events >= self.settings.max_events:
                continue
            try:
                event = await client.latest_event(str(issue["id"]))
            except UpstreamError as exc:
                log.warning("sentry: latest events not fetched for the rest of this pull: %s", exc.public_message)
                break
            events += 1
            records[index] = (issue, issue_record(issue, event))
        written, duplicates = await self.collector.write_new(record for _, record in records)
        new = sum(1 for issue in issues if (first := parse_time(issue.get("firstSeen"))) and (start is None or first >= start))
        scope = project or ",".join(self.settings.projects) or "*"
        return SentryCollectReport(
            accepted=written, duplicates=duplicates, issues=len(issues), new_issues=new, events=events,
            source=f"sentry:{self.settings.organization}/{scope}",
        )

    async def poll(self, interval_s: float) -> None:
        """Pull the configured projects every `interval_s`, each window from where the last good one began
        (overlap costs nothing: keys), the first one over the last hour."""
        since = self._clock() - max(3600.0, 2 * interval_s)
        while True:
            now = self._clock()
            try:
                report = await self.collect_window(None, since, now)
                since = now - interval_s  # a little overlap: an event reported late still lands
                if report.accepted:
                    log.info("sentry: stored %d records from %d issues", report.accepted, report.issues)
            except OpsAgentError as exc:
                log.warning("sentry poll failed: %s", exc.public_message)
            except Exception:
                log.exception("sentry poll failed")
            await asyncio.sleep(interval_s)

    # -- helpers ---------------------------------------------------------------------------------------

    def _window(self, time_range: str) -> tuple[float | None, float]:
        self.client()  # unconfigured: say so before judging the arguments
        return parse_time_range(time_range, now=self._clock())

    async def _issues(self, project: str | None, start: float | None, end: float):
        slugs = [project] if project else list(self.settings.projects)
        ids = [self._project_ids[s] for s in slugs if s in self._project_ids]
        async for issue in self.client().iter_issues(
            project_ids=ids if slugs and len(ids) == len(slugs) else (),
            start=_iso(start), end=_iso(end) if start is not None else None,
            query=self.settings.query, max_pages=self.settings.max_pages,
        ):
            about = issue.get("project") if isinstance(issue.get("project"), dict) else {}
            slug, pid = about.get("slug"), about.get("id")
            if isinstance(slug, str) and pid is not None:
                self._project_ids[slug] = str(pid)
            if not slugs or slug in slugs:
                yield issue


def _issue_model(issue: dict[str, Any]) -> SentryIssue:
    about = issue.get("project") if isinstance(issue.get("project"), dict) else {}
    record = issue_record(issue)  # the same reading as the records: one place decides titles and counts
    attributes = record.attributes
    return SentryIssue(
        id=attributes["issue_id"], short_id=attributes.get("short_id"), title=record.message,
        culprit=attributes.get("culprit"), level=attributes.get("level"), status=attributes.get("status"),
        project=str(about.get("slug") or record.service), count=attributes.get("count"),
        user_count=attributes.get("user_count"), first_seen=attributes.get("first_seen"),
        last_seen=attributes.get("last_seen"), permalink=attributes.get("permalink"),
    )


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")
