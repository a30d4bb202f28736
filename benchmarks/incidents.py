"""The incident scenario suite: every file in benchmarks/scenarios/, against the whole product on the sandbox.

    python benchmarks/incidents.py                     # all scenarios, 3 at a time
    python benchmarks/incidents.py --only runtime-disk-fill --concurrency 1
    python benchmarks/incidents.py --json report.json  # the results and the summary as JSON too

Each scenario has a world of its own (Vercel emulator, notification sinks, demo service, agent, ports and
files), so scenarios run side by side. Without ANTHROPIC_API_KEY the offline rule planner plans the fixes;
with it, Claude does (and the cost per incident is real). Prints the table and the metrics against the goals.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# the repository instead of this folder, whose queue.py would shadow the standard library's
sys.path[0] = str(Path(__file__).resolve().parents[1])

from sandbox.scenarios import load_scenarios, render, run_scenario, summarize  # noqa: E402

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="run this scenario (repeatable)")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write results and summary here")
    parser.add_argument("--timeline", action="store_true", help="print each scenario's timeline")
    args = parser.parse_args()
    scenarios = [s for s in load_scenarios(SCENARIOS) if not args.only or s.name in args.only]
    if not scenarios:
        print("no scenario matched", file=sys.stderr)
        return 2
    planner = "claude" if os.environ.get("ANTHROPIC_API_KEY") else "rules (offline)"
    print(f"{len(scenarios)} scenarios, {args.concurrency} at a time, planner: {planner}", flush=True)
    gate = asyncio.Semaphore(args.concurrency)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ops-agent-scenarios-") as root:
        async def one(index: int, scenario):
            async with gate:
                result = await run_scenario(scenario, Path(root) / scenario.name, seed=index)
                print(f"  {scenario.name}: {'passed' if result.passed else 'FAILED'}", flush=True)
                return result

        results = await asyncio.gather(*(one(i, s) for i, s in enumerate(scenarios)))
    summary = summarize(results)
    if args.timeline:
        for result in results:
            print(f"\n== {result.name}")
            for t, text in result.timeline:
                print(f"  {t:7.2f}  {text}")
    print()
    print(render(results, summary))
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(
            {"summary": summary, "results": [dataclasses.asdict(r) | {"passed": r.passed} for r in results]}, indent=2
        ))
    return 0 if summary["passed"] == summary["scenarios"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
