"""Auto-remediation: what a firing alert may do, always as a governed tool call of the agent that set the
remediation on the rule (its permission level, budget and audit trail; this agent for rules without one).

    rollback   the `rollback` tool (production back to the previous READY deployment)
    restart    `run_restart_command`: a command from `alerts.restart_commands`, by name; nothing else runs
    task       `execute_task` with the given plain-language task
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from ops_agent.errors import ToolFailed, ToolRetry
from ops_agent.governance import Caller
from ops_agent.redact import Redactor
from ops_agent.registry import ToolContext, ToolInput, ToolRegistry, ToolSpec
from ops_agent.tools.alerts.models import Alert, AlertRule

__all__ = ["CommandResult", "Remediator", "restart_command_spec"]

OUTPUT_TAIL = 2000


class RestartInput(ToolInput):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="A name from alerts.restart_commands.")


class CommandResult(BaseModel):
    name: str
    exit_code: int
    output_tail: str = Field(description="The last lines of its output (redacted).")


def restart_command_spec(commands: Mapping[str, Sequence[str]], redactor: Redactor, timeout_s: float) -> ToolSpec:
    async def run_restart_command(args: RestartInput, ctx: ToolContext) -> CommandResult:
        argv = commands.get(args.name)
        if argv is None:
            known = ", ".join(sorted(commands)) or "none configured (alerts.restart_commands)"
            raise ToolRetry(f"name: {args.name!r} is not an allowed command ({known})")
        try:  # no shell: the configured argv runs as written
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
        except OSError as exc:
            raise ToolFailed(f"command {args.name}: cannot start {argv[0]!r}: {exc.strerror}") from None
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise ToolFailed(f"command {args.name}: still running after {timeout_s:g} s; killed") from None
        tail = redactor.text(output.decode("utf-8", errors="replace")[-OUTPUT_TAIL:])
        return CommandResult(name=args.name, exit_code=process.returncode or 0, output_tail=tail)

    return ToolSpec(
        name="run_restart_command",
        title="Run a restart command",
        description="Run one of the commands configured in alerts.restart_commands (by name; nothing else can run), "
        "e.g. to restart a service an alert found down.",
        input_model=RestartInput, output_model=CommandResult, handler=run_restart_command,
        actions=("remediate:restart",),
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True),
        timeout_s=timeout_s + 5,
        planner_visible=bool(commands),
        summarize=lambda r: f"{r.name} exited {r.exit_code}",
    )


class Remediator:
    """Runs a rule's remediation through the registry, so the gate decides as for any other call."""

    def __init__(self, registry: ToolRegistry, agent: str) -> None:
        self.registry = registry
        self.agent = agent

    def caller(self, rule: AlertRule) -> Caller:
        """The agent that set the remediation, so writing a rule never borrows another agent's permissions."""
        author = rule.remediation_by or rule.created_by or self.agent
        return Caller(author, via="alerts", agent_type="ops_agent" if author == self.agent else "mcp_client")

    async def __call__(self, rule: AlertRule, alert: Alert) -> tuple[bool, str]:
        remediation = rule.remediation
        assert remediation is not None
        caller = self.caller(rule)
        if remediation.action == "rollback":
            arguments = {"project": remediation.project} if remediation.project else {}
            result = await self.registry.invoke(caller, "rollback", arguments)
            return True, str(getattr(result, "note", "rolled back"))
        if remediation.action == "restart":
            result = await self.registry.invoke(caller, "run_restart_command", {"name": remediation.command})
            return result.exit_code == 0, f"{result.name} exited {result.exit_code}"
        # The operator's words only: the alert's summary is data (it may quote a log line or a label), and a
        # planner reading it could pick a tool from it ("health" in "health(api) == down" is a tool's word).
        task = {"task": remediation.task, "priority": rule.severity}
        report = await self.registry.invoke(caller, "execute_task", task)
        return report.status == "completed", f"task {report.status}: {report.summary.splitlines()[0] if report.summary else ''}"
