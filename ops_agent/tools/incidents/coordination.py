"""Handing work to peer agents: a fix request to the Dev Agent, a post-incident summary to the FAQ Agent.

The seed's integration points ("Dev Agent: coordinate code fixes", "FAQ Agent: share operational
insights"). Both tools build a structured message from what ops-agent knows, then send it with one call of
a peer's tool (`incidents.fix_requests_to`, `incidents.summaries_to`: a registry name such as
`dev_agent__open_fix_request`). That call goes through the registry, so through the gate, as the caller:
its permission level, budget and audit trail decide on it like any other peer call.

- `request_code_fix(service)`: when the diagnosis points at code (a bad deployment, application errors,
  crashes, or an unknown cause with errors; otherwise it says so and sends nothing). The request carries the service, the
  cause and its evidence, the suspected change (the newest production deployment: id, URL, branch, commit,
  when it went live), the top error patterns and up to five sample lines, with secrets redacted.
- `share_incident_summary(service)`: after a remediation. The summary carries the cause, what was done,
  whether it held, and the recommendations.

The peer's tool has its own input schema. Each of its fields is filled from the message by name (a field
named like one of the message's keys gets that value; `title`/`subject` the one-line title; `details`,
`body`, `description`, `text`, `message`, `summary` or `content` the message rendered as Markdown;
`request`, `payload` or `data` the whole message as an object). A required field that none of these fill
is an error naming it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from ops_agent.errors import OpsAgentError, ToolFailed, ToolRetry
from ops_agent.governance import Caller
from ops_agent.redact import Redactor
from ops_agent.registry import Intent, ToolContext, ToolInput, ToolRegistry, ToolSpec
from ops_agent.tools.deployment import DeploymentTool
from ops_agent.tools.incidents.diagnosis import Diagnoser
from ops_agent.tools.incidents.models import Diagnosis, RemediationReport
from ops_agent.tools.logs import LogAnalysisTool
from ops_agent.tools.logs.models import epoch, iso

__all__ = ["Coordinator", "coordination_specs"]

# What a code change can fix; a full disk, memory or a dependency down are ours (remediate_incident).
CODE_CAUSES = frozenset({"bad_deployment", "application_errors", "crashing", "unknown"})
MAX_SAMPLES = 5
MAX_PATTERNS = 3
TITLE_FIELDS = ("title", "subject")
TEXT_FIELDS = ("details", "body", "description", "text", "message", "summary", "content")
OBJECT_FIELDS = ("request", "payload", "data")
RecentReports = Callable[[], list[tuple[float, RemediationReport]]]


class SuspectedChange(BaseModel):
    deployment_id: str
    deployment_url: str | None = None
    branch: str | None = None
    commit: str | None = None
    live_since: str | None = None
    before_onset_s: float | None = Field(None, description="How long before the trouble began it went live.")


class FixRequest(BaseModel):
    kind: str = "fix_request"
    service: str
    title: str
    cause: str
    onset: str
    evidence: list[str]
    suspected_change: SuspectedChange | None = None
    patterns: list[dict[str, Any]] = Field(description="Top error templates: template, count, trend.")
    samples: list[str] = Field(description=f"Up to {MAX_SAMPLES} error lines, secrets redacted.")


class IncidentSummary(BaseModel):
    kind: str = "incident_summary"
    service: str
    title: str
    cause: str
    onset: str
    action: str
    outcome: str
    verified: bool
    escalated: bool
    resolved_at: str
    recommendations: list[str]


class Handoff(BaseModel):
    """What was sent to which peer tool, and what it answered."""

    peer_tool: str
    message: dict[str, Any]
    arguments: dict[str, Any] = Field(description="The peer tool's arguments, as sent.")
    answer: dict[str, Any] = Field(description="The peer tool's output.")


class ServiceInput(ToolInput):
    service: str = Field(min_length=1, max_length=128, description="A configured service.")


class Coordinator:
    def __init__(
        self,
        registry: ToolRegistry,
        diagnoser: Diagnoser,
        logs: LogAnalysisTool,
        deployments: DeploymentTool,
        redactor: Redactor,
        recent_reports: RecentReports,
        *,
        fix_requests_to: str | None,
        summaries_to: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.diagnoser = diagnoser
        self.logs = logs
        self.deployments = deployments
        self.redactor = redactor
        self.recent_reports = recent_reports
        self.fix_requests_to = fix_requests_to
        self.summaries_to = summaries_to
        self.clock = clock

    async def fix_request(self, service: str) -> FixRequest:
        diagnosis = await self.diagnoser.diagnose(service)
        if diagnosis.cause not in CODE_CAUSES:
            raise ToolRetry(f"service: the diagnosis of {service} does not point at code ({diagnosis.cause}: "
                            f"{diagnosis.summary}); there is nothing to ask the Dev Agent")
        now = self.clock()
        patterns = await self.logs.analyze_error_patterns(time_range=f"{diagnosis.onset}..{iso(now)}", service=service)
        top = patterns.patterns[:MAX_PATTERNS]
        samples = [p.example for p in patterns.patterns[:MAX_SAMPLES]]
        return FixRequest(
            service=service,
            title=f"{service}: {diagnosis.cause.replace('_', ' ')} since {diagnosis.onset}",
            cause=diagnosis.cause,
            onset=diagnosis.onset,
            evidence=[self.redactor.text(line) for line in diagnosis.evidence],
            suspected_change=await self._suspected_change(service, diagnosis),
            patterns=[{"template": self.redactor.text(p.template), "count": p.count, "trend": p.trend} for p in top],
            samples=[self.redactor.text(line) for line in samples],
        )

    def incident_summary(self, service: str) -> IncidentSummary:
        reports = [(at, r) for at, r in self.recent_reports() if r.diagnosis.service == service and r.action_taken]
        if not reports:
            raise ToolRetry(f"service: no remediation of {service!r} on record since ops-agent started; nothing to summarise")
        finished, report = reports[-1]
        d = report.diagnosis
        return IncidentSummary(
            service=service,
            title=f"{service}: {d.cause.replace('_', ' ')}, {'fixed' if report.verified else 'not fixed'}",
            cause=d.cause, onset=d.onset,
            action=f"{report.action_taken.tool} {json.dumps(report.action_taken.arguments)}" if report.action_taken else "none",
            outcome=self.redactor.text(report.outcome), verified=report.verified, escalated=report.escalated,
            resolved_at=iso(finished) or "", recommendations=d.recommendations,
        )

    def destination(self, peer_tool: str | None, setting: str) -> ToolSpec:
        """The peer tool to send to, checked before any work is done for it."""
        if not peer_tool:
            raise ToolFailed(f"{setting} is not set: name the peer tool to send to (e.g. dev_agent__open_fix_request)")
        spec = self.registry.get(peer_tool)
        if spec is None:
            raise ToolFailed(f"{setting}: {peer_tool!r} is not available (is the peer configured and was it up at start?)")
        return spec

    async def send(self, caller: Caller, spec: ToolSpec, message: BaseModel) -> Handoff:
        peer_tool = spec.name
        data = message.model_dump(mode="json")
        arguments = fit_arguments(spec.input_schema(), data, render(data), peer_tool)
        answer = await self.registry.invoke(caller, peer_tool, arguments)  # governed: the peer call's own check
        return Handoff(peer_tool=peer_tool, message=data, arguments=arguments, answer=answer.model_dump(mode="json"))

    async def _suspected_change(self, service: str, diagnosis: Diagnosis) -> SuspectedChange | None:
        project = self.diagnoser.service(service).project
        if not project:
            return None
        try:
            newest = (await self.deployments.list_deployments(project, "production", "READY", limit=1)).deployments
        except OpsAgentError:
            return None  # Vercel away: the request goes without it rather than not at all
        if not newest:
            return None
        deployment = newest[0]
        live = deployment.ready_at or deployment.created_at
        onset = epoch(diagnosis.onset)
        return SuspectedChange(
            deployment_id=deployment.id, deployment_url=deployment.deployment_url, branch=deployment.branch,
            commit=deployment.commit, live_since=live.isoformat() if live else None,
            before_onset_s=round(onset - live.timestamp(), 1) if live and onset is not None else None,
        )


def render(message: Mapping[str, Any]) -> str:
    """The message as Markdown, for a peer tool that takes text."""
    lines = [f"# {message['title']}", ""]
    for key, value in message.items():
        if key in ("title", "kind") or value in (None, [], ""):
            continue
        label = key.replace("_", " ")
        if isinstance(value, list):
            lines.append(f"**{label}**:")
            lines += [f"- {json.dumps(item) if isinstance(item, dict) else item}" for item in value]
        elif isinstance(value, dict):
            lines.append(f"**{label}**: " + ", ".join(f"{k} {v}" for k, v in value.items() if v is not None))
        else:
            lines.append(f"**{label}**: {value}")
    return "\n".join(lines)


def fit_arguments(schema: Mapping[str, Any], message: Mapping[str, Any], text: str, tool: str) -> dict[str, Any]:
    """The peer tool's arguments, each field filled from the message by name (see the module docstring)."""
    arguments: dict[str, Any] = {}
    for name, field in (schema.get("properties") or {}).items():
        if name in message and name != "kind":
            value: Any = message[name]
        elif name in TITLE_FIELDS:
            value = message["title"]
        elif name in TEXT_FIELDS:
            value = text
        elif name in OBJECT_FIELDS:
            value = dict(message)
        else:
            continue
        if isinstance(field, Mapping) and field.get("type") == "string" and not isinstance(value, str):
            value = json.dumps(value)
        arguments[name] = value
    missing = [name for name in schema.get("required") or [] if name not in arguments]
    if missing:
        raise ToolFailed(f"{tool}: cannot fill its required field(s) {', '.join(missing)} from a {message['kind']}")
    return arguments


def coordination_specs(coordinator: Coordinator, service_arguments: Callable[..., Any]) -> list[ToolSpec]:
    async def request_code_fix(args: ServiceInput, ctx: ToolContext) -> Handoff:
        peer = coordinator.destination(coordinator.fix_requests_to, "incidents.fix_requests_to")
        return await coordinator.send(ctx.caller, peer, await coordinator.fix_request(args.service))

    async def share_incident_summary(args: ServiceInput, ctx: ToolContext) -> Handoff:
        peer = coordinator.destination(coordinator.summaries_to, "incidents.summaries_to")
        return await coordinator.send(ctx.caller, peer, coordinator.incident_summary(args.service))

    hand_off = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)
    return [
        ToolSpec(
            name="request_code_fix", title="Ask the Dev Agent for a code fix",
            description="When the trouble is in the code (new errors after a deployment, a stack trace in our "
            "code): send the Dev Agent a structured fix request: the cause and evidence, the suspected "
            "deployment, the top error patterns and sample lines (secrets redacted).",
            input_model=ServiceInput, output_model=Handoff, handler=request_code_fix,
            actions=("coordinate:handoff",), annotations=hand_off, timeout_s=120,
            intents=(Intent(patterns=(r"\b(fix request|code fix|dev[ _-]?agent|hand (it )?(off|over) to (the )?dev)",),
                            arguments=service_arguments),),
            summarize=lambda h: f"sent to {h.peer_tool}: {h.message.get('title', '')}",
        ),
        ToolSpec(
            name="share_incident_summary", title="Share a post-incident summary",
            description="After an incident: send the FAQ Agent a short summary (cause, what was done, whether it "
            "held, recommendations) of the last remediation of a service.",
            input_model=ServiceInput, output_model=Handoff, handler=share_incident_summary,
            actions=("coordinate:handoff",), annotations=hand_off, timeout_s=60,
            intents=(Intent(patterns=(r"\b(post[- ]?incident|faq[ _-]?agent|incident summary|share (the )?(summary|insights?))",),
                            arguments=service_arguments),),
            summarize=lambda h: f"sent to {h.peer_tool}: {h.message.get('title', '')}",
        ),
    ]
