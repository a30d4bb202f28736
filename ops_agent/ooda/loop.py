"""The OODA loop of one task: observe -> orient/decide (the planner) -> act (through the gate) -> report.

Every call the planner asks for goes through `ToolRegistry.invoke`, so through the gate, under the
caller's identity and the task's id. The loop itself refuses an exact repeat of an earlier call (the
model gets the refusal as an error result) and stops at the step cap, forcing a final answer on the
last step. A task that ran consequential steps scores once on the caller's reputation.

Side-effecting steps carry an idempotency key made from the task id, the tool and its arguments: a tool
that takes one (`ToolSpec.idempotency_field`, e.g. deploy's `idempotency_key`) gets it, and with a
`step_guard` (the worker sets the Redis queue) the step runs once across deliveries of the task, a
redelivery replaying the result kept from the first run.

A guarded step (deploy, rollback, env change, restart or fix, notification, webhook) runs only when the task
asked for it and every value it acts on is vouched for (`ops_agent.ooda.provenance`). Otherwise it is held
for the operator (`approval_required`): kept in the approval store, audited as `held_approval`, and offered
to the `approver` when there is one (an MCP client that supports elicitation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from ops_agent.errors import (
    GovernanceRefusal,
    GovernanceUnavailable,
    OpsAgentError,
    SideEffectInProgress,
)
from ops_agent.governance.approvals import ApprovalStore, Approver
from ops_agent.governance.gate import Caller, GovernanceGate
from ops_agent.governance.policy import CONSEQUENTIAL
from ops_agent.ooda.planner import (
    Act,
    Decision,
    Finish,
    Observation,
    Planner,
    StepResult,
    ToolCall,
)
from ops_agent.ooda.provenance import TaskProvenance, guarded, validated
from ops_agent.registry import ProgressCallback, ToolRegistry

__all__ = ["Step", "StepGuard", "TaskLoop", "TaskReport", "step_key"]

log = logging.getLogger("ops_agent.ooda")


class Step(BaseModel):
    tool: str
    arguments: dict[str, Any]
    ok: bool
    summary: str | None = None
    error: str | None = None
    output: dict[str, Any] | None = None


class TaskCost(BaseModel):
    tokens: int = 0
    usd: float = 0.0
    llm_requests: int = 0


class TaskReport(BaseModel):
    """What `execute_task` returns: the seed's keys (`status`, `deployment_url`, `patterns`,
    `recommendations`) plus the steps taken and what the task cost."""

    task_id: str
    task: str
    priority: str
    status: Literal["completed", "partial", "failed", "not_understood", "refused", "approval_required"]
    summary: str
    planner: str
    steps: list[Step] = Field(default_factory=list)
    approval_required: list[str] = Field(
        default_factory=list, description="Ids of steps held for the operator: `ops-agent approvals approve ID`."
    )
    not_understood: list[str] = Field(default_factory=list)
    cost: TaskCost = Field(default_factory=TaskCost)
    duration_s: float = 0.0
    deployment_url: str | None = None
    patterns: list[dict[str, Any]] = Field(default_factory=list)
    recommendations: list[str] = Field(default_factory=list)


class StepGuard(Protocol):
    async def run_once(self, key: str, step: Callable[[], Awaitable[str]]) -> tuple[str, bool]:
        """Run `step` once for `key`: (its result, True), or (the result kept from before, False)."""
        ...


def step_key(task_id: str, tool: str, arguments: dict[str, Any]) -> str:
    """The idempotency key of one step: the same call in the same task has the same key on every delivery."""
    call = json.dumps([task_id, tool, arguments], sort_keys=True, default=str)
    return "step-" + hashlib.sha256(call.encode()).hexdigest()[:32]


class TaskLoop:
    def __init__(
        self,
        registry: ToolRegistry,
        planner: Planner,
        gate: GovernanceGate,
        *,
        max_steps: int = 8,
        facts: dict[str, Any] | None = None,
        approvals: ApprovalStore | None = None,
        configured: list[str] | None = None,
    ) -> None:
        self.registry = registry
        self.planner = planner
        self.gate = gate
        self.max_steps = max_steps
        self.facts = facts or {}
        self.step_guard: StepGuard | None = None
        self.approvals = approvals  # None: a step that would be held is refused instead
        self.configured = configured or []  # values the operator configured: projects, services, channels ...

    async def facts_for(self, caller: Caller) -> dict[str, Any]:
        facts = dict(self.facts)
        if not self.gate.degraded:
            facts["permission_level"] = self.gate.level(await self.gate.agent(caller))
        return facts

    async def observe(self, caller: Caller) -> Observation:
        """Cheap context for planning; each read goes through the gate like any call."""
        facts = await self.facts_for(caller)
        snapshot: dict[str, Any] = {}
        if self.planner.uses_snapshot and self.registry.get("get_system_metrics"):
            try:
                metrics = await self.registry.invoke(caller, "get_system_metrics", {})
                snapshot["system_metrics"] = metrics.model_dump(mode="json")
            except OpsAgentError as exc:
                snapshot["system_metrics_error"] = exc.public_message
        return Observation(facts=facts, snapshot=snapshot)

    async def preview(self, task: str, priority: str, caller: Caller) -> Decision:
        """The planner's first decision, from facts alone: nothing is executed (`ops-agent plan`)."""
        observation = Observation(facts=await self.facts_for(caller))
        return await self.planner.session(task, priority, observation, caller).decide([], last_step=False)

    async def run(
        self,
        task: str,
        priority: str,
        caller: Caller,
        progress: ProgressCallback | None = None,
        approver: Approver | None = None,
    ) -> TaskReport:
        started = time.monotonic()
        if caller.task_id is None:
            caller = caller.in_task(f"task-{uuid.uuid4().hex[:12]}")
        report = TaskReport(
            task_id=caller.task_id or "", task=task, priority=priority, status="failed", summary="",
            planner=self.planner.name,
        )
        session = None
        consequential = False
        try:
            observation = await self.observe(caller)
            provenance = TaskProvenance.for_task(task, self.registry, observation.facts, self.configured)
            held = _Held(task, provenance, approver)
            session = self.planner.session(task, priority, observation, caller)
            results: list[StepResult] = []
            seen: set[str] = set()
            for step in range(self.max_steps):
                decision = await session.decide(results, last_step=step == self.max_steps - 1)
                if isinstance(decision, Finish):
                    report.summary, report.not_understood = decision.summary, decision.not_understood
                    report.status = decision.status
                    break
                assert isinstance(decision, Act)
                results = []
                for call in decision.calls:
                    if progress is not None:
                        await progress(len(report.steps), None, f"calling {call.tool}")
                    result = await self._act(caller, call, seen, held)
                    consequential |= result.ok and self._is_consequential(call.tool)
                    results.append(result)
                    if result.ok and result.output:
                        provenance.observe(self.registry.get(call.tool), call.tool, result.output)
                        _collect_findings(report, result.output)
                    report.steps.append(
                        Step(tool=call.tool, arguments=call.arguments, ok=result.ok, summary=result.summary,
                             error=result.error, output=result.output)
                    )
            else:
                report.summary = f"stopped at the step cap ({self.max_steps}) before the planner finished"
                report.status = "partial" if any(step.ok for step in report.steps) else "failed"
        except (GovernanceUnavailable, SideEffectInProgress):
            raise  # an outage, or a step busy elsewhere: not the task's answer; a queued task is retried later
        except GovernanceRefusal as exc:
            report.status, report.summary = "refused", exc.public_message
        except OpsAgentError as exc:
            report.status, report.summary = "failed", exc.public_message
        if report.status in ("completed", "partial"):
            report.status = min(_overall(report), report.status, key=["failed", "partial", "completed"].index)
        if session is not None and held.ids:
            report.approval_required = held.ids
            report.summary += "\nHeld for the operator's approval: " + ", ".join(held.ids)
            if report.status != "completed":
                report.status = "approval_required"
        if session is not None:
            report.cost = TaskCost(
                tokens=session.spend.tokens, usd=session.spend.usd_micros / 1e6, llm_requests=session.spend.requests
            )
        report.duration_s = round(time.monotonic() - started, 3)
        if consequential:
            await self.gate.task_outcome(caller, report.status == "completed", task[:200])
        log.info("task %s %s: %d steps, %d tokens", report.task_id, report.status, len(report.steps), report.cost.tokens)
        return report

    async def _act(self, caller: Caller, call: ToolCall, seen: set[str], held: _Held) -> StepResult:
        key = f"{call.tool}:{json.dumps(call.arguments, sort_keys=True, default=str)}"
        if key in seen:
            return StepResult(call, ok=False, error="refused: exact repeat of an earlier call in this task; use its result")
        seen.add(key)
        spec = self.registry.get(call.tool)
        if spec is None or not spec.planner_visible:  # e.g. execute_task: a task may not start a task
            return StepResult(call, ok=False, error=f"tool {call.tool!r} is not available to the planner")
        if (parsed := validated(spec, call.arguments)) is not None:  # invalid: the registry says why
            rule = self.gate.policy.rule(spec.action_for(parsed))
            if guarded(rule) and (reasons := held.provenance.review(spec, rule, call)):
                return await self._hold(caller, call, spec, rule.action, reasons, held)
        if spec.annotations.read_only_hint or caller.task_id is None:
            return await self._invoke(caller, call, spec, call.arguments)
        idempotency = step_key(caller.task_id, call.tool, call.arguments)
        arguments = call.arguments
        if spec.idempotency_field and not arguments.get(spec.idempotency_field):
            arguments = {**arguments, spec.idempotency_field: idempotency}
        if self.step_guard is None:
            return await self._invoke(caller, call, spec, arguments)
        async def step() -> str:
            result = await self._invoke(caller, call, spec, arguments)
            if not result.ok:  # not kept: a redelivery tries a failed step again (its own key guards it)
                raise _StepFailed(result)
            return json.dumps({"output": result.output, "summary": result.summary})

        try:
            kept, first = await self.step_guard.run_once(idempotency, step)
        except _StepFailed as failed:
            return failed.result
        if not first:
            log.info("step %s of task %s already ran in an earlier delivery: its result is replayed",
                     call.tool, caller.task_id)
        done = json.loads(kept)
        return StepResult(call, ok=True, output=done["output"], summary=done["summary"])

    async def _invoke(self, caller: Caller, call: ToolCall, spec: Any, arguments: dict[str, Any]) -> StepResult:
        return await self._step(call, spec, lambda: self.registry.invoke(caller, call.tool, arguments))

    async def _step(self, call: ToolCall, spec: Any, run: Callable[[], Awaitable[BaseModel]]) -> StepResult:
        """Run one step's call: its output and summary, or its error for the planner (an outage propagates)."""
        try:
            output = await run()
        except GovernanceUnavailable:
            raise
        except OpsAgentError as exc:
            return StepResult(call, ok=False, error=exc.public_message)
        summary = spec.summarize(output) if spec.summarize else None
        return StepResult(call, ok=True, output=output.model_dump(mode="json"), summary=summary)

    async def _hold(
        self, caller: Caller, call: ToolCall, spec: Any, action: str, reasons: list[str], held: _Held
    ) -> StepResult:
        """Keep the call for the operator, audit the hold, and ask the approver when there is one."""
        if self.approvals is None:
            error = "refused: " + "; ".join(reasons)
            await self.gate.hold(caller, call.tool, action, call.arguments, error)
            return StepResult(call, ok=False, error=error)
        approval = await self.approvals.hold(caller, held.task, call.tool, call.arguments, reasons)
        error = (f"approval_required ({approval.id}): " + "; ".join(reasons)
                 + f". Not run; the operator may approve it with `ops-agent approvals approve {approval.id}`.")
        await self.gate.hold(caller, call.tool, action, call.arguments, error)
        answer = await held.approver(approval) if held.approver is not None else None
        if answer is False:
            await self.approvals.decide(approval.id, False, "mcp-elicitation")
            return StepResult(call, ok=False, error=f"denied by the operator ({approval.id}): " + "; ".join(reasons))
        if answer:
            approvals = self.approvals

            async def approved() -> BaseModel:
                return (await approvals.approve_and_run(approval.id, "mcp-elicitation", self.registry.invoke))[1]

            return await self._step(call, spec, approved)
        held.ids.append(approval.id)
        return StepResult(call, ok=False, error=error)

    def _is_consequential(self, tool: str) -> bool:
        spec = self.registry.get(tool)
        return spec is not None and any(self.gate.policy.rule(a).kind in CONSEQUENTIAL for a in spec.actions)


@dataclass
class _Held:
    """One task's provenance and the steps it held."""

    task: str
    provenance: TaskProvenance
    approver: Approver | None
    ids: list[str] = field(default_factory=list)


class _StepFailed(Exception):
    """A guarded step ended in a refusal or an error: nothing is kept for it."""

    def __init__(self, result: StepResult) -> None:
        super().__init__(result.error)
        self.result = result


def _overall(report: TaskReport) -> Literal["completed", "partial", "failed"]:
    ok = sum(step.ok for step in report.steps)
    if ok == len(report.steps) and not report.not_understood:
        return "completed"
    return "partial" if ok else "failed"


def _collect_findings(report: TaskReport, output: dict[str, Any]) -> None:
    """Lift the seed's result keys out of a step's output: a deployment URL, log patterns, recommendations."""
    if output.get("deployment_url"):
        report.deployment_url = output["deployment_url"]
    for pattern in output.get("patterns") or []:
        if isinstance(pattern, dict):
            report.patterns.append(pattern)
    for recommendation in output.get("recommendations") or []:
        if isinstance(recommendation, str) and recommendation not in report.recommendations:
            report.recommendations.append(recommendation)
