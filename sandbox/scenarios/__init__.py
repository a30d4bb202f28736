"""Incident scenarios: the sandbox world, a fault, the whole agent, and what happened, measured from outside.

    scenario = load_scenario(Path("benchmarks/scenarios/bad-deploy-error-spike.yaml"))
    result = await run_scenario(scenario, workdir)      # MTTD, MTTR, cause, actions, unsafe, cost
    print(render(results, summarize(results)))

`model.py` is the data file format, `lab.py` the world and the agent wired together, `runner.py` one run,
`report.py` the seed's success metrics over a suite. `python benchmarks/incidents.py` runs the suite;
`ops-agent demo` runs one incident with a narrated timeline.
"""

from sandbox.scenarios.lab import Lab
from sandbox.scenarios.model import Scenario, load_scenario, load_scenarios
from sandbox.scenarios.report import GOALS, render, summarize
from sandbox.scenarios.runner import ScenarioResult, run_scenario

__all__ = [
    "GOALS", "Lab", "Scenario", "ScenarioResult", "load_scenario", "load_scenarios", "render", "run_scenario",
    "summarize",
]
