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
from ops_agent.errors import GovernanceUnavailable, OpsAgentError, SideEffectInProgress
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
    "service_arguments",
]

Invoke = Callable[[Caller, str, dict[str, Any]], Awaitable[Any]]
Probe = Callable[[str], Awaitable[ServiceHealth]]
Traffic = Callable[[str, float, float], Awaitable[tuple[int, int]]]  # service, start, end -> (requests, 5xx) logged
VERIFY_INTERVAL_S = 1.0
SETTLE_S = 2.0  # requests in flight while the fix landed may still fail; the clean stretch starts after
CLEAN_FOR_S = 3.0  # how long a stretch with no 5xx must be to count
INGEST_LAG_S = 1.0  # lines reach the index this long after they are written (file followers poll)


class IncidentInput(ToolInput):
    service: str = Field(min_length=1, max_length=64, description="A configured service (services: in the config).")


class IncidentResponder:
    def __init__(
        self,
        diagnoser: Diagnoser,
        invoke: Invoke,
        probe: Probe,
        traffic: Traffic,
        settings: IncidentSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.diagnoser = diagnoser
        self.invoke = invoke
        self.probe = probe
        self.traffic = traffic
        self.settings = settings
        self.clock = clock
        self.reports: deque[tuple[float, RemediationReport]] = deque(maxlen=100)  # (finished at, report), newest last
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._fixed: dict[str, tuple[float, RemediationReport]] = {}  # lock key -> its last verified fix

    async def remediate(self, service: str, caller: Caller) -> RemediationReport:
        # Several alerts about one incident each ask for a fix: one at a time (per project: services of one
        # project share its production), and a fix verified after the trouble began answers the others while
        # the service is still well (a second rollback would undo the good version the first went back to).
        key = self.diagnoser.service(service).project or service
        async with self._locks[key]:
            onset = await self.diagnoser.onset(service)
            fixed = self._fixed.get(key)
            if onset is None or (fixed is not None and fixed[0] >= onset):
                # no alert is firing (it resolved while this request waited, or none ever did), or a fix
                # landed after the trouble began: if the service is well now, there is nothing to do
                well, how = await self._well_now(service)
                if well:
                    return self._nothing_to_do(service, fixed if onset is not None else None, how)
            report = await self._remediate(service, caller)
            finished = self.clock()
            self.reports.append((finished, report))
            if report.verified:
                self._fixed[key] = (finished, report)
            return report

    def _nothing_to_do(self, service: str, fixed: tuple[float, RemediationReport] | None, how: str) -> RemediationReport:
        if fixed is not None:
            return fixed[1].model_copy(update={
                "action_taken": None, "action_ok": None, "verification": how,
                "outcome": f"already fixed at {iso(fixed[0])}: {fixed[1].outcome}",
            })
        diagnosis = Diagnosis(
            service=service, onset=iso(self.clock()) or "", cause="healthy", evidence=[how], fixable=False,
            summary=f"no alert about {service} is firing and it answers well now: nothing to fix",
        )
        return RemediationReport(diagnosis=diagnosis, outcome=diagnosis.summary, verified=True, verification=how,
                                 escalated=False)

    async def _remediate(self, service: str, caller: Caller) -> RemediationReport:
        diagnosis = await self.diagnoser.diagnose(service)
        action = diagnosis.action
        if action is None:
            nothing = diagnosis.cause == "healthy"
            return RemediationReport(
                diagnosis=diagnosis, outcome=diagnosis.summary if nothing else f"no automatic fix: {diagnosis.summary}",
                verified=False, verification="nothing was done", escalated=not nothing,
            )
        try:  # its own governed call: the gate decides on the action, whoever asked for the remediation
            result = await self.invoke(caller, action.tool, action.arguments)
        except (GovernanceUnavailable, SideEffectInProgress):
            raise  # an outage: the task is retried later, as for any step
        except OpsAgentError as exc:
            return RemediationReport(
                diagnosis=diagnosis, action_taken=action, action_ok=False, outcome=exc.public_message,
                verified=False, verification="the action did not run to completion", escalated=True,
            )
        ok = getattr(result, "exit_code", 0) == 0
        outcome = _outcome(action, result)
        try:
            verified, verification = await self._verify(service) if ok else (False, "the action failed")
        except OpsAgentError as exc:  # the fix ran; only checking it failed
            verified, verification = False, f"could not verify: {exc.public_message}"
        return RemediationReport(
            diagnosis=diagnosis, action_taken=action, action_ok=ok, outcome=outcome,
            verified=verified, verification=verification, escalated=not verified,
        )

    async def _verify(self, service: str) -> tuple[bool, str]:
        """Healthy probes in a row, and a stretch of `CLEAN_FOR_S` with no 5xx logged, after the fix settled."""
        deadline = self.clock() + self.settings.verify_timeout_s
        clean_since = self.clock() + SETTLE_S
        streak, problem = 0, "no clean stretch yet"
        while True:
            health = await self.probe(service)
            streak = streak + 1 if health.status == "up" else 0
            if health.status != "up":
                problem = "health down" + (f" ({health.error})" if health.error else "")
            now = self.clock()
            logged_until = now - INGEST_LAG_S
            if streak >= self.settings.verify_checks and logged_until - clean_since >= CLEAN_FOR_S:
                requests, errors = await self.traffic(service, clean_since, logged_until)
                if errors == 0:
                    seen = f"{requests} requests" if requests else "no traffic logged, so health alone"
                    return True, f"{streak} healthy probes in a row; no 5xx from {iso(clean_since)} ({seen})"
                problem = f"{errors} of {requests} requests answered 5xx after the fix"
                clean_since, streak = now, 0  # failures after the fix: start a clean stretch again
            if now >= deadline:
                return False, f"not well within {self.settings.verify_timeout_s:g} s: {problem}"
            await asyncio.sleep(VERIFY_INTERVAL_S)

    async def _well_now(self, service: str) -> tuple[bool, str]:
        """One probe and the last few seconds of traffic: is an earlier fix still holding?"""
        health = await self.probe(service)
        now = self.clock()
        _, errors = await self.traffic(service, now - INGEST_LAG_S - CLEAN_FOR_S, now - INGEST_LAG_S)
        return health.status == "up" and errors == 0, f"still healthy, no 5xx in the last {CLEAN_FOR_S:g} s"


def _outcome(action: ProposedAction, result: Any) -> str:
    if action.tool == "rollback":
        return str(getattr(result, "note", "rolled back"))
    return f"{result.name} exited {result.exit_code}"


def service_arguments(clause: str, facts: Mapping[str, Any]) -> list[dict[str, Any]] | str:
    """The offline planner's reading of "fix the api": the configured services the clause names."""
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
                arguments=service_arguments,
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
                arguments=service_arguments,
            ),),
            summarize=lambda r: (f"{r.action_taken.tool} {'verified' if r.verified else 'not verified'}: {r.outcome}"
                                 if r.action_taken else r.outcome),
        ),
    ]
