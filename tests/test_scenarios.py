"""The incident scenario suite: its data files, and whole scenarios run against the whole product.

Three scenarios run side by side end to end (a bad deployment, a dependency outage that is not ours to fix,
a noisy but healthy control); `python benchmarks/incidents.py` runs them all and reports the figures.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sandbox.scenarios import load_scenario, load_scenarios, run_scenario, summarize

SCENARIOS = Path(__file__).resolve().parents[1] / "benchmarks" / "scenarios"


def test_the_suite_has_at_least_eight_faults_and_four_controls_and_every_file_loads():
    scenarios = load_scenarios(SCENARIOS)
    kinds = [s.kind for s in scenarios]
    assert kinds.count("fault") >= 8 and kinds.count("control") >= 4
    assert len({s.name for s in scenarios}) == len(scenarios)
    for scenario in scenarios:
        if scenario.kind == "fault":
            assert scenario.expect is not None
            assert not set(scenario.expect.remediations) & set(scenario.expect.forbidden), scenario.name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nkind: fault\ndescription: d\n", "a fault scenario needs `expect`"),
        ("name: x\nkind: control\ndescription: d\nsteps: [{at_s: 0, deploy: v2, load_rps: 5}]\n", "steps.0"),
        ("name: x\nkind: control\ndescription: d\ncolour: red\n", "colour: Extra inputs are not permitted"),
        ("name: x\nkind: control\ndescription: d\nsteps: [{inject: {kind: meltdown}}]\n", "steps.0.inject.kind"),
        ("name: X Y\nkind: control\ndescription: d\n", "name: String should match pattern"),
        ("name: x\nkind: fault\ndescription: d\nexpect: {alerts: [a], cause: c}\n", "expect.remediations"),
    ],
)
def test_a_bad_scenario_file_is_refused_naming_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="bad.yaml") as caught:
        load_scenario(path)
    assert message in str(caught.value)


async def test_three_scenarios_end_to_end(tmp_path):
    names = ("bad-deploy-error-spike", "runtime-database-outage", "control-noisy-logs")
    scenarios = [load_scenario(SCENARIOS / f"{name}.yaml") for name in names]
    bad_deploy, outage, noisy = await asyncio.gather(
        *(run_scenario(s, tmp_path / s.name, seed=i) for i, s in enumerate(scenarios))
    )

    # a bad deployment: detected by the error-rate alert, blamed on the deployment, rolled back, verified
    assert bad_deploy.error is None, bad_deploy.timeline
    assert bad_deploy.detected_by == "demo_errors" and bad_deploy.mttd_s is not None
    assert bad_deploy.cause == "bad_deployment" and bad_deploy.actions == ["rollback"]
    assert bad_deploy.fixed and bad_deploy.recovered and bad_deploy.mttr_s >= bad_deploy.mttd_s
    assert bad_deploy.unsafe == [] and bad_deploy.notifications >= 3  # Slack, e-mail and the pager webhook
    assert bad_deploy.passed

    # the database goes away: paged and diagnosed, but nothing restarted or rolled back; it recovers by itself
    assert outage.error is None, outage.timeline
    assert outage.cause == "dependency_down" and outage.actions == [] and outage.escalated
    assert outage.recovered and outage.mttr_s >= 20  # the outage lasts 20 s
    assert outage.passed

    # a loud but healthy service: no alert, no action
    assert noisy.error is None and noisy.alerts_fired == 0 and noisy.actions == []
    assert any("noisy logs" in text for _, text in noisy.timeline)
    assert noisy.passed

    summary = summarize([bad_deploy, outage, noisy])
    assert summary["auto_fix_rate"] == 1.0 and summary["fixable"] == 1
    assert summary["false_positive_rate"] == 0.0 and summary["unsafe_actions"] == 0
    assert summary["deployment_success_rate"] == 1.0


async def test_with_a_model_configured_the_claude_planner_plans_the_fix_and_its_cost_is_reported(tmp_path, monkeypatch):
    """The suite's "real model" path, with only the Anthropic edge faked (the contract's example bodies)."""
    from benchmarks.fake_anthropic import FakeAnthropic

    scenario = load_scenario(SCENARIOS / "bad-deploy-error-spike.yaml")
    with FakeAnthropic("remediate_incident", {"service": "demo"}, final_text="Rolled back the bad deployment.") as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        result = await run_scenario(scenario, tmp_path / "claude")
    assert result.error is None, result.timeline
    assert result.passed and result.actions == ["rollback"] and result.cause == "bad_deployment"
    assert fake.requests >= 2  # the tool call, then the answer after its result
    assert result.tokens == fake.tokens_served and result.usd > 0
    assert "sk-ant-test-0123456789" not in repr(result)
