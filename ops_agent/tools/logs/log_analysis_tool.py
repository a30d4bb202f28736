"""The seed's LogAnalysisTool: search and filter, error patterns, anomalies, with root-cause hints.

It reads one log index (the `LogStore`) that every collector writes to, mines templates at question time
over the window asked about (so patterns always reflect the current masks and data), and turns what it
finds into recommendations from the known-signature file and the deployment history.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ops_agent.errors import ToolRetry
from ops_agent.tools.logs.analysis.anomaly import Anomaly, SessionModel, novel_templates, rate_jumps, volume_anomalies
from ops_agent.tools.logs.analysis.mining import mine_templates
from ops_agent.tools.logs.analysis.rootcause import (
    HINT_WINDOW_S,
    DeploymentEvent,
    Signature,
    deployment_hints,
    load_signatures,
    match_signatures,
)
from ops_agent.tools.logs.index.query import Field, parse_query, parse_severity, parse_time_range
from ops_agent.tools.logs.index.store import LogFilter, LogStore, StoredRecord
from ops_agent.tools.logs.ingest.collector import LogCollector
from ops_agent.tools.logs.log_metrics import LogMetrics
from ops_agent.tools.logs.models import (
    AnomalyFinding,
    AnomalyReport,
    ErrorPattern,
    Histogram,
    LogEntry,
    LogSearchResult,
    LogStats,
    PatternReport,
    SignatureHit,
    TimeWindow,
    iso,
)
from ops_agent.tools.logs.record import severity_rank

__all__ = ["LogAnalysisTool"]

DeploymentSource = Callable[[float], Awaitable[list[DeploymentEvent]]]
MAX_MINED = 50_000  # lines mined per window: enough for every frequent pattern, bounded in time and memory
MIN_SESSIONS = 50  # fewer baseline sessions than this teach a session model nothing reliable
MAX_SESSIONS = 20  # anomalous sessions reported, worst first


class LogAnalysisTool:
    def __init__(
        self,
        store: LogStore,
        collector: LogCollector,
        *,
        signatures: Sequence[Signature] | None = None,
        deployments: DeploymentSource | None = None,
        metrics: LogMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.collector = collector
        self.metrics = metrics
        self.signatures = list(signatures) if signatures is not None else load_signatures()
        self.deployments = deployments
        self.clock = clock

    # -- search ----------------------------------------------------------------------------------------

    async def search_logs(
        self,
        query: str = "",
        time_range: str | None = "1h",
        severity: str | None = None,
        service: str | Sequence[str] | None = None,
        limit: int = 100,
    ) -> LogSearchResult:
        """Records matching `query` in the window, newest first, with the total and a histogram."""
        if not 1 <= limit <= 1000:
            raise ToolRetry(f"limit: {limit} is out of range; give 1 to 1000")
        start, end = parse_time_range(time_range, now=self.clock())
        where = LogFilter(
            end=end,
            start=start,
            query=parse_query(query),
            min_severity=parse_severity(severity) if severity else None,
            services=_services(service),
        )
        page = await self.store.search(where, limit=limit)
        return LogSearchResult(
            query=query,
            window=TimeWindow(start=iso(start if start is not None else page.origin), end=iso(end)),
            total=page.total,
            returned=len(page.records),
            records=[_entry(r) for r in page.records],
            histogram=Histogram(origin=iso(page.origin), bucket_s=page.bucket_s, counts=page.histogram),
        )

    # -- patterns --------------------------------------------------------------------------------------

    async def analyze_error_patterns(
        self,
        time_range: str = "24h",
        severity: str = "error",
        service: str | Sequence[str] | None = None,
        limit: int = 20,
    ) -> PatternReport:
        """Templates of the lines at `severity` and above, with counts and their trend against the window
        of the same length just before; known signatures among them and what to do about them."""
        now = self.clock()
        start, end = parse_time_range(time_range, now=now)
        if start is None:
            raise ToolRetry("time_range: give a bounded window such as 1h or 24h to analyse")
        level = parse_severity(severity)
        previous_start = max(0.0, start - (end - start))
        current = await self._window(start, end, level, service)
        previous = await self._window(previous_start, start, level, service)
        now_templates, before_templates = _templates(current, previous)
        stats = _template_stats(current, now_templates)
        before = Counter(before_templates)
        total = len(current)
        patterns = [
            ErrorPattern(
                template=template,
                count=s["count"],
                share=round(s["count"] / total, 4),
                first_seen=iso(s["first"]),
                last_seen=iso(s["last"]),
                example=s["example"],
                services=sorted(s["services"]),
                trend=_trend(s["count"], before.get(template, 0)),
                previous_count=before.get(template, 0),
            )
            for template, s in sorted(stats.items(), key=lambda item: -item[1]["count"])[:limit]
        ]
        hits = _signature_hits(match_signatures((r.message for r in current), self.signatures))
        recommendations = [h.recommendation for h in hits]
        new = [s["first"] for template, s in stats.items() if not before.get(template)]
        if new:  # a pattern that appeared in this window: did a deployment just precede it?
            onset = min(new)
            recommendations = deployment_hints(onset, await self._deployments(onset)) + recommendations
        return PatternReport(
            window=TimeWindow(start=iso(start), end=iso(end)),
            severity=level,
            lines=total,
            sampled=len(current) >= MAX_MINED,
            patterns=patterns,
            signatures=hits,
            recommendations=recommendations,
        )

    async def _window(
        self, start: float, end: float, level: str, service: str | Sequence[str] | None
    ) -> list[StoredRecord]:
        where = LogFilter(end=end, start=start, min_severity=level, services=_services(service))
        return await self.store.records(where, limit=MAX_MINED)

    # -- anomalies -------------------------------------------------------------------------------------

    async def detect_anomalies(
        self,
        window: str = "15m",
        baseline_windows: int = 12,
        service: str | Sequence[str] | None = None,
        session_field: str | None = None,
    ) -> AnomalyReport:
        """Compare the last `window` with the `baseline_windows` windows before it: volume per service and
        severity, warning-and-above templates never seen in the baseline, and templates whose rate jumped.
        With `session_field` (an attribute such as request_id), also sessions: the records sharing a value of
        it, as a sequence of templates, judged against the baseline's sessions."""
        if not 3 <= baseline_windows <= 200:
            raise ToolRetry(f"baseline_windows: {baseline_windows} is out of range; give 3 to 200")
        now = self.clock()
        window_start, end = parse_time_range(window, now=now)
        if window_start is None:
            raise ToolRetry("window: give a length such as 5m, 15m or 1h")
        width = end - window_start
        baseline_start = window_start - baseline_windows * width
        if baseline_start < 0:
            raise ToolRetry(f"window: {window} × {baseline_windows} baseline windows reaches back before 1970")
        services = _services(service)

        anomalies, note = await self._volume_anomalies(window, baseline_start, end, width, baseline_windows, services)
        template_anomalies, first_seen, recent = await self._template_anomalies(
            baseline_start, window_start, end, width, services
        )
        anomalies += template_anomalies
        if session_field:
            sessions, session_note = await self._session_anomalies(
                session_field, baseline_start, window_start, end, services
            )
            anomalies += sessions
            note = note or session_note

        # Every onset lies in the window: one read of the deployments before it serves every finding.
        deployments = await self._deployments(window_start) if anomalies else []
        findings = []
        for anomaly in sorted(anomalies, key=lambda a: -a.score):
            # A drop has no onset to blame; anything else began at its first line, or with the window.
            onset = None if anomaly.kind == "volume_drop" else first_seen.get(anomaly.key, window_start)
            hints = deployment_hints(onset, deployments) if onset is not None else []
            findings.append(
                AnomalyFinding(
                    kind=anomaly.kind, key=anomaly.key, score=round(anomaly.score, 2), observed=anomaly.observed,
                    expected=round(anomaly.expected, 2), explanation=anomaly.explanation, onset=iso(onset),
                    hints=hints,
                )
            )
        hits = _signature_hits(match_signatures((r.message for r in recent), self.signatures)) if findings else []
        recommendations = list(dict.fromkeys([h for f in findings for h in f.hints] + [h.recommendation for h in hits]))
        return AnomalyReport(
            window=TimeWindow(start=iso(window_start), end=iso(end)),
            baseline=TimeWindow(start=iso(baseline_start), end=iso(window_start)),
            anomalies=findings,
            signatures=hits,
            recommendations=recommendations,
            note=note,
        )

    async def _volume_anomalies(
        self, window: str, baseline_start: float, end: float, width: float, windows: int, services: tuple[str, ...]
    ) -> tuple[list[Anomaly], str | None]:
        counts = await self.store.volume(LogFilter(end=end, start=baseline_start, services=services), bucket_s=width)
        if not counts:
            return [], "no log records in the window or its baseline"
        keys = {(svc, sev): f"{svc or 'unnamed'}/{sev}" for svc, sev in counts}  # "api/error"
        history = {keys[k]: [float(by.get(i, 0)) for i in range(windows)] for k, by in counts.items()}
        current = {keys[k]: float(by.get(windows, 0)) for k, by in counts.items()}
        return volume_anomalies(history, current, window_label=window), None

    async def _template_anomalies(
        self, baseline_start: float, window_start: float, end: float, width: float, services: tuple[str, ...]
    ) -> tuple[list[Anomaly], dict[str, float], list[StoredRecord]]:
        """New error templates and rate jumps among warning-and-above lines; and when each template began."""
        recent = await self.store.records(
            LogFilter(end=end, start=window_start, min_severity="warning", services=services), limit=MAX_MINED
        )
        older = await self.store.records(
            LogFilter(end=window_start, start=baseline_start, min_severity="warning", services=services),
            limit=MAX_MINED,
        )
        text, older_text = _templates(recent, older)
        now_counts = Counter(text)
        before_counts = Counter(older_text)
        # Only error templates are news when new; a new warning is usually just a new warning.
        errors = severity_rank("error")
        errors_now = Counter(t for t, r in zip(text, recent, strict=True) if severity_rank(r.severity) >= errors)
        # Sampled baselines (MAX_MINED) cover less than the whole span: compare rates over what was read.
        baseline_span = window_start - max(baseline_start, min((r.time for r in older), default=baseline_start))
        anomalies = novel_templates(before_counts, errors_now)
        anomalies += rate_jumps(before_counts, max(baseline_span, width), now_counts, width)
        first_seen: dict[str, float] = {}
        for t, r in zip(text, recent, strict=True):
            first_seen[t] = min(first_seen.get(t, r.time), r.time)
        return anomalies, first_seen, recent

    async def _session_anomalies(
        self, field: str, baseline_start: float, window_start: float, end: float, services: tuple[str, ...]
    ) -> tuple[list[Anomaly], str | None]:
        has_field = Field(field, "*")  # any value
        older = await self.store.records(
            LogFilter(end=window_start, start=baseline_start, query=has_field, services=services), limit=MAX_MINED
        )
        recent = await self.store.records(
            LogFilter(end=end, start=window_start, query=has_field, services=services), limit=MAX_MINED
        )
        older_text, recent_text = _templates(older, recent)  # texts: keys a reason can name readably
        baseline = _sessions(older, older_text, field)
        current = _sessions(recent, recent_text, field)
        if len(baseline) < MIN_SESSIONS:
            return [], f"{len(baseline)} {field} sessions in the baseline: too few to judge sessions ({MIN_SESSIONS} needed)"
        model = SessionModel().fit(baseline.values())
        found = []
        for session_id, keys in current.items():
            verdict = model.score(keys)
            if verdict.anomalous:
                found.append(Anomaly(
                    kind="session", key=f"{field}={session_id}", score=verdict.score, observed=len(keys),
                    expected=statistics.median(len(k) for k in baseline.values()),
                    explanation=f"{field}={session_id}: {verdict.reason} ({len(keys)} lines)",
                ))
        return sorted(found, key=lambda a: -a.score)[:MAX_SESSIONS], None

    async def _deployments(self, earliest_onset: float) -> list[DeploymentEvent]:
        """The deployments that may precede an onset at or after `earliest_onset`."""
        if self.deployments is None:
            return []
        return await self.deployments(earliest_onset - HINT_WINDOW_S)

    # -- the index ---------------------------------------------------------------------------------------

    async def stats(self) -> LogStats:
        stats = await self.store.stats()
        return LogStats(
            backend=stats["backend"], records=stats["records"], oldest=iso(stats["oldest"]), newest=iso(stats["newest"])
        )


def _services(service: str | Sequence[str] | None) -> tuple[str, ...]:
    if service is None or service == "":
        return ()
    return (service,) if isinstance(service, str) else tuple(service)


def _entry(record: StoredRecord) -> LogEntry:
    return LogEntry(
        time=iso(record.time), severity=record.severity, service=record.service, host=record.host,
        message=record.message, attributes=record.attributes,
    )


def _templates(
    first: Sequence[StoredRecord], second: Sequence[StoredRecord]
) -> tuple[list[str], list[str]]:
    """The template of each message of both groups, mined together so one pattern has one template in both."""
    mined = mine_templates([r.message for r in [*first, *second]])
    texts = [mined.templates[i].text for i in mined.assignments]
    return texts[: len(first)], texts[len(first) :]


def _template_stats(records: Sequence[StoredRecord], templates: Sequence[str]) -> dict[str, dict[str, Any]]:
    stats: dict[str, dict[str, Any]] = defaultdict(lambda: {"count": 0, "first": None, "last": None, "services": set()})
    for record, template in zip(records, templates, strict=True):
        s = stats[template]
        s["count"] += 1
        s["services"].add(record.service)
        if s["first"] is None or record.time < s["first"]:
            s["first"] = record.time
        if s["last"] is None or record.time >= s["last"]:
            s["last"] = record.time
            s["example"] = record.message[:500]
    return stats


def _sessions(records: Sequence[StoredRecord], templates: Sequence[str], field: str) -> dict[str, list[str]]:
    """Template sequences per value of `field`, oldest line first (records come newest first)."""
    sessions: dict[str, list[str]] = defaultdict(list)
    for record, template in zip(reversed(records), reversed(templates), strict=True):
        value = record.attributes
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            sessions[str(value)].append(template)
    return sessions


def _trend(count: int, previous: int) -> str:
    if previous == 0:
        return "new"
    # Poisson noise: a change within about two standard deviations is steady.
    margin = 2 * max(previous, 1) ** 0.5
    if count > previous + margin and count >= 1.5 * previous:
        return "rising"
    if count < previous - margin and count <= previous / 1.5:
        return "falling"
    return "steady"


def _signature_hits(matches: Sequence[Any]) -> list[SignatureHit]:
    return [
        SignatureHit(
            name=m.signature.name, category=m.signature.category, count=m.count, example=m.example,
            recommendation=m.signature.recommendation,
        )
        for m in matches
    ]

