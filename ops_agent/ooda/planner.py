"""The planner seam: what the OODA loop asks of a planner, and the shapes they exchange.

A planner opens one session per task. The loop calls `session.decide(results, last_step=...)` with the
results of the calls it ran for the previous decision (none the first time); the session answers with
more calls to make (`Act`) or the end of the task (`Finish`). On the last step the session must finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ops_agent.governance.gate import Caller

__all__ = ["Act", "Decision", "Finish", "Observation", "Planner", "PlannerSession", "StepResult", "ToolCall"]


@dataclass(frozen=True)
class ToolCall:
    tool: str
    arguments: dict[str, Any]
    id: str = ""  # the model's tool_use id, when a model chose the call


@dataclass(frozen=True)
class StepResult:
    call: ToolCall
    ok: bool
    output: dict[str, Any] | None = None
    error: str | None = None
    summary: str | None = None  # one line for people, from the tool's `summarize`


@dataclass(frozen=True)
class Act:
    calls: list[ToolCall]
    not_understood: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Finish:
    summary: str
    status: Literal["completed", "partial", "failed", "not_understood"] = "completed"
    not_understood: list[str] = field(default_factory=list)


Decision = Act | Finish


@dataclass(frozen=True)
class Observation:
    """Cheap context gathered before planning."""

    facts: dict[str, Any]  # e.g. {"services": [...], "permission_level": "..."}
    snapshot: dict[str, Any] = field(default_factory=dict)  # e.g. {"get_system_metrics": {...}}


@dataclass
class Spend:
    tokens: int = 0
    usd_micros: int = 0
    requests: int = 0


class PlannerSession(Protocol):
    spend: Spend

    async def decide(self, results: Sequence[StepResult], *, last_step: bool) -> Decision: ...


class Planner(Protocol):
    name: str
    uses_snapshot: bool  # False: the loop skips gathering `Observation.snapshot` for it

    def session(self, task: str, priority: str, observation: Observation, caller: Caller) -> PlannerSession: ...
