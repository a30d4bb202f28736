"""The Sentry tools, declared for the registry. Registered whether or not Sentry is configured, so the tool
list is the same everywhere; unconfigured, each answers how to configure it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.types import ToolAnnotations
from pydantic import Field

from ops_agent.registry import Intent, ToolContext, ToolInput, ToolSpec, mentioned
from ops_agent.tools.logs import time_phrase
from ops_agent.tools.sentry._source import (
    SentryCollectReport,
    SentryIssueList,
    SentrySource,
)

__all__ = ["sentry_specs"]

_SLUG = r"^[A-Za-z0-9_.-]+$"


class CollectSentryInput(ToolInput):
    project: str | None = Field(
        None, min_length=1, max_length=100, pattern=_SLUG,
        description="Sentry project slug; omit for every configured project (sentry.projects).",
    )
    time_range: str = Field("1h", max_length=80, description="Issues with events in the last 15m, 1h, 24h, 7d …; or ISO START..END.")


class ListSentryInput(CollectSentryInput):
    limit: int = Field(25, ge=1, le=500, description="Issues returned, most recently seen first.")


_PULL = r"\b(pull|collect|import|sync|ingest|fetch)\b"


def _arguments(projects: list[str]):
    def read(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
        arguments: dict[str, Any] = {"time_range": time_phrase(clause) or "1h"}
        if named := mentioned(clause, projects):
            arguments["project"] = named[0]
        return [arguments]

    return read


def _list_line(result: SentryIssueList) -> str:
    if not result.issues:
        return "no Sentry issues with events in the window"
    top = result.issues[0]
    more = "+" if result.truncated else ""
    return f"{len(result.issues)}{more} Sentry issues; latest {top.short_id or top.id} ({top.project}): {top.title[:100]}"


def sentry_specs(source: SentrySource) -> list[ToolSpec]:
    async def list_sentry_issues(args: ListSentryInput, ctx: ToolContext) -> SentryIssueList:
        return await source.list_issues(args.project, args.time_range, args.limit)

    async def collect_sentry_issues(args: CollectSentryInput, ctx: ToolContext) -> SentryCollectReport:
        return await source.collect(args.project, args.time_range)

    arguments = _arguments(list(source.settings.projects))
    return [
        ToolSpec(
            name="list_sentry_issues",
            title="Sentry issues",
            description=(
                "List a Sentry project's issues with events in a time range, most recently seen first: short id, "
                "title, culprit, level, status, event count, users, first/last seen, link. Reads Sentry directly."
            ),
            input_model=ListSentryInput, output_model=SentryIssueList, handler=list_sentry_issues,
            actions=("read",),
            annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True),
            timeout_s=60, summarize=_list_line,
            intents=(
                Intent(
                    patterns=(rf"^(?!.*(\blogs?\b|{_PULL})).*\bsentry\b.*$",),
                    arguments=arguments,
                ),
            ),
        ),
        ToolSpec(
            name="collect_sentry_issues",
            title="Collect Sentry issues",
            description=(
                "Pull Sentry issues with events in a time range (and the latest event of each changed one) into the "
                "log index, one record per issue activity, service = project slug: then search_logs, "
                "analyze_error_patterns and log_count(service=<project>) see them. Re-pulling adds only what changed."
            ),
            input_model=CollectSentryInput, output_model=SentryCollectReport, handler=collect_sentry_issues,
            actions=("log:write",),
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
            ),
            timeout_s=120,
            summarize=lambda r: f"stored {r.accepted} records from {r.issues} Sentry issues ({r.new_issues} new) via {r.source}",
            intents=(Intent(patterns=(rf"^.*{_PULL}.*\bsentry\b.*$",), arguments=arguments),),
        ),
    ]

