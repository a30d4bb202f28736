"""Log analysis: collection, the index, search, error patterns, anomalies; declared for the registry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mcp.types import ToolAnnotations
from pydantic import Field

from ops_agent.registry import EmptyInput, Intent, ToolContext, ToolInput, ToolSpec, mentioned
from ops_agent.tools.logs.index.store import LogStore
from ops_agent.tools.logs.ingest.collector import LogCollector
from ops_agent.tools.logs.ingest.parse import parse_line
from ops_agent.tools.logs.ingest.vercel_logs import VercelLogPuller
from ops_agent.tools.logs.log_analysis_tool import LogAnalysisTool
from ops_agent.tools.logs.models import (
    AnomalyReport,
    IngestReport,
    LogSearchResult,
    LogStats,
    PatternReport,
)
from ops_agent.tools.logs.record import SEVERITIES, LogRecord

__all__ = [
    "LogAnalysisTool",
    "LogCollector",
    "LogRecord",
    "LogStore",
    "VercelLogPuller",
    "log_specs",
    "parse_line",
]

_SERVICE = Field(None, min_length=1, max_length=128, description="Only this service (as the records name it).")
_SEVERITY_HELP = f"A threshold, one of {', '.join(SEVERITIES)}: 'error' includes 'critical'."


class SearchLogsInput(ToolInput):
    query: str = Field(
        "", max_length=2000,
        description='Terms, "phrases", prefix*, field:value (service, host, severity, any attribute such as '
        "status:>=500), NOT / -term, OR, parentheses. Empty: every record in the window.",
    )
    time_range: str = Field("1h", max_length=80, description="15m, 1h, 24h, 7d … ending now; or ISO START..END; or all.")
    severity: str | None = Field(None, max_length=16, description=_SEVERITY_HELP)
    service: str | None = _SERVICE
    limit: int = Field(100, ge=1, le=1000, description="Records returned (the total counts them all).")


class AnalyzePatternsInput(ToolInput):
    time_range: str = Field("24h", max_length=80, description="The window analysed, e.g. 1h, 24h, 7d.")
    severity: str = Field("error", max_length=16, description=_SEVERITY_HELP)
    service: str | None = _SERVICE
    limit: int = Field(20, ge=1, le=200, description="Patterns returned, most frequent first.")


class DetectAnomaliesInput(ToolInput):
    window: str = Field("15m", max_length=20, description="The recent window judged, e.g. 5m, 15m, 1h.")
    baseline_windows: int = Field(12, ge=3, le=200, description="Windows of the same length before it, as baseline.")
    service: str | None = _SERVICE
    session_field: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z_][\w.-]*$",
        description="An attribute naming a session (request_id, trace_id, block_id): also judge each session's "
        "sequence of templates against the baseline's sessions.",
    )


class IngestLogsInput(ToolInput):
    lines: list[str] = Field(
        min_length=1, max_length=10_000,
        description="Raw lines (JSON, logfmt, syslog, access log or plain text; parsed and redacted).",
    )
    service: str = Field("", max_length=128, description="Service for lines that name none.")
    host: str = Field("", max_length=256, description="Host for lines that name none.")


class CollectVercelLogsInput(ToolInput):
    deployment: str | None = Field(
        None, min_length=1, max_length=256, description="Deployment id or URL; omit for the project's production one."
    )
    project: str | None = Field(None, min_length=1, max_length=100, description="Project (default: the configured one).")


# --- the offline planner's reading of everyday phrasings ---------------------------------------------------

_UNITS = {"s": "s", "sec": "s", "second": "s", "m": "m", "min": "m", "minute": "m", "h": "h", "hr": "h",
          "hour": "h", "d": "d", "day": "d", "w": "w", "week": "w"}
_SPAN = re.compile(
    r"\b(?:in\s+|over\s+|during\s+|from\s+|for\s+)?(?:the\s+)?(?:last|past|previous|recent)\s+"
    r"(?:(\d+)\s*|an?\s+|one\s+)?(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)\b",
    re.I,
)
_SHORT_SPAN = re.compile(r"\b(\d+)\s*(s|m|h|d|w)\b", re.I)
_TODAY = re.compile(r"\b(today|since\s+yesterday)\b", re.I)
_SEVERITY_WORDS = [
    ("critical", re.compile(r"\b(critical|fatal|crash(es|ed)?)\b", re.I)),
    ("error", re.compile(r"\b(errors?|failures?|exceptions?|failed)\b", re.I)),
    ("warning", re.compile(r"\bwarn(ings?)?\b", re.I)),
]
_QUOTED = re.compile(r'"([^"]+)"|\'([^\']+)\'')
_ABOUT = re.compile(
    r"\b(?:for|containing|contain|matching|match|mentioning|about|with|grep(?:\s+logs?)?\s+for|grep)\s+"
    r"(?!the\s+(?:last|past)\b)([\w./:@*-]+(?:\s+[\w./:@*-]+)?)",
    re.I,
)
_NAMED_SERVICE = re.compile(r"\b(?:from|of|for|in)\s+(?:the\s+)?([a-z0-9][\w.-]*)\s+(?:service|app|api)\b", re.I)
_NOT_QUERY = re.compile(
    r"^(?:the|a|an|all|any|logs?|errors?|warnings?|lines?|entries|records|messages|problems|issues|"
    r"last|past|recent|service|services|app|api)$",
    re.I,
)


def time_phrase(clause: str) -> str | None:
    """"past hour" → 1h, "last 15 minutes" → 15m, "today" → 24h; None when the clause names no span."""
    if match := _SPAN.search(clause):
        return f"{match.group(1) or 1}{_UNITS[match.group(2).lower().rstrip('s') or 's']}"
    if _TODAY.search(clause):
        return "24h"
    if match := _SHORT_SPAN.search(clause):
        return f"{match.group(1)}{match.group(2).lower()}"
    return None


def _service(clause: str, facts: Mapping[str, Any]) -> str | None:
    names = mentioned(clause, facts.get("services", ()))
    if names:
        return names[0]
    match = _NAMED_SERVICE.search(clause)
    return match.group(1) if match else None


def _severity(clause: str) -> str | None:
    return next((level for level, pattern in _SEVERITY_WORDS if pattern.search(clause)), None)


def _search_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    arguments: dict[str, Any] = {"time_range": time_phrase(clause) or "1h"}
    if quoted := _QUOTED.search(clause):
        arguments["query"] = quoted.group(1) or quoted.group(2)
        if " " in arguments["query"]:
            arguments["query"] = f'"{arguments["query"]}"'
    elif (about := _ABOUT.search(clause)) and not _NOT_QUERY.match(about.group(1).split()[0]):
        words = [w for w in about.group(1).split() if not _NOT_QUERY.match(w) and w.lower() not in ("in", "from")]
        if words:
            arguments["query"] = " ".join(words)
    if severity := _severity(clause.replace(arguments.get("query", ""), "")):
        arguments["severity"] = severity
    if service := _service(clause, facts):
        arguments["service"] = service
    return [arguments]


def _patterns_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    arguments: dict[str, Any] = {"time_range": time_phrase(clause) or "24h"}
    if _severity(clause) == "warning":
        arguments["severity"] = "warning"
    if service := _service(clause, facts):
        arguments["service"] = service
    return [arguments]


def _anomaly_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    arguments: dict[str, Any] = {"window": time_phrase(clause) or ("1h" if _ROOT_CAUSE.search(clause) else "15m")}
    if service := _service(clause, facts):
        arguments["service"] = service
    return [arguments]


def _vercel_logs_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    arguments: dict[str, Any] = {}
    if deployment := re.search(r"\bdpl_[A-Za-z0-9]+\b", clause):
        arguments["deployment"] = deployment.group(0)
    if projects := mentioned(clause, facts.get("projects", ())):
        arguments["project"] = projects[0]
    return [arguments]


_ROOT_CAUSE = re.compile(r"\broot[\s-]?causes?\b|\bwhy\b.*\b(fail|failing|down|broken|erroring|slow)", re.I)


def _search_line(result: LogSearchResult) -> str:
    if not result.total:
        return f"no log records match {result.query or 'the filters'} in the window"
    newest = result.records[0]
    return (
        f"{result.total} matching records; newest {newest.time} {newest.severity} {newest.service}: "
        f"{newest.message[:120]}"
    )


def _patterns_line(report: PatternReport) -> str:
    if not report.patterns:
        return f"no {report.severity}-or-worse lines in the window"
    top = report.patterns[0]
    new = sum(p.trend == "new" for p in report.patterns)
    return (
        f"{len(report.patterns)} patterns in {report.lines} {report.severity}+ lines ({new} new); top: "
        f"{top.template[:100]} ×{top.count} ({top.trend})"
    )


def _anomalies_line(report: AnomalyReport) -> str:
    if not report.anomalies:
        return report.note or "no anomalies: log volume and patterns look normal"
    return f"{len(report.anomalies)} anomalies; worst: {report.anomalies[0].explanation}"


def log_specs(tool: LogAnalysisTool, puller: VercelLogPuller, default_project: str | None) -> list[ToolSpec]:
    async def search_logs(args: SearchLogsInput, ctx: ToolContext) -> LogSearchResult:
        return await tool.search_logs(args.query, args.time_range, args.severity, args.service, args.limit)

    async def analyze_error_patterns(args: AnalyzePatternsInput, ctx: ToolContext) -> PatternReport:
        return await tool.analyze_error_patterns(args.time_range, args.severity, args.service, args.limit)

    async def detect_anomalies(args: DetectAnomaliesInput, ctx: ToolContext) -> AnomalyReport:
        return await tool.detect_anomalies(args.window, args.baseline_windows, args.service, args.session_field)

    async def ingest_logs(args: IngestLogsInput, ctx: ToolContext) -> IngestReport:
        accepted = await tool.collector.write_lines(args.lines, service=args.service, host=args.host)
        return IngestReport(accepted=accepted, source="ingest_logs")

    async def collect_vercel_logs(args: CollectVercelLogsInput, ctx: ToolContext) -> IngestReport:
        deployment = args.deployment or await puller.production_deployment(args.project or default_project)
        accepted = await tool.collector.write(await puller.pull(deployment))
        return IngestReport(accepted=accepted, source=f"vercel:{deployment}")

    async def log_stats(args: EmptyInput, ctx: ToolContext) -> LogStats:
        return await tool.stats()

    read_local = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
    record = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
    return [
        ToolSpec(
            name="search_logs",
            title="Search logs",
            description=(
                "Search collected logs: terms, phrases, field:value, NOT, OR; a time range; severity as a "
                "threshold; one service. Newest first, with the total count and a histogram over time."
            ),
            input_model=SearchLogsInput, output_model=LogSearchResult, handler=search_logs,
            actions=("read",), annotations=read_local, timeout_s=30, summarize=_search_line,
            intents=(
                Intent(
                    patterns=(
                        r"\b(search|grep|find|show|list|get|look\s+(at|for)|filter)\b.*\blogs?\b",
                        r"\blogs?\b.*\b(for|containing|matching|mentioning|with)\b",
                        r"\b(show|list|find|get)\b.*\b(errors?|warnings?|exceptions?)\b.*\b(from|in|of)\b",
                        r"\bwhat\s+(did|does)\s+\S+\s+log\b",
                    ),
                    arguments=_search_arguments,
                ),
            ),
        ),
        ToolSpec(
            name="analyze_error_patterns",
            title="Error patterns",
            description=(
                "Group the error lines of a window into templates (ids, numbers, IPs, paths masked): count, "
                "share, first/last seen, example, services, trend against the window before (new, rising, "
                "falling), known failure signatures and recommendations."
            ),
            input_model=AnalyzePatternsInput, output_model=PatternReport, handler=analyze_error_patterns,
            actions=("read",), annotations=read_local, timeout_s=60, summarize=_patterns_line,
            intents=(
                Intent(
                    patterns=(
                        r"\b(analy[sz]e|summari[sz]e|group|cluster|triage)\b.*\b(errors?|logs?|failures?|exceptions?)\b",
                        r"\b(error|failure|exception|log)\s+(patterns?|templates?|clusters?|summary|trends?)\b",
                        r"\b(most\s+)?(common|frequent|top|recurring|repeated)\s+(errors?|failures?|exceptions?)\b",
                        r"\bwhat\s+(errors?|went\s+wrong|is\s+failing)\b",
                    ),
                    arguments=_patterns_arguments,
                ),
            ),
        ),
        ToolSpec(
            name="detect_anomalies",
            title="Log anomalies",
            description=(
                "Judge the recent window of logs against its baseline: volume spikes and drops per service "
                "and severity, error templates never seen before, templates whose rate jumped; each with a "
                "score, an explanation, the deployments that just preceded it, and recommendations."
            ),
            input_model=DetectAnomaliesInput, output_model=AnomalyReport, handler=detect_anomalies,
            actions=("read",), annotations=read_local, timeout_s=60, summarize=_anomalies_line,
            intents=(
                Intent(
                    patterns=(
                        r"\banomal(y|ies|ous)\b",
                        r"\b(unusual|abnormal|strange|odd|weird|suspicious)\b",
                        r"\b(spikes?|surges?|bursts?)\b.*\b(logs?|errors?)\b|\b(errors?|logs?)\b.*\b(spikes?|surges?)\b",
                        _ROOT_CAUSE.pattern,
                    ),
                    arguments=_anomaly_arguments,
                ),
            ),
        ),
        ToolSpec(
            name="ingest_logs",
            title="Ingest log lines",
            description=(
                "Add raw log lines to the index (JSON, logfmt, syslog, Apache/Nginx access logs, "
                "'timestamp level message' or plain text). Secrets are redacted before storage."
            ),
            input_model=IngestLogsInput, output_model=IngestReport, handler=ingest_logs,
            actions=("log:write",), annotations=record, timeout_s=60,
            planner_visible=False,  # data comes from systems, not from plans
            summarize=lambda r: f"stored {r.accepted} lines",
        ),
        ToolSpec(
            name="collect_vercel_logs",
            title="Collect Vercel logs",
            description=(
                "Pull a deployment's build log and runtime logs from Vercel into the index (only lines not "
                "collected before); default: the project's current production deployment."
            ),
            input_model=CollectVercelLogsInput, output_model=IngestReport, handler=collect_vercel_logs,
            actions=("log:write",),
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
            ),
            timeout_s=120,
            summarize=lambda r: f"stored {r.accepted} lines from {r.source}",
            intents=(
                Intent(
                    patterns=(
                        r"\b(pull|collect|fetch|import|download|ingest|get)\b.*\b(vercel|build|runtime|deployment)\s+logs?\b",
                    ),
                    arguments=_vercel_logs_arguments,
                ),
            ),
        ),
        ToolSpec(
            name="log_stats",
            title="Log index",
            description="How many records the log index holds, the oldest and newest, and which database.",
            input_model=EmptyInput, output_model=LogStats, handler=log_stats,
            actions=("read",), annotations=read_local, timeout_s=30,
            summarize=lambda s: f"{s.records} records in {s.backend}, {s.oldest or '-'} .. {s.newest or '-'}",
            intents=(Intent(patterns=(r"\blog\s+(index|store|stats|statistics|volume)\b", r"\bhow\s+many\s+log")),),
        ),
    ]

