"""The offline planner on long odd text: shapes that once made its regexes super-linear must plan quickly.

Measured at 4,000 characters (execute_task's limit) before the fix: 0.33 s for any long run of blanks (the
clause splitter's leading `\\s*`), 0.2 s for "query aaaa…", and about 100 s for "alert if", 4,000 spaces,
"x\\ny" (the alert condition's `\\s+(.+?)\\s*$`). The bound below only catches a hang, never a slowdown.
"""

from __future__ import annotations

import concurrent.futures

import pytest

from ops_agent.ooda import RulePlanner

FACTS = {"services": ["api"], "projects": ["demo-app"], "default_project": "demo-app"}
LIMIT_S = 5.0  # a hang guard, not a benchmark

SHAPES = {
    "spaces": " " * 4000,
    "tabs": "\t" * 4000,
    "newlines": "\n" * 4000,
    "mixed blanks": " \t\r\n" * 1000,
    "no-break spaces": "\u00a0" * 4000,
    "ideographic spaces": "\u3000" * 4000,
    "word, blanks, word": "deploy" + " " * 3990 + "x",
    "alert if, blanks, two lines": "alert if" + " " * 3989 + "x\ny",
    "alert when, blanks inside": "alert when a" + " " * 3987 + "z",
    "monitor, blanks, and alert": "monitor the" + " " * 3970 + "x and alert if > 5",
    "query a long name": "query " + "a" * 3994,
    "what is a long name": "what is " + "x_" * 1996,
}


def plan_within(planner: RulePlanner, text: str) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(planner.plan, text, FACTS).result(timeout=LIMIT_S)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"planning took over {LIMIT_S:g} s on {text[:40]!r}... ({len(text)} characters)")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@pytest.mark.parametrize("text", SHAPES.values(), ids=SHAPES.keys())
def test_long_odd_text_plans_quickly(services, text):
    plan_within(RulePlanner(services.registry), text)


def test_the_rewritten_patterns_still_read_everyday_phrasings(services):
    planner = RulePlanner(services.registry)
    plan = planner.plan("monitor the api error rate and alert if >5%, then query avg(system_cpu_percent[5m])", FACTS)
    assert [(c.tool, c.arguments.get("condition") or c.arguments.get("query")) for c in plan.calls] == [
        ("create_alert_rule", 'error_rate{service="api"} > 5%'),
        ("query_metrics", "avg(system_cpu_percent[5m])"),
    ]
