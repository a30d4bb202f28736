"""Fuzz cases run per target and failures found: tests/test_fuzz.py at a chosen size, as one table.

Runs `pytest tests/test_fuzz.py` with `FUZZ_EXAMPLES=N` (random seeds, as on demand), and reads three
things from the run:

- per tool: the calls FuzzEnv counted by outcome (`FUZZ_REPORT=1`, printed when the module's services
  close). The tool tests draw their cases inside the test (one parametrized test per tool), so hypothesis
  keeps no statistics for them; the count includes the explicit examples, shrinking, and the few calls
  of the regression tests below the fuzz tests.
- per parser: hypothesis' own statistics (`--hypothesis-show-statistics`): passing, failing and invalid
  test cases over its phases.
- per test: pass or fail, with the first line of the failure (a junit XML report).

    python benchmarks/fuzz_report.py            # 2,000 cases per tool and per parser
    python benchmarks/fuzz_report.py 200 -k ingest   # a smaller run; extra arguments go to pytest

The script prints figures and failures; its exit status is pytest's.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the repository instead of this folder, whose queue.py would shadow the standard library's
sys.path[0] = str(ROOT)

TOOL_TEST = re.compile(r"^test_tool_survives_fuzzed_arguments\[(?P<tool>[^\]]+)\]$")
PARSER_TESTS = {  # test -> target, for the tests hypothesis drives directly
    "test_log_query_parser": "parse_query (log query)",
    "test_condition_language": "parse_condition (alert condition)",
    "test_metric_query_language": "parse (metric query)",
    "test_time_range_parser": "parse_time_range",
    "test_alert_durations": "alert durations",
    "test_severity_names": "parse_severity",
    "test_ingest_line_parser_never_raises": "parse_line (ingest)",
    "test_ingest_bodies": "drain_records / json bodies",
}
TASK_TEST = "test_execute_task_survives_random_tasks"
# no ^: with -s the first line follows the progress dots
OUTCOMES = re.compile(r"\bfuzz (?P<tool>\w+): (?P<calls>\d+) calls (?P<outcomes>\{.*\})$", re.M)
STATS_HEADER = re.compile(r"^\S*::(?P<test>\S+):$", re.M)
STATS_COUNTS = re.compile(r"(?P<passing>\d+) passing, (?P<failing>\d+) failing, and (?P<invalid>\d+) invalid")


def run_pytest(examples: int, extra: list[str], junit: Path) -> tuple[int, str, float]:
    env = {**os.environ, "FUZZ_EXAMPLES": str(examples), "FUZZ_REPORT": "1"}
    command = [
        sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-p", "no:cacheprovider", "-q", "-s",
        "--hypothesis-show-statistics", f"--junitxml={junit}", *extra,
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def hypothesis_counts(output: str) -> dict[str, dict[str, int]]:
    """test name -> passing/failing/invalid summed over hypothesis' phases (generate, shrink ...)."""
    counts: dict[str, dict[str, int]] = {}
    headers = list(STATS_HEADER.finditer(output))
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(output)
        total = {"passing": 0, "failing": 0, "invalid": 0}
        for phase in STATS_COUNTS.finditer(output, header.end(), end):
            for key in total:
                total[key] += int(phase[key])
        counts[header["test"]] = total
    return counts


def test_results(junit: Path) -> dict[str, str | None]:
    """test name -> None when it passed, else the first line of its failure ("skipped: ..." when skipped)."""
    results: dict[str, str | None] = {}
    if not junit.exists():
        return results
    for case in ET.parse(junit).iter("testcase"):
        problem = None
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                text = (found.get("message") or found.text or tag).strip()
                problem = (f"{tag}: " if tag != "failure" else "") + text.splitlines()[0][:300]
                break
        results[case.get("name", "?")] = problem
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("examples", nargs="?", type=int, default=2000, help="FUZZ_EXAMPLES: cases per tool and per parser")
    options, extra = parser.parse_known_args()

    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "fuzz.xml"
        status, output, wall_s = run_pytest(options.examples, extra, junit)
        results = test_results(junit)
    stats = hypothesis_counts(output)
    outcomes = {m["tool"]: (int(m["calls"]), ast.literal_eval(m["outcomes"])) for m in OUTCOMES.finditer(output)}

    rows: list[tuple[str, str, str, str, str]] = []  # target, kind, cases, failures, outcomes / failure
    failures: list[tuple[str, str]] = []
    for test, problem in sorted(results.items()):
        if (match := TOOL_TEST.match(test)) or test == TASK_TEST:
            tool = match["tool"] if match else "execute_task"
            calls, by_outcome = outcomes.get(tool, (0, {}))
            detail = ", ".join(f"{k} {v}" for k, v in sorted(by_outcome.items(), key=lambda kv: -kv[1]))
            rows.append((tool, "tool", str(calls), "1" if problem else "0", problem or detail))
        elif test in PARSER_TESTS:
            counts = stats.get(test, {})
            failing = counts.get("failing", 0) or (1 if problem else 0)
            cases = counts.get("passing", 0) + counts.get("failing", 0)
            invalid = counts.get("invalid", 0)
            rows.append((PARSER_TESTS[test], "parser", str(cases), str(failing),
                         problem or (f"{invalid} invalid (filtered)" if invalid else "")))
        else:
            continue
        if problem:
            failures.append((test, problem))
    others = {test: problem for test, problem in results.items()
              if not TOOL_TEST.match(test) and test != TASK_TEST and test not in PARSER_TESTS}
    failures += [(test, problem) for test, problem in sorted(others.items()) if problem]

    width = max([len(r[0]) for r in rows] + [6])
    print(f"fuzz report: FUZZ_EXAMPLES={options.examples}, tests/test_fuzz.py, pytest exit status {status}")
    print(f"{'target':<{width}}  {'kind':<6}  {'cases':>7}  {'fail':>4}  outcomes / failure")
    for target, kind, cases, failed, note in sorted(rows, key=lambda r: (r[1] != "tool", r[0])):
        print(f"{target:<{width}}  {kind:<6}  {cases:>7}  {failed:>4}  {note}")
    tool_cases = sum(int(r[2]) for r in rows if r[1] == "tool")
    parser_cases = sum(int(r[2]) for r in rows if r[1] == "parser")
    passed_others = sum(1 for p in others.values() if p is None)
    print(f"\n{sum(1 for r in rows if r[1] == 'tool')} tools, {tool_cases} calls; "
          f"{sum(1 for r in rows if r[1] == 'parser')} parsers, {parser_cases} cases; "
          f"other tests (hang guards, regressions): {passed_others}/{len(others)} passed")
    print(f"failures: {len(failures)}")
    for test, problem in failures:
        print(f"  {test}: {problem}")
    print(f"wall time: {wall_s:.1f} s")
    if not results:  # pytest did not get to run the tests: show why
        print(output[-3000:])
    return status


if __name__ == "__main__":
    sys.exit(main())
