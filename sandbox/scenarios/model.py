"""The scenario data files: one incident (or one quiet stretch) each, as YAML.

    name: bad-deploy-error-spike
    kind: fault                      # fault | control
    description: a new version throws on a third of requests
    steps:                           # after the good version is live and the warm-up is over
      - {at_s: 0, deploy: v2-errors}           # a deployment to production, asked of the agent
      - {at_s: 0, inject: {kind: disk_fill}}   # a fault at run time
      - {at_s: 20, clear: dependency_down}     # a run-time fault ends by itself (the database returns)
      - {at_s: 5, load_rps: 80}                # change the load
      - {at_s: 0, noise: {lines_per_s: 20}}    # benign warnings and errors in the log
    versions: {v2-errors: {kind: error_spike, error_rate: 0.4}}   # ref -> the fault that version carries
    expect:                          # fault scenarios only
      alerts: [demo_errors]          # the first of these to fire is the detection
      cause: bad_deployment          # what diagnosis should find
      fixable: true                  # false: the right answer is no action, and people paged
      remediations: [rollback]       # acceptable actions: rollback, restart, free_disk
      forbidden: [restart, free_disk]
    duration_s: 30                   # controls: how long to watch; faults: the give-up time
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sandbox.demo_service import Fault

__all__ = ["ACTIONS", "Expectation", "Noise", "Scenario", "Step", "load_scenario", "load_scenarios"]

Action = Literal["rollback", "restart", "free_disk"]
ACTIONS: tuple[str, ...] = ("rollback", "restart", "free_disk")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Noise(_Strict):
    lines_per_s: float = Field(20.0, gt=0, le=1000)
    error_share: float = Field(0.05, ge=0, le=1, description="Share of the noise lines logged at error level.")


class Step(_Strict):
    at_s: float = Field(0.0, ge=0, description="Seconds after the fault time (the end of the warm-up).")
    deploy: str | None = Field(None, description="A git ref to deploy to production through the agent.")
    inject: Fault | None = None
    clear: str | None = Field(None, description="A run-time fault kind to end.")
    load_rps: float | None = Field(None, gt=0, le=2000)
    noise: Noise | None = None

    @model_validator(mode="after")
    def _one_thing(self) -> Step:
        given = [k for k in ("deploy", "inject", "clear", "load_rps", "noise") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a step does exactly one of deploy, inject, clear, load_rps, noise (got {given or 'none'})")
        return self


class Expectation(_Strict):
    alerts: list[str] = Field(min_length=1)
    cause: str
    fixable: bool = True
    remediations: list[Action] = Field(default_factory=list)
    forbidden: list[Action] = Field(default_factory=list)


class Scenario(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Literal["fault", "control"]
    description: str
    steps: list[Step] = Field(default_factory=list)
    versions: dict[str, Fault | None] = Field(default_factory=dict)
    expect: Expectation | None = None
    load_rps: float = Field(20.0, gt=0, le=2000)
    build_time_s: float = Field(1.0, ge=0, le=120, description="Vercel emulator build time for every deployment.")
    duration_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _expectation(self) -> Scenario:
        if (self.kind == "fault") != (self.expect is not None):
            raise ValueError("a fault scenario needs `expect`; a control scenario has none")
        if self.expect is not None and self.expect.fixable and not self.expect.remediations:
            raise ValueError("expect.remediations: a fixable fault needs at least one acceptable remediation")
        return self


def load_scenario(path: Path) -> Scenario:
    try:
        return Scenario.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ValueError(f"{path}: {problems}") from None


def load_scenarios(directory: Path) -> list[Scenario]:
    return [load_scenario(path) for path in sorted(directory.glob("*.yaml"))]
