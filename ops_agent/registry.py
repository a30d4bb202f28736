"""The one tool registry: each operation is declared once, as a `ToolSpec`, and invoked only through the gate.

The MCP tool list, the Anthropic `tools=[...]` list, the CLI's `ops-agent tools` and `ops-agent call`
and the offline planner's vocabulary all come from here. `ToolRegistry.invoke` is the only way to run a
handler: it validates the arguments into the tool's input model, then hands the call to the
`GovernanceGate`, which checks, executes, records and audits it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, ValidationError

from ops_agent.errors import InvalidArguments, OpsAgentError, ToolFailed, ToolTimeout, UnknownTool
from ops_agent.governance.gate import Caller, GovernanceGate
from ops_agent.redact import Redactor

if TYPE_CHECKING:
    from ops_agent.governance.approvals import Approver

__all__ = [
    "EmptyInput",
    "Intent",
    "RedactedOutput",
    "ToolContext",
    "ToolInput",
    "ToolRegistry",
    "ToolSpec",
    "format_validation_error",
    "mentioned",
]

I = TypeVar("I", bound=BaseModel)
O = TypeVar("O", bound=BaseModel)
ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]
_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ToolInput(BaseModel):
    """Base of every tool's input model: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class EmptyInput(ToolInput):
    """The input of a tool that takes no arguments."""


@dataclass(frozen=True)
class Intent:
    """How the offline planner recognises a request for a tool in plain language.

    `patterns` are case-insensitive regexes; a clause of the task matching any of them selects the tool.
    `arguments(clause, facts)` turns the clause into the arguments of one call or several; `facts` holds
    what the planner knows (configured service names, ...). It returns a string instead when the clause
    names something the tool cannot act on: the planner reports that reason rather than guessing.
    """

    patterns: tuple[str, ...]
    arguments: Callable[[str, Mapping[str, Any]], list[dict[str, Any]] | str] = lambda clause, facts: [{}]


def mentioned(clause: str, names: Iterable[str]) -> list[str]:
    """The names that stand in the clause as whole words (a name may contain '.' and '-'), in `names` order."""
    return [name for name in names if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", clause, re.I)]


@dataclass
class ToolContext:
    """What a handler may use besides its arguments: who called, a progress channel, a usage meter, and a
    person to ask about a held step (an MCP client that supports elicitation), if there is one."""

    caller: Caller
    progress_callback: ProgressCallback | None = None
    spent: list[int] = field(default_factory=lambda: [0, 0])
    approver: Approver | None = None

    async def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        if self.progress_callback is not None:
            await self.progress_callback(done, total, message)

    def add_usage(self, tokens: int, usd_micros: int) -> None:
        self.spent[0] += tokens
        self.spent[1] += usd_micros


@dataclass(frozen=True)
class ToolSpec(Generic[I, O]):
    name: str
    description: str
    input_model: type[I]
    output_model: type[O]
    handler: Callable[[I, ToolContext], Awaitable[O]]
    # Every governance action the tool can perform, and which one these arguments perform.
    actions: tuple[str, ...]
    action: Callable[[I], str] | None = None
    annotations: ToolAnnotations = field(default_factory=ToolAnnotations)
    title: str | None = None
    timeout_s: float = 30.0
    planner_visible: bool = True
    opens_task: bool = False  # the call is a task of its own: it gets a task id before the gate sees it
    intents: tuple[Intent, ...] = ()
    summarize: Callable[[O], str] | None = None  # one line for people: reports, the CLI
    # The input field that carries a caller's idempotency key; inside a task the loop fills it per step.
    idempotency_field: str | None = None
    # Provenance (ops_agent.ooda.provenance): input fields that are content to carry, not values to act on
    # (a message); and output keys whose values this tool's own system made (ids), which a later guarded
    # step of the same task may use as they are.
    content_fields: tuple[str, ...] = ()
    system_ids: tuple[str, ...] = ()

    def action_for(self, arguments: I) -> str:
        return self.action(arguments) if self.action else self.actions[0]

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema(by_alias=True)

    def output_schema(self) -> dict[str, Any]:
        return self.output_model.model_json_schema(by_alias=True, mode="serialization")


class ToolRegistry:
    def __init__(self, gate: GovernanceGate) -> None:
        self.gate = gate
        self._specs: dict[str, ToolSpec] = {}

    def register(self, spec: ToolSpec) -> ToolSpec:
        """Add a tool. Raises ValueError on a duplicate name, an unknown action or annotations that
        disagree with the policy table (the table alone decides permissions; hints must not mislead)."""
        if not _TOOL_NAME.match(spec.name):
            raise ValueError(f"tool name {spec.name!r} must match {_TOOL_NAME.pattern}")
        if spec.name in self._specs:
            raise ValueError(f"duplicate tool name {spec.name!r}")
        if not spec.actions:
            raise ValueError(f"tool {spec.name!r} declares no governance action")
        kinds = {self.gate.policy.rule(action).kind for action in spec.actions}
        read_only = kinds == {"read"}
        destructive = bool(kinds & {"destructive", "delegate"})
        hints = spec.annotations
        if bool(hints.read_only_hint) != read_only:
            raise ValueError(f"tool {spec.name!r}: read_only_hint must be {read_only} for actions {spec.actions}")
        if not read_only and hints.destructive_hint is not destructive:
            raise ValueError(f"tool {spec.name!r}: destructive_hint must be {destructive} for actions {spec.actions}")
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> ToolSpec | None:
        return self._specs.get(name)

    def specs(self, *, planner: bool = False) -> list[ToolSpec]:
        return [spec for spec in self._specs.values() if spec.planner_visible or not planner]

    def anthropic_tools(self) -> list[dict[str, Any]]:
        """The Messages API `tools` list for the planner."""
        return [
            {"name": spec.name, "description": spec.description, "input_schema": spec.input_schema()}
            for spec in self.specs(planner=True)
        ]

    async def invoke(
        self,
        caller: Caller,
        name: str,
        arguments: Any,
        *,
        progress: ProgressCallback | None = None,
        approver: Approver | None = None,
    ) -> BaseModel:
        """Validate, then run through the gate. Raises an OpsAgentError on every refusal or failure.
        The result is the tool's output model, scrubbed of secrets."""
        result = await self.invoke_redacted(caller, name, arguments, progress=progress, approver=approver)
        return result.model(self._specs[name].output_model)

    async def invoke_redacted(
        self,
        caller: Caller,
        name: str,
        arguments: Any,
        *,
        progress: ProgressCallback | None = None,
        approver: Approver | None = None,
    ) -> RedactedOutput:
        """`invoke`, answering with the scrubbed output as JSON-ready `data` (and the model on request)."""
        spec = self._specs.get(name)
        if spec is None:
            error = UnknownTool(name, list(self._specs))
            error.public_message = self.gate.redactor.text(error.public_message)  # the name is the caller's text
            error.args = (error.public_message,)
            await self.gate.reject(caller, name, arguments, error.public_message)
            raise error
        arguments = _without_surrogates(arguments)
        try:
            if not isinstance(arguments, dict):
                raise InvalidArguments(name, [("(arguments)", "must be a JSON object")])
            try:
                args = spec.input_model.model_validate(arguments)
            except ValidationError as exc:
                raise InvalidArguments(name, format_validation_error(exc, self.gate.redactor)) from None
        except InvalidArguments as error:
            await self.gate.reject(caller, name, arguments, error.public_message)
            raise
        if spec.opens_task and caller.task_id is None:
            caller = caller.in_task(f"task-{uuid.uuid4().hex[:12]}")
        action = spec.action_for(args)
        if action not in spec.actions:
            raise ToolFailed(f"{name} chose action {action!r}, which it does not declare")
        context = ToolContext(caller, progress, approver=approver)

        async def execute() -> BaseModel:
            try:
                async with asyncio.timeout(spec.timeout_s):
                    result = await spec.handler(args, context)
            except TimeoutError:
                raise ToolTimeout(f"{name} did not finish within {spec.timeout_s:g} s") from None
            return spec.output_model.model_validate(result)

        try:
            output = await self.gate.run(
                caller,
                name,
                action,
                args.model_dump(mode="json"),
                execute,
                usage=lambda: (context.spent[0], context.spent[1]),
            )
        except OpsAgentError as error:  # the gate scrubs public_message; str(error) must say no more
            error.args = (error.public_message,)
            raise
        return RedactedOutput(output, self.gate.redactor)


class RedactedOutput:
    """A tool's output on its way out of the process (MCP, CLI, the model's context), scrubbed of secrets.
    Callers that only need JSON (the MCP server) take `data` and skip rebuilding the model."""

    def __init__(self, output: BaseModel, redactor: Redactor) -> None:
        dumped = output.model_dump(mode="json")
        self.data: dict[str, Any] = redactor.value(dumped)
        self._model = output if self.data == dumped else None

    def model(self, model_type: type[BaseModel]) -> BaseModel:
        return self._model if self._model is not None else model_type.model_validate(self.data)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(value: Any) -> Any:
    """Lone surrogates (JSON "\\ud800" escapes give them) become U+FFFD, as ingested log lines do: UTF-8
    cannot carry them, so a store, the audit trail or a sent message would fail on them later."""
    kind = type(value)
    if kind is str:
        return _SURROGATE.sub("\ufffd", value) if not value.isascii() else value
    if kind is dict:
        return {_without_surrogates(key): _without_surrogates(item) for key, item in value.items()}
    if kind is list:
        return [_without_surrogates(item) for item in value]
    return value


def format_validation_error(exc: ValidationError, redactor: Redactor) -> list[tuple[str, str]]:
    """pydantic errors as (field path, problem), in words a person or a model can act on.
    A quoted input is redacted before it is shortened, so no prefix of a secret survives."""
    problems = []
    for error in exc.errors(include_url=False):
        path = redactor.text(".".join(str(part) for part in error["loc"])) or "(arguments)"
        if error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        else:
            message = error["msg"]
            if error["type"] not in ("value_error", "assertion_error") and "input" in error:
                message += f" (got {_short(redactor.value(error['input']))})"
        problems.append((path, message))
    return problems


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
