"""RulePlanner: the offline, deterministic planner used when no Anthropic key is set.

It splits a task into clauses ("show metrics, then check the api"), matches each clause against the
`Intent`s that tools declare in the registry (the longest match wins), and lets the intent turn the
clause into arguments. A clause it cannot match, a negated clause ("don't deploy") and a clause that
names something the tool cannot act on are reported back as not understood, never guessed at.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ops_agent.governance.gate import Caller
from ops_agent.ooda.planner import Act, Decision, Finish, Observation, Spend, StepResult, ToolCall
from ops_agent.registry import ToolRegistry, ToolSpec

__all__ = ["Plan", "RulePlanner", "split_clauses"]

_SPLIT = re.compile(
    # "monitor X and alert if ..." is one request: no cut before alert/notify/page.
    # Leading blanks only from the start of a blank run: a bare `\s*` retried at every blank of a long run
    # (4,000 spaces) is quadratic; a match never starts inside a run, so the cuts are the same.
    r"(?:(?<!\s)\s*)?(?:[,;]|\.(?:\s+|$)|\b(?:and\s+then|and\s+also|then|also|as\s+well\s+as|plus|but|and(?!\s+(?:alert|notify|page)\b))\b)\s*",
    re.I
)
_NEGATION = re.compile(r"\b(don'?t|do\s+not|never|no\s+need\s+to|without|skip|avoid|stop)\b", re.I)
_FILLER = re.compile(r"^(please|pls|kindly|now|thanks|thank\s+you|ok|okay|for\s+me|quickly|asap)*$", re.I)
_CONTINUATION_WORDS = 3  # a clause this short that matches nothing continues the one before it


@dataclass
class Plan:
    calls: list[ToolCall] = field(default_factory=list)
    not_understood: list[str] = field(default_factory=list)


@dataclass
class _Clause:
    text: str
    calls: list[ToolCall] = field(default_factory=list)
    problem: str | None = None


class RulePlanner:
    name = "rules"
    uses_snapshot = False  # it plans from the words and the facts alone

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry

    def session(self, task: str, priority: str, observation: Observation, caller: Caller) -> _RuleSession:
        return _RuleSession(self.plan(task, observation.facts))

    def plan(self, task: str, facts: Mapping[str, Any]) -> Plan:
        specs = [spec for spec in self.registry.specs(planner=True) if spec.intents]
        clauses: list[_Clause] = []
        for raw in split_clauses(task):
            text = _trimmed(raw)
            if not text or _FILLER.match(text.replace(" ", "")):
                continue
            clause = self._read(text, specs, facts)
            previous = clauses[-1] if clauses else None
            if (
                clause.problem == "no match"
                and previous is not None
                and previous.calls
                and len(text.split()) <= _CONTINUATION_WORDS
            ):
                # "check api and web": "web" continues the clause before, if it changes what that asks for
                merged = self._read(f"{previous.text} and {text}", specs, facts)
                if merged.calls and merged.calls != previous.calls:
                    clauses[-1] = merged
                    continue
            clauses.append(clause)

        plan = Plan()
        seen: set[str] = set()
        for clause in clauses:
            if clause.problem == "no match":
                plan.not_understood.append(f"{clause.text!r}: no available tool matches this")
            elif clause.problem:
                plan.not_understood.append(f"{clause.text!r}: {clause.problem}")
            for call in clause.calls:
                key = f"{call.tool}:{sorted(call.arguments.items())}"
                if key not in seen:
                    seen.add(key)
                    plan.calls.append(call)
        return plan

    @staticmethod
    def _read(text: str, specs: Sequence[ToolSpec], facts: Mapping[str, Any]) -> _Clause:
        if _NEGATION.search(text):
            return _Clause(text, problem="reads as a negation, so nothing was done for it")
        best: tuple[int, ToolSpec, Any] | None = None
        for spec in specs:
            for intent in spec.intents:
                for pattern in intent.patterns:
                    if (match := _compiled(pattern).search(text)) and (best is None or len(match[0]) > best[0]):
                        best = (len(match[0]), spec, intent)
        if best is None:
            return _Clause(text, problem="no match")
        _, spec, intent = best
        arguments = intent.arguments(text, facts)
        if isinstance(arguments, str):
            return _Clause(text, problem=arguments)
        return _Clause(text, calls=[ToolCall(spec.name, args) for args in arguments])


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I)


def _trimmed(clause: str) -> str:
    """The clause without surrounding blanks and end punctuation, and without a stray quote; a quote that
    closes a quoted phrase stays (`search the logs for "connection refused"`)."""
    text = clause.strip(" \t\n.!?")
    for quote in "\"'":
        if text.count(quote) % 2:
            text = text.strip(quote)
    return text.strip(" \t\n.!?")


def split_clauses(task: str) -> list[str]:
    """The task cut at clause boundaries, never inside brackets or quotes (a query keeps its commas)."""
    depth, quoted, opened = 0, False, []
    for index, char in enumerate(task):
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth = max(0, depth - 1)
        opened.append(depth > 0 or quoted)
    pieces, start = [], 0
    for match in _SPLIT.finditer(task):
        if match.start() < len(opened) and opened[match.start()]:
            continue
        pieces.append(task[start : match.start()])
        start = match.end()
    pieces.append(task[start:])
    return pieces


class _RuleSession:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.spend = Spend()
        self._asked = False

    async def decide(self, results: Sequence[StepResult], *, last_step: bool) -> Decision:
        if not self._asked and self.plan.calls and not last_step:
            self._asked = True
            return Act(list(self.plan.calls), self.plan.not_understood)
        if not self._asked:
            return Finish(
                "I could not turn this task into any action I can take. "
                + " ".join(self.plan.not_understood),
                status="not_understood",
                not_understood=self.plan.not_understood,
            )
        lines = [f"{r.call.tool}: {r.summary or 'done'}" if r.ok else f"{r.call.tool} failed: {r.error}" for r in results]
        if self.plan.not_understood:
            lines.append("Not acted on: " + " ".join(self.plan.not_understood))
        return Finish("\n".join(lines), not_understood=self.plan.not_understood)
