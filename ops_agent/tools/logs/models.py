"""What the log tools answer: pydantic models, so MCP clients and the planner get their JSON schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "AnomalyFinding",
    "AnomalyReport",
    "ErrorPattern",
    "Histogram",
    "IngestReport",
    "LogEntry",
    "LogSearchResult",
    "LogStats",
    "PatternReport",
    "SignatureHit",
    "TimeWindow",
    "epoch",
    "iso",
]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):  # out of datetime's range: say what it was rather than fail
        return str(ts)


def epoch(text: str) -> float | None:
    """The Unix time of an ISO 8601 moment (`iso`'s inverse; `Z`, any fraction; no zone means UTC), or None
    when it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class TimeWindow(BaseModel):
    start: str | None = Field(description="ISO-8601 UTC; null = from the oldest record.")
    end: str


class LogEntry(BaseModel):
    time: str
    severity: str
    service: str
    host: str
    message: str
    attributes: dict[str, Any] = Field(default_factory=dict)


class Histogram(BaseModel):
    origin: str = Field(description="Start of the first bucket (ISO-8601 UTC).")
    bucket_s: float
    counts: list[int] = Field(description="Matches per bucket, oldest first.")


class LogSearchResult(BaseModel):
    query: str
    window: TimeWindow
    total: int = Field(description="Every match in the window, not only those returned.")
    returned: int
    records: list[LogEntry] = Field(description="Newest first.")
    histogram: Histogram


class SignatureHit(BaseModel):
    name: str
    category: str
    count: int
    example: str
    recommendation: str


class ErrorPattern(BaseModel):
    template: str = Field(description="The message with its variable parts as <*>.")
    count: int
    share: float = Field(description="Fraction of the analysed lines (0..1).")
    first_seen: str
    last_seen: str
    example: str
    services: list[str]
    trend: Literal["new", "rising", "steady", "falling"]
    previous_count: int = Field(description="Occurrences in the window of the same length just before.")


class PatternReport(BaseModel):
    window: TimeWindow
    severity: str = Field(description="Lines at this severity and above were analysed.")
    lines: int = Field(description="Lines analysed in the window.")
    sampled: bool = Field(False, description="True when the window held more lines than were mined.")
    patterns: list[ErrorPattern]
    signatures: list[SignatureHit] = Field(description="Known failure signatures the lines show.")
    recommendations: list[str]


class AnomalyFinding(BaseModel):
    kind: str = Field(description="volume_spike, volume_drop, new_template, rate_jump or session.")
    key: str = Field(description="service/severity for volume, field=value for a session, else the template.")
    score: float
    observed: float
    expected: float
    explanation: str
    onset: str | None = Field(None, description="When the anomalous lines began (ISO-8601 UTC), if known.")
    hints: list[str] = Field(default_factory=list, description="Deployments that shortly preceded the onset.")


class AnomalyReport(BaseModel):
    window: TimeWindow
    baseline: TimeWindow
    anomalies: list[AnomalyFinding] = Field(description="Most anomalous first; empty when all looks normal.")
    signatures: list[SignatureHit]
    recommendations: list[str]
    note: str | None = None


class IngestReport(BaseModel):
    accepted: int
    source: str


class LogStats(BaseModel):
    backend: str
    records: int
    oldest: str | None
    newest: str | None
