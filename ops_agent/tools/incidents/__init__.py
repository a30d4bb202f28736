"""Incidents: diagnose what is wrong with a service, and fix it with one governed action, then verify.

    diagnose_incident    read: the cause, the evidence and the action that would fix it (diagnosis.py)
    remediate_incident   delegate: diagnose, run that action through the gate as its own call, and wait for
                         the service to answer healthy with no server errors; or say that people must act

An alert rule whose remediation is the task "fix the <service> service" closes the loop: the alert fires,
the task diagnoses and acts, and the alert resolving records the time to recover.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mcp.types import ToolAnnotations
from pydantic import Field

from ops_agent.config import IncidentSettings
from ops_agent.errors import BudgetExceeded, PermissionDenied, ToolFailed, ToolRetry
from ops_agent.governance import Caller
from ops_agent.registry import Intent, ToolContext, ToolInput, ToolSpec, mentioned
from ops_agent.tools.incidents.diagnosis import Diagnoser, Evidence, decide
from ops_agent.tools.incidents.models import Diagnosis, ProposedAction, RemediationReport
from ops_agent.tools.logs.models import iso
from ops_agent.tools.monitoring.health import ServiceHealth

__all__ = [
    "Diagnoser",
    "Diagnosis",
    "Evidence",
    "IncidentResponder",
    "ProposedAction",
    "RemediationReport",
    "decide",
    "incident_specs",
]

Invoke = Callable[[Caller, str, dict[str, Any]], Awaitable[Any]]
Probe = Callable[[str], Awaitable[ServiceHealth]]
ServerErrors = Callable[[str, float, float], Awaitable[int]]  # service, start, end -> 5xx lines logged
VERIFY_INTERVAL_S = 1.0
SETTLE_S = 1.0  # requests in flight while the fix landed may still fail; errors count from this long after


class IncidentInput(ToolInput):
    service: str = Field(min_length=1, max_length=64, description="A configured service (services: in the config).")


class IncidentResponder:
    def __init__(
        self,
        diagnoser: Diagnoser,
        invoke: Invoke,
        probe: Probe,
        server_errors: ServerErrors,
        settings: IncidentSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.diagnoser = diagnoser
        self.invoke = invoke
        self.probe = probe
        self.server_errors = server_errors
        self.settings = settings
        self.clock = clock
        self.reports: deque[tuple[float, RemediationReport]] = deque(maxlen=100)  # (finished at, report), newest last
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._fixed: dict[str, tuple[float, RemediationReport]] = {}  # service -> its last verified fix

    async def remediate(self, service: str, caller: Caller) -> RemediationReport:
        # Several alerts about one incident each ask for a fix: one at a time, and a fix verified after the
        # trouble began answers the others (a second rollback would undo the good version it went back to).
        async with self._locks[service]:
            onset = await self.diagnoser.onset(service)
            fixed = self._fixed.get(service)
            if fixed is not None and onset is not None and fixed[0] >= onset:
                return fixed[1].model_copy(update={"outcome": f"already fixed: {fixed[1].outcome}"})
            report = await self._remediate(service, caller)
            finished = self.clock()
            self.reports.append((finished, report))
            if report.verified:
                self._fixed[service] = (finished, report)
            return report

    async def _remediate(self, service: str, caller: Caller) -> RemediationReport:
        diagnosis = await self.diagnoser.diagnose(service)
        action = diagnosis.action
        if action is None:
            return RemediationReport(
                diagnosis=diagnosis, outcome=f"no automatic fix: {diagnosis.summary}", verified=False,
                verification="nothing was done", escalated=True,
            )
        try:  # its own governed call: the gate decides on the action, whoever asked for the remediation
            result = await self.invoke(caller, action.tool, action.arguments)
        except (PermissionDenied, BudgetExceeded, ToolFailed, ToolRetry) as exc:
            return RemediationReport(
                diagnosis=diagnosis, action_taken=action, action_ok=False, outcome=exc.public_message,
                verified=False, verification="the action did not run to completion", escalated=True,
            )
        ok = getattr(result, "exit_code", 0) == 0
        outcome = _outcome(action, result)
        verified, verification = await self._verify(service) if ok else (False, "the action failed")
        return RemediationReport(
            diagnosis=diagnosis, action_taken=action, action_ok=ok, outcome=outcome,
            verified=verified, verification=verification, escalated=not verified,
        )

    async def _verify(self, service: str) -> tuple[bool, str]:
        """Healthy probes in a row, and no server error logged since the fix settled, before the deadline."""
        deadline = self.clock() + self.settings.verify_timeout_s
        clean_since = self.clock() + SETTLE_S
        streak = 0
        while True:
            health = await self.probe(service)
            streak = streak + 1 if health.status == "up" else 0
            now = self.clock()
            if streak >= self.settings.verify_checks and now >= clean_since:
                errors = await self.server_errors(service, clean_since, now)
                if errors == 0:
                    return True, f"{streak} healthy probes in a row and no 5xx since {iso(clean_since)}"
                clean_since, streak = now, 0  # failures after the fix: start a clean stretch again
            if now >= deadline:
                last = f"health {health.status}" + (f" ({health.error})" if health.error else "")
                return False, f"not healthy within {self.settings.verify_timeout_s:g} s: {last}"
            await asyncio.sleep(VERIFY_INTERVAL_S)


def _outcome(action: ProposedAction, result: Any) -> str:
    if action.tool == "rollback":
        return str(getattr(result, "note", "rolled back"))
    return f"{result.name} exited {result.exit_code}"


def _service_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    services = facts.get("services") or []
    named = mentioned(clause, services)
    if not named and len(services) == 1:
        named = list(services)  # one service configured: "fix it" can only mean that one
    if not named:
        return "name the service (" + (", ".join(services) or "none configured: add services: to the config") + ")"
    return [{"service": name} for name in named]


def incident_specs(responder: IncidentResponder) -> list[ToolSpec]:
    diagnoser = responder.diagnoser

    async def diagnose_incident(args: IncidentInput, ctx: ToolContext) -> Diagnosis:
        return await diagnoser.diagnose(args.service)

    async def remediate_incident(args: IncidentInput, ctx: ToolContext) -> RemediationReport:
        diagnoser.service(args.service)  # a bad name is the caller's to fix, before anything runs
        return await responder.remediate(args.service, ctx.caller)

    return [
        ToolSpec(
            name="diagnose_incident",
            title="Diagnose an incident",
            description="What is wrong with a service: the cause (disk, memory, a bad deployment, a dependency, "
            "crashes), the evidence from its logs, metrics, health and deployments, and the one action that "
            "would fix it, if it is ours to fix. Changes nothing.",
            input_model=IncidentInput, output_model=Diagnosis, handler=diagnose_incident,
            actions=("read",), annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True),
            intents=(Intent(
                patterns=(r"\bdiagnose\b", r"\bwhat'?s wrong with\b", r"\broot[- ]cause of (the )?[\w.-]+ (service|incident)\b"),
                arguments=_service_arguments,
            ),),
            summarize=lambda d: f"{d.cause}: {d.summary}",
        ),
        ToolSpec(
            name="remediate_incident",
            title="Fix an incident",
            description="Diagnose a service and, when the cause is ours to fix, run the fix as its own governed "
            "call (roll back production, or a configured restart or free-disk command), then wait until the "
            "service answers healthy with no server errors. Otherwise it says that people must act.",
            input_model=IncidentInput, output_model=RemediationReport, handler=remediate_incident,
            actions=("incident:remediate",),
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True),
            timeout_s=600,
            intents=(Intent(
                patterns=(r"\b(fix|remediate|repair|heal|mitigate|recover)\b",),
                arguments=_service_arguments,
            ),),
            summarize=lambda r: (f"{r.action_taken.tool} {'verified' if r.verified else 'not verified'}: {r.outcome}"
                                 if r.action_taken else r.outcome),
        ),
    ]
