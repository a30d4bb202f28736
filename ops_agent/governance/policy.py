"""The policy table (action -> minimum permission level, kind) and the score -> level rule.

The seed says a new agent starts at score 100 *and* at `sandbox_only`, while its table puts 100 in
`staging_access`. We resolve it with a probation: until an agent has completed `probation_tasks`
successful consequential tasks (default 5), its level is `sandbox_only` whatever its score; after
that the level follows the score table. So a new agent starts exactly as the seed's "Initial State"
says, and the table holds for every agent that has earned its way out of probation.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

import yaml

from ops_agent.config import PERMISSION_LEVELS
from ops_agent.errors import ConfigError

__all__ = ["ActionKind", "ActionRule", "PolicyTable", "level_for_score"]

ActionKind = Literal["read", "record", "write", "destructive", "outward", "delegate"]
KINDS: tuple[ActionKind, ...] = ("read", "record", "write", "destructive", "outward", "delegate")
FREE: frozenset[str] = frozenset({"read", "record"})  # cost nothing: allowed on a spent budget, audited in batches
CONSEQUENTIAL: frozenset[str] = frozenset({"write", "destructive", "outward"})  # what reputation is earned on


@dataclass(frozen=True, slots=True)
class ActionRule:
    action: str
    min_level: str
    kind: ActionKind


class PolicyTable:
    def __init__(self, levels: dict[str, int], rules: dict[str, ActionRule]) -> None:
        if tuple(levels) != PERMISSION_LEVELS:
            raise ConfigError(f"policy levels must be, in order: {', '.join(PERMISSION_LEVELS)}")
        self.levels = levels
        self.rules = rules

    @classmethod
    def load(cls, overrides: dict[str, str] | None = None) -> PolicyTable:
        """The packaged table, with `overrides` (action -> level) applied."""
        data = yaml.safe_load(resources.files("ops_agent.governance").joinpath("policy.yaml").read_text("utf-8"))
        rules = {
            action: ActionRule(action, row["min_level"], row["kind"]) for action, row in data["actions"].items()
        }
        for action, level in (overrides or {}).items():
            if action not in rules:
                raise ConfigError(f"governance.policy.{action}: unknown action; known: {', '.join(sorted(rules))}")
            rules[action] = ActionRule(action, level, rules[action].kind)
        for rule in rules.values():
            if rule.min_level not in PERMISSION_LEVELS or rule.kind not in KINDS:
                raise ConfigError(f"policy row {rule.action}: bad level {rule.min_level!r} or kind {rule.kind!r}")
        return cls(data["levels"], rules)

    def rule(self, action: str) -> ActionRule:
        try:
            return self.rules[action]
        except KeyError:
            raise ConfigError(f"action {action!r} is not in the policy table") from None

    def level_for(self, score: int, successes: int, probation_tasks: int) -> str:
        if successes < probation_tasks:
            return "sandbox_only"
        return level_for_score(score, self.levels)

    @staticmethod
    def allows(level: str, min_level: str) -> bool:
        return PERMISSION_LEVELS.index(level) >= PERMISSION_LEVELS.index(min_level)


def level_for_score(score: int, levels: dict[str, int]) -> str:
    """The highest level whose lower bound the score reaches (the seed's table)."""
    reached = [level for level, floor in levels.items() if score >= floor]
    return reached[-1] if reached else PERMISSION_LEVELS[0]
