"""Sentry issues and events as log records, and the webhook signature check.

One record stands for an issue's activity as last seen: time = `lastSeen`, service = the project slug,
message = the title, severity from the level (fatal -> critical), attributes naming the issue (issue_id,
short_id, permalink, count, first/last seen ...). Its key is `sentry:{issue_id}:{lastSeen}` (the time
normalized, since the API and the webhooks spell it differently), so a re-pull of an issue without new
events adds nothing, while new activity adds one record. A record made from one event (the issue-alert
webhook) is keyed `sentry:{issue_id}:{event_id}`.

`first_seen_ts` (epoch seconds) lets `sentry_new_issues(project)[10m]` count the issues first seen in a
window (alerts/sources.py). API bodies are camelCase, webhook events snake_case: kept apart here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

from ops_agent.errors import ToolRetry
from ops_agent.tools.logs.models import epoch
from ops_agent.tools.logs.record import LogRecord, normalize_severity

__all__ = [
    "SIGNATURE_HEADER",
    "event_record",
    "issue_key",
    "issue_record",
    "parse_time",
    "valid_hook_signature",
    "webhook_records",
]

SIGNATURE_HEADER = "sentry-hook-signature"
_PROJECT_IN_URL = re.compile(r"/projects/[^/]+/([^/]+)/")
_ISSUE_ACTIONS = ("created", "unresolved")  # new or regressed: activity worth a record; resolved etc. are not


def valid_hook_signature(body: bytes, secret: str, signature: str | None) -> bool:
    """`Sentry-Hook-Signature` is the hex HMAC-SHA256 of the raw body keyed with the client secret."""
    if not signature:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


def parse_time(value: Any) -> float | None:
    """ISO-8601 (`Z`, with or without microseconds) or epoch seconds; None when absent or unreadable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value > 0 else None
    return epoch(value) if isinstance(value, str) else None


def issue_key(issue_id: str, last_seen: float | None, fallback: str) -> str:
    return f"sentry:{issue_id}:{f'{last_seen:.3f}' if last_seen is not None else fallback}"


def issue_record(issue: dict[str, Any], event: dict[str, Any] | None = None, *, where: str = "issue") -> LogRecord:
    """A list/detail issue (or a webhook's `data.issue`), enriched with its latest API event when given."""
    issue_id = _required_id(issue.get("id"), f"{where}.id")
    project = issue.get("project") if isinstance(issue.get("project"), dict) else {}
    slug = str(project.get("slug") or project.get("id") or "sentry")
    first, last = parse_time(issue.get("firstSeen")), parse_time(issue.get("lastSeen"))
    metadata = issue.get("metadata") if isinstance(issue.get("metadata"), dict) else {}
    attributes: dict[str, Any] = {
        "source": "sentry",
        "kind": "issue",
        "issue_id": issue_id,
        "short_id": issue.get("shortId"),
        "permalink": issue.get("permalink"),
        "count": _int(issue.get("count")),
        "user_count": _int(issue.get("userCount")),
        "first_seen": issue.get("firstSeen"),
        "last_seen": issue.get("lastSeen"),
        "first_seen_ts": first,
        "status": issue.get("status"),
        "substatus": issue.get("substatus"),
        "level": issue.get("level"),
        "priority": issue.get("priority"),
        "culprit": issue.get("culprit"),
        "project_id": project.get("id"),
    }
    if event:
        attributes.update(_api_event_attributes(event))
    return LogRecord(
        time=last or first or time.time(),
        message=_message(issue.get("title"), metadata, issue.get("culprit")),
        severity=normalize_severity(issue.get("level"), default="error"),
        service=slug,
        attributes=_present(attributes),
        key=issue_key(issue_id, last, str(issue.get("lastSeen") or "unseen")),
    )


def event_record(event: dict[str, Any], *, where: str = "data.event") -> LogRecord:
    """A webhook's raw event (snake_case): the issue-alert `data.event`."""
    issue_id = _required_id(event.get("issue_id"), f"{where}.issue_id")
    event_id = _required_id(event.get("event_id"), f"{where}.event_id")
    url = event.get("url") if isinstance(event.get("url"), str) else ""
    slug = (match.group(1) if (match := _PROJECT_IN_URL.search(url)) else None) or str(event.get("project") or "sentry")
    tags = {pair[0]: pair[1] for pair in event.get("tags") or [] if isinstance(pair, list) and len(pair) == 2}
    metadata = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
    exception = _last_exception(event.get("exception"))
    attributes: dict[str, Any] = {
        "source": "sentry",
        "kind": "event",
        "issue_id": issue_id,
        "event_id": event_id,
        "permalink": event.get("web_url"),
        "level": event.get("level"),
        "culprit": event.get("culprit"),
        "environment": event.get("environment") or tags.get("environment"),
        "release": event.get("release") if isinstance(event.get("release"), str) else None,
        "exception": exception,
        "project_id": event.get("project"),
    }
    return LogRecord(
        time=parse_time(event.get("datetime")) or parse_time(event.get("timestamp")) or time.time(),
        message=_message(event.get("title"), metadata, event.get("culprit")),
        severity=normalize_severity(event.get("level"), default="error"),
        service=slug,
        attributes=_present(attributes),
        key=f"sentry:{issue_id}:{event_id}",
    )


def webhook_records(resource: str, payload: Any) -> list[LogRecord] | None:
    """Records of one integration-platform delivery; None for a resource or action that carries no error
    activity (installation, comment, a resolved issue ...). Raises ToolRetry naming a missing field."""
    if not isinstance(payload, dict):
        raise ToolRetry("body: a JSON object with action and data is expected")
    data = payload.get("data")
    if resource == "issue":
        if payload.get("action") not in _ISSUE_ACTIONS:
            return None
        issue = data.get("issue") if isinstance(data, dict) else None
        if not isinstance(issue, dict):
            raise ToolRetry("data.issue: missing or not an object")
        return [issue_record(issue, where="data.issue")]
    if resource in ("event_alert", "error"):
        event = data.get(resource if resource == "error" else "event") if isinstance(data, dict) else None
        if not isinstance(event, dict):
            raise ToolRetry(f"data.{'error' if resource == 'error' else 'event'}: missing or not an object")
        record = event_record(event, where=f"data.{'error' if resource == 'error' else 'event'}")
        if rule := (data.get("triggered_rule") if isinstance(data, dict) else None):
            record.attributes["triggered_rule"] = str(rule)[:200]
        return [record]
    return None


# -- helpers ---------------------------------------------------------------------------------------------


def _api_event_attributes(event: dict[str, Any]) -> dict[str, Any]:
    tags = {t.get("key"): t.get("value") for t in event.get("tags") or [] if isinstance(t, dict)}
    release = event.get("release")
    exception = None
    for entry in event.get("entries") or []:
        if isinstance(entry, dict) and entry.get("type") == "exception":
            exception = _last_exception(entry.get("data"))
    return {
        "event_id": event.get("eventID") or event.get("id"),
        "environment": tags.get("environment"),
        "release": release.get("version") if isinstance(release, dict) else release if isinstance(release, str) else None,
        "exception": exception,
    }


def _last_exception(block: Any) -> str | None:
    """`Type: value` of the last (outermost) exception of an exception block."""
    values = block.get("values") if isinstance(block, dict) else None
    if not isinstance(values, list) or not values or not isinstance(values[-1], dict):
        return None
    last = values[-1]
    text = ": ".join(str(part) for part in (last.get("type"), last.get("value")) if part)
    return text[:500] or None


def _message(title: Any, metadata: dict[str, Any], culprit: Any) -> str:
    if isinstance(title, str) and title.strip():
        return title
    if isinstance(metadata.get("title"), str) and metadata["title"]:
        return metadata["title"]
    described = ": ".join(str(metadata[k]) for k in ("type", "value") if metadata.get(k))
    return described or (str(culprit) if culprit else "(sentry issue without a title)")


def _required_id(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ToolRetry(f"{field}: missing (a Sentry id is expected)")
    text = str(value).strip()
    if len(text) > 100 or not re.fullmatch(r"[A-Za-z0-9_.:-]+", text):
        raise ToolRetry(f"{field}: not a Sentry id")
    return text


def _int(value: Any) -> int | None:
    """`count` is a string in the API; a number compares as one in log search (count:>=100)."""
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _present(attributes: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None and value != ""}
