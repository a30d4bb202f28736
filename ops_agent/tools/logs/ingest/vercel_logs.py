"""Vercel's logs as records: log-drain deliveries (pushed to us), build events and runtime logs (pulled).

Shapes: `../shared/contracts/VERCEL.md` (log-drain delivery, getDeploymentEvents, getRuntimeLogs).

Vercel retries a drain delivery it thinks failed, so each drain record carries a key (`LogRecord.key`) and the
index stores it once. The drain signature covers the body only, with no timestamp, so a delivery can't be
refused as stale: an old delivery replayed adds nothing, since its records are already stored (until log
retention deletes them, after which they would be deleted again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ops_agent.errors import ToolFailed, ToolRetry
from ops_agent.tools.deployment.vercel_client import VercelClient
from ops_agent.tools.logs.ingest.body import json_array, json_lines
from ops_agent.tools.logs.record import LogRecord, normalize_severity

__all__ = ["VercelLogPuller", "build_event_record", "drain_key", "drain_records", "runtime_log_record", "valid_drain_signature"]

_DRAIN_ATTRIBUTES = (
    "id", "deploymentId", "projectId", "source", "buildId", "entrypoint", "path", "type", "statusCode",
    "requestId", "environment", "branch", "executionRegion", "traceId", "spanId", "proxy",
)


def valid_drain_signature(body: bytes, secret: str, signature: str | None) -> bool:
    """`x-vercel-signature` is the hex HMAC-SHA1 of the raw body keyed with the drain secret."""
    if not signature:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


def drain_records(body: bytes) -> list[LogRecord]:
    """A delivery: a JSON array of entries, or NDJSON (one entry a line). Raises ToolRetry naming the line."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return []
    entries = json_array(text) if text.startswith("[") else json_lines(text)
    records = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ToolRetry(f"body: entry {index + 1} is not an object")
        records.append(replace(drain_record(entry), key=drain_key(entry)))
    return records


def drain_key(entry: dict[str, Any]) -> str | None:
    """A digest of the whole entry, which holds Vercel's unique record `id`: a redelivery is the same entry,
    while two different entries that happen to share an id are both kept (a log line is never dropped as a
    duplicate of another). An entry without an id is not deduplicated: identical lines can be real events."""
    if entry.get("id") in (None, ""):
        return None
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return "vercel:" + hashlib.sha256(canonical.encode()).hexdigest()


def drain_record(entry: dict[str, Any]) -> LogRecord:
    status = entry.get("statusCode")
    severity = normalize_severity(entry.get("level"), default="info")
    if status == -1:  # the function crashed
        severity = "critical"
    attributes = {key: entry[key] for key in _DRAIN_ATTRIBUTES if entry.get(key) is not None}
    if isinstance(status, int) and status > 0:
        attributes["status"] = status
    if isinstance(proxy := entry.get("proxy"), dict):
        attributes.setdefault("method", proxy.get("method"))
        attributes.setdefault("path", proxy.get("path"))
        if isinstance(proxy.get("statusCode"), int):
            attributes.setdefault("status", proxy["statusCode"])
    message = entry.get("message")
    if not isinstance(message, str) or not message:
        proxy = entry.get("proxy") if isinstance(entry.get("proxy"), dict) else {}
        message = f"{proxy.get('method', '')} {proxy.get('path', '')} {proxy.get('statusCode', '')}".strip() or "(empty)"
    return LogRecord(
        time=_seconds(entry.get("timestamp")),
        message=message,
        severity=severity,
        service=str(entry.get("projectName") or entry.get("projectId") or "vercel"),
        host=str(entry.get("host") or ""),
        attributes={k: v for k, v in attributes.items() if v is not None},
    )


def build_event_record(event: dict[str, Any], project: str) -> LogRecord | None:
    """A getDeploymentEvents event; None for events that carry no text (delimiters, metrics)."""
    payload = event.get("payload") or {}
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str) or not text.strip():
        return None
    kind = event.get("type", "stdout")
    severity = "error" if kind in ("stderr", "fatal") else "info"
    if kind == "fatal":
        severity = "critical"
    info = payload.get("info") or {}
    return LogRecord(
        time=_seconds(event.get("created") or payload.get("date")),
        message=text.rstrip("\n"),
        severity=severity,
        service=project,
        host="",
        attributes={
            "source": "build",
            "type": kind,
            "deploymentId": payload.get("deploymentId"),
            "id": payload.get("id"),
            **({"readyState": info["readyState"]} if isinstance(info, dict) and info.get("readyState") else {}),
        },
    )


def runtime_log_record(entry: dict[str, Any], project: str, deployment_id: str) -> LogRecord:
    status = entry.get("responseStatusCode")
    attributes: dict[str, Any] = {
        "source": entry.get("source", "runtime"),
        "deploymentId": deployment_id,
        "rowId": entry.get("rowId"),
        "method": entry.get("requestMethod"),
        "path": entry.get("requestPath"),
    }
    if isinstance(status, (int, float)) and 100 <= status <= 599:
        attributes["status"] = int(status)
    return LogRecord(
        time=_seconds(entry.get("timestampInMs")),
        message=str(entry.get("message") or ""),
        severity=normalize_severity(entry.get("level"), default="info"),
        service=project,
        host=str(entry.get("domain") or ""),
        attributes={k: v for k, v in attributes.items() if v is not None},
    )


def _seconds(ms: Any) -> float:
    return ms / 1000 if isinstance(ms, (int, float)) and ms > 0 else time.time()


class VercelLogPuller:
    """Pulls a deployment's build and runtime logs; remembers what it has taken so a second pull adds
    only new lines (build events by time, runtime lines by rowId)."""

    def __init__(self, client: Callable[[], VercelClient]) -> None:
        self._client = client  # resolved per call: Vercel may be unconfigured until a pull is asked for
        self._build_since: dict[str, int] = {}
        self._runtime_seen: dict[str, set[str]] = {}

    async def production_deployment(self, project: str | None) -> str:
        if not project:
            raise ToolRetry("project: name a project or a deployment (no vercel.default_project is configured)")
        details = await self._client().get_project(project)
        current = ((details.get("targets") or {}).get("production") or {}).get("id")
        if not current:
            raise ToolFailed(f"project {project} has no production deployment yet")
        return current

    async def pull(self, deployment_id: str) -> list[LogRecord]:
        client = self._client()
        deployment = await client.get_deployment(deployment_id)
        deployment_id = deployment.get("id") or deployment.get("uid") or deployment_id
        project = str(deployment.get("name") or deployment.get("projectId") or "vercel")
        since = self._build_since.get(deployment_id)
        events = await client.get_deployment_events(deployment_id, since_ms=None if since is None else since + 1)
        records = [r for e in events if (r := build_event_record(e, project)) is not None]
        created = [e.get("created") for e in events if isinstance(e.get("created"), (int, float))]
        if created:
            self._build_since[deployment_id] = int(max(created))
        if deployment.get("projectId"):
            seen = self._runtime_seen.setdefault(deployment_id, set())
            for entry in await client.get_runtime_logs(deployment["projectId"], deployment_id):
                row = str(entry.get("rowId") or "")
                if row and row in seen:
                    continue
                seen.add(row)
                records.append(runtime_log_record(entry, project, deployment_id))
        return records
