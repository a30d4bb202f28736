"""The one error tree of ops-agent.

    OpsAgentError                 every error we raise on purpose; `public_message` is safe to show
    ├── ConfigError               a bad config file or environment variable (names the key and line)
    ├── ToolRetry                 the caller should fix its request and try again
    │   ├── InvalidArguments      arguments failed validation (names each field and the problem)
    │   ├── UnknownTool           no tool of that name
    │   └── QueryError            a metric or log query that does not parse (has a position)
    ├── ToolFailed                the tool ran and failed; terminal for this call
    │   └── ToolTimeout           the tool did not finish within its timeout
    ├── GovernanceRefusal         the gate said no
    │   ├── BudgetExceeded        the hourly or daily token/USD budget is spent
    │   ├── PermissionDenied      the caller's permission level is below the action's minimum
    │   ├── RateLimited           the agent calls tools faster than its rate limit (retry_after_s)
    │   └── GovernanceUnavailable degraded mode: governance is down and the action is not read-only
    ├── SideEffectInProgress      another live worker is running this step or task; try again later
    ├── PlannerError              the planner could not produce a plan
    │   └── PlannerStepsExceeded  the task hit its step cap
    └── UpstreamError             a service we call failed (service, status_code, retryable)
        └── UpstreamTimeout

Entry points map these in one place each: the MCP server turns them into `is_error` results carrying
`public_message`, the planner into `tool_result` blocks with `is_error`, the CLI into a red line and exit
code 1. Anything that is not an `OpsAgentError` is a bug: it is logged with its traceback and the caller
sees only a generic message with a reference id.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "GovernanceRefusal",
    "GovernanceUnavailable",
    "InvalidArguments",
    "OpsAgentError",
    "PermissionDenied",
    "SideEffectInProgress",
    "PlannerError",
    "PlannerStepsExceeded",
    "QueryError",
    "RateLimited",
    "ToolFailed",
    "ToolRetry",
    "ToolTimeout",
    "UnknownTool",
    "UpstreamError",
    "UpstreamTimeout",
]


class OpsAgentError(Exception):
    """Base of every deliberate error. `public_message` must never contain a secret."""

    def __init__(self, public_message: str) -> None:
        super().__init__(public_message)
        self.public_message = public_message


class ConfigError(OpsAgentError):
    """A setting is missing or malformed."""


class ToolRetry(OpsAgentError):
    """The request was wrong; a corrected request may succeed."""


class InvalidArguments(ToolRetry):
    """Arguments did not validate. `problems` is a list of (field, message)."""

    def __init__(self, tool: str, problems: list[tuple[str, str]]) -> None:
        self.tool = tool
        self.problems = problems
        lines = "; ".join(f"{field}: {message}" for field, message in problems)
        super().__init__(f"invalid arguments for {tool}: {lines}")


class QueryError(ToolRetry):
    """The query text is wrong at `position` (0-based index into the text; len(text) means its end).

    With `query`, `public_message` shows the text with a caret under the position."""

    def __init__(self, message: str, position: int, query: str | None = None) -> None:
        self.message = message
        self.position = position
        self.query = query
        public = f"{message} (at position {position})"
        if query is not None:
            public += ":\n" + _caret(query, position)
        super().__init__(public)


def _caret(query: str, position: int, width: int = 72) -> str:
    """Two lines: the query (a window of it around `position` when long) and a caret under it."""
    start = 0
    if len(query) > width:
        start = max(0, min(position - width // 2, len(query) - width))
    shown = query[start : start + width]
    head = "…" if start > 0 else ""
    tail = "…" if start + width < len(query) else ""
    shown = "".join(" " if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in shown)
    return f"  {head}{shown}{tail}\n  {' ' * (len(head) + position - start)}^"


class UnknownTool(ToolRetry):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown tool {name!r}; known tools: {', '.join(sorted(known))}")


class ToolFailed(OpsAgentError):
    """The tool ran and could not do what was asked."""


class ToolTimeout(ToolFailed):
    pass


class GovernanceRefusal(OpsAgentError):
    """The governance gate refused the invocation."""


class BudgetExceeded(GovernanceRefusal):
    pass


class PermissionDenied(GovernanceRefusal):
    pass


class RateLimited(GovernanceRefusal):
    """The agent called tools faster than `limit` allows (e.g. "600 tool calls a minute, in bursts of up to
    120"); a call made after `retry_after_s` seconds passes this limit."""

    def __init__(self, agent: str, limit: str, retry_after_s: float) -> None:
        self.agent = agent
        self.limit = limit
        self.retry_after_s = retry_after_s
        super().__init__(f"rate limit: agent {agent} made more than {limit}; retry after {retry_after_s:.1f} s")


class GovernanceUnavailable(GovernanceRefusal):
    pass


class SideEffectInProgress(OpsAgentError):
    """Another live worker holds the lease of this step or task; try again later."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} is being run by another worker")
        self.key = key


class PlannerError(OpsAgentError):
    pass


class PlannerStepsExceeded(PlannerError):
    pass


class UpstreamError(OpsAgentError):
    """A service we depend on answered badly or not at all."""

    def __init__(
        self, service: str, public_message: str, *, status_code: int | None = None, retryable: bool = False
    ) -> None:
        super().__init__(f"{service}: {public_message}")
        self.service = service
        self.status_code = status_code
        self.retryable = retryable


class UpstreamTimeout(UpstreamError):
    def __init__(self, service: str, public_message: str = "timed out") -> None:
        super().__init__(service, public_message, retryable=True)
