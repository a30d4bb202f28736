"""One log record, whatever format or source it came from, and the severity scale every part shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SEVERITIES", "LogRecord", "severity_rank", "normalize_severity"]

# Lowest to highest; a severity filter is a threshold on this order ("error" includes "critical").
SEVERITIES = ("debug", "info", "notice", "warning", "error", "critical")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_ALIASES = {
    "trace": "debug", "dbg": "debug", "verbose": "debug",
    "information": "info", "informational": "info", "inf": "info", "stdout": "info", "log": "info",
    "warn": "warning", "wrn": "warning",
    "err": "error", "stderr": "error", "severe": "error", "failure": "error",
    "crit": "critical", "fatal": "critical", "emerg": "critical", "emergency": "critical", "alert": "critical",
    "panic": "critical",
}


def normalize_severity(value: Any, default: str = "info") -> str:
    """Map a level name or syslog number (0 emerg … 7 debug) onto SEVERITIES; unknown values give `default`."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 7:
        return ("critical", "critical", "critical", "error", "warning", "notice", "info", "debug")[value]
    if not isinstance(value, str):
        return default
    name = value.strip().lower()
    if name in _RANK:
        return name
    return _ALIASES.get(name, default)


def severity_rank(name: str) -> int:
    return _RANK[name]


@dataclass(slots=True)
class LogRecord:
    time: float  # Unix seconds (UTC)
    message: str
    severity: str = "info"  # one of SEVERITIES
    service: str = ""
    host: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    # The sender's id for this record, namespaced by source ("vercel:…", "webhook:…"): the index stores a
    # keyed record once, however often it is delivered. None (a file line, a bearer post): never deduplicated.
    key: str | None = None
