"""Provenance: was a step the planner chose asked for by the task, and where did its values come from?

The task's words are the caller's. Everything a tool returns is the world's: log lines, build logs, alert
payloads, error bodies. A model that read it may have been fooled by it, so the loop does not take the
model's word for a consequential step. Before a *guarded* call runs inside a task (a deploy, rollback,
promotion or cancel, an env change, a restart or fix, a notification, a webhook), `TaskProvenance.review`
asks two questions, and answers them without the model:

1. **Asked?** Each family of guarded actions has words that ask for it ("roll back", "revert", "undo" ...).
   A clause of the task, not negated, must hold one of them.
2. **Vouched?** Every string the call would act on must come from a trusted source:
   - the task's text;
   - the offline planner's reading of the task (it maps "prod" to "production");
   - the operator's configuration (projects, services, channels, recipients, restart commands);
   - the field's default;
   - an id field of a *system* tool's output (a Vercel deployment id from `list_deployments`).

   A value found only in other tool output, or nowhere, is not vouched.

A call that fails either check does not run. It is held for the operator (`approval_required`, see
`ops_agent.governance.approvals`), with the reasons. A model that obeys every instruction it reads gets the
same answer as one that obeys none. The text a tool carries as content (a notification's message, a
webhook's payload) is not a control value: where it may go is checked, not what it says.

Text is compared normalised: NFKC, without format characters (zero-width, bidi: Unicode Cf), case-folded.
So an invisible character cannot split a word, and a homoglyph ("rоll back" with a Cyrillic о) does not
match the word it imitates.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from ops_agent.governance.policy import ActionRule
from ops_agent.ooda.planner import ToolCall
from ops_agent.ooda.rule_planner import RulePlanner, split_clauses
from ops_agent.registry import ToolRegistry, ToolSpec
from ops_agent.untrusted import visible

__all__ = ["GUARDED_FAMILIES", "TaskProvenance", "family_of", "guarded", "normalise", "validated"]


def _words(*words: str) -> re.Pattern[str]:
    """Whole words, with their verb and plural endings: "deploy", "deploys", "deployed", not "deployment"."""
    return re.compile(rf"\b(?:{'|'.join(words)})(?:s|es|d|ed|ing)?\b")


# The words that ask for each family of guarded actions (matched on normalised text).
GUARDED_FAMILIES: dict[str, re.Pattern[str]] = {
    "deploy": _words("(?:re-?)?deploy", "ship", "shipp", "release", "publish", "promote", "roll(?:ed|ing)? ?out",
                     "go live", "launch", "cancel", "cancell"),
    "rollback": _words("roll(?:ed|ing)? ?back", "rollback", "revert", "undo", "restore", "go back"),
    "env": _words("env", "environment variable", "variable", "var", "secret", "config", "configuration",
                  "setting", "key", "token"),
    "notify": _words("notify", "notifi", "notification", "tell", "message", "e-?mail", "mail", "slack", "page",
                     "send", "post", "ping", "inform", "webhook", "report to", r"let \S+ know", "escalate"),
    "remediate": _words("fix", "remediate", "restart", "heal", "recover", "mitigate", "repair", "resolve",
                        "bounce", "reboot"),
    "coordinate": _words("hand(?:ed)? (?:it )?(?:off|over)", "handoff", "share", "escalate", "request", "ask",
                         "file", "open", "send", "tell", "inform", "post-?incident", "summar(?:y|ize|ise)"),
}
# A family word right after one of these (up to two words between) is not asked for: "don't roll back".
_NEGATED = re.compile(r"\b(don'?t|do not|never|no need to|without|skip|avoid|stop|not)\s+(\S+\s+){0,2}$")
_FAMILY_OF_PREFIX = {"deploy": "deploy", "rollback": "rollback", "env": "env", "notify": "notify",
                     "remediate": "remediate", "incident": "remediate", "coordinate": "coordinate",
                     "peer": "coordinate"}
_SAID = {"deploy": "deploy", "rollback": "roll back", "env": "change an environment variable",
         "notify": "send a notification", "remediate": "fix or restart anything",
         "coordinate": "hand anything to another agent"}


def family_of(action: str) -> str | None:
    return _FAMILY_OF_PREFIX.get(action.split(":", 1)[0])


def guarded(rule: ActionRule) -> bool:
    """Destructive and outward actions, and every deploy, rollback and env change (even a sandbox one)."""
    return rule.kind in ("destructive", "outward", "delegate") or family_of(rule.action) in ("deploy", "rollback", "env")


def normalise(text: str) -> str:
    return " ".join(visible(unicodedata.normalize("NFKC", text)).casefold().split())


@dataclass
class TaskProvenance:
    """What one task trusts: built from the task and the configuration, then fed each step's output."""

    text: str  # the task, normalised
    clauses: list[str]  # its clauses, normalised
    trusted: set[str] = field(default_factory=set)  # normalised values from the task's plan and configuration
    system_ids: set[str] = field(default_factory=set)  # normalised ids from system tools' outputs
    seen: list[tuple[str, Any]] = field(default_factory=list)  # (tool, output) of every step, for the reasons

    @classmethod
    def for_task(cls, task: str, registry: ToolRegistry, facts: Mapping[str, Any], configured: Iterable[str]) -> TaskProvenance:
        provenance = cls(normalise(task), [normalise(clause) for clause in split_clauses(task) if clause.strip()])
        provenance.trusted.update(normalise(v) for v in configured if v)
        for call in RulePlanner(registry).plan(task, facts).calls:
            provenance.trusted.update(normalise(v) for v in _strings(call.arguments))
        return provenance

    def observe(self, spec: ToolSpec | None, tool: str, output: Mapping[str, Any] | None) -> None:
        if output is None:
            return
        self.seen.append((tool, output))
        if spec is not None and spec.system_ids:
            self.system_ids.update(normalise(v) for v in _values_at(output, set(spec.system_ids)))

    def review(self, spec: ToolSpec, rule: ActionRule, call: ToolCall) -> list[str]:
        """Why `call` may not run without the operator; empty when it may."""
        reasons = []
        if (family := family_of(rule.action)) is not None and not self.asks_for(rule.action):
            reasons.append(f"the task did not ask to {_SAID[family]} ({rule.action})")
        skip = {*spec.content_fields, spec.idempotency_field}
        for name, value in call.arguments.items():
            if name in skip:
                continue
            default = spec.input_model.model_fields[name].default if name in spec.input_model.model_fields else None
            for text in _strings(value):
                if text == default or self._vouched(text):
                    continue
                reasons.append(f"{name}={_quote(text)} is not from the task or the configuration{self._found_in(text)}")
        return reasons

    def asks_for(self, action: str) -> bool:
        """A clause of the task holds a word for the action's family, not negated. True for an action of
        no family (nothing to ask for)."""
        family = family_of(action)
        if family is None:
            return True
        words = GUARDED_FAMILIES[family]
        return any(not _NEGATED.search(clause[: match.start()])
                   for clause in self.clauses for match in words.finditer(clause))

    def _vouched(self, value: str) -> bool:
        wanted = normalise(value)
        if not wanted or wanted in self.trusted or wanted in self.system_ids:
            return True
        return re.search(rf"(?<!\w){re.escape(wanted)}(?!\w)", self.text) is not None

    def _found_in(self, value: str) -> str:
        wanted = normalise(value)
        for tool, output in self.seen:
            if any(wanted in normalise(text) for text in _strings(output)):
                return f" (it appears in the output of {tool})"
        return ""


def validated(spec: ToolSpec, arguments: dict[str, Any]) -> BaseModel | None:
    """The arguments as the tool's input model, or None when they do not validate (the registry says why)."""
    try:
        return spec.input_model.model_validate(arguments)
    except ValidationError:
        return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _values_at(value: Any, keys: set[str]) -> Iterator[str]:
    """The strings held under any of `keys`, at any depth."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in keys and isinstance(item, str):
                yield item
            else:
                yield from _values_at(item, keys)
    elif isinstance(value, list):
        for item in value:
            yield from _values_at(item, keys)


def _quote(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "...'"
