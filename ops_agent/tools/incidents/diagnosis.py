"""Incident diagnosis: what is wrong with a service, and the one governed action that would fix it.

The evidence is what the agent already watches: the service's error lines matched against the known
failure signatures, its scraped memory and disk figures (`job=<service>`), its latest health check, and
the Vercel deployment its production serves. `decide` reads the evidence in a fixed order:

    no alert, no failing check, no errors   -> nothing: there is nothing to fix
    disk full                              -> the service's `free_disk` command
    production went live just before       -> roll that deployment back to the previous READY one
    memory exhausted or climbing           -> the service's `restart` command
    a dependency refusing or timing out    -> nothing: the dependency is not ours to fix; people are needed
    crashing or erroring, nothing changed  -> the service's `restart` command
    nothing recognisable                   -> nothing; people are needed

The disk comes first because a full disk is fixed by cleaning it whatever was deployed. The deployment comes
before memory and dependencies: a new version that leaks is fixed by rolling it back (a restart only buys
time), and one with a wrong database URL looks, in the logs, exactly like the database going away. A
deployment that a rollback put back in production is never blamed for its age (no rollback of a rollback).
A signature counts only when it is a good part of the error lines, so one planted line cannot pick the
fix; and the action is chosen from that fixed set with its arguments from the configuration, never from
text read in a log line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ops_agent.config import IncidentSettings, ServiceCheck
from ops_agent.errors import OpsAgentError, ToolRetry
from ops_agent.tools.alerts.models import Alert, AlertRule
from ops_agent.tools.deployment.deployment_tool import DeploymentTool
from ops_agent.tools.deployment.models import DeploymentInfo, deployment_info
from ops_agent.tools.incidents.models import Diagnosis, ProposedAction
from ops_agent.tools.logs.log_analysis_tool import LogAnalysisTool
from ops_agent.tools.logs.models import iso
from ops_agent.tools.monitoring.health import ServiceHealth
from ops_agent.tools.monitoring.series import SeriesStore

__all__ = ["Diagnoser", "Evidence", "decide"]

DISK = {"disk_full"}
MEMORY = {"out_of_memory"}
DEPENDENCY = {"connection_refused", "timeout", "dns_failure", "connection_pool_exhausted", "upstream_5xx"}
CRASH = {"crash_loop", "module_not_found"}
DISK_FULL_RATIO = 0.85  # where a disk alert usually fires: the disk is the cause well before writes fail
MEMORY_GROWTH = 1.5  # newest memory at least this times the lowest of the lookback, and still rising
MEMORY_SERIES = "process_resident_memory_bytes"
DISK_SERIES_SUFFIX = "disk_used_ratio"
ERRORS_BEFORE_ONSET_S = 60.0  # error lines (and memory) this long before the onset still belong to the incident
RECENT_S = 120.0  # asked with no alert: the trouble is what the last two minutes show
FRESH_S = 60.0  # a scraped figure older than this says nothing about now (the target may be down)
SIGNATURE_MIN_LINES = 3
SIGNATURE_MIN_SHARE = 0.1

ActiveAlerts = Callable[[], Awaitable[list[tuple[Alert, AlertRule | None]]]]


@dataclass(frozen=True)
class Evidence:
    service: str
    onset: float
    alerted: bool = False  # an active alert is about the service
    signatures: Mapping[str, int] = field(default_factory=dict)  # matched signature -> lines
    error_lines: int = 0
    health: ServiceHealth | None = None
    memory: Sequence[float] = ()  # scraped resident memory since just before the onset, bytes, oldest first
    disk_ratio: float | None = None  # the newest fresh figure
    deployment: DeploymentInfo | None = None  # what production serves now
    restored: bool = False  # production serves an older deployment than its newest: a rollback put it there
    project: str | None = None
    commands: Mapping[str, str] = field(default_factory=dict)  # remediation kind -> allowed command name


def decide(e: Evidence, *, deploy_suspect_s: float) -> Diagnosis:
    """The cause the evidence points to and, where it is ours to fix, the one call that fixes it."""
    facts = _facts(e)

    def shows(names: set[str]) -> bool:
        """Those signatures are a large part of the errors, not one stray line (which a log line could plant)."""
        count = sum(n for name, n in e.signatures.items() if name in names)
        return count >= max(SIGNATURE_MIN_LINES, SIGNATURE_MIN_SHARE * e.error_lines)

    def result(cause, summary, action: ProposedAction | None, *, fixable: bool | None = None) -> Diagnosis:
        return Diagnosis(
            service=e.service, onset=iso(e.onset) or "", cause=cause, summary=summary, evidence=facts,
            action=action, fixable=action is not None if fixable is None else fixable,
        )

    def command(kind: str, cause, what: str) -> Diagnosis:
        name = e.commands.get(kind)
        if name is None:
            return result(cause, f"{what}; no `{kind}` command is configured for {e.service} "
                          f"(services[].commands.{kind}), so people must act", None)
        return result(cause, f"{what}: run {name}", ProposedAction(
            tool="run_restart_command", arguments={"name": name}, reason=what))

    down = e.health is not None and e.health.status == "down"
    disk_full = e.disk_ratio is not None and e.disk_ratio >= DISK_FULL_RATIO
    climbing = _memory_climbing(e.memory)
    if not (e.alerted or down or e.error_lines or disk_full or climbing):
        return result("healthy", f"no alert, health check failure or error line about {e.service}: nothing to fix",
                      None, fixable=False)
    if disk_full or shows(DISK):
        return command("free_disk", "disk_full", f"the disk of {e.service} is full or nearly so")
    went_live = e.deployment.ready_at.timestamp() if e.deployment and e.deployment.ready_at else None
    if went_live is not None and not e.restored and 0 <= e.onset - went_live <= deploy_suspect_s:
        assert e.deployment is not None
        what = (f"the trouble began {e.onset - went_live:.0f} s after deployment {e.deployment.id} "
                f"({e.deployment.branch or 'unknown branch'}) went live in production")
        return result("bad_deployment", f"{what}: roll back {e.project}", ProposedAction(
            tool="rollback", arguments={"project": e.project, "deployment_id": e.deployment.id}, reason=what))
    if climbing or shows(MEMORY):
        return command("restart", "memory_exhausted", f"{e.service} is running out of memory")
    if shows(DEPENDENCY):
        names = ", ".join(sorted(set(e.signatures) & DEPENDENCY))
        return result("dependency_down", f"a dependency of {e.service} fails ({names}) and nothing of ours changed: "
                      "restarting or rolling back would not bring it back, so people must act", None)
    if down or shows(CRASH):
        return command("restart", "crashing", f"{e.service} is crashing or down with no recent change")
    if e.error_lines:
        return command("restart", "application_errors", f"{e.service} logs errors with no recent change")
    return result("unknown", f"nothing in the logs, metrics or deployments of {e.service} explains it", None)


def _memory_climbing(memory: Sequence[float]) -> bool:
    if len(memory) < 3:
        return False
    return memory[-1] >= MEMORY_GROWTH * min(memory) and memory[-1] >= memory[-2] >= memory[-3]


def _facts(e: Evidence) -> list[str]:
    facts = [f"{count} lines match {name}" for name, count in sorted(e.signatures.items(), key=lambda kv: -kv[1])]
    if e.error_lines:
        facts.append(f"{e.error_lines} error lines since the onset")
    if e.health is not None:
        facts.append(f"health: {e.health.status}" + (f" ({e.health.error})" if e.health.error else ""))
    if e.memory:
        facts.append(f"memory {e.memory[-1] / 2**20:.0f} MiB (lowest {min(e.memory) / 2**20:.0f} MiB in the window)")
    if e.disk_ratio is not None:
        facts.append(f"disk {e.disk_ratio:.0%} used")
    if e.deployment is not None:
        live = e.deployment.ready_at.isoformat() if e.deployment.ready_at else "unknown"
        facts.append(f"production serves {e.deployment.id} ({e.deployment.branch or '?'}), ready since {live}")
    return facts


class Diagnoser:
    """Gathers the evidence for one service and hands it to `decide`."""

    def __init__(
        self,
        services: Sequence[ServiceCheck],
        settings: IncidentSettings,
        *,
        logs: LogAnalysisTool,
        deployments: DeploymentTool,
        series: SeriesStore,
        health: Callable[[str], ServiceHealth | None],
        active_alerts: ActiveAlerts,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = {service.name: service for service in services}
        self.settings = settings
        self.logs = logs
        self.deployments = deployments
        self.series = series
        self.health = health
        self.active_alerts = active_alerts
        self.clock = clock

    def service(self, name: str) -> ServiceCheck:
        service = self.services.get(name)
        if service is None:
            known = ", ".join(sorted(self.services)) or "none configured (services:)"
            raise ToolRetry(f"service: {name!r} is not a configured service ({known})")
        return service

    async def diagnose(self, name: str) -> Diagnosis:
        service = self.service(name)
        now = self.clock()
        onset = await self.onset(name)
        # with an alert: from just before it began; asked without one: what the last minutes show
        start = now - RECENT_S if onset is None else max(now - self.settings.lookback_s, onset - ERRORS_BEFORE_ONSET_S)
        patterns = await self.logs.analyze_error_patterns(time_range=f"{iso(start)}..{iso(now)}", service=name)
        alerted = onset is not None
        if onset is None:  # the trouble began with the first error line, if any
            firsts = [datetime.fromisoformat(p.first_seen).timestamp() for p in patterns.patterns]
            onset = min(firsts, default=now)
        facts: list[str] = []
        deployment, restored = await self._production(service.project, facts) if service.project else (None, False)
        evidence = Evidence(
            service=name,
            onset=onset,
            alerted=alerted,
            signatures={hit.name: hit.count for hit in patterns.signatures},
            error_lines=patterns.lines,
            health=self.health(name),
            memory=await self._memory(name, start, now),
            disk_ratio=await self._disk_ratio(name, now),
            deployment=deployment,
            restored=restored,
            project=service.project,
            commands=service.commands,
        )
        diagnosis = decide(evidence, deploy_suspect_s=self.settings.deploy_suspect_s)
        diagnosis.evidence += facts
        diagnosis.recommendations = [hit.recommendation for hit in patterns.signatures]
        return diagnosis

    async def onset(self, name: str) -> float | None:
        """When the earliest firing alert about the service began (its rule's `service` label, or the name in
        its condition); None when no alert is about it."""
        starts = [  # firing only: a pending alert may have been half-true for hours without meaning anything
            alert.started_at
            for alert, rule in await self.active_alerts()
            if alert.state == "firing" and rule is not None
            and (rule.labels.get("service") == name or _names(rule.condition, name))
        ]
        return min(starts, default=None)

    async def _memory(self, name: str, start: float, end: float) -> list[float]:
        found = await self.series.points(MEMORY_SERIES, {"job": name}, start, end)
        return [point.value for point in max(found.values(), key=len)] if found else []

    async def _disk_ratio(self, name: str, now: float) -> float | None:
        ratios = []
        for series_name in await self.series.names():
            if series_name.endswith(DISK_SERIES_SUFFIX):
                found = await self.series.points(series_name, {"job": name}, now - FRESH_S, now)
                ratios += [points[-1].value for points in found.values() if points]
        return max(ratios, default=None)

    async def _production(self, project: str, facts: list[str]) -> tuple[DeploymentInfo | None, bool]:
        """What production of `project` serves, and whether a rollback put it there (it is older than the
        newest READY production deployment). (None, False), and a fact saying why, when Vercel cannot tell:
        a Vercel outage still leaves the disk, memory and dependency findings."""
        try:
            client = self.deployments.client
            details = await client.get_project(project)
            current = (details.get("targets") or {}).get("production") or {}
            if not current.get("id"):
                return None, False
            serving = deployment_info(await client.get_deployment(current["id"]), project)
            page = await client.list_deployments(projectId=details.get("id"), target="production", state="READY", limit=1)
        except OpsAgentError as exc:
            facts.append(f"the deployments of {project} are unknown: {exc.public_message}")
            return None, False
        newest = [deployment_info(item, project).id for item in page.get("deployments", [])[:1]]
        restored = bool(newest) and newest[0] != serving.id
        if restored:
            facts.append(f"{serving.id} was put back in production by a rollback; {newest[0]} is newer")
        return serving, restored


def _names(condition: str, name: str) -> bool:
    """The condition is about the service: `health(name)`, or a `service`/`job` label equal to it."""
    escaped = re.escape(name)
    quoted = rf"(\"{escaped}\"|{escaped}(?![\w.-]))"  # names with '-' or '.' are quoted in conditions
    return re.search(rf"health\(\s*{quoted}\s*\)|\b(service|job)\s*=\s*{quoted}", condition) is not None
