"""The governance gate: rate -> budget -> permission -> execute -> cost -> reputation -> audit, per call.

Reputation moves only on consequential work. A read (kind `read` in the policy table) never earns or
loses score, so an agent cannot farm reputation by polling metrics; a call refused for permission or
budget always costs (`permission_denied` -8, `budget_exceeded` -10 at most once per agent per hour).
Inside a task, steps do not score one by one: the task's outcome scores once (`task_outcome`).

Before anything else, a call passes the agent's rate limit (`rate_limit.py`): refused with `RateLimited`
and audited `denied_rate`, at no reputation cost (a burst is not misconduct, and a penalty per refused
call would let one runaway loop sink an agent's score in seconds). The buckets are in process memory,
so limiting holds in degraded mode too, and calls inside a task count against the same agent.

Degraded mode: when the governance store cannot be opened or the agent cannot register, the gate keeps
budgets in process memory, writes audit records to the log, and allows only read actions, refusing the
rest with a clear reason. `governance.fail_open: true` restores the seed's unconstrained behaviour.

Mid-run, the same rule holds call by call. When the reputation store or the cost ledger raises
`GovernanceUnavailable` while a call is checked, a read still runs (permission checked against the last
agent record seen, however old, if there is one), and anything else is refused with that reason
(`denied_degraded`) unless `fail_open`. Nothing is remembered about the outage: the next call asks the
backend again, so the gate recovers as soon as it is back, without a restart or a background task. A
reputation event or a settle that fails *after* the work ran is logged and dropped, so it never turns a
result into an error (an unsettled reservation stays held until its lease books the worst case).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ops_agent.errors import (
    BudgetExceeded,
    GovernanceUnavailable,
    OpsAgentError,
    PermissionDenied,
    RateLimited,
    ToolFailed,
)
from ops_agent.governance.audit import AuditLog, AuditRecord
from ops_agent.governance.ledger import BudgetLimits, BudgetUsage, CostLedger, budget_windows
from ops_agent.governance.policy import CONSEQUENTIAL, FREE, ActionRule, PolicyTable
from ops_agent.governance.rate_limit import RateLimiter, RateLimits
from ops_agent.governance.reputation import AgentRecord, EventType, ReputationStore
from ops_agent.redact import Redactor

__all__ = ["Caller", "GovernanceGate"]

log = logging.getLogger("ops_agent.governance")
T = TypeVar("T")
MAX_OPEN_TASKS = 10_000



@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: an agent identity, the entry point, and the task the call belongs to, if any."""

    agent: str
    via: str = "api"
    task_id: str | None = None
    agent_type: str = "ops_agent"

    def in_task(self, task_id: str) -> Caller:
        return replace(self, task_id=task_id)


class GovernanceGate:
    def __init__(
        self,
        *,
        policy: PolicyTable,
        reputation: ReputationStore,
        ledger: CostLedger,
        audit: AuditLog,
        limits: BudgetLimits,
        probation_tasks: int,
        redactor: Redactor,
        degraded_reason: str | None = None,
        fail_open: bool = False,
        cache_ttl_s: float = 1.0,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.policy = policy
        self.reputation = reputation
        self.ledger = ledger
        self.audit = audit
        self.limits = limits
        self.probation_tasks = probation_tasks
        self.redactor = redactor
        self.degraded_reason = degraded_reason
        self.fail_open = fail_open
        # Agent records (and budget usage far from a limit) are re-read at most every cache_ttl_s, so another
        # process's changes show up.
        self.cache_ttl_s = cache_ttl_s
        self._agents: dict[str, tuple[float, AgentRecord]] = {}
        self._usage_cache: dict[str, tuple[float, BudgetUsage]] = {}
        self._refreshing: dict[str, asyncio.Future[AgentRecord]] = {}
        self._budget_penalised: dict[str, float] = {}
        # Tasks with a successful step at their agent's level, until task_outcome; oldest first, so a task that
        # ended in an outage (no outcome) is dropped once MAX_OPEN_TASKS newer ones are open.
        self._earning_tasks: dict[str, None] = {}
        self.observers: list[Callable[[AuditRecord], None]] = []  # e.g. Telemetry.observe
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter(RateLimits())

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    # -- agents ---------------------------------------------------------------------------------------

    async def register(self, name: str, agent_type: str = "ops_agent") -> AgentRecord:
        """The seed's `get_or_create_agent`, with its log lines."""
        agent = await self.reputation.get_or_create_agent(name, agent_type)
        self._agents[name] = (time.monotonic(), agent)
        log.info("✅ Registered with Governance (agent_id: %s)", agent.id)
        log.info("   Permission Level: %s, Reputation Score: %s", self.level(agent), agent.score)
        return agent

    async def agent(self, caller: Caller) -> AgentRecord:
        cached = self._agents.get(caller.agent)
        if cached and time.monotonic() - cached[0] < self.cache_ttl_s:
            return cached[1]
        # One refresh per agent at a time; concurrent callers share it instead of queueing their own.
        refresh = self._refreshing.get(caller.agent)
        if refresh is None:
            refresh = asyncio.ensure_future(self._load_agent(caller))
            self._refreshing[caller.agent] = refresh
            refresh.add_done_callback(lambda _: self._refreshing.pop(caller.agent, None))
        return await asyncio.shield(refresh)

    async def _load_agent(self, caller: Caller) -> AgentRecord:
        agent = await self.reputation.get_agent(caller.agent)
        if agent is None:
            agent = await self.reputation.get_or_create_agent(caller.agent, caller.agent_type)
        self._agents[caller.agent] = (time.monotonic(), agent)
        return agent

    def level(self, agent: AgentRecord) -> str:
        return self.policy.level_for(agent.score, agent.successes, self.probation_tasks)

    async def status(self, name: str) -> dict[str, Any]:
        """Agent, score, level and budget used and left: what `ops-agent governance` shows."""
        if self.degraded:
            return {"agent": name, "mode": "degraded", "reason": self.degraded_reason, "fail_open": self.fail_open}
        agent = await self.agent(Caller(name))
        used = await self.ledger.usage(agent.id)
        limits = self.limits
        return {
            "agent": name,
            "agent_id": agent.id,
            "mode": "normal",
            "reputation_score": agent.score,
            "permission_level": self.level(agent),
            "probation": {"successes": agent.successes, "required": self.probation_tasks},
            "budget": {
                "hourly_tokens": {"used": used.hour_tokens, "limit": limits.hourly_tokens},
                "daily_tokens": {"used": used.day_tokens, "limit": limits.daily_tokens},
                "hourly_usd": {"used": used.hour_usd_micros / 1e6, "limit": limits.hourly_usd_micros / 1e6},
                "daily_usd": {"used": used.day_usd_micros / 1e6, "limit": limits.daily_usd_micros / 1e6},
            },
            "recent_events": await self.reputation.events(agent.id, limit=10),
        }

    # -- the gate ---------------------------------------------------------------------------------------

    async def run(
        self,
        caller: Caller,
        tool: str,
        action: str,
        arguments: dict[str, Any],
        execute: Callable[[], Awaitable[T]],
        usage: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ) -> T:
        """Check, execute and record one invocation. `usage()` reports (tokens, micros) the call spent."""
        rule = self.policy.rule(action)
        started = time.monotonic()
        record = self._record(caller, tool, action, arguments, "allowed", "ok")
        durable = rule.kind not in FREE
        agent: AgentRecord | None = None
        try:
            self._check_rate(caller, rule, record)
            if self.degraded:
                reason = f"governance unavailable ({self.degraded_reason}): only read-only actions are allowed"
                self._check_degraded(rule, record, reason)
            else:
                agent = await self._check(caller, rule, record)
            try:
                result = await execute()
            except OpsAgentError as exc:
                exc.public_message = self.redactor.text(exc.public_message)
                record.outcome, record.error = "error", exc.public_message
                raise
            except asyncio.CancelledError:
                record.outcome, record.error = "error", "cancelled"
                raise
            except Exception as exc:
                reference = uuid.uuid4().hex[:12]
                log.exception("tool %s crashed (reference %s)", tool, reference)
                record.outcome, record.error = "error", f"internal error (reference {reference})"
                raise ToolFailed(f"{tool} failed with an internal error (reference {reference})") from exc
            return result
        finally:
            record.duration_ms = (time.monotonic() - started) * 1000
            record.tokens, record.usd_micros = usage()
            audit = self._audit(record, durable=durable or record.decision != "allowed")
            scored = agent is not None and record.decision == "allowed" and rule.kind in CONSEQUENTIAL
            success = record.outcome == "ok"
            if scored and caller.task_id is not None:  # inside a task, the task's outcome scores once
                if success and self._earns(agent, rule):
                    self._earning_tasks[caller.task_id] = None
                    if len(self._earning_tasks) > MAX_OPEN_TASKS:
                        del self._earning_tasks[next(iter(self._earning_tasks))]
                await audit
            elif scored and (not success or self._earns(agent, rule)):
                event = self._event(agent, "task_success" if success else "task_failure", f"{tool} ({action})")
                # both go to the store's one writer: submitted together, they cost one round trip, not two
                await asyncio.gather(event, audit)
            else:
                await audit

    async def _check(self, caller: Caller, rule: ActionRule, record: AuditRecord) -> AgentRecord | None:
        """Budget, then permission. A backend that went away turns this one call degraded (see the module
        docstring): the agent is then the last one seen, or None, and only a read (anything, with fail_open)
        gets past the budget check."""
        agent = self._last_seen(caller)
        try:
            agent = await self.agent(caller)
            record.agent_id = agent.id
            await self._check_budget(caller, agent, rule, record)
        except GovernanceUnavailable as exc:
            unavailable = self.redactor.text(exc.public_message)
            if rule.kind != "read":
                what = "runs UNCONSTRAINED (fail_open)" if self.fail_open else "refused"
                log.warning("⚠️ %s; %s %s", unavailable, record.tool, what)
            self._check_degraded(rule, record, f"{unavailable}; only read-only actions are allowed until it is back")
        if agent is not None:
            record.agent_id = agent.id
            await self._check_permission(caller, agent, rule, record)
        return agent

    def _check_rate(self, caller: Caller, rule: ActionRule, record: AuditRecord) -> None:
        """The agent's rate limit; a change (any kind the budget does not treat as free) counts twice."""
        try:
            self.rate_limiter.acquire(caller.agent, change=rule.kind not in FREE)
        except RateLimited as exc:
            record.decision, record.outcome = "denied_rate", "refused"
            record.error = exc.public_message
            raise

    def _check_degraded(self, rule: ActionRule, record: AuditRecord, reason: str) -> None:
        """Degraded: a read runs (anything does, with fail_open); the rest is refused with `reason`."""
        if self.fail_open or rule.kind == "read":
            return
        record.decision, record.outcome = "denied_degraded", "refused"
        record.error = reason
        raise GovernanceUnavailable(reason)

    def _last_seen(self, caller: Caller) -> AgentRecord | None:
        cached = self._agents.get(caller.agent)
        return cached[1] if cached else None

    async def _check_budget(self, caller: Caller, agent: AgentRecord, rule: ActionRule, record: AuditRecord) -> None:
        # Reads and records cost nothing, so even a spent budget does not stop an engineer from looking.
        if rule.kind in FREE:
            return
        problems = self.limits.problems(await self._usage(agent.id))
        if problems:
            record.decision, record.outcome = "denied_budget", "refused"
            record.error = "budget exceeded: " + "; ".join(problems)
            await self._penalise_budget(agent, record.error)
            raise BudgetExceeded(record.error)
        log.info("✅ Budget check passed for %s", f"task {caller.task_id}" if caller.task_id else record.tool)

    async def _usage(self, agent_id: str) -> BudgetUsage:
        """Usage for the pre-check, re-read at most every cache_ttl_s while below 80% of every limit: far from
        a limit, a second-old figure refuses nothing it should, and near one every check reads the ledger.
        (LLM spending is reserved atomically in the ledger, never judged from this figure.)"""
        now = time.monotonic()
        cached = self._usage_cache.get(agent_id)
        if cached and now - cached[0] < self.cache_ttl_s:
            return cached[1]
        usage = await self.ledger.usage(agent_id)
        fractions = [spent / limit for _, _, spent, limit in budget_windows(usage, self.limits) if limit]
        if max(fractions, default=0.0) < 0.8:
            self._usage_cache[agent_id] = (now, usage)
        else:
            self._usage_cache.pop(agent_id, None)
        return usage

    async def _check_permission(
        self, caller: Caller, agent: AgentRecord, rule: ActionRule, record: AuditRecord
    ) -> None:
        level = self.level(agent)
        if self.policy.allows(level, rule.min_level):
            if rule.kind != "read":
                log.info("✅ Permission check passed for operation: %s", rule.action)
            return
        probation = ""
        if agent.successes < self.probation_tasks:
            probation = f", on probation: {agent.successes} of {self.probation_tasks} successful tasks"
        record.decision, record.outcome = "denied_permission", "refused"
        record.error = (
            f"permission denied: {rule.action} needs {rule.min_level}; agent {caller.agent} is {level} "
            f"(reputation score {agent.score}{probation})"
        )
        await self._event(agent, "permission_denied", rule.action)
        raise PermissionDenied(record.error)

    # -- LLM spend and task outcomes --------------------------------------------------------------------

    async def reserve(self, caller: Caller, tokens: int, micros: int) -> int | None:
        """Hold the worst case of one LLM request against the caller's budget. None when the ledger is away
        and fail_open lets the request go unreserved."""
        if self.degraded and not self.fail_open:
            raise GovernanceUnavailable(f"governance unavailable ({self.degraded_reason}): no LLM spending")
        try:
            agent = await self.agent(caller)
            self._usage_cache.pop(agent.id, None)  # spending moves the figure
            reservation = await self.ledger.reserve(agent.id, tokens, micros, self.limits)
        except BudgetExceeded as exc:
            await self._penalise_budget(agent, exc.public_message)
            raise
        except GovernanceUnavailable as exc:
            if not self.fail_open:
                raise
            log.warning("⚠️ %s; LLM request UNRESERVED (fail_open)", self.redactor.text(exc.public_message))
            return None
        log.info("✅ Budget check passed for task %s", caller.task_id or "-")
        return reservation

    async def settle(self, reservation: int | None, tokens: int, micros: int, model: str) -> None:
        """Replace the reservation by the real usage. If the ledger is away the reply is still used: the
        reservation stays held, and its lease books the worst case, so the budget errs on the safe side."""
        if reservation is None:
            return
        try:
            await self.ledger.settle(reservation, tokens, micros, model)
        except GovernanceUnavailable as exc:
            log.warning("⚠️ reservation %s not settled: %s", reservation, self.redactor.text(exc.public_message))

    async def usage(self, caller: Caller) -> BudgetUsage:
        return await self.ledger.usage((await self.agent(caller)).id)

    def _earns(self, agent: AgentRecord | None, rule: ActionRule) -> bool:
        """Success earns only at the agent's own level or above: a staging agent does not climb to production
        by creating alert rules (sandbox work) by the dozen."""
        return agent is not None and self.policy.allows(rule.min_level, self.level(agent))

    async def task_outcome(self, caller: Caller, success: bool, reason: str) -> None:
        """Score a task that ran consequential steps: once, +2 or -3. Never fails the task (see `_event`).
        A task earns only when one of its successful steps was at the agent's level or above (`_earns`); a
        call with no task id is a grant as it is (how tests and tools promote an agent on purpose)."""
        earned = caller.task_id is None or caller.task_id in self._earning_tasks
        self._earning_tasks.pop(caller.task_id, None)
        if self.degraded:
            return
        if success and not earned:
            log.info("task %s completed: no reputation earned (no step at the agent's level)", caller.task_id)
            return
        event: EventType = "task_success" if success else "task_failure"
        try:
            agent = await self.agent(caller)
        except GovernanceUnavailable as exc:
            log.warning("⚠️ reputation event %s not recorded: %s", event, self.redactor.text(exc.public_message))
            return
        await self._event(agent, event, reason)

    async def reject(self, caller: Caller, tool: str, arguments: Any, error: str) -> None:
        """Audit a call that never reached the gate (unknown tool, invalid arguments)."""
        arguments = arguments if isinstance(arguments, dict) else {"raw": arguments}
        record = self._record(caller, tool, None, arguments, "invalid", "refused")
        record.error = self.redactor.text(error)
        await self._audit(record, durable=False)

    async def hold(self, caller: Caller, tool: str, action: str, arguments: dict[str, Any], reason: str) -> None:
        """Audit a step the loop held for the operator (or refused) before it reached the gate: the content
        it came from may have been an attack, so it is kept (durable), but it costs the agent no reputation."""
        record = self._record(caller, tool, action, arguments, "held_approval", "refused")
        record.error = self.redactor.text(reason)
        await self._audit(record, durable=True)

    def _record(
        self, caller: Caller, tool: str, action: str | None, arguments: dict, decision: str, outcome: str
    ) -> AuditRecord:
        return AuditRecord(
            ts=time.time(),
            agent_id=None,
            agent=caller.agent,
            via=caller.via,
            task_id=caller.task_id,
            tool=tool,
            action=action,
            arguments=self.redactor.value(arguments),
            decision=decision,
            outcome=outcome,
        )

    async def _penalise_budget(self, agent: AgentRecord, reason: str) -> None:
        now = time.monotonic()
        if now - self._budget_penalised.get(agent.id, -1e9) >= 3600:
            self._budget_penalised[agent.id] = now
            await self._event(agent, "budget_exceeded", reason)

    async def _event(self, agent: AgentRecord, event: EventType, reason: str) -> None:
        """Record a reputation event. With the store away the event is logged and dropped: the call or task
        it scores has already run (or been refused), and that result must not change."""
        try:
            updated = await self.reputation.record_event(agent.id, event, reason)
        except GovernanceUnavailable as exc:
            log.warning("⚠️ reputation event %s not recorded: %s", event, self.redactor.text(exc.public_message))
            return
        self._agents[updated.name] = (time.monotonic(), updated)
        log.info("✅ Recorded reputation event: %s", event)

    async def _audit(self, record: AuditRecord, *, durable: bool) -> None:
        for observe in self.observers:
            observe(record)
        await self.audit.append(record, durable=durable)
