"""The OODA loop, its planners, and `execute_task` as a registry tool.

`ClaudePlanner` lives in `ops_agent.ooda.claude_planner` and is imported only when a key is configured,
so the offline path never pays for loading the Anthropic SDK.
"""

from __future__ import annotations

from typing import Literal

from mcp.types import ToolAnnotations
from pydantic import Field

from ops_agent.ooda.loop import Step, TaskLoop, TaskReport
from ops_agent.ooda.planner import Act, Decision, Finish, Observation, Planner, PlannerSession, StepResult, ToolCall
from ops_agent.ooda.rule_planner import Plan, RulePlanner
from ops_agent.registry import ToolContext, ToolInput, ToolSpec

__all__ = [
    "Act",
    "Decision",
    "ExecuteTaskInput",
    "Finish",
    "Observation",
    "Plan",
    "Planner",
    "PlannerSession",
    "RulePlanner",
    "Step",
    "StepResult",
    "TaskLoop",
    "TaskReport",
    "ToolCall",
    "execute_task_spec",
]

Priority = Literal["low", "medium", "high", "critical"]


class ExecuteTaskInput(ToolInput):
    task: str = Field(
        min_length=1, max_length=4000, description="What to do, in plain language, e.g. 'check the api health'."
    )
    priority: Priority = Field("medium", description="low, medium, high or critical.")


def execute_task_spec(loop: TaskLoop) -> ToolSpec:
    """`execute_task` runs a whole task; each of its steps passes the gate again on its own."""

    async def execute_task(args: ExecuteTaskInput, ctx: ToolContext) -> TaskReport:
        report = await loop.run(args.task, args.priority, ctx.caller, ctx.progress_callback, ctx.approver)
        ctx.add_usage(report.cost.tokens, round(report.cost.usd * 1e6))
        return report

    return ToolSpec(
        name="execute_task",
        title="Execute an operations task",
        description=(
            "Carry out an operations task given in plain language (observe, plan, act, report). Every step "
            "is governed like a direct tool call. Returns status, summary, the steps taken and the cost."
        ),
        input_model=ExecuteTaskInput,
        output_model=TaskReport,
        handler=execute_task,
        actions=("task:execute",),
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True),
        timeout_s=3600,  # a task may wait for builds
        planner_visible=False,
        opens_task=True,
        summarize=lambda report: f"{report.status}: {report.summary.splitlines()[0] if report.summary else ''}",
    )
