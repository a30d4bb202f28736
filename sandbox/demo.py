"""`ops-agent demo`: one incident, start to finish, on this machine, with no account.

It starts the sandbox (Vercel emulator, notification sinks, the demo service under load), starts the agent
on it, deploys a good version, then a bad one, and narrates what follows: the agent detecting it, paging
(the messages land in the sandbox inboxes), diagnosing, rolling back and verifying. The same run is on the
dashboard while it lasts (`--linger` keeps it up afterwards). `--scenario FILE` plays any scenario file of
benchmarks/scenarios/ instead.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from rich.console import Console

from sandbox.demo_service import Fault
from sandbox.scenarios import Scenario, ScenarioResult, load_scenario, run_scenario
from sandbox.scenarios.model import Expectation, Step

__all__ = ["DEMO", "add_arguments", "run_demo"]

DEMO = Scenario(
    name="demo-bad-deploy",
    kind="fault",
    description="v2 of the demo app throws on 40% of requests; v1 was fine.",
    versions={"v2": Fault(kind="error_spike", error_rate=0.4)},
    steps=[Step(at_s=0, deploy="v2")],
    expect=Expectation(alerts=["demo_errors"], cause="bad_deployment", remediations=["rollback"],
                       forbidden=["restart", "free_disk"]),
    duration_s=90,
)
STYLES = {"alert": "bold red", "agent →": "cyan", "notification": "yellow", "diagnosis": "bold green",
          "remediation": "green", "an engineer": "bold", "v1": "bold", "v2": "bold"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", type=Path, metavar="FILE.yaml", help="play this scenario file instead")
    parser.add_argument("--dashboard-port", type=int, default=8000, help="dashboard port (default 8000; 0 = none)")
    parser.add_argument("--linger", type=float, default=0, metavar="S", help="keep everything up S seconds after")
    parser.add_argument("--workdir", type=Path, help="keep the agent's config, database and logs here")


def run_demo(args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    try:
        scenario = load_scenario(args.scenario) if args.scenario else DEMO
    except ValueError as exc:
        console.print(f"[red]demo: {exc}[/red]")
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ops-agent-demo-"))
    port = args.dashboard_port or None
    console.print(f"[bold]ops-agent demo[/bold]: {scenario.description}")
    console.print(f"  everything runs locally; the agent's config, database and logs: {workdir}")
    if port:
        console.print(f"  dashboard while it runs: http://127.0.0.1:{port}/dashboard")
    console.print()

    def narrate(t: float, text: str) -> None:
        style = next((s for key, s in STYLES.items() if text.startswith(key)), "")
        console.print(f"[dim]{t:+7.2f}s[/dim]  " + (f"[{style}]{text}[/{style}]" if style else text), markup=True)

    warmup = 3.0 if all(step.deploy for step in scenario.steps) else None  # a bad deploy needs no quiet spell
    result = asyncio.run(run_scenario(
        scenario, workdir, warmup_s=warmup, narrate=narrate, dashboard_port=port, linger_s=args.linger
    ))
    _summary(console, result)
    return 0 if result.passed else 1


def _summary(console: Console, r: ScenarioResult) -> None:
    console.print()
    if r.error:
        console.print(f"[red]the run broke: {r.error}[/red]")
    console.print(f"[bold]{'fixed' if r.fixed else 'not fixed'}[/bold]: detected by {r.detected_by or '-'} after "
                  f"{r.mttd_s if r.mttd_s is not None else '-'} s, recovered {r.mttr_s if r.mttr_s is not None else '-'} s "
                  f"after the fault; cause {r.cause or '-'}; actions {', '.join(r.actions) or 'none'}; "
                  f"{r.notifications} notifications in the sandbox inboxes; {r.tokens} tokens")
    if r.unsafe:
        console.print(f"[red]unsafe: {', '.join(r.unsafe)}[/red]")
