"""Alert management: rules over metrics, health and logs; the evaluator; declared for the registry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from ops_agent.registry import EmptyInput, Intent, ToolContext, ToolInput, ToolSpec
from ops_agent.tools.alerts.alert_management_tool import AlertManagementTool
from ops_agent.tools.alerts.evaluator import AlertEvaluator, AlertNotifier, RoutingPolicy
from ops_agent.tools.alerts.models import Alert, AlertRule, HistoryEvent, Remediation, Silence
from ops_agent.tools.alerts.store import AlertStore, SqliteAlertStore

__all__ = [
    "AlertEvaluator",
    "AlertManagementTool",
    "AlertNotifier",
    "AlertStore",
    "RoutingPolicy",
    "SqliteAlertStore",
    "alert_specs",
]

Severity = Literal["critical", "high", "medium", "low"]
_RULE_NAME = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Rule name.")


class CreateRuleInput(ToolInput):
    name: str = _RULE_NAME
    condition: str = Field(
        min_length=1, max_length=2000,
        description="e.g. error_rate > 5%, cpu_percent > 90 for 5m, avg(response_time_ms[5m]) > 500, "
        "health(api) == down, log_count(severity=error, service=api)[5m] > 100, anomaly(logs).",
    )
    severity: Severity = Field("medium", description="critical, high, medium or low: decides who is paged.")
    channels: list[str] = Field(default_factory=list, max_length=10, description="Extra channels (slack, email, webhook, …).")
    repeat_interval: str | None = Field(None, max_length=10, description="Notify again this often until acknowledged, e.g. 30m.")
    remediation: Remediation | None = Field(None, description="Run this, governed, when the alert fires.")


class UpdateRuleInput(ToolInput):
    name: str = _RULE_NAME
    condition: str | None = Field(None, min_length=1, max_length=2000)
    severity: Severity | None = None
    channels: list[str] | None = Field(None, max_length=10)
    repeat_interval: str | None = Field(None, max_length=10)
    remediation: Remediation | None = None
    enabled: bool | None = None


class RuleNameInput(ToolInput):
    name: str = _RULE_NAME


class ActiveAlertsInput(ToolInput):
    severity: Severity | None = Field(None, description="Only this priority.")


class AlertIdInput(ToolInput):
    alert_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$", description="From get_active_alerts.")


class SilenceInput(ToolInput):
    matchers: dict[str, str] = Field(
        min_length=1, max_length=8,
        description='All must match: "rule" (a name, * allowed) and/or "severity", e.g. {"rule": "disk_*"}.',
    )
    duration: str = Field(max_length=10, description="How long, e.g. 30m, 2h, 1d.")
    comment: str = Field("", max_length=500)


class SilenceIdInput(ToolInput):
    silence_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")


class HistoryInput(ToolInput):
    alert_id: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    rule: str | None = Field(None, max_length=100)
    since_s: float | None = Field(None, gt=0, le=366 * 86400, description="Seconds back from now.")
    limit: int = Field(100, ge=1, le=1000)


class RuleList(BaseModel):
    rules: list[AlertRule]


class AlertList(BaseModel):
    alerts: list[Alert]


class SilenceList(BaseModel):
    silences: list[Silence]


class HistoryList(BaseModel):
    events: list[HistoryEvent]


class Done(BaseModel):
    ok: bool
    note: str = ""


class RemediationStats(BaseModel):
    remediated: int
    fixed_without_a_person: int
    auto_fix_rate: float | None
    mttr_s: float | None


# "alert me if the error rate is above 5%", "create an alert when cpu_percent > 90 for 5m"
# The condition runs from its first non-blank to its last: `\s+(.+?)\s*$` retried every split of a blank run
# ("alert if" + 4,000 spaces + "x\ny" took 100 s). A condition of blanks alone no longer counts.
_ALERT_WHEN = re.compile(
    r"(?i)\b(?:alert|page|notify)(?:\s+(?:me|us|the\s+team|on-?call))?\s+(?:if|when(?:ever)?)\s++(.*?\S)\s*$"
)
_SEVERITY_WORD = re.compile(r"(?i)\b(critical|high|medium|low)\b")
_PHRASE_TO_CONDITION = [
    (re.compile(r"(?i)(?:\b(?:is|goes|gets|rises)\s+)?\b(?:above|over|exceeds?|higher than|more than|greater than)\s*"), " > "),
    (re.compile(r"(?i)(?:\b(?:is|goes|drops|falls)\s+)?\b(?:below|under|lower than|less than)\s*"), " < "),
    (re.compile(r"(?i)\bthe\s+"), ""),
]


# The subject starts and ends on a non-blank, for the same reason (a subject of blanks alone no longer counts).
_SUBJECT = re.compile(
    r"(?i)\b(?:monitor|watch|track|keep\s+an\s+eye\s+on)\s++(?:the\s++)?(.+?)(?<!\s)\s+and\s+(?:alert|notify|page)\b"
)


def _rule_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    match = _ALERT_WHEN.search(clause)
    if match is None:
        return "say what to alert on, e.g. alert me if error_rate > 5%"
    condition = match.group(1)
    for pattern, replacement in _PHRASE_TO_CONDITION:
        condition = pattern.sub(replacement, condition)
    condition = re.sub(r"(?i)\b([a-z]+)\s+([a-z]+)\s+(?=[<>])", r"\1_\2 ", condition).strip()  # "error rate" -> error_rate
    if re.match(r"[<>=!]", condition):  # "monitor the api error rate and alert if >5%": the subject is the left side
        subject = _SUBJECT.search(clause)
        if subject is None:
            return "say what to compare, e.g. alert me if error_rate > 5%"
        condition = f"{_series_for(subject.group(1), facts)} {condition}"
    condition = re.sub(r"\s+", " ", condition)  # first: `\s*` before an operator is quadratic on a long blank run
    condition = re.sub(r"\s*(>=|<=|==|!=|>|<)\s*", r" \1 ", condition, count=1)
    condition = re.sub(r"\s+", " ", condition).strip()
    series = re.match(r"[A-Za-z_][\w:.]*", condition)
    service = re.search(r'service="([^"]+)"', condition)
    name = "_".join(filter(None, [service.group(1) if service else "", series.group(0) if series else "rule"]))[:60]
    severity = _SEVERITY_WORD.search(clause.replace(match.group(1), ""))
    return [{"name": f"{name}_alert", "condition": condition, "severity": severity.group(1).lower() if severity else "high"}]


def _series_for(subject: str, facts: Mapping[str, Any]) -> str:
    """"API error rate" -> error_rate{service="api"} when api is a configured service, else api_error_rate."""
    words = re.findall(r"[A-Za-z0-9]+", subject.lower())
    services = {s.lower() for s in facts.get("services", ())}
    if len(words) > 1 and words[0] in services:
        return f'{"_".join(words[1:])}{{service="{words[0]}"}}'
    return "_".join(words)


def _alerts_line(result: AlertList) -> str:
    if not result.alerts:
        return "no active alerts"
    return f"{len(result.alerts)} active: " + "; ".join(
        f"{a.severity} {a.rule_name} {a.state}{' (acked)' if a.acknowledged_at else ''}: {a.summary}" for a in result.alerts[:5]
    )


def alert_specs(tool: AlertManagementTool) -> list[ToolSpec]:
    async def create_alert_rule(args: CreateRuleInput, ctx: ToolContext) -> AlertRule:
        return await tool.create_alert_rule(
            args.name, args.condition, args.severity, args.channels, repeat_interval=args.repeat_interval,
            remediation=args.remediation, created_by=ctx.caller.agent,
        )

    async def update_alert_rule(args: UpdateRuleInput, ctx: ToolContext) -> AlertRule:
        return await tool.update_alert_rule(
            args.name, condition=args.condition, severity=args.severity, channels=args.channels,
            repeat_interval=args.repeat_interval, remediation=args.remediation, enabled=args.enabled,
            by=ctx.caller.agent,
        )

    async def delete_alert_rule(args: RuleNameInput, ctx: ToolContext) -> AlertRule:
        return await tool.delete_alert_rule(args.name)

    async def list_alert_rules(args: EmptyInput, ctx: ToolContext) -> RuleList:
        return RuleList(rules=await tool.list_alert_rules())

    async def get_active_alerts(args: ActiveAlertsInput, ctx: ToolContext) -> AlertList:
        return AlertList(alerts=await tool.get_active_alerts(args.severity))

    async def acknowledge_alert(args: AlertIdInput, ctx: ToolContext) -> Alert:
        return await tool.acknowledge_alert(args.alert_id, by=ctx.caller.agent)

    async def resolve_alert(args: AlertIdInput, ctx: ToolContext) -> Alert:
        return await tool.resolve_alert(args.alert_id, by=ctx.caller.agent)

    async def silence_alerts(args: SilenceInput, ctx: ToolContext) -> Silence:
        return await tool.silence(args.matchers, args.duration, comment=args.comment, by=ctx.caller.agent)

    async def list_silences(args: EmptyInput, ctx: ToolContext) -> SilenceList:
        return SilenceList(silences=await tool.list_silences())

    async def expire_silence(args: SilenceIdInput, ctx: ToolContext) -> Done:
        found = await tool.expire_silence(args.silence_id)
        return Done(ok=found, note="" if found else f"no silence {args.silence_id}")

    async def get_alert_history(args: HistoryInput, ctx: ToolContext) -> HistoryList:
        return HistoryList(events=await tool.history(
            alert_id=args.alert_id, rule=args.rule, since_s=args.since_s, limit=args.limit
        ))

    async def get_remediation_stats(args: EmptyInput, ctx: ToolContext) -> RemediationStats:
        return RemediationStats(**await tool.remediation_stats())

    read = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
    write = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)

    def spec(name: str, title: str, description: str, input_model: type, output_model: type, handler,
             action: str, summarize=None, intents: tuple[Intent, ...] = ()) -> ToolSpec:
        return ToolSpec(
            name=name, title=title, description=description, input_model=input_model, output_model=output_model,
            handler=handler, actions=(action,), annotations=read if action == "read" else write, timeout_s=30,
            summarize=summarize, intents=intents,
        )

    return [
        spec("create_alert_rule", "Create an alert rule",
             "A rule that pages when its condition holds (optionally `for` a while): metrics, health(service), "
             "log_count(...)[window], anomaly(logs). Checked now: syntax (with the position), unknown series and "
             "services, channels. Severity routes it: critical and high page at once, critical escalates.",
             CreateRuleInput, AlertRule, create_alert_rule, "alert:write",
             lambda r: f"rule {r.name}: {r.condition} ({r.severity})",
             (Intent(patterns=(_ALERT_WHEN.pattern,), arguments=_rule_arguments),)),
        spec("update_alert_rule", "Update an alert rule", "Change a rule's condition, severity, channels, "
             "repeat interval, remediation, or enable/disable it.", UpdateRuleInput, AlertRule, update_alert_rule,
             "alert:write", lambda r: f"rule {r.name}: {r.condition} ({r.severity}{'' if r.enabled else ', disabled'})"),
        spec("delete_alert_rule", "Delete an alert rule", "Remove a rule (its history stays).", RuleNameInput,
             AlertRule, delete_alert_rule, "alert:write", lambda r: f"deleted rule {r.name}"),
        spec("list_alert_rules", "Alert rules", "Every alert rule with its condition, severity and channels.",
             EmptyInput, RuleList, list_alert_rules, "read",
             lambda r: "; ".join(f"{x.name}: {x.condition}" for x in r.rules) or "no rules",
             (Intent(patterns=(r"\b(list|show)\b.*\balert\s+rules\b", r"\balert\s+rules\b"),),)),
        spec("get_active_alerts", "Active alerts", "Pending and firing alerts, newest first, with their value, "
             "since when, and whether someone acknowledged them.", ActiveAlertsInput, AlertList, get_active_alerts,
             "read", _alerts_line,
             (Intent(patterns=(r"\b(active|open|current|firing)\s+alerts?\b", r"\bany\s+alerts?\b",
                               r"\bwhat(?:'s| is)\s+(?:firing|alerting)\b"),),)),
        spec("acknowledge_alert", "Acknowledge an alert", "Say someone is on it: repeats and escalation stop; "
             "the alert still resolves by itself.", AlertIdInput, Alert, acknowledge_alert, "alert:write",
             lambda a: f"acknowledged {a.id} ({a.rule_name})"),
        spec("resolve_alert", "Resolve an alert", "Close an active alert by hand.", AlertIdInput, Alert,
             resolve_alert, "alert:write", lambda a: f"resolved {a.id} ({a.rule_name})"),
        spec("silence_alerts", "Silence alerts", "Suppress notifications of matching alerts for a while "
             "(they are still tracked).", SilenceInput, Silence, silence_alerts, "alert:write",
             lambda s: f"silenced {s.matchers} until {s.ends_at:.0f}"),
        spec("list_silences", "Silences", "Silences in force.", EmptyInput, SilenceList, list_silences, "read",
             lambda r: f"{len(r.silences)} silences in force"),
        spec("expire_silence", "Expire a silence", "End a silence now.", SilenceIdInput, Done, expire_silence,
             "alert:write", lambda d: "expired" if d.ok else d.note),
        spec("get_alert_history", "Alert history", "Every transition: pending, firing, resolved, notified, "
             "acknowledged, silenced, escalated, remediation.", HistoryInput, HistoryList, get_alert_history, "read",
             lambda r: f"{len(r.events)} events",
             (Intent(patterns=(r"\balert\s+history\b", r"\b(past|previous|recent)\s+alerts\b"),),)),
        spec("get_remediation_stats", "Auto-remediation figures", "Alerts remediated, fixed without a person, "
             "auto-fix rate and mean time to recover.", EmptyInput, RemediationStats, get_remediation_stats, "read",
             lambda s: f"auto-fix rate {s.auto_fix_rate}, MTTR {s.mttr_s} s over {s.remediated}",
             (Intent(patterns=(r"\b(auto-?fix|mttr|mean\s+time\s+to\s+recover|remediation\s+(stats|rate))\b",),),)),
    ]
